r"""The learning-curve lab: predicted vs simulated test error of kernel regression on the circle.

Two layers, as in :mod:`neuralspec.widgets`:

* :func:`learning_lab` is a plain function, settings in, figure data out. On
  the unit circle, with the infinite-width NTK of a one-hidden-layer ReLU
  network (neural-tangents' NTK parameterization, :math:`\sigma_w = \sqrt2`,
  :math:`\sigma_b = 0.1`, :func:`neuralspec.analytic.mlp_kernels`) and the
  target :math:`\cos 3\theta + \tfrac12 \sin 7\theta`, it returns

  - the spectral prediction :func:`neuralspec.learning.learning_curve` of the test error
    for ``p`` from 4 to ``p_max``, with the kernel's exact eigenvalues on the
    circle (:func:`neuralspec.data.circle_spectrum`),
  - the mean test error of :func:`neuralspec.learning.kernel_regression` over
    ``trials`` random training sets (and its standard error),
  - the learnability :math:`L_k = p\mu_k/(p\mu_k + \kappa)` of every frequency
    at ``n_train`` points.

* :class:`LearningLab` is a thin ``ipywidgets`` layer: sliders for ``n_train``,
  the ridge :math:`\delta` and the label-noise variance :math:`\sigma^2`; every
  change calls :func:`learning_lab` and redraws one figure.

Import it as ``from neuralspec.learning_widgets import LearningLab``; ``import
neuralspec`` does not need ipywidgets.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from .analytic import mlp_kernels
from .data import circle_spectrum
from .learning import kernel_regression, learning_curve
from .widgets import WidgetExplorer

__all__ = ["LabData", "learning_lab", "LearningLab"]

#: The target's frequencies and amplitudes: cos 3 theta + 1/2 sin 7 theta.
TARGET = {3: 1.0, 7: 0.5}
MAX_FREQUENCY = 2048
GRID = 16384


def _ntk(a: np.ndarray, b: Optional[np.ndarray] = None) -> np.ndarray:
    return mlp_kernels(a, b, depth=1, init="gaussian", parameterization="ntk",
                       w_std=math.sqrt(2.0), b_std=0.1).ntk.numpy()


def _target(theta: np.ndarray) -> np.ndarray:
    return np.cos(3 * theta) + 0.5 * np.sin(7 * theta)


_SPECTRUM: Dict[str, np.ndarray] = {}


def circle_ntk_spectrum():
    """Eigenvalues per frequency (plus one lumped tail group) and multiplicities of the lab's kernel.

    The kernel's first row on a uniform grid of ``GRID`` angles gives its exact circulant
    spectrum (:func:`neuralspec.data.circle_spectrum`); divided by ``GRID`` these are the
    operator eigenvalues, twice degenerate (cosine and sine) for ``k > 0``.
    """
    if not _SPECTRUM:
        theta = 2 * np.pi * np.arange(GRID) / GRID
        row = _ntk(np.array([[1.0, 0.0]]), np.c_[np.cos(theta), np.sin(theta)])[0]
        _, lam = circle_spectrum(row)
        mu = lam[: MAX_FREQUENCY + 1] / GRID
        mult = np.where(np.arange(MAX_FREQUENCY + 1) == 0, 1.0, 2.0)
        rest = max(float(row[0] - np.sum(mu * mult)), 0.0)
        _SPECTRUM["mu"] = np.r_[mu, rest / 1e12]      # the modes beyond MAX_FREQUENCY, as one group
        _SPECTRUM["mult"] = np.r_[mult, 1e12]
    return _SPECTRUM["mu"], _SPECTRUM["mult"]


@dataclass
class LabData:
    """What the lab shows: the predicted and simulated learning curve, and the learnability per frequency."""

    n_train: int
    ridge: float
    noise: float
    ps: np.ndarray
    predicted: np.ndarray
    simulated: np.ndarray
    stderr: np.ndarray
    frequencies: np.ndarray
    learnability: np.ndarray
    seconds: float

    @property
    def ratio(self) -> np.ndarray:
        """Simulated over predicted test error, per p."""
        return self.simulated / self.predicted

    def plot(self, axes=None):
        """Two panels: test error against p (prediction line, simulation dots), learnability per frequency."""
        import matplotlib.pyplot as plt

        if axes is None:
            _, axes = plt.subplots(1, 2, figsize=(12, 3.8))
        ax1, ax2 = axes
        ax1.loglog(self.ps, self.predicted, "-", color="C0", label="prediction (spectrum)")
        ax1.errorbar(self.ps, self.simulated, yerr=self.stderr, fmt="o", ms=4, color="C1",
                     label="kernel regression (mean of trials)")
        ax1.axvline(self.n_train, color="gray", ls=":", lw=1)
        ax1.set_xlabel("training points $p$")
        ax1.set_ylabel("test error $E_g$")
        ax1.set_title(rf"Learning curve, ridge $\delta$ = {self.ridge:.3g}, noise $\sigma^2$ = {self.noise:.3g}")
        ax1.legend(fontsize=8)
        ax2.plot(self.frequencies, self.learnability, "o-", ms=3, color="C0")
        for k in TARGET:
            ax2.axvline(k, color="C3", ls="--", lw=1)
        ax2.set_ylim(-0.03, 1.03)
        ax2.set_xlabel("frequency $k$ (dashed: the target's)")
        ax2.set_ylabel(r"learnability $L_k$")
        ax2.set_title(f"Which frequencies are learned at p = {self.n_train}")
        return axes


def learning_lab(n_train: int = 64, ridge: float = 0.1, noise: float = 0.0, *, p_max: int = 256,
                 trials: int = 10, n_test: int = 300, seed: int = 0) -> LabData:
    r"""Predicted and simulated learning curve of ReLU-NTK regression on the circle.

    Training sets: ``p`` angles uniform on :math:`[0, 2\pi)`, labels
    :math:`y = \cos 3\theta + \frac12\sin 7\theta + \epsilon`,
    :math:`\epsilon \sim \mathcal N(0, \sigma^2)`; the test error is measured
    against the clean target on ``n_test`` fresh angles. ``p`` runs over
    powers of two from 4 to ``p_max`` (and ``n_train``).

    Parameters
    ----------
    n_train : int
        The ``p`` at which the learnability per frequency is shown.
    ridge : float
        :math:`\delta \ge 0` of :math:`(K + \delta I)`.
    noise : float
        Label-noise variance :math:`\sigma^2 \ge 0`.
    p_max, trials, n_test, seed : int
        Largest ``p``, number of random training sets, test points, random seed.
    """
    for v, name in [(n_train, "n_train"), (p_max, "p_max"), (trials, "trials"), (n_test, "n_test")]:
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}.")
    if n_train > p_max:
        raise ValueError(f"n_train must be <= p_max = {p_max}; got {n_train}.")
    t0 = time.perf_counter()
    mu, mult = circle_ntk_spectrum()
    power = np.zeros_like(mu)
    for k, a in TARGET.items():
        power[k] = a**2 / 2
    ps = np.unique(np.r_[2 ** np.arange(2, int(math.log2(p_max)) + 1), n_train]).astype(int)
    theory = learning_curve(mu, power, ps, ridge=ridge, noise=noise, multiplicity=mult)
    rng = np.random.default_rng(seed)
    errors = np.zeros((len(ps), trials))
    P = int(ps.max())
    for j in range(trials):
        theta = rng.uniform(0, 2 * np.pi, P + n_test)
        x = np.c_[np.cos(theta), np.sin(theta)]
        f = _target(theta)
        y = f[:P] + math.sqrt(noise) * rng.standard_normal(P)
        K = _ntk(x)
        for i, p in enumerate(ps):
            pred = kernel_regression(K[:p, :p], y[:p], K[P:, :p], ridge=ridge)
            errors[i, j] = np.mean((pred - f[P:]) ** 2)
    at = learning_curve(mu, power, [n_train], ridge=ridge, noise=noise, multiplicity=mult)
    n_freq = 32
    return LabData(n_train=int(n_train), ridge=float(ridge), noise=float(noise), ps=ps,
                   predicted=theory.test_error, simulated=errors.mean(1),
                   stderr=errors.std(1, ddof=1) / math.sqrt(trials) if trials > 1 else np.zeros(len(ps)),
                   frequencies=np.arange(1, n_freq + 1), learnability=at.learnability[0, 1:n_freq + 1],
                   seconds=time.perf_counter() - t0)


class LearningLab(WidgetExplorer):
    """Sliders for ``n_train``, the ridge and the noise over :func:`learning_lab`, and one figure.

    Built on :class:`~neuralspec.widgets.WidgetExplorer` (``update``, ``hold``, ``set``, ``display``).

    Attributes
    ----------
    controls : dict of str to ipywidgets.Widget
        ``"n_train"``, ``"ridge"``, ``"noise"``; setting a ``.value`` updates the lab.
    data : LabData
        What is displayed now.
    widget : ipywidgets.VBox
    """

    figsize = (12.0, 3.8)
    dpi = 80
    _margins = dict(left=0.07, right=0.98, bottom=0.15, top=0.88, wspace=0.3)
    _panels = (1, 2)
    _update_errors = (ValueError,)
    _missing_ipywidgets = ("LearningLab needs ipywidgets: pip install ipywidgets. "
                           "learning_lab() works without it.")

    def __init__(self, n_train: int = 64, ridge: float = 0.1, noise: float = 0.0, **kwargs: Any) -> None:
        W = self._start()
        self.kwargs = kwargs
        p_max = kwargs.get("p_max", 256)
        style = {"description_width": "80px"}
        slider = dict(continuous_update=False, style=style, layout=W.Layout(width="300px"))
        controls: Dict[str, Any] = {
            "n_train": W.IntSlider(value=n_train, min=4, max=p_max, description="p", **slider),
            "ridge": W.FloatLogSlider(value=max(ridge, 1e-6), base=10, min=-6, max=1, step=0.25,
                                      description="ridge δ", readout_format=".2g", **slider),
            "noise": W.FloatSlider(value=noise, min=0.0, max=1.0, step=0.05, description="noise σ²", **slider),
        }
        self._finish(W, controls, [W.HBox(list(controls.values()))], max_width="980px")

    def _compute(self) -> LabData:
        c = self.controls
        return learning_lab(c["n_train"].value, c["ridge"].value, c["noise"].value, **self.kwargs)

    def _status(self, data: LabData) -> str:
        return (f"simulated / predicted at p = {data.n_train}: "
                f"<b>{data.ratio[list(data.ps).index(data.n_train)]:.2f}</b> "
                f"(update {data.seconds:.2f} s)")

    def _plain_text(self) -> str:
        return repr(self)

    def __repr__(self) -> str:
        d = self.data
        return ("<LearningLab: no data>" if d is None else
                f"<LearningLab: p = {d.n_train}, ridge = {d.ridge:.3g}, noise = {d.noise:.3g}>")
