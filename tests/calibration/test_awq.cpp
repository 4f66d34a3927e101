// AWQ (lowbit::calibration): the quantization rule on hand-worked groups and
// its error bound, the scale search's losses against a direct double-precision
// computation (on both of its loss paths: X D^T and R D^T), its scales against the formula,
// the clip search's choice against every shrink it could have made, the
// whole pipeline against round-to-nearest, threads, float16 export, bad input.

#include <catch2/catch.hpp>
#include <cmath>
#include <lowbit/algorithms/awq.hpp>
#include <random>
#include <string>
#include <vector>

#include "calibration_data.hpp"

using namespace lowbit;
using namespace lowbit::calibration;

namespace {

using lowbit_test::correlated;
using lowbit_test::normal;

using mv = matrix_view<const float>;

// AutoAWQ's zero-point rule on one group, written out again (float32).
void rule(const std::vector<float>& g, int bits, std::vector<float>& deq) {
    float mx = g[0], mn = g[0];
    for (float v : g) mx = std::max(mx, v), mn = std::min(mn, v);
    const float maxq = static_cast<float>((1 << bits) - 1);
    const float s = std::max(mx - mn, 1e-5f) / maxq;
    const float z = std::clamp(-std::nearbyint(mn / s), 0.0f, maxq);
    deq.resize(g.size());
    for (std::size_t i = 0; i < g.size(); ++i)
        deq[i] = (std::clamp(std::nearbyint(g[i] / s) + z, 0.0f, maxq) - z) * s;
}

// ||X (W - W')^T||^2 / (tokens * rows), in double from scratch.
double out_loss(const std::vector<float>& x, std::size_t T, const std::vector<float>& d, std::size_t R, std::size_t C) {
    double sum = 0.0;
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t r = 0; r < R; ++r) {
            double y = 0.0;
            for (std::size_t c = 0; c < C; ++c) y += static_cast<double>(x[t * C + c]) * d[r * C + c];
            sum += y * y;
        }
    return sum / static_cast<double>(T * R);
}

// W - Q(W diag(s)) diag(s)^-1, per row groups of gs.
std::vector<float> candidate_diff(const std::vector<float>& w, std::size_t R, std::size_t C, std::size_t gs,
                                  const std::vector<float>& s, int bits) {
    std::vector<float> d(w.size()), g(gs), q;
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t c0 = 0; c0 < C; c0 += gs) {
            for (std::size_t c = 0; c < gs; ++c) g[c] = w[r * C + c0 + c] * s[c0 + c];
            rule(g, bits, q);
            for (std::size_t c = 0; c < gs; ++c) d[r * C + c0 + c] = w[r * C + c0 + c] - q[c] / s[c0 + c];
        }
    return d;
}

}  // namespace

