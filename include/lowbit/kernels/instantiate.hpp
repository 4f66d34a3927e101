#pragma once
// Everything a per-arch dispatch TU instantiates (see kernels/dispatch.hpp and
// cmake/lowbitDispatch.cmake). Each kernel header defines a LOWBIT_KERNELS_*
// list; add it here when adding a kernel header.

#include "bnb.hpp"
#include "dequantize.hpp"
#include "encode.hpp"
#include "gemv.hpp"
#include "ggml_dequantize.hpp"
#include "ggml_gemv.hpp"
#include "ggml_quantize.hpp"
#include "hadamard.hpp"

#define LOWBIT_INSTANTIATE_ALL_KERNELS(ARCH) \
    LOWBIT_KERNELS_BNB(LOWBIT_EMPTY_TOKEN, ARCH) \
    LOWBIT_KERNELS_DEQUANTIZE(LOWBIT_EMPTY_TOKEN, ARCH) \
    LOWBIT_KERNELS_ENCODE(LOWBIT_EMPTY_TOKEN, ARCH) \
    LOWBIT_KERNELS_GEMV(LOWBIT_EMPTY_TOKEN, ARCH) \
    LOWBIT_KERNELS_GGML_DEQUANTIZE(LOWBIT_EMPTY_TOKEN, ARCH) \
    LOWBIT_KERNELS_GGML_GEMV(LOWBIT_EMPTY_TOKEN, ARCH) \
    LOWBIT_KERNELS_GGML_QUANTIZE(LOWBIT_EMPTY_TOKEN, ARCH) \
    LOWBIT_KERNELS_HADAMARD(LOWBIT_EMPTY_TOKEN, ARCH)
