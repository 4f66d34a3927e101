#include "catch.hpp"

#include <lowbit/core/numeric.hpp>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;

namespace {

// ---- constexpr-ness: these must fold at compile time ---------------------
static_assert(float_to_fp16(65504.0f) == 0x7BFF && fp16_to_float(0x3C00) == 1.0f);
static_assert(float_to_bf16(1.0f) == 0x3F80 && bf16_to_float(0xC000) == -2.0f);
static_assert(float_to_fp8_e4m3(448.0f) == 0x7E && float_to_fp8_e4m3(1e9f) == 0x7F);
static_assert(float_to_fp8_e4m3(1e9f, true) == 0x7E && fp8_e4m3_to_float(0x01) == 0x1p-9f);
static_assert(float_to_fp8_e5m2(-57344.0f) == 0xFB && fp8_e5m2_to_float(0x7C) == std::numeric_limits<float>::infinity());
static_assert(float_to_fp6_e3m2(-28.0f) == 0x3F && fp6_e3m2_to_float(0x01) == 0.0625f);
static_assert(float_to_fp6_e2m3(7.5f) == 0x1F && fp6_e2m3_to_float(0x21) == -0.125f);
static_assert(float_to_fp4_e2m1(5.0f) == 0x6 && fp4_e2m1_to_float(0xF) == -6.0f);
static_assert(float_to_e8m0(1.5f) == 0x80 && e8m0_to_float(127) == 1.0f);
static_assert(e8m0_exponent_for_mx(6.0f, fp4_e2m1_limits::emax) == 0);

// A lookup table generated at compile time, the way kernels are meant to use it.
constexpr std::array<float, 16> fp4_lut = [] {
    std::array<float, 16> t{};
    for (unsigned c = 0; c < 16; ++c) t[c] = fp4_e2m1_to_float(static_cast<std::uint8_t>(c));
    return t;
}();
static_assert(fp4_lut[7] == 6.0f && fp4_lut[13] == -3.0f);

std::uint32_t bits_of(float f) { return std::bit_cast<std::uint32_t>(f); }
float from_bits(std::uint32_t u) { return std::bit_cast<float>(u); }
float next_up(float f) { return std::nextafter(f, std::numeric_limits<float>::infinity()); }
float next_down(float f) { return std::nextafter(f, -std::numeric_limits<float>::infinity()); }
constexpr float inf = std::numeric_limits<float>::infinity();
const float qnan = std::numeric_limits<float>::quiet_NaN();

// ---- Independent model of every format -----------------------------------
// Values come from the textbook formula (ldexp in double), not from the
// decoders under test, and rounding is a plain nearest-value search.
enum class fmt { fp16, bf16, e4m3, e4m3_sat, e5m2, e5m2_sat, e3m2, e2m3, e2m1, e8m0 };

struct format_model {
    std::string name;
    int ebits, mbits, bias;
    bool has_sign;
    std::uint32_t max_code;       // largest finite magnitude code
    std::uint32_t overflow_code;  // what overflow and Inf encode to (magnitude part)
    bool ties_up;                 // E8M0 has no even code; its midpoints go up
    std::uint32_t (*encode)(float);
    float (*decode)(std::uint32_t);
    bool (*is_nan_code)(std::uint32_t);
    std::uint32_t (*expected_nan)(bool negative);  // ~0u: "any NaN code with that sign"
    std::vector<double> values;  // value of magnitude code i for i = 0..max_code+1 (one past max)

    std::uint32_t sign_bit() const { return has_sign ? 1u << (ebits + mbits) : 0u; }

