#pragma once
// A safetensors checkpoint quantized with GPTQ into a GPTQ checkpoint
// (formats/gptq_checkpoint.hpp), from a calibration file.
//
// The calibration file is safetensors too. For each linear layer X to
// quantize ("X.weight" [out, in] in the model) it holds either
//   X          F32/F16/BF16 [tokens, in] (or [batch, tokens, in]): the
//              layer's input activations, from which the Hessian
//              H = 2 X^T X / tokens is accumulated, or
//   X.hessian  F32 [in, in]: that Hessian, already accumulated, as
//              calibration::save_stats writes it (formats/calibration_file.hpp,
//              with X.tokens, whose count is then checked too).
// Exactly the layers the file names are quantized (the other tensors are
// copied as they are); each must exist in the model with a matching width,
// have finite values and at least min_tokens tokens, and fit GPTQ's packing.
// Every check runs before the first layer is quantized; any failure is an
// error naming the layer, and no output is written.
//
// Needs BLAS and LAPACK: link lowbit::calibration.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../algorithms/gptq.hpp"
#include "../core/error.hpp"
#include "../core/finite.hpp"
#include "../core/numeric.hpp"
#include "../core/view.hpp"
#include "../detail/file_io.hpp"
#include "calibration_file.hpp"
#include "gptq_checkpoint.hpp"
#include "safetensors.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace gptq {

struct quantize_options {
    checkpoint_format format{};
    /// Layers with fewer calibration tokens are refused (a Hessian given
    /// directly has no token count and is not).
    std::size_t min_tokens = 128;
    /// GPTQ's lazy-update block and MSE clip search (calibration::gptq_options).
    std::size_t block_size = 128;
    bool mse = false;
    unsigned threads = 1;
    /// Output rows (evenly spaced) over which the report's output errors are measured.
    std::size_t error_rows = 256;
    safetensors::rewrite_progress progress;
};

/// One quantized layer: the relative output error on the calibration
/// inputs, ||X (W - Q)^T||^2 / ||X W^T||^2 = tr(D H D^T) / tr(W H W^T), of
/// round-to-nearest with the same format and of GPTQ (over report rows).
struct layer_report {
    std::string layer;
    std::size_t rows = 0, cols = 0, tokens = 0;  ///< tokens: 0 where the file gave the Hessian
    double rtn_error = 0.0, gptq_error = 0.0;
    double seconds = 0.0;
    std::size_t zero_zero_points = 0;  ///< v1 zeros of 0 (gptq_checkpoint.hpp, zero_zero_points)
};

struct quantize_report : safetensors::rewrite_counts {
    std::vector<layer_report> layers;
    std::string config_json;  ///< quantize_config.json's text
};

