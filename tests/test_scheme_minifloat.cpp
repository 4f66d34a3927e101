#include "catch.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/core/numeric.hpp>
#include <lowbit/scheme/minifloat.hpp>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

using namespace lowbit;

static_assert(table_scheme<mxfp4> && table_scheme<mxfp6_e3m2> && table_scheme<mxfp6_e2m3>);
static_assert(table_scheme<mxfp8_e4m3> && table_scheme<mxfp8_e5m2>);
static_assert(table_scheme<nvfp4_elements> && table_scheme<fp8_e4m3_amax>);
static_assert(table_scheme<minifloat<elem::fp6_e3m2, scale_rule::amax>>);
static_assert(mxfp4::bits == 4 && mxfp6_e2m3::bits == 6 && mxfp8_e5m2::bits == 8);

namespace {

float pow2(int e) { return std::ldexp(1.0f, e); }

template <class S>
float mx_scale_of(float amax) {
    return S{}.fit(std::vector<float>{amax, -0.0f}, {}).scale;
}

template <class S>
void check_table(const S& s) {
    const auto t = s.table();
    REQUIRE(t.size() == (std::size_t{1} << S::bits));
    for (float scale : {1.0f, 0x1p-127f, 0.75f, 3.0e10f}) {
        const scaled_params p{scale};
        for (std::size_t c = 0; c < t.size(); ++c) {
            const float d = s.decode(static_cast<std::uint8_t>(c), p), e = t[c] * scale;
            REQUIRE(((d == e) || (std::isnan(d) && std::isnan(e))));
            REQUIRE(std::signbit(d) == std::signbit(e));
        }
    }
    // Every finite element value times a power-of-two scale encodes to its own code.
    const scaled_params p{0.25f};
    for (std::size_t c = 0; c < t.size(); ++c)
        if (std::isfinite(t[c])) REQUIRE(s.encode(t[c] * 0.25f, p) == c);
}

}  // namespace

TEST_CASE("MX: shared scale is 2^(floor(log2 amax) - emax)") {
    CHECK(mx_scale_of<mxfp4>(6.0f) == 1.0f);
    CHECK(mx_scale_of<mxfp4>(4.0f) == 1.0f);
    CHECK(mx_scale_of<mxfp4>(7.99f) == 1.0f);
    CHECK(mx_scale_of<mxfp4>(8.0f) == 2.0f);
    CHECK(mx_scale_of<mxfp4>(1.0f) == 0.25f);
    CHECK(mx_scale_of<mxfp4>(0.1f) == pow2(-6));  // floor(log2 0.1) = -4
    CHECK(mx_scale_of<mxfp4>(-3.0f) == 0.5f);     // amax of |x|
    CHECK(mx_scale_of<mxfp8_e4m3>(448.0f) == 1.0f);
    CHECK(mx_scale_of<mxfp8_e4m3>(1.0f) == pow2(-8));
    CHECK(mx_scale_of<mxfp8_e5m2>(1.0f) == pow2(-15));
    CHECK(mx_scale_of<mxfp8_e5m2>(57344.0f) == 1.0f);
    CHECK(mx_scale_of<mxfp6_e3m2>(28.0f) == 1.0f);
    CHECK(mx_scale_of<mxfp6_e3m2>(3.0f) == pow2(-3));
    CHECK(mx_scale_of<mxfp6_e2m3>(7.5f) == 1.0f);
    CHECK(mx_scale_of<mxfp6_e2m3>(0.75f) == pow2(-3));
    // Clamped at 2^-127 (a float subnormal, stored exactly as E8M0 0).
    CHECK(mx_scale_of<mxfp4>(1e-40f) == 0x1p-127f);
    CHECK(mx_scale_of<mxfp8_e4m3>(0x1p-120f) == 0x1p-127f);
    CHECK(mx_scale_of<mxfp4>(0x1p-120f) == 0x1p-122f);
    CHECK(mxfp4{}.param_bits() == 8);
    CHECK(std::string(mxfp4{}.name()) == "mxfp4");
    CHECK(std::string(mxfp8_e5m2{}.name()) == "mxfp8_e5m2");
    CHECK(std::string(nvfp4_elements{}.name()) == "fp4_e2m1-amax");
}

TEST_CASE("MX: an all-zero block takes 2^-127 and decodes to zeros") {
    const std::vector<float> z(32, 0.0f);
    const auto p = mxfp4{}.fit(z, {});
    CHECK(p.scale == 0x1p-127f);  // log2(FLT_MIN) - 2 = -128, clamped
    CHECK(mxfp8_e4m3{}.fit(z, {}).scale == 0x1p-127f);
    for (float v : z) {
        CHECK(mxfp4{}.encode(v, p) == 0);
        CHECK(mxfp4{}.decode(mxfp4{}.encode(v, p), p) == 0.0f);
    }
}

