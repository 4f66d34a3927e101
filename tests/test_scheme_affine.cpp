#include "catch.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/core/numeric.hpp>
#include <lowbit/scheme/affine.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;
using m = affine_mode;

static_assert(scheme<affine<1>> && scheme<affine<8>>);
static_assert(affine_scheme<affine<2, m::symmetric>> && affine_scheme<affine<8, m::symmetric>>);
static_assert(affine_scheme<affine<1, m::symmetric_signed_max>> && affine_scheme<affine<4, m::symmetric_signed_max>>);
static_assert(affine_scheme<affine<3, m::asymmetric>> && affine_scheme<affine<4, m::asymmetric_float>>);
static_assert(affine_scheme<affine<1, m::mlx>> && affine_scheme<affine<6, m::mlx>>);
static_assert(affine<5>::bits == 5 && affine<5>::family == kernel_family::affine);

namespace {

std::vector<float> random_group(std::mt19937& rng, std::size_t n, float lo, float hi) {
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> x(n);
    for (float& v : x) v = d(rng);
    return x;
}

// The decode a kernel performs: three float operations, the product rounded.
float kernel_decode(std::uint8_t q, const affine_params& p) {
    volatile float centred = static_cast<float>(q) - p.zero;
    volatile float prod = centred * p.scale;
    return prod + p.bias;
}

template <class S>
void check_codes_and_decode(const S& s, std::span<const float> x, const affine_params& p) {
    for (float v : x) {
        const std::uint8_t q = s.encode(v, p);
        REQUIRE(q < (1u << S::bits));
        REQUIRE(s.decode(q, p) == kernel_decode(q, p));
    }
}

// Every mode, 1..8 bits where the mode allows it.
template <int B, affine_mode M>
void rtn_bound_case(std::mt19937& rng) {
    const affine<B, M> s{};
    for (int trial = 0; trial < 50; ++trial) {
        const float lo = trial % 3 == 0 ? 0.25f : -3.0f;  // some all-positive groups
        const auto x = random_group(rng, 64, lo, 2.0f);
        const auto p = s.fit(x, {});
        check_codes_and_decode(s, x, p);
        // Rounding slack: one ulp-ish of the range in each of the divide and the decode.
        const float slack = 4e-6f * 5.0f;
        for (float v : x) {
            const float err = std::fabs(s.decode(s.encode(v, p), p) - v);
            if constexpr (M == m::symmetric || M == m::asymmetric || M == m::asymmetric_float) {
                REQUIRE(err <= std::fabs(p.scale) * 0.5f + slack);
            } else if constexpr (M == m::symmetric_signed_max) {
                // Half a step, except the far end: +2^(b-1) steps clamps to 2^(b-1)-1.
                REQUIRE(err <= std::fabs(p.scale) + slack);
                const float t = v / p.scale + static_cast<float>(1 << (B - 1));
                if (t <= static_cast<float>((1 << B) - 1)) REQUIRE(err <= std::fabs(p.scale) * 0.5f + slack);
            } else {
                // MLX's rounded step can leave the far end of the range up to one step short.
                REQUIRE(err <= std::fabs(p.scale) + slack);
            }
        }
    }
}

}  // namespace

TEST_CASE("affine: round-to-nearest error is at most half a step, codes in range, decode is unfused") {
    std::mt19937 rng(1234);
    rtn_bound_case<2, m::symmetric>(rng);
    rtn_bound_case<3, m::symmetric>(rng);
    rtn_bound_case<4, m::symmetric>(rng);
    rtn_bound_case<8, m::symmetric>(rng);
    rtn_bound_case<1, m::symmetric_signed_max>(rng);
    rtn_bound_case<4, m::symmetric_signed_max>(rng);
    rtn_bound_case<5, m::symmetric_signed_max>(rng);
    rtn_bound_case<8, m::symmetric_signed_max>(rng);
    rtn_bound_case<1, m::asymmetric>(rng);
    rtn_bound_case<2, m::asymmetric>(rng);
    rtn_bound_case<3, m::asymmetric>(rng);
    rtn_bound_case<4, m::asymmetric>(rng);
    rtn_bound_case<8, m::asymmetric>(rng);
    rtn_bound_case<1, m::asymmetric_float>(rng);
    rtn_bound_case<4, m::asymmetric_float>(rng);
    rtn_bound_case<8, m::asymmetric_float>(rng);
    rtn_bound_case<2, m::mlx>(rng);
    rtn_bound_case<4, m::mlx>(rng);
    rtn_bound_case<8, m::mlx>(rng);
}

