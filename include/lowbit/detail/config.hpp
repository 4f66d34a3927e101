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
