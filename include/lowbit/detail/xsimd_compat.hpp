#pragma once
// The xsimd API differences between Debian's 8.1 and the 13/14 that vcpkg and
// Conan ship, in one place. Kernels call these instead of the renamed functions.

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include <xsimd/xsimd.hpp>

#include "config.hpp"

#ifndef XSIMD_VERSION_MAJOR
#error "lowbit: cannot tell the xsimd version"
#endif

LOWBIT_NAMESPACE_BEGIN
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::simd {

/// Horizontal sum of a batch (`hadd` in 8.x, `reduce_add` from 9.0).
template <class T, class A>
inline T reduce_add(const xsimd::batch<T, A>& b) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
    return xsimd::reduce_add(b);
#else
    return xsimd::hadd(b);
#endif
}

/// Reinterpret the bits of a batch as another element type of the same width
/// (`bitwise_cast<batch<U,A>>` before 11.0, `bitwise_cast<U>` after).
template <class U, class T, class A>
inline xsimd::batch<U, A> bitcast(const xsimd::batch<T, A>& b) noexcept {
#if XSIMD_VERSION_MAJOR >= 11
    return xsimd::bitwise_cast<U>(b);
#else
    return xsimd::bitwise_cast<xsimd::batch<U, A>>(b);
#endif
}

/// Max of a batch's lanes (no NaN among them).
template <class T, class A>
inline T reduce_max(const xsimd::batch<T, A>& b) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
    return xsimd::reduce_max(b);
#else
    // 8.x has no reduce_max. For float, halve the batch in registers as
    // xsimd 9+ does: storing it and reading the lanes back one at a time
    // stalls store forwarding, and made quantize's group statistics pass
    // 1.5x slower (int4-g128-sym, 11008 x 4096, AVX-512, EPYC 2.6 GHz).
    if constexpr (std::is_same_v<T, float>) {
#if XSIMD_WITH_AVX512F
        if constexpr (std::is_base_of_v<xsimd::avx512f, A>) return _mm512_reduce_max_ps(b);
#endif
#if XSIMD_WITH_AVX
        if constexpr (std::is_base_of_v<xsimd::avx, A>) {
            __m128 m = _mm_max_ps(_mm256_castps256_ps128(b), _mm256_extractf128_ps(b, 1));
            m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
        }
#endif
#if XSIMD_WITH_SSE2
        if constexpr (std::is_base_of_v<xsimd::sse2, A>) {
            __m128 m = b;
            m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
        }
#endif
#if XSIMD_WITH_NEON64
        if constexpr (std::is_same_v<A, xsimd::neon64>) return vmaxvq_f32(b);
#endif
    }
    alignas(64) T buf[xsimd::batch<T, A>::size];
    b.store_aligned(buf);
    T m = buf[0];
    for (std::size_t i = 1; i < xsimd::batch<T, A>::size; ++i) m = buf[i] > m ? buf[i] : m;
    return m;
#endif
}

}  // namespace detail::simd
LOWBIT_SIMD_WARNINGS_ON
LOWBIT_NAMESPACE_END

LOWBIT_NAMESPACE_BEGIN
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::simd {

/// The low and high halves of a float batch widened to double batches (no
/// xsimd version converts between batches of different lane counts). In
/// registers on x86 and AArch64; elsewhere through memory. Measured: the
/// clipping search's candidate scoring (int4-g128-mse, 11008 x 4096, AVX-512,
/// EPYC 2.6 GHz) at 28 Mw/s through memory (a store-forwarding stall per
/// batch), 61 Mw/s in registers.
template <bool High, class A>
inline xsimd::batch<double, A> widen_half(const xsimd::batch<float, A>& v) noexcept {
#if XSIMD_WITH_AVX512F
    if constexpr (std::is_base_of_v<xsimd::avx512f, A>)
        return _mm512_cvtps_pd(High ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))
                                    : _mm512_castps512_ps256(v));
#endif
#if XSIMD_WITH_AVX
    if constexpr (std::is_base_of_v<xsimd::avx, A>)
        return _mm256_cvtps_pd(High ? _mm256_extractf128_ps(v, 1) : _mm256_castps256_ps128(v));
#endif
#if XSIMD_WITH_SSE2
    if constexpr (std::is_base_of_v<xsimd::sse2, A>) return _mm_cvtps_pd(High ? _mm_movehl_ps(v, v) : __m128(v));
#endif
#if XSIMD_WITH_NEON64
    if constexpr (std::is_same_v<A, xsimd::neon64>)
        return High ? vcvt_high_f64_f32(v) : vcvt_f64_f32(vget_low_f32(v));
#endif
    alignas(64) float buf[xsimd::batch<float, A>::size];
    v.store_aligned(buf);
    return xsimd::batch<double, A>::load_unaligned(buf + (High ? xsimd::batch<double, A>::size : 0));
}
template <class A>
inline xsimd::batch<double, A> widen_low(const xsimd::batch<float, A>& v) noexcept {
    return widen_half<false>(v);
}
template <class A>
inline xsimd::batch<double, A> widen_high(const xsimd::batch<float, A>& v) noexcept {
    return widen_half<true>(v);
}