namespace detail {

/// A calibration file's entry for one layer: raw activations, or saved
/// statistics with a Hessian.
struct calib_entry {
    const safetensors::tensor_info* acts = nullptr;
    calibration::layer_stats stats;
    std::size_t tokens = 0;  ///< 0: a Hessian saved without a token count
};

/// The layers the calibration file names, each checked against the model:
/// at least min_tokens tokens, and a weight the format can take
/// (unfit(rows, cols) says why not, or is empty).
template <class Unfit>
std::map<std::string, calib_entry> read_calibration(const safetensors::file& calib, const safetensors::file& model,
                                                    const std::string& calib_name, std::size_t min_tokens,
                                                    const std::string& format_name, Unfit&& unfit) {
    using safetensors::detail::show_shape;
    std::map<std::string, calib_entry> out;
    for (auto& [layer, st] : calibration::load_stats(calib, calib_name)) out[layer].stats = std::move(st);
    for (const auto& t : calib.tensors())
        if (calibration::split_stat_name(t.name).second.empty()) out[t.name].acts = &t;
    for (const auto& [layer, e] : out) {
        if (e.acts && e.stats.hessian)
            LOWBIT_THROW(errc::invalid_argument,
                         calib_name + ": layer '" + layer + "' has both activations and a Hessian; give one");
        if (!e.acts && !e.stats.hessian)
            LOWBIT_THROW(errc::invalid_argument, calib_name + ": layer '" + layer +
                                                     "' has statistics but neither activations nor a Hessian");
    }
    if (out.empty()) LOWBIT_THROW(errc::invalid_argument, calib_name + ": no layers to calibrate");
    for (auto& [layer, e] : out) {
        const std::string where = calib_name + ": layer '" + layer + "'";
        const auto* w = model.find(layer + ".weight");
        if (!w) LOWBIT_THROW(errc::invalid_argument, where + ": the model has no tensor '" + layer + ".weight'");
        if (w->shape.size() != 2 || (w->dtype != safetensors::dtype::f32 && w->dtype != safetensors::dtype::f16 &&
                                     w->dtype != safetensors::dtype::bf16))
            LOWBIT_THROW(errc::invalid_argument, where + ": the model's '" + layer + ".weight' is " +
                                                     std::string(safetensors::to_string(w->dtype)) + " " +
                                                     show_shape(w->shape) + ", not a 2-D float weight");
        const std::uint64_t rows = w->shape[0], in = w->shape[1];
        if (const std::string why = unfit(rows, in); !why.empty())
            LOWBIT_THROW(errc::not_divisible, where + ": the weight " + show_shape(w->shape) + " cannot take " +
                                                  format_name + ": " + why);
        if (e.stats.hessian) {
            if (e.stats.features != in)
                LOWBIT_THROW(errc::shape_mismatch, where + ": the Hessian is " + show_shape(e.stats.hessian->shape) +
                                                       ", expected [" + std::to_string(in) + ", " + std::to_string(in) +
                                                       "]");
            e.tokens = e.stats.tokens;
            if (e.tokens && e.tokens < min_tokens)
                LOWBIT_THROW(errc::invalid_argument, where + ": " + std::to_string(e.tokens) +
                                                         " calibration tokens; at least " +
                                                         std::to_string(min_tokens) + " are needed");
            continue;
        }
        const auto& a = *e.acts;
        safetensors::float_storage_of(a, where + ": activations");
        if (a.shape.size() < 2 || a.shape.size() > 3 || a.shape.back() != in)
            LOWBIT_THROW(errc::shape_mismatch, where + ": activations " + show_shape(a.shape) + " are not [tokens, " +
                                                   std::to_string(in) + "] (the weight is " + show_shape(w->shape) +
                                                   ")");
        e.tokens = static_cast<std::size_t>(a.numel() / in);
        if (e.tokens < min_tokens)
            LOWBIT_THROW(errc::invalid_argument, where + ": " + std::to_string(e.tokens) +
                                                     " calibration tokens; at least " + std::to_string(min_tokens) +
                                                     " are needed");
        safetensors::check_finite(a, where + ": activations");
    }
    return out;
}

/// H from a calibration entry (in x in, row-major, full).
inline std::vector<float> hessian_of(const calib_entry& e, std::size_t in, unsigned threads) {
    if (e.stats.hessian) return e.stats.hessian_matrix();
    const auto& a = *e.acts;
    calibration::hessian h(in, threads);
    // A chunk of tokens at a time, widened to float.
    constexpr std::size_t chunk = 1024;
    const float_storage fs = safetensors::float_storage_of(a);
    std::vector<float> x;
    for (std::size_t t0 = 0; t0 < e.tokens; t0 += chunk) {
        const std::size_t n = std::min(chunk, e.tokens - t0);
        x.resize(n * in);
        for (std::size_t i = 0; i < n * in; ++i) x[i] = float_at(fs, a.data().data(), t0 * in + i);
        h.add(matrix_view<const float>(x.data(), n, in));
    }
    return h.matrix();
}

/// sum over rows of d_r H d_r^T for the rows `rows` of D (R x C).
inline double quadratic(const std::vector<float>& d, std::size_t C, const std::vector<std::size_t>& rows,
                        const std::vector<float>& H) {
    const std::size_t M = rows.size();
    std::vector<float> dm(M * C), p(M * C);
    for (std::size_t i = 0; i < M; ++i) std::copy_n(&d[rows[i] * C], C, &dm[i * C]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(M), static_cast<int>(C),
                static_cast<int>(C), 1.0f, dm.data(), static_cast<int>(C), H.data(), static_cast<int>(C), 0.0f,
                p.data(), static_cast<int>(C));
    double s = 0.0;
    for (std::size_t i = 0; i < M * C; ++i) s += static_cast<double>(dm[i]) * static_cast<double>(p[i]);
    return s;
}

/// Up to n rows of R, evenly spaced: those the report's errors are measured over.
inline std::vector<std::size_t> report_rows(std::size_t R, std::size_t n) {
    std::vector<std::size_t> rows;
    const std::size_t M = std::min(R, std::max<std::size_t>(n, 1));
    for (std::size_t i = 0; i < M; ++i) rows.push_back(i * R / M);
    return rows;
}

/// quadratic() of D = W - Q over `rows`, with W's values in w (R x C) and
/// Q's from value(r, c); `d` (R x C) is scratch.
template <class Value>
double residual_quadratic(const std::vector<float>& w, std::size_t C, const std::vector<std::size_t>& rows,
                          const std::vector<float>& H, std::vector<float>& d, Value&& value) {
    for (const std::size_t r : rows)
        for (std::size_t c = 0; c < C; ++c) d[r * C + c] = w[r * C + c] - value(r, c);
    return quadratic(d, C, rows, H);
}

/// GPTQ's result as a checkpoint layer: scales rounded to fp16 (the codes
/// stay: a code off by the rounding would need |scale error| * code > 1/2),
/// zeros as integers, the params transposed to [groups][out].
inline layer to_layer(const calibration::gptq_result& r) {
    layer l;
    l.rows = r.rows;
    l.cols = r.cols;
    l.groups = r.groups;
    l.bits = r.bits;
    l.codes = r.codes;
    l.g_idx = r.g_idx;
    l.scale.resize(r.groups * r.rows);
    l.zero.resize(r.groups * r.rows);
    for (std::size_t o = 0; o < r.rows; ++o)
        for (std::size_t g = 0; g < r.groups; ++g) {
            l.scale[g * r.rows + o] = fp16_to_float(float_to_fp16(r.scale[o * r.groups + g]));
            l.zero[g * r.rows + o] = static_cast<std::uint8_t>(r.zero[o * r.groups + g]);
        }
    return l;
}

/// Round-to-nearest in the same format (params fitted on the weights as
/// they are, natural groups), fp16 scales, the report's baseline: `d`
/// (R x C) gets w - RTN(w) in the rows `rows`.
inline void rtn_residual(matrix_view<const float> w, const checkpoint_format& f, const std::vector<std::size_t>& rows,
                         std::vector<float>& d) {
    calibration::gptq_options go;
    go.bits = f.bits;
    go.sym = f.sym;
    const int maxq = (1 << f.bits) - 1;
    const std::size_t C = w.cols(), gs = f.group ? std::min(f.group, C) : C;
    for (const std::size_t r : rows)
        for (std::size_t c0 = 0; c0 < C; c0 += gs) {
            const std::size_t n = std::min(gs, C - c0);
            float s = 0.0f, z = 0.0f;
            calibration::detail::gptq::fit(&w(r, c0), n, maxq, go, s, z);
            s = fp16_to_float(float_to_fp16(s));
            for (std::size_t c = c0; c < c0 + n; ++c)
                d[r * C + c] = w(r, c) - s * (calibration::detail::gptq::code(w(r, c), s, z, maxq) - z);
        }
}

}  // namespace detail

