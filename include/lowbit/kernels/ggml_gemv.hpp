#pragma once
// Fused dequantize-GEMV and small-batch GEMM on rows of ggml blocks:
//
//   y[m][n] = sum_k x[m][k] * W[n][k]  (+ bias[n])   for n in a range of W's rows
//
// with fp32 activations x (M rows) and W in any block type dequantize_ggml
// handles; y in fp32, or fp16/bf16 (each output rounded once, from the fp32
// sum). Each block is decoded once per tile of up to four activation rows
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
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../core/view.hpp"
#include "../formats/ggml_view.hpp"
#include "../parallel.hpp"
#include "dispatch.hpp"
#include "ggml_dequantize.hpp"
#include "gemv_common.hpp"
#include "ggml_quantize.hpp"

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
    void* y;               ///< out_type elements (fp16/bf16 as uint16_t bits)
    std::size_t y_stride;  ///< elements between output rows
    const float* bias;     ///< n values, or null
    out_type y_type = out_type::f32;
};

struct gemv_ggml_fn {
    template <class Arch>
    void operator()(Arch, const ggml_gemv_job& j) const noexcept;
};

namespace detail::ggml_gemv {

using gemv::checked_rows;
using gemv::gemv_out;
using gemv::out_of;
using gemv::store_y;

/// The scalar references' loop: each W row dequantized by ggml's row function
/// a chunk of blocks at a time, products added in k order in float.
/// xs(mi, b, nb, wbytes) gives activation row mi's values for W blocks
/// [b, b + nb) (wbytes: those blocks' bytes) as a pointer and what to add
/// beside their products.
template <class Xs>
inline void ref_rows(ggml::type t, const void* w, std::size_t w_stride, std::size_t n, std::size_t k, std::size_t m,
                     void* y, std::size_t y_stride, out_type y_type, const float* bias, Xs&& xs) noexcept {
    const ggml::dequantize_row_fn f = ggml_dequant::ref_row(t);
    const auto base = ggml::find_base_traits(static_cast<std::uint32_t>(t));
    if (!f || !base) return;
    const std::size_t bs = base->block_size, ts = base->type_size;
    alignas(16) unsigned char tmp[4096];
    float wf[2048];
    const std::size_t per_chunk = std::min(sizeof tmp / ts, sizeof wf / sizeof wf[0] / bs);
    constexpr std::size_t tm = 16;  // activation rows a pass over W's row
    float acc[tm];
    for (std::size_t r = 0; r < n; ++r) {
        const unsigned char* row = static_cast<const unsigned char*>(w) + r * w_stride;
        for (std::size_t m0 = 0; m0 < m; m0 += tm) {
            const std::size_t m1 = std::min(m, m0 + tm);
            std::fill(acc, acc + tm, 0.0f);
            for (std::size_t b = 0; b < k / bs; b += per_chunk) {
                const std::size_t nb = std::min(per_chunk, k / bs - b);
                std::memcpy(tmp, row + b * ts, nb * ts);  // the row functions read blocks in place, aligned
                f(tmp, wf, nb * bs);
                for (std::size_t mi = m0; mi < m1; ++mi) {
                    const auto [x, add] = xs(mi, b, nb, static_cast<const unsigned char*>(tmp));
                    float a = acc[mi - m0];
                    for (std::size_t i = 0; i < nb * bs; ++i) a += ::lowbit::detail::unfused(wf[i] * x[i]);
                    acc[mi - m0] = a + add;
                }
            }
            for (std::size_t mi = m0; mi < m1; ++mi)
                store_y(y, y_type, mi * y_stride + r, bias ? acc[mi - m0] + bias[r] : acc[mi - m0]);
        }
    }
}

}  // namespace detail::ggml_gemv

/// Scalar reference: the products of x and ggml's dequantized weights, added
/// in k order in float.
inline void gemv_ggml_ref(const ggml_gemv_job& j) noexcept {
    const auto base = ggml::find_base_traits(static_cast<std::uint32_t>(j.type));
    if (!base) return;
    detail::ggml_gemv::ref_rows(j.type, j.w, j.w_stride, j.n, j.k, j.m, j.y, j.y_stride, j.y_type, j.bias,
                                [&](std::size_t mi, std::size_t b, std::size_t, const unsigned char*) {
                                    return std::pair<const float*, float>{
                                        j.x + mi * j.x_stride + b * base->block_size, 0.0f};
                                });
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
            for (std::size_t t = 0; t < tt; ++t)
                store_y(j.y, j.y_type, (m0 + t) * j.y_stride + r + i, out[i * tt + t] + add);
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
    gd::with_decoder<Arch>(j.type, [&](auto tag) { rows<Arch, typename decltype(tag)::type>(j); });
}

}  // namespace detail::ggml_gemv
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

