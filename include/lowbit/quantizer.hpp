#pragma once
// quantizer<Scheme, DoubleQuant>: a scheme times a granularity, optionally
// with its scales quantized again, turning a float matrix into an owning
// quantized matrix (packed codes + params) and back.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "core/finite.hpp"
#include "core/view.hpp"
#include "detail/large_buffer.hpp"
#include "double_quant.hpp"
#include "granularity.hpp"
#include "kernels/dequantize.hpp"
#include "kernels/encode.hpp"
#include "kernels/gemv.hpp"
#include "pack/bits.hpp"
#include "pack/planar.hpp"
#include "parallel.hpp"
#include "scheme/affine.hpp"
#include "scheme/concepts.hpp"

LOWBIT_NAMESPACE_BEGIN

/// What every quantized matrix offers, whatever its scheme: the run-time tier
/// (registry, tools, file formats) works through this.
class quantized_base {
public:
    virtual ~quantized_base() = default;
    virtual std::size_t rows() const noexcept = 0;
    virtual std::size_t cols() const noexcept = 0;
    /// Every stored bit (codes, scales, zero-points, second-level state) per weight.
    virtual double bits_per_weight() const noexcept = 0;
    virtual std::size_t storage_bytes() const noexcept = 0;
    /// Dequantize to fp32/fp16/bf16 (fp16/bf16 as uint16_t bit patterns), rows [range).
    virtual void dequantize_to(void* out, std::size_t out_stride, kernels::out_type type,
                               row_range range = all_rows) const = 0;
    /// Dequantize rows [range) into the same rows of `out` (rows x cols).
    void dequantize(matrix_view<float> out, row_range range = all_rows) const {
        check_out(out);
        dequantize_to(out.data(), out.stride(), kernels::out_type::f32, range);
    }
    /// y[m][n] = sum_k x[m][k] * W[n][k] (+ bias[n]) for the rows n of W in
    /// `range`, W's values as dequantize gives them in fp32, on the active
    /// instruction set (kernels::gemv, kernels::gemv_ggml): x is M x cols(),
    /// y M x rows(), bias empty or rows() values.
    virtual void gemv(matrix_view<const float> x, matrix_view<float> y, row_range range,
                      std::span<const float> bias) const = 0;
    void gemv(matrix_view<const float> x, matrix_view<float> y, row_range range = all_rows) const {
        gemv(x, y, range, {});
    }
    /// The weights as a planar_view where they are in lowbit's planar
    /// layout (quantized<S>), else nothing (ggml blocks, say).
    virtual std::optional<planar_view> planar() const { return std::nullopt; }

protected:
    /// dequantize's check of an output view (shape r x c of `out`).
    template <class T>
    void check_out(const matrix_view<T>& out) const {
        detail::check_view(out, "dequantize: output");
        if (out.rows() != rows() || out.cols() != cols())
            LOWBIT_THROW(errc::shape_mismatch, "dequantize: output is " + std::to_string(out.rows()) + " x " +
                                                   std::to_string(out.cols()) + ", the quantized matrix is " +
                                                   std::to_string(rows()) + " x " + std::to_string(cols()));
    }
    /// dequantize_to's checks of an output of `esize`-byte elements; the rows
    /// of `range` to write, [first, second) (empty when there is nothing to do).
    std::pair<std::size_t, std::size_t> out_rows(const void* out, std::size_t out_stride, kernels::out_type type,
                                                 row_range range) const {
        const auto [r0, r1] = detail::clamp_rows(range, rows(), "dequantize");
        if (rows() == 0 || cols() == 0) return {r0, r0};
        if (type != kernels::out_type::f32 && type != kernels::out_type::f16 && type != kernels::out_type::bf16)
            LOWBIT_THROW(errc::invalid_argument,
                         "dequantize: unknown output type " + std::to_string(static_cast<int>(type)));
        if (out == nullptr) LOWBIT_THROW(errc::invalid_argument, "dequantize: null output");
        if (out_stride < cols())
            LOWBIT_THROW(errc::shape_mismatch, "dequantize: output row stride " + std::to_string(out_stride) +
                                                   " is smaller than the " + std::to_string(cols()) + " columns");
        if (r0 >= r1) return {r0, r0};
        const bool fits = type == kernels::out_type::f32
                              ? matrix_view<const float>::fits_address_space(r1, cols(), out_stride)
                              : matrix_view<const std::uint16_t>::fits_address_space(r1, cols(), out_stride);
        if (!fits)
            LOWBIT_THROW(errc::invalid_argument, "dequantize: " + std::to_string(r1) + " output rows of stride " +
                                                     std::to_string(out_stride) + " overflow the address space");
        return {r0, r1};
    }
};

/// lowbit's own planar layout: each row's codes as an LSB-first bit stream
/// padded to a byte, params as separate float arrays (one entry per group),
/// and the second level when the scales were quantized again.
template <scheme S>
class quantized final : public quantized_base {
public:
    using scheme_type = S;
    using params_type = typename S::params;

    S scheme{};
    granularity gran{};
    group_layout layout{};
    std::size_t n_rows = 0, n_cols = 0;
    std::size_t code_stride = 0;            ///< bytes per row of codes
    std::vector<std::uint8_t> codes;        ///< rows * code_stride
    std::vector<float> scale, zero, bias;   ///< effective params; zero/bias empty when all 0
    std::optional<second_level> scales_q;   ///< present under double quantization

    std::size_t rows() const noexcept override { return n_rows; }
    std::size_t cols() const noexcept override { return n_cols; }

    params_type params(std::size_t g) const noexcept { return detail::join_params<params_type>(scale, zero, bias, g); }
    params_type params_at(std::size_t r, std::size_t c) const noexcept { return params(layout.index(r, c)); }
    std::uint8_t code_at(std::size_t r, std::size_t c) const noexcept {
        const std::uint8_t* row = codes.data() + r * code_stride;
        const std::size_t bit = c * S::bits;
        unsigned v = row[bit / 8];
        if (bit % 8 + S::bits > 8) v |= static_cast<unsigned>(row[bit / 8 + 1]) << 8;
        return static_cast<std::uint8_t>((v >> (bit % 8)) & ((1u << S::bits) - 1u));
    }

    std::size_t stored_bits() const noexcept {
        std::size_t b = codes.size() * 8;
        const std::size_t per_group = stored_param_bits(scheme);
        if (scales_q)  // the scale itself is now a second-level code
            b += scales_q->stored_bits() + layout.count * (per_group - std::min(per_group, scale_bits()));
        else
            b += layout.count * per_group;
        return b;
    }
    std::size_t storage_bytes() const noexcept override { return (stored_bits() + 7) / 8; }
    double bits_per_weight() const noexcept override {
        const double n = static_cast<double>(n_rows) * static_cast<double>(n_cols);
        return n > 0 ? static_cast<double>(stored_bits()) / n : 0.0;
    }

