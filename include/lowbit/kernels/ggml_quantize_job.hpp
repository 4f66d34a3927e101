#pragma once
// The jobs of the ggml quantize kernels (kernels/ggml_quantize.hpp): rows to
// blocks, f16/bf16 widening and the range scan, with the functors that run
// them on an instruction set, and which types have a SIMD kernel.
#include <cstddef>
#include <cstdint>

#include "../core/finite.hpp"
#include "../core/numeric.hpp"
#include "../formats/ggml_types.hpp"
#include "dispatch.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

/// Rows of f32 (or f16 / bf16) to ggml blocks of one type.
struct ggml_quantize_job {
    ggml::type type;
    const float* x;  ///< rows * n_per_row floats, row after row (from == f32)
    void* dst;       ///< rows * ggml::row_bytes(type, n_per_row) bytes, no alignment needed
    std::size_t rows, n_per_row;
    const float* imatrix;  ///< n_per_row importance values used for every row, or null
    /// f16 or bf16: the rows are `src` in that type (no alignment needed),
    /// widened to f32 `scratch_rows` rows at a time in `scratch` (64-byte
    /// aligned) and quantized from there.
    ggml::type from = ggml::type::f32;
    const void* src = nullptr;
    float* scratch = nullptr;
    std::size_t scratch_rows = 0;
};

struct quantize_ggml_fn {
    template <class Arch>
    void operator()(Arch, const ggml_quantize_job& j) const noexcept;
};

/// n f16 or bf16 values (little-endian, no alignment needed) to f32.
struct widen_job {
    ggml::type from;
    const void* src;
    float* out;
    std::size_t n;
};

struct widen_f32_fn {
    template <class Arch>
    void operator()(Arch, const widen_job& j) const noexcept;
};

/// Finds the first of n f32/f16/bf16 values whose magnitude bits exceed
/// `limit` (NaN and Inf exceed every finite bound): first_beyond_bits on the
/// active instruction set. The result goes to *first (n when there is none).
struct range_scan_job {
    float_storage from;
    const void* x;
    std::size_t n;
    std::uint32_t limit;
    std::size_t* first;
};

struct range_scan_fn {
    template <class Arch>
    void operator()(Arch, const range_scan_job& j) const noexcept;
};

/// Whether quantize_ggml_rows has a SIMD kernel for type t (with an imatrix
/// or without); the rest go to the scalar ggml::quantize_rows.
constexpr bool quantize_ggml_simd_supports(ggml::type t, bool with_imatrix) noexcept {
    using ggml::type;
    switch (t) {
    case type::q2_k:
    case type::q4_k:
    case type::q5_k:
    case type::q6_k:
    case type::iq4_nl:
    case type::iq4_xs: return true;
    case type::q3_k:
    case type::q4_0:
    case type::q4_1:
    case type::q5_0:
    case type::q5_1: return !with_imatrix;
    // These ignore the imatrix, in ggml as here.
    case type::q8_0:
    case type::mxfp4:
    case type::tq1_0:
    case type::tq2_0: return true;
    default: return false;
    }
}

namespace detail::ggml_quant {

/// n f16 or bf16 values at src (little-endian) as f32, exactly: the scalar
/// ISA's path (the SIMD ones are widen<Arch> below).
inline void widen_scalar(ggml::type from, const unsigned char* src, float* out, std::size_t n) noexcept {
    for (std::size_t i = 0; i < n; ++i) {
        const auto h = static_cast<std::uint16_t>(src[2 * i] | (src[2 * i + 1] << 8));
        out[i] = from == ggml::type::bf16 ? bf16_to_float(h) : fp16_to_float(h);
    }
}

}  // namespace detail::ggml_quant

}  // namespace kernels
LOWBIT_NAMESPACE_END
