#include "catch.hpp"

#include <lowbit/core/numeric.hpp>
#include <lowbit/kernels/dequantize.hpp>
#include <lowbit/scheme/minifloat.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define LOWBIT_TEST_GUARD_PAGE 1
#endif

using namespace lowbit::kernels;

namespace {

std::size_t elem_size(out_type t) { return t == out_type::f32 ? 4 : 2; }

const char* type_name(out_type t) {
    return t == out_type::f32 ? "f32" : t == out_type::f16 ? "f16" : "bf16";
}

// Independent of the kernels' decoders: one bit at a time.
unsigned bitwise_code(const std::uint8_t* row, std::size_t i, int bits) {
    unsigned v = 0;
    for (int b = 0; b < bits; ++b) {
        const std::size_t pos = i * static_cast<std::size_t>(bits) + static_cast<std::size_t>(b);
        v |= ((row[pos / 8] >> (pos % 8)) & 1u) << b;
    }
    return v;
}

struct shape {
    std::size_t rows, cols, group;
};

// Columns that leave tails on every batch width, groups that straddle batches,
// per-row groups and tiny rows; groups of 16, 32 and 64 in rows that end inside
// a 64-code block, past several 256-code chunks (the units the xsimd body
// decodes in; the SIMD paths take a row's last bytes from padded copies), and
// odd columns across chunk boundaries.
const shape shapes[] = {
    {3, 128, 32},   {2, 256, 64},  {2, 384, 128}, {3, 37, 37},   {1, 1, 1},    {2, 200, 200},
    {2, 130, 65},   {3, 100, 4},   {2, 48, 16},   {2, 24, 8},    {3, 33, 3},   {2, 1000, 8},
    {2, 4096, 128}, {4, 70, 70},   {2, 192, 192}, {3, 72, 24},   {2, 7, 7},    {1, 320, 64},
    {3, 16, 16},    {2, 32, 32},   {1, 64, 64},   {3, 80, 16},   {2, 96, 32},  {2, 1040, 16},
    {3, 1056, 32},  {2, 1088, 64}, {2, 2112, 64}, {2, 1025, 25}, {3, 45, 15},  {1, 99, 33},
};

struct buffers {
    std::vector<std::uint8_t> codes;
    std::vector<float> scale, zero, bias;
};

buffers make_data(const shape& s, int bits, std::size_t code_stride, std::mt19937& rng) {
    buffers b;
    // Stride padding and the unused bits of each row's last byte are random too:
    // kernels must ignore them.
    b.codes.resize(s.rows * code_stride);
    for (auto& c : b.codes) c = static_cast<std::uint8_t>(rng());
    const std::size_t np = s.rows * (s.cols / s.group);
    std::uniform_real_distribution<float> sd(-0.05f, 0.05f), zd(0.0f, static_cast<float>((1 << bits) - 1)),
        bd(-1.0f, 1.0f);
    for (std::size_t i = 0; i < np; ++i) {
        b.scale.push_back(sd(rng));
        b.zero.push_back(zd(rng));
        b.bias.push_back(bd(rng));
    }
    return b;
}

std::string describe(isa i, int bits, const shape& s, out_type t, bool z, bool b, bool per_tensor) {
    return std::string(isa_name(i)) + " bits=" + std::to_string(bits) + " " + std::to_string(s.rows) + "x" +
           std::to_string(s.cols) + " g" + std::to_string(s.group) + " " + type_name(t) + (z ? " zero" : "") +
           (b ? " bias" : "") + (per_tensor ? " shared-params" : "");
}

}  // namespace

TEST_CASE("reference decodes a hand-packed 3-bit stream") {
    // codes 5,2,7,0,1,6,3,4 at 3 bits each, LSB first: 0x8F11D5
    const std::uint8_t codes[] = {0xD5, 0x11, 0x8F};
    const float scale = 1.0f;
    float out[8] = {};
    affine_job j{codes, 3, 3, 1, 8, 8, &scale, nullptr, nullptr, 0, out, 8, out_type::f32};
    dequantize_affine_ref(j);
    const float want[8] = {5, 2, 7, 0, 1, 6, 3, 4};
    for (int i = 0; i < 8; ++i) REQUIRE(out[i] == want[i]);

    // The same stream through a table and a 2-wide group: x = table[q] * scale.
    const float table[8] = {-4, -3, -2, -1, 0, 1, 2, 3};
    const float scales[4] = {1, 2, 0.5f, -1};
    table_job t{codes, 3, 3, 1, 8, 2, table, scales, 0, out, 8, out_type::f32};
    dequantize_table_ref(t);
    for (int i = 0; i < 8; ++i) REQUIRE(out[i] == table[static_cast<int>(want[i])] * scales[i / 2]);
}

