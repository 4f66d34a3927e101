#pragma once
// The searches of ggml's K-quant, IQ4 and imatrix legacy quantizers, and the
// rounding helpers around them, written once for every instruction set.
//
// Each search fits one sub-block. It is a template on an instruction-set tag:
// on kernels::scalar its lane type is float and it is the scalar reference
// (formats/ggml_kquants.hpp, formats/ggml_blocks.hpp); on an xsimd arch the
// lane type is a batch whose lanes hold as many sub-blocks
// (kernels/ggml_quantize.hpp supplies those lanes and transposes the
// sub-blocks into them). Every lane performs ggml's float operations in
// ggml's order: sums accumulate element by element, products are kept out of
// fma (`unfused`), divisions and square roots are IEEE-exact, and where ggml
// branches both sides are computed and one is selected per lane. That makes
// the bits equal to ggml's on every ISA.
//
// Levels are returned as floats (exact small integers); the callers narrow
// them to bytes when they pack.

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "../detail/config.hpp"
#include "../detail/fp_contract.hpp"
#include "../detail/scalar_arch.hpp"
#include "ggml_types.hpp"

#if defined(__FAST_MATH__)
#warning "lowbit ggml quantizers: -ffast-math reorders float operations; bytes will differ from ggml's"
#endif

LOWBIT_NAMESPACE_BEGIN
namespace ggml::detail {

/// Below this a group counts as all zero.
inline constexpr float group_max_eps = 1e-15f;

struct signed_absmax {
    float amax = 0.0f;  ///< largest |x|
    float max = 0.0f;   ///< that element, sign kept (the first one on ties)
};

inline signed_absmax find_signed_absmax(const float* x, std::size_t n) noexcept {
    signed_absmax r;
    for (std::size_t i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > r.amax) {
            r.amax = ax;
            r.max = x[i];
        }
    }
    return r;
}

/// a * b, never fused into the add it feeds.
template <class Arch>
inline float mul_unfused(float a, float b) noexcept {
    return ::lowbit::detail::unfused(a * b);
}

/// ggml's nearest_int: round to nearest, ties to even, by letting the float
/// adder do it (adding 1.5*2^23 leaves the integer in the low mantissa bits).
/// Valid for |f| <= 2^22; outside that it returns the same bits ggml's does.
template <class Arch>
inline int round_to_int(float f) noexcept {
    const float v = ::lowbit::detail::unfused(f) + 12582912.f;
    return static_cast<int>(std::bit_cast<std::uint32_t>(v) & 0x007fffffu) - 0x00400000;
}

/// The value type of one instruction set's lanes and the operations the
/// searches use on it. The scalar tag's is float; xsimd archs' are batches
/// (kernels/ggml_quantize.hpp).
template <class Arch>
struct lanes;

template <>
struct lanes<kernels::scalar> {
    using V = float;
    using M = bool;
    static float mul(float a, float b) noexcept { return ::lowbit::detail::unfused(a * b); }
    static float div(float a, float b) noexcept { return a / b; }
    static float sqrt(float a) noexcept { return std::sqrt(a); }
    static float abs(float a) noexcept { return std::fabs(a); }
    static float round(float p) noexcept { return static_cast<float>(round_to_int<kernels::scalar>(p)); }
    /// l clamped to [lo, hi] (l is never NaN here: it comes from round).
    static float clamp(float l, float lo, float hi) noexcept {
        const float m = hi < l ? hi : l;
        return lo > m ? lo : m;
    }
    static float select(bool m, float a, float b) noexcept { return m ? a : b; }
    static bool any(bool m) noexcept { return m; }
    /// C's `a != b` (true when either is NaN).
    static bool ne(float a, float b) noexcept { return !(a == b); }
};

template <class Arch>
inline float sum_squares(const float* x, int n) noexcept {
    float s = 0;
    for (int i = 0; i < n; ++i) s = s + mul_unfused<Arch>(x[i], x[i]);
    return s;
}

