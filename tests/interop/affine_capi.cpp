// C entry points to lowbit's MLX and torchao formats (the registry's mlx-*
// and torchao-int4-*), to HQQ and to the Hadamard rotation, for
// tests/interop/test_mlx.py, test_torchao.py, test_hqq.py and
// test_hadamard.py (loaded with ctypes beside mlx, torchao and hqq). Each
// returns 1 on success and 0 after printing the error.
#include <lowbit/algorithms/hadamard.hpp>
#include <lowbit/algorithms/hqq.hpp>
#include <lowbit/formats/mlx_checkpoint.hpp>
#include <lowbit/registry.hpp>

#include "capi_guard.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using lowbit_capi::guarded;

// Copies q's packed codes, scales and biases (as float; torchao's zero-points
// are its biases) out when q is an affine matrix of Bits bits in mode M;
// false when it is not.
template <int Bits, lowbit::affine_mode M = lowbit::affine_mode::mlx>
bool copy_out(const lowbit::quantized_base& q, std::uint8_t* codes, float* scales, float* biases) {
    const auto* m = dynamic_cast<const lowbit::quantized<lowbit::affine<Bits, M>>*>(&q);
    if (m == nullptr) return false;
    std::copy(m->codes.begin(), m->codes.end(), codes);
    std::copy(m->scale.begin(), m->scale.end(), scales);
    if (m->bias.empty())
        std::fill(biases, biases + m->scale.size(), 0.0f);
    else
        std::copy(m->bias.begin(), m->bias.end(), biases);
    return true;
}

}  // namespace

extern "C" {

// Quantizes the rows x cols float32 matrix x with the registry format
// `format` (one of mlx-* or torchao-int4-*). codes gets rows * cols * bits / 8
// bytes (each row an LSB-first bit stream: MLX's little-endian uint32 words,
// torchao's codes with element 2j in the low nibble); scales and biases get
// rows * cols / group values, the stored params widened to float (torchao:
// scale and zero-point); *bpw the format's bits per weight.
int lowbit_affine_quantize(const char* format, const float* x, std::int64_t rows, std::int64_t cols,
                        std::uint8_t* codes, float* scales, float* biases, double* bpw) {
    return guarded([&] {
        const auto q = lowbit::quantize(lowbit::find_format(format),
                                        lowbit::matrix_view<const float>(x, static_cast<std::size_t>(rows),
                                                                         static_cast<std::size_t>(cols)),
                                        {}, {2});
        *bpw = q->bits_per_weight();
        if (!(copy_out<2>(*q, codes, scales, biases) || copy_out<3>(*q, codes, scales, biases) ||
              copy_out<4>(*q, codes, scales, biases) || copy_out<5>(*q, codes, scales, biases) ||
              copy_out<6>(*q, codes, scales, biases) || copy_out<8>(*q, codes, scales, biases) ||
              copy_out<4, lowbit::affine_mode::asymmetric_float>(*q, codes, scales, biases)))
            throw std::runtime_error(std::string("lowbit_affine_quantize: '") + format +
                                     "' is not an MLX or torchao format");
    });
}

// Dequantizes what lowbit_affine_quantize gives (quantizing x again) to
// out_type 0 f32, 1 f16, 2 bf16 (16-bit outputs as uint16 bit patterns).
int lowbit_affine_dequantize(const char* format, const float* x, std::int64_t rows, std::int64_t cols, int out_type,
                          void* out) {
    return guarded([&] {
        const auto q = lowbit::quantize(lowbit::find_format(format),
                                        lowbit::matrix_view<const float>(x, static_cast<std::size_t>(rows),
                                                                         static_cast<std::size_t>(cols)),
                                        {}, {2});
        q->dequantize_to(out, static_cast<std::size_t>(cols), static_cast<lowbit::kernels::out_type>(out_type));
    });
}

// Quantizes x with the registry format `format` (a 4- or 5-bit mlx-* one)
// and writes ggml's Q4_1 / Q5_1 blocks of the result to `blocks`
// (lowbit::mlx::to_ggml_min_blocks): rows * cols / 32 blocks of 20 / 24 bytes.
int lowbit_mlx_to_ggml(const char* format, const float* x, std::int64_t rows, std::int64_t cols, std::uint8_t* blocks) {
    return guarded([&] {
        const auto q = lowbit::quantize(lowbit::find_format(format),
                                        lowbit::matrix_view<const float>(x, static_cast<std::size_t>(rows),
                                                                         static_cast<std::size_t>(cols)));
        std::vector<std::uint8_t> b;
        using lowbit::affine;
        using lowbit::affine_mode;
        if (const auto* m4 = dynamic_cast<const lowbit::quantized<affine<4, affine_mode::mlx>>*>(q.get()))
            b = lowbit::mlx::to_ggml_min_blocks(*m4);
        else if (const auto* m5 = dynamic_cast<const lowbit::quantized<affine<5, affine_mode::mlx>>*>(q.get()))
            b = lowbit::mlx::to_ggml_min_blocks(*m5);
        else
            throw std::runtime_error(std::string("lowbit_mlx_to_ggml: '") + format + "' is not a 4- or 5-bit MLX format");
        std::copy(b.begin(), b.end(), blocks);
    });
}

// HQQ on the rows x cols float32 matrix w (lowbit::hqq; round_zero < 0:
// hqq's default for the bits). codes gets rows * cols bytes, scale and zero
// rows * cols / group floats each, *steps the solver steps run.
int lowbit_hqq(const float* w, std::int64_t rows, std::int64_t cols, int bits, std::int64_t group, int round_zero,
               int lanes, int threads, std::uint8_t* codes, float* scale, float* zero, int* steps) {
    return guarded([&] {
        lowbit::hqq_options o;
        o.bits = bits;
        o.group_size = static_cast<std::size_t>(group);
        if (round_zero >= 0) o.round_zero = round_zero != 0;
        o.lanes = static_cast<unsigned>(lanes);
        o.threads = static_cast<unsigned>(threads);
        const auto r = lowbit::hqq(
            lowbit::matrix_view<const float>(w, static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)), o);
        std::copy(r.codes.begin(), r.codes.end(), codes);
        std::copy(r.scale.begin(), r.scale.end(), scale);
        std::copy(r.zero.begin(), r.zero.end(), zero);
        *steps = static_cast<int>(r.errors.size());
    });
}

// Each of the rows rows of n floats at x rotated in place (lowbit::rotate_rows; transpose: the inverse).
int lowbit_hadamard(float* x, std::int64_t rows, std::int64_t n, int transpose, int threads) {
    return guarded([&] {
        lowbit::rotate_rows(lowbit::matrix_view<float>(x, static_cast<std::size_t>(rows), static_cast<std::size_t>(n)),
                            transpose != 0, static_cast<unsigned>(threads));
    });
}

}  // extern "C"
