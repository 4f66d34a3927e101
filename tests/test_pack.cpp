#include "catch.hpp"

#include <lowbit/pack/pack.hpp>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

// Expected bytes and words below are worked out by hand from the documented
// layout rules (lowbit's stream, AutoGPTQ, AutoAWQ, bitsandbytes, ggml), not
// produced by the code under test.

using lowbit::matrix_view;
using u8 = std::uint8_t;
using u32 = std::uint32_t;
using bytes = std::vector<u8>;
using words = std::vector<u32>;

namespace {

bytes random_codes(std::size_t n, int k, std::uint32_t seed) {
    std::mt19937 gen(seed);
    std::uniform_int_distribution<int> d(0, (1 << k) - 1);
    bytes v(n);
    for (auto& c : v) c = static_cast<u8>(d(gen));
    return v;
}

matrix_view<const u8> cview(const bytes& v, std::size_t rows, std::size_t cols) {
    return matrix_view<const u8>(v.data(), rows, cols);
}
matrix_view<const u32> cview(const words& v, std::size_t rows, std::size_t cols) {
    return matrix_view<const u32>(v.data(), rows, cols);
}

template <class F>
lowbit::errc error_code_of(F&& f) {
    try {
        f();
    } catch (const lowbit::error& e) {
        return e.code();
    }
    FAIL("no lowbit::error thrown");
    return lowbit::errc::io;
}

template <class F>
std::string error_text_of(F&& f) {
    try {
        f();
    } catch (const lowbit::error& e) {
        return e.what();
    }
    FAIL("no lowbit::error thrown");
    return {};
}

const std::size_t lengths[] = {0, 1, 2, 3, 5, 7, 8, 9, 13, 15, 31, 32, 33, 63, 100, 257};

}  // namespace

// ---------------------------------------------------------------- k-bit stream

TEST_CASE("packed sizes round up to whole bytes and words") {
    REQUIRE(lowbit::packed_bytes(0, 3) == 0);
    REQUIRE(lowbit::packed_bytes(8, 3) == 3);
    REQUIRE(lowbit::packed_bytes(9, 3) == 4);   // 27 bits
    REQUIRE(lowbit::packed_bytes(3, 1) == 1);
    REQUIRE(lowbit::packed_bytes(5, 8) == 5);
    REQUIRE(lowbit::packed_bytes(7, 7) == 7);   // 49 bits
    REQUIRE(lowbit::packed_row_bytes(100, 5) == 63);  // 500 bits
    REQUIRE(lowbit::packed_words_u32(11, 3) == 2);    // 33 bits
    REQUIRE(lowbit::packed_words_u32(32, 3) == 3);
    REQUIRE(lowbit::packed_words_u32(64, 4) == 8);
    static_assert(lowbit::packed_bytes(5, 3) == 2);
}

TEST_CASE("pack_bits: exact bytes for every k") {
    using lowbit::pack_bits;
    // k=1: codes are bits 0..7 of byte 0, then byte 1.
    REQUIRE(pack_bits(bytes{1, 0, 1, 1, 0, 0, 0, 1, 1}, 1) == bytes{0x8D, 0x01});
    // k=2: 3 | 0<<2 | 1<<4 | 2<<6 = 0x93.
    REQUIRE(pack_bits(bytes{3, 0, 1, 2, 1}, 2) == bytes{0x93, 0x01});
    // k=3: sum c_i << 3i = 0x1F58D1; codes 2 and 5 straddle bytes.
    REQUIRE(pack_bits(bytes{1, 2, 3, 4, 5, 6, 7, 0}, 3) == bytes{0xD1, 0x58, 0x1F});
    // k=4: element 0 in the low nibble.
    REQUIRE(pack_bits(bytes{1, 2, 3}, 4) == bytes{0x21, 0x03});
    // k=5: 1 + 31<<5 + 2<<10 = 0x0BE1.
    REQUIRE(pack_bits(bytes{1, 31, 2}, 5) == bytes{0xE1, 0x0B});
    // k=6: 63 + 5<<12 + 1<<18 = 0x04503F.
    REQUIRE(pack_bits(bytes{63, 0, 5, 1}, 6) == bytes{0x3F, 0x50, 0x04});
    // k=7: 127 + 1<<7 = 0xFF, and 14 bits still take two bytes.
    REQUIRE(pack_bits(bytes{127, 1}, 7) == bytes{0xFF, 0x00});
    REQUIRE(pack_bits(bytes{0, 127}, 7) == bytes{0x80, 0x3F});
    // k=8: identity.
    REQUIRE(pack_bits(bytes{0xAB, 0x01, 0xFF}, 8) == bytes{0xAB, 0x01, 0xFF});
}

