#include "catch.hpp"

#include <lowbit/core/numeric.hpp>
#include <lowbit/formats/ggml.hpp>
#include <lowbit/metrics.hpp>
#include <lowbit/registry.hpp>

#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

using namespace lowbit;

namespace {

constexpr std::size_t rows = 32, cols = 512;

const std::vector<float>& gaussian() {
    static const std::vector<float> w = [] {
        std::vector<float> v(rows * cols);
        std::mt19937_64 rng(11);
        std::normal_distribution<float> n(0.0f, 0.02f);
        for (float& x : v) x = n(rng);
        return v;
    }();
    return w;
}

}  // namespace

TEST_CASE("the formats the foundation promises are registered") {
    for (const char* n : {"int8-ch", "int4-g128-sym", "int4-g128-asym", "int3-g128", "int2-g64", "nf4-b64",
                          "nf4-b64-dq", "fp4-b64", "mxfp4", "mxfp8-e4m3", "nvfp4", "fp8-e4m3-ch", "mlx-4b-g64"})
        REQUIRE(find_format(n).name == n);
}

TEST_CASE("bits per weight of every format, counted by hand from its definition") {
    const double n = rows * cols;
    // codes + per-group params (+ second level), for a 32 x 512 matrix.
    std::map<std::string, double> expect = {
        {"int8-ch", 8 + 32.0 / 512},
        {"int8-g128", 8 + 16.0 / 128},
        {"int4-g128-sym", 4 + 16.0 / 128},
        {"int4-g128-asym", 4 + 20.0 / 128},   // fp16 scale + 4-bit zero
        {"int4-g128-mse", 4 + 20.0 / 128},
        {"int4-g32-sym", 4 + 16.0 / 32},
        {"int4-sb256", 4 + 6.0 / 32 + 22.0 / 256},  // 6-bit sub-scale; fp16 scale + 6-bit zero per 256
        {"int3-g128", 3 + 19.0 / 128},
        {"int2-g64", 2 + 18.0 / 64},
        {"mlx-4b-g64", 4 + 32.0 / 64},
        {"mlx-8b-g64", 8 + 32.0 / 64},
        {"nf4-b64", 4 + 32.0 / 64},
        {"nf4-b64-dq", 4 + 8.0 / 64 + (32.0 + 32.0) / n},  // 256 scales = one nested block + offset
        {"fp4-b64", 4 + 32.0 / 64},
        {"fp4-b64-dq", 4 + 8.0 / 64 + (32.0 + 32.0) / n},
        {"iq4nl-b32", 4 + 16.0 / 32},
        {"mxfp4", 4 + 8.0 / 32},
        {"mxfp6-e3m2", 6 + 8.0 / 32},
        {"mxfp6-e2m3", 6 + 8.0 / 32},
        {"mxfp8-e4m3", 8 + 8.0 / 32},
        {"mxfp8-e5m2", 8 + 8.0 / 32},
        {"nvfp4", 4 + 8.0 / 16 + 32.0 / n},
        {"fp8-e4m3-ch", 8 + 32.0 / 512},
        // ggml blocks: bytes per block * 8 / values per block.
        {"q8_0", 34 * 8 / 32.0},
        {"q4_0", 18 * 8 / 32.0},
        {"q4_1", 20 * 8 / 32.0},
        {"q5_0", 22 * 8 / 32.0},
        {"q5_1", 24 * 8 / 32.0},
        {"q2_K", 84 * 8 / 256.0},
        {"q3_K", 110 * 8 / 256.0},
        {"q4_K", 144 * 8 / 256.0},
        {"q5_K", 176 * 8 / 256.0},
        {"q6_K", 210 * 8 / 256.0},
        {"iq4_nl", 18 * 8 / 32.0},
        {"iq4_xs", 136 * 8 / 256.0},
    };
    // mlx-<b>b-g<G>[-bf16|-f32]: a scale and a bias per group, 16 bits each (32 for -f32).
    for (int b : {2, 3, 4, 5, 6, 8})
        for (int g : {32, 64, 128})
            for (const auto& [suffix, param] : {std::pair{"", 16}, {"-bf16", 16}, {"-f32", 32}})
                expect.emplace("mlx-" + std::to_string(b) + "b-g" + std::to_string(g) + suffix, b + 2.0 * param / g);
    // torchao-int4-g<G>[-v1[-f32]]: a scale and a zero-point per group, bf16 (fp32 for -f32).
    for (int g : {32, 64, 128, 256})
        for (const auto& [suffix, param] : {std::pair{"", 16}, {"-v1", 16}, {"-v1-f32", 32}})
            expect.emplace("torchao-int4-g" + std::to_string(g) + suffix, 4 + 2.0 * param / g);
    matrix_view<const float> w(gaussian().data(), rows, cols);
    for (const auto& f : formats()) {
        INFO(f.name);
        const auto it = expect.find(std::string(f.name));
        REQUIRE(it != expect.end());  // every registered format has its expectation here
        REQUIRE(quantize(f, w)->bits_per_weight() == Approx(it->second).epsilon(1e-12));
    }
}

