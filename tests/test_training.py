"""Training loop, NTK-linearized predictions, and the frequency tools (training.py, data.py).

Tolerances, and why:

* The loop is ``torch.optim.SGD`` on ``0.5 * mean(r**2)``: parameters must be
  *bitwise* equal to a hand-written SGD loop.
* For a model that is linear in its parameters (a trained readout on frozen
  random features) the NTK is constant, so the linearized prediction is exact:
  1e-9 relative in float64.
* For a wide two-layer network (NTK parameterization, GELU, width 4096,
  N = 64 points on the circle, lr = N / lambda_max, 200 steps) the measured
  sup_t ||r_t - r_lin_t|| / ||r_0|| is about 0.5%; we require < 2%, and
  the narrow network (width 32) to be at least 4x worse.
* Basri et al. (2019): two-layer ReLU NTK on the circle, eigenvalue of
  frequency k ~ k^-2 (CK ~ k^-4), odd k >= 3 exactly zero without bias. The
  analytic limit fitted over even k in [8, 128] gives -2.009 and -4.006; we
  require +-0.05. A width-1024 network's empirical kernels fitted over even
  k in [4, 32] give -2.08 and -4.05; we require +-0.2.
"""
import copy
import math

import numpy as np
import pytest
import torch

import neuralspec as ns


def _circle_gelu(width, n=64, seed=0, dtype=torch.float32):
    ns.set_seed(seed)
    theta, x, y = ns.circle_data(n, [1, 2, 4], 1.0, [0.3, 1.0, 2.0])
    model = ns.MLP(2, width, 1, 1, activation="gelu", parameterization="ntk").to(dtype)
    return x, y, model


def _lazy_error(width, steps=200):
    x, y, model = _circle_gelu(width)
    K = ns.ntk(model, x).double()
    lam, U = ns.eigh(K)
    lr = x.shape[0] / float(lam[0])
    run = ns.train(model, x, y, lr=lr, steps=steps, record_every=10, lambda_max=float(lam[0]))
    pred = ns.predict_residuals(lam, U, run.residuals[0], lr, run.steps)
    return (np.linalg.norm(run.residuals - pred, axis=1).max()
            / np.linalg.norm(run.residuals[0]))


# ----------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------

