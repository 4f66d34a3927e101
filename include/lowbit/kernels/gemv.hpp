#pragma once
// Fused dequantize-GEMV and small-batch GEMM on lowbit's planar layout
// (pack/planar.hpp: affine codes, codebooks, minifloats at any group size):
//
//   y[m][n] = sum_k x[m][k] * W[n][k]  (+ bias[n])   for n in a range of W's rows
//
// with fp32 activations x (M rows) and y in fp32, fp16 or bf16 (each output
// rounded once, from the fp32 sum). The weights are decoded by dequantize's
// own run kernels (affine_runs, table_runs: the same values, formed by the
// same float operations), which hand each batch to accumulators here instead
// of storing it; a W row is decoded once per tile of up to four activation
// rows. The engine owns threads: it hands each a range of W's rows.
//
// Every instruction set computes the same products of the same dequantized
// weights; only the order of the float additions differs from the scalar
// reference (which adds in k order). The tests hold each result within
// (k / lanes + lanes + 2) * 2^-24 * sum_k |x[m][k] * W[n][k]| of the exact
// sum of those products.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>

#include "../core/error.hpp"
#include "../core/view.hpp"
#include "../pack/planar.hpp"
#include "dequantize.hpp"
#include "dispatch.hpp"
#include "gemv_common.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

/// One GEMV call on rows of W already chosen (w's first row is the range's).
struct planar_gemv_job {
    planar_view w;
    const float* x;
    std::size_t x_stride;  ///< floats between activation rows
    std::size_t m;         ///< activation rows
    void* y;               ///< out_type elements (fp16/bf16 as uint16_t bits), column 0 = w's row 0
    std::size_t y_stride;  ///< elements between output rows
    const float* bias;     ///< w.rows() values, or null
    out_type y_type = out_type::f32;
};

struct gemv_planar_fn {
    template <class Arch>
    void operator()(Arch, const planar_gemv_job& j) const noexcept;
};

namespace detail::planar_gemv {

template <class Job>
inline void ref_rows(const Job& wj, const planar_gemv_job& j) noexcept {
    for (std::size_t r = 0; r < wj.rows; ++r)
        for (std::size_t mi = 0; mi < j.m; ++mi) {
            const float* x = j.x + mi * j.x_stride;
            float acc = 0.0f;
            for (std::size_t c = 0; c < wj.cols; ++c) acc += x[c] * dq::ref_value(wj, r, c);
            gemv::store_y(j.y, j.y_type, mi * j.y_stride + r, j.bias ? acc + j.bias[r] : acc);
        }
}

}  // namespace detail::planar_gemv

