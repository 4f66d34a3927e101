#pragma once
// detail::lane_ops for xsimd batches of float: the lane operations the rules
// of scheme/encode_rules.hpp use (their float form is there), so that the
// encode and dequantize kernels run the same templates as the schemes.

#include <cstdint>

#include "../detail/xsimd_compat.hpp"
#include "../scheme/encode_rules.hpp"

LOWBIT_NAMESPACE_BEGIN
LOWBIT_SIMD_WARNINGS_OFF
namespace detail {

template <class A>
struct lane_ops<xsimd::batch<float, A>> {
    using V = xsimd::batch<float, A>;
    using uint = xsimd::batch<std::uint32_t, A>;
    using mask = xsimd::batch_bool<float, A>;
    using umask = xsimd::batch_bool<std::uint32_t, A>;
    static LOWBIT_FORCE_INLINE V select(const mask& m, const V& a, const V& b) noexcept { return xsimd::select(m, a, b); }
    static LOWBIT_FORCE_INLINE uint select(const umask& m, const uint& a, const uint& b) noexcept {
        return simd::select_int(m, a, b);
    }
    static LOWBIT_FORCE_INLINE V round_even(const V& v) noexcept { return xsimd::nearbyint(v); }
    /// roundf: v - trunc(v) is exact below 2^23, and above it v is whole.
    static LOWBIT_FORCE_INLINE V round_away(const V& v) noexcept {
        const V t = xsimd::trunc(v);
        return xsimd::select(xsimd::abs(v - t) >= V(0.5f), t + xsimd::select(v < V(0.0f), V(-1.0f), V(1.0f)), t);
    }
    static LOWBIT_FORCE_INLINE V trunc(const V& v) noexcept { return xsimd::trunc(v); }
    static LOWBIT_FORCE_INLINE V min(const V& a, const V& b) noexcept { return xsimd::min(a, b); }
    static LOWBIT_FORCE_INLINE V max(const V& a, const V& b) noexcept { return xsimd::max(a, b); }
    static LOWBIT_FORCE_INLINE uint min(const uint& a, const uint& b) noexcept {
        return simd::select_int(a < b, a, b);
    }
    static LOWBIT_FORCE_INLINE V abs(const V& v) noexcept { return xsimd::abs(v); }
    static LOWBIT_FORCE_INLINE V div(const V& a, const V& b) noexcept { return simd::div(a, b); }
    static LOWBIT_FORCE_INLINE mask is_inf(const V& v) noexcept { return xsimd::abs(v) == V(INFINITY); }
    static LOWBIT_FORCE_INLINE bool any(const mask& m) noexcept { return xsimd::any(m); }
    static LOWBIT_FORCE_INLINE uint bits(const V& v) noexcept { return simd::bitcast<std::uint32_t>(v); }
    static LOWBIT_FORCE_INLINE V from_bits(const uint& v) noexcept { return simd::bitcast<float>(v); }
    static LOWBIT_FORCE_INLINE V round_bf16(const V& v) noexcept { return simd::bitcast<float>(simd::bf16_bits(v) << 16); }
    /// float_to_fp16 then fp16_to_float (core/numeric.hpp): round to nearest
    /// even at fp16's precision, subnormal halves included, Inf from 65520 up,
    /// NaN kept quiet.
    static LOWBIT_FORCE_INLINE V round_f16(const V& v) noexcept {
        const uint b = bits(v);
        const uint a = b & uint(0x7FFFFFFFu);
        // Normal halves: the mantissa rounded to 10 bits in place (a carry
        // bumps the exponent, which is right).
        const uint normal = (a + uint(0xFFFu) + ((a >> 13) & uint(1u))) & uint(0xFFFFE000u);
        // Below 2^-14: to a multiple of 2^-24, which adding 0.5 (whose ulp is
        // 2^-24) rounds to, half to even.
        const uint sub = bits((from_bits(a) + V(0.5f)) - V(0.5f));
        uint r = select(a < uint(0x38800000u), sub, normal);
        r = select(a >= uint(0x477FF000u), uint(0x7F800000u), r);
        r = select(a > uint(0x7F800000u), (a & uint(0xFFFFE000u)) | uint(0x00400000u), r);
        return from_bits(r | (b & uint(0x80000000u)));
    }
    static LOWBIT_FORCE_INLINE V to_float(const uint& v) noexcept {
        return xsimd::to_float(simd::bitcast<std::int32_t>(v));  // codes < 2^8
    }
    static LOWBIT_FORCE_INLINE V clamp_code(const V& v, float hi) noexcept {
        return xsimd::select(v > V(0.0f), xsimd::min(v, V(hi)), V(0.0f));
    }
};

}  // namespace detail
LOWBIT_SIMD_WARNINGS_ON
LOWBIT_NAMESPACE_END
