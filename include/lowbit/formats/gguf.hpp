#pragma once
// GGUF files (versions 2 and 3, little-endian): a model of their metadata and
// tensors, a reader that validates every field over a read-only memory map,
// and a writer that replaces its target only once the whole file is written.
//
// Layout: "GGUF", u32 version, u64 tensor_count, u64 kv_count; kv_count pairs
// of (string key, u32 value type, value); tensor_count infos of (string name,
// u32 n_dims, u64 dims[n_dims], u32 ggml type, u64 offset); zero padding to
// general.alignment (default 32); the data section, where each tensor's
// offset is relative to its start and a multiple of the alignment. Strings are
// a u64 byte count and the bytes, UTF-8 (the reader and the writer check
// every key, string value and tensor name); arrays are a u32 element type, a
// u64 count and the elements.

#include <algorithm>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../core/utf8.hpp"
#include "../detail/file_io.hpp"
#include "../detail/names.hpp"
#include "ggml_types.hpp"

LOWBIT_NAMESPACE_BEGIN

/// Metadata value types, numbered as GGUF stores them.
enum class gguf_type : std::uint32_t {
    uint8 = 0,
    int8 = 1,
    uint16 = 2,
    int16 = 3,
    uint32 = 4,
    int32 = 5,
    float32 = 6,
    boolean = 7,
    string = 8,
    array = 9,
    uint64 = 10,
    int64 = 11,
    float64 = 12,
};

constexpr std::string_view to_string(gguf_type t) noexcept {
    switch (t) {
    case gguf_type::uint8: return "uint8";
    case gguf_type::int8: return "int8";
    case gguf_type::uint16: return "uint16";
    case gguf_type::int16: return "int16";
    case gguf_type::uint32: return "uint32";
    case gguf_type::int32: return "int32";
    case gguf_type::float32: return "float32";
    case gguf_type::boolean: return "bool";
    case gguf_type::string: return "string";
    case gguf_type::array: return "array";
    case gguf_type::uint64: return "uint64";
    case gguf_type::int64: return "int64";
    case gguf_type::float64: return "float64";
    }
    return "unknown";
}

/// An array value: a vector of one element type. Alternatives are ordered by
/// GGUF type number, so `items().index()` is the element type and an empty
/// array keeps its element type through a round trip.
class gguf_array {
public:
    using storage = std::variant<std::vector<std::uint8_t>, std::vector<std::int8_t>, std::vector<std::uint16_t>,
                                 std::vector<std::int16_t>, std::vector<std::uint32_t>, std::vector<std::int32_t>,
                                 std::vector<float>, std::vector<bool>, std::vector<std::string>,
                                 std::vector<gguf_array>, std::vector<std::uint64_t>, std::vector<std::int64_t>,
                                 std::vector<double>>;

    gguf_array() = default;  ///< empty, of uint8
    template <class T>
        requires std::is_constructible_v<storage, std::vector<T>>
    gguf_array(std::vector<T> items) : items_(std::move(items)) {}
    template <class T>
        requires std::is_constructible_v<storage, std::vector<T>>
    gguf_array(std::initializer_list<T> items) : items_(std::vector<T>(items)) {}
    /// An empty array of `element_type`.
    static gguf_array empty_of(gguf_type element_type);

    gguf_type element_type() const noexcept { return static_cast<gguf_type>(items_.index()); }
    std::size_t size() const noexcept {
        return std::visit([](const auto& v) { return v.size(); }, items_);
    }
    bool empty() const noexcept { return size() == 0; }

    /// The elements as std::vector<T>; errc::invalid_argument if they are of another type.
    template <class T>
    const std::vector<T>& get() const;
    template <class T>
    std::vector<T>& get() {
        return const_cast<std::vector<T>&>(std::as_const(*this).get<T>());
    }

    const storage& items() const noexcept { return items_; }
    storage& items() noexcept { return items_; }

    friend bool operator==(const gguf_array&, const gguf_array&) = default;

private:
    storage items_;
};

/// A metadata value. Alternatives are ordered by GGUF type number, so
/// `index()` is the type (see type_of), and a uint32 stays a uint32.
using gguf_value = std::variant<std::uint8_t, std::int8_t, std::uint16_t, std::int16_t, std::uint32_t, std::int32_t,
                                float, bool, std::string, gguf_array, std::uint64_t, std::int64_t, double>;

inline gguf_type type_of(const gguf_value& v) noexcept { return static_cast<gguf_type>(v.index()); }

namespace gguf::detail {
template <class T, class Variant, std::size_t I = 0>
constexpr std::size_t index_of() {
    if constexpr (I == std::variant_size_v<Variant>)
        return I;
    else if constexpr (std::is_same_v<T, std::variant_alternative_t<I, Variant>>)
        return I;
    else
        return index_of<T, Variant, I + 1>();
}
}  // namespace gguf::detail

/// The GGUF type a C++ value type stores as (gguf_type::string for std::string ...).
template <class T>
    requires(gguf::detail::index_of<T, gguf_value>() < std::variant_size_v<gguf_value>)
inline constexpr gguf_type gguf_type_of = static_cast<gguf_type>(gguf::detail::index_of<T, gguf_value>());

inline gguf_array gguf_array::empty_of(gguf_type element_type) {
    gguf_array a;
    switch (element_type) {
    case gguf_type::uint8: a.items_.emplace<0>(); break;
    case gguf_type::int8: a.items_.emplace<1>(); break;
    case gguf_type::uint16: a.items_.emplace<2>(); break;
    case gguf_type::int16: a.items_.emplace<3>(); break;
    case gguf_type::uint32: a.items_.emplace<4>(); break;
    case gguf_type::int32: a.items_.emplace<5>(); break;
    case gguf_type::float32: a.items_.emplace<6>(); break;
    case gguf_type::boolean: a.items_.emplace<7>(); break;
    case gguf_type::string: a.items_.emplace<8>(); break;
    case gguf_type::array: a.items_.emplace<9>(); break;
    case gguf_type::uint64: a.items_.emplace<10>(); break;
    case gguf_type::int64: a.items_.emplace<11>(); break;
    case gguf_type::float64: a.items_.emplace<12>(); break;
    default:
        LOWBIT_THROW(errc::invalid_argument,
                     "gguf array: " + std::to_string(static_cast<std::uint32_t>(element_type)) + " is not a GGUF type");
    }
    return a;
}

