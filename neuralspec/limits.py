r"""The infinite-width limit of a torch model, read from the model itself.

:func:`limit_kernels` walks :func:`~neuralspec.layers.network_plan` and
composes the kernel maps of the layer rules, layer by layer as
neural-tangents' ``stax`` does, with the init and parameterization each
layer actually has.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

from ._validation import ArrayLike, as_inputs
from .layers import ActivationOp, ActivationRule, LinearRule, network_plan

__all__ = ["LimitKernels", "limit_kernels"]


@dataclass(frozen=True)
class LimitKernels:
    r"""The infinite-width kernels of a model (float64 tensors, ``(N, N2)``).

    Attributes
    ----------
    ck : torch.Tensor
        The conjugate kernel: the NNGP kernel of the representation entering
        the last linear layer (the readout), per unit,
        :math:`\lim h_L(x)^\top h_L(x') / n` (what
        :func:`~neuralspec.kernels.conjugate_kernel` measures at width ``n``).
    ntk : torch.Tensor
        The limit of :func:`~neuralspec.ntk.ntk` (summed over the outputs, as
        ``ntk`` does; in the standard parameterization evaluated at the
        model's own widths).
    nngp_out : torch.Tensor
        The NNGP kernel of one output unit, :math:`\sigma_w^2\,\mathrm{CK} + \sigma_b^2`
        for a linear readout (neural-tangents' ``nngp``).
    description : str
        The conventions used, layer by layer.
    """

    ck: torch.Tensor
    ntk: torch.Tensor
    nngp_out: torch.Tensor
    description: str


# ----------------------------------------------------------------------------
# init of nn.Linear layers
# ----------------------------------------------------------------------------

def _resolve_init(model: nn.Module, init) -> Tuple[str, Optional[float], Optional[float]]:
    """``("torch", None, None)`` or ``("gaussian", w_std, b_std)`` for the model's ``nn.Linear`` layers."""
    if init is None:
        if getattr(model, "init", None) == "gaussian" and hasattr(model, "w_std") and hasattr(model, "b_std"):
            return "gaussian", float(model.w_std), float(model.b_std)
        return "torch", None, None
    if isinstance(init, str):
        if init == "torch":
            return "torch", None, None
        if init == "gaussian":
            if hasattr(model, "w_std") and hasattr(model, "b_std"):
                return "gaussian", float(model.w_std), float(model.b_std)
            raise ValueError(
                "init='gaussian' needs the scales: pass init=(w_std, b_std), meaning "
                "W ~ N(0, w_std^2 / fan_in) and b ~ N(0, b_std^2) in every nn.Linear."
            )
        raise ValueError(f"init must be None, 'torch', 'gaussian' or (w_std, b_std); got {init!r}.")
    if isinstance(init, (tuple, list)) and len(init) == 2:
        w, b = init
        for v, n in [(w, "w_std"), (b, "b_std")]:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"init=(w_std, b_std) needs finite numbers >= 0; got {n}={v!r}.")
        if w == 0:
            raise ValueError("init=(w_std, b_std) needs w_std > 0.")
        return "gaussian", float(w), float(b)
    raise ValueError(f"init must be None, 'torch', 'gaussian' or (w_std, b_std); got {init!r}.")


def _check_uniform(op: LinearRule) -> None:
    """Warn when an nn.Linear assumed to have PyTorch's init clearly has not (weights beyond the bound)."""
    bound = 1.0 / math.sqrt(op.in_features)
    w = op.module.weight.detach()
    if w.numel() and float(w.abs().max()) > 1.1 * bound:
        warnings.warn(
            f"layer {op.path or '(model)'} has weights up to {float(w.abs().max()):.3g}, beyond PyTorch's "
            f"uniform init bound 1/sqrt({op.in_features}) = {bound:.3g}: limit_kernels assumes "
            "PyTorch's init for nn.Linear; pass init=(w_std, b_std) if the layers are Gaussian.",
            stacklevel=3,
        )


class _Dense:
    r"""Forward variances and NTK gradient factors of one linear layer.

    ``z = ws W (pre h) + bs b``: forward :math:`\sigma_w^2 = ws^2 pre^2 n_{in} Var(W)`,
    :math:`\sigma_b^2 = bs^2 Var(b)`; gradient factors ``gw = ws^2 pre^2 n_in`` (times the
    per-unit input kernel) and ``gb = bs^2``; ``init`` is ``"torch"`` (uniform) or ``"gaussian"``.
    """

    def __init__(self, sw2: float, sb2: float, gw: float, gb: float, w_train: bool, b_train: bool,
                 has_bias: bool, init: str, text: str, label: str = "") -> None:
        self.sw2, self.sb2, self.gw, self.gb = sw2, sb2, gw, gb
        self.w_train, self.b_train, self.has_bias = w_train, b_train, has_bias
        self.init, self.text, self.label = init, text, label

    @classmethod
    def from_op(cls, op: LinearRule, first: bool, init: Tuple[str, Optional[float], Optional[float]]) -> "_Dense":
        n = op.in_features
        kind, w_std, b_std = init
        nb = "" if op.has_bias else ", no bias"
        if op.kind == "ntk":
            mod = op.module
            dense = cls(mod.w_std ** 2, mod.b_std ** 2 if op.has_bias else 0.0, 0.0, 0.0, op.w_train, op.b_train,
                        op.has_bias, "gaussian",
                        f"NTKLinear {n}->{op.out_features} (NTK parameterization, W_std={mod.w_std:g}, "
                        f"b_std={mod.b_std:g}{nb})")
        elif kind == "gaussian":
            dense = cls(w_std ** 2, b_std ** 2 if op.has_bias else 0.0, 0.0, 0.0, op.w_train, op.b_train,
                        op.has_bias, "gaussian",
                        f"Linear {n}->{op.out_features} (standard parameterization, Gaussian init "
                        f"W_std={w_std:g}, b_std={b_std:g}{nb})")
        else:
            _check_uniform(op)
            # the bias variance 1/(3 fan_in) stays for the first layer (fan-in d) and
            # vanishes for the hidden ones (fan-in = a width -> infinity)
            sb2 = (1.0 / (3.0 * n) if first else 0.0) if op.has_bias else 0.0
            bias = (f"sigma_b^2=1/(3*{n})" if first else "sigma_b^2=1/(3n)->0") if op.has_bias else "no bias"
            dense = cls(1.0 / 3.0, sb2, 0.0, 0.0, op.w_train, op.b_train, op.has_bias, "torch",
                        f"Linear {n}->{op.out_features} (standard parameterization, PyTorch uniform init "
                        f"sigma_w^2=1/3, {bias})")
        dense.gw = op.ws ** 2 * op.pre ** 2 * n
        dense.gb = op.bs ** 2
        if op.kind == "linear" and not first:
            dense.text += f" [NTK term at width {n}]"
        if not op.trainable:
            dense.text += " frozen"
        dense.label = _path(op)
        return dense


class _Fourier:
    """The LFF / RFF layer sin(pi W x + b), W ~ U(+-scale/d), b ~ U(+-phase_range)."""

    def __init__(self, scale: float, phase_range: float, w_train: bool, b_train: bool, label: str,
                 text: str) -> None:
        self.scale, self.phase_range = scale, phase_range
        self.w_train, self.b_train, self.label, self.text = w_train, b_train, label, text


class _Act:
    def __init__(self, rule: ActivationRule, label: str, kind: str) -> None:
        self.rule, self.label, self.kind = rule, label, kind


# ----------------------------------------------------------------------------
# the walk
# ----------------------------------------------------------------------------

class _State:
    """Per-unit kernels of the current representation: K (N, N2), its diagonals, and the NTK."""

    def __init__(self, K, v1, v2, T):
        self.K, self.v1, self.v2, self.T = K, v1, v2, T


def _fourier(f: _Fourier, a: torch.Tensor, b: torch.Tensor, sym: bool) -> _State:
    """Fourier features with their uniform init, exactly (any d)."""
    from .analytic import _rff_diag, rff_kernel

    scale, c = f.scale, f.phase_range
    K = rff_kernel(a, b, scale, phase_range=c)
    v1 = _rff_diag(a, scale, c)
    v2 = v1 if sym else _rff_diag(b, scale, c)
    T = torch.zeros_like(K)
    if f.w_train or f.b_train:
        # d sin(z)/dW_j = cos(z) pi x_j, d sin(z)/db = cos(z);
        # E[cos z cos z'] = 1/2 [prod sinc(a (x - x')) + sin(2c)/(2c) prod sinc(a (x + x'))]
        s = scale / a.shape[1]
        ecc = 0.5 * (torch.sinc(s * (a[:, None] - b[None])).prod(-1)
                     + math.sin(2 * c) / (2 * c) * torch.sinc(s * (a[:, None] + b[None])).prod(-1))
        T = ecc * ((math.pi ** 2) * (a @ b.T) * float(f.w_train) + float(f.b_train))
    return _State(K, v1, v2, T)


def _exact_first(dense: _Dense, rule: ActivationRule, a, b, sym: bool) -> _State:
    """PyTorch-uniform first layer (d <= 2, with bias) and an activation alpha u + beta relu(u) or step."""
    from .analytic import _uniform_var, uniform_relu_expectations

    d = a.shape[1]
    m = uniform_relu_expectations(a, None if sym else b)   # E[relu relu], E[step step], exactly
    R, S = m.relu, m.step
    if rule.step:
        K, Kd = S, torch.zeros_like(S)
        v1 = torch.full((len(a),), 0.5, dtype=a.dtype)
        v2 = v1 if sym else torch.full((len(b),), 0.5, dtype=b.dtype)
    else:
        al, be = rule.linear_relu
        c = al * al + al * be
        r1 = _uniform_var(a)                               # E[relu(z)^2]
        r2 = r1 if sym else _uniform_var(b)
        ezz = (a @ b.T + 1.0) / (3.0 * d)                  # E[z z']
        ez1 = ((a * a).sum(1) + 1.0) / (3.0 * d)
        ez2 = ez1 if sym else ((b * b).sum(1) + 1.0) / (3.0 * d)
        if c == 0.0 and be == 1.0:  # relu itself: no arithmetic, exactly the analytic module's values
            K, Kd, v1, v2 = R, S, r1, r2
        else:
            K, Kd = c * ezz + be * be * R, c + be * be * S
            v1, v2 = c * ez1 + be * be * r1, c * ez2 + be * be * r2
    base = dense.gw * (a @ b.T) / d * float(dense.w_train) + dense.gb * float(dense.b_train)
    if dense.w_train and dense.b_train and dense.gw == d and dense.gb == 1.0:
        base = a @ b.T + 1.0   # the same floating-point operations as analytic.uniform_relu_layer_kernels
    return _State(K, v1, v2, base * Kd)


_CUB_Q = 8          # Gauss-Legendre nodes per panel of the uniform first-layer cubature
_CUB_BLOCK = 4096   # cubature nodes per block (bounds memory at N x block)


def _uniform_cubature(dense: _Dense, rule: ActivationRule, a, b, sym: bool, bias: bool) -> _State:
    r"""PyTorch-uniform first layer and any activation, by cubature over the weights (d <= 2).

    :math:`z(x) = w^\top x + b` with :math:`w_j, b \sim U(-s, s)`, :math:`s = 1/\sqrt d`:
    :math:`\mathbb E[\phi(z(x))\phi(z(x'))]` and :math:`\mathbb E[\phi'(z(x))\phi'(z(x'))]` as
    sums over a tensor-product composite Gauss-Legendre grid on :math:`[-s, s]^{d+1}` (an even
    number of panels per axis, so a kink of :math:`\phi` at :math:`z = 0` on the bias axis falls
    on a panel edge). For smooth activations the relative error is below 1e-10 (measured for
    tanh, GELU, erf and sin against a grid twice as fine, for inputs of norm up to 4).
    """
    d = a.shape[1]
    s = 1.0 / math.sqrt(d)
    reach = float(max(a.abs().sum(1).max(), b.abs().sum(1).max())) * s + (s if bias else 0.0)
    panels = 4 * max(1, math.ceil(reach / 2.0))
    if d == 1:
        panels *= 2
    x, w = np.polynomial.legendre.leggauss(_CUB_Q)
    edges = np.linspace(-s, s, panels + 1)
    t = torch.as_tensor(np.concatenate([(lo + hi) / 2 + (hi - lo) / 2 * x for lo, hi in zip(edges[:-1], edges[1:])]))
    wt = torch.as_tensor(np.concatenate([(hi - lo) / 2 * w for lo, hi in zip(edges[:-1], edges[1:])])) / (2 * s)
    dims = d + (1 if bias else 0)
    G = torch.cartesian_prod(*([t] * dims)).reshape(-1, dims)
    Wt = torch.cartesian_prod(*([wt] * dims)).reshape(-1, dims).prod(1)
    A = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], 1) if bias else a
    B = A if sym else (torch.cat([b, torch.ones(len(b), 1, dtype=b.dtype)], 1) if bias else b)
    K = torch.zeros(len(a), len(b), dtype=torch.float64)
    Kd = torch.zeros_like(K)
    v1 = torch.zeros(len(a), dtype=torch.float64)
    v2 = v1 if sym else torch.zeros(len(b), dtype=torch.float64)
    for i in range(0, len(G), _CUB_BLOCK):
        g, wb = G[i:i + _CUB_BLOCK], Wt[i:i + _CUB_BLOCK]
        Fa, Da = rule.value_and_derivative(A @ g.T)
        Fb, Db = (Fa, Da) if sym else rule.value_and_derivative(B @ g.T)
        K += (Fa * wb) @ Fb.T
        Kd += (Da * wb) @ Db.T
        v1 += (Fa * Fa * wb).sum(1)
        if not sym:
            v2 += (Fb * Fb * wb).sum(1)
    if sym:
        K = (K + K.T) / 2
        Kd = (Kd + Kd.T) / 2
        idx = torch.arange(len(a))
        K[idx, idx] = v1
    base = dense.gw * (a @ b.T) / d * float(dense.w_train) + dense.gb * float(dense.b_train)
    return _State(K, v1, v2, base * Kd)


