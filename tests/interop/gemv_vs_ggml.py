"""GEMV time of lowbit against ggml's own CPU kernels, per type, side by side.

W (--rows x --cols, N(0,1) quantized to each type; copies of it past 256 MiB
so that every pass reads W from memory) times M activation rows:

- ggml: ggml-cpu's from_float to the type's vec_dot_type, then its vec_dot
  for each W row and activation row (ggml_mul_mat's inner loop for a type
  without repacking), on row ranges of lowbit's parallel_for;
- lowbit int8: gemv_ggml on those same activation blocks (ggml's bytes);
- lowbit f32: gemv_ggml on the fp32 activations.

All three run in this process on the same matrix and thread count, in turn,
and the best of --repeat rounds is kept (a shared machine is noisy, the
minimum is not). The results are compared: lowbit's int8 path and ggml's
vec_dot differ only in the order of float additions.

    LOWBIT_GGML_CAPI=build/tests/interop/libggml_capi.so \\
    LOWBIT_REF_GGML_CPU=.../libggml-cpu.so \\
        build/venv/bin/python tests/interop/gemv_vs_ggml.py [--rows 11008 --cols 4096] [--m 1]
            [--threads 1] [--types Q4_0,Q4_K]

./dev.sh gemv-vs-ggml builds ggml's CPU backend with native flags (as
llama.cpp builds it for the machine it runs on) and runs this.
"""
import argparse
import ctypes
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

from timing_util import aligned, load

TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
         T.IQ4_NL, T.IQ4_XS, T.TQ1_0, T.TQ2_0, T.MXFP4]
# The activation blocks as ggml-cpu writes them.
ACTIVATION_SIZES = {T.Q8_0: (32, 34), T.Q8_1: (32, 36), T.Q8_K: (256, 292)}

FROM_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


class TraitsCpu(ctypes.Structure):
    _fields_ = [("from_float", FROM_FLOAT), ("vec_dot", ctypes.c_void_p), ("vec_dot_type", ctypes.c_int),
                ("nrows", ctypes.c_int64)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=11008)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--m", type=int, default=1, help="activation rows")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--types", default="", help="comma-separated names (Q4_0,Q4_K,...), default all")
    args = ap.parse_args()

    lowbit = load("LOWBIT_GGML_CAPI")
    lowbit.lowbit_ggml_quantize.restype = ctypes.c_size_t
    lowbit.lowbit_ggml_quantize.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_void_p]
    lowbit.lowbit_ggml_gemv_time.restype = ctypes.c_double
    lowbit.lowbit_ggml_gemv_time.argtypes = [ctypes.c_int, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_int64,
                                             ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
                                             ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                             ctypes.c_uint32, ctypes.c_int64]
    ggml = load("LOWBIT_REF_GGML_CPU")
    ggml.ggml_cpu_init.restype = None
    ggml.ggml_cpu_init()
    ggml.ggml_get_type_traits_cpu.restype = ctypes.POINTER(TraitsCpu)
    ggml.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]

    n, k, m, nth = args.rows, args.cols, args.m, max(1, args.threads)
    rng = np.random.default_rng(42)
    w = rng.standard_normal((n, k), dtype=np.float32)
    x = rng.standard_normal((m, k), dtype=np.float32)
    types = [T[s.strip().upper()] for s in args.types.split(",")] if args.types else TYPES

    print(f"W {n} x {k}, M {m}, {nth} thread(s), best of {args.repeat}, "
          f"LOWBIT_ARCH={os.environ.get('LOWBIT_ARCH', '(best)')}, ggml-cpu {os.environ['LOWBIT_REF_GGML_CPU']}")
    print(f"{'type':8} {'W MB':>7} {'ggml ms':>8} {'int8 ms':>8} {'f32 ms':>8} {'ggml GB/s':>10} {'int8 GB/s':>10} "
          f"{'ggml/int8':>10} {'ggml/f32':>9} {'max rel diff':>13}")
    failed = False
    for t in types:
        bs, ts = quants.GGML_QUANT_SIZES[t]
        w_bytes = n * (k // bs * ts)
        copies = max(1, -(-(256 << 20) // w_bytes))
        wq = aligned(copies * w_bytes)
        if lowbit.lowbit_ggml_quantize(int(t), w.ctypes.data, wq.ctypes.data, n, k, None) != w_bytes:
            sys.exit(f"lowbit_ggml_quantize failed for {t.name}")
        for c in range(1, copies):
            wq[c * w_bytes:(c + 1) * w_bytes] = wq[:w_bytes]
        traits = ggml.ggml_get_type_traits_cpu(int(t)).contents
        at = T(traits.vec_dot_type)
        abs_, ats = ACTIVATION_SIZES[at]
        x_row = k // abs_ * ats
        xq = aligned(m * x_row)
        from_float = ggml.ggml_get_type_traits_cpu(int(at)).contents.from_float
        for r in range(m):
            from_float(x[r].ctypes.data, xq.ctypes.data + r * x_row, k)

        ys = [np.zeros((m, n), np.float32) for _ in range(3)]
        best = [float("inf")] * 3
        order = [2, 0, 1]  # ggml, lowbit int8, lowbit f32
        for _ in range(args.repeat):
            for which in order:
                s = lowbit.lowbit_ggml_gemv_time(which, int(t), wq.ctypes.data, copies, w_bytes, n, k,
                                                 x.ctypes.data, xq.ctypes.data, m, ys[which].ctypes.data,
                                                 traits.vec_dot, nth, copies)
                if s < 0:
                    sys.exit(f"lowbit_ggml_gemv_time failed for {t.name}")
                best[which] = min(best[which], s)
        scale = np.abs(ys[2]).max() + 1e-30
        diff = float(np.abs(ys[0] - ys[2]).max() / scale)
        failed |= not diff < 1e-4
        tg, ti, tf = best[2], best[0], best[1]
        print(f"{t.name:8} {w_bytes / 1e6:7.1f} {tg * 1e3:8.3f} {ti * 1e3:8.3f} {tf * 1e3:8.3f} "
              f"{w_bytes / tg / 1e9:10.1f} {w_bytes / ti / 1e9:10.1f} {tg / ti:9.2f}x {tg / tf:8.2f}x "
              f"{diff:13.1e}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
