#pragma once
// Dequantize lowbit's planar storage (k-bit LSB-first code rows plus per-group
// float params) into f32, f16 or bf16 rows.
//
// Affine:  x = (float(q) - zero) * scale + bias, as exactly those float ops in
//          that order (no fma), skipping the subtract when zero is null and
//          the add when bias is null. Table: x = table[q] * scale.
// Every SIMD path matches the scalar reference bit for bit, including the
// f16/bf16 rounding of core/numeric.hpp.

#include <algorithm>
#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../pack/planar.hpp"
#include "../scheme/encode_rules.hpp"
#include "dispatch.hpp"

#if !defined(LOWBIT_NO_SIMD)
#include "../detail/fp_contract.hpp"
#include "../detail/xsimd_compat.hpp"
#include "lane_ops.hpp"
#endif

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

/// Element type of a dequantized row; f16 and bf16 are uint16_t bit patterns.
enum class out_type { f32, f16, bf16 };

/// Affine codes: x = (q - zero) * scale + bias, params per group of `group` columns.
struct affine_job {
    const std::uint8_t* codes;
    std::size_t code_stride;  ///< bytes between code rows (>= ceil(cols * bits / 8))
    int bits;                 ///< 1..8
    std::size_t rows, cols, group;
    const float* scale;
    const float* zero;  ///< may be null: no zero-point
    const float* bias;  ///< may be null: no bias
    std::size_t param_stride;  ///< params between rows; 0 = every row shares row 0's
    void* out;
    std::size_t out_stride;  ///< elements between output rows
    out_type type;
};

/// Table codes: x = table[q] * scale, params per group of `group` columns.
struct table_job {
    const std::uint8_t* codes;
    std::size_t code_stride;
    int bits;
    std::size_t rows, cols, group;
    const float* table;  ///< 2^bits entries
    const float* scale;
    std::size_t param_stride;
    void* out;
    std::size_t out_stride;
    out_type type;
    /// Optional: the table is this minifloat's (codes up to max_magnitude
    /// are sign, exponent and mantissa), so that kernels may compute entries
    /// rather than look them up; the results do not depend on it.
    /// dequantize_table drops a rule that does not give the table's value
    /// for every code (detail::minifloat_matches); the kernels, called
    /// directly, trust it.
    const minifloat_rule* minifloat = nullptr;
};

/// The job describing a planar view's weights; its output (out, out_stride,
/// type) is the caller's to set.
inline affine_job affine_job_of(const planar_view& w) noexcept {
    return {w.codes(), w.code_stride(), w.bits(), w.rows(), w.cols(), w.group(), w.scale(), w.zero(), w.bias(),
            w.param_stride(), nullptr, 0, out_type::f32};
}
inline table_job table_job_of(const planar_view& w) noexcept {
    return {w.codes(), w.code_stride(), w.bits(), w.rows(), w.cols(), w.group(), w.table(), w.scale(),
            w.param_stride(), nullptr, 0, out_type::f32, w.minifloat()};
}

namespace detail::dq {

inline std::size_t row_bytes(std::size_t cols, int bits) noexcept {
    return (cols * static_cast<std::size_t>(bits) + 7) / 8;
}

inline std::size_t out_size(out_type t) noexcept { return t == out_type::f32 ? 4 : 2; }

// The scalar oracle; the SIMD path never calls these (they are compiled without
// the per-arch -m flags).
inline unsigned ref_code(const std::uint8_t* row, std::size_t i, int bits) noexcept {
    const std::size_t bit = i * static_cast<std::size_t>(bits);
    const std::size_t byte = bit >> 3;
    const unsigned off = static_cast<unsigned>(bit & 7);
    unsigned v = static_cast<unsigned>(row[byte]) >> off;
    if (off + static_cast<unsigned>(bits) > 8) v |= static_cast<unsigned>(row[byte + 1]) << (8 - off);
    return v & ((1u << bits) - 1u);
}

inline void ref_store(void* out, std::size_t i, float x, out_type t) noexcept {
    switch (t) {
    case out_type::f32: static_cast<float*>(out)[i] = x; break;
    case out_type::f16: static_cast<std::uint16_t*>(out)[i] = float_to_fp16(x); break;
    case out_type::bf16: static_cast<std::uint16_t*>(out)[i] = float_to_bf16(x); break;
    }
}

}  // namespace detail::dq

namespace detail::dq {

/// The value at (r, c) of the weights a job describes, as the scalar
/// references form it: (q - zero) * scale + bias in those float operations.
inline float ref_value(const affine_job& j, std::size_t r, std::size_t c) noexcept {
    const std::size_t g = r * j.param_stride + c / j.group;
    float x = static_cast<float>(ref_code(j.codes + r * j.code_stride, c, j.bits));
    if (j.zero) x = x - j.zero[g];
    x = x * j.scale[g];
    if (j.bias) x = ::lowbit::detail::unfused(x) + j.bias[g];
    return x;
}
/// table[q] * scale.
inline float ref_value(const table_job& j, std::size_t r, std::size_t c) noexcept {
    return j.table[ref_code(j.codes + r * j.code_stride, c, j.bits)] * j.scale[r * j.param_stride + c / j.group];
}

template <class Job>
inline void dequantize_ref(const Job& j) noexcept {
    for (std::size_t r = 0; r < j.rows; ++r)
        for (std::size_t c = 0; c < j.cols; ++c) ref_store(j.out, r * j.out_stride + c, ref_value(j, r, c), j.type);
}

}  // namespace detail::dq

/// Scalar references (the test oracles); any bits 1..8, no validation.
inline void dequantize_affine_ref(const affine_job& j) noexcept { detail::dq::dequantize_ref(j); }
inline void dequantize_table_ref(const table_job& j) noexcept { detail::dq::dequantize_ref(j); }

