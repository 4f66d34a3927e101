#pragma once
// The Walsh-Hadamard rotation QuaRot and SpinQuant apply to weights and
// activations: for a row x of n = m * 2^k values, m one of 1, 12, 20, 28, 40,
//   x <- (H_m (x) H_p) x / sqrt(n),   p = 2^k,
// with H_p Sylvester's Hadamard matrix (the natural-order fast transform:
// butterflies a + b, a - b at strides 1, 2, ..., p/2 within each of the m
// contiguous blocks of p values), H_m mixing the blocks (block a becomes
// sum_b H_m[a][b] block b), and the division by sqrt(n) last. H_12 and H_20
// are Paley's first construction (q = 11, 19): row 0 is (1, -1, ..., -1),
// column 0 all 1, and H[1 + r][1 + c] = 1 on the diagonal, else minus the
// Legendre symbol of c - r mod q; H_28 is Paley's second (q = 13):
// [[C + I, C - I], [C - I, -C - I]] with C the symmetric conference matrix
// (C[0][j] = C[i][0] = 1, C[0][0] = 0, C[1 + i][1 + j] the Legendre symbol
// of j - i mod 13); H_40 is H_2 (x) H_20. These are the matrices QuaRot's
// get_had12, get_had20, get_had28 and get_had40 hold, and m is chosen as
// QuaRot's get_hadK chooses it (28, then 40, 20, 12: so 20 * 2^k with k >= 1
// takes 40), so the rotation is QuaRot's matmul_hadU (transpose: its
// transposed H_m, the inverse rotation). Sizes QuaRot serves with its other
// matrices (36, 44, 52, 60, 108, 140, 156, 172 times 2^k) are refused here,
// never rotated differently. The rotation is orthonormal:
// rotating a layer's weight rows and its input alike leaves W x unchanged.
//
// One row at a time in place, rows split across threads by the caller;
// the butterflies are the same additions on every instruction set, so the
// SIMD result is bit for bit the scalar reference's.

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "dispatch.hpp"

#if !defined(LOWBIT_NO_SIMD)
#include "../detail/fp_contract.hpp"
#include "../detail/xsimd_compat.hpp"
#endif

LOWBIT_NAMESPACE_BEGIN

namespace detail::hadamard {

/// The Legendre symbol of a mod the prime q.
constexpr int legendre(int a, int q) noexcept {
    a %= q;
    if (a < 0) a += q;
    if (a == 0) return 0;
    long long r = 1, b = a;
    for (int e = (q - 1) / 2; e > 0; e >>= 1) {
        if (e & 1) r = r * b % q;
        b = b * b % q;
    }
    return r == 1 ? 1 : -1;
}

template <int M>
using matrix = std::array<std::array<std::int8_t, M>, M>;

/// Paley's first construction of order q + 1 (q prime, q = 3 mod 4).
template <int Q>
constexpr matrix<Q + 1> paley1() noexcept {
    matrix<Q + 1> h{};
    h[0][0] = 1;
    for (int j = 1; j <= Q; ++j) {
        h[0][j] = -1;
        h[j][0] = 1;
    }
    for (int r = 0; r < Q; ++r)
        for (int c = 0; c < Q; ++c)
            h[1 + r][1 + c] = static_cast<std::int8_t>(r == c ? 1 : -legendre(c - r, Q));
    return h;
}

/// Paley's second construction of order 2 (q + 1) (q prime, q = 1 mod 4).
template <int Q>
constexpr matrix<2 * (Q + 1)> paley2() noexcept {
    constexpr int n = Q + 1;
    std::array<std::array<int, n>, n> c{};
    for (int j = 1; j < n; ++j) c[0][j] = c[j][0] = 1;
    for (int i = 0; i < Q; ++i)
        for (int j = 0; j < Q; ++j) c[1 + i][1 + j] = legendre(j - i, Q);
    matrix<2 * n> h{};
    for (int i = 0; i < n; ++i)
        for (int j = 0; j < n; ++j) {
            const int id = i == j;
            h[i][j] = static_cast<std::int8_t>(c[i][j] + id);
            h[i][n + j] = static_cast<std::int8_t>(c[i][j] - id);
            h[n + i][j] = static_cast<std::int8_t>(c[i][j] - id);
            h[n + i][n + j] = static_cast<std::int8_t>(-c[i][j] - id);
        }
    return h;
}

inline constexpr matrix<12> h12 = paley1<11>();
inline constexpr matrix<20> h20 = paley1<19>();
inline constexpr matrix<28> h28 = paley2<13>();

}  // namespace detail::hadamard

