#pragma once
// bitsandbytes checkpoints in safetensors: the state-dict layout transformers
// saves and loads for bnb-quantized Linear layers.
//
// 4-bit (Linear4bit, QuantState.as_dict(packed=True)), for a weight "X.weight":
//   X.weight                                  U8  [ceil(n/2), 1]  packed codes
//   X.weight.absmax                           F32 [blocks], or U8 [blocks] when nested
//   X.weight.quant_map                        F32 [16]
//   X.weight.nested_absmax                    F32 [ceil(blocks/256)]   (nested)
//   X.weight.nested_quant_map                 F32 [256]                (nested)
//   X.weight.quant_state.bitsandbytes__nf4    U8  [len]  JSON: quant_type, blocksize,
//                                             dtype, shape, nested_blocksize,
//                                             nested_dtype, nested_offset
// 8-bit (Linear8bitLt): X.weight I8 [out, in], X.SCB F32 [out], X.weight_format U8 [] = 0 (row).
//
// convert_checkpoint() turns an fp16/bf16/fp32 checkpoint into one of these.
// It quantizes the 2-D ".weight" tensors of linear layers; 1-D tensors,
// embeddings (names with "embed", "wte", "wpe") and the output head
// ("lm_head") are copied unchanged unless asked, as transformers leaves them.

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/finite.hpp"
#include "../core/view.hpp"
#include "json.hpp"
#include "../core/numeric.hpp"
#include "bnb.hpp"
#include "../detail/file_io.hpp"
#include "safetensors.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace bnb {

// ---- The quant_state JSON --------------------------------------------------

/// The key of the packed JSON entry: "quant_state.bitsandbytes__nf4" / "__fp4".
inline std::string quant_state_key(quant_type t) { return "quant_state.bitsandbytes__" + std::string(to_string(t)); }

/// The JSON bitsandbytes packs into the `weight.quant_state.bitsandbytes__*`
/// uint8 tensor (QuantState.as_dict(packed=True), json.dumps formatting).
inline std::string quant_state_json(const quant_state_4bit& s) {
    std::string j = "{\"quant_type\": \"" + std::string(to_string(s.type)) + "\", \"blocksize\": " +
                    std::to_string(s.blocksize) + ", \"dtype\": \"" + std::string(to_string(s.dtype)) +
                    "\", \"shape\": [";
    for (std::size_t i = 0; i < s.shape.size(); ++i) {
        if (i) j += ", ";
        j += std::to_string(s.shape[i]);
    }
    j += "]";
    if (s.nested) {
        j += ", \"nested_blocksize\": " + std::to_string(s.nested->blocksize) +
             ", \"nested_dtype\": \"float32\", \"nested_offset\": " +
             json::format_double_python(static_cast<double>(s.nested->offset));
    }
    return j + "}";
}

/// A checkpoint format name: "nf4-b64-dq", "fp4-b128", ... (4-bit, block
/// size, "-dq" for nested absmax) or "llm-int8" (8-bit rows).
struct checkpoint_format {
    bool int8 = false;
    quant_type type = quant_type::nf4;
    std::size_t blocksize = 64;
    bool nested = false;
    std::string name() const {
        if (int8) return "llm-int8";
        return std::string(to_string(type)) + "-b" + std::to_string(blocksize) + (nested ? "-dq" : "");
    }
};

inline checkpoint_format parse_checkpoint_format(std::string_view s) {
    checkpoint_format f;
    const auto bad = [&] {
        LOWBIT_THROW(errc::unknown_format, "bitsandbytes format '" + std::string(s) +
                                               "' is not llm-int8 or {nf4,fp4}-b{32,64,...,4096}[-dq] "
                                               "(e.g. nf4-b64-dq)");
    };
    if (s == "llm-int8") {
        f.int8 = true;
        return f;
    }
    if (s.size() < 6 || (s.substr(0, 5) != "nf4-b" && s.substr(0, 5) != "fp4-b")) bad();
    f.type = s[0] == 'n' ? quant_type::nf4 : quant_type::fp4;
    std::string_view rest = s.substr(5);
    if (rest.ends_with("-dq")) {
        f.nested = true;
        rest.remove_suffix(3);
    }
    std::size_t b = 0;
    const auto r = std::from_chars(rest.data(), rest.data() + rest.size(), b);
    if (r.ec != std::errc{} || r.ptr != rest.data() + rest.size() || !detail::valid_4bit_blocksize(b)) bad();
    f.blocksize = b;
    return f;
}

