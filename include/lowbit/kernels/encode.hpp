#pragma once
// The generic quantizer's two passes over the weights, vectorised:
//
//  * group_extremes: per group of `group` consecutive values of a row, the
//    minimum, the maximum and the first element of largest magnitude, which
//    is all every scheme's fit looks at (detail::group_stats);
//  * fit: each group's params from its extremes, by the rules of
//    scheme/fit_rules.hpp (the same templates the schemes' fit_stats runs);
//  * encode: every value to its code under its group's params, by the rules
//    of scheme/encode_rules.hpp (the same templates the schemes' scalar
//    encode runs), packed into LSB-first k-bit rows.
//
// Both have a scalar twin (the `scalar` tag runs the rules on float) and give
// the same results bit for bit on every instruction set.

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "../core/error.hpp"
#include "../scheme/encode_rules.hpp"
#include "../scheme/fit_rules.hpp"
#include "dispatch.hpp"

#if !defined(LOWBIT_NO_SIMD)
#include "../detail/xsimd_compat.hpp"
#include "lane_ops.hpp"
#endif

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

/// Minimum, maximum and the first element of largest magnitude of a group
/// (the group statistics of scheme/affine.hpp, but for the sign of zeros:
/// min and max are some zero of the group where that is the extreme).
struct group_extremes {
    float min, max, signed_absmax;
};

/// Extremes of each group of `group` values along rows [0, rows) of x, as
/// three arrays (a kernel reads them a batch of groups at a time), group g
/// of row r at r * (cols / group) + g.
struct extremes_job {
    const float* x;
    std::size_t x_stride;  ///< elements between rows
    std::size_t rows, cols, group;
    float* min;
    float* max;
    float* signed_absmax;
    bool* non_finite;      ///< set to true when a value is NaN or infinite (the extremes are then meaningless)
};

/// Params of `count` groups from their extremes by a fit_rule. Params are
/// arrays of `step` floats per group: scale, then (step 3) zero and bias.
struct fit_job {
    const float* min;  ///< the groups' extremes, as extremes_job writes them
    const float* max;
    const float* signed_absmax;
    std::size_t count;
    const fit_rule* rule;
    float* stored;       ///< the params as stored: scale and bias rounded to the rule's scale type
    float* encode;       ///< the params to encode with (mlx: as computed in float32; else the stored ones)
    std::size_t step;    ///< 1 or 3
    std::uint8_t* flag;  ///< 1 where the scheme's fit_stats must fit the group instead: a zero
                         ///< extreme (whose sign fit_stats looks up) or a param its type cannot hold
};

/// Which rule an encode_job applies.
enum class encode_kind : std::uint8_t { affine, thresholds, minifloat };

/// Encode rows [0, rows) of x into k-bit codes, params per group of `group`
/// columns (group r * param_stride + c / group; param_stride 0: all rows
/// share row 0's).
struct encode_job {
    const float* x;
    std::size_t x_stride;
    std::size_t rows, cols, group;
    const float* scale;
    const float* zero;  ///< affine only; null: 0
    const float* bias;  ///< affine only; null: 0
    std::size_t param_stride;
    int bits;  ///< 1..8
    std::uint8_t* codes;
    std::size_t code_stride;  ///< bytes between code rows (>= ceil(cols * bits / 8))
    encode_kind kind;
    const affine_rule* affine;
    const threshold_rule* thresholds;
    const minifloat_rule* minifloat;
    /// Optional: memory the caller reads next (the following block of
    /// weights), prefetched a slice per chunk of codes, so that memory
    /// streams in while this job computes. Does not change results.
    const void* prefetch = nullptr;
    std::size_t prefetch_bytes = 0;
    /// Floats from one group's scale (zero, bias) to the next group's: 1 for
    /// separate arrays, 3 to read an array of affine_params in place.
    std::size_t param_step = 1;
};

/// The importance-weighted squared error of one group under each of `count`
/// candidate affine params (a clipping search's grid): err[k] = sum over i of
/// w[i] * d * d in double, d = double(x[i]) - decode(encode(x[i], p_k), p_k),
/// summed in order of i (as a scalar loop would).
struct candidates_job {
    const float* x;
    const float* weight;  ///< null: all 1
    std::size_t n;
    const affine_rule* rule;
    const float* scale;  ///< count entries each
    const float* zero;
    const float* bias;
    std::size_t count;   ///< 1..max_candidates
    double* err;
    static constexpr std::size_t max_candidates = 64;
};

struct fit_fn {
    template <class Arch>
    void operator()(Arch, const fit_job& j) const noexcept;
};
struct group_extremes_fn {
    template <class Arch>
    void operator()(Arch, const extremes_job& j) const noexcept;
};
struct encode_fn {
    template <class Arch>
    void operator()(Arch, const encode_job& j) const noexcept;
};
struct candidate_errors_fn {
    template <class Arch>
    void operator()(Arch, const candidates_job& j) const noexcept;
};