def test_train_reproduces_torch_sgd_bitwise():
    torch.manual_seed(1)
    x = torch.rand(20, 2)
    y = torch.randn(20)
    model = ns.MLP(2, 32, 2, 1)
    ref = copy.deepcopy(model)
    run = ns.train(model, x, y, lr=0.05, steps=7, check_stability=False)

    opt = torch.optim.SGD(ref.parameters(), lr=0.05)
    losses = []
    for _ in range(7):
        r = ref(x).reshape(-1) - y
        loss = 0.5 * (r ** 2).mean()          # 1/(2N) sum_i r_i^2
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q), "train() must take exactly torch.optim.SGD's steps"
    np.testing.assert_allclose(run.loss_history[:7], losses, rtol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(run.residuals[-1], (ref(x).reshape(-1) - y).double().numpy(), rtol=0, atol=0)
    assert run.steps.tolist() == list(range(8))
    assert run.residuals.shape == (8, 20) and run.losses.shape == (8,)
    np.testing.assert_allclose(run.losses, 0.5 * (run.residuals ** 2).mean(1))


def test_record_at_and_targets():
    x, y = ns.sine_data(16, [1])
    model = ns.MLP(1, 8, 1, 1).double()
    run = ns.train(model, x, y[:, None], lr=0.01, steps=10, record_at=[0, 3, 10])
    assert run.steps.tolist() == [0, 3, 10]
    np.testing.assert_allclose(run.predictions - run.residuals, np.broadcast_to(y, (3, 16)), atol=1e-12)
    run = ns.train(model, x, y, lr=0.01, steps=10, record_every=4)
    assert run.steps.tolist() == [0, 4, 8, 10]
    assert run.lambda_max is not None and run.stability_limit == pytest.approx(2 * 16 / run.lambda_max)


# ----------------------------------------------------------------------------
# NTK predictions
# ----------------------------------------------------------------------------

def test_prediction_exact_for_a_model_linear_in_its_parameters():
    # A readout on frozen random features: f is linear in the trainable
    # parameters, the NTK is constant, and the linearized dynamics are exact.
    ns.set_seed(0)
    x, y = ns.sine_data(40, [1, 3])
    model = ns.RFFMLP(1, 8.0, 64, 1, 1).double()
    K = ns.ntk(model, x)
    lam, U = ns.eigh(K)
    lr = 1.5 * 40 / float(lam[0])
    run = ns.train(model, x, y, lr=lr, steps=50, lambda_max=float(lam[0]))
    pred = ns.predict_residuals(lam, U, run.residuals[0], lr, run.steps)
    err = np.abs(run.residuals - pred).max() / np.abs(run.residuals[0]).max()
    assert err < 1e-9, err
    # per eigen-direction: c_t = (1 - lr lambda / N)^t c_0
    c = ns.project_residuals(run.residuals, U)
    g = (1 - lr * lam.numpy() / 40) ** 50
    np.testing.assert_allclose(c[-1], g * c[0], atol=1e-9 * np.abs(c[0]).max())
    # top-k eigenpairs only: the rest of r0 is held fixed
    pred_k = ns.predict_residuals(lam[:5], U[:, :5], run.residuals[0], lr, 50)
    assert pred_k.shape == (51, 40)
    np.testing.assert_allclose(ns.project_residuals(pred_k[-1], U[:, :5]), c[-1, :5], atol=1e-9)


def test_linearized_prediction_matches_wide_network():
    wide = _lazy_error(4096)
    narrow = _lazy_error(32)
    assert wide < 0.02, f"lazy regime: linearized prediction off by {wide:.3%} at width 4096"
    assert narrow > 4 * wide, f"narrow network should depart from the NTK prediction ({narrow:.3%} vs {wide:.3%})"


def test_continuous_time_is_the_small_lr_limit():
    lam = np.array([4.0, 1.0, 0.25])
    U = np.eye(3)
    r0 = np.array([1.0, -2.0, 0.5])
    d = ns.predict_residuals(lam, U, r0, 1e-3, [0, 1000, 5000])
    c = ns.predict_residuals(lam, U, r0, 1e-3, [0, 1000, 5000], continuous=True)
    np.testing.assert_allclose(d, c, rtol=1e-2)  # O(t (lr lambda / N)^2)
    np.testing.assert_allclose(c[-1], r0 * np.exp(-1e-3 * lam * 5000 / 3))


def test_time_to_learn():
    steps = np.arange(0, 101)
    comps = np.stack([0.9 ** steps, 0.99 ** steps, np.zeros_like(steps, float)], axis=1)
    t = ns.time_to_learn(comps, steps, threshold=0.1)
    assert t[0] == math.ceil(math.log(0.1) / math.log(0.9))
    assert np.isinf(t[1]) and np.isnan(t[2])
    with pytest.raises(ValueError, match="threshold"):
        ns.time_to_learn(comps, steps, threshold=1.5)
    with pytest.raises(ValueError, match="len\\(steps\\)"):
        ns.time_to_learn(comps, steps[:-1])


# ----------------------------------------------------------------------------
# stability and divergence
# ----------------------------------------------------------------------------

def test_stability_limit_and_lambda_max():
    x, y, model = _circle_gelu(256, n=32, dtype=torch.float64)
    lam = ns.eigenvalues(ns.ntk(model, x))
    est = ns.ntk_lambda_max(model, x)
    assert est == pytest.approx(float(lam[0]), rel=1e-6)
    limit = ns.stability_limit(lam, 32)
    assert limit == pytest.approx(2 * 32 / float(lam[0]))
    with pytest.raises(ValueError, match="stability limit"):
        ns.train(model, x, y, lr=1.01 * limit, steps=5)
    with pytest.raises(ValueError, match="stability limit"):
        ns.check_learning_rate(1.01 * limit, lam, 32)
    U = np.eye(32)
    with pytest.raises(ValueError, match="stability limit"):
        ns.predict_residuals(lam, U, np.ones(32), 1.01 * limit, 3)
    ns.predict_residuals(lam, U, np.ones(32), 1.01 * limit, [0.0, 2.5], continuous=True)  # flow: no limit
    run = ns.train(model, x, y, lr=0.99 * limit, steps=5)   # just below: allowed
    assert np.isfinite(run.losses).all()


def test_divergence_is_reported_with_its_step():
    x, y, model = _circle_gelu(64, n=32)
    limit = ns.stability_limit(ns.ntk_lambda_max(model, x), 32)
    with pytest.raises(FloatingPointError, match=r"diverged.*at step \d+ of 500"):
        ns.train(model, x, y, lr=50 * limit, steps=500, check_stability=False)


# ----------------------------------------------------------------------------
# input validation
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad_y, match", [
    (np.zeros((10, 2)), r"shape \(10,\) or \(10, 1\)"),
    (np.zeros(9), r"shape \(10,\) or \(10, 1\)"),
    (np.array([0.0] * 9 + [np.nan]), "NaN"),
    (torch.zeros(10, dtype=torch.float64), "dtype"),
])
def test_bad_targets(bad_y, match):
    model = ns.MLP(1, 8, 1, 1)
    x = np.linspace(0, 1, 10)[:, None]
    with pytest.raises((ValueError, TypeError), match=match):
        ns.train(model, x, bad_y, lr=0.1, steps=1, check_stability=False)


