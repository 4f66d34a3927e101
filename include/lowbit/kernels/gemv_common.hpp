#pragma once
// What every GEMV entry point (ggml blocks, lowbit's planar layout) shares:
// the output view, the checks of x, y, bias and the row range, the split
// into row ranges for parallel_for, and fp16/bf16 activations widened to the
// fp32 rows every path takes. Each kernel writes y[m][n] for the W rows n of
// its range only.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/finite.hpp"
#include "../core/numeric.hpp"
#include "../core/view.hpp"
#include "../parallel.hpp"
#include "dequantize.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

/// Activations given as fp16 or bf16 bits (x_type float_storage::f16 or
/// ::bf16), widened exactly to fp32 in `buffer` (resized to x's rows x cols,
/// its storage reused from call to call); returns them as the fp32 view that
/// gemv, gemv_ggml and quantize_activations take. Widen once per token and
/// pass the view to every product of that x. errc::invalid_argument for
/// another type or a bad view.
inline matrix_view<const float> widen_activations(matrix_view<const std::uint16_t> x, float_storage x_type,
                                                  std::vector<float>& buffer) {
    ::lowbit::detail::check_view(x, "widen_activations: x");
    if (x_type != float_storage::f16 && x_type != float_storage::bf16)
        LOWBIT_THROW(errc::invalid_argument, "widen_activations: 16-bit activations are fp16 or bf16 "
                                             "(float_storage::f16 or ::bf16), not type " +
                                                 std::to_string(static_cast<int>(x_type)));
    buffer.resize(x.rows() * x.cols());
    for (std::size_t r = 0; r < x.rows(); ++r) {
        const std::uint16_t* src = x.data() + r * x.stride();
        float* dst = buffer.data() + r * x.cols();
        if (x_type == float_storage::bf16)
            for (std::size_t c = 0; c < x.cols(); ++c) dst[c] = bf16_to_float(src[c]);
        else
            for (std::size_t c = 0; c < x.cols(); ++c) dst[c] = fp16_to_float(src[c]);
    }
    return matrix_view<const float>(buffer.data(), x.rows(), x.cols());
}

}  // namespace kernels

namespace kernels::detail::gemv {

/// y as the kernels write it: rows x cols elements of `type`, `stride`
/// elements apart (fp16/bf16 as uint16_t bits).
struct gemv_out {
    void* data;
    std::size_t rows, cols, stride;
    out_type type;
    /// Where column c of row 0 is.
    void* col(std::size_t c) const noexcept {
        return static_cast<unsigned char*>(data) + c * (type == out_type::f32 ? sizeof(float) : sizeof(std::uint16_t));
    }
};

/// Output element i of y: v, as y's type stores it (fp16/bf16 rounded to nearest even).
inline void store_y(void* y, out_type t, std::size_t i, float v) noexcept { dq::ref_store(y, i, v, t); }

inline gemv_out out_of(matrix_view<float> y, std::string_view who) {
    ::lowbit::detail::check_view(y, std::string(who) + ": y");
    return {y.data(), y.rows(), y.cols(), y.stride(), out_type::f32};
}

inline gemv_out out_of(matrix_view<std::uint16_t> y, out_type type, std::string_view who) {
    ::lowbit::detail::check_view(y, std::string(who) + ": y");
    if (type != out_type::f16 && type != out_type::bf16)
        LOWBIT_THROW(errc::invalid_argument, std::string(who) +
                                                 ": a y of 16-bit elements is fp16 or bf16 (out_type::f16 or "
                                                 "out_type::bf16), not out_type " +
                                                 std::to_string(static_cast<int>(type)));
    return {y.data(), y.rows(), y.cols(), y.stride(), type};
}

/// The checks every path makes of x's shape (x_rows x x_cols) against W's
/// (w_rows x w_cols), y, bias and the row range; `who` starts each message.
/// Returns the W rows to compute: none where there is nothing to multiply
/// (where W's rows are empty, the range's outputs are set to the bias, the
/// value of an empty sum).
inline std::pair<std::size_t, std::size_t> checked_rows(std::size_t w_rows, std::size_t w_cols, std::size_t x_rows,
                                                        std::size_t x_cols, const gemv_out& y, row_range rows,
                                                        std::span<const float> bias, const std::string& who) {
    if (x_rows != 0 && x_cols != w_cols)
        LOWBIT_THROW(errc::invalid_argument, who + ": x has " + std::to_string(x_cols) + " columns, the weights' rows " +
                                                 std::to_string(w_cols) + " values");
    if (y.rows != x_rows || y.cols != w_rows)
        LOWBIT_THROW(errc::invalid_argument, who + ": y is " + std::to_string(y.rows) + " x " + std::to_string(y.cols) +
                                                 ", the product is " + std::to_string(x_rows) + " x " +
                                                 std::to_string(w_rows));
    if (!bias.empty() && bias.size() != w_rows)
        LOWBIT_THROW(errc::invalid_argument, who + ": bias has " + std::to_string(bias.size()) + " values for " +
                                                 std::to_string(w_rows) + " weight rows");
    const auto [r0, r1] = ::lowbit::detail::clamp_rows(rows, w_rows, who);
    if (x_rows == 0) return {r0, r0};
    if (w_cols == 0) {
        for (std::size_t mi = 0; mi < y.rows; ++mi)
            for (std::size_t r = r0; r < r1; ++r) store_y(y.data, y.type, mi * y.stride + r, bias.empty() ? 0.0f : bias[r]);
        return {r0, r0};
    }
    return {r0, r1};
}

/// tile(m0, integral_constant<T'>) over M activation rows: tiles of T rows
/// from m0 = 0, then the rest in a tile of two (T > 2) and one of one, so
/// that each W row (or block of rows) is read once per tile.
template <std::size_t T, class Tile>
LOWBIT_FORCE_INLINE void for_each_tile(std::size_t m, const Tile& tile) noexcept {
    std::size_t m0 = 0;
    for (; m0 + T <= m; m0 += T) tile(m0, std::integral_constant<std::size_t, T>{});
    if constexpr (T > 2) {
        if (m0 + 2 <= m) {
            tile(m0, std::integral_constant<std::size_t, 2>{});
            m0 += 2;
        }
    }
    if (m0 < m) tile(m0, std::integral_constant<std::size_t, 1>{});
}

/// gemv(range) over all `n` rows of W on `threads` threads (0: the
/// hardware's count), ranges in whole multiples of 16 rows (64 bytes of an
/// fp32 y row); gemv(empty range) first runs the checks once, on the calling thread.
template <class Gemv>
void run_parallel(std::size_t n, unsigned threads, const Gemv& gemv) {
    gemv(row_range{0, 0});
    parallel_for(n, threads, 16, [&](std::size_t b, std::size_t e) { gemv(row_range{b, e}); });
}

}  // namespace kernels::detail::gemv
LOWBIT_NAMESPACE_END
