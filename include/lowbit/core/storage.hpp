#pragma once
// A float as a tensor of a storage type holds it: rounded to nearest even in
// the 16-bit types, as torch rounds each operation's float result in them.

#include "../detail/config.hpp"
#include "finite.hpp"
#include "numeric.hpp"

LOWBIT_NAMESPACE_BEGIN

constexpr float stored_as(float_storage t, float x) noexcept {
    if (t == float_storage::bf16) return bf16_to_float(float_to_bf16(x));
    if (t == float_storage::f16) return fp16_to_float(float_to_fp16(x));
    return x;
}

LOWBIT_NAMESPACE_END
