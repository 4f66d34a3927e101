#include "catch.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/core/numeric.hpp>
#include <lowbit/scheme/codebook.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;

static_assert(table_scheme<codebook<1>> && table_scheme<codebook<4>> && table_scheme<codebook<8>>);
static_assert(table_scheme<dynamic8>);
static_assert(codebook<4>::bits == 4 && dynamic8::bits == 8);
static_assert(codebook_bits(1) == 1 && codebook_bits(2) == 1 && codebook_bits(16) == 4 && codebook_bits(17) == 5 &&
              codebook_bits(256) == 8);

namespace {

constexpr float inf = std::numeric_limits<float>::infinity();
const scaled_params unit{1.0f};

template <class S>
void check_decode_is_table_times_scale(const S& s) {
    const auto t = s.table();
    for (float scale : {1.0f, 0.0f, 0.37f, -2.5f, 1e-20f}) {
        const scaled_params p{scale};
        for (std::size_t c = 0; c < t.size(); ++c) REQUIRE(s.decode(static_cast<std::uint8_t>(c), p) == t[c] * scale);
    }
}

}  // namespace

TEST_CASE("nf4: bitsandbytes' 16 values, midpoint thresholds, ties to the lower code") {
    const double published[16] = {-1.0,
                                  -0.6961928009986877,
                                  -0.5250730514526367,
                                  -0.39491748809814453,
                                  -0.28444138169288635,
                                  -0.18477343022823334,
                                  -0.09105003625154495,
                                  0.0,
                                  0.07958029955625534,
                                  0.16093020141124725,
                                  0.24611230194568634,
                                  0.33791524171829224,
                                  0.44070982933044434,
                                  0.5626170039176941,
                                  0.7229568362236023,
                                  1.0};
    const auto s = nf4();
    REQUIRE(std::string(s.name()) == "nf4");
    for (int c = 0; c < 16; ++c) REQUIRE(s.table()[c] == static_cast<float>(published[c]));

    const auto th = s.thresholds();
    REQUIRE(th.size() == 15);
    for (std::size_t i = 0; i < th.size(); ++i) {
        const float lo = s.table()[i], hi = s.table()[i + 1];
        // Each threshold is the midpoint of its two codes, to within an ulp.
        const float mid = static_cast<float>((static_cast<double>(lo) + hi) / 2);
        REQUIRE(std::fabs(th[i] - mid) <= std::fabs(mid) * 2e-7f);
        const float t = th[i];
        REQUIRE(s.encode(t, unit) == i);  // on the threshold: the lower code
        REQUIRE(s.encode(std::nextafter(t, inf), unit) == i + 1);
        REQUIRE(s.encode(std::nextafter(t, -inf), unit) == i);
    }
    check_decode_is_table_times_scale(s);
    CHECK(s.param_bits() == 32);
}

TEST_CASE("nf4: a hand-checked block") {
    const auto s = nf4();
    const std::vector<float> x = {0.5f, -1.0f, 0.25f, 0.0f, 2.0f, -0.1f, 1.2f, 0.9f};
    const auto p = s.fit(x, {});
    REQUIRE(p.scale == 2.0f);  // absmax
    // Scaled: 0.25, -0.5, 0.125, 0, 1, -0.05, 0.6, 0.45.
    const std::uint8_t expect[8] = {10, 2, 9, 7, 15, 6, 13, 12};
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(s.encode(x[i], p) == expect[i]);
    CHECK(s.decode(13, p) == 2.0f * 0.5626170039176941f);
}

