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

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"
#include "../pack/planar.hpp"
#include "dequantize.hpp"
#include "dispatch.hpp"
#include "gemv_common.hpp"
#include "ggml_gemv.hpp"

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

/// "planar 4-bit affine", for messages.
inline std::string describe(const planar_view& w) {
    return "planar " + std::to_string(w.bits()) + "-bit " + (w.family() == kernel_family::affine ? "affine" : "table");
}

inline void gemv(const planar_view& w, matrix_view<const float> x, const gemv::gemv_out& y, row_range rows,
                 std::span<const float> bias) {
    const std::string who = "gemv(" + describe(w) + ")";
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

// ---- The int8 path: activations quantized once per call ----------------------
//
// For affine weights, value (q - zero) * scale + bias, in groups that hold
// whole 32-value blocks: x quantized to ggml's Q8_0 blocks (32 int8 codes
// q_x and an fp16 scale d_x a block; quantize_activations(w, x)), and each
// 32-value block of a W row meets its activation block in an integer product,
//
//   y += (scale_g * d_x) * sum(q * q_x)  +  (bias_g - zero_g * scale_g) * d_x * sum(q_x)
//
// the first term a block at a time in int32 lanes, the second once per group
// from the activations' block sums. 4-bit codes may also come in groups of
// 16, two to a block (NVFP4): each lane of the block's product then takes
// its own group's scale. 4-bit tables whose entries are integers
// times 2^-e (MXFP4's and NVFP4's E2M1 values, IQ4_NL's) take the same path with the
// entries as int8 codes: y += (scale_g * 2^-e * d_x) * sum(T[q] * q_x). Each call lays its activation rows out
// for the kernel once (M x K bytes): the scales as floats, the sums per
// group, and for 2- and 4-bit weights the codes of each block in the
// order the weights' bytes split into (q8_position), so that codes meet in
// registers without an interleave. 8-bit codes are taken as q - 128,
// signed (unsigned, their products with q_x would overflow maddubs' int16
// pairs), their zero as zero - 128.

namespace detail::planar_gemv {

/// A 4-bit table whose entries are integers of at most 127 in magnitude
/// once multiplied by 2^e (e = 0..7: MXFP4's E2M1 values times 2, IQ4_NL's
/// as they are), as int8 in `out`; e, or -1 for a table that is not.
inline int integer_table(const planar_view& w, std::int8_t* out) noexcept {
    if (w.family() != kernel_family::table || w.bits() != 4) return -1;
    for (int e = 0; e <= 7; ++e) {
        bool ok = true;
        for (std::size_t i = 0; i < 16 && ok; ++i) {
            const float v = std::ldexp(w.table()[i], e);
            ok = v == std::nearbyint(v) && std::fabs(v) <= 127.0f;
            if (ok && out) out[i] = static_cast<std::int8_t>(v);
        }
        if (ok) return e;
    }
    return -1;
}

}  // namespace detail::planar_gemv

namespace detail::planar_gemv {
/// What has_int8_path asks, for the errors that name it.
inline constexpr const char* int8_rule =
    "affine codes and 4-bit integer tables in groups of whole 32-value blocks, or of 16 for 4-bit codes, have one";
}  // namespace detail::planar_gemv

/// Whether w has an int8 path: rows of whole 32-value blocks, each block
/// within one group (or, for 4-bit codes, two groups of 16: NVFP4's), and
/// affine codes or a 4-bit table of integers times a power of two (MXFP4's,
/// NVFP4's, IQ4_NL's).
inline bool has_int8_path(const planar_view& w) noexcept {
    return w.cols() % 32 == 0 && (w.group() % 32 == 0 || w.group() >= w.cols() || (w.group() == 16 && w.bits() == 4)) &&
           (w.family() == kernel_family::affine || detail::planar_gemv::integer_table(w, nullptr) >= 0);
}

/// x quantized for the int8 path of w: ggml's Q8_0 blocks (errc::unsupported
/// where w has none: has_int8_path; errc::non_finite naming a NaN's row and
/// column; errc::not_divisible for rows that are not whole blocks). Reuse one
/// across every weight of the same x.
inline ggml_activations quantize_activations(const planar_view& w, matrix_view<const float> x) {
    if (!has_int8_path(w))
        LOWBIT_THROW(errc::unsupported, "quantize_activations: no int8 path for " + detail::planar_gemv::describe(w) +
                                            " weights (" + detail::planar_gemv::int8_rule + ")");
    ggml_activations a;
    a.quantize(ggml::type::q8_0, x);
    return a;
}

/// One int8-path call on rows of W already chosen, with its activation rows
/// laid out for it (detail::planar_gemv::q8_rows).
struct planar_gemv_q8_job {
    planar_view w;
    const std::int8_t* xq;  ///< m rows of k codes (4-bit weights: each block's even columns, then odd)
    const float* xd;        ///< m rows of k / 32 block scales d_x (for a table, times 2^-e)
    std::size_t m;
    /// Per activation row, per group of W's columns: the sum over its blocks
    /// of d_x * sum(q_x), `groups` floats a row; null where no offset term exists.
    const float* xsum;
    std::size_t groups;
    void* y;
    std::size_t y_stride;
    const float* bias;
    out_type y_type = out_type::f32;
    /// A table's entries times 2^e as int8 (detail::planar_gemv::integer_table); null for affine codes.
    const std::int8_t* itable = nullptr;
};

struct gemv_planar_q8_fn {
    template <class Arch>
    void operator()(Arch, const planar_gemv_q8_job& j) const noexcept;
};

namespace detail::planar_gemv {

/// Where column j (0..31) of a block sits in the int8 path's activation
/// rows for `bits`-bit weights: for 4-bit codes the nibble split's order
/// (even columns, then odd), for 2-bit codes each byte's first codes, then
/// its second, third and fourth (columns 0, 4, .., 28, then 1, 5, .., 29, ...).
constexpr std::size_t q8_position(int bits, std::size_t j) noexcept {
    return bits == 4 ? (j % 2) * 16 + j / 2 : bits == 2 ? (j % 4) * 8 + j / 4 : j;
}

}  // namespace detail::planar_gemv

/// Scalar reference: W's values (the dequantize references') times the
/// dequantized activations d_x * q_x, added in k order in float. (Its value is
/// the sum the integer path computes, up to float rounding.)
inline void gemv_planar_q8_ref(const planar_gemv_q8_job& j) noexcept {
    const affine_job wj = affine_job_of(j.w);
    const std::size_t k = wj.cols;
    for (std::size_t r = 0; r < wj.rows; ++r)
        for (std::size_t mi = 0; mi < j.m; ++mi) {
            float acc = 0.0f;
            for (std::size_t c = 0; c < k; ++c) {
                const std::size_t at = c / 32 * 32 + detail::planar_gemv::q8_position(wj.bits, c % 32);
                const float xv = j.xd[mi * (k / 32) + c / 32] * static_cast<float>(j.xq[mi * k + at]);
                // A table's integer entry times the scale (xd carries its 2^-e).
                const float wv = j.itable ? static_cast<float>(j.itable[detail::dq::ref_code(wj.codes + r * wj.code_stride,
                                                                                           c, wj.bits)]) *
                                                wj.scale[r * wj.param_stride + c / wj.group]
                                          : detail::dq::ref_value(wj, r, c);
                acc += ::lowbit::detail::unfused(xv * wv);
            }
            detail::gemv::store_y(j.y, j.y_type, mi * j.y_stride + r, j.bias ? acc + j.bias[r] : acc);
        }
}

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::planar_gemv {

namespace gg = ::lowbit::kernels::detail::ggml_gemv;

namespace gd = ::lowbit::kernels::detail::ggml_dequant;

/// The 32 codes of block b of a W row as bytes at buf (or where they are),
/// in the order the activation rows hold their block (q8_position): 4-bit
/// codes split into nibbles (ggml's Q4_0 split: even columns, then odd),
/// 2-bit ones split by their place in the byte, 8-bit ones as q - 128, other
/// widths from the chunk `codes` decoded to bytes in column order; a 4-bit
/// table's entries (as int8) split as 4-bit codes.
template <class Arch, int K, bool Table = false>
LOWBIT_FORCE_INLINE const std::int8_t* block_codes(const std::uint8_t* row, const std::uint8_t* chunk, std::size_t b,
                                                   std::int8_t* buf, const std::int8_t* itable) noexcept {
    if constexpr (Table) {
        // The table's entries in place of the nibbles, split alike.
        static_assert(K == 4, "4-bit tables");
        gd::lut<Arch>(row + 16 * b, itable, buf);
        return buf;
    } else if constexpr (K == 4) {
        (void)itable;
        gd::nibbles<Arch>(row + 16 * b, buf, 0);
        return buf;
    } else if constexpr (K == 2) {
        // The block's 8 bytes in both 64-bit lanes; lane t of the two
        // 16-byte halves keeps the codes at bits 2t (first half) and 2t + 4
        // (second half) of each byte: bytes 8t .. 8t + 7 of the block's codes.
        // bench_gemv gemv_planar_q8/int2-g64 11008 x 4096, one thread, AVX2
        // (EPYC 2.25 GHz), against decode_span's chunks: m:1 4.30 -> 3.20 ms,
        // m:16 35.3 -> 30.1. A like decode of 3-bit codes (four 24-bit words
        // spread to bytes) was slower than the chunks: int3-g128 5.38 -> 7.0.
        (void)itable;
        (void)chunk;
        using u64 = xsimd::batch<std::uint64_t, dq::arch16<Arch>>;
        static_assert(u64::size == 2 && std::endian::native == std::endian::little);
        alignas(16) static constexpr std::uint64_t lane0[2] = {0x0303030303030303ull, 0};
        const u64 v(load_as<std::uint64_t>(row + 8 * b)), m0 = u64::load_aligned(lane0), m(0x0303030303030303ull);
        const u64 m1 = m0 ^ m;
        ((v & m0) | ((v >> 2) & m1)).store_aligned(reinterpret_cast<std::uint64_t*>(buf));
        (((v >> 4) & m0) | ((v >> 6) & m1)).store_aligned(reinterpret_cast<std::uint64_t*>(buf) + 2);
        return buf;
    } else if constexpr (K == 8) {
        using u8 = xsimd::batch<std::uint8_t, dq::arch16<Arch>>;
        for (std::size_t i = 0; i < 32; i += 16)
            (u8::load_unaligned(row + 32 * b + i) ^ u8(0x80)).store_aligned(reinterpret_cast<std::uint8_t*>(buf) + i);
        return buf;
    } else {
        (void)row;
        (void)buf;
        (void)itable;
        return reinterpret_cast<const std::int8_t*>(chunk) + 32 * (b % (dq::chunk / 32));
    }
}

/// W row r's products with T activation rows (from m0), into out[0..T).
/// Half: groups of 16 (4-bit codes), two to a block. A block's bytes hold
/// columns 0, 2, .., 30 then 1, 3, .., 31, so byte p is in group (p % 16) / 8,
/// and lane l of a unit (bytes 4l .. 4l + 3 from a multiple of 16) in group
/// (l % 4) / 2: the lanes take their group's scale before the FMA.
template <class Arch, int K, bool Table, bool Half, std::size_t T>
inline void row_q8(const planar_gemv_q8_job& j, std::size_t r, std::size_t m0, float* out) noexcept {
    using AU = gg::unit_arch<Arch>;
    using fu = xsimd::batch<float, AU>;
    using iu = xsimd::batch<std::int32_t, AU>;
    constexpr std::size_t U = iu::size * 4;  // bytes a unit
    // NA accumulators per activation row, blocks striped over them: one chain
    // of dependent FMAs, one a block, would wait out each one's latency.
    constexpr std::size_t NA = T >= 4 ? 1 : 4 / T;
    constexpr bool chunked = K != 2 && K != 4 && K != 8;
    using W = gg::unit_w<Arch, K < 8 && !Table>;  // table entries are signed
    const planar_view& w = j.w;
    const std::size_t k = w.cols(), kb = k / 32, group = w.group() >= k ? k : w.group();
    const std::size_t rb = dq::row_bytes(k, K);
    const std::uint8_t* src = w.codes() + r * w.code_stride();
    const float* sc = w.scale() + r * w.param_stride();
    fu acc[T][NA];
    for (std::size_t t = 0; t < T; ++t)
        for (std::size_t a = 0; a < NA; ++a) acc[t][a] = fu(0.0f);
    alignas(64) std::uint8_t chunk[chunked ? dq::chunk + dq::block : 1];
    alignas(32) std::int8_t buf[32];
    const std::uint8_t* decoded = nullptr;
    std::size_t g_end = group / 32;  // the first block of the next group
    const float* s = sc;
    static_assert(!Half || K == 4, "two groups a block: 4-bit codes");
    const auto upper = [] {  // Half: the lanes in a block's second group
        alignas(64) float g[fu::size];
        for (std::size_t l = 0; l < fu::size; ++l) g[l] = static_cast<float>(l % 4 / 2);
        return fu::load_aligned(g) > fu(0.5f);
    }();
    const auto block = [&](std::size_t b, auto slot) LOWBIT_LAMBDA_INLINE {
        constexpr std::size_t a = decltype(slot)::value;
        if constexpr (chunked) {
            if (b % (dq::chunk / 32) == 0) {
                const std::size_t c0 = 32 * b, at = c0 / 8 * K;
                decoded = dq::decode_span<Arch, K>(src + at, std::min(dq::chunk, k - c0), rb - at, chunk);
            }
        }
        if constexpr (!Half) {
            if (b == g_end) {
                ++s;
                g_end += group / 32;
            }
        }
        const std::int8_t* q = block_codes<Arch, K, Table>(src, decoded, b, buf, j.itable);
        iu is[T];
        for (std::size_t t = 0; t < T; ++t) is[t] = iu(0);
        for (std::size_t u = 0; u < 32; u += U) {
            const W wu(q + u);
            for (std::size_t t = 0; t < T; ++t) is[t] += wu.dot(j.xq + (m0 + t) * k + 32 * b + u);
        }
        if constexpr (Half) {
            const fu sv = xsimd::select(upper, fu(sc[2 * b + 1]), fu(sc[2 * b]));
            for (std::size_t t = 0; t < T; ++t)
                acc[t][a] = xsimd::fma(xsimd::to_float(is[t]), sv * fu(j.xd[(m0 + t) * kb + b]), acc[t][a]);
        } else {
            for (std::size_t t = 0; t < T; ++t)
                acc[t][a] = xsimd::fma(xsimd::to_float(is[t]), fu(*s * j.xd[(m0 + t) * kb + b]), acc[t][a]);
        }
    };
    std::size_t b = 0;
    for (; b + NA <= kb; b += NA)
        [&]<std::size_t... I>(std::index_sequence<I...>) LOWBIT_LAMBDA_INLINE {
            (block(b + I, std::integral_constant<std::size_t, I>{}), ...);
        }(std::make_index_sequence<NA>{});
    for (; b < kb; ++b) block(b, std::integral_constant<std::size_t, 0>{});
    for (std::size_t t = 0; t < T; ++t) {
        fu sum = acc[t][0];
        for (std::size_t a = 1; a < NA; ++a) sum += acc[t][a];
        out[t] = ::lowbit::detail::simd::reduce_add(sum);
    }
    if (j.xsum) {
        // sum_g o_g * xsum_g, a batch of groups at a time.
        using f32 = xsimd::batch<float, Arch>;
        constexpr std::size_t n = f32::size;
        const std::size_t ng = j.groups, pi = r * w.param_stride();
        const float* zr = w.zero() ? w.zero() + pi : nullptr;
        const float* br = w.bias() ? w.bias() + pi : nullptr;
        const float zc = K == 8 ? 128.0f : 0.0f;
        for (std::size_t t = 0; t < T; ++t) {
            const float* xs = j.xsum + (m0 + t) * ng;
            f32 vo(0.0f);
            std::size_t gi = 0;
            for (; gi + n <= ng; gi += n) {
                const f32 z = (zr ? f32::load_unaligned(zr + gi) : f32(0.0f)) - f32(zc);
                const f32 o = (br ? f32::load_unaligned(br + gi) : f32(0.0f)) - z * f32::load_unaligned(sc + gi);
                vo = xsimd::fma(o, f32::load_unaligned(xs + gi), vo);
            }
            float so = ::lowbit::detail::simd::reduce_add(vo);
            for (; gi < ng; ++gi) {
                const float z = (zr ? zr[gi] : 0.0f) - zc;
                so += ((br ? br[gi] : 0.0f) - z * sc[gi]) * xs[gi];
            }
            out[t] += so;
        }
    }
}

template <class Arch, int K, bool Table = false, bool Half = false>
inline void rows_q8(const planar_gemv_q8_job& j) noexcept {
    for (std::size_t r = 0; r < j.w.rows(); ++r) {
        const float add = j.bias ? j.bias[r] : 0.0f;
        gemv::for_each_tile<4>(j.m, [&](std::size_t m0, auto tt) LOWBIT_LAMBDA_INLINE {
            constexpr std::size_t TT = decltype(tt)::value;
            float out[TT];
            row_q8<Arch, K, Table, Half, TT>(j, r, m0, out);
            for (std::size_t t = 0; t < TT; ++t) gemv::store_y(j.y, j.y_type, (m0 + t) * j.y_stride + r, out[t] + add);
        });
    }
}

template <class Arch>
inline void run_q8(const planar_gemv_q8_job& j) noexcept {
    if (j.w.group() == 16) return j.itable ? rows_q8<Arch, 4, true, true>(j) : rows_q8<Arch, 4, false, true>(j);
    if (j.itable) return rows_q8<Arch, 4, true>(j);
    switch (j.w.bits()) {
    case 1: return rows_q8<Arch, 1>(j);
    case 2: return rows_q8<Arch, 2>(j);
    case 3: return rows_q8<Arch, 3>(j);
    case 4: return rows_q8<Arch, 4>(j);
    case 5: return rows_q8<Arch, 5>(j);
    case 6: return rows_q8<Arch, 6>(j);
    case 7: return rows_q8<Arch, 7>(j);
    default: return rows_q8<Arch, 8>(j);
    }
}

}  // namespace detail::planar_gemv
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

template <class Arch>
void gemv_planar_q8_fn::operator()(Arch, const planar_gemv_q8_job& j) const noexcept {
    if (j.w.empty() || j.m == 0) return;
    LOWBIT_SIMD_OR_REFERENCE(Arch, gemv_planar_q8_ref(j), detail::planar_gemv::run_q8<Arch>(j))
}

namespace detail::planar_gemv {

/// A call's activation rows laid out for the int8 kernel (planar_gemv_q8_job's).
struct q8_rows {
    std::vector<std::int8_t> q;
    std::vector<float> d, sum;
    std::size_t groups = 0;

    std::int8_t itable[16] = {};
    bool table = false;

    q8_rows(const planar_view& w, const ggml_activations& x) {
        const std::size_t k = w.cols(), kb = k / 32, m = x.rows();
        // A table's entries are integers times 2^-e: the scales carry the 2^-e (exactly).
        const int e = integer_table(w, itable);
        table = e >= 0;
        const float unit = table ? std::ldexp(1.0f, -e) : 1.0f;
        const std::size_t group = w.group() >= k ? k : w.group();
        groups = k / group;
        const std::size_t span = std::min<std::size_t>(group, 32);  // a block's columns in one group
        q.resize(m * k);
        d.resize(m * kb);
        // The offset term: a zero, a bias, or 8-bit codes' shift.
        if (!table && (w.bits() == 8 || w.zero() || w.bias())) sum.assign(m * groups, 0.0f);
        for (std::size_t mi = 0; mi < m; ++mi)
            for (std::size_t b = 0; b < kb; ++b) {
                const unsigned char* blk = x.row(mi) + b * 34;  // Q8_0: fp16 d, 32 int8 codes
                const float dx = fp16_to_float(load_as<std::uint16_t>(blk));
                d[mi * kb + b] = dx * unit;
                std::int32_t sq[2] = {0, 0};  // per group in the block
                for (std::size_t e = 0; e < 32; ++e) {
                    const auto v = static_cast<std::int8_t>(blk[2 + e]);
                    q[mi * k + b * 32 + q8_position(w.bits(), e)] = v;
                    sq[e / span] += v;
                }
                // Exact in float: an 11-bit mantissa times at most 12 bits.
                if (!sum.empty())
                    for (std::size_t h = 0; h < 32 / span; ++h)
                        sum[mi * groups + (b * 32 + h * span) / group] += dx * static_cast<float>(sq[h]);
            }
    }
};

/// The int8 path's checks; the rows of W to compute.
inline std::pair<std::size_t, std::size_t> checked(const planar_view& w, const ggml_activations& x,
                                                   const gemv::gemv_out& y, row_range rows, std::span<const float> bias) {
    const std::string who = "gemv(" + describe(w) + ", int8 activations)";
    if (!has_int8_path(w))
        LOWBIT_THROW(errc::unsupported, who + ": these weights have no int8 path (" + int8_rule + ")");
    if (x.rows() != 0 && x.type_id() != ggml::type::q8_0)
        LOWBIT_THROW(errc::invalid_argument, who + ": the activations are " + std::string(ggml::traits(x.type_id()).name) +
                                                 " blocks; planar weights take q8_0 (quantize_activations(w, x))");
    return gemv::checked_rows(w.rows(), w.cols(), x.rows(), x.cols(), y, rows, bias, who);
}

/// `shared`: x laid out already (by gemv_parallel, once for all its threads).
inline void gemv(const planar_view& w, const ggml_activations& x, const gemv::gemv_out& y, row_range rows,
                 std::span<const float> bias, const q8_rows* shared = nullptr) {
    const auto [r0, r1] = checked(w, x, y, rows, bias);
    if (r0 == r1) return;
    std::optional<q8_rows> own;
    const q8_rows& xr = shared ? *shared : own.emplace(w, x);
    const planar_gemv_q8_job j{w.rows(r0, r1), xr.q.data(), xr.d.data(), x.rows(),
                               xr.sum.empty() ? nullptr : xr.sum.data(), xr.groups, y.col(r0), y.stride,
                               bias.empty() ? nullptr : bias.data() + r0, y.type, xr.table ? xr.itable : nullptr};
    dispatch(gemv_planar_q8_fn{}, j);
}

/// gemv on `threads` threads, the activations laid out once for all of them.
inline void gemv_parallel(const planar_view& w, const ggml_activations& x, const gemv::gemv_out& y, unsigned threads,
                          std::span<const float> bias) {
    if (checked(w, x, y, all_rows, bias).first == w.rows() || x.rows() == 0) return;
    const q8_rows xr(w, x);
    gemv::run_parallel(w.rows(), threads, [&](row_range r) { gemv(w, x, y, r, bias, &xr); });
}

}  // namespace detail::planar_gemv

/// The int8 path: y[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]) for n in
/// `rows`, x given quantized (quantize_activations(w, x)). The same checks as
/// the f32 path, plus errc::unsupported where w has no int8 path.
inline void gemv(const planar_view& w, const ggml_activations& x, matrix_view<float> y, row_range rows = all_rows,
                 std::span<const float> bias = {}) {
    detail::planar_gemv::gemv(w, x, detail::gemv::out_of(y, "gemv"), rows, bias);
}
inline void gemv(const planar_view& w, const ggml_activations& x, matrix_view<std::uint16_t> y, out_type y_type,
                 row_range rows = all_rows, std::span<const float> bias = {}) {
    detail::planar_gemv::gemv(w, x, detail::gemv::out_of(y, y_type, "gemv"), rows, bias);
}
inline void gemv_parallel(const planar_view& w, const ggml_activations& x, matrix_view<float> y, unsigned threads = 0,
                          std::span<const float> bias = {}) {
    detail::planar_gemv::gemv_parallel(w, x, detail::gemv::out_of(y, "gemv"), threads, bias);
}
inline void gemv_parallel(const planar_view& w, const ggml_activations& x, matrix_view<std::uint16_t> y,
                          out_type y_type, unsigned threads = 0, std::span<const float> bias = {}) {
    detail::planar_gemv::gemv_parallel(w, x, detail::gemv::out_of(y, y_type, "gemv"), threads, bias);
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

#define LOWBIT_KERNELS_GEMV(EXT, ARCH)                                                                     \
    EXT template void lowbit::kernels::gemv_planar_fn::operator()<ARCH>(ARCH,                             \
                                                                        const lowbit::kernels::planar_gemv_job&) \
        const noexcept;                                                                                   \
    EXT template void lowbit::kernels::gemv_planar_q8_fn::operator()<ARCH>(                              \
        ARCH, const lowbit::kernels::planar_gemv_q8_job&) const noexcept;
LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_GEMV)