TEST_CASE("affine symmetric: scale = absmax / (2^(b-1)-1), codes mirror about the zero code") {
    const affine<4, m::symmetric> s{};
    const std::vector<float> x = {-7.0f, 3.5f, 0.5f, 2.5f, 1.0f};
    const auto p = s.fit(x, {});
    REQUIRE(p.scale == 1.0f);
    REQUIRE(p.zero == 8.0f);
    REQUIRE(p.bias == 0.0f);
    CHECK(s.encode(-7.0f, p) == 1);  // code 0 is never used
    CHECK(s.encode(3.5f, p) == 12);  // 3.5 -> 4 (ties to even)
    CHECK(s.encode(2.5f, p) == 10);  // 2.5 -> 2
    CHECK(s.encode(0.5f, p) == 8);   // 0.5 -> 0
    CHECK(s.encode(-100.0f, p) == 1);
    CHECK(s.encode(100.0f, p) == 15);

    std::mt19937 rng(7);
    const affine<3, m::symmetric> s3{};
    for (int t = 0; t < 20; ++t) {
        const auto g = random_group(rng, 32, -1.0f, 1.0f);
        const auto q = s3.fit(g, {});
        for (float v : g) {
            const int a = s3.encode(v, q) - 4, b = s3.encode(-v, q) - 4;
            REQUIRE(a == -b);
            REQUIRE(s3.encode(v, q) >= 1);
        }
    }
}

TEST_CASE("affine symmetric_signed_max: ggml Q4_0 rule, half up, extreme on code 0") {
    const affine<4, m::symmetric_signed_max> s{};
    const std::vector<float> x = {1.0f, -2.0f, 4.0f, -4.0f};
    const auto p = s.fit(x, {});
    REQUIRE(p.scale == -0.5f);  // 4 / -8; the first of +-4 wins
    REQUIRE(p.zero == 8.0f);
    CHECK(s.encode(4.0f, p) == 0);
    CHECK(s.decode(0, p) == 4.0f);
    CHECK(s.encode(-2.0f, p) == 12);
    CHECK(s.encode(1.0f, p) == 6);
    CHECK(s.encode(-4.0f, p) == 15);  // 16 clamps to 15
    CHECK(s.decode(15, p) == -3.5f);
    CHECK(s.encode(0.25f, p) == 8);   // -0.5 + 8.5 = 8
    CHECK(s.encode(-0.25f, p) == 9);  // the tie between 0 and -0.5 goes up a code
    const auto n = s.fit(std::vector<float>{-3.0f, 1.0f}, {});
    CHECK(n.scale == 0.375f);  // -3 / -8: positive when the extreme is negative
}

TEST_CASE("affine asymmetric: GPTQ range includes 0, integer zero-point, zero exact") {
    const affine<4, m::asymmetric> s{};
    const std::vector<float> x = {-1.5f, 0.75f, 6.0f};
    const auto p = s.fit(x, {});
    REQUIRE(p.scale == 0.5f);
    REQUIRE(p.zero == 3.0f);
    CHECK(s.encode(-1.5f, p) == 0);
    CHECK(s.encode(0.75f, p) == 5);  // round(1.5) = 2 (even) + 3
    CHECK(s.encode(1.25f, p) == 5);  // round(2.5) = 2
    CHECK(s.encode(1.75f, p) == 7);  // round(3.5) = 4
    CHECK(s.encode(6.0f, p) == 15);
    CHECK(s.encode(0.0f, p) == 3);

    // All-positive group: the range still starts at 0.
    const auto q = s.fit(std::vector<float>{1.0f, 3.0f}, {});
    CHECK(q.zero == 0.0f);
    CHECK(q.scale == 0.2f);

    std::mt19937 rng(99);
    const affine<3, m::asymmetric> s3{};
    for (int t = 0; t < 100; ++t) {
        const auto g = random_group(rng, 16, t % 2 ? -0.5f : -4.0f, t % 3 ? 3.0f : 0.1f);
        const auto r = s3.fit(g, {});
        REQUIRE(r.zero == std::round(r.zero));
        REQUIRE(r.zero >= 0.0f);
        REQUIRE(r.zero <= 7.0f);
        REQUIRE(s3.decode(s3.encode(0.0f, r), r) == 0.0f);
    }
}

