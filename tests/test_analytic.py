"""Infinite-width kernels (neuralspec.analytic): closed forms, exactness, and wide networks.

Agreement with wide networks is measured as the relative Frobenius error
``||K_emp - K_lim||_F / ||K_lim||_F`` of the empirical kernel (averaged over
``SEEDS`` networks) against the limit. Both the CK (an average over ``n``
units) and the NTK fluctuate like ``n^{-1/2}``; on these 16-point grids the
measured error is 2-4 / sqrt(n) (torch 2.13, float64), so the tolerance is
``C_WIDTH / sqrt(n)`` with ``C_WIDTH = 6``.
"""
import math

import numpy as np
import pytest
import torch

import neuralspec as ns
from neuralspec import analytic as A

C_WIDTH = 6.0
WIDTHS = (128, 512, 2048)
SEEDS = (0, 1, 2)


def relerr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def empirical_ntk(model, x):
    """neuralspec.ntk; a torch.func Jacobian contraction if it is not there."""
    if hasattr(ns, "ntk"):
        return ns.ntk(model, x)
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def f(p, xi):
        return functional_call(model, p, (xi[None],))[0, 0]

    J = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    return sum(j.reshape(len(x), -1) @ j.reshape(len(x), -1).T for j in J.values())


X1 = torch.linspace(-1, 1, 16, dtype=torch.float64)[:, None]
_T = torch.linspace(0, 2 * math.pi, 17, dtype=torch.float64)[:-1]
X2 = torch.stack([_T.cos(), _T.sin()], 1)  # the unit circle


# ----------------------------------------------------------------------------
# closed forms
# ----------------------------------------------------------------------------

def test_arccos_known_values():
    th = np.array([0.0, math.pi / 2, math.pi])
    np.testing.assert_allclose(A.arccos_kernel(th, 0), [math.pi, math.pi / 2, 0.0], atol=1e-15)
    np.testing.assert_allclose(A.arccos_kernel(th, 1), [math.pi, 1.0, 0.0], atol=1e-15)
    t = torch.tensor(th)
    assert isinstance(A.arccos_kernel(t, 1), torch.Tensor)
    with pytest.raises(ValueError, match="order"):
        A.arccos_kernel(th, 2)


def test_relu_expectations_diagonal_orthogonal_antipodal():
    v = torch.tensor([2.0, 0.5], dtype=torch.float64)
    cov = torch.tensor([[2.0, 0.0], [-1.0, 0.5]], dtype=torch.float64)  # same, orthogonal, antipodal
    m = A.relu_expectations(cov, v, v)
    assert m.relu[0, 0].item() == pytest.approx(1.0)            # v / 2
    assert m.step[0, 0].item() == pytest.approx(0.5)
    assert m.relu[0, 1].item() == pytest.approx(1.0 / (2 * math.pi))   # sqrt(v1 v2) / (2 pi)
    assert m.step[0, 1].item() == pytest.approx(0.25)
    assert m.relu[1, 0].item() == pytest.approx(0.0, abs=1e-12)
    assert m.step[1, 0].item() == pytest.approx(0.0, abs=1e-12)


