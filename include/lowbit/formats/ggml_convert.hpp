#pragma once
// ggml's legacy blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) as compositions of the
// generic core, with explicit conversions both ways:
//
//   auto q = ggml_q4_0_quantizer().quantize(w);      // quantized<ggml_q4_0_scheme>
//   std::vector<std::uint8_t> b = to_ggml_blocks(q);  // ggml's Q4_0 bytes
//   auto back = from_ggml_blocks<ggml_q4_0_scheme>(b, rows, cols);
//
// The quantizers are quantizer<ggml_affine<...>> at per_group(32) (see
// scheme/ggml_legacy.hpp); their bytes equal ggml's reference quantizers
// without an importance matrix (ggml::quantize_row_q4_0 etc.). MXFP4 is
// quantizer<ggml_mxfp4_scheme> (scheme/ggml_codebook.hpp), bytes equal to
// quantize_row_mxfp4; IQ4_NL converts both ways, but ggml's quantizer searches
// the scale, which ggml_iq4_nl_rtn_quantizer() does not (valid IQ4_NL blocks,
// other bytes). The conversions only move bits: lowbit's planar layout
// (LSB-first k-bit code rows, one scale / zero / bias per group) against
// ggml's interleaved blocks.

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../granularity.hpp"
#include "../pack/bits.hpp"
#include "../quantizer.hpp"
#include "../scheme/ggml_codebook.hpp"
#include "../scheme/ggml_legacy.hpp"
#include "ggml_blocks.hpp"
#include "ggml_types.hpp"
#include "ggml_validate.hpp"

LOWBIT_NAMESPACE_BEGIN

namespace detail {
template <class S, class B>
struct scheme_block {
    using scheme_type = S;
    using block = B;
};
// The first entry whose scheme is S (none: no member `block`).
template <class S, class... Entries>
struct find_scheme_block {};
template <class S, class E, class... Rest>
struct find_scheme_block<S, E, Rest...>
    : std::conditional_t<std::is_same_v<S, typename E::scheme_type>, E, find_scheme_block<S, Rest...>> {};
}  // namespace detail

/// The ggml block that holds 32 codes of scheme S with its params (member
/// `block`): defined for ggml's five legacy rules at their own widths, MXFP4
/// and IQ4_NL.
template <class S>
struct ggml_block_of
    : detail::find_scheme_block<S, detail::scheme_block<ggml_q4_0_scheme, ggml::block_q4_0>,
                                detail::scheme_block<ggml_q4_1_scheme, ggml::block_q4_1>,
                                detail::scheme_block<ggml_q5_0_scheme, ggml::block_q5_0>,
                                detail::scheme_block<ggml_q5_1_scheme, ggml::block_q5_1>,
                                detail::scheme_block<ggml_q8_0_scheme, ggml::block_q8_0>,
                                detail::scheme_block<ggml_mxfp4_scheme, ggml::block_mxfp4>,
                                detail::scheme_block<ggml_iq4_nl_scheme, ggml::block_iq4_nl>> {};

/// A scheme whose quantized<S> at group 32 converts to ggml blocks.
template <class S>
concept ggml_block_scheme = scheme<S> && requires { typename ggml_block_of<S>::block; };

/// The ggml type of scheme S's blocks.
template <ggml_block_scheme S>
inline constexpr ggml::type ggml_type_of = ggml_block_of<S>::block::type_id;

/// ggml's rules composed with the core: each is quantizer(scheme, per_group(32)).
inline quantizer<ggml_q4_0_scheme> ggml_q4_0_quantizer() { return {ggml_q4_0_scheme{}, per_group(32)}; }
inline quantizer<ggml_q4_1_scheme> ggml_q4_1_quantizer() { return {ggml_q4_1_scheme{}, per_group(32)}; }
inline quantizer<ggml_q5_0_scheme> ggml_q5_0_quantizer() { return {ggml_q5_0_scheme{}, per_group(32)}; }
inline quantizer<ggml_q5_1_scheme> ggml_q5_1_quantizer() { return {ggml_q5_1_scheme{}, per_group(32)}; }
inline quantizer<ggml_q8_0_scheme> ggml_q8_0_quantizer() { return {ggml_q8_0_scheme{}, per_group(32)}; }
/// ggml's MXFP4 rule composed with the core (bytes equal quantize_row_mxfp4).
inline quantizer<ggml_mxfp4_scheme> ggml_mxfp4_quantizer() { return {ggml_mxfp4_scheme{}, per_group(32)}; }
/// IQ4_NL's table with round-to-nearest from d = m / -127 (fp16): valid IQ4_NL
/// blocks, but not ggml's bytes (ggml searches the scale; see ggml_iq4_nl_scheme).
inline quantizer<ggml_iq4_nl_scheme> ggml_iq4_nl_rtn_quantizer() { return {ggml_iq4_nl_scheme{}, per_group(32)}; }

