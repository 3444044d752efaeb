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
