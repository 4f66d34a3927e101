#pragma once
// GPTQ checkpoint layouts (AutoGPTQ "gptq" = v1, GPTQModel "gptq_v2"), bits 2, 3, 4, 8.
//
// Codes are given as the [in][out] matrix GPTQ packs (the transpose of a
// Linear weight). qweight is uint32 [in*bits/32][out]: each output column is an
// LSB-first bit stream through its words, so for bits 2/4/8 input row r sits in
// word r/(32/bits) at shift bits*(r % (32/bits)), and for 3 bits 32 rows fill 3
// words with rows 10 and 21 split across word boundaries. qzeros is uint32
// [groups][out*bits/32], the same stream along each row of zeros.
//
// Checkpoints declare these tensors int32; the bit patterns are identical, so a
// caller may view int32 storage as uint32 (the two may alias).

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"
#include "bits.hpp"

LOWBIT_NAMESPACE_BEGIN

/// How qzeros store a zero point. v1 (AutoGPTQ, checkpoint_format "gptq")
/// stores zero - 1 and its kernels add 1 back; v2 (GPTQModel's "gptq_v2")
/// stores the zero itself.
enum class gptq_zero_format { v1, v2 };

namespace detail {

constexpr void check_gptq_bits(int bits, std::string_view where) {
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        LOWBIT_THROW(errc::invalid_argument,
                     std::string(where) + ": GPTQ packs 2, 3, 4 or 8 bits, not " + std::to_string(bits));
}

// Codes per packing unit and words per unit: 32/bits codes in one word, or for
// 3 bits 32 codes in 3 words.
constexpr std::size_t gptq_unit_codes(int bits) noexcept { return bits == 3 ? 32 : static_cast<std::size_t>(32 / bits); }
constexpr std::size_t gptq_unit_words(int bits) noexcept { return bits == 3 ? 3 : 1; }

constexpr void check_gptq_divisible(std::size_t n, int bits, std::string_view dim, std::string_view where) {
    const std::size_t unit = gptq_unit_codes(bits);
    if (n % unit != 0)
        LOWBIT_THROW(errc::not_divisible, std::string(where) + ": " + std::string(dim) + " size " + std::to_string(n) +
                                              " is not a multiple of " + std::to_string(unit) + " (needed for " +
                                              std::to_string(bits) + "-bit GPTQ packing)");
}

// Words that n codes pack into (n along the packed dimension, a whole number
// of packing units), after checking bits and n.
constexpr std::size_t gptq_packed_words(std::size_t n, int bits, std::string_view dim, std::string_view where) {
    check_gptq_bits(bits, where);
    check_gptq_divisible(n, bits, dim, where);
    return n / gptq_unit_codes(bits) * gptq_unit_words(bits);
}

// The per-word constant whose addition adds 1 to every field (2/4/8 bits).
constexpr std::uint32_t gptq_field_ones(int bits) noexcept {
    return bits == 2 ? 0x55555555u : bits == 4 ? 0x11111111u : 0x01010101u;
}

// Adds delta (+1 or -1) to every zero field of one qzeros row. For 2/4/8 bits
// this is whole-word arithmetic mod 2^32, so a field that wraps borrows from or
// carries into its neighbour exactly as GPTQModel's conversion does; the two
// directions remain exact inverses. 3-bit fields cross words, so each field is
// shifted on its own, mod 8.
inline void gptq_shift_zero_row(std::uint32_t* words, std::size_t n_words, int bits, int delta) {
    if (bits == 3) {
        std::array<std::uint8_t, 32> z{};
        for (std::size_t w = 0; w < n_words; w += 3) {
            unpack_stream_u32(words + w, 1, 32, 3, z.data(), 1);
            for (auto& v : z) v = static_cast<std::uint8_t>((v + delta) & 7);
            pack_stream_u32(z.data(), 1, 32, 3, words + w, 1);
        }
        return;
    }
    const std::uint32_t ones = gptq_field_ones(bits);
    for (std::size_t w = 0; w < n_words; ++w) words[w] = delta > 0 ? words[w] + ones : words[w] - ones;
}

}  // namespace detail

/// qweight rows for `in` input rows: in*bits/32.
constexpr std::size_t gptq_qweight_rows(std::size_t in, int bits) {
    return detail::gptq_packed_words(in, bits, "input", "gptq_qweight_rows");
}

