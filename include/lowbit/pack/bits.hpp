#pragma once
// lowbit's own planar layout: k-bit codes (k = 1..8) as one contiguous LSB-first
// bit stream. Code i occupies bits [i*k, i*k + k) of the stream; bit b of the
// stream is bit (b % 8) of byte b / 8, or bit (b % 32) of word b / 32 in the
// uint32 form (MLX's layout). Codes straddle byte and word boundaries when k
// does not divide 8 or 32. A quantized matrix stores each row as its own
// stream, padded with zero bits to a whole byte (packed_row_bytes).

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"

LOWBIT_NAMESPACE_BEGIN

namespace detail {

constexpr void check_code_bits(int k, std::string_view where) {
    if (k < 1 || k > 8)
        LOWBIT_THROW(errc::invalid_argument,
                     std::string(where) + ": " + std::to_string(k) + " bits per code; expected 1 to 8");
}

// A code wider than k bits would silently corrupt its neighbours in the stream.
inline void check_codes_fit(std::span<const std::uint8_t> codes, int k, std::string_view where) {
    const unsigned max = (1u << k) - 1u;
    for (std::size_t i = 0; i < codes.size(); ++i)
        if (codes[i] > max)
            LOWBIT_THROW(errc::invalid_argument, std::string(where) + ": code " + std::to_string(codes[i]) +
                                                     " at index " + std::to_string(i) + " does not fit in " +
                                                     std::to_string(k) + " bits");
}

inline void check_matrix_codes_fit(matrix_view<const std::uint8_t> codes, int k, std::string_view where) {
    const unsigned max = (1u << k) - 1u;
    for (std::size_t r = 0; r < codes.rows(); ++r)
        for (std::size_t c = 0; c < codes.cols(); ++c)
            if (codes(r, c) > max)
                LOWBIT_THROW(errc::invalid_argument, std::string(where) + ": code " + std::to_string(codes(r, c)) +
                                                         " at (" + std::to_string(r) + ", " + std::to_string(c) +
                                                         ") does not fit in " + std::to_string(k) + " bits");
}

// The size checks compare inline and throw from a separate [[noreturn]]
// function, so the optimiser sees that the writes after a failed check are
// unreachable (otherwise GCC's -Wstringop-overflow flags them).
[[noreturn]] inline void throw_no_room(std::size_t have, std::size_t need, std::string_view what,
                                       std::string_view where) {
    LOWBIT_THROW(errc::shape_mismatch, std::string(where) + ": " + std::string(what) + " holds " +
                                           std::to_string(have) + " elements, " + std::to_string(need) +
                                           " are needed");
}

constexpr void check_room(std::size_t have, std::size_t need, std::string_view what, std::string_view where) {
    if (have < need) throw_no_room(have, need, what, where);
}

[[noreturn]] inline void throw_bad_shape(std::size_t rows, std::size_t cols, std::size_t want_rows,
                                         std::size_t want_cols, std::string_view what, std::string_view where) {
    LOWBIT_THROW(errc::shape_mismatch, std::string(where) + ": " + std::string(what) + " is " + std::to_string(rows) +
                                           " x " + std::to_string(cols) + ", expected " + std::to_string(want_rows) +
                                           " x " + std::to_string(want_cols));
}

constexpr void check_shape(std::size_t rows, std::size_t cols, std::size_t want_rows, std::size_t want_cols,
                           std::string_view what, std::string_view where) {
    if (rows != want_rows || cols != want_cols) throw_bad_shape(rows, cols, want_rows, want_cols, what, where);
}

// The k-bit stream kernels below are shared by every layout whose fields run
// LSB-first through consecutive words: GPTQ's columns (including the 3-bit
// fields that cross int32 boundaries) are exactly such streams with a stride.
// Preconditions (checked by the public callers): 1 <= k <= 8, codes fit in k bits.

/// Writes ceil(n*k/32) words; the unused high bits of the last word are zero.
constexpr void pack_stream_u32(const std::uint8_t* src, std::size_t src_stride, std::size_t n, int k,
                               std::uint32_t* dst, std::size_t dst_stride) noexcept {
    std::uint64_t acc = 0;
    int held = 0;
    for (std::size_t i = 0; i < n; ++i) {
        acc |= std::uint64_t{src[i * src_stride]} << held;
        held += k;
        if (held >= 32) {
            *dst = static_cast<std::uint32_t>(acc);
            dst += dst_stride;
            acc >>= 32;
            held -= 32;
        }
    }
    if (held > 0) *dst = static_cast<std::uint32_t>(acc);
}

/// Reads exactly ceil(n*k/32) words, never more.
constexpr void unpack_stream_u32(const std::uint32_t* src, std::size_t src_stride, std::size_t n, int k,
                                 std::uint8_t* dst, std::size_t dst_stride) noexcept {
    const std::uint64_t mask = (std::uint64_t{1} << k) - 1u;
    std::uint64_t acc = 0;
    int held = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if (held < k) {
            acc |= std::uint64_t{*src} << held;
            src += src_stride;
            held += 32;
        }
        dst[i * dst_stride] = static_cast<std::uint8_t>(acc & mask);
        acc >>= k;
        held -= k;
    }
}

