r"""Full-batch gradient descent, and its prediction by the neural tangent kernel.

Normalization used throughout
-----------------------------
For training points :math:`X = (x_1, \dots, x_N)` and targets :math:`y`,
the loss is the mean squared error with a factor one half,

.. math::

    L(\theta) = \frac{1}{2N} \sum_{i=1}^{N} \big(f(x_i; \theta) - y_i\big)^2,

and gradient descent takes :math:`\theta_{t+1} = \theta_t - \eta\,\nabla L(\theta_t)`
(exactly what ``torch.optim.SGD(params, lr=eta)`` does on this loss with the
whole training set as one batch). Write :math:`r_t = f_t(X) - y` for the
residual on the training points and :math:`K = J J^\top` for the empirical
NTK on them (:func:`~neuralspec.ntk.ntk`, :math:`J = \partial f(X)/\partial\theta`).
Linearizing the network around its initialization (exact in the infinite-width
limit, the "lazy" regime) gives

.. math::

    r_{t+1} = \Big(I - \frac{\eta}{N} K\Big)\, r_t
    \quad\Longrightarrow\quad
    u_i^\top r_t = \Big(1 - \frac{\eta \lambda_i}{N}\Big)^{t}\, u_i^\top r_0,

for the eigenpairs :math:`K u_i = \lambda_i u_i`; the ``N`` comes from the
:math:`1/(2N)` in the loss. Gradient flow (:math:`\eta \to 0`, time
:math:`\eta t`) gives :math:`e^{-\eta\lambda_i t / N}`. The iteration is
stable iff :math:`|1 - \eta\lambda_i/N| < 1` for all :math:`i`, i.e.

.. math:: \eta < \eta_{\max} = \frac{2N}{\lambda_{\max}}.

Directions with large eigenvalues are learned first: that is the spectral
bias, read off the kernel's spectrum.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from ._validation import ArrayLike, as_inputs, as_real_array, model_dtype_device, trainable_parameters
from .utils import torch_threads

__all__ = [
    "TrainResult",
    "train",
    "mse_loss",
    "ntk_lambda_max",
    "stability_limit",
    "check_learning_rate",
    "project_residuals",
    "predict_residuals",
    "time_to_learn",
]


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

def _check_lr(lr) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.floating)) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"lr must be a positive finite number; got {lr!r}.")
    return float(lr)


def mse_loss(residual: torch.Tensor) -> torch.Tensor:
    r"""The course's loss from a residual vector, :math:`\frac{1}{2N}\sum_i r_i^2`."""
    return 0.5 * residual.pow(2).mean()