/// ggml's make_qp_quants: n non-negative values (sub-block scales or mins)
/// to [0, nmax] without offset: best of 9 grids (nmax + 0.1*is)/max by
/// weighted error, then up to 5 sweeps of one-level moves. Returns the
/// least-squares scale. Runs once per super-block, so it is scalar code.
template <class Arch>
inline float make_qp(int n, int nmax, const float* x, std::uint8_t* L, const float* w) noexcept {
    float max = 0;
    for (int i = 0; i < n; ++i) max = max > x[i] ? max : x[i];
    if (max < group_max_eps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = static_cast<float>(nmax) / max;
    for (int i = 0; i < n; ++i) L[i] = static_cast<std::uint8_t>(round_to_int<Arch>(iscale * x[i]));
    const float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        const float diff = x[i] - mul_unfused<Arch>(scale, static_cast<float>(L[i]));
        best_mse = best_mse + mul_unfused<Arch>(mul_unfused<Arch>(w[i], diff), diff);
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        const float iscale_is = (mul_unfused<Arch>(0.1f, static_cast<float>(is)) + static_cast<float>(nmax)) / max;
        const float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            int l = round_to_int<Arch>(iscale_is * x[i]);
            l = nmax < l ? nmax : l;
            const float diff = x[i] - mul_unfused<Arch>(scale_is, static_cast<float>(l));
            mse = mse + mul_unfused<Arch>(mul_unfused<Arch>(w[i], diff), diff);
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = round_to_int<Arch>(iscale * x[i]);
        l = nmax < l ? nmax : l;
        L[i] = static_cast<std::uint8_t>(l);
        const float fl = static_cast<float>(l);
        sumlx = sumlx + mul_unfused<Arch>(mul_unfused<Arch>(w[i], x[i]), fl);
        suml2 = suml2 + mul_unfused<Arch>(mul_unfused<Arch>(w[i], fl), fl);
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float li = static_cast<float>(L[i]);
            float slx = sumlx - mul_unfused<Arch>(mul_unfused<Arch>(w[i], x[i]), li);
            float sl2 = suml2 - mul_unfused<Arch>(mul_unfused<Arch>(w[i], li), li);
            if (slx > 0 && sl2 > 0) {
                int new_l = round_to_int<Arch>(mul_unfused<Arch>(x[i], sl2) / slx);
                new_l = nmax < new_l ? nmax : new_l;
                if (new_l != L[i]) {
                    const float fl = static_cast<float>(new_l);
                    slx = slx + mul_unfused<Arch>(mul_unfused<Arch>(w[i], x[i]), fl);
                    sl2 = sl2 + mul_unfused<Arch>(mul_unfused<Arch>(w[i], fl), fl);
                    if (mul_unfused<Arch>(mul_unfused<Arch>(slx, slx), suml2) >
                        mul_unfused<Arch>(mul_unfused<Arch>(sumlx, sumlx), sl2)) {
                        L[i] = static_cast<std::uint8_t>(new_l);
                        sumlx = slx;
                        suml2 = sl2;
                        ++n_changed;
                    }
                }
            }
        }
        if (!n_changed) break;
    }
    return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// ---- per-lane searches -------------------------------------------------------
// (Instantiated on xsimd batches too: GCC PR 105593, see detail/config.hpp.)
LOWBIT_SIMD_WARNINGS_OFF