/// Scalar reference: the products of x and the dequantized weights (the
/// dequantize references' values), added in k order in float.
inline void gemv_planar_ref(const planar_gemv_job& j) noexcept {
    if (j.w.family() == kernel_family::affine) detail::planar_gemv::ref_rows(affine_job_of(j.w), j);
    else detail::planar_gemv::ref_rows(table_job_of(j.w), j);
}

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::planar_gemv {

/// run_batches' `use`: each batch of W values times T activation rows' values
/// at its columns, into U accumulators per activation row (at least four
/// independent sums in all: one chain of dependent FMAs would wait out each
/// one's latency; int4-g128-asym, M = 1, 11008 x 4096, AVX-512: 4.4 ms with
/// one). A row's partial last batch meets x through a zero-padded copy (the
/// W lanes past the row hold what padded codes decode to; zeros keep them
/// out of the sums).
template <class Arch, std::size_t T>
struct fma_batches {
    using f32 = xsimd::batch<float, Arch>;
    static constexpr std::size_t n = f32::size;
    static constexpr std::size_t unroll = T >= 4 ? 1 : 4 / T;
    const float* x;
    std::size_t x_stride;
    f32* acc;  ///< T * unroll: activation row i's sums at i * unroll

    template <std::size_t u = 0>
    LOWBIT_FORCE_INLINE void full(const f32& v, std::size_t t) const noexcept {
        for (std::size_t i = 0; i < T; ++i)
            acc[i * unroll + u] = xsimd::fma(v, f32::load_unaligned(x + i * x_stride + t), acc[i * unroll + u]);
    }
    LOWBIT_FORCE_INLINE void part(const f32& v, std::size_t t, std::size_t cnt) const noexcept {
        if (cnt == n) return full(v, t);
        for (std::size_t i = 0; i < T; ++i) {
            alignas(64) float buf[n] = {};
            std::memcpy(buf, x + i * x_stride + t, cnt * sizeof(float));
            acc[i * unroll] = xsimd::fma(v, f32::load_aligned(buf), acc[i * unroll]);
        }
    }
};

/// The run kernels' `out` (dequantize.hpp's store_rows' counterpart): a
/// run's values into the accumulators.
template <class Arch, std::size_t T>
struct dot_rows {
    fma_batches<Arch, T> use;

    template <class Codes, class Make>
    LOWBIT_FORCE_INLINE void span(std::size_t, const Codes& codes, std::size_t c, std::size_t e,
                                  const Make& make) const noexcept {
        dq::run_batches<Arch>(codes, c, e, make, use);
    }
};

/// Every W row of the job against every activation row: per row, tiles of
/// four activation rows, then one of two and one of one. runs<T>(one_row_job,
/// out) runs the decoder of one W row into a dot_rows<Arch, T>.
template <class Arch, class Job, class Runs>
inline void rows(const Job& wj, const planar_gemv_job& j, const Runs& runs) noexcept {
    using f32 = xsimd::batch<float, Arch>;
    constexpr std::size_t T = 4;
    for (std::size_t r = 0; r < wj.rows; ++r) {
        Job one = dq::rows_from(wj, r);
        one.rows = 1;
        const float add = j.bias ? j.bias[r] : 0.0f;
        const auto tile = [&](std::size_t m0, auto tt) LOWBIT_LAMBDA_INLINE {
            constexpr std::size_t TT = decltype(tt)::value, U = fma_batches<Arch, TT>::unroll;
            f32 acc[TT * U];
            for (std::size_t i = 0; i < TT * U; ++i) acc[i] = f32(0.0f);
            runs(one, dot_rows<Arch, TT>{{j.x + m0 * j.x_stride, j.x_stride, acc}});
            for (std::size_t i = 0; i < TT; ++i) {
                f32 sum = acc[i * U];
                for (std::size_t u = 1; u < U; ++u) sum += acc[i * U + u];
                gemv::store_y(j.y, j.y_type, (m0 + i) * j.y_stride + r, ::lowbit::detail::simd::reduce_add(sum) + add);
            }
        };
        std::size_t m0 = 0;
        for (; m0 + T <= j.m; m0 += T) tile(m0, std::integral_constant<std::size_t, T>{});
        if (m0 + 2 <= j.m) {
            tile(m0, std::integral_constant<std::size_t, 2>{});
            m0 += 2;
        }
        if (m0 < j.m) tile(m0, std::integral_constant<std::size_t, 1>{});
    }
}

template <class Arch>
inline void run(const planar_gemv_job& j) noexcept {
    if (j.w.family() == kernel_family::affine) {
        const affine_job wj = affine_job_of(j.w);
        dq::with_affine_params(wj, [&](auto z, auto b) {
            constexpr bool Z = decltype(z)::value, B = decltype(b)::value;
            rows<Arch>(wj, j, [](const affine_job& one, const auto& out) LOWBIT_LAMBDA_INLINE {
                dq::for_each_run<Arch>(one, dq::affine_runs<Arch, Z, B, std::decay_t<decltype(out)>>{one, out});
            });
        });
    } else {
        const table_job wj = table_job_of(j.w);
        dq::with_table_cap<Arch>(wj, [&](auto cap) {
            constexpr int Cap = decltype(cap)::value;
            const dq::table_pad<Cap> pad(wj);
            rows<Arch>(wj, j, [&pad](const table_job& one, const auto& out) LOWBIT_LAMBDA_INLINE {
                dq::for_each_run<Arch>(one, dq::table_runs<Arch, Cap, std::decay_t<decltype(out)>>{one, pad.v, out});
            });
        });
    }
}

}  // namespace detail::planar_gemv
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

