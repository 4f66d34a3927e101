#pragma once
// ggml's 32-element legacy blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1), the
// non-linear IQ4_NL and IQ4_XS, MXFP4 and the ternary TQ1_0 and TQ2_0: block
// structs laid out as ggml stores them, and row quantizers whose bytes equal
// ggml_quantize_chunk's, with and without an importance matrix.
//
// Byte equality needs ggml's exact float arithmetic: the same operation order,
// float (never double) intermediates, its rounding helpers, and no fused
// multiply-add. g++ contracts a*b+c into an fma even in ISO C++ mode whenever
// the target has FMA, so every product that feeds an add goes through
// detail::unfused (detail/fp_contract.hpp, the one guard).
//
// The searches (IQ4, and the imatrix paths' make_qx_quants / make_qkx3_quants)
// are formats/ggml_kquant_search.hpp's, on the scalar tag; kernels/ggml_quantize.hpp
// runs them on SIMD lanes.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <vector>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../detail/fp_contract.hpp"
#include "../detail/scalar_arch.hpp"
#include "ggml_kquant_search.hpp"
#include "ggml_rows.hpp"
#include "ggml_types.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ggml {

// ---- Block structs ---------------------------------------------------------
// `d`, `m`, `s` are IEEE half bits; multi-byte fields are little-endian in
// files, which is the host order on every platform ggml supports.

struct block_q4_0 {
    static constexpr type type_id = type::q4_0;
    static constexpr std::size_t block_size = 32;
    std::uint16_t d;         ///< scale; value = (q - 8) * d
    std::uint8_t qs[16];     ///< element j in the low nibble of qs[j], j + 16 in the high one
};

struct block_q4_1 {
    static constexpr type type_id = type::q4_1;
    static constexpr std::size_t block_size = 32;
    std::uint16_t d;         ///< scale; value = q * d + m
    std::uint16_t m;         ///< offset (the block minimum)
    std::uint8_t qs[16];     ///< nibbles, ordered as in block_q4_0
};

struct block_q5_0 {
    static constexpr type type_id = type::q5_0;
    static constexpr std::size_t block_size = 32;
    std::uint16_t d;         ///< scale; value = (q - 16) * d
    std::uint8_t qh[4];      ///< bit 4 of element j is bit j of this little-endian u32
    std::uint8_t qs[16];     ///< low nibbles, ordered as in block_q4_0
};

struct block_q5_1 {
    static constexpr type type_id = type::q5_1;
    static constexpr std::size_t block_size = 32;
    std::uint16_t d;         ///< scale; value = q * d + m
    std::uint16_t m;         ///< offset
    std::uint8_t qh[4];      ///< as in block_q5_0
    std::uint8_t qs[16];
};

struct block_q8_0 {
    static constexpr type type_id = type::q8_0;
    static constexpr std::size_t block_size = 32;
    std::uint16_t d;         ///< scale; value = q * d
    std::int8_t qs[32];
};

struct block_q8_1 {
    static constexpr type type_id = type::q8_1;
    static constexpr std::size_t block_size = 32;
    std::uint16_t d;         ///< scale; value = q * d
    std::uint16_t s;         ///< d * sum(q), for the dot products with Q4_1/Q5_1
    std::int8_t qs[32];
};

struct block_iq4_nl {
    static constexpr type type_id = type::iq4_nl;
    static constexpr std::size_t block_size = 32;
    std::uint16_t d;         ///< scale; value = d * iq4_nl_values[nibble]
    std::uint8_t qs[16];     ///< nibbles, ordered as in block_q4_0
};

struct block_iq4_xs {
    static constexpr type type_id = type::iq4_xs;
    static constexpr std::size_t block_size = 256;
    std::uint16_t d;            ///< super-block scale
    std::uint16_t scales_h;     ///< bits 4-5 of sub-block ib's 6-bit scale at bits 2ib
    std::uint8_t scales_l[4];   ///< bits 0-3 of sub-block scales 2k (low) and 2k+1 (high)
    std::uint8_t qs[128];       ///< qs[16ib + j]: element 32ib + j low, 32ib + 16 + j high
};

