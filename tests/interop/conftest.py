"""Fixtures shared by the interop tests."""
import ctypes
import os

import pytest

P = ctypes.c_void_p
I64 = ctypes.c_int64


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
