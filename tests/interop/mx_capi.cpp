// C entry points to lowbit's OCP MX and NVFP4 formats (the registry's mxfp4,
// mxfp6-*, mxfp8-* and nvfp4), for tests/interop/test_mx.py (loaded with
// ctypes beside torchao's mx_formats). Each returns 1 on success and 0 after
// printing the error.
#include <lowbit/registry.hpp>

#include "capi_guard.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>

namespace {

using lowbit_capi::guarded;

// Copies q's element codes (one byte each), its effective scales and, under
// double quantization, the second level's codes (one per scale) and first
// scale out when q is a quantized<S>; false when it is not.
template <class S>
bool copy_out(const lowbit::quantized_base& any, std::uint8_t* codes, float* scales, std::uint8_t* scale_codes,
              float* tensor_scale) {
    const auto* q = dynamic_cast<const lowbit::quantized<S>*>(&any);
    if (q == nullptr) return false;
    for (std::size_t r = 0; r < q->rows(); ++r)
        for (std::size_t c = 0; c < q->cols(); ++c) codes[r * q->cols() + c] = q->code_at(r, c);
    for (std::size_t g = 0; g < q->scale.size(); ++g) {
        scales[g] = q->scale[g];
        scale_codes[g] = q->scales_q ? q->scales_q->codes[g] : 0;
    }
    *tensor_scale = q->scales_q && !q->scales_q->scale.empty() ? q->scales_q->scale[0] : 0.0f;
    return true;
}

}  // namespace

extern "C" {

// Quantizes the rows x cols float32 matrix x with the registry format
// `format`: codes gets rows * cols element codes (the element's bits: sign,
// exponent, mantissa), scales one effective scale per block (MX: the E8M0
// power of two; nvfp4: its E4M3 block scale times the tensor scale),
// scale_codes nvfp4's E4M3 block-scale codes (0 for MX), *tensor_scale
// nvfp4's fp32 tensor scale (0 for MX).
int lowbit_mx_quantize(const char* format, const float* x, std::int64_t rows, std::int64_t cols, std::uint8_t* codes,
                       float* scales, std::uint8_t* scale_codes, float* tensor_scale) {
    return guarded([&] {
        const auto q = lowbit::quantize(lowbit::find_format(format),
                                        lowbit::matrix_view<const float>(x, static_cast<std::size_t>(rows),
                                                                         static_cast<std::size_t>(cols)));
        if (!(copy_out<lowbit::mxfp4>(*q, codes, scales, scale_codes, tensor_scale) ||
              copy_out<lowbit::mxfp6_e3m2>(*q, codes, scales, scale_codes, tensor_scale) ||
              copy_out<lowbit::mxfp6_e2m3>(*q, codes, scales, scale_codes, tensor_scale) ||
              copy_out<lowbit::mxfp8_e4m3>(*q, codes, scales, scale_codes, tensor_scale) ||
              copy_out<lowbit::mxfp8_e5m2>(*q, codes, scales, scale_codes, tensor_scale) ||
              copy_out<lowbit::nvfp4_elements>(*q, codes, scales, scale_codes, tensor_scale)))
            throw std::runtime_error(std::string("lowbit_mx_quantize: '") + format + "' is not an MX or NVFP4 format");
    });
}

// Dequantizes what lowbit_mx_quantize gives (quantizing x again) to float32.
int lowbit_mx_dequantize(const char* format, const float* x, std::int64_t rows, std::int64_t cols, float* out) {
    return guarded([&] {
        const auto q = lowbit::quantize(lowbit::find_format(format),
                                        lowbit::matrix_view<const float>(x, static_cast<std::size_t>(rows),
                                                                         static_cast<std::size_t>(cols)));
        q->dequantize(lowbit::matrix_view<float>(out, static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)));
    });
}

}  // extern "C"
