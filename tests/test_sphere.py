"""Spectra on the sphere: Funk-Hecke eigenvalues, multiplicities, sphere data, limit kernels of the cosine."""
import math

import numpy as np
import pytest
import torch
from scipy.special import gamma, iv

import neuralspec as ns


# --- sphere_spectrum ---------------------------------------------------------------------

@pytest.mark.parametrize("d", [2, 3, 5])
def test_exp_kernel_matches_its_closed_form(d):
    K = 40
    s = ns.sphere_spectrum(np.exp, d, K)
    k = np.arange(K + 1)
    exact = gamma(d / 2) * 2 ** (d / 2 - 1) * iv(k + d / 2 - 1, 1.0)
    rel = np.abs(s.eigenvalues - exact) / np.maximum(exact, 1e-4 * exact[0])
    assert rel.max() < 1e-8
    np.testing.assert_array_equal(s.degrees, k)
    np.testing.assert_array_equal(s.multiplicities, ns.sphere_multiplicity(d, k))
    assert s.mercer_sum() == pytest.approx(math.e, rel=1e-10), "kappa(1) = sum_k N(d, k) mu_k"


@pytest.mark.parametrize("d", [2, 3, 5])
def test_polynomial_kernel_has_zero_eigenvalues_above_its_degree(d):
    def kappa(t):
        return 1.0 + 0.5 * t + 0.25 * t**2 + 0.125 * t**3

    s = ns.sphere_spectrum(kappa, d, 12)
    mu = s.eigenvalues
    assert np.all(mu[:4] > 1e-3), "degrees 0..3 carry the polynomial"
    assert np.abs(mu[4:]).max() < 1e-13 * mu[0], "every degree above 3 is zero (to round-off)"
    # a constant kernel: only degree 0, mu_0 = the constant
    s0 = ns.sphere_spectrum(lambda t: np.full_like(t, 2.0), d, 5)
    assert s0.eigenvalues[0] == pytest.approx(2.0, rel=1e-13)
    assert np.abs(s0.eigenvalues[1:]).max() < 1e-13
    # kappa(t) = t has mu_1 = 1/d (x.x' = sum_i x_i x'_i; each x_i has eigenvalue E[x_i^2] = 1/d)
    s1 = ns.sphere_spectrum(lambda t: t, d, 3)
    assert s1.eigenvalues[1] == pytest.approx(1.0 / d, rel=1e-12)


def test_circle_matches_circle_spectrum():
    # on S^1 the Funk-Hecke mu_k are the limit of the circulant eigenvalues / N. The DFT is the
    # trapezoidal rule in theta, which converges only like N^-2 here: the ReLU NTK has a kink
    # at theta = 0 as a periodic function (pi - |theta|), so compare at a large N.
    n = 8192
    theta, x = ns.circle_grid(n)
    ck = ns.analytic.mlp_kernels(x, x[:1], depth=1, parameterization="ntk").ntk[:, 0].numpy()
    _, lam = ns.circle_spectrum(ck)
    model = ns.MLP(2, 8, 1, 1, parameterization="ntk")
    s = ns.sphere_spectrum(ns.limit_kernel_of_cosine(model, "ntk"), 2, 20)
    np.testing.assert_allclose(s.eigenvalues, lam[:21] / n, rtol=0, atol=1e-7 * lam[0] / n)


def test_quadrature_handles_the_arccos_endpoints():
    # deep ReLU kernels are analytic in theta, not in t: doubling the nodes changes nothing
    model = ns.MLP(3, 8, 3, 1, parameterization="ntk", bias=False)
    kappa = ns.limit_kernel_of_cosine(model, "ntk")
    a = ns.sphere_spectrum(kappa, 3, 60)
    b = ns.sphere_spectrum(kappa, 3, 60, n_nodes=1200)
    assert np.abs(a.eigenvalues - b.eigenvalues).max() < 1e-12 * a.eigenvalues[0]
    # the Mercer sum's tail beyond K = 60 is sum N(3, k) mu_k ~ sum 2k k^-3 ~ 1/K: about 1%
    assert a.mercer_sum() == pytest.approx(float(kappa(np.array([1.0]))[0]), rel=2e-2)


def test_repeated_is_sorted_with_multiplicities():
    s = ns.sphere_spectrum(np.exp, 3, 6)
    r = s.repeated()
    assert len(r) == ns.sphere_harmonic_dimension(3, 6) == 49
    assert np.all(np.diff(r) <= 0)
    degs = s.repeated_degrees()
    np.testing.assert_array_equal(np.bincount(degs), s.multiplicities)
    assert len(s.repeated(5)) == 5


# --- multiplicities --------------------------------------------------------------------------

