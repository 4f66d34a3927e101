#include "catch.hpp"
#include "gemv_test_util.hpp"

#include <lowbit/core/numeric.hpp>
#include <lowbit/kernels/gemv.hpp>
#include <lowbit/quantizer.hpp>
#include <lowbit/registry.hpp>
#include <lowbit/scheme/affine.hpp>
#include <lowbit/scheme/codebook.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;
using namespace lowbit::kernels;
using lowbit_test::activations;
using lowbit_test::isa_reset;
using lowbit_test::make_x;

namespace {

// The code at column c of row r of w (LSB-first k-bit codes).
unsigned code_at(const planar_view& w, std::size_t r, std::size_t c) {
    const std::uint8_t* row = w.codes() + r * w.code_stride();
    const std::size_t bit = c * static_cast<std::size_t>(w.bits());
    unsigned v = row[bit / 8] >> (bit % 8);
    if (bit % 8 + static_cast<std::size_t>(w.bits()) > 8) v |= static_cast<unsigned>(row[bit / 8 + 1]) << (8 - bit % 8);
    return v & ((1u << w.bits()) - 1u);
}

// y of one int8-path call against the exact sum over k of W's values
// ((q - zero) * scale + bias, or table[q] * scale, in double) times the dequantized activations
// (Q8_0: fp16 d times the int8 codes), within
// (k / 32 + groups + 16) * 2^-24 times the sum of the magnitudes of what the
// kernel adds: |q' scale|, |zero' scale| and |bias| (q' and zero' less 128
// for 8-bit codes) times |d q_x|.
void compare(const planar_view& w, const ggml_activations& xq, const std::vector<float>& y, std::size_t ys,
             const std::vector<float>& bias, std::size_t r0, std::size_t r1, const std::string& what) {
    const std::size_t k = w.cols(), group = std::min(w.group(), k), groups = k / group;
    std::vector<float> xf(k);
    const double shift = w.bits() == 8 ? 128.0 : 0.0;
    for (std::size_t mi = 0; mi < xq.rows(); ++mi) {
        // Q8_0: 32 int8 codes after an fp16 scale, 34 bytes a block.
        for (std::size_t c = 0; c < k; ++c) {
            const unsigned char* blk = xq.row(mi) + c / 32 * 34;
            xf[c] = fp16_to_float(static_cast<std::uint16_t>(blk[0] | blk[1] << 8)) *
                    static_cast<float>(static_cast<std::int8_t>(blk[2 + c % 32]));
        }
        for (std::size_t r = 0; r < w.rows(); ++r) {
            const float got = y[mi * ys + r];
            INFO(what << ": m " << mi << " of " << xq.rows() << ", row " << r << " of " << w.rows() << ", k " << k);
            if (r < r0 || r >= r1) {
                REQUIRE(got == -7777.0f);
                continue;
            }
            double exact = bias.empty() ? 0.0 : bias[r], mag = bias.empty() ? 0.0 : std::fabs(bias[r]);
            for (std::size_t c = 0; c < k; ++c) {
                const std::size_t g = r * w.param_stride() + c / group;
                const double s = w.scale()[g], z = w.zero() ? w.zero()[g] : 0.0, b = w.bias() ? w.bias()[g] : 0.0;
                const double q = code_at(w, r, c), x = xf[c];
                if (w.family() == kernel_family::table) {
                    const double v = w.table()[code_at(w, r, c)] * s;
                    exact += v * x;
                    mag += std::fabs(v * x);
                    continue;
                }
                exact += ((q - z) * s + b) * x;
                mag += (std::fabs((q - shift) * s) + std::fabs((z - shift) * s) + std::fabs(b)) * std::fabs(x);
            }
            REQUIRE(std::isfinite(got));
            REQUIRE(std::fabs(got - exact) <=
                    (static_cast<double>(k) / 32 + static_cast<double>(groups) + 16) * std::ldexp(1.0, -24) * mag + 1e-30);
        }
    }
}

std::vector<float> random_matrix(std::size_t rows, std::size_t cols, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> w(rows * cols);
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c = 0; c < cols; ++c)
            w[r * cols + c] = nd(rng) * std::ldexp(1.0f, static_cast<int>(r % 5) - 2) + (r == 3 ? 2.0f : 0.0f);
    // A zero group in row 1; row 2 all at its largest value (the largest codes).
    if (rows > 2) {
        std::fill_n(w.begin() + static_cast<std::ptrdiff_t>(cols), std::min<std::size_t>(cols, 64), 0.0f);
        std::fill_n(w.begin() + static_cast<std::ptrdiff_t>(2 * cols), cols, 3.0f);
        w[2 * cols] = -1.0f;
    }
    return w;
}

