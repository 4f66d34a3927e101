#pragma once
// Namespace, throw and assert macros shared by every lowbit header.

#include <cassert>

#include "../version.hpp"

// Public symbols live in an inline namespace named for the minor version, so two
// engines that embed different lowbit versions link into one program without
// ODR clashes.
#define LOWBIT_NAMESPACE_BEGIN \
    namespace lowbit {         \
    inline namespace v0_1 {
#define LOWBIT_NAMESPACE_END \
    }                        \
    }

#ifndef LOWBIT_ASSERT
#define LOWBIT_ASSERT(cond) assert(cond)
#endif

// GCC 12's AVX-512 intrinsics seed their results with `__Y = __Y`, which
// -Wall reports as uninitialised wherever they are inlined (GCC PR 105593).
// SIMD code sits between these two.
#if defined(__GNUC__) && !defined(__clang__)
#define LOWBIT_SIMD_WARNINGS_OFF                                      \
    _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wuninitialized\"") \
        _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"")
#define LOWBIT_SIMD_WARNINGS_ON _Pragma("GCC diagnostic pop")
#else
#define LOWBIT_SIMD_WARNINGS_OFF
#define LOWBIT_SIMD_WARNINGS_ON
#endif
