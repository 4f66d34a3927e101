#pragma once
// ggml's K-quants (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and the Q8_K activation type):
// block layouts and row quantize/dequantize functions whose bytes equal ggml's
// own (quantize_row_*_ref without an importance matrix, quantize_row_*_impl
// with one).
//
// Byte equality depends on float evaluation order, so the code below keeps
// ggml's order of operations, its float (not double) accumulators and its
// rounding helpers. Two compiler settings would break it: -ffast-math, and
// contraction of a*b+c into fma (GNU dialects and clang contract when the
// target has FMA); the quantizers switch contraction off for themselves.
//
// Scalar code; the hot spots for later SIMD versions are the trial loops of
// make_qkx_quants (37 trials x 32 values for the imatrix paths) and
// make_qx_quants (19 trials x 16), all of which are independent per trial.

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "ggml_types.hpp"

#if defined(__FAST_MATH__)
#warning "lowbit ggml K-quants: -ffast-math reorders float operations; bytes will differ from ggml's"
#endif

// Function attribute / first body statement that turn off fma contraction.
#if defined(__clang__)
#define LOWBIT_GGML_EXACT_FP
#define LOWBIT_GGML_EXACT_FP_BODY _Pragma("clang fp contract(off)")
#elif defined(__GNUC__)
#define LOWBIT_GGML_EXACT_FP __attribute__((optimize("fp-contract=off")))
#define LOWBIT_GGML_EXACT_FP_BODY
#else
#define LOWBIT_GGML_EXACT_FP
#define LOWBIT_GGML_EXACT_FP_BODY
#endif

