#pragma once
// Table schemes: each code indexes a table of values, x ~= table[q] * scale.
// Ready-made tables: bitsandbytes NF4 and FP4, ggml IQ4_NL, the bitsandbytes
// 8-bit dynamic map; any user table of up to 2^Bits values.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "../core/error.hpp"
#include "affine.hpp"
#include "concepts.hpp"

LOWBIT_NAMESPACE_BEGIN

/// How a codebook's fit picks the group scale.
enum class codebook_scale : std::uint8_t {
    absmax,      ///< scale = max|x| / max|table| (bitsandbytes: the block absmax for tables in [-1, 1])
    signed_max,  ///< scale = m / t, m the element of largest |x| and t the table value of largest |t|,
                 ///< both signed, so m lands exactly on t (ggml IQ4_NL: d = max / kvalues[0])
};

/// Which code an input exactly halfway between two neighbouring table values gets.
enum class codebook_ties : std::uint8_t { lower_code, higher_code };

/// How encode scales a value by its group's scale.
enum class codebook_reciprocal : std::uint8_t {
    guarded,  ///< x * (1 / scale); x / scale where 1 / scale overflows; a zero scale codes every x as 0.0
    plain,    ///< x * (1 / scale) as computed, as bitsandbytes' CUDA kernels do: a zero scale makes
              ///< 0 * Inf = NaN (the lowest code of a threshold tree: NF4 code 0, FP4 code 0; the
              ///< dynamic map's search ends at code 0) and an overflowing 1 / scale sends every
              ///< nonzero x to an end code
};

/// Smallest Bits whose codes can index `entries` table values.
constexpr int codebook_bits(std::size_t entries) noexcept {
    int b = 1;
    while ((std::size_t{1} << b) < entries) ++b;
    return b;
}

/// A table of up to 2^Bits values with a per-group scale.
///
/// The table may be in any order and may repeat values; codes past the
/// entries given decode to 0 and are never produced. encode scales by the
/// reciprocal (x * (1/scale), a float32 reciprocal-multiply as bitsandbytes
/// does) and picks the nearest table value. Exact midpoints go to the lower
/// code unless the table is built with codebook_ties::higher_code; among repeated values the lowest code is used.
/// A zero scale (an all-zero group) encodes every input as the table value
/// nearest 0 and decodes to 0.
///
/// Sign-magnitude tables (bitsandbytes FP4) are built with sign_magnitude():
/// the magnitude is looked up against explicit ascending thresholds with
/// strict '>' (ties to the smaller magnitude) and the sign bit is set for
/// x < 0.
///
/// fit ignores importance weights (no search yet). The stored scale is
/// rounded to `scale_type`; `clip` shrinks the maximum before the scale is
/// computed.
template <int Bits>
class codebook {
    static_assert(Bits >= 1 && Bits <= 8, "codebook: Bits must be 1..8");

public:
    using params = scaled_params;
    static constexpr int bits = Bits;
    static constexpr std::size_t size = std::size_t{1} << Bits;
    static constexpr kernel_family family = kernel_family::table;

    codebook_scale scale_rule = codebook_scale::absmax;
    param_dtype scale_type = param_dtype::f32;
    float clip = 1.0f;

    /// An evenly spaced table over [-1, 1] (code c -> -1 + 2c / (2^Bits - 1)).
    codebook() {
        std::array<float, size> v{};
        for (std::size_t c = 0; c < size; ++c)
            v[c] = -1.0f + 2.0f * static_cast<float>(c) / static_cast<float>(size - 1);
        build(v, "codebook-uniform");
    }

    /// A user table: 1..2^Bits finite values, in any order. `name` must outlive the codebook.
    explicit codebook(std::span<const float> values, const char* name = "codebook",
                      codebook_ties tie_rule = codebook_ties::lower_code)
        : ties_(tie_rule) {
        if (values.empty() || values.size() > size)
            LOWBIT_THROW(errc::invalid_argument, "codebook<" + std::to_string(Bits) + ">: a table of " +
                                                     std::to_string(values.size()) + " values (need 1.." +
                                                     std::to_string(size) + ")");
        for (std::size_t i = 0; i < values.size(); ++i)
            if (!std::isfinite(values[i]))
                LOWBIT_THROW(errc::non_finite, "codebook: table value " + std::to_string(i) + " is not finite");
        build(values, name);
    }

