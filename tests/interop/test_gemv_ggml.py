"""lowbit's GEMV int8 path against ggml's own vec_dot.

For every weight type with an int8 path: W quantized by lowbit (ggml's bytes,
test_ggml_blocks.py proves them), activations quantized by ggml's own CPU
from_float to its vec_dot_type, then y[m][n] from lowbit's gemv_ggml on
those same activation blocks and from ggml's vec_dot row by row. The two
differ only in the order of float additions: each is within
(K / 4 + 6) * 2^-24 * S of the exact value of ggml's quantities (S the sum
of the products' magnitudes), so they are within twice that of each other.
Also: lowbit's own Q8_K activation blocks equal ggml's from_float bytes
(both ggml's reference rule; ggml's x86 Q8_0/Q8_1 from_float rounds ties to
even where the reference rounds them away, so those are not compared).

Environment: LOWBIT_GGML_CAPI (our C entry points) and LOWBIT_REF_GGML_CPU
(libggml-cpu.so, ggml's CPU backend built by ./dev.sh interop from PyPI's
llama-cpp-python sources); a missing reference skips with a reason.
"""
import ctypes
import os

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
         T.IQ4_NL, T.IQ4_XS, T.TQ1_0, T.TQ2_0, T.MXFP4]

VEC_DOT = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t, ctypes.c_void_p,
                           ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class TraitsCpu(ctypes.Structure):
    _fields_ = [("from_float", FROM_FLOAT), ("vec_dot", VEC_DOT), ("vec_dot_type", ctypes.c_int),
                ("nrows", ctypes.c_int64)]


@pytest.fixture(scope="module")
def lowbit():
    path = os.environ.get("LOWBIT_GGML_CAPI")
    if not path or not os.path.exists(path):
        pytest.fail("LOWBIT_GGML_CAPI must point at the built libggml_capi.so")
    lib = ctypes.CDLL(path)
    lib.lowbit_ggml_quantize.restype = ctypes.c_size_t
    lib.lowbit_ggml_quantize.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_void_p]
    lib.lowbit_ggml_dequantize.restype = ctypes.c_int
    lib.lowbit_ggml_dequantize.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                           ctypes.c_int64]
    lib.lowbit_ggml_activation_type.restype = ctypes.c_int
    lib.lowbit_ggml_activation_type.argtypes = [ctypes.c_uint32]
    lib.lowbit_ggml_quantize_activations.restype = ctypes.c_size_t
    lib.lowbit_ggml_quantize_activations.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_int64,
                                                     ctypes.c_int64, ctypes.c_void_p]
    lib.lowbit_ggml_gemv.restype = ctypes.c_int
    lib.lowbit_ggml_gemv.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                     ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p]
    return lib


@pytest.fixture(scope="module")
def ggml_cpu():
    path = os.environ.get("LOWBIT_REF_GGML_CPU")
    if not path or not os.path.exists(path):
        pytest.skip("ggml's CPU backend (LOWBIT_REF_GGML_CPU) was not built: ./dev.sh interop builds it from "
                    "PyPI's llama-cpp-python sources")
    lib = ctypes.CDLL(path)
    lib.ggml_cpu_init.restype = None
    lib.ggml_cpu_init()
    lib.ggml_get_type_traits_cpu.restype = ctypes.POINTER(TraitsCpu)
    lib.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    return lib


# The activation blocks as ggml-cpu writes them (gguf-py's table gives Q8_1
# 40 bytes, the layout with float d and s that ggml has since replaced).
ACTIVATION_SIZES = {T.Q8_0: (32, 34), T.Q8_1: (32, 36), T.Q8_K: (256, 292)}


