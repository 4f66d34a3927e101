#pragma once
// bitsandbytes' formats, byte for byte:
//   * 4-bit blockwise NF4 / FP4 (QLoRA, `load_in_4bit`): the tensor is
//     flattened, cut into blocks of `blocksize` (32..4096, a power of two; the
//     last block may be short), each block stores its fp32 absmax and one
//     4-bit code per element, two codes per byte with the EARLIER element in
//     the HIGH nibble; an odd count is padded with the code of 0.
//   * nested ("double") quantization of that absmax vector: offset = mean,
//     absmax - offset quantized 8-bit blockwise (blocks of 256) with the
//     signed dynamic map, so each 4-bit block costs 8 bits instead of 32.
//   * 8-bit blockwise dynamic quantization (the dynamic map, blocks of
//     256..4096, optionally nested itself).
//   * LLM.int8(): per-row absmax int8 weights (`weight`, `SCB`) and the mixed
//     int8 / fp outlier matrix product (kernels/bnb.hpp).
//
// bitsandbytes gives different bytes on different devices, so the rounding
// rules are a choice (kernel_rules):
//   cuda  its CUDA kernels, which wrote nearly every checkpoint in circulation:
//         x * (1/absmax) in float32; NF4/FP4 by the literal threshold trees of
//         dQuantizeNF4/dQuantizeFP4 (strict '>'); 8-bit by dQuantize's 7-step
//         binary search from code 127. An all-zero block gives NaN scaled
//         values, which the trees send to code 0.
//   cpu   what bitsandbytes 0.50 writes on a CPU: 4-bit through its PyTorch
//         kernel (float32 midpoints of the sorted code table with
//         torch.bucketize, so FP4 sends small positive values to code 8, i.e.
//         -0; an all-zero block stores absmax 0 and code 0.0; a short last
//         block is divided rather than multiplied by the reciprocal and its
//         absmax is clamped to 1e-38), 8-bit through its C++ 65536-entry
//         lookup table over [-1, 1].
// Decoding is the same for both: value = code_table[q] * absmax, in float32.
//
// The nested offset is the float32 mean of the absmax vector (detail::mean_f32
// of double_quant.hpp, the registry's nf4-b64-dq computes the same). torch's
// mean (whose summation order depends on its vector width and thread count)
// can differ from the correctly rounded mean lowbit computes in the last bit;
// quantize_4bit_options::offset takes a given offset when the bytes of a
// particular run must be reproduced.

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "../core/error.hpp"
#include "../core/numeric.hpp"
#include "../double_quant.hpp"
#include "../kernels/bnb.hpp"
#include "../parallel.hpp"
#include "../scheme/codebook.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace bnb {

enum class quant_type : std::uint8_t { nf4, fp4 };
enum class kernel_rules : std::uint8_t { cuda, cpu };
/// The dtype recorded for the original tensor ("dtype" in the quant_state JSON).
enum class source_dtype : std::uint8_t { float16, bfloat16, float32 };

constexpr std::string_view to_string(quant_type t) noexcept { return t == quant_type::nf4 ? "nf4" : "fp4"; }
constexpr std::string_view to_string(kernel_rules r) noexcept { return r == kernel_rules::cuda ? "cuda" : "cpu"; }
constexpr std::string_view to_string(source_dtype d) noexcept {
    switch (d) {
    case source_dtype::float16: return "float16";
    case source_dtype::bfloat16: return "bfloat16";
    case source_dtype::float32: return "float32";
    }
    return "?";
}

inline quant_type parse_quant_type(std::string_view s) {
    if (s == "nf4") return quant_type::nf4;
    if (s == "fp4") return quant_type::fp4;
    LOWBIT_THROW(errc::invalid_argument, "bitsandbytes quant_type '" + std::string(s) + "' is not nf4 or fp4");
}
inline kernel_rules parse_kernel_rules(std::string_view s) {
    if (s == "cuda") return kernel_rules::cuda;
    if (s == "cpu") return kernel_rules::cpu;
    LOWBIT_THROW(errc::invalid_argument, "bitsandbytes rules '" + std::string(s) + "' is not cuda or cpu");
}
inline source_dtype parse_source_dtype(std::string_view s) {
    if (s == "float16") return source_dtype::float16;
    if (s == "bfloat16") return source_dtype::bfloat16;
    if (s == "float32") return source_dtype::float32;
    LOWBIT_THROW(errc::invalid_argument, "bitsandbytes dtype '" + std::string(s) +
                                             "' is not float16, bfloat16 or float32");
}

