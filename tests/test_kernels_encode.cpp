// kernels/encode.hpp and the rules of scheme/encode_rules.hpp: the SIMD
// kernels equal their scalar twins on every instruction set, the rules equal
// independent statements of each scheme's encode, and the quantizer's single
// pass gives what its checks-first path gives.
#include "catch.hpp"

#include <lowbit/core/numeric.hpp>
#include <lowbit/kernels/encode.hpp>
#include <lowbit/algorithms/rtn.hpp>
#include <lowbit/quantizer.hpp>
#include <lowbit/registry.hpp>
#include <lowbit/scheme/affine.hpp>
#include <lowbit/scheme/codebook.hpp>
#include <lowbit/scheme/ggml_legacy.hpp>
#include <lowbit/scheme/minifloat.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;
using kernels::encode_job;
using kernels::encode_kind;
using kernels::isa;

namespace {

struct shape {
    std::size_t rows, cols, group, param_stride;  // param_stride: groups per row, or 0 (rows share row 0's)
};

// Group extremes as the kernels keep them: three arrays.
struct extremes {
    std::vector<float> min, max, m;
    extremes() = default;
    explicit extremes(std::size_t n) : min(n), max(n), m(n) {}
    void push_back(kernels::group_extremes e) {
        min.push_back(e.min);
        max.push_back(e.max);
        m.push_back(e.signed_absmax);
    }
    std::size_t size() const { return min.size(); }
    kernels::group_extremes operator[](std::size_t g) const { return {min[g], max[g], m[g]}; }
    kernels::extremes_job job(const float* x, const shape& s, bool* non_finite) {
        return {x, s.cols, s.rows, s.cols, s.group, min.data(), max.data(), m.data(), non_finite};
    }
};

// Tails on every batch width, groups shorter and longer than a batch, groups
// that straddle the kernel's 512-column chunks, shared params across rows.
const shape shapes[] = {
    {3, 128, 32, 4},   {2, 256, 64, 4},  {2, 1536, 128, 12}, {3, 37, 37, 1},  {1, 1, 1, 1},    {2, 200, 200, 1},
    {2, 130, 65, 2},   {3, 100, 4, 25},  {2, 48, 16, 3},     {2, 24, 8, 3},   {3, 33, 3, 11},  {2, 1000, 8, 125},
    {2, 1100, 1100, 1}, {4, 70, 70, 0},  {3, 72, 24, 0},     {2, 7, 1, 7},    {2, 640, 640, 1}, {2, 1030, 515, 2},
};

// Values around the code boundaries of every rule at scales near 1, plus
// exact ties, zeros of both signs, tiny and huge values.
std::vector<float> make_x(std::size_t n, std::mt19937& rng) {
    std::vector<float> x(n);
    std::normal_distribution<float> nd(0.0f, 3.0f);
    std::uniform_int_distribution<int> kind(0, 9), half(-40, 40);
    for (auto& v : x) {
        switch (kind(rng)) {
        case 0: v = static_cast<float>(half(rng)) * 0.5f; break;    // exact halves: ties
        case 1: v = static_cast<float>(half(rng)) * 0.25f; break;
        case 2: v = (rng() & 1) ? 0.0f : -0.0f; break;
        case 3: v = nd(rng) * 1e-30f; break;
        case 4: v = nd(rng) * 1e6f; break;
        default: v = nd(rng); break;
        }
    }
    return x;
}

std::vector<float> make_scales(std::size_t n, std::mt19937& rng, bool allow_negative) {
    std::vector<float> s(n);
    std::uniform_real_distribution<float> u(0.05f, 2.0f);
    std::uniform_int_distribution<int> kind(0, 11);
    for (auto& v : s) {
        switch (kind(rng)) {
        case 0: v = 0.0f; break;
        case 1: v = 1e-39f; break;  // subnormal: 1 / scale overflows
        case 2: v = 1e30f; break;
        case 3: v = 0.5f; break;
        default: v = u(rng); break;
        }
        if (allow_negative && (rng() & 1)) v = -v;
    }
    return s;
}

std::vector<std::uint8_t> run(const encode_job& base, isa i) {
    std::vector<std::uint8_t> codes(base.rows * base.code_stride, 0xA5);
    encode_job j = base;
    j.codes = codes.data();
    kernels::dispatch_to(i, kernels::encode_fn{}, j);
    return codes;
}

std::vector<std::uint8_t> run_ref(const encode_job& base) {
    std::vector<std::uint8_t> codes(base.rows * base.code_stride, 0xA5);
    encode_job j = base;
    j.codes = codes.data();
    kernels::encode_ref(j);
    return codes;
}

// Each rule on every shape and instruction set, against the scalar twin.
void check_rule_on_shapes(encode_job rule, bool with_zero_bias, std::mt19937& rng) {
    for (const shape& s : shapes) {
        const std::size_t per_row = s.param_stride ? s.param_stride : s.cols / s.group;
        const std::size_t np = (s.param_stride ? s.rows : 1) * per_row;
        const std::vector<float> x = make_x(s.rows * (s.cols + 3), rng);
        const std::vector<float> scale = make_scales(np, rng, rule.kind != encode_kind::minifloat);
        std::vector<float> zero(np), bias(np);
        std::uniform_int_distribution<int> zd(0, (1 << rule.bits) - 1);
        std::normal_distribution<float> bd(0.0f, 2.0f);
        for (auto& z : zero) z = static_cast<float>(zd(rng));
        for (auto& b : bias) b = bd(rng);
        encode_job j = rule;
        j.x = x.data();
        j.x_stride = s.cols + 3;
        j.rows = s.rows;
        j.cols = s.cols;
        j.group = s.group;
        j.param_stride = s.param_stride;
        j.scale = scale.data();
        j.zero = with_zero_bias ? zero.data() : nullptr;
        j.bias = with_zero_bias ? bias.data() : nullptr;
        j.code_stride = (s.cols * static_cast<std::size_t>(rule.bits) + 7) / 8 + 2;
        const auto want = run_ref(j);
        // The scalar twin packs what the rule on floats gives, code by code.
        for (std::size_t r = 0; r < s.rows; ++r)
            for (std::size_t c = 0; c < s.cols; ++c) {
                const std::size_t g = r * s.param_stride + c / s.group;
                const float z = with_zero_bias ? zero[g] : 0.0f, b = with_zero_bias ? bias[g] : 0.0f;
                const float xv = x[r * j.x_stride + c];
                float code = 0.0f;
                if (rule.kind == encode_kind::affine) code = affine_code(*rule.affine, xv, scale[g], z, b);
                if (rule.kind == encode_kind::thresholds) code = threshold_code(*rule.thresholds, xv, scale[g]);
                if (rule.kind == encode_kind::minifloat) code = minifloat_code(*rule.minifloat, xv, scale[g]);
                unsigned got = 0;
                for (int k = 0; k < rule.bits; ++k) {
                    const std::size_t pos = c * static_cast<std::size_t>(rule.bits) + static_cast<std::size_t>(k);
                    got |= ((want[r * j.code_stride + pos / 8] >> (pos % 8)) & 1u) << k;
                }
                REQUIRE(got == static_cast<unsigned>(code));
            }
        for (isa i : kernels::available_isas()) {
            INFO("isa " << kernels::isa_name(i) << ", " << s.rows << " x " << s.cols << " group " << s.group
                        << " param_stride " << s.param_stride);
            // Padding bits of each row's last byte are zero; the stride's
            // spare bytes are untouched.
            REQUIRE(run(j, i) == want);
        }
    }
}

template <int Bits, affine_mode Mode>
void check_affine(std::mt19937& rng) {
    const affine_rule r = affine<Bits, Mode>{}.encode_rule();
    encode_job j{};
    j.kind = encode_kind::affine;
    j.affine = &r;
    j.bits = Bits;
    INFO("affine " << (affine<Bits, Mode>{}.name()));
    check_rule_on_shapes(j, true, rng);
    check_rule_on_shapes(j, false, rng);
}

// A scheme's own encode_rule (ggml's legacy rules: half up with a bias,
// half away from zero, C's cast of an infinite 1 / scale).
template <class S>
void check_scheme_rule(std::mt19937& rng) {
    const affine_rule r = S{}.encode_rule();
    encode_job j{};
    j.kind = encode_kind::affine;
    j.affine = &r;
    j.bits = S::bits;
    INFO("scheme " << S{}.name());
    check_rule_on_shapes(j, true, rng);
    check_rule_on_shapes(j, false, rng);
}

}  // namespace

