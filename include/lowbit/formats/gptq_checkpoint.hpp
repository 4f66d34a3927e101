#pragma once
// GPTQ checkpoints in safetensors: the layout AutoGPTQ and GPTQModel save and
// transformers, vLLM and GPTQModel load. For a quantized linear layer X with
// weight [out, in]:
//   X.qweight  I32 [in * bits / 32, out]  codes packed along in (pack/gptq.hpp)
//   X.qzeros   I32 [groups, out * bits / 32]  zero points packed along out;
//                                          "gptq" (v1) stores zero - 1,
//                                          "gptq_v2" the zero itself
//   X.scales   F16 [groups, out]
//   X.g_idx    I32 [in]                    the group of each input column
// with w[o][i] = scales[g][o] * (q[i][o] - zero[g][o]), g = g_idx[i]; X.weight
// is gone, X.bias (if any) is kept. quantize_config.json beside the weights
// holds bits, group_size (-1: one group per output row), desc_act, sym,
// damp_percent, static_groups, true_sequential, quant_method "gptq" and
// checkpoint_format; transformers reads the same block as config.json's
// "quantization_config".
//
// This header writes and reads that layout; the codes come from GPTQ
// (algorithms/gptq.hpp, formats/gptq_quantize.hpp) or any other source.
// Needs no BLAS.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../detail/names.hpp"
#include "../core/numeric.hpp"
#include "../core/view.hpp"
#include "../pack/gptq.hpp"
#include "../pack/transpose.hpp"
#include "json.hpp"
#include "safetensors.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace gptq {

/// A checkpoint format: "gptq-<bits>b-g<group>" or "gptq-<bits>b-ch" (one
/// group per output row), bits 2, 3, 4 or 8, and the options a GPTQ run and
/// its checkpoint carry.
struct checkpoint_format {
    int bits = 4;
    std::size_t group = 128;  ///< 0: per output channel (group_size -1)
    bool sym = false;         ///< zero fixed at 2^(bits-1)
    bool desc_act = false;    ///< act-order: columns by decreasing Hessian diagonal
    bool static_groups = false;
    float damp_percent = 0.01f;
    gptq_zero_format zeros = gptq_zero_format::v1;

    std::string name() const {
        return "gptq-" + std::to_string(bits) + "b-" + (group ? "g" + std::to_string(group) : std::string("ch"));
    }
    /// checkpoint_format's value: "gptq" (v1 zeros) or "gptq_v2".
    std::string_view zero_format_name() const noexcept { return zeros == gptq_zero_format::v1 ? "gptq" : "gptq_v2"; }
    long long group_size() const noexcept { return group ? static_cast<long long>(group) : -1; }

    /// quantize_config.json, and transformers' "quantization_config".
    std::string config_json() const {
        // damp_percent as the shortest decimal that reads back as the float.
        char damp[32];
        const auto r = std::to_chars(damp, damp + sizeof damp, damp_percent);
        return "{\"bits\": " + std::to_string(bits) + ", \"group_size\": " + std::to_string(group_size()) +
               ", \"damp_percent\": " + std::string(damp, r.ptr) + ", \"desc_act\": " + (desc_act ? "true" : "false") +
               ", \"static_groups\": " + (static_groups ? "true" : "false") + ", \"sym\": " + (sym ? "true" : "false") +
               ", \"true_sequential\": true, \"quant_method\": \"gptq\", \"checkpoint_format\": \"" +
               std::string(zero_format_name()) + "\"}";
    }
};

inline bool valid_bits(int b) noexcept { return b == 2 || b == 3 || b == 4 || b == 8; }

/// "gptq-4b-g128", "gptq-3b-g64", "gptq-8b-ch", ... (other options default).
inline checkpoint_format parse_checkpoint_format(std::string_view s) {
    const auto bad = [&] {
        LOWBIT_THROW(errc::unknown_format, "GPTQ format '" + std::string(s) +
                                               "' is not gptq-{2,3,4,8}b-g<group> or gptq-{2,3,4,8}b-ch (e.g. "
                                               "gptq-4b-g128)");
    };
    const auto bg = lowbit::detail::parse_bits_group(s, "gptq-", true);
    if (!bg || !valid_bits(bg->bits) || (!bg->channel && (bg->group == 0 || bg->group > (std::size_t{1} << 30))))
        bad();
    checkpoint_format f;
    f.bits = bg->bits;
    f.group = bg->group;
    return f;
}