/// The 16 decode values of a 4-bit type, by code (bitsandbytes' quant_map):
/// nf4()'s and fp4()'s tables, but FP4's code 8 is +0, not -0, as
/// bitsandbytes stores it (get_4bit_type) and its kernels decode it.
inline const std::array<float, 16>& code_table(quant_type t) noexcept {
    static const auto map_of = [](const codebook<4>& cb, bool plus_zero) {
        std::array<float, 16> v{};
        std::copy(cb.table().begin(), cb.table().end(), v.begin());
        for (float& f : v)
            if (plus_zero && f == 0.0f) f = 0.0f;
        return v;
    };
    static const std::array<float, 16> nf4_map = map_of(nf4(), false), fp4_map = map_of(fp4(), true);
    return t == quant_type::nf4 ? nf4_map : fp4_map;
}

/// The signed dynamic map (bitsandbytes' nested_quant_map and 8-bit code).
inline const std::array<float, 256>& dynamic_map() {
    static const std::array<float, 256> map = bnb_dynamic_map(true);
    return map;
}

namespace detail {

inline bool valid_4bit_blocksize(std::size_t b) noexcept {
    return b >= 32 && b <= 4096 && (b & (b - 1)) == 0;
}

inline void check_finite(std::span<const float> x, std::string_view where) {
    for (std::size_t i = 0; i < x.size(); ++i)
        if (!std::isfinite(x[i]))
            LOWBIT_THROW(errc::non_finite, std::string(where) + ": element " + std::to_string(i) + " is " +
                                               (std::isnan(x[i]) ? "NaN" : "infinite"));
}

// The PyTorch kernel: bucketize over the float32 midpoints of the code table
// sorted stably by value (so +0 sorts before -0 in FP4), then back to codes.
struct torch_4bit_table {
    std::array<float, 15> bounds{};
    std::array<std::uint8_t, 16> order{};
};

inline torch_4bit_table make_torch_table(quant_type t) noexcept {
    const auto& code = code_table(t);
    torch_4bit_table tb;
    for (std::uint8_t i = 0; i < 16; ++i) tb.order[i] = i;
    std::stable_sort(tb.order.begin(), tb.order.end(), [&](std::uint8_t a, std::uint8_t b) { return code[a] < code[b]; });
    for (std::size_t i = 0; i < 15; ++i) tb.bounds[i] = (code[tb.order[i]] + code[tb.order[i + 1]]) / 2.0f;
    return tb;
}

inline const torch_4bit_table& torch_table(quant_type t) noexcept {
    static const torch_4bit_table nf4 = make_torch_table(quant_type::nf4);
    static const torch_4bit_table fp4 = make_torch_table(quant_type::fp4);
    return t == quant_type::nf4 ? nf4 : fp4;
}

}  // namespace detail

/// NF4 or FP4 as a codebook that encodes as bitsandbytes' `rules` do, with
/// bitsandbytes' quant_map as its table (code_table):
///   cuda  nf4()'s / fp4()'s thresholds (dQuantizeNF4, dQuantizeFP4) with a
///         plain reciprocal, so an all-zero block codes as the CUDA kernels
///         code it (NF4: 0, FP4: 0) and a block whose 1 / absmax overflows
///         sends its nonzero values to the end codes;
///   cpu   NF4 only: the float32 midpoints torch.bucketize counts, with the
///         default guarded reciprocal (the PyTorch kernel's absmax floor of
///         1e-38 gives the same codes unless 0 < absmax < 1e-38). FP4's
///         PyTorch rule gives the value 0 two codes (0 below the threshold 0,
///         8 above it), which a codebook, one code per value, cannot hold:
///         errc::invalid_argument.
inline codebook<4> scheme_4bit(quant_type t, kernel_rules r = kernel_rules::cuda) {
    const auto& map = code_table(t);
    if (r == kernel_rules::cpu) {
        if (t == quant_type::fp4)
            LOWBIT_THROW(errc::invalid_argument, "bnb::scheme_4bit: FP4 under bitsandbytes' cpu rules is not a "
                                                 "codebook (its PyTorch rule codes the value 0 as 0 or 8)");
        const auto& tb = detail::torch_table(t);
        return codebook<4>::with_thresholds(map, tb.bounds, "nf4");
    }
    if (t == quant_type::nf4) return nf4().set_reciprocal(codebook_reciprocal::plain);
    return codebook<4>::sign_magnitude(map, fp4().thresholds(), 0x8, "fp4").set_reciprocal(codebook_reciprocal::plain);
}

