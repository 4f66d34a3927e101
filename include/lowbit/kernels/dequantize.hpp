#pragma once
// Placeholder: dequantize kernels land here.
#include "dispatch.hpp"
#define LOWBIT_KERNELS_DEQUANTIZE(EXT, ARCH)
