// HQQ (algorithms/hqq.hpp): a group worked by hand, the solver's invariants
// (codes in range, the rounding bound, errors falling until the step that
// stops it, results independent of threads), torch's summation order
// covering every value once, quality against round-to-nearest with the same
// initial params on weights with outliers, and the errors bad input gets.
// tests/interop/test_hqq.py holds the results to the hqq package's bit for bit.

#include <catch2/catch.hpp>
#include <cmath>
#include <lowbit/algorithms/hqq.hpp>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;

namespace {

// N(0, 0.02) with about 2 in 1 000 weights of magnitude 0.1 to 0.4, as a
// trained layer's are.
std::vector<float> outlier_weights(std::size_t rows, std::size_t cols, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> n(0.0f, 0.02f);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    std::vector<float> w(rows * cols);
    for (auto& v : w) {
        v = n(rng);
        if (u(rng) < 0.002f) v = (u(rng) < 0.5f ? -1.0f : 1.0f) * (0.1f + 0.3f * u(rng));
    }
    return w;
}

bool same(const hqq_result& a, const hqq_result& b) {
    return a.codes == b.codes && a.scale == b.scale && a.zero == b.zero && a.errors == b.errors;
}

}  // namespace

TEST_CASE("hqq: a group its levels fit exactly", "[hqq]") {
    // 0, 1/15, ..., 1 at 4 bits: s = (1 / 1) * 15, z = 0, every weight on a
    // level. The first step's error is 0 and the second's is not smaller, so
    // the solver stops after two steps with z still 0.
    std::vector<float> w(16);
    for (int i = 0; i < 16; ++i) w[static_cast<std::size_t>(i)] = static_cast<float>(i) / 15.0f;
    hqq_options o;
    o.group_size = 16;
    const hqq_result r = hqq(matrix_view<const float>(w.data(), 1, 16), o);
    REQUIRE(r.errors.size() == 2);
    CHECK(r.errors[0] == 0.0f);
    CHECK(std::fabs(r.zero[0]) < 1e-6f);  // the mean of q - w * s: rounding only
    CHECK(r.scale[0] == 1.0f / 15.0f);
    for (std::uint8_t i = 0; i < 16; ++i) CHECK(r.codes[i] == i);
}

TEST_CASE("hqq: codes, the rounding bound and the solver's errors", "[hqq]") {
    const std::size_t R = 96, C = 512;
    const auto w = outlier_weights(R, C, 3);
    for (const int bits : {1, 2, 3, 4, 8})
        for (const std::size_t gs : {std::size_t{32}, std::size_t{128}, std::size_t{0}}) {
            CAPTURE(bits, gs);
            hqq_options o;
            o.bits = bits;
            o.group_size = gs;
            const hqq_result r = hqq(matrix_view<const float>(w.data(), R, C), o);
            const std::size_t groups = gs ? C / gs : 1;
            REQUIRE(r.groups == groups);
            REQUIRE(r.codes.size() == R * C);
            REQUIRE(r.scale.size() == R * groups);
            // The errors fall at every step but the last, which stops the
            // solver unless it ran out of steps.
            REQUIRE(!r.errors.empty());
            for (std::size_t i = 1; i + 1 < r.errors.size(); ++i) CHECK(r.errors[i] < r.errors[i - 1]);
            if (r.errors.size() < 20) CHECK(r.errors.back() >= r.errors[r.errors.size() - 2]);
            const int max_code = (1 << bits) - 1;
            for (std::size_t i = 0; i < R; ++i)
                for (std::size_t j = 0; j < C; ++j) {
                    const int q = r.codes[i * C + j];
                    REQUIRE(q <= max_code);
                    const float scale = r.scale[i * groups + j / r.group_size];
                    REQUIRE(scale > 0.0f);
                    // Unclamped codes round w * s + z: within half a step
                    // (plus the rounding of w * s + z, at most 2^-16 of a step).
                    if (q > 0 && q < max_code) {
                        const float err = std::fabs(w[i * C + j] - r.value(i, j));
                        REQUIRE(err <= scale * (0.5f + 1.0f / 65536) + 1e-6f * std::fabs(w[i * C + j]));
                    }
                }
        }
}

