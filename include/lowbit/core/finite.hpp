#pragma once
// Finding the first NaN or infinity in a run of f32, f16 or bf16 values, by
// their exponent bits: the one check every quantize entry point makes before
// it codes anything.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "../detail/config.hpp"
#include "numeric.hpp"

LOWBIT_NAMESPACE_BEGIN

/// Storage types a float tensor arrives in.
enum class float_storage : std::uint8_t { f32, f16, bf16 };

namespace detail {

// A block of 64 is scanned without a branch (the compiler vectorises the OR),
// then searched for the first hit only when the block has one.
template <class U, U ExpMask>
std::size_t first_exp_all_ones(const U* p, std::size_t n) noexcept {
    std::size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        unsigned any = 0;
        for (std::size_t k = 0; k < 64; ++k) any |= static_cast<unsigned>((p[i + k] & ExpMask) == ExpMask);
        if (any) break;
    }
    for (; i < n; ++i)
        if ((p[i] & ExpMask) == ExpMask) return i;
    return n;
}

}  // namespace detail

/// Index of the first NaN or infinity among `n` values of type `t` at `data`
/// (any alignment), or `n` when all are finite.
inline std::size_t first_non_finite(float_storage t, const void* data, std::size_t n) noexcept {
    if (t == float_storage::f32) {
        // Aligned copies keep the scan free of misaligned-access UB.
        std::uint32_t buf[256];
        const auto* b = static_cast<const unsigned char*>(data);
        for (std::size_t i = 0; i < n; i += 256) {
            const std::size_t m = n - i < 256 ? n - i : 256;
            std::memcpy(buf, b + i * 4, m * 4);
            const std::size_t k = detail::first_exp_all_ones<std::uint32_t, 0x7F800000u>(buf, m);
            if (k < m) return i + k;
        }
        return n;
    }
    std::uint16_t buf[512];
    const auto* b = static_cast<const unsigned char*>(data);
    for (std::size_t i = 0; i < n; i += 512) {
        const std::size_t m = n - i < 512 ? n - i : 512;
        std::memcpy(buf, b + i * 2, m * 2);
        const std::size_t k = t == float_storage::f16
                                  ? detail::first_exp_all_ones<std::uint16_t, std::uint16_t{0x7C00}>(buf, m)
                                  : detail::first_exp_all_ones<std::uint16_t, std::uint16_t{0x7F80}>(buf, m);
        if (k < m) return i + k;
    }
    return n;
}

/// The value at index i of a float run of type `t`, widened to float.
inline float float_at(float_storage t, const void* data, std::size_t i) noexcept {
    const auto* b = static_cast<const unsigned char*>(data);
    if (t == float_storage::f32) {
        float v;
        std::memcpy(&v, b + i * 4, 4);
        return v;
    }
    std::uint16_t h;
    std::memcpy(&h, b + i * 2, 2);
    return t == float_storage::f16 ? fp16_to_float(h) : bf16_to_float(h);
}

/// "NaN", "+Inf" or "-Inf" for a non-finite value.
inline std::string non_finite_name(float v) {
    return v != v ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
}

LOWBIT_NAMESPACE_END