/// Kernel functors: `Arch` is an xsimd arch tag or `kernels::scalar`.
struct dequantize_affine_fn {
    template <class Arch>
    void operator()(Arch, const affine_job& j) const noexcept;
};
struct dequantize_table_fn {
    template <class Arch>
    void operator()(Arch, const table_job& j) const noexcept;
};

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::dq {

// Which hand-written path an arch tag takes. Each is false unless this TU's -m
// flags enable it, so the intrinsics below are only compiled where they exist.
// LOWBIT_XSIMD_ONLY makes every one false: each kernel then runs its xsimd
// body on x86 too (the body NEON runs), which is how the gains recorded beside
// the intrinsics are measured and how the bodies are tested at x86's widths.
// Figures beside an intrinsic below: bench_dequantize (11008 x 4096, Mw/s,
// best of 2) built as is vs. with LOWBIT_XSIMD_ONLY, run back to back, AMD
// EPYC (Zen 5 class, 2.6 GHz); a row's gain is that of every helper it uses.
#if defined(LOWBIT_XSIMD_ONLY)
inline constexpr bool x86_intrinsics_on = false;
#else
inline constexpr bool x86_intrinsics_on = true;
#endif
template <class A>
inline constexpr bool is_avx512_v =
    x86_intrinsics_on && XSIMD_WITH_AVX512BW && std::is_base_of_v<xsimd::avx512bw, A>;
template <class A>
inline constexpr bool is_avx2_v = x86_intrinsics_on && XSIMD_WITH_AVX2 && std::is_base_of_v<xsimd::avx2, A>;
template <class A>
inline constexpr bool is_sse4_1_v =
    x86_intrinsics_on && XSIMD_WITH_SSE4_1 && std::is_base_of_v<xsimd::sse4_1, A>;
template <class A>
inline constexpr bool is_sse2_v = x86_intrinsics_on && XSIMD_WITH_SSE2 && std::is_base_of_v<xsimd::sse2, A>;
template <class A>
inline constexpr bool is_ssse3_v = x86_intrinsics_on && XSIMD_WITH_SSSE3 && std::is_base_of_v<xsimd::ssse3, A>;

/// The arch of 16-byte steps (nibble splits, byte transposes): Arch where its
/// batches are 16 bytes (NEON, SSE4.1), SSE4.1's under the wider x86 tags,
/// whose -m flags include it. A body on it is xsimd code on every arch.
#if XSIMD_WITH_SSE4_1
template <class A>
using arch16 = std::conditional_t<xsimd::batch<std::uint8_t, A>::size == 16, A, xsimd::sse4_1>;
#else
template <class A>
using arch16 = A;
#endif

/// fp16_to_float, per arch (F16C converts every half exactly); the ggml
/// kernels read their fp16 scales with it. Instantiated on Arch, so that no
/// per-arch TU's copy stands in for another's. F16C over the portable decode,
/// bench_ggml_dequantize <type>_row (into L1, GB/s, best of 2, EPYC 2.6 GHz):
/// AVX-512 q4_0 148 vs 92, q4_1 115 vs 58, iq4_nl 144 vs 70, q8_0 148 vs 103;
/// AVX2 q8_0 133 vs 112, q4_1 72 vs 67, the rest within noise.
template <class Arch>
inline float half(std::uint16_t h) noexcept {
#if defined(__F16C__)
    if constexpr (is_avx2_v<Arch> || is_avx512_v<Arch>) return _cvtsh_ss(h);
#endif
    return ::lowbit::fp16_to_float<Arch>(h);
}

// Codes are decoded a block of 64 at a time: 64 * k bits is always whole bytes
// and a whole number of batches on every arch.
inline constexpr std::size_t block = 64;

/// n little-endian words of W bytes (W = 1: codes; W = 2: bf16/f16 inputs,
/// 16-bit codes; n = lanes) zero-extended to 32-bit lanes. The x86 widening
/// loads over the xsimd body: int8_per_row_f32 9 590 vs 7 400 Mw/s (AVX-512),
/// 10 080 vs 6 930 (AVX2), 9 930 vs 6 930 (SSE4.1).
template <class Arch, int W>
inline xsimd::batch<std::uint32_t, Arch> widen(const std::uint8_t* p) noexcept {
    static_assert(W == 1 || W == 2);
    using u32 = xsimd::batch<std::uint32_t, Arch>;
    // The first 4 * W bytes as one integer (the 128-bit tags' whole input).
    const auto low = [p] {
        std::conditional_t<W == 1, std::uint32_t, std::uint64_t> w;
        std::memcpy(&w, p, sizeof w);
        return w;
    };
    if constexpr (is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
        if constexpr (W == 1) return u32(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
        else return u32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#endif
    } else if constexpr (is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
        if constexpr (W == 1) return u32(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
        else return u32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
    } else if constexpr (is_sse4_1_v<Arch>) {
#if XSIMD_WITH_SSE4_1
        if constexpr (W == 1) return u32(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(static_cast<int>(low()))));
        else return u32(_mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
#endif
    } else if constexpr (is_sse2_v<Arch>) {
#if XSIMD_WITH_SSE2
        const __m128i z = _mm_setzero_si128();
        if constexpr (W == 1)
            return u32(_mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(static_cast<int>(low())), z), z));
        else return u32(_mm_unpacklo_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), z));
#endif
    } else if constexpr (u32::size == 4) {
        // NEON (and SSE without the intrinsics): the input broadcast as one
        // integer, zipped with zeros up to 32 bits (xsimd 8.1 has no widening
        // load; its converting load goes through a buffer).
        namespace ds = ::lowbit::detail::simd;
        using u8 = xsimd::batch<std::uint8_t, Arch>;
        using u16 = xsimd::batch<std::uint16_t, Arch>;
        u16 h;
        if constexpr (W == 1) h = ds::bitcast<std::uint16_t>(xsimd::zip_lo(ds::bitcast<std::uint8_t>(u32(low())), u8(0)));
        else h = ds::bitcast<std::uint16_t>(xsimd::batch<std::uint64_t, Arch>(low()));
        return ds::bitcast<std::uint32_t>(xsimd::zip_lo(h, u16(0)));
    } else {
        alignas(64) std::uint32_t buf[u32::size];
        for (std::size_t i = 0; i < u32::size; ++i)
            buf[i] = W == 1 ? p[i] : static_cast<std::uint32_t>(p[2 * i] | (p[2 * i + 1] << 8));
        return u32::load_aligned(buf);
    }
}

/// Store the low 16 bits of each lane (every lane holds a value < 2^16). The
/// x86 narrowing stores over the xsimd body's buffer: int4_g128_zero_bf16
/// 4 750 vs 2 330 Mw/s (AVX2), 2 980 vs 2 000 (SSE4.1); the store is most
/// of what differs on those rows.
template <class Arch>
inline void narrow_store(const xsimd::batch<std::uint32_t, Arch>& v, std::uint16_t* dst) noexcept {
    using u32 = xsimd::batch<std::uint32_t, Arch>;
    if constexpr (is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_cvtepi32_epi16(v));
#endif
    } else if constexpr (is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
        const __m256i r = v;
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                         _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
#endif
    } else if constexpr (is_sse4_1_v<Arch>) {
#if XSIMD_WITH_SSE4_1
        _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_packus_epi32(v, v));
#endif
    } else if constexpr (is_sse2_v<Arch>) {
#if XSIMD_WITH_SSE2
        __m128i r = _mm_shufflelo_epi16(v, _MM_SHUFFLE(3, 3, 2, 0));
        r = _mm_shufflehi_epi16(r, _MM_SHUFFLE(3, 3, 2, 0));
        _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm_shuffle_epi32(r, _MM_SHUFFLE(3, 3, 2, 0)));
#endif
    } else {
        alignas(64) std::uint32_t buf[u32::size];
        v.store_aligned(buf);
        for (std::size_t i = 0; i < u32::size; ++i) dst[i] = static_cast<std::uint16_t>(buf[i]);
    }
}

/// float_to_fp16 on every lane, in integer ops (archs without F16C).
template <class Arch>
LOWBIT_FORCE_INLINE xsimd::batch<std::uint32_t, Arch> fp16_bits(const xsimd::batch<float, Arch>& v) noexcept {
    using i32 = xsimd::batch<std::int32_t, Arch>;
    using f32 = xsimd::batch<float, Arch>;
    namespace s = ::lowbit::detail::simd;
    const i32 x = s::bitcast<std::int32_t>(v);
    const i32 sign = (x >> 16) & i32(0x8000);
    const i32 ax = x & i32(0x7FFFFFFF);
    const i32 r = ax - i32(0x38000000);
    const i32 normal = (r + i32(0xFFF) + ((r >> 13) & i32(1))) >> 13;
    // Below 2^-14 the fp16 value counts units of 2^-24: adding 0.5f (whose ulp
    // is 2^-24) makes the FPU round |v| to that unit, nearest-even.
    const i32 sub = s::bitcast<std::int32_t>(s::bitcast<float>(ax) + f32(0.5f)) - i32(0x3F000000);
    const i32 nan = i32(0x7E00) | ((ax >> 13) & i32(0x3FF));
    i32 h = s::select_int(ax < i32(0x38800000), sub, normal);
    h = s::select_int(ax >= i32(0x477FF000), i32(0x7C00), h);
    h = s::select_int(ax > i32(0x7F800000), nan, h);
    return s::bitcast<std::uint32_t>(h | sign);
}

