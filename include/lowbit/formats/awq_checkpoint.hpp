#pragma once
// AWQ checkpoints in safetensors: the "gemm" layout AutoAWQ saves
// (WQLinear_GEMM) and transformers, vLLM and AutoAWQ load. For a quantized
// linear layer X with weight [out, in], 4-bit codes in groups of `group`
// input features:
//   X.qweight  I32 [in, out / 8]      codes packed along out (pack/awq.hpp:
//                                     nibble i of word c holds output
//                                     8c + {0,2,4,6,1,3,5,7}[i])
//   X.qzeros   I32 [in / group, out / 8]  zero points, the same packing,
//                                     stored as they are (no -1)
//   X.scales   F16 [in / group, out]
// with w[o][i] = scales[g][o] * (q[i][o] - zero[g][o]), g = i / group; X.weight
// is gone, X.bias (if any) is kept. config.json's "quantization_config" is
// {"quant_method": "awq", "zero_point": true, "group_size": G, "bits": 4,
// "version": "gemm", "modules_to_not_convert": null}.
//
// This header writes and reads that layout; the codes come from AWQ
// (algorithms/awq.hpp, formats/awq_quantize.hpp) or any other source.
// Needs no BLAS.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../core/view.hpp"
#include "../detail/names.hpp"
#include "../pack/awq.hpp"
#include "../pack/transpose.hpp"
#include "json.hpp"
#include "safetensors.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace awq {

/// "awq-4b-g<group>" (AutoAWQ's GEMM checkpoints are 4-bit with a zero point).
struct checkpoint_format {
    int bits = 4;
    std::size_t group = 128;

    std::string name() const { return "awq-" + std::to_string(bits) + "b-g" + std::to_string(group); }
    /// config.json's "quantization_config", as AutoAWQ's save_quantized writes it.
    std::string config_json() const {
        return "{\"quant_method\": \"awq\", \"zero_point\": true, \"group_size\": " + std::to_string(group) +
               ", \"bits\": " + std::to_string(bits) + ", \"version\": \"gemm\", \"modules_to_not_convert\": null}";
    }
};

inline checkpoint_format parse_checkpoint_format(std::string_view s) {
    const auto bg = lowbit::detail::parse_bits_group(s, "awq-");
    if (!bg || bg->bits != 4 || bg->group == 0 || bg->group > (std::size_t{1} << 30))
        LOWBIT_THROW(errc::unknown_format, "AWQ format '" + std::string(s) +
                                               "' is not awq-4b-g<group> (e.g. awq-4b-g128; AutoAWQ's GEMM "
                                               "checkpoints are 4-bit)");
    checkpoint_format f;
    f.group = bg->group;
    return f;
}

/// One layer's codes and params, in the weight's orientation.
struct layer {
    std::size_t rows = 0, cols = 0, groups = 0;  ///< out, in, in / group
    std::vector<std::uint8_t> codes;             ///< rows x cols
    std::vector<float> scale;                    ///< groups x rows (fp16 values)
    std::vector<std::uint8_t> zero;              ///< groups x rows

