#pragma once
// The run-time tier: format names such as "int4-g128-sym" or "nf4-b64-dq"
// mapped to compile-time quantizer instantiations, for tools, comparison
// tables and file formats. Adding a format adds one entry to the table below.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "algorithms/rtn.hpp"
#include "core/error.hpp"
#include "core/view.hpp"
#include "detail/names.hpp"
#include "double_quant.hpp"
#include "formats/ggml_quantized.hpp"
#include "granularity.hpp"
#include "quantizer.hpp"
#include "scheme/affine.hpp"
#include "scheme/codebook.hpp"
#include "scheme/minifloat.hpp"

LOWBIT_NAMESPACE_BEGIN

/// Run-time options of a quantization.
struct quantize_options {
    unsigned threads = 1;  ///< 0 = all cores; results do not depend on it
};

using quantize_fn = std::unique_ptr<quantized_base> (*)(matrix_view<const float>, std::span<const float>,
                                                        const quantize_options&);

/// A named quantization format.
struct format {
    std::string_view name;
    std::string_view family;       ///< "integer", "codebook", "minifloat" or "ggml"
    std::string_view description;  ///< scheme, granularity and what is stored
    bool in_default_comparison = true;
    quantize_fn quantize = nullptr;
};

namespace detail {

template <class S, class DQ = no_double_quant>
std::unique_ptr<quantized_base> run_quantizer(quantizer<S, DQ> qz, matrix_view<const float> w,
                                              std::span<const float> importance, const quantize_options& opt) {
    qz.threads = opt.threads;
    return std::make_unique<quantized<S>>(qz.quantize(w, importance));
}

template <class S>
S with_scale_type(S s, param_dtype t) {
    s.scale_type = t;
    return s;
}

// Formats as functions: each builds its quantizer (cheap) and runs it.
#define LOWBIT_FORMAT_FN(fn, ...)                                                                            \
    inline std::unique_ptr<quantized_base> fn(matrix_view<const float> w, std::span<const float> importance, \
                                              const quantize_options& opt) {                                   \
        return run_quantizer(__VA_ARGS__, w, importance, opt);                                               \
    }

constexpr param_dtype f16 = param_dtype::f16;

LOWBIT_FORMAT_FN(q_int8_ch, quantizer(affine<8, affine_mode::symmetric>{}, per_channel()))
LOWBIT_FORMAT_FN(q_int8_g128, quantizer(with_scale_type(affine<8, affine_mode::symmetric>{}, f16), per_group(128)))
LOWBIT_FORMAT_FN(q_int4_g128_sym, quantizer(with_scale_type(affine<4, affine_mode::symmetric>{}, f16), per_group(128)))
LOWBIT_FORMAT_FN(q_int4_g128_asym, quantizer(with_scale_type(affine<4>{}, f16), per_group(128)))
LOWBIT_FORMAT_FN(q_int4_g128_mse,
                 quantizer(clip_search<affine<4>>{with_scale_type(affine<4>{}, f16)}, per_group(128)))
LOWBIT_FORMAT_FN(q_int4_g32_sym, quantizer(with_scale_type(affine<4, affine_mode::symmetric>{}, f16), per_group(32)))
LOWBIT_FORMAT_FN(q_int4_sb256,
                 quantizer(affine<4, affine_mode::symmetric>{}, super_block(256, 32),
                           double_quant<affine<6>>{with_scale_type(affine<6>{}, f16), 0, false, true}))
LOWBIT_FORMAT_FN(q_int3_g128, quantizer(with_scale_type(affine<3>{}, f16), per_group(128)))
LOWBIT_FORMAT_FN(q_int2_g64, quantizer(with_scale_type(affine<2>{}, f16), per_group(64)))
LOWBIT_FORMAT_FN(q_nf4_b64, quantizer(nf4(), per_group(64)))
LOWBIT_FORMAT_FN(q_nf4_b64_dq, quantizer(nf4(), per_group(64), double_quant<dynamic8>{dynamic8{}, 256, true, false}))
LOWBIT_FORMAT_FN(q_fp4_b64, quantizer(fp4(), per_group(64)))
LOWBIT_FORMAT_FN(q_fp4_b64_dq, quantizer(fp4(), per_group(64), double_quant<dynamic8>{dynamic8{}, 256, true, false}))
LOWBIT_FORMAT_FN(q_iq4nl_b32, quantizer(iq4_nl(), per_group(32)))
LOWBIT_FORMAT_FN(q_mxfp4, quantizer(mxfp4{}, per_group(32)))
LOWBIT_FORMAT_FN(q_mxfp6_e3m2, quantizer(mxfp6_e3m2{}, per_group(32)))
LOWBIT_FORMAT_FN(q_mxfp6_e2m3, quantizer(mxfp6_e2m3{}, per_group(32)))
LOWBIT_FORMAT_FN(q_mxfp8_e4m3, quantizer(mxfp8_e4m3{}, per_group(32)))
LOWBIT_FORMAT_FN(q_mxfp8_e5m2, quantizer(mxfp8_e5m2{}, per_group(32)))
LOWBIT_FORMAT_FN(q_nvfp4,
                 quantizer(nvfp4_elements{}, per_group(16),
                           double_quant<fp8_e4m3_amax>{fp8_e4m3_amax{}, 0, false, true, 6.0f * 448.0f}))
LOWBIT_FORMAT_FN(q_fp8_e4m3_ch, quantizer(fp8_e4m3_amax{}, per_channel()))

#undef LOWBIT_FORMAT_FN

// MLX's affine formats, mlx-<b>b-g<G>[-bf16|-f32]: mx.quantize's codes (encoded
// with its float32 scale and bias) with the params stored in fp16 (no suffix:
// what MLX gives for fp16 weights), bf16 or fp32.
template <int Bits, std::size_t Group, param_dtype T>
std::unique_ptr<quantized_base> q_mlx(matrix_view<const float> w, std::span<const float> importance,
                                      const quantize_options& opt) {
    return run_quantizer(quantizer(with_scale_type(affine<Bits, affine_mode::mlx>{}, T), per_group(Group)), w,
                         importance, opt);
}

struct format_name {
    std::string name, description;
};

template <int Bits, std::size_t Group, param_dtype T>
format mlx_format(std::vector<format_name>& names) {
    const char* suffix = T == param_dtype::f16 ? "" : T == param_dtype::bf16 ? "-bf16" : "-f32";
    const char* type = T == param_dtype::f16 ? "fp16" : T == param_dtype::bf16 ? "bf16" : "fp32";
    names.push_back({"mlx-" + std::to_string(Bits) + "b-g" + std::to_string(Group) + suffix,
                     "MLX affine " + std::to_string(Bits) + "-bit (mx.quantize), groups of " + std::to_string(Group) +
                         ", " + type + " scale + " + type + " bias"});
    const bool shown = Bits == 4 && Group == 64 && T == param_dtype::f16;
    return {names.back().name, "integer", names.back().description, shown, q_mlx<Bits, Group, T>};
}

template <int Bits, std::size_t Group>
void add_mlx_formats(std::vector<format>& table, std::vector<format_name>& names) {
    table.push_back(mlx_format<Bits, Group, param_dtype::f16>(names));
    table.push_back(mlx_format<Bits, Group, param_dtype::bf16>(names));
    table.push_back(mlx_format<Bits, Group, param_dtype::f32>(names));
}

template <int Bits>
void add_mlx_formats(std::vector<format>& table, std::vector<format_name>& names) {
    add_mlx_formats<Bits, 32>(table, names);
    add_mlx_formats<Bits, 64>(table, names);
    add_mlx_formats<Bits, 128>(table, names);
}

/// The mlx-* entries, in bits, group, params dtype order.
inline const std::vector<format>& mlx_formats() {
    // The entries' names and descriptions point into `names`, built once
    // beside them (reserved, so no string moves).
    static std::vector<format_name> names;
    static const std::vector<format> table = [] {
        names.reserve(6 * 3 * 3);
        std::vector<format> t;
        add_mlx_formats<2>(t, names);
        add_mlx_formats<3>(t, names);
        add_mlx_formats<4>(t, names);
        add_mlx_formats<5>(t, names);
        add_mlx_formats<6>(t, names);
        add_mlx_formats<8>(t, names);
        return t;
    }();
    return table;
}

// torchao's int4 weight-only (tinygemm's float zero-point; torchao 0.15.0,
// affine<4, asymmetric_float>), torchao-int4-g<G>[-v1[-f32]]:
// * no suffix: version 2 (Int4WeightOnlyConfig's default version, the
//   tile_packed_to_4d packing) on bf16 weights: computed in bf16, bf16 scale
//   and zero-point, eps = bf16's 2^-7;
// * -v1: version 1 on bf16 weights: the same with eps 1e-6;
// * -v1-f32: version 1 on fp32 weights (Int4CPULayout, the layout that
//   packs on the CPU): computed in fp32, fp32 scale and zero-point, eps 1e-6.
// The bf16 formats take the weights as bf16 (rounded to nearest even first,
// as `w.to(torch.bfloat16)` does).
enum class torchao_version : std::uint8_t { v1, v2 };

template <std::size_t Group, torchao_version V, param_dtype W>
std::unique_ptr<quantized_base> q_torchao(matrix_view<const float> w, std::span<const float> importance,
                                          const quantize_options& opt) {
    affine<4, affine_mode::asymmetric_float> s{};
    s.scale_type = W;
    s.float_zero = {W, W, V == torchao_version::v1 ? 1e-6f : 0x1p-7f};
    return run_quantizer(quantizer(s, per_group(Group)), w, importance, opt);
}

template <std::size_t Group, torchao_version V, param_dtype W>
format torchao_format(std::vector<format_name>& names) {
    const bool v1 = V == torchao_version::v1, f32 = W == param_dtype::f32;
    const std::string g = std::to_string(Group), type = f32 ? "fp32" : "bf16";
    names.push_back({"torchao-int4-g" + g + (v1 ? "-v1" : "") + (f32 ? "-f32" : ""),
                     "torchao int4 weight-only, version " + std::string(v1 ? "1" : "2") + " on " + type +
                         " weights: (q - 8) * scale + zero-point, groups of " + g + ", " + type + " scale + " +
                         type + " zero-point"});
    const bool shown = false;  // not in the default comparison: lowbit compare --formats NAME
    return {names.back().name, "integer", names.back().description, shown, q_torchao<Group, V, W>};
}

template <std::size_t Group>
void add_torchao_formats(std::vector<format>& table, std::vector<format_name>& names) {
    table.push_back(torchao_format<Group, torchao_version::v2, param_dtype::bf16>(names));
    table.push_back(torchao_format<Group, torchao_version::v1, param_dtype::bf16>(names));
    table.push_back(torchao_format<Group, torchao_version::v1, param_dtype::f32>(names));
}

/// The torchao-int4-* entries, in group order.
inline const std::vector<format>& torchao_formats() {
    static std::vector<format_name> names;  // as mlx_formats()
    static const std::vector<format> table = [] {
        names.reserve(4 * 3);
        std::vector<format> t;
        add_torchao_formats<32>(t, names);
        add_torchao_formats<64>(t, names);
        add_torchao_formats<128>(t, names);
        add_torchao_formats<256>(t, names);
        return t;
    }();
    return table;
}

// ggml's block types, with ggml's bytes (formats/ggml_quantized.hpp).
template <ggml::type T>
std::unique_ptr<quantized_base> q_ggml(matrix_view<const float> w, std::span<const float> importance,
                                       const quantize_options& opt) {
    return ggml::quantize_matrix(T, w, importance, opt.threads);
}

/// `t` with the MLX and torchao formats after int2-g64.
inline std::vector<format> with_owner_formats(std::vector<format> t) {
    const auto& mlx = mlx_formats();
    const auto& tao = torchao_formats();
    auto at = t.insert(std::find_if(t.begin(), t.end(), [](const format& f) { return f.name == "int2-g64"; }) + 1,
                       mlx.begin(), mlx.end());
    t.insert(at + static_cast<std::ptrdiff_t>(mlx.size()), tao.begin(), tao.end());
    return t;
}

inline const std::vector<format>& format_table() {
    static const std::vector<format> table = with_owner_formats({
        {"int8-ch", "integer", "8-bit symmetric, one fp32 scale per output channel", true, q_int8_ch},
        {"int8-g128", "integer", "8-bit symmetric, groups of 128, fp16 scales", false, q_int8_g128},
        {"int4-g128-sym", "integer", "4-bit symmetric (absmax/7), groups of 128, fp16 scales", true, q_int4_g128_sym},
        {"int4-g128-asym", "integer", "4-bit with zero-point (GPTQ/AWQ rule), groups of 128, fp16 scale + 4-bit zero",
         true, q_int4_g128_asym},
        {"int4-g128-mse", "integer", "int4-g128-asym with an MSE-optimal clipping search per group", true,
         q_int4_g128_mse},
        {"int4-g32-sym", "integer", "4-bit symmetric, groups of 32, fp16 scales", false, q_int4_g32_sym},
        {"int4-sb256", "integer",
         "4-bit symmetric in groups of 32; their scales as 6-bit codes under an fp16 scale per super-block of 256",
         true, q_int4_sb256},
        {"int3-g128", "integer", "3-bit with zero-point, groups of 128, fp16 scale + 3-bit zero", true, q_int3_g128},
        {"int2-g64", "integer", "2-bit with zero-point, groups of 64, fp16 scale + 2-bit zero", true, q_int2_g64},
        {"nf4-b64", "codebook", "bitsandbytes NF4, blocks of 64, fp32 absmax", true, q_nf4_b64},
        {"nf4-b64-dq", "codebook",
         "bitsandbytes NF4, blocks of 64, absmax nested: mean-subtracted 8-bit dynamic codes in blocks of 256", true,
         q_nf4_b64_dq},
        {"fp4-b64", "codebook", "bitsandbytes FP4, blocks of 64, fp32 absmax", true, q_fp4_b64},
        {"fp4-b64-dq", "codebook", "bitsandbytes FP4, blocks of 64, nested absmax", false, q_fp4_b64_dq},
        {"iq4nl-b32", "codebook", "IQ4_NL non-linear table, blocks of 32, fp16 scale", true, q_iq4nl_b32},
        {"mxfp4", "minifloat", "OCP MXFP4: E2M1 elements, blocks of 32, E8M0 scale", true, q_mxfp4},
        {"mxfp6-e3m2", "minifloat", "OCP MXFP6 E3M2, blocks of 32, E8M0 scale", false, q_mxfp6_e3m2},
        {"mxfp6-e2m3", "minifloat", "OCP MXFP6 E2M3, blocks of 32, E8M0 scale", true, q_mxfp6_e2m3},
        {"mxfp8-e4m3", "minifloat", "OCP MXFP8 E4M3, blocks of 32, E8M0 scale", true, q_mxfp8_e4m3},
        {"mxfp8-e5m2", "minifloat", "OCP MXFP8 E5M2, blocks of 32, E8M0 scale", false, q_mxfp8_e5m2},
        {"nvfp4", "minifloat", "NVFP4: E2M1 elements, blocks of 16, E4M3 scales under one fp32 tensor scale", true,
         q_nvfp4},
        {"fp8-e4m3-ch", "minifloat", "FP8 E4M3, one fp32 scale (amax/448) per output channel", true, q_fp8_e4m3_ch},
        {"q8_0", "ggml", "ggml Q8_0: 8-bit symmetric, blocks of 32, fp16 scale", true, q_ggml<ggml::type::q8_0>},
        {"q4_0", "ggml", "ggml Q4_0: 4-bit, blocks of 32, fp16 scale (max/-8)", true, q_ggml<ggml::type::q4_0>},
        {"q4_1", "ggml", "ggml Q4_1: 4-bit, blocks of 32, fp16 scale + fp16 min", false, q_ggml<ggml::type::q4_1>},
        {"q5_0", "ggml", "ggml Q5_0: 5-bit, blocks of 32, fp16 scale", false, q_ggml<ggml::type::q5_0>},
        {"q5_1", "ggml", "ggml Q5_1: 5-bit, blocks of 32, fp16 scale + fp16 min", false, q_ggml<ggml::type::q5_1>},
        {"q2_K", "ggml", "ggml Q2_K: 2-bit, 16 x 16 under 4-bit scales and mins, super-blocks of 256", true,
         q_ggml<ggml::type::q2_k>},
        {"q3_K", "ggml", "ggml Q3_K: 3-bit, 16 x 16 under 6-bit scales, super-blocks of 256", true,
         q_ggml<ggml::type::q3_k>},
        {"q4_K", "ggml", "ggml Q4_K: 4-bit, 8 x 32 under 6-bit scales and mins, super-blocks of 256", true,
         q_ggml<ggml::type::q4_k>},
        {"q5_K", "ggml", "ggml Q5_K: 5-bit, 8 x 32 under 6-bit scales and mins, super-blocks of 256", true,
         q_ggml<ggml::type::q5_k>},
        {"q6_K", "ggml", "ggml Q6_K: 6-bit, 16 x 16 under 8-bit scales, super-blocks of 256", true,
         q_ggml<ggml::type::q6_k>},
        {"iq4_nl", "ggml", "ggml IQ4_NL: non-linear 4-bit table, blocks of 32, fp16 scale (ggml's search)", false,
         q_ggml<ggml::type::iq4_nl>},
        {"iq4_xs", "ggml", "ggml IQ4_XS: IQ4_NL table, 8 x 32 under 6-bit scales, super-blocks of 256", true,
         q_ggml<ggml::type::iq4_xs>},
    });
    return table;
}

}  // namespace detail

