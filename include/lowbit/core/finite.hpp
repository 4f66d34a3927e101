#pragma once
// Finding the first NaN, infinity or value beyond a bound in a run of f32,
// f16 or bf16 values, by their magnitude bits: the one check every quantize
// entry point makes before it codes anything.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../detail/config.hpp"
#include "numeric.hpp"

LOWBIT_NAMESPACE_BEGIN

/// Storage types a float tensor arrives in.
enum class float_storage : std::uint8_t { f32, f16, bf16 };

namespace detail {

// The magnitude bits of the largest value of type t not above `limit` (>= 0).
inline std::uint32_t limit_bits(float_storage t, float limit) noexcept {
    if (t == float_storage::f32) return std::bit_cast<std::uint32_t>(limit);
    const std::uint16_t top = t == float_storage::f16 ? 0x7BFF : 0x7F7F;  // the largest finite
    std::uint16_t lo = 0, hi = top;  // the largest code whose value is <= limit
    if ((t == float_storage::f16 ? fp16_to_float(hi) : bf16_to_float(hi)) <= limit) return hi;
    while (lo < hi) {
        const auto mid = static_cast<std::uint16_t>((lo + hi + 1) / 2);
        if ((t == float_storage::f16 ? fp16_to_float(mid) : bf16_to_float(mid)) <= limit) lo = mid;
        else hi = static_cast<std::uint16_t>(mid - 1);
    }
    return lo;
}

}  // namespace detail

/// Index of the first of `n` values of type `t` at `data` (any alignment)
/// whose magnitude bits (sign cleared) exceed `limit`, or `n`: the scalar
/// form of the scan (kernels have a vectorised one). 64 values at a time are
/// tested without a branch (the compiler vectorises the OR), and searched for
/// the first hit only when they hold one.
inline std::size_t first_beyond_bits(float_storage t, const void* data, std::size_t n, std::uint32_t limit) noexcept {
    const auto scan = [&](auto lane, auto abs_mask) {
        using U = decltype(lane);
        const auto* b = static_cast<const unsigned char*>(data);
        const auto at = [&](std::size_t i) {
            U u;
            std::memcpy(&u, b + sizeof(U) * i, sizeof(U));
            return static_cast<std::uint32_t>(u & abs_mask);
        };
        std::size_t i = 0;
        for (; i + 64 <= n; i += 64) {
            unsigned any = 0;
            for (std::size_t k = 0; k < 64; ++k) any |= static_cast<unsigned>(at(i + k) > limit);
            if (any) break;
        }
        for (; i < n; ++i)
            if (at(i) > limit) return i;
        return n;
    };
    return t == float_storage::f32 ? scan(std::uint32_t{}, std::uint32_t{0x7FFFFFFF})
                                   : scan(std::uint16_t{}, std::uint16_t{0x7FFF});
}

/// Index of the first of `n` values of type `t` at `data` (any alignment)
/// that is NaN, infinite or of magnitude above `limit`, or `n` when none is.
inline std::size_t first_beyond(float_storage t, const void* data, std::size_t n, float limit) noexcept {
    return first_beyond_bits(t, data, n, detail::limit_bits(t, limit));
}

/// Index of the first NaN or infinity among `n` values of type `t` at `data`
/// (any alignment), or `n` when all are finite.
inline std::size_t first_non_finite(float_storage t, const void* data, std::size_t n) noexcept {
    return first_beyond(t, data, n, std::numeric_limits<float>::max());
}

/// The value at index i of a float run of type `t`, widened to float.
inline float float_at(float_storage t, const void* data, std::size_t i) noexcept {
    const auto* b = static_cast<const unsigned char*>(data);
    if (t == float_storage::f32) return load_as<float>(b + i * 4);
    const auto h = load_as<std::uint16_t>(b + i * 2);
    return t == float_storage::f16 ? fp16_to_float(h) : bf16_to_float(h);
}

LOWBIT_NAMESPACE_END