TEST_CASE("encode kernel equals its scalar twin for every affine mode and width") {
    std::mt19937 rng(11);
    check_affine<1, affine_mode::asymmetric>(rng);
    check_affine<2, affine_mode::asymmetric>(rng);
    check_affine<3, affine_mode::asymmetric>(rng);
    check_affine<4, affine_mode::symmetric>(rng);
    check_affine<4, affine_mode::symmetric_signed_max>(rng);
    check_affine<5, affine_mode::symmetric_signed_max>(rng);
    check_affine<4, affine_mode::asymmetric_float>(rng);
    check_affine<6, affine_mode::mlx>(rng);
    check_affine<7, affine_mode::symmetric>(rng);
    check_affine<8, affine_mode::symmetric>(rng);
    check_affine<8, affine_mode::mlx>(rng);
}

TEST_CASE("encode kernel equals its scalar twin for torchao's bf16 steps") {
    std::mt19937 rng(12);
    affine<4, affine_mode::asymmetric_float> s{};
    s.float_zero.compute = param_dtype::bf16;
    const affine_rule r = s.encode_rule();
    REQUIRE(r.bf16_steps);
    encode_job j{};
    j.kind = encode_kind::affine;
    j.affine = &r;
    j.bits = 4;
    check_rule_on_shapes(j, true, rng);
    check_rule_on_shapes(j, false, rng);
}