TEST_CASE("every format reconstructs Gaussian weights with the SQNR its bit width allows") {
    // Uniform-noise theory: ~6 dB per bit; the windows are wide enough for the
    // scheme differences, narrow enough to catch a wrong table or scale.
    matrix_view<const float> w(gaussian().data(), rows, cols);
    std::vector<float> back(rows * cols);
    for (const auto& f : formats()) {
        INFO(f.name);
        const auto q = quantize(f, w);
        q->dequantize(matrix_view<float>(back.data(), rows, cols));
        const double s = sqnr_db(w, matrix_view<const float>(back.data(), rows, cols));
        // The MLX and torchao formats' params add up to 2 bits per weight (fp32 params, groups of 32): their code width.
        const double bits = f.name.starts_with("mlx-")       ? f.name[4] - '0'
                            : f.name.starts_with("torchao-") ? 4.0
                                                             : std::floor(q->bits_per_weight());
        if (bits >= 8 && f.family == "integer") {
            REQUIRE(s > 40.0);
        } else if (bits >= 6) {  // 6- and 8-bit minifloats: 2-3 mantissa bits, ~25-31 dB
            REQUIRE(s > 23.0);
        } else if (bits >= 5) {  // ggml's 5-bit types, and Q4_1 (4 bits + 1 of scale and min)
            REQUIRE(s > 21.0);
            REQUIRE(s < 32.0);
        } else if (bits >= 4) {
            REQUIRE(s > 16.0);
            REQUIRE(s < 26.0);
        } else if (bits >= 3) {
            REQUIRE(s > 11.0);
            REQUIRE(s < 18.0);
        } else {
            REQUIRE(s > 5.0);
            REQUIRE(s < 12.0);
        }
    }
}

TEST_CASE("every format dequantizes to the same numbers on every instruction set, in f32, f16 and bf16") {
    matrix_view<const float> w(gaussian().data(), rows, cols);
    const auto before = kernels::active_isa();
    for (const auto& f : formats()) {
        INFO(f.name);
        const auto q = quantize(f, w);
        std::vector<float> ref(rows * cols), got(rows * cols);
        std::vector<std::uint16_t> h(rows * cols), b(rows * cols);
        kernels::set_active_isa(kernels::isa::scalar);
        q->dequantize(matrix_view<float>(ref.data(), rows, cols));
        for (auto i : kernels::available_isas()) {
            INFO(kernels::isa_name(i));
            kernels::set_active_isa(i);
            q->dequantize(matrix_view<float>(got.data(), rows, cols));
            REQUIRE(std::memcmp(got.data(), ref.data(), got.size() * sizeof(float)) == 0);
            q->dequantize_to(h.data(), cols, kernels::out_type::f16);
            q->dequantize_to(b.data(), cols, kernels::out_type::bf16);
            // The MLX formats' output in their params' dtype is mx.dequantize's
            // (scale * q rounded, then the bias added and rounded: test_mlx.cpp);
            // the torchao formats' 16-bit outputs are torchao's, rounded the
            // same way (test_scheme_affine.cpp, tests/interop/test_torchao.py).
            const bool mlx = f.name.starts_with("mlx-") && !f.name.ends_with("-f32");
            const bool tao = f.name.starts_with("torchao-");
            const bool own_h = tao || (mlx && !f.name.ends_with("-bf16")), own_b = tao || (mlx && f.name.ends_with("-bf16"));
            for (std::size_t k = 0; k < ref.size(); ++k) {
                if (!own_h) REQUIRE(h[k] == float_to_fp16(ref[k]));
                if (!own_b) REQUIRE(b[k] == float_to_bf16(ref[k]));
            }
        }
    }
    kernels::set_active_isa(before);
}

