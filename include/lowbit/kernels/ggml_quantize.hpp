#pragma once
// Quantize rows of f32 to ggml blocks with SIMD, byte for byte what the scalar
// quantizers in formats/ggml_kquants.hpp and formats/ggml_blocks.hpp (and so
// ggml itself) produce: the K-quants and IQ4 types first, then the per-value
// types (Q4_0..Q8_0, MXFP4, TQ1_0, TQ2_0) further down.
//
// Nearly all of a K-quant's time goes into a search per sub-block
// (make_qkx_quants: 16 to 37 candidate grids, each a weighted least-squares
// fit; make_qx_quants: 19 grids; make_q3_quants: coordinate descent), and the
// sub-blocks are independent. So each SIMD lane runs the search of one
// sub-block: a tile of sub-blocks is transposed so that vector j holds element
// j of every lane's sub-block. The searches, the per-super-block scale steps
// and the packing helpers are the scalar reference's own templates
// (formats/ggml_kquant_search.hpp, formats/ggml_kquants.hpp,
// formats/ggml_blocks.hpp) instantiated on this arch; this header supplies
// their lanes (ggml::detail::lanes for xsimd batches), the transposes and
// tiles, the per-value types and the drivers.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/finite.hpp"
#include "../core/view.hpp"
#include "../formats/ggml.hpp"
#include "../formats/ggml_kquants.hpp"
#include "../formats/ggml_validate.hpp"
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

/// Rows of f32 (or f16 / bf16) to ggml blocks of one type.
struct ggml_quantize_job {
    ggml::type type;
    const float* x;  ///< rows * n_per_row floats, row after row (from == f32)
    void* dst;       ///< rows * ggml::row_bytes(type, n_per_row) bytes, no alignment needed
    std::size_t rows, n_per_row;
    const float* imatrix;  ///< n_per_row importance values used for every row, or null
    /// f16 or bf16: the rows are `src` in that type (no alignment needed),
    /// widened to f32 `scratch_rows` rows at a time in `scratch` (64-byte
    /// aligned) and quantized from there.
    ggml::type from = ggml::type::f32;
    const void* src = nullptr;
    float* scratch = nullptr;
    std::size_t scratch_rows = 0;
};

struct quantize_ggml_fn {
    template <class Arch>
    void operator()(Arch, const ggml_quantize_job& j) const noexcept;
};

/// n f16 or bf16 values (little-endian, no alignment needed) to f32.
struct widen_job {
    ggml::type from;
    const void* src;
    float* out;
    std::size_t n;
};

struct widen_f32_fn {
    template <class Arch>
    void operator()(Arch, const widen_job& j) const noexcept;
};

/// Finds the first of n f32/f16/bf16 values whose magnitude bits exceed
/// `limit` (NaN and Inf exceed every finite bound): first_beyond_bits on the
/// active instruction set. The result goes to *first (n when there is none).
struct range_scan_job {
    float_storage from;
    const void* x;
    std::size_t n;
    std::uint32_t limit;
    std::size_t* first;
};

struct range_scan_fn {
    template <class Arch>
    void operator()(Arch, const range_scan_job& j) const noexcept;
};

/// Whether quantize_ggml_rows has a SIMD kernel for type t (with an imatrix
/// or without); the rest go to the scalar ggml::quantize_rows.
constexpr bool quantize_ggml_simd_supports(ggml::type t, bool with_imatrix) noexcept {
    using ggml::type;
    switch (t) {
    case type::q2_k:
    case type::q4_k:
    case type::q5_k:
    case type::q6_k:
    case type::iq4_nl:
    case type::iq4_xs: return true;
    case type::q3_k:
    case type::q4_0:
    case type::q4_1:
    case type::q5_0:
    case type::q5_1: return !with_imatrix;
    // These ignore the imatrix, in ggml as here.
    case type::q8_0:
    case type::mxfp4:
    case type::tq1_0:
    case type::tq2_0: return true;
    default: return false;
    }
}

namespace detail::ggml_quant {

/// n f16 or bf16 values at src (little-endian) as f32, exactly: the scalar
/// ISA's path (the SIMD ones are widen<Arch> below).
inline void widen_scalar(ggml::type from, const unsigned char* src, float* out, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) {
        const auto h = static_cast<std::uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
        out[i] = from == ggml::type::bf16 ? bf16_to_float(h) : fp16_to_float(h);
    }
}

}  // namespace detail::ggml_quant

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

template <class Arch>
inline void put_columns(const std::uint8_t (*rows)[16], unsigned char* out, std::size_t stride) noexcept;

#if XSIMD_WITH_AVX512BW
/// out[j] = {r[0][j], ..., r[15][j]} for j < 16: a 16 x 16 transpose in
/// registers (far fewer load slots than a gather or scalar moves per column).
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

// ---- Q4_K / Q5_K --------------------------------------------------------

template <class Arch, int Nmax>
inline void q4_q5_k_tile(const float* const* xs, const float* const* qws, unsigned char* out, int nvalid) noexcept {
    using G = tile<Arch, 32, 8>;
    using B = fvec<Arch>;
    constexpr int n = 32, lanes = G::lanes;
    const bool im = qws[0] != nullptr;
    alignas(64) float xt[G::S * n];
    alignas(64) float qt[G::S * n];
    alignas(64) float sc[G::S], mn[G::S], sw[G::S], sig[G::S];
    alignas(64) float dsub[G::S], msub[G::S];
    std::uint8_t lev[G::T * 256];
    B L[G::NB][n];
    transpose_in<Arch, n, 8>(xs, nvalid, xt);
    if (im) {
        transpose_in<Arch, n, 8>(qws, nvalid, qt);
        for (int s = 0; s < G::S; ++s) sig[s] = 0.f;
        for (int k = 0; k < nvalid; ++k) {
            const float sigma2 = 2 * sum_squares<Arch>(xs[k], 256) / ggml::qk_k;
            for (int j = 0; j < 8; ++j) sig[8 * k + j] = sigma2;
        }
    }
    for (int b = 0; b < G::NB; ++b) {
        B x[n], w[n], scale, the_min;
        load_n<Arch, n>(xt + b * n * lanes, x);
        if (im) {
            B q[n], s;
            load_n<Arch, n>(qt + b * n * lanes, q);
            imatrix_weights<Arch, n>(x, q, B::load_aligned(sig + b * lanes), w, s);
            s.store_aligned(sw + b * lanes);
            qkx_search<Arch, n>(x, w, L[b], scale, the_min, Nmax, -0.9f, 0.05f, 36, false);
        } else {
            rms_plus_abs_weights<Arch, n>(x, w);
            if constexpr (Nmax == 15)
                qkx_search<Arch, n>(x, w, L[b], scale, the_min, Nmax, -1.f, 0.1f, 20, false);
            else
                qkx_search<Arch, n>(x, w, L[b], scale, the_min, Nmax, -0.5f, 0.1f, 15, false);
        }
        scale.store_aligned(sc + b * lanes);
        the_min.store_aligned(mn + b * lanes);
    }
    using Block = std::conditional_t<Nmax == 15, ggml::block_q4_K, ggml::block_q5_K>;
    Block y[G::T];
    for (int s = 0; s < G::S; ++s) dsub[s] = msub[s] = 0.f;
    for (int k = 0; k < nvalid; ++k)
        q45_k_scales<Arch, Nmax>(sc + 8 * k, mn + 8 * k, im ? sw + 8 * k : nullptr, y[k].d, y[k].dmin, y[k].scales,
                                 dsub + 8 * k, msub + 8 * k);
    for (int b = 0; b < G::NB; ++b) {
        B x[n];
        load_n<Arch, n>(xt + b * n * lanes, x);
        requantize<Arch, n, true>(x, L[b], B::load_aligned(dsub + b * lanes), B::load_aligned(msub + b * lanes), 0.f,
                                  static_cast<float>(Nmax));
        transpose_out<Arch, n, 8>(L[b], b, lev);
    }
    for (int k = 0; k < nvalid; ++k) {
        if constexpr (Nmax == 15)
            pack_4bit_5bit<Arch>(lev + 256 * k, y[k].qs, nullptr);
        else
            pack_4bit_5bit<Arch>(lev + 256 * k, y[k].qs, y[k].qh);
        std::memcpy(out + k * sizeof(Block), &y[k], sizeof(Block));
    }
}

// ---- Q2_K -------------------------------------------------------------------

template <class Arch>
inline void q2_tile(const float* const* xs, const float* const* qws, unsigned char* out, int nvalid) noexcept {
    using G = tile<Arch, 16, 16>;
    using B = fvec<Arch>;
    constexpr int n = 16, lanes = G::lanes;
    const bool im = qws[0] != nullptr;
    alignas(64) float xt[G::S * n];
    alignas(64) float qt[G::S * n];
    alignas(64) float sc[G::S], mn[G::S], sw[G::S], sig[G::S];
    alignas(64) float dsub[G::S], msub[G::S];
    std::uint8_t lev[G::T * 256];
    B L[G::NB][n];
    transpose_in<Arch, n, 16>(xs, nvalid, xt);
    if (im) {
        transpose_in<Arch, n, 16>(qws, nvalid, qt);
        for (int s = 0; s < G::S; ++s) sig[s] = 0.f;
        for (int k = 0; k < nvalid; ++k) {
            const float sigma2 = sum_squares<Arch>(xs[k], 256) / ggml::qk_k;
            for (int j = 0; j < 16; ++j) sig[16 * k + j] = sigma2;
        }
    }
    for (int b = 0; b < G::NB; ++b) {
        B x[n], w[n], scale, the_min;
        load_n<Arch, n>(xt + b * n * lanes, x);
        if (im) {
            B q[n], s;
            load_n<Arch, n>(qt + b * n * lanes, q);
            imatrix_weights<Arch, n>(x, q, B::load_aligned(sig + b * lanes), w, s);
            s.store_aligned(sw + b * lanes);
            qkx_search<Arch, n>(x, w, L[b], scale, the_min, 3.f, -0.9f, 0.05f, 36, false);
        } else {
            for (int i = 0; i < n; ++i) w[i] = xsimd::abs(x[i]);
            qkx_search<Arch, n>(x, w, L[b], scale, the_min, 3.f, -0.5f, 0.1f, 15, true);
        }
        scale.store_aligned(sc + b * lanes);
        the_min.store_aligned(mn + b * lanes);
    }
    ggml::block_q2_K y[G::T];
    for (int s = 0; s < G::S; ++s) dsub[s] = msub[s] = 0.f;
    for (int k = 0; k < nvalid; ++k)
        q2_k_scales<Arch>(sc + 16 * k, mn + 16 * k, im ? sw + 16 * k : nullptr, y[k], dsub + 16 * k, msub + 16 * k);
    for (int b = 0; b < G::NB; ++b) {
        B x[n];
        load_n<Arch, n>(xt + b * n * lanes, x);
        requantize<Arch, n, true>(x, L[b], B::load_aligned(dsub + b * lanes), B::load_aligned(msub + b * lanes), 0.f,
                                  3.f);
        transpose_out<Arch, n, 16>(L[b], b, lev);
    }
    for (int k = 0; k < nvalid; ++k) {
        pack_2bit<Arch>(lev + 256 * k, y[k].qs);
        std::memcpy(out + k * sizeof(ggml::block_q2_K), &y[k], sizeof(ggml::block_q2_K));
    }
}