TEST_CASE("encode kernel equals its scalar twin for ggml's legacy rules") {
    std::mt19937 rng(13);
    check_scheme_rule<ggml_q4_0_scheme>(rng);
    check_scheme_rule<ggml_q4_1_scheme>(rng);
    check_scheme_rule<ggml_q5_0_scheme>(rng);
    check_scheme_rule<ggml_q5_1_scheme>(rng);
    check_scheme_rule<ggml_q8_0_scheme>(rng);
    check_scheme_rule<ggml_affine<3, ggml_rule::signed_max>>(rng);
    check_scheme_rule<ggml_affine<2, ggml_rule::absmax>>(rng);
    check_scheme_rule<ggml_affine<6, ggml_rule::min_max>>(rng);
}

TEST_CASE("encode kernel equals its scalar twin for codebooks and minifloats") {
    std::mt19937 rng(12);
    const float user[] = {0.5f, -2.0f, 0.5f, 3.0f, -0.25f, 1.0f};  // unsorted, a repeat
    const codebook<4> books[] = {nf4(), fp4(), iq4_nl(), codebook<4>{}};
    const codebook<3> small(user, "user", codebook_ties::higher_code);
    for (const auto& cb : books) {
        REQUIRE(cb.encode_rule() != nullptr);
        encode_job j{};
        j.kind = encode_kind::thresholds;
        j.thresholds = cb.encode_rule();
        j.bits = 4;
        INFO("codebook " << cb.name());
        check_rule_on_shapes(j, false, rng);
    }
    encode_job j{};
    j.kind = encode_kind::thresholds;
    j.thresholds = small.encode_rule();
    j.bits = 3;
    check_rule_on_shapes(j, false, rng);

    const minifloat_rule rules[] = {elem::fp8_e4m3::rule, elem::fp8_e5m2::rule, elem::fp6_e3m2::rule,
                                    elem::fp6_e2m3::rule, elem::fp4_e2m1::rule};
    const int bits[] = {8, 8, 6, 6, 4};
    for (std::size_t k = 0; k < 5; ++k) {
        encode_job m{};
        m.kind = encode_kind::minifloat;
        m.minifloat = &rules[k];
        m.bits = bits[k];
        INFO("minifloat " << k);
        check_rule_on_shapes(m, false, rng);
    }
}

TEST_CASE("minifloat rule equals core/numeric.hpp's conversions") {
    // Every float whose bits are a multiple of 97 (44 million), every float
    // within 64 ulps of each element's decision midpoints, saturation and the
    // zeros: against the branchy bit-level conversions of core/numeric.hpp.
    const auto check_elem = [](const minifloat_rule& r, auto convert, auto decode, int bits) {
        const auto same = [&](float x) {
            const auto want = convert(x);
            const auto got = static_cast<std::uint8_t>(minifloat_code(r, x, 1.0f));
            if (want != got) FAIL("x = " << x << " (bits " << std::bit_cast<std::uint32_t>(x) << "): numeric gives "
                                         << int(want) << ", the rule " << int(got));
        };
        for (std::uint64_t b = 0; b < (std::uint64_t{1} << 32); b += 97) {
            const float x = std::bit_cast<float>(static_cast<std::uint32_t>(b));
            if (std::isfinite(x)) same(x);
        }
        const int mags = 1 << (bits - 1);
        for (int c = 0; c + 1 < mags; ++c) {
            const float lo = decode(static_cast<std::uint8_t>(c)), hi = decode(static_cast<std::uint8_t>(c + 1));
            if (!std::isfinite(hi)) continue;
            const float mid = (lo + hi) / 2.0f;
            float v = mid;
            for (int k = 0; k < 64; ++k) v = std::nextafter(v, 0.0f);
            for (int k = 0; k < 129; ++k, v = std::nextafter(v, INFINITY)) {
                same(v);
                same(-v);
            }
        }
        for (float v : {0.0f, -0.0f, 1e38f, -1e38f, std::numeric_limits<float>::max(), 1e-45f, -1e-45f})
            same(v);
    };
    check_elem(elem::fp8_e4m3::rule, [](float x) { return float_to_fp8_e4m3(x, true); }, fp8_e4m3_to_float, 8);
    check_elem(elem::fp8_e5m2::rule, [](float x) { return float_to_fp8_e5m2(x, true); }, fp8_e5m2_to_float, 8);
    check_elem(elem::fp6_e3m2::rule, float_to_fp6_e3m2, fp6_e3m2_to_float, 6);
    check_elem(elem::fp6_e2m3::rule, float_to_fp6_e2m3, fp6_e2m3_to_float, 6);
    check_elem(elem::fp4_e2m1::rule, float_to_fp4_e2m1, fp4_e2m1_to_float, 4);
}

