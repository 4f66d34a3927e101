#pragma once
// Re-quantizing a GGUF model: the F32/F16/BF16 weight tensors of IN become the
// types llama.cpp's recipe for a file type chooses, everything else is copied,
// and OUT is written atomically. What `lowbit quantize` runs.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../kernels/ggml_dequantize.hpp"
#include "../kernels/ggml_quantize.hpp"
#include "../parallel.hpp"
#include "ggml.hpp"
#include "ggml_validate.hpp"
#include "gguf.hpp"
#include "gguf_recipes.hpp"
#include "imatrix.hpp"
#include "imatrix_file.hpp"

LOWBIT_NAMESPACE_BEGIN

/// What happened to one tensor.
struct gguf_tensor_report {
    std::string name;
    std::vector<std::uint64_t> shape;
    ggml::type from = ggml::type::f32, to = ggml::type::f32;
    std::uint64_t bytes_in = 0, bytes_out = 0;
    bool quantized = false;     ///< converted (else copied as it was)
    bool used_imatrix = false;
    bool fell_back = false;     ///< the recipe's type did not fit the row length
    bool requantized = false;   ///< the input was quantized: dequantized to f32, then quantized again
    double seconds = 0;
};

struct gguf_quantize_options {
    std::string type = "Q4_K_M";   ///< llama.cpp file type name (Q4_K_M, Q8_0, F16, ...) or COPY
    std::optional<std::filesystem::path> imatrix;  ///< llama.cpp imatrix (GGUF or legacy .dat)
    unsigned threads = 1;          ///< 0 = all cores; the bytes do not depend on it
    bool leave_output_tensor = false;
    bool pure = false;
    /// A tensor the recipe quantizes that is already quantized (not F32, F16 or
    /// BF16) is an error, as in llama-quantize; with this set it is dequantized
    /// to f32 and quantized again (a second rounding).
    bool allow_requantize = false;
    /// Called after each converted tensor is written: (index, tensor count,
    /// fraction of the converted tensors' input bytes done, report).
    std::function<void(std::size_t, std::size_t, double, const gguf_tensor_report&)> progress;
};

struct gguf_quantize_summary {
    std::string file_type;
    std::vector<gguf_tensor_report> tensors;
    std::uint64_t bytes_in = 0, bytes_out = 0;  ///< tensor data
    std::uint64_t weights_quantized = 0;        ///< elements of the converted tensors
    std::uint64_t bits_quantized = 0;           ///< their stored bits
    std::size_t imatrix_entries = 0;
    double seconds = 0;
    double bits_per_weight() const noexcept {
        return weights_quantized ? static_cast<double>(bits_quantized) / static_cast<double>(weights_quantized) : 0;
    }
};

namespace detail {

inline ggml::recipe_model_info model_info(const gguf_file& f) {
    ggml::recipe_model_info info;
    const auto* arch = f.find("general.architecture");
    if (!arch || !std::holds_alternative<std::string>(*arch))
        LOWBIT_THROW(errc::invalid_argument, "the model has no general.architecture string");
    info.arch = std::get<std::string>(*arch);
    auto int_key = [&](const std::string& key, int fallback) -> int {
        const auto* v = f.find(key);
        if (!v) return fallback;
        if (const auto* a = std::get_if<gguf_array>(v)) {  // per-layer values: llama.cpp uses the first
            return std::visit(
                [&](const auto& vec) {
                    using E = typename std::decay_t<decltype(vec)>::value_type;
                    if constexpr (std::is_integral_v<E> && !std::is_same_v<E, bool>)
                        return vec.empty() ? fallback : static_cast<int>(vec.front());
                    else
                        return fallback;
                },
                a->items());
        }
        return static_cast<int>(f.metadata().get_int(key));
    };
    info.n_layer = int_key(info.arch + ".block_count", 0);
    info.n_head = int_key(info.arch + ".attention.head_count", 0);
    info.n_head_kv = int_key(info.arch + ".attention.head_count_kv", info.n_head);
    info.n_expert = int_key(info.arch + ".expert_count", 0);
    info.n_layer_nextn = int_key(info.arch + ".nextn_predict_layers", 0);
    if (info.n_layer <= 0)
        LOWBIT_THROW(errc::invalid_argument, "the model has no positive " + info.arch + ".block_count");
    return info;
}

inline bool is_float_type(ggml::type t) noexcept {
    return t == ggml::type::f32 || t == ggml::type::f16 || t == ggml::type::bf16;
}

}  // namespace detail