/// Writes ceil(n*k/8) bytes; the padding bits of the last byte are zero.
constexpr void pack_stream_u8(const std::uint8_t* src, std::size_t n, int k, std::uint8_t* dst) noexcept {
    if (k == 8) {
        for (std::size_t i = 0; i < n; ++i) dst[i] = src[i];
        return;
    }
    if (8 % k == 0) {
        // Whole codes per byte: no carry between bytes.
        const std::size_t per = static_cast<std::size_t>(8 / k);
        const std::size_t full = n / per;
        for (std::size_t b = 0; b < full; ++b) {
            unsigned byte = 0;
            for (std::size_t j = 0; j < per; ++j) byte |= unsigned{src[b * per + j]} << (j * static_cast<std::size_t>(k));
            dst[b] = static_cast<std::uint8_t>(byte);
        }
        if (const std::size_t rest = n - full * per; rest != 0) {
            unsigned byte = 0;
            for (std::size_t j = 0; j < rest; ++j) byte |= unsigned{src[full * per + j]} << (j * static_cast<std::size_t>(k));
            dst[full] = static_cast<std::uint8_t>(byte);
        }
        return;
    }
    std::uint32_t acc = 0;
    int held = 0;
    for (std::size_t i = 0; i < n; ++i) {
        acc |= std::uint32_t{src[i]} << held;
        held += k;
        if (held >= 8) {
            *dst++ = static_cast<std::uint8_t>(acc);
            acc >>= 8;
            held -= 8;
        }
    }
    if (held > 0) *dst = static_cast<std::uint8_t>(acc);
}

/// Reads exactly ceil(n*k/8) bytes, never more.
constexpr void unpack_stream_u8(const std::uint8_t* src, std::size_t n, int k, std::uint8_t* dst) noexcept {
    if (k == 8) {
        for (std::size_t i = 0; i < n; ++i) dst[i] = src[i];
        return;
    }
    const unsigned mask = (1u << k) - 1u;
    if (8 % k == 0) {
        const std::size_t per = static_cast<std::size_t>(8 / k);
        for (std::size_t i = 0; i < n; ++i)
            dst[i] = static_cast<std::uint8_t>((unsigned{src[i / per]} >> ((i % per) * static_cast<std::size_t>(k))) & mask);
        return;
    }
    std::uint32_t acc = 0;
    int held = 0;
    for (std::size_t i = 0; i < n; ++i) {
        if (held < k) {
            acc |= std::uint32_t{*src++} << held;
            held += 8;
        }
        dst[i] = static_cast<std::uint8_t>(acc & mask);
        acc >>= k;
        held -= k;
    }
}

}  // namespace detail

/// Bytes that n k-bit codes occupy as a stream: ceil(n*k/8).
constexpr std::size_t packed_bytes(std::size_t n, int k) {
    detail::check_code_bits(k, "packed_bytes");
    if (n > std::numeric_limits<std::size_t>::max() / 8)
        LOWBIT_THROW(errc::invalid_argument, "packed_bytes: " + std::to_string(n) + " codes overflow a bit count");
    return (n * static_cast<std::size_t>(k) + 7) / 8;
}

/// Bytes of one row of a lowbit planar matrix: each row starts on a byte.
constexpr std::size_t packed_row_bytes(std::size_t cols, int k) { return packed_bytes(cols, k); }

/// uint32 words that n k-bit codes occupy as a word stream: ceil(n*k/32).
constexpr std::size_t packed_words_u32(std::size_t n, int k) {
    detail::check_code_bits(k, "packed_words_u32");
    if (n > std::numeric_limits<std::size_t>::max() / 8)
        LOWBIT_THROW(errc::invalid_argument, "packed_words_u32: " + std::to_string(n) + " codes overflow a bit count");
    return (n * static_cast<std::size_t>(k) + 31) / 32;
}

/// Packs codes into the first packed_bytes(codes.size(), k) bytes of out.
inline void pack_bits(std::span<const std::uint8_t> codes, int k, std::span<std::uint8_t> out) {
    const std::size_t need = packed_bytes(codes.size(), k);
    detail::check_room(out.size(), need, "output", "pack_bits");
    detail::check_codes_fit(codes, k, "pack_bits");
    detail::pack_stream_u8(codes.data(), codes.size(), k, out.data());
}

