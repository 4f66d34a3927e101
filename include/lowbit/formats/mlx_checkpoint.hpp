#pragma once
// MLX checkpoints in safetensors: the layout mlx-lm saves for quantized models
// (mlx_lm.convert -q, nn.quantize in MLX's "affine" mode). For a quantized
// layer X whose weight X.weight is [out, in] of dtype T:
//   X.weight   U32 [out, in * bits / 32]  the codes, each row a bit stream
//                                          (LSB first) in little-endian uint32
//                                          words: lowbit's code rows as they are
//   X.scales   T   [out, in / group]
//   X.biases   T   [out, in / group]      w ~= scales * q + biases
// and mlx-lm's config.json holds {"quantization": {"group_size": G, "bits": B}}
// (and the same under "quantization_config"), with an entry
// "X": {"group_size": g, "bits": b} for each layer X quantized otherwise
// (mlx-lm's per-layer quantization, as its mixed recipes write it and its
// loader reads it). The codes and params are
// mx.quantize's bit for bit (the registry's mlx-* formats, whose params take
// the weights' dtype here as MLX's do).
//
// convert_checkpoint() quantizes every 2-D F32/F16/BF16 tensor named
// "*.weight" whose rows divide into groups, as mlx-lm quantizes every Linear
// and Embedding (the output head included) whose input dimension does; other
// tensors are copied unchanged, and mlx-lm loads those layers unquantized (it
// quantizes a layer only where "X.scales" exists). read_layer() gives a
// layer back as a quantized matrix (dequantize, or convert it further);
// to_ggml_min_blocks() turns a 4- or 5-bit layer with fp16 params into ggml's
// Q4_1 or Q5_1 blocks exactly (the same codes, scales and biases).

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <regex>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../detail/names.hpp"
#include "../core/numeric.hpp"
#include "../detail/file_io.hpp"
#include "../granularity.hpp"
#include "../pack/bits.hpp"
#include "../quantizer.hpp"
#include "../scheme/affine.hpp"
#include "ggml_convert.hpp"
#include "json.hpp"
#include "safetensors.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace mlx {

/// A checkpoint format name: "mlx-<bits>b-g<group>", bits 2, 3, 4, 5, 6 or
/// 8 and group 32, 64 or 128 (what MLX's affine mode supports).
struct checkpoint_format {
    int bits = 4;
    std::size_t group = 64;
    std::string name() const { return "mlx-" + std::to_string(bits) + "b-g" + std::to_string(group); }
    /// The block mlx-lm's config.json holds under "quantization".
    std::string config_json() const {
        return "{\"group_size\": " + std::to_string(group) + ", \"bits\": " + std::to_string(bits) + "}";
    }
};

inline bool valid_bits(int b) noexcept { return b == 2 || b == 3 || b == 4 || b == 5 || b == 6 || b == 8; }
inline bool valid_group(std::size_t g) noexcept { return g == 32 || g == 64 || g == 128; }

inline checkpoint_format parse_checkpoint_format(std::string_view s) {
    const auto bad = [&] {
        LOWBIT_THROW(errc::unknown_format, "MLX format '" + std::string(s) +
                                               "' is not mlx-{2,3,4,5,6,8}b-g{32,64,128} (e.g. mlx-4b-g64; a "
                                               "checkpoint's scales and biases take its weights' dtype)");
    };
    const auto bg = lowbit::detail::parse_bits_group(s, "mlx-");
    if (!bg || !valid_bits(bg->bits) || !valid_group(bg->group)) bad();
    return {bg->bits, bg->group};
}

/// A per-layer format: layers whose name (X of "X.weight") matches `pattern`
/// (std::regex_search, ECMAScript; compiled once, here) take `format`.
struct layer_rule {
    std::string pattern;
    checkpoint_format format{};
    std::regex compiled;

    layer_rule(std::string p, const checkpoint_format& f) : pattern(std::move(p)), format(f) {
        try {
            compiled = std::regex(pattern);
        } catch (const std::regex_error& e) {
            LOWBIT_THROW(errc::invalid_argument, "layer format: '" + pattern + "' is not a regular expression (" +
                                                     e.what() + ")");
        }
    }
    bool matches(const std::string& layer) const { return std::regex_search(layer, compiled); }
};