// ---- Q6_K -------------------------------------------------------------------

template <class Arch>
inline void q6_tile(const float* const* xs, const float* const* qws, unsigned char* out, int nvalid) noexcept {
    using G = tile<Arch, 16, 16>;
    using B = fvec<Arch>;
    constexpr int n = 16, lanes = G::lanes;
    const bool im = qws[0] != nullptr;
    alignas(64) float xt[G::S * n];
    alignas(64) float qt[G::S * n];
    alignas(64) float sc[G::S], dsub[G::S];
    std::uint8_t lev[G::T * 256];
    B L[G::NB][n];
    transpose_in<Arch, n, 16>(xs, nvalid, xt);
    if (im) transpose_in<Arch, n, 16>(qws, nvalid, qt);
    for (int b = 0; b < G::NB; ++b) {
        B x[n], w[n], scale;
        load_n<Arch, n>(xt + b * n * lanes, x);
        if (im)
            load_n<Arch, n>(qt + b * n * lanes, w);  // ggml weights Q6_K's search by the imatrix alone
        else
            for (int i = 0; i < n; ++i) w[i] = vmul(x[i], x[i]);
        qx_search<Arch, n>(x, w, L[b], scale, 32.f);
        scale.store_aligned(sc + b * lanes);
    }
    ggml::block_q6_K y[G::T];
    bool zero_block[G::T] = {};
    for (int s = 0; s < G::S; ++s) dsub[s] = 0.f;
    for (int k = 0; k < nvalid; ++k) zero_block[k] = !q6_k_scales<Arch>(sc + 16 * k, y[k], dsub + 16 * k);
    for (int b = 0; b < G::NB; ++b) {
        B x[n];
        load_n<Arch, n>(xt + b * n * lanes, x);
        requantize<Arch, n, false>(x, L[b], B::load_aligned(dsub + b * lanes), B(0.f), -32.f, 31.f);
        transpose_out<Arch, n, 16>(L[b], b, lev);
    }
    for (int k = 0; k < nvalid; ++k) {
        if (zero_block[k])
            std::memset(&y[k], 0, sizeof y[k]);
        else
            pack_q6<Arch>(lev + 256 * k, y[k]);
        std::memcpy(out + k * sizeof(ggml::block_q6_K), &y[k], sizeof(ggml::block_q6_K));
    }
}

// ---- Q3_K (no imatrix) ------------------------------------------------------

template <class Arch>
inline void q3_tile(const float* const* xs, const float* const*, unsigned char* out, int nvalid) noexcept {
    using G = tile<Arch, 16, 16, 4>;
    using B = fvec<Arch>;
    constexpr int n = 16, lanes = G::lanes;
    alignas(64) float xt[G::S * n];
    alignas(64) float sc[G::S], dsub[G::S];
    std::uint8_t lev[G::T * 256];
    B L[G::NB][n];
    transpose_in<Arch, n, 16, 4>(xs, nvalid, xt);
    {
        B x[G::NB][n], scale[G::NB];
        for (int b = 0; b < G::NB; ++b) load_n<Arch, n>(xt + b * n * lanes, x[b]);
        q3_search<Arch, n, G::NB>(x, L, scale, 4.f);
        for (int b = 0; b < G::NB; ++b) scale[b].store_aligned(sc + b * lanes);
    }
    ggml::block_q3_K y[G::T];
    for (int s = 0; s < G::S; ++s) dsub[s] = 0.f;
    for (int k = 0; k < nvalid; ++k) q3_k_scales<Arch>(sc + 16 * k, y[k], dsub + 16 * k);
    for (int b = 0; b < G::NB; ++b) {
        B x[n];
        load_n<Arch, n>(xt + b * n * lanes, x);
        requantize<Arch, n, false>(x, L[b], B::load_aligned(dsub + b * lanes), B(0.f), -4.f, 3.f);
        transpose_out<Arch, n, 16, 4>(L[b], b, lev);
    }
    for (int k = 0; k < nvalid; ++k) {
        pack_q3<Arch>(lev + 256 * k, y[k]);
        std::memcpy(out + k * sizeof(ggml::block_q3_K), &y[k], sizeof(ggml::block_q3_K));
    }
}

// ---- IQ4_NL / IQ4_XS -----------------------------------------------------

/// Nsub 1: IQ4_NL blocks of 32; Nsub 8: IQ4_XS super-blocks of 256.
template <class Arch, int Nsub>
inline void iq4_tile(const float* const* xs, const float* const* qws, unsigned char* out, int nvalid) noexcept {
    using G = tile<Arch, 32, Nsub>;
    using B = fvec<Arch>;
    constexpr int n = 32, lanes = G::lanes, nvals = 32 * Nsub;
    const bool im = qws[0] != nullptr;
    alignas(64) float xt[G::S * n];
    alignas(64) float qt[G::S * n];
    alignas(64) float sig[G::S], sc[G::S], idl[G::S];
    std::uint8_t lev[G::T * nvals];
    transpose_in<Arch, n, Nsub>(xs, nvalid, xt);
    if (im) {
        transpose_in<Arch, n, Nsub>(qws, nvalid, qt);
        for (int s = 0; s < G::S; ++s) sig[s] = 0.f;
        for (int k = 0; k < nvalid; ++k) {
            float sigma2 = 0.f;
            for (int j = 0; j < nvals; ++j) sigma2 = sigma2 + mul_unfused<Arch>(xs[k][j], xs[k][j]);
            sigma2 = sigma2 * (2.0f / static_cast<float>(nvals));
            for (int ib = 0; ib < Nsub; ++ib) sig[Nsub * k + ib] = sigma2;
        }
    }
    for (int b = 0; b < G::NB; ++b) {
        B x[n], w[n];
        load_n<Arch, n>(xt + b * n * lanes, x);
        if (im) {
            B qv[n], sw;
            load_n<Arch, n>(qt + b * n * lanes, qv);
            imatrix_weights<Arch, n>(x, qv, B::load_aligned(sig + b * lanes), w, sw);
        } else {
            for (int i = 0; i < n; ++i) w[i] = vmul(x[i], x[i]);
        }
        iq4_search<Arch, n>(x, w).store_aligned(sc + b * lanes);
    }
    using Block = std::conditional_t<Nsub == 1, ggml::block_iq4_nl, ggml::block_iq4_xs>;
    Block y[G::T];
    for (int s = 0; s < G::S; ++s) idl[s] = 0.f;
    for (int k = 0; k < nvalid; ++k) {
        if constexpr (Nsub == 1)
            iq4_scales<Arch, 1>(sc + k, y[k].d, nullptr, nullptr, idl + k);
        else
            iq4_scales<Arch, Nsub>(sc + Nsub * k, y[k].d, &y[k].scales_h, y[k].scales_l, idl + Nsub * k);
    }
    for (int b = 0; b < G::NB; ++b) {
        B x[n], L[n], q;
        load_n<Arch, n>(xt + b * n * lanes, x);
        const B il = B::load_aligned(idl + b * lanes);
        for (int j = 0; j < n; ++j) iq4_nearest<Arch>(vmul(il, x[j]), L[j], q);
        transpose_out<Arch, n, Nsub>(L, b, lev);
    }
    for (int k = 0; k < nvalid; ++k) {
        for (int ib = 0; ib < Nsub; ++ib) pack_nibbles_32<Arch>(lev + nvals * k + 32 * ib, y[k].qs + 16 * ib);
        std::memcpy(out + k * sizeof(Block), &y[k], sizeof(Block));
    }
}

// ---- legacy 32-blocks, MXFP4, TQ1_0, TQ2_0---------------------------------------
//
// These types do a few operations per value, so here each lane is one block:
// a group of 16 blocks is read column-wise (gathers where the ISA has them),
// every lane runs the scalar quantizer's operations in its order (the running
// max/min scans keep their first-wins and NaN behaviour that way, without
// cross-lane reductions), and the byte columns are transposed back.

inline constexpr int legacy_group = 16;


template <class Arch>
inline ivec<Arch> lane_ids() noexcept {
    alignas(64) static constexpr std::int32_t ids[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return ivec<Arch>::load_aligned(ids);
}

/// Element j of blocks b*lanes .. b*lanes + lanes - 1 (blocks of N floats from x).
template <class Arch, int N>
inline fvec<Arch> column(const float* x, int b, int j) noexcept {
    constexpr int lanes = static_cast<int>(fvec<Arch>::size);
    const float* p = x + static_cast<std::ptrdiff_t>(b * lanes) * N + j;
    if constexpr (dq::is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
        const ivec<Arch> idx = lane_ids<Arch>() * ivec<Arch>(N);
        return fvec<Arch>(_mm512_i32gather_ps(idx, p, 4));
#endif
    } else if constexpr (dq::is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
        const ivec<Arch> idx = lane_ids<Arch>() * ivec<Arch>(N);
        return fvec<Arch>(_mm256_i32gather_ps(p, idx, 4));
#endif
    } else {
        alignas(64) float t[lanes];
        for (int l = 0; l < lanes; ++l) t[l] = p[l * N];
        return fvec<Arch>::load_aligned(t);
    }
}

/// Columns 0..N-1 of the lanes blocks from block b * lanes on (xv[j]: element
/// j of each). AVX-512 transposes 16 x 16 tiles in registers, which costs far
/// fewer load slots than a gather per column.
template <class Arch, int N>
inline void load_columns(const float* x, int b, fvec<Arch>* xv) noexcept {
    if constexpr (dq::is_avx512_v<Arch> && N % 16 == 0) {
#if XSIMD_WITH_AVX512BW
        const float* p = x + static_cast<std::ptrdiff_t>(b * 16) * N;
        const float* r[16];
        for (int k = 0; k < 16; ++k) r[k] = p + k * N;
        for (int c0 = 0; c0 < N; c0 += 16) {
            __m512 out[16];
            transpose16<Arch>(r, out);
            for (int j = 0; j < 16; ++j) xv[c0 + j] = fvec<Arch>(out[j]);
            for (int k = 0; k < 16; ++k) r[k] += 16;
        }
#endif
    } else {
        for (int j = 0; j < N; ++j) xv[j] = column<Arch, N>(x, b, j);
    }
}

/// The low bytes of every lane (values already in 0..255) to dst.
template <class Arch>
inline void store_bytes(const ivec<Arch>& v, std::uint8_t* dst) noexcept {
    constexpr int lanes = static_cast<int>(ivec<Arch>::size);
    if constexpr (dq::is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtepi32_epi8(v));
#endif
    } else if constexpr (dq::is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
        const __m256i r = v;
        const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(w, w));
#endif
    } else if constexpr (dq::is_sse4_1_v<Arch>) {
#if XSIMD_WITH_SSE4_1
        const __m128i w = _mm_packus_epi32(v, v);
        const std::int32_t b4 = _mm_cvtsi128_si32(_mm_packus_epi16(w, w));
        std::memcpy(dst, &b4, 4);
#endif
    } else {
        alignas(64) std::int32_t t[lanes];
        v.store_aligned(t);
        for (int l = 0; l < lanes; ++l) dst[l] = static_cast<std::uint8_t>(t[l]);
    }
}