    void dequantize_to(void* out, std::size_t out_stride, kernels::out_type type,
                       row_range range = all_rows) const override {
        const auto [r0, r1] = out_rows(out, out_stride, type, range);
        if (r0 >= r1) return;
        if constexpr (requires { scheme.decodes_in(param_dtype::f16); }) {
            // MLX: fp16/bf16 output in the params' dtype is mx.dequantize's
            // two-rounding arithmetic (scalar; see affine<>::decode_in).
            const param_dtype t = type == kernels::out_type::f16    ? param_dtype::f16
                                  : type == kernels::out_type::bf16 ? param_dtype::bf16
                                                                    : param_dtype::f32;
            if (scheme.decodes_in(t)) {
                auto* o = static_cast<std::uint16_t*>(out);
                for (std::size_t r = r0; r < r1; ++r)
                    for (std::size_t c = 0; c < n_cols; ++c) {
                        const float v = scheme.decode_in(code_at(r, c), params_at(r, c), t);
                        o[r * out_stride + c] = t == param_dtype::f16 ? float_to_fp16(v) : float_to_bf16(v);
                    }
                return;
            }
        }
        const std::size_t esize = type == kernels::out_type::f32 ? 4 : 2;
        const planar_view v = view().rows(r0, r1);
        auto put_out = [&](auto j) {
            j.out = static_cast<unsigned char*>(out) + r0 * out_stride * esize;
            j.out_stride = out_stride;
            j.type = type;
            return j;
        };
        if constexpr (S::family == kernel_family::affine) kernels::dequantize_affine(put_out(kernels::affine_job_of(v)));
        else kernels::dequantize_table(put_out(kernels::table_job_of(v)));
    }

    using quantized_base::gemv;
    void gemv(matrix_view<const float> x, matrix_view<float> y, row_range range,
              std::span<const float> bias) const override {
        kernels::gemv(view(), x, y, range, bias);
    }

    std::optional<planar_view> planar() const override { return view(); }

    /// The weights as a non-owning planar_view (kernels::gemv takes one),
    /// valid while this object lives unchanged and unmoved.
    planar_view view() const {
        const planar_params p{scale, zero, bias, layout.group, layout.param_stride};
        if constexpr (S::family == kernel_family::affine) {
            return planar_view::affine(S::bits, codes, n_rows, n_cols, code_stride, p);
        } else {
            const minifloat_rule* mf = nullptr;
            minifloat_rule m{};
            if constexpr (requires { { scheme.encode_rule() } -> std::convertible_to<minifloat_rule>; }) {
                m = scheme.encode_rule();
                mf = &m;
            }
            return planar_view::table(S::bits, codes, n_rows, n_cols, code_stride, scheme.table(), p, mf);
        }
    }

    /// Scalar dequantize through the scheme's own decode: the oracle the
    /// kernels are tested against.
    void dequantize_ref(matrix_view<float> out) const {
        check_out(out);
        for (std::size_t r = 0; r < n_rows; ++r)
            for (std::size_t c = 0; c < n_cols; ++c) out(r, c) = scheme.decode(code_at(r, c), params_at(r, c));
    }

private:
    /// Bits of the stored params that are the scale (what double quantization replaces).
    std::size_t scale_bits() const noexcept {
        if constexpr (requires { scheme.scale_bits(); })
            return static_cast<std::size_t>(scheme.scale_bits());
        else
            return stored_param_bits(scheme);
    }
};

namespace detail {

/// Every value of `w` finite; the first that is not is an errc::non_finite
/// error naming `who`, its row and column.
inline void check_finite(matrix_view<const float> w, std::string_view who = "weights") {
    for (std::size_t r = 0; r < w.rows(); ++r) {
        const auto row = w.row(r);
        const std::size_t c = first_non_finite(float_storage::f32, row.data(), row.size());
        if (c < row.size())
            LOWBIT_THROW(errc::non_finite, std::string(who) + " at row " + std::to_string(r) + ", column " +
                                               std::to_string(c) + " is " + value_string(row[c]));
    }
}

inline void check_importance(std::span<const float> imp, std::size_t rows, std::size_t cols) {
    if (!imp.empty() && imp.size() != cols && imp.size() != rows * cols)
        LOWBIT_THROW(errc::shape_mismatch, "importance has " + std::to_string(imp.size()) +
                                               " values; expected none, one per input column (" + std::to_string(cols) +
                                               ") or one per weight (" + std::to_string(rows * cols) + ")");
    for (std::size_t i = 0; i < imp.size(); ++i)
        if (!(imp[i] >= 0.0f) || !std::isfinite(imp[i]))
            LOWBIT_THROW(errc::invalid_argument, "importance[" + std::to_string(i) + "] is " +
                                                     value_string(imp[i]) + "; it must be finite and non-negative");
}

/// The checks of every quantize entry point (the generic quantizer and
/// ggml's block types alike), in this order: the view (pointer, stride,
/// extent), finite weights, then the importance vector.
inline void check_weights(matrix_view<const float> w, std::span<const float> importance, std::string_view who) {
    check_view(w, std::string(who) + ": weights");
    check_finite(w, std::string(who) + ": weight");
    check_importance(importance, w.rows(), w.cols());
}

/// "largest magnitude V at column c" of values [c0, c1) of row r.
inline std::string largest_in(matrix_view<const float> w, std::size_t r, std::size_t c0, std::size_t c1) {
    std::size_t at = c0;
    for (std::size_t c = c0; c < c1; ++c)
        if (std::fabs(w(r, c)) > std::fabs(w(r, at))) at = c;
    return "largest magnitude " + value_string(w(r, at)) + " at column " + std::to_string(at);
}

/// Where param group g of layout L lies in a rows x cols matrix, with its
/// largest value: what a message about a group's params names.
inline std::string group_position(matrix_view<const float> w, const group_layout& L, std::size_t g) {
    if (L.param_stride == 0) {  // groups across rows: the whole tensor, or one column
        std::size_t br = 0, bc = L.group == 1 ? g : 0;
        const std::size_t c0 = L.group == 1 ? g : 0, c1 = L.group == 1 ? g + 1 : w.cols();
        for (std::size_t r = 0; r < w.rows(); ++r)
            for (std::size_t c = c0; c < c1; ++c)
                if (std::fabs(w(r, c)) > std::fabs(w(br, bc))) br = r, bc = c;
        return std::string(L.group == 1 ? "column " + std::to_string(g) + " (one group)" : "the tensor (one group)") +
               ", largest magnitude " + value_string(w(br, bc)) + " at row " + std::to_string(br) + ", column " +
               std::to_string(bc);
    }
    const std::size_t r = g / L.param_stride, c0 = (g % L.param_stride) * L.group;
    const std::size_t c1 = std::min(w.cols(), c0 + L.group);
    return "row " + std::to_string(r) + ", columns " + std::to_string(c0) + ".." + std::to_string(c1 - 1) + " (" +
           largest_in(w, r, c0, c1) + ")";
}

/// Where param groups [lo, hi) of layout L lie (a second-level block of
/// scales), with their largest value.
inline std::string groups_position(matrix_view<const float> w, const group_layout& L, std::size_t lo,
                                   std::size_t hi) {
    if (hi - lo <= 1 || L.param_stride == 0) return group_position(w, L, lo);
    const std::size_t r0 = lo / L.param_stride, r1 = (hi - 1) / L.param_stride;
    const std::size_t c0 = (lo % L.param_stride) * L.group;
    const std::size_t c1 = std::min(w.cols(), ((hi - 1) % L.param_stride + 1) * L.group);
    std::size_t br = r0, bc = c0;
    for (std::size_t r = r0; r <= r1; ++r)
        for (std::size_t c = r == r0 ? c0 : 0; c < (r == r1 ? c1 : w.cols()); ++c)
            if (std::fabs(w(r, c)) > std::fabs(w(br, bc))) br = r, bc = c;
    const std::string span = r0 == r1 ? "row " + std::to_string(r0) + ", columns " + std::to_string(c0) + ".." +
                                            std::to_string(c1 - 1)
                                      : "row " + std::to_string(r0) + ", column " + std::to_string(c0) +
                                            " to row " + std::to_string(r1) + ", column " + std::to_string(c1 - 1);
    return span + " (largest magnitude " + value_string(w(br, bc)) + " at row " + std::to_string(br) +
           ", column " + std::to_string(bc) + ")";
}

}  // namespace detail