    /// A table whose decision thresholds are given rather than computed (the
    /// owner's literal constants, e.g. bitsandbytes' NF4 tree): `bounds` are
    /// ascending, one between each pair of consecutive distinct values, and an
    /// input equal to a threshold takes the smaller value (strict '>').
    static codebook with_thresholds(std::span<const float> values, std::span<const float> bounds,
                                    const char* name) {
        codebook cb(values, name);
        cb.set_bounds(bounds, "codebook::with_thresholds");
        return cb;
    }

    /// A sign-magnitude table: values[c | sign_bit] == -values[c] for every code c
    /// without the sign bit, and `bounds` are the ascending decision thresholds
    /// between consecutive distinct magnitudes of the codes without the sign bit.
    static codebook sign_magnitude(std::span<const float> values, std::span<const float> bounds,
                                   std::uint8_t sign_bit, const char* name) {
        codebook cb(values, name);
        if (values.size() != size || sign_bit == 0 || (sign_bit & (sign_bit - 1)) != 0 || sign_bit >= size)
            LOWBIT_THROW(errc::invalid_argument, "codebook::sign_magnitude: needs a full table and one sign bit");
        std::array<float, size> mags{};
        std::size_t n = 0;
        for (std::size_t c = 0; c < size; ++c) {
            if (c & sign_bit) continue;
            if (!(values[c | sign_bit] == -values[c]) || values[c] < 0.0f)
                LOWBIT_THROW(errc::invalid_argument, "codebook::sign_magnitude: code " + std::to_string(c) +
                                                         " and its negative do not mirror");
            mags[n++] = values[c];
        }
        cb.index(std::span<const float>(mags.data(), n), sign_bit);
        cb.sign_bit_ = sign_bit;
        cb.set_bounds(bounds, "codebook::sign_magnitude");
        return cb;
    }

    params fit(std::span<const float> x, std::span<const float> /*w*/ = {}) const {
        return fit_stats(detail::stats_of(x));
    }

    /// fit from the group's statistics: its element of largest magnitude
    /// (+0 for an all-zero group).
    params fit_stats(const detail::group_stats& s) const {
        params p{};
        p.scale = detail::store_scale(fit_params(stats_rule(), s.min, s.max, s.signed_absmax).scale, scale_type, name_);
        return p;
    }

    /// What fit_stats computes, for the fit kernel (scheme/fit_rules.hpp).
    fit_rule stats_rule() const noexcept {
        fit_rule r;
        r.kind = scale_rule == codebook_scale::absmax ? fit_kind::absmax : fit_kind::signed_absmax;
        r.bits = bits;
        r.clip = clip;
        r.scale_type = scale_type;
        r.extreme = extreme_;
        return r;
    }

    std::uint8_t encode(float x, const params& p) const noexcept {
        if (has_rule_) return static_cast<std::uint8_t>(threshold_code(rule_, x, p.scale));
        float v = 0.0f;
        if (rule_.plain_reciprocal) {
            v = x * (1.0f / p.scale);
        } else if (p.scale != 0.0f) {
            const float inv = 1.0f / p.scale;
            v = std::isinf(inv) ? x / p.scale : x * inv;
        }
        if (sign_bit_) {
            const bool negative = v < 0.0f;
            const std::uint8_t c = sorted_code_[search(negative ? -v : v)];
            return negative ? static_cast<std::uint8_t>(c | sign_bit_) : c;
        }
        return sorted_code_[search(v)];
    }

    float decode(std::uint8_t c, const params& p) const noexcept { return values_[c] * p.scale; }

    std::span<const float, size> table() const noexcept { return values_; }
    /// The threshold-counting form of encode, for the encode kernel; null for
    /// a table of more than 16 distinct values (or magnitudes), which encode
    /// searches instead.
    const threshold_rule* encode_rule() const noexcept { return has_rule_ ? &rule_ : nullptr; }
    codebook_ties ties() const noexcept { return ties_; }
    codebook_reciprocal reciprocal() const noexcept {
        return rule_.plain_reciprocal ? codebook_reciprocal::plain : codebook_reciprocal::guarded;
    }
    /// Chooses encode's scaling (guarded by default).
    codebook& set_reciprocal(codebook_reciprocal r) noexcept {
        rule_.plain_reciprocal = r == codebook_reciprocal::plain;
        return *this;
    }
    const char* name() const noexcept { return name_; }
    std::size_t entries() const noexcept { return entries_; }
    /// The decision thresholds in ascending order (between consecutive distinct
    /// values, or magnitudes for a sign-magnitude table).
    std::span<const float> thresholds() const noexcept { return {bounds_.data(), unique_ ? unique_ - 1 : 0}; }