/// rows[j][k] (byte j of block k) to out[k * stride + j], 16 x 16.
template <class Arch>
inline void put_columns(const std::uint8_t (*rows)[16], unsigned char* out, std::size_t stride) noexcept {
    // xsimd's AVX-512 tags do not derive from its SSE ones.
    if constexpr (dq::is_sse2_v<Arch> || dq::is_avx2_v<Arch> || dq::is_avx512_v<Arch>) {
#if XSIMD_WITH_SSE2
        __m128i a[16], t[16];
        for (int i = 0; i < 16; ++i) a[i] = _mm_load_si128(reinterpret_cast<const __m128i*>(rows[i]));
        for (int i = 0; i < 8; ++i) {
            t[i] = _mm_unpacklo_epi8(a[2 * i], a[2 * i + 1]);
            t[i + 8] = _mm_unpackhi_epi8(a[2 * i], a[2 * i + 1]);
        }
        for (int i = 0; i < 8; ++i) {
            a[i] = _mm_unpacklo_epi16(t[2 * i], t[2 * i + 1]);
            a[i + 8] = _mm_unpackhi_epi16(t[2 * i], t[2 * i + 1]);
        }
        for (int i = 0; i < 8; ++i) {
            t[i] = _mm_unpacklo_epi32(a[2 * i], a[2 * i + 1]);
            t[i + 8] = _mm_unpackhi_epi32(a[2 * i], a[2 * i + 1]);
        }
        for (int i = 0; i < 8; ++i) {
            a[i] = _mm_unpacklo_epi64(t[2 * i], t[2 * i + 1]);
            a[i + 8] = _mm_unpackhi_epi64(t[2 * i], t[2 * i + 1]);
        }
        // Four rounds of this pairing leave column k in a[bit-reversed k].
        constexpr int rev[16] = {0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15};
        for (int k = 0; k < 16; ++k)
            _mm_storeu_si128(reinterpret_cast<__m128i*>(out + static_cast<std::size_t>(k) * stride), a[rev[k]]);
#endif
    } else {
        for (int k = 0; k < 16; ++k)
            for (int j = 0; j < 16; ++j) out[static_cast<std::size_t>(k) * stride + j] = rows[j][k];
    }
}

/// C's (int8_t)f as g++ emits it: truncate, keep the low byte, sign-extend.
template <class Arch>
inline ivec<Arch> trunc_i8(const fvec<Arch>& v) noexcept {
    return (xsimd::to_int(v) << 24) >> 24;
}

/// roundf (half away from zero) per lane. v - trunc(v) is exact below 2^23,
/// and above it v is already whole.
template <class Arch>
inline fvec<Arch> round_away(const fvec<Arch>& v) noexcept {
    using B = fvec<Arch>;
    const B t = xsimd::trunc(v);
    const B step = xsimd::select(v < B(0.f), B(-1.f), B(1.f));
    return xsimd::select(xsimd::abs(v - t) >= B(0.5f), t + step, t);
}

/// static_cast<int>(std::lround(v)) in its low byte, as the scalar code has
/// it. lround is exact to 2^63, where an integer at or beyond 2^31 in float
/// has a low byte of 0. x86's conversion gives INT_MIN there (low byte 0, as
/// does lround's LONG_MIN beyond 2^63); AArch64's saturates to INT_MAX, whose
/// low byte is lround's only from 2^63 on, so [2^31, 2^63) goes in as 0.
template <class Arch>
inline ivec<Arch> lround_low_byte(const fvec<Arch>& v) noexcept {
#if defined(__aarch64__)
    using B = fvec<Arch>;
    const B w = xsimd::select((v >= B(2147483648.f)) & (v < B(9223372036854775808.f)), B(0.f), v);
    return xsimd::to_int(round_away<Arch>(w));
#else
    return xsimd::to_int(round_away<Arch>(v));
#endif
}

template <class Arch>
inline fvec<Arch> inverse_or_zero(const fvec<Arch>& d) noexcept {
    return xsimd::select(vne(d, fvec<Arch>(0.f)), vdiv(fvec<Arch>(1.f), d), fvec<Arch>(0.f));
}

/// ggml's MXFP4 exponent from a block's amax (log2f as the scalar code).
template <class Arch>
inline std::uint8_t mxfp4_exponent(float amax) noexcept {
    if (!(amax > 0.0f)) return 0;
    // floor(log2f(a)) is a's exponent unless log2f rounds up to the next
    // integer, which needs a mantissa just below 2 (within far less than
    // 2^-12 of it); those, subnormals, Inf and NaN take the libm call.
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(amax);
    const std::uint32_t e = bits >> 23;
    if (e != 0 && e != 0xFF && (bits & 0x007FFFFFu) < 0x007FF800u)
        return static_cast<std::uint8_t>((static_cast<int>(e) - 2) & 0xFF);
    const float biased = std::floor(std::log2(amax)) - 2.0f + 127.0f;
    return std::isfinite(biased) ? static_cast<std::uint8_t>(static_cast<int>(biased) & 0xFF) : std::uint8_t{0};
}

template <class Arch>
inline float mxfp4_half_scale(std::uint8_t e) noexcept {
    const std::uint32_t bits = e < 2 ? (0x00200000u << e) : (static_cast<std::uint32_t>(e - 1) << 23);
    return std::bit_cast<float>(bits);
}

template <ggml::type T>
inline constexpr int legacy_block_values = (T == ggml::type::tq1_0 || T == ggml::type::tq2_0) ? 256 : 32;

/// Block header bytes before qs, and the offset of qh (Q5) in the block.
template <ggml::type T>
inline constexpr int legacy_qs_offset = T == ggml::type::q4_0 ? 2
                                        : T == ggml::type::q4_1 ? 4
                                        : T == ggml::type::q5_0 ? 6
                                        : T == ggml::type::q5_1 ? 8
                                        : T == ggml::type::q8_0 ? 2
                                        : T == ggml::type::mxfp4 ? 1
                                                                : 0;

template <ggml::type T>
inline constexpr std::size_t legacy_block_bytes = T == ggml::type::q4_0   ? sizeof(ggml::block_q4_0)
                                                  : T == ggml::type::q4_1 ? sizeof(ggml::block_q4_1)
                                                  : T == ggml::type::q5_0 ? sizeof(ggml::block_q5_0)
                                                  : T == ggml::type::q5_1 ? sizeof(ggml::block_q5_1)
                                                  : T == ggml::type::q8_0 ? sizeof(ggml::block_q8_0)
                                                  : T == ggml::type::mxfp4 ? sizeof(ggml::block_mxfp4)
                                                  : T == ggml::type::tq1_0 ? sizeof(ggml::block_tq1_0)
                                                                           : sizeof(ggml::block_tq2_0);

/// TQ1_0's byte from five (or four, then a zero) trits: q = the base-3 number
/// mod 256, then (q * 256 + 242) / 243 mod 256. As 256 = 243 + 13, that
/// quotient is q + (13 q + 242) / 243, whose division is a multiply and shift
/// (exact for every q, checked below).
constexpr bool tq1_div243_exact() noexcept {
    for (std::int32_t q = 0; q < 256; ++q)
        if ((q * 256 + 242) / 243 != q + (((13 * q + 242) * 1079) >> 18)) return false;
    return true;
}
static_assert(tq1_div243_exact());

template <class Arch>
inline ivec<Arch> tq1_byte(const ivec<Arch>* t, int count) noexcept {
    using I = ivec<Arch>;
    I q = t[0];
    for (int k = 1; k < count; ++k) q = q * I(3) + t[k];
    for (int k = count; k < 5; ++k) q = q * I(3);
    q = q & I(0xFF);
    return (q + (((q * I(13) + I(242)) * I(1079)) >> 18)) & I(0xFF);
}