/// qzeros columns for `out` output columns: out*bits/32.
constexpr std::size_t gptq_qzeros_cols(std::size_t out, int bits) {
    return detail::gptq_packed_words(out, bits, "output", "gptq_qzeros_cols");
}

/// codes [in][out] -> qweight [in*bits/32][out].
inline void pack_gptq_qweight(matrix_view<const std::uint8_t> codes, int bits, matrix_view<std::uint32_t> qweight) {
    constexpr std::string_view where = "pack_gptq_qweight";
    const std::size_t rows = detail::gptq_packed_words(codes.rows(), bits, "input (codes rows)", where);
    detail::check_shape(qweight.rows(), qweight.cols(), rows, codes.cols(), "qweight", where);
    const std::size_t unit = detail::gptq_unit_codes(bits), words = detail::gptq_unit_words(bits);
    detail::check_matrix_codes_fit(codes, bits, where);
    // One packing unit of input rows at a time keeps the reads to a handful of
    // rows in flight instead of walking whole columns.
    for (std::size_t b = 0; b * unit < codes.rows(); ++b)
        for (std::size_t o = 0; o < codes.cols(); ++o)
            detail::pack_stream_u32(&codes(b * unit, o), codes.stride(), unit, bits, &qweight(b * words, o),
                                    qweight.stride());
}

/// Row-major [in*bits/32][out].
inline std::vector<std::uint32_t> pack_gptq_qweight(matrix_view<const std::uint8_t> codes, int bits) {
    const std::size_t rows = gptq_qweight_rows(codes.rows(), bits);
    std::vector<std::uint32_t> out(rows * codes.cols());
    pack_gptq_qweight(codes, bits, matrix_view<std::uint32_t>(out.data(), rows, codes.cols()));
    return out;
}

/// qweight [in*bits/32][out] -> codes [in][out].
inline void unpack_gptq_qweight(matrix_view<const std::uint32_t> qweight, int bits, matrix_view<std::uint8_t> codes) {
    constexpr std::string_view where = "unpack_gptq_qweight";
    const std::size_t rows = detail::gptq_packed_words(codes.rows(), bits, "input (codes rows)", where);
    detail::check_shape(qweight.rows(), qweight.cols(), rows, codes.cols(), "qweight", where);
    const std::size_t unit = detail::gptq_unit_codes(bits), words = detail::gptq_unit_words(bits);
    for (std::size_t b = 0; b * unit < codes.rows(); ++b)
        for (std::size_t o = 0; o < codes.cols(); ++o)
            detail::unpack_stream_u32(&qweight(b * words, o), qweight.stride(), unit, bits, &codes(b * unit, o),
                                      codes.stride());
}

/// Row-major [in][out], in = qweight.rows()*32/bits.
inline std::vector<std::uint8_t> unpack_gptq_qweight(matrix_view<const std::uint32_t> qweight, int bits) {
    detail::check_gptq_bits(bits, "unpack_gptq_qweight");
    const std::size_t words = detail::gptq_unit_words(bits);
    if (qweight.rows() % words != 0)
        LOWBIT_THROW(errc::not_divisible, "unpack_gptq_qweight: " + std::to_string(qweight.rows()) +
                                              " qweight rows is not a multiple of 3 (3-bit units)");
    const std::size_t in = qweight.rows() / words * detail::gptq_unit_codes(bits);
    std::vector<std::uint8_t> out(in * qweight.cols());
    unpack_gptq_qweight(qweight, bits, matrix_view<std::uint8_t>(out.data(), in, qweight.cols()));
    return out;
}

/// In-place v1 -> v2 conversion of qzeros words (adds 1 to every field).
inline void gptq_qzeros_v1_to_v2(matrix_view<std::uint32_t> qzeros, int bits) {
    detail::check_gptq_bits(bits, "gptq_qzeros_v1_to_v2");
    if (bits == 3 && qzeros.cols() % 3 != 0)
        LOWBIT_THROW(errc::not_divisible, "gptq_qzeros_v1_to_v2: " + std::to_string(qzeros.cols()) +
                                              " qzeros columns is not a multiple of 3 (3-bit units)");
    for (std::size_t g = 0; g < qzeros.rows(); ++g) detail::gptq_shift_zero_row(qzeros.row(g).data(), qzeros.cols(), bits, +1);
}