/// Write one batch of values at `dst` (n elements of the output type). NT:
/// non-temporal stores (dst aligned to the batch's bytes) for outputs far
/// bigger than the caches, which then skip the read-for-ownership. Always
/// inlined (with fp16_bits and bf16_bits): g++ called it per batch from the
/// run loops below, halving the f16/bf16 speed. The x86 paths over the xsimd
/// body (integer fp16 rounding, buffered narrowing, plain stores):
/// int4_g128_zero_f16 17 590 vs 5 880 Mw/s (AVX-512), 11 540 vs 1 580 (AVX2,
/// F16C), 1 450 vs 1 160 (SSE4.1); bf16 10 240 vs 9 690 and 4 750 vs 2 330;
/// f32 to DRAM 9 760 vs 6 310 and 8 940 vs 6 570, against 19 810 vs 13 290
/// into L1.
template <class Arch, out_type OT, bool NT = false>
LOWBIT_FORCE_INLINE void emit(const xsimd::batch<float, Arch>& v, void* dst) noexcept {
    if constexpr (OT == out_type::f32) {
        if constexpr (NT && is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
            _mm512_stream_ps(static_cast<float*>(dst), v);
#endif
        } else if constexpr (NT && is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
            _mm256_stream_ps(static_cast<float*>(dst), v);
#endif
        } else if constexpr (NT && is_sse2_v<Arch>) {
#if XSIMD_WITH_SSE2
            _mm_stream_ps(static_cast<float*>(dst), v);
#endif
        } else {
            v.store_unaligned(static_cast<float*>(dst));
        }
    } else if constexpr (is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
        // F16C rounds to nearest even, gives +-Inf on overflow and quiets NaN
        // keeping the top payload bits: the same bits as float_to_fp16.
        const __m256i h = OT == out_type::f16 ? _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT)
                                              : _mm512_cvtepi32_epi16(::lowbit::detail::simd::bf16_bits(v));
        if constexpr (NT) _mm256_stream_si256(static_cast<__m256i*>(dst), h);
        else _mm256_storeu_si256(static_cast<__m256i*>(dst), h);
#endif
    } else if constexpr (is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
        __m128i h;
        if constexpr (OT == out_type::bf16) {
            const __m256i r = ::lowbit::detail::simd::bf16_bits(v);
            h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
        } else {
#if defined(__F16C__)
            h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT);
#else
            const __m256i r = fp16_bits<Arch>(v);
            h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
#endif
        }
        if constexpr (NT) _mm_stream_si128(static_cast<__m128i*>(dst), h);
        else _mm_storeu_si128(static_cast<__m128i*>(dst), h);
#endif
    } else if constexpr (OT == out_type::bf16) {
        narrow_store<Arch>(::lowbit::detail::simd::bf16_bits(v), static_cast<std::uint16_t*>(dst));
    } else {
        narrow_store<Arch>(fp16_bits<Arch>(v), static_cast<std::uint16_t*>(dst));
    }
}

/// Whether a job's output is worth writing around the caches.
template <class Arch>
inline bool use_streaming(const void* out, std::size_t rows, std::size_t out_stride, std::size_t esize) noexcept {
    constexpr std::size_t min_bytes = std::size_t{16} << 20;
    constexpr std::size_t align = 64;
    const bool x86 = is_avx512_v<Arch> || is_avx2_v<Arch> || (is_sse2_v<Arch> && esize == 4);
    return x86 && rows * out_stride * esize >= min_bytes && reinterpret_cast<std::uintptr_t>(out) % align == 0 &&
           out_stride * esize % align == 0;
}

template <class Arch>
inline void stream_fence() noexcept {
    if constexpr (is_sse2_v<Arch> || is_avx2_v<Arch> || is_avx512_v<Arch>) {
#if XSIMD_WITH_SSE2
        _mm_sfence();
#endif
    }
}

/// Whether a large output on x86 that streaming cannot write in place (its
/// start or row stride is not 64-byte aligned, as std::vector's storage is;
/// the caller has found use_streaming false) should be decoded through an
/// aligned scratch instead (scratch_rows).
template <class Arch>
inline bool use_scratch(std::size_t rows, std::size_t cols, std::size_t out_stride, std::size_t esize,
                        std::size_t scratch_bytes) noexcept {
    constexpr std::size_t min_bytes = std::size_t{16} << 20;
    const bool x86 = is_avx512_v<Arch> || is_avx2_v<Arch> || (is_sse2_v<Arch> && esize == 4);
    return x86 && rows * out_stride * esize >= min_bytes && cols * esize <= scratch_bytes;
}

/// n bytes from src to dst, the 64-byte aligned lines of dst written with
/// non-temporal stores (the head and tail of the row plainly); xsimd has no
/// streaming store, and the gain is scratch_rows' below.
template <class Arch>
inline void stream_copy(unsigned char* dst, const unsigned char* src, std::size_t n) noexcept {
    const std::size_t head = std::min(n, (64 - reinterpret_cast<std::uintptr_t>(dst) % 64) % 64);
    std::memcpy(dst, src, head);
    dst += head, src += head, n -= head;
    for (; n >= 64; n -= 64, dst += 64, src += 64) {
        if constexpr (is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
            _mm512_stream_ps(reinterpret_cast<float*>(dst), _mm512_loadu_ps(src));
#endif
        } else if constexpr (is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
            _mm256_stream_ps(reinterpret_cast<float*>(dst), _mm256_loadu_ps(reinterpret_cast<const float*>(src)));
            _mm256_stream_ps(reinterpret_cast<float*>(dst + 32),
                             _mm256_loadu_ps(reinterpret_cast<const float*>(src + 32)));
#endif
        } else if constexpr (is_sse2_v<Arch>) {
#if XSIMD_WITH_SSE2
            for (std::size_t k = 0; k < 64; k += 16)
                _mm_stream_ps(reinterpret_cast<float*>(dst + k), _mm_loadu_ps(reinterpret_cast<const float*>(src + k)));
#endif
        } else {
            std::memcpy(dst, src, 64);
        }
    }
    std::memcpy(dst, src, n);
}

/// A job whose output streaming cannot write in place (use_scratch), a few
/// rows at a time: run(job) decodes them into an aligned scratch in L1, then
/// stream_copy writes them out. Decoding to DRAM with plain stores pays a
/// read for ownership of every line: int4-g128 into a std::vector
/// (16 bytes past 64-byte alignment), 11008 x 4096, 2 100-2 300 -> 3 300-3 400
/// Mw/s (bench_quantize, AVX-512, EPYC 2.6 GHz).
template <class Arch, class Job, class Shift, class Run>
inline void scratch_rows(const Job& j, std::size_t esize, unsigned char* scratch, std::size_t scratch_bytes,
                         Shift&& shift, Run&& run) noexcept {
    const std::size_t row = j.cols * esize;
    const std::size_t block = scratch_bytes / row;
    for (std::size_t r0 = 0; r0 < j.rows; r0 += block) {
        Job b = shift(j, r0);
        b.rows = std::min(block, j.rows - r0);
        b.out = scratch;
        b.out_stride = j.cols;
        run(b);
        for (std::size_t r = 0; r < b.rows; ++r)
            stream_copy<Arch>(static_cast<unsigned char*>(j.out) + (r0 + r) * j.out_stride * esize, scratch + r * row,
                              row);
    }
    stream_fence<Arch>();
}

/// Rows [r0, ...) of a job: its pointers moved to row r0.
inline affine_job rows_from(affine_job j, std::size_t r0) noexcept {
    j.codes += r0 * j.code_stride;
    j.scale += r0 * j.param_stride;
    if (j.zero) j.zero += r0 * j.param_stride;
    if (j.bias) j.bias += r0 * j.param_stride;
    j.out = static_cast<unsigned char*>(j.out) + r0 * j.out_stride * out_size(j.type);
    j.rows -= r0;
    return j;
}
inline table_job rows_from(table_job j, std::size_t r0) noexcept {
    j.codes += r0 * j.code_stride;
    j.scale += r0 * j.param_stride;
    j.out = static_cast<unsigned char*>(j.out) + r0 * j.out_stride * out_size(j.type);
    j.rows -= r0;
    return j;
}