/// 16 whole blocks of type T from x to out.
template <class Arch, ggml::type T>
inline void legacy_group_run(const float* x, unsigned char* out) noexcept {
    using B = fvec<Arch>;
    using I = ivec<Arch>;
    using ggml::type;
    constexpr int lanes = static_cast<int>(B::size), NB = legacy_group / lanes, N = legacy_block_values<T>;
    constexpr std::size_t BB = legacy_block_bytes<T>;
    constexpr int nrows = T == type::q8_0 ? 32 : T == type::tq2_0 ? 64 : T == type::tq1_0 ? 48 : 16;
    constexpr bool q5 = T == type::q5_0 || T == type::q5_1;
    constexpr bool affine = T == type::q4_1 || T == type::q5_1;
    alignas(16) std::uint8_t rows[nrows][16];
    alignas(64) std::uint32_t dh[legacy_group], mh[legacy_group], qh[legacy_group];
    alignas(64) float stat[legacy_group];
    std::uint8_t ex[legacy_group];
    alignas(16) std::uint8_t tq1_qh[4][16];
    static_cast<void>(tq1_qh);
    static_cast<void>(mh);
    static_cast<void>(qh);
    static_cast<void>(stat);
    static_cast<void>(ex);
    for (int b = 0; b < NB; ++b) {
        B xv[N];
        load_columns<Arch, N>(x, b, xv);
        if constexpr (T == type::q8_0 || T == type::tq1_0 || T == type::tq2_0) {
            B amax(0.f);
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < N; ++j) {
                const B a = xsimd::abs(xv[j]);
                amax = xsimd::select(amax > a, amax, a);
            }
            const B d = T == type::q8_0 ? vdiv(amax, B(127.0f)) : amax;
            const B id = inverse_or_zero<Arch>(d);
            dq::fp16_bits<Arch>(d).store_aligned(dh + b * lanes);
            if constexpr (T == type::q8_0) {
                LOWBIT_GGML_QUANT_UNROLL(32)
                for (int j = 0; j < 32; ++j)
                    store_bytes<Arch>(xsimd::to_int(round_away<Arch>(vmul(xv[j], id))) & I(0xFF), rows[j] + b * lanes);
            } else if constexpr (T == type::tq1_0) {
                // ggml_blocks.hpp's quantize_row_tq1_0 has the element order.
                const auto trit = [&](int e) { return lround_low_byte<Arch>(vmul(xv[e], id)) + I(1); };
                for (int m = 0; m < 32; ++m) {
                    I t[5];
                    for (int k = 0; k < 5; ++k) t[k] = trit(m + 32 * k);
                    store_bytes<Arch>(tq1_byte<Arch>(t, 5), rows[m] + b * lanes);
                }
                for (int m = 0; m < 16; ++m) {
                    I t[5];
                    for (int k = 0; k < 5; ++k) t[k] = trit(160 + m + 16 * k);
                    store_bytes<Arch>(tq1_byte<Arch>(t, 5), rows[32 + m] + b * lanes);
                }
                for (int j = 0; j < 4; ++j) {
                    I t[4];
                    for (int k = 0; k < 4; ++k) t[k] = trit(240 + j + 4 * k);
                    store_bytes<Arch>(tq1_byte<Arch>(t, 4), tq1_qh[j] + b * lanes);
                }
            } else {
                for (int r = 0; r < 64; ++r) {
                    const int half = r / 32, m = r % 32;
                    I q(0);
                    for (int k = 0; k < 4; ++k) {
                        const B v = vmul(xv[128 * half + 32 * k + m], id);
                        q = q | (((lround_low_byte<Arch>(v) + I(1)) & I(3)) << (2 * k));
                    }
                    store_bytes<Arch>(q, rows[r] + b * lanes);
                }
            }
        } else if constexpr (T == type::mxfp4) {
            B amax(0.f);
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < N; ++j) {
                const B a = xsimd::abs(xv[j]);
                amax = xsimd::select(a > amax, a, amax);
            }
            amax.store_aligned(stat + b * lanes);
            alignas(64) float dv[lanes];
            for (int l = 0; l < lanes; ++l) {
                ex[b * lanes + l] = mxfp4_exponent<Arch>(stat[b * lanes + l]);
                dv[l] = mxfp4_half_scale<Arch>(ex[b * lanes + l]);
            }
            const B d = B::load_aligned(dv);
            // For v < 0 the negative entries' errors are the positive ones'
            // for |v|, and a positive entry is never nearer, so search the
            // magnitudes and set the sign bit of the index afterwards.
            constexpr float mags[8] = {0, 1, 2, 3, 4, 6, 8, 12};
            B cd[8];
            for (int c = 0; c < 8; ++c) cd[c] = vmul(B(mags[c]), d);
            I lv[32];
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < 32; ++j) {
                const B av = xsimd::abs(xv[j]);
                B best = xsimd::abs(cd[0] - av);
                B idx(0.f);
                LOWBIT_GGML_QUANT_UNROLL(8)
                for (int c = 1; c < 8; ++c) {
                    const B err = xsimd::abs(cd[c] - av);
                    const auto lt = err < best;
                    best = xsimd::select(lt, err, best);
                    idx = xsimd::select(lt, B(static_cast<float>(c)), idx);
                }
                idx = xsimd::select((xv[j] < B(0.f)) & (idx > B(0.f)), idx + B(8.f), idx);
                lv[j] = xsimd::to_int(idx);
            }
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < 16; ++j) store_bytes<Arch>(lv[j] | (lv[j + 16] << 4), rows[j] + b * lanes);
        } else {
            B d, lo;
            if constexpr (affine) {
                B mn(std::numeric_limits<float>::max()), mx(-std::numeric_limits<float>::max());
                LOWBIT_GGML_QUANT_UNROLL(32)
                for (int j = 0; j < N; ++j) {
                    mn = xsimd::select(xv[j] < mn, xv[j], mn);
                    mx = xsimd::select(xv[j] > mx, xv[j], mx);
                }
                d = vdiv(mx - mn, B(q5 ? 31.0f : 15.0f));
                lo = mn;
                dq::fp16_bits<Arch>(mn).store_aligned(mh + b * lanes);
            } else {
                B amax(0.f), mx(0.f);
                LOWBIT_GGML_QUANT_UNROLL(32)
                for (int j = 0; j < N; ++j) {
                    const B a = xsimd::abs(xv[j]);
                    const auto gt = a > amax;
                    amax = xsimd::select(gt, a, amax);
                    mx = xsimd::select(gt, xv[j], mx);
                }
                d = vdiv(mx, B(q5 ? -16.0f : -8.0f));
                lo = B(0.f);
            }
            const B id = inverse_or_zero<Arch>(d);
            dq::fp16_bits<Arch>(d).store_aligned(dh + b * lanes);
            I lv[32];
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < 32; ++j) {
                if constexpr (T == type::q4_0)
                    lv[j] = xsimd::min(trunc_i8<Arch>(vmul(xv[j], id) + B(8.5f)), I(15));
                else if constexpr (T == type::q5_0)
                    lv[j] = xsimd::min(trunc_i8<Arch>(vmul(xv[j], id) + B(16.5f)), I(31));
                else if constexpr (T == type::q4_1)
                    lv[j] = xsimd::min(trunc_i8<Arch>(vmul(xv[j] - lo, id) + B(0.5f)), I(15));
                else
                    lv[j] = xsimd::to_int(vmul(xv[j] - lo, id) + B(0.5f)) & I(0xFF);
            }
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < 16; ++j)
                store_bytes<Arch>((lv[j] & I(0x0F)) | ((lv[j + 16] & I(0x0F)) << 4), rows[j] + b * lanes);
            if constexpr (q5) {
                I h(0);
                LOWBIT_GGML_QUANT_UNROLL(32)
                for (int j = 0; j < 32; ++j) h = h | (((lv[j] >> 4) & I(1)) << j);
                ::lowbit::detail::simd::bitcast<std::uint32_t>(h).store_aligned(qh + b * lanes);
            }
        }
    }
    const int qs_off = legacy_qs_offset<T>;
    for (int r = 0; r < nrows; r += 16) put_columns<Arch>(rows + r, out + qs_off + r, BB);
    for (int k = 0; k < legacy_group; ++k) {
        unsigned char* blk = out + static_cast<std::size_t>(k) * BB;
        if constexpr (T == type::mxfp4) {
            blk[0] = ex[k];
        } else {
            const auto h16 = static_cast<std::uint16_t>(dh[k]);
            std::memcpy(blk + (T == type::tq2_0 ? 64 : T == type::tq1_0 ? 52 : 0), &h16, 2);
        }
        if constexpr (T == type::tq1_0)
            for (int j = 0; j < 4; ++j) blk[48 + j] = tq1_qh[j][k];
        if constexpr (affine) {
            const auto m16 = static_cast<std::uint16_t>(mh[k]);
            std::memcpy(blk + 2, &m16, 2);
        }
        if constexpr (q5) std::memcpy(blk + qs_off - 4, &qh[k], 4);
    }
}

#if XSIMD_WITH_AVX512BW
// ---- legacy 32-blocks row-wise on AVX-512 ------------------------------------
//
// A 32-value block is two zmm registers, so Q4_0..Q8_0 need no transposes on
// AVX-512: the block's max (or min and max) is reduced in registers, and the
// scalar scan's pick among equal values (the first one, which matters for the
// sign of zero and for Q4_0's sign of the max) is recovered as the first
// element equal to it. d and 1/d are the scalar code's own float operations,
// the codes its unfused mul-then-add and truncation to the low byte.


template <class Arch>
LOWBIT_GGML_QUANT_INLINE float hmax_ps(__m512 v) noexcept {
    const __m256 h = _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = _mm_max_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_max_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_max_ss(q, _mm_movehdup_ps(q)));
}

template <class Arch>
LOWBIT_GGML_QUANT_INLINE float hmin_ps(__m512 v) noexcept {
    const __m256 h = _mm256_min_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = _mm_min_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = _mm_min_ps(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(_mm_min_ss(q, _mm_movehdup_ps(q)));
}

/// Bit i set where element i of the block (lo: 0..15, hi: 16..31) equals v.
template <class Arch>
LOWBIT_GGML_QUANT_INLINE std::uint32_t equal_mask(__m512 lo, __m512 hi, float v) noexcept {
    const __m512 vv = _mm512_set1_ps(v);
    return static_cast<std::uint32_t>(_mm512_cmp_ps_mask(lo, vv, _CMP_EQ_OQ)) |
           (static_cast<std::uint32_t>(_mm512_cmp_ps_mask(hi, vv, _CMP_EQ_OQ)) << 16);
}

/// The first of the block's 32 values equal to v, or v when none is.
template <class Arch>
LOWBIT_GGML_QUANT_INLINE float first_equal(const float* p, __m512 lo, __m512 hi, float v) noexcept {
    const std::uint32_t m = equal_mask<Arch>(lo, hi, v);
    const float f = p[std::countr_zero(m | 0x80000000u)];
    return m ? f : v;
}

template <class Arch>
LOWBIT_GGML_QUANT_INLINE std::uint16_t half_bits(float f) noexcept {
    return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

/// roundf on every lane: v - trunc(v) is exact, and at or above 2^23 v is whole.
template <class Arch>
LOWBIT_GGML_QUANT_INLINE __m512 round_away_ps(__m512 v) noexcept {
    const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<std::int32_t>(0x80000000u)));
    const __m512 frac = _mm512_andnot_ps(sign, _mm512_sub_ps(v, t));
    const __m512 step = _mm512_or_ps(_mm512_and_ps(v, sign), _mm512_set1_ps(1.0f));
    return _mm512_mask_add_ps(t, _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ), t, step);
}

/// ggml's Q8_0 block as the scalar code computes it (its amax scan lets a NaN
/// reset the running max, which the reduction does not model).
template <class Arch>
inline void q8_0_block_scalar(const float* p, unsigned char* blk) noexcept {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) {
        const float a = std::fabs(p[j]);
        amax = amax > a ? amax : a;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const std::uint16_t h = float_to_fp16<Arch>(d);
    std::memcpy(blk, &h, 2);
    for (int j = 0; j < 32; ++j)
        blk[2 + j] = static_cast<unsigned char>(static_cast<int>(std::round(::lowbit::detail::unfused(p[j] * id))) & 0xFF);
}

