r"""Feature kernels: the Gram matrix of a feature map and the conjugate kernel."""
from __future__ import annotations

from typing import Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from ._validation import ArrayLike, as_inputs, check_finite, check_independent_samples
from .memory import check_kernel_memory

__all__ = ["feature_kernel", "conjugate_kernel", "readout_features"]

FeatureMap = Union[nn.Module, Callable[[torch.Tensor], torch.Tensor]]


def _as_matrix(a: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(a) if isinstance(a, np.ndarray) else a
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or array; got {type(a).__name__}.")
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D feature matrix of shape (N, m); got shape {tuple(t.shape)}.")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); expected (N, m) with N, m >= 1.")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be floating point; got {t.dtype}.")
    check_finite(t, name)
    return t


def _features(fmap: FeatureMap, x: ArrayLike, name: str) -> torch.Tensor:
    """``fmap(x)`` flattened to ``(N, m)``: inputs ``(N, *)``, features ``(N, *)``."""
    model = fmap if isinstance(fmap, nn.Module) else None
    if model is not None:
        check_independent_samples(model, "the feature kernel")
    xt = as_inputs(x, name, model=model, flat=False)
    with torch.no_grad():
        phi = fmap(xt)
    if not isinstance(phi, torch.Tensor) or phi.dim() < 2 or phi.shape[0] != xt.shape[0]:
        shape = tuple(phi.shape) if isinstance(phi, torch.Tensor) else type(phi).__name__
        raise ValueError(
            f"the feature map must return a tensor of shape (N, m) (or (N, *), flattened) with "
            f"N = {xt.shape[0]} for {name} of shape {tuple(xt.shape)}; got {shape}."
        )
    phi = phi.reshape(phi.shape[0], -1)
    check_finite(phi, "the features", f" computed from {name}")
    return phi


def feature_kernel(
    model_or_features: Union[FeatureMap, ArrayLike],
    x: Optional[ArrayLike] = None,
    x2: Optional[ArrayLike] = None,
    *,
    normalize: bool = False,
) -> torch.Tensor:
    r"""The Gram matrix of a feature map, :math:`K = \Phi(x)\,\Phi(x')^\top`.

    .. math::

        K_{ij} = \sum_{k=1}^{m} \phi_k(x_i)\, \phi_k(x'_j)
        \quad\Big(\text{divided by } m \text{ when } \texttt{normalize=True}\Big).

    With ``normalize=False`` this is exactly the seed notes' ``zs @ zs.T``;
    ``normalize=True`` gives the kernel that converges as the number of
    features ``m`` grows (for :class:`~neuralspec.RFF`, to
    :func:`neuralspec.analytic.rff_kernel`).

    Parameters
    ----------
    model_or_features : nn.Module, callable, or (N, m) tensor/array
        A feature map applied to ``x`` (under ``torch.no_grad``), or the
        feature matrix itself. With a matrix, leave ``x`` out and pass the
        second feature matrix, if any, as ``x2``.
    x : (N, \*) tensor or array
        Inputs, first axis over the points (``(N, d)`` vectors, ``(N, C, H, W)``
        images, ...). A NumPy array is converted to the model's dtype and
        device; a floating-point tensor must already match them. Features of
        shape ``(N, *)`` are flattened to ``(N, m)``.
    x2 : (N2, \*) tensor or array, optional
        Second set of inputs for a cross kernel; default ``x``.
    normalize : bool
        Divide by the number of features ``m``.

    Returns
    -------
    torch.Tensor
        ``(N, N2)``, in the features' dtype and on their device.
    """
    if isinstance(model_or_features, (torch.Tensor, np.ndarray)):
        if x is not None:
            raise TypeError(
                "feature_kernel got a feature matrix and inputs x; pass either a model with "
                "x, or a feature matrix (and optionally a second one as x2)."
            )
        phi = _as_matrix(model_or_features, "features")
        phi2 = phi if x2 is None else _as_matrix(x2, "x2 (second feature matrix)")
    elif callable(model_or_features):
        if x is None:
            raise TypeError("feature_kernel(model, x): x, of shape (N, d), is required with a model.")
        phi = _features(model_or_features, x, "x")
        phi2 = phi if x2 is None else _features(model_or_features, x2, "x2")
    else:
        raise TypeError(
            "model_or_features must be an nn.Module, a callable feature map, or an (N, m) "
            f"feature matrix; got {type(model_or_features).__name__}."
        )
    if phi2.shape[1] != phi.shape[1] or phi2.dtype != phi.dtype:
        raise ValueError(
            f"the two feature matrices must have the same number of features and dtype; got "
            f"{tuple(phi.shape)} {phi.dtype} and {tuple(phi2.shape)} {phi2.dtype}."
        )
    check_kernel_memory(phi.shape[0], phi2.shape[0], phi.dtype, phi.device, "feature_kernel")
    K = phi @ phi2.T
    if normalize:
        K = K / phi.shape[1]
    return K


