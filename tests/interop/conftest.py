"""Fixtures shared by the interop tests."""
import ctypes
import os

import pytest

P = ctypes.c_void_p
I64 = ctypes.c_int64


def ptr(a):
    """A numpy array's data as a C pointer."""
    return a.ctypes.data_as(P)


def load_capi(var, name):
    """The library of lowbit C entry points at environment variable `var`."""
    path = os.environ.get(var)
    if not path or not os.path.exists(path):
        pytest.fail(f"{var} must point at the built {name}")
    return ctypes.CDLL(path)


@pytest.fixture(scope="session")
def bnb_capi():
    """lowbit's bitsandbytes entry points (tests/interop/bnb_capi.cpp), from LOWBIT_BNB_CAPI."""
    lib = load_capi("LOWBIT_BNB_CAPI", "libbnb_capi.so")
    lib.lowbit_bnb_quantize_4bit.argtypes = [P, I64, ctypes.c_int, I64, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                             P, P, P, P, P]
    lib.lowbit_bnb_dequantize_4bit.argtypes = [P, I64, ctypes.c_int, I64, P, P, P, ctypes.c_float, ctypes.c_int, P]
    lib.lowbit_bnb_core_quantize_nf4.argtypes = [P, I64, I64, P, P]
    lib.lowbit_bnb_quantize_blockwise.argtypes = [P, I64, I64, ctypes.c_int, P, P]
    lib.lowbit_bnb_dequantize_blockwise.argtypes = [P, I64, I64, P, ctypes.c_int, P]
    lib.lowbit_bnb_int8_quant.argtypes = [P, I64, I64, ctypes.c_float, P, P, P, P]
    lib.lowbit_bnb_int8_linear.argtypes = [P, I64, P, I64, I64, ctypes.c_float, P]
    return lib


@pytest.fixture(scope="session")
def affine_capi():
    """lowbit's MLX and torchao entry points (tests/interop/affine_capi.cpp), from LOWBIT_AFFINE_CAPI."""
    lib = load_capi("LOWBIT_AFFINE_CAPI", "libaffine_capi.so")
    lib.lowbit_affine_quantize.argtypes = [ctypes.c_char_p, P, I64, I64, P, P, P, P]
    lib.lowbit_affine_dequantize.argtypes = [ctypes.c_char_p, P, I64, I64, ctypes.c_int, P]
    lib.lowbit_mlx_to_ggml.argtypes = [ctypes.c_char_p, P, I64, I64, P]
    C = ctypes.c_int
    lib.lowbit_hqq.argtypes = [P, I64, I64, C, I64, C, C, C, P, P, P, P]
    lib.lowbit_hadamard.argtypes = [P, I64, I64, C, C]
    return lib


@pytest.fixture(scope="session")
def mx_capi():
    """lowbit's OCP MX and NVFP4 entry points (tests/interop/mx_capi.cpp), from LOWBIT_MX_CAPI."""
    lib = load_capi("LOWBIT_MX_CAPI", "libmx_capi.so")
    lib.lowbit_mx_quantize.argtypes = [ctypes.c_char_p, P, I64, I64, P, P, P, P]
    lib.lowbit_mx_dequantize.argtypes = [ctypes.c_char_p, P, I64, I64, P]
    return lib


@pytest.fixture(scope="session")
def calibration_capi():
    """lowbit's AWQ entry points (tests/interop/calibration_capi.cpp), from LOWBIT_CALIBRATION_CAPI."""
    lib = load_capi("LOWBIT_CALIBRATION_CAPI", "libcalibration_capi.so")
    C = ctypes.c_int
    lib.lowbit_awq_search_scales.argtypes = [P, I64, I64, P, I64, I64, C, P, P, P]
    lib.lowbit_awq_search_clip.argtypes = [P, I64, I64, P, I64, I64, P]
    lib.lowbit_awq_quantize.argtypes = [P, I64, I64, I64, C, P, P, P]
    return lib