TEST_CASE("awq_quantize: hand-worked groups and the rounding bound", "[calibration][awq]") {
    awq_options o;
    o.group_size = 4;
    o.fp16_export = false;
    // Group 0: min -1.3, max 2: scale 3.3/15 = 0.22, zero round(5.91) = 6.
    // Group 1: all positive, min 1: zero = clamp(-5) = 0, so values above
    // 15 * scale clip (AutoAWQ does not widen the range to hold 0).
    const std::vector<float> w = {-1.3f, 0.0f, 0.6f, 2.0f, 1.0f, 1.5f, 2.0f, 4.0f};
    const awq_quantized q = awq_quantize(mv(w.data(), 1, 8), o);
    REQUIRE(q.groups == 2);
    CHECK(q.scale[0] == Approx(0.22f));
    CHECK(q.zero[0] == 6);
    CHECK(std::vector<int>(q.codes.begin(), q.codes.begin() + 4) == std::vector<int>{0, 6, 9, 15});
    CHECK(q.scale[1] == Approx(0.2f));
    CHECK(q.zero[1] == 0);
    CHECK(std::vector<int>(q.codes.begin() + 4, q.codes.end()) == std::vector<int>{5, 8, 10, 15});
    CHECK(q.value(0, 7) == Approx(3.0f));  // 4 clipped to 15 * 0.2

    // Symmetric: scale max|w| / 7, codes offset by 8.
    o.zero_point = false;
    const awq_quantized sq = awq_quantize(mv(w.data(), 1, 8), o);
    CHECK(sq.scale[0] == Approx(2.0f / 7.0f));
    CHECK(sq.zero[0] == 8);
    CHECK(static_cast<int>(sq.codes[3]) == 15);
    CHECK(static_cast<int>(sq.codes[0]) == 8 - 5);  // round(-4.55)

    // Gaussian groups hold both signs: every value within half a step.
    std::mt19937 rng(7);
    for (int bits : {2, 3, 4, 8}) {
        const std::size_t R = 16, C = 256;
        const std::vector<float> v = normal(R * C, rng);
        awq_options b;
        b.bits = bits;
        b.group_size = 64;
        b.fp16_export = false;
        const awq_quantized r = awq_quantize(mv(v.data(), R, C), b);
        for (std::size_t i = 0; i < R; ++i)
            for (std::size_t c = 0; c < C; ++c) {
                const float s = r.scale[i * r.groups + c / 64];
                REQUIRE(std::fabs(r.value(i, c) - v[i * C + c]) <= s / 2 * 1.0001f);
            }
    }
}

TEST_CASE("awq_search_scales: losses and scales against a direct computation", "[calibration][awq]") {
    std::mt19937 rng(11);
    const std::size_t C = 128, R1 = 48, R2 = 24, gs = 32;
    const std::vector<float> w1 = normal(R1 * C, rng, 0.05f), w2 = normal(R2 * C, rng, 0.05f);
    // Tokens fewer than channels (the direct path) and more (through H).
    for (std::size_t T : {std::size_t{96}, std::size_t{400}}) {
        INFO("tokens " << T);
        const std::vector<float> x = correlated(T, C, rng, 8, 17, 3);
        const mv layers[2] = {mv(w1.data(), R1, C), mv(w2.data(), R2, C)};
        for (bool duo : {true, false}) {
            INFO("duo_scaling " << duo);
            awq_options o;
            o.group_size = gs;
            o.duo_scaling = duo;
            const awq_scale_result r = awq_search_scales(layers, mv(x.data(), T, C), o);
            REQUIRE(r.losses.size() == 20);
            // x_mean, w_mean and the scales of the chosen ratio, from the formula.
            std::vector<double> xm(C, 0.0), wm(C, 0.0);
            for (std::size_t t = 0; t < T; ++t)
                for (std::size_t c = 0; c < C; ++c) xm[c] += std::fabs(x[t * C + c]) / static_cast<double>(T);
            for (const std::vector<float>* w : {&w1, &w2})
                for (std::size_t i = 0; i < w->size() / C; ++i)
                    for (std::size_t c0 = 0; c0 < C; c0 += gs) {
                        double m = 0.0;
                        for (std::size_t c = c0; c < c0 + gs; ++c) m = std::max(m, std::fabs((double)(*w)[i * C + c]));
                        for (std::size_t c = c0; c < c0 + gs; ++c)
                            wm[c] += std::fabs((*w)[i * C + c]) / (m + 1e-6) / static_cast<double>(R1 + R2);
                    }
            std::size_t best = 0;
            for (std::size_t i = 0; i < 20; ++i) {
                const double ratio = i / 20.0;
                std::vector<double> sd(C);
                double mx = 0.0, mn = INFINITY;
                for (std::size_t c = 0; c < C; ++c) {
                    double v = std::pow(xm[c], ratio);
                    if (duo) v /= std::pow(wm[c], 1.0 - ratio) + 1e-4;
                    sd[c] = std::max(v, 1e-4);
                    mx = std::max(mx, sd[c]);
                    mn = std::min(mn, sd[c]);
                }
                std::vector<float> s(C);
                for (std::size_t c = 0; c < C; ++c) s[c] = static_cast<float>(sd[c] / std::sqrt(mx * mn));
                if (r.losses[i] < r.losses[best]) best = i;
                // Each ratio's loss from the scales of the formula, directly.
                const std::vector<float> d1 = candidate_diff(w1, R1, C, gs, s, 4),
                                         d2 = candidate_diff(w2, R2, C, gs, s, 4);
                const double direct = (out_loss(x, T, d1, R1, C) * R1 + out_loss(x, T, d2, R2, C) * R2) / (R1 + R2);
                INFO("ratio " << ratio);
                CHECK(r.losses[i] == Approx(direct).epsilon(2e-3));
                if (static_cast<float>(ratio) == r.ratio)
                    for (std::size_t c = 0; c < C; ++c) REQUIRE(r.scales[c] == Approx(s[c]).epsilon(1e-5));
            }
            CHECK(r.ratio == static_cast<float>(best / 20.0));
            // Outlier channels: some scaling beats none (ratio 0 without duo scaling is plain RTN).
            if (!duo) CHECK(r.losses[best] < 0.9 * r.losses[0]);
        }
    }
}

