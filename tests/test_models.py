import math

import pytest
import torch
from torch import nn

import neuralspec as ns


def test_lff_init_ranges_and_shapes():
    m = ns.LFF(2, 500, scale=6.0)
    a = 6.0 / 2
    w, b = m.linear.weight, m.linear.bias
    assert w.shape == (500, 2) and b.shape == (500,)
    assert w.abs().max() <= a and w.abs().max() > 0.9 * a
    assert b.abs().max() <= 1.0 and b.abs().max() > 0.9
    x = torch.rand(7, 2)
    y = m(x)
    assert y.shape == (7, 500)
    assert torch.allclose(y, torch.sin(math.pi * x @ w.T + b))


def test_lff_is_trainable_rff_is_frozen():
    lff, rff = ns.LFF(1, 10), ns.RFF(1, 10)
    assert all(p.requires_grad for p in lff.parameters())
    assert not any(p.requires_grad for p in rff.parameters())
    x = torch.rand(5, 1)
    assert lff(x).requires_grad
    assert not rff(x).requires_grad
    # the output can be turned into NumPy directly (the seed's zs = mlp(xs).numpy())
    assert rff(x).numpy().shape == (5, 10)


def test_seed_freeze_bug_freezes_nothing():
    """The seed's `self.linear.requires_grad = False` is a plain attribute."""
    m = ns.LFF(1, 10)
    m.linear.requires_grad = False
    assert all(p.requires_grad for p in m.parameters())


def test_rff_not_updated_by_optimizer():
    torch.manual_seed(1)
    model = ns.RFFMLP(1, 5.0, 16, 2, 1)
    before = model[0].linear.weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    x = torch.rand(8, 1)
    loss = model(x).pow(2).mean()
    loss.backward()
    opt.step()
    assert torch.equal(model[0].linear.weight, before)
    assert model[0].linear.weight.grad is None


def test_phase_range():
    m = ns.RFF(1, 2000, phase_range=math.pi)
    assert m.linear.bias.abs().max() <= math.pi
    assert m.linear.bias.abs().max() > 3.0


@pytest.mark.parametrize("latent_layers", [1, 2, 3])
def test_rffmlp_structure_matches_seed(latent_layers):
    m = ns.RFFMLP(1, 10, 32, latent_layers, 3)
    assert isinstance(m[0], ns.RFF)
    linears = [l for l in m if isinstance(l, nn.Linear)]
    relus = [l for l in m if isinstance(l, nn.ReLU)]
    assert len(linears) == latent_layers
    assert len(relus) == latent_layers - 1
    assert isinstance(m[-1], nn.Linear)  # linear readout (seed drops the last ReLU)
    assert m(torch.rand(4, 1)).shape == (4, 3)


def test_rffmlp_learnable_features():
    m = ns.RFFMLP(1, 10, 8, 1, 1, learnable_features=True)
    assert type(m[0]) is ns.LFF and m[0].linear.weight.requires_grad


@pytest.mark.parametrize("param", ["standard", "ntk"])
@pytest.mark.parametrize("act", ["relu", "tanh", "gelu", "sin"])
def test_mlp_forward(param, act):
    m = ns.MLP(3, 16, 2, 2, activation=act, parameterization=param)
    assert m(torch.rand(5, 3)).shape == (5, 2)
    assert sum(isinstance(l, (nn.Linear, ns.NTKLinear)) for l in m) == 3


def test_mlp_torch_init_is_uniform():
    m = ns.MLP(4, 1000, 1, 1)
    w = m[0].weight
    assert w.abs().max() <= 1 / math.sqrt(4) + 1e-7
    assert abs(w.var().item() - 1 / (3 * 4)) < 0.01


def test_mlp_gaussian_standard_matches_ntk_parameterization_in_distribution():
    torch.manual_seed(0)
    s = ns.MLP(10, 4000, 1, 1, init="gaussian", w_std=2.0, b_std=0.5)
    assert abs(s[0].weight.std().item() - 2.0 / math.sqrt(10)) < 0.01
    assert abs(s[0].bias.std().item() - 0.5) < 0.03
    n = ns.MLP(10, 4000, 1, 1, parameterization="ntk", w_std=2.0, b_std=0.5)
    eff = n[0].weight_scale * n[0].weight
    assert abs(eff.std().item() - 2.0 / math.sqrt(10)) < 0.01


def test_ntklinear_forward():
    l = ns.NTKLinear(4, 3, w_std=2.0, b_std=0.5)
    x = torch.rand(6, 4)
    expected = x @ (l.weight * 2.0 / 2.0).T + 0.5 * l.bias
    assert torch.allclose(l(x), expected, atol=1e-6)


