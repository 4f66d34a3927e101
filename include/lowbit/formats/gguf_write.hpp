#pragma once
// The GGUF writer: a v3 file from metadata and tensors, written to a
// temporary file that replaces the target only once complete.

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

#include "../detail/file_io.hpp"
#include "gguf_read.hpp"
#include "gguf_value.hpp"

LOWBIT_NAMESPACE_BEGIN
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