struct block_mxfp4 {
    static constexpr type type_id = type::mxfp4;
    static constexpr std::size_t block_size = 32;
    std::uint8_t e;          ///< E8M0 shared exponent; value = mxfp4_values[nibble] * 2^(e - 128)
    std::uint8_t qs[16];     ///< nibbles, ordered as in block_q4_0
};

struct block_tq1_0 {
    static constexpr type type_id = type::tq1_0;
    static constexpr std::size_t block_size = 256;
    std::uint8_t qs[48];     ///< 5 trits per byte, as a fixed-point fraction of 3^5
    std::uint8_t qh[4];      ///< 4 trits per byte (the last 16 elements)
    std::uint16_t d;         ///< scale; value = (trit - 1) * d
};

struct block_tq2_0 {
    static constexpr type type_id = type::tq2_0;
    static constexpr std::size_t block_size = 256;
    std::uint8_t qs[64];     ///< 2 bits per element: qs[32k + m] bits 2n hold element 128k + 32n + m
    std::uint16_t d;         ///< scale; value = (q - 1) * d
};

static_assert(detail::rows::matches_ggml<block_q4_0>());
static_assert(detail::rows::matches_ggml<block_q4_1>());
static_assert(detail::rows::matches_ggml<block_q5_0>());
static_assert(detail::rows::matches_ggml<block_q5_1>());
static_assert(detail::rows::matches_ggml<block_q8_0>());
static_assert(detail::rows::matches_ggml<block_q8_1>());
static_assert(detail::rows::matches_ggml<block_iq4_nl>());
static_assert(detail::rows::matches_ggml<block_iq4_xs>());
static_assert(detail::rows::matches_ggml<block_mxfp4>());
static_assert(detail::rows::matches_ggml<block_tq1_0>());
static_assert(detail::rows::matches_ggml<block_tq2_0>());

