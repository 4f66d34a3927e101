// Tests for formats/ggml_kquants.hpp: block layouts from ggml's documented
// packing rules, hand-made blocks, error sanity on N(0,1), and golden bytes
// produced by ggml's own ggml_quantize_chunk (ggml 0.25.3) for fixed inputs.

#include <lowbit/formats/ggml_kquants.hpp>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "catch.hpp"

namespace g = lowbit::ggml;
namespace gd = lowbit::ggml::detail;

namespace {

using quantize_fn = void (*)(const float*, void*, std::size_t, const float*);
using dequantize_fn = void (*)(const void*, float*, std::size_t);

struct kquant {
    const char* name;
    g::type id;
    std::size_t block_bytes;
    quantize_fn quantize;
    dequantize_fn dequantize;
};

const kquant all_types[] = {
    {"q2_k", g::type::q2_k, sizeof(g::block_q2_k), g::quantize_row_q2_k, g::dequantize_row_q2_k},
    {"q3_k", g::type::q3_k, sizeof(g::block_q3_k), g::quantize_row_q3_k, g::dequantize_row_q3_k},
    {"q4_k", g::type::q4_k, sizeof(g::block_q4_k), g::quantize_row_q4_k, g::dequantize_row_q4_k},
    {"q5_k", g::type::q5_k, sizeof(g::block_q5_k), g::quantize_row_q5_k, g::dequantize_row_q5_k},
    {"q6_k", g::type::q6_k, sizeof(g::block_q6_k), g::quantize_row_q6_k, g::dequantize_row_q6_k},
    {"q8_k", g::type::q8_k, sizeof(g::block_q8_k), g::quantize_row_q8_k, g::dequantize_row_q8_k},
};

const kquant& find(std::string_view name) {
    for (const auto& t : all_types)
        if (name == t.name) return t;
    FAIL("no type " << name);
    return all_types[0];
}

// Deterministic inputs from integer arithmetic only, so the golden bytes do
// not depend on any libm or <random> implementation.
std::uint32_t next_u32(std::uint64_t& s) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::uint32_t>(s >> 32);
}
float unit(std::uint64_t& s) { return static_cast<float>(next_u32(s) >> 8) * (1.f / 16777216.f); }

// Rows of a bell-shaped mix with outliers; row 1 has a zero sub-block, row 2
// a constant one, row 3 is scaled down by 1e-3.
std::vector<float> golden_input(std::size_t rows, std::size_t n) {
    std::vector<float> x(rows * n);
    std::uint64_t s = 0x1234abcdu;
    for (std::size_t i = 0; i < x.size(); ++i) {
        float v = unit(s) + unit(s) + unit(s) + unit(s) - 2.f;
        if (i % 97 == 13) v *= 20.f;
        if (i / n == 1 && i % n >= 16 && i % n < 32) v = 0.f;
        if (i / n == 2 && i % n >= 64 && i % n < 96) v = 0.25f;
        if (i / n == 3) v *= 1e-3f;
        x[i] = v;
    }
    return x;
}

std::vector<float> golden_imatrix(std::size_t n) {
    std::vector<float> w(n);
    std::uint64_t s = 0x5eed;
    for (std::size_t i = 0; i < n; ++i) w[i] = i % 11 == 3 ? 0.f : 2.f * unit(s);
    return w;
}

