r"""Top eigenpairs from a Nyström subspace, refined and certified with exact products.

For a PSD kernel :math:`K` of :math:`N` points and :math:`m` landmark points
:math:`L`, the Nyström approximation (Williams and Seeger 2001) uses one column
block :math:`C = K(X, L)` and the landmark block :math:`W = K(L, L)`:

.. math::

    K \approx C W^{+} C^\top = B B^\top, \qquad B = C R, \quad R = U_W S_W^{-1/2},

with :math:`W = U_W S_W U_W^\top` (eigenvalues below round-off dropped). The
top :math:`q = k + p` eigenvectors of :math:`B B^\top` come from the
:math:`m \times m` matrix :math:`R^\top (C^\top C) R`, with :math:`C^\top C`
summed in float64 over blocks of rows, so only :math:`C` itself is held (:math:`N m`
numbers), and they span the starting subspace :math:`Q`.

**Landmarks.** When the operator can evaluate the kernel at new points (a
matrix-free NTK, or a kernel function), the landmarks are k-means centres of
the inputs (:func:`kmeans_landmarks`; Zhang, Tsang and Kwok 2008), which cover
the data evenly; otherwise (a held kernel) a uniform sample of the points.

**Rayleigh–Ritz and certification.** One exact block product :math:`Y = K Q`
gives

.. math::

    H = Q^\top Y = V \Theta V^\top, \qquad U = Q V, \qquad K U = Y V, \qquad
    r_i = \frac{\|K u_i - \theta_i u_i\|}{\theta_i},

so every returned pair comes with its residual, computed from the same exact
product (a certificate, not an estimate). When the top :math:`k` residuals
exceed ``tol``, a refinement round adds the residual block
:math:`R = KU - U\Theta` (orthogonalized against :math:`U`),
multiplies it exactly and repeats Rayleigh–Ritz on :math:`[U, R]` (block LOBPCG without its
momentum term; Knyazev 2001): at most :math:`q` products per round, like a step of
subspace iteration, but converging much faster.

**Cost.** For the NTK, the column block costs
:math:`2 N m \sum_l (\text{in}_l + \text{out}_l)` flops with the structured
formula (:meth:`~neuralspec.scale.MatrixFreeNTKOperator.columns`), far less
per column than an exact product (:math:`4P` flops per point); with 1000
landmarks on the benchmark network it costs about 1.5 products. Oversampling
(``p > 0``) costs a product per vector and did not help on the benchmark NTK:
the Nyström subspace's error is spread over all its directions (residuals
:math:`8.26 \times 10^{-4}` with :math:`q = 10`, :math:`8.02 \times 10^{-4}`
with :math:`q = 30`, 2000 uniform landmarks, :math:`N = 20\,000`), so the
default is ``p = 0``.
"""
from __future__ import annotations

import math
import time
from typing import Dict, Optional, Tuple

import numpy as np
import torch

__all__ = ["nystrom_eigenpairs", "eigenpair_residuals", "kernel_columns", "kmeans_landmarks"]

LANDMARK_METHODS = ("auto", "kmeans", "uniform")


def kernel_columns(op, idx: torch.Tensor) -> torch.Tensor:
    """The columns ``K[:, idx]`` of a kernel operator, as cheaply as the operator allows.

    Held kernels are sliced; a block operator calls its kernel function on
    ``(x, x[idx])``; a matrix-free NTK computes the cross kernel
    :math:`\\Theta(X, X_L)` with :func:`~neuralspec.ntk.ntk` (structured when the
    model qualifies); any other operator multiplies indicator vectors
    (``len(idx)`` exact products).
    """
    from .scale import BlockKernelOperator, DenseKernelOperator, MatrixFreeNTKOperator

    idx = idx.to(torch.long)
    if isinstance(op, DenseKernelOperator):
        return op.K[:, idx.to(op.K.device)]
    if isinstance(op, BlockKernelOperator):
        return op.kernel_fn(op.x, op.x[idx.to(op.x.device)]).to(op.dtype)
    if isinstance(op, MatrixFreeNTKOperator):
        return op.columns(op.x[idx.to(op.x.device)])
    E = torch.zeros(op.shape[0], len(idx), dtype=op.dtype, device=op.device)
    E[idx.to(op.device), torch.arange(len(idx), device=op.device)] = 1
    return op.matmat(E)


