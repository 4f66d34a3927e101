#pragma once
// safetensors files (huggingface's format): a reader that validates the
// header over a read-only memory map, and a writer that replaces its target
// only once the whole file is written.
//
// Layout: u64 little-endian N; N bytes of UTF-8 JSON, an object mapping each
// tensor name to {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// and optionally "__metadata__" to an object of string values; then the data
// section, where [begin, end) counts bytes from its start. Tensors are
// row-major and little-endian.
//
// The reader enforces what the reference implementation (huggingface/safetensors,
// safetensors/src/tensor.rs: SafeTensors::read_metadata, Metadata::validate)
// does: N at most 100,000,000 and inside the file; the header valid UTF-8 JSON
// (trailing whitespace allowed, so writers pad it with spaces); every
// tensor's end - begin equal to its element count times its dtype's size, with
// no overflow, and sub-byte dtypes filling whole bytes; the tensors, sorted by
// offsets, covering the data section exactly: the first begins at 0, each
// begins where the previous ends (no gap, no overlap) and the last ends at
// the end of the file. It is stricter in two places: duplicate keys anywhere
// in the header, which the reference's JSON decoding lets the last one win,
// are errors; and so is a header that is not a JSON object. Like the
// reference, it ignores unknown fields inside a tensor's entry and accepts
// "__metadata__": null as no metadata.

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/finite.hpp"
#include "../core/numeric.hpp"
#include "../core/storage.hpp"
#include "json.hpp"
#include "../core/utf8.hpp"
#include "../core/view.hpp"
#include "../detail/file_io.hpp"
#include "../detail/names.hpp"

LOWBIT_NAMESPACE_BEGIN

namespace safetensors {

/// Element types, in the reference's order (increasing alignment).
enum class dtype : std::uint8_t {
    boolean,
    f4,       ///< E2M1 (OCP MX FP4), two per byte
    f6_e2m3,  ///< OCP MX FP6, four per three bytes
    f6_e3m2,
    u8,
    i8,
    f8_e5m2,
    f8_e4m3,
    f8_e8m0,      ///< OCP MX scale: a power of two
    f8_e4m3fnuz,  ///< E4M3 without infinities or -0 (bias 8)
    f8_e5m2fnuz,  ///< E5M2 without infinities or -0 (bias 16)
    i16,
    u16,
    f16,
    bf16,
    i32,
    u32,
    f32,
    c64,  ///< complex: two f32
    f64,
    i64,
    u64,
};

inline constexpr std::array<dtype, 22> all_dtypes = {
    dtype::boolean,     dtype::f4,          dtype::f6_e2m3, dtype::f6_e3m2, dtype::u8,      dtype::i8,
    dtype::f8_e5m2,     dtype::f8_e4m3,     dtype::f8_e8m0, dtype::f8_e4m3fnuz, dtype::f8_e5m2fnuz,
    dtype::i16,         dtype::u16,         dtype::f16,     dtype::bf16,    dtype::i32,     dtype::u32,
    dtype::f32,         dtype::c64,         dtype::f64,     dtype::i64,     dtype::u64};

/// The name a header spells the dtype with ("F32", "BF16", "F8_E4M3", ...).
constexpr std::string_view to_string(dtype t) noexcept {
    switch (t) {
    case dtype::boolean: return "BOOL";
    case dtype::f4: return "F4";
    case dtype::f6_e2m3: return "F6_E2M3";
    case dtype::f6_e3m2: return "F6_E3M2";
    case dtype::u8: return "U8";
    case dtype::i8: return "I8";
    case dtype::f8_e5m2: return "F8_E5M2";
    case dtype::f8_e4m3: return "F8_E4M3";
    case dtype::f8_e8m0: return "F8_E8M0";
    case dtype::f8_e4m3fnuz: return "F8_E4M3FNUZ";
    case dtype::f8_e5m2fnuz: return "F8_E5M2FNUZ";
    case dtype::i16: return "I16";
    case dtype::u16: return "U16";
    case dtype::f16: return "F16";
    case dtype::bf16: return "BF16";
    case dtype::i32: return "I32";
    case dtype::u32: return "U32";
    case dtype::f32: return "F32";
    case dtype::c64: return "C64";
    case dtype::f64: return "F64";
    case dtype::i64: return "I64";
    case dtype::u64: return "U64";
    }
    return "?";
}

/// The dtype a header name spells (exact, case-sensitive), or nullopt.
constexpr std::optional<dtype> parse_dtype(std::string_view name) noexcept {
    for (const dtype t : all_dtypes)
        if (to_string(t) == name) return t;
    return std::nullopt;
}

/// Bits per element.
constexpr unsigned bit_size(dtype t) noexcept {
    switch (t) {
    case dtype::f4: return 4;
    case dtype::f6_e2m3:
    case dtype::f6_e3m2: return 6;
    case dtype::boolean:
    case dtype::u8:
    case dtype::i8:
    case dtype::f8_e5m2:
    case dtype::f8_e4m3:
    case dtype::f8_e8m0:
    case dtype::f8_e4m3fnuz:
    case dtype::f8_e5m2fnuz: return 8;
    case dtype::i16:
    case dtype::u16:
    case dtype::f16:
    case dtype::bf16: return 16;
    case dtype::i32:
    case dtype::u32:
    case dtype::f32: return 32;
    case dtype::c64:
    case dtype::f64:
    case dtype::i64:
    case dtype::u64: return 64;
    }
    return 8;
}

/// Bytes per element; 0 for the sub-byte dtypes (F4, F6_*), whose tensors
/// must hold a whole number of bytes: see byte_size().
constexpr std::size_t size(dtype t) noexcept { return bit_size(t) % 8 == 0 ? bit_size(t) / 8 : 0; }

/// Bytes `numel` elements take, or nullopt if that overflows 64 bits or is
/// not a whole number of bytes.
constexpr std::optional<std::uint64_t> byte_size(dtype t, std::uint64_t numel) noexcept {
    const std::uint64_t bits = bit_size(t);
    if (numel > std::numeric_limits<std::uint64_t>::max() / bits) return std::nullopt;
    if (numel * bits % 8 != 0) return std::nullopt;
    return numel * bits / 8;
}

/// The element count of `shape` (1 for a scalar), or nullopt on overflow.
constexpr std::optional<std::uint64_t> element_count(std::span<const std::uint64_t> shape) noexcept {
    std::uint64_t n = 1;
    bool zero = false;
    for (const auto d : shape) zero = zero || d == 0;
    if (zero) return 0;
    for (const auto d : shape) {
        if (d > std::numeric_limits<std::uint64_t>::max() / n) return std::nullopt;
        n *= d;
    }
    return n;
}

class file;

/// One tensor as a header describes it.
struct tensor_info {
    std::string name;
    safetensors::dtype dtype = safetensors::dtype::f32;
    std::vector<std::uint64_t> shape;
    std::uint64_t begin = 0;  ///< data_offsets[0]: from the start of the data section
    std::uint64_t end = 0;    ///< data_offsets[1]