/// Block header, the codes from 1/d (and the min), and the packed codes of one
/// block held in a and b.
template <class Arch, ggml::type T>
LOWBIT_GGML_QUANT_INLINE void legacy_codes_avx512(__m512 a, __m512 b, float id, float lo, unsigned char* blk) noexcept {
    using ggml::type;
    constexpr bool q5 = T == type::q5_0 || T == type::q5_1;
    constexpr bool affine = T == type::q4_1 || T == type::q5_1;
    const __m512 idv = _mm512_set1_ps(id);
    if constexpr (T == type::q8_0) {
        const __m512i qa = _mm512_cvttps_epi32(round_away_ps<Arch>(::lowbit::detail::unfused(_mm512_mul_ps(a, idv))));
        const __m512i qb = _mm512_cvttps_epi32(round_away_ps<Arch>(::lowbit::detail::unfused(_mm512_mul_ps(b, idv))));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(blk + 2), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(blk + 18), _mm512_cvtepi32_epi8(qb));
        return;
    }
    __m512 va, vb;
    if constexpr (affine) {
        const __m512 lov = _mm512_set1_ps(lo), half = _mm512_set1_ps(0.5f);
        va = _mm512_add_ps(::lowbit::detail::unfused(_mm512_mul_ps(_mm512_sub_ps(a, lov), idv)), half);
        vb = _mm512_add_ps(::lowbit::detail::unfused(_mm512_mul_ps(_mm512_sub_ps(b, lov), idv)), half);
    } else {
        static_cast<void>(lo);
        const __m512 off = _mm512_set1_ps(q5 ? 16.5f : 8.5f);
        va = _mm512_add_ps(::lowbit::detail::unfused(_mm512_mul_ps(a, idv)), off);
        vb = _mm512_add_ps(::lowbit::detail::unfused(_mm512_mul_ps(b, idv)), off);
    }
    // vpmovdb keeps the low byte, as the scalar code's cast does.
    __m128i la = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(va));
    __m128i lb = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(vb));
    if constexpr (T != type::q5_1) {
        const __m128i top = _mm_set1_epi8(q5 ? 31 : 15);
        la = _mm_min_epi8(la, top);
        lb = _mm_min_epi8(lb, top);
    }
    const __m128i qs = _mm_or_si128(_mm_and_si128(la, _mm_set1_epi8(0x0F)),
                                    _mm_and_si128(_mm_slli_epi16(lb, 4), _mm_set1_epi8(static_cast<char>(0xF0))));
    constexpr int qs_off = legacy_qs_offset<T>;
    if constexpr (q5) {
        const __m256i l = _mm256_inserti128_si256(_mm256_castsi128_si256(la), lb, 1);
        const auto qh = static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(l, 3)));
        std::memcpy(blk + qs_off - 4, &qh, 4);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(blk + qs_off), qs);
}

/// legacy_codes_avx512 for two blocks (a0, a1) and (b0, b1), Q4_0..Q5_1. The
/// codes are narrowed with saturating packs instead of the cast's low byte:
/// the scalar code's values are 0..32 or, from a NaN or an infinite 1/d,
/// INT_MIN, whose low byte 0 and saturated -128 give the same nibble and
/// bit 4 (an infinite 1/d is the only way past the range: a finite one comes
/// from a d with at least 21 significant bits).
template <class Arch, ggml::type T>
LOWBIT_GGML_QUANT_INLINE void legacy_codes2_avx512(__m512 a0, __m512 a1, __m512 b0, __m512 b1, float ida, float idb,
                                            float loa, float lob, unsigned char* blk_a,
                                            unsigned char* blk_b) noexcept {
    using ggml::type;
    static_assert(T != type::q8_0);
    constexpr bool q5 = T == type::q5_0 || T == type::q5_1;
    constexpr bool affine = T == type::q4_1 || T == type::q5_1;
    const __m512 va = _mm512_set1_ps(ida), vb = _mm512_set1_ps(idb);
    const auto code = [&](__m512 v, __m512 id, float lo) {
        if constexpr (affine)
            return _mm512_cvttps_epi32(_mm512_add_ps(
                ::lowbit::detail::unfused(_mm512_mul_ps(_mm512_sub_ps(v, _mm512_set1_ps(lo)), id)), _mm512_set1_ps(0.5f)));
        else
            return _mm512_cvttps_epi32(
                _mm512_add_ps(::lowbit::detail::unfused(_mm512_mul_ps(v, id)), _mm512_set1_ps(q5 ? 16.5f : 8.5f)));
    };
    static_cast<void>(loa);
    static_cast<void>(lob);
    // 128-bit lane k: a's elements 4k..4k+3 and 16+4k.., then b's.
    __m512i l = _mm512_packs_epi16(_mm512_packs_epi32(code(a0, va, loa), code(a1, va, loa)),
                                   _mm512_packs_epi32(code(b0, vb, lob), code(b1, vb, lob)));
    if constexpr (T != type::q5_1) l = _mm512_min_epi8(l, _mm512_set1_epi8(q5 ? 31 : 15));
    // Bytes 0..31: a's elements in order, 32..63: b's.
    l = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), l);
    // Lanes 0 and 2: element j's nibble low, j + 16's high.
    const __m512i up = _mm512_slli_epi16(_mm512_shuffle_i64x2(l, l, 0xB1), 4);
    const __m512i qs = _mm512_ternarylogic_epi32(_mm512_set1_epi8(0x0F), l, up, 0xCA);
    constexpr int qs_off = legacy_qs_offset<T>;
    if constexpr (q5) {
        const std::uint64_t h = _mm512_test_epi8_mask(l, _mm512_set1_epi8(0x10));
        const auto ha = static_cast<std::uint32_t>(h), hb = static_cast<std::uint32_t>(h >> 32);
        std::memcpy(blk_a + qs_off - 4, &ha, 4);
        std::memcpy(blk_b + qs_off - 4, &hb, 4);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(blk_a + qs_off), _mm512_castsi512_si128(qs));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(blk_b + qs_off), _mm512_extracti32x4_epi32(qs, 2));
}

/// The largest |x| of the block's non-NaN values, sign kept, first on ties
/// (+0 when there is none): Q4_0's and Q5_0's max.
template <class Arch>
LOWBIT_GGML_QUANT_INLINE float signed_absmax_ps(const float* p, __m512 a, __m512 b) noexcept {
    const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
    const __m512 aa = _mm512_and_ps(a, abs_mask), ab = _mm512_and_ps(b, abs_mask);
    // max_ps returns its second operand when either is NaN: NaN lanes drop out.
    const float amax = hmax_ps<Arch>(_mm512_max_ps(aa, _mm512_max_ps(ab, _mm512_setzero_ps())));
    const std::uint32_t m = equal_mask<Arch>(aa, ab, amax);
    const float first = p[std::countr_zero(m | 0x80000000u)];
    return amax > 0.0f ? first : 0.0f;
}

/// One block of type T from p to blk.
template <class Arch, ggml::type T>
inline void legacy_block_avx512(const float* p, unsigned char* blk) noexcept {
    using ggml::type;
    constexpr bool q5 = T == type::q5_0 || T == type::q5_1;
    const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
    float d, lo = 0.0f;
    if constexpr (T == type::q8_0) {
        if (_mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q) != 0) {  // a NaN in either half
            q8_0_block_scalar<Arch>(p, blk);
            return;
        }
        const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
        d = hmax_ps<Arch>(_mm512_max_ps(_mm512_and_ps(a, abs_mask), _mm512_and_ps(b, abs_mask))) / 127.0f;
    } else if constexpr (T == type::q4_1 || T == type::q5_1) {
        // From +-FLT_MAX with NaN lanes passed over, as the scalar scan.
        const __m512 big = _mm512_set1_ps(std::numeric_limits<float>::max());
        const __m512 nbig = _mm512_set1_ps(-std::numeric_limits<float>::max());
        lo = first_equal<Arch>(p, a, b, hmin_ps<Arch>(_mm512_min_ps(a, _mm512_min_ps(b, big))));
        const float hi = first_equal<Arch>(p, a, b, hmax_ps<Arch>(_mm512_max_ps(a, _mm512_max_ps(b, nbig))));
        d = (hi - lo) / (q5 ? 31.0f : 15.0f);
        const std::uint16_t m16 = half_bits<Arch>(lo);
        std::memcpy(blk + 2, &m16, 2);
    } else {
        d = signed_absmax_ps<Arch>(p, a, b) / (q5 ? -16.0f : -8.0f);
    }
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const std::uint16_t h = half_bits<Arch>(d);
    std::memcpy(blk, &h, 2);
    legacy_codes_avx512<Arch, T>(a, b, id, lo, blk);
}

/// 16 blocks through legacy_block_avx512, for the groups (with a NaN) that
/// the vector reductions do not cover; kept out of line.
template <class Arch, ggml::type T>
LOWBIT_GGML_QUANT_COLD void legacy_group16_blockwise(const float* x, unsigned char* out) noexcept {
    for (int k = 0; k < 16; ++k) legacy_block_avx512<Arch, T>(x + 32 * k, out + legacy_block_bytes<T> * k);
}

/// Lane i = op-reduction of v[k] over its 16 lanes, for the block put in slot
/// k = reduce16_slot[i]: four rounds that halve the vectors and double the
/// blocks per vector (15 ops and 30 shuffles where 16 horizontal reductions
/// would take about 100).
inline constexpr int reduce16_slot[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

template <class Arch, class Op>
LOWBIT_GGML_QUANT_INLINE __m512 reduce16(const __m512* v, Op op) noexcept {
    __m512 l1[8], l2[4], l3[2];
LOWBIT_GGML_QUANT_UNROLL(8)
    for (int i = 0; i < 8; ++i)
        l1[i] = op(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44), _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
LOWBIT_GGML_QUANT_UNROLL(4)
    for (int i = 0; i < 4; ++i)
        l2[i] = op(_mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], 0x88),
                   _mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], 0xDD));
LOWBIT_GGML_QUANT_UNROLL(2)
    for (int i = 0; i < 2; ++i)
        l3[i] = op(_mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], 0x44), _mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], 0xEE));
    return op(_mm512_shuffle_ps(l3[0], l3[1], 0x88), _mm512_shuffle_ps(l3[0], l3[1], 0xDD));
}