namespace detail::encode {

// Codes are produced a chunk at a time: 512 codes of k bits are whole bytes
// and whole batches on every arch.
inline constexpr std::size_t chunk = 512;

/// Eight codes (each < 2^K), one per byte of v (code t in bits 8t .. 8t + 7),
/// packed LSB-first into the low 8K bits (code t in bits Kt .. Kt + K - 1):
/// neighbours merged pairwise, then pairs, then quads. On std::uint64_t and on
/// batches of uint64 lanes alike.
template <int K, class U>
LOWBIT_FORCE_INLINE U pack_eight(U v) noexcept {
    static_assert(K >= 1 && K <= 8);
    if constexpr (K < 8) {
        v = (v & U(0x00FF00FF00FF00FFull)) | ((v & U(0xFF00FF00FF00FF00ull)) >> (8 - K));
        v = (v & U(0x0000FFFF0000FFFFull)) | ((v & U(0xFFFF0000FFFF0000ull)) >> (16 - 2 * K));
        v = (v & U(0x00000000FFFFFFFFull)) | ((v & U(0xFFFFFFFF00000000ull)) >> (32 - 4 * K));
    }
    return v;
}

/// Packs n codes (0 .. 2^K - 1) LSB-first at K bits each into
/// ceil(n * K / 8) bytes; eight codes make K whole bytes.
template <int K>
LOWBIT_FORCE_INLINE void pack_chunk(const std::int32_t* code, std::size_t n, std::uint8_t* out) noexcept {
    const std::size_t bytes = (n * K + 7) / 8;
    for (std::size_t i = 0; i < n; i += 8) {
        std::uint64_t v = 0;
        for (std::size_t t = 0; t < 8 && i + t < n; ++t)
            v |= static_cast<std::uint64_t>(static_cast<std::uint8_t>(code[i + t])) << (8 * t);
        const std::uint64_t w = pack_eight<K>(v);
        const std::size_t at = i / 8 * K;
        for (std::size_t t = 0; t < K && at + t < bytes; ++t) out[at + t] = static_cast<std::uint8_t>(w >> (8 * t));
    }
}

/// f(std::integral_constant<int, k>) for k (1..8) known at run time.
template <class F>
LOWBIT_FORCE_INLINE void with_bits(int k, F&& f) noexcept {
    switch (k) {
    case 1: f(std::integral_constant<int, 1>{}); break;
    case 2: f(std::integral_constant<int, 2>{}); break;
    case 3: f(std::integral_constant<int, 3>{}); break;
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 5: f(std::integral_constant<int, 5>{}); break;
    case 6: f(std::integral_constant<int, 6>{}); break;
    case 7: f(std::integral_constant<int, 7>{}); break;
    default: f(std::integral_constant<int, 8>{}); break;
    }
}

/// The reciprocal a job's rule multiplies by, once per group of scale s:
/// 1 / s as computed for thresholds, scale_inverse(s) (0 for a zero scale)
/// for ggml's half-up and half-away rules; 0 for rules that divide (affine
/// round-half-even, whose division is exact and not what bounds it, and
/// minifloats).
inline float group_inverse(const encode_job& j, float s) noexcept {
    if (j.kind == encode_kind::thresholds) return 1.0f / s;
    if (j.kind == encode_kind::affine && (j.affine->half_up || j.affine->half_away)) return scale_inverse(s);
    return 0.0f;
}

/// Calls f(code) with `code(x, s, z, b, inv)` the job's rule on lane type V
/// (inv: group_inverse(j, s)), the rule copied into the closure so that its
/// constants stay in registers.
template <class V, class F>
LOWBIT_FORCE_INLINE void with_rule(const encode_job& j, F&& f) noexcept {
    switch (j.kind) {
    case encode_kind::affine: {
        const affine_rule r = *j.affine;
        f([r](V x, V s, V z, V b, V inv) LOWBIT_LAMBDA_INLINE { return affine_code<V>(r, x, s, z, b, inv); });
        break;
    }
    case encode_kind::thresholds: {
        // Sign-magnitude tables of 16 entries (fp4) have 7 thresholds on |v|:
        // half the compares. Quantize fp4-b64 1 390 -> 1 790 Mw/s (AVX-512, EPYC 2.6 GHz).
        const threshold_rule r = *j.thresholds;
        if (r.count <= 7 && !r.unit_steps)
            f([r](V x, V s, V, V, V inv) LOWBIT_LAMBDA_INLINE {
                return threshold_code<V, ::lowbit::detail::lane_ops<V>, 7>(r, x, s, inv);
            });
        else
            f([r](V x, V s, V, V, V inv) LOWBIT_LAMBDA_INLINE { return threshold_code<V>(r, x, s, inv); });
        break;
    }
    case encode_kind::minifloat: {
        const minifloat_rule r = *j.minifloat;
        f([r](V x, V s, V, V, V) LOWBIT_LAMBDA_INLINE { return minifloat_code<V>(r, x, s); });
        break;
    }
    }
}

/// Each row, `chunk` columns at a time: `segment(x, n, s, z, b, dst)` codes
/// n values of one group into dst (as int32), then `pack(codes, n, out)`
/// packs the chunk's n codes (a buffer of `chunk` it may overwrite past n).
template <class Segment, class Pack>
LOWBIT_FORCE_INLINE void encode_rows(const encode_job& j, Segment&& segment, Pack&& pack) noexcept {
    alignas(64) std::int32_t buf[chunk];
    // The prefetch slice per chunk: the job's chunks cover prefetch_bytes.
    const std::size_t chunks = j.rows * ((j.cols + chunk - 1) / chunk);
    const std::size_t slice = chunks ? (j.prefetch_bytes + chunks - 1) / chunks : 0;
    const char* pf = static_cast<const char*>(j.prefetch);
    const char* pf_end = pf ? pf + j.prefetch_bytes : nullptr;
    for (std::size_t r = 0; r < j.rows; ++r) {
        const float* xr = j.x + r * j.x_stride;
        const std::size_t p0 = r * j.param_stride;
        std::uint8_t* out = j.codes + r * j.code_stride;
        for (std::size_t c0 = 0; c0 < j.cols; c0 += chunk) {
            const std::size_t c1 = std::min(j.cols, c0 + chunk);
            // Group g covers columns [g * group, g_end); one division per
            // chunk, not per group (groups of 32 are two batches of work).
            std::size_t g = c0 / j.group, g_end = (g + 1) * j.group;
            for (std::size_t c = c0; c < c1; ++g, g_end += j.group) {
                const std::size_t end = std::min(c1, g_end);
                const std::size_t at = (p0 + g) * j.param_step;
                const float z = j.zero ? j.zero[at] : 0.0f, b = j.bias ? j.bias[at] : 0.0f;
                segment(xr + c, end - c, j.scale[at], z, b, buf + (c - c0));
                c = end;
            }
            pack(buf, c1 - c0, out + c0 / 8 * static_cast<std::size_t>(j.bits));
#if defined(__GNUC__)
            for (const char* e = pf + std::min<std::size_t>(slice, static_cast<std::size_t>(pf_end - pf)); pf < e; pf += 64)
                __builtin_prefetch(pf);
#endif
        }
    }
}

/// One group per lane: the stored params and the ones to encode with, and
/// whether fit_stats must fit the group instead (see fit_job::flag).
template <class V>
struct fit_lanes {
    fitted<V> stored, encode;
    V bad;  ///< nonzero where flagged
};

template <class V, class Ops = ::lowbit::detail::lane_ops<V>>
LOWBIT_FORCE_INLINE fit_lanes<V> fit_group_lanes(const fit_rule& r, V mn, V mx, V m) noexcept {
    const fitted<V> f = fit_params<V, Ops>(r, mn, mx, m);
    fit_lanes<V> out;
    out.stored = {stored_scale<V, Ops>(f.scale, r.scale_type), f.zero,
                  round_to_param_dtype<V, Ops>(f.bias, r.scale_type)};
    out.encode = r.kind == fit_kind::mlx ? f : out.stored;
    // finite(v): v - v is 0 for finite v and NaN otherwise.
    const auto finite = [](V v) { return (v - v) == V(0.0f); };
    const auto bad = (mn == V(0.0f)) | (mx == V(0.0f));
    out.bad = Ops::select(bad, V(1.0f), V(0.0f)) +
              Ops::select(finite(out.stored.scale), V(0.0f), V(1.0f)) +
              Ops::select(Ops::is_inf(out.stored.bias), V(1.0f), V(0.0f));
    return out;
}

inline void put_params(const fitted<float>& p, float* dst, std::size_t step) noexcept {
    dst[0] = p.scale;
    if (step >= 3) {
        dst[1] = p.zero;
        dst[2] = p.bias;
    }
}

}  // namespace detail::encode

