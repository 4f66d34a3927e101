#pragma once
// Dequantize rows of ggml blocks (Q4_0 ... Q6_K, IQ4, MXFP4, ternary) into f32.
//
// Each block is decoded in two stages: integer code bits -> one int8 value per
// element (plus a float scale, and an offset where the type has one, per
// group), then int8 -> float with exactly the float operations of the scalar
// row functions in formats/ggml_blocks.hpp and formats/ggml_kquants.hpp, in
// their order and without fma, so every instruction set gives their bits.
// The scalar tag runs those row functions themselves.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../detail/xsimd_compat.hpp"
#include "../formats/ggml_blocks.hpp"
#include "../formats/ggml.hpp"
#include "../formats/ggml_kquants.hpp"
#include "dequantize.hpp"
#include "dispatch.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

/// Rows of ggml blocks of one type to f32.
struct ggml_job {
    ggml::type type;
    const void* src;
    std::size_t src_stride;  ///< bytes between rows (>= the blocks of a row)
    std::size_t rows, cols;  ///< cols: a multiple of the type's block size
    float* out;
    std::size_t out_stride;  ///< elements between output rows (>= cols)
};

struct dequantize_ggml_fn {
    template <class Arch>
    void operator()(Arch, const ggml_job& j) const noexcept;
};

namespace detail::ggml_dequant {

/// The scalar row function of a type this kernel handles, or null.
inline ggml::dequantize_row_fn ref_row(ggml::type t) noexcept {
    using ggml::type;
    switch (t) {
    case type::q4_0: return &ggml::dequantize_row_q4_0;
    case type::q4_1: return &ggml::dequantize_row_q4_1;
    case type::q5_0: return &ggml::dequantize_row_q5_0;
    case type::q5_1: return &ggml::dequantize_row_q5_1;
    case type::q8_0: return &ggml::dequantize_row_q8_0;
    case type::q8_1: return &ggml::dequantize_row_q8_1;
    case type::q2_k: return &ggml::dequantize_row_q2_k;
    case type::q3_k: return &ggml::dequantize_row_q3_k;
    case type::q4_k: return &ggml::dequantize_row_q4_k;
    case type::q5_k: return &ggml::dequantize_row_q5_k;
    case type::q6_k: return &ggml::dequantize_row_q6_k;
    case type::q8_k: return &ggml::dequantize_row_q8_k;
    case type::iq4_nl: return &ggml::dequantize_row_iq4_nl;
    case type::iq4_xs: return &ggml::dequantize_row_iq4_xs;
    case type::tq1_0: return &ggml::dequantize_row_tq1_0;
    case type::tq2_0: return &ggml::dequantize_row_tq2_0;
    case type::mxfp4: return &ggml::dequantize_row_mxfp4;
    default: return nullptr;
    }
}

}  // namespace detail::ggml_dequant

