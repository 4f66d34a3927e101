#pragma once
// How far a reconstruction is from the original, and what it costs.
// Accumulated in double so the metrics of a 45 M-weight matrix are exact to
// the printed digits.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <string>

#include "core/error.hpp"
#include "core/view.hpp"

LOWBIT_NAMESPACE_BEGIN

struct error_stats {
    double rel_rmse = 0;       ///< ||x - y|| / ||x||
    double sqnr_db = 0;        ///< 10 log10(||x||^2 / ||x - y||^2); +inf when exact
    double max_abs = 0;        ///< max |x - y|
    double cosine = 1;         ///< <x, y> / (||x|| ||y||)
    double rmse = 0;           ///< sqrt(mean (x - y)^2)
    std::size_t count = 0;
};

namespace detail {

/// The first non-finite value of `v` as an errc::non_finite error naming `who`.
inline void throw_first_non_finite(matrix_view<const float> v, const char* who) {
    for (std::size_t r = 0; r < v.rows(); ++r)
        for (std::size_t c = 0; c < v.cols(); ++c)
            if (!std::isfinite(v(r, c)))
                LOWBIT_THROW(errc::non_finite, std::string("compare: ") + who + " at row " + std::to_string(r) +
                                                   ", column " + std::to_string(c) + " is " +
                                                   (std::isnan(v(r, c)) ? "NaN" : v(r, c) > 0 ? "+Inf" : "-Inf"));
}

}  // namespace detail

/// Compares `ref` with `approx` (same shape, finite values: a NaN or Inf in
/// either is an errc::non_finite error naming the argument, row and column).
inline error_stats compare(matrix_view<const float> ref, matrix_view<const float> approx) {
    detail::check_view(ref, "compare: ref");
    detail::check_view(approx, "compare: approx");
    if (ref.rows() != approx.rows() || ref.cols() != approx.cols())
        LOWBIT_THROW(errc::shape_mismatch, "compare: " + std::to_string(ref.rows()) + " x " + std::to_string(ref.cols()) +
                                               " vs " + std::to_string(approx.rows()) + " x " +
                                               std::to_string(approx.cols()));
    double xx = 0, yy = 0, xy = 0, ee = 0, mx = 0;
    for (std::size_t r = 0; r < ref.rows(); ++r) {
        const auto a = ref.row(r), b = approx.row(r);
        for (std::size_t c = 0; c < a.size(); ++c) {
            const double x = a[c], y = b[c], e = x - y;
            xx += x * x;
            yy += y * y;
            xy += x * y;
            ee += e * e;
            mx = std::max(mx, std::fabs(e));
        }
    }
    // Squares of floats cannot overflow a double sum: a non-finite sum means a
    // non-finite input, found again only then.
    if (!std::isfinite(xx)) detail::throw_first_non_finite(ref, "ref");
    if (!std::isfinite(yy)) detail::throw_first_non_finite(approx, "approx");
    error_stats s;
    s.count = ref.size();
    s.max_abs = mx;
    s.rmse = s.count ? std::sqrt(ee / static_cast<double>(s.count)) : 0.0;
    s.rel_rmse = xx > 0 ? std::sqrt(ee / xx) : (ee > 0 ? std::numeric_limits<double>::infinity() : 0.0);
    s.sqnr_db = ee > 0 ? 10.0 * std::log10(xx / ee) : std::numeric_limits<double>::infinity();
    s.cosine = (xx > 0 && yy > 0) ? xy / std::sqrt(xx * yy) : (xx == yy ? 1.0 : 0.0);
    return s;
}

inline double rel_rmse(matrix_view<const float> ref, matrix_view<const float> approx) {
    return compare(ref, approx).rel_rmse;
}
inline double sqnr_db(matrix_view<const float> ref, matrix_view<const float> approx) {
    return compare(ref, approx).sqnr_db;
}
inline double max_abs_error(matrix_view<const float> ref, matrix_view<const float> approx) {
    return compare(ref, approx).max_abs;
}
inline double cosine_similarity(matrix_view<const float> ref, matrix_view<const float> approx) {
    return compare(ref, approx).cosine;
}

LOWBIT_NAMESPACE_END