template <class T>
const std::vector<T>& gguf_array::get() const {
    if (const auto* v = std::get_if<std::vector<T>>(&items_)) return *v;
    LOWBIT_THROW(errc::invalid_argument, "gguf array holds " + std::string(to_string(element_type())) +
                                             " elements, not " + std::string(to_string(gguf_type_of<T>)));
}

struct gguf_kv {
    std::string key;
    gguf_value value;
    friend bool operator==(const gguf_kv&, const gguf_kv&) = default;
};

/// Key/value pairs in file order, with lookup by key.
class gguf_metadata {
public:
    using const_iterator = std::vector<gguf_kv>::const_iterator;

    std::size_t size() const noexcept { return items_.size(); }
    bool empty() const noexcept { return items_.empty(); }
    const_iterator begin() const noexcept { return items_.begin(); }
    const_iterator end() const noexcept { return items_.end(); }
    const gguf_kv& operator[](std::size_t i) const { return items_[i]; }

    bool contains(std::string_view key) const { return find(key) != nullptr; }
    const gguf_value* find(std::string_view key) const {
        const auto it = index_.find(std::string(key));
        return it == index_.end() ? nullptr : &items_[it->second].value;
    }
    gguf_value* find(std::string_view key) {
        return const_cast<gguf_value*>(std::as_const(*this).find(key));
    }
    /// Position of `key` in file order, or size() when absent.
    std::size_t position(std::string_view key) const {
        const auto it = index_.find(std::string(key));
        return it == index_.end() ? items_.size() : it->second;
    }

    /// Replaces the value of an existing key in place, or appends a new pair.
    void set(std::string key, gguf_value value) {
        if (auto* v = find(key)) {
            *v = std::move(value);
            return;
        }
        append(std::move(key), std::move(value));
    }
    /// Appends a pair; false (and no change) if the key is already present.
    bool append(std::string key, gguf_value value) {
        const auto [it, inserted] = index_.try_emplace(key, items_.size());
        if (!inserted) return false;
        items_.push_back({std::move(key), std::move(value)});
        return true;
    }
    bool erase(std::string_view key) {
        const std::size_t i = position(key);
        if (i == items_.size()) return false;
        index_.erase(items_[i].key);
        items_.erase(items_.begin() + static_cast<std::ptrdiff_t>(i));
        for (auto& [k, pos] : index_)
            if (pos > i) --pos;
        return true;
    }

    /// The value of `key` as T; errc::invalid_argument naming the key if it
    /// is absent or stored as another type (no conversions: a uint32 is not a uint64).
    template <class T>
    const T& get(std::string_view key) const {
        const gguf_value* v = find(key);
        if (!v) LOWBIT_THROW(errc::invalid_argument, "gguf: no metadata key '" + std::string(key) + "'");
        if (const T* p = std::get_if<T>(v)) return *p;
        LOWBIT_THROW(errc::invalid_argument, "gguf: metadata '" + std::string(key) + "' is " +
                                                 std::string(to_string(type_of(*v))) + ", not " +
                                                 std::string(to_string(gguf_type_of<T>)));
    }
    /// Any integer type whose value is >= 0 (converters store counts as u32 or u64).
    std::uint64_t get_uint(std::string_view key) const;
    /// Any integer type whose value fits in int64.
    std::int64_t get_int(std::string_view key) const;

    friend bool operator==(const gguf_metadata& a, const gguf_metadata& b) { return a.items_ == b.items_; }

private:
    std::vector<gguf_kv> items_;
    std::unordered_map<std::string, std::size_t> index_;
};

inline std::uint64_t gguf_metadata::get_uint(std::string_view key) const {
    const gguf_value* v = find(key);
    if (!v) LOWBIT_THROW(errc::invalid_argument, "gguf: no metadata key '" + std::string(key) + "'");
    return std::visit(
        [&](const auto& x) -> std::uint64_t {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
                if constexpr (std::is_signed_v<T>)
                    if (x < 0)
                        LOWBIT_THROW(errc::invalid_argument, "gguf: metadata '" + std::string(key) + "' is " +
                                                                 std::to_string(x) + ", not a count");
                return static_cast<std::uint64_t>(x);
            } else {
                LOWBIT_THROW(errc::invalid_argument, "gguf: metadata '" + std::string(key) + "' is " +
                                                         std::string(to_string(type_of(*v))) +
                                                         ", not an integer");
            }
        },
        *v);
}

inline std::int64_t gguf_metadata::get_int(std::string_view key) const {
    const gguf_value* v = find(key);
    if (!v) LOWBIT_THROW(errc::invalid_argument, "gguf: no metadata key '" + std::string(key) + "'");
    return std::visit(
        [&](const auto& x) -> std::int64_t {
            using T = std::decay_t<decltype(x)>;
            if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
                if constexpr (std::is_same_v<T, std::uint64_t>)
                    if (x > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
                        LOWBIT_THROW(errc::invalid_argument, "gguf: metadata '" + std::string(key) + "' is " +
                                                                 std::to_string(x) + ", past int64");
                return static_cast<std::int64_t>(x);
            } else {
                LOWBIT_THROW(errc::invalid_argument, "gguf: metadata '" + std::string(key) + "' is " +
                                                         std::string(to_string(type_of(*v))) +
                                                         ", not an integer");
            }
        },
        *v);
}

/// One tensor as a GGUF file describes it.
struct gguf_tensor_info {
    std::string name;
    std::vector<std::uint64_t> shape;  ///< ggml ne order: shape[0] is the row length
    ggml::type type = ggml::type::f32;
    std::uint64_t offset = 0;  ///< from the start of the data section
    std::uint64_t size = 0;    ///< bytes