TEST_CASE("reference agrees with a bit-at-a-time decoder for every width") {
    std::mt19937 rng(7);
    for (int bits = 1; bits <= 8; ++bits) {
        const shape s{3, 61, 61};
        const std::size_t stride = (s.cols * static_cast<std::size_t>(bits) + 7) / 8 + 3;
        buffers b = make_data(s, bits, stride, rng);
        std::vector<float> out(s.rows * s.cols);
        affine_job j{b.codes.data(), stride, bits, s.rows, s.cols, s.group, b.scale.data(), b.zero.data(),
                     b.bias.data(), 1, out.data(), s.cols, out_type::f32};
        dequantize_affine_ref(j);
        for (std::size_t r = 0; r < s.rows; ++r)
            for (std::size_t c = 0; c < s.cols; ++c) {
                volatile float prod = (static_cast<float>(bitwise_code(&b.codes[r * stride], c, bits)) - b.zero[r]) *
                                      b.scale[r];
                const float want = prod + b.bias[r];
                REQUIRE(std::bit_cast<std::uint32_t>(out[r * s.cols + c]) == std::bit_cast<std::uint32_t>(want));
            }
    }
}

TEST_CASE("affine SIMD paths equal the scalar reference bit for bit") {
    std::mt19937 rng(1234);
    const auto isas = available_isas();
    for (int bits = 1; bits <= 8; ++bits)
        for (const shape& s : shapes) {
            const std::size_t rb = (s.cols * static_cast<std::size_t>(bits) + 7) / 8;
            const std::size_t code_stride = rb + (s.rows > 1 ? 5 : 0);
            const std::size_t out_stride = s.cols + 3;
            buffers b = make_data(s, bits, code_stride, rng);
            for (out_type t : {out_type::f32, out_type::f16, out_type::bf16})
                for (int zb = 0; zb < 4; ++zb)
                    for (bool per_tensor : {false, true}) {
                        const bool use_zero = zb & 1, use_bias = zb & 2;
                        affine_job j{b.codes.data(), code_stride, bits, s.rows, s.cols, s.group,
                                     b.scale.data(), use_zero ? b.zero.data() : nullptr,
                                     use_bias ? b.bias.data() : nullptr, per_tensor ? 0 : s.cols / s.group,
                                     nullptr, out_stride, t};
                        const std::size_t nbytes = s.rows * out_stride * elem_size(t);
                        std::vector<unsigned char> want(nbytes, 0xAB), got(nbytes);
                        j.out = want.data();
                        dequantize_affine_ref(j);
                        for (isa i : isas) {
                            std::memset(got.data(), 0xAB, nbytes);
                            j.out = got.data();
                            dispatch_to(i, dequantize_affine_fn{}, j);
                            INFO(describe(i, bits, s, t, use_zero, use_bias, per_tensor));
                            // padding between rows must stay untouched too
                            REQUIRE(std::memcmp(got.data(), want.data(), nbytes) == 0);
                        }
                    }
        }
}

