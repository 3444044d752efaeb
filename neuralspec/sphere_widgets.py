r"""The sphere explorer: how the Funk–Hecke spectrum of a network's limit kernel decays.

Two layers, as in :mod:`neuralspec.widgets`:

* :func:`sphere_explore` is a plain function, settings in, figure data out.
  It builds ``MLP(d, 16, depth, 1, activation, parameterization="ntk",
  w_std=sqrt(2), b_std=bias)`` (no bias when ``bias = 0``), takes its
  infinite-width CK or NTK as a function of the cosine
  (:func:`~neuralspec.sphere.limit_kernel_of_cosine`; the width of the
  model does not enter the limit), computes its eigenvalue per degree on
  :math:`S^{d-1}` (:func:`~neuralspec.sphere.sphere_spectrum`) and fits
  :math:`\mu_k \approx C k^{p}` over the even degrees of the fit range (the
  odd ones for odd activations, whose even degrees vanish without a bias),
  returning a :class:`SphereExplorerData`.
* :class:`SphereExplorer` is a thin ipywidgets layer: sliders for ``d``,
  ``depth`` and ``bias``, buttons for the kernel, a dropdown for the
  activation; every change calls :func:`sphere_explore` and redraws one
  log-log figure of :math:`|\mu_k|/\max_j|\mu_j|` against ``k`` with the fitted slope.
  Only widgets present in both ipywidgets 7.7 (Colab) and 8 are used.

Import it as ``from neuralspec.sphere_widgets import SphereExplorer``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from .data import PowerLawFit, fit_power_law
from .models import MLP
from .sphere import limit_kernel_of_cosine, sphere_spectrum
from .widgets import WidgetExplorer, _int_in, _merge_settings

__all__ = ["SPHERE_ACTIVATIONS", "SphereSettings", "SphereExplorerData", "sphere_explore", "SphereExplorer"]

#: Activations the explorer offers (closed-form or fast infinite-width limits in ``ns.limit_kernels``).
SPHERE_ACTIVATIONS = ("relu", "gelu", "erf", "sin")
#: The exponents the theory predicts for ReLU (Bietti and Mairal 2019): NTK k^-d, CK k^-(d+2).
_RELU_EXPONENT = {"NTK": lambda d: -d, "CK": lambda d: -(d + 2)}


@dataclass(frozen=True)
class SphereSettings:
    """Everything :func:`sphere_explore` needs.

    Parameters
    ----------
    d : int
        Input dimension (the sphere :math:`S^{d-1}`), 2 to 10.
    kernel : {"NTK", "CK"}
        The neural tangent kernel of the output or the conjugate kernel of the last hidden layer.
    activation : str
        One of :data:`SPHERE_ACTIVATIONS`.
    depth : int
        Number of hidden layers, 1 to 10.
    bias : float
        :math:`\\sigma_b` of every layer, in ``[0, 2]``; ``0`` builds the network without biases.
    max_degree : int
        Largest degree, 12 to 200.
    fit_from : int
        The power law is fitted over the even degrees from ``fit_from`` to ``max_degree``.
    """

    d: int = 3
    kernel: str = "NTK"
    activation: str = "relu"
    depth: int = 1
    bias: float = 0.0
    max_degree: int = 60
    fit_from: int = 10

    def __post_init__(self) -> None:
        def set_(name, value):
            object.__setattr__(self, name, value)

        set_("d", _int_in(self.d, "d", 2, 10))
        key = self.kernel.upper() if isinstance(self.kernel, str) else None
        if key not in ("NTK", "CK"):
            raise ValueError(f"kernel must be 'NTK' or 'CK'; got {self.kernel!r}.")
        set_("kernel", key)
        act = self.activation.lower() if isinstance(self.activation, str) else None
        if act not in SPHERE_ACTIVATIONS:
            raise ValueError(f"activation must be one of {list(SPHERE_ACTIVATIONS)}; got {self.activation!r}.")
        set_("activation", act)
        set_("depth", _int_in(self.depth, "depth", 1, 10))
        b = self.bias
        if isinstance(b, bool) or not isinstance(b, (int, float, np.floating, np.integer)) \
                or not math.isfinite(float(b)) or not 0 <= float(b) <= 2:
            raise ValueError(f"bias must be a number in [0, 2] (sigma_b; 0 = no bias); got {b!r}.")
        set_("bias", float(b))
        set_("max_degree", _int_in(self.max_degree, "max_degree", 12, 200))
        set_("fit_from", _int_in(self.fit_from, "fit_from", 1, self.max_degree - 4))

    def replace(self, **changes: Any) -> "SphereSettings":
        """A copy with some settings changed (checked like the constructor)."""
        return _settings(self, changes)


def _settings(base: Union[None, SphereSettings, Mapping[str, Any]], changes: Mapping[str, Any]) -> SphereSettings:
    return _merge_settings(SphereSettings, base, changes)


@dataclass(eq=False)
class SphereExplorerData:
    """What the sphere explorer shows for one setting.

    Attributes
    ----------
    settings : SphereSettings
    degrees, eigenvalues, multiplicities : arrays
        The :class:`~neuralspec.sphere.SphereSpectrum`.
    fit : PowerLawFit or None
        :math:`\\mu_k \\approx C k^p` over the degrees ``fit_from .. max_degree`` of one
        parity (even, or odd when the even ones vanish, as for odd activations) that are
        above ``1e-12`` of the largest eigenvalue; ``None`` when fewer than three are
        (a spectrum that falls faster than any power).
    fit_parity : {"even", "odd"} or None
    predicted_exponent : float or None
        The theory's exponent for ReLU (:math:`-d` for the NTK, :math:`-(d+2)` for the CK), else ``None``.
    description : str
    seconds : float
    """

    settings: SphereSettings
    degrees: np.ndarray
    eigenvalues: np.ndarray
    multiplicities: np.ndarray
    fit: Optional[PowerLawFit]
    fit_parity: Optional[str]
    predicted_exponent: Optional[float]
    description: str
    seconds: float = 0.0

    @property
    def scale(self) -> float:
        """The largest :math:`|\\mu_k|` (``mu_0`` for ReLU; ``mu_1`` for odd activations, whose ``mu_0`` is 0)."""
        return float(np.abs(self.eigenvalues).max())

    @property
    def relative(self) -> np.ndarray:
        r""":math:`\mu_k / \max_j |\mu_j|`."""
        return self.eigenvalues / self.scale

    def summary(self) -> str:
        if self.fit is None:
            return (f"{self.description}: below 1e-12 of the top before degree {self.settings.fit_from} "
                    "(faster than any power)")
        pred = "" if self.predicted_exponent is None else f" (theory {self.predicted_exponent:g})"
        return f"{self.description}: fitted slope {self.fit.exponent:.2f}{pred}"

    def plot(self, ax=None):
        """Log-log :math:`|\\mu_k|/\\max|\\mu|` against ``k`` (even: filled, odd: open), with the fitted line."""
        from matplotlib import ticker

        if ax is None:
            import matplotlib.pyplot as plt

            _, ax = plt.subplots(figsize=(6.5, 4.2), layout="constrained")
        s = self.settings
        k = self.degrees[1:]
        r = np.abs(self.relative[1:])
        floor = 1e-13
        even, odd = (k % 2 == 0) & (r > floor), (k % 2 == 1) & (r > floor)
        ax.loglog(k[even], r[even], "o", ms=4, color="C0", label="even degrees")
        ax.loglog(k[odd], r[odd], "o", ms=4, mfc="none", color="C1", label="odd degrees")
        n_zero = int((r <= floor).sum())
        if self.fit is not None:
            kf = np.arange(s.fit_from, s.max_degree + 1)
            ax.loglog(kf, self.fit(kf) / self.scale, "-", color="k", lw=1.2,
                      label=f"fit over {self.fit_parity} $k \\geq {s.fit_from}$: slope {self.fit.exponent:.2f}")
            if self.predicted_exponent is not None:
                c = self.fit(s.fit_from) / self.scale / s.fit_from ** self.predicted_exponent
                ax.loglog(kf, c * kf ** self.predicted_exponent, ":", color="gray", lw=1.5,
                          label=f"theory: slope {self.predicted_exponent:g}")
        if n_zero:
            ax.text(0.03, 0.04, f"{n_zero} degrees below 1e-13 (not shown)", transform=ax.transAxes, fontsize=8)
        ticks = [v for v in (1, 2, 5, 10, 20, 50, 100, 200) if v <= s.max_degree]
        ax.set_xticks(ticks, [str(v) for v in ticks])
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_xlabel("degree $k$")
        ax.set_ylabel(r"$|\mu_k| / \max_j |\mu_j|$")
        ax.set_title(self.description.replace(f"S^{s.d - 1}", f"$S^{{{s.d - 1}}}$"), fontsize=10)
        ax.legend(fontsize=8, loc="upper right")
        return ax.figure


def _model(s: SphereSettings) -> MLP:
    # Gaussian (NTK-parameterization) init at sigma_w^2 = 2; the width does not enter the limit.
    return MLP(s.d, 16, s.depth, 1, activation=s.activation, parameterization="ntk",
               bias=s.bias > 0, w_std=math.sqrt(2.0), b_std=s.bias)


def sphere_explore(settings: Union[SphereSettings, Mapping[str, Any], None] = None,
                   **changes: Any) -> SphereExplorerData:
    """Settings in, spectrum and fit out (no widgets involved); see :mod:`neuralspec.sphere_widgets`."""
    s = _settings(settings, changes)
    t0 = time.perf_counter()
    kappa = limit_kernel_of_cosine(_model(s), s.kernel.lower())
    spec = sphere_spectrum(kappa, s.d, s.max_degree)
    mu = spec.eigenvalues
    top = np.abs(mu).max()
    fit, parity = None, None
    for start, name in [(0, "even"), (1, "odd")]:
        ks = np.arange(s.fit_from, s.max_degree + 1)
        ks = ks[(ks % 2 == start) & (mu[ks] > 1e-12 * top)]
        if len(ks) >= 3:
            fit, parity = fit_power_law(ks, mu[ks]), name
            break
    pred = float(_RELU_EXPONENT[s.kernel](s.d)) if s.activation == "relu" else None
    bias = f"sigma_b = {s.bias:g}" if s.bias > 0 else "no bias"
    desc = f"{s.kernel} of {s.depth} x {s.activation} ({bias}) on S^{s.d - 1}"
    return SphereExplorerData(s, spec.degrees, mu, spec.multiplicities, fit, parity, pred, desc,
                              time.perf_counter() - t0)


class SphereExplorer(WidgetExplorer):
    """Sliders over :func:`sphere_explore`; display it in a notebook.

    Built on :class:`~neuralspec.widgets.WidgetExplorer` (``update``, ``hold``, ``set``, ``display``).

    Attributes
    ----------
    controls : dict of widgets
        ``"d"``, ``"kernel"``, ``"activation"``, ``"depth"``, ``"bias"``; setting a
        control's ``.value`` updates the figure.
    data : SphereExplorerData
        What is displayed now.
    error : str or None
        The message of the last failed update, else ``None``.
    n_updates : int
    widget : ipywidgets.VBox
    """

    figsize = (6.5, 4.2)
    dpi = 80
    _margins = dict(left=0.13, right=0.97, bottom=0.13, top=0.9)
    _update_errors = (ValueError, TypeError)
    _missing_ipywidgets = "SphereExplorer needs ipywidgets (pip install ipywidgets)."

    def __init__(self, settings: Union[SphereSettings, Mapping[str, Any], None] = None, **changes: Any) -> None:
        W = self._start()
        s = _settings(settings, changes)
        self._base = s
        style = {"description_width": "60px"}
        slider = dict(continuous_update=False, style=style, layout=W.Layout(width="250px"))
        c: Dict[str, Any] = {
            "d": W.IntSlider(value=s.d, min=2, max=10, description="d", **slider),
            "kernel": W.ToggleButtons(options=["NTK", "CK"], value=s.kernel, description="kernel", style=style),
            "activation": W.Dropdown(options=list(SPHERE_ACTIVATIONS), value=s.activation,
                                     description="activation", style=style, layout=W.Layout(width="200px")),
            "depth": W.IntSlider(value=s.depth, min=1, max=10, description="depth", **slider),
            "bias": W.FloatSlider(value=s.bias, min=0.0, max=2.0, step=0.05, description="sigma_b",
                                  readout_format=".2f", **slider),
        }
        self._finish(W, c, [W.HBox([c["kernel"], c["activation"]]),
                            W.HBox([c["d"], c["depth"], c["bias"]], layout=W.Layout(flex_flow="row wrap"))],
                     max_width="560px")

    @property
    def settings(self) -> SphereSettings:
        return self._base.replace(**{k: c.value for k, c in self.controls.items()})

    def _compute(self) -> SphereExplorerData:
        return sphere_explore(self.settings)

    def _status(self, data: SphereExplorerData) -> str:
        return data.summary().replace("^", "&#94;")
