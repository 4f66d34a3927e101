"""lowbit's torchao formats (torchao-int4-g<G>[-v1[-f32]]) against torchao itself.

torchao's int4 weight-only rule (tinygemm's float zero-point) computes every
step in the weights' dtype: scale = max((max - min) / 15, eps), zero-point =
min + 8 * scale, q = clamp(round((x - (zero-point - 8 * scale)) / scale), 0, 15),
and stores scale and zero-point in that dtype. Version 2 (the default) takes
eps = the dtype's eps (2^-7 for bf16), version 1 takes 1e-6.

References, torchao 0.15.0 beside torch 2.9.1, on the CPU:
* version 1: the real API, quantize_(model, Int4WeightOnlyConfig(version=1,
  layout=Int4CPULayout())), whose get_plain() gives codes, scales and
  zero-points (bf16 and fp32 weights);
* version 2: Int4WeightOnlyConfig's default version packs with CUDA
  (tile_packed_to_4d) or fbgemm, neither of which runs here, so the test calls
  the two functions Int4TilePackedTo4dTensor.from_hp calls, with its
  arguments (bf16 weights).
Dequantize is torchao's _dequantize_affine_tinygemm into fp32, fp16 and bf16.

Environment: LOWBIT_AFFINE_CAPI (our C entry points, tests/interop/affine_capi.cpp).
"""
import warnings

import numpy as np
import pytest
from conftest import ptr

torch = pytest.importorskip("torch", reason="torch does not import here", exc_type=ImportError)
qp = pytest.importorskip("torchao.quantization.quant_primitives",
                         reason="torchao does not import here (pip install torchao==0.15.0 in the venv)",
                         exc_type=ImportError)
from torchao.dtypes import Int4CPULayout  # noqa: E402
from torchao.quantization import Int4WeightOnlyConfig, quantize_  # noqa: E402

GROUPS = [32, 64, 128, 256]
# suffix -> (weights' dtype, version)
VARIANTS = {"": (torch.bfloat16, 2), "-v1": (torch.bfloat16, 1), "-v1-f32": (torch.float32, 1)}
OUT_TYPES = {0: torch.float32, 1: torch.float16, 2: torch.bfloat16}


def f32(t):
    return np.ascontiguousarray(t.float().numpy())