inline std::vector<std::uint8_t> pack_bits(std::span<const std::uint8_t> codes, int k) {
    std::vector<std::uint8_t> out(packed_bytes(codes.size(), k));
    pack_bits(codes, k, out);
    return out;
}

/// Unpacks n codes from the first packed_bytes(n, k) bytes of in; padding bits are ignored.
inline void unpack_bits(std::span<const std::uint8_t> in, int k, std::size_t n, std::span<std::uint8_t> out) {
    detail::check_room(in.size(), packed_bytes(n, k), "input", "unpack_bits");
    detail::check_room(out.size(), n, "output", "unpack_bits");
    detail::unpack_stream_u8(in.data(), n, k, out.data());
}

inline std::vector<std::uint8_t> unpack_bits(std::span<const std::uint8_t> in, int k, std::size_t n) {
    std::vector<std::uint8_t> out(n);
    unpack_bits(in, k, n, out);
    return out;
}

/// The same stream in uint32 words; on a little-endian host the words' bytes
/// equal pack_bits' bytes (plus zero padding to a whole word).
inline void pack_bits_u32(std::span<const std::uint8_t> codes, int k, std::span<std::uint32_t> out) {
    const std::size_t need = packed_words_u32(codes.size(), k);
    detail::check_room(out.size(), need, "output", "pack_bits_u32");
    detail::check_codes_fit(codes, k, "pack_bits_u32");
    detail::pack_stream_u32(codes.data(), 1, codes.size(), k, out.data(), 1);
}

inline std::vector<std::uint32_t> pack_bits_u32(std::span<const std::uint8_t> codes, int k) {
    std::vector<std::uint32_t> out(packed_words_u32(codes.size(), k));
    pack_bits_u32(codes, k, out);
    return out;
}

inline void unpack_bits_u32(std::span<const std::uint32_t> in, int k, std::size_t n, std::span<std::uint8_t> out) {
    detail::check_room(in.size(), packed_words_u32(n, k), "input", "unpack_bits_u32");
    detail::check_room(out.size(), n, "output", "unpack_bits_u32");
    detail::unpack_stream_u32(in.data(), 1, n, k, out.data(), 1);
}

inline std::vector<std::uint8_t> unpack_bits_u32(std::span<const std::uint32_t> in, int k, std::size_t n) {
    std::vector<std::uint8_t> out(n);
    unpack_bits_u32(in, k, n, out);
    return out;
}

/// Packs each row of codes into its own byte-aligned stream: out is
/// [codes.rows()] x [packed_row_bytes(codes.cols(), k)].
inline void pack_bits_rows(matrix_view<const std::uint8_t> codes, int k, matrix_view<std::uint8_t> out) {
    const std::size_t row_bytes = packed_row_bytes(codes.cols(), k);
    detail::check_shape(out.rows(), out.cols(), codes.rows(), row_bytes, "output", "pack_bits_rows");
    detail::check_matrix_codes_fit(codes, k, "pack_bits_rows");
    for (std::size_t r = 0; r < codes.rows(); ++r)
        detail::pack_stream_u8(codes.row(r).data(), codes.cols(), k, out.row(r).data());
}

/// Row-major [codes.rows()] x [packed_row_bytes(codes.cols(), k)].
inline std::vector<std::uint8_t> pack_bits_rows(matrix_view<const std::uint8_t> codes, int k) {
    const std::size_t row_bytes = packed_row_bytes(codes.cols(), k);
    std::vector<std::uint8_t> out(codes.rows() * row_bytes);
    pack_bits_rows(codes, k, matrix_view<std::uint8_t>(out.data(), codes.rows(), row_bytes));
    return out;
}

/// Inverse of pack_bits_rows; the column count comes from out.
inline void unpack_bits_rows(matrix_view<const std::uint8_t> in, int k, matrix_view<std::uint8_t> out) {
    detail::check_shape(in.rows(), in.cols(), out.rows(), packed_row_bytes(out.cols(), k), "input",
                        "unpack_bits_rows");
    for (std::size_t r = 0; r < out.rows(); ++r)
        detail::unpack_stream_u8(in.row(r).data(), out.cols(), k, out.row(r).data());
}

/// Row-major [in.rows()] x [cols].
inline std::vector<std::uint8_t> unpack_bits_rows(matrix_view<const std::uint8_t> in, int k, std::size_t cols) {
    std::vector<std::uint8_t> out(in.rows() * cols);
    unpack_bits_rows(in, k, matrix_view<std::uint8_t>(out.data(), in.rows(), cols));
    return out;
}

LOWBIT_NAMESPACE_END