// Outputs past 16 MB are written around the caches: in place when the start
// and row stride are 64-byte aligned, through an aligned scratch otherwise
// (std::vector storage, odd strides), and plainly for small groups. Each way
// writes exactly the reference's bytes and leaves the stride padding alone.
TEST_CASE("large outputs: streamed, through the scratch, or plain, equal the reference") {
    std::mt19937 rng(77);
    const auto isas = available_isas();
    struct big_case {
        std::size_t rows, cols, group, pad;  // pad: elements between rows beyond cols
        std::size_t offset;                   // bytes the output starts past 64-byte alignment
    };
    const big_case cases[] = {
        {1040, 4096, 128, 0, 0},   // streamed in place
        {1040, 4096, 128, 0, 16},  // std::vector-like start: through the scratch
        {1100, 4000, 64, 3, 4},    // odd stride: through the scratch
        {2100, 2048, 32, 0, 16},   // groups of 32: plain stores
    };
    for (const big_case& bc : cases) {
        const shape s{bc.rows, bc.cols, bc.group};
        const int bits = 4;
        const std::size_t code_stride = (s.cols * bits + 7) / 8;
        buffers b = make_data(s, bits, code_stride, rng);
        const std::size_t out_stride = s.cols + bc.pad;
        const std::size_t nbytes = s.rows * out_stride * 4;
        std::vector<unsigned char> want(nbytes, 0xAB), raw(nbytes + 128);
        unsigned char* got = raw.data() + (64 - reinterpret_cast<std::uintptr_t>(raw.data()) % 64) % 64 + bc.offset;
        std::vector<float> table(16);
        for (std::size_t i = 0; i < table.size(); ++i) table[i] = static_cast<float>(i) * 0.125f - 1.0f;
        affine_job aj{b.codes.data(), code_stride, bits, s.rows, s.cols, s.group, b.scale.data(), b.zero.data(),
                      nullptr, s.cols / s.group, want.data(), out_stride, out_type::f32};
        table_job tj{b.codes.data(), code_stride, bits, s.rows, s.cols, s.group, table.data(), b.scale.data(),
                     s.cols / s.group, want.data(), out_stride, out_type::f32};
        for (int kind = 0; kind < 2; ++kind) {
            aj.out = tj.out = want.data();
            if (kind == 0) dequantize_affine_ref(aj);
            else dequantize_table_ref(tj);
            for (isa i : isas) {
                std::memset(got, 0xAB, nbytes);
                aj.out = tj.out = got;
                if (kind == 0) dispatch_to(i, dequantize_affine_fn{}, aj);
                else dispatch_to(i, dequantize_table_fn{}, tj);
                INFO(isa_name(i) << (kind == 0 ? " affine " : " table ") << s.rows << "x" << s.cols << " g" << s.group
                                 << " stride " << out_stride << " offset " << bc.offset);
                REQUIRE(std::memcmp(got, want.data(), nbytes) == 0);
            }
        }
    }
}

TEST_CASE("table SIMD paths equal the scalar reference bit for bit") {
    std::mt19937 rng(99);
    const auto isas = available_isas();
    std::normal_distribution<float> nd;
    for (int bits = 1; bits <= 8; ++bits) {
        std::vector<float> table(std::size_t{1} << bits);
        for (auto& v : table) v = nd(rng);
        for (const shape& s : shapes) {
            const std::size_t rb = (s.cols * static_cast<std::size_t>(bits) + 7) / 8;
            const std::size_t code_stride = rb + (s.rows > 1 ? 2 : 0);
            const std::size_t out_stride = s.cols + 1;
            buffers b = make_data(s, bits, code_stride, rng);
            for (out_type t : {out_type::f32, out_type::f16, out_type::bf16})
                for (bool per_tensor : {false, true}) {
                    table_job j{b.codes.data(), code_stride, bits, s.rows, s.cols, s.group, table.data(),
                                b.scale.data(), per_tensor ? 0 : s.cols / s.group, nullptr, out_stride, t};
                    const std::size_t nbytes = s.rows * out_stride * elem_size(t);
                    std::vector<unsigned char> want(nbytes, 0xCD), got(nbytes);
                    j.out = want.data();
                    dequantize_table_ref(j);
                    for (isa i : isas) {
                        std::memset(got.data(), 0xCD, nbytes);
                        j.out = got.data();
                        dispatch_to(i, dequantize_table_fn{}, j);
                        INFO(describe(i, bits, s, t, false, false, per_tensor));
                        REQUIRE(std::memcmp(got.data(), want.data(), nbytes) == 0);
                    }
                }
        }
    }
}

namespace {

// Every code of a minifloat (Inf and NaN codes included) dequantized with the
// job's minifloat rule set equals the table lookup of the reference, bit for
// bit, on every instruction set, through the kernels and through
// dequantize_table; `m` may disagree with the table (dequantize_table must
// then look values up).
template <class Elem>
void check_minifloat(const lowbit::minifloat_rule& m, std::mt19937& rng) {
    const auto table = lowbit::detail::element_table<Elem>();
    const int bits = Elem::bits;
    for (const shape& s : shapes) {
        const std::size_t rb = (s.cols * static_cast<std::size_t>(bits) + 7) / 8;
        const std::size_t code_stride = rb + (s.rows > 1 ? 2 : 0);
        const std::size_t out_stride = s.cols + 1;
        buffers b = make_data(s, bits, code_stride, rng);
        for (out_type t : {out_type::f32, out_type::f16, out_type::bf16}) {
            table_job j{b.codes.data(), code_stride, bits,    s.rows,  s.cols,    s.group,
                        table.data(),   b.scale.data(), s.cols / s.group, nullptr, out_stride, t};
            j.minifloat = &m;
            const std::size_t nbytes = s.rows * out_stride * elem_size(t);
            std::vector<unsigned char> want(nbytes, 0xCD), got(nbytes);
            j.out = want.data();
            dequantize_table_ref(j);
            const bool matches = lowbit::detail::minifloat_matches(m, table.data(), bits);
            const isa before = active_isa();
            for (isa i : available_isas()) {
                INFO(describe(i, bits, s, t, false, false, false) << " mbits=" << m.mbits << " bias=" << m.bias);
                if (matches) {
                    std::memset(got.data(), 0xCD, nbytes);
                    j.out = got.data();
                    dispatch_to(i, dequantize_table_fn{}, j);
                    REQUIRE(std::memcmp(got.data(), want.data(), nbytes) == 0);
                }
                std::memset(got.data(), 0xCD, nbytes);
                j.out = got.data();
                set_active_isa(i);
                dequantize_table(j);
                set_active_isa(before);
                REQUIRE(std::memcmp(got.data(), want.data(), nbytes) == 0);
            }
        }
    }
}

}  // namespace

