#pragma once
// A small strict JSON value type, parser and serializers, for file headers
// (safetensors) and tools.
//
// The parser accepts exactly RFC 8259: no comments, trailing commas, NaN,
// raw control characters in strings, invalid UTF-8 or lone surrogate escapes.
// It also rejects duplicate object keys (unless asked not to) and nesting
// deeper than a limit, and every error gives the byte offset of the problem.
// Objects keep their members in document order. Numbers keep their text, so
// integers up to 2^64-1 read back exactly and doubles round-trip.
//
// Two serializers: dump() is compact and keeps UTF-8 as is; dump_python()
// produces what Python's json.dumps(obj) prints by default (", " and ": "
// separators, ensure_ascii escapes, floats as repr()).

#include <algorithm>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/utf8.hpp"

LOWBIT_NAMESPACE_BEGIN

namespace json {

enum class kind : std::uint8_t { null, boolean, number, string, array, object };

constexpr std::string_view to_string(kind k) noexcept {
    switch (k) {
    case kind::null: return "null";
    case kind::boolean: return "boolean";
    case kind::number: return "number";
    case kind::string: return "string";
    case kind::array: return "array";
    case kind::object: return "object";
    }
    return "unknown";
}

struct member;
class value;
namespace detail {
class parser;
bool is_number_text(std::string_view s) noexcept;
}  // namespace detail

/// The shortest decimal that reads back as `x`, spelled as Python's repr(x)
/// spells it: "0.1", "1e-05", "1.5e-07", "100.0", "1e+16",
/// "1.2345678901234568e+17". Scientific notation when the decimal exponent
/// is below -4 or at least 16. NaN and infinities are errc::non_finite.
std::string format_double_python(double x);

/// A JSON value. Member functions that expect another kind than the value
/// holds throw errc::invalid_argument.
//
// (Constructors and the other special members are defined after `member`:
// a value holds a vector of members, which must be complete wherever values
// are created, copied or destroyed.)
class value {
public:
    value() noexcept;  ///< null
    value(std::nullptr_t) noexcept;
    value(bool b) noexcept;
    template <std::integral T>
        requires(!std::same_as<T, bool> && !std::same_as<T, char>)
    value(T v);
    /// Stored as format_double_python(v); NaN and infinities are errc::non_finite.
    value(double v);
    value(std::string s) noexcept;
    value(std::string_view s);
    value(const char* s);
    value(const value&);
    value(value&&) noexcept;
    value& operator=(const value&);
    value& operator=(value&&) noexcept;
    ~value();

    /// A number given by its JSON text (e.g. "1e400", "18446744073709551616");
    /// text that is not a JSON number is errc::invalid_argument.
    static value number(std::string_view text);
    static value array();  ///< empty
    static value array(std::vector<value> items);
    static value object();  ///< empty
    static value object(std::vector<member> members);

    kind type() const noexcept { return kind_; }
    bool is_null() const noexcept { return kind_ == kind::null; }
    bool is_bool() const noexcept { return kind_ == kind::boolean; }
    bool is_number() const noexcept { return kind_ == kind::number; }
    bool is_string() const noexcept { return kind_ == kind::string; }
    bool is_array() const noexcept { return kind_ == kind::array; }
    bool is_object() const noexcept { return kind_ == kind::object; }

    bool as_bool() const {
        expect(kind::boolean);
        return bool_;
    }
    const std::string& as_string() const {
        expect(kind::string);
        return text_;
    }
    /// A number's text, as parsed or as built.
    const std::string& number_text() const {
        expect(kind::number);
        return text_;
    }
    /// A number written without fraction or exponent.
    bool is_integer() const noexcept {
        return kind_ == kind::number && text_.find_first_of(".eE") == std::string::npos;
    }
    /// The integer a number spells, if it is one and fits; nullopt otherwise
    /// ("1.0", "1e3", "-1" and 2^64 are all nullopt).
    std::optional<std::uint64_t> to_u64() const noexcept {
        if (!is_integer() || text_.empty() || text_[0] == '-') return std::nullopt;
        std::uint64_t v = 0;
        const auto r = std::from_chars(text_.data(), text_.data() + text_.size(), v);
        if (r.ec != std::errc() || r.ptr != text_.data() + text_.size()) return std::nullopt;
        return v;
    }
    std::optional<std::int64_t> to_i64() const noexcept {
        if (!is_integer()) return std::nullopt;
        std::int64_t v = 0;
        const auto r = std::from_chars(text_.data(), text_.data() + text_.size(), v);
        if (r.ec != std::errc() || r.ptr != text_.data() + text_.size()) return std::nullopt;
        return v;
    }
    /// The nearest double; magnitudes beyond its range give +-infinity or +-0,
    /// as Python's float() does.
    double as_double() const;