/// ggml's make_qkx2_quants / make_qkx3_quants with weights w: affine levels
/// in [0, nmax] with a min <= 0, searched over the grids
/// (rmin + rdelta*is + nmax)/(max - min), is = 0..nstep, each fitted by
/// weighted least squares, keeping the lowest weighted MAD (use_mad) or SSE;
/// min moves to the best fit so far and later grids start from it.
/// scale_out: the scale; min_out: -min (>= 0).
template <class Arch, int N>
inline void qkx_search(const typename lanes<Arch>::V* x, const typename lanes<Arch>::V* w,
                       typename lanes<Arch>::V* L, typename lanes<Arch>::V& scale_out,
                       typename lanes<Arch>::V& min_out, float nmax, float rmin, float rdelta, int nstep,
                       bool use_mad) noexcept {
    using O = lanes<Arch>;
    using B = typename O::V;
    const B zero(0.f);
    B mn = x[0], mx = x[0], sum_w = w[0], sum_x = O::mul(w[0], x[0]);
    for (int i = 1; i < N; ++i) {
        mn = O::select(x[i] < mn, x[i], mn);
        mx = O::select(x[i] > mx, x[i], mx);
        sum_w = sum_w + w[i];
        sum_x = sum_x + O::mul(w[i], x[i]);
    }
    mn = O::select(mn > zero, zero, mn);
    const typename O::M flat = mx <= mn;
    const B min0 = mn;
    B iscale = O::div(B(nmax), mx - mn);
    B scale = O::div(B(1.f), iscale);
    B best = zero;
    for (int i = 0; i < N; ++i) {
        L[i] = O::clamp(O::round(O::mul(iscale, x[i] - mn)), 0.f, nmax);
        B diff = (O::mul(scale, L[i]) + mn) - x[i];
        diff = use_mad ? O::abs(diff) : O::mul(diff, diff);
        best = best + O::mul(w[i], diff);
    }
    B laux[N];
    for (int is = 0; is <= nstep; ++is) {
        const B num = (B(rmin) + O::mul(B(rdelta), B(static_cast<float>(is)))) + B(nmax);
        iscale = O::div(num, mx - mn);
        B sl = zero, sl2 = zero, sxl = zero;
        for (int i = 0; i < N; ++i) {
            const B l = O::clamp(O::round(O::mul(iscale, x[i] - mn)), 0.f, nmax);
            laux[i] = l;
            const B wl = O::mul(w[i], l);
            sl = sl + wl;
            sl2 = sl2 + O::mul(wl, l);
            sxl = sxl + O::mul(wl, x[i]);
        }
        const B D = O::mul(sum_w, sl2) - O::mul(sl, sl);
        const typename O::M dpos = D > zero;
        if (!O::any(dpos)) continue;
        B ts = O::div(O::mul(sum_w, sxl) - O::mul(sum_x, sl), D);
        B tm = O::div(O::mul(sl2, sum_x) - O::mul(sl, sxl), D);
        const typename O::M mpos = tm > zero;
        tm = O::select(mpos, zero, tm);
        ts = O::select(mpos, O::div(sxl, sl2), ts);
        B cur = zero;
        for (int i = 0; i < N; ++i) {
            B diff = (O::mul(ts, laux[i]) + tm) - x[i];
            diff = use_mad ? O::abs(diff) : O::mul(diff, diff);
            cur = cur + O::mul(w[i], diff);
        }
        const typename O::M better = dpos && (cur < best);
        if (!O::any(better)) continue;
        for (int i = 0; i < N; ++i) L[i] = O::select(better, laux[i], L[i]);
        best = O::select(better, cur, best);
        scale = O::select(better, ts, scale);
        mn = O::select(better, tm, mn);
    }
    for (int i = 0; i < N; ++i) L[i] = O::select(flat, zero, L[i]);
    scale_out = O::select(flat, zero, scale);
    min_out = -O::select(flat, min0, mn);
}

/// Largest |x| and the element it came from (the first on ties), per lane.
template <class Arch, int N>
inline void signed_absmax(const typename lanes<Arch>::V* x, typename lanes<Arch>::V& amax,
                          typename lanes<Arch>::V& max) noexcept {
    using O = lanes<Arch>;
    using B = typename O::V;
    amax = B(0.f);
    max = B(0.f);
    for (int i = 0; i < N; ++i) {
        const B ax = O::abs(x[i]);
        const typename O::M gt = ax > amax;
        amax = O::select(gt, ax, amax);
        max = O::select(gt, x[i], max);
    }
}

