#pragma once
// Quantize rows of f32 (or f16 / bf16) to ggml blocks on the active
// instruction set, byte for byte what the scalar quantizers in
// formats/ggml_kquants.hpp and formats/ggml_blocks.hpp (and so ggml itself)
// produce: the drivers and the public entry points. The work is split by
// responsibility:
//   ggml_quantize_job.hpp     the jobs and functors, which types have a kernel
//   ggml_quantize_tiles.hpp   the searches' xsimd lanes, tiles and transposes
//   ggml_quantize_kquants.hpp K-quant and IQ4 tiles (searches on SIMD lanes)
//   ggml_quantize_legacy.hpp  Q4_0..Q8_0, MXFP4, TQ1_0, TQ2_0 (a block per lane)
//   ggml_widen.hpp            f16 / bf16 sources widened to f32
//
// Nearly all of a K-quant's time goes into a search per sub-block
// (make_qkx_quants: 16 to 37 candidate grids, each a weighted least-squares
// fit; make_qx_quants: 19 grids; make_q3_quants: coordinate descent), and the
// sub-blocks are independent. So each SIMD lane runs the search of one
// sub-block: a tile of sub-blocks is transposed so that vector j holds element
// j of every lane's sub-block. The searches, the per-super-block scale steps
// and the packing helpers are the scalar reference's own templates
// (formats/ggml_kquant_search.hpp, formats/ggml_kquants.hpp,
// formats/ggml_blocks.hpp) instantiated on the arch.

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>
#include <type_traits>

#include "../core/error.hpp"
#include "../core/finite.hpp"
#include "../core/view.hpp"
#include "../formats/ggml.hpp"
#include "../formats/ggml_kquants.hpp"
#include "../formats/ggml_validate.hpp"
#include "dequantize.hpp"
#include "dispatch.hpp"
#include "ggml_quantize_job.hpp"
#include "ggml_quantize_kquants.hpp"
#include "ggml_quantize_legacy.hpp"
#include "ggml_quantize_tiles.hpp"
#include "ggml_widen.hpp"
#if !defined(LOWBIT_NO_SIMD)
#include "../detail/fp_contract.hpp"
#include "../detail/xsimd_compat.hpp"
#endif

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::ggml_quant {

// ---- rows -------------------------------------------------------------------

/// The matrix is one run of super-blocks (rows are whole super-blocks and
/// packed back to back), tiled T at a time across row ends; the imatrix
/// repeats every row.
template <class Arch, int T, std::size_t BlockBytes, class Tile, std::size_t BlockVals = ggml::qk_k>
inline void run_tiles(const ggml_quantize_job& j, Tile tile_fn) noexcept {
    const std::size_t bpr = j.n_per_row / BlockVals, total = j.rows * bpr;
    auto* out = static_cast<unsigned char*>(j.dst);
    const float* xs[T];
    const float* qws[T];
    for (std::size_t b = 0; b < total; b += T) {
        const int nvalid = static_cast<int>(total - b < static_cast<std::size_t>(T) ? total - b : T);
        for (int k = 0; k < T; ++k) {
            const std::size_t blk = b + static_cast<std::size_t>(k < nvalid ? k : 0);
            xs[k] = j.x + blk * BlockVals;
            qws[k] = j.imatrix ? j.imatrix + (blk % bpr) * BlockVals : nullptr;
        }
        tile_fn(xs, qws, out + b * BlockBytes, nvalid);
    }
}

template <class Arch>
inline void run(const ggml_quantize_job& j) noexcept {
    using ggml::type;
    switch (j.type) {
    case type::q4_k:
        run_tiles<Arch, tile<Arch, 32, 8>::T, sizeof(ggml::block_q4_k)>(j, affine_k_tile<Arch, q45_k_tile<15>>);
        break;
    case type::q5_k:
        run_tiles<Arch, tile<Arch, 32, 8>::T, sizeof(ggml::block_q5_k)>(j, affine_k_tile<Arch, q45_k_tile<31>>);
        break;
    case type::q2_k: run_tiles<Arch, tile<Arch, 16, 16>::T, sizeof(ggml::block_q2_k)>(j, affine_k_tile<Arch, q2_k_tile>); break;
    case type::q3_k: run_tiles<Arch, tile<Arch, 16, 16, 4>::T, sizeof(ggml::block_q3_k)>(j, q3_tile<Arch>); break;
    case type::q6_k: run_tiles<Arch, tile<Arch, 16, 16>::T, sizeof(ggml::block_q6_k)>(j, q6_tile<Arch>); break;
    case type::iq4_nl:
        run_tiles<Arch, tile<Arch, 32, 1>::T, sizeof(ggml::block_iq4_nl), decltype(&iq4_tile<Arch, 1>), 32>(
            j, iq4_tile<Arch, 1>);
        break;
    case type::iq4_xs:
        run_tiles<Arch, tile<Arch, 32, 8>::T, sizeof(ggml::block_iq4_xs)>(j, iq4_tile<Arch, 8>);
        break;
    case type::q4_0: run_legacy<Arch, type::q4_0>(j); break;
    case type::q4_1: run_legacy<Arch, type::q4_1>(j); break;
    case type::q5_0: run_legacy<Arch, type::q5_0>(j); break;
    case type::q5_1: run_legacy<Arch, type::q5_1>(j); break;
    case type::q8_0: run_legacy<Arch, type::q8_0>(j); break;
    case type::mxfp4: run_legacy<Arch, type::mxfp4>(j); break;
    case type::tq1_0: run_legacy<Arch, type::tq1_0>(j); break;
    case type::tq2_0: run_legacy<Arch, type::tq2_0>(j); break;
    default: LOWBIT_ASSERT(false && "quantize_ggml: type has no SIMD kernel"); break;
    }
}

}  // namespace detail::ggml_quant
LOWBIT_SIMD_WARNINGS_ON
#undef LOWBIT_GGML_QUANT_UNROLL
#undef LOWBIT_GGML_QUANT_PRAGMA
#undef LOWBIT_GGML_QUANT_INLINE
#undef LOWBIT_GGML_QUANT_COLD
#endif  // !LOWBIT_NO_SIMD