template <scheme S, class DQ = no_double_quant>
class quantizer {
public:
    S scheme{};
    granularity gran = per_group(128);
    DQ dq{};
    /// Threads for quantize (0 = all cores); results do not depend on it.
    unsigned threads = 1;

    quantizer() = default;
    quantizer(S s, granularity g, DQ d = {}) : scheme(std::move(s)), gran(g), dq(std::move(d)) {}

    /// Quantize `w`. `importance` is empty, one weight per input column
    /// (imatrix / AWQ statistics) or one per element; searches minimise the
    /// importance-weighted squared error.
    quantized<S> quantize(matrix_view<const float> w, std::span<const float> importance = {}) const {
        const std::string who = std::string("quantize (") + scheme.name() + ")";
        const std::size_t rows = w.rows(), cols = w.cols();
        // Row-wise groups fitted from their extremes check finiteness as the
        // extremes kernel reads them (fit_rows_from_extremes); where the
        // values encode with the scales as fitted (no double quantization,
        // or one that quantizes the scales afterwards, as bitsandbytes does)
        // they are also encoded in the same pass (quantize_rows_fused).
        // Every other path checks first.
        const bool from_extremes = fits_from_stats && importance.empty() &&
                                   gran.kind != granularity_kind::per_tensor &&
                                   gran.kind != granularity_kind::per_input_channel;
        bool encode_as_fitted = true;
        if constexpr (is_double_quant_v<DQ>) encode_as_fitted = !dq.encode_with_quantized;
        const bool fused = from_extremes && encode_as_fitted && has_kernel_rule();
        if (from_extremes)
            detail::check_view(w, who + ": weights");
        else
            detail::check_weights(w, importance, who);
        quantized<S> q;
        q.scheme = scheme;
        q.gran = gran;
        q.n_rows = rows;
        q.n_cols = cols;
        q.layout = layout_for(gran, rows, cols);
        q.code_stride = packed_bytes(cols, S::bits);
        if (rows == 0 || cols == 0) return q;

        const group_layout& L = q.layout;
        // params: what is stored; encode_params (split schemes only): what
        // the values are encoded with.
        auto params = detail::large_vector<typename S::params>(L.count);
        auto encode_params = detail::large_vector<typename S::params>(split ? L.count : 0);
        auto effective = detail::large_vector<float>(L.count);
        std::optional<float> amax;  // largest |w|, where the fit found it
        bool encode_effective = false;  // encode_all reads the effective scales as the params to encode with
        // nvfp4's shape (one second-level scale from the weights' largest
        // magnitude, values encoded with the quantized scales): a pass for
        // the largest magnitude, then one that fits, quantizes the scales and
        // encodes a block of rows at a time.
        bool second_level_done = false;
        if constexpr (fits_fixed_second_level)
            if (from_extremes && dq.amax_divisor != 0.0f && dq.block == 0 && !dq.subtract_mean &&
                dq.encode_with_quantized && gran.kind != granularity_kind::super_block && has_kernel_rule())
                second_level_done = quantize_rows_fixed_second_level(w, L, params, effective, q, who);
        if (second_level_done) {
            // codes, second level and effective scales written and checked
        } else if (fused) {
            // Under double quantization the codes are checked against the
            // quantized scales, after the second level.
            if constexpr (fits_from_stats) quantize_rows_fused(w, L, params, q, who, !is_double_quant_v<DQ>);
            // (The second level writes every effective scale itself.)
            if constexpr (!is_double_quant_v<DQ>)
                for (std::size_t g = 0; g < L.count; ++g) effective[g] = params[g].scale;
        } else {
            amax = fit_all(w, importance, L, params, encode_params, who);
        }

        // Second level: quantize the scales, then decide which scales encode.
        if constexpr (is_double_quant_v<DQ>) {
            if (!second_level_done) {
                // The scales: read in place where the params are a scale alone.
                using P = typename S::params;
                std::vector<float> s_copy;
                std::span<const float> s;
                if constexpr (sizeof(P) == sizeof(float) && std::is_standard_layout_v<P>) {
                    s = std::span<const float>(&params.data()->scale, L.count);
                } else {
                    s_copy = detail::large_vector<float>(L.count);
                    for (std::size_t g = 0; g < L.count; ++g) s_copy[g] = params[g].scale;
                    s = s_copy;
                }
                const std::size_t block = gran.kind == granularity_kind::super_block ? L.super : dq.block;
                std::optional<typename DQ::scheme_type::params> fixed;
                if (dq.amax_divisor != 0.0f) {
                    if (block != 0)
                        LOWBIT_THROW(errc::invalid_argument,
                                     who + ": double_quant::amax_divisor needs one second-level block (block 0)");
                    typename DQ::scheme_type::params p{};
                    if (!amax) amax = largest_magnitude(w.data(), w.stride(), w.rows(), w.cols());
                    if (!amax)  // the fit has thrown for such weights already
                        LOWBIT_THROW(errc::invalid_argument, who + ": the weights hold a value that is not finite");
                    p.scale = *amax / dq.amax_divisor;
                    if (p.scale > 0.0f) fixed = p;  // else (all zero, or below float's range) the scheme's own fit
                }
                q.scales_q = detail::quantize_scales(
                    dq, s, block, effective,
                    [&](std::size_t lo, std::size_t hi) {
                        return std::string("quantize (") + scheme.name() + "): the scales of " +
                               detail::groups_position(w, L, lo, hi);
                    },
                    std::nullopt, fixed, [&](std::span<const float> x, const auto& p2, std::uint8_t* codes) {
                        return encode_second_level(x, p2, codes);
                    });
                if (dq.encode_with_quantized) {
                    // Params that are a scale alone are not copied: the encode
                    // kernel reads the effective scales.
                    if constexpr (!split && sizeof(P) == sizeof(float))
                        encode_effective = !fused && has_kernel_rule();
                    if (!encode_effective)
                        for (std::size_t g = 0; g < L.count; ++g)
                            (split ? encode_params : params)[g].scale = effective[g];
                }
                if (fused) check_codes_finite(w, L, params, effective, q);
            }
        } else if (!fused) {
            for (std::size_t g = 0; g < L.count; ++g) effective[g] = params[g].scale;
        }

        if (!fused && !second_level_done)
            encode_all(w, L, split ? encode_params : params, params, effective, q, encode_effective);

        q.scale = std::move(effective);
        if constexpr (requires(typename S::params p) { p.zero; p.bias; }) {
            bool any_zero = false, any_bias = false;
            for (std::size_t g = 0; g < L.count; ++g) {
                any_zero |= params[g].zero != 0.0f;
                // A -0 bias is kept: an owner's format may store its sign (ggml's Q4_1 m).
                any_bias |= params[g].bias != 0.0f || std::signbit(params[g].bias);
            }
            if (any_zero) detail::resize_large(q.zero, L.count);
            if (any_bias) detail::resize_large(q.bias, L.count);
            for (std::size_t g = 0; g < L.count; ++g) {
                if (any_zero) q.zero[g] = params[g].zero;
                if (any_bias) q.bias[g] = params[g].bias;
            }
        }
        return q;
    }

private:
    /// The scheme encodes with other params than it stores (split_params).
    static constexpr bool split = requires(const S& s, std::span<const float> x) {
        s.fit_split(x, x).stored;
        s.fit_split(x, x).encode;
    };