namespace detail::ggml_convert {

inline constexpr std::size_t qk = 32;

inline std::string_view type_name(ggml::type t) noexcept {
    const auto tr = ggml::find_base_traits(static_cast<std::uint32_t>(t));
    return tr ? tr->name : std::string_view("an unknown type");
}

template <class S>
std::string who(const char* fn) {
    return std::string(fn) + " (" + std::string(type_name(ggml_type_of<S>)) + ")";
}

inline bool same_bits(float a, float b) noexcept { return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b); }

// "row r, columns c0..c1": where group g of row r lies.
inline std::string group_at(std::size_t r, std::size_t g) {
    return "row " + std::to_string(r) + ", columns " + std::to_string(g * qk) + ".." + std::to_string(g * qk + qk - 1);
}

// The fp16 bits of a param that must be a finite fp16 value (the sign of zero kept).
inline std::uint16_t half_bits(float v, const std::string& who, std::size_t r, std::size_t g, const char* what) {
    const std::uint16_t h = float_to_fp16(v);
    if (!std::isfinite(v) || !same_bits(fp16_to_float(h), v))
        LOWBIT_THROW(errc::invalid_argument, who + ": " + group_at(r, g) + ": " + what + " " + value_string(v) +
                                                 " is not a finite fp16 value (a ggml block stores it as one)");
    return h;
}

// One group of lowbit's codes (32 K-bit codes LSB-first: 4K bytes, eight
// codes to every K bytes) into a ggml block's code fields, and back. The
// codes stay in four 64-bit words, so the compiler sees only shifts.
template <int K, class B>
void put_codes(const std::uint8_t* src, B& b) noexcept {
    if constexpr (K == 8) {
        for (std::size_t j = 0; j < qk; ++j) b.qs[j] = static_cast<std::int8_t>(src[j] ^ 0x80u);  // code - 128
    } else {
        std::uint64_t w[4] = {};
        for (int k = 0; k < 4; ++k)
            for (int t = 0; t < K; ++t) w[k] |= std::uint64_t{src[K * k + t]} << (8 * t);
        const auto code = [&](int j) { return static_cast<unsigned>(w[j / 8] >> (K * (j % 8))) & ((1u << K) - 1u); };
        for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<std::uint8_t>((code(j) & 0x0Fu) | ((code(j + 16) & 0x0Fu) << 4));
        if constexpr (K == 5) {
            std::uint32_t high = 0;
            for (int j = 0; j < 32; ++j) high |= static_cast<std::uint32_t>(code(j) >> 4) << j;
            for (int k = 0; k < 4; ++k) b.qh[k] = static_cast<std::uint8_t>(high >> (8 * k));
        }
    }
}

template <int K, class B>
void get_codes(const B& b, std::uint8_t* dst) noexcept {
    if constexpr (K == 8) {
        for (std::size_t j = 0; j < qk; ++j) dst[j] = static_cast<std::uint8_t>(static_cast<std::uint8_t>(b.qs[j]) ^ 0x80u);
    } else {
        std::uint32_t high = 0;
        if constexpr (K == 5)
            high = static_cast<std::uint32_t>(b.qh[0]) | static_cast<std::uint32_t>(b.qh[1]) << 8 |
                   static_cast<std::uint32_t>(b.qh[2]) << 16 | static_cast<std::uint32_t>(b.qh[3]) << 24;
        const auto code = [&](int j) {
            const unsigned nib = j < 16 ? b.qs[j] & 0x0Fu : static_cast<unsigned>(b.qs[j - 16] >> 4);
            return static_cast<std::uint64_t>(nib | (((high >> j) & 1u) << 4));
        };
        for (int k = 0; k < 4; ++k) {
            std::uint64_t w = 0;
            for (int t = 0; t < 8; ++t) w |= code(8 * k + t) << (K * t);
            for (int t = 0; t < K; ++t) dst[K * k + t] = static_cast<std::uint8_t>(w >> (8 * t));
        }
    }
}

}  // namespace detail::ggml_convert

