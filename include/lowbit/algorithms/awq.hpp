#pragma once
// AWQ (Lin et al., "AWQ: Activation-aware Weight Quantization for LLM
// Compression and Acceleration", 2023) as AutoAWQ 0.2.9 runs it, for the
// linear layers that read one input X (tokens x in_features):
//
// 1. Scale search. Per input channel, x_mean = mean |x| and (duo scaling,
//    AutoAWQ's default) w_mean = the mean over every row of every layer of
//    |w| / (its group's max |w| + 1e-6). For ratio r = 0, 1/n_grid, ...,
//    (n_grid - 1)/n_grid: s = max(x_mean^r / (w_mean^(1-r) + 1e-4), 1e-4)
//    (x_mean^r alone without duo scaling), divided by sqrt(max s * min s);
//    each layer's candidate weight is Q(W diag(s)) diag(s)^-1 and the loss
//    the mean squared difference of the layers' outputs on X. The first
//    ratio of least loss wins. The caller folds 1/s into the operation that
//    produces X (a norm's weight and bias, or the rows of a preceding linear
//    whose output is X) and multiplies the layers' columns by s
//    (smoothquant.hpp: divide_by, scale_columns), so the model is unchanged.
// 2. Clip search, per layer (AutoAWQ skips the query and key projections),
//    on the scaled weight W diag(s) and input X diag(s)^-1, every
//    max(1, tokens / 512)-th token from the first: for each row and group,
//    the symmetric range +-m, m = max |w| (1 - i / 20) for i = 0..9, whose
//    quantized weights' partial outputs over the group's channels differ
//    least from the unclipped weights' (mean square over the tokens; strict
//    improvement, from an error of 1e9). The weights are clamped to it.
// 3. Quantization: per group, AutoAWQ's zero-point rule (the range not
//    widened to hold 0): scale = max(max - min, 1e-5) / (2^b - 1),
//    zero = clamp(-round(min / scale), 0, 2^b - 1), code = clamp(round(w /
//    scale) + zero, 0, 2^b - 1); or symmetric: scale = max(max |w|, 1e-5) /
//    (2^(b-1) - 1), code = clamp(round(w / scale), -2^(b-1), 2^(b-1) - 1).
//    Rounding is half to even (torch.round). AutoAWQ's export casts the layer
//    to float16 first and runs this rule and its checkpoint packing in
//    float16 arithmetic; awq_options::fp16_export does the same, each
//    operation rounded to float16 as torch's CPU float16 kernels round it, so
//    codes, scales and zeros are the bytes AutoAWQ writes.
//
// The search runs in float32 (AutoAWQ in the model's dtype); where its
// losses of two ratios are within float rounding the two may choose
// differently. Output differences are formed once per candidate (X (W -
// W')^T: the layers' biases cancel), and with at least as many tokens as input
// channels as ||R D^T||^2 with X = QR (R from one LQ factorisation of X^T),
// so a ratio costs out x in^2 / 2 multiply-adds (R is triangular) rather
// than tokens x out x in, and the loss
// stays a sum of squares (through X^T X it would lose digits to
// cancellation).
//
// Needs BLAS (OpenBLAS): link lowbit::calibration. Kernels and formats never
// include this header.

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../core/view.hpp"
#include "../parallel.hpp"
#include "activation_stats.hpp"

extern "C" {
// LAPACK's LQ factorisation (Fortran ABI).
void sgelqf_(const int* m, const int* n, float* a, const int* lda, float* tau, float* work, const int* lwork,
             int* info);
}