/// Runs run(job, nt) on the job, through scratch_rows when use_scratch says
/// so and the decoder is fast enough in L1 for the extra copy to pay: affine
/// codes and tables of at most 16 entries, in groups of 64 or more (measured
/// as above: int4/int3/int2/mlx-4b/nf4/int8-ch 2 100-2 850 -> 3 150-3 550
/// Mw/s; groups of 32 and 16, 6- and 8-bit tables gained nothing or lost).
template <class Arch, class Job, class Run>
inline void with_output(const Job& j, std::size_t esize, bool fast_decoder, Run&& run) noexcept {
    constexpr std::size_t scratch_bytes = 64 * 1024;
    const bool nt = use_streaming<Arch>(j.out, j.rows, j.out_stride, esize);
    if (!nt && fast_decoder && j.group >= 64 && use_scratch<Arch>(j.rows, j.cols, j.out_stride, esize, scratch_bytes)) {
        alignas(64) unsigned char scratch[scratch_bytes];
        scratch_rows<Arch>(j, esize, scratch, scratch_bytes, [](const Job& x, std::size_t r) { return rows_from(x, r); },
                           [&](const Job& b) { run(b, false); });
        return;
    }
    run(j, nt);
    if (nt) stream_fence<Arch>();
}

// Two ways to get a batch of codes as 32-bit lanes. The xsimd body (NEON,
// SSE4.1) decodes a chunk of a row to one byte per code, then widens a batch
// of bytes at a time; AVX2 and AVX-512 read each batch in place from the
// packed row (packed_codes). Speeds below: a 2-core KVM Intel Xeon with
// AVX-512 and AMX, 11008 x 4096 codes to f32.

/// Bytes a decode_block may read from its source: its 8k bytes and what
/// follows them (a whole 64 bytes, so the windows below can use full vector
/// loads); decode_span copies a block with less than this left to a padded buffer.
inline constexpr std::size_t block_reach = 64;

/// Eight codes of k < 8 bits to a 64-bit lane, from k bytes at p + k * lane
/// (the lane's bits from 8k on are ignored).
template <class Arch, int K>
inline xsimd::batch<std::uint64_t, Arch> windows8(const std::uint8_t* p) noexcept {
    static_assert(std::endian::native == std::endian::little, "code words are read little-endian");
    using u64 = xsimd::batch<std::uint64_t, Arch>;
    alignas(64) std::uint64_t buf[u64::size];
    for (std::size_t l = 0; l < u64::size; ++l) std::memcpy(&buf[l], p + static_cast<std::size_t>(K) * l, 8);
    return u64::load_aligned(buf);
}

/// The eight k-bit codes in the low 8k bits of each 64-bit lane, one per byte:
/// halves to the 32-bit halves, quarters to the 16-bit quarters, then codes to bytes.
template <class Arch, int K>
inline xsimd::batch<std::uint64_t, Arch> spread8(xsimd::batch<std::uint64_t, Arch> x) noexcept {
    using u64 = xsimd::batch<std::uint64_t, Arch>;
    constexpr std::uint64_t m4 = (std::uint64_t{1} << (4 * K)) - 1u;
    constexpr std::uint64_t m2 = ((std::uint64_t{1} << (2 * K)) - 1u) * 0x0000000100000001u;
    constexpr std::uint64_t m1 = ((std::uint64_t{1} << K) - 1u) * 0x0001000100010001u;
    x = (x & u64(m4)) | ((x << (32 - 4 * K)) & u64(m4 << 32));
    x = (x & u64(m2)) | ((x << (16 - 2 * K)) & u64(m2 << 16));
    return (x & u64(m1)) | ((x << (8 - K)) & u64(m1 << 8));
}

/// 64 k-bit codes (8k bytes at src, block_reach readable) as 64 bytes at buf
/// (64-byte aligned).
template <class Arch, int K>
inline void decode_block(const std::uint8_t* src, std::uint8_t* buf) noexcept {
    using u32 = xsimd::batch<std::uint32_t, Arch>;
    constexpr std::size_t n = u32::size;
    if constexpr (K == 4 && n >= 4) {
        // Two bytes (four codes) per lane; spread each nibble to its own byte.
        for (std::size_t i = 0; i < block / (4 * n); ++i) {
            const u32 x = widen<Arch, 2>(src + 2 * n * i);
            const u32 y = (x & u32(0xFu)) | ((x << 4) & u32(0xF00u)) | ((x << 8) & u32(0xF0000u)) |
                          ((x << 12) & u32(0xF000000u));
            y.store_aligned(reinterpret_cast<std::uint32_t*>(buf) + n * i);
        }
    } else if constexpr (K == 2 && n >= 4) {
        for (std::size_t i = 0; i < block / (4 * n); ++i) {
            const u32 x = widen<Arch, 1>(src + n * i);
            const u32 y = (x & u32(0x3u)) | ((x << 6) & u32(0x300u)) | ((x << 12) & u32(0x30000u)) |
                          ((x << 18) & u32(0x3000000u));
            y.store_aligned(reinterpret_cast<std::uint32_t*>(buf) + n * i);
        }
    } else {
        using u64 = xsimd::batch<std::uint64_t, Arch>;
        constexpr std::size_t m = u64::size;
        for (std::size_t i = 0; i < block / (8 * m); ++i)
            spread8<Arch, K>(windows8<Arch, K>(src + static_cast<std::size_t>(K) * m * i))
                .store_aligned(reinterpret_cast<std::uint64_t*>(buf) + m * i);
    }
}

// The xsimd body decodes a row a chunk of codes at a time into an L1-resident
// byte buffer, then converts it one run of constant params (a group, or the
// part of it inside the chunk) at a time, so the inner loop carries no
// bookkeeping. A chunk's decoding issues no output stores: short enough that
// the store buffer covers it while the output goes to DRAM (6-bit, SSE4.1:
// about 1830 Mw/s with chunks of 1024, 1950 with 256; no slower into L1).
inline constexpr std::size_t chunk = 256;

template <class Arch>
using decode_fn = const std::uint8_t* (*)(const std::uint8_t*, std::size_t, std::size_t, std::uint8_t*) noexcept;

/// `count` codes (starting on a block boundary) as bytes; returns where they are
/// (src itself for 8-bit codes). `avail` bytes are readable at src; dst holds
/// chunk + block bytes.
template <class Arch, int K>
inline const std::uint8_t* decode_span(const std::uint8_t* src, std::size_t count, std::size_t avail,
                                       std::uint8_t* dst) noexcept {
    constexpr std::size_t block_bytes = 8 * static_cast<std::size_t>(K);
    const std::size_t full = count / block;
    const std::size_t rest = count - full * block;
    if constexpr (K == 8) {
        (void)avail;
        if (rest == 0) return src;
        std::memcpy(dst, src, count);
        return dst;
    } else {
        // Blocks with block_reach bytes to read decode in place, the last few
        // of a row from a zero-padded copy.
        std::size_t direct = avail < block_reach ? 0 : (avail - block_reach) / block_bytes + 1;
        if (direct > full) direct = full;
        for (std::size_t b = 0; b < direct; ++b) decode_block<Arch, K>(src + b * block_bytes, dst + b * block);
        for (std::size_t b = direct; b * block < count; ++b) {
            alignas(64) std::uint8_t tail[block_reach] = {};
            std::memcpy(tail, src + b * block_bytes, b < full ? block_bytes : (rest * K + 7) / 8);
            decode_block<Arch, K>(tail, dst + b * block);
        }
        return dst;
    }
}