TEST_CASE("minifloat tables computed from their rule equal the lookups bit for bit") {
    using namespace lowbit::elem;
    std::mt19937 rng(7);
    // Each element's own rule describes its table, so the computed path runs.
    REQUIRE(lowbit::detail::minifloat_matches(fp8_e4m3::rule, lowbit::detail::element_table<fp8_e4m3>().data(), 8));
    REQUIRE(lowbit::detail::minifloat_matches(fp8_e5m2::rule, lowbit::detail::element_table<fp8_e5m2>().data(), 8));
    REQUIRE(lowbit::detail::minifloat_matches(fp6_e3m2::rule, lowbit::detail::element_table<fp6_e3m2>().data(), 6));
    REQUIRE(lowbit::detail::minifloat_matches(fp6_e2m3::rule, lowbit::detail::element_table<fp6_e2m3>().data(), 6));
    REQUIRE(lowbit::detail::minifloat_matches(fp4_e2m1::rule, lowbit::detail::element_table<fp4_e2m1>().data(), 4));
    check_minifloat<fp8_e4m3>(fp8_e4m3::rule, rng);
    check_minifloat<fp8_e5m2>(fp8_e5m2::rule, rng);
    check_minifloat<fp6_e3m2>(fp6_e3m2::rule, rng);
    check_minifloat<fp6_e2m3>(fp6_e2m3::rule, rng);
    check_minifloat<fp4_e2m1>(fp4_e2m1::rule, rng);
    // Rules that do not describe the table: ignored.
    for (const lowbit::minifloat_rule wrong : {lowbit::minifloat_rule{3, 8, 0x7E, 7}, lowbit::minifloat_rule{2, 7, 0x7E, 7},
                                               lowbit::minifloat_rule{3, 7, 0x7F, 7}, lowbit::minifloat_rule{3, 7, 0x7E, 6}}) {
        REQUIRE_FALSE(lowbit::detail::minifloat_matches(wrong, lowbit::detail::element_table<fp8_e4m3>().data(), 8));
        check_minifloat<fp8_e4m3>(wrong, rng);
    }
}

#if defined(LOWBIT_TEST_GUARD_PAGE)
namespace {

// Memory whose last `bytes` bytes end where an inaccessible page begins.
struct guarded {
    std::size_t len = 0;
    void* map = MAP_FAILED;
    std::uint8_t* data = nullptr;

    explicit guarded(std::size_t bytes) {
        const auto page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
        const std::size_t region = (bytes + page - 1) / page * page;
        len = region + page;
        map = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (map == MAP_FAILED) return;
        if (mprotect(static_cast<std::uint8_t*>(map) + region, page, PROT_NONE) != 0) return;
        data = static_cast<std::uint8_t*>(map) + region - bytes;
    }
    ~guarded() {
        if (map != MAP_FAILED) munmap(map, len);
    }
    guarded(const guarded&) = delete;
    guarded& operator=(const guarded&) = delete;
};

}  // namespace