LOWBIT_NAMESPACE_BEGIN
namespace ggml {

/// Elements per K-quant super-block.
inline constexpr std::size_t qk_k = 256;
/// Bytes of the packed 6-bit scales/mins of Q4_K and Q5_K (and Q3_K's scales).
inline constexpr std::size_t k_scale_size = 12;

// Field order and types follow ggml-common.h; fp16 values are raw bits.

/// 2.625 bits/weight: 16 sub-blocks of 16, x = d*sc*q - dmin*m, q in [0,3].
struct block_q2_K {
    std::uint8_t scales[qk_k / 16];  ///< low nibble scale, high nibble min
    std::uint8_t qs[qk_k / 4];       ///< 2-bit quants
    std::uint16_t d;                 ///< fp16 super-scale of the scales
    std::uint16_t dmin;              ///< fp16 super-scale of the mins
};

/// 3.4375 bits/weight: 16 sub-blocks of 16, x = d*(sc-32)*(q-4), q in [0,7].
struct block_q3_K {
    std::uint8_t hmask[qk_k / 8];     ///< high bit of each quant
    std::uint8_t qs[qk_k / 4];        ///< low 2 bits
    std::uint8_t scales[k_scale_size];  ///< sixteen 6-bit scales
    std::uint16_t d;                  ///< fp16 super-scale
};

/// 4.5 bits/weight: 8 sub-blocks of 32, x = d*sc*q - dmin*m, q in [0,15].
struct block_q4_K {
    std::uint16_t d;
    std::uint16_t dmin;
    std::uint8_t scales[k_scale_size];  ///< 6-bit scales and mins, see get_scale_min_k4
    std::uint8_t qs[qk_k / 2];
};

/// 5.5 bits/weight: Q4_K with a fifth bit per quant in qh.
struct block_q5_K {
    std::uint16_t d;
    std::uint16_t dmin;
    std::uint8_t scales[k_scale_size];
    std::uint8_t qh[qk_k / 8];
    std::uint8_t qs[qk_k / 2];
};

/// 6.5625 bits/weight: 16 sub-blocks of 16, x = d*sc*(q-32), q in [0,63].
struct block_q6_K {
    std::uint8_t ql[qk_k / 2];   ///< low 4 bits
    std::uint8_t qh[qk_k / 4];   ///< high 2 bits
    std::int8_t scales[qk_k / 16];
    std::uint16_t d;
};

/// Activations for the K-quant dot products: x = d*q with a float d.
struct block_q8_K {
    float d;
    std::int8_t qs[qk_k];
    std::int16_t bsums[qk_k / 16];  ///< sums of qs over groups of 16
};

static_assert(sizeof(block_q2_K) == find_base_traits(static_cast<std::uint32_t>(type::q2_k))->type_size);
static_assert(sizeof(block_q3_K) == find_base_traits(static_cast<std::uint32_t>(type::q3_k))->type_size);
static_assert(sizeof(block_q4_K) == find_base_traits(static_cast<std::uint32_t>(type::q4_k))->type_size);
static_assert(sizeof(block_q5_K) == find_base_traits(static_cast<std::uint32_t>(type::q5_k))->type_size);
static_assert(sizeof(block_q6_K) == find_base_traits(static_cast<std::uint32_t>(type::q6_k))->type_size);
static_assert(sizeof(block_q8_K) == find_base_traits(static_cast<std::uint32_t>(type::q8_k))->type_size);

namespace detail {

/// Below this a group counts as all zero.
inline constexpr float group_max_eps = 1e-15f;

/// Round to nearest, ties to even, by letting the float adder do it: adding
/// 1.5*2^23 leaves the integer in the low mantissa bits. Valid for
/// |f| <= 2^22; outside that it returns the same bits ggml's version does.
inline int nearest_int(float f) noexcept {
    const float v = f + 12582912.f;
    return static_cast<int>(std::bit_cast<std::uint32_t>(v) & 0x007fffffu) - 0x00400000;
}

inline float half_to_float(std::uint16_t h) noexcept { return fp16_to_float(h); }
inline std::uint16_t float_to_half(float f) noexcept { return float_to_fp16(f); }

// ggml's MIN/MAX macros: with NaN they pick the second argument.
template <class T>
constexpr T min_m(T a, T b) noexcept {
    return a < b ? a : b;
}
template <class T>
constexpr T max_m(T a, T b) noexcept {
    return a > b ? a : b;
}

/// Weight for make_qx_quants' error measure when no explicit weights are given.
inline float qx_weight(int rmse_type, float x) noexcept {
    switch (rmse_type) {
    case 1: return x * x;
    case 2: return 1.f;
    case 3: return std::fabs(x);
    default: return std::sqrt(std::fabs(x));
    }
}

/// Symmetric quantization of n values to [-nmax, nmax-1] (stored in L plus
/// nmax), searching 19 grids around -nmax/max for the best weighted fit.
/// rmse_type: 0 plain rounding; 1..4 weights x^2, 1, |x|, sqrt|x| (or qw when
/// non-null); negative: one least-squares step only. Returns the scale.
LOWBIT_GGML_EXACT_FP inline float make_qx_quants(int n, int nmax, const float* x, std::int8_t* L, int rmse_type,
                                                 const float* qw) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < group_max_eps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = static_cast<float>(-nmax) / max;
    if (rmse_type == 0) {
        for (int i = 0; i < n; ++i) {
            const int l = nearest_int(iscale * x[i]);
            L[i] = static_cast<std::int8_t>(nmax + max_m(-nmax, min_m(nmax - 1, l)));
        }
        return 1 / iscale;
    }
    bool return_early = false;
    if (rmse_type < 0) {
        rmse_type = -rmse_type;
        return_early = true;
    }
    float wbuf[qk_k];
    if (!qw) {
        for (int i = 0; i < n; ++i) wbuf[i] = qx_weight(rmse_type, x[i]);
        qw = wbuf;
    }
    auto weight = [qw](int i) { return qw[i]; };
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = max_m(-nmax, min_m(nmax - 1, l));
        L[i] = static_cast<std::int8_t>(l + nmax);
        const float w = weight(i);
        const float fl = static_cast<float>(l);
        sumlx += w * x[i] * fl;
        suml2 += w * fl * fl;
    }
    float scale = suml2 != 0.f ? sumlx / suml2 : 0.0f;
    if (return_early) return suml2 > 0 ? 0.5f * (scale + 1 / iscale) : 1 / iscale;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; ++is) {
        if (is == 0) continue;
        iscale = -(static_cast<float>(nmax) + 0.1f * static_cast<float>(is)) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = max_m(-nmax, min_m(nmax - 1, l));
            const float w = weight(i);
            const float fl = static_cast<float>(l);
            sumlx += w * x[i] * fl;
            suml2 += w * fl * fl;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; ++i) {
                const int l = nearest_int(iscale * x[i]);
                L[i] = static_cast<std::int8_t>(nmax + max_m(-nmax, min_m(nmax - 1, l)));
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/// Q3_K's sub-block search: start from -nmax/max and, when do_rmse, move one
/// level at a time while the x^2-weighted fit improves (up to 5 sweeps).
/// L receives levels plus nmax; returns the scale.
LOWBIT_GGML_EXACT_FP inline float make_q3_quants(int n, int nmax, const float* x, std::int8_t* L,
                                                 bool do_rmse) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    float max = 0, amax = 0;
    for (int i = 0; i < n; ++i) {
        const float ax = std::fabs(x[i]);
        if (ax > amax) {
            amax = ax;
            max = x[i];
        }
    }
    if (amax < group_max_eps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    const float iscale = static_cast<float>(-nmax) / max;
    if (do_rmse) {
        float sumlx = 0, suml2 = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * x[i]);
            l = max_m(-nmax, min_m(nmax - 1, l));
            L[i] = static_cast<std::int8_t>(l);
            const float w = x[i] * x[i];
            const float fl = static_cast<float>(l);
            sumlx += w * x[i] * fl;
            suml2 += w * fl * fl;
        }
        for (int itry = 0; itry < 5; ++itry) {
            int n_changed = 0;
            for (int i = 0; i < n; ++i) {
                const float w = x[i] * x[i];
                const float li = static_cast<float>(L[i]);
                float slx = sumlx - w * x[i] * li;
                if (slx > 0) {
                    float sl2 = suml2 - w * li * li;
                    int new_l = nearest_int(x[i] * sl2 / slx);
                    new_l = max_m(-nmax, min_m(nmax - 1, new_l));
                    if (new_l != L[i]) {
                        const float fl = static_cast<float>(new_l);
                        slx += w * x[i] * fl;
                        sl2 += w * fl * fl;
                        if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                            L[i] = static_cast<std::int8_t>(new_l);
                            sumlx = slx;
                            suml2 = sl2;
                            ++n_changed;
                        }
                    }
                }
            }
            if (!n_changed) break;
        }
        for (int i = 0; i < n; ++i) L[i] = static_cast<std::int8_t>(L[i] + nmax);
        return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
    }
    for (int i = 0; i < n; ++i) {
        int l = nearest_int(iscale * x[i]);
        l = max_m(-nmax, min_m(nmax - 1, l));
        L[i] = static_cast<std::int8_t>(l + nmax);
    }
    return 1 / iscale;
}

