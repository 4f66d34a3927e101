#pragma once
// Kernels for bitsandbytes' layouts (formats/bnb.hpp):
//   * 4-bit dequantize: codes two per byte, earlier element in the high
//     nibble, x = table[q] * absmax[block], to f32/f16/bf16;
//   * 8-bit blockwise dequantize: x = table[q] * absmax[block];
//   * 4-bit GEMV / small-batch GEMM: y[b][r] = sum_c W[r][c] * x[b][c] with W
//     decoded on the fly (each weight as table[q] * absmax, exactly the
//     dequantized value), for any shape and block size;
//   * int8 x int8 -> int32 GEMM, C = A * B^T (LLM.int8()'s integer product).
// Every SIMD path equals the scalar one: dequantize and the integer GEMM bit
// for bit; the GEMV up to the order of its float additions.

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../scheme/encode_rules.hpp"
#include "dequantize.hpp"
#include "encode.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

/// Flattened 4-bit codes (n elements) in blocks of `blocksize` (even, >= 2).
struct bnb4_dequantize_job {
    const std::uint8_t* packed;
    std::size_t n, blocksize;
    const float* absmax;  ///< one per block
    const float* table;   ///< 16 entries
    void* out;
    out_type type;
};

/// Flattened 8-bit codes, one byte each, in blocks of `blocksize`.
struct bnb8_dequantize_job {
    const std::uint8_t* codes;
    std::size_t n, blocksize;
    const float* absmax;
    const float* table;  ///< 256 entries
    void* out;
    out_type type;
};

/// 4-bit codes for blocks [block_begin, block_end) of the n flattened values
/// x (all finite): absmax per block, v = x * (1/absmax) as computed (0 * Inf
/// is NaN, which passes no threshold), code = threshold_count(rule, v) (the
/// rule of the scheme, scheme/encode_rules.hpp). torch_rules: the scale is
/// max(absmax, 1e-38) and a short last block divides by it and stores it
/// (bitsandbytes' PyTorch kernel; its clamp of v to [-1, 1] changes no count,
/// every threshold of its tables lying inside).
struct bnb4_quantize_job {
    const float* x;
    std::size_t n, blocksize, block_begin, block_end;
    const threshold_rule* rule;
    bool torch_rules;
    std::uint8_t* packed;  ///< the whole tensor's ceil(n/2) bytes
    float* absmax;         ///< the whole tensor's blocks
};

/// y[b * y_stride + r] = sum_c W[r][c] * x[b * x_stride + c] for rows
/// [row_begin, row_end) of the rows x cols matrix W stored as flattened 4-bit codes.
struct bnb4_gemv_job {
    const std::uint8_t* packed;
    std::size_t rows, cols, blocksize;
    const float* absmax;
    const float* table;
    const float* x;
    std::size_t batch, x_stride;
    float* y;
    std::size_t y_stride;
    std::size_t row_begin, row_end;
    /// Optional (may be null): x in nibble order (bnb4_nibble_order_x), used by
    /// the AVX-512 path when cols and blocksize are multiples of 64.
    const float* x_nibble_order = nullptr;
};

/// Reorders each 64-element chunk of a row of x to the order one 32-byte load
/// of codes decodes in: elements 4k+1, then 4k, then 4k+3, then 4k+2 (k < 16).
inline void bnb4_nibble_order_x(const float* x, std::size_t cols, float* out) noexcept {
    constexpr std::size_t pick[4] = {1, 0, 3, 2};
    for (std::size_t c0 = 0; c0 + 64 <= cols; c0 += 64)
        for (std::size_t v = 0; v < 4; ++v)
            for (std::size_t k = 0; k < 16; ++k) out[c0 + 16 * v + k] = x[c0 + 4 * k + pick[v]];
}

/// c[i * ldc + j] = sum_k a[i * lda + k] * b[j * ldb + k], int32 accumulation,
/// for i < m and j in [n_begin, n_end).
struct int8_gemm_job {
    const std::int8_t* a;
    std::size_t m, k, lda;
    const std::int8_t* b;
    std::size_t ldb;
    std::int32_t* c;
    std::size_t ldc;
    std::size_t n_begin, n_end;
};

// ---- scalar references -------------------------------------------------------

inline void bnb4_dequantize_ref(const bnb4_dequantize_job& j) noexcept {
    for (std::size_t i = 0; i < j.n; ++i) {
        const std::uint8_t byte = j.packed[i / 2];
        const unsigned q = i % 2 == 0 ? byte >> 4 : byte & 0xFu;
        detail::dq::ref_store(j.out, i, j.table[q] * j.absmax[i / j.blocksize], j.type);
    }
}

