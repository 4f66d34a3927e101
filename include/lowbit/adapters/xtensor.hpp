#pragma once
// Adaptors from xtensor containers to matrix_view. Kept out of core/view.hpp so
// kernels never pull in xtensor (its container types change with -m flags).

#include <cstddef>
#include <string>

#if __has_include(<xtensor/containers/xtensor.hpp>)  // xtensor >= 0.26
#include <xtensor/containers/xarray.hpp>
#include <xtensor/containers/xtensor.hpp>
#else
#include <xtensor/xarray.hpp>
#include <xtensor/xtensor.hpp>
#endif

#include "../core/view.hpp"

LOWBIT_NAMESPACE_BEGIN

namespace detail {
template <class E>
void check_row_major_2d(const E& e, const char* what) {
    if (e.dimension() != 2)
        LOWBIT_THROW(errc::shape_mismatch,
                     std::string(what) + ": expected a 2-D array, got " + std::to_string(e.dimension()) + " dimensions");
    if (e.shape()[0] > 1 && e.shape()[1] > 0 &&
        (e.strides()[1] != 1 && e.shape()[1] != 1))
        LOWBIT_THROW(errc::invalid_argument, std::string(what) + ": columns must be contiguous (row-major layout)");
}
}  // namespace detail

/// View of a row-major 2-D xtensor / xarray (columns contiguous).
template <class T, std::size_t N, xt::layout_type L>
matrix_view<T> make_view(xt::xtensor<T, N, L>& a) {
    static_assert(N == 2, "make_view: a matrix needs a 2-D xtensor");
    detail::check_row_major_2d(a, "make_view");
    return matrix_view<T>(a.data(), a.shape()[0], a.shape()[1],
                          a.shape()[0] > 1 ? static_cast<std::size_t>(a.strides()[0]) : a.shape()[1]);
}
template <class T, std::size_t N, xt::layout_type L>
matrix_view<const T> make_view(const xt::xtensor<T, N, L>& a) {
    static_assert(N == 2, "make_view: a matrix needs a 2-D xtensor");
    detail::check_row_major_2d(a, "make_view");
    return matrix_view<const T>(a.data(), a.shape()[0], a.shape()[1],
                                a.shape()[0] > 1 ? static_cast<std::size_t>(a.strides()[0]) : a.shape()[1]);
}
template <class T, xt::layout_type L>
matrix_view<T> make_view(xt::xarray<T, L>& a) {
    detail::check_row_major_2d(a, "make_view");
    return matrix_view<T>(a.data(), a.shape()[0], a.shape()[1],
                          a.shape()[0] > 1 ? static_cast<std::size_t>(a.strides()[0]) : a.shape()[1]);
}
template <class T, xt::layout_type L>
matrix_view<const T> make_view(const xt::xarray<T, L>& a) {
    detail::check_row_major_2d(a, "make_view");
    return matrix_view<const T>(a.data(), a.shape()[0], a.shape()[1],
                                a.shape()[0] > 1 ? static_cast<std::size_t>(a.strides()[0]) : a.shape()[1]);
}

LOWBIT_NAMESPACE_END