/// 16 blocks of type T from x to out: the blocks' reductions together, then
/// d, 1/d and the fp16 fields as vectors over the 16 blocks, then the codes
/// block by block. Blocks whose max or min the reductions leave open (a
/// zero, whose sign is the first zero's; Q4_0's +-amax ties) and Q8_0 groups
/// with a NaN go through legacy_block_avx512's first-equal scan.
template <class Arch, ggml::type T>
inline void legacy_group16_avx512(const float* x, unsigned char* out) noexcept {
    using ggml::type;
    constexpr std::size_t BB = legacy_block_bytes<T>;
    constexpr bool q5 = T == type::q5_0 || T == type::q5_1;
    constexpr bool affine = T == type::q4_1 || T == type::q5_1;
    const auto vmax = [](__m512 u, __m512 w) { return _mm512_max_ps(u, w); };
    const auto vmin = [](__m512 u, __m512 w) { return _mm512_min_ps(u, w); };
    const auto blk_x = [x](int k) { return x + 32 * static_cast<std::ptrdiff_t>(k); };
    alignas(64) float idv[16], lov[16];
    alignas(64) std::uint32_t hdr[16];
    __m256i mh = _mm256_setzero_si256();
    __m512 v[16];
    __m512 d;
    if constexpr (T == type::q8_0) {
        const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
        __mmask16 nan = 0;
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int s = 0; s < 16; ++s) {
            const float* p = blk_x(reduce16_slot[s]);
            const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
            nan = static_cast<__mmask16>(nan | _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q));
            v[s] = _mm512_max_ps(_mm512_and_ps(a, abs_mask), _mm512_and_ps(b, abs_mask));
        }
        if (nan) {
            legacy_group16_blockwise<Arch, T>(x, out);
            return;
        }
        d = _mm512_div_ps(reduce16<Arch>(v, vmax), _mm512_set1_ps(127.0f));
    } else if constexpr (affine) {
        // Seeded with +-FLT_MAX so that NaN lanes drop out, as in the scalar scan.
        const __m512 big = _mm512_set1_ps(std::numeric_limits<float>::max());
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int s = 0; s < 16; ++s) {
            const float* p = blk_x(reduce16_slot[s]);
            v[s] = _mm512_min_ps(_mm512_loadu_ps(p), _mm512_min_ps(_mm512_loadu_ps(p + 16), big));
        }
        __m512 lo = reduce16<Arch>(v, vmin);
        const __m512 nbig = _mm512_set1_ps(-std::numeric_limits<float>::max());
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int s = 0; s < 16; ++s) {
            const float* p = blk_x(reduce16_slot[s]);
            v[s] = _mm512_max_ps(_mm512_loadu_ps(p), _mm512_max_ps(_mm512_loadu_ps(p + 16), nbig));
        }
        __m512 hi = reduce16<Arch>(v, vmax);
        // A zero min or max is the block's first zero, whose sign the reduction lost.
        const __m512 zero = _mm512_setzero_ps();
        __mmask16 zl = _mm512_cmp_ps_mask(lo, zero, _CMP_EQ_OQ), zh = _mm512_cmp_ps_mask(hi, zero, _CMP_EQ_OQ);
        if (zl | zh) {
            alignas(64) float lf[16], hf[16];
            _mm512_store_ps(lf, lo);
            _mm512_store_ps(hf, hi);
            for (int k = 0; k < 16; ++k) {
                if (!(((zl | zh) >> k) & 1)) continue;
                const float* p = blk_x(k);
                const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
                if ((zl >> k) & 1) lf[k] = first_equal<Arch>(p, a, b, lf[k]);
                if ((zh >> k) & 1) hf[k] = first_equal<Arch>(p, a, b, hf[k]);
            }
            lo = _mm512_load_ps(lf);
            hi = _mm512_load_ps(hf);
        }
        d = _mm512_div_ps(_mm512_sub_ps(hi, lo), _mm512_set1_ps(q5 ? 31.0f : 15.0f));
        _mm512_store_ps(lov, lo);
        mh = _mm512_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT);
    } else {
        // The signed max and min, each seeded with 0 (NaN lanes drop out):
        // the larger magnitude wins; equal magnitudes are a zero block
        // (max +0) or a +-amax tie, which the first one decides.
        const __m512 zero = _mm512_setzero_ps();
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int s = 0; s < 16; ++s) {
            const float* p = blk_x(reduce16_slot[s]);
            v[s] = _mm512_max_ps(_mm512_loadu_ps(p), _mm512_max_ps(_mm512_loadu_ps(p + 16), zero));
        }
        const __m512 hi = reduce16<Arch>(v, vmax);
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int s = 0; s < 16; ++s) {
            const float* p = blk_x(reduce16_slot[s]);
            v[s] = _mm512_min_ps(_mm512_loadu_ps(p), _mm512_min_ps(_mm512_loadu_ps(p + 16), zero));
        }
        const __m512 lo = reduce16<Arch>(v, vmin);
        const __m512 neg_lo = _mm512_sub_ps(zero, lo);
        __m512 mx = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(neg_lo, hi, _CMP_GT_OQ), hi, lo);
        const __mmask16 tie = static_cast<__mmask16>(_mm512_cmp_ps_mask(neg_lo, hi, _CMP_EQ_OQ) &
                                                     _mm512_cmp_ps_mask(hi, zero, _CMP_GT_OQ));
        mx = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(hi, zero, _CMP_EQ_OQ) &
                                      _mm512_cmp_ps_mask(neg_lo, zero, _CMP_EQ_OQ),
                                  mx, zero);
        if (tie) {
            alignas(64) float mf[16];
            _mm512_store_ps(mf, mx);
            for (int k = 0; k < 16; ++k) {
                if (!((tie >> k) & 1)) continue;
                const float* p = blk_x(k);
                mf[k] = signed_absmax_ps<Arch>(p, _mm512_loadu_ps(p), _mm512_loadu_ps(p + 16));
            }
            mx = _mm512_load_ps(mf);
        }
        // max / -8 and max * -0.125 are the same correctly rounded quotient.
        d = _mm512_mul_ps(mx, _mm512_set1_ps(q5 ? -0.0625f : -0.125f));
    }
    // C's d != 0 holds for NaN too.
    const __m512 id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_UQ),
                                          _mm512_set1_ps(1.0f), d);
    _mm512_store_ps(idv, id);
    // Block k's header (d, and m for Q4_1/Q5_1) as the 32 bits of lane k.
    _mm512_store_si512(hdr, _mm512_or_si512(_mm512_cvtepu16_epi32(_mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT)),
                                            _mm512_slli_epi32(_mm512_cvtepu16_epi32(mh), 16)));
    static_cast<void>(lov);
    // The per-block values are read back from memory from here on: without
    // this the compiler keeps them in registers and extracts and broadcasts
    // each one with shuffles, which compete with the codes' own shuffles
    // (about 15% of Q4_1's time), where a load or a broadcast from memory
    // costs none.
    __asm__ volatile("" ::: "memory");
LOWBIT_GGML_QUANT_UNROLL(16)
    for (int k = 0; k < 16; ++k) std::memcpy(out + BB * k, hdr + k, affine ? 4 : 2);
    if constexpr (T == type::q8_0) {
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int k = 0; k < 16; ++k) {
            const float* p = blk_x(k);
            legacy_codes_avx512<Arch, T>(_mm512_loadu_ps(p), _mm512_loadu_ps(p + 16), idv[k], 0.0f, out + BB * k);
        }
    } else {
LOWBIT_GGML_QUANT_UNROLL(8)
        for (int k = 0; k < 16; k += 2) {
            const float *p = blk_x(k), *q = blk_x(k + 1);
            legacy_codes2_avx512<Arch, T>(_mm512_loadu_ps(p), _mm512_loadu_ps(p + 16), _mm512_loadu_ps(q),
                                          _mm512_loadu_ps(q + 16), idv[k], idv[k + 1], affine ? lov[k] : 0.0f,
                                          affine ? lov[k + 1] : 0.0f, out + BB * k, out + BB * (k + 1));
        }
    }
}

/// Blocks [0, nblocks) of type T from x to out.
template <class Arch, ggml::type T>
inline void legacy_rows_avx512(const float* x, unsigned char* out, std::size_t nblocks) noexcept {
    constexpr std::size_t BB = legacy_block_bytes<T>;
    std::size_t ib = 0;
    // Prefetching a few groups ahead keeps more lines in flight than the
    // hardware prefetchers alone did (up to 1.6x from L3 in measurements here).
#ifndef LOWBIT_GGML_QUANT_AHEAD
#define LOWBIT_GGML_QUANT_AHEAD 48
#endif
    constexpr std::size_t ahead = LOWBIT_GGML_QUANT_AHEAD;
    for (; ib + 16 <= nblocks; ib += 16) {
#if defined(__GNUC__)
        if (ib + ahead + 16 <= nblocks)
            for (std::size_t c = 0; c < 16 * 32; c += 16) __builtin_prefetch(x + 32 * (ib + ahead) + c);
#endif
        legacy_group16_avx512<Arch, T>(x + 32 * ib, out + BB * ib);
    }
    for (; ib < nblocks; ++ib) legacy_block_avx512<Arch, T>(x + 32 * ib, out + BB * ib);
}
#endif

/// All blocks of the job; the last group is padded with zero blocks.
template <class Arch, ggml::type T>
inline void run_legacy(const ggml_quantize_job& j) noexcept {
    constexpr int N = legacy_block_values<T>;
    constexpr std::size_t BB = legacy_block_bytes<T>;
    const std::size_t total = j.rows * (j.n_per_row / N);
    auto* out = static_cast<unsigned char*>(j.dst);
#if XSIMD_WITH_AVX512BW
    if constexpr (dq::is_avx512_v<Arch> && N == 32 && T != ggml::type::mxfp4) {
        legacy_rows_avx512<Arch, T>(j.x, out, total);
        return;
    }
#endif
    std::size_t g = 0;
    // Two groups ahead: the 16 strided row reads of a group are issued in a
    // burst, which the hardware prefetchers alone did not keep fed in DRAM-sized runs.
    constexpr std::size_t ahead = 2 * legacy_group;
    for (; g + legacy_group <= total; g += legacy_group) {
#if defined(__GNUC__)
        if (g + ahead + legacy_group <= total)
            for (std::size_t c = 0; c < legacy_group * N; c += 16) __builtin_prefetch(j.x + (g + ahead) * N + c);
#endif
        legacy_group_run<Arch, T>(j.x + g * N, out + g * BB);
    }
    if (g < total) {
        const std::size_t rest = total - g;
        alignas(64) float xb[legacy_group * N] = {};
        unsigned char ob[legacy_group * BB];
        std::memcpy(xb, j.x + g * N, rest * N * sizeof(float));
        legacy_group_run<Arch, T>(xb, ob);
        std::memcpy(out + g * BB, ob, rest * BB);
    }
}

// ---- f16 / bf16 sources --------------------------------------------------------

