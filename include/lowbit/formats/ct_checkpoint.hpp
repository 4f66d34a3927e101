#pragma once
// compressed-tensors "pack-quantized" checkpoints in safetensors: what
// llm-compressor writes for integer weight-only schemes (W4A16, W8A16 and
// their asymmetric forms) and vLLM and transformers load. For a quantized
// linear layer X whose weight is [out, in] of dtype T (F32, F16 or BF16):
//   X.weight_packed      I32 [out, ceil(in * bits / 32)]  the signed codes q
//                        (-2^(bits-1) .. 2^(bits-1) - 1) offset by
//                        2^(bits-1) and packed along in: element j of a row
//                        at bit j * bits of the row's word stream, the first
//                        in the least significant bits (a field may cross
//                        into the next word; unused high bits are 0)
//   X.weight_scale       T [out, in / group_size] ("group") or [out, 1]
//                        ("channel")
//   X.weight_zero_point  asymmetric schemes only: I32 [ceil(out * bits / 32),
//                        groups], the signed zero points offset like the
//                        codes and packed along out
//   X.weight_shape       I64 [2]: out, in
// with w = (q - zero) * scale, rounded to T. X.weight is gone; X.bias stays.
// config.json's "quantization_config" names the scheme (config_json()).
//
// The rule (compressed-tensors' calculate_qparams and quantize, with
// llm-compressor's min-max weight observer), per group of a row:
//   lo = min(min w, 0), hi = max(max w, 0), r = 2^bits - 1 held in T
//   symmetric:  scale = max(-lo, hi) / (r / 2), zero 0
//   asymmetric: scale = (hi - lo) / r, zero = round(clamp(-2^(bits-1) - lo / scale))
//   scale 0 becomes T's epsilon; q = round(clamp(w / scale + zero)), ties to even
// every operation rounded to T as torch computes on tensors of dtype T. The
// division w / scale depends on where compressed-tensors ran (rules): its
// eager path, on a CPU and on any device before 0.18, divides in T; from
// 0.18 on, a CUDA GPU runs a Triton kernel that divides in float32. The two
// differ in about 0.7% of a bf16 model's 4-bit codes and 10% of its 8-bit
// codes; scales and zero points agree.
//
// 2-8 bits. Readers of 3-, 5-, 6- and 7-bit checkpoints written by
// compressed-tensors 0.17 and before (32 / bits fields a word, never
// crossing) are refused by name; 2, 4 and 8 bits never differed. The
// removed act-order layout (weight_g_idx) is not written or read.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"
#include "../detail/names.hpp"
#include "../pack/bits.hpp"
#include "../parallel.hpp"
#include "json.hpp"
#include "model_config.hpp"
#include "safetensors.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ct {

/// Where compressed-tensors computes w / scale: `cuda` in float32 (its Triton
/// kernel, 0.18 and later on a GPU), `cpu` in the weight's dtype (its eager
/// path).
enum class rules : std::uint8_t { cuda, cpu };

constexpr std::string_view to_string(rules r) noexcept { return r == rules::cuda ? "cuda" : "cpu"; }

inline rules parse_rules(std::string_view s) {
    if (s == "cuda") return rules::cuda;
    if (s == "cpu") return rules::cpu;
    LOWBIT_THROW(errc::invalid_argument, "compressed-tensors rules '" + std::string(s) + "' are not cuda or cpu");
}

/// A pack-quantized scheme: "ct-<bits>b-g<group>" or "ct-<bits>b-ch" (one
/// scale per output row), "-asym" for a zero point; the presets ct-w4a16
/// (4 bits, groups of 128, symmetric), ct-w4a16-asym and ct-w8a16 (8 bits,
/// groups of 128, as compressed-tensors 0.18 and later define W8A16).
struct checkpoint_format {
    int bits = 4;
    std::size_t group = 128;  ///< 0: per output channel
    bool sym = true;
    rules numerics = rules::cuda;
    /// The config's actorder: "static" where GPTQ took columns by decreasing
    /// Hessian diagonal (llm-compressor's default; the layout is the same).
    bool act_order = false;

