#include "catch.hpp"

#include <lowbit/formats/bnb.hpp>
#include <lowbit/formats/bnb_checkpoint.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

using namespace lowbit;
using namespace lowbit::bnb;

namespace {

std::vector<std::uint8_t> unpack(const quant_state_4bit& s) {
    std::vector<std::uint8_t> c;
    for (std::uint8_t b : s.packed) {
        c.push_back(static_cast<std::uint8_t>(b >> 4));
        c.push_back(static_cast<std::uint8_t>(b & 15));
    }
    return c;
}

std::vector<float> randn(std::size_t n, unsigned seed, float scale = 1.0f) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> v(n);
    for (float& x : v) x = d(rng);
    return v;
}

float max_half_gap(std::span<const float> table) {
    std::vector<float> v(table.begin(), table.end());
    std::sort(v.begin(), v.end());
    float g = 0;
    for (std::size_t i = 0; i + 1 < v.size(); ++i) g = std::max(g, (v[i + 1] - v[i]) / 2);
    return g;
}

struct isa_guard {
    kernels::isa saved = kernels::active_isa();
    ~isa_guard() { kernels::set_active_isa(saved); }
};

}  // namespace

TEST_CASE("bnb 4-bit codes: the bytes bitsandbytes 0.50.2 wrote on the CPU, and the CUDA kernels' rules") {
    // Recorded from bitsandbytes.functional.quantize_4bit(x, blocksize=32) on a CPU (torch 2.9.1).
    const std::vector<float> x = {1.0f, 0.001f, -0.001f, 0.0f, -0.0f, 1e-6f, -1e-6f, 0.5f, -0.5f, 0.0026041667f,
                                  -0.0026041667f};
    quantize_4bit_options o;
    o.blocksize = 32;
    o.compress_statistics = false;
    o.rules = kernel_rules::cpu;
    o.type = quant_type::nf4;
    CHECK(unpack(quantize_4bit(x, {11}, o)) == std::vector<std::uint8_t>{15, 7, 7, 7, 7, 7, 7, 12, 2, 7, 7, 7});
    o.type = quant_type::fp4;
    // FP4 on the CPU: small positive values get code 8 (-0), negative ones code 0.
    CHECK(unpack(quantize_4bit(x, {11}, o)) == std::vector<std::uint8_t>{3, 8, 0, 0, 0, 8, 0, 5, 13, 8, 9, 0});
    o.rules = kernel_rules::cuda;
    CHECK(unpack(quantize_4bit(x, {11}, o)) == std::vector<std::uint8_t>{3, 0, 8, 0, 0, 0, 8, 5, 13, 0, 8, 0});
    o.type = quant_type::nf4;
    CHECK(unpack(quantize_4bit(x, {11}, o)) == std::vector<std::uint8_t>{15, 7, 7, 7, 7, 7, 7, 12, 2, 7, 7, 7});
}

TEST_CASE("bnb 4-bit all-zero blocks and the short last block") {
    const std::vector<float> z(65, 0.0f);
    quantize_4bit_options o;
    o.compress_statistics = false;
    o.rules = kernel_rules::cpu;
    auto s = quantize_4bit(z, {65}, o);
    // Recorded from bitsandbytes on the CPU: codes 7 (0.0), the full block's
    // absmax 0 and the short block's clamped to 1e-38.
    CHECK(s.packed.size() == 33);
    CHECK(std::all_of(s.packed.begin(), s.packed.end(), [](std::uint8_t b) { return b == 0x77; }));
    REQUIRE(s.absmax.size() == 2);
    CHECK(s.absmax[0] == 0.0f);
    CHECK(s.absmax[1] == 1e-38f);
    o.rules = kernel_rules::cuda;
    s = quantize_4bit(z, {65}, o);
    // The CUDA kernel scales by 1/0: NaN, which its tree sends to code 0.
    CHECK(std::all_of(s.packed.begin(), s.packed.end(), [](std::uint8_t b) { return b == 0x00; }));
    CHECK(s.absmax == std::vector<float>{0.0f, 0.0f});
    for (float v : dequantize_4bit(s)) CHECK(v == 0.0f);
}

TEST_CASE("bnb 4-bit packing: earlier element in the high nibble, odd counts padded with the code of 0") {
    const std::vector<float> x = {-1.0f, 1.0f, 0.0f};
    quantize_4bit_options o;
    o.compress_statistics = false;
    auto s = quantize_4bit(x, {3}, o);
    CHECK(s.packed == std::vector<std::uint8_t>{0x0F, 0x77});
    CHECK(s.absmax == std::vector<float>{1.0f});
}

