#pragma once
// How a scheme turns a value into a code, written once for both a single
// float and a SIMD batch of floats.
//
// Each rule is a function template over a lane type V: `float` here, an xsimd
// batch in kernels/encode.hpp, which supplies lane_ops for batches. A scheme's
// encode() is the rule on `float`; the quantizer's encode kernel is the same
// rule on batches, so the scalar reference and the vector path cannot drift
// apart. Codes come back as small integers held in V (exact in float).
//
// The rules only need the operations of lane_ops: select on a mask, the usual
// arithmetic and comparisons, round-half-even, round-half-away, truncation,
// min/max, |x|, rounding to bf16 and fp16, and a view of the bits as uint32
// lanes.

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../core/numeric.hpp"
#include "../detail/fp_contract.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace detail {

// Round half to even, independent of the floating-point environment
// (torch.round, std::rint under the default mode).
inline float round_even(float v) noexcept {
    if (!(std::fabs(v) < 8388608.0f)) return v;  // |v| >= 2^23 is integral already (or NaN)
    const float f = std::floor(v);
    const float d = v - f;  // exact: f and v share the binade or f is 0
    if (d > 0.5f) return f + 1.0f;
    if (d < 0.5f) return f;
    return std::fmod(f, 2.0f) == 0.0f ? f : f + 1.0f;
}

// v clamped to [0, hi]; NaN gives 0.
inline float clamp_code(float v, float hi) noexcept {
    if (!(v > 0.0f)) return 0.0f;
    return v > hi ? hi : v;
}

/// The operations a rule uses on a lane type. Specialised for float here and
/// for xsimd batches in kernels/encode.hpp.
template <class V>
struct lane_ops;

template <>
struct lane_ops<float> {
    using uint = std::uint32_t;
    static float select(bool m, float a, float b) noexcept { return m ? a : b; }
    static uint select(bool m, uint a, uint b) noexcept { return m ? a : b; }
    static float round_even(float v) noexcept { return detail::round_even(v); }
    static float round_away(float v) noexcept { return std::round(v); }
    static float trunc(float v) noexcept { return std::trunc(v); }
    static float min(float a, float b) noexcept { return std::fmin(a, b); }
    static float max(float a, float b) noexcept { return std::fmax(a, b); }
    static uint min(uint a, uint b) noexcept { return a < b ? a : b; }
    static float abs(float v) noexcept { return std::fabs(v); }
    static float div(float a, float b) noexcept { return a / b; }
    static bool is_inf(float v) noexcept { return std::isinf(v); }
    static bool any(bool m) noexcept { return m; }
    static uint bits(float v) noexcept { return std::bit_cast<uint>(v); }
    static float from_bits(uint v) noexcept { return std::bit_cast<float>(v); }
    static float round_bf16(float v) noexcept { return bf16_to_float(float_to_bf16(v)); }
    static float round_f16(float v) noexcept { return fp16_to_float(float_to_fp16(v)); }
    static float to_float(uint v) noexcept { return static_cast<float>(v); }
    static float clamp_code(float v, float hi) noexcept { return detail::clamp_code(v, hi); }
};

}  // namespace detail

LOWBIT_SIMD_WARNINGS_OFF

/// An affine scheme's encode, given a group's params:
///   round_half_even: q = clamp(clamp(round((x - bias) / scale), lo, hi) + zero, 0, max_code)
///   half_up (ggml's Q4_0 and Q4_1 rule generalised):
///             q = clamp(trunc((x - bias) * (1 / scale) + (zero + 0.5)), 0, max_code)
///             (a zero bias leaves Q4_0's x * (1 / scale) unchanged bit for bit)
///   half_away (ggml's Q8_0 rule generalised):
///             q = clamp(clamp(round_half_away((x - bias) * (1 / scale)), lo, hi) + zero, 0, max_code)
///             (a NaN product, 0 times an infinite 1 / scale, gives code 0)
/// A zero scale rounds to 0 (half_up, half_away: 1 / scale is taken as 0).
///
/// bf16_steps (round_half_even only; torchao's rule on bf16 weights, where
/// each torch op rounds its result to bf16): x, x - bias and the quotient are
/// each rounded to bf16 before the quotient is rounded to an integer.
///
/// ggml_cast (half_up, half_away): a nonzero scale below 2^-128 has an
/// infinite 1 / scale, so every product is +-Inf or NaN, which ggml turns
/// into an integer with C's (int8_t) cast: undefined in C, and in practice
/// the target's conversion. The codes are then what ggml built for this
/// target writes: on x86 every such conversion is INT_MIN, whose low byte is
/// 0 (half_up: code 0; half_away: the integer 0, code `zero`); AArch64
/// saturates (+Inf: INT_MAX, low byte 0xFF; -Inf: INT_MIN; NaN: 0), which is
/// half_up's clamp as it stands and, for half_away, code zero - 1 (int8 -1)
/// for +Inf and `zero` otherwise (clamped to [0, max_code]). Every such code
/// decodes to 0 under the stored scale (its fp16 is 0), so only the bytes
/// depend on this.
struct affine_rule {
    bool half_up = false;
    float lo = -INFINITY, hi = INFINITY;  ///< bounds of the rounded value before the zero-point is added
    float max_code = 255.0f;
    bool half_away = false;
    bool ggml_cast = false;
    bool bf16_steps = false;
};