def readout_features(model: nn.Module) -> nn.Module:
    """The part of a model before its readout layer.

    For an ``nn.Sequential`` whose last module is a linear layer (``nn.Linear``
    or :class:`~neuralspec.NTKLinear`), that is ``model[:-1]``.
    """
    from .models import NTKLinear

    if isinstance(model, nn.Sequential) and len(model) >= 2 and isinstance(model[-1], (nn.Linear, NTKLinear)):
        return nn.Sequential(*list(model)[:-1])
    raise TypeError(
        f"cannot find the readout layer of {type(model).__name__}: conjugate_kernel needs an "
        "nn.Sequential whose last module is nn.Linear (or NTKLinear); for other models pass "
        "features=<callable returning the representation that enters the readout>."
    )


def conjugate_kernel(
    model: Optional[nn.Module],
    x: ArrayLike,
    x2: Optional[ArrayLike] = None,
    *,
    features: Optional[FeatureMap] = None,
) -> torch.Tensor:
    r"""The conjugate kernel (CK): the Gram matrix of the last hidden layer, over its width.

    For a network :math:`f(x) = W_{L+1} h_L(x) + b_{L+1}` with last hidden
    representation :math:`h_L(x) \in \mathbb R^{n}`,

    .. math::

        \mathrm{CK}(x, x') = \frac{1}{n}\, h_L(x)^\top h_L(x').

    This is the kernel of the random-features model obtained by training the
    readout alone. As ``n`` grows it converges to the NNGP kernel of the
    previous layers (:mod:`neuralspec.analytic`). It does not include the
    readout's own scale or bias.

    Parameters
    ----------
    model : nn.Sequential ending in a linear layer, or None
        ``h_L`` is ``model[:-1]``, flattened to ``(N, n)`` (for a CNN ending in
        ``Flatten -> Linear``: the flattened feature maps that enter the
        readout). For another architecture pass ``features`` (and
        ``model=None`` or the model, which is then ignored).
    x, x2 : (N, \*) tensor or array
        Inputs of any shape the model accepts, first axis over the samples;
        ``x2`` defaults to ``x``.
    features : callable, optional
        A feature map returning ``h_L(x)``, of shape ``(N, n)`` (or ``(N, *)``,
        flattened).

    Returns
    -------
    torch.Tensor
        The ``(N, N2)`` CK.
    """
    if features is not None:
        return feature_kernel(features, x, x2, normalize=True)
    fmap = readout_features(model)
    check_independent_samples(model, "the conjugate kernel")
    # the inputs must fit the whole model (its readout included), not only the layers before it
    xt = as_inputs(x, "x", model=model)
    x2t = None if x2 is None else as_inputs(x2, "x2", model=model)
    check_kernel_memory(xt.shape[0], None if x2t is None else x2t.shape[0], xt.dtype, xt.device, "conjugate_kernel")
    return feature_kernel(fmap, xt, x2t, normalize=True)
