#pragma once
// Integer affine schemes, 1..8 bits: symmetric (absmax or ggml's signed
// maximum), asymmetric with an integer zero-point (GPTQ, AWQ), asymmetric with
// a float zero-point (torchao's int4 weight-only, tinygemm) and MLX's affine
// rule.
//
// Every mode fills affine_params so that decode is, as three separate float
// operations, (float(q) - zero) * scale + bias. fit rounds what it stores
// (scale, float offsets) to `scale_type` first, and encode works from those
// stored values, so decode reproduces exactly what a kernel reading the
// stored params computes. The exceptions are MLX's rule, which encodes with
// the unrounded float32 params, and torchao's, which encodes with the minimum
// recovered from the stored zero-point: see split_params and
// affine<>::fit_split.

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../core/view.hpp"
#include "../detail/fp_contract.hpp"
#include "concepts.hpp"
#include "encode_rules.hpp"
#include "fit_rules.hpp"

LOWBIT_NAMESPACE_BEGIN

/// How an affine scheme maps a group onto integer codes; see affine<>.
enum class affine_mode : std::uint8_t { symmetric, symmetric_signed_max, asymmetric, asymmetric_float, mlx };

/// asymmetric_float's arithmetic (torchao's tinygemm rule; see affine<>):
/// the dtype torchao computes in (the weights' dtype: f32 or bf16), the
/// stored zero-point's dtype, and the smallest scale. The defaults are
/// torchao's rule on fp32 weights (eps = FLT_EPSILON, the input dtype's eps).
struct float_zero_rule {
    param_dtype compute = param_dtype::f32;
    param_dtype zero_type = param_dtype::f32;
    float eps = std::numeric_limits<float>::epsilon();
};

/// A group's params as stored, and the params its owner encodes the group's
/// values with, where the owner encodes with other ones than it stores (MLX:
/// fp32 scale and bias, stored in the weights' dtype; torchao: the minimum
/// recovered from the stored zero-point). A scheme that has
/// fit_split(x, w) returning these is encoded with `encode` and stored (and
/// decoded) with `stored` by the quantizer; fit(x, w) returns `stored`.
template <class P>
struct split_params {
    P stored;
    P encode;
};

namespace detail {

// A stored scale: rounded to its type, never 0 when the exact one is not (a
// group that tiny keeps the smallest step the type has), and an error when the
// type cannot hold it.
inline float store_scale(float s, param_dtype t, const char* who) {
    const float r = stored_scale(s, t);
    if (!std::isfinite(r))
        LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": scale " + value_string(s) + " does not fit the " +
                                                 to_string(t) + " scale type");
    return r;
}

inline float store_offset(float v, param_dtype t, const char* who) {
    const float r = round_to_param_dtype(v, t);
    if (std::isinf(r))
        LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": offset " + value_string(v) + " does not fit the " +
                                                 to_string(t) + " scale type");
    return r;
}

struct group_stats {
    float min = 0, max = 0;
    float signed_absmax = 0;  ///< the element of largest magnitude, first one on ties
    bool constant = true;     ///< every element equal (true for an empty group)
};

inline group_stats stats_of(std::span<const float> x) noexcept {
    group_stats s;
    if (x.empty()) return s;
    s.min = s.max = s.signed_absmax = x[0];
    float amax = std::fabs(x[0]);
    for (std::size_t i = 1; i < x.size(); ++i) {
        const float v = x[i];
        if (v < s.min) s.min = v;
        if (v > s.max) s.max = v;
        if (std::fabs(v) > amax) {
            amax = std::fabs(v);
            s.signed_absmax = v;
        }
        if (v != x[0]) s.constant = false;
    }
    return s;
}

template <int Bits, affine_mode Mode>
struct affine_name {
    static constexpr auto value = [] {
        constexpr const char* suffix = Mode == affine_mode::symmetric              ? "-sym"
                                       : Mode == affine_mode::symmetric_signed_max ? "-sym-signed-max"
                                       : Mode == affine_mode::asymmetric           ? "-asym"
                                       : Mode == affine_mode::asymmetric_float     ? "-asym-float"
                                                                                   : "-mlx";
        std::array<char, 24> s{};
        s[0] = 'i';
        s[1] = 'n';
        s[2] = 't';
        s[3] = static_cast<char>('0' + Bits);
        std::size_t n = 4;
        for (const char* p = suffix; *p; ++p) s[n++] = *p;
        return s;
    }();
};

}  // namespace detail

