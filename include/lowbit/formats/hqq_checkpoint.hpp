#pragma once
// HQQ checkpoints in safetensors: what hqq's HQQLinear.state_dict() holds
// (hqq 0.2.x), as transformers' HQQ integration writes it (save_pretrained of
// a model loaded with HqqConfig; transformers 4.5x) and hqq's own
// save_to_safetensors does, and as transformers' HQQ loader and
// HQQLinear.load_state_dict read it. For a quantized layer X whose weight
// X.weight is [out, in] of dtype T, in G = out * in / group groups (group g:
// the weights g * group .. (g + 1) * group - 1 of the row-major matrix):
//   X.W_q        the codes packed over groups (hqq's BitPack; rows of `group`
//                codes, group g one row of the [G, group] code matrix):
//                8 bits U8 [G, group]; 4 bits U8 [G/2, group] (group g in the
//                high nibble of row g for g < G/2, else the low nibble of row
//                g - G/2); 2 bits U8 [G/4, group] and 1 bit U8 [G/8, group]
//                the same with 4 and 8 fields (the first quarter, eighth of
//                the groups in the highest bits); 3 bits I32 [S, group],
//                S = ceil(G / 10), group g in row g % S at bit 27 - 3 (g / S)
//                (bits 30 and 31 unused; rows past G zero codes)
//   X.scale      T [G, 1]   w ~= (q - zero) * scale   (scale = 1 / s)
//   X.zero       T [G, 1]
//   X.shape      I64 [2]    out, in
//   X.nbits, X.group_size, X.axis (1)                 I32 [] (scalars)
//   X.channel_wise, X.optimize, X.round_zero, X.view_as_float, X.quant_scale,
//   X.quant_zero, X.offload_meta, X.encoded_state_dict,
//   X.stores_quant_config                             U8 [] (0 or 1)
//   X.packing, X.compute_dtype, X.unpack_view_dtype   U8 [n]: ASCII
//                ("4bit_u8", "torch.float16", "torch.uint8"; "3bit_32" and
//                "torch.int32" at 3 bits)
// X.bias stays as it was. config.json's "quantization_config" is
// checkpoint_format::config_json(). Every 2-D float "*.weight" is quantized
// except embeddings and lm_head (transformers' HQQ quantizes nn.Linear
// layers and skips lm_head), where its columns divide into groups and the
// group count into the packing's rows; others stay as they were.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "../algorithms/hqq.hpp"
#include "../core/error.hpp"
#include "../detail/names.hpp"
#include "safetensors.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace hqq_checkpoint {

/// "hqq-<bits>b-g<group>": bits 1, 2, 3, 4 or 8, group a multiple of 8 (hqq's
/// BaseQuantizeConfig), e.g. hqq-4b-g64, its defaults.
struct checkpoint_format {
    int bits = 4;
    std::size_t group = 64;
    std::string name() const { return "hqq-" + std::to_string(bits) + "b-g" + std::to_string(group); }
    bool round_zero() const noexcept { return hqq_round_zero(bits); }
    /// config.json's "quantization_config", as transformers writes it.
    std::string config_json() const {
        return "{\"quant_method\": \"hqq\", \"skip_modules\": [\"lm_head\"], \"quant_config\": {\"offload_meta\": "
               "false, \"scale_quant_params\": null, \"weight_quant_params\": {\"axis\": 1, \"channel_wise\": true, "
               "\"group_size\": " +
               std::to_string(group) + ", \"nbits\": " + std::to_string(bits) +
               ", \"optimize\": true, \"round_zero\": " + (round_zero() ? "true" : "false") +
               ", \"view_as_float\": false}, \"zero_quant_params\": null}}";
    }
};

inline bool valid_bits(int b) noexcept { return b == 1 || b == 2 || b == 3 || b == 4 || b == 8; }

inline checkpoint_format parse_checkpoint_format(std::string_view s) {
    const auto bad = [&] {
        LOWBIT_THROW(errc::unknown_format, "HQQ format '" + std::string(s) +
                                               "' is not hqq-{1,2,3,4,8}b-g<G> with G a multiple of 8 (e.g. "
                                               "hqq-4b-g64)");
    };
    const auto bg = lowbit::detail::parse_bits_group(s, "hqq-");
    if (!bg || !valid_bits(bg->bits) || bg->group == 0 || bg->group % 8 || bg->group > 65536) bad();
    return {bg->bits, bg->group};
}

