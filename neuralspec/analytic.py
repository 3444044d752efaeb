r"""Infinite-width kernels in closed form.

* :func:`rff_kernel`: the limit of the seed's random-Fourier-feature Gram
  matrix, :math:`\Phi\Phi^\top / m \to k` as the number of features ``m``
  grows.
* :func:`mlp_kernels`: the infinite-width conjugate kernel (CK, the NNGP
  kernel of the last hidden layer) and neural tangent kernel (NTK) of a ReLU
  :class:`~neuralspec.MLP`, for Gaussian init in both of neural-tangents'
  parameterizations and for PyTorch's default uniform init, whose first layer
  is integrated exactly (its pre-activations are not Gaussian for 1-D and 2-D
  inputs).
* :func:`rffmlp_kernels`: the same two kernels for :class:`~neuralspec.RFFMLP`,
  starting from :func:`rff_kernel`.

They are composed layer by layer, as in neural-tangents' ``stax``, from

* :func:`arccos_kernel` (Cho and Saul's :math:`J_0`, :math:`J_1`) and
  :func:`relu_expectations` (the Gaussian moments of ReLU and its derivative),
* :func:`uniform_relu_expectations` (the same moments for a first layer with
  PyTorch's uniform init, by exact piecewise integration),
* :class:`LayerKernels` and :func:`input_kernels`, :func:`dense_kernels`,
  :func:`relu_kernels`, :func:`uniform_relu_layer_kernels` (one layer each).

**Conventions.** Every kernel is *per unit*: for a representation :math:`h(x) \in \mathbb
R^{n}`, ``nngp`` is the limit of :math:`h(x)^\top h(x') / n`, which is what
:func:`~neuralspec.kernels.conjugate_kernel` computes at finite width; for the input,
:math:`x^\top x' / d`. ``ntk`` is the limit of the empirical NTK of one
output unit, :math:`\sum_{p} \partial_p f(x)\, \partial_p f(x')`, the sum over
all trainable parameters (:func:`~neuralspec.ntk.ntk`).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple, Union

import numpy as np
import torch

from ._validation import ArrayLike, as_inputs, check_positive, check_positive_int
from .models import resolve_init

__all__ = [
    "rff_kernel",
    "arccos_kernel",
    "relu_expectations",
    "ReluExpectations",
    "uniform_relu_expectations",
    "LayerKernels",
    "input_kernels",
    "dense_kernels",
    "relu_kernels",
    "uniform_relu_layer_kernels",
    "Kernels",
    "mlp_kernels",
    "rffmlp_kernels",
    "TORCH_W_VAR",
]

#: Variance of PyTorch's default ``nn.Linear`` weights times the fan-in:
#: ``U(-1/sqrt(n), 1/sqrt(n))`` has variance ``1/(3n)``, i.e. ``sigma_w^2 = 1/3``.
TORCH_W_VAR = 1.0 / 3.0


# ----------------------------------------------------------------------------
# random Fourier features
# ----------------------------------------------------------------------------

def _sinc_prod(a: float, d: torch.Tensor) -> torch.Tensor:
    # prod_j sinc(a d_j), with sinc(t) = sin(pi t) / (pi t)
    return torch.sinc(a * d).prod(dim=-1)


def _check_nonnegative(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    return float(value)


def _inputs(x: ArrayLike, x2: Optional[ArrayLike]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Validated ``(x, x2)``; NumPy input becomes float64; ``x2`` matches ``x``'s dtype and device."""
    dtype = torch.float64 if not isinstance(x, torch.Tensor) else None
    xt = as_inputs(x, "x", dtype=dtype)
    if x2 is None:
        return xt, None
    x2t = as_inputs(x2, "x2", dtype=xt.dtype, device=xt.device)
    if x2t.shape[1] != xt.shape[1]:
        raise ValueError(
            f"x and x2 must have the same number of features; got {tuple(xt.shape)} and {tuple(x2t.shape)}."
        )
    return xt, x2t


def rff_kernel(
    x: ArrayLike,
    x2: Optional[ArrayLike] = None,
    scale: float = 1.0,
    *,
    phase_range: float = 1.0,
) -> torch.Tensor:
    r"""Closed-form infinite-width kernel of :class:`~neuralspec.RFF` / :class:`~neuralspec.LFF` features.

    For :math:`\phi(x) = \sin(\pi w^\top x + b)` with :math:`w_j \sim U(-a, a)`,
    :math:`a = \text{scale}/d`, and :math:`b \sim U(-c, c)`, the product-to-sum
    identity :math:`\sin u \sin v = \tfrac12[\cos(u - v) - \cos(u + v)]` and
    independence of the coordinates give

    .. math::

        k(x, x') = \mathbb E[\phi(x)\phi(x')] = \frac12\Big[
            \prod_j \operatorname{sinc}\big(a (x_j - x'_j)\big)
            - \frac{\sin 2c}{2c} \prod_j \operatorname{sinc}\big(a (x_j + x'_j)\big) \Big],

    with :math:`\operatorname{sinc}(t) = \sin(\pi t)/(\pi t)`. The seed's phase
    range ``c = 1`` is not a full period, so the second term survives and the
    kernel is not stationary; with ``c = pi`` it vanishes and
    :math:`k = \tfrac12 \operatorname{sinc}(a\,\delta)` depends on
    :math:`\delta = x - x'` alone. :math:`\Phi\Phi^\top / m \to k` as
    :math:`m \to \infty`, with error :math:`O(m^{-1/2})`.

    Parameters
    ----------
    x, x2 : (N, d) tensor or array
        Inputs; ``x2`` defaults to ``x``. NumPy input is computed in float64.
    scale : float
        The features' ``scale``.
    phase_range : float
        ``c``, the features' phase range (``1`` in the seed).

    Returns
    -------
    torch.Tensor
        ``(N, N2)``, in ``x``'s dtype and on its device.
    """
    xt, x2t = _inputs(x, x2)
    x2t = xt if x2t is None else x2t
    check_positive(scale, "scale")
    check_positive(phase_range, "phase_range")
    a = scale / xt.shape[1]
    diff = xt[:, None, :] - x2t[None, :, :]
    summ = xt[:, None, :] + x2t[None, :, :]
    c = float(phase_range)
    damp = math.sin(2 * c) / (2 * c)
    return 0.5 * (_sinc_prod(a, diff) - damp * _sinc_prod(a, summ))