/// ggml's make_qx_quants with rmse_type 1 and weights w: symmetric levels in
/// [-nmax, nmax-1] (returned plus nmax), best of 19 grids around -nmax/max by
/// weighted least squares. scale_out: the scale (0 for an all-zero group).
template <class Arch, int N>
inline void qx_search(const typename lanes<Arch>::V* x, const typename lanes<Arch>::V* w,
                      typename lanes<Arch>::V* L, typename lanes<Arch>::V& scale_out, float nmax) noexcept {
    using O = lanes<Arch>;
    using B = typename O::V;
    const B zero(0.f);
    B amax, mx;
    signed_absmax<Arch, N>(x, amax, mx);
    const typename O::M flat = amax < B(group_max_eps);
    B iscale = O::div(B(-nmax), mx);
    B sumlx = zero, suml2 = zero;
    for (int i = 0; i < N; ++i) {
        const B l = O::clamp(O::round(O::mul(iscale, x[i])), -nmax, nmax - 1);
        L[i] = l;
        sumlx = sumlx + O::mul(O::mul(w[i], x[i]), l);
        suml2 = suml2 + O::mul(O::mul(w[i], l), l);
    }
    B scale = O::select(O::ne(suml2, zero), O::div(sumlx, suml2), zero);
    B best = O::mul(scale, sumlx);
    B laux[N];
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = O::div(-(B(nmax) + O::mul(B(0.1f), B(static_cast<float>(is)))), mx);
        sumlx = suml2 = zero;
        for (int i = 0; i < N; ++i) {
            const B l = O::clamp(O::round(O::mul(iscale, x[i])), -nmax, nmax - 1);
            laux[i] = l;
            sumlx = sumlx + O::mul(O::mul(w[i], x[i]), l);
            suml2 = suml2 + O::mul(O::mul(w[i], l), l);
        }
        const typename O::M better = (suml2 > zero) && (O::mul(sumlx, sumlx) > O::mul(best, suml2));
        if (!O::any(better)) continue;
        for (int i = 0; i < N; ++i) L[i] = O::select(better, laux[i], L[i]);
        const B ns = O::div(sumlx, suml2);
        scale = O::select(better, ns, scale);
        best = O::select(better, O::mul(ns, sumlx), best);
    }
    for (int i = 0; i < N; ++i) L[i] = O::select(flat, zero, L[i] + B(nmax));
    scale_out = O::select(flat, zero, scale);
}

