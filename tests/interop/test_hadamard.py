"""lowbit::rotate_rows against QuaRot's Hadamard rotation as torchao ships it
(torchao.prototype.spinquant.hadamard_utils: get_hadK picks the factor and
its stored matrix, matmul_hadU_slow rotates, on the CPU): the same rotation
for every size both serve, bit for bit where no factor matrix mixes blocks
(n = 2^k: the same butterflies in the same order), to float rounding where
torch's matrix product sums the blocks in another order; the inverse undoes
it; and the sizes lowbit refuses are exactly those QuaRot serves with
matrices lowbit does not hold.

Environment: LOWBIT_AFFINE_CAPI (tests/interop/affine_capi.cpp), on every
instruction set this CPU has (LOWBIT_ARCH) and the scalar reference.
"""
import numpy as np
import pytest

from conftest import ptr

torch = pytest.importorskip("torch")
hu = pytest.importorskip("torchao.prototype.spinquant.hadamard_utils")

SIZES = [8, 12, 20, 24, 28, 40, 56, 64, 96, 160, 224, 320, 1024, 3072, 4096, 5120, 7168, 14336]


def theirs(x, transpose=False):
    had, k = hu.get_hadK(x.shape[-1], transpose)
    return hu.matmul_hadU_slow(torch.from_numpy(x.copy()), had, k).numpy()


def ours(affine_capi, x, transpose=False, threads=2):
    y = np.ascontiguousarray(x, dtype=np.float32).copy()
    assert affine_capi.lowbit_hadamard(ptr(y), y.shape[0], y.shape[1], int(transpose), threads)
    return y


@pytest.mark.parametrize("n", SIZES)
def test_rotation_is_quarots(affine_capi, n):
    rng = np.random.default_rng(n)
    x = rng.normal(0, 1, (9, n)).astype(np.float32)
    x[3, n // 3] = 40.0  # an outlier channel
    for transpose in (False, True):
        a, b = ours(affine_capi, x, transpose), theirs(x, transpose)
        if n & (n - 1) == 0:
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), f"n={n} transpose={transpose}"
        else:
            np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * np.abs(b).max())
    # The inverse undoes it; the norm is kept; the outlier is spread.
    y = ours(affine_capi, x)
    np.testing.assert_allclose(ours(affine_capi, y, True), x, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), np.linalg.norm(x, axis=1), rtol=1e-5)
    assert np.abs(y[3]).max() < 0.5 * 40.0


def test_weights_and_inputs_rotated_alike_keep_the_output(affine_capi):
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.02, (64, 5120)).astype(np.float32)
    x = rng.normal(0, 1, (16, 5120)).astype(np.float32)
    np.testing.assert_allclose(ours(affine_capi, x) @ ours(affine_capi, w).T, x @ w.T, rtol=0, atol=2e-4)


@pytest.mark.parametrize("n", [36 * 64, 44 * 64, 52 * 64, 60 * 64, 108 * 64, 140 * 64, 156 * 64, 172 * 64, 11008, 100])
def test_sizes_quarot_serves_with_other_matrices_are_refused(affine_capi, n, capfd):
    x = np.zeros((1, n), np.float32)
    assert not affine_capi.lowbit_hadamard(ptr(x), 1, n, 0, 1)
    assert "the Hadamard rotation takes 2^k, 12 * 2^k, 20 * 2^k or 28 * 2^k" in capfd.readouterr().err