TEST_CASE("SIMD paths read no code byte past the last row") {
    // Rows packed back to back with the last one ending at a guard page: a
    // read past it faults. The SIMD paths read whole vectors of codes where a
    // row has them and copy its last bytes.
    std::mt19937 rng(31);
    std::normal_distribution<float> nd;
    const auto isas = available_isas();
    const shape guard_shapes[] = {{2, 1088, 64}, {3, 99, 33}, {1, 16, 16}, {2, 130, 65}, {2, 1040, 16}, {1, 7, 7}};
    for (int bits = 1; bits <= 8; ++bits) {
        std::vector<float> table(std::size_t{1} << bits);
        for (auto& v : table) v = nd(rng);
        for (const shape& s : guard_shapes) {
            const std::size_t rb = (s.cols * static_cast<std::size_t>(bits) + 7) / 8;
            buffers b = make_data(s, bits, rb, rng);
            guarded mem(b.codes.size());
            REQUIRE(mem.data != nullptr);
            std::memcpy(mem.data, b.codes.data(), b.codes.size());
            for (out_type t : {out_type::f32, out_type::f16, out_type::bf16}) {
                const std::size_t nbytes = s.rows * s.cols * elem_size(t);
                std::vector<unsigned char> want(nbytes), got(nbytes), want_t(nbytes), got_t(nbytes);
                affine_job j{mem.data, rb, bits, s.rows, s.cols, s.group, b.scale.data(), b.zero.data(),
                             b.bias.data(), s.cols / s.group, want.data(), s.cols, t};
                dequantize_affine_ref(j);
                table_job tj{mem.data, rb, bits, s.rows, s.cols, s.group, table.data(), b.scale.data(),
                             s.cols / s.group, want_t.data(), s.cols, t};
                dequantize_table_ref(tj);
                for (isa i : isas) {
                    INFO(describe(i, bits, s, t, true, true, false));
                    j.out = got.data();
                    dispatch_to(i, dequantize_affine_fn{}, j);
                    REQUIRE(std::memcmp(got.data(), want.data(), nbytes) == 0);
                    tj.out = got_t.data();
                    dispatch_to(i, dequantize_table_fn{}, tj);
                    REQUIRE(std::memcmp(got_t.data(), want_t.data(), nbytes) == 0);
                }
            }
        }
    }
}
#endif

namespace {

// Each value x goes through the kernels as 1 * x (1-bit codes all 1, one group
// per element), so the outputs are float_to_fp16(x) / float_to_bf16(x).
void check_conversions(const std::vector<float>& xs) {
    const std::size_t n = xs.size();
    std::vector<std::uint8_t> codes((n + 7) / 8, 0xFF);
    for (isa i : available_isas())
        for (out_type t : {out_type::f16, out_type::bf16}) {
            std::vector<std::uint16_t> got(n, 0x1234);
            affine_job j{codes.data(), codes.size(), 1, 1, n, 1, xs.data(), nullptr, nullptr, 0, got.data(), n, t};
            dispatch_to(i, dequantize_affine_fn{}, j);
            table_job tj{codes.data(), codes.size(), 1, 1, n, 1, nullptr, xs.data(), 0, nullptr, n, t};
            const float table[2] = {0.0f, 1.0f};
            tj.table = table;
            std::vector<std::uint16_t> got_t(n, 0x1234);
            tj.out = got_t.data();
            dispatch_to(i, dequantize_table_fn{}, tj);
            for (std::size_t k = 0; k < n; ++k) {
                const std::uint16_t want =
                    t == out_type::f16 ? lowbit::float_to_fp16(xs[k]) : lowbit::float_to_bf16(xs[k]);
                if (got[k] != want || got_t[k] != want) {
                    INFO(std::string(isa_name(i)) + " " + type_name(t) + " x bits 0x" +
                         std::to_string(std::bit_cast<std::uint32_t>(xs[k])) + " got " + std::to_string(got[k]) +
                         " / " + std::to_string(got_t[k]) + " want " + std::to_string(want));
                    REQUIRE(got[k] == want);
                    REQUIRE(got_t[k] == want);
                }
            }
        }
}

float from_bits(std::uint32_t u) { return std::bit_cast<float>(u); }

}  // namespace

