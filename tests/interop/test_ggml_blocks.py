"""lowbit's ggml blocks against the owners' code.

(1) Quantize: our bytes equal gguf.quants.quantize for the types the gguf
    package can quantize, and ggml's own ggml_quantize_chunk (libggml-base from
    PyPI's llama-cpp-python sources) for every type, with and without an
    importance matrix, on small rows of many shapes and on wide ones (rows of
    4096: N(0,1), one-signed log-normal, uniform), wide enough that a search
    constant changed alike in lowbit's scalar and SIMD copies shows.
(2) Dequantize: gguf.quants.dequantize of our blocks equals our dequantize.
(3) Validation: on adversarial rows (Inf, NaN, 1e30, float's largest, 1e5,
    a -1e6 spike) every block lowbit writes passes ggml's own
    ggml_validate_row_data, or lowbit refuses the row; whatever ggml's
    validation rejects in ggml's own output, lowbit refuses; and lowbit's
    validator agrees with ggml's on blocks with corrupted scale fields.

Environment: LOWBIT_GGML_CAPI (our C entry points, built by CMake) and
LOWBIT_REF_GGML (libggml-base.so); a missing reference skips with a reason.
LOWBIT_ARCH=scalar compares lowbit's scalar reference with ggml directly
(./dev.sh interop runs this file a second time so).
"""
import functools
import ctypes
import os

import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants

TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
         T.IQ4_NL, T.IQ4_XS, T.TQ1_0, T.TQ2_0, T.MXFP4]
GGUF_CAN_QUANTIZE = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.TQ1_0, T.TQ2_0, T.MXFP4}
# Types whose ggml quantizer reads an importance matrix.
USES_IMATRIX = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS}


def _load(var):
    path = os.environ.get(var)
    if not path or not os.path.exists(path):
        return None
    return ctypes.CDLL(path)


@pytest.fixture(scope="module")
def lowbit():
    lib = _load("LOWBIT_GGML_CAPI")
    if lib is None:
        pytest.fail("LOWBIT_GGML_CAPI must point at the built libggml_capi.so")
    lib.lowbit_ggml_quantize.restype = ctypes.c_size_t
    lib.lowbit_ggml_quantize.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_void_p]
    lib.lowbit_ggml_validate.restype = ctypes.c_int
    lib.lowbit_ggml_validate.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_size_t]
    lib.lowbit_ggml_dequantize.restype = ctypes.c_int
    lib.lowbit_ggml_dequantize.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                           ctypes.c_int64]
    return lib


@pytest.fixture(scope="module")
def ggml():
    lib = _load("LOWBIT_REF_GGML")
    if lib is None:
        pytest.skip("ggml's library (LOWBIT_REF_GGML) was not built: .ci/interop builds it from PyPI's "
                    "llama-cpp-python sources")
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_validate_row_data.restype = ctypes.c_bool
    lib.ggml_validate_row_data.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
    return lib


def inputs():
    rng = np.random.default_rng(1234)
    cols = 512
    yield "gaussian", rng.standard_normal((16, cols)).astype(np.float32)
    yield "tiny", (rng.standard_normal((4, cols)) * 1e-4).astype(np.float32)
    yield "huge", (rng.standard_normal((4, cols)) * 1e4).astype(np.float32)
    yield "student-t", rng.standard_t(3, (8, cols)).astype(np.float32)
    out = rng.standard_normal((8, cols)).astype(np.float32)
    out[:, rng.choice(cols, 5, replace=False)] *= 30
    yield "outliers", out
    z = rng.standard_normal((4, cols)).astype(np.float32)
    z[0] = 0
    z[1, :64] = 0
    z[2, 32:96] = 0.25
    yield "zeros-and-constants", z
    # Values on exact grid midpoints: halves and quarters.
    yield "ties", (np.round(rng.standard_normal((4, cols)) * 8) / 2).astype(np.float32)


@functools.lru_cache(maxsize=1)
def wide_inputs():
    """Rows of 4096 (a whole number of every type's blocks), made once per run."""
    rng = np.random.default_rng(4096)
    cols = 4096
    ln = np.exp(rng.standard_normal((16, cols))).astype(np.float32)
    ln[8:] *= -1  # one sign per row: half of them positive, half negative
    return [("wide-gaussian", rng.standard_normal((64, cols)).astype(np.float32)),
            ("wide-one-signed-lognormal", ln),
            ("wide-uniform", rng.uniform(-1, 1, (16, cols)).astype(np.float32))]