TEST_CASE("pack_bits_u32: exact words, fields crossing word boundaries") {
    using lowbit::pack_bits_u32;
    // 11 three-bit sevens = 33 one-bits.
    REQUIRE(pack_bits_u32(bytes(11, 7), 3) == words{0xFFFFFFFFu, 0x1u});
    // 7 five-bit 31s = 35 one-bits.
    REQUIRE(pack_bits_u32(bytes(7, 31), 5) == words{0xFFFFFFFFu, 0x7u});
    // k=6: 1 + 2<<6 + 3<<12 + 4<<18 + 5<<24 = 0x05103081; 63<<30 puts 0b11 in
    // bits 30..31 and 0b1111 in the next word.
    REQUIRE(pack_bits_u32(bytes{1, 2, 3, 4, 5, 63}, 6) == words{0xC5103081u, 0xFu});
    REQUIRE(pack_bits_u32(bytes{1, 2, 3, 4, 5, 6, 7, 8}, 4) == words{0x87654321u});
}

TEST_CASE("pack_bits round-trips every k, odd lengths, zeros and max") {
    for (int k = 1; k <= 8; ++k) {
        const u8 max = static_cast<u8>((1 << k) - 1);
        for (std::size_t n : lengths) {
            CAPTURE(k, n);
            for (const bytes& codes : {random_codes(n, k, static_cast<std::uint32_t>(97 * k + n)), bytes(n, 0), bytes(n, max)}) {
                const bytes packed = lowbit::pack_bits(codes, k);
                REQUIRE(packed.size() == (n * static_cast<std::size_t>(k) + 7) / 8);
                REQUIRE(lowbit::unpack_bits(packed, k, n) == codes);

                const words w = lowbit::pack_bits_u32(codes, k);
                REQUIRE(w.size() == (n * static_cast<std::size_t>(k) + 31) / 32);
                REQUIRE(lowbit::unpack_bits_u32(w, k, n) == codes);
            }
            // Padding bits are zero: all-max codes set exactly the first n*k bits.
            const bytes packed = lowbit::pack_bits(bytes(n, max), k);
            const std::size_t nbits = n * static_cast<std::size_t>(k);
            for (std::size_t b = 0; b < packed.size(); ++b) {
                const std::size_t set = std::min<std::size_t>(8, nbits - 8 * b);
                REQUIRE(packed[b] == static_cast<u8>((1u << set) - 1u));
            }
        }
    }
}

TEST_CASE("pack_bits overwrites the output rather than OR-ing into it") {
    bytes out(4, 0xFF);
    lowbit::pack_bits(bytes{1, 2, 3}, 3, out);  // 9 bits -> 2 bytes
    REQUIRE(out == bytes{0xD1, 0x00, 0xFF, 0xFF});
    words wout(2, 0xFFFFFFFFu);
    lowbit::pack_bits_u32(bytes{1}, 5, wout);
    REQUIRE(wout == words{0x1u, 0xFFFFFFFFu});
}

TEST_CASE("the uint32 stream is the byte stream read as little-endian words") {
    for (int k = 1; k <= 8; ++k)
        for (std::size_t n : lengths) {
            CAPTURE(k, n);
            const bytes codes = random_codes(n, k, static_cast<std::uint32_t>(k * 1000 + n));
            bytes b = lowbit::pack_bits(codes, k);
            const words w = lowbit::pack_bits_u32(codes, k);
            b.resize(w.size() * 4, 0);
            for (std::size_t i = 0; i < w.size(); ++i) {
                const u32 le = u32{b[4 * i]} | u32{b[4 * i + 1]} << 8 | u32{b[4 * i + 2]} << 16 | u32{b[4 * i + 3]} << 24;
                REQUIRE(w[i] == le);
            }
        }
}

TEST_CASE("pack_bits_rows gives every row its own byte-aligned stream") {
    const std::size_t rows = 3, cols = 5;
    for (int k = 1; k <= 8; ++k) {
        CAPTURE(k);
        const bytes codes = random_codes(rows * cols, k, static_cast<std::uint32_t>(k));
        const bytes packed = lowbit::pack_bits_rows(cview(codes, rows, cols), k);
        const std::size_t rb = lowbit::packed_row_bytes(cols, k);
        REQUIRE(packed.size() == rows * rb);
        for (std::size_t r = 0; r < rows; ++r) {
            const bytes row(codes.begin() + static_cast<std::ptrdiff_t>(r * cols),
                            codes.begin() + static_cast<std::ptrdiff_t>((r + 1) * cols));
            const bytes expect = lowbit::pack_bits(row, k);
            REQUIRE(bytes(packed.begin() + static_cast<std::ptrdiff_t>(r * rb),
                          packed.begin() + static_cast<std::ptrdiff_t>((r + 1) * rb)) == expect);
        }
        REQUIRE(lowbit::unpack_bits_rows(cview(packed, rows, rb), k, cols) == codes);
    }
    // 3-bit, two rows of 3: each row is 9 bits -> 2 bytes, the second row starts on a new byte.
    const bytes two{1, 2, 3, 1, 2, 3};
    REQUIRE(lowbit::pack_bits_rows(cview(two, 2, 3), 3) == bytes{0xD1, 0x00, 0xD1, 0x00});
}

