"""`lowbit quantize --format gptq-*` against GPTQ as the reference
implementation (IST-DASLab/gptq, gptq.py and quant.py) defines it, run here in
float64 with torch on the same Hessian; the checkpoint is unpacked by a reader
written from AutoGPTQ's documented layout (qweight packed along the input
dimension, qzeros along the output one, v1 zeros stored minus one and undone
as GPTQModel does, with whole-word arithmetic).

Environment: LOWBIT_CLI (the lowbit program, built with lowbit::calibration).
"""
import json
import os
import subprocess

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.numpy import load_file, save_file  # noqa: E402

CLI = os.environ.get("LOWBIT_CLI", "")


def lowbit(*args):
    if not CLI or not os.path.exists(CLI):
        pytest.fail("LOWBIT_CLI must point at the built lowbit program")
    r = subprocess.run([CLI, *map(str, args)], capture_output=True, text=True)
    if r.returncode != 0 and "made without" in r.stderr:
        pytest.skip("this lowbit was built without lowbit::calibration")
    assert r.returncode == 0, r.stderr
    return r.stdout


def correlated(rng, tokens, n):
    """Inputs as real activations are: low rank plus noise, a few loud channels."""
    x = 0.5 * rng.standard_normal((tokens, 8)) @ rng.standard_normal((8, n)) + 0.3 * rng.standard_normal((tokens, n))
    x[:, 3::61] *= 15
    return x.astype(np.float32)