TEST_CASE("awq_search_clip: each group's clip is the least error of the shrinks tried", "[calibration][awq]") {
    std::mt19937 rng(5);
    const std::size_t R = 70, C = 64, T = 1100, gs = 32;  // 1100 tokens: every 2nd of them (550) is used
    std::vector<float> w = normal(R * C, rng, 0.05f);
    for (std::size_t r = 0; r < R; r += 7) w[r * C + (r % C)] = 0.6f;  // one outlier weight in some rows
    const std::vector<float> x = correlated(T, C, rng, 8, 13, 2);
    awq_options o;
    o.group_size = gs;
    const std::vector<float> clip = awq_search_clip(mv(w.data(), R, C), mv(x.data(), T, C), o);
    REQUIRE(clip.size() == R * 2);
    const auto err = [&](std::size_t r, std::size_t g, float m) {
        std::vector<float> grp(gs), q;
        for (std::size_t c = 0; c < gs; ++c) grp[c] = std::clamp(w[r * C + g * gs + c], -m, m);
        rule(grp, 4, q);
        double e = 0.0;
        std::size_t n = 0;
        for (std::size_t t = 0; t < T; t += 2, ++n) {
            double y = 0.0;
            for (std::size_t c = 0; c < gs; ++c) y += static_cast<double>(x[t * C + g * gs + c]) * (q[c] - w[r * C + g * gs + c]);
            e += y * y;
        }
        return e / static_cast<double>(n);
    };
    std::size_t shrunk = 0;
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t g = 0; g < 2; ++g) {
            float org = 0.0f;
            for (std::size_t c = 0; c < gs; ++c) org = std::max(org, std::fabs(w[r * C + g * gs + c]));
            const float chosen = clip[r * 2 + g];
            int at = -1;
            for (int i = 0; i < 10; ++i)
                if (chosen == org * static_cast<float>(1.0 - i / 20.0)) at = i;
            REQUIRE(at >= 0);
            shrunk += at > 0;
            const double e = err(r, g, chosen);
            for (int i = 0; i < 10; ++i) CHECK(e <= err(r, g, org * static_cast<float>(1.0 - i / 20.0)) * (1 + 1e-4));
        }
    CHECK(shrunk > 0);
    // Threads do not change the answer.
    o.threads = 2;
    CHECK(awq_search_clip(mv(w.data(), R, C), mv(x.data(), T, C), o) == clip);
}

