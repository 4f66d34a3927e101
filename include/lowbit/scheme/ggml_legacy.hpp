#pragma once
// ggml's legacy 32-block rules (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) as affine
// schemes of the generic core: quantizer<ggml_affine<...>> at per_group(32)
// gives ggml's codes and stored params bit for bit, and
// formats/ggml_convert.hpp turns the result into ggml's blocks.
//
// What makes them differ from affine<>: ggml computes d in float32, encodes
// with 1 / d from that unrounded d, and stores fp16(d) (and fp16(min)), so
// these are split schemes (split_params: encode with the float32 params,
// store the fp16 ones), and an fp16 that rounds to 0 is stored as 0, as ggml
// does (affine<>'s store_scale keeps the smallest step instead).

#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../core/view.hpp"
#include "../detail/fp_contract.hpp"
#include "affine.hpp"
#include "concepts.hpp"
#include "encode_rules.hpp"

LOWBIT_NAMESPACE_BEGIN

/// Which of ggml's legacy rules a ggml_affine scheme follows.
enum class ggml_rule : std::uint8_t {
    signed_max,  ///< Q4_0, Q5_0
    min_max,     ///< Q4_1, Q5_1
    absmax,      ///< Q8_0
};

namespace detail {

// fp16(v) as a float, as ggml stores it (0 stays 0, the sign of zero kept);
// beyond fp16's range an error, where ggml would store an infinity that its
// own ggml_validate_row_data rejects.
inline float store_ggml_half(float v, const char* who, const char* what) {
    const float r = fp16_to_float(float_to_fp16(v));
    if (!std::isfinite(r))
        LOWBIT_THROW(errc::invalid_argument, std::string(who) + ": " + what + " " + value_string(v) +
                                                 " does not fit ggml's fp16 (largest 65504)");
    return r;
}

template <int Bits, ggml_rule Rule>
struct ggml_affine_name {
    static constexpr auto value = [] {
        std::array<char, 32> s{};
        std::size_t n = 0;
        const auto put = [&](const char* p) {
            while (*p) s[n++] = *p++;
        };
        const bool q40 = Rule == ggml_rule::signed_max && (Bits == 4 || Bits == 5);
        const bool q41 = Rule == ggml_rule::min_max && (Bits == 4 || Bits == 5);
        if (q40 || q41 || (Rule == ggml_rule::absmax && Bits == 8)) {
            put("ggml-q");
            s[n++] = static_cast<char>('0' + Bits);
            put(q41 ? "_1" : "_0");
        } else {
            put("int");
            s[n++] = static_cast<char>('0' + Bits);
            put(Rule == ggml_rule::signed_max ? "-ggml-signed-max" : Rule == ggml_rule::min_max ? "-ggml-min-max"
                                                                                                : "-ggml-absmax");
        }
        return s;
    }();
};

}  // namespace detail

/// ggml's legacy rules at any width (ggml's own types: Q4_0 = <4,
/// signed_max>, Q5_0 = <5, signed_max>, Q4_1 = <4, min_max>, Q5_1 = <5,
/// min_max>, Q8_0 = <8, absmax>). With h = 2^(Bits-1), every number float32:
/// * signed_max: m = the first element of largest |x| (+0 for a group of
///   zeros), d = m / -h, q = clamp(trunc(x * (1/d) + (h + 0.5)), 0, 2^b - 1)
///   (round half up); stored scale fp16(d), zero h; x = (q - h) * d.
/// * min_max: d = (max - min) / (2^b - 1), q = clamp(trunc((x - min) *
///   (1/d) + 0.5), 0, 2^b - 1); stored scale fp16(d), bias fp16(min), zero 0;
///   x = q * d + m.
/// * absmax (Bits >= 2): d = max|x| / (h - 1), q = round_half_away(x * (1/d))
///   in [-(h-1), h-1], code q + h; stored scale fp16(d), zero h; x = (code - h) * d.
/// 1/d is 0 for d = 0; an infinite 1/d (d below 2^-128, whose fp16 is 0)
/// codes as ggml built for the target does (affine_rule::ggml_cast). The
/// scale is negative when m > 0 (signed_max), as ggml's is.
///
/// fit ignores importance weights: ggml's imatrix searches for these types
/// are algorithms, not this rule. A d or min beyond fp16's range is an error
/// (ggml would store an infinity its validation rejects).
template <int Bits, ggml_rule Rule>
struct ggml_affine {
    static_assert(Bits >= 1 && Bits <= 8, "ggml_affine: Bits must be 1..8");
    static_assert(Rule != ggml_rule::absmax || Bits >= 2, "ggml_affine: absmax needs at least 2 bits");