/// hqq's packing of `bits`-bit codes: its name, the codes a packed element
/// holds, and whether it is an int32.
struct packing {
    const char* name;
    std::size_t per_element;
    bool int32;
};

inline packing packing_of(int bits) noexcept {
    switch (bits) {
    case 1: return {"1bit_u8", 8, false};
    case 2: return {"2bit_u8", 4, false};
    case 3: return {"3bit_32", 10, true};
    case 4: return {"4bit_u8", 2, false};
    default: return {"8bit_u8", 1, false};
    }
}

/// Why a [rows, cols] weight cannot take `f` (empty: it can).
inline std::string unfit_reason(std::uint64_t rows, std::uint64_t cols, const checkpoint_format& f) {
    if (cols % f.group)
        return "its " + std::to_string(cols) + " columns do not divide into groups of " + std::to_string(f.group);
    const std::uint64_t groups = rows * cols / f.group;
    const packing p = packing_of(f.bits);
    if (!p.int32 && groups % p.per_element)
        return "its " + std::to_string(groups) + " groups do not divide into the " + std::to_string(p.per_element) +
               " fields of hqq's " + p.name + " packing";
    return {};
}

/// The codes (G x group, one row per group) packed as hqq packs them: the
/// rows of X.W_q, `group` elements each (bytes, or int32 little-endian).
inline std::vector<std::byte> pack(const std::vector<std::uint8_t>& codes, std::size_t groups, std::size_t group,
                                   int bits) {
    const packing p = packing_of(bits);
    const std::size_t rows = (groups + p.per_element - 1) / p.per_element;
    std::vector<std::byte> out(rows * group * (p.int32 ? 4 : 1));
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t j = 0; j < group; ++j) {
            std::uint32_t v = 0;
            for (std::size_t k = 0; k < p.per_element; ++k) {
                const std::size_t g = r + k * rows;
                const std::uint32_t c = g < groups ? codes[g * group + j] : 0u;
                const int shift = p.int32 ? 27 - 3 * static_cast<int>(k)
                                          : 8 - bits * static_cast<int>(k + 1);
                v |= c << shift;
            }
            if (p.int32)
                std::memcpy(out.data() + 4 * (r * group + j), &v, 4);
            else
                out[r * group + j] = static_cast<std::byte>(v);
        }
    return out;
}

/// The inverse of pack: G x group codes from X.W_q's bytes.
inline std::vector<std::uint8_t> unpack(std::span<const std::byte> packed, std::size_t groups, std::size_t group,
                                        int bits) {
    const packing p = packing_of(bits);
    const std::size_t rows = (groups + p.per_element - 1) / p.per_element;
    const std::uint32_t mask = (1u << bits) - 1u;
    std::vector<std::uint8_t> codes(groups * group);
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t j = 0; j < group; ++j) {
            std::uint32_t v = 0;
            if (p.int32)
                std::memcpy(&v, packed.data() + 4 * (r * group + j), 4);
            else
                v = static_cast<std::uint32_t>(packed[r * group + j]);
            for (std::size_t k = 0; k < p.per_element; ++k) {
                const std::size_t g = r + k * rows;
                if (g >= groups) break;
                const int shift = p.int32 ? 27 - 3 * static_cast<int>(k) : 8 - bits * static_cast<int>(k + 1);
                codes[g * group + j] = static_cast<std::uint8_t>((v >> shift) & mask);
            }
        }
    return codes;
}

/// The dtype name hqq stores in X.compute_dtype for scale and zero of dtype t.
inline const char* torch_dtype_name(safetensors::dtype t) noexcept {
    return t == safetensors::dtype::f16 ? "torch.float16" : t == safetensors::dtype::bf16 ? "torch.bfloat16"
                                                                                          : "torch.float32";
}

struct convert_options {
    checkpoint_format format{};
    unsigned threads = 1;
    /// Called after each tensor: (index, count, name, quantized).
    safetensors::rewrite_progress progress;
};

struct convert_report : safetensors::rewrite_counts {
    /// Linear weights left as they were, with the reason (unfit_reason).
    std::vector<std::pair<std::string, std::string>> kept;
    std::string config_json;  ///< config.json's "quantization_config"
};

namespace detail {

/// One layer's tensors as the writer keeps them.
struct layer_tensors {
    std::vector<std::pair<std::string, std::vector<std::byte>>> bytes;
};

inline std::vector<std::byte> ascii(std::string_view s) {
    std::vector<std::byte> b(s.size());
    std::memcpy(b.data(), s.data(), s.size());
    return b;
}

template <class T>
std::vector<std::byte> scalar(T v) {
    std::vector<std::byte> b(sizeof(T));
    std::memcpy(b.data(), &v, sizeof(T));
    return b;
}

}  // namespace detail

