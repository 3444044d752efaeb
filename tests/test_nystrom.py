"""Nyström top eigenpairs: known spectra, certification by residuals, bad inputs."""
import numpy as np
import pytest
import torch

import neuralspec as ns
from neuralspec.nystrom import eigenpair_residuals, kernel_columns, nystrom_eigenpairs
from neuralspec.scale import DenseKernelOperator


pytestmark = pytest.mark.usefixtures("one_thread")  # small kernels: see conftest.py


def known_spectrum(n=600, decay=1.5, seed=0):
    """K = U diag(lam) U^T with a random orthogonal U and lam_i = i^-decay."""
    g = np.random.default_rng(seed)
    U, _ = np.linalg.qr(g.standard_normal((n, n)))
    lam = np.arange(1, n + 1, dtype=float) ** -decay
    return (U * lam) @ U.T, lam, U


def test_nystrom_recovers_a_known_spectrum():
    K, lam, U = known_spectrum()
    vals, vecs, info = ns.top_eigenpairs(torch.from_numpy(K), 8, method="nystrom", landmarks=300,
                                         tol=1e-8, refine=30, return_info=True)
    np.testing.assert_allclose(vals.numpy(), lam[:8], rtol=1e-7)
    overlap = np.abs(np.sum(vecs.numpy() * U[:, :8], axis=0))
    assert overlap.min() > 1 - 1e-6
    assert info["converged"] and info["residuals"].max() <= 1e-8
    assert info["column_blocks"] == 1 and info["landmarks"] == 300
    assert info["exact_products"] == info["n_products"] > 0


def test_nystrom_subspace_alone_is_good_for_a_fast_decaying_spectrum():
    K, lam, _ = known_spectrum(decay=4.0)
    op = DenseKernelOperator(torch.from_numpy(K))
    vals, vecs, info = nystrom_eigenpairs(op, 5, landmarks=200, refine=0, tol=1e-3)
    # Nyström's own estimates and the one Rayleigh-Ritz step are both close
    np.testing.assert_allclose(info["nystrom_eigenvalues"], lam[:5], rtol=5e-2)
    np.testing.assert_allclose(vals, lam[:5], rtol=1e-6)
    assert info["refine_rounds"] == 1 and info["exact_products"] == info["subspace"]


def test_nystrom_matches_lanczos_on_an_ntk_operator():
    ns.set_seed(0)
    model = ns.MLP(2, 64, 2, 1).double()
    x = torch.randn(400, 2, dtype=torch.float64)
    op = ns.ntk_operator(model, x, matrix_free=True)
    a = ns.top_eigenpairs(op, 5, method="nystrom", landmarks=120, tol=1e-9, refine=50)
    b = ns.top_eigenpairs(ns.ntk(model, x), 5)
    torch.testing.assert_close(a[0], b[0], rtol=1e-8, atol=0)
    assert (a[1] * b[1]).sum(0).abs().min() > 1 - 1e-6


def test_kernel_columns_of_each_operator():
    ns.set_seed(1)
    model = ns.MLP(2, 32, 1, 1).double()
    x = torch.randn(50, 2, dtype=torch.float64)
    K = ns.ntk(model, x)
    idx = torch.tensor([3, 7, 20])
    for op in (ns.ntk_operator(model, x), ns.ntk_operator(model, x, matrix_free=True),
               ns.kernel_operator(lambda a, b: ns.ntk(model, a, b), x, cache=False)):
        torch.testing.assert_close(kernel_columns(op, idx), K[:, idx], rtol=1e-10, atol=1e-12)


