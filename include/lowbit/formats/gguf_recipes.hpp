#pragma once
// llama.cpp's quantization mixes: which ggml type each tensor of a GGUF model
// gets for a given file type ("Q4_K_M", "Q8_0", ...), so that `lowbit
// quantize` writes the same tensor types llama-quantize would.
//
// The rules follow llama.cpp's src/llama-quant.cpp (llama_tensor_get_type and
// tensor_allows_quantization). Covered: the plain file types (F32, F16, BF16,
// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4_MOE) and
// the K-quant mixes (Q2_K, Q2_K_S, Q3_K_S/M/L, Q4_K_S/M, Q5_K_S/M, Q6_K),
// including the Falcon, 70B, 8-expert, GLM5-next and BailingMoE3 special cases.
// Not covered: the IQ1/IQ2/IQ3 mixes and Q1_0/Q2_0/NVFP4 (parse_file_type
// reports them as unsupported), llama-quantize's --tensor-type regex
// overrides and --prune-layers, and --keep-split, under which it visits
// tensors in file order rather than in the order `recipe` uses.

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "ggml_types.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ggml {

/// llama.cpp's llama_ftype: the value of a GGUF file's `general.file_type`.
enum class file_type : std::uint32_t {
    all_f32 = 0,
    mostly_f16 = 1,
    mostly_q4_0 = 2,
    mostly_q4_1 = 3,
    mostly_q8_0 = 7,
    mostly_q5_0 = 8,
    mostly_q5_1 = 9,
    mostly_q2_k = 10,
    mostly_q3_k_s = 11,
    mostly_q3_k_m = 12,
    mostly_q3_k_l = 13,
    mostly_q4_k_s = 14,
    mostly_q4_k_m = 15,
    mostly_q5_k_s = 16,
    mostly_q5_k_m = 17,
    mostly_q6_k = 18,
    mostly_iq2_xxs = 19,
    mostly_iq2_xs = 20,
    mostly_q2_k_s = 21,
    mostly_iq3_xs = 22,
    mostly_iq3_xxs = 23,
    mostly_iq1_s = 24,
    mostly_iq4_nl = 25,
    mostly_iq3_s = 26,
    mostly_iq3_m = 27,
    mostly_iq2_s = 28,
    mostly_iq2_m = 29,
    mostly_iq4_xs = 30,
    mostly_iq1_m = 31,
    mostly_bf16 = 32,
    mostly_tq1_0 = 36,
    mostly_tq2_0 = 37,
    mostly_mxfp4_moe = 38,
    mostly_nvfp4 = 39,
    mostly_q1_0 = 40,
    mostly_q2_0 = 41,
};