    /// Elements (1 for shape []); validated not to overflow for tensors of a file.
    std::uint64_t numel() const noexcept { return element_count(shape).value_or(0); }
    /// Bytes: end - begin.
    std::uint64_t size() const noexcept { return end - begin; }
    /// The tensor's bytes, for tensors of a file (they stay valid while any
    /// copy of the file exists); empty for a writer's plan.
    std::span<const std::byte> data() const noexcept { return data_; }

    friend bool operator==(const tensor_info& a, const tensor_info& b) noexcept {
        return a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.begin == b.begin && a.end == b.end;
    }

private:
    friend class file;
    std::span<const std::byte> data_;
};

/// How an F32, F16 or BF16 tensor stores its values; errc::invalid_argument
/// naming `what` (the tensor's quoted name when empty) for any other dtype.
inline float_storage float_storage_of(const tensor_info& t, const std::string& what = {}) {
    switch (t.dtype) {
    case dtype::f32: return float_storage::f32;
    case dtype::f16: return float_storage::f16;
    case dtype::bf16: return float_storage::bf16;
    default: break;
    }
    LOWBIT_THROW(errc::invalid_argument, (what.empty() ? "'" + t.name + "'" : what) + " is " +
                                             std::string(to_string(t.dtype)) + ", not F32, F16 or BF16");
    std::abort();
}

/// errc::non_finite naming the row and column (of the last dimension) of a
/// float tensor's first NaN or infinity, after `what` when given; the dtype
/// checked as float_storage_of does.
inline void check_finite(const tensor_info& t, const std::string& what = {}) {
    const float_storage fs = float_storage_of(t, what);
    const std::byte* p = t.data().data();
    const std::size_t n = static_cast<std::size_t>(t.numel()), bad = first_non_finite(fs, p, n);
    if (bad == n) return;
    const std::size_t cols = t.shape.size() >= 2 && t.shape.back() ? static_cast<std::size_t>(t.shape.back()) : n;
    LOWBIT_THROW(errc::non_finite, (what.empty() ? std::string() : what + ": ") + "row " + std::to_string(bad / cols) +
                                       ", column " + std::to_string(bad % cols) + " is " +
                                       lowbit::detail::value_string(float_at(fs, p, bad)));
}

/// A float tensor's values (f32, f16 or bf16 widened to float), checked as
/// check_finite does.
inline std::vector<float> finite_floats(const tensor_info& t) {
    check_finite(t);
    const float_storage fs = float_storage_of(t);
    const std::byte* p = t.data().data();
    const std::size_t n = static_cast<std::size_t>(t.numel());
    std::vector<float> out(n);
    if (fs == float_storage::f32) {
        std::memcpy(out.data(), p, n * 4);
    } else {
        for (std::size_t i = 0; i < n; ++i) out[i] = float_at(fs, p, i);
    }
    return out;
}

/// An I32 or U32 tensor's 32-bit words (checkpoints declare packed codes
/// int32; the bit patterns are what matter).
inline std::vector<std::uint32_t> words_of(const tensor_info& t) {
    if (t.dtype != dtype::i32 && t.dtype != dtype::u32)
        LOWBIT_THROW(errc::invalid_argument, "words_of: " + std::string(to_string(t.dtype)) + " is not I32 or U32");
    std::vector<std::uint32_t> w(static_cast<std::size_t>(t.numel()));
    std::memcpy(w.data(), t.data().data(), w.size() * 4);
    return w;
}

/// 32-bit words as the bytes of an I32 or U32 tensor.
inline std::vector<std::byte> word_bytes(std::span<const std::uint32_t> w) {
    std::vector<std::byte> b(w.size() * 4);
    std::memcpy(b.data(), w.data(), b.size());
    return b;
}

/// `v` as the bytes of an F32, F16 or BF16 tensor (16-bit types rounded to
/// nearest even).
inline std::vector<std::byte> float_bytes(std::span<const float> v, dtype t) {
    const std::size_t esize = t == dtype::f32 ? 4 : 2;
    if (t != dtype::f32 && t != dtype::f16 && t != dtype::bf16)
        LOWBIT_THROW(errc::invalid_argument, "float_bytes: " + std::string(to_string(t)) + " is not F32, F16 or BF16");
    std::vector<std::byte> out(v.size() * esize);
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (t == dtype::f32) {
            std::memcpy(out.data() + 4 * i, &v[i], 4);
        } else {
            const std::uint16_t h = t == dtype::f16 ? float_to_fp16(v[i]) : float_to_bf16(v[i]);
            std::memcpy(out.data() + 2 * i, &h, 2);
        }
    }
    return out;
}

