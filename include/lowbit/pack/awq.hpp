#pragma once
// AutoAWQ checkpoint layouts, 4-bit only. Codes are the [in][out] matrix, as for
// GPTQ.
//
// GEMM ("gemm" version): qweight uint32 [in][out/8], packed along the OUTPUT
// dimension. Nibble i (bits 4i..4i+3) of word c holds column 8c + awq_gemm_order[i]
// (the interleave is the convention of AWQ's GEMM kernel, so it is not optional). qzeros
// [groups][out/8] use the same packing and store zeros raw (no GPTQ-style -1).
//
// GEMV ("gemv" version): qweight uint32 [out][in/8], packed along the INPUT
// dimension in natural order (nibble i of word c holds input row 8c + i); qzeros
// [out][width] likewise along the groups, zero-padded to awq_gemv_qzeros_width.
//
// Checkpoints declare these tensors int32; the bit patterns are identical.

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/view.hpp"
#include "bits.hpp"

LOWBIT_NAMESPACE_BEGIN

/// Column (within a group of 8) that nibble i of a GEMM word holds.
inline constexpr std::array<std::uint8_t, 8> awq_gemm_order{0, 2, 4, 6, 1, 3, 5, 7};
/// Nibble that holds column j of a group of 8 (the inverse permutation).
inline constexpr std::array<std::uint8_t, 8> awq_gemm_reverse_order{0, 4, 1, 5, 2, 6, 3, 7};

namespace detail {

inline void check_awq_divisible(std::size_t n, std::string_view dim, std::string_view where) {
    if (n % 8 != 0)
        LOWBIT_THROW(errc::not_divisible, std::string(where) + ": " + std::string(dim) + " size " + std::to_string(n) +
                                              " is not a multiple of 8 (eight 4-bit codes per AWQ int32)");
}

}  // namespace detail

/// codes [rows][out] -> words [rows][out/8] in the GEMM interleave. Serves both
/// qweight (rows = in) and qzeros (rows = groups; zeros stored as they are).
inline void pack_awq_gemm(matrix_view<const std::uint8_t> codes, matrix_view<std::uint32_t> packed) {
    constexpr std::string_view where = "pack_awq_gemm";
    detail::check_awq_divisible(codes.cols(), "output (codes columns)", where);
    detail::check_shape(packed.rows(), packed.cols(), codes.rows(), codes.cols() / 8, "packed", where);
    detail::check_matrix_codes_fit(codes, 4, where);
    for (std::size_t r = 0; r < codes.rows(); ++r) {
        const auto src = codes.row(r);
        const auto dst = packed.row(r);
        for (std::size_t c = 0; c < dst.size(); ++c) {
            std::uint32_t w = 0;
            for (std::size_t i = 0; i < 8; ++i) w |= std::uint32_t{src[8 * c + awq_gemm_order[i]]} << (4 * i);
            dst[c] = w;
        }
    }
}

/// Row-major [rows][out/8].
inline std::vector<std::uint32_t> pack_awq_gemm(matrix_view<const std::uint8_t> codes) {
    detail::check_awq_divisible(codes.cols(), "output (codes columns)", "pack_awq_gemm");
    std::vector<std::uint32_t> out(codes.rows() * (codes.cols() / 8));
    pack_awq_gemm(codes, matrix_view<std::uint32_t>(out.data(), codes.rows(), codes.cols() / 8));
    return out;
}

/// words [rows][out/8] -> codes [rows][out].
inline void unpack_awq_gemm(matrix_view<const std::uint32_t> packed, matrix_view<std::uint8_t> codes) {
    constexpr std::string_view where = "unpack_awq_gemm";
    detail::check_awq_divisible(codes.cols(), "output (codes columns)", where);
    detail::check_shape(packed.rows(), packed.cols(), codes.rows(), codes.cols() / 8, "packed", where);
    for (std::size_t r = 0; r < codes.rows(); ++r) {
        const auto src = packed.row(r);
        const auto dst = codes.row(r);
        for (std::size_t c = 0; c < src.size(); ++c)
            for (std::size_t i = 0; i < 8; ++i)
                dst[8 * c + awq_gemm_order[i]] = static_cast<std::uint8_t>((src[c] >> (4 * i)) & 0xFu);
    }
}

/// Row-major [rows][8 * packed.cols()].
inline std::vector<std::uint8_t> unpack_awq_gemm(matrix_view<const std::uint32_t> packed) {
    std::vector<std::uint8_t> out(packed.rows() * packed.cols() * 8);
    unpack_awq_gemm(packed, matrix_view<std::uint8_t>(out.data(), packed.rows(), packed.cols() * 8));
    return out;
}

/// codes [in][out] -> qweight [out][in/8], natural nibble order along the input.
inline void pack_awq_gemv_qweight(matrix_view<const std::uint8_t> codes, matrix_view<std::uint32_t> qweight) {
    constexpr std::string_view where = "pack_awq_gemv_qweight";
    detail::check_awq_divisible(codes.rows(), "input (codes rows)", where);
    detail::check_shape(qweight.rows(), qweight.cols(), codes.cols(), codes.rows() / 8, "qweight", where);
    detail::check_matrix_codes_fit(codes, 4, where);
    for (std::size_t o = 0; o < codes.cols(); ++o)
        detail::pack_stream_u32(codes.data() + o, codes.stride(), codes.rows(), 4, qweight.row(o).data(), 1);
}

