"""ns.limit_kernels: the infinite-width limit read from the model.

Checked against an independent stax-style recursion (tests/limit_reference.py: NumPy
closed forms and nested adaptive scipy quadrature), against the analytic module, and
against the mean empirical kernels of wide networks.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

import neuralspec as ns
from neuralspec import analytic as A

from limit_reference import stax_ntk_param


pytestmark = pytest.mark.usefixtures("one_thread")  # small kernels: see conftest.py


def _circle(n, offset=0.3):
    t = offset + 2 * math.pi * np.arange(n) / n
    return np.stack([np.cos(t), np.sin(t)], 1)


def _sphere(n, seed=1):
    g = np.random.default_rng(seed).standard_normal((n, 3))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


def _cloud(n, seed=2):
    return 1.7 * np.random.default_rng(seed).standard_normal((n, 2)) + np.array([0.4, -0.2])


DATA = {"circle": _circle(9), "sphere": _sphere(8), "cloud": _cloud(8)}
OTHER = {"circle": _circle(5, 1.1), "sphere": _sphere(5, 7), "cloud": _cloud(5, 9)}
ACT = {"relu": nn.ReLU, "leaky_relu(0.2)": lambda: nn.LeakyReLU(0.2), "erf": ns.Erf, "sin": ns.Sine,
       "gelu": nn.GELU}


def _ntk_mlp(d, act, depth, bias, w_std=1.5, b_std=0.1, width=16):
    return ns.MLP(d, width, depth, 1, ACT[act](), "ntk", bias, w_std=w_std, b_std=b_std).double()


def _check(lim, ref, rtol):
    ck, ntk, nngp = ref
    for got, want, name in [(lim.ck, ck, "ck"), (lim.ntk, ntk, "ntk"), (lim.nngp_out, nngp, "nngp_out")]:
        got = got.numpy()
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 1e-3 * np.abs(want).max(),
                                   err_msg=name)


@pytest.mark.parametrize("act", ["relu", "leaky_relu(0.2)", "erf", "sin"])
@pytest.mark.parametrize("data", sorted(DATA))
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_closed_forms_match_stax_recursion(act, data, depth, bias):
    x = DATA[data]
    model = _ntk_mlp(x.shape[1], act, depth, bias)
    lim = ns.limit_kernels(model, x)
    _check(lim, stax_ntk_param(act, x, None, depth, 1.5, 0.1, bias), 1e-6)
    # the cross kernel between x and other points
    lim2 = ns.limit_kernels(model, x, OTHER[data])
    _check(lim2, stax_ntk_param(act, x, OTHER[data], depth, 1.5, 0.1, bias), 1e-6)
    assert lim.ck.dtype == torch.float64 and lim.ntk.shape == (len(x), len(x))


@pytest.mark.parametrize("data,depth,bias,cross", [
    ("circle", 1, True, False), ("circle", 2, True, False), ("circle", 3, True, False),
    ("circle", 2, False, False), ("sphere", 2, True, False), ("cloud", 2, True, False),
    ("cloud", 1, False, True), ("circle", 3, True, True),
])
def test_gelu_matches_adaptive_quadrature(data, depth, bias, cross):
    x = DATA[data][:6]
    x2 = OTHER[data][:3] if cross else None
    model = _ntk_mlp(x.shape[1], "gelu", depth, bias)
    _check(ns.limit_kernels(model, x, x2), stax_ntk_param("gelu", x, x2, depth, 1.5, 0.1, bias), 1e-5)


def test_nngp_out_is_neural_tangents_nngp():
    """neural-tangents' nngp of the output is W_std^2 CK + b_std^2."""
    x = DATA["cloud"]
    lim = ns.limit_kernels(_ntk_mlp(2, "erf", 2, True), x)
    assert torch.allclose(lim.nngp_out, 1.5 ** 2 * lim.ck + 0.1 ** 2, rtol=1e-14, atol=0)
    assert "NTK parameterization" in lim.description and "erf (closed form)" in lim.description


# ----------------------------------------------------------------------------
# PyTorch's default init: the analytic module's results
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("d", [1, 2, 3])
def test_plain_sequential_torch_init_is_mlp_kernels(depth, d):
    torch.manual_seed(depth)
    width = 64
    layers = [nn.Linear(d, width), nn.ReLU()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(width, 1)).double()
    x = DATA["cloud"][:, :1] if d == 1 else (DATA["circle"] if d == 2 else DATA["sphere"])
    lim = ns.limit_kernels(model, x)
    ref = A.mlp_kernels(x, depth=depth, width=width, init="torch",
                        first_layer="exact" if d <= 2 else "gaussian")
    assert torch.equal(lim.ck, ref.ck) or torch.allclose(lim.ck, ref.ck, rtol=1e-13, atol=1e-15)
    assert torch.allclose(lim.ntk, ref.ntk, rtol=1e-13, atol=1e-13)
    assert ("exact over the uniform weights" in lim.description) == (d <= 2)