namespace detail::recipes {

struct file_type_entry {
    std::string_view name;  ///< as llama-quantize's command line spells it
    file_type ft;
    bool supported;         ///< lowbit implements this mix
    bool alias;             ///< a second name for a file type listed elsewhere
};

inline constexpr file_type_entry file_types[] = {
    {"F32", file_type::all_f32, true, false},
    {"F16", file_type::mostly_f16, true, false},
    {"BF16", file_type::mostly_bf16, true, false},
    {"Q4_0", file_type::mostly_q4_0, true, false},
    {"Q4_1", file_type::mostly_q4_1, true, false},
    {"Q5_0", file_type::mostly_q5_0, true, false},
    {"Q5_1", file_type::mostly_q5_1, true, false},
    {"Q8_0", file_type::mostly_q8_0, true, false},
    {"Q2_K", file_type::mostly_q2_k, true, false},
    {"Q2_K_S", file_type::mostly_q2_k_s, true, false},
    {"Q3_K_S", file_type::mostly_q3_k_s, true, false},
    {"Q3_K_M", file_type::mostly_q3_k_m, true, false},
    {"Q3_K_L", file_type::mostly_q3_k_l, true, false},
    {"Q4_K_S", file_type::mostly_q4_k_s, true, false},
    {"Q4_K_M", file_type::mostly_q4_k_m, true, false},
    {"Q5_K_S", file_type::mostly_q5_k_s, true, false},
    {"Q5_K_M", file_type::mostly_q5_k_m, true, false},
    {"Q6_K", file_type::mostly_q6_k, true, false},
    {"IQ4_NL", file_type::mostly_iq4_nl, true, false},
    {"IQ4_XS", file_type::mostly_iq4_xs, true, false},
    {"TQ1_0", file_type::mostly_tq1_0, true, false},
    {"TQ2_0", file_type::mostly_tq2_0, true, false},
    {"MXFP4_MOE", file_type::mostly_mxfp4_moe, true, false},
    {"Q3_K", file_type::mostly_q3_k_m, true, true},
    {"Q4_K", file_type::mostly_q4_k_m, true, true},
    {"Q5_K", file_type::mostly_q5_k_m, true, true},
    {"IQ2_XXS", file_type::mostly_iq2_xxs, false, false},
    {"IQ2_XS", file_type::mostly_iq2_xs, false, false},
    {"IQ2_S", file_type::mostly_iq2_s, false, false},
    {"IQ2_M", file_type::mostly_iq2_m, false, false},
    {"IQ1_S", file_type::mostly_iq1_s, false, false},
    {"IQ1_M", file_type::mostly_iq1_m, false, false},
    {"IQ3_XXS", file_type::mostly_iq3_xxs, false, false},
    {"IQ3_XS", file_type::mostly_iq3_xs, false, false},
    {"IQ3_S", file_type::mostly_iq3_s, false, false},
    {"IQ3_M", file_type::mostly_iq3_m, false, false},
    {"NVFP4", file_type::mostly_nvfp4, false, false},
    {"Q1_0", file_type::mostly_q1_0, false, false},
    {"Q2_0", file_type::mostly_q2_0, false, false},
};

inline const file_type_entry* find_entry(file_type ft) noexcept {
    for (const auto& e : file_types)
        if (e.ft == ft && !e.alias) return &e;
    return nullptr;
}

inline std::string supported_names() {
    std::string s;
    for (const auto& e : file_types) {
        if (!e.supported) continue;
        if (!s.empty()) s += ", ";
        s += e.name;
    }
    return s;
}

inline bool contains(std::string_view s, std::string_view part) noexcept { return s.find(part) != s.npos; }

/// sscanf("blk.%d.")-style layer number: the integer after a leading "blk.".
inline std::optional<long long> block_number(std::string_view name) noexcept {
    constexpr std::string_view prefix = "blk.";
    if (!name.starts_with(prefix)) return std::nullopt;
    std::size_t i = prefix.size();
    while (i < name.size() && std::isspace(static_cast<unsigned char>(name[i]))) ++i;
    bool negative = false;
    if (i < name.size() && (name[i] == '+' || name[i] == '-')) negative = name[i++] == '-';
    if (i >= name.size() || !std::isdigit(static_cast<unsigned char>(name[i]))) return std::nullopt;
    long long v = 0;
    for (; i < name.size() && std::isdigit(static_cast<unsigned char>(name[i])); ++i)
        v = std::min<long long>(v * 10 + (name[i] - '0'), 1LL << 40);  // saturate: any such layer is out of range
    return negative ? -v : v;
}

/// The broad roles llama.cpp's rules distinguish, found by name fragments so
/// that one rule set serves every architecture.
enum class role { token_embd, attn_q, attn_k, attn_v, attn_qkv, attn_kv_b, attn_output, ffn_up, ffn_gate, ffn_down, output, other };

inline role role_of(std::string_view name) noexcept {
    if (name == "output.weight") return role::output;
    if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return role::token_embd;
    // Order matters: the first fragment that matches decides.
    if (contains(name, "attn_qkv.weight")) return role::attn_qkv;
    if (contains(name, "attn_kv_b.weight")) return role::attn_kv_b;
    if (contains(name, "attn_v.weight")) return role::attn_v;
    if (contains(name, "attn_k.weight")) return role::attn_k;
    if (contains(name, "attn_q.weight")) return role::attn_q;
    if (contains(name, "attn_output.weight")) return role::attn_output;
    if (contains(name, "ffn_up")) return role::ffn_up;
    if (contains(name, "ffn_gate")) return role::ffn_gate;
    if (contains(name, "ffn_down")) return role::ffn_down;
    return role::other;
}

// attn_qkv and attn_kv_b carry V, and are as sensitive to quantization as it is.
inline bool carries_v(role r) noexcept { return r == role::attn_v || r == role::attn_qkv || r == role::attn_kv_b; }

inline bool is_quantized(type t) noexcept { return t != type::f32 && t != type::f16 && t != type::bf16; }

inline std::size_t block_size(type t) {
    const auto tr = find_base_traits(static_cast<std::uint32_t>(t));
    if (!tr) LOWBIT_THROW(errc::invalid_argument, "unknown ggml type " + std::to_string(static_cast<unsigned>(t)));
    return tr->block_size;
}

/// ggml_n_dims: trailing dimensions of 1 do not count, and a scalar has one.
inline int n_dims(std::span<const std::uint64_t> ne) noexcept {
    int n = 1;
    for (std::size_t i = 1; i < ne.size(); ++i)
        if (ne[i] > 1) n = static_cast<int>(i) + 1;
    return n;
}

}  // namespace detail::recipes

