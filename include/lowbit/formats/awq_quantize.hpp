#pragma once
// A safetensors checkpoint quantized with AWQ into an AWQ GEMM checkpoint
// (formats/awq_checkpoint.hpp), from a calibration file of activations.
//
// The calibration file holds, for each linear layer X to quantize ("X.weight"
// [out, in] in the model), its input activations X (F32/F16/BF16 [tokens,
// in] or [batch, tokens, in]), as for GPTQ (formats/gptq_quantize.hpp).
// AWQ's scales must be folded into the operation that produces a layer's
// input, so layers are taken in AutoAWQ's groups, read from the tensor names
// of Llama-style decoders (llama, mistral, qwen2/3 and the like; P is a
// block's prefix such as "model.layers.7."):
//
//   folded into                    scaled layers (one input, one search)
//   P input_layernorm (weight)     P self_attn.{q,k,v}_proj
//   P self_attn.v_proj (rows)      P self_attn.o_proj   (v and o of one shape)
//   P post_attention_layernorm     P mlp.{gate,up}_proj
//   P mlp.up_proj (rows)           P mlp.down_proj
//
// A norm's weight (and bias) is divided by s, a linear's rows (and bias)
// too; the layers' columns are multiplied by s. A group is quantized when the
// calibration file names any of its layers (its layers read one input: the
// first named layer's activations serve all of them); a named layer in no
// group is clipped and quantized without a scale (nothing to fold it into),
// and the report says so. As in AutoAWQ, every search sees the weights as
// given, the scales are applied, and each layer's clip (not for query and
// key projections) is searched on its scaled weight and input. The weights
// of folded norms and unquantized linears are rewritten in their dtype.
// Every check runs before anything is written; any failure names the layer.
//
// Needs BLAS: link lowbit::calibration.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../algorithms/awq.hpp"
#include "../core/error.hpp"
#include "../core/view.hpp"
#include "../detail/file_io.hpp"
#include "awq_checkpoint.hpp"
#include "calibration_file.hpp"
#include "model_config.hpp"
#include "json.hpp"
#include "safetensors.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace awq {

struct quantize_options {
    checkpoint_format format{};
    std::size_t min_tokens = 128;  ///< layers with fewer calibration tokens are refused
    bool duo_scaling = true;       ///< calibration::awq_options::duo_scaling
    bool clip = true;              ///< the clip search
    unsigned threads = 1;
    std::size_t error_rows = 256;  ///< output rows (evenly spaced) the report's errors are measured over
    safetensors::rewrite_progress progress;
};

/// A group of layers that read one input, and the op their scales fold into.
struct scaling_group {
    std::string prev;                 ///< a norm or linear (its name without ".weight"); empty: not scaled
    bool prev_is_linear = false;
    std::vector<std::string> layers;  ///< without ".weight"
};

struct layer_report {
    std::string layer, folded_into;  ///< folded_into empty: no scale
    std::size_t rows = 0, cols = 0, tokens = 0;
    float ratio = 0.0f;
    bool clipped = false;
    double rtn_error = 0.0, awq_error = 0.0;  ///< ||X (W - W')^T||^2 / ||X W^T||^2 on the calibration inputs
    double seconds = 0.0;
};

struct quantize_report : safetensors::rewrite_counts {
    std::vector<layer_report> layers;
    std::vector<std::string> folded;  ///< tensors rewritten with 1/s folded in (not quantized)
    std::map<std::string, std::vector<float>> scales;  ///< per op folded into: its s (per input channel of the group)
    std::string config_json;                  ///< config.json's "quantization_config"
    std::filesystem::path config_written;     ///< config.json beside out, or empty (see quantize_checkpoint)
};