// Internals live one level down, apart from ggml_kquants.hpp's helpers of the
// same names (nearest_int, make_qx_quants, ...), so both headers can be included.
namespace detail::blocks {

// C's (int8_t)f / (uint8_t)f as g++ emits them on x86: truncate to int, keep the low byte.
inline std::int8_t trunc_to_i8(float v) noexcept {
    return static_cast<std::int8_t>(static_cast<std::uint8_t>(static_cast<int>(v) & 0xFF));
}
inline std::uint8_t trunc_to_u8(float v) noexcept { return static_cast<std::uint8_t>(static_cast<int>(v) & 0xFF); }

// Written as ggml's MAX macro so that NaN inputs propagate the same way.
inline float absmax(const float* x, std::size_t n) noexcept {
    float amax = 0.0f;
    for (std::size_t i = 0; i < n; ++i) {
        const float a = std::fabs(x[i]);
        amax = amax > a ? amax : a;
    }
    return amax;
}

// 2^(e - 128): half the E8M0 scale, since mxfp4_values are doubled E2M1.
inline float mxfp4_half_scale(std::uint8_t e) noexcept {
    const std::uint32_t bits = e < 2 ? (0x00200000u << e) : (static_cast<std::uint32_t>(e - 1) << 23);
    return std::bit_cast<float>(bits);
}

// Smallest and largest element, scanned as ggml does (from +-FLT_MAX).
struct min_max {
    float min = std::numeric_limits<float>::max();
    float max = -std::numeric_limits<float>::max();
};

inline min_max find_min_max(const float* x, std::size_t n) noexcept {
    min_max r;
    for (std::size_t i = 0; i < n; ++i) {
        if (x[i] < r.min) r.min = x[i];
        if (x[i] > r.max) r.max = x[i];
    }
    return r;
}

// Mean square of the whole row: the imatrix weighting of the legacy types.
inline float row_mean_square(const float* x, std::size_t n) noexcept {
    float sum = 0.0f;
    for (std::size_t i = 0; i < n; ++i) sum = sum + mul_unfused<kernels::scalar>(x[i], x[i]);
    return sum / static_cast<float>(n);
}

// ggml's make_qx_quants (rmse_type 1, weights w) and make_qkx3_quants of one
// 32-value block with an imatrix: the shared searches on the scalar tag.
inline float qx_levels_32(int nmax, const float* x, const float* w, std::uint8_t* levels) noexcept {
    float L[32], scale;
    qx_search<kernels::scalar, 32>(x, w, L, scale, static_cast<float>(nmax));
    levels_to_bytes(L, 32, levels);
    return scale;
}
inline float qkx_levels_32(int nmax, const float* x, const float* w, std::uint8_t* levels, float* the_min) noexcept {
    float L[32], scale;
    qkx_search<kernels::scalar, 32>(x, w, L, scale, *the_min, static_cast<float>(nmax), -0.9f, 0.05f, 36, false);
    levels_to_bytes(L, 32, levels);
    return scale;
}
inline void importance_weights_32(const float* x, const float* qw, float sigma2, float* w) noexcept {
    float sw;
    imatrix_weights<kernels::scalar, 32>(x, qw, sigma2, w, sw);
}

// Nearest MXFP4 value times d, by linear search; the first index wins ties.
inline std::uint8_t nearest_mxfp4_index(float v, float d) noexcept {
    int best = 0;
    float best_err = std::fabs(::lowbit::detail::unfused(static_cast<float>(mxfp4_values[0]) * d) - v);
    for (int i = 1; i < 16; ++i) {
        const float err = std::fabs(::lowbit::detail::unfused(static_cast<float>(mxfp4_values[i]) * d) - v);
        if (err < best_err) {
            best = i;
            best_err = err;
        }
    }
    return static_cast<std::uint8_t>(best);
}

template <class Arch = kernels::scalar>
inline void pack_nibbles_32(const std::uint8_t* levels, std::uint8_t* qs) noexcept {
    for (int j = 0; j < 16; ++j) qs[j] = static_cast<std::uint8_t>((levels[j] & 0x0F) | ((levels[j + 16] & 0x0F) << 4));
}

// Q5: low nibbles as Q4, bit 4 of element j into bit j of a little-endian u32.
inline void pack_5bit_32(const std::uint8_t* levels, std::uint8_t* qh, std::uint8_t* qs) noexcept {
    pack_nibbles_32(levels, qs);
    std::uint32_t high = 0;
    for (int j = 0; j < 32; ++j) high |= static_cast<std::uint32_t>((levels[j] >> 4) & 1u) << j;
    for (int k = 0; k < 4; ++k) qh[k] = static_cast<std::uint8_t>(high >> (8 * k));
}

inline std::uint8_t unpack_5bit(const std::uint8_t* qh, const std::uint8_t* qs, int j) noexcept {
    const int nib = j < 16 ? (qs[j] & 0x0F) : (qs[j - 16] >> 4);
    const int hi = (qh[j / 8] >> (j % 8)) & 1;
    return static_cast<std::uint8_t>(nib | (hi << 4));
}

// IQ4's step per super-block, after the sub-block searches: sc holds the
// Nsub sub-block scales; stores d (and IQ4_XS's 6-bit signed sub-scales, the
// codes then being picked again against each sub-block's final scale) and
// gives the inverse scale idl of every sub-block.
template <class Arch, int Nsub>
inline void iq4_scales(const float* sc, std::uint16_t& dh, std::uint16_t* scales_h, std::uint8_t* scales_l,
                       float* idl) noexcept {
    if constexpr (Nsub == 1) {
        dh = float_to_fp16<Arch>(sc[0]);
        idl[0] = sc[0] != 0.0f ? 1.0f / sc[0] : 0.0f;
    } else {
        float max_scale = 0.0f, amax_scale = 0.0f;
        for (int ib = 0; ib < Nsub; ++ib)
            if (std::fabs(sc[ib]) > amax_scale) {
                amax_scale = std::fabs(sc[ib]);
                max_scale = sc[ib];
            }
        *scales_h = 0;
        const float d = -max_scale / 32.0f;
        dh = float_to_fp16<Arch>(d);
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        for (int ib = 0; ib < Nsub; ++ib) {
            const int l = std::max(-32, std::min(31, round_to_int<Arch>(id * sc[ib])));
            const float dl = d * static_cast<float>(l);
            idl[ib] = dl != 0.0f ? 1.0f / dl : 0.0f;
            const int stored = l + 32;
            if (ib % 2 == 0)
                scales_l[ib / 2] = static_cast<std::uint8_t>(stored & 0x0F);
            else
                scales_l[ib / 2] = static_cast<std::uint8_t>(scales_l[ib / 2] | ((stored & 0x0F) << 4));
            *scales_h = static_cast<std::uint16_t>(*scales_h | ((stored >> 4) << (2 * ib)));
        }
    }
}

// IQ4 over one super-block of Nsub 32-value sub-blocks (ggml's
// quantize_row_iq4_nl_impl with ntry = 7, the setting ggml_quantize_chunk
// uses). Nsub == 1 is IQ4_NL; Nsub == 8 is IQ4_XS with 6-bit sub-scales.
template <int Nsub>
inline void quantize_iq4_super_block(const float* x, const float* qw, std::uint16_t& dh, std::uint8_t* qs,
                                     std::uint16_t* scales_h, std::uint8_t* scales_l) noexcept {
    using A = kernels::scalar;
    constexpr int n = 32 * Nsub;
    float sigma2 = 0.0f;
    for (int j = 0; j < n; ++j) sigma2 = sigma2 + mul_unfused<A>(x[j], x[j]);
    sigma2 = sigma2 * (2.0f / static_cast<float>(n));
    float sc[Nsub], idl[Nsub], w[32];
    for (int ib = 0; ib < Nsub; ++ib) {
        const float* xb = x + 32 * ib;
        if (qw)
            importance_weights_32(xb, qw + 32 * ib, sigma2, w);
        else
            for (int j = 0; j < 32; ++j) w[j] = mul_unfused<A>(xb[j], xb[j]);
        sc[ib] = iq4_search<A, 32>(xb, w);
    }
    iq4_scales<A, Nsub>(sc, dh, scales_h, scales_l, idl);
    std::uint8_t levels[32];
    for (int ib = 0; ib < Nsub; ++ib) {
        for (int j = 0; j < 32; ++j) {
            float l, q;
            iq4_nearest<A>(lanes<A>::mul(idl[ib], x[32 * ib + j]), l, q);
            levels[j] = static_cast<std::uint8_t>(static_cast<int>(l));
        }
        pack_nibbles_32(levels, qs + 16 * ib);
    }
}

// One TQ1_0 byte: the trits (each 0..2, first most significant, padded with
// zeros to five) as the fraction q / 3^5 rounded up to a multiple of 1/256, so
// that multiplying by 3^k and keeping the top bits of 3 * byte reads trit k.
inline std::uint8_t pack_trits(const int* trits, int count) noexcept {
    std::uint8_t q = 0;
    for (int k = 0; k < count; ++k) q = static_cast<std::uint8_t>(q * 3 + trits[k]);
    for (int k = count; k < 5; ++k) q = static_cast<std::uint8_t>(q * 3);
    return static_cast<std::uint8_t>((static_cast<unsigned>(q) * 256u + 242u) / 243u);
}

inline int unpack_trit(std::uint8_t byte, int k) noexcept {
    constexpr std::uint8_t pow3[5] = {1, 3, 9, 27, 81};
    const auto shifted = static_cast<std::uint8_t>(byte * pow3[k]);
    return (static_cast<int>(shifted) * 3) >> 8;
}

/// TQ1_0/TQ2_0's scale: d = amax of the block's 256 values, stored as fp16
/// at d16; returns 1 / d (0 for an all-zero block).
inline float ternary_scale(const float* xb, std::uint16_t& d16) noexcept {
    const float d = absmax(xb, 256);
    d16 = float_to_fp16(d);
    return d != 0.0f ? 1.0f / d : 0.0f;
}

// Ternary level of x * id: lround gives -1, 0 or 1, stored +1.
inline int ternary(float v, float id) noexcept {
    return static_cast<int>(std::lround(v * id)) + 1;
}

}  // namespace detail::blocks