TEST_CASE("bnb 4-bit round trip stays within half the widest code gap times the absmax") {
    for (quant_type t : {quant_type::nf4, quant_type::fp4})
        for (std::size_t bs : {32u, 64u, 256u, 4096u})
            for (bool nested : {false, true}) {
                const std::size_t n = 3 * 4096 + 77;
                const auto x = randn(n, static_cast<unsigned>(bs + n), 0.05f);
                quantize_4bit_options o;
                o.type = t;
                o.blocksize = bs;
                o.compress_statistics = nested;
                const auto s = quantize_4bit(x, {n}, o);
                const auto y = dequantize_4bit(s);
                const auto eff = effective_absmax(s);
                const float hg = max_half_gap(code_table(t));
                // Nested absmax: the dynamic map's half gap times the nested block's absmax.
                const float hg8 = max_half_gap(dynamic_map());
                for (std::size_t i = 0; i < n; ++i) {
                    const std::size_t b = i / bs;
                    float am = 0;
                    for (std::size_t k = b * bs; k < std::min(n, (b + 1) * bs); ++k) am = std::max(am, std::fabs(x[k]));
                    float bound = hg * am * 1.0001f;
                    if (nested) {
                        const float na = s.nested->absmax[b / s.nested->blocksize];
                        REQUIRE(std::fabs(eff[b] - am) <= hg8 * na * 1.0001f + 1e-9f);
                        bound += std::fabs(eff[b] - am) + 1e-9f;
                    }
                    REQUIRE(std::fabs(y[i] - x[i]) <= bound);
                }
            }
}

TEST_CASE("bnb nested state: offset is the mean, codes bracket absmax - offset") {
    const auto x = randn(64 * 1000, 7);
    quantize_4bit_options o;
    const auto s = quantize_4bit(x, {1000, 64}, o);
    REQUIRE(s.nested);
    CHECK(s.absmax.empty());
    CHECK(s.nested->codes.size() == 1000);
    CHECK(s.nested->absmax.size() == 4);  // ceil(1000 / 256)
    o.compress_statistics = false;
    const auto plain = quantize_4bit(x, {1000, 64}, o);
    CHECK(plain.packed == s.packed);  // bitsandbytes encodes with the fp32 absmax either way
    double sum = 0;
    for (float a : plain.absmax) sum += a;
    CHECK(s.nested->offset == static_cast<float>(sum / 1000.0));
    o.compress_statistics = true;
    o.offset = 0.25f;
    CHECK(quantize_4bit(x, {1000, 64}, o).nested->offset == 0.25f);
}

TEST_CASE("bnb 8-bit blockwise: codes within half a gap of the dynamic map, both rules") {
    const auto& map = dynamic_map();
    for (kernel_rules r : {kernel_rules::cuda, kernel_rules::cpu}) {
        const auto x = randn(4096 * 3 + 5, 11);
        quantize_blockwise_options o;
        o.rules = r;
        const auto s = quantize_blockwise(x, o);
        REQUIRE(s.absmax.size() == 4);
        const auto y = dequantize_blockwise(s);
        for (std::size_t i = 0; i < x.size(); ++i) {
            const float am = s.absmax[i / 4096];
            const float v = x[i] / am;
            // the gap around v, plus the CPU table's grid step
            const auto it = std::lower_bound(map.begin(), map.end(), v);
            // Below the most negative code (-0.99296875; the map has no -1) only that code is near.
            const float half = it == map.begin() ? map.front() + 1.0f
                                                 : ((it == map.end() ? map.back() : *it) - *(it - 1)) / 2;
            const float slack = r == kernel_rules::cpu ? 2.0f / 65535.0f : 1e-6f;
            REQUIRE(std::fabs(y[i] - x[i]) <= (half + slack) * am * 1.0001f);
        }
    }
}

TEST_CASE("bnb 8-bit: the CUDA search picks the nearest code, the CPU table the nearest to its grid point") {
    const auto& map = dynamic_map();
    std::mt19937 rng(3);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> x(256 * 64);
    for (std::size_t i = 0; i < x.size(); ++i) x[i] = i % 256 == 0 ? 1.0f : u(rng);
    quantize_blockwise_options o;
    o.blocksize = 256;
    const auto s = quantize_blockwise(x, o);
    for (std::size_t i = 0; i < x.size(); ++i) {
        float best = std::numeric_limits<float>::infinity();
        for (float c : map) best = std::min(best, std::fabs(c - x[i]));
        REQUIRE(std::fabs(map[s.codes[i]] - x[i]) == best);
    }
}