/// The value a tensor of dtype t (F32, F16 or BF16) holds for x: x rounded
/// to nearest even in the 16-bit types, as torch rounds each operation's
/// float result in them.
inline float stored_value(float x, dtype t) noexcept {
    return stored_as(t == dtype::bf16 ? float_storage::bf16 : t == dtype::f16 ? float_storage::f16 : float_storage::f32,
                     x);
}

/// Whether a tensor is the weight of a linear layer as transformers'
/// quantizers (bitsandbytes, HQQ) find them: a 2-D F32/F16/BF16 tensor named
/// "*.weight" (or "weight"), leaving out embeddings (names with "embed",
/// "wte", "wpe") and the output head ("lm_head") unless `include_embeddings`.
inline bool is_linear_weight(const tensor_info& t, bool include_embeddings = false) {
    if (t.dtype != dtype::f32 && t.dtype != dtype::f16 && t.dtype != dtype::bf16) return false;
    if (t.shape.size() != 2 || t.numel() == 0) return false;
    const std::string_view n = t.name;
    if (!n.ends_with(".weight") && n != "weight") return false;
    if (!include_embeddings)
        for (std::string_view k : {"embed", "wte", "wpe", "lm_head"})
            if (n.find(k) != std::string_view::npos) return false;
    return true;
}

/// The reference's limit on the header length.
inline constexpr std::uint64_t max_header_size = 100'000'000;

namespace detail {

using lowbit::detail::show_name;

inline std::string show_shape(std::span<const std::uint64_t> shape) {
    std::string out = "[";
    for (std::size_t i = 0; i < shape.size(); ++i) {
        if (i) out += ", ";
        out += std::to_string(shape[i]);
    }
    return out + "]";
}

inline std::string dtype_names() {
    std::string out;
    for (const dtype t : all_dtypes) {
        if (!out.empty()) out += ", ";
        out += to_string(t);
    }
    return out;
}

[[noreturn]] inline void throw_corrupt(const std::string& prefix, const std::string& what) {
    LOWBIT_THROW(errc::corrupt_file, prefix + what);
    std::abort();
}

// Empty if `s` is valid UTF-8, else where and what its first bad byte is
// (the bad string itself is not shown: its valid prefix is).
inline std::string utf8_problem(std::string_view s) {
    const std::size_t bad = utf8::first_invalid(s);
    if (bad == s.size()) return {};
    static constexpr char hex[] = "0123456789abcdef";
    const auto c = static_cast<unsigned char>(s[bad]);
    return "is not valid UTF-8: byte " + std::to_string(bad) + " (0x" + hex[c >> 4] + hex[c & 15] + ", after " +
           show_name(s.substr(0, bad)) + ") starts no well-formed sequence";
}

using lowbit::detail::edit_distance;

}  // namespace detail

/// A validated safetensors file. Copies share the mapped bytes, which stay
/// mapped while any copy exists. (As with any memory map, another process
/// truncating the file meanwhile is not caught.)
class file {
public:
    /// Maps `path` read-only and validates it: errc::io if it cannot be read,
    /// errc::corrupt_file naming the field, tensor and file byte offset of the
    /// first problem.
    static file open(const std::filesystem::path& path) {
        auto m = std::make_shared<const lowbit::detail::mapped_file>(path, "safetensors");
        const auto bytes = m->bytes();
        return parse(bytes, std::move(m), path.string());
    }
    /// Validates an image in memory. The bytes are not copied: they must
    /// outlive the result.
    static file from_memory(std::span<const std::byte> bytes) { return parse(bytes, nullptr, {}); }

