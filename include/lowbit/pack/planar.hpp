#pragma once
// planar_view: lowbit's own planar layout (what quantized<S> stores) over
// memory the caller owns. Each row's codes are a k-bit LSB-first stream
// (pack/bits.hpp) starting on a byte, rows `code_stride` bytes apart; the
// value at (r, c) takes the params of group r * param_stride + c / group
// from float arrays (param_stride 0: every row shares row 0's), as
//
//   affine: (q - zero) * scale + bias   (zero and bias optional)
//   table:  table[q] * scale            (a codebook's or a minifloat's values)
//
// Non-owning and trivially copyable; every extent is checked once, when a
// view is made, so the kernels that take one check nothing in their loops.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "../core/error.hpp"
#include "../scheme/concepts.hpp"
#include "../scheme/encode_rules.hpp"
#include "bits.hpp"

LOWBIT_NAMESPACE_BEGIN

namespace detail {

/// The shape checks of a planar matrix, `who` starting each message: 1..8
/// bits, a positive group that divides the row, a code stride (rows > 1)
/// that holds a row, a param stride of 0 or at least a row's groups.
inline void check_planar_shape(std::string_view who, int bits, std::size_t rows, std::size_t cols, std::size_t group,
                               std::size_t code_stride, std::size_t param_stride) {
    const std::string fn(who);
    if (bits < 1 || bits > 8)
        LOWBIT_THROW(errc::invalid_argument, fn + ": bits = " + std::to_string(bits) + ", must be 1..8");
    if (group == 0) LOWBIT_THROW(errc::invalid_argument, fn + ": group size is 0");
    if (cols % group != 0)
        LOWBIT_THROW(errc::not_divisible, fn + ": " + std::to_string(cols) + " columns do not divide into groups of " +
                                              std::to_string(group));
    const std::size_t rb = packed_row_bytes(cols, bits);
    if (rows > 1 && code_stride < rb)
        LOWBIT_THROW(errc::invalid_argument, fn + ": code_stride " + std::to_string(code_stride) +
                                                 " is less than a row's " + std::to_string(rb) + " bytes");
    if (param_stride != 0 && param_stride < cols / group)
        LOWBIT_THROW(errc::invalid_argument, fn + ": param_stride " + std::to_string(param_stride) +
                                                 " is less than the " + std::to_string(cols / group) +
                                                 " groups of a row");
}

}  // namespace detail

/// Where a planar matrix's group params are: entry r * param_stride + c /
/// group for the value at (r, c); param_stride 0: every row uses row 0's.
struct planar_params {
    std::span<const float> scale;
    std::span<const float> zero;  ///< affine only: empty (no zero-point) or as many as scale needs
    std::span<const float> bias;  ///< affine only: empty or as many as scale needs
    std::size_t group = 0;
    std::size_t param_stride = 0;
};

class planar_view {
public:
    constexpr planar_view() noexcept = default;

    /// rows x cols affine codes of `bits` bits in `codes`, rows `code_stride`
    /// bytes apart (0: packed, one row's bytes). errc::invalid_argument (or
    /// not_divisible) naming what is wrong: bits outside 1..8, a group that
    /// does not divide the row, a stride shorter than a row, spans that do
    /// not hold every row's codes or every group's params.
    static planar_view affine(int bits, std::span<const std::uint8_t> codes, std::size_t rows, std::size_t cols,
                              std::size_t code_stride, const planar_params& p) {
        planar_view v = common("planar_view::affine", kernel_family::affine, bits, codes, rows, cols, code_stride, p);
        v.zero_ = v.checked_params(p.zero, "zero");
        v.bias_ = v.checked_params(p.bias, "bias");
        return v;
    }