/// Affine quantization of n values to [0, nmax] with a min <= 0: tries the
/// grids (rmin + rdelta*is + nmax)/(max - min), is = 0..nstep, fits scale and
/// min by weighted least squares on each and keeps the lowest weighted MAD
/// (use_mad) or SSE. weights: n values, or null for x^2. Laux: n bytes of
/// scratch. Returns the scale; *the_min receives -min (>= 0).
/// ggml's make_qkx2_quants (weights given) and make_qkx3_quants (weights may
/// be null) are this one search.
LOWBIT_GGML_EXACT_FP inline float make_qkx_quants(int n, int nmax, const float* x, const float* weights,
                                                  std::uint8_t* L, float* the_min, std::uint8_t* Laux, float rmin,
                                                  float rdelta, int nstep, bool use_mad) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    float wbuf[qk_k];
    if (!weights) {
        for (int i = 0; i < n; ++i) wbuf[i] = x[i] * x[i];
        weights = wbuf;
    }
    float min = x[0], max = x[0];
    float sum_w = weights[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; ++i) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        const float w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if (min > 0) min = 0;
    if (max <= min) {
        std::memset(L, 0, static_cast<std::size_t>(n));
        *the_min = -min;
        return 0.f;
    }
    float iscale = static_cast<float>(nmax) / (max - min);
    float scale = 1 / iscale;
    float best_error = 0;
    for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * (x[i] - min));
        L[i] = static_cast<std::uint8_t>(max_m(0, min_m(nmax, l)));
        float diff = scale * static_cast<float>(L[i]) + min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        best_error += weights[i] * diff;
    }
    if (nstep < 1) {
        *the_min = -min;
        return scale;
    }
    // min moves to the best fit so far, and later grids start from it (as in ggml).
    for (int is = 0; is <= nstep; ++is) {
        iscale = (rmin + rdelta * static_cast<float>(is) + static_cast<float>(nmax)) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; ++i) {
            int l = nearest_int(iscale * (x[i] - min));
            l = max_m(0, min_m(nmax, l));
            Laux[i] = static_cast<std::uint8_t>(l);
            const float w = weights[i];
            const float fl = static_cast<float>(l);
            sum_l += w * fl;
            sum_l2 += w * fl * fl;
            sum_xl += w * fl * x[i];
        }
        const float D = sum_w * sum_l2 - sum_l * sum_l;
        if (D > 0) {
            float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
            float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
            if (this_min > 0) {
                this_min = 0;
                this_scale = sum_xl / sum_l2;
            }
            float cur_error = 0;
            for (int i = 0; i < n; ++i) {
                float diff = this_scale * static_cast<float>(Laux[i]) + this_min - x[i];
                diff = use_mad ? std::fabs(diff) : diff * diff;
                cur_error += weights[i] * diff;
            }
            if (cur_error < best_error) {
                std::memcpy(L, Laux, static_cast<std::size_t>(n));
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    *the_min = -min;
    return scale;
}

/// Quantizes n non-negative values (sub-block scales or mins) to [0, nmax]
/// without offset: best of 9 grids (nmax + 0.1*is)/max by weighted error,
/// then up to 5 sweeps of one-level moves. Returns the least-squares scale.
LOWBIT_GGML_EXACT_FP inline float make_qp_quants(int n, int nmax, const float* x, std::uint8_t* L,
                                                 const float* w) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    float max = 0;
    for (int i = 0; i < n; ++i) max = max_m(max, x[i]);
    if (max < group_max_eps) {
        for (int i = 0; i < n; ++i) L[i] = 0;
        return 0.f;
    }
    float iscale = static_cast<float>(nmax) / max;
    for (int i = 0; i < n; ++i) L[i] = static_cast<std::uint8_t>(nearest_int(iscale * x[i]));
    const float scale = 1 / iscale;
    float best_mse = 0;
    for (int i = 0; i < n; ++i) {
        const float diff = x[i] - scale * static_cast<float>(L[i]);
        best_mse += w[i] * diff * diff;
    }
    for (int is = -4; is <= 4; ++is) {
        if (is == 0) continue;
        const float iscale_is = (0.1f * static_cast<float>(is) + static_cast<float>(nmax)) / max;
        const float scale_is = 1 / iscale_is;
        float mse = 0;
        for (int i = 0; i < n; ++i) {
            const int l = min_m(nmax, nearest_int(iscale_is * x[i]));
            const float diff = x[i] - scale_is * static_cast<float>(l);
            mse += w[i] * diff * diff;
        }
        if (mse < best_mse) {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
        const int l = min_m(nmax, nearest_int(iscale * x[i]));
        L[i] = static_cast<std::uint8_t>(l);
        const float fl = static_cast<float>(l);
        sumlx += w[i] * x[i] * fl;
        suml2 += w[i] * fl * fl;
    }
    for (int itry = 0; itry < 5; ++itry) {
        int n_changed = 0;
        for (int i = 0; i < n; ++i) {
            const float li = static_cast<float>(L[i]);
            float slx = sumlx - w[i] * x[i] * li;
            float sl2 = suml2 - w[i] * li * li;
            if (slx > 0 && sl2 > 0) {
                const int new_l = min_m(nmax, nearest_int(x[i] * sl2 / slx));
                if (new_l != L[i]) {
                    const float fl = static_cast<float>(new_l);
                    slx += w[i] * x[i] * fl;
                    sl2 += w[i] * fl * fl;
                    if (slx * slx * suml2 > sumlx * sumlx * sl2) {
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

// ---- scale packing ------------------------------------------------------

/// Scale and min j (0..7) of Q4_K/Q5_K's 12-byte table.
constexpr void get_scale_min_k4(int j, const std::uint8_t* q, std::uint8_t& sc, std::uint8_t& m) noexcept {
    if (j < 4) {
        sc = q[j] & 63;
        m = q[j + 4] & 63;
    } else {
        sc = static_cast<std::uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        m = static_cast<std::uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/// Packs eight 6-bit scales and mins into the 12-byte table get_scale_min_k4
/// reads. Values above 63 are packed as given (their extra bits spill the way
/// ggml's do); callers clamp where ggml clamps.
constexpr void set_scale_min_k4(const std::uint8_t* ls, const std::uint8_t* lm, std::uint8_t* q) noexcept {
    for (int j = 0; j < 8; ++j) {
        const std::uint8_t s = ls[j];
        const std::uint8_t m = lm[j];
        if (j < 4) {
            q[j] = s;
            q[j + 4] = m;
        } else {
            q[j + 4] = static_cast<std::uint8_t>((s & 0xF) | ((m & 0xF) << 4));
            q[j - 4] = static_cast<std::uint8_t>(q[j - 4] | ((s >> 4) << 6));
            q[j] = static_cast<std::uint8_t>(q[j] | ((m >> 4) << 6));
        }
    }
}

/// Q3_K's 6-bit scale j (0..15), as stored (0..63, i.e. scale + 32).
constexpr int get_scale_q3(int j, const std::uint8_t* s) noexcept {
    const int lo = j < 8 ? (s[j] & 0xF) : (s[j - 8] >> 4);
    return lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4);
}

/// Packs sixteen stored Q3_K scales (0..63) into the 12-byte table.
constexpr void set_scales_q3(const int* l, std::uint8_t* s) noexcept {
    for (int j = 0; j < 12; ++j) s[j] = 0;
    for (int j = 0; j < 16; ++j) {
        if (j < 8)
            s[j] = static_cast<std::uint8_t>(l[j] & 0xF);
        else
            s[j - 8] = static_cast<std::uint8_t>(s[j - 8] | ((l[j] & 0xF) << 4));
        s[j % 4 + 8] = static_cast<std::uint8_t>(s[j % 4 + 8] | ((l[j] >> 4) << (2 * (j / 4))));
    }
}

// ---- quant packing --------------------------------------------------------

/// Four 2-bit planes per 128 values: byte 32h+l holds 128h+l, +32, +64, +96.
template <class L>
constexpr void pack_2bit(const L* q, std::uint8_t* qs) noexcept {
    for (int j = 0; j < static_cast<int>(qk_k); j += 128)
        for (int l = 0; l < 32; ++l)
            qs[j / 4 + l] = static_cast<std::uint8_t>(q[j + l] | (q[j + l + 32] << 2) | (q[j + l + 64] << 4) |
                                                       (q[j + l + 96] << 6));
}

/// Nibbles per 64 values: byte 32c+l holds 64c+l (low) and 64c+32+l (high);
/// the fifth bit, if any, goes to qh[l] bit 2c / 2c+1.
inline void pack_4bit_5bit(const std::uint8_t* q, std::uint8_t* qs, std::uint8_t* qh) noexcept {
    if (qh) std::memset(qh, 0, qk_k / 8);
    for (int c = 0; c < static_cast<int>(qk_k) / 64; ++c) {
        for (int l = 0; l < 32; ++l) {
            int l1 = q[64 * c + l], l2 = q[64 * c + l + 32];
            if (qh) {
                if (l1 > 15) {
                    l1 -= 16;
                    qh[l] = static_cast<std::uint8_t>(qh[l] | (1u << (2 * c)));
                }
                if (l2 > 15) {
                    l2 -= 16;
                    qh[l] = static_cast<std::uint8_t>(qh[l] | (2u << (2 * c)));
                }
            }
            qs[32 * c + l] = static_cast<std::uint8_t>(l1 | (l2 << 4));
        }
    }
}

/// Q3_K: third bit of value e into hmask[e%32] bit e/32, low 2 bits as Q2_K.
inline void pack_q3(std::int8_t* L, block_q3_K& y) noexcept {
    std::memset(y.hmask, 0, sizeof y.hmask);
    for (int j = 0; j < static_cast<int>(qk_k); ++j) {
        if (L[j] > 3) {
            y.hmask[j % 32] = static_cast<std::uint8_t>(y.hmask[j % 32] | (1u << (j / 32)));
            L[j] = static_cast<std::int8_t>(L[j] - 4);
        }
    }
    pack_2bit(L, y.qs);
}

/// Q6_K per 128 values: ql[l] = l | l+64 << 4, ql[l+32] = l+32 | l+96 << 4,
/// qh[l] = high 2 bits of l, l+32, l+64, l+96.
inline void pack_q6(const std::int8_t* L, block_q6_K& y) noexcept {
    std::uint8_t* ql = y.ql;
    std::uint8_t* qh = y.qh;
    for (int j = 0; j < static_cast<int>(qk_k); j += 128) {
        for (int l = 0; l < 32; ++l) {
            const int q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
            ql[l] = static_cast<std::uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
            ql[l + 32] = static_cast<std::uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
            qh[l] = static_cast<std::uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
        }
        ql += 64;
        qh += 32;
    }
}

// ---- requantization with the stored (rounded) scales ---------------------

/// Affine sub-blocks (Q2_K, Q4_K, Q5_K): q = clamp(round((x + dm)/d), 0, nmax).
/// Sub-blocks whose stored scale is 0 keep the levels of the search.
LOWBIT_GGML_EXACT_FP inline void requantize_affine(const float* x, int len, float d, float dm, int nmax,
                                                   std::uint8_t* L) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    if (d == 0.f) return;
    for (int i = 0; i < len; ++i) {
        const int l = nearest_int((x[i] + dm) / d);
        L[i] = static_cast<std::uint8_t>(max_m(0, min_m(nmax, l)));
    }
}

/// Symmetric sub-blocks (Q3_K, Q6_K): q = clamp(round(x/d), -nmax, nmax-1) + nmax.
LOWBIT_GGML_EXACT_FP inline void requantize_symmetric(const float* x, int len, float d, int nmax,
                                                      std::int8_t* L) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    if (d == 0.f) return;
    for (int i = 0; i < len; ++i) {
        const int l = nearest_int(x[i] / d);
        L[i] = static_cast<std::int8_t>(max_m(-nmax, min_m(nmax - 1, l)) + nmax);
    }
}

/// Importance weights of the imatrix paths: qw * sqrt(sigma2 + x^2).
LOWBIT_GGML_EXACT_FP inline void imatrix_weights(const float* x, const float* qw, int len, float sigma2,
                                                 float* w) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    for (int l = 0; l < len; ++l) w[l] = qw[l] * std::sqrt(sigma2 + x[l] * x[l]);
}

LOWBIT_GGML_EXACT_FP inline float sum_squares(const float* x, int len) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    float s = 0;
    for (int l = 0; l < len; ++l) s += x[l] * x[l];
    return s;
}

LOWBIT_GGML_EXACT_FP inline float sum(const float* x, int len) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    float s = 0;
    for (int l = 0; l < len; ++l) s += x[l];
    return s;
}

// ---- one super-block ------------------------------------------------------
// qw: the block's 256 importance values, or null for ggml's reference path.

LOWBIT_GGML_EXACT_FP inline void quantize_block_q2_k(const float* x, const float* qw, block_q2_K& y) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    constexpr int nsub = qk_k / 16;
    std::uint8_t L[qk_k], Laux[16];
    float weights[16], mins[nsub], scales[nsub];
    if (!qw) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < nsub; ++j) {
            for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
            scales[j] = make_qkx_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15,
                                        true);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        constexpr float q4scale = 15.f;
        if (max_scale > 0) {
            const float iscale = q4scale / max_scale;
            for (int j = 0; j < nsub; ++j) y.scales[j] = static_cast<std::uint8_t>(nearest_int(iscale * scales[j]));
            y.d = float_to_half(max_scale / q4scale);
        } else {
            for (int j = 0; j < nsub; ++j) y.scales[j] = 0;
            y.d = float_to_half(0.f);
        }
        if (max_min > 0) {
            const float iscale = q4scale / max_min;
            for (int j = 0; j < nsub; ++j)
                y.scales[j] = static_cast<std::uint8_t>(y.scales[j] | (nearest_int(iscale * mins[j]) << 4));
            y.dmin = float_to_half(max_min / q4scale);
        } else {
            y.dmin = float_to_half(0.f);
        }
    } else {
        float sw[nsub];
        std::uint8_t Ls[nsub], Lm[nsub];
        const float sigma2 = sum_squares(x, qk_k) / qk_k;
        for (int j = 0; j < nsub; ++j) {
            imatrix_weights(x + 16 * j, qw + 16 * j, 16, sigma2, weights);
            sw[j] = sum(weights, 16);
            scales[j] = make_qkx_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.9f, 0.05f, 36,
                                        false);
        }
        const float dm = make_qp_quants(nsub, 15, scales, Ls, sw);
        const float mm = make_qp_quants(nsub, 15, mins, Lm, sw);
        y.d = float_to_half(dm);
        y.dmin = float_to_half(mm);
        for (int j = 0; j < nsub; ++j) y.scales[j] = static_cast<std::uint8_t>(Ls[j] | (Lm[j] << 4));
    }
    const float d = half_to_float(y.d), dmin = half_to_float(y.dmin);
    for (int j = 0; j < nsub; ++j)
        requantize_affine(x + 16 * j, 16, d * static_cast<float>(y.scales[j] & 0xF),
                          dmin * static_cast<float>(y.scales[j] >> 4), 3, L + 16 * j);
    pack_2bit(L, y.qs);
}