def _as_targets(y: ArrayLike, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``y`` as an ``(N,)`` tensor: accepts ``(N,)`` or ``(N, 1)``."""
    if isinstance(y, torch.Tensor):
        t = y.detach()
        if not t.is_floating_point():
            raise TypeError(f"y must be floating point; got {t.dtype}.")
        if t.dtype != dtype:
            raise TypeError(
                f"y has dtype {t.dtype} but the model computes in {dtype}; convert one of them "
                f"(y.to({dtype}) or model.to({t.dtype}))."
            )
        if t.device != device:
            raise ValueError(
                f"y is on {t.device} but the model is on {device}; move it with y.to(device)."
            )
    elif isinstance(y, (np.ndarray, list, tuple)):
        arr = np.asarray(y)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)
                                       or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"y must hold real numbers; got dtype {arr.dtype}.")
        t = torch.as_tensor(arr, dtype=dtype, device=device)
    else:
        raise TypeError(f"y must be a torch.Tensor or numpy.ndarray of shape (N,); got {type(y).__name__}.")
    if not (t.shape == (n,) or t.shape == (n, 1)):
        raise ValueError(
            f"y must have shape ({n},) or ({n}, 1), one scalar target per row of x (N = {n}); "
            f"got shape {tuple(t.shape)}. train fits a scalar-output network."
        )
    t = t.reshape(n)
    if not bool(torch.isfinite(t).all()):
        raise ValueError("y contains NaN or inf; expected finite targets.")
    return t


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    n = x.shape[0]
    if not isinstance(out, torch.Tensor) or not (out.shape == (n,) or out.shape == (n, 1)):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"train needs a scalar-output model: outputs of shape ({n},) or ({n}, 1) for x of "
            f"shape {tuple(x.shape)}; got {shape}."
        )
    return out.reshape(n)


#: Below this many floating-point operations per gradient step (about 6 N P
#: for N points and P parameters), ``threads="auto"`` runs on one CPU thread.
SINGLE_THREAD_FLOPS = 1e8


def _resolve_threads(threads, device: torch.device, n: int, n_params: int) -> Optional[int]:
    if threads is None:
        return None
    if threads == "auto":
        small = device.type == "cpu" and 6.0 * n * n_params < SINGLE_THREAD_FLOPS
        return 1 if small else None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be 'auto', None or a positive integer; got {threads!r}.")
    return threads


# ----------------------------------------------------------------------------
# stability
# ----------------------------------------------------------------------------

def stability_limit(eigvals: ArrayLike, n: int) -> float:
    r"""The largest stable learning rate of linearized gradient descent, :math:`2N / \lambda_{\max}`.

    With the loss :math:`\frac{1}{2N}\sum_i r_i^2`, a step multiplies the
    residual along eigenvector :math:`i` of the NTK by
    :math:`1 - \eta\lambda_i / N`; it shrinks for every :math:`i` iff
    :math:`\eta < 2N/\lambda_{\max}`.

    Parameters
    ----------
    eigvals : array or tensor, or float
        Eigenvalues of the empirical NTK on the ``N`` training points (any
        order; only the largest is used), or :math:`\lambda_{\max}` itself.
    n : int
        Number of training points ``N``.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n (the number of training points) must be a positive integer; got {n!r}.")
    ev = as_real_array(eigvals, "eigvals").reshape(-1)
    if ev.size == 0 or not np.all(np.isfinite(ev)):
        raise ValueError("eigvals must be a non-empty array of finite numbers.")
    lam = float(ev.max())
    if lam <= 0:
        raise ValueError(f"the largest eigenvalue must be > 0; got {lam:.3g}.")
    return 2.0 * int(n) / lam


def check_learning_rate(lr: float, eigvals: ArrayLike, n: int) -> float:
    """Raise ``ValueError`` if ``lr`` exceeds :func:`stability_limit`; return the limit."""
    lr = _check_lr(lr)
    limit = stability_limit(eigvals, n)
    if lr >= limit:
        lam = 2.0 * n / limit
        raise ValueError(
            f"lr = {lr:.4g} is above the stability limit of gradient descent, 2N / lambda_max = "
            f"2 * {n} / {lam:.4g} = {limit:.4g} (loss normalized as 1/(2N) sum (f - y)^2, "
            f"lambda_max the top eigenvalue of the empirical NTK): the residual along the top "
            f"eigenvector would be multiplied by |1 - lr * lambda_max / N| = {abs(1 - lr * lam / n):.3g} "
            f">= 1 per step and training would diverge. Use lr < {limit:.4g} (e.g. "
            f"{0.5 * limit:.4g}), or check_stability=False to watch it diverge."
        )
    return limit


def ntk_lambda_max(model: nn.Module, x: ArrayLike, *, tol: float = 1e-5, threads="auto") -> float:
    r"""Largest eigenvalue of the empirical NTK on ``x``, without forming the kernel.

    Lanczos (:func:`~neuralspec.scale.top_eigenpairs`) on the matrix-free operator
    :math:`v \mapsto J (J^\top v)` (:func:`~neuralspec.scale.ntk_operator` with
    ``matrix_free=True``): one reverse-mode and one forward-mode pass per
    product, about twenty products. Only trainable parameters count, as in
    :func:`~neuralspec.ntk.ntk`.

    Parameters
    ----------
    model : nn.Module
        Scalar output.
    x : (N, d) tensor or array
    tol : float
        Relative residual tolerance of the eigenpair.
    threads : "auto", None or int
        As in :func:`train`.
    """
    from .scale import ntk_operator, top_eigenpairs

    params = trainable_parameters(model)
    xt = as_inputs(x, "x", model=model)
    n_params = sum(p.numel() for _, p in params)
    with torch_threads(_resolve_threads(threads, xt.device, xt.shape[0], n_params)):
        with torch.no_grad():
            _forward(model, xt)  # a scalar-output model, or a clear error
        if xt.shape[0] == 1:
            from .ntk import ntk

            return float(ntk(model, xt)[0, 0])
        lam, _ = top_eigenpairs(ntk_operator(model, xt, matrix_free=True), 1, tol=tol)
    return float(lam[0])


# ----------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------

@dataclass
class TrainResult:
    r"""What :func:`train` records.

    Attributes
    ----------
    steps : numpy.ndarray
        ``(T,)`` the recorded steps ``t`` (``0`` = before the first update).
    residuals : numpy.ndarray
        ``(T, N)`` float64, :math:`r_t = f_t(X) - y` on the training points.
    losses : numpy.ndarray
        ``(T,)`` the loss :math:`\frac{1}{2N}\|r_t\|^2` at the recorded steps.
    loss_history : numpy.ndarray
        ``(steps + 1,)`` the loss at every step.
    targets : numpy.ndarray
        ``(N,)`` the targets ``y`` (so ``residuals + targets`` are the outputs).
    lr : float
    n : int
        Number of training points ``N``.
    lambda_max : float or None
        Top eigenvalue of the NTK at initialization when it was computed (or
        given), else ``None``.
    stability_limit : float or None
        ``2N / lambda_max``.
    kernel_steps : numpy.ndarray or None
        ``(S,)`` the steps at which the empirical NTK on the training inputs
        was recorded (``record_kernel_every``), else ``None``.
    kernels : numpy.ndarray or None
        ``(S, N, N)`` float64: ``kernels[s]`` is :func:`~neuralspec.ntk.ntk`
        of the model at step ``kernel_steps[s]`` (the parameters before that
        step's update), on the training inputs. ``None`` unless recorded in
        full (``kernel_rank=None``).
    kernel_eigvals, kernel_eigvecs : numpy.ndarray or None
        With ``kernel_rank=r``: ``(S, r)`` the top ``r`` eigenvalues
        (descending) and ``(S, N, r)`` their eigenvectors at each recorded
        step, instead of the kernels.
    """

    steps: np.ndarray
    residuals: np.ndarray
    losses: np.ndarray
    loss_history: np.ndarray
    targets: np.ndarray
    lr: float
    n: int
    lambda_max: Optional[float] = None
    stability_limit: Optional[float] = None
    kernel_steps: Optional[np.ndarray] = None
    kernels: Optional[np.ndarray] = None
    kernel_eigvals: Optional[np.ndarray] = None
    kernel_eigvecs: Optional[np.ndarray] = None

    @property
    def predictions(self) -> np.ndarray:
        """``(T, N)`` the network's outputs on the training points, ``residuals + targets``."""
        return self.residuals + self.targets[None, :]


def _record_steps(steps: int, record_every, record_at) -> np.ndarray:
    if record_every is not None and record_at is not None:
        raise ValueError("give record_every or record_at, not both.")
    if record_at is not None:
        at = np.asarray(record_at)
        if at.ndim != 1 or at.size == 0 or not np.issubdtype(at.dtype, np.integer):
            raise ValueError(f"record_at must be a non-empty 1-D sequence of integer steps; got {record_at!r}.")
        if at.min() < 0 or at.max() > steps:
            raise ValueError(
                f"record_at must lie in [0, steps] = [0, {steps}]; got values in [{at.min()}, {at.max()}]."
            )
        return np.unique(at)
    every = 1 if record_every is None else record_every
    if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"record_every must be a positive integer; got {record_every!r}.")
    return np.unique(np.concatenate([np.arange(0, steps + 1, int(every)), [steps]]))


