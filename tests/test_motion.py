"""Kernel motion (motion.py), the muP MLP (models.py), train(record_kernel_every=...) and the motion widget.

Tolerances, and why:

* Alignment identities (yy^T with itself, orthogonal kernels, scaling) are exact up to
  float64 round-off: 1e-12.
* The structured NTK of a muP MLP against a plain torch.func Jacobian contraction, in
  float64: 1e-10 relative (measured ~1e-15).
* The kernels recorded during training against ns.ntk of a copy trained step by step
  with the same SGD: bitwise-equal parameters, so 1e-6 relative in float32.
* Top eigenpairs recorded matrix-free (Lanczos) against eigh of the full kernel: 1e-4
  relative in float64.
"""
import copy

import numpy as np
import pytest
import torch

import neuralspec as ns
from neuralspec.motion_widgets import MotionData, MotionSettings, motion_experiment


def _circle(n=16, freq=3, dtype=torch.float64):
    theta, x, y = ns.circle_data(n, [freq], 1.0, 0.5)
    return torch.tensor(x, dtype=dtype), torch.tensor(y, dtype=dtype)


# --- kernel_alignment ---------------------------------------------------------------------

def test_alignment_of_the_ideal_kernel_is_one():
    rng = np.random.default_rng(0)
    y = rng.normal(size=20)
    assert ns.kernel_alignment(np.outer(y, y), y, centered=False) == pytest.approx(1.0, abs=1e-12)
    yc = y - y.mean()
    assert ns.kernel_alignment(np.outer(yc, yc), y) == pytest.approx(1.0, abs=1e-12)
    # centering: yy^T itself (uncentered y) is perfectly aligned after centering too
    assert ns.kernel_alignment(np.outer(y, y), y) == pytest.approx(1.0, abs=1e-12)


def test_alignment_of_a_kernel_orthogonal_to_y_is_zero():
    rng = np.random.default_rng(1)
    n = 12
    y = rng.normal(size=n)
    y -= y.mean()
    V = rng.normal(size=(n, 3))
    V -= V.mean(0)                                   # centered columns
    V -= np.outer(y, y @ V) / (y @ y)                # orthogonal to y
    K = V @ V.T
    assert abs(ns.kernel_alignment(K, y)) < 1e-12
    assert abs(ns.kernel_alignment(K, y, centered=False)) < 1e-12


def test_alignment_is_invariant_to_scaling_and_in_unit_interval():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(15, 15))
    K = A @ A.T
    y = rng.normal(size=15)
    a = ns.kernel_alignment(K, y)
    assert 0 <= a <= 1
    for c in (1e-6, 3.0, 1e5):
        assert ns.kernel_alignment(c * K, y) == pytest.approx(a, rel=1e-12)
        assert ns.kernel_alignment(c * K, y, centered=False) == pytest.approx(
            ns.kernel_alignment(K, y, centered=False), rel=1e-12)
    # torch input and (N, 1) targets give the same number
    assert ns.kernel_alignment(torch.tensor(K), torch.tensor(y)[:, None]) == pytest.approx(a, rel=1e-12)


def test_centered_and_uncentered_alignment_on_a_constant_kernel():
    n = 10
    y = np.arange(n, dtype=float) + 3.0
    ones = np.ones((n, n))
    # uncentered: <11^T, yy^T> / (N |y|^2) = (sum y)^2 / (N |y|^2)
    assert ns.kernel_alignment(ones, y, centered=False) == pytest.approx(y.sum() ** 2 / (n * (y @ y)), rel=1e-12)
    # centered: a constant kernel has no centered part -> undefined, said clearly
    with pytest.raises(ValueError, match="centered kernel is zero"):
        ns.kernel_alignment(5.0 * ones, y)
    # a constant added to the ideal kernel: centering removes it, the uncentered one is fooled
    yc = y - y.mean()
    K = np.outer(yc, yc) + 50.0 * ones
    assert ns.kernel_alignment(K, y) == pytest.approx(1.0, abs=1e-12)
    assert ns.kernel_alignment(K, y, centered=False) < 0.99


def test_alignment_of_a_stack_of_kernels():
    rng = np.random.default_rng(3)
    y = rng.normal(size=8)
    Ks = np.stack([np.eye(8), np.outer(y, y), np.eye(8) + np.outer(y, y)])
    a = ns.kernel_alignment(Ks, y)
    assert a.shape == (3,)
    np.testing.assert_allclose(a, [ns.kernel_alignment(K, y) for K in Ks], rtol=1e-12)