/// Scalar reference (the test oracle): the exact ggml row functions.
inline void dequantize_ggml_ref(const ggml_job& j) noexcept {
    const ggml::dequantize_row_fn f = detail::ggml_dequant::ref_row(j.type);
    const auto base = ggml::find_base_traits(static_cast<std::uint32_t>(j.type));
    if (!f || !base) return;
    const std::size_t bs = base->block_size, ts = base->type_size;
    // The row functions read fields of block structs in place, which needs their
    // alignment; rows at odd addresses (any src_stride is allowed) go through an
    // aligned copy a few blocks at a time.
    alignas(16) unsigned char tmp[4096];
    const std::size_t per_chunk = sizeof tmp / ts;
    for (std::size_t r = 0; r < j.rows; ++r) {
        const unsigned char* row = static_cast<const unsigned char*>(j.src) + r * j.src_stride;
        float* y = j.out + r * j.out_stride;
        if (reinterpret_cast<std::uintptr_t>(row) % 4 == 0) {
            f(row, y, j.cols);
            continue;
        }
        for (std::size_t b = 0; b < j.cols / bs; b += per_chunk) {
            const std::size_t n = j.cols / bs - b < per_chunk ? j.cols / bs - b : per_chunk;
            std::memcpy(tmp, row + b * ts, n * ts);
            f(tmp, y + b * bs, n * bs);
        }
    }
}

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::ggml_dequant {

using dq::half;
using dq::is_avx2_v;
using dq::is_avx512_v;
using dq::is_sse2_v;

// The x86 decoders are 128-bit integer ops, which every x86 tag has (xsimd's
// AVX and AVX-512 tags do not derive from its SSE ones, hence the three terms).
template <class A>
inline constexpr bool x86_v = is_sse2_v<A> || is_avx2_v<A> || is_avx512_v<A>;
template <class A>
inline constexpr bool pshufb_v =
    dq::is_ssse3_v<A> || is_avx2_v<A> || is_avx512_v<A>;



/// How a group's float params apply to float(q).
enum class op { mul, mul_add, mul_sub };

/// A decoded block: int8 values (B of them) and per-group scale / offset.
template <std::size_t B, std::size_t G>
struct decoded {
    alignas(64) std::int8_t buf[B];
    float s[B / G];
    float o[B / G];
    // The integer face (decode<true>) of the 256-value types whose values are
    // d * sc_g * q (- dmin * m_g), for the int8 GEMV: the sub-block scales
    // (and mins) as integers, and d (and dmin); s and o are then unset.
    std::int8_t sc[B / G];
    std::uint8_t mn[B / G];
    float d, dmin;
};

/// A decoder with decode<true>, the integer face above (int_face = true).
template <class Dec>
inline constexpr bool int_face_v = requires { requires Dec::int_face; };

/// Sub-block g's scale d * sc (and min dmin * m) into the face decode fills.
template <bool Ints, std::size_t B, std::size_t G>
inline void put_scale(decoded<B, G>& o, int g, float d, int sc) noexcept {
    if constexpr (Ints) o.sc[g] = static_cast<std::int8_t>(sc);
    else o.s[g] = d * static_cast<float>(sc);
}
template <bool Ints, std::size_t B, std::size_t G>
inline void put_min(decoded<B, G>& o, int g, float dmin, int m) noexcept {
    if constexpr (Ints) o.mn[g] = static_cast<std::uint8_t>(m);
    else o.o[g] = dmin * static_cast<float>(m);
}
template <bool Ints, std::size_t B, std::size_t G>
inline void put_factors(decoded<B, G>& o, float d, float dmin = 0.0f) noexcept {
    if constexpr (Ints) {
        o.d = d;
        o.dmin = dmin;
    }
}

// Each decoder's body is xsimd (NEON runs it); an x86 intrinsic stands beside
// it only where it measured faster. Figures: GB/s in bench_ggml_dequantize
// <type>_row (output stays in L1), best of runs, intrinsics vs the xsimd body,
// on an Intel Xeon (AVX-512, 2.6 GHz, 2 shared cores). On AVX2/AVX-512 the
// xsimd body stages runs shorter than a batch (a Q4_0 block's 16 bytes in a
// 64-byte batch) through memory, which is most of what the intrinsics gain.
// Code placement alone moves a figure by up to 28% here (avx2 tq2_0_row, the
// same instructions at other addresses), so gains below that on one type are
// not clear-cut.
template <class A>
inline constexpr bool wide_x86_v = is_avx2_v<A> || is_avx512_v<A>;

template <class Arch>
using u8x = xsimd::batch<std::uint8_t, Arch>;
/// Bytes per step over a run of C bytes: a whole batch, or C where the batch is wider.
template <class Arch, std::size_t C>
inline constexpr std::size_t step_v = u8x<Arch>::size < C ? u8x<Arch>::size : C;
/// The W bytes at p in a batch (the rest zero where the batch is wider).
template <class Arch, std::size_t W>
inline u8x<Arch> load_w(const void* p) noexcept {
    if constexpr (W >= u8x<Arch>::size) {
        return u8x<Arch>::load_unaligned(static_cast<const std::uint8_t*>(p));
    } else {
        alignas(64) std::uint8_t t[u8x<Arch>::size] = {};
        std::memcpy(t, p, W);
        return u8x<Arch>::load_aligned(t);
    }
}
/// The first W bytes of v to p.
template <class Arch, std::size_t W>
inline void store_w(std::int8_t* p, const u8x<Arch>& v) noexcept {
    if constexpr (W >= u8x<Arch>::size) {
        v.store_unaligned(reinterpret_cast<std::uint8_t*>(p));
    } else {
        alignas(64) std::uint8_t t[u8x<Arch>::size];
        v.store_aligned(t);
        std::memcpy(p, t, W);
    }
}
/// 0x10 in byte k where bit k of the index is set (Q5_0/Q5_1 bit 4 from qh).
template <class Arch>
inline constexpr auto bit4_spread = [] {
    struct table { std::uint64_t v[256]; } t{};
    for (unsigned i = 0; i < 256; ++i)
        for (unsigned k = 0; k < 8; ++k)
            if ((i >> k) & 1u) t.v[i] |= std::uint64_t{0x10} << (8 * k);
    return t;
}();

#if XSIMD_WITH_SSE2
template <class Arch>
inline __m128i load128(const unsigned char* p) noexcept {
    return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
template <class Arch>
inline void store128(std::int8_t* p, __m128i v) noexcept {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
}
/// Low and high nibbles of 16 bytes at q and q + 16, each minus `sub`.
template <class Arch>
inline void nibbles_sse(const unsigned char* qs, std::int8_t* q, std::int8_t sub) noexcept {
    const __m128i v = load128<Arch>(qs);
    const __m128i m = _mm_set1_epi8(0x0F);
    const __m128i z = _mm_set1_epi8(sub);
    store128<Arch>(q, _mm_sub_epi8(_mm_and_si128(v, m), z));
    store128<Arch>(q + 16, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m), z));
}
/// 0x10 in byte j where bit j of the 16-bit word w is set.
template <class Arch>
inline __m128i bit4_from_u16(unsigned w) noexcept {
    const __m128i sel = _mm_set_epi64x(0x8040201008040201ll, 0x8040201008040201ll);
    const __m128i lo = _mm_set1_epi8(static_cast<char>(w & 0xFF));
    const __m128i hi = _mm_set1_epi8(static_cast<char>(w >> 8));
    const __m128i v = _mm_unpacklo_epi64(lo, hi);
    return _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(v, sel), sel), _mm_set1_epi8(0x10));
}
#endif
#if XSIMD_WITH_SSSE3
/// Table values of the low and high nibbles of 16 bytes, at q and q + 16.
template <class Arch>
inline void lut_nibbles(const unsigned char* qs, const std::int8_t* table, std::int8_t* q) noexcept {
    const __m128i t = _mm_loadu_si128(reinterpret_cast<const __m128i*>(table));
    const __m128i v = load128<Arch>(qs);
    const __m128i m = _mm_set1_epi8(0x0F);
    store128<Arch>(q, _mm_shuffle_epi8(t, _mm_and_si128(v, m)));
    store128<Arch>(q + 16, _mm_shuffle_epi8(t, _mm_and_si128(_mm_srli_epi16(v, 4), m)));
}
#endif

template <class Arch>
inline void nibbles(const unsigned char* qs, std::int8_t* q, std::int8_t sub) noexcept {
    // q4_0 63.7 vs 15.3 (avx512bw), 50.5 vs 13.5 (avx2); none on sse4_1 (32.0 vs 31.8).
    if constexpr (wide_x86_v<Arch>) {
#if XSIMD_WITH_SSE2
        nibbles_sse<Arch>(qs, q, sub);
#endif
    } else {
        using u8 = u8x<Arch>;
        constexpr std::size_t w = step_v<Arch, 16>;
        const u8 m(0x0F), z(static_cast<std::uint8_t>(sub));
        for (std::size_t l = 0; l < 16; l += w) {
            const u8 v = load_w<Arch, w>(qs + l);
            store_w<Arch, w>(q + l, (v & m) - z);
            store_w<Arch, w>(q + 16 + l, (v >> 4) - z);
        }
    }
}

