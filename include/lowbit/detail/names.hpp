#pragma once
// Names in error messages: quoting ones read from untrusted files, and the
// edit distance behind "did you mean" suggestions.

#include <algorithm>
#include <charconv>
#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config.hpp"

LOWBIT_NAMESPACE_BEGIN

namespace detail {

/// The bits and group of a checkpoint format name "<prefix><bits>b-g<group>"
/// (mlx-4b-g64, hqq-3b-g128, gptq-4b-g128), group 0 for "<prefix><bits>b-ch"
/// where `per_channel` allows it; nullopt for anything else. The caller
/// checks the values.
struct bits_group {
    int bits = 0;
    std::size_t group = 0;
    bool channel = false;  ///< "-ch"
};

inline std::optional<bits_group> parse_bits_group(std::string_view s, std::string_view prefix,
                                                  bool per_channel = false) {
    if (!s.starts_with(prefix)) return std::nullopt;
    std::string_view rest = s.substr(prefix.size());
    bits_group f;
    auto r = std::from_chars(rest.data(), rest.data() + rest.size(), f.bits);
    if (r.ec != std::errc{}) return std::nullopt;
    rest = rest.substr(static_cast<std::size_t>(r.ptr - rest.data()));
    if (per_channel && rest == "b-ch") {
        f.channel = true;
        return f;
    }
    if (!rest.starts_with("b-g")) return std::nullopt;
    rest = rest.substr(3);
    r = std::from_chars(rest.data(), rest.data() + rest.size(), f.group);
    if (r.ec != std::errc{} || r.ptr != rest.data() + rest.size()) return std::nullopt;
    return f;
}

/// `s` in single quotes, kept to one printable line: control bytes, DEL, the
/// quote and the backslash as \xNN, and at most 80 bytes shown ("..." after).
inline std::string show_name(std::string_view s) {
    constexpr std::size_t max_shown = 80;
    std::string out = "'";
    for (std::size_t i = 0; i < s.size() && i < max_shown; ++i) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\') {
            static constexpr char hex[] = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 15];
        } else {
            out += static_cast<char>(c);
        }
    }
    if (s.size() > max_shown) out += "...";
    out += "'";
    return out;
}

/// Levenshtein distance (insert, delete, substitute a byte), O(|a| |b|) time.
inline std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::vector<std::size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
    for (std::size_t i = 1; i <= a.size(); ++i) {
        cur[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j)
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0u : 1u)});
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

}  // namespace detail

LOWBIT_NAMESPACE_END