@pytest.mark.parametrize("K, y, err, match", [
    (np.ones((3, 4)), np.ones(3), ValueError, "square"),
    (np.eye(3), np.ones(4), ValueError, r"shape \(3,\)"),
    (np.full((3, 3), np.nan), np.arange(3.0), ValueError, "NaN"),
    (np.eye(3), np.array([1.0, np.inf, 0.0]), ValueError, "NaN or inf"),
    (np.eye(3), np.ones(3), ValueError, "targets are zero"),
    (np.zeros((3, 3)), np.arange(3.0), ValueError, "kernel is zero"),
    ("K", np.arange(3.0), TypeError, "torch.Tensor or numpy.ndarray"),
    (np.eye(3), np.array(["a", "b", "c"]), TypeError, "real numbers"),
])
def test_alignment_bad_inputs(K, y, err, match):
    with pytest.raises(err, match=match):
        ns.kernel_alignment(K, y)


# --- relative_kernel_change -----------------------------------------------------------------

def test_relative_kernel_change():
    K0 = np.diag([3.0, 4.0])
    assert ns.relative_kernel_change(K0, K0) == 0.0
    assert ns.relative_kernel_change(K0, 2 * K0) == pytest.approx(1.0)
    out = ns.relative_kernel_change(K0, np.stack([K0, 1.5 * K0]))
    np.testing.assert_allclose(out, [0.0, 0.5])
    with pytest.raises(ValueError, match="shape of K0"):
        ns.relative_kernel_change(K0, np.eye(3))
    with pytest.raises(ValueError, match="K0 is zero"):
        ns.relative_kernel_change(np.zeros((2, 2)), K0)
    with pytest.raises(ValueError, match="one"):
        ns.relative_kernel_change(np.stack([K0, K0]), K0)


# --- the muP MLP ---------------------------------------------------------------------------

def _jacobian_ntk(model, x):
    """The textbook recipe: per-sample Jacobians with torch.func, contracted."""
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def f(p, xi):
        return functional_call(model, p, (xi[None],)).reshape(())

    J = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    flat = torch.cat([j.reshape(x.shape[0], -1) for j in J.values()], dim=1)
    return flat @ flat.T


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_mup_ntk_is_exact_against_torch_func(depth, bias):
    torch.manual_seed(0)
    model = ns.MLP(3, 32, depth, 1, "tanh", parameterization="mup", bias=bias).double()
    x = torch.randn(12, 3, dtype=torch.float64)
    assert ns.ntk_method(model) == "structured"
    K = ns.ntk(model, x)
    ref = _jacobian_ntk(model, x)
    assert float((K - ref).abs().max() / ref.abs().max()) < 1e-10


def test_mup_layers_follow_yang_and_hu():
    n, d = 256, 3
    m = ns.MLP(d, n, 2, 1, "tanh", parameterization="mup", w_std=1.5, b_std=0.2)
    first, hidden, out = m[0], m[2], m[4]
    assert all(isinstance(l, ns.ScaledLinear) for l in (first, hidden, out))
    # multipliers: input sqrt(n) sigma_w / sqrt(d), hidden sigma_w, output sigma_w / sqrt(n); biases sqrt(n) sigma_b
    assert first.weight_scale == pytest.approx(np.sqrt(n) * 1.5 / np.sqrt(d))
    assert hidden.weight_scale == pytest.approx(1.5)
    assert out.weight_scale == pytest.approx(1.5 / np.sqrt(n))
    assert first.bias_scale == pytest.approx(np.sqrt(n) * 0.2) and hidden.bias_scale == pytest.approx(np.sqrt(n) * 0.2)
    assert out.bias_scale == pytest.approx(0.2)
    # every trainable tensor ~ N(0, 1/n) (output bias: N(0, 1))
    for w in (first.weight, hidden.weight, out.weight, first.bias, hidden.bias):
        assert float(w.detach().std()) == pytest.approx(1 / np.sqrt(n), rel=0.15)
    assert m.parameterization == "mup" and m.init == "gaussian"


