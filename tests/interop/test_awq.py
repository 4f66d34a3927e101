"""lowbit's AWQ against AutoAWQ 0.2.9's own functions, on the CPU in float32:
AwqQuantizer._search_best_scale, apply_scale, _search_best_clip, apply_clip
and _apply_quant (WQLinear_GEMM.from_linear), and AutoAWQ's reader
dequantize_gemm on lowbit's checkpoints.

- The export rule (pseudo_quantize_tensor and from_linear in float16, as
  _apply_quant runs them): codes, zeros and scales identical.
- The scale search: the same ratio, the scales to float rounding, the
  losses within 2e-4 (torch takes x^r from SLEEF, lowbit from libm: a scale
  an ulp apart can move a code across a rounding boundary; both losses are
  within 3e-7 of a float64 evaluation elsewhere).
- The clip search: the same clip for nearly every row and group (the
  per-group errors are summed in different orders).
- `lowbit quantize --format awq-4b-g64` on an o_proj after a v_proj, against
  AutoAWQ's whole pass on the same layer: the folded v_proj and the codes.

AutoAWQ imports every model class through transformers at its package root;
the functions used here need only torch, so its modules are loaded from the
source distribution (LOWBIT_AUTOAWQ_SRC) as a bare package, with empty
stand-ins for transformers, accelerate and datasets, which they import only
for type checks and data loading not reached here. On a machine without a
GPU, AutoAWQ's scale search snapshots the weights with `.cpu()`, which
returns the live tensor there, so every ratio after the first starts from
the weights the first one left scaled: the tests give it real copies, which
is what it computes on a GPU.

Environment: LOWBIT_CALIBRATION_CAPI, LOWBIT_CLI, LOWBIT_AUTOAWQ_SRC.
"""
import ctypes
import importlib.abc
import importlib.machinery
import os
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest

from conftest import ptr

torch = pytest.importorskip("torch")
from safetensors.numpy import load_file, save_file  # noqa: E402

AWQ_SRC = os.environ.get("LOWBIT_AUTOAWQ_SRC", "")