struct convert_options {
    checkpoint_format format = parse_checkpoint_format("nf4-b64-dq");
    kernel_rules rules = kernel_rules::cuda;
    bool include_embeddings = false;  ///< quantize embeddings and lm_head too
    unsigned threads = 1;
    /// Called after each tensor: (index, count, name, quantized).
    safetensors::rewrite_progress progress;
};

using convert_report = safetensors::rewrite_counts;

/// Whether convert_checkpoint quantizes this tensor.
inline bool should_quantize(const safetensors::tensor_info& t, const convert_options& o) {
    return safetensors::is_linear_weight(t, o.include_embeddings);
}

namespace detail {

template <class T>
std::span<const std::byte> bytes_of(const std::vector<T>& v) {
    return std::as_bytes(std::span<const T>(v));
}

inline source_dtype source_of(safetensors::dtype t) {
    switch (t) {
    case safetensors::dtype::f16: return source_dtype::float16;
    case safetensors::dtype::bf16: return source_dtype::bfloat16;
    default: return source_dtype::float32;
    }
}

}  // namespace detail

/// Converts the safetensors checkpoint `in` to the bitsandbytes layout of
/// o.format, written atomically to `out` (metadata copied, e.g. "format": "pt").
inline convert_report convert_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                         const convert_options& o = {}) {
    using safetensors::dtype;
    // The quantized parts must outlive the writer's finish(): it keeps spans.
    struct parts {
        quant_state_4bit s4;
        int8_weight s8;
        std::vector<std::uint8_t> json;
        std::vector<float> quant_map, nested_map;
        std::uint8_t weight_format = 0;
    };
    std::vector<std::unique_ptr<parts>> keep;
    const auto convert = [&](const safetensors::tensor_info& t, safetensors::writer& w) {
        if (!should_quantize(t, o)) return false;
        std::vector<float> x = safetensors::finite_floats(t);
        auto p = std::make_unique<parts>();
        const std::uint64_t rows = t.shape[0], cols = t.shape[1];
        const std::string base = t.name.substr(0, t.name.size() - std::string_view("weight").size());
        if (o.format.int8) {
            // Linear8bitLt quantizes from float16 whatever the checkpoint holds.
            if (t.dtype != dtype::f16)
                for (std::size_t k = 0; k < x.size(); ++k) {
                    const float h = fp16_to_float(float_to_fp16(x[k]));
                    if (!std::isfinite(h))
                        LOWBIT_THROW(errc::invalid_argument,
                                     "row " + std::to_string(k / cols) + ", column " + std::to_string(k % cols) +
                                         ": " + lowbit::detail::value_string(x[k]) +
                                         " is beyond float16's range (65504), which LLM.int8() quantizes from");
                    x[k] = h;
                }
            p->s8 = quantize_int8_rows(x, static_cast<std::size_t>(rows), static_cast<std::size_t>(cols), o.threads);
            w.add(t.name, dtype::i8, {rows, cols}, detail::bytes_of(p->s8.q));
            w.add(base + "SCB", dtype::f32, {rows}, detail::bytes_of(p->s8.scb));
            w.add(base + "weight_format", dtype::u8, {}, std::as_bytes(std::span<const std::uint8_t>(&p->weight_format, 1)));
        } else {
            quantize_4bit_options qo;
            qo.type = o.format.type;
            qo.blocksize = o.format.blocksize;
            qo.compress_statistics = o.format.nested;
            qo.rules = o.rules;
            qo.dtype = detail::source_of(t.dtype);
            qo.threads = o.threads;
            p->s4 = quantize_4bit(x, {rows, cols}, qo);
            const auto& s = p->s4;
            const std::string json = quant_state_json(s);
            p->json.assign(json.begin(), json.end());
            p->quant_map.assign(s.code.begin(), s.code.end());
            w.add(t.name, dtype::u8, {s.packed.size(), 1}, detail::bytes_of(s.packed));
            if (s.nested) {
                p->nested_map.assign(s.nested->code.begin(), s.nested->code.end());
                w.add(t.name + ".absmax", dtype::u8, {s.nested->codes.size()}, detail::bytes_of(s.nested->codes));
                w.add(t.name + ".nested_absmax", dtype::f32, {s.nested->absmax.size()}, detail::bytes_of(s.nested->absmax));
                w.add(t.name + ".nested_quant_map", dtype::f32, {256}, detail::bytes_of(p->nested_map));
            } else {
                w.add(t.name + ".absmax", dtype::f32, {s.absmax.size()}, detail::bytes_of(s.absmax));
            }
            w.add(t.name + ".quant_map", dtype::f32, {16}, detail::bytes_of(p->quant_map));
            w.add(t.name + "." + quant_state_key(s.type), dtype::u8, {p->json.size()}, detail::bytes_of(p->json));
        }
        keep.push_back(std::move(p));
        return true;
    };
    // The float copy and the quantized parts: about 5 bytes per element.
    return safetensors::rewrite(in, out, convert, 5, o.progress);
}