template <class Arch>
void gemv_ggml_fn::operator()(Arch, const ggml_gemv_job& j) const noexcept {
    if (j.n == 0 || j.m == 0) return;
    LOWBIT_SIMD_OR_REFERENCE(Arch, gemv_ggml_ref(j), detail::ggml_gemv::run<Arch>(j))
}

namespace detail::ggml_gemv {

inline void gemv(const ggml::rows_view& w, matrix_view<const float> x, const gemv_out& y, row_range rows,
                 std::span<const float> bias) {
    const std::string who = "gemv_ggml(" + std::string(w.type_name()) + ")";
    if (!dequantize_ggml_supports(w.type_id()))
        LOWBIT_THROW(errc::unsupported, who + ": no GEMV for weights of ggml type " + std::string(w.type_name()));
    ::lowbit::detail::check_view(x, "gemv_ggml: x");
    const auto [r0, r1] = checked_rows(w.rows(), w.cols(), x.rows(), x.cols(), y, rows, bias, who);
    if (r0 == r1) return;
    const ggml_gemv_job j{w.type_id(), w.row(r0), w.stride(), r1 - r0, w.cols(), x.data(), x.stride(), x.rows(),
                          y.col(r0), y.stride, bias.empty() ? nullptr : bias.data() + r0, y.type};
    dispatch(gemv_ggml_fn{}, j);
}

}  // namespace detail::ggml_gemv

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
    detail::ggml_gemv::gemv(w, x, detail::ggml_gemv::out_of(y, "gemv_ggml"), rows, bias);
}

/// The same with y in fp16 or bf16 (y_type out_type::f16 or out_type::bf16;
/// elements as uint16_t bits): each output is the fp32 result rounded once
/// to nearest even, the value the fp32 form writes.
inline void gemv_ggml(const ggml::rows_view& w, matrix_view<const float> x, matrix_view<std::uint16_t> y,
                      out_type y_type, row_range rows = all_rows, std::span<const float> bias = {}) {
    detail::ggml_gemv::gemv(w, x, detail::ggml_gemv::out_of(y, y_type, "gemv_ggml"), rows, bias);
}

/// gemv_ggml over all of w's rows, split into `threads` ranges (0: the
/// hardware's count) run by lowbit's parallel_for, in whole multiples of 16
/// rows (64 bytes of a y row).
inline void gemv_ggml_parallel(const ggml::rows_view& w, matrix_view<const float> x, matrix_view<float> y,
                               unsigned threads = 0, std::span<const float> bias = {}) {
    const auto out = detail::ggml_gemv::out_of(y, "gemv_ggml");
    detail::gemv::run_parallel(w.rows(), threads, [&](row_range r) { detail::ggml_gemv::gemv(w, x, out, r, bias); });
}
inline void gemv_ggml_parallel(const ggml::rows_view& w, matrix_view<const float> x, matrix_view<std::uint16_t> y,
                               out_type y_type, unsigned threads = 0, std::span<const float> bias = {}) {
    const auto out = detail::ggml_gemv::out_of(y, y_type, "gemv_ggml");
    detail::gemv::run_parallel(w.rows(), threads, [&](row_range r) { detail::ggml_gemv::gemv(w, x, out, r, bias); });
}

// ---- The int8 path: activations quantized once per call ----------------------
//
// x is quantized to ggml's vec_dot_type of the weight type (ggml's own bytes:
// Q8_0, Q8_1 or Q8_K blocks, per activation_type), and each block of W meets
// its activation block in integer products: for the 32-value types
// y += (d_w * d_x) * sum(q_w * q_x) (+ m_w * s_x for Q4_1 and Q5_1), for the
// K-quants and IQ4_XS y += d_x * (d * sum_g sc_g * sum_g(q_w * q_x) - dmin *
// sum_g m_g * bsum_g) with the sub-block scales and sums in integers (the
// decoders' integer face), the quantities of ggml's vec_dot functions; only
// the order of the float additions differs.

