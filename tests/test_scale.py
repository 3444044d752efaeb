"""Top-k eigenpairs, block-wise kernel operators and the matrix-free NTK (neuralspec.scale),
each checked against an exact dense reference; and a smoke test of the benchmark."""
import runpy
from pathlib import Path
import sys

import numpy as np
import pytest
import torch
from scipy.sparse.linalg import LinearOperator, aslinearoperator
from torch import nn

import neuralspec as ns
from neuralspec.scale import (
    KernelOperator,
    MatrixFreeNTKOperator,
    kernel_operator,
    ntk_matvec,
    ntk_operator,
    top_eigenpairs,
)

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


pytestmark = pytest.mark.usefixtures("one_thread")  # small kernels: see conftest.py
N = 150
K_TOP = 5


def gapped_kernel(dtype, n=N, seed=0):
    """A symmetric PSD matrix with eigenvalues 10, 9, 8, 7, 6, then a gap down to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.cat([torch.tensor([10.0, 9.0, 8.0, 7.0, 6.0], dtype=torch.float64),
                     torch.rand(n - 5, generator=g, dtype=torch.float64)])
    K = (Q * lam) @ Q.T
    return ((K + K.T) / 2).to(dtype)


def reference(K, k):
    """Dense float64 eigh of the (possibly float32) matrix: the exact answer for that matrix."""
    lam, U = torch.linalg.eigh(torch.as_tensor(K).double())
    return lam.flip(0)[:k], U.flip(1)[:, :k]


def assert_matches(evals, evecs, K, k, dtype):
    lam_ref, U_ref = reference(K, k)
    evals = torch.as_tensor(evals).double()
    evecs = torch.as_tensor(evecs).double()
    tol = RTOL[dtype]
    assert evals.shape == (k,) and evecs.shape == (K.shape[0], k)
    assert torch.all(evals[:-1] >= evals[1:]), "eigenvalues come back in descending order"
    rel = ((evals - lam_ref).abs() / lam_ref.abs()).max()
    assert rel <= tol, f"eigenvalues agree with dense eigh to {tol:g} relative (got {rel:.2e})"
    # the eigenvector subspace: projectors agree (spectral norm)
    dP = torch.linalg.matrix_norm(evecs @ evecs.T - U_ref @ U_ref.T, ord=2)
    assert dP <= tol, f"top-{k} subspace agrees with dense eigh to {tol:g} (got {dP:.2e})"
    # each eigenvector (the eigenvalues are simple), up to sign
    cos = (evecs * U_ref).sum(0).abs()
    assert (1 - cos).max() <= tol, "each eigenvector agrees with dense eigh up to sign"
    eye = torch.eye(k, dtype=torch.float64)
    assert torch.allclose(evecs.T @ evecs, eye, atol=10 * tol), "eigenvectors are orthonormal"


# ----------------------------------------------------------------------------
# top_eigenpairs against dense eigh
# ----------------------------------------------------------------------------

def _as_kind(K, kind):
    if kind == "torch":
        return K
    if kind == "numpy":
        return K.numpy()
    if kind == "scipy":
        return aslinearoperator(K.numpy())
    return kernel_operator(lambda a, b: K[a[:, 0].long()][:, b[:, 0].long()],
                           torch.arange(K.shape[0], dtype=K.dtype)[:, None], block_size=41)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("method", ["lanczos", "lobpcg"])
@pytest.mark.parametrize("kind", ["torch", "numpy", "scipy", "operator"])
def test_top_eigenpairs_matches_dense_eigh(dtype, method, kind):
    K = gapped_kernel(dtype)
    evals, evecs = top_eigenpairs(_as_kind(K, kind), K_TOP, method=method)
    if kind in ("numpy", "scipy"):
        assert isinstance(evals, np.ndarray) and isinstance(evecs, np.ndarray)
        assert evals.dtype == K.numpy().dtype
    else:
        assert isinstance(evals, torch.Tensor) and evals.dtype == dtype
    assert_matches(evals, evecs, K, K_TOP, dtype)


def test_top_eigenpairs_signs_and_info():
    K = gapped_kernel(torch.float64)
    evals, evecs, info = top_eigenpairs(K, 3, return_info=True, progress=True)
    idx = evecs.abs().argmax(0)
    assert torch.all(evecs[idx, torch.arange(3)] > 0), "largest entry of each eigenvector is positive"
    assert info["method"] == "lanczos" and info["n_products"] > 0 and info["seconds"] >= 0
    again = top_eigenpairs(K, 3)
    assert torch.equal(evals, again[0]) and torch.equal(evecs, again[1]), "fixed seed: same result"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_top_eigenpairs_of_an_ntk(dtype):
    model = small_rff_mlp(dtype)
    x = inputs(200, dtype)
    K = ns.ntk(model, x)
    evals, _ = top_eigenpairs(K, 8)
    lam_ref, _ = reference(K, 8)
    rel = ((evals.double() - lam_ref).abs() / lam_ref).max()
    assert rel <= RTOL[dtype], f"top-8 NTK eigenvalues agree with eigh ({rel:.2e})"


# ----------------------------------------------------------------------------
# block-wise kernel operator
# ----------------------------------------------------------------------------

def rbf(a, b):
    return torch.exp(-torch.cdist(a, b) ** 2 / 0.1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cache", [True, False])
def test_kernel_operator_equals_dense_product(dtype, cache):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(97, 2, generator=g, dtype=dtype)
    K = rbf(x, x)
    op = kernel_operator(rbf, x, block_size=23, cache=cache)
    assert op.shape == (97, 97) and op.dtype == dtype
    V = torch.randn(97, 3, generator=g, dtype=dtype)
    for v in (V, V[:, 0]):
        ref = K @ v
        err = (op @ v - ref).abs().max() / ref.abs().max()
        assert err <= RTOL[dtype], f"block-wise K v equals the dense K v ({err:.2e})"
    out = op @ V.numpy()
    assert isinstance(out, np.ndarray) and out.shape == (97, 3)
    if cache:
        assert torch.equal(op.to_dense(), op.to_dense().T), "the held kernel is exactly symmetric"
        assert op.to_dense().data_ptr() == op.K.data_ptr(), "one copy of the kernel"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_operator_of_the_ntk(dtype):
    model = small_rff_mlp(dtype)
    x = inputs(90, dtype)
    K = ns.ntk(model, x)
    op = kernel_operator(lambda a, b: ns.ntk(model, a, b), x, block_size=32)
    err = (op.to_dense() - K).abs().max() / K.abs().max()
    assert err <= RTOL[dtype], f"NTK built in row blocks equals ntk(model, x) ({err:.2e})"
    held = ntk_operator(model, x, block_size=32)
    v = torch.randn(90, dtype=dtype)
    err = (held @ v - K @ v).abs().max() / (K @ v).abs().max()
    assert err <= RTOL[dtype]


# ----------------------------------------------------------------------------
# matrix-free NTK
# ----------------------------------------------------------------------------

def small_rff_mlp(dtype, width=48, out=1):
    torch.manual_seed(0)
    return nn.Sequential(ns.RFF(2, 32, scale=5.0), nn.Linear(32, width), nn.ReLU(),
                         nn.Linear(width, width), nn.ReLU(), nn.Linear(width, out)).to(dtype)


class Residual(nn.Module):
    """Not a plain stack: forces the generic paths."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(2, 24)
        self.block = nn.Linear(24, 24)
        self.out = nn.Linear(24, 2)
        self.in_features = 2

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        h = h + torch.sin(self.block(h))
        return self.out(h)