namespace detail {

/// The threshold rule bnb::quantize_4bit counts with: scheme_4bit's, and for
/// FP4 under the PyTorch rules the counting form of torch.bucketize over the
/// 15 float32 midpoints of the stably sorted quant_map (the value 0 gets code
/// 0 up to the midpoint 0 between its two entries and code 8 above it).
inline const threshold_rule& rule_4bit(quant_type t, kernel_rules r) {
    static const codebook<4> nf4_cuda = scheme_4bit(quant_type::nf4, kernel_rules::cuda);
    static const codebook<4> fp4_cuda = scheme_4bit(quant_type::fp4, kernel_rules::cuda);
    static const codebook<4> nf4_cpu = scheme_4bit(quant_type::nf4, kernel_rules::cpu);
    static const threshold_rule fp4_cpu = [] {
        const torch_4bit_table& tb = torch_table(quant_type::fp4);
        return counting_rule(tb.bounds.data(), tb.bounds.size(), tb.order.data());
    }();
    if (r == kernel_rules::cpu) return t == quant_type::nf4 ? *nf4_cpu.encode_rule() : fp4_cpu;
    return t == quant_type::nf4 ? *nf4_cuda.encode_rule() : *fp4_cuda.encode_rule();
}

}  // namespace detail

/// bitsandbytes' signed dynamic 8-bit map as a scheme that encodes as its
/// CUDA kernel (dQuantize) does: x * (1 / absmax) with a plain reciprocal.
inline dynamic8 dynamic_scheme() {
    dynamic8 d;
    d.reciprocal = codebook_reciprocal::plain;
    return d;
}

namespace detail {

// The CPU kernel's table: entry i holds the code nearest to the grid point
// -1 + 2i/65535 (ties to the lower code); a scaled value v in [-1, 1] reads
// entry trunc((v + 1) / 2 * 65535 + 0.5); NaN reads entry 0.
class dynamic_lut {
public:
    explicit dynamic_lut(const std::array<float, 256>& map) {
        std::array<float, 255> mid{};
        for (std::size_t k = 0; k < 255; ++k) mid[k] = (map[k] + map[k + 1]) / 2.0f;
        for (std::size_t i = 0; i < lut_.size(); ++i) {
            const float g = static_cast<float>(::lowbit::detail::unfused(static_cast<double>(i) / 65535.0 * 2.0) - 1.0);
            lut_[i] = static_cast<std::uint8_t>(std::lower_bound(mid.begin(), mid.end(), g) - mid.begin());
        }
    }
    std::uint8_t operator()(float v) const noexcept {
        if (!(v == v)) return lut_[0];
        v = std::min(1.0f, std::max(-1.0f, v));
        const float t = (v + 1.0f) * 0.5f;
        const float f = ::lowbit::detail::unfused(t * 65535.0f);
        return lut_[static_cast<std::size_t>(f + 0.5f)];
    }

private:
    std::array<std::uint8_t, 65536> lut_{};
};

inline const dynamic_lut& signed_dynamic_lut() {
    static const dynamic_lut lut(dynamic_map());
    return lut;
}

inline float block_absmax(const float* x, std::size_t n) noexcept {
    float m = 0.0f;
    for (std::size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
    return m;
}

/// 8-bit blockwise codes of x with the signed dynamic map.
inline void quantize_dynamic_blocks(std::span<const float> x, std::size_t blocksize, kernel_rules rules,
                                    std::uint8_t* codes, float* absmax, unsigned threads) {
    static const dynamic8 cuda = dynamic_scheme();
    const dynamic_lut* lut = rules == kernel_rules::cpu ? &signed_dynamic_lut() : nullptr;
    const std::size_t nblocks = (x.size() + blocksize - 1) / blocksize;
    parallel_for(nblocks, threads, 64, [&](std::size_t b0, std::size_t b1) {
        for (std::size_t b = b0; b < b1; ++b) {
            const std::size_t lo = b * blocksize, hi = std::min(x.size(), lo + blocksize);
            const float am = block_absmax(x.data() + lo, hi - lo);
            absmax[b] = am;
            if (lut) {
                const float inv = 1.0f / am;
                for (std::size_t i = lo; i < hi; ++i) codes[i] = (*lut)(x[i] * inv);
            } else {
                cuda.encode_many(x.subspan(lo, hi - lo), {am}, codes + lo);
            }
        }
    });
}

}  // namespace detail

/// The nested (second-level) state of an absmax vector.
struct nested_state {
    std::size_t blocksize = 256;
    float offset = 0.0f;
    std::vector<std::uint8_t> codes;  ///< one per first-level absmax ("weight.absmax", uint8)
    std::vector<float> absmax;        ///< one per block of `blocksize` codes ("nested_absmax")
    std::array<float, 256> code{};    ///< "nested_quant_map"
};

/// bitsandbytes' 4-bit QuantState.
struct quant_state_4bit {
    quant_type type = quant_type::nf4;
    std::size_t blocksize = 64;
    source_dtype dtype = source_dtype::float32;
    std::vector<std::uint64_t> shape;
    std::vector<std::uint8_t> packed;  ///< ceil(n/2) bytes, earlier element in the high nibble
    std::vector<float> absmax;         ///< one per block; empty when nested
    std::optional<nested_state> nested;
    std::array<float, 16> code{};      ///< "quant_map"

