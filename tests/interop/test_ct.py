"""`lowbit quantize --format ct-...` against compressed-tensors itself.

The checkpoint's tensors are byte for byte what compressed-tensors' own
pack-quantized compressor writes for the same weights, after the scale and
zero point come from its calculate_qparams on llm-compressor's min-max weight
observer (llm-compressor's QuantizationModifier, round to nearest), under
both rules: `--rules cpu` is its eager path (the division in the model's
dtype), `--rules cuda` its Triton kernel's float32 division (0.18 and later
on a GPU; emulated, as the kernel computes, by handing the eager path the
weight in float32). Then transformers' loading path (CompressedTensorsConfig,
ModelCompressor.from_compression_config, apply_quantization_config,
compress_model, the state dict loaded strictly, decompress_model) reads the
file and config.json to compressed-tensors' own fake-quantized weights.

Run with a Python that has compressed-tensors and transformers (dev.sh
builds one over the interop venv); skipped elsewhere.
Environment: LOWBIT_CLI (the lowbit program).
"""
import copy
import json
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ct = pytest.importorskip("compressed_tensors")
st = pytest.importorskip("safetensors.torch")
tq = pytest.importorskip("transformers.utils.quantization_config")

from compressed_tensors.compressors import BaseCompressor, ModelCompressor  # noqa: E402
from compressed_tensors.quantization import (  # noqa: E402
    QuantizationArgs, QuantizationScheme, apply_quantization_config)
from compressed_tensors.quantization.lifecycle.forward import fake_quantize  # noqa: E402
from compressed_tensors.quantization.utils import calculate_qparams  # noqa: E402

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# name -> (out, in); up_proj's 200 columns do not divide into groups of 128 or 64.
LAYERS = {
    "model.layers.0.self_attn.q_proj": (64, 256),
    "model.layers.0.self_attn.o_proj": (40, 256),
    "model.layers.0.mlp.up_proj": (96, 200),
    "model.layers.0.mlp.down_proj": (48, 384),
}


def lowbit_cli(*args):
    cli = os.environ.get("LOWBIT_CLI", "")
    if not cli or not os.path.exists(cli):
        pytest.fail("LOWBIT_CLI must point at the built lowbit program")
    return subprocess.run([cli, *map(str, args)], capture_output=True, text=True)


def weights(out, inp, seed):
    """A trained layer's weights with the groups that test the rule's edges."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, inp, generator=g) * 0.02
    w[0, :64] = 0.0                      # an all-zero group (at 64 or less)
    w[1, :] = w[1, :].abs() + 0.01       # all positive: the range is widened to 0
    w[2, :] = -w[2, :].abs() - 0.001     # all negative
    w[3, 5] = -0.3                       # a negative absmax
    w[4, 7] = 0.25                       # a positive outlier
    idx = torch.randperm(out * inp, generator=g)[: out * inp // 500]
    w.view(-1)[idx] = torch.randn(idx.numel(), generator=g) * 0.2
    return w


def model_tensors(dtype, seed=0):
    t = {f"{n}.weight": weights(o, i, seed + k) for k, (n, (o, i)) in enumerate(LAYERS.items())}
    t["model.layers.0.self_attn.o_proj.bias"] = torch.randn(40) * 0.1
    t["lm_head.weight"] = torch.randn(32, 256) * 0.02
    t["model.embed_tokens.weight"] = torch.randn(100, 256) * 0.02
    t["model.norm.weight"] = torch.ones(256)
    return {k: v.to(dtype).contiguous() for k, v in t.items()}


def scheme_args(bits, group, sym):
    strat = dict(strategy="group", group_size=group) if group else dict(strategy="channel")
    return QuantizationArgs(num_bits=bits, type="int", symmetric=sym, dynamic=False, **strat)


def observe(w, args):
    """llm-compressor's memoryless min-max weight observer."""
    if args.strategy == "channel":
        v = w.unsqueeze(-2).unsqueeze(0)
    else:
        v = w.unflatten(-1, (-1, args.group_size)).unsqueeze(0)
    return torch.amin(v, dim=(0, -1)), torch.amax(v, dim=(0, -1))


