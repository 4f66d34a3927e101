#include "catch.hpp"

#include <lowbit/formats/ggml_blocks.hpp>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace g = lowbit::ggml;

namespace {

struct type_fns {
    const char* name;
    std::size_t block_size;
    std::size_t type_size;
    g::quantize_row_fn quantize;
    g::dequantize_row_fn dequantize;
    bool uses_imatrix;
};

// Every type of this header, through the function-pointer signatures the
// ggml type table uses (which also checks that the signatures match).
const type_fns all_types[] = {
    {"q4_0", 32, sizeof(g::block_q4_0), g::quantize_row_q4_0, g::dequantize_row_q4_0, true},
    {"q4_1", 32, sizeof(g::block_q4_1), g::quantize_row_q4_1, g::dequantize_row_q4_1, true},
    {"q5_0", 32, sizeof(g::block_q5_0), g::quantize_row_q5_0, g::dequantize_row_q5_0, true},
    {"q5_1", 32, sizeof(g::block_q5_1), g::quantize_row_q5_1, g::dequantize_row_q5_1, true},
    {"q8_0", 32, sizeof(g::block_q8_0), g::quantize_row_q8_0, g::dequantize_row_q8_0, false},
    {"q8_1", 32, sizeof(g::block_q8_1), g::quantize_row_q8_1, g::dequantize_row_q8_1, false},
    {"iq4_nl", 32, sizeof(g::block_iq4_nl), g::quantize_row_iq4_nl, g::dequantize_row_iq4_nl, true},
    {"iq4_xs", 256, sizeof(g::block_iq4_xs), g::quantize_row_iq4_xs, g::dequantize_row_iq4_xs, true},
    {"mxfp4", 32, sizeof(g::block_mxfp4), g::quantize_row_mxfp4, g::dequantize_row_mxfp4, false},
    {"tq1_0", 256, sizeof(g::block_tq1_0), g::quantize_row_tq1_0, g::dequantize_row_tq1_0, false},
    {"tq2_0", 256, sizeof(g::block_tq2_0), g::quantize_row_tq2_0, g::dequantize_row_tq2_0, false},
};

std::vector<std::uint8_t> quantize(const type_fns& t, const std::vector<float>& x, const float* imatrix = nullptr) {
    std::vector<std::uint8_t> out(x.size() / t.block_size * t.type_size);
    t.quantize(x.data(), out.data(), x.size(), imatrix);
    return out;
}

std::vector<float> dequantize(const type_fns& t, const std::vector<std::uint8_t>& q, std::size_t n) {
    std::vector<float> y(n);
    t.dequantize(q.data(), y.data(), n);
    return y;
}

template <class Block>
std::vector<std::uint8_t> bytes_of(const Block& b) {
    std::vector<std::uint8_t> v(sizeof(Block));
    std::memcpy(v.data(), &b, sizeof(Block));
    return v;
}

template <class Block, class Fn>
Block quantize_block(Fn fn, const float* x, const float* imatrix = nullptr) {
    Block b;
    std::memset(&b, 0xA5, sizeof b);  // every byte must be written
    fn(x, &b, Block::block_size, imatrix);
    return b;
}

// Simple pseudo-random floats built with exact arithmetic only (no libm), so
// the inputs of the golden vectors are the same floats everywhere.
std::uint32_t lcg(std::uint32_t& s) {
    s = s * 1664525u + 1013904223u;
    return s;
}
float unit(std::uint32_t& s) { return static_cast<float>(lcg(s) >> 8) * 0x1p-24f; }  // [0, 1)

// Uniform values with outliers every 37th element, an all-zero 32-block and
// a 32-block of exact halves (rounding ties).
std::vector<float> golden_input(std::size_t n) {
    std::vector<float> x(n);
    std::uint32_t s = 20240601u;
    for (std::size_t i = 0; i < n; ++i) {
        const float u = unit(s);
        float v = (u - 0.5f) * 4.0f;
        if (i % 37 == 5) v *= 8.0f;
        if (i >= 160 && i < 192) v = 0.0f;
        if (i >= 192 && i < 224) v = static_cast<float>(static_cast<int>(u * 16.0f) - 8) * 0.5f;
        x[i] = v;
    }
    return x;
}

std::vector<float> golden_imatrix(std::size_t n) {
    std::vector<float> w(n);
    std::uint32_t s = 7u;
    for (std::size_t i = 0; i < n; ++i) {
        w[i] = 0.125f + unit(s) * 4.0f;
        if (i % 11 == 3) w[i] = 0.0f;
    }
    return w;
}

std::vector<float> gaussian_row(std::size_t n, std::uint32_t seed, float scale) {
    // Box-Muller on the exact uniforms; only the statistics matter here.
    std::vector<float> x(n);
    std::uint32_t s = seed;
    for (std::size_t i = 0; i < n; ++i) {
        const float u1 = unit(s) + 0x1p-25f, u2 = unit(s);
        x[i] = scale * std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
    }
    return x;
}

std::string to_hex(const std::vector<std::uint8_t>& v) {
    static const char digits[] = "0123456789abcdef";
    std::string s;
    for (auto b : v) {
        s += digits[b >> 4];
        s += digits[b & 15];
    }
    return s;
}

float rel_rmse(const std::vector<float>& x, const std::vector<float>& y) {
    double num = 0, den = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
        num += double(x[i] - y[i]) * double(x[i] - y[i]);
        den += double(x[i]) * double(x[i]);
    }
    return static_cast<float>(std::sqrt(num / den));
}

}  // namespace