def ours(affine_capi, name, w32, group):
    rows, cols = w32.shape
    codes = np.zeros(rows * cols // 2, np.uint8)
    scales = np.zeros(rows * cols // group, np.float32)
    zeros = np.zeros(rows * cols // group, np.float32)
    bpw = np.zeros(1, np.float64)
    ok = affine_capi.lowbit_affine_quantize(name.encode(), ptr(w32), rows, cols, ptr(codes), ptr(scales), ptr(zeros),
                                     ptr(bpw))
    if not ok:
        return None
    q = np.empty((rows, cols), np.int64)  # element 2j in the low nibble
    c = codes.reshape(rows, cols // 2)
    q[:, 0::2] = c & 15
    q[:, 1::2] = c >> 4
    return q, scales, zeros, bpw[0]


def theirs(w, group, version):
    """torchao's codes (rows x cols), scales and zero-points (rows * cols / group) as float32."""
    if version == 1:
        m = torch.nn.Linear(w.shape[1], w.shape[0], bias=False).to(w.dtype)
        m.weight.data = w.clone()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_(m, Int4WeightOnlyConfig(group_size=group, version=1, layout=Int4CPULayout()))
        q, s, z = m.weight.tensor_impl.get_plain()
    else:
        block = (1, group)
        s, z = qp._choose_qparams_affine_tinygemm(w, qp.MappingType.ASYMMETRIC, block, torch.int32, 0, 15,
                                                  scale_dtype=w.dtype, zero_point_dtype=w.dtype)
        q = qp._quantize_affine_tinygemm(w, block, s, z, torch.int32, 0, 15)
    assert s.dtype == w.dtype and z.dtype == w.dtype
    return q.numpy().astype(np.int64), f32(s).reshape(-1), f32(z).reshape(-1)


def edge_rows(group, dtype):
    """Hand-made groups, one per row (16): the cases the rule treats apart."""
    g = []
    g.append(np.full(group, 0.1))                       # constant: scale = eps
    g.append(np.full(group, -1234.5))
    g.append(np.zeros(group))                           # all +0
    g.append(np.full(group, -0.0))                      # all -0
    g.append(np.resize([0.0, -0.0], group))             # +-0 mixed
    g.append(np.full(group, 1e-30))                     # constant far below eps
    rng = np.random.default_rng(group)
    g.append(rng.standard_normal(group) * 1e-3)         # range / 15 below bf16's eps: scale = eps
    g.append(rng.standard_normal(group) * 1e-6)         # ... and below 1e-6
    g.append(rng.standard_normal(group) * 1e-36)        # subnormal range
    t = -1.0 + (np.arange(group) % 16) * (1.5 / 15)     # exactly on the codes of [-1, 0.5]
    g.append(t)
    t = -1.0 + (np.arange(group) % 16 + 0.5) * (1.5 / 15)  # at the bin edges
    t[0], t[1] = -1.0, 0.5
    g.append(t)
    g.append(np.resize([1.0, -1.0], group))
    big = 1.0e38 if dtype == torch.bfloat16 else 1.5e38
    r = np.zeros(group); r[0] = big                     # near the top of the range, one-signed
    g.append(r)
    r = np.zeros(group); r[0] = -big
    g.append(r)
    g.append(np.resize([1e5, 1.0, -3.0], group))
    g.append(rng.uniform(0.25, 0.5, group))              # one-signed, narrow
    return np.stack(g)  # 16 rows: Int4CPULayout packs rows in sixteens


def datasets(dtype):
    rng = np.random.default_rng({torch.bfloat16: 1, torch.float32: 2}[dtype])
    rows, cols = 16, 512
    t = rng.standard_t(3, (rows, cols)) * rng.uniform(0.005, 0.05, (rows, 1))
    ln = rng.lognormal(-4.0, 1.0, (rows, cols)) * np.where(rng.random((rows, 1)) < 0.5, -1.0, 1.0)
    # an LLM-like weight: small Gaussian with a few outlier input channels
    llm = rng.standard_normal((rows, cols)) * 0.02
    llm[:, rng.choice(cols, 6, replace=False)] *= 40.0
    return {"normal": rng.standard_normal((32, cols)), "student_t": t, "lognormal": ln, "llm": llm}


def as_torch(a, dtype):
    return torch.from_numpy(np.ascontiguousarray(a, np.float32)).to(dtype)


def compare(affine_capi, w, group, suffix, what):
    dtype, version = VARIANTS[suffix]
    name = f"torchao-int4-g{group}{suffix}"
    w32 = f32(w)
    q, s, z = theirs(w, group, version)
    got = ours(affine_capi, name, w32, group)
    assert got is not None, f"{name} {what}: lowbit refused input torchao accepts"
    gq, gs, gz, bpw = got
    bad = np.argwhere(gq != q)
    if bad.size:
        r, k = bad[0]
        pytest.fail(f"{name} {what}: {len(bad)} of {q.size} codes differ, first at row {r}, column {k}: "
                    f"x={w32[r, k]!r} lowbit {gq[r, k]} torchao {q[r, k]}")
    assert np.array_equal(gs.view(np.uint32), s.view(np.uint32)), f"{name} {what}: scales differ"
    assert np.array_equal(gz.view(np.uint32), z.view(np.uint32)), f"{name} {what}: zero-points differ"
    param_bits = 32 if dtype == torch.float32 else 16
    assert bpw == pytest.approx(4 + 2 * param_bits / group, rel=1e-12)


@pytest.mark.parametrize("suffix", list(VARIANTS))
@pytest.mark.parametrize("group", GROUPS)
def test_codes_scales_and_zero_points_equal_torchao(affine_capi, group, suffix):
    dtype = VARIANTS[suffix][0]
    for what, a in datasets(dtype).items():
        compare(affine_capi, as_torch(a, dtype), group, suffix, what)
    e = edge_rows(group, dtype)
    compare(affine_capi, as_torch(np.tile(e, (1, 2)), dtype), group, suffix, "edge groups")


@pytest.mark.parametrize("suffix", ["", "-v1"])
def test_bf16_formats_take_fp32_weights_as_bf16(affine_capi, suffix):
    # Weights that are not bf16 give what torchao gives for w.to(torch.bfloat16).
    rng = np.random.default_rng(7)
    w32 = np.ascontiguousarray(rng.standard_normal((16, 256)).astype(np.float32))
    q, s, z = theirs(torch.from_numpy(w32).to(torch.bfloat16), 128, VARIANTS[suffix][1])
    gq, gs, gz, _ = ours(affine_capi, f"torchao-int4-g128{suffix}", w32, 128)
    assert np.array_equal(gq, q)
    assert np.array_equal(gs, s) and np.array_equal(gz, z)


def test_a_range_beyond_bf16_is_refused_where_torchao_stores_inf(affine_capi):
    # max - min overflows bf16: torchao's scale is inf (its codes decode to
    # NaN); lowbit refuses the group instead.
    w = as_torch(np.resize([3.0e38, -3.0e38], (2, 128)), torch.bfloat16)
    _, s, _ = theirs(w, 128, 2)
    assert np.isinf(s).all()
    assert ours(affine_capi, "torchao-int4-g128", f32(w), 128) is None


@pytest.mark.parametrize("suffix", list(VARIANTS))
def test_dequantize_equals_torchao(affine_capi, suffix):
    # (q - 8) in the output dtype, times the scale, plus the zero-point, each
    # step rounded to the output dtype: fp32, fp16 and bf16 outputs.
    dtype, version = VARIANTS[suffix]
    for group in GROUPS:
        data = dict(datasets(dtype))
        data["edge groups"] = np.tile(edge_rows(group, dtype), (1, 2))
        for what, a in data.items():
            w = as_torch(a, dtype)
            q, s, z = theirs(w, group, version)
            rows, cols = w.shape
            st = torch.from_numpy(s).to(dtype).reshape(rows, cols // group)
            zt = torch.from_numpy(z).to(dtype).reshape(rows, cols // group)
            w32 = f32(w)
            name = f"torchao-int4-g{group}{suffix}"
            for out_type, out_dtype in OUT_TYPES.items():
                ref = qp._dequantize_affine_tinygemm(torch.from_numpy(q).to(torch.int32), (1, group), st, zt,
                                                     torch.int32, 0, 15, output_dtype=out_dtype)
                if out_dtype == torch.float32:
                    ref = ref.numpy().view(np.uint32)
                    out = np.zeros((rows, cols), np.uint32)
                else:
                    ref = ref.view(torch.int16).numpy().view(np.uint16)
                    out = np.zeros((rows, cols), np.uint16)
                assert affine_capi.lowbit_affine_dequantize(name.encode(), ptr(w32), rows, cols, out_type, ptr(out))
                bad = np.argwhere(out != ref)
                assert bad.size == 0, (f"{name} {what} into {out_dtype}: {len(bad)} of {out.size} values differ, "
                                       f"first at {bad[0]}")