inline void bnb8_dequantize_ref(const bnb8_dequantize_job& j) noexcept {
    for (std::size_t i = 0; i < j.n; ++i)
        detail::dq::ref_store(j.out, i, j.table[j.codes[i]] * j.absmax[i / j.blocksize], j.type);
}

inline void bnb4_quantize_ref(const bnb4_quantize_job& j) noexcept {
    for (std::size_t b = j.block_begin; b < j.block_end; ++b) {
        const std::size_t lo = b * j.blocksize, hi = lo + j.blocksize < j.n ? lo + j.blocksize : j.n;
        const bool short_block = hi - lo < j.blocksize;
        float am = 0.0f;
        for (std::size_t i = lo; i < hi; ++i) am = std::fabs(j.x[i]) > am ? std::fabs(j.x[i]) : am;
        const float scale = j.torch_rules && am < 1e-38f ? 1e-38f : am;
        j.absmax[b] = j.torch_rules && short_block ? scale : am;
        const float inv = 1.0f / scale;
        const auto code = [&](float x) -> std::uint8_t {
            const float v = j.torch_rules && short_block ? x / scale : x * inv;
            return static_cast<std::uint8_t>(threshold_count(*j.rule, v));
        };
        for (std::size_t i = lo; i < hi; i += 2)
            j.packed[i / 2] = static_cast<std::uint8_t>(code(j.x[i]) << 4 | code(i + 1 < hi ? j.x[i + 1] : 0.0f));
    }
}

inline void bnb4_gemv_ref(const bnb4_gemv_job& j) noexcept {
    for (std::size_t r = j.row_begin; r < j.row_end; ++r)
        for (std::size_t b = 0; b < j.batch; ++b) {
            float acc = 0.0f;
            for (std::size_t c = 0; c < j.cols; ++c) {
                const std::size_t e = r * j.cols + c;
                const std::uint8_t byte = j.packed[e / 2];
                const unsigned q = e % 2 == 0 ? byte >> 4 : byte & 0xFu;
                acc += j.table[q] * j.absmax[e / j.blocksize] * j.x[b * j.x_stride + c];
            }
            j.y[b * j.y_stride + r] = acc;
        }
}

inline void int8_gemm_ref(const int8_gemm_job& j) noexcept {
    for (std::size_t i = 0; i < j.m; ++i)
        for (std::size_t n = j.n_begin; n < j.n_end; ++n) {
            std::int32_t acc = 0;
            for (std::size_t k = 0; k < j.k; ++k)
                acc += static_cast<std::int32_t>(j.a[i * j.lda + k]) * static_cast<std::int32_t>(j.b[n * j.ldb + k]);
            j.c[i * j.ldc + n] = acc;
        }
}

namespace detail {
inline std::atomic<bool>& int8_vnni_allowed() noexcept {
    static std::atomic<bool> allowed{true};
    return allowed;
}
}  // namespace detail

/// Whether int8_gemm may use AVX-512 VNNI where the CPU has it (default true;
/// tests turn it off to check the AVX-512BW path on VNNI machines).
inline void allow_int8_vnni(bool on) noexcept { detail::int8_vnni_allowed().store(on); }