inline void fit_ref(const fit_job& j) noexcept {
    for (std::size_t g = 0; g < j.count; ++g) {
        const auto f = detail::encode::fit_group_lanes<float>(*j.rule, j.min[g], j.max[g], j.signed_absmax[g]);
        detail::encode::put_params(f.stored, j.stored + g * j.step, j.step);
        detail::encode::put_params(f.encode, j.encode + g * j.step, j.step);
        j.flag[g] = f.bad != 0.0f;
    }
}

/// Scalar reference: the rules on single floats.
inline void encode_ref(const encode_job& j) noexcept {
    detail::encode::with_rule<float>(j, [&](auto code) {
        detail::encode::encode_rows(
            j,
            [&](const float* x, std::size_t n, float s, float z, float b, std::int32_t* dst) {
                const float inv = detail::encode::group_inverse(j, s);
                for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<std::int32_t>(code(x[i], s, z, b, inv));
            },
            [&](std::int32_t* c, std::size_t n, std::uint8_t* out) {
                detail::encode::with_bits(j.bits, [&](auto k) { detail::encode::pack_chunk<decltype(k)::value>(c, n, out); });
            });
    });
}

inline void candidate_errors_ref(const candidates_job& j) noexcept {
    for (std::size_t k = 0; k < j.count; ++k) j.err[k] = 0.0;
    for (std::size_t i = 0; i < j.n; ++i) {
        const double wt = j.weight ? static_cast<double>(j.weight[i]) : 1.0;
        for (std::size_t k = 0; k < j.count; ++k) {
            const float c = affine_code(*j.rule, j.x[i], j.scale[k], j.zero[k], j.bias[k]);
            const float y = ::lowbit::detail::unfused((c - j.zero[k]) * j.scale[k]) + j.bias[k];
            const double d = static_cast<double>(j.x[i]) - static_cast<double>(y);
            j.err[k] = j.err[k] + ::lowbit::detail::unfused(wt * d * d);
        }
    }
}