    /// Tensors in header order.
    std::span<const tensor_info> tensors() const noexcept { return s_->tensors; }
    /// Tensors in data-section order (by offset).
    std::vector<const tensor_info*> tensors_by_offset() const {
        std::vector<const tensor_info*> out;
        out.reserve(s_->by_offset.size());
        for (const auto i : s_->by_offset) out.push_back(&s_->tensors[i]);
        return out;
    }
    std::size_t size() const noexcept { return s_->tensors.size(); }

    const tensor_info* find(std::string_view name) const {
        const auto it = s_->index.find(name);
        return it == s_->index.end() ? nullptr : &s_->tensors[it->second];
    }
    /// errc::invalid_argument naming the tensor (and the closest names) if there is none.
    const tensor_info& at(std::string_view name) const {
        if (const auto* t = find(name)) return *t;
        std::string msg = "safetensors: no tensor named " + detail::show_name(name);
        if (!s_->source.empty()) msg += " in '" + s_->source + "'";
        const auto near = close_names(name);
        for (std::size_t i = 0; i < near.size(); ++i) {
            msg += i ? ", " : "; did you mean ";
            msg += detail::show_name(near[i]);
        }
        if (!near.empty()) msg += "?";
        LOWBIT_THROW(errc::invalid_argument, msg);
        std::abort();
    }

    /// "__metadata__" pairs in header order (empty if there are none).
    std::span<const std::pair<std::string, std::string>> metadata() const noexcept { return s_->metadata; }
    /// Whether the header has a "__metadata__" object (possibly empty).
    bool has_metadata() const noexcept { return s_->has_metadata; }
    const std::string* find_metadata(std::string_view key) const {
        const auto it = s_->metadata_index.find(key);
        return it == s_->metadata_index.end() ? nullptr : &s_->metadata[it->second].second;
    }

    /// N, the header's length in bytes (padding included).
    std::uint64_t header_size() const noexcept { return s_->header_size; }
    /// The header's JSON text (padding included).
    std::string_view header_text() const noexcept {
        return {reinterpret_cast<const char*>(s_->bytes.data() + 8), static_cast<std::size_t>(s_->header_size)};
    }
    /// File offset of the data section: 8 + N.
    std::uint64_t data_offset() const noexcept { return 8 + s_->header_size; }
    /// The whole file.
    std::span<const std::byte> bytes() const noexcept { return s_->bytes; }

private:
    struct state {
        std::shared_ptr<const lowbit::detail::byte_owner> owner;
        std::span<const std::byte> bytes;
        std::string source;
        std::uint64_t header_size = 0;
        std::vector<tensor_info> tensors;
        std::vector<std::size_t> by_offset;
        std::unordered_map<std::string_view, std::size_t> index;  // views into tensors[i].name
        std::vector<std::pair<std::string, std::string>> metadata;
        std::unordered_map<std::string_view, std::size_t> metadata_index;  // views into metadata[i].first
        bool has_metadata = false;
    };

    explicit file(std::shared_ptr<const state> s) : s_(std::move(s)) {}