struct bnb4_dequantize_fn {
    template <class Arch>
    void operator()(Arch, const bnb4_dequantize_job& j) const noexcept;
};
struct bnb8_dequantize_fn {
    template <class Arch>
    void operator()(Arch, const bnb8_dequantize_job& j) const noexcept;
};
struct bnb4_gemv_fn {
    template <class Arch>
    void operator()(Arch, const bnb4_gemv_job& j) const noexcept;
};
struct bnb4_quantize_fn {
    template <class Arch>
    void operator()(Arch, const bnb4_quantize_job& j) const noexcept;
};
struct int8_gemm_fn {
    template <class Arch>
    void operator()(Arch, const int8_gemm_job& j) const noexcept;
};

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::bnb_kernel {

using detail::dq::emit;
using detail::dq::is_avx2_v;
using detail::dq::is_avx512_v;
using detail::dq::is_sse4_1_v;
using detail::dq::table_lookup;

/// 16 bytes -> 32 codes in element order (high nibble first).
template <class Arch>
inline void split_nibbles(const std::uint8_t* src, std::uint8_t* dst) noexcept {
    using u8 = xsimd::batch<std::uint8_t, detail::dq::arch16<Arch>>;
    if constexpr (u8::size == 16) {
        const u8 b = u8::load_unaligned(src);
        const u8 hi = (b >> 4) & u8(0x0F), lo = b & u8(0x0F);
        xsimd::zip_lo(hi, lo).store_unaligned(dst);
        xsimd::zip_hi(hi, lo).store_unaligned(dst + 16);
    } else {
        for (std::size_t i = 0; i < 16; ++i) {
            dst[2 * i] = static_cast<std::uint8_t>(src[i] >> 4);
            dst[2 * i + 1] = static_cast<std::uint8_t>(src[i] & 0x0F);
        }
    }
}

template <class Arch>
inline void small_table(const float* table, float* small) noexcept {
    for (std::size_t i = 0; i < 16; ++i) small[i] = table[i];
}

/// 32 elements starting at element e (even) of the packed stream, decoded and
/// scaled by s, into nb = 32 / lanes batches.
template <class Arch, std::size_t NB>
inline void decode32(const std::uint8_t* packed, std::size_t e, const float* table, const float* small,
                     const xsimd::batch<float, Arch>& s, xsimd::batch<float, Arch>* w) noexcept {
    alignas(64) std::uint8_t q[32];
    split_nibbles<Arch>(packed + e / 2, q);
    constexpr std::size_t lanes = xsimd::batch<float, Arch>::size;
    for (std::size_t k = 0; k < NB; ++k) w[k] = table_lookup<Arch, true>(q + k * lanes, table, small) * s;
}

template <class Arch, out_type OT>
inline void bnb4_dequantize(const bnb4_dequantize_job& j) noexcept {
    using f32 = xsimd::batch<float, Arch>;
    constexpr std::size_t lanes = f32::size, NB = 32 / lanes;
    constexpr std::size_t esize = OT == out_type::f32 ? 4 : 2;
    alignas(64) float small[16];
    small_table<Arch>(j.table, small);
    unsigned char* out = static_cast<unsigned char*>(j.out);
    f32 w[NB];
    for (std::size_t b0 = 0; b0 < j.n; b0 += j.blocksize) {
        const std::size_t b1 = b0 + j.blocksize < j.n ? b0 + j.blocksize : j.n;
        const f32 s(j.absmax[b0 / j.blocksize]);
        std::size_t e = b0;
        for (; e + 32 <= b1; e += 32) {
            decode32<Arch, NB>(j.packed, e, j.table, small, s, w);
            for (std::size_t k = 0; k < NB; ++k) emit<Arch, OT>(w[k], out + (e + k * lanes) * esize);
        }
        if (e < b1) {
            // The short tail (last block only, or blocks not a multiple of 32):
            // decode a zero-padded copy and keep what belongs to the tensor.
            alignas(64) std::uint8_t bytes[16] = {};
            std::memcpy(bytes, j.packed + e / 2, (b1 - e + 1) / 2);
            alignas(64) unsigned char tmp[32 * 4];
            decode32<Arch, NB>(bytes, 0, j.table, small, s, w);
            for (std::size_t k = 0; k < NB; ++k) emit<Arch, OT>(w[k], tmp + k * lanes * esize);
            std::memcpy(out + e * esize, tmp, (b1 - e) * esize);
        }
    }
}

template <class Arch, out_type OT>
inline void bnb8_dequantize(const bnb8_dequantize_job& j) noexcept {
    using f32 = xsimd::batch<float, Arch>;
    constexpr std::size_t lanes = f32::size;
    constexpr std::size_t esize = OT == out_type::f32 ? 4 : 2;
    unsigned char* out = static_cast<unsigned char*>(j.out);
    for (std::size_t b0 = 0; b0 < j.n; b0 += j.blocksize) {
        const std::size_t b1 = b0 + j.blocksize < j.n ? b0 + j.blocksize : j.n;
        const f32 s(j.absmax[b0 / j.blocksize]);
        std::size_t e = b0;
        for (; e + lanes <= b1; e += lanes)
            emit<Arch, OT>(table_lookup<Arch, false>(j.codes + e, j.table, nullptr) * s, out + e * esize);
        if (e < b1) {
            alignas(64) std::uint8_t q[64] = {};
            std::memcpy(q, j.codes + e, b1 - e);
            alignas(64) unsigned char tmp[64 * 4];
            emit<Arch, OT>(table_lookup<Arch, false>(q, j.table, nullptr) * s, tmp);
            std::memcpy(out + e * esize, tmp, (b1 - e) * esize);
        }
    }
}

/// One row of the GEMV for NB_ batch rows at once.
template <class Arch, std::size_t B>
inline void bnb4_gemv_rows(const bnb4_gemv_job& j, std::size_t b_first) noexcept {
    using f32 = xsimd::batch<float, Arch>;
    constexpr std::size_t lanes = f32::size, NB = 32 / lanes;
    alignas(64) float small[16];
    small_table<Arch>(j.table, small);
    const float* xb[B];
    for (std::size_t b = 0; b < B; ++b) xb[b] = j.x + (b_first + b) * j.x_stride;
    alignas(64) float xpad[B][32];
    for (std::size_t r = j.row_begin; r < j.row_end; ++r) {
        f32 acc[B];
        float tail[B];
        for (std::size_t b = 0; b < B; ++b) {
            acc[b] = f32(0.0f);
            tail[b] = 0.0f;
        }
        const std::size_t r0 = r * j.cols, r1 = r0 + j.cols;
        std::size_t e = r0;
        if (e % 2 == 1 && e < r1) {
            // A row that starts on a low nibble (odd column count).
            const float v = j.table[j.packed[e / 2] & 0x0F] * j.absmax[e / j.blocksize];
            for (std::size_t b = 0; b < B; ++b) tail[b] += v * xb[b][0];
            ++e;
        }
        f32 w[NB];
        while (e < r1) {
            const std::size_t blk = e / j.blocksize;
            const std::size_t blk_end = (blk + 1) * j.blocksize < r1 ? (blk + 1) * j.blocksize : r1;
            const f32 s(j.absmax[blk]);
            for (; e + 32 <= blk_end; e += 32) {
                decode32<Arch, NB>(j.packed, e, j.table, small, s, w);
                const std::size_t c = e - r0;
                for (std::size_t b = 0; b < B; ++b)
                    for (std::size_t k = 0; k < NB; ++k)
                        acc[b] = xsimd::fma(w[k], f32::load_unaligned(xb[b] + c + k * lanes), acc[b]);
            }
            if (e < blk_end) {
                const std::size_t len = blk_end - e, c = e - r0;
                alignas(64) std::uint8_t bytes[16] = {};
                std::memcpy(bytes, j.packed + e / 2, (len + 1) / 2);
                decode32<Arch, NB>(bytes, 0, j.table, small, s, w);
                for (std::size_t b = 0; b < B; ++b) {
                    std::memset(xpad[b], 0, sizeof xpad[b]);
                    std::memcpy(xpad[b], xb[b] + c, len * sizeof(float));
                    for (std::size_t k = 0; k < NB; ++k)
                        acc[b] = xsimd::fma(w[k], f32::load_aligned(xpad[b] + k * lanes), acc[b]);
                }
                e = blk_end;
            }
        }
        for (std::size_t b = 0; b < B; ++b)
            j.y[(b_first + b) * j.y_stride + r] = ::lowbit::detail::simd::reduce_add(acc[b]) + tail[b];
    }
}

#if XSIMD_WITH_AVX512BW
/// AVX-512, cols and blocksize multiples of 64: 32 code bytes widen to 16-bit
/// lanes, and the four nibbles of each 32-bit lane index a 16-entry table
/// already scaled by the block's absmax (so each weight is exactly its
/// dequantized value), against x in nibble order. Over the xsimd body
/// (bnb4_gemv_rows, whose table lookups go through a buffer), bench_bnb
/// BM_nf4_gemv on AMD EPYC 2.6 GHz, built as is vs. with LOWBIT_XSIMD_ONLY:
/// batch 1 51 490 vs 3 180 Mw/s, batch 4 11 690 vs 2 530, batch 8 7 060 vs 1 250.
template <std::size_t B>
inline void bnb4_gemv_rows_avx512(const bnb4_gemv_job& j, std::size_t b_first) noexcept {
    const float* xb[B];
    for (std::size_t b = 0; b < B; ++b) xb[b] = j.x_nibble_order + (b_first + b) * j.x_stride;
    const __m512 table = _mm512_loadu_ps(j.table);
    const std::size_t per_block = j.blocksize / 64;
    for (std::size_t r = j.row_begin; r < j.row_end; ++r) {
        __m512 acc[B][4];  // four chains: an FMA's latency does not serialise a chunk
        for (std::size_t b = 0; b < B; ++b) acc[b][0] = acc[b][1] = acc[b][2] = acc[b][3] = _mm512_setzero_ps();
        const std::uint8_t* row = j.packed + r * j.cols / 2;
        const float* am = j.absmax + r * j.cols / j.blocksize;
        for (std::size_t c = 0, blk = 0; c < j.cols; ++blk) {
            const __m512 t = _mm512_mul_ps(table, _mm512_set1_ps(am[blk]));
            for (std::size_t k = 0; k < per_block; ++k, c += 64) {
                const __m512i v = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c / 2)));
                const __m512 w0 = _mm512_permutexvar_ps(v, t);
                const __m512 w1 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 4), t);
                const __m512 w2 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 16), t);
                const __m512 w3 = _mm512_permutexvar_ps(_mm512_srli_epi32(v, 20), t);
                for (std::size_t b = 0; b < B; ++b) {
                    const float* xp = xb[b] + c;
                    acc[b][0] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(xp), acc[b][0]);
                    acc[b][1] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(xp + 16), acc[b][1]);
                    acc[b][2] = _mm512_fmadd_ps(w2, _mm512_loadu_ps(xp + 32), acc[b][2]);
                    acc[b][3] = _mm512_fmadd_ps(w3, _mm512_loadu_ps(xp + 48), acc[b][3]);
                }
            }
        }
        for (std::size_t b = 0; b < B; ++b)
            j.y[(b_first + b) * j.y_stride + r] =
                _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[b][0], acc[b][1]), _mm512_add_ps(acc[b][2], acc[b][3])));
    }
}
#endif