LOWBIT_NAMESPACE_BEGIN
namespace calibration {

struct awq_options {
    int bits = 4;                  ///< 2..8 (AutoAWQ's GEMM checkpoint: 4)
    std::size_t group_size = 128;  ///< input channels a group; 0: one group per row
    bool zero_point = true;        ///< asymmetric with a zero (AutoAWQ's default), else symmetric
    int n_grid = 20;               ///< scale ratios 0, 1/n_grid, ..., (n_grid - 1)/n_grid
    bool duo_scaling = true;       ///< divide by w_mean^(1-r) (AutoAWQ), or x_mean^r alone (llm-awq)
    bool clip = true;              ///< the clip search (run_awq's per-layer choice: awq_layer::clip)
    int clip_grid = 20;            ///< shrinks 1 - i / clip_grid ...
    float max_shrink = 0.5f;       ///< ... for i < max_shrink * clip_grid
    std::size_t clip_tokens = 512; ///< every max(1, tokens / clip_tokens)-th token
    bool fp16_export = true;       ///< the final rule in float16 arithmetic, as AutoAWQ's export
    unsigned threads = 1;          ///< rows split across threads (0: all cores); results do not depend on them
};

/// One layer that reads X: its weight (out x in) and whether its clip is searched.
struct awq_layer {
    matrix_view<const float> weight;
    bool clip = true;
};

/// A layer quantized: column c of row r stands for
/// scale[r * groups + c / group] * (code - zero[...]) (zero 0 when symmetric;
/// codes then hold code + 2^(b-1)).
struct awq_quantized {
    std::size_t rows = 0, cols = 0, groups = 0, group_size = 0;
    int bits = 0;
    bool zero_point = true;
    std::vector<std::uint8_t> codes;  ///< rows x cols
    std::vector<float> scale;         ///< rows x groups
    std::vector<std::uint8_t> zero;   ///< rows x groups
    std::vector<float> clip;          ///< rows x groups: the clip search's max |w| (empty without it)