// ---- Layout --------------------------------------------------------------------

TEST_CASE("ggml block structs have ggml's sizes and field offsets") {
    STATIC_REQUIRE(sizeof(g::block_q4_0) == 18);
    STATIC_REQUIRE(sizeof(g::block_q4_1) == 20);
    STATIC_REQUIRE(sizeof(g::block_q5_0) == 22);
    STATIC_REQUIRE(sizeof(g::block_q5_1) == 24);
    STATIC_REQUIRE(sizeof(g::block_q8_0) == 34);
    STATIC_REQUIRE(sizeof(g::block_q8_1) == 36);
    STATIC_REQUIRE(sizeof(g::block_iq4_nl) == 18);
    STATIC_REQUIRE(sizeof(g::block_iq4_xs) == 136);
    STATIC_REQUIRE(sizeof(g::block_mxfp4) == 17);
    STATIC_REQUIRE(sizeof(g::block_tq1_0) == 54);
    STATIC_REQUIRE(sizeof(g::block_tq2_0) == 66);
    REQUIRE(offsetof(g::block_q5_0, qh) == 2);
    REQUIRE(offsetof(g::block_q5_0, qs) == 6);
    REQUIRE(offsetof(g::block_q5_1, qh) == 4);
    REQUIRE(offsetof(g::block_q5_1, qs) == 8);
    REQUIRE(offsetof(g::block_iq4_xs, scales_h) == 2);
    REQUIRE(offsetof(g::block_iq4_xs, scales_l) == 4);
    REQUIRE(offsetof(g::block_iq4_xs, qs) == 8);
    REQUIRE(offsetof(g::block_tq1_0, qh) == 48);
    REQUIRE(offsetof(g::block_tq1_0, d) == 52);
    REQUIRE(offsetof(g::block_tq2_0, d) == 64);
    for (const auto& t : all_types) {
        const auto tr = g::find_base_traits(static_cast<std::uint32_t>([&] {
            for (const auto& b : g::detail::base_traits)
                if (b.name == t.name) return b.id;
            return g::type::f32;
        }()));
        REQUIRE(tr);
        CHECK(tr->block_size == t.block_size);
        CHECK(tr->type_size == t.type_size);
    }
}

// ---- Hand-derived bytes ------------------------------------------------------------

TEST_CASE("q4_0: d = max / -8, round half up, element j low nibble, j + 16 high") {
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);  // max = -16 -> d = 2
    const auto b = quantize_block<g::block_q4_0>(g::quantize_row_q4_0, x);
    CHECK(b.d == 0x4000);  // fp16 2.0
    // q = (j - 16) / 2 + 8.5 truncated: j / 2 rounded up, and 16 clamped to 15.
    const std::uint8_t expected[16] = {0x80, 0x91, 0x91, 0xA2, 0xA2, 0xB3, 0xB3, 0xC4,
                                       0xC4, 0xD5, 0xD5, 0xE6, 0xE6, 0xF7, 0xF7, 0xF8};
    CHECK(std::memcmp(b.qs, expected, 16) == 0);

    float y[32];
    g::dequantize_row_q4_0(&b, y, 32);
    CHECK(y[0] == -16.0f);
    CHECK(y[1] == -14.0f);  // -15 rounds up to -14
    CHECK(y[31] == 14.0f);  // +15 clamps to code 15
}

TEST_CASE("q4_1: d = (max - min) / 15, m = min") {
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j % 16) - 3.0f;  // min -3, max 12: d = 1
    const auto b = quantize_block<g::block_q4_1>(g::quantize_row_q4_1, x);
    CHECK(b.d == 0x3C00);
    CHECK(b.m == 0xC200);  // fp16 -3.0
    for (int j = 0; j < 16; ++j) CHECK(b.qs[j] == static_cast<std::uint8_t>(j | (j << 4)));
    float y[32];
    g::dequantize_row_q4_1(&b, y, 32);
    for (int j = 0; j < 32; ++j) CHECK(y[j] == x[j]);
}

