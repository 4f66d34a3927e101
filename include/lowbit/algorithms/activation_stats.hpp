#pragma once
// Statistics of a linear layer's input activations, streamed a chunk of
// tokens at a time (tokens x in_features), as calibration algorithms use
// them: the Hessian H = 2 X^T X / n (GPTQ), per input channel the mean and
// the maximum of |x| (AWQ, SmoothQuant) and the mean of x^2 (llama.cpp's
// importance matrix, which is H's diagonal over 2).
//
// Needs BLAS (OpenBLAS) for the Hessian: link the lowbit::calibration target.

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"
#include "../parallel.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace calibration {

namespace detail {

/// errc::shape_mismatch unless x has `features` columns; errc::non_finite
/// naming the token (counted from first_token) and feature of the first
/// NaN or infinity.
inline void check_activations(matrix_view<const float> x, std::size_t features, std::size_t first_token,
                              const char* who) {
    if (x.cols() != features)
        LOWBIT_THROW(errc::shape_mismatch, std::string(who) + ": activations have " + std::to_string(x.cols()) +
                                               " features, the layer " + std::to_string(features));
    for (std::size_t r = 0; r < x.rows(); ++r)
        for (std::size_t c = 0; c < features; ++c)
            if (!std::isfinite(x(r, c)))
                LOWBIT_THROW(errc::non_finite, std::string(who) + ": activation of token " +
                                                   std::to_string(first_token + r) + ", feature " + std::to_string(c) +
                                                   " is not finite");
}

/// For its lifetime, OpenBLAS runs each call on `n` threads (the count
/// before is restored after). lowbit's calibration code sets it itself: 1
/// inside its own threads, its `threads` option around a factorisation.
/// OpenBLAS's count is one setting for the whole process.
class blas_threads {
public:
    explicit blas_threads(unsigned n) : before_(openblas_get_num_threads()) {
        openblas_set_num_threads(static_cast<int>(std::max(1u, n)));
    }
    blas_threads(const blas_threads&) = delete;
    blas_threads& operator=(const blas_threads&) = delete;
    ~blas_threads() { openblas_set_num_threads(before_); }

private:
    int before_;
};

}  // namespace detail

/// H = (2 / n) * sum over the n activation rows x of x^T x, streamed a chunk
/// of rows at a time (tokens x in_features) as the reference accumulates it:
/// H <- H * n / (n + t), then + (2 / (n + t)) * X^T X (a symmetric rank-k
/// update). GPTQ's result does not depend on H's overall scale.
class hessian {
public:
    /// `threads` (0: all cores) split each update; the result does not depend on them.
    explicit hessian(std::size_t in_features, unsigned threads = 1)
        : n_(in_features), threads_(threads), h_(in_features * in_features, 0.0f) {}

    void add(matrix_view<const float> x) {
        if (x.rows() == 0) return;
        detail::check_activations(x, n_, samples_, "hessian");
        add_checked(x);
    }

    std::size_t size() const noexcept { return n_; }
    std::size_t samples() const noexcept { return samples_; }

