#include "catch.hpp"

#include <lowbit/formats/ggml.hpp>
#include <lowbit/formats/ggml_validate.hpp>
#include <lowbit/kernels/ggml_quantize.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

using namespace lowbit;
using namespace lowbit::kernels;

namespace {

const std::vector<ggml::type>& simd_types() {
    using ggml::type;
    static const std::vector<type> v = {type::q4_k,   type::q5_k, type::q2_k, type::q3_k, type::q6_k,
                                        type::iq4_nl, type::iq4_xs, type::q4_0, type::q4_1, type::q5_0,
                                        type::q5_1,   type::q8_0, type::mxfp4, type::tq1_0, type::tq2_0};
    return v;
}

std::string type_name(ggml::type t) { return std::string(ggml::traits(t).name); }

// Fills one 16-value stretch of a row with one of the cases the searches
// branch on: ordinary data at scales from 1e-4 to 1e4, outliers, all zero,
// constant, below ggml's 1e-15 threshold, one sign only, values on a coarse
// grid (exact ties for the rounding), and a few denormals and huge values.
void fill_stretch(float* p, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<float> ud(0.f, 1.f);
    const float scale = std::pow(10.f, -4.f + 8.f * ud(rng));
    const int kind = static_cast<int>(rng() % 16);
    for (int i = 0; i < 16; ++i) {
        float v = nd(rng) * scale;
        switch (kind) {
        case 0: v = 0.f; break;
        case 1: v = scale; break;
        case 2: v = -scale * 0.5f; break;
        case 3: v = nd(rng) * 1e-17f; break;
        case 4: v = std::fabs(v); break;
        case 5: v = -std::fabs(v); break;
        case 6: v = static_cast<float>(static_cast<int>(rng() % 9) - 4) * 0.5f * scale; break;
        case 7: v = static_cast<float>(static_cast<int>(rng() % 32)); break;
        case 8:
            if (rng() % 8 == 0) v *= 1000.f;
            break;
        case 9: v = (i == 3) ? 50.f * scale : v * 0.01f; break;
        case 10: v = std::numeric_limits<float>::denorm_min() * static_cast<float>(rng() % 100); break;
        case 11: v = (rng() % 2) ? 0.f : v; break;
        default: break;
        }
        p[i] = v;
    }
}

std::vector<float> random_rows(std::size_t rows, std::size_t n, std::mt19937& rng) {
    std::vector<float> x(rows * n);
    for (std::size_t i = 0; i < x.size(); i += 16) fill_stretch(x.data() + i, rng);
    return x;
}

std::vector<float> random_imatrix(std::size_t n, std::mt19937& rng) {
    std::uniform_real_distribution<float> ud(0.f, 1.f);
    std::vector<float> w(n);
    for (auto& v : w) {
        const unsigned k = rng() % 10;
        v = k == 0 ? 0.f : k == 1 ? 1.f : std::pow(10.f, -3.f + 6.f * ud(rng));
    }
    return w;
}

// Where the first difference is: block, byte in the block, the two bytes.
std::string first_diff(const std::vector<unsigned char>& a, const std::vector<unsigned char>& b,
                       std::size_t block_bytes) {
    for (std::size_t i = 0; i < a.size() && i < b.size(); ++i)
        if (a[i] != b[i])
            return "block " + std::to_string(i / block_bytes) + " byte " + std::to_string(i % block_bytes) + ": " +
                   std::to_string(a[i]) + " vs " + std::to_string(b[i]);
    return "none";
}

void check_same_bytes(ggml::type t, bool with_imatrix, std::size_t rows, std::size_t n, std::uint32_t seed) {
    std::mt19937 rng(seed);
    const std::vector<float> x = random_rows(rows, n, rng);
    const std::vector<float> qw = random_imatrix(n, rng);
    const float* im = with_imatrix ? qw.data() : nullptr;
    const std::size_t bytes = rows * ggml::row_bytes(t, n);
    std::vector<unsigned char> ref(bytes, 0xAA);
    ggml::quantize_rows(t, x.data(), ref.data(), rows, n, im);
    for (isa i : available_isas()) {
        // Offset by one byte: the kernel must not need aligned output.
        std::vector<unsigned char> buf(bytes + 1, 0x55);
        dispatch_to(i, quantize_ggml_fn{}, ggml_quantize_job{t, x.data(), buf.data() + 1, rows, n, im});
        std::vector<unsigned char> got(buf.begin() + 1, buf.end());
        INFO(type_name(t) << " on " << isa_name(i) << (im ? " with imatrix" : "") << ", " << rows << " rows of " << n
                          << ", first difference at " << first_diff(ref, got, ggml::traits(t).type_size));
        REQUIRE(std::memcmp(ref.data(), got.data(), bytes) == 0);
    }
}

const std::vector<ggml::type>& legacy_types() {
    using ggml::type;
    static const std::vector<type> v = {type::q4_0, type::q4_1, type::q5_0,  type::q5_1,
                                        type::q8_0, type::mxfp4, type::tq1_0, type::tq2_0};
    return v;
}

// One 32-value block for the per-value quantizers: scales 1e-6 to 1e6 (d
// overflows fp16 at the top), outliers, zero and constant blocks, signed
// zeros, +-amax pairs (the first one must win), values on the quantizers'
// grids (exact .5 ties after scaling), subnormals, maxima near 2^-128, zeros
// beside one-signed values, NaN-heavy blocks, and Inf.
void fill_block32(float* p, std::mt19937& rng) {
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<float> ud(0.f, 1.f);
    const float scale = std::pow(10.f, -6.f + 12.f * ud(rng));
    const int kind = static_cast<int>(rng() % 26);
    for (int i = 0; i < 32; ++i) {
        float v = nd(rng) * scale;
        switch (kind) {
        case 0: v = 0.f; break;
        case 1: v = -0.f; break;
        case 2: v = (rng() % 2) ? 0.f : -0.f; break;
        case 3: v = scale; break;
        case 4: v = -scale; break;
        case 5: v = (rng() % 2) ? scale : -scale; break;
        case 6: v = static_cast<float>(static_cast<int>(rng() % 33) - 16) * 0.5f * scale; break;
        case 7: v = static_cast<float>(static_cast<int>(rng() % 17) - 8) * 0.0625f * 8.f; break;
        case 8: v = static_cast<float>(static_cast<int>(rng() % 31)) * 0.5f; break;
        case 9: v = static_cast<float>(static_cast<int>(rng() % 255) - 127) * 0.5f; break;
        case 10: v = (i == 5) ? 40.f * scale : v * 0.01f; break;
        case 11: v = std::numeric_limits<float>::denorm_min() * static_cast<float>(rng() % 100); break;
        case 12: v = std::fabs(v); break;
        case 13: v = -std::fabs(v); break;
        case 14: v = (i == 31 || i == 2) ? ((i == 2) ? -1e6f : 1e6f) : v; break;
        case 15:
            if (rng() % 64 == 0) v = (rng() % 2) ? std::numeric_limits<float>::infinity() : std::nanf("");
            break;
        case 16: v = static_cast<float>(static_cast<int>(rng() % 25) - 12) * std::ldexp(1.f, static_cast<int>(rng() % 20) - 10); break;
        case 17: v = 65504.f * 8.f * (1.f + 0.01f * ud(rng)) * ((rng() % 2) ? 1.f : -1.f); break;
        // Maxima near 2^-128, where 1/d turns infinite and d loses precision.
        case 18: v = std::ldexp(ud(rng), -122 - static_cast<int>(rng() % 10)) * ((rng() % 2) ? 1.f : -1.f); break;
        case 19: v = (rng() % 4) ? std::nanf("") : v; break;
        // A zero min or max: its sign is the first zero's.
        case 20: v = (rng() % 3) ? std::fabs(v) : ((rng() % 2) ? 0.f : -0.f); break;
        case 21: v = (rng() % 3) ? -std::fabs(v) : ((rng() % 2) ? 0.f : -0.f); break;
        case 22:
            if (rng() % 4 == 0) v = std::copysign(std::numeric_limits<float>::infinity(), v);
            break;
        default: break;
        }
        p[i] = v;
    }
}

void check_legacy(ggml::type t, std::size_t rows, std::size_t n, std::uint32_t seed, bool im) {
    std::mt19937 rng(seed);
    std::vector<float> x(rows * n);
    for (std::size_t i = 0; i < x.size(); i += 32) fill_block32(x.data() + i, rng);
    const std::vector<float> qw = random_imatrix(n, rng);
    const std::size_t bytes = rows * ggml::row_bytes(t, n);
    std::vector<unsigned char> ref(bytes, 0xAA);
    ggml::quantize_rows(t, x.data(), ref.data(), rows, n, nullptr);
    for (isa i : available_isas()) {
        std::vector<unsigned char> buf(bytes + 3, 0x55);
        dispatch_to(i, quantize_ggml_fn{}, ggml_quantize_job{t, x.data(), buf.data() + 3, rows, n, im ? qw.data() : nullptr});
        std::vector<unsigned char> got(buf.begin() + 3, buf.end());
        INFO(type_name(t) << " on " << isa_name(i) << ", " << rows << " rows of " << n << ", seed " << seed
                          << ", first difference at " << first_diff(ref, got, ggml::traits(t).type_size));
        REQUIRE(std::memcmp(ref.data(), got.data(), bytes) == 0);
        CHECK(buf[0] == 0x55);
    }
}

}  // namespace

