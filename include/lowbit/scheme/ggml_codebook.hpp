#pragma once
// ggml's codebook block types as schemes of the generic core, for
// formats/ggml_convert.hpp:
//   * ggml_mxfp4_scheme: ggml's MXFP4 rule exactly (quantize_row_mxfp4_ref);
//   * ggml_iq4_nl_scheme: IQ4_NL's table and first step only (see below).

#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>

#include "../core/error.hpp"
#include "../core/view.hpp"
#include "codebook.hpp"
#include "concepts.hpp"

LOWBIT_NAMESPACE_BEGIN

/// ggml's MXFP4 as a codebook: the doubled E2M1 values {0, 1, 2, 3, 4, 6, 8,
/// 12} and their negatives (code 8 is -0) times d = 2^(e - 128), half of the
/// block's E8M0 scale 2^(e - 127), with e = (int)(floor(log2f(amax)) - 2 +
/// 127) & 0xFF (0 for an all-zero block; libm's log2f, whose rounding just
/// below a power of two ggml's scale follows, and its wrap-around below
/// amax = 2^-125 kept). ggml picks the first table entry nearest to x, so
/// ties go to the smaller magnitude and a value nearest 0 of either sign to
/// code 0: the codebook's nearest value with ties to the lower code, on the
/// exact x / d (d is a power of two). The scale stored is d.
class ggml_mxfp4_scheme : public codebook<4> {
public:
    static constexpr std::array<float, 16> values = {0.0f,  1.0f,  2.0f,  3.0f,  4.0f,  6.0f,  8.0f,  12.0f,
                                                     -0.0f, -1.0f, -2.0f, -3.0f, -4.0f, -6.0f, -8.0f, -12.0f};

    ggml_mxfp4_scheme() : codebook<4>(values, "ggml_mxfp4") {}

    /// ggml's exponent byte of a block whose largest magnitude is `amax`.
    static std::uint8_t exponent_of(float amax) noexcept {
        if (!(amax > 0.0f)) return 0;
        const float biased = std::floor(std::log2(amax)) - 2.0f + 127.0f;
        return std::isfinite(biased) ? static_cast<std::uint8_t>(static_cast<int>(biased) & 0xFF) : std::uint8_t{0};
    }
    /// d = 2^(e - 128) (a subnormal float for e < 2).
    static float half_scale(std::uint8_t e) noexcept {
        const std::uint32_t bits = e < 2 ? (0x00200000u << e) : (static_cast<std::uint32_t>(e - 1) << 23);
        return std::bit_cast<float>(bits);
    }
    /// The e whose half_scale is d; false when d is no such value.
    static bool exponent_of_scale(float d, std::uint8_t& e) noexcept {
        const std::uint32_t bits = std::bit_cast<std::uint32_t>(d);
        if (bits == 0x00200000u || bits == 0x00400000u) {
            e = bits == 0x00200000u ? 0 : 1;
            return true;
        }
        if ((bits & 0x807FFFFFu) != 0 || bits == 0 || (bits >> 23) >= 0xFF) return false;
        e = static_cast<std::uint8_t>((bits >> 23) + 1);
        return true;
    }

    params fit(std::span<const float> x, std::span<const float> /*w*/ = {}) const {
        return fit_stats(detail::stats_of(x));
    }
    /// An exponent byte of 0xFF (ggml's wrap-around for amax in [2^-126,
    /// 2^-125)) is E8M0's NaN, which ggml writes and its own
    /// ggml_validate_row_data rejects: an errc::invalid_argument error here.
    params fit_stats(const detail::group_stats& s) const {
        const float amax = std::fabs(s.signed_absmax);
        const std::uint8_t e = exponent_of(amax);
        if (e == 0xFF)
            LOWBIT_THROW(errc::invalid_argument, "ggml_mxfp4: largest magnitude " + detail::value_string(amax) +
                                                     " gives ggml's exponent byte 0xFF (E8M0 NaN; ggml's own "
                                                     "validation rejects such a block)");
        return {half_scale(e)};
    }
    /// Not codebook's rule: fit_stats above is fitted group by group.
    fit_rule stats_rule() const = delete;
    std::size_t param_bits() const noexcept { return 8; }
    std::size_t scale_bits() const noexcept { return 8; }
};

/// ggml's IQ4_NL table (kvalues_iq4nl) with the first step of its rule only:
/// d = m / -127 (m the element of largest |x|), nearest value with ties to
/// the higher code, fp16 d (iq4_nl()). ggml's quantize_row_iq4_nl goes on to
/// refit d by importance-weighted least squares (weights x^2 or the imatrix)
/// and to search 15 further scales, then codes again with the chosen float32
/// d and stores its fp16: a search over the whole group, which the core's
/// fit from group statistics does not express, so this scheme's bytes are
/// not ggml's (its blocks are valid IQ4_NL, and ggml's blocks read back
/// through from_ggml_blocks decode exactly).
class ggml_iq4_nl_scheme : public codebook<4> {
public:
    ggml_iq4_nl_scheme() : codebook<4>(iq4_nl()) {}
};

LOWBIT_NAMESPACE_END
