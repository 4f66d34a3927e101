// GPTQ (lowbit::calibration) against round-to-nearest and against its own
// invariants: an identity Hessian leaves nothing to correct (RTN's codes), a
// Hessian of correlated inputs is where it wins; threads, dead inputs,
// static groups and act-order's group map; bad input.

#include <cblas.h>

#include <catch2/catch.hpp>
#include <cmath>
#include <lowbit/algorithms/gptq.hpp>
#include <random>
#include <string>
#include <vector>

#include "calibration_data.hpp"

using namespace lowbit;
using namespace lowbit::calibration;

namespace {

using lowbit_test::correlated;
using lowbit_test::normal;


std::vector<float> hessian_of(const std::vector<float>& x, std::size_t tokens, std::size_t in) {
    hessian h(in);
    for (std::size_t t0 = 0; t0 < tokens; t0 += 300)
        h.add(matrix_view<const float>(x.data() + t0 * in, std::min<std::size_t>(300, tokens - t0), in));
    return h.matrix();
}

// Round-to-nearest with GPTQ's own params per group (no error feedback).
std::vector<float> rtn(const std::vector<float>& w, std::size_t rows, std::size_t cols, int bits, std::size_t gs,
                       bool sym) {
    const int maxq = (1 << bits) - 1;
    std::vector<float> out(w.size());
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c0 = 0; c0 < cols; c0 += gs) {
            const std::size_t n = std::min(gs, cols - c0);
            float s = 0.0f, z = 0.0f;
            gptq_options o;
            o.sym = sym;
            calibration::detail::gptq::fit(&w[r * cols + c0], n, maxq, o, s, z);
            for (std::size_t c = c0; c < c0 + n; ++c)
                out[r * cols + c] = s * (calibration::detail::gptq::code(w[r * cols + c], s, z, maxq) - z);
        }
    return out;
}

std::vector<float> values(const gptq_result& g) {
    std::vector<float> v(g.rows * g.cols);
    for (std::size_t r = 0; r < g.rows; ++r)
        for (std::size_t c = 0; c < g.cols; ++c) v[r * g.cols + c] = g.value(r, c);
    return v;
}

// ||X W^T - X Wq^T||_F
double output_error(const std::vector<float>& x, std::size_t tokens, const std::vector<float>& w,
                    const std::vector<float>& wq, std::size_t rows, std::size_t cols) {
    std::vector<float> d(w.size()), y(tokens * rows);
    for (std::size_t i = 0; i < w.size(); ++i) d[i] = w[i] - wq[i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(tokens), static_cast<int>(rows),
                static_cast<int>(cols), 1.0f, x.data(), static_cast<int>(cols), d.data(), static_cast<int>(cols), 0.0f,
                y.data(), static_cast<int>(rows));
    double s = 0.0;
    for (float v : y) s += static_cast<double>(v) * v;
    return std::sqrt(s);
}

}  // namespace

TEST_CASE("hessian: 2/n X^T X, streamed in chunks", "[calibration][gptq]") {
    std::mt19937 rng(1);
    const std::size_t t = 500, in = 40;
    const std::vector<float> x = normal(t * in, rng);
    const std::vector<float> h = hessian_of(x, t, in);
    for (std::size_t i = 0; i < in; ++i)
        for (std::size_t j = 0; j < in; ++j) {
            double e = 0.0, mag = 0.0;
            for (std::size_t k = 0; k < t; ++k) {
                e += 2.0 * x[k * in + i] * x[k * in + j] / static_cast<double>(t);
                mag += std::fabs(2.0 * x[k * in + i] * x[k * in + j] / static_cast<double>(t));
            }
            REQUIRE(std::fabs(h[i * in + j] - e) <= 1e-5 * mag);
            REQUIRE(h[i * in + j] == h[j * in + i]);
        }
    hessian bad(in);
    CHECK_THROWS_AS(bad.add(matrix_view<const float>(x.data(), 2, in - 1)), lowbit::error);
    std::vector<float> nan = x;
    nan[3 * in + 7] = NAN;
    try {
        bad.add(matrix_view<const float>(nan.data(), 5, in));
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(e.code() == errc::non_finite);
        CHECK(std::string(e.what()).find("token 3, feature 7") != std::string::npos);
    }
}