// The int8 path of w on every instruction set, M of 1, 3 (unaligned x), 5 and 16.
void check(const planar_view& w, const std::string& what, std::mt19937& rng) {
    isa_reset reset;
    REQUIRE(has_int8_path(w));
    for (std::size_t m : {std::size_t{1}, std::size_t{3}, std::size_t{5}, std::size_t{16}}) {
        const activations x = make_x(m, w.cols(), m == 3 ? 1 : 0, rng);
        const ggml_activations xq = quantize_activations(w, x.view());
        const std::size_t ys = w.rows() + 2;
        for (isa i : available_isas()) {
            set_active_isa(i);
            std::vector<float> y(m * ys, -7777.0f);
            gemv(w, xq, matrix_view<float>(y.data(), m, w.rows(), ys));
            compare(w, xq, y, ys, {}, 0, w.rows(), what + " on " + std::string(isa_name(i)));
        }
    }
}

}  // namespace

TEST_CASE("gemv int8: affine weights at every width and granularity, against the exact product", "[kernels][gemv][q8]") {
    std::mt19937 rng(5);
    for (std::size_t cols : {std::size_t{32}, std::size_t{96}, std::size_t{640}}) {
        const std::vector<float> wf = random_matrix(7, cols, rng);
        const matrix_view<const float> wv(wf.data(), 7, cols);
        const std::string k = " k " + std::to_string(cols);
        check(quantizer<affine<1>>({}, per_channel()).quantize(wv).view(), "int1 per channel" + k, rng);
        check(quantizer<affine<2>>({}, per_group(32)).quantize(wv).view(), "int2 g32" + k, rng);
        check(quantizer<affine<3>>({}, per_tensor()).quantize(wv).view(), "int3 per tensor" + k, rng);
        check(quantizer<affine<4, affine_mode::symmetric>>({}, per_group(32)).quantize(wv).view(), "int4 sym g32" + k, rng);
        check(quantizer<affine<5>>({}, per_channel()).quantize(wv).view(), "int5 per channel" + k, rng);
        check(quantizer<affine<6>>({}, per_group(32)).quantize(wv).view(), "int6 g32" + k, rng);
        check(quantizer<affine<7>>({}, per_channel()).quantize(wv).view(), "int7 per channel" + k, rng);
        check(quantizer<affine<8>>({}, per_group(32)).quantize(wv).view(), "int8 g32" + k, rng);
        check(quantizer<affine<8, affine_mode::symmetric>>({}, per_channel()).quantize(wv).view(), "int8 sym" + k, rng);
        if (cols % 64 == 0) check(quantizer<affine<4>>({}, per_group(64)).quantize(wv).view(), "int4 g64" + k, rng);
        // Groups of 16, two to a block: each lane of a block's product takes its own group's scale and offset.
        check(quantizer<affine<4>>({}, per_group(16)).quantize(wv).view(), "int4 g16" + k, rng);
        check(quantizer<affine<4, affine_mode::symmetric>>({}, per_group(16)).quantize(wv).view(), "int4 sym g16" + k, rng);
    }
    // Every registry format with an int8 path, at the group sizes it names.
    const std::vector<float> wf = random_matrix(5, 1024, rng);
    std::size_t n = 0;
    for (const format& f : formats()) {
        const auto q = quantize(f, matrix_view<const float>(wf.data(), 5, 1024));
        const auto v = q->planar();
        if (!v || !has_int8_path(*v)) continue;
        check(*v, std::string(f.name), rng);
        ++n;
    }
    CHECK(n >= 4);
}

TEST_CASE("gemv int8: 4-bit tables of integers times a power of two", "[kernels][gemv][q8]") {
    std::mt19937 rng(9);
    const std::size_t rows = 6, cols = 256;
    const std::vector<float> wf = random_matrix(rows, cols, rng);
    // MXFP4 (E2M1 values: integers once doubled) through the registry.
    const auto mx = quantize(find_format("mxfp4"), matrix_view<const float>(wf.data(), rows, cols));
    REQUIRE(mx->planar());
    check(*mx->planar(), "mxfp4", rng);
    // NVFP4: the same values in groups of 16 (two scales a block).
    const auto nv = quantize(find_format("nvfp4"), matrix_view<const float>(wf.data(), rows, cols));
    REQUIRE(nv->planar());
    check(*nv->planar(), "nvfp4", rng);
    // IQ4_NL's integer table over an engine's memory, groups of 64, and the
    // same table over 8 (integers only once multiplied by 8).
    std::vector<std::uint8_t> codes(rows * cols / 2);
    for (auto& c : codes) c = static_cast<std::uint8_t>(rng());
    std::vector<float> scale(rows * cols / 64);
    for (std::size_t i = 0; i < scale.size(); ++i) scale[i] = 0.01f * static_cast<float>(i % 7) - 0.02f;
    const float iq4[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};
    std::vector<float> eighths(iq4, iq4 + 16);
    for (float& v : eighths) v /= 8.0f;
    const planar_params pp{scale, {}, {}, 64, cols / 64};
    check(planar_view::table(4, codes, rows, cols, 0, std::span<const float>(iq4, 16), pp), "iq4_nl table g64", rng);
    check(planar_view::table(4, codes, rows, cols, 0, eighths, pp), "iq4_nl table / 8, g64", rng);
    // Not integers at any power of two up to 2^7: NF4's table, or an entry of 0.3.
    std::vector<float> third(iq4, iq4 + 16);
    third[5] = 0.3f;
    CHECK_FALSE(has_int8_path(planar_view::table(4, codes, rows, cols, 0, third, pp)));
    CHECK_FALSE(has_int8_path(quantizer<codebook<4>>(nf4(), per_group(64))
                                  .quantize(matrix_view<const float>(wf.data(), rows, cols))
                                  .view()));
}