/// Integer codes q in [0, 2^Bits) with x ~= (q - zero) * scale + bias.
///
/// Modes (how fit chooses the params; encode then rounds to the nearest code):
/// * symmetric (Bits >= 2): scale = absmax / (2^(b-1) - 1), zero = 2^(b-1),
///   q = clamp(round(x / scale), -(2^(b-1) - 1), 2^(b-1) - 1) + 2^(b-1). Code 0
///   is never produced, so the grid is symmetric about 0.
/// * symmetric_signed_max (ggml Q4_0 generalised): d = m / -2^(b-1) with m the
///   element of largest |x| (first on ties; d < 0 when m > 0), zero = 2^(b-1),
///   q = clamp(trunc(x * (1/d) + 2^(b-1) + 0.5), 0, 2^b - 1), i.e. round half
///   up. The extreme element lands exactly on code 0.
/// * asymmetric (GPTQ find_params): range [min(min x, 0), max(max x, 0)],
///   scale = range / (2^b - 1), integer zero = round(-min / scale) from the
///   unrounded scale, q = clamp(round(x / scale) + zero, 0, 2^b - 1). 0 is
///   exact and |error| <= scale / 2 inside the range.
/// * asymmetric_float (torchao's int4 weight-only, tinygemm's float
///   zero-point: quant_primitives.py `_choose_qparams_affine_tinygemm` and
///   `_quantize_affine_tinygemm`, torchao 0.15.0), with m = 2^(b-1) the mid
///   code and every step below rounded to `float_zero.compute` as torch's
///   ops in the weights' dtype round (for bf16: the weights themselves too):
///   scale = max((max - min) / (2^b - 1), eps), zero-point
///   z = min + scale * m (stored in float_zero.zero_type, kept as bias, with
///   zero = m), and q = clamp(round((x - (z - scale * m)) / scale), 0,
///   2^b - 1) from the stored scale and z. decode is (q - m) * scale + z,
///   torchao's dequantize.
/// * mlx (mx.quantize; mlx/backend/cpu/quantized.cpp `quantize`, MLX 0.32):
///   in float32 from the group's min and max, scale =
///   max((max - min) / (2^b - 1), 1e-7), negated unless |min| > |max| so the
///   edge of larger magnitude is code 0; q0 = rint(edge / scale); if q0 != 0,
///   scale = edge / q0 and bias = edge, else bias = +0 (the scale stays the
///   eps-clamped one: a constant group below 5e-8 decodes to 0); zero = 0,
///   q = clamp(rint((x - bias) / scale), 0, 2^b - 1), a negative or -0 code
///   being 0 (a constant group gets code 0 everywhere). For b = 1: scale =
///   max(range, 1e-7), bias = min.
///
/// Rounding: round() is round-half-to-even (torch.round, std::rint) in every
/// mode except symmetric_signed_max, which truncates after adding 0.5 as ggml
/// does (half up). Params are computed in float32 (asymmetric_float: in
/// float_zero.compute) and then rounded to `scale_type` (scale, and the float
/// bias of mlx; asymmetric_float's zero-point to float_zero.zero_type); fit
/// returns the rounded (stored) params and encode divides by the scale it is
/// given. mlx and asymmetric_float also have fit_split, which returns the
/// stored params with the ones their owner encodes with: MLX's unrounded
/// float32 scale and bias, torchao's minimum recovered from the stored
/// zero-point. The quantizer encodes with those, so quantizer<affine<b, mlx>>
/// gives mx.quantize's codes bit for bit whatever the scale_type, and its
/// params are MLX's stored in `scale_type` (round-to-nearest-even, as MLX
/// casts them to the weights' dtype). Other owners that quantize with the
/// unrounded scale (ggml's 1/d) can differ at exact bin edges when scale_type
/// is not f32.
///
/// `clip` (in (0, 1]) multiplies the range ends (absmax, signed maximum,
/// min and max) before the params are computed; values beyond are clamped.
/// fit ignores the importance weights: there is no search here (see
/// clip_search).
///
/// Degenerate groups (documented, all exact in f32):
/// * all zero: symmetric and symmetric_signed_max store scale 0 (every code
///   decodes to 0, as ggml and bitsandbytes store a zero scale); asymmetric
///   uses GPTQ's range [-1, 1]; mlx gets its eps scale and bias 0;
///   asymmetric_float its eps scale and zero-point eps * m.
/// * constant c != 0: symmetric stores scale |c| (q = zero +- 1); asymmetric
///   stores scale |c| with zero 0 (c > 0) or 1 (c < 0); symmetric_signed_max
///   and mlx reproduce c through their own rule (mlx only for |c| > 5e-8:
///   below its eps MLX's q0 is 0 and c decodes to 0); asymmetric_float gives
///   what torchao gives, code 0 and the zero-point c + m * eps rounded, so c
///   comes back within m steps of eps plus that rounding. With an f16 or bf16
///   scale_type c comes back exactly only when representable there.
template <int Bits, affine_mode Mode = affine_mode::asymmetric>
struct affine {
    static_assert(Bits >= 1 && Bits <= 8, "affine: Bits must be 1..8");
    static_assert(Mode != affine_mode::symmetric || Bits >= 2,
                  "affine: symmetric needs at least 2 bits (1 bit has no nonzero symmetric level)");

