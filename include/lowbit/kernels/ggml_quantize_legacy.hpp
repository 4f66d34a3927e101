#pragma once
// The per-value ggml types on SIMD: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, MXFP4,
// TQ1_0 and TQ2_0, one block per lane (and row-wise on AVX-512).
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../formats/ggml_blocks.hpp"
#include "ggml_quantize_job.hpp"
#include "ggml_quantize_tiles.hpp"  // xsimd, fp_contract, the lanes and transposes

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::ggml_quant {

// ---- legacy 32-blocks, MXFP4, TQ1_0, TQ2_0---------------------------------------
//
// These types do a few operations per value, so here each lane is one block:
// a group of 16 blocks is read column-wise (gathers where the ISA has them),
// every lane runs the scalar quantizer's operations in its order (the running
// max/min scans keep their first-wins and NaN behaviour that way, without
// cross-lane reductions), and the byte columns are transposed back.

inline constexpr int legacy_group = 16;


template <class Arch>
inline ivec<Arch> lane_ids() noexcept {
    alignas(64) static constexpr std::int32_t ids[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return ivec<Arch>::load_aligned(ids);
}

/// Element j of blocks b*lanes .. b*lanes + lanes - 1 (blocks of N floats from x).
template <class Arch, int N>
inline fvec<Arch> column(const float* x, int b, int j) noexcept {
    constexpr int lanes = static_cast<int>(fvec<Arch>::size);
    const float* p = x + static_cast<std::ptrdiff_t>(b * lanes) * N + j;
    // Lane by lane through a buffer. vgatherdps (AVX2) measured slower:
    // q4_0_simd 1 600 vs 1 680 Mw/s, tq1_0 1 040 vs 1 530 (EPYC 2.6 GHz).
    alignas(64) float t[lanes];
    for (int l = 0; l < lanes; ++l) t[l] = p[l * N];
    return fvec<Arch>::load_aligned(t);
}

/// Columns 0..N-1 of the lanes blocks from block b * lanes on (xv[j]: element
/// j of each). AVX-512 transposes 16 x 16 tiles in registers, which costs far
/// fewer load slots than a gather per column. Over the xsimd body (column by
/// column), bench_ggml_quantize <type>_simd on AMD EPYC 2.6 GHz, built as is
/// vs. with LOWBIT_XSIMD_ONLY, best of 2: mxfp4 2 110 vs 1 520 Mw/s, tq1_0
/// 2 400 vs 2 130, tq2_0 2 760 vs 2 110 (with store_bytes' narrowing).
template <class Arch, int N>
inline void load_columns(const float* x, int b, fvec<Arch>* xv) noexcept {
    if constexpr (dq::is_avx512_v<Arch> && N % 16 == 0) {
#if XSIMD_WITH_AVX512BW
        const float* p = x + static_cast<std::ptrdiff_t>(b * 16) * N;
        const float* r[16];
        for (int k = 0; k < 16; ++k) r[k] = p + k * N;
        for (int c0 = 0; c0 < N; c0 += 16) {
            __m512 out[16];
            transpose16<Arch>(r, out);
            for (int j = 0; j < 16; ++j) xv[c0 + j] = fvec<Arch>(out[j]);
            for (int k = 0; k < 16; ++k) r[k] += 16;
        }
#endif
    } else {
        for (int j = 0; j < N; ++j) xv[j] = column<Arch, N>(x, b, j);
    }
}

/// The low bytes of every lane (values already in 0..255) to dst. The x86
/// narrowing over the xsimd body's buffer (as above; AVX2, where this is the
/// only intrinsic on the lane-per-block path): q8_0_simd 2 240 vs 1 540 Mw/s,
/// q4_0 2 270 vs 1 820, q5_1 2 200 vs 1 830, mxfp4 1 160 vs 1 030.
template <class Arch>
inline void store_bytes(const ivec<Arch>& v, std::uint8_t* dst) noexcept {
    constexpr int lanes = static_cast<int>(ivec<Arch>::size);
    if constexpr (dq::is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm512_cvtepi32_epi8(v));
#endif
    } else if constexpr (dq::is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
        const __m256i r = v;
        const __m128i w = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi16(w, w));
#endif
    } else if constexpr (dq::is_sse4_1_v<Arch>) {
#if XSIMD_WITH_SSE4_1
        const __m128i w = _mm_packus_epi32(v, v);
        const std::int32_t b4 = _mm_cvtsi128_si32(_mm_packus_epi16(w, w));
        std::memcpy(dst, &b4, 4);
#endif
    } else {
        alignas(64) std::int32_t t[lanes];
        v.store_aligned(t);
        for (int l = 0; l < lanes; ++l) dst[l] = static_cast<std::uint8_t>(t[l]);
    }
}

/// C's (int8_t)f as g++ emits it: truncate, keep the low byte, sign-extend.
template <class Arch>
inline ivec<Arch> trunc_i8(const fvec<Arch>& v) noexcept {
    return (xsimd::to_int(v) << 24) >> 24;
}

/// roundf (half away from zero) per lane. v - trunc(v) is exact below 2^23,
/// and above it v is already whole.
template <class Arch>
inline fvec<Arch> round_away(const fvec<Arch>& v) noexcept {
    using B = fvec<Arch>;
    const B t = xsimd::trunc(v);
    const B step = xsimd::select(v < B(0.f), B(-1.f), B(1.f));
    return xsimd::select(xsimd::abs(v - t) >= B(0.5f), t + step, t);
}

