// The Hadamard rotation (kernels/hadamard.hpp, algorithms/hadamard.hpp):
// the factor matrices are Hadamard matrices built as the header says, the
// rotation of 2^k values is Sylvester's matrix over sqrt(n) exactly, every
// instruction set gives the scalar reference's bits, the rotation is
// orthonormal and its transpose undoes it, threads do not change it, and a
// weight with outlier columns loses less to round-to-nearest once rotated.
// That it is QuaRot's rotation is tests/interop/test_hadamard.py.
#include "catch.hpp"

#include <lowbit/algorithms/hadamard.hpp>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

using namespace lowbit;

namespace {

std::vector<float> random_rows(std::size_t rows, std::size_t n, unsigned seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> v(rows * n);
    for (auto& x : v) x = d(rng);
    return v;
}

std::vector<float> rotated(std::vector<float> x, std::size_t n, bool transpose = false, unsigned threads = 1) {
    rotate_rows(matrix_view<float>(x.data(), x.size() / n, n), transpose, threads);
    return x;
}

}  // namespace

TEST_CASE("Hadamard factor matrices: H H^T = m I, QuaRot's borders") {
    for (std::size_t m : {12u, 20u, 28u, 40u}) {
        INFO(m);
        bool ok = true;
        for (std::size_t i = 0; i < m; ++i)
            for (std::size_t j = 0; j < m; ++j) {
                int dot = 0;
                for (std::size_t k = 0; k < m; ++k) dot += hadamard_entry(m, i, k) * hadamard_entry(m, j, k);
                ok &= dot == (i == j ? static_cast<int>(m) : 0);
            }
        CHECK(ok);
    }
    // Paley I: row 0 is (1, -1, ..., -1), column 0 all 1; H_12[1] (QuaRot's get_had12 row 1).
    for (std::size_t j = 1; j < 12; ++j) CHECK((hadamard_entry(12, 0, j) == -1 && hadamard_entry(12, j, 0) == 1));
    const int row1[12] = {1, 1, -1, 1, -1, -1, -1, 1, 1, 1, -1, 1};
    for (std::size_t j = 0; j < 12; ++j) CHECK(hadamard_entry(12, 1, j) == row1[j]);
    // Paley II (28): its first row is all 1 but column 14.
    for (std::size_t j = 0; j < 28; ++j) CHECK(hadamard_entry(28, 0, j) == (j == 14 ? -1 : 1));
    CHECK(hadamard_factor(4096) == 1);
    CHECK(hadamard_factor(3072) == 12);
    CHECK(hadamard_factor(20) == 20);
    CHECK(hadamard_factor(5120) == 40);  // QuaRot takes had40 for 20 x 2^k, k >= 1
    CHECK(hadamard_factor(14336) == 28);
    for (std::size_t n : {0u, 3u, 36u, 11008u, 13824u, 2304u}) CHECK(hadamard_factor(n) == 0);
}

TEST_CASE("Hadamard rotation of 2^k values is Sylvester's matrix over sqrt(n)") {
    const std::size_t n = 256;
    const auto t = hadamard_matrix(n);
    const float v = 1.0f / 16.0f;
    bool ok = true;
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = 0; j < n; ++j) ok &= t[i * n + j] == (std::popcount(i & j) % 2 ? -v : v);
    CHECK(ok);
}

TEST_CASE("Hadamard rotation: every instruction set gives the reference's bits") {
    for (std::size_t n : {8u, 12u, 16u, 24u, 40u, 64u, 96u, 160u, 448u, 1024u, 3072u, 5120u, 7168u}) {
        const auto x = random_rows(5, n, static_cast<unsigned>(n));
        kernels::set_active_isa(kernels::isa::scalar);
        const auto ref = rotated(x, n), ref_t = rotated(x, n, true);
        for (const auto i : kernels::available_isas()) {
            INFO(n << " " << kernels::isa_name(i));
            kernels::set_active_isa(i);
            const auto a = rotated(x, n), b = rotated(x, n, true);
            CHECK(std::memcmp(a.data(), ref.data(), a.size() * 4) == 0);
            CHECK(std::memcmp(b.data(), ref_t.data(), b.size() * 4) == 0);
            CHECK(std::memcmp(rotated(x, n, false, 3).data(), ref.data(), a.size() * 4) == 0);
        }
    }
    kernels::set_active_isa(kernels::available_isas().front());
}

TEST_CASE("Hadamard rotation is orthonormal and its transpose undoes it") {
    for (std::size_t n : {12u, 20u, 28u, 40u, 64u, 96u, 224u, 320u}) {
        INFO(n);
        const auto t = hadamard_matrix(n), tt = hadamard_matrix(n, true);
        double worst = 0.0;
        bool transposed = true;
        for (std::size_t i = 0; i < n; ++i)
            for (std::size_t j = 0; j < n; ++j) {
                double d = 0.0;
                for (std::size_t k = 0; k < n; ++k) d += static_cast<double>(t[i * n + k]) * t[j * n + k];
                worst = std::max(worst, std::fabs(d - (i == j ? 1.0 : 0.0)));
                transposed &= tt[i * n + j] == t[j * n + i];
            }
        CHECK(worst < 1e-6);
        CHECK(transposed);
        const auto x = random_rows(3, n, 9);
        const auto back = rotated(rotated(x, n), n, true);
        double err = 0.0;
        for (std::size_t i = 0; i < x.size(); ++i) err = std::max(err, static_cast<double>(std::fabs(back[i] - x[i])));
        CHECK(err < 1e-5);
    }
    std::vector<float> bad(2 * 36);
    CHECK_THROWS_WITH(rotate_rows(matrix_view<float>(bad.data(), 2, 36)), Catch::Contains("rows of 36 values"));
}

TEST_CASE("Hadamard rotation: outlier columns lose less to round-to-nearest") {
    // A weight whose 4 input channels are 20x the rest (what activation
    // outliers make of a folded norm), 4-bit absmax per row.
    const std::size_t rows = 64, n = 1024;
    auto w = random_rows(rows, n, 3);
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c : {7u, 300u, 301u, 900u}) w[r * n + c] *= 20.0f;
    const auto rtn_error = [&](const std::vector<float>& m) {
        double e = 0.0, s = 0.0;
        for (std::size_t r = 0; r < rows; ++r) {
            float amax = 0.0f;
            for (std::size_t c = 0; c < n; ++c) amax = std::max(amax, std::fabs(m[r * n + c]));
            const float scale = amax / 7.0f;
            for (std::size_t c = 0; c < n; ++c) {
                const float v = m[r * n + c], q = std::clamp(std::nearbyint(v / scale), -8.0f, 7.0f) * scale;
                e += (v - q) * (v - q);
                s += v * v;
            }
        }
        return e / s;
    };
    const double plain = rtn_error(w), rot = rtn_error(rotated(w, n));
    INFO(plain << " vs " << rot);
    CHECK(rot < 0.25 * plain);
}
