// SmoothQuant (algorithms/smoothquant.hpp): the scales worked by hand, the
// rescaled layer computing the same outputs, alpha = 0.5 balancing each
// channel's activation and weight maxima, the int8 x int8 error it exists to
// cut on activations with a few large channels, and bad input.

#include <catch2/catch.hpp>
#include <cmath>
#include <lowbit/algorithms/smoothquant.hpp>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;

namespace {

struct layer {
    std::size_t tokens, in, out;
    std::vector<float> x, w;  // tokens x in, out x in
};

// Activations with a few channels 30x louder than the rest (what SmoothQuant
// measured in LLMs), weights N(0, 0.02).
layer loud_channels(std::size_t tokens, std::size_t in, std::size_t out, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.0f, 1.0f);
    layer l{tokens, in, out, std::vector<float>(tokens * in), std::vector<float>(out * in)};
    for (std::size_t t = 0; t < tokens; ++t)
        for (std::size_t j = 0; j < in; ++j) l.x[t * in + j] = n(rng) * (j % 37 == 5 ? 30.0f : 1.0f);
    for (auto& v : l.w) v = 0.02f * n(rng);
    return l;
}

std::vector<float> max_abs_columns(const std::vector<float>& m, std::size_t rows, std::size_t cols) {
    std::vector<float> r(cols, 0.0f);
    for (std::size_t i = 0; i < rows; ++i)
        for (std::size_t j = 0; j < cols; ++j) r[j] = std::fmax(r[j], std::fabs(m[i * cols + j]));
    return r;
}

// Symmetric int8 round-to-nearest per row (per token for X, per output channel for W).
std::vector<float> int8_rows(const std::vector<float>& m, std::size_t rows, std::size_t cols) {
    std::vector<float> q(m.size());
    for (std::size_t i = 0; i < rows; ++i) {
        float amax = 0.0f;
        for (std::size_t j = 0; j < cols; ++j) amax = std::fmax(amax, std::fabs(m[i * cols + j]));
        const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
        for (std::size_t j = 0; j < cols; ++j) q[i * cols + j] = std::nearbyint(m[i * cols + j] / s) * s;
    }
    return q;
}

// Y = X W^T in double.
std::vector<double> outputs(const std::vector<float>& x, const std::vector<float>& w, const layer& l) {
    std::vector<double> y(l.tokens * l.out, 0.0);
    for (std::size_t t = 0; t < l.tokens; ++t)
        for (std::size_t o = 0; o < l.out; ++o) {
            double s = 0.0;
            for (std::size_t j = 0; j < l.in; ++j) s += static_cast<double>(x[t * l.in + j]) * w[o * l.in + j];
            y[t * l.out + o] = s;
        }
    return y;
}

double relative_error(const std::vector<double>& a, const std::vector<double>& b) {
    double e = 0.0, r = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) e += (a[i] - b[i]) * (a[i] - b[i]), r += b[i] * b[i];
    return std::sqrt(e / r);
}

}  // namespace

TEST_CASE("smoothquant: the scales by hand", "[smoothquant]") {
    // Channel maxima: activations 4 and 1; weights 1 and 4 (over both layers).
    const std::vector<float> act = {4.0f, 1.0f};
    const std::vector<float> w1 = {1.0f, -2.0f, 0.5f, 0.25f}, w2 = {-0.5f, 4.0f};
    const std::vector<matrix_view<const float>> ws = {matrix_view<const float>(w1.data(), 2, 2),
                                                      matrix_view<const float>(w2.data(), 1, 2)};
    auto s = smoothquant_scales(act, ws);  // sqrt(4) / sqrt(1), sqrt(1) / sqrt(4)
    CHECK(s == std::vector<float>{2.0f, 0.5f});
    smoothquant_options o;
    o.alpha = 1.0f;  // all of it into the weights: s = max|X|
    CHECK(smoothquant_scales(act, ws, o) == std::vector<float>{4.0f, 1.0f});
    o.alpha = 0.0f;  // s = 1 / max|W|
    CHECK(smoothquant_scales(act, ws, o) == std::vector<float>{1.0f, 0.25f});
    // A silent channel: the floor.
    const std::vector<float> quiet = {0.0f, 1.0f};
    CHECK(smoothquant_scales(quiet, ws)[0] == 1e-5f);
}

TEST_CASE("smoothquant: same outputs, balanced maxima, smaller int8 error", "[smoothquant]") {
    layer l = loud_channels(256, 256, 96, 1);
    const auto act = max_abs_columns(l.x, l.tokens, l.in);
    const matrix_view<const float> wv(l.w.data(), l.out, l.in);
    const auto s = smoothquant_scales(act, std::span<const matrix_view<const float>>(&wv, 1));
    std::vector<float> xs = l.x, ws = l.w;
    for (std::size_t t = 0; t < l.tokens; ++t) divide_by(std::span<float>(&xs[t * l.in], l.in), s);
    scale_columns(matrix_view<float>(ws.data(), l.out, l.in), s);

    // The same function: each product x_j w_j changes only by rounding.
    const auto y = outputs(l.x, l.w, l), ys = outputs(xs, ws, l);
    CHECK(relative_error(ys, y) < 1e-6);

    // alpha = 0.5: each channel's activation and weight maxima become equal
    // (both sqrt(max|X_j| max|W_j|)).
    const auto ax = max_abs_columns(xs, l.tokens, l.in), aw = max_abs_columns(ws, l.out, l.in);
    for (std::size_t j = 0; j < l.in; ++j) CHECK(ax[j] == Approx(aw[j]).epsilon(1e-5));

    // What it is for: int8 activations per token and int8 weights per output
    // channel lose far less once the loud channels are smoothed (measured:
    // relative output error 0.026 plain, 0.008 smoothed).
    const double plain = relative_error(outputs(int8_rows(l.x, l.tokens, l.in), int8_rows(l.w, l.out, l.in), l), y);
    const double smooth = relative_error(outputs(int8_rows(xs, l.tokens, l.in), int8_rows(ws, l.out, l.in), l), y);
    CAPTURE(plain, smooth);
    CHECK(smooth < 0.6 * plain);
}

TEST_CASE("smoothquant: bad input", "[smoothquant]") {
    const std::vector<float> act = {1.0f, 2.0f}, w = {1.0f, 2.0f, 3.0f, 4.0f, 5.0f, 6.0f};
    const matrix_view<const float> w2(w.data(), 3, 2), w3(w.data(), 2, 3);
    smoothquant_options o;
    o.alpha = 1.5f;
    CHECK_THROWS_WITH(smoothquant_scales(act, std::span(&w2, 1), o), Catch::Contains("alpha 1.5 is not in [0, 1]"));
    CHECK_THROWS_WITH(smoothquant_scales(act, std::span(&w3, 1)), Catch::Contains("3 columns for 2 activation channels"));
    const std::vector<float> bad_act = {1.0f, std::nanf("")};
    CHECK_THROWS_WITH(smoothquant_scales(bad_act, std::span(&w2, 1)), Catch::Contains("channel 1"));
    std::vector<float> v = {1.0f, 2.0f};
    CHECK_THROWS_WITH(divide_by(v, std::vector<float>{1.0f, 0.0f}), Catch::Contains("scale of channel 1 is 0"));
    CHECK_THROWS_WITH(divide_by(v, std::vector<float>{1.0f}), Catch::Contains("1 scales for 2 channels"));
}
