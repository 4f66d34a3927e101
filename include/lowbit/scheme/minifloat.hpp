#pragma once
// Minifloat elements (FP8, FP6, FP4) sharing one scale per group: OCP MX
// (power-of-two E8M0 scale), NVFP4's elements under an amax-derived scale, and
// per-channel FP8.

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>

#include "../core/numeric.hpp"
#include "affine.hpp"
#include "concepts.hpp"
#include "encode_rules.hpp"

LOWBIT_NAMESPACE_BEGIN

/// Element formats of minifloat<>: encode rounds to nearest even and saturates
/// finite overflow to +-max (FP8 included, as MX requires); decode is exact.
/// Codes sit in the low `bits` bits, sign in the top one. `rule` is the same
/// encode for finite inputs as a minifloat_rule (mantissa bits, bias, largest
/// magnitude code, sign bit), which the quantizer's kernel runs.
namespace elem {

struct fp8_e4m3 {
    static constexpr int bits = 8;
    static constexpr minifloat_rule rule{3, 7, 0x7E, 7};
    static constexpr float max = fp8_e4m3_limits::max;
    static constexpr int emax = fp8_e4m3_limits::emax;
    static constexpr std::uint8_t encode(float x) noexcept { return float_to_fp8_e4m3(x, true); }
    static constexpr float decode(std::uint8_t c) noexcept { return fp8_e4m3_to_float(c); }
};
struct fp8_e5m2 {
    static constexpr int bits = 8;
    static constexpr minifloat_rule rule{2, 15, 0x7B, 7};
    static constexpr float max = fp8_e5m2_limits::max;
    static constexpr int emax = fp8_e5m2_limits::emax;
    static constexpr std::uint8_t encode(float x) noexcept { return float_to_fp8_e5m2(x, true); }
    static constexpr float decode(std::uint8_t c) noexcept { return fp8_e5m2_to_float(c); }
};
struct fp6_e3m2 {
    static constexpr int bits = 6;
    static constexpr minifloat_rule rule{2, 3, 31, 5};
    static constexpr float max = fp6_e3m2_limits::max;
    static constexpr int emax = fp6_e3m2_limits::emax;
    static constexpr std::uint8_t encode(float x) noexcept { return float_to_fp6_e3m2(x); }
    static constexpr float decode(std::uint8_t c) noexcept { return fp6_e3m2_to_float(c); }
};
struct fp6_e2m3 {
    static constexpr int bits = 6;
    static constexpr minifloat_rule rule{3, 1, 31, 5};
    static constexpr float max = fp6_e2m3_limits::max;
    static constexpr int emax = fp6_e2m3_limits::emax;
    static constexpr std::uint8_t encode(float x) noexcept { return float_to_fp6_e2m3(x); }
    static constexpr float decode(std::uint8_t c) noexcept { return fp6_e2m3_to_float(c); }
};
struct fp4_e2m1 {
    static constexpr int bits = 4;
    static constexpr minifloat_rule rule{1, 1, 7, 3};
    static constexpr float max = fp4_e2m1_limits::max;
    static constexpr int emax = fp4_e2m1_limits::emax;
    static constexpr std::uint8_t encode(float x) noexcept { return float_to_fp4_e2m1(x); }
    static constexpr float decode(std::uint8_t c) noexcept { return fp4_e2m1_to_float(c); }
};

}  // namespace elem

/// How minifloat<> chooses the shared scale of a group.
enum class scale_rule : std::uint8_t {
    /// OCP MX v1.0: scale = 2^X, X = floor(log2(amax)) - emax_elem, clamped to
    /// >= -127; an all-zero group takes log2 of the smallest normal float, so
    /// X = max(-126 - emax_elem, -127). Stored as E8M0 (X + 127).
    pow2_floor,
    /// scale = amax / elem_max in float32, rounded to scale_type (per-channel
    /// FP8; NVFP4's block scale before its own E4M3 rounding). An all-zero
    /// group stores scale 0.
    amax,
};

namespace detail {

template <class Elem>
constexpr std::array<float, std::size_t{1} << Elem::bits> element_table() noexcept {
    std::array<float, std::size_t{1} << Elem::bits> t{};
    for (std::size_t c = 0; c < t.size(); ++c) t[c] = Elem::decode(static_cast<std::uint8_t>(c));
    return t;
}

template <class Elem>
constexpr const char* element_name(bool mx) noexcept {
    if constexpr (std::is_same_v<Elem, elem::fp8_e4m3>) return mx ? "mxfp8_e4m3" : "fp8_e4m3-amax";
    else if constexpr (std::is_same_v<Elem, elem::fp8_e5m2>) return mx ? "mxfp8_e5m2" : "fp8_e5m2-amax";
    else if constexpr (std::is_same_v<Elem, elem::fp6_e3m2>) return mx ? "mxfp6_e3m2" : "fp6_e3m2-amax";
    else if constexpr (std::is_same_v<Elem, elem::fp6_e2m3>) return mx ? "mxfp6_e2m3" : "fp6_e2m3-amax";
    else return mx ? "mxfp4" : "fp4_e2m1-amax";
}

}  // namespace detail