/// One layer's GPTQ codes and params, in the weight's orientation.
struct layer {
    std::size_t rows = 0, cols = 0, groups = 0;  ///< out, in, groups
    int bits = 4;
    std::vector<std::uint8_t> codes;  ///< rows x cols
    std::vector<float> scale;         ///< groups x rows (fp16 values)
    std::vector<std::uint8_t> zero;   ///< groups x rows
    std::vector<std::int32_t> g_idx;  ///< cols

    float value(std::size_t r, std::size_t c) const noexcept {
        const std::size_t g = static_cast<std::size_t>(g_idx[c]) * rows + r;
        return scale[g] * (static_cast<float>(codes[r * cols + c]) - static_cast<float>(zero[g]));
    }
    /// The dequantized weight, rows x cols.
    std::vector<float> dequantize() const {
        std::vector<float> w(rows * cols);
        for (std::size_t r = 0; r < rows; ++r)
            for (std::size_t c = 0; c < cols; ++c) w[r * cols + c] = value(r, c);
        return w;
    }
};

/// Why a weight [rows, cols] cannot take format f (empty if it can): the
/// packing needs in and out in whole units of 32 / bits (32 for 3 bits).
inline std::string unfit_reason(std::uint64_t rows, std::uint64_t cols, const checkpoint_format& f) {
    const std::size_t unit = lowbit::detail::gptq_unit_codes(f.bits);
    if (cols % unit != 0)
        return "its " + std::to_string(cols) + " input features are not a multiple of " + std::to_string(unit);
    if (rows % unit != 0)
        return "its " + std::to_string(rows) + " output features are not a multiple of " + std::to_string(unit);
    return {};
}

/// Writes layer `name`'s X.qweight, X.qzeros, X.scales and X.g_idx to w.
/// The scales must be fp16 values (as a GPTQ run for a checkpoint gives
/// them); codes and zeros must fit in f.bits.
inline void add_layer(safetensors::writer& w, const std::string& name, const layer& l, const checkpoint_format& f) {
    using safetensors::dtype;
    const std::string where = "GPTQ layer '" + name + "'";
    if (l.bits != f.bits)
        LOWBIT_THROW(errc::invalid_argument, where + ": " + std::to_string(l.bits) + "-bit codes for a " +
                                                 std::to_string(f.bits) + "-bit checkpoint");
    if (const auto why = unfit_reason(l.rows, l.cols, f); !why.empty())
        LOWBIT_THROW(errc::not_divisible, where + ": " + why + " (GPTQ's " + std::to_string(f.bits) + "-bit packing)");
    if (l.codes.size() != l.rows * l.cols || l.scale.size() != l.groups * l.rows || l.zero.size() != l.scale.size() ||
        l.g_idx.size() != l.cols)
        LOWBIT_THROW(errc::shape_mismatch, where + ": codes, scales, zeros and g_idx do not match " +
                                               std::to_string(l.rows) + " x " + std::to_string(l.cols) + " in " +
                                               std::to_string(l.groups) + " groups");
    for (std::size_t c = 0; c < l.cols; ++c)
        if (l.g_idx[c] < 0 || static_cast<std::size_t>(l.g_idx[c]) >= l.groups)
            LOWBIT_THROW(errc::invalid_argument, where + ": g_idx[" + std::to_string(c) +
                                                     "] = " + std::to_string(l.g_idx[c]) + " is not a group (" +
                                                     std::to_string(l.groups) + ")");
    // Codes [out][in] -> the packer's [in][out].
    const auto t = transposed(matrix_view<const std::uint8_t>(l.codes.data(), l.rows, l.cols));
    const auto qweight = pack_gptq_qweight(matrix_view<const std::uint8_t>(t.data(), l.cols, l.rows), f.bits);
    const auto qzeros =
        pack_gptq_qzeros(matrix_view<const std::uint8_t>(l.zero.data(), l.groups, l.rows), f.bits, f.zeros);
    std::vector<std::byte> scales(l.scale.size() * 2);
    for (std::size_t i = 0; i < l.scale.size(); ++i) {
        const std::uint16_t h = float_to_fp16(l.scale[i]);
        if (fp16_to_float(h) != l.scale[i])
            LOWBIT_THROW(errc::invalid_argument, where + ": scale of group " + std::to_string(i / l.rows) +
                                                     ", output " + std::to_string(i % l.rows) +
                                                     " is not an fp16 value");
        std::memcpy(scales.data() + 2 * i, &h, 2);
    }
    std::vector<std::byte> g(l.cols * 4);
    std::memcpy(g.data(), l.g_idx.data(), g.size());
    const std::uint64_t words_in = gptq_qweight_rows(l.cols, f.bits), words_out = gptq_qzeros_cols(l.rows, f.bits);
    w.add(name + ".qweight", dtype::i32, {words_in, l.rows}, safetensors::word_bytes(qweight));
    w.add(name + ".qzeros", dtype::i32, {l.groups, words_out}, safetensors::word_bytes(qzeros));
    w.add(name + ".scales", dtype::f16, {l.groups, l.rows}, std::move(scales));
    w.add(name + ".g_idx", dtype::i32, {l.cols}, std::move(g));
}