def test_standard_ntk_is_affine_in_width():
    """Standard parameterization: the NTK is n * A + B at the model's width n, as mlp_kernels."""
    x = DATA["circle"]
    k = {n: ns.limit_kernels(ns.MLP(2, n, 2, 1).double(), x) for n in (100, 200, 300)}
    d1 = k[200].ntk - k[100].ntk
    d2 = k[300].ntk - k[200].ntk
    assert torch.allclose(d1, d2, rtol=1e-12, atol=1e-10)
    assert float(d1.min()) > 0
    assert torch.allclose(k[100].ck, k[300].ck, rtol=0, atol=0)


def test_gaussian_standard_init_read_from_mlp_or_given():
    x = DATA["cloud"]
    m = ns.MLP(2, 50, 2, 1, "relu", init="gaussian", w_std=1.3, b_std=0.2).double()
    ref = A.mlp_kernels(x, depth=2, init="gaussian", width=50, w_std=1.3, b_std=0.2)
    lim = ns.limit_kernels(m, x)
    assert torch.allclose(lim.ck, ref.ck, rtol=1e-13) and torch.allclose(lim.ntk, ref.ntk, rtol=1e-13)
    plain = nn.Sequential(*list(m)).double()
    lim2 = ns.limit_kernels(plain, x, init=(1.3, 0.2))
    assert torch.allclose(lim2.ntk, ref.ntk, rtol=1e-13)
    with pytest.warns(UserWarning, match="uniform init bound"):
        ns.limit_kernels(plain, x)  # Gaussian weights read as PyTorch's init: warned
    with pytest.raises(ValueError, match="init"):
        ns.limit_kernels(plain, x, init="gaussian")
    with pytest.raises(ValueError, match="init"):
        ns.limit_kernels(plain, x, init="he")


def test_rffmlp_is_rffmlp_kernels():
    x = DATA["cloud"]
    for L in (1, 2, 3):
        m = ns.RFFMLP(2, 4.0, 64, L, 1).double()
        lim = ns.limit_kernels(m, x, OTHER["cloud"])
        ref = A.rffmlp_kernels(x, OTHER["cloud"], scale=4.0, latent_layers=L, width=64)
        assert torch.allclose(lim.ck, ref.ck, rtol=1e-13, atol=1e-15)
        assert torch.allclose(lim.ntk, ref.ntk, rtol=1e-13, atol=1e-13)


# ----------------------------------------------------------------------------
# wide networks
# ----------------------------------------------------------------------------