template <class Arch>
void quantize_ggml_fn::operator()(Arch, const ggml_quantize_job& j) const noexcept {
    if (j.rows == 0 || j.n_per_row == 0) return;
    const auto f32_rows = [](const ggml_quantize_job& f) {
        if constexpr (std::is_same_v<Arch, scalar>) {
            const std::size_t rb = ggml::row_bytes(f.type, f.n_per_row);
            const ggml::quantize_row_fn q = ggml::traits(f.type).quantize;
            for (std::size_t r = 0; r < f.rows; ++r)
                q(f.x + r * f.n_per_row, static_cast<unsigned char*>(f.dst) + r * rb, f.n_per_row, f.imatrix);
        } else {
#if !defined(LOWBIT_NO_SIMD)
            detail::ggml_quant::run<Arch>(f);
#endif
        }
    };
    if (j.from == ggml::type::f32) {
        f32_rows(j);
        return;
    }
    const std::size_t in_row = 2 * j.n_per_row, out_row = ggml::row_bytes(j.type, j.n_per_row);
    for (std::size_t r = 0; r < j.rows; r += j.scratch_rows) {
        ggml_quantize_job c = j;
        c.rows = std::min(j.scratch_rows, j.rows - r);
        const auto* in = static_cast<const unsigned char*>(j.src) + r * in_row;
        if constexpr (std::is_same_v<Arch, scalar>) {
            detail::ggml_quant::widen_scalar(j.from, in, j.scratch, c.rows * j.n_per_row);
        } else {
#if !defined(LOWBIT_NO_SIMD)
            detail::ggml_quant::widen<Arch>(j.from, in, j.scratch, c.rows * j.n_per_row);
#endif
        }
        c.x = j.scratch;
        c.from = ggml::type::f32;
        c.dst = static_cast<unsigned char*>(j.dst) + r * out_row;
        f32_rows(c);
    }
}

template <class Arch>
void widen_f32_fn::operator()(Arch, const widen_job& j) const noexcept {
    const auto* src = static_cast<const unsigned char*>(j.src);
    if constexpr (std::is_same_v<Arch, scalar>) {
        detail::ggml_quant::widen_scalar(j.from, src, j.out, j.n);
    } else {
#if !defined(LOWBIT_NO_SIMD)
        detail::ggml_quant::widen<Arch>(j.from, src, j.out, j.n);
#endif
    }
}