/// static_cast<int>(std::lround(v)) in its low byte, as the scalar code has
/// it. lround is exact to 2^63, where an integer at or beyond 2^31 in float
/// has a low byte of 0. x86's conversion gives INT_MIN there (low byte 0, as
/// does lround's LONG_MIN beyond 2^63); AArch64's saturates to INT_MAX, whose
/// low byte is lround's only from 2^63 on, so [2^31, 2^63) goes in as 0.
template <class Arch>
inline ivec<Arch> lround_low_byte(const fvec<Arch>& v) noexcept {
#if defined(__aarch64__)
    using B = fvec<Arch>;
    const B w = xsimd::select((v >= B(2147483648.f)) & (v < B(9223372036854775808.f)), B(0.f), v);
    return xsimd::to_int(round_away<Arch>(w));
#else
    return xsimd::to_int(round_away<Arch>(v));
#endif
}

template <class Arch>
inline fvec<Arch> inverse_or_zero(const fvec<Arch>& d) noexcept {
    return xsimd::select(vne(d, fvec<Arch>(0.f)), vdiv(fvec<Arch>(1.f), d), fvec<Arch>(0.f));
}

/// ggml's MXFP4 exponent from a block's amax (log2f as the scalar code).
template <class Arch>
inline std::uint8_t mxfp4_exponent(float amax) noexcept {
    if (!(amax > 0.0f)) return 0;
    // floor(log2f(a)) is a's exponent unless log2f rounds up to the next
    // integer, which needs a mantissa just below 2 (within far less than
    // 2^-12 of it); those, subnormals, Inf and NaN take the libm call.
    const std::uint32_t bits = std::bit_cast<std::uint32_t>(amax);
    const std::uint32_t e = bits >> 23;
    if (e != 0 && e != 0xFF && (bits & 0x007FFFFFu) < 0x007FF800u)
        return static_cast<std::uint8_t>((static_cast<int>(e) - 2) & 0xFF);
    const float biased = std::floor(std::log2(amax)) - 2.0f + 127.0f;
    return std::isfinite(biased) ? static_cast<std::uint8_t>(static_cast<int>(biased) & 0xFF) : std::uint8_t{0};
}

template <class Arch>
inline float mxfp4_half_scale(std::uint8_t e) noexcept {
    const std::uint32_t bits = e < 2 ? (0x00200000u << e) : (static_cast<std::uint32_t>(e - 1) << 23);
    return std::bit_cast<float>(bits);
}

template <ggml::type T>
inline constexpr int legacy_block_values = (T == ggml::type::tq1_0 || T == ggml::type::tq2_0) ? 256 : 32;

/// Block header bytes before qs, and the offset of qh (Q5) in the block.
template <ggml::type T>
inline constexpr int legacy_qs_offset = T == ggml::type::q4_0 ? 2
                                        : T == ggml::type::q4_1 ? 4
                                        : T == ggml::type::q5_0 ? 6
                                        : T == ggml::type::q5_1 ? 8
                                        : T == ggml::type::q8_0 ? 2
                                        : T == ggml::type::mxfp4 ? 1
                                                                : 0;

template <ggml::type T>
inline constexpr std::size_t legacy_block_bytes = T == ggml::type::q4_0   ? sizeof(ggml::block_q4_0)
                                                  : T == ggml::type::q4_1 ? sizeof(ggml::block_q4_1)
                                                  : T == ggml::type::q5_0 ? sizeof(ggml::block_q5_0)
                                                  : T == ggml::type::q5_1 ? sizeof(ggml::block_q5_1)
                                                  : T == ggml::type::q8_0 ? sizeof(ggml::block_q8_0)
                                                  : T == ggml::type::mxfp4 ? sizeof(ggml::block_mxfp4)
                                                  : T == ggml::type::tq1_0 ? sizeof(ggml::block_tq1_0)
                                                                           : sizeof(ggml::block_tq2_0);

/// TQ1_0's byte from five (or four, then a zero) trits: q = the base-3 number
/// mod 256, then (q * 256 + 242) / 243 mod 256. As 256 = 243 + 13, that
/// quotient is q + (13 q + 242) / 243, whose division is a multiply and shift
/// (exact for every q, checked below).
constexpr bool tq1_div243_exact() noexcept {
    for (std::int32_t q = 0; q < 256; ++q)
        if ((q * 256 + 242) / 243 != q + (((13 * q + 242) * 1079) >> 18)) return false;
    return true;
}
static_assert(tq1_div243_exact());

template <class Arch>
inline ivec<Arch> tq1_byte(const ivec<Arch>* t, int count) noexcept {
    using I = ivec<Arch>;
    I q = t[0];
    for (int k = 1; k < count; ++k) q = q * I(3) + t[k];
    for (int k = count; k < 5; ++k) q = q * I(3);
    q = q & I(0xFF);
    return (q + (((q * I(13) + I(242)) * I(1079)) >> 18)) & I(0xFF);
}

