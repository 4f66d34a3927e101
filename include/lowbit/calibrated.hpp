#pragma once
// The calibration algorithms' results as the core's quantized<affine<B>>, so
// that every kernel (dequantize to f32/f16/bf16, GEMV), metric and tool of
// the core takes GPTQ's, AWQ's and HQQ's output as it takes the quantizer's:
//
//   #include <lowbit/algorithms/gptq.hpp>   // (BLAS: lowbit::calibration)
//   #include <lowbit/calibrated.hpp>
//   const auto g = lowbit::calibration::gptq(w, h, opts);
//   const auto q = lowbit::from_gptq<4>(g);  // quantized<affine<4>>
//   q.gemv(x, y);
//
// Each value is the result's own value(r, c), (code - zero) * scale, in the
// core's decode. This header does not include the algorithms (GPTQ and AWQ
// need BLAS): the result types are named as default template arguments, so
// the algorithm's header must be included where these are called.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "granularity.hpp"
#include "pack/bits.hpp"
#include "quantizer.hpp"
#include "scheme/affine.hpp"

LOWBIT_NAMESPACE_BEGIN

namespace calibration {
struct gptq_result;
struct awq_quantized;
}  // namespace calibration
struct hqq_result;

/// quantized<affine<B, Mode>> from codes, one a byte (rows x cols, row-major,
/// each below 2^B), and each group's scale and zero-point (rows x groups,
/// row-major; value = (code - zero) * scale), groups of `group` columns
/// (0 or the row's width: one group a row, per_channel). Wrong sizes, a group that does not divide the row,
/// a code of more than B bits or a param that is not finite is an error
/// naming `who` and the place.
template <int B, affine_mode Mode = affine_mode::asymmetric>
quantized<affine<B, Mode>> affine_from_codes(std::size_t rows, std::size_t cols, std::size_t group,
                                             std::span<const std::uint8_t> codes, std::span<const float> scale,
                                             std::span<const float> zero,
                                             const std::string& who = "affine_from_codes") {
    if (group == cols) group = 0;  // one group a row
    if (group != 0 && (group > cols || cols % group != 0))
        LOWBIT_THROW(errc::not_divisible, who + ": rows of " + std::to_string(cols) +
                                              " columns are not whole groups of " + std::to_string(group));
    const std::size_t per_row = group == 0 ? 1 : cols / group;
    if (codes.size() != rows * cols)
        LOWBIT_THROW(errc::shape_mismatch, who + ": " + std::to_string(codes.size()) + " codes for " +
                                               std::to_string(rows) + " x " + std::to_string(cols));
    if (scale.size() != rows * per_row || zero.size() != rows * per_row)
        LOWBIT_THROW(errc::shape_mismatch, who + ": " + std::to_string(scale.size()) + " scales and " +
                                               std::to_string(zero.size()) + " zero-points for " +
                                               std::to_string(rows) + " rows of " + std::to_string(per_row) +
                                               " groups");
    for (std::size_t i = 0; i < codes.size(); ++i)
        if (codes[i] >> B)
            LOWBIT_THROW(errc::invalid_argument, who + ": the code at row " + std::to_string(i / cols) +
                                                     ", column " + std::to_string(i % cols) + " is " +
                                                     std::to_string(codes[i]) + ", more than " + std::to_string(B) +
                                                     " bits");
    for (std::size_t g = 0; g < scale.size(); ++g)
        if (!std::isfinite(scale[g]) || !std::isfinite(zero[g]))
            LOWBIT_THROW(errc::non_finite, who + ": group " + std::to_string(g % per_row) + " of row " +
                                               std::to_string(g / per_row) + " has scale " +
                                               detail::value_string(scale[g]) + ", zero-point " +
                                               detail::value_string(zero[g]));
    quantized<affine<B, Mode>> q;
    q.gran = group == 0 ? per_channel() : per_group(group);
    q.n_rows = rows;
    q.n_cols = cols;
    q.layout = layout_for(q.gran, rows, cols);
    q.code_stride = packed_bytes(cols, B);
    q.codes.assign(rows * q.code_stride, 0);
    for (std::size_t r = 0; r < rows; ++r)
        pack_bits(codes.subspan(r * cols, cols), B,
                  std::span<std::uint8_t>(q.codes.data() + r * q.code_stride, q.code_stride));
    q.scale.assign(scale.begin(), scale.end());
    bool any_zero = false;
    for (float z : zero) any_zero |= z != 0.0f;
    if (any_zero) q.zero.assign(zero.begin(), zero.end());
    return q;
}

/// GPTQ's codes and params (calibration::gptq_result of B bits) as
/// quantized<affine<B>>. The core's groups are runs of columns, so the
/// result's group map must be column / group size: without act-order, or
/// with static groups. Act-order's own groups follow the order columns
/// were quantized in, which no run of columns holds: an error.
template <int B, class Result = calibration::gptq_result>
quantized<affine<B>> from_gptq(const Result& r) {
    const std::string who = "from_gptq<" + std::to_string(B) + ">";
    if (r.bits != B)
        LOWBIT_THROW(errc::invalid_argument, who + ": the result has " + std::to_string(r.bits) + "-bit codes");
    // The group size the map implies: where group 1 starts (one group: the row).
    std::size_t gs = r.cols;
    for (std::size_t c = 0; c < r.g_idx.size(); ++c)
        if (r.g_idx[c] != 0) {
            gs = c;
            break;
        }
    for (std::size_t c = 0; c < r.g_idx.size(); ++c)
        if (gs == 0 || static_cast<std::size_t>(r.g_idx[c]) != c / gs)
            LOWBIT_THROW(errc::invalid_argument,
                         who + ": column " + std::to_string(c) + " is in group " + std::to_string(r.g_idx[c]) +
                             ", not a run of columns (act-order groups; quantize with static_groups for this form)");
    return affine_from_codes<B>(r.rows, r.cols, gs, r.codes, r.scale, r.zero, who);
}

/// AWQ's quantized layer (calibration::awq_quantized of B bits) as
/// quantized<affine<B>>: the weights as AWQ scaled them, W diag(s), whose
/// 1/s the caller folds into the op before (awq_result::search.scales).
template <int B, class Result = calibration::awq_quantized>
quantized<affine<B>> from_awq(const Result& r) {
    const std::string who = "from_awq<" + std::to_string(B) + ">";
    if (r.bits != B)
        LOWBIT_THROW(errc::invalid_argument, who + ": the result has " + std::to_string(r.bits) + "-bit codes");
    const std::vector<float> zero(r.zero.begin(), r.zero.end());
    return affine_from_codes<B>(r.rows, r.cols, r.group_size, r.codes, r.scale, zero, who);
}

/// HQQ's result (hqq_result of B bits) as quantized<affine<B,
/// asymmetric_float>>: its zero-points are floats, its scale the 1/s hqq
/// stores.
template <int B, class Result = hqq_result>
quantized<affine<B, affine_mode::asymmetric_float>> from_hqq(const Result& r) {
    const std::string who = "from_hqq<" + std::to_string(B) + ">";
    if (r.bits != B)
        LOWBIT_THROW(errc::invalid_argument, who + ": the result has " + std::to_string(r.bits) + "-bit codes");
    return affine_from_codes<B, affine_mode::asymmetric_float>(r.rows, r.cols, r.group_size, r.codes, r.scale, r.zero,
                                                               who);
}

LOWBIT_NAMESPACE_END