def _rff_diag(x: torch.Tensor, scale: float, phase_range: float) -> torch.Tensor:
    """``rff_kernel(x, x)`` on the diagonal only, ``(N,)``."""
    a = scale / x.shape[1]
    c = float(phase_range)
    return 0.5 * (1.0 - math.sin(2 * c) / (2 * c) * _sinc_prod(a, 2 * x))


# ----------------------------------------------------------------------------
# Gaussian ReLU moments: the arc-cosine kernels
# ----------------------------------------------------------------------------

def arccos_kernel(theta: Union[torch.Tensor, np.ndarray, float], order: int = 1):
    r"""Cho and Saul's angular functions :math:`J_n(\theta)` of the arc-cosine kernels.

    .. math::

        J_0(\theta) = \pi - \theta, \qquad
        J_1(\theta) = \sin\theta + (\pi - \theta)\cos\theta,

    so that for :math:`w \sim \mathcal N(0, I)` and the angle :math:`\theta`
    between :math:`x` and :math:`x'`,

    .. math::

        \mathbb E\big[\Theta(w^\top x)\,\Theta(w^\top x')\big] = \frac{J_0(\theta)}{2\pi},\qquad
        \mathbb E\big[\mathrm{relu}(w^\top x)\,\mathrm{relu}(w^\top x')\big]
        = \frac{\|x\|\,\|x'\|}{2\pi} J_1(\theta),

    with :math:`\Theta` the step function (the derivative of ReLU).
    :math:`J_0(0) = J_1(0) = \pi`, :math:`J_0(\pi) = J_1(\pi) = 0`.

    Parameters
    ----------
    theta : tensor, array or float
        Angles in :math:`[0, \pi]`.
    order : {0, 1}
        ``0`` for the step function, ``1`` for ReLU.

    Returns
    -------
    Same type as ``theta``.
    """
    if order not in (0, 1):
        raise ValueError(f"order must be 0 (step) or 1 (ReLU); got {order!r}.")
    lib = torch if isinstance(theta, torch.Tensor) else np
    if order == 0:
        return math.pi - theta
    return lib.sin(theta) + (math.pi - theta) * lib.cos(theta)


class ReluExpectations(NamedTuple):
    r"""Second moments of ReLU and of its derivative, the step function :math:`\Theta`.

    ``relu`` is :math:`\mathbb E[\mathrm{relu}(u)\,\mathrm{relu}(v)]` and
    ``step`` is :math:`\mathbb E[\Theta(u)\,\Theta(v)]`.
    """

    relu: torch.Tensor
    step: torch.Tensor