/// 16 whole blocks of type T from x to out.
template <class Arch, ggml::type T>
inline void legacy_group_run(const float* x, unsigned char* out) noexcept {
    using B = fvec<Arch>;
    using I = ivec<Arch>;
    using ggml::type;
    constexpr int lanes = static_cast<int>(B::size), NB = legacy_group / lanes, N = legacy_block_values<T>;
    constexpr std::size_t BB = legacy_block_bytes<T>;
    constexpr int nrows = T == type::q8_0 ? 32 : T == type::tq2_0 ? 64 : T == type::tq1_0 ? 48 : 16;
    constexpr bool q5 = T == type::q5_0 || T == type::q5_1;
    constexpr bool affine = T == type::q4_1 || T == type::q5_1;
    alignas(16) std::uint8_t rows[nrows][16];
    alignas(64) std::uint32_t dh[legacy_group], mh[legacy_group], qh[legacy_group];
    alignas(64) float stat[legacy_group];
    std::uint8_t ex[legacy_group];
    alignas(16) std::uint8_t tq1_qh[4][16];
    static_cast<void>(tq1_qh);
    static_cast<void>(mh);
    static_cast<void>(qh);
    static_cast<void>(stat);
    static_cast<void>(ex);
    for (int b = 0; b < NB; ++b) {
        B xv[N];
        load_columns<Arch, N>(x, b, xv);
        if constexpr (T == type::q8_0 || T == type::tq1_0 || T == type::tq2_0) {
            B amax(0.f);
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < N; ++j) {
                const B a = xsimd::abs(xv[j]);
                amax = xsimd::select(amax > a, amax, a);
            }
            const B d = T == type::q8_0 ? vdiv(amax, B(127.0f)) : amax;
            const B id = inverse_or_zero<Arch>(d);
            dq::fp16_bits<Arch>(d).store_aligned(dh + b * lanes);
            if constexpr (T == type::q8_0) {
                LOWBIT_GGML_QUANT_UNROLL(32)
                for (int j = 0; j < 32; ++j)
                    store_bytes<Arch>(xsimd::to_int(round_away<Arch>(vmul(xv[j], id))) & I(0xFF), rows[j] + b * lanes);
            } else if constexpr (T == type::tq1_0) {
                // ggml_blocks.hpp's quantize_row_tq1_0 has the element order.
                const auto trit = [&](int e) { return lround_low_byte<Arch>(vmul(xv[e], id)) + I(1); };
                for (int m = 0; m < 32; ++m) {
                    I t[5];
                    for (int k = 0; k < 5; ++k) t[k] = trit(m + 32 * k);
                    store_bytes<Arch>(tq1_byte<Arch>(t, 5), rows[m] + b * lanes);
                }
                for (int m = 0; m < 16; ++m) {
                    I t[5];
                    for (int k = 0; k < 5; ++k) t[k] = trit(160 + m + 16 * k);
                    store_bytes<Arch>(tq1_byte<Arch>(t, 5), rows[32 + m] + b * lanes);
                }
                for (int j = 0; j < 4; ++j) {
                    I t[4];
                    for (int k = 0; k < 4; ++k) t[k] = trit(240 + j + 4 * k);
                    store_bytes<Arch>(tq1_byte<Arch>(t, 4), tq1_qh[j] + b * lanes);
                }
            } else {
                for (int r = 0; r < 64; ++r) {
                    const int half = r / 32, m = r % 32;
                    I q(0);
                    for (int k = 0; k < 4; ++k) {
                        const B v = vmul(xv[128 * half + 32 * k + m], id);
                        q = q | (((lround_low_byte<Arch>(v) + I(1)) & I(3)) << (2 * k));
                    }
                    store_bytes<Arch>(q, rows[r] + b * lanes);
                }
            }
        } else if constexpr (T == type::mxfp4) {
            B amax(0.f);
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < N; ++j) {
                const B a = xsimd::abs(xv[j]);
                amax = xsimd::select(a > amax, a, amax);
            }
            amax.store_aligned(stat + b * lanes);
            alignas(64) float dv[lanes];
            for (int l = 0; l < lanes; ++l) {
                ex[b * lanes + l] = mxfp4_exponent<Arch>(stat[b * lanes + l]);
                dv[l] = mxfp4_half_scale<Arch>(ex[b * lanes + l]);
            }
            const B d = B::load_aligned(dv);
            // For v < 0 the negative entries' errors are the positive ones'
            // for |v|, and a positive entry is never nearer, so search the
            // magnitudes and set the sign bit of the index afterwards.
            constexpr float mags[8] = {0, 1, 2, 3, 4, 6, 8, 12};
            B cd[8];
            for (int c = 0; c < 8; ++c) cd[c] = vmul(B(mags[c]), d);
            I lv[32];
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < 32; ++j) {
                const B av = xsimd::abs(xv[j]);
                B best = xsimd::abs(cd[0] - av);
                B idx(0.f);
                LOWBIT_GGML_QUANT_UNROLL(8)
                for (int c = 1; c < 8; ++c) {
                    const B err = xsimd::abs(cd[c] - av);
                    const auto lt = err < best;
                    best = xsimd::select(lt, err, best);
                    idx = xsimd::select(lt, B(static_cast<float>(c)), idx);
                }
                idx = xsimd::select((xv[j] < B(0.f)) & (idx > B(0.f)), idx + B(8.f), idx);
                lv[j] = xsimd::to_int(idx);
            }
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < 16; ++j) store_bytes<Arch>(lv[j] | (lv[j + 16] << 4), rows[j] + b * lanes);
        } else {
            B d, lo;
            if constexpr (affine) {
                B mn(std::numeric_limits<float>::max()), mx(-std::numeric_limits<float>::max());
                LOWBIT_GGML_QUANT_UNROLL(32)
                for (int j = 0; j < N; ++j) {
                    mn = xsimd::select(xv[j] < mn, xv[j], mn);
                    mx = xsimd::select(xv[j] > mx, xv[j], mx);
                }
                d = vdiv(mx - mn, B(q5 ? 31.0f : 15.0f));
                lo = mn;
                dq::fp16_bits<Arch>(mn).store_aligned(mh + b * lanes);
            } else {
                B amax(0.f), mx(0.f);
                LOWBIT_GGML_QUANT_UNROLL(32)
                for (int j = 0; j < N; ++j) {
                    const B a = xsimd::abs(xv[j]);
                    const auto gt = a > amax;
                    amax = xsimd::select(gt, a, amax);
                    mx = xsimd::select(gt, xv[j], mx);
                }
                d = vdiv(mx, B(q5 ? -16.0f : -8.0f));
                lo = B(0.f);
            }
            const B id = inverse_or_zero<Arch>(d);
            dq::fp16_bits<Arch>(d).store_aligned(dh + b * lanes);
            I lv[32];
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < 32; ++j) {
                if constexpr (T == type::q4_0)
                    lv[j] = xsimd::min(trunc_i8<Arch>(vmul(xv[j], id) + B(8.5f)), I(15));
                else if constexpr (T == type::q5_0)
                    lv[j] = xsimd::min(trunc_i8<Arch>(vmul(xv[j], id) + B(16.5f)), I(31));
                else if constexpr (T == type::q4_1)
                    lv[j] = xsimd::min(trunc_i8<Arch>(vmul(xv[j] - lo, id) + B(0.5f)), I(15));
                else
                    lv[j] = xsimd::to_int(vmul(xv[j] - lo, id) + B(0.5f)) & I(0xFF);
            }
            LOWBIT_GGML_QUANT_UNROLL(32)
            for (int j = 0; j < 16; ++j)
                store_bytes<Arch>((lv[j] & I(0x0F)) | ((lv[j + 16] & I(0x0F)) << 4), rows[j] + b * lanes);
            if constexpr (q5) {
                I h(0);
                LOWBIT_GGML_QUANT_UNROLL(32)
                for (int j = 0; j < 32; ++j) h = h | (((lv[j] >> 4) & I(1)) << j);
                ::lowbit::detail::simd::bitcast<std::uint32_t>(h).store_aligned(qh + b * lanes);
            }
        }
    }
    const int qs_off = legacy_qs_offset<T>;
    for (int r = 0; r < nrows; r += 16) put_columns<Arch>(rows + r, out + qs_off + r, BB);
    for (int k = 0; k < legacy_group; ++k) {
        unsigned char* blk = out + static_cast<std::size_t>(k) * BB;
        if constexpr (T == type::mxfp4) {
            blk[0] = ex[k];
        } else {
            const auto h16 = static_cast<std::uint16_t>(dh[k]);
            std::memcpy(blk + (T == type::tq2_0 ? 64 : T == type::tq1_0 ? 52 : 0), &h16, 2);
        }
        if constexpr (T == type::tq1_0)
            for (int j = 0; j < 4; ++j) blk[48 + j] = tq1_qh[j][k];
        if constexpr (affine) {
            const auto m16 = static_cast<std::uint16_t>(mh[k]);
            std::memcpy(blk + 2, &m16, 2);
        }
        if constexpr (q5) std::memcpy(blk + qs_off - 4, &qh[k], 4);
    }
}