    std::uint64_t n_elements() const noexcept {
        std::uint64_t n = 1;
        for (auto d : shape) n *= d;
        return n;
    }
    std::uint64_t row_length() const noexcept { return shape.empty() ? 1 : shape[0]; }
    std::uint64_t n_rows() const noexcept { return shape.empty() || shape[0] == 0 ? 0 : n_elements() / shape[0]; }
    friend bool operator==(const gguf_tensor_info&, const gguf_tensor_info&) = default;
};

namespace gguf::detail {

inline constexpr std::uint32_t default_alignment = 32;
inline constexpr std::size_t max_dims = 4;             // GGML_MAX_DIMS
inline constexpr std::size_t max_name_bytes = 64;      // the spec's limit on tensor names
inline constexpr std::size_t max_key_bytes = 65535;    // the spec's limit on keys
inline constexpr int max_array_depth = 8;              // arrays in arrays: bounds the reader's recursion

template <class T>
T load_le(const std::byte* p) noexcept {
    using U = std::conditional_t<sizeof(T) == 1, std::uint8_t,
                                 std::conditional_t<sizeof(T) == 2, std::uint16_t,
                                                    std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>>>;
    U u = 0;
    if constexpr (std::endian::native == std::endian::little) {
        std::memcpy(&u, p, sizeof(U));
    } else {
        for (std::size_t i = 0; i < sizeof(U); ++i) u |= static_cast<U>(static_cast<U>(p[i]) << (8 * i));
    }
    return std::bit_cast<T>(u);
}

template <class T>
void store_le(std::byte* p, T value) noexcept {
    using U = std::conditional_t<sizeof(T) == 1, std::uint8_t,
                                 std::conditional_t<sizeof(T) == 2, std::uint16_t,
                                                    std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>>>;
    const U u = std::bit_cast<U>(value);
    if constexpr (std::endian::native == std::endian::little) {
        std::memcpy(p, &u, sizeof(U));
    } else {
        for (std::size_t i = 0; i < sizeof(U); ++i) p[i] = static_cast<std::byte>(u >> (8 * i));
    }
}

constexpr bool is_value_type(std::uint32_t t) noexcept { return t <= static_cast<std::uint32_t>(gguf_type::float64); }

// The fewest bytes a value of type t occupies in a file: bounds every count
// before anything is allocated for it.
constexpr std::uint64_t min_encoded_size(gguf_type t) noexcept {
    switch (t) {
    case gguf_type::uint8:
    case gguf_type::int8:
    case gguf_type::boolean: return 1;
    case gguf_type::uint16:
    case gguf_type::int16: return 2;
    case gguf_type::uint32:
    case gguf_type::int32:
    case gguf_type::float32: return 4;
    case gguf_type::string: return 8;
    case gguf_type::array: return 12;
    case gguf_type::uint64:
    case gguf_type::int64:
    case gguf_type::float64: return 8;
    }
    return 1;
}

constexpr bool is_power_of_two(std::uint64_t x) noexcept { return x != 0 && (x & (x - 1)) == 0; }
constexpr std::uint64_t align_up(std::uint64_t x, std::uint64_t a) noexcept { return (x + a - 1) / a * a; }

using lowbit::detail::show_name;

// "0xNN (after 'prefix') starts no well-formed sequence": the bad byte at
// s[bad], with the valid text before it (the invalid bytes are not shown).
inline std::string utf8_problem(std::string_view s, std::size_t bad) {
    static constexpr char hex[] = "0123456789abcdef";
    const auto c = static_cast<unsigned char>(s[bad]);
    return std::string("0x") + hex[c >> 4] + hex[c & 15] + " (after " + show_name(s.substr(0, bad)) +
           ") starts no well-formed sequence";
}

[[noreturn]] inline void throw_corrupt(std::string_view source, const std::string& what) {
    LOWBIT_THROW(errc::corrupt_file, (source.empty() ? std::string() : std::string(source) + ": ") + what);
    std::abort();
}

[[noreturn]] inline void throw_invalid(const std::string& what) {
    LOWBIT_THROW(errc::invalid_argument, "gguf writer: " + what);
    std::abort();
}

// Reads fields in order; every failure names the field (through `what`, a
// callable so messages are only built on failure) and its byte offset.
class cursor {
public:
    cursor(std::span<const std::byte> bytes, std::string_view source) : bytes_(bytes), source_(source) {}

    std::uint64_t pos() const noexcept { return pos_; }
    std::uint64_t size() const noexcept { return bytes_.size(); }
    std::uint64_t remaining() const noexcept { return bytes_.size() - pos_; }

    template <class What>
    [[noreturn]] void fail_at(std::uint64_t at, What&& what, const std::string& problem) const {
        throw_corrupt(source_, std::string(what()) + " at byte " + std::to_string(at) + ": " + problem);
    }

    template <class What>
    void need(std::uint64_t n, What&& what) const {
        if (n > remaining())
            fail_at(pos_, what, "needs " + std::to_string(n) + " bytes, the file has " + std::to_string(remaining()) +
                                    " left (truncated?)");
    }

    template <class T, class What>
    T read(What&& what) {
        need(sizeof(T), what);
        const T v = load_le<T>(bytes_.data() + pos_);
        pos_ += sizeof(T);
        return v;
    }

    template <class What>
    std::string_view read_string(What&& what, std::uint64_t max_len = std::numeric_limits<std::uint64_t>::max()) {
        const std::uint64_t at = pos_;
        const auto len = read<std::uint64_t>([&] { return std::string(what()) + " length"; });
        if (len > remaining())
            fail_at(at, what,
                    "string length " + std::to_string(len) + " runs past the end of the file (" +
                        std::to_string(remaining()) + " bytes left)");
        if (len > max_len)
            fail_at(at, what, "length " + std::to_string(len) + " exceeds the limit of " + std::to_string(max_len));
        const std::string_view s(reinterpret_cast<const char*>(bytes_.data() + pos_), static_cast<std::size_t>(len));
        // GGUF strings are UTF-8; the offset is the bad byte's, in the file.
        if (const std::size_t bad = utf8::first_invalid(s); bad != s.size())
            fail_at(pos_ + bad, what, "not valid UTF-8: " + utf8_problem(s, bad));
        pos_ += len;
        return s;
    }