TEST_CASE("k-bit stream rejects bad input") {
    using lowbit::errc;
    REQUIRE(error_code_of([] { (void)lowbit::packed_bytes(4, 0); }) == errc::invalid_argument);
    REQUIRE(error_code_of([] { (void)lowbit::pack_bits(bytes{1}, 9); }) == errc::invalid_argument);
    REQUIRE(error_code_of([] { (void)lowbit::pack_bits_u32(bytes{1}, -1); }) == errc::invalid_argument);
    REQUIRE(error_code_of([] { (void)lowbit::pack_bits(bytes{0, 8}, 3); }) == errc::invalid_argument);
    REQUIRE(error_text_of([] { (void)lowbit::pack_bits(bytes{0, 8}, 3); }).find("index 1") != std::string::npos);
    REQUIRE(error_code_of([] {
                bytes out(2);
                lowbit::pack_bits(bytes(9, 1), 2, out);  // needs 3 bytes
            }) == errc::shape_mismatch);
    REQUIRE(error_code_of([] { (void)lowbit::unpack_bits(bytes(2), 3, 6); }) == errc::shape_mismatch);
    REQUIRE(error_code_of([] { (void)lowbit::unpack_bits_u32(words(1), 3, 11); }) == errc::shape_mismatch);
    REQUIRE(error_code_of([] {
                bytes out(3);
                lowbit::unpack_bits(bytes(2), 4, 4, out);
            }) == errc::shape_mismatch);
    const bytes c(6, 1);
    REQUIRE(error_code_of([&] {
                bytes out(5);
                lowbit::pack_bits_rows(cview(c, 2, 3), 3, matrix_view<u8>(out.data(), 2, 1));  // rows need 2 bytes
            }) == errc::shape_mismatch);
}

// ---------------------------------------------------------------- GPTQ

TEST_CASE("GPTQ 2/4/8-bit qweight: row r in word r/(32/bits) at shift bits*(r mod 32/bits)") {
    // 4-bit, 8 input rows, 2 output columns: column 0 rows = 1..8, column 1 = 15..8.
    bytes codes(8 * 2);
    for (std::size_t r = 0; r < 8; ++r) {
        codes[r * 2 + 0] = static_cast<u8>(r + 1);
        codes[r * 2 + 1] = static_cast<u8>(15 - r);
    }
    REQUIRE(lowbit::pack_gptq_qweight(cview(codes, 8, 2), 4) == words{0x87654321u, 0x89ABCDEFu});

    // 4-bit, 16 rows, 1 column: rows 8..15 go to the second word.
    bytes c16(16, 0);
    c16[8] = 0xA;
    c16[15] = 0x5;
    REQUIRE(lowbit::pack_gptq_qweight(cview(c16, 16, 1), 4) == words{0x0u, 0x5000000Au});

    // 2-bit, 16 rows of r%4: every byte is 0 | 1<<2 | 2<<4 | 3<<6 = 0xE4.
    bytes c2(16);
    for (std::size_t r = 0; r < 16; ++r) c2[r] = static_cast<u8>(r % 4);
    REQUIRE(lowbit::pack_gptq_qweight(cview(c2, 16, 1), 2) == words{0xE4E4E4E4u});

    // 8-bit, 4 rows.
    REQUIRE(lowbit::pack_gptq_qweight(cview(bytes{0x11, 0x22, 0x33, 0x44}, 4, 1), 8) == words{0x44332211u});
}