@pytest.mark.parametrize("d", [2, 3, 4, 5, 7, 10])
def test_multiplicity_formula_and_sum(d):
    for k in range(0, 30):
        expected = 1 if k == 0 else (2 * k + d - 2) / k * math.comb(k + d - 3, d - 2)
        assert ns.sphere_multiplicity(d, k) == round(expected)
        total = sum(ns.sphere_multiplicity(d, j) for j in range(k + 1))
        assert total == math.comb(k + d - 1, d - 1) + (math.comb(k + d - 2, d - 1) if k else 0)
        assert total == ns.sphere_harmonic_dimension(d, k)
    assert ns.sphere_multiplicity(2, 7) == 2 and ns.sphere_multiplicity(3, 7) == 15
    np.testing.assert_array_equal(ns.sphere_multiplicity(3, np.arange(4)), [1, 3, 5, 7])


# --- sphere_data --------------------------------------------------------------------------------

def test_sphere_data_is_uniform_on_the_sphere():
    x = ns.sphere_data(4000, 5, seed=0)
    assert x.shape == (4000, 5) and x.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-12)
    assert np.abs(x.mean(0)).max() < 0.05
    np.testing.assert_allclose(x.T @ x / len(x), np.eye(5) / 5, atol=0.02)
    np.testing.assert_array_equal(x, ns.sphere_data(4000, 5, seed=0))
    assert not np.allclose(x[:10], ns.sphere_data(10, 5, seed=1))


# --- limit kernels as functions of the cosine ------------------------------------------------

def test_limit_kernel_of_cosine_matches_mlp_kernels_on_the_sphere():
    d = 4
    x = ns.sphere_data(30, d, seed=3)
    for kw in [dict(parameterization="ntk"), dict(parameterization="ntk", bias=False),
               dict(init="gaussian", w_std=2 ** 0.5, b_std=0.3)]:
        model = ns.MLP(d, 64, 2, 1, **kw)
        lim = ns.analytic.mlp_kernels(x, depth=2, width=64, bias=kw.get("bias", True),
                                      **{k: v for k, v in kw.items() if k != "bias"})
        t = np.clip(x @ x.T, -1, 1)
        for which, ref in [("ntk", lim.ntk), ("ck", lim.ck)]:
            kappa = ns.limit_kernel_of_cosine(model, which)
            # at t = 1 the pair x = e1, x' = e1 goes through arccos(1 - eps): a sqrt(eps) round-off
            np.testing.assert_allclose(kappa(t), ref.numpy(), rtol=1e-7, atol=1e-12)
            assert kappa.d == d and which.upper() in kappa.description


def test_limit_kernel_of_cosine_matches_a_wide_network():
    # the empirical NTK of a wide Gaussian network on sphere points is close to kappa(x.x')
    torch.manual_seed(0)
    d = 3
    x = ns.sphere_data(40, d, seed=1)
    model = ns.MLP(d, 4096, 1, 1, parameterization="ntk").double()
    K = ns.ntk(model, x).numpy()
    kappa = ns.limit_kernel_of_cosine(model, "ntk")
    err = np.abs(K - kappa(np.clip(x @ x.T, -1, 1))).max() / np.abs(K).max()
    assert err < 0.05


# --- bad input ---------------------------------------------------------------------------------

def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="d must be an integer >= 2"):
        ns.sphere_spectrum(np.exp, 1, 5)
    with pytest.raises(ValueError, match="d must be"):
        ns.sphere_spectrum(np.exp, 2.5, 5)
    with pytest.raises(ValueError, match="max_degree must be an integer >= 0"):
        ns.sphere_spectrum(np.exp, 3, -1)
    with pytest.raises(ValueError, match="kernel_of_cosine returned non-finite"):
        ns.sphere_spectrum(lambda t: 1.0 / (1.0 - t) + np.where(t > 0.999, np.nan, 0.0), 3, 5)
    with pytest.raises(ValueError, match="kernel_of_cosine returned non-finite"):
        ns.sphere_spectrum(lambda t: np.where(t < -0.99, np.inf, t), 3, 5)
    with pytest.raises(TypeError, match="kernel_of_cosine must be a callable"):
        ns.sphere_spectrum(3.0, 3, 5)
    with pytest.raises(TypeError, match="not a network"):
        ns.sphere_spectrum(ns.MLP(3, 8, 1, 1, parameterization="ntk"), 3, 5)
    with pytest.raises(ValueError, match="one value per cosine"):
        ns.sphere_spectrum(lambda t: t[:3], 3, 5)
    with pytest.raises(ValueError, match="Pass d = 3"):
        ns.sphere_spectrum(ns.limit_kernel_of_cosine(ns.MLP(3, 8, 1, 1, parameterization="ntk")), 4, 5)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        ns.sphere_data(0, 3)
    with pytest.raises(ValueError, match="d must be an integer >= 2"):
        ns.sphere_data(5, 1)
    with pytest.raises(ValueError, match="d must be"):
        ns.sphere_multiplicity(1, 3)
    with pytest.raises(ValueError, match="k must be"):
        ns.sphere_multiplicity(3, -1)
    with pytest.raises(ValueError, match="not rotation invariant"):
        ns.limit_kernel_of_cosine(ns.MLP(3, 8, 1, 1))              # PyTorch's uniform init
    with pytest.raises(ValueError, match="which must be"):
        ns.limit_kernel_of_cosine(ns.MLP(3, 8, 1, 1, parameterization="ntk"), "nngp_typo")
    with pytest.raises(TypeError, match="MLP"):
        ns.limit_kernel_of_cosine(torch.nn.Linear(3, 1))
    with pytest.raises(ValueError, match="d >= 2"):
        ns.limit_kernel_of_cosine(ns.MLP(1, 8, 1, 1, parameterization="ntk"))
    kappa = ns.limit_kernel_of_cosine(ns.MLP(3, 8, 1, 1, parameterization="ntk"))
    with pytest.raises(ValueError, match=r"cosines in \[-1, 1\]"):
        kappa(np.array([0.5, 1.5]))