/// 1 / scale, and 0 for a zero scale: what the rules multiply by. A kernel
/// computes it once per group and passes it in.
template <class V, class Ops = detail::lane_ops<V>>
LOWBIT_FORCE_INLINE V scale_inverse(V scale) noexcept {
    const auto nonzero = scale != V(0.0f);
    return Ops::select(nonzero, Ops::div(V(1.0f), Ops::select(nonzero, scale, V(1.0f))), V(0.0f));
}

/// `inv` is scale_inverse(scale).
template <class V, class Ops = detail::lane_ops<V>>
LOWBIT_FORCE_INLINE V affine_code(const affine_rule& r, V x, V scale, V zero, V bias, V inv) noexcept {
    const auto nonzero = scale != V(0.0f);
    if (r.half_up || r.half_away) {
        V q;
        if (r.half_up) {
            const V t = detail::unfused((x - bias) * inv) + (zero + V(0.5f));
            q = Ops::clamp_code(Ops::trunc(t), r.max_code);
        } else {
            // The product rounded on its own (round_away subtracts from it);
            // clamped by selects, which keep a NaN for clamp_code to make 0.
            V v = Ops::round_away(detail::unfused((x - bias) * inv));
            v = Ops::select(v < V(r.lo), V(r.lo), v);
            v = Ops::select(v > V(r.hi), V(r.hi), v);
            q = Ops::clamp_code(v + zero, r.max_code);
        }
        if (r.ggml_cast) {
            const auto overflow = Ops::is_inf(inv);
            if (Ops::any(overflow)) {  // rare: the scale is below 2^-128
#if defined(__aarch64__)
                if (!r.half_up) {
                    const V c = Ops::select((x - bias) * inv > V(0.0f), zero - V(1.0f), zero);
                    q = Ops::select(overflow, Ops::clamp_code(c, r.max_code), q);
                }
#else
                q = Ops::select(overflow, r.half_up ? V(0.0f) : Ops::clamp_code(zero, r.max_code), q);
#endif
            }
        }
        return q;
    }
    V q;
    if (r.bf16_steps) {
        const V d = Ops::round_bf16(Ops::round_bf16(x) - bias);
        q = Ops::round_even(Ops::round_bf16(Ops::div(d, Ops::select(nonzero, scale, V(1.0f)))));
    } else {
        q = Ops::round_even(Ops::div(x - bias, Ops::select(nonzero, scale, V(1.0f))));
    }
    q = Ops::select(nonzero, q, V(0.0f));
    q = Ops::min(Ops::max(q, V(r.lo)), V(r.hi)) + zero;
    return Ops::clamp_code(q, r.max_code);
}

template <class V, class Ops = detail::lane_ops<V>>
LOWBIT_FORCE_INLINE V affine_code(const affine_rule& r, V x, V scale, V zero, V bias) noexcept {
    return affine_code<V, Ops>(r, x, scale, zero, bias, scale_inverse<V, Ops>(scale));
}

/// A table of at most 16 values searched by counting thresholds:
/// v = x * (1 / scale) (x / scale when 1 / scale overflows; 0 for a zero
/// scale), for a sign-magnitude table v = |v| with the sign code added for
/// v < 0, then code = first + the steps of every threshold v lies past.
/// plain_reciprocal: v = x * (1 / scale) as computed, bitsandbytes' CUDA
/// kernels' arithmetic: a zero scale makes every v NaN (0 * Inf), which
/// passes no threshold (code `first`), and an overflowing 1 / scale sends
/// every nonzero x to an end code.
/// Threshold k is passed when v > above[k]: a threshold t that an input
/// equal to it passes (ties to the upper value) is stored as the float just
/// below t, since v >= t and v > nextafter(t, -inf) agree for every v.
/// Unused entries are +inf (never passed). The thresholds ascend, so the
/// codes of consecutive intervals telescope: step[k] = code past threshold k
/// minus the code before it.
struct threshold_rule {
    static constexpr std::size_t max_bounds = 15;
    std::size_t count = 0;
    float above[max_bounds] = {INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY,
                               INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY, INFINITY};
    float step[max_bounds] = {};
    float first = 0.0f;
    float sign_code = 0.0f;  ///< 0: not a sign-magnitude table
    bool unit_steps = false;  ///< every step is 1 (codes ascend with the values): code = first + thresholds passed
    bool plain_reciprocal = false;
};

