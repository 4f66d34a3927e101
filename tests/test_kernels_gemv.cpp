#include "catch.hpp"
#include "gemv_test_util.hpp"

#include <lowbit/kernels/gemv.hpp>
#include <lowbit/quantizer.hpp>
#include <lowbit/registry.hpp>
#include <lowbit/scheme/affine.hpp>
#include <lowbit/scheme/codebook.hpp>
#include <lowbit/scheme/minifloat.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

using namespace lowbit;
using namespace lowbit::kernels;
using lowbit_test::activations;
using lowbit_test::gemv_bound;
using lowbit_test::isa_reset;
using lowbit_test::make_x;

namespace {

std::vector<float> random_matrix(std::size_t rows, std::size_t cols, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> w(rows * cols);
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c) w[r * cols + c] = nd(rng) * std::ldexp(1.0f, static_cast<int>(r % 5) - 2);
    // A zero group in row 1 (its scale 0, or its codes all one value).
    if (rows > 1) std::fill_n(w.begin() + static_cast<std::ptrdiff_t>(cols), std::min<std::size_t>(cols, 64), 0.0f);
    return w;
}

// y (rows of ys) from one call against the exact sum of x times the fp32
// dequantized weights wf (rows x k) plus the bias, within the bound; the
// columns outside [r0, r1) left at the sentinel.
void compare(isa i, const std::vector<float>& wf, std::size_t rows, std::size_t k, const activations& x,
             const std::vector<float>& y, std::size_t ys, const std::vector<float>& bias, std::size_t r0,
             std::size_t r1, float sentinel, const std::string& what) {
    for (std::size_t mi = 0; mi < x.m; ++mi)
        for (std::size_t r = 0; r < rows; ++r) {
            const float got = y[mi * ys + r];
            INFO(what << " on " << isa_name(i) << ": m " << mi << " of " << x.m << ", row " << r << " of " << rows
                      << ", k " << k);
            if (r < r0 || r >= r1) {
                REQUIRE(got == sentinel);
                continue;
            }
            double exact = bias.empty() ? 0.0 : bias[r], abs_sum = bias.empty() ? 0.0 : std::fabs(bias[r]);
            for (std::size_t c = 0; c < k; ++c) {
                const double p = static_cast<double>(x.row(mi)[c]) * wf[r * k + c];
                exact += p;
                abs_sum += std::fabs(p);
            }
            REQUIRE(std::isfinite(got));
            REQUIRE(std::fabs(got - exact) <= gemv_bound(i, k, abs_sum));
        }
}

std::vector<float> dequantized(const quantized_base& q) {
    std::vector<float> wf(q.rows() * q.cols());
    q.dequantize(matrix_view<float>(wf.data(), q.rows(), q.cols()));
    return wf;
}

// q.gemv on every instruction set, M of 1, 3 (unaligned x) and 16, against
// the product of q's dequantized weights.
void check_format(const quantized_base& q, const std::string& name, std::mt19937& rng) {
    isa_reset reset;
    const std::vector<float> wf = dequantized(q);
    for (std::size_t m : {std::size_t{1}, std::size_t{3}, std::size_t{16}}) {
        const activations x = make_x(m, q.cols(), m == 3 ? 1 : 0, rng);
        const std::size_t ys = q.rows() + 2;
        for (isa i : available_isas()) {
            set_active_isa(i);
            std::vector<float> y(m * ys, -7777.0f);
            q.gemv(x.view(), matrix_view<float>(y.data(), m, q.rows(), ys));
            compare(i, wf, q.rows(), q.cols(), x, y, ys, {}, 0, q.rows(), -7777.0f, name);
        }
    }
}

}  // namespace

TEST_CASE("gemv: every registry format is the product of its dequantized weights", "[kernels][gemv]") {
    std::mt19937 rng(31);
    const std::size_t rows = 7, cols = 512;
    const std::vector<float> w = random_matrix(rows, cols, rng);
    for (const format& f : formats()) {
        const auto q = quantize(f, matrix_view<const float>(w.data(), rows, cols));
        check_format(*q, std::string(f.name), rng);
    }
}