#if XSIMD_WITH_AVX512BW
// ---- legacy 32-blocks row-wise on AVX-512 ------------------------------------
//
// A 32-value block is two zmm registers, so Q4_0..Q8_0 need no transposes on
// AVX-512: the block's max (or min and max) is reduced in registers, and the
// scalar scan's pick among equal values (the first one, which matters for the
// sign of zero and for Q4_0's sign of the max) is recovered as the first
// element equal to it. d and 1/d are the scalar code's own float operations,
// the codes its unfused mul-then-add and truncation to the low byte.
//
// Over the lane-per-block xsimd body above, bench_ggml_quantize <type>_simd
// (AMD EPYC 2.6 GHz, built as is vs. with LOWBIT_XSIMD_ONLY, best of 2):
// q4_0 6 280 vs 2 420 Mw/s, q4_1 5 740 vs 2 220, q5_0 7 580 vs 2 230, q5_1
// 5 620 vs 2 110, q8_0 5 240 vs 1 870.


/// The largest (Max) or smallest of v's lanes, halving in registers; each
/// step keeps maxps/minps's operand order (a NaN in the first operand gives
/// the second).
template <class Arch, bool Max>
LOWBIT_GGML_QUANT_INLINE float hreduce_ps(__m512 v) noexcept {
    const auto op256 = [](__m256 a, __m256 b) { return Max ? _mm256_max_ps(a, b) : _mm256_min_ps(a, b); };
    const auto op128 = [](__m128 a, __m128 b) { return Max ? _mm_max_ps(a, b) : _mm_min_ps(a, b); };
    const __m256 h = op256(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 q = op128(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
    q = op128(q, _mm_movehl_ps(q, q));
    return _mm_cvtss_f32(op128(q, _mm_movehdup_ps(q)));
}
template <class Arch>
LOWBIT_GGML_QUANT_INLINE float hmax_ps(__m512 v) noexcept {
    return hreduce_ps<Arch, true>(v);
}
template <class Arch>
LOWBIT_GGML_QUANT_INLINE float hmin_ps(__m512 v) noexcept {
    return hreduce_ps<Arch, false>(v);
}

/// Bit i set where element i of the block (lo: 0..15, hi: 16..31) equals v.
template <class Arch>
LOWBIT_GGML_QUANT_INLINE std::uint32_t equal_mask(__m512 lo, __m512 hi, float v) noexcept {
    const __m512 vv = _mm512_set1_ps(v);
    return static_cast<std::uint32_t>(_mm512_cmp_ps_mask(lo, vv, _CMP_EQ_OQ)) |
           (static_cast<std::uint32_t>(_mm512_cmp_ps_mask(hi, vv, _CMP_EQ_OQ)) << 16);
}

/// The first of the block's 32 values equal to v, or v when none is.
template <class Arch>
LOWBIT_GGML_QUANT_INLINE float first_equal(const float* p, __m512 lo, __m512 hi, float v) noexcept {
    const std::uint32_t m = equal_mask<Arch>(lo, hi, v);
    const float f = p[std::countr_zero(m | 0x80000000u)];
    return m ? f : v;
}

template <class Arch>
LOWBIT_GGML_QUANT_INLINE std::uint16_t half_bits(float f) noexcept {
    return static_cast<std::uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

/// roundf on every lane: v - trunc(v) is exact, and at or above 2^23 v is whole.
template <class Arch>
LOWBIT_GGML_QUANT_INLINE __m512 round_away_ps(__m512 v) noexcept {
    const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(static_cast<std::int32_t>(0x80000000u)));
    const __m512 frac = _mm512_andnot_ps(sign, _mm512_sub_ps(v, t));
    const __m512 step = _mm512_or_ps(_mm512_and_ps(v, sign), _mm512_set1_ps(1.0f));
    return _mm512_mask_add_ps(t, _mm512_cmp_ps_mask(frac, _mm512_set1_ps(0.5f), _CMP_GE_OQ), t, step);
}

/// ggml's Q8_0 block as the scalar code computes it (its amax scan lets a NaN
/// reset the running max, which the reduction does not model).
template <class Arch>
inline void q8_0_block_scalar(const float* p, unsigned char* blk) noexcept {
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) {
        const float a = std::fabs(p[j]);
        amax = amax > a ? amax : a;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const std::uint16_t h = float_to_fp16<Arch>(d);
    std::memcpy(blk, &h, 2);
    for (int j = 0; j < 32; ++j)
        blk[2 + j] = static_cast<unsigned char>(static_cast<int>(std::round(::lowbit::detail::unfused(p[j] * id))) & 0xFF);
}

/// Block header, the codes from 1/d (and the min), and the packed codes of one
/// block held in a and b.
template <class Arch, ggml::type T>
LOWBIT_GGML_QUANT_INLINE void legacy_codes_avx512(__m512 a, __m512 b, float id, float lo, unsigned char* blk) noexcept {
    using ggml::type;
    constexpr bool q5 = T == type::q5_0 || T == type::q5_1;
    constexpr bool affine = T == type::q4_1 || T == type::q5_1;
    const __m512 idv = _mm512_set1_ps(id);
    if constexpr (T == type::q8_0) {
        const __m512i qa = _mm512_cvttps_epi32(round_away_ps<Arch>(::lowbit::detail::unfused(_mm512_mul_ps(a, idv))));
        const __m512i qb = _mm512_cvttps_epi32(round_away_ps<Arch>(::lowbit::detail::unfused(_mm512_mul_ps(b, idv))));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(blk + 2), _mm512_cvtepi32_epi8(qa));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(blk + 18), _mm512_cvtepi32_epi8(qb));
        return;
    }
    __m512 va, vb;
    if constexpr (affine) {
        const __m512 lov = _mm512_set1_ps(lo), half = _mm512_set1_ps(0.5f);
        va = _mm512_add_ps(::lowbit::detail::unfused(_mm512_mul_ps(_mm512_sub_ps(a, lov), idv)), half);
        vb = _mm512_add_ps(::lowbit::detail::unfused(_mm512_mul_ps(_mm512_sub_ps(b, lov), idv)), half);
    } else {
        static_cast<void>(lo);
        const __m512 off = _mm512_set1_ps(q5 ? 16.5f : 8.5f);
        va = _mm512_add_ps(::lowbit::detail::unfused(_mm512_mul_ps(a, idv)), off);
        vb = _mm512_add_ps(::lowbit::detail::unfused(_mm512_mul_ps(b, idv)), off);
    }
    // vpmovdb keeps the low byte, as the scalar code's cast does.
    __m128i la = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(va));
    __m128i lb = _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(vb));
    if constexpr (T != type::q5_1) {
        const __m128i top = _mm_set1_epi8(q5 ? 31 : 15);
        la = _mm_min_epi8(la, top);
        lb = _mm_min_epi8(lb, top);
    }
    const __m128i qs = _mm_or_si128(_mm_and_si128(la, _mm_set1_epi8(0x0F)),
                                    _mm_and_si128(_mm_slli_epi16(lb, 4), _mm_set1_epi8(static_cast<char>(0xF0))));
    constexpr int qs_off = legacy_qs_offset<T>;
    if constexpr (q5) {
        const __m256i l = _mm256_inserti128_si256(_mm256_castsi128_si256(la), lb, 1);
        const auto qh = static_cast<std::uint32_t>(_mm256_movemask_epi8(_mm256_slli_epi16(l, 3)));
        std::memcpy(blk + qs_off - 4, &qh, 4);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(blk + qs_off), qs);
}

