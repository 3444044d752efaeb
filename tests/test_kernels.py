import math

import numpy as np
import pytest
import torch

import neuralspec as ns
from neuralspec.analytic import rff_kernel


@pytest.fixture
def xs():
    return torch.linspace(0, 1, 101)[:, None]


def test_feature_kernel_is_seed_gram_matrix(xs):
    rff = ns.RFF(1, 100, scale=10)
    zs = rff(xs)
    K = ns.feature_kernel(rff, xs)
    assert K.shape == (101, 101) and K.dtype == torch.float32
    assert torch.allclose(K, zs @ zs.T)
    assert torch.allclose(ns.feature_kernel(rff, xs, normalize=True), zs @ zs.T / 100)


def test_feature_kernel_symmetric_psd_and_low_rank(xs):
    rff = ns.RFF(1, 20, scale=10)
    K = ns.feature_kernel(rff, xs).double()
    assert torch.allclose(K, K.T)
    ev = torch.linalg.eigvalsh(K)
    assert ev.min() > -1e-4 * ev.max()
    assert int((ev > 1e-5 * ev.max()).sum()) <= 20  # rank <= number of features


def test_feature_kernel_from_matrix_and_cross(xs):
    rff = ns.RFF(1, 30, scale=5)
    phi = rff(xs)
    x2 = torch.rand(7, 1)
    K = ns.feature_kernel(rff, xs, x2)
    assert K.shape == (101, 7)
    assert torch.allclose(K, phi @ rff(x2).T)
    assert torch.allclose(ns.feature_kernel(phi), phi @ phi.T)
    assert torch.allclose(ns.feature_kernel(phi, x2=rff(x2)), K)


def test_numpy_input_takes_model_dtype():
    rff = ns.RFF(1, 10).double()
    K = ns.feature_kernel(rff, np.linspace(0, 1, 11)[:, None])
    assert K.dtype == torch.float64


def test_float64_kept(xs):
    rff = ns.RFF(1, 10).double()
    assert ns.feature_kernel(rff, xs.double()).dtype == torch.float64


def test_device_kept():
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    rff = ns.RFF(1, 10).to(dev)
    K = ns.feature_kernel(rff, torch.rand(5, 1, device=dev))
    assert K.device.type == dev


def test_feature_kernel_bad_inputs(xs):
    rff = ns.RFF(1, 10)
    with pytest.raises(ValueError, match=r"at least 2-D, of shape \(N, \*\).*x\[:, None\]"):
        ns.feature_kernel(rff, torch.linspace(0, 1, 11))
    with pytest.raises(ValueError, match="expects 1"):
        ns.feature_kernel(rff, torch.rand(5, 2))
    bad = xs.clone()
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        ns.feature_kernel(rff, bad)
    bad[3] = float("inf")
    with pytest.raises(ValueError, match="inf"):
        ns.feature_kernel(rff, bad)
    with pytest.raises(ValueError, match="empty"):
        ns.feature_kernel(rff, torch.zeros(0, 1))
    with pytest.raises(TypeError, match="dtype torch.float64 but the model computes in torch.float32"):
        ns.feature_kernel(rff, xs.double())
    with pytest.raises(TypeError, match="floating point"):
        ns.feature_kernel(rff, torch.ones(3, 1, dtype=torch.int64))
    with pytest.raises(TypeError, match="floating point"):  # the same rule for an integer array
        ns.feature_kernel(rff, np.ones((3, 1), dtype=np.int64))
    with pytest.raises(TypeError, match="x, of shape"):
        ns.feature_kernel(rff)
    with pytest.raises(TypeError, match="either a model"):
        ns.feature_kernel(torch.rand(4, 3), xs)
    with pytest.raises(ValueError, match="same number of features"):
        ns.feature_kernel(torch.rand(4, 3), x2=torch.rand(4, 2))
    with pytest.raises(TypeError, match="nn.Module"):
        ns.feature_kernel("rff", xs)