TEST_CASE("SIMD legacy, MXFP4, TQ1_0 and TQ2_0 quantizers: edge-case blocks on every ISA", "[kernels][ggml_quantize]") {
    std::uint32_t seed = 1000;
    for (ggml::type t : legacy_types()) {
        REQUIRE(quantize_ggml_simd_supports(t, false));
        const std::size_t bs = ggml::traits(t).block_size;
        // Block counts that are not multiples of the 16-block group.
        for (std::size_t nb : {1, 3, 8, 16, 17, 40}) check_legacy(t, 97, bs * nb, seed++, false);
        check_legacy(t, 1, bs, seed++, false);
        if (quantize_ggml_simd_supports(t, true)) check_legacy(t, 33, bs * 8, seed++, true);
    }
}

TEST_CASE("SIMD ggml quantizers give the scalar bytes on every ISA", "[kernels][ggml_quantize]") {
    std::uint32_t seed = 1;
    for (ggml::type t : simd_types()) {
        for (bool im : {false, true}) {
            if (!quantize_ggml_simd_supports(t, im)) continue;
            // Rows of 1 to 5 super-blocks, so tiles of several super-blocks
            // cross row ends and the last tile is partly empty.
            for (std::size_t nsb = 1; nsb <= 5; ++nsb) check_same_bytes(t, im, 601, 256 * nsb, seed++);
            check_same_bytes(t, im, 1, 256, seed++);
            if (t == ggml::type::iq4_nl) check_same_bytes(t, im, 601, 96, seed++);
            check_same_bytes(t, im, 3, 256, seed++);
        }
    }
}