TEST_CASE("threshold rule equals a search of the codebook's thresholds") {
    // The statement the rule replaced: lower_bound over the thresholds, an
    // input on a threshold moving up where the table says so, the code of
    // that interval; sign-magnitude tables search |v| and add the sign bit.
    std::mt19937 rng(5);
    const float user[] = {0.5f, -2.0f, 0.5f, 3.0f, -0.25f, 1.0f};
    const codebook<4> books[] = {nf4(), fp4(), iq4_nl(), codebook<4>(user, "user"),
                                 codebook<4>(user, "user-up", codebook_ties::higher_code)};
    for (const auto& cb : books) {
        const auto t = cb.thresholds();
        const threshold_rule& r = *cb.encode_rule();
        // Intervals' codes from the rule's own description, checked against decode.
        std::vector<float> probes;
        for (float b : t)
            for (float d : {0.0f, 1e-7f, -1e-7f}) probes.push_back(b + d), probes.push_back(-(b + d));
        std::uniform_real_distribution<float> u(-200.0f, 200.0f);
        for (int k = 0; k < 20000; ++k) probes.push_back(u(rng) / (k % 7 == 0 ? 1.0f : 100.0f));
        for (float v : probes) {
            const bool sm = r.sign_code != 0.0f;
            const float m = sm ? std::fabs(v) : v;
            std::size_t i = static_cast<std::size_t>(std::lower_bound(t.begin(), t.end(), m) - t.begin());
            if (i < t.size() && m == t[i] && r.above[i] < t[i]) ++i;  // ties up
            float code = r.first;
            for (std::size_t k = 0; k < i; ++k) code += r.step[k];
            if (sm && v < 0.0f) code += r.sign_code;
            INFO(cb.name() << " v = " << v);
            REQUIRE(threshold_code(r, v, 1.0f) == code);
            REQUIRE(cb.encode(v, {1.0f}) == static_cast<std::uint8_t>(code));
            // And the code is a nearest table value (ties aside).
            const float dv = cb.decode(static_cast<std::uint8_t>(code), {1.0f});
            for (float e : cb.table().first(cb.entries())) REQUIRE(std::fabs(v - dv) <= std::fabs(v - e) + 1e-6f);
        }
    }
}

TEST_CASE("group extremes kernel equals its scalar twin and flags non-finite values") {
    std::mt19937 rng(3);
    std::vector<shape> all(std::begin(shapes), std::end(shapes));
    // Rows of at least a batch of groups of whole batches (reduced a batch of
    // groups at a time), with groups left over.
    for (const shape& s : {shape{3, 1024, 16, 64}, shape{2, 1088, 32, 34}, shape{2, 2048, 64, 32},
                           shape{2, 272, 16, 17}, shape{2, 576, 32, 18}})
        all.push_back(s);
    for (const shape& s : all) {
        if (s.param_stride == 0) continue;
        std::vector<float> x = make_x(s.rows * s.cols, rng);
        // +a and -a both present in some groups: the first of them wins.
        for (std::size_t g = 0; g * s.group < x.size(); g += 3) {
            x[g * s.group] = -7e6f;
            x[std::min(x.size() - 1, g * s.group + s.group - 1)] = 7e6f;
        }
        const std::size_t np = s.rows * (s.cols / s.group);
        extremes want(np), got(np);
        bool nf_want = false;
        kernels::group_extremes_ref(want.job(x.data(), s, &nf_want));
        REQUIRE(!nf_want);
        for (isa i : kernels::available_isas()) {
            bool nf = false;
            kernels::dispatch_to(i, kernels::group_extremes_fn{}, got.job(x.data(), s, &nf));
            REQUIRE(!nf);
            for (std::size_t g = 0; g < np; ++g) {
                INFO("isa " << kernels::isa_name(i) << ", " << s.rows << " x " << s.cols << " group " << s.group
                            << ": group " << g);
                REQUIRE(got.min[g] == want.min[g]);
                REQUIRE(got.max[g] == want.max[g]);
                REQUIRE(std::bit_cast<std::uint32_t>(got.m[g]) == std::bit_cast<std::uint32_t>(want.m[g]));
            }
        }
        for (float bad : {NAN, INFINITY, -INFINITY}) {
            std::vector<float> y = x;
            y[y.size() - 1] = bad;
            for (isa i : kernels::available_isas()) {
                bool nf = false;
                kernels::dispatch_to(i, kernels::group_extremes_fn{}, got.job(y.data(), s, &nf));
                INFO("isa " << kernels::isa_name(i) << ", " << s.rows << " x " << s.cols << " group " << s.group
                            << ", last value " << bad);
                REQUIRE(nf);
            }
        }
    }
}