template <class Arch>
inline void bnb4_gemv(const bnb4_gemv_job& j) noexcept {
#if XSIMD_WITH_AVX512BW
    if constexpr (is_avx512_v<Arch>) {
        if (j.x_nibble_order && j.cols % 64 == 0 && j.blocksize % 64 == 0) {
            std::size_t b = 0;
            for (; b + 4 <= j.batch; b += 4) bnb4_gemv_rows_avx512<4>(j, b);
            switch (j.batch - b) {
            case 3: bnb4_gemv_rows_avx512<3>(j, b); break;
            case 2: bnb4_gemv_rows_avx512<2>(j, b); break;
            case 1: bnb4_gemv_rows_avx512<1>(j, b); break;
            default: break;
            }
            return;
        }
    }
#endif
    std::size_t b = 0;
    for (; b + 4 <= j.batch; b += 4) bnb4_gemv_rows<Arch, 4>(j, b);
    switch (j.batch - b) {
    case 3: bnb4_gemv_rows<Arch, 3>(j, b); break;
    case 2: bnb4_gemv_rows<Arch, 2>(j, b); break;
    case 1: bnb4_gemv_rows<Arch, 1>(j, b); break;
    default: break;
    }
}

/// One block of bnb4_quantize (len <= blocksize values at x, zero-padded to a
/// whole number of batches by the caller when short), the rule's first N
/// thresholds counted.
template <class Arch, std::size_t N>
inline void bnb4_quantize_block(const bnb4_quantize_job& j, const threshold_rule& rule, const float* x,
                                std::size_t len, bool short_block, std::size_t b, std::uint8_t* dst) noexcept {
    using f32 = xsimd::batch<float, Arch>;
    using ops = ::lowbit::detail::lane_ops<f32>;
    constexpr std::size_t lanes = f32::size;
    const std::size_t padded = (len + lanes - 1) / lanes * lanes;
    f32 m(0.0f);
    for (std::size_t i = 0; i < padded; i += lanes) m = xsimd::max(m, xsimd::abs(f32::load_unaligned(x + i)));
    const float am = ::lowbit::detail::simd::reduce_max(m);
    const float scale = j.torch_rules && am < 1e-38f ? 1e-38f : am;
    j.absmax[b] = j.torch_rules && short_block ? scale : am;
    const bool divide = j.torch_rules && short_block;
    const f32 inv(1.0f / scale), sc(scale);
    const auto codes_at = [&](std::size_t i) LOWBIT_LAMBDA_INLINE {
        const f32 xv = f32::load_unaligned(x + i);
        const f32 v = divide ? ::lowbit::detail::simd::div(xv, sc) : xv * inv;
        return xsimd::to_int(threshold_count<f32, ops, N>(rule, v));
    };
#if XSIMD_WITH_AVX512BW
    if constexpr (is_avx512_v<Arch>) {
        // Two codes a byte by 64-bit shifts and a truncating narrow: no
        // scalar work per value. BM_nf4_quantize_plain 1 590 vs 1 140 Mw/s
        // over the xsimd body's store and scalar pairing (EPYC, as above).
        for (std::size_t i = 0; i < padded; i += 16) {
            const __m512i c = codes_at(i);
            const __m512i pairs = _mm512_or_si512(_mm512_slli_epi64(c, 4), _mm512_srli_epi64(c, 32));
            const __m128i bytes = _mm512_cvtepi64_epi8(pairs);
            const std::size_t nb = (i + 16 < len ? 16 : len - i + 1) / 2;  // a short block's last byte keeps its pad
            if (nb == 8) _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + i / 2), bytes);
            else {
                alignas(16) std::uint8_t tmp[16];
                _mm_store_si128(reinterpret_cast<__m128i*>(tmp), bytes);
                std::memcpy(dst + i / 2, tmp, nb);
            }
        }
        return;
    }