/// ggml's vec_dot_type: the block type activations are quantized to for
/// weights of type t (Q8_0 for Q4_0, Q5_0, Q8_0, IQ4_NL and MXFP4; Q8_1 for
/// Q4_1 and Q5_1; Q8_K for Q2_K to Q6_K, IQ4_XS, TQ1_0 and TQ2_0); nullopt for
/// a type without an int8 path.
constexpr std::optional<ggml::type> activation_type(ggml::type t) noexcept {
    using ggml::type;
    switch (t) {
    case type::q4_0: case type::q5_0: case type::q8_0: case type::iq4_nl: case type::mxfp4: return type::q8_0;
    case type::q4_1: case type::q5_1: return type::q8_1;
    case type::q2_k: case type::q3_k: case type::q4_k: case type::q5_k: case type::q6_k: case type::iq4_xs:
    case type::tq1_0: case type::tq2_0: return type::q8_k;
    default: return std::nullopt;
    }
}

/// Activation rows quantized for the int8 path of one weight type: each row
/// the blocks ggml's from_float writes for its vec_dot_type (quantize_ggml_rows'
/// bytes), rows `stride()` bytes apart. Owning; reuse one across calls and
/// across weights of the same activation type (the Q, K and V projections
/// of one x, say) so that x is quantized once.
class ggml_activations {
public:
    ggml::type type_id() const noexcept { return type_; }
    std::size_t rows() const noexcept { return rows_; }
    std::size_t cols() const noexcept { return cols_; }
    std::size_t stride() const noexcept { return stride_; }
    const unsigned char* data() const noexcept { return bytes_.data(); }
    const unsigned char* row(std::size_t r) const noexcept { return bytes_.data() + r * stride_; }

    /// x quantized for weights of type `weight_type` (errc::unsupported for a
    /// type without an int8 path; errc::non_finite naming the row and column
    /// of a NaN or infinity; errc::not_divisible for a row that is not whole
    /// blocks of the activation type).
    void quantize(ggml::type weight_type, matrix_view<const float> x) {
        const auto at = activation_type(weight_type);
        const auto wt = ggml::find_base_traits(static_cast<std::uint32_t>(weight_type));
        if (!at)
            LOWBIT_THROW(errc::unsupported, "quantize_activations: no int8 path for weights of ggml type " +
                                                std::string(wt ? wt->name : std::string_view("?")));
        ::lowbit::detail::check_view(x, "quantize_activations: x");
        type_ = *at;
        rows_ = x.rows();
        cols_ = x.cols();
        stride_ = ggml::row_bytes(type_, cols_);
        bytes_.resize(rows_ * stride_);
        for (std::size_t r = 0; r < rows_; ++r)
            ::lowbit::detail::at_position([&] { quantize_ggml_rows(type_, x.row(r).data(), row_mut(r), 1, cols_); },
                                          [&] { return "quantize_activations: x row " + std::to_string(r); });
    }

    /// Rows of activation blocks made elsewhere (ggml's from_float, say):
    /// `rows` rows of `cols` values of `type` (Q8_0, Q8_1 or Q8_K), packed,
    /// copied from `blocks`.
    void assign(ggml::type type, std::size_t rows, std::size_t cols, const void* blocks) {
        if (type != ggml::type::q8_0 && type != ggml::type::q8_1 && type != ggml::type::q8_k)
            LOWBIT_THROW(errc::invalid_argument, "ggml_activations: " + std::string(ggml::traits(type).name) +
                                                     " is not an activation type (q8_0, q8_1, q8_K)");
        const std::size_t stride = ggml::row_bytes(type, cols);
        if (rows != 0 && stride != 0 && !blocks)
            LOWBIT_THROW(errc::invalid_argument, "ggml_activations: null blocks");
        type_ = type;
        rows_ = rows;
        cols_ = cols;
        stride_ = stride;
        bytes_.assign(static_cast<const unsigned char*>(blocks), static_cast<const unsigned char*>(blocks) + rows * stride);
    }

private:
    unsigned char* row_mut(std::size_t r) noexcept { return bytes_.data() + r * stride_; }
    ggml::type type_ = ggml::type::q8_0;
    std::size_t rows_ = 0, cols_ = 0, stride_ = 0;
    std::vector<unsigned char> bytes_;
};

/// x quantized for the int8 path of weights of type `weight_type`.
inline ggml_activations quantize_activations(ggml::type weight_type, matrix_view<const float> x) {
    ggml_activations a;
    a.quantize(weight_type, x);
    return a;
}

/// One int8-path call on rows of W already chosen.
struct ggml_gemv_q8_job {
    ggml::type type;
    const void* w;
    std::size_t w_stride;  ///< bytes between W's rows
    std::size_t n, k;
    const unsigned char* x;  ///< activation blocks (type activation_type(type))
    std::size_t x_stride;    ///< bytes between activation rows
    std::size_t m;
    void* y;               ///< out_type elements, as ggml_gemv_job's
    std::size_t y_stride;  ///< elements between output rows
    const float* bias;
    out_type y_type = out_type::f32;
};