LOWBIT_SIMD_WARNINGS_OFF
template <class Arch>
void range_scan_fn::operator()(Arch, const range_scan_job& j) const noexcept {
    std::size_t i = 0;
    if constexpr (!std::is_same_v<Arch, scalar>) {
#if !defined(LOWBIT_NO_SIMD)
        // Masked magnitudes and the bound are non-negative, so signed compares serve.
        const auto scan = [&](auto lane, auto mask) {
            using T = decltype(lane);
            using B = xsimd::batch<T, Arch>;
            constexpr std::size_t w = B::size;
            const auto* p = static_cast<const T*>(j.x);
            const B m(mask), lim(static_cast<T>(j.limit));
            // The largest magnitude of 8 batches, then one compare: a max a load.
            for (; i + 8 * w <= j.n; i += 8 * w) {
                B a = B::load_unaligned(p + i) & m;
                for (std::size_t k = 1; k < 8; ++k) a = xsimd::max(a, B::load_unaligned(p + i + k * w) & m);
                if (xsimd::any(a > lim)) break;
            }
        };
        if (j.from == float_storage::f32)
            scan(std::int32_t{}, std::int32_t{0x7FFFFFFF});
        else
            scan(std::int16_t{}, std::int16_t{0x7FFF});
#endif
    }
    const std::size_t width = j.from == float_storage::f32 ? 4 : 2;
    *j.first = i + first_beyond_bits(j.from, static_cast<const unsigned char*>(j.x) + i * width, j.n - i, j.limit);
}
LOWBIT_SIMD_WARNINGS_ON

/// n f16 or bf16 values at src to f32 at out on the active instruction set,
/// exactly (fp16_to_float, bf16_to_float; a signalling f16 NaN may come out
/// quietened).
inline void widen_to_f32(ggml::type from, const void* src, float* out, std::size_t n) {
    if (from != ggml::type::f16 && from != ggml::type::bf16)
        LOWBIT_THROW(errc::invalid_argument,
                     "widen_to_f32: the source must be F16 or BF16, not " + std::string(ggml::traits(from).name));
    if (n == 0) return;
    if (!src || !out) LOWBIT_THROW(errc::invalid_argument, "widen_to_f32: src and out must not be null");
    dispatch(widen_f32_fn{}, widen_job{from, src, out, n});
}

namespace detail::ggml_quant {

/// quantize_ggml_rows' checks; false when there is nothing to do.
inline bool check_rows(ggml::type t, const void* x, const void* dst, std::size_t rows, std::size_t n_per_row) {
    const auto tr = ggml::traits(t);
    if (!tr.quantize) LOWBIT_THROW(errc::unsupported, "lowbit cannot quantize to " + std::string(tr.name));
    if (n_per_row % tr.block_size != 0)
        LOWBIT_THROW(errc::not_divisible, "quantize_ggml_rows: a row of " + std::to_string(n_per_row) +
                                              " values is not a whole number of " + std::string(tr.name) +
                                              " blocks of " + std::to_string(tr.block_size));
    if (rows == 0 || n_per_row == 0) return false;
    if (!x || !dst) LOWBIT_THROW(errc::invalid_argument, "quantize_ggml_rows: x and dst must not be null");
    return true;
}

}  // namespace detail::ggml_quant