template <class Arch>
inline decode_fn<Arch> pick_decoder(int bits) noexcept {
    switch (bits) {
    case 1: return &decode_span<Arch, 1>;
    case 2: return &decode_span<Arch, 2>;
    case 3: return &decode_span<Arch, 3>;
    case 4: return &decode_span<Arch, 4>;
    case 5: return &decode_span<Arch, 5>;
    case 6: return &decode_span<Arch, 6>;
    case 7: return &decode_span<Arch, 7>;
    default: return &decode_span<Arch, 8>;
    }
}

/// A chunk's codes decoded to bytes: q holds those of columns c0 on.
template <class Arch>
struct byte_codes {
    const std::uint8_t* q;
    std::size_t c0;

    /// Batches starting before this column are read in place (all of them).
    std::size_t in_place_end() const noexcept { return ~std::size_t{0}; }
    const std::uint8_t* at(std::size_t t) const noexcept { return q + (t - c0); }
    /// The `cnt` codes from column t copied to `scratch` (zeroed, 64 bytes).
    const std::uint8_t* copy(std::size_t t, std::size_t cnt, std::uint8_t* scratch) const noexcept {
        std::memcpy(scratch, q + (t - c0), cnt);
        return scratch;
    }
};

/// Whether Arch reads codes in place from the packed row (packed_codes).
template <class A>
inline constexpr bool reads_packed_v = is_avx512_v<A> || is_avx2_v<A>;

/// Shuffle control and shift of lane l for k-bit codes (packed_codes): the
/// two bytes holding code l of a batch into the lane's low half, the upper
/// half zeroed. The second byte may lie past the batch (only when the code
/// does not reach into it): the shuffle then takes any byte, which the mask clears.
struct packed_lanes {
    alignas(64) std::uint32_t ctrl[16];
    alignas(64) std::uint32_t shift[16];
};
inline constexpr std::array<packed_lanes, 9> packed_table = [] {
    std::array<packed_lanes, 9> t{};
    for (std::size_t k = 1; k <= 8; ++k)
        for (std::size_t l = 0; l < 16; ++l) {
            const std::size_t bit = l * k, byte = bit / 8;
            t[k].ctrl[l] = 0x80800000u | static_cast<std::uint32_t>(((byte + 1) % 16) << 8 | byte);
            t[k].shift[l] = static_cast<std::uint32_t>(bit % 8);
        }
    return t;
}();

/// A batch of n k-bit codes read in place from the packed row (n * k / 8
/// bytes, whole for n = 8 and 16): one load broadcast to every 128-bit lane, a
/// byte shuffle giving each 32-bit lane the two bytes that hold its code, a
/// per-lane shift and a mask.
template <class Arch>
struct packed_codes {
    using u32 = xsimd::batch<std::uint32_t, Arch>;
    using i32 = xsimd::batch<std::int32_t, Arch>;
    static constexpr std::size_t n = u32::size;
    static_assert(n == 8 || n == 16, "batches of whole bytes");
    /// Bytes a batch's load reads.
    static constexpr std::size_t reach = n;

    std::size_t bits;
    u32 ctrl, shift, mask;

    explicit packed_codes(int k) noexcept
        : bits(static_cast<std::size_t>(k)),
          ctrl(u32::load_aligned(packed_table[bits].ctrl)),
          shift(u32::load_aligned(packed_table[bits].shift)),
          mask((1u << bits) - 1u) {}

    /// Batches starting before this column of a row of rb bytes read in place.
    std::size_t in_place_end(std::size_t rb) const noexcept { return rb < reach ? 0 : (rb - reach) * 8 / bits + 1; }

    /// The codes whose bytes start `skip` bytes into the reach bytes at p.
    i32 load(const std::uint8_t* p, std::size_t skip = 0) const noexcept {
        // Over the xsimd body, bench_quantize dequantize/mxfp6-e2m3 (output to
        // DRAM) 1880-1950 -> 2230-2490 Mw/s on AVX-512 and 1960-2080 ->
        // 2260-2450 on AVX2; 6-bit codes into L1 4550 -> 5420 (AVX-512) and
        // 4460 -> 4660 (AVX2). Decoding to bytes first stalls the output stores.
        // (A skip moves the zeroing 0x80 entries to 0x8x, which still zero.)
        if constexpr (is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
            const __m512i x = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
            const __m512i c = skip ? _mm512_add_epi8(ctrl, _mm512_set1_epi8(static_cast<char>(skip))) : __m512i(ctrl);
            return i32(_mm512_and_si512(_mm512_srlv_epi32(_mm512_shuffle_epi8(x, c), shift), mask));
#endif
        } else if constexpr (is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
            const __m256i x = _mm256_broadcastq_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
            const __m256i c = skip ? _mm256_add_epi8(ctrl, _mm256_set1_epi8(static_cast<char>(skip))) : __m256i(ctrl);
            return i32(_mm256_and_si256(_mm256_srlv_epi32(_mm256_shuffle_epi8(x, c), shift), mask));
#endif
        } else {
            (void)p;
            (void)skip;
            return i32(0);
        }
    }
};

/// A row of rb bytes read in place; batches from column `end` on (the last
/// few) load the row's last reach bytes instead, skipping to theirs, or (rows
/// shorter than that) go through a zero-padded copy.
template <class Arch>
struct packed_row {
    packed_codes<Arch> pc;
    const std::uint8_t* row;
    std::size_t rb, end;

    std::size_t in_place_end() const noexcept { return end; }
    xsimd::batch<std::int32_t, Arch> at(std::size_t t) const noexcept { return pc.load(row + t * pc.bits / 8); }
    xsimd::batch<std::int32_t, Arch> copy(std::size_t t, std::size_t cnt, std::uint8_t* scratch) const noexcept {
        const std::size_t at = t * pc.bits / 8;
        if (rb >= pc.reach) return pc.load(row + rb - pc.reach, at - (rb - pc.reach));
        std::memcpy(scratch, row + at, (cnt * pc.bits + 7) / 8);
        return pc.load(scratch);
    }
};

/// Calls spans(r, codes, c0, e0) for every row r and run [c0, e0) of its
/// columns, `codes` giving their codes: the whole row read in place where the
/// arch can, else a chunk at a time decoded to bytes.
template <class Arch, class Job, class Spans>
LOWBIT_FORCE_INLINE void for_each_run(const Job& j, const Spans& spans) noexcept {
    const std::size_t rb = row_bytes(j.cols, j.bits);
    if (j.bits == 8) {
        // A byte per code already.
        for (std::size_t r = 0; r < j.rows; ++r) spans(r, byte_codes<Arch>{j.codes + r * j.code_stride, 0}, std::size_t{0}, j.cols);
    } else if constexpr (reads_packed_v<Arch>) {
        const packed_codes<Arch> pc(j.bits);
        const std::size_t end = pc.in_place_end(rb);
        for (std::size_t r = 0; r < j.rows; ++r)
            spans(r, packed_row<Arch>{pc, j.codes + r * j.code_stride, rb, end}, std::size_t{0}, j.cols);
    } else {
        const decode_fn<Arch> decode = pick_decoder<Arch>(j.bits);
        alignas(64) std::uint8_t buf[chunk + block];
        for (std::size_t r = 0; r < j.rows; ++r) {
            const std::uint8_t* src = j.codes + r * j.code_stride;
            for (std::size_t c0 = 0; c0 < j.cols; c0 += chunk) {
                const std::size_t e0 = c0 + chunk < j.cols ? c0 + chunk : j.cols;
                const std::size_t at = c0 / 8 * static_cast<std::size_t>(j.bits);
                spans(r, byte_codes<Arch>{decode(src + at, e0 - c0, rb - at, buf), c0}, c0, e0);
            }
        }
    }
}

