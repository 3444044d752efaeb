r"""Spectra of kernels too large for a dense eigensolver, and the matrix-free NTK.

A dense symmetric eigensolver (``eigh``) costs :math:`O(N^3)` time and holds
the :math:`N \times N` kernel plus a workspace of the same size. For the
*top* :math:`k` eigenpairs only products :math:`K v` are needed:

* **Lanczos** (``scipy.sparse.linalg.eigsh``, ARPACK's implicitly restarted
  Lanczos method) builds a Krylov basis :math:`\{v, Kv, K^2 v, \dots\}` one
  product at a time; it needs the fewest products, so it is the choice when
  a product is expensive (the matrix-free NTK).
* **LOBPCG** (``scipy.sparse.linalg.lobpcg``) iterates on a block of
  :math:`k` (plus a few) vectors at once; each step is one block product
  :math:`K V`, a matrix-matrix product that runs at full BLAS speed when
  the kernel is held in memory.

The kernel enters as a :class:`KernelOperator`, which only knows how to
multiply:

* :func:`kernel_operator` holds a kernel computed block by block into one
  :math:`N \times N` buffer (the matrix is never held twice), or recomputes
  its row blocks on every product when even one copy does not fit;
* :func:`ntk_operator` does the same for the NTK of a model, or, with
  ``matrix_free=True``, multiplies by the NTK without ever forming it:

  .. math::

      \Theta v = \sum_{o} J_o \big(J_o^\top v\big), \qquad
      J_o = \frac{\partial f_o(x)}{\partial \theta} \in \mathbb R^{N \times P},

  one reverse-mode pass (a vector-Jacobian product, ``torch.func.vjp``) for
  :math:`g = J^\top v \in \mathbb R^P` and one forward-mode pass (a
  Jacobian-vector product, ``torch.func.jvp``) for :math:`J g`, over chunks
  of points. Memory is :math:`O(N + P)` plus one chunk's activations: no
  :math:`N \times N` matrix and no :math:`N \times P` Jacobian. For stacks
  of linear layers and activations both passes are done with the per-layer
  factors of the structured NTK, cached within a memory budget.

:func:`top_eigenpairs` takes any of these, a dense tensor or array, or a
SciPy ``LinearOperator``, and returns the top :math:`k` eigenpairs in
descending order.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ._validation import (ArrayLike, as_inputs, check_finite, check_independent_samples, check_positive_int,
                          model_dtype_device, trainable_parameters)
from .ntk import _blocks
from .memory import check_kernel_memory

__all__ = [
    "KernelOperator",
    "DenseKernelOperator",
    "BlockKernelOperator",
    "MatrixFreeNTKOperator",
    "kernel_operator",
    "ntk_operator",
    "ntk_matvec",
    "top_eigenpairs",
]

TOPK_METHODS = ("lanczos", "lobpcg", "nystrom")

# Points per chunk of the matrix-free NTK (times the number of vectors in a
# block product): bounds the activations held by one reverse/forward pass.
_MF_CHUNK_CPU = 4096
_MF_CHUNK_CUDA = 65536
# Memory for the cached per-layer factors of the structured matrix-free NTK.
_MF_CACHE_BYTES = 2 * 2**30
# Elements of one (points x width) temporary of a structured block product.
_MF_TEMP_ELEMENTS = 2**23
# Vectors per sweep of a structured block product.
_MF_NARROW = 512  # layers with (vectors x output width) up to this: one batched GEMM
_MF_GROUP = 16
# Row-block size (bytes of one block) for the block-wise kernel operator.
_BLOCK_BYTES = 128 * 2**20
# Sizes from which a progress bar is shown by default: a held kernel of
# _PROGRESS_N points, or a matrix-free NTK of _PROGRESS_N_MF points.
_PROGRESS_N = 20000
_PROGRESS_N_MF = 2000




def _check_symmetric_blockwise(K: torch.Tensor, name: str, rtol: Optional[float] = None,
                               block: int = 2048) -> None:
    """Square, floating, finite and symmetric, checked block by block (no N x N copy)."""
    if K.dim() != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"{name} must be a square matrix of shape (N, N); got shape {tuple(K.shape)}.")
    if K.shape[0] == 0:
        raise ValueError(f"{name} is empty; expected an (N, N) matrix with N >= 1.")
    if not K.is_floating_point():
        raise TypeError(f"{name} must be floating point (float32 or float64); got {K.dtype}.")
    n = K.shape[0]
    scale = 0.0
    for a, b in _blocks(n, block):
        check_finite(K[a:b], name)
        scale = max(scale, float(K[a:b].abs().max()))
    if rtol is None:
        rtol = 1e3 * torch.finfo(K.dtype).eps
    asym = 0.0
    for a, b in _blocks(n, block):
        asym = max(asym, float((K[a:b, a:] - K[a:, a:b].T).abs().max()))
    if asym > rtol * max(scale, torch.finfo(K.dtype).tiny):
        raise ValueError(
            f"{name} is not symmetric: max |K - K^T| = {asym:.3g}, {asym / scale:.3g} relative to "
            f"max |K| (tolerance {rtol:.1g}). Top-k eigenpairs need a symmetric kernel such as "
            "K(x, x); a cross kernel K(x, x2) has singular values, not eigenvalues."
        )


# ----------------------------------------------------------------------------
# operators
# ----------------------------------------------------------------------------

class KernelOperator:
    r"""A symmetric :math:`N \times N` kernel known through its products :math:`K V`.

    Subclasses implement ``_matmat`` on torch tensors of shape ``(N, b)``
    on the operator's device. ``op @ v`` works for ``(N,)`` and ``(N, b)``
    tensors or arrays and returns the same kind. ``n_products`` counts the
    vectors multiplied so far (a block of ``b`` counts ``b``).
    """

    shape: Tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    def __init__(self, n: int, dtype: torch.dtype, device: torch.device) -> None:
        self.shape = (int(n), int(n))
        self.dtype = dtype
        self.device = torch.device(device)
        self.n_products = 0

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def matmat(self, V: ArrayLike) -> Union[torch.Tensor, np.ndarray]:
        r""":math:`K V` for ``V`` of shape ``(N,)`` or ``(N, b)``."""
        was_np = isinstance(V, np.ndarray)
        if was_np:
            Vt = torch.from_numpy(np.ascontiguousarray(V))
        elif isinstance(V, torch.Tensor):
            Vt = V
        else:
            raise TypeError(f"the vector(s) must be a torch.Tensor or numpy.ndarray; got {type(V).__name__}.")
        n = self.shape[0]
        if Vt.dim() not in (1, 2) or Vt.shape[0] != n:
            raise ValueError(
                f"cannot multiply an ({n}, {n}) kernel by an array of shape {tuple(Vt.shape)}; "
                f"expected shape ({n},) or ({n}, b)."
            )
        if not Vt.is_floating_point():
            raise TypeError(f"the vector(s) must be floating point; got {Vt.dtype}.")
        V2 = Vt.reshape(n, -1).to(device=self.device, dtype=self.dtype)
        out = self._matmat(V2)
        self.n_products += V2.shape[1]
        out = out.reshape(Vt.shape)
        if was_np:
            return out.detach().cpu().numpy().astype(V.dtype, copy=False)
        return out

    matvec = matmat

    def __matmul__(self, V):
        return self.matmat(V)

    def to_dense(self) -> torch.Tensor:
        """The full matrix, :math:`K I` (for checks at small ``N``)."""
        eye = torch.eye(self.shape[0], dtype=self.dtype, device=self.device)
        return self._matmat(eye)

    def as_linear_operator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` (NumPy in, NumPy out) for SciPy's solvers."""
        from scipy.sparse.linalg import LinearOperator

        np_dtype = torch.empty((), dtype=self.dtype).numpy().dtype

        def mv(v):
            return self.matmat(np.asarray(v, dtype=np_dtype))

        return LinearOperator(self.shape, matvec=mv, matmat=mv, rmatvec=mv, rmatmat=mv, dtype=np_dtype)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(N={self.shape[0]}, dtype={self.dtype}, device={self.device}, "
                f"{self._describe()})")

    def _describe(self) -> str:
        return ""


