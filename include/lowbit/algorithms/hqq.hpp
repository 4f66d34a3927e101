#pragma once
// HQQ, half-quadratic quantization (Badri and Shaji, "Half-Quadratic
// Quantization of Large Machine Learning Models", 2023): affine quantization
// without calibration data, whose zero-points are fitted by a proximal solver
// that minimises the lp-norm (p < 1) of the weights' error, so that a few
// large weights do not pull every other weight of their group off its level.
//
// This is the solver the hqq package runs by default (hqq.core.quantize's
// Quantizer.quantize with axis=1 as HQQLinear calls it, its
// optimize_weights_proximal_legacy solver; hqq 0.2.x), step for step on a
// CPU, in float32:
//   per group of `group_size` consecutive weights of a row:
//     s = (1 / (max - min)) * (2^b - 1)   (a reciprocal then a product, as
//                                          torch evaluates max_v / denom)
//     s = 1 where |max - min| <= 1e-4; s = min(s, 2e4); z = -min * s,
//     rounded to an integer when round_zero (hqq: for 4 bits only)
//   up to `iters` times, every group from the zero of the previous step:
//     q = clamp(round(w * s + z), 0, 2^b - 1)      (half to even, no fma)
//     r = (q - z) / s,  x = w - r
//     e = sign(x) * max(|x| - |x|^(p-1) / beta, 0)  (lp shrinkage)
//     z' = mean over the group of (q - (w - e) * s)
//     err = mean over the whole matrix of |x|
//     z = z'; stop unless err < the least err so far (no rollback: the
//     step that did not improve still moves z, as hqq does)
//   codes q from the final z; stored scale 1 / s (what hqq's meta holds:
//   w ~= (q - z) * scale). s itself never changes and beta stays fixed
//   (hqq's default solver reads kappa but does not use it).
//
// Sums follow torch's own order on the CPU (its cascade sum over vectors of
// `lanes` floats, one torch thread: 8 for torch 2.9.1's sums on AVX2, NEON
// and AVX-512 machines alike, found on an AVX-512 Xeon where torch reports
// the AVX512 capability; 16 for a torch whose sum runs AVX-512 vectors), so
// codes and params are hqq's bit for bit where the shrinkage is zero, that
// is where every |x| stays below beta^(-1 / (2 - p)) (0.170 at the
// defaults; weights of trained models at 2 bits and more are far below it). Above it torch takes |x|^(p-1) from
// SLEEF and lowbit from std::pow: a last-bit difference in that term.
//
// Header-only, no BLAS: part of lowbit::lowbit. The result does not depend
// on `threads`.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"
#include "../detail/fp_contract.hpp"
#include "../detail/xsimd_compat.hpp"
#include "../parallel.hpp"
#include "../scheme/encode_rules.hpp"

LOWBIT_NAMESPACE_BEGIN

/// Whether hqq rounds the initial zero-point at `bits` by default: at 4 bits
/// only, as its BaseQuantizeConfig sets round_zero.
constexpr bool hqq_round_zero(int bits) noexcept { return bits == 4; }

struct hqq_options {
    int bits = 4;                     ///< 1..8
    std::size_t group_size = 64;      ///< consecutive weights of a row; 0: the whole row
    std::optional<bool> round_zero;   ///< round the initial zero; default: hqq_round_zero(bits)
    bool optimize = true;             ///< false: the initial params, no solver
    double lp_norm = 0.7;             ///< p of the error norm, in (0, 1]
    double beta = 10.0;               ///< the shrinkage's 1 / beta
    int iters = 20;                   ///< most solver steps
    unsigned lanes = 8;               ///< the vector width of torch's sums reproduced: 8 or 16 (see above)
    unsigned threads = 1;             ///< 0: all cores; the result does not depend on it
};

/// HQQ's codes and params: column c of row r stands for
/// (code - zero[g]) * scale[g], g = r * groups + c / group_size.
struct hqq_result {
    std::size_t rows = 0, cols = 0, group_size = 0, groups = 0;  ///< groups per row
    int bits = 0;
    std::vector<std::uint8_t> codes;  ///< rows x cols
    std::vector<float> scale, zero;   ///< rows x groups; scale = 1 / s as hqq stores it
    std::vector<float> errors;        ///< the mean |w - r| of each solver step run

    float value(std::size_t r, std::size_t c) const noexcept {
        const std::size_t g = r * groups + c / group_size;
        return detail::unfused((static_cast<float>(codes[r * cols + c]) - zero[g]) * scale[g]);
    }
};

namespace detail::hqq {

/// torch's float sum of contiguous values on the CPU (SumKernel.cpp's
/// cascade_sum, one thread), over vectors of `L` lanes: "rows" of four
/// vectors go to four accumulators through up to four levels, each level
/// taking `step` sums of the one below; what is left of the vectors goes to
/// the first accumulator, the accumulators are added lane-wise, then the
/// scalar tail and the lanes in order. Fewer values than L: the same over
/// single values.
class cascade {
public:
    static constexpr std::size_t max_lanes = 16, levels = 4, ilp = 4;