/// legacy_codes_avx512 for two blocks (a0, a1) and (b0, b1), Q4_0..Q5_1. The
/// codes are narrowed with saturating packs instead of the cast's low byte:
/// the scalar code's values are 0..32 or, from a NaN or an infinite 1/d,
/// INT_MIN, whose low byte 0 and saturated -128 give the same nibble and
/// bit 4 (an infinite 1/d is the only way past the range: a finite one comes
/// from a d with at least 21 significant bits).
template <class Arch, ggml::type T>
LOWBIT_GGML_QUANT_INLINE void legacy_codes2_avx512(__m512 a0, __m512 a1, __m512 b0, __m512 b1, float ida, float idb,
                                            float loa, float lob, unsigned char* blk_a,
                                            unsigned char* blk_b) noexcept {
    using ggml::type;
    static_assert(T != type::q8_0);
    constexpr bool q5 = T == type::q5_0 || T == type::q5_1;
    constexpr bool affine = T == type::q4_1 || T == type::q5_1;
    const __m512 va = _mm512_set1_ps(ida), vb = _mm512_set1_ps(idb);
    const auto code = [&](__m512 v, __m512 id, float lo) {
        if constexpr (affine)
            return _mm512_cvttps_epi32(_mm512_add_ps(
                ::lowbit::detail::unfused(_mm512_mul_ps(_mm512_sub_ps(v, _mm512_set1_ps(lo)), id)), _mm512_set1_ps(0.5f)));
        else
            return _mm512_cvttps_epi32(
                _mm512_add_ps(::lowbit::detail::unfused(_mm512_mul_ps(v, id)), _mm512_set1_ps(q5 ? 16.5f : 8.5f)));
    };
    static_cast<void>(loa);
    static_cast<void>(lob);
    // 128-bit lane k: a's elements 4k..4k+3 and 16+4k.., then b's.
    __m512i l = _mm512_packs_epi16(_mm512_packs_epi32(code(a0, va, loa), code(a1, va, loa)),
                                   _mm512_packs_epi32(code(b0, vb, lob), code(b1, vb, lob)));
    if constexpr (T != type::q5_1) l = _mm512_min_epi8(l, _mm512_set1_epi8(q5 ? 31 : 15));
    // Bytes 0..31: a's elements in order, 32..63: b's.
    l = _mm512_permutexvar_epi32(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), l);
    // Lanes 0 and 2: element j's nibble low, j + 16's high.
    const __m512i up = _mm512_slli_epi16(_mm512_shuffle_i64x2(l, l, 0xB1), 4);
    const __m512i qs = _mm512_ternarylogic_epi32(_mm512_set1_epi8(0x0F), l, up, 0xCA);
    constexpr int qs_off = legacy_qs_offset<T>;
    if constexpr (q5) {
        const std::uint64_t h = _mm512_test_epi8_mask(l, _mm512_set1_epi8(0x10));
        const auto ha = static_cast<std::uint32_t>(h), hb = static_cast<std::uint32_t>(h >> 32);
        std::memcpy(blk_a + qs_off - 4, &ha, 4);
        std::memcpy(blk_b + qs_off - 4, &hb, 4);
    }
    _mm_storeu_si128(reinterpret_cast<__m128i*>(blk_a + qs_off), _mm512_castsi512_si128(qs));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(blk_b + qs_off), _mm512_extracti32x4_epi32(qs, 2));
}