def _stats(K):
    n = K.shape[0]
    off = ~torch.eye(n, dtype=torch.bool)
    return torch.stack([K.mean(), K.diagonal().mean(), K[off].std(), K[0, n // 2]])


@pytest.mark.parametrize("act", ["tanh", "sigmoid", "softplus"])
def test_smooth_activations_match_wide_networks(act):
    """Limit vs the mean empirical CK and NTK of 8 nets of width 8192: within 3 standard errors.

    Four statistics of each kernel (mean entry, mean diagonal, spread of the
    off-diagonal, one opposite pair), on 12 points of a radius-2 circle (pre-activation
    variances ~ 10, where the quadrature's range matters).
    """
    x = torch.as_tensor(2.0 * _circle(12), dtype=torch.float64)
    model = ns.MLP(2, 8192, 1, 1, act, "ntk", w_std=2.0, b_std=0.5).double()
    lim = ns.limit_kernels(model, x)
    cks, ntks = [], []
    for seed in range(8):
        torch.manual_seed(seed)
        m = ns.MLP(2, 8192, 1, 1, act, "ntk", w_std=2.0, b_std=0.5).double()
        cks.append(_stats(ns.conjugate_kernel(m, x)))
        ntks.append(_stats(ns.ntk(m, x)))
    for name, emp, want in [("ck", torch.stack(cks), _stats(lim.ck)), ("ntk", torch.stack(ntks), _stats(lim.ntk))]:
        mean, se = emp.mean(0), emp.std(0) / math.sqrt(len(emp))
        z = ((mean - want) / se).abs()
        assert bool((z < 3).all()), f"{act} {name}: limit {want.tolist()} vs mean {mean.tolist()} (z = {z.tolist()})"


def test_torch_init_leaky_and_trainable_lff_match_wide_networks():
    """The exact uniform first layer (leaky_relu) and a trainable LFF's NTK term, against wide nets."""
    x = torch.as_tensor(_circle(10), dtype=torch.float64)
    for make in (lambda: nn.Sequential(nn.Linear(2, 8192), nn.LeakyReLU(0.2), nn.Linear(8192, 1)),
                 lambda: nn.Sequential(ns.LFF(2, 8192, 3.0), nn.Linear(8192, 1))):
        lim = ns.limit_kernels(make().double(), x)
        ks = []
        for seed in range(8):
            torch.manual_seed(seed)
            m = make().double()
            ks.append(torch.stack([_stats(ns.conjugate_kernel(m, x)), _stats(ns.ntk(m, x))]))
        ks = torch.stack(ks)
        mean, se = ks.mean(0), ks.std(0) / math.sqrt(len(ks))
        want = torch.stack([_stats(lim.ck), _stats(lim.ntk)])
        z = ((mean - want) / se).abs()
        assert bool((z < 3).all()), f"{lim.description}: z = {z.tolist()}"


# ----------------------------------------------------------------------------
# refusals and bad input
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("bad,path,kind", [
    (nn.Sequential(nn.Linear(2, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 1)), "1", "LayerNorm"),
    (nn.Sequential(nn.Unflatten(1, (1, 2, 1)), nn.Conv2d(1, 2, 1)), "0", "Unflatten"),
    (nn.Sequential(nn.Linear(2, 8), nn.Sequential(nn.ReLU(), nn.Conv1d(8, 8, 1))), "1.1", "Conv1d"),
    (nn.Sequential(nn.Linear(2, 8), nn.BatchNorm1d(8), nn.Linear(8, 1)), "1", "BatchNorm1d"),
    (nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.5), nn.Linear(8, 1)), "1", "Dropout"),
])
def test_unsupported_modules_are_named(bad, path, kind):
    with pytest.raises(ValueError, match=rf"module {path} \({kind}\)"):
        ns.limit_kernels(bad.double(), DATA["circle"])


def test_conv2d_is_named():
    model = nn.Sequential(nn.Conv2d(1, 2, 1))
    with pytest.raises(ValueError, match=r"module 0 \(Conv2d\).*convolution"):
        ns.network_plan(model)


def test_custom_forward_and_eval_dropout():
    class Custom(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(ValueError, match=r"\(Custom\).*custom forward"):
        ns.limit_kernels(Custom(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)).double(), DATA["circle"])
    m = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1)).double().eval()
    ref = nn.Sequential(m[0], m[1], m[3])
    assert torch.equal(ns.limit_kernels(m, DATA["circle"]).ntk, ns.limit_kernels(ref, DATA["circle"]).ntk)


def test_bad_inputs_name_the_argument():
    m = _ntk_mlp(2, "relu", 1, True)
    x = DATA["circle"]
    with pytest.raises(ValueError, match="x must be 2-D"):
        ns.limit_kernels(m, x[:, 0])
    with pytest.raises(ValueError, match="x contains non-finite"):
        ns.limit_kernels(m, np.where(np.arange(18).reshape(9, 2) == 3, np.nan, x))
    with pytest.raises(ValueError, match="x has 3 features"):
        ns.limit_kernels(m, DATA["sphere"])
    with pytest.raises(ValueError, match="x2 has 3 features"):
        ns.limit_kernels(m, x, DATA["sphere"])
    with pytest.raises(ValueError, match="x2 is empty"):
        ns.limit_kernels(m, x, np.zeros((0, 2)))
    with pytest.raises(TypeError, match="model must be"):
        ns.limit_kernels("mlp", x)


def test_consecutive_activations_are_composed():
    """ReLU then tanh: one composed rule tanh(relu(z)), by quadrature; against an explicit one."""
    x = DATA["cloud"][:5]
    m = nn.Sequential(NTK(2, 8), nn.ReLU(), nn.Tanh(), NTK(8, 1)).double()
    lim = ns.limit_kernels(m, x)
    assert "tanh(relu)" in lim.description

    class ReluTanh(nn.Module):
        def forward(self, z):
            return torch.tanh(torch.relu(z))

    ns.register_activation(ReluTanh)
    try:
        ref = ns.limit_kernels(nn.Sequential(m[0], ReluTanh(), m[3]), x)
    finally:
        ns.unregister_activation(ReluTanh)
    assert torch.allclose(lim.ntk, ref.ntk, rtol=1e-12) and torch.allclose(lim.ck, ref.ck, rtol=1e-12)
    # an identity in between changes nothing
    m2 = nn.Sequential(m[0], nn.ReLU(), nn.Identity(), m[3]).double()
    m3 = nn.Sequential(m[0], nn.ReLU(), m[3]).double()
    assert torch.equal(ns.limit_kernels(m2, x).ntk, ns.limit_kernels(m3, x).ntk)