/// Groups whose zero point is 0 (v1 stores -1 there: readers that unpack
/// qzeros field by field, as AutoGPTQ's and vLLM's kernels do, then see the
/// next field one lower; GPTQModel's whole-word conversion and lowbit's
/// reader give it back exactly).
inline std::size_t zero_zero_points(const layer& l) noexcept {
    std::size_t n = 0;
    for (const auto z : l.zero) n += z == 0;
    return n;
}

/// Layer X of a GPTQ checkpoint of format f (quantize_config.json gives bits,
/// group_size and checkpoint_format); shapes and dtypes are checked against
/// each other and f, and every g_idx against the groups.
inline layer read_layer(const safetensors::file& file, const std::string& name, const checkpoint_format& f) {
    using safetensors::dtype;
    using safetensors::detail::show_shape;
    const std::string where = "GPTQ layer '" + name + "' (" + f.name() + ", " + std::string(f.zero_format_name()) + ")";
    const auto fail = [&](const std::string& what) {
        LOWBIT_THROW(errc::corrupt_file, where + ": " + what);
        std::abort();
    };
    const auto& qw = file.at(name + ".qweight");
    const auto& qz = file.at(name + ".qzeros");
    const auto& sc = file.at(name + ".scales");
    const auto* gi = file.find(name + ".g_idx");
    const auto is_words = [](const safetensors::tensor_info& t) {
        return (t.dtype == dtype::i32 || t.dtype == dtype::u32) && t.shape.size() == 2;
    };
    if (!is_words(qw))
        fail("qweight is " + std::string(safetensors::to_string(qw.dtype)) + " " + show_shape(qw.shape) +
             ", expected I32 [in * bits / 32, out]");
    if (!is_words(qz))
        fail("qzeros is " + std::string(safetensors::to_string(qz.dtype)) + " " + show_shape(qz.shape) +
             ", expected I32 [groups, out * bits / 32]");
    if ((sc.dtype != dtype::f16 && sc.dtype != dtype::f32 && sc.dtype != dtype::bf16) || sc.shape.size() != 2)
        fail("scales are " + std::string(safetensors::to_string(sc.dtype)) + " " + show_shape(sc.shape) +
             ", expected F16 [groups, out]");
    const std::size_t unit = lowbit::detail::gptq_unit_codes(f.bits),
                      unit_words = lowbit::detail::gptq_unit_words(f.bits);
    const std::uint64_t out = qw.shape[1];
    if (qw.shape[0] % unit_words != 0)
        fail("qweight has " + std::to_string(qw.shape[0]) + " rows, not whole 3-word units");
    const std::uint64_t in = qw.shape[0] / unit_words * unit;
    const std::uint64_t groups = sc.shape[0];
    if (sc.shape[1] != out)
        fail("scales " + show_shape(sc.shape) + " do not have qweight's " + std::to_string(out) + " outputs");
    if (out % unit != 0 || qz.shape[0] != groups || qz.shape[1] != out / unit * unit_words)
        fail("qzeros " + show_shape(qz.shape) + " do not hold " + std::to_string(groups) + " x " + std::to_string(out) +
             " zero points of " + std::to_string(f.bits) + " bits");
    const std::uint64_t want_groups = f.group ? (in + f.group - 1) / f.group : 1;
    if (groups != want_groups)
        fail(std::to_string(groups) + " groups for " + std::to_string(in) + " inputs, expected " +
             std::to_string(want_groups) + " (group_size " + std::to_string(f.group_size()) + ")");
    layer l;
    l.rows = static_cast<std::size_t>(out);
    l.cols = static_cast<std::size_t>(in);
    l.groups = static_cast<std::size_t>(groups);
    l.bits = f.bits;
    l.g_idx.resize(l.cols);
    if (gi) {
        if (gi->dtype != dtype::i32 || gi->shape.size() != 1 || gi->shape[0] != in)
            fail("g_idx is " + std::string(safetensors::to_string(gi->dtype)) + " " + show_shape(gi->shape) +
                 ", expected I32 [" + std::to_string(in) + "]");
        std::memcpy(l.g_idx.data(), gi->data().data(), l.cols * 4);
        for (std::size_t c = 0; c < l.cols; ++c)
            if (l.g_idx[c] < 0 || static_cast<std::uint64_t>(l.g_idx[c]) >= groups)
                fail("g_idx[" + std::to_string(c) + "] = " + std::to_string(l.g_idx[c]) + " is not one of the " +
                     std::to_string(groups) + " groups");
    } else {
        // Checkpoints without g_idx (desc_act false) use i / group_size.
        for (std::size_t c = 0; c < l.cols; ++c) l.g_idx[c] = f.group ? static_cast<std::int32_t>(c / f.group) : 0;
    }
    auto words = safetensors::words_of(qw);
    const auto t = unpack_gptq_qweight(
        matrix_view<const std::uint32_t>(words.data(), static_cast<std::size_t>(qw.shape[0]), l.rows), f.bits);
    l.codes = transposed(matrix_view<const std::uint8_t>(t.data(), l.cols, l.rows));
    words = safetensors::words_of(qz);
    l.zero = unpack_gptq_qzeros(
        matrix_view<const std::uint32_t>(words.data(), l.groups, static_cast<std::size_t>(qz.shape[1])), f.bits,
        f.zeros);
    try {
        l.scale = safetensors::finite_floats(sc);
    } catch (const error& e) {
        rethrow_with_context(e, where + ": scales");
    }
    return l;
}