    std::string name() const {
        return "ct-" + std::to_string(bits) + "b-" + (group ? "g" + std::to_string(group) : std::string("ch")) +
               (sym ? "" : "-asym");
    }
    std::size_t groups_of(std::size_t cols) const noexcept { return group ? cols / group : 1; }

    /// config.json's "quantization_config", in the form compressed-tensors
    /// 0.19 writes (keys sorted); `ignore` lists the linear layers left in
    /// floating point (lm_head among them).
    std::string config_json(std::span<const std::string> ignore) const {
        using json::value;
        value weights = value::object(
            {{"actorder", act_order ? value("static") : value(nullptr)},
             {"block_structure", nullptr},
             {"dynamic", false},
             {"group_size", group ? value(static_cast<std::int64_t>(group)) : value(nullptr)},
             {"num_bits", static_cast<std::int64_t>(bits)},
             {"observer", nullptr},
             {"observer_kwargs", value::object()},
             {"scale_dtype", nullptr},
             {"strategy", group ? "group" : "channel"},
             {"symmetric", sym},
             {"type", "int"},
             {"zp_dtype", sym ? value(nullptr) : value("torch.int8")}});
        value group0 = value::object({{"format", "pack-quantized"},
                                      {"input_activations", nullptr},
                                      {"output_activations", nullptr},
                                      {"targets", value::array({value("Linear")})},
                                      {"weights", std::move(weights)}});
        value ig = value::array();
        for (const auto& n : ignore) ig.push_back(value(n));
        const value q = value::object({{"config_groups", value::object({{"group_0", std::move(group0)}})},
                                       {"format", "pack-quantized"},
                                       {"global_compression_ratio", nullptr},
                                       {"ignore", std::move(ig)},
                                       {"kv_cache_scheme", nullptr},
                                       {"quant_method", "compressed-tensors"},
                                       {"quantization_status", "compressed"},
                                       {"sparsity_config", value::object()},
                                       {"transform_config", value::object()},
                                       {"version", "0.19.0"}});
        return json::dump_python(q);
    }
};

inline bool valid_bits(int b) noexcept { return b >= 2 && b <= 8; }

/// "ct-4b-g128", "ct-8b-ch", "ct-4b-g32-asym", "ct-w4a16", ... (cuda rules).
inline checkpoint_format parse_checkpoint_format(std::string_view s) {
    const std::string given(s);
    checkpoint_format f;
    if (s.ends_with("-asym")) {
        f.sym = false;
        s.remove_suffix(5);
    }
    if (s == "ct-w4a16" || s == "ct-w8a16") {
        f.bits = s == "ct-w4a16" ? 4 : 8;
        f.group = 128;
        return f;
    }
    const auto bg = lowbit::detail::parse_bits_group(s, "ct-", true);
    if (!bg || !valid_bits(bg->bits) || (!bg->channel && (bg->group == 0 || bg->group > (std::size_t{1} << 30))))
        LOWBIT_THROW(errc::unknown_format, "compressed-tensors format '" + given +
                                               "' is not ct-<2..8>b-g<group>, ct-<2..8>b-ch (either with -asym), "
                                               "ct-w4a16, ct-w4a16-asym or ct-w8a16");
    f.bits = bg->bits;
    f.group = bg->group;
    return f;
}

/// One layer's codes and params, in the weight's orientation.
struct layer {
    std::size_t rows = 0, cols = 0, groups = 0;
    int bits = 4;
    safetensors::dtype dtype = safetensors::dtype::bf16;  ///< the scales' (the model's) dtype
    std::vector<std::int8_t> codes;                       ///< rows x cols, signed
    std::vector<float> scale;                             ///< rows x groups, values of dtype
    std::vector<std::int8_t> zero;                        ///< rows x groups, signed (0 when symmetric)

    std::size_t group_of(std::size_t c) const noexcept { return c / (cols / groups); }
    /// (q - zero) * scale rounded to dtype: what compressed-tensors'
    /// decompressor gives.
    float value(std::size_t r, std::size_t c) const noexcept {
        const std::size_t g = r * groups + group_of(c);
        return safetensors::stored_value(
            static_cast<float>(codes[r * cols + c] - zero[g]) * scale[g], dtype);
    }
    std::vector<float> dequantize() const {
        std::vector<float> w(rows * cols);
        for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t c = 0; c < cols; ++c) w[r * cols + c] = value(r, c);
        return w;
    }
};