/// The rule whose code is code_of_count[number of `bounds` strictly below v]
/// (bounds ascending strictly, at most 15; code_of_count has bounds.size() + 1
/// entries), taken on |v| with `sign_code` added for v < 0 when it is nonzero.
inline threshold_rule counting_rule(const float* bounds, std::size_t count, const std::uint8_t* code_of_count,
                                    std::uint8_t sign_code = 0) noexcept {
    threshold_rule r;
    r.count = count < threshold_rule::max_bounds ? count : threshold_rule::max_bounds;
    r.first = code_of_count[0];
    r.unit_steps = true;
    for (std::size_t k = 0; k < r.count; ++k) {
        r.above[k] = bounds[k];
        r.step[k] = static_cast<float>(code_of_count[k + 1]) - static_cast<float>(code_of_count[k]);
        r.unit_steps = r.unit_steps && r.step[k] == 1.0f;
    }
    r.sign_code = sign_code;
    return r;
}

/// The code of an already scaled value v (threshold_code after its scaling):
/// what bitsandbytes' 4-bit kernels apply to their own x * (1 / absmax).
/// Entries from N on are not looked at (N >= t.count).
template <class V, class Ops = detail::lane_ops<V>, std::size_t N = threshold_rule::max_bounds>
LOWBIT_FORCE_INLINE V threshold_count(const threshold_rule& t, V v) noexcept {
    static_assert(N <= threshold_rule::max_bounds);
    V code(t.first);
    if (t.sign_code != 0.0f) {
        code = code + Ops::select(v < V(0.0f), V(t.sign_code), V(0.0f));
        v = Ops::abs(v);
    }
    if (N == threshold_rule::max_bounds && t.unit_steps) {
        // The thresholds ascend (unused entries +inf), so those v passes are
        // a prefix: count them by bisection, 4 compares and 11 selects in
        // place of 15 compares and adds (nf4's encode, L1-resident:
        // 1 400 -> 2 100 Mw/s, AVX-512, EPYC 2.6 GHz).
        const auto& a = t.above;
        const auto m8 = v > V(a[7]);
        const auto m4 = v > Ops::select(m8, V(a[11]), V(a[3]));
        const auto m2 = v > Ops::select(m8, Ops::select(m4, V(a[13]), V(a[9])), Ops::select(m4, V(a[5]), V(a[1])));
        const auto m1 = v > Ops::select(m8,
                                        Ops::select(m4, Ops::select(m2, V(a[14]), V(a[12])),
                                                    Ops::select(m2, V(a[10]), V(a[8]))),
                                        Ops::select(m4, Ops::select(m2, V(a[6]), V(a[4])),
                                                    Ops::select(m2, V(a[2]), V(a[0]))));
        return (code + Ops::select(m8, V(8.0f), V(0.0f))) + (Ops::select(m4, V(4.0f), V(0.0f)) +
                                                             (Ops::select(m2, V(2.0f), V(0.0f)) +
                                                              Ops::select(m1, V(1.0f), V(0.0f))));
    }
    // All entries looked at, a fixed count, unrolled: unused ones never pass.
    // Three partial sums (codes are small integers, so the order is exact).
    V part[3] = {code, V(0.0f), V(0.0f)};
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 15
#endif
    for (std::size_t k = 0; k < N; ++k)
        part[k % 3] = part[k % 3] + Ops::select(v > V(t.above[k]), V(t.step[k]), V(0.0f));
    return part[0] + (part[1] + part[2]);
}

/// `inv` is 1 / scale as computed (infinite for a zero or tiny scale); a
/// kernel computes it once per group. Entries from N on are not looked at.
template <class V, class Ops = detail::lane_ops<V>, std::size_t N = threshold_rule::max_bounds>
LOWBIT_FORCE_INLINE V threshold_code(const threshold_rule& t, V x, V scale, V inv) noexcept {
    // x * (1 / scale) as computed (plain_reciprocal); the guarded rule then
    // mends the lanes whose 1 / scale is infinite (a zero or tiny scale),
    // which are rare, so the common path has no select.
    V v = x * inv;
    const auto special = Ops::is_inf(inv);
    if (Ops::any(special) && !t.plain_reciprocal) {
        const auto nonzero = scale != V(0.0f);
        v = Ops::select(special, Ops::div(x, Ops::select(nonzero, scale, V(1.0f))), v);
        v = Ops::select(nonzero, v, V(0.0f));
    }
    return threshold_count<V, Ops, N>(t, v);
}

