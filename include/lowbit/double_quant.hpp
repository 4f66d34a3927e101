#pragma once
// Double quantization: the vector of first-level scales quantized again by a
// second scheme, in blocks. Covers bitsandbytes' nested absmax (offset = mean,
// 8-bit dynamic map over blocks of 256), K-quant sub-scales (6-bit codes under
// an fp16 scale per super-block) and NVFP4's E4M3 block scales under one FP32
// per-tensor scale.

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "core/view.hpp"
#include "detail/fp_contract.hpp"
#include "scheme/concepts.hpp"

LOWBIT_NAMESPACE_BEGIN

/// No second level: scales are stored as the first-level scheme says.
struct no_double_quant {};

template <scheme S2>
struct double_quant {
    using scheme_type = S2;
    S2 scheme{};
    /// Scales per second-level group; 0 = all scales of the matrix in one group.
    /// Under super_block granularity the super-block decides and this is ignored.
    std::size_t block = 256;
    /// Subtract the mean of all scales first and store it (bitsandbytes' offset).
    bool subtract_mean = false;
    /// Encode first-level values with the quantized scales (K-quants, NVFP4) or
    /// with the original ones (bitsandbytes encodes with the fp32 absmax and
    /// quantizes the absmax afterwards).
    bool encode_with_quantized = true;
    /// Nonzero (with block 0): the one second-level scale is the weights'
    /// largest |value| over this, rounded once, instead of the second-level
    /// scheme's fit to the scales (which still serves when that is 0).
    /// NVFP4's tensor scale is amax / (6 * 448) so (NVIDIA's recipe, torchao's
    /// per_tensor_amax_to_scale); fitting E4M3's amax / 448 to the block
    /// scales amax / 6 rounds twice.
    float amax_divisor = 0.0f;
};

template <class T>
inline constexpr bool is_double_quant_v = false;
template <class S2>
inline constexpr bool is_double_quant_v<double_quant<S2>> = true;

/// The stored second level: one code per first-level scale, second-level
/// params per block, and the offset.
struct second_level {
    int bits = 0;
    std::size_t block = 0;
    std::vector<std::uint8_t> codes;          ///< one per first-level scale
    std::vector<float> scale, zero, bias;     ///< one per block (zero/bias empty when unused)
    float offset = 0.0f;
    std::size_t param_bits = 0;               ///< stored bits per block for its params
    bool has_offset = false;

    std::size_t stored_bits() const noexcept {
        return codes.size() * static_cast<std::size_t>(bits) + scale.size() * param_bits + (has_offset ? 32u : 0u);
    }
};