LOWBIT_GGML_EXACT_FP inline void quantize_block_q3_k(const float* x, const float* qw, block_q3_K& y) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    constexpr int nsub = qk_k / 16;
    std::int8_t L[qk_k];
    float scales[nsub];
    int ls[nsub];
    if (!qw) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < nsub; ++j) {
            scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j, true);
            const float a = std::fabs(scales[j]);
            if (a > amax) {
                amax = a;
                max_scale = scales[j];
            }
        }
        if (max_scale != 0.f) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < nsub; ++j) {
                // ggml narrows to int8 before clamping.
                const auto l = static_cast<std::int8_t>(nearest_int(iscale * scales[j]));
                ls[j] = max_m(-32, min_m(31, static_cast<int>(l))) + 32;
            }
            set_scales_q3(ls, y.scales);
            y.d = float_to_half(1 / iscale);
        } else {
            std::memset(y.scales, 0, sizeof y.scales);
            y.d = float_to_half(0.f);
        }
    } else {
        float weight[16], sw[nsub];
        std::int8_t Ls[nsub];
        const float sigma2 = 2 * sum_squares(x, qk_k) / qk_k;
        for (int j = 0; j < nsub; ++j) {
            imatrix_weights(x + 16 * j, qw + 16 * j, 16, sigma2, weight);
            sw[j] = sum(weight, 16);
            scales[j] = make_qx_quants(16, 4, x + 16 * j, L + 16 * j, 1, weight);
        }
        const float d_block = make_qx_quants(nsub, 32, scales, Ls, 1, sw);
        for (int j = 0; j < nsub; ++j) ls[j] = Ls[j];
        set_scales_q3(ls, y.scales);
        y.d = float_to_half(d_block);
    }
    const float d = half_to_float(y.d);
    for (int j = 0; j < nsub; ++j) {
        const auto sc = static_cast<std::int8_t>(get_scale_q3(j, y.scales) - 32);
        requantize_symmetric(x + 16 * j, 16, d * static_cast<float>(sc), 4, L + 16 * j);
    }
    pack_q3(L, y);
}