    double formula(std::uint32_t code) const {
        const std::uint32_t e = code >> mbits, m = code & ((1u << mbits) - 1u);
        if (mbits == 0) return std::ldexp(1.0, static_cast<int>(e) - bias);  // E8M0: no subnormals
        if (e == 0) return std::ldexp(static_cast<double>(m), 1 - bias - mbits);
        return std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -mbits), static_cast<int>(e) - bias);
    }

    void build() {
        for (std::uint32_t c = 0; c <= max_code + 1; ++c) values.push_back(formula(c));
    }

    // Nearest representable value, ties to the even code; overflow is the
    // hypothetical code one past max winning the search.
    std::uint32_t oracle(float x) const {
        const std::uint32_t xb = bits_of(x);
        const bool neg = xb >> 31;
        if (std::isnan(x)) return expected_nan(neg);
        if (!has_sign && (neg || x == 0.0f)) return 0xFF;  // E8M0: no zero, no sign
        const std::uint32_t sign = neg ? sign_bit() : 0u;
        const double a = std::fabs(static_cast<double>(x));
        if (std::isinf(x) || a >= 2.0 * values.back()) return sign | overflow_code;
        const auto hi_it = std::upper_bound(values.begin(), values.end(), a);
        std::uint32_t pick;
        if (hi_it == values.begin()) {
            pick = 0;  // below the smallest E8M0 value
        } else if (hi_it == values.end()) {
            pick = max_code + 1;
        } else {
            const auto hi = static_cast<std::uint32_t>(hi_it - values.begin());
            const std::uint32_t lo = hi - 1;
            const double dlo = a - values[lo], dhi = values[hi] - a;
            if (dlo < dhi) pick = lo;
            else if (dhi < dlo) pick = hi;
            else pick = ties_up ? hi : ((lo & 1u) ? hi : lo);
        }
        if (pick > max_code) return sign | overflow_code;
        return sign | pick;
    }
};

bool fp16_nan(std::uint32_t c) { return (c & 0x7C00u) == 0x7C00u && (c & 0x3FFu); }
bool bf16_nan(std::uint32_t c) { return (c & 0x7F80u) == 0x7F80u && (c & 0x7Fu); }
bool e4m3_nan(std::uint32_t c) { return (c & 0x7Fu) == 0x7Fu; }
bool e5m2_nan(std::uint32_t c) { return (c & 0x7Fu) > 0x7Cu; }
bool no_nan(std::uint32_t) { return false; }
bool e8m0_nan(std::uint32_t c) { return c == 0xFFu; }

std::vector<format_model> make_models() {
    auto any_nan = [](bool) { return ~0u; };
    std::vector<format_model> v = {
        {"fp16", 5, 10, 15, true, 0x7BFF, 0x7C00, false,
         [](float x) -> std::uint32_t { return float_to_fp16(x); },
         [](std::uint32_t c) { return fp16_to_float(static_cast<std::uint16_t>(c)); }, fp16_nan, any_nan, {}},
        {"bf16", 8, 7, 127, true, 0x7F7F, 0x7F80, false,
         [](float x) -> std::uint32_t { return float_to_bf16(x); },
         [](std::uint32_t c) { return bf16_to_float(static_cast<std::uint16_t>(c)); }, bf16_nan, any_nan, {}},
        {"fp8_e4m3", 4, 3, 7, true, 0x7E, 0x7F, false,
         [](float x) -> std::uint32_t { return float_to_fp8_e4m3(x); },
         [](std::uint32_t c) { return fp8_e4m3_to_float(static_cast<std::uint8_t>(c)); }, e4m3_nan,
         [](bool n) { return n ? 0xFFu : 0x7Fu; }, {}},
        {"fp8_e4m3 saturate", 4, 3, 7, true, 0x7E, 0x7E, false,
         [](float x) -> std::uint32_t { return float_to_fp8_e4m3(x, true); },
         [](std::uint32_t c) { return fp8_e4m3_to_float(static_cast<std::uint8_t>(c)); }, e4m3_nan,
         [](bool n) { return n ? 0xFFu : 0x7Fu; }, {}},
        {"fp8_e5m2", 5, 2, 15, true, 0x7B, 0x7C, false,
         [](float x) -> std::uint32_t { return float_to_fp8_e5m2(x); },
         [](std::uint32_t c) { return fp8_e5m2_to_float(static_cast<std::uint8_t>(c)); }, e5m2_nan,
         [](bool n) { return n ? 0xFEu : 0x7Eu; }, {}},
        {"fp8_e5m2 saturate", 5, 2, 15, true, 0x7B, 0x7B, false,
         [](float x) -> std::uint32_t { return float_to_fp8_e5m2(x, true); },
         [](std::uint32_t c) { return fp8_e5m2_to_float(static_cast<std::uint8_t>(c)); }, e5m2_nan,
         [](bool n) { return n ? 0xFEu : 0x7Eu; }, {}},
        {"fp6_e3m2", 3, 2, 3, true, 0x1F, 0x1F, false,
         [](float x) -> std::uint32_t { return float_to_fp6_e3m2(x); },
         [](std::uint32_t c) { return fp6_e3m2_to_float(static_cast<std::uint8_t>(c)); }, no_nan,
         [](bool) { return 0u; }, {}},
        {"fp6_e2m3", 2, 3, 1, true, 0x1F, 0x1F, false,
         [](float x) -> std::uint32_t { return float_to_fp6_e2m3(x); },
         [](std::uint32_t c) { return fp6_e2m3_to_float(static_cast<std::uint8_t>(c)); }, no_nan,
         [](bool) { return 0u; }, {}},
        {"fp4_e2m1", 2, 1, 1, true, 0x7, 0x7, false,
         [](float x) -> std::uint32_t { return float_to_fp4_e2m1(x); },
         [](std::uint32_t c) { return fp4_e2m1_to_float(static_cast<std::uint8_t>(c)); }, no_nan,
         [](bool) { return 0u; }, {}},
        {"e8m0", 8, 0, 127, false, 0xFE, 0xFF, true,
         [](float x) -> std::uint32_t { return float_to_e8m0(x); },
         [](std::uint32_t c) { return e8m0_to_float(static_cast<std::uint8_t>(c)); }, e8m0_nan,
         [](bool) { return 0xFFu; }, {}},
    };
    for (auto& m : v) m.build();
    return v;
}