/// Why a weight [rows, cols] cannot take format f (empty if it can):
/// compressed-tensors needs whole groups.
inline std::string unfit_reason(std::uint64_t /*rows*/, std::uint64_t cols, const checkpoint_format& f) {
    if (f.group && cols % f.group != 0)
        return "its " + std::to_string(cols) + " input features are not a multiple of the group size " +
               std::to_string(f.group);
    return {};
}

namespace detail {

/// The smallest step of dtype t at 1 (torch.finfo(t).eps).
inline float epsilon(safetensors::dtype t) noexcept {
    if (t == safetensors::dtype::bf16) return 0x1p-7f;
    if (t == safetensors::dtype::f16) return 0x1p-10f;
    return std::numeric_limits<float>::epsilon();
}

/// One group's scale and zero point (calculate_qparams on the observer's
/// min and max), each operation rounded to t.
inline void fit(const float* w, std::size_t n, int bits, bool sym, safetensors::dtype t, float& scale,
                std::int8_t& zero) noexcept {
    const auto in_t = [t](float x) { return safetensors::stored_value(x, t); };
    float lo = 0.0f, hi = 0.0f;
    for (std::size_t i = 0; i < n; ++i) {
        lo = std::min(lo, w[i]);
        hi = std::max(hi, w[i]);
    }
    const float qmin = -static_cast<float>(1 << (bits - 1)), qmax = static_cast<float>((1 << (bits - 1)) - 1);
    const float range = in_t(qmax - qmin);
    float zp = 0.0f;
    if (sym) {
        scale = in_t(std::max(-lo, hi) / in_t(range / 2.0f));
    } else {
        scale = in_t(in_t(hi - lo) / range);
        // An all-zero group divides 0 by 0 here (before the scale becomes
        // epsilon): torch carries the NaN through clamp and round to an int8
        // conversion that gives 0.
        zp = in_t(qmin - in_t(lo / scale));
        zp = std::isnan(zp) ? 0.0f : std::clamp(zp, qmin, qmax);
    }
    if (scale == 0.0f) scale = epsilon(t);
    zero = static_cast<std::int8_t>(std::nearbyint(zp));
}

/// w's signed code in a group of (scale, zero).
inline std::int8_t code(float w, float scale, float zero, int bits, rules r, safetensors::dtype t) noexcept {
    const float qmin = -static_cast<float>(1 << (bits - 1)), qmax = static_cast<float>((1 << (bits - 1)) - 1);
    float v;
    if (r == rules::cpu) {
        v = safetensors::stored_value(w / scale, t);
        if (zero != 0.0f) v = safetensors::stored_value(v + zero, t);
    } else {
        v = w / scale + zero;
    }
    return static_cast<std::int8_t>(std::nearbyint(std::clamp(v, qmin, qmax)));
}

}  // namespace detail

/// Weight w [rows, cols] (values of dtype t, as the checkpoint holds them)
/// quantized by format f's rule. Rows split across `threads` (0: all cores);
/// the result does not depend on it.
inline layer quantize_layer(matrix_view<const float> w, const checkpoint_format& f, safetensors::dtype t,
                            unsigned threads = 1) {
    if (t != safetensors::dtype::f32 && t != safetensors::dtype::f16 && t != safetensors::dtype::bf16)
        LOWBIT_THROW(errc::invalid_argument, "ct::quantize_layer: the model dtype " +
                                                 std::string(safetensors::to_string(t)) + " is not F32, F16 or BF16");
    if (!valid_bits(f.bits))
        LOWBIT_THROW(errc::invalid_argument, "ct::quantize_layer: " + std::to_string(f.bits) + " bits is not 2..8");
    if (const auto why = unfit_reason(w.rows(), w.cols(), f); !why.empty())
        LOWBIT_THROW(errc::not_divisible, "ct::quantize_layer: the weight [" + std::to_string(w.rows()) + ", " +
                                              std::to_string(w.cols()) + "]: " + why);
    layer l;
    l.rows = w.rows();
    l.cols = w.cols();
    l.groups = f.groups_of(l.cols);
    l.bits = f.bits;
    l.dtype = t;
    l.codes.resize(l.rows * l.cols);
    l.scale.resize(l.rows * l.groups);
    l.zero.assign(l.rows * l.groups, 0);
    const std::size_t gs = l.groups ? l.cols / l.groups : 0;
    parallel_for(l.rows, threads, 16, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r)
            for (std::size_t g = 0; g < l.groups; ++g) {
                const float* src = &w(r, g * gs);
                const std::size_t k = r * l.groups + g;
                detail::fit(src, gs, f.bits, f.sym, t, l.scale[k], l.zero[k]);
                std::int8_t* dst = &l.codes[r * l.cols + g * gs];
                for (std::size_t i = 0; i < gs; ++i)
                    dst[i] = detail::code(src[i], l.scale[k], static_cast<float>(l.zero[k]), f.bits, f.numerics, t);
            }
    });
    return l;
}