    std::size_t param_bits() const noexcept { return static_cast<std::size_t>(param_dtype_bits(scale_type)); }
    std::size_t scale_bits() const noexcept { return param_bits(); }

private:
    std::array<float, size> values_{};        // decode table, by code
    std::array<float, size> sorted_{};        // distinct searchable values, ascending
    std::array<std::uint8_t, size> sorted_code_{};
    std::array<float, size> bounds_{};        // bounds_[i] separates sorted_[i] and sorted_[i + 1]
    std::array<bool, size> tie_up_{};         // an input equal to bounds_[i] takes sorted_[i + 1]
    std::size_t entries_ = 0, unique_ = 0;
    float extreme_ = 1.0f;                    // table value of largest magnitude, first on ties
    std::uint8_t sign_bit_ = 0;
    threshold_rule rule_{};
    bool has_rule_ = false;
    codebook_ties ties_ = codebook_ties::lower_code;
    const char* name_ = "codebook";

    void build(std::span<const float> values, const char* name) {
        name_ = name;
        entries_ = values.size();
        values_.fill(0.0f);
        std::copy(values.begin(), values.end(), values_.begin());
        extreme_ = values[0];
        for (float v : values)
            if (std::fabs(v) > std::fabs(extreme_)) extreme_ = v;
        if (extreme_ == 0.0f) extreme_ = 1.0f;  // an all-zero table: any scale decodes to 0
        index(values, 0);
    }

    // Sorts the searchable values (codes 0..n-1, skipping `skip_bit` codes for
    // magnitude tables) and sets midpoint thresholds.
    void index(std::span<const float> vals, std::uint8_t skip_bit) {
        std::array<std::uint8_t, size> order{};
        std::size_t n = 0;
        for (std::size_t c = 0, k = 0; c < size && k < vals.size(); ++c) {
            if (c & skip_bit) continue;
            order[n++] = static_cast<std::uint8_t>(c);
            ++k;
        }
        // Value of code order[i] is vals[i]; sort positions by (value, code).
        std::array<std::size_t, size> pos{};
        for (std::size_t i = 0; i < n; ++i) pos[i] = i;
        std::stable_sort(pos.begin(), pos.begin() + static_cast<std::ptrdiff_t>(n),
                         [&](std::size_t a, std::size_t b) { return vals[a] < vals[b]; });
        unique_ = 0;
        for (std::size_t i = 0; i < n; ++i) {
            const float v = vals[pos[i]];
            if (unique_ && v == sorted_[unique_ - 1]) continue;  // keep the lowest code of a repeat
            sorted_[unique_] = v;
            sorted_code_[unique_] = order[pos[i]];
            ++unique_;
        }
        for (std::size_t i = 0; i + 1 < unique_; ++i) {
            // (a + b) / 2 rounded once: the float nearest the true midpoint.
            bounds_[i] = static_cast<float>((static_cast<double>(sorted_[i]) + sorted_[i + 1]) * 0.5);
            const bool upper_code_lower = sorted_code_[i + 1] < sorted_code_[i];
            tie_up_[i] = ties_ == codebook_ties::lower_code ? upper_code_lower : !upper_code_lower;
        }
        make_rule();
    }

    // The counting form of search(): equal to it when the thresholds ascend
    // strictly (then at most one equals an input, the one lower_bound finds).
    void make_rule() noexcept {
        const bool plain = rule_.plain_reciprocal;
        rule_ = threshold_rule{};
        rule_.plain_reciprocal = plain;
        has_rule_ = false;
        if (unique_ == 0 || unique_ - 1 > threshold_rule::max_bounds) return;
        for (std::size_t i = 0; i + 2 < unique_; ++i)
            if (!(bounds_[i] < bounds_[i + 1])) return;
        float above[threshold_rule::max_bounds];
        for (std::size_t i = 0; i + 1 < unique_; ++i)
            above[i] = tie_up_[i] ? std::nextafter(bounds_[i], -INFINITY) : bounds_[i];
        rule_ = counting_rule(above, unique_ - 1, sorted_code_.data(), sign_bit_);
        rule_.plain_reciprocal = plain;
        has_rule_ = true;
    }