    const std::byte* here() const noexcept { return bytes_.data() + pos_; }
    void skip(std::uint64_t n) noexcept { pos_ += n; }
    std::string_view source() const noexcept { return source_; }

private:
    std::span<const std::byte> bytes_;
    std::string_view source_;
    std::uint64_t pos_ = 0;
};

template <class T>
std::vector<T> read_scalar_array(cursor& c, std::uint64_t n) {
    // The caller bounded n by the bytes left, so this allocation is too.
    std::vector<T> out(static_cast<std::size_t>(n));
    const std::byte* p = c.here();
    for (std::size_t i = 0; i < out.size(); ++i) out[i] = load_le<T>(p + i * sizeof(T));
    c.skip(n * sizeof(T));
    return out;
}

// `what` names the value in messages; a string, not a callable, because the
// recursion would otherwise instantiate without end.
inline gguf_array read_array(cursor& c, int depth, const std::string& what) {
    const auto whole = [&] { return what; };
    const std::uint64_t at = c.pos();
    const auto elem = c.read<std::uint32_t>([&] { return what + " array element type"; });
    if (!is_value_type(elem))
        c.fail_at(at, [&] { return what + " array element type"; },
                  std::to_string(elem) + " is not a GGUF value type (0..12)");
    const auto t = static_cast<gguf_type>(elem);
    if (t == gguf_type::array && depth + 1 >= max_array_depth)
        c.fail_at(at, whole, "arrays nested deeper than " + std::to_string(max_array_depth) + " levels");
    const std::uint64_t count_at = c.pos();
    const auto n = c.read<std::uint64_t>([&] { return what + " array count"; });
    if (n > c.remaining() / min_encoded_size(t))
        c.fail_at(count_at, [&] { return what + " array count"; },
                  std::to_string(n) + " " + std::string(to_string(t)) + " elements cannot fit in the " +
                      std::to_string(c.remaining()) + " bytes left");
    switch (t) {
    case gguf_type::uint8: return read_scalar_array<std::uint8_t>(c, n);
    case gguf_type::int8: return read_scalar_array<std::int8_t>(c, n);
    case gguf_type::uint16: return read_scalar_array<std::uint16_t>(c, n);
    case gguf_type::int16: return read_scalar_array<std::int16_t>(c, n);
    case gguf_type::uint32: return read_scalar_array<std::uint32_t>(c, n);
    case gguf_type::int32: return read_scalar_array<std::int32_t>(c, n);
    case gguf_type::float32: return read_scalar_array<float>(c, n);
    case gguf_type::uint64: return read_scalar_array<std::uint64_t>(c, n);
    case gguf_type::int64: return read_scalar_array<std::int64_t>(c, n);
    case gguf_type::float64: return read_scalar_array<double>(c, n);
    case gguf_type::boolean: {
        std::vector<bool> out(static_cast<std::size_t>(n));
        for (std::size_t i = 0; i < out.size(); ++i) {
            const auto b = std::to_integer<std::uint8_t>(c.here()[0]);
            if (b > 1)
                c.fail_at(c.pos(), [&] { return what + " element " + std::to_string(i); },
                          "bool byte is " + std::to_string(b) + ", not 0 or 1");
            out[i] = b == 1;
            c.skip(1);
        }
        return out;
    }
    case gguf_type::string: {
        std::vector<std::string> out;
        out.reserve(static_cast<std::size_t>(n));
        for (std::uint64_t i = 0; i < n; ++i)
            out.emplace_back(c.read_string([&] { return what + " element " + std::to_string(i); }));
        return out;
    }
    case gguf_type::array: {
        std::vector<gguf_array> out;
        out.reserve(static_cast<std::size_t>(n));
        for (std::uint64_t i = 0; i < n; ++i)
            out.push_back(read_array(c, depth + 1, what + " element " + std::to_string(i)));
        return out;
    }
    }
    return {};  // unreachable: t was checked
}

inline gguf_value read_value(cursor& c, std::uint32_t raw_type, int depth, const std::string& what) {
    const auto whole = [&] { return what; };
    switch (static_cast<gguf_type>(raw_type)) {
    case gguf_type::uint8: return c.read<std::uint8_t>(whole);
    case gguf_type::int8: return c.read<std::int8_t>(whole);
    case gguf_type::uint16: return c.read<std::uint16_t>(whole);
    case gguf_type::int16: return c.read<std::int16_t>(whole);
    case gguf_type::uint32: return c.read<std::uint32_t>(whole);
    case gguf_type::int32: return c.read<std::int32_t>(whole);
    case gguf_type::float32: return c.read<float>(whole);
    case gguf_type::uint64: return c.read<std::uint64_t>(whole);
    case gguf_type::int64: return c.read<std::int64_t>(whole);
    case gguf_type::float64: return c.read<double>(whole);
    case gguf_type::boolean: {
        const std::uint64_t at = c.pos();
        const auto b = c.read<std::uint8_t>(whole);
        if (b > 1) c.fail_at(at, whole, "bool byte is " + std::to_string(b) + ", not 0 or 1");
        return b == 1;
    }
    case gguf_type::string: return std::string(c.read_string(whole));
    case gguf_type::array: return read_array(c, depth, what);
    }
    return {};  // unreachable: the caller checked raw_type
}

}  // namespace gguf::detail

class gguf_file;
namespace gguf::detail {
gguf_file parse(std::span<const std::byte> bytes, std::shared_ptr<const lowbit::detail::byte_owner> owner,
               std::string_view source);
}

