#pragma once
// Choosing the instruction set a kernel runs on.
//
// Every kernel is a functor with `template <class Arch> void operator()(Arch, args...)`.
// Two ways to build it:
//  * plain include: kernels run on xsimd::default_arch, i.e. what the
//    including target's -m flags allow (an engine built with -march=native
//    gets AVX-512);
//  * runtime dispatch: `lowbit_add_dispatch(target ARCHS avx512bw avx2 sse4_1)`
//    compiles one small TU per instruction set with explicit instantiations and
//    defines LOWBIT_RUNTIME_DISPATCH plus LOWBIT_DISPATCH_HAS_<ARCH> for the
//    target; `dispatch` then picks the best one this CPU has. On AArch64 the
//    one TU is NEON's (xsimd::neon64, the baseline of every AArch64 CPU).
// Either way the scalar reference is always available, and the environment
// variable LOWBIT_ARCH (scalar, sse4_1, avx2, avx512bw, neon, default) forces one.

#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../detail/config.hpp"
#include "../detail/scalar_arch.hpp"

#if !defined(LOWBIT_NO_SIMD)
#include <xsimd/xsimd.hpp>
#if defined(XSIMD_NO_SUPPORTED_ARCHITECTURE)
#define LOWBIT_NO_SIMD 1
#endif
#endif

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

enum class isa { scalar, sse4_1, avx2, avx512bw, neon, native };

constexpr std::string_view isa_name(isa i) noexcept {
    switch (i) {
    case isa::scalar: return "scalar";
    case isa::sse4_1: return "sse4_1";
    case isa::avx2: return "avx2";
    case isa::avx512bw: return "avx512bw";
    case isa::neon: return "neon";
    case isa::native: return "default";
    }
    return "?";
}

namespace detail {

#if defined(LOWBIT_RUNTIME_DISPATCH) && !defined(LOWBIT_NO_SIMD)
inline constexpr bool runtime_dispatch = true;
#else
inline constexpr bool runtime_dispatch = false;
#endif

inline bool cpu_has(isa i) noexcept {
#if defined(LOWBIT_NO_SIMD)
    return i == isa::scalar;
#else
    const auto a = xsimd::available_architectures();
    switch (i) {
    case isa::scalar: return true;
    case isa::native: return true;  // compiled for default_arch: the build asserts the CPU has it
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
    case isa::sse4_1: return a.sse4_1;
    case isa::avx2: return a.avx2 && a.fma3_avx2;
    case isa::avx512bw: return a.avx512f && a.avx512cd && a.avx512dq && a.avx512bw;
#endif
#if defined(__aarch64__)
    case isa::neon: return a.neon64;
#endif
    default: return false;
    }
#endif
}

/// Instruction sets this binary has kernels for, best first.
inline std::vector<isa> compiled_isas() {
    std::vector<isa> v;
    if constexpr (runtime_dispatch) {
#if defined(LOWBIT_DISPATCH_HAS_AVX512BW)
        v.push_back(isa::avx512bw);
#endif
#if defined(LOWBIT_DISPATCH_HAS_AVX2)
        v.push_back(isa::avx2);
#endif
#if defined(LOWBIT_DISPATCH_HAS_SSE4_1)
        v.push_back(isa::sse4_1);
#endif
#if defined(LOWBIT_DISPATCH_HAS_NEON)
        v.push_back(isa::neon);
#endif
    } else {
#if !defined(LOWBIT_NO_SIMD)
        v.push_back(isa::native);
#endif
    }
    v.push_back(isa::scalar);
    return v;
}

inline isa parse_isa(std::string_view s) {
    for (isa i : {isa::scalar, isa::sse4_1, isa::avx2, isa::avx512bw, isa::neon, isa::native})
        if (s == isa_name(i)) return i;
    LOWBIT_THROW(errc::invalid_argument, "LOWBIT_ARCH='" + std::string(s) +
                                             "' is not one of scalar, sse4_1, avx2, avx512bw, neon, default");
}

inline isa pick_best() {
    for (isa i : compiled_isas())
        if (cpu_has(i)) return i;
    return isa::scalar;
}

inline isa& active_slot() {
    static isa slot = [] {
        const char* env = std::getenv("LOWBIT_ARCH");
        if (env && *env) {
            isa want = parse_isa(env);
            if (want == isa::native && runtime_dispatch) return pick_best();
#if defined(__aarch64__) && !defined(LOWBIT_NO_SIMD)
            // Header-only on AArch64: the default arch is NEON.
            if (want == isa::neon && !runtime_dispatch && std::is_same_v<xsimd::default_arch, xsimd::neon64>)
                return isa::native;
#endif
            for (isa i : compiled_isas())
                if (i == want) {
                    if (!cpu_has(i))
                        LOWBIT_THROW(errc::unsupported,
                                     "LOWBIT_ARCH=" + std::string(env) + ": this CPU does not support it");
                    return i;
                }
            LOWBIT_THROW(errc::unsupported, "LOWBIT_ARCH=" + std::string(env) + ": no kernels for it in this build");
        }
        return pick_best();
    }();
    return slot;
}

}  // namespace detail

/// The instruction sets this binary can run on this CPU, best first.
inline std::vector<isa> available_isas() {
    std::vector<isa> out;
    for (isa i : detail::compiled_isas())
        if (detail::cpu_has(i)) out.push_back(i);
    return out;
}