const std::vector<format_model>& models() {
    static const std::vector<format_model> m = make_models();
    return m;
}

std::uint32_t code_count(const format_model& m) { return 1u << (m.ebits + m.mbits + (m.has_sign ? 1 : 0)); }

bool same_float(float a, float b) { return bits_of(a) == bits_of(b); }

}  // namespace

TEST_CASE("decoders match the textbook formula for every code") {
    for (const auto& m : models()) {
        INFO(m.name);
        for (std::uint32_t c = 0; c < code_count(m); ++c) {
            INFO("code " << c);
            const float v = m.decode(c);
            if (m.is_nan_code(c)) {
                REQUIRE(std::isnan(v));
                if (m.has_sign) REQUIRE(std::signbit(v) == bool(c & m.sign_bit()));
                continue;
            }
            const std::uint32_t mag = c & ~m.sign_bit();
            if (mag > m.max_code) {  // the infinities of fp16, bf16 and e5m2
                REQUIRE(std::isinf(v));
                REQUIRE(std::signbit(v) == bool(c & m.sign_bit()));
                continue;
            }
            REQUIRE(static_cast<double>(std::fabs(v)) == m.values[mag]);
            REQUIRE(std::signbit(v) == bool(c & m.sign_bit()));  // includes -0.0
        }
        // Magnitudes grow with the code, which the oracle's search relies on.
        REQUIRE(std::is_sorted(m.values.begin(), m.values.end()));
        REQUIRE(std::adjacent_find(m.values.begin(), m.values.end()) == m.values.end());
    }
}

TEST_CASE("every code round-trips through float") {
    for (const auto& m : models()) {
        INFO(m.name);
        for (std::uint32_t c = 0; c < code_count(m); ++c) {
            INFO("code " << c);
            const std::uint32_t back = m.encode(m.decode(c));
            if (m.is_nan_code(c)) {
                REQUIRE(m.is_nan_code(back));
                REQUIRE((back & m.sign_bit()) == (c & m.sign_bit()));
            } else if ((c & ~m.sign_bit()) > m.max_code) {
                // Inf encodes to the format's own overflow result.
                REQUIRE(back == ((c & m.sign_bit()) | m.overflow_code));
            } else {
                REQUIRE(back == c);
            }
        }
    }
}

TEST_CASE("every fp16 and bf16 bit pattern round-trips, NaNs stay NaN") {
    for (std::uint32_t h = 0; h < 0x10000u; ++h) {
        const auto c = static_cast<std::uint16_t>(h);
        const float f = fp16_to_float(c);
        const std::uint16_t back = float_to_fp16(f);
        if (fp16_nan(c)) {
            REQUIRE(std::isnan(f));
            REQUIRE(fp16_nan(back));
            REQUIRE((back & 0x8000u) == (c & 0x8000u));
        } else {
            REQUIRE(back == c);
        }
        const float g = bf16_to_float(c);
        const std::uint16_t bback = float_to_bf16(g);
        if (bf16_nan(c)) {
            REQUIRE(std::isnan(g));
            REQUIRE(bf16_nan(bback));
            REQUIRE((bback & 0x8000u) == (c & 0x8000u));
        } else {
            REQUIRE(bback == c);
        }
    }
}

