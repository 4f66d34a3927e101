// C entry points to lowbit's bitsandbytes formats, for the Python interop
// tests (loaded with ctypes beside bitsandbytes and torch). Each returns 1 on
// success and 0 after printing the error.
#include <lowbit/formats/bnb.hpp>
#include <lowbit/formats/bnb_convert.hpp>

#include "capi_guard.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

namespace {

using lowbit_capi::guarded;

lowbit::bnb::quant_state_4bit state_from(std::int64_t n, int type, std::int64_t blocksize, const std::uint8_t* packed,
                                         const float* absmax, const std::uint8_t* qabsmax,
                                         const float* nested_absmax, float offset) {
    lowbit::bnb::quant_state_4bit s;
    s.type = type ? lowbit::bnb::quant_type::fp4 : lowbit::bnb::quant_type::nf4;
    s.blocksize = static_cast<std::size_t>(blocksize);
    s.shape = {static_cast<std::uint64_t>(n)};
    s.code = lowbit::bnb::code_table(s.type);
    s.packed.assign(packed, packed + (n + 1) / 2);
    const std::size_t nb = s.blocks();
    if (qabsmax) {
        lowbit::bnb::nested_state ns;
        ns.codes.assign(qabsmax, qabsmax + nb);
        ns.absmax.assign(nested_absmax, nested_absmax + (nb + 255) / 256);
        ns.offset = offset;
        ns.code = lowbit::bnb::dynamic_map();
        s.nested = std::move(ns);
    } else {
        s.absmax.assign(absmax, absmax + nb);
    }
    return s;
}

}  // namespace