def test_feature_map_returning_wrong_shape(xs):
    with pytest.raises(ValueError, match=r"must return a tensor of shape \(N, m\)"):
        ns.feature_kernel(lambda x: x[:, 0], xs)
    with pytest.raises(ValueError, match="non-finite"):
        ns.feature_kernel(lambda x: 1 / (x - x), xs)


def test_rff_kernel_matches_monte_carlo():
    """Phi Phi^T / m -> rff_kernel, with error of order m^-1/2."""
    x = torch.linspace(0, 1, 51, dtype=torch.float64)[:, None]
    exact = rff_kernel(x, scale=10)
    errs = []
    for m in [500, 8000]:
        torch.manual_seed(0)
        rff = ns.RFF(1, m, scale=10).double()
        errs.append((ns.feature_kernel(rff, x, normalize=True) - exact).abs().max().item())
    # each entry is a mean of m bounded terms with std <= 1/2: max error over 51^2 entries
    # stays below 5 std = 2.5/sqrt(m), and grows 16x more features -> about 4x smaller.
    assert errs[0] < 2.5 / math.sqrt(500)
    assert errs[1] < 2.5 / math.sqrt(8000)
    assert errs[1] < errs[0] / 2


def test_rff_kernel_properties():
    x = torch.rand(30, 2, dtype=torch.float64)
    K = rff_kernel(x, scale=3)
    assert torch.allclose(K, K.T)
    assert torch.linalg.eigvalsh(K).min() > -1e-12
    # diagonal: 1/2 [1 - sin2/2 * prod sinc(2 a x)]
    a = 3 / 2
    diag = 0.5 * (1 - math.sin(2) / 2 * torch.sinc(2 * a * x).prod(1))
    assert torch.allclose(K.diagonal(), diag)
    # full-period phase: stationary 1/2 sinc(a delta)
    x1 = torch.linspace(0, 1, 20, dtype=torch.float64)[:, None]
    Ks = rff_kernel(x1, scale=4, phase_range=math.pi)
    assert torch.allclose(Ks, 0.5 * torch.sinc(4 * (x1 - x1.T)), atol=1e-12)


def test_rff_kernel_bad_input():
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        rff_kernel(np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match="same number of features"):
        rff_kernel(np.zeros((3, 1)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="positive"):
        rff_kernel(np.zeros((3, 1)), scale=-1)


def test_conjugate_kernel_is_last_hidden_gram_over_width():
    model = ns.RFFMLP(1, 10, 64, 3, 1)
    x = torch.rand(20, 1)
    h = model[:-1](x).detach()
    ck = ns.conjugate_kernel(model, x)
    assert torch.allclose(ck, h @ h.T / 64, atol=1e-6)
    x2 = torch.rand(5, 1)
    assert ns.conjugate_kernel(model, x, x2).shape == (20, 5)
    # RFFMLP with one latent layer: the CK is the normalized RFF Gram matrix
    m1 = ns.RFFMLP(1, 10, 64, 1, 1)
    assert torch.allclose(ns.conjugate_kernel(m1, x), ns.feature_kernel(m1[0], x, normalize=True))


def test_conjugate_kernel_ntk_parameterization_and_custom_features():
    model = ns.MLP(2, 32, 2, 1, parameterization="ntk")
    x = torch.rand(6, 2)
    h = model[:-1](x).detach()
    assert torch.allclose(ns.conjugate_kernel(model, x), h @ h.T / 32, atol=1e-6)
    ck = ns.conjugate_kernel(None, x, features=lambda t: torch.cat([t, t], 1))
    assert torch.allclose(ck, x @ x.T / 2, atol=1e-6)  # 2 x.x' over 4 features


def test_conjugate_kernel_needs_a_readout():
    class Net(torch.nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(TypeError, match="readout layer"):
        ns.conjugate_kernel(Net(), torch.rand(3, 1))
    with pytest.raises(TypeError, match="readout layer"):
        ns.conjugate_kernel(torch.nn.Sequential(torch.nn.Linear(1, 3), torch.nn.ReLU()), torch.rand(3, 1))