def _propagate(steps: list, a: torch.Tensor, b: torch.Tensor, sym: bool):
    """Compose the kernel maps of ``steps`` on inputs ``a``, ``b``: ``(ck, state, notes)``.

    ``steps``: ``_Dense``, ``_Fourier``, ``_Act`` objects and ``("exact", _Dense, _Act)`` pairs.
    """
    d = a.shape[1]
    st = _State(a @ b.T / d, (a * a).sum(1) / d, (b * b).sum(1) / d,
                torch.zeros(len(a), len(b), dtype=torch.float64))
    at_input = True       # the representation is the (deterministic) input
    gaussian = False      # the representation is a Gaussian pre-activation
    ck = None
    notes: List[str] = []
    for step in steps:
        if isinstance(step, tuple):  # uniform first layer + activation, over the uniform weights
            how, dense, act = step
            ck = st.K
            if how == "exact":
                st = _exact_first(dense, act.rule, a, b, sym)
                what = "exact over the uniform weights (non-Gaussian first layer)"
            else:
                st = _uniform_cubature(dense, act.rule, a, b, sym, dense.has_bias)
                what = "cubature over the uniform weights (non-Gaussian first layer)"
            notes.append(f"{dense.label}: {dense.text}; {act.label}: {act.rule.name}, {what}")
            at_input, gaussian = False, False
        elif isinstance(step, _Fourier):
            if not at_input:
                raise ValueError(f"{step.label}: Fourier features have a layer rule as the first layer only "
                                 "(their input must be x).")
            ck = st.K
            st = _fourier(step, a, b, sym)
            notes.append(f"{step.label}: {step.text}")
            at_input, gaussian = False, False
        elif isinstance(step, _Dense):
            ck = st.K
            T = st.T
            acc = step.gw * st.K if step.w_train else torch.zeros_like(st.K)
            if step.b_train:
                acc = acc + step.gb
            T = acc + step.sw2 * T
            st = _State(step.sw2 * st.K + step.sb2, step.sw2 * st.v1 + step.sb2, step.sw2 * st.v2 + step.sb2, T)
            notes.append(f"{step.label}: {step.text}")
            at_input, gaussian = False, True
        else:  # activation
            rule = step.rule
            if at_input:
                fa = rule(a)
                fb = fa if sym else rule(b)
                st = _State(fa @ fb.T / d, (fa * fa).sum(1) / d, (fb * fb).sum(1) / d, st.T)
                notes.append(f"{step.label}: {rule.name} on the input (deterministic)")
                continue
            if not gaussian and rule.linear_relu != (1.0, 0.0):
                raise ValueError(
                    f"{step.label} follows another activation: the layer rules need a linear layer before "
                    "each activation (its input must be a Gaussian pre-activation)."
                )
            K, Kd = rule.kernel_matrix(st.K, st.v1, st.v2, sym)
            v1 = rule.diagonal(st.v1)[0]
            v2 = v1 if sym else rule.diagonal(st.v2)[0]
            st = _State(K, v1, v2, st.T * Kd)
            notes.append(f"{step.label}: {rule.name} ({rule.method})")
            gaussian = gaussian and rule.linear_relu == (1.0, 0.0)
    return ck, st, notes