TEST_CASE("GPTQ 3-bit qweight: 32 rows in 3 words, rows 10 and 21 split") {
    auto pack32 = [](const bytes& col) { return lowbit::pack_gptq_qweight(cview(col, 32, 1), 3); };
    // Row 10 = 0b111: low two bits at word0 bits 30..31, bit 2 at word1 bit 0.
    // Row 21 = 0b111: bit 0 at word1 bit 31, bits 1..2 at word2 bits 0..1.
    bytes c(32, 0);
    c[10] = 7;
    c[21] = 7;
    REQUIRE(pack32(c) == words{0xC0000000u, 0x80000001u, 0x00000003u});
    c.assign(32, 0);
    c[10] = 4;  // only its bit 2 -> word1 bit 0
    c[21] = 6;  // bits 1..2 -> word2 bits 0..1; its bit 0 (=0) at word1 bit 31
    REQUIRE(pack32(c) == words{0x0u, 0x1u, 0x3u});
    c.assign(32, 0);
    c[10] = 1;  // word0 bit 30
    c[21] = 1;  // word1 bit 31
    REQUIRE(pack32(c) == words{0x40000000u, 0x80000000u, 0x0u});
    // Rows 0..9 at shifts 0,3,..,27; rows 11..20 at 1,4,..,28; rows 22..31 at 2,5,..,29.
    c.assign(32, 0);
    for (int r : {0, 9, 11, 20, 22, 31}) c[static_cast<std::size_t>(r)] = 5;  // 0b101
    REQUIRE(pack32(c) == words{(5u << 0) | (5u << 27), (5u << 1) | (5u << 28), (5u << 2) | (5u << 29)});
    // All ones: 0x49249249, 0x92492492, 0x24924924.
    REQUIRE(pack32(bytes(32, 1)) == words{0x49249249u, 0x92492492u, 0x24924924u});
    // 64 rows: the second unit starts at qweight row 3.
    bytes c64(64, 0);
    c64[32] = 3;
    REQUIRE(lowbit::pack_gptq_qweight(cview(c64, 64, 1), 3) == words{0, 0, 0, 3, 0, 0});
}

TEST_CASE("GPTQ qweight round-trips, columns are k-bit word streams, strides honoured") {
    for (int bits : {2, 3, 4, 8}) {
        const std::size_t unit = bits == 3 ? 32 : static_cast<std::size_t>(32 / bits);
        const u8 max = static_cast<u8>((1 << bits) - 1);
        for (std::size_t in : {unit, 2 * unit, 5 * unit})
            for (std::size_t out : {std::size_t{1}, std::size_t{3}, std::size_t{7}}) {
                CAPTURE(bits, in, out);
                for (const bytes& codes : {random_codes(in * out, bits, static_cast<std::uint32_t>(bits * 31 + in + out)),
                                           bytes(in * out, 0), bytes(in * out, max)}) {
                    const words q = lowbit::pack_gptq_qweight(cview(codes, in, out), bits);
                    const std::size_t qrows = lowbit::gptq_qweight_rows(in, bits);
                    REQUIRE(qrows * 32 == in * static_cast<std::size_t>(bits));
                    REQUIRE(q.size() == qrows * out);
                    REQUIRE(lowbit::unpack_gptq_qweight(cview(q, qrows, out), bits) == codes);
                    // Each output column, read down qweight, is the column's codes as an LSB-first word stream.
                    for (std::size_t o = 0; o < out; ++o) {
                        bytes col(in);
                        for (std::size_t r = 0; r < in; ++r) col[r] = codes[r * out + o];
                        const words stream = lowbit::pack_bits_u32(col, bits);
                        for (std::size_t w = 0; w < qrows; ++w) REQUIRE(q[w * out + o] == stream[w]);
                    }
                }
            }
    }
    // A strided input view packs the same as a contiguous copy.
    const std::size_t in = 16, out = 3, stride = 5;
    const bytes codes = random_codes(in * out, 4, 7);
    bytes padded(in * stride, 0xEE);
    for (std::size_t r = 0; r < in; ++r)
        for (std::size_t o = 0; o < out; ++o) padded[r * stride + o] = codes[r * out + o];
    const words a = lowbit::pack_gptq_qweight(cview(codes, in, out), 4);
    words b(2 * stride, 0xDEADBEEFu);
    lowbit::pack_gptq_qweight(matrix_view<const u8>(padded.data(), in, out, stride), 4,
                              matrix_view<u32>(b.data(), 2, out, stride));
    for (std::size_t w = 0; w < 2; ++w)
        for (std::size_t o = 0; o < out; ++o) REQUIRE(b[w * stride + o] == a[w * out + o]);
    REQUIRE(b[3] == 0xDEADBEEFu);  // padding columns untouched
}