class _KernelRecorder:
    """Records the empirical NTK on the training inputs at chosen steps (``record_kernel_every``)."""

    def __init__(self, model: nn.Module, xt: torch.Tensor, steps: int, every, rank) -> None:
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"record_kernel_every must be a positive integer or None; got {every!r}.")
        n = xt.shape[0]
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer))
                                 or not 1 <= rank <= n):
            raise ValueError(f"kernel_rank must be None or an integer in [1, N] = [1, {n}]; got {rank!r}.")
        self.model, self.xt, self.rank = model, xt, None if rank is None else int(rank)
        self.steps = _record_steps(steps, every, None).astype(np.int64)  # the same schedule as the residuals'
        self.pos = {int(s): i for i, s in enumerate(self.steps)}
        S = len(self.steps)
        if self.rank is None:
            from .memory import check_kernel_memory

            check_kernel_memory(n, S * n, torch.float64, "cpu", "train(record_kernel_every)", factor=1.0)
            self.kernels = np.empty((S, n, n))
        else:
            self.eigvals, self.eigvecs = np.empty((S, self.rank)), np.empty((S, n, self.rank))

    def __call__(self, t: int) -> None:
        i = self.pos.get(t)
        if i is None:
            return
        from .ntk import ntk

        if self.rank is None:
            self.kernels[i] = ntk(self.model, self.xt).detach().double().cpu().numpy()
            return
        if self.rank < self.xt.shape[0]:
            from .scale import ntk_operator, top_eigenpairs

            lam, U = top_eigenpairs(ntk_operator(self.model, self.xt, matrix_free=True), self.rank)
        else:
            from .spectrum import eigh

            lam, U = eigh(ntk(self.model, self.xt).detach())
        self.eigvals[i] = lam.detach().double().cpu().numpy()
        self.eigvecs[i] = U.detach().double().cpu().numpy()

    def fields(self) -> dict:
        if self.rank is None:
            return {"kernel_steps": self.steps, "kernels": self.kernels}
        return {"kernel_steps": self.steps, "kernel_eigvals": self.eigvals, "kernel_eigvecs": self.eigvecs}


