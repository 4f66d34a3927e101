#pragma once
// Round-to-nearest with an MSE-optimal clipping search: for each group, try
// shrinking the range by factors on a grid and keep the one whose
// (importance-weighted) squared error is least. A scheme adaptor, so it
// composes with every granularity, double quantization and kernel.

#include <cstdint>
#include <span>

#include "../detail/fp_contract.hpp"
#include "../kernels/encode.hpp"
#include "../scheme/affine.hpp"
#include "../scheme/concepts.hpp"

LOWBIT_NAMESPACE_BEGIN

/// `S` must have a `float clip` member (range shrink factor, 1 = full range).
template <class S>
    requires scheme<S> && requires(S s) { s.clip = 1.0f; }
struct clip_search {
    using params = typename S::params;
    static constexpr int bits = S::bits;
    static constexpr kernel_family family = S::family;

    S base{};
    int grid = 20;            ///< shrink factors 1, 1 - step, ..., down to min_shrink
    float min_shrink = 0.5f;

    params fit(std::span<const float> x, std::span<const float> w) const {
        if constexpr (scored_by_kernel) {
            // fit looks only at the group's statistics: fit every candidate
            // from them, and score all of them in one pass (one code and
            // error per candidate per value, errors summed as error() does).
            const detail::group_stats st = detail::stats_of(x);
            params cand[kernels::candidates_job::max_candidates];
            float sc[kernels::candidates_job::max_candidates], ze[kernels::candidates_job::max_candidates],
                bi[kernels::candidates_job::max_candidates];
            double err[kernels::candidates_job::max_candidates];
            const std::size_t count = static_cast<std::size_t>(grid) + 1;
            if (grid >= 0 && count <= kernels::candidates_job::max_candidates) {
                S s = base;
                for (std::size_t i = 0; i < count; ++i) {
                    s.clip = clip_at(static_cast<int>(i));
                    cand[i] = s.fit_stats(st);
                    sc[i] = cand[i].scale, ze[i] = cand[i].zero, bi[i] = cand[i].bias;
                }
                const affine_rule rule = base.encode_rule();
                kernels::candidate_errors(
                    {x.data(), w.empty() ? nullptr : w.data(), x.size(), &rule, sc, ze, bi, count, err});
                std::size_t best = 0;
                for (std::size_t i = 1; i < count; ++i)
                    if (err[i] < err[best]) best = i;
                return cand[best];
            }
        }
        S s = base;
        params best = s.fit(x, w);
        double best_err = error(s, best, x, w);
        for (int i = 1; i <= grid; ++i) {
            s.clip = clip_at(i);
            const params p = s.fit(x, w);
            const double e = error(s, p, x, w);
            if (e < best_err) {
                best_err = e;
                best = p;
            }
        }
        return best;
    }
    std::uint8_t encode(float v, const params& p) const { return base.encode(v, p); }
    /// The base scheme's encode rule, for the encode kernel.
    auto encode_rule() const
        requires requires(const S& s) { s.encode_rule(); }
    {
        return base.encode_rule();
    }
    float decode(std::uint8_t c, const params& p) const { return base.decode(c, p); }
    const char* name() const { return base.name(); }
    std::size_t param_bits() const noexcept { return stored_param_bits(base); }
    std::size_t scale_bits() const noexcept {
        if constexpr (requires { base.scale_bits(); })
            return base.scale_bits();
        else
            return stored_param_bits(base);
    }
    auto table() const
        requires table_scheme<S>
    {
        return base.table();
    }

    /// Importance-weighted squared reconstruction error of one group, summed
    /// in order in double (each term added unfused, as the kernel adds it).
    static double error(const S& s, const params& p, std::span<const float> x, std::span<const float> w) {
        double e = 0;
        for (std::size_t i = 0; i < x.size(); ++i) {
            const double d = static_cast<double>(x[i]) - s.decode(s.encode(x[i], p), p);
            e = e + detail::unfused((w.empty() ? 1.0 : static_cast<double>(w[i])) * d * d);
        }
        return e;
    }

private:
    /// Affine bases whose fit looks only at statistics are scored by
    /// kernels::candidate_errors.
    static constexpr bool scored_by_kernel = requires(const S& b, const detail::group_stats& st) {
        { b.fit_stats(st) } -> std::same_as<affine_params>;
        { b.encode_rule() } -> std::convertible_to<affine_rule>;
    };

    /// The clip of grid step i (0: the base's own).
    float clip_at(int i) const noexcept {
        if (i == 0) return base.clip;
        return base.clip * (1.0f - (1.0f - min_shrink) * static_cast<float>(i) / static_cast<float>(grid));
    }
};

LOWBIT_NAMESPACE_END