template <class Arch>
void gemv_planar_fn::operator()(Arch, const planar_gemv_job& j) const noexcept {
    if (j.w.empty() || j.m == 0) return;
    LOWBIT_SIMD_OR_REFERENCE(Arch, gemv_planar_ref(j), detail::planar_gemv::run<Arch>(j))
}

namespace detail::planar_gemv {

inline void gemv(const planar_view& w, matrix_view<const float> x, const gemv::gemv_out& y, row_range rows,
                 std::span<const float> bias) {
    const std::string who = "gemv(planar " + std::to_string(w.bits()) + "-bit " +
                            (w.family() == kernel_family::affine ? "affine" : "table") + ")";
    ::lowbit::detail::check_view(x, "gemv: x");
    const auto [r0, r1] = gemv::checked_rows(w.rows(), w.cols(), x.rows(), x.cols(), y, rows, bias, who);
    if (r0 == r1) return;
    const planar_gemv_job j{w.rows(r0, r1), x.data(), x.stride(), x.rows(), y.col(r0), y.stride,
                            bias.empty() ? nullptr : bias.data() + r0, y.type};
    dispatch(gemv_planar_fn{}, j);
}

}  // namespace detail::planar_gemv

/// y[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]) for n in `rows` (the other
/// columns of y are left as they are), on the active instruction set.
///   w: N x K planar weights (quantized<S>::view(), or planar_view over an
///   engine's memory); x: M x K floats (any row stride, any alignment);
///   y: M x N floats; bias: empty or N values.
/// Checked here, once: shapes and strides; errc::invalid_argument naming
/// what is wrong.
inline void gemv(const planar_view& w, matrix_view<const float> x, matrix_view<float> y, row_range rows = all_rows,
                 std::span<const float> bias = {}) {
    detail::planar_gemv::gemv(w, x, detail::gemv::out_of(y, "gemv"), rows, bias);
}

/// The same with y in fp16 or bf16 (y_type out_type::f16 or out_type::bf16;
/// elements as uint16_t bits): each output is the fp32 result rounded once
/// to nearest even.
inline void gemv(const planar_view& w, matrix_view<const float> x, matrix_view<std::uint16_t> y, out_type y_type,
                 row_range rows = all_rows, std::span<const float> bias = {}) {
    detail::planar_gemv::gemv(w, x, detail::gemv::out_of(y, y_type, "gemv"), rows, bias);
}

/// gemv over all of w's rows, split into `threads` ranges (0: the hardware's
/// count) run by lowbit's parallel_for, in whole multiples of 16 rows.
inline void gemv_parallel(const planar_view& w, matrix_view<const float> x, matrix_view<float> y,
                          unsigned threads = 0, std::span<const float> bias = {}) {
    const auto out = detail::gemv::out_of(y, "gemv");
    detail::gemv::run_parallel(w.rows(), threads,
                               [&](row_range r) { detail::planar_gemv::gemv(w, x, out, r, bias); });
}
inline void gemv_parallel(const planar_view& w, matrix_view<const float> x, matrix_view<std::uint16_t> y,
                          out_type y_type, unsigned threads = 0, std::span<const float> bias = {}) {
    const auto out = detail::gemv::out_of(y, y_type, "gemv");
    detail::gemv::run_parallel(w.rows(), threads,
                               [&](row_range r) { detail::planar_gemv::gemv(w, x, out, r, bias); });
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

#define LOWBIT_KERNELS_GEMV(EXT, ARCH)                                                                     \
    EXT template void lowbit::kernels::gemv_planar_fn::operator()<ARCH>(ARCH,                             \
                                                                        const lowbit::kernels::planar_gemv_job&) \
        const noexcept;
LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_GEMV)