def test_bad_inputs_and_arguments():
    model = ns.MLP(1, 8, 1, 1)
    x, y = ns.sine_data(10, [1])
    with pytest.raises(ValueError, match="2-D"):
        ns.train(model, x[:, 0], y, lr=0.1, steps=1)
    with pytest.raises(ValueError, match="lr"):
        ns.train(model, x, y, lr=-1.0, steps=1)
    with pytest.raises(ValueError, match="steps"):
        ns.train(model, x, y, lr=0.1, steps=-1)
    with pytest.raises(ValueError, match="record_at"):
        ns.train(model, x, y, lr=0.1, steps=5, record_at=[0, 6], check_stability=False)
    with pytest.raises(ValueError, match="not both"):
        ns.train(model, x, y, lr=0.1, steps=5, record_at=[0], record_every=2)
    with pytest.raises(ValueError, match="scalar-output"):
        ns.train(ns.MLP(1, 8, 1, 3), x, y, lr=0.1, steps=1, check_stability=False)
    with pytest.raises(ValueError, match=r"\(T, N\) or \(N,\)"):
        ns.project_residuals(np.zeros((3, 9)), np.eye(10))
    with pytest.raises(ValueError, match="r0"):
        ns.predict_residuals(np.ones(10), np.eye(10), np.ones(9), 0.1, 3)
    with pytest.raises(ValueError, match="negative"):
        ns.predict_residuals(-np.arange(10.0) + 1, np.eye(10), np.ones(10), 0.1, 3)


# ----------------------------------------------------------------------------
# data with known frequencies
# ----------------------------------------------------------------------------

def test_sine_data_amplitudes_are_exact():
    x, y = ns.sine_data(64, [1, 5, 12], [1.0, 0.5, 0.25], [0.3, 2.0, -1.0])
    assert x.shape == (64, 1) and y.shape == (64,) and x[-1, 0] < 1
    amp = ns.frequency_amplitudes(y)
    expected = np.zeros(33)
    expected[[1, 5, 12]] = [1.0, 0.5, 0.25]
    np.testing.assert_allclose(amp, expected, atol=1e-12)
    np.testing.assert_allclose(ns.frequency_amplitudes(np.stack([y, 2 * y]), [5, 12]),
                               [[0.5, 0.25], [1.0, 0.5]], atol=1e-12)
    xt, _ = ns.sine_data(64, [1], offset=0.5)
    np.testing.assert_allclose(xt[:, 0], (np.arange(64) + 0.5) / 64)


def test_fourier_modes_are_orthonormal_and_circle_data():
    P, k = ns.fourier_modes(16, 8)
    assert P.shape == (16, 16) and k.tolist() == [0] + sum([[i, i] for i in range(1, 8)], []) + [8]
    np.testing.assert_allclose(P.T @ P, np.eye(16), atol=1e-12)
    theta, x, y = ns.circle_data(32, [3], 2.0, math.pi / 2)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0)
    np.testing.assert_allclose(y, 2 * np.cos(3 * theta), atol=1e-12)
    with pytest.raises(ValueError, match="integers in"):
        ns.fourier_modes(16, [9])


def test_circle_spectrum_is_the_circulant_eigenvalues():
    n = 24
    theta, x = ns.circle_grid(n)
    K = np.exp(np.cos(theta[:, None] - theta[None, :]))   # rotation invariant
    k, lam = ns.circle_spectrum(K)
    assert k.tolist() == list(range(13))
    mult = np.array([1] + [2] * 11 + [1])
    np.testing.assert_allclose(np.sort(np.repeat(lam, mult)), np.sort(np.linalg.eigvalsh(K)), atol=1e-10)
    np.testing.assert_allclose(ns.circle_spectrum(K[0])[1], lam, atol=1e-12)
    # each Fourier mode is an eigenvector with that eigenvalue
    P, pk = ns.fourier_modes(n, 12)
    np.testing.assert_allclose(K @ P, P * lam[pk], atol=1e-10)
    with pytest.raises(ValueError, match="not circulant"):
        ns.circle_spectrum(K + np.diag(np.arange(n)))
    with pytest.raises(ValueError, match=r"\(N, N\)"):
        ns.circle_spectrum(np.zeros((3, 4)))