/// AutoAWQ's groups of a Llama-style decoder, found by tensor name.
inline std::vector<scaling_group> llama_groups(const safetensors::file& model) {
    std::vector<scaling_group> out;
    const std::regex block(R"((.*\.)?(self_attn\.[qkvo]_proj|mlp\.(gate|up|down)_proj)\.weight)");
    const auto has = [&](const std::string& n) { return model.find(n + ".weight") != nullptr; };
    std::set<std::string> seen;
    for (const auto& t : model.tensors()) {
        std::smatch m;
        if (!std::regex_match(t.name, m, block) || !seen.insert(m[1].str()).second) continue;
        const std::string p = m[1].str();
        const std::string a = p + "self_attn.", f = p + "mlp.";
        if (has(p + "input_layernorm") && has(a + "q_proj") && has(a + "k_proj") && has(a + "v_proj"))
            out.push_back({p + "input_layernorm", false, {a + "q_proj", a + "k_proj", a + "v_proj"}});
        if (has(a + "v_proj") && has(a + "o_proj") &&
            model.at(a + "v_proj.weight").shape == model.at(a + "o_proj.weight").shape)
            out.push_back({a + "v_proj", true, {a + "o_proj"}});
        if (has(p + "post_attention_layernorm") && has(f + "gate_proj") && has(f + "up_proj"))
            out.push_back({p + "post_attention_layernorm", false, {f + "gate_proj", f + "up_proj"}});
        if (has(f + "up_proj") && has(f + "down_proj")) out.push_back({f + "up_proj", true, {f + "down_proj"}});
    }
    return out;
}

namespace detail {

/// AutoAWQ's avoid_clipping: query and key projections (their product
/// through softmax makes a per-layer output error the wrong measure).
inline bool clip_allowed(std::string_view layer) {
    const auto dot = layer.rfind('.');
    const std::string_view last = dot == std::string_view::npos ? layer : layer.substr(dot + 1);
    for (const std::string_view s : {"q_", "k_", "query", "key", "Wqkv"})
        if (last.find(s) != std::string_view::npos) return false;
    return true;
}

/// ||X D^T||^2 for D's rows `rows` (R x C), X tokens x C.
inline double output_sq(const std::vector<float>& x, std::size_t T, const std::vector<float>& d, std::size_t C,
                        const std::vector<std::size_t>& rows) {
    const std::size_t M = rows.size();
    std::vector<float> dm(M * C), e(T * M);
    for (std::size_t i = 0; i < M; ++i) std::copy_n(&d[rows[i] * C], C, &dm[i * C]);
    const calibration::detail::blas_threads one(1);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(M), static_cast<int>(C),
                1.0f, x.data(), static_cast<int>(C), dm.data(), static_cast<int>(C), 0.0f, e.data(),
                static_cast<int>(M));
    double s = 0.0;
    for (float v : e) s += static_cast<double>(v) * v;
    return s;
}

struct plan_layer {
    std::size_t group = 0;               ///< its scaling group
    std::optional<std::size_t> out_of;   ///< the group whose prev op it is (its rows / s)
    const safetensors::tensor_info* acts = nullptr;
    std::size_t tokens = 0;
};

}  // namespace detail