struct gemv_ggml_q8_fn {
    template <class Arch>
    void operator()(Arch, const ggml_gemv_q8_job& j) const noexcept;
};

/// Scalar reference: W and the activation blocks dequantized by ggml's row
/// functions a chunk at a time, products added in k order in float. (Its
/// value is the exact sum the integer path computes, up to float rounding.)
inline void gemv_ggml_q8_ref(const ggml_gemv_q8_job& j) noexcept {
    const auto at = activation_type(j.type);
    const auto base = ggml::find_base_traits(static_cast<std::uint32_t>(j.type));
    if (!at || !base) return;
    const ggml::dequantize_row_fn fx = detail::ggml_dequant::ref_row(*at);
    const std::size_t bs = base->block_size, ts = base->type_size, xts = ggml::traits(*at).type_size;
    alignas(16) unsigned char xtmp[4096 / 32 * 36];
    float xf[2048];
    detail::ggml_gemv::ref_rows(
        j.type, j.w, j.w_stride, j.n, j.k, j.m, j.y, j.y_stride, j.y_type, j.bias,
        [&](std::size_t mi, std::size_t b, std::size_t nb, const unsigned char* wbytes) {
            // One activation block per weight block (both 32 or both 256 values).
            std::memcpy(xtmp, j.x + mi * j.x_stride + b * xts, nb * xts);
            fx(xtmp, xf, nb * bs);
            float add = 0.0f;
            if (*at == ggml::type::q8_1) {
                // Q4_1/Q5_1 (m at byte 2) times Q8_1: ggml's offset term is
                // m_w * s_x, s_x = fp16(d_x * sum(q_x)) as the block stores
                // it, where the dequantized values give m_w * sum(fp16(d_x) * q_x).
                const auto half = [](const unsigned char* p) { return fp16_to_float(load_as<std::uint16_t>(p)); };
                for (std::size_t i = 0; i < nb; ++i) {
                    const unsigned char* xb = xtmp + i * xts;
                    const float m_w = half(wbytes + i * ts + 2), d_x = half(xb), s_x = half(xb + 2);
                    std::int32_t sum_q = 0;
                    for (std::size_t e = 0; e < 32; ++e) sum_q += static_cast<std::int8_t>(xb[4 + e]);
                    add += m_w * s_x - m_w * (d_x * static_cast<float>(sum_q));
                }
            }
            return std::pair<const float*, float>{xf, add};
        });
}

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::ggml_gemv {

/// The activation block types: where each keeps its scale, codes and sums.
template <ggml::type A>
struct act;
template <>
struct act<ggml::type::q8_0> {
    static constexpr std::size_t B = 32, bytes = 34;
    template <class Arch>
    static float d(const unsigned char* b) noexcept {
        return gd::half<Arch>(load_as<std::uint16_t>(b));
    }
    static const std::int8_t* qs(const unsigned char* b) noexcept { return reinterpret_cast<const std::int8_t*>(b + 2); }
};
template <>
struct act<ggml::type::q8_1> : act<ggml::type::q8_0> {
    static constexpr std::size_t bytes = 36;
    /// fp16(d * sum(q)), as the block stores it.
    template <class Arch>
    static float s(const unsigned char* b) noexcept {
        return gd::half<Arch>(load_as<std::uint16_t>(b + 2));
    }
    static const std::int8_t* qs(const unsigned char* b) noexcept { return reinterpret_cast<const std::int8_t*>(b + 4); }
};
template <>
struct act<ggml::type::q8_k> {
    static constexpr std::size_t B = 256, bytes = 292;
    template <class Arch>
    static float d(const unsigned char* b) noexcept {
        return load_as<float>(b);
    }
    static const std::int8_t* qs(const unsigned char* b) noexcept { return reinterpret_cast<const std::int8_t*>(b + 4); }
    /// The sums of the codes of values [16 i, 16 i + 16), i = 0..15, as the
    /// block stores them (int16, little-endian).
    static const unsigned char* bsums(const unsigned char* b) noexcept { return b + 260; }
};

/// The batch the integer products of the int8 path run on: 32 bytes (eight
/// int32 lanes, AVX2's maddubs) on AVX2 and AVX-512, else the 16-byte batch
/// (NEON, SSE4.1, and every tag under LOWBIT_XSIMD_ONLY).
template <class Arch>
inline constexpr bool unit32_v = dq::is_avx2_v<Arch> || dq::is_avx512_v<Arch>;
template <class Arch>
#if XSIMD_WITH_AVX2
using unit_arch = std::conditional_t<unit32_v<Arch>, xsimd::fma3<xsimd::avx2>, dq::arch16<Arch>>;
#else
using unit_arch = dq::arch16<Arch>;
#endif

/// One unit of W codes (sizeof(batch<int32, unit_arch<Arch>>) bytes),
/// loaded once and multiplied into each activation row's codes at that
/// unit: per 32-bit lane the sum of four of the products w[i] * x[i], times
/// (Scaled) the scale of the unit's half the lane lies in. Unsigned: w is
/// 0..127. The xsimd body: four int8 a lane, sign-extended by shifts. The
/// AVX2 body (maddubs on 32 bytes) over the xsimd one (16-byte batches),
/// bench_gemv gemv_q8 11008 x 4096, one thread, built as is vs. with
/// LOWBIT_XSIMD_ONLY (AMD EPYC 2.6 GHz): Q8_0, whose decoder is a pointer
/// into the block, so the difference is this unit's, m:1 1.84 vs 5.18 ms and
/// m:16 30.3 vs 79.6 (avx512bw), m:1 1.95 vs 5.11 (avx2); with the decoders'
/// own intrinsics too, Q4_K 3.41 vs 9.30, Q6_K 2.63 vs 9.12 (avx512bw).
/// Unsigned w skips moving x's sign onto w: Q2_K m:1 4.28 / 4.35 ms with
/// the sign moves vs 3.57 / 3.69 without (avx512bw, two runs; Q4_K and Q5_K
/// within noise).
template <class Arch, bool Unsigned = false, bool Scaled = false>
struct unit_w {
    using U = unit_arch<Arch>;
    using iu = xsimd::batch<std::int32_t, U>;
    // x86: |w| (w itself when unsigned), w (for its signs), the int16 scales;
    // else w as int32 words of four codes, unused, the lanes' scales.
    iu a, sgn, sv;

    /// The unit at w, its halves scaled by s_lo and s_hi (Scaled), or by s
    /// alone (the constructor below).
    LOWBIT_FORCE_INLINE unit_w(const std::int8_t* w, std::int16_t s_lo, std::int16_t s_hi) noexcept
        : unit_w(w, s_lo, s_hi, true) {}
    LOWBIT_FORCE_INLINE explicit unit_w(const std::int8_t* w, std::int16_t s = 1) noexcept : unit_w(w, s, s, false) {}

private:
    LOWBIT_FORCE_INLINE unit_w(const std::int8_t* w, std::int16_t s_lo, std::int16_t s_hi, bool two) noexcept {
        if constexpr (unit32_v<Arch>) {
#if XSIMD_WITH_AVX2
            // w in two 16-byte halves: the decoders store 16 bytes at a time,
            // and one 32-byte load of two such stores cannot be forwarded
            // from them (q4_0: 11.4 ms against 2.6 a GEMV, 11008 x 4096).
            const __m256i wv = _mm256_inserti128_si256(
                _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w))),
                _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + 16)), 1);
            if constexpr (Unsigned) {
                a = iu(wv);
            } else {
                a = iu(_mm256_sign_epi8(wv, wv));
                sgn = iu(wv);
            }
            // The scales in the madd that sums the int16 pairs: one
            // instruction where a multiply after it would take two. (Whether
            // the halves' scales differ is the caller's, known where it is
            // called: a test of their values here mispredicted on real
            // weights, Q2_K 1.3 -> 2.35 ms on distinct rows.)
            sv = iu(two ? _mm256_inserti128_si256(_mm256_set1_epi16(s_lo), _mm_set1_epi16(s_hi), 1)
                        : _mm256_set1_epi16(s_lo));