// ---- Q4_0, Q4_1, Q5_0, Q5_1 -------------------------------------------------

namespace detail::blocks {

/// The legacy 32-blocks: 4 or 5 bits (qh holds the fifth), symmetric or
/// affine (m holds the offset).
template <class B>
concept legacy_block = std::is_same_v<B, block_q4_0> || std::is_same_v<B, block_q4_1> ||
                       std::is_same_v<B, block_q5_0> || std::is_same_v<B, block_q5_1>;
template <class B>
inline constexpr int legacy_bits = requires(B b) { b.qh; } ? 5 : 4;
template <class B>
inline constexpr bool legacy_affine = requires(B b) { b.m; };

/// The four legacy 32-blocks are one rule at K = 4 or 5 bits. Symmetric
/// (Q4_0, Q5_0): d = max / -2^(K-1) with max the largest-|x| element (sign
/// kept), codes x / d + 2^(K-1) rounded half up; with an imatrix, a weighted
/// least-squares scale search. Affine (Q4_1, Q5_1): d = (max - min) /
/// (2^K - 1), m = min, codes (x - min) / d rounded half up; with an imatrix,
/// a weighted affine search (min forced <= 0).
template <legacy_block Block>
inline void quantize_blocks(const float* x, Block* y, std::size_t nb, const float* imatrix) {
    constexpr int K = legacy_bits<Block>;
    constexpr bool Affine = legacy_affine<Block>;
    constexpr int top = (1 << K) - 1, half = 1 << (K - 1);
    const auto pack = [](const std::uint8_t* levels, Block& blk) {
        if constexpr (K == 4) pack_nibbles_32(levels, blk.qs);
        else pack_5bit_32(levels, blk.qh, blk.qs);
    };
    std::uint8_t levels[32];
    if (imatrix) {
        const float sigma2 = row_mean_square(x, 32 * nb);
        float w[32];
        for (std::size_t ib = 0; ib < nb; ++ib) {
            importance_weights_32(x + 32 * ib, imatrix + 32 * ib, sigma2, w);
            if constexpr (Affine) {
                float the_min = 0.0f;
                y[ib].d = float_to_fp16(qkx_levels_32(top, x + 32 * ib, w, levels, &the_min));
                y[ib].m = float_to_fp16(-the_min);
            } else {
                y[ib].d = float_to_fp16(qx_levels_32(half, x + 32 * ib, w, levels));
            }
            pack(levels, y[ib]);
        }
        return;
    }
    for (std::size_t ib = 0; ib < nb; ++ib) {
        const float* xb = x + 32 * ib;
        if constexpr (Affine) {
            const auto [min, max] = find_min_max(xb, 32);
            const float d = (max - min) / static_cast<float>(top);
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            y[ib].d = float_to_fp16(d);
            y[ib].m = float_to_fp16(min);
            for (int j = 0; j < 32; ++j) {
                const float v = ::lowbit::detail::unfused((xb[j] - min) * id) + 0.5f;
                // ggml clamps Q4_1's codes to 15 and not Q5_1's ((max - min) * id
                // + 0.5 stays below 32); the low byte is kept as its casts keep it.
                if constexpr (K == 4) levels[j] = static_cast<std::uint8_t>(std::min<int>(top, trunc_to_i8(v)));
                else levels[j] = trunc_to_u8(v);
            }
        } else {
            const float d = find_signed_absmax(xb, 32).max / -static_cast<float>(half);
            const float id = d != 0.0f ? 1.0f / d : 0.0f;
            y[ib].d = float_to_fp16(d);
            for (int j = 0; j < 32; ++j)
                levels[j] = static_cast<std::uint8_t>(
                    std::min<int>(top, trunc_to_i8(::lowbit::detail::unfused(xb[j] * id) + (static_cast<float>(half) + 0.5f))));
        }
        pack(levels, y[ib]);
    }
}

/// The legacy 32-blocks back to floats: symmetric (q - 2^(K-1)) * d, affine
/// q * d + m (unfused).
template <legacy_block Block>
inline void dequantize_blocks(const Block* b, float* y, std::size_t nb) {
    constexpr int K = legacy_bits<Block>;
    constexpr bool Affine = legacy_affine<Block>;
    for (std::size_t ib = 0; ib < nb; ++ib, y += 32) {
        const float d = fp16_to_float(b[ib].d);
        for (int j = 0; j < 32; ++j) {
            int q;
            if constexpr (K == 4) q = j < 16 ? (b[ib].qs[j] & 0x0F) : (b[ib].qs[j - 16] >> 4);
            else q = unpack_5bit(b[ib].qh, b[ib].qs, j);
            if constexpr (Affine) y[j] = ::lowbit::detail::unfused(static_cast<float>(q) * d) + fp16_to_float(b[ib].m);
            else y[j] = static_cast<float>(q - (1 << (K - 1))) * d;
        }
    }
}

}  // namespace detail::blocks

