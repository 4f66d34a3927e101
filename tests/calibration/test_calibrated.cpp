// GPTQ's, AWQ's and HQQ's results as the core's quantized<affine<B>>
// (lowbit/calibrated.hpp): every value the result's own, through the
// core's dequantize and GEMV; the forms the core cannot hold are errors.

#include <catch2/catch.hpp>
#include <cmath>
#include <lowbit/algorithms/awq.hpp>
#include <lowbit/algorithms/gptq.hpp>
#include <lowbit/algorithms/hqq.hpp>
#include <lowbit/calibrated.hpp>
#include <random>
#include <string>
#include <vector>

#include "calibration_data.hpp"

using namespace lowbit;
using lowbit_test::correlated;
using lowbit_test::normal;

namespace {

/// q holds exactly the result's values: dequantize (the kernels) and
/// dequantize_ref (the scheme's decode) give value(r, c), and the GEMV
/// is the product with them.
template <class Q, class R>
void same_values(const Q& q, const R& r, std::mt19937& rng) {
    const std::size_t rows = r.rows, cols = r.cols;
    REQUIRE(q.rows() == rows);
    REQUIRE(q.cols() == cols);
    std::vector<float> got(rows * cols), ref(rows * cols);
    q.dequantize(matrix_view<float>(got.data(), rows, cols));
    q.dequantize_ref(matrix_view<float>(ref.data(), rows, cols));
    for (std::size_t i = 0; i < got.size(); ++i) {
        INFO("row " << i / cols << ", column " << i % cols);
        REQUIRE(got[i] == r.value(i / cols, i % cols));
        REQUIRE(ref[i] == got[i]);
    }
    const std::vector<float> x = normal(3 * cols, rng);
    std::vector<float> y(3 * rows);
    q.gemv(matrix_view<const float>(x.data(), 3, cols), matrix_view<float>(y.data(), 3, rows));
    for (std::size_t m = 0; m < 3; ++m)
        for (std::size_t n = 0; n < rows; ++n) {
            double s = 0.0;
            for (std::size_t k = 0; k < cols; ++k) s += double(x[m * cols + k]) * got[n * cols + k];
            REQUIRE(std::fabs(y[m * rows + n] - s) <= 1e-4 * (1.0 + std::fabs(s)));
        }
}

template <class F>
void throws_with(F&& f, const std::string& part) {
    try {
        f();
        FAIL("no error; expected one containing: " << part);
    } catch (const lowbit::error& e) {
        INFO(e.what());
        CHECK(std::string(e.what()).find(part) != std::string::npos);
    }
}

}  // namespace

TEST_CASE("calibrated: GPTQ's result as quantized<affine<B>>", "[calibration][calibrated]") {
    std::mt19937 rng(31);
    const std::size_t rows = 24, cols = 256, tokens = 600;
    const std::vector<float> w = normal(rows * cols, rng), x = correlated(tokens, cols, rng);
    calibration::hessian h(cols);
    h.add(matrix_view<const float>(x.data(), tokens, cols));
    const auto H = h.matrix();
    const matrix_view<const float> wv(w.data(), rows, cols);
    calibration::gptq_options o;
    o.group_size = 64;
    o.sym = false;
    const auto g4 = calibration::gptq(wv, H, o);
    same_values(from_gptq<4>(g4), g4, rng);
    CHECK(from_gptq<4>(g4).gran.kind == granularity_kind::per_group);
    o.bits = 3;
    o.group_size = 0;  // one group a row
    const auto g3 = calibration::gptq(wv, H, o);
    same_values(from_gptq<3>(g3), g3, rng);
    CHECK(from_gptq<3>(g3).gran.kind == granularity_kind::per_channel);
    // Act-order with static groups keeps runs of columns.
    o.bits = 4;
    o.group_size = 32;
    o.sym = true;
    o.act_order = true;
    o.static_groups = true;
    const auto gs = calibration::gptq(wv, H, o);
    same_values(from_gptq<4>(gs), gs, rng);
    // Without static groups its groups follow the quantization order.
    o.static_groups = false;
    const auto ga = calibration::gptq(wv, H, o);
    throws_with([&] { (void)from_gptq<4>(ga); }, "not a run of columns");
    throws_with([&] { (void)from_gptq<8>(g4); }, "4-bit codes");
}

TEST_CASE("calibrated: AWQ's and HQQ's results as quantized<affine<B>>", "[calibration][calibrated]") {
    std::mt19937 rng(32);
    const std::size_t rows = 16, cols = 384;
    std::vector<float> w = normal(rows * cols, rng);
    for (std::size_t i = 0; i < w.size(); i += 97) w[i] *= 12.0f;  // outliers
    const matrix_view<const float> wv(w.data(), rows, cols);
    calibration::awq_options ao;
    const auto a = calibration::awq_quantize(wv, ao);
    same_values(from_awq<4>(a), a, rng);
    ao.bits = 3;
    ao.group_size = 0;
    const auto a3 = calibration::awq_quantize(wv, ao);
    same_values(from_awq<3>(a3), a3, rng);
    for (const int bits : {2, 4}) {
        hqq_options ho;
        ho.bits = bits;
        ho.group_size = 64;
        const auto r = hqq(wv, ho);
        if (bits == 2) same_values(from_hqq<2>(r), r, rng);
        else same_values(from_hqq<4>(r), r, rng);
    }
    const auto r = hqq(wv);
    throws_with([&] { (void)from_hqq<3>(r); }, "4-bit codes");
}

TEST_CASE("calibrated: affine_from_codes checks what it is given", "[calibration][calibrated]") {
    const std::vector<std::uint8_t> codes(4 * 8, 3);
    const std::vector<float> s(8, 0.5f), z(8, 1.0f);
    const auto q = affine_from_codes<2>(4, 8, 4, codes, s, z);
    std::vector<float> out(32);
    q.dequantize(matrix_view<float>(out.data(), 4, 8));
    for (float v : out) REQUIRE(v == 1.0f);  // (3 - 1) * 0.5
    throws_with([&] { (void)affine_from_codes<2>(4, 8, 3, codes, s, z); }, "not whole groups of 3");
    throws_with([&] { (void)affine_from_codes<2>(4, 8, 4, codes, std::span<const float>(s.data(), 7), z); },
                "7 scales");
    std::vector<std::uint8_t> big = codes;
    big[13] = 4;
    throws_with([&] { (void)affine_from_codes<2>(4, 8, 4, big, s, z); }, "row 1, column 5 is 4, more than 2 bits");
    std::vector<float> bad = s;
    bad[5] = NAN;
    throws_with([&] { (void)affine_from_codes<2>(4, 8, 4, codes, bad, z); }, "group 1 of row 2");
}