TEST_CASE("gptq: an identity Hessian gives round-to-nearest's codes", "[calibration][gptq]") {
    std::mt19937 rng(2);
    const std::size_t rows = 37, cols = 256;
    const std::vector<float> w = normal(rows * cols, rng);
    std::vector<float> h(cols * cols, 0.0f);
    for (std::size_t i = 0; i < cols; ++i) h[i * cols + i] = 2.5f;
    for (int bits : {2, 3, 4, 8})
        for (std::size_t gs : {std::size_t{32}, std::size_t{128}, std::size_t{0}})
            for (bool sym : {true, false}) {
                gptq_options o;
                o.bits = bits;
                o.group_size = gs;
                o.sym = sym;
                o.act_order = bits == 3;  // equal diagonals: the order stays
                const gptq_result g = gptq(matrix_view<const float>(w.data(), rows, cols), h, o);
                const std::vector<float> want = rtn(w, rows, cols, bits, gs ? gs : cols, sym);
                const std::vector<float> got = values(g);
                INFO("bits " << bits << ", group " << gs << ", sym " << sym);
                for (std::size_t i = 0; i < got.size(); ++i) REQUIRE(got[i] == want[i]);
            }
}

TEST_CASE("gptq: correlated inputs, against round-to-nearest", "[calibration][gptq]") {
    std::mt19937 rng(3);
    const std::size_t rows = 192, cols = 512, tokens = 2048;
    const std::vector<float> w = normal(rows * cols, rng), x = correlated(tokens, cols, rng);
    const std::vector<float> h = hessian_of(x, tokens, cols);
    for (int bits : {4, 3})
        for (bool sym : {true, false}) {
            gptq_options o;
            o.bits = bits;
            o.sym = sym;
            const matrix_view<const float> wv(w.data(), rows, cols);
            const double e_rtn = output_error(x, tokens, w, rtn(w, rows, cols, bits, 128, sym), rows, cols);
            const double e_gptq = output_error(x, tokens, w, values(gptq(wv, h, o)), rows, cols);
            o.act_order = true;
            const double e_act = output_error(x, tokens, w, values(gptq(wv, h, o)), rows, cols);
            INFO("bits " << bits << ", sym " << sym << ": rtn " << e_rtn << ", gptq " << e_gptq << ", act-order " << e_act);
            if (bits == 4) CHECK(e_gptq <= 0.35 * e_rtn);
            CHECK(e_gptq < e_rtn);
            CHECK(e_act < e_gptq);
        }
}

TEST_CASE("gptq: threads, dead inputs, static groups and the group map", "[calibration][gptq]") {
    std::mt19937 rng(4);
    const std::size_t rows = 1100, cols = 192, tokens = 600;  // rows: more than two chunks of 512
    const std::vector<float> w = normal(rows * cols, rng);
    std::vector<float> x = correlated(tokens, cols, rng);
    for (std::size_t t = 0; t < tokens; ++t) x[t * cols + 17] = 0.0f;  // input 17 never fires
    const std::vector<float> h = hessian_of(x, tokens, cols);
    REQUIRE(h[17 * cols + 17] == 0.0f);
    const matrix_view<const float> wv(w.data(), rows, cols);
    gptq_options o;
    o.group_size = 64;
    o.act_order = true;
    const gptq_result one = gptq(wv, h, o);
    o.threads = 2;
    const gptq_result two = gptq(wv, h, o);
    CHECK(one.codes == two.codes);
    CHECK(one.scale == two.scale);
    CHECK(one.zero == two.zero);
    CHECK(one.loss == two.loss);
    // A dead input's weights are 0, quantized exactly.
    for (std::size_t r = 0; r < rows; ++r) REQUIRE(one.value(r, 17) == 0.0f);
    // Act-order without static groups: groups by quantization order, so
    // g_idx is a permutation's image, each group holding 64 columns.
    REQUIRE(one.perm.size() == cols);
    std::vector<int> count(one.groups, 0);
    for (std::size_t j = 0; j < cols; ++j) {
        REQUIRE(one.g_idx[static_cast<std::size_t>(one.perm[j])] == static_cast<std::int32_t>(j / 64));
        ++count[static_cast<std::size_t>(one.g_idx[j])];
    }
    for (int c : count) CHECK(c == 64);
    // Static groups: params per group of original columns, g_idx in order.
    o.static_groups = true;
    const gptq_result st = gptq(wv, h, o);
    for (std::size_t c = 0; c < cols; ++c) REQUIRE(st.g_idx[c] == static_cast<std::int32_t>(c / 64));
}

