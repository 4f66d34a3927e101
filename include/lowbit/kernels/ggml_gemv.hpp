#pragma once
// Fused dequantize-GEMV and small-batch GEMM on rows of ggml blocks:
//
//   y[m][n] = sum_k x[m][k] * W[n][k]  (+ bias[n])   for n in a range of W's rows
//
// with fp32 activations x (M rows) and W in any block type dequantize_ggml
// handles. Each block is decoded once per tile of up to four activation rows
// (formats' rule: kernels/ggml_dequantize.hpp's decoders), its values formed
// in registers exactly as dequantize forms them, and multiplied into one
// accumulator batch per activation row. The engine owns threads: it hands
// each thread a range of W's rows (gemv_ggml's `rows`); gemv_ggml_parallel
// does that with lowbit's parallel_for for tools and benchmarks.
//
// Every instruction set computes the same products of the same dequantized
// weights; only the order of the float additions differs from the scalar
// reference (which adds in k order). The tests hold each result within
// (k / lanes + lanes + 2) * 2^-24 * sum_k |x[m][k] * W[n][k]| of the exact
// sum of those products.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/view.hpp"
#include "../formats/ggml_view.hpp"
#include "../parallel.hpp"
#include "dispatch.hpp"
#include "ggml_dequantize.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

/// One GEMV call on rows of W already chosen (pointers at the range's start).
struct ggml_gemv_job {
    ggml::type type;
    const void* w;
    std::size_t w_stride;  ///< bytes between W's rows
    std::size_t n;         ///< W rows: outputs per activation row
    std::size_t k;         ///< values per W row and per activation row
    const float* x;
    std::size_t x_stride;  ///< floats between activation rows
    std::size_t m;         ///< activation rows
    float* y;
    std::size_t y_stride;  ///< floats between output rows
    const float* bias;     ///< n values, or null
};

struct gemv_ggml_fn {
    template <class Arch>
    void operator()(Arch, const ggml_gemv_job& j) const noexcept;
};

/// Scalar reference: each W row dequantized by ggml's row function a chunk of
/// blocks at a time, products added in k order in float.
inline void gemv_ggml_ref(const ggml_gemv_job& j) noexcept {
    const ggml::dequantize_row_fn f = detail::ggml_dequant::ref_row(j.type);
    const auto base = ggml::find_base_traits(static_cast<std::uint32_t>(j.type));
    if (!f || !base) return;
    const std::size_t bs = base->block_size, ts = base->type_size;
    alignas(16) unsigned char tmp[4096];
    float w[4096];
    const std::size_t per_chunk = std::min(sizeof tmp / ts, sizeof w / sizeof w[0] / bs);
    for (std::size_t r = 0; r < j.n; ++r) {
        const unsigned char* row = static_cast<const unsigned char*>(j.w) + r * j.w_stride;
        for (std::size_t mi = 0; mi < j.m; ++mi) j.y[mi * j.y_stride + r] = 0.0f;
        for (std::size_t b = 0; b < j.k / bs; b += per_chunk) {
            const std::size_t nb = std::min(per_chunk, j.k / bs - b);
            std::memcpy(tmp, row + b * ts, nb * ts);  // the row functions read blocks in place, aligned
            f(tmp, w, nb * bs);
            for (std::size_t mi = 0; mi < j.m; ++mi) {
                const float* x = j.x + mi * j.x_stride + b * bs;
                float acc = j.y[mi * j.y_stride + r];
                for (std::size_t i = 0; i < nb * bs; ++i) acc += ::lowbit::detail::unfused(w[i] * x[i]);
                j.y[mi * j.y_stride + r] = acc;
            }
        }
        if (j.bias)
            for (std::size_t mi = 0; mi < j.m; ++mi) j.y[mi * j.y_stride + r] += j.bias[r];
    }
}

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::ggml_gemv {

namespace gd = ::lowbit::kernels::detail::ggml_dequant;

/// Accumulator tiles: R rows of W by T activation rows, R * T accumulator
/// batches plus R weight batches in registers (32 vector registers on
/// AVX-512 and NEON, 16 on AVX2 and SSE).
template <class Arch>
#if defined(__aarch64__)
inline constexpr std::size_t tile_t = 4;
#else
inline constexpr std::size_t tile_t = sizeof(xsimd::batch<float, Arch>) == 64 ? 4 : 2;
#endif
template <class Arch>
inline constexpr std::size_t tile_r = 4;

/// R rows of W against T activation rows: out[r * T + t] = sum_k x[t][k] * W[r][k].
/// Each x batch is loaded once for the R rows; each W value formed once for the T rows.
template <class Arch, class Dec, std::size_t R, std::size_t T>
inline void tile(const unsigned char* src, std::size_t w_stride, std::size_t nb, const float* x, std::size_t x_stride,
                 float* out) noexcept {
    using f32 = xsimd::batch<float, Arch>;
    gd::decoded<Dec::B, Dec::G> d[R];
    f32 acc[R][T];
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t t = 0; t < T; ++t) acc[r][t] = f32(0.0f);
    const std::int8_t* q[R];
    const float* s[R];
    const float* o[R];
    for (std::size_t r = 0; r < R; ++r) {
        s[r] = d[r].s;
        o[r] = d[r].o;
    }
    for (std::size_t b = 0; b < nb; ++b) {
        for (std::size_t r = 0; r < R; ++r) q[r] = Dec::decode(src + r * w_stride + b * Dec::bytes, d[r]);
        const float* xb = x + b * Dec::B;
        gd::for_each_value<Arch, Dec::k, Dec::B, Dec::G, R>(q, s, o, [&](std::size_t i, const f32(&w)[R]) LOWBIT_LAMBDA_INLINE {
            for (std::size_t t = 0; t < T; ++t) {
                const f32 xv = f32::load_unaligned(xb + t * x_stride + i);
                for (std::size_t r = 0; r < R; ++r) acc[r][t] = xsimd::fma(w[r], xv, acc[r][t]);
            }
        });
    }
    for (std::size_t r = 0; r < R; ++r)
        for (std::size_t t = 0; t < T; ++t) out[r * T + t] = ::lowbit::detail::simd::reduce_add(acc[r][t]);
}