TEST_CASE("q5_0: d = max / -16, fifth bit of element j in bit j of qh") {
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = static_cast<float>(j - 16);  // max = -16 -> d = 1, q = j
    const auto b = quantize_block<g::block_q5_0>(g::quantize_row_q5_0, x);
    CHECK(b.d == 0x3C00);
    const std::uint8_t qh[4] = {0x00, 0x00, 0xFF, 0xFF};
    CHECK(std::memcmp(b.qh, qh, 4) == 0);
    for (int j = 0; j < 16; ++j) CHECK(b.qs[j] == static_cast<std::uint8_t>(j | (j << 4)));
    float y[32];
    g::dequantize_row_q5_0(&b, y, 32);
    for (int j = 0; j < 32; ++j) CHECK(y[j] == x[j]);
}

TEST_CASE("q5_1: d = (max - min) / 31, m = min") {
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = 1.0f + 0.25f * static_cast<float>(j);  // d = 0.25, q = j
    const auto b = quantize_block<g::block_q5_1>(g::quantize_row_q5_1, x);
    CHECK(b.d == 0x3400);
    CHECK(b.m == 0x3C00);
    const std::uint8_t qh[4] = {0x00, 0x00, 0xFF, 0xFF};
    CHECK(std::memcmp(b.qh, qh, 4) == 0);
    for (int j = 0; j < 16; ++j) CHECK(b.qs[j] == static_cast<std::uint8_t>(j | (j << 4)));
    float y[32];
    g::dequantize_row_q5_1(&b, y, 32);
    for (int j = 0; j < 32; ++j) CHECK(y[j] == x[j]);
}

TEST_CASE("q8_0 and q8_1: d = amax / 127, rounding half away from zero") {
    float x[32] = {127.0f, -3.5f, 2.5f, 0.5f, -0.5f, 1.49f, -126.5f, 0.0f};
    for (int j = 8; j < 32; ++j) x[j] = static_cast<float>(j) - 20.0f;
    const auto b = quantize_block<g::block_q8_0>(g::quantize_row_q8_0, x);
    CHECK(b.d == 0x3C00);  // d = 1
    const std::int8_t head[8] = {127, -4, 3, 1, -1, 1, -127, 0};
    CHECK(std::memcmp(b.qs, head, 8) == 0);
    for (int j = 8; j < 32; ++j) CHECK(b.qs[j] == j - 20);

    const auto b1 = quantize_block<g::block_q8_1>(g::quantize_row_q8_1, x);
    CHECK(b1.d == 0x3C00);
    CHECK(std::memcmp(b1.qs, b.qs, 32) == 0);
    int sum = 0;
    for (auto q : b.qs) sum += q;
    CHECK(b1.s == lowbit::float_to_fp16(static_cast<float>(sum)));
    float y[32];
    g::dequantize_row_q8_1(&b1, y, 32);
    for (int j = 0; j < 32; ++j) CHECK(y[j] == static_cast<float>(b.qs[j]));
}

TEST_CASE("mxfp4: e = floor(log2 amax) - 2 + 127, nearest E2M1 value, first index on ties") {
    float x[32] = {6.0f, -6.0f, 0.5f, 1.25f, 5.0f, -0.25f};
    x[16] = 3.0f;
    x[17] = -3.0f;
    const auto b = quantize_block<g::block_mxfp4>(g::quantize_row_mxfp4, x);
    CHECK(b.e == 127);  // element unit 2^(127-127) / 2: the grid is 0, 0.5, 1, ..., 6
    const std::uint8_t expected[16] = {0x57, 0xDF, 0x01, 0x02, 0x06, 0x00};
    CHECK(std::memcmp(b.qs, expected, 16) == 0);

    float y[32];
    g::dequantize_row_mxfp4(&b, y, 32);
    const float want[6] = {6.0f, -6.0f, 0.5f, 1.0f, 4.0f, 0.0f};
    for (int j = 0; j < 6; ++j) CHECK(y[j] == want[j]);
    CHECK(y[16] == 3.0f);
    CHECK(y[17] == -3.0f);

    // amax just below 8 keeps the exponent (and saturates at 6); 8 bumps it.
    float z[32] = {7.9f};
    CHECK(quantize_block<g::block_mxfp4>(g::quantize_row_mxfp4, z).e == 127);
    z[0] = 8.0f;
    CHECK(quantize_block<g::block_mxfp4>(g::quantize_row_mxfp4, z).e == 128);
}