    float value(std::size_t r, std::size_t c) const noexcept {
        const std::size_t g = r * groups + c / group_size;
        return scale[g] * (static_cast<float>(codes[r * cols + c]) - static_cast<float>(zero[g]));
    }
};

struct awq_scale_result {
    std::vector<float> scales;  ///< per input channel: the layers' columns x s, X / s
    float ratio = 0.0f;         ///< the chosen ratio
    std::vector<double> losses; ///< per ratio: the mean squared output difference
};

struct awq_result {
    awq_scale_result search;
    std::vector<awq_quantized> layers;  ///< the awq_layer order
};

namespace detail::awq {

/// x as torch holds it: float32, or float16 (each operation's float result
/// rounded to float16, as torch's CPU float16 kernels round it).
template <bool Half>
inline float hv(float x) noexcept {
    if constexpr (Half)
        return fp16_to_float(float_to_fp16(x));
    else
        return x;
}

/// One group's scale and zero (AutoAWQ's pseudo_quantize_tensor).
template <bool Half>
inline void fit(const float* w, std::size_t n, int bits, bool zero_point, float& scale, float& zero) noexcept {
    float mx = w[0], mn = w[0], amax = std::fabs(w[0]);
    for (std::size_t i = 1; i < n; ++i) {
        mx = std::max(mx, w[i]);
        mn = std::min(mn, w[i]);
        amax = std::max(amax, std::fabs(w[i]));
    }
    if (zero_point) {
        const float maxq = static_cast<float>((1 << bits) - 1);
        scale = hv<Half>(std::max(hv<Half>(mx - mn), hv<Half>(1e-5f)) / maxq);
        zero = std::clamp(-std::nearbyint(hv<Half>(mn / scale)), 0.0f, maxq);
    } else {
        scale = hv<Half>(std::max(amax, hv<Half>(1e-5f)) / static_cast<float>((1 << (bits - 1)) - 1));
        zero = 0.0f;
    }
}

/// The group's integer code (symmetric codes signed).
template <bool Half>
inline float code(float w, float scale, float zero, int bits, bool zero_point) noexcept {
    if (zero_point)
        return std::clamp(std::nearbyint(hv<Half>(w / scale)) + zero, 0.0f, static_cast<float>((1 << bits) - 1));
    const float lim = static_cast<float>(1 << (bits - 1));
    return std::clamp(std::nearbyint(hv<Half>(w / scale)), -lim, lim - 1.0f);
}

/// Each group of each row of w (rows x cols, stride ld) replaced by its
/// float32 quantize-dequantize (the search's candidate weights).
inline void pseudo_quantize(float* w, std::size_t rows, std::size_t cols, std::size_t ld, std::size_t gs, int bits,
                            bool zero_point) noexcept {
    for (std::size_t r = 0; r < rows; ++r)
        for (std::size_t c0 = 0; c0 < cols; c0 += gs) {
            float* g = w + r * ld + c0;
            const std::size_t n = std::min(gs, cols - c0);
            float s, z;
            fit<false>(g, n, bits, zero_point, s, z);
            for (std::size_t i = 0; i < n; ++i) g[i] = (code<false>(g[i], s, z, bits, zero_point) - z) * s;
        }
}

/// torch's pow(tensor, scalar) special cases (0, 1/2, 1, 2), else powf.
inline float pow_scalar(float x, float e) noexcept {
    if (e == 0.0f) return 1.0f;
    if (e == 0.5f) return std::sqrt(x);
    if (e == 1.0f) return x;
    if (e == 2.0f) return x * x;
    return std::pow(x, e);
}

inline void check_weight(matrix_view<const float> w, std::size_t cols, std::size_t k, const std::string& who) {
    if (w.cols() != cols)
        LOWBIT_THROW(errc::shape_mismatch, who + ": layer " + std::to_string(k) + " has " + std::to_string(w.cols()) +
                                               " input features, the activations " + std::to_string(cols));
    for (std::size_t r = 0; r < w.rows(); ++r)
        for (std::size_t c = 0; c < cols; ++c)
            if (!std::isfinite(w(r, c)))
                LOWBIT_THROW(errc::non_finite, who + ": layer " + std::to_string(k) + " weight at row " +
                                                   std::to_string(r) + ", column " + std::to_string(c) +
                                                   " is not finite");
}

inline void check_options(const awq_options& o, std::size_t cols, const std::string& who) {
    if (o.bits < 2 || o.bits > 8)
        LOWBIT_THROW(errc::invalid_argument, who + ": bits " + std::to_string(o.bits) + " (2..8)");
    if (o.group_size && cols % o.group_size)
        LOWBIT_THROW(errc::not_divisible, who + ": " + std::to_string(cols) +
                                               " input features are not a whole number of groups of " +
                                               std::to_string(o.group_size));
    if (o.n_grid < 1) LOWBIT_THROW(errc::invalid_argument, who + ": n_grid must be at least 1");
    if (o.clip_grid < 1 || !(o.max_shrink >= 0.0f && o.max_shrink < 1.0f) || o.clip_tokens == 0)
        LOWBIT_THROW(errc::invalid_argument, who + ": clip_grid >= 1, max_shrink in [0, 1), clip_tokens >= 1");
}

constexpr std::size_t chunk_rows = 64;  ///< rows a product; fixed, so sums do not depend on threads

}  // namespace detail::awq

/// Step 1: the scales s for the layers that read x (tokens x in_features).
inline awq_scale_result awq_search_scales(std::span<const matrix_view<const float>> layers, matrix_view<const float> x,
                                          const awq_options& o = {}) {
    const std::string who = "awq_search_scales";
    const std::size_t C = x.cols(), T = x.rows();
    detail::awq::check_options(o, C, who);
    if (layers.empty()) LOWBIT_THROW(errc::invalid_argument, who + ": no layers");
    if (T == 0) LOWBIT_THROW(errc::invalid_argument, who + ": no activations");
    detail::check_activations(x, C, 0, who.c_str());
    std::size_t R = 0;
    for (std::size_t k = 0; k < layers.size(); ++k) {
        detail::awq::check_weight(layers[k], C, k, who);
        R += layers[k].rows();
    }
    const std::size_t gs = o.group_size ? o.group_size : C;

    // x_mean and w_mean, summed in double.
    std::vector<double> xs(C, 0.0), ws(C, 0.0);
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t c = 0; c < C; ++c) xs[c] += std::fabs(x(t, c));
    for (const auto& w : layers)
        for (std::size_t r = 0; r < w.rows(); ++r)
            for (std::size_t c0 = 0; c0 < C; c0 += gs) {
                float m = 0.0f;
                for (std::size_t c = c0; c < c0 + gs; ++c) m = std::max(m, std::fabs(w(r, c)));
                const float d = m + 1e-6f;
                for (std::size_t c = c0; c < c0 + gs; ++c) ws[c] += std::fabs(w(r, c)) / d;
            }
    std::vector<float> x_mean(C), w_mean(C);
    for (std::size_t c = 0; c < C; ++c) {
        x_mean[c] = static_cast<float>(xs[c] / static_cast<double>(T));
        w_mean[c] = static_cast<float>(ws[c] / static_cast<double>(R));
    }