/// Writes layer `layer` (HQQ's result `q` of a weight of dtype `t`) into
/// `w` as HQQLinear.state_dict() holds it.
inline void add_layer(safetensors::writer& w, const std::string& layer, const hqq_result& q, int bits,
                      safetensors::dtype t) {
    using safetensors::dtype;
    const std::size_t G = q.rows * q.groups;
    const packing p = packing_of(bits);
    const std::uint64_t packed_rows = (G + p.per_element - 1) / p.per_element;
    w.add(layer + ".W_q", p.int32 ? dtype::i32 : dtype::u8, {packed_rows, q.group_size},
          pack(q.codes, G, q.group_size, bits));
    w.add(layer + ".scale", t, {G, 1}, safetensors::float_bytes(q.scale, t));
    w.add(layer + ".zero", t, {G, 1}, safetensors::float_bytes(q.zero, t));
    std::vector<std::byte> shape(16);
    const std::int64_t dims[2] = {static_cast<std::int64_t>(q.rows), static_cast<std::int64_t>(q.cols)};
    std::memcpy(shape.data(), dims, 16);
    w.add(layer + ".shape", dtype::i64, {2}, std::move(shape));
    w.add(layer + ".nbits", dtype::i32, {}, detail::scalar<std::int32_t>(bits));
    w.add(layer + ".group_size", dtype::i32, {}, detail::scalar<std::int32_t>(static_cast<std::int32_t>(q.group_size)));
    w.add(layer + ".axis", dtype::i32, {}, detail::scalar<std::int32_t>(1));
    const bool round_zero = hqq_round_zero(bits);
    for (const auto& [key, on] : {std::pair<const char*, bool>{"channel_wise", true},
                                  {"optimize", true},
                                  {"round_zero", round_zero},
                                  {"view_as_float", false},
                                  {"quant_scale", false},
                                  {"quant_zero", false},
                                  {"offload_meta", false},
                                  {"encoded_state_dict", true},
                                  {"stores_quant_config", true}})
        w.add(layer + "." + key, dtype::u8, {}, detail::scalar<std::uint8_t>(on ? 1 : 0));
    for (const auto& [key, text] : {std::pair<const char*, std::string_view>{"packing", p.name},
                                    {"compute_dtype", torch_dtype_name(t)},
                                    {"unpack_view_dtype", p.int32 ? "torch.int32" : "torch.uint8"}})
        w.add(layer + "." + key, dtype::u8, {text.size()}, detail::ascii(text));
}

/// Converts the safetensors checkpoint `in` to HQQ's layout of o.format,
/// written atomically to `out` (metadata copied).
inline convert_report convert_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                         const convert_options& o = {}) {
    convert_report rep;
    rep.config_json = o.format.config_json();
    const auto convert = [&](const safetensors::tensor_info& t, safetensors::writer& w) {
        if (!safetensors::is_linear_weight(t)) return false;
        const std::string layer = t.name.substr(0, t.name.size() - std::string_view(".weight").size());
        if (const auto why = unfit_reason(t.shape[0], t.shape[1], o.format); !why.empty()) {
            rep.kept.emplace_back(t.name, why);
            return false;
        }
        const std::vector<float> x = safetensors::finite_floats(t);
        hqq_options ho;
        ho.bits = o.format.bits;
        ho.group_size = o.format.group;
        ho.round_zero = o.format.round_zero();
        ho.threads = o.threads;
        const hqq_result q =
            hqq(matrix_view<const float>(x.data(), static_cast<std::size_t>(t.shape[0]),
                                         static_cast<std::size_t>(t.shape[1])),
                ho);
        add_layer(w, layer, q, o.format.bits, t.dtype);  // the writer keeps the byte vectors
        return true;
    };
    // The float copy, the solver's scratch and the codes: about 10 bytes an element.
    static_cast<safetensors::rewrite_counts&>(rep) = safetensors::rewrite(in, out, convert, 10, o.progress);
    return rep;
}