def theirs(w, args, rules):
    """compressed-tensors' compressor on llm-compressor's RTN params."""
    scale, zp = calculate_qparams(*observe(w, args), quantization_args=args)
    x = w if rules == "cpu" else w.float()
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    sd = {"weight": x, "weight_scale": scale, "weight_zero_point": zp}
    packed = BaseCompressor.get_value_from_registry("pack-quantized").compress(sd, scheme)
    return packed, fake_quantize(x=x, scale=scale, zero_point=zp, args=args).to(w.dtype)


def build(dtype):
    root = torch.nn.Module()
    for name, (o, i) in list(LAYERS.items()) + [("lm_head", (32, 256))]:
        *path, last = name.split(".")
        m = root
        for p in path:
            if not hasattr(m, p):
                setattr(m, p, torch.nn.Module())
            m = getattr(m, p)
        setattr(m, last, torch.nn.Linear(i, o, bias=name.endswith("o_proj"), dtype=dtype))
    return root


CASES = [  # format, bits, group (0: channel), symmetric
    ("ct-w4a16", 4, 128, True),
    ("ct-w4a16-asym", 4, 128, False),
    ("ct-w8a16", 8, 128, True),
    ("ct-4b-g64-asym", 4, 64, False),
    ("ct-8b-ch", 8, 0, True),
    ("ct-4b-ch-asym", 4, 0, False),
    ("ct-2b-g64-asym", 2, 64, False),
    ("ct-3b-g64", 3, 64, True),
]


@pytest.mark.parametrize("rules", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("fmt,bits,group,sym", CASES)
def test_checkpoint_is_what_compressed_tensors_writes_and_transformers_loads(tmp_path, fmt, bits, group, sym, dtype,
                                                                             rules):
    tdt = DTYPES[dtype]
    src = model_tensors(tdt)
    st.save_file(src, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["Tiny"], "torch_dtype": str(tdt)[6:]}))
    (tmp_path / "out").mkdir()
    r = lowbit_cli("quantize", tmp_path / "model.safetensors", tmp_path / "out/model.safetensors", "--format", fmt,
                   "--rules", rules)
    assert r.returncode == 0, r.stderr
    ours = st.load_file(tmp_path / "out/model.safetensors")
    block = json.loads((tmp_path / "out/config.json").read_text())["quantization_config"]
    args = scheme_args(bits, group, sym)

    expected = {}
    kept = []
    for name, (o, i) in LAYERS.items():
        if group and i % group:
            kept.append(name)
            assert torch.equal(ours[f"{name}.weight"], src[f"{name}.weight"])
            continue
        packed, expected[name] = theirs(src[f"{name}.weight"], args, rules)
        keys = {k for k in ours if k.startswith(name + ".weight")}
        assert keys == {f"{name}.{k}" for k in packed}, name
        for k, v in packed.items():
            mine = ours[f"{name}.{k}"]
            assert mine.dtype == v.dtype and mine.shape == v.shape, (name, k, mine.dtype, mine.shape)
            assert torch.equal(mine, v), f"{name}.{k}: {(mine != v).sum().item()} of {v.numel()} differ"
    for k in ("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight",
              "model.layers.0.self_attn.o_proj.bias"):
        assert torch.equal(ours[k], src[k]), k
    assert block["ignore"] == ["lm_head", *kept]

    # transformers' loading path, through config.json's block.
    cfg = tq.CompressedTensorsConfig.from_dict(copy.deepcopy(block))
    mc = ModelCompressor.from_compression_config(cfg)
    model = build(tdt)
    apply_quantization_config(model, copy.deepcopy(mc.quantization_config), run_compressed=False)
    mc.compress_model(model=model)
    state = {k: v for k, v in ours.items() if not k.startswith("model.embed_tokens") and k != "model.norm.weight"}
    model.load_state_dict(state, strict=True)
    mc.decompress_model(model)
    for name, (o, i) in LAYERS.items():
        got = model.get_submodule(name).weight.detach()
        want = expected.get(name, src[f"{name}.weight"])
        assert got.dtype == tdt and torch.equal(got, want), f"{name}: {(got != want).sum().item()} differ"