/// "REGEX=mlx-<b>b-g<G>", as the command line gives a layer_rule.
inline layer_rule parse_layer_rule(std::string_view s) {
    const std::size_t eq = s.rfind('=');
    if (eq == std::string_view::npos || eq == 0)
        LOWBIT_THROW(errc::invalid_argument, "layer format '" + std::string(s) + "' is not REGEX=mlx-<b>b-g<G>");
    return layer_rule(std::string(s.substr(0, eq)), parse_checkpoint_format(s.substr(eq + 1)));
}

struct convert_options {
    checkpoint_format format{};
    /// Per-layer formats, the first matching rule winning; other layers take `format`.
    std::vector<layer_rule> layers;
    unsigned threads = 1;
    /// Called after each tensor: (index, count, name, quantized).
    safetensors::rewrite_progress progress;
};

struct convert_report : safetensors::rewrite_counts {
    /// 2-D float weights left unquantized because their rows do not divide into groups.
    std::vector<std::string> not_divisible;
    /// Layers quantized with another format than the default, in file order.
    std::vector<std::pair<std::string, checkpoint_format>> per_layer;

    /// mlx-lm's config.json "quantization" block for this conversion.
    std::string config_json(const checkpoint_format& f) const {
        std::string j = f.config_json();
        if (per_layer.empty()) return j;
        j.pop_back();
        for (const auto& [layer, g] : per_layer) j += ", " + json::dump(json::value(layer)) + ": " + g.config_json();
        return j + "}";
    }
};

/// Whether a tensor is a weight convert_checkpoint quantizes when its rows
/// divide into groups.
inline bool is_weight(const safetensors::tensor_info& t) {
    using safetensors::dtype;
    if (t.dtype != dtype::f32 && t.dtype != dtype::f16 && t.dtype != dtype::bf16) return false;
    if (t.shape.size() != 2 || t.numel() == 0) return false;
    return std::string_view(t.name).ends_with(".weight");
}

inline bool should_quantize(const safetensors::tensor_info& t, const checkpoint_format& f) {
    return is_weight(t) && t.shape[1] % f.group == 0;
}

/// The format of layer `layer` under o: the first matching layer rule's, or o.format.
inline checkpoint_format format_of(const std::string& layer, const convert_options& o) {
    for (const auto& r : o.layers)
        if (r.matches(layer)) return r.format;
    return o.format;
}

namespace detail {

inline param_dtype params_of(safetensors::dtype t) {
    return t == safetensors::dtype::f16 ? param_dtype::f16 : t == safetensors::dtype::bf16 ? param_dtype::bf16
                                                                                          : param_dtype::f32;
}

/// A layer's parts as written: codes (uint32 words), scales and biases in
/// the weights' dtype.
struct layer_parts {
    std::vector<std::uint8_t> codes;
    std::vector<std::byte> scales, biases;
};

inline std::vector<std::byte> params_as(const std::vector<float>& v, std::size_t n, param_dtype t) {
    const safetensors::dtype d = t == param_dtype::f32   ? safetensors::dtype::f32
                                 : t == param_dtype::f16 ? safetensors::dtype::f16
                                                         : safetensors::dtype::bf16;
    return safetensors::float_bytes(v.empty() ? std::vector<float>(n, 0.0f) : v, d);
}

template <int Bits>
layer_parts quantize_layer(matrix_view<const float> w, std::size_t group, param_dtype t, unsigned threads) {
    quantizer qz(affine<Bits, affine_mode::mlx>{}, per_group(group));
    qz.scheme.scale_type = t;
    qz.threads = threads;
    const auto q = qz.quantize(w);
    layer_parts p;
    p.codes = q.codes;  // rows of cols * bits / 8 bytes (a multiple of 4): MLX's words
    p.scales = params_as(q.scale, q.layout.count, t);
    p.biases = params_as(q.bias, q.layout.count, t);
    return p;
}

inline layer_parts quantize_layer(matrix_view<const float> w, const checkpoint_format& f, param_dtype t,
                                  unsigned threads) {
    switch (f.bits) {
    case 2: return quantize_layer<2>(w, f.group, t, threads);
    case 3: return quantize_layer<3>(w, f.group, t, threads);
    case 4: return quantize_layer<4>(w, f.group, t, threads);
    case 5: return quantize_layer<5>(w, f.group, t, threads);
    case 6: return quantize_layer<6>(w, f.group, t, threads);
    default: return quantize_layer<8>(w, f.group, t, threads);
    }
}

template <int Bits>
std::unique_ptr<quantized_base> layer_from(std::span<const std::byte> codes, std::vector<float> scales,
                                           std::vector<float> biases, std::size_t rows, std::size_t cols,
                                           std::size_t group, param_dtype t) {
    auto q = std::make_unique<quantized<affine<Bits, affine_mode::mlx>>>();
    q->scheme.scale_type = t;
    q->gran = per_group(group);
    q->n_rows = rows;
    q->n_cols = cols;
    q->layout = layout_for(q->gran, rows, cols);
    q->code_stride = packed_bytes(cols, Bits);
    q->codes.resize(codes.size());
    std::memcpy(q->codes.data(), codes.data(), codes.size());
    q->scale = std::move(scales);
    q->bias = std::move(biases);
    return q;
}

}  // namespace detail

