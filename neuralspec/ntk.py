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

**Methods.**

``"jacobian"``
    Per-sample Jacobians with ``torch.func`` (``vmap(jacrev(...))`` over a
    ``functional_call``), contracted block by block. Exact for any module
    whose samples do not interact (no batch statistics).
``"ntvp"``
    NTK-vector products: for a block of columns, the Jacobian rows of ``x2``
    (reverse mode) pushed through the Jacobian of ``x`` with forward-mode
    ``jvp``, so the Jacobian of ``x`` is never stored.
``"structured"``
    For an ``nn.Sequential`` (nested ones included) of linear layers
    (``nn.Linear``, :class:`~neuralspec.NTKLinear`, the linear map inside
    :class:`~neuralspec.LFF` / :class:`~neuralspec.RFF`) and elementwise
    activations. With :math:`h_l` the input of trainable linear layer
    :math:`l` (:math:`z_l = s_w W_l h_l + s_b b_l`) and
    :math:`\delta_{l,o} = \partial f_o / \partial z_l` obtained by one
    backward sweep,

    .. math::

        \Theta(x, x') = \sum_l \Big(\sum_o \delta_{l,o}(x)^\top \delta_{l,o}(x')\Big)
            \big(s_w^2\, h_l(x)^\top h_l(x') + s_b^2\big),

    because :math:`\partial f_o / \partial W_l = s_w\, \delta_{l,o} h_l^\top`
    and :math:`\partial f_o / \partial b_l = s_b\, \delta_{l,o}`. The
    :math:`N \times P` Jacobian is never formed: the cost is a few matrix
    products of size :math:`N \times N \times \text{width}` per layer
    ("structured derivatives", Novak et al., ICML 2022).

**Inputs and outputs.** Inputs have shape ``(N, *)``, the first axis over
the samples (``(N, d)`` points, ``(N, C, H, W)`` images); the generic paths
take any shape, the structured one flat ``(N, d)`` inputs. For a model with
:math:`O` outputs, ``outputs="trace"`` (default) sums the kernel over them,
``"mean"`` averages it, ``"full"`` returns the :math:`O \times O` blocks
:math:`\nabla f_a(x_i) \cdot \nabla f_b(x'_j)`, shape ``(N, N2, O, O)``.

``method="auto"`` takes ``"structured"`` whenever the model qualifies (see
:func:`ntk_method`), else ``"jacobian"``. Why not ``"ntvp"``: for models
whose samples do not interact, an NTK-vector product costs at least one
forward pass per kernel entry and output, :math:`\ge 2P` flops, the same
order as the :math:`2P` flops of a Jacobian contraction; but the
contraction is one large matrix product (fast BLAS), while the products
are many small forward-mode passes, about twice as slow in our measurement (RFF(256) -> 1024 -> 1024 -> 1,
300 points: 22 s against 13 s on 2 CPU cores). The
blocked contraction keeps memory bounded too (Jacobian blocks of
``chunk_size`` rows, recomputed when they do not all fit), so ``"ntvp"`` is
offered for completeness and for models that support forward-mode AD,
never picked by ``"auto"``. (The matrix-free NTK, with no kernel matrix at
all, lives in ``neuralspec.scale``.)
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ._validation import check_independent_samples, check_outputs
from ._validation import ArrayLike, as_inputs, check_finite, trainable_parameters
from .memory import check_kernel_memory
from .layers import (_ActOp, _LinearOp, _elementwise_types, _structured_plan,  # noqa: F401  (one plan)
                     _value_and_derivative)

__all__ = ["ntk", "ntk_by_layer", "ntk_method", "METHODS"]

logger = logging.getLogger(__name__)

#: The values ``method`` accepts in :func:`ntk` and :func:`ntk_by_layer`.
METHODS = ("auto", "structured", "jacobian", "ntvp")

# Memory (bytes) the generic paths may spend on Jacobian blocks by default.
_JACOBIAN_BUDGET = 2 * 2**30
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
            from .utils import progress_bar

            self.bar = progress_bar(total, desc, "block", leave=True)

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

    vmap_ok = True

    def jacobian(self, xb: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``{name: (n, O, numel)}``: per-sample Jacobians of the outputs.

        ``vmap(jacrev(...))`` over the samples; for a module that ``vmap`` does
        not support (an op without a batching rule), a per-sample backward loop.
        """
        from torch.func import jacrev, vmap

        n = xb.shape[0]
        if self.vmap_ok:
            try:
                jac = vmap(jacrev(self.f_single), in_dims=(None, 0))(self.params, xb)
                return {k: v.reshape(n, v.shape[1], -1) for k, v in jac.items()}
            except (RuntimeError, NotImplementedError) as err:
                self.vmap_ok = False
                logger.debug("ntk: torch.func.vmap failed on %s (%s); per-sample backward loop",
                             type(self.model).__name__, err)
        return self._jacobian_loop(xb)

    def _jacobian_loop(self, xb: torch.Tensor) -> Dict[str, torch.Tensor]:
        from torch.func import functional_call

        prm = {k: v.detach().requires_grad_(True) for k, v in self.params.items()}
        rows: Dict[str, List[torch.Tensor]] = {k: [] for k in prm}
        with torch.enable_grad():
            for i in range(xb.shape[0]):
                y = functional_call(self.model, prm, (xb[i:i + 1],)).reshape(-1)
                per_o: Dict[str, List[torch.Tensor]] = {k: [] for k in prm}
                for o in range(y.shape[0]):
                    grads = torch.autograd.grad(y[o], list(prm.values()), retain_graph=True,
                                                allow_unused=True)
                    for (k, p), g in zip(prm.items(), grads):
                        per_o[k].append(torch.zeros_like(p).reshape(-1) if g is None else g.reshape(-1))
                for k in prm:
                    rows[k].append(torch.stack(per_o[k]))
        return {k: torch.stack(v) for k, v in rows.items()}

    def ntvp_block(self, x1: torch.Tensor, x2b: torch.Tensor, split: bool,
                   full: bool = False) -> Dict[str, torch.Tensor]:
        """``{name: (n1, n2b)}`` contributions (``(n1, n2b, O, O)`` when ``full``), by NTK-vector products.

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
            if full:  # [i, j, a, b] = grad f_a(x1_i) . grad f_b(x2_j)
                out[names[0]] = jv.permute(2, 0, 3, 1)
            else:
                out[names[0]] = jv.diagonal(dim1=1, dim2=3).sum(-1).T
        return out


def _contract(J1: Dict[str, torch.Tensor], J2: Dict[str, torch.Tensor],
              full: bool = False) -> Dict[str, torch.Tensor]:
    out = {}
    for k in J1:
        if full:  # (n1, O, p) x (n2, O, p) -> (n1, n2, O, O)
            out[k] = torch.einsum("iap,jbp->ijab", J1[k], J2[k])
            continue
        a = J1[k].reshape(J1[k].shape[0], -1)
        b = J2[k].reshape(J2[k].shape[0], -1)
        out[k] = a @ b.T
    return out



# ----------------------------------------------------------------------------
# structured path: stacks of linear layers and elementwise activations
# ----------------------------------------------------------------------------

def _structured_features(ops: List[object], x: torch.Tensor):
    """Per trainable linear op: its input ``h`` (n, n_in) and ``delta`` (n, O * n_out); and the output."""
    h = x
    inputs: List[Optional[torch.Tensor]] = []
    derivs: List[Optional[torch.Tensor]] = []
    for op in ops:
        if isinstance(op, _LinearOp):
            inputs.append(h if op.pre == 1.0 else op.pre * h)
            derivs.append(None)
            h = op(h)
        else:
            y, d = _value_and_derivative(op.fn, h)
            inputs.append(None)
            derivs.append(d)
            h = y
    out = h.reshape(h.shape[0], -1)
    n, O = out.shape
    first = min(i for i, op in enumerate(ops) if isinstance(op, _LinearOp) and op.trainable)
    g = torch.eye(O, dtype=x.dtype, device=x.device).expand(n, O, O)  # d f_o / d (current output)
    feats: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}
    for i in range(len(ops) - 1, first - 1, -1):
        op = ops[i]
        if isinstance(op, _ActOp):
            g = g * derivs[i].reshape(n, 1, -1)
        else:
            if op.trainable:
                feats[i] = (inputs[i], g.reshape(n, -1))
            if i > first:
                g = torch.matmul(g, op.module.weight.detach())
                if op.ws != 1.0:
                    g = g * op.ws
                if op.pre != 1.0:
                    g = g * op.pre
    return feats, out


def _features_blocked(ops: List[object], x: torch.Tensor, c: int):
    """``_structured_features`` on blocks of ``c`` rows (bounded activation memory), concatenated."""
    with torch.no_grad():
        parts = [_structured_features(ops, x[a:b]) for a, b in _blocks(x.shape[0], c)]
    if len(parts) == 1:
        return parts[0]
    feats = {i: (torch.cat([p[0][i][0] for p in parts]), torch.cat([p[0][i][1] for p in parts]))
             for i in parts[0][0]}
    return feats, torch.cat([p[1] for p in parts])


def _structured_block_full(ops: List[object], F1, F2, split: bool, O: int) -> Dict[str, torch.Tensor]:
    """The output-output blocks ``(n1, n2, O, O)``: ``[i, j, a, b] = sum_l (delta_{l,a}(x_i) .
    delta_{l,b}(x2_j)) (ws^2 h_l(x_i) . h_l(x2_j) + bs^2)``."""
    total: Optional[torch.Tensor] = None
    out: Dict[str, torch.Tensor] = {}
    for i, (h1, d1) in F1.items():
        h2, d2 = F2[i]
        op = ops[i]
        A = torch.einsum("iak,jbk->ijab", d1.reshape(d1.shape[0], O, -1), d2.reshape(d2.shape[0], O, -1))
        parts = []
        if op.w_train:
            B = (h1 @ h2.T).mul_(op.ws ** 2)
            parts.append((op.w_name, A * B[:, :, None, None]))
        if op.b_train:
            parts.append((op.b_name, A * (op.bs ** 2)))
        for name, val in parts:
            if split:
                out[name] = val
            else:
                total = val if total is None else total.add_(val)
    return out if split else {"ntk": total}


def _structured_block(ops: List[object], F1, F2, split: bool) -> Dict[str, torch.Tensor]:
    total: Optional[torch.Tensor] = None
    out: Dict[str, torch.Tensor] = {}
    for i, (h1, d1) in F1.items():
        h2, d2 = F2[i]
        op = ops[i]
        A = d1 @ d2.T
        if op.w_train:
            B = h1 @ h2.T
            if split:
                out[op.w_name] = B.mul_(op.ws ** 2).mul_(A)
            else:
                if op.ws != 1.0:
                    B.mul_(op.ws ** 2)
                if op.b_train:
                    B.add_(op.bs ** 2)
                B.mul_(A)
                total = B if total is None else total.add_(B)
        if op.b_train and (split or not op.w_train):
            Ab = A.mul_(op.bs ** 2) if op.bs != 1.0 else A
            if split:
                out[op.b_name] = Ab
            else:
                total = Ab if total is None else total.add_(Ab)
    return out if split else {"ntk": total}

# ----------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------

def ntk_method(model: nn.Module, *, explain: bool = False) -> Union[str, Tuple[str, str]]:
    """The method ``ntk(model, ..., method="auto")`` uses for this model, and why.

    ``"structured"`` when ``model`` is an ``nn.Sequential`` (nested ones
    included, and subclasses that keep its ``forward``, such as
    :class:`~neuralspec.MLP` and :class:`~neuralspec.RFFMLP`) of
    ``nn.Linear`` / :class:`~neuralspec.NTKLinear` / :class:`~neuralspec.LFF`
    / :class:`~neuralspec.RFF` layers and elementwise activations (ReLU,
    Tanh, GELU, Sigmoid, Softplus, Sine, Identity, LeakyReLU, SiLU, ELU), with
    no hooks or parametrizations and every trainable parameter inside a
    linear layer; ``"jacobian"`` otherwise. The choice is also logged at
    ``DEBUG`` level by the ``neuralspec.ntk`` logger.

    Parameters
    ----------
    model : nn.Module
    explain : bool
        Also return a sentence that says why.

    Returns
    -------
    str or (str, str)
        ``"structured"`` or ``"jacobian"``; with ``explain=True``, ``(method, reason)``.

    Examples
    --------
    >>> import neuralspec as ns
    >>> ns.ntk_method(ns.RFFMLP(1, 10, 64, 2, 1))
    'structured'
    """
    trainable_parameters(model)
    ops, why = _structured_plan(model)
    if ops is not None:
        method, reason = "structured", why
    else:
        method, reason = "jacobian", (
            f"not structured ({why}); generic exact path: per-sample Jacobians (torch.func) "
            "contracted block by block"
        )
    logger.debug("ntk_method(%s) -> %s: %s", type(model).__name__, method, reason)
    return (method, reason) if explain else method


def _prepare(model, x, x2):
    params = trainable_parameters(model)
    check_independent_samples(model)
    xt = as_inputs(x, "x", model=model).detach()
    x2t = None if x2 is None else as_inputs(x2, "x2", model=model).detach()
    if x2t is not None and x2t.shape[1:] != xt.shape[1:]:
        raise ValueError(
            f"x and x2 must have samples of the same shape; got x of shape {tuple(xt.shape)} "
            f"(samples {tuple(xt.shape[1:])}) and x2 of shape {tuple(x2t.shape)} (samples "
            f"{tuple(x2t.shape[1:])})."
        )
    return params, xt, x2t


def _default_chunk(n1: int, n2: int) -> int:
    """Rows per block for the structured path: about four blocks a side (a symmetric kernel then
    needs only its 10 upper blocks of 16), at least 256 rows, at most ``_DEFAULT_CHUNK``."""
    return max(256, min(_DEFAULT_CHUNK, -(-max(n1, n2) // 4)))


def _check_structured_forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """Guard: the structured forward pass must reproduce ``model(x)`` (checked on a few rows)."""
    k = min(x.shape[0], 64)
    ref = _outputs(model, x[:k], "x")
    tol = 1e-4 * float(ref.abs().max()) + 1e-30
    if ref.shape != y[:k].shape or not torch.allclose(y[:k], ref, rtol=1e-4, atol=tol):
        raise RuntimeError(
            "internal error: the structured forward pass does not reproduce the model's output; "
            "please report it, and use method='jacobian' meanwhile."
        )


def _compute(model: nn.Module, x, x2, method: str, chunk_size: Optional[int],
             progress: Optional[bool], group: Optional[str],
             outputs: str = "trace") -> Dict[str, torch.Tensor]:
    _check_method(method)
    _check_chunk(chunk_size)
    check_outputs(outputs)
    full = outputs == "full"
    params, xt, x2t = _prepare(model, x, x2)
    symmetric = x2t is None
    xb = xt if symmetric else x2t
    n1, n2 = xt.shape[0], xb.shape[0]
    dtype, device = xt.dtype, xt.device
    check_kernel_memory(n1, n2, dtype, device, "ntk" if group is None else "ntk_by_layer",  # before any pass
                        extra_matrices=0 if group is None else len({_group_key(n, group) for n, _ in params}))

    ops = None
    if method in ("auto", "structured"):
        ops, why = _structured_plan(model)
        if ops is not None and xt.dim() != 2:
            ops, why = None, (f"its inputs are not flat vectors (x of shape {tuple(xt.shape)}); the "
                              "structured path takes (N, d) inputs")
        if ops is None:
            if method == "structured":
                raise ValueError(
                    f"method='structured' does not apply to this {type(model).__name__}: {why}. "
                    "Use method='auto' (which falls back to the exact generic path) or 'jacobian'."
                )
            method = "jacobian"
            logger.debug("ntk: not structured (%s); using the generic Jacobian contraction", why)
        else:
            method = "structured"

    keys = (sorted({_group_key(n, group) for n, _ in params}, key=[_group_key(n, group) for n, _ in params].index)
            if group is not None else ["ntk"])
    P = sum(p.numel() for _, p in params)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if method == "structured":
        c = chunk_size or _default_chunk(n1, n2)
        F1, y1 = _features_blocked(ops, xt, c)
        check_finite(y1, "the model's output", " on x")
        _check_structured_forward(model, xt, y1)
        O = y1.shape[1]
        if symmetric:
            F2 = F1
        else:
            F2, y2 = _features_blocked(ops, xb, c)
            check_finite(y2, "the model's output", " on x2")
        per_entry = sum(2.0 * (h.shape[1] + d.shape[1]) for h, d in F1.values())
    else:
        O = _outputs(model, xt, "x").shape[1]
        if not symmetric:
            _outputs(model, x2t, "x2")
        gen = _Generic(model, params)
        c = chunk_size or max(1, min(_DEFAULT_CHUNK, _JACOBIAN_BUDGET // max(1, 2 * O * P * itemsize)))
        per_entry = 2.0 * O * P
    shape = (n1, n2, O, O) if full else (n1, n2)
    if full:  # O x O blocks: known only now
        check_kernel_memory(n1 * O, n2 * O, dtype, device, "ntk" if group is None else "ntk_by_layer",
                            extra_matrices=0 if group is None else len(keys))
    out = {k: torch.zeros(shape, dtype=dtype, device=device) for k in keys}

    def add(block: Dict[str, torch.Tensor], r, s):
        for name, val in block.items():
            key = _group_key(name, group) if group is not None else "ntk"
            out[key][r[0]:r[1], s[0]:s[1]] += val

    pairs = _block_pairs(n1, n2, c, symmetric)
    flops = per_entry * n1 * n2 * (0.5 if symmetric else 1.0)
    show = (flops > _PROGRESS_FLOPS and len(pairs) > 1) if progress is None else bool(progress)
    bar = _Progress(show, len(pairs), f"ntk ({method})")
    logger.debug("ntk: method=%s, %d x %d kernel, %d block(s) of %d rows", method, n1, n2, len(pairs), c)
    try:
        if method == "structured":
            for r, s in pairs:
                f1 = {i: (h[r[0]:r[1]], d[r[0]:r[1]]) for i, (h, d) in F1.items()}
                f2 = {i: (h[s[0]:s[1]], d[s[0]:s[1]]) for i, (h, d) in F2.items()}
                if full:
                    add(_structured_block_full(ops, f1, f2, group is not None, O), r, s)
                else:
                    add(_structured_block(ops, f1, f2, split=group is not None), r, s)
                bar.update()
        elif method == "jacobian":
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
                add(_contract(J1, J2, full), r, s)
                bar.update()
        else:  # ntvp
            for r, s in pairs:
                add(gen.ntvp_block(xt[r[0]:r[1]], xb[s[0]:s[1]], split=group is not None, full=full), r, s)
                bar.update()
    finally:
        bar.close()

    def transpose(B: torch.Tensor) -> torch.Tensor:  # Theta(x', x) from Theta(x, x')
        return B.permute(1, 0, 3, 2) if full else B.T

    if symmetric:
        for k, K in out.items():
            for r, s in pairs:
                if s[0] > r[0]:
                    K[s[0]:s[1], r[0]:r[1]] = transpose(K[r[0]:r[1], s[0]:s[1]])
                elif s[0] == r[0]:  # a diagonal block: symmetric up to round-off; make it exact
                    D = K[r[0]:r[1], r[0]:r[1]]
                    D.copy_((D + transpose(D)) / 2)
    for k, K in out.items():
        check_finite(K, "the NTK", f" ({k})")
        if outputs == "mean" and O != 1:
            K.div_(O)
    return out


def ntk(
    model: nn.Module,
    x: ArrayLike,
    x2: Optional[ArrayLike] = None,
    *,
    method: str = "auto",
    chunk_size: Optional[int] = None,
    progress: Optional[bool] = None,
    outputs: str = "trace",
) -> torch.Tensor:
    r"""The empirical neural tangent kernel of ``model``, exactly.

    .. math::

        \Theta(x, x') = \sum_{o=1}^{O} \nabla_\theta f_o(x) \cdot \nabla_\theta f_o(x'),

    the sum running over the trainable parameters (``requires_grad=True``)
    and, for a model with several outputs, over the outputs (the trace of
    the :math:`O \times O` NTK; ``outputs`` selects the mean or the whole
    :math:`O \times O` block instead).

    Parameters
    ----------
    model : nn.Module
        Any module mapping ``(N, *)`` inputs to ``(N,)`` or ``(N, O, ...)``
        outputs (flattened to ``O`` outputs), with at least one trainable
        parameter, whose samples do not interact (a BatchNorm layer in
        training mode is refused: call ``model.eval()``).
    x : (N, \*) tensor or array
        Inputs; the first axis is the sample axis, the trailing shape is
        whatever one sample of the model is (``(d,)`` for an MLP,
        ``(C, H, W)`` for a CNN); it is checked by one forward pass on one
        sample. A NumPy array, or integer data, is converted to the model's
        dtype and device; a floating-point tensor must already match them.
    x2 : (N2, \*) tensor or array, optional
        Second set of inputs for a cross kernel :math:`\Theta(x, x_2)`;
        default ``x`` (the symmetric kernel, of which only the upper blocks
        are computed).
    method : {"auto", "structured", "jacobian", "ntvp"}
        ``"auto"`` takes ``"structured"`` for stacks of linear layers and
        elementwise activations and ``"jacobian"`` otherwise;
        :func:`ntk_method` tells what it picks and why (see the module
        docstring for the methods). Every method gives the same kernel up
        to round-off. ``"structured"`` raises ``ValueError`` for a model it
        does not apply to.
    chunk_size : int, optional
        Kernel rows (and columns) per block. Peak memory is the kernel plus
        a few ``chunk_size x chunk_size`` blocks, plus the per-point
        features of the structured path (``N x sum of layer widths x
        (1 + O)``) or two Jacobian blocks (``chunk_size x O x P``) on the
        generic paths. Default: about a quarter of ``N`` (256 to 2048 rows)
        on the structured path; on the generic ones, as many rows as fit
        2 GiB of Jacobian blocks (all of them, computed once, when they fit).
    progress : bool, optional
        Show a tqdm progress bar over the blocks; default (``None``): only
        when the job is large (more than about 5e10 floating-point
        operations, several seconds on a laptop CPU, and more than one block).
        Either way a bar appears only once the job has run
        ``neuralspec.utils.PROGRESS_DELAY`` seconds (2 s by default).
    outputs : {"trace", "mean", "full"}
        For a model with :math:`O` outputs. ``"trace"`` (default):
        :math:`\sum_o \nabla f_o(x) \cdot \nabla f_o(x')`. ``"mean"``: the
        trace divided by :math:`O` (the same scale as a one-output model).
        ``"full"``: the whole output-output block,
        :math:`\Theta_{ab}(x_i, x'_j) = \nabla f_a(x_i) \cdot \nabla f_b(x'_j)`,
        of shape ``(N, N2, O, O)``; its trace over the last two axes is the
        default kernel. Every method computes each of them.

    Returns
    -------
    torch.Tensor
        ``(N, N2)`` (``(N, N2, O, O)`` with ``outputs="full"``), in the
        model's dtype and on its device.

    Raises
    ------
    ValueError
        A model with no trainable parameters or whose samples interact;
        ``x`` with fewer than two axes, of a shape the model does not accept
        (the message names the shape given and the shape the model accepts),
        or not finite; non-finite model outputs; an unknown ``method`` or
        ``outputs``.
    TypeError
        ``x`` of the wrong dtype (a floating-point tensor is never silently
        converted).

    Examples
    --------
    >>> import torch, neuralspec as ns
    >>> net = ns.MLP(2, 32, 1, 3)
    >>> x = torch.randn(5, 2)
    >>> ns.ntk(net, x, outputs="full").shape
    torch.Size([5, 5, 3, 3])
    """
    return _compute(model, x, x2, method, chunk_size, progress, None, outputs)["ntk"]


def ntk_by_layer(
    model: nn.Module,
    x: ArrayLike,
    x2: Optional[ArrayLike] = None,
    *,
    group: str = "module",
    method: str = "auto",
    chunk_size: Optional[int] = None,
    progress: Optional[bool] = None,
    outputs: str = "trace",
) -> Dict[str, torch.Tensor]:
    r"""The NTK split into the contributions of its parameter groups.

    .. math::

        \Theta(x, x') = \sum_{g} \Theta_g(x, x'), \qquad
        \Theta_g(x, x') = \sum_{o} \sum_{p \in g}
            \partial_{\theta_p} f_o(x)\, \partial_{\theta_p} f_o(x').

    Parameters
    ----------
    model, x, x2, method, chunk_size, progress, outputs
        As in :func:`ntk` (inputs of any shape ``(N, *)``; ``outputs="full"``
        gives ``(N, N2, O, O)`` blocks).
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
    return _compute(model, x, x2, method, chunk_size, progress, group, outputs)
