r"""Networks of the course: Fourier features and multi-layer perceptrons.

``LFF``, ``RFF`` and ``RFFMLP`` keep the seed notes' signatures and structure,
with the seed's freezing bug fixed. ``MLP`` is a plain fully connected network
in the two parameterizations of the neural-tangents library or in muP (Yang & Hu 2021).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
from torch import nn
from torch.nn import functional as F

from ._validation import check_nonnegative, check_positive, check_positive_int

__all__ = ["LFF", "RFF", "RFFMLP", "MLP", "NTKLinear", "ScaledLinear", "mup_layer", "Sine", "Erf", "get_activation",
           "resolve_init", "ACTIVATIONS"]


def _check_features(x: torch.Tensor, expected: int, who: str) -> None:
    if x.dim() < 1 or x.shape[-1] != expected:
        raise ValueError(
            f"{who} expects inputs of shape (N, {expected}); got shape {tuple(x.shape)}."
        )


class LFF(nn.Module):
    r"""Learnable Fourier features (the seed notes' ``LFF``).

    .. math::

        \phi(x) = \sin(\pi W x + b), \qquad
        W_{ij} \sim U(-a, a),\; a = \frac{\text{scale}}{\text{in\_features}}, \qquad
        b_i \sim U(-1, 1).

    ``W`` and ``b`` are trainable. Each feature is a sinusoid with frequency
    ``W_i / 2`` cycles per unit of ``x``, so frequencies are uniform up to
    ``a / 2``; the phase ``b`` spans only part of a period (see
    :func:`neuralspec.analytic.rff_kernel`).

    Parameters
    ----------
    in_features : int
        Input dimension ``d``.
    mapping_size : int
        Number of features ``m`` (the output dimension).
    scale : float
        Bandwidth: weights are drawn from ``U(-scale/d, scale/d)``.
    phase_range : float
        Phases are drawn from ``U(-phase_range, phase_range)``; the seed's ``1``
        by default. ``math.pi`` (a full period) makes the kernel stationary.
    """

    def __init__(self, in_features: int, mapping_size: int, scale: float = 1.0, *,
                 phase_range: float = 1.0) -> None:
        super().__init__()
        check_positive_int(in_features, "in_features")
        check_positive_int(mapping_size, "mapping_size")
        check_positive(scale, "scale")
        self.in_features = in_features
        self.out_features = mapping_size
        self.mapping_size = mapping_size
        # The seed's attribute names, kept for readers following the notes.
        self.input_dim = in_features
        self.output_dim = mapping_size
        check_positive(phase_range, "phase_range")
        self.scale = float(scale)
        self.phase_range = float(phase_range)
        self.linear = nn.Linear(in_features, mapping_size)
        a = self.scale / in_features
        with torch.no_grad():
            nn.init.uniform_(self.linear.weight, -a, a)
            nn.init.uniform_(self.linear.bias, -self.phase_range, self.phase_range)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_features(x, self.in_features, type(self).__name__)
        return torch.sin(self.linear(math.pi * x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, mapping_size={self.mapping_size}, scale={self.scale:g}"


class RFF(LFF):
    r"""Random Fourier features: :class:`LFF` with ``W`` and ``b`` frozen.

    The seed notes wrote ``self.linear.requires_grad = False``, which only sets
    a plain Python attribute on the module and freezes nothing. Here the
    parameters really are frozen with ``requires_grad_(False)``, so the
    features are a fixed random map, no optimizer updates them, the output
    does not require grad, and the neural tangent kernel of a network built on
    them does not include them.

    Note that calling ``requires_grad_(True)`` on an enclosing model unfreezes
    them again, as for any PyTorch module.
    """

    def __init__(self, in_features: int, mapping_size: int, scale: float = 1.0, *,
                 phase_range: float = 1.0) -> None:
        super().__init__(in_features, mapping_size, scale=scale, phase_range=phase_range)
        self.requires_grad_(False)


class _Stack(nn.Sequential):
    """An ``nn.Sequential`` whose slices are plain ``nn.Sequential`` (sharing the modules).

    ``nn.Sequential`` slices by calling ``type(self)(modules)``, which fails for a
    subclass with its own constructor; ``model[:-1]`` must work on our models.
    """

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return nn.Sequential(*list(self._modules.values())[idx])
        return super().__getitem__(idx)


class RFFMLP(_Stack):
    r"""An MLP on random Fourier features, as in the seed notes.

    The layers are ``RFF(in_features, latent_features, in_scale)`` followed by
    ``latent_layers - 1`` hidden blocks ``Linear(latent, latent), ReLU`` and a
    linear readout ``Linear(latent, out_features)`` (the seed drops the last
    ReLU, so the readout is linear):

    .. math::

        f(x) = W_L\,\mathrm{relu}(\cdots \mathrm{relu}(W_1 \phi(x) + b_1)\cdots) + b_L .

    Parameters
    ----------
    in_features : int
        Input dimension.
    in_scale : float
        ``scale`` of the random Fourier features.
    latent_features : int
        Width of the features and of every hidden layer.
    latent_layers : int
        Number of ``Linear`` layers after the features (>= 1); ``1`` is a
        linear readout on the features.
    out_features : int
        Output dimension.
    learnable_features : bool
        Use trainable :class:`LFF` instead of frozen :class:`RFF` features.
    """

    def __init__(
        self,
        in_features: int,
        in_scale: float,
        latent_features: int,
        latent_layers: int,
        out_features: int,
        *,
        learnable_features: bool = False,
    ) -> None:
        check_positive_int(latent_layers, "latent_layers")
        check_positive_int(latent_features, "latent_features")
        check_positive_int(out_features, "out_features")
        feat_cls = LFF if learnable_features else RFF
        layers: list = [feat_cls(in_features, latent_features, scale=in_scale)]
        dims_out = [latent_features] * (latent_layers - 1) + [out_features]
        for out in dims_out:
            layers += [nn.Linear(latent_features, out), nn.ReLU()]
        super().__init__(*layers[:-1])
        self.in_features = in_features
        self.in_scale = float(in_scale)
        self.latent_features = latent_features
        self.latent_layers = latent_layers
        self.out_features = out_features


class NTKLinear(nn.Module):
    r"""A dense layer in the NTK parameterization (neural-tangents' convention).

    .. math::

        y = \frac{\sigma_w}{\sqrt{n_\text{in}}} W x + \sigma_b b, \qquad
        W_{ij}, b_i \sim \mathcal N(0, 1).

    The forward pass is the same function as a standard layer with
    ``W ~ N(0, sigma_w^2 / n_in)``, ``b ~ N(0, sigma_b^2)``, but gradients
    with respect to ``W`` and ``b`` are scaled by ``sigma_w / sqrt(n_in)``
    and ``sigma_b``, which keeps the NTK finite as the width grows.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 w_std: float = 1.0, b_std: float = 0.0) -> None:
        super().__init__()
        check_positive_int(in_features, "in_features")
        check_positive_int(out_features, "out_features")
        self.in_features = in_features
        self.out_features = out_features
        self.w_std = check_positive(w_std, "w_std")
        self.b_std = check_nonnegative(b_std, "b_std")
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.randn(out_features)) if bias else None

    @property
    def weight_scale(self) -> float:
        """Factor multiplying ``W`` in the forward pass, ``w_std / sqrt(in_features)``."""
        return self.w_std / math.sqrt(self.in_features)

    @property
    def bias_scale(self) -> float:
        """Factor multiplying ``b`` in the forward pass, ``b_std``."""
        return self.b_std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None if self.bias is None else self.bias_scale * self.bias
        return F.linear(x, self.weight_scale * self.weight, b)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, w_std={self.w_std:g}, b_std={self.b_std:g}")