/// IEEE division and square root of float batches. xsimd 8.1's neon64 has
/// neither for float: it inherits 32-bit NEON's reciprocal (square root)
/// estimate refined by Newton steps, which is not correctly rounded and gives
/// 1 / -tiny = +inf for a subnormal divisor. AArch64 has the exact instructions.
template <class T, class A>
inline xsimd::batch<T, A> div(const xsimd::batch<T, A>& a, const xsimd::batch<T, A>& b) noexcept {
#if XSIMD_WITH_NEON64
    if constexpr (std::is_same_v<A, xsimd::neon64> && std::is_same_v<T, float>)
        return xsimd::batch<T, A>(vdivq_f32(a, b));
    else
#endif
        return a / b;
}

template <class T, class A>
inline xsimd::batch<T, A> sqrt(const xsimd::batch<T, A>& a) noexcept {
#if XSIMD_WITH_NEON64
    if constexpr (std::is_same_v<A, xsimd::neon64> && std::is_same_v<T, float>)
        return xsimd::batch<T, A>(vsqrtq_f32(a));
    else
#endif
        return xsimd::sqrt(a);
}

/// select() on integer batches. xsimd 8.1's AVX-512BW select switches on the
/// element size at run time, so all its branches are compiled, and at -O0 g++
/// rejects the 8- and 16-bit ones for 32-bit batches: blend directly there.
template <class T, class A>
inline xsimd::batch<T, A> select_int(const xsimd::batch_bool<T, A>& cond, const xsimd::batch<T, A>& a,
                                     const xsimd::batch<T, A>& b) noexcept {
#if XSIMD_VERSION_MAJOR < 9 && defined(__AVX512BW__)
    if constexpr (std::is_same_v<A, xsimd::avx512bw> && sizeof(T) == 4)
        return xsimd::batch<T, A>(_mm512_mask_blend_epi32(cond, b, a));
    else if constexpr (std::is_same_v<A, xsimd::avx512bw> && sizeof(T) == 8)
        return xsimd::batch<T, A>(_mm512_mask_blend_epi64(cond, b, a));
    else
#endif
        return xsimd::select(cond, a, b);
}

/// Lane i of the result is lane i ^ M of x (M a power of two below the lane
/// count): one step of a butterfly across lanes. xsimd's swizzle takes
/// `make_batch_constant<batch<U, A>, G>()` before 13.0 and
/// `make_batch_constant<U, G, A>()` from 13.0.
template <std::size_t M, class T, class A>
inline xsimd::batch<T, A> swap_lanes(const xsimd::batch<T, A>& x) noexcept {
    static_assert(sizeof(T) == 4 && M > 0 && M < xsimd::batch<T, A>::size && (M & (M - 1)) == 0);
    struct xor_index {
        static constexpr std::uint32_t get(std::size_t i, std::size_t) noexcept { return static_cast<std::uint32_t>(i ^ M); }
    };
#if XSIMD_VERSION_MAJOR < 13
    return xsimd::swizzle(x, xsimd::make_batch_constant<xsimd::batch<std::uint32_t, A>, xor_index>());
#else
    return xsimd::swizzle(x, xsimd::make_batch_constant<std::uint32_t, xor_index, A>());
#endif
}

/// float_to_bf16 (core/numeric.hpp) on every lane: the bf16 bits in the low
/// half of each 32-bit lane, rounded to nearest even, NaN kept quiet.
template <class A>
inline xsimd::batch<std::uint32_t, A> bf16_bits(const xsimd::batch<float, A>& v) noexcept {
    using u32 = xsimd::batch<std::uint32_t, A>;
    using i32 = xsimd::batch<std::int32_t, A>;
    const u32 x = bitcast<std::uint32_t>(v);
    const u32 rounded = (x + u32(0x7FFFu) + ((x >> 16) & u32(1u))) >> 16;
    const u32 nan = (x >> 16) | u32(0x40u);
    const i32 ax = bitcast<std::int32_t>(x & u32(0x7FFFFFFFu));
    return bitcast<std::uint32_t>(select_int(ax > i32(0x7F800000), bitcast<std::int32_t>(nan), bitcast<std::int32_t>(rounded)));
}

/// Per 32-bit lane, the sum of the four products of the int8 values in x's
/// lane and y's (each sign-extended by a pair of shifts): an int8 dot product
/// on any batch of int32, four products a lane.
template <class A>
inline xsimd::batch<std::int32_t, A> dot4_i8(const xsimd::batch<std::int32_t, A>& x,
                                             const xsimd::batch<std::int32_t, A>& y) noexcept {
    return ((x << 24) >> 24) * ((y << 24) >> 24) + ((x << 16) >> 24) * ((y << 16) >> 24) +
           ((x << 8) >> 24) * ((y << 8) >> 24) + (x >> 24) * (y >> 24);
}

}  // namespace detail::simd
LOWBIT_SIMD_WARNINGS_ON
LOWBIT_NAMESPACE_END