def _run(model, xt, yt, params, lr, steps, record, check_stability, lambda_max, check_every, progress,
         kernel_hook=None):
    """The loop of :func:`train`; returns ``(lambda_max, limit, losses, residuals)``."""
    n = xt.shape[0]
    dtype = yt.dtype
    limit = None
    if lambda_max is not None:
        limit = stability_limit(lambda_max, n)
        lambda_max = float(lambda_max)
    if check_stability:
        if lambda_max is None:
            lambda_max = ntk_lambda_max(model, xt)
        limit = check_learning_rate(lr, lambda_max, n)

    opt = torch.optim.SGD(params, lr=lr)
    rec_pos = {int(s): i for i, s in enumerate(record)}
    residuals = torch.empty(len(record), n, dtype=dtype, device=xt.device)
    losses = torch.empty(steps + 1, dtype=dtype, device=xt.device)
    checked = 0

    def diverged(upto: int) -> None:
        bad = ~torch.isfinite(losses[checked:upto + 1])
        if bool(bad.any()):
            first = checked + int(torch.nonzero(bad)[0, 0])
            last_ok = float(losses[first - 1]) if first > 0 else float("nan")
            raise FloatingPointError(
                f"training diverged: the loss became {float(losses[first])} at step {first} of "
                f"{steps} (lr = {lr:.4g}; loss at step {first - 1}: {last_ok:.4g}). "
                + (f"The linearized stability limit 2N / lambda_max is {limit:.4g}; "
                   if limit is not None else "")
                + "lower the learning rate."
            )

    bar = None
    if progress:
        from .utils import progress_bar

        bar = progress_bar(steps, "train", "step", leave=True)
    try:
        for t in range(steps + 1):
            last = t == steps
            with torch.set_grad_enabled(not last):
                r = _forward(model, xt) - yt
                loss = mse_loss(r)
            losses[t] = loss.detach()
            if t in rec_pos:
                residuals[rec_pos[t]] = r.detach()
            if kernel_hook is not None:
                kernel_hook(t)
            if last:
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if bar is not None:
                bar.update(1)
            if (t + 1) % check_every == 0:
                diverged(t)
                checked = t + 1
        diverged(steps)
    finally:
        if bar is not None:
            bar.close()
        opt.zero_grad(set_to_none=True)

    return lambda_max, limit, losses, residuals


