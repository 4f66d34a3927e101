"""lowbit's OCP MX and NVFP4 formats against an independent implementation:
torchao 0.15.0's prototype mx_formats (`to_mx` with the spec's FLOOR scale
rule, `nvfp4_quantize` with `per_tensor_amax_to_scale`), run on the CPU.

For every format the element codes (the element's sign, exponent and
mantissa bits) and the shared scales (MX: the E8M0 byte; NVFP4: the E4M3
block-scale byte and the fp32 tensor scale) must be identical, bit for bit,
on random, heavy-tailed and edge data. Where the two rules differ by design,
the test pins the difference down (see the tests named after it).

Environment: LOWBIT_MX_CAPI (our C entry points, tests/interop/mx_capi.cpp).
"""
import warnings

import numpy as np
import pytest
from conftest import ptr

torch = pytest.importorskip("torch", reason="torch does not import here", exc_type=ImportError)
mx_tensor = pytest.importorskip("torchao.prototype.mx_formats.mx_tensor",
                                reason="torchao's mx_formats do not import here (pip install torchao==0.15.0)",
                                exc_type=ImportError)
from torchao.prototype.mx_formats import nvfp4_tensor  # noqa: E402

# lowbit format -> (torchao element dtype, whether torchao packs two codes a byte)
MX = {
    "mxfp4": (torch.float4_e2m1fn_x2, True),
    "mxfp6-e3m2": ("fp6_e3m2", False),
    "mxfp6-e2m3": ("fp6_e2m3", False),
    "mxfp8-e4m3": (torch.float8_e4m3fn, False),
    "mxfp8-e5m2": (torch.float8_e5m2, False),
}


