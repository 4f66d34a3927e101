#pragma once
// ggml's own check of tensor data (ggml_validate_row_data, which
// llama-quantize runs on every chunk it writes): the fields a reader
// multiplies by must not be Inf or NaN. Per type:
//   F32, F64, F16, BF16       every element
//   Q4_0 Q5_0 Q8_0 Q3_K Q6_K  the fp16 d of each block (also IQ4_NL, IQ4_XS,
//   IQ1_S IQ2_* IQ3_* TQ*     TQ1_0, TQ2_0 and the other IQ types)
//   Q4_1 Q5_1                 fp16 d and m
//   Q2_K Q4_K Q5_K            fp16 d and dmin
//   Q8_1                      fp16 d and s (ggml itself has no rule for it)
//   Q8_K                      the fp32 d
//   IQ1_M                     the fp16 scale spread over its scales field
//   MXFP4                     the E8M0 exponent e (0xFF is E8M0's NaN)
//   I8 I16 I32 I64            nothing
// Fields are read at their byte offsets, so the data need not be aligned.

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "ggml_blocks.hpp"
#include "ggml_kquants.hpp"
#include "ggml_types.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ggml {

/// The first value ggml_validate_row_data would reject.
struct row_data_problem {
    std::size_t block = 0;        ///< block index (element index for F32, F64, F16 and BF16)
    std::size_t byte_offset = 0;  ///< of the field, from the start of the data
    std::string_view field;       ///< "d", "dmin", "m", "s", "e", "scale" or "value"
    double value = 0;             ///< what the field holds: NaN or +-Inf

    /// "block 3: field dmin is +Inf (byte 1410)".
    std::string to_string() const {
        std::string v = std::isnan(value) ? "NaN" : value > 0 ? "+Inf" : "-Inf";
        return "block " + std::to_string(block) + ": field " + std::string(field) + " is " + v + " (byte " +
               std::to_string(byte_offset) + ")";
    }
};

namespace detail::validate {

inline bool fp16_bad(std::uint16_t h) noexcept { return (h & 0x7C00u) == 0x7C00u; }
inline bool bf16_bad(std::uint16_t h) noexcept { return (h & 0x7F80u) == 0x7F80u; }

/// One checked field of a block: its byte offset, name and encoding.
enum class kind : std::uint8_t { fp16, fp32, e8m0 };
struct field {
    std::size_t offset;
    std::string_view name;
    kind k;
};
struct block_rule {
    field f[2];
    unsigned n;  ///< fields used (0: nothing to check)
};

constexpr block_rule d_at(std::size_t off) noexcept { return {{{off, "d", kind::fp16}, {}}, 1}; }
constexpr block_rule d_and(std::size_t d_off, std::size_t m_off, std::string_view m) noexcept {
    return {{{d_off, "d", kind::fp16}, {m_off, m, kind::fp16}}, 2};
}

/// The fields of a block type ggml checks, at ggml-common.h's offsets.
inline std::optional<block_rule> rule_for(type t) noexcept {
    switch (t) {
    case type::q4_0:
    case type::q5_0:
    case type::q8_0:
    case type::iq4_nl:
    case type::iq4_xs:
    case type::iq1_s:
    case type::iq2_xxs:
    case type::iq2_xs:
    case type::iq2_s:
    case type::iq3_xxs:
    case type::iq3_s: return d_at(0);
    case type::q4_1:
    case type::q5_1: return d_and(0, 2, "m");
    case type::q8_1: return d_and(0, 2, "s");
    case type::q4_k:
    case type::q5_k: return d_and(0, 2, "dmin");
    case type::q2_k: return d_and(80, 82, "dmin");  // after scales[16] and qs[64]
    case type::q3_k: return d_at(108);               // after hmask[32], qs[64], scales[12]
    case type::q6_k: return d_at(208);               // after ql[128], qh[64], scales[16]
    case type::tq1_0: return d_at(52);               // after qs[48], qh[4]
    case type::tq2_0: return d_at(64);               // after qs[64]
    case type::q8_k: return block_rule{{{0, "d", kind::fp32}, {}}, 1};
    case type::mxfp4: return block_rule{{{0, "e", kind::e8m0}, {}}, 1};
    default: return std::nullopt;
    }
}

inline double field_value(const unsigned char* p, kind k) noexcept {
    switch (k) {
    case kind::fp16: return fp16_to_float(load_as<std::uint16_t>(p));
    case kind::fp32: return load_as<float>(p);
    case kind::e8m0: return *p == 0xFF ? std::nan("") : 0.0;
    }
    return 0.0;
}

inline bool field_bad(const unsigned char* p, kind k) noexcept {
    switch (k) {
    case kind::fp16: return fp16_bad(load_as<std::uint16_t>(p));
    case kind::fp32: return (load_as<std::uint32_t>(p) & 0x7F800000u) == 0x7F800000u;
    case kind::e8m0: return *p == 0xFF;
    }
    return false;
}

// The offsets above are those of lowbit's block structs (ggml-common.h's).
static_assert(offsetof(block_q2_k, d) == 80 && offsetof(block_q2_k, dmin) == 82);
static_assert(offsetof(block_q3_k, d) == 108 && offsetof(block_q6_k, d) == 208);
static_assert(offsetof(block_q4_k, dmin) == 2 && offsetof(block_q5_k, dmin) == 2);
static_assert(offsetof(block_q4_1, m) == 2 && offsetof(block_q5_1, m) == 2 && offsetof(block_q8_1, s) == 2);
static_assert(offsetof(block_tq1_0, d) == 52 && offsetof(block_tq2_0, d) == 64);
static_assert(offsetof(block_iq4_xs, d) == 0 && offsetof(block_mxfp4, e) == 0);

}  // namespace detail::validate