/// W rows [r, r + R) against every activation row: tiles of T rows, then the
/// leftover rows in a tile of two and one of one.
template <class Arch, class Dec, std::size_t R, std::size_t T>
inline void row_block(const ggml_gemv_job& j, std::size_t r) noexcept {
    const unsigned char* src = static_cast<const unsigned char*>(j.w) + r * j.w_stride;
    const std::size_t nb = j.k / Dec::B;
    float out[R * T];
    const auto put = [&](std::size_t m0, std::size_t tt) {
        for (std::size_t i = 0; i < R; ++i) {
            const float add = j.bias ? j.bias[r + i] : 0.0f;
            for (std::size_t t = 0; t < tt; ++t) j.y[(m0 + t) * j.y_stride + r + i] = out[i * tt + t] + add;
        }
    };
    std::size_t m0 = 0;
    for (; m0 + T <= j.m; m0 += T) {
        tile<Arch, Dec, R, T>(src, j.w_stride, nb, j.x + m0 * j.x_stride, j.x_stride, out);
        put(m0, T);
    }
    if constexpr (T > 2) {
        if (m0 + 2 <= j.m) {
            tile<Arch, Dec, R, 2>(src, j.w_stride, nb, j.x + m0 * j.x_stride, j.x_stride, out);
            put(m0, 2);
            m0 += 2;
        }
    }
    if (m0 < j.m) {
        tile<Arch, Dec, R, 1>(src, j.w_stride, nb, j.x + m0 * j.x_stride, j.x_stride, out);
        put(m0, 1);
    }
}

template <class Arch, class Dec>
inline void rows(const ggml_gemv_job& j) noexcept {
    constexpr std::size_t R = tile_r<Arch>, T = tile_t<Arch>;
    std::size_t r = 0;
    // One activation row: a W row at a time. bench_gemv m:1 on AVX-512
    // (11008 x 4096): q4_0 2.57 vs 3.49 ms, q4_K 3.05 vs 4.54 with R rows.
    if (j.m > 1)
        for (; r + R <= j.n; r += R) row_block<Arch, Dec, R, T>(j, r);
    for (; r < j.n; ++r) row_block<Arch, Dec, 1, T>(j, r);
}

template <class Arch>
inline void run(const ggml_gemv_job& j) noexcept {
    using ggml::type;
    switch (j.type) {
    case type::q4_0: rows<Arch, gd::q4_0_dec<Arch>>(j); break;
    case type::q4_1: rows<Arch, gd::q4_1_dec<Arch>>(j); break;
    case type::q5_0: rows<Arch, gd::q5_0_dec<Arch>>(j); break;
    case type::q5_1: rows<Arch, gd::q5_1_dec<Arch>>(j); break;
    case type::q8_0: rows<Arch, gd::q8_dec<Arch, 34>>(j); break;
    case type::q8_1: rows<Arch, gd::q8_dec<Arch, 36>>(j); break;
    case type::q2_k: rows<Arch, gd::q2_k_dec<Arch>>(j); break;
    case type::q3_k: rows<Arch, gd::q3_k_dec<Arch>>(j); break;
    case type::q4_k: rows<Arch, gd::qk_dec<Arch, false>>(j); break;
    case type::q5_k: rows<Arch, gd::qk_dec<Arch, true>>(j); break;
    case type::q6_k: rows<Arch, gd::q6_k_dec<Arch>>(j); break;
    case type::q8_k: rows<Arch, gd::q8_k_dec<Arch>>(j); break;
    case type::iq4_nl: rows<Arch, gd::iq4_nl_dec<Arch>>(j); break;
    case type::iq4_xs: rows<Arch, gd::iq4_xs_dec<Arch>>(j); break;
    case type::tq1_0: rows<Arch, gd::tq1_0_dec<Arch>>(j); break;
    case type::tq2_0: rows<Arch, gd::tq2_0_dec<Arch>>(j); break;
    case type::mxfp4: rows<Arch, gd::mxfp4_dec<Arch>>(j); break;
    default: LOWBIT_ASSERT(false && "gemv_ggml: type has no kernel"); break;
    }
}

}  // namespace detail::ggml_gemv
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