class ScaledLinear(NTKLinear):
    r"""A dense layer with explicit multipliers and init scales: one layer of an abc-parameterization.

    .. math::

        z = a_w\, W h + a_b\, b, \qquad
        W_{ij} \sim \mathcal N(0, s_w^2), \quad b_i \sim \mathcal N(0, s_b^2).

    In Yang & Hu's (2021) abc-parameterization of a width-:math:`n` layer the
    multiplier is :math:`a_w \propto n^{-a}`, the init scale
    :math:`s_w \propto n^{-b}` and the learning rate :math:`\eta n^{-c}`.
    The trainable tensors are ``W`` and ``b``; the multipliers are constants,
    so :math:`\partial z / \partial W = a_w\, \delta h^\top` and the NTK
    contribution of the layer carries :math:`a_w^2` (and :math:`a_b^2` for the
    bias). :class:`NTKLinear` is the case :math:`a_w = \sigma_w/\sqrt{n_\text{in}}`,
    :math:`a_b = \sigma_b`, :math:`s_w = s_b = 1`.

    It shares :class:`NTKLinear`'s forward pass, so the structured NTK
    (:func:`~neuralspec.ntk.ntk`) treats it exactly, with these multipliers.
    Its ``w_std`` and ``b_std`` are the forward scales at initialization,
    :math:`\sigma_w = a_w s_w \sqrt{n_\text{in}}` and :math:`\sigma_b = a_b s_b`
    (the pre-activation variance is :math:`\sigma_w^2 \|h\|^2/n_\text{in} + \sigma_b^2`),
    which is what :func:`~neuralspec.limits.limit_kernels` reads.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    weight_multiplier, bias_multiplier : float
        :math:`a_w` and :math:`a_b` (non-negative).
    weight_init_std, bias_init_std : float
        :math:`s_w` and :math:`s_b` (non-negative; ``0`` initializes at zero).
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 weight_multiplier: float = 1.0, bias_multiplier: float = 1.0,
                 weight_init_std: float = 1.0, bias_init_std: float = 1.0) -> None:
        for value, name in [(weight_multiplier, "weight_multiplier"), (bias_multiplier, "bias_multiplier"),
                            (weight_init_std, "weight_init_std"), (bias_init_std, "bias_init_std")]:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
        super().__init__(in_features, out_features, bias=bias)
        self.weight_multiplier = float(weight_multiplier)
        self.bias_multiplier = float(bias_multiplier)
        self.weight_init_std = float(weight_init_std)
        self.bias_init_std = float(bias_init_std)
        # NTKLinear's w_std / b_std: the forward scales, Var(z) = w_std^2 |h|^2 / n_in + b_std^2
        # at init (read by ns.limit_kernels, whose layer rule is that of NTKLinear).
        self.w_std = self.weight_multiplier * self.weight_init_std * math.sqrt(in_features)
        self.b_std = self.bias_multiplier * self.bias_init_std if bias else 0.0
        with torch.no_grad():
            self.weight.mul_(self.weight_init_std)
            if self.bias is not None:
                self.bias.mul_(self.bias_init_std)

    @property
    def weight_scale(self) -> float:
        """Factor multiplying ``W`` in the forward pass, ``weight_multiplier``."""
        return self.weight_multiplier

    @property
    def bias_scale(self) -> float:
        """Factor multiplying ``b`` in the forward pass, ``bias_multiplier``."""
        return self.bias_multiplier

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, weight_multiplier={self.weight_multiplier:.4g}, "
                f"bias_multiplier={self.bias_multiplier:.4g}, weight_init_std={self.weight_init_std:.4g}, "
                f"bias_init_std={self.bias_init_std:.4g}")


def mup_layer(n_in: int, n_out: int, position: str, *, bias: bool = True, w_std: float = math.sqrt(2.0),
              b_std: float = 0.1) -> ScaledLinear:
    r"""One layer of an MLP in the maximal-update parameterization (muP) for SGD.

    Yang & Hu (2021, Table 3 / Definition 5.1), with width :math:`n` and the
    input dimension :math:`d` fixed: multiplier :math:`n^{-a}`, init
    :math:`\mathcal N(0, n^{-2b})`, learning rate :math:`\eta n^{-c}`, with

    ==============================  ============  ===========  =====
    tensor                          :math:`a`     :math:`b`    c
    ==============================  ============  ===========  =====
    input weights, hidden biases    :math:`-1/2`  :math:`1/2`  0
    hidden weights                  0             :math:`1/2`  0
    output weights                  :math:`1/2`   :math:`1/2`  0
    ==============================  ============  ===========  =====

    times the book's constants: :math:`z_1 = \sqrt n\,\frac{\sigma_w}{\sqrt d} W_1 x + \sqrt n\,\sigma_b b_1`,
    :math:`z_l = \sigma_w W_l h_{l-1} + \sqrt n\,\sigma_b b_l`,
    :math:`f = \frac{\sigma_w}{\sqrt n} W_{L+1} h_L + \sigma_b b_{L+1}`, with every
    :math:`W_l, b_l \sim \mathcal N(0, 1/n)` except the output bias
    (:math:`\mathcal N(0, 1)`: it has ``out_features`` entries, a fixed number,
    so it is scaled like a weight with :math:`n = 1`; Yang & Hu's MLP has none).
    At initialization every pre-activation has the same distribution as in the
    NTK parameterization; the output is :math:`O(n^{-1/2})`. With
    :math:`c = 0` the learning rate of plain SGD does not change with the
    width, and neither does the NTK's scale, so one :math:`\eta` (below the
    stability limit :math:`2N/\lambda_{\max}`) serves every width.

    Parameters
    ----------
    n_in, n_out : int
    position : {"input", "hidden", "output"}
    bias : bool
    w_std, b_std : float
        :math:`\sigma_w`, :math:`\sigma_b`.
    """
    if position == "input":
        n = n_out
        return ScaledLinear(n_in, n_out, bias, weight_multiplier=math.sqrt(n) * w_std / math.sqrt(n_in),
                            bias_multiplier=math.sqrt(n) * b_std, weight_init_std=1 / math.sqrt(n),
                            bias_init_std=1 / math.sqrt(n))
    if position == "hidden":
        n = n_in
        return ScaledLinear(n_in, n_out, bias, weight_multiplier=w_std, bias_multiplier=math.sqrt(n_out) * b_std,
                            weight_init_std=1 / math.sqrt(n), bias_init_std=1 / math.sqrt(n_out))
    if position == "output":
        n = n_in
        return ScaledLinear(n_in, n_out, bias, weight_multiplier=w_std / math.sqrt(n), bias_multiplier=b_std,
                            weight_init_std=1 / math.sqrt(n), bias_init_std=1.0)
    raise ValueError(f"position must be 'input', 'hidden' or 'output'; got {position!r}.")


class Sine(nn.Module):
    """Elementwise ``sin``, as a module."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