std::uint64_t fnv1a(const unsigned char* p, std::size_t n) {
    std::uint64_t h = 1469598103934665603ull;
    for (std::size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

std::vector<unsigned char> from_hex(std::string_view hex) {
    std::vector<unsigned char> out;
    auto nib = [](char c) { return c <= '9' ? c - '0' : c - 'a' + 10; };
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
        out.push_back(static_cast<unsigned char>(nib(hex[i]) << 4 | nib(hex[i + 1])));
    return out;
}

std::string to_hex(const unsigned char* p, std::size_t n) {
    static const char digits[] = "0123456789abcdef";
    std::string s;
    for (std::size_t i = 0; i < n; ++i) {
        s += digits[p[i] >> 4];
        s += digits[p[i] & 15];
    }
    return s;
}

std::vector<unsigned char> quantize_rows(const kquant& t, const std::vector<float>& x, std::size_t rows,
                                         std::size_t n, const float* imatrix) {
    std::vector<unsigned char> out(rows * n / g::qk_k * t.block_bytes);
    for (std::size_t r = 0; r < rows; ++r)
        t.quantize(x.data() + r * n, out.data() + r * (n / g::qk_k) * t.block_bytes, n, imatrix);
    return out;
}

template <class Block>
std::vector<float> dequantize_block(const Block& b, dequantize_fn fn) {
    std::vector<float> y(g::qk_k);
    fn(&b, y.data(), g::qk_k);
    return y;
}

const std::uint16_t fp16_one = 0x3C00;
const std::uint16_t fp16_half = 0x3800;

}  // namespace

TEST_CASE("ggml K-quant block sizes match ggml's type table", "[ggml][kquants]") {
    for (const auto& t : all_types) {
        INFO(t.name);
        CHECK(g::row_bytes(t.id, 256) == t.block_bytes);
        CHECK(g::row_bytes(t.id, 1024) == 4 * t.block_bytes);
    }
    CHECK(offsetof(g::block_q2_k, d) == 80);
    CHECK(offsetof(g::block_q3_k, scales) == 96);
    CHECK(offsetof(g::block_q4_k, qs) == 16);
    CHECK(offsetof(g::block_q5_k, qh) == 16);
    CHECK(offsetof(g::block_q6_k, scales) == 192);
    CHECK(offsetof(g::block_q8_k, bsums) == 260);
}

TEST_CASE("get_scale_min_k4 unpacks every 6-bit scale/min pair at every position", "[ggml][kquants]") {
    // Fill the other seven slots with values that use all six bits, so a
    // leak from one slot into another shows up.
    for (int j = 0; j < 8; ++j) {
        for (int s = 0; s < 64; ++s) {
            for (int m = 0; m < 64; ++m) {
                std::uint8_t ls[8], lm[8], packed[12] = {};
                for (int k = 0; k < 8; ++k) {
                    ls[k] = static_cast<std::uint8_t>(63 - 7 * k);
                    lm[k] = static_cast<std::uint8_t>(5 * k + 21);
                }
                ls[j] = static_cast<std::uint8_t>(s);
                lm[j] = static_cast<std::uint8_t>(m);
                gd::set_scale_min_k4(ls, lm, packed);
                for (int k = 0; k < 8; ++k) {
                    std::uint8_t sc = 0, mn = 0;
                    gd::get_scale_min_k4(k, packed, sc, mn);
                    if (sc != ls[k] || mn != lm[k]) {
                        INFO("slot " << j << " s " << s << " m " << m << " read slot " << k);
                        REQUIRE(sc == ls[k]);
                        REQUIRE(mn == lm[k]);
                    }
                }
            }
        }
    }
}

TEST_CASE("get_scale_min_k4 follows ggml's byte layout", "[ggml][kquants]") {
    // Bytes 0-3: scales 0-3 plus bits 4-5 of scales 4-7 on top; bytes 4-7 the
    // same for mins; bytes 8-11: low nibbles of scale (low) and min (high) 4-7.
    std::uint8_t q[12] = {0x41, 0x02, 0x83, 0xC4, 0x05, 0x46, 0x07, 0xC8, 0x9A, 0x0B, 0xFC, 0x3D};
    std::uint8_t sc, m;
    gd::get_scale_min_k4(0, q, sc, m);
    CHECK((sc == 1 && m == 5));
    gd::get_scale_min_k4(3, q, sc, m);
    CHECK((sc == 4 && m == 8));
    gd::get_scale_min_k4(4, q, sc, m);  // low 0xA | (0x41>>6)<<4 ; high 0x9 | (0x05>>6)<<4
    CHECK((sc == 0x1A && m == 0x09));
    gd::get_scale_min_k4(6, q, sc, m);  // 0xC | (0x83>>6)<<4 = 0x2C ; 0xF | (0x07>>6)<<4
    CHECK((sc == 0x2C && m == 0x0F));
    gd::get_scale_min_k4(7, q, sc, m);  // 0xD | 3<<4 ; 0x3 | 3<<4
    CHECK((sc == 0x3D && m == 0x33));
}

TEST_CASE("Q3_K scale packing round-trips and matches the documented bits", "[ggml][kquants]") {
    for (int j = 0; j < 16; ++j) {
        for (int v = 0; v < 64; ++v) {
            int l[16];
            for (int k = 0; k < 16; ++k) l[k] = (k * 37 + 11) & 63;
            l[j] = v;
            std::uint8_t s[12];
            gd::set_scales_q3(l, s);
            for (int k = 0; k < 16; ++k) REQUIRE(gd::get_scale_q3(k, s) == l[k]);
        }
    }
    int l[16] = {};
    l[9] = 0x2B;  // low nibble B -> scales[1] high nibble; high bits 2 -> scales[8 + 1] bits 4-5
    std::uint8_t s[12];
    gd::set_scales_q3(l, s);
    CHECK(s[1] == 0xB0);
    CHECK(s[9] == (2 << 4));
}

TEST_CASE("Q2_K hand-made block", "[ggml][kquants]") {
    g::block_q2_k b{};
    b.d = fp16_one;
    b.dmin = fp16_half;
    for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<std::uint8_t>((j % 3 + 1) | (j % 4) << 4);
    // Element e has q = (e / 3) % 4: byte 32*(e/128) + e%32, bits 2*((e%128)/32).
    for (int e = 0; e < 256; ++e) {
        const int q = (e / 3) % 4;
        b.qs[32 * (e / 128) + e % 32] = static_cast<std::uint8_t>(b.qs[32 * (e / 128) + e % 32] | q << (2 * ((e % 128) / 32)));
    }
    const auto y = dequantize_block(b, g::dequantize_row_q2_k);
    for (int e = 0; e < 256; ++e) {
        const int j = e / 16;
        const float expect = static_cast<float>((j % 3 + 1) * ((e / 3) % 4)) - 0.5f * static_cast<float>(j % 4);
        REQUIRE(y[e] == expect);
    }
}

TEST_CASE("Q3_K hand-made block", "[ggml][kquants]") {
    g::block_q3_k b{};
    b.d = fp16_half;
    int l[16];
    for (int j = 0; j < 16; ++j) l[j] = 32 + (j - 8);  // scale j - 8
    gd::set_scales_q3(l, b.scales);
    // Stored level L = e % 8 (q = L - 4): low bits in qs as Q2_K, bit 2 in hmask[e%32] bit e/32.
    for (int e = 0; e < 256; ++e) {
        const int L = e % 8;
        b.qs[32 * (e / 128) + e % 32] = static_cast<std::uint8_t>(b.qs[32 * (e / 128) + e % 32] | (L & 3) << (2 * ((e % 128) / 32)));
        if (L & 4) b.hmask[e % 32] = static_cast<std::uint8_t>(b.hmask[e % 32] | 1 << (e / 32));
    }
    const auto y = dequantize_block(b, g::dequantize_row_q3_k);
    for (int e = 0; e < 256; ++e) {
        const float expect = 0.5f * static_cast<float>(e / 16 - 8) * static_cast<float>(e % 8 - 4);
        REQUIRE(y[e] == expect);
    }
}

TEST_CASE("Q4_K and Q5_K hand-made blocks", "[ggml][kquants]") {
    std::uint8_t ls[8], lm[8];
    for (int j = 0; j < 8; ++j) {
        ls[j] = static_cast<std::uint8_t>(60 - 5 * j);
        lm[j] = static_cast<std::uint8_t>(3 * j + 1);
    }
    auto q_of = [](int e, int nmax) { return (e * 7 + e / 32) % (nmax + 1); };

    g::block_q4_k b4{};
    b4.d = fp16_half;
    b4.dmin = fp16_one;
    gd::set_scale_min_k4(ls, lm, b4.scales);
    // Chunk c of 64: byte 32c+l holds element 64c+l low and 64c+32+l high.
    for (int e = 0; e < 256; ++e)
        b4.qs[32 * (e / 64) + e % 32] = static_cast<std::uint8_t>(b4.qs[32 * (e / 64) + e % 32] | q_of(e, 15) << (4 * ((e % 64) / 32)));
    auto y = dequantize_block(b4, g::dequantize_row_q4_k);
    for (int e = 0; e < 256; ++e)
        REQUIRE(y[e] == 0.5f * static_cast<float>(ls[e / 32] * q_of(e, 15)) - static_cast<float>(lm[e / 32]));

    g::block_q5_k b5{};
    b5.d = fp16_half;
    b5.dmin = fp16_one;
    gd::set_scale_min_k4(ls, lm, b5.scales);
    // Fifth bit of element e in qh[e % 32] bit e / 32.
    for (int e = 0; e < 256; ++e) {
        const int q = q_of(e, 31);
        b5.qs[32 * (e / 64) + e % 32] = static_cast<std::uint8_t>(b5.qs[32 * (e / 64) + e % 32] | (q & 15) << (4 * ((e % 64) / 32)));
        if (q & 16) b5.qh[e % 32] = static_cast<std::uint8_t>(b5.qh[e % 32] | 1 << (e / 32));
    }
    y = dequantize_block(b5, g::dequantize_row_q5_k);
    for (int e = 0; e < 256; ++e)
        REQUIRE(y[e] == 0.5f * static_cast<float>(ls[e / 32] * q_of(e, 31)) - static_cast<float>(lm[e / 32]));
}

TEST_CASE("Q6_K hand-made block: ql/qh positions", "[ggml][kquants]") {
    g::block_q6_k b{};
    b.d = fp16_half;
    for (int j = 0; j < 16; ++j) b.scales[j] = static_cast<std::int8_t>(j % 2 ? -(j + 1) : j + 1);
    auto q_of = [](int e) { return (e * 5 + 3) % 64; };
    // Within each 128-element half h: element r in quarter k = r/32, lane l = r%32:
    // low nibble in ql[64h + l + 32*(k&1)] (high nibble if k >= 2), top 2 bits in qh[32h + l] bits 2k.
    for (int e = 0; e < 256; ++e) {
        const int h = e / 128, k = (e % 128) / 32, l = e % 32, q = q_of(e);
        std::uint8_t& lo = b.ql[64 * h + l + 32 * (k & 1)];
        lo = static_cast<std::uint8_t>(lo | (q & 15) << (k >= 2 ? 4 : 0));
        b.qh[32 * h + l] = static_cast<std::uint8_t>(b.qh[32 * h + l] | (q >> 4) << (2 * k));
    }
    const auto y = dequantize_block(b, g::dequantize_row_q6_k);
    for (int e = 0; e < 256; ++e)
        REQUIRE(y[e] == 0.5f * static_cast<float>(b.scales[e / 16]) * static_cast<float>(q_of(e) - 32));

    // Element 200 = half 1, quarter 2, lane 8: ql[64+8] high nibble, qh[32+8] bits 4-5.
    CHECK((b.ql[72] >> 4) == (q_of(200) & 15));
    CHECK(((b.qh[40] >> 4) & 3) == (q_of(200) >> 4));
}

TEST_CASE("Q8_K: scale, clamp and bsums", "[ggml][kquants]") {
    std::vector<float> x(256);
    for (int i = 0; i < 256; ++i) x[i] = static_cast<float>(i % 16) - 7.f;
    x[5] = -12.7f;  // largest |x|, negative: d = 0.1, maps to +127
    g::block_q8_k b;
    g::quantize_row_q8_k(x.data(), &b, 256);
    CHECK(b.d == 1.f / (-127.f / -12.7f));
    CHECK(b.qs[5] == -127);
    for (int j = 0; j < 16; ++j) {
        int s = 0;
        for (int i = 0; i < 16; ++i) s += b.qs[16 * j + i];
        CHECK(b.bsums[j] == s);
    }
    std::vector<float> y(256);
    g::dequantize_row_q8_k(&b, y.data(), 256);
    for (int i = 0; i < 256; ++i) CHECK(std::fabs(y[i] - x[i]) <= 0.5f * b.d + 1e-6f);
}

TEST_CASE("All-zero rows quantize to zero blocks", "[ggml][kquants]") {
    const std::vector<float> x(512, 0.f), w(512, 1.f);
    for (const auto& t : all_types) {
        for (const float* imatrix : {static_cast<const float*>(nullptr), w.data()}) {
            INFO(t.name << (imatrix ? " imatrix" : ""));
            std::vector<unsigned char> q(2 * t.block_bytes, 0xAA);
            t.quantize(x.data(), q.data(), 512, imatrix);
            std::vector<float> y(512, 1.f);
            t.dequantize(q.data(), y.data(), 512);
            for (float v : y) REQUIRE(v == 0.f);
        }
    }
}

TEST_CASE("Relative RMSE on N(0,1) is close to ggml's published numbers", "[ggml][kquants]") {
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.f, 1.f);
    const std::size_t n = 4096, rows = 64;
    std::vector<float> x(n * rows);
    for (auto& v : x) v = normal(rng);
    const std::vector<float> ones(n, 1.f);
    struct expect {
        const char* name;
        double rmse;
    } published[] = {{"q2_k", 0.297}, {"q3_k", 0.151}, {"q4_k", 0.0715}, {"q5_k", 0.0362}, {"q6_k", 0.0178}};
    for (const auto& e : published) {
        const auto& t = find(e.name);
        for (const float* imatrix : {static_cast<const float*>(nullptr), ones.data()}) {
            const auto q = quantize_rows(t, x, rows, n, imatrix);
            std::vector<float> y(x.size());
            for (std::size_t r = 0; r < rows; ++r)
                t.dequantize(q.data() + r * (n / g::qk_k) * t.block_bytes, y.data() + r * n, n);
            double se = 0, sx = 0;
            for (std::size_t i = 0; i < x.size(); ++i) {
                se += (double(y[i]) - x[i]) * (double(y[i]) - x[i]);
                sx += double(x[i]) * x[i];
            }
            const double rel = std::sqrt(se / sx);
            INFO(e.name << (imatrix ? " (uniform imatrix)" : "") << " rel. RMSE " << rel);
            CHECK(rel < e.rmse * 1.05);
            CHECK(rel > e.rmse * 0.80);
        }
    }
}