TEST_CASE("an unknown format name is an error that suggests close names") {
    try {
        (void)find_format("int4-g128-sim");
        FAIL("no error");
    } catch (const lowbit::error& e) {
        REQUIRE(e.code() == errc::unknown_format);
        REQUIRE_THAT(e.what(), Catch::Matchers::Contains("int4-g128-sym"));
    }
    REQUIRE_THROWS_AS(find_format(""), lowbit::error);
}

TEST_CASE("registry quantize passes shape errors through") {
    std::vector<float> w(4 * 100, 0.5f);
    REQUIRE_THROWS_AS(quantize(find_format("int4-g128-sym"), matrix_view<const float>(w.data(), 4, 100)),
                      lowbit::error);
}

TEST_CASE("the ggml formats are ggml's bytes, with an importance matrix and from strided rows") {
    using ggml::type;
    const std::pair<const char*, type> names[] = {
        {"q8_0", type::q8_0}, {"q4_0", type::q4_0}, {"q4_1", type::q4_1}, {"q5_0", type::q5_0},
        {"q5_1", type::q5_1}, {"q2_K", type::q2_k}, {"q3_K", type::q3_k}, {"q4_K", type::q4_k},
        {"q5_K", type::q5_k}, {"q6_K", type::q6_k}, {"iq4_nl", type::iq4_nl}, {"iq4_xs", type::iq4_xs}};
    std::vector<float> imp(cols);
    std::mt19937 rng(5);
    for (float& v : imp) v = 0.1f + static_cast<float>(rng() % 100) * 0.05f;
    // The same matrix inside a wider buffer: row stride cols + 32.
    std::vector<float> wide(rows * (cols + 32), 7.0f);
    for (std::size_t r = 0; r < rows; ++r)
        std::memcpy(wide.data() + r * (cols + 32), gaussian().data() + r * cols, cols * sizeof(float));
    for (const auto& [name, t] : names) {
        INFO(name);
        const format& f = find_format(name);
        REQUIRE(f.family == "ggml");
        for (const bool with_imp : {false, true}) {
            const std::span<const float> im = with_imp ? std::span<const float>(imp) : std::span<const float>();
            std::vector<unsigned char> want(rows * ggml::row_bytes(t, cols));
            ggml::quantize_rows(t, gaussian().data(), want.data(), rows, cols, with_imp ? imp.data() : nullptr);
            for (unsigned threads : {1u, 0u}) {
                const auto q = quantize(f, matrix_view<const float>(gaussian().data(), rows, cols), im, {threads});
                const auto& g = dynamic_cast<const ggml::quantized_rows&>(*q);
                REQUIRE(g.blocks == want);
                REQUIRE(q->storage_bytes() == want.size());
            }
            const auto qs = quantize(f, matrix_view<const float>(wide.data(), rows, cols, cols + 32), im);
            REQUIRE(dynamic_cast<const ggml::quantized_rows&>(*qs).blocks == want);
            // Dequantize: ggml's row function, into a strided output and a row range.
            std::vector<float> ref(rows * cols), got(rows * (cols + 8), -1.0f);
            ggml::dequantize_rows(t, want.data(), ref.data(), rows, cols);
            qs->dequantize_to(got.data(), cols + 8, kernels::out_type::f32, row_range{3, 17});
            for (std::size_t r = 0; r < rows; ++r)
                for (std::size_t c = 0; c < cols; ++c)
                    REQUIRE(got[r * (cols + 8) + c] == (r >= 3 && r < 17 ? ref[r * cols + c] : -1.0f));
        }
    }
    matrix_view<const float> w(gaussian().data(), rows, cols);
    const std::vector<float> per_weight(rows * cols, 1.0f), negative(cols, -1.0f);
    REQUIRE_THROWS_AS(quantize(find_format("q4_K"), w, per_weight), lowbit::error);
    REQUIRE_THROWS_AS(quantize(find_format("q4_K"), w, negative), lowbit::error);
    REQUIRE_THROWS_AS(quantize(find_format("q4_K"), matrix_view<const float>(gaussian().data(), 4, 100)),
                      lowbit::error);
}