TEST_CASE("gptq: the MSE option shrinks each group's range where that lowers sum |q - x|^2.4", "[calibration][gptq]") {
    std::mt19937 rng(6);
    const std::size_t rows = 16, cols = 256;
    std::vector<float> w = normal(rows * cols, rng);
    for (std::size_t r = 0; r < rows; ++r) w[r * cols + r] = 9.0f;  // an outlier a row
    std::vector<float> h(cols * cols, 0.0f);
    for (std::size_t i = 0; i < cols; ++i) h[i * cols + i] = 1.0f;
    for (bool sym : {true, false}) {
        gptq_options o;
        o.bits = 3;
        o.group_size = 64;
        o.sym = sym;
        const gptq_result plain = gptq(matrix_view<const float>(w.data(), rows, cols), h, o);
        o.mse = true;
        const gptq_result mse = gptq(matrix_view<const float>(w.data(), rows, cols), h, o);
        std::size_t shrunk = 0;
        for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t g = 0; g < cols / 64; ++g) {
                double ep = 0.0, em = 0.0;
                for (std::size_t c = g * 64; c < (g + 1) * 64; ++c) {
                    ep += std::pow(std::fabs(plain.value(r, c) - w[r * cols + c]), 2.4);
                    em += std::pow(std::fabs(mse.value(r, c) - w[r * cols + c]), 2.4);
                }
                INFO("sym " << sym << ", row " << r << ", group " << g);
                REQUIRE(em <= ep * (1 + 1e-6));
                shrunk += mse.scale[r * mse.groups + g] < plain.scale[r * plain.groups + g];
            }
        CHECK(shrunk >= rows);  // every group with an outlier, at least
    }
}

TEST_CASE("gptq: bad input is an error naming it", "[calibration][gptq][errors]") {
    std::mt19937 rng(5);
    const std::size_t rows = 4, cols = 32;
    std::vector<float> w = normal(rows * cols, rng);
    std::vector<float> h(cols * cols, 0.0f);
    for (std::size_t i = 0; i < cols; ++i) h[i * cols + i] = 1.0f;
    const auto expect = [&](const gptq_options& o, std::span<const float> hh, errc code, const std::string& part) {
        try {
            (void)gptq(matrix_view<const float>(w.data(), rows, cols), hh, o);
            FAIL("no error; expected one containing: " << part);
        } catch (const lowbit::error& e) {
            INFO(e.what());
            CHECK(e.code() == code);
            CHECK(std::string(e.what()).find(part) != std::string::npos);
        }
    };
    gptq_options o;
    o.bits = 1;
    expect(o, h, errc::invalid_argument, "bits 1");
    o.bits = 4;
    expect(o, std::span<const float>(h.data(), h.size() - 1), errc::shape_mismatch, "the Hessian has 1023 values");
    std::vector<float> hn = h;
    hn[5 * cols + 6] = NAN;
    expect(o, hn, errc::non_finite, "Hessian entry (5, 6)");
    // A rank-one Hessian without damping has no Cholesky factor.
    std::vector<float> r1(cols * cols);
    for (std::size_t i = 0; i < cols; ++i)
        for (std::size_t j = 0; j < cols; ++j) r1[i * cols + j] = static_cast<float>((i + 1) * (j + 1));
    o.percdamp = 0.0f;
    expect(o, r1, errc::invalid_argument, "not positive definite");
    // Or, asked for, round-to-nearest with a note saying why.
    o.rtn_fallback = true;
    const gptq_result fb = gptq(matrix_view<const float>(w.data(), rows, cols), r1, o);
    CHECK(fb.note.find("not positive definite") != std::string::npos);
    const std::vector<float> want = rtn(w, rows, cols, 4, 128, true);
    for (std::size_t i = 0; i < want.size(); ++i) REQUIRE(fb.value(i / cols, i % cols) == want[i]);
    o.rtn_fallback = false;
    o.percdamp = 0.01f;
    w[2 * cols + 9] = INFINITY;
    expect(o, h, errc::non_finite, "row 2, column 9");
    // Rows are checked across threads: the first in row-major order is named.
    w[3 * cols + 1] = NAN;
    hn[30 * cols + 2] = INFINITY;
    for (unsigned threads : {2u, 4u}) {
        o.threads = threads;
        expect(o, h, errc::non_finite, "row 2, column 9");
        w[2 * cols + 9] = 0.5f;
        expect(o, h, errc::non_finite, "row 3, column 1");
        w[2 * cols + 9] = INFINITY;
        expect(o, hn, errc::non_finite, "row 2, column 9");  // the weights before the Hessian
    }
    std::fill(w.begin(), w.end(), 0.25f);
    o.threads = 3;
    expect(o, hn, errc::non_finite, "Hessian entry (5, 6)");
    // 64 rows: chunks of rows on different threads, a NaN in each.
    std::vector<float> tall = normal(64 * cols, rng);
    tall[50 * cols + 3] = NAN;
    tall[20 * cols + 31] = -INFINITY;
    for (unsigned threads : {1u, 2u, 4u}) {
        o.threads = threads;
        try {
            (void)gptq(matrix_view<const float>(tall.data(), 64, cols), h, o);
            FAIL("no error");
        } catch (const lowbit::error& e) {
            CHECK(std::string(e.what()).find("row 20, column 31") != std::string::npos);
        }
    }
}