    using params = affine_params;
    static constexpr int bits = Bits;
    static constexpr kernel_family family = kernel_family::affine;
    static constexpr affine_mode mode = Mode;
    static constexpr int max_code = (1 << Bits) - 1;

    param_dtype scale_type = param_dtype::f32;
    float clip = 1.0f;
    float_zero_rule float_zero{};  ///< asymmetric_float only

    params fit(std::span<const float> x, std::span<const float> /*w*/ = {}) const {
        return fit_stats(detail::stats_of(x));
    }

    /// fit from the group's statistics alone (all fit looks at): what the
    /// quantizer calls with statistics a kernel gathered.
    params fit_stats(const detail::group_stats& s) const {
        if constexpr (Mode == affine_mode::mlx || Mode == affine_mode::asymmetric_float) {
            return fit_split_stats(s).stored;
        } else {
            const fitted<float> f = fit_params(stats_rule(), s.min, s.max, s.signed_absmax);
            params p{};
            p.scale = detail::store_scale(f.scale, scale_type, name());
            p.zero = f.zero;
            return p;
        }
    }

    /// What fit_stats computes, for the fit kernel (scheme/fit_rules.hpp);
    /// asymmetric_float has none.
    constexpr fit_rule stats_rule() const noexcept
        requires(Mode != affine_mode::asymmetric_float)
    {
        fit_rule r;
        r.kind = Mode == affine_mode::symmetric              ? fit_kind::symmetric
                 : Mode == affine_mode::symmetric_signed_max ? fit_kind::symmetric_signed_max
                 : Mode == affine_mode::asymmetric           ? fit_kind::asymmetric
                                                             : fit_kind::mlx;
        r.bits = Bits;
        r.clip = clip;
        r.scale_type = scale_type;
        return r;
    }

    /// mlx and asymmetric_float: the params as stored (as fit returns them)
    /// and the ones their owner encodes with (see affine<>).
    split_params<params> fit_split(std::span<const float> x, std::span<const float> /*w*/ = {}) const
        requires(Mode == affine_mode::mlx || Mode == affine_mode::asymmetric_float)
    {
        return fit_split_stats(detail::stats_of(x));
    }

    split_params<params> fit_split_stats(const detail::group_stats& s) const
        requires(Mode == affine_mode::asymmetric_float)
    {
        const param_dtype c = float_zero.compute;
        if (c == param_dtype::f16)
            LOWBIT_THROW(errc::invalid_argument, std::string(name()) + ": float_zero.compute must be f32 or bf16");
        const auto in = [c](float v) { return round_to_param_dtype(v, c); };  // one torch op's result
        constexpr float mid = static_cast<float>(1 << (Bits - 1));
        constexpr float levels = static_cast<float>(max_code);
        const float lo = in(s.min * clip), hi = in(s.max * clip);
        const float scale = in(std::fmax(in(in(hi - lo) / levels), float_zero.eps));
        split_params<params> r;
        r.stored.scale = detail::store_scale(scale, scale_type, name());
        r.stored.zero = mid;
        r.stored.bias = detail::store_offset(in(lo + in(scale * mid)), float_zero.zero_type, name());
        r.encode.scale = r.stored.scale;
        r.encode.bias = in(r.stored.bias - in(r.stored.scale * mid));
        return r;
    }

