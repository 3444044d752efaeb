"""Tests for neuralspec.learning: kernel regression and spectral learning curves."""
import numpy as np
import pytest
import scipy.optimize
import torch

import neuralspec as ns
from neuralspec.learning import kernel_regression, learning_curve, target_power


def direct_theory(mu, v2, p, ridge, noise):
    """The four formulas, written out directly (kappa by fixed-point-free brentq on the raw equation)."""
    f = lambda k: k - ridge - k * np.sum(mu / (p * mu + k))   # noqa: E731
    kappa = scipy.optimize.brentq(f, ridge, ridge + mu.sum(), xtol=1e-300, rtol=1e-15)
    L = p * mu / (p * mu + kappa)
    gamma = np.sum(p * mu**2 / (p * mu + kappa) ** 2)
    E = (np.sum((1 - L) ** 2 * v2) + noise * gamma) / (1 - gamma)
    return kappa, L, gamma, E


@pytest.mark.parametrize("ridge, noise", [(1e-2, 0.0), (0.3, 0.1), (1e-4, 0.5)])
def test_learning_curve_matches_direct_formulas(ridge, noise):
    rng = np.random.default_rng(0)
    mu = np.sort(rng.exponential(size=200) * np.arange(1, 201) ** -1.5)[::-1]
    v2 = rng.exponential(size=200) * np.arange(1, 201) ** -1.0
    ps = [1, 3, 10, 50, 199, 400, 2000]
    curve = learning_curve(mu, v2, ps, ridge=ridge, noise=noise)
    for i, p in enumerate(ps):
        kappa, L, gamma, E = direct_theory(mu, v2, p, ridge, noise)
        assert abs(curve.kappa[i] - kappa) <= 1e-10 * kappa
        np.testing.assert_allclose(curve.learnability[i], L, rtol=1e-10, atol=1e-14)
        assert abs(curve.gamma[i] - gamma) <= 1e-10
        assert abs(curve.test_error[i] - E) <= 1e-10 * E
        assert abs(curve.mode_errors[i].sum() + noise * gamma / (1 - gamma) - E) <= 1e-10 * E


def test_learning_curve_ridgeless_matches_direct_formulas():
    """Ridge 0 with p below the number of modes: kappa > 0 solves sum mu/(p mu + kappa) = 1."""
    rng = np.random.default_rng(1)
    mu = rng.exponential(size=300) * np.arange(1, 301) ** -2.0
    v2 = rng.exponential(size=300)
    ps = [2, 20, 150, 290]
    curve = learning_curve(mu, v2, ps)
    for i, p in enumerate(ps):
        g = lambda k: 1 - np.sum(mu / (p * mu + k))   # noqa: E731
        kappa = scipy.optimize.brentq(g, 1e-30, mu.sum(), xtol=1e-300, rtol=1e-15)
        L = p * mu / (p * mu + kappa)
        gamma = np.sum(p * mu**2 / (p * mu + kappa) ** 2)
        E = np.sum((1 - L) ** 2 * v2) / (1 - gamma)
        assert abs(curve.kappa[i] - kappa) <= 1e-10 * kappa
        assert abs(curve.test_error[i] - E) <= 1e-10 * E


def test_learning_curve_small_p_limit():
    """p -> 0: nothing is learned, E_g -> sum v_k^2 (+ nothing from noise)."""
    k = np.arange(1, 501)
    mu, v2 = k ** -1.5, 1.0 / k
    for ridge in [0.0, 1e-3, 1.0]:
        curve = learning_curve(mu, v2, [1], ridge=ridge, noise=0.2)
        assert abs(curve.test_error[0] - v2.sum()) < 0.05 * v2.sum()
    # and the approach is monotone: with ridge, E_g(p=1) -> sum v2 as mu -> 0
    tiny = learning_curve(1e-9 * mu, v2, [1], ridge=1.0)
    assert abs(tiny.test_error[0] - v2.sum()) < 1e-6 * v2.sum()


def test_learning_curve_finite_rank_large_p():
    """Ridge 0, rank r and p >> r: every nonzero mode is learned; E_g -> the power of the zero modes."""
    r = 20
    mu = np.r_[np.arange(1, r + 1) ** -2.0, np.zeros(30)]
    v2 = np.r_[np.ones(r), 0.01 * np.ones(30)]
    curve = learning_curve(mu, v2, [r, 2 * r, 100 * r, 10**6], noise=0.0)
    assert np.all(curve.kappa[1:] == 0)
    assert np.all(curve.learnability[1:, :r] == 1) and np.all(curve.learnability[:, r:] == 0)
    np.testing.assert_allclose(curve.gamma[1:], r / np.array([2 * r, 100 * r, 10**6]), rtol=1e-12)
    unlearnable = v2[r:].sum()
    assert np.isinf(curve.test_error[0])            # p = r: the interpolation peak
    assert abs(curve.test_error[-1] - unlearnable) < 1e-4 * unlearnable
    np.testing.assert_allclose(curve.test_error[1:], unlearnable / (1 - r / np.array([2 * r, 100 * r, 10**6])),
                               rtol=1e-12)
    # with noise, the noise part is sigma^2 r / (p - r)
    noisy = learning_curve(mu, v2, [4 * r], noise=0.5)
    assert abs(noisy.test_error[0] - (unlearnable / (1 - 0.25) + 0.5 / 3)) < 1e-12


