#pragma once
// How a scheme chooses a group's params from the group's extremes, written
// once for a single float and for a SIMD batch of floats (one group per
// lane), as scheme/encode_rules.hpp does for encoding.
//
// A scheme's fit_stats runs the rule on `float` and throws where a stored
// param does not fit its type; the quantizer's fit kernel runs the same rule
// on batches and hands every lane it flags (a stored param that does not fit,
// or a group whose fit needs more than its extremes) to fit_stats.

#include <cmath>
#include <cstdint>
#include <limits>

#include "../core/numeric.hpp"
#include "../detail/fp_contract.hpp"
#include "encode_rules.hpp"

LOWBIT_NAMESPACE_BEGIN

/// Storage type of a scheme's float params (scales, float zero-points and biases).
enum class param_dtype : std::uint8_t { f32, f16, bf16 };

constexpr int param_dtype_bits(param_dtype t) noexcept { return t == param_dtype::f32 ? 32 : 16; }

constexpr const char* to_string(param_dtype t) noexcept {
    switch (t) {
    case param_dtype::f32: return "f32";
    case param_dtype::f16: return "f16";
    case param_dtype::bf16: return "bf16";
    }
    return "?";
}

/// `v` rounded (to nearest even) to `t` and widened back: the value a reader of
/// the stored param sees. Overflow gives +-Inf (fp16 above 65504).
template <class V, class Ops = detail::lane_ops<V>>
LOWBIT_FORCE_INLINE V round_to_param_dtype(V v, param_dtype t) noexcept {
    switch (t) {
    case param_dtype::f32: return v;
    case param_dtype::f16: return Ops::round_f16(v);
    case param_dtype::bf16: return Ops::round_bf16(v);
    }
    return v;
}

/// A stored scale: `s` rounded to its type, never 0 when `s` is not (a group
/// that tiny keeps the smallest step the type has). The caller checks that
/// the result is finite (a scale too large for the type is an error).
template <class V, class Ops = detail::lane_ops<V>>
LOWBIT_FORCE_INLINE V stored_scale(V s, param_dtype t) noexcept {
    const V r = round_to_param_dtype<V, Ops>(s, t);
    const float tiny = t == param_dtype::f16    ? 0x1p-24f
                       : t == param_dtype::bf16 ? 0x1p-133f
                                                : std::numeric_limits<float>::denorm_min();
    const V signed_tiny = Ops::select(s < V(0.0f), V(-tiny), V(tiny));
    return Ops::select((r == V(0.0f)) & (s != V(0.0f)), signed_tiny, r);
}

/// Which rule fit_params applies.
enum class fit_kind : std::uint8_t {
    symmetric,             ///< affine symmetric
    symmetric_signed_max,  ///< affine symmetric_signed_max (ggml's Q4_0 rule generalised)
    asymmetric,            ///< affine asymmetric (GPTQ's find_params)
    mlx,                   ///< affine mlx (mx.quantize)
    absmax,                ///< codebook: scale = max |x| * clip / |extreme|
    signed_absmax,         ///< codebook: scale = m * clip / extreme, m the element of largest |x|
    pow2_floor,            ///< OCP MX: scale = 2^max(floor(log2(max |x| * clip)) - emax, -127)
};

/// What a scheme's fit computes from a group's extremes; see the schemes for
/// each rule's definition (affine<>, codebook).
struct fit_rule {
    fit_kind kind = fit_kind::asymmetric;
    int bits = 4;
    float clip = 1.0f;
    param_dtype scale_type = param_dtype::f32;
    float extreme = 1.0f;  ///< codebooks: the table's value of largest magnitude
    int emax = 2;          ///< pow2_floor: the element format's largest exponent (>= 1)
};

/// A group's params by a fit_rule: `scale`, `zero`, `bias` as computed in
/// float32, before the stored ones are rounded to the scale type (mlx encodes
/// with these; every other rule encodes with the stored ones).
template <class V>
struct fitted {
    V scale, zero, bias;
};

