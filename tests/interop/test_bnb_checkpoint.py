"""`lowbit quantize IN.safetensors OUT.safetensors --format ...` against
bitsandbytes: the output has transformers' bnb state-dict layout, loads
through bitsandbytes' own loading path (Params4bit.from_prequantized, the call
transformers makes; Linear8bitLt.load_state_dict), decodes to exactly the values
lowbit decodes, and with --rules cpu holds the bytes bitsandbytes writes.

Environment: LOWBIT_CLI (the lowbit program), LOWBIT_BNB_CAPI.
"""
import ctypes
import json
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch (CPU) is not installed in this venv")
bnb = pytest.importorskip("bitsandbytes", reason="bitsandbytes is not installed in this venv")
st_torch = pytest.importorskip("safetensors.torch")
F = bnb.functional

CLI = os.environ.get("LOWBIT_CLI", "")
P = ctypes.c_void_p


def lowbit(*args, check=True):
    if not CLI or not os.path.exists(CLI):
        pytest.fail("LOWBIT_CLI must point at the built lowbit program")
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, check=check)


LINEAR = {
    "model.layers.0.self_attn.q_proj.weight": (128, 256),
    "model.layers.0.mlp.down_proj.weight": (96, 352),
    "model.layers.0.mlp.odd.weight": (5, 7),  # 35 elements: an odd count and a short last block
}
KEPT = {
    "model.embed_tokens.weight": (300, 256),
    "lm_head.weight": (300, 256),
    "model.layers.0.input_layernorm.weight": (256,),
    "model.layers.0.self_attn.q_proj.bias": (128,),
}


@pytest.fixture(scope="module", params=[torch.bfloat16, torch.float16, torch.float32])
def checkpoint(request, tmp_path_factory):
    g = torch.Generator().manual_seed(1)
    sd = {}
    for name, shape in {**LINEAR, **KEPT}.items():
        sd[name] = (torch.randn(shape, generator=g) * 0.05).to(request.param)
    path = tmp_path_factory.mktemp("ckpt") / "model.safetensors"
    st_torch.save_file(sd, str(path), metadata={"format": "pt"})
    return path, sd