/// The largest |x| of the block's non-NaN values, sign kept, first on ties
/// (+0 when there is none): Q4_0's and Q5_0's max.
template <class Arch>
LOWBIT_GGML_QUANT_INLINE float signed_absmax_ps(const float* p, __m512 a, __m512 b) noexcept {
    const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
    const __m512 aa = _mm512_and_ps(a, abs_mask), ab = _mm512_and_ps(b, abs_mask);
    // max_ps returns its second operand when either is NaN: NaN lanes drop out.
    const float amax = hmax_ps<Arch>(_mm512_max_ps(aa, _mm512_max_ps(ab, _mm512_setzero_ps())));
    const std::uint32_t m = equal_mask<Arch>(aa, ab, amax);
    const float first = p[std::countr_zero(m | 0x80000000u)];
    return amax > 0.0f ? first : 0.0f;
}

/// One block of type T from p to blk.
template <class Arch, ggml::type T>
inline void legacy_block_avx512(const float* p, unsigned char* blk) noexcept {
    using ggml::type;
    constexpr bool q5 = T == type::q5_0 || T == type::q5_1;
    const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
    float d, lo = 0.0f;
    if constexpr (T == type::q8_0) {
        if (_mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q) != 0) {  // a NaN in either half
            q8_0_block_scalar<Arch>(p, blk);
            return;
        }
        const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
        d = hmax_ps<Arch>(_mm512_max_ps(_mm512_and_ps(a, abs_mask), _mm512_and_ps(b, abs_mask))) / 127.0f;
    } else if constexpr (T == type::q4_1 || T == type::q5_1) {
        // From +-FLT_MAX with NaN lanes passed over, as the scalar scan.
        const __m512 big = _mm512_set1_ps(std::numeric_limits<float>::max());
        const __m512 nbig = _mm512_set1_ps(-std::numeric_limits<float>::max());
        lo = first_equal<Arch>(p, a, b, hmin_ps<Arch>(_mm512_min_ps(a, _mm512_min_ps(b, big))));
        const float hi = first_equal<Arch>(p, a, b, hmax_ps<Arch>(_mm512_max_ps(a, _mm512_max_ps(b, nbig))));
        d = (hi - lo) / (q5 ? 31.0f : 15.0f);
        const std::uint16_t m16 = half_bits<Arch>(lo);
        std::memcpy(blk + 2, &m16, 2);
    } else {
        d = signed_absmax_ps<Arch>(p, a, b) / (q5 ? -16.0f : -8.0f);
    }
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    const std::uint16_t h = half_bits<Arch>(d);
    std::memcpy(blk, &h, 2);
    legacy_codes_avx512<Arch, T>(a, b, id, lo, blk);
}

/// 16 blocks through legacy_block_avx512, for the groups (with a NaN) that
/// the vector reductions do not cover; kept out of line.
template <class Arch, ggml::type T>
LOWBIT_GGML_QUANT_COLD void legacy_group16_blockwise(const float* x, unsigned char* out) noexcept {
    for (int k = 0; k < 16; ++k) legacy_block_avx512<Arch, T>(x + 32 * k, out + legacy_block_bytes<T> * k);
}

/// Lane i = op-reduction of v[k] over its 16 lanes, for the block put in slot
/// k = reduce16_slot[i]: four rounds that halve the vectors and double the
/// blocks per vector (15 ops and 30 shuffles where 16 horizontal reductions
/// would take about 100).
inline constexpr int reduce16_slot[16] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};

template <class Arch, class Op>
LOWBIT_GGML_QUANT_INLINE __m512 reduce16(const __m512* v, Op op) noexcept {
    __m512 l1[8], l2[4], l3[2];
LOWBIT_GGML_QUANT_UNROLL(8)
    for (int i = 0; i < 8; ++i)
        l1[i] = op(_mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0x44), _mm512_shuffle_f32x4(v[2 * i], v[2 * i + 1], 0xEE));
LOWBIT_GGML_QUANT_UNROLL(4)
    for (int i = 0; i < 4; ++i)
        l2[i] = op(_mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], 0x88),
                   _mm512_shuffle_f32x4(l1[2 * i], l1[2 * i + 1], 0xDD));