TEST_CASE("GPTQ qzeros: v1 stores zero - 1, v2 stores the zero") {
    using lowbit::gptq_zero_format;
    auto pz = [](const bytes& z, std::size_t g, std::size_t out, int bits, gptq_zero_format f) {
        return lowbit::pack_gptq_qzeros(cview(z, g, out), bits, f);
    };
    // Symmetric 4-bit: zero 8 everywhere.
    REQUIRE(pz(bytes(8, 8), 1, 8, 4, gptq_zero_format::v1) == words{0x77777777u});
    REQUIRE(pz(bytes(8, 8), 1, 8, 4, gptq_zero_format::v2) == words{0x88888888u});
    // Symmetric 2-bit (zero 2) and 8-bit (zero 128).
    REQUIRE(pz(bytes(16, 2), 1, 16, 2, gptq_zero_format::v1) == words{0x55555555u});
    REQUIRE(pz(bytes(16, 2), 1, 16, 2, gptq_zero_format::v2) == words{0xAAAAAAAAu});
    REQUIRE(pz(bytes(4, 128), 1, 4, 8, gptq_zero_format::v1) == words{0x7F7F7F7Fu});
    REQUIRE(pz(bytes(4, 128), 1, 4, 8, gptq_zero_format::v2) == words{0x80808080u});
    // Packed along the output dimension: column c at shift 4c; two groups are two rows.
    bytes z(2 * 8);
    for (std::size_t c = 0; c < 8; ++c) {
        z[c] = static_cast<u8>(c + 1);
        z[8 + c] = static_cast<u8>(c + 8);
    }
    REQUIRE(pz(z, 2, 8, 4, gptq_zero_format::v2) == words{0x87654321u, 0xFEDCBA98u});
    REQUIRE(pz(z, 2, 8, 4, gptq_zero_format::v1) == words{0x76543210u, 0xEDCBA987u});
    // Symmetric 3-bit (zero 4 = 0b100), 32 columns in 3 words, fields crossing words.
    REQUIRE(pz(bytes(32, 4), 1, 32, 3, gptq_zero_format::v2) == words{0x24924924u, 0x49249249u, 0x92492492u});
    // v1 stores 3 = 0b011 in every field.
    REQUIRE(pz(bytes(32, 4), 1, 32, 3, gptq_zero_format::v1) == words{0xDB6DB6DBu, 0xB6DB6DB6u, 0x6DB6DB6Du});
}

TEST_CASE("GPTQ qzeros v1 <-> v2 converters") {
    words w{0x77777777u, 0x76543210u};
    lowbit::gptq_qzeros_v1_to_v2(matrix_view<u32>(w.data(), 2, 1), 4);
    REQUIRE(w == words{0x88888888u, 0x87654321u});
    lowbit::gptq_qzeros_v2_to_v1(matrix_view<u32>(w.data(), 2, 1), 4);
    REQUIRE(w == words{0x77777777u, 0x76543210u});

    words w2{0x55555555u};
    lowbit::gptq_qzeros_v1_to_v2(matrix_view<u32>(w2.data(), 1, 1), 2);
    REQUIRE(w2 == words{0xAAAAAAAAu});
    words w8{0x7F7F7F7Fu};
    lowbit::gptq_qzeros_v1_to_v2(matrix_view<u32>(w8.data(), 1, 1), 8);
    REQUIRE(w8 == words{0x80808080u});

    // 3-bit: every field +1, including rows 10 and 21 that cross words.
    words w3{0xDB6DB6DBu, 0xB6DB6DB6u, 0x6DB6DB6Du};
    lowbit::gptq_qzeros_v1_to_v2(matrix_view<u32>(w3.data(), 1, 3), 3);
    REQUIRE(w3 == words{0x24924924u, 0x49249249u, 0x92492492u});
    // A 3-bit field of 7 wraps to 0 on its own, without carrying into its neighbour.
    words w7{0xC0000000u, 0x1u, 0x0u};  // only column 10 = 7
    lowbit::gptq_qzeros_v1_to_v2(matrix_view<u32>(w7.data(), 1, 3), 3);
    const words ones3{0x49249249u, 0x92492492u, 0x24924924u};  // every field 1 ...
    REQUIRE(w7 == words{ones3[0] & ~0xC0000000u, ones3[1] & ~0x1u, ones3[2]});  // ... except column 10 = 0
    lowbit::gptq_qzeros_v2_to_v1(matrix_view<u32>(w7.data(), 1, 3), 3);
    REQUIRE(w7 == words{0xC0000000u, 0x1u, 0x0u});
}