    // The loss of a candidate: squared output differences over the tokens,
    // through R (X = QR, upper C x C) where that is cheaper: a ratio costs
    // C^2 R / 2 multiply-adds through R, T C R directly.
    const bool through_r = T >= C;
    std::vector<float> Rt;
    if (through_r) {
        // X row-major is X^T column-major (C x T): its LQ factor L (C x C,
        // lower) is R^T, and read row-major the first C rows hold R.
        std::vector<float> a(T * C), tau(C);
        for (std::size_t t = 0; t < T; ++t) std::copy_n(&x(t, 0), C, &a[t * C]);
        const int m = static_cast<int>(C), n = static_cast<int>(T);
        int info = 0, lwork = -1;
        float query = 0.0f;
        // One BLAS thread: LAPACK's factorisation on more gives other bits.
        const detail::blas_threads one_lq(1);
        sgelqf_(&m, &n, a.data(), &m, tau.data(), &query, &lwork, &info);
        lwork = std::max(1, static_cast<int>(query));
        std::vector<float> work(static_cast<std::size_t>(lwork));
        sgelqf_(&m, &n, a.data(), &m, tau.data(), work.data(), &lwork, &info);
        if (info != 0) LOWBIT_THROW(errc::invalid_argument, who + ": LQ factorisation failed (info " + std::to_string(info) + ")");
        Rt.assign(C * C, 0.0f);  // R, row-major, below the diagonal zero
        for (std::size_t i = 0; i < C; ++i)
            for (std::size_t j = i; j < C; ++j) Rt[i * C + j] = a[i * C + j];
    }
    const detail::blas_threads one(1);
    std::vector<float> s(C), best;
    awq_scale_result res;
    double best_loss = std::numeric_limits<double>::infinity();
    // Row chunks over all layers (layer k, rows [a, b)).
    struct chunk {
        std::size_t layer, a, b;
    };
    std::vector<chunk> chunks;
    for (std::size_t k = 0; k < layers.size(); ++k)
        for (std::size_t a = 0; a < layers[k].rows(); a += detail::awq::chunk_rows)
            chunks.push_back({k, a, std::min(layers[k].rows(), a + detail::awq::chunk_rows)});
    std::vector<double> part(chunks.size());
    for (int i = 0; i < o.n_grid; ++i) {
        const double ratio = static_cast<double>(i) / o.n_grid;
        const float rf = static_cast<float>(ratio), rw = static_cast<float>(1.0 - ratio);
        float mx = -INFINITY, mn = INFINITY;
        for (std::size_t c = 0; c < C; ++c) {
            float v = detail::awq::pow_scalar(x_mean[c], rf);
            if (o.duo_scaling) v = v / (detail::awq::pow_scalar(w_mean[c], rw) + 1e-4f);
            s[c] = std::max(v, 1e-4f);
            mx = std::max(mx, s[c]);
            mn = std::min(mn, s[c]);
        }
        const float norm = std::sqrt(mx * mn);
        for (std::size_t c = 0; c < C; ++c) {
            s[c] = s[c] / norm;
            if (!std::isfinite(s[c])) s[c] = 1.0f;
        }
        parallel_for(chunks.size(), o.threads, 1, [&](std::size_t c0, std::size_t c1) {
            std::vector<float> d, e;
            for (std::size_t ci = c0; ci < c1; ++ci) {
                const auto& w = layers[chunks[ci].layer];
                const std::size_t a = chunks[ci].a, M = chunks[ci].b - a;
                // D = W - Q(W diag(s)) diag(s)^-1
                d.resize(M * C);
                for (std::size_t r = 0; r < M; ++r)
                    for (std::size_t c = 0; c < C; ++c) d[r * C + c] = w(a + r, c) * s[c];
                detail::awq::pseudo_quantize(d.data(), M, C, C, gs, o.bits, o.zero_point);
                for (std::size_t r = 0; r < M; ++r)
                    for (std::size_t c = 0; c < C; ++c) d[r * C + c] = w(a + r, c) - d[r * C + c] / s[c];
                double sum = 0.0;
                const int Mi = static_cast<int>(M), Ci = static_cast<int>(C), Ti = static_cast<int>(T);
                if (through_r) {
                    // ||X D^T||^2 = ||D R^T||^2, R triangular: half a product's flops.
                    cblas_strmm(CblasRowMajor, CblasRight, CblasUpper, CblasTrans, CblasNonUnit, Mi, Ci, 1.0f,
                                Rt.data(), Ci, d.data(), Ci);
                    for (std::size_t j = 0; j < M * C; ++j) sum += static_cast<double>(d[j]) * d[j];
                } else {
                    e.resize(T * M);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, Ti, Mi, Ci, 1.0f, x.data(),
                                static_cast<int>(x.stride()), d.data(), Ci, 0.0f, e.data(), Mi);
                    for (std::size_t j = 0; j < T * M; ++j) sum += static_cast<double>(e[j]) * e[j];
                }
                part[ci] = sum;
            }
        });
        double loss = 0.0;
        for (double p : part) loss += p;
        loss /= static_cast<double>(T) * static_cast<double>(R);
        res.losses.push_back(loss);
        if (loss < best_loss) {
            best_loss = loss;
            res.ratio = rf;
            best = s;
        }
    }
    if (best.empty())
        LOWBIT_THROW(errc::non_finite, who + ": no ratio gave a finite loss (activations or weights too large)");
    res.scales = std::move(best);
    return res;
}

