#pragma once
// ggml's quantized types with their lowbit row functions (the scalar
// references): one table, by type.

#include <array>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "ggml_blocks.hpp"
#include "ggml_kquants.hpp"
#include "ggml_types.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ggml {

namespace detail {

inline void quantize_row_f32(const float* x, void* dst, std::size_t n, const float*) {
    std::memcpy(dst, x, n * sizeof(float));
}
inline void dequantize_row_f32(const void* src, float* y, std::size_t n) { std::memcpy(y, src, n * sizeof(float)); }
inline void quantize_row_f16(const float* x, void* dst, std::size_t n, const float*) {
    auto* d = static_cast<std::uint16_t*>(dst);
    for (std::size_t i = 0; i < n; ++i) d[i] = float_to_fp16(x[i]);
}
inline void dequantize_row_f16(const void* src, float* y, std::size_t n) {
    const auto* s = static_cast<const std::uint16_t*>(src);
    for (std::size_t i = 0; i < n; ++i) y[i] = fp16_to_float(s[i]);
}
inline void quantize_row_bf16(const float* x, void* dst, std::size_t n, const float*) {
    auto* d = static_cast<std::uint16_t*>(dst);
    for (std::size_t i = 0; i < n; ++i) d[i] = float_to_bf16(x[i]);
}
inline void dequantize_row_bf16(const void* src, float* y, std::size_t n) {
    const auto* s = static_cast<const std::uint16_t*>(src);
    for (std::size_t i = 0; i < n; ++i) y[i] = bf16_to_float(s[i]);
}

template <quantize_row_fn Q, dequantize_row_fn D>
constexpr type_traits with_fns(type t) {
    auto tr = *find_base_traits(static_cast<std::uint32_t>(t));
    tr.quantize = Q;
    tr.dequantize = D;
    return tr;
}

inline const std::array<type_traits, 20>& implemented() {
    static const std::array<type_traits, 20> table = {
        with_fns<quantize_row_f32, dequantize_row_f32>(type::f32),
        with_fns<quantize_row_f16, dequantize_row_f16>(type::f16),
        with_fns<quantize_row_bf16, dequantize_row_bf16>(type::bf16),
        with_fns<quantize_row_q4_0, dequantize_row_q4_0>(type::q4_0),
        with_fns<quantize_row_q4_1, dequantize_row_q4_1>(type::q4_1),
        with_fns<quantize_row_q5_0, dequantize_row_q5_0>(type::q5_0),
        with_fns<quantize_row_q5_1, dequantize_row_q5_1>(type::q5_1),
        with_fns<quantize_row_q8_0, dequantize_row_q8_0>(type::q8_0),
        with_fns<quantize_row_q8_1, dequantize_row_q8_1>(type::q8_1),
        with_fns<quantize_row_q2_k, dequantize_row_q2_k>(type::q2_k),
        with_fns<quantize_row_q3_k, dequantize_row_q3_k>(type::q3_k),
        with_fns<quantize_row_q4_k, dequantize_row_q4_k>(type::q4_k),
        with_fns<quantize_row_q5_k, dequantize_row_q5_k>(type::q5_k),
        with_fns<quantize_row_q6_k, dequantize_row_q6_k>(type::q6_k),
        with_fns<quantize_row_q8_k, dequantize_row_q8_k>(type::q8_k),
        with_fns<quantize_row_iq4_nl, dequantize_row_iq4_nl>(type::iq4_nl),
        with_fns<quantize_row_iq4_xs, dequantize_row_iq4_xs>(type::iq4_xs),
        with_fns<quantize_row_tq1_0, dequantize_row_tq1_0>(type::tq1_0),
        with_fns<quantize_row_tq2_0, dequantize_row_tq2_0>(type::tq2_0),
        with_fns<quantize_row_mxfp4, dequantize_row_mxfp4>(type::mxfp4),
    };
    return table;
}

}  // namespace detail

/// Traits of `t` with lowbit's row functions (null where lowbit has none).
inline type_traits traits(type t) {
    for (const auto& tr : detail::implemented())
        if (tr.id == t) return tr;
    const auto base = find_base_traits(static_cast<std::uint32_t>(t));
    if (!base) LOWBIT_THROW(errc::invalid_argument, "unknown ggml type " + std::to_string(static_cast<unsigned>(t)));
    return *base;
}

/// The type named `name` as ggml spells it ("q4_K", "Q4_K" and "q4_k" all work).
inline std::optional<type> type_from_name(std::string_view name) {
    auto lower = [](std::string_view s) {
        std::string o(s);
        for (char& c : o) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
        return o;
    };
    const std::string n = lower(name);
    for (const auto& t : detail::base_traits)
        if (lower(t.name) == n) return t.id;
    return std::nullopt;
}

/// Quantize `rows` rows of `n_per_row` floats into `dst` (row after row).
/// `imatrix`: n_per_row importance values applied to every row, or null.
inline void quantize_rows(type t, const float* x, void* dst, std::size_t rows, std::size_t n_per_row,
                          const float* imatrix = nullptr) {
    const auto tr = traits(t);
    if (!tr.quantize) LOWBIT_THROW(errc::unsupported, "lowbit cannot quantize to " + std::string(tr.name));
    const std::size_t rb = row_bytes(t, n_per_row);
    if (rows == 0 || n_per_row == 0) return;
    if (!x || !dst) LOWBIT_THROW(errc::invalid_argument, "quantize_rows: x and dst must not be null");
    for (std::size_t r = 0; r < rows; ++r)
        tr.quantize(x + r * n_per_row, static_cast<unsigned char*>(dst) + r * rb, n_per_row, imatrix);
}

/// Dequantize `rows` rows of `n_per_row` values of type `t` from `src` into
/// `y` with the scalar reference rows; kernels::dequantize_ggml_rows gives the
/// same values on the active instruction set.
inline void dequantize_rows(type t, const void* src, float* y, std::size_t rows, std::size_t n_per_row) {
    const auto tr = traits(t);
    if (!tr.dequantize) LOWBIT_THROW(errc::unsupported, "lowbit cannot dequantize " + std::string(tr.name));
    const std::size_t rb = row_bytes(t, n_per_row);
    if (rows == 0 || n_per_row == 0) return;
    if (!src || !y) LOWBIT_THROW(errc::invalid_argument, "dequantize_rows: src and y must not be null");
    for (std::size_t r = 0; r < rows; ++r)
        tr.dequantize(static_cast<const unsigned char*>(src) + r * rb, y + r * n_per_row, n_per_row);
}

}  // namespace ggml
LOWBIT_NAMESPACE_END