MODELS = {
    "rff-mlp (frozen features)": lambda dt: small_rff_mlp(dt),
    "lff (trainable features)": lambda dt: ns.RFFMLP(2, 5.0, 24, 2, 1, learnable_features=True).to(dt),
    "mlp, 3 outputs": lambda dt: ns.MLP(2, 24, 2, 3, activation="tanh").to(dt),
    "residual module": lambda dt: Residual().to(dt),
}


def inputs(n, dtype, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("how", ["auto", "autodiff", "structured, no cache", "structured, part cached"])
def test_matrix_free_matvec_equals_ntk(dtype, name, how):
    torch.manual_seed(0)
    model = MODELS[name](dtype)
    x = inputs(70, dtype)
    K = ns.ntk(model, x)
    if how.startswith("structured") and name == "residual module":
        pytest.skip("not a stack of layers: no structured mode")
    kw = {"auto": {}, "autodiff": {"method": "jacobian"}, "structured, no cache": {"cache_bytes": 0}}.get(how)
    if kw is None:  # half the memory that caching every chunk takes
        full = ntk_operator(model, x, matrix_free=True, block_size=32)
        full @ torch.ones(70, dtype=dtype)
        kw = {"cache_bytes": full._cached_bytes // 2}
    op = ntk_operator(model, x, matrix_free=True, block_size=32, **kw)  # several chunks
    assert isinstance(op, MatrixFreeNTKOperator) and op.shape == (70, 70)
    expected = "autodiff" if how == "autodiff" or name == "residual module" else "structured"
    assert op.mode == expected, f"{name}: {how} uses the {expected} passes"
    V = torch.randn(70, 11 if op.mode == "structured" else 3, dtype=dtype)  # 11 > 8: two groups
    for v in (V[:, 0], V, V[:, 0]):  # twice the single vector: the second one from the cache
        ref = K @ v
        err = (op @ v - ref).abs().max() / ref.abs().max()
        assert err <= RTOL[dtype], f"matrix-free NTK v equals ntk(model, x) @ v ({err:.2e})"
    if how == "structured, part cached":
        assert 0 < op._cached_points() < 70, "only the chunks within the budget are cached"


def test_matrix_free_structured_mode_refused_for_other_modules():
    x = inputs(20, torch.float32)
    with pytest.raises(ValueError, match="does not apply"):
        ntk_operator(Residual(), x, matrix_free=True, method="structured")
    with pytest.raises(ValueError, match="cache_bytes"):
        ntk_operator(small_rff_mlp(torch.float32), x, matrix_free=True, cache_bytes=-1)
    with pytest.raises(ValueError, match="method must be one of"):
        ntk_operator(small_rff_mlp(torch.float32), x, matrix_free=True, method="fast")


def test_matrix_free_double_backward_fallback():
    model = MODELS["mlp, 3 outputs"](torch.float64)
    x = inputs(40, torch.float64)
    K = ns.ntk(model, x)
    op = ntk_operator(model, x, matrix_free=True, block_size=16, method="jacobian")
    op.forward_mode = False  # as if an op had no forward-mode formula
    V = torch.randn(40, 2, dtype=torch.float64)
    assert torch.allclose(op @ V, K @ V, rtol=1e-10, atol=1e-10 * float((K @ V).abs().max()))


def test_ntk_matvec_numpy_in_numpy_out():
    model = small_rff_mlp(torch.float64)
    x = inputs(50, torch.float64).numpy()
    v = np.random.default_rng(0).standard_normal(50)
    u = ntk_matvec(model, x, v, chunk_size=7)
    assert isinstance(u, np.ndarray) and u.shape == (50,)
    ref = ns.ntk(model, x).numpy() @ v
    assert np.allclose(u, ref, rtol=1e-10, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matrix_free_top_eigenpairs_match_dense(dtype):
    model = small_rff_mlp(dtype)
    x = inputs(160, dtype)
    K = ns.ntk(model, x)
    op = ntk_operator(model, x, matrix_free=True)
    k = 4
    evals, evecs = top_eigenpairs(op, k)
    lam_ref, U_ref = reference(K, k)
    rel = ((evals.double() - lam_ref).abs() / lam_ref).max()
    assert rel <= RTOL[dtype], f"matrix-free top-{k} eigenvalues equal dense eigh ({rel:.2e})"
    gap = float(lam_ref[k - 1] - torch.linalg.eigvalsh(K.double())[-k - 1])
    dP = torch.linalg.matrix_norm(evecs.double() @ evecs.double().T - U_ref @ U_ref.T, ord=2)
    assert dP <= RTOL[dtype] * float(lam_ref[0]) / gap, "and the same eigenvector subspace"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_matrix_free_on_cuda():
    model = small_rff_mlp(torch.float64).cuda()
    x = inputs(64, torch.float64).cuda()
    op = ntk_operator(model, x, matrix_free=True)
    assert op.device.type == "cuda"
    v = torch.randn(64, dtype=torch.float64, device="cuda")
    K = ns.ntk(model, x)
    assert torch.allclose(op @ v, K @ v, rtol=1e-10, atol=1e-10 * float((K @ v).abs().max()))
    evals, evecs = top_eigenpairs(op, 3)
    assert evals.device.type == "cuda" and evecs.device.type == "cuda"


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------

def _asym():
    K = gapped_kernel(torch.float64, n=20)
    K[0, 1] += 1.0
    return K


def _nan():
    K = gapped_kernel(torch.float64, n=20)
    K[3, 3] = float("nan")
    return K


GOOD = gapped_kernel(torch.float64, n=20)


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((torch.ones(4, 5), 2), {}, ValueError, "square"),
    ((torch.ones(3, 3, 3), 2), {}, ValueError, "square"),
    ((_asym(), 2), {}, ValueError, "not symmetric"),
    ((_nan(), 2), {}, ValueError, "non-finite"),
    ((torch.ones(5, 5, dtype=torch.int64), 2), {}, TypeError, "floating"),
    ((np.ones((5, 5), dtype=np.int64), 2), {}, TypeError, "floating"),
    (([[1.0, 0.0], [0.0, 1.0]], 1), {}, TypeError, "K_or_operator must be"),
    ((GOOD, 0), {}, ValueError, "1 <= k < N"),
    ((GOOD, 20), {}, ValueError, "1 <= k < N"),
    ((GOOD, True), {}, ValueError, "1 <= k < N"),
    ((GOOD, 2.0), {}, ValueError, "1 <= k < N"),
    ((GOOD, 2), {"method": "arnoldi"}, ValueError, "method must be one of"),
    ((GOOD, 2), {"tol": -1.0}, ValueError, "tol"),
    ((GOOD, 2), {"ncv": 2}, ValueError, "ncv"),
    ((GOOD, 2), {"maxiter": 0}, ValueError, "maxiter"),
    ((aslinearoperator(np.ones((4, 6))), 2), {}, ValueError, "square"),
    ((LinearOperator((6, 6), matvec=lambda v: np.triu(np.ones((6, 6))) @ v, dtype=np.float64), 2),
     {}, ValueError, "not symmetric"),
])
def test_top_eigenpairs_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        top_eigenpairs(*args, **kwargs)


def test_operator_bad_input():
    x = inputs(30, torch.float32)
    model = small_rff_mlp(torch.float32)
    op = ntk_operator(model, x, matrix_free=True)
    with pytest.raises(ValueError, match=r"expected shape \(30,\) or \(30, b\)"):
        op @ torch.ones(29)
    with pytest.raises(TypeError, match="floating point"):
        op @ torch.ones(30, dtype=torch.int64)
    with pytest.raises(ValueError, match="2-D"):
        ntk_operator(model, x[:, 0], matrix_free=True)
    with pytest.raises(ValueError, match="expects 2"):
        ntk_operator(model, torch.ones(30, 3), matrix_free=True)
    with pytest.raises(ValueError, match="non-finite"):
        ntk_operator(model, torch.full((30, 2), float("nan")), matrix_free=True)
    with pytest.raises(TypeError, match="dtype"):
        ntk_operator(model, x.double(), matrix_free=True)
    frozen = small_rff_mlp(torch.float32).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        ntk_operator(frozen, x, matrix_free=True)
    with pytest.raises(ValueError, match="block_size"):
        ntk_operator(model, x, matrix_free=True, block_size=0)
    with pytest.raises(ValueError, match="non-finite"):
        ntk_matvec(model, x, torch.full((30,), float("inf")))
    with pytest.raises(TypeError, match="callable"):
        kernel_operator(np.ones((3, 3)), x)
    with pytest.raises(ValueError, match="must return a matrix of shape"):
        kernel_operator(lambda a, b: a @ b.T[:, :1], x)
    with pytest.raises(ValueError, match="not symmetric"):
        kernel_operator(lambda a, b: a[:, :1] + 2 * b[:, 1:].T, x)


def test_operators_are_kernel_operators():
    x = inputs(20, torch.float64)
    for op in (kernel_operator(rbf, x), kernel_operator(rbf, x, cache=False),
               ntk_operator(small_rff_mlp(torch.float64), x, matrix_free=True)):
        assert isinstance(op, KernelOperator)
        assert "N=20" in repr(op)
        lo = op.as_linear_operator()
        v = np.ones(20)
        assert np.allclose(lo @ v, (op @ torch.ones(20, dtype=torch.float64)).numpy())


# ----------------------------------------------------------------------------
# the benchmark
# ----------------------------------------------------------------------------

def test_bench_quick_prints_a_table(tmp_path, capsys, monkeypatch):
    out = tmp_path / "bench.md"
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    monkeypatch.setattr(sys, "argv", [str(script), "--quick", "--out", str(out)])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(str(script), run_name="__main__")
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for needle in ("| width", "| ntk ", "| torch.func ", "| loop ", "torch.linalg.eigh",
                   "top_eigenpairs lanczos", "## Targets", "GEMM rate of this machine", "% GEMM"):
        assert needle in text, f"the benchmark table shows {needle!r}"
    assert out.read_text().startswith("# neuralspec benchmark")