/// Step 2: per row and group, the clip max |w| of one layer's scaled weight
/// w (out x in) on its scaled input x (tokens x in), rows x groups.
inline std::vector<float> awq_search_clip(matrix_view<const float> w, matrix_view<const float> x,
                                          const awq_options& o = {}) {
    const std::string who = "awq_search_clip";
    const std::size_t C = w.cols(), R = w.rows();
    detail::awq::check_options(o, C, who);
    detail::check_activations(x, C, 0, who.c_str());
    detail::awq::check_weight(w, C, 0, who);
    if (x.rows() == 0) LOWBIT_THROW(errc::invalid_argument, who + ": no activations");
    const std::size_t gs = o.group_size ? o.group_size : C, G = C / gs;
    // The sampled tokens, contiguous.
    const std::size_t step = std::max<std::size_t>(1, x.rows() / o.clip_tokens);
    const std::size_t T = (x.rows() + step - 1) / step;
    std::vector<float> xt(T * C);
    for (std::size_t t = 0; t < T; ++t) std::copy_n(&x(t * step, 0), C, &xt[t * C]);
    const int shrinks = static_cast<int>(o.max_shrink * static_cast<float>(o.clip_grid));

    std::vector<float> best(R * G);
    const detail::blas_threads one(1);
    const std::size_t chunks = (R + detail::awq::chunk_rows - 1) / detail::awq::chunk_rows;
    parallel_for(chunks, o.threads, 1, [&](std::size_t k0, std::size_t k1) {
        std::vector<float> d, e, org(detail::awq::chunk_rows), err(detail::awq::chunk_rows);
        for (std::size_t k = k0; k < k1; ++k) {
            const std::size_t a = k * detail::awq::chunk_rows, M = std::min(R, a + detail::awq::chunk_rows) - a;
            d.resize(M * gs);
            e.resize(T * M);
            for (std::size_t g = 0; g < G; ++g) {
                const std::size_t c0 = g * gs;
                for (std::size_t r = 0; r < M; ++r) {
                    float m = 0.0f;
                    for (std::size_t c = 0; c < gs; ++c) m = std::max(m, std::fabs(w(a + r, c0 + c)));
                    org[r] = m;
                    err[r] = 1e9f;
                    best[(a + r) * G + g] = m;
                }
                for (int i = 0; i < shrinks; ++i) {
                    const float f = static_cast<float>(1.0 - static_cast<double>(i) / o.clip_grid);
                    for (std::size_t r = 0; r < M; ++r) {
                        const float m = org[r] * f;
                        for (std::size_t c = 0; c < gs; ++c) d[r * gs + c] = std::clamp(w(a + r, c0 + c), -m, m);
                    }
                    detail::awq::pseudo_quantize(d.data(), M, gs, gs, gs, o.bits, o.zero_point);
                    for (std::size_t r = 0; r < M; ++r)
                        for (std::size_t c = 0; c < gs; ++c) d[r * gs + c] -= w(a + r, c0 + c);
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(T), static_cast<int>(M),
                                static_cast<int>(gs), 1.0f, &xt[c0], static_cast<int>(C), d.data(),
                                static_cast<int>(gs), 0.0f, e.data(), static_cast<int>(M));
                    for (std::size_t r = 0; r < M; ++r) {
                        double sum = 0.0;
                        for (std::size_t t = 0; t < T; ++t) sum += static_cast<double>(e[t * M + r]) * e[t * M + r];
                        const float v = static_cast<float>(sum / static_cast<double>(T));
                        if (v < err[r]) {
                            err[r] = v;
                            best[(a + r) * G + g] = org[r] * f;
                        }
                    }
                }
            }
        }
    });
    return best;
}