    /// Array items or object members (0 for other kinds).
    std::size_t size() const noexcept;
    const std::vector<value>& items() const {
        expect(kind::array);
        return items_;
    }
    std::vector<value>& items() {
        expect(kind::array);
        return items_;
    }
    const std::vector<member>& members() const {
        expect(kind::object);
        return members_;
    }
    std::vector<member>& members() {
        expect(kind::object);
        return members_;
    }
    const value& operator[](std::size_t i) const {
        expect(kind::array);
        if (i >= items_.size())
            LOWBIT_THROW(errc::invalid_argument,
                         "json: index " + std::to_string(i) + " past the end of an array of " +
                             std::to_string(items_.size()));
        return items_[i];
    }
    /// An object's member `key`, or nullptr.
    const value* find(std::string_view key) const;
    /// An object's member `key`; errc::invalid_argument naming it if absent.
    const value& operator[](std::string_view key) const;

    void push_back(value v);
    /// Replaces the member `key` if the object has one, else appends it.
    value& set(std::string key, value v);

    /// Where the value starts in the parsed text (plus parse_options::offset_base);
    /// 0 for values built in code.
    std::uint64_t offset() const noexcept { return offset_; }

    /// Same kind and contents; numbers compare by their text, objects in order.
    friend bool operator==(const value& a, const value& b);

private:
    friend class detail::parser;
    void expect(kind k) const {
        if (kind_ != k)
            LOWBIT_THROW(errc::invalid_argument,
                         "json: value is " + std::string(to_string(kind_)) + ", not " + std::string(to_string(k)));
    }

    kind kind_ = kind::null;
    bool bool_ = false;
    std::uint64_t offset_ = 0;
    std::string text_;  // string contents or number text
    std::vector<value> items_;
    std::vector<member> members_;
};

struct member {
    std::string key;
    json::value value;
    std::uint64_t key_offset = 0;  ///< where the key starts in the parsed text (plus offset_base)

