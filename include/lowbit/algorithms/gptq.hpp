#pragma once
// GPTQ (Frantar et al., "GPTQ: Accurate Post-Training Quantization for
// Generative Pre-trained Transformers", 2022) as the reference implementation
// (IST-DASLab/gptq, gptq.py and quant.py) defines it: columns quantized one at
// a time in a fixed order, each one's rounding error spread over the columns
// not yet quantized through the upper Cholesky factor of the damped inverse
// Hessian, lazily in blocks (a rank-1 update inside the block, one matrix
// product for the columns after it).
//
// Needs BLAS and LAPACK (OpenBLAS): link the lowbit::calibration target.
// Kernels and formats never include this header.

#include <cblas.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <numeric>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/finite.hpp"
#include "../core/storage.hpp"
#include "../core/view.hpp"
#include "../detail/large_buffer.hpp"
#include "../parallel.hpp"
#include "activation_stats.hpp"

extern "C" {
// LAPACK's Cholesky factorisation and triangular inverse (Fortran ABI).
void spotrf_(const char* uplo, const int* n, float* a, const int* lda, int* info);
void strtri_(const char* uplo, const char* diag, const int* n, float* a, const int* lda, int* info);
}

LOWBIT_NAMESPACE_BEGIN
namespace calibration {

struct gptq_options {
    int bits = 4;                  ///< 2..8
    std::size_t group_size = 128;  ///< columns a group; 0: one group per output row
    bool sym = true;               ///< zero fixed at 2^(bits-1) (AutoGPTQ's default)
    bool act_order = false;        ///< columns by decreasing Hessian diagonal (desc_act)
    bool static_groups = false;    ///< group params fitted before any update, per group of original columns
    float percdamp = 0.01f;        ///< damping: percdamp * mean(diag(H)) added to the diagonal
    std::size_t block_size = 128;  ///< columns a lazy-update block
    unsigned threads = 1;          ///< output rows split across threads (0: all cores); results do not depend on it
    /// The reference's MSE option: each group's range shrunk by p = 1 - i / mse_grid
    /// (i < mse_maxshrink * mse_grid), keeping the p with the least sum of |q - x|^mse_norm.
    bool mse = false;
    float mse_norm = 2.4f;
    int mse_grid = 100;
    float mse_maxshrink = 0.8f;
    /// Where H + damping has no Cholesky factor: round to nearest with the
    /// same group params and say so in gptq_result::note (else an error).
    bool rtn_fallback = false;
    /// Group params given rather than fitted (rows x groups, row-major; zero
    /// in code units 0 .. 2^bits - 1, an integer), used for each column's
    /// original group as static_groups uses its own: e.g. compressed-tensors'
    /// rule on the weights as given, which llm-compressor's GPTQ quantizes
    /// with. Empty: fitted by the reference's rule.
    std::span<const float> given_scale, given_zero;
    /// The code as compressed-tensors' fake_quantize computes it,
    /// round(clamp(x / scale + zero')) with zero' the signed zero point,
    /// rather than the reference's clamp(round(x / scale) + zero): they part
    /// only where x / scale + zero' falls on a half.
    bool shift_then_round = false;
    /// Each dequantized value rounded to this type before its error moves
    /// on (compressed-tensors dequantizes in the scale's dtype).
    float_storage dequant_in = float_storage::f32;
};

/// GPTQ's codes and params. Column c of row r stands for
/// scale[r * groups + g_idx[c]] * (code - zero[...]).
struct gptq_result {
    std::size_t rows = 0, cols = 0, groups = 0;
    int bits = 0;
    std::vector<std::uint8_t> codes;  ///< rows x cols, original column order
    std::vector<float> scale, zero;   ///< rows x groups
    std::vector<std::int32_t> g_idx;  ///< the group of each original column
    std::vector<std::int32_t> perm;   ///< act_order: the original column quantized j-th; else empty
    double loss = 0.0;                ///< sum of (w - q)^2 / Hinv_jj^2 / 2, as the reference reports
    std::string note;                 ///< why GPTQ fell back to round-to-nearest (rtn_fallback); empty otherwise