/// Writes layer `name`'s weight_packed, weight_scale, weight_zero_point
/// (asymmetric formats) and weight_shape to w.
inline void add_layer(safetensors::writer& w, const std::string& name, const layer& l, const checkpoint_format& f) {
    using safetensors::dtype;
    const std::string where = "compressed-tensors layer '" + name + "'";
    if (l.bits != f.bits)
        LOWBIT_THROW(errc::invalid_argument, where + ": " + std::to_string(l.bits) + "-bit codes for a " +
                                                 std::to_string(f.bits) + "-bit checkpoint");
    if (l.groups != f.groups_of(l.cols) || l.codes.size() != l.rows * l.cols || l.scale.size() != l.rows * l.groups ||
        l.zero.size() != l.scale.size() || !unfit_reason(l.rows, l.cols, f).empty())
        LOWBIT_THROW(errc::shape_mismatch, where + ": codes, scales and zero points do not match " +
                                               std::to_string(l.rows) + " x " + std::to_string(l.cols) + " in " +
                                               f.name() + "'s groups");
    const int half = 1 << (f.bits - 1);
    const auto offset = [&](std::int8_t q, const char* what, std::size_t i) {
        if (q < -half || q >= half)
            LOWBIT_THROW(errc::invalid_argument, where + ": " + what + " " + std::to_string(i) + " is " +
                                                     std::to_string(q) + ", outside " + std::to_string(f.bits) +
                                                     " signed bits");
        return static_cast<std::uint8_t>(q + half);
    };
    std::vector<std::uint8_t> u(l.codes.size());
    for (std::size_t i = 0; i < u.size(); ++i) u[i] = offset(l.codes[i], "code", i);
    const std::size_t words = packed_words_u32(l.cols, f.bits);
    std::vector<std::uint32_t> packed(l.rows * words, 0);
    for (std::size_t r = 0; r < l.rows; ++r)
        lowbit::detail::pack_stream_u32(&u[r * l.cols], 1, l.cols, f.bits, &packed[r * words], 1);
    w.add(name + ".weight_packed", dtype::i32, {l.rows, words}, safetensors::word_bytes(packed));
    w.add(name + ".weight_scale", l.dtype, {l.rows, l.groups}, safetensors::float_bytes(l.scale, l.dtype));
    if (!f.sym) {
        std::vector<std::uint8_t> z(l.zero.size());
        for (std::size_t i = 0; i < z.size(); ++i) z[i] = offset(l.zero[i], "zero point", i);
        const std::size_t zwords = packed_words_u32(l.rows, f.bits);
        std::vector<std::uint32_t> zp(zwords * l.groups, 0);
        for (std::size_t g = 0; g < l.groups; ++g)
            lowbit::detail::pack_stream_u32(&z[g], l.groups, l.rows, f.bits, &zp[g], l.groups);
        w.add(name + ".weight_zero_point", dtype::i32, {zwords, l.groups}, safetensors::word_bytes(zp));
    } else {
        for (std::size_t i = 0; i < l.zero.size(); ++i)
            if (l.zero[i] != 0)
                LOWBIT_THROW(errc::invalid_argument,
                             where + ": zero point " + std::to_string(i) + " is not 0 in a symmetric scheme");
    }
    std::vector<std::byte> shape(16);
    const std::int64_t dims[2] = {static_cast<std::int64_t>(l.rows), static_cast<std::int64_t>(l.cols)};
    std::memcpy(shape.data(), dims, 16);
    w.add(name + ".weight_shape", dtype::i64, {2}, std::move(shape));
}

