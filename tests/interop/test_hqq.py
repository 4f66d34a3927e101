"""lowbit::hqq against the hqq package's own quantizer (hqq.core.quantize.
Quantizer.quantize with axis=1, as HQQLinear calls it, on the CPU with one
torch thread): the same codes, scales and zero-points bit for bit, and the
same number of solver steps, wherever the lp shrinkage is zero (every error
term below 0.17); where it is not, torch takes the power from SLEEF and lowbit
from libm, and the test bounds the difference instead.

Environment: LOWBIT_AFFINE_CAPI (tests/interop/affine_capi.cpp).
"""
import ctypes

import numpy as np
import pytest

from conftest import ptr

torch = pytest.importorskip("torch")
hqq_quantize = pytest.importorskip("hqq.core.quantize")


def cascade64(x, lanes):
    """torch's CPU sum (SumKernel.cpp's vectorized_inner_sum) of 64 float32
    values on vectors of `lanes`: four accumulators over the vectors (one
    pass for 16 lanes, two for 8), added in order, then the lanes in order."""
    v = x.reshape(-1, lanes)
    acc = [v[k].copy() for k in range(4)]
    for i in range(4, len(v)):
        acc[i % 4] = (acc[i % 4] + v[i]).astype(np.float32)
    s = ((acc[0] + acc[1]).astype(np.float32) + acc[2]).astype(np.float32) + acc[3]
    total = np.float32(0)
    for t in s.astype(np.float32):
        total = np.float32(total + t)
    return total


def torch_lanes():
    """The vector width torch's sums run on here, found from a sum whose
    order shows it: not its CPU capability (torch 2.9.1 reports AVX512 on
    an AVX-512 Xeon and still sums on 8 lanes)."""
    x = np.random.default_rng(5).standard_normal(64).astype(np.float32) * np.float32(3.7)
    x[::7] *= np.float32(1e4)
    got = torch.from_numpy(x).sum().numpy()
    for lanes in (8, 16):
        if cascade64(x, lanes) == got:
            assert cascade64(x, 8) != cascade64(x, 16), "the probe does not tell 8 lanes from 16"
            return lanes
    pytest.fail("torch's sum is neither lowbit's 8-lane nor 16-lane cascade")