    friend bool operator==(const member& a, const member& b) { return a.key == b.key && a.value == b.value; }
};

// Defined here, where member is complete: they create and destroy values.
inline value::value() noexcept {}
inline value::value(std::nullptr_t) noexcept {}
inline value::value(bool b) noexcept : kind_(kind::boolean), bool_(b) {}
template <std::integral T>
    requires(!std::same_as<T, bool> && !std::same_as<T, char>)
value::value(T v) : kind_(kind::number), text_(std::to_string(v)) {}
inline value::value(double v) : kind_(kind::number), text_(format_double_python(v)) {}
inline value::value(std::string s) noexcept : kind_(kind::string), text_(std::move(s)) {}
inline value::value(std::string_view s) : kind_(kind::string), text_(s) {}
inline value::value(const char* s) : kind_(kind::string), text_(s) {}
inline value::value(const value&) = default;
inline value::value(value&&) noexcept = default;
inline value& value::operator=(const value&) = default;
inline value& value::operator=(value&&) noexcept = default;
inline value::~value() = default;

inline value value::number(std::string_view text) {
    if (!detail::is_number_text(text))
        LOWBIT_THROW(errc::invalid_argument, "json: '" + std::string(text) + "' is not a JSON number");
    value v;
    v.kind_ = kind::number;
    v.text_ = std::string(text);
    return v;
}

inline value value::array() { return array(std::vector<value>()); }
inline value value::object() { return object(std::vector<member>()); }

inline value value::array(std::vector<value> items) {
    value v;
    v.kind_ = kind::array;
    v.items_ = std::move(items);
    return v;
}

inline void value::push_back(value v) {
    expect(kind::array);
    items_.push_back(std::move(v));
}

inline value value::object(std::vector<member> members) {
    value v;
    v.kind_ = kind::object;
    v.members_ = std::move(members);
    return v;
}

inline std::size_t value::size() const noexcept {
    return kind_ == kind::array ? items_.size() : kind_ == kind::object ? members_.size() : 0;
}

inline const value* value::find(std::string_view key) const {
    expect(kind::object);
    for (const auto& m : members_)
        if (m.key == key) return &m.value;
    return nullptr;
}

inline const value& value::operator[](std::string_view key) const {
    if (const value* v = find(key)) return *v;
    LOWBIT_THROW(errc::invalid_argument, "json: object has no member \"" + std::string(key) + "\"");
    std::abort();
}

inline value& value::set(std::string key, value v) {
    expect(kind::object);
    for (auto& m : members_)
        if (m.key == key) {
            m.value = std::move(v);
            return m.value;
        }
    members_.push_back({std::move(key), std::move(v), 0});
    return members_.back().value;
}

inline bool operator==(const value& a, const value& b) {
    if (a.kind_ != b.kind_) return false;
    switch (a.kind_) {
    case kind::null: return true;
    case kind::boolean: return a.bool_ == b.bool_;
    case kind::number:
    case kind::string: return a.text_ == b.text_;
    case kind::array: return a.items_ == b.items_;
    case kind::object: return a.members_ == b.members_;
    }
    return false;
}

struct parse_options {
    std::size_t max_depth = 128;         ///< arrays and objects nested deeper are an error
    bool allow_duplicate_keys = false;   ///< if true, duplicates are kept (find() returns the first)
    std::string_view what = "json";      ///< names the document in error messages
    std::uint64_t offset_base = 0;       ///< added to every byte offset (the text's place in a file)
};

/// Parses one JSON value (with optional surrounding whitespace). Errors are
/// errc::corrupt_file: "<what> at byte N: <problem>".
value parse(std::string_view text, const parse_options& options = {});

/// Compact JSON (no spaces), strings in UTF-8 with only '"', '\\' and
/// control characters escaped. A string that is not valid UTF-8 is
/// errc::invalid_argument.
std::string dump(const value& v);

/// Exactly what Python's json.dumps(v) prints with default arguments.
/// Numbers print as Python would print the int or float it parses them to
/// ("-0" as 0, "1E2" as 100.0); one beyond the double range is errc::non_finite.
std::string dump_python(const value& v);

namespace detail {

inline bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// The length of the JSON number at the start of s (0 if there is none).
inline std::size_t number_length(std::string_view s) noexcept {
    std::size_t i = 0;
    if (i < s.size() && s[i] == '-') ++i;
    if (i >= s.size() || !is_digit(s[i])) return 0;
    if (s[i] == '0') {
        ++i;
    } else {
        while (i < s.size() && is_digit(s[i])) ++i;
    }
    if (i < s.size() && s[i] == '.') {
        ++i;
        if (i >= s.size() || !is_digit(s[i])) return 0;
        while (i < s.size() && is_digit(s[i])) ++i;
    }
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
        ++i;
        if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
        if (i >= s.size() || !is_digit(s[i])) return 0;
        while (i < s.size() && is_digit(s[i])) ++i;
    }
    return i;
}

inline bool is_number_text(std::string_view s) noexcept { return !s.empty() && number_length(s) == s.size(); }

inline void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
        out += static_cast<char>(cp);
    } else if (cp < 0x800) {
        out += static_cast<char>(0xc0 | (cp >> 6));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += static_cast<char>(0xe0 | (cp >> 12));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
        out += static_cast<char>(0xf0 | (cp >> 18));
        out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
        out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
        out += static_cast<char>(0x80 | (cp & 0x3f));
    }
}

// Shows a byte of untrusted input in a message.
inline std::string show_byte(char ch) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != '\'') return "'" + std::string(1, ch) + "'";
    static constexpr char hex[] = "0123456789abcdef";
    return std::string("byte 0x") + hex[c >> 4] + hex[c & 15];
}