namespace {

// Group extremes that reach every branch of the fit rules: constant groups,
// zero extremes (flagged), one-signed groups, ties of |min| and |max|, and
// magnitudes around the edges of fp16 and bf16 (subnormal halves, 65504 and
// the 65520 that overflows) and of float itself.
extremes fit_inputs(std::mt19937& rng) {
    std::vector<float> mags = {0.0f, 1e-45f, 1e-38f, 0x1p-126f, 0x1p-133f, 0x1p-149f, 0x1p-25f, 0x1.8p-25f,
                               0x1p-24f, 0x1.8p-24f, 0x1p-15f, 0x1.ffcp-15f, 0x1p-14f, 5.96e-8f, 6.1e-5f,
                               0.5f, 1.0f, 1.5f, 7.0f, 65504.0f, 65519.0f, 65520.0f, 65536.0f, 1e30f, 3e38f};
    std::uniform_real_distribution<float> u(-3.0f, 3.0f);
    for (int i = 0; i < 60; ++i) mags.push_back(std::ldexp(std::fabs(u(rng)) + 0.01f, static_cast<int>(rng() % 80) - 40));
    extremes ex;
    for (float a : mags)
        for (float b : mags) {
            ex.push_back({-a, b, a > b ? -a : b});      // min -a, max b
            ex.push_back({a, a, a});                    // constant
            ex.push_back({-a, -a, -a});
            if (a <= b) ex.push_back({a, b, b});         // one-signed
            if (a <= b) ex.push_back({-b, -a, -b});
        }
    ex.push_back({-2.0f, 2.0f, -2.0f});  // a tie: the first element wins
    ex.push_back({-2.0f, 2.0f, 2.0f});
    ex.push_back({-0.0f, 3.0f, 3.0f});
    return ex;
}

std::vector<fit_rule> fit_rules_under_test() {
    std::vector<fit_rule> rules;
    for (param_dtype t : {param_dtype::f32, param_dtype::f16, param_dtype::bf16})
        for (float clip : {1.0f, 0.9f}) {
            const auto add = [&](fit_kind k, int bits, float extreme) {
                fit_rule r;
                r.kind = k;
                r.bits = bits;
                r.scale_type = t;
                r.clip = clip;
                r.extreme = extreme;
                rules.push_back(r);
            };
            for (int b : {2, 3, 4, 8}) add(fit_kind::symmetric, b, 1.0f);
            for (int b : {1, 4, 5}) add(fit_kind::symmetric_signed_max, b, 1.0f);
            for (int b : {1, 2, 4, 8}) add(fit_kind::asymmetric, b, 1.0f);
            for (int b : {1, 2, 3, 4, 8}) add(fit_kind::mlx, b, 1.0f);
            for (float e : {1.0f, -1.0f, 6.0f, 448.0f}) {
                add(fit_kind::absmax, 4, e);
                add(fit_kind::signed_absmax, 4, e);
            }
            for (int emax : {1, 2, 4, 8, 15}) {
                add(fit_kind::pow2_floor, 4, 1.0f);
                rules.back().emax = emax;
            }
        }
    return rules;
}

std::vector<std::uint32_t> fit_bits(const std::vector<float>& v) {
    std::vector<std::uint32_t> b(v.size());
    for (std::size_t i = 0; i < v.size(); ++i) b[i] = std::bit_cast<std::uint32_t>(v[i]);
    return b;
}

}  // namespace