    /// The plan for `n` values (vector width L; L = 1 for fewer than L values).
    cascade(std::size_t n, std::size_t lanes) noexcept : L_(n < lanes ? 1 : lanes) {
        const std::size_t rows = n / L_ / ilp;
        int log = 0;
        while ((std::size_t{1} << log) < rows) ++log;  // ceil(log2(rows)), 0 for 0 and 1
        power_ = std::max(4, log / static_cast<int>(levels));
        rows_ = rows;
    }

    std::size_t row_floats() const noexcept { return ilp * L_; }
    std::size_t rows() const noexcept { return rows_; }
    /// Rows in one top-level chunk: the sums of chunks are independent.
    std::size_t chunk_rows() const noexcept { return std::size_t{1} << (3 * power_); }

    /// The accumulators after `count` rows from zero, at a chunk boundary
    /// (the first row_floats() of each level in use).
    struct state {
        float acc[levels][ilp * max_lanes];
    };

    /// Runs `count` rows (count <= chunk_rows()) of `x` into a fresh state.
    state run(const float* x, std::size_t count) const noexcept {
        state s;
        const std::size_t w = ilp * L_, step = std::size_t{1} << power_;
        for (auto& level : s.acc) std::fill_n(level, w, 0.0f);
        std::size_t i = 0;
        for (; i + step <= count; i += step) {
            for (std::size_t k = 0; k < step; ++k)
                for (std::size_t j = 0; j < w; ++j) s.acc[0][j] += x[(i + k) * w + j];
            const std::size_t done = i + step;
            for (std::size_t lv = 1; lv < levels; ++lv) {
                for (std::size_t j = 0; j < w; ++j) {
                    s.acc[lv][j] += s.acc[lv - 1][j];
                    s.acc[lv - 1][j] = 0.0f;
                }
                if (done & (((std::size_t{1} << power_) - 1) << (lv * static_cast<std::size_t>(power_)))) break;
            }
        }
        for (; i < count; ++i)
            for (std::size_t j = 0; j < w; ++j) s.acc[0][j] += x[i * w + j];
        return s;
    }

    /// The top level of chunk states, in order (the last may be partial),
    /// folded as the single pass folds them.
    state join(const std::vector<state>& chunks) const noexcept {
        state s = chunks.back();
        for (std::size_t j = 0; j < ilp * L_; ++j) {
            float top = 0.0f;
            for (const state& c : chunks) top += c.acc[levels - 1][j];
            s.acc[levels - 1][j] = top;
        }
        return s;
    }

    /// The sum from the state after every row, and the `rest` values after
    /// the rows (fewer than a row plus one vector).
    float finish(state s, const float* rest, std::size_t n_rest) const noexcept {
        const std::size_t w = ilp * L_;
        for (std::size_t lv = 1; lv < levels; ++lv)
            for (std::size_t j = 0; j < w; ++j) s.acc[0][j] += s.acc[lv][j];
        float* a = s.acc[0];
        const std::size_t vecs = n_rest / L_;  // leftover whole vectors (or values, L = 1)
        for (std::size_t v = 0; v < vecs; ++v)
            for (std::size_t l = 0; l < L_; ++l) a[l] += rest[v * L_ + l];
        for (std::size_t k = 1; k < ilp; ++k)
            for (std::size_t l = 0; l < L_; ++l) a[l] += a[k * L_ + l];
        if (L_ == 1) return 0.0f + a[0];
        float total = 0.0f;
        for (std::size_t t = vecs * L_; t < n_rest; ++t) total += rest[t];
        for (std::size_t l = 0; l < L_; ++l) total += a[l];
        return 0.0f + total;
    }

    /// The sum of n values (a group: fewer rows than a chunk).
    float sum(const float* x, std::size_t n) const noexcept {
        const std::size_t done = rows_ * row_floats();
        if (rows_ <= chunk_rows()) return finish(run(x, rows_), x + done, n - done);
        std::vector<state> chunks;
        for (std::size_t r = 0; r < rows_; r += chunk_rows())
            chunks.push_back(run(x + r * row_floats(), std::min(chunk_rows(), rows_ - r)));
        return finish(join(chunks), x + done, n - done);
    }

private:
    std::size_t L_;
    int power_ = 4;
    std::size_t rows_ = 0;
};

struct solver {
    float max_v, inv_beta, exponent, shrink_from;
    bool l1;
    std::size_t lanes;