TEST_CASE("awq: the pipeline beats round-to-nearest on the layers' outputs; threads, float16 export",
          "[calibration][awq]") {
    std::mt19937 rng(3);
    const std::size_t C = 256, R = 96, T = 700;
    const std::vector<float> w1 = normal(R * C, rng, 0.04f), w2 = normal(R * C, rng, 0.04f);
    const std::vector<float> x = correlated(T, C, rng, 12, 31, 7);
    const awq_layer layers[2] = {{mv(w1.data(), R, C), true}, {mv(w2.data(), R, C), false}};
    awq_options o;
    o.fp16_export = false;
    const awq_result a = awq(layers, mv(x.data(), T, C), o);
    REQUIRE(a.layers.size() == 2);
    CHECK(a.layers[0].clip.size() == R * 2);
    CHECK(a.layers[1].clip.empty());
    const std::vector<float> ones(C, 1.0f);
    for (std::size_t k = 0; k < 2; ++k) {
        const std::vector<float>& w = k ? w2 : w1;
        std::vector<float> d(R * C);
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t c = 0; c < C; ++c) d[r * C + c] = w[r * C + c] - a.layers[k].value(r, c) / a.search.scales[c];
        const double awq_loss = out_loss(x, T, d, R, C);
        const double rtn_loss = out_loss(x, T, candidate_diff(w, R, C, 128, ones, 4), R, C);
        INFO("layer " << k << ": awq " << awq_loss << ", rtn " << rtn_loss);
        CHECK(awq_loss < 0.8 * rtn_loss);
    }
    o.threads = 2;
    const awq_result b = awq(layers, mv(x.data(), T, C), o);
    CHECK(b.search.scales == a.search.scales);
    CHECK(b.search.losses == a.search.losses);
    CHECK(b.layers[0].codes == a.layers[0].codes);
    CHECK(b.layers[0].scale == a.layers[0].scale);

    // Float16 export: scales are float16 values, and each code decodes to
    // the float16 rule's value; values differ from float32's by at most a step, at few places.
    o.fp16_export = true;
    const awq_result h = awq(layers, mv(x.data(), T, C), o);
    for (float s : h.layers[0].scale) REQUIRE(fp16_to_float(float_to_fp16(s)) == s);
    std::size_t differ = 0;
    for (std::size_t i = 0; i < R * C; ++i) {
        differ += h.layers[0].codes[i] != a.layers[0].codes[i];
        const std::size_t r = i / C, c = i % C;
        REQUIRE(std::fabs(h.layers[0].value(r, c) - a.layers[0].value(r, c)) <=
                a.layers[0].scale[r * a.layers[0].groups + c / 128] * 1.01f);
    }
    CHECK(differ < R * C / 20);
}

TEST_CASE("awq: bad input is an error naming it", "[calibration][awq][errors]") {
    std::mt19937 rng(1);
    const std::size_t C = 64, R = 8, T = 32;
    std::vector<float> w = normal(R * C, rng), x = normal(T * C, rng);
    const mv layer[1] = {mv(w.data(), R, C)};
    const auto fails = [](auto&& f, errc code, const std::string& part) {
        try {
            f();
        } catch (const lowbit::error& e) {
            CHECK(e.code() == code);
            CHECK_THAT(e.what(), Catch::Contains(part));
            return;
        }
        FAIL("no error");
    };
    awq_options o;
    o.group_size = 48;
    fails([&] { awq_search_scales(layer, mv(x.data(), T, C), o); }, errc::not_divisible, "groups of 48");
    o.group_size = 32;
    o.bits = 1;
    fails([&] { awq_search_scales(layer, mv(x.data(), T, C), o); }, errc::invalid_argument, "bits 1");
    o.bits = 4;
    const mv narrow[1] = {mv(w.data(), R, C / 2)};
    fails([&] { awq_search_scales(narrow, mv(x.data(), T, C), o); }, errc::shape_mismatch, "32 input features");
    x[5 * C + 9] = NAN;
    fails([&] { awq_search_scales(layer, mv(x.data(), T, C), o); }, errc::non_finite, "token 5, feature 9");
    x[5 * C + 9] = 0.0f;
    w[3 * C + 2] = INFINITY;
    fails([&] { awq_quantize(mv(w.data(), R, C), o); }, errc::non_finite, "row 3, column 2");
    w[3 * C + 2] = 70000.0f;  // finite, but not in float16
    fails([&] { awq_quantize(mv(w.data(), R, C), o); }, errc::non_finite, "float16");
}
