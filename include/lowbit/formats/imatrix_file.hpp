#pragma once
// llama.cpp importance-matrix files: read in either form (GGUF, or the legacy
// .dat), and written in the GGUF form llama-imatrix writes today:
//   general.type      "imatrix"
//   imatrix.datasets  [string]  what it was computed on
//   imatrix.chunk_count u32, imatrix.chunk_size u32
//   X.in_sum2  F32 ne [n_per_row, n_expert]  sums of squared activations
//   X.counts   F32 ne [1, n_expert]          tokens each expert saw
// for each weight X ("blk.0.attn_q.weight"); llama-quantize weighs column j
// of X by in_sum2 / counts.

#include <cmath>
#include <cstddef>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "../core/error.hpp"
#include "../detail/file_io.hpp"
#include "ggml.hpp"
#include "gguf.hpp"
#include "imatrix.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ggml {

/// An importance matrix from `path`, in the GGUF or the legacy .dat form
/// (told apart by the first bytes); errors name the file, and a GGUF file
/// that says it is something else (general.type) is refused.
inline imatrix read_imatrix(const std::filesystem::path& path) {
    bool gguf_form = false;
    {
        const lowbit::detail::mapped_file f(path, "imatrix");  // a directory or FIFO is refused here, before any read
        gguf_form = is_gguf(f.bytes());
    }
    imatrix m;
    try {
        if (gguf_form) {
            const auto g = read_gguf(path);
            // llama.cpp's imatrix files say what they are; a model says it is one.
            if (const auto* t = g.find("general.type"); t && std::holds_alternative<std::string>(*t) &&
                                                        std::get<std::string>(*t) != "imatrix")
                LOWBIT_THROW(errc::corrupt_file, "a GGUF " + std::get<std::string>(*t) +
                                                     " file, not an importance matrix (general.type is '" +
                                                     std::get<std::string>(*t) + "', expected 'imatrix')");
            std::vector<imatrix_tensor> ts;
            for (const auto& t : g.tensors()) {
                if (t.type != type::f32)
                    LOWBIT_THROW(errc::corrupt_file, "imatrix tensor " + t.name + " is " +
                                                         std::string(traits(t.type).name) + ", not f32");
                const auto b = g.tensor(t);
                ts.push_back({t.name, {reinterpret_cast<const float*>(b.data()), b.size() / sizeof(float)}, t.shape});
            }
            if (ts.empty()) LOWBIT_THROW(errc::corrupt_file, "a GGUF file with no tensors, not an importance matrix");
            m = imatrix_from_gguf_tensors(ts);
            // What it was computed on, where the file says (llama-imatrix always does).
            if (const auto* d = g.find("imatrix.datasets"))
                if (const auto* a = std::get_if<gguf_array>(d);
                    a && a->element_type() == gguf_type::string)
                    m.datasets = a->get<std::string>();
            const auto u32 = [&](const char* key) -> std::int32_t {
                const auto* v = g.find(key);
                const auto* u = v ? std::get_if<std::uint32_t>(v) : nullptr;
                return u && *u <= static_cast<std::uint32_t>(INT32_MAX) ? static_cast<std::int32_t>(*u) : 0;
            };
            m.chunk_count = u32("imatrix.chunk_count");
            m.chunk_size = u32("imatrix.chunk_size");
        } else {
            m = read_imatrix_dat(path);
        }
        m.check_finite();
    } catch (const error& e) {
        const std::string_view msg = e.message();
        if (msg.starts_with(path.string()) || msg.starts_with("imatrix: ")) throw;  // already says which file
        rethrow_with_context(e, "imatrix " + path.string());
    }
    return m;
}

/// One entry as llama-imatrix accumulates it: per expert, the sums of the
/// squared activations of each input column, and the tokens it saw.
struct imatrix_sums {
    std::vector<float> in_sum2;  ///< n_expert x n_per_row
    std::vector<float> counts;   ///< n_expert
};

/// Writes `entries` (weight name -> sums) to `path` atomically in the GGUF
/// form. Each entry's sums must split into its counts, and every value be
/// finite and not negative (errc::invalid_argument naming the entry).
inline void write_imatrix(const std::filesystem::path& path, const std::map<std::string, imatrix_sums>& entries,
                          const std::vector<std::string>& datasets, std::uint32_t chunk_count,
                          std::uint32_t chunk_size) {
    if (entries.empty()) LOWBIT_THROW(errc::invalid_argument, "write_imatrix: no entries");
    gguf_writer w;
    w.metadata().set("general.type", std::string("imatrix"));
    w.metadata().set("imatrix.datasets", gguf_array(datasets));
    w.metadata().set("imatrix.chunk_count", chunk_count);
    w.metadata().set("imatrix.chunk_size", chunk_size);
    for (const auto& [name, e] : entries) {
        const std::string where = "write_imatrix: entry '" + name + "'";
        if (e.counts.empty() || e.in_sum2.empty() || e.in_sum2.size() % e.counts.size() != 0)
            LOWBIT_THROW(errc::invalid_argument, where + ": " + std::to_string(e.in_sum2.size()) +
                                                     " sums do not split into " + std::to_string(e.counts.size()) +
                                                     " experts");
        for (const auto* v : {&e.in_sum2, &e.counts})
            for (std::size_t i = 0; i < v->size(); ++i)
                if (!std::isfinite((*v)[i]) || (*v)[i] < 0.0f)
                    LOWBIT_THROW(errc::invalid_argument, where + ": " + (v == &e.counts ? "count " : "sum ") +
                                                             std::to_string(i) + " is " + std::to_string((*v)[i]));
        const std::uint64_t experts = e.counts.size(), per = e.in_sum2.size() / experts;
        w.add_tensor(name + ".in_sum2", {per, experts}, type::f32, std::as_bytes(std::span<const float>(e.in_sum2)));
        w.add_tensor(name + ".counts", {1, experts}, type::f32, std::as_bytes(std::span<const float>(e.counts)));
    }
    w.write(path);
}

}  // namespace ggml
LOWBIT_NAMESPACE_END