TEST_CASE("decoded values of spec table entries") {
    // E4M3: max 448 = S.1111.110, min normal 2^-6, min subnormal 2^-9, NaN S.1111.111.
    REQUIRE(fp8_e4m3_to_float(0x7E) == 448.0f);
    REQUIRE(fp8_e4m3_to_float(0xFE) == -448.0f);
    REQUIRE(fp8_e4m3_to_float(0x08) == 0.015625f);
    REQUIRE(fp8_e4m3_to_float(0x07) == 0.013671875f);  // largest subnormal 7/8 * 2^-6
    REQUIRE(fp8_e4m3_to_float(0x01) == 0.001953125f);
    REQUIRE(fp8_e4m3_to_float(0x38) == 1.0f);
    REQUIRE(std::isnan(fp8_e4m3_to_float(0x7F)));
    REQUIRE(std::isnan(fp8_e4m3_to_float(0xFF)));
    REQUIRE(same_float(fp8_e4m3_to_float(0x80), -0.0f));
    // E5M2: max 57344, min normal 2^-14, min subnormal 2^-16, Inf and NaN.
    REQUIRE(fp8_e5m2_to_float(0x7B) == 57344.0f);
    REQUIRE(fp8_e5m2_to_float(0x04) == 0.00006103515625f);
    REQUIRE(fp8_e5m2_to_float(0x01) == 0.0000152587890625f);
    REQUIRE(fp8_e5m2_to_float(0x3C) == 1.0f);
    REQUIRE(fp8_e5m2_to_float(0x7C) == inf);
    REQUIRE(fp8_e5m2_to_float(0xFC) == -inf);
    for (std::uint8_t c : {0x7D, 0x7E, 0x7F, 0xFD, 0xFE, 0xFF}) REQUIRE(std::isnan(fp8_e5m2_to_float(c)));
    // E3M2: max 28, min normal 0.25, subnormal step 0.0625.
    REQUIRE(fp6_e3m2_to_float(0x1F) == 28.0f);
    REQUIRE(fp6_e3m2_to_float(0x3F) == -28.0f);
    REQUIRE(fp6_e3m2_to_float(0x04) == 0.25f);
    REQUIRE(fp6_e3m2_to_float(0x01) == 0.0625f);
    REQUIRE(fp6_e3m2_to_float(0x0C) == 1.0f);
    // E2M3: max 7.5, min normal 1, subnormal step 0.125.
    REQUIRE(fp6_e2m3_to_float(0x1F) == 7.5f);
    REQUIRE(fp6_e2m3_to_float(0x08) == 1.0f);
    REQUIRE(fp6_e2m3_to_float(0x01) == 0.125f);
    REQUIRE(fp6_e2m3_to_float(0x07) == 0.875f);
    // E2M1: the whole table.
    const float e2m1[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    for (std::uint8_t c = 0; c < 8; ++c) {
        REQUIRE(fp4_e2m1_to_float(c) == e2m1[c]);
        REQUIRE(same_float(fp4_e2m1_to_float(static_cast<std::uint8_t>(c | 8)), -e2m1[c]));
    }
    // E8M0.
    REQUIRE(e8m0_to_float(127) == 1.0f);
    REQUIRE(e8m0_to_float(128) == 2.0f);
    REQUIRE(e8m0_to_float(126) == 0.5f);
    REQUIRE(e8m0_to_float(254) == 0x1p127f);
    REQUIRE(e8m0_to_float(1) == 0x1p-126f);
    REQUIRE(e8m0_to_float(0) == 0x1p-127f);
    REQUIRE(std::isnan(e8m0_to_float(0xFF)));
}

TEST_CASE("fp6 and fp4 decoders ignore the unused high bits") {
    for (unsigned c = 0; c < 256; ++c) {
        const auto b = static_cast<std::uint8_t>(c);
        REQUIRE(same_float(fp6_e3m2_to_float(b), fp6_e3m2_to_float(static_cast<std::uint8_t>(c & 0x3F))));
        REQUIRE(same_float(fp6_e2m3_to_float(b), fp6_e2m3_to_float(static_cast<std::uint8_t>(c & 0x3F))));
        REQUIRE(same_float(fp4_e2m1_to_float(b), fp4_e2m1_to_float(static_cast<std::uint8_t>(c & 0x0F))));
    }
}

TEST_CASE("midpoints between adjacent codes go to the even code") {
    for (const auto& m : models()) {
        if (m.ties_up) continue;  // E8M0 is checked on its own below
        INFO(m.name);
        for (std::uint32_t lo = 0; lo < m.max_code; ++lo) {
            const double mid_d = (m.values[lo] + m.values[lo + 1]) / 2;
            const auto mid = static_cast<float>(mid_d);
            REQUIRE(static_cast<double>(mid) == mid_d);  // one extra bit: exact in float
            INFO("between codes " << lo << " and " << lo + 1);
            const std::uint32_t even = (lo & 1u) ? lo + 1 : lo;
            REQUIRE(m.encode(mid) == even);
            REQUIRE(m.encode(next_down(mid)) == lo);
            REQUIRE(m.encode(next_up(mid)) == lo + 1);
            REQUIRE(m.encode(-mid) == (m.sign_bit() | even));
        }
    }
}

TEST_CASE("explicit ties, including subnormal ones and the overflow boundary") {
    // fp16: 65520 is halfway between 65504 (odd code 0x7BFF) and 65536 (Inf, even).
    REQUIRE(float_to_fp16(65520.0f) == 0x7C00);
    REQUIRE(float_to_fp16(next_down(65520.0f)) == 0x7BFF);
    REQUIRE(float_to_fp16(0x1p-25f) == 0x0000);        // half the min subnormal
    REQUIRE(float_to_fp16(next_up(0x1p-25f)) == 0x0001);
    REQUIRE(float_to_fp16(3 * 0x1p-25f) == 0x0002);
    REQUIRE(float_to_bf16(1.0f + 0x1p-8f) == 0x3F80);
    REQUIRE(float_to_bf16(1.0f + 3 * 0x1p-8f) == 0x3F82);
    REQUIRE(float_to_bf16(0x1.fffffep127f) == 0x7F80);  // rounds past bf16 max to Inf

    // e4m3: 464 is halfway between 448 (S.1111.110, even) and the NaN slot.
    REQUIRE(float_to_fp8_e4m3(464.0f) == 0x7E);
    REQUIRE(float_to_fp8_e4m3(-464.0f) == 0xFE);
    REQUIRE(float_to_fp8_e4m3(next_up(464.0f)) == 0x7F);
    REQUIRE(float_to_fp8_e4m3(480.0f) == 0x7F);
    REQUIRE(float_to_fp8_e4m3(next_up(464.0f), true) == 0x7E);
    REQUIRE(float_to_fp8_e4m3(0x1p-10f) == 0x00);      // half the min subnormal -> 0
    REQUIRE(float_to_fp8_e4m3(3 * 0x1p-10f) == 0x02);  // 1.5 * min subnormal -> 2
    REQUIRE(float_to_fp8_e4m3(5 * 0x1p-10f) == 0x02);
    REQUIRE(float_to_fp8_e4m3(15 * 0x1p-10f) == 0x08); // largest subnormal / min normal tie
    REQUIRE(float_to_fp8_e4m3(-0x1p-10f) == 0x80);

    // e5m2: 61440 is halfway between 57344 (odd code 0x7B) and 65536 (Inf, even).
    REQUIRE(float_to_fp8_e5m2(61440.0f) == 0x7C);
    REQUIRE(float_to_fp8_e5m2(next_down(61440.0f)) == 0x7B);
    REQUIRE(float_to_fp8_e5m2(61440.0f, true) == 0x7B);
    REQUIRE(float_to_fp8_e5m2(0x1p-17f) == 0x00);
    REQUIRE(float_to_fp8_e5m2(3 * 0x1p-17f) == 0x02);

    // fp6 / fp4: the value past max rounds up and then saturates.
    REQUIRE(float_to_fp6_e3m2(30.0f) == 0x1F);
    REQUIRE(float_to_fp6_e3m2(26.0f) == 0x1E);  // 24 (even) vs 28
    REQUIRE(float_to_fp6_e3m2(0.03125f) == 0x00);
    REQUIRE(float_to_fp6_e3m2(0.09375f) == 0x02);
    REQUIRE(float_to_fp6_e2m3(7.75f) == 0x1F);
    REQUIRE(float_to_fp6_e2m3(7.25f) == 0x1E);  // 7.0 (even) vs 7.5
    REQUIRE(float_to_fp6_e2m3(0.0625f) == 0x00);
    REQUIRE(float_to_fp6_e2m3(0.1875f) == 0x02);
    REQUIRE(float_to_fp4_e2m1(0.25f) == 0x0);
    REQUIRE(float_to_fp4_e2m1(0.75f) == 0x2);
    REQUIRE(float_to_fp4_e2m1(1.25f) == 0x2);
    REQUIRE(float_to_fp4_e2m1(1.75f) == 0x4);
    REQUIRE(float_to_fp4_e2m1(2.5f) == 0x4);
    REQUIRE(float_to_fp4_e2m1(3.5f) == 0x6);
    REQUIRE(float_to_fp4_e2m1(5.0f) == 0x6);
    REQUIRE(float_to_fp4_e2m1(-5.0f) == 0xE);
    REQUIRE(float_to_fp4_e2m1(next_up(5.0f)) == 0x7);
    REQUIRE(float_to_fp4_e2m1(7.0f) == 0x7);
}

TEST_CASE("overflow, saturation and NaN for every format") {
    SECTION("fp8 e4m3: overflow and Inf are NaN unless saturating") {
        for (float big : {1e6f, 1e38f, inf}) {
            REQUIRE(float_to_fp8_e4m3(big) == 0x7F);
            REQUIRE(float_to_fp8_e4m3(-big) == 0xFF);
            REQUIRE(float_to_fp8_e4m3(big, true) == 0x7E);
            REQUIRE(float_to_fp8_e4m3(-big, true) == 0xFE);
        }
        for (bool sat : {false, true}) {
            REQUIRE(float_to_fp8_e4m3(qnan, sat) == 0x7F);
            REQUIRE(float_to_fp8_e4m3(-qnan, sat) == 0xFF);
            REQUIRE(float_to_fp8_e4m3(from_bits(0x7F800001u), sat) == 0x7F);  // signalling
        }
    }
    SECTION("fp8 e5m2: overflow is Inf unless saturating") {
        for (float big : {1e6f, 1e38f, inf}) {
            REQUIRE(float_to_fp8_e5m2(big) == 0x7C);
            REQUIRE(float_to_fp8_e5m2(-big) == 0xFC);
            REQUIRE(float_to_fp8_e5m2(big, true) == 0x7B);
            REQUIRE(float_to_fp8_e5m2(-big, true) == 0xFB);
        }
        for (bool sat : {false, true}) {
            REQUIRE(float_to_fp8_e5m2(qnan, sat) == 0x7E);
            REQUIRE(float_to_fp8_e5m2(-qnan, sat) == 0xFE);
            REQUIRE(float_to_fp8_e5m2(from_bits(0x7F800001u), sat) == 0x7E);
        }
    }
    SECTION("fp6 and fp4 saturate overflow and Inf; NaN becomes +0") {
        for (float big : {1e6f, 1e38f, inf}) {
            REQUIRE(float_to_fp6_e3m2(big) == 0x1F);
            REQUIRE(float_to_fp6_e3m2(-big) == 0x3F);
            REQUIRE(float_to_fp6_e2m3(big) == 0x1F);
            REQUIRE(float_to_fp6_e2m3(-big) == 0x3F);
            REQUIRE(float_to_fp4_e2m1(big) == 0x7);
            REQUIRE(float_to_fp4_e2m1(-big) == 0xF);
        }
        for (float n : {qnan, -qnan, from_bits(0x7F800001u), from_bits(0xFFFFFFFFu)}) {
            REQUIRE(float_to_fp6_e3m2(n) == 0x00);
            REQUIRE(float_to_fp6_e2m3(n) == 0x00);
            REQUIRE(float_to_fp4_e2m1(n) == 0x0);
        }
    }
    SECTION("e8m0: the rounding rule and the inputs it cannot represent") {
        REQUIRE(float_to_e8m0(1.0f) == 127);
        REQUIRE(float_to_e8m0(1.5f) == 128);               // midpoint goes up...
        REQUIRE(float_to_e8m0(next_down(1.5f)) == 127);
        REQUIRE(float_to_e8m0(3.0f) == 129);               // ...whatever the code's parity
        REQUIRE(float_to_e8m0(next_down(3.0f)) == 128);
        REQUIRE(float_to_e8m0(0.75f) == 127);
        REQUIRE(float_to_e8m0(0x1p127f) == 254);
        REQUIRE(float_to_e8m0(next_down(0x1.8p127f)) == 254);
        REQUIRE(float_to_e8m0(0x1.8p127f) == 0xFF);        // nothing above 2^127
        REQUIRE(float_to_e8m0(std::numeric_limits<float>::max()) == 0xFF);
        REQUIRE(float_to_e8m0(0x1p-126f) == 1);
        REQUIRE(float_to_e8m0(0x1p-127f) == 0);            // a float subnormal
        REQUIRE(float_to_e8m0(0x1.8p-127f) == 1);
        REQUIRE(float_to_e8m0(next_down(0x1.8p-127f)) == 0);
        REQUIRE(float_to_e8m0(0x1p-149f) == 0);            // no zero: nearest is 2^-127
        REQUIRE(float_to_e8m0(1e-40f) == 0);
        for (float bad : {0.0f, -0.0f, -1.0f, -0x1p-149f, inf, -inf, qnan, -qnan})
            REQUIRE(float_to_e8m0(bad) == 0xFF);
    }
}

TEST_CASE("signed zero survives where the format has a sign") {
    REQUIRE(float_to_fp16(-0.0f) == 0x8000);
    REQUIRE(float_to_bf16(-0.0f) == 0x8000);
    REQUIRE(float_to_fp8_e4m3(-0.0f) == 0x80);
    REQUIRE(float_to_fp8_e4m3(-0.0f, true) == 0x80);
    REQUIRE(float_to_fp8_e5m2(-0.0f) == 0x80);
    REQUIRE(float_to_fp6_e3m2(-0.0f) == 0x20);
    REQUIRE(float_to_fp6_e2m3(-0.0f) == 0x20);
    REQUIRE(float_to_fp4_e2m1(-0.0f) == 0x8);
    // Negative values that underflow keep the sign too.
    REQUIRE(float_to_fp8_e4m3(-1e-30f) == 0x80);
    REQUIRE(float_to_fp8_e5m2(-0x1p-149f) == 0x80);
    REQUIRE(float_to_fp6_e3m2(-0.01f) == 0x20);
    REQUIRE(float_to_fp4_e2m1(-0.25f) == 0x8);
    REQUIRE(float_to_fp4_e2m1(0.0f) == 0x0);
    REQUIRE(std::signbit(fp8_e5m2_to_float(0x80)));
    REQUIRE(std::signbit(fp6_e2m3_to_float(0x20)));
    REQUIRE_FALSE(std::signbit(fp6_e2m3_to_float(0x00)));
}

TEST_CASE("encoders agree with a nearest-value search over the code table") {
    // Inputs: a stride through all 2^32 float patterns, random patterns inside
    // each format's range (subnormals included), and the neighbourhood of every
    // midpoint. The oracle knows nothing of the encoders' bit manipulation.
    std::vector<float> common;
    for (std::uint64_t u = 0; u < (1ull << 32); u += 1021) common.push_back(from_bits(static_cast<std::uint32_t>(u)));
    std::mt19937 rng(20240607);
    std::size_t checked = 0;
    for (const auto& m : models()) {
        INFO(m.name);
        std::vector<float> xs = common;
        const double limit = std::min(4.0 * m.values.back(), 3.0e38);
        const std::uint32_t top = bits_of(static_cast<float>(limit));
        std::uniform_int_distribution<std::uint32_t> in_range(0, top);
        for (int i = 0; i < 500000; ++i) xs.push_back(from_bits(in_range(rng) | (rng() & 0x80000000u)));
        for (std::uint32_t lo = 0; lo < m.values.size() - 1; ++lo) {
            const float mid = static_cast<float>((m.values[lo] + m.values[lo + 1]) / 2);
            for (float x : {mid, next_up(mid), next_down(mid), static_cast<float>(m.values[lo])}) {
                xs.push_back(x);
                xs.push_back(-x);
            }
        }
        for (float x : xs) {
            const std::uint32_t want = m.oracle(x);
            const std::uint32_t got = m.encode(x);
            const bool ok = want == ~0u ? (m.is_nan_code(got) && bool(got & m.sign_bit()) == std::signbit(x))
                                        : got == want;
            if (!ok) {
                INFO("x = " << x << " (bits 0x" << std::hex << bits_of(x) << "), encoder 0x" << got
                            << ", oracle 0x" << want);
                REQUIRE(ok);
            }
        }
        checked += xs.size();
    }
    REQUIRE(checked > 40000000);
}

TEST_CASE("e8m0_exponent_for_mx follows the OCP MX shared-exponent rule") {
    REQUIRE(e8m0_exponent_for_mx(6.0f, fp4_e2m1_limits::emax) == 0);
    REQUIRE(e8m0_exponent_for_mx(7.9f, fp4_e2m1_limits::emax) == 0);
    REQUIRE(e8m0_exponent_for_mx(8.0f, fp4_e2m1_limits::emax) == 1);
    REQUIRE(e8m0_exponent_for_mx(-8.0f, fp4_e2m1_limits::emax) == 1);
    REQUIRE(e8m0_exponent_for_mx(448.0f, fp8_e4m3_limits::emax) == 0);
    REQUIRE(e8m0_exponent_for_mx(0.1f, fp6_e3m2_limits::emax) == -4 - 4);
    REQUIRE(e8m0_exponent_for_mx(0.0f, fp6_e2m3_limits::emax) == -127);  // -126 - 2, clamped
    REQUIRE(e8m0_exponent_for_mx(0.0f, -2) == -124);
    REQUIRE(e8m0_exponent_for_mx(0x1p-149f, 0) == -127);
    REQUIRE(e8m0_exponent_for_mx(0x1p-130f, -5) == -125);  // subnormal amax
    REQUIRE(e8m0_exponent_for_mx(3e38f, fp8_e5m2_limits::emax) == 127 - 15);
    REQUIRE(e8m0_exponent_for_mx(0x1p127f, -1) == 128);
    REQUIRE(e8m0_exponent_for_mx(inf, 2) == 128);
    REQUIRE(e8m0_exponent_for_mx(qnan, 2) == 128);
    // The result plus 127 is the E8M0 code of the scale 2^X.
    for (int x = -127; x <= 127; ++x) {
        const float scale = std::ldexp(1.0f, x);
        REQUIRE(float_to_e8m0(scale) == x + 127);
        REQUIRE(e8m0_to_float(static_cast<std::uint8_t>(x + 127)) == scale);
    }
    // After scaling, the block maximum sits in the element format's top binade.
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> mant(1.0f, 2.0f);
    std::uniform_int_distribution<int> ex(-100, 100);
    for (int i = 0; i < 10000; ++i) {
        const float amax = std::ldexp(mant(rng), ex(rng));
        const int x = e8m0_exponent_for_mx(amax, fp6_e3m2_limits::emax);
        const float scaled = amax / std::ldexp(1.0f, x);
        REQUIRE(scaled >= 16.0f);
        REQUIRE(scaled < 32.0f);
    }
    REQUIRE(fp4_e2m1_limits::max == fp4_e2m1_to_float(0x7));
    REQUIRE(fp6_e2m3_limits::max == fp6_e2m3_to_float(0x1F));
    REQUIRE(fp6_e3m2_limits::max == fp6_e3m2_to_float(0x1F));
    REQUIRE(fp8_e4m3_limits::max == fp8_e4m3_to_float(0x7E));
    REQUIRE(fp8_e5m2_limits::max == fp8_e5m2_to_float(0x7B));
    REQUIRE(fp8_e4m3_limits::min_subnormal == fp8_e4m3_to_float(0x01));
    REQUIRE(fp8_e5m2_limits::min_normal == fp8_e5m2_to_float(0x04));
}