TEST_CASE("GPTQ qzeros round-trip in both formats, zero 0 included") {
    using lowbit::gptq_zero_format;
    for (int bits : {2, 3, 4, 8})
        for (gptq_zero_format f : {gptq_zero_format::v1, gptq_zero_format::v2}) {
            const std::size_t unit = bits == 3 ? 32 : static_cast<std::size_t>(32 / bits);
            const std::size_t g = 3, out = 2 * unit;
            CAPTURE(bits, static_cast<int>(f));
            for (const bytes& z : {random_codes(g * out, bits, static_cast<std::uint32_t>(bits + 11)), bytes(g * out, 0),
                                   bytes(g * out, static_cast<u8>((1 << bits) - 1))}) {
                const words q = lowbit::pack_gptq_qzeros(cview(z, g, out), bits, f);
                const std::size_t qcols = lowbit::gptq_qzeros_cols(out, bits);
                REQUIRE(q.size() == g * qcols);
                REQUIRE(lowbit::unpack_gptq_qzeros(cview(q, g, qcols), bits, f) == z);
            }
        }
    // v1 zero 0 borrows from the next field (GPTQModel's word arithmetic):
    // v2 word 0x11111110 - 0x11111111 = 0xFFFFFFFF.
    bytes z{0, 1, 1, 1, 1, 1, 1, 1};
    const words q = lowbit::pack_gptq_qzeros(cview(z, 1, 8), 4, lowbit::gptq_zero_format::v1);
    REQUIRE(q == words{0xFFFFFFFFu});
    REQUIRE(lowbit::unpack_gptq_qzeros(cview(q, 1, 1), 4, lowbit::gptq_zero_format::v1) == z);
}

TEST_CASE("GPTQ rejects bad bits and sizes") {
    using lowbit::errc;
    const bytes c12(12 * 2, 1);
    REQUIRE(error_code_of([&] { (void)lowbit::pack_gptq_qweight(cview(c12, 12, 2), 4); }) == errc::not_divisible);
    const std::string msg = error_text_of([&] { (void)lowbit::pack_gptq_qweight(cview(c12, 12, 2), 4); });
    REQUIRE(msg.find("12") != std::string::npos);
    REQUIRE(msg.find("8") != std::string::npos);
    const bytes c16(16, 1);
    REQUIRE(error_code_of([&] { (void)lowbit::pack_gptq_qweight(cview(c16, 16, 1), 3); }) == errc::not_divisible);
    REQUIRE(error_code_of([&] { (void)lowbit::pack_gptq_qweight(cview(c16, 16, 1), 5); }) == errc::invalid_argument);
    REQUIRE(error_code_of([&] { (void)lowbit::pack_gptq_qweight(cview(bytes(8, 16), 8, 1), 4); }) ==
            errc::invalid_argument);
    REQUIRE(error_code_of([] { (void)lowbit::gptq_qweight_rows(100, 2); }) == errc::not_divisible);
    REQUIRE(error_code_of([&] {
                words q(3);
                lowbit::pack_gptq_qweight(cview(c16, 16, 1), 4, matrix_view<u32>(q.data(), 3, 1));
            }) == errc::shape_mismatch);
    REQUIRE(error_code_of([] { (void)lowbit::unpack_gptq_qweight(cview(words(4), 4, 1), 3); }) == errc::not_divisible);
    // qzeros: the output dimension must divide.
    REQUIRE(error_code_of([] {
                (void)lowbit::pack_gptq_qzeros(cview(bytes(12, 8), 1, 12), 4, lowbit::gptq_zero_format::v1);
            }) == errc::not_divisible);
    REQUIRE(error_code_of([] {
                (void)lowbit::pack_gptq_qzeros(cview(bytes(16, 4), 1, 16), 3, lowbit::gptq_zero_format::v2);
            }) == errc::not_divisible);
    REQUIRE(error_code_of([] {
                words w(2);
                lowbit::gptq_qzeros_v1_to_v2(matrix_view<u32>(w.data(), 1, 2), 3);
            }) == errc::not_divisible);
}

// ---------------------------------------------------------------- AWQ

TEST_CASE("AWQ GEMM: nibble i of word c holds column 8c + [0,2,4,6,1,3,5,7][i]") {
    bytes codes(16);
    for (std::size_t c = 0; c < 16; ++c) codes[c] = static_cast<u8>(c);
    // Nibbles 0..7 hold columns 0,2,4,6,1,3,5,7 -> 0x75316420; then columns 8.. -> 0xFDB9ECA8.
    REQUIRE(lowbit::pack_awq_gemm(cview(codes, 1, 16)) == words{0x75316420u, 0xFDB9ECA8u});
    // A single nonzero column 1 lands in nibble 4.
    bytes one(8, 0);
    one[1] = 0xF;
    REQUIRE(lowbit::pack_awq_gemm(cview(one, 1, 8)) == words{0x000F0000u});
    // Rows are independent: two input rows give two packed rows.
    bytes two(16, 0);
    two[8 + 7] = 3;  // row 1, column 7 -> nibble 7
    REQUIRE(lowbit::pack_awq_gemm(cview(two, 2, 8)) == words{0x0u, 0x30000000u});
    // qzeros are stored raw: zero 8 -> 0x88888888, not 0x77777777.
    REQUIRE(lowbit::pack_awq_gemm(cview(bytes(8, 8), 1, 8)) == words{0x88888888u});
    // The two order tables are inverse permutations.
    for (std::size_t i = 0; i < 8; ++i) REQUIRE(lowbit::awq_gemm_reverse_order[lowbit::awq_gemm_order[i]] == i);
}