    void set_bounds(std::span<const float> bounds, const char* who) {
        if (bounds.size() + 1 != unique_ || !std::is_sorted(bounds.begin(), bounds.end()))
            LOWBIT_THROW(errc::invalid_argument,
                         std::string(who) + ": need " + std::to_string(unique_ - 1) + " ascending thresholds");
        for (std::size_t i = 0; i < bounds.size(); ++i) {
            if (!(bounds[i] >= sorted_[i] && bounds[i] <= sorted_[i + 1]))
                LOWBIT_THROW(errc::invalid_argument,
                             std::string(who) + ": threshold " + std::to_string(i) + " is outside its interval");
            bounds_[i] = bounds[i];
            tie_up_[i] = false;
        }
        make_rule();
    }

    std::size_t search(float v) const noexcept {
        const std::size_t nb = unique_ - 1;
        const std::size_t i = static_cast<std::size_t>(
            std::lower_bound(bounds_.begin(), bounds_.begin() + static_cast<std::ptrdiff_t>(nb), v) - bounds_.begin());
        if (i < nb && v == bounds_[i] && tie_up_[i]) return i + 1;
        return i;
    }

};

namespace detail {

// bitsandbytes' NF4 values, code order (csrc nf4_dequantization_lut).
inline constexpr std::array<float, 16> nf4_values = {
    -1.0f,
    -0.6961928009986877f,
    -0.5250730514526367f,
    -0.39491748809814453f,
    -0.28444138169288635f,
    -0.18477343022823334f,
    -0.09105003625154495f,
    0.0f,
    0.07958029955625534f,
    0.16093020141124725f,
    0.24611230194568634f,
    0.33791524171829224f,
    0.44070982933044434f,
    0.5626170039176941f,
    0.7229568362236023f,
    1.0f,
};

// bitsandbytes FP4: raw E2M1-like values (bias 2, sign in bit 3) over 12, the
// largest, divided in float32 as get_4bit_type does.
inline constexpr std::array<float, 16> bnb_fp4_values = {
    0.0f,          0.0625f / 12.0f,  8.0f / 12.0f,  12.0f / 12.0f, 4.0f / 12.0f,  6.0f / 12.0f,
    2.0f / 12.0f,  3.0f / 12.0f,     -0.0f,         -0.0625f / 12.0f, -8.0f / 12.0f, -12.0f / 12.0f,
    -4.0f / 12.0f, -6.0f / 12.0f,    -2.0f / 12.0f, -3.0f / 12.0f,
};

// The magnitude thresholds of bitsandbytes' dQuantizeFP4, as written there
// (0.583333 is truncated, not the midpoint 7/12), ascending.
inline constexpr std::array<float, 7> bnb_fp4_bounds = {
    0.00260417f, 0.0859375f, 0.20833333f, 0.29166667f, 0.4166667f, 0.583333f, 0.8333333f,
};

// dQuantizeNF4's thresholds, ascending. Four of them differ by an ulp from the
// float32 midpoints of the values (they were computed before rounding to float32).
inline constexpr std::array<float, 15> nf4_bounds = {
    -0.8480964004993439f, -0.6106329262256622f, -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f, 0.2035212516784668f, 0.2920137718319893f, 0.3893125355243683f,
    0.5016634166240692f, 0.6427869200706482f, 0.8614784181118011f,
};

// ggml kvalues_iq4nl.
inline constexpr std::array<float, 16> iq4nl_values = {
    -127.0f, -104.0f, -83.0f, -65.0f, -49.0f, -35.0f, -22.0f, -10.0f,
    1.0f,    13.0f,   25.0f,  38.0f,  53.0f,  69.0f,  89.0f,  113.0f,
};

// torch.linspace(start, end, steps, dtype=float32) on the CPU: the first half
// counts up from start, the second half down from end, in float32, and each
// element is one fused multiply-add, as torch's AVX2/AVX-512 kernels compile
// it. That is what reproduces the dynamic map bitsandbytes stores (rounding
// the product first changes 42 of the 256 signed values by an ulp).
inline void linspace_f32(float start, float end, int steps, float* out) noexcept {
    const float step = (end - start) / static_cast<float>(steps - 1);
    const int halfway = steps / 2;
    for (int i = 0; i < steps; ++i)
        out[i] = i < halfway ? std::fma(step, static_cast<float>(i), start)
                             : std::fma(-step, static_cast<float>(steps - i - 1), end);
}

/// bitsandbytes' dQuantize (CUDA, 8-bit): a 7-step binary search from code
/// 127 over an ascending 256-entry map, then a midpoint test against the last
/// bracketing codes (an input on a midpoint keeps the search's final pivot;
/// NaN ends at code 0).
/// The bracketing values are always the map's entries at the bracketing
/// codes (codes 0 and 255 where the search never moved that side), so only
/// codes are carried, by masks: no branch on the data (the search's seven
/// compares mispredict half the time). N searches run side by side, so that
/// their chains of dependent loads overlap: the second level of nf4-b64-dq
/// (688 K scales) 31 ns a search (branches) -> 16 (N = 1) -> 9 (N = 8) -> 6
/// (N = 16), EPYC 2.6 GHz.
template <std::size_t N>
inline void dquantize_search(const std::array<float, 256>& map, const float* x, std::uint8_t* out) noexcept {
    int pivot[N], upper_pivot[N], lower_pivot[N];
    for (std::size_t n = 0; n < N; ++n) pivot[n] = 127, upper_pivot[n] = 255, lower_pivot[n] = 0;
    for (int step = 64; step > 0; step >>= 1)
        for (std::size_t n = 0; n < N; ++n) {
            // All ones where x is above the pivot's value (masks, since the
            // compiler turns plain selects into branches).
            const int above = -static_cast<int>(x[n] > map[static_cast<std::size_t>(pivot[n])]);
            lower_pivot[n] = (pivot[n] & above) | (lower_pivot[n] & ~above);
            upper_pivot[n] = (upper_pivot[n] & above) | (pivot[n] & ~above);
            pivot[n] = pivot[n] - step + (2 * step & above);
        }
    for (std::size_t n = 0; n < N; ++n) {
        const float val = map[static_cast<std::size_t>(pivot[n])];
        const float upper = map[static_cast<std::size_t>(upper_pivot[n])];
        const float lower = map[static_cast<std::size_t>(lower_pivot[n])];
        const int up = x[n] > (upper + val) * 0.5f ? upper_pivot[n] : pivot[n];
        const int down = x[n] < (lower + val) * 0.5f ? lower_pivot[n] : pivot[n];
        out[n] = static_cast<std::uint8_t>(x[n] > val ? up : down);
    }
}

inline std::uint8_t dquantize_search(const std::array<float, 256>& map, float x) noexcept {
    std::uint8_t c;
    dquantize_search<1>(map, &x, &c);
    return c;
}

}  // namespace detail