def eigenpair_residuals(K_or_operator, eigenvalues, eigenvectors) -> np.ndarray:
    r"""Relative residuals :math:`\|K u_i - \lambda_i u_i\| / |\lambda_i|` of claimed eigenpairs.

    One block product with the kernel (exact). A pair that is not an
    eigenpair has a residual of order one; a converged one, of the order of
    the solver's tolerance.

    Parameters
    ----------
    K_or_operator : (N, N) tensor or array, or KernelOperator
    eigenvalues : (k,)
    eigenvectors : (N, k), unit-norm columns

    Returns
    -------
    numpy.ndarray of shape (k,)
    """
    from .scale import _as_operator

    op, _ = _as_operator(K_or_operator, check=False)
    lam = torch.as_tensor(np.asarray(eigenvalues.detach().cpu() if isinstance(eigenvalues, torch.Tensor)
                                     else eigenvalues), dtype=torch.float64).reshape(-1)
    U = eigenvectors if isinstance(eigenvectors, torch.Tensor) else torch.from_numpy(np.asarray(eigenvectors))
    if U.dim() == 1:
        U = U[:, None]
    if U.shape != (op.shape[0], lam.numel()):
        raise ValueError(f"eigenvectors must have shape (N, k) = ({op.shape[0]}, {lam.numel()}); "
                         f"got {tuple(U.shape)}.")
    if not torch.isfinite(lam).all() or not torch.isfinite(U).all():
        raise ValueError("eigenvalues and eigenvectors must be finite.")
    KU = op.matmat(U.to(device=op.device, dtype=op.dtype)).double().cpu()
    U64 = U.double().cpu()
    r = (KU - U64 * lam[None, :]).norm(dim=0) / lam.abs().clamp_min(1e-300)
    return r.numpy()


def _orth(A: torch.Tensor) -> torch.Tensor:
    Q, _ = torch.linalg.qr(A.double() if A.dtype != torch.float64 else A)
    return Q.to(A.dtype)


def _inputs_of(op) -> Optional[torch.Tensor]:
    """The operator's input points when it can evaluate the kernel at new points, else ``None``."""
    from .scale import BlockKernelOperator, MatrixFreeNTKOperator

    if isinstance(op, (BlockKernelOperator, MatrixFreeNTKOperator)) and op.x.is_floating_point():
        return op.x
    return None


def kmeans_landmarks(x: torch.Tensor, m: int, *, iters: int = 5, sample: Optional[int] = None,
                     seed: int = 0) -> torch.Tensor:
    r"""``m`` landmark points by k-means (Lloyd) on a sample of the inputs: the cluster centres.

    Landmarks spread evenly over the data approximate a smooth kernel far better than a
    uniform sample of the same size (Zhang, Tsang and Kwok 2008): on the benchmark NTK
    (2-D inputs, :math:`N = 20\,000`, top 10), one Rayleigh–Ritz step from 1000 k-means
    landmarks leaves relative residuals of :math:`4.6 \times 10^{-4}`, from 1000 uniform
    ones :math:`2.6 \times 10^{-3}` (``benchmarks/bench.py``).

    Parameters
    ----------
    x : (N, \*) tensor
        The inputs; flattened per point.
    m : int
        Number of landmarks (cluster centres).
    iters : int
        Lloyd iterations, started from ``m`` distinct sample points.
    sample : int, optional
        Points the clustering sees (uniform without replacement); default
        ``min(N, 20 m)``, so the cost is :math:`O(\text{iters} \cdot 20 m^2 d)`.
    seed : int

    Returns
    -------
    (m, \*) tensor of centres, in ``x``'s dtype and device.
    """
    n = x.shape[0]
    X = x.reshape(n, -1)
    g = np.random.default_rng(seed)
    s = min(n, 20 * m if sample is None else int(sample))
    S = X[torch.from_numpy(np.sort(g.choice(n, s, replace=False))).to(X.device)].double()
    centres = S[torch.from_numpy(g.choice(s, m, replace=False)).to(X.device)].clone()
    for _ in range(iters):
        assign = torch.empty(s, dtype=torch.long, device=X.device)
        for a in range(0, s, 4096):
            assign[a:a + 4096] = torch.cdist(S[a:a + 4096], centres).argmin(1)
        counts = torch.bincount(assign, minlength=m).to(S.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, S)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], centres)
    return centres.to(x.dtype).reshape((m,) + tuple(x.shape[1:]))