TEST_CASE("gemv int8: bias, row ranges, fp16/bf16 outputs and threads", "[kernels][gemv][q8]") {
    isa_reset reset;
    std::mt19937 rng(12);
    const std::size_t rows = 37, cols = 256;
    const std::vector<float> wf = random_matrix(rows, cols, rng);
    const auto q = quantizer<affine<4>>({}, per_group(64)).quantize(matrix_view<const float>(wf.data(), rows, cols));
    const planar_view w = q.view();
    std::vector<float> bias(rows);
    for (std::size_t r = 0; r < rows; ++r) bias[r] = 0.25f * static_cast<float>(r) - 3.0f;
    const activations x = make_x(5, cols, 1, rng);
    const ggml_activations xq = quantize_activations(w, x.view());
    const std::size_t ys = rows + 1;
    for (isa i : available_isas()) {
        set_active_isa(i);
        const std::string on = " on " + std::string(isa_name(i));
        std::vector<float> y(5 * ys, -7777.0f);
        gemv(w, xq, matrix_view<float>(y.data(), 5, rows, ys), row_range{3, 30}, bias);
        compare(w, xq, y, ys, bias, 3, 30, "rows [3, 30) with bias" + on);

        // Every row, then the same in fp16 and bf16: the fp32 results rounded once.
        std::vector<float> full(5 * rows);
        gemv(w, xq, matrix_view<float>(full.data(), 5, rows), all_rows, bias);
        for (out_type t : {out_type::f16, out_type::bf16}) {
            std::vector<std::uint16_t> h(5 * rows);
            gemv(w, xq, matrix_view<std::uint16_t>(h.data(), 5, rows), t, all_rows, bias);
            for (std::size_t e = 0; e < h.size(); ++e)
                REQUIRE(h[e] == (t == out_type::f16 ? float_to_fp16(full[e]) : float_to_bf16(full[e])));
        }
        // Two threads split the rows; each row's arithmetic is the same.
        std::vector<float> par(5 * rows, -1.0f);
        gemv_parallel(w, xq, matrix_view<float>(par.data(), 5, rows), 2, bias);
        REQUIRE(par == full);
    }
}

TEST_CASE("gemv int8: weights without an int8 path and mismatched activations are errors", "[kernels][gemv][q8][errors]") {
    std::mt19937 rng(3);
    const std::vector<float> wf = random_matrix(4, 64, rng);
    const matrix_view<const float> wv(wf.data(), 4, 64);
    const activations x = make_x(2, 64, 0, rng);
    std::vector<float> y(2 * 4);
    const matrix_view<float> yv(y.data(), 2, 4);
    const auto expect = [](auto&& f, errc code, const std::string& part) {
        try {
            f();
            FAIL("no error; expected one containing: " << part);
        } catch (const lowbit::error& e) {
            INFO(e.what());
            CHECK(e.code() == code);
            CHECK(std::string(e.what()).find(part) != std::string::npos);
        }
    };
    // A codebook, and groups of 16 but for 4-bit codes, have none.
    const auto nf4w = quantizer<codebook<4>>(nf4(), per_group(64)).quantize(wv);
    const auto g16 = quantizer<affine<8>>({}, per_group(16)).quantize(wv);
    CHECK_FALSE(has_int8_path(nf4w.view()));
    CHECK_FALSE(has_int8_path(g16.view()));
    expect([&] { (void)quantize_activations(nf4w.view(), x.view()); }, errc::unsupported, "no int8 path for planar 4-bit table");
    expect([&] { (void)quantize_activations(g16.view(), x.view()); }, errc::unsupported, "no int8 path");
    const auto w = quantizer<affine<4>>({}, per_group(32)).quantize(wv);
    const ggml_activations xq = quantize_activations(w.view(), x.view());
    expect([&] { gemv(g16.view(), xq, yv); }, errc::unsupported, "no int8 path");
    // Q8_1 blocks (Q4_1's activations) are not what planar weights take.
    const ggml_activations xk = quantize_activations(ggml::type::q4_1, x.view());
    expect([&] { gemv(w.view(), xk, yv); }, errc::invalid_argument, "planar weights take q8_0");
    // Shapes: x's columns, y's shape.
    const auto w128 = quantizer<affine<4>>({}, per_group(32)).quantize(matrix_view<const float>(
        random_matrix(4, 128, rng).data(), 4, 128));
    expect([&] { gemv(w128.view(), xq, yv); }, errc::invalid_argument, "x has 64 columns");
    std::vector<float> y3(3 * 4);
    expect([&] { gemv(w.view(), xq, matrix_view<float>(y3.data(), 3, 4)); }, errc::invalid_argument, "y is 3 x 4");
}