def test_learning_curve_round_off_and_zero_eigenvalues():
    mu = np.array([1.0, 0.1, 0.0, -1e-9])
    curve = learning_curve(mu, [1.0, 1.0, 1.0, 1.0], [1, 2, 5], ridge=0.0)
    assert np.all(np.isfinite(curve.kappa)) and curve.eigenvalues[-1] == 0
    assert np.all(curve.learnability[:, 2:] == 0)
    assert abs(curve.test_error[-1] - 2.0 / (1 - 2 / 5)) < 1e-12


def test_learning_curve_monotone_and_vectorized():
    k = np.arange(1, 2001)
    curve = learning_curve(torch.tensor(k ** -1.2), k ** -1.0, np.array([8, 16, 32, 64, 128, 256, 512]),
                           ridge=1e-3)
    assert curve.learnability.shape == (7, 2000)
    assert np.all(np.diff(curve.test_error) < 0)
    assert np.all(np.diff(curve.learnability, axis=0) >= 0)
    assert np.all(np.diff(curve.learnability, axis=1) <= 1e-15)   # descending eigenvalues: descending L


@pytest.mark.parametrize("kwargs, match", [
    (dict(eigenvalues=[1.0, -0.1]), "eigenvalues must be >= 0"),
    (dict(eigenvalues=[1.0, np.nan]), "eigenvalues contains non-finite"),
    (dict(eigenvalues=[[1.0, 0.5]]), "eigenvalues must be a non-empty 1-D"),
    (dict(target_power=[1.0]), "target_power must have the shape"),
    (dict(target_power=[1.0, -1.0]), "target_power must be >= 0"),
    (dict(ridge=-1.0), "ridge must be a finite number >= 0"),
    (dict(noise=-0.1), "noise must be a finite number >= 0"),
    (dict(noise=np.inf), "noise must be a finite number >= 0"),
    (dict(n_train=0), "n_train must hold positive integers"),
    (dict(n_train=[10, 2.5]), "n_train must hold positive integers"),
    (dict(n_train=[]), "n_train must be a positive integer"),
    (dict(n_train=True), "n_train must hold positive integers"),
])
def test_learning_curve_bad_inputs(kwargs, match):
    args = dict(eigenvalues=[1.0, 0.5], target_power=[1.0, 1.0], n_train=[10])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        learning_curve(args.pop("eigenvalues"), args.pop("target_power"), args.pop("n_train"), **args)


# ----------------------------------------------------------------------------
# kernel regression
# ----------------------------------------------------------------------------

def _kernel(rng, n, m):
    x = rng.standard_normal((n + m, 3))
    K = np.exp(-0.5 * ((x[:, None] - x[None]) ** 2).sum(-1))
    return K[:n, :n], K[n:, :n]


@pytest.mark.parametrize("ridge", [0.0, 1e-3, 0.5])
def test_kernel_regression_matches_solve(ridge):
    rng = np.random.default_rng(0)
    K, Ks = _kernel(rng, 40, 25)
    y = rng.standard_normal((40, 2))
    expected = Ks @ np.linalg.solve(K + ridge * np.eye(40), y)
    got = kernel_regression(K, y, Ks, ridge=ridge)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10 * np.abs(expected).max())
    one = kernel_regression(torch.tensor(K), torch.tensor(y[:, 0]), torch.tensor(Ks), ridge=ridge)
    assert one.shape == (25,) and one.dtype == np.float64
    np.testing.assert_allclose(one, expected[:, 0], rtol=0, atol=1e-10 * np.abs(expected).max())


