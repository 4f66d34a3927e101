"""lowbit's bitsandbytes formats against bitsandbytes itself (on the CPU).

bitsandbytes on a CPU quantizes 4-bit through its PyTorch kernel and 8-bit
through its C++ lookup table; lowbit reproduces both with kernel_rules::cpu,
so bytes, absmax and nested state must be identical. (Its CUDA kernels, the
other rule set, cannot run here; the C++ tests pin those rules.)

The nested offset is torch's float32 mean, whose last bit depends on torch's
summation order: lowbit's own mean must be within an ulp or two of it, and given
bitsandbytes' offset every nested byte must match.

Environment: LOWBIT_BNB_CAPI (our C entry points, built by CMake; loaded in conftest.py).
"""
import ctypes

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (CPU) is not installed in this venv")
bnb_f = pytest.importorskip("bitsandbytes.functional", reason="bitsandbytes is not installed in this venv")

P = ctypes.c_void_p


def ptr(a):
    return a.ctypes.data_as(P)


NF4_BOUNDS = [-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
              -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
              0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
              0.5016634166240692, 0.6427869200706482, 0.8614784181118011]


def inputs(n, seed):
    """Random and adversarial float32 vectors of n elements."""
    rng = np.random.default_rng(seed)
    out = {
        "normal": rng.standard_normal(n),
        "scaled_blocks": rng.standard_normal(n) * np.repeat(10.0 ** rng.uniform(-6, 3, n // 32 + 1), 32)[:n],
        "zeros": np.zeros(n),
        "constant": np.full(n, -0.75),
        "huge": rng.standard_normal(n) * 1e30,
        "tiny": rng.standard_normal(n) * 1e-30,
        "subnormal": rng.standard_normal(n) * 1e-40,
        "outliers": np.where(rng.random(n) < 0.01, 1e4, 1.0) * rng.standard_normal(n),
    }
    # Values exactly on the code midpoints and thresholds (ties), with a 1.0 to pin absmax.
    code = bnb_f.get_4bit_type("nf4", device="cpu").numpy().astype(np.float32)
    fp4 = bnb_f.get_4bit_type("fp4", device="cpu").numpy().astype(np.float32)
    ties = np.concatenate([np.float32(NF4_BOUNDS), (code[1:] + code[:-1]) / 2,
                           np.sort(fp4)[1:] / 2 + np.sort(fp4)[:-1] / 2, [0.00260417, 0.583333, 0.0026041667]])
    t = np.resize(np.concatenate([[1.0], ties, -ties]), n)
    out["ties"] = t
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in out.items()}


def ours_4bit(bnb_capi, x, qt, bs, nested, offset=None):
    n = x.size
    nb = -(-n // bs)
    packed = np.zeros((n + 1) // 2, np.uint8)
    absmax = np.zeros(nb, np.float32)
    qabs = np.zeros(nb, np.uint8)
    nabs = np.zeros(-(-nb // 256), np.float32)
    off = np.array([offset if offset is not None else 0.0], np.float32)
    assert bnb_capi.lowbit_bnb_quantize_4bit(ptr(x), n, 1 if qt == "fp4" else 0, bs, int(nested), 1,
                                       int(offset is not None), ptr(off), ptr(packed), ptr(absmax), ptr(qabs),
                                       ptr(nabs))
    return packed, absmax, qabs, nabs, off[0]


@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("bs", [32, 64, 128, 256, 512, 1024, 2048, 4096])
def test_quantize_4bit_bytes_equal_bitsandbytes(bnb_capi, qt, bs):
    for n in [bs * 40, bs * 3 + 7, 1, 33]:
        for name, x in inputs(n, bs + n).items():
            packed, st = bnb_f.quantize_4bit(torch.from_numpy(x), blocksize=bs, quant_type=qt,
                                             compress_statistics=False)
            p, a, _, _, _ = ours_4bit(bnb_capi, x, qt, bs, False)
            assert np.array_equal(p, packed.numpy().reshape(-1)), f"{qt} bs={bs} n={n} {name}: packed bytes differ"
            assert np.array_equal(a.view(np.uint32), st.absmax.numpy().view(np.uint32)), f"{name}: absmax differs"


@pytest.mark.parametrize("bs", [32, 64, 128, 256, 512, 1024, 2048, 4096])
def test_core_nf4_bytes_equal_bitsandbytes(bnb_capi, bs):
    """NF4 composed with the generic core (bnb_4bit_quantizer(nf4, bs, cpu) + to_bnb) gives bitsandbytes' bytes.

    Not the "subnormal" input: blocks with 0 < absmax < 1e-38 are where the core's
    codebook (x / absmax) and PyTorch's kernel (x * 1e38 under its absmax floor) differ.
    """
    n = bs * 40
    for name, x in inputs(n, bs + 11).items():
        if name == "subnormal":
            continue
        packed, st = bnb_f.quantize_4bit(torch.from_numpy(x), blocksize=bs, quant_type="nf4",
                                         compress_statistics=False)
        p = np.zeros(n // 2, np.uint8)
        a = np.zeros(n // bs, np.float32)
        assert bnb_capi.lowbit_bnb_core_quantize_nf4(ptr(x), n, bs, ptr(p), ptr(a))
        assert np.array_equal(p, packed.numpy().reshape(-1)), f"bs={bs} {name}: packed bytes differ"
        assert np.array_equal(a.view(np.uint32), st.absmax.numpy().view(np.uint32)), f"bs={bs} {name}: absmax differs"


@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("bs", [64, 128, 4096])
def test_nested_state_equals_bitsandbytes(bnb_capi, qt, bs):
    for n in [bs * 700 + 5, bs * 3, 64 * 256 * 3]:
        for name, x in inputs(n, n).items():
            if name in ("huge",):
                continue  # mean of absmax values near 1e30 overflows nothing, but keep the run short
            packed, st = bnb_f.quantize_4bit(torch.from_numpy(x), blocksize=bs, quant_type=qt,
                                             compress_statistics=True)
            ref_off = np.float32(st.offset.item())
            # Our own mean: within a few ulps of torch's.
            _, _, _, _, off = ours_4bit(bnb_capi, x, qt, bs, True)
            assert abs(off - ref_off) <= 4 * np.spacing(np.abs(ref_off)) + 1e-45, f"{name}: offset {off} vs {ref_off}"
            # With bitsandbytes' offset: every byte.
            p, _, q, na, off2 = ours_4bit(bnb_capi, x, qt, bs, True, offset=ref_off)
            assert off2 == ref_off
            assert np.array_equal(p, packed.numpy().reshape(-1)), f"{name}: packed differs"
            assert np.array_equal(q, st.absmax.numpy()), f"{qt} bs={bs} n={n} {name}: nested codes differ"
            assert np.array_equal(na.view(np.uint32), st.state2.absmax.numpy().view(np.uint32)), \
                f"{name}: nested absmax differs"
            assert np.array_equal(st.state2.code.numpy(), bnb_f.create_dynamic_map().numpy().astype(np.float32))


@pytest.mark.parametrize("qt", ["nf4", "fp4"])
@pytest.mark.parametrize("nested", [False, True])
def test_bitsandbytes_dequantizes_our_state_to_our_values(bnb_capi, qt, nested):
    rows, cols, bs = 96, 320, 64
    x = np.random.default_rng(4).standard_normal(rows * cols).astype(np.float32)
    p, a, q, na, off = ours_4bit(bnb_capi, x, qt, bs, nested)
    code = bnb_f.get_4bit_type(qt, device="cpu")
    if nested:
        st2 = bnb_f.QuantState(absmax=torch.from_numpy(na), code=bnb_f.create_dynamic_map(), blocksize=256,
                               dtype=torch.float32)
        st = bnb_f.QuantState(absmax=torch.from_numpy(q), shape=torch.Size([rows, cols]), code=code, blocksize=bs,
                              quant_type=qt, dtype=torch.float32, offset=torch.tensor(off), state2=st2)
    else:
        st = bnb_f.QuantState(absmax=torch.from_numpy(a), shape=torch.Size([rows, cols]), code=code, blocksize=bs,
                              quant_type=qt, dtype=torch.float32)
    for dtype, ot, npt in [(torch.float32, 0, np.float32), (torch.float16, 1, np.uint16), (torch.bfloat16, 2, np.uint16)]:
        st.dtype = dtype
        ref = bnb_f.dequantize_4bit(torch.from_numpy(p).view(-1, 1), st).view(-1)
        ours = np.zeros(rows * cols, npt)
        assert bnb_capi.lowbit_bnb_dequantize_4bit(ptr(p), rows * cols, 1 if qt == "fp4" else 0, bs, ptr(a),
                                             ptr(q) if nested else None, ptr(na) if nested else None, off, ot,
                                             ptr(ours))
        ref_bits = ref.view(torch.int16).numpy().view(np.uint16) if ot else ref.numpy()
        ob = ours.view(np.uint32 if ot == 0 else np.uint16)
        rb = ref_bits.view(np.uint32 if ot == 0 else np.uint16)
        # bitsandbytes' own CPU kernels disagree on the sign of FP4's code 8
        # (the table's -0): its scalar path applies the sign bit (-0.0, as its
        # CUDA kernel does), its AVX-512 path and its torch fallback read +0.
        # Zeros compare by value, every other element by its bits.
        magnitude = np.uint32(0x7FFFFFFF) if ot == 0 else np.uint16(0x7FFF)
        zeros = ((ob & magnitude) == 0) & ((rb & magnitude) == 0)
        if qt == "nf4":
            assert not np.any(zeros & (ob != rb)), f"{dtype}: NF4 zeros differ in sign"
        assert np.array_equal(np.where(zeros, 0, ob), np.where(zeros, 0, rb)), f"{dtype}: values differ"


@pytest.mark.parametrize("bs", [256, 512, 1024, 2048, 4096])
def test_blockwise_8bit_equals_bitsandbytes(bnb_capi, bs):
    for n in [bs * 20, bs * 2 + 3]:
        for name, x in inputs(n, n).items():
            codes, st = bnb_f.quantize_blockwise(torch.from_numpy(x), blocksize=bs)
            c = np.zeros(n, np.uint8)
            a = np.zeros(-(-n // bs), np.float32)
            assert bnb_capi.lowbit_bnb_quantize_blockwise(ptr(x), n, bs, 1, ptr(c), ptr(a))
            assert np.array_equal(a.view(np.uint32), st.absmax.numpy().view(np.uint32)), f"{name}: absmax differs"
            assert np.array_equal(c, codes.numpy()), f"bs={bs} {name}: codes differ"
            ref = bnb_f.dequantize_blockwise(codes, st).numpy()
            ours = np.zeros(n, np.float32)
            assert bnb_capi.lowbit_bnb_dequantize_blockwise(ptr(c), n, bs, ptr(a), 0, ptr(ours))
            assert np.array_equal(ours.view(np.uint32), ref.view(np.uint32)), f"{name}: dequantized values differ"


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_int8_vectorwise_quant_equals_bitsandbytes(bnb_capi, threshold):
    rng = np.random.default_rng(8)
    a = (rng.standard_normal((9, 200)) * 2).astype(np.float32)
    a[3, 17] = 40.0
    a[0, 150] = -6.0  # exactly on the threshold: an outlier (|x| >= threshold)
    q_ref, stats_ref, cols_ref = bnb_f.int8_vectorwise_quant(torch.from_numpy(a.copy()), threshold=threshold)
    q = np.zeros(a.shape, np.int8)
    stats = np.zeros(a.shape[0], np.float32)
    cols = np.zeros(a.shape[1], np.int64)
    n_out = np.zeros(1, np.int64)
    assert bnb_capi.lowbit_bnb_int8_quant(ptr(a), a.shape[0], a.shape[1], threshold, ptr(q), ptr(stats), ptr(cols),
                                    ptr(n_out))
    assert np.array_equal(q, q_ref.numpy())
    assert np.array_equal(stats.view(np.uint32), stats_ref.numpy().view(np.uint32))
    got = cols[: n_out[0]]
    want = cols_ref.numpy() if cols_ref is not None else np.zeros(0, np.int64)
    assert np.array_equal(got, want)


def test_int8_linear_matches_bitsandbytes_mixed_product(bnb_capi):
    rng = np.random.default_rng(9)
    batch, rows, cols = 6, 64, 256
    w = (rng.standard_normal((rows, cols)) * 0.05).astype(np.float32)
    x = rng.standard_normal((batch, cols)).astype(np.float32)
    x[2, 5] = 12.0
    x[4, 100] = -9.0
    cb, scb, _ = bnb_f.int8_vectorwise_quant(torch.from_numpy(w.copy()))
    ca, sca, outliers = bnb_f.int8_vectorwise_quant(torch.from_numpy(x.copy()), threshold=6.0)
    ref, _ = torch.ops.bitsandbytes.int8_mixed_scaled_mm.default(torch.from_numpy(x), ca, cb, sca, scb,
                                                                  outliers, None)
    ours = np.zeros((batch, rows), np.float32)
    assert bnb_capi.lowbit_bnb_int8_linear(ptr(x), batch, ptr(w), rows, cols, 6.0, ptr(ours))
    ref = ref.float().numpy()
    # Same integer product and scales; only the float rounding order of the
    # epilogue differs.
    assert np.allclose(ours, ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
