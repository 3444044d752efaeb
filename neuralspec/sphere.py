r"""Spectra of dot-product kernels on the sphere :math:`S^{d-1}` (Funk–Hecke).

A kernel that depends on its inputs only through their inner product,
:math:`k(x, x') = \kappa(x^\top x')` with :math:`x, x'` on the unit sphere
:math:`S^{d-1} \subset \mathbb R^d`, commutes with every rotation. Its
eigenfunctions are the spherical harmonics, and the Funk–Hecke formula gives
the eigenvalue of the harmonics of degree :math:`k`,

.. math::

    \mu_k = \frac{|S^{d-2}|}{|S^{d-1}|} \int_{-1}^{1} \kappa(t)\, P_k^{(d)}(t)\,
    (1 - t^2)^{\frac{d-3}{2}}\, dt, \qquad
    \frac{|S^{d-2}|}{|S^{d-1}|} = \frac{\Gamma(d/2)}{\sqrt\pi\,\Gamma\big(\frac{d-1}{2}\big)},

with :math:`P_k^{(d)}` the Legendre (Gegenbauer) polynomial of degree
:math:`k` in dimension :math:`d`, normalized to :math:`P_k^{(d)}(1) = 1`, and
multiplicity :math:`N(d, k)`, the number of independent harmonics of degree
:math:`k` (:func:`sphere_multiplicity`). The :math:`\mu_k` are the eigenvalues
of the integral operator for the *uniform probability measure* on the
sphere: the Gram matrix :math:`K_{ij} = \kappa(x_i^\top x_j)` of :math:`N`
uniform random points, divided by :math:`N`, has about :math:`N(d, k)`
eigenvalues near each :math:`\mu_k`, and :math:`\kappa(1) = \sum_k N(d,
k)\,\mu_k` (Mercer).

* :func:`sphere_spectrum`: the :math:`\mu_k` of any vectorized
  :math:`\kappa`, by quadrature in the angle (see its notes).
* :func:`limit_kernel_of_cosine`: :math:`\kappa` for the infinite-width CK or
  NTK of an :class:`~neuralspec.MLP` with Gaussian init.
* :func:`sphere_data`, :func:`sphere_multiplicity`, :func:`sphere_harmonic_dimension`.

On the circle (:math:`d = 2`) the harmonics are :math:`\cos k\theta, \sin
k\theta`, :math:`P_k^{(2)}(\cos\theta) = \cos k\theta`, every degree
:math:`k \ge 1` has multiplicity 2 and :math:`\mu_k` is the eigenvalue of
frequency :math:`k` of :func:`~neuralspec.data.circle_spectrum` divided by
``N``.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Union

import numpy as np
import torch
from scipy.special import gammaln
from torch import nn

from ._validation import as_real_array, check_positive_int
from .limits import limit_kernels

__all__ = [
    "SphereSpectrum",
    "sphere_spectrum",
    "sphere_data",
    "sphere_multiplicity",
    "sphere_harmonic_dimension",
    "gegenbauer",
    "CosineKernel",
    "limit_kernel_of_cosine",
]


def _check_d(d) -> int:
    if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 2:
        raise ValueError(
            f"d must be an integer >= 2 (the sphere S^(d-1) lives in R^d; d = 2 is the circle); got {d!r}."
        )
    return int(d)


def _check_degree(k, name: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"{name} must be an integer >= 0; got {k!r}.")
    return int(k)


# ----------------------------------------------------------------------------
# multiplicities
# ----------------------------------------------------------------------------

def _multiplicity(d: int, k: int) -> int:
    if k == 0:
        return 1
    # (2k + d - 2)/k * C(k + d - 3, d - 2): an integer, computed exactly
    return (2 * k + d - 2) * math.comb(k + d - 3, d - 2) // k


def sphere_multiplicity(d: int, k):
    r"""The number :math:`N(d, k)` of linearly independent spherical harmonics of degree ``k`` on :math:`S^{d-1}`.

    .. math::

        N(d, 0) = 1, \qquad N(d, k) = \frac{2k + d - 2}{k} \binom{k + d - 3}{d - 2} \quad (k \ge 1),

    so :math:`N(2, k) = 2` (cosine and sine), :math:`N(3, k) = 2k + 1`, and
    :math:`N(d, k) \sim \frac{2}{(d-2)!} k^{d-2}` for large ``k``. Summed over
    :math:`k \le K` it is the dimension of the polynomials of degree at most
    ``K`` restricted to the sphere (:func:`sphere_harmonic_dimension`).

    Parameters
    ----------
    d : int
        Dimension of the ambient space, ``>= 2``.
    k : int or array of int
        Degree(s), ``>= 0``.

    Returns
    -------
    int, or numpy.ndarray of int64 for an array ``k``
    """
    d = _check_d(d)
    if np.ndim(k) == 0:
        return _multiplicity(d, _check_degree(k, "k"))
    ks = np.asarray(k)
    if not np.issubdtype(ks.dtype, np.integer) or np.any(ks < 0):
        raise ValueError(f"k must hold integers >= 0; got {ks.tolist()}.")
    return np.array([_multiplicity(d, int(v)) for v in ks.reshape(-1)], dtype=np.int64).reshape(ks.shape)


def sphere_harmonic_dimension(d: int, max_degree: int) -> int:
    r"""Dimension of the polynomials of degree :math:`\le K` in ``d`` variables, restricted to :math:`S^{d-1}`.

    .. math::

        \dim \mathcal P_K(S^{d-1}) = \binom{K + d - 1}{d - 1} + \binom{K + d - 2}{d - 1}
        = \sum_{k=0}^{K} N(d, k),

    (homogeneous polynomials of degree :math:`K` and :math:`K - 1` span
    everything, since :math:`\|x\|^2 = 1` on the sphere).
    """
    d = _check_d(d)
    K = _check_degree(max_degree, "max_degree")
    return math.comb(K + d - 1, d - 1) + (math.comb(K + d - 2, d - 1) if K >= 1 else 0)


# ----------------------------------------------------------------------------
# Gegenbauer polynomials
# ----------------------------------------------------------------------------

def gegenbauer(d: int, max_degree: int, t) -> np.ndarray:
    r"""The Legendre polynomials of dimension ``d``, :math:`P_0^{(d)}, \dots, P_K^{(d)}`, at ``t``.

    Normalized to :math:`P_k^{(d)}(1) = 1` (Gegenbauer polynomials
    :math:`C_k^{(d-2)/2}` divided by their value at 1) and computed with the
    three-term recurrence, stable on :math:`[-1, 1]`,

    .. math::

        P_0 = 1,\quad P_1 = t,\quad
        P_{k+1}(t) = \frac{(2k + d - 2)\, t\, P_k(t) - k\, P_{k-1}(t)}{k + d - 2}.

    ``d = 2`` gives the Chebyshev polynomials, :math:`P_k(\cos\theta) = \cos k\theta`;
    ``d = 3`` the classical Legendre polynomials.

    Returns
    -------
    numpy.ndarray
        ``(K + 1,) + t.shape``, float64.
    """
    d = _check_d(d)
    K = _check_degree(max_degree, "max_degree")
    tt = as_real_array(t, "t")
    out = np.empty((K + 1,) + tt.shape)
    out[0] = 1.0
    if K >= 1:
        out[1] = tt
    for k in range(1, K):
        out[k + 1] = ((2 * k + d - 2) * tt * out[k] - k * out[k - 1]) / (k + d - 2)
    return out


# ----------------------------------------------------------------------------
# Funk-Hecke
# ----------------------------------------------------------------------------

class SphereSpectrum(NamedTuple):
    r"""The spectrum of a dot-product kernel on :math:`S^{d-1}`, one eigenvalue per degree.

    ``degrees`` are :math:`0, \dots, K`; ``eigenvalues`` the Funk–Hecke
    :math:`\mu_k` (for the uniform probability measure: the limit of the Gram
    matrix's eigenvalues divided by the number of points); ``multiplicities``
    the :math:`N(d, k)`, how many eigenfunctions share each :math:`\mu_k`.
    """

    degrees: np.ndarray
    eigenvalues: np.ndarray
    multiplicities: np.ndarray

    def repeated(self, count: Optional[int] = None) -> np.ndarray:
        r"""Each :math:`\mu_k` repeated :math:`N(d, k)` times, sorted in descending order.

        This is what the sorted eigenvalues of :math:`K/N` approach for
        :math:`N` uniform points (up to the degrees above ``max_degree``).
        ``count`` keeps the first ``count`` values.
        """
        vals = np.repeat(self.eigenvalues, self.multiplicities.astype(np.int64))
        vals = np.sort(vals)[::-1]
        return vals if count is None else vals[:count]

    def repeated_degrees(self, count: Optional[int] = None) -> np.ndarray:
        """The degree of each entry of :meth:`repeated` (same order)."""
        degs = np.repeat(self.degrees, self.multiplicities.astype(np.int64))
        vals = np.repeat(self.eigenvalues, self.multiplicities.astype(np.int64))
        order = np.argsort(-vals, kind="stable")
        return degs[order] if count is None else degs[order][:count]

    def mercer_sum(self) -> float:
        r""":math:`\sum_{k \le K} N(d, k)\,\mu_k`, which tends to :math:`\kappa(1)` as ``K`` grows."""
        return float(np.sum(self.multiplicities.astype(np.float64) * self.eigenvalues))


def _default_nodes(max_degree: int) -> int:
    return 2 * max_degree + 200


def sphere_spectrum(
    kernel_of_cosine: Callable[[np.ndarray], np.ndarray],
    d: int,
    max_degree: int,
    *,
    n_nodes: Optional[int] = None,
) -> SphereSpectrum:
    r"""Funk–Hecke eigenvalues :math:`\mu_0, \dots, \mu_K` of a dot-product kernel on :math:`S^{d-1}`.

    .. math::

        \mu_k = c_d \int_{-1}^{1} \kappa(t)\, P_k^{(d)}(t)\,(1 - t^2)^{\frac{d-3}{2}}\, dt
              = c_d \int_{0}^{\pi} \kappa(\cos\theta)\, P_k^{(d)}(\cos\theta)\, \sin^{d-2}\theta\, d\theta,
        \qquad c_d = \frac{\Gamma(d/2)}{\sqrt\pi\,\Gamma\big(\frac{d-1}{2}\big)},

    normalized for the uniform probability measure on the sphere, so that
    :math:`\kappa(1) = \sum_k N(d, k)\,\mu_k` and, for example,
    :math:`\kappa(t) = e^t` has :math:`\mu_k = \Gamma(d/2)\, 2^{d/2-1}\, I_{k+d/2-1}(1)`
    (:math:`I_\nu` the modified Bessel function).

    Parameters
    ----------
    kernel_of_cosine : callable
        :math:`\kappa`: takes a float64 NumPy array of cosines
        :math:`t \in [-1, 1]` and returns an array (or tensor) of the same
        shape, e.g. ``np.exp`` or :func:`limit_kernel_of_cosine`.
    d : int
        Ambient dimension, ``>= 2`` (the sphere :math:`S^{d-1}`; ``d = 2`` is the circle).
    max_degree : int
        Largest degree ``K >= 0``.
    n_nodes : int, optional
        Number of quadrature nodes; default ``2 K + 200``.

    Returns
    -------
    SphereSpectrum
        ``(degrees, eigenvalues, multiplicities)``, arrays of length ``K + 1``.

    Notes
    -----
    **Quadrature.** The integral is taken in the angle, :math:`t = \cos\theta`,
    with ``n_nodes``-point Gauss–Legendre on :math:`[0, \pi]`. The
    arc-cosine kernels of ReLU networks are functions of :math:`\theta`,
    :math:`\sin\theta` and :math:`\cos\theta` (Cho and Saul's
    :math:`J_1(\theta) = \sin\theta + (\pi - \theta)\cos\theta`): analytic in
    :math:`\theta` on :math:`[0, \pi]` but not in :math:`t` at
    :math:`t = \pm 1`, where :math:`\sqrt{1 - t^2}` and :math:`\arccos t`
    have infinite slope. A rule in :math:`t` (Gauss–Jacobi with the weight
    :math:`(1 - t^2)^{(d-3)/2}`) would converge only algebraically for them;
    in :math:`\theta` the integrand is analytic, including the weight
    :math:`\sin^{d-2}\theta`, and the rule converges exponentially. The
    default ``2 K + 200`` nodes reach :math:`10^{-13}` relative accuracy on
    :math:`e^t` for ``K`` up to a few hundred; with :math:`\mu_k` far below
    :math:`10^{-15}\mu_0` the values are round-off. The polynomials
    :math:`P_k^{(d)}` come from their recurrence (:func:`gegenbauer`).
    """
    if isinstance(kernel_of_cosine, nn.Module):
        raise TypeError(
            "kernel_of_cosine must be a function of the cosine, not a network; for a network's "
            "infinite-width kernel pass ns.limit_kernel_of_cosine(model, 'ntk') (or 'ck')."
        )
    if not callable(kernel_of_cosine):
        raise TypeError(
            f"kernel_of_cosine must be a callable kappa(t) of the cosine t in [-1, 1]; got "
            f"{type(kernel_of_cosine).__name__}."
        )
    d = _check_d(d)
    K = _check_degree(max_degree, "max_degree")
    n = _default_nodes(K) if n_nodes is None else check_positive_int(n_nodes, "n_nodes")
    kd = getattr(kernel_of_cosine, "d", None)
    if isinstance(kd, int) and kd != d:
        raise ValueError(
            f"kernel_of_cosine is the kernel of a model with {kd} inputs (the sphere S^{kd - 1}); got "
            f"d = {d}. Pass d = {kd}."
        )
    x, w = np.polynomial.legendre.leggauss(n)
    theta = (x + 1.0) * (math.pi / 2)
    w = w * (math.pi / 2)
    t = np.cos(theta)
    vals = kernel_of_cosine(t)
    try:
        vals = as_real_array(vals, "kernel_of_cosine(t)")
    except TypeError as err:
        raise TypeError(f"kernel_of_cosine must return real numbers: {err}") from None
    if vals.shape != t.shape:
        if vals.size == 1:
            vals = np.full(t.shape, float(vals.reshape(-1)[0]))
        else:
            raise ValueError(
                f"kernel_of_cosine must return one value per cosine (shape {t.shape}); got shape "
                f"{vals.shape}. Write it as a vectorized function of a NumPy array."
            )
    bad = ~np.isfinite(vals)
    if bad.any():
        raise ValueError(
            f"kernel_of_cosine returned non-finite values ({int(np.isnan(vals).sum())} NaN, "
            f"{int(np.isinf(vals).sum())} inf) at {int(bad.sum())} of {n} cosines, e.g. at t = "
            f"{float(t[bad][0]):.6g}; expected finite numbers on [-1, 1]."
        )
    c_d = math.exp(gammaln(d / 2) - gammaln((d - 1) / 2)) / math.sqrt(math.pi)
    weight = c_d * w * np.sin(theta) ** (d - 2)
    P = gegenbauer(d, K, t)
    mu = P @ (vals * weight)
    degrees = np.arange(K + 1)
    return SphereSpectrum(degrees, mu, sphere_multiplicity(d, degrees))


# ----------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------

def sphere_data(n: int, d: int, seed: Optional[int] = None) -> np.ndarray:
    r"""``n`` points drawn uniformly from the unit sphere :math:`S^{d-1} \subset \mathbb R^d`.

    Each point is a standard Gaussian vector divided by its norm, which is
    uniform on the sphere because the Gaussian is rotation invariant.

    Parameters
    ----------
    n : int
        Number of points, ``>= 1``.
    d : int
        Ambient dimension, ``>= 2``.
    seed : int, optional
        Seed of NumPy's ``default_rng``.

    Returns
    -------
    numpy.ndarray
        ``(n, d)``, float64, unit rows.
    """
    n = check_positive_int(n, "n")
    d = _check_d(d)
    g = np.random.default_rng(seed).standard_normal((n, d))
    return g / np.linalg.norm(g, axis=1, keepdims=True)


# ----------------------------------------------------------------------------
# the kernel of a network's infinite-width limit, as a function of the cosine
# ----------------------------------------------------------------------------

class CosineKernel:
    r"""A dot-product kernel on :math:`S^{d-1}` as a vectorized function of the cosine, :math:`\kappa(t)`.

    Calling it on an array of cosines returns a float64 array of the same
    shape. ``d`` is the input dimension of the network it came from
    (:func:`sphere_spectrum` checks it), ``which`` the kernel (``"ntk"`` or
    ``"ck"``), ``description`` a few words for plots.
    """

    def __init__(self, fn: Callable[[np.ndarray], np.ndarray], d: int, which: str, description: str) -> None:
        self._fn = fn
        self.d = d
        self.which = which
        self.description = description

    def __call__(self, t) -> np.ndarray:
        tt = as_real_array(t, "t")
        if not np.all(np.isfinite(tt)):
            raise ValueError("t must be finite cosines in [-1, 1].")
        if tt.size and (tt.max() > 1 + 1e-12 or tt.min() < -1 - 1e-12):
            raise ValueError(
                f"t must be cosines in [-1, 1]; got values in [{tt.min():.6g}, {tt.max():.6g}]."
            )
        flat = np.clip(tt.reshape(-1), -1.0, 1.0)
        if flat.size == 0:
            return np.zeros(tt.shape)
        return np.asarray(self._fn(flat), dtype=np.float64).reshape(tt.shape)

    def __repr__(self) -> str:
        return f"CosineKernel({self.description}, d={self.d})"


def _unit_pairs(t: np.ndarray, d: int):
    """``x = e_1`` (1, d) and ``x' = t e_1 + sqrt(1 - t^2) e_2`` (len(t), d), float64 tensors."""
    x = torch.zeros(1, d, dtype=torch.float64)
    x[0, 0] = 1.0
    x2 = torch.zeros(len(t), d, dtype=torch.float64)
    x2[:, 0] = torch.as_tensor(t)
    x2[:, 1] = torch.as_tensor(np.sqrt(np.clip(1.0 - t * t, 0.0, None)))
    return x, x2


def _has_bias(model: nn.Module) -> bool:
    layers = [m for m in model.modules() if hasattr(m, "weight") and hasattr(m, "bias")
              and isinstance(getattr(m, "weight", None), torch.Tensor)]
    return bool(layers) and layers[0].bias is not None


def limit_kernel_of_cosine(model: nn.Module, which: str = "ntk") -> CosineKernel:
    r"""The infinite-width CK or NTK of an :class:`~neuralspec.MLP` as a function of the cosine.

    For an MLP with Gaussian init (``parameterization="ntk"``, or
    ``init="gaussian"``), every layer is rotation invariant, so on the unit
    sphere its limit kernels depend on the inputs only through
    :math:`t = x^\top x'`: :math:`k(x, x') = \kappa(t)`. This returns
    :math:`\kappa`, evaluated on the unit-norm pairs

    .. math::

        x = e_1, \qquad x' = t\, e_1 + \sqrt{1 - t^2}\, e_2,

    with the layer-by-layer infinite-width limit of ``ns.limit_kernels``
    (any activation it has a rule for: closed forms for ReLU, erf, sin, ...,
    quadrature for GELU, tanh, ...). The input kernel is :math:`x^\top x'/d` (neural-tangents'
    convention), so the first pre-activation covariance is
    :math:`\sigma_w^2 t / d + \sigma_b^2`. Pass the result to
    :func:`sphere_spectrum`.

    PyTorch's default init (``init="torch"``) is refused: its first layer's
    weights are uniform on a cube, which is not rotation invariant, so its
    kernel is not a function of :math:`t` alone.

    Parameters
    ----------
    model : MLP
        ``ns.MLP(d, n, L, 1, "erf", parameterization="ntk")`` or
        ``ns.MLP(..., init="gaussian", w_std=..., b_std=...)``; ``d >= 2``.
        In the standard parameterization the NTK grows with the width and is
        taken at the model's width (as ``ns.limit_kernels`` does).
    which : {"ntk", "ck"}
        The neural tangent kernel of the output, or the conjugate kernel of
        the last hidden layer.

    Returns
    -------
    CosineKernel
        A vectorized :math:`\kappa(t)`, float64.
    """
    from .models import MLP

    if which not in ("ntk", "ck"):
        raise ValueError(f"which must be 'ntk' or 'ck'; got {which!r}.")
    if not isinstance(model, MLP):
        raise TypeError(
            f"model must be a neuralspec MLP (a stack of dense layers); got {type(model).__name__}."
        )
    d = model.in_features
    if d < 2:
        raise ValueError(
            f"the model has {d} input(s); a sphere S^(d-1) with a cosine between points needs d >= 2."
        )
    if model.init != "gaussian":
        raise ValueError(
            "PyTorch's default init draws the first layer's weights uniformly from a cube, which is "
            "not rotation invariant, so the kernel is not a function of the cosine. Build the model "
            "with init='gaussian' (e.g. w_std=2**0.5) or parameterization='ntk'."
        )
    act = model.activation_name.lower() if isinstance(model.activation_name, str) else model.activation_name
    bias = _has_bias(model)

    def fn(t: np.ndarray) -> np.ndarray:
        x, x2 = _unit_pairs(t, d)
        return getattr(limit_kernels(model, x, x2), which)[0].detach().cpu().double().numpy()

    desc = (f"{which.upper()} of {model.latent_layers} x {act}, sigma_w^2 = {model.w_std ** 2:.3g}, "
            + (f"sigma_b = {model.b_std:.3g}" if bias else "no bias") + f", d = {d}")
    return CosineKernel(fn, d, which, desc)