    float value(std::size_t r, std::size_t c) const noexcept {
        const std::size_t g = r * groups + static_cast<std::size_t>(g_idx[c]);
        return scale[g] * (static_cast<float>(codes[r * cols + c]) - zero[g]);
    }
};

namespace detail::gptq {

/// clamp(round(x / scale) + zero, 0, maxq), rounding half to even (torch.round).
inline float code(float x, float scale, float zero, int maxq) noexcept {
    return std::clamp(std::nearbyint(x / scale) + zero, 0.0f, static_cast<float>(maxq));
}

/// compressed-tensors' order: half = (maxq + 1) / 2, the signed zero point
/// zero - half added before the clamp and the round, the signed code
/// shifted back.
inline float code_shift_first(float x, float scale, float zero, int maxq) noexcept {
    const float half = static_cast<float>((maxq + 1) / 2);
    return std::nearbyint(std::clamp(x / scale + (zero - half), -half, half - 1.0f)) + half;
}

/// The reference quantizer's find_params (weight=True) on n values of one row
/// at x (stride 1): range including 0, symmetric or not, all-zero -> [-1, 1];
/// with o.mse, the shrink of the range with the least sum of |q - x|^norm.
inline void fit(const float* x, std::size_t n, int maxq, const gptq_options& o, float& scale, float& zero) noexcept {
    const bool sym = o.sym;
    float xmin = 0.0f, xmax = 0.0f;
    for (std::size_t i = 0; i < n; ++i) {
        xmin = std::min(xmin, x[i]);
        xmax = std::max(xmax, x[i]);
    }
    if (sym) {
        xmax = std::max(std::fabs(xmin), xmax);
        if (xmin < 0.0f) xmin = -xmax;
    }
    if (xmin == 0.0f && xmax == 0.0f) {
        xmin = -1.0f;
        xmax = 1.0f;
    }
    scale = (xmax - xmin) / static_cast<float>(maxq);
    zero = sym ? static_cast<float>(maxq + 1) / 2.0f : std::nearbyint(-xmin / scale);
    if (!o.mse) return;
    double best = INFINITY;
    const int steps = static_cast<int>(o.mse_maxshrink * static_cast<float>(o.mse_grid));
    for (int i = 0; i < steps; ++i) {
        const float p = static_cast<float>(1.0 - static_cast<double>(i) / o.mse_grid);
        const float lo = p * xmin, hi = p * xmax;
        const float s1 = (hi - lo) / static_cast<float>(maxq);
        const float z1 = sym ? static_cast<float>(maxq + 1) / 2.0f : std::nearbyint(-lo / s1);
        double err = 0.0;
        for (std::size_t k = 0; k < n; ++k) {
            const float d = s1 * (code(x[k], s1, z1, maxq) - z1) - x[k];
            err += std::pow(static_cast<double>(std::fabs(d)), static_cast<double>(o.mse_norm));
        }
        if (err < best) {
            best = err;
            scale = s1;
            zero = z1;
        }
    }
}

/// V with H = V V^T, upper triangular, in place (row-major); false where H
/// is not positive definite. The reference spreads each column's scaled
/// error over the later columns through U, the upper Cholesky factor of
/// H^-1, taken as cholesky(cholesky_inverse(cholesky(H)), upper): U is V^-1,
/// and what GPTQ needs of it follows from V alone (see gptq()). With J the
/// reversal of rows and columns, the Cholesky factor L' of J H J gives
/// V = J L' J. LAPACK works column-major: a symmetric matrix is its own
/// transpose, and a triangle it stores as upper (lower) is, read row-major,
/// the lower (upper) one.
/// The lower Cholesky factor L of the symmetric positive definite n x n
/// row-major matrix a (A = L L^T) into a's lower triangle (the rest is left
/// as it was), or false where A is not positive definite. Right-looking in
/// fixed tiles: each step factors a diagonal tile (LAPACK), solves the tiles
/// below it and updates the trailing ones, the tiles of a step dealt to
/// `threads` (BLAS on one thread). Each tile sees the same operations
/// whatever the threads, so L does (OpenBLAS's own spotrf on two threads
/// does not). 4096^2, AVX-512 Xeon 2.6 GHz: 241-252 ms on one thread (as
/// spotrf), 140-147 ms on two.
inline bool cholesky_lower(float* a, std::size_t n, unsigned threads) {
    constexpr std::size_t tile = 256;
    const std::size_t nt = (n + tile - 1) / tile;
    const int ld = static_cast<int>(n);
    const auto at = [&](std::size_t i, std::size_t j) { return a + (i * n + j) * tile; };
    const auto size = [&](std::size_t i) { return static_cast<int>(std::min(tile, n - i * tile)); };
    std::vector<std::pair<std::size_t, std::size_t>> trailing;
    for (std::size_t k = 0; k < nt; ++k) {
        int info = 0, bk = size(k);
        spotrf_("U", &bk, at(k, k), &ld, &info);  // column-major upper: the row-major lower
        if (info != 0) return false;
        parallel_for(nt - k - 1, threads, 1, [&](std::size_t i0, std::size_t i1) {
            for (std::size_t i = k + 1 + i0; i < k + 1 + i1; ++i)  // L_ik = A_ik L_kk^-T
                cblas_strsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, size(i), bk, 1.0f,
                            at(k, k), ld, at(i, k), ld);
        });
        trailing.clear();
        for (std::size_t i = k + 1; i < nt; ++i)
            for (std::size_t j = k + 1; j <= i; ++j) trailing.emplace_back(i, j);
        parallel_for(trailing.size(), threads, 1, [&](std::size_t t0, std::size_t t1) {
            for (std::size_t t = t0; t < t1; ++t) {  // A_ij -= L_ik L_jk^T
                const auto [i, j] = trailing[t];
                if (i == j)
                    cblas_ssyrk(CblasRowMajor, CblasLower, CblasNoTrans, size(i), bk, -1.0f, at(i, k), ld, 1.0f,
                                at(i, i), ld);
                else
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, size(i), size(j), bk, -1.0f, at(i, k), ld,
                                at(j, k), ld, 1.0f, at(i, j), ld);
            }
        });
    }
    return true;
}