/// bitsandbytes NF4: the 16 normal-float values, absmax scale, x * (1/absmax),
/// then dQuantizeNF4's midpoint thresholds with strict '>' (an input on a
/// threshold takes the lower code). An all-zero block stores absmax 0 and gets
/// code 7 (0.0), as bitsandbytes' PyTorch path does.
inline codebook<4> nf4() { return codebook<4>::with_thresholds(detail::nf4_values, detail::nf4_bounds, "nf4"); }

/// bitsandbytes FP4 (its own layout: sign in bit 3, codes 0..7 = 0, 1/192,
/// 2/3, 1, 1/3, 1/2, 1/6, 1/4), absmax scale, dQuantizeFP4's thresholds on |x|
/// (ties to the smaller magnitude), sign bit set for x < 0. All-zero block: code 0.
inline codebook<4> fp4() {
    return codebook<4>::sign_magnitude(detail::bnb_fp4_values, detail::bnb_fp4_bounds, 0x8, "fp4");
}

/// ggml IQ4_NL values (kvalues_iq4nl, stored as the integers -127..113), fp16
/// scale d = m / -127 with m the signed element of largest |x|: the first step
/// of ggml's quantize_row_iq4_nl (it then refits d by weighted least squares,
/// which this scheme does not do yet). Nearest value with ties to the higher
/// code, as ggml's best_index_int8.
inline codebook<4> iq4_nl() {
    codebook<4> cb(detail::iq4nl_values, "iq4_nl", codebook_ties::higher_code);
    cb.scale_rule = codebook_scale::signed_max;
    cb.scale_type = param_dtype::f16;
    return cb;
}

