"""Fixtures shared by the interop tests."""
import ctypes
import os

import pytest

P = ctypes.c_void_p
I64 = ctypes.c_int64


@pytest.fixture(scope="session")
def bnb_capi():
    """lowbit's bitsandbytes entry points (tests/interop/bnb_capi.cpp), from LOWBIT_BNB_CAPI."""
    path = os.environ.get("LOWBIT_BNB_CAPI")
    if not path or not os.path.exists(path):
        pytest.fail("LOWBIT_BNB_CAPI must point at the built libbnb_capi.so")
    lib = ctypes.CDLL(path)
    lib.lowbit_bnb_quantize_4bit.argtypes = [P, I64, ctypes.c_int, I64, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                             P, P, P, P, P]
    lib.lowbit_bnb_dequantize_4bit.argtypes = [P, I64, ctypes.c_int, I64, P, P, P, ctypes.c_float, ctypes.c_int, P]
    lib.lowbit_bnb_quantize_blockwise.argtypes = [P, I64, I64, ctypes.c_int, P, P]
    lib.lowbit_bnb_dequantize_blockwise.argtypes = [P, I64, I64, P, ctypes.c_int, P]
    lib.lowbit_bnb_int8_quant.argtypes = [P, I64, I64, ctypes.c_float, P, P, P, P]
    lib.lowbit_bnb_int8_linear.argtypes = [P, I64, P, I64, I64, ctypes.c_float, P]
    return lib