LOWBIT_GGML_QUANT_UNROLL(2)
    for (int i = 0; i < 2; ++i)
        l3[i] = op(_mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], 0x44), _mm512_shuffle_ps(l2[2 * i], l2[2 * i + 1], 0xEE));
    return op(_mm512_shuffle_ps(l3[0], l3[1], 0x88), _mm512_shuffle_ps(l3[0], l3[1], 0xDD));
}

/// 16 blocks of type T from x to out: the blocks' reductions together, then
/// d, 1/d and the fp16 fields as vectors over the 16 blocks, then the codes
/// block by block. Blocks whose max or min the reductions leave open (a
/// zero, whose sign is the first zero's; Q4_0's +-amax ties) and Q8_0 groups
/// with a NaN go through legacy_block_avx512's first-equal scan.
template <class Arch, ggml::type T>
inline void legacy_group16_avx512(const float* x, unsigned char* out) noexcept {
    using ggml::type;
    constexpr std::size_t BB = legacy_block_bytes<T>;
    constexpr bool q5 = T == type::q5_0 || T == type::q5_1;
    constexpr bool affine = T == type::q4_1 || T == type::q5_1;
    const auto vmax = [](__m512 u, __m512 w) { return _mm512_max_ps(u, w); };
    const auto vmin = [](__m512 u, __m512 w) { return _mm512_min_ps(u, w); };
    const auto blk_x = [x](int k) { return x + 32 * static_cast<std::ptrdiff_t>(k); };
    alignas(64) float idv[16], lov[16];
    alignas(64) std::uint32_t hdr[16];
    __m256i mh = _mm256_setzero_si256();
    __m512 v[16];
    __m512 d;
    if constexpr (T == type::q8_0) {
        const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7FFFFFFF));
        __mmask16 nan = 0;
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int s = 0; s < 16; ++s) {
            const float* p = blk_x(reduce16_slot[s]);
            const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
            nan = static_cast<__mmask16>(nan | _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q));
            v[s] = _mm512_max_ps(_mm512_and_ps(a, abs_mask), _mm512_and_ps(b, abs_mask));
        }
        if (nan) {
            legacy_group16_blockwise<Arch, T>(x, out);
            return;
        }
        d = _mm512_div_ps(reduce16<Arch>(v, vmax), _mm512_set1_ps(127.0f));
    } else if constexpr (affine) {
        // Seeded with +-FLT_MAX so that NaN lanes drop out, as in the scalar scan.
        const __m512 big = _mm512_set1_ps(std::numeric_limits<float>::max());
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int s = 0; s < 16; ++s) {
            const float* p = blk_x(reduce16_slot[s]);
            v[s] = _mm512_min_ps(_mm512_loadu_ps(p), _mm512_min_ps(_mm512_loadu_ps(p + 16), big));
        }
        __m512 lo = reduce16<Arch>(v, vmin);
        const __m512 nbig = _mm512_set1_ps(-std::numeric_limits<float>::max());
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int s = 0; s < 16; ++s) {
            const float* p = blk_x(reduce16_slot[s]);
            v[s] = _mm512_max_ps(_mm512_loadu_ps(p), _mm512_max_ps(_mm512_loadu_ps(p + 16), nbig));
        }
        __m512 hi = reduce16<Arch>(v, vmax);
        // A zero min or max is the block's first zero, whose sign the reduction lost.
        const __m512 zero = _mm512_setzero_ps();
        __mmask16 zl = _mm512_cmp_ps_mask(lo, zero, _CMP_EQ_OQ), zh = _mm512_cmp_ps_mask(hi, zero, _CMP_EQ_OQ);
        if (zl | zh) {
            alignas(64) float lf[16], hf[16];
            _mm512_store_ps(lf, lo);
            _mm512_store_ps(hf, hi);
            for (int k = 0; k < 16; ++k) {
                if (!(((zl | zh) >> k) & 1)) continue;
                const float* p = blk_x(k);
                const __m512 a = _mm512_loadu_ps(p), b = _mm512_loadu_ps(p + 16);
                if ((zl >> k) & 1) lf[k] = first_equal<Arch>(p, a, b, lf[k]);
                if ((zh >> k) & 1) hf[k] = first_equal<Arch>(p, a, b, hf[k]);
            }
            lo = _mm512_load_ps(lf);
            hi = _mm512_load_ps(hf);
        }
        d = _mm512_div_ps(_mm512_sub_ps(hi, lo), _mm512_set1_ps(q5 ? 31.0f : 15.0f));
        _mm512_store_ps(lov, lo);
        mh = _mm512_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT);
    } else {
        // The signed max and min, each seeded with 0 (NaN lanes drop out):
        // the larger magnitude wins; equal magnitudes are a zero block
        // (max +0) or a +-amax tie, which the first one decides.
        const __m512 zero = _mm512_setzero_ps();
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int s = 0; s < 16; ++s) {
            const float* p = blk_x(reduce16_slot[s]);
            v[s] = _mm512_max_ps(_mm512_loadu_ps(p), _mm512_max_ps(_mm512_loadu_ps(p + 16), zero));
        }
        const __m512 hi = reduce16<Arch>(v, vmax);
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int s = 0; s < 16; ++s) {
            const float* p = blk_x(reduce16_slot[s]);
            v[s] = _mm512_min_ps(_mm512_loadu_ps(p), _mm512_min_ps(_mm512_loadu_ps(p + 16), zero));
        }
        const __m512 lo = reduce16<Arch>(v, vmin);
        const __m512 neg_lo = _mm512_sub_ps(zero, lo);
        __m512 mx = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(neg_lo, hi, _CMP_GT_OQ), hi, lo);
        const __mmask16 tie = static_cast<__mmask16>(_mm512_cmp_ps_mask(neg_lo, hi, _CMP_EQ_OQ) &
                                                     _mm512_cmp_ps_mask(hi, zero, _CMP_GT_OQ));
        mx = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(hi, zero, _CMP_EQ_OQ) &
                                      _mm512_cmp_ps_mask(neg_lo, zero, _CMP_EQ_OQ),
                                  mx, zero);
        if (tie) {
            alignas(64) float mf[16];
            _mm512_store_ps(mf, mx);
            for (int k = 0; k < 16; ++k) {
                if (!((tie >> k) & 1)) continue;
                const float* p = blk_x(k);
                mf[k] = signed_absmax_ps<Arch>(p, _mm512_loadu_ps(p), _mm512_loadu_ps(p + 16));
            }
            mx = _mm512_load_ps(mf);
        }
        // max / -8 and max * -0.125 are the same correctly rounded quotient.
        d = _mm512_mul_ps(mx, _mm512_set1_ps(q5 ? -0.0625f : -0.125f));
    }
    // C's d != 0 holds for NaN too.
    const __m512 id = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_UQ),
                                          _mm512_set1_ps(1.0f), d);
    _mm512_store_ps(idv, id);
    // Block k's header (d, and m for Q4_1/Q5_1) as the 32 bits of lane k.
    _mm512_store_si512(hdr, _mm512_or_si512(_mm512_cvtepu16_epi32(_mm512_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT)),
                                            _mm512_slli_epi32(_mm512_cvtepu16_epi32(mh), 16)));
    static_cast<void>(lov);
    // The per-block values are read back from memory from here on: without
    // this the compiler keeps them in registers and extracts and broadcasts
    // each one with shuffles, which compete with the codes' own shuffles
    // (about 15% of Q4_1's time), where a load or a broadcast from memory
    // costs none.
    __asm__ volatile("" ::: "memory");