/// n f16 or bf16 values at src as f32 at out, exactly: bf16
/// is the top half of the f32; f16 through F16C where the TU has it, else its
/// bits moved into place and scaled by 2^112 (exact for normals and
/// subnormals alike), with Inf and NaN given the f32 exponent. F16C returns a
/// signalling NaN quietened; no quantizer's output depends on a NaN's bits.
template <class Arch>
inline void widen(ggml::type from, const unsigned char* src, float* out, std::size_t n) noexcept {
    using B = fvec<Arch>;
    using U = xsimd::batch<std::uint32_t, Arch>;
    constexpr std::size_t L = B::size;
    std::size_t i = 0;
    if (from == ggml::type::bf16) {
        for (; i + L <= n; i += L)
            ::lowbit::detail::simd::bitcast<float>(dq::widen16<Arch>(src + 2 * i) << 16).store_unaligned(out + i);
    } else {
#if defined(__F16C__)
        constexpr bool f16c = true;
#else
        constexpr bool f16c = false;
#endif
        for (; i + L <= n; i += L) {
            if constexpr (dq::is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
                _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i))));
#endif
            } else if constexpr (dq::is_avx2_v<Arch> && f16c) {
#if XSIMD_WITH_AVX2 && defined(__F16C__)
                _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i))));
#endif
            } else {
                namespace ds = ::lowbit::detail::simd;
                const U h = dq::widen16<Arch>(src + 2 * i);
                const U m = h & U(0x7FFFu);
                const U scaled = ds::bitcast<std::uint32_t>(ds::bitcast<float>(m << 13) * B(0x1p112f));
                const U bits = xsimd::select(m >= U(0x7C00u), (m << 13) | U(0x7F800000u), scaled);
                ds::bitcast<float>(bits | ((h & U(0x8000u)) << 16)).store_unaligned(out + i);
            }
        }
    }
    // The tail with this arch's own decoder: widen_scalar's fp16_to_float is
    // a shared inline function, whose copy from this TU's -m flags the linker
    // could keep for every caller.
    for (; i < n; ++i) {
        const auto h = static_cast<std::uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
        out[i] = from == ggml::type::bf16 ? std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16)
                                          : dq::half<Arch>(h);
    }
}

// ---- rows -------------------------------------------------------------------

/// The matrix is one run of super-blocks (rows are whole super-blocks and
/// packed back to back), tiled T at a time across row ends; the imatrix
/// repeats every row.
template <class Arch, int T, std::size_t BlockBytes, class Tile, std::size_t BlockVals = ggml::qk_k>
inline void run_tiles(const ggml_quantize_job& j, Tile tile_fn) noexcept {
    const std::size_t bpr = j.n_per_row / BlockVals, total = j.rows * bpr;
    auto* out = static_cast<unsigned char*>(j.dst);
    const float* xs[T];
    const float* qws[T];
    for (std::size_t b = 0; b < total; b += T) {
        const int nvalid = static_cast<int>(total - b < static_cast<std::size_t>(T) ? total - b : T);
        for (int k = 0; k < T; ++k) {
            const std::size_t blk = b + static_cast<std::size_t>(k < nvalid ? k : 0);
            xs[k] = j.x + blk * BlockVals;
            qws[k] = j.imatrix ? j.imatrix + (blk % bpr) * BlockVals : nullptr;
        }
        tile_fn(xs, qws, out + b * BlockBytes, nvalid);
    }
}

template <class Arch>
inline void run(const ggml_quantize_job& j) noexcept {
    using ggml::type;
    switch (j.type) {
    case type::q4_k:
        run_tiles<Arch, tile<Arch, 32, 8>::T, sizeof(ggml::block_q4_K)>(j, q4_q5_k_tile<Arch, 15>);
        break;
    case type::q5_k:
        run_tiles<Arch, tile<Arch, 32, 8>::T, sizeof(ggml::block_q5_K)>(j, q4_q5_k_tile<Arch, 31>);
        break;
    case type::q2_k: run_tiles<Arch, tile<Arch, 16, 16>::T, sizeof(ggml::block_q2_K)>(j, q2_tile<Arch>); break;
    case type::q3_k: run_tiles<Arch, tile<Arch, 16, 16, 4>::T, sizeof(ggml::block_q3_K)>(j, q3_tile<Arch>); break;
    case type::q6_k: run_tiles<Arch, tile<Arch, 16, 16>::T, sizeof(ggml::block_q6_K)>(j, q6_tile<Arch>); break;
    case type::iq4_nl:
        run_tiles<Arch, tile<Arch, 32, 1>::T, sizeof(ggml::block_iq4_nl), decltype(&iq4_tile<Arch, 1>), 32>(
            j, iq4_tile<Arch, 1>);
        break;
    case type::iq4_xs:
        run_tiles<Arch, tile<Arch, 32, 8>::T, sizeof(ggml::block_iq4_xs)>(j, iq4_tile<Arch, 8>);
        break;
    case type::q4_0: run_legacy<Arch, type::q4_0>(j); break;
    case type::q4_1: run_legacy<Arch, type::q4_1>(j); break;
    case type::q5_0: run_legacy<Arch, type::q5_0>(j); break;
    case type::q5_1: run_legacy<Arch, type::q5_1>(j); break;
    case type::q8_0: run_legacy<Arch, type::q8_0>(j); break;
    case type::mxfp4: run_legacy<Arch, type::mxfp4>(j); break;
    case type::tq1_0: run_legacy<Arch, type::tq1_0>(j); break;
    case type::tq2_0: run_legacy<Arch, type::tq2_0>(j); break;
    default: LOWBIT_ASSERT(false && "quantize_ggml: type has no SIMD kernel"); break;
    }
}

}  // namespace detail::ggml_quant
LOWBIT_SIMD_WARNINGS_ON
#undef LOWBIT_GGML_QUANT_UNROLL
#undef LOWBIT_GGML_QUANT_PRAGMA
#undef LOWBIT_GGML_QUANT_INLINE
#undef LOWBIT_GGML_QUANT_COLD
#endif  // !LOWBIT_NO_SIMD

template <class Arch>
void quantize_ggml_fn::operator()(Arch, const ggml_quantize_job& j) const noexcept {
    if (j.rows == 0 || j.n_per_row == 0) return;
    const auto f32_rows = [](const ggml_quantize_job& f) {
        if constexpr (std::is_same_v<Arch, scalar>) {
            const std::size_t rb = ggml::row_bytes(f.type, f.n_per_row);
            const ggml::quantize_row_fn q = ggml::traits(f.type).quantize;
            for (std::size_t r = 0; r < f.rows; ++r)
                q(f.x + r * f.n_per_row, static_cast<unsigned char*>(f.dst) + r * rb, f.n_per_row, f.imatrix);
        } else {
#if !defined(LOWBIT_NO_SIMD)
            detail::ggml_quant::run<Arch>(f);
#endif
        }
    };
    if (j.from == ggml::type::f32) {
        f32_rows(j);
        return;
    }
    const std::size_t in_row = 2 * j.n_per_row, out_row = ggml::row_bytes(j.type, j.n_per_row);
    for (std::size_t r = 0; r < j.rows; r += j.scratch_rows) {
        ggml_quantize_job c = j;
        c.rows = std::min(j.scratch_rows, j.rows - r);
        const auto* in = static_cast<const unsigned char*>(j.src) + r * in_row;
        if constexpr (std::is_same_v<Arch, scalar>) {
            detail::ggml_quant::widen_scalar(j.from, in, j.scratch, c.rows * j.n_per_row);
        } else {
#if !defined(LOWBIT_NO_SIMD)
            detail::ggml_quant::widen<Arch>(j.from, in, j.scratch, c.rows * j.n_per_row);
#endif
        }
        c.x = j.scratch;
        c.from = ggml::type::f32;
        c.dst = static_cast<unsigned char*>(j.dst) + r * out_row;
        f32_rows(c);
    }
}

template <class Arch>
void widen_f32_fn::operator()(Arch, const widen_job& j) const noexcept {
    const auto* src = static_cast<const unsigned char*>(j.src);
    if constexpr (std::is_same_v<Arch, scalar>) {
        detail::ggml_quant::widen_scalar(j.from, src, j.out, j.n);
    } else {
#if !defined(LOWBIT_NO_SIMD)
        detail::ggml_quant::widen<Arch>(j.from, src, j.out, j.n);
#endif
    }
}

template <class Arch>
void range_scan_fn::operator()(Arch, const range_scan_job& j) const noexcept {
    std::size_t i = 0;
    if constexpr (!std::is_same_v<Arch, scalar>) {
#if !defined(LOWBIT_NO_SIMD)
        // Masked magnitudes and the bound are non-negative, so signed compares serve.
        const auto scan = [&](auto lane, auto mask) {
            using T = decltype(lane);
            using B = xsimd::batch<T, Arch>;
            constexpr std::size_t w = B::size;
            const auto* p = static_cast<const T*>(j.x);
            const B m(mask), lim(static_cast<T>(j.limit));
            // The largest magnitude of 8 batches, then one compare: a max a load.
            for (; i + 8 * w <= j.n; i += 8 * w) {
                B a = B::load_unaligned(p + i) & m;
                for (std::size_t k = 1; k < 8; ++k) a = xsimd::max(a, B::load_unaligned(p + i + k * w) & m);
                if (xsimd::any(a > lim)) break;
            }
        };
        if (j.from == float_storage::f32)
            scan(std::int32_t{}, std::int32_t{0x7FFFFFFF});
        else
            scan(std::int16_t{}, std::int16_t{0x7FFF});
#endif
    }
    const std::size_t width = j.from == float_storage::f32 ? 4 : 2;
    *j.first = i + first_beyond_bits(j.from, static_cast<const unsigned char*>(j.x) + i * width, j.n - i, j.limit);
}

/// n f16 or bf16 values at src to f32 at out on the active instruction set,
/// exactly (fp16_to_float, bf16_to_float; a signalling f16 NaN may come out
/// quietened).
inline void widen_to_f32(ggml::type from, const void* src, float* out, std::size_t n) {
    if (from != ggml::type::f16 && from != ggml::type::bf16)
        LOWBIT_THROW(errc::invalid_argument,
                     "widen_to_f32: the source must be F16 or BF16, not " + std::string(ggml::traits(from).name));
    if (n == 0) return;
    if (!src || !out) LOWBIT_THROW(errc::invalid_argument, "widen_to_f32: src and out must not be null");
    dispatch(widen_f32_fn{}, widen_job{from, src, out, n});
}