/// ggml's blocks of `q`, row after row (rows * ggml::row_bytes(type, cols)
/// bytes): what ggml's quantize of the same rule writes. `q` must be row-wise
/// groups of 32 without double quantization, every scale (and Q4_1/Q5_1
/// minimum, the bias) an fp16 value and every zero-point the one ggml leaves
/// implicit (S::zero_point: 8, 16, 128, or 0 for Q4_1/Q5_1); anything else is
/// an errc::invalid_argument error naming the group, since the blocks could
/// not hold it (MXFP4: every scale a power of two 2^(e - 128), e a byte). A
/// quantized<S> from the ggml_*_quantizer()s always converts.
template <ggml_block_scheme S>
std::vector<std::uint8_t> to_ggml_blocks(const quantized<S>& q) {
    namespace cv = detail::ggml_convert;
    using B = typename ggml_block_of<S>::block;
    const std::string who = cv::who<S>("to_ggml_blocks");
    const std::size_t rows = q.n_rows, cols = q.n_cols, per_row = cols / cv::qk;
    const group_layout& L = q.layout;
    if (cols % cv::qk != 0 || L.group != cv::qk || L.param_stride != per_row || L.count != rows * per_row)
        LOWBIT_THROW(errc::invalid_argument, who + ": ggml blocks need row-wise groups of 32 (a " +
                                                 std::to_string(rows) + " x " + std::to_string(cols) +
                                                 " matrix at " + to_string(q.gran) + ")");
    if (q.scales_q)
        LOWBIT_THROW(errc::invalid_argument, who + ": the scales are quantized again, which ggml blocks cannot hold");
    const std::size_t row_codes = packed_bytes(cols, S::bits);
    if (q.code_stride < row_codes || (q.code_stride && q.codes.size() / q.code_stride < rows) ||
        q.scale.size() != L.count || (!q.zero.empty() && q.zero.size() != L.count) ||
        (!q.bias.empty() && q.bias.size() != L.count))
        LOWBIT_THROW(errc::invalid_argument, who + ": the quantized matrix's codes or params do not match its shape");
    std::vector<std::uint8_t> out(rows * per_row * sizeof(B));
    for (std::size_t r = 0; r < rows; ++r) {
        const std::uint8_t* crow = q.codes.data() + r * q.code_stride;
        for (std::size_t g = 0; g < per_row; ++g) {
            const auto p = q.params(r * per_row + g);
            B b{};
            if constexpr (std::is_same_v<S, ggml_mxfp4_scheme>) {
                if (!ggml_mxfp4_scheme::exponent_of_scale(p.scale, b.e))
                    LOWBIT_THROW(errc::invalid_argument, who + ": " + cv::group_at(r, g) + ": scale " +
                                                             detail::value_string(p.scale) +
                                                             " is not 2^(e - 128) for an exponent byte e");
            } else {
                b.d = cv::half_bits(p.scale, who, r, g, "scale");
            }
            if constexpr (requires { S::rule; }) {
                if constexpr (S::rule == ggml_rule::min_max) {
                    b.m = cv::half_bits(p.bias, who, r, g, "minimum (bias)");
                } else if (p.bias != 0.0f) {
                    LOWBIT_THROW(errc::invalid_argument, who + ": " + cv::group_at(r, g) + ": bias " +
                                                             detail::value_string(p.bias) + " (ggml's block has none)");
                }
                if (p.zero != S::zero_point)
                    LOWBIT_THROW(errc::invalid_argument, who + ": " + cv::group_at(r, g) + ": zero-point " +
                                                             detail::value_string(p.zero) + " (ggml's block implies " +
                                                             detail::value_string(S::zero_point) + ")");
            }
            // 32 codes of k bits are 4k whole bytes: groups start on a byte.
            cv::put_codes<S::bits>(crow + g * 4 * S::bits, b);
            std::memcpy(out.data() + (r * per_row + g) * sizeof(B), &b, sizeof(B));
        }
    }
    return out;
}