TEST_CASE("SIMD ggml quantizers: N(0,1) rows at LLM width", "[kernels][ggml_quantize]") {
    for (ggml::type t : simd_types()) {
        for (bool im : {false, true}) {
            if (!quantize_ggml_simd_supports(t, im)) continue;
            std::mt19937 rng(1234);
            std::normal_distribution<float> nd(0.f, 1.f);
            const std::size_t rows = 64, n = 4096;
            std::vector<float> x(rows * n);
            for (auto& v : x) v = nd(rng);
            const std::vector<float> qw = random_imatrix(n, rng);
            const float* imp = im ? qw.data() : nullptr;
            const std::size_t bytes = rows * ggml::row_bytes(t, n);
            std::vector<unsigned char> ref(bytes), got(bytes);
            ggml::quantize_rows(t, x.data(), ref.data(), rows, n, imp);
            for (isa i : available_isas()) {
                std::memset(got.data(), 0, bytes);
                dispatch_to(i, quantize_ggml_fn{}, ggml_quantize_job{t, x.data(), got.data(), rows, n, imp});
                INFO(type_name(t) << " on " << isa_name(i) << (im ? " with imatrix" : "") << ", first difference at "
                                  << first_diff(ref, got, ggml::traits(t).type_size));
                REQUIRE(std::memcmp(ref.data(), got.data(), bytes) == 0);
            }
        }
    }
}

