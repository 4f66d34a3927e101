#pragma once
// ggml::rows_view: rows of ggml blocks (any type) over memory the caller owns
// (a mapped GGUF file, an engine's arena). Non-owning and trivially copyable;
// its shape, type and extent are checked once, when it is made, so kernels
// that take one check nothing in their inner loops. Kernels read blocks with
// byte loads: a view needs no alignment beyond one byte.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include "../core/error.hpp"
#include "ggml_types.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ggml {

class rows_view {
public:
    constexpr rows_view() noexcept = default;

    /// `rows` rows of `cols` values of type `t` at `data`, `row_stride` bytes
    /// apart (0: packed, one row's bytes). errc::invalid_argument for an
    /// unknown type, a null pointer, a stride shorter than a row or an extent
    /// beyond the address space; errc::not_divisible when cols is not a whole
    /// number of blocks.
    rows_view(type t, const void* data, std::size_t rows, std::size_t cols, std::size_t row_stride = 0)
        : type_(t), data_(static_cast<const std::byte*>(data)), rows_(rows), cols_(cols) {
        const auto tr = find_base_traits(static_cast<std::uint32_t>(t));
        if (!tr)
            LOWBIT_THROW(errc::invalid_argument,
                         "ggml::rows_view: unknown ggml type " + std::to_string(static_cast<unsigned>(t)));
        block_size_ = tr->block_size;
        type_size_ = tr->type_size;
        if (cols % block_size_ != 0)
            LOWBIT_THROW(errc::not_divisible, "ggml::rows_view: " + std::to_string(cols) +
                                                  " values per row are not a whole number of " +
                                                  std::string(tr->name) + " blocks of " + std::to_string(block_size_));
        row_bytes_ = cols / block_size_ * type_size_;
        stride_ = row_stride == 0 ? row_bytes_ : row_stride;
        if (stride_ < row_bytes_)
            LOWBIT_THROW(errc::invalid_argument, "ggml::rows_view: row stride " + std::to_string(stride_) +
                                                     " bytes is less than a " + std::string(tr->name) + " row of " +
                                                     std::to_string(cols) + " values (" + std::to_string(row_bytes_) +
                                                     " bytes)");
        if (rows != 0 && cols != 0) {
            if (!data)
                LOWBIT_THROW(errc::invalid_argument, "ggml::rows_view: null data for " + std::to_string(rows) +
                                                         " x " + std::to_string(cols) + " " + std::string(tr->name));
            if (rows - 1 > (static_cast<std::size_t>(PTRDIFF_MAX) - row_bytes_) / stride_)
                LOWBIT_THROW(errc::invalid_argument, "ggml::rows_view: " + std::to_string(rows) + " rows of stride " +
                                                         std::to_string(stride_) + " overflow the address space");
        }
    }

    /// The same over `bytes`, which must hold every row (errc::invalid_argument
    /// naming both sizes otherwise): the form for a tensor's span in a file.
    rows_view(type t, std::span<const std::byte> bytes, std::size_t rows, std::size_t cols,
              std::size_t row_stride = 0)
        : rows_view(t, bytes.data(), rows, cols, row_stride) {
        const std::size_t need = extent_bytes();
        if (bytes.size() < need)
            LOWBIT_THROW(errc::invalid_argument, "ggml::rows_view: " + std::to_string(rows) + " x " +
                                                     std::to_string(cols) + " " + std::string(type_name()) +
                                                     " needs " + std::to_string(need) + " bytes, the memory given holds " +
                                                     std::to_string(bytes.size()));
    }

    constexpr ggml::type type_id() const noexcept { return type_; }
    constexpr const std::byte* data() const noexcept { return data_; }
    constexpr std::size_t rows() const noexcept { return rows_; }
    constexpr std::size_t cols() const noexcept { return cols_; }
    /// Bytes between the starts of consecutive rows.
    constexpr std::size_t stride() const noexcept { return stride_; }
    /// Bytes of one row's blocks.
    constexpr std::size_t row_bytes() const noexcept { return row_bytes_; }
    constexpr std::size_t block_size() const noexcept { return block_size_; }
    constexpr std::size_t type_size() const noexcept { return type_size_; }
    constexpr bool empty() const noexcept { return rows_ == 0 || cols_ == 0; }
    /// Bytes from the first row's start to the last row's end.
    constexpr std::size_t extent_bytes() const noexcept {
        return empty() ? 0 : (rows_ - 1) * stride_ + row_bytes_;
    }
    constexpr const std::byte* row(std::size_t r) const noexcept { return data_ + r * stride_; }
    /// Rows [r0, r1) as a view of their own (r0 <= r1 <= rows(), unchecked).
    constexpr rows_view rows(std::size_t r0, std::size_t r1) const noexcept {
        rows_view v = *this;
        v.data_ = data_ + r0 * stride_;
        v.rows_ = r1 - r0;
        return v;
    }
    std::string_view type_name() const noexcept {
        const auto tr = find_base_traits(static_cast<std::uint32_t>(type_));
        return tr ? tr->name : std::string_view("?");
    }

private:
    ggml::type type_ = type::f32;
    const std::byte* data_ = nullptr;
    std::size_t rows_ = 0, cols_ = 0, stride_ = 0, row_bytes_ = 0;
    std::size_t block_size_ = 1, type_size_ = 4;
};

static_assert(std::is_trivially_copyable_v<rows_view>);

}  // namespace ggml
LOWBIT_NAMESPACE_END