/// Q4_K (nmax 15) and Q5_K (nmax 31) share everything but the packing.
template <int Nmax>
LOWBIT_GGML_EXACT_FP inline void quantize_scales_q45(const float* x, const float* qw, std::uint8_t* L,
                                                     std::uint16_t& d16, std::uint16_t& dmin16,
                                                     std::uint8_t* packed) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    constexpr int nsub = qk_k / 32;
    std::uint8_t Laux[32], Ls[nsub], Lm[nsub];
    float weights[32], mins[nsub], scales[nsub];
    if (!qw) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < nsub; ++j) {
            const float* xs = x + 32 * j;
            const float av_x = std::sqrt(sum_squares(xs, 32) / 32);
            for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(xs[l]);
            if constexpr (Nmax == 15)
                scales[j] = make_qkx_quants(32, Nmax, xs, weights, L + 32 * j, &mins[j], Laux, -1.f, 0.1f, 20, false);
            else
                scales[j] = make_qkx_quants(32, Nmax, xs, weights, L + 32 * j, &mins[j], Laux, -0.5f, 0.1f, 15, false);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
        const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
        for (int j = 0; j < nsub; ++j) {
            Ls[j] = static_cast<std::uint8_t>(nearest_int(inv_scale * scales[j]));
            Lm[j] = static_cast<std::uint8_t>(nearest_int(inv_min * mins[j]));
        }
        d16 = float_to_half(max_scale / 63.f);
        dmin16 = float_to_half(max_min / 63.f);
    } else {
        float sw[nsub];
        const float sigma2 = 2 * sum_squares(x, qk_k) / qk_k;
        for (int j = 0; j < nsub; ++j) {
            imatrix_weights(x + 32 * j, qw + 32 * j, 32, sigma2, weights);
            sw[j] = sum(weights, 32);
            scales[j] = make_qkx_quants(32, Nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, -0.9f, 0.05f, 36,
                                        false);
        }
        d16 = float_to_half(make_qp_quants(nsub, 63, scales, Ls, sw));
        dmin16 = float_to_half(make_qp_quants(nsub, 63, mins, Lm, sw));
    }
    // ggml clamps to 63 except on Q4_K's imatrix path, where a negative
    // sub-block scale from the search wraps to a large byte and is packed as is.
    if (!qw || Nmax != 15) {
        for (int j = 0; j < nsub; ++j) {
            Ls[j] = min_m<std::uint8_t>(63, Ls[j]);
            Lm[j] = min_m<std::uint8_t>(63, Lm[j]);
        }
    }
    set_scale_min_k4(Ls, Lm, packed);
    const float d = half_to_float(d16), dmin = half_to_float(dmin16);
    for (int j = 0; j < nsub; ++j) {
        std::uint8_t sc, m;
        get_scale_min_k4(j, packed, sc, m);
        requantize_affine(x + 32 * j, 32, d * static_cast<float>(sc), dmin * static_cast<float>(m), Nmax, L + 32 * j);
    }
}