TEST_CASE("quantize_ggml_rows: validation, fallback and the active ISA", "[kernels][ggml_quantize]") {
    std::mt19937 rng(7);
    const std::vector<float> x = random_rows(8, 512, rng);
    const std::vector<float> qw = random_imatrix(512, rng);
    // Every quantizable type, SIMD or not, with and without an imatrix.
    for (ggml::type t : {ggml::type::q4_k, ggml::type::q3_k, ggml::type::q8_0, ggml::type::iq4_xs,
                         ggml::type::q6_k, ggml::type::q2_k, ggml::type::q5_k}) {
        for (const float* im : {static_cast<const float*>(nullptr), qw.data()}) {
            // Row by row: a row whose blocks ggml's own validation rejects
            // (an fp16 scale that overflowed on this data's 1e7 outliers) is an
            // error naming it; every other row has ggml's bytes.
            const std::size_t rb = ggml::row_bytes(t, 512);
            std::size_t valid = 0;
            for (std::size_t r = 0; r < 8; ++r) {
                std::vector<unsigned char> ref(rb), got(rb);
                ggml::quantize_rows(t, x.data() + r * 512, ref.data(), 1, 512, im);
                // Beyond the type's range ggml clamps (or writes an infinite scale): an error here.
                float amax = 0;
                for (std::size_t c = 0; c < 512; ++c) amax = std::max(amax, std::fabs(x[r * 512 + c]));
                const bool bad = ggml::find_invalid_block(t, std::as_bytes(std::span(ref))).has_value() ||
                                 amax > kernels::detail::ggml_quant::value_limit(t);
                valid += !bad;
                const isa before = active_isa();
                for (isa i : available_isas()) {
                    set_active_isa(i);
                    std::memset(got.data(), 0, rb);
                    INFO(type_name(t) << " row " << r << " on " << isa_name(i) << (im ? " with imatrix" : ""));
                    if (bad) {
                        CHECK_THROWS_WITH(quantize_ggml_rows(t, x.data() + r * 512, got.data(), 1, 512, im),
                                          Catch::Contains("cannot hold these values") ||
                                              Catch::Contains("range (largest magnitude"));
                    } else {
                        quantize_ggml_rows(t, x.data() + r * 512, got.data(), 1, 512, im);
                        CHECK(ref == got);
                    }
                }
                set_active_isa(before);
            }
            CHECK(valid >= 4);
        }
    }
    std::vector<unsigned char> out(4096);
    CHECK_THROWS_AS(quantize_ggml_rows(ggml::type::q4_k, x.data(), out.data(), 1, 100), error);
    CHECK_THROWS_AS(quantize_ggml_rows(ggml::type::q4_k, nullptr, out.data(), 1, 256), error);
    CHECK_NOTHROW(quantize_ggml_rows(ggml::type::q4_k, nullptr, nullptr, 0, 256));
}

