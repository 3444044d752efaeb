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
    "check_nonnegative",
    "check_independent_samples",
    "check_outputs",
    "OUTPUTS",
    "check_finite",
    "check_square_symmetric",
    "infer_in_features",
    "expected_input_shape",
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
    """The flat input size of a model whose first module is a linear layer, else ``None``.

    Read off the first module that reads the input (see
    :func:`expected_input_shape`), never off a later layer: the readout's
    ``in_features`` says nothing about a model that reshapes its input.
    """
    shape = expected_input_shape(model)
    return shape[0] if shape is not None and len(shape) == 1 else None


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


def check_nonnegative(value, name: str) -> float:
    """``value`` as a ``float`` if it is a finite number ``>= 0``; else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative finite number; got {value!r}.")
    return float(value)


#: The values ``outputs`` accepts in the NTK functions (see :func:`neuralspec.ntk`).
OUTPUTS = ("trace", "mean", "full")


def check_outputs(outputs, allowed: Tuple[str, ...] = OUTPUTS) -> str:
    """``outputs`` if it is one of ``allowed``; else ``ValueError`` naming the argument."""
    if not isinstance(outputs, str) or outputs not in allowed:
        raise ValueError(f"outputs must be one of {allowed}; got {outputs!r}.")
    return outputs


def check_independent_samples(model: nn.Module, what: str = "the NTK") -> None:
    """Refuse a model whose samples interact: batch normalization in training mode.

    In training mode a BatchNorm layer normalizes each sample with the
    statistics of the whole batch, so ``f(x_i)`` depends on every other
    ``x_j`` and a per-sample kernel is not defined.
    """
    from torch.nn.modules.batchnorm import _BatchNorm

    for name, m in model.named_modules():
        if isinstance(m, _BatchNorm) and (m.training or m.running_mean is None):
            why = ("is in training mode, where it" if m.training else
                   "has no running statistics (track_running_stats=False), so it always")
            fix = ("Call model.eval() first (it then uses its running statistics)." if m.training
                   else "Use a BatchNorm with track_running_stats=True, in eval mode.")
            raise ValueError(
                f"module {name or '(model)'} ({type(m).__name__}) {why} normalizes each sample "
                f"with the statistics of the whole batch: the samples interact, and {what} (a "
                f"per-sample kernel) is not defined. {fix}"
            )


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


def expected_input_shape(model: nn.Module) -> Optional[Tuple[Optional[int], ...]]:
    """The shape of one sample that a model's first module accepts, when it can be read off.

    Follows the first child of ``nn.Sequential`` containers (and of our
    models, which are ``nn.Sequential``) down to the first module that reads
    the input: a linear layer (anything with an integer ``in_features``)
    accepts ``(in_features,)``; ``nn.ConvNd`` accepts ``(in_channels, *)``
    (``None`` for a free size); ``nn.Unflatten(1, sizes)`` accepts
    ``(prod(sizes),)``. ``None`` when unknown (another first module, or a
    model with its own ``forward``): the one-sample forward pass of
    :func:`as_inputs` is then the only check.
    """
    m = model
    while type(m).forward is nn.Sequential.forward and len(m) > 0:
        m = next(iter(m.children()))
    if isinstance(m, nn.modules.conv._ConvNd) and m.in_channels > 0:
        k = len(m.kernel_size)
        return (m.in_channels,) + (None,) * k
    if isinstance(m, nn.Unflatten) and m.dim in (1,) and all(isinstance(v, int) for v in m.unflattened_size):
        return (int(np.prod(m.unflattened_size)),)
    n = getattr(m, "in_features", None)
    if isinstance(n, int) and not isinstance(n, bool) and n > 0:
        return (n,)
    return None


def _shape_text(shape: Tuple[Optional[int], ...]) -> str:
    """``(N, 3, H, W)`` for a per-sample shape ``(3, None, None)``."""
    free = {1: ["L"], 2: ["H", "W"], 3: ["D", "H", "W"]}.get(sum(v is None for v in shape))
    free = iter(free or [f"D{i}" for i in range(1, len(shape) + 1)])
    parts = ["N"] + [str(v) if v is not None else next(free) for v in shape]
    return "(" + ", ".join(parts) + ")"


def _probe(model: nn.Module, t: torch.Tensor, name: str, expected) -> None:
    """One forward pass on one sample (in eval mode, no side effects): a clear error if it fails."""
    flags = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            y = model(t[:1])
    except Exception as err:  # the model's own message says what did not fit
        accepts = (f"the model accepts inputs of shape {_shape_text(expected)}" if expected is not None
                   else "the model does not accept it")
        raise ValueError(
            f"{name} has shape {tuple(t.shape)} (samples of shape {tuple(t.shape[1:])}) but "
            f"{accepts}: the forward pass on one sample, shape {tuple(t[:1].shape)}, failed with "
            f"{type(err).__name__}: {err}"
        ) from err
    finally:
        for m, f in flags.items():
            m.training = f
    if isinstance(y, torch.Tensor) and (y.dim() == 0 or y.shape[0] != 1):
        raise ValueError(
            f"the model must keep the first axis of {name} as the sample axis: one sample of shape "
            f"{tuple(t[:1].shape)} gave an output of shape {tuple(y.shape)}; expected (1, ...)."
        )


def as_inputs(
    x: ArrayLike,
    name: str = "x",
    *,
    model: Optional[nn.Module] = None,
    in_features: Optional[int] = None,
    dtype: Optional[torch.dtype] = None,
    device: Optional[Union[str, torch.device]] = None,
    probe: bool = True,
    flat: Optional[bool] = None,
) -> torch.Tensor:
    """Validate an input batch and return it as a tensor of shape ``(N, *)``.

    The first axis is always the sample axis. Without a model, ``x`` must be
    2-D, ``(N, d)`` (one row per point; ``d == in_features`` when given),
    unless ``flat=False`` (any ``(N, *)``).
    With a model, ``x`` has shape ``(N, *)`` with at least two axes, and its
    trailing shape ``*`` is checked against the model: against the shape its
    first module accepts when that can be read off
    (:func:`expected_input_shape`), and by one forward pass on one sample
    (in eval mode, so no batch statistics are touched; ``probe=False``
    skips it). A mismatch raises ``ValueError`` naming ``name``, the shape
    given and the shape the model accepts.

    Dtype and device: a floating-point NumPy array (or list of floats) is
    converted to the model's dtype and device. A tensor must already match
    them (we never change the precision of a tensor the caller made).
    Integer (or boolean) data raises ``TypeError`` saying to pass floats,
    as a NumPy array and as a tensor alike: the two are treated the same,
    and nothing is cast silently. ``x`` must be non-empty and finite.
    """
    expected = None
    if model is not None:
        mdtype, mdevice = model_dtype_device(model)
        dtype = dtype or mdtype
        device = device or mdevice
        if in_features is not None:
            expected = (in_features,)
        else:
            expected = expected_input_shape(model)
    elif in_features is not None:
        expected = (in_features,)
    if isinstance(x, torch.Tensor):
        t = x
        if not t.is_floating_point():
            raise TypeError(
                f"{name} must be floating point (float32 or float64); got {t.dtype}. Pass floats: "
                f"{name}.float() or {name}.double() (integer data is never cast silently)."
            )
    elif isinstance(x, (np.ndarray, list, tuple, float, int)):
        arr = np.asarray(x)
        if arr.dtype == object:
            raise TypeError(f"{name} must be a numeric array; got an object array.")
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(
                f"{name} must be floating point (float32 or float64); got dtype {arr.dtype}. Pass "
                f"floats: {name}.astype(np.float32) or {name}.astype(np.float64) (integer data is "
                "never cast silently, as a NumPy array or as a tensor)."
            )
        t = torch.as_tensor(arr, dtype=dtype or torch.get_default_dtype(), device=device)
    else:
        raise TypeError(
            f"{name} must be a torch.Tensor or numpy.ndarray of shape (N, d); "
            f"got {type(x).__name__}."
        )
    if flat is None:
        flat = model is None
    if t.dim() < 2 or (flat and t.dim() != 2):
        hint = (
            f" For N points in one dimension use {name}[:, None], shape (N, 1)."
            if t.dim() == 1
            else ""
        )
        what = ("2-D with shape (N, d), one row per point" if flat else
                "at least 2-D, of shape (N, *) with the first axis over the samples ((N, d) "
                "points, (N, C, H, W) images, ...)")
        raise ValueError(f"{name} must be {what}; got shape {tuple(t.shape)}.{hint}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); expected at least one point.")
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
    if expected is not None:
        trail = tuple(t.shape[1:])
        if len(trail) != len(expected) or any(e is not None and e != g for e, g in zip(expected, trail)):
            if flat or len(expected) == 1 and len(trail) == 1:
                raise ValueError(
                    f"{name} has {trail[0] if len(trail) == 1 else trail} features per point (shape "
                    f"{tuple(t.shape)}) but the model expects {expected[0]}; expected shape "
                    f"{_shape_text(expected)}."
                )
            raise ValueError(
                f"{name} has shape {tuple(t.shape)} (samples of shape {trail}) but the model accepts "
                f"inputs of shape {_shape_text(expected)}."
            )
    check_finite(t, name)
    if model is not None and probe:
        _probe(model, t, name, expected)
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