def _as_pair(x, x2, d: int):
    dtype = None if isinstance(x, torch.Tensor) else torch.float64
    xt = as_inputs(x, "x", in_features=d, dtype=dtype)
    if x2 is None:
        return xt, None
    dtype2 = None if isinstance(x2, torch.Tensor) else torch.float64
    x2t = as_inputs(x2, "x2", in_features=d, dtype=dtype2)
    return xt, x2t


def _path(op) -> str:
    return f"module {op.path or '(model)'}"


def _compose(first: ActivationRule, second: ActivationRule) -> ActivationRule:
    """The rule of ``second(first(z))``: chain-rule derivative, kernel map by quadrature."""
    def both(z):
        y1, d1 = first.value_and_derivative(z)
        y2, d2 = second.value_and_derivative(y1)
        return y2, d2 * d1

    return ActivationRule(f"{second.name}({first.name})", lambda z: second(first(z)),
                          derivative=lambda z: both(z)[1], both=both)


def _merge_activations(ops: list) -> list:
    """Consecutive activations become one composed rule (its input is then Gaussian)."""
    from .models import LFF

    out: list = []
    for op in ops:
        if isinstance(op, ActivationOp) and out and isinstance(out[-1].source if isinstance(out[-1], ActivationOp)
                                                               else None, LFF):
            out.append(op)  # the sin of Fourier features stays with its linear map
            continue
        if (isinstance(op, ActivationOp) and out and isinstance(out[-1], ActivationOp)
                and op.rule.linear_relu != (1.0, 0.0)):
            prev = out.pop()
            if prev.rule.linear_relu == (1.0, 0.0):
                out.append(op)
                continue
            out.append(ActivationOp(f"{prev.path}+{op.path}", _compose(prev.rule, op.rule), None))
            continue
        if isinstance(op, ActivationOp) and out and isinstance(out[-1], ActivationOp):
            continue  # an identity after an activation
        out.append(op)
    return out