/// Row-major [out][in/8].
inline std::vector<std::uint32_t> pack_awq_gemv_qweight(matrix_view<const std::uint8_t> codes) {
    detail::check_awq_divisible(codes.rows(), "input (codes rows)", "pack_awq_gemv_qweight");
    std::vector<std::uint32_t> out(codes.cols() * (codes.rows() / 8));
    pack_awq_gemv_qweight(codes, matrix_view<std::uint32_t>(out.data(), codes.cols(), codes.rows() / 8));
    return out;
}

/// qweight [out][in/8] -> codes [in][out].
inline void unpack_awq_gemv_qweight(matrix_view<const std::uint32_t> qweight, matrix_view<std::uint8_t> codes) {
    constexpr std::string_view where = "unpack_awq_gemv_qweight";
    detail::check_awq_divisible(codes.rows(), "input (codes rows)", where);
    detail::check_shape(qweight.rows(), qweight.cols(), codes.cols(), codes.rows() / 8, "qweight", where);
    for (std::size_t o = 0; o < codes.cols(); ++o)
        detail::unpack_stream_u32(qweight.row(o).data(), 1, codes.rows(), 4, codes.data() + o, codes.stride());
}

/// Row-major [in][out], in = 8 * qweight.cols(), out = qweight.rows().
inline std::vector<std::uint8_t> unpack_awq_gemv_qweight(matrix_view<const std::uint32_t> qweight) {
    const std::size_t in = qweight.cols() * 8, out_cols = qweight.rows();
    std::vector<std::uint8_t> out(in * out_cols);
    unpack_awq_gemv_qweight(qweight, matrix_view<std::uint8_t>(out.data(), in, out_cols));
    return out;
}

/// Words per row of GEMV qzeros: ceil((in/group)/8), rounded up to a multiple
/// of 2 for group 64 and 4 for group 32 so the kernel's loads stay aligned.
inline std::size_t awq_gemv_qzeros_width(std::size_t in, std::size_t group_size) {
    constexpr std::string_view where = "awq_gemv_qzeros_width";
    std::size_t multiple = 0;
    if (group_size >= 128) multiple = 1;
    else if (group_size == 64) multiple = 2;
    else if (group_size == 32) multiple = 4;
    else
        LOWBIT_THROW(errc::unsupported, std::string(where) + ": AWQ GEMV takes group 32, 64 or >= 128, not " +
                                            std::to_string(group_size));
    if (in % group_size != 0)
        LOWBIT_THROW(errc::not_divisible, std::string(where) + ": input size " + std::to_string(in) +
                                              " is not a multiple of group " + std::to_string(group_size));
    const std::size_t words = (in / group_size + 7) / 8;
    return (words + multiple - 1) / multiple * multiple;
}

/// zeros [groups][out] -> qzeros [out][width], width >= ceil(groups/8); the
/// words past the last group are zero.
inline void pack_awq_gemv_qzeros(matrix_view<const std::uint8_t> zeros, matrix_view<std::uint32_t> qzeros) {
    constexpr std::string_view where = "pack_awq_gemv_qzeros";
    const std::size_t need = (zeros.rows() + 7) / 8;
    if (qzeros.rows() != zeros.cols() || qzeros.cols() < need)
        LOWBIT_THROW(errc::shape_mismatch, std::string(where) + ": qzeros is " + std::to_string(qzeros.rows()) +
                                               " x " + std::to_string(qzeros.cols()) + ", expected " +
                                               std::to_string(zeros.cols()) + " x at least " + std::to_string(need));
    detail::check_matrix_codes_fit(zeros, 4, where);
    for (std::size_t o = 0; o < zeros.cols(); ++o) {
        const auto dst = qzeros.row(o);
        for (auto& w : dst) w = 0;
        detail::pack_stream_u32(zeros.data() + o, zeros.stride(), zeros.rows(), 4, dst.data(), 1);
    }
}

/// Row-major [out][awq_gemv_qzeros_width(groups * group_size, group_size)].
inline std::vector<std::uint32_t> pack_awq_gemv_qzeros(matrix_view<const std::uint8_t> zeros, std::size_t group_size) {
    const std::size_t width = awq_gemv_qzeros_width(zeros.rows() * group_size, group_size);
    std::vector<std::uint32_t> out(zeros.cols() * width);
    pack_awq_gemv_qzeros(zeros, matrix_view<std::uint32_t>(out.data(), zeros.cols(), width));
    return out;
}

/// qzeros [out][width] -> zeros [groups][out]; the group count comes from zeros.
inline void unpack_awq_gemv_qzeros(matrix_view<const std::uint32_t> qzeros, matrix_view<std::uint8_t> zeros) {
    constexpr std::string_view where = "unpack_awq_gemv_qzeros";
    const std::size_t need = (zeros.rows() + 7) / 8;
    if (qzeros.rows() != zeros.cols() || qzeros.cols() < need)
        LOWBIT_THROW(errc::shape_mismatch, std::string(where) + ": qzeros is " + std::to_string(qzeros.rows()) +
                                               " x " + std::to_string(qzeros.cols()) + ", expected " +
                                               std::to_string(zeros.cols()) + " x at least " + std::to_string(need));
    for (std::size_t o = 0; o < zeros.cols(); ++o)
        detail::unpack_stream_u32(qzeros.row(o).data(), 1, zeros.rows(), 4, zeros.data() + o, zeros.stride());
}

/// Row-major [groups][out].
inline std::vector<std::uint8_t> unpack_awq_gemv_qzeros(matrix_view<const std::uint32_t> qzeros, std::size_t groups) {
    std::vector<std::uint8_t> out(groups * qzeros.rows());
    unpack_awq_gemv_qzeros(qzeros, matrix_view<std::uint8_t>(out.data(), groups, qzeros.rows()));
    return out;
}

LOWBIT_NAMESPACE_END