LOWBIT_GGML_ROW_FUNCTIONS(q4_0, detail::blocks)
LOWBIT_GGML_ROW_FUNCTIONS(q4_1, detail::blocks)
LOWBIT_GGML_ROW_FUNCTIONS(q5_0, detail::blocks)
LOWBIT_GGML_ROW_FUNCTIONS(q5_1, detail::blocks)

// ---- Q8_0 / Q8_1 -------------------------------------------------------------

namespace detail::blocks {

template <class B>
concept q8_block = std::is_same_v<B, block_q8_0> || std::is_same_v<B, block_q8_1>;

/// Q8_0 and Q8_1: d = amax / 127, q = round(x / d) half away from zero; Q8_1
/// also stores s = fp16(d * sum(q)). The imatrix is ignored, as in ggml.
template <q8_block Block>
inline void quantize_blocks(const float* x, Block* y, std::size_t nb, const float*) {
    for (std::size_t ib = 0; ib < nb; ++ib) {
        const float* xb = x + 32 * ib;
        const float d = absmax(xb, 32) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[ib].d = float_to_fp16(d);
        int sum = 0;
        for (int j = 0; j < 32; ++j) {
            y[ib].qs[j] = trunc_to_i8(std::round(xb[j] * id));
            sum += y[ib].qs[j];
        }
        if constexpr (requires { y[ib].s; }) y[ib].s = float_to_fp16(static_cast<float>(sum) * d);
    }
}

template <q8_block Block>
inline void dequantize_blocks(const Block* b, float* y, std::size_t nb) {
    for (std::size_t ib = 0; ib < nb; ++ib, y += 32) {
        const float d = fp16_to_float(b[ib].d);
        for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(b[ib].qs[j]) * d;
    }
}

}  // namespace detail::blocks