/// The format quantize_config.json (or config.json's "quantization_config")
/// describes: errc::corrupt_file naming the key that is missing or wrong.
inline checkpoint_format format_from_config(const json::value& q, const std::string& where) {
    const auto fail = [&](const std::string& what) {
        LOWBIT_THROW(errc::corrupt_file, where + ": " + what);
        std::abort();
    };
    if (!q.is_object()) fail("the quantization config is not an object");
    if (const auto* m = q.find("quant_method"); m && (!m->is_string() || m->as_string() != "gptq"))
        fail("quant_method is not \"gptq\"");
    const auto* b = q.find("bits");
    const auto* g = q.find("group_size");
    if (!b || !b->is_number()) fail("no numeric \"bits\"");
    if (!g || !g->is_number()) fail("no numeric \"group_size\"");
    checkpoint_format f;
    const auto bits = b->to_i64();
    if (!bits || !valid_bits(static_cast<int>(*bits))) fail("bits " + json::dump(*b) + " is not 2, 3, 4 or 8");
    f.bits = static_cast<int>(*bits);
    const auto gs = g->to_i64();
    if (gs && *gs == -1) {
        f.group = 0;
    } else if (gs && *gs >= 1 && *gs <= (std::int64_t{1} << 30)) {
        f.group = static_cast<std::size_t>(*gs);
    } else {
        fail("group_size " + json::dump(*g) + " is not -1 or a positive integer");
    }
    const auto flag = [&](const char* key, bool& out) {
        if (const auto* v = q.find(key)) {
            if (!v->is_bool()) fail(std::string(key) + " is not true or false");
            out = v->as_bool();
        }
    };
    flag("sym", f.sym);
    flag("desc_act", f.desc_act);
    flag("static_groups", f.static_groups);
    if (const auto* c = q.find("checkpoint_format")) {
        if (!c->is_string() || (c->as_string() != "gptq" && c->as_string() != "gptq_v2"))
            fail("checkpoint_format " + json::dump(*c) + " is not \"gptq\" or \"gptq_v2\"");
        f.zeros = c->as_string() == "gptq" ? gptq_zero_format::v1 : gptq_zero_format::v2;
    }
    return f;
}

}  // namespace gptq
LOWBIT_NAMESPACE_END
