"""Input checks shared by every public function.

Every public entry point turns bad input into a ``ValueError`` or ``TypeError``
that says what was wrong and what was expected, instead of broadcasting
silently or returning a wrong answer.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = [
    "ArrayLike",
    "as_inputs",
    "as_real_array",
    "check_positive",
    "check_positive_int",
    "check_finite",
    "check_square_symmetric",
    "infer_in_features",
    "model_dtype_device",
    "trainable_parameters",
]


def model_dtype_device(model: nn.Module) -> Tuple[torch.dtype, torch.device]:
    """The dtype and device of a model's first floating parameter or buffer."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return torch.get_default_dtype(), torch.device("cpu")


def infer_in_features(model: nn.Module) -> Optional[int]:
    """The input feature size a model expects, when it can be read off the model.

    Looks for an ``in_features`` attribute on the model itself, then on its
    first submodule (in registration order) that has one.
    """
    n = getattr(model, "in_features", None)
    if isinstance(n, int):
        return n
    for m in model.modules():
        n = getattr(m, "in_features", None)
        if isinstance(n, int):
            return n
    return None


def trainable_parameters(model: nn.Module):
    """``(name, parameter)`` pairs with ``requires_grad`` set; a clear error if none."""
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module; got {type(model).__name__}."
        )
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ValueError(
            f"{type(model).__name__} has no trainable parameters (none has "
            "requires_grad=True), so its neural tangent kernel is identically "
            "zero. Unfreeze a layer with layer.requires_grad_(True)."
        )
    return params


def as_real_array(a, name: str) -> np.ndarray:
    """A tensor, array or list of real numbers as a float64 NumPy array (a clear error otherwise)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating)
                                   or np.issubdtype(arr.dtype, np.integer)):
        raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}.")
    return arr.astype(np.float64)


def check_positive_int(value, name: str, allow_none: bool = False) -> Optional[int]:
    """``value`` as an ``int`` if it is a positive integer (or ``None`` when allowed); else ``ValueError``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}; "
                         f"got {value!r}.")
    return int(value)


def check_positive(value, name: str) -> float:
    """``value`` as a ``float`` if it is a positive finite number; else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number; got {value!r}.")
    return float(value)


_FINITE_CHUNK = 2**22  # elements checked at a time: bounded temporaries for large kernels


def check_finite(t: torch.Tensor, name: str, what: str = "") -> None:
    """Raise ``ValueError`` if ``t`` holds NaN or inf.

    Large tensors are checked in row blocks of about ``2**22`` elements, so the
    check of an N x N kernel allocates a few MB, not several copies of it.
    """
    if not (t.is_floating_point() or t.is_complex()):
        return
    if t.dim() == 0 or t.numel() <= _FINITE_CHUNK:
        blocks = [t]
    else:
        rows = max(1, _FINITE_CHUNK // max(1, t[0].numel()))
        blocks = torch.split(t, rows, dim=0)
    if all(bool(torch.isfinite(b).all()) for b in blocks):
        return
    n_nan = sum(int(torch.isnan(b).sum()) for b in blocks)
    n_inf = sum(int(torch.isinf(b).sum()) for b in blocks)
    raise ValueError(
        f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf)"
        f"{what}; expected only finite numbers."
    )


def as_inputs(
    x: ArrayLike,
    name: str = "x",
    *,
    model: Optional[nn.Module] = None,
    in_features: Optional[int] = None,
    dtype: Optional[torch.dtype] = None,
    device: Optional[Union[str, torch.device]] = None,
) -> torch.Tensor:
    """Validate an input batch and return it as a tensor of shape ``(N, d)``.

    A NumPy array (or list) is converted to the model's dtype and device. A
    tensor must already match the model's dtype and device: we never change
    the precision of a tensor the caller made. ``x`` must be 2-D (one row per
    point), non-empty, floating point and finite, with ``d`` equal to the
    model's input size when that can be read off the model.
    """
    if model is not None:
        mdtype, mdevice = model_dtype_device(model)
        dtype = dtype or mdtype
        device = device or mdevice
        if in_features is None:
            in_features = infer_in_features(model)
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, (np.ndarray, list, tuple, float, int)):
        arr = np.asarray(x)
        if arr.dtype == object:
            raise TypeError(f"{name} must be a numeric array; got an object array.")
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise TypeError(f"{name} must hold real numbers; got dtype {arr.dtype}.")
        t = torch.as_tensor(arr, dtype=dtype or torch.get_default_dtype(), device=device)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray of shape (N, d); "
            f"got {type(x).__name__}."
        )
    if t.dim() != 2:
        hint = (
            f" For N points in one dimension use {name}[:, None], shape (N, 1)."
            if t.dim() == 1
            else ""
        )
        raise ValueError(
            f"{name} must be 2-D with shape (N, d), one row per point; got shape "
            f"{tuple(t.shape)}.{hint}"
        )
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); expected at least one point.")
    if not t.is_floating_point():
        raise TypeError(
            f"{name} must be floating point (float32 or float64); got {t.dtype}. "
            f"Convert it with {name}.float() or {name}.double()."
        )
    if dtype is not None and t.dtype != dtype:
        raise TypeError(
            f"{name} has dtype {t.dtype} but the model computes in {dtype}; convert "
            f"one of them ({name}.to({dtype}) or model.to({t.dtype}))."
        )
    if device is not None and t.device != torch.device(device):
        raise ValueError(
            f"{name} is on {t.device} but the model is on {device}; move one of "
            f"them ({name}.to(device) or model.to(device))."
        )
    if in_features is not None and t.shape[1] != in_features:
        raise ValueError(
            f"{name} has {t.shape[1]} features per point (shape {tuple(t.shape)}) but "
            f"the model expects {in_features}; expected shape (N, {in_features})."
        )
    check_finite(t, name)
    return t


def check_square_symmetric(K: torch.Tensor, name: str = "K", rtol: Optional[float] = None) -> torch.Tensor:
    """Check that ``K`` is a finite, square, symmetric matrix; return it symmetrized.

    Symmetry is checked to ``rtol * max|K|`` (default ``1e3 * eps`` of the
    dtype, enough for the round-off of a matrix product ``Phi @ Phi.T``);
    the returned matrix is ``(K + K^T) / 2``, exactly symmetric.
    """
    if K.dim() != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(
            f"{name} must be a square matrix of shape (N, N); got shape {tuple(K.shape)}."
        )
    if K.shape[0] == 0:
        raise ValueError(f"{name} is empty; expected an (N, N) matrix with N >= 1.")
    if not K.is_floating_point():
        raise TypeError(f"{name} must be floating point; got {K.dtype}.")
    check_finite(K, name)
    if rtol is None:
        rtol = 1e3 * torch.finfo(K.dtype).eps
    scale = K.abs().max()
    asym = (K - K.T).abs().max()
    if asym > rtol * scale:
        raise ValueError(
            f"{name} is not symmetric: max |K - K^T| = {float(asym):.3g}, "
            f"{float(asym / scale):.3g} relative to max |K| (tolerance {rtol:.1g}). "
            "Spectrum tools need a symmetric kernel matrix, such as K(x, x); a cross "
            "kernel K(x, x2) has singular values, not eigenvalues."
        )
    return (K + K.T) / 2