    /// Returns the largest magnitude of w where the fit met it on the way
    /// and a second level needs it (double_quant::amax_divisor).
    std::optional<float> fit_all(matrix_view<const float> w, std::span<const float> imp, const group_layout& L,
                                 std::vector<typename S::params>& params,
                                 std::vector<typename S::params>& encode_params, const std::string& who) const {
        const std::size_t rows = w.rows(), cols = w.cols();
        const bool per_elem = imp.size() == rows * cols && imp.size() != cols;
        if (gran.kind == granularity_kind::per_tensor || gran.kind == granularity_kind::per_input_channel) {
            // Groups that cross rows: gather them.
            const bool tensor = gran.kind == granularity_kind::per_tensor;
            const std::size_t ngroups = tensor ? 1 : cols, len = tensor ? rows * cols : rows;
            std::vector<float> x(len), iw(imp.empty() ? 0 : len);
            for (std::size_t g = 0; g < ngroups; ++g) {
                std::size_t k = 0;
                for (std::size_t r = 0; r < rows; ++r)
                    for (std::size_t c = tensor ? 0 : g; c < (tensor ? cols : g + 1); ++c, ++k) {
                        x[k] = w(r, c);
                        if (!iw.empty()) iw[k] = per_elem ? imp[r * cols + c] : imp[c];
                    }
                fit_at(x, iw, w, L, g, params, encode_params);
            }
            return std::nullopt;
        }
        if constexpr (fits_from_stats) {
            if (imp.empty()) {
                // The largest magnitude, for a second level scaled by it (nvfp4).
                bool want_amax = false;
                if constexpr (is_double_quant_v<DQ>) want_amax = dq.amax_divisor != 0.0f;
                const float m = fit_rows_from_extremes(w, L, params, encode_params, who, want_amax);
                return want_amax ? std::optional<float>(m) : std::nullopt;
            }
        }
        parallel_for(rows, threads, 16, [&](std::size_t r0, std::size_t r1) {
            std::vector<float> iw(imp.empty() ? 0 : L.group);
            for (std::size_t r = r0; r < r1; ++r) {
                const auto row = w.row(r);
                for (std::size_t c0 = 0; c0 < cols; c0 += L.group) {
                    std::span<const float> x(row.data() + c0, L.group);
                    if (!iw.empty())
                        for (std::size_t k = 0; k < L.group; ++k)
                            iw[k] = per_elem ? imp[r * cols + c0 + k] : imp[c0 + k];
                    fit_at(x, iw, w, L, L.index(r, c0), params, encode_params);
                }
            }
        });
        return std::nullopt;
    }

    /// fit_stats is a rule of scheme/fit_rules.hpp, which the fit kernel runs
    /// (params of one, or of scale, zero and bias, floats in that order).
    static constexpr bool has_stats_rule =
        requires(const S& s) {
            { s.stats_rule() } -> std::convertible_to<fit_rule>;
        } && (std::is_same_v<typename S::params, scaled_params> || std::is_same_v<typename S::params, affine_params>);

    /// fit looks only at a group's statistics (fit_stats, or
    /// fit_split_stats for split schemes), which a kernel gathers.
    static constexpr bool fits_from_stats = split ? requires(const S& s, const detail::group_stats& st) {
        s.fit_split_stats(st);
    } : requires(const S& s, const detail::group_stats& st) { s.fit_stats(st); };