/// A bound on the magnitudes a block of type `t` can represent: its fp16
/// scale's largest value (65504) times the largest code, sub-block scale and
/// table entry the type multiplies it by (plus the fp16 min for Q4_1 and
/// Q5_1); 0 for types without an fp16 block scale (F32, F16, BF16,
/// MXFP4, ...). A block with a larger value cannot be stored: ggml's own code
/// then writes an infinite scale (which ggml_validate_row_data rejects) or,
/// where its search overflows first (Q3_K, Q6_K, IQ4_XS), a zero one. Below
/// the bound a block may still not fit (a Q4_1 block spanning [0, 16 x 65504]
/// needs d > 65504): find_invalid_block on the result says so.
constexpr double largest_representable(type t) noexcept {
    constexpr double h = 65504.0;
    switch (t) {
    case type::q4_0: return 8 * h;          // (q - 8) d
    case type::q4_1: return 16 * h;         // q d + m, q <= 15
    case type::q5_0: return 16 * h;         // (q - 16) d
    case type::q5_1: return 32 * h;         // q d + m, q <= 31
    case type::q8_0: return 127 * h;        // q d, |q| <= 127
    case type::q2_k: return 15 * 3 * h;     // d sc q - dmin m: at most d sc q, sc <= 15, q <= 3
    case type::q3_k: return 32 * 4 * h;     // d (sc - 32)(q - 4)
    case type::q4_k: return 63 * 15 * h;    // d sc q - dmin m, 6-bit sc
    case type::q5_k: return 63 * 31 * h;
    case type::q6_k: return 128 * 32 * h;   // d sc (q - 32), int8 sc
    case type::iq4_nl: return 127 * h;      // d table, |table| <= 127
    case type::iq4_xs: return 32 * 127 * h;  // d (ls - 32) table
    case type::tq1_0:
    case type::tq2_0: return h;             // (trit - 1) d
    default: return 0;
    }
}