TEST_CASE("bnb 4-bit SIMD quantize gives the scalar path's bytes on every instruction set") {
    isa_guard guard;
    std::mt19937 rng(17);
    std::vector<std::vector<float>> inputs;
    inputs.push_back(randn(4096 * 3 + 77, 1));
    inputs.push_back(std::vector<float>(1000, 0.0f));
    auto ties = randn(2048 + 33, 2);
    for (std::size_t i = 0; i < ties.size(); ++i) {
        const auto& b = ::lowbit::detail::nf4_bounds;
        ties[i] = i % 64 == 0 ? 1.0f : (i % 3 ? b[i % 15] : -b[i % 15]);
    }
    inputs.push_back(ties);
    auto mixed = randn(4096 + 5, 3);
    for (std::size_t i = 0; i < mixed.size(); ++i) mixed[i] *= std::ldexp(1.0f, static_cast<int>(rng() % 200) - 140);
    inputs.push_back(mixed);
    for (const auto& x : inputs)
        for (quant_type t : {quant_type::nf4, quant_type::fp4})
            for (kernel_rules r : {kernel_rules::cuda, kernel_rules::cpu})
                for (std::size_t bs : {32u, 64u, 4096u}) {
                    quantize_4bit_options o;
                    o.type = t;
                    o.rules = r;
                    o.blocksize = bs;
                    o.compress_statistics = false;
                    kernels::set_active_isa(kernels::isa::scalar);
                    const auto ref = quantize_4bit(x, {x.size()}, o);
                    for (kernels::isa i : kernels::available_isas()) {
                        kernels::set_active_isa(i);
                        const auto s = quantize_4bit(x, {x.size()}, o);
                        INFO("isa " << kernels::isa_name(i) << " n " << x.size() << " bs " << bs << " fp4 " << (t == quant_type::fp4)
                                    << " cpu " << (r == kernel_rules::cpu));
                        CHECK(s.packed == ref.packed);
                        CHECK(std::memcmp(s.absmax.data(), ref.absmax.data(), s.absmax.size() * 4) == 0);
                    }
                }
}

TEST_CASE("bnb SIMD dequantize equals the scalar path on every instruction set") {
    isa_guard guard;
    std::mt19937 rng(5);
    for (std::size_t n : {1u, 31u, 32u, 33u, 1000u, 4097u}) {
        for (std::size_t bs : {32u, 64u, 128u, 4096u}) {
            std::vector<std::uint8_t> packed((n + 1) / 2), codes(n);
            for (auto& b : packed) b = static_cast<std::uint8_t>(rng());
            for (auto& b : codes) b = static_cast<std::uint8_t>(rng());
            std::vector<float> am((n + bs - 1) / bs);
            for (float& a : am) a = std::ldexp(static_cast<float>(rng() % 1000 + 1), -static_cast<int>(rng() % 40));
            for (auto t : {kernels::out_type::f32, kernels::out_type::f16, kernels::out_type::bf16}) {
                const std::size_t es = t == kernels::out_type::f32 ? 4 : 2;
                std::vector<unsigned char> ref4(n * es), ref8(n * es);
                kernels::bnb4_dequantize_ref({packed.data(), n, bs, am.data(), code_table(quant_type::nf4).data(), ref4.data(), t});
                kernels::bnb8_dequantize_ref({codes.data(), n, bs, am.data(), dynamic_map().data(), ref8.data(), t});
                for (kernels::isa i : kernels::available_isas()) {
                    kernels::set_active_isa(i);
                    std::vector<unsigned char> o4(n * es + 64, 0xAB), o8(n * es + 64, 0xAB);
                    kernels::dispatch(kernels::bnb4_dequantize_fn{},
                                      kernels::bnb4_dequantize_job{packed.data(), n, bs, am.data(),
                                                                   code_table(quant_type::nf4).data(), o4.data(), t});
                    kernels::dispatch(kernels::bnb8_dequantize_fn{},
                                      kernels::bnb8_dequantize_job{codes.data(), n, bs, am.data(), dynamic_map().data(),
                                                                   o8.data(), t});
                    INFO("isa " << kernels::isa_name(i) << " n " << n << " bs " << bs);
                    CHECK(std::memcmp(o4.data(), ref4.data(), n * es) == 0);
                    CHECK(std::memcmp(o8.data(), ref8.data(), n * es) == 0);
                    CHECK(o4[n * es] == 0xAB);  // nothing written past the end
                    CHECK(o8[n * es] == 0xAB);
                }
            }
        }
    }
}

