#pragma once
// GGUF's value model: metadata value types, arrays, key/value pairs in file
// order, tensor infos; and the format's rules both the reader and the writer
// follow (limits, little-endian fields, alignment, UTF-8 messages). The file
// layout is described in gguf.hpp.

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

}  // namespace gguf::detail

LOWBIT_NAMESPACE_END
