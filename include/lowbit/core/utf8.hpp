#pragma once
// UTF-8 validity: the one rule every lowbit reader and writer of text applies
// (JSON, safetensors headers, GGUF keys, strings and tensor names).

#include <cstddef>
#include <string_view>

#include "../detail/config.hpp"

LOWBIT_NAMESPACE_BEGIN

namespace utf8 {

/// Bytes in the well-formed UTF-8 sequence at the start of `s` (Unicode 15,
/// table 3-7: no overlong forms, no surrogates, nothing past U+10FFFF, no
/// truncated sequence); 0 if `s` is empty or does not start with one.
constexpr std::size_t sequence_length(std::string_view s) noexcept {
    if (s.empty()) return 0;
    const auto b = [&](std::size_t i) { return static_cast<unsigned>(static_cast<unsigned char>(s[i])); };
    const unsigned c = b(0);
    if (c < 0x80) return 1;
    const auto cont = [&](std::size_t i, unsigned lo = 0x80, unsigned hi = 0xbf) {
        return i < s.size() && b(i) >= lo && b(i) <= hi;
    };
    if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
    if (c == 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
    if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) return cont(1) && cont(2) ? 3 : 0;
    if (c == 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;
    if (c == 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (c == 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
    return 0;
}

/// Offset of the first byte of `s` that does not start a well-formed
/// sequence, or s.size() if all of `s` is valid UTF-8.
constexpr std::size_t first_invalid(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size()) {
        if (static_cast<unsigned char>(s[i]) < 0x80) {
            ++i;
            continue;
        }
        const std::size_t n = sequence_length(s.substr(i));
        if (n == 0) return i;
        i += n;
    }
    return i;
}

constexpr bool is_valid(std::string_view s) noexcept { return first_invalid(s) == s.size(); }

}  // namespace utf8

LOWBIT_NAMESPACE_END