TEST_CASE("bnb 4-bit GEMV and small-batch GEMM match a double-precision product within the summation bound") {
    isa_guard guard;
    struct shape {
        std::size_t rows, cols, bs;
    };
    for (shape sh : {shape{64, 256, 64}, shape{33, 77, 32}, shape{10, 4096, 4096}, shape{7, 100, 64}}) {
        const auto w = randn(sh.rows * sh.cols, static_cast<unsigned>(sh.cols));
        quantize_4bit_options o;
        o.blocksize = sh.bs;
        const auto s = quantize_4bit(w, {sh.rows, sh.cols}, o);
        const auto wd = dequantize_4bit(s);
        const matrix_4bit m(s);
        for (std::size_t batch : {1u, 2u, 3u, 4u, 7u}) {
            const auto x = randn(batch * sh.cols, static_cast<unsigned>(batch));
            for (kernels::isa i : kernels::available_isas()) {
                kernels::set_active_isa(i);
                std::vector<float> y(batch * sh.rows);
                gemv_4bit(m, x, batch, y, 2);
                for (std::size_t b = 0; b < batch; ++b)
                    for (std::size_t r = 0; r < sh.rows; ++r) {
                        double ref = 0, mag = 0;
                        for (std::size_t c = 0; c < sh.cols; ++c) {
                            ref += static_cast<double>(wd[r * sh.cols + c]) * x[b * sh.cols + c];
                            mag += std::fabs(static_cast<double>(wd[r * sh.cols + c]) * x[b * sh.cols + c]);
                        }
                        // Any summation order: |error| <= (cols + 1) * eps * sum |w x|.
                        const double bound = static_cast<double>(sh.cols + 1) * 0x1p-24 * mag + 1e-30;
                        INFO("isa " << kernels::isa_name(i) << " rows " << sh.rows << " cols " << sh.cols);
                        REQUIRE(std::fabs(y[b * sh.rows + r] - ref) <= bound);
                    }
            }
        }
    }
}

TEST_CASE("int8 GEMM equals the scalar product exactly on every instruction set") {
    isa_guard guard;
    std::mt19937 rng(9);
    for (std::size_t k : {1u, 15u, 32u, 64u, 100u, 129u, 4096u}) {
        const std::size_t m = 3, n = 37;
        std::vector<std::int8_t> a(m * k), b(n * k);
        for (auto& v : a) v = static_cast<std::int8_t>(static_cast<int>(rng() % 256) - 128);
        for (auto& v : b) v = static_cast<std::int8_t>(static_cast<int>(rng() % 256) - 128);
        std::vector<std::int32_t> ref(m * n), out(m * n);
        kernels::int8_gemm_ref({a.data(), m, k, k, b.data(), k, ref.data(), n, 0, n});
        for (bool vnni : {true, false}) {
            kernels::allow_int8_vnni(vnni);  // the AVX-512BW path too, on CPUs with VNNI
            for (kernels::isa i : kernels::available_isas()) {
                kernels::set_active_isa(i);
                std::fill(out.begin(), out.end(), 0);
                kernels::dispatch(kernels::int8_gemm_fn{},
                                  kernels::int8_gemm_job{a.data(), m, k, k, b.data(), k, out.data(), n, 0, n});
                INFO("isa " << kernels::isa_name(i) << " k " << k << " vnni allowed " << vnni);
                CHECK(out == ref);
            }
        }
        kernels::allow_int8_vnni(true);
    }
}