class parser {
public:
    parser(std::string_view text, const parse_options& opt) : s_(text), opt_(opt) {}

    value run() {
        skip_ws();
        value v = parse_value(0);
        skip_ws();
        if (pos_ != s_.size()) fail(pos_, "unexpected " + show_byte(s_[pos_]) + " after the JSON value");
        return v;
    }

private:
    [[noreturn]] void fail(std::size_t at, const std::string& problem) const {
        LOWBIT_THROW(errc::corrupt_file,
                     std::string(opt_.what) + " at byte " + std::to_string(opt_.offset_base + at) + ": " + problem);
        std::abort();
    }
    [[noreturn]] void fail_end(const char* expected) const {
        fail(pos_, std::string("the text ends where ") + expected + " should follow (truncated?)");
    }

    void skip_ws() noexcept {
        while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r'))
            ++pos_;
    }

    bool literal(std::string_view word) {
        if (s_.substr(pos_, word.size()) != word) return false;
        pos_ += word.size();
        return true;
    }

    value parse_value(std::size_t depth) {
        if (pos_ >= s_.size()) fail_end("a value");
        value v;
        v.offset_ = opt_.offset_base + pos_;
        const char c = s_[pos_];
        switch (c) {
        case '{': parse_object(v, depth + 1); return v;
        case '[': parse_array(v, depth + 1); return v;
        case '"':
            v.kind_ = kind::string;
            v.text_ = parse_string();
            return v;
        case 't':
        case 'f':
        case 'n':
            if (literal("true")) {
                v.kind_ = kind::boolean;
                v.bool_ = true;
            } else if (literal("false")) {
                v.kind_ = kind::boolean;
            } else if (!literal("null")) {
                fail(pos_, "expected a value, found " + show_byte(c));
            }
            return v;
        default: {
            const std::size_t n = number_length(s_.substr(pos_));
            if (n == 0) {
                if (c == '-' || is_digit(c)) fail(pos_, "malformed number");
                fail(pos_, "expected a value, found " + show_byte(c));
            }
            v.kind_ = kind::number;
            v.text_ = std::string(s_.substr(pos_, n));
            pos_ += n;
            return v;
        }
        }
    }

    void enter(std::size_t depth) const {
        if (depth > opt_.max_depth)
            fail(pos_, "arrays and objects nest deeper than the limit of " + std::to_string(opt_.max_depth));
    }

    void parse_array(value& v, std::size_t depth) {
        enter(depth);
        v.kind_ = kind::array;
        ++pos_;  // '['
        skip_ws();
        if (pos_ < s_.size() && s_[pos_] == ']') {
            ++pos_;
            return;
        }
        for (;;) {
            skip_ws();
            v.items_.push_back(parse_value(depth));
            skip_ws();
            if (pos_ >= s_.size()) fail_end("',' or ']'");
            if (s_[pos_] == ']') {
                ++pos_;
                return;
            }
            if (s_[pos_] != ',') fail(pos_, "expected ',' or ']' in an array, found " + show_byte(s_[pos_]));
            ++pos_;
        }
    }

    void parse_object(value& v, std::size_t depth) {
        enter(depth);
        v.kind_ = kind::object;
        ++pos_;  // '{'
        skip_ws();
        if (pos_ < s_.size() && s_[pos_] == '}') {
            ++pos_;
            return;
        }
        for (;;) {
            skip_ws();
            if (pos_ >= s_.size()) fail_end("a key");
            if (s_[pos_] != '"') fail(pos_, "expected a string key, found " + show_byte(s_[pos_]));
            const std::size_t key_at = pos_;
            std::string key = parse_string();
            skip_ws();
            if (pos_ >= s_.size()) fail_end("':'");
            if (s_[pos_] != ':') fail(pos_, "expected ':' after a key, found " + show_byte(s_[pos_]));
            ++pos_;
            skip_ws();
            value item = parse_value(depth);
            v.members_.push_back({std::move(key), std::move(item), opt_.offset_base + key_at});
            skip_ws();
            if (pos_ >= s_.size()) fail_end("',' or '}'");
            if (s_[pos_] == '}') {
                ++pos_;
                break;
            }
            if (s_[pos_] != ',') fail(pos_, "expected ',' or '}' in an object, found " + show_byte(s_[pos_]));
            ++pos_;
        }
        if (!opt_.allow_duplicate_keys) check_duplicates(v.members_);
    }