    std::vector<std::string_view> close_names(std::string_view name) const {
        // Bounded work on the error path: names of similar length only.
        const std::size_t limit = std::max<std::size_t>(2, name.size() / 4);
        std::vector<std::pair<std::size_t, std::string_view>> near;
        for (const auto& t : s_->tensors) {
            const std::string_view n = t.name;
            const std::size_t len_gap = n.size() > name.size() ? n.size() - name.size() : name.size() - n.size();
            if (len_gap > limit || n.size() > 256 || name.size() > 256) continue;
            const std::size_t d = detail::edit_distance(name, n);
            if (d <= limit) near.emplace_back(d, n);
        }
        std::stable_sort(near.begin(), near.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        std::vector<std::string_view> out;
        for (std::size_t i = 0; i < near.size() && i < 3; ++i) out.push_back(near[i].second);
        return out;
    }

    static file parse(std::span<const std::byte> bytes, std::shared_ptr<const lowbit::detail::byte_owner> owner,
                      std::string_view source);

    std::shared_ptr<const state> s_;
};

inline file file::parse(std::span<const std::byte> bytes, std::shared_ptr<const lowbit::detail::byte_owner> owner,
                        std::string_view source) {
    using detail::show_name;
    auto s = std::make_shared<state>();
    s->owner = std::move(owner);
    s->bytes = bytes;
    s->source = std::string(source);
    const std::string prefix = source.empty() ? std::string() : std::string(source) + ": ";
    const auto corrupt = [&](const std::string& what) { detail::throw_corrupt(prefix, what); };
    const std::uint64_t file_size = bytes.size();

    // Header length.
    if (file_size < 8)
        corrupt("header length at byte 0: the file has " + std::to_string(file_size) +
                " bytes, fewer than the 8 of the header length (truncated?)");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | std::to_integer<std::uint64_t>(bytes[static_cast<std::size_t>(i)]);
    if (n > max_header_size)
        corrupt("header length at byte 0: " + std::to_string(n) + " exceeds the limit of " +
                std::to_string(max_header_size) + " bytes");
    if (n > file_size - 8)
        corrupt("header length at byte 0: " + std::to_string(n) + " bytes of header run past the end of the file (" +
                std::to_string(file_size - 8) + " bytes follow the length; truncated?)");
    s->header_size = n;
    const std::uint64_t data_start = 8 + n;
    const std::uint64_t data_size = file_size - data_start;

    // Header JSON.
    const std::string json_what = prefix + "header";
    json::parse_options opt;
    opt.what = json_what;
    opt.offset_base = 8;
    const std::string_view text(reinterpret_cast<const char*>(bytes.data() + 8), static_cast<std::size_t>(n));
    const json::value root = json::parse(text, opt);
    if (!root.is_object())
        corrupt("header at byte " + std::to_string(root.offset()) + ": is a JSON " +
                std::string(json::to_string(root.type())) + ", not an object");

    const auto at = [](std::uint64_t offset) { return " at byte " + std::to_string(offset); };
    s->tensors.reserve(root.size());
    std::vector<std::uint64_t> tensor_offsets;  // where each tensor's key starts, for messages
    tensor_offsets.reserve(root.size());
    for (const auto& m : root.members()) {
        if (m.key == "__metadata__") {
            const json::value& md = m.value;
            if (md.is_null()) continue;
            if (!md.is_object())
                corrupt("__metadata__" + at(md.offset()) + ": is a JSON " + std::string(json::to_string(md.type())) +
                        ", not an object of strings");
            s->has_metadata = true;
            for (const auto& kv : md.members()) {
                if (!kv.value.is_string())
                    corrupt("__metadata__ value of " + show_name(kv.key) + at(kv.value.offset()) + ": is a JSON " +
                            std::string(json::to_string(kv.value.type())) + ", not a string");
                s->metadata.emplace_back(kv.key, kv.value.as_string());
            }
            continue;
        }
        const std::string what = "tensor " + show_name(m.key);
        const json::value& e = m.value;
        if (!e.is_object())
            corrupt(what + at(e.offset()) + ": entry is a JSON " + std::string(json::to_string(e.type())) +
                    ", not an object with dtype, shape and data_offsets");
        const auto field = [&](std::string_view key) -> const json::value& {
            const json::value* v = e.find(key);
            if (!v) corrupt(what + at(e.offset()) + ": entry has no \"" + std::string(key) + "\"");
            return *v;
        };
        tensor_info t;
        t.name = m.key;

        const json::value& dt = field("dtype");
        if (!dt.is_string())
            corrupt(what + " dtype" + at(dt.offset()) + ": is a JSON " + std::string(json::to_string(dt.type())) +
                    ", not a string");
        const auto parsed = parse_dtype(dt.as_string());
        if (!parsed)
            corrupt(what + " dtype" + at(dt.offset()) + ": " + show_name(dt.as_string()) +
                    " is not a safetensors dtype (" + detail::dtype_names() + ")");
        t.dtype = *parsed;

        const json::value& sh = field("shape");
        if (!sh.is_array())
            corrupt(what + " shape" + at(sh.offset()) + ": is a JSON " + std::string(json::to_string(sh.type())) +
                    ", not an array");
        t.shape.reserve(sh.size());
        for (std::size_t i = 0; i < sh.size(); ++i) {
            const json::value& d = sh[i];
            const auto u = d.to_u64();
            if (!u)
                corrupt(what + " shape[" + std::to_string(i) + "]" + at(d.offset()) + ": " +
                        (d.is_number() ? d.number_text() : "a JSON " + std::string(json::to_string(d.type()))) +
                        " is not an integer in [0, 2^64)");
            t.shape.push_back(*u);
        }
        const auto numel = element_count(t.shape);
        if (!numel)
            corrupt(what + " shape" + at(sh.offset()) + ": " + detail::show_shape(t.shape) +
                    " has more than 2^64-1 elements");
        const std::uint64_t bits = bit_size(t.dtype);
        if (*numel > std::numeric_limits<std::uint64_t>::max() / bits)
            corrupt(what + " shape" + at(sh.offset()) + ": " + detail::show_shape(t.shape) + " of " +
                    std::string(to_string(t.dtype)) + " has more than 2^64-1 bits");
        if (*numel * bits % 8 != 0)
            corrupt(what + " shape" + at(sh.offset()) + ": " + std::to_string(*numel) + " elements of " +
                    std::string(to_string(t.dtype)) + " (" + std::to_string(bits) +
                    " bits each) do not fill a whole number of bytes");
        const std::uint64_t nbytes = *numel * bits / 8;

        const json::value& off = field("data_offsets");
        if (!off.is_array() || off.size() != 2)
            corrupt(what + " data_offsets" + at(off.offset()) + ": " +
                    (off.is_array() ? "has " + std::to_string(off.size()) + " entries"
                                    : "is a JSON " + std::string(json::to_string(off.type()))) +
                    ", not [begin, end]");
        for (std::size_t i = 0; i < 2; ++i)
            if (!off[i].to_u64())
                corrupt(what + " data_offsets[" + std::to_string(i) + "]" + at(off[i].offset()) + ": " +
                        (off[i].is_number() ? off[i].number_text()
                                            : "a JSON " + std::string(json::to_string(off[i].type()))) +
                        " is not an integer in [0, 2^64)");
        t.begin = *off[0].to_u64();
        t.end = *off[1].to_u64();
        const std::string range = "[" + std::to_string(t.begin) + ", " + std::to_string(t.end) + ")";
        if (t.end < t.begin)
            corrupt(what + " data_offsets" + at(off.offset()) + ": end " + std::to_string(t.end) +
                    " is before begin " + std::to_string(t.begin));
        if (t.end - t.begin != nbytes)
            corrupt(what + " data_offsets" + at(off.offset()) + ": " + range + " holds " +
                    std::to_string(t.end - t.begin) + " bytes, but shape " + detail::show_shape(t.shape) + " of " +
                    std::string(to_string(t.dtype)) + " needs " + std::to_string(nbytes));
        if (t.end > data_size)
            corrupt(what + " data_offsets" + at(off.offset()) + ": " + range +
                    " runs past the end of the data section (" + std::to_string(data_size) +
                    " bytes from file byte " + std::to_string(data_start) + " to the end of the file at " +
                    std::to_string(file_size) + "; truncated?)");
        t.data_ = bytes.subspan(static_cast<std::size_t>(data_start + t.begin), static_cast<std::size_t>(nbytes));
        s->tensors.push_back(std::move(t));
        tensor_offsets.push_back(m.key_offset);
    }

    // The tensors, by offset, tile the data section.
    auto& order = s->by_offset;
    order.resize(s->tensors.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    const auto& ts = s->tensors;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
        return ts[a].begin != ts[b].begin ? ts[a].begin < ts[b].begin : ts[a].end < ts[b].end;
    });
    const auto describe = [&](std::size_t i) {
        return "tensor " + show_name(ts[i].name) + at(tensor_offsets[i]) + " (data_offsets [" +
               std::to_string(ts[i].begin) + ", " + std::to_string(ts[i].end) + "))";
    };
    std::uint64_t covered = 0;
    for (std::size_t k = 0; k < order.size(); ++k) {
        const auto& t = ts[order[k]];
        if (t.begin > covered)
            corrupt("data section bytes [" + std::to_string(covered) + ", " + std::to_string(t.begin) +
                    ") (file bytes from " + std::to_string(data_start + covered) +
                    ") belong to no tensor: a gap before " + describe(order[k]));
        if (t.begin < covered)
            corrupt(describe(order[k]) + " overlaps " + describe(order[k - 1]));
        covered = t.end;
    }
    if (covered != data_size)
        corrupt("data section bytes [" + std::to_string(covered) + ", " + std::to_string(data_size) +
                ") (file bytes from " + std::to_string(data_start + covered) +
                ") belong to no tensor: the tensors end before the file does");