#endif
    alignas(64) std::int32_t codes[lanes];
    for (std::size_t i = 0; i < padded; i += lanes) {
        codes_at(i).store_aligned(codes);
        const std::size_t end = i + lanes < len ? i + lanes : len;
        for (std::size_t l = 0; i + l < end; l += 2)
            dst[(i + l) / 2] = static_cast<std::uint8_t>(codes[l] << 4 | codes[l + 1]);
    }
}

template <class Arch>
inline void bnb4_quantize(const bnb4_quantize_job& j) noexcept {
    using f32 = xsimd::batch<float, Arch>;
    constexpr std::size_t lanes = f32::size;
    const threshold_rule rule = *j.rule;  // a copy, its constants kept in registers
    for (std::size_t b = j.block_begin; b < j.block_end; ++b) {
        const std::size_t lo = b * j.blocksize, hi = lo + j.blocksize < j.n ? lo + j.blocksize : j.n;
        const std::size_t len = hi - lo;
        const auto block = [&](const float* x, bool short_block, std::uint8_t* dst) {
            // FP4's magnitude tree has 7 thresholds, NF4's and the PyTorch tables 15.
            if (rule.count <= 7) bnb4_quantize_block<Arch, 7>(j, rule, x, len, short_block, b, dst);
            else bnb4_quantize_block<Arch, threshold_rule::max_bounds>(j, rule, x, len, short_block, b, dst);
        };
        if (len == j.blocksize && len % lanes == 0) {
            block(j.x + lo, false, j.packed + lo / 2);
        } else {
            // The short last block: a zero-padded copy (the pad nibble of an odd
            // count is the code of 0, as the scalar path gives it).
            alignas(64) float buf[4096 + 64] = {};
            std::memcpy(buf, j.x + lo, len * sizeof(float));
            alignas(64) std::uint8_t out[2048 + 32];
            block(buf, len < j.blocksize, out);
            std::memcpy(j.packed + lo / 2, out, (len + 1) / 2);
        }
    }
}

