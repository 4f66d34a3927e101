// formats/ggml_convert.hpp and scheme/ggml_legacy.hpp: ggml's legacy rules
// composed with the generic core (quantizer at per_group(32)) give the bytes
// of ggml's reference quantizers (ggml_blocks.hpp, verified against ggml), and
// ggml's blocks read back dequantize to ggml's values, on every instruction set.
#include "catch.hpp"

#include <lowbit/formats/ggml_blocks.hpp>
#include <lowbit/formats/ggml_convert.hpp>
#include <lowbit/kernels/dispatch.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;
using kernels::isa;

namespace {

constexpr std::size_t n_rows = 16, n_cols = 4096;

using row_quantize = void (*)(const float*, void*, std::size_t, const float*);
using row_dequantize = void (*)(const void*, float*, std::size_t);

template <class S>
struct ggml_fns;
template <>
struct ggml_fns<ggml_q4_0_scheme> {
    static constexpr row_quantize quantize = ggml::quantize_row_q4_0;
    static constexpr row_dequantize dequantize = ggml::dequantize_row_q4_0;
    static quantizer<ggml_q4_0_scheme> make() { return ggml_q4_0_quantizer(); }
};
template <>
struct ggml_fns<ggml_q4_1_scheme> {
    static constexpr row_quantize quantize = ggml::quantize_row_q4_1;
    static constexpr row_dequantize dequantize = ggml::dequantize_row_q4_1;
    static quantizer<ggml_q4_1_scheme> make() { return ggml_q4_1_quantizer(); }
};
template <>
struct ggml_fns<ggml_q5_0_scheme> {
    static constexpr row_quantize quantize = ggml::quantize_row_q5_0;
    static constexpr row_dequantize dequantize = ggml::dequantize_row_q5_0;
    static quantizer<ggml_q5_0_scheme> make() { return ggml_q5_0_quantizer(); }
};
template <>
struct ggml_fns<ggml_q5_1_scheme> {
    static constexpr row_quantize quantize = ggml::quantize_row_q5_1;
    static constexpr row_dequantize dequantize = ggml::dequantize_row_q5_1;
    static quantizer<ggml_q5_1_scheme> make() { return ggml_q5_1_quantizer(); }
};
template <>
struct ggml_fns<ggml_q8_0_scheme> {
    static constexpr row_quantize quantize = ggml::quantize_row_q8_0;
    static constexpr row_dequantize dequantize = ggml::dequantize_row_q8_0;
    static quantizer<ggml_q8_0_scheme> make() { return ggml_q8_0_quantizer(); }
};

template <>
struct ggml_fns<ggml_mxfp4_scheme> {
    static constexpr row_quantize quantize = ggml::quantize_row_mxfp4;
    static constexpr row_dequantize dequantize = ggml::dequantize_row_mxfp4;
    static quantizer<ggml_mxfp4_scheme> make() { return ggml_mxfp4_quantizer(); }
};
template <>
struct ggml_fns<ggml_iq4_nl_scheme> {
    static constexpr row_quantize quantize = ggml::quantize_row_iq4_nl;
    static constexpr row_dequantize dequantize = ggml::dequantize_row_iq4_nl;
    static quantizer<ggml_iq4_nl_scheme> make() { return ggml_iq4_nl_rtn_quantizer(); }
};

struct data_set {
    std::string name;
    std::vector<float> w;
    std::size_t rows, cols;
};

data_set normal(std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    data_set d{"N(0,1)", std::vector<float>(n_rows * n_cols), n_rows, n_cols};
    for (auto& v : d.w) v = nd(rng);
    return d;
}

// One sign throughout: every block's minimum (or maximum) far from 0.
data_set lognormal(std::uint32_t seed, float sign) {
    std::mt19937 rng(seed);
    std::lognormal_distribution<float> ln(0.0f, 1.0f);
    data_set d{sign > 0 ? "log-normal" : "negative log-normal", std::vector<float>(n_rows * n_cols), n_rows, n_cols};
    for (auto& v : d.w) v = sign * ln(rng);
    return d;
}

data_set uniform(std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    data_set d{"uniform", std::vector<float>(n_rows * n_cols), n_rows, n_cols};
    for (auto& v : d.w) v = u(rng);
    return d;
}

// Blocks of 32 made to hit every rule's corners: zeros of both signs,
// constants, exact ties x = k d / 2 for each type's d (a power of two, so
// x * (1/d) is exact), +a and -a both largest, huge and tiny values,
// scales whose fp16 is 0 and scales whose 1/d overflows.
data_set adversarial(std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::uniform_int_distribution<int> expo(-12, 6);
    data_set d{"adversarial", std::vector<float>(n_rows * n_cols), n_rows, n_cols};
    const auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
    constexpr int kinds = 20;
    for (std::size_t b = 0; b < d.w.size() / 32; ++b) {
        float* x = d.w.data() + 32 * b;
        const float step = std::ldexp(1.0f, expo(rng));  // a power-of-two d
        const float sgn = (rng() & 1) ? 1.0f : -1.0f;
        const int kind = static_cast<int>((b + static_cast<std::size_t>(pick(0, 3))) % kinds);
        switch (kind) {
        case 0: for (int j = 0; j < 32; ++j) x[j] = 0.0f; break;
        case 1: for (int j = 0; j < 32; ++j) x[j] = (rng() & 1) ? 0.0f : -0.0f; break;
        case 2: for (int j = 0; j < 32; ++j) x[j] = -0.0f; break;
        case 3: {
            const float c = sgn * std::ldexp(1.0f + static_cast<float>(pick(0, 7)) / 8.0f, pick(-20, 14));
            for (int j = 0; j < 32; ++j) x[j] = c;
            break;
        }
        case 4:  // Q4_0: largest -+8d, the rest k d / 2
        case 5:  // Q5_0: largest -+16d
        case 6: {  // Q8_0: largest +-127d
            const int top = kind == 4 ? 8 : kind == 5 ? 16 : 127;
            for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(pick(-2 * top + 1, 2 * top - 1)) * step / 2.0f;
            x[pick(0, 31)] = sgn * static_cast<float>(top) * step;
            break;
        }
        case 7:    // Q4_1: min a, max a + 15d, the rest a + k d / 2
        case 8: {  // Q5_1
            const int top = kind == 7 ? 15 : 31;
            const float a = static_cast<float>(pick(-40, 40)) * step;
            for (int j = 0; j < 32; ++j) x[j] = a + static_cast<float>(pick(0, 2 * top)) * step / 2.0f;
            x[pick(0, 15)] = a;
            x[pick(16, 31)] = a + static_cast<float>(top) * step;
            break;
        }
        case 9: {  // +a and -a both of largest magnitude
            const float a = std::fabs(nd(rng)) + 3.0f;
            for (int j = 0; j < 32; ++j) x[j] = nd(rng);
            x[pick(0, 15)] = sgn * a;
            x[pick(16, 31)] = -sgn * a;
            break;
        }
        case 10: for (int j = 0; j < 32; ++j) x[j] = std::fmax(-6e4f, std::fmin(6e4f, nd(rng) * 2e4f)); break;
        case 11: for (int j = 0; j < 32; ++j) x[j] = sgn * (6e4f - static_cast<float>(pick(0, 100))); break;
        case 12: for (int j = 0; j < 32; ++j) x[j] = nd(rng) * 1e-30f; break;  // fp16(d) = 0, 1/d finite
        case 13: for (int j = 0; j < 32; ++j) x[j] = nd(rng) * 1e-38f; break;  // 1/d overflows (some types)
        case 14: for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(pick(-3, 3)) * 1e-45f; break;  // subnormal
        case 15: {  // one large value among tiny ones
            for (int j = 0; j < 32; ++j) x[j] = nd(rng) * 1e-3f;
            x[pick(0, 31)] = sgn * 500.0f;
            break;
        }
        case 16: {  // nonnegative with a -0 minimum
            for (int j = 0; j < 32; ++j) x[j] = std::fabs(nd(rng));
            x[pick(0, 15)] = -0.0f;
            x[pick(16, 31)] = 0.0f;
            break;
        }
        case 17: for (int j = 0; j < 32; ++j) x[j] = sgn * std::fabs(nd(rng)); break;
        case 18: for (int j = 0; j < 32; ++j) x[j] = nd(rng) * std::ldexp(1.0f, pick(-14, -8)); break;  // fp16 subnormal d
        default: for (int j = 0; j < 32; ++j) x[j] = nd(rng) * step; break;
        }
    }
    return d;
}

std::vector<data_set> data_sets() {
    return {normal(1), lognormal(2, 1.0f), lognormal(3, -1.0f), uniform(4), adversarial(5), adversarial(6)};
}

template <class S>
std::vector<std::uint8_t> reference_bytes(const data_set& d) {
    const std::size_t rb = ggml::row_bytes(ggml_type_of<S>, d.cols);
    std::vector<std::uint8_t> out(d.rows * rb);
    for (std::size_t r = 0; r < d.rows; ++r) ggml_fns<S>::quantize(d.w.data() + r * d.cols, out.data() + r * rb, d.cols, nullptr);
    return out;
}

template <class S>
std::vector<float> reference_values(const std::vector<std::uint8_t>& bytes, std::size_t rows, std::size_t cols) {
    const std::size_t rb = ggml::row_bytes(ggml_type_of<S>, cols);
    std::vector<float> out(rows * cols);
    for (std::size_t r = 0; r < rows; ++r) ggml_fns<S>::dequantize(bytes.data() + r * rb, out.data() + r * cols, cols);
    return out;
}

bool same_floats(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

template <class S>
std::vector<float> values_of(const quantized<S>& q) {
    std::vector<float> out(q.rows() * q.cols());
    q.dequantize(matrix_view<float>(out.data(), q.rows(), q.cols()));
    return out;
}

template <class S>
void check_type() {
    INFO("type " << ggml::find_base_traits(static_cast<std::uint32_t>(ggml_type_of<S>))->name);
    const auto base = ggml_fns<S>::make();
    auto threaded = base;
    threaded.threads = 3;
    for (data_set d : data_sets()) {
        INFO("data " << d.name);
        if constexpr (std::is_same_v<S, ggml_mxfp4_scheme>) {
            // Blocks whose exponent byte would be ggml's 0xFF (E8M0 NaN) are
            // refused (see the MXFP4 edge test): scale them out of that range.
            for (std::size_t b = 0; b < d.w.size() / 32; ++b) {
                float m = 0.0f;
                for (std::size_t j = 0; j < 32; ++j) m = std::fmax(m, std::fabs(d.w[32 * b + j]));
                if (ggml_mxfp4_scheme::exponent_of(m) == 0xFF)
                    for (std::size_t j = 0; j < 32; ++j) d.w[32 * b + j] *= 1024.0f;
            }
        }
        const matrix_view<const float> w(d.w.data(), d.rows, d.cols);
        const std::vector<float> ones(d.cols, 1.0f);
        const auto want = reference_bytes<S>(d);
        const auto want_values = reference_values<S>(want, d.rows, d.cols);
        for (isa i : kernels::available_isas()) {
            kernels::set_active_isa(i);
            INFO("isa " << kernels::isa_name(i));
            // The single pass (extremes, fit, encode kernel) ...
            const quantized<S> q = base.quantize(w);
            REQUIRE(to_ggml_blocks(q) == want);
            REQUIRE(same_floats(values_of(q), want_values));
            // ... the checks-first path (importance given, and ignored by the rule), on threads.
            REQUIRE(to_ggml_blocks(threaded.quantize(w, ones)) == want);
            // ggml's blocks read back.
            const quantized<S> back = from_ggml_blocks<S>(want, d.rows, d.cols);
            REQUIRE(to_ggml_blocks(back) == want);
            REQUIRE(same_floats(values_of(back), want_values));
            REQUIRE(q.storage_bytes() == want.size());
        }
        kernels::set_active_isa(kernels::available_isas().front());
        // The scheme's own decode is ggml's dequantize too.
        const quantized<S> back = from_ggml_blocks<S>(ggml_type_of<S>, want, d.rows, d.cols);
        std::vector<float> ref(d.w.size());
        back.dequantize_ref(matrix_view<float>(ref.data(), d.rows, d.cols));
        REQUIRE(same_floats(ref, want_values));
    }
}

}  // namespace

TEST_CASE("ggml's legacy rules through the core give ggml's bytes and values: Q4_0") { check_type<ggml_q4_0_scheme>(); }
TEST_CASE("ggml's legacy rules through the core give ggml's bytes and values: Q4_1") { check_type<ggml_q4_1_scheme>(); }
TEST_CASE("ggml's legacy rules through the core give ggml's bytes and values: Q5_0") { check_type<ggml_q5_0_scheme>(); }
TEST_CASE("ggml's legacy rules through the core give ggml's bytes and values: Q5_1") { check_type<ggml_q5_1_scheme>(); }
TEST_CASE("ggml's legacy rules through the core give ggml's bytes and values: Q8_0") { check_type<ggml_q8_0_scheme>(); }

TEST_CASE("ggml's MXFP4 rule through the core gives ggml's bytes and values") { check_type<ggml_mxfp4_scheme>(); }

TEST_CASE("MXFP4: exponents near powers of two, ties, zeros and the exponent's wrap-around below 2^-125") {
    std::vector<float> x(32 * 12, 0.0f);
    const float amax[12] = {1.0f,      std::nextafter(16.0f, 0.0f), std::nextafter(1024.0f, 0.0f), 3e38f,
                            1e-30f,    1e-37f,                      1e-40f,                       0x1p-125f,
                            0x1p-127f, std::nextafter(0x1p-124f, 0.0f), 6.0f,                    0.0f};
    for (std::size_t b = 0; b < 12; ++b) {
        float* xb = x.data() + 32 * b;
        xb[0] = amax[b];
        for (std::size_t j = 1; j < 32; ++j) xb[j] = amax[b] * (static_cast<float>(static_cast<int>(j % 15) - 7) / 8.0f);
        xb[31] = -0.0f;
    }
    const data_set d{"edges", x, 1, x.size()};
    const auto want = reference_bytes<ggml_mxfp4_scheme>(d);
    const auto q = ggml_mxfp4_quantizer().quantize(matrix_view<const float>(x.data(), 1, x.size()));
    REQUIRE(to_ggml_blocks(q) == want);
    REQUIRE(same_floats(values_of(q), reference_values<ggml_mxfp4_scheme>(want, 1, x.size())));
    // amax in [2^-126, 2^-125): ggml's exponent byte wraps to 0xFF (E8M0 NaN), which
    // ggml writes and its own validation rejects; the core refuses the block.
    std::vector<float> nan_e(32, 0.0f);
    nan_e[3] = -1.5e-38f;
    const auto ggml_nan = reference_bytes<ggml_mxfp4_scheme>({"e = 0xFF", nan_e, 1, 32});
    REQUIRE(ggml_nan[0] == 0xFF);
    REQUIRE(ggml::find_invalid_block(ggml::type::mxfp4, std::as_bytes(std::span<const std::uint8_t>(ggml_nan))));
    REQUIRE_THROWS_AS(ggml_mxfp4_quantizer().quantize(matrix_view<const float>(nan_e.data(), 1, 32)), lowbit::error);
    // A scale that is no 2^(e - 128) has no block.
    auto bad = q;
    bad.scale[0] = 0.75f;
    REQUIRE_THROWS_AS(to_ggml_blocks(bad), lowbit::error);
}

TEST_CASE("IQ4_NL: ggml's blocks read back and written again; the core's RTN blocks decode as ggml decodes them") {
    using S = ggml_iq4_nl_scheme;
    for (const data_set& d : data_sets()) {
        INFO("data " << d.name);
        std::vector<float> w = d.w;
        for (float& v : w) v = std::fmax(-6e4f, std::fmin(6e4f, v));  // IQ4_NL's fp16 d holds |x| up to ~7.7e6
        const data_set c{d.name, w, d.rows, d.cols};
        const auto want = reference_bytes<S>(c);
        const auto want_values = reference_values<S>(want, c.rows, c.cols);
        for (isa i : kernels::available_isas()) {
            kernels::set_active_isa(i);
            INFO("isa " << kernels::isa_name(i));
            const quantized<S> back = from_ggml_blocks<S>(want, c.rows, c.cols);
            REQUIRE(to_ggml_blocks(back) == want);
            REQUIRE(same_floats(values_of(back), want_values));
            // The round-to-nearest first step: ggml decodes its blocks to the core's values.
            const auto q = ggml_iq4_nl_rtn_quantizer().quantize(matrix_view<const float>(w.data(), c.rows, c.cols));
            const auto mine = to_ggml_blocks(q);
            REQUIRE(!ggml::find_invalid_block(ggml::type::iq4_nl, std::as_bytes(std::span<const std::uint8_t>(mine))));
            REQUIRE(same_floats(reference_values<S>(mine, c.rows, c.cols), values_of(q)));
        }
        kernels::set_active_isa(kernels::available_isas().front());
    }
}

TEST_CASE("ggml rules: hand-worked codes and params") {
    // Q4_0, d = 1: 0.5 is a tie that rounds up (code 9), -7.5 goes to 1.
    std::vector<float> x(32, 0.0f);
    x[0] = -8.0f, x[1] = 0.5f, x[2] = -7.5f, x[3] = 8.0f;
    const auto q = ggml_q4_0_quantizer().quantize(matrix_view<const float>(x.data(), 1, 32));
    REQUIRE(q.scale[0] == 1.0f);
    REQUIRE(q.zero[0] == 8.0f);
    REQUIRE(q.code_at(0, 0) == 0);
    REQUIRE(q.code_at(0, 1) == 9);
    REQUIRE(q.code_at(0, 2) == 1);
    REQUIRE(q.code_at(0, 3) == 15);  // 16, clamped as ggml does
    REQUIRE(q.code_at(0, 4) == 8);
    // A group of zeros: ggml's d = +0 / -8 = -0.
    std::vector<float> z(32, -0.0f);
    const auto qz = ggml_q4_0_quantizer().quantize(matrix_view<const float>(z.data(), 1, 32));
    REQUIRE(std::bit_cast<std::uint32_t>(qz.scale[0]) == 0x80000000u);
    // Q8_0: 2.5 * (1/d) with d = 1 rounds away from zero.
    std::vector<float> y(32, 0.0f);
    y[0] = 127.0f, y[1] = 2.5f, y[2] = -2.5f;
    const auto q8 = ggml_q8_0_quantizer().quantize(matrix_view<const float>(y.data(), 1, 32));
    REQUIRE(q8.code_at(0, 1) == 128 + 3);
    REQUIRE(q8.code_at(0, 2) == 128 - 3);
    // Q4_1's fp16 d, but codes from the float32 d: d = 1.1 / 15 is not an fp16 value.
    std::vector<float> u(32, 0.0f);
    u[0] = 1.1f;
    const auto q41 = ggml_q4_1_quantizer().quantize(matrix_view<const float>(u.data(), 1, 32));
    REQUIRE(q41.scale[0] == fp16_to_float(float_to_fp16(1.1f / 15.0f)));
    REQUIRE(q41.code_at(0, 0) == 15);
}

TEST_CASE("ggml rules: a -0 minimum in every Q4_1 block survives to the bytes") {
    // Every group's minimum is a zero, some -0: the bias is all zeros, but
    // ggml's m keeps the sign.
    std::vector<float> x(2 * 64);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i % 7) * 0.25f;
    x[0] = -0.0f;
    x[64 + 32] = -0.0f;
    const data_set d{"-0 minima", x, 2, 64};
    const matrix_view<const float> w(x.data(), 2, 64);
    REQUIRE(to_ggml_blocks(ggml_q4_1_quantizer().quantize(w)) == reference_bytes<ggml_q4_1_scheme>(d));
    REQUIRE(to_ggml_blocks(ggml_q5_1_quantizer().quantize(w)) == reference_bytes<ggml_q5_1_scheme>(d));
}