    explicit solver(const hqq_options& o)
        : max_v(static_cast<float>((1 << o.bits) - 1)),
          inv_beta(static_cast<float>(1.0 / o.beta)),
          exponent(static_cast<float>(o.lp_norm - 1.0)),
          // Below beta^(-1 / (2 - p)) the shrinkage is 0 whatever the last
          // bit of the power; the margin keeps the boundary's neighbours exact.
          shrink_from(static_cast<float>(std::pow(o.beta, -1.0 / (2.0 - o.lp_norm)) * 0.999)),
          l1(o.lp_norm == 1.0),
          lanes(o.lanes) {}

    /// The initial scale s (codes = w * s + z) and zero of a group.
    void init(const float* w, std::size_t n, bool round_zero, float& s, float& z) const noexcept {
        float lo = w[0], hi = w[0];
        for (std::size_t i = 1; i < n; ++i) lo = std::min(lo, w[i]), hi = std::max(hi, w[i]);
        const float denom = hi - lo;
        s = std::fabs(denom) <= 1e-4f ? 1.0f : std::min(detail::unfused(1.0f / denom) * max_v, 2e4f);
        z = -lo * s;
        if (round_zero) z = detail::round_even(z);
    }

    /// clamp(round(w * s + z), 0, max_v): clamped first (the bounds are
    /// integers, so the order does not matter), then rounded half to even by
    /// adding and taking away 1.5 * 2^23, exact below 2^22.
    float code(float w, float s, float z) const noexcept {
        float v = detail::clamp_code(detail::unfused(w * s) + z, max_v) + 12582912.0f;
        detail::fp_barrier(v);
        return v - 12582912.0f;
    }

    /// The shrinkage of one error term.
    float shrink(float x) const noexcept {
        const float a = std::fabs(x);
        if (!(a >= shrink_from)) return 0.0f;
        const float p = l1 ? a - inv_beta : a - detail::unfused(inv_beta * std::pow(a, exponent));
        return p > 0.0f ? std::copysign(p, x) : 0.0f;
    }

    /// One step on a group from zero z: |w - r| into `err` (n values) and
    /// the new zero; `t` is scratch of n values. Vectors of the compiler's
    /// target width, then single values: each lane computes what the scalar
    /// code does.
    float step(const float* w, std::size_t n, float s, float z, float* err, float* t) const {
        using B = xsimd::batch<float>;
        constexpr std::size_t W = B::size;
        const B vs(s), vz(z), vmax(max_v), magic(12582912.0f), vzero(0.0f), vfrom(shrink_from);
        std::size_t i = 0;
        for (; i + W <= n; i += W) {
            const B wv = B::load_unaligned(w + i);
            B v = xsimd::min(xsimd::max(detail::unfused(wv * vs) + vz, vzero), vmax) + magic;
            detail::fp_barrier(v);
            const B q = v - magic;
            const B x = wv - detail::simd::div(q - vz, vs);  // IEEE division on every target
            const B a = xsimd::abs(x);
            a.store_unaligned(err + i);
            B e(0.0f);
            if (xsimd::any(a >= vfrom)) {  // rare: the error is beyond the shrinkage's dead zone
                alignas(64) float xs[W], es[W];
                x.store_aligned(xs);
                for (std::size_t l = 0; l < W; ++l) es[l] = shrink(xs[l]);
                e = B::load_aligned(es);
            }
            (q - detail::unfused((wv - e) * vs)).store_unaligned(t + i);
        }
        for (; i < n; ++i) {
            const float q = code(w[i], s, z);
            const float x = w[i] - (q - z) / s;
            err[i] = std::fabs(x);
            t[i] = q - detail::unfused((w[i] - shrink(x)) * s);
        }
        return cascade(n, lanes).sum(t, n) / static_cast<float>(n);
    }
};

}  // namespace detail::hqq