extern "C" {

// type: 0 nf4, 1 fp4; rules: 0 cuda, 1 cpu. With nested != 0, qabsmax gets one
// code per block, nested_absmax one value per 256 blocks and *offset the
// offset (used as given when use_offset != 0); else absmax one value per block.
int lowbit_bnb_quantize_4bit(const float* x, std::int64_t n, int type, std::int64_t blocksize, int nested, int rules,
                             int use_offset, float* offset, std::uint8_t* packed, float* absmax,
                             std::uint8_t* qabsmax, float* nested_absmax) {
    return guarded([&] {
        lowbit::bnb::quantize_4bit_options o;
        o.type = type ? lowbit::bnb::quant_type::fp4 : lowbit::bnb::quant_type::nf4;
        o.blocksize = static_cast<std::size_t>(blocksize);
        o.compress_statistics = nested != 0;
        o.rules = rules ? lowbit::bnb::kernel_rules::cpu : lowbit::bnb::kernel_rules::cuda;
        if (use_offset) o.offset = *offset;
        o.threads = 2;
        const auto s = lowbit::bnb::quantize_4bit({x, static_cast<std::size_t>(n)}, {static_cast<std::uint64_t>(n)}, o);
        std::copy(s.packed.begin(), s.packed.end(), packed);
        if (s.nested) {
            std::copy(s.nested->codes.begin(), s.nested->codes.end(), qabsmax);
            std::copy(s.nested->absmax.begin(), s.nested->absmax.end(), nested_absmax);
            *offset = s.nested->offset;
        } else {
            std::copy(s.absmax.begin(), s.absmax.end(), absmax);
        }
    });
}

// NF4 under bitsandbytes' CPU rules through the generic core: the n values
// (a multiple of blocksize) as one row, bnb_4bit_quantizer(nf4, blocksize,
// cpu), then to_bnb; packed gets (n + 1) / 2 bytes, absmax one value per block.
int lowbit_bnb_core_quantize_nf4(const float* x, std::int64_t n, std::int64_t blocksize, std::uint8_t* packed,
                                 float* absmax) {
    return guarded([&] {
        const auto qz = lowbit::bnb_4bit_quantizer(lowbit::bnb::quant_type::nf4, static_cast<std::size_t>(blocksize),
                                                   lowbit::bnb::kernel_rules::cpu);
        const auto q = qz.quantize(lowbit::matrix_view<const float>(x, 1, static_cast<std::size_t>(n)));
        const auto s = lowbit::to_bnb(q);
        std::copy(s.packed.begin(), s.packed.end(), packed);
        std::copy(s.absmax.begin(), s.absmax.end(), absmax);
    });
}

// out_type: 0 f32, 1 f16, 2 bf16 (16-bit outputs as uint16 bit patterns).
int lowbit_bnb_dequantize_4bit(const std::uint8_t* packed, std::int64_t n, int type, std::int64_t blocksize,
                               const float* absmax, const std::uint8_t* qabsmax, const float* nested_absmax,
                               float offset, int out_type, void* out) {
    return guarded([&] {
        const auto s = state_from(n, type, blocksize, packed, absmax, qabsmax, nested_absmax, offset);
        lowbit::bnb::dequantize_4bit(s, out, static_cast<lowbit::kernels::out_type>(out_type), 2);
    });
}

int lowbit_bnb_quantize_blockwise(const float* x, std::int64_t n, std::int64_t blocksize, int rules,
                                  std::uint8_t* codes, float* absmax) {
    return guarded([&] {
        lowbit::bnb::quantize_blockwise_options o;
        o.blocksize = static_cast<std::size_t>(blocksize);
        o.rules = rules ? lowbit::bnb::kernel_rules::cpu : lowbit::bnb::kernel_rules::cuda;
        const auto s = lowbit::bnb::quantize_blockwise({x, static_cast<std::size_t>(n)}, o);
        std::copy(s.codes.begin(), s.codes.end(), codes);
        std::copy(s.absmax.begin(), s.absmax.end(), absmax);
    });
}

int lowbit_bnb_dequantize_blockwise(const std::uint8_t* codes, std::int64_t n, std::int64_t blocksize,
                                    const float* absmax, int out_type, void* out) {
    return guarded([&] {
        lowbit::bnb::quant_state_8bit s;
        s.blocksize = static_cast<std::size_t>(blocksize);
        s.codes.assign(codes, codes + n);
        s.absmax.assign(absmax, absmax + (n + blocksize - 1) / blocksize);
        s.code = lowbit::bnb::dynamic_map();
        lowbit::bnb::dequantize_blockwise(s, out, static_cast<lowbit::kernels::out_type>(out_type));
    });
}

// LLM.int8(): int8_vectorwise_quant of a rows x cols matrix; outlier_cols gets
// the outlier column indices and *n_outliers their count (threshold > 0).
int lowbit_bnb_int8_quant(const float* a, std::int64_t rows, std::int64_t cols, float threshold, std::int8_t* q,
                          float* row_stats, std::int64_t* outlier_cols, std::int64_t* n_outliers) {
    return guarded([&] {
        const auto r = lowbit::bnb::quantize_int8_activations({a, static_cast<std::size_t>(rows * cols)},
                                                              static_cast<std::size_t>(rows),
                                                              static_cast<std::size_t>(cols), threshold);
        std::copy(r.q.begin(), r.q.end(), q);
        std::copy(r.row_stats.begin(), r.row_stats.end(), row_stats);
        for (std::size_t i = 0; i < r.outlier_cols.size(); ++i) outlier_cols[i] = static_cast<std::int64_t>(r.outlier_cols[i]);
        *n_outliers = static_cast<std::int64_t>(r.outlier_cols.size());
    });
}

// y (batch x rows) = LLM.int8() product of x (batch x cols) with the weight w (rows x cols).
int lowbit_bnb_int8_linear(const float* x, std::int64_t batch, const float* w, std::int64_t rows, std::int64_t cols,
                           float threshold, float* y) {
    return guarded([&] {
        const auto q = lowbit::bnb::quantize_int8_rows({w, static_cast<std::size_t>(rows * cols)},
                                                       static_cast<std::size_t>(rows), static_cast<std::size_t>(cols));
        const auto out = lowbit::bnb::int8_linear({x, static_cast<std::size_t>(batch * cols)},
                                                  static_cast<std::size_t>(batch), q, threshold);
        std::copy(out.begin(), out.end(), y);
    });
}

}  // extern "C"
