"""Inputs of any shape (N, *): CNNs on images, 3-D sequences, models that reshape a flat input.

Every function that evaluates a model (ntk, ntk_by_layer, conjugate_kernel, ntk_operator dense and
matrix-free, ntk_matvec, top_eigenpairs through the operator, train) takes 3-D and 4-D inputs,
agrees with the torch.func Jacobian contraction of tests/reference.py to 1e-10 in float64, and
refuses a wrong trailing shape with a ValueError that names the argument, the shape given and
the shape the model accepts.
"""
import re

import numpy as np
import pytest
import torch
from torch import nn

import neuralspec as ns
from reference import reference_ntk, rel_err

TOL = 1e-10


pytestmark = pytest.mark.usefixtures("one_thread")  # small kernels: see conftest.py


def cnn(out=1):
    """Conv2d -> ReLU -> Conv2d -> ReLU -> Flatten -> Linear on (N, 3, 16, 16) images."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, out)).double()


def seq1d():
    """Conv1d -> Tanh -> Flatten -> Linear on (N, 2, 10) sequences (3-D inputs)."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv1d(2, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 8, 1)).double()


def unflatten():
    """A model whose first module reshapes a flat (N, 36) input: Unflatten -> Conv2d -> ... -> Linear."""
    torch.manual_seed(2)
    return nn.Sequential(nn.Unflatten(1, (1, 6, 6)), nn.Conv2d(1, 3, 3), nn.GELU(), nn.Flatten(),
                         nn.Linear(3 * 4 * 4, 8), nn.Tanh(), nn.Linear(8, 1)).double()


CASES = {  # name: (model factory, sample shape, a wrong sample shape, accepted shape in the message)
    "cnn-4d": (cnn, (3, 16, 16), (3, 12, 12), r"\(N, 3, H, W\)"),
    "conv1d-3d": (seq1d, (2, 10), (3, 10), r"\(N, 2, L\)"),
    "unflatten-2d": (unflatten, (36,), (16,), r"\(N, 36\)"),
}