/// HQQ's quantization of `w` (see the top of this header). Errors: bits
/// outside 1..8, a group size that does not divide the columns, lanes other
/// than 8 or 16, lp_norm outside (0, 1], beta <= 0, a NaN or infinite weight
/// (named by row and column).
inline hqq_result hqq(matrix_view<const float> w, const hqq_options& o = {}) {
    const std::string who = "hqq";
    detail::check_view(w, who + ": weights");
    if (o.bits < 1 || o.bits > 8)
        LOWBIT_THROW(errc::invalid_argument, who + ": bits must be 1..8, got " + std::to_string(o.bits));
    if (o.lanes != 8 && o.lanes != 16)
        LOWBIT_THROW(errc::invalid_argument, who + ": lanes must be 8 or 16, got " + std::to_string(o.lanes));
    if (!(o.lp_norm > 0.0 && o.lp_norm <= 1.0) || !(o.beta > 0.0) || !std::isfinite(o.beta))
        LOWBIT_THROW(errc::invalid_argument, who + ": lp_norm must be in (0, 1] and beta positive");
    if (o.iters < 0) LOWBIT_THROW(errc::invalid_argument, who + ": iters must not be negative");
    const std::size_t R = w.rows(), C = w.cols(), gs = o.group_size ? o.group_size : C;
    if (C && C % gs)
        LOWBIT_THROW(errc::not_divisible, who + ": group size " + std::to_string(gs) + " does not divide the " +
                                              std::to_string(C) + " columns");
    // Half of float's range at most, so that every group's max - min is finite.
    constexpr float limit = std::numeric_limits<float>::max() / 2;
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t c = 0; c < C; ++c)
            if (!(std::fabs(w(r, c)) <= limit))
                LOWBIT_THROW(std::isfinite(w(r, c)) ? errc::invalid_argument : errc::non_finite,
                             who + ": weight at row " + std::to_string(r) + ", column " + std::to_string(c) + " is " +
                                 detail::value_string(w(r, c)) +
                                 (std::isfinite(w(r, c)) ? ", beyond half of float's range" : ""));
    hqq_result res;
    res.rows = R;
    res.cols = C;
    res.bits = o.bits;
    res.group_size = gs;
    res.groups = C ? C / gs : 0;
    if (R == 0 || C == 0) return res;

    const std::size_t G = R * res.groups, N = R * C, per_row = res.groups;
    const detail::hqq::solver sv(o);
    const auto group = [&](std::size_t g) { return &w(g / per_row, (g % per_row) * gs); };
    std::vector<float> s(G), z(G);
    const bool round_zero = o.round_zero.value_or(hqq_round_zero(o.bits));
    parallel_for(G, o.threads, 256, [&](std::size_t g0, std::size_t g1) {
        for (std::size_t g = g0; g < g1; ++g) sv.init(group(g), gs, round_zero, s[g], z[g]);
    });

    if (o.optimize && o.iters > 0) {
        // The matrix's error sum is cut into the cascade's top-level chunks,
        // each summed from zero on any thread and the chunk sums joined in
        // order: the sum of one pass over all values. A chunk also updates
        // the zero of each group that starts in it.
        const detail::hqq::cascade total(N, o.lanes);
        const std::size_t rf = total.row_floats(), chunk = total.chunk_rows() * rf;
        const std::size_t chunks = std::max<std::size_t>(1, (N + chunk - 1) / chunk);
        std::vector<detail::hqq::cascade::state> states(chunks);
        std::vector<float> next(G), rest;
        float best = std::numeric_limits<float>::infinity();
        for (int it = 0; it < o.iters; ++it) {
            parallel_for(chunks, o.threads, 1, [&](std::size_t c0, std::size_t c1) {
                std::vector<float> err(std::min(chunk, N)), ge(gs), gt(gs);
                for (std::size_t c = c0; c < c1; ++c) {
                    const std::size_t a = c * chunk, b = std::min(N, a + chunk);
                    for (std::size_t g = a / gs; g * gs < b; ++g) {
                        const float nz = sv.step(group(g), gs, s[g], z[g], ge.data(), gt.data());
                        if (g * gs >= a) next[g] = nz;
                        const std::size_t lo = std::max(a, g * gs), hi = std::min(b, (g + 1) * gs);
                        std::copy(ge.begin() + static_cast<std::ptrdiff_t>(lo - g * gs),
                                  ge.begin() + static_cast<std::ptrdiff_t>(hi - g * gs),
                                  err.begin() + static_cast<std::ptrdiff_t>(lo - a));
                    }
                    const std::size_t full = std::min(b, total.rows() * rf);
                    const std::size_t rows = full > a ? (full - a) / rf : 0;
                    states[c] = total.run(err.data(), rows);
                    if (b > total.rows() * rf) {  // the values after the last whole row
                        const std::size_t from = std::max(a, total.rows() * rf);
                        rest.assign(err.begin() + static_cast<std::ptrdiff_t>(from - a),
                                    err.begin() + static_cast<std::ptrdiff_t>(b - a));
                    }
                }
            });
            const float e = total.finish(total.join(states), rest.data(), rest.size()) /
                            static_cast<float>(N);
            res.errors.push_back(e);
            z.swap(next);
            if (e < best)
                best = e;
            else
                break;
        }
    }

    res.codes.resize(N);
    res.scale.resize(G);
    res.zero = z;
    parallel_for(R, o.threads, 16, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r)
            for (std::size_t k = 0; k < per_row; ++k) {
                const std::size_t g = r * per_row + k;
                const float* x = group(g);
                for (std::size_t i = 0; i < gs; ++i)
                    res.codes[r * C + k * gs + i] = static_cast<std::uint8_t>(sv.code(x[i], s[g], z[g]));
            }
    });
    for (std::size_t g = 0; g < G; ++g) res.scale[g] = 1.0f / s[g];
    return res;
}

LOWBIT_NAMESPACE_END