/// The params of a group with minimum `mn`, maximum `mx` and element of
/// largest magnitude `m` (first on ties), by rule r; a group is constant when
/// mn == mx. Inputs are finite. Divisions go through Ops::div (IEEE on every
/// instruction set; xsimd 8.1's NEON `/` is an estimate).
template <class V, class Ops = detail::lane_ops<V>>
LOWBIT_FORCE_INLINE fitted<V> fit_params(const fit_rule& r, V mn, V mx, V m) noexcept {
    const float half = static_cast<float>(1 << (r.bits - 1));
    const float levels = static_cast<float>((1 << r.bits) - 1);
    const V clip(r.clip);
    fitted<V> f{V(0.0f), V(0.0f), V(0.0f)};
    switch (r.kind) {
    case fit_kind::symmetric: {
        const V amax = Ops::max(Ops::abs(mn), Ops::abs(mx)) * clip;
        f.scale = Ops::select(mn == mx, Ops::abs(mx), Ops::div(amax, V(half - 1.0f)));
        f.zero = V(half);
        break;
    }
    case fit_kind::symmetric_signed_max:
        f.scale = Ops::div(m * clip, V(-half));
        f.zero = V(half);
        break;
    case fit_kind::asymmetric: {
        V lo = Ops::min(mn, V(0.0f)) * clip, hi = Ops::max(mx, V(0.0f)) * clip;
        const auto none = (lo == V(0.0f)) & (hi == V(0.0f));
        lo = Ops::select(none, V(-1.0f), lo);
        hi = Ops::select(none, V(1.0f), hi);
        const V scale = Ops::div(hi - lo, V(levels));
        const V zero = Ops::clamp_code(Ops::round_even(Ops::div(-lo, scale)), levels);
        // A constant nonzero group: scale |c|, code 0 (c > 0) or 1 (c < 0).
        const auto constant = (mn == mx) & (mx != V(0.0f));
        f.scale = Ops::select(constant, Ops::abs(mx), scale);
        f.zero = Ops::select(constant, Ops::select(mx > V(0.0f), V(0.0f), V(1.0f)), zero);
        break;
    }
    case fit_kind::mlx: {
        constexpr float eps = 1e-7f;
        const V lo = mn * clip, hi = mx * clip;
        if (r.bits == 1) {
            f.scale = Ops::max(hi - lo, V(eps));
            f.bias = lo;
            break;
        }
        const auto lo_edge = Ops::abs(lo) > Ops::abs(hi);
        V scale = Ops::max(Ops::div(hi - lo, V(levels)), V(eps));
        scale = Ops::select(lo_edge, scale, -scale);
        const V edge = Ops::select(lo_edge, lo, hi);
        const V q0 = Ops::round_even(Ops::div(edge, scale));
        const auto moved = q0 != V(0.0f);
        f.scale = Ops::select(moved, Ops::div(edge, Ops::select(moved, q0, V(1.0f))), scale);
        f.bias = Ops::select(moved, edge, V(0.0f));
        break;
    }
    case fit_kind::absmax:
        f.scale = Ops::div(Ops::abs(m) * clip, V(std::fabs(r.extreme)));
        break;
    case fit_kind::pow2_floor: {
        // e8m0_exponent_for_mx (core/numeric.hpp) on the biased exponent e of
        // amax: 2^(e - 127 - emax) while that is a normal float, else the
        // clamp's 2^-127 (also for a subnormal or zero amax, as emax >= 1).
        using U = typename Ops::uint;
        const U e = Ops::bits(Ops::abs(m) * clip) >> 23;
        const U emax(static_cast<std::uint32_t>(r.emax));
        f.scale = Ops::from_bits(Ops::select(e > emax, (e - emax) << 23, U(0x00400000u)));
        break;
    }
    case fit_kind::signed_absmax:
        // +0 for an all-zero group whatever the sign of its zeros.
        f.scale = Ops::div(Ops::select(m == V(0.0f), V(0.0f), m) * clip, V(r.extreme));
        break;
    }
    return f;
}

LOWBIT_NAMESPACE_END
