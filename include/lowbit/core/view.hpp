#pragma once
// matrix_view<T>: a non-owning row-major 2-D view with a row stride. Kernels and
// quantizers take these; xtensor adaptors live in core/xtensor.hpp.

#include <cstddef>
#include <span>
#include <string>
#include <type_traits>

#include "error.hpp"

LOWBIT_NAMESPACE_BEGIN

template <class T>
class matrix_view {
public:
    using value_type = std::remove_cv_t<T>;

    constexpr matrix_view() noexcept = default;
    constexpr matrix_view(T* data, std::size_t rows, std::size_t cols) noexcept
        : data_(data), rows_(rows), cols_(cols), stride_(cols) {}
    constexpr matrix_view(T* data, std::size_t rows, std::size_t cols, std::size_t row_stride)
        : data_(data), rows_(rows), cols_(cols), stride_(row_stride) {
        if (row_stride < cols)
            LOWBIT_THROW(errc::invalid_argument, "matrix_view: row stride " + std::to_string(row_stride) +
                                                     " is smaller than the column count " + std::to_string(cols));
    }
    // A const view from a mutable one.
    template <class U>
        requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
    constexpr matrix_view(const matrix_view<U>& o) noexcept
        : data_(o.data()), rows_(o.rows()), cols_(o.cols()), stride_(o.stride()) {}

    constexpr T* data() const noexcept { return data_; }
    constexpr std::size_t rows() const noexcept { return rows_; }
    constexpr std::size_t cols() const noexcept { return cols_; }
    constexpr std::size_t stride() const noexcept { return stride_; }
    constexpr std::size_t size() const noexcept { return rows_ * cols_; }
    constexpr bool empty() const noexcept { return rows_ == 0 || cols_ == 0; }
    constexpr bool contiguous() const noexcept { return stride_ == cols_ || rows_ <= 1; }

    constexpr T& operator()(std::size_t r, std::size_t c) const noexcept { return data_[r * stride_ + c]; }
    constexpr std::span<T> row(std::size_t r) const noexcept { return {data_ + r * stride_, cols_}; }
    /// Rows [r0, r1) as a view of their own.
    constexpr matrix_view rows(std::size_t r0, std::size_t r1) const noexcept {
        matrix_view v;
        v.data_ = data_ + r0 * stride_;
        v.rows_ = r1 - r0;
        v.cols_ = cols_;
        v.stride_ = stride_;
        return v;
    }

private:
    T* data_ = nullptr;
    std::size_t rows_ = 0, cols_ = 0, stride_ = 0;
};

/// A 1 x n view of a span (a vector as a one-row matrix).
template <class T>
constexpr matrix_view<T> as_matrix(std::span<T> v) noexcept {
    return matrix_view<T>(v.data(), v.empty() ? 0 : 1, v.size());
}

/// Rows [begin, end) of a matrix; kernels take one so the engine owns threading.
struct row_range {
    std::size_t begin = 0;
    std::size_t end = static_cast<std::size_t>(-1);  ///< clamped to the row count
};
inline constexpr row_range all_rows{};

LOWBIT_NAMESPACE_END