def _landmark_kernels(op, method: str, m: int, seed: int):
    """``C = K(X, L)`` (N, m) and ``W = K(L, L)`` (m, m) for ``m`` landmarks chosen by ``method``."""
    from .scale import BlockKernelOperator, MatrixFreeNTKOperator

    n = op.shape[0]
    if method == "kmeans":
        z = kmeans_landmarks(_inputs_of(op), m, seed=seed)
        if isinstance(op, MatrixFreeNTKOperator):
            from .ntk import ntk

            C = op.columns(z)
            W = ntk(op.model, z, method="auto" if op.mode == "structured" else "jacobian", progress=False,
                    outputs=op.outputs)
        else:
            from .scale import _call_kernel

            m_z = z.shape[0]
            C = torch.cat([_call_kernel(op.kernel_fn, op.x[a:b], z, (b - a, m_z))
                           for a, b in _row_blocks(n, op.block_size)]).to(op.dtype)
            W = _call_kernel(op.kernel_fn, z, z, (m_z, m_z)).to(op.dtype)
        return C, W.to(device=C.device, dtype=C.dtype)
    idx = torch.from_numpy(np.sort(np.random.default_rng(seed).choice(n, m, replace=False)))
    C = kernel_columns(op, idx)
    return C, C[idx.to(C.device)]


def _row_blocks(n: int, size: int):
    return [(a, min(n, a + size)) for a in range(0, n, max(1, size))]