    // Reports the duplicate that comes first in the text.
    void check_duplicates(const std::vector<member>& m) const {
        std::size_t later = m.size(), earlier = 0;
        if (m.size() <= 16) {
            for (std::size_t i = 1; i < m.size() && later == m.size(); ++i)
                for (std::size_t j = 0; j < i; ++j)
                    if (m[i].key == m[j].key) {
                        later = i;
                        earlier = j;
                        break;
                    }
        } else {
            std::vector<std::size_t> order(m.size());
            for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
            std::stable_sort(order.begin(), order.end(),
                             [&](std::size_t a, std::size_t b) { return m[a].key < m[b].key; });
            for (std::size_t k = 1; k < order.size(); ++k)
                if (m[order[k]].key == m[order[k - 1]].key && order[k] < later) {
                    later = order[k];
                    earlier = order[k - 1];
                }
            // order[k - 1] may itself repeat an earlier one: find the first.
            if (later != m.size())
                for (std::size_t j = 0; j < earlier; ++j)
                    if (m[j].key == m[later].key) {
                        earlier = j;
                        break;
                    }
        }
        if (later == m.size()) return;
        std::string shown;
        for (char ch : m[later].key.substr(0, 80)) shown += static_cast<unsigned char>(ch) < 0x20 ? '?' : ch;
        if (m[later].key.size() > 80) shown += "...";
        fail(static_cast<std::size_t>(m[later].key_offset - opt_.offset_base),
             "duplicate key \"" + shown + "\" (first at byte " + std::to_string(m[earlier].key_offset) + ")");
    }

    unsigned hex4(std::size_t at) const {
        if (at + 4 > s_.size()) {
            LOWBIT_THROW(errc::corrupt_file, std::string(opt_.what) + " at byte " +
                                                 std::to_string(opt_.offset_base + at) +
                                                 ": the text ends inside a \\u escape (truncated?)");
        }
        unsigned v = 0;
        for (std::size_t i = at; i < at + 4; ++i) {
            const char c = s_[i];
            v <<= 4;
            if (c >= '0' && c <= '9')
                v |= static_cast<unsigned>(c - '0');
            else if (c >= 'a' && c <= 'f')
                v |= static_cast<unsigned>(c - 'a' + 10);
            else if (c >= 'A' && c <= 'F')
                v |= static_cast<unsigned>(c - 'A' + 10);
            else
                fail(i, "expected a hex digit in a \\u escape, found " + show_byte(c));
        }
        return v;
    }

    std::string parse_string() {
        const std::size_t start = pos_;
        ++pos_;  // '"'
        std::string out;
        for (;;) {
            // Copy the run of plain characters in one go.
            std::size_t run = pos_;
            while (run < s_.size()) {
                const auto c = static_cast<unsigned char>(s_[run]);
                if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80) break;
                ++run;
            }
            out.append(s_.data() + pos_, run - pos_);
            pos_ = run;
            if (pos_ >= s_.size())
                fail(start, "string does not end before the text does (truncated?)");
            const auto c = static_cast<unsigned char>(s_[pos_]);
            if (c == '"') {
                ++pos_;
                return out;
            }
            if (c < 0x20) fail(pos_, "raw control character " + show_byte(s_[pos_]) + " in a string (must be escaped)");
            if (c >= 0x80) {
                const std::size_t n = utf8::sequence_length(s_.substr(pos_));
                if (n == 0) fail(pos_, "invalid UTF-8 in a string (" + show_byte(s_[pos_]) + ")");
                out.append(s_.data() + pos_, n);
                pos_ += n;
                continue;
            }
            // Backslash.
            const std::size_t esc = pos_;
            if (pos_ + 1 >= s_.size()) fail(start, "string does not end before the text does (truncated?)");
            const char e = s_[pos_ + 1];
            pos_ += 2;
            switch (e) {
            case '"': out += '"'; break;
            case '\\': out += '\\'; break;
            case '/': out += '/'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'n': out += '\n'; break;
            case 'r': out += '\r'; break;
            case 't': out += '\t'; break;
            case 'u': {
                std::uint32_t cp = hex4(pos_);
                pos_ += 4;
                if (cp >= 0xdc00 && cp <= 0xdfff) fail(esc, "lone low surrogate \\u escape");
                if (cp >= 0xd800 && cp <= 0xdbff) {
                    if (s_.substr(pos_, 2) != "\\u") fail(esc, "high surrogate \\u escape without a low surrogate after it");
                    const unsigned lo = hex4(pos_ + 2);
                    if (lo < 0xdc00 || lo > 0xdfff)
                        fail(pos_, "high surrogate \\u escape followed by a \\u escape that is not a low surrogate");
                    pos_ += 6;
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                }
                append_utf8(out, cp);
                break;
            }
            default: fail(esc, "invalid escape \\" + std::string(1, e));
            }
        }
    }

    std::string_view s_;
    const parse_options& opt_;
    std::size_t pos_ = 0;
};