template <class Arch>
inline void lut(const unsigned char* qs, const std::int8_t* table, std::int8_t* q) noexcept {
    // iq4_nl 60.1 vs 7.9 (avx512bw), 47.4 vs 5.4 (avx2), 31.9 vs 16.0 (sse4_1).
    if constexpr (pshufb_v<Arch>) {
#if XSIMD_WITH_SSSE3
        lut_nibbles<Arch>(qs, table, q);
#endif
    } else {
        // xsimd 8.1 has no shuffle by a run-time index: a select tree on the index bits.
        using u8 = u8x<Arch>;
        constexpr std::size_t w = step_v<Arch, 16>;
        const auto look = [table](const u8& i) {
            const u8 zero(0);
            u8 t[8];
            const auto b0 = (i & u8(1)) != zero;
            for (int k = 0; k < 8; ++k)
                t[k] = xsimd::select(b0, u8(static_cast<std::uint8_t>(table[2 * k + 1])),
                                     u8(static_cast<std::uint8_t>(table[2 * k])));
            const auto b1 = (i & u8(2)) != zero;
            for (int k = 0; k < 4; ++k) t[k] = xsimd::select(b1, t[2 * k + 1], t[2 * k]);
            const auto b2 = (i & u8(4)) != zero;
            for (int k = 0; k < 2; ++k) t[k] = xsimd::select(b2, t[2 * k + 1], t[2 * k]);
            return xsimd::select((i & u8(8)) != zero, t[1], t[0]);
        };
        for (std::size_t l = 0; l < 16; l += w) {
            const u8 v = load_w<Arch, w>(qs + l);
            store_w<Arch, w>(q + l, look(v & u8(0x0F)));
            store_w<Arch, w>(q + 16 + l, look(v >> 4));
        }
    }
}

/// Q5_0/Q5_1 codes: nibbles plus bit j of qh as bit 4 of element j, minus sub.
template <class Arch>
inline void five_bit(const unsigned char* qs, std::uint32_t qh, std::int8_t* q, std::int8_t sub) noexcept {
    // q5_0 32.8 vs 8.4 (avx512bw), 32.7 vs 8.2 (avx2); the xsimd body is faster
    // on sse4_1 (26.4 vs 22.4).
    if constexpr (wide_x86_v<Arch>) {
#if XSIMD_WITH_SSE2
        const __m128i v = load128<Arch>(qs);
        const __m128i m = _mm_set1_epi8(0x0F);
        const __m128i z = _mm_set1_epi8(sub);
        const __m128i lo = _mm_or_si128(_mm_and_si128(v, m), bit4_from_u16<Arch>(qh & 0xFFFFu));
        const __m128i hi = _mm_or_si128(_mm_and_si128(_mm_srli_epi16(v, 4), m), bit4_from_u16<Arch>(qh >> 16));
        store128<Arch>(q, _mm_sub_epi8(lo, z));
        store128<Arch>(q + 16, _mm_sub_epi8(hi, z));
#endif
    } else {
        using u8 = u8x<Arch>;
        constexpr std::size_t w = step_v<Arch, 16>;
        const auto& t = bit4_spread<Arch>.v;
        alignas(16) const std::uint64_t hb[4] = {t[qh & 0xFF], t[(qh >> 8) & 0xFF], t[(qh >> 16) & 0xFF], t[qh >> 24]};
        const unsigned char* h = reinterpret_cast<const unsigned char*>(hb);
        const u8 m(0x0F), z(static_cast<std::uint8_t>(sub));
        for (std::size_t l = 0; l < 16; l += w) {
            const u8 v = load_w<Arch, w>(qs + l);
            store_w<Arch, w>(q + l, ((v & m) | load_w<Arch, w>(h + l)) - z);
            store_w<Arch, w>(q + 16 + l, ((v >> 4) | load_w<Arch, w>(h + 16 + l)) - z);
        }
    }
}

/// Q2_K/Q3_K/TQ2_0 2-bit fields: element 128h + 32k + m is bits 2k of qs[32h + m].
template <class Arch>
inline void two_bit(const unsigned char* qs, std::int8_t* q, std::int8_t sub) noexcept {
    // tq2_0 80.6 vs 43.9, q2_k 67.0 vs 46.3 (avx512bw); tq2_0 63.4 vs 45.4, q2_k
    // 36.8 vs 31.3 (avx2); none on sse4_1 (q2_k 25.2 vs 25.3).
    if constexpr (wide_x86_v<Arch>) {
#if XSIMD_WITH_SSE2
        const __m128i m3 = _mm_set1_epi8(3);
        const __m128i z = _mm_set1_epi8(sub);
        for (int h = 0; h < 2; ++h)
            for (int l = 0; l < 32; l += 16) {
                const __m128i v = load128<Arch>(qs + 32 * h + l);
                std::int8_t* d = q + 128 * h + l;
                store128<Arch>(d, _mm_sub_epi8(_mm_and_si128(v, m3), z));
                store128<Arch>(d + 32, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 2), m3), z));
                store128<Arch>(d + 64, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), m3), z));
                store128<Arch>(d + 96, _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 6), m3), z));
            }
#endif
    } else {
        using u8 = u8x<Arch>;
        constexpr std::size_t w = step_v<Arch, 32>;
        const u8 m3(3), z(static_cast<std::uint8_t>(sub));
        for (int h = 0; h < 2; ++h)
            for (std::size_t l = 0; l < 32; l += w) {
                const u8 v = load_w<Arch, w>(qs + 32 * h + l);
                std::int8_t* d = q + 128 * h + l;
                store_w<Arch, w>(d, (v & m3) - z);
                store_w<Arch, w>(d + 32, ((v >> 2) & m3) - z);
                store_w<Arch, w>(d + 64, ((v >> 4) & m3) - z);
                store_w<Arch, w>(d + 96, (v >> 6) - z);
            }
    }
}

