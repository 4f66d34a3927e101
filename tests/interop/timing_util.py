"""What the timing scripts (speed_vs_ggml.py, gemv_vs_ggml.py) share."""
import ctypes
import os
import sys

import numpy as np


def load(var):
    """The shared library the environment variable `var` names (exits when it is missing)."""
    path = os.environ.get(var)
    if not path or not os.path.exists(path):
        sys.exit(f"{var} must point at the built library (see the docstring)")
    return ctypes.CDLL(path)


def aligned(nbytes):
    """A 64-byte aligned uint8 buffer of nbytes."""
    raw = np.empty(nbytes + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    return raw[off:off + nbytes]