namespace detail {

template <class P>
inline void split_params(const P& p, std::vector<float>& scale, std::vector<float>& zero, std::vector<float>& bias,
                         std::size_t i) {
    scale[i] = p.scale;
    if constexpr (requires { p.zero; p.bias; }) {
        zero[i] = p.zero;
        bias[i] = p.bias;
    } else {
        (void)zero;
        (void)bias;
    }
}

template <class P>
inline P join_params(const std::vector<float>& scale, const std::vector<float>& zero, const std::vector<float>& bias,
                     std::size_t i) {
    P p{};
    p.scale = scale[i];
    if constexpr (requires { p.zero; p.bias; }) {
        if (!zero.empty()) p.zero = zero[i];
        if (!bias.empty()) p.bias = bias[i];
    }
    return p;
}

/// The float32 mean of `v`, correctly rounded for any realistic length: the
/// sum is compensated (Neumaier) in double, so it carries about twice
/// double's precision, then divided and rounded once to float. bitsandbytes'
/// nested offset (torch.mean in float32, whose summation order depends on its
/// vector width and threads) can differ in the last bit. The one mean of the
/// library: double quantization's offset and bitsandbytes' nested state.
inline float mean_f32(std::span<const float> v) noexcept {
    if (v.empty()) return 0.0f;
    double sum = 0.0, carry = 0.0;
    for (float f : v) {
        const double x = f, t = sum + x;
        carry += std::fabs(sum) >= std::fabs(x) ? (sum - t) + x : (x - t) + sum;
        sum = t;
    }
    return static_cast<float>((sum + carry) / static_cast<double>(v.size()));
}

/// Quantize `scales` in blocks of `block` (the last may be short) with `dq`,
/// store the second level and write the effective (dequantized) scales. An
/// error of the second-level scheme (a range its params cannot hold) names the
/// block through where(first, last + 1), the first-level scales it covers.
/// `offset`, with dq.subtract_mean, is subtracted instead of the mean (to
/// reproduce an owner's run whose mean was rounded otherwise).
/// `fixed`, when given, replaces the second-level fit of every block (see
/// double_quant::amax_divisor).
/// `encode_block(x, p, codes)` may encode a block's (centred) scales x under
/// params p into codes, one a byte, as dq.scheme.encode would, and return
/// true (the quantizer hands its vectorised encode kernel here); where it
/// returns false the scheme encodes them.
struct scheme_encodes_block {
    template <class P>
    bool operator()(std::span<const float>, const P&, std::uint8_t*) const noexcept {
        return false;
    }
};

/// x encoded under p into codes, one a byte, by the scheme itself: its
/// encode_many where it has one, else value by value.
template <class S2>
void scheme_encode_block(const S2& s2, std::span<const float> x, const typename S2::params& p, std::uint8_t* codes) {
    if constexpr (requires { s2.encode_many(x, p, codes); }) {
        s2.encode_many(x, p, codes);
    } else {
        for (std::size_t i = 0; i < x.size(); ++i) codes[i] = s2.encode(x[i], p);
    }
}

/// The frame of the second level of n scales in blocks of `block` (0: one
/// block of all): bits, block, room for the codes and per-block params.
template <class S2>
second_level second_level_frame(std::size_t n, std::size_t block) {
    second_level out;
    out.bits = S2::bits;
    out.block = block == 0 ? (n ? n : 1) : block;
    const std::size_t nblocks = (n + out.block - 1) / out.block;
    out.codes.resize(n);
    out.scale.resize(nblocks);
    if constexpr (requires(typename S2::params p) { p.zero; }) {
        out.zero.resize(nblocks);
        out.bias.resize(nblocks);
    }
    return out;
}

/// (Centred) scales x of one second-level block encoded under p into codes,
/// through encode_block where it takes them (else the scheme), and their
/// effective values, as decoded plus `offset`, into effective.
template <class S2, class EncodeBlock>
void encode_scales(const S2& s2, std::span<const float> x, const typename S2::params& p, float offset,
                   std::uint8_t* codes, float* effective, EncodeBlock&& encode_block) {
    if (!encode_block(x, p, codes)) scheme_encode_block(s2, x, p, codes);
    for (std::size_t i = 0; i < x.size(); ++i)
        effective[i] = detail::unfused(s2.decode(codes[i], p)) + offset;  // no FMA: as decoded
}

/// The last step of a second level: zero and bias dropped where every block's
/// is 0, and the stored bits of a block's params.
template <class S2>
void finish_second_level(const double_quant<S2>& dq, second_level& out) {
    if constexpr (requires(typename S2::params p) { p.zero; }) {
        bool any_zero = false, any_bias = false;
        for (std::size_t b = 0; b < out.scale.size(); ++b) {
            any_zero |= out.zero[b] != 0.0f;
            any_bias |= out.bias[b] != 0.0f;
        }
        if (!any_zero) out.zero.clear();
        if (!any_bias) out.bias.clear();
    }
    out.param_bits = stored_param_bits(dq.scheme);
}

template <class S2, class Where, class EncodeBlock = scheme_encodes_block>
second_level quantize_scales(const double_quant<S2>& dq, std::span<const float> scales, std::size_t block,
                             std::span<float> effective, Where&& where, std::optional<float> offset = {},
                             std::optional<typename S2::params> fixed = {}, EncodeBlock&& encode_block = {}) {
    const std::size_t n = scales.size();
    second_level out = second_level_frame<S2>(n, block);
    std::vector<float> centred_copy;  // only with a mean subtracted
    if (dq.subtract_mean && n) {
        out.offset = offset ? *offset : mean_f32(scales);
        out.has_offset = true;
        centred_copy.assign(scales.begin(), scales.end());
        for (float& s : centred_copy) s -= out.offset;
    }
    const std::span<const float> centred = centred_copy.empty() ? scales : std::span<const float>(centred_copy);
    for (std::size_t b = 0; b < out.scale.size(); ++b) {
        const std::size_t lo = b * out.block, hi = std::min(n, lo + out.block);
        std::span<const float> x(centred.data() + lo, hi - lo);
        const auto p = fixed ? *fixed
                             : at_position([&] { return dq.scheme.fit(x, {}); },
                                           [&] { return where(lo, hi) + " (second-level block " + std::to_string(b) + ")"; });
        split_params(p, out.scale, out.zero, out.bias, b);
        encode_scales(dq.scheme, x, p, out.offset, out.codes.data() + lo, effective.data() + lo, encode_block);
    }
    finish_second_level(dq, out);
    return out;
}

template <class S2>
second_level quantize_scales(const double_quant<S2>& dq, std::span<const float> scales, std::size_t block,
                             std::span<float> effective) {
    return quantize_scales(dq, scales, block, effective, [](std::size_t lo, std::size_t hi) {
        return "scales " + std::to_string(lo) + ".." + std::to_string(hi - 1);
    });
}

}  // namespace detail

LOWBIT_NAMESPACE_END