/// The instruction set `dispatch` uses (chosen once: LOWBIT_ARCH or the best).
inline isa active_isa() { return detail::active_slot(); }

/// Force an instruction set (tests and benchmarks); throws if unavailable.
inline void set_active_isa(isa i) {
    for (isa a : available_isas())
        if (a == i) {
            detail::active_slot() = i;
            return;
        }
    LOWBIT_THROW(errc::unsupported, "instruction set " + std::string(isa_name(i)) + " is not available here");
}

/// Call `f(arch_tag, args...)` with the tag of instruction set `i`.
template <class F, class... Args>
decltype(auto) dispatch_to(isa i, F&& f, Args&&... args) {
    switch (i) {
#if !defined(LOWBIT_NO_SIMD)
#if defined(LOWBIT_RUNTIME_DISPATCH)
#if defined(LOWBIT_DISPATCH_HAS_AVX512BW)
    case isa::avx512bw: return f(xsimd::avx512bw{}, static_cast<Args&&>(args)...);
#endif
#if defined(LOWBIT_DISPATCH_HAS_AVX2)
    case isa::avx2: return f(xsimd::fma3<xsimd::avx2>{}, static_cast<Args&&>(args)...);
#endif
#if defined(LOWBIT_DISPATCH_HAS_SSE4_1)
    case isa::sse4_1: return f(xsimd::sse4_1{}, static_cast<Args&&>(args)...);
#endif
#if defined(LOWBIT_DISPATCH_HAS_NEON)
    case isa::neon: return f(xsimd::neon64{}, static_cast<Args&&>(args)...);
#endif
#else
    case isa::native: return f(xsimd::default_arch{}, static_cast<Args&&>(args)...);
#endif
#endif
    default: return f(scalar{}, static_cast<Args&&>(args)...);
    }
}

/// Call `f(arch_tag, args...)` on the active instruction set.
template <class F, class... Args>
decltype(auto) dispatch(F&& f, Args&&... args) {
    return dispatch_to(active_isa(), static_cast<F&&>(f), static_cast<Args&&>(args)...);
}

}  // namespace kernels
LOWBIT_NAMESPACE_END

// The body of a kernel's operator()(Arch, job): the SIMD statement(s) on an
// instruction set, REF (the scalar reference's call) on `scalar`. The
// reference sits in the discarded branch of an if constexpr, so that SIMD
// instantiations do not odr-use it: a copy compiled under another TU's -m
// flags must not be the one the linker keeps for the scalar path. Under
// LOWBIT_NO_SIMD only REF is compiled (the SIMD code is not declared).
#if !defined(LOWBIT_NO_SIMD)
#define LOWBIT_SIMD_OR_REFERENCE(ARCH, REF, ...)                              \
    if constexpr (!std::is_same_v<ARCH, ::lowbit::kernels::scalar>) {         \
        __VA_ARGS__;                                                          \
    } else {                                                                  \
        REF;                                                                  \
    }
#else
#define LOWBIT_SIMD_OR_REFERENCE(ARCH, REF, ...) REF;
#endif

// Explicit-instantiation plumbing. A kernel header lists its instantiations as
//   #define LOWBIT_KERNELS_FOO(EXT, ARCH) EXT template void foo::operator()<ARCH>(ARCH, ...) const noexcept;
// and ends with LOWBIT_DECLARE_KERNELS(LOWBIT_KERNELS_FOO). In a runtime-dispatch
// build that declares them extern for every instruction set the per-arch TUs
// provide; those TUs (LOWBIT_INSTANTIATING_ARCH) instantiate them instead.
#define LOWBIT_EMPTY_TOKEN
#if defined(LOWBIT_RUNTIME_DISPATCH) && !defined(LOWBIT_INSTANTIATING_ARCH) && !defined(LOWBIT_NO_SIMD)
#if defined(LOWBIT_DISPATCH_HAS_AVX512BW)
#define LOWBIT_DECLARE_KERNELS_AVX512BW(M) M(extern, xsimd::avx512bw)
#else
#define LOWBIT_DECLARE_KERNELS_AVX512BW(M)
#endif
#if defined(LOWBIT_DISPATCH_HAS_AVX2)
#define LOWBIT_DECLARE_KERNELS_AVX2(M) M(extern, xsimd::fma3<xsimd::avx2>)
#else
#define LOWBIT_DECLARE_KERNELS_AVX2(M)
#endif
#if defined(LOWBIT_DISPATCH_HAS_SSE4_1)
#define LOWBIT_DECLARE_KERNELS_SSE4_1(M) M(extern, xsimd::sse4_1)
#else
#define LOWBIT_DECLARE_KERNELS_SSE4_1(M)
#endif
#if defined(LOWBIT_DISPATCH_HAS_NEON)
#define LOWBIT_DECLARE_KERNELS_NEON(M) M(extern, xsimd::neon64)
#else
#define LOWBIT_DECLARE_KERNELS_NEON(M)
#endif
#define LOWBIT_DECLARE_KERNELS(M)                                                              \
    LOWBIT_DECLARE_KERNELS_AVX512BW(M) LOWBIT_DECLARE_KERNELS_AVX2(M) LOWBIT_DECLARE_KERNELS_SSE4_1(M) \
        LOWBIT_DECLARE_KERNELS_NEON(M)
#else
#define LOWBIT_DECLARE_KERNELS(M)
#endif
