#pragma once
// bitsandbytes' 4-bit NF4 / FP4 as compositions of the generic core, with
// explicit conversions both ways:
//
//   auto q = bnb_4bit_quantizer(bnb::quant_type::nf4, 64).quantize(w);  // quantized<codebook<4>>
//   bnb::quant_state_4bit s = to_bnb(q);                                  // bitsandbytes' packed state
//   auto back = from_bnb(s);
//
// bnb_4bit_quantizer is quantizer(bnb::scheme_4bit(t, rules), per_group(b));
// bnb_4bit_nested_quantizer adds bitsandbytes' compress_statistics as
// double_quant<dynamic8>{bnb::dynamic_scheme(), 256, subtract_mean, encode
// with the fp32 absmax}. Their bytes equal bnb::quantize_4bit's (the same
// rules and kernel_rules) for every tensor whose rows are whole blocks; a
// tensor whose flattened length is a multiple of the block size but whose
// rows are not (bitsandbytes' blocks run across rows) is quantized as one
// row of all its values and given its shape in to_bnb. A short last block
// (a length that is no multiple of the block size) has no core form: the
// core's groups divide a row.
//
// quantizer(nf4(), per_group(64)) (and fp4(), and double_quant<dynamic8>{})
// give the same bytes except where the reciprocal of a scale is 0 * Inf or
// overflows: an all-zero block (NF4: code 7 where bitsandbytes' CUDA kernel
// writes 0), a block whose absmax is below about 2.9e-39, and a nested block
// whose absmax values all equal their mean (dynamic code 127 where the CUDA
// kernel writes 0). Every such code decodes to the same value.
//
// The conversions only move bits: lowbit's planar rows (LSB-first nibbles:
// element 2j in the low nibble) against bitsandbytes' flattened stream
// (element 2j in the high nibble), and the per-group scales against absmax or
// the nested state.

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../double_quant.hpp"
#include "../granularity.hpp"
#include "../pack/bits.hpp"
#include "../quantizer.hpp"
#include "../scheme/codebook.hpp"
#include "bnb.hpp"

LOWBIT_NAMESPACE_BEGIN

/// bitsandbytes' quantize_4bit without compress_statistics, composed with the
/// core: quantizer(bnb::scheme_4bit(t, rules), per_group(blocksize)).
inline quantizer<codebook<4>> bnb_4bit_quantizer(bnb::quant_type t, std::size_t blocksize = 64,
                                                 bnb::kernel_rules rules = bnb::kernel_rules::cuda) {
    return {bnb::scheme_4bit(t, rules), per_group(blocksize)};
}

/// bitsandbytes' quantize_4bit with compress_statistics (its default for
/// Linear4bit): the absmax vector, less its float32 mean, quantized with the
/// signed dynamic map in blocks of `nested_blocksize`; the 4-bit codes come
/// from the fp32 absmax. CUDA rules only: bitsandbytes' CPU path codes the
/// nested absmax through a 65536-entry table that dynamic8 does not follow.
inline quantizer<codebook<4>, double_quant<dynamic8>> bnb_4bit_nested_quantizer(bnb::quant_type t,
                                                                                std::size_t blocksize = 64,
                                                                                std::size_t nested_blocksize = 256) {
    return {bnb::scheme_4bit(t, bnb::kernel_rules::cuda), per_group(blocksize),
            double_quant<dynamic8>{bnb::dynamic_scheme(), nested_blocksize, true, false}};
}

namespace detail::bnb_convert {

inline bool same_bits(float a, float b) noexcept {
    return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b);
}

// The bitsandbytes type whose quant_map `table` is (+0 and -0 alike).
inline std::optional<bnb::quant_type> type_of(std::span<const float> table) noexcept {
    for (bnb::quant_type t : {bnb::quant_type::nf4, bnb::quant_type::fp4}) {
        const auto& map = bnb::code_table(t);
        if (table.size() == map.size() && std::equal(map.begin(), map.end(), table.begin())) return t;
    }
    return std::nullopt;
}

// Swaps the nibbles of n bytes: lowbit's LSB-first pairs <-> bitsandbytes' high-first pairs.
inline void swap_nibbles(const std::uint8_t* src, std::size_t n, std::uint8_t* dst) noexcept {
    for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<std::uint8_t>((src[i] << 4) | (src[i] >> 4));
}