/// The name llama-quantize uses for a file type ("Q4_K_M"), or "unknown(N)".
inline std::string file_type_name(file_type ft) {
    if (const auto* e = detail::recipes::find_entry(ft)) return std::string(e->name);
    return "unknown(" + std::to_string(static_cast<std::uint32_t>(ft)) + ")";
}

/// True when `recipe` implements this file type's mix.
inline bool recipe_supports(file_type ft) noexcept {
    const auto* e = detail::recipes::find_entry(ft);
    return e && e->supported;
}

/// A file type from the name a user types ("Q4_K_M", "q4_k_m", "Q4_K", "F16")
/// or its number ("15"), as llama-quantize accepts them. Unknown names throw
/// errc::unknown_format listing the valid ones; known mixes lowbit does not
/// implement (IQ1/IQ2/IQ3, NVFP4, Q1_0, Q2_0) throw errc::unsupported.
inline file_type parse_file_type(std::string_view text) {
    namespace r = detail::recipes;
    std::string upper(text);
    for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    const r::file_type_entry* hit = nullptr;
    for (const auto& e : r::file_types)
        if (e.name == upper) { hit = &e; break; }
    if (!hit && !upper.empty() && upper.size() <= 4 &&
        std::all_of(upper.begin(), upper.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        hit = r::find_entry(static_cast<file_type>(std::stoul(upper)));
    }
    if (!hit)
        LOWBIT_THROW(errc::unknown_format,
                     "unknown file type '" + std::string(text) + "'; valid names: " + r::supported_names());
    if (!hit->supported)
        LOWBIT_THROW(errc::unsupported, "file type " + std::string(hit->name) +
                                            " is not implemented by lowbit; valid names: " + r::supported_names());
    return hit->ft;
}

/// The tensor type a file type mostly uses (llama_ftype_get_default_type).
inline type default_type(file_type ft) {
    switch (ft) {
    case file_type::all_f32: return type::f32;
    case file_type::mostly_f16: return type::f16;
    case file_type::mostly_bf16: return type::bf16;
    case file_type::mostly_q4_0: return type::q4_0;
    case file_type::mostly_q4_1: return type::q4_1;
    case file_type::mostly_q5_0: return type::q5_0;
    case file_type::mostly_q5_1: return type::q5_1;
    case file_type::mostly_q8_0: return type::q8_0;
    case file_type::mostly_q2_k:
    case file_type::mostly_q2_k_s: return type::q2_k;
    case file_type::mostly_q3_k_s:
    case file_type::mostly_q3_k_m:
    case file_type::mostly_q3_k_l: return type::q3_k;
    case file_type::mostly_q4_k_s:
    case file_type::mostly_q4_k_m: return type::q4_k;
    case file_type::mostly_q5_k_s:
    case file_type::mostly_q5_k_m: return type::q5_k;
    case file_type::mostly_q6_k: return type::q6_k;
    case file_type::mostly_iq4_nl: return type::iq4_nl;
    case file_type::mostly_iq4_xs: return type::iq4_xs;
    case file_type::mostly_tq1_0: return type::tq1_0;
    case file_type::mostly_tq2_0: return type::tq2_0;
    case file_type::mostly_mxfp4_moe: return type::mxfp4;
    case file_type::mostly_iq2_xxs: return type::iq2_xxs;
    case file_type::mostly_iq2_xs:
    case file_type::mostly_iq2_s: return type::iq2_xs;
    case file_type::mostly_iq2_m: return type::iq2_s;
    case file_type::mostly_iq3_xxs: return type::iq3_xxs;
    case file_type::mostly_iq3_xs:
    case file_type::mostly_iq3_s:
    case file_type::mostly_iq3_m: return type::iq3_s;
    case file_type::mostly_iq1_s: return type::iq1_s;
    case file_type::mostly_iq1_m: return type::iq1_m;
    default: break;
    }
    LOWBIT_THROW(errc::unsupported, "no ggml type for file type " + file_type_name(ft));
}

/// Whether llama-quantize would convert a tensor at all: a weight ("...weight")
/// of two or more dimensions that is not a norm, a router, a positional or
/// token-type embedding, or one of the small per-architecture tables it keeps.
/// `n_dims` counts as ggml_n_dims does (trailing 1s ignored).
inline bool should_quantize(std::string_view name, int n_dims, std::string_view arch = {},
                            bool quantize_output_tensor = true) {
    using detail::recipes::contains;
    if (n_dims < 2) return false;
    if (!name.ends_with("weight")) return false;
    if (contains(name, "_norm.weight")) return false;
    if (!quantize_output_tensor && name == "output.weight") return false;
    if (name == "position_embd.weight" || name == "token_types.weight") return false;
    static constexpr std::string_view kept[] = {
        "ffn_gate_inp.weight",  // MoE routers
        "ffn_gate_tid2eid.weight",  // an integer routing table
        "altup", "laurel", "per_layer_model_proj",
        "ssm_conv1d", "shortconv.conv.weight",
        "indexer.k_proj.weight", "indexer.q_proj.weight",
        "time_mix_first.weight", "time_mix_w0.weight", "time_mix_w1.weight", "time_mix_w2.weight",
        "time_mix_v0.weight", "time_mix_v1.weight", "time_mix_v2.weight", "time_mix_a0.weight",
        "time_mix_a1.weight", "time_mix_a2.weight", "time_mix_g1.weight", "time_mix_g2.weight",
        "time_mix_decay_w1.weight", "time_mix_decay_w2.weight", "time_mix_lerp_fused.weight",
        "attn_rel_b.weight",
        ".position_embd", "sam.pos_embd", "sam.neck.", "sam.net_", ".rel_pos", ".patch_embd", ".patch_merger",
        "a.rvq.codebook", "mm.a.code_embd",
    };
    for (auto k : kept)
        if (contains(name, k)) return false;
    if (arch == "glm5-next") {
        static constexpr std::string_view kept_glm5[] = {
            "hc_", "indexer.attn_q_b", "indexer.attn_k", "indexer.proj", "indexer_compressor_gate",
            "indexer_compressor_ape", "ssm_f_a.weight", "ssm_f_b.weight", "ssm_g_a.weight", "ssm_g_b.weight",
            "ssm_beta.weight", "attn_kv_a_mqa.weight", "attn_k_b.weight", "attn_v_b.weight",
        };
        for (auto k : kept_glm5)
            if (contains(name, k)) return false;
    }
    return true;
}

/// What the rules need from a model's GGUF metadata.
struct recipe_model_info {
    std::string arch;     ///< general.architecture
    int n_layer = 0;      ///< <arch>.block_count
    int n_head = 0;       ///< <arch>.attention.head_count (first layer's, if an array)
    int n_head_kv = 0;    ///< <arch>.attention.head_count_kv; pass n_head when the key is absent
    int n_expert = 0;     ///< <arch>.expert_count, 0 when absent
    int n_layer_nextn = 0;  ///< <arch>.nextn_predict_layers, 0 when absent

    /// n_head / n_head_kv as llama.cpp computes it (0 when n_head_kv is 0).
    int n_gqa() const noexcept { return n_head_kv == 0 ? 0 : n_head / n_head_kv; }
};

/// One tensor of the input file.
struct recipe_tensor {
    std::string name;
    std::vector<std::uint64_t> ne;  ///< ggml order: ne[0] is the row length
    type current = type::f32;       ///< its type in the input file
};

/// llama-quantize's switches that change the choice.
struct recipe_options {
    bool quantize_output_tensor = true;        ///< false: --leave-output-tensor
    bool pure = false;                         ///< --pure: no mix, only the default type (and fallbacks)
    bool has_imatrix = false;                  ///< an importance matrix with at least one entry is used
    std::optional<type> output_tensor_type;    ///< --output-tensor-type
    std::optional<type> token_embedding_type;  ///< --token-embedding-type
};

/// The type chosen for one tensor.
struct recipe_choice {
    std::string name;
    type chosen = type::f32;
    bool quantize = false;      ///< passes should_quantize (a kept tensor keeps its type)
    bool fell_back = false;     ///< the row did not divide into the mix's block size
    bool needs_imatrix = false; ///< llama-quantize refuses to write it without an imatrix entry for it
};

/// llama.cpp's type choice for every tensor of a model under one file type.
/// The rules count attn_v-like and ffn_down tensors in the order llama-quantize
/// visits them (by block number, then by name), so the whole tensor list is
/// needed up front; the constructor makes every choice, type_for looks it up.
class recipe {
public:
    recipe(file_type ft, recipe_model_info model, std::vector<recipe_tensor> tensors, recipe_options options = {})
        : ft_(ft), model_(std::move(model)), opt_(options) {
        if (!recipe_supports(ft))
            LOWBIT_THROW(errc::unsupported, "file type " + file_type_name(ft) + " is not implemented by lowbit");
        if (model_.n_layer <= 0 || model_.n_head < 0 || model_.n_head_kv < 0 || model_.n_expert < 0 ||
            model_.n_layer_nextn < 0 || model_.n_layer_nextn > model_.n_layer)
            LOWBIT_THROW(errc::invalid_argument, "model info: n_layer " + std::to_string(model_.n_layer) +
                                                     ", n_head " + std::to_string(model_.n_head) + ", n_head_kv " +
                                                     std::to_string(model_.n_head_kv) + ", n_expert " +
                                                     std::to_string(model_.n_expert) + " are not a valid model");
        for (const auto& t : tensors)
            if (t.ne.empty() || t.ne.size() > 4)
                LOWBIT_THROW(errc::invalid_argument,
                             "tensor " + t.name + " has " + std::to_string(t.ne.size()) + " dimensions");
        plan(std::move(tensors));
    }

    /// The type llama-quantize gives tensor `name`; errc::invalid_argument for
    /// a name that was not in the tensor list.
    type type_for(std::string_view name) const { return choice(name).chosen; }

    /// As above, and checks that `ne` is the shape the recipe was planned with.
    type type_for(std::string_view name, std::span<const std::uint64_t> ne) const {
        const auto& c = choice(name);
        const auto& planned = shapes_[index_.at(c.name)];
        if (!std::equal(planned.begin(), planned.end(), ne.begin(), ne.end()))
            LOWBIT_THROW(errc::shape_mismatch, "tensor " + c.name + " changed shape since the recipe was made");
        return c.chosen;
    }

    /// The full choice for `name` (invalid_argument for an unknown name).
    const recipe_choice& choice(std::string_view name) const {
        const auto it = index_.find(std::string(name));
        if (it == index_.end()) LOWBIT_THROW(errc::invalid_argument, "tensor " + std::string(name) + " is not in the model");
        return choices_[it->second];
    }

    /// Every choice, in llama-quantize's visiting order.
    const std::vector<recipe_choice>& choices() const noexcept { return choices_; }
    /// Tensors whose row length forced a different type than the mix asked for.
    int n_fallback() const noexcept { return n_fallback_; }
    /// True when some tensor needs imatrix data (Q2_K tensors of a Q2_K_S file).
    bool needs_imatrix() const noexcept {
        return std::any_of(choices_.begin(), choices_.end(), [](const recipe_choice& c) { return c.needs_imatrix; });
    }

    file_type ftype() const noexcept { return ft_; }
    const recipe_model_info& model() const noexcept { return model_; }

private:
    using role = detail::recipes::role;

    file_type ft_;
    recipe_model_info model_;
    recipe_options opt_;
    std::vector<recipe_choice> choices_;
    std::vector<std::vector<std::uint64_t>> shapes_;
    std::unordered_map<std::string, std::size_t> index_;
    int n_fallback_ = 0;
    bool tied_embeddings_ = true;
    int n_attn_v_ = 0, i_attn_v_ = 0, i_ffn_down_ = 0, i_ffn_gate_ = 0, i_ffn_up_ = 0;

    bool is(file_type f) const noexcept { return ft_ == f; }
    bool falcon() const noexcept { return model_.arch == "falcon"; }

    // llama.cpp gives some 80-layer (Jais2: 68-layer) dense models the 70B
    // size class, whose attn_v is 8x smaller than attn_q and cheap to widen.
    bool size_70b() const noexcept {
        const int n = model_.n_layer - model_.n_layer_nextn;
        const auto& a = model_.arch;
        if (a == "llama") return model_.n_expert != 8 && n == 80 && model_.n_head != model_.n_head_kv;
        if (a == "qwen2" || a == "deci" || a == "olmo") return n == 80;
        if (a == "jais2") return n == 68;
        return false;
    }

    // Layers 0..n/8, the last n/8, and every third layer between get more bits.
    static bool more_bits(int i, int n) noexcept { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

    void plan(std::vector<recipe_tensor> tensors) {
        namespace r = detail::recipes;
        // llama-quantize walks its tensor map ordered by block number (non-block
        // tensors first) and then by name, not in file order.
        std::stable_sort(tensors.begin(), tensors.end(), [](const recipe_tensor& a, const recipe_tensor& b) {
            const auto la = r::block_number(a.name).value_or(-1), lb = r::block_number(b.name).value_or(-1);
            if (la != lb) return la < lb;
            return a.name < b.name;
        });
        for (std::size_t i = 0; i + 1 < tensors.size(); ++i)
            if (tensors[i].name == tensors[i + 1].name)
                LOWBIT_THROW(errc::invalid_argument, "tensor " + tensors[i].name + " is listed twice");
        for (const auto& t : tensors) {
            const role ro = r::role_of(t.name);
            if (r::carries_v(ro)) ++n_attn_v_;
            if (ro == role::output) tied_embeddings_ = false;
        }
        choices_.reserve(tensors.size());
        for (auto& t : tensors) {
            recipe_choice c;
            c.name = t.name;
            c.quantize = should_quantize(t.name, r::n_dims(t.ne), model_.arch, opt_.quantize_output_tensor);
            c.chosen = c.quantize ? choose(t, c.fell_back) : t.current;
            const role ro = r::role_of(t.name);
            c.needs_imatrix = c.quantize && ft_ == file_type::mostly_q2_k_s &&
                              c.chosen == type::q2_k && ro != role::token_embd && ro != role::output;
            index_.emplace(c.name, choices_.size());
            choices_.push_back(std::move(c));
            shapes_.push_back(std::move(t.ne));
        }
    }

    type choose(const recipe_tensor& t, bool& fell_back) {
        const role ro = detail::recipes::role_of(t.name);
        // Explicit embedding/output types win before any mix or fallback.
        if (opt_.token_embedding_type && ro == role::token_embd) return *opt_.token_embedding_type;
        if (opt_.output_tensor_type && ro == role::output) return *opt_.output_tensor_type;
        type ty = default_type(ft_);
        if (!detail::recipes::is_quantized(ty)) return ty;
        if (!opt_.pure) ty = mix(ty, t, ro);
        return fit_row(ty, t, fell_back);
    }

    // A row must be whole blocks: step down to a 32-block type of similar
    // size, and to f16 when even 32 does not divide the row.
    type fit_row(type ty, const recipe_tensor& t, bool& fell_back) {
        namespace r = detail::recipes;
        const std::uint64_t ncols = t.ne[0];
        const std::size_t bs = r::block_size(ty);
        if (ncols % bs == 0) return ty;
        ++n_fallback_;
        fell_back = true;
        type alt = ty;
        switch (ty) {
        case type::iq1_s: case type::iq1_m: case type::iq2_xxs: case type::iq2_xs: case type::iq2_s:
        case type::iq3_xxs: case type::iq3_s: case type::iq4_xs: alt = type::iq4_nl; break;
        case type::q2_k: case type::q3_k: case type::tq1_0: case type::tq2_0: alt = type::q4_0; break;
        case type::q4_k: alt = type::q5_0; break;
        case type::q5_k: alt = type::q5_1; break;
        case type::q6_k: alt = type::q8_0; break;
        default:
            if (bs > 32)
                LOWBIT_THROW(errc::unsupported, "tensor " + t.name + ": rows of " + std::to_string(ncols) +
                                                    " do not fit type " + std::to_string(static_cast<unsigned>(ty)) +
                                                    " and it has no fallback type");
            break;
        }
        if (ncols % r::block_size(alt) != 0) alt = type::f16;
        return alt;
    }

    // (i_layer, n_layer) for the per-layer rules. Expert tensors are not
    // stored one per layer in order, so MoE models read the block number.
    std::pair<int, int> layer_of(const std::string& name, int counter) const {
        if (std::max(1, model_.n_expert) > 1) {
            const auto b = detail::recipes::block_number(name);
            if (!b) LOWBIT_THROW(errc::invalid_argument, "cannot tell the layer of tensor " + name);
            if (*b < 0 || *b >= model_.n_layer)
                LOWBIT_THROW(errc::invalid_argument, "tensor " + name + " names layer " + std::to_string(*b) +
                                                         " of a model with " + std::to_string(model_.n_layer));
            return {static_cast<int>(*b), model_.n_layer};
        }
        return {counter, model_.n_layer};
    }

    type output_type(type base, const recipe_tensor& t) const {
        if (opt_.output_tensor_type) return *opt_.output_tensor_type;
        if (is(file_type::mostly_mxfp4_moe)) return type::q8_0;
        if (falcon() || t.ne[0] % detail::recipes::block_size(base) != 0) return type::q8_0;
        return base == type::q8_0 ? base : type::q6_k;
    }

    type mix(type base, const recipe_tensor& t, role ro) {
        using detail::recipes::contains;
        using F = file_type;
        const std::string& name = t.name;
        if (model_.arch == "glm5-next" &&
            (contains(name, "attn_q_a") || contains(name, "attn_q_b") || contains(name, "nextn.eh_proj")))
            return type::q8_0;
        // With no output.weight the token embedding doubles as the output
        // projection, so it is quantized like one.
        if (ro == role::output || (tied_embeddings_ && ro == role::token_embd)) return output_type(base, t);
        if (is(F::mostly_mxfp4_moe)) {
            const bool expert_role = ro == role::ffn_up || ro == role::ffn_gate || ro == role::ffn_down;
            const bool stacked = t.ne.size() > 2 && t.ne[2] > 1;
            return stacked && (model_.arch != "bailingmoe3" || expert_role) ? type::mxfp4 : type::q8_0;
        }
        const int gqa = model_.n_gqa();
        const bool moe8 = model_.n_expert == 8;
        switch (ro) {
        case role::token_embd:
            return is(F::mostly_tq1_0) || is(F::mostly_tq2_0) ? type::q4_k : base;
        case role::attn_v:
        case role::attn_qkv:
        case role::attn_kv_b: {
            type ty = base;
            const int i = i_attn_v_++;
            if (is(F::mostly_q2_k)) ty = gqa >= 4 ? type::q4_k : type::q3_k;
            else if (is(F::mostly_q2_k_s) && gqa >= 4) ty = type::q4_k;
            else if (is(F::mostly_q3_k_m)) ty = i < 2 ? type::q5_k : type::q4_k;
            else if (is(F::mostly_q3_k_l)) ty = type::q5_k;
            else if ((is(F::mostly_iq4_nl) || is(F::mostly_iq4_xs)) && gqa >= 4) ty = type::q5_k;
            else if ((is(F::mostly_q4_k_m) || is(F::mostly_q5_k_m)) && more_bits(i, n_attn_v_)) ty = type::q6_k;
            else if (is(F::mostly_q4_k_s) && i < 4) ty = type::q5_k;
            if (size_70b() && (ty == type::q3_k || ty == type::q4_k)) ty = type::q5_k;
            if (moe8) ty = type::q8_0;
            return ty;
        }
        case role::attn_k:
            return moe8 ? type::q8_0 : base;
        case role::ffn_down: {
            const auto [i, n] = layer_of(name, i_ffn_down_);
            ++i_ffn_down_;
            if (is(F::mostly_q2_k)) return type::q3_k;
            if (is(F::mostly_q2_k_s)) return i < n / 8 ? type::q4_k : base;
            if (is(F::mostly_q3_k_m))
                return i < n / 16 ? type::q5_k : (!falcon() || more_bits(i, n)) ? type::q4_k : type::q3_k;
            if (is(F::mostly_q3_k_l)) return falcon() ? type::q4_k : type::q5_k;
            if (is(F::mostly_q4_k_m)) {
                if (falcon()) return i < n / 16 ? type::q6_k : more_bits(i, n) ? type::q5_k : type::q4_k;
                return more_bits(i, n) ? type::q6_k : base;
            }
            if ((is(F::mostly_iq4_nl) || is(F::mostly_iq4_xs)) && i < n / 8 && !opt_.has_imatrix) return type::q5_k;
            if (is(F::mostly_q5_k_m) && more_bits(i, n)) return type::q6_k;
            if (is(F::mostly_q4_k_s) && !falcon() && i < n / 8) return type::q5_k;
            // Q4_1/Q5_1 misbehave on early ffn_down without an imatrix, so
            // this bump only happens with one.
            if ((is(F::mostly_q4_0) || is(F::mostly_q5_0)) && opt_.has_imatrix && i < n / 8)
                return is(F::mostly_q4_0) ? type::q4_1 : type::q5_1;
            return base;
        }
        case role::attn_output:
            if (falcon()) return is(F::mostly_q3_k_l) ? type::q4_k : base;
            if (moe8) {
                const bool widen = is(F::mostly_q2_k) || is(F::mostly_q3_k_s) || is(F::mostly_q3_k_m) ||
                                   is(F::mostly_iq4_nl) || is(F::mostly_q4_k_s) || is(F::mostly_q4_k_m) ||
                                   is(F::mostly_iq4_xs);
                return widen ? type::q5_k : base;
            }
            if (is(F::mostly_q2_k)) return type::q3_k;
            if (is(F::mostly_q3_k_m)) return type::q4_k;
            if (is(F::mostly_q3_k_l)) return type::q5_k;
            return base;
        case role::ffn_gate:
            // Only the IQ3_XS mix changes these, but an MoE layer number is still validated.
            (void)layer_of(name, i_ffn_gate_);
            ++i_ffn_gate_;
            return base;
        case role::ffn_up:
            (void)layer_of(name, i_ffn_up_);
            ++i_ffn_up_;
            return base;
        default:
            return base;
        }
    }
};

}  // namespace ggml
LOWBIT_NAMESPACE_END