namespace {
struct golden {
    const char* type;
    bool imatrix;
    std::uint64_t fnv;         // FNV-1a 64 of 4 rows x 512 values
    const char* first_block;  // hex
};
// Produced by ggml_quantize_chunk (quantize_row_q8_K_ref for Q8_K) of ggml 0.25.3.
const golden goldens[] = {
    {"q2_k", false, 0x149c4dcec95bdc64ull,
     "3f71719272c2b1610151a241f2515171dc88ac047c8ce4d8a85cdc98e4cbe8e0e59ba4a527b9d96d25a7ebe0aaa75d8a95ac6af558ea94b1e8b46a95"
     "245566818ec9fc43fec1ddb8459220996508236aa2367a2f"},
    {"q2_k", true, 0xff0a0384d8ea129full,
     "2f6141a181e1c16101419141f1517181d84478003844a0a46458d854a0c6f4a0b55a74742678a87d3576bab0697a6c49556c7ab448a99471a8b47e90"
     "245565418985a841e9c1c8b44141105455041255e4383e2e"},
    {"q3_k", false, 0xccea9c225f5f5388ull,
     "2f77e345b367194b7357ef0799aeeb095f580fff167d4905f7feaccfadceb19958b4983c4ce42870a48888902ca0d064d53e5719072ebed11995decf"
     "8d52f20ce3cc941b190678e2046c5c6bfca241c7e5e8e96b196856cd6019f40bb3dcbb7ee01e22ee3ee3f2e194696a599030"},
    {"q3_k", true, 0x0d85fcd2cf4f3dcbull,
     "2f77e345b367194b7353ef0799aeeb095f580fff167d4905f77eaccf9dceb1996cb48c784cf82470e4bc4ce01c758050d53d5716462fbed515509dcb"
     "4d51f60cf2cc885b2d05b8d108985cb3fd7240d2f1b8967a053812ce70ddf94bbcedef6df11f11fe3ff2f2f194696a594832"},
    {"q4_k", false, 0x88edc9a58d8d2c7bull,
     "682541273f0709067ea3f66f6597f9c6b181b141c191317181b2b261527f701141924131429191e1416282018172f191e6535d043f85cad97a59e866"
     "abf5fcdbfaa5caaa68add79a4acbeaf9d8c9a6b089e6af58c39c560ba556df39658a8d2ae7b6c25ac756d3a2765750b595904c9876794bbd63c8a67d"
     "c99d5ba61746598086969c47fed6d88f47780a593b071c5b"},
    {"q4_k", true, 0x19de6e1df1463134ull,
     "852561273e0708067fa2f36d75a7c9b6b181b141c191317171a2b261527f701241924131429191d1415282018162e191d6535e042f85bbda6b59d866"
     "ace5fddcfba6baab59aed79b3accdaf9c8ca96a089e6bf59c4ac570bb656df39658b8d3ae8b6c35ac856d3a2765760b595a15c9976783aac63c8967d"
     "b99c5b951645597076959c46fed6d88f46780a593a071b4a"},
    {"q5_k", false, 0x21b0d49bf6c4bb78ull,
     "1e2129273f0709076ea2f77055a7f9d6bae276d026f28cdce6c67e900c397c9cacaaec1ce48eeaee044c4e6c6e2c5a7a81016282a13251e2016363c2"
     "a3ffe01292238161932121d272b3130112e3e1329da7ab085ffb5684c69290cd37baea88c53c6536a23c8e15756895c370642d4002fc6fa19649ad06"
     "6abcdf71da051a54ef7ca4b59fabc553fcaec07a2a4098410c02867ae6914d0c944bb75c3eacb3101c4c3a9efecdc21f9ef105c3661f38a7"},
    {"q5_k", true, 0x5ea8723dea8bb4daull,
     "20211d273f0709076fa3f6706597f9d6bae276d026f28cdce6c67e900c397c9cacaaec1cf48eeaee044c4e6c6e2c5a7a81117282a14251e2026373d2"
     "b3ffe02292238161933121d282b3130112e3f1429da7ab085ffb5584c69290cc37bae987c53b6435a13b8e15746794c370631c3003ec6fa1974aad06"
     "6bbccf62da061b55ef7ca5a590acc544fd9eb06a2b4098320c02867ad6914c0c934bb74b3eaca3000c4c3a9efecdb11f9ef005c3661f38a7"},
    {"q6_k", false, 0xd0d0166c9bab192cull,
     "9161a03001d051a051df2f902ff1e22079676f811f36b38b69b0643fe753832fa90707018f9f3b814505a64d08d4228179087b0fa9f7c8a41c85f96a"
     "aa70c01546d041b8a9cb5fe002c0603773410a034850fb19391f6d080286b02a9bc03f7eafaafa840016e3a02a0566edb9af818ab2527b7d1d8e97a7"
     "73df6b33cc49106aae7a4e360e6a929a5a5dad6695a8ca92ea94abab287797622aa8a4ef96a85385555ea8258e1815612a66ac11d695a841727640bb"
     "02392044ba6ad8a595e4df9680fb06f8f70b0906f90408f90cf9fbf8b61c"},
    {"q6_k", true, 0xe2f67ab74dd43c58ull,
     "9161904001e0519051df2f902f00d210786a6d9f1143a08968c3683de657801f9a172720afaf3a715516a74d08c412808a077c0099f7d7a30c95097b"
     "aa80c01546d040b899ca4ff002c060277331090327301ff5680f501cf185c42b9cb55b7cafabfb730106d3a01bf567dcc9af818ab1527b7e0c7f87a7"
     "73d07c32cc582169ae7a4e360e6a929a5a5dad6695b8ca92ea94abae297797622aa8e4ef96a85385555ea8258e1815612a26ac11d695a841727650ab"
     "02392144aa6ed8a595e4df9680fa06f8f70b0a06f90508f90cf8fbf88f1c"},
    {"q8_k", false, 0x1dd135c298ef4406ull,
     "5a2a13be030501010300030002fcfd02fd8109ff01fc0503fd04030201fbfc0501fb0300fbfffc03fafd0400fffcfc0102ff000602fe030402fefef9"
     "0301fe07fe00f8fd0306fa05f704fdfefdff0103fc04fbfcfe03fefd00f902fdfefcfeff01fe030bfd0504090702fffe0305fd0400fcfbfefc00ff00"
     "0400fe0106fefdfcfeff0100fe00f9fe02fb00fc0000f9fe01fdfbfdff0003fdff00020300ff04010104fcfe00f9fd03fcfe0308fd03fa0502000006"
     "f9fdfb03fc03fafe010303fdfffe04ff0501fefc090104fb00fbfe050405000c0505fc04fa0401f80402ff00fe03fdfeffff02fc00fbfdfffbfd01fd"
     "040201fffffdfe02f8fafafe02ff06010305040193ff0700f3fffafff5fff8ff1300f9ffdbff06000500efff1c000200effffbff"},
};
}  // namespace

