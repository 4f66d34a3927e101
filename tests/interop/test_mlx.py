"""lowbit's MLX formats (mlx-<b>b-g<G>[-bf16|-f32]) against mx.quantize itself.

mx.quantize computes each group's scale and bias in float32, encodes every
element with those unrounded values, then stores the params in the weights'
dtype. lowbit's mlx-* formats are given the weights widened to float32 and
store the params in fp16 (no suffix), bf16 (-bf16) or fp32 (-f32): for
weights of that dtype the packed codes (MLX's little-endian uint32 words) and
the stored scales and biases must be identical, bit for bit.

MLX checkpoints: `lowbit quantize IN.safetensors OUT.safetensors --format
mlx-<b>b-g<G>` writes mlx-lm's layout, which mx.load reads back.

Environment: LOWBIT_AFFINE_CAPI (our C entry points, tests/interop/affine_capi.cpp),
LOWBIT_CLI (the lowbit program).
"""
import json
import os
import subprocess

import numpy as np
import pytest
from conftest import ptr

mx = pytest.importorskip("mlx.core", reason="mlx does not import here (pip install \"mlx[cpu]\" in the venv)",
                         exc_type=ImportError)
mx.set_default_device(mx.cpu)

BITS = [2, 3, 4, 5, 6, 8]
GROUPS = [32, 64, 128]
DTYPES = {"f16": (mx.float16, ""), "bf16": (mx.bfloat16, "-bf16"), "f32": (mx.float32, "-f32")}


def f32(a):
    """An mlx array as float32 numpy (exact for fp16 and bf16)."""
    return np.array(a.astype(mx.float32))