class _Stand_in(types.ModuleType):
    """A module whose every attribute is a fresh nn.Module subclass."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (torch.nn.Module,), {})
        setattr(self, name, cls)
        return cls


class _Stand_in_finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    roots = ("transformers", "accelerate", "datasets")

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Stand_in(spec.name)

    def exec_module(self, module):
        module.__path__ = []


@pytest.fixture(scope="module")
def autoawq():
    if not AWQ_SRC or not os.path.isdir(os.path.join(AWQ_SRC, "awq")):
        pytest.skip("LOWBIT_AUTOAWQ_SRC does not hold AutoAWQ's source distribution")
    finder = _Stand_in_finder()
    missing = [r for r in finder.roots if importlib.util.find_spec(r) is None]
    finder.roots = tuple(missing)
    sys.meta_path.insert(0, finder)
    pkg = types.ModuleType("awq")
    pkg.__path__ = [os.path.join(AWQ_SRC, "awq")]
    sys.modules["awq"] = pkg
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from awq.modules.linear.gemm import WQLinear_GEMM
            from awq.quantize.quantizer import AwqQuantizer
            from awq.quantize.scale import apply_clip, apply_scale
            from awq.utils.packing_utils import dequantize_gemm, reverse_awq_order, unpack_awq
    finally:
        sys.meta_path.remove(finder)
        for name in [m for m in sys.modules if m.split(".")[0] in missing]:
            del sys.modules[name]
    return types.SimpleNamespace(AwqQuantizer=AwqQuantizer, apply_scale=apply_scale, apply_clip=apply_clip,
                                 WQLinear_GEMM=WQLinear_GEMM, dequantize_gemm=dequantize_gemm,
                                 unpack_awq=unpack_awq, reverse_awq_order=reverse_awq_order)


def quantizer(awq, group, duo_scaling=True):
    """An AwqQuantizer as AwqQuantizer.__init__ sets it up for these methods (its
    __init__ also loads a model and calibration data)."""
    q = awq.AwqQuantizer.__new__(awq.AwqQuantizer)
    q.w_bit, q.group_size, q.zero_point, q.version = 4, group, True, "gemm"
    q.duo_scaling = duo_scaling
    q.n_parallel_calib_samples = None
    q.max_chunk_memory = 1024 * 1024 * 1024
    q.export_compatible = False
    q.modules_to_not_convert = []
    q.apply_clip = True
    return q


class Block(torch.nn.Module):
    """prev (the v_proj or up_proj whose rows take 1/s) and fc (the o_proj or down_proj)."""

    def __init__(self, w_prev, w):
        super().__init__()
        self.prev = torch.nn.Linear(w_prev.shape[1], w_prev.shape[0], bias=False)
        self.fc = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
        with torch.no_grad():
            self.prev.weight.copy_(torch.from_numpy(w_prev))
            self.fc.weight.copy_(torch.from_numpy(w))


def their_scales(awq, block, x, group, duo_scaling=True):
    """_search_best_scale for fc as AutoAWQ calls it for o_proj (module2inspect: fc
    itself); the scales and the 20 losses."""
    q = quantizer(awq, group, duo_scaling)
    losses = []
    own = q._compute_loss

    def recorded(*a):
        v = own(*a)
        losses.append(v)
        return v

    q._compute_loss = recorded
    snapshot = block.fc.state_dict
    block.fc.state_dict = lambda *a, **k: {n: v.clone() for n, v in snapshot(*a, **k).items()}
    try:
        entry = q._search_best_scale(block, prev_op=block.prev, layers=[block.fc], inp=torch.from_numpy(x),
                                     module2inspect=None)
    finally:
        del block.fc.state_dict
    return entry, np.array(losses)


def weights(rng, rows, cols):
    """A trained layer's weights: small, a few large."""
    w = rng.normal(0, 0.02, (rows, cols))
    idx = rng.choice(rows * cols, rows * cols // 2000 + 1, replace=False)
    w.flat[idx] = rng.uniform(0.1, 0.3, idx.size) * rng.choice([-1, 1], idx.size)
    return np.ascontiguousarray(w, np.float32)


def activations(rng, tokens, cols):
    """Low rank plus noise, a few loud channels, as real inputs are."""
    x = 0.5 * rng.standard_normal((tokens, 16)) @ rng.standard_normal((16, cols)) + 0.3 * rng.standard_normal(
        (tokens, cols))
    x[:, rng.choice(cols, cols // 40, replace=False)] *= 20
    return np.ascontiguousarray(x, np.float32)


def their_codes(awq, qweight, qzeros, scales):
    """Codes [in, out], zeros [groups, out] and scales [groups, out] from AutoAWQ's unpackers."""
    iw, iz = awq.reverse_awq_order(*awq.unpack_awq(qweight, qzeros, 4), 4)
    return (iw & 15).numpy().astype(np.uint8), (iz & 15).numpy().astype(np.uint8), scales.float().numpy()


@pytest.mark.parametrize("rows,cols,group", [(128, 256, 128), (64, 512, 64), (192, 96, 32)])
def test_export_rule_matches_autoawq(autoawq, calibration_capi, rows, cols, group):
    rng = np.random.default_rng(rows + cols)
    w = weights(rng, rows, cols)
    w[0, :group] = 0.0                        # a zero group
    w[1, :group] = 0.5                        # a constant group
    w[2, :group] = rng.uniform(0.2, 0.3, group)  # all positive: the zero clamps to 0
    w[3, :group] = rng.integers(-8, 8, group) / 64  # ties
    q = quantizer(autoawq, group)
    layer = torch.nn.Linear(cols, rows, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
    holder = torch.nn.Module()
    holder.fc = layer
    q._apply_quant(holder, {"fc": layer})
    codes, zeros, scales = their_codes(autoawq, holder.fc.qweight, holder.fc.qzeros, holder.fc.scales)

    my_codes = np.zeros((rows, cols), np.uint8)
    my_scale = np.zeros((rows, cols // group), np.float32)
    my_zero = np.zeros((rows, cols // group), np.uint8)
    assert calibration_capi.lowbit_awq_quantize(ptr(w), rows, cols, group, 1, ptr(my_codes), ptr(my_scale),
                                                ptr(my_zero))
    np.testing.assert_array_equal(my_codes.T, codes)
    np.testing.assert_array_equal(my_zero.T, zeros)
    np.testing.assert_array_equal(my_scale.T, scales)


@pytest.mark.parametrize("duo_scaling", [True, False])
@pytest.mark.parametrize("rows,cols,tokens,group", [(256, 256, 1024, 64), (128, 512, 300, 128)])
def test_scale_search_matches_autoawq(autoawq, calibration_capi, rows, cols, tokens, group, duo_scaling):
    rng = np.random.default_rng(7 * rows + tokens)
    w, x = weights(rng, rows, cols), activations(rng, tokens, cols)
    block = Block(np.ones((cols, 1), np.float32), w)
    (_, _, s_theirs), losses = their_scales(autoawq, block, x, group, duo_scaling)
    s = np.zeros(cols, np.float32)
    my_losses = np.zeros(20, np.float64)
    ratio = ctypes.c_float(0)
    assert calibration_capi.lowbit_awq_search_scales(ptr(w), rows, cols, ptr(x), tokens, group, int(duo_scaling),
                                                     ptr(s), ptr(my_losses), ctypes.byref(ratio))
    assert len(losses) == 20
    np.testing.assert_allclose(my_losses, losses, rtol=2e-4)
    assert ratio.value == pytest.approx(int(np.argmin(losses)) / 20)
    np.testing.assert_allclose(s, s_theirs.numpy(), rtol=1e-5)
    # Somewhere in the grid, scaling beats plain rounding for these loud channels.
    assert losses.min() < losses[0] or duo_scaling


@pytest.mark.parametrize("rows,cols,tokens,group", [(128, 256, 1300, 64), (64, 128, 400, 32)])
def test_clip_search_matches_autoawq(autoawq, calibration_capi, rows, cols, tokens, group):
    rng = np.random.default_rng(rows * tokens)
    w, x = weights(rng, rows, cols), activations(rng, tokens, cols)
    q = quantizer(autoawq, group)
    clip = q._compute_best_clip(torch.from_numpy(w), torch.from_numpy(x)).reshape(rows, cols // group).numpy()
    mine = np.zeros((rows, cols // group), np.float32)
    assert calibration_capi.lowbit_awq_search_clip(ptr(w), rows, cols, ptr(x), tokens, group, ptr(mine))
    same = np.mean(mine == clip)
    assert same >= 0.98, same
    # Where the choice differs, it is a neighbouring shrink (errors within rounding).
    org = np.abs(w).reshape(rows, cols // group, group).max(-1)
    steps = np.round((1 - mine / org) * 20), np.round((1 - clip / org) * 20)
    assert np.all(np.abs(steps[0] - steps[1]) <= 1)
    assert np.any(clip < org)  # the search did shrink somewhere


def test_checkpoint_matches_autoawq_pass(autoawq, tmp_path):
    cli = os.environ.get("LOWBIT_CLI", "")
    if not cli or not os.path.exists(cli):
        pytest.fail("LOWBIT_CLI must point at the built lowbit program")
    rng = np.random.default_rng(5)
    n, tokens, group = 256, 1024, 64
    w_v, w_o, x = weights(rng, n, n), weights(rng, n, n), activations(rng, tokens, n)
    v, o = "model.layers.0.self_attn.v_proj", "model.layers.0.self_attn.o_proj"
    save_file({v + ".weight": w_v, o + ".weight": w_o}, str(tmp_path / "model.safetensors"))
    save_file({o: x}, str(tmp_path / "acts.safetensors"))
    r = subprocess.run([cli, "quantize", tmp_path / "model.safetensors", tmp_path / "out.safetensors", "--format",
                        f"awq-4b-g{group}", "--calib", tmp_path / "acts.safetensors"], capture_output=True, text=True)
    if r.returncode != 0 and "made without" in r.stderr:
        pytest.skip("this lowbit was built without lowbit::calibration")
    assert r.returncode == 0, r.stderr
    mine = load_file(str(tmp_path / "out.safetensors"))

    # AutoAWQ's pass on the same layer: scale (v -> o), clip, quantize.
    block = Block(w_v, w_o)
    entry, _ = their_scales(autoawq, block, x, group)
    feats = {"fc": torch.from_numpy(x.copy())}
    autoawq.apply_scale(block, [entry], input_feat_dict=feats)
    q = quantizer(autoawq, group)
    autoawq.apply_clip(block, q._search_best_clip(block, {"fc": block.fc}, feats))
    np.testing.assert_allclose(mine[v + ".weight"], block.prev.weight.detach().numpy(), rtol=2e-5)
    q._apply_quant(block, {"fc": block.fc})
    t_codes, t_zeros, t_scales = their_codes(autoawq, block.fc.qweight, block.fc.qzeros, block.fc.scales)
    m = {k: torch.from_numpy(mine[o + "." + k]) for k in ("qweight", "qzeros", "scales")}
    codes, zeros, scales = their_codes(autoawq, m["qweight"], m["qzeros"], m["scales"])
    assert np.mean(codes == t_codes) >= 0.99
    assert np.mean(scales == t_scales) >= 0.95
    # AutoAWQ's reader on lowbit's tensors gives (q - z) * s of lowbit's codes, and
    # stands for the layer: its output error on X is AutoAWQ's own within 1%.
    deq = autoawq.dequantize_gemm(m["qweight"], m["qzeros"], m["scales"], 4, group).float().numpy()
    ref = autoawq.dequantize_gemm(block.fc.qweight, block.fc.qzeros, block.fc.scales, 4, group).float().numpy()
    s = (w_v / mine[v + ".weight"]).mean(axis=1)  # the folded scale of each v row
    y = x @ w_o.T

    def err(d):
        return float(np.sum((x @ (d / s[:, None]) - y) ** 2) / np.sum(y ** 2))

    assert err(deq) == pytest.approx(err(ref), rel=0.01)
    assert err(deq) < 0.01