TEST_CASE("Bytes equal ggml's for fixed inputs, with and without an imatrix", "[ggml][kquants]") {
    const std::size_t rows = 4, n = 512;
    const auto x = golden_input(rows, n);
    const auto w = golden_imatrix(n);
    for (const auto& gv : goldens) {
        const auto& t = find(gv.type);
        INFO(gv.type << (gv.imatrix ? " with imatrix" : ""));
        const auto q = quantize_rows(t, x, rows, n, gv.imatrix ? w.data() : nullptr);
        CHECK(to_hex(q.data(), t.block_bytes) == gv.first_block);
        CHECK(fnv1a(q.data(), q.size()) == gv.fnv);
        CHECK(from_hex(gv.first_block).size() == t.block_bytes);
    }
}

TEST_CASE("Unaligned destinations and sources", "[ggml][kquants]") {
    const auto x = golden_input(1, 512);
    for (const auto& t : all_types) {
        INFO(t.name);
        std::vector<unsigned char> a(2 * t.block_bytes), b(2 * t.block_bytes + 1);
        t.quantize(x.data(), a.data(), 512, nullptr);
        t.quantize(x.data(), b.data() + 1, 512, nullptr);
        CHECK(std::memcmp(a.data(), b.data() + 1, a.size()) == 0);
        std::vector<float> ya(512), yb(512);
        t.dequantize(a.data(), ya.data(), 512);
        t.dequantize(b.data() + 1, yb.data(), 512);
        CHECK(ya == yb);
    }
}

TEST_CASE("Row lengths that are not whole super-blocks throw", "[ggml][kquants]") {
    std::vector<float> x(1024, 1.f), y(1024);
    std::vector<unsigned char> q(4 * 292);
    for (const auto& t : all_types) {
        INFO(t.name);
        for (std::size_t n : {std::size_t{1}, std::size_t{255}, std::size_t{257}, std::size_t{300}, std::size_t{1000}}) {
            try {
                t.quantize(x.data(), q.data(), n, nullptr);
                FAIL("no throw for n = " << n);
            } catch (const lowbit::error& e) {
                CHECK(e.code() == lowbit::errc::not_divisible);
                CHECK(std::string(e.what()).find(std::to_string(n)) != std::string::npos);
            }
            CHECK_THROWS_AS(t.dequantize(q.data(), y.data(), n), lowbit::error);
        }
        CHECK_NOTHROW(t.quantize(x.data(), q.data(), 0, nullptr));
        CHECK_THROWS_AS(t.quantize(nullptr, q.data(), 256, nullptr), lowbit::error);
    }
}
