#pragma once
// Hadamard rotation as a pre-transform (QuaRot, SpinQuant's R3/R4, QuIP#'s
// incoherence processing): an orthonormal T (kernels/hadamard.hpp: QuaRot's
// matmul_hadU for n = 2^k, 12 * 2^k, 20 * 2^k or 28 * 2^k) spreads a few
// large input channels over all of them, so a weight row or an activation
// has no outliers left for the quantizer to lose. Rotating a layer's weight
// rows and its inputs alike keeps its output:
//   y = W x = (W T^T)(T x),
// and row r of W T^T is T applied to row r of W. So rotate_rows(W) and
// rotate_rows(X) (X's rows the tokens) give the pair to quantize and feed;
// rotate_rows(., true) (T^T) undoes either. Composes with any quantizer
// and algorithm (GPTQ on the rotated Hessian T H T^T: rotate the
// activations before collecting it).
//
// Header-only, no BLAS; the rotation runs on the dispatched kernels.

#include <cstddef>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"
#include "../kernels/dispatch.hpp"
#include "../kernels/hadamard.hpp"
#include "../parallel.hpp"

LOWBIT_NAMESPACE_BEGIN

/// Whether rows of n values can be rotated: n = 2^k, 12 * 2^k, 20 * 2^k or
/// 28 * 2^k.
constexpr bool hadamard_size_ok(std::size_t n) noexcept { return hadamard_factor(n) != 0; }

/// Each row of m rotated in place by T (by T^T, the inverse, with
/// `transpose`); rows split across `threads` (0: all cores), the result the
/// same for any count. errc::invalid_argument for a row length that is not
/// a supported size.
inline void rotate_rows(matrix_view<float> m, bool transpose = false, unsigned threads = 1) {
    const std::size_t n = m.cols();
    if (!hadamard_size_ok(n))
        LOWBIT_THROW(errc::invalid_argument,
                     "rotate_rows: rows of " + std::to_string(n) +
                         " values; the Hadamard rotation takes 2^k, 12 * 2^k, 20 * 2^k or 28 * 2^k");
    parallel_for(m.rows(), threads, 8, [&](std::size_t r0, std::size_t r1) {
        std::vector<float> scratch(hadamard_factor(n) > 1 ? n : 0);
        kernels::hadamard_job j;
        j.x = m.data() + r0 * m.stride();
        j.rows = r1 - r0;
        j.n = n;
        j.ld = m.stride();
        j.transpose = transpose;
        j.scratch = scratch.data();
        kernels::dispatch(kernels::hadamard_fn{}, j);
    });
}

/// T as a dense n x n matrix (row-major, rotated x = T x): for checks and
/// for engines that fold the rotation into another matrix.
inline std::vector<float> hadamard_matrix(std::size_t n, bool transpose = false) {
    if (!hadamard_size_ok(n))
        LOWBIT_THROW(errc::invalid_argument, "hadamard_matrix: " + std::to_string(n) +
                                                 " is not 2^k, 12 * 2^k, 20 * 2^k or 28 * 2^k");
    // Rows of the identity rotated are the columns of T (T^T's rows).
    std::vector<float> e(n * n, 0.0f);
    for (std::size_t i = 0; i < n; ++i) e[i * n + i] = 1.0f;
    rotate_rows(matrix_view<float>(e.data(), n, n), !transpose);
    // rotate_rows(I, !t) holds rows (T^(!t)) e_i = column i of T^(!t) = row i of T^t.
    return e;
}

LOWBIT_NAMESPACE_END