TEST_CASE("tq1_0: five trits per byte as a base-3 fraction, d = amax") {
    std::vector<float> x(256, 0.0f);
    // Byte 0 holds elements 0, 32, 64, 96, 128, most significant first.
    x[0] = 1.0f;
    x[32] = -1.0f;
    x[64] = 0.2f;
    x[96] = 0.9f;
    x[128] = -0.3f;
    const auto b = quantize_block<g::block_tq1_0>(g::quantize_row_tq1_0, x.data());
    CHECK(b.d == 0x3C00);
    // trits (2, 0, 1, 2, 1) = 178 / 243, rounded up to 188 / 256.
    CHECK(b.qs[0] == 188);
    // All-zero trits (code 1): 121 / 243 -> 128, and 4-trit 40 * 3 / 243 -> 127.
    CHECK(b.qs[1] == 128);
    CHECK(b.qs[47] == 128);
    CHECK(b.qh[0] == 127);

    std::vector<float> y(256);
    g::dequantize_row_tq1_0(&b, y.data(), 256);
    CHECK(y[0] == 1.0f);
    CHECK(y[32] == -1.0f);
    CHECK(y[64] == 0.0f);
    CHECK(y[96] == 1.0f);
    CHECK(y[128] == 0.0f);
    for (std::size_t i = 0; i < 256; ++i)
        if (i % 32 != 0 || i > 128) CHECK(y[i] == 0.0f);
}

TEST_CASE("tq2_0: element 128h + 32k + m in bits 2k of qs[32h + m]") {
    std::vector<float> x(256, 0.0f);
    x[0] = 2.0f;
    x[32] = -2.0f;
    x[96] = 1.5f;
    x[128 + 64 + 5] = -1.2f;
    const auto b = quantize_block<g::block_tq2_0>(g::quantize_row_tq2_0, x.data());
    CHECK(b.d == 0x4000);
    CHECK(b.qs[0] == 0x92);          // codes 2, 0, 1, 2
    CHECK(b.qs[32 + 5] == 0x45);     // codes 1, 1, 0, 1
    CHECK(b.qs[1] == 0x55);
    std::vector<float> y(256);
    g::dequantize_row_tq2_0(&b, y.data(), 256);
    CHECK(y[0] == 2.0f);
    CHECK(y[32] == -2.0f);
    CHECK(y[96] == 2.0f);
    CHECK(y[197] == -2.0f);
    CHECK(y[1] == 0.0f);
}

TEST_CASE("iq4_nl: values on the codebook grid with a power-of-two scale are kept exactly") {
    float x[32];
    for (int j = 0; j < 32; ++j) x[j] = 0.125f * g::iq4_nl_values[(j * 7) % 16];
    const auto b = quantize_block<g::block_iq4_nl>(g::quantize_row_iq4_nl, x);
    CHECK(b.d == lowbit::float_to_fp16(0.125f));
    float y[32];
    g::dequantize_row_iq4_nl(&b, y, 32);
    for (int j = 0; j < 32; ++j) CHECK(y[j] == x[j]);
}

TEST_CASE("iq4_nl and iq4_xs dequantize hand-made blocks") {
    g::block_iq4_nl nl{};
    nl.d = 0x3800;  // 0.5
    for (int j = 0; j < 16; ++j) nl.qs[j] = static_cast<std::uint8_t>(j | ((15 - j) << 4));
    float y[32];
    g::dequantize_row_iq4_nl(&nl, y, 32);
    for (int j = 0; j < 16; ++j) {
        CHECK(y[j] == 0.5f * g::iq4_nl_values[j]);
        CHECK(y[j + 16] == 0.5f * g::iq4_nl_values[15 - j]);
    }

    // Sub-block scales (6 bits, stored + 32) 33, 31, 40, 0, 63, 32, 16, 48.
    g::block_iq4_xs xs{};
    xs.d = 0x3400;  // 0.25
    const std::uint8_t scales_l[4] = {0xF1, 0x08, 0x0F, 0x00};
    std::memcpy(xs.scales_l, scales_l, 4);
    xs.scales_h = 0xDB26;
    std::memset(xs.qs, 0xFF, sizeof xs.qs);  // every code 15 -> 113
    std::vector<float> z(256);
    g::dequantize_row_iq4_xs(&xs, z.data(), 256);
    const int ls[8] = {1, -1, 8, -32, 31, 0, -16, 16};
    for (int ib = 0; ib < 8; ++ib)
        for (int j = 0; j < 32; ++j) CHECK(z[32 * ib + j] == 0.25f * static_cast<float>(ls[ib]) * 113.0f);
}

