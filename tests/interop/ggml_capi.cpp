// C entry points to lowbit's ggml row functions, for the Python interop tests
// (loaded with ctypes next to ggml's own library and the gguf package).
#include <lowbit/formats/ggml.hpp>
#include <lowbit/formats/ggml_validate.hpp>
#include <lowbit/kernels/ggml_dequantize.hpp>
#include <lowbit/kernels/ggml_gemv.hpp>
#include <lowbit/kernels/ggml_quantize.hpp>
#include <lowbit/parallel.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>

extern "C" {

// Returns bytes written, or 0 after printing the error.
std::size_t lowbit_ggml_quantize(std::uint32_t type, const float* x, void* dst, std::int64_t rows,
                                 std::int64_t n_per_row, const float* imatrix) {
    try {
        const auto t = static_cast<lowbit::ggml::type>(type);
        // The dispatched SIMD quantizers where they exist (LOWBIT_ARCH picks), else the scalar rows.
        lowbit::kernels::quantize_ggml_rows(t, x, dst, static_cast<std::size_t>(rows),
                                            static_cast<std::size_t>(n_per_row), imatrix);
        return static_cast<std::size_t>(rows) * lowbit::ggml::row_bytes(t, static_cast<std::size_t>(n_per_row));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 0;
    }
}

// What `lowbit quantize` does with a tensor: rows of `from` (F32 = 0, F16 = 1,
// BF16 = 30) in row ranges on `threads` threads (0: every core). Returns
// bytes written, or 0 after printing the error.
std::size_t lowbit_ggml_quantize_rows(std::uint32_t type, std::uint32_t from, const void* x, void* dst,
                                      std::int64_t rows, std::int64_t n_per_row, const float* imatrix,
                                      std::uint32_t threads) {
    try {
        const auto t = static_cast<lowbit::ggml::type>(type), f = static_cast<lowbit::ggml::type>(from);
        const std::size_t n = static_cast<std::size_t>(n_per_row);
        const std::size_t in_row = n * lowbit::ggml::row_bytes(f, 1), out_row = lowbit::ggml::row_bytes(t, n);
        lowbit::parallel_for(static_cast<std::size_t>(rows), threads, 16, [&](std::size_t r0, std::size_t r1) {
            lowbit::kernels::quantize_ggml_rows(t, f, static_cast<const unsigned char*>(x) + r0 * in_row,
                                                static_cast<unsigned char*>(dst) + r0 * out_row, r1 - r0, n, imatrix);
        });
        return static_cast<std::size_t>(rows) * out_row;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 0;
    }
}

int lowbit_ggml_dequantize(std::uint32_t type, const void* src, float* y, std::int64_t rows, std::int64_t n_per_row) {
    try {
        lowbit::kernels::dequantize_ggml_rows(static_cast<lowbit::ggml::type>(type), src, y, static_cast<std::size_t>(rows),
                                      static_cast<std::size_t>(n_per_row));
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 0;
    }
}

// 1 if lowbit can quantize / dequantize the type.
int lowbit_ggml_can_quantize(std::uint32_t type) {
    try {
        return lowbit::ggml::traits(static_cast<lowbit::ggml::type>(type)).quantize != nullptr;
    } catch (...) {
        return 0;
    }
}
// 1 if ggml::find_invalid_block accepts the bytes (as ggml_validate_row_data
// should), 0 if it finds a bad block, -1 on an error.
int lowbit_ggml_validate(std::uint32_t type, const void* data, std::size_t nbytes) {
    try {
        return lowbit::ggml::find_invalid_block(static_cast<lowbit::ggml::type>(type),
                                                {static_cast<const std::byte*>(data), nbytes})
                   ? 0
                   : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return -1;
    }
}
int lowbit_ggml_can_dequantize(std::uint32_t type) {
    try {
        return lowbit::ggml::traits(static_cast<lowbit::ggml::type>(type)).dequantize != nullptr;
    } catch (...) {
        return 0;
    }
}

// The activation block type (ggml's vec_dot_type) for weights of `type`, or
// -1 where lowbit has no int8 path.
int lowbit_ggml_activation_type(std::uint32_t type) {
    const auto t = lowbit::kernels::activation_type(static_cast<lowbit::ggml::type>(type));
    return t ? static_cast<int>(*t) : -1;
}

// x (m x k floats) quantized for weights of `type` into dst (m rows of
// activation blocks). Returns bytes written, or 0 after printing the error.
std::size_t lowbit_ggml_quantize_activations(std::uint32_t type, const float* x, std::int64_t m, std::int64_t k,
                                             void* dst) {
    try {
        const auto a = lowbit::kernels::quantize_activations(
            static_cast<lowbit::ggml::type>(type),
            lowbit::matrix_view<const float>(x, static_cast<std::size_t>(m), static_cast<std::size_t>(k)));
        std::memcpy(dst, a.data(), a.rows() * a.stride());
        return a.rows() * a.stride();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 0;
    }
}

// y (m x n) = x W^T for W (n x k blocks of `type`, packed rows): with
// `xq` null from f32 activations x, else from the activation blocks xq
// (lowbit_ggml_quantize_activations' bytes) on the int8 path. 1, or 0 after
// printing the error.
int lowbit_ggml_gemv(std::uint32_t type, const void* w, std::int64_t n, std::int64_t k, const float* x,
                     const void* xq, std::int64_t m, float* y) {
    try {
        const auto t = static_cast<lowbit::ggml::type>(type);
        const lowbit::ggml::rows_view v(t, w, static_cast<std::size_t>(n), static_cast<std::size_t>(k));
        const lowbit::matrix_view<float> yv(y, static_cast<std::size_t>(m), static_cast<std::size_t>(n));
        const lowbit::matrix_view<const float> xv(x, static_cast<std::size_t>(m), static_cast<std::size_t>(k));
        if (!xq) {
            lowbit::kernels::gemv_ggml(v, xv, yv);
        } else {
            // The blocks given, not a fresh quantization: the same inputs ggml's vec_dot gets.
            const auto at = lowbit::kernels::activation_type(t);
            if (!at) throw std::runtime_error("no int8 path for this type");
            lowbit::kernels::ggml_activations a;
            a.assign(*at, static_cast<std::size_t>(m), static_cast<std::size_t>(k), xq);
            lowbit::kernels::gemv_ggml(v, a, yv);
        }
        return 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 0;
    }
}

// ggml-cpu's vec_dot (ggml_vec_dot_t): s = the dot product of n values of a
// weight row and an activation row (nrc = 1).
using ggml_vec_dot_fn = void (*)(int n, float* s, std::size_t bs, const void* x, std::size_t bx, const void* y,
                                 std::size_t by, int nrc);

// The best time in seconds of `reps` products y (m x n) = x W^T on `threads`
// threads (row ranges of whole multiples of 16, lowbit's parallel_for), each
// rep on the next of `copies` copies of W (`copy_bytes` apart, so that W comes
// from memory, not cache):
//   which 0: lowbit's int8 path on the activation blocks xq;
//   which 1: lowbit's f32 path on x;
//   which 2: ggml's vec_dot (the function pointer `vec_dot`) for each W row
//            and activation row, on the same blocks xq: ggml's mul_mat inner
//            loop without repacking.
// A negative value after printing the error.
double lowbit_ggml_gemv_time(int which, std::uint32_t type, const void* w, std::int64_t copies, std::int64_t copy_bytes,
                             std::int64_t n, std::int64_t k, const float* x, const void* xq, std::int64_t m, float* y,
                             void* vec_dot, std::uint32_t threads, std::int64_t reps) {
    try {
        const auto t = static_cast<lowbit::ggml::type>(type);
        const std::size_t N = static_cast<std::size_t>(n), K = static_cast<std::size_t>(k),
                          M = static_cast<std::size_t>(m);
        const auto at = lowbit::kernels::activation_type(t);
        lowbit::kernels::ggml_activations a;
        if (which != 1) {
            if (!at) throw std::runtime_error("no int8 path for this type");
            a.assign(*at, M, K, xq);
        }
        const lowbit::matrix_view<float> yv(y, M, N);
        const lowbit::matrix_view<const float> xv(x, M, K);
        const auto dot = reinterpret_cast<ggml_vec_dot_fn>(vec_dot);
        if (which == 2 && !dot) throw std::runtime_error("no vec_dot given");
        double best = 1e300;
        for (std::int64_t rep = 0; rep < reps; ++rep) {
            const auto* base = static_cast<const unsigned char*>(w) + (rep % copies) * copy_bytes;
            const lowbit::ggml::rows_view v(t, base, N, K);
            const auto t0 = std::chrono::steady_clock::now();
            lowbit::parallel_for(N, threads, 16, [&](std::size_t r0, std::size_t r1) {
                if (which == 0) {
                    lowbit::kernels::gemv_ggml(v, a, yv, {r0, r1});
                } else if (which == 1) {
                    lowbit::kernels::gemv_ggml(v, xv, yv, {r0, r1});
                } else {
                    for (std::size_t r = r0; r < r1; ++r)
                        for (std::size_t mi = 0; mi < M; ++mi)
                            dot(static_cast<int>(K), y + mi * N + r, 0, v.row(r), 0, a.row(mi), 0, 1);
                }
            });
            best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
        }
        return best;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return -1.0;
    }
}
}