/// GPTQ's working copies of the weights and the Hessian (written in full
/// before they are read).
using buffer = std::vector<float, ::lowbit::detail::uninit_allocator<float>>;

/// rows x cols floats at src (rows `stride` apart) into dst (dense), rows
/// split across threads; returns the row-major index of the first value
/// that is not finite, or rows * cols.
inline std::size_t copy_finite(const float* src, std::size_t stride, std::size_t rows, std::size_t cols, float* dst,
                               unsigned threads) {
    std::atomic<std::size_t> first{rows * cols};
    parallel_for(rows, threads, 16, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r) {
            const float* x = src + r * stride;
            if (const std::size_t c = first_non_finite(float_storage::f32, x, cols); c < cols) {
                std::size_t at = first.load();
                while (r * cols + c < at && !first.compare_exchange_weak(at, r * cols + c)) {
                }
                return;
            }
            std::copy_n(x, cols, dst + r * cols);
        }
    });
    return first.load();
}

/// (J H J is H's n^2 values in reverse order, so both reversals are in place;
/// where H is not positive definite, h is left undefined.)
inline bool reverse_cholesky(buffer& h, std::size_t n, unsigned threads) {
    std::reverse(h.begin(), h.end());
    if (!cholesky_lower(h.data(), n, threads)) return false;  // L', J H J = L' L'^T
    std::reverse(h.begin(), h.end());
    for (std::size_t i = 0; i < n; ++i) std::fill_n(h.begin() + static_cast<std::ptrdiff_t>(i * n), i, 0.0f);
    return true;
}

/// The inverse of the upper triangular n x n block of `v` (row stride ld)
/// at its diagonal, row-major into `out`.
inline void triangle_inverse(const float* v, std::size_t ld, std::size_t n, std::vector<float>& out) {
    out.assign(n * n, 0.0f);
    for (std::size_t i = 0; i < n; ++i)
        for (std::size_t j = i; j < n; ++j) out[i * n + j] = v[i * ld + j];
    const int ni = static_cast<int>(n);
    int info = 0;
    strtri_("L", "N", &ni, out.data(), &ni, &info);  // row-major upper
}

}  // namespace detail::gptq