TEST_CASE("all-zero blocks have ggml's exact bytes and dequantize to zero") {
    // Q4_0/Q5_0/IQ4_XS store d = -0 (0 / -8 is -0); zero sits at code 8 or 16.
    const std::vector<float> x(256, 0.0f);
    struct expect {
        const char* name;
        std::vector<std::uint8_t> block;
    };
    const auto rep = [](std::initializer_list<std::uint8_t> head, std::size_t count, std::uint8_t fill) {
        std::vector<std::uint8_t> v(head);
        v.resize(head.size() + count, fill);
        return v;
    };
    std::vector<std::uint8_t> tq1(54, 0x80);
    for (int j = 48; j < 52; ++j) tq1[j] = 0x7F;
    tq1[52] = tq1[53] = 0x00;
    std::vector<std::uint8_t> tq2(66, 0x55);
    tq2[64] = tq2[65] = 0x00;
    const expect expected[] = {
        {"q4_0", rep({0x00, 0x80}, 16, 0x88)},
        {"q4_1", rep({0, 0, 0, 0}, 16, 0x00)},
        {"q5_0", rep({0x00, 0x80, 0xFF, 0xFF, 0xFF, 0xFF}, 16, 0x00)},
        {"q5_1", rep({0, 0, 0, 0, 0, 0, 0, 0}, 16, 0x00)},
        {"q8_0", rep({0, 0}, 32, 0x00)},
        {"q8_1", rep({0, 0, 0, 0}, 32, 0x00)},
        {"iq4_nl", rep({0x00, 0x00}, 16, 0x88)},
        {"iq4_xs", rep({0x00, 0x80, 0xAA, 0xAA, 0, 0, 0, 0}, 128, 0x88)},
        {"mxfp4", rep({0x00}, 16, 0x00)},
        {"tq1_0", tq1},
        {"tq2_0", tq2},
    };
    for (const auto& t : all_types) {
        INFO(t.name);
        const auto q = quantize(t, x);
        for (const auto& e : expected)
            if (std::string(e.name) == t.name) {
                REQUIRE(q.size() == 256 / t.block_size * e.block.size());
                for (std::size_t k = 0; k < q.size(); k += e.block.size())
                    CHECK(std::vector<std::uint8_t>(q.begin() + static_cast<std::ptrdiff_t>(k),
                                                    q.begin() + static_cast<std::ptrdiff_t>(k + e.block.size())) ==
                          e.block);
            }
        for (float v : dequantize(t, q, 256)) CHECK(v == 0.0f);
        if (t.uses_imatrix) {
            const std::vector<float> ones(256, 1.0f);
            for (float v : dequantize(t, quantize(t, x, ones.data()), 256)) CHECK(v == 0.0f);
        }
    }
}

// ---- Error bounds ------------------------------------------------------------------

TEST_CASE("q8_0 round trip: |x - y| <= d / 2 + 127 |d - fp16(d)|") {
    for (float scale : {1e-3f, 1.0f, 37.0f, 3000.0f}) {
        const auto x = gaussian_row(1024, 11u, scale);
        std::vector<g::block_q8_0> b(32);
        g::quantize_row_q8_0(x.data(), b.data(), 1024);
        std::vector<float> y(1024);
        g::dequantize_row_q8_0(b.data(), y.data(), 1024);
        for (std::size_t ib = 0; ib < 32; ++ib) {
            float amax = 0;
            for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * ib + j]));
            const float d = amax / 127.0f, d16 = lowbit::fp16_to_float(b[ib].d);
            const float bound = d / 2 + 127 * std::fabs(d - d16) + 1e-6f * amax;
            for (int j = 0; j < 32; ++j) REQUIRE(std::fabs(x[32 * ib + j] - y[32 * ib + j]) <= bound);
        }
    }
}

TEST_CASE("q4_0 round trip: |x - y| <= d / 2 (d where +8 clamps to 7) + 8 |d - fp16(d)|") {
    for (float scale : {1e-2f, 1.0f, 50.0f}) {
        const auto x = gaussian_row(1024, 5u, scale);
        std::vector<g::block_q4_0> b(32);
        g::quantize_row_q4_0(x.data(), b.data(), 1024);
        std::vector<float> y(1024);
        g::dequantize_row_q4_0(b.data(), y.data(), 1024);
        for (std::size_t ib = 0; ib < 32; ++ib) {
            float amax = 0, max = 0;
            for (int j = 0; j < 32; ++j)
                if (std::fabs(x[32 * ib + j]) > amax) {
                    amax = std::fabs(x[32 * ib + j]);
                    max = x[32 * ib + j];
                }
            const float d = max / -8.0f, d16 = lowbit::fp16_to_float(b[ib].d);
            for (int j = 0; j < 32; ++j) {
                const float v = x[32 * ib + j];
                const float step = v / d > 7.5f ? std::fabs(d) : std::fabs(d) / 2;
                REQUIRE(std::fabs(v - y[32 * ib + j]) <= step + 8 * std::fabs(d - d16) + 1e-6f * amax);
            }
        }
    }
}