TEST_CASE("affine asymmetric_float and mlx: hand cases") {
    // torchao's tinygemm rule in fp32: scale = 7.5 / 15, zero-point = min + 8 * scale.
    const affine<4, m::asymmetric_float> f{};
    const auto sp = f.fit_split(std::vector<float>{1.0f, 2.5f, 8.5f}, {});
    const auto p = sp.stored;
    REQUIRE(p == f.fit(std::vector<float>{1.0f, 2.5f, 8.5f}, {}));
    REQUIRE(p.scale == 0.5f);
    REQUIRE(p.bias == 5.0f);
    REQUIRE(p.zero == 8.0f);
    REQUIRE(sp.encode == affine_params{0.5f, 0.0f, 1.0f});  // encoded against zero-point - 8 * scale
    CHECK(f.encode(2.5f, sp.encode) == 3);
    CHECK(f.encode(1.25f, sp.encode) == 0);  // round(0.5) = 0
    CHECK(f.encode(1.75f, sp.encode) == 2);  // round(1.5) = 2
    CHECK(f.encode(1.75f, p) == 2);          // the stored params agree here
    CHECK(f.decode(3, p) == 2.5f);           // (3 - 8) * 0.5 + 5

    // max edge: |min| <= |max| makes the scale negative and max code 0.
    const affine<2, m::mlx> x2{};
    const auto q = x2.fit(std::vector<float>{-1.0f, 0.5f, 2.0f}, {});
    REQUIRE(q.scale == -1.0f);  // 2 / round(2 / -1)
    REQUIRE(q.bias == 2.0f);
    CHECK(x2.encode(2.0f, q) == 0);
    CHECK(x2.encode(0.5f, q) == 2);  // round(1.5) = 2
    CHECK(x2.encode(-1.0f, q) == 3);
    CHECK(x2.decode(3, q) == -1.0f);

    // min edge: |min| > |max|, positive scale = min / round(min / (range / 15)).
    const affine<4, m::mlx> x4{};
    const auto r = x4.fit(std::vector<float>{-3.0f, 1.0f}, {});
    CHECK(r.scale == -3.0f / -11.0f);
    CHECK(r.bias == -3.0f);
    CHECK(x4.decode(x4.encode(-3.0f, r), r) == -3.0f);

    // 1 bit: code 0 -> min, code 1 -> max.
    const affine<1, m::mlx> x1{};
    const auto o = x1.fit(std::vector<float>{-1.0f, 3.0f, 0.5f}, {});
    CHECK(o.scale == 4.0f);
    CHECK(o.bias == -1.0f);
    CHECK(x1.decode(x1.encode(3.0f, o), o) == 3.0f);
    CHECK(x1.decode(x1.encode(0.5f, o), o) == -1.0f);  // 0.375 rounds to 0
}

TEMPLATE_TEST_CASE("affine: constant and all-zero groups come back exactly", "", (affine<4, m::symmetric>),
                   (affine<4, m::symmetric_signed_max>), (affine<4, m::asymmetric>), (affine<1, m::asymmetric>),
                   (affine<4, m::mlx>), (affine<1, m::mlx>),
                   (affine<8, m::symmetric>), (affine<8, m::asymmetric>)) {
    const TestType s{};
    for (float c : {0.0f, 0.1f, -0.1f, 3.0f, -1234.5f, 1e-30f, -7e20f}) {
        // MLX's eps: a constant below 5e-8 in magnitude has q0 = 0 and decodes to 0, as in MLX.
        if (TestType::mode == m::mlx && TestType::bits > 1 && std::fabs(c) < 1e-7f) continue;
        const std::vector<float> x(17, c);
        const auto p = s.fit(x, {});
        check_codes_and_decode(s, x, p);
        for (float v : x) REQUIRE(s.decode(s.encode(v, p), p) == c);
    }
}