/// Converts the safetensors checkpoint `in` to MLX's quantized layout of
/// o.format, written atomically to `out` (metadata copied).
inline convert_report convert_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                         const convert_options& o = {}) {
    using safetensors::dtype;
    convert_report rep;
    std::vector<std::unique_ptr<detail::layer_parts>> keep;  // the writer keeps spans until it finishes
    const auto convert = [&](const safetensors::tensor_info& t, safetensors::writer& w) {
        if (!is_weight(t)) return false;
        const std::string layer = t.name.substr(0, t.name.size() - std::string_view(".weight").size());
        const checkpoint_format f = format_of(layer, o);
        if (!should_quantize(t, f)) {
            rep.not_divisible.push_back(t.name);
            return false;
        }
        const std::uint64_t rows = t.shape[0], cols = t.shape[1];
        const std::vector<float> x = safetensors::finite_floats(t);
        auto p = std::make_unique<detail::layer_parts>(detail::quantize_layer(
            matrix_view<const float>(x.data(), static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)), f,
            detail::params_of(t.dtype), o.threads));
        const std::uint64_t groups = cols / f.group;
        w.add(t.name, dtype::u32, {rows, cols * static_cast<std::uint64_t>(f.bits) / 32},
              std::as_bytes(std::span<const std::uint8_t>(p->codes)));
        w.add(layer + ".scales", t.dtype, {rows, groups}, p->scales);
        w.add(layer + ".biases", t.dtype, {rows, groups}, p->biases);
        if (f.bits != o.format.bits || f.group != o.format.group) rep.per_layer.emplace_back(layer, f);
        keep.push_back(std::move(p));
        return true;
    };
    // The float copy, the codes and the params: about 6 bytes per element.
    static_cast<safetensors::rewrite_counts&>(rep) = safetensors::rewrite(in, out, convert, 6, o.progress);
    return rep;
}