TEST_CASE("fit kernel equals its scalar twin on every instruction set") {
    std::mt19937 rng(21);
    const auto ex = fit_inputs(rng);
    for (const fit_rule& r : fit_rules_under_test()) {
        for (std::size_t step : {std::size_t{1}, std::size_t{3}}) {
            const std::size_t n = ex.size();
            std::vector<float> ws(n * step), we(n * step), gs(n * step), ge(n * step);
            std::vector<std::uint8_t> wf(n), gf(n);
            kernels::fit_ref({ex.min.data(), ex.max.data(), ex.m.data(), n, &r, ws.data(), we.data(), step, wf.data()});
            for (isa i : kernels::available_isas()) {
                INFO("isa " << kernels::isa_name(i) << " kind " << static_cast<int>(r.kind) << " bits " << r.bits
                            << " scale type " << to_string(r.scale_type) << " clip " << r.clip << " extreme "
                            << r.extreme << " step " << step);
                kernels::dispatch_to(i, kernels::fit_fn{}, kernels::fit_job{ex.min.data(), ex.max.data(), ex.m.data(), n, &r, gs.data(), ge.data(), step, gf.data()});
                REQUIRE(gf == wf);
                REQUIRE(fit_bits(gs) == fit_bits(ws));
                REQUIRE(fit_bits(ge) == fit_bits(we));
            }
        }
    }
}

TEST_CASE("fit kernel's rounding to fp16 and bf16 equals core/numeric.hpp's on every half and its neighbours") {
    // symmetric_signed_max at 1 bit stores -m: the stored scale is the
    // rounding of -m to the scale type (or the type's smallest step for a
    // nonzero m that rounds to 0).
    extremes ex;
    for (std::uint32_t h = 0; h < 0x10000u; ++h) {
        const float v = fp16_to_float(static_cast<std::uint16_t>(h));
        if (!std::isfinite(v) || v == 0.0f) continue;
        for (float x : {v, std::nextafter(v, 0.0f), std::nextafter(v, 2 * v),
                        v + (fp16_to_float(static_cast<std::uint16_t>(h + 1)) - v) / 2})
            if (std::isfinite(x) && x != 0.0f) ex.push_back({-std::fabs(x), std::fabs(x), x});
    }
    std::mt19937 rng(5);
    for (int k = 0; k < 200000; ++k) {
        const float x = std::bit_cast<float>(static_cast<std::uint32_t>(rng()));
        if (std::isfinite(x) && x != 0.0f) ex.push_back({-std::fabs(x), std::fabs(x), x});
    }
    for (param_dtype t : {param_dtype::f16, param_dtype::bf16}) {
        fit_rule r;
        r.kind = fit_kind::symmetric_signed_max;
        r.bits = 1;
        r.scale_type = t;
        const std::size_t n = ex.size();
        std::vector<float> s(n), e(n);
        std::vector<std::uint8_t> f(n);
        for (isa i : kernels::available_isas()) {
            INFO("isa " << kernels::isa_name(i) << " scale type " << to_string(t));
            kernels::dispatch_to(i, kernels::fit_fn{}, kernels::fit_job{ex.min.data(), ex.max.data(), ex.m.data(), n, &r, s.data(), e.data(), 1, f.data()});
            for (std::size_t g = 0; g < n; ++g) {
                const float want = round_to_param_dtype(-ex[g].signed_absmax, t);
                INFO("value " << ex[g].signed_absmax);
                if (!std::isfinite(want)) {
                    REQUIRE(f[g] == 1);
                } else if (want == 0.0f) {
                    REQUIRE(f[g] == 0);
                    REQUIRE(s[g] == (t == param_dtype::f16 ? 0x1p-24f : 0x1p-133f) * (ex[g].signed_absmax < 0 ? 1 : -1));
                } else {
                    REQUIRE(f[g] == 0);
                    REQUIRE(std::bit_cast<std::uint32_t>(s[g]) == std::bit_cast<std::uint32_t>(want));
                }
            }
        }
    }
}

template <class S>
S scale_type_of(S s, param_dtype t) {
    s.scale_type = t;
    return s;
}