def blocks(t, rows, cols):
    bs, ts = ACTIVATION_SIZES.get(t) or quants.GGML_QUANT_SIZES[t]
    return np.zeros(rows * cols // bs * ts, dtype=np.uint8)


def dequantize(lowbit, t, data, rows, cols):
    out = np.zeros((rows, cols), dtype=np.float32)
    assert lowbit.lowbit_ggml_dequantize(int(t), data.ctypes.data, out.ctypes.data, rows, cols) == 1
    return out


def half_at(data, offsets):
    """The fp16 values at byte offsets of a uint8 array, as float64."""
    v = data[offsets].astype(np.uint16) | (data[offsets + 1].astype(np.uint16) << 8)
    return v.view(np.float16).astype(np.float64)


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
@pytest.mark.parametrize("m", [1, 3])
def test_int8_path_matches_vec_dot(lowbit, ggml_cpu, t, m):
    rng = np.random.default_rng(int(t) * 10 + m)
    n, k = 24, 1024
    w = rng.standard_normal((n, k)).astype(np.float32)
    w[3] = 0  # an all-zero row
    wq = blocks(t, n, k)
    assert lowbit.lowbit_ggml_quantize(int(t), w.ctypes.data, wq.ctypes.data, n, k, None) == wq.size
    x = (rng.standard_normal((m, k)) * np.exp(rng.standard_normal((m, 1)))).astype(np.float32)

    traits = ggml_cpu.ggml_get_type_traits_cpu(int(t)).contents
    at = T(traits.vec_dot_type)
    assert lowbit.lowbit_ggml_activation_type(int(t)) == int(at), "lowbit's activation type is ggml's vec_dot_type"
    xq = blocks(at, m, k)
    row_bytes = xq.size // m
    from_float = ggml_cpu.ggml_get_type_traits_cpu(int(at)).contents.from_float  # the activation type's
    for r in range(m):
        from_float(x[r].ctypes.data, xq.ctypes.data + r * row_bytes, k)
    if at == T.Q8_K:
        ours = blocks(at, m, k)
        assert lowbit.lowbit_ggml_quantize_activations(int(t), x.ctypes.data, m, k, ours.ctypes.data) == ours.size
        assert np.array_equal(ours, xq), "Q8_K activation blocks differ from ggml's from_float"

    y_ours = np.zeros((m, n), dtype=np.float32)
    assert lowbit.lowbit_ggml_gemv(int(t), wq.ctypes.data, n, k, x.ctypes.data, xq.ctypes.data, m,
                                   y_ours.ctypes.data) == 1
    w_row = wq.size // n
    y_ggml = np.zeros((m, n), dtype=np.float32)
    s = ctypes.c_float()
    for r in range(m):
        for c in range(n):
            traits.vec_dot(k, ctypes.byref(s), 0, wq.ctypes.data + c * w_row, 0, xq.ctypes.data + r * row_bytes, 0, 1)
            y_ggml[r, c] = s.value

    # The bound: the products of the dequantized values, and for Q4_1/Q5_1
    # ggml's m_w * s_x term per block.
    wd = dequantize(lowbit, t, wq, n, k).astype(np.float64)
    xd = dequantize(lowbit, at, xq, m, k).astype(np.float64)
    mag = np.abs(xd) @ np.abs(wd).T
    if at == T.Q8_1:
        bs, ts = quants.GGML_QUANT_SIZES[t]
        nb = k // bs
        m_w = half_at(wq, np.arange(n * nb) * ts + 2).reshape(n, nb)
        s_x = half_at(xq, np.arange(m * nb) * 36 + 2).reshape(m, nb)
        mag += np.abs(s_x) @ np.abs(m_w).T
    bound = 2 * (k / 4 + 6) * 2.0 ** -24 * mag + 1e-30
    diff = np.abs(y_ours.astype(np.float64) - y_ggml)
    worst = np.unravel_index(np.argmax(diff / bound), diff.shape)
    assert np.all(diff <= bound), (f"{t.name}: y[{worst}] lowbit {y_ours[worst]!r} ggml {y_ggml[worst]!r}, "
                                   f"bound {bound[worst]:.3g}")
