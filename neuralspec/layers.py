r"""Layer rules: one description of a network, many kernels.

A supported network is an ``nn.Sequential`` (nested ones included, and
subclasses that keep its ``forward``, such as :class:`~neuralspec.MLP` and
:class:`~neuralspec.RFFMLP`) of

* **linear layers**: ``nn.Linear`` (standard parameterization; PyTorch's
  uniform init unless told otherwise), :class:`~neuralspec.NTKLinear` (NTK
  parameterization, Gaussian init), and the Fourier-feature layer
  :math:`\sin(\pi W x + b)` inside :class:`~neuralspec.LFF` /
  :class:`~neuralspec.RFF` (first layer only);
* **elementwise activations**, each described once by an
  :class:`ActivationRule`: its forward map :math:`\phi`, its derivative
  :math:`\phi'` and its infinite-width kernel map

  .. math::

      (\Sigma_{11}, \Sigma_{12}, \Sigma_{22}) \mapsto
      \Big(\mathbb E[\phi(u)\phi(v)],\ \mathbb E[\phi'(u)\phi'(v)]\Big),
      \qquad (u, v) \sim \mathcal N\Big(0, \begin{pmatrix}\Sigma_{11} & \Sigma_{12}\\
      \Sigma_{12} & \Sigma_{22}\end{pmatrix}\Big);

* modules that are the identity on ``(N, d)`` inputs (``nn.Identity``,
  ``nn.Flatten``, ``nn.Dropout`` in eval mode).

:func:`network_plan` walks a model once and returns its list of layer
rules; the same list feeds the structured empirical NTK
(:func:`~neuralspec.ntk.ntk`, :func:`~neuralspec.ntk.ntk_by_layer`), the
matrix-free NTK operator (:mod:`neuralspec.scale`) and the infinite-width
limit (:func:`~neuralspec.limits.limit_kernels`). Anything else (convolutions,
normalization layers, dropout in train mode, attention, a custom
``forward``) is refused with a ``ValueError`` that names the module.

**Kernel maps.** Closed forms for ``relu``, ``leaky_relu`` (any slope),
``abs``, ``identity`` (all of the form :math:`\alpha u + \beta\,
\mathrm{relu}(u)`, through Cho and Saul's arc-cosine kernels), ``step``,
``erf``, ``sin`` and ``cos``. GELU and ELU: the inner Gaussian (of
:math:`v` given :math:`u`) in closed form, the outer one by composite
Gauss-Legendre. Everything else (``tanh``, ``sigmoid``, ``softplus``,
``silu``, a registered activation without a closed form): two nested
composite Gauss-Legendre rules on panels graded geometrically towards the
activation's kink or transition at 0, which resolves both a wide Gaussian
(variance 20 and more) and a narrow one; measured against nested adaptive
``scipy.integrate.quad`` at variances 0.05 to 25 and correlations up to
0.999 (``tests/test_layers.py``), and at 25 random triples with variances 0.01 to
40 and correlations up to +-0.9999: relative error below 1.4e-9. Plain
Gauss-Hermite is not enough here: a 60 x 60 rule misses GELU's kernel by
2e-3 at variance 12 and correlation -0.92, by 10% at variance 20 and
correlation -0.995, because the activation's curvature lives on a scale
:math:`1/\sqrt{\Sigma}` of the Gaussian variable.

**Cost.** Closed forms cost a few array operations per pair of points; the
1-D quadrature (GELU, ELU) about 200 activation evaluations per distinct
pair; the nested 2-D rule about 25,000. Repeated pairs (a circle grid) are
computed once, and pairs sharing both variances (points of equal norm, e.g. on
a sphere) are interpolated in the angle from 97 evaluations, checked against
direct quadrature: on 60 points of the sphere a depth-2 tanh network takes
under a second instead of about ten. Points of unequal norm pay the full price
(30 points of a 2-D Gaussian cloud, depth 2, tanh: about 8 s).

**Your own activation.** :func:`register_activation` adds a rule for an
``nn.Module`` type: the forward map is the module itself unless given, the
derivative is taken by autograd unless given, and the kernel map is
computed by quadrature unless a closed form is given.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

__all__ = [
    "ActivationRule",
    "LinearRule",
    "ActivationOp",
    "activation_rule",
    "register_activation",
    "unregister_activation",
    "network_plan",
    "ACTIVATION_RULES",
]

_SQRT2 = math.sqrt(2.0)
_SQRT2PI = math.sqrt(2.0 * math.pi)

KernelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


# ----------------------------------------------------------------------------
# Gaussian quadrature
# ----------------------------------------------------------------------------

def _ndtr(z: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(z)


def _npdf(z: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * z * z) / _SQRT2PI


# Standard-normal variables are integrated over [-R, R] (tail mass < 1e-16).
_R = 8.5
# Fixed break points that resolve the Gaussian weight itself.
_FIXED = (-_R, -5.0, -3.0, -1.5, 0.0, 1.5, 3.0, 5.0, _R)
# Break points graded geometrically away from the activation's kink / transition at 0,
# in units of the activation's own scale (_H, in pre-activation units).
_GRADE = (0.0,) + tuple(s * 2.0 ** k for k in range(7) for s in (1.0, -1.0))
_H = 0.5
# Gauss-Legendre nodes per panel.
_Q = 7
_GL_CACHE: Dict[int, Tuple[torch.Tensor, torch.Tensor]] = {}


def _gl(q: int) -> Tuple[torch.Tensor, torch.Tensor]:
    if q not in _GL_CACHE:
        n, w = np.polynomial.legendre.leggauss(q)
        _GL_CACHE[q] = (torch.as_tensor(n, dtype=torch.float64), torch.as_tensor(w, dtype=torch.float64))
    return _GL_CACHE[q]


def _gauss_nodes(t0: torch.Tensor, hs: torch.Tensor,
                 hs2: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Nodes and weights for :math:`\mathbb E[g(t)]`, :math:`t \sim \mathcal N(0, 1)`.

    Composite Gauss-Legendre on :math:`[-R, R]`, with break points at fixed
    places (for the Gaussian) and at :math:`t_0 \pm h_s 2^k` (graded towards
    the point :math:`t_0` where the integrand has its kink or transition,
    of width :math:`h_s`; and a second width ``hs2`` if given). ``t0`` and ``hs``
    are tensors of any (same) shape ``S``; the result has shape ``S + (M,)``;
    the weights include the density.
    """
    fixed = torch.tensor(_FIXED, dtype=torch.float64, device=t0.device)
    grade = torch.tensor(_GRADE, dtype=torch.float64, device=t0.device)
    parts = [fixed.expand(*t0.shape, -1), t0[..., None] + hs[..., None] * grade]
    if hs2 is not None:
        parts.append(t0[..., None] + hs2[..., None] * grade[1:])
    bp = torch.cat(parts, -1)
    bp = bp.clamp(-_R, _R).sort(-1).values
    lo, hi = bp[..., :-1], bp[..., 1:]
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    n, w = _gl(_Q)
    n, w = n.to(t0.device), w.to(t0.device)
    t = (mid[..., None] + half[..., None] * n).flatten(-2)
    wt = (half[..., None] * w).flatten(-2) * torch.exp(-0.5 * t * t) / _SQRT2PI
    return t, wt