// ---- block decoders ---------------------------------------------------------
// Each: B elements per block, `bytes` per block, groups of G sharing params,
// and decode(block, out) -> where the int8 values are.

/// Q4_0, Q4_1, Q5_0 and Q5_1, one layout rule: d, then m (affine), then the
/// fifth bits qh (K = 5), then 16 bytes of nibbles; symmetric codes are
/// stored offset by 2^(K-1).
template <class Arch, int K, bool Affine>
struct legacy_dec {
    static constexpr std::size_t qh = Affine ? 4 : 2, qs = qh + (K == 5 ? 4 : 0);
    static constexpr std::size_t B = 32, G = 32, bytes = qs + 16;
    static constexpr op k = Affine ? op::mul_add : op::mul;
    static constexpr std::int8_t sub = Affine ? 0 : static_cast<std::int8_t>(1 << (K - 1));
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        o.s[0] = half<Arch>(load_as<std::uint16_t>(b));
        if constexpr (Affine) o.o[0] = half<Arch>(load_as<std::uint16_t>(b + 2));
        if constexpr (K == 4) nibbles<Arch>(b + qs, o.buf, sub);
        else five_bit<Arch>(b + qs, load_as<std::uint32_t>(b + qh), o.buf, sub);
        return o.buf;
    }
};
template <class Arch>
using q4_0_dec = legacy_dec<Arch, 4, false>;
template <class Arch>
using q4_1_dec = legacy_dec<Arch, 4, true>;
template <class Arch>
using q5_0_dec = legacy_dec<Arch, 5, false>;
template <class Arch>
using q5_1_dec = legacy_dec<Arch, 5, true>;

template <class Arch, std::size_t Bytes>
struct q8_dec {  // Q8_0 (34 bytes) and Q8_1 (36: d, s, qs)
    static constexpr std::size_t B = 32, G = 32, bytes = Bytes;
    static constexpr op k = op::mul;
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        o.s[0] = half<Arch>(load_as<std::uint16_t>(b));
        return reinterpret_cast<const std::int8_t*>(b + (Bytes - 32));
    }
};

template <class Arch>
struct q8_k_dec {
    static constexpr std::size_t B = 256, G = 256, bytes = 292;
    static constexpr op k = op::mul;
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        std::memcpy(&o.s[0], b, 4);
        return reinterpret_cast<const std::int8_t*>(b + 4);
    }
};

template <class Arch>
struct iq4_nl_dec {
    static constexpr std::size_t B = 32, G = 32, bytes = 18;
    static constexpr op k = op::mul;
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        o.s[0] = half<Arch>(load_as<std::uint16_t>(b));
        lut<Arch>(b + 2, ggml::iq4_nl_values, o.buf);
        return o.buf;
    }
};

template <class Arch>
struct mxfp4_dec {
    static constexpr std::size_t B = 32, G = 32, bytes = 17;
    static constexpr op k = op::mul;
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        const std::uint8_t e = b[0];
        // 2^(e - 128), as ggml::detail::blocks::mxfp4_half_scale.
        const std::uint32_t bits = e < 2 ? (0x00200000u << e) : (static_cast<std::uint32_t>(e - 1) << 23);
        o.s[0] = std::bit_cast<float>(bits);
        lut<Arch>(b + 1, ggml::mxfp4_values, o.buf);
        return o.buf;
    }
};

template <class Arch>
struct iq4_xs_dec {
    static constexpr std::size_t B = 256, G = 32, bytes = 136;
    static constexpr op k = op::mul;
    static constexpr bool int_face = true;
    template <bool Ints = false>
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        const float d = half<Arch>(load_as<std::uint16_t>(b));
        put_factors<Ints>(o, d);
        const unsigned sh = load_as<std::uint16_t>(b + 2);
        for (int ib = 0; ib < 8; ++ib) {
            const int ls = ((b[4 + ib / 2] >> (4 * (ib % 2))) & 0x0F) | (((sh >> (2 * ib)) & 3) << 4);
            put_scale<Ints>(o, ib, d, ls - 32);
            lut<Arch>(b + 8 + 16 * ib, ggml::iq4_nl_values, o.buf + 32 * ib);
        }
        return o.buf;
    }
};

template <class Arch>
struct q2_k_dec {
    static constexpr std::size_t B = 256, G = 16, bytes = 84;
    static constexpr op k = op::mul_sub;
    static constexpr bool int_face = true;
    template <bool Ints = false>
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        const float d = half<Arch>(load_as<std::uint16_t>(b + 80)), dmin = half<Arch>(load_as<std::uint16_t>(b + 82));
        for (int g = 0; g < 16; ++g) {
            put_scale<Ints>(o, g, d, b[g] & 0xF);
            put_min<Ints>(o, g, dmin, b[g] >> 4);
        }
        put_factors<Ints>(o, d, dmin);
        two_bit<Arch>(b + 16, o.buf, 0);
        return o.buf;
    }
};

