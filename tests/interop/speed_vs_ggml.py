"""Quantize speed of lowbit against ggml's own ggml_quantize_chunk, per type.

Both run single-threaded in this process on the same N(0,1) matrix (and the
same importance matrix with --imatrix); the bytes are compared, and the best
of --repeat timings is kept (a shared machine is noisy, the minimum is not).

    LOWBIT_GGML_CAPI=build/tests/interop/libggml_capi.so \\
    LOWBIT_REF_GGML=build/ref-ggml/build/src/libggml-base.so \\
        build/venv/bin/python tests/interop/speed_vs_ggml.py [--rows 1024 --cols 4096] [--imatrix]

LOWBIT_ARCH picks lowbit's instruction set. Exit status 1 if any bytes differ.
"""
import argparse
import ctypes
import os
import sys
import time

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
         T.IQ4_NL, T.IQ4_XS, T.TQ1_0, T.TQ2_0, T.MXFP4]
USES_IMATRIX = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS}


def load(var):
    path = os.environ.get(var)
    if not path or not os.path.exists(path):
        sys.exit(f"{var} must point at the built library (see the docstring)")
    return ctypes.CDLL(path)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--imatrix", action="store_true", help="pass an importance matrix (types that read one)")
    ap.add_argument("--types", default="", help="comma-separated names (Q4_0,Q3_K,...), default all")
    args = ap.parse_args()

    lowbit = load("LOWBIT_GGML_CAPI")
    lowbit.lowbit_ggml_quantize.restype = ctypes.c_size_t
    lowbit.lowbit_ggml_quantize.argtypes = [ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_void_p]
    ggml = load("LOWBIT_REF_GGML")
    ggml.ggml_quantize_chunk.restype = ctypes.c_size_t
    ggml.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]

    rows, cols = args.rows, args.cols
    x = np.random.default_rng(42).standard_normal((rows, cols)).astype(np.float32)
    im = np.random.default_rng(43).uniform(0.01, 10.0, cols).astype(np.float32)
    types = [T[n.strip().upper()] for n in args.types.split(",")] if args.types else TYPES
    if args.imatrix:
        types = [t for t in types if t in USES_IMATRIX]

    print(f"{rows} x {cols}, best of {args.repeat}, single thread, imatrix={'yes' if args.imatrix else 'no'}, "
          f"LOWBIT_ARCH={os.environ.get('LOWBIT_ARCH', '(best)')}")
    print(f"{'type':8} {'ggml Mw/s':>10} {'lowbit Mw/s':>12} {'ratio':>7}  bytes equal")
    failed = False
    for t in types:
        bs, ts = quants.GGML_QUANT_SIZES[t]
        nbytes = rows * cols // bs * ts
        ref = np.zeros(nbytes, np.uint8)
        ours = np.full(nbytes, 0xAA, np.uint8)
        imp = im.ctypes.data if args.imatrix else None

        def run_ggml():
            ggml.ggml_quantize_chunk(int(t), x.ctypes.data, ref.ctypes.data, 0, rows, cols, imp)

        def run_lowbit():
            if lowbit.lowbit_ggml_quantize(int(t), x.ctypes.data, ours.ctypes.data, rows, cols, imp) != nbytes:
                raise RuntimeError(f"lowbit_ggml_quantize failed for {t.name}")

        # Alternate so that both see the same machine state.
        tg = tl = float("inf")
        for _ in range(args.repeat):
            tg = min(tg, timed(run_ggml))
            tl = min(tl, timed(run_lowbit))
        equal = bool(np.array_equal(ref, ours))
        failed |= not equal
        mw = rows * cols * 1e-6
        print(f"{t.name:8} {mw / tg:10.1f} {mw / tl:12.1f} {tg / tl:6.1f}x  {'yes' if equal else 'NO'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
