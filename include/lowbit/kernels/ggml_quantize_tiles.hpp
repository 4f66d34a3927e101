#pragma once
// The lanes the ggml searches run on, and the tiles that fill them: the
// xsimd batches behind ggml::detail::lanes (formats/ggml_kquant_search.hpp
// has the scalar tag's), and the transposes that put one sub-block in each
// lane and bring the levels back to bytes per super-block.
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../formats/ggml_blocks.hpp"
#include "../formats/ggml_kquant_search.hpp"
#include "../formats/ggml_kquants.hpp"
#include "dequantize.hpp"
#include "dispatch.hpp"
#if !defined(LOWBIT_NO_SIMD)
#include "../detail/fp_contract.hpp"
#include "../detail/xsimd_compat.hpp"
#endif

LOWBIT_NAMESPACE_BEGIN
#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace ggml::detail {

/// The searches' lanes on an xsimd arch: batches, one sub-block per lane
/// (formats/ggml_kquant_search.hpp has the scalar tag's).
template <class A>
    requires(!std::is_same_v<A, kernels::scalar>)
struct lanes<A> {
    using V = xsimd::batch<float, A>;
    using M = xsimd::batch_bool<float, A>;
    static LOWBIT_FORCE_INLINE V mul(const V& a, const V& b) noexcept { return ::lowbit::detail::unfused(a * b); }
    /// a / b and sqrt(a), correctly rounded on every ISA (see simd::div).
    static LOWBIT_FORCE_INLINE V div(const V& a, const V& b) noexcept { return ::lowbit::detail::simd::div(a, b); }
    static LOWBIT_FORCE_INLINE V sqrt(const V& a) noexcept { return ::lowbit::detail::simd::sqrt(a); }
    static LOWBIT_FORCE_INLINE V abs(const V& a) noexcept { return xsimd::abs(a); }
    /// round_to_int of every lane, as a float.
    static LOWBIT_FORCE_INLINE V round(const V& p) noexcept {
        using I = xsimd::batch<std::int32_t, A>;
        const V v = ::lowbit::detail::unfused(p) + V(12582912.f);
        const I bits = ::lowbit::detail::simd::bitcast<std::int32_t>(v);
        return xsimd::to_float(I((bits & I(0x007fffff)) - I(0x00400000)));
    }
    static LOWBIT_FORCE_INLINE V clamp(const V& l, float lo, float hi) noexcept {
        return xsimd::max(V(lo), xsimd::min(V(hi), l));
    }
    static LOWBIT_FORCE_INLINE V select(const M& m, const V& a, const V& b) noexcept { return xsimd::select(m, a, b); }
    static LOWBIT_FORCE_INLINE bool any(const M& m) noexcept { return xsimd::any(m); }
    /// C's `a != b` (true when either is NaN): xsimd's AVX `!=` is the ordered
    /// comparison, false for NaN, unlike its SSE one.
    static LOWBIT_FORCE_INLINE M ne(const V& a, const V& b) noexcept { return !(a == b); }
};

}  // namespace ggml::detail
LOWBIT_SIMD_WARNINGS_ON
#endif
namespace kernels {

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::ggml_quant {

// Fully unrolled, the transposes and per-column loops keep their arrays of
// batches in registers; as loops, g++ -O2 keeps them on the stack and the
// stores dominate.
#if defined(__GNUC__)
#define LOWBIT_GGML_QUANT_PRAGMA(x) _Pragma(#x)
#define LOWBIT_GGML_QUANT_UNROLL(n) LOWBIT_GGML_QUANT_PRAGMA(GCC unroll n)
#define LOWBIT_GGML_QUANT_INLINE inline __attribute__((always_inline))
#define LOWBIT_GGML_QUANT_COLD __attribute__((cold, noinline))
#else
#define LOWBIT_GGML_QUANT_UNROLL(n)
#define LOWBIT_GGML_QUANT_INLINE inline
#define LOWBIT_GGML_QUANT_COLD
#endif

template <class Arch>
using fvec = xsimd::batch<float, Arch>;
template <class Arch>
using ivec = xsimd::batch<std::int32_t, Arch>;

// One copy of every search, scale step and packing helper: the scalar
// reference's, on this arch's lanes.
using ggml::detail::get_scale_min_k4;
using ggml::detail::iq4_nearest;
using ggml::detail::blocks::iq4_scales;
using ggml::detail::blocks::pack_nibbles_32;
using ggml::detail::iq4_search;
using ggml::detail::imatrix_weights;
using ggml::detail::lanes;
using ggml::detail::mul_unfused;
using ggml::detail::pack_2bit;
using ggml::detail::pack_4bit_5bit;
using ggml::detail::pack_q3;
using ggml::detail::pack_q6;
using ggml::detail::q2_k_scales;
using ggml::detail::q3_k_scales;
using ggml::detail::q3_search;
using ggml::detail::q45_k_scales;
using ggml::detail::q6_k_scales;
using ggml::detail::qkx_search;
using ggml::detail::qx_search;
using ggml::detail::requantize;
using ggml::detail::rms_plus_abs_weights;
using ggml::detail::round_to_int;
using ggml::detail::sum_squares;

// ---- tiles ------------------------------------------------------------------

/// A tile: T super-blocks of Nsub sub-blocks of N values, S = T*Nsub lanes'
/// worth of sub-blocks in NB batches. Sub-block s sits in batch s / lanes,
/// lane s % lanes; transposed buffers are [batch][element][lane].
template <class Arch, int N, int Nsub, int MinNB = 1>
struct tile {
    static constexpr int lanes = static_cast<int>(fvec<Arch>::size);
    static constexpr int T = MinNB * lanes >= Nsub ? MinNB * lanes / Nsub : 1;
    static constexpr int S = T * Nsub;
    static constexpr int NB = S / lanes;
    static_assert(S % lanes == 0);
};

/// One round of a 16 x 16 byte transpose: a's rows paired as elements of T.
template <class T, class A>
LOWBIT_GGML_QUANT_INLINE void zip_round(xsimd::batch<std::uint8_t, A>* a) noexcept {
    namespace ds = ::lowbit::detail::simd;
    xsimd::batch<std::uint8_t, A> t[16];
    for (int i = 0; i < 8; ++i) {
        const auto x = ds::bitcast<T>(a[2 * i]), y = ds::bitcast<T>(a[2 * i + 1]);
        t[i] = ds::bitcast<std::uint8_t>(xsimd::zip_lo(x, y));
        t[i + 8] = ds::bitcast<std::uint8_t>(xsimd::zip_hi(x, y));
    }
    for (int i = 0; i < 16; ++i) a[i] = t[i];
}

/// rows[j][k] (byte j of block k) to out[k * stride + j], 16 x 16: four rounds
/// of zips on 16-byte batches (xsimd's 128-bit zips are the same on 8.1 and 14).
template <class Arch>
inline void put_columns(const std::uint8_t (*rows)[16], unsigned char* out, std::size_t stride) noexcept {
    using u8 = xsimd::batch<std::uint8_t, dq::arch16<Arch>>;
    if constexpr (u8::size == 16) {
        u8 a[16];
        for (int i = 0; i < 16; ++i) a[i] = u8::load_aligned(rows[i]);
        zip_round<std::uint8_t>(a);
        zip_round<std::uint16_t>(a);
        zip_round<std::uint32_t>(a);
        zip_round<std::uint64_t>(a);
        // Four rounds of this pairing leave column k in a[bit-reversed k].
        constexpr int rev[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
        for (int k = 0; k < 16; ++k) a[rev[k]].store_unaligned(out + static_cast<std::size_t>(k) * stride);
    } else {
        for (int k = 0; k < 16; ++k)
            for (int j = 0; j < 16; ++j) out[static_cast<std::size_t>(k) * stride + j] = rows[j][k];
    }
}


#if XSIMD_WITH_AVX512BW
/// out[j] = {r[0][j], ..., r[15][j]} for j < 16: a 16 x 16 transpose in
/// registers (far fewer load slots than a gather or scalar moves per column).
/// With transpose_in/transpose_out, over their xsimd bodies (scalar moves),
/// bench_ggml_quantize <type>_simd on AVX-512 (AMD EPYC 2.6 GHz, built as is
/// vs. with LOWBIT_XSIMD_ONLY, best of 2): q3_K 560 vs 484 Mw/s, q2_K 258 vs
/// 236, q6_K 370 vs 339, q4_K 245 vs 232, q5_K 295 vs 288, iq4_nl 158 vs 149.
template <class Arch>
LOWBIT_GGML_QUANT_INLINE void transpose16(const float* const* r, __m512* out) noexcept {
    __m512 a[16], t[16];
LOWBIT_GGML_QUANT_UNROLL(16)
    for (int k = 0; k < 16; ++k) a[k] = _mm512_loadu_ps(r[k]);
LOWBIT_GGML_QUANT_UNROLL(8)
    for (int i = 0; i < 8; ++i) {
        t[2 * i] = _mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]);
    }
    // a[4g + c]: 128-bit lane l holds column 4l + c of rows 4g..4g+3.
LOWBIT_GGML_QUANT_UNROLL(4)
    for (int g = 0; g < 4; ++g) {
        const __m512d p = _mm512_castps_pd(t[4 * g]), p2 = _mm512_castps_pd(t[4 * g + 2]);
        const __m512d h = _mm512_castps_pd(t[4 * g + 1]), h2 = _mm512_castps_pd(t[4 * g + 3]);
        a[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(p, p2));
        a[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(p, p2));
        a[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(h, h2));
        a[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(h, h2));
    }
LOWBIT_GGML_QUANT_UNROLL(4)
    for (int c = 0; c < 4; ++c) {
        const __m512 s1 = _mm512_shuffle_f32x4(a[c], a[4 + c], 0x44);
        const __m512 s2 = _mm512_shuffle_f32x4(a[8 + c], a[12 + c], 0x44);
        const __m512 s3 = _mm512_shuffle_f32x4(a[c], a[4 + c], 0xEE);
        const __m512 s4 = _mm512_shuffle_f32x4(a[8 + c], a[12 + c], 0xEE);
        out[c] = _mm512_shuffle_f32x4(s1, s2, 0x88);
        out[4 + c] = _mm512_shuffle_f32x4(s1, s2, 0xDD);
        out[8 + c] = _mm512_shuffle_f32x4(s3, s4, 0x88);
        out[12 + c] = _mm512_shuffle_f32x4(s3, s4, 0xDD);
    }
}
#endif

/// src[k]: super-block k's 256 values (k < nvalid); other lanes get zeros.
template <class Arch, int N, int Nsub, int MinNB = 1>
inline void transpose_in(const float* const* src, int nvalid, float* dst) noexcept {
    using G = tile<Arch, N, Nsub, MinNB>;
    if constexpr (dq::is_avx512_v<Arch> && N % 16 == 0) {
#if XSIMD_WITH_AVX512BW
        alignas(64) static constexpr float zeros[N] = {};
        for (int b = 0; b < G::NB; ++b) {
            const float* r[16];
            for (int l = 0; l < 16; ++l) {
                const int s = b * 16 + l;
                r[l] = s / Nsub < nvalid ? src[s / Nsub] + N * (s % Nsub) : zeros;
            }
            for (int c0 = 0; c0 < N; c0 += 16) {
                __m512 out[16];
                transpose16<Arch>(r, out);
                for (int j = 0; j < 16; ++j) _mm512_store_ps(dst + (b * N + c0 + j) * 16, out[j]);
                for (int l = 0; l < 16; ++l) r[l] += 16;
            }
        }
        return;
#endif
    }
    for (int s = 0; s < G::S; ++s) {
        float* d = dst + (s / G::lanes) * N * G::lanes + s % G::lanes;
        if (s / Nsub < nvalid) {
            const float* p = src[s / Nsub] + N * (s % Nsub);
            for (int j = 0; j < N; ++j) d[j * G::lanes] = p[j];
        } else {
            for (int j = 0; j < N; ++j) d[j * G::lanes] = 0.f;
        }
    }
}

/// Levels (exact small integers in float lanes) back to 256 bytes per super-block.
template <class Arch, int N, int Nsub, int MinNB = 1>
inline void transpose_out(const fvec<Arch>* L, int b, std::uint8_t* dst) noexcept {
    using G = tile<Arch, N, Nsub, MinNB>;
    if constexpr (dq::is_avx512_v<Arch> && N % 16 == 0) {
#if XSIMD_WITH_AVX512BW
        alignas(16) std::uint8_t rows[N][16];
        for (int j = 0; j < N; ++j)
            _mm_store_si128(reinterpret_cast<__m128i*>(rows[j]), _mm512_cvtepi32_epi8(xsimd::to_int(L[j])));
        for (int c0 = 0; c0 < N; c0 += 16) put_columns<Arch>(rows + c0, dst + N * b * 16 + c0, N);
        return;
#endif
    }
    alignas(64) std::int32_t tmp[G::lanes];
    for (int j = 0; j < N; ++j) {
        xsimd::to_int(L[j]).store_aligned(tmp);
        for (int l = 0; l < G::lanes; ++l) dst[N * (b * G::lanes + l) + j] = static_cast<std::uint8_t>(tmp[l]);
    }
}

template <class Arch>
inline fvec<Arch> vmul(const fvec<Arch>& a, const fvec<Arch>& b) noexcept {
    return lanes<Arch>::mul(a, b);
}
template <class Arch>
inline fvec<Arch> vdiv(const fvec<Arch>& a, const fvec<Arch>& b) noexcept {
    return lanes<Arch>::div(a, b);
}
template <class Arch>
inline xsimd::batch_bool<float, Arch> vne(const fvec<Arch>& a, const fvec<Arch>& b) noexcept {
    return lanes<Arch>::ne(a, b);
}

template <class Arch, int N>
inline void load_n(const float* p, fvec<Arch>* v) noexcept {
    for (int i = 0; i < N; ++i) v[i] = fvec<Arch>::load_aligned(p + i * fvec<Arch>::size);
}

}  // namespace detail::ggml_quant
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

}  // namespace kernels
LOWBIT_NAMESPACE_END
