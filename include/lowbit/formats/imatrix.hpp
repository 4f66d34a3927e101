#pragma once
// llama.cpp importance matrices (llama-imatrix output) as llama-quantize uses
// them: per tensor, one weight per input column (per expert for stacked MoE
// tensors), already normalised by the number of tokens seen.
//
// Two file forms exist:
//  - the legacy .dat form, read here from bytes or a path;
//  - the GGUF form ("<tensor>.in_sum2" and "<tensor>.counts" F32 tensors),
//    turned into an imatrix by imatrix_from_gguf_tensors once a GGUF reader
//    has the tensors in memory.

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../detail/file_io.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ggml {

struct imatrix {
    /// tensor name -> per-column weights: n_per_row values, or n_expert *
    /// n_per_row for a stacked expert tensor (expert e at [e * n_per_row, ...)).
    std::map<std::string, std::vector<float>, std::less<>> entries;
    std::vector<std::string> datasets;  ///< what it was computed on, if recorded
    std::int32_t chunk_count = 0;       ///< chunks processed (0 if not recorded)
    std::int32_t chunk_size = 0;        ///< tokens per chunk (GGUF form only)
    bool legacy = false;                ///< read from the .dat form

    bool empty() const noexcept { return entries.empty(); }
    std::size_t size() const noexcept { return entries.size(); }

    /// The weights for tensor `name`, or null.
    const std::vector<float>* find(std::string_view name) const {
        const auto it = entries.find(name);
        return it == entries.end() ? nullptr : &it->second;
    }

    /// The weights to quantize tensor `name` (rows of n_per_row, n_expert
    /// stacked matrices) with, checked as llama-quantize checks them: empty
    /// when the matrix has no entry; errc::shape_mismatch when the entry's
    /// size is not n_per_row * n_expert, except for the token embedding,
    /// which is then quantized without weights.
    std::span<const float> weights_for(std::string_view name, std::uint64_t n_per_row,
                                       std::uint64_t n_expert = 1) const {
        const auto* w = find(name);
        if (!w) return {};
        if (n_expert == 0 || n_per_row > UINT64_MAX / n_expert || w->size() != n_per_row * n_expert) {
            if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return {};
            LOWBIT_THROW(errc::shape_mismatch, "imatrix entry for " + std::string(name) + " has " +
                                                   std::to_string(w->size()) + " values; the tensor needs " +
                                                   std::to_string(n_per_row) + " x " + std::to_string(n_expert));
        }
        return *w;
    }

    /// errc::non_finite naming the first entry with a NaN or Inf
    /// (llama-quantize refuses such matrices).
    void check_finite() const {
        for (const auto& [name, w] : entries)
            for (std::size_t i = 0; i < w.size(); ++i)
                if (!std::isfinite(w[i]))
                    LOWBIT_THROW(errc::non_finite, "imatrix entry " + name + " value " + std::to_string(i) +
                                                       " is not finite");
    }
};

namespace detail::imatrix_io {

/// Little-endian reader over a byte span that reports where a file is short.
class reader {
public:
    explicit reader(std::span<const std::byte> b) noexcept : b_(b) {}
    std::size_t offset() const noexcept { return pos_; }
    std::size_t remaining() const noexcept { return b_.size() - pos_; }

    std::int32_t i32(const char* what, const std::string& where) {
        need(4, what, where);
        std::uint32_t v = 0;
        for (int k = 0; k < 4; ++k) v |= std::uint32_t(std::to_integer<std::uint8_t>(b_[pos_ + k])) << (8 * k);
        pos_ += 4;
        return static_cast<std::int32_t>(v);
    }

    std::span<const std::byte> bytes(std::size_t n, const char* what, const std::string& where) {
        need(n, what, where);
        auto s = b_.subspan(pos_, n);
        pos_ += n;
        return s;
    }

    [[noreturn]] void fail(const std::string& msg, std::size_t at) const {
        LOWBIT_THROW(errc::corrupt_file, "imatrix .dat: " + msg + " at byte offset " + std::to_string(at));
    }

private:
    void need(std::size_t n, const char* what, const std::string& where) const {
        if (remaining() < n)
            fail(where + ": " + what + " needs " + std::to_string(n) + " bytes, only " +
                     std::to_string(remaining()) + " remain",
                 pos_);
    }

    std::span<const std::byte> b_;
    std::size_t pos_ = 0;
};

inline float f32_le(std::span<const std::byte> b, std::size_t i) noexcept {
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) v |= std::uint32_t(std::to_integer<std::uint8_t>(b[4 * i + k])) << (8 * k);
    return std::bit_cast<float>(v);
}

// llama.cpp reads names as C strings, so anything after a NUL is dropped.
inline std::string c_string(std::span<const std::byte> b) {
    std::string s(reinterpret_cast<const char*>(b.data()), b.size());
    if (const auto nul = s.find('\0'); nul != s.npos) s.resize(nul);
    return s;
}

}  // namespace detail::imatrix_io