TEST_CASE("AWQ GEMV: qweight [out][in/8], natural order along the input") {
    bytes codes(8 * 2);
    for (std::size_t r = 0; r < 8; ++r) {
        codes[r * 2 + 0] = static_cast<u8>(r + 1);
        codes[r * 2 + 1] = static_cast<u8>(r);
    }
    REQUIRE(lowbit::pack_awq_gemv_qweight(cview(codes, 8, 2)) == words{0x87654321u, 0x76543210u});
    // 16 inputs, 1 output: one row of two words.
    bytes c16(16, 0);
    c16[9] = 0xC;
    REQUIRE(lowbit::pack_awq_gemv_qweight(cview(c16, 16, 1)) == words{0x0u, 0xC0u});
}

TEST_CASE("AWQ GEMV qzeros: padded width and natural order along groups") {
    REQUIRE(lowbit::awq_gemv_qzeros_width(4096, 128) == 4);
    REQUIRE(lowbit::awq_gemv_qzeros_width(384, 128) == 1);
    REQUIRE(lowbit::awq_gemv_qzeros_width(192, 64) == 2);   // 3 groups -> 1 word -> multiple of 2
    REQUIRE(lowbit::awq_gemv_qzeros_width(288, 32) == 4);   // 9 groups -> 2 words -> multiple of 4
    REQUIRE(lowbit::awq_gemv_qzeros_width(4096, 32) == 16); // 128 groups -> 16 words
    // zeros [groups=3][out=2]: column 0 = 1,2,3; column 1 = 15,0,9.
    const bytes z{1, 15, 2, 0, 3, 9};
    const words q = lowbit::pack_awq_gemv_qzeros(cview(z, 3, 2), 64);  // width 2
    REQUIRE(q == words{0x321u, 0x0u, 0x90Fu, 0x0u});
    REQUIRE(lowbit::unpack_awq_gemv_qzeros(cview(q, 2, 2), 3) == z);
    REQUIRE(lowbit::errc::unsupported == error_code_of([] { (void)lowbit::awq_gemv_qzeros_width(256, 16); }));
    REQUIRE(lowbit::errc::not_divisible == error_code_of([] { (void)lowbit::awq_gemv_qzeros_width(200, 64); }));
}

TEST_CASE("AWQ layouts round-trip and reject bad sizes") {
    for (std::size_t rows : {std::size_t{8}, std::size_t{24}})
        for (std::size_t cols : {std::size_t{8}, std::size_t{40}}) {
            CAPTURE(rows, cols);
            for (const bytes& c : {random_codes(rows * cols, 4, static_cast<std::uint32_t>(rows * cols)), bytes(rows * cols, 0),
                                   bytes(rows * cols, 15)}) {
                const words g = lowbit::pack_awq_gemm(cview(c, rows, cols));
                REQUIRE(lowbit::unpack_awq_gemm(cview(g, rows, cols / 8)) == c);
                const words v = lowbit::pack_awq_gemv_qweight(cview(c, rows, cols));
                REQUIRE(lowbit::unpack_awq_gemv_qweight(cview(v, cols, rows / 8)) == c);
                const words z = lowbit::pack_awq_gemv_qzeros(cview(c, rows, cols), 128);
                const std::size_t width = lowbit::awq_gemv_qzeros_width(rows * 128, 128);
                REQUIRE(lowbit::unpack_awq_gemv_qzeros(cview(z, cols, width), rows) == c);
            }
        }
    using lowbit::errc;
    REQUIRE(error_code_of([] { (void)lowbit::pack_awq_gemm(cview(bytes(12, 1), 1, 12)); }) == errc::not_divisible);
    REQUIRE(error_code_of([] { (void)lowbit::pack_awq_gemv_qweight(cview(bytes(12, 1), 12, 1)); }) ==
            errc::not_divisible);
    REQUIRE(error_code_of([] { (void)lowbit::pack_awq_gemm(cview(bytes(8, 16), 1, 8)); }) == errc::invalid_argument);
    REQUIRE(error_code_of([] {
                words q(1);
                lowbit::pack_awq_gemm(cview(bytes(16, 1), 1, 16), matrix_view<u32>(q.data(), 1, 1));
            }) == errc::shape_mismatch);
    REQUIRE(error_code_of([] {
                words q(2);
                lowbit::pack_awq_gemv_qzeros(cview(bytes(9, 1), 9, 1), matrix_view<u32>(q.data(), 1, 1));
            }) == errc::shape_mismatch);
}