    /// Row-wise groups from their extremes, rows split across threads, a
    /// block of rows at a time (32 KB of weights, L1-resident while it is
    /// worked on): the extremes kernel (with the finiteness check), fit_stats
    /// per group (the stored params into `params`), then
    /// on_block(b0, b1, r1, enc) with enc[k] the params the block's k-th group
    /// encodes with and r1 the end of this thread's rows. A non-finite weight
    /// is reported before any other error, as the checks-first path reports it.
    /// Returns the largest magnitude of w when `want_amax` (else 0).
    template <class OnBlock>
    float fit_blocks(matrix_view<const float> w, const group_layout& L, std::vector<typename S::params>& params,
                     const std::string& who, bool want_amax, OnBlock&& on_block) const
        requires fits_from_stats
    {
        const std::size_t per_row = L.param_stride;
        const std::size_t block = std::max<std::size_t>(1, 8192 / w.cols());
        std::atomic<bool> non_finite{false};
        std::mutex amax_lock;
        float amax = 0.0f;
        const auto run = [&](std::size_t r0, std::size_t r1) {
            float m = 0.0f;
            std::vector<float> ex_min(block * per_row), ex_max(block * per_row), ex_m(block * per_row);
            std::vector<typename S::params> enc(block * per_row);
            std::vector<std::uint8_t> flag(has_stats_rule ? block * per_row : 0);
            for (std::size_t b0 = r0; b0 < r1; b0 += block) {
                const std::size_t b1 = std::min(r1, b0 + block);
                bool nf = false;
                kernels::gather_extremes({w.row(b0).data(), w.stride(), b1 - b0, w.cols(), L.group, ex_min.data(),
                                          ex_max.data(), ex_m.data(), &nf});
                if (nf) {
                    non_finite = true;
                    return;
                }
                const std::size_t count = (b1 - b0) * per_row;
                if (want_amax) {
                    float bm = 0.0f;  // finite: plain compares, in a register
                    for (std::size_t k = 0; k < count; ++k) {
                        const float e = -ex_min[k] > ex_max[k] ? -ex_min[k] : ex_max[k];
                        bm = e > bm ? e : bm;
                    }
                    m = bm > m ? bm : m;
                }
                if constexpr (has_stats_rule) {
                    // The fit kernel; the groups it flags by the scheme's own fit_stats.
                    const fit_rule rule = scheme.stats_rule();
                    kernels::fit_groups({ex_min.data(), ex_max.data(), ex_m.data(), count, &rule,
                                         &params[b0 * per_row].scale, &enc.data()->scale,
                                         sizeof(typename S::params) / sizeof(float), flag.data()});
                    for (std::size_t k = 0; k < count; ++k)
                        if (flag[k])
                            enc[k] = fit_from_extremes(w, L, b0 * per_row + k, {ex_min[k], ex_max[k], ex_m[k]},
                                                       params[b0 * per_row + k]);
                } else {
                    for (std::size_t k = 0; k < count; ++k)
                        enc[k] = fit_from_extremes(w, L, b0 * per_row + k, {ex_min[k], ex_max[k], ex_m[k]},
                                                   params[b0 * per_row + k]);
                }
                on_block(b0, b1, r1, std::span<const typename S::params>(enc.data(), (b1 - b0) * per_row));
            }
            const std::lock_guard<std::mutex> hold(amax_lock);
            amax = m > amax ? m : amax;
        };
        try {
            parallel_for(w.rows(), threads, 16, run);
        } catch (...) {
            detail::check_finite(w, who + ": weight");  // a non-finite weight is the error to report
            throw;
        }
        if (non_finite) detail::check_finite(w, who + ": weight");
        return amax;
    }

    /// Row-wise groups fitted from their extremes; encoding comes later.
    /// Returns the largest magnitude of w when `want_amax` (else 0).
    float fit_rows_from_extremes(matrix_view<const float> w, const group_layout& L,
                                 std::vector<typename S::params>& params,
                                 std::vector<typename S::params>& encode_params, const std::string& who,
                                 bool want_amax) const
        requires fits_from_stats
    {
        return fit_blocks(w, L, params, who, want_amax, [&](std::size_t b0, std::size_t, std::size_t, auto enc) {
            if constexpr (split) std::copy(enc.begin(), enc.end(), encode_params.begin() + b0 * L.param_stride);
        });
    }

    /// scheme.fit (or fit_split) on group g into params[g] (and
    /// encode_params[g]); an error names the group (row, columns, largest value).
    void fit_at(std::span<const float> x, std::span<const float> iw, matrix_view<const float> w,
                const group_layout& L, std::size_t g, std::vector<typename S::params>& params,
                std::vector<typename S::params>& encode_params) const {
        const auto where = [&] {
            return std::string("quantize (") + scheme.name() + "): " + detail::group_position(w, L, g);
        };
        if constexpr (split) {
            const auto p = detail::at_position([&] { return scheme.fit_split(x, iw); }, where);
            params[g] = p.stored;
            encode_params[g] = p.encode;
        } else {
            params[g] = detail::at_position([&] { return scheme.fit(x, iw); }, where);
        }
    }

    /// Encodes every value with `enc` and checks that what it decodes to
    /// under the stored params (`params` with the effective scale) is finite:
    /// a group whose stored params cannot represent its range is an
    /// errc::invalid_argument error naming the value, rather than Inf/NaN in
    /// the output.
    /// `encode_effective` (params that are a scale alone, a kernel rule):
    /// encode with the effective scales in place of enc's.
    void encode_all(matrix_view<const float> w, const group_layout& L, const std::vector<typename S::params>& enc,
                    const std::vector<typename S::params>& params, const std::vector<float>& effective,
                    quantized<S>& q, bool encode_effective = false) const {
        const std::size_t rows = w.rows(), cols = w.cols();
        detail::resize_large(q.codes, rows * q.code_stride);
        kernels::encode_job job{};
        affine_rule ar{};
        minifloat_rule mr{};
        if (kernel_rule(job, ar, mr)) {
            encode_with_kernel(w, L, enc, params, effective, q, job, encode_effective);
            return;
        }
        parallel_for(rows, threads, 16, [&](std::size_t r0, std::size_t r1) {
            std::vector<std::uint8_t> row_codes(cols);
            for (std::size_t r = r0; r < r1; ++r) {
                const auto row = w.row(r);
                bool finite = true;
                for (std::size_t c = 0; c < cols; ++c) {
                    const std::size_t g = L.index(r, c);
                    row_codes[c] = scheme.encode(row[c], enc[g]);
                    auto stored = params[g];
                    stored.scale = effective[g];
                    finite &= std::isfinite(scheme.decode(row_codes[c], stored));
                }
                if (!finite) unrepresentable(w, L, params, effective, r, row_codes);
                pack_bits(row_codes, S::bits,
                          std::span<std::uint8_t>(q.codes.data() + r * q.code_stride, q.code_stride));
            }
        });
    }