def train(
    model: nn.Module,
    x: ArrayLike,
    y: ArrayLike,
    *,
    lr: float,
    steps: int,
    record_every: Optional[int] = None,
    record_at: Optional[Sequence[int]] = None,
    device: Optional[Union[str, torch.device]] = None,
    check_stability: bool = True,
    lambda_max: Optional[float] = None,
    check_every: int = 50,
    progress: bool = False,
    threads: Union[str, int, None] = "auto",
    record_kernel_every: Optional[int] = None,
    kernel_rank: Optional[int] = None,
) -> TrainResult:
    r"""Full-batch gradient descent on the mean squared error; records the residuals.

    .. math::

        L(\theta) = \frac{1}{2N}\sum_{i=1}^N \big(f(x_i;\theta) - y_i\big)^2, \qquad
        \theta_{t+1} = \theta_t - \eta\, \nabla_\theta L(\theta_t),

    over the trainable parameters (``requires_grad=True``), with
    ``torch.optim.SGD(lr=eta)`` (no momentum, no weight decay). The model is
    trained in place.

    Before training, the learning rate is checked against the stability limit
    :math:`2N/\lambda_{\max}` of the empirical NTK at initialization (see
    :func:`stability_limit`; :math:`\lambda_{\max}` by :func:`ntk_lambda_max`
    unless given). During training the loss is checked for NaN/inf every
    ``check_every`` steps and at the end; a non-finite loss raises
    ``FloatingPointError`` naming the first step at which it appeared.

    Parameters
    ----------
    model : nn.Module
        A scalar-output network: ``(N, d) -> (N,)`` or ``(N, 1)``.
    x : (N, d) tensor or array
        Training inputs (NumPy is converted to the model's dtype and device).
    y : (N,) or (N, 1) tensor or array
        Targets.
    lr : float
        Learning rate :math:`\eta`.
    steps : int
        Number of gradient steps.
    record_every : int, optional
        Record the residual every this many steps (default 1), plus step
        ``0`` and the last step.
    record_at : sequence of int, optional
        Record exactly at these steps (in ``[0, steps]``) instead.
    device : str or torch.device, optional
        Move the model (in place) and the data there first; default: where
        the model is.
    check_stability : bool
        Raise ``ValueError`` if ``lr >= 2N / lambda_max``.
    lambda_max : float, optional
        The top NTK eigenvalue, if already known (skips its computation).
    check_every : int
        How often (in steps) to look for a non-finite loss; each look
        synchronizes with the GPU.
    progress : bool
        Show a tqdm progress bar.
    threads : "auto", None or int
        Intra-op CPU threads while training (torch's setting is restored
        afterwards). ``"auto"``: one thread on the CPU when a step costs under
        ``SINGLE_THREAD_FLOPS`` (about ``6 N P`` for ``P`` parameters),
        where more threads do not help and, on a busy machine, idle-spinning
        worker threads can slow each step down tenfold or more; otherwise
        torch's setting. ``None``: torch's setting. An int: that many.
    record_kernel_every : int, optional
        Also record the empirical NTK on the training inputs,
        :func:`~neuralspec.ntk.ntk` of the model, at steps ``0, k, 2k, ...``
        and at the last step (``TrainResult.kernel_steps``,
        ``TrainResult.kernels``): how far the kernel moves in training.
        Memory: ``8 N^2`` bytes per recorded step (float64), e.g. 100 records
        of ``N = 1000`` points take 0.8 GB; each record costs one NTK.
    kernel_rank : int, optional
        With ``record_kernel_every``, keep only the top ``kernel_rank``
        eigenpairs of each recorded kernel (``TrainResult.kernel_eigvals``,
        ``kernel_eigvecs``; ``8 N r`` bytes per record), computed matrix-free
        by Lanczos (:func:`~neuralspec.scale.top_eigenpairs` on
        :func:`~neuralspec.scale.ntk_operator`), so no ``N x N`` kernel is
        ever formed: for large ``N``.

    Returns
    -------
    TrainResult
        Steps, residuals ``(T, N)``, losses, as float64 NumPy arrays.

    Raises
    ------
    ValueError
        Bad shapes (``x`` not ``(N, d)``, ``y`` not ``(N,)``/``(N, 1)``, a
        non-scalar model output), a non-positive ``lr`` or ``steps < 0``, or
        ``lr`` above the stability limit.
    FloatingPointError
        The loss became NaN or inf (training diverged).
    """
    lr = _check_lr(lr)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0; got {steps!r}.")
    steps = int(steps)
    if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
        raise ValueError(f"check_every must be a positive integer; got {check_every!r}.")
    params = [p for _, p in trainable_parameters(model)]
    if device is not None:
        device = torch.device(device)
        model.to(device)
        if isinstance(x, torch.Tensor):
            x = x.to(device)
        if isinstance(y, torch.Tensor):
            y = y.to(device)
    xt = as_inputs(x, "x", model=model)
    n = xt.shape[0]
    dtype, mdevice = model_dtype_device(model)
    yt = _as_targets(y, n, dtype, xt.device)
    record = _record_steps(steps, record_every, record_at)

    kernel_hook = None
    if record_kernel_every is not None:
        kernel_hook = _KernelRecorder(model, xt, steps, record_kernel_every, kernel_rank)
    elif kernel_rank is not None:
        raise ValueError("kernel_rank needs record_kernel_every (the steps at which to record the kernel).")

    n_params = sum(p.numel() for p in params)
    with torch_threads(_resolve_threads(threads, xt.device, n, n_params)):
        lambda_max, limit, losses, residuals = _run(model, xt, yt, params, lr, steps, record,
                                                    check_stability, lambda_max, check_every, progress,
                                                    kernel_hook)

    res = residuals.detach().double().cpu().numpy()
    return TrainResult(
        steps=record.astype(np.int64),
        residuals=res,
        losses=0.5 * (res**2).mean(axis=1),
        loss_history=losses.detach().double().cpu().numpy(),
        targets=yt.detach().double().cpu().numpy(),
        lr=lr,
        n=n,
        lambda_max=lambda_max,
        stability_limit=limit,
        **({} if kernel_hook is None else kernel_hook.fields()),
    )