@pytest.mark.parametrize("fmt", ["nf4-b64-dq", "fp4-b64-dq", "nf4-b32", "fp4-b4096", "nf4-b128-dq"])
def test_4bit_checkpoint_loads_in_bitsandbytes(tmp_path, checkpoint, bnb_capi, fmt):
    src, sd = checkpoint
    out = tmp_path / "out.safetensors"
    r = lowbit("quantize", src, out, "--format", fmt, "--rules", "cpu", "--threads", "2")
    assert "3 quantized, 4 kept" in r.stdout, r.stdout
    q = st_torch.load_file(str(out))
    qt, bs, nested = fmt[:3], int(fmt.split("-")[1][1:]), fmt.endswith("-dq")
    for name in KEPT:
        assert torch.equal(q[name], sd[name]), f"{name} was not copied unchanged"
    for name, shape in LINEAR.items():
        w = sd[name]
        n = w.numel()
        nb = -(-n // bs)
        stats = {k[len(name) + 1:]: v for k, v in q.items() if k.startswith(name + ".")}
        want = {"absmax", "quant_map", f"quant_state.bitsandbytes__{qt}"}
        if nested:
            want |= {"nested_absmax", "nested_quant_map"}
        assert set(stats) == want
        assert q[name].dtype == torch.uint8 and tuple(q[name].shape) == ((n + 1) // 2, 1)
        assert stats["absmax"].dtype == (torch.uint8 if nested else torch.float32) and stats["absmax"].numel() == nb
        # The JSON bitsandbytes itself packs for this state.
        meta = json.loads(bytes(stats[f"quant_state.bitsandbytes__{qt}"].tolist()))
        assert meta["shape"] == list(shape) and meta["blocksize"] == bs and meta["quant_type"] == qt
        assert meta["dtype"] == str(w.dtype).replace("torch.", "")
        # What bitsandbytes writes for the same tensor on this machine.
        ref_packed, ref_state = F.quantize_4bit(w, blocksize=bs, quant_type=qt, compress_statistics=nested)
        assert torch.equal(q[name].view(-1), ref_packed.view(-1)), f"{name}: packed codes differ from bitsandbytes"
        if not nested:
            assert torch.equal(stats["absmax"], ref_state.absmax)
        ref_json = ref_state.as_dict(packed=True)[f"quant_state.bitsandbytes__{qt}"]
        ref_meta = json.loads(bytes(ref_json.tolist()))
        if nested and ref_meta["nested_offset"] != meta["nested_offset"]:
            # torch's float32 mean may differ in the last bit (its summation order).
            assert abs(ref_meta["nested_offset"] - meta["nested_offset"]) <= 4 * np.spacing(np.float32(meta["nested_offset"]))
            ref_meta["nested_offset"] = meta["nested_offset"]
        assert meta == ref_meta and list(meta) == list(ref_meta)
        if not nested or ref_state.offset.item() == meta["nested_offset"]:
            assert bytes(stats[f"quant_state.bitsandbytes__{qt}"].tolist()) == bytes(ref_json.tolist())
        # transformers' loading path.
        p = bnb.nn.Params4bit.from_prequantized(data=q[name], quantized_stats=dict(stats), requires_grad=False,
                                                device="cpu")
        if shape[1] % bs == 0 or shape[1] % 2:
            theirs = F.dequantize_4bit(p.data, p.quant_state).float().view(-1).numpy()
        else:
            # bitsandbytes 0.50.2's C++ CPU kernel indexes absmax per row
            # (ceil(cols / blocksize) blocks a row), which is wrong when blocks
            # cross rows (flattened blocks, as quantize_4bit makes them); its
            # PyTorch kernel is right, and is the reference here.
            from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
            qs = p.quant_state
            absmax = F.dequantize_blockwise(qs.absmax, qs.state2) + qs.offset if qs.nested else qs.absmax
            theirs = _dequantize_4bit_compute(p.data.view(-1), absmax, qs.code, bs, qs.shape, qs.dtype)
            theirs = theirs.float().view(-1).numpy()
        packed = q[name].view(-1).numpy()
        ours = np.zeros(n, np.float32)
        if nested:
            args = (None, stats["absmax"].numpy().ctypes.data_as(P), stats["nested_absmax"].numpy().ctypes.data_as(P),
                    meta["nested_offset"])
        else:
            args = (stats["absmax"].numpy().ctypes.data_as(P), None, None, 0.0)
        assert bnb_capi.lowbit_bnb_dequantize_4bit(packed.ctypes.data_as(P), n, 1 if qt == "fp4" else 0, bs, *args, 0,
                                               ours.ctypes.data_as(P))
        # bitsandbytes decodes to the checkpoint's dtype; ours in float32 rounds to the same.
        ours_t = torch.from_numpy(ours).to(w.dtype).float().numpy()
        assert np.array_equal(ours_t, theirs), f"{name}: decoded values differ"


def test_int8_checkpoint_loads_in_linear8bitlt(tmp_path, checkpoint):
    src, sd = checkpoint
    out = tmp_path / "out8.safetensors"
    lowbit("quantize", src, out, "--format", "llm-int8")
    q = st_torch.load_file(str(out))
    for name, shape in LINEAR.items():
        base = name[: -len("weight")]
        cb, scb, _ = F.int8_vectorwise_quant(sd[name].to(torch.float16))
        assert q[name].dtype == torch.int8 and torch.equal(q[name], cb), f"{name}: int8 weight differs"
        assert torch.equal(q[base + "SCB"], scb), f"{name}: SCB differs"
        assert q[base + "weight_format"].item() == 0
        # bitsandbytes' LLM.int8() product with our CB / SCB, against the fp32 product.
        x = torch.randn(4, shape[1])
        x[1, 0] = 8.0  # an outlier column
        ca, sca, outliers = F.int8_vectorwise_quant(x.clone(), threshold=6.0)
        y, _ = torch.ops.bitsandbytes.int8_mixed_scaled_mm.default(x, ca, q[name], sca, q[base + "SCB"], outliers, None)
        ref = x @ sd[name].float().t()
        assert torch.allclose(y.float(), ref, rtol=0.05, atol=0.05 * ref.abs().max().item())


def test_bad_format_and_corrupt_input_are_clean_errors(tmp_path, checkpoint):
    src, _ = checkpoint
    r = lowbit("quantize", src, tmp_path / "x.safetensors", "--format", "nf4-b48", check=False)
    assert r.returncode != 0 and "nf4-b48" in r.stderr
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(src.read_bytes()[:1000])
    r = lowbit("quantize", bad, tmp_path / "y.safetensors", "--format", "nf4-b64-dq", check=False)
    assert r.returncode != 0 and "lowbit" in r.stderr.lower() or "safetensors" in r.stderr
    assert not (tmp_path / "y.safetensors").exists()