/// Sum of a[k] * b[k] over k < n, int8 inputs, int32 accumulation. The x86
/// widen-and-madd loops over the xsimd body (four int8 a 32-bit lane, each
/// sign-extended by shifts and multiplied in 32 bits), BM_int8_gemm batch 1
/// and 8 (EPYC, as above): AVX2 29 960 vs 19 340 and 3 530 vs 2 160 Mw/s,
/// SSE4.1 17 310 vs 9 900 and 2 050 vs 1 210; AVX-512 23 920 vs 13 250 and
/// 9 270 vs 3 340 (batch 8 with VNNI, below; batch 1 now runs this loop).
template <class Arch>
inline std::int32_t dot_i8(const std::int8_t* a, const std::int8_t* b, std::size_t n) noexcept {
    std::size_t k = 0;
    std::int32_t acc = 0;
    if constexpr (is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
        __m512i s = _mm512_setzero_si512();
        for (; k + 32 <= n; k += 32) {
            const __m512i x = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + k)));
            const __m512i y = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + k)));
            s = _mm512_add_epi32(s, _mm512_madd_epi16(x, y));
        }
        acc = _mm512_reduce_add_epi32(s);
#endif
    } else if constexpr (is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
        __m256i s = _mm256_setzero_si256();
        for (; k + 16 <= n; k += 16) {
            const __m256i x = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + k)));
            const __m256i y = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + k)));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(x, y));
        }
        const __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        const __m128i q = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
        acc = _mm_cvtsi128_si32(_mm_add_epi32(q, _mm_shuffle_epi32(q, 0xB1)));