inline void quantize_block_q4_k(const float* x, const float* qw, block_q4_K& y) noexcept {
    std::uint8_t L[qk_k];
    quantize_scales_q45<15>(x, qw, L, y.d, y.dmin, y.scales);
    pack_4bit_5bit(L, y.qs, nullptr);
}

inline void quantize_block_q5_k(const float* x, const float* qw, block_q5_K& y) noexcept {
    std::uint8_t L[qk_k];
    quantize_scales_q45<31>(x, qw, L, y.d, y.dmin, y.scales);
    pack_4bit_5bit(L, y.qs, y.qh);
}

LOWBIT_GGML_EXACT_FP inline void quantize_block_q6_k(const float* x, const float* qw, block_q6_K& y) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    constexpr int nsub = qk_k / 16;
    std::int8_t L[qk_k];
    float scales[nsub];
    float max_scale = 0, max_abs_scale = 0;
    for (int j = 0; j < nsub; ++j) {
        // With an imatrix ggml weights the search by the imatrix alone.
        scales[j] = make_qx_quants(16, 32, x + 16 * j, L + 16 * j, 1, qw ? qw + 16 * j : nullptr);
        const float a = std::fabs(scales[j]);
        if (a > max_abs_scale) {
            max_abs_scale = a;
            max_scale = scales[j];
        }
    }
    if (max_abs_scale < group_max_eps) {
        std::memset(&y, 0, sizeof y);
        return;
    }
    const float iscale = -128.f / max_scale;
    y.d = float_to_half(1 / iscale);
    for (int j = 0; j < nsub; ++j) y.scales[j] = static_cast<std::int8_t>(min_m(127, nearest_int(iscale * scales[j])));
    const float d = half_to_float(y.d);
    for (int j = 0; j < nsub; ++j) requantize_symmetric(x + 16 * j, 16, d * static_cast<float>(y.scales[j]), 32, L + 16 * j);
    pack_q6(L, y);
}

