#pragma once
// A safetensors checkpoint quantized with GPTQ as llm-compressor's
// GPTQModifier runs it, into a compressed-tensors pack-quantized checkpoint
// (formats/ct_checkpoint.hpp), from a calibration file (the one
// formats/gptq_quantize.hpp reads: per layer X its activations X, or a saved
// X.hessian).
//
// llm-compressor's GPTQ fits each group's scale and zero point once, by
// compressed-tensors' rule on the weights as given (its min-max observer, in
// the weights' dtype), and keeps them: GPTQ then chooses the codes, in
// float32, by compressed-tensors' fake_quantize, with columns taken by
// decreasing Hessian diagonal ("actorder": "static", its default; groups stay
// the original columns'), damping 0.01 of the mean diagonal, blocks of 128,
// and round-to-nearest where the damped Hessian has no Cholesky factor. Its
// result is stored in the model's dtype and quantized again, with the same
// params, when the checkpoint is written; so are lowbit's codes here.
//
// The layers the calibration file names get GPTQ; every other linear weight
// compressed-tensors would quantize is rounded to nearest (the report names
// them), and those whose columns do not divide into groups stay in floating
// point and join lm_head in the config's ignore list. Every check runs before
// the first layer is quantized; any failure is an error naming the layer, and
// no output is written.
//
// Needs BLAS and LAPACK: link lowbit::calibration.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "../algorithms/gptq.hpp"
#include "../core/error.hpp"
#include "../core/view.hpp"
#include "ct_checkpoint.hpp"
#include "gptq_quantize.hpp"
#include "model_config.hpp"
#include "safetensors.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ct {

struct quantize_options {
    checkpoint_format format{};  ///< act_order: llm-compressor's "static" order (its default)
    float damp = 0.01f;          ///< dampening_frac
    std::size_t block_size = 128;
    std::size_t min_tokens = 128;
    unsigned threads = 1;
    /// Output rows (evenly spaced) over which the report's output errors are measured.
    std::size_t error_rows = 256;
    safetensors::rewrite_progress progress;
};

/// One layer quantized with GPTQ (gptq::layer_report: the relative output
/// errors of round-to-nearest in the same scheme and of GPTQ, both as the
/// checkpoint's weights, rounded to the model's dtype).
struct layer_report : gptq::layer_report {
    std::string note;  ///< why GPTQ fell back to round-to-nearest, or empty
};

struct quantize_report : convert_report {
    std::vector<layer_report> layers;
    std::vector<std::string> rounded;  ///< linear layers without calibration data: rounded to nearest
};

inline quantize_report quantize_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                           const std::filesystem::path& calib_path, const quantize_options& o) {
    lowbit::detail::check_output_target(out, "safetensors", {{"input", &in}, {"calibration file", &calib_path}});
    model_config::beside config(in, out, {{"input", &in}, {"calibration file", &calib_path}});
    const auto model = safetensors::file::open(in);
    const auto calib = safetensors::file::open(calib_path);
    const checkpoint_format& f = o.format;
    const auto entries = gptq::detail::read_calibration(
        calib, model, calib_path.string(), o.min_tokens, f.name(),
        [&](std::uint64_t rows, std::uint64_t cols) { return unfit_reason(rows, cols, f); });
    for (const auto& [name, e] : entries)
        if (!safetensors::is_linear_weight(model.at(name + ".weight")))
            LOWBIT_THROW(errc::invalid_argument,
                         calib_path.string() + ": layer '" + name +
                             "' is not one compressed-tensors quantizes (embeddings and lm_head stay in floating "
                             "point: lm_head is in the config's ignore list)");

    quantize_report rep;
    rep.ignore.push_back("lm_head");
    const int half = 1 << (f.bits - 1);
    const auto convert = [&](const safetensors::tensor_info& t, safetensors::writer& w) {
        if (!safetensors::is_linear_weight(t)) return false;
        const std::string name = t.name.substr(0, t.name.size() - std::string_view(".weight").size());
        if (const auto why = unfit_reason(t.shape[0], t.shape[1], f); !why.empty()) {
            rep.kept.emplace_back(t.name, why);
            if (name != "lm_head") rep.ignore.push_back(name);
            return false;
        }
        const auto t0 = std::chrono::steady_clock::now();
        const std::size_t R = static_cast<std::size_t>(t.shape[0]), C = static_cast<std::size_t>(t.shape[1]);
        const std::vector<float> x = safetensors::finite_floats(t);
        const matrix_view<const float> wv(x.data(), R, C);
        const layer rtn = quantize_layer(wv, f, t.dtype, o.threads);
        const auto it = entries.find(name);
        if (it == entries.end()) {
            rep.rounded.push_back(name);
            add_layer(w, name, rtn, f);
            return true;
        }
        std::vector<float> H;
        try {
            H = gptq::detail::hessian_of(it->second, C, o.threads);
        } catch (const error& e) {
            rethrow_with_context(e, "calibration of layer '" + name + "'");
        }
        // GPTQ with the round-to-nearest params, zero points in code units.
        std::vector<float> zero(rtn.zero.size());
        for (std::size_t i = 0; i < zero.size(); ++i) zero[i] = static_cast<float>(rtn.zero[i] + half);
        calibration::gptq_options go;
        go.bits = f.bits;
        go.group_size = f.group;
        go.sym = f.sym;
        go.act_order = f.act_order;
        go.percdamp = o.damp;
        go.block_size = o.block_size;
        go.threads = o.threads;
        go.rtn_fallback = true;
        go.given_scale = rtn.scale;
        go.given_zero = zero;
        go.shift_then_round = true;
        go.dequant_in = safetensors::float_storage_of(t);
        const calibration::gptq_result g = calibration::gptq(wv, H, go);
        // Stored in the model's dtype, then quantized again with the same params.
        layer l = rtn;
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t c = 0; c < C; ++c) {
                const std::size_t k = r * l.groups + l.group_of(c);
                const float v = safetensors::stored_value(
                    rtn.scale[k] * (static_cast<float>(g.codes[r * C + c]) - zero[k]), t.dtype);
                l.codes[r * C + c] =
                    detail::code(v, rtn.scale[k], static_cast<float>(rtn.zero[k]), f.bits, f.numerics, t.dtype);
            }

        layer_report lr;
        lr.layer = name;
        lr.rows = R;
        lr.cols = C;
        lr.tokens = it->second.tokens;
        lr.note = g.note;
        const auto rows = gptq::detail::report_rows(R, o.error_rows);
        const double ref = gptq::detail::quadratic(x, C, rows, H);
        std::vector<float> d(R * C);
        const double e_rtn = gptq::detail::residual_quadratic(
            x, C, rows, H, d, [&](std::size_t r, std::size_t c) { return rtn.value(r, c); });
        const double e_gptq = gptq::detail::residual_quadratic(
            x, C, rows, H, d, [&](std::size_t r, std::size_t c) { return l.value(r, c); });
        lr.rtn_error = ref > 0.0 ? e_rtn / ref : 0.0;
        lr.gptq_error = ref > 0.0 ? e_gptq / ref : 0.0;

        add_layer(w, name, l, f);
        lr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        rep.layers.push_back(std::move(lr));
        return true;
    };
    // The float weights, the Hessian's share and the codes: about 12 bytes an element.
    static_cast<safetensors::rewrite_counts&>(rep) = safetensors::rewrite(in, out, convert, 12, o.progress);
    rep.config_json = f.config_json(rep.ignore);
    rep.config_written = config.write("quantization_config", rep.config_json);
    return rep;
}

}  // namespace ct
LOWBIT_NAMESPACE_END