    bool has_kernel_rule() const {
        kernels::encode_job j{};
        affine_rule ar{};
        minifloat_rule mr{};
        return kernel_rule(j, ar, mr);
    }

    /// Row-wise groups without double quantization, in one pass over the
    /// weights: for a block of rows at a time (while it is in cache) the
    /// group extremes (with a finiteness check), fit_stats per group, the
    /// encode kernel, then the code-by-code check of groups whose params
    /// could decode a code to a non-finite value. Any error, and any
    /// non-finite weight, is reported as the checks-first path reports it:
    /// a non-finite weight before anything else.
    /// `scales_of(g0, g1)` gives the scales groups g0..g1 - 1 encode with,
    /// one float apart, or nullptr for their fitted params (the default).
    template <class ScalesOf = std::nullptr_t (*)(std::size_t, std::size_t)>
    void quantize_rows_fused(matrix_view<const float> w, const group_layout& L,
                             std::vector<typename S::params>& params, quantized<S>& q, const std::string& who,
                             bool check_codes, ScalesOf&& scales_of = fitted_scales) const
        requires fits_from_stats
    {
        const std::size_t cols = w.cols(), per_row = L.param_stride;
        kernels::encode_job rule{};
        affine_rule ar{};
        minifloat_rule mr{};
        kernel_rule(rule, ar, mr);
        rule.x_stride = w.stride();
        rule.cols = cols;
        rule.group = L.group;
        rule.param_stride = per_row;
        rule.bits = S::bits;
        rule.code_stride = q.code_stride;
        const float table_max = largest_table_value();
        detail::resize_large(q.codes, w.rows() * q.code_stride);
        using P = typename S::params;
        static_assert(std::is_standard_layout_v<P> && sizeof(P) % sizeof(float) == 0 && offsetof(P, scale) == 0);
        rule.param_step = sizeof(P) / sizeof(float);
        fit_blocks(w, L, params, who, false, [&](std::size_t b0, std::size_t b1, std::size_t r1, auto enc) {
            kernels::encode_job j = rule;  // reads the block's params in place
            j.scale = &enc.data()->scale;
            if (const float* given = scales_of(b0 * per_row, b1 * per_row)) {
                j.scale = given;
                j.param_step = 1;
            }
            if constexpr (S::family == kernel_family::affine) {
                j.zero = &enc.data()->zero;
                j.bias = &enc.data()->bias;
            }
            j.x = w.row(b0).data();
            j.rows = b1 - b0;
            j.codes = q.codes.data() + b0 * q.code_stride;
            if (b1 < r1) {  // the next block streams in while this one is coded
                const std::size_t next = std::min(r1, b1 + (b1 - b0)) - b1;
                j.prefetch = w.row(b1).data();
                j.prefetch_bytes = ((next - 1) * w.stride() + cols) * sizeof(float);
            }
            kernels::encode(j);
            if (check_codes)
                for (std::size_t g = b0 * per_row; g < b1 * per_row; ++g)
                    if (!all_codes_finite(params[g], table_max)) check_group_codes(w, L, q, params[g], g);
        });
    }

    static std::nullptr_t fitted_scales(std::size_t, std::size_t) noexcept { return nullptr; }

    /// A second level of one block whose params come from the weights'
    /// largest magnitude (double_quant::amax_divisor), over row-wise groups
    /// fitted from their extremes whose params are a scale alone (nvfp4).
    static constexpr bool fits_fixed_second_level = [] {
        if constexpr (is_double_quant_v<DQ> && fits_from_stats && !split)
            return sizeof(typename S::params) == sizeof(float);
        else
            return false;
    }();

    /// The largest magnitude of w in one pass (rows across threads), then
    /// one pass that fits a block of rows, quantizes its scales under the
    /// second level's params (amax / amax_divisor) and encodes its values
    /// with the quantized scales, as the general path does in three passes
    /// (the same bits: each scale's second-level code depends on it and the
    /// one params alone). Returns false, having written nothing, where those
    /// params are 0 (the weights all zero or below float's range): the
    /// general path fits the second level to the scales.
    bool quantize_rows_fixed_second_level(matrix_view<const float> w, const group_layout& L,
                                          std::vector<typename S::params>& params, std::vector<float>& effective,
                                          quantized<S>& q, const std::string& who) const
        requires fits_fixed_second_level
    {
        std::mutex lock;
        float amax = 0.0f;
        bool non_finite = false;
        parallel_for(w.rows(), threads, 16, [&](std::size_t r0, std::size_t r1) {
            const auto m = largest_magnitude(w.row(r0).data(), w.stride(), r1 - r0, w.cols());
            const std::lock_guard<std::mutex> hold(lock);
            if (!m) non_finite = true;
            else amax = *m > amax ? *m : amax;
        });
        if (non_finite) detail::check_finite(w, who + ": weight");
        using S2 = typename DQ::scheme_type;
        typename S2::params p{};
        p.scale = amax / dq.amax_divisor;
        if (!(p.scale > 0.0f)) return false;
        second_level sl = detail::second_level_frame<S2>(L.count, 0);
        detail::split_params(p, sl.scale, sl.zero, sl.bias, 0);
        quantize_rows_fused(w, L, params, q, who, false, [&](std::size_t g0, std::size_t g1) {
            detail::encode_scales(dq.scheme, std::span<const float>(&params[g0].scale, g1 - g0), p, 0.0f,
                                  sl.codes.data() + g0, effective.data() + g0,
                                  [&](std::span<const float> x, const auto& p2, std::uint8_t* codes) {
                                      return encode_second_level(x, p2, codes);
                                  });
            return static_cast<const float*>(effective.data() + g0);
        });
        detail::finish_second_level(dq, sl);
        q.scales_q = std::move(sl);
        check_codes_finite(w, L, params, effective, q);
        return true;
    }