def ours(affine_capi, name, w32, bits, group):
    rows, cols = w32.shape
    codes = np.zeros(rows * cols * bits // 8, np.uint8)
    scales = np.zeros(rows * cols // group, np.float32)
    biases = np.zeros(rows * cols // group, np.float32)
    bpw = np.zeros(1, np.float64)
    ok = affine_capi.lowbit_affine_quantize(name.encode(), ptr(w32), rows, cols, ptr(codes), ptr(scales), ptr(biases), ptr(bpw))
    return (codes, scales, biases, bpw[0]) if ok else None


def theirs(w, bits, group):
    wq, s, b = mx.quantize(w, group_size=group, bits=bits)
    return np.array(wq).view(np.uint8).reshape(-1), f32(s).reshape(-1), f32(b).reshape(-1)


def unpack(codes, bits, rows, cols):
    b = np.unpackbits(codes.reshape(rows, -1), axis=1, bitorder="little")[:, : cols * bits]
    return (b.reshape(rows, cols, bits).astype(np.uint32) << np.arange(bits, dtype=np.uint32)).sum(2)


def edge_rows(bits, group, dtype):
    """Hand-made groups, one per row segment: the cases the rule treats apart."""
    levels = (1 << bits) - 1
    g = []
    g.append(np.full(group, 0.3))                      # constant: code 0 everywhere, bias = c
    g.append(np.full(group, -1234.5))
    g.append(np.zeros(group))                          # all +0
    g.append(np.full(group, -0.0))                     # all -0
    g.append(np.resize([0.0, -0.0], group))            # +-0 mixed
    z = np.zeros(group); z[3] = 6e-8                   # one fp16 subnormal above zeros
    g.append(z)
    g.append(np.full(group, 1e-9))                     # constant below MLX's eps: q0 = 0, bias 0
    rng = np.random.default_rng(bits * 1000 + group)
    g.append(rng.standard_normal(group) * 1e-4)       # fp16 scale subnormal
    g.append(rng.standard_normal(group) * 3e-6)       # scale at MLX's eps
    t = -1.0 + (np.arange(group) % (levels + 1) + 0.5) * (1.5 / levels)  # near the bin edges of [-1, 0.5]
    t[0], t[1] = -1.0, 0.5
    g.append(t)
    t = 2.0 - (np.arange(group) % (levels + 1) + 0.5) * (3.0 / levels)  # max edge (negative scale)
    t[0], t[1] = 2.0, -1.0
    g.append(t)
    s = np.resize([1.0, -1.0], group)                  # |min| == |max|: max is the edge
    g.append(s)
    if dtype == "f16":
        big = 65504.0
    elif dtype == "bf16":
        big = float(np.array(mx.array(3.38e38).astype(mx.bfloat16).astype(mx.float32)))
    else:
        big = 3.4e38
    r = np.zeros(group); r[0] = big                    # range limit, one-signed (the range fits float)
    g.append(r)
    r = np.zeros(group); r[0] = -big
    g.append(r)
    if dtype == "f16":                                 # the full fp16 range (fits float32)
        g.append(np.resize([65504.0, -65504.0, 0.0, 1.0], group))
    g.append(np.resize([1e5 if dtype != "f16" else 6e4, 1.0], group))
    return np.concatenate(g).reshape(1, -1)


def datasets(dtype):
    rng = np.random.default_rng({"f16": 1, "bf16": 2, "f32": 3}[dtype])
    rows, cols = 16, 512
    t = rng.standard_t(3, (rows, cols)) * rng.uniform(0.005, 0.05, (rows, 1))
    ln = rng.lognormal(-4.0, 1.0, (rows, cols)) * np.where(rng.random((rows, 1)) < 0.5, -1.0, 1.0)
    return {"normal": rng.standard_normal((32, cols)), "student_t": t, "lognormal": ln}


def to_mx(a, dtype):
    return mx.array(np.ascontiguousarray(a, np.float32)).astype(DTYPES[dtype][0])


def compare(affine_capi, w, bits, group, dtype, what):
    name = f"mlx-{bits}b-g{group}{DTYPES[dtype][1]}"
    w32 = np.ascontiguousarray(f32(w))
    rows, cols = w32.shape
    codes, scales, biases = theirs(w, bits, group)
    got = ours(affine_capi, name, w32, bits, group)
    assert got is not None, f"{name} {what}: lowbit refused input mx.quantize accepts"
    c, s, b, bpw = got
    if not np.array_equal(c, codes):
        qa, qb = unpack(c, bits, rows, cols), unpack(codes, bits, rows, cols)
        bad = np.argwhere(qa != qb)
        r, k = bad[0]
        pytest.fail(f"{name} {what}: {len(bad)} of {qa.size} codes differ, first at row {r}, column {k}: "
                    f"x={w32[r, k]!r} lowbit {qa[r, k]} mlx {qb[r, k]}")
    assert np.array_equal(s.view(np.uint32), scales.view(np.uint32)), f"{name} {what}: scales differ"
    assert np.array_equal(b.view(np.uint32), biases.view(np.uint32)), f"{name} {what}: biases differ"
    param_bits = 32 if dtype == "f32" else 16
    assert bpw == pytest.approx(bits + 2 * param_bits / group, rel=1e-12)
    return c.size


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("bits", BITS)
def test_codes_and_params_equal_mx_quantize(affine_capi, bits, group, dtype):
    for what, a in datasets(dtype).items():
        compare(affine_capi, to_mx(a, dtype), bits, group, dtype, what)
    compare(affine_capi, to_mx(edge_rows(bits, group, dtype), dtype), bits, group, dtype, "edge groups")


@pytest.mark.parametrize("dtype", ["bf16", "f32"])
def test_a_range_beyond_float_is_refused_where_mlx_stores_inf(affine_capi, dtype):
    # +-max of bf16 (or fp32): max - min overflows float32, so MLX's scale is
    # -inf (and it decodes to NaN); lowbit refuses the group instead.
    big = 3.38e38
    a = np.resize([big, -big], 64).reshape(1, -1)
    w = to_mx(a, dtype)
    _, s, _ = theirs(w, 4, 64)
    assert np.isinf(s).all()
    assert ours(affine_capi, f"mlx-4b-g64{DTYPES[dtype][1]}", np.ascontiguousarray(f32(w)), 4, 64) is None


def test_fp16_params_of_fp32_weights_are_mlx_params_cast_to_fp16(affine_capi):
    # The plain names on float32 weights: mx.quantize's codes for those weights,
    # and its float32 params rounded to fp16 (as mlx-lm's cast of the params).
    rng = np.random.default_rng(9)
    w32 = np.ascontiguousarray(rng.standard_normal((8, 256)).astype(np.float32))
    for bits in BITS:
        codes, scales, biases = theirs(mx.array(w32), bits, 64)
        c, s, b, _ = ours(affine_capi, f"mlx-{bits}b-g64", w32, bits, 64)
        assert np.array_equal(c, codes)
        assert np.array_equal(s, scales.astype(np.float16).astype(np.float32))
        assert np.array_equal(b, biases.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
@pytest.mark.parametrize("bits", BITS)
def test_dequantize_in_the_params_dtype_equals_mx_dequantize(affine_capi, bits, dtype):
    # mx.dequantize returns the params' dtype: scale * q rounded to it, then
    # the bias added and rounded again; lowbit's fp16 (bf16) output of mlx-*
    # (mlx-*-bf16) does the same.
    out_type = 1 if dtype == "f16" else 2
    for group in GROUPS:
        data = dict(datasets(dtype))
        data["edge groups"] = edge_rows(bits, group, dtype)
        for what, a in data.items():
            w = to_mx(a, dtype)
            wq, s, b = mx.quantize(w, group_size=group, bits=bits)
            ref = np.array(mx.dequantize(wq, s, b, group_size=group, bits=bits).view(mx.uint16))
            w32 = np.ascontiguousarray(f32(w))
            out = np.zeros(w32.shape, np.uint16)
            name = f"mlx-{bits}b-g{group}{DTYPES[dtype][1]}"
            assert affine_capi.lowbit_affine_dequantize(name.encode(), ptr(w32), *w32.shape, out_type, ptr(out))
            bad = np.argwhere(out != ref)
            assert bad.size == 0, f"{name} {what}: {len(bad)} of {out.size} values differ, first at {bad[0]}"


def test_dequantize_f32_equals_mx_dequantize(affine_capi):
    # Float32 params: scale * q + bias in float32, as mx.dequantize computes it.
    rng = np.random.default_rng(10)
    w32 = np.ascontiguousarray(rng.standard_normal((8, 512)).astype(np.float32))
    for bits in BITS:
        for group in GROUPS:
            wq, s, b = mx.quantize(mx.array(w32), group_size=group, bits=bits)
            ref = np.array(mx.dequantize(wq, s, b, group_size=group, bits=bits))
            out = np.zeros_like(w32)
            assert affine_capi.lowbit_affine_dequantize(f"mlx-{bits}b-g{group}-f32".encode(), ptr(w32), 8, 512, 0, ptr(out))
            assert np.array_equal(out.view(np.uint32), ref.view(np.uint32)), f"{bits} bits, groups of {group}"


def lowbit_cli(*args):
    cli = os.environ.get("LOWBIT_CLI", "")
    if not cli or not os.path.exists(cli):
        pytest.fail("LOWBIT_CLI must point at the built lowbit program")
    return subprocess.run([cli, *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("bits,group", [(4, 64), (3, 32), (8, 128), (2, 64), (6, 32), (5, 128)])
def test_checkpoint_is_what_mlx_writes_and_mx_load_reads(tmp_path, bits, group, dtype):
    # A float checkpoint written by MLX itself, quantized by `lowbit quantize
    # --format mlx-<b>b-g<G>`: mx.load reads the result, and every quantized
    # layer's weight (uint32 words), scales and biases are mx.quantize's of the
    # same weights, so mx.dequantize gives MLX's own values.
    rng = np.random.default_rng(bits * 100 + group)
    mt = DTYPES[dtype][0]
    layers = {
        "model.embed_tokens.weight": rng.standard_normal((96, 256)) * 0.05,
        "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((256, 256)) * 0.05,
        "model.layers.0.mlp.down_proj.weight": rng.standard_t(3, (256, 384)) * 0.02,
        "lm_head.weight": rng.standard_normal((96, 256)) * 0.05,
        "model.layers.0.odd.weight": rng.standard_normal((8, 48 if group > 32 else 40)),  # rows not in groups: kept
        "model.layers.0.input_layernorm.weight": np.ones(256),
    }
    src = {k: mx.array(v.astype(np.float32)).astype(mt) for k, v in layers.items()}
    fin, fout = tmp_path / "model.safetensors", tmp_path / "model-q.safetensors"
    mx.save_safetensors(str(fin), src, metadata={"format": "mlx"})
    r = lowbit_cli("quantize", fin, fout, "--format", f"mlx-{bits}b-g{group}")
    assert r.returncode == 0, r.stderr
    assert f'"quantization": {{"group_size": {group}, "bits": {bits}}}' in r.stdout
    assert "model.layers.0.odd.weight: its rows do not divide" in r.stdout
    got, meta = mx.load(str(fout), return_metadata=True)
    assert meta.get("format") == "mlx"
    for name, w in src.items():
        layer = name[: -len(".weight")]
        if name.endswith("layernorm.weight") or ".odd." in name:
            assert layer + ".scales" not in got
            assert np.array_equal(f32(got[name]), f32(w)) and got[name].dtype == w.dtype
            continue
        wq, s, b = mx.quantize(w, group_size=group, bits=bits)
        assert got[name].dtype == mx.uint32 and got[name].shape == wq.shape
        assert np.array_equal(np.array(got[name]), np.array(wq)), name
        assert got[layer + ".scales"].dtype == w.dtype and got[layer + ".biases"].dtype == w.dtype
        assert np.array_equal(f32(got[layer + ".scales"]), f32(s)), name
        assert np.array_equal(f32(got[layer + ".biases"]), f32(b)), name
        mine = mx.dequantize(got[name], got[layer + ".scales"], got[layer + ".biases"], group_size=group, bits=bits)
        theirs_ = mx.dequantize(wq, s, b, group_size=group, bits=bits)
        assert np.array_equal(f32(mine), f32(theirs_)), name
    # lowbit reads the layers back with mlx-lm's config.json beside the file.
    (tmp_path / "config.json").write_text(json.dumps({"quantization": {"group_size": group, "bits": bits}}))
    r = lowbit_cli("inspect", fout)
    assert r.returncode == 0, r.stderr
    assert f"MLX layer model.layers.0.mlp.down_proj: mlx-{bits}b-g{group}, 256 x 384" in r.stdout


def test_checkpoint_per_layer_formats_are_what_their_config_entries_say(tmp_path):
    # --layer-format gives some layers other bits and group sizes; the summary's
    # config block names them as mlx-lm's per-layer quantization does, and each
    # layer is mx.quantize's at its own bits and group size.
    rng = np.random.default_rng(3)
    src = {f"model.layers.{i}.mlp.{p}.weight": mx.array((rng.standard_normal((64, 256)) * 0.05).astype(np.float32))
           .astype(mx.bfloat16) for i in range(2) for p in ("up_proj", "down_proj")}
    fin, fout = tmp_path / "model.safetensors", tmp_path / "model-q.safetensors"
    mx.save_safetensors(str(fin), src)
    r = lowbit_cli("quantize", fin, fout, "--format", "mlx-4b-g64", "--layer-format", r"down_proj$=mlx-6b-g32",
                   "--layer-format", r"layers\.1\.=mlx-8b-g128")
    assert r.returncode == 0, r.stderr
    config = json.loads(r.stdout.split('"quantization": ', 1)[1].split(" (and the same", 1)[0])
    assert config == {"group_size": 64, "bits": 4,
                      "model.layers.0.mlp.down_proj": {"group_size": 32, "bits": 6},
                      "model.layers.1.mlp.up_proj": {"group_size": 128, "bits": 8},
                      "model.layers.1.mlp.down_proj": {"group_size": 32, "bits": 6}}
    got = mx.load(str(fout))
    for name, w in src.items():
        layer = name[: -len(".weight")]
        q = config.get(layer, config)
        wq, s, b = mx.quantize(w, group_size=q["group_size"], bits=q["bits"])
        assert np.array_equal(np.array(got[name]), np.array(wq)), name
        assert np.array_equal(f32(got[layer + ".scales"]), f32(s)) and np.array_equal(f32(got[layer + ".biases"]), f32(b))
    (tmp_path / "config.json").write_text(json.dumps({"quantization": config}))
    r = lowbit_cli("inspect", fout)
    assert "MLX layer model.layers.1.mlp.up_proj: mlx-8b-g128, 64 x 256" in r.stdout, r.stdout


@pytest.mark.parametrize("bits", [4, 5])
def test_4_and_5_bit_layers_become_ggml_q4_1_and_q5_1_blocks_exactly(affine_capi, bits):
    # An MLX layer with fp16 params holds exactly what ggml's Q4_1 / Q5_1
    # blocks hold (d = scale, m = bias, the same codes): ggml's dequantize of
    # the converted blocks (gguf.quants) is mx.dequantize's float32 output.
    quants = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType as T
    t, size = (T.Q4_1, 20) if bits == 4 else (T.Q5_1, 24)
    rng = np.random.default_rng(bits)
    for group in GROUPS:
        w = mx.array(rng.standard_normal((8, 512)).astype(np.float32)).astype(mx.float16)
        w32 = np.ascontiguousarray(f32(w))
        blocks = np.zeros(8 * 512 // 32 * size, np.uint8)
        assert affine_capi.lowbit_mlx_to_ggml(f"mlx-{bits}b-g{group}".encode(), ptr(w32), 8, 512, ptr(blocks))
        wq, s, b = mx.quantize(w, group_size=group, bits=bits)
        ref = f32(mx.dequantize(wq, s.astype(mx.float32), b.astype(mx.float32), group_size=group, bits=bits))
        got = quants.dequantize(blocks.reshape(8, -1), t).astype(np.float32)
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), f"{bits} bits, groups of {group}"
    # bf16 params that fp16 cannot hold exactly are refused, not rounded.
    tiny = np.ascontiguousarray(rng.standard_normal((8, 512)).astype(np.float32) * 1e-7)
    tiny = f32(mx.array(tiny).astype(mx.bfloat16))
    assert not affine_capi.lowbit_mlx_to_ggml(f"mlx-{bits}b-g64-bf16".encode(), ptr(tiny), 8, 512, ptr(blocks))