inline bool valid_blocksize(std::size_t b) noexcept { return b >= 32 && b <= 4096 && (b & (b - 1)) == 0; }

}  // namespace detail::bnb_convert

/// bitsandbytes' 4-bit state holding `q`: the packed codes in its order,
/// absmax (or the nested state), its quant_map, `shape` (empty: {rows, cols};
/// else any shape of rows * cols elements, e.g. the original tensor's when it
/// was quantized as one row) and `dtype`. `q` must have NF4's or FP4's table
/// (bitsandbytes' quant_map), row-wise groups of a bitsandbytes block size
/// (32..4096, a power of two) that tile the flattened tensor, and, when its
/// scales are quantized again, an 8-bit second level with an offset whose
/// codes decode to q's scales under the signed dynamic map (bitsandbytes'
/// nested absmax); anything else is an errc::invalid_argument error, since
/// the state could not hold it. A quantized<codebook<4>> from
/// bnb_4bit_quantizer / bnb_4bit_nested_quantizer always converts.
inline bnb::quant_state_4bit to_bnb(const quantized<codebook<4>>& q, std::vector<std::uint64_t> shape = {},
                                    bnb::source_dtype dtype = bnb::source_dtype::float32) {
    namespace cv = detail::bnb_convert;
    const std::string who = "to_bnb";
    const std::size_t rows = q.n_rows, cols = q.n_cols, n = rows * cols;
    const auto type = cv::type_of(q.scheme.table());
    if (!type)
        LOWBIT_THROW(errc::invalid_argument, who + ": the codebook '" + std::string(q.scheme.name()) +
                                                 "' has neither NF4's nor FP4's table");
    const group_layout& L = q.layout;
    const std::size_t bs = L.group;
    const bool tiles = n == 0 || (cols % bs == 0 && L.count == n / bs && (L.param_stride == cols / bs || rows == 1));
    if (!cv::valid_blocksize(bs) || !tiles)
        LOWBIT_THROW(errc::invalid_argument, who + ": bitsandbytes needs consecutive blocks of 32..4096 values (a " +
                                                 std::to_string(rows) + " x " + std::to_string(cols) + " matrix at " +
                                                 to_string(q.gran) + ")");
    if (q.code_stride < cols / 2 || q.codes.size() < rows * q.code_stride || q.scale.size() != L.count)
        LOWBIT_THROW(errc::invalid_argument, who + ": the quantized matrix's codes or params do not match its shape");
    bnb::quant_state_4bit s;
    s.type = *type;
    s.blocksize = bs;
    s.dtype = dtype;
    s.code = bnb::code_table(*type);
    if (shape.empty()) shape = {rows, cols};
    s.shape = std::move(shape);
    if (s.numel() != n)
        LOWBIT_THROW(errc::shape_mismatch, who + ": shape has " + std::to_string(s.numel()) + " elements, the matrix " +
                                               std::to_string(n));
    s.packed.resize(n / 2);
    for (std::size_t r = 0; r < rows; ++r)
        cv::swap_nibbles(q.codes.data() + r * q.code_stride, cols / 2, s.packed.data() + r * (cols / 2));
    if (!q.scales_q) {
        s.absmax = q.scale;
        return s;
    }
    const second_level& sl = *q.scales_q;
    const std::size_t nb = sl.block ? (L.count + sl.block - 1) / sl.block : 0;
    if (sl.bits != 8 || !sl.has_offset || sl.block == 0 || sl.codes.size() != L.count || sl.scale.size() != nb ||
        !sl.zero.empty() || !sl.bias.empty())
        LOWBIT_THROW(errc::invalid_argument, who + ": the scales' second level is not bitsandbytes' nested absmax "
                                                   "(8-bit codes, one scale per block, an offset)");
    bnb::nested_state ns;
    ns.blocksize = sl.block;
    ns.offset = sl.offset;
    ns.codes = sl.codes;
    ns.absmax = sl.scale;
    ns.code = bnb::dynamic_map();
    const std::vector<float> decoded = bnb::decode_nested(ns);
    for (std::size_t g = 0; g < L.count; ++g)
        if (!cv::same_bits(decoded[g], q.scale[g]))
            LOWBIT_THROW(errc::invalid_argument, who + ": scale " + std::to_string(g) + " is " +
                                                     detail::value_string(q.scale[g]) + ", its nested code decodes to " +
                                                     detail::value_string(decoded[g]) +
                                                     " under the dynamic map (not bitsandbytes' nested absmax)");
    s.nested = std::move(ns);
    return s;
}