    using params = affine_params;
    static constexpr int bits = Bits;
    static constexpr kernel_family family = kernel_family::affine;
    static constexpr ggml_rule rule = Rule;
    static constexpr int max_code = (1 << Bits) - 1;
    /// The zero-point every group stores (the offset ggml's blocks leave implicit).
    static constexpr float zero_point = Rule == ggml_rule::min_max ? 0.0f : static_cast<float>(1 << (Bits - 1));

    params fit(std::span<const float> x, std::span<const float> /*w*/ = {}) const {
        return fit_split_stats(detail::stats_of(x)).stored;
    }
    params fit_stats(const detail::group_stats& s) const { return fit_split_stats(s).stored; }

    /// The fp16 params as stored and the float32 ones ggml encodes with.
    split_params<params> fit_split(std::span<const float> x, std::span<const float> /*w*/ = {}) const {
        return fit_split_stats(detail::stats_of(x));
    }

    split_params<params> fit_split_stats(const detail::group_stats& s) const {
        constexpr float h = static_cast<float>(1 << (Bits - 1));
        split_params<params> r;
        r.encode.zero = r.stored.zero = zero_point;
        r.encode.bias = r.stored.bias = 0.0f;
        if constexpr (Rule == ggml_rule::signed_max) {
            // ggml's scan starts from +0, so a group of zeros has m = +0 and d = -0.
            const float m = s.signed_absmax == 0.0f ? 0.0f : s.signed_absmax;
            r.encode.scale = m / -h;
        } else if constexpr (Rule == ggml_rule::min_max) {
            r.encode.scale = (s.max - s.min) / static_cast<float>(max_code);
            r.encode.bias = s.min;
            r.stored.bias = detail::store_ggml_half(s.min, name(), "minimum");
        } else {
            r.encode.scale = std::fabs(s.signed_absmax) / (h - 1.0f);
        }
        r.stored.scale = detail::store_ggml_half(r.encode.scale, name(), "scale");
        return r;
    }

    /// What encode computes, for the encode kernel (scheme/encode_rules.hpp).
    static constexpr affine_rule encode_rule() noexcept {
        affine_rule r;
        r.max_code = static_cast<float>(max_code);
        r.ggml_cast = true;
        if constexpr (Rule == ggml_rule::absmax) {
            r.half_away = true;
            r.hi = static_cast<float>((1 << (Bits - 1)) - 1);
            r.lo = -r.hi;
        } else {
            r.half_up = true;
        }
        return r;
    }

    std::uint8_t encode(float x, const params& p) const noexcept {
        return static_cast<std::uint8_t>(affine_code(encode_rule(), x, p.scale, p.zero, p.bias));
    }

    /// (q - zero) * scale, plus the bias for min_max: ggml's dequantize
    /// (no bias added where there is none, so a -0 product stays -0).
    float decode(std::uint8_t c, const params& p) const noexcept {
        const float centred = static_cast<float>(c) - p.zero;
        if constexpr (Rule == ggml_rule::min_max)
            return detail::unfused(centred * p.scale) + p.bias;
        else
            return centred * p.scale;
    }

    const char* name() const noexcept { return detail::ggml_affine_name<Bits, Rule>::value.data(); }

    /// Stored bits per group: the fp16 scale, and the fp16 minimum for min_max.
    std::size_t param_bits() const noexcept { return Rule == ggml_rule::min_max ? 32 : 16; }
    std::size_t scale_bits() const noexcept { return 16; }
};

using ggml_q4_0_scheme = ggml_affine<4, ggml_rule::signed_max>;
using ggml_q4_1_scheme = ggml_affine<4, ggml_rule::min_max>;
using ggml_q5_0_scheme = ggml_affine<5, ggml_rule::signed_max>;
using ggml_q5_1_scheme = ggml_affine<5, ggml_rule::min_max>;
using ggml_q8_0_scheme = ggml_affine<8, ggml_rule::absmax>;

LOWBIT_NAMESPACE_END