template <class V, class Ops = detail::lane_ops<V>>
LOWBIT_FORCE_INLINE V threshold_code(const threshold_rule& t, V x, V scale) noexcept {
    return threshold_code<V, Ops>(t, x, scale, Ops::div(V(1.0f), scale));
}

/// A minifloat element with `mbits` mantissa bits and exponent bias `bias`:
/// v = x / scale (0 for a zero scale) rounded to nearest, ties to the even
/// code, into subnormals, finite overflow and Inf saturating to the largest
/// magnitude code `max_magnitude`, the sign in bit `sign_bit` (kept for zero
/// results). Inputs are finite. What core/numeric.hpp's float_to_fp8_e4m3
/// (saturating), float_to_fp6_* and float_to_fp4_e2m1 compute.
struct minifloat_rule {
    int mbits = 1, bias = 1;
    std::uint32_t max_magnitude = 7;
    int sign_bit = 3;
};

template <class V, class Ops = detail::lane_ops<V>>
LOWBIT_FORCE_INLINE V minifloat_code(const minifloat_rule& m, V x, V scale) noexcept {
    using U = typename Ops::uint;
    const auto nonzero = scale != V(0.0f);
    const V v = Ops::select(nonzero, Ops::div(x, Ops::select(nonzero, scale, V(1.0f))), V(0.0f));
    const U b = Ops::bits(v);
    const U ax = b & U(0x7FFFFFFFu);
    const int drop = 23 - m.mbits;
    // Normal results: rebias, round the dropped mantissa bits in place (a
    // carry bumps the exponent, which is right), shift out.
    U n = ax - U(static_cast<std::uint32_t>(127 - m.bias) << 23);
    n = n + (U((1u << (drop - 1)) - 1u) + ((n >> drop) & U(1u)));
    n = n >> drop;
    // Subnormal results: scale the magnitude to units of the smallest
    // subnormal (exact: a power of two up) and let the float addition of
    // 2^23 round it half-even to an integer held in the low mantissa bits.
    const float unit = std::bit_cast<float>(static_cast<std::uint32_t>(127 + m.bias + m.mbits - 1) << 23);
    const V scaled = Ops::from_bits(ax) * V(unit) + V(8388608.0f);
    const U s = Ops::bits(scaled) - U(0x4B000000u);
    const U min_normal(static_cast<std::uint32_t>(128 - m.bias) << 23);
    U code = Ops::min(Ops::select(ax >= min_normal, n, s), U(m.max_magnitude));
    code = code | ((b >> 31) << m.sign_bit);
    return Ops::to_float(code);
}

/// The value minifloat_code's code `c` stands for, in units of the scale,
/// for magnitudes up to m.max_magnitude (the codes above, Inf and NaN, are
/// the caller's): 2^(e - bias) * (1 + f / 2^mbits) built as float32 bits, or
/// f * 2^(1 - bias - mbits) for e = 0, the sign bit copied. Exact: every
/// value is a float32 normal or a small integer times a power of two.
template <class V, class Ops = detail::lane_ops<V>>
LOWBIT_FORCE_INLINE V minifloat_value(const minifloat_rule& m, typename Ops::uint c) noexcept {
    using U = typename Ops::uint;
    const U mag = c & U((1u << m.sign_bit) - 1u);
    const V magf = Ops::to_float(mag);
    const V normal = Ops::from_bits((mag << (23 - m.mbits)) + U(static_cast<std::uint32_t>(127 - m.bias) << 23));
    const V sub = magf * V(std::bit_cast<float>(static_cast<std::uint32_t>(128 - m.bias - m.mbits) << 23));
    const V v = Ops::select(magf < V(static_cast<float>(1u << m.mbits)), sub, normal);
    return Ops::from_bits(Ops::bits(v) | ((c >> m.sign_bit) << 31));
}

namespace detail {

/// Whether minifloat_value with `m` gives table[c] for every code c of
/// `bits` bits up to m.max_magnitude (kernels look the others up): a rule
/// that does not is no description of the table.
inline bool minifloat_matches(const minifloat_rule& m, const float* table, int bits) noexcept {
    if (m.mbits < 1 || m.mbits >= bits - 1 || m.sign_bit != bits - 1 || m.bias < 0 || m.bias > 126) return false;
    for (std::uint32_t c = 0; c < (1u << bits); ++c)
        if ((c & ((1u << m.sign_bit) - 1u)) <= m.max_magnitude &&
            std::bit_cast<std::uint32_t>(minifloat_value<float>(m, c)) != std::bit_cast<std::uint32_t>(table[c]))
            return false;
    return true;
}

}  // namespace detail

LOWBIT_SIMD_WARNINGS_ON

LOWBIT_NAMESPACE_END