    /// The full symmetric matrix, row-major (n x n).
    std::vector<float> matrix() const {
        std::vector<float> h = h_;
        // The lower triangle mirrored a tile at a time (a column walk misses
        // the cache at every value: 105 of the 300 ms of a 4096 Hessian).
        constexpr std::size_t tile = 64;
        for (std::size_t i0 = 0; i0 < n_; i0 += tile)
            for (std::size_t j0 = 0; j0 <= i0; j0 += tile)
                for (std::size_t i = i0; i < std::min(n_, i0 + tile); ++i)
                    for (std::size_t j = j0; j < std::min(i, j0 + tile); ++j) h[i * n_ + j] = h[j * n_ + i];
        return h;
    }

private:
    friend class activation_stats;
    // The upper triangle in fixed panels of rows, each H[a:b, a:n] by one
    // matrix product: the same products whatever the threads, so the same
    // sums (a symmetric rank-k update split by BLAS's own threads is not).
    // Panels are dealt to threads from both ends, so each gets about the
    // same share of the triangle.
    void add_checked(matrix_view<const float> x) {
        const std::size_t total = samples_ + x.rows();
        const float beta = static_cast<float>(static_cast<double>(samples_) / static_cast<double>(total));
        const float alpha = static_cast<float>(2.0 / static_cast<double>(total));
        constexpr std::size_t panel = 256;
        const std::size_t panels = (n_ + panel - 1) / panel;
        const detail::blas_threads one(1);
        parallel_for(panels, threads_, 1, [&](std::size_t p0, std::size_t p1) {
            for (std::size_t i = p0; i < p1; ++i) {
                const std::size_t p = i % 2 ? panels - 1 - i / 2 : i / 2;
                const std::size_t a = p * panel, rows = std::min(panel, n_ - a);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(n_ - a),
                            static_cast<int>(x.rows()), alpha, x.data() + a, static_cast<int>(x.stride()),
                            x.data() + a, static_cast<int>(x.stride()), beta, &h_[a * n_ + a], static_cast<int>(n_));
            }
        });
        samples_ = total;
    }

    std::size_t n_;
    unsigned threads_;
    std::size_t samples_ = 0;
    std::vector<float> h_;  ///< upper triangle
};

/// Per-input-channel statistics of a layer's activations, and optionally its
/// Hessian (in_features^2 floats: leave it out where only AWQ's or an
/// importance matrix's statistics are wanted). Sums are kept in double, so
/// the means do not depend on how the tokens were split into chunks beyond
/// rounding of the last bit.
class activation_stats {
public:
    explicit activation_stats(std::size_t in_features, bool with_hessian = true, unsigned threads = 1)
        : n_(in_features), sum_abs_(in_features, 0.0), sum_sq_(in_features, 0.0), max_abs_(in_features, 0.0f) {
        if (with_hessian) h_.emplace_back(in_features, threads);
    }

    /// A chunk of tokens (tokens x in_features); nothing is accumulated when
    /// it has a wrong width or a non-finite value.
    void add(matrix_view<const float> x) {
        if (x.rows() == 0) return;
        detail::check_activations(x, n_, tokens_, "activation_stats");
        for (std::size_t r = 0; r < x.rows(); ++r)
            for (std::size_t c = 0; c < n_; ++c) {
                const float a = std::fabs(x(r, c));
                sum_abs_[c] += a;
                sum_sq_[c] += static_cast<double>(a) * a;
                max_abs_[c] = std::max(max_abs_[c], a);
            }
        if (!h_.empty()) h_.front().add_checked(x);
        tokens_ += x.rows();
    }

    std::size_t size() const noexcept { return n_; }
    std::size_t tokens() const noexcept { return tokens_; }
    bool has_hessian() const noexcept { return !h_.empty(); }
    /// errc::invalid_argument when made without one.
    const calibration::hessian& hessian() const {
        if (h_.empty()) LOWBIT_THROW(errc::invalid_argument, "activation_stats: made without the Hessian");
        return h_.front();
    }

    std::vector<float> mean_abs() const { return mean(sum_abs_); }
    std::vector<float> mean_sq() const { return mean(sum_sq_); }
    /// The sums of x^2 themselves (an importance matrix's in_sum2).
    std::vector<float> sum_sq() const { return std::vector<float>(sum_sq_.begin(), sum_sq_.end()); }
    const std::vector<float>& max_abs() const noexcept { return max_abs_; }

private:
    std::vector<float> mean(const std::vector<double>& s) const {
        std::vector<float> m(n_, 0.0f);
        if (tokens_)
            for (std::size_t c = 0; c < n_; ++c) m[c] = static_cast<float>(s[c] / static_cast<double>(tokens_));
        return m;
    }

    std::size_t n_, tokens_ = 0;
    std::vector<double> sum_abs_, sum_sq_;
    std::vector<float> max_abs_;
    std::vector<calibration::hessian> h_;  ///< empty, or the one Hessian
};

}  // namespace calibration
LOWBIT_NAMESPACE_END