#endif
        } else {
            namespace ds = ::lowbit::detail::simd;
            a = ds::bitcast<std::int32_t>(xsimd::batch<std::int8_t, U>::load_unaligned(w));
            if constexpr (Scaled) {
                alignas(64) static constexpr std::int32_t lane[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
                sv = two ? xsimd::select(iu::load_aligned(lane) >= iu(static_cast<std::int32_t>(iu::size / 2)), iu(s_hi),
                                         iu(s_lo))
                         : iu(s_lo);
            }
        }
    }

public:

    /// The unit's products with the codes at x.
    LOWBIT_FORCE_INLINE iu dot(const std::int8_t* x) const noexcept {
        if constexpr (unit32_v<Arch>) {
#if XSIMD_WITH_AVX2
            const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
            // Pairs of products summed in int16 (unsigned w <= 127, or |w| <=
            // 128 with x taking w's sign; |x| <= 127: no saturation), then
            // pairs of those times the scales in int32 (|scale| <= 128: at
            // most 2^23).
            const __m256i p = Unsigned ? _mm256_maddubs_epi16(a, xv) : _mm256_maddubs_epi16(a, _mm256_sign_epi8(xv, sgn));
            return iu(_mm256_madd_epi16(p, sv));
#endif
        } else {
            namespace ds = ::lowbit::detail::simd;
            const iu d = ds::dot4_i8(a, ds::bitcast<std::int32_t>(xsimd::batch<std::int8_t, U>::load_unaligned(x)));
            if constexpr (Scaled) return d * sv;
            else return d;
        }
    }
};