/// bitsandbytes create_dynamic_map(signed, max_exponent_bits = 7, total_bits = 8),
/// computed in float32 as torch does: for i = 0..6 the midpoints of
/// linspace(0.1, 1, n_i + 1) times float32(10^(i - 6)), with n_i = 2^i (signed,
/// both signs) or 2^(i + 1) (unsigned), plus 0 and 1.0, sorted ascending.
inline std::array<float, 256> bnb_dynamic_map(bool signed_map = true) {
    constexpr int max_exponent_bits = 7;
    constexpr double decade[max_exponent_bits] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
    std::array<float, 256> map{};
    std::size_t n = 0;
    float bounds[130];
    for (int i = 0; i < max_exponent_bits; ++i) {
        const int items = (1 << (signed_map ? i : i + 1)) + 1;
        detail::linspace_f32(0.1f, 1.0f, items, bounds);
        const float f = static_cast<float>(decade[i]);
        for (int j = 0; j + 1 < items; ++j) {
            const float mean = (bounds[j] + bounds[j + 1]) / 2.0f;
            map[n++] = f * mean;
            if (signed_map) map[n++] = -f * mean;
        }
    }
    map[n++] = 0.0f;
    map[n++] = 1.0f;
    while (n < map.size()) map[n++] = 0.0f;
    std::sort(map.begin(), map.end());
    return map;
}

/// bitsandbytes 8-bit blockwise quantization with the dynamic map: absmax
/// scale (fp32), x * (1/absmax), and the code chosen exactly as the CUDA
/// kernel's dQuantize does: a 7-step binary search from pivot 127, then a
/// midpoint test against the last bracketing codes (an input on a midpoint
/// keeps the search's final pivot). bitsandbytes' CPU path uses a lookup table
/// and can differ at bin edges. All-zero block: scale 0, code of 0.0.
class dynamic8 {
public:
    using params = scaled_params;
    static constexpr int bits = 8;
    static constexpr kernel_family family = kernel_family::table;

    param_dtype scale_type = param_dtype::f32;
    float clip = 1.0f;
    codebook_reciprocal reciprocal = codebook_reciprocal::guarded;

    dynamic8() : dynamic8(true) {}
    explicit dynamic8(bool signed_map) : map_(bnb_dynamic_map(signed_map)), signed_(signed_map) {}

    params fit(std::span<const float> x, std::span<const float> /*w*/ = {}) const {
        return fit_stats(detail::stats_of(x));
    }
    params fit_stats(const detail::group_stats& s) const {
        return params{
            detail::store_scale(fit_params(stats_rule(), s.min, s.max, s.signed_absmax).scale, scale_type, name())};
    }
    /// What fit_stats computes: the absmax rule with a table extreme of 1.
    fit_rule stats_rule() const noexcept {
        fit_rule r;
        r.kind = fit_kind::absmax;
        r.bits = bits;
        r.clip = clip;
        r.scale_type = scale_type;
        return r;
    }

    std::uint8_t encode(float x, const params& p) const noexcept { return search(scaled(x, p)); }

    /// encode on each of x into out, 16 searches side by side.
    void encode_many(std::span<const float> x, const params& p, std::uint8_t* out) const noexcept {
        constexpr std::size_t N = 16;
        std::size_t i = 0;
        for (; i + N <= x.size(); i += N) {
            float v[N];
            for (std::size_t k = 0; k < N; ++k) v[k] = scaled(x[i + k], p);
            detail::dquantize_search<N>(map_, v, out + i);
        }
        for (; i < x.size(); ++i) out[i] = encode(x[i], p);
    }

    float decode(std::uint8_t c, const params& p) const noexcept { return map_[c] * p.scale; }
    std::span<const float, 256> table() const noexcept { return map_; }
    const char* name() const noexcept { return signed_ ? "dynamic8" : "dynamic8-unsigned"; }
    bool is_signed() const noexcept { return signed_; }
    std::size_t param_bits() const noexcept { return static_cast<std::size_t>(param_dtype_bits(scale_type)); }
    std::size_t scale_bits() const noexcept { return param_bits(); }

private:
    std::array<float, 256> map_;
    bool signed_;

    std::uint8_t search(float x) const noexcept { return detail::dquantize_search(map_, x); }

    /// x in units of the scale, as encode searches for it.
    float scaled(float x, const params& p) const noexcept {
        if (reciprocal == codebook_reciprocal::plain) return x * (1.0f / p.scale);
        if (p.scale == 0.0f) return 0.0f;
        const float inv = 1.0f / p.scale;
        return std::isinf(inv) ? x / p.scale : x * inv;
    }
};

LOWBIT_NAMESPACE_END