struct convert_options {
    checkpoint_format format{};
    unsigned threads = 1;  ///< 0: all cores
    safetensors::rewrite_progress progress;
};

struct convert_report : safetensors::rewrite_counts {
    std::vector<std::pair<std::string, std::string>> kept;  ///< linear weights left as they were, and why
    std::vector<std::string> ignore;                        ///< the config's ignore list
    std::string config_json;                                ///< config.json's "quantization_config"
    std::filesystem::path config_written;                   ///< config.json beside out, or empty
};

/// Checkpoint `in` quantized into a pack-quantized checkpoint `out` (written
/// atomically, metadata copied) as llm-compressor's round-to-nearest
/// (QuantizationModifier) does for the scheme: every linear weight
/// (safetensors::is_linear_weight: not embeddings or lm_head) whose columns
/// divide into groups; the others stay as they were and, with lm_head, make
/// the config's ignore list. Where a config.json sits beside `in` and `out`
/// is in another folder, it is written beside `out` with
/// "quantization_config" set, once `out` is complete.
inline convert_report convert_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                         const convert_options& o = {}) {
    model_config::beside config(in, out, {{"input", &in}});
    convert_report rep;
    rep.ignore.push_back("lm_head");
    const auto convert = [&](const safetensors::tensor_info& t, safetensors::writer& w) {
        if (!safetensors::is_linear_weight(t)) return false;
        const std::string name = t.name.substr(0, t.name.size() - std::string_view(".weight").size());
        if (const auto why = unfit_reason(t.shape[0], t.shape[1], o.format); !why.empty()) {
            rep.kept.emplace_back(t.name, why);
            if (name != "lm_head") rep.ignore.push_back(name);
            return false;
        }
        const std::vector<float> x = safetensors::finite_floats(t);
        const layer l = quantize_layer(matrix_view<const float>(x.data(), static_cast<std::size_t>(t.shape[0]),
                                                                static_cast<std::size_t>(t.shape[1])),
                                       o.format, t.dtype, o.threads);
        add_layer(w, name, l, o.format);
        return true;
    };
    // The float copy, the codes and their packing: about 6 bytes an element.
    static_cast<safetensors::rewrite_counts&>(rep) = safetensors::rewrite(in, out, convert, 6, o.progress);
    rep.config_json = o.format.config_json(rep.ignore);
    rep.config_written = config.write("quantization_config", rep.config_json);
    return rep;
}

