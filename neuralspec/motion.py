r"""When the kernel moves: kernel motion, kernel-target alignment, lazy vs rich training.

The frozen-kernel picture of the spectral-bias chapter holds when the
empirical NTK :math:`\Theta_t` stays at its initial value :math:`\Theta_0`
during training. This module measures how far it moves and in which direction.

* :func:`relative_kernel_change`, :math:`\|\Theta_t - \Theta_0\|_F / \|\Theta_0\|_F`:
  about :math:`1/n` for a width-:math:`n` network in the NTK parameterization
  with a smooth activation (Dyer & Gur-Ari 2020; Huang & Yau 2020), of order
  one in the maximal-update parameterization (Yang & Hu 2021;
  ``MLP(..., parameterization="mup")``).
* :func:`kernel_alignment`, the (centered) kernel-target alignment
  (Cristianini et al. 2002; Cortes, Mohri & Rostamizadeh 2012),

  .. math::

      A(K, y) = \frac{\langle K_c, L_c\rangle_F}{\|K_c\|_F\,\|L_c\|_F},\qquad
      L = y y^\top,\quad K_c = H K H,\quad L_c = H L H,\quad H = I - \tfrac1N \mathbf 1\mathbf 1^\top,

  which equals :math:`(y_c^\top K_c y_c) / (\|K_c\|_F \|y_c\|^2)` with
  :math:`y_c = H y`: how much of the kernel's "energy" lies along the target.
  It rises when the kernel learns features of the target.
* :class:`OutputScaled`, the model :math:`\alpha\,(f(x;\theta) - f(x;\theta_0))`
  of Chizat, Oyallon & Bach (2019): trained with learning rate
  :math:`\eta/\alpha^2` it follows the same linearized dynamics for every
  :math:`\alpha`, but its parameters move by :math:`O(1/\alpha)`: large
  :math:`\alpha` is lazy (the kernel freezes), small :math:`\alpha` is rich.
* :func:`train_to_loss`, gradient descent (:func:`~neuralspec.training.train`)
  until the loss falls below a target, with the kernel at the start and at the end.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from ._validation import ArrayLike, as_real_array, check_positive, check_positive_int

__all__ = ["kernel_alignment", "relative_kernel_change", "OutputScaled", "train_to_loss"]


def _as_kernel(K: ArrayLike, name: str = "K") -> np.ndarray:
    """A square, finite kernel matrix (or a stack of them) as float64 NumPy."""
    if not isinstance(K, (np.ndarray, torch.Tensor, list, tuple)):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray of shape (N, N); "
                        f"got {type(K).__name__}.")
    A = as_real_array(K, name)
    if A.ndim < 2 or A.shape[-1] != A.shape[-2] or A.shape[-1] == 0:
        raise ValueError(f"{name} must be a square matrix of shape (N, N) (or a stack (S, N, N)); "
                         f"got shape {A.shape}.")
    if not np.all(np.isfinite(A)):
        raise ValueError(f"{name} contains NaN or inf; expected a finite kernel matrix.")
    return A


def kernel_alignment(K: ArrayLike, y: ArrayLike, *, centered: bool = True) -> Union[float, np.ndarray]:
    r"""Kernel-target alignment of a kernel matrix with targets ``y``.

    .. math::

        A(K, y) = \frac{\langle K_c, L_c\rangle_F}{\|K_c\|_F\,\|L_c\|_F}
                = \frac{y_c^\top K_c\, y_c}{\|K_c\|_F\,\|y_c\|^2},
        \qquad L = y y^\top,\; K_c = H K H,\; y_c = H y,\;
        H = I - \tfrac1N \mathbf 1 \mathbf 1^\top

    (Cortes, Mohri & Rostamizadeh 2012). With ``centered=False``,
    :math:`H` is replaced by the identity (Cristianini et al. 2002). For a
    positive semi-definite :math:`K` the value lies in :math:`[0, 1]`; it is
    1 iff :math:`K_c \propto y_c y_c^\top` and 0 iff :math:`y_c` lies in the
    null space of :math:`K_c`. It does not change when :math:`K` is
    multiplied by a positive number. Centering removes the constant direction,
    which every kernel with a bias shares with any target of non-zero mean.

    Parameters
    ----------
    K : (N, N) or (S, N, N) tensor or array
        A kernel matrix on the points of ``y``, or a stack of them (e.g.
        ``TrainResult.kernels``).
    y : (N,) or (N, 1) tensor or array
        The targets.
    centered : bool
        Center kernel and targets (default), or not.

    Returns
    -------
    float, or (S,) numpy.ndarray for a stack

    Raises
    ------
    ValueError
        Non-square or non-finite ``K``, ``y`` of the wrong length, or an
        alignment that is undefined because the (centered) targets or kernel
        are zero, e.g. the centered alignment of a constant kernel.
    TypeError
        Non-numeric input.
    """
    A = _as_kernel(K)
    n = A.shape[-1]
    v = as_real_array(y, "y")
    if not (v.shape == (n,) or v.shape == (n, 1)):
        raise ValueError(f"y must have shape ({n},) or ({n}, 1), one target per row of K; got shape {v.shape}.")
    v = v.reshape(n)
    if not np.all(np.isfinite(v)):
        raise ValueError("y contains NaN or inf; expected finite targets.")
    if centered:
        v = v - v.mean()
        A = A - A.mean(axis=-1, keepdims=True)
        A = A - A.mean(axis=-2, keepdims=True)
    vv = float(v @ v)
    scale = float(np.abs(as_real_array(y, "y")).max()) if np.size(y) else 0.0
    if vv <= (1e-12 * scale) ** 2 * n or vv == 0.0:
        raise ValueError(
            "the alignment is undefined: the " + ("centered " if centered else "")
            + "targets are zero" + (" (a constant y has no centered part)" if centered else "") + "."
        )
    norms = np.sqrt((A * A).sum(axis=(-2, -1)))
    ref = np.sqrt((as_real_array(K, "K") ** 2).sum(axis=(-2, -1)))
    if np.any(norms <= 1e-12 * np.maximum(ref, 1e-300)):
        raise ValueError(
            "the alignment is undefined: the " + ("centered " if centered else "") + "kernel is zero"
            + (" (K is constant: centering removes all of it; use centered=False to compare "
               "constant kernels)" if centered else "") + "."
        )
    num = np.einsum("...ij,i,j->...", A, v, v)
    out = num / (norms * vv)
    return float(out) if out.ndim == 0 else out


def relative_kernel_change(K0: ArrayLike, K: ArrayLike) -> Union[float, np.ndarray]:
    r"""How far a kernel moved from a reference, :math:`\|K - K_0\|_F / \|K_0\|_F`.

    Parameters
    ----------
    K0 : (N, N) tensor or array
        The reference, e.g. the NTK at initialization (``TrainResult.kernels[0]``).
    K : (N, N) or (S, N, N) tensor or array
        One kernel, or a stack (e.g. ``TrainResult.kernels``: the change at
        every recorded step).

    Returns
    -------
    float, or (S,) numpy.ndarray for a stack
    """
    A0 = _as_kernel(K0, "K0")
    A = _as_kernel(K, "K")
    if A0.ndim != 2:
        raise ValueError(f"K0 must be one (N, N) matrix; got shape {A0.shape}.")
    if A.shape[-2:] != A0.shape:
        raise ValueError(f"K must have the shape of K0, {A0.shape} (or (S, *{A0.shape})); got {A.shape}.")
    ref = float(np.sqrt((A0 * A0).sum()))
    if ref == 0.0:
        raise ValueError("K0 is zero; the relative change is undefined.")
    out = np.sqrt(((A - A0) ** 2).sum(axis=(-2, -1))) / ref
    return float(out) if out.ndim == 0 else out


class OutputScaled(nn.Module):
    r"""The centered, scaled model of Chizat, Oyallon & Bach (2019): :math:`\alpha\,(f(x;\theta) - f(x;\theta_0))`.

    ``model`` is trained; a frozen copy of it at construction time
    (:math:`\theta_0`, ``requires_grad=False``, so it adds nothing to the NTK)
    is subtracted, so the output is exactly zero at initialization for every
    :math:`\alpha`. The NTK is :math:`\alpha^2` times the NTK of ``model``. Trained
    with learning rate :math:`\eta / \alpha^2` (equivalently, the loss scaled by
    :math:`1/\alpha^2`), the linearized dynamics
    :math:`r_{t+1} = (I - \eta\Theta_0/N) r_t` do not depend on :math:`\alpha`,
    while each parameter moves by :math:`O(1/\alpha)`: the kernel freezes as
    :math:`\alpha \to \infty` ("lazy training") and moves for small
    :math:`\alpha` ("rich" or feature-learning regime).

    Parameters
    ----------
    model : nn.Module
    alpha : float
        The output scale :math:`\alpha > 0`.

    Attributes
    ----------
    model : nn.Module
        The trained network :math:`f(\cdot;\theta)`.
    reference : nn.Module
        The frozen copy :math:`f(\cdot;\theta_0)`.
    alpha : float
    """

    def __init__(self, model: nn.Module, alpha: float) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
        self.alpha = check_positive(alpha, "alpha")
        self.model = model
        self.reference = copy.deepcopy(model).requires_grad_(False)
        in_features = getattr(model, "in_features", None)
        if isinstance(in_features, int):
            self.in_features = in_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.alpha * (self.model(x) - self.reference(x))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha:g}"


def train_to_loss(
    model: nn.Module,
    x: ArrayLike,
    y: ArrayLike,
    *,
    lr: float,
    target_loss: float,
    max_steps: int,
    check_every: int = 10,
    record_kernels: bool = True,
    **train_kwargs: Any,
):
    r"""Gradient descent until the loss is at most ``target_loss``; the kernel before and after.

    Runs :func:`~neuralspec.training.train` (same loss, :math:`\frac{1}{2N}\sum_i r_i^2`,
    same step :math:`\theta \leftarrow \theta - \eta\nabla L`) in chunks of
    ``check_every`` steps and stops at the first chunk boundary where the loss
    is :math:`\le` ``target_loss``, or after ``max_steps``. Trains ``model`` in place.

    Parameters
    ----------
    model, x, y, lr
        As in :func:`~neuralspec.training.train`.
    target_loss : float
        Stop once :math:`L(\theta_t) \le` ``target_loss``.
    max_steps : int
        Give up after this many steps (the result's ``steps[-1]`` says where
        it stopped, ``losses[-1]`` whether the target was reached).
    check_every : int
        Granularity of the stopping test, in steps.
    record_kernels : bool
        Record :func:`~neuralspec.ntk.ntk` on ``x`` at step 0 and at the
        stopping step (``kernel_steps``, ``kernels``).
    **train_kwargs
        Passed to :func:`~neuralspec.training.train` (e.g. ``lambda_max``,
        ``check_stability``, ``threads``); the stability check runs once, before the first chunk.

    Returns
    -------
    TrainResult
        Residuals at the chunk boundaries, the full loss history, and with
        ``record_kernels`` the two kernels.
    """
    from .ntk import ntk
    from .training import TrainResult, train

    check_positive(target_loss, "target_loss")
    max_steps = check_positive_int(max_steps, "max_steps")
    check_every = check_positive_int(check_every, "check_every")
    for k in ("steps", "record_every", "record_at", "record_kernel_every", "kernel_rank"):
        if k in train_kwargs:
            raise TypeError(f"train_to_loss sets {k} itself; do not pass it.")
    K0 = ntk(model, x).detach().double().cpu().numpy() if record_kernels else None
    kw = dict(train_kwargs)
    if K0 is not None and kw.get("lambda_max") is None and kw.get("check_stability", True):
        kw["lambda_max"] = float(np.linalg.eigvalsh(K0)[-1])  # skip train's Lanczos: we hold the kernel
    done = 0
    parts = []
    history = []
    while done < max_steps:
        chunk = min(check_every, max_steps - done)
        r = train(model, x, y, lr=lr, steps=chunk, record_every=chunk, **kw)
        # later chunks: the stability check already ran
        kw["check_stability"] = False
        kw.pop("lambda_max", None)
        if not parts:
            parts.append(r)
            history.append(r.loss_history)
        else:
            parts.append(r)
            history.append(r.loss_history[1:])
        done += chunk
        if r.loss_history[-1] <= target_loss:
            break
    first = parts[0]
    steps = np.concatenate([[0]] + [np.cumsum([p.steps[-1] for p in parts])]).astype(np.int64)
    residuals = np.concatenate([first.residuals[:1]] + [p.residuals[-1:] for p in parts])
    out = TrainResult(
        steps=steps,
        residuals=residuals,
        losses=0.5 * (residuals ** 2).mean(axis=1),
        loss_history=np.concatenate(history),
        targets=first.targets,
        lr=first.lr,
        n=first.n,
        lambda_max=first.lambda_max,
        stability_limit=first.stability_limit,
    )
    if record_kernels:
        K1 = ntk(model, x).detach().double().cpu().numpy()
        out.kernel_steps = np.array([0, done], dtype=np.int64)
        out.kernels = np.stack([K0, K1])
    return out