class Erf(nn.Module):
    r"""Elementwise error function :math:`\operatorname{erf}(z) = \frac{2}{\sqrt\pi}\int_0^z e^{-t^2} dt`,
    as a module (torch has none). Its infinite-width kernel is in closed form (Williams 1997)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.erf(x)


ACTIVATIONS: dict = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "softplus": nn.Softplus,
    "sin": Sine,
    "identity": nn.Identity,
    "erf": Erf,
    "leaky_relu": nn.LeakyReLU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


def get_activation(activation: Union[str, nn.Module, Callable[[], nn.Module]]) -> nn.Module:
    """An activation module from a name in ``ACTIVATIONS``, a module, or a module class."""
    if isinstance(activation, str):
        key = activation.lower()
        if key not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)} "
                "or an nn.Module."
            )
        return ACTIVATIONS[key]()
    if isinstance(activation, nn.Module):
        return activation
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    raise TypeError(
        f"activation must be a name, an nn.Module or an nn.Module class; got {activation!r}."
    )


def resolve_init(parameterization: str, init: Optional[str]) -> str:
    """Check a (parameterization, init) pair of :class:`MLP` and fill in the default init.

    ``"standard"`` defaults to PyTorch's ``"torch"`` init, ``"ntk"`` has only ``"gaussian"``.
    """
    if parameterization not in ("standard", "ntk"):
        raise ValueError(f"parameterization must be 'standard' or 'ntk'; got {parameterization!r}.")
    if init is None:
        init = "torch" if parameterization == "standard" else "gaussian"
    if init not in ("torch", "gaussian"):
        raise ValueError(f"init must be 'torch' or 'gaussian'; got {init!r}.")
    if parameterization == "ntk" and init != "gaussian":
        raise ValueError("the 'ntk' parameterization uses Gaussian init only (init='gaussian').")
    return init


class MLP(_Stack):
    r"""A fully connected network with ``latent_layers`` hidden layers and a linear readout.

    .. math::

        h_0 = x,\quad h_{l} = \sigma(z_l),\quad z_l = W_l h_{l-1} + b_l,\quad
        f(x) = W_{L+1} h_L + b_{L+1}.

    Parameterizations (neural-tangents' conventions, ``n`` the fan-in):

    * ``"standard"`` with ``init="torch"`` (the default): PyTorch's default
      ``nn.Linear`` init, ``W, b ~ U(-1/sqrt(n), 1/sqrt(n))``.
    * ``"standard"`` with ``init="gaussian"``: ``W ~ N(0, w_std^2 / n)``,
      ``b ~ N(0, b_std^2)``.
    * ``"ntk"``: :class:`NTKLinear` layers, ``z = (w_std / sqrt(n)) W h + b_std b``
      with ``W, b ~ N(0, 1)``. Same function at init, but the NTK stays
      finite as the width grows, while the standard one grows linearly.
    * ``"mup"``: the maximal-update parameterization of Yang & Hu (2021) for
      SGD, :class:`ScaledLinear` layers built by :func:`mup_layer`: input
      layer and hidden biases with multiplier :math:`\sqrt n`, hidden weights
      with multiplier 1, output weights with multiplier :math:`1/\sqrt n`,
      every trainable tensor :math:`\sim \mathcal N(0, 1/n)` (the output
      bias :math:`\mathcal N(0, 1)`), and a learning rate that does not
      depend on the width. Same pre-activations at init as ``"ntk"``, an
      :math:`O(n^{-1/2})` output, an :math:`O(1)` NTK, and features (and the
      kernel) that move by :math:`O(1)` in training at any width.

    Parameters
    ----------
    in_features, latent_features, latent_layers, out_features : int
        Input size, hidden width, number of hidden layers (>= 1), output size.
    activation : str or nn.Module
        ``"relu"`` (default), ``"tanh"``, ``"gelu"``, ``"sigmoid"``, ``"softplus"``,
        ``"sin"``, ``"identity"``, ``"erf"``, ``"leaky_relu"`` (slope 0.01; pass
        ``nn.LeakyReLU(a)`` for another), ``"silu"``, ``"elu"``, or a module.
    parameterization : {"standard", "ntk", "mup"}
    bias : bool
        Whether the layers have biases.
    init : {"torch", "gaussian"}, optional
        Default ``"torch"`` for the standard parameterization, ``"gaussian"``
        for the NTK one (which has no other).
    w_std, b_std : float
        Gaussian init / NTK-parameterization scales (defaults ``sqrt(2)`` and ``0.1``);
        ``w_std > 0`` and ``b_std >= 0``, finite (else ``ValueError`` naming the argument).
    """

    def __init__(
        self,
        in_features: int,
        latent_features: int,
        latent_layers: int,
        out_features: int,
        activation: Union[str, nn.Module] = "relu",
        parameterization: str = "standard",
        bias: bool = True,
        *,
        init: Optional[str] = None,
        w_std: float = math.sqrt(2.0),
        b_std: float = 0.1,
    ) -> None:
        check_positive(w_std, "w_std")
        check_nonnegative(b_std, "b_std")
        for v, n in [(in_features, "in_features"), (latent_features, "latent_features"),
                     (latent_layers, "latent_layers"), (out_features, "out_features")]:
            check_positive_int(v, n)
        if parameterization == "mup":  # muP (Yang & Hu 2021): Gaussian init only, see mup_layer
            if init not in (None, "gaussian"):
                raise ValueError("the 'mup' parameterization uses Gaussian init only (init='gaussian').")
            init = "gaussian"
        else:
            init = resolve_init(parameterization, init)
        dims = [in_features] + [latent_features] * latent_layers + [out_features]
        layers: list = []
        for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
            if parameterization == "ntk":
                layer: nn.Module = NTKLinear(n_in, n_out, bias=bias, w_std=w_std, b_std=b_std)
            elif parameterization == "mup":
                position = "input" if i == 0 else ("output" if i == len(dims) - 2 else "hidden")
                layer = mup_layer(n_in, n_out, position, bias=bias, w_std=w_std, b_std=b_std)
            else:
                layer = nn.Linear(n_in, n_out, bias=bias)
                if init == "gaussian":
                    with torch.no_grad():
                        layer.weight.normal_(0.0, w_std / math.sqrt(n_in))
                        if bias:
                            layer.bias.normal_(0.0, b_std)
            layers.append(layer)
            if i < len(dims) - 2:
                layers.append(get_activation(activation) if not isinstance(activation, nn.Module)
                              else activation)
        super().__init__(*layers)
        self.in_features = in_features
        self.latent_features = latent_features
        self.latent_layers = latent_layers
        self.out_features = out_features
        self.parameterization = parameterization
        self.init = init
        self.w_std = float(w_std)
        self.b_std = float(b_std)
        self.activation_name = activation if isinstance(activation, str) else type(activation).__name__