TEST_CASE("fit rules give the schemes' own fit_stats where the kernel does not flag the group") {
    std::mt19937 rng(8);
    const auto ex = fit_inputs(rng);
    const auto check = [&](const auto& scheme) {
        using P = typename std::decay_t<decltype(scheme)>::params;
        const fit_rule r = scheme.stats_rule();
        const std::size_t step = sizeof(P) / sizeof(float), n = ex.size();
        std::vector<float> st(n * step), en(n * step);
        std::vector<std::uint8_t> fl(n);
        kernels::fit_ref({ex.min.data(), ex.max.data(), ex.m.data(), n, &r, st.data(), en.data(), step, fl.data()});
        std::size_t fitted = 0, thrown = 0;
        for (std::size_t g = 0; g < n; ++g) {
            const detail::group_stats s{ex[g].min, ex[g].max, ex[g].signed_absmax, ex[g].min == ex[g].max};
            INFO(scheme.name() << " group " << g << ": " << ex[g].min << " " << ex[g].max << " " << ex[g].signed_absmax);
            try {
                const P p = scheme.fit_stats(s);
                ++fitted;
                if (ex[g].min == 0.0f || ex[g].max == 0.0f) {
                    REQUIRE(fl[g] == 1);
                    continue;
                }
                REQUIRE(fl[g] == 0);
                REQUIRE(std::bit_cast<std::uint32_t>(st[g * step]) == std::bit_cast<std::uint32_t>(p.scale));
                if constexpr (requires { p.zero; p.bias; }) {
                    REQUIRE(std::bit_cast<std::uint32_t>(st[g * step + 1]) == std::bit_cast<std::uint32_t>(p.zero));
                    REQUIRE(std::bit_cast<std::uint32_t>(st[g * step + 2]) == std::bit_cast<std::uint32_t>(p.bias));
                }
            } catch (const lowbit::error&) {
                ++thrown;
                REQUIRE(fl[g] == 1);
            }
        }
        REQUIRE(fitted > thrown);
        if (scheme.scale_type == param_dtype::f16) REQUIRE(thrown > 0);  // 1e30 and 65520 do not fit
    };
    for (param_dtype t : {param_dtype::f32, param_dtype::f16, param_dtype::bf16}) {
        check(scale_type_of(affine<4, affine_mode::symmetric>{}, t));
        check(scale_type_of(affine<3, affine_mode::symmetric_signed_max>{}, t));
        check(scale_type_of(affine<2, affine_mode::asymmetric>{}, t));
        check(scale_type_of(affine<8, affine_mode::asymmetric>{}, t));
        check(scale_type_of(affine<4, affine_mode::mlx>{}, t));
        auto cb = nf4();
        cb.scale_type = t;
        check(cb);
        check(scale_type_of(nvfp4_elements{}, t));
        check(scale_type_of(minifloat<elem::fp8_e4m3, scale_rule::amax>{}, t));
    }
    check(mxfp4{});
    check(mxfp8_e5m2{});
}

TEST_CASE("the MX scale rule equals e8m0_exponent_for_mx on every exponent and edge") {
    std::vector<float> amax = {0.0f, 1e-45f, 0x1p-127f, 0x1.fffffcp-127f, 0x1p-126f, 1.0f, 3e38f, 0x1.fffffep127f};
    for (int e = -149; e <= 127; ++e)
        for (float f : {1.0f, 1.5f, 1.9999999f}) amax.push_back(std::ldexp(f, e));
    for (int emax : {1, 2, 4, 8, 15})
        for (float clip : {1.0f, 0.75f})
            for (float a : amax) {
                fit_rule r;
                r.kind = fit_kind::pow2_floor;
                r.emax = emax;
                r.clip = clip;
                const float want = e8m0_to_float(static_cast<std::uint8_t>(e8m0_exponent_for_mx(a * clip, emax) + 127));
                INFO("amax " << a << " emax " << emax << " clip " << clip);
                REQUIRE(std::bit_cast<std::uint32_t>(fit_params(r, -a, a, a).scale) == std::bit_cast<std::uint32_t>(want));
                REQUIRE(std::bit_cast<std::uint32_t>(fit_params(r, -a, a, -a).scale) == std::bit_cast<std::uint32_t>(want));
            }
}

TEST_CASE("the quantizer's single pass equals its checks-first path for every format") {
    // An importance vector of ones changes nothing these fits look at, but
    // sends quantize down the path that checks, fits and encodes in turn.
    std::mt19937 rng(9);
    const std::size_t rows = 6, cols = 768;
    std::vector<float> w = make_x(rows * cols, rng);
    for (std::size_t c = 0; c < 64; ++c) w[cols + c] = 0.0f;   // an all-zero group
    for (std::size_t c = 64; c < 128; ++c) w[cols + c] = 2.5f;  // a constant one
    w[2 * cols + 5] = -0.0f;
    const matrix_view<const float> v(w.data(), rows, cols);
    const std::vector<float> ones(cols, 1.0f);
    for (const auto& f : formats()) {
        if (f.family == "ggml") continue;
        INFO(f.name);
        for (isa i : kernels::available_isas()) {
            kernels::set_active_isa(i);
            std::string e1, e2;
            std::unique_ptr<quantized_base> a, b;
            try { a = quantize(f, v); } catch (const lowbit::error& e) { e1 = e.what(); }
            try { b = quantize(f, v, ones); } catch (const lowbit::error& e) { e2 = e.what(); }
            REQUIRE(e1 == e2);
            if (!a) continue;
            std::vector<float> da(w.size()), db(w.size());
            a->dequantize(matrix_view<float>(da.data(), rows, cols));
            b->dequantize(matrix_view<float>(db.data(), rows, cols));
            REQUIRE(std::memcmp(da.data(), db.data(), da.size() * sizeof(float)) == 0);
            REQUIRE(a->storage_bytes() == b->storage_bytes());
        }
        kernels::set_active_isa(kernels::available_isas().front());
    }
}