// ---------------------------------------------------------------- nibble orders

TEST_CASE("nibble orders: exact bytes") {
    using lowbit::nibble_order;
    using lowbit::pack_nibbles;
    // bitsandbytes: element 2j in the high nibble.
    REQUIRE(pack_nibbles(bytes{1, 2, 3, 4}, nibble_order::bnb_high_first) == bytes{0x12, 0x34});
    REQUIRE(pack_nibbles(bytes{1, 2, 3}, nibble_order::bnb_high_first) == bytes{0x12, 0x30});
    // torchao / lowbit stream: element 2j in the low nibble.
    REQUIRE(pack_nibbles(bytes{1, 2, 3, 4}, nibble_order::low_first) == bytes{0x21, 0x43});
    REQUIRE(pack_nibbles(bytes{1, 2, 3}, nibble_order::low_first) == bytes{0x21, 0x03});
    // ggml: byte j = x[j] | x[j+16] << 4; with x[j] = j, x[16+j] = 15-j.
    bytes x(32);
    for (std::size_t j = 0; j < 16; ++j) {
        x[j] = static_cast<u8>(j);
        x[16 + j] = static_cast<u8>(15 - j);
    }
    const bytes g = pack_nibbles(x, nibble_order::ggml_block32);
    REQUIRE(g.size() == 16);
    REQUIRE(g[0] == 0xF0);
    REQUIRE(g[1] == 0xE1);
    REQUIRE(g[15] == 0x0F);
    // Second block starts at byte 16.
    bytes x2(64, 0);
    x2[32] = 0x3;
    x2[48] = 0xA;
    const bytes g2 = pack_nibbles(x2, nibble_order::ggml_block32);
    REQUIRE(g2.size() == 32);
    REQUIRE(g2[16] == 0xA3);
    for (std::size_t j = 0; j < 32; ++j)
        if (j != 16) REQUIRE(g2[j] == 0);
}

TEST_CASE("nibble orders round-trip; low_first equals the 4-bit stream") {
    using lowbit::nibble_order;
    for (nibble_order o : {nibble_order::bnb_high_first, nibble_order::low_first, nibble_order::ggml_block32})
        for (std::size_t n : lengths) {
            if (o == nibble_order::ggml_block32 && n % 32 != 0) continue;
            CAPTURE(lowbit::to_string(o), n);
            for (const bytes& c : {random_codes(n, 4, static_cast<std::uint32_t>(n + 5)), bytes(n, 0), bytes(n, 15)}) {
                const bytes p = lowbit::pack_nibbles(c, o);
                REQUIRE(p.size() == (n + 1) / 2);
                REQUIRE(lowbit::unpack_nibbles(p, o, n) == c);
                if (o == nibble_order::low_first) REQUIRE(p == lowbit::pack_bits(c, 4));
                if (o == nibble_order::bnb_high_first)
                    for (std::size_t j = 0; j < p.size(); ++j) {
                        const u8 swapped = static_cast<u8>((p[j] << 4) | (p[j] >> 4));
                        REQUIRE(swapped == lowbit::pack_bits(c, 4)[j]);
                    }
            }
        }
    for (std::size_t n : {std::size_t{32}, std::size_t{96}}) {
        const bytes c = random_codes(n, 4, static_cast<std::uint32_t>(n));
        REQUIRE(lowbit::unpack_nibbles(lowbit::pack_nibbles(c, nibble_order::ggml_block32), nibble_order::ggml_block32,
                                       n) == c);
    }
}

TEST_CASE("nibble orders reject bad sizes and codes") {
    using lowbit::errc;
    using lowbit::nibble_order;
    REQUIRE(error_code_of([] { (void)lowbit::pack_nibbles(bytes(31, 1), nibble_order::ggml_block32); }) ==
            errc::not_divisible);
    REQUIRE(error_code_of([] { (void)lowbit::unpack_nibbles(bytes(16), nibble_order::ggml_block32, 33); }) ==
            errc::not_divisible);
    REQUIRE(error_code_of([] { (void)lowbit::pack_nibbles(bytes{1, 16}, nibble_order::bnb_high_first); }) ==
            errc::invalid_argument);
    REQUIRE(error_code_of([] { (void)lowbit::unpack_nibbles(bytes(2), nibble_order::low_first, 5); }) ==
            errc::shape_mismatch);
    REQUIRE(error_code_of([] {
                bytes out(1);
                lowbit::pack_nibbles(bytes{1, 2, 3}, nibble_order::bnb_high_first, out);
            }) == errc::shape_mismatch);
}