template <class Arch>
struct q3_k_dec {
    static constexpr std::size_t B = 256, G = 16, bytes = 110;
    static constexpr op k = op::mul;
    static constexpr bool int_face = true;
    template <bool Ints = false>
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        const unsigned char* hm = b;
        const unsigned char* sc = b + 96;
        const float d = half<Arch>(load_as<std::uint16_t>(b + 108));
        put_factors<Ints>(o, d);
        for (int g = 0; g < 16; ++g) {
            const int lo = g < 8 ? (sc[g] & 0xF) : (sc[g - 8] >> 4);
            const int s = lo | (((sc[8 + g % 4] >> (2 * (g / 4))) & 3) << 4);
            put_scale<Ints>(o, g, d, s - 32);
        }
        two_bit<Arch>(b + 32, o.buf, 0);
        // Minus 4 where element e's bit e / 32 of hmask[e % 32] is clear.
        // q3_k 43.1 vs 17.5 (avx512bw), 24.7 vs 22.2 (sse4_1: andnot beside a
        // blendv select); none on avx2 (33.3 vs 34.8).
        if constexpr (is_avx512_v<Arch> || dq::is_sse4_1_v<Arch>) {
#if XSIMD_WITH_SSE2
            const __m128i four = _mm_set1_epi8(4);
            for (int l = 0; l < 32; l += 16) {
                const __m128i h = load128<Arch>(hm + l);
                for (int k8 = 0; k8 < 8; ++k8) {
                    const __m128i bit = _mm_set1_epi8(static_cast<char>(1 << k8));
                    const __m128i set = _mm_cmpeq_epi8(_mm_and_si128(h, bit), bit);
                    std::int8_t* p = o.buf + 32 * k8 + l;
                    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
                    store128<Arch>(p, _mm_sub_epi8(v, _mm_andnot_si128(set, four)));
                }
            }
#endif
        } else {
            using u8 = u8x<Arch>;
            constexpr std::size_t w = step_v<Arch, 32>;
            const u8 zero(0), four(4);
            for (std::size_t l = 0; l < 32; l += w) {
                const u8 h = load_w<Arch, w>(hm + l);
                for (int k8 = 0; k8 < 8; ++k8) {
                    std::int8_t* p = o.buf + 32 * k8 + l;
                    const u8 clear = xsimd::select((h & u8(static_cast<std::uint8_t>(1u << k8))) == zero, four, zero);
                    store_w<Arch, w>(p, load_w<Arch, w>(p) - clear);
                }
            }
        }
        return o.buf;
    }
};

template <class Arch, bool Five>
struct qk_dec {  // Q4_K (144 bytes) and Q5_K (176: with qh)
    static constexpr std::size_t B = 256, G = 32, bytes = Five ? 176 : 144;
    static constexpr op k = op::mul_sub;
    static constexpr bool int_face = true;
    template <bool Ints = false>
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        const float d = half<Arch>(load_as<std::uint16_t>(b)), dmin = half<Arch>(load_as<std::uint16_t>(b + 2));
        std::uint8_t sc[8], m[8];
        ggml::detail::unpack_scale_min_k4<Arch>(b + 4, sc, m);
        for (int j = 0; j < 8; ++j) {
            put_scale<Ints>(o, j, d, sc[j]);
            put_min<Ints>(o, j, dmin, m[j]);
        }
        put_factors<Ints>(o, d, dmin);
        const unsigned char* qh = b + 16;
        const unsigned char* qs = b + (Five ? 48 : 16);
        // q4_k 56.6 vs 31.8, q5_k 41.4 vs 19.4 (avx512bw); q4_k 30.6 vs 26.2
        // (sse4_1; q5_k 25.5 vs 27.3 the other way); none on avx2 (q4_k 46.0 vs
        // 45.0, q5_k 34.0 vs 42.0).
        if constexpr (is_avx512_v<Arch> || dq::is_sse4_1_v<Arch>) {
#if XSIMD_WITH_SSE2
            const __m128i m4 = _mm_set1_epi8(0x0F);
            const __m128i b4 = _mm_set1_epi8(0x10);
            for (int c = 0; c < 4; ++c)
                for (int l = 0; l < 32; l += 16) {
                    const __m128i v = load128<Arch>(qs + 32 * c + l);
                    __m128i lo = _mm_and_si128(v, m4);
                    __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), m4);
                    if constexpr (Five) {
                        const __m128i h = load128<Arch>(qh + l);
                        const __m128i bl = _mm_set1_epi8(static_cast<char>(1 << (2 * c)));
                        const __m128i bh = _mm_set1_epi8(static_cast<char>(1 << (2 * c + 1)));
                        lo = _mm_or_si128(lo, _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(h, bl), bl), b4));
                        hi = _mm_or_si128(hi, _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(h, bh), bh), b4));
                    }
                    store128<Arch>(o.buf + 64 * c + l, lo);
                    store128<Arch>(o.buf + 64 * c + 32 + l, hi);
                }
#endif
        } else {
            using u8 = u8x<Arch>;
            constexpr std::size_t w = step_v<Arch, 32>;
            const u8 m4(0x0F), b4(0x10), zero(0);
            for (int c = 0; c < 4; ++c)
                for (std::size_t l = 0; l < 32; l += w) {
                    const u8 v = load_w<Arch, w>(qs + 32 * c + l);
                    u8 lo = v & m4, hi = v >> 4;
                    if constexpr (Five) {
                        const u8 h = load_w<Arch, w>(qh + l);
                        lo = lo | xsimd::select((h & u8(static_cast<std::uint8_t>(1u << (2 * c)))) != zero, b4, zero);
                        hi = hi | xsimd::select((h & u8(static_cast<std::uint8_t>(2u << (2 * c)))) != zero, b4, zero);
                    }
                    store_w<Arch, w>(o.buf + 64 * c + l, lo);
                    store_w<Arch, w>(o.buf + 64 * c + 32 + l, hi);
                }
        }
        return o.buf;
    }
};

