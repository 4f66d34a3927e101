#pragma once
// The K-quant and IQ4 tiles: per tile, the sub-block searches on SIMD lanes,
// the per-super-block scale steps and the packing, each the scalar
// reference's own template (formats/ggml_kquants.hpp, ggml_blocks.hpp).
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "../formats/ggml_blocks.hpp"
#include "../formats/ggml_kquants.hpp"
#include "ggml_quantize_tiles.hpp"  // xsimd, fp_contract, the lanes and transposes

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

#if !defined(LOWBIT_NO_SIMD)
LOWBIT_SIMD_WARNINGS_OFF
namespace detail::ggml_quant {

// ---- Q2_K, Q4_K, Q5_K -------------------------------------------------------

/// The affine K-quant tiles, one template: per sub-block the weighted affine
/// search (qkx_search), per super-block the type's scale step, then the
/// levels requantized against the stored scales and packed. P holds what
/// differs between the types (ggml's constants for each).
template <class Arch, class P>
inline void affine_k_tile(const float* const* xs, const float* const* qws, unsigned char* out, int nvalid) noexcept {
    constexpr int n = P::n, nsub = P::nsub;
    using G = tile<Arch, n, nsub>;
    using B = fvec<Arch>;
    using Block = typename P::block;
    constexpr int lanes = G::lanes;
    const bool im = qws[0] != nullptr;
    alignas(64) float xt[G::S * n];
    alignas(64) float qt[G::S * n];
    alignas(64) float sc[G::S], mn[G::S], sw[G::S], sig[G::S];
    alignas(64) float dsub[G::S], msub[G::S];
    std::uint8_t lev[G::T * 256];
    B L[G::NB][n];
    transpose_in<Arch, n, nsub>(xs, nvalid, xt);
    if (im) {
        transpose_in<Arch, n, nsub>(qws, nvalid, qt);
        for (int s = 0; s < G::S; ++s) sig[s] = 0.f;
        for (int k = 0; k < nvalid; ++k) {
            const float sigma2 = P::sigma_factor * sum_squares<Arch>(xs[k], 256) / ggml::qk_k;
            for (int j = 0; j < nsub; ++j) sig[nsub * k + j] = sigma2;
        }
    }
    for (int b = 0; b < G::NB; ++b) {
        B x[n], w[n], scale, the_min;
        load_n<Arch, n>(xt + b * n * lanes, x);
        if (im) {
            B q[n], s;
            load_n<Arch, n>(qt + b * n * lanes, q);
            imatrix_weights<Arch, n>(x, q, B::load_aligned(sig + b * lanes), w, s);
            s.store_aligned(sw + b * lanes);
            qkx_search<Arch, n>(x, w, L[b], scale, the_min, P::nmax, -0.9f, 0.05f, 36, false);
        } else {
            P::template weights<Arch>(x, w);
            qkx_search<Arch, n>(x, w, L[b], scale, the_min, P::nmax, P::rmin, P::rdelta, P::nstep, P::use_mad);
        }
        scale.store_aligned(sc + b * lanes);
        the_min.store_aligned(mn + b * lanes);
    }
    Block y[G::T];
    for (int s = 0; s < G::S; ++s) dsub[s] = msub[s] = 0.f;
    for (int k = 0; k < nvalid; ++k)
        P::template scales<Arch>(sc + nsub * k, mn + nsub * k, im ? sw + nsub * k : nullptr, y[k], dsub + nsub * k,
                                 msub + nsub * k);
    for (int b = 0; b < G::NB; ++b) {
        B x[n];
        load_n<Arch, n>(xt + b * n * lanes, x);
        requantize<Arch, n, true>(x, L[b], B::load_aligned(dsub + b * lanes), B::load_aligned(msub + b * lanes), 0.f,
                                  static_cast<float>(P::nmax));
        transpose_out<Arch, n, nsub>(L[b], b, lev);
    }
    for (int k = 0; k < nvalid; ++k) {
        P::template pack<Arch>(lev + 256 * k, y[k]);
        std::memcpy(out + k * sizeof(Block), &y[k], sizeof(Block));
    }
}

/// Q4_K (Nmax 15) and Q5_K (31): sub-blocks of 32, 6-bit scales and mins.
template <int Nmax>
struct q45_k_tile {
    using block = std::conditional_t<Nmax == 15, ggml::block_q4_k, ggml::block_q5_k>;
    static constexpr int n = 32, nsub = 8, nmax = Nmax;
    static constexpr float sigma_factor = 2.f;
    static constexpr float rmin = Nmax == 15 ? -1.f : -0.5f, rdelta = 0.1f;
    static constexpr int nstep = Nmax == 15 ? 20 : 15;
    static constexpr bool use_mad = false;
    template <class Arch>
    static void weights(const fvec<Arch>* x, fvec<Arch>* w) noexcept {
        rms_plus_abs_weights<Arch, n>(x, w);
    }
    template <class Arch>
    static void scales(const float* sc, const float* mn, const float* sw, block& y, float* dsub, float* msub) noexcept {
        q45_k_scales<Arch, Nmax>(sc, mn, sw, y.d, y.dmin, y.scales, dsub, msub);
    }
    template <class Arch>
    static void pack(const std::uint8_t* lev, block& y) noexcept {
        if constexpr (Nmax == 15)
            pack_4bit_5bit<Arch>(lev, y.qs, nullptr);
        else
            pack_4bit_5bit<Arch>(lev, y.qs, y.qh);
    }
};

/// Q2_K: sub-blocks of 16, 4-bit scales and mins, |x| as the weights.
struct q2_k_tile {
    using block = ggml::block_q2_k;
    static constexpr int n = 16, nsub = 16, nmax = 3;
    static constexpr float sigma_factor = 1.f;
    static constexpr float rmin = -0.5f, rdelta = 0.1f;
    static constexpr int nstep = 15;
    static constexpr bool use_mad = true;
    template <class Arch>
    static void weights(const fvec<Arch>* x, fvec<Arch>* w) noexcept {
        for (int i = 0; i < n; ++i) w[i] = xsimd::abs(x[i]);
    }
    template <class Arch>
    static void scales(const float* sc, const float* mn, const float* sw, block& y, float* dsub, float* msub) noexcept {
        q2_k_scales<Arch>(sc, mn, sw, y, dsub, msub);
    }
    template <class Arch>
    static void pack(const std::uint8_t* lev, block& y) noexcept {
        pack_2bit<Arch>(lev, y.qs);
    }
};

// ---- Q6_K -------------------------------------------------------------------

template <class Arch>
inline void q6_tile(const float* const* xs, const float* const* qws, unsigned char* out, int nvalid) noexcept {
    using G = tile<Arch, 16, 16>;
    using B = fvec<Arch>;
    constexpr int n = 16, lanes = G::lanes;
    const bool im = qws[0] != nullptr;
    alignas(64) float xt[G::S * n];
    alignas(64) float qt[G::S * n];
    alignas(64) float sc[G::S], dsub[G::S];
    std::uint8_t lev[G::T * 256];
    B L[G::NB][n];
    transpose_in<Arch, n, 16>(xs, nvalid, xt);
    if (im) transpose_in<Arch, n, 16>(qws, nvalid, qt);
    for (int b = 0; b < G::NB; ++b) {
        B x[n], w[n], scale;
        load_n<Arch, n>(xt + b * n * lanes, x);
        if (im)
            load_n<Arch, n>(qt + b * n * lanes, w);  // ggml weights Q6_K's search by the imatrix alone
        else
            for (int i = 0; i < n; ++i) w[i] = vmul(x[i], x[i]);
        qx_search<Arch, n>(x, w, L[b], scale, 32.f);
        scale.store_aligned(sc + b * lanes);
    }
    ggml::block_q6_k y[G::T];
    bool zero_block[G::T] = {};
    for (int s = 0; s < G::S; ++s) dsub[s] = 0.f;
    for (int k = 0; k < nvalid; ++k) zero_block[k] = !q6_k_scales<Arch>(sc + 16 * k, y[k], dsub + 16 * k);
    for (int b = 0; b < G::NB; ++b) {
        B x[n];
        load_n<Arch, n>(xt + b * n * lanes, x);
        requantize<Arch, n, false>(x, L[b], B::load_aligned(dsub + b * lanes), B(0.f), -32.f, 31.f);
        transpose_out<Arch, n, 16>(L[b], b, lev);
    }
    for (int k = 0; k < nvalid; ++k) {
        if (zero_block[k])
            std::memset(&y[k], 0, sizeof y[k]);
        else
            pack_q6<Arch>(lev + 256 * k, y[k]);
        std::memcpy(out + k * sizeof(ggml::block_q6_k), &y[k], sizeof(ggml::block_q6_k));
    }
}

// ---- Q3_K (no imatrix) ------------------------------------------------------

template <class Arch>
inline void q3_tile(const float* const* xs, const float* const*, unsigned char* out, int nvalid) noexcept {
    using G = tile<Arch, 16, 16, 4>;
    using B = fvec<Arch>;
    constexpr int n = 16, lanes = G::lanes;
    alignas(64) float xt[G::S * n];
    alignas(64) float sc[G::S], dsub[G::S];
    std::uint8_t lev[G::T * 256];
    B L[G::NB][n];
    transpose_in<Arch, n, 16, 4>(xs, nvalid, xt);
    {
        B x[G::NB][n], scale[G::NB];
        for (int b = 0; b < G::NB; ++b) load_n<Arch, n>(xt + b * n * lanes, x[b]);
        q3_search<Arch, n, G::NB>(x, L, scale, 4.f);
        for (int b = 0; b < G::NB; ++b) scale[b].store_aligned(sc + b * lanes);
    }
    ggml::block_q3_k y[G::T];
    for (int s = 0; s < G::S; ++s) dsub[s] = 0.f;
    for (int k = 0; k < nvalid; ++k) q3_k_scales<Arch>(sc + 16 * k, y[k], dsub + 16 * k);
    for (int b = 0; b < G::NB; ++b) {
        B x[n];
        load_n<Arch, n>(xt + b * n * lanes, x);
        requantize<Arch, n, false>(x, L[b], B::load_aligned(dsub + b * lanes), B(0.f), -4.f, 3.f);
        transpose_out<Arch, n, 16, 4>(L[b], b, lev);
    }
    for (int k = 0; k < nvalid; ++k) {
        pack_q3<Arch>(lev + 256 * k, y[k]);
        std::memcpy(out + k * sizeof(ggml::block_q3_k), &y[k], sizeof(ggml::block_q3_k));
    }
}

// ---- IQ4_NL / IQ4_XS -----------------------------------------------------

/// Nsub 1: IQ4_NL blocks of 32; Nsub 8: IQ4_XS super-blocks of 256.
template <class Arch, int Nsub>
inline void iq4_tile(const float* const* xs, const float* const* qws, unsigned char* out, int nvalid) noexcept {
    using G = tile<Arch, 32, Nsub>;
    using B = fvec<Arch>;
    constexpr int n = 32, lanes = G::lanes, nvals = 32 * Nsub;
    const bool im = qws[0] != nullptr;
    alignas(64) float xt[G::S * n];
    alignas(64) float qt[G::S * n];
    alignas(64) float sig[G::S], sc[G::S], idl[G::S];
    std::uint8_t lev[G::T * nvals];
    transpose_in<Arch, n, Nsub>(xs, nvalid, xt);
    if (im) {
        transpose_in<Arch, n, Nsub>(qws, nvalid, qt);
        for (int s = 0; s < G::S; ++s) sig[s] = 0.f;
        for (int k = 0; k < nvalid; ++k) {
            float sigma2 = 0.f;
            for (int j = 0; j < nvals; ++j) sigma2 = sigma2 + mul_unfused<Arch>(xs[k][j], xs[k][j]);
            sigma2 = sigma2 * (2.0f / static_cast<float>(nvals));
            for (int ib = 0; ib < Nsub; ++ib) sig[Nsub * k + ib] = sigma2;
        }
    }
    for (int b = 0; b < G::NB; ++b) {
        B x[n], w[n];
        load_n<Arch, n>(xt + b * n * lanes, x);
        if (im) {
            B qv[n], sw;
            load_n<Arch, n>(qt + b * n * lanes, qv);
            imatrix_weights<Arch, n>(x, qv, B::load_aligned(sig + b * lanes), w, sw);
        } else {
            for (int i = 0; i < n; ++i) w[i] = vmul(x[i], x[i]);
        }
        iq4_search<Arch, n>(x, w).store_aligned(sc + b * lanes);
    }
    using Block = std::conditional_t<Nsub == 1, ggml::block_iq4_nl, ggml::block_iq4_xs>;
    Block y[G::T];
    for (int s = 0; s < G::S; ++s) idl[s] = 0.f;
    for (int k = 0; k < nvalid; ++k) {
        if constexpr (Nsub == 1)
            iq4_scales<Arch, 1>(sc + k, y[k].d, nullptr, nullptr, idl + k);
        else
            iq4_scales<Arch, Nsub>(sc + Nsub * k, y[k].d, &y[k].scales_h, y[k].scales_l, idl + Nsub * k);
    }
    for (int b = 0; b < G::NB; ++b) {
        B x[n], L[n], q;
        load_n<Arch, n>(xt + b * n * lanes, x);
        const B il = B::load_aligned(idl + b * lanes);
        for (int j = 0; j < n; ++j) iq4_nearest<Arch>(vmul(il, x[j]), L[j], q);
        transpose_out<Arch, n, Nsub>(L, b, lev);
    }
    for (int k = 0; k < nvalid; ++k) {
        for (int ib = 0; ib < Nsub; ++ib) pack_nibbles_32<Arch>(lev + nvals * k + 32 * ib, y[k].qs + 16 * ib);
        std::memcpy(out + k * sizeof(Block), &y[k], sizeof(Block));
    }
}

}  // namespace detail::ggml_quant
LOWBIT_SIMD_WARNINGS_ON
#endif  // !LOWBIT_NO_SIMD

}  // namespace kernels
LOWBIT_NAMESPACE_END