TEST_CASE("MX: elements saturate to +-max and round to nearest even") {
    const mxfp4 s{};
    const std::vector<float> x = {100.0f, -100.0f, 1.0f};
    const auto p = s.fit(x, {});
    REQUIRE(p.scale == 16.0f);                // floor(log2 100) = 6, 6 - 2
    CHECK(s.encode(100.0f, p) == 7);          // 6.25 -> 6
    CHECK(s.encode(-100.0f, p) == 15);        // -6
    CHECK(s.decode(7, p) == 96.0f);

    const scaled_params one{1.0f};
    CHECK(s.encode(2.5f, one) == 4);   // 2 | 3 -> 2 (even)
    CHECK(s.encode(5.0f, one) == 6);   // 4 | 6 -> 4
    CHECK(s.encode(0.25f, one) == 0);  // 0 | 0.5 -> 0
    CHECK(s.encode(0.75f, one) == 2);  // 0.5 | 1 -> 1
    CHECK(s.encode(-1e9f, one) == 15);

    const mxfp8_e4m3 e{};
    const auto q = e.fit(std::vector<float>{500.0f}, {});
    REQUIRE(q.scale == 1.0f);            // floor(log2 500) = 8, 8 - 8
    CHECK(e.encode(500.0f, q) == 0x7E);  // 448, not NaN
    CHECK(e.encode(-500.0f, q) == 0xFE);
    const mxfp8_e5m2 f{};
    CHECK(f.encode(1e6f, scaled_params{1.0f}) == 0x7B);  // 57344, not Inf
}

TEST_CASE("amax rule: scale = amax / elem_max, x / scale to elements") {
    const nvfp4_elements s{};
    const auto p = s.fit(std::vector<float>{3.0f, -1.5f, 0.2f}, {});
    REQUIRE(p.scale == 0.5f);
    CHECK(s.encode(3.0f, p) == 7);
    CHECK(s.encode(-1.5f, p) == 13);
    CHECK(s.encode(0.2f, p) == 1);  // 0.4 -> 0.5
    CHECK(s.param_bits() == 32);

    const fp8_e4m3_amax e{};
    const auto q = e.fit(std::vector<float>{-896.0f, 1.0f}, {});
    REQUIRE(q.scale == 2.0f);
    CHECK(e.encode(-896.0f, q) == 0xFE);
    CHECK(e.decode(0xFE, q) == -896.0f);
    CHECK(std::string(e.name()) == "fp8_e4m3-amax");

    // All-zero block: scale 0, code +0, decodes to 0.
    const auto z = s.fit(std::vector<float>(16, 0.0f), {});
    CHECK(z.scale == 0.0f);
    CHECK(s.encode(0.0f, z) == 0);
    CHECK(s.encode(1.0f, z) == 0);
    CHECK(s.decode(0, z) == 0.0f);

    nvfp4_elements h{};
    h.scale_type = param_dtype::f16;
    const auto r = h.fit(std::vector<float>{0.7f, 0.1f}, {});
    CHECK(r.scale == fp16_to_float(float_to_fp16(0.7f / 6.0f)));
    CHECK(h.param_bits() == 16);
    h.clip = 0.5f;
    CHECK(h.fit(std::vector<float>{12.0f}, {}).scale == 1.0f);
}

TEST_CASE("minifloat: clip shrinks amax before the MX rule") {
    mxfp4 s{};
    s.clip = 0.5f;
    CHECK(s.fit(std::vector<float>{6.0f}, {}).scale == 0.5f);  // amax 3 -> floor(log2 3) - 2 = -1
}

TEST_CASE("minifloat: decode == table()[c] * scale for every code, and codes round-trip") {
    check_table(mxfp4{});
    check_table(mxfp6_e3m2{});
    check_table(mxfp6_e2m3{});
    check_table(mxfp8_e4m3{});
    check_table(mxfp8_e5m2{});
    check_table(nvfp4_elements{});
    check_table(fp8_e4m3_amax{});
    CHECK(mxfp4::table_values[7] == 6.0f);
    CHECK(mxfp6_e3m2::table_values[31] == 28.0f);
    CHECK(mxfp6_e2m3::table_values[31] == 7.5f);
    CHECK(mxfp8_e4m3::table_values[0x7E] == 448.0f);
    CHECK(std::isnan(mxfp8_e4m3::table_values[0x7F]));
    CHECK(std::isinf(mxfp8_e5m2::table_values[0x7C]));
}
