#pragma once
// Byte-per-two-codes (nibble) orders of the 4-bit formats lowbit reads and
// writes. They differ only in which code of a pair goes to the high nibble, and
// the three owners disagree:
//   bnb_high_first  bitsandbytes NF4/FP4: element 2j -> high nibble of byte j,
//                   2j+1 -> low nibble; an odd count is padded with a zero low nibble.
//   low_first       torchao (pack_uint4) and lowbit's own 4-bit stream: element
//                   2j -> low nibble; an odd count is padded with a zero high nibble.
//   ggml_block32    ggml Q4_0/Q4_1/IQ4_NL/MXFP4 quants: per block of 32, element j
//                   -> low nibble of byte j and element j+16 -> high nibble of byte j.
//                   Only the 16 code bytes of each block are produced; the block's
//                   scale fields are the formats layer's business.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "bits.hpp"

LOWBIT_NAMESPACE_BEGIN

enum class nibble_order { bnb_high_first, low_first, ggml_block32 };

constexpr std::string_view to_string(nibble_order o) noexcept {
    switch (o) {
    case nibble_order::bnb_high_first: return "bnb_high_first";
    case nibble_order::low_first: return "low_first";
    case nibble_order::ggml_block32: return "ggml_block32";
    }
    return "?";
}

namespace detail {

constexpr void check_nibble_count(std::size_t n, nibble_order order, std::string_view where) {
    if (order == nibble_order::ggml_block32 && n % 32 != 0)
        LOWBIT_THROW(errc::not_divisible, std::string(where) + ": " + std::to_string(n) +
                                              " codes is not a multiple of the ggml block size 32");
}

}  // namespace detail

/// Bytes n 4-bit codes occupy: ceil(n/2); ggml_block32 needs n % 32 == 0.
constexpr std::size_t packed_nibble_bytes(std::size_t n, nibble_order order) {
    detail::check_nibble_count(n, order, "packed_nibble_bytes");
    return n / 2 + n % 2;
}

/// Packs codes into the first packed_nibble_bytes(codes.size(), order) bytes of out.
inline void pack_nibbles(std::span<const std::uint8_t> codes, nibble_order order, std::span<std::uint8_t> out) {
    constexpr std::string_view where = "pack_nibbles";
    const std::size_t n = codes.size();
    const std::size_t need = packed_nibble_bytes(n, order);
    detail::check_room(out.size(), need, "output", where);
    detail::check_codes_fit(codes, 4, where);
    const auto dst = out.first(need);
    const auto nib = [&](std::size_t i) -> unsigned { return i < n ? codes[i] : 0u; };
    switch (order) {
    case nibble_order::bnb_high_first:
        for (std::size_t j = 0; j < dst.size(); ++j) dst[j] = static_cast<std::uint8_t>(nib(2 * j) << 4 | nib(2 * j + 1));
        break;
    case nibble_order::low_first:
        for (std::size_t j = 0; j < dst.size(); ++j) dst[j] = static_cast<std::uint8_t>(nib(2 * j) | nib(2 * j + 1) << 4);
        break;
    case nibble_order::ggml_block32:
        for (std::size_t b = 0; b < n / 32; ++b)
            for (std::size_t j = 0; j < 16; ++j)
                dst[16 * b + j] = static_cast<std::uint8_t>(codes[32 * b + j] | codes[32 * b + j + 16] << 4);
        break;
    }
}

inline std::vector<std::uint8_t> pack_nibbles(std::span<const std::uint8_t> codes, nibble_order order) {
    std::vector<std::uint8_t> out(packed_nibble_bytes(codes.size(), order));
    pack_nibbles(codes, order, out);
    return out;
}

/// Unpacks n codes from the first packed_nibble_bytes(n, order) bytes of in.
inline void unpack_nibbles(std::span<const std::uint8_t> in, nibble_order order, std::size_t n,
                           std::span<std::uint8_t> out) {
    constexpr std::string_view where = "unpack_nibbles";
    detail::check_room(in.size(), packed_nibble_bytes(n, order), "input", where);
    detail::check_room(out.size(), n, "output", where);
    switch (order) {
    case nibble_order::bnb_high_first:
        for (std::size_t i = 0; i < n; ++i)
            out[i] = static_cast<std::uint8_t>(i % 2 == 0 ? in[i / 2] >> 4 : in[i / 2] & 0xFu);
        break;
    case nibble_order::low_first:
        for (std::size_t i = 0; i < n; ++i)
            out[i] = static_cast<std::uint8_t>(i % 2 == 0 ? in[i / 2] & 0xFu : in[i / 2] >> 4);
        break;
    case nibble_order::ggml_block32:
        for (std::size_t b = 0; b < n / 32; ++b)
            for (std::size_t j = 0; j < 16; ++j) {
                out[32 * b + j] = static_cast<std::uint8_t>(in[16 * b + j] & 0xFu);
                out[32 * b + j + 16] = static_cast<std::uint8_t>(in[16 * b + j] >> 4);
            }
        break;
    }
}

inline std::vector<std::uint8_t> unpack_nibbles(std::span<const std::uint8_t> in, nibble_order order, std::size_t n) {
    std::vector<std::uint8_t> out(n);
    unpack_nibbles(in, order, n, out);
    return out;
}

LOWBIT_NAMESPACE_END
