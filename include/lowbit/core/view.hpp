#pragma once
// matrix_view<T>: a non-owning row-major 2-D view with a row stride. Kernels and
// quantizers take these; xtensor adaptors live in adapters/xtensor.hpp. Also the
// checks every public entry point runs on the views and row ranges it is
// given (detail::check_view, detail::clamp_rows), so that each is written once.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

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
        if (!fits_address_space(rows, cols, row_stride))
            LOWBIT_THROW(errc::invalid_argument, "matrix_view: " + std::to_string(rows) + " rows of stride " +
                                                     std::to_string(row_stride) + " overflow the address space");
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

    /// Whether rows x cols elements at row stride `stride` span at most
    /// PTRDIFF_MAX bytes (so every element's address can be formed).
    static constexpr bool fits_address_space(std::size_t rows, std::size_t cols, std::size_t stride) noexcept {
        if (rows == 0 || cols == 0) return true;
        constexpr std::size_t max_elems = static_cast<std::size_t>(PTRDIFF_MAX) / sizeof(value_type);
        if (cols > max_elems) return false;
        return stride == 0 || rows - 1 <= (max_elems - cols) / stride;
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

namespace detail {

/// A value as messages print it: shortest round-trip form ("3.4e+38",
/// "-1e+06"), "NaN", "+Inf" or "-Inf".
inline std::string value_string(double v) {
    if (v != v) return "NaN";
    if (v > 1.7976931348623157e308) return "+Inf";
    if (v < -1.7976931348623157e308) return "-Inf";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
}

/// The checks of a view an entry point is given; `who` names the function and
/// argument ("quantize: weights"). A non-empty view needs a data pointer, a
/// row stride of at least its columns, and an extent inside the address space.
template <class T>
void check_view(const matrix_view<T>& v, std::string_view who) {
    if (v.empty()) return;
    const std::string shape = std::to_string(v.rows()) + " x " + std::to_string(v.cols());
    if (v.data() == nullptr)
        LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": null data pointer for a " + shape + " view");
    if (v.stride() < v.cols())
        LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": row stride " + std::to_string(v.stride()) +
                                                 " is smaller than the " + std::to_string(v.cols()) + " columns");
    if (!matrix_view<T>::fits_address_space(v.rows(), v.cols(), v.stride()))
        LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": " + shape + " at row stride " +
                                                 std::to_string(v.stride()) + " overflows the address space");
}

/// Rows [first, second) of `range` in a matrix of `rows` rows: the end is
/// clamped to the row count (and so is the beginning: a range past the end is
/// empty); a range whose beginning lies after its end is an error.
inline std::pair<std::size_t, std::size_t> clamp_rows(row_range range, std::size_t rows, std::string_view who) {
    if (range.begin > range.end)
        LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": row range [" + std::to_string(range.begin) + ", " +
                                                 std::to_string(range.end) + ") begins after it ends");
    const std::size_t r0 = std::min(range.begin, rows);
    return {r0, std::max(r0, std::min(range.end, rows))};
}

/// f(); a lowbit::error it throws is thrown again with the same code and its
/// message prefixed by where() (a position the callee does not know).
/// Without exceptions LOWBIT_THROW does not return, so f() runs plainly.
template <class F, class W>
decltype(auto) at_position(F&& f, W&& where) {
#if defined(__cpp_exceptions) || defined(__EXCEPTIONS)
    try {
        return std::forward<F>(f)();
    } catch (const error& e) {
        rethrow_with_context(e, where());
    }
#else
    (void)where;
    return std::forward<F>(f)();
#endif
}

}  // namespace detail

LOWBIT_NAMESPACE_END