TEST_CASE("q4_1 / q5_0 / q5_1 / tq round trips stay within half a step plus fp16 rounding") {
    const auto x = gaussian_row(1024, 3u, 2.0f);
    for (const auto& t : all_types) {
        INFO(t.name);
        const auto y = dequantize(t, quantize(t, x), x.size());
        for (std::size_t ib = 0; ib < x.size() / t.block_size; ++ib) {
            float mn = x[ib * t.block_size], mx = mn, amax = 0;
            for (std::size_t j = 0; j < t.block_size; ++j) {
                const float v = x[ib * t.block_size + j];
                mn = std::min(mn, v);
                mx = std::max(mx, v);
                amax = std::max(amax, std::fabs(v));
            }
            float bound = -1;
            const std::string name = t.name;
            // fp16 rounding of d and m adds at most 2^-11 relative to each.
            if (name == "q4_1") bound = (mx - mn) / 15 / 2 + (mx - mn) * 0x1p-11f + std::fabs(mn) * 0x1p-11f;
            if (name == "q5_1") bound = (mx - mn) / 31 / 2 + (mx - mn) * 0x1p-11f + std::fabs(mn) * 0x1p-11f;
            if (name == "q5_0") bound = amax / 16 + amax * 0x1p-11f;  // includes the +16 clamp
            if (name == "tq1_0" || name == "tq2_0") bound = amax / 2 + amax * 0x1p-11f;
            if (bound < 0) continue;
            bound += 1e-6f * amax;
            for (std::size_t j = 0; j < t.block_size; ++j)
                REQUIRE(std::fabs(x[ib * t.block_size + j] - y[ib * t.block_size + j]) <= bound);
        }
    }
}

TEST_CASE("mxfp4 round trip follows the E8M0 scale rule") {
    const auto x = gaussian_row(2048, 9u, 0.3f);
    std::vector<g::block_mxfp4> b(64);
    g::quantize_row_mxfp4(x.data(), b.data(), 2048);
    std::vector<float> y(2048);
    g::dequantize_row_mxfp4(b.data(), y.data(), 2048);
    for (std::size_t ib = 0; ib < 64; ++ib) {
        float amax = 0;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[32 * ib + j]));
        const int e = static_cast<int>(std::floor(std::log2(amax))) - 2 + 127;
        REQUIRE(b[ib].e == e);
        const float s = std::ldexp(1.0f, e - 127);  // E2M1 unit: amax / s in [4, 8)
        REQUIRE(amax / s >= 4.0f);
        REQUIRE(amax / s < 8.0f);
        for (int j = 0; j < 32; ++j) {
            const float a = std::fabs(x[32 * ib + j]);
            const float bound = a <= 2 * s ? 0.25f * s : a <= 4 * s ? 0.5f * s : a <= 6 * s ? s : a - 6 * s;
            REQUIRE(std::fabs(x[32 * ib + j] - y[32 * ib + j]) <= bound);
        }
    }
}

TEST_CASE("iq4 and imatrix paths give small errors on gaussian rows") {
    const auto x = gaussian_row(4096, 21u, 0.02f);
    std::vector<float> imatrix(4096);
    std::uint32_t s = 99u;
    for (auto& w : imatrix) w = 0.5f + unit(s);
    for (const auto& t : all_types) {
        INFO(t.name);
        const float plain = rel_rmse(x, dequantize(t, quantize(t, x), x.size()));
        const float weighted = rel_rmse(x, dequantize(t, quantize(t, x, imatrix.data()), x.size()));
        const std::string name = t.name;
        // Ternary types on gaussian data round most values to 0: a loose limit.
        const float limit = name == "q8_0" || name == "q8_1" ? 0.01f
                            : name.rfind("q5", 0) == 0      ? 0.06f
                            : name.rfind("tq", 0) == 0      ? 0.9f
                                                            : 0.13f;
        CHECK(plain < limit);
        CHECK(weighted < limit);
        if (!t.uses_imatrix) CHECK(quantize(t, x) == quantize(t, x, imatrix.data()));
    }
}

// ---- Golden bytes from ggml ----------------------------------------------------------