LOWBIT_GGML_EXACT_FP inline void quantize_block_q8_k(const float* x, block_q8_K& y) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    float max = 0, amax = 0;
    for (std::size_t j = 0; j < qk_k; ++j) {
        const float ax = std::fabs(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    if (amax == 0.f) {
        // ggml leaves bsums untouched here; zero is what they sum to.
        std::memset(&y, 0, sizeof y);
        return;
    }
    // -127, not -128: keeps every q in [-127, 127] for ggml's SIMD dot products.
    const float iscale = -127.f / max;
    for (std::size_t j = 0; j < qk_k; ++j)
        y.qs[j] = static_cast<std::int8_t>(min_m(127, nearest_int(iscale * x[j])));
    for (std::size_t j = 0; j < qk_k / 16; ++j) {
        int s = 0;
        for (std::size_t i = 0; i < 16; ++i) s += y.qs[16 * j + i];
        y.bsums[j] = static_cast<std::int16_t>(s);
    }
    y.d = 1 / iscale;
}

// ---- dequantize one super-block ------------------------------------------

LOWBIT_GGML_EXACT_FP inline void dequantize_block(const block_q2_K& b, float* y) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
    for (int e = 0; e < static_cast<int>(qk_k); ++e) {
        const std::uint8_t sc = b.scales[e / 16];
        const int q = (b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        y[e] = d * static_cast<float>(sc & 0xF) * static_cast<float>(q) - dmin * static_cast<float>(sc >> 4);
    }
}

LOWBIT_GGML_EXACT_FP inline void dequantize_block(const block_q3_K& b, float* y) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    const float d = half_to_float(b.d);
    for (int e = 0; e < static_cast<int>(qk_k); ++e) {
        const float dl = d * static_cast<float>(get_scale_q3(e / 16, b.scales) - 32);
        const int lo = (b.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
        const int q = lo - ((b.hmask[e % 32] >> (e / 32)) & 1 ? 0 : 4);
        y[e] = dl * static_cast<float>(q);
    }
}

LOWBIT_GGML_EXACT_FP inline void dequantize_block(const block_q4_K& b, float* y) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
    for (int j = 0; j < 8; ++j) {
        std::uint8_t sc, m;
        get_scale_min_k4(j, b.scales, sc, m);
        const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
        const std::uint8_t* q = b.qs + 32 * (j / 2);
        const int shift = 4 * (j % 2);
        for (int l = 0; l < 32; ++l) y[32 * j + l] = dl * static_cast<float>((q[l] >> shift) & 0xF) - ml;
    }
}

LOWBIT_GGML_EXACT_FP inline void dequantize_block(const block_q5_K& b, float* y) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    const float d = half_to_float(b.d), dmin = half_to_float(b.dmin);
    for (int j = 0; j < 8; ++j) {
        std::uint8_t sc, m;
        get_scale_min_k4(j, b.scales, sc, m);
        const float dl = d * static_cast<float>(sc), ml = dmin * static_cast<float>(m);
        const std::uint8_t* q = b.qs + 32 * (j / 2);
        const int shift = 4 * (j % 2);
        for (int l = 0; l < 32; ++l) {
            const int v = ((q[l] >> shift) & 0xF) | (((b.qh[l] >> j) & 1) << 4);
            y[32 * j + l] = dl * static_cast<float>(v) - ml;
        }
    }
}

LOWBIT_GGML_EXACT_FP inline void dequantize_block(const block_q6_K& b, float* y) noexcept {
    LOWBIT_GGML_EXACT_FP_BODY
    const float d = half_to_float(b.d);
    for (int e = 0; e < static_cast<int>(qk_k); ++e) {
        const int h = e / 128, r = e % 128, quarter = r / 32, l = r % 32;
        const std::uint8_t lo_byte = b.ql[64 * h + l + 32 * (quarter & 1)];
        const int lo = (lo_byte >> (4 * (quarter >> 1))) & 0xF;
        const int hi = (b.qh[32 * h + l] >> (2 * quarter)) & 3;
        y[e] = d * static_cast<float>(b.scales[e / 16]) * static_cast<float>((lo | (hi << 4)) - 32);
    }
}