/// Layer `name` of a pack-quantized checkpoint of format f, every tensor
/// checked against the others and f: errc::corrupt_file naming the layer and
/// the tensor.
inline layer read_layer(const safetensors::file& file, const std::string& name, const checkpoint_format& f) {
    using safetensors::dtype;
    using safetensors::detail::show_shape;
    const std::string where = "compressed-tensors layer '" + name + "' (" + f.name() + ")";
    const auto fail = [&](const std::string& what) {
        LOWBIT_THROW(errc::corrupt_file, where + ": " + what);
        std::abort();
    };
    const auto get = [&](const char* key) -> const safetensors::tensor_info& {
        const auto* t = file.find(name + "." + key);
        if (!t) fail(std::string("no tensor '") + name + "." + key + "'");
        return *t;
    };
    const auto& pk = get("weight_packed");
    const auto& sc = get("weight_scale");
    const auto& sh = get("weight_shape");
    const auto* zp = file.find(name + ".weight_zero_point");
    if (sh.dtype != dtype::i64 || sh.shape.size() != 1 || sh.shape[0] != 2)
        fail("weight_shape is " + std::string(safetensors::to_string(sh.dtype)) + " " + show_shape(sh.shape) +
             ", expected I64 [2]");
    std::int64_t dims[2];
    std::memcpy(dims, sh.data().data(), 16);
    if (dims[0] <= 0 || dims[1] <= 0 || dims[0] > (std::int64_t{1} << 40) || dims[1] > (std::int64_t{1} << 40))
        fail("weight_shape [" + std::to_string(dims[0]) + ", " + std::to_string(dims[1]) + "] is not a weight's");
    const auto rows = static_cast<std::size_t>(dims[0]), cols = static_cast<std::size_t>(dims[1]);
    const std::size_t words = packed_words_u32(cols, f.bits);
    if (pk.dtype != dtype::i32 || pk.shape.size() != 2 || pk.shape[0] != rows || pk.shape[1] != words) {
        const std::size_t per_word = static_cast<std::size_t>(32 / f.bits);
        if (pk.dtype == dtype::i32 && pk.shape.size() == 2 && pk.shape[0] == rows && 32 % f.bits != 0 &&
            pk.shape[1] == (cols + per_word - 1) / per_word)
            fail("weight_packed " + show_shape(pk.shape) + " holds " + std::to_string(per_word) +
                 " fields a word: compressed-tensors 0.17 and before packed " + std::to_string(f.bits) +
                 "-bit codes so; lowbit reads the layout of 0.18 and later");
        fail("weight_packed is " + std::string(safetensors::to_string(pk.dtype)) + " " + show_shape(pk.shape) +
             ", expected I32 [" + std::to_string(rows) + ", " + std::to_string(words) + "] for weight_shape [" +
             std::to_string(rows) + ", " + std::to_string(cols) + "]");
    }
    if (const auto why = unfit_reason(rows, cols, f); !why.empty()) fail("weight_shape: " + why);
    const std::size_t groups = f.groups_of(cols);
    if ((sc.dtype != dtype::f32 && sc.dtype != dtype::f16 && sc.dtype != dtype::bf16) || sc.shape.size() != 2 ||
        sc.shape[0] != rows || sc.shape[1] != groups)
        fail("weight_scale is " + std::string(safetensors::to_string(sc.dtype)) + " " + show_shape(sc.shape) +
             ", expected F16, BF16 or F32 [" + std::to_string(rows) + ", " + std::to_string(groups) + "]");
    layer l;
    l.rows = rows;
    l.cols = cols;
    l.groups = groups;
    l.bits = f.bits;
    l.dtype = sc.dtype;
    try {
        l.scale = safetensors::finite_floats(sc);
    } catch (const error& e) {
        rethrow_with_context(e, where + ": weight_scale");
    }
    const int half = 1 << (f.bits - 1);
    const auto packed = safetensors::words_of(pk);
    std::vector<std::uint8_t> u(rows * cols);
    for (std::size_t r = 0; r < rows; ++r)
        lowbit::detail::unpack_stream_u32(&packed[r * words], 1, cols, f.bits, &u[r * cols], 1);
    l.codes.resize(u.size());
    for (std::size_t i = 0; i < u.size(); ++i) l.codes[i] = static_cast<std::int8_t>(u[i] - half);
    l.zero.assign(rows * groups, 0);
    if (f.sym) {
        if (zp) fail("weight_zero_point is present in a symmetric scheme");
    } else {
        if (!zp) fail("no tensor '" + name + ".weight_zero_point' in an asymmetric scheme");
        const std::size_t zwords = packed_words_u32(rows, f.bits);
        if (zp->dtype != dtype::i32 || zp->shape.size() != 2 || zp->shape[0] != zwords || zp->shape[1] != groups)
            fail("weight_zero_point is " + std::string(safetensors::to_string(zp->dtype)) + " " +
                 show_shape(zp->shape) + ", expected I32 [" + std::to_string(zwords) + ", " + std::to_string(groups) +
                 "]");
        const auto zw = safetensors::words_of(*zp);
        std::vector<std::uint8_t> z(rows * groups);
        for (std::size_t g = 0; g < groups; ++g)
            lowbit::detail::unpack_stream_u32(&zw[g], groups, rows, f.bits, &z[g], groups);
        for (std::size_t i = 0; i < z.size(); ++i) l.zero[i] = static_cast<std::int8_t>(z[i] - half);
    }
    return l;
}

