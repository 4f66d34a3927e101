#pragma once
// What a scheme is: how one group of floats becomes its parameters, and how
// each value becomes a code and back.

#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>

#include "../detail/config.hpp"

LOWBIT_NAMESPACE_BEGIN

/// Parameters of an affine group: x ~= (q - zero) * scale + bias.
/// Integer zero-points (GPTQ, AWQ) keep bias = 0; float-domain offsets (MLX
/// bias, torchao's float zero) keep zero at 0 or at the mid code; HQQ's float
/// zero lives in `zero`.
struct affine_params {
    float scale = 1.0f;
    float zero = 0.0f;
    float bias = 0.0f;
    friend constexpr bool operator==(const affine_params&, const affine_params&) = default;
};

/// Parameters of a table group (codebook or minifloat elements): x ~= table[q] * scale.
struct scaled_params {
    float scale = 1.0f;
    friend constexpr bool operator==(const scaled_params&, const scaled_params&) = default;
};

/// Which dequantize kernel family decodes a scheme's codes.
enum class kernel_family { affine, table };

/// A scheme maps one group of values to params (fit) and each value to a code
/// of `bits` bits (encode) and back (decode). `w` in fit holds optional
/// per-element importance weights (empty: all equal). Inputs are finite: the
/// quantizer rejects NaN/Inf before calling fit.
template <class S>
concept scheme = requires(const S& s, std::span<const float> x, std::span<const float> w,
                          const typename S::params& p, float v, std::uint8_t c) {
    typename S::params;
    { S::bits } -> std::convertible_to<int>;
    { S::family } -> std::convertible_to<kernel_family>;
    { s.fit(x, w) } -> std::same_as<typename S::params>;
    { s.encode(v, p) } -> std::same_as<std::uint8_t>;
    { s.decode(c, p) } -> std::same_as<float>;
    { s.name() } -> std::convertible_to<const char*>;
};

/// Table schemes also expose their 2^bits decode values: decode(c, p) == table()[c] * p.scale.
template <class S>
concept table_scheme = scheme<S> && S::family == kernel_family::table && requires(const S& s) {
    { s.table() } -> std::convertible_to<std::span<const float>>;
};

template <class S>
concept affine_scheme = scheme<S> && S::family == kernel_family::affine &&
                        std::same_as<typename S::params, affine_params>;

/// Bits a scheme stores per group for its params (scale, stored zero-point,
/// bias), for bits-per-weight accounting. Schemes say so with param_bits();
/// without it one fp32 scale is assumed.
template <class S>
constexpr std::size_t stored_param_bits(const S& s) noexcept {
    if constexpr (requires { { s.param_bits() } -> std::convertible_to<std::size_t>; })
        return static_cast<std::size_t>(s.param_bits());
    else
        return 32;
}

LOWBIT_NAMESPACE_END