def test_relu_expectations_match_monte_carlo():
    g = torch.Generator().manual_seed(0)
    M = 400_000
    C = torch.tensor([[1.5, 0.6, -0.4], [0.6, 0.8, 0.1], [-0.4, 0.1, 1.0]], dtype=torch.float64)
    Z = torch.randn(M, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(C).T
    H, D = Z.clamp(min=0), (Z > 0).double()
    m = A.relu_expectations(C, C.diag(), C.diag())
    # tolerance: 5 Monte Carlo standard errors (max entry std <= 1.5 / sqrt(M))
    assert torch.allclose(m.relu, H.T @ H / M, atol=5 * 1.5 / math.sqrt(M))
    assert torch.allclose(m.step, D.T @ D / M, atol=5 * 0.5 / math.sqrt(M))


@pytest.mark.parametrize("d", [1, 2])
def test_uniform_first_layer_matches_monte_carlo(d):
    rng = np.random.default_rng(d)
    x = rng.uniform(-1.5, 1.5, size=(5, d))
    s, M = 1 / math.sqrt(d), 400_000
    W, b = rng.uniform(-s, s, size=(M, d)), rng.uniform(-s, s, size=M)
    Z = x @ W.T + b
    H, D = np.maximum(Z, 0), (Z > 0).astype(float)
    m = A.uniform_relu_expectations(x)
    se_r = np.sqrt(((H[:, None] * H[None]) ** 2).mean(-1) / M)
    assert np.all(np.abs(m.relu.numpy() - H @ H.T / M) < 5 * se_r + 1e-12)
    assert np.all(np.abs(m.step.numpy() - D @ D.T / M) < 5 * 0.5 / math.sqrt(M))


def test_uniform_first_layer_exact_identities():
    # (t, 0) and (0, t) in 2-D are the 1-D layer with every weight scaled by 1/sqrt(2):
    # relu moments scale by 1/2, step moments do not change. Exact to round-off.
    t = np.linspace(-2, 2, 7)[:, None]
    m1 = A.uniform_relu_expectations(t)
    for x in (np.hstack([t, 0 * t]), np.hstack([0 * t, t])):
        m2 = A.uniform_relu_expectations(x)
        assert torch.allclose(m2.relu, m1.relu / 2, atol=1e-14)
        assert torch.allclose(m2.step, m1.step, atol=1e-14)
    # d = 1 at x = x' = 1: z = w + b is triangular on [-2, 2]; E[relu(z)^2] = 1/3, P(z > 0) = 1/2
    m = A.uniform_relu_expectations(np.array([[1.0]]))
    assert m.relu.item() == pytest.approx(1 / 3, abs=1e-14)
    assert m.step.item() == pytest.approx(1 / 2, abs=1e-14)


def test_uniform_first_layer_matches_fine_grid():
    # d = 2: against a 1200 x 1200 midpoint rule over the weights (bias in closed form), O(h^2)
    x = np.array([[0.3, -1.2], [1.1, 0.4]])
    s, n = 1 / math.sqrt(2), 1200
    g = (np.arange(n) + 0.5) / n * 2 * s - s
    W1, W2 = np.meshgrid(g, g, indexing="ij")
    p, q = W1 * x[0, 0] + W2 * x[0, 1], W1 * x[1, 0] + W2 * x[1, 1]
    r, st = A._moments_over_bias(p, q, s)
    m = A.uniform_relu_expectations(x[:1], x[1:])
    assert m.relu.item() == pytest.approx(r.mean(), abs=1e-6)
    assert m.step.item() == pytest.approx(st.mean(), abs=1e-6)


def test_depth_one_closed_form_ntk_parameterization():
    # One hidden layer, NTK parameterization, on the unit circle:
    # Sigma1 = sw^2 cos(g) / 2 + sb^2, CK = arc-cosine of Sigma1,
    # NTK = (sw^2 CK + sb^2) + sw^2 * (pi - theta) / (2 pi) * Sigma1.
    sw, sb = 1.3, 0.2
    s1 = sw ** 2 * (X2 @ X2.T) / 2 + sb ** 2
    v = sw ** 2 / 2 + sb ** 2
    theta = torch.arccos((s1 / v).clamp(-1, 1))
    ck = v / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta))
    ntk = sw ** 2 * ck + sb ** 2 + sw ** 2 * (math.pi - theta) / (2 * math.pi) * s1
    k = A.mlp_kernels(X2, depth=1, parameterization="ntk", w_std=sw, b_std=sb)
    assert torch.allclose(k.ck, ck, atol=1e-7)
    assert torch.allclose(k.ntk, ntk, atol=1e-7)


CONFIGS = {
    "gaussian-ntk": dict(parameterization="ntk"),
    "gaussian-standard": dict(parameterization="standard", init="gaussian", w_std=1.2, b_std=0.3),
    "torch-exact": dict(parameterization="standard", init="torch"),
    "torch-gaussian-first": dict(parameterization="standard", init="torch", first_layer="gaussian"),
}


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("x", [X1, X2], ids=["1d", "2d"])
def test_kernels_symmetric_psd_and_cross_consistent(name, x):
    k = A.mlp_kernels(x, depth=3, width=100, **CONFIGS[name])
    for K in k:
        assert torch.allclose(K, K.T, atol=1e-13)
        ev = torch.linalg.eigvalsh(K)
        assert ev.min() > -1e-10 * ev.max()
    kc = A.mlp_kernels(x[:5], x[3:], depth=3, width=100, **CONFIGS[name])
    assert torch.allclose(kc.ck, k.ck[:5, 3:], atol=1e-12)
    assert torch.allclose(kc.ntk, k.ntk[:5, 3:], atol=1e-10)