/// A 4-bit state read back from a converted checkpoint: the weight `name`
/// ("X.weight") with its absmax / nested / quant_state entries.
inline quant_state_4bit read_4bit_state(const safetensors::file& f, const std::string& name) {
    using safetensors::dtype;
    const auto where = "bitsandbytes state '" + name + "'";
    const safetensors::tensor_info* qs = nullptr;
    for (quant_type t : {quant_type::nf4, quant_type::fp4})
        if (!qs) qs = f.find(name + "." + quant_state_key(t));
    if (!qs) LOWBIT_THROW(errc::corrupt_file, where + ": no quant_state.bitsandbytes__nf4/fp4 entry");
    const auto raw = qs->data();
    const json::value j = json::parse(std::string_view(reinterpret_cast<const char*>(raw.data()), raw.size()));
    const auto u64 = [&](const json::value& v, const char* key) {
        const auto x = v.to_u64();
        if (!x) LOWBIT_THROW(errc::corrupt_file, where + ": quant_state " + key + " is not a non-negative integer");
        return *x;
    };
    quant_state_4bit s;
    s.type = parse_quant_type(j["quant_type"].as_string());
    s.blocksize = static_cast<std::size_t>(u64(j["blocksize"], "blocksize"));
    s.dtype = parse_source_dtype(j["dtype"].as_string());
    for (const auto& d : j["shape"].items()) s.shape.push_back(u64(d, "shape"));
    const auto need = [&](const std::string& key, dtype t) -> const safetensors::tensor_info& {
        const auto& ti = f.at(key);
        if (ti.dtype != t)
            LOWBIT_THROW(errc::corrupt_file, where + ": " + key + " is " + std::string(safetensors::to_string(ti.dtype)) +
                                                 ", expected " + std::string(safetensors::to_string(t)));
        return ti;
    };
    const auto copy_to = [](const safetensors::tensor_info& ti, auto& vec) {
        vec.resize(ti.size() / sizeof(vec[0]));
        std::memcpy(vec.data(), ti.data().data(), vec.size() * sizeof(vec[0]));
    };
    copy_to(need(name, dtype::u8), s.packed);
    std::vector<float> qm;
    copy_to(need(name + ".quant_map", dtype::f32), qm);
    if (qm.size() != 16) LOWBIT_THROW(errc::corrupt_file, where + ": quant_map has " + std::to_string(qm.size()) + " values");
    std::copy(qm.begin(), qm.end(), s.code.begin());
    if (j.find("nested_offset")) {
        nested_state ns;
        ns.blocksize = static_cast<std::size_t>(u64(j["nested_blocksize"], "nested_blocksize"));
        ns.offset = static_cast<float>(j["nested_offset"].as_double());
        copy_to(need(name + ".absmax", dtype::u8), ns.codes);
        copy_to(need(name + ".nested_absmax", dtype::f32), ns.absmax);
        std::vector<float> nm;
        copy_to(need(name + ".nested_quant_map", dtype::f32), nm);
        if (nm.size() != 256)
            LOWBIT_THROW(errc::corrupt_file, where + ": nested_quant_map has " + std::to_string(nm.size()) + " values");
        std::copy(nm.begin(), nm.end(), ns.code.begin());
        s.nested = std::move(ns);
    } else {
        copy_to(need(name + ".absmax", dtype::f32), s.absmax);
    }
    detail::validate_4bit(s, where);
    return s;
}

}  // namespace bnb
LOWBIT_NAMESPACE_END