class DenseKernelOperator(KernelOperator):
    r"""A kernel held in memory as one ``(N, N)`` tensor: :math:`K V` is one matrix product."""

    def __init__(self, K: torch.Tensor, *, check: bool = True) -> None:
        if check:
            _check_symmetric_blockwise(K, "K")
        super().__init__(K.shape[0], K.dtype, K.device)
        self.K = K

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return self.K @ V

    def to_dense(self) -> torch.Tensor:
        return self.K

    def _describe(self) -> str:
        return f"held in memory, {self.K.numel() * self.K.element_size() / 2**20:.0f} MiB"


class BlockKernelOperator(KernelOperator):
    r"""A kernel whose row blocks :math:`K(x_{I}, x)` are recomputed on every product.

    .. math:: (K V)_{I} = k(x_I, x)\, V \quad \text{for each row block } I,

    so memory is one ``(block_size, N)`` block, and each product costs the
    whole kernel: use it with a block method (LOBPCG) that multiplies many
    vectors at once.
    """

    def __init__(self, kernel_fn: Callable, x: torch.Tensor, block_size: int, dtype, device) -> None:
        super().__init__(x.shape[0], dtype, device)
        self.kernel_fn = kernel_fn
        self.x = x
        self.block_size = block_size

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(V)
        for a, b in _blocks(self.shape[0], self.block_size):
            out[a:b] = _call_kernel(self.kernel_fn, self.x[a:b], self.x, (b - a, self.shape[0])) @ V
        return out

    def _describe(self) -> str:
        return f"row blocks of {self.block_size} recomputed per product"


def _call_kernel(kernel_fn, xa, xb, shape) -> torch.Tensor:
    Kb = kernel_fn(xa, xb)
    if not isinstance(Kb, torch.Tensor):
        raise TypeError(f"kernel_fn must return a torch.Tensor; got {type(Kb).__name__}.")
    if tuple(Kb.shape) != tuple(shape):
        raise ValueError(
            f"kernel_fn(x[a:b], x[c:d]) must return a matrix of shape {tuple(shape)}; got {tuple(Kb.shape)}."
        )
    return Kb


def _structured_ops(model: nn.Module):
    """The structured plan of :mod:`neuralspec.ntk` for ``model`` (its layers), or ``None`` and why."""
    try:
        from .layers import _structured_plan  # noqa: F401  (the one plan)
        from .ntk import _structured_features  # noqa: F401

        ops, why = _structured_plan(model)
        if ops is not None:
            for op in ops:  # the attributes the structured product uses
                if hasattr(op, "module"):
                    (op.ws, op.bs, op.w_train, op.b_train)
        return ops, why
    except (ImportError, AttributeError, TypeError, ValueError) as err:  # pragma: no cover
        return None, f"the structured plan is unavailable ({err})"


def _rebuildable_deltas(ops, n_outputs: int, max_width: int = 16) -> Dict[int, Tuple[int, object]]:
    r"""Trainable linear ops ``i`` whose gradient factor the matrix-free NTK rebuilds instead of storing.

    ``i`` qualifies when the next ops are one activation whose derivative is a function of its
    output (``ActivationRule.derivative_from_output``) and a trainable linear op ``j`` with
    ``pre == 1`` and ``n_outputs * out_j <= max_width``: then
    :math:`\delta_i = (\delta_j W_j s_j) \odot \phi'(h_j)` costs little and ``h_j`` is cached anyway.
    Returns ``{i: (j, activation op)}``.
    """
    from .layers import _ActOp, _LinearOp

    out: Dict[int, Tuple[int, object]] = {}
    for i in range(len(ops) - 2):
        op, act, nxt = ops[i], ops[i + 1], ops[i + 2]
        if (isinstance(op, _LinearOp) and op.trainable and isinstance(act, _ActOp)
                and getattr(act.fn, "derivative_from_output", None) is not None
                and isinstance(nxt, _LinearOp) and nxt.trainable and nxt.pre == 1.0
                and n_outputs * nxt.out_features <= max_width and (i + 2) not in out):
            out[i] = (i + 2, act)
    return out