/// Quantizes the layers `calib` names in checkpoint `in` with GPTQ into a
/// GPTQ checkpoint `out` (written atomically, metadata copied), and writes
/// quantize_config.json beside `out` once `out` is complete.
inline quantize_report quantize_checkpoint(const std::filesystem::path& in, const std::filesystem::path& out,
                                           const std::filesystem::path& calib_path, const quantize_options& o) {
    const auto config_path = out.parent_path() / "quantize_config.json";
    lowbit::detail::check_output_target(out, "safetensors", {{"input", &in}, {"calibration file", &calib_path}});
    lowbit::detail::check_output_target(config_path, "quantize_config.json",
                                        {{"input", &in}, {"calibration file", &calib_path}});
    const auto model = safetensors::file::open(in);
    const auto calib = safetensors::file::open(calib_path);
    const auto entries = detail::read_calibration(
        calib, model, calib_path.string(), o.min_tokens, o.format.name(),
        [&](std::uint64_t rows, std::uint64_t cols) { return unfit_reason(rows, cols, o.format); });

    calibration::gptq_options go;
    go.bits = o.format.bits;
    go.group_size = o.format.group;
    go.sym = o.format.sym;
    go.act_order = o.format.desc_act;
    go.static_groups = o.format.static_groups;
    go.percdamp = o.format.damp_percent;
    go.block_size = o.block_size;
    go.mse = o.mse;
    go.threads = o.threads;

    quantize_report rep;
    const auto convert = [&](const safetensors::tensor_info& t, safetensors::writer& w) {
        if (!std::string_view(t.name).ends_with(".weight")) return false;
        const std::string name = t.name.substr(0, t.name.size() - 7);
        const auto it = entries.find(name);
        if (it == entries.end()) return false;
        const auto t0 = std::chrono::steady_clock::now();
        const std::size_t R = static_cast<std::size_t>(t.shape[0]), C = static_cast<std::size_t>(t.shape[1]);
        const std::vector<float> x = safetensors::finite_floats(t);
        const matrix_view<const float> wv(x.data(), R, C);
        std::vector<float> H;
        try {
            H = detail::hessian_of(it->second, C, o.threads);
        } catch (const error& e) {
            rethrow_with_context(e, "calibration of layer '" + name + "'");
        }
        const layer l = detail::to_layer(calibration::gptq(wv, H, go));

        layer_report lr;
        lr.layer = name;
        lr.rows = R;
        lr.cols = C;
        lr.tokens = it->second.tokens;
        lr.zero_zero_points = o.format.zeros == gptq_zero_format::v1 ? zero_zero_points(l) : 0;
        // Output errors over evenly spaced rows.
        const auto rows = detail::report_rows(R, o.error_rows);
        const double ref = detail::quadratic(x, C, rows, H);
        std::vector<float> d(R * C);
        detail::rtn_residual(wv, o.format, rows, d);
        const double rtn = detail::quadratic(d, C, rows, H);
        const double q = detail::residual_quadratic(x, C, rows, H, d,
                                                    [&](std::size_t r, std::size_t c) { return l.value(r, c); });
        lr.rtn_error = ref > 0.0 ? rtn / ref : 0.0;
        lr.gptq_error = ref > 0.0 ? q / ref : 0.0;

        add_layer(w, name, l, o.format);  // the writer keeps copies of the packed tensors
        lr.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        rep.layers.push_back(std::move(lr));
        return true;
    };
    // The float weights, the Hessian's share and the codes: about 12 bytes an element.
    static_cast<safetensors::rewrite_counts&>(rep) = safetensors::rewrite(in, out, convert, 12, o.progress);
    rep.config_json = o.format.config_json();
    lowbit::detail::atomic_file cfg(config_path, "quantize_config.json");
    const std::string text = rep.config_json + "\n";
    cfg.write(std::as_bytes(std::span<const char>(text.data(), text.size())));
    cfg.commit();
    return rep;
}

}  // namespace gptq
LOWBIT_NAMESPACE_END