/// quantized<codebook<4>> holding bitsandbytes' 4-bit state `s` as a rows x
/// cols matrix (rows * cols = the state's element count, cols a multiple of
/// its block size): the scheme is bnb::scheme_4bit(s.type), the codes are the
/// state's, the scales its absmax (nested: decoded as bitsandbytes does, the
/// second level kept), so dequantize gives bnb::dequantize_4bit's values and
/// to_bnb gives `s` back. A state that validate rejects, a quant_map or
/// nested map that is not bitsandbytes', or a short last block (no core form)
/// is an error.
inline quantized<codebook<4>> from_bnb(const bnb::quant_state_4bit& s, std::size_t rows, std::size_t cols) {
    namespace cv = detail::bnb_convert;
    const std::string who = "from_bnb";
    bnb::detail::validate_4bit(s, who);
    const auto& map = bnb::code_table(s.type);
    if (!std::equal(map.begin(), map.end(), s.code.begin()))
        LOWBIT_THROW(errc::invalid_argument, who + ": the quant_map is not bitsandbytes' " +
                                                 std::string(bnb::to_string(s.type)) + " table");
    const std::size_t n = static_cast<std::size_t>(s.numel()), bs = s.blocksize;
    if (rows * cols != n)
        LOWBIT_THROW(errc::shape_mismatch, who + ": " + std::to_string(rows) + " x " + std::to_string(cols) +
                                               " is not the state's " + std::to_string(n) + " elements");
    if (cols % bs != 0)
        LOWBIT_THROW(errc::not_divisible, who + ": a row of " + std::to_string(cols) +
                                              " values is not a whole number of blocks of " + std::to_string(bs) +
                                              (n % bs ? " (the state's last block is short, which the core's groups "
                                                        "cannot hold)"
                                                      : ""));
    if (s.nested) {
        const auto& dm = bnb::dynamic_map();
        if (!std::equal(dm.begin(), dm.end(), s.nested->code.begin()))
            LOWBIT_THROW(errc::invalid_argument, who + ": the nested quant_map is not bitsandbytes' dynamic map");
    }
    quantized<codebook<4>> q;
    q.scheme = bnb::scheme_4bit(s.type, bnb::kernel_rules::cuda);
    q.gran = per_group(bs);
    q.n_rows = rows;
    q.n_cols = cols;
    q.layout = layout_for(q.gran, rows, cols);
    q.code_stride = packed_bytes(cols, 4);
    q.codes.resize(rows * q.code_stride);
    for (std::size_t r = 0; r < rows; ++r)
        cv::swap_nibbles(s.packed.data() + r * (cols / 2), cols / 2, q.codes.data() + r * q.code_stride);
    q.scale = bnb::effective_absmax(s);
    if (s.nested) {
        const bnb::nested_state& ns = *s.nested;
        second_level sl;
        sl.bits = 8;
        sl.block = ns.blocksize;
        sl.codes = ns.codes;
        sl.scale = ns.absmax;
        sl.offset = ns.offset;
        sl.has_offset = true;
        sl.param_bits = 32;
        q.scales_q = std::move(sl);
    }
    return q;
}

/// from_bnb with the state's own shape: a 2-D [rows, cols] state as that
/// matrix, any other as one row of all its elements.
inline quantized<codebook<4>> from_bnb(const bnb::quant_state_4bit& s) {
    if (s.shape.size() == 2 && s.shape[1] % s.blocksize == 0)
        return from_bnb(s, static_cast<std::size_t>(s.shape[0]), static_cast<std::size_t>(s.shape[1]));
    const std::size_t n = static_cast<std::size_t>(s.numel());
    return from_bnb(s, n ? 1 : 0, n);
}

LOWBIT_NAMESPACE_END