TEST_CASE("ggml rules: what ggml's blocks cannot hold is an error") {
    std::vector<float> x(2 * 64, 0.5f);
    x[64 + 40] = 1e6f;  // Q4_0's d = 125000 is beyond fp16
    const matrix_view<const float> w(x.data(), 2, 64);
    try {
        (void)ggml_q4_0_quantizer().quantize(w);
        FAIL("no error");
    } catch (const lowbit::error& e) {
        REQUIRE(e.code() == errc::invalid_argument);
        REQUIRE(std::string(e.what()).find("row 1, columns 32..63") != std::string::npos);
    }
    REQUIRE_NOTHROW(ggml_q8_0_quantizer().quantize(w));  // 1e6 / 127 fits
    std::vector<float> m(64, 1.0f);
    m[3] = -7e4f;  // Q4_1's minimum is beyond fp16
    REQUIRE_THROWS_AS(ggml_q4_1_quantizer().quantize(matrix_view<const float>(m.data(), 1, 64)), lowbit::error);

    std::vector<float> ok(64, 0.25f);
    const matrix_view<const float> v(ok.data(), 1, 64);
    // Not groups of 32, double quantization, a scale that is no fp16 value, a wrong zero-point.
    REQUIRE_THROWS_AS(to_ggml_blocks(quantizer(ggml_q4_0_scheme{}, per_group(64)).quantize(v)), lowbit::error);
    auto q = ggml_q4_0_quantizer().quantize(v);
    q.scale[1] = 0.1f;
    REQUIRE_THROWS_AS(to_ggml_blocks(q), lowbit::error);
    q = ggml_q4_0_quantizer().quantize(v);
    q.zero[0] = 7.0f;
    REQUIRE_THROWS_AS(to_ggml_blocks(q), lowbit::error);
    REQUIRE_THROWS_AS(ggml_q4_0_quantizer().quantize(matrix_view<const float>(ok.data(), 2, 31)), lowbit::error);

    // Blocks of the wrong size, type or with an Inf scale.
    auto bytes = to_ggml_blocks(ggml_q4_0_quantizer().quantize(v));
    REQUIRE_THROWS_AS(from_ggml_blocks<ggml_q4_0_scheme>(std::span<const std::uint8_t>(bytes).first(bytes.size() - 1), 1, 64),
                      lowbit::error);
    REQUIRE_THROWS_AS(from_ggml_blocks<ggml_q4_0_scheme>(bytes, 2, 64), lowbit::error);
    REQUIRE_THROWS_AS(from_ggml_blocks<ggml_q4_0_scheme>(bytes, 1, 60), lowbit::error);
    REQUIRE_THROWS_AS(from_ggml_blocks<ggml_q4_0_scheme>(ggml::type::q4_1, bytes, 1, 64), lowbit::error);
    const std::uint16_t inf = 0x7C00;
    std::memcpy(bytes.data() + sizeof(ggml::block_q4_0), &inf, 2);
    try {
        (void)from_ggml_blocks<ggml_q4_0_scheme>(bytes, 1, 64);
        FAIL("no error");
    } catch (const lowbit::error& e) {
        REQUIRE(std::string(e.what()).find("block 1") != std::string::npos);
    }
    // Empty matrices convert both ways.
    const auto empty = ggml_q4_0_quantizer().quantize(matrix_view<const float>(ok.data(), 0, 64));
    REQUIRE(to_ggml_blocks(empty).empty());
    REQUIRE(from_ggml_blocks<ggml_q4_0_scheme>(std::span<const std::uint8_t>{}, 0, 64).rows() == 0);
}