/// quantized<S> (per_group(32)) holding `rows` rows of `cols` values of
/// ggml blocks of S's type (ggml_type_of<S>): scales (and Q4_1/Q5_1
/// minima, as the bias, kept for every group) are the blocks' fp16 values,
/// zero-points S::zero_point, codes unchanged, so dequantize gives ggml's
/// dequantize_row values and to_ggml_blocks gives `bytes` back. A size that
/// does not match, columns that are not whole blocks, or a block
/// ggml_validate_row_data rejects (an Inf/NaN scale) is an error.
template <ggml_block_scheme S>
quantized<S> from_ggml_blocks(std::span<const std::uint8_t> bytes, std::size_t rows, std::size_t cols) {
    namespace cv = detail::ggml_convert;
    using B = typename ggml_block_of<S>::block;
    constexpr ggml::type t = ggml_type_of<S>;
    const std::string who = cv::who<S>("from_ggml_blocks");
    if (cols % cv::qk != 0)
        LOWBIT_THROW(errc::not_divisible, who + ": a row of " + std::to_string(cols) +
                                              " values is not a whole number of blocks of 32");
    const std::size_t per_row = cols / cv::qk, rb = per_row * sizeof(B);
    const bool fits = rb == 0 ? bytes.empty() : bytes.size() % rb == 0 && bytes.size() / rb == rows;
    if (!fits)
        LOWBIT_THROW(errc::invalid_argument, who + ": " + std::to_string(bytes.size()) + " bytes are not " +
                                                 std::to_string(rows) + " rows of " + std::to_string(cols) +
                                                 " values (" + std::to_string(rb) + " bytes each)");
    if (const auto bad = ggml::find_invalid_block(t, std::as_bytes(bytes)))
        LOWBIT_THROW(errc::invalid_argument, who + ": row " + std::to_string(bad->block / (per_row ? per_row : 1)) +
                                                 ", " + bad->to_string());
    quantized<S> q;
    q.gran = per_group(cv::qk);
    q.n_rows = rows;
    q.n_cols = cols;
    q.layout = layout_for(q.gran, rows, cols);
    q.code_stride = packed_bytes(cols, S::bits);
    q.codes.assign(rows * q.code_stride, 0);
    q.scale.resize(q.layout.count);
    constexpr bool affine = requires { S::rule; };
    if constexpr (affine) {
        if constexpr (S::zero_point != 0.0f) q.zero.assign(q.layout.count, S::zero_point);
        if constexpr (S::rule == ggml_rule::min_max) q.bias.resize(q.layout.count);
    }
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t g = 0; g < per_row; ++g) {
            const std::size_t i = r * per_row + g;
            B b;
            std::memcpy(&b, bytes.data() + i * sizeof(B), sizeof(B));
            if constexpr (std::is_same_v<S, ggml_mxfp4_scheme>)
                q.scale[i] = ggml_mxfp4_scheme::half_scale(b.e);
            else
                q.scale[i] = fp16_to_float(b.d);
            if constexpr (affine)
                if constexpr (S::rule == ggml_rule::min_max) q.bias[i] = fp16_to_float(b.m);
            cv::get_codes<S::bits>(b, q.codes.data() + r * q.code_stride + g * 4 * S::bits);
        }
    return q;
}

/// from_ggml_blocks for a type known at run time (a GGUF tensor's): `t`
/// must be S's type (errc::invalid_argument otherwise).
template <ggml_block_scheme S>
quantized<S> from_ggml_blocks(ggml::type t, std::span<const std::uint8_t> bytes, std::size_t rows, std::size_t cols) {
    if (t != ggml_type_of<S>)
        LOWBIT_THROW(errc::invalid_argument, detail::ggml_convert::who<S>("from_ggml_blocks") + ": the blocks are " +
                                                 std::string(detail::ggml_convert::type_name(t)));
    return from_ggml_blocks<S>(bytes, rows, cols);
}

LOWBIT_NAMESPACE_END