    /// The second level's codes of a block of scales x under p2 by the encode
    /// kernel, where the second-level scheme has a kernel rule and one-byte
    /// codes (nvfp4's E4M3 block scales); false otherwise.
    template <class P2>
    bool encode_second_level(std::span<const float> x, const P2& p2, std::uint8_t* codes) const {
        if constexpr (!is_double_quant_v<DQ>) {
            return false;
        } else if constexpr (DQ::scheme_type::bits != 8) {
            return false;
        } else {
            kernels::encode_job j{};
            affine_rule ar{};
            minifloat_rule mr{};
            if (x.empty() || !kernel_rule_of(dq.scheme, j, ar, mr)) return false;
            j.x = x.data();
            j.x_stride = x.size();
            j.rows = 1;
            j.cols = j.group = x.size();
            j.scale = &p2.scale;
            if constexpr (requires { p2.zero; p2.bias; }) {
                j.zero = &p2.zero;
                j.bias = &p2.bias;
            }
            j.param_stride = 0;
            j.bits = 8;
            j.codes = codes;
            j.code_stride = x.size();
            kernels::encode(j);
            return true;
        }
    }

    /// Params of group g from its extremes: the stored ones into `stored`,
    /// the ones to encode with returned. An error names the group.
    typename S::params fit_from_extremes(matrix_view<const float> w, const group_layout& L, std::size_t g,
                                         const kernels::group_extremes& e, typename S::params& stored) const
        requires fits_from_stats
    {
        detail::group_stats st{e.min, e.max, e.signed_absmax, e.min == e.max};
        if (e.min == 0.0f || e.max == 0.0f) {  // stats_of keeps the sign of the first zero
            const std::size_t r = g / L.param_stride, c0 = (g % L.param_stride) * L.group;
            st = detail::stats_of(std::span<const float>(w.row(r).data() + c0, L.group));
        }
        const auto where = [&] { return std::string("quantize (") + scheme.name() + "): " + detail::group_position(w, L, g); };
        if constexpr (split) {
            const auto p = detail::at_position([&] { return scheme.fit_split_stats(st); }, where);
            stored = p.stored;
            return p.encode;
        } else {
            stored = detail::at_position([&] { return scheme.fit_stats(st); }, where);
            return stored;
        }
    }

    /// The largest |value| of rows x cols values at x (rows `stride` apart)
    /// through the extremes kernel, or nothing when one of them is not finite
    /// (a NaN can hide from a min and max).
    static std::optional<float> largest_magnitude(const float* x, std::size_t stride, std::size_t rows,
                                                  std::size_t cols) {
        if (rows == 0 || cols == 0) return 0.0f;
        std::vector<float> mn(rows), mx(rows), sm(rows);
        bool nf = false;
        kernels::gather_extremes({x, stride, rows, cols, cols, mn.data(), mx.data(), sm.data(), &nf});
        if (nf) return std::nullopt;
        float m = 0.0f;
        for (std::size_t r = 0; r < rows; ++r) m = std::fmax(m, std::fmax(std::fabs(mn[r]), std::fabs(mx[r])));
        return m;
    }

    /// Largest finite |table value| of a table scheme (0 for affine ones).
    float largest_table_value() const {
        float m = 0.0f;
        if constexpr (S::family != kernel_family::affine)
            for (float t : scheme.table())
                if (std::isfinite(t)) m = std::fmax(m, std::fabs(t));
        return m;
    }

    /// Every code of row-wise group g decodes to a finite value under
    /// `stored`, or the first that does not is an error.
    void check_group_codes(matrix_view<const float> w, const group_layout& L, const quantized<S>& q,
                           const typename S::params& stored, std::size_t g) const {
        const std::size_t r = g / L.param_stride, c0 = (g % L.param_stride) * L.group;
        for (std::size_t c = c0; c < c0 + L.group; ++c) {
            const float y = scheme.decode(q.code_at(r, c), stored);
            if (!std::isfinite(y)) unrepresentable_at(w, L, std::vector<float>{}, r, c, y, stored.scale);
        }
    }

    /// The encode kernel's form of scheme.encode, where the scheme has one:
    /// an affine_rule, a threshold_rule (tables of up to 16 values) or a
    /// minifloat_rule (ar and mr hold the rule the job points at).
    bool kernel_rule(kernels::encode_job& j, affine_rule& ar, minifloat_rule& mr) const {
        return kernel_rule_of(scheme, j, ar, mr);
    }

    template <class T>
    static bool kernel_rule_of(const T& scheme, kernels::encode_job& j, affine_rule& ar, minifloat_rule& mr) {
        if constexpr (requires { { scheme.encode_rule() } -> std::convertible_to<affine_rule>; }) {
            ar = scheme.encode_rule();
            j.kind = kernels::encode_kind::affine;
            j.affine = &ar;
            return true;
        } else if constexpr (requires { { scheme.encode_rule() } -> std::convertible_to<minifloat_rule>; }) {
            mr = scheme.encode_rule();
            j.kind = kernels::encode_kind::minifloat;
            j.minifloat = &mr;
            return true;
        } else if constexpr (requires { { scheme.encode_rule() } -> std::convertible_to<const threshold_rule*>; }) {
            j.kind = kernels::encode_kind::thresholds;
            j.thresholds = scheme.encode_rule();
            return j.thresholds != nullptr;
        } else {
            return false;
        }
    }

    /// Whether every code of a group decodes to a finite value under its
    /// stored params `p`: decode is monotone in the code for affine schemes
    /// (so the two end codes tell), and a table's entries scale by one factor.
    bool all_codes_finite(const typename S::params& p, float table_max) const {
        if constexpr (S::family == kernel_family::affine) {
            constexpr int top = (1 << S::bits) - 1;
            return std::isfinite(scheme.decode(0, p)) && std::isfinite(scheme.decode(top, p));
        } else {
            return std::isfinite(table_max * std::fabs(p.scale));
        }
    }

    /// encode_all through the encode kernel, rows split across threads; the
    /// groups whose stored params could decode a code to a non-finite value
    /// are then checked code by code.
    void encode_with_kernel(matrix_view<const float> w, const group_layout& L,
                            const std::vector<typename S::params>& enc, const std::vector<typename S::params>& params,
                            const std::vector<float>& effective, quantized<S>& q, kernels::encode_job job,
                            bool encode_effective) const {
        // The kernel reads the params in place (param_step floats apart).
        using P = typename S::params;
        static_assert(std::is_standard_layout_v<P> && sizeof(P) % sizeof(float) == 0 && offsetof(P, scale) == 0);
        bool any_zero = false, any_bias = false;
        if constexpr (requires(P p) { p.zero; p.bias; })
            for (const auto& p : enc) any_zero |= p.zero != 0.0f, any_bias |= p.bias != 0.0f;
        job.param_step = sizeof(P) / sizeof(float);
        job.x_stride = w.stride();
        job.cols = w.cols();
        job.group = L.group;
        job.param_stride = L.param_stride;
        job.bits = S::bits;
        job.code_stride = q.code_stride;
        parallel_for(w.rows(), threads, 16, [&](std::size_t r0, std::size_t r1) {
            kernels::encode_job j = job;
            j.x = w.row(r0).data();
            j.rows = r1 - r0;
            const P* p0 = enc.data() + r0 * L.param_stride;
            j.scale = encode_effective ? effective.data() + r0 * L.param_stride : &p0->scale;
            if constexpr (requires(P p) { p.zero; p.bias; }) {
                j.zero = any_zero ? &p0->zero : nullptr;
                j.bias = any_bias ? &p0->bias : nullptr;
            }
            j.codes = q.codes.data() + r0 * q.code_stride;
            kernels::encode(j);
        });
        check_codes_finite(w, L, params, effective, q);
    }