template <class Arch>
struct q6_k_dec {
    static constexpr std::size_t B = 256, G = 16, bytes = 210;
    static constexpr op k = op::mul;
    static constexpr bool int_face = true;
    template <bool Ints = false>
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        const unsigned char* ql = b;
        const unsigned char* qh = b + 128;
        const float d = half<Arch>(load_as<std::uint16_t>(b + 208));
        put_factors<Ints>(o, d);
        for (int g = 0; g < 16; ++g) put_scale<Ints>(o, g, d, static_cast<std::int8_t>(b[192 + g]));
        // q6_k 46.9 vs 28.2 (avx512bw), 44.2 vs 39.0 (avx2); none on sse4_1 (29.5 vs 29.6).
        if constexpr (wide_x86_v<Arch>) {
#if XSIMD_WITH_SSE2
            const __m128i m4 = _mm_set1_epi8(0x0F);
            const __m128i m3 = _mm_set1_epi8(0x30);
            const __m128i z = _mm_set1_epi8(32);
            for (int h = 0; h < 2; ++h)
                for (int l = 0; l < 32; l += 16) {
                    const __m128i a = load128<Arch>(ql + 64 * h + l);
                    const __m128i c = load128<Arch>(ql + 64 * h + 32 + l);
                    const __m128i hb = load128<Arch>(qh + 32 * h + l);
                    std::int8_t* p = o.buf + 128 * h + l;
                    const __m128i h0 = _mm_and_si128(_mm_slli_epi16(hb, 4), m3);
                    const __m128i h1 = _mm_and_si128(_mm_slli_epi16(hb, 2), m3);
                    const __m128i h2 = _mm_and_si128(hb, m3);
                    const __m128i h3 = _mm_and_si128(_mm_srli_epi16(hb, 2), m3);
                    store128<Arch>(p, _mm_sub_epi8(_mm_or_si128(_mm_and_si128(a, m4), h0), z));
                    store128<Arch>(p + 32, _mm_sub_epi8(_mm_or_si128(_mm_and_si128(c, m4), h1), z));
                    store128<Arch>(p + 64, _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(a, 4), m4), h2), z));
                    store128<Arch>(p + 96, _mm_sub_epi8(_mm_or_si128(_mm_and_si128(_mm_srli_epi16(c, 4), m4), h3), z));
                }
#endif
        } else {
            using u8 = u8x<Arch>;
            constexpr std::size_t w = step_v<Arch, 32>;
            const u8 m4(0x0F), m3(0x30), z(32);
            for (int h = 0; h < 2; ++h)
                for (std::size_t l = 0; l < 32; l += w) {
                    const u8 a = load_w<Arch, w>(ql + 64 * h + l);
                    const u8 c = load_w<Arch, w>(ql + 64 * h + 32 + l);
                    const u8 hb = load_w<Arch, w>(qh + 32 * h + l);
                    std::int8_t* p = o.buf + 128 * h + l;
                    store_w<Arch, w>(p, ((a & m4) | ((hb << 4) & m3)) - z);
                    store_w<Arch, w>(p + 32, ((c & m4) | ((hb << 2) & m3)) - z);
                    store_w<Arch, w>(p + 64, ((a >> 4) | (hb & m3)) - z);
                    store_w<Arch, w>(p + 96, ((c >> 4) | ((hb >> 2) & m3)) - z);
                }
        }
        return o.buf;
    }
};

template <class Arch>
struct tq2_0_dec {
    static constexpr std::size_t B = 256, G = 256, bytes = 66;
    static constexpr op k = op::mul;
    static constexpr bool int_face = true;  // one group: sc = 1
    template <bool Ints = false>
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        const float d = half<Arch>(load_as<std::uint16_t>(b + 64));
        put_factors<Ints>(o, d);
        put_scale<Ints>(o, 0, d, 1);
        two_bit<Arch>(b, o.buf, 1);
        return o.buf;
    }
};

template <class Arch>
struct tq1_0_dec {
    static constexpr std::size_t B = 256, G = 256, bytes = 54;
    static constexpr op k = op::mul;
    // Trit k of a byte: the top bits of 3 * (byte * 3^k mod 256).
    static std::int8_t trit(unsigned byte, unsigned pow3) noexcept {
        return static_cast<std::int8_t>(((((byte * pow3) & 0xFFu) * 3u) >> 8) - 1);
    }
    // The same on a batch of bytes v = byte * 3^k mod 256 (kept by adding v
    // three times per power): (3v) >> 8 is 1 from v = 86 and 2 from v = 171.
    using u8 = xsimd::batch<std::uint8_t, dq::arch16<Arch>>;
    static u8 trits(const u8& v) noexcept {
        const u8 one(1), zero(0);
        return xsimd::select(v >= u8(86), one, zero) + xsimd::select(v >= u8(171), one, zero) - one;
    }
    static constexpr bool int_face = true;  // one group: sc = 1
    template <bool Ints = false>
    static const std::int8_t* decode(const unsigned char* b, decoded<B, G>& o) noexcept {
        constexpr unsigned pow3[5] = {1, 3, 9, 27, 81};
        const float d = half<Arch>(load_as<std::uint16_t>(b + 52));
        put_factors<Ints>(o, d);
        put_scale<Ints>(o, 0, d, 1);
        // Bytes 0-47, three 16-byte batches: five trits each.
        u8 v[3] = {u8::load_unaligned(b), u8::load_unaligned(b + 16), u8::load_unaligned(b + 32)};
        auto* out = reinterpret_cast<std::uint8_t*>(o.buf);
        for (int k5 = 0; k5 < 5; ++k5) {
            trits(v[0]).store_unaligned(out + 32 * k5);
            trits(v[1]).store_unaligned(out + 32 * k5 + 16);
            trits(v[2]).store_unaligned(out + 160 + 16 * k5);
            for (u8& x : v) x = x + x + x;
        }
        for (int k4 = 0; k4 < 4; ++k4)
            for (int j = 0; j < 4; ++j) o.buf[240 + 4 * k4 + j] = trit(b[48 + j], pow3[k4]);
        return o.buf;
    }
};

// ---- int8 -> float ------------------------------------------------------------