class MatrixFreeNTKOperator(KernelOperator):
    r"""The NTK of a model, multiplied without forming it: :math:`\Theta V = \sum_o J_o (J_o^\top V)`.

    For a block of points :math:`x_c`, ``torch.func.vjp`` of
    :math:`\theta \mapsto f(x_c; \theta)` with cotangent :math:`v_c e_o^\top`
    gives :math:`J_{o}(x_c)^\top v_c`; summed over the chunks this is
    :math:`g_o = J_o^\top v \in \mathbb R^P`. Then ``torch.func.jvp`` with
    tangent :math:`g_o` gives :math:`J_o(x_c)\, g_o`, the rows :math:`c` of
    :math:`\Theta v` (summed over the outputs :math:`o`, the trace convention
    of :func:`~neuralspec.ntk.ntk`). When forward-mode AD is missing for some
    operation, :math:`J g` is taken as the derivative of the linear map
    :math:`w \mapsto J^\top w` (the "double-backward trick").

    Cost per product: about three forward passes over all :math:`N` points;
    memory: the :math:`P`-vector :math:`g`, the :math:`N`-vectors, and one
    chunk's activations.

    **Structured mode.** For the models on which :func:`~neuralspec.ntk.ntk`
    takes its structured path (stacks of linear layers and elementwise
    activations), the same two passes are done with the per-layer factors
    :math:`h_l` (layer inputs) and :math:`\delta_l` (output gradients with
    respect to the pre-activations), because
    :math:`J_{W_l}^\top v = \sum_i v_i\, \delta_l(x_i) h_l(x_i)^\top`:

    .. math::

        M_l = \Delta_l^\top \operatorname{diag}(v) H_l, \qquad
        (\Theta v)_i = \sum_l \delta_l(x_i)^\top \big(M_l h_l(x_i) + \Delta_l^\top v\big)

    (bias and weight scales included). The factors of a chunk are kept
    between products while they fit in ``cache_bytes``; a cached chunk then
    costs :math:`4P` flops per point and product instead of about
    :math:`11P`. The result is the same product (checked against the
    autodiff mode on a few points when the operator is built).

    Parameters
    ----------
    model : nn.Module
    x : (N, \*) tensor, already validated (any per-sample shape the model accepts)
    chunk_size : int, optional
        Points per pass (divided by the number of vectors in a block product).
    mode : {"auto", "structured", "autodiff"}
        ``"auto"``: structured when the model qualifies (and ``x`` is 2-D).
    cache_bytes : int, optional
        Memory for cached factors (structured mode); default 2 GiB. Per point the cache
        stores :attr:`factor_bytes_per_point`: the layers' inputs and gradient factors, except
        the first layer's input (rebuilt from ``x``) and the gradient factor of a layer
        followed by a narrow one when its activation's derivative is a function of its value
        (ReLU, tanh, sigmoid; rebuilt at little cost). On the benchmark network, 12.3 KB
        instead of 18.4 KB per point: all of :math:`N = 100\,000` fit in 1.23 GB.
    outputs : {"trace", "mean"}
        As in :func:`~neuralspec.ntk.ntk`: the sum over the outputs, or that
        divided by their number.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, chunk_size: Optional[int], *,
                 mode: str = "auto", cache_bytes: Optional[int] = None, outputs: str = "trace") -> None:
        from torch.func import functional_call

        self.outputs = _check_operator_outputs(outputs)
        params = trainable_parameters(model)
        dtype, device = model_dtype_device(model)
        super().__init__(x.shape[0], dtype, device)
        self.model = model
        self.x = x
        self.params = {n: p.detach() for n, p in params}
        self.n_params = sum(p.numel() for p in self.params.values())
        with torch.no_grad():
            y = model(x[:1])
        self.n_outputs = int(y.reshape(1, -1).shape[1])
        if chunk_size is None:
            chunk_size = _MF_CHUNK_CUDA if device.type == "cuda" else _MF_CHUNK_CPU
        self.chunk_size = chunk_size

        def f(prm: Dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            out = functional_call(model, prm, (xb,), strict=False)
            return out.reshape(xb.shape[0], -1)

        self._f = f
        self.forward_mode = self._probe_forward_mode()
        if mode not in ("auto", "structured", "autodiff"):
            raise ValueError(f"mode must be 'auto', 'structured' or 'autodiff'; got {mode!r}.")
        if cache_bytes is not None and (isinstance(cache_bytes, bool) or not isinstance(cache_bytes, int)
                                        or cache_bytes < 0):
            raise ValueError(f"cache_bytes must be a non-negative integer or None; got {cache_bytes!r}.")
        self.cache_bytes = _MF_CACHE_BYTES if cache_bytes is None else cache_bytes
        self._cache: Dict[Tuple[int, int], Dict[int, Tuple[torch.Tensor, torch.Tensor]]] = {}
        self._cached_bytes = 0
        self._store: Optional[Dict[int, Tuple[torch.Tensor, torch.Tensor]]] = None
        self._n_cache = 0
        self._ops = None
        # Sums over points of pass 1 go through this hook: the identity here, one
        # all-reduce across processes in neuralspec.distributed.DistributedNTKOperator.
        self._reduce: Callable[[List[torch.Tensor]], None] = lambda tensors: None
        self.mode = "autodiff"
        if mode != "autodiff":
            self._ops, why = _structured_ops(model)
            if self._ops is not None:
                from .layers import _LinearOp

                self._first = min(i for i, op in enumerate(self._ops) if isinstance(op, _LinearOp) and op.trainable)
                self._rebuild = _rebuildable_deltas(self._ops, self.n_outputs)
            if self._ops is not None and x.dim() != 2:
                self._ops, why = None, (f"its inputs are not flat vectors (x of shape {tuple(x.shape)}); "
                                        "the structured product takes (N, d) inputs")
            if self._ops is not None and not self._structured_agrees():
                self._ops, why = None, "the structured product did not match autodiff on a probe"
            if self._ops is not None:
                self.mode = "structured"
            elif mode == "structured":
                raise ValueError(f"mode='structured' does not apply to this {type(model).__name__}: {why}.")

    def _describe(self) -> str:
        extra = ""
        if self.mode == "structured":
            extra = f", factors cached for {self._cached_points()} of {self.shape[0]} points"
        if self.outputs != "trace":
            extra += f", outputs={self.outputs!r}"
        return (f"matrix-free ({self.mode}), P={self.n_params}, O={self.n_outputs}, "
                f"chunks of {self.chunk_size}{extra}")

    # -- structured mode -----------------------------------------------------

    def _cached_points(self) -> int:
        return sum(b - a for a, b in self._cache)

    @property
    def factor_bytes_per_point(self) -> int:
        """Bytes the factor cache stores per point (structured mode; 0 otherwise): each trainable
        linear layer's input and gradient factor, except the ones rebuilt on use (see
        ``_factors``). The cache holds ``min(N, cache_bytes // factor_bytes_per_point)`` points."""
        if self.mode != "structured":
            return 0
        size = torch.empty((), dtype=self.dtype).element_size()
        total = 0
        for i, op in enumerate(self._ops):
            if hasattr(op, "module") and op.trainable:
                total += (op.in_features if i != self._first else 0)
                total += (self.n_outputs * op.out_features if i not in self._rebuild else 0)
        return total * size

    def _first_input(self, a: int, b: int) -> torch.Tensor:
        """The input of the first trainable linear layer on points ``a:b``, from ``x`` through the
        frozen layers before it (not cached: rebuilding it costs little, storing it a row per point)."""
        h = self.x[a:b]
        first = self._first
        for op in self._ops[:first]:
            h = op(h)
        pre = self._ops[first].pre
        return h if pre == 1.0 else pre * h

    def _factors(self, a: int, b: int) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
        r"""Per trainable linear layer ``i``: ``(h_i, delta_i)`` on points ``a:b``, cached within budget.

        The cache is one preallocated ``(n_cache, width)`` tensor per stored factor, filled
        chunk by chunk: cached chunks are views into it, so the cache neither fragments the
        heap nor outgrows ``cache_bytes``. Two factors are rebuilt on each use instead of
        stored: the first layer's input, from ``x`` through the frozen layers before it
        (``_first_input``), and the gradient factor of a layer followed by an activation
        whose derivative is a function of its value and by a narrow layer
        (``_rebuildable_deltas``; e.g. the last hidden layer of a ReLU net), from that
        layer's factors at :math:`2\,O\,\text{out}\,\text{in}` flops per point.
        """
        key = (a, b)
        if key in self._cache:
            return self._complete(a, b, self._cache[key])
        from .ntk import _structured_features

        with torch.no_grad():
            feats, _ = _structured_features(self._ops, self.x[a:b])
        first, rebuild = self._first, self._rebuild
        if self._store is None:  # first chunk: size the cache
            n_cache = min(self.shape[0], self.cache_bytes // max(1, self.factor_bytes_per_point))
            if n_cache < self.shape[0]:  # whole chunks only (chunks start at multiples of chunk_size)
                n_cache -= n_cache % self.chunk_size
            self._store = {i: (torch.empty(n_cache, h.shape[1], dtype=h.dtype, device=h.device)
                               if i != first else None,
                               torch.empty(n_cache, d.shape[1], dtype=d.dtype, device=d.device)
                               if i not in rebuild else None)
                           for i, (h, d) in feats.items()} if n_cache > 0 else {}
            self._n_cache = n_cache
        if b <= self._n_cache:
            cached = {}
            for i, (h, d) in feats.items():
                H, D = self._store[i]
                if H is not None:
                    H[a:b].copy_(h)
                    self._cached_bytes += h.numel() * h.element_size()
                if D is not None:
                    D[a:b].copy_(d)
                    self._cached_bytes += d.numel() * d.element_size()
                cached[i] = (H[a:b] if H is not None else None, D[a:b] if D is not None else None)
            self._cache[key] = cached
        return feats

    def _complete(self, a: int, b: int, cached) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
        """The factors of a cached chunk, with the ones not stored rebuilt (see ``_factors``)."""
        out = dict(cached)
        first = self._first
        out[first] = (self._first_input(a, b), cached[first][1])
        for i in sorted(self._rebuild, reverse=True):  # later layers first: a rebuilt delta may feed one
            nxt, act = self._rebuild[i]
            op = self._ops[nxt]
            h_next, d_next = out[nxt]
            n = h_next.shape[0]
            g = torch.matmul(d_next.reshape(n, self.n_outputs, -1), op.module.weight.detach())
            if op.ws != 1.0:
                g = g * op.ws
            g = g * act.fn.derivative_from_output(h_next).reshape(n, 1, -1)
            out[i] = (out[i][0], g.reshape(n, -1))
        return out

    def _structured_matmat(self, V: torch.Tensor, blocks) -> torch.Tensor:
        n, b = V.shape
        M: Dict[int, torch.Tensor] = {}
        mb: Dict[int, torch.Tensor] = {}
        # One GEMM per vector and layer on a whole chunk (a few MB of output, a long inner
        # dimension: faster than one batched GEMM over all vectors, measured 135-144 against
        # 115-129 GFLOP/s); temporaries of (points x width) are bounded by slicing each chunk.
        widest = max(max(d.shape[1], h.shape[1]) for h, d in self._factors(*blocks[0]).values()) if blocks else 1
        step = max(64, _MF_TEMP_ELEMENTS // max(1, widest))

        def slices(nc):
            return [(s, min(nc, s + step)) for s in range(0, nc, step)]

        # pass 1: M_i[j] = sum_points (delta_i v_j) h_i^T and m_i = sum_points delta_i v, per vector j
        for a, c in blocks:
            for i, (h, d) in self._factors(a, c).items():
                op = self._ops[i]
                for s, e in slices(c - a):
                    Vc, hs, ds = V[a + s:a + e], h[s:e], d[s:e]
                    if op.w_train:
                        if i not in M:
                            M[i] = torch.zeros(b, ds.shape[1], hs.shape[1], dtype=V.dtype, device=V.device)
                        if ds.shape[1] * b <= _MF_NARROW:  # a narrow layer (the output): one GEMM
                            dv = (ds[:, None, :] * Vc[:, :, None]).reshape(e - s, -1)
                            M[i].view(-1, hs.shape[1]).addmm_(dv.T, hs)
                        else:
                            dT = ds.T.contiguous()
                            for j in range(b):
                                M[i][j].addmm_(dT, hs * Vc[:, j:j + 1])
                    if op.b_train:
                        if i not in mb:
                            mb[i] = torch.zeros(ds.shape[1], b, dtype=V.dtype, device=V.device)
                        mb[i].addmm_(ds.T, Vc)  # (A, b)
        self._reduce([M[i] for i in sorted(M)] + [mb[i] for i in sorted(mb)])
        # pass 2: u_j = sum_i ws^2 <delta_i, M_i[j] h_i> + bs^2 <delta_i, m_i[:, j]>
        out = torch.zeros_like(V)
        for a, c in blocks:
            for i, (h, d) in self._factors(a, c).items():
                op = self._ops[i]
                for s, e in slices(c - a):
                    acc, hs, ds = out[a + s:a + e], h[s:e], d[s:e]
                    if op.w_train:
                        if ds.shape[1] * b <= _MF_NARROW:
                            hm = (hs @ M[i].view(-1, hs.shape[1]).T).view(e - s, b, -1)
                            acc.add_((hm * ds[:, None, :]).sum(-1), alpha=op.ws ** 2)
                        else:
                            for j in range(b):
                                acc[:, j].add_((hs @ M[i][j].T).mul_(ds).sum(1), alpha=op.ws ** 2)
                    if op.b_train:
                        acc.add_(ds @ mb[i], alpha=op.bs ** 2)
        return out

    def columns(self, z: torch.Tensor) -> torch.Tensor:
        r"""The cross kernel :math:`\Theta(X, Z)` of the operator's points and ``m`` points ``z``, ``(N, m)``.

        Structured mode: one GEMM per factor and layer on each chunk of cached factors,
        :math:`2 N m \sum_l (\text{in}_l + \text{out}_l)` flops, far less per column than a
        product (:math:`4P` flops per point). Otherwise :func:`~neuralspec.ntk.ntk`.
        """
        from .ntk import _structured_block, _structured_features, ntk

        z = z.to(device=self.device, dtype=self.dtype)
        if self.mode != "structured":
            return ntk(self.model, self.x, z, method="jacobian", progress=False, outputs=self.outputs)
        check_kernel_memory(self.shape[0], z.shape[0], self.dtype, self.device, "kernel_operator")
        with torch.no_grad():
            Fz, _ = _structured_features(self._ops, z)
        out = torch.empty(self.shape[0], z.shape[0], dtype=self.dtype, device=self.device)
        for a, c in _blocks(self.shape[0], self.chunk_size):
            out[a:c] = _structured_block(self._ops, self._factors(a, c), Fz, split=False)["ntk"]
        if self.outputs == "mean" and self.n_outputs != 1:
            out.div_(self.n_outputs)
        return out

    def _structured_agrees(self) -> bool:
        """Structured and autodiff products agree on a few points (guards the private plan)."""
        k = min(self.shape[0], 24)
        sub = MatrixFreeNTKOperator.__new__(MatrixFreeNTKOperator)
        sub.__dict__.update(self.__dict__)
        sub.x, sub.shape, sub._cache, sub._cached_bytes = self.x[:k], (k, k), {}, 0
        sub._store, sub._n_cache = None, 0
        g = torch.Generator().manual_seed(0)
        v = torch.randn(k, 2, generator=g, dtype=torch.float64).to(self.dtype).to(self.device)
        blocks = _blocks(k, k)
        try:
            u_s = sub._structured_matmat(v, blocks)
        except Exception:  # the private structured plan changed shape: do not use it
            return False
        u_a = sub._autodiff_matmat(v)
        tol = 1e3 * torch.finfo(self.dtype).eps * float(u_a.abs().max()) + 1e-30
        return bool((u_s - u_a).abs().max() <= tol)

    def _jvp(self, xc: torch.Tensor, G: Dict[str, torch.Tensor], batched: bool) -> torch.Tensor:
        """``J(xc) g`` for each tangent in ``G`` (leading axis when ``batched``): ``(m, nc, O)``."""
        from torch.func import jvp, vjp, vmap

        f = self._f
        params = self.params

        def push_forward(t):
            return jvp(lambda p: f(p, xc), (params,), (t,))[1]

        def push_double_backward(t):
            # J t as the vjp of the linear map w -> J^T w (w: output cotangent).
            _, vjp_fn = vjp(lambda p: f(p, xc), params)
            w0 = torch.zeros(xc.shape[0], self.n_outputs, dtype=self.dtype, device=self.device)
            _, back = vjp(lambda w: vjp_fn(w)[0], w0)
            return back(t)[0]

        push = push_forward if self.forward_mode else push_double_backward
        if batched:
            return vmap(push)(G)
        return push({k: t[0] for k, t in G.items()})[None]

    def _probe_forward_mode(self) -> bool:
        """Whether forward-mode AD (``torch.func.jvp``) runs through this model."""
        from torch.func import jvp

        xc = self.x[:1]
        t = {k: torch.zeros_like(p) for k, p in self.params.items()}
        try:
            jvp(lambda p: self._f(p, xc), (self.params,), (t,))
        except (NotImplementedError, RuntimeError) as err:  # an op without a forward-mode formula
            import logging

            logging.getLogger(__name__).info(
                "forward-mode AD unavailable for %s (%s); using the double-backward trick",
                type(self.model).__name__, err)
            return False
        return True

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        if self.mode == "structured":
            # fixed chunks (the cache is keyed by them); vectors in groups of _MF_GROUP, each group
            # one pass-1 / pass-2 sweep (their per-layer sums take _MF_GROUP * P numbers)
            out = torch.empty_like(V)
            blocks = _blocks(V.shape[0], self.chunk_size)
            for j in range(0, V.shape[1], _MF_GROUP):
                out[:, j:j + _MF_GROUP] = self._structured_matmat(V[:, j:j + _MF_GROUP], blocks)
        else:
            out = self._autodiff_matmat(V)
        if self.outputs == "mean" and self.n_outputs != 1:
            out.div_(self.n_outputs)
        return out

    def _autodiff_matmat(self, V: torch.Tensor) -> torch.Tensor:
        from torch.func import vjp, vmap

        n, b = V.shape
        O = self.n_outputs
        m = b * O  # one (vector, output) pair per cotangent
        chunk = max(1, self.chunk_size // m)
        eye = torch.eye(O, dtype=self.dtype, device=self.device)
        # Pass 1: g_{j,o} = J_o^T v_j, accumulated over chunks of points.
        G = {k: torch.zeros((m,) + p.shape, dtype=self.dtype, device=self.device) for k, p in self.params.items()}
        for a, c in _blocks(n, chunk):
            xc = self.x[a:c]
            _, vjp_fn = vjp(lambda p: self._f(p, xc), self.params)
            # cotangents[j*O + o] = V[a:c, j] e_o^T, shape (m, nc, O)
            cot = (V[a:c].T[:, None, :, None] * eye[None, :, None, :]).reshape(m, c - a, O)
            g = vmap(vjp_fn)(cot)[0] if m > 1 else {k: t[None] for k, t in vjp_fn(cot[0])[0].items()}
            for k in G:
                G[k] += g[k]
        self._reduce([G[k] for k in sorted(G)])
        # Pass 2: (K V)_j = sum_o J_o g_{j,o}.
        out = torch.empty_like(V)
        for a, c in _blocks(n, chunk):
            u = self._jvp(self.x[a:c], G, batched=m > 1)  # (m, nc, O)
            u = u.reshape(b, O, c - a, O).diagonal(dim1=1, dim2=3).sum(-1)  # (b, nc)
            out[a:c] = u.T
        return out


# ----------------------------------------------------------------------------
# constructors
# ----------------------------------------------------------------------------

def _default_block(n: int, dtype: torch.dtype) -> int:
    itemsize = torch.empty((), dtype=dtype).element_size()
    return int(max(1, min(n, _BLOCK_BYTES // max(1, n * itemsize))))


def kernel_operator(
    kernel_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x: ArrayLike,
    *,
    block_size: Optional[int] = None,
    cache: bool = True,
    progress: Optional[bool] = None,
) -> KernelOperator:
    r"""A symmetric kernel matrix :math:`K_{ij} = k(x_i, x_j)` as an operator, built block by block.

    With ``cache=True`` the upper row blocks :math:`k(x_I, x_{J \ge I})` are
    computed once into a single ``(N, N)`` buffer and mirrored, so the peak
    memory is the kernel plus one block (never two copies of the matrix),
    and a product :math:`K V` is then one matrix multiply. With
    ``cache=False`` nothing of size :math:`N \times N` is held: every product
    recomputes the row blocks (memory ``block_size * N``; each product costs
    the whole kernel, so prefer ``method="lobpcg"``, which multiplies a
    block of vectors at a time).

    Parameters
    ----------
    kernel_fn : callable
        ``kernel_fn(xa, xb)`` returns the ``(len(xa), len(xb))`` tensor
        :math:`k(x_a, x_b)`; e.g. ``lambda a, b: ns.ntk(model, a, b)``.
    x : (N, \*) tensor or array
        The points, first axis over them (``(N, d)`` vectors, or images...).
        An array is converted to float64 (a tensor is kept as is).
    block_size : int, optional
        Rows per block; default such that one block is about 128 MiB.
    cache : bool
        Hold the kernel (default) or recompute its blocks on every product.
    progress : bool, optional
        A tqdm bar over the blocks while the kernel is built; default when
        ``N >= 20000``.

    Returns
    -------
    KernelOperator
    """
    if not callable(kernel_fn):
        raise TypeError(f"kernel_fn must be callable as kernel_fn(xa, xb); got {type(kernel_fn).__name__}.")
    check_positive_int(block_size, "block_size", allow_none=True)
    xt = as_inputs(x, "x", dtype=None if isinstance(x, torch.Tensor) else torch.float64, flat=False)
    n = xt.shape[0]
    K0 = _call_kernel(kernel_fn, xt[:1], xt[:1], (1, 1))
    dtype, device = K0.dtype, K0.device
    if not K0.is_floating_point():
        raise TypeError(f"kernel_fn must return a floating-point tensor; got {K0.dtype}.")
    bs = block_size or _default_block(n, dtype)
    if not cache:
        return BlockKernelOperator(kernel_fn, xt, bs, dtype, device)
    check_kernel_memory(n, n, dtype, device, "kernel_operator")
    K = torch.empty(n, n, dtype=dtype, device=device)
    blocks = _blocks(n, bs)
    show = (n >= _PROGRESS_N) if progress is None else bool(progress)
    bar = _bar(show, len(blocks), "kernel blocks", "block")
    scale, asym = 0.0, 0.0
    try:
        for a, b in blocks:
            Kb = _call_kernel(kernel_fn, xt[a:b], xt[a:], (b - a, n - a))
            # Checks on the block only: nothing of size N x N besides K itself.
            check_finite(Kb, "the kernel from kernel_fn")
            scale = max(scale, float(Kb.abs().max()))
            D = Kb[:, :b - a]
            # The diagonal block comes from one call: check that it is symmetric (the
            # mirrored off-diagonal blocks are by construction), then make it exactly so.
            asym = max(asym, float((D - D.T).abs().max()))
            K[a:b, a:b] = (D + D.T) / 2
            K[a:b, b:] = Kb[:, b - a:]
            K[b:, a:b] = Kb[:, b - a:].T
            del Kb, D
            bar.update(1)
    finally:
        bar.close()
    rtol = 1e3 * torch.finfo(dtype).eps
    if asym > rtol * scale:
        raise ValueError(
            f"kernel_fn is not symmetric: max |k(x_i, x_j) - k(x_j, x_i)| = {asym:.3g}, "
            f"{asym / max(scale, 1e-300):.3g} relative to max |K| (tolerance {rtol:.1g}); "
            "expected a symmetric kernel."
        )
    return DenseKernelOperator(K, check=False)


def _check_operator_outputs(outputs) -> str:
    """``"trace"`` or ``"mean"``; ``"full"`` is an (N, N, O, O) array, not an N x N operator."""
    from ._validation import OUTPUTS, check_outputs

    check_outputs(outputs, OUTPUTS)
    if outputs == "full":
        raise ValueError(
            "outputs='full' is not available for an NTK operator: the full NTK is an (N, N, O, O) "
            "array of output-output blocks, not an N x N kernel. Use outputs='trace' or 'mean' here, "
            "and ns.ntk(model, x, outputs='full') for the blocks."
        )
    return outputs


def ntk_operator(
    model: nn.Module,
    x: ArrayLike,
    *,
    block_size: Optional[int] = None,
    matrix_free: bool = False,
    method: str = "auto",
    cache_bytes: Optional[int] = None,
    progress: Optional[bool] = None,
    outputs: str = "trace",
    process_group=None,
) -> KernelOperator:
    r"""The empirical NTK :math:`\Theta(x, x)` of ``model`` as an operator for :func:`top_eigenpairs`.

    * ``matrix_free=False`` (default): the kernel is computed once, in row
      strips :math:`\Theta(x_I, x_{J \ge I})` from :func:`~neuralspec.ntk.ntk`
      mirrored in place (:func:`kernel_operator`), and held: :math:`N^2`
      numbers (1.6 GB at :math:`N = 20000` in float32) plus one strip at a
      time while it is built; each product is one matrix multiply.
    * ``matrix_free=True``: no kernel at all;
      :math:`\Theta v = \sum_o J_o (J_o^\top v)` with one reverse-mode and one
      forward-mode pass over chunks of ``block_size`` points
      (:class:`MatrixFreeNTKOperator`). Memory :math:`O(N + P)`; each
      product costs about three forward passes over all the points. For
      stacks of linear layers and activations the passes use the per-layer
      factors of the structured NTK, cached up to ``cache_bytes``
      (about 2.5 times fewer flops per product for the cached points).

    Parameters
    ----------
    model : nn.Module
        With at least one trainable parameter; the operator uses the model's
        dtype and device (the GPU when the model is there).
    x : (N, \*) tensor or array
        Inputs of any shape the model accepts, first axis over the samples
        (checked as in :func:`~neuralspec.ntk.ntk`).
    block_size : int, optional
        Rows per kernel strip (held kernel; default about 128 MiB a strip) or
        points per chunk (matrix-free; default 4096 on CPU, 65536 on CUDA).
    matrix_free : bool
    method : str
        Held kernel: passed to :func:`~neuralspec.ntk.ntk`. Matrix-free:
        ``"auto"`` (structured when the model qualifies), ``"structured"``,
        or ``"jacobian"`` / ``"ntvp"`` for the generic autodiff passes.
    cache_bytes : int, optional
        Matrix-free, structured: memory for cached layer factors (default
        2 GiB; ``0`` recomputes them in every pass; see :class:`MatrixFreeNTKOperator`).
    progress : bool, optional
        Progress bar over the strips while the held kernel is built; default
        for ``N >= 20000``.
    outputs : {"trace", "mean"}
        For a model with several outputs, as in :func:`~neuralspec.ntk.ntk`.
        ``"full"`` raises ``ValueError``: its blocks form an
        ``(N, N, O, O)`` array, not an ``N x N`` operator.
    process_group : torch.distributed ProcessGroup, optional
        Matrix-free only: ``x`` is this process's slice of the points, and the
        operator is the NTK of all processes' points, one all-reduce of a
        :math:`P`-vector per product (:mod:`neuralspec.distributed`).

    Returns
    -------
    KernelOperator
    """
    if process_group is not None and not matrix_free:
        raise ValueError("process_group needs matrix_free=True: a held kernel is not split across processes.")
    trainable_parameters(model)
    check_positive_int(block_size, "block_size", allow_none=True)
    _check_operator_outputs(outputs)
    check_independent_samples(model)
    xt = as_inputs(x, "x", model=model)
    from .ntk import METHODS, ntk

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    if matrix_free:
        mode = method if method in ("auto", "structured") else "autodiff"
        op = MatrixFreeNTKOperator(model, xt, block_size, mode=mode, cache_bytes=cache_bytes,
                                   outputs=outputs)
        if process_group is not None:
            from .distributed import DistributedNTKOperator

            return DistributedNTKOperator(op, process_group)
        return op

    def kernel_fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return ntk(model, a, b, method=method, progress=False, outputs=outputs)

    return kernel_operator(kernel_fn, xt, block_size=block_size, progress=progress)


def ntk_matvec(model: nn.Module, x: ArrayLike, v: ArrayLike, *, chunk_size: Optional[int] = None,
               outputs: str = "trace"):
    r"""The NTK times vector(s), matrix-free: :math:`\Theta(x, x)\, v = \sum_o J_o (J_o^\top v)`.

    Same as ``ntk(model, x) @ v`` without the :math:`N \times N` kernel; see
    :class:`MatrixFreeNTKOperator`.

    Parameters
    ----------
    model : nn.Module
    x : (N, \*) tensor or array
        Inputs of any shape the model accepts, first axis over the samples.
    v : (N,) or (N, b) tensor or array
    chunk_size : int, optional
        Points per reverse/forward pass.
    outputs : {"trace", "mean"}
        As in :func:`ntk_operator`.

    Returns
    -------
    torch.Tensor or numpy.ndarray
        Same shape and kind as ``v``, in the model's dtype.
    """
    op = ntk_operator(model, x, block_size=chunk_size, matrix_free=True, outputs=outputs)
    if isinstance(v, torch.Tensor):
        check_finite(v, "v")
    elif isinstance(v, np.ndarray) and np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
        raise ValueError("v contains non-finite values; expected only finite numbers.")
    return op.matmat(v)


# ----------------------------------------------------------------------------
# top-k eigenpairs
# ----------------------------------------------------------------------------

class _ScipyOperatorWrapper(KernelOperator):
    """A scipy LinearOperator seen as a KernelOperator (products on the CPU)."""

    def __init__(self, A) -> None:
        dt = np.dtype(A.dtype)
        if not np.issubdtype(dt, np.floating):
            raise TypeError(f"the LinearOperator must be real floating point; got dtype {dt}.")
        super().__init__(A.shape[0], torch.from_numpy(np.empty(0, dtype=dt)).dtype, torch.device("cpu"))
        self.A = A

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        out = np.asarray(self.A.matmat(V.cpu().numpy()))
        return torch.from_numpy(np.ascontiguousarray(out.reshape(V.shape))).to(self.dtype)


def _bar(enabled: bool, total, desc: str, unit: str):
    from .utils import progress_bar

    return progress_bar(total, desc, unit, enabled)


def _as_operator(K_or_operator, check: bool) -> Tuple[KernelOperator, str]:
    """The operator and the kind of the input ('torch', 'numpy', 'scipy', 'operator')."""
    from scipy.sparse.linalg import LinearOperator

    if isinstance(K_or_operator, KernelOperator):
        return K_or_operator, "operator"
    if isinstance(K_or_operator, np.ndarray):
        if not np.issubdtype(K_or_operator.dtype, np.floating):
            raise TypeError(f"K must be a floating-point matrix; got dtype {K_or_operator.dtype}.")
        K = torch.from_numpy(np.ascontiguousarray(K_or_operator))
        return DenseKernelOperator(K, check=check), "numpy"
    if isinstance(K_or_operator, torch.Tensor):
        return DenseKernelOperator(K_or_operator.detach(), check=check), "torch"
    if isinstance(K_or_operator, LinearOperator):
        shape = K_or_operator.shape
        if len(shape) != 2 or shape[0] != shape[1]:
            raise ValueError(f"the LinearOperator must be square (N, N); got shape {tuple(shape)}.")
        return _ScipyOperatorWrapper(K_or_operator), "scipy"
    raise TypeError(
        "K_or_operator must be a symmetric (N, N) torch.Tensor or numpy.ndarray, a "
        "scipy.sparse.linalg.LinearOperator, or a KernelOperator (kernel_operator, ntk_operator); "
        f"got {type(K_or_operator).__name__}."
    )


def _probe_symmetry(op: KernelOperator, seed: int) -> None:
    """``u^T (K v) == v^T (K u)`` for random ``u, v``: a cheap symmetry check of an operator."""
    g = torch.Generator().manual_seed(seed + 1)
    U = torch.randn(op.shape[0], 2, generator=g, dtype=torch.float64).to(op.dtype).to(op.device)
    KU = op._matmat(U)
    check_finite(KU, "K @ v", " (a product with the operator)")
    a = float(U[:, 0].double() @ KU[:, 1].double())
    b = float(U[:, 1].double() @ KU[:, 0].double())
    scale = float(KU.double().norm() * U.double().norm())
    tol = 1e3 * torch.finfo(op.dtype).eps * math.sqrt(op.shape[0])
    if abs(a - b) > tol * max(scale, 1e-300):
        raise ValueError(
            f"the operator is not symmetric: u.(K v) = {a:.6g} but v.(K u) = {b:.6g} for random u, v. "
            "Top-k eigenpairs need a symmetric kernel."
        )


class _Counted:
    """Products through the operator, counted on a progress bar and checked finite."""

    def __init__(self, op: KernelOperator, bar) -> None:
        self.op, self.bar = op, bar

    def __call__(self, V: np.ndarray) -> np.ndarray:
        Vt = torch.from_numpy(np.ascontiguousarray(V)).reshape(self.op.shape[0], -1)
        out = self.op._matmat(Vt.to(device=self.op.device, dtype=self.op.dtype))
        self.op.n_products += Vt.shape[1]
        check_finite(out, "K @ v", " (a product with the operator)")
        self.bar.update(Vt.shape[1])
        return out.detach().cpu().numpy().reshape(V.shape)


def _lobpcg(f: "_Counted", op: KernelOperator, n: int, k: int, tol: Optional[float],
            maxiter: Optional[int], rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """SciPy's LOBPCG on a block of ``k + max(5, k // 5)`` vectors, in float64, relative tolerance.

    The iteration runs in float64 whatever the kernel's dtype (the Rayleigh-Ritz
    steps of LOBPCG lose accuracy in float32); products are done in the
    operator's dtype. SciPy's tolerance is absolute, so the operator is scaled
    by an estimate of its largest eigenvalue (from the first block product).
    """
    import warnings

    from scipy.sparse.linalg import LinearOperator, lobpcg

    op_np = torch.empty((), dtype=op.dtype).numpy().dtype
    m = min(n, k + max(5, k // 5))
    X = rng.standard_normal((n, m))
    KX = f(X.astype(op_np)).astype(np.float64)
    scale = float(np.linalg.norm(KX, axis=0).max() / np.linalg.norm(X, axis=0).max())
    if not scale > 0:
        raise ValueError("the kernel maps random vectors to zero; it has no positive eigenvalues.")

    def g(V):
        return f(np.asarray(V).astype(op_np)).astype(np.float64) / scale

    A = LinearOperator((n, n), matvec=g, matmat=g, rmatvec=g, rmatmat=g, dtype=np.float64)
    if tol is None:
        tol = 1e-5 if op_np == np.float32 else 1e-12
    maxiter = maxiter or 500
    # SciPy stops only when all m block vectors converge; we need the top k. Run it in
    # rounds and check the top-k residuals ourselves (one block product per round).
    done, rounds = 0, 25
    while True:
        it = min(rounds, maxiter - done)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            evals, evecs = lobpcg(A, X, largest=True, tol=tol, maxiter=it)
        done += it
        order = np.argsort(evals)[::-1]
        evals, evecs = evals[order], evecs[:, order]
        top = evecs[:, :k]
        res = np.linalg.norm(g(top) - top * evals[:k], axis=0).max()
        if res <= tol or done >= maxiter:
            break
        X = evecs
    if res > tol:
        warnings.warn(f"LOBPCG did not reach tol={tol:g} (relative residual {res:.2g}) in {maxiter} "
                      "iterations; the eigenpairs may be inaccurate. Raise maxiter, or use "
                      "method='lanczos'.", RuntimeWarning, stacklevel=3)
    return evals[:k] * scale, evecs[:, :k]


def top_eigenpairs(
    K_or_operator,
    k: int,
    *,
    method: str = "lanczos",
    tol: Optional[float] = None,
    maxiter: Optional[int] = None,
    ncv: Optional[int] = None,
    seed: int = 0,
    check: bool = True,
    progress: Optional[bool] = None,
    return_info: bool = False,
    landmarks: Optional[int] = None,
    refine: int = 3,
    oversample: Optional[int] = None,
    landmark_method: str = "auto",
):
    r"""The ``k`` largest eigenpairs of a symmetric (PSD) kernel, by Lanczos, LOBPCG or Nyström.

    .. math::

        K u_i = \lambda_i u_i, \qquad \lambda_1 \ge \dots \ge \lambda_k, \qquad
        u_i^\top u_j = \delta_{ij},

    using only products :math:`K V`, so the kernel may be an operator that
    is never formed (:func:`ntk_operator` with ``matrix_free=True``).

    Parameters
    ----------
    K_or_operator : (N, N) tensor or array, scipy LinearOperator, or KernelOperator
        A dense matrix is checked square, finite and symmetric (block by
        block, without a copy); an operator is probed for symmetry with two
        random vectors (``check=False`` skips both).
    k : int
        Number of eigenpairs, ``1 <= k < N``.
    method : {"lanczos", "lobpcg", "nystrom"}
        ``"lanczos"``: ``scipy.sparse.linalg.eigsh`` (ARPACK), one product
        at a time, the fewest products. ``"lobpcg"``:
        ``scipy.sparse.linalg.lobpcg`` on a block of ``k + max(5, k // 5)``
        vectors, block products that run at BLAS speed for a held kernel.
        ``"nystrom"``: a Nyström subspace from one column block of
        ``landmarks`` columns (k-means landmarks when the operator has its
        inputs), one Rayleigh–Ritz step with an exact block product, up to
        ``refine`` refinement rounds, each pair certified by its residual
        (:mod:`neuralspec.nystrom`); for a PSD kernel with a decaying
        spectrum, far fewer exact products than Lanczos. ``tol``
        (default ``1e-3``) bounds the relative residuals
        :math:`\|K u - \lambda u\| / \lambda`; ``info["residuals"]`` reports them.
    tol : float, optional
        Relative residual tolerance: :math:`\|K u - \lambda u\| \le
        \text{tol}\,|\lambda|` (Lanczos), :math:`\le \text{tol}\,\lambda_{\max}`
        (LOBPCG). Default in float32 ``1e-6`` (Lanczos) or ``1e-5`` (LOBPCG),
        in float64 machine precision (Lanczos) or ``1e-12`` (LOBPCG).
    maxiter : int, optional
        Maximum restarts (Lanczos) or iterations (LOBPCG, default 500).
    ncv : int, optional
        Lanczos basis size; default ``min(N, max(2k + 1, 20))`` (SciPy's).
    seed : int
        Seed of the random starting vector(s), for reproducible results.
    check : bool
        Validate the input (see above).
    progress : bool, optional
        A tqdm bar counting products; default for ``N >= 20000``, or
        ``N >= 2000`` with a matrix-free NTK.
    return_info : bool
        Also return a dict with ``n_products``, ``seconds`` and ``method``
        (Nyström also: ``landmarks``, ``column_blocks``, ``exact_products``,
        ``refine_rounds``, ``residuals``, ``converged``).
    landmarks : int, optional
        Nyström only: landmark columns, ``k < landmarks <= N``; default
        ``min(N, max(1000, 20 k))``.
    refine : int
        Nyström only: maximum refinement rounds after the first
        Rayleigh–Ritz step (each adds the residual block; ``k + oversample``
        products).
    oversample : int, optional
        Nyström only: extra vectors in the block beyond ``k``; default 0.
        Each costs one exact product per round.
    landmark_method : {"auto", "kmeans", "uniform"}
        Nyström only: k-means centres of the inputs (an operator from
        :func:`ntk_operator` or :func:`kernel_operator`; ``"auto"`` picks it
        there) or a uniform sample of the points (any kernel).

    Returns
    -------
    eigenvalues : (k,)
        Descending.
    eigenvectors : (N, k)
        Orthonormal columns, each signed so that its largest-magnitude entry is
        positive. Torch tensors on the operator's device and in its dtype, or
        NumPy arrays for a NumPy / SciPy input.
    info : dict, only with ``return_info=True``
    """
    if method not in TOPK_METHODS:
        raise ValueError(f"method must be one of {TOPK_METHODS}; got {method!r}.")
    if method != "nystrom" and (landmarks is not None or oversample is not None or landmark_method != "auto"):
        raise ValueError("landmarks, oversample and landmark_method apply to method='nystrom' only; "
                         f"got method={method!r}.")
    op, kind = _as_operator(K_or_operator, check)
    n = op.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not (1 <= k < n):
        raise ValueError(
            f"k must be an integer with 1 <= k < N = {n} (for all {n} eigenpairs use a dense "
            f"solver, neuralspec.eigh); got {k!r}."
        )
    k = int(k)
    if tol is not None and not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a non-negative number or None; got {tol!r}.")
    check_positive_int(maxiter, "maxiter", allow_none=True)
    check_positive_int(ncv, "ncv", allow_none=True)
    if ncv is not None and not (k < ncv <= n):
        raise ValueError(f"ncv must satisfy k < ncv <= N (k = {k}, N = {n}); got {ncv}.")
    if check and kind in ("scipy", "operator") and not isinstance(op, DenseKernelOperator):
        _probe_symmetry(op, seed)

    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    np_dtype = torch.empty((), dtype=op.dtype).numpy().dtype
    if progress is None:
        show = n >= (_PROGRESS_N_MF if isinstance(op, MatrixFreeNTKOperator) else _PROGRESS_N)
    else:
        show = bool(progress)
    bar = _bar(show, None, f"top-{k} eigenpairs ({method})", "Kv")
    f = _Counted(op, bar)
    A = LinearOperator((n, n), matvec=f, matmat=f, rmatvec=f, rmatmat=f, dtype=np_dtype)
    rng = np.random.default_rng(seed)
    start_products = op.n_products
    t0 = time.perf_counter()
    extra: Dict = {}
    try:
        if method == "nystrom":
            from .nystrom import nystrom_eigenpairs

            evals, evecs, extra = nystrom_eigenpairs(op, k, landmarks=landmarks, refine=refine,
                                                     oversample=oversample, landmark_method=landmark_method,
                                                     tol=1e-3 if tol is None else tol, seed=seed, bar=bar)
            if not extra["converged"]:
                import warnings

                warnings.warn(f"Nyström + {refine} refinement rounds reached relative residuals up to "
                              f"{extra['residuals'].max():.2g} > tol; raise landmarks or refine.",
                              RuntimeWarning, stacklevel=2)
        elif method == "lanczos":
            if ncv is None:
                ncv = min(n, max(2 * k + 1, 20))
            if tol is None:
                tol = 1e-6 if np_dtype == np.float32 else 0.0
            v0 = rng.standard_normal(n).astype(np_dtype)
            evals, evecs = eigsh(A, k=k, which="LA", tol=tol, maxiter=maxiter, ncv=ncv, v0=v0)
        else:
            evals, evecs = _lobpcg(f, op, n, k, tol, maxiter, rng)
    except ArpackNoConvergence as err:
        raise RuntimeError(
            f"Lanczos (ARPACK) did not converge: {len(err.eigenvalues)} of {k} eigenpairs after "
            f"{op.n_products - start_products} products. Raise maxiter or ncv, or loosen tol."
        ) from None
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    order = np.argsort(evals)[::-1]
    evals = np.ascontiguousarray(evals[order])
    evecs = np.ascontiguousarray(evecs[:, order])
    # Deterministic signs: the largest-magnitude entry of each eigenvector is positive.
    idx = np.abs(evecs).argmax(axis=0)
    signs = np.sign(evecs[idx, np.arange(evecs.shape[1])])
    signs[signs == 0] = 1
    evecs = evecs * signs
    info = {"method": method, "n_products": op.n_products - start_products, "seconds": seconds, **extra}
    if "residuals" in info:
        info["residuals"] = np.asarray(info["residuals"])[order]
    if kind in ("numpy", "scipy"):
        res = (evals.astype(np_dtype), evecs.astype(np_dtype))
    else:
        res = (torch.from_numpy(evals).to(device=op.device, dtype=op.dtype),
               torch.from_numpy(evecs).to(device=op.device, dtype=op.dtype))
    return res + (info,) if return_info else res