    for (std::size_t i = 0; i < s->tensors.size(); ++i) {
        if (!s->index.emplace(s->tensors[i].name, i).second)
            corrupt("tensor " + show_name(s->tensors[i].name) + " appears twice");  // unreachable: keys are unique
    }
    for (std::size_t i = 0; i < s->metadata.size(); ++i)
        s->metadata_index.emplace(s->metadata[i].first, i);  // keys are unique: the JSON parser checked
    return file(std::move(s));
}

/// Fills a tensor's bytes (given zeroed, exactly the tensor's size): lets a
/// converter produce one tensor at a time while the file is written.
using fill_fn = std::function<void(std::span<std::byte>)>;

/// Builds a safetensors file. The header lists "__metadata__" first (if any
/// metadata is set), then the tensors in the order added; the data section
/// holds them by decreasing element size (stable), so with the header padded
/// with spaces to a multiple of 8 every tensor starts at a file offset that
/// is a multiple of its element size, as the reference writer arranges.
class writer {
public:
    writer() = default;
    /// finish() writes to `destination`.
    explicit writer(std::filesystem::path destination) : destination_(std::move(destination)) {}

    /// `data` is not copied: it must stay valid until finish() returns.
    void add(std::string name, dtype type, std::vector<std::uint64_t> shape, std::span<const std::byte> data) {
        const std::uint64_t size = check(name, type, shape);
        check_size(name, type, shape, size, data.size());
        names_.insert(name);
        tensors_.push_back({std::move(name), type, std::move(shape), size, data, {}, {}});
    }
    /// The writer keeps `data` (a temporary buffer is safe here).
    void add(std::string name, dtype type, std::vector<std::uint64_t> shape, std::vector<std::byte>&& data) {
        const std::uint64_t size = check(name, type, shape);
        check_size(name, type, shape, size, data.size());
        names_.insert(name);
        tensors_.push_back({std::move(name), type, std::move(shape), size, {}, {}, std::move(data)});
        tensors_.back().data = tensors_.back().owned;  // a moved vector keeps its buffer
    }
    /// `fill` is called once, from finish(), with the tensor's zeroed bytes.
    void add(std::string name, dtype type, std::vector<std::uint64_t> shape, fill_fn fill) {
        const std::uint64_t size = check(name, type, shape);
        if (!fill)
            LOWBIT_THROW(errc::invalid_argument,
                         "safetensors writer: tensor " + detail::show_name(name) + ": empty fill function");
        names_.insert(name);
        tensors_.push_back({std::move(name), type, std::move(shape), size, {}, std::move(fill), {}});
    }

