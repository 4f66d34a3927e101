#pragma once
// The one guard against floating-point contraction.
//
// g++ contracts a*b+c into one fused multiply-add wherever the target has one
// (x86 with -mfma, every AArch64), in C++ even in ISO mode (-ffp-contract=fast
// is its default there); clang does within one expression. Code that promises
// the bits of a scalar reference or of another project's two-rounding code
// passes the product through `unfused` before the add: the value is unchanged,
// but the compiler can no longer see where it came from.
//
// An empty asm statement that claims to modify the value in a vector register
// costs nothing (no instruction, no spill) and works for floats, doubles, xsimd
// batches and raw SIMD registers alike, on g++ and clang:
//   x86-64: "v", any SSE/AVX register (xmm/ymm/zmm0-31 when AVX-512 is on);
//   AArch64: "w", any FP/SIMD register.
// Elsewhere with GNU asm the value makes a round trip through memory ("+m"),
// and without GNU asm through a volatile.
//
// Always inlined: the helpers are reached from kernels compiled with different
// -m flags, and an out-of-line copy would be one ODR symbol with several
// encodings.

#include "config.hpp"

// LOWBIT_LAMBDA_INLINE goes after a lambda's parameter list: its body is
// inlined at every call. LOWBIT_NOINLINE keeps a function out of its callers
// (only on templates instantiated per arch tag, for the reason above).
#if defined(__GNUC__)
#define LOWBIT_FORCE_INLINE inline __attribute__((always_inline))
#define LOWBIT_LAMBDA_INLINE __attribute__((always_inline))
#define LOWBIT_NOINLINE __attribute__((noinline))
#elif defined(_MSC_VER)
#define LOWBIT_FORCE_INLINE __forceinline
#define LOWBIT_LAMBDA_INLINE
#define LOWBIT_NOINLINE __declspec(noinline)
#else
#define LOWBIT_FORCE_INLINE inline
#define LOWBIT_LAMBDA_INLINE
#define LOWBIT_NOINLINE
#endif

LOWBIT_NAMESPACE_BEGIN
namespace detail {

/// Hide `r`'s value from the optimiser (in place, no instruction emitted).
template <class R>
LOWBIT_FORCE_INLINE void fp_barrier(R& r) noexcept {
#if defined(__GNUC__) && (defined(__x86_64__) || (defined(__i386__) && defined(__SSE2__)))
    __asm__("" : "+v"(r));
#elif defined(__GNUC__) && defined(__aarch64__)
    __asm__("" : "+w"(r));
#elif defined(__GNUC__)
    __asm__("" : "+m"(r));
#else
    volatile R t = r;
    r = t;
#endif
}

/// `v` unchanged, but never fused into an fma with the operation it feeds.
/// T: float, double, a SIMD register type, or a class with a `register_type`
/// it converts to and from (an xsimd batch).
template <class T>
LOWBIT_FORCE_INLINE T unfused(T v) noexcept {
    if constexpr (requires { typename T::register_type; }) {
        typename T::register_type r = v;
        fp_barrier(r);
        return T(r);
    } else {
        fp_barrier(v);
        return v;
    }
}

}  // namespace detail
LOWBIT_NAMESPACE_END