TEST_CASE("fp4: bitsandbytes' layout and dQuantizeFP4 thresholds, ties to the smaller magnitude") {
    const auto s = fp4();
    const float raw[8] = {0.0f, 0.0625f, 8.0f, 12.0f, 4.0f, 6.0f, 2.0f, 3.0f};
    for (int c = 0; c < 8; ++c) {
        REQUIRE(s.table()[c] == raw[c] / 12.0f);
        REQUIRE(s.table()[c + 8] == -(raw[c] / 12.0f));
    }
    REQUIRE(std::signbit(s.table()[8]));
    // Magnitude codes in ascending value order and the thresholds between them.
    const std::uint8_t order[8] = {0, 1, 6, 7, 4, 5, 2, 3};
    const float bounds[7] = {0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f, 0.4166667f, 0.583333f, 0.8333333f};
    for (int i = 0; i < 7; ++i) {
        const float t = bounds[i];
        REQUIRE(s.encode(t, unit) == order[i]);
        REQUIRE(s.encode(std::nextafter(t, inf), unit) == order[i + 1]);
        REQUIRE(s.encode(-t, unit) == (order[i] | 8));
        REQUIRE(s.encode(-std::nextafter(t, inf), unit) == (order[i + 1] | 8));
    }
    // 0.583333 is bitsandbytes' truncated 7/12: just below 7/12 already rounds up.
    CHECK(s.encode(0.5833332f, unit) == 2);
    CHECK(s.encode(0.0f, unit) == 0);
    CHECK(s.encode(-0.0f, unit) == 0);
    CHECK(s.encode(-1e-6f, unit) == 8);  // negative zero code

    const std::vector<float> x = {0.5f, -1.0f, 0.25f, 0.0f, 2.0f, -0.1f, 1.2f, 0.9f};
    const auto p = s.fit(x, {});
    REQUIRE(p.scale == 2.0f);
    const std::uint8_t expect[8] = {7, 13, 6, 0, 3, 9, 2, 5};
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(s.encode(x[i], p) == expect[i]);
    check_decode_is_table_times_scale(s);
}

TEST_CASE("codebooks: an all-zero block stores scale 0, takes the code of 0.0 and decodes to 0") {
    const std::vector<float> z(64, 0.0f);
    const auto n = nf4();
    const auto pn = n.fit(z, {});
    CHECK(pn.scale == 0.0f);
    CHECK(n.encode(0.0f, pn) == 7);
    CHECK(n.encode(5.0f, pn) == 7);
    CHECK(n.decode(7, pn) == 0.0f);
    const auto f = fp4();
    CHECK(f.encode(0.0f, f.fit(z, {})) == 0);
    const auto i = iq4_nl();
    const auto pi = i.fit(z, {});
    CHECK(pi.scale == 0.0f);
    CHECK(i.decode(i.encode(0.0f, pi), pi) == 0.0f);
    const dynamic8 d;
    const auto pd = d.fit(z, {});
    CHECK(pd.scale == 0.0f);
    CHECK(d.encode(0.0f, pd) == 127);
}

TEST_CASE("codebooks with a plain reciprocal: 0 * Inf and an overflowing 1/scale as bitsandbytes' CUDA kernels") {
    auto n = nf4();
    REQUIRE(n.reciprocal() == codebook_reciprocal::guarded);
    n.set_reciprocal(codebook_reciprocal::plain);
    REQUIRE(n.reciprocal() == codebook_reciprocal::plain);
    REQUIRE(n.encode_rule()->plain_reciprocal);
    const scaled_params zero{0.0f}, tiny{1e-40f};
    CHECK(n.encode(0.0f, zero) == 0);  // 0 * Inf is NaN: no threshold passed
    CHECK(n.encode(-0.0f, zero) == 0);
    CHECK(n.encode(1e-41f, tiny) == 15);  // 1e-41 * Inf
    CHECK(n.encode(-1e-41f, tiny) == 0);
    CHECK(n.encode(0.0f, tiny) == 0);
    CHECK(n.encode(0.5f, unit) == nf4().encode(0.5f, unit));
    auto f = fp4();
    f.set_reciprocal(codebook_reciprocal::plain);
    CHECK(f.encode(0.0f, zero) == 0);
    CHECK(f.encode(1e-41f, tiny) == 3);
    CHECK(f.encode(-1e-41f, tiny) == 11);
    // A table of more than 16 values (searched, not counted) follows the same rule.
    std::vector<float> v(32);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = -1.0f + 2.0f * static_cast<float>(i) / 31.0f;
    codebook<5> big(v);
    REQUIRE(big.encode_rule() == nullptr);
    big.set_reciprocal(codebook_reciprocal::plain);
    CHECK(big.encode(0.0f, zero) == 0);
    CHECK(big.encode(1e-41f, tiny) == 31);
    dynamic8 d;
    d.reciprocal = codebook_reciprocal::plain;
    CHECK(d.encode(0.0f, zero) == 0);  // dQuantize's search from 127 ends at 0 for NaN
    CHECK(d.encode(1e-41f, tiny) == 255);
    CHECK(d.encode(0.25f, unit) == dynamic8{}.encode(0.25f, unit));
}

