r"""Top eigenpairs from a Nyström subspace, refined and certified with exact products.

For a PSD kernel :math:`K` of :math:`N` points and :math:`m` landmark points
:math:`L` (uniform without replacement), the Nyström approximation
(Williams and Seeger 2001) uses one column block :math:`C = K(X, L)` and its
landmark rows :math:`W = K(L, L)`:

.. math::

    K \approx C W^{+} C^\top = B B^\top, \qquad B = C\, U_W S_W^{-1/2},

with :math:`W = U_W S_W U_W^\top` (eigenvalues below round-off dropped). Its
top :math:`q = k + p` eigenvectors span the starting subspace :math:`Q`. Then
``refine`` rounds of subspace iteration with Rayleigh–Ritz (Halko, Martinsson
and Tropp 2011) use **exact** block products :math:`Y = K Q`:

.. math::

    H = Q^\top Y = V \Theta V^\top, \qquad U = Q V, \qquad K U = Y V, \qquad
    r_i = \frac{\|K u_i - \theta_i u_i\|}{\theta_i},

so every returned pair comes with its residual, computed from the same exact
product (a certificate, not an estimate); iteration stops when the top
:math:`k` residuals are below ``tol``, else :math:`Q \leftarrow
\operatorname{orth}(K U)`.

For the NTK, the column block costs :math:`N m \sum_l 2(\text{in}_l +
\text{out}_l)` flops with the structured formula
(:func:`~neuralspec.ntk.ntk`), far less per column than an exact product
(:math:`4P` flops per point), so the whole subspace costs about as much as a
few exact products.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np
import torch

__all__ = ["nystrom_eigenpairs", "eigenpair_residuals", "kernel_columns"]


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
        from .ntk import ntk

        method = "auto" if op.mode == "structured" else "jacobian"
        return ntk(op.model, op.x, op.x[idx.to(op.x.device)], method=method, progress=False)
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


def nystrom_eigenpairs(op, k: int, *, landmarks: Optional[int] = None, oversample: Optional[int] = None,
                       refine: int = 3, tol: float = 1e-3, seed: int = 0,
                       bar=None) -> Tuple[np.ndarray, np.ndarray, Dict]:
    """The top ``k`` eigenpairs of ``op`` (see the module docstring); NumPy arrays and an info dict."""
    n = op.shape[0]
    if landmarks is None:
        landmarks = min(n, max(1000, 20 * k))
    if isinstance(landmarks, bool) or not isinstance(landmarks, (int, np.integer)) or not (k < landmarks <= n):
        raise ValueError(f"landmarks must be an integer with k < landmarks <= N (k = {k}, N = {n}); "
                         f"got {landmarks!r}.")
    if oversample is None:
        oversample = max(5, k // 2)
    if isinstance(oversample, bool) or not isinstance(oversample, (int, np.integer)) or oversample < 0:
        raise ValueError(f"oversample must be a non-negative integer; got {oversample!r}.")
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or refine < 0:
        raise ValueError(f"refine must be a non-negative integer (rounds of subspace iteration); got {refine!r}.")
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive number; got {tol!r}.")
    m, q = int(landmarks), min(int(landmarks), k + int(oversample))
    rng = np.random.default_rng(seed)
    idx = torch.from_numpy(np.sort(rng.choice(n, m, replace=False)))
    start_products = op.n_products
    C = kernel_columns(op, idx)                          # (N, m): one column block
    if not torch.isfinite(C).all():
        raise ValueError("the kernel columns contain non-finite values.")
    W = C[idx.to(C.device)].double()
    W = (W + W.T) / 2
    s, Uw = torch.linalg.eigh(W)
    s, Uw = s.flip(0), Uw.flip(1)
    eps = torch.finfo(op.dtype).eps
    keep = s > s[0] * max(eps * m, 1e-12)
    if keep.sum() < q:
        q = int(keep.sum())
        if q < k:
            raise ValueError(f"the landmark block has numerical rank {q} < k = {k}: raise landmarks.")
    B = C @ (Uw[:, keep] / s[keep].sqrt()).to(C.dtype)   # (N, r), K ~ B B^T
    del C
    G = (B.T.double() @ B.double())
    sig, V = torch.linalg.eigh((G + G.T) / 2)
    sig, V = sig.flip(0), V.flip(1)
    Q = _orth(B @ V[:, :q].to(B.dtype))
    nystrom_values = sig[:k].cpu().numpy()
    del B
    rounds = 0
    while True:
        Y = op.matmat(Q)                                 # exact block product (q products)
        if bar is not None:
            bar.update(q)
        rounds += 1
        if not torch.isfinite(Y).all():
            raise ValueError("a product with the kernel returned non-finite values.")
        H = Q.T.double() @ Y.double()
        theta, Vh = torch.linalg.eigh((H + H.T) / 2)
        theta, Vh = theta.flip(0), Vh.flip(1)
        U = (Q.double() @ Vh)
        KU = (Y.double() @ Vh)
        res = ((KU - U * theta[None, :]).norm(dim=0) / theta.abs().clamp_min(1e-300)).cpu().numpy()
        if res[:k].max() <= tol or rounds > refine:
            break
        Q = _orth(KU.to(op.dtype))
    info = {"landmarks": m, "subspace": q, "column_blocks": 1, "refine_rounds": rounds,
            "exact_products": op.n_products - start_products, "residuals": res[:k],
            "nystrom_eigenvalues": nystrom_values, "converged": bool(res[:k].max() <= tol)}
    return theta[:k].cpu().numpy(), U[:, :k].cpu().numpy(), info
