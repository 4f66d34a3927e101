#pragma once
// The GGUF reader: validates every field of a GGUF file (v2 or v3) over a
// read-only memory map, or over bytes in memory, into a gguf_file whose
// tensor spans point into those bytes.

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

#include "../core/view.hpp"
#include "../detail/file_io.hpp"
#include "ggml_view.hpp"
#include "gguf_value.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace gguf::detail {

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

    /// The tensor's rows as a view into the file (no copy): row_length()
    /// values per row, every further dimension flattened into rows. Valid
    /// while this object or a copy of it lives.
    ggml::rows_view view(std::string_view name) const { return view(tensor_info(name)); }
    ggml::rows_view view(const gguf_tensor_info& info) const {
        return lowbit::detail::at_position(
            [&] {
                return ggml::rows_view(info.type, tensor(info), static_cast<std::size_t>(info.n_rows()),
                                       static_cast<std::size_t>(info.row_length()));
            },
            [&] { return "gguf: tensor " + gguf::detail::show_name(info.name); });
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

LOWBIT_NAMESPACE_END