#endif
    } else if constexpr (is_sse4_1_v<Arch>) {
#if XSIMD_WITH_SSE4_1
        __m128i s = _mm_setzero_si128();
        for (; k + 8 <= n; k += 8) {
            const __m128i x = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(a + k)));
            const __m128i y = _mm_cvtepi8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + k)));
            s = _mm_add_epi32(s, _mm_madd_epi16(x, y));
        }
        const __m128i q = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
        acc = _mm_cvtsi128_si32(_mm_add_epi32(q, _mm_shuffle_epi32(q, 0xB1)));
#endif
    } else {
        // Four int8 per 32-bit lane, each sign-extended by a shift pair.
        namespace ds = ::lowbit::detail::simd;
        using i8 = xsimd::batch<std::int8_t, Arch>;
        using i32 = xsimd::batch<std::int32_t, Arch>;
        i32 s(0);
        for (; k + i8::size <= n; k += i8::size) {
            const i32 x = ds::bitcast<std::int32_t>(i8::load_unaligned(a + k));
            const i32 y = ds::bitcast<std::int32_t>(i8::load_unaligned(b + k));
            s += ds::dot4_i8(x, y);
        }
        acc = ds::reduce_add(s);
    }
    for (; k < n; ++k) acc += static_cast<std::int32_t>(a[k]) * static_cast<std::int32_t>(b[k]);
    return acc;
}

#if XSIMD_WITH_AVX512BW && defined(__GNUC__)
#define LOWBIT_BNB_VNNI 1
/// sum over k < k64 (a multiple of 64) of (a[k] ^ 0x80) * b[k] (SumB: of
/// b[k], a unused), modulo 2^32. Four accumulators: vpdpbusd's latency
/// (about 5 cycles) holds one chain to 64 products per 5 cycles.
/// BM_int8_gemm batch 8 on avx512bw (AMD EPYC 2.6 GHz), one accumulator with
/// sum(b) in the same loop vs this: 5.92 / 5.77 vs 4.21 / 4.48 ms.
template <class Arch, bool SumB>
__attribute__((target("avx512vnni"))) inline std::uint32_t dot_vnni(const std::int8_t* a, const std::int8_t* b,
                                                                    std::size_t k64) noexcept {
    const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
    const __m512i ones = _mm512_set1_epi8(1);
    const auto lhs = [&](std::size_t at) __attribute__((always_inline)) {
        if constexpr (SumB) return ones;
        else return _mm512_xor_si512(_mm512_loadu_si512(a + at), flip);
    };
    __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    std::size_t k = 0;
    for (; k + 256 <= k64; k += 256) {
        acc0 = _mm512_dpbusd_epi32(acc0, lhs(k), _mm512_loadu_si512(b + k));
        acc1 = _mm512_dpbusd_epi32(acc1, lhs(k + 64), _mm512_loadu_si512(b + k + 64));
        acc2 = _mm512_dpbusd_epi32(acc2, lhs(k + 128), _mm512_loadu_si512(b + k + 128));
        acc3 = _mm512_dpbusd_epi32(acc3, lhs(k + 192), _mm512_loadu_si512(b + k + 192));
    }
    for (; k < k64; k += 64) acc0 = _mm512_dpbusd_epi32(acc0, lhs(k), _mm512_loadu_si512(b + k));
    return static_cast<std::uint32_t>(
        _mm512_reduce_add_epi32(_mm512_add_epi32(_mm512_add_epi32(acc0, acc1), _mm512_add_epi32(acc2, acc3))));
}

/// AVX-512 VNNI: vpdpbusd multiplies unsigned by signed bytes, so a's codes are
/// offset by 128 (a ^ 0x80) and 128 * sum(b) is taken off again; 64 products
/// an instruction. sum(b) once per row of b.
template <class Arch>
__attribute__((target("avx512vnni"))) inline void int8_gemm_vnni(const int8_gemm_job& j) noexcept {
    const std::size_t k64 = j.k / 64 * 64;
    for (std::size_t n = j.n_begin; n < j.n_end; ++n) {
        const std::int8_t* b = j.b + n * j.ldb;
        const std::uint32_t sum_b = dot_vnni<Arch, true>(nullptr, b, k64);
        for (std::size_t i = 0; i < j.m; ++i) {
            const std::int8_t* a = j.a + i * j.lda;
            // Lanes wrap modulo 2^32; so does this, and the true dot product fits.
            std::int32_t dot = static_cast<std::int32_t>(dot_vnni<Arch, false>(a, b, k64) - 128u * sum_b);
            for (std::size_t k = k64; k < j.k; ++k) dot += static_cast<std::int32_t>(a[k]) * static_cast<std::int32_t>(b[k]);
            j.c[i * j.ldc + n] = dot;
        }
    }
}

