r"""The empirical neural tangent kernel (NTK), exact for any ``nn.Module``.

For a network :math:`f(x; \theta) \in \mathbb R^{O}` with trainable
parameters :math:`\theta` (those with ``requires_grad=True``), the empirical
NTK is

.. math::

    \Theta(x, x') = \sum_{o=1}^{O} \sum_{p \in \theta}
        \frac{\partial f_o(x)}{\partial \theta_p}\,
        \frac{\partial f_o(x')}{\partial \theta_p}
    = \operatorname{tr}\big[J(x)\, J(x')^\top\big],

the trace over the outputs of the Jacobian contraction. Frozen parameters
(``requires_grad=False``, e.g. the weights of :class:`~neuralspec.RFF`) are
constants and do not enter it.

Methods
-------
``"jacobian"``
    Per-sample Jacobians with ``torch.func`` (``vmap(jacrev(...))`` over a
    ``functional_call``), contracted block by block. Exact for any module
    whose samples do not interact (no batch statistics).
``"ntvp"``
    NTK-vector products: for a block of columns, the Jacobian rows of ``x2``
    (reverse mode) pushed through the Jacobian of ``x`` with forward-mode
    ``jvp``, so the Jacobian of ``x`` is never stored.
``"structured"``
    (added with issue 5) for stacks of linear layers and elementwise
    activations.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
from torch import nn

from ._validation import ArrayLike, as_inputs, check_finite, trainable_parameters

__all__ = ["ntk", "ntk_by_layer", "ntk_method", "METHODS"]

logger = logging.getLogger(__name__)

METHODS = ("auto", "structured", "jacobian", "ntvp")

# Memory (bytes) the generic paths may spend on Jacobian blocks by default.
_JACOBIAN_BUDGET = 512 * 2**20
# Default number of kernel rows per block when the user gives no chunk_size.
_DEFAULT_CHUNK = 2048
# Estimated floating-point operations above which a progress bar is shown.
_PROGRESS_FLOPS = 5e10


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

def _owner(name: str) -> str:
    """The module path owning parameter ``name`` ("" for the model itself)."""
    return name.rsplit(".", 1)[0] if "." in name else ""


def _group_key(name: str, group: str) -> str:
    if group == "parameter":
        return name
    owner = _owner(name)
    return owner if owner else "(model)"


def _blocks(n: int, c: int) -> List[Tuple[int, int]]:
    return [(i, min(i + c, n)) for i in range(0, n, c)]


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")


def _check_chunk(chunk_size) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}.")


def _outputs(model: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
    """The model's outputs on ``x`` as an ``(N, O)`` matrix, checked finite."""
    with torch.no_grad():
        y = model(x)
    if not isinstance(y, torch.Tensor):
        raise TypeError(
            f"the model must return a tensor; got {type(y).__name__} for {name} of shape {tuple(x.shape)}."
        )
    if y.dim() == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"the model must return one output row per input point, shape ({x.shape[0]}, ...) for "
            f"{name} of shape {tuple(x.shape)}; got {tuple(y.shape)}."
        )
    y = y.reshape(y.shape[0], -1)
    check_finite(y, "the model's output", f" on {name}")
    return y


class _Progress:
    """A tqdm bar over kernel blocks, or nothing."""

    def __init__(self, enabled: bool, total: int, desc: str) -> None:
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="block")

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _block_pairs(n1: int, n2: int, c: int, symmetric: bool):
    rows = _blocks(n1, c)
    cols = _blocks(n2, c)
    pairs = []
    for bi, r in enumerate(rows):
        for bj, s in enumerate(cols):
            if symmetric and bj < bi:
                continue
            pairs.append((r, s))
    return pairs


# ----------------------------------------------------------------------------
# generic exact paths (torch.func)
# ----------------------------------------------------------------------------