TEST_CASE("gemv: planar views at every width, granularity and parameter set", "[kernels][gemv]") {
    std::mt19937 rng(8);
    // Per tensor, per channel and per input channel, and groups narrower than
    // a batch, at odd row lengths (a partial last batch).
    for (std::size_t cols : {std::size_t{96}, std::size_t{100}, std::size_t{4096}}) {
        const std::vector<float> w = random_matrix(5, cols, rng);
        const matrix_view<const float> wv(w.data(), 5, cols);
        const std::string k = " k " + std::to_string(cols);
        check_format(quantizer<affine<2>>({}, per_channel()).quantize(wv), "int2 per channel" + k, rng);
        check_format(quantizer<affine<3>>({}, per_tensor()).quantize(wv), "int3 per tensor" + k, rng);
        check_format(quantizer<affine<5>>({}, per_input_channel()).quantize(wv), "int5 per input channel" + k, rng);
        check_format(quantizer<affine<8, affine_mode::symmetric>>({}, per_channel()).quantize(wv), "int8 sym" + k, rng);
        check_format(quantizer<codebook<4>>(nf4(), per_channel()).quantize(wv), "nf4 per channel" + k, rng);
        check_format(quantizer<fp8_e4m3_amax>({}, per_channel()).quantize(wv), "fp8 per channel" + k, rng);
        if (cols % 4 == 0) {
            check_format(quantizer<affine<4>>({}, per_group(4)).quantize(wv), "int4 g4" + k, rng);
            check_format(quantizer<mxfp6_e3m2>({}, per_group(4)).quantize(wv), "mxfp6 g4" + k, rng);
        }
        if (cols % 32 == 0) {
            check_format(quantizer<affine<7>>({}, per_group(32)).quantize(wv), "int7 g32" + k, rng);
            check_format(quantizer<nvfp4_elements>({}, per_group(16)).quantize(wv), "nvfp4 g16" + k, rng);
        }
    }
}

TEST_CASE("gemv: bias, row ranges, fp16/bf16 outputs and threads", "[kernels][gemv]") {
    isa_reset reset;
    std::mt19937 rng(3);
    const std::size_t rows = 37, cols = 256;
    const std::vector<float> w = random_matrix(rows, cols, rng);
    const auto q = quantizer<affine<4>>({}, per_group(64)).quantize(matrix_view<const float>(w.data(), rows, cols));
    const planar_view v = q.view();
    const std::vector<float> wf = dequantized(q);
    std::vector<float> bias(rows);
    for (auto& b : bias) b = static_cast<float>(rng() % 100) - 50.0f;
    const activations x = make_x(5, cols, 1, rng);
    for (isa i : available_isas()) {
        set_active_isa(i);
        const std::size_t ys = rows + 1;
        std::vector<float> y(5 * ys, -1.0f);
        gemv(v, x.view(), matrix_view<float>(y.data(), 5, rows, ys), {3, 29}, bias);
        compare(i, wf, rows, cols, x, y, ys, bias, 3, 29, -1.0f, "int4-g64 with bias, rows 3..28");
        // fp16 and bf16: the fp32 result rounded once.
        std::vector<float> full(5 * rows);
        gemv(v, x.view(), matrix_view<float>(full.data(), 5, rows), all_rows, bias);
        for (out_type t : {out_type::f16, out_type::bf16}) {
            std::vector<std::uint16_t> h(5 * rows);
            gemv(v, x.view(), matrix_view<std::uint16_t>(h.data(), 5, rows), t, all_rows, bias);
            for (std::size_t e = 0; e < h.size(); ++e)
                REQUIRE(h[e] == (t == out_type::f16 ? float_to_fp16(full[e]) : float_to_bf16(full[e])));
            std::vector<std::uint16_t> hp(5 * rows);
            gemv_parallel(v, x.view(), matrix_view<std::uint16_t>(hp.data(), 5, rows), t, 2, bias);
            REQUIRE(hp == h);
        }
        // Threads split rows only: each output is the one-thread value.
        std::vector<float> par(5 * rows);
        gemv_parallel(v, x.view(), matrix_view<float>(par.data(), 5, rows), 2, bias);
        REQUIRE(par == full);
    }
}