/// Sum over a 256-value block's sixteen groups of 16 of m_g * bsum_g, with
/// the B / G mins m (G = 16 or 32: each min over one or two sums) and the
/// Q8_K block's int16 sums at bsums. The x86 form (one madd) over the
/// scalar loop, bench_gemv gemv_q8 11008 x 4096, one thread, AVX-512, EPYC
/// 2.6 GHz, two runs: Q2_K m:1 1.28 vs 2.31 ms, m:16 11.9 vs 17.3; Q4_K
/// m:1 1.10 vs 1.16, m:16 12.1 vs 14.7; Q5_K m:16 15.9 vs 17.7 (m:1 1.94
/// vs 1.84, the other way).
template <class Arch, std::size_t G>
LOWBIT_FORCE_INLINE std::int32_t mins_dot(const std::uint8_t* mn, const unsigned char* bsums) noexcept {
    static_assert(G == 16 || G == 32, "groups of 16 or 32");
    if constexpr (unit32_v<Arch>) {
#if XSIMD_WITH_AVX2
        const __m128i m8 = G == 16 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(mn))
                                   : [&] {
                                         const __m128i h = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(mn));
                                         return _mm_unpacklo_epi8(h, h);
                                     }();
        const __m256i p = _mm256_madd_epi16(_mm256_cvtepu8_epi16(m8),
                                            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(bsums)));
        return ::lowbit::detail::simd::reduce_add(xsimd::batch<std::int32_t, unit_arch<Arch>>(p));
#endif
    } else {
        std::int32_t ms = 0;
        for (std::size_t i = 0; i < 16; ++i)
            ms += static_cast<std::int32_t>(mn[i * 16 / G]) * load_as<std::int16_t>(bsums + 2 * i);
        return ms;
    }
}

/// One W row against T activation rows, integer products a unit at a time.
template <class Arch, class Dec, ggml::type A, std::size_t T>
inline void row_q8(const unsigned char* src, std::size_t nb, const unsigned char* x, std::size_t x_stride,
                   float* out) noexcept {
    using X = act<A>;
    using AU = unit_arch<Arch>;
    using fu = xsimd::batch<float, AU>;
    using iu = xsimd::batch<std::int32_t, AU>;
    constexpr std::size_t U = iu::size * 4;  // bytes a unit
    constexpr std::size_t G = Dec::G;
    static_assert(X::B == Dec::B, "one activation block per weight block");
    static_assert(G % 16 == 0 && (G >= U || U == 2 * G), "a unit is within one group or spans two");
    // The 256-value types give integer sub-block scales (decode<true>).
    constexpr bool ints = X::B == 256;
    static_assert(!ints || gd::int_face_v<Dec>, "a 256-value decoder has the integer face");
    gd::decoded<Dec::B, G> d;
    fu acc[T];
    float off[T];
    for (std::size_t t = 0; t < T; ++t) {
        acc[t] = fu(0.0f);
        off[t] = 0.0f;
    }
    // Each unit of W is loaded once for the T activation rows.
    for (std::size_t b = 0; b < nb; ++b) {
        const std::int8_t* q;
        if constexpr (ints) q = Dec::template decode<true>(src + b * Dec::bytes, d);
        else q = Dec::decode(src + b * Dec::bytes, d);
        const unsigned char* xb[T];
        const std::int8_t* xq[T];
        iu is[T];
        for (std::size_t t = 0; t < T; ++t) {
            xb[t] = x + t * x_stride + b * X::bytes;
            xq[t] = X::qs(xb[t]);
            is[t] = iu(0);
        }
        if constexpr (!ints) {
            // One group: (d_w * d_x) * sum, as ggml.
            for (std::size_t u = 0; u < 32; u += U) {
                const unit_w<Arch> w(q + u);
                for (std::size_t t = 0; t < T; ++t) is[t] += w.dot(xq[t] + u);
            }
            for (std::size_t t = 0; t < T; ++t) {
                acc[t] = xsimd::fma(xsimd::to_float(is[t]), fu(d.s[0] * X::template d<Arch>(xb[t])), acc[t]);
                if constexpr (Dec::k == gd::op::mul_add) off[t] += d.o[0] * X::template s<Arch>(xb[t]);
            }
        } else {
            // Integer sub-block scales, as ggml: sum_g sc_g * sum(q * x) in
            // int32 lanes (exact; a lane's conversion to float is too while
            // it stays below 2^24, as on 32-byte units), times d * d_x once;
            // the mins' part d_x * dmin * sum_g m_g * bsum_g. Codes with a
            // min are unsigned, the others signed.
            constexpr bool with_min = Dec::k == gd::op::mul_sub;
            using W = unit_w<Arch, with_min, true>;
            const auto unit = [&](std::size_t at, const W& w) LOWBIT_LAMBDA_INLINE {
                for (std::size_t t = 0; t < T; ++t) is[t] += w.dot(xq[t] + at);
            };
            if constexpr (G >= U) {
                for (std::size_t g = 0; g < Dec::B / G; ++g)
                    for (std::size_t h = 0; h < G; h += U) unit(g * G + h, W(q + g * G + h, d.sc[g]));
            } else {
                for (std::size_t u = 0; u < Dec::B / U; ++u) unit(u * U, W(q + u * U, d.sc[2 * u], d.sc[2 * u + 1]));
            }
            for (std::size_t t = 0; t < T; ++t) {
                const float dx = X::template d<Arch>(xb[t]);
                acc[t] = xsimd::fma(xsimd::to_float(is[t]), fu(d.d * dx), acc[t]);
                if constexpr (with_min)
                    off[t] -= (dx * d.dmin) * static_cast<float>(mins_dot<Arch, G>(d.mn, X::bsums(xb[t])));
            }
        }
    }
    for (std::size_t t = 0; t < T; ++t) out[t] = ::lowbit::detail::simd::reduce_add(acc[t]) + off[t];
}