    std::uint64_t numel() const noexcept {
        std::uint64_t n = 1;
        for (auto d : shape) n *= d;
        return n;
    }
    std::size_t blocks() const noexcept {
        return static_cast<std::size_t>((numel() + blocksize - 1) / blocksize);
    }
    /// Stored bits per weight, counting the absmax (and nested) state.
    double bits_per_weight() const noexcept {
        const double n = static_cast<double>(numel());
        if (n == 0) return 0;
        double bits = 8.0 * static_cast<double>(packed.size()) + 16 * 32;
        if (nested) bits += 8.0 * static_cast<double>(nested->codes.size()) + 32.0 * static_cast<double>(nested->absmax.size()) + 32 + 256 * 32;
        else bits += 32.0 * static_cast<double>(absmax.size());
        return bits / n;
    }
};

struct quantize_4bit_options {
    quant_type type = quant_type::nf4;
    std::size_t blocksize = 64;
    bool compress_statistics = true;  ///< nested absmax (bitsandbytes' bnb_4bit_use_double_quant)
    std::size_t nested_blocksize = 256;
    kernel_rules rules = kernel_rules::cuda;
    source_dtype dtype = source_dtype::float32;
    std::optional<float> offset;  ///< the nested offset to use instead of the mean
    unsigned threads = 1;
};

/// The absmax values a nested state decodes to, as bitsandbytes rebuilds
/// them: code[q] * nested_absmax, then + offset, in float32.
inline std::vector<float> decode_nested(const nested_state& n) {
    std::vector<float> out(n.codes.size());
    for (std::size_t i = 0; i < out.size(); ++i) {
        const float v = ::lowbit::detail::unfused(n.code[n.codes[i]] * n.absmax[i / n.blocksize]);
        out[i] = v + n.offset;
    }
    return out;
}

/// The absmax each 4-bit block decodes with: stored, or rebuilt from the nested state.
inline std::vector<float> effective_absmax(const quant_state_4bit& s) { return s.nested ? decode_nested(*s.nested) : s.absmax; }

namespace detail {

inline void validate_4bit(const quant_state_4bit& s, std::string_view where) {
    const std::string w(where);
    if (!valid_4bit_blocksize(s.blocksize))
        LOWBIT_THROW(errc::invalid_argument, w + ": blocksize " + std::to_string(s.blocksize) +
                                                 " is not a power of two in 32..4096");
    const std::uint64_t n = s.numel();
    if (s.packed.size() != (n + 1) / 2)
        LOWBIT_THROW(errc::shape_mismatch, w + ": " + std::to_string(s.packed.size()) + " packed bytes for " +
                                               std::to_string(n) + " elements (need " + std::to_string((n + 1) / 2) +
                                               ")");
    const std::size_t nb = s.blocks();
    if (s.nested) {
        const nested_state& ns = *s.nested;
        if (ns.blocksize == 0)
            LOWBIT_THROW(errc::invalid_argument, w + ": nested blocksize is 0");
        if (ns.codes.size() != nb)
            LOWBIT_THROW(errc::shape_mismatch, w + ": " + std::to_string(ns.codes.size()) + " nested absmax codes for " +
                                                   std::to_string(nb) + " blocks");
        if (ns.absmax.size() != (nb + ns.blocksize - 1) / ns.blocksize)
            LOWBIT_THROW(errc::shape_mismatch, w + ": " + std::to_string(ns.absmax.size()) +
                                                   " nested absmax values for " + std::to_string(nb) +
                                                   " codes in blocks of " + std::to_string(ns.blocksize));
    } else if (s.absmax.size() != nb) {
        LOWBIT_THROW(errc::shape_mismatch, w + ": " + std::to_string(s.absmax.size()) + " absmax values for " +
                                               std::to_string(nb) + " blocks");
    }
}

}  // namespace detail

namespace detail {

/// The nested state of a first-level absmax vector: offset (given, or the
/// mean), then absmax - offset 8-bit blockwise with the signed dynamic map.
/// CUDA rules: the core's double quantization (detail::quantize_scales with
/// double_quant<dynamic8>{dynamic_scheme(), blocksize, mean offset}); CPU
/// rules: the same blocks coded through bitsandbytes' CPU lookup table.
inline nested_state nest(std::vector<float> absmax, std::size_t blocksize, kernel_rules rules,
                         std::optional<float> offset, unsigned threads, std::string_view where) {
    if (blocksize == 0) LOWBIT_THROW(errc::invalid_argument, std::string(where) + ": nested blocksize is 0");
    nested_state ns;
    ns.blocksize = blocksize;
    ns.code = dynamic_map();
    ns.offset = offset ? *offset : ::lowbit::detail::mean_f32(absmax);
    if (!std::isfinite(ns.offset))
        LOWBIT_THROW(errc::non_finite, std::string(where) + ": the nested offset is not finite");
    if (rules == kernel_rules::cuda) {
        const double_quant<dynamic8> dq{dynamic_scheme(), blocksize, true, false};
        std::vector<float> effective(absmax.size());
        second_level sl = ::lowbit::detail::quantize_scales(
            dq, absmax, blocksize, effective,
            [&](std::size_t lo, std::size_t hi) {
                return std::string(where) + ": absmax " + std::to_string(lo) + ".." + std::to_string(hi - 1);
            },
            ns.offset);
        ns.codes = std::move(sl.codes);
        ns.absmax = std::move(sl.scale);
        return ns;
    }
    for (float& a : absmax) a -= ns.offset;
    ns.codes.resize(absmax.size());
    ns.absmax.resize((absmax.size() + blocksize - 1) / blocksize);
    quantize_dynamic_blocks(absmax, blocksize, rules, ns.codes.data(), ns.absmax.data(), threads);
    return ns;
}

}  // namespace detail

/// bitsandbytes.functional.quantize_4bit of the flattened tensor x with the given shape.
inline quant_state_4bit quantize_4bit(std::span<const float> x, std::vector<std::uint64_t> shape,
                                      const quantize_4bit_options& o = {}) {
    constexpr std::string_view where = "bnb::quantize_4bit";
    if (!detail::valid_4bit_blocksize(o.blocksize))
        LOWBIT_THROW(errc::invalid_argument, std::string(where) + ": blocksize " + std::to_string(o.blocksize) +
                                                 " is not one of 32, 64, ..., 4096");
    quant_state_4bit s;
    s.type = o.type;
    s.blocksize = o.blocksize;
    s.dtype = o.dtype;
    s.shape = std::move(shape);
    s.code = code_table(o.type);
    if (s.numel() != x.size())
        LOWBIT_THROW(errc::shape_mismatch, std::string(where) + ": shape has " + std::to_string(s.numel()) +
                                               " elements, input has " + std::to_string(x.size()));
    detail::check_finite(x, where);
    const std::size_t n = x.size(), bs = o.blocksize, nb = (n + bs - 1) / bs;
    s.packed.assign((n + 1) / 2, 0);
    std::vector<float> absmax(nb);
    const kernels::bnb4_quantize_job job{x.data(), n, bs, 0, 0, &detail::rule_4bit(o.type, o.rules),
                                         o.rules == kernel_rules::cpu, s.packed.data(), absmax.data()};
    parallel_for(nb, o.threads, 16, [&](std::size_t b0, std::size_t b1) {
        kernels::bnb4_quantize_job j = job;
        j.block_begin = b0;
        j.block_end = b1;
        kernels::dispatch(kernels::bnb4_quantize_fn{}, j);
    });
    if (!o.compress_statistics) {
        s.absmax = std::move(absmax);
        return s;
    }
    s.nested = detail::nest(std::move(absmax), o.nested_blocksize, o.rules, o.offset, o.threads, where);
    return s;
}

/// bitsandbytes' 8-bit blockwise state (quantize_blockwise).
struct quant_state_8bit {
    std::size_t blocksize = 4096;
    std::vector<std::uint8_t> codes;  ///< one per element
    std::vector<float> absmax;        ///< one per block; empty when nested
    std::optional<nested_state> nested;
    std::array<float, 256> code{};
};

struct quantize_blockwise_options {
    std::size_t blocksize = 4096;
    bool nested = false;  ///< quantize the absmax again (same blocksize, offset = mean)
    kernel_rules rules = kernel_rules::cuda;
    std::optional<float> offset;
    unsigned threads = 1;
};

/// bitsandbytes.functional.quantize_blockwise with the signed dynamic map.
inline quant_state_8bit quantize_blockwise(std::span<const float> x, const quantize_blockwise_options& o = {}) {
    constexpr std::string_view where = "bnb::quantize_blockwise";
    if (o.blocksize == 0)
        LOWBIT_THROW(errc::invalid_argument, std::string(where) + ": blocksize is 0");
    detail::check_finite(x, where);
    quant_state_8bit s;
    s.blocksize = o.blocksize;
    s.code = dynamic_map();
    s.codes.resize(x.size());
    std::vector<float> absmax((x.size() + o.blocksize - 1) / o.blocksize);
    detail::quantize_dynamic_blocks(x, o.blocksize, o.rules, s.codes.data(), absmax.data(), o.threads);
    if (!o.nested) {
        s.absmax = std::move(absmax);
        return s;
    }
    s.nested = detail::nest(std::move(absmax), o.blocksize, o.rules, o.offset, o.threads, where);
    return s;
}

inline std::vector<float> effective_absmax(const quant_state_8bit& s) { return s.nested ? decode_nested(*s.nested) : s.absmax; }

// ---- LLM.int8() -------------------------------------------------------------

/// Row-wise int8 weights as Linear8bitLt stores them: `weight` (int8, rows x
/// cols) and `SCB` (float32 absmax per row).
struct int8_weight {
    std::size_t rows = 0, cols = 0;
    std::vector<std::int8_t> q;
    std::vector<float> scb;
};

/// round(x * ((1 / absmax) * 127)) with ties to even, as torch.round; a zero row stays 0.
inline std::int8_t int8_round(float v) noexcept {
    if (!(v == v)) return 0;
    return static_cast<std::int8_t>(std::nearbyint(std::min(127.0f, std::max(-127.0f, v))));
}

/// bitsandbytes.functional.int8_vectorwise_quant(w) (threshold 0): rows x cols, row-major.
/// bitsandbytes quantizes Linear8bitLt weights from float16; pass values already
/// rounded to float16 to reproduce its bytes from a bfloat16 or float32 checkpoint.
inline int8_weight quantize_int8_rows(std::span<const float> w, std::size_t rows, std::size_t cols,
                                      unsigned threads = 1) {
    constexpr std::string_view where = "bnb::quantize_int8_rows";
    if (w.size() != rows * cols)
        LOWBIT_THROW(errc::shape_mismatch, std::string(where) + ": " + std::to_string(w.size()) + " values for " +
                                               std::to_string(rows) + " x " + std::to_string(cols));
    detail::check_finite(w, where);
    int8_weight out;
    out.rows = rows;
    out.cols = cols;
    out.q.resize(w.size());
    out.scb.resize(rows);
    parallel_for(rows, threads, 16, [&](std::size_t r0, std::size_t r1) {
        for (std::size_t r = r0; r < r1; ++r) {
            const float* row = w.data() + r * cols;
            const float am = detail::block_absmax(row, cols);
            out.scb[r] = am;
            const float k = (1.0f / am) * 127.0f;  // torch evaluates 127.0 / t as reciprocal(t) * 127
            for (std::size_t c = 0; c < cols; ++c) out.q[r * cols + c] = int8_round(row[c] * k);
        }
    });
    return out;
}

// ---- Dequantize, GEMV, LLM.int8() on the kernels ---------------------------

/// Dequantizes all numel() elements into `out` (f32, or f16/bf16 bit patterns).
inline void dequantize_4bit(const quant_state_4bit& s, void* out, kernels::out_type type = kernels::out_type::f32,
                            unsigned threads = 1) {
    detail::validate_4bit(s, "bnb::dequantize_4bit");
    const std::vector<float> am = effective_absmax(s);
    const std::size_t n = static_cast<std::size_t>(s.numel()), bs = s.blocksize;
    const std::size_t esize = type == kernels::out_type::f32 ? 4 : 2;
    parallel_for(s.blocks(), threads, 256, [&](std::size_t b0, std::size_t b1) {
        const std::size_t e0 = b0 * bs, e1 = std::min(n, b1 * bs);
        kernels::bnb4_dequantize_job j{s.packed.data() + e0 / 2, e1 - e0, bs, am.data() + b0, s.code.data(),
                                       static_cast<unsigned char*>(out) + e0 * esize, type};
        kernels::dispatch(kernels::bnb4_dequantize_fn{}, j);
    });
}

inline std::vector<float> dequantize_4bit(const quant_state_4bit& s, unsigned threads = 1) {
    std::vector<float> out(static_cast<std::size_t>(s.numel()));
    dequantize_4bit(s, out.data(), kernels::out_type::f32, threads);
    return out;
}

inline void dequantize_blockwise(const quant_state_8bit& s, void* out, kernels::out_type type = kernels::out_type::f32,
                                 unsigned threads = 1) {
    const std::size_t n = s.codes.size(), bs = s.blocksize;
    if (bs == 0) LOWBIT_THROW(errc::invalid_argument, "bnb::dequantize_blockwise: blocksize is 0");
    const std::vector<float> am = effective_absmax(s);
    if (am.size() != (n + bs - 1) / bs)
        LOWBIT_THROW(errc::shape_mismatch, "bnb::dequantize_blockwise: " + std::to_string(am.size()) +
                                               " absmax values for " + std::to_string(n) + " codes in blocks of " +
                                               std::to_string(bs));
    const std::size_t esize = type == kernels::out_type::f32 ? 4 : 2;
    parallel_for((n + bs - 1) / bs, threads, 16, [&](std::size_t b0, std::size_t b1) {
        const std::size_t e0 = b0 * bs, e1 = std::min(n, b1 * bs);
        kernels::bnb8_dequantize_job j{s.codes.data() + e0, e1 - e0, bs, am.data() + b0, s.code.data(),
                                       static_cast<unsigned char*>(out) + e0 * esize, type};
        kernels::dispatch(kernels::bnb8_dequantize_fn{}, j);
    });
}

inline std::vector<float> dequantize_blockwise(const quant_state_8bit& s, unsigned threads = 1) {
    std::vector<float> out(s.codes.size());
    dequantize_blockwise(s, out.data(), kernels::out_type::f32, threads);
    return out;
}

/// A 4-bit state as a rows x cols matrix ready for gemv_4bit: the decode
/// absmax is computed once.
struct matrix_4bit {
    const quant_state_4bit* state = nullptr;
    std::size_t rows = 0, cols = 0;
    std::vector<float> absmax;