def test_mup_matches_the_ntk_parameterization_at_init_except_the_output_scale():
    n = 512
    x = torch.randn(20, 2, dtype=torch.float64)
    torch.manual_seed(1)
    mup = ns.MLP(2, n, 1, 1, "tanh", parameterization="mup", bias=False).double()
    torch.manual_seed(1)
    ntkp = ns.MLP(2, n, 1, 1, "tanh", parameterization="ntk", bias=False).double()
    with torch.no_grad():
        # same hidden layer, output sqrt(n) times smaller (up to the float32 round-off of
        # the initial draws, which muP multiplies by 1/sqrt(n) before .double())
        torch.testing.assert_close(mup[:2](x), ntkp[:2](x), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(mup(x) * np.sqrt(n), ntkp(x), rtol=1e-5, atol=1e-6)
    # and the same NTK
    torch.testing.assert_close(ns.ntk(mup, x), ns.ntk(ntkp, x), rtol=1e-5, atol=1e-6)


def test_mup_kernel_moves_by_order_one_at_every_width_ntk_param_does_not():
    x, y = _circle(16, 3, torch.float64)
    change = {}
    for param in ("mup", "ntk"):
        for n in (64, 1024):
            torch.manual_seed(0)
            net = ns.OutputScaled(ns.MLP(2, n, 1, 1, "tanh", parameterization=param), 1.0).double()
            r = ns.train_to_loss(net, x, y, lr=1.0, target_loss=2e-3, max_steps=400, check_every=5)
            assert r.loss_history[-1] <= 2e-3
            change[param, n] = ns.relative_kernel_change(r.kernels[0], r.kernels[1])
    assert change["mup", 1024] > 0.3 and 0.5 < change["mup", 1024] / change["mup", 64] < 2
    assert change["ntk", 1024] < change["ntk", 64] / 5, "16x wider: the NTK-parameterized kernel moves far less"
    assert change["mup", 1024] > 10 * change["ntk", 1024]


def test_mup_bad_init_and_scaled_linear_bad_inputs():
    with pytest.raises(ValueError, match="Gaussian init only"):
        ns.MLP(2, 8, 1, 1, parameterization="mup", init="torch")
    with pytest.raises(ValueError, match="parameterization must be"):
        ns.MLP(2, 8, 1, 1, parameterization="mean-field")
    with pytest.raises(ValueError, match="weight_multiplier"):
        ns.ScaledLinear(2, 3, weight_multiplier=-1.0)
    with pytest.raises(ValueError, match="bias_init_std"):
        ns.ScaledLinear(2, 3, bias_init_std=float("nan"))
    with pytest.raises(ValueError, match="position"):
        ns.mup_layer(2, 3, "middle")


# --- OutputScaled ----------------------------------------------------------------------------

def test_output_scaled_starts_at_zero_and_has_alpha_squared_kernel():
    torch.manual_seed(0)
    inner = ns.MLP(2, 64, 1, 1, "tanh", parameterization="ntk").double()
    K_inner = ns.ntk(inner, torch.randn(1, 2, dtype=torch.float64))  # warm-up, not used
    x = torch.randn(10, 2, dtype=torch.float64)
    K_inner = ns.ntk(inner, x)
    m = ns.OutputScaled(inner, 7.0)
    with torch.no_grad():
        assert float(m(x).abs().max()) == 0.0
    torch.testing.assert_close(ns.ntk(m, x), 49.0 * K_inner, rtol=1e-10, atol=1e-12)
    assert not any(p.requires_grad for p in m.reference.parameters())
    assert {n for n, p in m.named_parameters() if p.requires_grad} == {f"model.{n}" for n, _ in inner.named_parameters()}
    with pytest.raises(ValueError, match="alpha"):
        ns.OutputScaled(inner, 0.0)
    with pytest.raises(TypeError, match="nn.Module"):
        ns.OutputScaled(lambda t: t, 1.0)


def test_large_alpha_is_lazy_small_alpha_is_rich():
    x, y = _circle(16, 3, torch.float32)
    out = {}
    for alpha in (0.03, 30.0):
        torch.manual_seed(0)
        net = ns.OutputScaled(ns.MLP(2, 256, 1, 1, "tanh", parameterization="ntk"), alpha)
        r = ns.train(net, x, y, lr=1.5 / alpha**2, steps=80, record_every=80, record_kernel_every=40)
        out[alpha] = (ns.relative_kernel_change(r.kernels[0], r.kernels[-1]),
                      ns.kernel_alignment(r.kernels[-1], y) - ns.kernel_alignment(r.kernels[0], y))
    assert out[30.0][0] < 2e-3 and out[0.03][0] > 0.3
    assert abs(out[30.0][1]) < 1e-3 and out[0.03][1] > 0.02


# --- train_to_loss ----------------------------------------------------------------------------

def test_train_to_loss_stops_at_the_target_and_records_the_kernels():
    x, y = _circle(16, 1, torch.float64)
    torch.manual_seed(0)
    net = ns.OutputScaled(ns.MLP(2, 64, 1, 1, "tanh", parameterization="ntk"), 1.0).double()
    K_start = ns.ntk(net, x)
    r = ns.train_to_loss(net, x, y, lr=1.0, target_loss=1e-3, max_steps=500, check_every=4)
    assert r.loss_history[-1] <= 1e-3 and r.steps[-1] < 500 and r.steps[-1] % 4 == 0
    assert r.loss_history[-5] > 1e-3, "it stopped at the first check below the target"
    assert len(r.loss_history) == r.steps[-1] + 1
    np.testing.assert_allclose(r.kernels[0], K_start.numpy(), rtol=1e-12)
    np.testing.assert_allclose(r.kernels[1], ns.ntk(net, x).numpy(), rtol=1e-12)
    np.testing.assert_array_equal(r.kernel_steps, [0, r.steps[-1]])
    np.testing.assert_allclose(r.residuals[-1], (net(x).detach().reshape(-1) - y).numpy(), rtol=1e-10, atol=1e-12)
    with pytest.raises(TypeError, match="steps"):
        ns.train_to_loss(net, x, y, lr=1.0, target_loss=1e-3, max_steps=5, steps=3)
    with pytest.raises(ValueError, match="target_loss"):
        ns.train_to_loss(net, x, y, lr=1.0, target_loss=0.0, max_steps=5)


# --- train(record_kernel_every=...) -----------------------------------------------------------

def test_recorded_kernels_are_the_ntk_at_those_steps():
    x, y = _circle(12, 3, torch.float32)
    torch.manual_seed(0)
    model = ns.MLP(2, 32, 2, 1, "tanh", parameterization="mup")
    twin = copy.deepcopy(model)
    r = ns.train(model, x, y, lr=0.5, steps=7, record_kernel_every=3)
    np.testing.assert_array_equal(r.kernel_steps, [0, 3, 6, 7])
    assert r.kernels.shape == (4, 12, 12) and r.kernels.dtype == np.float64
    assert r.kernel_eigvals is None and r.kernel_eigvecs is None
    done = 0
    for s, K in zip(r.kernel_steps, r.kernels):
        if s > done:
            ns.train(twin, x, y, lr=0.5, steps=int(s - done), check_stability=False)
            done = int(s)
        np.testing.assert_allclose(K, ns.ntk(twin, x).double().numpy(), rtol=1e-6, atol=1e-6 * np.abs(K).max())
    # training itself is unchanged by the recording
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)