template <class Arch, class Dec, ggml::type A>
inline void rows_q8(const ggml_gemv_q8_job& j) noexcept {
    const std::size_t nb = j.k / Dec::B;
    constexpr std::size_t T = 4;
    float out[T];
    for (std::size_t r = 0; r < j.n; ++r) {
        const unsigned char* src = static_cast<const unsigned char*>(j.w) + r * j.w_stride;
        const float add = j.bias ? j.bias[r] : 0.0f;
        const auto put = [&](std::size_t m0, std::size_t tt) {
            for (std::size_t t = 0; t < tt; ++t) store_y(j.y, j.y_type, (m0 + t) * j.y_stride + r, out[t] + add);
        };
        std::size_t m0 = 0;
        for (; m0 + T <= j.m; m0 += T) {
            row_q8<Arch, Dec, A, T>(src, nb, j.x + m0 * j.x_stride, j.x_stride, out);
            put(m0, T);
        }
        if (m0 + 2 <= j.m) {
            row_q8<Arch, Dec, A, 2>(src, nb, j.x + m0 * j.x_stride, j.x_stride, out);
            put(m0, 2);
            m0 += 2;
        }
        if (m0 < j.m) {
            row_q8<Arch, Dec, A, 1>(src, nb, j.x + m0 * j.x_stride, j.x_stride, out);
            put(m0, 1);
        }
    }
}

/// The activation block type of a decoder's weights, as activation_type:
/// Q8_K for the 256-value blocks, Q8_1 for the 32-value ones with an offset
/// (Q4_1, Q5_1), else Q8_0.
template <class Dec>
inline constexpr ggml::type act_of = Dec::B == 256 ? ggml::type::q8_k
                                      : Dec::k == gd::op::mul_add ? ggml::type::q8_1
                                                                  : ggml::type::q8_0;

template <class Arch>
inline void run_q8(const ggml_gemv_q8_job& j) noexcept {
    // Q8_1 and Q8_K weights have no int8 path (gemv_ggml refuses them; Q8_K's
    // decoder has no integer face).
    if (j.type == ggml::type::q8_1 || j.type == ggml::type::q8_k) return;
    gd::with_decoder<Arch>(j.type, [&](auto tag) {
        using Dec = typename decltype(tag)::type;
        // (No assert that activation_type(j.type) is act_of<Dec>: a kernel
        // must not odr-use a function that is not a template on Arch. This
        // TU's copy of it, compiled under -mavx512bw, can be the one the
        // linker keeps for every caller, and it ran into SIGILL on an AVX2
        // machine in an -O1 ASan build. The tests against ggml's products
        // cover the pairing.)
        if constexpr (Dec::B == 32 || gd::int_face_v<Dec>) rows_q8<Arch, Dec, act_of<Dec>>(j);
    });
}

}  // namespace detail::ggml_gemv
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