/// Elements of format `Elem` times one shared scale per group:
/// x ~= Elem::decode(q) * scale, so decode(c, p) == table()[c] * p.scale.
///
/// encode divides by the stored scale (x / scale, as torchao's MX and
/// NVFP4-without-tensor-scale paths do) and rounds to the nearest element,
/// ties to even, saturating to +-max. microxcaling's default rounds half away
/// from zero instead; ml_dtypes and torchao use ties-to-even, as here. A zero
/// scale encodes everything as +0.
///
/// FP8 tables contain the formats' NaN codes (and E5M2's Inf codes) as NaN and
/// +-Inf: encode never produces them for finite input.
///
/// `clip` multiplies amax before the scale is chosen. `scale_type` applies to
/// the amax rule only (a power of two is stored exactly as E8M0). fit ignores
/// importance weights.
template <class Elem, scale_rule Rule>
struct minifloat {
    using params = scaled_params;
    using element = Elem;
    static constexpr int bits = Elem::bits;
    static constexpr std::size_t size = std::size_t{1} << bits;
    static constexpr kernel_family family = kernel_family::table;
    static constexpr scale_rule rule = Rule;

    param_dtype scale_type = param_dtype::f32;
    float clip = 1.0f;

    params fit(std::span<const float> x, std::span<const float> /*w*/ = {}) const {
        return fit_stats(detail::stats_of(x));
    }

    /// fit from the group's statistics: its largest magnitude.
    params fit_stats(const detail::group_stats& s) const {
        const float scale = fit_params(stats_rule(), s.min, s.max, s.signed_absmax).scale;
        params p{};
        if constexpr (Rule == scale_rule::pow2_floor)
            p.scale = scale;  // a power of two, stored exactly as E8M0
        else
            p.scale = detail::store_scale(scale, scale_type, name());
        return p;
    }

    /// What fit_stats computes, for the fit kernel (scheme/fit_rules.hpp).
    fit_rule stats_rule() const noexcept {
        static_assert(Elem::emax >= 1);
        fit_rule r;
        r.bits = bits;
        r.clip = clip;
        if constexpr (Rule == scale_rule::pow2_floor) {
            r.kind = fit_kind::pow2_floor;
            r.emax = Elem::emax;
        } else {
            r.kind = fit_kind::absmax;
            r.extreme = Elem::max;
            r.scale_type = scale_type;
        }
        return r;
    }

    static constexpr minifloat_rule encode_rule() noexcept { return Elem::rule; }

    std::uint8_t encode(float x, const params& p) const noexcept {
        return static_cast<std::uint8_t>(minifloat_code(Elem::rule, x, p.scale));
    }

    float decode(std::uint8_t c, const params& p) const noexcept { return table_values[c] * p.scale; }

    std::span<const float, size> table() const noexcept { return table_values; }
    const char* name() const noexcept { return detail::element_name<Elem>(Rule == scale_rule::pow2_floor); }

    std::size_t param_bits() const noexcept {
        if constexpr (Rule == scale_rule::pow2_floor) return 8;
        return static_cast<std::size_t>(param_dtype_bits(scale_type));
    }
    std::size_t scale_bits() const noexcept { return param_bits(); }

    static constexpr std::array<float, size> table_values = detail::element_table<Elem>();
};

/// OCP MX formats (use them with blocks of 32 along a row).
using mxfp4 = minifloat<elem::fp4_e2m1, scale_rule::pow2_floor>;
using mxfp6_e3m2 = minifloat<elem::fp6_e3m2, scale_rule::pow2_floor>;
using mxfp6_e2m3 = minifloat<elem::fp6_e2m3, scale_rule::pow2_floor>;
using mxfp8_e4m3 = minifloat<elem::fp8_e4m3, scale_rule::pow2_floor>;
using mxfp8_e5m2 = minifloat<elem::fp8_e5m2, scale_rule::pow2_floor>;
/// NVFP4's elements with an amax/6 scale per block (16); the block scale's own
/// E4M3 rounding under a per-tensor FP32 scale is the double quantization's job.
using nvfp4_elements = minifloat<elem::fp4_e2m1, scale_rule::amax>;
/// FP8 E4M3 with an amax/448 scale (per channel, per tensor or per block).
using fp8_e4m3_amax = minifloat<elem::fp8_e4m3, scale_rule::amax>;

LOWBIT_NAMESPACE_END