def relu_expectations(cov: torch.Tensor, var1: torch.Tensor, var2: torch.Tensor) -> ReluExpectations:
    r"""ReLU moments of a centred Gaussian pair, elementwise.

    For :math:`(u, v) \sim \mathcal N\big(0, \begin{pmatrix} v_1 & c \\ c & v_2
    \end{pmatrix}\big)` and :math:`\cos\theta = c / \sqrt{v_1 v_2}`,

    .. math::

        \mathbb E[\mathrm{relu}(u)\,\mathrm{relu}(v)] = \frac{\sqrt{v_1 v_2}}{2\pi} J_1(\theta),
        \qquad
        \mathbb E[\Theta(u)\,\Theta(v)] = \frac{J_0(\theta)}{2\pi} = \frac{\pi - \theta}{2\pi}

    (:func:`arccos_kernel`). On the diagonal (:math:`c = v_1 = v_2 = v`) they
    are :math:`v/2` and :math:`1/2`. A zero variance gives ``relu = 0`` and
    ``step = 1/4`` (a zero pre-activation is treated as a fair coin: only a
    measure-zero set of inputs can hit it, and PyTorch's ``relu'(0) = 0``
    would not be a limit anyway).

    Parameters
    ----------
    cov : (N, N2) tensor
        :math:`c`, the covariance of the pre-activations at ``x`` and ``x'``.
    var1 : (N,) tensor
        :math:`v_1`, the variance at each ``x``.
    var2 : (N2,) tensor
        :math:`v_2`, the variance at each ``x'``.

    Returns
    -------
    ReluExpectations
        ``(relu, step)``, each ``(N, N2)``.
    """
    for t, n in [(cov, "cov"), (var1, "var1"), (var2, "var2")]:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{n} must be a torch.Tensor; got {type(t).__name__}.")
    if cov.dim() != 2 or var1.shape != (cov.shape[0],) or var2.shape != (cov.shape[1],):
        raise ValueError(
            f"expected cov (N, N2), var1 (N,), var2 (N2,); got {tuple(cov.shape)}, "
            f"{tuple(var1.shape)}, {tuple(var2.shape)}."
        )
    if bool((var1 < 0).any()) or bool((var2 < 0).any()):
        raise ValueError("var1 and var2 must be >= 0 (they are variances).")
    norm = torch.sqrt(var1[:, None] * var2[None, :])
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    cos = torch.where(norm > 0, cov / safe, torch.zeros_like(cov)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    relu = norm / (2 * math.pi) * arccos_kernel(theta, 1)
    step = arccos_kernel(theta, 0) / (2 * math.pi)
    return ReluExpectations(relu, step)


# ----------------------------------------------------------------------------
# PyTorch's uniform init: exact first-layer ReLU moments
# ----------------------------------------------------------------------------

_GL2 = np.polynomial.legendre.leggauss(2)
_GL3 = np.polynomial.legendre.leggauss(3)


def _moments_over_bias(p: np.ndarray, q: np.ndarray, s: float) -> Tuple[np.ndarray, np.ndarray]:
    r"""Average over :math:`b \sim U(-s, s)` of relu(p+b)relu(q+b) and step(p+b)step(q+b).

    Both are non-zero for :math:`b > L = \max(-p, -q, -s)`, where the
    integrand is :math:`b^2 + (p+q) b + pq`; so the first is
    :math:`[b^3/3 + (p+q) b^2/2 + pq\,b]_L^s / 2s` and the second :math:`(s-L)/2s`.
    Piecewise polynomial (cubic) in ``(p, q)``.
    """
    L = np.minimum(np.maximum(np.maximum(-p, -q), -s), s)
    c = p + q
    e = p * q

    def F(b):
        return b * (b * (b / 3.0 + c / 2.0) + e)

    return (F(s) - F(L)) / (2 * s), (s - L) / (2 * s)


def _safe_div(num: np.ndarray, den: np.ndarray, fill: float) -> np.ndarray:
    ok = np.abs(den) > 1e-300
    return np.where(ok, num / np.where(ok, den, 1.0), fill)


def _moments_over_line(p0, q0, a, c, s: float) -> Tuple[np.ndarray, np.ndarray]:
    r"""Average over :math:`b, t \sim U(-s, s)` of the ReLU moments of :math:`(p_0 + t a + b, q_0 + t c + b)`.

    The bias average (``_moments_over_bias``) is a cubic polynomial in
    ``t`` between the break points where :math:`p = q`, :math:`p = \pm s`
    or :math:`q = \pm s`; two-point Gauss-Legendre on each piece is exact.
    """
    p0, q0, a, c = np.broadcast_arrays(p0, q0, a, c)
    pts = [
        np.full(p0.shape, -s), np.full(p0.shape, s),
        _safe_div(q0 - p0, a - c, s),
        _safe_div(s - p0, a, s), _safe_div(-s - p0, a, s),
        _safe_div(s - q0, c, s), _safe_div(-s - q0, c, s),
    ]
    bp = np.sort(np.clip(np.stack(pts, axis=-1), -s, s), axis=-1)
    lo, hi = bp[..., :-1], bp[..., 1:]
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    nodes, weights = _GL2
    t = mid[..., None] + half[..., None] * nodes
    R, S = _moments_over_bias(p0[..., None, None] + t * a[..., None, None],
                              q0[..., None, None] + t * c[..., None, None], s)
    w = (half[..., None] * weights) / (2 * s)
    return (R * w).sum(axis=(-2, -1)), (S * w).sum(axis=(-2, -1))


def _uniform_pairs(xa: np.ndarray, xb: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Exact ReLU moments for paired rows ``xa[k]``, ``xb[k]`` (shape (P, d), d in {1, 2})."""
    d = xa.shape[1]
    s = 1.0 / math.sqrt(d)
    if d == 1:
        zero = np.zeros(len(xa))
        return _moments_over_line(zero, zero, xa[:, 0], xb[:, 0], s)
    # d == 2: the average over (b, w2) is exact for each w1 (above); as a function
    # of w1 it is a polynomial of degree <= 4 between the w1-coordinates where two
    # of the lines {p = q, p = +-s, q = +-s, w2 = +-s} of the (w1, w2) plane cross,
    # so three-point Gauss-Legendre on each of those pieces is exact too.
    x1, x2 = xa[:, 0], xa[:, 1]
    y1, y2 = xb[:, 0], xb[:, 1]
    one, zero = np.ones_like(x1), np.zeros_like(x1)
    lines = [  # (A1, A2, alpha): A1 w1 + A2 w2 = alpha
        (x1 - y1, x2 - y2, zero),
        (x1, x2, s * one), (x1, x2, -s * one),
        (y1, y2, s * one), (y1, y2, -s * one),
        (zero, one, s * one), (zero, one, -s * one),
    ]
    pts = [np.full(x1.shape, -s), np.full(x1.shape, s)]
    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            a1, a2, al = lines[i]
            c1, c2, ga = lines[j]
            det = a1 * c2 - a2 * c1
            pts.append(_safe_div(al * c2 - ga * a2, det, s))
    bp = np.sort(np.clip(np.stack(pts, axis=-1), -s, s), axis=-1)
    lo, hi = bp[:, :-1], bp[:, 1:]
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    nodes, weights = _GL3
    w1 = (mid[..., None] + half[..., None] * nodes).reshape(len(x1), -1)
    wts = ((half[..., None] * weights) / (2 * s)).reshape(len(x1), -1)
    R, S = _moments_over_line(w1 * x1[:, None], w1 * y1[:, None], x2[:, None], y2[:, None], s)
    return (R * wts).sum(-1), (S * wts).sum(-1)


def _uniform_moments(xa: np.ndarray, xb: np.ndarray, chunk: int = 4096) -> Tuple[np.ndarray, np.ndarray]:
    out_r, out_s = np.empty(len(xa)), np.empty(len(xa))
    for i in range(0, len(xa), chunk):
        out_r[i:i + chunk], out_s[i:i + chunk] = _uniform_pairs(xa[i:i + chunk], xb[i:i + chunk])
    return out_r, out_s


def _check_first_layer_dim(d: int) -> None:
    if d > 2:
        raise ValueError(
            f"the exact uniform first layer is implemented for 1-D and 2-D inputs; got d = {d}. "
            "For d >= 3 the pre-activations are closer to Gaussian: use first_layer='gaussian' "
            "(the CLT approximation)."
        )


def uniform_relu_expectations(x: ArrayLike, x2: Optional[ArrayLike] = None) -> ReluExpectations:
    r"""Exact ReLU moments of a first layer with PyTorch's default ``nn.Linear`` init.

    For :math:`z(x) = w^\top x + b` with :math:`w_j, b \sim U(-s, s)`
    independent, :math:`s = 1/\sqrt{d}` (``nn.Linear``'s default for fan-in
    ``d``),

    .. math::

        \mathrm{relu} = \mathbb E\big[\mathrm{relu}(z(x))\,\mathrm{relu}(z(x'))\big], \qquad
        \mathrm{step} = \mathbb E\big[\Theta(z(x))\,\Theta(z(x'))\big].

    For ``d = 1`` or ``2``, :math:`z` is a sum of two or three uniforms, not a
    Gaussian, so :func:`relu_expectations` with the matched covariance
    :math:`(x^\top x' + 1)/(3d)` is off by several percent. Here the
    expectation is an integral over the box :math:`[-s, s]^{d+1}`, computed
    exactly: over the bias in closed form, then over the weights by
    Gauss-Legendre on the pieces between the kinks of the integrand, on each of
    which it is a polynomial, so the rule is exact up to float64 round-off.

    Parameters
    ----------
    x, x2 : (N, d) and (N2, d) tensor or array, d in {1, 2}
        Inputs; ``x2`` defaults to ``x`` (then only the upper triangle is computed).

    Returns
    -------
    ReluExpectations
        ``(relu, step)``, each ``(N, N2)``, in ``x``'s dtype and on its device
        (NumPy input: float64).

    Notes
    -----
    Cost: about 800 (``d = 2``) or 12 (``d = 1``) evaluations of a cubic per
    pair of points; ``N = 400`` points in 2-D take about a second.
    """
    xt, x2t = _inputs(x, x2)
    _check_first_layer_dim(xt.shape[1])
    xa = xt.detach().cpu().double().numpy()
    if x2t is None:
        n = len(xa)
        iu, ju = np.triu_indices(n)
        r, st = _uniform_moments(xa[iu], xa[ju])
        R = np.empty((n, n))
        S = np.empty((n, n))
        R[iu, ju], R[ju, iu] = r, r
        S[iu, ju], S[ju, iu] = st, st
    else:
        xb = x2t.detach().cpu().double().numpy()
        ii, jj = np.meshgrid(np.arange(len(xa)), np.arange(len(xb)), indexing="ij")
        r, st = _uniform_moments(xa[ii.ravel()], xb[jj.ravel()])
        R, S = r.reshape(ii.shape), st.reshape(ii.shape)
    conv = dict(dtype=xt.dtype, device=xt.device)
    return ReluExpectations(torch.as_tensor(R).to(**conv), torch.as_tensor(S).to(**conv))


# ----------------------------------------------------------------------------
# layer by layer
# ----------------------------------------------------------------------------

class LayerKernels(NamedTuple):
    r"""Per-unit infinite-width kernels of one representation of a network.

    ``nngp`` is the limit of :math:`h(x)^\top h(x')/n` for a representation
    :math:`h \in \mathbb R^n` (after an activation: the CK of that layer; after
    a dense layer: the covariance of one pre-activation unit). ``var1`` and
    ``var2`` are its values :math:`\mathrm{nngp}(x, x)` and
    :math:`\mathrm{nngp}(x', x')`, needed by the next ReLU. ``ntk`` is the
    limit of :math:`\sum_p \partial_p h_i(x)\, \partial_p h_i(x')` for one unit
    ``i``, over the trainable parameters below it; ``None`` when it is not
    defined (the standard parameterization without a width).
    """

    nngp: torch.Tensor
    ntk: Optional[torch.Tensor]
    var1: torch.Tensor
    var2: torch.Tensor


def input_kernels(x: ArrayLike, x2: Optional[ArrayLike] = None) -> LayerKernels:
    r"""The kernels of the input layer: :math:`\mathrm{nngp} = x^\top x' / d`, ``ntk = 0``.

    Computed in float64 on the CPU (the other layer functions keep that).
    """
    xt, x2t = _inputs(x, x2)
    a = xt.detach().cpu().double()
    b = a if x2t is None else x2t.detach().cpu().double()
    d = a.shape[1]
    return LayerKernels(a @ b.T / d, torch.zeros(len(a), len(b), dtype=torch.float64),
                        (a * a).sum(1) / d, (b * b).sum(1) / d)


def dense_kernels(
    k: LayerKernels,
    *,
    w_std: float,
    b_std: float,
    parameterization: str = "ntk",
    fan_in: Optional[int] = None,
    bias: bool = True,
) -> LayerKernels:
    r"""Push the kernels through a dense layer :math:`z = W h + b` (neural-tangents' ``stax.Dense``).

    With :math:`\sigma_w` = ``w_std``, :math:`\sigma_b` = ``b_std`` and ``n``
    the fan-in (the width of ``h``):

    .. math::

        \Sigma' = \sigma_w^2\, \Sigma + \sigma_b^2,

    and for the NTK

    * ``"ntk"`` parameterization, :math:`z = \frac{\sigma_w}{\sqrt n} W h + \sigma_b b`,
      :math:`W, b \sim \mathcal N(0, 1)`:
      :math:`\Theta' = \Sigma' + \sigma_w^2\, \Theta`;
    * ``"standard"``, :math:`W \sim \mathcal N(0, \sigma_w^2/n)` (or any i.i.d.
      law of that variance, such as PyTorch's uniform), :math:`b` of
      variance :math:`\sigma_b^2`: the gradient with respect to :math:`W` is
      :math:`h` itself, so :math:`\Theta' = n\,\Sigma + 1 + \sigma_w^2\, \Theta`
      (the ``1`` from the bias), which grows linearly with the width ``n``.

    Without a bias, drop :math:`\sigma_b^2` and the ``1``.

    Parameters
    ----------
    k : LayerKernels
        Kernels of the layer's input ``h``.
    w_std, b_std : float
        :math:`\sigma_w`, :math:`\sigma_b` (PyTorch's default init:
        :math:`\sigma_w^2 = 1/3`, :data:`TORCH_W_VAR`, and
        :math:`\sigma_b^2 = 1/(3n) \to 0` for a hidden layer).
    parameterization : {"ntk", "standard"}
    fan_in : int, optional
        ``n``; required for the NTK in the standard parameterization
        (without it the returned ``ntk`` is ``None``).
    bias : bool
        Whether the layer has a bias.
    """
    w_std = check_positive(w_std, "w_std")
    b_std = _check_nonnegative(b_std, "b_std")
    if parameterization not in ("ntk", "standard"):
        raise ValueError(f"parameterization must be 'ntk' or 'standard'; got {parameterization!r}.")
    fan_in = check_positive_int(fan_in, "fan_in", allow_none=True)
    wv, bv = w_std ** 2, (b_std ** 2 if bias else 0.0)
    nngp = wv * k.nngp + bv
    if k.ntk is None:
        ntk = None
    elif parameterization == "ntk":
        ntk = nngp + wv * k.ntk
    elif fan_in is None:
        ntk = None
    else:
        ntk = fan_in * k.nngp + (1.0 if bias else 0.0) + wv * k.ntk
    return LayerKernels(nngp, ntk, wv * k.var1 + bv, wv * k.var2 + bv)


def relu_kernels(k: LayerKernels, *, symmetric: bool = False) -> LayerKernels:
    r"""Push Gaussian pre-activation kernels through ReLU (neural-tangents' ``stax.Relu``).

    .. math::

        \Sigma' = \mathbb E[\mathrm{relu}(u)\,\mathrm{relu}(v)], \qquad
        \Theta' = \Theta \cdot \mathbb E[\Theta(u)\,\Theta(v)],

    with :math:`(u, v)` Gaussian of covariance ``k``
    (:func:`relu_expectations`); the variances become :math:`v/2`.
    ``symmetric=True`` (a kernel of ``x`` with itself) sets the diagonal to
    its exact values, :math:`v/2` and :math:`\Theta/2`, free of the
    round-off of :math:`\arccos` near 1.
    """
    m = relu_expectations(k.nngp, k.var1, k.var2)
    nngp, step = m.relu, m.step
    if symmetric:
        idx = torch.arange(len(k.var1))
        nngp[idx, idx] = k.var1 / 2
        step[idx, idx] = 0.5
    ntk = None if k.ntk is None else k.ntk * step
    return LayerKernels(nngp, ntk, k.var1 / 2, k.var2 / 2)


def uniform_relu_layer_kernels(x: ArrayLike, x2: Optional[ArrayLike] = None) -> LayerKernels:
    r"""Kernels after the first ``nn.Linear`` (PyTorch's default init) and its ReLU, exactly.

    The layer is :math:`z = W x + b`, :math:`W_{ij}, b_i \sim U(-1/\sqrt d, 1/\sqrt d)`,
    in the standard parameterization, so

    .. math::

        \Sigma_1 = \mathbb E[\mathrm{relu}(z(x))\,\mathrm{relu}(z(x'))], \qquad
        \Theta_1 = (x^\top x' + 1)\, \mathbb E[\Theta(z(x))\,\Theta(z(x'))],

    with both expectations over the uniform weights computed exactly
    (:func:`uniform_relu_expectations`). Inputs must be 1-D or 2-D (``d <= 2``).
    """
    xt, x2t = _inputs(x, x2)
    m = uniform_relu_expectations(xt.detach().cpu().double(),
                                  None if x2t is None else x2t.detach().cpu().double())
    a = xt.detach().cpu().double()
    b = a if x2t is None else x2t.detach().cpu().double()
    var1 = _uniform_var(a)
    var2 = var1 if x2t is None else _uniform_var(b)
    return LayerKernels(m.relu, (a @ b.T + 1.0) * m.step, var1, var2)


def _uniform_var(a: torch.Tensor) -> torch.Tensor:
    """``E[relu(z(x))^2]`` for each row of ``a`` (uniform first layer)."""
    xa = a.numpy()
    r, _ = _uniform_moments(xa, xa)
    return torch.as_tensor(r)


# ----------------------------------------------------------------------------
# whole networks
# ----------------------------------------------------------------------------

class Kernels(NamedTuple):
    r"""The infinite-width conjugate kernel and neural tangent kernel of a network.

    ``ck``: the limit of :func:`~neuralspec.kernels.conjugate_kernel` (the Gram matrix
    of the representation entering the readout, over its width).
    ``ntk``: the limit of :func:`~neuralspec.ntk.ntk` (one output; in the standard
    parameterization at the given width, see :func:`mlp_kernels`), or ``None``.
    """

    ck: torch.Tensor
    ntk: Optional[torch.Tensor]


def _torch_hidden_bias(hidden_bias: str, width: Optional[int]) -> float:
    """The standard deviation of a hidden bias under PyTorch's init: 0 (limit) or sqrt(1/(3 width))."""
    if hidden_bias not in ("limit", "width"):
        raise ValueError(f"hidden_bias must be 'limit' or 'width'; got {hidden_bias!r}.")
    if hidden_bias == "limit":
        return 0.0
    if width is None:
        raise ValueError("hidden_bias='width' needs the width (width=n).")
    return math.sqrt(TORCH_W_VAR / width)


def _out(t: Optional[torch.Tensor], like: torch.Tensor) -> Optional[torch.Tensor]:
    return None if t is None else t.to(dtype=like.dtype, device=like.device)


def mlp_kernels(
    x: ArrayLike,
    x2: Optional[ArrayLike] = None,
    *,
    depth: int,
    parameterization: str = "standard",
    init: Optional[str] = None,
    w_std: Optional[float] = None,
    b_std: Optional[float] = None,
    width: Optional[int] = None,
    bias: bool = True,
    first_layer: str = "exact",
    hidden_bias: str = "limit",
) -> Kernels:
    r"""Infinite-width CK and NTK of a ReLU :class:`~neuralspec.MLP`.

    The arguments mirror ``MLP(d, width, depth, 1, "relu", parameterization,
    bias, init=init, w_std=w_std, b_std=b_std)``: ``depth`` hidden layers of
    width ``n`` and a linear readout. Layer by layer (:func:`dense_kernels`,
    :func:`relu_kernels`), with :math:`\Sigma` the covariance of one
    pre-activation unit, :math:`K_l` the CK of hidden layer ``l`` and
    :math:`\dot K_l = \mathbb E[\mathrm{relu}'(z)\,\mathrm{relu}'(z')]`:

    .. math::

        \Sigma_1 = \sigma_w^2\, \frac{x^\top x'}{d} + \sigma_b^2, \qquad
        K_l = \frac{\sqrt{\Sigma_l(x,x)\,\Sigma_l(x',x')}}{2\pi} J_1(\theta_l), \qquad
        \dot K_l = \frac{\pi - \theta_l}{2\pi}, \qquad
        \Sigma_{l+1} = \sigma_w^2 K_l + \sigma_b^2,

    with :math:`\cos\theta_l = \Sigma_l(x,x') / \sqrt{\Sigma_l(x,x)\Sigma_l(x',x')}`
    (Cho and Saul's arc-cosine kernel, :func:`arccos_kernel`). The CK is
    :math:`K_L`, ``L = depth``. The NTK of the output,
    :math:`\Theta = \Theta_{L+1}`, follows

    .. math::

        \text{ntk:}\quad \Theta_1 = \Sigma_1,\quad \Theta_{l+1} = \Sigma_{l+1} + \sigma_w^2 \dot K_l\, \Theta_l;
        \qquad
        \text{standard:}\quad \Theta_1 = x^\top x' + 1,\quad
        \Theta_{l+1} = n K_l + 1 + \sigma_w^2 \dot K_l\, \Theta_l .

    **Standard parameterization.** The weight gradients of the layers above
    the first are the hidden representations themselves, so the NTK grows
    linearly with the width ``n``: :math:`\Theta = n\,\Theta^{(1)} +
    \Theta^{(0)}`. This function returns that affine function evaluated at
    ``width`` (``ntk=None`` if ``width`` is not given): the leading term is
    the limit of :math:`\Theta_\text{empirical}/n`, the constant the exact
    contribution of the first layer and the biases; the relative error
    against a width-``n`` network is :math:`O(n^{-1/2})`. The CK does not
    depend on ``width``.

    **PyTorch's default init** (``init="torch"``, standard only):
    :math:`W, b \sim U(-1/\sqrt n, 1/\sqrt n)` per layer, i.e.
    :math:`\sigma_w^2 = 1/3` and a bias variance :math:`1/(3n)` that vanishes
    for hidden layers in the limit (the bias *gradient* still adds the ``1``
    in :math:`\Theta`). The first layer, with fan-in ``d``, is not Gaussian:
    ``first_layer="exact"`` computes :math:`K_1` and :math:`\dot K_1` exactly
    over the uniform weights (:func:`uniform_relu_layer_kernels`, ``d <= 2``);
    ``first_layer="gaussian"`` uses the arc-cosine formulas with the matched
    variance :math:`\Sigma_1 = (x^\top x' + 1)/(3d)`, which is what the CLT
    gives for large ``d`` and is off by several percent for ``d = 1, 2``.
    Deeper layers are Gaussian by the CLT either way. ``hidden_bias="width"``
    keeps the hidden biases' variance :math:`1/(3n)` at ``n = width`` instead
    of its limit 0: an :math:`O(1/n)` correction, but a large one at small
    widths, because each ReLU layer shrinks the kernel by
    :math:`\sigma_w^2/2 = 1/6` while the bias variance stays (at ``n = 256``
    with two hidden layers the finite network's CK is on average about 6%
    above the limit, and this removes most of it).

    Parameters
    ----------
    x, x2 : (N, d) and (N2, d) tensor or array
        Inputs; ``x2`` defaults to ``x``. NumPy input gives float64 output.
    depth : int
        Number of hidden layers (``MLP``'s ``latent_layers``), >= 1.
    parameterization : {"standard", "ntk"}
    init : {"torch", "gaussian"}, optional
        Default ``"torch"`` for standard, ``"gaussian"`` for ntk (as ``MLP``).
    w_std, b_std : float, optional
        Gaussian init only; default ``sqrt(2)`` and ``0.1`` (as ``MLP``).
    width : int, optional
        Hidden width ``n``, needed for the standard parameterization's NTK.
    bias : bool
        Whether the layers have biases.
    first_layer : {"exact", "gaussian"}
        ``init="torch"`` only: how the first layer is treated (see above).
    hidden_bias : {"limit", "width"}
        ``init="torch"`` only: the hidden biases' variance, 0 (the
        infinite-width limit, default) or ``1/(3 width)`` (needs ``width``).

    Returns
    -------
    Kernels
        ``(ck, ntk)``, each ``(N, N2)``, in ``x``'s dtype and on its device.

    Examples
    --------
    >>> x = np.linspace(-1, 1, 50)[:, None]
    >>> ck, ntk = mlp_kernels(x, depth=2, width=1024)          # MLP(1, 1024, 2, 1)
    >>> ck, ntk = mlp_kernels(x, depth=2, parameterization="ntk")
    """
    xt, x2t = _inputs(x, x2)
    depth = check_positive_int(depth, "depth")
    width = check_positive_int(width, "width", allow_none=True)
    init = resolve_init(parameterization, init)
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be True or False; got {bias!r}.")
    if first_layer not in ("exact", "gaussian"):
        raise ValueError(f"first_layer must be 'exact' or 'gaussian'; got {first_layer!r}.")
    sb_hidden = _torch_hidden_bias(hidden_bias, width)
    if init == "gaussian" and hidden_bias != "limit":
        raise ValueError("hidden_bias applies to init='torch'; Gaussian init sets the bias variance with b_std.")
    d = xt.shape[1]
    sym = x2t is None
    if init == "torch":
        if w_std is not None or b_std is not None:
            raise ValueError(
                "w_std and b_std set the Gaussian init; PyTorch's default init has fixed scales "
                "(sigma_w^2 = 1/3). Pass init='gaussian' to use them."
            )
        sw, sb0, sb = math.sqrt(TORCH_W_VAR), math.sqrt(TORCH_W_VAR / d), sb_hidden
        if first_layer == "exact":
            _check_first_layer_dim(d)
            if not bias:
                raise ValueError(
                    "the exact uniform first layer assumes a bias (nn.Linear's default); for "
                    "bias=False use first_layer='gaussian'."
                )
    else:
        sw = math.sqrt(2.0) if w_std is None else check_positive(w_std, "w_std")
        sb = 0.1 if b_std is None else _check_nonnegative(b_std, "b_std")
        sb0 = sb
    from .layers import _relu_rule
    from .limits import _Act, _Dense, _propagate

    standard = parameterization == "standard"
    relu = _Act(_relu_rule(), "relu", "act")

    def dense(first: bool, label: str) -> _Dense:
        fan = d if first else (width or 1)
        sb2 = ((sb0 if first else sb) ** 2) if bias else 0.0
        gw, gb = (float(fan), 1.0) if standard else (sw ** 2, sb2)
        return _Dense(sw ** 2, sb2, gw, gb, True, bias, bias, init, label, label)

    steps: list = []
    if init == "torch" and first_layer == "exact":
        steps.append(("exact", dense(True, "layer 1"), relu))
    else:
        steps += [dense(True, "layer 1"), relu]
    for l in range(depth - 1):
        steps += [dense(False, f"layer {l + 2}"), relu]
    steps.append(dense(False, "readout"))
    a = xt.detach().cpu().double()
    b = a if x2t is None else x2t.detach().cpu().double()
    ck, st, _ = _propagate(steps, a, b, x2t is None)
    ntk = None if (standard and width is None) else st.T
    return Kernels(_out(ck, xt), _out(ntk, xt))


def rffmlp_kernels(
    x: ArrayLike,
    x2: Optional[ArrayLike] = None,
    *,
    scale: float,
    latent_layers: int,
    phase_range: float = 1.0,
    width: Optional[int] = None,
    hidden_bias: str = "limit",
) -> Kernels:
    r"""Infinite-width CK and NTK of :class:`~neuralspec.RFFMLP` (frozen features, PyTorch init).

    ``RFFMLP(d, scale, n, latent_layers, 1)`` is frozen random Fourier
    features :math:`\phi(x) \in \mathbb R^n`, then ``latent_layers - 1``
    blocks ``Linear(n, n), ReLU`` and a linear readout, every ``Linear`` with
    PyTorch's default init (:math:`\sigma_w^2 = 1/3`, hidden bias variance
    :math:`1/(3n) \to 0`). The features' kernel :math:`K_0` is
    :func:`rff_kernel`; their pre-activations at the next layer are sums over
    ``n`` features, Gaussian by the CLT, so

    .. math::

        \Sigma_l = \tfrac13 K_{l-1}, \quad
        K_l = \frac{\sqrt{\Sigma_l(x,x)\Sigma_l(x',x')}}{2\pi} J_1(\theta_l), \quad
        \dot K_l = \frac{\pi - \theta_l}{2\pi}, \quad l = 1, \dots, L - 1,

    with ``L = latent_layers``; the CK is :math:`K_{L-1}` (:math:`K_0`, the
    RFF kernel, for ``latent_layers = 1``). The features are frozen and
    contribute nothing to the NTK; in the standard parameterization

    .. math::

        \Theta_1 = n K_0 + 1, \qquad \Theta_{l+1} = n K_l + 1 + \tfrac13 \dot K_l\, \Theta_l,
        \qquad \Theta = \Theta_L,

    which grows linearly with the width ``n``: it is returned at ``width``,
    and is ``None`` when ``width`` is not given (see :func:`mlp_kernels`).

    Parameters
    ----------
    x, x2 : (N, d) and (N2, d) tensor or array
        Inputs; ``x2`` defaults to ``x``.
    scale : float
        ``in_scale`` of the features.
    latent_layers : int
        Number of ``Linear`` layers after the features (>= 1).
    phase_range : float
        The features' phase range (``1`` in the seed).
    width : int, optional
        ``latent_features`` ``n``, needed for the NTK.
    hidden_bias : {"limit", "width"}
        The hidden biases' variance: 0 (the limit, default) or ``1/(3 width)``,
        the value at ``width`` (see :func:`mlp_kernels`).

    Returns
    -------
    Kernels
        ``(ck, ntk)``, each ``(N, N2)``, in ``x``'s dtype and on its device.
    """
    xt, x2t = _inputs(x, x2)
    scale = check_positive(scale, "scale")
    phase_range = check_positive(phase_range, "phase_range")
    latent_layers = check_positive_int(latent_layers, "latent_layers")
    width = check_positive_int(width, "width", allow_none=True)
    sb = _torch_hidden_bias(hidden_bias, width)
    from .layers import _relu_rule
    from .limits import _Act, _Dense, _Fourier, _propagate

    relu = _Act(_relu_rule(), "relu", "act")
    n = width or 1
    sw2 = TORCH_W_VAR
    steps: list = [_Fourier(scale, phase_range, False, False, "features", "RFF")]
    for l in range(latent_layers - 1):
        steps += [_Dense(sw2, sb ** 2, float(n), 1.0, True, True, True, "torch", "", f"layer {l + 1}"), relu]
    steps.append(_Dense(sw2, 0.0, float(n), 1.0, True, True, True, "torch", "", "readout"))
    a = xt.detach().cpu().double()
    b = a if x2t is None else x2t.detach().cpu().double()
    ck, st, _ = _propagate(steps, a, b, x2t is None)
    return Kernels(_out(ck, xt), _out(None if width is None else st.T, xt))