    float value(std::size_t r, std::size_t c) const noexcept {
        const std::size_t g = c / (cols / groups) * rows + r;
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

/// Why a weight [rows, cols] cannot take format f (empty if it can).
inline std::string unfit_reason(std::uint64_t rows, std::uint64_t cols, const checkpoint_format& f) {
    if (cols == 0 || cols % f.group != 0)
        return "its " + std::to_string(cols) + " input features are not a whole number of groups of " +
               std::to_string(f.group);
    if (rows == 0 || rows % 8 != 0)
        return "its " + std::to_string(rows) + " output features are not a multiple of 8";
    return {};
}

/// Writes layer `name`'s X.qweight, X.qzeros and X.scales to w. Scales must
/// be fp16 values, codes and zeros 4-bit.
inline void add_layer(safetensors::writer& w, const std::string& name, const layer& l, const checkpoint_format& f) {
    using safetensors::dtype;
    const std::string where = "AWQ layer '" + name + "'";
    if (const auto why = unfit_reason(l.rows, l.cols, f); !why.empty())
        LOWBIT_THROW(errc::not_divisible, where + ": " + why + " (" + f.name() + ")");
    if (l.groups != l.cols / f.group || l.codes.size() != l.rows * l.cols || l.scale.size() != l.groups * l.rows ||
        l.zero.size() != l.scale.size())
        LOWBIT_THROW(errc::shape_mismatch, where + ": codes, scales and zeros do not match " + std::to_string(l.rows) +
                                               " x " + std::to_string(l.cols) + " in groups of " +
                                               std::to_string(f.group));
    const auto t = transposed(matrix_view<const std::uint8_t>(l.codes.data(), l.rows, l.cols));  // [in][out]
    const auto qweight = pack_awq_gemm(matrix_view<const std::uint8_t>(t.data(), l.cols, l.rows));
    const auto qzeros = pack_awq_gemm(matrix_view<const std::uint8_t>(l.zero.data(), l.groups, l.rows));
    std::vector<std::byte> scales(l.scale.size() * 2);
    for (std::size_t i = 0; i < l.scale.size(); ++i) {
        const std::uint16_t h = float_to_fp16(l.scale[i]);
        if (fp16_to_float(h) != l.scale[i])
            LOWBIT_THROW(errc::invalid_argument, where + ": scale of group " + std::to_string(i / l.rows) +
                                                     ", output " + std::to_string(i % l.rows) +
                                                     " is not an fp16 value");
        std::memcpy(scales.data() + 2 * i, &h, 2);
    }
    w.add(name + ".qweight", dtype::i32, {l.cols, l.rows / 8}, safetensors::word_bytes(qweight));
    w.add(name + ".qzeros", dtype::i32, {l.groups, l.rows / 8}, safetensors::word_bytes(qzeros));
    w.add(name + ".scales", dtype::f16, {l.groups, l.rows}, std::move(scales));
}

/// Layer X of an AWQ GEMM checkpoint of format f; shapes and dtypes are
/// checked against each other and f, scales for finite values.
inline layer read_layer(const safetensors::file& file, const std::string& name, const checkpoint_format& f) {
    using safetensors::dtype;
    using safetensors::detail::show_shape;
    const std::string where = "AWQ layer '" + name + "' (" + f.name() + ")";
    const auto fail = [&](const std::string& what) {
        LOWBIT_THROW(errc::corrupt_file, where + ": " + what);
        std::abort();
    };
    const auto& qw = file.at(name + ".qweight");
    const auto& qz = file.at(name + ".qzeros");
    const auto& sc = file.at(name + ".scales");
    const auto is_words = [](const safetensors::tensor_info& t) {
        return (t.dtype == dtype::i32 || t.dtype == dtype::u32) && t.shape.size() == 2;
    };
    if (!is_words(qw))
        fail("qweight is " + std::string(safetensors::to_string(qw.dtype)) + " " + show_shape(qw.shape) +
             ", expected I32 [in, out / 8]");
    if (!is_words(qz))
        fail("qzeros is " + std::string(safetensors::to_string(qz.dtype)) + " " + show_shape(qz.shape) +
             ", expected I32 [in / group, out / 8]");
    if ((sc.dtype != dtype::f16 && sc.dtype != dtype::f32 && sc.dtype != dtype::bf16) || sc.shape.size() != 2)
        fail("scales are " + std::string(safetensors::to_string(sc.dtype)) + " " + show_shape(sc.shape) +
             ", expected F16 [in / group, out]");
    const std::uint64_t in = qw.shape[0], out = qw.shape[1] * 8;
    if (in == 0 || in % f.group != 0)
        fail("qweight's " + std::to_string(in) + " input features are not a whole number of groups of " +
             std::to_string(f.group));
    const std::uint64_t groups = in / f.group;
    if (sc.shape[0] != groups || sc.shape[1] != out)
        fail("scales " + show_shape(sc.shape) + " are not [" + std::to_string(groups) + ", " + std::to_string(out) + "]");
    if (qz.shape[0] != groups || qz.shape[1] != out / 8)
        fail("qzeros " + show_shape(qz.shape) + " are not [" + std::to_string(groups) + ", " +
             std::to_string(out / 8) + "]");
    layer l;
    l.rows = static_cast<std::size_t>(out);
    l.cols = static_cast<std::size_t>(in);
    l.groups = static_cast<std::size_t>(groups);
    auto words = safetensors::words_of(qw);
    const auto t = unpack_awq_gemm(matrix_view<const std::uint32_t>(words.data(), l.cols, l.rows / 8));
    l.codes = transposed(matrix_view<const std::uint8_t>(t.data(), l.cols, l.rows));
    words = safetensors::words_of(qz);
    l.zero = unpack_awq_gemm(matrix_view<const std::uint32_t>(words.data(), l.groups, l.rows / 8));
    try {
        l.scale = safetensors::finite_floats(sc);
    } catch (const error& e) {
        rethrow_with_context(e, where + ": scales");
    }
    return l;
}

/// The format config.json's "quantization_config" describes: errc::corrupt_file
/// naming the key that is missing or wrong.
inline checkpoint_format format_from_config(const json::value& q, const std::string& where) {
    const auto fail = [&](const std::string& what) {
        LOWBIT_THROW(errc::corrupt_file, where + ": " + what);
        std::abort();
    };
    if (!q.is_object()) fail("the quantization config is not an object");
    const auto* m = q.find("quant_method");
    if (!m || !m->is_string() || m->as_string() != "awq") fail("quant_method is not \"awq\"");
    // AutoAWQ's own names (w_bit, q_group_size) as vLLM accepts them too.
    const auto* b = q.find("bits") ? q.find("bits") : q.find("w_bit");
    const auto* g = q.find("group_size") ? q.find("group_size") : q.find("q_group_size");
    if (!b || !b->is_number() || b->to_i64() != std::optional<std::int64_t>(4)) fail("bits is not 4");
    if (!g || !g->is_number()) fail("no numeric \"group_size\"");
    const auto gs = g->to_i64();
    if (!gs || *gs < 1 || *gs > (std::int64_t{1} << 30)) fail("group_size " + json::dump(*g) + " is not a positive integer");
    if (const auto* z = q.find("zero_point"); z && (!z->is_bool() || !z->as_bool()))
        fail("zero_point is not true (GEMM checkpoints carry zero points)");
    if (const auto* v = q.find("version"); v && (!v->is_string() || (v->as_string() != "gemm" && v->as_string() != "GEMM")))
        fail("version " + json::dump(*v) + " is not \"gemm\"");
    checkpoint_format f;
    f.group = static_cast<std::size_t>(*gs);
    return f;
}

}  // namespace awq
LOWBIT_NAMESPACE_END
