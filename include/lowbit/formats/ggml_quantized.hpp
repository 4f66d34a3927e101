#pragma once
// A matrix quantized to one ggml block type, as a quantized_base: what the
// registry's "q4_0" ... "q6_K", "iq4_xs" formats return, so that `lowbit
// compare` sets llama.cpp's types beside the others. The blocks are ggml's
// bytes (row after row), quantized and dequantized on the active ISA.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"
#include "../kernels/dequantize.hpp"
#include "../kernels/ggml_dequantize.hpp"
#include "../kernels/ggml_gemv.hpp"
#include "../kernels/ggml_quantize.hpp"
#include "../parallel.hpp"
#include "../quantizer.hpp"
#include "ggml.hpp"
#include "ggml_validate.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace ggml {

class quantized_rows final : public quantized_base {
public:
    ggml::type type{};
    std::size_t n_rows = 0, n_cols = 0;
    std::size_t row_size = 0;           ///< bytes of blocks per row
    std::vector<unsigned char> blocks;  ///< n_rows * row_size, ggml's layout

    std::size_t rows() const noexcept override { return n_rows; }
    std::size_t cols() const noexcept override { return n_cols; }
    double bits_per_weight() const noexcept override {
        return n_rows && n_cols ? 8.0 * static_cast<double>(blocks.size()) / static_cast<double>(n_rows * n_cols)
                                : 0.0;
    }
    std::size_t storage_bytes() const noexcept override { return blocks.size(); }

    /// The blocks as a view (valid while this object lives unchanged).
    rows_view view() const { return rows_view(type, blocks.data(), n_rows, n_cols, row_size); }

    using quantized_base::gemv;
    void gemv(matrix_view<const float> x, matrix_view<float> y, row_range range,
              std::span<const float> bias) const override {
        kernels::gemv_ggml(view(), x, y, range, bias);
    }

    void dequantize_to(void* out, std::size_t out_stride, kernels::out_type t,
                       row_range range = all_rows) const override {
        const auto [r0, r1] = out_rows(out, out_stride, t, range);
        if (r0 >= r1) return;
        if (t == kernels::out_type::f32) {
            kernels::dequantize_ggml({type, blocks.data() + r0 * row_size, row_size, r1 - r0, n_cols,
                                      static_cast<float*>(out) + r0 * out_stride, out_stride});
            return;
        }
        std::vector<float> row(n_cols);
        for (std::size_t r = r0; r < r1; ++r) {
            kernels::dequantize_ggml({type, blocks.data() + r * row_size, row_size, 1, n_cols, row.data(), n_cols});
            for (std::size_t c = 0; c < n_cols; ++c) kernels::detail::dq::ref_store(out, r * out_stride + c, row[c], t);
        }
    }
};

/// `w` quantized to type `t` with the same bytes as ggml (kernels::
/// quantize_ggml_rows); `importance` is ggml's importance matrix for the
/// types that read one (one weight per column) or empty; row ranges run on
/// `threads` threads (0 = all cores). Checks as every quantize entry point
/// (view, finite weights, importance); blocks that ggml_validate_row_data
/// would reject, and values beyond what the type's blocks can represent
/// (kernels' quantize_rows_from), are errors rather than a result.
inline std::unique_ptr<quantized_rows> quantize_matrix(ggml::type t, matrix_view<const float> w,
                                                       std::span<const float> importance = {}, unsigned threads = 1) {
    ::lowbit::detail::check_weights(w, importance, "quantize (ggml " + std::string(traits(t).name) + ")");
    if (!importance.empty() && importance.size() != w.cols())
        LOWBIT_THROW(errc::shape_mismatch, "ggml " + std::string(traits(t).name) +
                                               " takes one importance weight per column (" +
                                               std::to_string(w.cols()) + "), not " +
                                               std::to_string(importance.size()));
    auto q = std::make_unique<quantized_rows>();
    q->type = t;
    q->n_rows = w.rows();
    q->n_cols = w.cols();
    q->row_size = row_bytes(t, w.cols());  // throws when the columns are not whole blocks
    q->blocks.resize(q->n_rows * q->row_size);
    const float* im = importance.empty() ? nullptr : importance.data();
    parallel_for(w.rows(), threads, 16, [&](std::size_t r0, std::size_t r1) {
        // quantize_rows_from rejects values beyond the type's range and the
        // blocks ggml_validate_row_data would reject, naming rows from the first one passed.
        unsigned char* dst = q->blocks.data() + r0 * q->row_size;
        if (w.stride() == w.cols()) {
            kernels::detail::ggml_quant::quantize_rows_from(t, type::f32, w.data() + r0 * w.stride(), dst, r1 - r0,
                                                     w.cols(), im, r0);
        } else {
            for (std::size_t r = r0; r < r1; ++r)
                kernels::detail::ggml_quant::quantize_rows_from(t, type::f32, w.data() + r * w.stride(),
                                                         dst + (r - r0) * q->row_size, 1, w.cols(), im, r);
        }
    });
    return q;
}

}  // namespace ggml
LOWBIT_NAMESPACE_END
