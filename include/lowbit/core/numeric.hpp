#pragma once
// Exact, constexpr conversions between float and the narrow number formats
// quantized weights use. Round-to-nearest-even everywhere.

#include <bit>
#include <cstdint>
#include <cstring>

#include "../detail/config.hpp"

LOWBIT_NAMESPACE_BEGIN

/// The T stored at p, at any alignment, in host byte order (little-endian on
/// every platform ggml and GGUF run on): block fields read out of file bytes.
template <class T>
inline T load_as(const void* p) noexcept {
    T v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// ---- IEEE binary16 -------------------------------------------------------
// Overflow rounds to +-Inf; NaN stays NaN (quiet, sign kept). Arch: the
// instruction-set tag of a kernel that calls it (one symbol per ISA, see
// kernels/dispatch.hpp); other callers leave it out.
template <class Arch = void>
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

template <class Arch = void>
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

// ---- Narrow formats shared by FP8, MX and NVFP4 --------------------------
// Conventions for all of them:
// * Rounding is to nearest, ties to the even code, into subnormals as well.
// * The sign is kept for zero results (-0.0f -> the negative-zero code).
// * Six- and four-bit codes sit in the low bits of the byte (sign = bit 5 for
//   FP6, bit 3 for FP4); decoders ignore the unused high bits.
// * fp8 NaN codes decode to the canonical quiet NaN with the code's sign and
//   encoders emit one canonical NaN code per sign, as ml_dtypes does, so a NaN
//   payload is not carried through.

namespace detail {

// 2^k as a float, for k in the normal range.
constexpr float pow2f(int k) noexcept {
    return std::bit_cast<float>(static_cast<std::uint32_t>(k + 127) << 23);
}

// Rounds the magnitude bits `ax` (finite or Inf, sign cleared) to the unsigned
// code of a format with `mbits` mantissa bits and exponent bias `bias`, as if
// the exponent range had no top. The caller compares the result against the
// format's largest finite code to detect overflow, which keeps the tie at the
// overflow boundary governed by the same even-code rule as every other tie.
template <int mbits, int bias>
constexpr std::uint32_t round_to_code(std::uint32_t ax) noexcept {
    static_assert(mbits >= 0 && mbits < 23 && bias > 0 && bias < 127);
    constexpr std::uint32_t min_normal = static_cast<std::uint32_t>(128 - bias) << 23;
    constexpr int drop = 23 - mbits;
    if (ax >= min_normal) {
        // Rebias; the dropped mantissa bits are then rounded in place and a
        // carry out of the mantissa bumps the exponent, which is exactly right.
        std::uint32_t r = ax - (static_cast<std::uint32_t>(127 - bias) << 23);
        r += ((1u << (drop - 1)) - 1u) + ((r >> drop) & 1u);
        return r >> drop;
    }
    // Subnormal target: count in units of the smallest subnormal 2^(1-bias-mbits).
    const std::uint32_t e = ax >> 23;
    const std::uint32_t m = e ? ((ax & 0x7FFFFFu) | 0x800000u) : (ax & 0x7FFFFFu);
    const int shift = 151 - bias - mbits - static_cast<int>(e ? e : 1u);
    if (shift > 24) return 0;  // below half the smallest subnormal (m < 2^24)
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return r;  // may equal the smallest normal code, which is then correct too
}

// Value of an unsigned finite code (no specials handled here).
template <int mbits, int bias>
constexpr float code_to_magnitude(std::uint32_t code) noexcept {
    const std::uint32_t e = code >> mbits;
    const std::uint32_t m = code & ((1u << mbits) - 1u);
    if (e == 0) return static_cast<float>(m) * pow2f(1 - bias - mbits);  // exact: m is tiny
    return std::bit_cast<float>(((e + 127u - bias) << 23) | (m << (23 - mbits)));
}

constexpr float with_sign(float magnitude, bool negative) noexcept {
    return std::bit_cast<float>(std::bit_cast<std::uint32_t>(magnitude) | (negative ? 0x80000000u : 0u));
}

// FP6/FP4 encoding: no Inf or NaN in the format, so finite overflow and Inf
// saturate to the largest magnitude, and NaN becomes +0.
template <int ebits, int mbits, int bias>
constexpr std::uint8_t encode_finite_only(float x) noexcept {
    constexpr std::uint32_t max_code = (1u << (ebits + mbits)) - 1u;
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
    const std::uint32_t ax = bits & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return 0;
    const std::uint32_t sign = (bits >> 31) << (ebits + mbits);
    std::uint32_t r = round_to_code<mbits, bias>(ax);
    if (r > max_code) r = max_code;
    return static_cast<std::uint8_t>(sign | r);
}

template <int ebits, int mbits, int bias>
constexpr float decode_finite_only(std::uint8_t c) noexcept {
    constexpr std::uint32_t mag_mask = (1u << (ebits + mbits)) - 1u;
    const bool negative = (c >> (ebits + mbits)) & 1u;
    return with_sign(code_to_magnitude<mbits, bias>(c & mag_mask), negative);
}

/// An 8-bit float's code of x (M mantissa bits, exponent bias Bias): a NaN
/// gives `nan`, a magnitude rounding past `max_code` gives `overflow`, or
/// max_code when saturating; the sign bit is x's.
template <int M, int Bias>
constexpr std::uint8_t float_to_fp8(float x, bool saturate, std::uint32_t nan, std::uint32_t max_code,
                                    std::uint32_t overflow) noexcept {
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
    const std::uint32_t sign = (bits >> 24) & 0x80u;
    const std::uint32_t ax = bits & 0x7FFFFFFFu;
    if (ax > 0x7F800000u) return static_cast<std::uint8_t>(sign | nan);
    const std::uint32_t r = round_to_code<M, Bias>(ax);
    if (r > max_code) return static_cast<std::uint8_t>(sign | (saturate ? max_code : overflow));
    return static_cast<std::uint8_t>(sign | r);
}

}  // namespace detail

// ---- FP8 E4M3FN (OCP) ----------------------------------------------------
// Bias 7, max 448 = S.1111.110, S.1111.111 is NaN, no Inf.
// Default (as ml_dtypes float8_e4m3fn): overflow and +-Inf give NaN with the
// input's sign; 464, the tie between 448 and the would-be 480, goes to the even
// code 448, anything above it is NaN. saturate = true clamps finite overflow
// and Inf to +-448. NaN input gives NaN with its sign in both modes.
constexpr std::uint8_t float_to_fp8_e4m3(float x, bool saturate = false) noexcept {
    return detail::float_to_fp8<3, 7>(x, saturate, 0x7Fu, 0x7Eu, 0x7Fu);
}

constexpr float fp8_e4m3_to_float(std::uint8_t c) noexcept {
    const bool negative = c & 0x80u;
    if ((c & 0x7Fu) == 0x7Fu) return std::bit_cast<float>(negative ? 0xFFC00000u : 0x7FC00000u);
    return detail::with_sign(detail::code_to_magnitude<3, 7>(c & 0x7Fu), negative);
}

// ---- FP8 E5M2 ------------------------------------------------------------
// Bias 15, max 57344, IEEE-style Inf (S.11111.00) and NaN (S.11111.xx, xx != 0).
// Default (as ml_dtypes float8_e5m2): overflow gives +-Inf; 61440, the tie
// between 57344 and 65536, goes to the even code, i.e. Inf. saturate = true
// clamps finite overflow and Inf to +-57344. NaN gives S.11111.10 in both modes.
constexpr std::uint8_t float_to_fp8_e5m2(float x, bool saturate = false) noexcept {
    return detail::float_to_fp8<2, 15>(x, saturate, 0x7Eu, 0x7Bu, 0x7Cu);
}

constexpr float fp8_e5m2_to_float(std::uint8_t c) noexcept {
    const bool negative = c & 0x80u;
    const std::uint32_t mag = c & 0x7Fu;
    if (mag == 0x7Cu) return std::bit_cast<float>(negative ? 0xFF800000u : 0x7F800000u);
    if (mag > 0x7Cu) return std::bit_cast<float>(negative ? 0xFFC00000u : 0x7FC00000u);
    return detail::with_sign(detail::code_to_magnitude<2, 15>(mag), negative);
}

// ---- FP6 and FP4 (OCP MX elements) ---------------------------------------
// These formats have no Inf or NaN. Finite values past the largest magnitude
// and +-Inf saturate to +-max, as ml_dtypes float6_*/float4_e2m1fn do.
// NaN input becomes +0: there is nothing to signal with, and zero is the value
// that does least harm inside a dot product. (ml_dtypes also returns a zero
// code for NaN, but the one with the sign opposite to the NaN's sign bit.)

// E3M2: bias 3, max 28, min normal 0.25, subnormal step 0.0625.
constexpr std::uint8_t float_to_fp6_e3m2(float x) noexcept { return detail::encode_finite_only<3, 2, 3>(x); }
constexpr float fp6_e3m2_to_float(std::uint8_t c) noexcept { return detail::decode_finite_only<3, 2, 3>(c); }

// E2M3: bias 1, max 7.5, min normal 1, subnormal step 0.125.
constexpr std::uint8_t float_to_fp6_e2m3(float x) noexcept { return detail::encode_finite_only<2, 3, 1>(x); }
constexpr float fp6_e2m3_to_float(std::uint8_t c) noexcept { return detail::decode_finite_only<2, 3, 1>(c); }

// E2M1: bias 1, codes 0..7 = 0, 0.5, 1, 1.5, 2, 3, 4, 6.
constexpr std::uint8_t float_to_fp4_e2m1(float x) noexcept { return detail::encode_finite_only<2, 1, 1>(x); }
constexpr float fp4_e2m1_to_float(std::uint8_t c) noexcept { return detail::decode_finite_only<2, 1, 1>(c); }

// ---- E8M0 (OCP MX shared scale) ------------------------------------------
// Code E is 2^(E-127) for E = 0..254 and 0xFF is NaN; there is no sign, zero
// or Inf. Rounding picks the nearer power of two by value, and the exact
// midpoint 1.5 * 2^k goes up to 2^(k+1): with no mantissa there is no even
// code to prefer, and up is what ml_dtypes float8_e8m0fnu does for every
// normal float. Results:
// * x >= 1.5 * 2^127 (incl. +Inf) -> 0xFF, as there is nothing above 2^127.
// * 0 < x < 1.5 * 2^-127 -> 0x00 (2^-127), the nearest code; no underflow to
//   zero since the format has none. ml_dtypes differs here only for float
//   subnormals in (2^-127, 1.5 * 2^-127), which it sends to 2^-126.
// * NaN, +-0, and negative inputs -> 0xFF (ml_dtypes does the same): a scale
//   of zero or below is not representable, and silently clamping would hide
//   a broken caller. To turn a block maximum into an MX scale use
//   e8m0_exponent_for_mx instead.
constexpr std::uint8_t float_to_e8m0(float x) noexcept {
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(x);
    if (bits == 0 || bits >= 0x7F800000u) return 0xFF;  // +0, Inf, NaN, any sign bit set
    const std::uint32_t e = bits >> 23;
    const std::uint32_t m = bits & 0x7FFFFFu;
    if (e == 0) return m >= 0x600000u ? 1 : 0;  // float subnormal: 2^-127 is m = 0x400000
    const std::uint32_t r = e + (m >= 0x400000u ? 1u : 0u);
    return static_cast<std::uint8_t>(r > 0xFEu ? 0xFFu : r);
}

constexpr float e8m0_to_float(std::uint8_t c) noexcept {
    if (c == 0xFF) return std::bit_cast<float>(0x7FC00000u);
    if (c == 0) return std::bit_cast<float>(0x00400000u);  // 2^-127 is a float subnormal
    return std::bit_cast<float>(static_cast<std::uint32_t>(c) << 23);
}

// ---- Format limits -------------------------------------------------------
// emax is the exponent of the largest power of two the format holds, which is
// what the MX scale rule subtracts from the block maximum's exponent.
struct fp8_e4m3_limits {
    static constexpr float max = 448.0f, min_normal = 0x1p-6f, min_subnormal = 0x1p-9f;
    static constexpr int emax = 8;
};
struct fp8_e5m2_limits {
    static constexpr float max = 57344.0f, min_normal = 0x1p-14f, min_subnormal = 0x1p-16f;
    static constexpr int emax = 15;
};
struct fp6_e3m2_limits {
    static constexpr float max = 28.0f, min_normal = 0.25f, min_subnormal = 0.0625f;
    static constexpr int emax = 4;
};
struct fp6_e2m3_limits {
    static constexpr float max = 7.5f, min_normal = 1.0f, min_subnormal = 0.125f;
    static constexpr int emax = 2;
};
struct fp4_e2m1_limits {
    static constexpr float max = 6.0f, min_normal = 1.0f, min_subnormal = 0.5f;
    static constexpr int emax = 2;
};

// OCP MX v1.0 shared-scale rule: the unbiased exponent X of the block scale
// 2^X is floor(log2(amax)) - emax_elem, so the block maximum lands in the
// element format's top binade (elements beyond max are then saturated by the
// element encoder). X is clamped below at -127; an all-zero block uses
// log2 of the smallest normal float (-126) as the spec says. A result above
// 127 (only possible for emax_elem < 0), or a NaN/Inf amax, returns 128, so
// X + 127 is always the E8M0 code (0xFF = NaN). amax is taken as |amax|.
constexpr int e8m0_exponent_for_mx(float amax, int emax_elem) noexcept {
    const std::uint32_t ax = std::bit_cast<std::uint32_t>(amax) & 0x7FFFFFFFu;
    if (ax >= 0x7F800000u) return 128;
    int floor_log2 = -126;
    if (ax >= 0x00800000u) {
        floor_log2 = static_cast<int>(ax >> 23) - 127;
    } else if (ax != 0) {  // float subnormal: locate the leading one
        floor_log2 = static_cast<int>(std::bit_width(ax)) - 150;
    }
    int x = floor_log2 - emax_elem;
    if (x < -127) x = -127;
    if (x > 127) x = 128;
    return x;
}

LOWBIT_NAMESPACE_END
