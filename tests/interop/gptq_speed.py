"""GPTQ's time on one layer, llm-compressor's beside lowbit's, in one run.

llm-compressor's side is what its GPTQModifier does for a layer: the
memoryless min-max observer and compressed-tensors' calculate_qparams, the
Hessian 2 X^T X (torch), then llmcompressor.modifiers.gptq.gptq_quantize.
quantize_weight (actorder static, blocks of 128, damping 0.01). lowbit's side
is the whole `lowbit quantize --format ct-w4a16 --calib` program on the same
weights and inputs: reading both files, the Hessian, GPTQ, the error report
and writing the checkpoint. Each on one torch/lowbit thread and on two.

Run in the compressed-tensors venv `./dev.sh interop` builds, e.g.
  LOWBIT_CLI=build/bin/lowbit LOWBIT_LLMCOMPRESSOR_SRC=~/.cache/lowbit/llmcompressor-0.14.0.1 \\
    ~/.cache/lowbit/venv-*-ct0.20.1/bin/python tests/interop/gptq_speed.py [--rows 4096 --cols 4096 --tokens 2048]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import torch
import safetensors.torch as st

sys.path.insert(0, os.path.dirname(__file__))
from test_ct import QuantizationArgs, calculate_qparams, calib_layer, llmc_gptq, observe  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=4096)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--tokens", type=int, default=2048)
    p.add_argument("--repeat", type=int, default=2)
    a = p.parse_args()
    cli = os.environ.get("LOWBIT_CLI", "")
    if not os.path.exists(cli):
        sys.exit("LOWBIT_CLI must point at the built lowbit program")
    quantize_weight = llmc_gptq()
    w, x = calib_layer(a.rows, a.cols, a.tokens, torch.bfloat16, 7)
    args = QuantizationArgs(num_bits=4, type="int", symmetric=True, dynamic=False, actorder="static",
                            strategy="group", group_size=128)

    def theirs():
        scale, zp = calculate_qparams(*observe(w, args), quantization_args=args)
        xs = (2 ** 0.5) * x.t()
        quantize_weight(w.float()[None].clone(), (xs @ xs.t())[None], scale[None], zp[None], None, args, 128, 0.01)

    with tempfile.TemporaryDirectory() as d:
        name = "model.layers.0.mlp.down_proj"
        st.save_file({f"{name}.weight": w.contiguous()}, os.path.join(d, "model.safetensors"))
        st.save_file({name: x.contiguous()}, os.path.join(d, "calib.safetensors"))

        def ours(threads):
            r = subprocess.run([cli, "quantize", os.path.join(d, "model.safetensors"), os.path.join(d, "out.safetensors"),
                                "--format", "ct-w4a16", "--calib", os.path.join(d, "calib.safetensors"), "--threads",
                                str(threads)], capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(r.stderr)

        print(f"GPTQ, {a.rows} x {a.cols} bf16, {a.tokens} tokens, 4-bit groups of 128, symmetric, actorder static "
              f"(best of {a.repeat}, seconds)")
        print(f"{'threads':>8} {'llm-compressor':>15} {'lowbit program':>15} {'ratio':>7}")
        for threads in (1, 2):
            torch.set_num_threads(threads)
            best = {}
            for what, fn in (("theirs", theirs), ("ours", lambda: ours(threads))):
                times = []
                for _ in range(a.repeat):
                    t0 = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - t0)
                best[what] = min(times)
            print(f"{threads:>8} {best['theirs']:>15.2f} {best['ours']:>15.2f} {best['theirs'] / best['ours']:>6.1f}x")


if __name__ == "__main__":
    main()