template <class Arch>
void gemv_ggml_q8_fn::operator()(Arch, const ggml_gemv_q8_job& j) const noexcept {
    if (j.n == 0 || j.m == 0) return;
    LOWBIT_SIMD_OR_REFERENCE(Arch, gemv_ggml_q8_ref(j), detail::ggml_gemv::run_q8<Arch>(j))
}

namespace detail::ggml_gemv {

inline void gemv(const ggml::rows_view& w, const ggml_activations& x, const gemv_out& y, row_range rows,
                 std::span<const float> bias) {
    const std::string who = "gemv_ggml(" + std::string(w.type_name()) + ", int8 activations)";
    const auto at = activation_type(w.type_id());
    if (!at) LOWBIT_THROW(errc::unsupported, who + ": no int8 path for weights of ggml type " + std::string(w.type_name()));
    if (x.rows() != 0 && x.type_id() != *at)
        LOWBIT_THROW(errc::invalid_argument, who + ": the activations are " + std::string(ggml::traits(x.type_id()).name) +
                                                 " blocks; " + std::string(w.type_name()) + " weights take " +
                                                 std::string(ggml::traits(*at).name));
    const auto [r0, r1] = checked_rows(w.rows(), w.cols(), x.rows(), x.cols(), y, rows, bias, who);
    if (r0 == r1) return;
    const ggml_gemv_q8_job j{w.type_id(), w.row(r0), w.stride(), r1 - r0, w.cols(), x.data(), x.stride(), x.rows(),
                             y.col(r0), y.stride, bias.empty() ? nullptr : bias.data() + r0, y.type};
    dispatch(gemv_ggml_q8_fn{}, j);
}

}  // namespace detail::ggml_gemv

/// The int8 path: y[m][n] = sum_k x[m][k] * w[n][k] (+ bias[n]) for n in
/// `rows`, x given quantized (quantize_activations for w's type). The same
/// checks as the f32 path, plus x's activation type against w's.
inline void gemv_ggml(const ggml::rows_view& w, const ggml_activations& x, matrix_view<float> y,
                      row_range rows = all_rows, std::span<const float> bias = {}) {
    detail::ggml_gemv::gemv(w, x, detail::ggml_gemv::out_of(y, "gemv_ggml"), rows, bias);
}
/// The int8 path with y in fp16 or bf16 (as the f32 activations' form).
inline void gemv_ggml(const ggml::rows_view& w, const ggml_activations& x, matrix_view<std::uint16_t> y,
                      out_type y_type, row_range rows = all_rows, std::span<const float> bias = {}) {
    detail::ggml_gemv::gemv(w, x, detail::ggml_gemv::out_of(y, y_type, "gemv_ggml"), rows, bias);
}

/// The int8 path over all of w's rows on `threads` threads (as the f32 form).
inline void gemv_ggml_parallel(const ggml::rows_view& w, const ggml_activations& x, matrix_view<float> y,
                               unsigned threads = 0, std::span<const float> bias = {}) {
    const auto out = detail::ggml_gemv::out_of(y, "gemv_ggml");
    detail::gemv::run_parallel(w.rows(), threads, [&](row_range r) { detail::ggml_gemv::gemv(w, x, out, r, bias); });
}
inline void gemv_ggml_parallel(const ggml::rows_view& w, const ggml_activations& x, matrix_view<std::uint16_t> y,
                               out_type y_type, unsigned threads = 0, std::span<const float> bias = {}) {
    const auto out = detail::ggml_gemv::out_of(y, y_type, "gemv_ggml");
    detail::gemv::run_parallel(w.rows(), threads, [&](row_range r) { detail::ggml_gemv::gemv(w, x, out, r, bias); });
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

#define LOWBIT_KERNELS_GGML_GEMV(EXT, ARCH)                                                                  \
    EXT template void lowbit::kernels::gemv_ggml_fn::operator()<ARCH>(ARCH, const lowbit::kernels::ggml_gemv_job&)  \
        const noexcept;                                                                                          \
    EXT template void lowbit::kernels::gemv_ggml_q8_fn::operator()<ARCH>(ARCH,                                  \
                                                                         const lowbit::kernels::ggml_gemv_q8_job&) \
        const noexcept;
LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_GGML_GEMV)