/// Each weight of w (out x in) clamped to +-clip of its row and group
/// (clip: rows x groups, as awq_search_clip gives it), as AutoAWQ's apply_clip.
inline void awq_apply_clip(matrix_view<float> w, std::span<const float> clip, std::size_t group_size) {
    const std::size_t C = w.cols(), gs = group_size ? group_size : C, G = C / gs;
    if (clip.size() != w.rows() * G)
        LOWBIT_THROW(errc::shape_mismatch, "awq_apply_clip: " + std::to_string(clip.size()) + " clip values for " +
                                               std::to_string(w.rows()) + " rows of " + std::to_string(G) + " groups");
    for (std::size_t r = 0; r < w.rows(); ++r)
        for (std::size_t c = 0; c < C; ++c) w(r, c) = std::clamp(w(r, c), -clip[r * G + c / gs], clip[r * G + c / gs]);
}

/// Step 3: w (out x in, already scaled and clipped) quantized with AWQ's
/// rule; `clip` (rows x groups, or empty) is kept in the result. With
/// o.fp16_export, the weights are rounded to float16 first and the rule,
/// and the checkpoint's recovery of each code from the float16 weight
/// (round((w + zero * scale) / scale), as AutoAWQ's WQLinear_GEMM.from_linear
/// computes it), run in float16 arithmetic.
inline awq_quantized awq_quantize(matrix_view<const float> w, const awq_options& o = {},
                                  std::vector<float> clip = {}) {
    const std::string who = "awq_quantize";
    const std::size_t R = w.rows(), C = w.cols();
    detail::awq::check_options(o, C, who);
    detail::awq::check_weight(w, C, 0, who);
    const std::size_t gs = o.group_size ? o.group_size : C;
    awq_quantized q;
    q.rows = R;
    q.cols = C;
    q.group_size = gs;
    q.groups = C ? C / gs : 0;
    q.bits = o.bits;
    q.zero_point = o.zero_point;
    q.codes.assign(R * C, 0);
    q.scale.assign(R * q.groups, 0.0f);
    q.zero.assign(R * q.groups, 0);
    q.clip = std::move(clip);
    const int off = o.zero_point ? 0 : 1 << (o.bits - 1);
    const int top = (1 << o.bits) - 1;
    parallel_for(R, o.threads, 16, [&](std::size_t r0, std::size_t r1) {
        std::vector<float> g(gs);
        for (std::size_t r = r0; r < r1; ++r)
            for (std::size_t k = 0; k < q.groups; ++k) {
                for (std::size_t c = 0; c < gs; ++c) g[c] = w(r, k * gs + c);
                float s, z;
                std::uint8_t* codes = &q.codes[r * C + k * gs];
                if (o.fp16_export) {
                    for (std::size_t c = 0; c < gs; ++c) {
                        g[c] = detail::awq::hv<true>(g[c]);
                        if (!std::isfinite(g[c]))
                            LOWBIT_THROW(errc::non_finite, who + ": weight at row " + std::to_string(r) +
                                                                 ", column " + std::to_string(k * gs + c) +
                                                                 " overflows float16 (AutoAWQ's export dtype)");
                    }
                    detail::awq::fit<true>(g.data(), gs, o.bits, o.zero_point, s, z);
                    const float sz = detail::awq::hv<true>(z * s);
                    for (std::size_t c = 0; c < gs; ++c) {
                        const float v = detail::awq::code<true>(g[c], s, z, o.bits, o.zero_point);
                        const float deq = detail::awq::hv<true>(detail::awq::hv<true>(v - z) * s);
                        // from_linear's recovery (not clamped by AutoAWQ: clamped here so
                        // a code never spills into its neighbours' bits).
                        const float back = o.zero_point
                                               ? std::nearbyint(detail::awq::hv<true>(detail::awq::hv<true>(deq + sz) / s))
                                               : v;
                        codes[c] = static_cast<std::uint8_t>(std::clamp(static_cast<int>(back) + off, 0, top));
                    }
                } else {
                    detail::awq::fit<false>(g.data(), gs, o.bits, o.zero_point, s, z);
                    for (std::size_t c = 0; c < gs; ++c)
                        codes[c] = static_cast<std::uint8_t>(
                            static_cast<int>(detail::awq::code<false>(g[c], s, z, o.bits, o.zero_point)) + off);
                }
                q.scale[r * q.groups + k] = s;
                q.zero[r * q.groups + k] = static_cast<std::uint8_t>(static_cast<int>(z) + off);
            }
    });
    return q;
}