    explicit matrix_4bit(const quant_state_4bit& s) : state(&s) {
        detail::validate_4bit(s, "bnb::matrix_4bit");
        if (s.shape.size() != 2)
            LOWBIT_THROW(errc::shape_mismatch, "bnb::matrix_4bit: a matrix needs a 2-D shape, this state has " +
                                                   std::to_string(s.shape.size()) + " dimensions");
        rows = static_cast<std::size_t>(s.shape[0]);
        cols = static_cast<std::size_t>(s.shape[1]);
        absmax = effective_absmax(s);
    }
};

/// y[b][r] = sum_c W[r][c] * x[b][c] for b < batch (x: batch x cols, y: batch x rows, row-major).
inline void gemv_4bit(const matrix_4bit& w, std::span<const float> x, std::size_t batch, std::span<float> y,
                      unsigned threads = 1) {
    if (x.size() != batch * w.cols || y.size() != batch * w.rows)
        LOWBIT_THROW(errc::shape_mismatch, "bnb::gemv_4bit: x has " + std::to_string(x.size()) + " values and y " +
                                               std::to_string(y.size()) + " for batch " + std::to_string(batch) +
                                               " and a " + std::to_string(w.rows) + " x " + std::to_string(w.cols) +
                                               " weight");
    if (batch == 0 || w.rows == 0) return;
    // x in the order the wide kernels decode codes in (see bnb4_nibble_order_x).
    std::vector<float> xn;
    if (w.cols % 64 == 0 && w.state->blocksize % 64 == 0) {
        xn.resize(x.size());
        for (std::size_t b = 0; b < batch; ++b)
            kernels::bnb4_nibble_order_x(x.data() + b * w.cols, w.cols, xn.data() + b * w.cols);
    }
    parallel_for(w.rows, threads, 16, [&](std::size_t r0, std::size_t r1) {
        kernels::bnb4_gemv_job j{w.state->packed.data(), w.rows, w.cols, w.state->blocksize, w.absmax.data(),
                                 w.state->code.data(), x.data(), batch, w.cols, y.data(), w.rows, r0, r1,
                                 xn.empty() ? nullptr : xn.data()};
        kernels::dispatch(kernels::bnb4_gemv_fn{}, j);
    });
}

/// Activations quantized for LLM.int8(): int8 rows, their absmax, the outlier columns.
struct int8_activations {
    std::size_t rows = 0, cols = 0;
    std::vector<std::int8_t> q;
    std::vector<float> row_stats;
    std::vector<std::size_t> outlier_cols;
};

/// bitsandbytes' int8_vectorwise_quant(A, threshold): with threshold > 0, every
/// column holding some |x| >= threshold is an outlier column: its entries are
/// left out of the row absmax and its int8 codes are 0.
inline int8_activations quantize_int8_activations(std::span<const float> a, std::size_t rows, std::size_t cols,
                                                  float threshold) {
    constexpr std::string_view where = "bnb::quantize_int8_activations";
    if (a.size() != rows * cols)
        LOWBIT_THROW(errc::shape_mismatch, std::string(where) + ": " + std::to_string(a.size()) + " values for " +
                                               std::to_string(rows) + " x " + std::to_string(cols));
    detail::check_finite(a, where);
    int8_activations o;
    o.rows = rows;
    o.cols = cols;
    o.q.assign(a.size(), 0);
    o.row_stats.resize(rows);
    std::vector<char> outlier(cols, 0);
    if (threshold > 0.0f) {
        for (std::size_t i = 0; i < a.size(); ++i)
            if (std::fabs(a[i]) >= threshold) outlier[i % cols] = 1;
        for (std::size_t c = 0; c < cols; ++c)
            if (outlier[c]) o.outlier_cols.push_back(c);
    }
    for (std::size_t r = 0; r < rows; ++r) {
        const float* row = a.data() + r * cols;
        float am = 0.0f;
        for (std::size_t c = 0; c < cols; ++c)
            if (!(threshold > 0.0f && std::fabs(row[c]) >= threshold)) am = std::max(am, std::fabs(row[c]));
        o.row_stats[r] = am;
        const float k = (1.0f / am) * 127.0f;  // torch evaluates 127.0 / t as reciprocal(t) * 127
        for (std::size_t c = 0; c < cols; ++c)
            if (!outlier[c]) o.q[r * cols + c] = int8_round(row[c] * k);
    }
    return o;
}

/// LLM.int8() linear layer: y = x W^T with x (batch x in) split into an int8
/// part (int8 x int8 -> int32 product, scaled by row_stat * SCB / 127^2) and
/// the fp32 outlier columns multiplied by the dequantized weight columns
/// (W_int8 * SCB / 127). threshold <= 0 turns the decomposition off.
inline std::vector<float> int8_linear(std::span<const float> x, std::size_t batch, const int8_weight& w,
                                      float threshold = 6.0f, unsigned threads = 1) {
    if (x.size() != batch * w.cols)
        LOWBIT_THROW(errc::shape_mismatch, "bnb::int8_linear: x has " + std::to_string(x.size()) +
                                               " values for batch " + std::to_string(batch) + " x " +
                                               std::to_string(w.cols) + " inputs");
    const int8_activations a = quantize_int8_activations(x, batch, w.cols, threshold);
    std::vector<std::int32_t> c(batch * w.rows);
    if (batch && w.rows)
        parallel_for(w.rows, threads, 64, [&](std::size_t n0, std::size_t n1) {
            kernels::int8_gemm_job j{a.q.data(), batch, w.cols, w.cols, w.q.data(), w.cols, c.data(), w.rows, n0, n1};
            kernels::dispatch(kernels::int8_gemm_fn{}, j);
        });
    std::vector<float> y(batch * w.rows);
    for (std::size_t i = 0; i < batch; ++i)
        for (std::size_t n = 0; n < w.rows; ++n) {
            float v = static_cast<float>(c[i * w.rows + n]) * (a.row_stats[i] * w.scb[n]) * 6.200124e-05f;
            for (std::size_t col : a.outlier_cols)
                v += ::lowbit::detail::unfused(
                    x[i * w.cols + col] * (static_cast<float>(w.q[n * w.cols + col]) * w.scb[n] * 7.874015718698502e-3f));
            y[i * w.rows + n] = v;
        }
    return y;
}

}  // namespace bnb
LOWBIT_NAMESPACE_END
