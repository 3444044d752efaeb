r"""Infinite-width kernels in closed form.

* :func:`rff_kernel`: the limit of the seed's random-Fourier-feature Gram
  matrix, :math:`\Phi\Phi^\top / m \to k` as the number of features ``m``
  grows.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from ._validation import ArrayLike, as_inputs

__all__ = ["rff_kernel"]


def _sinc_prod(a: float, d: torch.Tensor) -> torch.Tensor:
    # prod_j sinc(a d_j), with sinc(t) = sin(pi t) / (pi t)
    return torch.sinc(a * d).prod(dim=-1)


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
    dtype = torch.float64 if not isinstance(x, torch.Tensor) else None
    xt = as_inputs(x, "x", dtype=dtype)
    x2t = xt if x2 is None else as_inputs(x2, "x2", dtype=xt.dtype, device=xt.device)
    if x2t.shape[1] != xt.shape[1]:
        raise ValueError(
            f"x and x2 must have the same number of features; got {tuple(xt.shape)} and {tuple(x2t.shape)}."
        )
    if not (math.isfinite(scale) and scale > 0) or not (math.isfinite(phase_range) and phase_range > 0):
        raise ValueError(f"scale and phase_range must be positive; got {scale!r}, {phase_range!r}.")
    a = scale / xt.shape[1]
    diff = xt[:, None, :] - x2t[None, :, :]
    summ = xt[:, None, :] + x2t[None, :, :]
    c = float(phase_range)
    damp = math.sin(2 * c) / (2 * c)
    return 0.5 * (_sinc_prod(a, diff) - damp * _sinc_prod(a, summ))