TEST_CASE("quantize_ggml_rows: NaN and Inf are errors naming row and column, on every source type",
          "[kernels][ggml_quantize]") {
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> x(4 * 256);
    for (auto& v : x) v = nd(rng);
    std::vector<unsigned char> out(4 * ggml::row_bytes(ggml::type::q8_0, 256));
    const float bad[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                         -std::numeric_limits<float>::infinity()};
    const char* names[] = {"NaN", "+Inf", "-Inf"};
    for (int k = 0; k < 3; ++k)
        for (std::size_t at : {std::size_t{0}, std::size_t{2 * 256 + 77}, std::size_t{4 * 256 - 1}}) {
            auto y = x;
            y[at] = bad[k];
            const std::string want = "row " + std::to_string(at / 256) + ", column " + std::to_string(at % 256) +
                                     " is " + names[k];
            std::vector<std::uint16_t> h(y.size()), b(y.size());
            for (std::size_t i = 0; i < y.size(); ++i) h[i] = float_to_fp16(y[i]), b[i] = float_to_bf16(y[i]);
            for (ggml::type t : {ggml::type::q8_0, ggml::type::q4_k, ggml::type::iq4_nl}) {
                INFO(type_name(t) << ": " << want);
                CHECK_THROWS_WITH(quantize_ggml_rows(t, y.data(), out.data(), 4, 256), Catch::Contains(want));
                CHECK_THROWS_WITH(quantize_ggml_rows(t, ggml::type::f16, h.data(), out.data(), 4, 256),
                                  Catch::Contains(want));
                CHECK_THROWS_WITH(quantize_ggml_rows(t, ggml::type::bf16, b.data(), out.data(), 4, 256),
                                  Catch::Contains(want));
            }
        }
}

TEST_CASE("quantize_ggml_rows: finite values a type cannot hold are errors, never an Inf scale",
          "[kernels][ggml_quantize]") {
    // ggml writes these blocks with an infinite fp16 d, which its own
    // ggml_validate_row_data then rejects.
    std::vector<float> x(256, 0.01f);
    x[40] = -1e6f;  // Q4_1: within m + 15 d's reach, but m = -1e6 is beyond fp16
    std::vector<unsigned char> out(ggml::row_bytes(ggml::type::q4_1, 256));
    CHECK_THROWS_WITH(quantize_ggml_rows(ggml::type::q4_1, x.data(), out.data(), 1, 256),
                      Catch::Contains("row 0, columns 32-63: a q4_1 block cannot hold these values") &&
                          Catch::Contains("-1000000 at column 40"));
    // Q4_0: d = max / -8 = 125000 > 65504; beyond what a Q4_0 block can give back.
    CHECK_THROWS_WITH(quantize_ggml_rows(ggml::type::q4_0, x.data(), out.data(), 1, 256),
                      Catch::Contains("row 0, column 40: -1000000 is beyond q4_0's range"));
    // Near float's top, where ggml's Q6_K, Q3_K and IQ4_XS searches overflow
    // an fp32 sum and code the value silently as 0.
    x[40] = 3.0e38f;
    for (ggml::type t : {ggml::type::q8_0, ggml::type::q4_1, ggml::type::q4_k, ggml::type::q6_k, ggml::type::q3_k,
                         ggml::type::iq4_xs, ggml::type::iq4_nl, ggml::type::q2_k, ggml::type::q5_k, ggml::type::tq2_0}) {
        std::vector<unsigned char> o(ggml::row_bytes(t, 256));
        INFO(type_name(t));
        CHECK_THROWS_WITH(quantize_ggml_rows(t, x.data(), o.data(), 1, 256),
                          Catch::Contains("row 0, column 40: 3.00000001e+38 is beyond"));
    }
    // Every value a type accepts comes back finite: the range bound at work
    // just below it (scaled so the sub-blocks keep the largest sub-scale).
    for (ggml::type t : simd_types()) {
        if (t == ggml::type::mxfp4) continue;
        const float lim = kernels::detail::ggml_quant::value_limit(t);
        std::vector<float> y(256);
        for (std::size_t i = 0; i < 256; ++i) y[i] = (i % 2 ? -0.99f : 0.99f) * lim * ((i % 7) + 1) / 7;
        std::vector<unsigned char> o(ggml::row_bytes(t, 256));
        std::vector<float> back(256);
        INFO(type_name(t));
        try {
            quantize_ggml_rows(t, y.data(), o.data(), 1, 256);
            ggml::dequantize_rows(t, o.data(), back.data(), 1, 256);
            for (float v : back) REQUIRE(std::isfinite(v));
        } catch (const error& e) {
            // A block whose fp16 scale still overflows is refused, never written.
            CHECK(std::string(e.what()).find("cannot hold these values") != std::string::npos);
        }
    }
    x[40] = 1e5f;
    std::vector<unsigned char> o16(2 * 256);
    CHECK_THROWS_WITH(quantize_ggml_rows(ggml::type::f16, x.data(), o16.data(), 1, 256),
                      Catch::Contains("row 0, column 40: 100000 is beyond f16's range"));
    // Within range the same row quantizes.
    x[40] = 60000.f;
    CHECK_NOTHROW(quantize_ggml_rows(ggml::type::f16, x.data(), o16.data(), 1, 256));
    // The midpoints to the next power of two round to even, i.e. to Inf: refused.
    x[40] = 65520.f;
    CHECK_THROWS_WITH(quantize_ggml_rows(ggml::type::f16, x.data(), o16.data(), 1, 256),
                      Catch::Contains("row 0, column 40: 65520 is beyond f16's range"));
    x[40] = std::nextafter(65520.f, 0.f);
    CHECK_NOTHROW(quantize_ggml_rows(ggml::type::f16, x.data(), o16.data(), 1, 256));
    x[40] = std::bit_cast<float>(0x7F7F8000u);  // bf16's midpoint to 2^128
    CHECK_THROWS_WITH(quantize_ggml_rows(ggml::type::bf16, x.data(), o16.data(), 1, 256),
                      Catch::Contains("row 0, column 40: 3.39617753e+38 is beyond bf16's range"));
    x[40] = std::bit_cast<float>(0x7F7F7FFFu);
    CHECK_NOTHROW(quantize_ggml_rows(ggml::type::bf16, x.data(), o16.data(), 1, 256));
    for (std::size_t i = 0; i < 256; ++i) REQUIRE(((o16[2 * i + 1] & 0x7F) != 0x7F || (o16[2 * i] & 0x80) == 0));
}