/// n int8 values sign-extended to 32-bit lanes.
template <class Arch>
inline xsimd::batch<std::int32_t, Arch> widen_i8(const std::int8_t* p) noexcept {
    using i32 = xsimd::batch<std::int32_t, Arch>;
    // Against the xsimd bodies (widen16 on 128-bit tags, xsimd's converting load
    // on wider ones): q2_k 67.7 vs 58.2, tq2_0 81.0 vs 69.1 (avx512bw; tq1_0 is
    // 12.1 vs 15.3 the other way), q4_0 50.5 vs 14.2 (avx2), q8_0 58.4 vs 30.7
    // (sse4_1); sse2: q4_0 30.9 vs 20.2 GB/s (2048 rows of 4096 into one row
    // buffer, an -O2 build for xsimd::sse2, same machine).
    if constexpr (is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
        return i32(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
    } else if constexpr (is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
        return i32(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#endif
    } else if constexpr (dq::is_sse4_1_v<Arch>) {
#if XSIMD_WITH_SSE4_1
        return i32(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(load_as<std::int32_t>(p))));
#endif
    } else if constexpr (is_sse2_v<Arch>) {
#if XSIMD_WITH_SSE2
        const __m128i b = _mm_cvtsi32_si128(load_as<std::int32_t>(p));
        const __m128i x = _mm_unpacklo_epi16(_mm_unpacklo_epi8(b, b), _mm_unpacklo_epi8(b, b));
        return i32(_mm_srai_epi32(x, 24));
#endif
    } else {
        return i32::load_unaligned(p);  // xsimd's converting load
    }
}

/// Where int8 -> int32 is the xsimd body: 16 bytes in one batch, widened by
/// interleaving each value with itself and shifting back (sign extension).
/// xsimd's AVX/AVX-512 zip_lo works within 128-bit lanes, so 128-bit archs only.
template <class A>
inline constexpr bool zip_widen_v = xsimd::batch<std::int8_t, A>::size == 16 && !x86_v<A>;

/// 16 int8 values at p as four int32 batches of four.
template <class Arch>
inline void widen16(const std::int8_t* p, xsimd::batch<std::int32_t, Arch>* w) noexcept {
    using ::lowbit::detail::simd::bitcast;
    const auto x = xsimd::batch<std::int8_t, Arch>::load_unaligned(p);
    const auto lo = bitcast<std::int16_t>(xsimd::zip_lo(x, x)) >> 8;
    const auto hi = bitcast<std::int16_t>(xsimd::zip_hi(x, x)) >> 8;
    w[0] = bitcast<std::int32_t>(xsimd::zip_lo(lo, lo)) >> 16;
    w[1] = bitcast<std::int32_t>(xsimd::zip_hi(lo, lo)) >> 16;
    w[2] = bitcast<std::int32_t>(xsimd::zip_lo(hi, hi)) >> 16;
    w[3] = bitcast<std::int32_t>(xsimd::zip_hi(hi, hi)) >> 16;
}

/// fn(i, w) for each batch of R decoded blocks' float values, w[r] holding
/// elements [i, i + batch size) of block r: float(q) * scale, plus or minus
/// the group's offset, with the scalar row functions' operations in their
/// order (no fma). What dequantize stores (R = 1), the GEMV multiplies in
/// registers (R rows of W at a time).
template <class Arch, op K, std::size_t B, std::size_t G, std::size_t R, class F>
LOWBIT_FORCE_INLINE void for_each_value(const std::int8_t* const* q, const float* const* s, const float* const* o,
                                        F&& fn) noexcept {
    using f32 = xsimd::batch<float, Arch>;
    using i32 = xsimd::batch<std::int32_t, Arch>;
    constexpr std::size_t n = f32::size;
    static_assert(G % n == 0, "a group is a whole number of batches");
    for (std::size_t g = 0; g < B / G; ++g) {
        f32 sb[R], ob[R];
        for (std::size_t r = 0; r < R; ++r) {
            sb[r] = f32(s[r][g]);
            ob[r] = f32(K == op::mul ? 0.0f : o[r][g]);
        }
        const auto value = [&](const i32& w, std::size_t r) LOWBIT_LAMBDA_INLINE {
            f32 x = xsimd::to_float(w) * sb[r];
            if constexpr (K == op::mul_add) x = ::lowbit::detail::unfused(x) + ob[r];
            if constexpr (K == op::mul_sub) x = ::lowbit::detail::unfused(x) - ob[r];
            return x;
        };
        if constexpr (zip_widen_v<Arch>) {
            static_assert(G % 16 == 0, "a group is a whole number of 16-byte batches");
            for (std::size_t i = g * G; i < (g + 1) * G; i += 16) {
                i32 w[R][4];
                for (std::size_t r = 0; r < R; ++r) widen16<Arch>(q[r] + i, w[r]);
                for (std::size_t k = 0; k < 4; ++k) {
                    f32 v[R];
                    for (std::size_t r = 0; r < R; ++r) v[r] = value(w[r][k], r);
                    fn(i + 4 * k, v);
                }
            }
        } else {
            for (std::size_t i = g * G; i < (g + 1) * G; i += n) {
                f32 v[R];
                for (std::size_t r = 0; r < R; ++r) v[r] = value(widen_i8<Arch>(q[r] + i), r);
                fn(i, v);
            }
        }
    }
}

/// One decoded block to floats at y.
template <class Arch, op K, std::size_t B, std::size_t G, bool NT>
inline void emit_block(const std::int8_t* q, const float* s, const float* o, float* y) noexcept {
    for_each_value<Arch, K, B, G, 1>(&q, &s, &o, [y](std::size_t i, const xsimd::batch<float, Arch>(&x)[1]) LOWBIT_LAMBDA_INLINE {
        dq::emit<Arch, out_type::f32, NT>(x[0], y + i);
    });
}

template <class Arch, class Dec, bool NT>
inline void rows_nt(const ggml_job& j) noexcept {
    decoded<Dec::B, Dec::G> d;
    const std::size_t nb = j.cols / Dec::B;
    for (std::size_t r = 0; r < j.rows; ++r) {
        const unsigned char* src = static_cast<const unsigned char*>(j.src) + r * j.src_stride;
        float* y = j.out + r * j.out_stride;
        for (std::size_t b = 0; b < nb; ++b) {
            const std::int8_t* q = Dec::decode(src + b * Dec::bytes, d);
            emit_block<Arch, Dec::k, Dec::B, Dec::G, NT>(q, d.s, d.o, y + b * Dec::B);
        }
    }
}

template <class Arch, class Dec>
inline void rows(const ggml_job& j) noexcept {
    if (dq::use_streaming<Arch>(j.out, j.rows, j.out_stride, 4)) {
        rows_nt<Arch, Dec, true>(j);
        dq::stream_fence<Arch>();
    } else {
        rows_nt<Arch, Dec, false>(j);
    }
}

template <class D>
struct decoder_tag {
    using type = D;
};

/// f(decoder_tag<Dec>{}) with the decoder of type t: the one table from a
/// ggml type to its decoder, for dequantize and the GEMV kernels.
template <class Arch, class F>
inline void with_decoder(ggml::type t, F&& f) noexcept {
    using ggml::type;
    switch (t) {
    case type::q4_0: f(decoder_tag<q4_0_dec<Arch>>{}); break;
    case type::q4_1: f(decoder_tag<q4_1_dec<Arch>>{}); break;
    case type::q5_0: f(decoder_tag<q5_0_dec<Arch>>{}); break;
    case type::q5_1: f(decoder_tag<q5_1_dec<Arch>>{}); break;
    case type::q8_0: f(decoder_tag<q8_dec<Arch, 34>>{}); break;
    case type::q8_1: f(decoder_tag<q8_dec<Arch, 36>>{}); break;
    case type::q2_k: f(decoder_tag<q2_k_dec<Arch>>{}); break;
    case type::q3_k: f(decoder_tag<q3_k_dec<Arch>>{}); break;
    case type::q4_k: f(decoder_tag<qk_dec<Arch, false>>{}); break;
    case type::q5_k: f(decoder_tag<qk_dec<Arch, true>>{}); break;
    case type::q6_k: f(decoder_tag<q6_k_dec<Arch>>{}); break;
    case type::q8_k: f(decoder_tag<q8_k_dec<Arch>>{}); break;
    case type::iq4_nl: f(decoder_tag<iq4_nl_dec<Arch>>{}); break;
    case type::iq4_xs: f(decoder_tag<iq4_xs_dec<Arch>>{}); break;
    case type::tq1_0: f(decoder_tag<tq1_0_dec<Arch>>{}); break;
    case type::tq2_0: f(decoder_tag<tq2_0_dec<Arch>>{}); break;
    case type::mxfp4: f(decoder_tag<mxfp4_dec<Arch>>{}); break;
    default: LOWBIT_ASSERT(false && "ggml kernels: type has no decoder"); break;
    }
}

template <class Arch>
inline void run(const ggml_job& j) noexcept {
    with_decoder<Arch>(j.type, [&](auto tag) { rows<Arch, typename decltype(tag)::type>(j); });
}

}  // namespace detail::ggml_dequant
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