def test_standard_ntk_is_affine_in_width_and_ck_is_not_width_dependent():
    k1, k2, k3 = (A.mlp_kernels(X1, depth=2, width=n) for n in (100, 200, 300))
    assert torch.allclose(k3.ntk - k2.ntk, k2.ntk - k1.ntk, rtol=1e-12)
    assert torch.equal(k1.ck, k3.ck)
    assert A.mlp_kernels(X1, depth=2).ntk is None       # standard needs a width
    assert A.mlp_kernels(X1, depth=2, parameterization="ntk").ntk is not None


def test_rffmlp_one_layer_is_the_rff_kernel():
    x = torch.linspace(0, 1, 9, dtype=torch.float64)[:, None]
    k = A.rffmlp_kernels(x, scale=5.0, latent_layers=1, width=64)
    rff = A.rff_kernel(x, scale=5.0)
    assert torch.allclose(k.ck, rff)
    assert torch.allclose(k.ntk, 64 * rff + 1)      # the readout's weights and bias
    assert A.rffmlp_kernels(x, scale=5.0, latent_layers=2).ntk is None


def test_hidden_bias_at_width_removes_most_of_the_finite_width_bias():
    # Each ReLU layer shrinks the kernel by 1/6 while torch's hidden-bias variance
    # 1/(3n) stays: at n = 64 the mean CK of RFFMLP(latent_layers=3) sits ~30% above
    # the limit; keeping the bias variance brings it within ~10% (16 seeds).
    x = torch.linspace(0, 1, 41, dtype=torch.float64)[:, None]
    n = 64
    lim = A.rffmlp_kernels(x, scale=10.0, latent_layers=3).ck
    at_n = A.rffmlp_kernels(x, scale=10.0, latent_layers=3, width=n, hidden_bias="width").ck
    cks = []
    for seed in range(16):
        torch.manual_seed(seed)
        cks.append(ns.conjugate_kernel(ns.RFFMLP(1, 10.0, n, 3, 1).double(), x))
    mean = torch.stack(cks).mean(0)
    assert relerr(mean, at_n) < 0.5 * relerr(mean, lim)
    k = A.mlp_kernels(X1, depth=3, width=n, hidden_bias="width")
    assert relerr(k.ck, A.mlp_kernels(X1, depth=3).ck) > 0.01


def test_gaussian_first_layer_is_visibly_off_for_uniform_init():
    # The claim of the chapter, on the limits themselves: several percent on 1-D and 2-D inputs.
    for x in (X1, X2):
        exact = A.mlp_kernels(x, depth=1, width=1)
        gauss = A.mlp_kernels(x, depth=1, width=1, first_layer="gaussian")
        assert relerr(gauss.ck, exact.ck) > 0.015
        assert (gauss.ck / exact.ck - 1).abs().max() > 0.05


# ----------------------------------------------------------------------------
# against wide networks
# ----------------------------------------------------------------------------

def _empirical(make, x):
    cks, ntks = [], []
    for seed in SEEDS:
        torch.manual_seed(seed)
        model = make().double()
        cks.append(ns.conjugate_kernel(model, x))
        ntks.append(empirical_ntk(model, x))
    return torch.stack(cks).mean(0), torch.stack(ntks).mean(0)


MLP_CASES = {
    "gaussian-ntk-1d": (X1, dict(parameterization="ntk")),
    "gaussian-standard-1d": (X1, dict(parameterization="standard", init="gaussian")),
    "torch-1d": (X1, dict(parameterization="standard", init="torch")),
    "torch-2d": (X2, dict(parameterization="standard", init="torch")),
}


@pytest.mark.parametrize("case", list(MLP_CASES))
def test_mlp_limits_match_wide_networks(case):
    x, kw = MLP_CASES[case]
    for n in WIDTHS:
        lim = A.mlp_kernels(x, depth=2, width=n, **kw)
        ck, ntk = _empirical(lambda: ns.MLP(x.shape[1], n, 2, 1, "relu", **kw), x)
        tol = C_WIDTH / math.sqrt(n)
        assert relerr(ck, lim.ck) < tol, f"{case}: CK at width {n}"
        assert relerr(ntk, lim.ntk) < tol, f"{case}: NTK at width {n}"


