"""Quantize speed of lowbit against ggml's own ggml_quantize_chunk, per type.

Both run in this process on the same N(0,1) matrix (64-byte aligned, and the
same importance matrix with --imatrix), on one thread and on --threads
threads (row ranges, as llama-quantize and `lowbit quantize` split a tensor;
ggml's calls run on Python threads, which ctypes lets run in parallel). The
bytes are compared. The four runs of a type alternate, and the best of
--repeat rounds is kept (a shared machine is noisy, the minimum is not). The ratios are against ggml on one
thread (its reference quantizer) and against ggml on the same threads.

    LOWBIT_GGML_CAPI=build/tests/interop/libggml_capi.so \\
    LOWBIT_REF_GGML=build/ref-ggml/build/src/libggml-base.so \\
        build/venv/bin/python tests/interop/speed_vs_ggml.py [--rows 11008 --cols 4096] [--threads 2]
            [--imatrix] [--source f16] [--types Q4_0,Q4_1]

--source f16 (or bf16) hands lowbit the matrix in that type (as `lowbit
quantize` gets an F16 tensor; the f32 values are the f16 ones, so the bytes
still compare), while ggml keeps its f32 input. LOWBIT_ARCH picks lowbit's
instruction set. Exit status 1 if any bytes differ.
"""
import argparse
import ctypes
import os
import sys
import threading
import time

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

from timing_util import aligned, load

TYPES = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K,
         T.IQ4_NL, T.IQ4_XS, T.TQ1_0, T.TQ2_0, T.MXFP4]
USES_IMATRIX = {T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS}
SOURCES = {"f32": 0, "f16": 1, "bf16": 30}  # ggml type ids


def ranges(rows, threads):
    """Row ranges in multiples of 16 rows, as lowbit's parallel_for splits them."""
    units = (rows + 15) // 16
    workers = max(1, min(threads, units))
    return [(units * w // workers * 16, min(rows, units * (w + 1) // workers * 16)) for w in range(workers)]


def on_threads(fn, rows, threads):
    parts = ranges(rows, threads)
    if len(parts) == 1:
        fn(*parts[0])
        return
    pool = [threading.Thread(target=fn, args=p) for p in parts[1:]]
    for t in pool:
        t.start()
    fn(*parts[0])
    for t in pool:
        t.join()


def best_times(fns, repeat, budget=6.0):
    """Best time of each of fns, run in turn (so that all see the same machine
    state) `repeat` times, or fewer rounds when a round takes long."""
    best = [float("inf")] * len(fns)
    t_start = time.perf_counter()
    for r in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
        if r >= 1 and time.perf_counter() - t_start > budget:
            break
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--imatrix", action="store_true", help="pass an importance matrix (types that read one)")
    ap.add_argument("--source", choices=sorted(SOURCES), default="f32", help="lowbit's input type")
    ap.add_argument("--types", default="", help="comma-separated names (Q4_0,Q3_K,...), default all")
    args = ap.parse_args()

    lowbit = load("LOWBIT_GGML_CAPI")
    lowbit.lowbit_ggml_quantize_rows.restype = ctypes.c_size_t
    lowbit.lowbit_ggml_quantize_rows.argtypes = [ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p, ctypes.c_void_p,
                                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_uint32]
    ggml = load("LOWBIT_REF_GGML")
    ggml.ggml_quantize_chunk.restype = ctypes.c_size_t
    ggml.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                         ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]

    rows, cols, nth = args.rows, args.cols, max(1, args.threads)
    x = aligned(rows * cols * 4).view(np.float32).reshape(rows, cols)
    x[:] = np.random.default_rng(42).standard_normal((rows, cols), dtype=np.float32)
    src_id = SOURCES[args.source]
    src = x
    if args.source != "f32":
        # lowbit gets the matrix in the narrow type; ggml the same values in f32.
        src = aligned(rows * cols * 2).view(np.uint16).reshape(rows, cols)
        if args.source == "f16":
            h = x.astype(np.float16)
            src[:] = h.view(np.uint16)
            x[:] = h.astype(np.float32)
        else:  # bf16, rounded to nearest even
            b = x.view(np.uint32)
            src[:] = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
            x[:] = (src.astype(np.uint32) << 16).view(np.float32)
    im = np.random.default_rng(43).uniform(0.01, 10.0, cols).astype(np.float32)
    types = [T[n.strip().upper()] for n in args.types.split(",")] if args.types else TYPES
    if args.imatrix:
        types = [t for t in types if t in USES_IMATRIX]

    print(f"{rows} x {cols}, best of {args.repeat}, 1 and {nth} threads, imatrix={'yes' if args.imatrix else 'no'}, "
          f"lowbit from {args.source}, LOWBIT_ARCH={os.environ.get('LOWBIT_ARCH', '(best)')}")
    print(f"{'':8} {'ggml Mw/s':>19} {'lowbit Mw/s':>19}  {'lowbit / ggml (1 thread)':>24} {'same threads':>13}  "
          f"bytes equal")
    print(f"{'type':8} {'1 thread':>9} {f'{nth} thr':>9} {'1 thread':>9} {f'{nth} thr':>9}  "
          f"{'1 thread':>11} {f'{nth} thr':>12} {f'{nth} thr':>13}")
    failed = False
    for t in types:
        bs, ts = quants.GGML_QUANT_SIZES[t]
        row_bytes = cols // bs * ts
        nbytes = rows * row_bytes
        ref = np.zeros(nbytes, np.uint8)
        ours = np.full(nbytes, 0xAA, np.uint8)
        imp = im.ctypes.data if args.imatrix else None

        def run_ggml(r0, r1):
            ggml.ggml_quantize_chunk(int(t), x.ctypes.data, ref.ctypes.data, r0 * cols, r1 - r0, cols, imp)

        def run_lowbit(threads):
            if lowbit.lowbit_ggml_quantize_rows(int(t), src_id, src.ctypes.data, ours.ctypes.data, rows, cols, imp,
                                                threads) != nbytes:
                raise RuntimeError(f"lowbit_ggml_quantize_rows failed for {t.name}")

        tg1, tgn, tl1, tln = best_times([lambda: run_ggml(0, rows), lambda: on_threads(run_ggml, rows, nth),
                                         lambda: run_lowbit(1), lambda: run_lowbit(nth)], args.repeat)
        equal = bool(np.array_equal(ref, ours))
        failed |= not equal
        mw = rows * cols * 1e-6
        print(f"{t.name:8} {mw / tg1:9.1f} {mw / tgn:9.1f} {mw / tl1:9.1f} {mw / tln:9.1f}  "
              f"{tg1 / tl1:10.1f}x {tg1 / tln:11.1f}x {tgn / tln:12.1f}x  {'yes' if equal else 'NO'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