/// Q8_1 is Q8_0 plus s. ggml_quantize_chunk has no Q8_1 (it is an activation
/// format); the bytes equal quantize_row_q8_1_ref's.
LOWBIT_GGML_ROW_FUNCTIONS(q8_0, detail::blocks)
LOWBIT_GGML_ROW_FUNCTIONS(q8_1, detail::blocks)

// ---- IQ4_NL / IQ4_XS ---------------------------------------------------------

namespace detail::blocks {

/// IQ4_NL: one fp16 scale per 32 over the iq4_nl_values codebook, chosen by a
/// weighted search (weights x^2, or imatrix * sqrt(2 mean x^2 + x^2)).
inline void quantize_blocks(const float* x, block_iq4_nl* y, std::size_t nb, const float* imatrix) {
    for (std::size_t ib = 0; ib < nb; ++ib)
        quantize_iq4_super_block<1>(x + 32 * ib, imatrix ? imatrix + 32 * ib : nullptr, y[ib].d, y[ib].qs,
                                         nullptr, nullptr);
}

inline void dequantize_blocks(const block_iq4_nl* b, float* y, std::size_t nb) {
    for (std::size_t ib = 0; ib < nb; ++ib, y += 32) {
        const float d = fp16_to_float(b[ib].d);
        for (int j = 0; j < 16; ++j) {
            y[j] = d * static_cast<float>(iq4_nl_values[b[ib].qs[j] & 0x0F]);
            y[j + 16] = d * static_cast<float>(iq4_nl_values[b[ib].qs[j] >> 4]);
        }
    }
}

/// IQ4_XS: IQ4_NL's search per 32, then an fp16 super-scale per 256 with
/// 6-bit signed sub-scales.
inline void quantize_blocks(const float* x, block_iq4_xs* y, std::size_t nb, const float* imatrix) {
    for (std::size_t ib = 0; ib < nb; ++ib)
        quantize_iq4_super_block<8>(x + 256 * ib, imatrix ? imatrix + 256 * ib : nullptr, y[ib].d, y[ib].qs,
                                         &y[ib].scales_h, y[ib].scales_l);
}

inline void dequantize_blocks(const block_iq4_xs* b, float* y, std::size_t nb) {
    for (std::size_t i = 0; i < nb; ++i) {
        const float d = fp16_to_float(b[i].d);
        for (int ib = 0; ib < 8; ++ib, y += 32) {
            const int ls = ((b[i].scales_l[ib / 2] >> (4 * (ib % 2))) & 0x0F) | (((b[i].scales_h >> (2 * ib)) & 3) << 4);
            const float dl = d * static_cast<float>(ls - 32);
            const std::uint8_t* qs = b[i].qs + 16 * ib;
            for (int j = 0; j < 16; ++j) {
                y[j] = dl * static_cast<float>(iq4_nl_values[qs[j] & 0x0F]);
                y[j + 16] = dl * static_cast<float>(iq4_nl_values[qs[j] >> 4]);
            }
        }
    }
}

// ---- MXFP4 -------------------------------------------------------------------

/// MXFP4 (OCP MX): e = floor(log2 amax) - 2 + 127, each element the nearest
/// E2M1 value times 2^(e - 127). The imatrix is ignored, as in ggml.
inline void quantize_blocks(const float* x, block_mxfp4* y, std::size_t nb, const float* imatrix) {
    (void)imatrix;
    for (std::size_t ib = 0; ib < nb; ++ib) {
        const float* xb = x + 32 * ib;
        const float amax = find_signed_absmax(xb, 32).amax;
        // log2f, not an exact exponent: ggml's scale follows libm's rounding
        // of log2 just below a power of two.
        std::uint8_t e = 0;
        if (amax > 0.0f) {
            const float biased = std::floor(std::log2(amax)) - 2.0f + 127.0f;
            e = std::isfinite(biased) ? trunc_to_u8(biased) : std::uint8_t{0};
        }
        y[ib].e = e;
        const float d = mxfp4_half_scale(e);
        std::uint8_t levels[32];
        for (int j = 0; j < 32; ++j) levels[j] = nearest_mxfp4_index(xb[j], d);
        pack_nibbles_32(levels, y[ib].qs);
    }
}

inline void dequantize_blocks(const block_mxfp4* b, float* y, std::size_t nb) {
    for (std::size_t ib = 0; ib < nb; ++ib, y += 32) {
        const float d = mxfp4_half_scale(b[ib].e);
        for (int j = 0; j < 16; ++j) {
            y[j] = static_cast<float>(mxfp4_values[b[ib].qs[j] & 0x0F]) * d;
            y[j + 16] = static_cast<float>(mxfp4_values[b[ib].qs[j] >> 4]) * d;
        }
    }
}

// ---- TQ1_0 / TQ2_0 -------------------------------------------------------------

/// TQ1_0 (ternary, 1.6875 bpw): d = amax, trits round(x / d) in {-1, 0, 1}.
/// The imatrix is ignored, as in ggml.
inline void quantize_blocks(const float* x, block_tq1_0* y, std::size_t nb, const float* imatrix) {
    (void)imatrix;
    for (std::size_t ib = 0; ib < nb; ++ib) {
        const float* xb = x + 256 * ib;
        const float id = ternary_scale(xb, y[ib].d);
        int t[5];
        // Bytes 0-31 carry elements 32k + m, bytes 32-47 elements 160 + 16k + m,
        // qh[j] elements 240 + 4k + j (k = trit position, most significant first).
        for (int m = 0; m < 32; ++m) {
            for (int k = 0; k < 5; ++k) t[k] = ternary(xb[m + 32 * k], id);
            y[ib].qs[m] = pack_trits(t, 5);
        }
        for (int m = 0; m < 16; ++m) {
            for (int k = 0; k < 5; ++k) t[k] = ternary(xb[160 + m + 16 * k], id);
            y[ib].qs[32 + m] = pack_trits(t, 5);
        }
        for (int j = 0; j < 4; ++j) {
            for (int k = 0; k < 4; ++k) t[k] = ternary(xb[240 + j + 4 * k], id);
            y[ib].qh[j] = pack_trits(t, 4);
        }
    }
}

inline void dequantize_blocks(const block_tq1_0* b, float* y, std::size_t nb) {
    for (std::size_t ib = 0; ib < nb; ++ib, y += 256) {
        const float d = fp16_to_float(b[ib].d);
        for (int k = 0; k < 5; ++k)
            for (int m = 0; m < 32; ++m)
                y[32 * k + m] = static_cast<float>(unpack_trit(b[ib].qs[m], k) - 1) * d;
        for (int k = 0; k < 5; ++k)
            for (int m = 0; m < 16; ++m)
                y[160 + 16 * k + m] = static_cast<float>(unpack_trit(b[ib].qs[32 + m], k) - 1) * d;
        for (int k = 0; k < 4; ++k)
            for (int j = 0; j < 4; ++j)
                y[240 + 4 * k + j] = static_cast<float>(unpack_trit(b[ib].qh[j], k) - 1) * d;
    }
}

/// TQ2_0 (ternary, 2.0625 bpw): d = amax, 2-bit codes round(x / d) + 1. The
/// imatrix is ignored, as in ggml.
inline void quantize_blocks(const float* x, block_tq2_0* y, std::size_t nb, const float* imatrix) {
    (void)imatrix;
    for (std::size_t ib = 0; ib < nb; ++ib) {
        const float* xb = x + 256 * ib;
        const float id = ternary_scale(xb, y[ib].d);
        for (int half = 0; half < 2; ++half)
            for (int m = 0; m < 32; ++m) {
                unsigned q = 0;
                for (int k = 0; k < 4; ++k)
                    q |= static_cast<unsigned>(ternary(xb[128 * half + 32 * k + m], id) & 3) << (2 * k);
                y[ib].qs[32 * half + m] = static_cast<std::uint8_t>(q);
            }
    }
}

inline void dequantize_blocks(const block_tq2_0* b, float* y, std::size_t nb) {
    for (std::size_t ib = 0; ib < nb; ++ib, y += 256) {
        const float d = fp16_to_float(b[ib].d);
        for (int half = 0; half < 2; ++half)
            for (int k = 0; k < 4; ++k)
                for (int m = 0; m < 32; ++m)
                    y[128 * half + 32 * k + m] =
                        static_cast<float>(((b[ib].qs[32 * half + m] >> (2 * k)) & 3) - 1) * d;
    }
}

}  // namespace detail::blocks

LOWBIT_GGML_ROW_FUNCTIONS(iq4_nl, detail::blocks)
LOWBIT_GGML_ROW_FUNCTIONS(iq4_xs, detail::blocks)
LOWBIT_GGML_ROW_FUNCTIONS(mxfp4, detail::blocks)
LOWBIT_GGML_ROW_FUNCTIONS(tq1_0, detail::blocks)
LOWBIT_GGML_ROW_FUNCTIONS(tq2_0, detail::blocks)

}  // namespace ggml
LOWBIT_NAMESPACE_END
