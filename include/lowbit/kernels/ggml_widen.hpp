#pragma once
// f16 / bf16 rows widened to f32 for the ggml quantize kernels, exactly.
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "../formats/ggml_types.hpp"
#include "ggml_quantize_tiles.hpp"  // xsimd, fp_contract, the lanes and transposes

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::ggml_quant {

// ---- f16 / bf16 sources --------------------------------------------------------

/// n f16 or bf16 values at src as f32 at out, exactly: bf16
/// is the top half of the f32; f16 through F16C where the TU has it, else its
/// bits moved into place and scaled by 2^112 (exact for normals and
/// subnormals alike), with Inf and NaN given the f32 exponent. F16C returns a
/// signalling NaN quietened; no quantizer's output depends on a NaN's bits.
template <class Arch>
inline void widen(ggml::type from, const unsigned char* src, float* out, std::size_t n) noexcept {
    using B = fvec<Arch>;
    using U = xsimd::batch<std::uint32_t, Arch>;
    constexpr std::size_t L = B::size;
    std::size_t i = 0;
    if (from == ggml::type::bf16) {
        for (; i + L <= n; i += L)
            ::lowbit::detail::simd::bitcast<float>(dq::widen<Arch, 2>(src + 2 * i) << 16).store_unaligned(out + i);
    } else {
        // F16C over the xsimd body's integer decode: <type>_from_f16_all_threads
        // gains beyond <type>_simd's (bench_ggml_quantize, AVX2, EPYC 2.6 GHz,
        // built as is vs. with LOWBIT_XSIMD_ONLY): q4_0 1.47x vs 1.24x (4 130
        // vs 2 820 Mw/s), q8_0 1.60x vs 1.46x, mxfp4 1.23x vs 1.13x.
#if defined(__F16C__)
        constexpr bool f16c = true;
#else
        constexpr bool f16c = false;
#endif
        for (; i + L <= n; i += L) {
            if constexpr (dq::is_avx512_v<Arch>) {
#if XSIMD_WITH_AVX512BW
                _mm512_storeu_ps(out + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 2 * i))));
#endif
            } else if constexpr (dq::is_avx2_v<Arch> && f16c) {
#if XSIMD_WITH_AVX2 && defined(__F16C__)
                _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 2 * i))));
#endif
            } else {
                namespace ds = ::lowbit::detail::simd;
                const U h = dq::widen<Arch, 2>(src + 2 * i);
                const U m = h & U(0x7FFFu);
                const U scaled = ds::bitcast<std::uint32_t>(ds::bitcast<float>(m << 13) * B(0x1p112f));
                const U bits = xsimd::select(m >= U(0x7C00u), (m << 13) | U(0x7F800000u), scaled);
                ds::bitcast<float>(bits | ((h & U(0x8000u)) << 16)).store_unaligned(out + i);
            }
        }
    }
    // The tail with this arch's own decoder: widen_scalar's fp16_to_float is
    // a shared inline function, whose copy from this TU's -m flags the linker
    // could keep for every caller.
    for (; i < n; ++i) {
        const auto h = static_cast<std::uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
        out[i] = from == ggml::type::bf16 ? std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16)
                                          : dq::half<Arch>(h);
    }
}

}  // namespace detail::ggml_quant
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

}  // namespace kernels
LOWBIT_NAMESPACE_END