inline void group_extremes_ref(const extremes_job& j) noexcept {
    const std::size_t per_row = j.cols / j.group;
    for (std::size_t r = 0; r < j.rows; ++r)
        for (std::size_t g = 0; g < per_row; ++g) {
            const float* x = j.x + r * j.x_stride + g * j.group;
            float mn = x[0], mx = x[0], m = x[0], amax = std::fabs(x[0]);
            bool finite = std::isfinite(x[0]);
            for (std::size_t i = 1; i < j.group; ++i) {
                mn = std::fmin(mn, x[i]);
                mx = std::fmax(mx, x[i]);
                finite &= std::isfinite(x[i]);
                if (std::fabs(x[i]) > amax) {
                    amax = std::fabs(x[i]);
                    m = x[i];
                }
            }
            if (!finite) *j.non_finite = true;
            j.min[r * per_row + g] = mn;
            j.max[r * per_row + g] = mx;
            j.signed_absmax[r * per_row + g] = m;
        }
}

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail {
namespace encode {

/// pack_chunk<K> on batches: the chunk's int32 codes narrowed to bytes (a
/// loop of fixed length, which the compiler vectorises into the instruction
/// set's narrowing moves or packs), eight of them at a time packed in
/// uint64 lanes (pack_eight), then each lane's K bytes stored. `code` holds
/// `chunk` entries; those from n on are overwritten with 0.
/// Quantize, 11008 x 4096, one thread, EPYC 2.6 GHz, AVX-512: nf4-b64
/// 1 480 -> 1 650 Mw/s, int3-g128 1 450 -> 1 730 (pack_chunk's code-by-code
/// packing before). Narrowing with intrinsics (vpmovdb; packs on AVX2 and
/// SSE4.1) measured no faster than this loop.
template <int K, class Arch>
LOWBIT_FORCE_INLINE void pack_chunk_simd(std::int32_t* code, std::size_t n, std::uint8_t* out) noexcept {
    using B = xsimd::batch<std::uint8_t, Arch>;
    constexpr std::size_t step = B::size;
    static_assert(chunk % step == 0);
    if constexpr (std::endian::native != std::endian::little) {
        pack_chunk<K>(code, n, out);
    } else {
        for (std::size_t i = n; i < chunk; ++i) code[i] = 0;
        alignas(64) std::uint8_t byte[chunk];
        for (std::size_t i = 0; i < chunk; ++i) byte[i] = static_cast<std::uint8_t>(code[i]);
        const std::size_t bytes = (n * K + 7) / 8, groups = (n + 7) / 8;
        if constexpr (K == 8) {
            std::memcpy(out, byte, n);
        } else {
            alignas(64) std::uint64_t word[chunk / 8];
            for (std::size_t i = 0; i < n; i += step)
                pack_eight<K>(::lowbit::detail::simd::bitcast<std::uint64_t>(B::load_aligned(byte + i)))
                    .store_aligned(word + i / 8);
            // Each eight codes' K bytes: 8-byte stores, each overwriting the
            // previous one's spare bytes, while they stay inside the packed bytes.
            std::size_t g = 0;
            for (; g < groups && g * K + 8 <= bytes; ++g) std::memcpy(out + g * K, word + g, 8);
            for (; g < groups; ++g) std::memcpy(out + g * K, word + g, std::min<std::size_t>(K, bytes - g * K));
        }
    }
}

template <class Arch>
void encode_simd(const encode_job& j) noexcept {
    using V = xsimd::batch<float, Arch>;
    constexpr std::size_t L = V::size;
    const auto pack = [&](std::int32_t* c, std::size_t n, std::uint8_t* out) {
        with_bits(j.bits, [&](auto k) { pack_chunk_simd<decltype(k)::value, Arch>(c, n, out); });
    };
    with_rule<V>(j, [&](auto code) {
        encode_rows(j, [&](const float* x, std::size_t n, float s, float z, float b, std::int32_t* dst) {
            const V vs(s), vz(z), vb(b), vinv(group_inverse(j, s));
            std::size_t i = 0;
            for (; i + L <= n; i += L)
                xsimd::to_int(code(V::load_unaligned(x + i), vs, vz, vb, vinv)).store_unaligned(dst + i);
            if (i < n) {
                // The tail as one padded batch: the float rules are never
                // compiled under this TU's -m flags.
                alignas(64) float t[L] = {};
                for (std::size_t k = 0; i + k < n; ++k) t[k] = x[i + k];
                alignas(64) std::int32_t c[L];
                xsimd::to_int(code(V::load_aligned(t), vs, vz, vb, vinv)).store_aligned(c);
                for (std::size_t k = 0; i + k < n; ++k) dst[i + k] = c[k];
            }
        }, pack);
    });
}

template <class Arch>
void fit_simd(const fit_job& j) noexcept {
    using V = xsimd::batch<float, Arch>;
    constexpr std::size_t L = V::size;
    const fit_rule r = *j.rule;
    alignas(64) float out[7][L];
    for (std::size_t g0 = 0; g0 < j.count; g0 += L) {
        const std::size_t n = std::min(L, j.count - g0);
        V mn, mx, m;
        if (n == L) {
            mn = V::load_unaligned(j.min + g0);
            mx = V::load_unaligned(j.max + g0);
            m = V::load_unaligned(j.signed_absmax + g0);
        } else {  // lanes past the end fit a harmless group (-1, 1)
            for (std::size_t k = 0; k < L; ++k) {
                out[0][k] = k < n ? j.min[g0 + k] : -1.0f;
                out[1][k] = k < n ? j.max[g0 + k] : 1.0f;
                out[2][k] = k < n ? j.signed_absmax[g0 + k] : 1.0f;
            }
            mn = V::load_aligned(out[0]);
            mx = V::load_aligned(out[1]);
            m = V::load_aligned(out[2]);
        }
        const auto f = fit_group_lanes<V>(r, mn, mx, m);
        f.bad.store_aligned(out[6]);
        for (std::size_t k = 0; k < n; ++k) j.flag[g0 + k] = out[6][k] != 0.0f;
        if (n == L && j.step == 1) {
            f.stored.scale.store_unaligned(j.stored + g0);
            f.encode.scale.store_unaligned(j.encode + g0);
            continue;
        }
        f.stored.scale.store_aligned(out[0]);
        f.stored.zero.store_aligned(out[1]);
        f.stored.bias.store_aligned(out[2]);
        f.encode.scale.store_aligned(out[3]);
        f.encode.zero.store_aligned(out[4]);
        f.encode.bias.store_aligned(out[5]);
        for (std::size_t k = 0; k < n; ++k) {
            put_params({out[0][k], out[1][k], out[2][k]}, j.stored + (g0 + k) * j.step, j.step);
            put_params({out[3][k], out[4][k], out[5][k]}, j.encode + (g0 + k) * j.step, j.step);
        }
    }
}

/// One level of fold_tree past the zips: pairs of batches in which lanes
/// i and i ^ H hold the same group become one batch, lanes with bit H clear
/// from the first of the pair, set from the second.
template <std::size_t H, class V, class Op>
LOWBIT_FORCE_INLINE void fold_level(V* in, std::size_t width, Op op) noexcept {
    namespace s = ::lowbit::detail::simd;
    // The lane mask from a constant, not built on the stack at every call.
    alignas(64) static constexpr std::array<float, 16> b = [] {
        std::array<float, 16> t{};
        for (std::size_t l = 0; l < t.size(); ++l) t[l] = (l & H) ? 1.0f : 0.0f;
        return t;
    }();
    const auto first = V::load_aligned(b.data()) == V(0.0f);
    for (std::size_t k = 0; k < width / 2; ++k) {
        const V p = in[2 * k], q = in[2 * k + 1];
        in[k] = op(xsimd::select(first, p, s::swap_lanes<H>(q)), xsimd::select(first, s::swap_lanes<H>(p), q));
    }
}

/// Folds L batches, one per group, into one batch holding one lane per
/// group: two levels pairing batches by zip_lo and zip_hi and combining the
/// two (after which lanes i and i + 4 hold the same group, whichever way the
/// xsimd version interleaves: within 128-bit blocks or across the batch),
/// then fold_level at lane distance 4, 8. Slot s of `in` must hold group
/// tree_order's slot_group[s] for lane l to come out as group l.
template <class V, class Op>
LOWBIT_FORCE_INLINE V fold_tree(V* in, Op op) noexcept {
    constexpr std::size_t L = V::size;
    static_assert(L >= 4 && L <= 16);
    std::size_t width = L;
    for (int level = 0; level < 2; ++level, width /= 2)
        for (std::size_t k = 0; k < width / 2; ++k)
            in[k] = op(xsimd::zip_lo(in[2 * k], in[2 * k + 1]), xsimd::zip_hi(in[2 * k], in[2 * k + 1]));
    if constexpr (L >= 8) {
        fold_level<4>(in, width, op);
        width /= 2;
    }
    if constexpr (L >= 16) fold_level<8>(in, width, op);
    return in[0];
}

/// Which group each slot of fold_tree's input must hold for lane l to come
/// out as group l: the tree run once on slots filled with their own index
/// (every lane of a result holds the one slot it came from), inverted. The
/// zips interleave differently across xsimd versions and instruction sets;
/// this finds out rather than assume.
template <class V>
struct tree_order {
    std::size_t slot_group[V::size];
    tree_order() noexcept {
        constexpr std::size_t L = V::size;
        V in[L];
        for (std::size_t s = 0; s < L; ++s) in[s] = V(static_cast<float>(s));
        alignas(64) float lane_slot[L];
        fold_tree(in, [](V a, V b) { return xsimd::min(a, b); }).store_aligned(lane_slot);
        for (std::size_t l = 0; l < L; ++l) slot_group[static_cast<std::size_t>(lane_slot[l])] = l;
    }
};

template <class Arch>
void extremes_simd(const extremes_job& j) noexcept {
    using V = xsimd::batch<float, Arch>;
    constexpr std::size_t L = V::size;
    namespace s = ::lowbit::detail::simd;
    const std::size_t per_row = j.cols / j.group, n = j.group;
    // x - x is 0 for finite x and NaN otherwise: the sum stays NaN once it
    // met one, and costs one subtract and one add per batch.
    V poison(0.0f);
    // The first element of largest magnitude of a group whose largest and
    // smallest values are +a and -a (else it is the one of them with the
    // larger magnitude).
    const auto first_largest = [&](const float* x, float mx) {
        std::size_t at = 0;
        while (at < n && !(std::fabs(x[at]) == mx)) ++at;
        return at < n ? x[at] : mx;
    };
    static const tree_order<V> order;
    for (std::size_t r = 0; r < j.rows; ++r) {
        const float* xr = j.x + r * j.x_stride;
        float* out_min = j.min + r * per_row;
        float* out_max = j.max + r * per_row;
        float* out_m = j.signed_absmax + r * per_row;
        std::size_t g = 0;
        if (n % L == 0) {
            // L groups of whole batches at a time: each group folded
            // lane-wise, then the L folded batches by fold_tree into one
            // batch of their L minima (maxima) in order, which the fit
            // kernel loads as they are; in place of a horizontal reduction
            // and scalar stores per group.
            // Quantize, AVX-512, EPYC 2.6 GHz, four groups a step reduced by
            // zips and a butterfly, finished in scalar code -> this:
            // nvfp4 660 -> 1 040, iq4nl-b32 1 400 -> 2 080, mxfp4 1 690 -> 2 600 Mw/s (best of 10).
            for (; g + L <= per_row; g += L) {
                V mn[L], mx[L];
                for (std::size_t k = 0; k < L; ++k) {
                    const float* x = xr + (g + order.slot_group[k]) * n;
                    mn[k] = mx[k] = V::load_unaligned(x);
                    poison = poison + (mn[k] - mn[k]);
                    for (std::size_t i = L; i < n; i += L) {
                        const V v = V::load_unaligned(x + i);
                        mn[k] = xsimd::min(mn[k], v);
                        mx[k] = xsimd::max(mx[k], v);
                        poison = poison + (v - v);
                    }
                }
                const V vmn = fold_tree(mn, [](V a, V b) { return xsimd::min(a, b); });
                const V vmx = fold_tree(mx, [](V a, V b) { return xsimd::max(a, b); });
                vmn.store_unaligned(out_min + g);
                vmx.store_unaligned(out_max + g);
                xsimd::select(vmx > -vmn, vmx, vmn).store_unaligned(out_m + g);
                if (xsimd::any(vmx == -vmn))  // rare: look up those groups' first largest
                    for (std::size_t k = 0; k < L; ++k)
                        if (out_max[g + k] == -out_min[g + k]) out_m[g + k] = first_largest(xr + (g + k) * n, out_max[g + k]);
            }
        }
        for (; g < per_row; ++g) {
            const float* x = xr + g * n;
            V vmin, vmax;
            if (n < L) {  // too small for a batch: pad with the first value
                alignas(64) float t[L];
                for (std::size_t k = 0; k < L; ++k) t[k] = x[k < n ? k : 0];
                vmin = vmax = V::load_aligned(t);
                poison = poison + (vmin - vmin);
            } else {
                vmin = vmax = V::load_unaligned(x);
                poison = poison + (vmin - vmin);
                std::size_t i = L;
                for (; i + L <= n; i += L) {
                    const V v = V::load_unaligned(x + i);
                    vmin = xsimd::min(vmin, v);
                    vmax = xsimd::max(vmax, v);
                    poison = poison + (v - v);
                }
                if (i < n) {  // the last, overlapping batch
                    const V v = V::load_unaligned(x + n - L);
                    vmin = xsimd::min(vmin, v);
                    vmax = xsimd::max(vmax, v);
                    poison = poison + (v - v);
                }
            }
            const float mn = -s::reduce_max(-vmin), mx = s::reduce_max(vmax);
            out_min[g] = mn;
            out_max[g] = mx;
            out_m[g] = mx == -mn ? first_largest(x, mx) : mx > -mn ? mx : mn;
        }
    }
    // isnan, not poison != poison: xsimd 8.1's AVX-512 != is the ordered
    // compare, false for NaN.
    if (xsimd::any(xsimd::isnan(poison))) *j.non_finite = true;
}

/// Candidates across lanes, a batch of them at a time: each value against
/// every candidate of the batch, the errors accumulated in double lanes held
/// in registers, in the scalar loop's order of values.
template <class Arch>
void candidates_simd(const candidates_job& j) noexcept {
    using V = xsimd::batch<float, Arch>;
    using D = xsimd::batch<double, Arch>;
    constexpr std::size_t L = V::size, LD = D::size;
    namespace s = ::lowbit::detail::simd;
    static_assert(L == 2 * LD);
    const affine_rule rule = *j.rule;
    for (std::size_t k0 = 0; k0 < j.count; k0 += L) {
        alignas(64) float sc[L] = {}, ze[L] = {}, bi[L] = {};
        for (std::size_t k = k0; k < std::min(j.count, k0 + L); ++k)
            sc[k - k0] = j.scale[k], ze[k - k0] = j.zero[k], bi[k - k0] = j.bias[k];
        const V sv = V::load_aligned(sc), zv = V::load_aligned(ze), bv = V::load_aligned(bi);
        const V iv = scale_inverse(sv);
        D lo(0.0), hi(0.0);
        for (std::size_t i = 0; i < j.n; ++i) {
            const V c = affine_code<V>(rule, V(j.x[i]), sv, zv, bv, iv);
            const V y = ::lowbit::detail::unfused((c - zv) * sv) + bv;
            const D xd(static_cast<double>(j.x[i]));
            const D wt(j.weight ? static_cast<double>(j.weight[i]) : 1.0);
            const D dl = xd - s::widen_low(y), dh = xd - s::widen_high(y);
            lo = lo + ::lowbit::detail::unfused(wt * dl * dl);
            hi = hi + ::lowbit::detail::unfused(wt * dh * dh);
        }
        alignas(64) double err[L];
        lo.store_aligned(err);
        hi.store_aligned(err + LD);
        for (std::size_t k = k0; k < std::min(j.count, k0 + L); ++k) j.err[k] = err[k - k0];
    }
}

}  // namespace encode
}  // namespace detail
LOWBIT_SIMD_WARNINGS_ON
#endif

