import numpy as np
import pytest
import torch

import neuralspec as ns


def _psd(n=40, r=40, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    A = torch.randn(n, r, generator=g, dtype=dtype)
    return A @ A.T


def test_eigh_descending_orthonormal_reconstructs():
    K = _psd()
    ev, U = ns.eigh(K)
    assert ev.shape == (40,) and U.shape == (40, 40)
    assert torch.all(ev[:-1] >= ev[1:])
    assert torch.allclose(U.T @ U, torch.eye(40, dtype=K.dtype), atol=1e-10)
    assert torch.allclose(U @ torch.diag(ev) @ U.T, K, atol=1e-9)
    assert torch.allclose(ns.eigenvalues(K), ev)


def test_eigh_matches_svd_for_psd_and_keeps_sign():
    K = _psd(30, 10)
    ev = ns.eigenvalues(K)
    sv = torch.linalg.svdvals(K)
    assert torch.allclose(ev[:10], sv[:10], rtol=1e-10)
    # a slightly indefinite matrix: eigh shows the negative eigenvalue, svd hides it
    K2 = K - 1e-3 * torch.eye(30, dtype=K.dtype)
    assert ns.eigenvalues(K2).min() < 0
    assert torch.linalg.svdvals(K2).min() > 0


def test_eigh_top_k_and_numpy_roundtrip():
    K = _psd().numpy()
    ev, U = ns.eigh(K, k=5)
    assert isinstance(ev, np.ndarray) and ev.shape == (5,) and U.shape == (40, 5)
    full = np.linalg.eigvalsh(K)[::-1]
    assert np.allclose(ev, full[:5])
    with pytest.raises(ValueError, match="k must be"):
        ns.eigh(K, k=0)


def test_float32_and_device_kept():
    K = _psd(dtype=torch.float32)
    ev, U = ns.eigh(K)
    assert ev.dtype == torch.float32 and U.dtype == torch.float32
    assert ev.device == K.device


def test_numerical_floor_bounds_round_off_of_zero_eigenvalues():
    """A rank-10 float32 Gram matrix: its ~90 zero eigenvalues come out as round-off
    below the floor, and the 10 real ones above it."""
    g = torch.Generator().manual_seed(1)
    Z = torch.randn(100, 10, generator=g)
    K = Z @ Z.T
    ev = ns.eigenvalues(K)
    floor = ns.numerical_floor(ev)
    eps = torch.finfo(torch.float32).eps
    assert floor == pytest.approx(10 * eps * ev.abs().max().item(), rel=1e-6)
    assert ev[10:].abs().max() < floor
    assert ns.numerical_rank(ev) == 10
    Z64 = Z.double()
    ev64 = ns.eigenvalues(Z64 @ Z64.T)
    assert ns.numerical_floor(ev64) < floor * 1e-8
    assert ns.numerical_rank(ev64) == 10
    # Pitfall: casting a float32 kernel to float64 keeps its float32 round-off,
    # so the floor is that of the precision the kernel was *computed* in.
    ev_cast = ns.eigenvalues(K.double())
    assert ns.numerical_rank(ev_cast) > 10
    assert ns.numerical_rank(ev_cast, dtype=torch.float32) == 10
    assert ns.numerical_floor(ev.numpy(), dtype=np.float64) < floor


def test_effective_rank():
    ev = torch.tensor([1.0, 1.0, 1.0, 0.0, -1e-9])
    assert ns.effective_rank(ev) == pytest.approx(3.0)
    assert ns.effective_rank(ev, kind="participation") == pytest.approx(3.0)
    ev2 = torch.tensor([10.0, 1.0, 0.1])
    assert 1.0 < ns.effective_rank(ev2) < 2.0
    with pytest.raises(ValueError, match="kind"):
        ns.effective_rank(ev2, kind="bogus")
    with pytest.raises(ValueError, match="undefined"):
        ns.effective_rank(torch.zeros(3))


@pytest.mark.parametrize(
    "K, exc, match",
    [
        (torch.rand(3, 4), ValueError, "square"),
        (torch.rand(3, 3, 3), ValueError, "square"),
        (torch.tensor([[1.0, 2.0], [0.0, 1.0]]), ValueError, "not symmetric"),
        (torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]), ValueError, "NaN"),
        (torch.ones(2, 2, dtype=torch.int64), TypeError, "floating point"),
        (torch.zeros(0, 0), ValueError, "empty"),
        ([[1.0]], TypeError, "torch.Tensor or numpy.ndarray"),
    ],
)
def test_bad_matrices(K, exc, match):
    with pytest.raises(exc, match=match):
        ns.eigh(K)
    with pytest.raises(exc, match=match):
        ns.eigenvalues(K)


def test_plotting_helpers_label_everything():
    import matplotlib.pyplot as plt

    x = torch.linspace(0, 1, 50)[:, None]
    K = ns.feature_kernel(ns.RFF(1, 20, 5), x)
    ev, U = ns.eigh(K)
    fig, axes = plt.subplots(1, 4, figsize=(12, 3))
    ax = ns.plot_kernel(K, x, ax=axes[0])
    assert ax.get_title() and ax.get_xlabel() == "$x'$" and len(fig.axes) == 5  # + colorbar
    ax = ns.plot_spectrum(ev, ax=axes[1], floor=ns.numerical_floor(ev))
    assert ax.get_yscale() == "log" and ax.get_ylabel() and ax.get_legend() is not None
    assert len(ax.lines) >= 2  # eigenvalues and the floor line
    ax = ns.plot_eigenfunctions(x, U, k=3, ax=axes[2])
    assert len(ax.lines) == 3 and ax.get_xlabel() == "$x$"
    ax = ns.plot_features(x, ns.RFF(1, 20, 5)(x), k=4, ax=axes[3])
    assert len(ax.lines) == 4
    plt.close(fig)


def test_check_finite_in_blocks_finds_every_bad_value():
    from neuralspec import _validation as v

    K = torch.zeros(3000, 2000)  # 6e6 elements: checked in blocks
    K[2999, 1999] = float("nan")
    K[5, 7] = float("inf")
    with pytest.raises(ValueError, match=r"1 NaN, 1 inf"):
        v.check_finite(K, "K")
    v.check_finite(torch.zeros(3000, 2000), "K")  # finite: no error
    with pytest.raises(ValueError, match="NaN"):
        v.check_finite(torch.tensor(float("nan")), "a scalar")