/// In-place v2 -> v1 conversion of qzeros words (subtracts 1 from every field).
inline void gptq_qzeros_v2_to_v1(matrix_view<std::uint32_t> qzeros, int bits) {
    detail::check_gptq_bits(bits, "gptq_qzeros_v2_to_v1");
    if (bits == 3 && qzeros.cols() % 3 != 0)
        LOWBIT_THROW(errc::not_divisible, "gptq_qzeros_v2_to_v1: " + std::to_string(qzeros.cols()) +
                                              " qzeros columns is not a multiple of 3 (3-bit units)");
    for (std::size_t g = 0; g < qzeros.rows(); ++g) detail::gptq_shift_zero_row(qzeros.row(g).data(), qzeros.cols(), bits, -1);
}

/// zeros [groups][out] -> qzeros [groups][out*bits/32]. Under v1 a zero of 0
/// has no faithful encoding (AutoGPTQ's own packer corrupts the neighbours);
/// lowbit follows GPTQModel's word arithmetic, which unpack reverses exactly.
inline void pack_gptq_qzeros(matrix_view<const std::uint8_t> zeros, int bits, gptq_zero_format format,
                             matrix_view<std::uint32_t> qzeros) {
    constexpr std::string_view where = "pack_gptq_qzeros";
    const std::size_t cols = detail::gptq_packed_words(zeros.cols(), bits, "output (zeros columns)", where);
    detail::check_shape(qzeros.rows(), qzeros.cols(), zeros.rows(), cols, "qzeros", where);
    detail::check_matrix_codes_fit(zeros, bits, where);
    for (std::size_t g = 0; g < zeros.rows(); ++g)
        detail::pack_stream_u32(zeros.row(g).data(), 1, zeros.cols(), bits, qzeros.row(g).data(), 1);
    if (format == gptq_zero_format::v1) gptq_qzeros_v2_to_v1(qzeros, bits);
}

/// Row-major [groups][out*bits/32].
inline std::vector<std::uint32_t> pack_gptq_qzeros(matrix_view<const std::uint8_t> zeros, int bits,
                                                   gptq_zero_format format) {
    const std::size_t cols = gptq_qzeros_cols(zeros.cols(), bits);
    std::vector<std::uint32_t> out(zeros.rows() * cols);
    pack_gptq_qzeros(zeros, bits, format, matrix_view<std::uint32_t>(out.data(), zeros.rows(), cols));
    return out;
}

/// qzeros [groups][out*bits/32] -> zeros [groups][out], undoing v1's offset.
inline void unpack_gptq_qzeros(matrix_view<const std::uint32_t> qzeros, int bits, gptq_zero_format format,
                               matrix_view<std::uint8_t> zeros) {
    constexpr std::string_view where = "unpack_gptq_qzeros";
    const std::size_t cols = detail::gptq_packed_words(zeros.cols(), bits, "output (zeros columns)", where);
    detail::check_shape(qzeros.rows(), qzeros.cols(), zeros.rows(), cols, "qzeros", where);
    std::vector<std::uint32_t> row(qzeros.cols());
    for (std::size_t g = 0; g < qzeros.rows(); ++g) {
        const auto src = qzeros.row(g);
        row.assign(src.begin(), src.end());
        if (format == gptq_zero_format::v1) detail::gptq_shift_zero_row(row.data(), row.size(), bits, +1);
        detail::unpack_stream_u32(row.data(), 1, zeros.cols(), bits, zeros.row(g).data(), 1);
    }
}

/// Row-major [groups][out], out = qzeros.cols()*32/bits.
inline std::vector<std::uint8_t> unpack_gptq_qzeros(matrix_view<const std::uint32_t> qzeros, int bits,
                                                    gptq_zero_format format) {
    detail::check_gptq_bits(bits, "unpack_gptq_qzeros");
    const std::size_t words = detail::gptq_unit_words(bits);
    if (qzeros.cols() % words != 0)
        LOWBIT_THROW(errc::not_divisible, "unpack_gptq_qzeros: " + std::to_string(qzeros.cols()) +
                                              " qzeros columns is not a multiple of 3 (3-bit units)");
    const std::size_t out_cols = qzeros.cols() / words * detail::gptq_unit_codes(bits);
    std::vector<std::uint8_t> out(qzeros.rows() * out_cols);
    unpack_gptq_qzeros(qzeros, bits, format, matrix_view<std::uint8_t>(out.data(), qzeros.rows(), out_cols));
    return out;
}

LOWBIT_NAMESPACE_END