def test_cpu_and_cuda_rules_differ_only_in_codes():
    """The two rules are two real outputs: the same scales, some codes apart."""
    w = weights(256, 512, 7).to(torch.bfloat16)
    args = scheme_args(8, 128, True)
    a, _ = theirs(w, args, "cpu")
    b, _ = theirs(w, args, "cuda")
    assert torch.equal(a["weight_scale"], b["weight_scale"])
    assert not torch.equal(a["weight_packed"], b["weight_packed"])


def test_inspect_names_the_layers(tmp_path):
    st.save_file(model_tensors(torch.bfloat16), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "out").mkdir()
    r = lowbit_cli("quantize", tmp_path / "model.safetensors", tmp_path / "out/model.safetensors", "--format",
                   "ct-w4a16-asym")
    assert r.returncode == 0, r.stderr
    r = lowbit_cli("inspect", tmp_path / "out/model.safetensors")
    assert r.returncode == 0, r.stderr
    assert "compressed-tensors layer model.layers.0.mlp.down_proj: ct-4b-g128-asym (pack-quantized, BF16 scales), " \
           "48 x 384" in r.stdout


# llm-compressor's GPTQ (llmcompressor.modifiers.gptq.gptq_quantize.quantize_weight, the function its
# GPTQModifier calls), loaded from its wheel's files: the package root imports far more than the function needs.
def llmc_gptq():
    src = os.environ.get("LOWBIT_LLMCOMPRESSOR_SRC", "")
    root = os.path.join(src, "llmcompressor")
    if not src or not os.path.isdir(os.path.join(root, "modifiers", "gptq")):
        pytest.skip("LOWBIT_LLMCOMPRESSOR_SRC (llm-compressor's files) is not set")
    import importlib.util
    import sys
    import types
    for name in ("llmcompressor", "llmcompressor.modifiers", "llmcompressor.modifiers.gptq"):
        if name not in sys.modules:
            m = types.ModuleType(name)
            m.__path__ = [os.path.join(src, *name.split("."))]
            sys.modules[name] = m

    def load(name):
        mod = "llmcompressor.modifiers.gptq." + name
        if mod not in sys.modules:
            spec = importlib.util.spec_from_file_location(mod, os.path.join(root, "modifiers", "gptq", name + ".py"))
            m = importlib.util.module_from_spec(spec)
            sys.modules[mod] = m
            spec.loader.exec_module(m)
        return sys.modules[mod]

    load("helpers")
    return load("gptq_quantize").quantize_weight