/// ggml's make_q3_quants with do_rmse, on K groups of lanes at once: start
/// from -nmax/max and move one level at a time while the x^2-weighted fit
/// improves (up to 5 sweeps). The sweeps are a chain of dependent divisions
/// per lane, so independent batches are interleaved to keep the divider busy.
/// L: levels + nmax.
template <class Arch, int N, int K>
inline void q3_search(const typename lanes<Arch>::V (*x)[N], typename lanes<Arch>::V (*L)[N],
                      typename lanes<Arch>::V* scale_out, float nmax) noexcept {
    using O = lanes<Arch>;
    using B = typename O::V;
    using M = typename O::M;
    const B zero(0.f);
    M flat[K];
    B sumlx[K], suml2[K];
    for (int k = 0; k < K; ++k) {
        B amax, mx;
        signed_absmax<Arch, N>(x[k], amax, mx);
        flat[k] = amax < B(group_max_eps);
        const B iscale = O::div(B(-nmax), mx);
        sumlx[k] = suml2[k] = zero;
        for (int i = 0; i < N; ++i) {
            const B l = O::clamp(O::round(O::mul(iscale, x[k][i])), -nmax, nmax - 1);
            L[k][i] = l;
            const B w = O::mul(x[k][i], x[k][i]);
            sumlx[k] = sumlx[k] + O::mul(O::mul(w, x[k][i]), l);
            suml2[k] = suml2[k] + O::mul(O::mul(w, l), l);
        }
    }
    // A lane whose pass changes nothing would change nothing in a further
    // pass either, so running on until no lane changes gives ggml's result.
    for (int itry = 0; itry < 5; ++itry) {
        M changed[K];
        for (int k = 0; k < K; ++k) changed[k] = zero > zero;
        for (int i = 0; i < N; ++i) {
            for (int k = 0; k < K; ++k) {
                const B xi = x[k][i];
                const B w = O::mul(xi, xi);
                const B wx = O::mul(w, xi);
                const B li = L[k][i];
                const B slx = sumlx[k] - O::mul(wx, li);
                const B sl2 = suml2[k] - O::mul(O::mul(w, li), li);
                const B nl = O::clamp(O::round(O::div(O::mul(xi, sl2), slx)), -nmax, nmax - 1);
                const M moved = (slx > zero) && O::ne(nl, li);
                const B slx2 = slx + O::mul(wx, nl);
                const B sl22 = sl2 + O::mul(O::mul(w, nl), nl);
                const M take = moved && (sl22 > zero) &&
                               (O::mul(O::mul(slx2, slx2), suml2[k]) > O::mul(O::mul(sumlx[k], sumlx[k]), sl22));
                L[k][i] = O::select(take, nl, li);
                sumlx[k] = O::select(take, slx2, sumlx[k]);
                suml2[k] = O::select(take, sl22, suml2[k]);
                changed[k] = changed[k] || take;
            }
        }
        bool any = false;
        for (int k = 0; k < K; ++k) any = any || O::any(changed[k]);
        if (!any) break;
    }
    for (int k = 0; k < K; ++k) {
        for (int i = 0; i < N; ++i) L[k][i] = O::select(flat[k], zero, L[k][i] + B(nmax));
        scale_out[k] = O::select(flat[k] || !(suml2[k] > zero), zero, O::div(sumlx[k], suml2[k]));
    }
}

/// Requantize with the sub-block's stored scale d (and offset m):
/// affine q = clamp(round((x + m)/d), 0, hi); symmetric q = clamp(round(x/d), lo, hi) - lo.
/// Lanes with d == 0 keep the search's levels.
template <class Arch, int N, bool Affine>
inline void requantize(const typename lanes<Arch>::V* x, typename lanes<Arch>::V* L,
                       const typename lanes<Arch>::V& d, const typename lanes<Arch>::V& m, float lo,
                       float hi) noexcept {
    using O = lanes<Arch>;
    using B = typename O::V;
    const typename O::M nz = O::ne(d, B(0.f));
    for (int i = 0; i < N; ++i) {
        B l;
        if constexpr (Affine)
            l = O::clamp(O::round(O::div(x[i] + m, d)), 0.f, hi);
        else
            l = O::clamp(O::round(O::div(x[i], d)), lo, hi) - B(lo);
        L[i] = O::select(nz, l, L[i]);
    }
}

/// Importance weights qw*sqrt(sigma2 + x^2), and their sum in element order.
template <class Arch, int N>
inline void imatrix_weights(const typename lanes<Arch>::V* x, const typename lanes<Arch>::V* qw,
                            const typename lanes<Arch>::V& sigma2, typename lanes<Arch>::V* w,
                            typename lanes<Arch>::V& sw) noexcept {
    using O = lanes<Arch>;
    using B = typename O::V;
    sw = B(0.f);
    for (int i = 0; i < N; ++i) {
        w[i] = qw[i] * O::sqrt(sigma2 + O::mul(x[i], x[i]));
        sw = sw + w[i];
    }
}

/// Q4_K/Q5_K's weights without an imatrix: rms(x) + |x|.
template <class Arch, int N>
inline void rms_plus_abs_weights(const typename lanes<Arch>::V* x, typename lanes<Arch>::V* w) noexcept {
    using O = lanes<Arch>;
    using B = typename O::V;
    B ss(0.f);
    for (int i = 0; i < N; ++i) ss = ss + O::mul(x[i], x[i]);
    const B av = O::sqrt(O::div(ss, B(static_cast<float>(N))));
    for (int i = 0; i < N; ++i) w[i] = av + O::abs(x[i]);
}

