#pragma once
// ggml's tensor types: their numbers (as GGUF stores them), block sizes and
// byte sizes, and the table of row quantize/dequantize functions lowbit has
// for each. Block layouts live in formats/ggml_blocks.hpp (legacy, IQ4,
// MXFP4, ternary) and formats/ggml_kquants.hpp (K-quants).

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "../core/error.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ggml {

/// ggml_type values, exactly as ggml.h and GGUF number them.
enum class type : std::uint32_t {
    f32 = 0,
    f16 = 1,
    q4_0 = 2,
    q4_1 = 3,
    q5_0 = 6,
    q5_1 = 7,
    q8_0 = 8,
    q8_1 = 9,
    q2_k = 10,
    q3_k = 11,
    q4_k = 12,
    q5_k = 13,
    q6_k = 14,
    q8_k = 15,
    iq2_xxs = 16,
    iq2_xs = 17,
    iq3_xxs = 18,
    iq1_s = 19,
    iq4_nl = 20,
    iq3_s = 21,
    iq2_s = 22,
    iq4_xs = 23,
    i8 = 24,
    i16 = 25,
    i32 = 26,
    i64 = 27,
    f64 = 28,
    iq1_m = 29,
    bf16 = 30,
    tq1_0 = 34,
    tq2_0 = 35,
    mxfp4 = 39,
};

/// Quantize `n` floats (a multiple of the block size) into blocks at `dst`.
/// `imatrix`: per-element importance for the row (n values) or null.
using quantize_row_fn = void (*)(const float* x, void* dst, std::size_t n, const float* imatrix);
/// Dequantize `n` values (a multiple of the block size) from blocks at `src`.
using dequantize_row_fn = void (*)(const void* src, float* y, std::size_t n);

struct type_traits {
    type id;
    std::string_view name;      ///< as ggml_type_name: "q4_K" etc.
    std::size_t block_size;     ///< elements per block
    std::size_t type_size;      ///< bytes per block
    quantize_row_fn quantize = nullptr;      ///< null: lowbit cannot produce this type
    dequantize_row_fn dequantize = nullptr;  ///< null: lowbit cannot read this type's values
};

namespace detail {
/// Every type GGUF may name, with its sizes; function pointers are filled in
/// by the headers that implement them (see traits()).
inline constexpr type_traits base_traits[] = {
    {type::f32, "f32", 1, 4},         {type::f16, "f16", 1, 2},           {type::q4_0, "q4_0", 32, 18},
    {type::q4_1, "q4_1", 32, 20},     {type::q5_0, "q5_0", 32, 22},       {type::q5_1, "q5_1", 32, 24},
    {type::q8_0, "q8_0", 32, 34},     {type::q8_1, "q8_1", 32, 36},       {type::q2_k, "q2_K", 256, 84},
    {type::q3_k, "q3_K", 256, 110},   {type::q4_k, "q4_K", 256, 144},     {type::q5_k, "q5_K", 256, 176},
    {type::q6_k, "q6_K", 256, 210},   {type::q8_k, "q8_K", 256, 292},     {type::iq2_xxs, "iq2_xxs", 256, 66},
    {type::iq2_xs, "iq2_xs", 256, 74}, {type::iq3_xxs, "iq3_xxs", 256, 98}, {type::iq1_s, "iq1_s", 256, 50},
    {type::iq4_nl, "iq4_nl", 32, 18}, {type::iq3_s, "iq3_s", 256, 110},   {type::iq2_s, "iq2_s", 256, 82},
    {type::iq4_xs, "iq4_xs", 256, 136}, {type::i8, "i8", 1, 1},           {type::i16, "i16", 1, 2},
    {type::i32, "i32", 1, 4},         {type::i64, "i64", 1, 8},           {type::f64, "f64", 1, 8},
    {type::iq1_m, "iq1_m", 256, 56},  {type::bf16, "bf16", 1, 2},         {type::tq1_0, "tq1_0", 256, 54},
    {type::tq2_0, "tq2_0", 256, 66},  {type::mxfp4, "mxfp4", 32, 17},
};
}  // namespace detail

/// Sizes of a type GGUF may name; nullopt for a number ggml does not define.
constexpr std::optional<type_traits> find_base_traits(std::uint32_t id) noexcept {
    for (const auto& t : detail::base_traits)
        if (static_cast<std::uint32_t>(t.id) == id) return t;
    return std::nullopt;
}

/// Bytes of a row of `n` elements of type `t`; n must be a multiple of the
/// block size (errc::not_divisible otherwise).
inline std::size_t row_bytes(type t, std::size_t n) {
    const auto tr = find_base_traits(static_cast<std::uint32_t>(t));
    if (!tr) LOWBIT_THROW(errc::invalid_argument, "unknown ggml type " + std::to_string(static_cast<unsigned>(t)));
    if (n % tr->block_size != 0)
        LOWBIT_THROW(errc::not_divisible, "a row of " + std::to_string(n) + " values is not a whole number of " +
                                              std::string(tr->name) + " blocks of " +
                                              std::to_string(tr->block_size));
    return n / tr->block_size * tr->type_size;
}

/// IQ4_NL / IQ4_XS code values (ggml's kvalues_iq4nl).
inline constexpr std::int8_t iq4_nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                                  1,    13,   25,  38,  53,  69,  89,  113};
/// MXFP4 code values: E2M1 doubled, so a block's scale is 2^(e - 128).
inline constexpr std::int8_t mxfp4_values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

}  // namespace ggml
LOWBIT_NAMESPACE_END