// torchao 0.15.0's _choose_qparams_affine_tinygemm and _quantize_affine_tinygemm
// on these bf16 weights (version 2: eps 2^-7), checked once: every step in
// bf16. Computed in fp32 instead, codes 1, 3 and 4 would be 11, 13 and 9.
TEST_CASE("affine asymmetric_float in bf16: torchao's version 2 on a hand group") {
    affine<4, m::asymmetric_float> f{};
    f.scale_type = param_dtype::bf16;
    f.float_zero = {param_dtype::bf16, param_dtype::bf16, 0x1p-7f};
    REQUIRE(f.encode_rule().bf16_steps);
    const std::vector<float> x{3.234375f, 1.7421875f, 4.03125f, 2.4375f, -0.1884765625f, -5.71875f, 0.89453125f, 2.375f};
    const auto sp = f.fit_split(x, {});
    CHECK(sp.stored.scale == 0.6484375f);
    CHECK(sp.stored.bias == -0.53125f);
    CHECK(sp.stored.zero == 8.0f);
    const std::vector<int> want{14, 12, 15, 12, 8, 0, 10, 12};
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(f.encode(x[i], sp.encode) == want[i]);
    // Weights that are not bf16 are taken as bf16 (rounded to nearest even).
    std::vector<float> nudged = x;
    for (auto& v : nudged) v = std::nextafter(v, 0.0f);
    const auto np = f.fit_split(nudged, {});
    CHECK(np.stored == sp.stored);
    for (std::size_t i = 0; i < x.size(); ++i) CHECK(f.encode(nudged[i], np.encode) == want[i]);
}

// Constant groups, as torchao 0.15.0 gives them (bf16 weights, checked
// once): every code 0 and the zero-point c + 8 * eps rounded to bf16, so c
// comes back as that minus 8 * eps: within 8 steps of itself, not exactly.
TEST_CASE("affine asymmetric_float: constant groups as torchao gives them") {
    struct want_t {
        float c, eps, scale, zero;
    };
    for (const want_t w : {want_t{0.10009765625f, 0x1p-7f, 0.0078125f, 0.162109375f},
                           want_t{0.10009765625f, 1e-6f, 9.98377799987793e-07f, 0.10009765625f},
                           want_t{-1232.0f, 0x1p-7f, 0.0078125f, -1232.0f},
                           want_t{0.0f, 1e-6f, 9.98377799987793e-07f, 7.987022399902344e-06f}}) {
        affine<4, m::asymmetric_float> f{};
        f.scale_type = param_dtype::bf16;
        f.float_zero = {param_dtype::bf16, param_dtype::bf16, w.eps};
        const auto sp = f.fit_split(std::vector<float>(8, w.c), {});
        INFO("c " << w.c << " eps " << w.eps);
        CHECK(sp.stored.scale == w.scale);
        CHECK(sp.stored.bias == w.zero);
        CHECK(f.encode(w.c, sp.encode) == 0);
        CHECK(std::fabs(f.decode(0, sp.stored) - w.c) <= 8.0f * w.scale);
    }
}

TEST_CASE("affine mlx: a constant below its eps decodes to 0, as MLX's rule gives") {
    const affine<4, m::mlx> s{};
    const std::vector<float> x(4, 1e-30f);
    const auto p = s.fit(x, {});
    CHECK(p.bias == 0.0f);
    CHECK(s.decode(s.encode(1e-30f, p), p) == 0.0f);
}