/// Parse the legacy .dat form: int32 entry count; per entry int32 name
/// length, the name, int32 ncall, int32 nval, nval float32 sums; then
/// optionally int32 chunk count, and int32 length + dataset name. All
/// little-endian. The stored sums are per-token means times ncall, so each is
/// divided by ncall (when positive) as llama-quantize does. A later entry of
/// the same name replaces an earlier one. Anything inconsistent throws
/// errc::corrupt_file naming the entry and byte offset.
inline imatrix parse_imatrix_dat(std::span<const std::byte> bytes) {
    detail::imatrix_io::reader in(bytes);
    imatrix m;
    m.legacy = true;
    const std::int32_t n_entries = in.i32("the entry count", "header");
    // Smallest entry: name length, ncall, nval and one value.
    constexpr std::size_t min_entry = 16;
    if (n_entries < 1) in.fail("entry count " + std::to_string(n_entries) + " (need at least 1)", 0);
    if (static_cast<std::size_t>(n_entries) > in.remaining() / min_entry)
        in.fail("entry count " + std::to_string(n_entries) + " does not fit in the " +
                    std::to_string(in.remaining()) + " bytes that follow",
                0);
    for (std::int32_t e = 0; e < n_entries; ++e) {
        const std::string where = "entry " + std::to_string(e);
        const std::size_t len_at = in.offset();
        const std::int32_t len = in.i32("the name length", where);
        if (len < 0 || static_cast<std::size_t>(len) > in.remaining())
            in.fail(where + ": name length " + std::to_string(len) + " with " + std::to_string(in.remaining()) +
                        " bytes left",
                    len_at);
        std::string name = detail::imatrix_io::c_string(in.bytes(static_cast<std::size_t>(len), "the name", where));
        const std::string where_named = where + " (" + name + ")";
        const std::int32_t ncall = in.i32("ncall", where_named);
        const std::size_t nval_at = in.offset();
        const std::int32_t nval = in.i32("the value count", where_named);
        if (nval < 1 || static_cast<std::size_t>(nval) > in.remaining() / 4)
            in.fail(where_named + ": value count " + std::to_string(nval) + " with " +
                        std::to_string(in.remaining()) + " bytes left",
                    nval_at);
        const auto raw = in.bytes(static_cast<std::size_t>(nval) * 4, "the values", where_named);
        std::vector<float> w(static_cast<std::size_t>(nval));
        for (std::size_t i = 0; i < w.size(); ++i) {
            const float v = detail::imatrix_io::f32_le(raw, i);
            w[i] = ncall > 0 ? v / static_cast<float>(ncall) : v;
        }
        m.entries.insert_or_assign(std::move(name), std::move(w));
    }
    // Optional trailer: older writers stop after the chunk count.
    if (in.remaining() == 0) return m;
    m.chunk_count = in.i32("the chunk count", "trailer");
    if (in.remaining() == 0) return m;
    const std::size_t len_at = in.offset();
    const std::int32_t len = in.i32("the dataset name length", "trailer");
    if (len < 0 || static_cast<std::size_t>(len) != in.remaining())
        in.fail("dataset name length " + std::to_string(len) + " but " + std::to_string(in.remaining()) +
                    " bytes remain",
                len_at);
    if (len > 0) m.datasets.push_back(detail::imatrix_io::c_string(in.bytes(static_cast<std::size_t>(len), "the dataset name", "trailer")));
    return m;
}

/// True when `bytes` start like a GGUF file (use the GGUF form then).
inline bool is_gguf(std::span<const std::byte> bytes) noexcept {
    return bytes.size() >= 4 && std::memcmp(bytes.data(), "GGUF", 4) == 0;
}

/// Read a legacy .dat file (errc::io when it cannot be read; errc::unsupported
/// when it is a GGUF imatrix, which needs the GGUF reader).
inline imatrix read_imatrix_dat(const std::filesystem::path& path) {
    const lowbit::detail::mapped_file file(path, "imatrix");  // a directory or FIFO is refused here
    const auto bytes = file.bytes();
    if (is_gguf(bytes))
        LOWBIT_THROW(errc::unsupported, path.string() + " is a GGUF imatrix; read its tensors with the GGUF reader "
                                                        "and pass them to imatrix_from_gguf_tensors");
    if (const auto kind = lowbit::detail::container_of_bytes(bytes); !kind.empty())
        LOWBIT_THROW(errc::corrupt_file, path.string() + ": a " + std::string(kind) +
                                             " file, not an importance matrix (a GGUF imatrix or the legacy .dat form)");
    try {
        return parse_imatrix_dat(bytes);
    } catch (const error& e) {
        if (e.code() != errc::corrupt_file) throw;
        rethrow_with_context(e, path.string());
    }
}