def wide_imatrix():
    rng = np.random.default_rng(4097)
    imatrix = (rng.random(4096) ** 3 * 10).astype(np.float32)
    imatrix[::17] = 0
    return imatrix


def ours_quantize(lib, t, x, imatrix=None):
    bs, ts = quants.GGML_QUANT_SIZES[t]
    rows, cols = x.shape
    out = np.zeros(rows * cols // bs * ts, dtype=np.uint8)
    x = np.ascontiguousarray(x, dtype=np.float32)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    n = lib.lowbit_ggml_quantize(int(t), x.ctypes.data, out.ctypes.data, rows, cols,
                                 None if im is None else im.ctypes.data)
    assert n == out.size, f"lowbit failed to quantize {t.name}"
    return out.reshape(rows, -1)


def ggml_quantize(lib, t, x, imatrix=None):
    bs, ts = quants.GGML_QUANT_SIZES[t]
    rows, cols = x.shape
    out = np.zeros(rows * cols // bs * ts, dtype=np.uint8)
    x = np.ascontiguousarray(x, dtype=np.float32)
    im = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    n = lib.ggml_quantize_chunk(int(t), x.ctypes.data, out.ctypes.data, 0, rows, cols,
                                None if im is None else im.ctypes.data)
    assert n == out.size
    return out.reshape(rows, -1)


def first_diff(a, b, t):
    bs, ts = quants.GGML_QUANT_SIZES[t]
    d = np.flatnonzero(a.reshape(-1) != b.reshape(-1))
    if d.size == 0:
        return ""
    i = int(d[0])
    return f"{d.size} bytes differ; first at byte {i} (block {i // ts}, byte {i % ts})"


@pytest.mark.parametrize("t", sorted(GGUF_CAN_QUANTIZE, key=int), ids=lambda t: t.name)
def test_quantize_equals_gguf_package(lowbit, t):
    for name, x in inputs():
        ours = ours_quantize(lowbit, t, x)
        ref = quants.quantize(x, t)
        assert ours.tobytes() == ref.tobytes(), f"{name}: {first_diff(ours, ref, t)}"


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_quantize_equals_ggml(lowbit, ggml, t):
    for name, x in inputs():
        ours = ours_quantize(lowbit, t, x)
        ref = ggml_quantize(ggml, t, x)
        assert ours.tobytes() == ref.tobytes(), f"{name}: {first_diff(ours, ref, t)}"


@pytest.mark.parametrize("t", sorted(USES_IMATRIX, key=int), ids=lambda t: t.name)
def test_quantize_with_imatrix_equals_ggml(lowbit, ggml, t):
    rng = np.random.default_rng(99)
    for name, x in inputs():
        imatrix = (rng.random(x.shape[1]) ** 3 * 10).astype(np.float32)
        imatrix[::17] = 0
        ours = ours_quantize(lowbit, t, x, imatrix)
        ref = ggml_quantize(ggml, t, x, imatrix)
        assert ours.tobytes() == ref.tobytes(), f"{name}: {first_diff(ours, ref, t)}"


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_wide_rows_equal_ggml(lowbit, ggml, t):
    for name, x in wide_inputs():
        ours = ours_quantize(lowbit, t, x)
        ref = ggml_quantize(ggml, t, x)
        assert ours.tobytes() == ref.tobytes(), f"{name}: {first_diff(ours, ref, t)}"


@pytest.mark.parametrize("t", sorted(USES_IMATRIX, key=int), ids=lambda t: t.name)
def test_wide_rows_with_imatrix_equal_ggml(lowbit, ggml, t):
    imatrix = wide_imatrix()
    for name, x in wide_inputs():
        ours = ours_quantize(lowbit, t, x, imatrix)
        ref = ggml_quantize(ggml, t, x, imatrix)
        assert ours.tobytes() == ref.tobytes(), f"{name}: {first_diff(ours, ref, t)}"


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name)
def test_gguf_dequantize_of_our_blocks_equals_ours(lowbit, t):
    for name, x in inputs():
        q = ours_quantize(lowbit, t, x)
        theirs = quants.dequantize(q, t)
        ours = np.zeros_like(x)
        assert lowbit.lowbit_ggml_dequantize(int(t), q.ctypes.data, ours.ctypes.data, x.shape[0], x.shape[1])
        np.testing.assert_array_equal(ours, theirs.reshape(x.shape), err_msg=f"{t.name} / {name}")


def adversarial_rows():
    """Rows llama.cpp's own pipeline turns into blocks its validation rejects."""
    rng = np.random.default_rng(77)
    cols = 256
    base = (rng.standard_normal(cols) * 0.02).astype(np.float32)
    for name, v in [("inf", np.inf), ("-inf", -np.inf), ("nan", np.nan), ("1e30", 1e30), ("-1e30", -1e30),
                    ("fmax", np.finfo(np.float32).max), ("-fmax", -np.finfo(np.float32).max), ("1e5", 1e5),
                    ("-1e6", -1e6), ("65504", 65504.0), ("3e8", 3e8)]:
        x = base.copy()
        x[37] = v
        yield name, x.reshape(1, cols)
    yield "65504-scale", (rng.standard_normal((1, cols)) * 65504).astype(np.float32)
    yield "1e5-scale", (rng.standard_normal((1, cols)) * 1e5).astype(np.float32)


def quiet_quantize(lib, t, x):
    """lowbit's bytes for x, or None when lowbit refuses the row."""
    bs, ts = quants.GGML_QUANT_SIZES[t]
    out = np.zeros(x.size // bs * ts, dtype=np.uint8)
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = lib.lowbit_ggml_quantize(int(t), x.ctypes.data, out.ctypes.data, x.shape[0], x.shape[1], None)
    return out if n == out.size else None


@pytest.mark.parametrize("t", TYPES + [T.F16, T.BF16], ids=lambda t: t.name)
def test_written_blocks_pass_ggml_validation(lowbit, ggml, t):
    refused = 0
    for name, x in adversarial_rows():
        ours = quiet_quantize(lowbit, t, x)
        ref = ggml_quantize(ggml, t, x).reshape(-1)
        ggml_ok = ggml.ggml_validate_row_data(int(t), ref.ctypes.data, ref.size)
        if ours is None:
            refused += 1
            continue
        assert np.isfinite(x).all(), f"{t.name} / {name}: a non-finite input was quantized"
        assert ggml.ggml_validate_row_data(int(t), ours.ctypes.data, ours.size), \
            f"{t.name} / {name}: ggml_validate_row_data rejects lowbit's blocks"
        assert ggml_ok, f"{t.name} / {name}: ggml's own blocks fail its validation, lowbit's must be refused"
        back = np.zeros_like(x)
        assert lowbit.lowbit_ggml_dequantize(int(t), ours.ctypes.data, back.ctypes.data, x.shape[0], x.shape[1])
        assert np.isfinite(back).all(), f"{t.name} / {name}: finite input dequantizes to a non-finite value"
    assert refused >= 3  # Inf, -Inf and NaN at least


@pytest.mark.parametrize("t", TYPES + [T.F16, T.BF16, T.F32, T.Q8_K], ids=lambda t: t.name)
def test_validator_agrees_with_ggml(lowbit, ggml, t):
    """Corrupt each fp16/fp32/E8M0 field position in turn and ask both."""
    bs, ts = quants.GGML_QUANT_SIZES[t]
    rng = np.random.default_rng(int(t))
    blocks = 4
    good = rng.integers(0, 256, blocks * ts, dtype=np.uint8)
    # Make every 2-byte position an ordinary fp16 first (0x3C00 = 1.0) where
    # random bytes could already be Inf/NaN, then corrupt one offset at a time.
    base = good.copy()
    for off in range(0, base.size - 1, 2):
        if (int(base[off + 1]) & 0x7C) == 0x7C or (int(base[off + 1]) & 0x7F) == 0x7F:
            base[off + 1] &= 0x3B
    if t == T.MXFP4:
        base[::ts] = np.minimum(base[::ts], 0xFE)
    for off in range(0, ts - 1):
        for pattern in (b"\x00\x7c", b"\xff\x7f", b"\x00\xfc", b"\x80\x7f\x00\x00", b"\x00\x00\x80\x7f", b"\xff"):
            y = base.copy()
            p = np.frombuffer(pattern, dtype=np.uint8)
            if off + p.size > ts:
                continue
            y[ts + off: ts + off + p.size] = p  # in the second block
            theirs = bool(ggml.ggml_validate_row_data(int(t), y.ctypes.data, y.size))
            ours = lowbit.lowbit_ggml_validate(int(t), y.ctypes.data, y.size)
            assert ours in (0, 1)
            assert bool(ours) == theirs, f"{t.name}: byte {off} set to {pattern.hex()}: ggml {theirs}, lowbit {bool(ours)}"