def test_kernel_regression_small_solves_run_on_one_blas_thread(monkeypatch):
    """Small systems are solved with numpy's/scipy's BLAS limited to one thread, and the
    thread counts are restored afterwards; large ones keep the process's setting."""
    from threadpoolctl import threadpool_info, threadpool_limits

    import neuralspec.learning as learning

    seen = []
    inner = learning._solve_and_predict
    monkeypatch.setattr(learning, "_solve_and_predict", lambda *a: (
        seen.append(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")), inner(*a))[1])
    rng = np.random.default_rng(0)
    K, Ks = _kernel(rng, 40, 5)
    with threadpool_limits(2, user_api="blas"):
        before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
        kernel_regression(K, rng.standard_normal(40), Ks)
        monkeypatch.setattr(learning, "_ONE_THREAD_BELOW", 10)      # 40 points count as large now
        kernel_regression(K, rng.standard_normal(40), Ks)
        after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert seen == [1, max(before)] and after == before


def test_kernel_regression_interpolates_and_handles_singular():
    rng = np.random.default_rng(2)
    K, _ = _kernel(rng, 30, 0)
    y = rng.standard_normal(30)
    np.testing.assert_allclose(kernel_regression(K, y, K), y, atol=1e-6)
    # rank-5 kernel (linear features): ridgeless = minimum-norm least squares, no blow-up
    phi = rng.standard_normal((30, 5))
    Kr = phi @ phi.T
    pred = kernel_regression(Kr, y, Kr)
    w = np.linalg.lstsq(phi, y, rcond=None)[0]
    np.testing.assert_allclose(pred, phi @ w, atol=1e-8)


@pytest.mark.parametrize("args, match", [
    ((np.eye(3)[:2], np.ones(3), np.ones((4, 3))), "K_train must be a square"),
    ((np.eye(3), np.ones(4), np.ones((4, 3))), "y_train must have shape"),
    ((np.eye(3), np.ones(3), np.ones((4, 2))), "K_test_train must have shape"),
    ((np.diag([1.0, np.nan, 1.0]), np.ones(3), np.ones((4, 3))), "K_train contains non-finite"),
    ((np.eye(3), np.ones(3), np.full((4, 3), np.inf)), "K_test_train contains non-finite"),
    ((np.triu(np.ones((3, 3))), np.ones(3), np.ones((4, 3))), "K_train must be symmetric"),
])
def test_kernel_regression_bad_inputs(args, match):
    with pytest.raises(ValueError, match=match):
        kernel_regression(*args)


def test_kernel_regression_bad_ridge():
    with pytest.raises(ValueError, match="ridge must be a finite number >= 0"):
        kernel_regression(np.eye(3), np.ones(3), np.ones((4, 3)), ridge=-1e-3)
    with pytest.raises(ValueError, match="not positive definite"):
        kernel_regression(-np.eye(3), np.ones(3), np.ones((4, 3)), ridge=0.5)


def test_target_power():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((50, 50))
    lam, U = np.linalg.eigh(A @ A.T)
    y = rng.standard_normal(50)
    v2 = target_power(U, y)
    assert abs(v2.sum() - np.mean(y**2)) < 1e-12
    np.testing.assert_allclose(target_power(torch.tensor(U), np.c_[y, 2 * y])[:, 1], 4 * v2)
    with pytest.raises(ValueError, match="y must have shape"):
        target_power(U, y[:-1])
    with pytest.raises(ValueError, match="U must be a 2-D"):
        target_power(U[0], y)


def test_exported():
    assert ns.kernel_regression is kernel_regression
    assert ns.learning_curve is learning_curve and ns.target_power is target_power
    assert "LearningCurve" in ns.__all__


# ----------------------------------------------------------------------------
# the learning-curve lab
# ----------------------------------------------------------------------------

def test_learning_lab_data():
    from neuralspec.learning_widgets import learning_lab
    d = learning_lab(n_train=48, ridge=0.1, noise=0.0, p_max=64, trials=3, n_test=100)
    assert 48 in d.ps and d.ps.max() == 64
    assert d.predicted.shape == d.simulated.shape == d.stderr.shape == d.ps.shape
    assert np.all(np.diff(d.predicted) < 0)
    assert d.learnability.shape == d.frequencies.shape and np.all((0 <= d.learnability) & (d.learnability <= 1))
    assert d.learnability[0] > d.learnability[6]        # frequency 1 is learned before frequency 7
    # with a ridge of 0.1 the prediction is close to the simulation at p = 64 (the chapter measures it)
    assert 0.7 < d.ratio[-1] < 1.4
    with pytest.raises(ValueError, match="n_train must be <= p_max"):
        learning_lab(n_train=100, p_max=64)
    with pytest.raises(ValueError, match="ridge must be a finite number >= 0"):
        learning_lab(n_train=8, ridge=-1.0, p_max=16, trials=1)


def test_learning_lab_widget():
    pytest.importorskip("ipywidgets")
    from neuralspec.learning_widgets import LearningLab
    lab = LearningLab(n_train=16, ridge=0.01, p_max=32, trials=2, n_test=50)
    first = lab.data
    assert lab.image.value[:4] == b"\x89PNG"
    lab.controls["ridge"].value = 1.0
    assert lab.data is not first and lab.data.ridge == 1.0
    lab.controls["n_train"].value = 8
    assert lab.data.n_train == 8 and "LearningLab" in repr(lab)
    assert "image/png" in lab._repr_mimebundle_()


# ----------------------------------------------------------------------------
# spectra on the sphere, and grouped modes
# ----------------------------------------------------------------------------

def test_multiplicity_equals_repeated_modes():
    mu, m = np.array([1.0, 0.3, 0.01, 0.0]), np.array([1, 3, 10, 5])
    v2 = np.array([0.5, 0.3, 0.2, 0.1])
    grouped = learning_curve(mu, v2, [2, 7, 30], ridge=1e-3, noise=0.1, multiplicity=m)
    rep = learning_curve(np.repeat(mu, m), np.repeat(v2 / m, m), [2, 7, 30], ridge=1e-3, noise=0.1)
    np.testing.assert_allclose(grouped.test_error, rep.test_error, rtol=1e-12)
    np.testing.assert_allclose(grouped.kappa, rep.kappa, rtol=1e-12)
    with pytest.raises(ValueError, match="multiplicity must be"):
        learning_curve(mu, v2, [2], multiplicity=[1, 0, 1, 1])