inline void dequantize_block(const block_q8_K& b, float* y) noexcept {
    for (std::size_t j = 0; j < qk_k; ++j) y[j] = b.d * static_cast<float>(b.qs[j]);
}

// ---- rows -------------------------------------------------------------------

inline void check_row(const char* name, const void* a, const void* b, std::size_t n) {
    if (n % qk_k != 0)
        LOWBIT_THROW(errc::not_divisible, std::string(name) + ": a row of " + std::to_string(n) +
                                              " values is not a whole number of " + std::to_string(qk_k) +
                                              "-value super-blocks");
    if (n != 0 && (!a || !b)) LOWBIT_THROW(errc::invalid_argument, std::string(name) + ": null pointer");
}

// Blocks go through a local copy: dst/src need no alignment.
template <class Block, class Fn>
inline void quantize_row(const float* x, void* dst, std::size_t n, const float* imatrix, Fn fn) noexcept {
    auto* out = static_cast<unsigned char*>(dst);
    for (std::size_t i = 0; i < n / qk_k; ++i) {
        Block b;
        fn(x + i * qk_k, imatrix ? imatrix + i * qk_k : nullptr, b);
        std::memcpy(out + i * sizeof(Block), &b, sizeof(Block));
    }
}

template <class Block>
inline void dequantize_row(const void* src, float* y, std::size_t n) noexcept {
    const auto* in = static_cast<const unsigned char*>(src);
    for (std::size_t i = 0; i < n / qk_k; ++i) {
        Block b;
        std::memcpy(&b, in + i * sizeof(Block), sizeof(Block));
        dequantize_block(b, y + i * qk_k);
    }
}

}  // namespace detail

// ---- public row functions ---------------------------------------------------
// x: n floats (n a multiple of 256); dst: n/256 blocks. imatrix: null, or one
// importance value per column of the row (n values), as ggml_quantize_chunk
// takes it. Without an imatrix the bytes equal ggml's quantize_row_*_ref, with
// one ggml's quantize_row_*_impl. Q8_K ignores the imatrix.

inline void quantize_row_q2_k(const float* x, void* dst, std::size_t n, const float* imatrix = nullptr) {
    detail::check_row("quantize_row_q2_k", x, dst, n);
    detail::quantize_row<block_q2_K>(x, dst, n, imatrix, detail::quantize_block_q2_k);
}
inline void quantize_row_q3_k(const float* x, void* dst, std::size_t n, const float* imatrix = nullptr) {
    detail::check_row("quantize_row_q3_k", x, dst, n);
    detail::quantize_row<block_q3_K>(x, dst, n, imatrix, detail::quantize_block_q3_k);
}
inline void quantize_row_q4_k(const float* x, void* dst, std::size_t n, const float* imatrix = nullptr) {
    detail::check_row("quantize_row_q4_k", x, dst, n);
    detail::quantize_row<block_q4_K>(x, dst, n, imatrix, detail::quantize_block_q4_k);
}
inline void quantize_row_q5_k(const float* x, void* dst, std::size_t n, const float* imatrix = nullptr) {
    detail::check_row("quantize_row_q5_k", x, dst, n);
    detail::quantize_row<block_q5_K>(x, dst, n, imatrix, detail::quantize_block_q5_k);
}
inline void quantize_row_q6_k(const float* x, void* dst, std::size_t n, const float* imatrix = nullptr) {
    detail::check_row("quantize_row_q6_k", x, dst, n);
    detail::quantize_row<block_q6_K>(x, dst, n, imatrix, detail::quantize_block_q6_k);
}
inline void quantize_row_q8_k(const float* x, void* dst, std::size_t n, const float* imatrix = nullptr) {
    detail::check_row("quantize_row_q8_k", x, dst, n);
    (void)imatrix;
    detail::quantize_row<block_q8_K>(x, dst, n, nullptr,
                                     [](const float* xb, const float*, block_q8_K& b) { detail::quantize_block_q8_k(xb, b); });
}

inline void dequantize_row_q2_k(const void* src, float* y, std::size_t n) {
    detail::check_row("dequantize_row_q2_k", src, y, n);
    detail::dequantize_row<block_q2_K>(src, y, n);
}
inline void dequantize_row_q3_k(const void* src, float* y, std::size_t n) {
    detail::check_row("dequantize_row_q3_k", src, y, n);
    detail::dequantize_row<block_q3_K>(src, y, n);
}
inline void dequantize_row_q4_k(const void* src, float* y, std::size_t n) {
    detail::check_row("dequantize_row_q4_k", src, y, n);
    detail::dequantize_row<block_q4_K>(src, y, n);
}
inline void dequantize_row_q5_k(const void* src, float* y, std::size_t n) {
    detail::check_row("dequantize_row_q5_k", src, y, n);
    detail::dequantize_row<block_q5_K>(src, y, n);
}
inline void dequantize_row_q6_k(const void* src, float* y, std::size_t n) {
    detail::check_row("dequantize_row_q6_k", src, y, n);
    detail::dequantize_row<block_q6_K>(src, y, n);
}
inline void dequantize_row_q8_k(const void* src, float* y, std::size_t n) {
    detail::check_row("dequantize_row_q8_k", src, y, n);
    detail::dequantize_row<block_q8_K>(src, y, n);
}

}  // namespace ggml
LOWBIT_NAMESPACE_END