def test_mlp_no_bias():
    m = ns.MLP(2, 8, 2, 1, bias=False)
    assert all(l.bias is None for l in m if isinstance(l, nn.Linear))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(parameterization="mean-field"), "parameterization"),
        (dict(activation="swishy"), "unknown activation"),
        (dict(parameterization="ntk", init="torch"), "Gaussian"),
        (dict(init="xavier"), "init must be"),
    ],
)
def test_mlp_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ns.MLP(2, 8, 2, 1, **kwargs)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match="positive integer"):
        ns.LFF(1, bad)


def test_bad_scale():
    with pytest.raises(ValueError, match="scale"):
        ns.RFF(1, 10, scale=0.0)
    with pytest.raises(ValueError, match="scale"):
        ns.RFF(1, 10, scale=float("nan"))


def test_lff_rejects_wrong_feature_size():
    with pytest.raises(ValueError, match=r"expects inputs of shape \(N, 2\)"):
        ns.LFF(2, 10)(torch.rand(5, 3))


def test_slicing_our_sequentials_gives_plain_sequential():
    for m in [ns.RFFMLP(1, 10, 8, 2, 1), ns.MLP(1, 8, 2, 1)]:
        head = m[:-1]
        assert type(head) is nn.Sequential and len(head) == len(m) - 1
        assert head[0] is m[0]


def test_set_seed_makes_models_reproducible():
    ns.set_seed(3)
    a = ns.RFF(1, 20, 5).linear.weight.clone()
    ns.set_seed(3)
    b = ns.RFF(1, 20, 5).linear.weight
    assert torch.equal(a, b)


def test_default_device_env_override(monkeypatch):
    monkeypatch.setenv("NEURALSPEC_DEVICE", "cpu")
    assert ns.default_device() == torch.device("cpu")


def test_torch_default_linear_init_is_not_he_and_matches_the_limit_code():
    """PyTorch's nn.Linear init is U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias:
    variance 1/(3 fan_in), i.e. sigma_w^2 = 1/3 (``analytic.TORCH_W_VAR``), not He's 2.
    The limit code assumes exactly that: ``mlp_kernels(init="torch")`` uses sigma_w^2 =
    TORCH_W_VAR, a first-layer bias variance TORCH_W_VAR / d and, with
    ``hidden_bias="width"``, a hidden-bias variance TORCH_W_VAR / width."""
    from neuralspec import analytic

    fan_in = 1000
    layer = nn.Linear(fan_in, 1000)
    w, b = layer.weight.detach().double(), layer.bias.detach().double()
    # U(-c, c): Var(w^2) / E[w^2]^2 = 4/5, so the sample variance of M draws has a
    # relative standard deviation of sqrt(0.8 / M): 0.09% for the 10^6 weights, 2.8%
    # for the 1000 biases. Tolerances of about 5 standard deviations.
    w_var, b_var = float(w.pow(2).mean()), float(b.pow(2).mean())
    assert w_var * fan_in == pytest.approx(analytic.TORCH_W_VAR, rel=5e-3)
    assert b_var * fan_in == pytest.approx(analytic.TORCH_W_VAR, rel=0.15)
    assert b_var == pytest.approx(analytic._torch_hidden_bias("width", fan_in) ** 2, rel=0.15)
    bound = 1 / math.sqrt(fan_in)
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.99 * bound
    assert float(b.abs().max()) <= bound and float(b.abs().max()) > 0.9 * bound
    # He (Kaiming normal, ReLU) would be sigma_w^2 = 2: six times larger.
    assert w_var * fan_in < 2 / 5
    # ns.MLP's default ("torch") init is that same init, layer by layer.
    mlp = ns.MLP(fan_in, 1000, 2, 1)
    for lin in (mlp[0], mlp[2]):
        v = float(lin.weight.detach().double().pow(2).mean()) * lin.in_features
        assert v == pytest.approx(analytic.TORCH_W_VAR, rel=5e-3)


def test_torch_first_layer_preactivation_variance_matches_the_limit_code():
    """One input through a fresh nn.Linear(d, n): the pre-activation variance over units
    is sigma_w^2 |x|^2 / d + bias variance = TORCH_W_VAR (|x|^2 + 1) / d, which is the
    matched Gaussian first layer of ``mlp_kernels(first_layer="gaussian")``."""
    from neuralspec import analytic

    d, n = 1000, 20000
    layer = nn.Linear(d, n)
    x = torch.randn(1, d)
    with torch.no_grad():
        z = layer(x).double()
    expected = analytic.TORCH_W_VAR * (float(x.pow(2).sum()) + 1) / d
    # 20000 nearly Gaussian pre-activations: relative standard deviation sqrt(2/n) = 1%.
    assert float(z.pow(2).mean()) == pytest.approx(expected, rel=0.05)