namespace detail::ggml_quant {

/// The largest magnitude a value quantized to type t can have: for the
/// block types ggml::largest_representable (beyond it ggml writes an infinite
/// scale or, where an fp32 intermediate overflows first, codes the value as
/// 0); for F16/BF16 the largest float that rounds to a finite value.
inline float value_limit(ggml::type t) noexcept {
    // Just below the midpoints to the next power of two, which round to even: Inf.
    if (t == ggml::type::f16) return std::bit_cast<float>(0x477FEFFFu);   // 65519.996
    if (t == ggml::type::bf16) return std::bit_cast<float>(0x7F7F7FFFu);  // 3.3961773e38
    const double l = ggml::largest_representable(t);
    return l > 0 ? static_cast<float>(l) : std::numeric_limits<float>::max();  // f32, mxfp4 (E8M0 reaches 2^127)
}

/// The float_storage of an F32, F16 or BF16 source type.
inline float_storage storage_of(ggml::type from) noexcept {
    return from == ggml::type::f32 ? float_storage::f32
           : from == ggml::type::f16 ? float_storage::f16
                                     : float_storage::bf16;
}

/// Throws for the first value of the rows that is NaN or infinite
/// (errc::non_finite) or beyond what type t can represent
/// (errc::invalid_argument), naming its row (counted from first_row) and column.
inline void check_rows_range(ggml::type t, ggml::type from, const void* x, std::size_t rows, std::size_t n_per_row,
                             std::size_t first_row) {
    const auto fs = storage_of(from);
    const float limit = value_limit(t);
    const std::size_t n = rows * n_per_row;
    std::size_t i = n;
    dispatch(range_scan_fn{}, range_scan_job{fs, x, n, lowbit::detail::limit_bits(fs, limit), &i});
    if (i == n) return;
    const float v = float_at(fs, x, i);
    const std::string where = "row " + std::to_string(first_row + i / n_per_row) + ", column " +
                              std::to_string(i % n_per_row);
    using lowbit::detail::value_string;
    if (!std::isfinite(v)) LOWBIT_THROW(errc::non_finite, where + " is " + value_string(v));
    LOWBIT_THROW(errc::invalid_argument, where + ": " + value_string(v) + " is beyond " +
                                             std::string(ggml::traits(t).name) + "'s range (largest magnitude " +
                                             value_string(limit) + ")");
}

/// Throws when a quantized block holds a value ggml_validate_row_data
/// rejects (an fp16 scale that overflowed, say), naming the row, the block's
/// columns and its largest input value.
inline void check_quantized_rows(ggml::type t, const void* dst, std::size_t rows, std::size_t n_per_row,
                                 ggml::type from, const void* x, std::size_t first_row) {
    // Where the range bound alone keeps every field finite, there is nothing
    // to check: d = max/-8 or /-16 or amax/127 of values within value_limit is
    // at most 65504, TQ's d = amax likewise, MXFP4's exponent stays below 0xFF,
    // and F32/F16/BF16 elements within it stay finite. Q4_1/Q5_1 (an fp16 min)
    // and the searched types are checked.
    using ggml::type;
    if (t == type::q4_0 || t == type::q5_0 || t == type::q8_0 || t == type::tq1_0 || t == type::tq2_0 ||
        t == type::mxfp4 || t == type::f32 || t == type::f16 || t == type::bf16)
        return;
    const std::size_t rb = ggml::row_bytes(t, n_per_row);
    const auto bad = ggml::find_invalid_block(t, {static_cast<const std::byte*>(dst), rows * rb});
    if (!bad) return;
    const auto fs = storage_of(from);
    const std::size_t bs = ggml::traits(t).block_size, per_row = n_per_row / bs;
    const std::size_t r = bad->block / per_row, c0 = bad->block % per_row * bs;
    std::size_t at = c0;
    float mx = -1;
    for (std::size_t c = c0; c < c0 + bs; ++c) {
        const float v = float_at(fs, x, r * n_per_row + c);
        if (std::fabs(v) > mx) mx = std::fabs(v), at = c;
    }
    const std::string name(ggml::traits(t).name);
    using lowbit::detail::value_string;
    const std::string v = value_string(float_at(fs, x, r * n_per_row + at));
    LOWBIT_THROW(errc::invalid_argument,
                 "row " + std::to_string(first_row + r) + ", columns " + std::to_string(c0) + "-" +
                     std::to_string(c0 + bs - 1) + ": a " + name + " block cannot hold these values (its " +
                     std::string(bad->field) + " would be " + value_string(bad->value) +
                     "; the largest is " + v + " at column " + std::to_string(at) + ")");
}

/// quantize_ggml_rows with row numbers in messages counted from first_row
/// (for a caller that passes a slice of a larger tensor).
inline void quantize_rows_from(ggml::type t, ggml::type from, const void* x, void* dst, std::size_t rows,
                               std::size_t n_per_row, const float* imatrix, std::size_t first_row) {
    if (from != ggml::type::f32 && from != ggml::type::f16 && from != ggml::type::bf16)
        LOWBIT_THROW(errc::invalid_argument, "quantize_ggml_rows: the source rows must be F32, F16 or BF16, not " +
                                                 std::string(ggml::traits(from).name));
    if (!check_rows(t, x, dst, rows, n_per_row)) return;
    if (rows > SIZE_MAX / n_per_row)
        LOWBIT_THROW(errc::invalid_argument, "quantize_ggml_rows: " + std::to_string(rows) + " rows of " +
                                                 std::to_string(n_per_row) + " values overflow size_t");
    const bool simd = quantize_ggml_simd_supports(t, imatrix != nullptr) && active_isa() != isa::scalar;
    const std::size_t in_row = n_per_row * (from == ggml::type::f32 ? 4 : 2), out_row = ggml::row_bytes(t, n_per_row);
    // A slice of about 256 KB of input at a time is quantized, then scanned and
    // its blocks checked while it is in cache (on an error dst holds no
    // defined result).
    const std::size_t slice = std::min(rows, std::max<std::size_t>(1, (std::size_t{1} << 16) / n_per_row));
    // f16/bf16 rows are widened about 16 KB of f32 (at least a row) at a time: they stay in L1.
    const std::size_t chunk = std::min(slice, std::max<std::size_t>(1, 4096 / n_per_row));
    struct aligned_delete {
        void operator()(float* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
    };
    std::unique_ptr<float[], aligned_delete> scratch;
    if (from != ggml::type::f32)
        scratch.reset(static_cast<float*>(::operator new[](chunk * n_per_row * sizeof(float), std::align_val_t{64})));
    for (std::size_t r = 0; r < rows; r += slice) {
        const std::size_t n = std::min(slice, rows - r);
        const void* xs = static_cast<const unsigned char*>(x) + r * in_row;
        void* ds = static_cast<unsigned char*>(dst) + r * out_row;
        if (from == ggml::type::f32) {
            const auto* xf = static_cast<const float*>(xs);
            if (simd)
                dispatch(quantize_ggml_fn{}, ggml_quantize_job{t, xf, ds, n, n_per_row, imatrix});
            else
                ggml::quantize_rows(t, xf, ds, n, n_per_row, imatrix);
        } else {
            ggml_quantize_job j{t, nullptr, ds, n, n_per_row, imatrix, from, xs, scratch.get(), chunk};
            if (simd)
                dispatch(quantize_ggml_fn{}, j);
            else
                quantize_ggml_fn{}(scalar{}, j);
        }
        // After the kernel, which streamed the slice in (with its arithmetic
        // overlapping the loads), the scan reads it from cache.
        check_rows_range(t, from, xs, n, n_per_row, first_row + r);
        check_quantized_rows(t, ds, n, n_per_row, from, xs, first_row + r);
    }
}

}  // namespace detail::ggml_quant

/// ggml::quantize_rows, with the K-quant searches on the active instruction
/// set: the same bytes, faster. Types and paths without a SIMD kernel (see
/// quantize_ggml_simd_supports) and the scalar ISA run ggml::quantize_rows.
/// A NaN or infinity in x is errc::non_finite naming its row and column; a
/// value beyond what the type can represent (detail::ggml_quant::value_limit), or a
/// block whose parameters it cannot store (an fp16 scale beyond 65504), is
/// errc::invalid_argument naming the row, the column(s) and the value, where
/// ggml would write a block its own ggml_validate_row_data rejects or code
/// the value silently as 0.
inline void quantize_ggml_rows(ggml::type t, const float* x, void* dst, std::size_t rows, std::size_t n_per_row,
                               const float* imatrix = nullptr) {
    detail::ggml_quant::quantize_rows_from(t, ggml::type::f32, x, dst, rows, n_per_row, imatrix, 0);
}

/// quantize_ggml_rows from rows of `from` (f32, f16 or bf16; x needs no
/// alignment): the same bytes as quantizing the rows converted to f32 first,
/// with each few rows widened in a small buffer on the way, so the input is
/// read once at its own width. What `lowbit quantize` runs on each tensor.
inline void quantize_ggml_rows(ggml::type t, ggml::type from, const void* x, void* dst, std::size_t rows,
                               std::size_t n_per_row, const float* imatrix = nullptr) {
    detail::ggml_quant::quantize_rows_from(t, from, x, dst, rows, n_per_row, imatrix, 0);
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

#define LOWBIT_KERNELS_GGML_QUANTIZE(EXT, ARCH)                                   \
    EXT template void lowbit::kernels::quantize_ggml_fn::operator()<ARCH>(      \
        ARCH, const lowbit::kernels::ggml_quantize_job&) const noexcept;        \
    EXT template void lowbit::kernels::widen_f32_fn::operator()<ARCH>(ARCH,     \
                                                                      const lowbit::kernels::widen_job&) const noexcept; \
    EXT template void lowbit::kernels::range_scan_fn::operator()<ARCH>(         \
        ARCH, const lowbit::kernels::range_scan_job&) const noexcept;
LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_GGML_QUANTIZE)