    /// Every code of q decodes to a finite value under the stored params
    /// (`params` with the effective scales), or the first that does not, in
    /// the order the scalar path meets them, is an error.
    void check_codes_finite(matrix_view<const float> w, const group_layout& L,
                            const std::vector<typename S::params>& params, const std::vector<float>& effective,
                            const quantized<S>& q) const {
        const float table_max = largest_table_value();
        if constexpr (S::family != kernel_family::affine) {
            // A table's codes are finite under every scale when they are
            // under the largest: one kernel pass finds it.
            const auto largest = largest_magnitude(effective.data(), effective.size(), 1, effective.size());
            if (largest && std::isfinite(table_max * *largest)) return;
        }
        std::vector<std::size_t> suspect;
        for (std::size_t g = 0; g < L.count; ++g) {
            auto stored = params[g];
            stored.scale = effective[g];
            if (!all_codes_finite(stored, table_max)) suspect.push_back(g);
        }
        // The groups to check code by code.
        for (std::size_t r = 0; r < w.rows() && !suspect.empty(); ++r)
            for (std::size_t c = 0; c < w.cols(); ++c) {
                const std::size_t g = L.index(r, c);
                if (!std::binary_search(suspect.begin(), suspect.end(), g)) {
                    c = (c / L.group + 1) * L.group - 1;  // skip the rest of the group
                    continue;
                }
                auto stored = params[g];
                stored.scale = effective[g];
                const float y = scheme.decode(q.code_at(r, c), stored);
                if (!std::isfinite(y)) unrepresentable_at(w, L, effective, r, c, y);
            }
    }

    [[noreturn]] void unrepresentable_at(matrix_view<const float> w, const group_layout& L,
                                         const std::vector<float>& effective, std::size_t r, std::size_t c,
                                         float y, float scale = 0.0f) const {
        if (!effective.empty()) scale = effective[L.index(r, c)];
        LOWBIT_THROW(errc::invalid_argument,
                     std::string("quantize (") + scheme.name() + "): row " + std::to_string(r) + ", column " +
                         std::to_string(c) + ": " + detail::value_string(w(r, c)) + " would dequantize to " +
                         detail::value_string(y) + " (stored scale " + detail::value_string(scale) +
                         "); the group's params cannot represent its range: " +
                         detail::group_position(w, L, L.index(r, c)));
        std::abort();  // a LOWBIT_THROW that returns
    }

    [[noreturn]] void unrepresentable(matrix_view<const float> w, const group_layout& L,
                                      const std::vector<typename S::params>& params,
                                      const std::vector<float>& effective, std::size_t r,
                                      const std::vector<std::uint8_t>& codes) const {
        std::size_t c = 0;
        float y = 0.0f;
        for (; c < w.cols(); ++c) {
            auto stored = params[L.index(r, c)];
            stored.scale = effective[L.index(r, c)];
            y = scheme.decode(codes[c], stored);
            if (!std::isfinite(y)) break;
        }
        if (c == w.cols()) c = 0;  // not reached: the caller saw a non-finite value
        unrepresentable_at(w, L, effective, r, c, y);
    }
};

/// Quantize then dequantize with the same arithmetic as the real path (QAT's
/// forward pass). `out` may alias `w`.
template <scheme S, class DQ>
void fake_quantize(const quantizer<S, DQ>& qz, matrix_view<const float> w, matrix_view<float> out,
                   std::span<const float> importance = {}) {
    detail::check_view(out, "fake_quantize: output");
    if (out.rows() != w.rows() || out.cols() != w.cols())
        LOWBIT_THROW(errc::shape_mismatch, "fake_quantize: output is " + std::to_string(out.rows()) + " x " +
                                               std::to_string(out.cols()) + ", the weights " +
                                               std::to_string(w.rows()) + " x " + std::to_string(w.cols()));
    const auto q = qz.quantize(w, importance);
    q.dequantize(out);
}

/// The straight-through estimator's gradient mask for `w` under `q`: 1 where the
/// value lies inside its group's representable range (an affine value whose
/// unclamped code round(x/scale)+zero falls in [0, 2^b-1]; a table value
/// within [min, max] of table * scale), 0 where quantization clipped it.
template <scheme S>
void ste_mask(const quantized<S>& q, matrix_view<const float> w, matrix_view<float> mask) {
    detail::check_view(w, "ste_mask: weights");
    detail::check_view(mask, "ste_mask: mask");
    if (w.rows() != q.rows() || w.cols() != q.cols() || mask.rows() != q.rows() || mask.cols() != q.cols())
        LOWBIT_THROW(errc::shape_mismatch, "ste_mask: weights, mask and quantized matrix must have the same shape");
    constexpr int qmax = (1 << S::bits) - 1;
    for (std::size_t r = 0; r < q.rows(); ++r)
        for (std::size_t c = 0; c < q.cols(); ++c) {
            const auto p = q.params_at(r, c);
            const float x = w(r, c);
            bool inside;
            if constexpr (S::family == kernel_family::affine) {
                if (p.scale == 0.0f) {
                    inside = true;
                } else {
                    const float lo = q.scheme.decode(0, p), hi = q.scheme.decode(qmax, p);
                    const float a = std::min(lo, hi), b = std::max(lo, hi), half = std::fabs(p.scale) * 0.5f;
                    inside = x >= a - half && x <= b + half;
                }
            } else {
                // FP8 tables hold NaN/Inf codes that encode never produces: skip them.
                float mn = 0.0f, mx = 0.0f;
                for (float t : q.scheme.table())
                    if (std::isfinite(t)) mn = std::min(mn, t), mx = std::max(mx, t);
                const float a = std::min(mn * p.scale, mx * p.scale), b = std::max(mn * p.scale, mx * p.scale);
                inside = x >= a && x <= b;
            }
            mask(r, c) = inside ? 1.0f : 0.0f;
        }
}

LOWBIT_NAMESPACE_END