/// The format config.json's "quantization_config" describes (one config
/// group of integer weights in the pack-quantized format), with its ignore
/// list: errc::corrupt_file naming the key that is missing or wrong, and
/// errc::unsupported for a scheme lowbit does not read.
struct config {
    checkpoint_format format;
    std::vector<std::string> ignore;
};

inline config format_from_config(const json::value& q, const std::string& where) {
    const auto fail = [&](errc e, const std::string& what) {
        LOWBIT_THROW(e, where + ": " + what);
        std::abort();
    };
    if (!q.is_object()) fail(errc::corrupt_file, "the quantization config is not an object");
    const auto* m = q.find("quant_method");
    if (!m || !m->is_string() || m->as_string() != "compressed-tensors")
        fail(errc::corrupt_file, "quant_method is not \"compressed-tensors\"");
    const auto* groups = q.find("config_groups");
    if (!groups || !groups->is_object() || groups->size() == 0) fail(errc::corrupt_file, "no config_groups");
    if (groups->size() != 1)
        fail(errc::unsupported, std::to_string(groups->size()) +
                                    " config groups; lowbit reads checkpoints whose layers share one scheme");
    const json::value& g = groups->members()[0].value;
    const std::string gname = "config group '" + groups->members()[0].key + "'";
    const auto* fmt = g.find("format");
    if (!fmt || fmt->is_null()) fmt = q.find("format");
    if (!fmt || !fmt->is_string()) fail(errc::corrupt_file, "no format");
    if (fmt->as_string() != "pack-quantized")
        fail(errc::unsupported, "format \"" + fmt->as_string() + "\": lowbit reads \"pack-quantized\"");
    if (const auto* a = g.find("input_activations"); a && !a->is_null())
        fail(errc::unsupported, gname + " quantizes input activations; lowbit reads weight-only schemes");
    const auto* w = g.find("weights");
    if (!w || !w->is_object()) fail(errc::corrupt_file, gname + " has no weights");
    const auto str = [&](const char* key) -> std::string {
        const auto* v = w->find(key);
        if (!v || !v->is_string()) fail(errc::corrupt_file, gname + ": weights." + key + " is not a string");
        return v->as_string();
    };
    if (str("type") != "int") fail(errc::unsupported, gname + ": weights of type \"" + str("type") + "\", not \"int\"");
    config c;
    const auto* b = w->find("num_bits");
    const auto bits = b ? b->to_i64() : std::nullopt;
    if (!bits || !valid_bits(static_cast<int>(*bits)))
        fail(errc::unsupported, gname + ": weights.num_bits is not 2..8");
    c.format.bits = static_cast<int>(*bits);
    const auto* s = w->find("symmetric");
    if (!s || !s->is_bool()) fail(errc::corrupt_file, gname + ": weights.symmetric is not true or false");
    c.format.sym = s->as_bool();
    const std::string strategy = str("strategy");
    if (strategy == "channel") {
        c.format.group = 0;
    } else if (strategy == "group") {
        const auto* gs = w->find("group_size");
        const auto n = gs ? gs->to_i64() : std::nullopt;
        if (!n || *n < 1 || *n > (std::int64_t{1} << 30))
            fail(errc::corrupt_file, gname + ": weights.group_size is not a positive integer");
        c.format.group = static_cast<std::size_t>(*n);
    } else {
        fail(errc::unsupported, gname + ": weights.strategy \"" + strategy + "\"; lowbit reads \"group\" and \"channel\"");
    }
    if (const auto* a = w->find("actorder"); a && a->is_string()) {
        if (a->as_string() == "group" || a->as_string() == "dynamic")
            fail(errc::unsupported, gname + ": actorder \"" + a->as_string() +
                                        "\" (weight_g_idx) was removed from compressed-tensors in 0.19 and is not read");
        c.format.act_order = a->as_string() == "static" || a->as_string() == "weight";
    }
    if (const auto* ig = q.find("ignore"); ig && !ig->is_null()) {
        if (!ig->is_array()) fail(errc::corrupt_file, "ignore is not a list");
        for (const auto& v : ig->items()) {
            if (!v.is_string()) fail(errc::corrupt_file, "ignore holds a non-string");
            c.ignore.push_back(v.as_string());
        }
    }
    return c;
}

}  // namespace ct
LOWBIT_NAMESPACE_END