template <class Arch>
inline bool cpu_has_avx512vnni() noexcept {
    static const bool has = __builtin_cpu_supports("avx512vnni");
    return has;
}
#endif

template <class Arch>
inline void int8_gemm(const int8_gemm_job& j) noexcept {
#if defined(LOWBIT_BNB_VNNI)
    if constexpr (is_avx512_v<Arch>) {
        // One row of a: dot_i8's 512-bit madd loop is faster (BM_int8_gemm
        // batch 1, avx512bw: 1.23 / 1.26 ms vs VNNI's 2.12 / 2.24; avx2 1.57).
        if (j.m >= 2 && cpu_has_avx512vnni<Arch>() &&
            ::lowbit::kernels::detail::int8_vnni_allowed().load(std::memory_order_relaxed)) {
            int8_gemm_vnni<Arch>(j);
            return;
        }
    }
#endif
    for (std::size_t n = j.n_begin; n < j.n_end; ++n)
        for (std::size_t i = 0; i < j.m; ++i) j.c[i * j.ldc + n] = dot_i8<Arch>(j.a + i * j.lda, j.b + n * j.ldb, j.k);
}

}  // namespace detail::bnb_kernel
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

template <class Arch>
void bnb4_dequantize_fn::operator()(Arch, const bnb4_dequantize_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, bnb4_dequantize_ref(j), {
        switch (j.type) {
        case out_type::f32: detail::bnb_kernel::bnb4_dequantize<Arch, out_type::f32>(j); break;
        case out_type::f16: detail::bnb_kernel::bnb4_dequantize<Arch, out_type::f16>(j); break;
        case out_type::bf16: detail::bnb_kernel::bnb4_dequantize<Arch, out_type::bf16>(j); break;
        }
    })
}

template <class Arch>
void bnb8_dequantize_fn::operator()(Arch, const bnb8_dequantize_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, bnb8_dequantize_ref(j), {
        switch (j.type) {
        case out_type::f32: detail::bnb_kernel::bnb8_dequantize<Arch, out_type::f32>(j); break;
        case out_type::f16: detail::bnb_kernel::bnb8_dequantize<Arch, out_type::f16>(j); break;
        case out_type::bf16: detail::bnb_kernel::bnb8_dequantize<Arch, out_type::bf16>(j); break;
        }
    })
}

template <class Arch>
void bnb4_gemv_fn::operator()(Arch, const bnb4_gemv_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, bnb4_gemv_ref(j), detail::bnb_kernel::bnb4_gemv<Arch>(j))
}

template <class Arch>
void bnb4_quantize_fn::operator()(Arch, const bnb4_quantize_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, bnb4_quantize_ref(j), detail::bnb_kernel::bnb4_quantize<Arch>(j))
}

template <class Arch>
void int8_gemm_fn::operator()(Arch, const int8_gemm_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, int8_gemm_ref(j), detail::bnb_kernel::int8_gemm<Arch>(j))
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

#define LOWBIT_KERNELS_BNB(EXT, ARCH)                                                                      \
    EXT template void lowbit::kernels::bnb4_dequantize_fn::operator()<ARCH>(                               \
        ARCH, const lowbit::kernels::bnb4_dequantize_job&) const noexcept;                                 \
    EXT template void lowbit::kernels::bnb8_dequantize_fn::operator()<ARCH>(                               \
        ARCH, const lowbit::kernels::bnb8_dequantize_job&) const noexcept;                                 \
    EXT template void lowbit::kernels::bnb4_gemv_fn::operator()<ARCH>(ARCH, const lowbit::kernels::bnb4_gemv_job&) \
        const noexcept;                                                                                    \
    EXT template void lowbit::kernels::bnb4_quantize_fn::operator()<ARCH>(                                 \
        ARCH, const lowbit::kernels::bnb4_quantize_job&) const noexcept;                                   \
    EXT template void lowbit::kernels::int8_gemm_fn::operator()<ARCH>(ARCH, const lowbit::kernels::int8_gemm_job&) \
        const noexcept;
LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_BNB)