    /// rows x cols table codes: value table[q] * scale, `table` holding 2^bits
    /// values. `mf`, optional, says the table is that minifloat's (kernels may
    /// then compute values rather than look them up; the results are the
    /// same); a rule that does not give the table's values is dropped.
    static planar_view table(int bits, std::span<const std::uint8_t> codes, std::size_t rows, std::size_t cols,
                             std::size_t code_stride, std::span<const float> table, const planar_params& p,
                             const minifloat_rule* mf = nullptr) {
        constexpr std::string_view who = "planar_view::table";
        planar_view v = common(who, kernel_family::table, bits, codes, rows, cols, code_stride, p);
        if (!p.zero.empty() || !p.bias.empty())
            LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": table codes take a scale only, not a zero or bias");
        const std::size_t entries = std::size_t{1} << bits;
        if (table.size() < entries)
            LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": the table has " + std::to_string(table.size()) +
                                                     " values, " + std::to_string(bits) + "-bit codes need " +
                                                     std::to_string(entries));
        v.table_ = table.data();
        if (mf && detail::minifloat_matches(*mf, table.data(), bits)) {
            v.minifloat_ = *mf;
            v.has_minifloat_ = true;
        }
        return v;
    }

    constexpr kernel_family family() const noexcept { return family_; }
    constexpr int bits() const noexcept { return bits_; }
    constexpr std::size_t rows() const noexcept { return rows_; }
    constexpr std::size_t cols() const noexcept { return cols_; }
    constexpr bool empty() const noexcept { return rows_ == 0 || cols_ == 0; }
    constexpr const std::uint8_t* codes() const noexcept { return codes_; }
    /// Bytes between the starts of consecutive code rows.
    constexpr std::size_t code_stride() const noexcept { return code_stride_; }
    constexpr std::size_t group() const noexcept { return group_; }
    constexpr std::size_t param_stride() const noexcept { return param_stride_; }
    constexpr const float* scale() const noexcept { return scale_; }
    constexpr const float* zero() const noexcept { return zero_; }  ///< null: none
    constexpr const float* bias() const noexcept { return bias_; }  ///< null: none
    constexpr const float* table() const noexcept { return table_; }  ///< table family only
    /// The minifloat the table is, or null.
    constexpr const minifloat_rule* minifloat() const noexcept { return has_minifloat_ ? &minifloat_ : nullptr; }

    /// Rows [r0, r1) as a view of their own (r0 <= r1 <= rows(), unchecked).
    constexpr planar_view rows(std::size_t r0, std::size_t r1) const noexcept {
        planar_view v = *this;
        v.rows_ = r1 - r0;
        if (r0 == r1) return v;
        v.codes_ += r0 * code_stride_;
        const std::size_t p0 = r0 * param_stride_;
        v.scale_ += p0;
        if (zero_) v.zero_ += p0;
        if (bias_) v.bias_ += p0;
        return v;
    }

private:
    static planar_view common(std::string_view who, kernel_family f, int bits, std::span<const std::uint8_t> codes,
                              std::size_t rows, std::size_t cols, std::size_t code_stride, const planar_params& p) {
        detail::check_code_bits(bits, who);
        const std::size_t rb = packed_row_bytes(cols, bits);
        const std::size_t stride = code_stride == 0 ? rb : code_stride;
        detail::check_planar_shape(who, bits, rows, cols, p.group, rows > 1 ? stride : rb, p.param_stride);
        planar_view v;
        v.family_ = f;
        v.bits_ = bits;
        v.rows_ = rows;
        v.cols_ = cols;
        v.code_stride_ = stride;
        v.group_ = p.group;
        v.param_stride_ = p.param_stride;
        if (v.empty()) return v;
        const std::string shape = std::to_string(rows) + " x " + std::to_string(cols);
        if (rows - 1 > (static_cast<std::size_t>(PTRDIFF_MAX) - rb) / stride)
            LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": " + std::to_string(rows) + " rows of stride " +
                                                     std::to_string(stride) + " overflow the address space");
        const std::size_t need = (rows - 1) * stride + rb;
        if (codes.size() < need)
            LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": " + shape + " " + std::to_string(bits) +
                                                     "-bit codes need " + std::to_string(need) +
                                                     " bytes, the memory given holds " + std::to_string(codes.size()));
        v.codes_ = codes.data();
        v.scale_ = v.checked_params(p.scale, "scale");
        if (!v.scale_) LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": no scales for a " + shape + " matrix");
        return v;
    }

    /// Params a view of this shape reads: every group of every row.
    std::size_t params_needed() const noexcept {
        const std::size_t per_row = cols_ / group_;
        return param_stride_ == 0 ? per_row : (rows_ - 1) * param_stride_ + per_row;
    }

    const float* checked_params(std::span<const float> a, std::string_view what) const {
        if (a.empty() || empty()) return nullptr;
        const std::size_t need = params_needed();
        if (a.size() < need)
            LOWBIT_THROW(errc::invalid_argument, "planar_view: " + std::string(what) + " has " +
                                                     std::to_string(a.size()) + " values, " + std::to_string(rows_) +
                                                     " x " + std::to_string(cols_) + " in groups of " +
                                                     std::to_string(group_) + " need " + std::to_string(need));
        return a.data();
    }

    kernel_family family_ = kernel_family::affine;
    int bits_ = 1;
    std::size_t rows_ = 0, cols_ = 0, code_stride_ = 0, group_ = 1, param_stride_ = 0;
    const std::uint8_t* codes_ = nullptr;
    const float* scale_ = nullptr;
    const float* zero_ = nullptr;
    const float* bias_ = nullptr;
    const float* table_ = nullptr;
    minifloat_rule minifloat_{};
    bool has_minifloat_ = false;
};

static_assert(std::is_trivially_copyable_v<planar_view>);

LOWBIT_NAMESPACE_END