def test_record_only_the_top_eigenpairs():
    x, y = _circle(20, 3, torch.float64)
    torch.manual_seed(0)
    model = ns.MLP(2, 64, 1, 1, "tanh", parameterization="ntk").double()
    twin = copy.deepcopy(model)
    full = ns.train(model, x, y, lr=1.0, steps=10, record_kernel_every=5)
    top = ns.train(twin, x, y, lr=1.0, steps=10, record_kernel_every=5, kernel_rank=3)
    assert top.kernels is None and top.kernel_eigvals.shape == (3, 3) and top.kernel_eigvecs.shape == (3, 20, 3)
    for K, lam, U in zip(full.kernels, top.kernel_eigvals, top.kernel_eigvecs):
        ref = np.linalg.eigvalsh(K)[::-1][:3]
        np.testing.assert_allclose(lam, ref, rtol=1e-4)
        np.testing.assert_allclose(K @ U, U * lam, atol=1e-4 * lam[0])
    every = ns.train(copy.deepcopy(model), x, y, lr=1.0, steps=2, record_kernel_every=1, kernel_rank=20)
    assert every.kernel_eigvals.shape == (3, 20)


def test_record_kernel_bad_inputs():
    x, y = _circle(8, 1, torch.float32)
    model = ns.MLP(2, 8, 1, 1)
    assert ns.train(model, x, y, lr=0.1, steps=2).kernels is None
    with pytest.raises(ValueError, match="record_kernel_every"):
        ns.train(model, x, y, lr=0.1, steps=2, record_kernel_every=0)
    with pytest.raises(ValueError, match="record_kernel_every"):
        ns.train(model, x, y, lr=0.1, steps=2, record_kernel_every=1.5)
    with pytest.raises(ValueError, match="kernel_rank needs record_kernel_every"):
        ns.train(model, x, y, lr=0.1, steps=2, kernel_rank=2)
    with pytest.raises(ValueError, match=r"kernel_rank must be None or an integer in \[1, N\]"):
        ns.train(model, x, y, lr=0.1, steps=2, record_kernel_every=1, kernel_rank=9)


# --- the widget: pure function and thin layer -------------------------------------------------