/// GPTQ on the weights w (out_features x in_features) with the Hessian h of
/// the layer's inputs (in_features x in_features, row-major, symmetric).
inline gptq_result gptq(matrix_view<const float> w, std::span<const float> h, const gptq_options& o = {}) {
    const std::string who = "gptq";
    const std::size_t R = w.rows(), C = w.cols();
    if (o.bits < 2 || o.bits > 8)
        LOWBIT_THROW(errc::invalid_argument, who + ": bits " + std::to_string(o.bits) + " (2..8)");
    if (o.block_size == 0) LOWBIT_THROW(errc::invalid_argument, who + ": block_size 0");
    if (h.size() != C * C)
        LOWBIT_THROW(errc::shape_mismatch, who + ": the Hessian has " + std::to_string(h.size()) + " values for " +
                                               std::to_string(C) + " input features (" + std::to_string(C * C) +
                                               " expected)");
    // The weights and the Hessian, which GPTQ works on in place, copied and
    // checked on the way, rows across threads.
    detail::gptq::buffer W(R * C), H(C * C);
    if (const std::size_t i = detail::gptq::copy_finite(w.data(), w.stride(), R, C, W.data(), o.threads);
        i < R * C)
        LOWBIT_THROW(errc::non_finite, who + ": weight at row " + std::to_string(i / C) + ", column " +
                                           std::to_string(i % C) + " is not finite");
    if (const std::size_t i = detail::gptq::copy_finite(h.data(), C, C, C, H.data(), o.threads); i < C * C)
        LOWBIT_THROW(errc::non_finite, who + ": Hessian entry (" + std::to_string(i / C) + ", " +
                                           std::to_string(i % C) + ") is not finite");
    const int maxq = (1 << o.bits) - 1;
    // A group as wide as the row is still fitted where it starts, as the
    // reference does (after dead inputs are zeroed); 0 fits each row first.
    const std::size_t gs = o.group_size == 0 ? 0 : std::min(o.group_size, C);
    const bool given = !o.given_scale.empty() || !o.given_zero.empty();
    const bool static_groups = o.static_groups || given;
    const std::size_t n_groups = gs ? (C + gs - 1) / gs : 1;
    if (given) {
        if (o.given_scale.size() != R * n_groups || o.given_zero.size() != R * n_groups)
            LOWBIT_THROW(errc::shape_mismatch, who + ": " + std::to_string(o.given_scale.size()) + " scales and " +
                                                   std::to_string(o.given_zero.size()) + " zeros given for " +
                                                   std::to_string(R) + " rows of " + std::to_string(n_groups) +
                                                   " groups");
        for (std::size_t i = 0; i < o.given_scale.size(); ++i)
            if (!(o.given_scale[i] > 0.0f) || !std::isfinite(o.given_scale[i]) ||
                !(o.given_zero[i] >= 0.0f && o.given_zero[i] <= static_cast<float>(maxq)) ||
                o.given_zero[i] != std::nearbyint(o.given_zero[i]))
                LOWBIT_THROW(errc::invalid_argument, who + ": given group " + std::to_string(i % n_groups) +
                                                         " of row " + std::to_string(i / n_groups) + " has scale " +
                                                         std::to_string(o.given_scale[i]) + ", zero " +
                                                         std::to_string(o.given_zero[i]) +
                                                         " (a positive finite scale and an integer zero in 0.." +
                                                         std::to_string(maxq) + ")");
    }
    // The column loop below, specialised for the rounding order and the
    // dequantized values' type (each call inlined).
    const auto with_rule = [&](auto&& body) {
        const auto ref = [maxq](float x, float s, float z) { return detail::gptq::code(x, s, z, maxq); };
        const auto shift = [maxq](float x, float s, float z) {
            return detail::gptq::code_shift_first(x, s, z, maxq);
        };
        const auto as = [&](auto code) {
            switch (o.dequant_in) {
            case float_storage::bf16: return body(code, [](float v) { return stored_as(float_storage::bf16, v); });
            case float_storage::f16: return body(code, [](float v) { return stored_as(float_storage::f16, v); });
            default: return body(code, [](float v) { return v; });
            }
        };
        return o.shift_then_round ? as(shift) : as(ref);
    };

    gptq_result out;
    out.rows = R;
    out.cols = C;
    out.bits = o.bits;
    out.groups = n_groups;
    out.codes.assign(R * C, 0);
    out.scale.assign(R * out.groups, 0.0f);
    out.zero.assign(R * out.groups, 0.0f);
    if (given) {
        std::copy(o.given_scale.begin(), o.given_scale.end(), out.scale.begin());
        std::copy(o.given_zero.begin(), o.given_zero.end(), out.zero.begin());
    }
    out.g_idx.assign(C, 0);
    if (R == 0 || C == 0) return out;

    // Per output row: params of the whole row, from the weights as given.
    if (!gs && !given)
        for (std::size_t r = 0; r < R; ++r) detail::gptq::fit(&W[r * C], C, maxq, o, out.scale[r], out.zero[r]);
    // Dead inputs (zero diagonal): their weights do not matter; made 0.
    for (std::size_t c = 0; c < C; ++c)
        if (H[c * C + c] == 0.0f) {
            H[c * C + c] = 1.0f;
            for (std::size_t r = 0; r < R; ++r) W[r * C + c] = 0.0f;
        }
    if (gs && o.static_groups && !given)
        for (std::size_t g = 0; g < out.groups; ++g)
            for (std::size_t r = 0; r < R; ++r)
                detail::gptq::fit(&W[r * C + g * gs], std::min(gs, C - g * gs), maxq, o, out.scale[r * out.groups + g],
                                  out.zero[r * out.groups + g]);
    // Act-order: decreasing diagonal (ties by column, a stable order).
    std::vector<std::int32_t> perm(C);
    std::iota(perm.begin(), perm.end(), 0);
    if (o.act_order) {
        std::stable_sort(perm.begin(), perm.end(), [&](std::int32_t a, std::int32_t b) {
            return H[static_cast<std::size_t>(a) * C + static_cast<std::size_t>(a)] >
                   H[static_cast<std::size_t>(b) * C + static_cast<std::size_t>(b)];
        });
        detail::gptq::buffer t(W.size());
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t j = 0; j < C; ++j) t[r * C + j] = W[r * C + static_cast<std::size_t>(perm[j])];
        W.swap(t);
        t.resize(H.size());
        for (std::size_t i = 0; i < C; ++i)
            for (std::size_t j = 0; j < C; ++j)
                t[i * C + j] = H[static_cast<std::size_t>(perm[i]) * C + static_cast<std::size_t>(perm[j])];
        H.swap(t);
    }
    // Damping, then the factor the errors move through.
    double diag = 0.0;
    for (std::size_t c = 0; c < C; ++c) diag += H[c * C + c];
    const float damp = o.percdamp * static_cast<float>(diag / static_cast<double>(C));
    for (std::size_t c = 0; c < C; ++c) H[c * C + c] += damp;
    // BLAS on one thread throughout: OpenBLAS's factorisation on two threads
    // does not give the same bits as on one, and the row chunks are lowbit's
    // threads' work.
    const detail::blas_threads one(1);
    if (!detail::gptq::reverse_cholesky(H, C, o.threads)) {
        const std::string why = "the Hessian is not positive definite after damping (percdamp " +
                                std::to_string(o.percdamp) + ")";
        if (!o.rtn_fallback)
            LOWBIT_THROW(errc::invalid_argument, who + ": " + why + "; raise percdamp or add calibration data");
        // V = I: no error moves to other columns, which is round-to-nearest.
        out.note = why + ": rounded to nearest instead";
        std::fill(H.begin(), H.end(), 0.0f);
        for (std::size_t c = 0; c < C; ++c) H[c * C + c] = 1.0f;
    }
    const detail::gptq::buffer& V = H;

    // The reference, per block of columns [i1, i2): the block as it stands
    // (W lazily updated by every earlier block), then column by column: its
    // code, its scaled error e_j = (w_j - q_j) / U_jj, and the block's later
    // columns less e_j U_jk; after the block, every later column less
    // E U[i1:i2, i2:]. In terms of V (U = V^-1) the same values are: with
    // G = W - Q the errors of the columns before i1 over the weights as
    // given, the block starts as W + G V[:i1, i1:] T^-1, T = V[i1:, i1:]
    // (only T's leading block matters for the block's columns, and the
    // inverse of an upper triangle's leading block is its inverse's leading
    // block), and inside the block U's diagonal block is T's leading block
    // inverted. So one product and one triangular solve per block replace the
    // inverse of the whole of V. The diagonal blocks' inverses, once:
    const std::size_t n_blocks = (C + o.block_size - 1) / o.block_size;
    std::vector<std::vector<float>> ublock(n_blocks);
    for (std::size_t b = 0; b < n_blocks; ++b) {
        const std::size_t i1 = b * o.block_size, nb = std::min(C, i1 + o.block_size) - i1;
        detail::gptq::triangle_inverse(&V[i1 * C + i1], C, nb, ublock[b]);
    }

    // Each output row's columns are quantized in turn and its errors spread
    // along it alone: rows are independent given V. Chunks of rows at a time
    // keep a block of them in cache (block columns x chunk rows); threads
    // take row ranges. In a chunk, W's columns before the block hold G.
    // The codes in the order the columns are quantized (act-order's own
    // buffer, else the output's).
    std::vector<std::uint8_t> permuted(o.act_order ? R * C : 0);
    std::uint8_t* const q = o.act_order ? permuted.data() : out.codes.data();
    std::vector<double> losses(R, 0.0);
    constexpr std::size_t chunk_rows = 512;
    constexpr std::size_t sub = 16;  // columns of a block's sub-block
    const auto rows = [&](std::size_t ra, std::size_t rb) {
        const std::size_t M = rb - ra;
        float* const Wc = &W[ra * C];  // the chunk's rows
        // blk: the chunk's rows of columns [i1, end), row-major (stride n).
        // eb: the scaled errors of a sub-block's columns (M x sub).
        std::vector<float> blk, start, s(M), z(M), eb(M * sub), deqs(M * o.block_size);
        std::vector<std::uint8_t> qb(M * o.block_size);  // the block's codes
        std::vector<double> loss(M, 0.0);
        for (std::size_t i1 = 0, b = 0; i1 < C; i1 += o.block_size, ++b) {
            const std::size_t i2 = std::min(C, i1 + o.block_size), nb = i2 - i1;
            // A group starting in the block may reach past it; the reference
            // fits it on its columns as they stand when the block starts.
            std::size_t end = i2;
            bool mid_start = false;  // a group starting after the block's first column
            if (gs && !static_groups)
                for (std::size_t col = i1; col < i2; ++col)
                    if (col % gs == 0) {
                        end = std::max(end, std::min(C, col + gs));
                        mid_start = mid_start || col > i1;
                    }
            const std::size_t n = end - i1;
            const int ni = static_cast<int>(n), Mi = static_cast<int>(M), Ci = static_cast<int>(C);
            // The block as it starts: W + G V[:i1, i1:end] T^-1.
            blk.assign(M * n, 0.0f);
            if (i1 > 0) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Mi, ni, static_cast<int>(i1), 1.0f, Wc, Ci,
                            &V[i1], Ci, 0.0f, blk.data(), ni);
                cblas_strsm(CblasRowMajor, CblasRight, CblasUpper, CblasNoTrans, CblasNonUnit, Mi, ni, 1.0f,
                            &V[i1 * C + i1], Ci, blk.data(), ni);
            }
            for (std::size_t r = 0; r < M; ++r)
                for (std::size_t j = 0; j < n; ++j) blk[r * n + j] += Wc[r * C + i1 + j];
            // The block's own updates change blk; a group starting inside
            // the block is fitted on a copy from before them.
            if (mid_start) start = blk;
            const std::vector<float>& fit_from = mid_start ? start : blk;
            const std::vector<float>& Ub = ublock[b];
            for (std::size_t col = i1; col < i2; ++col) {
                const std::size_t j = col - i1;
                if (gs) {
                    // The group's params: refitted where a group starts (from
                    // its columns as they stood when the block began), or the
                    // static ones of the column's original group.
                    const std::size_t g = static_groups ? static_cast<std::size_t>(perm[col]) / gs : col / gs;
                    const std::size_t len = std::min(gs, C - col);
                    for (std::size_t r = 0; r < M; ++r) {
                        const std::size_t at = (ra + r) * out.groups + g;
                        if (!static_groups && col % gs == 0)
                            detail::gptq::fit(&fit_from[r * n + j], len, maxq, o, out.scale[at], out.zero[at]);
                        s[r] = out.scale[at];
                        z[r] = out.zero[at];
                    }
                } else if (col == 0) {
                    for (std::size_t r = 0; r < M; ++r) {
                        s[r] = out.scale[ra + r];
                        z[r] = out.zero[ra + r];
                    }
                }
                const float d = Ub[j * nb + j];
                const double inv_d2 = 1.0 / (static_cast<double>(d) * static_cast<double>(d)) / 2.0;
                const std::size_t j0 = j / sub * sub, j1 = std::min(nb, j0 + sub), jj = j - j0;
                with_rule([&](const auto& code, const auto& store) {
                    for (std::size_t r = 0; r < M; ++r) {
                        const float w = blk[r * n + j];
                        const float c = code(w, s[r], z[r]);
                        qb[r * nb + j] = static_cast<std::uint8_t>(c);
                        const float deq = store(s[r] * (c - z[r]));
                        const double err = static_cast<double>(w - deq);
                        loss[r] += err * err * inv_d2;
                        eb[r * sub + jj] = (w - deq) / d;  // the scaled error, for the block's later columns
                        deqs[r * nb + j] = deq;
                    }
                });
                // Into the block's later columns: w_k -= e U_jk, as a rank-1
                // update within the sub-block, and a sub-block's errors at
                // once into the columns after it (one product in place of
                // memory-bound updates; 4096^2, 2048 tokens, AVX-512 Xeon:
                // 1 041-1 053 -> 1 001-1 005 ms on two threads, sub-blocks
                // of 8 and 16 alike, 32 and 64 slower).
                if (j + 1 < j1)
                    cblas_sger(CblasRowMajor, Mi, static_cast<int>(j1 - j - 1), -1.0f, &eb[jj], static_cast<int>(sub),
                               &Ub[j * nb + j + 1], 1, &blk[j + 1], ni);
                if (j + 1 == j1 && j1 < nb)
                    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, Mi, static_cast<int>(nb - j1),
                                static_cast<int>(j1 - j0), -1.0f, eb.data(), static_cast<int>(sub), &Ub[j0 * nb + j1],
                                static_cast<int>(nb), 1.0f, &blk[j1], ni);
            }
            // G, over the weights as given, for later blocks: a row's block
            // at a time (a column of Wc is one cache line per row).
            // The codes likewise.
            for (std::size_t r = 0; r < M; ++r) {
                for (std::size_t j = 0; j < nb; ++j) Wc[r * C + i1 + j] -= deqs[r * nb + j];
                std::copy_n(&qb[r * nb], nb, &q[(ra + r) * C + i1]);
            }
        }
        for (std::size_t r = 0; r < M; ++r) losses[ra + r] = loss[r];
    };
    // Chunks at fixed rows, whatever the threads: the same products, the same sums.
    parallel_for((R + chunk_rows - 1) / chunk_rows, o.threads, 1, [&](std::size_t c0, std::size_t c1) {
        for (std::size_t c = c0; c < c1; ++c) rows(c * chunk_rows, std::min(R, (c + 1) * chunk_rows));
    });
    if (gs && !static_groups)
        for (std::size_t col = 0; col < C; ++col)
            out.g_idx[static_cast<std::size_t>(perm[col])] = static_cast<std::int32_t>(col / gs);
    else if (gs)
        for (std::size_t c = 0; c < C; ++c) out.g_idx[c] = static_cast<std::int32_t>(c / gs);
    double loss = 0.0;
    for (double l : losses) loss += l;
    if (o.act_order)
        for (std::size_t r = 0; r < R; ++r)
            for (std::size_t j = 0; j < C; ++j) out.codes[r * C + static_cast<std::size_t>(perm[j])] = q[r * C + j];
    if (o.act_order) out.perm = std::move(perm);
    out.loss = loss;
    return out;
}

}  // namespace calibration
LOWBIT_NAMESPACE_END