TEST_CASE("the single pass reports a non-finite weight first, wherever it is") {
    const std::size_t rows = 40, cols = 256;
    std::vector<float> w(rows * cols, 0.25f);
    w[3 * cols + 17] = 1e30f;   // int4-g128-sym with an f16 scale cannot hold this group
    w[37 * cols + 200] = NAN;   // ... but the NaN is what to report
    const matrix_view<const float> v(w.data(), rows, cols);
    for (unsigned threads : {1u, 4u}) {
        quantize_options opt;
        opt.threads = threads;
        try {
            (void)quantize(find_format("int4-g128-sym"), v, {}, opt);
            FAIL("no error");
        } catch (const lowbit::error& e) {
            REQUIRE(e.code() == errc::non_finite);
            REQUIRE(std::string(e.what()).find("row 37, column 200") != std::string::npos);
        }
        w[37 * cols + 200] = 0.25f;
        try {
            (void)quantize(find_format("int4-g128-sym"), v, {}, opt);
            FAIL("no error");
        } catch (const lowbit::error& e) {
            REQUIRE(e.code() == errc::invalid_argument);
            REQUIRE(std::string(e.what()).find("row 3, columns 0..127") != std::string::npos);
        }
        w[37 * cols + 200] = NAN;
    }
}

TEST_CASE("double quantization's two passes report a non-finite weight with its position") {
    const std::size_t rows = 40, cols = 256;
    std::vector<float> w(rows * cols, 0.25f);
    w[39 * cols + 255] = -INFINITY;
    const matrix_view<const float> v(w.data(), rows, cols);
    for (const char* name : {"nf4-b64-dq", "nvfp4", "int4-sb256"})
        for (unsigned threads : {1u, 3u}) {
            quantize_options opt;
            opt.threads = threads;
            INFO(name << " threads " << threads);
            try {
                (void)quantize(find_format(name), v, {}, opt);
                FAIL("no error");
            } catch (const lowbit::error& e) {
                REQUIRE(e.code() == errc::non_finite);
                REQUIRE(std::string(e.what()).find("row 39, column 255") != std::string::npos);
            }
        }
}

TEST_CASE("candidate errors kernel equals its scalar twin and the clipping search's own error") {
    std::mt19937 rng(21);
    using S = affine<4, affine_mode::asymmetric>;
    const S base{};
    const affine_rule rule = S{}.encode_rule();
    for (std::size_t n : {1u, 7u, 32u, 128u, 333u})
        for (std::size_t count : {1u, 5u, 16u, 21u, 33u, 64u}) {
            const std::vector<float> x = make_x(n, rng);
            std::vector<float> w(n);
            std::uniform_real_distribution<float> u(0.0f, 3.0f);
            for (auto& v : w) v = u(rng);
            std::vector<float> sc(count), ze(count), bi(count);
            for (std::size_t k = 0; k < count; ++k) {
                S s = base;
                s.clip = 1.0f - 0.5f * static_cast<float>(k) / 64.0f;
                const auto p = s.fit(x);
                sc[k] = p.scale, ze[k] = p.zero, bi[k] = p.bias;
            }
            for (const float* wp : {static_cast<const float*>(nullptr), static_cast<const float*>(w.data())}) {
                std::vector<double> want(count), got(count);
                kernels::candidates_job j{x.data(), wp, n, &rule, sc.data(), ze.data(), bi.data(), count, want.data()};
                kernels::candidate_errors_ref(j);
                for (std::size_t k = 0; k < count; ++k) {
                    const affine_params p{sc[k], ze[k], bi[k]};
                    const double e = clip_search<S>::error(base, p, x, wp ? std::span<const float>(w) : std::span<const float>{});
                    REQUIRE(std::bit_cast<std::uint64_t>(e) == std::bit_cast<std::uint64_t>(want[k]));
                }
                for (isa i : kernels::available_isas()) {
                    j.err = got.data();
                    kernels::dispatch_to(i, kernels::candidate_errors_fn{}, j);
                    INFO("isa " << kernels::isa_name(i) << " n " << n << " count " << count);
                    for (std::size_t k = 0; k < count; ++k)
                        REQUIRE(std::bit_cast<std::uint64_t>(got[k]) == std::bit_cast<std::uint64_t>(want[k]));
                }
            }
        }
}