template <class Arch>
void gemv_ggml_fn::operator()(Arch, const ggml_gemv_job& j) const noexcept {
    if (j.n == 0 || j.m == 0) return;
    LOWBIT_SIMD_OR_REFERENCE(Arch, gemv_ggml_ref(j), detail::ggml_gemv::run<Arch>(j))
}

/// Whether gemv_ggml handles weights of type t (the block types dequantize_ggml handles).
inline bool gemv_ggml_supports(ggml::type t) noexcept { return dequantize_ggml_supports(t); }

/// y[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]) for n in `rows` (the other
/// columns of y are left as they are), on the active instruction set.
///   w: N x K ggml blocks; x: M x K floats (any row stride, any alignment);
///   y: M x N floats; bias: empty or N values.
/// Checked here, once: shapes, the type, strides; errc::invalid_argument or
/// errc::unsupported naming what is wrong.
inline void gemv_ggml(const ggml::rows_view& w, matrix_view<const float> x, matrix_view<float> y,
                      row_range rows = all_rows, std::span<const float> bias = {}) {
    const auto who = [&] { return "gemv_ggml(" + std::string(w.type_name()) + ")"; };
    if (!gemv_ggml_supports(w.type_id()))
        LOWBIT_THROW(errc::unsupported, who() + ": no GEMV for weights of ggml type " + std::string(w.type_name()));
    ::lowbit::detail::check_view(x, "gemv_ggml: x");
    ::lowbit::detail::check_view(y, "gemv_ggml: y");
    if (x.cols() != w.cols())
        LOWBIT_THROW(errc::invalid_argument, who() + ": x has " + std::to_string(x.cols()) +
                                                 " columns, the weights' rows " + std::to_string(w.cols()) + " values");
    if (y.rows() != x.rows() || y.cols() != w.rows())
        LOWBIT_THROW(errc::invalid_argument, who() + ": y is " + std::to_string(y.rows()) + " x " +
                                                 std::to_string(y.cols()) + ", the product is " +
                                                 std::to_string(x.rows()) + " x " + std::to_string(w.rows()));
    if (!bias.empty() && bias.size() != w.rows())
        LOWBIT_THROW(errc::invalid_argument, who() + ": bias has " + std::to_string(bias.size()) + " values for " +
                                                 std::to_string(w.rows()) + " weight rows");
    const auto [r0, r1] = ::lowbit::detail::clamp_rows(rows, w.rows(), "gemv_ggml");
    if (r0 == r1 || x.rows() == 0 || w.cols() == 0) {
        if (w.cols() == 0)  // an empty sum
            for (std::size_t mi = 0; mi < y.rows(); ++mi)
                for (std::size_t r = r0; r < r1; ++r) y(mi, r) = bias.empty() ? 0.0f : bias[r];
        return;
    }
    const ggml_gemv_job j{w.type_id(), w.row(r0), w.stride(), r1 - r0, w.cols(), x.data(), x.stride(), x.rows(),
                          y.data() + r0, y.stride(), bias.empty() ? nullptr : bias.data() + r0};
    dispatch(gemv_ggml_fn{}, j);
}

/// gemv_ggml over all of w's rows, split into `threads` ranges (0: the
/// hardware's count) run by lowbit's parallel_for, in whole multiples of 16
/// rows (64 bytes of a y row).
inline void gemv_ggml_parallel(const ggml::rows_view& w, matrix_view<const float> x, matrix_view<float> y,
                               unsigned threads = 0, std::span<const float> bias = {}) {
    gemv_ggml(w, x, y, row_range{0, 0}, bias);  // the checks, once, on the calling thread
    parallel_for(w.rows(), threads, 16, [&](std::size_t b, std::size_t e) { gemv_ggml(w, x, y, {b, e}, bias); });
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

#define LOWBIT_KERNELS_GGML_GEMV(EXT, ARCH) \
    EXT template void lowbit::kernels::gemv_ggml_fn::operator()<ARCH>(ARCH, const lowbit::kernels::ggml_gemv_job&) const noexcept;
LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_GGML_GEMV)