    split_params<params> fit_split_stats(const detail::group_stats& s) const
        requires(Mode == affine_mode::mlx)
    {
        const fitted<float> f = fit_params(stats_rule(), s.min, s.max, s.signed_absmax);
        split_params<params> r;
        r.encode.scale = f.scale;
        r.encode.bias = f.bias;
        r.stored.scale = detail::store_scale(f.scale, scale_type, name());
        r.stored.bias = detail::store_offset(f.bias, scale_type, name());
        return r;
    }

    /// What encode computes, for the encode kernel (scheme/encode_rules.hpp).
    constexpr affine_rule encode_rule() const noexcept {
        affine_rule r;
        r.max_code = static_cast<float>(max_code);
        if constexpr (Mode == affine_mode::symmetric) {
            r.lo = -static_cast<float>((1 << (Bits - 1)) - 1);
            r.hi = static_cast<float>((1 << (Bits - 1)) - 1);
        }
        r.half_up = Mode == affine_mode::symmetric_signed_max;
        r.bf16_steps = Mode == affine_mode::asymmetric_float && float_zero.compute == param_dtype::bf16;
        return r;
    }

    std::uint8_t encode(float x, const params& p) const noexcept {
        return static_cast<std::uint8_t>(affine_code(encode_rule(), x, p.scale, p.zero, p.bias));
    }

    float decode(std::uint8_t c, const params& p) const noexcept {
        const float centred = static_cast<float>(c) - p.zero;
        return detail::unfused(centred * p.scale) + p.bias;
    }

    /// mlx and asymmetric_float: whether decoding into `t` follows the
    /// owner's dequantize arithmetic in `t` (decode_in). mlx: `t` is the
    /// (16-bit) scale_type, the dtype mx.dequantize returns for such params;
    /// asymmetric_float: any 16-bit `t`, torchao's output_dtype.
    bool decodes_in(param_dtype t) const noexcept
        requires(Mode == affine_mode::mlx || Mode == affine_mode::asymmetric_float)
    {
        if constexpr (Mode == affine_mode::mlx) return t != param_dtype::f32 && t == scale_type;
        return t != param_dtype::f32;
    }

    /// mlx and asymmetric_float: the owner's dequantize in the 16-bit dtype
    /// `t` (mx.dequantize; torchao's `_dequantize_affine_tinygemm`):
    /// (q - zero) * scale rounded to `t`, then the bias added and the sum
    /// rounded to `t` again (two roundings, where decode rounds once when its
    /// float result is narrowed). The products are exact in float32 and the
    /// sums round as the 16-bit operation does (it computes in float32 too),
    /// so this is the owner's result.
    float decode_in(std::uint8_t c, const params& p, param_dtype t) const noexcept
        requires(Mode == affine_mode::mlx || Mode == affine_mode::asymmetric_float)
    {
        const float product = round_to_param_dtype((static_cast<float>(c) - p.zero) * p.scale, t);
        return round_to_param_dtype(product + p.bias, t);
    }

    const char* name() const noexcept { return detail::affine_name<Bits, Mode>::value.data(); }

    /// Stored bits per group: the scale, plus the integer zero-point (Bits bits,
    /// as GPTQ/AWQ pack it) or the float bias or zero-point.
    std::size_t param_bits() const noexcept {
        const std::size_t s = static_cast<std::size_t>(param_dtype_bits(scale_type));
        if constexpr (Mode == affine_mode::asymmetric) return s + Bits;
        if constexpr (Mode == affine_mode::asymmetric_float)
            return s + static_cast<std::size_t>(param_dtype_bits(float_zero.zero_type));
        if constexpr (Mode == affine_mode::mlx) return 2 * s;
        return s;
    }
    std::size_t scale_bits() const noexcept { return static_cast<std::size_t>(param_dtype_bits(scale_type)); }
};

LOWBIT_NAMESPACE_END