enum class style { compact, python };

inline void dump_string(std::string& out, std::string_view s, style st) {
    static constexpr char hex[] = "0123456789abcdef";
    const auto u_escape = [&](std::uint32_t u) {
        out += "\\u";
        for (int sh = 12; sh >= 0; sh -= 4) out += hex[(u >> sh) & 15];
    };
    out += '"';
    for (std::size_t i = 0; i < s.size();) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c >= 0x80) {
            const std::size_t n = utf8::sequence_length(s.substr(i));
            if (n == 0)
                LOWBIT_THROW(errc::invalid_argument,
                             "json: string has invalid UTF-8 at byte " + std::to_string(i) + " (" + show_byte(s[i]) + ")");
            if (st == style::compact) {
                out.append(s.data() + i, n);
            } else {
                std::uint32_t cp = n == 2 ? c & 0x1fu : n == 3 ? c & 0x0fu : c & 0x07u;
                for (std::size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3fu);
                if (cp >= 0x10000) {
                    cp -= 0x10000;
                    u_escape(0xd800 + (cp >> 10));
                    u_escape(0xdc00 + (cp & 0x3ff));
                } else {
                    u_escape(cp);
                }
            }
            i += n;
            continue;
        }
        switch (c) {
        case '"': out += "\\\""; break;
        case '\\': out += "\\\\"; break;
        case '\b': out += "\\b"; break;
        case '\f': out += "\\f"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default:
            // Python's ensure_ascii also escapes DEL (it keeps only ' '..'~').
            if (c < 0x20 || (c == 0x7f && st == style::python))
                u_escape(c);
            else
                out += static_cast<char>(c);
        }
        ++i;
    }
    out += '"';
}

inline void dump_python_number(std::string& out, const value& v) {
    const std::string& t = v.number_text();
    if (v.is_integer()) {
        // Python ints are exact at any size; only "-0" reads back differently.
        if (t == "-0")
            out += '0';
        else
            out += t;
        return;
    }
    out += format_double_python(v.as_double());
}

inline void dump_to(std::string& out, const value& v, style st) {
    switch (v.type()) {
    case kind::null: out += "null"; return;
    case kind::boolean: out += v.as_bool() ? "true" : "false"; return;
    case kind::number:
        if (st == style::python)
            dump_python_number(out, v);
        else
            out += v.number_text();
        return;
    case kind::string: dump_string(out, v.as_string(), st); return;
    case kind::array: {
        out += '[';
        bool first = true;
        for (const auto& x : v.items()) {
            if (!first) out += st == style::python ? ", " : ",";
            first = false;
            dump_to(out, x, st);
        }
        out += ']';
        return;
    }
    case kind::object: {
        out += '{';
        bool first = true;
        for (const auto& m : v.members()) {
            if (!first) out += st == style::python ? ", " : ",";
            first = false;
            dump_string(out, m.key, st);
            out += st == style::python ? ": " : ":";
            dump_to(out, m.value, st);
        }
        out += '}';
        return;
    }
    }
}

}  // namespace detail