def _split_cov(s11, s12, s22):
    s1 = s11.clamp_min(0).sqrt()
    s2 = s22.clamp_min(0).sqrt()
    norm = s1 * s2
    rho = torch.where(norm > 0, s12 / torch.where(norm > 0, norm, torch.ones_like(norm)),
                      torch.zeros_like(s12)).clamp(-1.0, 1.0)
    return s1, s2, rho


def _quad_1d(f: Callable[[torch.Tensor], torch.Tensor], s11: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathbb E[f(u)]`, :math:`u \sim \mathcal N(0, \Sigma_{11})`, elementwise in ``s11``."""
    s1 = s11.clamp_min(0).sqrt()
    safe = torch.where(s1 > 0, s1, torch.ones_like(s1))
    t, w = _gauss_nodes(torch.zeros_like(s1), _H / safe)
    return (f(s1[..., None] * t) * w).sum(-1)


def _outer_widths(s1, s2, rho, kinked: bool):
    r"""Two widths, in the outer variable :math:`a`, of the outer integrand's features at :math:`a = 0`.

    The outer integrand is :math:`\phi(\sigma_1 a)` (feature width :math:`h/\sigma_1`) times the
    inner expectation, :math:`\phi` smoothed by a Gaussian of width
    :math:`s = \sigma_2\sqrt{1-\rho^2}` and read at :math:`m = \sigma_2\rho a`: width
    :math:`\max(h, s)/(\sigma_2|\rho|)` for a smooth :math:`\phi`, :math:`s/(\sigma_2|\rho|)`
    for one with a kink. The outer panels are graded to both widths (to the smaller one only, for a
    smooth :math:`\phi`).
    """
    s = s2 * (1 - rho * rho).clamp_min(0).sqrt()
    w1 = _H / torch.where(s1 > 0, s1, torch.ones_like(s1))
    c = s2 * rho.abs()
    feat = s if kinked else torch.maximum(s, torch.full_like(s, _H))
    w2 = torch.where(c > 0, feat / torch.where(c > 0, c, torch.ones_like(c)), w1)
    w2 = torch.where(w2 > 0, w2, w1)
    if not kinked:  # one grading, to the smaller width, is enough for a smooth phi
        return torch.minimum(w1, w2), None
    return w1, w2


def _quad_2d(f: Callable[[torch.Tensor], torch.Tensor], g: Callable[[torch.Tensor], torch.Tensor],
             s11, s12, s22, kinked: bool = True) -> torch.Tensor:
    r""":math:`\mathbb E[f(u) g(v)]` for the centred Gaussian pair, by nested composite Gauss-Legendre.

    :math:`u = \sigma_1 a`, :math:`v = \sigma_2(\rho a + \sqrt{1-\rho^2}\, b)`,
    :math:`a, b` independent standard normals; the inner rule (over ``b``) is
    graded towards the ``b`` where :math:`v = 0`.
    """
    s1, s2, rho = _split_cov(s11, s12, s22)
    ta, wa = _gauss_nodes(torch.zeros_like(s1), *_outer_widths(s1, s2, rho, kinked))   # (P, A)
    m = (s2 * rho)[..., None] * ta                                   # E[v | a]
    s = (s2 * (1 - rho * rho).clamp_min(0).sqrt())[..., None].expand_as(m)
    safe = torch.where(s > 0, s, torch.ones_like(s))
    tb, wb = _gauss_nodes(torch.where(s > 0, -m / safe, torch.zeros_like(m)), _H / safe)  # (P, A, B)
    inner = (g(m[..., None] + s[..., None] * tb) * wb).sum(-1)
    return (f(s1[..., None] * ta) * wa * inner).sum(-1)


def _quad_outer(cond: Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]],
                f: Callable[[torch.Tensor], torch.Tensor], df: Callable[[torch.Tensor], torch.Tensor],
                s11, s12, s22, kinked: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Both expectations with the inner Gaussian in closed form: ``cond(m, s)`` returns
    :math:`(\mathbb E[\phi(m + s b)], \mathbb E[\phi'(m + s b)])`; the outer one by composite
    Gauss-Legendre."""
    s1, s2, rho = _split_cov(s11, s12, s22)
    ta, wa = _gauss_nodes(torch.zeros_like(s1), *_outer_widths(s1, s2, rho, kinked))
    m = (s2 * rho)[..., None] * ta
    s = (s2 * (1 - rho * rho).clamp_min(0).sqrt())[..., None].expand_as(m)
    c, dc = cond(m, s)
    u = s1[..., None] * ta
    return (f(u) * c * wa).sum(-1), (df(u) * dc * wa).sum(-1)


# Pairs per batch in the quadratures (bounds memory at ~ pairs x nodes^2 doubles).
_PAIR_BATCH_2D = 64
_PAIR_BATCH_1D = 8192


def _batched(fn: KernelFn, vals: torch.Tensor, batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    K = torch.empty(len(vals), dtype=torch.float64, device=vals.device)
    Kd = torch.empty_like(K)
    for a in range(0, len(vals), batch):
        v = vals[a:a + batch]
        K[a:a + batch], Kd[a:a + batch] = fn(v[:, 0], v[:, 1], v[:, 2])
    return K, Kd


# A group of at least _GROUP covariance triples with the same two variances (points of equal
# norm: a sphere) is evaluated at _CHEB Chebyshev points in the angle theta (rho = cos theta),
# interpolated, and the interpolant is checked against direct evaluation at _CHECK members.
_GROUP, _CHEB, _CHECK, _CHEB_TOL = 256, 97, 12, 1e-10


def _cheb_group(fn: KernelFn, s11: float, s22: float, s12: torch.Tensor, batch: int):
    """``fn`` on ``(s11, s12[k], s22)`` by Chebyshev interpolation in theta; ``None`` if the check fails."""
    norm = math.sqrt(s11 * s22)
    if norm <= 0:
        return None
    j = torch.arange(_CHEB, dtype=torch.float64)
    th = 0.5 * math.pi * (1 - torch.cos(math.pi * j / (_CHEB - 1)))   # Chebyshev-Lobatto on [0, pi]
    nodes = torch.stack([torch.full_like(th, s11), norm * torch.cos(th), torch.full_like(th, s22)], 1)
    Kn, Kdn = _batched(fn, nodes, batch)
    wts = torch.where(j % 2 == 0, 1.0, -1.0).to(torch.float64)
    wts[0] *= 0.5
    wts[-1] *= 0.5
    tq = torch.arccos((s12 / norm).clamp(-1.0, 1.0))

    def interp(t):
        diff = t[:, None] - th[None, :]
        exact = diff == 0
        diff = torch.where(exact, torch.ones_like(diff), diff)
        c = wts / diff
        out = [(c * f).sum(1) / c.sum(1) for f in (Kn, Kdn)]
        hit = exact.any(1)
        if bool(hit.any()):
            idx = exact.float().argmax(1)
            out = [torch.where(hit, f[idx], o) for f, o in zip((Kn, Kdn), out)]
        return out

    Ki, Kdi = interp(tq)
    pick = torch.linspace(0, len(s12) - 1, _CHECK).round().long()
    order = torch.argsort(tq)
    chk = order[pick]
    Kc, Kdc = _batched(fn, torch.stack([torch.full((len(chk),), s11, dtype=torch.float64), s12[chk],
                                        torch.full((len(chk),), s22, dtype=torch.float64)], 1), batch)
    ok = ((Ki[chk] - Kc).abs().max() <= _CHEB_TOL * Kn.abs().max()
          and (Kdi[chk] - Kdc).abs().max() <= _CHEB_TOL * Kdn.abs().max().clamp_min(1e-300))
    if not bool(ok):
        return None
    Ki[chk], Kdi[chk] = Kc, Kdc
    return Ki, Kdi


def _dedup_apply(fn: KernelFn, s11, s12, s22, batch: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Apply a costly elementwise kernel map once per distinct covariance triple, in batches.

    Triples are compared after rounding to 1e-12 of the largest variance (on a
    circle grid most pairs repeat), far below the quadrature error. Large groups
    of triples sharing both variances (points of equal norm, such as a sphere) are
    interpolated in the angle and checked (``_cheb_group``).
    """
    shape = torch.broadcast_shapes(s11.shape, s12.shape, s22.shape)
    trip = torch.stack([s11.expand(shape), s12.expand(shape), s22.expand(shape)], -1).reshape(-1, 3)
    scale = float(trip[:, [0, 2]].abs().max()) if trip.numel() else 1.0
    q = 1e-12 * (scale if scale > 0 else 1.0)
    keys = torch.round(trip / q)
    uniq, inv = torch.unique(keys, dim=0, return_inverse=True)
    vals = uniq * q
    K = torch.empty(len(vals), dtype=torch.float64, device=vals.device)
    Kd = torch.empty_like(K)
    todo = torch.ones(len(vals), dtype=torch.bool)
    if len(vals) >= _GROUP:
        pairs, ginv, counts = torch.unique(uniq[:, [0, 2]], dim=0, return_inverse=True, return_counts=True)
        for g in torch.nonzero(counts >= _GROUP).flatten().tolist():
            members = torch.nonzero(ginv == g).flatten()
            res = _cheb_group(fn, float(pairs[g, 0] * q), float(pairs[g, 1] * q), vals[members, 1], batch)
            if res is not None:
                K[members], Kd[members] = res
                todo[members] = False
    if bool(todo.any()):
        idx = torch.nonzero(todo).flatten()
        K[idx], Kd[idx] = _batched(fn, vals[idx], batch)
    return K[inv].reshape(shape), Kd[inv].reshape(shape)


# ----------------------------------------------------------------------------
# activation rules
# ----------------------------------------------------------------------------

class ActivationRule:
    r"""One elementwise activation: forward map, derivative, infinite-width kernel map.

    Parameters
    ----------
    name : str
        A short name (``"relu"``, ``"erf"``, ...), used in descriptions.
    forward : callable
        :math:`\phi`, elementwise on tensors.
    derivative : callable, optional
        :math:`\phi'`, elementwise; default: autograd of ``forward``.
    kernel : callable, optional
        ``kernel(s11, s12, s22) -> (K, Kdot)``, the closed-form maps
        :math:`K = \mathbb E[\phi(u)\phi(v)]` and
        :math:`\dot K = \mathbb E[\phi'(u)\phi'(v)]` for
        :math:`(u, v) \sim \mathcal N(0, [[s_{11}, s_{12}], [s_{12}, s_{22}]])`,
        elementwise on broadcastable float64 tensors. Default: quadrature.
    conditional : callable, optional
        ``conditional(m, s) -> (E[phi(m + s Z)], E[phi'(m + s Z)])``,
        :math:`Z \sim \mathcal N(0, 1)`, in closed form; then the kernel map
        needs only a 1-D quadrature. Ignored when ``kernel`` is given.
    diagonal : callable, optional
        ``diagonal(s) -> (E[phi(u)^2], E[phi'(u)^2])``, :math:`u \sim \mathcal N(0, s)`;
        default: ``kernel(s, s, s)`` or a 1-D quadrature.
    both : callable, optional
        ``both(z) -> (phi(z), phi'(z))`` sharing work (e.g. ``tanh`` once for both).
    smooth : bool
        ``True`` when :math:`\phi` and :math:`\phi'` have no kink (lets the
        quadrature use fewer panels); default ``False``, always safe.
    linear_relu : (float, float), optional
        For :math:`\phi(u) = \alpha u + \beta\,\mathrm{relu}(u)` (relu,
        leaky_relu, abs, identity): ``(alpha, beta)``. Lets the limit use the
        exact (non-Gaussian) first layer of PyTorch's uniform init.
    derivative_from_output : callable, optional
        ``derivative_from_output(y) -> phi'(z)`` where ``y = phi(z)``, for the
        activations whose derivative is a function of their value (relu:
        ``y > 0``; tanh: ``1 - y^2``; sigmoid: ``y (1 - y)``). Lets the
        matrix-free NTK rebuild a layer's gradient factor instead of storing it.

    Calling the rule applies ``forward``.
    """

    def __init__(self, name: str, forward: Callable[[torch.Tensor], torch.Tensor], *,
                 derivative: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
                 kernel: Optional[KernelFn] = None,
                 conditional: Optional[Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]] = None,
                 diagonal: Optional[Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]] = None,
                 linear_relu: Optional[Tuple[float, float]] = None,
                 step: bool = False, smooth: bool = False,
                 both: Optional[Callable[[torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]] = None,
                 derivative_from_output: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> None:
        if not callable(forward):
            raise TypeError(f"forward must be callable; got {forward!r}.")
        for v, n in [(derivative, "derivative"), (kernel, "kernel"), (conditional, "conditional"),
                     (diagonal, "diagonal")]:
            if v is not None and not callable(v):
                raise TypeError(f"{n} must be callable or None; got {v!r}.")
        self.name = str(name)
        self.forward = forward
        self._derivative = derivative
        self._kernel = kernel
        self._conditional = conditional
        self._diagonal = diagonal
        self.linear_relu = linear_relu
        self.step = step
        self.smooth = bool(smooth)
        self._both = both
        self.derivative_from_output = derivative_from_output

    def __repr__(self) -> str:
        return f"ActivationRule({self.name!r}, kernel map: {self.method})"

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.forward(z)

    @property
    def method(self) -> str:
        """How the kernel map is computed: ``"closed form"`` or which quadrature."""
        if self._kernel is not None:
            return "closed form"
        if self._conditional is not None:
            return "quadrature (inner Gaussian in closed form, outer composite Gauss-Legendre)"
        return "quadrature (nested composite Gauss-Legendre)"

    def derivative(self, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\phi'(z)`, elementwise."""
        return self.value_and_derivative(z)[1]

    def value_and_derivative(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(\phi(z), \phi'(z))`; autograd (the gradient of the sum) when no derivative was given."""
        if self._both is not None:
            return self._both(z)
        if self._derivative is not None:
            return self.forward(z), self._derivative(z)
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            y = self.forward(zz.clone())
            (d,) = torch.autograd.grad(y, zz, torch.ones_like(y))
        return y.detach(), d

    def _d(self, z: torch.Tensor) -> torch.Tensor:
        if self._derivative is not None:
            return self._derivative(z)
        return self.value_and_derivative(z)[1]

    def _f(self, z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.forward(z)

    def _quad_pairs(self, s11, s12, s22):
        if self._conditional is not None:
            return _quad_outer(self._conditional, self._f, self._d, s11, s12, s22, not self.smooth)
        return (_quad_2d(self._f, self._f, s11, s12, s22, not self.smooth),
                _quad_2d(self._d, self._d, s11, s12, s22, not self.smooth))

    def diagonal(self, s: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        r""":math:`(\mathbb E[\phi(u)^2], \mathbb E[\phi'(u)^2])` for :math:`u \sim \mathcal N(0, s)`."""
        s = torch.as_tensor(s, dtype=torch.float64)
        if self._diagonal is not None:
            return self._diagonal(s)
        if self._kernel is not None:
            return self._kernel(s, s, s)
        flat = s.reshape(-1)
        K = torch.empty_like(flat)
        Kd = torch.empty_like(flat)
        for a in range(0, len(flat), _PAIR_BATCH_1D // 8):
            v = flat[a:a + _PAIR_BATCH_1D // 8]
            K[a:a + len(v)] = _quad_1d(lambda u: self._f(u) ** 2, v)
            Kd[a:a + len(v)] = _quad_1d(lambda u: self._d(u) ** 2, v)
        return K.reshape(s.shape), Kd.reshape(s.shape)

    def kernel(self, s11, s12, s22) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""The kernel map :math:`(K, \dot K)`, elementwise on broadcastable float64 tensors."""
        s11, s12, s22 = (torch.as_tensor(t, dtype=torch.float64) for t in (s11, s12, s22))
        if self._kernel is not None:
            K, Kd = self._kernel(s11, s12, s22)
            shape = torch.broadcast_shapes(s11.shape, s12.shape, s22.shape)
            return K.expand(shape), Kd.expand(shape)
        batch = _PAIR_BATCH_1D if self._conditional is not None else _PAIR_BATCH_2D
        return _dedup_apply(self._quad_pairs, s11, s12, s22, batch)

    def kernel_matrix(self, S: torch.Tensor, v1: torch.Tensor, v2: torch.Tensor,
                      symmetric: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        r"""The kernel map on an ``(N, N2)`` covariance ``S`` with variances ``v1`` (N,), ``v2`` (N2,).

        Also returns nothing else: for ``symmetric`` (``x2`` is ``x``), the
        diagonal is set from :meth:`ActivationRule.diagonal` (exact for the closed forms,
        free of the round-off of the off-diagonal formulas at correlation 1).
        """
        K, Kd = self.kernel(v1[:, None], S, v2[None, :])
        K, Kd = K.clone(), Kd.clone()
        if symmetric:
            dk, dkd = self.diagonal(v1)
            idx = torch.arange(len(v1), device=S.device)
            K[idx, idx] = dk
            Kd[idx, idx] = dkd
        return K, Kd


# closed forms --------------------------------------------------------------

def _relu_moments(s11, s12, s22):
    """(E[relu relu], E[step step]) as in :func:`neuralspec.analytic.relu_expectations`."""
    norm = torch.sqrt(s11 * s22)
    safe = torch.where(norm > 0, norm, torch.ones_like(norm))
    cos = torch.where(norm > 0, s12 / safe, torch.zeros_like(s12)).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    relu = norm / (2 * math.pi) * (torch.sin(theta) + (math.pi - theta) * torch.cos(theta))
    step = (math.pi - theta) / (2 * math.pi)
    return relu, step


def _linear_relu_kernel(alpha: float, beta: float) -> KernelFn:
    r""":math:`\phi(u) = \alpha u + \beta\,\mathrm{relu}(u)`: for any centrally symmetric pair,
    :math:`\mathbb E[u\,\mathrm{relu}(v)] = \tfrac12 \mathbb E[uv]` and
    :math:`P(u > 0) = \tfrac12`, so :math:`K = (\alpha^2 + \alpha\beta)\Sigma_{12} + \beta^2 K_\mathrm{relu}`
    and :math:`\dot K = \alpha^2 + \alpha\beta + \beta^2 \dot K_\mathrm{relu}`."""
    c = alpha * alpha + alpha * beta

    def kernel(s11, s12, s22):
        if beta == 0.0:
            shape = torch.broadcast_shapes(s11.shape, s12.shape, s22.shape)
            return (c * s12).expand(shape), torch.full(shape, c, dtype=torch.float64, device=s12.device)
        r, st = _relu_moments(s11, s12, s22)
        return c * s12 + beta * beta * r, c + beta * beta * st

    def diagonal(s):
        # relu: E[relu(u)^2] = s/2; E[step(u)^2] = 1/2 (1/4 at s = 0, as the off-diagonal formula)
        half = torch.where(s > 0, torch.full_like(s, 0.5), torch.full_like(s, 0.25))
        return c * s + beta * beta * s / 2, c + beta * beta * half

    return kernel, diagonal


def _step_kernel(s11, s12, s22):
    _, st = _relu_moments(s11, s12, s22)
    return st, torch.zeros_like(st)


def _erf_kernel(s11, s12, s22):
    den = (1 + 2 * s11) * (1 + 2 * s22)
    K = (2 / math.pi) * torch.arcsin((2 * s12 / torch.sqrt(den)).clamp(-1.0, 1.0))
    Kd = (4 / math.pi) / torch.sqrt(den - 4 * s12 * s12)
    return K, Kd


def _sin_kernel(s11, s12, s22):
    m = -(s11 + s22) / 2
    a, b = torch.exp(m + s12), torch.exp(m - s12)
    return (a - b) / 2, (a + b) / 2


def _cos_kernel(s11, s12, s22):
    m = -(s11 + s22) / 2
    a, b = torch.exp(m + s12), torch.exp(m - s12)
    return (a + b) / 2, (a - b) / 2


def _gelu_conditional(m, s):
    r"""For :math:`v \sim \mathcal N(m, s^2)`, :math:`\tau = \sqrt{1 + s^2}`:
    :math:`\mathbb E[v\Phi(v)] = m\Phi(m/\tau) + s^2 \varphi(m/\tau)/\tau` and
    :math:`\mathbb E[\Phi(v) + v\varphi(v)] = \Phi(m/\tau) + m\varphi(m/\tau)/\tau^3`."""
    tau = torch.sqrt(1 + s * s)
    r = m / tau
    pdf = _npdf(r)
    return m * _ndtr(r) + s * s * pdf / tau, _ndtr(r) + m * pdf / tau ** 3


def _elu_conditional(alpha: float):
    def cond(m, s):
        pos = s > 0
        ss = torch.where(pos, s, torch.ones_like(s))
        r = m / ss
        # E[e^v; v < 0] = exp(m + s^2/2) Phi(-(m + s^2)/s), in log space
        tail = torch.exp(m + ss * ss / 2 + torch.special.log_ndtr(-(m + ss * ss) / ss))
        e_pos = m * _ndtr(r) + ss * _npdf(r)
        val = e_pos + alpha * (tail - _ndtr(-r))
        der = _ndtr(r) + alpha * tail
        # s = 0: v = m exactly
        val0 = torch.where(m > 0, m, alpha * torch.expm1(torch.clamp(m, max=0.0)))
        der0 = torch.where(m > 0, torch.ones_like(m), alpha * torch.exp(torch.clamp(m, max=0.0)))
        return torch.where(pos, val, val0), torch.where(pos, der, der0)

    return cond


def _relu_rule() -> ActivationRule:
    k, dg = _linear_relu_kernel(0.0, 1.0)
    return ActivationRule("relu", torch.relu, derivative=lambda z: (z > 0).to(z.dtype),
                          kernel=k, diagonal=dg, linear_relu=(0.0, 1.0),
                          derivative_from_output=lambda y: (y > 0).to(y.dtype))


def _leaky_rule(slope: float) -> ActivationRule:
    a = float(slope)
    k, dg = _linear_relu_kernel(a, 1.0 - a)
    return ActivationRule(f"leaky_relu({a:g})", lambda z: torch.nn.functional.leaky_relu(z, a),
                          derivative=lambda z: torch.where(z > 0, torch.ones_like(z), torch.full_like(z, a)),
                          kernel=k, diagonal=dg, linear_relu=(a, 1.0 - a),
                          derivative_from_output=(lambda y: torch.where(y > 0, torch.ones_like(y),
                                                                        torch.full_like(y, a)))
                          if a > 0 else None)


def _abs_rule() -> ActivationRule:
    k, dg = _linear_relu_kernel(-1.0, 2.0)
    return ActivationRule("abs", torch.abs, derivative=torch.sign, kernel=k, diagonal=dg,
                          linear_relu=(-1.0, 2.0))


def _identity_rule() -> ActivationRule:
    k, dg = _linear_relu_kernel(1.0, 0.0)
    return ActivationRule("identity", lambda z: z, derivative=torch.ones_like, kernel=k, diagonal=dg,
                          linear_relu=(1.0, 0.0))


def _step_rule() -> ActivationRule:
    return ActivationRule("step", lambda z: (z > 0).to(z.dtype), derivative=torch.zeros_like,
                          kernel=_step_kernel, step=True)


def _erf_rule() -> ActivationRule:
    return ActivationRule("erf", torch.erf,
                          derivative=lambda z: (2 / math.sqrt(math.pi)) * torch.exp(-z * z),
                          kernel=_erf_kernel)


def _sin_rule() -> ActivationRule:
    return ActivationRule("sin", torch.sin, derivative=torch.cos, kernel=_sin_kernel)


def _cos_rule() -> ActivationRule:
    return ActivationRule("cos", torch.cos, derivative=lambda z: -torch.sin(z), kernel=_cos_kernel)


def _gelu_forward(z):
    return z * _ndtr(z)


def _gelu_derivative(z):
    return _ndtr(z) + z * _npdf(z)


def _gelu_both(z):
    cdf = _ndtr(z)
    return z * cdf, cdf + z * _npdf(z)


def _gelu_rule(approximate: str = "none") -> ActivationRule:
    if approximate == "none":
        return ActivationRule("gelu", _gelu_forward, derivative=_gelu_derivative,
                              conditional=_gelu_conditional, smooth=True, both=_gelu_both)
    return ActivationRule(f"gelu({approximate})",
                          lambda z: torch.nn.functional.gelu(z, approximate=approximate))


def _tanh_rule() -> ActivationRule:
    def d(z):
        y = torch.tanh(z)
        return 1 - y * y

    def both(z):
        y = torch.tanh(z)
        return y, 1 - y * y

    return ActivationRule("tanh", torch.tanh, derivative=d, smooth=True, both=both,
                          derivative_from_output=lambda y: 1 - y * y)


def _sigmoid_rule() -> ActivationRule:
    def d(z):
        y = torch.sigmoid(z)
        return y * (1 - y)

    def both(z):
        y = torch.sigmoid(z)
        return y, y * (1 - y)

    return ActivationRule("sigmoid", torch.sigmoid, derivative=d, smooth=True, both=both,
                          derivative_from_output=lambda y: y * (1 - y))


def _softplus_rule(beta: float = 1.0, threshold: float = 20.0) -> ActivationRule:
    b, t = float(beta), float(threshold)

    def d(z):
        return torch.where(z * b > t, torch.ones_like(z), torch.sigmoid(z * b))

    name = "softplus" if (b, t) == (1.0, 20.0) else f"softplus(beta={b:g}, threshold={t:g})"
    return ActivationRule(name, lambda z: torch.nn.functional.softplus(z, b, t), derivative=d, smooth=True)


def _silu_rule() -> ActivationRule:
    def d(z):
        s = torch.sigmoid(z)
        return s * (1 + z * (1 - s))

    return ActivationRule("silu", torch.nn.functional.silu, derivative=d, smooth=True)


def _elu_rule(alpha: float = 1.0) -> ActivationRule:
    a = float(alpha)

    def d(z):
        return torch.where(z > 0, torch.ones_like(z), a * torch.exp(torch.clamp(z, max=0.0)))

    return ActivationRule("elu" if a == 1.0 else f"elu({a:g})", lambda z: torch.nn.functional.elu(z, a),
                          derivative=d, conditional=_elu_conditional(a))


#: Rules by name, for the activations with no parameters (and the default ones).
ACTIVATION_RULES: Dict[str, Callable[[], ActivationRule]] = {
    "relu": _relu_rule,
    "leaky_relu": lambda: _leaky_rule(0.01),
    "abs": _abs_rule,
    "step": _step_rule,
    "identity": _identity_rule,
    "erf": _erf_rule,
    "sin": _sin_rule,
    "cos": _cos_rule,
    "gelu": _gelu_rule,
    "tanh": _tanh_rule,
    "sigmoid": _sigmoid_rule,
    "softplus": _softplus_rule,
    "silu": _silu_rule,
    "elu": _elu_rule,
}


def _builtin_factories() -> Dict[type, Callable[[nn.Module], ActivationRule]]:
    from .models import Erf, Sine

    return {
        nn.ReLU: lambda m: _relu_rule(),
        nn.LeakyReLU: lambda m: _leaky_rule(m.negative_slope),
        nn.Identity: lambda m: _identity_rule(),
        Erf: lambda m: _erf_rule(),
        Sine: lambda m: _sin_rule(),
        nn.GELU: lambda m: _gelu_rule(m.approximate),
        nn.Tanh: lambda m: _tanh_rule(),
        nn.Sigmoid: lambda m: _sigmoid_rule(),
        nn.Softplus: lambda m: _softplus_rule(m.beta, m.threshold),
        nn.SiLU: lambda m: _silu_rule(),
        nn.ELU: lambda m: _elu_rule(m.alpha),
    }


# Rules registered by users: module type -> factory(module) -> ActivationRule.
_REGISTERED: Dict[type, Callable[[nn.Module], ActivationRule]] = {}


def _factories() -> Dict[type, Callable[[nn.Module], ActivationRule]]:
    f = _builtin_factories()
    f.update(_REGISTERED)
    return f


def activation_rule(activation: Union[str, nn.Module]) -> ActivationRule:
    """The :class:`ActivationRule` of an activation module (or of a name in ``ACTIVATION_RULES``).

    Raises ``ValueError`` for a module type with no rule (see :func:`register_activation`).
    """
    if isinstance(activation, str):
        key = activation.lower()
        if key not in ACTIVATION_RULES:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATION_RULES)}.")
        return ACTIVATION_RULES[key]()
    if isinstance(activation, ActivationRule):
        return activation
    if not isinstance(activation, nn.Module):
        raise TypeError(f"activation must be a name or an nn.Module; got {type(activation).__name__}.")
    fac = _factories().get(type(activation))
    if fac is None:
        raise ValueError(
            f"no layer rule for {type(activation).__name__}; register one with "
            "neuralspec.register_activation."
        )
    return fac(activation)


def register_activation(
    module_type: type,
    *,
    forward: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    derivative: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    kernel: Optional[KernelFn] = None,
    name: Optional[str] = None,
    rule: Union[None, str, ActivationRule] = None,
) -> None:
    r"""Register an elementwise activation module type, so that every kernel of the library handles it.

    After registration, models containing ``module_type`` get the structured
    empirical NTK (:func:`~neuralspec.ntk.ntk`), the matrix-free operator and
    the infinite-width limit (:func:`~neuralspec.limits.limit_kernels`).

    Parameters
    ----------
    module_type : type
        A subclass of ``nn.Module`` whose ``forward`` is elementwise (the exact
        type is matched, not its subclasses).
    forward : callable, optional
        :math:`\phi`; default: the module itself (``module(z)``).
    derivative : callable, optional
        :math:`\phi'`; default: autograd.
    kernel : callable, optional
        ``kernel(s11, s12, s22) -> (K, Kdot)`` in closed form (see
        :class:`ActivationRule`); default: quadrature, accurate to about
        1e-9 for activations that are smooth away from 0 and grow at most
        polynomially.
    name : str, optional
        Default: the class name, lower case.
    rule : str or ActivationRule, optional
        Instead of the above, reuse a rule (e.g. ``"abs"``, ``"step"``, ``"cos"``).

    Examples
    --------
    >>> class Cube(nn.Module):
    ...     def forward(self, z):
    ...         return z ** 3
    >>> def cube_kernel(s11, s12, s22):   # Isserlis: E[u^3 v^3], E[9 u^2 v^2]
    ...     return 9 * s11 * s22 * s12 + 6 * s12 ** 3, 9 * (s11 * s22 + 2 * s12 ** 2)
    >>> register_activation(Cube, derivative=lambda z: 3 * z ** 2, kernel=cube_kernel)
    """
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"module_type must be an nn.Module subclass; got {module_type!r}.")
    nm = name or module_type.__name__.lower()
    if rule is not None:
        if forward is not None or derivative is not None or kernel is not None:
            raise ValueError("pass either rule= or forward/derivative/kernel, not both.")
        base = activation_rule(rule) if isinstance(rule, str) else rule
        if not isinstance(base, ActivationRule):
            raise TypeError(f"rule must be a name or an ActivationRule; got {rule!r}.")
        _REGISTERED[module_type] = lambda m: base
        return
    for v, n in [(forward, "forward"), (derivative, "derivative"), (kernel, "kernel")]:
        if v is not None and not callable(v):
            raise TypeError(f"{n} must be callable or None; got {v!r}.")

    def factory(m: nn.Module) -> ActivationRule:
        return ActivationRule(nm, forward if forward is not None else m, derivative=derivative, kernel=kernel)

    _REGISTERED[module_type] = factory


def unregister_activation(module_type: type) -> None:
    """Remove a rule added by :func:`register_activation` (no error if there is none)."""
    _REGISTERED.pop(module_type, None)


# ----------------------------------------------------------------------------
# the plan: linear and activation ops
# ----------------------------------------------------------------------------

class LinearRule:
    r"""A linear layer ``z = F.linear(pre * h, ws * W, bs * b)``, with the module that owns ``W, b``.

    Attributes
    ----------
    path : str
        The path of the module owning ``W`` and ``b`` in ``model.named_modules()``.
    module : nn.Module
    ws, bs, pre : float
        Forward multipliers of the weight, the bias and the input.
    kind : {"linear", "ntk", "fourier"}
        ``nn.Linear`` (standard parameterization), :class:`~neuralspec.NTKLinear`,
        or the linear map inside :class:`~neuralspec.LFF` / :class:`~neuralspec.RFF`.
    w_name, b_name : str
        Parameter names; ``w_train``, ``b_train``: whether they are trainable.
    """

    def __init__(self, path: str, module: nn.Module, ws: float, bs: float, pre: float,
                 kind: str = "linear", owner: Optional[nn.Module] = None) -> None:
        self.path, self.module, self.ws, self.bs, self.pre = path, module, ws, bs, pre
        self.kind = kind
        self.owner = owner if owner is not None else module
        w, b = module.weight, module.bias
        self.w_name = f"{path}.weight" if path else "weight"
        self.b_name = f"{path}.bias" if path else "bias"
        self.w_train = bool(w.requires_grad)
        self.b_train = b is not None and bool(b.requires_grad)

    @property
    def in_features(self) -> int:
        return int(self.module.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.module.weight.shape[0])

    @property
    def has_bias(self) -> bool:
        return self.module.bias is not None

    @property
    def trainable(self) -> bool:
        return self.w_train or self.b_train

    def __repr__(self) -> str:
        return (f"LinearRule({self.path or '(model)'}: {type(self.owner).__name__} {self.in_features} -> "
                f"{self.out_features}, {self.kind})")

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        W = self.module.weight.detach()
        b = self.module.bias
        b = None if b is None else self.bs * b.detach()
        inp = h if self.pre == 1.0 else self.pre * h
        return torch.nn.functional.linear(inp, W if self.ws == 1.0 else self.ws * W, b)


class ActivationOp:
    """An elementwise activation in a plan: its ``path``, the module it came from (``source``) and
    its :class:`ActivationRule` (``fn``, also ``rule``). It has no ``module`` attribute: in a
    plan, ``module`` marks the linear layers, which own parameters."""

    def __init__(self, path: str, fn: ActivationRule, source: Optional[nn.Module] = None) -> None:
        self.path, self.fn, self.source = path, fn, source

    @property
    def rule(self) -> ActivationRule:
        return self.fn

    def __repr__(self) -> str:
        return f"ActivationOp({self.path or '(model)'}: {self.fn.name})"

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.fn(z)


# The names ntk.py / scale.py have always used.
_LinearOp = LinearRule
_ActOp = ActivationOp


def _elementwise_types() -> Tuple[type, ...]:
    """The activation module types with a rule (built in and registered)."""
    return tuple(_factories())


def _same_forward(mod: nn.Module, base: type) -> bool:
    return isinstance(mod, base) and type(mod).forward is base.forward


def _has_hooks(mod: nn.Module) -> bool:
    return bool(mod._forward_hooks or mod._forward_pre_hooks or mod._backward_hooks
                or getattr(mod, "_backward_pre_hooks", None))


def _refusal(mod: nn.Module, path: str) -> str:
    where = f"module {path or '(model)'} ({type(mod).__name__})"
    conv = (nn.modules.conv._ConvNd,)
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm)
    if isinstance(mod, conv):
        return f"{where} is a convolution; the layer rules cover dense layers only"
    if isinstance(mod, norms):
        return f"{where} is a normalization layer (it couples units or samples); it has no layer rule"
    if isinstance(mod, nn.modules.dropout._DropoutNd):
        return f"{where} is dropout in train mode (random); call model.eval() to make it the identity"
    if isinstance(mod, (nn.MultiheadAttention, nn.Transformer, nn.TransformerEncoderLayer,
                        nn.TransformerDecoderLayer)):
        return f"{where} is attention; it has no layer rule"
    if isinstance(mod, nn.Sequential):
        return f"{where} overrides nn.Sequential's forward (a custom forward); it has no layer rule"
    return (f"{where} is not a linear layer, an elementwise activation with a rule or an "
            "nn.Sequential of them (register an activation with neuralspec.register_activation)")


def _walk(model: nn.Module) -> Tuple[Optional[List[object]], str]:
    """The list of linear/activation ops of ``model``, or ``None`` and the reason it has none."""
    from torch.nn.modules import module as _module_mod
    from torch.nn.utils import parametrize

    from .models import LFF, NTKLinear

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    facs = _factories()
    if any(getattr(_module_mod, g, None) for g in
           ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")):
        return None, "global module hooks are registered"
    ops: List[object] = []

    def walk(mod: nn.Module, path: str) -> Optional[str]:
        if _has_hooks(mod):
            return f"module {path or '(model)'} ({type(mod).__name__}) has hooks"
        if parametrize.is_parametrized(mod):
            return f"module {path or '(model)'} ({type(mod).__name__}) is parametrized"
        if _same_forward(mod, nn.Sequential):
            # not named_children(): it skips a module that appears twice (one activation
            # instance shared by several layers, as MLP(activation=nn.Tanh()) builds)
            for name, child in mod._modules.items():
                if child is None:
                    continue
                why = walk(child, f"{path}.{name}" if path else name)
                if why:
                    return why
            return None
        if _same_forward(mod, LFF):
            lin = mod.linear
            sub = f"{path}.linear" if path else "linear"
            if not _same_forward(lin, nn.Linear) or _has_hooks(lin) or parametrize.is_parametrized(lin):
                return f"module {sub} ({type(lin).__name__}) is not a plain nn.Linear"
            ops.append(LinearRule(sub, lin, 1.0, 1.0, math.pi, kind="fourier", owner=mod))
            ops.append(ActivationOp(path, _sin_rule(), mod))
            return None
        if _same_forward(mod, nn.Linear):
            ops.append(LinearRule(path, mod, 1.0, 1.0, 1.0, kind="linear"))
            return None
        if _same_forward(mod, NTKLinear):
            ops.append(LinearRule(path, mod, mod.weight_scale, mod.bias_scale, 1.0, kind="ntk"))
            return None
        if type(mod) in facs:
            ops.append(ActivationOp(path, facs[type(mod)](mod), mod))
            return None
        if type(mod) is nn.Flatten and mod.start_dim == 1 and mod.end_dim == -1:
            return None  # the identity on (N, d) inputs
        if isinstance(mod, nn.modules.dropout._DropoutNd) and type(mod).forward in (
                nn.Dropout.forward, nn.AlphaDropout.forward) and (not mod.training or mod.p == 0):
            return None  # the identity in eval mode
        return _refusal(mod, path)

    why = walk(model, "")
    if why:
        return None, why
    if not any(isinstance(op, LinearRule) for op in ops):
        return None, f"{type(model).__name__} has no linear layer"
    return ops, "a stack of linear layers and elementwise activations"


def network_plan(model: nn.Module) -> List[object]:
    r"""The layer rules of ``model``, in order: the one walk every kernel of the library shares.

    Parameters
    ----------
    model : nn.Module
        An ``nn.Sequential`` (nested ones, and subclasses keeping its
        ``forward``, included) of ``nn.Linear``, :class:`~neuralspec.NTKLinear`,
        :class:`~neuralspec.LFF` / :class:`~neuralspec.RFF`, activations with
        a rule (``nn.ReLU``, ``nn.LeakyReLU``, :class:`~neuralspec.Erf`,
        :class:`~neuralspec.Sine`, ``nn.GELU``, ``nn.Tanh``, ``nn.Sigmoid``,
        ``nn.Softplus``, ``nn.SiLU``, ``nn.ELU``, ``nn.Identity`` and any
        registered with :func:`register_activation`), and ``nn.Flatten`` /
        eval-mode ``nn.Dropout`` (the identity).

    Returns
    -------
    list
        :class:`LinearRule` and :class:`ActivationOp` objects; an ``LFF``
        contributes its linear map (``kind="fourier"``, input multiplier
        :math:`\pi`) followed by ``sin``.

    Raises
    ------
    ValueError
        Naming the first module (path and type) that has no rule: a
        convolution, a normalization layer, dropout in train mode,
        attention, a custom ``forward``, hooks or parametrizations.

    Examples
    --------
    >>> import neuralspec as ns
    >>> [type(op).__name__ for op in ns.network_plan(ns.MLP(2, 64, 1, 1))]
    ['LinearRule', 'ActivationOp', 'LinearRule']
    """
    ops, why = _walk(model)
    if ops is None:
        raise ValueError(f"no layer rules for this {type(model).__name__}: {why}.")
    return ops


def _structured_plan(model: nn.Module) -> Tuple[Optional[List[object]], str]:
    """The plan for the structured empirical NTK, or ``None`` and the reason it does not qualify."""
    ops, why = _walk(model)
    if ops is None:
        return None, why
    covered = set()
    for op in ops:
        if isinstance(op, LinearRule):
            covered.add(id(op.module.weight))
            if op.module.bias is not None:
                covered.add(id(op.module.bias))
    for name, p in model.named_parameters():
        if p.requires_grad and id(p) not in covered:
            return None, f"trainable parameter {name} is outside the linear layers"
    if not any(isinstance(op, LinearRule) and op.trainable for op in ops):
        return None, "no trainable linear layer"
    return ops, ("a stack of linear layers and elementwise activations: "
                 "NTK = sum_l (delta_l delta_l^T) * (h_{l-1} h_{l-1}^T + 1), no Jacobian formed")


def _value_and_derivative(fn, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``fn(z)`` and ``fn'(z)`` for an elementwise ``fn``: its rule's derivative (closed forms for
    the common activations), autograd for the others."""
    if isinstance(fn, ActivationRule):
        return fn.value_and_derivative(z)
    if fn is torch.sin:
        return torch.sin(z), torch.cos(z)
    if isinstance(fn, nn.Module) and type(fn) in _factories():
        return activation_rule(fn).value_and_derivative(z)
    with torch.enable_grad():
        zz = z.detach().requires_grad_(True)
        y = fn(zz.clone())
        (d,) = torch.autograd.grad(y, zz, torch.ones_like(y))
    return y.detach(), d