/// Index of the nearest IQ4_NL value, as a float, and the value there: the
/// bracket t[lo] <= v < t[lo+1] is found by a scan of the sorted table; an
/// exact midpoint goes up, and NaN gives 15 (as ggml's bisection does).
template <class Arch>
inline void iq4_nearest(const typename lanes<Arch>::V& v, typename lanes<Arch>::V& idx,
                        typename lanes<Arch>::V& q) noexcept {
    using O = lanes<Arch>;
    using B = typename O::V;
    const std::int8_t* t = iq4_nl_values;
    B lo(0.f), tlo(static_cast<float>(t[0])), thi(static_cast<float>(t[1]));
    for (int k = 1; k < 15; ++k) {
        const B tk(static_cast<float>(t[k]));
        const typename O::M le = tk <= v;
        lo = O::select(le, B(static_cast<float>(k)), lo);
        tlo = O::select(le, tk, tlo);
        thi = O::select(le, B(static_cast<float>(t[k + 1])), thi);
    }
    const typename O::M down = (v - tlo) < (thi - v);
    const typename O::M nan = O::ne(v, v);
    idx = O::select(nan, B(15.f), O::select(down, lo, lo + B(1.f)));
    q = O::select(nan, B(static_cast<float>(t[15])), O::select(down, tlo, thi));
}

/// The IQ4 scale search of one 32-value sub-block (ggml's
/// quantize_row_iq4_nl_impl with ntry 7, as ggml_quantize_chunk runs it).
template <class Arch, int N>
inline typename lanes<Arch>::V iq4_search(const typename lanes<Arch>::V* x, const typename lanes<Arch>::V* w) noexcept {
    using O = lanes<Arch>;
    using B = typename O::V;
    const B zero(0.f);
    const float values0 = static_cast<float>(iq4_nl_values[0]);
    B amax, mx;
    signed_absmax<Arch, N>(x, amax, mx);
    const typename O::M flat = amax < B(group_max_eps);
    B d = O::div(-mx, B(values0));
    B id = O::div(B(1.f), d);
    B sumqx = zero, sumq2 = zero, idx, q;
    for (int j = 0; j < N; ++j) {
        iq4_nearest<Arch>(O::mul(id, x[j]), idx, q);
        const B wq = O::mul(w[j], q);
        sumqx = sumqx + O::mul(wq, x[j]);
        sumq2 = sumq2 + O::mul(wq, q);
    }
    d = O::select(sumq2 > zero, O::div(sumqx, sumq2), zero);
    B best = O::mul(d, sumqx);
    for (int itry = -7; itry <= 7; ++itry) {
        id = O::div(B(static_cast<float>(itry + iq4_nl_values[0])), mx);
        sumqx = sumq2 = zero;
        for (int j = 0; j < N; ++j) {
            iq4_nearest<Arch>(O::mul(id, x[j]), idx, q);
            const B wq = O::mul(w[j], q);
            sumqx = sumqx + O::mul(wq, x[j]);
            sumq2 = sumq2 + O::mul(wq, q);
        }
        const typename O::M better = (sumq2 > zero) && (O::mul(sumqx, sumqx) > O::mul(best, sumq2));
        const B nd = O::div(sumqx, sumq2);
        d = O::select(better, nd, d);
        best = O::select(better, O::mul(nd, sumqx), best);
    }
    return O::select(flat, zero, d);
}

LOWBIT_SIMD_WARNINGS_ON

/// Levels (exact small integers in floats) to bytes.
inline void levels_to_bytes(const float* L, int n, std::uint8_t* out) noexcept {
    for (int i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(static_cast<int>(L[i]));
}

}  // namespace ggml::detail
LOWBIT_NAMESPACE_END