/// The first block (element, for F32/F64/F16/BF16) of `data`, whole blocks of
/// type `t`, that ggml_validate_row_data rejects, or nullopt when ggml
/// accepts all of it. A size that is not a whole number of blocks is an
/// errc::not_divisible error; an unknown type number, or null data with a
/// non-zero size, an errc::invalid_argument error.
inline std::optional<row_data_problem> find_invalid_block(type t, std::span<const std::byte> data) {
    namespace v = detail::validate;
    const auto tr = find_base_traits(static_cast<std::uint32_t>(t));
    if (!tr) LOWBIT_THROW(errc::invalid_argument, "unknown ggml type " + std::to_string(static_cast<unsigned>(t)));
    if (data.size() % tr->type_size != 0)
        LOWBIT_THROW(errc::not_divisible, std::to_string(data.size()) + " bytes are not a whole number of " +
                                              std::string(tr->name) + " blocks of " +
                                              std::to_string(tr->type_size) + " bytes");
    if (data.empty()) return std::nullopt;
    if (data.data() == nullptr) LOWBIT_THROW(errc::invalid_argument, "ggml data: null pointer");
    const auto* p = reinterpret_cast<const unsigned char*>(data.data());
    const std::size_t n = data.size() / tr->type_size;
    auto problem = [&](std::size_t i, std::size_t off, std::string_view name, double value) {
        return std::optional<row_data_problem>(row_data_problem{i, off, name, value});
    };
    switch (t) {
    case type::f32:
        for (std::size_t i = 0; i < n; ++i)
            if (v::field_bad(p + 4 * i, v::kind::fp32)) return problem(i, 4 * i, "value", v::field_value(p + 4 * i, v::kind::fp32));
        return std::nullopt;
    case type::f64:
        for (std::size_t i = 0; i < n; ++i) {
            double x;
            std::memcpy(&x, p + 8 * i, 8);
            if (!std::isfinite(x)) return problem(i, 8 * i, "value", x);
        }
        return std::nullopt;
    case type::f16:
        for (std::size_t i = 0; i < n; ++i)
            if (const auto h = load_as<std::uint16_t>(p + 2 * i); v::fp16_bad(h)) return problem(i, 2 * i, "value", fp16_to_float(h));
        return std::nullopt;
    case type::bf16:
        for (std::size_t i = 0; i < n; ++i)
            if (const auto h = load_as<std::uint16_t>(p + 2 * i); v::bf16_bad(h)) return problem(i, 2 * i, "value", bf16_to_float(h));
        return std::nullopt;
    case type::iq1_m:
        // The fp16 scale is the top nibble of each of the four u16 of
        // scales[8] (after qs[32], qh[16]), lowest first.
        for (std::size_t i = 0; i < n; ++i) {
            const unsigned char* sc = p + i * tr->type_size + 48;
            const auto u = [sc](int k) { return load_as<std::uint16_t>(sc + 2 * k); };
            const auto h = static_cast<std::uint16_t>((u(0) >> 12) | ((u(1) >> 8) & 0x00F0u) | ((u(2) >> 4) & 0x0F00u) |
                                                      (u(3) & 0xF000u));
            if (v::fp16_bad(h)) return problem(i, i * tr->type_size + 48, "scale", fp16_to_float(h));
        }
        return std::nullopt;
    default: break;
    }
    const auto rule = v::rule_for(t);
    if (!rule) return std::nullopt;  // I8 .. I64: nothing to validate
    // The common case, fp16 fields only: a pass without branches first; the
    // search below runs only on data that holds a bad field.
    if (rule->f[0].k == v::kind::fp16 && (rule->n == 1 || rule->f[1].k == v::kind::fp16)) {
        const std::size_t o0 = rule->f[0].offset, o1 = rule->n == 2 ? rule->f[1].offset : o0, ts = tr->type_size;
        unsigned any = 0;
        for (std::size_t i = 0; i < n; ++i)
            any |= static_cast<unsigned>(v::fp16_bad(load_as<std::uint16_t>(p + i * ts + o0))) |
                   static_cast<unsigned>(v::fp16_bad(load_as<std::uint16_t>(p + i * ts + o1)));
        if (!any) return std::nullopt;
    }
    for (std::size_t i = 0; i < n; ++i) {
        const unsigned char* b = p + i * tr->type_size;
        for (unsigned k = 0; k < rule->n; ++k) {
            const auto& f = rule->f[k];
            if (v::field_bad(b + f.offset, f.k))
                return problem(i, i * tr->type_size + f.offset, f.name, v::field_value(b + f.offset, f.k));
        }
    }
    return std::nullopt;
}

/// ggml_validate_row_data as an error: data (`bytes` bytes of type `t`) that
/// ggml would reject is an errc::non_finite error naming the type, the block
/// and the field.
inline void validate_row_data(type t, const void* data, std::size_t bytes) {
    if (data == nullptr && bytes != 0) LOWBIT_THROW(errc::invalid_argument, "ggml data: null pointer");
    const auto bad = find_invalid_block(t, std::span<const std::byte>(static_cast<const std::byte*>(data), bytes));
    if (bad) {
        const auto tr = find_base_traits(static_cast<std::uint32_t>(t));
        LOWBIT_THROW(errc::non_finite, "ggml " + std::string(tr->name) + " data, " + bad->to_string());
    }
}

}  // namespace ggml
LOWBIT_NAMESPACE_END