/// The three steps for the layers that read x: the scales, then each
/// layer's W diag(s) clipped (where its clip is searched) on X diag(s)^-1
/// and quantized.
inline awq_result awq(std::span<const awq_layer> layers, matrix_view<const float> x, const awq_options& o = {}) {
    std::vector<matrix_view<const float>> ws;
    for (const auto& l : layers) ws.push_back(l.weight);
    awq_result res;
    res.search = awq_search_scales(ws, x, o);
    const std::vector<float>& s = res.search.scales;
    const std::size_t C = x.cols();
    std::vector<float> xs;
    bool any_clip = false;
    for (const auto& l : layers) any_clip = any_clip || (o.clip && l.clip);
    if (any_clip) {
        xs.resize(x.rows() * C);
        for (std::size_t t = 0; t < x.rows(); ++t)
            for (std::size_t c = 0; c < C; ++c) xs[t * C + c] = x(t, c) / s[c];
    }
    for (const auto& l : layers) {
        const std::size_t R = l.weight.rows();
        std::vector<float> w(R * C);
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t c = 0; c < C; ++c) w[r * C + c] = l.weight(r, c) * s[c];
        std::vector<float> clip;
        if (o.clip && l.clip) {
            clip = awq_search_clip(matrix_view<const float>(w.data(), R, C),
                                   matrix_view<const float>(xs.data(), x.rows(), C), o);
            awq_apply_clip(matrix_view<float>(w.data(), R, C), clip, o.group_size);
        }
        res.layers.push_back(awq_quantize(matrix_view<const float>(w.data(), R, C), o, std::move(clip)));
    }
    return res;
}

}  // namespace calibration
LOWBIT_NAMESPACE_END