def theirs(w, bits, gs):
    torch.set_num_threads(1)
    q, meta = hqq_quantize.Quantizer.quantize(
        torch.from_numpy(w), nbits=bits, channel_wise=True, group_size=gs, optimize=True,
        round_zero=bits == 4, axis=1, bitpack=False, compute_dtype=None, view_as_float=False, device="cpu")
    rows, cols = w.shape
    return (q.numpy().astype(np.uint8).reshape(rows, cols), meta["scale"].numpy().reshape(rows, cols // gs),
            meta["zero"].numpy().reshape(rows, cols // gs))


def ours(lib, w, bits, gs, threads=2):
    rows, cols = w.shape
    codes = np.zeros((rows, cols), np.uint8)
    scale = np.zeros((rows, cols // gs), np.float32)
    zero = np.zeros_like(scale)
    steps = ctypes.c_int(0)
    assert lib.lowbit_hqq(ptr(w), rows, cols, bits, gs, -1, torch_lanes(), threads, ptr(codes), ptr(scale),
                          ptr(zero), ctypes.byref(steps))
    return codes, scale, zero, steps.value


def weights(kind, rows, cols, seed):
    rng = np.random.default_rng(seed)
    if kind == "outliers":  # a trained layer's weights: small, with a few large ones
        w = rng.normal(0, 0.02, (rows, cols))
        idx = rng.choice(rows * cols, rows * cols // 4000 + 1, replace=False)
        w.flat[idx] = rng.uniform(0.15, 0.4, idx.size) * rng.choice([-1, 1], idx.size)
    elif kind == "t3":
        w = 0.01 * rng.standard_t(3, (rows, cols))
    elif kind == "row-scales":
        w = rng.normal(0, 1, (rows, cols)) * np.exp(rng.normal(-4, 1, (rows, 1)))
    elif kind == "special":  # constant groups, groups narrower than 1e-4, integers with ties
        w = rng.normal(0, 0.02, (rows, cols))
        w[0, :] = 0.25
        w[1, :] = 0.01 + rng.uniform(0, 5e-5, cols)
        w[2, :] = rng.integers(-8, 8, cols) / 16
        w[3, :64] = 0.0
    else:
        raise ValueError(kind)
    return np.ascontiguousarray(w, np.float32)


def hqq_steps(w, bits, gs):
    """How many solver steps hqq ran (its loop breaks on the first step that does not improve)."""
    import hqq.core.optimize as opt

    count = [0]
    step = opt.optimize_weights_proximal_legacy_step

    def counted(*a, **k):
        count[0] += 1
        return step(*a, **k)

    opt.optimize_weights_proximal_legacy_step = counted
    try:
        theirs(w, bits, gs)
    finally:
        opt.optimize_weights_proximal_legacy_step = step
    return count[0]


@pytest.mark.parametrize("kind", ["outliers", "t3", "row-scales", "special"])
@pytest.mark.parametrize("bits,gs", [(8, 64), (4, 32), (4, 64), (4, 128), (3, 64), (2, 64), (2, 128), (1, 64)])
def test_same_as_hqq(affine_capi, kind, bits, gs):
    w = weights(kind, 64, 512, seed=bits * 1000 + gs)
    q, s, z = theirs(w, bits, gs)
    q2, s2, z2, steps = ours(affine_capi, w, bits, gs)
    # Where an error term reaches the shrinkage's 0.17, the power's last bit may differ.
    shrinking = np.abs(w - (q.astype(np.float32) - np.repeat(z, gs, axis=1)) * np.repeat(s, gs, axis=1)).max() >= 0.17
    if shrinking:
        assert np.mean(q != q2) < 1e-3
        assert np.allclose(z, z2, rtol=1e-5, atol=1e-5) and np.array_equal(s.view(np.int32), s2.view(np.int32))
        return
    assert np.array_equal(q, q2), f"{int((q != q2).sum())} codes differ"
    assert np.array_equal(s.view(np.int32), s2.view(np.int32)), f"{int((s != s2).sum())} scales differ"
    assert np.array_equal(z.view(np.int32), z2.view(np.int32)), f"{int((z != z2).sum())} zero-points differ"
    assert steps == hqq_steps(w, bits, gs)


def test_same_as_hqq_large(affine_capi):
    """Several of torch's top-level summation chunks (131 072 values with AVX2):
    lowbit sums them on two threads and joins them in torch's order."""
    w = weights("outliers", 512, 1024, seed=7)
    q, s, z = theirs(w, 4, 64)
    q2, s2, z2, _ = ours(affine_capi, w, 4, 64)
    assert np.array_equal(q, q2) and np.array_equal(s.view(np.int32), s2.view(np.int32))
    assert np.array_equal(z.view(np.int32), z2.view(np.int32))


@pytest.mark.parametrize("fmt", ["hqq-4b-g64", "hqq-3b-g64", "hqq-2b-g32", "hqq-8b-g128", "hqq-1b-g64"])
def test_checkpoint_is_hqqlinear_state_dict(tmp_path, fmt):
    """`lowbit quantize --format hqq-…` writes, per linear layer, the tensors
    hqq's own HQQLinear (what transformers' HQQ loader builds) holds for the
    same fp16 weights, byte for byte; HQQLinear.load_state_dict reads the file
    and dequantizes it to the same matrix."""
    import os
    import subprocess

    from hqq.core.quantize import BaseQuantizeConfig, HQQLinear
    from safetensors.numpy import save_file
    from safetensors.torch import load_file

    cli = os.environ.get("LOWBIT_CLI", "")
    if not cli or not os.path.exists(cli):
        pytest.fail("LOWBIT_CLI must point at the built lowbit program")
    bits, gs = int(fmt.split("-")[1][:-1]), int(fmt.split("-g")[1])
    rng = np.random.default_rng(bits)
    layers = {"model.layers.0.self_attn.q_proj": (128, 256), "model.layers.0.mlp.down_proj": (256, 512)}
    tensors = {name + ".weight": weights("outliers", *shape, seed=i).astype(np.float16)
               for i, (name, shape) in enumerate(layers.items())}
    tensors["lm_head.weight"] = rng.normal(0, 0.02, (64, 256)).astype(np.float16)
    save_file(tensors, str(tmp_path / "in.safetensors"))
    r = subprocess.run([cli, "quantize", str(tmp_path / "in.safetensors"), str(tmp_path / "out.safetensors"),
                        "--format", fmt], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert '"quant_method": "hqq"' in r.stdout
    ours = load_file(str(tmp_path / "out.safetensors"))
    assert "lm_head.weight" in ours
    torch.set_num_threads(1)
    for name, (rows, cols) in layers.items():
        lin = torch.nn.Linear(cols, rows, bias=False, dtype=torch.float16)
        lin.weight.data = torch.from_numpy(tensors[name + ".weight"])
        ref = HQQLinear(lin, BaseQuantizeConfig(nbits=bits, group_size=gs), compute_dtype=torch.float16,
                        device="cpu")
        want = ref.state_dict()
        got = {k[len(name) + 1:]: v for k, v in ours.items() if k.startswith(name + ".")}
        assert set(got) == set(want), set(got) ^ set(want)
        for key, v in want.items():
            assert got[key].dtype == v.dtype and got[key].shape == v.shape, key
            assert torch.equal(got[key], v), key
        back = HQQLinear(None, None, compute_dtype=torch.float16, device="cpu")
        back.load_state_dict(got)
        assert torch.equal(back.dequantize(), ref.dequantize())