TEST_CASE("affine: all-zero params are the documented ones") {
    const std::vector<float> z(8, 0.0f);
    CHECK(affine<4, m::symmetric>{}.fit(z, {}) == affine_params{0.0f, 8.0f, 0.0f});
    CHECK(affine<4, m::symmetric_signed_max>{}.fit(z, {}).scale == 0.0f);
    // GPTQ: range [-1, 1] -> scale 2/15; in float32 1 / (2/15) = 7.4999996, so zero = 7.
    CHECK(affine<4, m::asymmetric>{}.fit(z, {}) == affine_params{2.0f / 15.0f, 7.0f, 0.0f});
}

TEST_CASE("affine: scale_type rounds what is stored, and encode uses the stored scale") {
    std::mt19937 rng(5);
    for (param_dtype t : {param_dtype::f16, param_dtype::bf16}) {
        affine<4, m::asymmetric_float> f{};
        f.scale_type = t;
        f.float_zero.zero_type = t;
        affine<4, m::symmetric> s{};
        s.scale_type = t;
        affine<4, m::mlx> x{};
        x.scale_type = t;
        affine<4, m::asymmetric> a{};
        a.scale_type = t;
        for (int i = 0; i < 50; ++i) {
            const auto g = random_group(rng, 32, -1.7f, 2.3f);
            for (const auto& p : {f.fit(g, {}), s.fit(g, {}), x.fit(g, {}), a.fit(g, {})}) {
                REQUIRE(round_to_param_dtype(p.scale, t) == p.scale);
                REQUIRE(round_to_param_dtype(p.bias, t) == p.bias);
            }
            const auto p = a.fit(g, {});
            for (float v : g) // The integer zero comes from the unrounded scale (as GPTQ): up to 15 steps
                // of a bf16 rounding error (2^-9) add to the half step.
                REQUIRE(std::fabs(a.decode(a.encode(v, p), p) - v) <= std::fabs(p.scale) * 0.55f);
        }
    }
    affine<4, m::asymmetric> a{};
    a.scale_type = param_dtype::f16;
    CHECK(a.param_bits() == 16 + 4);
    CHECK(a.scale_bits() == 16);
    CHECK(affine<4, m::symmetric>{}.param_bits() == 32);
    affine<4, m::mlx> x{};
    x.scale_type = param_dtype::bf16;
    CHECK(x.param_bits() == 32);

    // A scale fp16 cannot hold is an error, not an Inf.
    affine<4, m::symmetric> s{};
    s.scale_type = param_dtype::f16;
    CHECK_THROWS_AS(s.fit(std::vector<float>{1e7f, 1.0f}, {}), lowbit::error);
    // A scale below fp16's range keeps its smallest step instead of 0.
    const auto tiny = s.fit(std::vector<float>{1e-12f, -1e-12f}, {});
    CHECK(tiny.scale == 0x1p-24f);
}

TEST_CASE("affine: clip shrinks the range, importance weights are ignored") {
    affine<4, m::symmetric> s{};
    const std::vector<float> x = {-7.0f, 1.0f, 2.0f};
    const std::vector<float> w = {0.1f, 5.0f, 3.0f};
    CHECK(s.fit(x, w) == s.fit(x, {}));
    s.clip = 0.5f;
    const auto p = s.fit(x, {});
    CHECK(p.scale == 0.5f);
    CHECK(s.encode(-7.0f, p) == 1);  // clamped to -7 steps
    affine<4, m::asymmetric> a{};
    a.clip = 0.5f;
    const auto q = a.fit(std::vector<float>{-3.0f, 12.0f}, {});
    CHECK(q.scale == 0.5f);
    CHECK(q.zero == 3.0f);
}

TEST_CASE("affine: names") {
    CHECK(std::string(affine<4, m::symmetric>{}.name()) == "int4-sym");
    CHECK(std::string(affine<8, m::asymmetric>{}.name()) == "int8-asym");
    CHECK(std::string(affine<4, m::symmetric_signed_max>{}.name()) == "int4-sym-signed-max");
    CHECK(std::string(affine<3, m::asymmetric_float>{}.name()) == "int3-asym-float");
    CHECK(std::string(affine<2, m::mlx>{}.name()) == "int2-mlx");
}