def calib_layer(rows, cols, tokens, dtype, seed):
    """Weights with outliers; inputs correlated as real activations are (low rank plus noise, a few channels x15)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.02
    w.view(-1)[torch.randperm(rows * cols, generator=g)[: rows * cols // 500]] *= 8
    x = torch.randn(tokens, 16, generator=g) @ torch.randn(16, cols, generator=g) + 0.5 * torch.randn(tokens, cols,
                                                                                                      generator=g)
    x[:, torch.randperm(cols, generator=g)[:6]] *= 15
    return w.to(dtype), x


@pytest.mark.parametrize("fmt,bits,group,sym,dtype,rules,act_order", [
    ("ct-w4a16", 4, 128, True, "bf16", "cuda", True),
    ("ct-w4a16-asym", 4, 128, False, "bf16", "cpu", True),
    ("ct-w8a16", 8, 128, True, "bf16", "cpu", True),
    ("ct-4b-g64", 4, 64, True, "fp16", "cuda", False),
    ("ct-4b-ch-asym", 4, 0, False, "fp32", "cuda", True),
])
def test_gptq_is_llm_compressors_gptq(tmp_path, fmt, bits, group, sym, dtype, rules, act_order):
    """`--calib` runs GPTQ as llm-compressor does: the same scales and zero points (its observer, fixed before
    GPTQ), columns by decreasing Hessian diagonal ("static"), compressed-tensors' fake_quantize dequantizing in the
    model's dtype, the result stored in that dtype and compressed. The codes agree but where float sums in another
    order tip a rounding (under 0.05% of them); the output errors agree to 0.5% (0.2% seen)."""
    quantize_weight = llmc_gptq()
    torch.set_num_threads(1)
    tdt = DTYPES[dtype]
    rows, cols, tokens = 256, 512, 2048
    w, x = calib_layer(rows, cols, tokens, tdt, 3)
    name = "model.layers.0.mlp.down_proj"
    st.save_file({f"{name}.weight": w.contiguous(), "lm_head.weight": torch.zeros(8, cols, dtype=tdt)},
                 tmp_path / "model.safetensors")
    st.save_file({name: x.contiguous()}, tmp_path / "calib.safetensors")
    r = lowbit_cli("quantize", tmp_path / "model.safetensors", tmp_path / "out.safetensors", "--format", fmt,
                   "--calib", tmp_path / "calib.safetensors", "--rules", rules, "--threads", 2,
                   *([] if act_order else ["--no-act-order"]))
    assert r.returncode == 0, r.stderr
    ours = {k[len(name) + 1:]: v for k, v in st.load_file(tmp_path / "out.safetensors").items()
            if k.startswith(name + ".")}

    args = QuantizationArgs(num_bits=bits, type="int", symmetric=sym, dynamic=False,
                            actorder="static" if act_order else None,
                            **(dict(strategy="group", group_size=group) if group else dict(strategy="channel")))
    scale, zp = calculate_qparams(*observe(w, args), quantization_args=args)
    xs = (2 ** 0.5) * x.t()  # its Hessian: the inputs as one sample
    wq, _, fallback = quantize_weight(w.float()[None].clone(), (xs @ xs.t())[None], scale[None], zp[None], None, args,
                                      128, 0.01)
    assert not fallback.any()
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    comp = BaseCompressor.get_value_from_registry("pack-quantized")
    wq = wq[0].to(tdt)  # GPTQModifier stores the result in the model's dtype; the checkpoint compresses it
    theirs = comp.compress({"weight": wq if rules == "cpu" else wq.float(), "weight_scale": scale,
                            "weight_zero_point": zp}, scheme)
    assert set(ours) == set(theirs)
    assert torch.equal(ours["weight_scale"], theirs["weight_scale"])
    if not sym:
        assert torch.equal(ours["weight_zero_point"], theirs["weight_zero_point"])
    from compressed_tensors.compressors.pack_quantized.helpers import unpack_from_int32
    a = unpack_from_int32(ours["weight_packed"], bits, torch.Size([rows, cols]))
    b = unpack_from_int32(theirs["weight_packed"], bits, torch.Size([rows, cols]))
    differ = (a != b).sum().item()
    assert differ <= a.numel() // 1000, f"{differ} of {a.numel()} codes differ"

    def err(packed):
        wd = comp.decompress({**packed, "weight_shape": torch.tensor([rows, cols])}, scheme)["weight"]
        return ((x @ (w.float() - wd.float()).t()) ** 2).sum().item()

    e_ours, e_theirs = err(ours), err(theirs)
    print(f"{fmt} {dtype} {rules}: {differ} of {a.numel()} codes differ; output error {e_ours:.6e} vs "
          f"{e_theirs:.6e} ({e_ours / e_theirs:.5f})")
    assert abs(e_ours / e_theirs - 1) <= 5e-3