TEST_CASE("user tables: nearest value, exact midpoints to the lower code") {
    // Unsorted on purpose: values 0, 1, 3, 2 at codes 0..3.
    const float t[4] = {0.0f, 1.0f, 3.0f, 2.0f};
    const codebook<2> s(t, "mine");
    CHECK(std::string(s.name()) == "mine");
    CHECK(s.encode(0.4f, unit) == 0);
    CHECK(s.encode(0.5f, unit) == 0);  // 0 (code 0) vs 1 (code 1)
    CHECK(s.encode(1.5f, unit) == 1);  // 1 (code 1) vs 2 (code 3)
    CHECK(s.encode(2.5f, unit) == 2);  // 2 (code 3) vs 3 (code 2): the lower code is the larger value
    CHECK(s.encode(2.6f, unit) == 2);
    CHECK(s.encode(-9.0f, unit) == 0);
    CHECK(s.encode(9.0f, unit) == 2);
    CHECK(s.encode(3.0f, scaled_params{2.0f}) == 1);  // 3 * (1/2) = 1.5: the tie again
    const codebook<2> h(t, "mine-high", codebook_ties::higher_code);
    CHECK(h.encode(0.5f, unit) == 1);
    CHECK(h.encode(1.5f, unit) == 3);
    CHECK(h.encode(2.5f, unit) == 3);
    CHECK(h.ties() == codebook_ties::higher_code);

    // Short and repeated tables: unused codes decode to 0; a repeat keeps its lowest code.
    const float r[3] = {1.0f, 1.0f, -1.0f};
    const codebook<2> d(r);
    CHECK(d.entries() == 3);
    CHECK(d.table()[3] == 0.0f);
    CHECK(d.encode(1.0f, unit) == 0);
    CHECK(d.encode(0.9f, unit) == 0);
    CHECK(d.encode(0.0f, unit) == 0);  // -1 (code 2) vs 1 (code 0)
    CHECK(d.encode(-5.0f, unit) == 2);

    const float big[5] = {0, 1, 2, 3, 4};
    CHECK_THROWS_AS(codebook<2>(big), lowbit::error);
    CHECK_THROWS_AS(codebook<2>(std::span<const float>{}), lowbit::error);
    const float bad[2] = {0.0f, std::numeric_limits<float>::quiet_NaN()};
    CHECK_THROWS_AS(codebook<1>(bad), lowbit::error);
}

TEST_CASE("user tables: encode finds a nearest entry (brute force)") {
    std::mt19937 rng(42);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> vals(200);
    for (float& v : vals) v = nd(rng);
    const codebook<8> s(vals, "random");
    const auto p = s.fit(vals, {});
    REQUIRE(p.scale == 1.0f);  // the table's own extreme over itself
    std::uniform_real_distribution<float> ud(-4.0f, 4.0f);
    for (int i = 0; i < 5000; ++i) {
        const float x = ud(rng);
        const std::uint8_t c = s.encode(x, unit);
        REQUIRE(c < 200);
        float best = inf;
        for (float v : vals) best = std::fmin(best, std::fabs(x - v));
        REQUIRE(std::fabs(x - s.table()[c]) == best);
    }
    check_decode_is_table_times_scale(s);
}