/// A validated GGUF file. Tensor spans point into the file's bytes, which
/// stay mapped for as long as any copy of this object exists. (As with any
/// memory map, another process truncating the file meanwhile is not caught.)
class gguf_file {
public:
    std::uint32_t version() const noexcept { return version_; }
    const gguf_metadata& metadata() const noexcept { return metadata_; }
    std::span<const gguf_tensor_info> tensors() const noexcept { return tensors_; }
    std::uint32_t alignment() const noexcept { return alignment_; }
    /// File offset of the data section (tensor offsets count from here).
    std::uint64_t data_offset() const noexcept { return data_offset_; }
    /// The whole file.
    std::span<const std::byte> bytes() const noexcept { return bytes_; }

    const gguf_value* find(std::string_view key) const { return metadata_.find(key); }
    template <class T>
    const T& get(std::string_view key) const {
        return metadata_.get<T>(key);
    }

    const gguf_tensor_info* find_tensor(std::string_view name) const {
        const auto it = tensor_index_.find(std::string(name));
        return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
    }
    /// errc::invalid_argument if there is no such tensor.
    const gguf_tensor_info& tensor_info(std::string_view name) const {
        if (const auto* t = find_tensor(name)) return *t;
        LOWBIT_THROW(errc::invalid_argument, "gguf: no tensor named " + gguf::detail::show_name(name));
    }
    std::span<const std::byte> tensor(std::string_view name) const { return tensor(tensor_info(name)); }
    /// `info` should be one of tensors(); one describing bytes outside the
    /// file is errc::invalid_argument.
    std::span<const std::byte> tensor(const gguf_tensor_info& info) const {
        const std::uint64_t room = bytes_.size() >= data_offset_ ? bytes_.size() - data_offset_ : 0;
        if (info.offset > room || info.size > room - info.offset)
            LOWBIT_THROW(errc::invalid_argument, "gguf: tensor " + gguf::detail::show_name(info.name) +
                                                     " lies outside this file's data section");
        return bytes_.subspan(static_cast<std::size_t>(data_offset_ + info.offset), static_cast<std::size_t>(info.size));
    }

private:
    friend gguf_file gguf::detail::parse(std::span<const std::byte>, std::shared_ptr<const lowbit::detail::byte_owner>,
                                         std::string_view);
    std::shared_ptr<const lowbit::detail::byte_owner> owner_;
    std::span<const std::byte> bytes_;
    std::uint32_t version_ = 3;
    std::uint32_t alignment_ = gguf::detail::default_alignment;
    std::uint64_t data_offset_ = 0;
    gguf_metadata metadata_;
    std::vector<gguf_tensor_info> tensors_;
    std::unordered_map<std::string, std::size_t> tensor_index_;
};