/// The quantized layer "X" ("X.weight", "X.scales", "X.biases") of an MLX
/// checkpoint of format `f` (mlx-lm's config.json gives it), as lowbit's
/// mlx-* matrix: its codes, and scales and biases in the file's dtype.
/// Shapes and dtypes are checked against each other and against `f`.
inline std::unique_ptr<quantized_base> read_layer(const safetensors::file& file, const std::string& layer,
                                                  const checkpoint_format& f) {
    using safetensors::dtype;
    const std::string where = "MLX layer '" + layer + "' (" + f.name() + ")";
    const auto& wq = file.at(layer + ".weight");
    const auto& sc = file.at(layer + ".scales");
    const auto& bi = file.at(layer + ".biases");
    const auto fail = [&](const std::string& what) { LOWBIT_THROW(errc::corrupt_file, where + ": " + what); };
    if (wq.dtype != dtype::u32 || wq.shape.size() != 2)
        fail("weight is " + std::string(safetensors::to_string(wq.dtype)) + " " +
             safetensors::detail::show_shape(wq.shape) + ", expected U32 [out, in * bits / 32]");
    if (sc.dtype != dtype::f32 && sc.dtype != dtype::f16 && sc.dtype != dtype::bf16)
        fail("scales are " + std::string(safetensors::to_string(sc.dtype)) + ", expected F32, F16 or BF16");
    if (bi.dtype != sc.dtype || bi.shape != sc.shape)
        fail("biases (" + std::string(safetensors::to_string(bi.dtype)) + " " + safetensors::detail::show_shape(bi.shape) +
             ") differ from scales (" + std::string(safetensors::to_string(sc.dtype)) + " " +
             safetensors::detail::show_shape(sc.shape) + ")");
    const std::uint64_t rows = wq.shape[0], words = wq.shape[1];
    if (sc.shape.size() != 2 || sc.shape[0] != rows)
        fail("scales " + safetensors::detail::show_shape(sc.shape) + " do not have the weight's " +
             std::to_string(rows) + " rows");
    const std::uint64_t cols = sc.shape[1] * f.group;
    if (cols == 0 || words * 32 != cols * static_cast<std::uint64_t>(f.bits))
        fail("weight " + safetensors::detail::show_shape(wq.shape) + " does not hold " + std::to_string(cols) +
             " codes of " + std::to_string(f.bits) + " bits per row (scales " +
             safetensors::detail::show_shape(sc.shape) + ", groups of " + std::to_string(f.group) + ")");
    std::vector<float> s, b;
    try {
        s = safetensors::finite_floats(sc);
        b = safetensors::finite_floats(bi);
    } catch (const error& e) {
        rethrow_with_context(e, where);
    }
    const param_dtype pt = detail::params_of(sc.dtype);
    const auto r = static_cast<std::size_t>(rows), c = static_cast<std::size_t>(cols);
    switch (f.bits) {
    case 2: return detail::layer_from<2>(wq.data(), s, b, r, c, f.group, pt);
    case 3: return detail::layer_from<3>(wq.data(), s, b, r, c, f.group, pt);
    case 4: return detail::layer_from<4>(wq.data(), s, b, r, c, f.group, pt);
    case 5: return detail::layer_from<5>(wq.data(), s, b, r, c, f.group, pt);
    case 6: return detail::layer_from<6>(wq.data(), s, b, r, c, f.group, pt);
    default: return detail::layer_from<8>(wq.data(), s, b, r, c, f.group, pt);
    }
}

/// ggml's Q4_1 (4-bit) or Q5_1 (5-bit) blocks holding an MLX layer exactly:
/// each MLX group of G values is G / 32 ggml blocks with the group's scale
/// as d and its bias as m, and the same codes (d * q + m is MLX's scale * q +
/// bias). The params must be fp16 values (an fp16 checkpoint's are; a bf16 or
/// fp32 one converts where its values happen to be): otherwise
/// errc::invalid_argument names the group, rather than a rounded copy.
template <int Bits>
std::vector<std::uint8_t> to_ggml_min_blocks(const quantized<affine<Bits, affine_mode::mlx>>& q) {
    static_assert(Bits == 4 || Bits == 5, "to_ggml_min_blocks: ggml's Q4_1 and Q5_1 hold 4- and 5-bit codes");
    using S = ggml_affine<Bits, ggml_rule::min_max>;
    const std::size_t G = q.layout.group;
    if (q.layout.param_stride * G != q.n_cols || G % 32 != 0 || q.scales_q)
        LOWBIT_THROW(errc::invalid_argument, "to_ggml_min_blocks: an MLX layer has row-wise groups of 32, 64 or 128");
    quantized<S> g;
    g.gran = per_group(32);
    g.n_rows = q.n_rows;
    g.n_cols = q.n_cols;
    g.layout = layout_for(g.gran, g.n_rows, g.n_cols);
    g.code_stride = q.code_stride;
    g.codes = q.codes;
    g.scale.resize(g.layout.count);
    g.bias.resize(g.layout.count);
    for (std::size_t i = 0; i < g.layout.count; ++i) {
        const std::size_t src = i / (G / 32);  // row-major groups: G / 32 ggml blocks each
        g.scale[i] = q.scale[src];
        g.bias[i] = q.bias.empty() ? 0.0f : q.bias[src];
    }
    return to_ggml_blocks(g);
}

}  // namespace mlx
LOWBIT_NAMESPACE_END