/// Every registered format, in table order.
inline std::span<const format> formats() { return detail::format_table(); }

/// The format called `name`; an unknown name is an errc::unknown_format error
/// that lists the closest names.
inline const format& find_format(std::string_view name) {
    for (const auto& f : formats())
        if (f.name == name) return f;
    std::vector<std::pair<std::size_t, std::string_view>> near;
    for (const auto& f : formats()) {
        const std::size_t d = detail::edit_distance(name, f.name);
        const bool prefix = !name.empty() && f.name.substr(0, std::min(name.size(), f.name.size())) ==
                                                 name.substr(0, std::min(name.size(), f.name.size()));
        if (d <= 3 || prefix) near.emplace_back(prefix ? std::min<std::size_t>(d, 1) : d, f.name);
    }
    std::sort(near.begin(), near.end());
    std::string msg = "no format named '" + std::string(name) + "'";
    if (!near.empty()) {
        msg += "; did you mean ";
        for (std::size_t i = 0; i < near.size() && i < 4; ++i) {
            if (i) msg += ", ";
            msg += near[i].second;
        }
        msg += "?";
    }
    msg += " (`lowbit formats` lists them all)";
    LOWBIT_THROW(errc::unknown_format, msg);
}

// What every format does with bad input and with values near float's limits.
//
// Bad input is the same error in every format, checked once at the entry
// point (detail::check_weights, core/view.hpp's detail::check_view) before any
// format-specific work: a null data pointer with a non-zero shape, a row stride
// below the row length or an extent past the address space is
// errc::invalid_argument; a NaN or +-Inf weight is errc::non_finite naming its
// row and column; zero rows or columns give an empty result. dequantize and
// dequantize_to refuse a null output, a short output stride and a reversed row
// range the same way for every format (a range past the last row is empty).
//
// Finite input never dequantizes to Inf or NaN. The rule for huge values:
// where a format's stored params cannot represent a group's range, quantize
// throws errc::invalid_argument naming the row, the columns and the largest
// value, rather than storing an overflowed param. Per format:
// * fp16 scales (int8-g128, int4-*, int3-g128, int2-g64, iq4nl-b32) throw once
//   the group's scale passes 65504 (absmax ~ 65504 x the largest code); the
//   fp16 biases of mlx-* (no suffix) once the group's edge passes 65504;
//   torchao's scale and zero-point, int8-ch's fp32 scale and the scale and bias
//   of mlx-*-bf16 and mlx-*-f32 only when the range or a reconstruction
//   overflows float (e.g. rows holding +-FLT_MAX).
// * int4-sb256 throws when its fp16 super-block scale (the 6-bit sub-scales'
//   step) would overflow, i.e. for sub-scales beyond 65504 x 63.
// * nf4-b64, fp4-b64 (fp32 absmax) and fp8-e4m3-ch (fp32 amax/448) hold any
//   finite value; their -dq variants and nvfp4 quantize the scales again
//   (8-bit dynamic codes, E4M3 under an fp32 tensor scale), where a group far
//   smaller than the largest keeps only a coarse scale (or, for nvfp4, an E4M3
//   block scale that underflows to 0): finite, lossy, by those formats' design.
// * OCP MX formats (mxfp4, mxfp6-*, mxfp8-*) saturate by definition: the E8M0
//   scale is 2^(floor(log2 amax) - emax), at most 2^127, and elements beyond
//   the element's largest normal clamp to it; every finite input gives finite
//   output.
// * ggml formats follow ggml: a value beyond what the type's blocks can hold
//   (ggml::largest_representable: 65504 x the largest code x sub-scale, e.g.
//   524032 for q4_0) throws before ggml's search runs (where ggml would write
//   an Inf scale or, for q3_K, q6_K and iq4_xs, a zero one), and a block that
//   ggml_validate_row_data would reject (an fp16 d, m or dmin that is Inf or
//   NaN, such as q4_1's min below -65504) throws instead of being returned
//   (ggml::find_invalid_block, formats/ggml_validate.hpp).
// Beyond that every generic format checks what each stored code decodes to
// under the stored params and throws if any is not finite, so no rounding at
// the top of float's range (scale x largest code) can reach the output.
// dequantize_to fp16 output is the caller's choice of type: values beyond
// 65504 become +-Inf there, as any fp16 conversion does. The mlx-* formats'
// fp16 (bf16 for -bf16) output is mx.dequantize's, which rounds scale * q to
// that type before adding the bias: like MLX, a group spanning +-65504 gets
// -Inf where the product passes -65504 (affine<>::decode_in).

/// Quantize `w` in format `f` (see quantizer::quantize for `importance`). Bad
/// input and values the format cannot represent get the same errors in every
/// format (see above).
inline std::unique_ptr<quantized_base> quantize(const format& f, matrix_view<const float> w,
                                                std::span<const float> importance = {},
                                                const quantize_options& opt = {}) {
    if (f.quantize == nullptr)
        LOWBIT_THROW(errc::invalid_argument, "format '" + std::string(f.name) + "' has no quantize function");
    return f.quantize(w, importance, opt);
}

LOWBIT_NAMESPACE_END