/// Quantize GGUF model `in` into `out` (see gguf_quantize_options). `out` is
/// written to a temporary file and renamed when complete.
inline gguf_quantize_summary quantize_gguf(const std::filesystem::path& in, const std::filesystem::path& out,
                                           const gguf_quantize_options& opt) {
    using clock = std::chrono::steady_clock;
    const auto t0 = clock::now();
    const std::filesystem::path* imatrix_path = opt.imatrix ? &*opt.imatrix : nullptr;
    detail::check_output_target(out, "gguf", {{"input", &in}, {"imatrix", imatrix_path}});
    const gguf_file src = read_gguf(in);
    gguf_quantize_summary sum;
    gguf_writer w;
    w.metadata() = src.metadata();

    const bool copy = opt.type == "COPY" || opt.type == "copy";
    std::optional<ggml::recipe> rec;
    ggml::imatrix im;
    if (!copy) {
        const auto ft = ggml::parse_file_type(opt.type);
        sum.file_type = ggml::file_type_name(ft);
        if (opt.imatrix) {
            im = ggml::read_imatrix(*opt.imatrix);
            sum.imatrix_entries = im.size();
        }
        std::vector<ggml::recipe_tensor> list;
        for (const auto& t : src.tensors()) list.push_back({t.name, t.shape, t.type});
        ggml::recipe_options ro;
        ro.quantize_output_tensor = !opt.leave_output_tensor;
        ro.pure = opt.pure;
        ro.has_imatrix = !im.empty();
        rec.emplace(ft, detail::model_info(src), std::move(list), ro);
        w.metadata().set("general.file_type", static_cast<std::uint32_t>(ft));
        w.metadata().set("general.quantization_version", std::uint32_t{2});
    } else {
        sum.file_type = "COPY";
    }

    const auto infos = src.tensors();
    sum.tensors.resize(infos.size());
    std::uint64_t convert_total = 0, convert_done = 0;  // input bytes of the converted tensors
    for (std::size_t i = 0; i < infos.size(); ++i) {
        const auto& t = infos[i];
        auto& rep = sum.tensors[i];
        rep.name = t.name;
        rep.shape = t.shape;
        rep.from = rep.to = t.type;
        rep.bytes_in = t.size;
        const ggml::recipe_choice* c = rec ? &rec->choice(t.name) : nullptr;
        if (c && c->quantize && c->chosen != t.type) {
            if (!detail::is_float_type(t.type)) {
                if (!opt.allow_requantize)
                    LOWBIT_THROW(errc::invalid_argument,
                                 in.string() + ": tensor '" + t.name + "' is already quantized (" +
                                     std::string(ggml::traits(t.type).name) + "); quantizing it to " +
                                     std::string(ggml::traits(c->chosen).name) +
                                     " rounds twice: pass --allow-requantize to do it anyway");
                if (!ggml::traits(t.type).dequantize)
                    LOWBIT_THROW(errc::unsupported, in.string() + ": tensor '" + t.name + "' is " +
                                                        std::string(ggml::traits(t.type).name) +
                                                        ", which lowbit cannot dequantize to requantize");
                rep.requantized = true;
            }
            rep.to = c->chosen;
            rep.quantized = true;
            rep.fell_back = c->fell_back;
        }
        if (!rep.quantized) {
            // Every tensor written passes ggml's own validation, copied ones too.
            if (const auto bad = ggml::find_invalid_block(t.type, src.tensor(t)))
                LOWBIT_THROW(errc::non_finite, in.string() + ": tensor '" + t.name + "' (" +
                                                   std::string(ggml::traits(t.type).name) + ", copied as it is): " +
                                                   bad->to_string() + ", which ggml rejects");
            w.add_tensor(t.name, t.shape, t.type, src.tensor(t));
            continue;
        }
        convert_total += rep.bytes_in;
        const std::size_t n_per_row = static_cast<std::size_t>(t.row_length());
        const std::size_t rows = static_cast<std::size_t>(t.n_rows());
        const std::size_t n_expert = t.shape.size() >= 3 ? static_cast<std::size_t>(t.shape[2]) : 1;
        const std::size_t rows_per_expert = rows / (n_expert ? n_expert : 1);
        const auto weights = im.weights_for(t.name, n_per_row, n_expert);
        if (weights.empty() && c->needs_imatrix)
            LOWBIT_THROW(errc::invalid_argument, "tensor " + t.name + " needs an importance matrix for " +
                                                     std::string(ggml::traits(rep.to).name) + " (--imatrix)");
        rep.used_imatrix = !weights.empty();
        const auto in_bytes = src.tensor(t);
        const std::size_t in_row = in_bytes.size() / (rows ? rows : 1);
        const std::size_t out_row = ggml::row_bytes(rep.to, n_per_row);
        rep.bytes_out = out_row * rows;
        w.add_tensor(t.name, t.shape, rep.to, [&, i, rows, n_per_row, rows_per_expert, in_row, out_row, in_bytes,
                                               weights](std::span<std::byte> dst) {
            auto& r = sum.tensors[i];
            const auto ts = clock::now();
            constexpr std::size_t grain = 16;  // rows a call: the input is scanned, then quantized from cache
            try {
                parallel_for(rows, opt.threads, grain, [&](std::size_t r0, std::size_t r1) {
                    std::vector<float> deq(r.requantized ? grain * n_per_row : 0);
                    // Runs of rows within one expert (which has its own importance row).
                    for (std::size_t row = r0; row < r1;) {
                        const std::size_t expert = row / rows_per_expert;
                        std::size_t end = weights.empty() ? r1 : std::min(r1, (expert + 1) * rows_per_expert);
                        end = std::min(end, row + grain);
                        const float* qw = weights.empty() ? nullptr : weights.data() + expert * n_per_row;
                        const std::byte* from = in_bytes.data() + row * in_row;
                        ggml::type from_type = r.from;
                        if (r.requantized) {
                            kernels::dequantize_ggml_rows(r.from, from, deq.data(), end - row, n_per_row);
                            from = reinterpret_cast<const std::byte*>(deq.data());
                            from_type = ggml::type::f32;
                        }
                        kernels::detail::ggml_quant::quantize_rows_from(r.to, from_type, from, dst.data() + row * out_row,
                                                                 end - row, n_per_row, qw, row);
                        row = end;
                    }
                });
            } catch (const error& e) {
                rethrow_with_context(e, in.string() + ": tensor '" + r.name + "'");
            }
            r.seconds = std::chrono::duration<double>(clock::now() - ts).count();
            convert_done += r.bytes_in;
            if (opt.progress)
                opt.progress(i, sum.tensors.size(),
                             static_cast<double>(convert_done) / static_cast<double>(convert_total), r);
        });
    }
    w.write(out);
    for (const auto& r : sum.tensors) {
        sum.bytes_in += r.bytes_in;
        sum.bytes_out += r.quantized ? r.bytes_out : r.bytes_in;
        if (r.quantized) {
            std::uint64_t n = 1;
            for (auto d : r.shape) n *= d;
            sum.weights_quantized += n;
            sum.bits_quantized += r.bytes_out * 8;
        }
    }
    sum.seconds = std::chrono::duration<double>(clock::now() - t0).count();
    return sum;
}

LOWBIT_NAMESPACE_END