TEST_CASE("hqq: the result does not depend on threads", "[hqq]") {
    // 1 024 x 512 weights: four of torch's top-level summation chunks at 8
    // lanes, two at 16, summed on different threads and joined in order.
    const std::size_t R = 1024, C = 512;
    const auto w = outlier_weights(R, C, 5);
    for (const unsigned lanes : {8u, 16u}) {
        hqq_options o;
        o.lanes = lanes;
        o.threads = 1;
        const hqq_result one = hqq(matrix_view<const float>(w.data(), R, C), o);
        o.threads = 3;
        CHECK(same(one, hqq(matrix_view<const float>(w.data(), R, C), o)));
    }
}

TEST_CASE("hqq: torch's summation order covers every value once", "[hqq]") {
    // Small integers sum exactly in float whatever the order: a value
    // dropped or counted twice (in the rows, the levels, the leftover
    // vectors, the tail or the chunks' join) changes the sum.
    std::mt19937 rng(11);
    std::uniform_int_distribution<int> v(-3, 3);
    for (const std::size_t lanes : {std::size_t{8}, std::size_t{16}})
        for (const std::size_t n : {1, 3, 7, 8, 15, 16, 31, 33, 64, 100, 127, 511, 512, 4'097, 70'000, 131'072,
                                    131'073, 300'001, 1'048'577}) {
            std::vector<float> x(n);
            long exact = 0;
            for (auto& e : x) {
                e = static_cast<float>(v(rng));
                exact += static_cast<long>(e);
            }
            CAPTURE(lanes, n);
            CHECK(detail::hqq::cascade(n, lanes).sum(x.data(), n) == static_cast<float>(exact));
        }
}

TEST_CASE("hqq: lower error than round-to-nearest on weights with outliers", "[hqq]") {
    // The same initial params without the solver (optimize = false) are
    // round-to-nearest over each group's range. Measured here at 2, 3 and 4
    // bits: relative Frobenius error 0.45 vs 0.63, 0.23 vs 0.25, 0.11 vs 0.12.
    const std::size_t R = 256, C = 1024;
    const auto w = outlier_weights(R, C, 1);
    for (const int bits : {2, 3, 4}) {
        CAPTURE(bits);
        hqq_options o;
        o.bits = bits;
        const hqq_result h = hqq(matrix_view<const float>(w.data(), R, C), o);
        o.optimize = false;
        const hqq_result rtn = hqq(matrix_view<const float>(w.data(), R, C), o);
        CHECK(rtn.errors.empty());
        double eh = 0, er = 0, ah = 0, ar = 0;
        for (std::size_t i = 0; i < R; ++i)
            for (std::size_t j = 0; j < C; ++j) {
                const double dh = w[i * C + j] - h.value(i, j), dr = w[i * C + j] - rtn.value(i, j);
                eh += dh * dh, er += dr * dr, ah += std::fabs(dh), ar += std::fabs(dr);
            }
        CHECK(eh < er);
        CHECK(ah < ar);
        if (bits == 2) CHECK(eh < 0.64 * er);  // 0.8 x the Frobenius error
    }
}

TEST_CASE("hqq: round_zero and the initial params", "[hqq]") {
    const auto w = outlier_weights(8, 64, 9);
    hqq_options o;
    o.optimize = false;
    for (const int bits : {3, 4}) {
        o.bits = bits;
        const hqq_result r = hqq(matrix_view<const float>(w.data(), 8, 64), o);
        bool integral = true;
        for (const float z : r.zero) integral &= z == std::nearbyint(z);
        CHECK(integral == (bits == 4));  // hqq rounds the initial zero at 4 bits only
    }
}

TEST_CASE("hqq: bad input", "[hqq]") {
    std::vector<float> w(4 * 64, 0.01f);
    const matrix_view<const float> v(w.data(), 4, 64);
    const auto fails = [&](hqq_options o, const std::string& what) {
        CHECK_THROWS_WITH(hqq(v, o), Catch::Contains(what));
    };
    hqq_options o;
    o.bits = 0;
    fails(o, "bits must be 1..8");
    o = {};
    o.group_size = 48;
    fails(o, "group size 48 does not divide the 64 columns");
    o = {};
    o.lanes = 12;
    fails(o, "lanes must be 8 or 16");
    o = {};
    o.lp_norm = 1.5;
    fails(o, "lp_norm must be in (0, 1]");
    w[2 * 64 + 7] = std::nanf("");
    CHECK_THROWS_WITH(hqq(v), Catch::Contains("row 2, column 7"));
    w[2 * 64 + 7] = 3e38f;
    CHECK_THROWS_WITH(hqq(v), Catch::Contains("beyond half of float's range"));
    CHECK(hqq(matrix_view<const float>(w.data(), 0, 64)).codes.empty());
}