def data(shape, n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn((n,) + tuple(shape), generator=g, dtype=torch.float64)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("method", ["auto", "jacobian", "ntvp"])
def test_ntk_matches_reference(case, method):
    make, shape, _, _ = CASES[case]
    model = make()
    x, x2 = data(shape, 7, 0), data(shape, 5, 1)
    assert ns.ntk_method(model) == "jacobian"
    assert rel_err(ns.ntk(model, x, method=method), reference_ntk(model, x)) < TOL
    assert rel_err(ns.ntk(model, x, x2, method=method, chunk_size=3), reference_ntk(model, x, x2)) < TOL
    parts = ns.ntk_by_layer(model, x, x2, method=method)
    assert rel_err(sum(parts.values()), reference_ntk(model, x, x2)) < TOL


@pytest.mark.parametrize("outputs", ["trace", "mean", "full"])
def test_cnn_several_outputs(outputs):
    model = cnn(out=3)
    x, x2 = data((3, 16, 16), 5, 0), data((3, 16, 16), 4, 1)
    for method in ("jacobian", "ntvp"):
        assert rel_err(ns.ntk(model, x, method=method, outputs=outputs),
                       reference_ntk(model, x, outputs=outputs)) < TOL
        assert rel_err(ns.ntk(model, x, x2, method=method, outputs=outputs),
                       reference_ntk(model, x, x2, outputs=outputs)) < TOL


@pytest.mark.parametrize("case", sorted(CASES))
def test_operators_and_top_eigenpairs(case):
    make, shape, _, _ = CASES[case]
    model = make()
    x = data(shape, 9, 0)
    R = reference_ntk(model, x)
    V = torch.randn(9, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for matrix_free in (False, True):
        op = ns.ntk_operator(model, x, matrix_free=matrix_free, block_size=4)
        assert rel_err(op @ V, R @ V) < TOL, (case, matrix_free)
        assert rel_err(op @ V[:, 0], R @ V[:, 0]) < TOL
        lam, U = ns.top_eigenpairs(op, 2)
        ref = torch.linalg.eigvalsh(R).flip(0)[:2]
        assert float((lam - ref).abs().max() / ref[0]) < 1e-8
    assert rel_err(ns.ntk_matvec(model, x, V), R @ V) < TOL
    assert isinstance(ns.ntk_matvec(model, x.numpy(), V.numpy()), np.ndarray)


def test_matrix_free_several_outputs_cnn():
    model = cnn(out=2)
    x = data((3, 16, 16), 6, 0)
    V = torch.randn(6, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    for outputs in ("trace", "mean"):
        R = reference_ntk(model, x, outputs=outputs)
        op = ns.ntk_operator(model, x, matrix_free=True, outputs=outputs)
        assert rel_err(op @ V, R @ V) < TOL
        assert rel_err(ns.ntk_operator(model, x, outputs=outputs) @ V, R @ V) < TOL
    with pytest.raises(ValueError, match=r"outputs='full' is not available for an NTK operator.*\(N, N, O, O\)"):
        ns.ntk_operator(model, x, outputs="full")
    with pytest.raises(ValueError, match="outputs must be one of"):
        ns.ntk_operator(model, x, matrix_free=True, outputs="sum")
    with pytest.raises(ValueError, match="outputs='full' is not available"):
        ns.ntk_matvec(model, x, V, outputs="full")


@pytest.mark.parametrize("case", sorted(CASES))
def test_conjugate_kernel_is_the_flattened_readout_input(case):
    make, shape, _, _ = CASES[case]
    model = make()
    x, x2 = data(shape, 6, 0), data(shape, 4, 1)
    with torch.no_grad():
        h, h2 = model[:-1](x).flatten(1), model[:-1](x2).flatten(1)
    assert rel_err(ns.conjugate_kernel(model, x), h @ h.T / h.shape[1]) < 1e-12
    assert rel_err(ns.conjugate_kernel(model, x, x2), h @ h2.T / h.shape[1]) < 1e-12


def test_conjugate_kernel_flattens_feature_maps():
    """A model whose last hidden representation is still an image: it is flattened."""
    torch.manual_seed(0)
    convs = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU()).double()
    x = data((3, 8, 8), 5, 0)
    with torch.no_grad():
        h = convs(x).flatten(1)
    assert rel_err(ns.conjugate_kernel(None, x, features=convs), h @ h.T / h.shape[1]) < 1e-12
    assert rel_err(ns.feature_kernel(convs, x), h @ h.T) < 1e-12


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_and_lambda_max(case):
    make, shape, _, _ = CASES[case]
    model = make()
    x = data(shape, 8, 0)
    y = torch.sin(x.flatten(1).sum(1))
    lam = ns.ntk_lambda_max(model, x)
    ref = float(torch.linalg.eigvalsh(reference_ntk(model, x))[-1])
    assert abs(lam - ref) < 1e-6 * ref
    res = ns.train(model, x, y, lr=0.5 * ns.stability_limit(lam, 8), steps=20, lambda_max=lam)
    assert res.residuals.shape[1] == 8
    assert res.loss_history[-1] < res.loss_history[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_trailing_shape_names_argument_and_shapes(case):
    make, shape, wrong, accepted = CASES[case]
    model = make()
    x, bad = data(shape, 4, 0), data(wrong, 4, 1)
    given = r"\(4, " + ", ".join(map(str, wrong)) + r"\)"
    calls = {
        "ntk": lambda a, name: ns.ntk(model, a) if name == "x" else ns.ntk(model, x, a),
        "ntk_by_layer": lambda a, name: (ns.ntk_by_layer(model, a) if name == "x"
                                         else ns.ntk_by_layer(model, x, a)),
        "conjugate_kernel": lambda a, name: (ns.conjugate_kernel(model, a) if name == "x"
                                             else ns.conjugate_kernel(model, x, a)),
        "ntk_operator": lambda a, name: ns.ntk_operator(model, a),
        "ntk_operator_mf": lambda a, name: ns.ntk_operator(model, a, matrix_free=True),
        "ntk_matvec": lambda a, name: ns.ntk_matvec(model, a, torch.ones(4, dtype=torch.float64)),
        "train": lambda a, name: ns.train(model, a, torch.zeros(4, dtype=torch.float64), lr=0.1, steps=1),
    }
    for fname, call in calls.items():
        for name in (("x", "x2") if fname in ("ntk", "ntk_by_layer", "conjugate_kernel") else ("x",)):
            with pytest.raises(ValueError) as info:
                call(bad, name)
            msg = str(info.value)
            assert msg.startswith(f"{name} has "), (fname, msg)
            assert (given.replace("\\", "") in msg or "features per point" in msg), (fname, msg)
            assert re.search(accepted, msg), (fname, msg)


def test_x_and_x2_samples_must_have_the_same_shape():
    """A model that accepts images of any size (global pooling): x and x2 must still agree."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(2, 1)).double()
    x, x2 = data((3, 8, 8), 3, 0), data((3, 10, 10), 3, 1)
    assert ns.ntk(model, x2).shape == (3, 3)
    with pytest.raises(ValueError, match=r"x and x2 must have samples of the same shape.*\(3, 8, 8\).*\(3, 10, 10\)"):
        ns.ntk(model, x, x2)


def test_mlp_still_structured_and_refuses_extra_axes():
    """Stacks of linear layers keep the structured path on (N, d); (N, k, d) is refused, not broadcast."""
    model = ns.MLP(4, 16, 2, 1).double()
    x = data((4,), 6, 0)
    assert ns.ntk_method(model) == "structured"
    assert rel_err(ns.ntk(model, x), reference_ntk(model, x)) < TOL
    with pytest.raises(ValueError, match=r"x has shape \(6, 3, 4\) \(samples of shape \(3, 4\)\) but the model "
                                         r"accepts inputs of shape \(N, 4\)"):
        ns.ntk(model, data((3, 4), 6, 0))


def test_structured_method_refused_for_unflat_inputs():
    """An elementwise-then-linear stack qualifies for the structured plan, but not on 3-D inputs."""
    model = nn.Sequential(nn.Tanh(), nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1)).double()
    x3 = data((3, 4), 5, 0)
    with pytest.raises(ValueError, match="structured.*not flat vectors"):
        ns.ntk(model, x3, method="structured")
    assert rel_err(ns.ntk(model, x3), reference_ntk(model, x3)) < TOL
    op = ns.ntk_operator(model, x3, matrix_free=True)
    assert op.mode == "autodiff"
    V = torch.ones(5, 1, dtype=torch.float64)
    assert rel_err(op @ V, reference_ntk(model, x3) @ V) < TOL


def test_gratings():
    x, labels = ns.gratings(12, size=10, orientations=3, seed=4)
    assert x.shape == (12, 3, 10, 10) and x.dtype == np.float64 and labels.dtype == np.int64
    assert labels.tolist() == [0, 1, 2] * 4 and np.abs(x).max() <= 1.0
    assert np.array_equal(x[:, 0], x[:, 2])  # the same grating in every channel
    x2, _ = ns.gratings(12, size=10, orientations=3, seed=4)
    assert np.array_equal(x, x2)
    # orientation 0 varies along the columns only; orientation 90 degrees along the rows only
    x4, lab4 = ns.gratings(4, size=8, orientations=2, seed=0, channels=1)
    assert np.allclose(x4[0, 0], x4[0, 0, :1]) and np.allclose(x4[1, 0], x4[1, 0, :, :1])
    # one orientation spans two dimensions (cos and sin of the phase): 2 C in all
    big, _ = ns.gratings(200, size=16, orientations=4, seed=1)
    s = np.linalg.svd(big.reshape(200, -1), compute_uv=False)
    assert s[7] > 1e-6 * s[0] and s[8] < 1e-10 * s[0]
    for kwargs, match in ((dict(n=0), "n must be"), (dict(n=4, size=1), "size must be"),
                          (dict(n=4, orientations=0), "orientations must be"),
                          (dict(n=4, frequency=-1.0), "frequency must be"),
                          (dict(n=4, channels=0), "channels must be")):
        with pytest.raises(ValueError, match=match):
            ns.gratings(**kwargs)
    cnn4 = cnn()  # the library's own images go straight into a CNN
    xg = torch.as_tensor(ns.gratings(5, 16, 4, seed=0)[0])
    assert rel_err(ns.ntk(cnn4, xg), reference_ntk(cnn4, xg)) < TOL