TEST_CASE("gptq and hessian: the same bits on one thread and two, at sizes BLAS splits", "[calibration][gptq]") {
    std::mt19937 rng(9);
    const std::size_t rows = 64, cols = 1024, tokens = 1100;
    const std::vector<float> w = normal(rows * cols, rng), x = correlated(tokens, cols, rng);
    hessian h1(cols, 1), h2(cols, 2);
    for (std::size_t t0 = 0; t0 < tokens; t0 += 500) {
        const matrix_view<const float> chunk(x.data() + t0 * cols, std::min<std::size_t>(500, tokens - t0), cols);
        h1.add(chunk);
        h2.add(chunk);
    }
    const std::vector<float> h = h1.matrix();
    REQUIRE(h == h2.matrix());
    gptq_options o;
    o.act_order = true;
    const gptq_result one = gptq(matrix_view<const float>(w.data(), rows, cols), h, o);
    o.threads = 2;
    const gptq_result two = gptq(matrix_view<const float>(w.data(), rows, cols), h, o);
    CHECK(one.codes == two.codes);
    CHECK(one.scale == two.scale);
    CHECK(one.zero == two.zero);
    CHECK(one.loss == two.loss);
}

TEST_CASE("gptq's tiled Cholesky: L L^T = A across partial tiles, the same bits on any threads", "[calibration][gptq]") {
    std::mt19937 rng(10);
    for (const std::size_t n : {std::size_t{1}, std::size_t{255}, std::size_t{600}}) {
        INFO("n = " << n);
        // A = B B^T / n + I: symmetric positive definite.
        const std::vector<float> b = normal(n * n, rng);
        std::vector<float> a(n * n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(n), static_cast<int>(n),
                    static_cast<int>(n), 1.0f / static_cast<float>(n), b.data(), static_cast<int>(n), b.data(),
                    static_cast<int>(n), 0.0f, a.data(), static_cast<int>(n));
        for (std::size_t i = 0; i < n; ++i) a[i * n + i] += 1.0f;
        std::vector<float> l1 = a, l3 = a;
        REQUIRE(calibration::detail::gptq::cholesky_lower(l1.data(), n, 1));
        REQUIRE(calibration::detail::gptq::cholesky_lower(l3.data(), n, 3));
        REQUIRE(l1 == l3);
        double worst = 0.0;
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j <= i; ++j) {
                double s = 0.0;
                for (std::size_t k = 0; k <= j; ++k) s += double(l1[i * n + k]) * l1[j * n + k];
                worst = std::max(worst, std::fabs(s - a[i * n + j]) / (1.0 + std::fabs(a[i * n + j])));
            }
        CHECK(worst < 1e-5);
    }
    // Not positive definite (a negative pivot in the last tile): false.
    const std::size_t n = 600;
    std::vector<float> a(n * n, 0.0f);
    for (std::size_t i = 0; i < n; ++i) a[i * n + i] = i == 590 ? -1.0f : 2.0f;
    CHECK_FALSE(calibration::detail::gptq::cholesky_lower(a.data(), n, 2));
}