TEST_CASE("iq4_nl: ggml's table, signed fp16 scale, ties to the higher code") {
    const auto s = iq4_nl();
    const int k[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    for (int c = 0; c < 16; ++c) REQUIRE(s.table()[c] == static_cast<float>(k[c]));
    const std::vector<float> x = {0.5f, 2.54f, -1.0f, 2.54f};
    const auto p = s.fit(x, {});
    CHECK(p.scale == fp16_to_float(float_to_fp16(2.54f / -127.0f)));
    CHECK(p.scale < 0.0f);
    CHECK(s.encode(2.54f, p) == 0);  // the extreme element lands on -127
    CHECK(s.encode(-115.5f, unit) == 1);  // -127 vs -104
    CHECK(s.encode(7.0f, unit) == 9);     // 1 vs 13
    CHECK(s.encode(-115.6f, unit) == 0);
    CHECK(s.param_bits() == 16);
    check_decode_is_table_times_scale(s);
}

TEST_CASE("bnb_dynamic_map: documented properties and stored values") {
    const auto m = bnb_dynamic_map(true);
    CHECK(m[0] == -0.99296875f);
    CHECK(m[127] == 0.0f);
    CHECK(m[254] == 0.99296875f);
    CHECK(m[255] == 1.0f);
    REQUIRE(std::is_sorted(m.begin(), m.end()));
    for (int i = 0; i < 255; ++i) REQUIRE(m[i] == -m[254 - i]);
    float smallest = 1.0f;
    for (float v : m)
        if (v != 0.0f) smallest = std::fmin(smallest, std::fabs(v));
    CHECK(smallest == 0.55f * 1e-6f);
    // Entries where rounding the linspace product before the add would differ by
    // an ulp: these are the values bitsandbytes stores (torch's fused linspace).
    CHECK(m[18] == -0.7398437261581421f);
    CHECK(m[20] == -0.7117187976837158f);
    CHECK(m[34] == -0.5148437023162842f);
    CHECK(m[36] == -0.48671871423721313f);
    CHECK(m[64] == -0.09859374910593033f);

    const auto u = bnb_dynamic_map(false);
    REQUIRE(std::is_sorted(u.begin(), u.end()));
    CHECK(u[0] == 0.0f);
    CHECK(u[1] > 0.0f);
    CHECK(u[255] == 1.0f);
    CHECK(std::adjacent_find(u.begin(), u.end()) == u.end());  // 256 distinct values
}

TEST_CASE("dynamic8: absmax scale and bitsandbytes' pivot search") {
    const dynamic8 s;
    CHECK(std::string(s.name()) == "dynamic8");
    const auto m = s.table();
    CHECK(s.encode(1.0f, unit) == 255);
    CHECK(s.encode(-1.0f, unit) == 0);
    CHECK(s.encode(0.0f, unit) == 127);
    CHECK(s.encode(2.0f, unit) == 255);
    // The midpoint between the two top codes keeps the search's last pivot, 254.
    CHECK(s.encode((m[254] + m[255]) * 0.5f, unit) == 254);
    CHECK(s.encode(std::nextafter((m[254] + m[255]) * 0.5f, inf), unit) == 255);

    std::mt19937 rng(3);
    std::uniform_real_distribution<float> ud(-1.0f, 1.0f);
    for (int i = 0; i < 20000; ++i) {
        const float x = i % 2 ? ud(rng) : ud(rng) * 1e-4f;
        const std::uint8_t c = s.encode(x, unit);
        float best = inf;
        for (float v : m) best = std::fmin(best, std::fabs(x - v));
        REQUIRE(std::fabs(x - m[c]) <= best * (1.0f + 1e-6f));
    }
    const std::vector<float> x = {0.5f, -3.0f, 1.5f};
    const auto p = s.fit(x, {});
    CHECK(p.scale == 3.0f);
    CHECK(s.decode(s.encode(-3.0f, p), p) == m[0] * 3.0f);
    check_decode_is_table_times_scale(s);

    const dynamic8 u(false);
    CHECK(std::string(u.name()) == "dynamic8-unsigned");
    CHECK(u.encode(0.0f, unit) == 0);
    CHECK(u.encode(1.0f, unit) == 255);
    CHECK(u.encode(-0.5f, unit) == 0);
}

TEST_CASE("codebook: clip and scale_type") {
    auto s = nf4();
    s.clip = 0.5f;
    CHECK(s.fit(std::vector<float>{4.0f, -1.0f}, {}).scale == 2.0f);
    s.clip = 1.0f;
    s.scale_type = param_dtype::bf16;
    const auto p = s.fit(std::vector<float>{0.1234567f}, {});
    CHECK(p.scale == bf16_to_float(float_to_bf16(0.1234567f)));
    CHECK(s.param_bits() == 16);
    const codebook<3> def;
    CHECK(def.table()[0] == -1.0f);
    CHECK(def.table()[7] == 1.0f);
}