    /// Sets (or replaces) a "__metadata__" pair.
    void set_metadata(std::string key, std::string value) {
        if (const auto p = detail::utf8_problem(key); !p.empty())
            LOWBIT_THROW(errc::invalid_argument, "safetensors writer: metadata key " + p);
        if (const auto p = detail::utf8_problem(value); !p.empty())
            LOWBIT_THROW(errc::invalid_argument,
                         "safetensors writer: metadata value of " + detail::show_name(key) + " " + p);
        const auto [it, added] = metadata_index_.try_emplace(key, metadata_.size());
        if (!added) {
            metadata_[it->second].second = std::move(value);
            return;
        }
        metadata_.emplace_back(std::move(key), std::move(value));
    }
    std::span<const std::pair<std::string, std::string>> metadata() const noexcept { return metadata_; }

    /// The tensors as the header will list them, with their data offsets.
    std::vector<tensor_info> tensors() const {
        std::vector<tensor_info> out;
        out.reserve(tensors_.size());
        for (const auto& p : tensors_) {
            tensor_info t;
            t.name = p.name;
            t.dtype = p.type;
            t.shape = p.shape;
            out.push_back(std::move(t));
        }
        std::uint64_t offset = 0;
        for (const auto i : data_order()) {
            out[i].begin = offset;
            out[i].end = offset + tensors_[i].size;
            offset = out[i].end;
        }
        return out;
    }

    /// The header's JSON, padded with spaces to a multiple of 8 bytes.
    std::string header() const {
        const auto infos = tensors();
        json::value root = json::value::object();
        if (!metadata_.empty()) {
            json::value md = json::value::object();
            for (const auto& kv : metadata_) md.members().push_back({kv.first, kv.second, 0});
            root.members().push_back({"__metadata__", std::move(md), 0});
        }
        for (const auto& t : infos) {
            json::value shape = json::value::array();
            for (const auto d : t.shape) shape.push_back(d);
            json::value e = json::value::object();
            e.members().push_back({"dtype", std::string(to_string(t.dtype)), 0});
            e.members().push_back({"shape", std::move(shape), 0});
            e.members().push_back({"data_offsets", json::value::array({t.begin, t.end}), 0});
            root.members().push_back({t.name, std::move(e), 0});
        }
        std::string text = json::dump(root);
        text.resize((text.size() + 7) / 8 * 8, ' ');
        if (text.size() > max_header_size)
            LOWBIT_THROW(errc::invalid_argument, "safetensors writer: the header is " + std::to_string(text.size()) +
                                                     " bytes, over the limit of " + std::to_string(max_header_size));
        return text;
    }

    /// Writes the file to "<destination>.tmp.<pid>.<n>", syncs it and renames
    /// it over the destination; on any failure (a throwing fill function's
    /// exception propagates) the temporary file is removed and the destination
    /// is untouched. errc::invalid_argument if the writer has no destination.
    void finish() const {
        if (destination_.empty())
            LOWBIT_THROW(errc::invalid_argument, "safetensors writer: no destination path (use to_bytes())");
        const std::string h = header();  // validate before creating anything
        lowbit::detail::atomic_file out(destination_, "safetensors");
        emit(h, [&](std::span<const std::byte> b) { out.write(b); });
        out.commit();
    }

    /// The bytes finish() would write.
    std::vector<std::byte> to_bytes() const {
        std::vector<std::byte> out;
        emit(header(), [&](std::span<const std::byte> b) { out.insert(out.end(), b.begin(), b.end()); });
        return out;
    }

private:
    struct pending {
        std::string name;
        dtype type;
        std::vector<std::uint64_t> shape;
        std::uint64_t size;
        std::span<const std::byte> data;
        fill_fn fill;
        std::vector<std::byte> owned;  // backs `data` for add(..., std::vector<std::byte>&&)
    };

    static void check_size(const std::string& name, dtype type, const std::vector<std::uint64_t>& shape,
                           std::uint64_t size, std::size_t given) {
        if (given != size)
            LOWBIT_THROW(errc::shape_mismatch, "safetensors writer: tensor " + detail::show_name(name) + ": " +
                                                   std::to_string(given) + " bytes given, shape " +
                                                   detail::show_shape(shape) + " of " +
                                                   std::string(to_string(type)) + " needs " + std::to_string(size));
    }