/// Quantizes with AWQ the layers `calib` names in checkpoint `in`, and the
/// layers that share their inputs, into an AWQ GEMM checkpoint `out`
/// (written atomically, metadata copied, 1/s folded into the ops before).
/// Where a config.json sits beside `in` and `out` is in another folder, it
/// is written beside `out` too with "quantization_config" set, once `out` is
/// complete (what transformers and vLLM read to load it).
inline quantize_report quantize_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                           const std::filesystem::path& calib_path, const quantize_options& o) {
    using safetensors::detail::show_shape;
    lowbit::detail::check_output_target(out, "safetensors", {{"input", &in}, {"calibration file", &calib_path}});
    const auto model = safetensors::file::open(in);
    const auto calib = safetensors::file::open(calib_path);
    const std::string cname = calib_path.string();
    model_config::beside config(in, out, {{"input", &in}, {"calibration file", &calib_path}});

    // The named layers, each checked against the model.
    std::map<std::string, const safetensors::tensor_info*> named;
    for (const auto& t : calib.tensors()) {
        if (!calibration::split_stat_name(t.name).second.empty())
            LOWBIT_THROW(errc::invalid_argument,
                         cname + ": '" + t.name +
                             "' is a saved statistic; AWQ needs each layer's activations (its searches run on the "
                             "tokens themselves), named as the layer");
        const std::string where = cname + ": layer '" + t.name + "'";
        const auto* w = model.find(t.name + ".weight");
        if (!w) LOWBIT_THROW(errc::invalid_argument, where + ": the model has no tensor '" + t.name + ".weight'");
        safetensors::float_storage_of(*w, where + ": the model's weight");
        if (w->shape.size() != 2)
            LOWBIT_THROW(errc::invalid_argument, where + ": the model's weight is " + show_shape(w->shape) + ", not 2-D");
        safetensors::float_storage_of(t, where + ": activations");
        if (t.shape.size() < 2 || t.shape.size() > 3 || t.shape.back() != w->shape[1])
            LOWBIT_THROW(errc::shape_mismatch, where + ": activations " + show_shape(t.shape) + " are not [tokens, " +
                                                   std::to_string(w->shape[1]) + "] (the weight is " +
                                                   show_shape(w->shape) + ")");
        named[t.name] = &t;
    }
    if (named.empty()) LOWBIT_THROW(errc::invalid_argument, cname + ": no layers to calibrate");

    // Groups with a named layer; named layers in none get one of their own.
    std::vector<scaling_group> groups;
    std::map<std::string, detail::plan_layer> plan;
    for (auto& g : llama_groups(model)) {
        const safetensors::tensor_info* acts = nullptr;
        for (const auto& l : g.layers)
            if (!acts && named.count(l)) acts = named[l];
        if (!acts) continue;
        for (const auto& l : g.layers) plan[l] = {groups.size(), std::nullopt, named.count(l) ? named[l] : acts, 0};
        groups.push_back(std::move(g));
    }
    for (const auto& [l, acts] : named)
        if (!plan.count(l)) {
            plan[l] = {groups.size(), std::nullopt, acts, 0};
            groups.push_back({"", false, {l}});
        }
    std::map<std::string, std::vector<std::size_t>> folds;  // tensor -> groups whose 1/s it takes (rows)
    for (std::size_t i = 0; i < groups.size(); ++i) {
        const auto& g = groups[i];
        if (g.prev.empty()) continue;
        if (g.prev_is_linear && plan.count(g.prev))
            plan[g.prev].out_of = i;
        folds[g.prev + ".weight"].push_back(i);
        if (model.find(g.prev + ".bias")) folds[g.prev + ".bias"].push_back(i);
    }
    for (auto& [l, p] : plan) {
        const std::string where = cname + ": layer '" + l + "'";
        const auto& w = model.at(l + ".weight");
        if (w.shape.size() != 2)
            LOWBIT_THROW(errc::invalid_argument, where + ": the model's weight is " + show_shape(w.shape) + ", not 2-D");
        if (const auto why = unfit_reason(w.shape[0], w.shape[1], o.format); !why.empty())
            LOWBIT_THROW(errc::not_divisible, where + ": the weight " + show_shape(w.shape) + " cannot take " +
                                                  o.format.name() + ": " + why);
        if (p.acts->shape.back() != w.shape[1])
            LOWBIT_THROW(errc::shape_mismatch, where + ": activations " + show_shape(p.acts->shape) +
                                                   " do not match the weight " + show_shape(w.shape));
        p.tokens = static_cast<std::size_t>(p.acts->numel() / w.shape[1]);
        if (p.tokens < o.min_tokens)
            LOWBIT_THROW(errc::invalid_argument, where + ": " + std::to_string(p.tokens) +
                                                     " calibration tokens; at least " + std::to_string(o.min_tokens) +
                                                     " are needed");
        safetensors::check_finite(*p.acts, where + ": activations");
        safetensors::check_finite(w, where + ": weight");
    }
    for (const auto& [name, gs] : folds) {
        const auto& t = model.at(name);
        safetensors::float_storage_of(t, "'" + name + "', which AWQ's scales fold into");
        const std::size_t want = model.at(groups[gs.front()].layers.front() + ".weight").shape[1];
        if (t.shape.empty() || t.shape[0] != want || (t.shape.size() > 1 && !groups[gs.front()].prev_is_linear) ||
            t.shape.size() > 2)
            LOWBIT_THROW(errc::shape_mismatch, "'" + name + "' " + show_shape(t.shape) + " does not produce the " +
                                                   std::to_string(want) + " inputs of '" +
                                                   groups[gs.front()].layers.front() + "'");
        safetensors::check_finite(t, "'" + name + "'");
    }

    calibration::awq_options ao;
    ao.bits = o.format.bits;
    ao.group_size = o.format.group;
    ao.duo_scaling = o.duo_scaling;
    ao.clip = o.clip;
    ao.threads = o.threads;

    // A layer's activations, tokens x in.
    const auto acts_of = [](const detail::plan_layer& p) { return safetensors::finite_floats(*p.acts); };

    // Every search on the weights as given.
    quantize_report rep;
    std::vector<std::vector<float>> scales(groups.size());
    std::vector<float> ratios(groups.size(), 0.0f);
    for (std::size_t i = 0; i < groups.size(); ++i) {
        const auto& g = groups[i];
        if (g.prev.empty()) continue;
        const auto& p = plan.at(g.layers.front());
        const std::size_t C = static_cast<std::size_t>(model.at(g.layers.front() + ".weight").shape[1]);
        std::vector<std::vector<float>> ws;
        std::vector<matrix_view<const float>> views;
        for (const auto& l : g.layers) ws.push_back(safetensors::finite_floats(model.at(l + ".weight")));
        for (std::size_t k = 0; k < ws.size(); ++k) views.emplace_back(ws[k].data(), ws[k].size() / C, C);
        const std::vector<float> x = acts_of(p);
        try {
            auto r = calibration::awq_search_scales(views, matrix_view<const float>(x.data(), p.tokens, C), ao);
            scales[i] = std::move(r.scales);
            ratios[i] = r.ratio;
            rep.scales[g.prev] = scales[i];
        } catch (const error& e) {
            rethrow_with_context(e, "AWQ scale search for '" + g.layers.front() + "'");
        }
    }

    // Rewritten tensors return true as quantized ones do (rewrite() copies
    // the others); they are taken out of the counts after.
    std::uint64_t folded_elements = 0;
    const auto fold = [&](const safetensors::tensor_info& t, safetensors::writer& w, std::vector<float> v) {
        w.add(t.name, t.dtype, t.shape, safetensors::float_bytes(v, t.dtype));
        rep.folded.push_back(t.name);
        folded_elements += t.numel();
        return true;
    };
    const auto convert = [&](const safetensors::tensor_info& t, safetensors::writer& w) {
        if (const auto f = folds.find(t.name); f != folds.end() &&
                                               !plan.count(t.name.substr(0, t.name.rfind('.')))) {
            // A norm's weight or bias, or an unquantized linear's rows: / s.
            std::vector<float> v = safetensors::finite_floats(t);
            const std::size_t n = static_cast<std::size_t>(t.shape[0]), per = v.size() / n;
            for (const std::size_t gi : f->second)
                for (std::size_t r = 0; r < n; ++r)
                    for (std::size_t c = 0; c < per; ++c) v[r * per + c] /= scales[gi][r];
            return fold(t, w, std::move(v));
        }
        if (!std::string_view(t.name).ends_with(".weight")) {
            // A quantized linear's bias: / s of the group it feeds.
            if (std::string_view(t.name).ends_with(".bias")) {
                const std::string l = t.name.substr(0, t.name.size() - 5);
                if (const auto it = plan.find(l); it != plan.end() && it->second.out_of) {
                    std::vector<float> v = safetensors::finite_floats(t);
                    for (std::size_t r = 0; r < v.size(); ++r) v[r] /= scales[*it->second.out_of][r];
                    return fold(t, w, std::move(v));
                }
            }
            return false;
        }
        const std::string name = t.name.substr(0, t.name.size() - 7);
        const auto it = plan.find(name);
        if (it == plan.end()) return false;
        const auto t0 = std::chrono::steady_clock::now();
        const auto& p = it->second;
        const auto& g = groups[p.group];
        const std::size_t R = static_cast<std::size_t>(t.shape[0]), C = static_cast<std::size_t>(t.shape[1]);
        const std::vector<float> w0 = safetensors::finite_floats(t);
        const std::vector<float> x = acts_of(p);
        const std::vector<float> ones(C, 1.0f);
        const std::vector<float>& s_in = g.prev.empty() ? ones : scales[p.group];
        std::vector<float> ws(R * C);
        for (std::size_t r = 0; r < R; ++r) {
            const float so = p.out_of ? scales[*p.out_of][r] : 1.0f;
            for (std::size_t c = 0; c < C; ++c) ws[r * C + c] = w0[r * C + c] * s_in[c] / so;
        }
        layer_report lr;
        lr.layer = name;
        lr.folded_into = g.prev;
        lr.rows = R;
        lr.cols = C;
        lr.tokens = p.tokens;
        lr.ratio = g.prev.empty() ? 0.0f : ratios[p.group];
        lr.clipped = o.clip && detail::clip_allowed(name);
        std::vector<float> xs(x.size());
        for (std::size_t i = 0; i < x.size(); ++i) xs[i] = x[i] / s_in[i % C];
        std::vector<float> clip;
        if (lr.clipped) {
            clip = calibration::awq_search_clip(matrix_view<const float>(ws.data(), R, C),
                                                matrix_view<const float>(xs.data(), p.tokens, C), ao);
            calibration::awq_apply_clip(matrix_view<float>(ws.data(), R, C), clip, o.format.group);
        }
        const calibration::awq_quantized q = calibration::awq_quantize(matrix_view<const float>(ws.data(), R, C), ao);
        layer l;
        l.rows = R;
        l.cols = C;
        l.groups = q.groups;
        l.codes = q.codes;
        l.scale.resize(q.groups * R);
        l.zero.resize(q.groups * R);
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t k = 0; k < q.groups; ++k) {
                l.scale[k * R + r] = q.scale[r * q.groups + k];
                l.zero[k * R + r] = q.zero[r * q.groups + k];
            }

        // Output errors in the original coordinates: W' = diag(s_out) Q diag(s_in)^-1.
        std::vector<std::size_t> rows;
        const std::size_t M = std::min(R, std::max<std::size_t>(o.error_rows, 1));
        for (std::size_t i = 0; i < M; ++i) rows.push_back(i * R / M);
        const double ref = detail::output_sq(x, p.tokens, w0, C, rows);
        std::vector<float> d(R * C);
        calibration::awq_options rtn = ao;
        rtn.clip = false;
        const calibration::awq_quantized base = calibration::awq_quantize(matrix_view<const float>(w0.data(), R, C), rtn);
        for (const std::size_t r : rows)
            for (std::size_t c = 0; c < C; ++c) d[r * C + c] = w0[r * C + c] - base.value(r, c);
        const double e_rtn = detail::output_sq(x, p.tokens, d, C, rows);
        for (const std::size_t r : rows) {
            const float so = p.out_of ? scales[*p.out_of][r] : 1.0f;
            for (std::size_t c = 0; c < C; ++c) d[r * C + c] = w0[r * C + c] - so * q.value(r, c) / s_in[c];
        }
        const double e_awq = detail::output_sq(x, p.tokens, d, C, rows);
        lr.rtn_error = ref > 0.0 ? e_rtn / ref : 0.0;
        lr.awq_error = ref > 0.0 ? e_awq / ref : 0.0;

        add_layer(w, name, l, o.format);
        lr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        rep.layers.push_back(std::move(lr));
        return true;
    };
    // The float weights (twice), the activations' share and the codes: about 16 bytes an element.
    static_cast<safetensors::rewrite_counts&>(rep) = safetensors::rewrite(in, out, convert, 16, o.progress);
    rep.quantized -= rep.folded.size();
    rep.weights_quantized -= folded_elements;
    rep.config_json = o.format.config_json();
    rep.config_written = config.write("quantization_config", rep.config_json);
    return rep;
}

}  // namespace awq
LOWBIT_NAMESPACE_END
