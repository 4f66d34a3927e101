#pragma once
// Which values share one set of quantization parameters.
//
// A weight matrix is [rows = output channels] x [cols = input channels]; groups
// run along a row (the input dimension), as in GPTQ, AWQ, bitsandbytes and ggml.
// Granularity is a run-time value: kernels take the group size at run time, so
// a compile-time size would buy nothing and would multiply instantiations.

#include <cstddef>
#include <string>

#include "core/error.hpp"

LOWBIT_NAMESPACE_BEGIN

enum class granularity_kind { per_tensor, per_channel, per_input_channel, per_group, super_block };

struct granularity {
    granularity_kind kind = granularity_kind::per_tensor;
    std::size_t size = 0;  ///< per_group: group size; super_block: super-block size
    std::size_t sub = 0;   ///< super_block: sub-block size (the group that owns a scale)

    friend constexpr bool operator==(const granularity&, const granularity&) = default;
};

constexpr granularity per_tensor() noexcept { return {granularity_kind::per_tensor, 0, 0}; }
/// One group per output channel (row).
constexpr granularity per_channel() noexcept { return {granularity_kind::per_channel, 0, 0}; }
/// One group per input channel (column), strided across rows.
constexpr granularity per_input_channel() noexcept { return {granularity_kind::per_input_channel, 0, 0}; }
/// Groups of `g` consecutive values along each row.
constexpr granularity per_group(std::size_t g) noexcept { return {granularity_kind::per_group, g, 0}; }
/// Super-blocks of `size` values along a row, each split into groups of `sub`
/// that own a scale; the scales of one super-block are quantized together by
/// double quantization (K-quant style).
constexpr granularity super_block(std::size_t size, std::size_t sub) noexcept {
    return {granularity_kind::super_block, size, sub};
}

inline std::string to_string(const granularity& g) {
    switch (g.kind) {
    case granularity_kind::per_tensor: return "per-tensor";
    case granularity_kind::per_channel: return "per-channel";
    case granularity_kind::per_input_channel: return "per-input-channel";
    case granularity_kind::per_group: return "group " + std::to_string(g.size);
    case granularity_kind::super_block: return "super-block " + std::to_string(g.size) + "/" + std::to_string(g.sub);
    }
    return "?";
}

/// How a granularity lays params out for a rows x cols matrix. The element at
/// (r, c) uses param r * param_stride + c / group.
struct group_layout {
    std::size_t group = 0;          ///< consecutive elements of a row sharing a param
    std::size_t param_stride = 0;   ///< params between rows (0: every row shares them)
    std::size_t count = 0;          ///< total number of params
    std::size_t super = 0;          ///< params per super-block (super_block only, else 0)

    constexpr std::size_t index(std::size_t r, std::size_t c) const noexcept { return r * param_stride + c / group; }
};

/// Validates `g` against the matrix shape and returns its layout; a row that
/// does not divide into groups is an errc::not_divisible error.
inline group_layout layout_for(const granularity& g, std::size_t rows, std::size_t cols) {
    group_layout l;
    switch (g.kind) {
    case granularity_kind::per_tensor:
        l.group = cols ? cols : 1;
        l.param_stride = 0;
        l.count = 1;
        break;
    case granularity_kind::per_channel:
        l.group = cols ? cols : 1;
        l.param_stride = 1;
        l.count = rows;
        break;
    case granularity_kind::per_input_channel:
        l.group = 1;
        l.param_stride = 0;
        l.count = cols;
        break;
    case granularity_kind::per_group:
        if (g.size == 0) LOWBIT_THROW(errc::invalid_argument, "group size must be positive");
        if (cols % g.size != 0)
            LOWBIT_THROW(errc::not_divisible, "row length " + std::to_string(cols) +
                                                  " is not a multiple of the group size " + std::to_string(g.size));
        l.group = g.size;
        l.param_stride = cols / g.size;
        l.count = rows * l.param_stride;
        break;
    case granularity_kind::super_block:
        if (g.sub == 0 || g.size == 0 || g.size % g.sub != 0)
            LOWBIT_THROW(errc::invalid_argument, "super-block " + std::to_string(g.size) +
                                                     " must be a positive multiple of its sub-block " +
                                                     std::to_string(g.sub));
        if (cols % g.size != 0)
            LOWBIT_THROW(errc::not_divisible, "row length " + std::to_string(cols) +
                                                  " is not a multiple of the super-block size " +
                                                  std::to_string(g.size));
        l.group = g.sub;
        l.param_stride = cols / g.sub;
        l.count = rows * l.param_stride;
        l.super = g.size / g.sub;
        break;
    }
    return l;
}

LOWBIT_NAMESPACE_END