def _steps_from_plan(ops: list, d: int, lin_init) -> Tuple[list, int]:
    """The kernel-map steps of a plan, and the number of outputs."""
    ops = _merge_activations(ops)
    steps: list = []
    n_out = d
    first = True
    i = 0
    while i < len(ops):
        op = ops[i]
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        if isinstance(op, LinearRule):
            n_out = op.out_features
            if op.kind == "fourier":
                lff = op.owner
                path = op.path.rsplit(".", 1)[0] if "." in op.path else "(model)"
                steps.append(_Fourier(float(lff.scale), float(lff.phase_range), op.w_train, op.b_train,
                                      f"module {path} ({type(lff).__name__})",
                                      f"sin(pi W x + b), W ~ U(+-{lff.scale:g}/{d}), b ~ U(+-{lff.phase_range:g}) "
                                      f"exactly{'' if op.trainable else ' (frozen)'}"))
                first = False
                i += 2
                continue
            dense = _Dense.from_op(op, first, lin_init)
            if (first and dense.init == "torch" and isinstance(nxt, ActivationOp) and d <= 2
                    and nxt.rule.linear_relu != (1.0, 0.0)):
                exact = op.has_bias and (nxt.rule.linear_relu is not None or nxt.rule.step)
                steps.append(("exact" if exact else "cubature", dense, _Act(nxt.rule, _act_label(nxt), "act")))
                first = False
                i += 2
                continue
            if (first and dense.init == "torch" and isinstance(nxt, ActivationOp)
                    and nxt.rule.linear_relu != (1.0, 0.0)):
                dense.text += f" (Gaussian/CLT approximation of the first layer's sum of {d + 1} uniforms)"
            steps.append(dense)
            first = False
        else:
            steps.append(_Act(op.rule, _act_label(op), "act"))
        i += 1
    return steps, n_out