def NTK(n_in, n_out):
    return ns.NTKLinear(n_in, n_out, w_std=1.5, b_std=0.1)


def test_float32_model_and_tensor_inputs():
    m = ns.MLP(2, 32, 2, 1, "erf", "ntk")
    x32 = torch.as_tensor(DATA["circle"], dtype=torch.float32)
    lim = ns.limit_kernels(m, x32)
    lim64 = ns.limit_kernels(m.double(), DATA["circle"])
    assert lim.ntk.dtype == torch.float64
    assert torch.allclose(lim.ntk, lim64.ntk, rtol=1e-6)


def _sinc_u(t):
    """E[cos(w t)] for w ~ U(-1, 1): sin(t)/t."""
    return np.where(np.abs(t) < 1e-12, 1.0, np.sin(t) / np.where(np.abs(t) < 1e-12, 1.0, t))


@pytest.mark.parametrize("data", ["circle", "cloud", "line"])
def test_torch_init_first_layer_sin_is_exact(data):
    """PyTorch's uniform first layer, then sin: the cubature against the closed form
    E[sin z sin z'] = 1/2 [prod_j sinc(s (x_j - x'_j)) - sinc(2 s) prod_j sinc(s (x_j + x'_j))],
    s = 1/sqrt(d) (and the same with + for cos z cos z', the NTK's factor)."""
    x = DATA["cloud"][:, :1] if data == "line" else DATA[data]
    x2 = OTHER["cloud"][:, :1] if data == "line" else OTHER[data]
    d = x.shape[1]
    s = 1 / math.sqrt(d)
    model = nn.Sequential(nn.Linear(d, 32), ns.Sine(), nn.Linear(32, 1)).double()
    lim = ns.limit_kernels(model, x, x2)
    dm = np.prod(_sinc_u(s * (x[:, None] - x2[None])), -1)
    dp = np.prod(_sinc_u(s * (x[:, None] + x2[None])), -1) * _sinc_u(2 * s)
    ck = 0.5 * (dm - dp)
    ecc = 0.5 * (dm + dp)
    ntk = 32 * ck + 1 + (x @ x2.T + 1) * ecc / 3
    np.testing.assert_allclose(lim.ck.numpy(), ck, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(lim.ntk.numpy(), ntk, rtol=1e-9, atol=1e-12)
    assert "cubature over the uniform weights" in lim.description


@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_torch_init_smooth_activation_matches_wide_networks(act):
    """The cubature first layer (circle, d = 2) against 8 nets of width 8192, within 3 standard errors."""
    x = torch.as_tensor(_circle(12), dtype=torch.float64)
    lim = ns.limit_kernels(ns.MLP(2, 8192, 1, 1, act).double(), x)
    ks = []
    for seed in range(8):
        torch.manual_seed(seed)
        m = ns.MLP(2, 8192, 1, 1, act).double()
        ks.append(torch.stack([_stats(ns.conjugate_kernel(m, x)), _stats(ns.ntk(m, x))]))
    ks = torch.stack(ks)
    mean, se = ks.mean(0), ks.std(0) / math.sqrt(len(ks))
    z = ((mean - torch.stack([_stats(lim.ck), _stats(lim.ntk)])) / se).abs()
    assert bool((z < 3).all()), f"{act}: z = {z.tolist()}"
    # the test has teeth: the Gaussian (CLT) first layer with the same variances is rejected
    gauss = ns.limit_kernels(nn.Sequential(*list(ns.MLP(2, 8192, 1, 1, act))).double(), x,
                             init=(math.sqrt(1 / 3), math.sqrt(1 / 6)))
    zg = ((mean - torch.stack([_stats(gauss.ck), _stats(gauss.ntk)])) / se).abs()
    assert bool((zg > 3).any()), f"{act}: the Gaussian first layer is not distinguishable (z = {zg.tolist()})"


def test_several_outputs_sum_like_ntk():
    """ns.ntk sums over the outputs (the trace); so does the limit: O times one output's NTK."""
    x = DATA["cloud"]
    one = ns.limit_kernels(ns.MLP(2, 16, 2, 1, "erf", "ntk", w_std=1.5), x)
    three = ns.limit_kernels(ns.MLP(2, 16, 2, 3, "erf", "ntk", w_std=1.5), x)
    assert torch.allclose(three.ntk, 3 * one.ntk, rtol=1e-14)
    assert torch.allclose(three.nngp_out, one.nngp_out, rtol=1e-14)
    assert "summed over 3 outputs" in three.description