/// n codes as 32-bit lanes: widened from bytes, or already so.
template <class Arch>
inline xsimd::batch<std::int32_t, Arch> code_lanes(const std::uint8_t* q) noexcept {
    return ::lowbit::detail::simd::bitcast<std::int32_t>(widen<Arch, 1>(q));
}
template <class Arch>
inline xsimd::batch<std::int32_t, Arch> code_lanes(const xsimd::batch<std::int32_t, Arch>& q) noexcept {
    return q;
}

template <class Arch, bool Z, bool B, class Q>
LOWBIT_FORCE_INLINE xsimd::batch<float, Arch> affine_value(const Q& q, const xsimd::batch<float, Arch>& s,
                                              const xsimd::batch<float, Arch>& z,
                                              const xsimd::batch<float, Arch>& b) noexcept {
    xsimd::batch<float, Arch> x = xsimd::to_float(code_lanes<Arch>(q));
    if constexpr (Z) x = x - z;
    x = x * s;
    if constexpr (B) x = ::lowbit::detail::unfused(x) + b;
    return x;
}

/// Params of lanes starting at column c, for groups narrower than or
/// straddling a batch; lanes past the row end reuse its last group.
template <class Arch>
inline xsimd::batch<float, Arch> lane_params(const float* p, std::size_t c, std::size_t group,
                                             std::size_t last) noexcept {
    constexpr std::size_t n = xsimd::batch<float, Arch>::size;
    alignas(64) float buf[n];
    std::size_t gi = c / group, rem = group - c % group;
    for (std::size_t l = 0; l < n; ++l) {
        buf[l] = p[gi <= last ? gi : last];
        if (--rem == 0) {
            ++gi;
            rem = group;
        }
    }
    return xsimd::batch<float, Arch>::load_aligned(buf);
}

/// Calls use.full(make(codes, col), col) for the batches of [c, e) (c a
/// multiple of the batch size) the codes give in place, and use.part(value,
/// col, count) for the others: batches read through zero-padded copies, and a
/// row's last partial batch (count < lanes), so nothing is read past the row.
/// Every argument is taken by value: the x86 stores are may-alias, and
/// through a reference the compiler reloads what they might have changed
/// (the output pointer, shuffle controls, params) on every batch, 10% of
/// bench_quantize dequantize/int4-g128-asym (AVX-512).
/// Use::unroll batches in a row go to use.full<0> ... full<unroll - 1>, so
/// that a use keeping sums can keep that many independent ones.
template <class Arch, class Codes, class Make, class Use>
LOWBIT_FORCE_INLINE void run_batches(const Codes codes, std::size_t c, std::size_t e, const Make make,
                                     const Use use) noexcept {
    constexpr std::size_t n = xsimd::batch<float, Arch>::size;
    constexpr std::size_t U = Use::unroll;
    std::size_t t = c;
    std::size_t stop = c + (e - c) / n * n;
    if (stop > codes.in_place_end()) stop = codes.in_place_end();
    if constexpr (U > 1)
        for (; t + U * n <= stop; t += U * n)
            [&]<std::size_t... u>(std::index_sequence<u...>) LOWBIT_LAMBDA_INLINE {
                (use.template full<u>(make(codes.at(t + u * n), t + u * n), t + u * n), ...);
            }(std::make_index_sequence<U>{});
    for (; t < stop; t += n) use.template full<0>(make(codes.at(t), t), t);
    for (; t < e; t += n) {
        alignas(64) std::uint8_t scratch[64] = {};
        const std::size_t cnt = e - t < n ? e - t : n;
        use.part(make(codes.copy(t, cnt, scratch), t), t, cnt);
    }
}

/// run_batches' `use` that stores each batch at its column of a row at dst
/// (NT: streamed, as emit), a partial batch through a buffer.
template <class Arch, out_type OT, bool NT>
struct store_batches {
    static constexpr std::size_t n = xsimd::batch<float, Arch>::size;
    static constexpr std::size_t esize = OT == out_type::f32 ? 4 : 2;
    static constexpr std::size_t unroll = 1;
    unsigned char* dst;

    template <std::size_t = 0>
    LOWBIT_FORCE_INLINE void full(const xsimd::batch<float, Arch>& v, std::size_t t) const noexcept {
        emit<Arch, OT, NT>(v, dst + t * esize);
    }
    LOWBIT_FORCE_INLINE void part(const xsimd::batch<float, Arch>& v, std::size_t t, std::size_t cnt) const noexcept {
        if (cnt == n) {
            // Streamed like the rest: a line half streamed, half stored is slow.
            emit<Arch, OT, NT>(v, dst + t * esize);
        } else {
            alignas(64) unsigned char ot[n * esize];
            emit<Arch, OT>(v, ot);
            std::memcpy(dst + t * esize, ot, cnt * esize);
        }
    }
};

/// Where the run kernels below put a run's values: dequantize stores them
/// in the output rows (store_rows); the planar GEMV multiplies them into
/// accumulators (kernels/gemv.hpp). span(r, codes, c, e, make) takes the
/// values make(codes, col) of row r's columns [c, e).
template <class Arch, out_type OT>
struct store_rows {
    void* out;
    std::size_t out_stride;
    bool nt;

    template <class Codes, class Make>
    LOWBIT_FORCE_INLINE void span(std::size_t r, const Codes& codes, std::size_t c, std::size_t e,
                                  const Make& make) const noexcept {
        constexpr std::size_t esize = OT == out_type::f32 ? 4 : 2;
        unsigned char* dst = static_cast<unsigned char*>(out) + r * out_stride * esize;
        if (nt) run_batches<Arch>(codes, c, e, make, store_batches<Arch, OT, true>{dst});
        else run_batches<Arch>(codes, c, e, make, store_batches<Arch, OT, false>{dst});
    }
};

/// log2(G) where a group is one, two, four or eight batches (G a power of
/// two): the run kernels then take each batch's params by its column (g = c
/// >> log2 G) in one span, rather than a span per group; else -1.
/// bench_quantize dequantize/nvfp4 (groups of one batch on AVX-512) 3 710-
/// 3 780 -> 6 840-7 250 Mw/s; nf4-b64 (four) 5 250-5 830 -> 6 950-7 050;
/// bench_gemv gemv_planar/int4-g128-asym (eight) m:1 2.31 -> 2.04 ms, the
/// dequantize of int4/int3-g128 within noise.
template <class Arch>
inline int small_group_shift(std::size_t G) noexcept {
    constexpr std::size_t n = xsimd::batch<float, Arch>::size;
    return G == n || G == 2 * n || G == 4 * n || G == 8 * n ? std::countr_zero(G) : -1;
}

/// The affine kernel on one run of a row (for_each_run's `spans`), its
/// values to `out` (store_rows or the GEMV's).
template <class Arch, bool Z, bool B, class Out>
struct affine_runs {
    const affine_job& j;
    Out out;

    template <class Codes>
    LOWBIT_FORCE_INLINE void operator()(std::size_t r, const Codes& codes, std::size_t c0, std::size_t e0) const noexcept {
        using f32 = xsimd::batch<float, Arch>;
        const std::size_t G = j.group, last = j.cols / G - 1;
        const std::size_t p0 = r * j.param_stride;
        const float* s = j.scale + p0;
        const float* z = Z ? j.zero + p0 : nullptr;
        const float* b = B ? j.bias + p0 : nullptr;
        if (const int sh = small_group_shift<Arch>(G); sh >= 0) {
            out.span(r, codes, c0, e0, [s, z, b, sh](const auto& q, std::size_t c) noexcept {
                const std::size_t g = c >> sh;
                return affine_value<Arch, Z, B>(q, f32(s[g]), f32(Z ? z[g] : 0.0f), f32(B ? b[g] : 0.0f));
            });
        } else if (G % f32::size == 0) {
            for (std::size_t c = c0; c < e0;) {
                const std::size_t g = c / G;
                const std::size_t e = (g + 1) * G < e0 ? (g + 1) * G : e0;
                const f32 sb(s[g]), zb(Z ? z[g] : 0.0f), bb(B ? b[g] : 0.0f);
                out.span(r, codes, c, e, [sb, zb, bb](const auto& q, std::size_t) noexcept {
                    return affine_value<Arch, Z, B>(q, sb, zb, bb);
                });
                c = e;
            }
        } else {
            out.span(r, codes, c0, e0, [s, z, b, G, last](const auto& q, std::size_t c) noexcept {
                const f32 sb = lane_params<Arch>(s, c, G, last);
                const f32 zb = Z ? lane_params<Arch>(z, c, G, last) : f32(0.0f);
                const f32 bb = B ? lane_params<Arch>(b, c, G, last) : f32(0.0f);
                return affine_value<Arch, Z, B>(q, sb, zb, bb);
            });
        }
    }
};