def test_residuals_certify_and_catch_a_wrong_pair():
    K, lam, U = known_spectrum(n=200)
    good = eigenpair_residuals(K, lam[:3], U[:, :3])
    assert good.max() < 1e-10
    wrong_value = eigenpair_residuals(K, lam[:3] * np.array([1, 1.1, 1]), U[:, :3])
    assert wrong_value[1] > 0.05 and wrong_value[[0, 2]].max() < 1e-10
    swapped = U[:, [0, 5, 2]]
    assert eigenpair_residuals(K, lam[:3], swapped)[1] > 0.5
    with pytest.raises(ValueError, match="shape"):
        eigenpair_residuals(K, lam[:3], U[:, :2])


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 200}, "k must be"),
    ({"k": 3, "landmarks": 500}, "landmarks"),
    ({"k": 3, "landmarks": 0}, "landmarks"),
    ({"k": 3, "landmarks": -4}, "landmarks"),
    ({"k": 3, "landmarks": 3}, "landmarks"),
    ({"k": 3, "refine": -1}, "refine"),
])
def test_bad_inputs_name_the_argument(kwargs, match):
    K, _, _ = known_spectrum(n=200)
    with pytest.raises(ValueError, match=match):
        ns.top_eigenpairs(K, method="nystrom", **kwargs)


def test_landmarks_only_with_nystrom():
    K, _, _ = known_spectrum(n=100)
    with pytest.raises(ValueError, match="landmarks, oversample and landmark_method apply"):
        ns.top_eigenpairs(K, 3, landmarks=50)
    with pytest.raises(ValueError, match="landmarks, oversample and landmark_method apply"):
        ns.top_eigenpairs(K, 3, oversample=2)


def test_oversample_sets_the_block_size():
    K, lam, _ = known_spectrum(n=300, decay=3.0)
    _, _, info = ns.top_eigenpairs(K, 4, method="nystrom", landmarks=100, oversample=0, return_info=True)
    assert info["subspace"] == 4 and info["exact_products"] == 4 * info["refine_rounds"]
    with pytest.raises(ValueError, match="oversample"):
        ns.top_eigenpairs(K, 4, method="nystrom", oversample=-1)


# --- landmarks, the operator's columns and its cache (issue 17) ----------------------------


def _covering_radius(x, z):
    """The largest distance from a data point to its nearest landmark."""
    return float(torch.cdist(x.double(), z.double()).min(1).values.max())


def test_kmeans_landmarks_cover_the_data_better_than_a_uniform_sample():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5000, 2, generator=g)
    z = ns.nystrom.kmeans_landmarks(x, 100, seed=0)
    assert z.shape == (100, 2) and z.dtype == x.dtype
    u = x[torch.from_numpy(np.random.default_rng(0).choice(5000, 100, replace=False))]
    assert _covering_radius(x, z) < 0.7 * _covering_radius(x, u)


def test_operator_columns_equal_the_cross_ntk():
    ns.set_seed(2)
    model = ns.RFFMLP(2, 3.0, 32, 2, 2).double()
    x = torch.rand(90, 2, dtype=torch.float64)
    z = torch.rand(7, 2, dtype=torch.float64)
    for mode in ["structured", "autodiff"]:
        op = ns.scale.MatrixFreeNTKOperator(model, x, 32, mode=mode)
        torch.testing.assert_close(op.columns(z), ns.ntk(model, x, z), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation, rebuilt", [("relu", True), ("tanh", True), ("sigmoid", True),
                                                 ("gelu", False)])
