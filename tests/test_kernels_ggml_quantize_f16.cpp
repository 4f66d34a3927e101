// Quantizing from f16 and bf16 rows (what `lowbit quantize` does with F16 and
// BF16 tensors): the widening to f32 on every instruction set, and the bytes
// against quantizing the f32 rows.

#include "catch.hpp"

#include <lowbit/core/numeric.hpp>
#include <lowbit/formats/ggml.hpp>
#include <lowbit/kernels/ggml_quantize.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;
using namespace lowbit::kernels;

namespace {

std::string type_name(ggml::type t) { return std::string(ggml::traits(t).name); }

std::uint16_t to_half_bits(ggml::type from, float v) {
    return from == ggml::type::bf16 ? float_to_bf16(v) : float_to_fp16(v);
}

float from_half_bits(ggml::type from, std::uint16_t h) {
    return from == ggml::type::bf16 ? bf16_to_float(h) : fp16_to_float(h);
}

// Rows of N(0,1) values at a per-row scale, with zeros, subnormals of the
// source type, ties and Inf sprinkled in.
std::vector<std::uint16_t> source_rows(ggml::type from, std::size_t rows, std::size_t n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<std::uint16_t> h(rows * n);
    for (std::size_t r = 0; r < rows; ++r) {
        const float scale = std::ldexp(1.f, static_cast<int>(rng() % 24) - 16);
        for (std::size_t c = 0; c < n; ++c) {
            float v = nd(rng) * scale;
            switch (rng() % 64) {
            case 0: v = 0.f; break;
            case 1: v = -0.f; break;
            case 2: v = from == ggml::type::bf16 ? 1e-39f : 3e-6f; break;  // a subnormal of the source type
            case 3: v = static_cast<float>(static_cast<int>(rng() % 17) - 8) * scale; break;
            default: break;
            }
            h[r * n + c] = to_half_bits(from, v);
        }
    }
    return h;
}

}  // namespace

TEST_CASE("widen_to_f32: every f16 and bf16 value, exactly, on every ISA", "[kernels][ggml_quantize]") {
    // All 65536 bit patterns, starting at a few offsets so that vector
    // bodies and scalar tails both see every one.
    std::vector<std::uint16_t> all(65536 + 7);
    for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
    for (ggml::type from : {ggml::type::f16, ggml::type::bf16}) {
        for (isa i : available_isas()) {
            for (std::size_t off : {0u, 1u, 7u}) {
                const std::size_t n = 65536;
                std::vector<float> out(n + 1, 123.f);
                dispatch_to(i, widen_f32_fn{}, widen_job{from, all.data() + off, out.data(), n});
                std::size_t bad = 0, first = n;
                for (std::size_t k = 0; k < n; ++k) {
                    const auto h = static_cast<std::uint16_t>(k + off);
                    const float want = from_half_bits(from, h);
                    const bool same = std::isnan(want) ? std::isnan(out[k])
                                                       : std::bit_cast<std::uint32_t>(want) ==
                                                             std::bit_cast<std::uint32_t>(out[k]);
                    if (!same && bad++ == 0) first = k;
                }
                INFO(type_name(from) << " on " << isa_name(i) << ", offset " << off << ", first wrong value at "
                                     << first);
                CHECK(bad == 0);
                CHECK(out[n] == 123.f);  // nothing written past n
            }
        }
    }
    float y = 0.f;
    CHECK_THROWS_AS(widen_to_f32(ggml::type::q4_0, all.data(), &y, 1), error);
    CHECK_THROWS_AS(widen_to_f32(ggml::type::f16, nullptr, &y, 1), error);
    CHECK_NOTHROW(widen_to_f32(ggml::type::f16, nullptr, nullptr, 0));
    widen_to_f32(ggml::type::bf16, all.data() + 0x3F80, &y, 1);
    CHECK(y == 1.0f);
}

TEST_CASE("quantize_ggml_rows from f16 and bf16: the bytes of the f32 rows, every type and ISA",
          "[kernels][ggml_quantize]") {
    // Every quantizable type (SIMD kernels and the scalar fallbacks), rows
    // narrower and wider than the widening buffer, and an imatrix where the
    // type reads one.
    std::uint32_t seed = 500;
    const isa before = active_isa();
    for (ggml::type from : {ggml::type::f16, ggml::type::bf16}) {
        using ggml::type;
        for (type t : {type::q4_0, type::q4_1, type::q5_0, type::q5_1, type::q8_0, type::q8_1, type::q2_k, type::q3_k,
                       type::q4_k, type::q5_k, type::q6_k, type::q8_k, type::iq4_nl, type::iq4_xs, type::tq1_0,
                       type::tq2_0, type::mxfp4, type::f16, type::bf16}) {
            const std::size_t bs = ggml::traits(t).block_size;
            for (const auto& [rows, n] : {std::pair<std::size_t, std::size_t>{37, 256 * 3}, {3, 256 * 96}}) {
                if (n % bs != 0) continue;
                const auto src = source_rows(from, rows, n, seed++);
                std::vector<float> x(src.size());
                for (std::size_t k = 0; k < x.size(); ++k) x[k] = from_half_bits(from, src[k]);
                std::vector<float> qw(n);
                std::mt19937 rng(seed++);
                for (auto& w : qw) w = 0.01f + static_cast<float>(rng() % 1000) * 0.01f;
                for (const float* im : {static_cast<const float*>(nullptr), static_cast<const float*>(qw.data())}) {
                    const std::size_t bytes = rows * ggml::row_bytes(t, n);
                    std::vector<unsigned char> ref(bytes, 0xAA);
                    ggml::quantize_rows(t, x.data(), ref.data(), rows, n, im);
                    for (isa i : available_isas()) {
                        set_active_isa(i);
                        std::vector<unsigned char> got(bytes + 1, 0x55);
                        // src + 0 is 2-byte aligned only when offset; the kernel must not care.
                        quantize_ggml_rows(t, from, src.data(), got.data(), rows, n, im);
                        INFO(type_name(t) << " from " << type_name(from) << " on " << isa_name(i) << ", " << rows
                                          << " rows of " << n << (im ? " with imatrix" : ""));
                        CHECK(std::memcmp(ref.data(), got.data(), bytes) == 0);
                        CHECK(got[bytes] == 0x55);
                    }
                    set_active_isa(before);
                }
            }
        }
    }
    std::vector<std::uint16_t> h(256);
    std::vector<unsigned char> out(1024);
    CHECK_THROWS_AS(quantize_ggml_rows(ggml::type::q4_k, ggml::type::q8_0, h.data(), out.data(), 1, 256), error);
    CHECK_THROWS_AS(quantize_ggml_rows(ggml::type::q4_k, ggml::type::f16, h.data(), out.data(), 1, 100), error);
    CHECK_THROWS_AS(quantize_ggml_rows(ggml::type::q4_k, ggml::type::f16, nullptr, out.data(), 1, 256), error);
    CHECK_NOTHROW(quantize_ggml_rows(ggml::type::q4_k, ggml::type::bf16, nullptr, nullptr, 0, 256));
}