/// A job's rows into its output (with_output's `run`), kept out of
/// with_output: inlined there, g++ held the loop's shuffle controls, params
/// and output pointer on the stack, bench_quantize dequantize/int4-g128-asym
/// about 10% slower (AVX-512; the same for table_job_rows).
template <class Arch, out_type OT, bool Z, bool B>
LOWBIT_NOINLINE void affine_job_rows(const affine_job& b, bool nt) noexcept {
    for_each_run<Arch>(b, affine_runs<Arch, Z, B, store_rows<Arch, OT>>{b, {b.out, b.out_stride, nt}});
}

template <class Arch, out_type OT, bool Z, bool B>
inline void affine_rows(const affine_job& j) noexcept {
    with_output<Arch>(j, OT == out_type::f32 ? 4 : 2, true, &affine_job_rows<Arch, OT, Z, B>);
}

/// table[q] for one batch of codes (bytes at q, or 32-bit lanes). Cap 16, 32
/// or 64: the table has at most that many entries, zero padded to Cap at `pad`;
/// Cap 256 reads `table`. The permutes over the xsimd body's lookups through a
/// buffer: nf4_g64_f32 9 950 vs 4 090 Mw/s (AVX-512), 7 610 vs 4 500 (AVX2);
/// into L1 13 520 vs 4 230 and 11 250 vs 4 700.
template <class Arch, int Cap, class Q>
LOWBIT_FORCE_INLINE xsimd::batch<float, Arch> table_value(const Q& q, const float* table, const float* pad) noexcept {
    using f32 = xsimd::batch<float, Arch>;
    if constexpr (is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
        const __m512i idx = code_lanes<Arch>(q);
        if constexpr (Cap == 16) {
            return f32(_mm512_permutexvar_ps(idx, _mm512_load_ps(pad)));
        } else if constexpr (Cap == 32) {
            // 32 and 64 entries by two-table permutes rather than a gather:
            // 5- and 6-bit codes into L1 4650 -> 5300-5400 Mw/s (the xsimd
            // body, scalar lookups: 1630); the same when writing to DRAM.
            return f32(_mm512_permutex2var_ps(_mm512_load_ps(pad), idx, _mm512_load_ps(pad + 16)));
        } else if constexpr (Cap == 64) {
            const __m512 lo = _mm512_permutex2var_ps(_mm512_load_ps(pad), idx, _mm512_load_ps(pad + 16));
            const __m512 hi = _mm512_permutex2var_ps(_mm512_load_ps(pad + 32), idx, _mm512_load_ps(pad + 48));
            return f32(_mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, _mm512_set1_epi32(32)), lo, hi));
        } else {
            return f32(_mm512_i32gather_ps(idx, table, 4));
        }
#endif
    } else if constexpr (is_avx2_v<Arch>) {
#if XSIMD_WITH_AVX2
        const __m256i idx = code_lanes<Arch>(q);
        if constexpr (Cap == 16) {
            const __m256 lo = _mm256_permutevar8x32_ps(_mm256_load_ps(pad), idx);
            const __m256 hi = _mm256_permutevar8x32_ps(_mm256_load_ps(pad + 8), idx);
            return f32(_mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28))));
        } else {
            return f32(_mm256_i32gather_ps(table, idx, 4));
        }
#endif
    } else {
        static_assert(std::is_pointer_v<Q>, "codes as bytes here (reads_packed_v)");
        (void)pad;
        alignas(64) float buf[f32::size];
        for (std::size_t l = 0; l < f32::size; ++l) buf[l] = table[q[l]];
        return f32::load_aligned(buf);
    }
}

/// The minifloat `m` of the codes at q, computed (minifloat_value), and the
/// codes above m.max_magnitude (Inf and NaN) looked up in `table`. Against
/// the gather from the table, 11008 x 4096 to fp32 (EPYC): AVX-512
/// fp8-e4m3-ch 2 700 -> 4 170 Mw/s, mxfp8-e4m3 2 650 -> 6 400; AVX2 2 200 ->
/// 3 580 and 2 150 -> 5 030, mxfp6-e3m2 2 620 -> 4 400.
template <class Arch, class Q>
LOWBIT_FORCE_INLINE xsimd::batch<float, Arch> minifloat_lookup(const Q& q, const minifloat_rule& m, const float* table) noexcept {
    using f32 = xsimd::batch<float, Arch>;
    using u32 = xsimd::batch<std::uint32_t, Arch>;
    using i32 = xsimd::batch<std::int32_t, Arch>;
    const i32 code = code_lanes<Arch>(q);
    const u32 c = ::lowbit::detail::simd::bitcast<std::uint32_t>(code);
    if (xsimd::any((code & i32((1 << m.sign_bit) - 1)) > i32(static_cast<std::int32_t>(m.max_magnitude)))) {
        alignas(64) std::uint32_t idx[f32::size];
        alignas(64) float out[f32::size];
        c.store_aligned(idx);
        for (std::size_t l = 0; l < f32::size; ++l) out[l] = table[idx[l]];
        return f32::load_aligned(out);
    }
    return minifloat_value<f32>(m, c);
}

/// table[q] for the bytes at q; Small: the table has at most 16 entries, zero
/// padded to 16 at `small` (bnb.hpp's decoders call this).
template <class Arch, bool Small>
inline xsimd::batch<float, Arch> table_lookup(const std::uint8_t* q, const float* table, const float* small) noexcept {
    return table_value<Arch, Small ? 16 : 256>(q, table, small);
}

/// The table kernel on one run of a row (for_each_run's `spans`), its
/// values to `out` (as affine_runs).
template <class Arch, int Cap, class Out>
struct table_runs {
    const table_job& j;
    const float* pad;
    Out out;

    template <class Codes>
    LOWBIT_FORCE_INLINE void operator()(std::size_t r, const Codes& codes, std::size_t c0, std::size_t e0) const noexcept {
        using f32 = xsimd::batch<float, Arch>;
        const std::size_t G = j.group, last = j.cols / G - 1;
        const float* s = j.scale + r * j.param_stride;
        // Cap 0: a minifloat, computed (the job's minifloat rule).
        const minifloat_rule m = Cap == 0 ? *j.minifloat : minifloat_rule{};
        const auto value = [tab = j.table, pd = pad, m](const auto& q) LOWBIT_LAMBDA_INLINE {
            if constexpr (Cap == 0)
                return minifloat_lookup<Arch>(q, m, tab);
            else
                return table_value<Arch, Cap>(q, tab, pd);
        };
        if (const int sh = small_group_shift<Arch>(G); sh >= 0) {
            out.span(r, codes, c0, e0, [value, s, sh](const auto& q, std::size_t c) noexcept {
                return value(q) * f32(s[c >> sh]);
            });
        } else if (G % f32::size == 0) {
            for (std::size_t c = c0; c < e0;) {
                const std::size_t g = c / G;
                const std::size_t e = (g + 1) * G < e0 ? (g + 1) * G : e0;
                const f32 sb(s[g]);
                out.span(r, codes, c, e, [value, sb](const auto& q, std::size_t) noexcept {
                    return value(q) * sb;
                });
                c = e;
            }
        } else {
            out.span(r, codes, c0, e0, [value, s, G, last](const auto& q, std::size_t c) noexcept {
                return value(q) * lane_params<Arch>(s, c, G, last);
            });
        }
    }
};