LOWBIT_GGML_QUANT_UNROLL(16)
    for (int k = 0; k < 16; ++k) std::memcpy(out + BB * k, hdr + k, affine ? 4 : 2);
    if constexpr (T == type::q8_0) {
LOWBIT_GGML_QUANT_UNROLL(16)
        for (int k = 0; k < 16; ++k) {
            const float* p = blk_x(k);
            legacy_codes_avx512<Arch, T>(_mm512_loadu_ps(p), _mm512_loadu_ps(p + 16), idv[k], 0.0f, out + BB * k);
        }
    } else {
LOWBIT_GGML_QUANT_UNROLL(8)
        for (int k = 0; k < 16; k += 2) {
            const float *p = blk_x(k), *q = blk_x(k + 1);
            legacy_codes2_avx512<Arch, T>(_mm512_loadu_ps(p), _mm512_loadu_ps(p + 16), _mm512_loadu_ps(q),
                                          _mm512_loadu_ps(q + 16), idv[k], idv[k + 1], affine ? lov[k] : 0.0f,
                                          affine ? lov[k + 1] : 0.0f, out + BB * k, out + BB * (k + 1));
        }
    }
}

/// Blocks [0, nblocks) of type T from x to out.
template <class Arch, ggml::type T>
inline void legacy_rows_avx512(const float* x, unsigned char* out, std::size_t nblocks) noexcept {
    constexpr std::size_t BB = legacy_block_bytes<T>;
    std::size_t ib = 0;
    // Prefetching a few groups ahead keeps more lines in flight than the
    // hardware prefetchers alone did (up to 1.6x from L3 in measurements here).
#ifndef LOWBIT_GGML_QUANT_AHEAD
#define LOWBIT_GGML_QUANT_AHEAD 48
#endif
    constexpr std::size_t ahead = LOWBIT_GGML_QUANT_AHEAD;
    for (; ib + 16 <= nblocks; ib += 16) {
#if defined(__GNUC__)
        if (ib + ahead + 16 <= nblocks)
            for (std::size_t c = 0; c < 16 * 32; c += 16) __builtin_prefetch(x + 32 * (ib + ahead) + c);
#endif
        legacy_group16_avx512<Arch, T>(x + 32 * ib, out + BB * ib);
    }
    for (; ib < nblocks; ++ib) legacy_block_avx512<Arch, T>(x + 32 * ib, out + BB * ib);
}
#endif

/// All blocks of the job; the last group is padded with zero blocks.
template <class Arch, ggml::type T>
inline void run_legacy(const ggml_quantize_job& j) noexcept {
    constexpr int N = legacy_block_values<T>;
    constexpr std::size_t BB = legacy_block_bytes<T>;
    const std::size_t total = j.rows * (j.n_per_row / N);
    auto* out = static_cast<unsigned char*>(j.dst);
#if XSIMD_WITH_AVX512BW
    if constexpr (dq::is_avx512_v<Arch> && N == 32 && T != ggml::type::mxfp4) {
        legacy_rows_avx512<Arch, T>(j.x, out, total);
        return;
    }
#endif
    std::size_t g = 0;
    // Two groups ahead: the 16 strided row reads of a group are issued in a
    // burst, which the hardware prefetchers alone did not keep fed in DRAM-sized runs.
    constexpr std::size_t ahead = 2 * legacy_group;
    for (; g + legacy_group <= total; g += legacy_group) {
#if defined(__GNUC__)
        if (g + ahead + legacy_group <= total)
            for (std::size_t c = 0; c < legacy_group * N; c += 16) __builtin_prefetch(j.x + (g + ahead) * N + c);
#endif
        legacy_group_run<Arch, T>(j.x + g * N, out + g * BB);
    }
    if (g < total) {
        const std::size_t rest = total - g;
        alignas(64) float xb[legacy_group * N] = {};
        unsigned char ob[legacy_group * BB];
        std::memcpy(xb, j.x + g * N, rest * N * sizeof(float));
        legacy_group_run<Arch, T>(xb, ob);
        std::memcpy(out + g * BB, ob, rest * BB);
    }
}

}  // namespace detail::ggml_quant
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

}  // namespace kernels
LOWBIT_NAMESPACE_END