def test_fit_power_law():
    k = np.arange(1, 50)
    fit = ns.fit_power_law(k, 3.0 * k ** -2.5)
    assert fit.exponent == pytest.approx(-2.5) and fit.prefactor == pytest.approx(3.0)
    assert fit.rms_log_residual < 1e-12
    np.testing.assert_allclose(fit(k), 3.0 * k ** -2.5)
    with pytest.raises(ValueError, match="> 0"):
        ns.fit_power_law([1, 2, 3], [1.0, 0.0, 0.1])


# ----------------------------------------------------------------------------
# spectral bias on the circle (Basri et al. 2019)
# ----------------------------------------------------------------------------

def _textbook_two_layer_relu(theta):
    """Two-layer ReLU, no bias, unit inputs, w ~ N(0, I): CK and NTK (Cho & Saul 2009)."""
    u = np.cos(theta)
    t = np.arccos(np.clip(u, -1, 1))
    ck = (np.sin(t) + (np.pi - t) * u) / (2 * np.pi)       # E[relu(w.x) relu(w.x')]
    step = (np.pi - t) / (2 * np.pi)                          # E[step(w.x) step(w.x')]
    return ck, ck + u * step                                  # NTK: readout + first layer


def test_basri_decay_exponents_analytic():
    n = 2048
    theta, x = ns.circle_grid(n)
    even = np.arange(8, 129, 2)
    odd = np.arange(3, 129, 2)
    ck_tb, ntk_tb = _textbook_two_layer_relu(theta)
    ck, ntk = ns.analytic.mlp_kernels(x, x[:1], depth=1, parameterization="ntk", bias=False)
    for name, row, p in [("NTK", ntk[:, 0], -2.0), ("CK", ck[:, 0], -4.0),
                         ("NTK (textbook)", ntk_tb, -2.0), ("CK (textbook)", ck_tb, -4.0)]:
        _, lam = ns.circle_spectrum(row)
        fit = ns.fit_power_law(even, lam[even])
        assert abs(fit.exponent - p) < 0.05, f"{name}: fitted exponent {fit.exponent:.3f}, published {p}"
        assert np.abs(lam[odd]).max() < 1e-12 * lam[0], f"{name}: odd frequencies k >= 3 must vanish"
    # with a bias the odd frequencies come back, with the same decay
    _, ntk_b = ns.analytic.mlp_kernels(x, x[:1], depth=1, parameterization="ntk", bias=True, b_std=0.5)
    _, lam = ns.circle_spectrum(ntk_b[:, 0])
    assert lam[3] > 1e-3 * lam[0]
    assert abs(ns.fit_power_law(odd[odd >= 9], lam[odd[odd >= 9]]).exponent + 2) < 0.05


def test_basri_decay_exponents_empirical():
    n = 128
    theta, x = ns.circle_grid(n)
    ns.set_seed(0)
    model = ns.MLP(2, 1024, 1, 1, parameterization="ntk", bias=False).double()
    even = np.arange(4, 33, 2)
    for name, K, p in [("NTK", ns.ntk(model, x), -2.0), ("CK", ns.conjugate_kernel(model, x), -4.0)]:
        k, lam = ns.circle_spectrum(K, check=False)
        fit = ns.fit_power_law(even, lam[even])
        assert abs(fit.exponent - p) < 0.2, f"{name}: fitted exponent {fit.exponent:.3f}, published {p}"
        assert np.abs(lam[3::2]).max() < 1e-10 * lam.max(), f"{name}: odd k >= 3 vanish even at finite width"


def test_threads_setting_is_restored():
    x, y = ns.sine_data(16, [1])
    model = ns.MLP(1, 8, 1, 1)
    before = torch.get_num_threads()
    ns.train(model, x, y, lr=0.01, steps=3)                       # small: one thread inside
    ns.train(model, x, y, lr=0.01, steps=3, threads=None)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="threads"):
        ns.train(model, x, y, lr=0.01, steps=3, threads=0)