def nystrom_eigenpairs(op, k: int, *, landmarks: Optional[int] = None, oversample: Optional[int] = None,
                       refine: int = 3, tol: float = 1e-3, seed: int = 0, landmark_method: str = "auto",
                       bar=None) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """The top ``k`` eigenpairs of ``op`` (see the module docstring); NumPy arrays and an info dict."""
    t_start = time.perf_counter()
    n = op.shape[0]
    from .distributed import DistributedNTKOperator

    if isinstance(op, DistributedNTKOperator):
        raise ValueError("method='nystrom' needs the whole kernel's columns on one process; a distributed "
                         "operator holds a slice of the points: use method='lanczos' or 'lobpcg'.")
    if landmarks is None:
        landmarks = min(n, max(1000, 20 * k))
    if isinstance(landmarks, bool) or not isinstance(landmarks, (int, np.integer)) or not (k < landmarks <= n):
        raise ValueError(f"landmarks must be an integer with k < landmarks <= N (k = {k}, N = {n}); "
                         f"got {landmarks!r}.")
    if oversample is None:
        oversample = 0
    if isinstance(oversample, bool) or not isinstance(oversample, (int, np.integer)) or oversample < 0:
        raise ValueError(f"oversample must be a non-negative integer; got {oversample!r}.")
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 0:
        raise ValueError(f"refine must be a non-negative integer (rounds of refinement); got {refine!r}.")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number; got {tol!r}.")
    if landmark_method not in LANDMARK_METHODS:
        raise ValueError(f"landmark_method must be one of {LANDMARK_METHODS}; got {landmark_method!r}.")
    has_inputs = _inputs_of(op) is not None
    if landmark_method == "auto":
        landmark_method = "kmeans" if has_inputs else "uniform"
    elif landmark_method == "kmeans" and not has_inputs:
        raise ValueError("landmark_method='kmeans' needs the kernel at new points (an operator from "
                         "ntk_operator or kernel_operator with its inputs); a held kernel or a bare "
                         "operator can only use 'uniform'.")
    m, q = int(landmarks), min(int(landmarks), k + int(oversample))
    start_products = op.n_products
    # 1. Nystrom subspace: one column block C = K(X, L), its landmark block W = K(L, L)
    C, W = _landmark_kernels(op, landmark_method, m, seed)
    t_columns = time.perf_counter() - t_start
    # C^T C: float32 GEMMs on blocks of rows (C's precision), summed in float64; a non-finite
    # entry of C shows up here, without an (N, m) temporary of a full check
    CtC = torch.zeros(m, m, dtype=torch.float64, device=C.device)
    blocks = _row_blocks(n, 4096)
    for a, b in blocks:
        CtC += (C[a:b].T @ C[a:b]).double()
    if not (torch.isfinite(CtC).all() and torch.isfinite(W).all()):
        raise ValueError("the kernel columns contain non-finite values.")
    W = W.double()
    s, Uw = torch.linalg.eigh((W + W.T) / 2)
    s, Uw = s.flip(0), Uw.flip(1)
    eps = torch.finfo(op.dtype).eps
    keep = s > s[0] * max(eps * m, 1e-12)
    if keep.sum() < q:
        q = int(keep.sum())
        if q < k:
            raise ValueError(f"the landmark block has numerical rank {q} < k = {k}: raise landmarks.")
    R = Uw[:, keep] / s[keep].sqrt()                      # K ~ (C R)(C R)^T
    G = R.T @ CtC @ R
    sig, V = torch.linalg.eigh((G + G.T) / 2)
    sig, V = sig.flip(0), V.flip(1)
    T = (R @ V[:, :q]).to(C.dtype)
    Q = torch.empty(n, q, dtype=C.dtype, device=C.device)
    for a, b in blocks:
        Q[a:b] = C[a:b] @ T
    del C, CtC
    Q = _orth(Q)
    nystrom_values = sig[:k].cpu().numpy()
    t_subspace = time.perf_counter() - t_start
    # 2. Rayleigh-Ritz with exact products; refinement adds the residual block (LOBPCG without momentum)
    theta, U, res, rounds = _rayleigh_ritz(op, Q, k, q, refine, tol, bar)
    info = {"landmarks": m, "landmark_method": landmark_method, "subspace": q, "column_blocks": 1,
            "refine_rounds": rounds, "exact_products": op.n_products - start_products, "residuals": res[:k],
            "nystrom_eigenvalues": nystrom_values, "converged": bool(res[:k].max() <= tol),
            "seconds_columns": t_columns, "seconds_subspace": t_subspace,
            "seconds_products": time.perf_counter() - t_start - t_subspace}
    return theta[:k].cpu().numpy(), U[:, :k].cpu().numpy(), info


def _rayleigh_ritz(op, Q: torch.Tensor, k: int, q: int, refine: int, tol: float, bar):
    """Rayleigh-Ritz on span(Q) with one exact block product, then refinement rounds (module docstring)."""
    S, KS = Q, op.matmat(Q)                               # exact block product (q products)
    if bar is not None:
        bar.update(q)
    rounds = 1
    while True:
        if not torch.isfinite(KS).all():
            raise ValueError("a product with the kernel returned non-finite values.")
        H = S.T.double() @ KS.double()
        theta, Vh = torch.linalg.eigh((H + H.T) / 2)
        theta, Vh = theta.flip(0)[:q], Vh.flip(1)[:, :q]
        U = S.double() @ Vh
        KU = KS.double() @ Vh
        Rres = KU - U * theta[None, :]
        res = (Rres.norm(dim=0) / theta.abs().clamp_min(1e-300)).cpu().numpy()
        if res[:k].max() <= tol or rounds > refine:
            break
        # new directions: the residuals, orthogonal to U (projected twice: classical
        # Gram-Schmidt needs two passes), without the numerically zero ones
        Wn = Rres - U @ (U.T @ Rres)
        norms = Wn.norm(dim=0)
        Wn = Wn[:, norms > 1e-12 * norms.max().clamp_min(1e-300)]
        Wn = Wn / Wn.norm(dim=0)
        Wn = _orth(Wn - U @ (U.T @ Wn)).to(op.dtype)
        KW = op.matmat(Wn)
        if bar is not None:
            bar.update(Wn.shape[1])
        rounds += 1
        S = torch.cat([U.to(op.dtype), Wn], dim=1)
        KS = torch.cat([KU.to(op.dtype), KW], dim=1)
    return theta, U, res, rounds
