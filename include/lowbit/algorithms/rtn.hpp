#pragma once
// Round-to-nearest with an MSE-optimal clipping search: for each group, try
// shrinking the range by factors on a grid and keep the one whose
// (importance-weighted) squared error is least. A scheme adaptor, so it
// composes with every granularity, double quantization and kernel.

#include <cstdint>
#include <span>

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
        S s = base;
        params best = s.fit(x, w);
        double best_err = error(s, best, x, w);
        for (int i = 1; i <= grid; ++i) {
            s.clip = base.clip * (1.0f - (1.0f - min_shrink) * static_cast<float>(i) / static_cast<float>(grid));
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

    /// Importance-weighted squared reconstruction error of one group.
    static double error(const S& s, const params& p, std::span<const float> x, std::span<const float> w) {
        double e = 0;
        for (std::size_t i = 0; i < x.size(); ++i) {
            const double d = static_cast<double>(x[i]) - s.decode(s.encode(x[i], p), p);
            e += (w.empty() ? 1.0 : static_cast<double>(w[i])) * d * d;
        }
        return e;
    }
};

LOWBIT_NAMESPACE_END
