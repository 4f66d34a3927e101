#pragma once
// SmoothQuant (Xiao et al., "SmoothQuant: Accurate and Efficient
// Post-Training Quantization for Large Language Models", 2022): moves the
// quantization difficulty of activations with a few large channels into the
// weights by an exact rescaling of each input channel j,
//   Y = X W^T = (X diag(s)^-1) (W diag(s))^T,
//   s_j = max(max|X_j|^alpha / max(max_i |W_ij|, 1e-5)^(1 - alpha), 1e-5),
// as the reference implementation (mit-han-lab/smoothquant, smooth_ln_fcs)
// computes it: max|W_ij| over every layer that reads the same input (the
// query, key and value projections after one norm, say), alpha 0.5 by
// default. The caller multiplies each such weight's columns by s
// (scale_columns) and divides the operation that produces X by s (a norm's
// per-channel weight and bias: divide_by), so the model computes the same
// function; then any quantizer or algorithm runs on the scaled weights. AWQ
// folds its scales the same way.
//
// Header-only, no BLAS. Float32 throughout.

#include <cmath>
#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"

LOWBIT_NAMESPACE_BEGIN

struct smoothquant_options {
    float alpha = 0.5f;       ///< migration strength in [0, 1]: 0 leaves X as it is, 1 moves all of it into W
    float min_scale = 1e-5f;  ///< the floor of the weights' maxima and of the scales
};

namespace detail {

inline void check_channel_scales(std::span<const float> s, std::size_t n, const std::string& who) {
    if (s.size() != n)
        LOWBIT_THROW(errc::shape_mismatch, who + ": " + std::to_string(s.size()) + " scales for " + std::to_string(n) +
                                               " channels");
    for (std::size_t j = 0; j < n; ++j)
        if (!(s[j] > 0.0f) || !std::isfinite(s[j]))
            LOWBIT_THROW(errc::invalid_argument, who + ": scale of channel " + std::to_string(j) + " is " +
                                                     value_string(s[j]) + ", not a positive number");
}

}  // namespace detail

/// SmoothQuant's per-input-channel scales from the activations' max |x| per
/// channel (calibration::activation_stats::max_abs) and every weight
/// ([out, in]) that reads those activations. Errors: alpha outside [0, 1],
/// no weights, a weight whose columns are not the channels, a negative or
/// non-finite activation maximum or weight (named by channel, row, column).
inline std::vector<float> smoothquant_scales(std::span<const float> act_max_abs,
                                             std::span<const matrix_view<const float>> weights,
                                             const smoothquant_options& o = {}) {
    const std::string who = "smoothquant_scales";
    if (!(o.alpha >= 0.0f && o.alpha <= 1.0f))
        LOWBIT_THROW(errc::invalid_argument, who + ": alpha " + detail::value_string(o.alpha) + " is not in [0, 1]");
    if (!(o.min_scale > 0.0f)) LOWBIT_THROW(errc::invalid_argument, who + ": min_scale must be positive");
    if (weights.empty()) LOWBIT_THROW(errc::invalid_argument, who + ": no weights");
    const std::size_t n = act_max_abs.size();
    for (std::size_t j = 0; j < n; ++j)
        if (!(act_max_abs[j] >= 0.0f) || !std::isfinite(act_max_abs[j]))
            LOWBIT_THROW(errc::invalid_argument, who + ": activation maximum of channel " + std::to_string(j) +
                                                     " is " + detail::value_string(act_max_abs[j]));
    std::vector<float> wmax(n, 0.0f);
    for (std::size_t k = 0; k < weights.size(); ++k) {
        const auto& w = weights[k];
        detail::check_view(w, who + ": weight " + std::to_string(k));
        if (w.cols() != n)
            LOWBIT_THROW(errc::shape_mismatch, who + ": weight " + std::to_string(k) + " has " +
                                                   std::to_string(w.cols()) + " columns for " + std::to_string(n) +
                                                   " activation channels");
        for (std::size_t r = 0; r < w.rows(); ++r)
            for (std::size_t c = 0; c < n; ++c) {
                const float a = std::fabs(w(r, c));
                if (!std::isfinite(a))
                    LOWBIT_THROW(errc::non_finite, who + ": weight " + std::to_string(k) + " at row " +
                                                       std::to_string(r) + ", column " + std::to_string(c) + " is " +
                                                       detail::value_string(w(r, c)));
                if (a > wmax[c]) wmax[c] = a;
            }
    }
    std::vector<float> s(n);
    for (std::size_t j = 0; j < n; ++j) {
        const float v = std::pow(act_max_abs[j], o.alpha) / std::pow(std::fmax(wmax[j], o.min_scale), 1.0f - o.alpha);
        s[j] = std::fmax(v, o.min_scale);
    }
    return s;
}

/// w[r][j] *= s[j]: a weight that reads the smoothed input.
inline void scale_columns(matrix_view<float> w, std::span<const float> s) {
    detail::check_view(w, "scale_columns: weight");
    detail::check_channel_scales(s, w.cols(), "scale_columns");
    for (std::size_t r = 0; r < w.rows(); ++r)
        for (std::size_t c = 0; c < w.cols(); ++c) w(r, c) *= s[c];
}

/// v[j] /= s[j]: the per-channel weight or bias of the operation that
/// produces the smoothed input (a norm's), or a row of activations.
inline void divide_by(std::span<float> v, std::span<const float> s) {
    detail::check_channel_scales(s, v.size(), "divide_by");
    for (std::size_t j = 0; j < v.size(); ++j) v[j] /= s[j];
}

LOWBIT_NAMESPACE_END