/// A job's table zero padded to Cap entries (table_value's `pad`), for Cap
/// 16, 32 and 64.
template <int Cap>
struct table_pad {
    alignas(64) float v[Cap < 256 && Cap > 0 ? Cap : 16] = {};
    explicit table_pad(const table_job& j) noexcept {
        if constexpr (Cap < 256 && Cap > 0)
            for (std::size_t i = 0; i < (std::size_t{1} << j.bits); ++i) v[i] = j.table[i];
    }
};

template <class Arch, out_type OT, int Cap>
LOWBIT_NOINLINE void table_job_rows(const table_job& b, const float* pad, bool nt) noexcept {
    for_each_run<Arch>(b, table_runs<Arch, Cap, store_rows<Arch, OT>>{b, pad, {b.out, b.out_stride, nt}});
}

template <class Arch, out_type OT, int Cap>
inline void table_rows(const table_job& j) noexcept {
    const table_pad<Cap> pad(j);
    with_output<Arch>(j, OT == out_type::f32 ? 4 : 2, Cap <= 16, [&pad](const table_job& b, bool nt) {
        table_job_rows<Arch, OT, Cap>(b, pad.v, nt);
    });
}

/// f(bool_constant<Z>, bool_constant<B>): whether the job has a zero-point
/// and a bias, as constants.
template <class F>
inline void with_affine_params(const affine_job& j, F&& f) noexcept {
    if (j.zero && j.bias) f(std::true_type{}, std::true_type{});
    else if (j.zero) f(std::true_type{}, std::false_type{});
    else if (j.bias) f(std::false_type{}, std::true_type{});
    else f(std::false_type{}, std::false_type{});
}

template <class Arch, out_type OT>
inline void affine_by_params(const affine_job& j) noexcept {
    with_affine_params(j, [&](auto z, auto b) { affine_rows<Arch, OT, decltype(z)::value, decltype(b)::value>(j); });
}

template <class Arch>
inline void affine_simd(const affine_job& j) noexcept {
    switch (j.type) {
    case out_type::f32: affine_by_params<Arch, out_type::f32>(j); break;
    case out_type::f16: affine_by_params<Arch, out_type::f16>(j); break;
    case out_type::bf16: affine_by_params<Arch, out_type::bf16>(j); break;
    }
}

/// f(integral_constant<int, Cap>): how table_runs looks a job's values up on
/// Arch (table_value's Cap; 0: a minifloat, computed).
template <class Arch, class F>
inline void with_table_cap(const table_job& j, F&& f) noexcept {
    // Minifloats of more than 6 bits (more than 4 on AVX2) are computed
    // rather than gathered from memory; AVX-512's permutes look up smaller
    // tables faster than either. Where codes widen through memory (SSE4.1,
    // NEON) a scalar lookup per code is faster than widening and computing
    // (SSE4.1, EPYC: fp8-e4m3-ch 4 710 Mw/s looked up, 2 710 computed).
    constexpr int computed_above = is_avx512_v<Arch> ? 6 : is_avx2_v<Arch> ? 4 : 8;
    using cap0 = std::integral_constant<int, 0>;
    using cap16 = std::integral_constant<int, 16>;
    using cap32 = std::integral_constant<int, 32>;
    using cap64 = std::integral_constant<int, 64>;
    using cap256 = std::integral_constant<int, 256>;
    if (j.minifloat && j.bits > computed_above) f(cap0{});
    else if constexpr (!is_avx512_v<Arch> && !is_avx2_v<Arch>) f(cap256{});  // no in-register lookups
    else if (j.bits <= 4) f(cap16{});
    else if (j.bits == 5) f(cap32{});
    else if (j.bits == 6) f(cap64{});
    else f(cap256{});
}

template <class Arch, out_type OT>
inline void table_by_size(const table_job& j) noexcept {
    with_table_cap<Arch>(j, [&](auto cap) { table_rows<Arch, OT, decltype(cap)::value>(j); });
}

template <class Arch>
inline void table_simd(const table_job& j) noexcept {
    switch (j.type) {
    case out_type::f32: table_by_size<Arch, out_type::f32>(j); break;
    case out_type::f16: table_by_size<Arch, out_type::f16>(j); break;
    case out_type::bf16: table_by_size<Arch, out_type::bf16>(j); break;
    }
}

}  // namespace detail::dq
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

template <class Arch>
void dequantize_affine_fn::operator()(Arch, const affine_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, dequantize_affine_ref(j),
                             if (j.rows != 0 && j.cols != 0) detail::dq::affine_simd<Arch>(j))
}

template <class Arch>
void dequantize_table_fn::operator()(Arch, const table_job& j) const noexcept {
    LOWBIT_SIMD_OR_REFERENCE(Arch, dequantize_table_ref(j),
                             if (j.rows != 0 && j.cols != 0) detail::dq::table_simd<Arch>(j))
}

namespace detail::dq {

template <class Job>
inline void validate(const Job& j, const char* what) {
    const std::string fn(what);
    ::lowbit::detail::check_planar_shape(fn, j.bits, j.rows, j.cols, j.group, j.code_stride, j.param_stride);
    if (j.type != out_type::f32 && j.type != out_type::f16 && j.type != out_type::bf16)
        LOWBIT_THROW(errc::invalid_argument, fn + ": unknown output type");
    if (j.rows == 0 || j.cols == 0) return;
    if (!j.codes || !j.scale || !j.out)
        LOWBIT_THROW(errc::invalid_argument, fn + ": codes, scale and out must not be null");
    if (j.rows > 1 && j.out_stride < j.cols)
        LOWBIT_THROW(errc::invalid_argument, fn + ": out_stride " + std::to_string(j.out_stride) +
                                                 " is less than the " + std::to_string(j.cols) + " columns");
}

}  // namespace detail::dq

/// Validates, then dequantizes on the active instruction set.
inline void dequantize_affine(const affine_job& j) {
    detail::dq::validate(j, "dequantize_affine");
    if (j.rows == 0 || j.cols == 0) return;
    dispatch(dequantize_affine_fn{}, j);
}

/// Validates, then dequantizes on the active instruction set.
inline void dequantize_table(const table_job& j) {
    detail::dq::validate(j, "dequantize_table");
    if (j.rows == 0 || j.cols == 0) return;
    if (!j.table) LOWBIT_THROW(errc::invalid_argument, "dequantize_table: table must not be null");
    if (j.minifloat && !::lowbit::detail::minifloat_matches(*j.minifloat, j.table, j.bits)) {
        table_job looked_up = j;  // a rule that is not the table's: look values up
        looked_up.minifloat = nullptr;
        dispatch(dequantize_table_fn{}, looked_up);
        return;
    }
    dispatch(dequantize_table_fn{}, j);
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

#define LOWBIT_KERNELS_DEQUANTIZE(EXT, ARCH)                                                       \
    EXT template void lowbit::kernels::dequantize_affine_fn::operator()<ARCH>(                     \
        ARCH, const lowbit::kernels::affine_job&) const noexcept;                                  \
    EXT template void lowbit::kernels::dequantize_table_fn::operator()<ARCH>(                      \
        ARCH, const lowbit::kernels::table_job&) const noexcept;
LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_DEQUANTIZE)
