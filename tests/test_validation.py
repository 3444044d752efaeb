"""Silent wrong answers turned into clear errors (issue 11, item 14), one test per case."""
import math

import numpy as np
import pytest
import torch
from torch import nn

import neuralspec as ns
from neuralspec._validation import as_inputs, expected_input_shape
from reference import reference_ntk, rel_err


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("fn", [ns.numerical_floor, ns.numerical_rank, ns.effective_rank])
def test_non_finite_eigenvalues_raise(fn, bad):
    for ev in ([bad, 1.0, 2.0], np.array([bad, 1.0, 2.0]), torch.tensor([bad, 1.0, 2.0])):
        with pytest.raises(ValueError, match="eigvals contains non-finite values"):
            fn(ev)


def test_finite_eigenvalue_lists_still_work():
    assert ns.numerical_rank([2.0, 1.0, 1e-30]) == 2
    assert ns.effective_rank([1.0, 1.0, 0.0], kind="participation") == pytest.approx(2.0)
    assert ns.numerical_floor([1.0, -2.0], dtype=np.float64) == pytest.approx(20 * np.finfo(float).eps)


@pytest.mark.parametrize("kwargs", [dict(init="gaussian", w_std=-1.0), dict(parameterization="ntk", w_std=0),
                                    dict(w_std=math.nan), dict(w_std=math.inf)])
def test_mlp_refuses_bad_w_std(kwargs):
    with pytest.raises(ValueError, match=r"w_std must be a positive finite number"):
        ns.MLP(2, 8, 1, 1, **kwargs)


@pytest.mark.parametrize("b_std", [-0.1, math.nan, math.inf])
def test_mlp_refuses_bad_b_std(b_std):
    with pytest.raises(ValueError, match=r"b_std must be a non-negative finite number"):
        ns.MLP(2, 8, 1, 1, init="gaussian", b_std=b_std)


def test_ntk_linear_refuses_bad_scales():
    for w in (-2.0, 0.0):
        with pytest.raises(ValueError, match="w_std must be a positive finite number"):
            ns.NTKLinear(3, 2, w_std=w)
    with pytest.raises(ValueError, match="b_std must be a non-negative finite number"):
        ns.NTKLinear(3, 2, b_std=-1.0)
    assert ns.NTKLinear(3, 2, b_std=0.0).b_std == 0.0  # zero bias scale is allowed (the default)
    assert ns.MLP(2, 8, 1, 1, "relu", "ntk", b_std=0.0)[0].b_std == 0.0


def test_eigh_accepts_numpy_integers():
    A = np.random.default_rng(0).standard_normal((6, 6))
    K = A @ A.T
    lam, U = ns.eigh(K, k=np.int64(3))
    lam_all, _ = ns.eigh(K)
    assert lam.shape == (3,) and U.shape == (6, 3)
    np.testing.assert_allclose(lam, lam_all[:3])
    for bad in (0, 7, 2.0, True):
        with pytest.raises(ValueError, match=r"k must be an integer in \[1, 6\]"):
            ns.eigh(K, k=bad)


def test_ntk_of_a_model_that_reshapes_its_input():
    """Unflatten -> Conv2d -> ... -> Linear: 16 features per point, readout of 8 (was refused)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Unflatten(1, (1, 4, 4)), nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8, 1)).double()
    x = torch.randn(5, 16, dtype=torch.float64)
    assert expected_input_shape(model) == (16,)
    assert rel_err(ns.ntk(model, x), reference_ntk(model, x)) < 1e-10
    assert ns.conjugate_kernel(model, x).shape == (5, 5)
    with pytest.raises(ValueError, match=r"x has 8 features per point \(shape \(5, 8\)\) but the model expects 16"):
        ns.ntk(model, torch.randn(5, 8, dtype=torch.float64))


def _bn_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1)).double()


def test_batchnorm_in_train_mode_says_samples_interact():
    model = _bn_model()
    x = torch.randn(6, 3, dtype=torch.float64)
    for call in (lambda: ns.ntk(model, x), lambda: ns.ntk_by_layer(model, x),
                 lambda: ns.ntk_operator(model, x, matrix_free=True), lambda: ns.ntk_operator(model, x),
                 lambda: ns.conjugate_kernel(model, x)):
        with pytest.raises(ValueError, match=r"module 1 \(BatchNorm1d\) is in training mode.*samples "
                                             r"interact.*model\.eval\(\)"):
            call()
    model.eval()
    assert rel_err(ns.ntk(model, x), reference_ntk(model, x)) < 1e-10


def test_batchnorm_without_running_stats_is_refused_even_in_eval_mode():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.Linear(4, 1))
    model.eval()
    with pytest.raises(ValueError, match="track_running_stats=False.*samples interact"):
        ns.ntk(model, torch.randn(4, 3))


def test_the_shape_probe_leaves_batchnorm_statistics_alone():
    """train() checks x by one forward pass; it runs in eval mode, so running stats do not move."""
    model = _bn_model()
    before = model[1].running_mean.clone()
    as_inputs(torch.randn(4, 3, dtype=torch.float64), "x", model=model)
    assert torch.equal(model[1].running_mean, before) and model[1].training


def test_integer_inputs_raise_the_same_way_for_numpy_and_tensors():
    """Chosen rule: integer (or bool) data raises TypeError saying to pass floats, NumPy or torch."""
    model = ns.MLP(2, 8, 1, 1).double()
    xi = np.array([[0, 1], [2, -1], [1, 1]], dtype=np.int64)
    for bad in (xi, torch.from_numpy(xi), xi.astype(np.int32), torch.ones(3, 2, dtype=torch.bool),
                np.ones((3, 2), dtype=bool), [[0, 1], [2, 3]]):
        for call in (lambda a: ns.ntk(model, a), lambda a: ns.conjugate_kernel(model, a),
                     lambda a: ns.ntk_operator(model, a, matrix_free=True),
                     lambda a: ns.train(model, a, np.zeros(len(a)), lr=0.1, steps=1)):
            with pytest.raises(TypeError, match=r"x must be floating point.*Pass floats"):
                call(bad)
    K = ns.ntk(model, xi.astype(np.float64))  # floats are fine, NumPy converted to the model's dtype
    assert torch.equal(K, ns.ntk(model, torch.from_numpy(xi).double()))
    with pytest.raises(TypeError, match="dtype torch.float32 but the model computes in torch.float64"):
        ns.ntk(model, torch.ones(3, 2))  # a floating-point tensor is never converted