namespace gguf::detail {

inline gguf_file parse(std::span<const std::byte> bytes, std::shared_ptr<const lowbit::detail::byte_owner> owner,
                       std::string_view source) {
    gguf_file f;
    f.owner_ = std::move(owner);
    f.bytes_ = bytes;
    cursor c(bytes, source);
    const auto field = [](const char* name) { return [name] { return std::string(name); }; };

    // Header.
    c.need(4, field("magic"));
    if (std::memcmp(c.here(), "GGUF", 4) != 0) {
        std::string shown;
        for (int i = 0; i < 4; ++i) {
            static constexpr char hex[] = "0123456789abcdef";
            const auto b = std::to_integer<unsigned>(c.here()[i]);
            shown += hex[b >> 4];
            shown += hex[b & 15];
        }
        const auto kind = lowbit::detail::container_of_bytes(bytes);
        c.fail_at(0, field("magic"), "bytes " + shown + " are not \"GGUF\" (47475546)" +
                                         (kind.empty() ? "" : "; this is a " + std::string(kind) + " file"));
    }
    c.skip(4);
    const auto version = c.read<std::uint32_t>(field("version"));
    if (version != 2 && version != 3) {
        const auto swapped = ((version & 0xffu) << 24) | ((version & 0xff00u) << 8) | ((version >> 8) & 0xff00u) |
                             (version >> 24);
        if (swapped == 2 || swapped == 3)
            c.fail_at(4, field("version"),
                      "reads as big-endian version " + std::to_string(swapped) + "; only little-endian GGUF is supported");
        c.fail_at(4, field("version"),
                  std::to_string(version) + " is not supported (this reader handles versions 2 and 3)");
    }
    f.version_ = version;
    const auto n_tensors = c.read<std::uint64_t>(field("tensor_count"));
    const auto n_kv = c.read<std::uint64_t>(field("kv_count"));
    constexpr std::uint64_t min_kv_bytes = 8 + 4 + 1;
    constexpr std::uint64_t min_tensor_bytes = 8 + 4 + 4 + 8;
    if (n_kv > c.remaining() / min_kv_bytes)
        c.fail_at(16, field("kv_count"),
                  std::to_string(n_kv) + " pairs cannot fit in the " + std::to_string(c.remaining()) + " bytes left");
    if (n_tensors > (c.remaining() - n_kv * min_kv_bytes) / min_tensor_bytes)
        c.fail_at(8, field("tensor_count"),
                  std::to_string(n_tensors) + " tensor infos (and " + std::to_string(n_kv) +
                      " metadata pairs) cannot fit in the " + std::to_string(c.remaining()) + " bytes left");

    // Metadata.
    for (std::uint64_t i = 0; i < n_kv; ++i) {
        const std::uint64_t key_at = c.pos();
        const std::string_view key =
            c.read_string([&] { return "kv " + std::to_string(i) + " key"; }, max_key_bytes);
        const auto what = [&] { return "kv " + std::to_string(i) + " " + show_name(key); };
        const std::uint64_t type_at = c.pos();
        const auto raw_type = c.read<std::uint32_t>([&] { return what() + " value type"; });
        if (!is_value_type(raw_type))
            c.fail_at(type_at, [&] { return what() + " value type"; },
                      std::to_string(raw_type) + " is not a GGUF value type (0..12)");
        gguf_value v = read_value(c, raw_type, 0, what() + " value");
        const std::size_t earlier = f.metadata_.position(key);
        if (earlier != f.metadata_.size())
            c.fail_at(key_at, [&] { return what() + " key"; },
                      "duplicates kv " + std::to_string(earlier));
        f.metadata_.append(std::string(key), std::move(v));
    }

    // general.alignment decides where the data section starts.
    if (const gguf_value* a = f.metadata_.find("general.alignment")) {
        const auto i = f.metadata_.position("general.alignment");
        const auto what = [&] { return "general.alignment (kv " + std::to_string(i) + ")"; };
        const auto* u = std::get_if<std::uint32_t>(a);
        if (!u)
            throw_corrupt(source, what() + ": type is " + std::string(to_string(type_of(*a))) + ", not uint32");
        if (!is_power_of_two(*u))
            throw_corrupt(source, what() + ": " + std::to_string(*u) + " is not a power of two");
        f.alignment_ = *u;
    }

    // Tensor infos.
    f.tensors_.reserve(static_cast<std::size_t>(n_tensors));
    for (std::uint64_t i = 0; i < n_tensors; ++i) {
        gguf_tensor_info t;
        const std::uint64_t name_at = c.pos();
        t.name = std::string(c.read_string([&] { return "tensor " + std::to_string(i) + " name"; }, max_name_bytes));
        const auto what = [&] { return "tensor " + std::to_string(i) + " " + show_name(t.name); };
        if (const auto it = f.tensor_index_.find(t.name); it != f.tensor_index_.end())
            c.fail_at(name_at, [&] { return what() + " name"; }, "duplicates tensor " + std::to_string(it->second));
        const std::uint64_t ndims_at = c.pos();
        const auto n_dims = c.read<std::uint32_t>([&] { return what() + " n_dims"; });
        if (n_dims > max_dims)
            c.fail_at(ndims_at, [&] { return what() + " n_dims"; },
                      std::to_string(n_dims) + " exceeds GGML_MAX_DIMS (" + std::to_string(max_dims) + ")");
        std::uint64_t n_elements = 1;
        for (std::uint32_t d = 0; d < n_dims; ++d) {
            const std::uint64_t dim_at = c.pos();
            const auto dim_what = [&] { return what() + " dims[" + std::to_string(d) + "]"; };
            const auto dim = c.read<std::uint64_t>(dim_what);
            if (dim == 0) c.fail_at(dim_at, dim_what, "is 0");
            constexpr auto max_elements = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
            if (dim > max_elements / n_elements)
                c.fail_at(dim_at, dim_what,
                          std::to_string(dim) + " makes the element count overflow int64");
            n_elements *= dim;
            t.shape.push_back(dim);
        }
        const std::uint64_t type_at = c.pos();
        const auto raw_type = c.read<std::uint32_t>([&] { return what() + " type"; });
        const auto traits = ggml::find_base_traits(raw_type);
        if (!traits)
            c.fail_at(type_at, [&] { return what() + " type"; },
                      std::to_string(raw_type) + " is not a ggml type this reader knows");
        t.type = traits->id;
        if (t.row_length() % traits->block_size != 0)
            c.fail_at(ndims_at, [&] { return what() + " dims[0]"; },
                      "row length " + std::to_string(t.row_length()) + " is not a multiple of the " +
                          std::string(traits->name) + " block size " + std::to_string(traits->block_size));
        const std::uint64_t n_blocks = n_elements / traits->block_size;
        if (n_blocks > std::numeric_limits<std::uint64_t>::max() / traits->type_size)
            c.fail_at(ndims_at, what, "byte size overflows 64 bits");
        t.size = n_blocks * traits->type_size;
        const std::uint64_t offset_at = c.pos();
        t.offset = c.read<std::uint64_t>([&] { return what() + " offset"; });
        if (t.offset % f.alignment_ != 0)
            c.fail_at(offset_at, [&] { return what() + " offset"; },
                      std::to_string(t.offset) + " is not a multiple of general.alignment (" +
                          std::to_string(f.alignment_) + ")");
        f.tensor_index_.emplace(t.name, f.tensors_.size());
        f.tensors_.push_back(std::move(t));
    }

    // Data section: every tensor inside the file, none overlapping.
    f.data_offset_ = align_up(c.pos(), f.alignment_);
    const std::uint64_t file_size = c.size();
    const auto tensor_what = [&](std::size_t i) {
        const auto& t = f.tensors_[i];
        return "tensor " + std::to_string(i) + " " + show_name(t.name) + ": data [offset " + std::to_string(t.offset) +
               ", " + std::to_string(t.size) + " bytes)";
    };
    for (std::size_t i = 0; i < f.tensors_.size(); ++i) {
        const auto& t = f.tensors_[i];
        const bool inside = f.data_offset_ <= file_size && t.offset <= file_size - f.data_offset_ &&
                            t.size <= file_size - f.data_offset_ - t.offset;
        if (!inside)
            throw_corrupt(source, tensor_what(i) + " at file byte " + std::to_string(f.data_offset_) + "+" +
                                      std::to_string(t.offset) + " runs past the end of the file (" +
                                      std::to_string(file_size) + " bytes)");
    }
    std::vector<std::size_t> order(f.tensors_.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return f.tensors_[a].offset != f.tensors_[b].offset ? f.tensors_[a].offset < f.tensors_[b].offset : a < b;
    });
    for (std::size_t k = 1; k < order.size(); ++k) {
        const auto& prev = f.tensors_[order[k - 1]];
        const auto& cur = f.tensors_[order[k]];
        if (prev.offset + prev.size > cur.offset) {
            const std::size_t later = std::max(order[k - 1], order[k]), earlier = std::min(order[k - 1], order[k]);
            throw_corrupt(source, tensor_what(later) + " at file byte " + std::to_string(f.data_offset_) + "+" +
                                      std::to_string(f.tensors_[later].offset) + " overlaps " + tensor_what(earlier));
        }
    }
    return f;
}

}  // namespace gguf::detail

/// Maps `path` read-only and validates it; errc::io if it cannot be opened,
/// errc::corrupt_file naming the field and byte offset of the first problem.
inline gguf_file read_gguf(const std::filesystem::path& path) {
    auto m = std::make_shared<const lowbit::detail::mapped_file>(path, "gguf");
    const auto bytes = m->bytes();
    return gguf::detail::parse(bytes, std::move(m), path.string());
}