template <class Arch>
void encode_fn::operator()(Arch, const encode_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, encode_ref(j), detail::encode::encode_simd<Arch>(j))
}

template <class Arch>
void fit_fn::operator()(Arch, const fit_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, fit_ref(j), detail::encode::fit_simd<Arch>(j))
}

template <class Arch>
void candidate_errors_fn::operator()(Arch, const candidates_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, candidate_errors_ref(j), detail::encode::candidates_simd<Arch>(j))
}

template <class Arch>
void group_extremes_fn::operator()(Arch, const extremes_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, group_extremes_ref(j), detail::encode::extremes_simd<Arch>(j))
}

namespace detail::encode {

inline void validate(const encode_job& j) {
    if (j.bits < 1 || j.bits > 8)
        LOWBIT_THROW(errc::invalid_argument, "encode: bits = " + std::to_string(j.bits) + ", must be 1..8");
    if (j.group == 0) LOWBIT_THROW(errc::invalid_argument, "encode: group size is 0");
    if (j.param_step == 0) LOWBIT_THROW(errc::invalid_argument, "encode: param_step is 0");
    if (j.cols % j.group != 0 && !(j.param_stride == 0 && j.group == j.cols))
        LOWBIT_THROW(errc::not_divisible, "encode: " + std::to_string(j.cols) +
                                              " columns do not divide into groups of " + std::to_string(j.group));
    if (j.rows == 0 || j.cols == 0) return;
    if (!j.x || !j.scale || !j.codes) LOWBIT_THROW(errc::invalid_argument, "encode: x, scale and codes must not be null");
    if (j.code_stride < (j.cols * static_cast<std::size_t>(j.bits) + 7) / 8)
        LOWBIT_THROW(errc::invalid_argument, "encode: code_stride " + std::to_string(j.code_stride) +
                                                 " is less than a row of codes");
    const bool ok = (j.kind == encode_kind::affine && j.affine) ||
                    (j.kind == encode_kind::thresholds && j.thresholds) ||
                    (j.kind == encode_kind::minifloat && j.minifloat);
    if (!ok) LOWBIT_THROW(errc::invalid_argument, "encode: the job's rule is missing");
}

}  // namespace detail::encode