# ----------------------------------------------------------------------------
# NTK predictions
# ----------------------------------------------------------------------------

def project_residuals(residuals: ArrayLike, eigvecs: ArrayLike) -> np.ndarray:
    r"""Coordinates of residuals along the eigenvectors of a kernel, :math:`c_{t,i} = u_i^\top r_t`.

    Parameters
    ----------
    residuals : (T, N) or (N,) array or tensor
        E.g. ``TrainResult.residuals``, or the output of :func:`predict_residuals`.
    eigvecs : (N, k) array or tensor
        Orthonormal columns :math:`u_i` (e.g. from :func:`~neuralspec.spectrum.eigh`
        of the NTK, or :func:`~neuralspec.data.fourier_modes`).

    Returns
    -------
    numpy.ndarray
        ``(T, k)`` (or ``(k,)`` for a single residual), float64.
    """
    R = as_real_array(residuals, "residuals")
    U = as_real_array(eigvecs, "eigvecs")
    if U.ndim != 2:
        raise ValueError(f"eigvecs must be an (N, k) matrix with one eigenvector per column; got shape {U.shape}.")
    if R.ndim not in (1, 2) or R.shape[-1] != U.shape[0]:
        raise ValueError(
            f"residuals must have shape (T, N) or (N,) with N = {U.shape[0]} (the rows of eigvecs); "
            f"got shape {R.shape}."
        )
    if not (np.all(np.isfinite(R)) and np.all(np.isfinite(U))):
        raise ValueError("residuals and eigvecs must be finite.")
    return R @ U