TEST_CASE("SIMD MXFP4: amax at and just below powers of two keeps log2f's exponent", "[kernels][ggml_quantize]") {
    // floor(log2f(a)) rounds up to the next integer for mantissas a hair
    // below 2, so the exponent is not just a's: sweep both sides of the edge.
    std::mt19937 rng(99);
    std::uniform_real_distribution<float> ud(-0.5f, 0.5f);
    const std::size_t blocks = 16 * 9, n = 32 * blocks;
    std::vector<float> x(n);
    std::size_t b = 0;
    for (int e = -140; e <= 127; e += 3) {
        const std::uint32_t below2[] = {0x007FFFFFu, 0x007FFFF0u, 0x007FF800u, 0x007FF7FFu, 0x007F0000u, 0x0u};
        for (std::uint32_t m : below2) {
            if (b == blocks) break;
            const int be = std::max(1, std::min(254, e + 127));
            const float a = std::bit_cast<float>((static_cast<std::uint32_t>(be) << 23) | m);
            for (int j = 0; j < 32; ++j) x[32 * b + j] = a * ud(rng);
            x[32 * b + static_cast<std::size_t>(rng() % 32)] = (rng() % 2) ? a : -a;
            ++b;
        }
    }
    for (; b < blocks; ++b)
        for (int j = 0; j < 32; ++j) x[32 * b + j] = std::numeric_limits<float>::denorm_min() * static_cast<float>(j);
    const std::size_t bytes = ggml::row_bytes(ggml::type::mxfp4, n);
    std::vector<unsigned char> ref(bytes), got(bytes);
    ggml::quantize_rows(ggml::type::mxfp4, x.data(), ref.data(), 1, n, nullptr);
    for (isa i : available_isas()) {
        std::memset(got.data(), 0, bytes);
        dispatch_to(i, quantize_ggml_fn{}, ggml_quantize_job{ggml::type::mxfp4, x.data(), got.data(), 1, n, nullptr});
        INFO("mxfp4 on " << isa_name(i) << ", first difference at " << first_diff(ref, got, ggml::traits(ggml::type::mxfp4).type_size));
        REQUIRE(ref == got);
    }
}