def ours(mx_capi, name, x, block):
    rows, cols = x.shape
    codes = np.zeros(rows * cols, np.uint8)
    scales = np.zeros(rows * cols // block, np.float32)
    scale_codes = np.zeros(rows * cols // block, np.uint8)
    tensor_scale = np.zeros(1, np.float32)
    assert mx_capi.lowbit_mx_quantize(name.encode(), ptr(x), rows, cols, ptr(codes), ptr(scales), ptr(scale_codes),
                                   ptr(tensor_scale)), f"{name}: lowbit refused the input"
    return codes.reshape(rows, cols), scales, scale_codes, tensor_scale[0]


def unpack_nibbles(packed, rows, cols):
    """torchao's pack_uint4: element 2j in the low nibble."""
    p = packed.reshape(rows, cols // 2)
    q = np.empty((rows, cols), np.uint8)
    q[:, 0::2] = p & 15
    q[:, 1::2] = p >> 4
    return q


def theirs_mx(x, name, dtype=torch.float32):
    elem, packed = MX[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s, d = mx_tensor.to_mx(torch.from_numpy(x).to(dtype), elem, 32)
    e8m0 = s.view(torch.uint8).numpy().reshape(-1)
    if packed:
        codes = unpack_nibbles(d.view(torch.uint8).numpy(), *x.shape)
    else:
        codes = d.view(torch.uint8).numpy().reshape(x.shape)
    return codes, e8m0


def e8m0_of(scales):
    """The E8M0 byte of power-of-two float scales (2^-127 is float's subnormal 0x00400000)."""
    return ((scales.view(np.uint32) >> 23) & 0xFF).astype(np.uint8)


def datasets():
    rng = np.random.default_rng(11)
    rows, cols = 16, 512
    d = {
        "normal": rng.standard_normal((rows, cols)),
        "student_t": rng.standard_t(3, (rows, cols)) * 0.02,
        "lognormal": rng.lognormal(-4.0, 2.0, (rows, cols)) * np.where(rng.random((rows, cols)) < 0.5, -1.0, 1.0),
        "wide": rng.standard_normal((rows, cols)) * np.exp2(rng.integers(-100, 100, (rows, 1))),
    }
    # Values on and between the element grids' points, at many scales: the
    # ties each rounding rule settles.
    t = np.arange(cols, dtype=np.float64) / 8.0 - 32.0
    d["ties"] = np.stack([t * 2.0 ** k for k in range(-8, 8)])
    return {k: np.ascontiguousarray(v, np.float32) for k, v in d.items()}


def edge_rows():
    """Hand-made blocks of 32, one row each (16 rows)."""
    g = [np.zeros(32), np.full(32, -0.0), np.resize([0.0, -0.0], 32), np.full(32, 1.0), np.full(32, -3.0),
         np.resize([6.0, -6.0, 0.5, 0.25], 32),                       # fp4's top, exactly
         np.resize([448.0, -1.0, 0.001], 32),                           # e4m3's top
         np.resize([3.0e38, 1.0, -1.0e38], 32),                         # float's top: scale 2^127
         np.resize([1.0e-30, -3.0e-31], 32),
         np.resize([7.0, 6.5, 5.5, -6.9], 32),                          # at and past fp4's saturation
         np.resize([1.0, 1.0 + 2.0 ** -20, 0.75, 1.25], 32),
         np.resize([2.0 ** -110, 3.0 * 2.0 ** -112], 32),               # amax well above the scale's floor
         np.resize([100.0, 2.0 ** -20, -2.0 ** -24], 32),               # element subnormals
         np.resize([57344.0, -1.0], 32),                                # e5m2's top
         np.resize([0.1, 0.2, 0.3, 0.4, -0.7], 32),
         np.resize([1.5, 2.5, 3.5, -4.5], 32)]
    return np.ascontiguousarray(np.tile(np.stack(g), (1, 4)), np.float32)


def as_bf16(x):
    """x rounded to bf16 (to nearest even), as float32."""
    return np.ascontiguousarray(torch.from_numpy(x).to(torch.bfloat16).float().numpy())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", list(MX))
def test_mx_codes_and_scales_equal_torchao(mx_capi, name, dtype):
    # bf16 weights: torchao takes the bf16 tensor, lowbit its values as float32.
    data = dict(datasets())
    data["edge blocks"] = edge_rows()
    for what, x in data.items():
        if dtype == torch.bfloat16:
            x = as_bf16(x)
        codes, e8m0 = theirs_mx(x, name, dtype)
        c, s, _, _ = ours(mx_capi, name, x, 32)
        assert np.array_equal(e8m0_of(s), e8m0), f"{name} {what}: E8M0 scales differ"
        bad = np.argwhere(c != codes)
        if bad.size:
            r, k = bad[0]
            pytest.fail(f"{name} {what}: {len(bad)} of {c.size} codes differ, first at row {r}, column {k}: "
                        f"x={x[r, k]!r} lowbit {c[r, k]:#x} torchao {codes[r, k]:#x}")


@pytest.mark.parametrize("name", list(MX))
def test_mx_dequantize_equals_the_spec_decode_of_torchaos_codes(mx_capi, name):
    # Dequantized values: the element's value times the block's power of two.
    # (torchao's own to_dtype computes the same for every scale above 2^-127.)
    x = datasets()["normal"]
    codes, e8m0 = theirs_mx(x, name)
    elem, packed = MX[name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s, d = mx_tensor.to_mx(torch.from_numpy(x), elem, 32)
        ref = mx_tensor.to_dtype(d, s, elem, 32, torch.float32).numpy()
    out = np.zeros_like(x)
    assert mx_capi.lowbit_mx_dequantize(name.encode(), ptr(x), *x.shape, ptr(out))
    assert np.array_equal(out.view(np.uint32), ref.view(np.uint32))


def theirs_nvfp4(x, dtype=torch.float32):
    """torchao's codes, E4M3 block-scale bytes and tensor scale, and the block
    scales' E4M3 bytes before torchao clamps them to E4M3's smallest normal."""
    xt = torch.from_numpy(x).to(dtype)
    pts = nvfp4_tensor.per_tensor_amax_to_scale(torch.max(torch.abs(xt)))
    scales, data = nvfp4_tensor.nvfp4_quantize(xt, 16, pts)
    block = torch.amax(torch.abs(xt.float().reshape(x.shape[0], -1, 16)), dim=-1) / 6.0
    unclamped = (block / pts).to(torch.float8_e4m3fn).view(torch.uint8).numpy().reshape(-1)
    return (unpack_nibbles(data.view(torch.uint8).numpy(), *x.shape), scales.view(torch.uint8).numpy().reshape(-1),
            np.float32(pts.item()), unclamped)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("what", ["normal", "student_t", "lognormal", "ties", "edge blocks"])
def test_nvfp4_codes_and_scales_equal_torchao(mx_capi, what, dtype):
    # torchao clamps each scaled block scale to at least E4M3's smallest
    # normal (2^-6) before rounding it to E4M3; lowbit rounds it to nearest
    # even into E4M3's subnormals too (0 for an all-zero block), as the E4M3
    # format allows and NVIDIA's decode reads, which keeps blocks far below the
    # tensor's largest on a finer scale. Elsewhere, and in the fp32 tensor
    # scale (amax / (6 * 448), rounded once), the two are one rule.
    x = edge_rows() if what == "edge blocks" else datasets()[what]
    if dtype == torch.bfloat16:
        x = as_bf16(x)
    c, _, sc, ts = ours(mx_capi, "nvfp4", x, 16)
    codes, scale_codes, pts, unclamped = theirs_nvfp4(x, dtype)
    assert np.float32(ts).view(np.uint32) == pts.view(np.uint32), f"nvfp4 {what}: tensor scales differ"
    assert np.array_equal(sc, unclamped), f"nvfp4 {what}: E4M3 block scales differ from torchao's unclamped rule"
    same = scale_codes == unclamped  # blocks torchao's clamp leaves alone
    assert np.array_equal(scale_codes[~same], np.full((~same).sum(), 8, np.uint8))  # the clamp: 2^-6, code 8
    assert np.all(unclamped[~same] < 8)
    rows, cols = x.shape
    blocks_same = np.repeat(same.reshape(rows, cols // 16), 16, axis=1)
    bad = np.argwhere((c != codes) & blocks_same)
    assert bad.size == 0, f"nvfp4 {what}: {len(bad)} of {c.size} codes differ, first at {bad[0]}"
    if what in ("normal", "student_t", "lognormal"):
        assert same.all()  # ordinary data never reaches the clamp


def test_mx_blocks_at_the_scale_floor_follow_the_spec_not_torchaos_clamp(mx_capi):
    # A block whose amax is below 2^(emax - 127) gets E8M0's smallest scale,
    # 2^-127 (byte 0), in both. The OCP spec divides the elements by that
    # scale; torchao divides by float's smallest normal 2^-126 instead (its
    # workaround for Triton's subnormals), halving them. lowbit follows the
    # spec, so its codes decode to the block's values under the stored scale.
    x = np.ascontiguousarray(np.resize([2.0 ** -126, -3.0 * 2.0 ** -130, 2.0 ** -133, 0.0], (16, 32)), np.float32)
    codes, e8m0 = theirs_mx(x, "mxfp8-e4m3")
    c, s, _, _ = ours(mx_capi, "mxfp8-e4m3", x, 32)
    assert np.array_equal(e8m0_of(s), e8m0) and (e8m0 == 0).all()
    spec = torch.clamp(torch.from_numpy(x.astype(np.float64) * 2.0 ** 127), -448, 448).float()
    spec = spec.to(torch.float8_e4m3fn).view(torch.uint8).numpy()
    assert np.array_equal(c, spec)
    halved = torch.from_numpy(x.astype(np.float64) * 2.0 ** 126).float().to(torch.float8_e4m3fn)
    assert np.array_equal(codes, halved.view(torch.uint8).numpy())
    assert not np.array_equal(c, codes)