def reference_gptq(w, h, bits, gs, sym, act_order, block=128, percdamp=0.01):
    """The reference algorithm in float64: codes [out, in], scales and zeros
    per output row and group (in quantization order), g_idx."""
    W = torch.tensor(w, dtype=torch.float64).clone()
    H = torch.tensor(h, dtype=torch.float64).clone()
    rows, cols = W.shape
    maxq = 2**bits - 1

    def fit(x):
        xmin = torch.clamp(x.min(1).values, max=0)
        xmax = torch.clamp(x.max(1).values, min=0)
        if sym:
            xmax = torch.maximum(xmin.abs(), xmax)
            xmin = torch.where(xmin < 0, -xmax, xmin)
        both = (xmin == 0) & (xmax == 0)
        xmin[both], xmax[both] = -1, 1
        s = (xmax - xmin) / maxq
        z = torch.full_like(s, (maxq + 1) / 2) if sym else torch.round(-xmin / s)
        return s, z

    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    perm = torch.argsort(torch.diag(H), descending=True, stable=True) if act_order else torch.arange(cols)
    W, H = W[:, perm], H[perm][:, perm]
    H += percdamp * torch.mean(torch.diag(H)) * torch.eye(cols, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    scales, zeros = [], []
    s = z = None
    if gs == 0:
        s, z = fit(W)
        scales, zeros = [s], [z]
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, E1 = W[:, i1:i2].clone(), torch.zeros(rows, i2 - i1, dtype=W.dtype)
        for i in range(i2 - i1):
            if gs and (i1 + i) % gs == 0:
                s, z = fit(W[:, i1 + i:i1 + i + gs])
                scales.append(s)
                zeros.append(z)
            w, d = W1[:, i], U[i1 + i, i1 + i]
            q = torch.clamp(torch.round(w / s) + z, 0, maxq)
            Q[:, i1 + i] = q
            err = (w - s * (q - z)) / d
            W1[:, i:] -= err.unsqueeze(1) @ U[i1 + i, i1 + i:i2].unsqueeze(0)
            E1[:, i] = err
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    inv = torch.argsort(perm)
    g_idx = (inv // gs).numpy() if gs else np.zeros(cols, np.int64)
    return (Q[:, inv].numpy().astype(np.uint8), torch.stack(scales, 1).numpy(), torch.stack(zeros, 1).numpy(),
            g_idx)


def unpack(words, bits, n):
    """A [k, m] int32 array whose columns are LSB-first bit streams of n codes
    (GPTQ's packing, 3 bits across word boundaries) -> [n, m] codes."""
    u = words.view(np.uint32).astype(np.uint64)
    m = u.shape[1]
    out = np.zeros((n, m), np.uint8)
    for i in range(n):
        bit = i * bits
        word, off = bit // 32, bit % 32
        v = u[word] >> np.uint64(off)
        if off + bits > 32:
            v |= u[word + 1] << np.uint64(32 - off)
        out[i] = (v & np.uint64(2**bits - 1)).astype(np.uint8)
    return out


def read_layer(t, name, bits, v1):
    qweight, qzeros = t[name + ".qweight"], t[name + ".qzeros"].copy()
    scales, g_idx = t[name + ".scales"], t[name + ".g_idx"]
    assert qweight.dtype == np.int32 and qzeros.dtype == np.int32 and scales.dtype == np.float16
    n_in, n_out = g_idx.shape[0], scales.shape[1]
    if v1 and bits != 3:  # GPTQModel's v1 -> v2: one per field, whole-word arithmetic
        ones = {2: 0x55555555, 4: 0x11111111, 8: 0x01010101}[bits]
        qzeros = (qzeros.view(np.uint32).astype(np.uint64) + ones).astype(np.uint32).view(np.int32)
    codes = unpack(qweight, bits, n_in).T  # [out, in]
    zeros = unpack(qzeros.T.copy(), bits, n_out).T.astype(np.int64)  # [groups, out]
    if v1 and bits == 3:
        zeros = (zeros + 1) % 8
    return codes, scales.astype(np.float32), zeros, g_idx


CASES = [  # bits, group, sym, act_order
    (4, 64, True, False),
    (4, 64, False, True),
    (3, 64, False, False),
    (8, 0, True, False),
    (2, 32, True, True),
]


@pytest.mark.parametrize("bits,gs,sym,act", CASES)
def test_gptq_checkpoint_matches_the_reference(tmp_path, bits, gs, sym, act):
    rng = np.random.default_rng(bits * 10 + gs + sym + 2 * act)
    out_f, in_f, tokens = 64, 256, 1024
    w = (0.05 * rng.standard_normal((out_f, in_f))).astype(np.float32)
    x = correlated(rng, tokens, in_f)
    h = (2.0 / tokens * (x.astype(np.float64).T @ x)).astype(np.float32)
    save_file({"blk.proj.weight": w, "blk.proj.bias": rng.standard_normal(out_f).astype(np.float32)},
              str(tmp_path / "model.safetensors"))
    save_file({"blk.proj.hessian": h}, str(tmp_path / "calib.safetensors"))
    fmt = f"gptq-{bits}b-" + (f"g{gs}" if gs else "ch")
    args = ["quantize", tmp_path / "model.safetensors", tmp_path / "out" / "model.safetensors", "--format", fmt,
            "--calib", tmp_path / "calib.safetensors"]
    (tmp_path / "out").mkdir()
    lowbit(*args, *(["--sym"] if sym else []), *(["--act-order"] if act else []))

    cfg = json.loads((tmp_path / "out" / "quantize_config.json").read_text())
    assert cfg["bits"] == bits and cfg["group_size"] == (gs or -1) and cfg["sym"] == sym and cfg["desc_act"] == act
    assert cfg["quant_method"] == "gptq" and cfg["checkpoint_format"] == "gptq"
    t = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert "blk.proj.weight" not in t
    np.testing.assert_array_equal(t["blk.proj.bias"], load_file(str(tmp_path / "model.safetensors"))["blk.proj.bias"])
    codes, scales, zeros, g_idx = read_layer(t, "blk.proj", bits, v1=True)

    ref_codes, ref_s, ref_z, ref_g = reference_gptq(w, h, bits, gs, sym, act)
    np.testing.assert_array_equal(g_idx, ref_g)
    # float32 against float64: a code may differ where a value sits at a rounding boundary.
    assert np.mean(codes != ref_codes) <= 0.002, f"{np.sum(codes != ref_codes)} codes differ"
    # A code that differs moves the later columns, so a group fitted on them
    # may see another extreme: zeros and scales are held to 1% of groups.
    assert np.mean(zeros.T != ref_z) <= 0.01
    ref_s16 = ref_s.astype(np.float16).astype(np.float32)
    off = ~np.isclose(scales.T, ref_s16, rtol=2e-3, atol=0)
    assert np.mean(off) <= 0.01, f"{int(off.sum())} of {off.size} scales differ beyond 2e-3"
    # The output error on the calibration inputs is the reference's.
    deq = scales[g_idx, np.arange(out_f)[:, None]] * (codes.astype(np.float32) - zeros[g_idx, np.arange(out_f)[:, None]])
    ref_deq = ref_s[np.arange(out_f)[:, None], ref_g] * (ref_codes - ref_z[np.arange(out_f)[:, None], ref_g])

    def err(q):
        d = (w - q).astype(np.float64)
        return np.einsum("ri,ij,rj->", d, h.astype(np.float64), d)

    assert abs(err(deq) / err(ref_deq) - 1) < 0.02
