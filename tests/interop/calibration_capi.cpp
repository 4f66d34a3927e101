// C entry points to lowbit's calibration algorithms (lowbit::calibration,
// with BLAS) for tests/interop/test_awq.py, loaded with ctypes beside
// AutoAWQ's own functions. Each returns 1 on success and 0 after printing
// the error. Matrices are row-major float32.
#include <lowbit/algorithms/awq.hpp>

#include "capi_guard.hpp"

#include <algorithm>
#include <cstdint>

namespace {

using lowbit::matrix_view;
using lowbit_capi::guarded;

lowbit::calibration::awq_options options(std::int64_t group, int duo_scaling) {
    lowbit::calibration::awq_options o;
    o.group_size = static_cast<std::size_t>(group);
    o.duo_scaling = duo_scaling != 0;
    return o;
}

matrix_view<const float> view(const float* p, std::int64_t rows, std::int64_t cols) {
    return {p, static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)};
}

}  // namespace

extern "C" {

// AWQ's scale search for one layer w (rows x cols) on activations x (tokens
// x cols): scales gets cols floats, losses n_grid (20) doubles, *ratio the
// chosen ratio.
int lowbit_awq_search_scales(const float* w, std::int64_t rows, std::int64_t cols, const float* x, std::int64_t tokens,
                             std::int64_t group, int duo_scaling, float* scales, double* losses, float* ratio) {
    return guarded([&] {
        const matrix_view<const float> layers[1] = {view(w, rows, cols)};
        const auto r = lowbit::calibration::awq_search_scales(layers, view(x, tokens, cols), options(group, duo_scaling));
        std::copy(r.scales.begin(), r.scales.end(), scales);
        std::copy(r.losses.begin(), r.losses.end(), losses);
        *ratio = r.ratio;
    });
}

// AWQ's clip search on a scaled layer and input: clip gets rows * cols / group floats.
int lowbit_awq_search_clip(const float* w, std::int64_t rows, std::int64_t cols, const float* x, std::int64_t tokens,
                           std::int64_t group, float* clip) {
    return guarded([&] {
        const auto c = lowbit::calibration::awq_search_clip(view(w, rows, cols), view(x, tokens, cols), options(group, 1));
        std::copy(c.begin(), c.end(), clip);
    });
}

// AWQ's quantization of w (rows x cols), in float16 as AutoAWQ's export runs
// it (fp16_export != 0) or in float32: codes rows * cols bytes, scale and
// zero rows * cols / group each (row-major [rows][groups]).
int lowbit_awq_quantize(const float* w, std::int64_t rows, std::int64_t cols, std::int64_t group, int fp16_export,
                        std::uint8_t* codes, float* scale, std::uint8_t* zero) {
    return guarded([&] {
        auto o = options(group, 1);
        o.fp16_export = fp16_export != 0;
        const auto q = lowbit::calibration::awq_quantize(view(w, rows, cols), o);
        std::copy(q.codes.begin(), q.codes.end(), codes);
        std::copy(q.scale.begin(), q.scale.end(), scale);
        std::copy(q.zero.begin(), q.zero.end(), zero);
    });
}

}  // extern "C"