/// m of n = m * 2^k, chosen as QuaRot's get_hadK chooses among 28, 40, 20
/// and 12 (then 1), or 0 when n is no such size.
constexpr std::size_t hadamard_factor(std::size_t n) noexcept {
    const auto pow2 = [](std::size_t v) { return v != 0 && (v & (v - 1)) == 0; };
    for (std::size_t m : {std::size_t{28}, std::size_t{40}, std::size_t{20}, std::size_t{12}})
        if (n % m == 0 && pow2(n / m)) return m;
    return pow2(n) ? 1 : 0;
}

/// H_m[i][j] (m 1, 12, 20, 28 or 40).
constexpr int hadamard_entry(std::size_t m, std::size_t i, std::size_t j) noexcept {
    switch (m) {
    case 12: return detail::hadamard::h12[i][j];
    case 20: return detail::hadamard::h20[i][j];
    case 28: return detail::hadamard::h28[i][j];
    case 40: return (i >= 20 && j >= 20 ? -1 : 1) * detail::hadamard::h20[i % 20][j % 20];
    default: return 1;
    }
}

namespace kernels {

/// Rows [0, rows) of x (row stride ld floats), each n = m * p values,
/// rotated in place; `scratch` holds n floats (m > 1).
struct hadamard_job {
    float* x = nullptr;
    std::size_t rows = 0, n = 0, ld = 0;
    bool transpose = false;
    float* scratch = nullptr;
};

namespace detail::had {

/// The stages h < limit of the fast transform on p values (all of them when
/// limit >= p), in the reference's order.
inline void butterflies(float* x, std::size_t p, std::size_t limit) noexcept {
    for (std::size_t h = 1; h < p && h < limit; h <<= 1)
        for (std::size_t i = 0; i < p; i += 2 * h)
            for (std::size_t j = i; j < i + h; ++j) {
                const float a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
}

/// Row a of H_m (of its transpose), as +-1.0f.
inline void signs(std::size_t m, std::size_t a, bool transpose, float* out) noexcept {
    for (std::size_t b = 0; b < m; ++b)
        out[b] = static_cast<float>(transpose ? hadamard_entry(m, b, a) : hadamard_entry(m, a, b));
}

/// Block a of the output: sum_b H[a][b] z[b] (H transposed if asked), in
/// order b = 0, 1, ... (each term +-z exactly), divided by sq.
inline void mix_scalar(const float* z, float* out, std::size_t m, std::size_t p, std::size_t a, bool transpose,
                       float sq) noexcept {
    float sign[40];
    signs(m, a, transpose, sign);
    for (std::size_t t = 0; t < p; ++t) {
        float acc = z[t] * sign[0];
        for (std::size_t b = 1; b < m; ++b) acc = acc + z[b * p + t] * sign[b];
        out[a * p + t] = acc / sq;
    }
}

}  // namespace detail::had

/// The scalar reference.
inline void hadamard_ref(const hadamard_job& j) noexcept {
    const std::size_t m = hadamard_factor(j.n), p = j.n / m;
    const float sq = std::sqrt(static_cast<float>(j.n));
    for (std::size_t r = 0; r < j.rows; ++r) {
        float* x = j.x + r * j.ld;
        for (std::size_t b = 0; b < m; ++b) detail::had::butterflies(x + b * p, p, p);
        if (m == 1) {
            for (std::size_t i = 0; i < p; ++i) x[i] /= sq;
            continue;
        }
        std::memcpy(j.scratch, x, j.n * sizeof(float));
        for (std::size_t a = 0; a < m; ++a) detail::had::mix_scalar(j.scratch, x, m, p, a, j.transpose, sq);
    }
}

struct hadamard_fn {
    template <class Arch>
    void operator()(Arch, const hadamard_job& j) const noexcept;
};

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::had {

/// The stages of stride below a batch's width, in registers: lane i and
/// lane i ^ h become a + b (the lower) and a - b (the upper), as y + x * S
/// with y the swapped lanes and S +-1 (x * S is exact, so a fused
/// multiply-add gives the same sum).
template <class B, std::size_t H = 1>
LOWBIT_FORCE_INLINE B small_stages(B x) noexcept {
    if constexpr (H < B::size) {
        alignas(64) static constexpr auto sign = [] {
            std::array<float, B::size> s{};
            for (std::size_t i = 0; i < B::size; ++i) s[i] = (i & H) ? -1.0f : 1.0f;
            return s;
        }();
        const B y = ::lowbit::detail::simd::swap_lanes<H>(x);
        return small_stages<B, 2 * H>(y + x * B::load_aligned(sign.data()));
    } else {
        return x;
    }
}

template <class Arch>
void rotate_rows(const hadamard_job& j) noexcept {
    using B = xsimd::batch<float, Arch>;
    using ::lowbit::detail::simd::div;  // IEEE division (xsimd 8.1's NEON one is not)
    constexpr std::size_t L = B::size;
    const std::size_t m = hadamard_factor(j.n), p = j.n / m;
    if (p < 2 * L) return hadamard_ref(j);  // too short for a batch on each side of a butterfly
    const float sqf = std::sqrt(static_cast<float>(j.n));
    const B sq(sqf);
    float sign[40 * 40];
    for (std::size_t a = 0; a < m; ++a) signs(m, a, j.transpose, sign + a * 40);
    for (std::size_t r = 0; r < j.rows; ++r) {
        float* x = j.x + r * j.ld;
        for (std::size_t blk = 0; blk < m; ++blk) {
            float* y = x + blk * p;
            // Strides below a batch: in registers, a batch's width at a time.
            for (std::size_t i = 0; i < p; i += L) small_stages(B::load_unaligned(y + i)).store_unaligned(y + i);
            for (std::size_t h = L; h < p; h <<= 1) {
                const bool last = m == 1 && 2 * h == p;  // the final stage also divides
                for (std::size_t i = 0; i < p; i += 2 * h)
                    for (std::size_t k = i; k < i + h; k += L) {
                        const B a = B::load_unaligned(y + k), b = B::load_unaligned(y + k + h);
                        if (last) {
                            div(a + b, sq).store_unaligned(y + k);
                            div(a - b, sq).store_unaligned(y + k + h);
                        } else {
                            (a + b).store_unaligned(y + k);
                            (a - b).store_unaligned(y + k + h);
                        }
                    }
            }
        }
        if (m == 1) continue;
        std::memcpy(j.scratch, x, j.n * sizeof(float));
        const float* z = j.scratch;
        // A batch of columns of every block at a time, each output block
        // summed over them in the reference's order.
        for (std::size_t t = 0; t < p; t += L) {
            B zb[40];
            for (std::size_t b = 0; b < m; ++b) zb[b] = B::load_unaligned(z + b * p + t);
            // Four output blocks at once (m is a multiple of 4): four
            // independent chains of additions.
            for (std::size_t a = 0; a < m; a += 4) {
                const float *s0 = sign + a * 40, *s1 = s0 + 40, *s2 = s1 + 40, *s3 = s2 + 40;
                B c0 = zb[0] * B(s0[0]), c1 = zb[0] * B(s1[0]), c2 = zb[0] * B(s2[0]), c3 = zb[0] * B(s3[0]);
                for (std::size_t b = 1; b < m; ++b) {
                    c0 = c0 + zb[b] * B(s0[b]);
                    c1 = c1 + zb[b] * B(s1[b]);
                    c2 = c2 + zb[b] * B(s2[b]);
                    c3 = c3 + zb[b] * B(s3[b]);
                }
                div(c0, sq).store_unaligned(x + a * p + t);
                div(c1, sq).store_unaligned(x + (a + 1) * p + t);
                div(c2, sq).store_unaligned(x + (a + 2) * p + t);
                div(c3, sq).store_unaligned(x + (a + 3) * p + t);
            }
        }
    }
}

}  // namespace detail::had
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

template <class Arch>
void hadamard_fn::operator()(Arch, const hadamard_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, hadamard_ref(j), detail::had::rotate_rows<Arch>(j))
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

#define LOWBIT_KERNELS_HADAMARD(EXT, ARCH)                                                   \
    EXT template void lowbit::kernels::hadamard_fn::operator()<ARCH>(ARCH,                   \
                                                                     const lowbit::kernels::hadamard_job&) \
        const noexcept;
LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_HADAMARD)