/// Validates a GGUF image in memory. The bytes are not copied: they must
/// outlive the result.
inline gguf_file read_gguf_from_memory(std::span<const std::byte> bytes) {
    return gguf::detail::parse(bytes, nullptr, {});
}

/// Fills a tensor's bytes (given zeroed, exactly the tensor's size); lets a
/// converter produce one tensor at a time while the file is written.
using gguf_fill_fn = std::function<void(std::span<std::byte>)>;

/// Builds a GGUF v3 file from metadata and tensors. Tensors are laid out in
/// the order added, each at the next multiple of general.alignment.
class gguf_writer {
public:
    gguf_metadata& metadata() noexcept { return metadata_; }
    const gguf_metadata& metadata() const noexcept { return metadata_; }

    /// Stores general.alignment (uint32); must be a power of two.
    void set_alignment(std::uint32_t alignment) {
        if (!gguf::detail::is_power_of_two(alignment))
            gguf::detail::throw_invalid("alignment " + std::to_string(alignment) + " is not a power of two");
        metadata_.set("general.alignment", alignment);
    }

    /// `data` is not copied: it must stay valid until write() returns.
    void add_tensor(std::string name, std::vector<std::uint64_t> shape, ggml::type type,
                    std::span<const std::byte> data) {
        const std::uint64_t size = check_tensor(name, shape, type);
        if (data.size() != size)
            gguf::detail::throw_invalid("tensor " + gguf::detail::show_name(name) + ": " + std::to_string(data.size()) +
                                        " bytes given, its shape and type need " + std::to_string(size));
        push(std::move(name), std::move(shape), type, size, data, {});
    }
    void add_tensor(std::string name, std::vector<std::uint64_t> shape, ggml::type type, gguf_fill_fn fill) {
        const std::uint64_t size = check_tensor(name, shape, type);
        if (!fill) gguf::detail::throw_invalid("tensor " + gguf::detail::show_name(name) + ": empty fill function");
        push(std::move(name), std::move(shape), type, size, {}, std::move(fill));
    }

    /// Tensor infos as they will be written (offsets follow the current alignment).
    std::vector<gguf_tensor_info> tensors() const {
        const std::uint32_t align = alignment();
        std::vector<gguf_tensor_info> out;
        std::uint64_t offset = 0;
        for (const auto& t : tensors_) {
            out.push_back({t.name, t.shape, t.type, offset, t.size});
            offset = gguf::detail::align_up(offset + t.size, align);
        }
        return out;
    }

    /// Writes to a temporary file beside `path`, syncs it and renames it over
    /// `path` once complete; on any failure (including a throwing fill
    /// function, whose exception propagates) the temporary file is removed
    /// and `path` is untouched.
    void write(const std::filesystem::path& path) const;
    /// The same bytes write() would put in a file.
    std::vector<std::byte> write_to_memory() const {
        std::vector<std::byte> out;
        emit([&](std::span<const std::byte> b) { out.insert(out.end(), b.begin(), b.end()); });
        return out;
    }

    /// A writer holding `f`'s metadata and tensors (as spans into `f`, which
    /// must outlive it).
    static gguf_writer from(const gguf_file& f) {
        gguf_writer w;
        w.metadata_ = f.metadata();
        for (const auto& t : f.tensors()) w.add_tensor(t.name, t.shape, t.type, f.tensor(t));
        return w;
    }

private:
    struct pending {
        std::string name;
        std::vector<std::uint64_t> shape;
        ggml::type type;
        std::uint64_t size;
        std::span<const std::byte> data;
        gguf_fill_fn fill;
    };

    std::uint64_t check_tensor(const std::string& name, const std::vector<std::uint64_t>& shape, ggml::type type) const {
        using namespace gguf::detail;
        check_utf8(name, [] { return std::string("tensor name"); });
        const std::string what = "tensor " + show_name(name);
        if (name.size() > max_name_bytes)
            throw_invalid(what + ": name is " + std::to_string(name.size()) + " bytes, the limit is " +
                          std::to_string(max_name_bytes));
        if (names_.contains(name)) throw_invalid(what + " is already added");
        if (shape.size() > max_dims)
            throw_invalid(what + ": " + std::to_string(shape.size()) + " dims, GGML_MAX_DIMS is " +
                          std::to_string(max_dims));
        const auto traits = ggml::find_base_traits(static_cast<std::uint32_t>(type));
        if (!traits)
            throw_invalid(what + ": unknown ggml type " + std::to_string(static_cast<std::uint32_t>(type)));
        std::uint64_t n = 1;
        for (std::size_t d = 0; d < shape.size(); ++d) {
            if (shape[d] == 0) throw_invalid(what + ": dim " + std::to_string(d) + " is 0");
            if (shape[d] > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / n)
                throw_invalid(what + ": element count overflows int64");
            n *= shape[d];
        }
        const std::uint64_t row = shape.empty() ? 1 : shape[0];
        if (row % traits->block_size != 0)
            throw_invalid(what + ": row length " + std::to_string(row) + " is not a multiple of the " +
                          std::string(traits->name) + " block size " + std::to_string(traits->block_size));
        const std::uint64_t blocks = n / traits->block_size;
        if (blocks > std::numeric_limits<std::uint64_t>::max() / traits->type_size)
            throw_invalid(what + ": byte size overflows 64 bits");
        return blocks * traits->type_size;
    }

    void push(std::string name, std::vector<std::uint64_t> shape, ggml::type type, std::uint64_t size,
              std::span<const std::byte> data, gguf_fill_fn fill) {
        names_.insert(name);
        tensors_.push_back({std::move(name), std::move(shape), type, size, data, std::move(fill)});
    }

    // errc::invalid_argument naming the field (a callable, so the name is
    // only built on failure) unless `s` is valid UTF-8.
    template <class What>
    static void check_utf8(std::string_view s, What&& what) {
        if (const std::size_t bad = utf8::first_invalid(s); bad != s.size())
            gguf::detail::throw_invalid(std::string(what()) + " is not valid UTF-8 at byte " + std::to_string(bad) +
                                        ": " + gguf::detail::utf8_problem(s, bad));
    }