def _act_label(op: ActivationOp) -> str:
    src = type(op.source).__name__ if op.source is not None else "composed"
    return f"module {op.path or '(model)'} ({src})"


def limit_kernels(
    model: nn.Module,
    x: ArrayLike,
    x2: Optional[ArrayLike] = None,
    *,
    init: Union[None, str, Tuple[float, float]] = None,
) -> LimitKernels:
    r"""The infinite-width CK and NTK of *this* model: layers, activations, biases, widths and init read from it.

    The model's layer rules (:func:`~neuralspec.layers.network_plan`) are
    composed as in neural-tangents' ``stax``. With :math:`K` the per-unit
    kernel of the current representation (:math:`x^\top x'/d` for the input)
    and :math:`\Theta` its per-unit NTK (0 for the input), a linear layer
    :math:`z = s_w W (p\,h) + s_b b` maps

    .. math::

        \Sigma \leftarrow \sigma_w^2 K + \sigma_b^2, \qquad
        \Theta \leftarrow g_w K + g_b + \sigma_w^2 \Theta,

    with the forward variances :math:`\sigma_w^2 = s_w^2 p^2 n_\text{in}\,\mathrm{Var}(W_{ij})`,
    :math:`\sigma_b^2 = s_b^2\,\mathrm{Var}(b_i)` and the gradient factors
    :math:`g_w = s_w^2 p^2 n_\text{in}`, :math:`g_b = s_b^2` (dropped for a
    frozen weight or bias), and an activation maps

    .. math::

        K \leftarrow \mathbb E[\phi(u)\phi(v)], \qquad \Theta \leftarrow \Theta\,
        \mathbb E[\phi'(u)\phi'(v)], \qquad (u, v) \sim \mathcal N(0, \Sigma)

    (the rule's kernel map: closed form or quadrature, see
    :mod:`neuralspec.layers`).

    * :class:`~neuralspec.NTKLinear` (NTK parameterization):
      :math:`\sigma_w^2 = g_w = W_\text{std}^2`, :math:`\sigma_b^2 = g_b = b_\text{std}^2`.
      **neural-tangents:** with ``stax.Dense(W_std, b_std, parameterization="ntk")``
      and the same activations, ``kernel_fn(x, x2).ntk`` equals ``ntk``
      here (one output), and ``kernel_fn(x, x2).nngp`` equals ``nngp_out``
      :math:`= W_\text{std}^2\,\mathrm{CK} + b_\text{std}^2`; stax's input
      kernel is also :math:`x^\top x'/d`.
    * ``nn.Linear`` (standard parameterization, :math:`g_w = n_\text{in}`,
      :math:`g_b = 1`): PyTorch's default init unless ``init`` says otherwise,
      :math:`W, b \sim U(\pm 1/\sqrt{n_\text{in}})`, so :math:`\sigma_w^2 = 1/3`
      and :math:`\sigma_b^2 = 1/(3 n_\text{in})`, which is :math:`1/(3d)` for
      the first layer and vanishes for the hidden ones (:math:`n_\text{in}`
      a width :math:`\to\infty`). The NTK grows linearly with the widths
      and is evaluated at the model's own widths (as
      :func:`~neuralspec.analytic.mlp_kernels` does). The first layer's
      pre-activations are a sum of ``d + 1`` uniforms, not Gaussian. For
      ``d <= 2`` they are integrated over the uniform weights: exactly for
      an activation :math:`\alpha u + \beta\,\mathrm{relu}(u)` (relu,
      leaky_relu, abs, identity) or the step with a bias
      (:func:`~neuralspec.analytic.uniform_relu_expectations`), by a
      tensor-product Gauss-Legendre cubature otherwise (relative error below
      1e-10 for smooth activations). For ``d >= 3`` the Gaussian with the
      matched covariance is used (the CLT, exact as ``d`` grows; the
      description says so).
    * Consecutive activations (``nn.ReLU(), nn.Tanh()``) are composed into
      one rule, whose kernel map is computed by quadrature.
    * :class:`~neuralspec.LFF` / :class:`~neuralspec.RFF` (first layer):
      :func:`~neuralspec.analytic.rff_kernel` exactly; a trainable ``LFF``
      adds :math:`\mathbb E[\cos z \cos z'](\pi^2 x^\top x' + 1)` to the NTK.

    Parameters
    ----------
    model : nn.Module
        A stack of layers with rules (:func:`~neuralspec.layers.network_plan`).
    x, x2 : (N, d) and (N2, d) tensor or array
        Inputs; ``x2`` defaults to ``x`` (the symmetric kernels).
    init : None, "torch", "gaussian" or (w_std, b_std)
        The init of the ``nn.Linear`` layers: default PyTorch's (or, for an
        :class:`~neuralspec.MLP` built with ``init="gaussian"``, its
        ``w_std``, ``b_std``); ``(w_std, b_std)`` means
        :math:`W \sim \mathcal N(0, w_\text{std}^2/n_\text{in})`,
        :math:`b \sim \mathcal N(0, b_\text{std}^2)`. ``NTKLinear`` layers
        always use their own Gaussian init.

    Returns
    -------
    LimitKernels
        ``(ck, ntk, nngp_out, description)``, float64, on ``x``'s device.

    Raises
    ------
    ValueError
        A module without a layer rule (naming its path and type); ``x`` /
        ``x2`` not 2-D, empty, non-finite, or with the wrong number of
        features; a bad ``init``.

    Examples
    --------
    >>> import neuralspec as ns
    >>> theta, x = ns.circle_grid(64)
    >>> lim = ns.limit_kernels(ns.MLP(2, 1024, 2, 1, "erf"), x)
    >>> lim.ck.shape, lim.ntk.shape
    (torch.Size([64, 64]), torch.Size([64, 64]))
    """
    ops = network_plan(model)
    first_lin = next(op for op in ops if isinstance(op, LinearRule))
    d = first_lin.in_features
    xt, x2t = _as_pair(x, x2, d)
    device = xt.device
    a = xt.detach().to("cpu", torch.float64)
    sym = x2t is None
    b = a if sym else x2t.detach().to("cpu", torch.float64)
    steps, n_out = _steps_from_plan(ops, d, _resolve_init(model, init))
    ck, st, notes = _propagate(steps, a, b, sym)
    standard = any(isinstance(op, LinearRule) and op.kind == "linear" for op in ops)
    head = ("infinite-width limit; per-unit kernels (CK = lim h.h'/n of the readout's input, "
            f"NTK summed over {n_out} output{'s' if n_out > 1 else ''}"
            f"{'; standard-parameterization NTK at the model widths' if standard else ''})")
    conv = dict(dtype=torch.float64, device=device)
    ntk = st.T if n_out == 1 else n_out * st.T
    return LimitKernels(ck.to(**conv), ntk.to(**conv), st.K.to(**conv), head + ": " + "; ".join(notes))