    std::uint64_t check(const std::string& name, dtype type, const std::vector<std::uint64_t>& shape) const {
        const std::string what = "safetensors writer: tensor " + detail::show_name(name);
        if (name.empty()) LOWBIT_THROW(errc::invalid_argument, "safetensors writer: empty tensor name");
        if (name.starts_with("__"))
            LOWBIT_THROW(errc::invalid_argument,
                         what + ": names starting with \"__\" are reserved (\"__metadata__\" holds the metadata)");
        if (const auto p = detail::utf8_problem(name); !p.empty())
            LOWBIT_THROW(errc::invalid_argument, "safetensors writer: tensor name " + p);
        if (names_.contains(name)) LOWBIT_THROW(errc::invalid_argument, what + " is already added");
        if (static_cast<unsigned>(type) >= all_dtypes.size())
            LOWBIT_THROW(errc::invalid_argument,
                         what + ": dtype " + std::to_string(static_cast<unsigned>(type)) + " is not a safetensors dtype");
        const auto numel = element_count(shape);
        if (!numel) LOWBIT_THROW(errc::invalid_argument, what + ": shape " + detail::show_shape(shape) + " overflows");
        const auto bytes = byte_size(type, *numel);
        if (!bytes)
            LOWBIT_THROW(errc::invalid_argument, what + ": " + std::to_string(*numel) + " elements of " +
                                                     std::string(to_string(type)) +
                                                     " overflow or do not fill a whole number of bytes");
        return *bytes;
    }

    std::vector<std::size_t> data_order() const {
        std::vector<std::size_t> order(tensors_.size());
        for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
        std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
            return bit_size(tensors_[a].type) > bit_size(tensors_[b].type);
        });
        return order;
    }

    template <class Sink>
    void emit(const std::string& header_text, Sink&& sink) const {
        std::byte len[8];
        const auto n = static_cast<std::uint64_t>(header_text.size());
        for (int i = 0; i < 8; ++i) len[i] = static_cast<std::byte>((n >> (8 * i)) & 0xff);
        sink(std::span<const std::byte>(len, 8));
        sink(std::span<const std::byte>(reinterpret_cast<const std::byte*>(header_text.data()), header_text.size()));
        std::vector<std::byte> buf;
        for (const auto i : data_order()) {
            const auto& t = tensors_[i];
            if (t.fill) {
                assign_or_throw(buf, static_cast<std::size_t>(t.size), std::byte{0}, "tensor '" + t.name + "'");
                t.fill(std::span<std::byte>(buf));
                sink(std::span<const std::byte>(buf));
            } else {
                sink(t.data);
            }
        }
    }

    std::filesystem::path destination_;
    std::vector<pending> tensors_;
    std::unordered_set<std::string> names_;  // of tensors_, so add() stays O(1) with 10^5 tensors
    std::vector<std::pair<std::string, std::string>> metadata_;
    std::unordered_map<std::string, std::size_t> metadata_index_;  // key -> position in metadata_
};

/// What rewrite() did: tensors read, tensors converted (quantized), bytes in
/// and out, and the elements of the converted tensors.
struct rewrite_counts {
    std::size_t tensors = 0, quantized = 0;
    std::uint64_t bytes_in = 0, bytes_out = 0;
    std::uint64_t weights_quantized = 0;
};

/// Called after each tensor by rewrite(): (index, count, name, converted).
using rewrite_progress = std::function<void(std::size_t, std::size_t, const std::string&, bool)>;

/// A checkpoint rewritten tensor by tensor into `out` (written atomically;
/// the metadata copied): convert(t, w) either writes its own entries for
/// tensor t to w and returns true (the bytes it hands w must live until
/// rewrite returns), or returns false and t is copied unchanged. An error
/// while converting names the file and the tensor; a failed allocation is an
/// out-of-memory error estimating bytes_per_element per element of the tensor.
template <class Convert>
rewrite_counts rewrite(const std::filesystem::path& in, const std::filesystem::path& out, Convert&& convert,
                       std::uint64_t bytes_per_element, const rewrite_progress& progress = {}) {
    lowbit::detail::check_output_target(out, "safetensors", {{"input", &in}});
    const auto src = file::open(in);
    writer w(out);
    for (const auto& kv : src.metadata()) w.set_metadata(kv.first, kv.second);
    rewrite_counts c;
    const auto tensors = src.tensors();
    for (std::size_t i = 0; i < tensors.size(); ++i) {
        const auto& t = tensors[i];
        c.tensors++;
        c.bytes_in += t.size();
        bool converted = false;
        try {
            converted = convert(t, w);
        } catch (const error& e) {
            rethrow_with_context(e, in.string() + ": tensor '" + t.name + "'");
        } catch (const std::bad_alloc&) {
            throw_out_of_memory(in.string() + ": tensor '" + t.name + "' (" + std::to_string(t.numel()) +
                                    " elements, as floats and converted)",
                                t.numel() * bytes_per_element);
        }
        if (converted) {
            c.quantized++;
            c.weights_quantized += t.numel();
        } else {
            w.add(t.name, t.dtype, t.shape, t.data());
        }
        if (progress) progress(i, tensors.size(), t.name, converted);
    }
    w.finish();
    c.bytes_out = std::filesystem::file_size(out);
    return c;
}

}  // namespace safetensors

LOWBIT_NAMESPACE_END