    std::uint32_t alignment() const {
        const gguf_value* a = metadata_.find("general.alignment");
        if (!a) return gguf::detail::default_alignment;
        const auto* u = std::get_if<std::uint32_t>(a);
        if (!u)
            gguf::detail::throw_invalid("general.alignment is " + std::string(to_string(type_of(*a))) +
                                        ", GGUF requires uint32");
        if (!gguf::detail::is_power_of_two(*u))
            gguf::detail::throw_invalid("general.alignment " + std::to_string(*u) + " is not a power of two");
        return *u;
    }

    static void put_string(std::vector<std::byte>& out, std::string_view s) {
        put(out, static_cast<std::uint64_t>(s.size()));
        const auto* p = reinterpret_cast<const std::byte*>(s.data());
        out.insert(out.end(), p, p + s.size());
    }
    template <class T>
    static void put(std::vector<std::byte>& out, T v) {
        std::byte b[sizeof(T)];
        gguf::detail::store_le(b, v);
        out.insert(out.end(), b, b + sizeof(T));
    }
    // `what` names the array in messages ("metadata 'k' value element 2").
    static void put_array(std::vector<std::byte>& out, const gguf_array& a, int depth, const std::string& what) {
        if (a.element_type() == gguf_type::array && depth + 1 >= gguf::detail::max_array_depth)
            gguf::detail::throw_invalid(what + ": arrays nested deeper than " +
                                        std::to_string(gguf::detail::max_array_depth) + " levels");
        put(out, static_cast<std::uint32_t>(a.element_type()));
        put(out, static_cast<std::uint64_t>(a.size()));
        std::visit(
            [&](const auto& items) {
                using T = typename std::decay_t<decltype(items)>::value_type;
                std::size_t i = 0;
                const auto element = [&] { return what + " element " + std::to_string(i); };
                for (const auto& x : items) {
                    if constexpr (std::is_same_v<T, std::string>) {
                        check_utf8(x, element);
                        put_string(out, x);
                    } else if constexpr (std::is_same_v<T, gguf_array>)
                        put_array(out, x, depth + 1, element());
                    else if constexpr (std::is_same_v<T, bool>)
                        put(out, static_cast<std::uint8_t>(x ? 1 : 0));
                    else
                        put(out, static_cast<T>(x));
                    ++i;
                }
            },
            a.items());
    }

    // Everything before the data section, padded to the alignment.
    std::vector<std::byte> header(std::uint32_t align, const std::vector<gguf_tensor_info>& infos) const {
        // Starting non-empty also keeps g++ 12's -Wstringop-overflow from
        // misreading the first insert into an empty vector.
        std::vector<std::byte> out{std::byte{'G'}, std::byte{'G'}, std::byte{'U'}, std::byte{'F'}};
        put(out, std::uint32_t{3});
        put(out, static_cast<std::uint64_t>(infos.size()));
        put(out, static_cast<std::uint64_t>(metadata_.size()));
        for (const auto& kv : metadata_) {
            if (kv.key.size() > gguf::detail::max_key_bytes)
                gguf::detail::throw_invalid("metadata key of " + std::to_string(kv.key.size()) +
                                            " bytes exceeds the limit of " +
                                            std::to_string(gguf::detail::max_key_bytes));
            check_utf8(kv.key, [] { return std::string("metadata key"); });
            put_string(out, kv.key);
            put(out, static_cast<std::uint32_t>(type_of(kv.value)));
            const auto what = [&] { return "metadata " + gguf::detail::show_name(kv.key) + " value"; };
            std::visit(
                [&](const auto& x) {
                    using T = std::decay_t<decltype(x)>;
                    if constexpr (std::is_same_v<T, std::string>) {
                        check_utf8(x, what);
                        put_string(out, x);
                    } else if constexpr (std::is_same_v<T, gguf_array>)
                        put_array(out, x, 0, what());
                    else if constexpr (std::is_same_v<T, bool>)
                        put(out, static_cast<std::uint8_t>(x ? 1 : 0));
                    else
                        put(out, x);
                },
                kv.value);
        }
        for (const auto& t : infos) {
            put_string(out, t.name);
            put(out, static_cast<std::uint32_t>(t.shape.size()));
            for (auto d : t.shape) put(out, d);
            put(out, static_cast<std::uint32_t>(t.type));
            put(out, t.offset);
        }
        out.resize(static_cast<std::size_t>(gguf::detail::align_up(out.size(), align)), std::byte{0});
        return out;
    }

    template <class Sink>
    void emit(Sink&& sink) const {
        const std::uint32_t align = alignment();
        const auto infos = tensors();
        sink(std::span<const std::byte>(header(align, infos)));
        std::vector<std::byte> buf;
        const std::vector<std::byte> zeros(align, std::byte{0});
        for (const auto& t : tensors_) {
            std::span<const std::byte> bytes = t.data;
            if (t.fill) {
                assign_or_throw(buf, static_cast<std::size_t>(t.size), std::byte{0}, "tensor " + gguf::detail::show_name(t.name));
                t.fill(std::span<std::byte>(buf));
                bytes = buf;
            }
            sink(bytes);
            // Every tensor, the last included, ends on the alignment, as ggml's writer does.
            const std::uint64_t pad = gguf::detail::align_up(t.size, align) - t.size;
            sink(std::span<const std::byte>(zeros).first(static_cast<std::size_t>(pad)));
        }
    }

    gguf_metadata metadata_;
    std::vector<pending> tensors_;
    std::unordered_set<std::string> names_;  // of tensors_, so add_tensor stays O(1) with 10^5 tensors
};

inline void gguf_writer::write(const std::filesystem::path& path) const {
    (void)alignment();  // validate before creating anything
    lowbit::detail::atomic_file tmp(path, "gguf");
    emit([&](std::span<const std::byte> b) { tmp.write(b); });
    tmp.commit();
}

LOWBIT_NAMESPACE_END