/// One F32 tensor of a GGUF imatrix, as the GGUF reader returns it.
struct imatrix_tensor {
    std::string name;
    std::span<const float> data;
    std::vector<std::uint64_t> ne;  ///< ggml order; its product must be data.size()
};

/// Build an imatrix from the tensors of a GGUF imatrix file. For each name X,
/// "X.in_sum2" holds the sums of squared activations, one row of n_per_row
/// per expert (ne = [n_per_row, n_expert]), and "X.counts" the tokens each
/// expert saw (ne = [1, n_expert]). The weights are sum / round(count); an
/// expert that saw no tokens gets all ones, as in llama-quantize. Other
/// tensors are ignored. A lone in_sum2 or counts, an in_sum2 that does not
/// split into the counts, or a count that is not finite throws
/// errc::corrupt_file; a span that disagrees with its shape throws
/// errc::shape_mismatch. Set datasets, chunk_count and chunk_size from the
/// file's "imatrix.datasets", "imatrix.chunk_count" and "imatrix.chunk_size"
/// (llama-quantize refuses a GGUF imatrix that lacks them).
inline imatrix imatrix_from_gguf_tensors(std::span<const imatrix_tensor> tensors) {
    constexpr std::string_view sums_suffix = ".in_sum2", counts_suffix = ".counts";
    struct pair {
        const imatrix_tensor* sums = nullptr;
        const imatrix_tensor* counts = nullptr;
    };
    if (tensors.empty()) LOWBIT_THROW(errc::corrupt_file, "GGUF imatrix has no tensors");
    std::map<std::string, pair, std::less<>> by_name;
    for (const auto& t : tensors) {
        std::uint64_t n = 1;
        for (auto d : t.ne) n = d != 0 && n > UINT64_MAX / d ? UINT64_MAX : n * d;
        if (t.ne.empty() || n != t.data.size())
            LOWBIT_THROW(errc::shape_mismatch, "imatrix tensor " + t.name + " has " + std::to_string(t.data.size()) +
                                                   " values but its shape holds " + std::to_string(n));
        std::string_view name = t.name;
        const imatrix_tensor** slot = nullptr;
        if (name.ends_with(sums_suffix)) {
            name.remove_suffix(sums_suffix.size());
            slot = &by_name[std::string(name)].sums;
        } else if (name.ends_with(counts_suffix)) {
            name.remove_suffix(counts_suffix.size());
            slot = &by_name[std::string(name)].counts;
        } else {
            continue;
        }
        if (*slot) LOWBIT_THROW(errc::corrupt_file, "GGUF imatrix has tensor " + t.name + " twice");
        *slot = &t;
    }
    if (by_name.empty())
        LOWBIT_THROW(errc::corrupt_file, "not an importance matrix: no tensor is named X.in_sum2 or X.counts (the first "
                                         "is '" + tensors.front().name + "')");
    imatrix m;
    for (const auto& [name, p] : by_name) {
        if (!p.sums || !p.counts)
            LOWBIT_THROW(errc::corrupt_file, "GGUF imatrix entry " + name + " has " +
                                                 (p.sums ? "in_sum2 but no counts" : "counts but no in_sum2"));
        const auto sums = p.sums->data;
        const auto counts = p.counts->data;
        if (counts.empty() || sums.empty() || sums.size() % counts.size() != 0)
            LOWBIT_THROW(errc::corrupt_file, "GGUF imatrix entry " + name + ": " + std::to_string(sums.size()) +
                                                 " sums do not split into " + std::to_string(counts.size()) +
                                                 " experts");
        const std::size_t per = sums.size() / counts.size();
        std::vector<float> w(sums.size());
        for (std::size_t e = 0; e < counts.size(); ++e) {
            const float c = counts[e];
            // llama.cpp stores counts as floats and rounds them back to integers.
            if (!std::isfinite(c) || std::fabs(c) >= 9.0e18f)
                LOWBIT_THROW(errc::corrupt_file, "GGUF imatrix entry " + name + ": count " + std::to_string(e) +
                                                     " is " + std::to_string(c));
            const float count = static_cast<float>(std::llround(c));
            for (std::size_t i = 0; i < per; ++i) w[e * per + i] = count > 0.0f ? sums[e * per + i] / count : 1.0f;
        }
        m.entries.emplace(name, std::move(w));
    }
    return m;
}

}  // namespace ggml
LOWBIT_NAMESPACE_END
