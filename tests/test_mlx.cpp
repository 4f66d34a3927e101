// The registry's MLX formats (mlx-<b>b-g<G>[-bf16|-f32]) on hand-made groups.
// The expected codes and params follow from MLX's rule (scheme/affine.hpp,
// affine_mode::mlx), worked by hand below, and were checked once against
// mx.quantize (mlx 0.32.4, CPU) on the same groups in the dtype named;
// tests/interop/test_mlx.py compares with mx.quantize on many more.
#include "catch.hpp"

#include <lowbit/core/error.hpp>
#include <lowbit/registry.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;

namespace {

struct result {
    std::vector<int> codes;
    float scale = 0, bias = 0;  // of the first group
    double bpw = 0;
};

template <int Bits>
bool read(const quantized_base& q, result& r) {
    const auto* m = dynamic_cast<const quantized<affine<Bits, affine_mode::mlx>>*>(&q);
    if (m == nullptr) return false;
    for (std::size_t i = 0; i < m->rows(); ++i)
        for (std::size_t c = 0; c < m->cols(); ++c) r.codes.push_back(m->code_at(i, c));
    r.scale = m->scale.at(0);
    r.bias = m->bias.empty() ? 0.0f : m->bias.at(0);
    return true;
}

result read_any(const quantized_base& q) {
    result r;
    r.bpw = q.bits_per_weight();
    REQUIRE((read<2>(q, r) || read<3>(q, r) || read<4>(q, r) || read<5>(q, r) || read<6>(q, r) || read<8>(q, r)));
    return r;
}

// One row of 32 values (the pattern repeated) through the registry format `name`.
result run(const std::string& name, const std::vector<float>& pattern) {
    std::vector<float> x(32);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = pattern[i % pattern.size()];
    return read_any(*quantize(find_format(name), matrix_view<const float>(x.data(), 1, x.size())));
}

std::vector<int> repeat(const std::vector<int>& p) {
    std::vector<int> v(32);
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = p[i % p.size()];
    return v;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

}  // namespace

TEST_CASE("mlx: every bits x group x params dtype is registered, the old names kept") {
    for (int b : {2, 3, 4, 5, 6, 8})
        for (int g : {32, 64, 128})
            for (const char* suffix : {"", "-bf16", "-f32"}) {
                const std::string n = "mlx-" + std::to_string(b) + "b-g" + std::to_string(g) + suffix;
                REQUIRE(find_format(n).name == n);
                REQUIRE(find_format(n).family == "integer");
            }
    CHECK(find_format("mlx-4b-g64").in_default_comparison);
    CHECK(find_format("mlx-4b-g64").description == "MLX affine 4-bit (mx.quantize), groups of 64, fp16 scale + fp16 bias");
    CHECK_FALSE(find_format("mlx-8b-g64").in_default_comparison);
}

TEST_CASE("mlx: bits per weight count a scale and a bias per group in the params dtype") {
    const std::vector<float> x = {1.0f, -2.0f, 0.5f};
    CHECK(run("mlx-4b-g32", x).bpw == 4 + 32.0 / 32);
    CHECK(run("mlx-4b-g32-bf16", x).bpw == 4 + 32.0 / 32);
    CHECK(run("mlx-4b-g32-f32", x).bpw == 4 + 64.0 / 32);
    CHECK(run("mlx-2b-g32-f32", x).bpw == 2 + 64.0 / 32);
}

TEST_CASE("mlx: a group whose fp16 scale is subnormal is encoded with the float32 scale") {
    // x = k * 2^-20, k = 0..7: min 0, max 7 * 2^-20 = the edge (|min| <= |max|),
    // scale = -(7 * 2^-20 / 15); q0 = rint(edge / scale) = -15, so scale =
    // edge / -15 and bias = edge; q = rint((7 - k) * 15 / 7) = 15 13 11 9 6 4 2 0.
    // fp16 holds the scale only as -7 * 2^-24 (a subnormal): against that one,
    // codes 1, 4 and 5 would be 14, 7 and 5.
    std::vector<float> x;
    for (int k = 0; k < 8; ++k) x.push_back(std::ldexp(static_cast<float>(k), -20));
    const auto want = repeat({15, 13, 11, 9, 6, 4, 2, 0});
    const auto h = run("mlx-4b-g32", x), b = run("mlx-4b-g32-bf16", x), f = run("mlx-4b-g32-f32", x);
    CHECK(h.codes == want);
    CHECK(b.codes == want);
    CHECK(f.codes == want);
    CHECK(h.scale == -0x1.cp-22f);  // -7 * 2^-24
    CHECK(f.scale == -0x1.dddddep-22f);
    CHECK(f.scale == std::ldexp(7.0f, -20) / -15.0f);
    CHECK(b.scale == -0x1.dep-22f);
    CHECK(h.bias == 0x1.cp-18f);
    CHECK(f.bias == 0x1.cp-18f);
    CHECK(b.bias == 0x1.cp-18f);
}

TEST_CASE("mlx: a constant group is code 0 with the constant as bias") {
    // scale = -1e-7 (the eps, negated: |min| == |max|); q0 = rint(0.3 / -1e-7)
    // != 0, so bias = 0.3 and scale = 0.3 / q0; every code rint(0 / scale) = 0.
    const auto f = run("mlx-4b-g32-f32", {0.3f});
    const auto h = run("mlx-4b-g32", {0.3f});
    const auto b = run("mlx-4b-g32-bf16", {0.3f});
    const auto zeros = repeat({0});
    CHECK(f.codes == zeros);
    CHECK(h.codes == zeros);  // not 15: the codes do not see the fp16 bias 0.30005
    CHECK(b.codes == zeros);
    CHECK(f.scale == -0x1.ad7f2ap-24f);
    CHECK(f.bias == 0.3f);
    CHECK(h.scale == -0x1p-23f);
    CHECK(h.bias == 0x1.334p-2f);
    CHECK(b.scale == -0x1.aep-24f);
    CHECK(b.bias == 0x1.34p-2f);
    // 8 bits, -1234.5 (fp32) with fp16 params: the bias is stored as -1234
    // (a tie, to even), the codes still 0 (mx.quantize on fp16 weights gives
    // the same, the weights rounding to -1234 first).
    const auto n = run("mlx-8b-g32", {-1234.5f});
    CHECK(n.codes == zeros);
    CHECK(n.scale == -0x1p-23f);
    CHECK(n.bias == -1234.0f);
    // Below the eps: q0 = rint(1e-9 / -1e-7) = -0, so bias 0 and the group decodes to 0.
    const auto e = run("mlx-4b-g32-f32", {1e-9f});
    CHECK(e.codes == zeros);
    CHECK(e.scale == -1e-7f);
    CHECK(e.bias == 0.0f);
}

TEST_CASE("mlx: +-0 groups are code 0, scale -eps, bias +0") {
    for (const std::vector<float>& x : {std::vector<float>{0.0f, -0.0f}, {-0.0f, 0.0f}, {-0.0f}}) {
        const auto h = run("mlx-4b-g32", x), f = run("mlx-4b-g32-f32", x);
        CHECK(h.codes == repeat({0}));
        CHECK(f.codes == repeat({0}));
        CHECK(h.scale == -0x1p-23f);  // -1e-7 in fp16
        CHECK(f.scale == -1e-7f);
        CHECK(same_bits(h.bias, 0.0f));
        CHECK(same_bits(f.bias, 0.0f));
    }
}

TEST_CASE("mlx: values on bin edges round half to even") {
    // 2 bits on [-3, 0]: |min| > |max|, scale = 3 / 3 = 1, q0 = -3, bias = -3;
    // -2.5, -1.5, -0.5 sit on the edges: rint(0.5) = 0, rint(1.5) = 2, rint(2.5) = 2.
    for (const char* n : {"mlx-2b-g32", "mlx-2b-g32-bf16", "mlx-2b-g32-f32"}) {
        INFO(n);
        const auto r = run(n, {-3.0f, 0.0f, -2.5f, -1.5f, -0.5f});
        CHECK(r.codes == repeat({0, 3, 0, 2, 2, 0, 3, 0, 2, 2, 0, 3, 0, 2, 2, 0, 3, 0, 2, 2, 0, 3, 0, 2, 2, 0,
                                 3, 0, 2, 2, 0, 3}));
        CHECK(r.scale == 1.0f);
        CHECK(r.bias == -3.0f);
    }
}

TEST_CASE("mlx: the fp16 and bf16 range limits") {
    // +-65504 (4 bits): the max is the edge, scale = -131008 / 15, q0 =
    // rint(-7.5) = -8, scale = 65504 / -8 = -8188; 0 and 1 -> 8, -65504 ->
    // rint(16) clamped to 15.
    for (const char* n : {"mlx-4b-g32", "mlx-4b-g32-f32"}) {
        INFO(n);
        const auto r = run(n, {65504.0f, -65504.0f, 0.0f, 1.0f});
        CHECK(r.codes == repeat({0, 15, 8, 8}));
        CHECK(r.scale == -8188.0f);
        CHECK(r.bias == 65504.0f);
    }
    // bf16's largest finite value and 0: scale = bias / -15.
    const float big = 0x1.fep+127f;
    for (const char* n : {"mlx-4b-g32-bf16", "mlx-4b-g32-f32"}) {
        INFO(n);
        const auto r = run(n, {big, 0.0f});
        CHECK(r.codes == repeat({0, 15}));
        CHECK(r.scale == -0x1.1p+124f);
        CHECK(r.bias == big);
    }
}

TEST_CASE("mlx: params the dtype cannot hold are an error naming the group, where MLX stores Inf") {
    auto fails = [](const char* n, std::vector<float> x) {
        x.resize(32, x.back());
        try {
            (void)quantize(find_format(n), matrix_view<const float>(x.data(), 1, x.size()));
        } catch (const lowbit::error& e) {
            CHECK(e.code() == errc::invalid_argument);
            CHECK(std::string(e.what()).find("row 0, columns 0..31") != std::string::npos);
            return true;
        }
        return false;
    };
    // fp16 bias beyond 65504 (fp32 weights given to an fp16-params format).
    CHECK(fails("mlx-4b-g32", {1e5f, 1.0f}));
    // max - min overflows float32: MLX's scale is -Inf.
    CHECK(fails("mlx-4b-g32-bf16", {0x1.fep+127f, -0x1.fep+127f}));
    CHECK(fails("mlx-4b-g32-f32", {3e38f, -3e38f}));
}

TEST_CASE("mlx: the codes do not depend on the params dtype") {
    // They come from the float32 scale and bias whatever is stored.
    std::mt19937 rng(3);
    std::student_t_distribution<float> t(3.0f);
    std::vector<float> w(8 * 256);
    for (float& v : w) v = 0.02f * t(rng);
    const matrix_view<const float> view(w.data(), 8, 256);
    for (const char* b : {"2", "3", "4", "5", "6", "8"})
        for (const char* g : {"32", "64", "128"}) {
            const std::string n = std::string("mlx-") + b + "b-g" + g;
            INFO(n);
            const auto h = read_any(*quantize(find_format(n), view));
            REQUIRE(h.codes.size() == w.size());
            REQUIRE(read_any(*quantize(find_format(n + "-bf16"), view)).codes == h.codes);
            REQUIRE(read_any(*quantize(find_format(n + "-f32"), view)).codes == h.codes);
        }
}

TEST_CASE("mlx: fp16/bf16 output in the params' dtype is mx.dequantize's: scale * q rounded, then + bias rounded") {
    // 4 bits, fp16: min -1 is the edge, scale = fp16(0.1) = 0x1.998p-4, bias -1.
    // Code 15: 15 * scale = 1.49963... -> fp16 1.5, + bias -> 0.5 (rounding once:
    // 0.49963... -> 0x1.ff8p-2). Code 10: 0.99975... -> 1.0 -> 0 (once: -2^-12).
    const std::vector<float> x = {-1.0f, 0.5f, 0.1f, 0.3f, -0.2f, 0.45f, -0.7f, 0.05f};
    std::vector<float> w(32);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = x[i % x.size()];
    const auto q = quantize(find_format("mlx-4b-g32"), matrix_view<const float>(w.data(), 1, 32));
    const auto r = read_any(*q);
    CHECK(r.scale == 0x1.998p-4f);
    CHECK(r.bias == -1.0f);
    CHECK(std::vector<int>(r.codes.begin(), r.codes.begin() + 8) == std::vector<int>{0, 15, 11, 13, 8, 14, 3, 10});
    const float want[8] = {-1.0f, 0.5f, 0x1.98p-4f, 0x1.33p-2f, -0x1.9ap-3f, 0x1.99p-2f, -0x1.668p-1f, 0.0f};
    std::vector<std::uint16_t> h(32), b(32);
    std::vector<float> f(32);
    q->dequantize_to(h.data(), 32, kernels::out_type::f16);
    q->dequantize_to(b.data(), 32, kernels::out_type::bf16);  // not the params' dtype: f32 result narrowed
    q->dequantize(matrix_view<float>(f.data(), 1, 32));
    for (std::size_t i = 0; i < 32; ++i) {
        INFO(i);
        CHECK(h[i] == float_to_fp16(want[i % 8]));
        CHECK(b[i] == float_to_bf16(f[i]));
    }
    CHECK(float_to_fp16(f[1]) == float_to_fp16(0x1.ff8p-2f));  // what one rounding gives
    CHECK(float_to_fp16(f[7]) == float_to_fp16(-0x1p-12f));
    // -f32 params: mx.dequantize works in float32, so fp16 output is the float result narrowed.
    const auto q32 = quantize(find_format("mlx-4b-g32-f32"), matrix_view<const float>(w.data(), 1, 32));
    q32->dequantize_to(h.data(), 32, kernels::out_type::f16);
    q32->dequantize(matrix_view<float>(f.data(), 1, 32));
    for (std::size_t i = 0; i < 32; ++i) CHECK(h[i] == float_to_fp16(f[i]));
}

TEST_CASE("mlx: like mx.dequantize, fp16 output overflows where scale * q does") {
    // +-65504: scale -8188, bias 65504; code 15 is 15 * -8188 = -122820, -Inf
    // in fp16 before the bias is added (MLX gives -inf; the float result is -57316).
    const std::vector<float> x = {65504.0f, -65504.0f, 0.0f, 1.0f};
    std::vector<float> w(32);
    for (std::size_t i = 0; i < w.size(); ++i) w[i] = x[i % x.size()];
    const auto q = quantize(find_format("mlx-4b-g32"), matrix_view<const float>(w.data(), 1, 32));
    std::vector<std::uint16_t> h(32);
    q->dequantize_to(h.data(), 32, kernels::out_type::f16);
    CHECK(h[0] == float_to_fp16(65504.0f));
    CHECK(h[1] == float_to_fp16(-std::numeric_limits<float>::infinity()));
    CHECK(h[2] == float_to_fp16(0.0f));  // 8 * -8188 + 65504
    std::vector<float> f(32);
    q->dequantize(matrix_view<float>(f.data(), 1, 32));
    CHECK(f[1] == -57316.0f);
}