/// Layer `layer` of an HQQ checkpoint read back (codes unpacked, scale and
/// zero widened to float), every part checked against the others:
/// errc::corrupt_file naming the layer and the part for a missing tensor, a
/// wrong dtype or shape, or meta other than what this layout holds (axis 1,
/// no quantized meta, no view_as_float).
inline hqq_result read_layer(const safetensors::file& f, const std::string& layer) {
    using safetensors::dtype;
    const auto bad = [&](const std::string& what) {
        LOWBIT_THROW(errc::corrupt_file, "HQQ layer '" + layer + "': " + what);
    };
    const auto get = [&](const char* key) -> const safetensors::tensor_info& {
        const auto* t = f.find(layer + "." + key);
        if (!t) bad(std::string("no tensor '") + layer + "." + key + "'");
        return *t;
    };
    const auto int_of = [&](const char* key, dtype want) -> std::int64_t {
        const auto& t = get(key);
        if (t.dtype != want || !t.shape.empty())
            bad(std::string(key) + " is " + std::string(safetensors::to_string(t.dtype)) + " " +
                safetensors::detail::show_shape(t.shape) + ", not a " + std::string(safetensors::to_string(want)) +
                " scalar");
        if (want == dtype::u8) return static_cast<std::int64_t>(t.data()[0]);
        std::int32_t v = 0;
        std::memcpy(&v, t.data().data(), 4);
        return v;
    };
    const auto text_of = [&](const char* key) {
        const auto& t = get(key);
        if (t.dtype != dtype::u8 || t.shape.size() != 1)
            bad(std::string(key) + " is not a U8 [n] string");
        return std::string(reinterpret_cast<const char*>(t.data().data()), t.data().size());
    };
    const auto& shape = get("shape");
    if (shape.dtype != dtype::i64 || shape.shape != std::vector<std::uint64_t>{2}) bad("shape is not I64 [2]");
    std::int64_t dims[2];
    std::memcpy(dims, shape.data().data(), 16);
    const std::int64_t bits = int_of("nbits", dtype::i32), gs = int_of("group_size", dtype::i32);
    if (dims[0] <= 0 || dims[1] <= 0) bad("shape [" + std::to_string(dims[0]) + ", " + std::to_string(dims[1]) + "]");
    if (!valid_bits(static_cast<int>(bits))) bad("nbits " + std::to_string(bits) + " is not 1, 2, 3, 4 or 8");
    if (gs <= 0 || dims[1] % gs) bad("group_size " + std::to_string(gs) + " does not divide " + std::to_string(dims[1]));
    if (int_of("axis", dtype::i32) != 1) bad("axis is not 1 (lowbit reads the layout HQQLinear writes)");
    if (int_of("view_as_float", dtype::u8) || int_of("quant_scale", dtype::u8) || int_of("quant_zero", dtype::u8) ||
        int_of("offload_meta", dtype::u8))
        bad("view_as_float, quantized or offloaded meta is not read here");
    const int b = static_cast<int>(bits);
    const packing p = packing_of(b);
    if (text_of("packing") != p.name) bad("packing '" + text_of("packing") + "' is not " + p.name + " for " +
                                          std::to_string(b) + " bits");
    hqq_result q;
    q.rows = static_cast<std::size_t>(dims[0]);
    q.cols = static_cast<std::size_t>(dims[1]);
    q.group_size = static_cast<std::size_t>(gs);
    q.groups = q.cols / q.group_size;
    q.bits = b;
    const std::size_t G = q.rows * q.groups;
    if (const auto why = unfit_reason(q.rows, q.cols, checkpoint_format{b, q.group_size}); !why.empty()) bad(why);
    const auto& wq = get("W_q");
    const std::vector<std::uint64_t> want{(G + p.per_element - 1) / p.per_element, q.group_size};
    if (wq.dtype != (p.int32 ? dtype::i32 : dtype::u8) || wq.shape != want)
        bad("W_q is " + std::string(safetensors::to_string(wq.dtype)) + " " +
            safetensors::detail::show_shape(wq.shape) + ", expected " + (p.int32 ? "I32 " : "U8 ") +
            safetensors::detail::show_shape(want));
    q.codes = unpack(wq.data(), G, q.group_size, b);
    for (const char* key : {"scale", "zero"}) {
        const auto& t = get(key);
        if (t.shape != std::vector<std::uint64_t>{G, 1})
            bad(std::string(key) + " is " + safetensors::detail::show_shape(t.shape) + ", expected [" +
                std::to_string(G) + ", 1]");
        try {
            (key[0] == 's' ? q.scale : q.zero) = safetensors::finite_floats(t);
        } catch (const error& e) {
            rethrow_with_context(e, "HQQ layer '" + layer + "'");
        }
    }
    return q;
}

}  // namespace hqq_checkpoint
LOWBIT_NAMESPACE_END