namespace {
struct golden {
    const char* name;
    bool with_imatrix;
    const char* hex;
};

// ggml_quantize_chunk(type, golden_input(256), dst, 0, 1, 256, imatrix or
// NULL) from ggml 0.25.3 (llama-cpp-python 0.3.36); quantize_row_q8_1_ref for
// Q8_1, which ggml_quantize_chunk does not take.
const golden goldens[] = {
    {"q4_0", false,
     "22bf98778789878077798898889889988977983c998687798a996696798980899988899728bd9989997a979997787987"
     "88887977799095be79988898088878879898897989897997c8be89978978879898979908879987779789008088888888"
     "88888888888888888888888800388e521d56b44b5f9fe1e9005e7b2d40298fb755b94590ba8766a8bc746c78b575bc6b"},
    {"q4_0", true,
     "1ebf98778789878077798898889889988977863c998687798a9966967989808999888997e3bd99899979979997887987"
     "88887977799182be79988898088878879898897989897997b1be89978978879898979908879987779789000000000000"
     "00000000000000000000000000388e521d56b44b5f9fe1e9005e7b2d40295cb755b94590ba8766a8bc746c78b575bc6b"},
    {"q4_1", false,
     "543cd7bf02341321242f33312212221221022134ef3998c8eedadbbfcfeeaadabeced0defeddcdeb8b3acdbf11210150"
     "05111432402432333144401f083cd2bf30012211f12132240212313131214013253cf3bf110330412313020300f22300"
     "134313310000000000000000000000000000000000000000003800c48e521d56b44b5f9fe1e9005e7b2d4029093682bf"
     "9914a84f23567725106a707518692071"},
    {"q4_1", true,
     "5d3c48c002341321242f34412212221221023134c03991c8eedadbcfcfeeaaeabeded0dffeddcefbf83a8abf11210140"
     "04111432402432233144301e0e3c22c031022211f12132340212313131214013163cfebe100320312312020300f22300"
     "133313210000000000000000000000000000000000000000003800c48e521d56b44b5f9fe1e9005e7b2d4029053688bf"
     "9914a84f23567725106a707518692071"},
    {"q5_0", false,
     "22bb89753d3f20fe1f020e00eee1001f001f0220f1fe9838397ba7be111d0ef3f322dd1de20100033211f13e28b9af55"
     "778a210232d33d212ef0e31ef00ff2ede22095ba7f7f2ea3f22100110101e0fe2010f2f1f201e21fc8ba4d8bf35d122f"
     "f2e10e1f202f22000e221eef1ef10080ffffffff000000000000000000000000000000000034e5ba91030ca42aac6886"
     "ae2ec2c200ace64a80428fb392cdba51aa628b20530edc5068f8d7d06bea58c7"},
    {"q5_0", true,
     "9cbb89773d3f20fe1f010e01eee10010001f0120f1fe9638397ba7be111d0ef3f322dd1de20100033211f13e26b9af55"
     "778a210232d33d212ef0e31ef00ff2ede22097ba7f7f2ea3f22100110101e0fe2010f2f1f201e21fc6ba4d8bf35d122f"
     "f2e10e1f202f22000e221eef1ef1000000000000000000000000000000000000000000000034e5ba91030ca42aac6886"
     "ae2ec2c200ace64a80428eb392cdba51aa628b20530edc5068f8d7d06bea58c7"},
    {"q5_1", false,
     "3038d7bf2000000004682641373f77713415452541055267be3598c8fffbffffccb5a68e8fcc54b57caca0aeedba9be7"
     "5536cdbf008000002342119019232875904964567289812fcd37d2bf0000100061034423f34274580424616251428026"
     "0338f3bf00000002311651734725040611f4470037862752000000000000000000000000000000000000000000000000"
     "be3300c4e5ba91031da42bac7887af3fd2d300ade74b8043d73182bf0d3205002238518f46adef4b20c4f1ea21d240f2"},
    {"q5_1", true,
     "333807c02000000004682641384f77723415452541055267a93597c8fffbffffccb5a68e8fdd54c57daca0befdbb9ce7"
     "95360ac0008000002342129019232875904964567289712eef3765c00000100061035433f34374581525627262428126"
     "0438efbf00000002311651734725040611f4470037862752000000000000000000000000000000000000000000000000"
     "003400c4e5ba91030ca42aac6886ae2ec2c200ace64a8042fd317abf0d3205001138418e36acef4a20b4e1ea21c240f2"},
    {"q8_0", false,
     "312f011209f4117f0ff502040404f404f611ef09f901feff0e10fef502f601f0060ba22c0ce8ed161b0ee5e80e0c8115"
     "100409f10c0702f6f90ee709f20002031705fb14332df6f0efe816f71101e914fe07f415ec7ff3feec16ebf2f00913fa"
     "05020a110df1a22ef1fb00f9f9f800120202f3f5f3f5ee0808ed02f87ffe0d05eff6070b06ff12f5d52ef308f1f90f07"
     "0009f0020fee0f0a0ff7fbf2071002f7eeedf17ffeeffb11f50700000000000000000000000000000000000000000000"
     "00000000000000000000000008285fa14fe0c0306f6f9110815f304f811000d091d030c0d0105f5f81d0f0a1c0a19f27"
     "2df42b7fe60e1f02c23ec6ff2a32c1cb2ed33ff4d7fe19dacd081b16cd0ed71e"},
    {"q8_1", false,
     "312fcd4c011209f4117f0ff502040404f404f611ef09f901feff0e10fef502f601f0060ba22c17c30ce8ed161b0ee5e8"
     "0e0c8115100409f10c0702f6f90ee709f20002031705fb14332dd945f6f0efe816f71101e914fe07f415ec7ff3feec16"
     "ebf2f00913fa05020a110df1a22e4945f1fb00f9f9f800120202f3f5f3f5ee0808ed02f87ffe0d05eff6070b06ff12f5"
     "d52e3848f308f1f90f070009f0020fee0f0a0ff7fbf2071002f7eeedf17ffeeffb11f507000000000000000000000000"
     "0000000000000000000000000000000000000000000000000828ccc95fa14fe0c0306f6f9110815f304f811000d091d0"
     "30c0d0105f5f81d0f0a1c0a19f27a8412df42b7fe60e1f02c23ec6ff2a32c1cb2ed33ff4d7fe19dacd081b16cd0ed71e"},
    {"iq4_nl", false,
     "0a3078997987898f99978878887887788799a22c9996867a7a9966967989808aa98879a731ad9989a96aa69996786a86"
     "788779667a90a2ae79988898088978769898797979896997d6ae89977978879798979908879987679779000088888888"
     "88888888888888888888888805288e411e45c33c4f9fe1e9004e7c1e30197ea744c93490ba8765b8cd736c68c474bd5c"},
    {"iq4_nl", true,
     "053078997987898f99978878887887788799992c9996867a7a9966967989808aa98879a725ad9989a96aa69996786a86"
     "788779667a9095ae79a88898088978769898797979896997f1ae89977978879798979908879987679779000088888888"
     "888888888888888888888888f4278e411e45c33c4f9fe1e9004e6c1e301939a744c93490ba8765b8cd735d68c474bd5c"},
    {"iq4_xs", false,
     "0a9cf09be0a50b7878997987898f999788788878877887999996867a7a9966967989808aa98879a79989a96aa6999678"
     "6a86788779667a9079a88898088978769898797979896997899779788797989799088799876797798888888888888888"
     "88888888888888888e411e45c33c4f9fe1e9004e7c1e301944c93490ba8765b8cd735d68c474bd5c"},
    {"iq4_xs", true,
     "069cf09be0a40c7878997987898f999788788878877887999996867a7a9966967989808aa98879a79989a96aa6999678"
     "6a86788779667a9079a88898088978769898797979896997899779788797989799088799876797798888888888888888"
     "88888888888888888e411e45c33c4f9fe1e9004e7c1e301944c93490ba8765b8cd735d68c474bd5c"},
    {"mxfp4", false,
     "80a0129109020722290090009109a0191280111a09929211aa1a91010e0221000119809909a92aa29991102a02000119"
     "121a97801aa9009979091002a090191919092a918099a11a290291a0a1aa7002aa922192190000000000000000000000"
     "0000000000007f05bdd4ba3cc3b5155d51eeb593d4ced17e55d96597cb0234c0de163d30d525ce4d"},
    {"tq1_0", false,
     "8080808080d5808080806480808080898080808083808080808180808080808080808080808080808080808080808080"
     "7f7f7f7f224b"},
    {"tq2_0", false,
     "555555555556555555555155555555655555555595555555555555555555555555555555555555555555555555555555"
     "55555555555555555556555555555555224b"},
};
}  // namespace