# --- the sphere explorer: pure function + thin widget ---------------------------------------------

def test_sphere_explore_reproduces_the_relu_exponents():
    from neuralspec.sphere_widgets import SphereExplorerData, sphere_explore

    for d in [2, 3, 5]:
        ntk = sphere_explore(d=d, kernel="NTK")
        ck = sphere_explore(d=d, kernel="ck")
        assert isinstance(ntk, SphereExplorerData) and ck.settings.kernel == "CK"
        assert abs(ntk.fit.exponent + d) < 0.3 and ntk.predicted_exponent == -d
        assert abs(ck.fit.exponent + d + 2) < 0.5 and ck.predicted_exponent == -(d + 2)
        assert ntk.eigenvalues.shape == (61,) and ntk.multiplicities[1] == d
    odd = sphere_explore(d=3).relative[3:20:2]
    assert np.abs(odd).max() < 1e-10, "no bias: the odd degrees >= 3 vanish"
    assert sphere_explore(d=3, bias=0.1).relative[3] > 1e-5, "a bias brings them back"
    assert sphere_explore(d=3, depth=3).relative[3] > 1e-3, "so does depth"
    erf = sphere_explore(d=3, activation="erf")
    assert abs(erf.relative[0]) < 1e-12 and erf.relative[1] == 1.0, "erf is odd: no degree 0 without bias"
    assert erf.fit_parity == "odd" and erf.fit.exponent < -10 and erf.predicted_exponent is None
    sin = sphere_explore(d=3, activation="sin", max_degree=40, fit_from=12)
    assert sin.fit is None and "faster than any power" in sin.summary()


def test_sphere_settings_validate():
    from neuralspec.sphere_widgets import SphereSettings, sphere_explore

    with pytest.raises(ValueError, match="d must be between 2 and 10"):
        SphereSettings(d=1)
    with pytest.raises(ValueError, match="kernel must be"):
        SphereSettings(kernel="feature")
    with pytest.raises(ValueError, match="bias must be"):
        SphereSettings(bias=-0.1)
    with pytest.raises(TypeError, match="depth must be an integer"):
        SphereSettings(depth=1.5)
    with pytest.raises(TypeError, match="unknown setting"):
        sphere_explore(width=3)
    assert SphereSettings().replace(d=4).d == 4


def test_sphere_explorer_widget_updates():
    pytest.importorskip("ipywidgets")
    import matplotlib
    matplotlib.use("Agg")
    from neuralspec.sphere_widgets import SphereExplorer

    ex = SphereExplorer(d=3)
    assert ex.n_updates == 1 and ex.image.value[:4] == b"\x89PNG"
    ex.controls["d"].value = 5
    assert ex.n_updates == 2 and ex.data.settings.d == 5
    assert abs(ex.data.fit.exponent + 5) < 0.3
    ex.controls["kernel"].value = "CK"
    assert ex.data.settings.kernel == "CK" and ex.error is None
    bundle = ex._repr_mimebundle_()
    assert "image/png" in bundle and "application/vnd.jupyter.widget-view+json" in bundle


def test_limit_kernel_of_cosine_for_smooth_activations():
    # erf, no bias, sigma_w^2 = 2 on S^2: Sigma = 2t/3, CK = (2/pi) arcsin(2 Sigma / (1 + 2 * 2/3))
    model = ns.MLP(3, 16, 1, 1, activation="erf", parameterization="ntk", bias=False, w_std=2 ** 0.5)
    kappa = ns.limit_kernel_of_cosine(model, "ck")
    t = np.linspace(-1, 1, 41)
    np.testing.assert_allclose(kappa(t), 2 / np.pi * np.arcsin(4 * t / 7), rtol=1e-12, atol=1e-14)
    s = ns.sphere_spectrum(kappa, 3, 30)
    assert np.abs(s.eigenvalues[0::2]).max() < 1e-14, "an odd activation without bias: no even degrees"
    big = ns.sphere_spectrum(kappa, 3, 30, n_nodes=1000)
    assert np.abs(s.eigenvalues - big.eigenvalues).max() < 1e-13 * np.abs(s.eigenvalues).max()
    gelu = ns.limit_kernel_of_cosine(ns.MLP(3, 16, 2, 1, activation="gelu", parameterization="ntk"), "ntk")
    assert np.all(np.isfinite(gelu(t))) and gelu.d == 3