/// Validates, then encodes on the active instruction set.
inline void encode(const encode_job& j) {
    detail::encode::validate(j);
    if (j.rows == 0 || j.cols == 0) return;
    dispatch(encode_fn{}, j);
}

/// Validates, then scores the candidates on the active instruction set.
inline void candidate_errors(const candidates_job& j) {
    if (j.count == 0 || j.count > candidates_job::max_candidates)
        LOWBIT_THROW(errc::invalid_argument, "candidate_errors: " + std::to_string(j.count) +
                                                 " candidates (need 1.." +
                                                 std::to_string(candidates_job::max_candidates) + ")");
    if (!j.rule || !j.scale || !j.zero || !j.bias || !j.err || (j.n && !j.x))
        LOWBIT_THROW(errc::invalid_argument, "candidate_errors: null pointer");
    dispatch(candidate_errors_fn{}, j);
}

/// Validates, then fits on the active instruction set.
inline void fit_groups(const fit_job& j) {
    if (j.count == 0) return;
    if (!j.min || !j.max || !j.signed_absmax || !j.rule || !j.stored || !j.encode || !j.flag)
        LOWBIT_THROW(errc::invalid_argument, "fit_groups: null pointer");
    if (j.step != 1 && j.step != 3) LOWBIT_THROW(errc::invalid_argument, "fit_groups: step must be 1 or 3");
    if (j.rule->bits < 1 || j.rule->bits > 8)
        LOWBIT_THROW(errc::invalid_argument, "fit_groups: bits = " + std::to_string(j.rule->bits) + ", must be 1..8");
    dispatch(fit_fn{}, j);
}

