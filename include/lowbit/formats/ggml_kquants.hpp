#pragma once
// ggml's K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and the Q8_K activation type):
// block layouts and row quantize/dequantize functions whose bytes equal ggml's
// own (quantize_row_*_ref without an importance matrix, quantize_row_*_impl
// with one).
//
// Byte equality depends on float evaluation order, so the code keeps ggml's
// order of operations, its float (not double) accumulators and its rounding
// helpers, and keeps products out of fma (detail/fp_contract.hpp); -ffast-math
// would break it.
//
// The searches (formats/ggml_kquant_search.hpp), the per-super-block scale
// steps and the packing helpers below are templates on the instruction-set
// tag: the scalar reference here is their kernels::scalar instance, one
// sub-block at a time, and kernels/ggml_quantize.hpp runs the same templates
// on xsimd batches, one sub-block per lane.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
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

/// Elements per K-quant super-block.
inline constexpr std::size_t qk_k = 256;
/// Bytes of the packed 6-bit scales/mins of Q4_K and Q5_K (and Q3_K's scales).
inline constexpr std::size_t k_scale_size = 12;

// Field order and types follow ggml-common.h; fp16 values are raw bits.

/// 2.625 bits/weight: 16 sub-blocks of 16, x = d*sc*q - dmin*m, q in [0,3].
struct block_q2_k {
    static constexpr type type_id = type::q2_k;
    static constexpr std::size_t block_size = qk_k;
    std::uint8_t scales[qk_k / 16];  ///< low nibble scale, high nibble min
    std::uint8_t qs[qk_k / 4];       ///< 2-bit quants
    std::uint16_t d;                 ///< fp16 super-scale of the scales
    std::uint16_t dmin;              ///< fp16 super-scale of the mins
};

/// 3.4375 bits/weight: 16 sub-blocks of 16, x = d*(sc-32)*(q-4), q in [0,7].
struct block_q3_k {
    static constexpr type type_id = type::q3_k;
    static constexpr std::size_t block_size = qk_k;
    std::uint8_t hmask[qk_k / 8];     ///< high bit of each quant
    std::uint8_t qs[qk_k / 4];        ///< low 2 bits
    std::uint8_t scales[k_scale_size];  ///< sixteen 6-bit scales
    std::uint16_t d;                  ///< fp16 super-scale
};

/// 4.5 bits/weight: 8 sub-blocks of 32, x = d*sc*q - dmin*m, q in [0,15].
struct block_q4_k {
    static constexpr type type_id = type::q4_k;
    static constexpr std::size_t block_size = qk_k;
    std::uint16_t d;
    std::uint16_t dmin;
    std::uint8_t scales[k_scale_size];  ///< 6-bit scales and mins, see get_scale_min_k4
    std::uint8_t qs[qk_k / 2];
};

/// 5.5 bits/weight: Q4_K with a fifth bit per quant in qh.
struct block_q5_k {
    static constexpr type type_id = type::q5_k;
    static constexpr std::size_t block_size = qk_k;
    std::uint16_t d;
    std::uint16_t dmin;
    std::uint8_t scales[k_scale_size];
    std::uint8_t qh[qk_k / 8];
    std::uint8_t qs[qk_k / 2];
};

/// 6.5625 bits/weight: 16 sub-blocks of 16, x = d*sc*(q-32), q in [0,63].
struct block_q6_k {
    static constexpr type type_id = type::q6_k;
    static constexpr std::size_t block_size = qk_k;
    std::uint8_t ql[qk_k / 2];   ///< low 4 bits
    std::uint8_t qh[qk_k / 4];   ///< high 2 bits
    std::int8_t scales[qk_k / 16];
    std::uint16_t d;
};

/// Activations for the K-quant dot products: x = d*q with a float d.
struct block_q8_k {
    static constexpr type type_id = type::q8_k;
    static constexpr std::size_t block_size = qk_k;
    float d;
    std::int8_t qs[qk_k];
    std::int16_t bsums[qk_k / 16];  ///< sums of qs over groups of 16
};