TEST_CASE("gemv: a planar view over an engine's memory, checked when made", "[kernels][gemv]") {
    std::mt19937 rng(12);
    const std::size_t rows = 4, cols = 64;
    const std::vector<float> w = random_matrix(rows, cols, rng);
    const auto q = quantizer<affine<3>>({}, per_group(32)).quantize(matrix_view<const float>(w.data(), rows, cols));
    // The same codes and params at a wider row stride, as an engine lays them out.
    const std::size_t stride = q.code_stride + 7;
    std::vector<std::uint8_t> codes(rows * stride, 0xAB);
    for (std::size_t r = 0; r < rows; ++r)
        std::memcpy(codes.data() + r * stride, q.codes.data() + r * q.code_stride, q.code_stride);
    const planar_params p{q.scale, q.zero, q.bias, 32, 2};
    const planar_view v = planar_view::affine(3, codes, rows, cols, stride, p);
    const activations x = make_x(2, cols, 0, rng);
    std::vector<float> a(2 * rows), b(2 * rows);
    gemv(v, x.view(), matrix_view<float>(a.data(), 2, rows));
    q.gemv(x.view(), matrix_view<float>(b.data(), 2, rows));
    REQUIRE(a == b);

    const auto fails = [](auto&& f, const char* text) {
        REQUIRE_THROWS_WITH(f(), Catch::Matchers::Contains(text));
    };
    const std::span<const std::uint8_t> short_codes(codes.data(), codes.size() - 8);
    fails([&] { (void)planar_view::affine(3, short_codes, rows, cols, stride, p); }, "the memory given holds");
    fails([&] { (void)planar_view::affine(3, codes, rows, cols, 10, p); }, "code_stride 10 is less than a row's 24 bytes");
    fails([&] { (void)planar_view::affine(9, codes, rows, cols, stride, p); }, "9 bits per code");
    planar_params bad = p;
    bad.group = 48;
    fails([&] { (void)planar_view::affine(3, codes, rows, cols, stride, bad); }, "do not divide into groups of 48");
    bad = p;
    bad.scale = std::span<const float>(q.scale).first(7);
    fails([&] { (void)planar_view::affine(3, codes, rows, cols, stride, bad); }, "scale has 7 values");
    bad = p;
    bad.param_stride = 1;
    fails([&] { (void)planar_view::affine(3, codes, rows, cols, stride, bad); }, "param_stride 1 is less than the 2");
    const float table[4] = {-1, 0, 1, 2};
    fails([&] { (void)planar_view::table(3, codes, rows, cols, stride, table, planar_params{q.scale, {}, {}, 32, 2}); },
          "the table has 4 values, 3-bit codes need 8");
    fails([&] { (void)planar_view::table(2, codes, rows, cols, stride, table, p); }, "take a scale only");
    // Shapes of x, y and bias against the view's.
    std::vector<float> y(2 * rows);
    fails([&] { gemv(v, matrix_view<const float>(x.storage.data(), 2, cols - 1), matrix_view<float>(y.data(), 2, rows)); },
          "x has 63 columns");
    fails([&] { gemv(v, x.view(), matrix_view<float>(y.data(), 1, rows)); }, "y is 1 x 4");
    fails([&] { gemv(v, x.view(), matrix_view<float>(y.data(), 2, rows), all_rows, std::vector<float>(3)); },
          "bias has 3 values");
}

TEST_CASE("gemv: fp16 and bf16 activations, widened once, give the product of their values", "[kernels][gemv]") {
    std::mt19937 rng(21);
    const std::size_t rows = 9, cols = 160;
    const std::vector<float> w = random_matrix(rows, cols, rng);
    const auto q = quantizer<codebook<4>>(nf4(), per_group(32)).quantize(matrix_view<const float>(w.data(), rows, cols));
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (float_storage t : {float_storage::f16, float_storage::bf16}) {
        // Three rows at a row stride of cols + 5.
        std::vector<std::uint16_t> x16(3 * (cols + 5));
        std::vector<float> xf(3 * cols);  // the same values in fp32
        for (std::size_t r = 0; r < 3; ++r)
            for (std::size_t c = 0; c < cols; ++c) {
                const float v = nd(rng);
                const std::uint16_t h = t == float_storage::f16 ? float_to_fp16(v) : float_to_bf16(v);
                x16[r * (cols + 5) + c] = h;
                xf[r * cols + c] = t == float_storage::f16 ? fp16_to_float(h) : bf16_to_float(h);
            }
        std::vector<float> buffer;
        const auto xv = widen_activations(matrix_view<const std::uint16_t>(x16.data(), 3, cols, cols + 5), t, buffer);
        REQUIRE(std::vector<float>(xv.data(), xv.data() + 3 * cols) == xf);
        std::vector<float> a(3 * rows), b(3 * rows);
        gemv(q.view(), xv, matrix_view<float>(a.data(), 3, rows));
        gemv(q.view(), matrix_view<const float>(xf.data(), 3, cols), matrix_view<float>(b.data(), 3, rows));
        REQUIRE(a == b);
    }
    std::vector<float> buffer;
    const std::vector<std::uint16_t> x16(cols);
    REQUIRE_THROWS_WITH(widen_activations(matrix_view<const std::uint16_t>(x16.data(), 1, cols), float_storage::f32, buffer),
                        Catch::Matchers::Contains("fp16 or bf16"));
}