/// Validates, then gathers group extremes on the active instruction set.
inline void gather_extremes(const extremes_job& j) {
    if (j.group == 0 || j.cols % j.group != 0)
        LOWBIT_THROW(errc::invalid_argument, "gather_extremes: " + std::to_string(j.cols) +
                                                 " columns do not divide into groups of " + std::to_string(j.group));
    if (j.rows == 0 || j.cols == 0) return;
    if (!j.x || !j.min || !j.max || !j.signed_absmax || !j.non_finite)
        LOWBIT_THROW(errc::invalid_argument, "gather_extremes: x, min, max, signed_absmax and non_finite must not be null");
    dispatch(group_extremes_fn{}, j);
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

#define LOWBIT_KERNELS_ENCODE(EXT, ARCH)                                                                          \
    EXT template void lowbit::kernels::encode_fn::operator()<ARCH>(ARCH, const lowbit::kernels::encode_job&)     \
        const noexcept;                                                                                         \
    EXT template void lowbit::kernels::fit_fn::operator()<ARCH>(ARCH, const lowbit::kernels::fit_job&)           \
        const noexcept;                                                                                         \
    EXT template void lowbit::kernels::group_extremes_fn::operator()<ARCH>(                                     \
        ARCH, const lowbit::kernels::extremes_job&) const noexcept;                                             \
    EXT template void lowbit::kernels::candidate_errors_fn::operator()<ARCH>(                                   \
        ARCH, const lowbit::kernels::candidates_job&) const noexcept;
LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_ENCODE)