TEST_CASE("SIMD f16/bf16 conversion equals float_to_fp16/float_to_bf16 on special values") {
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<float> xs = {
        0.0f, -0.0f, 1.0f, -1.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN(),
        from_bits(0x7FC00001u), from_bits(0xFFC12345u), from_bits(0x7F800001u), from_bits(0xFF8FFFFFu),
        from_bits(0x7FFFFFFFu),
        65504.0f, 65519.0f, 65519.996f, 65520.0f, -65520.0f, 70000.0f, 3.4e38f,
        std::ldexp(1.0f, -14), std::ldexp(1.0f, -24), std::ldexp(1.0f, -25), std::ldexp(1.5f, -25),
        std::ldexp(1.0f, -26), std::ldexp(3.0f, -25), std::ldexp(5.0f, -25), std::ldexp(1023.5f, -24),
        std::ldexp(1.0f, -14) - std::ldexp(1.0f, -26), -std::ldexp(1.0f, -24),
        std::numeric_limits<float>::denorm_min(), -std::numeric_limits<float>::denorm_min(),
        std::numeric_limits<float>::min(), std::numeric_limits<float>::max(), -std::numeric_limits<float>::max(),
        // fp16 ties: 1 + 2^-11 (to even: 1), 1 + 3*2^-11 (to even: up)
        1.0f + std::ldexp(1.0f, -11), 1.0f + std::ldexp(3.0f, -11), 2048.5f, 2049.0f,
        // bf16 ties and the carry into the exponent
        from_bits(0x3F808000u), from_bits(0x3F818000u), from_bits(0x3F7FFFFFu), from_bits(0x7F7FFFFFu),
        from_bits(0x7F7F8000u), from_bits(0x3F80FFFFu), from_bits(0x00008000u), from_bits(0x80018000u),
    };
    check_conversions(xs);
}

TEST_CASE("SIMD f16/bf16 conversion equals the scalar one on random and boundary bit patterns") {
    std::mt19937 rng(5);
    std::vector<float> xs;
    for (int k = 0; k < 200000; ++k) xs.push_back(from_bits(static_cast<std::uint32_t>(rng())));
    // Every exponent, with mantissas at and around the rounding points of both formats.
    for (std::uint32_t e = 0; e < 256; ++e)
        for (std::uint32_t m : {0u, 1u, 0xFFFu, 0x1000u, 0x1001u, 0x2000u, 0x3000u, 0x7FFFu, 0x8000u, 0x8001u,
                                0x18000u, 0x7FFFFFu, 0x7FE000u, 0x7FF000u, 0x400000u})
            for (std::uint32_t sgn : {0u, 0x80000000u}) xs.push_back(from_bits(sgn | (e << 23) | m));
    check_conversions(xs);
}

TEST_CASE("public entry points validate and run on every instruction set") {
    const std::uint8_t codes[4] = {0x10, 0x32, 0x54, 0x76};
    const float scale[2] = {0.5f, 2.0f}, zero[2] = {1.0f, 3.0f};
    float out[8];
    affine_job j{codes, 4, 4, 1, 8, 4, scale, zero, nullptr, 0, out, 8, out_type::f32};
    const isa before = active_isa();
    for (isa i : available_isas()) {
        set_active_isa(i);
        dequantize_affine(j);
        for (int c = 0; c < 8; ++c) REQUIRE(out[c] == (static_cast<float>(c) - zero[c / 4]) * scale[c / 4]);
    }
    set_active_isa(before);

    auto bad = j;
    bad.bits = 0;
    REQUIRE_THROWS_AS(dequantize_affine(bad), lowbit::error);
    bad.bits = 9;
    REQUIRE_THROWS_AS(dequantize_affine(bad), lowbit::error);
    bad = j;
    bad.group = 3;
    REQUIRE_THROWS_AS(dequantize_affine(bad), lowbit::error);
    bad.group = 0;
    REQUIRE_THROWS_AS(dequantize_affine(bad), lowbit::error);
    bad = j;
    bad.codes = nullptr;
    REQUIRE_THROWS_AS(dequantize_affine(bad), lowbit::error);
    bad = j;
    bad.scale = nullptr;
    REQUIRE_THROWS_AS(dequantize_affine(bad), lowbit::error);
    bad = j;
    bad.out = nullptr;
    REQUIRE_THROWS_AS(dequantize_affine(bad), lowbit::error);
    bad = j;
    bad.rows = 2;
    bad.code_stride = 3;
    REQUIRE_THROWS_AS(dequantize_affine(bad), lowbit::error);

    const float table[16] = {};
    table_job t{codes, 4, 4, 1, 8, 8, table, scale, 0, out, 8, out_type::bf16};
    REQUIRE_NOTHROW(dequantize_table(t));
    t.table = nullptr;
    REQUIRE_THROWS_AS(dequantize_table(t), lowbit::error);
    t.table = table;
    t.bits = 12;
    REQUIRE_THROWS_AS(dequantize_table(t), lowbit::error);
    t.bits = 4;
    t.group = 5;
    REQUIRE_THROWS_AS(dequantize_table(t), lowbit::error);
    // empty matrices are fine and touch nothing
    t.group = 8;
    t.rows = 0;
    t.out = nullptr;
    REQUIRE_NOTHROW(dequantize_table(t));
}