static_assert(detail::rows::matches_ggml<block_q2_k>());
static_assert(detail::rows::matches_ggml<block_q3_k>());
static_assert(detail::rows::matches_ggml<block_q4_k>());
static_assert(detail::rows::matches_ggml<block_q5_k>());
static_assert(detail::rows::matches_ggml<block_q6_k>());
static_assert(detail::rows::matches_ggml<block_q8_k>());

namespace detail {

inline float half_to_float(std::uint16_t h) noexcept { return fp16_to_float(h); }

// ---- scale packing ------------------------------------------------------
// Integer code, but templates on the instruction-set tag all the same: the
// kernels call them from per-ISA translation units (see kernels/dispatch.hpp).

/// Scale and min j (0..7) of Q4_K/Q5_K's 12-byte table.
template <class Arch = kernels::scalar, class T>
constexpr void get_scale_min_k4(int j, const std::uint8_t* q, T& sc, T& m) noexcept {
    if (j < 4) {
        sc = static_cast<T>(q[j] & 63);
        m = static_cast<T>(q[j + 4] & 63);
    } else {
        sc = static_cast<T>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m = static_cast<T>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/// All eight scales and mins of the 12-byte table at once, a 32-bit word of
/// four at a time (get_scale_min_k4's rule: bytes 0-3 and 4-7 hold scales
/// and mins 0-3 in their low six bits and the top two bits of 4-7 in their
/// top two; bytes 8-11 the low four bits of scale and min 4-7).
template <class Arch = kernels::scalar>
inline void unpack_scale_min_k4(const std::uint8_t* q, std::uint8_t* sc, std::uint8_t* m) noexcept {
    static_assert(std::endian::native == std::endian::little, "the table is read as little-endian words");
    std::uint32_t w[3];
    std::memcpy(w, q, 12);
    const std::uint32_t s[2] = {w[0] & 0x3F3F3F3Fu, (w[2] & 0x0F0F0F0Fu) | ((w[0] >> 2) & 0x30303030u)};
    const std::uint32_t n[2] = {w[1] & 0x3F3F3F3Fu, ((w[2] >> 4) & 0x0F0F0F0Fu) | ((w[1] >> 2) & 0x30303030u)};
    std::memcpy(sc, s, 8);
    std::memcpy(m, n, 8);
}

/// Packs eight 6-bit scales and mins into the 12-byte table get_scale_min_k4
/// reads. Values above 63 are packed as given (their extra bits spill the way
/// ggml's do); callers clamp where ggml clamps.
template <class Arch = kernels::scalar>
constexpr void set_scale_min_k4(const std::uint8_t* ls, const std::uint8_t* lm, std::uint8_t* q) noexcept {
    for (int j = 0; j < 8; ++j) {
        const std::uint8_t s = ls[j], m = lm[j];
        if (j < 4) {
            q[j] = s;
            q[j + 4] = m;
        } else {
            q[j + 4] = static_cast<std::uint8_t>((s & 0xF) | ((m & 0xF) << 4));
            q[j - 4] = static_cast<std::uint8_t>(q[j - 4] | ((s >> 4) << 6));
            q[j] = static_cast<std::uint8_t>(q[j] | ((m >> 4) << 6));
        }
    }
}

/// Q3_K's 6-bit scale j (0..15), as stored (0..63, i.e. scale + 32).
template <class Arch = kernels::scalar>
constexpr int get_scale_q3(int j, const std::uint8_t* s) noexcept {
    const int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    return lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
}

/// Packs sixteen stored Q3_K scales (0..63) into the 12-byte table.
template <class Arch = kernels::scalar>
constexpr void set_scales_q3(const int* l, std::uint8_t* s) noexcept {
    for (int j = 0; j < 12; ++j) s[j] = 0;
    for (int j = 0; j < 16; ++j) {
        if (j < 8)
            s[j] = static_cast<std::uint8_t>(l[j] & 0xF);
        else
            s[j - 8] = static_cast<std::uint8_t>(s[j - 8] | ((l[j] & 0xF) << 4));
        s[j % 4 + 8] = static_cast<std::uint8_t>(s[j % 4 + 8] | ((l[j] >> 4) << (2 * (j / 4))));
    }
}

// ---- quant packing --------------------------------------------------------

/// Four 2-bit planes per 128 values: byte 32h+l holds 128h+l, +32, +64, +96.
template <class Arch = kernels::scalar>
inline void pack_2bit(const std::uint8_t* q, std::uint8_t* qs) noexcept {
    for (int j = 0; j < static_cast<int>(qk_k); j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = static_cast<std::uint8_t>(q[j + l] | (q[j + l + 32] << 2) | (q[j + l + 64] << 4) |
                                                       (q[j + l + 96] << 6));
}

/// Nibbles per 64 values: byte 32c+l holds 64c+l (low) and 64c+32+l (high);
/// the fifth bit, if any (levels 0..31), goes to qh[l] bit 2c / 2c+1.
template <class Arch = kernels::scalar>
inline void pack_4bit_5bit(const std::uint8_t* q, std::uint8_t* qs, std::uint8_t* qh) noexcept {
    if (qh) std::memset(qh, 0, qk_k / 8);
    for (int c = 0; c < static_cast<int>(qk_k) / 64; ++c) {
        for (int l = 0; l < 32; ++l) {
            int l1 = q[64 * c + l], l2 = q[64 * c + l + 32];
            if (qh) {
                qh[l] = static_cast<std::uint8_t>(qh[l] | ((l1 >> 4) << (2 * c)) | ((l2 >> 4) << (2 * c + 1)));
                l1 &= 15;
                l2 &= 15;
            }
            qs[32 * c + l] = static_cast<std::uint8_t>(l1 | (l2 << 4));
        }
    }
}

/// Q3_K (levels 0..7): bit 2 of value e into hmask[e%32] bit e/32 (without a
/// branch: it is a coin flip), low 2 bits as Q2_K. L is overwritten.
template <class Arch = kernels::scalar>
inline void pack_q3(std::uint8_t* L, block_q3_k& y) noexcept {
    std::memset(y.hmask, 0, sizeof y.hmask);
    for (int c = 0; c < 8; ++c)
        for (int l = 0; l < 32; ++l) {
            std::uint8_t& v = L[32 * c + l];
            y.hmask[l] = static_cast<std::uint8_t>(y.hmask[l] | ((v >> 2) << c));
            v = static_cast<std::uint8_t>(v & 3);
        }
    pack_2bit<Arch>(L, y.qs);
}

/// Q6_K per 128 values: ql[l] = l | l+64 << 4, ql[l+32] = l+32 | l+96 << 4,
/// qh[l] = high 2 bits of l, l+32, l+64, l+96.
template <class Arch = kernels::scalar>
inline void pack_q6(const std::uint8_t* L, block_q6_k& y) noexcept {
    std::uint8_t* ql = y.ql;
    std::uint8_t* qh = y.qh;
    for (int j = 0; j < static_cast<int>(qk_k); j += 128) {
        for (int l = 0; l < 32; ++l) {
            const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
            ql[l] = static_cast<std::uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
            ql[l + 32] = static_cast<std::uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
            qh[l] = static_cast<std::uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

// ---- one super-block's scales ----------------------------------------------
// After the sub-block searches, each type quantizes the sub-block scales (and
// mins) of one super-block and stores them; dsub/msub receive the scale and
// offset every sub-block is requantized with. sw: the sub-blocks' summed
// importance weights, or null without an imatrix.

template <class Arch>
inline void q2_k_scales(const float* scales, const float* mins, const float* sw, block_q2_k& y, float* dsub,
                        float* msub) noexcept {
    if (!sw) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; ++j) {
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        if (max_scale > 0) {
            const float iscale = 15.f / max_scale;
            for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<std::uint8_t>(round_to_int<Arch>(iscale * scales[j]));
            y.d = float_to_fp16<Arch>(max_scale / 15.f);
        } else {
            for (int j = 0; j < 16; ++j) y.scales[j] = 0;
            y.d = float_to_fp16<Arch>(0.f);
        }
        if (max_min > 0) {
            const float iscale = 15.f / max_min;
            for (int j = 0; j < 16; ++j)
                y.scales[j] = static_cast<std::uint8_t>(y.scales[j] | (round_to_int<Arch>(iscale * mins[j]) << 4));
            y.dmin = float_to_fp16<Arch>(max_min / 15.f);
        } else {
            y.dmin = float_to_fp16<Arch>(0.f);
        }
    } else {
        std::uint8_t Ls[16], Lm[16];
        y.d = float_to_fp16<Arch>(make_qp<Arch>(16, 15, scales, Ls, sw));
        y.dmin = float_to_fp16<Arch>(make_qp<Arch>(16, 15, mins, Lm, sw));
        for (int j = 0; j < 16; ++j) y.scales[j] = static_cast<std::uint8_t>(Ls[j] | (Lm[j] << 4));
    }
    const float d = fp16_to_float<Arch>(y.d), dmin = fp16_to_float<Arch>(y.dmin);
    for (int j = 0; j < 16; ++j) {
        dsub[j] = d * static_cast<float>(y.scales[j] & 0xF);
        msub[j] = dmin * static_cast<float>(y.scales[j] >> 4);
    }
}

template <class Arch>
inline void q3_k_dsub(const block_q3_k& y, float* dsub) noexcept {
    const float d = fp16_to_float<Arch>(y.d);
    for (int j = 0; j < 16; ++j) {
        const auto s = static_cast<std::int8_t>(get_scale_q3<Arch>(j, y.scales) - 32);
        dsub[j] = d * static_cast<float>(s);
    }
}

/// Q3_K without an imatrix (with one, see quantize_block).
template <class Arch>
inline void q3_k_scales(const float* scales, block_q3_k& y, float* dsub) noexcept {
    const float max_scale = find_signed_absmax(scales, 16).max;
    if (max_scale != 0.f) {
        const float iscale = -32.f / max_scale;
        int ls[16];
        for (int j = 0; j < 16; ++j) {
            // ggml narrows to int8 before clamping.
            const auto l = static_cast<std::int8_t>(round_to_int<Arch>(iscale * scales[j]));
            ls[j] = std::max(-32, std::min(31, static_cast<int>(l))) + 32;
        }
        set_scales_q3<Arch>(ls, y.scales);
        y.d = float_to_fp16<Arch>(1 / iscale);
    } else {
        std::memset(y.scales, 0, sizeof y.scales);
        y.d = float_to_fp16<Arch>(0.f);
    }
    q3_k_dsub<Arch>(y, dsub);
}

template <class Arch, int Nmax>
inline void q45_k_scales(const float* scales, const float* mins, const float* sw, std::uint16_t& d16,
                         std::uint16_t& dmin16, std::uint8_t* packed, float* dsub, float* msub) noexcept {
    std::uint8_t Ls[8], Lm[8];
    if (!sw) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 8; ++j) {
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < 8; ++j) {
            Ls[j] = static_cast<std::uint8_t>(round_to_int<Arch>(inv_scale * scales[j]));
            Lm[j] = static_cast<std::uint8_t>(round_to_int<Arch>(inv_min * mins[j]));
        }
        d16 = float_to_fp16<Arch>(max_scale / 63.f);
        dmin16 = float_to_fp16<Arch>(max_min / 63.f);
    } else {
        d16 = float_to_fp16<Arch>(make_qp<Arch>(8, 63, scales, Ls, sw));
        dmin16 = float_to_fp16<Arch>(make_qp<Arch>(8, 63, mins, Lm, sw));
    }
    // ggml clamps to 63 except on Q4_K's imatrix path, where a negative
    // sub-block scale from the search wraps to a large byte and is packed as is.
    if (!sw || Nmax != 15)
        for (int j = 0; j < 8; ++j) {
            Ls[j] = Ls[j] < 63 ? Ls[j] : std::uint8_t{63};
            Lm[j] = Lm[j] < 63 ? Lm[j] : std::uint8_t{63};
        }
    set_scale_min_k4<Arch>(Ls, Lm, packed);
    const float d = fp16_to_float<Arch>(d16), dmin = fp16_to_float<Arch>(dmin16);
    for (int j = 0; j < 8; ++j) {
        int s, m;
        get_scale_min_k4<Arch>(j, packed, s, m);
        dsub[j] = d * static_cast<float>(s);
        msub[j] = dmin * static_cast<float>(m);
    }
}

/// Returns false for an all-zero super-block (stored as zeros).
template <class Arch>
inline bool q6_k_scales(const float* scales, block_q6_k& y, float* dsub) noexcept {
    const auto [max_abs_scale, max_scale] = find_signed_absmax(scales, 16);
    if (max_abs_scale < group_max_eps) return false;
    const float iscale = -128.f / max_scale;
    y.d = float_to_fp16<Arch>(1 / iscale);
    for (int j = 0; j < 16; ++j) {
        const int l = round_to_int<Arch>(iscale * scales[j]);
        y.scales[j] = static_cast<std::int8_t>(l < 127 ? l : 127);
    }
    const float d = fp16_to_float<Arch>(y.d);
    for (int j = 0; j < 16; ++j) dsub[j] = d * static_cast<float>(y.scales[j]);
    return true;
}

// ---- one super-block ------------------------------------------------------
// The scalar reference: the searches and scale steps above on the scalar
// tag, one sub-block at a time. qw: the block's 256 importance values, or
// null for ggml's reference path.

using ref_arch = kernels::scalar;

inline void quantize_block(const float* x, const float* qw, block_q2_k& y) noexcept {
    using A = ref_arch;
    float L[qk_k], w[16], scales[16], mins[16], sw[16], dsub[16], msub[16];
    const float sigma2 = qw ? sum_squares<A>(x, qk_k) / qk_k : 0.f;
    for (int j = 0; j < 16; ++j) {
        const float* xs = x + 16 * j;
        if (qw) {
            imatrix_weights<A, 16>(xs, qw + 16 * j, sigma2, w, sw[j]);
            qkx_search<A, 16>(xs, w, L + 16 * j, scales[j], mins[j], 3.f, -0.9f, 0.05f, 36, false);
        } else {
            for (int l = 0; l < 16; ++l) w[l] = std::fabs(xs[l]);
            qkx_search<A, 16>(xs, w, L + 16 * j, scales[j], mins[j], 3.f, -0.5f, 0.1f, 15, true);
        }
    }
    q2_k_scales<A>(scales, mins, qw ? sw : nullptr, y, dsub, msub);
    for (int j = 0; j < 16; ++j) requantize<A, 16, true>(x + 16 * j, L + 16 * j, dsub[j], msub[j], 0.f, 3.f);
    std::uint8_t lev[qk_k];
    levels_to_bytes(L, qk_k, lev);
    pack_2bit<A>(lev, y.qs);
}

inline void quantize_block(const float* x, const float* qw, block_q3_k& y) noexcept {
    using A = ref_arch;
    float L[qk_k], scales[16], dsub[16];
    if (!qw) {
        for (int j = 0; j < 16; ++j) {
            float xb[1][16], Lb[1][16];
            std::memcpy(xb[0], x + 16 * j, sizeof xb[0]);
            q3_search<A, 16, 1>(xb, Lb, scales + j, 4.f);
            std::memcpy(L + 16 * j, Lb[0], sizeof Lb[0]);
        }
        q3_k_scales<A>(scales, y, dsub);
    } else {
        float w[16], sw[16], Ls[16], d_block;
        const float sigma2 = 2 * sum_squares<A>(x, qk_k) / qk_k;
        for (int j = 0; j < 16; ++j) {
            imatrix_weights<A, 16>(x + 16 * j, qw + 16 * j, sigma2, w, sw[j]);
            qx_search<A, 16>(x + 16 * j, w, L + 16 * j, scales[j], 4.f);
        }
        qx_search<A, 16>(scales, sw, Ls, d_block, 32.f);
        int ls[16];
        for (int j = 0; j < 16; ++j) ls[j] = static_cast<int>(Ls[j]);
        set_scales_q3<A>(ls, y.scales);
        y.d = float_to_fp16<A>(d_block);
        q3_k_dsub<A>(y, dsub);
    }
    for (int j = 0; j < 16; ++j) requantize<A, 16, false>(x + 16 * j, L + 16 * j, dsub[j], 0.f, -4.f, 3.f);
    std::uint8_t lev[qk_k];
    levels_to_bytes(L, qk_k, lev);
    pack_q3<A>(lev, y);
}

/// Q4_K (nmax 15) and Q5_K (nmax 31) share everything but the packing.
template <int Nmax, class Block>
inline void quantize_block_q45_k(const float* x, const float* qw, Block& y) noexcept {
    using A = ref_arch;
    float L[qk_k], w[32], scales[8], mins[8], sw[8], dsub[8], msub[8];
    const float sigma2 = qw ? 2 * sum_squares<A>(x, qk_k) / qk_k : 0.f;
    for (int j = 0; j < 8; ++j) {
        const float* xs = x + 32 * j;
        if (qw) {
            imatrix_weights<A, 32>(xs, qw + 32 * j, sigma2, w, sw[j]);
            qkx_search<A, 32>(xs, w, L + 32 * j, scales[j], mins[j], Nmax, -0.9f, 0.05f, 36, false);
        } else {
            rms_plus_abs_weights<A, 32>(xs, w);
            if constexpr (Nmax == 15)
                qkx_search<A, 32>(xs, w, L + 32 * j, scales[j], mins[j], Nmax, -1.f, 0.1f, 20, false);
            else
                qkx_search<A, 32>(xs, w, L + 32 * j, scales[j], mins[j], Nmax, -0.5f, 0.1f, 15, false);
        }
    }
    q45_k_scales<A, Nmax>(scales, mins, qw ? sw : nullptr, y.d, y.dmin, y.scales, dsub, msub);
    for (int j = 0; j < 8; ++j)
        requantize<A, 32, true>(x + 32 * j, L + 32 * j, dsub[j], msub[j], 0.f, static_cast<float>(Nmax));
    std::uint8_t lev[qk_k];
    levels_to_bytes(L, qk_k, lev);
    if constexpr (Nmax == 15)
        pack_4bit_5bit<A>(lev, y.qs, nullptr);
    else
        pack_4bit_5bit<A>(lev, y.qs, y.qh);
}

inline void quantize_block(const float* x, const float* qw, block_q4_k& y) noexcept {
    quantize_block_q45_k<15>(x, qw, y);
}

inline void quantize_block(const float* x, const float* qw, block_q5_k& y) noexcept {
    quantize_block_q45_k<31>(x, qw, y);
}

inline void quantize_block(const float* x, const float* qw, block_q6_k& y) noexcept {
    using A = ref_arch;
    float L[qk_k], w[16], scales[16], dsub[16];
    for (int j = 0; j < 16; ++j) {
        const float* xs = x + 16 * j;
        // With an imatrix ggml weights the search by the imatrix alone.
        if (qw)
            for (int l = 0; l < 16; ++l) w[l] = qw[16 * j + l];
        else
            for (int l = 0; l < 16; ++l) w[l] = mul_unfused<A>(xs[l], xs[l]);
        qx_search<A, 16>(xs, w, L + 16 * j, scales[j], 32.f);
    }
    if (!q6_k_scales<A>(scales, y, dsub)) {
        std::memset(&y, 0, sizeof y);
        return;
    }
    for (int j = 0; j < 16; ++j) requantize<A, 16, false>(x + 16 * j, L + 16 * j, dsub[j], 0.f, -32.f, 31.f);
    std::uint8_t lev[qk_k];
    levels_to_bytes(L, qk_k, lev);
    pack_q6<A>(lev, y);
}

inline void quantize_block(const float* x, const float* /*imatrix: ignored, as in ggml*/, block_q8_k& y) noexcept {
    using A = ref_arch;
    float max = 0, amax = 0;
    for (std::size_t j = 0; j < qk_k; ++j) {
        const float ax = std::fabs(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    if (amax == 0.f) {
        // ggml leaves bsums untouched here; zero is what they sum to.
        std::memset(&y, 0, sizeof y);
        return;
    }
    // -127, not -128: keeps every q in [-127, 127] for ggml's SIMD dot products.
    const float iscale = -127.f / max;
    for (std::size_t j = 0; j < qk_k; ++j) {
        const int l = round_to_int<A>(iscale * x[j]);
        y.qs[j] = static_cast<std::int8_t>(l < 127 ? l : 127);
    }
    for (std::size_t j = 0; j < qk_k / 16; ++j) {
        int s = 0;
        for (std::size_t i = 0; i < 16; ++i) s += y.qs[16 * j + i];
        y.bsums[j] = static_cast<std::int16_t>(s);
    }
    y.d = 1 / iscale;
}

// ---- dequantize one super-block ------------------------------------------

inline void dequantize_block(const block_q2_k& b, float* y) noexcept {
    const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
    for (int e = 0; e < static_cast<int>(qk_k); ++e) {
        const std::uint8_t sc = b.scales[e / 16];
        const int q = (b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        y[e] = ::lowbit::detail::unfused(d * static_cast<float>(sc & 0xF) * static_cast<float>(q)) -
               ::lowbit::detail::unfused(dmin * static_cast<float>(sc >> 4));
    }
}

inline void dequantize_block(const block_q3_k& b, float* y) noexcept {
    const float d = half_to_float(b.d);
    for (int e = 0; e < static_cast<int>(qk_k); ++e) {
        const float dl = d * static_cast<float>(get_scale_q3<kernels::scalar>(e / 16, b.scales) - 32);
        const int lo = (b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        const int q = lo - ((b.hmask[e % 32] >> (e / 32)) & 1 ? 0 : 4);
        y[e] = dl * static_cast<float>(q);
    }
}

/// Q4_K and Q5_K (a fifth bit per value in qh): d * sc_j * q - dmin * m_j.
template <class Block>
    requires std::is_same_v<Block, block_q4_k> || std::is_same_v<Block, block_q5_k>
inline void dequantize_block(const Block& b, float* y) noexcept {
    const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
    for (int j = 0; j < 8; ++j) {
        std::uint8_t sc, m;
        get_scale_min_k4<kernels::scalar>(j, b.scales, sc, m);
        const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
        const std::uint8_t* q = b.qs + 32 * (j / 2);
        const int shift = 4 * (j % 2);
        for (int l = 0; l < 32; ++l) {
            int v = (q[l] >> shift) & 0xF;
            if constexpr (std::is_same_v<Block, block_q5_k>) v |= ((b.qh[l] >> j) & 1) << 4;
            y[32 * j + l] = ::lowbit::detail::unfused(dl * static_cast<float>(v)) - ml;
        }
    }
}

inline void dequantize_block(const block_q6_k& b, float* y) noexcept {
    const float d = half_to_float(b.d);
    for (int e = 0; e < static_cast<int>(qk_k); ++e) {
        const int h = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
        const std::uint8_t lo_byte = b.ql[64 * h + l + 32 * (quarter & 1)];
        const int lo = (lo_byte >> (4 * (quarter >> 1))) & 0xF;
        const int hi = (b.qh[32 * h + l] >> (2 * quarter)) & 3;
        y[e] = d * static_cast<float>(b.scales[e / 16]) * static_cast<float>((lo | (hi << 4)) - 32);
    }
}

inline void dequantize_block(const block_q8_k& b, float* y) noexcept {
    for (std::size_t j = 0; j < qk_k; ++j) y[j] = b.d * static_cast<float>(b.qs[j]);
}

// ---- rows -------------------------------------------------------------------

template <class Block>
inline void quantize_blocks(const float* x, Block* y, std::size_t nb, const float* imatrix) noexcept {
    for (std::size_t i = 0; i < nb; ++i) quantize_block(x + i * qk_k, imatrix ? imatrix + i * qk_k : nullptr, y[i]);
}

template <class Block>
inline void dequantize_blocks(const Block* b, float* y, std::size_t nb) noexcept {
    for (std::size_t i = 0; i < nb; ++i) dequantize_block(b[i], y + i * qk_k);
}

}  // namespace detail

// x: n floats (n a multiple of 256); dst: n/256 blocks. imatrix: null, or one
// importance value per column of the row (n values), as ggml_quantize_chunk
// takes it. Without an imatrix the bytes equal ggml's quantize_row_*_ref, with
// one ggml's quantize_row_*_impl. Q8_K ignores the imatrix.
LOWBIT_GGML_ROW_FUNCTIONS(q2_k, detail)
LOWBIT_GGML_ROW_FUNCTIONS(q3_k, detail)
LOWBIT_GGML_ROW_FUNCTIONS(q4_k, detail)
LOWBIT_GGML_ROW_FUNCTIONS(q5_k, detail)
LOWBIT_GGML_ROW_FUNCTIONS(q6_k, detail)
LOWBIT_GGML_ROW_FUNCTIONS(q8_k, detail)

}  // namespace ggml
LOWBIT_NAMESPACE_END