template <class Arch>
void dequantize_ggml_fn::operator()(Arch, const ggml_job& j) const noexcept {
    if constexpr (std::is_same_v<Arch, scalar>) {
        dequantize_ggml_ref(j);
    } else {
#if !defined(LOWBIT_NO_SIMD)
        if (j.rows != 0 && j.cols != 0) detail::ggml_dequant::run<Arch>(j);
#endif
    }
}

/// Whether dequantize_ggml handles type t.
inline bool dequantize_ggml_supports(ggml::type t) noexcept { return detail::ggml_dequant::ref_row(t) != nullptr; }

/// Validates, then dequantizes on the active instruction set.
inline void dequantize_ggml(const ggml_job& j) {
    const auto base = ggml::find_base_traits(static_cast<std::uint32_t>(j.type));
    if (!base)
        LOWBIT_THROW(errc::invalid_argument,
                     "dequantize_ggml: unknown ggml type " + std::to_string(static_cast<unsigned>(j.type)));
    const auto name = [&] { return std::string(base->name); };  // only on the error paths
    if (!dequantize_ggml_supports(j.type))
        LOWBIT_THROW(errc::unsupported, "dequantize_ggml: no block dequantizer for ggml type " + name());
    if (j.cols % base->block_size != 0)
        LOWBIT_THROW(errc::not_divisible, "dequantize_ggml: " + std::to_string(j.cols) +
                                              " columns are not a whole number of " + name() + " blocks of " +
                                              std::to_string(base->block_size));
    if (j.rows == 0 || j.cols == 0) return;
    if (!j.src || !j.out) LOWBIT_THROW(errc::invalid_argument, "dequantize_ggml: src and out must not be null");
    const std::size_t row_bytes = j.cols / base->block_size * base->type_size;
    if (j.rows > 1 && j.src_stride < row_bytes)
        LOWBIT_THROW(errc::invalid_argument, "dequantize_ggml: src_stride " + std::to_string(j.src_stride) +
                                                 " is less than a " + name() + " row's " + std::to_string(row_bytes) +
                                                 " bytes");
    if (j.rows > 1 && j.out_stride < j.cols)
        LOWBIT_THROW(errc::invalid_argument, "dequantize_ggml: out_stride " + std::to_string(j.out_stride) +
                                                 " is less than the " + std::to_string(j.cols) + " columns");
    dispatch(dequantize_ggml_fn{}, j);
}

/// ggml::dequantize_rows on the active instruction set (the same values): the
/// block types through dequantize_ggml, F32/F16/BF16 through the table's rows.
inline void dequantize_ggml_rows(ggml::type t, const void* src, float* y, std::size_t rows, std::size_t n_per_row) {
    if (!dequantize_ggml_supports(t)) {
        ggml::dequantize_rows(t, src, y, rows, n_per_row);
        return;
    }
    dequantize_ggml({t, src, ggml::row_bytes(t, n_per_row), rows, n_per_row, y, n_per_row});
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

#define LOWBIT_KERNELS_GGML_DEQUANTIZE(EXT, ARCH)                  \
    EXT template void lowbit::kernels::dequantize_ggml_fn::operator()<ARCH>( \
        ARCH, const lowbit::kernels::ggml_job&) const noexcept;
LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_GGML_DEQUANTIZE)