@pytest.mark.parametrize("outputs", [1, 3])
def test_cached_products_rebuild_the_factors_exactly(activation, rebuilt, outputs):
    """The cache stores neither the first layer's input nor (when the activation allows) the last
    hidden layer's gradient factor; products from the cache equal the held kernel's."""
    ns.set_seed(3)
    model = ns.MLP(3, 48, 3, outputs, activation=activation).double()
    x = torch.randn(200, 3, dtype=torch.float64)
    op = ns.ntk_operator(model, x, matrix_free=True, block_size=64)
    assert bool(op._rebuild) == rebuilt
    K = ns.ntk(model, x)
    V = torch.randn(200, 3, dtype=torch.float64)
    first = op.matmat(V)                      # fills the cache
    assert op._cached_points() == 200
    torch.testing.assert_close(op.matmat(V), K @ V, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(first, K @ V, rtol=1e-10, atol=1e-10)


def test_kmeans_landmarks_beat_uniform_ones_on_an_ntk_operator():
    ns.set_seed(0)
    model = ns.RFFMLP(2, 10.0, 128, 2, 1)
    x = torch.rand(3000, 2)
    op = ns.ntk_operator(model, x, matrix_free=True)
    res = {}
    for how in ["kmeans", "uniform"]:
        _, _, info = ns.top_eigenpairs(op, 5, method="nystrom", landmarks=150, landmark_method=how,
                                       refine=0, return_info=True, progress=False)
        assert info["landmark_method"] == how and info["exact_products"] == 5
        res[how] = info["residuals"].max()
    assert res["kmeans"] < 0.5 * res["uniform"]


def test_refinement_rounds_reach_the_tolerance():
    """Too few landmarks for the tolerance: the residual block refines the pairs to it."""
    K, lam, U = known_spectrum(n=500, decay=1.0, seed=4)
    vals, vecs, info = ns.top_eigenpairs(torch.from_numpy(K), 4, method="nystrom", landmarks=20,
                                         tol=1e-6, refine=40, return_info=True)
    assert info["refine_rounds"] > 1 and info["converged"]
    assert info["exact_products"] == 4 * info["refine_rounds"]  # 4 vectors, then 4 residuals per round
    np.testing.assert_allclose(vals.numpy(), lam[:4], rtol=1e-9)


def test_landmark_method_is_checked():
    K, _, _ = known_spectrum(n=100)
    with pytest.raises(ValueError, match="landmark_method must be one of"):
        ns.top_eigenpairs(K, 3, method="nystrom", landmark_method="random")
    with pytest.raises(ValueError, match="'kmeans' needs the kernel at new points"):
        ns.top_eigenpairs(K, 3, method="nystrom", landmark_method="kmeans")
    with pytest.raises(ValueError, match="landmark_method apply to method='nystrom' only"):
        ns.top_eigenpairs(K, 3, landmark_method="uniform")


def test_factor_bytes_per_point_is_what_the_cache_stores():
    ns.set_seed(5)
    model = ns.RFFMLP(2, 3.0, 40, 2, 1)                     # frozen RFF, two ReLU layers, one output
    x = torch.rand(100, 2)
    op = ns.ntk_operator(model, x, matrix_free=True)
    op.matmat(torch.randn(100, 1))
    stored = sum(t.shape[1] * t.element_size() for pair in op._store.values() for t in pair if t is not None)
    assert op.factor_bytes_per_point == stored > 0
    # every factor would be: the inputs and gradient factors of all trainable layers
    every = sum(4 * (m.in_features + m.out_features) for m in model.modules()
                if isinstance(m, torch.nn.Linear) and m.weight.requires_grad)
    assert stored < 0.8 * every
    assert ns.ntk_operator(model, x, matrix_free=True, method="jacobian").factor_bytes_per_point == 0


def test_kmeans_landmarks_with_a_kernel_function():
    """A kernel recomputed from its function (kernel_operator(cache=False)) takes k-means landmarks too."""
    g = torch.Generator().manual_seed(6)
    x = torch.rand(800, 2, generator=g, dtype=torch.float64)

    def rbf(a, b):
        return torch.exp(-torch.cdist(a, b) ** 2 / 0.1)

    op = ns.kernel_operator(rbf, x, cache=False)
    vals, vecs, info = ns.top_eigenpairs(op, 6, method="nystrom", landmarks=60, tol=1e-8, refine=30,
                                         return_info=True)
    assert info["landmark_method"] == "kmeans" and info["converged"]
    ref = torch.linalg.eigvalsh(rbf(x, x)).flip(0)[:6]
    torch.testing.assert_close(vals, ref, rtol=1e-7, atol=0)
