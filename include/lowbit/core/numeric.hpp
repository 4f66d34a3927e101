#pragma once
// Exact, constexpr conversions between float and the narrow number formats
// quantized weights use. Round-to-nearest-even everywhere.

#include <bit>
#include <cstdint>

#include "../detail/config.hpp"

LOWBIT_NAMESPACE_BEGIN

// ---- IEEE binary16 -------------------------------------------------------
// Overflow rounds to +-Inf; NaN stays NaN (quiet, sign kept).
constexpr std::uint16_t float_to_fp16(float f) noexcept {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    const std::uint32_t sign = (x >> 16) & 0x8000u;
    const std::uint32_t ax = x & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u | ((ax >> 13) & 0x3FFu));
    if (ax >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520: Inf
    if (ax < 0x38800000u) {  // below 2^-14: fp16 subnormal or zero
        if (ax < 0x33000000u) return static_cast<std::uint16_t>(sign);  // <= 2^-25 rounds to 0
        const std::uint32_t e = ax >> 23;
        const std::uint32_t m = (ax & 0x7FFFFFu) | 0x800000u;
        const std::uint32_t shift = 126u - e;  // 14..24
        std::uint32_t r = m >> shift;
        const std::uint32_t rem = m & ((1u << shift) - 1u);
        const std::uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return static_cast<std::uint16_t>(sign | r);
    }
    std::uint32_t r = ax - 0x38000000u;  // rebias 127 -> 15
    const std::uint32_t lsb = (r >> 13) & 1u;
    r = (r + 0xFFFu + lsb) >> 13;
    return static_cast<std::uint16_t>(sign | r);
}

constexpr float fp16_to_float(std::uint16_t h) noexcept {
    const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
    const std::uint32_t e = (h >> 10) & 0x1Fu;
    std::uint32_t m = h & 0x3FFu;
    if (e == 0x1F) return std::bit_cast<float>(sign | 0x7F800000u | (m << 13));
    if (e != 0) return std::bit_cast<float>(sign | ((e + 112u) << 23) | (m << 13));
    if (m == 0) return std::bit_cast<float>(sign);
    int ex = 113;  // normalise the subnormal
    while (!(m & 0x400u)) {
        m <<= 1;
        --ex;
    }
    return std::bit_cast<float>(sign | (static_cast<std::uint32_t>(ex) << 23) | ((m & 0x3FFu) << 13));
}

// ---- bfloat16 ------------------------------------------------------------
// The top half of a float, rounded to nearest even; NaN stays a quiet NaN.
constexpr std::uint16_t float_to_bf16(float f) noexcept {
    const std::uint32_t x = std::bit_cast<std::uint32_t>(f);
    if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<std::uint16_t>((x >> 16) | 0x40u);
    return static_cast<std::uint16_t>((x + 0x7FFFu + ((x >> 16) & 1u)) >> 16);
}

constexpr float bf16_to_float(std::uint16_t b) noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(b) << 16);
}

LOWBIT_NAMESPACE_END