inline std::string format_double_python(double x) {
    if (!std::isfinite(x))
        LOWBIT_THROW(errc::non_finite, std::string("json: ") + (std::isnan(x) ? "NaN" : "infinity") +
                                           " has no JSON spelling");
    // Shortest round-trip digits in scientific form: [-]d[.ddd]e(+|-)dd[d].
    char buf[64];
    const auto r = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
    std::string_view s(buf, static_cast<std::size_t>(r.ptr - buf));
    std::string out;
    if (s.front() == '-') {
        out += '-';
        s.remove_prefix(1);
    }
    const std::size_t e_at = s.find('e');
    std::string digits(1, s[0]);
    if (e_at > 1) digits.append(s.substr(2, e_at - 2));
    int exp = 0;
    const std::string_view e_text = s.substr(e_at + 1);
    std::from_chars(e_text.data() + (e_text[0] == '+' ? 1 : 0), e_text.data() + e_text.size(), exp);
    const auto n = static_cast<int>(digits.size());
    if (exp < -4 || exp >= 16) {
        out += digits[0];
        if (n > 1) {
            out += '.';
            out.append(digits, 1);
        }
        out += 'e';
        out += exp < 0 ? '-' : '+';
        const int a = exp < 0 ? -exp : exp;
        if (a < 10) out += '0';
        out += std::to_string(a);
    } else if (exp < 0) {
        out += "0.";
        out.append(static_cast<std::size_t>(-exp - 1), '0');
        out += digits;
    } else if (n <= exp + 1) {
        out += digits;
        out.append(static_cast<std::size_t>(exp + 1 - n), '0');
        out += ".0";
    } else {
        out.append(digits, 0, static_cast<std::size_t>(exp + 1));
        out += '.';
        out.append(digits, static_cast<std::size_t>(exp + 1));
    }
    return out;
}

inline double value::as_double() const {
    expect(kind::number);
    double d = 0;
    const char* first = text_.data();
    const char* last = first + text_.size();
    const auto r = std::from_chars(first, last, d);
    if (r.ec == std::errc()) return d;
    // Out of range: decide overflow or underflow from the decimal exponent of
    // the first significant digit.
    const bool neg = text_[0] == '-';
    const std::size_t e_at = text_.find_first_of("eE");
    const std::string mant = text_.substr(neg ? 1 : 0, (e_at == std::string::npos ? text_.size() : e_at) - (neg ? 1 : 0));
    long long exp10 = 0;
    if (e_at != std::string::npos) {
        std::size_t i = e_at + 1;
        const bool eneg = text_[i] == '-';
        if (text_[i] == '+' || text_[i] == '-') ++i;
        for (; i < text_.size(); ++i) exp10 = std::min<long long>(exp10 * 10 + (text_[i] - '0'), 1'000'000'000LL);
        if (eneg) exp10 = -exp10;
    }
    const std::size_t dot = mant.find('.');
    const std::size_t int_len = dot == std::string::npos ? mant.size() : dot;
    const std::size_t first_nz = mant.find_first_not_of("0.");
    long long lead = 0;  // decimal exponent of the first significant digit, before exp10
    if (first_nz == std::string::npos) return neg ? -0.0 : 0.0;
    if (first_nz < int_len)
        lead = static_cast<long long>(int_len - first_nz) - 1;
    else
        lead = -static_cast<long long>(first_nz - int_len);
    const bool overflow = lead + exp10 > 0;
    const double mag = overflow ? std::numeric_limits<double>::infinity() : 0.0;
    return neg ? -mag : mag;
}

inline value parse(std::string_view text, const parse_options& options) {
    return detail::parser(text, options).run();
}

inline std::string dump(const value& v) {
    std::string out;
    detail::dump_to(out, v, detail::style::compact);
    return out;
}

inline std::string dump_python(const value& v) {
    std::string out;
    detail::dump_to(out, v, detail::style::python);
    return out;
}

}  // namespace json

LOWBIT_NAMESPACE_END