TEST_CASE("LLM.int8(): row-wise int8 weights and the mixed int8/fp product stay within the rounding bound") {
    const std::size_t rows = 48, cols = 96, batch = 5;
    auto w = randn(rows * cols, 21, 0.02f);
    for (std::size_t c = 0; c < cols; ++c) w[c] = 0.0f;  // an all-zero row
    const auto q = quantize_int8_rows(w, rows, cols);
    CHECK(q.scb[0] == 0.0f);
    for (std::size_t r = 1; r < rows; ++r) {
        float am = 0;
        for (std::size_t c = 0; c < cols; ++c) am = std::max(am, std::fabs(w[r * cols + c]));
        REQUIRE(q.scb[r] == am);
        for (std::size_t c = 0; c < cols; ++c)
            REQUIRE(std::fabs(q.q[r * cols + c] * am / 127.0f - w[r * cols + c]) <= am / 254.0f * 1.0001f);
    }
    auto x = randn(batch * cols, 22);
    x[1 * cols + 3] = 9.0f;    // outliers in columns 3 and 50
    x[4 * cols + 50] = -7.5f;
    const auto a = quantize_int8_activations(x, batch, cols, 6.0f);
    CHECK(a.outlier_cols == std::vector<std::size_t>{3, 50});
    for (std::size_t i = 0; i < batch; ++i) CHECK(a.q[i * cols + 3] == 0);
    for (float threshold : {6.0f, 0.0f}) {
        const auto y = int8_linear(x, batch, q, threshold);
        const auto aa = quantize_int8_activations(x, batch, cols, threshold);
        for (std::size_t i = 0; i < batch; ++i)
            for (std::size_t n = 0; n < rows; ++n) {
                double ref = 0, bound = 0;
                const double sx = aa.row_stats[i] / 127.0, sw = q.scb[n] / 127.0;
                for (std::size_t c = 0; c < cols; ++c) {
                    const double xv = x[i * cols + c], wv = w[n * cols + c];
                    ref += xv * wv;
                    const bool outlier = std::find(aa.outlier_cols.begin(), aa.outlier_cols.end(), c) != aa.outlier_cols.end();
                    // |x w - x' w'| <= |x| dw + |w| dx + dx dw, dx <= sx/2, dw <= sw/2; outliers keep x exact.
                    bound += outlier ? std::fabs(xv) * sw / 2 : std::fabs(xv) * sw / 2 + std::fabs(wv) * sx / 2 + sx * sw / 4;
                }
                bound = bound * 1.001 + 1e-5 * (std::fabs(ref) + 1e-3);
                INFO("threshold " << threshold << " row " << i << " out " << n);
                REQUIRE(std::fabs(y[i * rows + n] - ref) <= bound);
            }
    }
}

TEST_CASE("bnb quant_state JSON is what QuantState.as_dict(packed=True) writes") {
    CHECK(json::format_double_python(0.1) == "0.1");
    CHECK(json::format_double_python(static_cast<double>(0.1f)) == "0.10000000149011612");
    CHECK(json::format_double_python(1e-05) == "1e-05");
    CHECK(json::format_double_python(1.5e-07) == "1.5e-07");
    CHECK(json::format_double_python(0.0001) == "0.0001");
    CHECK(json::format_double_python(1e16) == "1e+16");
    CHECK(json::format_double_python(123.0) == "123.0");
    CHECK(json::format_double_python(-2.5) == "-2.5");
    CHECK(json::format_double_python(123456789012345680.0) == "1.2345678901234568e+17");
    quant_state_4bit s;
    s.type = quant_type::nf4;
    s.blocksize = 64;
    s.dtype = source_dtype::bfloat16;
    s.shape = {4096, 11008};
    CHECK(quant_state_json(s) == R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4096, 11008]})");
    s.nested = nested_state{};
    s.nested->offset = 0.1f;
    CHECK(quant_state_json(s) == R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4096, 11008], )"
                                 R"("nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.10000000149011612})");
    CHECK(quant_state_key(quant_type::fp4) == "quant_state.bitsandbytes__fp4");
}

TEST_CASE("bnb: bad input is a lowbit::error naming the problem") {
    const std::vector<float> x(64, 1.0f);
    quantize_4bit_options o;
    o.blocksize = 48;
    CHECK_THROWS_AS(quantize_4bit(x, {64}, o), lowbit::error);
    o.blocksize = 64;
    CHECK_THROWS_AS(quantize_4bit(x, {65}, o), lowbit::error);
    auto bad = x;
    bad[17] = std::numeric_limits<float>::quiet_NaN();
    try {
        quantize_4bit(bad, {64}, o);
        FAIL("no error");
    } catch (const lowbit::error& e) {
        CHECK(std::string(e.what()).find("element 17") != std::string::npos);
    }
    auto s = quantize_4bit(x, {64}, o);
    s.packed.pop_back();
    CHECK_THROWS_AS(dequantize_4bit(s), lowbit::error);
    CHECK_THROWS_AS(parse_quant_type("nf3"), lowbit::error);
    CHECK_THROWS_AS(quantize_int8_rows(x, 3, 3), lowbit::error);
}