def predict_residuals(
    eigvals: ArrayLike,
    eigvecs: ArrayLike,
    r0: ArrayLike,
    lr: float,
    steps: Union[int, Sequence[float], np.ndarray],
    *,
    continuous: bool = False,
) -> np.ndarray:
    r"""The residuals that NTK-linearized gradient descent predicts.

    With :math:`K = \sum_i \lambda_i u_i u_i^\top` the empirical NTK on the
    ``N`` training points and the loss :math:`\frac{1}{2N}\sum_j r_j^2`,

    .. math::

        r_t = \sum_i g_i(t)\, (u_i^\top r_0)\, u_i + r_0^{\perp}, \qquad
        g_i(t) = \Big(1 - \frac{\eta\lambda_i}{N}\Big)^{t}
        \;\text{(discrete)}, \quad
        g_i(t) = e^{-\eta\lambda_i t/N} \;\text{(continuous)},

    where :math:`r_0^\perp = r_0 - \sum_i (u_i^\top r_0) u_i` is the part of
    :math:`r_0` outside the given eigenvectors, held fixed (as if its
    eigenvalues were zero) when only the top ``k < N`` eigenpairs are passed.

    Parameters
    ----------
    eigvals : (k,) array or tensor
        Eigenvalues :math:`\lambda_i` of the NTK on the training points.
        Slightly negative ones (round-off) are treated as zero.
    eigvecs : (N, k) array or tensor
        Matching orthonormal eigenvectors.
    r0 : (N,) array or tensor
        Residual at initialization, ``TrainResult.residuals[0]``.
    lr : float
        Learning rate :math:`\eta`.
    steps : int or sequence
        An int ``T`` means steps ``0..T``; or the steps to predict at (e.g.
        ``TrainResult.steps``); non-integer times are allowed with
        ``continuous=True``.
    continuous : bool
        Gradient flow instead of discrete steps.

    Returns
    -------
    numpy.ndarray
        ``(T, N)`` predicted residuals, float64. Project with
        :func:`project_residuals` to compare with the measured ones.

    Raises
    ------
    ValueError
        ``lr`` above the stability limit :math:`2N/\lambda_{\max}` (discrete
        steps), mismatched shapes, or a clearly negative eigenvalue.
    """
    lr = _check_lr(lr)
    lam = as_real_array(eigvals, "eigvals").reshape(-1)
    U = as_real_array(eigvecs, "eigvecs")
    r = as_real_array(r0, "r0")
    if U.ndim != 2 or U.shape[1] != lam.size:
        raise ValueError(
            f"eigvecs must be (N, k) with k = len(eigvals) = {lam.size}; got shape {U.shape}."
        )
    n = U.shape[0]
    if r.shape != (n,):
        raise ValueError(f"r0 must have shape ({n},), one entry per training point; got {r.shape}.")
    if lam.size == 0 or not (np.all(np.isfinite(lam)) and np.all(np.isfinite(U)) and np.all(np.isfinite(r))):
        raise ValueError("eigvals, eigvecs and r0 must be non-empty and finite.")
    top = lam.max()
    if top <= 0:
        raise ValueError(f"the largest eigenvalue must be > 0; got {top:.3g}.")
    if lam.min() < -1e-3 * top:
        raise ValueError(
            f"eigvals has a clearly negative eigenvalue ({lam.min():.3g}, vs lambda_max = {top:.3g}); "
            "an NTK is positive semi-definite. Pass the eigenvalues of the kernel matrix K(X, X)."
        )
    lam = np.clip(lam, 0.0, None)
    if np.ndim(steps) == 0:
        if isinstance(steps, bool) or int(steps) != steps or steps < 0:
            raise ValueError(f"steps must be an integer >= 0 or a sequence of steps; got {steps!r}.")
        ts = np.arange(int(steps) + 1, dtype=np.float64)
    else:
        ts = as_real_array(steps, "steps").reshape(-1)
        if np.any(ts < 0) or not np.all(np.isfinite(ts)):
            raise ValueError("steps must be finite and >= 0.")
        if not continuous and np.any(ts != np.round(ts)):
            raise ValueError("discrete gradient descent takes integer steps; use continuous=True for real times.")
    if continuous:
        g = np.exp(-lr * lam[None, :] * ts[:, None] / n)
    else:
        check_learning_rate(lr, lam, n)
        g = (1.0 - lr * lam[None, :] / n) ** ts[:, None]
    c0 = U.T @ r
    perp = r - U @ c0
    return (g * c0[None, :]) @ U.T + perp[None, :]


def time_to_learn(
    components: ArrayLike,
    steps: ArrayLike,
    threshold: float = 0.1,
) -> np.ndarray:
    r"""First recorded step at which each component's relative residual falls below ``threshold``.

    .. math:: t_i^\ast = \min\{\, t : |c_{t,i}| < \text{threshold}\cdot|c_{0,i}| \,\}.

    Parameters
    ----------
    components : (T, k) array
        Residual components over time, e.g. :func:`project_residuals` onto
        NTK eigenvectors, or :func:`~neuralspec.data.frequency_amplitudes` of the
        residuals. Row 0 is the reference (step ``steps[0]``).
    steps : (T,) array
        The step of each row (``TrainResult.steps``).
    threshold : float
        In ``(0, 1)``.

    Returns
    -------
    numpy.ndarray
        ``(k,)`` float64: the step, ``inf`` if never reached within the
        run, ``nan`` where the initial component is zero (nothing to learn).
    """
    C = np.abs(as_real_array(components, "components"))
    s = as_real_array(steps, "steps").reshape(-1)
    if C.ndim != 2 or C.shape[0] != s.size:
        raise ValueError(
            f"components must be (T, k) with T = len(steps) = {s.size}; got shape {C.shape}."
        )
    if not (isinstance(threshold, (int, float)) and 0 < threshold < 1):
        raise ValueError(f"threshold must be in (0, 1); got {threshold!r}.")
    c0 = C[0]
    out = np.full(C.shape[1], np.inf)
    scale = np.abs(C).max() if C.size else 0.0
    for i in range(C.shape[1]):
        if c0[i] <= 1e-12 * max(scale, 1e-300):
            out[i] = np.nan
            continue
        below = np.nonzero(C[:, i] < threshold * c0[i])[0]
        if below.size:
            out[i] = s[below[0]]
    return out