def test_rffmlp_limits_match_wide_networks():
    x = torch.linspace(0, 1, 16, dtype=torch.float64)[:, None]
    for n in WIDTHS:
        lim = A.rffmlp_kernels(x, scale=4.0, latent_layers=3, width=n)
        ck, ntk = _empirical(lambda: ns.RFFMLP(1, 4.0, n, 3, 1), x)
        tol = C_WIDTH / math.sqrt(n)
        assert relerr(ck, lim.ck) < tol, f"CK at width {n}"
        assert relerr(ntk, lim.ntk) < tol, f"NTK at width {n}"


def test_exact_first_layer_fixes_the_uniform_init_pitfall():
    # One hidden layer with torch's default init on 1-D inputs: the empirical CK of a
    # 2^16-wide layer (4 seeds, noise ~ 2 / sqrt(n * 4) < 0.5%) matches the exact
    # first layer and misses the Gaussian arc-cosine formula by several times more.
    n = 2 ** 16
    exact = A.mlp_kernels(X1, depth=1, width=n)
    gauss = A.mlp_kernels(X1, depth=1, width=n, first_layer="gaussian")
    cks = []
    for seed in range(4):
        torch.manual_seed(seed)
        cks.append(ns.conjugate_kernel(ns.MLP(1, n, 1, 1).double(), X1))
    ck = torch.stack(cks).mean(0)
    assert relerr(ck, exact.ck) < 2.5 / math.sqrt(4 * n)
    assert relerr(ck, gauss.ck) > 3 * relerr(ck, exact.ck)


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    x = np.linspace(0, 1, 5)
    with pytest.raises(ValueError, match=r"\(N, 1\)"):
        A.mlp_kernels(x, depth=1)                                  # 1-D x
    with pytest.raises(ValueError, match="non-finite"):
        A.mlp_kernels(np.array([[0.0], [np.nan]]), depth=1)
    with pytest.raises(ValueError, match="same number of features"):
        A.mlp_kernels(X1, X2, depth=1)
    with pytest.raises(ValueError, match="depth"):
        A.mlp_kernels(X1, depth=0)
    with pytest.raises(ValueError, match="width"):
        A.mlp_kernels(X1, depth=1, width=-3)
    with pytest.raises(ValueError, match="parameterization"):
        A.mlp_kernels(X1, depth=1, parameterization="mup")
    with pytest.raises(ValueError, match="Gaussian init only"):
        A.mlp_kernels(X1, depth=1, parameterization="ntk", init="torch")
    with pytest.raises(ValueError, match="fixed scales"):
        A.mlp_kernels(X1, depth=1, init="torch", w_std=2.0)
    with pytest.raises(ValueError, match="1-D and 2-D"):
        A.mlp_kernels(torch.zeros(4, 3, dtype=torch.float64), depth=1)
    with pytest.raises(ValueError, match="w_std"):
        A.mlp_kernels(X1, depth=1, init="gaussian", w_std=-1.0)
    with pytest.raises(ValueError, match="needs the width"):
        A.mlp_kernels(X1, depth=2, hidden_bias="width")
    with pytest.raises(ValueError, match="hidden_bias"):
        A.rffmlp_kernels(X1, scale=1.0, latent_layers=2, hidden_bias="finite")
    with pytest.raises(ValueError, match="hidden_bias applies"):
        A.mlp_kernels(X1, depth=2, init="gaussian", width=8, hidden_bias="width")
    with pytest.raises(ValueError, match="first_layer"):
        A.mlp_kernels(X1, depth=1, first_layer="clt")
    with pytest.raises(TypeError, match="floating point"):
        A.mlp_kernels(torch.zeros(4, 1, dtype=torch.int64), depth=1)
    with pytest.raises(ValueError, match="scale"):
        A.rffmlp_kernels(X1, scale=0.0, latent_layers=2)
    with pytest.raises(ValueError, match="latent_layers"):
        A.rffmlp_kernels(X1, scale=1.0, latent_layers=0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        A.relu_expectations(np.eye(2), torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match=r"cov \(N, N2\)"):
        A.relu_expectations(torch.eye(2), torch.ones(3), torch.ones(2))


def test_dtype_and_device_follow_x():
    k = A.mlp_kernels(X1.float(), depth=2, width=8)
    assert k.ck.dtype == torch.float32 and k.ntk.dtype == torch.float32
    k = A.rffmlp_kernels(np.linspace(0, 1, 4)[:, None], scale=2.0, latent_layers=2)
    assert k.ck.dtype == torch.float64