namespace detail::ggml_quant {

/// quantize_ggml_rows' checks; false when there is nothing to do.
inline bool check_rows(ggml::type t, const void* x, const void* dst, std::size_t rows, std::size_t n_per_row) {
    const auto tr = ggml::traits(t);
    if (!tr.quantize) LOWBIT_THROW(errc::unsupported, "lowbit cannot quantize to " + std::string(tr.name));
    if (n_per_row % tr.block_size != 0)
        LOWBIT_THROW(errc::not_divisible, "quantize_ggml_rows: a row of " + std::to_string(n_per_row) +
                                              " values is not a whole number of " + std::string(tr.name) +
                                              " blocks of " + std::to_string(tr.block_size));
    if (rows == 0 || n_per_row == 0) return false;
    if (!x || !dst) LOWBIT_THROW(errc::invalid_argument, "quantize_ggml_rows: x and dst must not be null");
    return true;
}

}  // namespace detail::ggml_quant

namespace detail::ggml_quant {

/// The largest magnitude a value quantized to type t can have: for the
/// block types ggml::largest_representable (beyond it ggml writes an infinite
/// scale or, where an fp32 intermediate overflows first, codes the value as
/// 0); for F16/BF16 the largest float that rounds to a finite value.
inline float value_limit(ggml::type t) noexcept {
    // Just below the midpoints to the next power of two, which round to even: Inf.
    if (t == ggml::type::f16) return std::bit_cast<float>(0x477FEFFFu);   // 65519.996
    if (t == ggml::type::bf16) return std::bit_cast<float>(0x7F7F7FFFu);  // 3.3961773e38
    const double l = ggml::largest_representable(t);
    return l > 0 ? static_cast<float>(l) : std::numeric_limits<float>::max();  // f32, mxfp4 (E8M0 reaches 2^127)
}

/// The float_storage of an F32, F16 or BF16 source type.
inline float_storage storage_of(ggml::type from) noexcept {
    return from == ggml::type::f32 ? float_storage::f32
           : from == ggml::type::f16 ? float_storage::f16
                                     : float_storage::bf16;
}

/// Throws for the first value of the rows that is NaN or infinite
/// (errc::non_finite) or beyond what type t can represent
/// (errc::invalid_argument), naming its row (counted from first_row) and column.
inline void check_rows_range(ggml::type t, ggml::type from, const void* x, std::size_t rows, std::size_t n_per_row,
                             std::size_t first_row) {
    const auto fs = storage_of(from);
    const float limit = value_limit(t);
    const std::size_t n = rows * n_per_row;
    std::size_t i = n;
    dispatch(range_scan_fn{}, range_scan_job{fs, x, n, lowbit::detail::limit_bits(fs, limit), &i});
    if (i == n) return;
    const float v = float_at(fs, x, i);
    const std::string where = "row " + std::to_string(first_row + i / n_per_row) + ", column " +
                              std::to_string(i % n_per_row);
    using lowbit::detail::value_string;
    if (!std::isfinite(v)) LOWBIT_THROW(errc::non_finite, where + " is " + value_string(v));
    LOWBIT_THROW(errc::invalid_argument, where + ": " + value_string(v) + " is beyond " +
                                             std::string(ggml::traits(t).name) + "'s range (largest magnitude " +
                                             value_string(limit) + ")");
}

/// Throws when a quantized block holds a value ggml_validate_row_data
/// rejects (an fp16 scale that overflowed, say), naming the row, the block's
/// columns and its largest input value.
inline void check_quantized_rows(ggml::type t, const void* dst, std::size_t rows, std::size_t n_per_row,
                                 ggml::type from, const void* x, std::size_t first_row) {
    // Where the range bound alone keeps every field finite, there is nothing
    // to check: d = max/-8 or /-16 or amax/127 of values within value_limit is
    // at most 65504, TQ's d = amax likewise, MXFP4's exponent stays below 0xFF,
    // and F32/F16/BF16 elements within it stay finite. Q4_1/Q5_1 (an fp16 min)
    // and the searched types are checked.
    using ggml::type;
    if (t == type::q4_0 || t == type::q5_0 || t == type::q8_0 || t == type::tq1_0 || t == type::tq2_0 ||
        t == type::mxfp4 || t == type::f32 || t == type::f16 || t == type::bf16)
        return;
    const std::size_t rb = ggml::row_bytes(t, n_per_row);
    const auto bad = ggml::find_invalid_block(t, {static_cast<const std::byte*>(dst), rows * rb});
    if (!bad) return;
    const auto fs = storage_of(from);
    const std::size_t bs = ggml::traits(t).block_size, per_row = n_per_row / bs;
    const std::size_t r = bad->block / per_row, c0 = bad->block % per_row * bs;
    std::size_t at = c0;
    float mx = -1;
    for (std::size_t c = c0; c < c0 + bs; ++c) {
        const float v = float_at(fs, x, r * n_per_row + c);
        if (std::fabs(v) > mx) mx = std::fabs(v), at = c;
    }
    const std::string name(ggml::traits(t).name);
    using lowbit::detail::value_string;
    const std::string v = value_string(float_at(fs, x, r * n_per_row + at));
    LOWBIT_THROW(errc::invalid_argument,
                 "row " + std::to_string(first_row + r) + ", columns " + std::to_string(c0) + "-" +
                     std::to_string(c0 + bs - 1) + ": a " + name + " block cannot hold these values (its " +
                     std::string(bad->field) + " would be " + value_string(bad->value) +
                     "; the largest is " + v + " at column " + std::to_string(at) + ")");
}

/// quantize_ggml_rows with row numbers in messages counted from first_row
/// (for a caller that passes a slice of a larger tensor).
inline void quantize_rows_from(ggml::type t, ggml::type from, const void* x, void* dst, std::size_t rows,
                               std::size_t n_per_row, const float* imatrix, std::size_t first_row) {
    if (from != ggml::type::f32 && from != ggml::type::f16 && from != ggml::type::bf16)
        LOWBIT_THROW(errc::invalid_argument, "quantize_ggml_rows: the source rows must be F32, F16 or BF16, not " +
                                                 std::string(ggml::traits(from).name));
    if (!check_rows(t, x, dst, rows, n_per_row)) return;
    if (rows > SIZE_MAX / n_per_row)
        LOWBIT_THROW(errc::invalid_argument, "quantize_ggml_rows: " + std::to_string(rows) + " rows of " +
                                                 std::to_string(n_per_row) + " values overflow size_t");
    const bool simd = quantize_ggml_simd_supports(t, imatrix != nullptr) && active_isa() != isa::scalar;
    const std::size_t in_row = n_per_row * (from == ggml::type::f32 ? 4 : 2), out_row = ggml::row_bytes(t, n_per_row);
    // A slice of about 256 KB of input at a time is quantized, then scanned and
    // its blocks checked while it is in cache (on an error dst holds no
    // defined result).
    const std::size_t slice = std::min(rows, std::max<std::size_t>(1, (std::size_t{1} << 16) / n_per_row));
    // f16/bf16 rows are widened about 16 KB of f32 (at least a row) at a time: they stay in L1.
    const std::size_t chunk = std::min(slice, std::max<std::size_t>(1, 4096 / n_per_row));
    struct aligned_delete {
        void operator()(float* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
    };
    std::unique_ptr<float[], aligned_delete> scratch;
    if (from != ggml::type::f32)
        scratch.reset(static_cast<float*>(::operator new[](chunk * n_per_row * sizeof(float), std::align_val_t{64})));
    for (std::size_t r = 0; r < rows; r += slice) {
        const std::size_t n = std::min(slice, rows - r);
        const void* xs = static_cast<const unsigned char*>(x) + r * in_row;
        void* ds = static_cast<unsigned char*>(dst) + r * out_row;
        if (from == ggml::type::f32) {
            const auto* xf = static_cast<const float*>(xs);
            if (simd)
                dispatch(quantize_ggml_fn{}, ggml_quantize_job{t, xf, ds, n, n_per_row, imatrix});
            else
                ggml::quantize_rows(t, xf, ds, n, n_per_row, imatrix);
        } else {
            ggml_quantize_job j{t, nullptr, ds, n, n_per_row, imatrix, from, xs, scratch.get(), chunk};
            if (simd)
                dispatch(quantize_ggml_fn{}, j);
            else
                quantize_ggml_fn{}(scalar{}, j);
        }
        // After the kernel, which streamed the slice in (with its arithmetic
        // overlapping the loads), the scan reads it from cache.
        check_rows_range(t, from, xs, n, n_per_row, first_row + r);
        check_quantized_rows(t, ds, n, n_per_row, from, xs, first_row + r);
    }
}

}  // namespace detail::ggml_quant

/// ggml::quantize_rows, with the K-quant searches on the active instruction
/// set: the same bytes, faster. Types and paths without a SIMD kernel (see
/// quantize_ggml_simd_supports) and the scalar ISA run ggml::quantize_rows.
/// A NaN or infinity in x is errc::non_finite naming its row and column; a
/// value beyond what the type can represent (detail::ggml_quant::value_limit), or a
/// block whose parameters it cannot store (an fp16 scale beyond 65504), is
/// errc::invalid_argument naming the row, the column(s) and the value, where
/// ggml would write a block its own ggml_validate_row_data rejects or code
/// the value silently as 0.
inline void quantize_ggml_rows(ggml::type t, const float* x, void* dst, std::size_t rows, std::size_t n_per_row,
                               const float* imatrix = nullptr) {
    detail::ggml_quant::quantize_rows_from(t, ggml::type::f32, x, dst, rows, n_per_row, imatrix, 0);
}

/// quantize_ggml_rows from rows of `from` (f32, f16 or bf16; x needs no
/// alignment): the same bytes as quantizing the rows converted to f32 first,
/// with each few rows widened in a small buffer on the way, so the input is
/// read once at its own width. What `lowbit quantize` runs on each tensor.
inline void quantize_ggml_rows(ggml::type t, ggml::type from, const void* x, void* dst, std::size_t rows,
                               std::size_t n_per_row, const float* imatrix = nullptr) {
    detail::ggml_quant::quantize_rows_from(t, from, x, dst, rows, n_per_row, imatrix, 0);
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

#define LOWBIT_KERNELS_GGML_QUANTIZE(EXT, ARCH)                                   \
    EXT template void lowbit::kernels::quantize_ggml_fn::operator()<ARCH>(      \
        ARCH, const lowbit::kernels::ggml_quantize_job&) const noexcept;        \
    EXT template void lowbit::kernels::widen_f32_fn::operator()<ARCH>(ARCH,     \
                                                                      const lowbit::kernels::widen_job&) const noexcept; \
    EXT template void lowbit::kernels::range_scan_fn::operator()<ARCH>(         \
        ARCH, const lowbit::kernels::range_scan_job&) const noexcept;
LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_GGML_QUANTIZE)