def test_motion_experiment_data_and_determinism():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = motion_experiment(width=64, alpha=0.1, steps=30, record_every=10)
    after = torch.rand(3)
    assert torch.equal(before, after), "motion_experiment must not consume the global random stream"
    assert isinstance(a, MotionData)
    np.testing.assert_array_equal(a.kernel_steps, [0, 10, 20, 30])
    assert a.kernel_change.shape == (4,) and a.kernel_change[0] == 0.0
    assert a.alignment.shape == (4,) and a.loss.shape == (31,) and a.frozen_loss.shape == (31,)
    assert a.frozen_loss[0] == pytest.approx(a.loss[0], rel=1e-6)
    assert a.eigvals_init.shape == (24,) and np.all(np.diff(a.eigvals_init) <= 1e-12)
    b = motion_experiment(MotionSettings(width=64, alpha=0.1, steps=30, record_every=10))
    np.testing.assert_array_equal(a.kernel_change, b.kernel_change)
    lazy = motion_experiment(width=64, alpha=30.0, steps=30, record_every=10)
    assert lazy.kernel_change[-1] < a.kernel_change[-1] / 20 and lazy.gap < a.gap
    assert "alpha = 30" in lazy.summary()


@pytest.mark.parametrize("changes, err, match", [
    ({"width": 0}, ValueError, "width"),
    ({"width": 2.5}, TypeError, "width must be an integer"),
    ({"alpha": -1}, ValueError, "alpha"),
    ({"frequency": 12}, ValueError, "frequency"),
    ({"steps": 0}, ValueError, "steps"),
    ({"seed": -1}, ValueError, "seed"),
    ({"record_every": 200}, ValueError, "record_every"),
    ({"depth": 2}, TypeError, "unknown setting"),
])
def test_motion_settings_bad_values(changes, err, match):
    with pytest.raises(err, match=match):
        motion_experiment(**changes)


def test_motion_plot_has_three_labelled_panels():
    import matplotlib.pyplot as plt

    d = motion_experiment(width=32, steps=20, record_every=10)
    fig = d.plot()
    axes = fig.axes
    assert len(axes) == 3 and all(ax.get_title() and ax.get_xlabel() and ax.get_ylabel() for ax in axes)
    plt.close(fig)


def test_neuralspec_motion_widgets_import_without_ipywidgets():
    import subprocess
    import sys

    code = ("import sys; sys.modules['ipywidgets'] = None; import neuralspec.motion_widgets as w; "
            "d = w.motion_experiment(width=16, steps=5, record_every=5); print(d.kernel_change.shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "(2,)" in out.stdout


def test_motion_explorer_follows_its_controls():
    pytest.importorskip("ipywidgets")
    from neuralspec.motion_widgets import KernelMotionExplorer

    ex = KernelMotionExplorer(width=64, steps=20, record_every=10)
    assert ex.n_updates == 1 and ex.image.value[:4] == b"\x89PNG"
    np.testing.assert_array_equal(ex.data.kernel_change,
                                  motion_experiment(width=64, steps=20, record_every=10).kernel_change)
    assert all(c.continuous_update is False for k, c in ex.controls.items() if k != "seed")
    ex.controls["alpha"].value = 10.0
    assert ex.n_updates == 2 and ex.data.settings.alpha == pytest.approx(10.0)
    ex.set(width=128, frequency=1)
    assert ex.n_updates == 3 and ex.data.settings.width == 128 and ex.data.settings.frequency == 1
    with pytest.raises(TypeError, match="unknown control"):
        ex.set(depth=3)
    bundle = ex._repr_mimebundle_()
    assert "image/png" in bundle and "application/vnd.jupyter.widget-view+json" in bundle


def test_mup_limit_kernels_equal_the_ntk_parameterization_limit():
    # muP and NTK parameterization share the NTK at init (same pre-activations, the output
    # 1/sqrt(n) smaller and its gradient factors n times larger), so their limits agree.
    x = torch.randn(8, 3, dtype=torch.float64)
    torch.manual_seed(0)
    mup = ns.MLP(3, 2048, 2, 1, "erf", parameterization="mup").double()
    ntkp = ns.MLP(3, 2048, 2, 1, "erf", parameterization="ntk").double()
    lim_m, lim_n = ns.limit_kernels(mup, x), ns.limit_kernels(ntkp, x)
    torch.testing.assert_close(lim_m.ntk, lim_n.ntk, rtol=1e-12, atol=1e-12)
    K = ns.ntk(mup, x)
    assert float((K - lim_m.ntk).abs().max() / lim_m.ntk.abs().max()) < 0.1
    # the output's NNGP (output bias sigma_b^2 = 0.01 in both) is n times smaller otherwise
    torch.testing.assert_close((lim_m.nngp_out - 0.01) * 2048, lim_n.nngp_out - 0.01, rtol=1e-9, atol=1e-9)