class _Generic:
    """Per-sample Jacobians / NTK-vector products via ``torch.func``."""

    def __init__(self, model: nn.Module, params: List[Tuple[str, torch.Tensor]]) -> None:
        from torch.func import functional_call

        self.model = model
        self.names = [n for n, _ in params]
        self.params = {n: p.detach() for n, p in params}

        def f_batch(prm: Dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            y = functional_call(model, prm, (xb,))
            return y.reshape(y.shape[0], -1)

        def f_single(prm: Dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
            return f_batch(prm, xi.unsqueeze(0)).squeeze(0)

        self.f_batch = f_batch
        self.f_single = f_single

    def jacobian(self, xb: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{name: (n, O, numel)}``: per-sample Jacobians of the outputs."""
        from torch.func import jacrev, vmap

        jac = vmap(jacrev(self.f_single), in_dims=(None, 0))(self.params, xb)
        n = xb.shape[0]
        return {k: v.reshape(n, v.shape[1], -1) for k, v in jac.items()}

    def ntvp_block(self, x1: torch.Tensor, x2b: torch.Tensor, split: bool) -> Dict[str, torch.Tensor]:
        """``{name: (n1, n2b)}`` contributions, by NTK-vector products.

        The Jacobian rows of the ``x2b`` block (reverse mode) are the tangents;
        one forward-mode ``jvp`` over ``x1`` per tangent gives ``J(x1) J(x2b)^T``
        without ever storing ``J(x1)``. With ``split``, one pass per parameter
        (the tangent is zero elsewhere); else one pass for all of them, keyed
        by the first parameter's name.
        """
        from torch.func import jvp, vmap

        J2 = self.jacobian(x2b)  # {name: (n2b, O, numel)}
        n2b, n1 = x2b.shape[0], x1.shape[0]
        O = next(iter(J2.values())).shape[1]
        groups = [[n] for n in self.names] if split else [self.names]
        out: Dict[str, torch.Tensor] = {}
        for names in groups:
            tangents = {n: J2[n].reshape(n2b * O, *self.params[n].shape) for n in names}

            def push(tan: Dict[str, torch.Tensor]) -> torch.Tensor:
                full = {k: tan[k] if k in tan else torch.zeros_like(q) for k, q in self.params.items()}
                return jvp(lambda prm: self.f_batch(prm, x1), (self.params,), (full,))[1]

            jv = vmap(push)(tangents).reshape(n2b, O, n1, O)  # [j, o (tangent), n, o (output)]
            out[names[0]] = jv.diagonal(dim1=1, dim2=3).sum(-1).T
        return out


def _contract(J1: Dict[str, torch.Tensor], J2: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    out = {}
    for k in J1:
        a = J1[k].reshape(J1[k].shape[0], -1)
        b = J2[k].reshape(J2[k].shape[0], -1)
        out[k] = a @ b.T
    return out


# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------

def ntk_method(model: nn.Module, *, explain: bool = False) -> Union[str, Tuple[str, str]]:
    """The method ``ntk(model, ..., method="auto")`` uses for this model.

    Parameters
    ----------
    model : nn.Module
    explain : bool
        Also return a sentence that says why.

    Returns
    -------
    str or (str, str)
        ``"structured"`` or ``"jacobian"``; with ``explain=True``, ``(method, reason)``.
    """
    trainable_parameters(model)
    method, reason = "jacobian", (
        "generic exact path: per-sample Jacobians (torch.func) contracted block by block"
    )
    logger.debug("ntk_method(%s) -> %s: %s", type(model).__name__, method, reason)
    return (method, reason) if explain else method


def _prepare(model, x, x2):
    params = trainable_parameters(model)
    xt = as_inputs(x, "x", model=model)
    x2t = None if x2 is None else as_inputs(x2, "x2", model=model)
    if x2t is not None and x2t.shape[1] != xt.shape[1]:
        raise ValueError(
            f"x and x2 must have the same number of features; got shapes {tuple(xt.shape)} "
            f"and {tuple(x2t.shape)}."
        )
    return params, xt, x2t


def _compute(model: nn.Module, x, x2, method: str, chunk_size: Optional[int],
             progress: Optional[bool], group: Optional[str]) -> Dict[str, torch.Tensor]:
    _check_method(method)
    _check_chunk(chunk_size)
    params, xt, x2t = _prepare(model, x, x2)
    symmetric = x2t is None
    y1 = _outputs(model, xt, "x")
    if not symmetric:
        _outputs(model, x2t, "x2")
    xb = xt if symmetric else x2t
    n1, n2, O = xt.shape[0], xb.shape[0], y1.shape[1]
    dtype, device = y1.dtype, y1.device

    if method == "auto":
        method = ntk_method(model)

    keys = (sorted({_group_key(n, group) for n, _ in params}, key=[_group_key(n, group) for n, _ in params].index)
            if group is not None else ["ntk"])
    out = {k: torch.zeros(n1, n2, dtype=dtype, device=device) for k in keys}

    def add(block: Dict[str, torch.Tensor], r, s):
        for name, val in block.items():
            key = _group_key(name, group) if group is not None else "ntk"
            out[key][r[0]:r[1], s[0]:s[1]] += val

    P = sum(p.numel() for _, p in params)
    itemsize = torch.empty((), dtype=dtype).element_size()
    gen = _Generic(model, params)
    if chunk_size is None:
        c = max(1, min(_DEFAULT_CHUNK, _JACOBIAN_BUDGET // max(1, 2 * O * P * itemsize)))
    else:
        c = chunk_size
    pairs = _block_pairs(n1, n2, c, symmetric)
    flops = 2.0 * n1 * n2 * O * P * (0.5 if symmetric else 1.0)
    show = (flops > _PROGRESS_FLOPS and len(pairs) > 1) if progress is None else bool(progress)
    bar = _Progress(show, len(pairs), f"ntk ({method})")
    logger.debug("ntk: method=%s, %d x %d kernel, %d block(s) of %d rows", method, n1, n2, len(pairs), c)
    try:
        if method == "jacobian":
            # Keep every Jacobian block when they all fit in the budget; else recompute.
            cache_ok = (n1 + (0 if symmetric else n2)) * O * P * itemsize <= _JACOBIAN_BUDGET
            cache: Dict[Tuple[str, int, int], Dict[str, torch.Tensor]] = {}

            def jac(which: str, r):
                key = (which, r[0], r[1])
                if key in cache:
                    return cache[key]
                src = xt if which == "x" else xb
                J = gen.jacobian(src[r[0]:r[1]])
                if cache_ok:
                    cache[key] = J
                return J

            cur_row, J1 = None, None
            for r, s in pairs:
                if r != cur_row:
                    J1, cur_row = jac("x", r), r
                J2 = J1 if (symmetric and r == s) else jac("x" if symmetric else "x2", s)
                add(_contract(J1, J2), r, s)
                bar.update()
        elif method == "ntvp":
            for r, s in pairs:
                add(gen.ntvp_block(xt[r[0]:r[1]], xb[s[0]:s[1]], split=group is not None), r, s)
                bar.update()
        else:
            raise ValueError(f"method {method!r} is not available for {type(model).__name__}.")
    finally:
        bar.close()

    if symmetric:
        for k, K in out.items():
            for r, s in pairs:
                if s[0] > r[0]:
                    K[s[0]:s[1], r[0]:r[1]] = K[r[0]:r[1], s[0]:s[1]].T
    for k, K in out.items():
        check_finite(K, "the NTK", f" ({k})")
    return out


def ntk(
    model: nn.Module,
    x: ArrayLike,
    x2: Optional[ArrayLike] = None,
    *,
    method: str = "auto",
    chunk_size: Optional[int] = None,
    progress: Optional[bool] = None,
) -> torch.Tensor:
    r"""The empirical neural tangent kernel of ``model``, exactly.

    .. math::

        \Theta(x, x') = \sum_{o=1}^{O} \nabla_\theta f_o(x) \cdot \nabla_\theta f_o(x'),

    the sum running over the trainable parameters (``requires_grad=True``)
    and, for a model with several outputs, over the outputs (the trace of
    the :math:`O \times O` NTK).

    Parameters
    ----------
    model : nn.Module
        Any module mapping ``(N, d)`` inputs to ``(N,)`` or ``(N, O)`` outputs,
        with at least one trainable parameter, whose samples do not interact.
    x : (N, d) tensor or array
        Inputs. A NumPy array is converted to the model's dtype and device; a
        tensor must already match them.
    x2 : (N2, d) tensor or array, optional
        Second set of inputs for a cross kernel :math:`\Theta(x, x_2)`;
        default ``x`` (the symmetric kernel, of which only the upper blocks
        are computed).
    method : {"auto", "structured", "jacobian", "ntvp"}
        See the module docstring; :func:`ntk_method` tells what ``"auto"``
        picks and why. Every method gives the same kernel up to round-off.
    chunk_size : int, optional
        Kernel rows (and columns) per block. Smaller blocks use less memory.
    progress : bool, optional
        Show a tqdm progress bar; default: only for large kernels.

    Returns
    -------
    torch.Tensor
        ``(N, N2)``, in the model's dtype and on its device.

    Raises
    ------
    ValueError
        A model with no trainable parameters; ``x`` not 2-D, of the wrong
        feature size, or not finite; non-finite model outputs.
    TypeError
        ``x`` of the wrong dtype (a tensor is never silently converted).
    """
    return _compute(model, x, x2, method, chunk_size, progress, None)["ntk"]


def ntk_by_layer(
    model: nn.Module,
    x: ArrayLike,
    x2: Optional[ArrayLike] = None,
    *,
    group: str = "module",
    method: str = "auto",
    chunk_size: Optional[int] = None,
    progress: Optional[bool] = None,
) -> Dict[str, torch.Tensor]:
    r"""The NTK split into the contributions of its parameter groups.

    .. math::

        \Theta(x, x') = \sum_{g} \Theta_g(x, x'), \qquad
        \Theta_g(x, x') = \sum_{o} \sum_{p \in g}
            \partial_{\theta_p} f_o(x)\, \partial_{\theta_p} f_o(x').

    Parameters
    ----------
    model, x, x2, method, chunk_size, progress
        As in :func:`ntk`.
    group : {"module", "parameter"}
        ``"module"`` (default): one entry per module owning trainable
        parameters, keyed by its path in ``model.named_modules()`` (``"0"``,
        ``"2"``, ``"0.linear"``, ...; parameters of the model itself under
        ``"(model)"``). ``"parameter"``: one entry per trainable parameter,
        keyed by its name (``"0.weight"``, ``"0.bias"``, ...).

    Returns
    -------
    dict of str to torch.Tensor
        In the order of ``model.named_parameters()``; the values sum to
        ``ntk(model, x, x2)``.
    """
    if group not in ("module", "parameter"):
        raise ValueError(f"group must be 'module' or 'parameter'; got {group!r}.")
    return _compute(model, x, x2, method, chunk_size, progress, group)