TEST_CASE("bytes equal ggml's for fixed inputs, with and without an imatrix") {
    const auto x = golden_input(256);
    const auto imatrix = golden_imatrix(256);
    int checked = 0;
    for (const auto& t : all_types) {
        for (const auto& gv : goldens) {
            if (std::string(gv.name) != t.name) continue;
            INFO(t.name << (gv.with_imatrix ? " with imatrix" : ""));
            CHECK(to_hex(quantize(t, x, gv.with_imatrix ? imatrix.data() : nullptr)) == gv.hex);
            ++checked;
        }
        // ggml ignores the imatrix for these types.
        if (!t.uses_imatrix) CHECK(quantize(t, x, imatrix.data()) == quantize(t, x));
    }
    CHECK(checked == 17);
}

TEST_CASE("golden inputs exercise the special cases they are meant to") {
    const auto x = golden_input(256);
    for (int i = 160; i < 192; ++i) REQUIRE(x[static_cast<std::size_t>(i)] == 0.0f);
    bool tie = false;
    for (int i = 192; i < 224; ++i) tie = tie || x[static_cast<std::size_t>(i)] != std::floor(x[static_cast<std::size_t>(i)]);
    CHECK(tie);
}

// ---- Bad sizes ---------------------------------------------------------------------

TEST_CASE("rows that are not whole blocks throw not_divisible naming n and the block size") {
    std::vector<float> x(300, 1.0f), y(300);
    std::vector<std::uint8_t> buf(4096);
    for (const auto& t : all_types) {
        INFO(t.name);
        const std::size_t n = t.block_size + 1;
        try {
            t.quantize(x.data(), buf.data(), n, nullptr);
            FAIL("no throw");
        } catch (const lowbit::error& e) {
            CHECK(e.code() == lowbit::errc::not_divisible);
            const std::string what = e.what();
            CHECK(what.find(std::to_string(n)) != std::string::npos);
            CHECK(what.find(std::to_string(t.block_size)) != std::string::npos);
            CHECK(what.find(t.name) != std::string::npos);
        }
        CHECK_THROWS_AS(t.dequantize(buf.data(), y.data(), t.block_size / 2), lowbit::error);
        t.quantize(x.data(), buf.data(), 0, nullptr);  // an empty row is fine
        t.dequantize(buf.data(), y.data(), 0);
    }
}
