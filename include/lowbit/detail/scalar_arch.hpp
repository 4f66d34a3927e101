#pragma once
// The tag of the portable scalar path. Kernels are templates on an
// instruction-set tag (xsimd's arch types); code shared by a kernel and its
// scalar reference is the same template on this tag, so the layers below the
// kernels can name it without pulling in xsimd.

#include "config.hpp"

LOWBIT_NAMESPACE_BEGIN
namespace kernels {

/// Tag for the portable scalar path; kernels route it to their `_ref` twin.
struct scalar {
    static constexpr const char* name() noexcept { return "scalar"; }
};

}  // namespace kernels
LOWBIT_NAMESPACE_END
