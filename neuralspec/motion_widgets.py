r"""Kernel motion explorer: width and output scale in, kernel change and alignment over training out.

Two layers, as in :mod:`neuralspec.widgets`:

* :func:`motion_experiment` is a plain function, settings in, data out. It
  builds a one-hidden-layer ``tanh`` network of width ``n`` in the NTK
  parameterization, wraps it as the centered, scaled model
  :math:`\alpha\,(f(x;\theta) - f(x;\theta_0))` (:class:`~neuralspec.motion.OutputScaled`),
  trains it with learning rate :math:`\eta/\alpha^2` on ``n_points`` points of
  the circle with target :math:`\sin(k\theta + 0.5)`, records the empirical
  NTK every ``record_every`` steps, and returns the relative kernel change
  :math:`\|\Theta_t - \Theta_0\|_F/\|\Theta_0\|_F`, the centered
  kernel-target alignment :math:`A(\Theta_t, y)`, the loss, and the loss the
  frozen kernel :math:`\Theta_0` predicts (:func:`~neuralspec.training.predict_residuals`).
* :class:`KernelMotionExplorer` is a thin ``ipywidgets`` layer over it (sliders
  for the width, :math:`\alpha`, the target frequency, the number of steps; a
  seed box), which redraws one figure on every change.

``import neuralspec`` does not need ipywidgets; this module imports it only
when the explorer is built.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from .utils import torch_threads
from .widgets import WidgetExplorer, _int_in, _merge_settings

__all__ = ["MotionSettings", "MotionData", "motion_experiment", "KernelMotionExplorer"]

#: Widths the explorer's slider offers.
WIDTHS = (32, 64, 128, 256, 512, 1024, 2048, 4096)


def _positive(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)) or float(value) <= 0:
        raise ValueError(f"{name} must be a positive finite number; got {value!r}.")
    return float(value)


@dataclass(frozen=True)
class MotionSettings:
    """Everything :func:`motion_experiment` needs; the same values always give the same result.

    Parameters
    ----------
    width : int
        Hidden width :math:`n` (1 to 16384).
    alpha : float
        Output scale :math:`\\alpha > 0` of :math:`\\alpha(f - f_0)`.
    frequency : int
        Target :math:`\\sin(k\\theta + 0.5)`; ``k`` from 1 to ``n_points // 2 - 1``.
    steps : int
        Gradient steps (1 to 5000).
    seed : int
        Seed of the initialization.
    n_points : int
        Training points, evenly spaced on the circle (4 to 512).
    eta : float
        Learning rate before the :math:`1/\\alpha^2` scaling; must be below the
        stability limit :math:`2N/\\lambda_{\\max}` (about 2 for the defaults).
    record_every : int
        Record the kernel every this many steps.
    """

    width: int = 512
    alpha: float = 0.1
    frequency: int = 3
    steps: int = 100
    seed: int = 0
    n_points: int = 24
    eta: float = 1.0
    record_every: int = 5

    def __post_init__(self) -> None:
        def set_(name, value):
            object.__setattr__(self, name, value)

        set_("width", _int_in(self.width, "width", 1, 16384))
        set_("alpha", _positive(self.alpha, "alpha"))
        set_("n_points", _int_in(self.n_points, "n_points", 4, 512))
        set_("frequency", _int_in(self.frequency, "frequency", 1, self.n_points // 2 - 1))
        set_("steps", _int_in(self.steps, "steps", 1, 5000))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}.")
        set_("seed", int(self.seed))
        set_("eta", _positive(self.eta, "eta"))
        set_("record_every", _int_in(self.record_every, "record_every", 1, self.steps))

    def replace(self, **changes: Any) -> "MotionSettings":
        """A copy with some settings changed (checked like the constructor)."""
        return _settings(self, changes)

    def as_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _settings(base, changes: Mapping[str, Any]) -> MotionSettings:
    return _merge_settings(MotionSettings, base, changes)


@dataclass(eq=False)
class MotionData:
    """What the explorer shows for one setting. NumPy arrays, float64.

    Attributes
    ----------
    settings : MotionSettings
    kernel_steps : (S,) int array
        Steps at which the kernel was recorded.
    kernel_change : (S,) array
        :math:`\\|\\Theta_t - \\Theta_0\\|_F / \\|\\Theta_0\\|_F`.
    alignment : (S,) array
        Centered kernel-target alignment :math:`A(\\Theta_t, y)`.
    loss : (steps + 1,) array
        The training loss at every step.
    frozen_loss : (steps + 1,) array
        The loss the frozen kernel :math:`\\Theta_0` predicts.
    gap : float
        :math:`\\max_t \\|r_t - r^{\\rm lin}_t\\| / \\|r_0\\|` over the recorded steps.
    eigvals_init, eigvals_final : (N,) arrays
        Spectrum of the kernel at the first and the last step (descending).
    description : str
    seconds : float
        Wall time of the computation.
    """

    settings: MotionSettings
    kernel_steps: np.ndarray
    kernel_change: np.ndarray
    alignment: np.ndarray
    loss: np.ndarray
    frozen_loss: np.ndarray
    gap: float
    eigvals_init: np.ndarray
    eigvals_final: np.ndarray
    description: str
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: the setting, the final kernel change, alignment and gap, the time."""
        return (f"{self.description}: kernel change {self.kernel_change[-1]:.3g}, alignment "
                f"{self.alignment[0]:.3f} -> {self.alignment[-1]:.3f}, final loss {self.loss[-1]:.2e}, "
                f"gap from the frozen-kernel prediction {self.gap:.1%} ({self.seconds:.2f} s)")

    def plot(self, axes: Optional[Sequence[Any]] = None):
        """Three panels: kernel change, alignment, loss (with the frozen-kernel prediction), against the step."""
        if axes is None:
            import matplotlib.pyplot as plt

            fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
        if len(axes) != 3:
            raise ValueError(f"plot needs three Axes (change, alignment, loss); got {len(axes)}.")
        ax_c, ax_a, ax_l = axes
        t = self.kernel_steps
        ax_c.semilogy(t[1:], np.maximum(self.kernel_change[1:], 1e-12), "o-", ms=3)
        ax_c.set_ylim(1e-5, 3)
        ax_c.set_title("Kernel change")
        ax_c.set_xlabel("step $t$")
        ax_c.set_ylabel(r"$\|\Theta_t - \Theta_0\|_F / \|\Theta_0\|_F$")
        ax_a.plot(t, self.alignment, "o-", ms=3, color="C1")
        ax_a.set_ylim(0, max(0.2, 1.1 * float(self.alignment.max())))
        ax_a.set_title("Centered kernel-target alignment")
        ax_a.set_xlabel("step $t$")
        ax_a.set_ylabel(r"$A(\Theta_t, y)$")
        steps = np.arange(len(self.loss))
        ax_l.semilogy(steps, self.loss, color="C2", label="training")
        ax_l.semilogy(steps, self.frozen_loss, "--", color="k", lw=1, label=r"frozen $\Theta_0$ prediction")
        ax_l.set_title("Loss")
        ax_l.set_xlabel("step $t$")
        ax_l.set_ylabel(r"$L(\theta_t)$")
        ax_l.legend(fontsize=8)
        fig = ax_c.figure
        fig.suptitle(self.description, fontsize=11)
        return fig


def motion_experiment(settings: Union[MotionSettings, Mapping[str, Any], None] = None, *,
                      device: Union[str, torch.device, None] = None, **changes: Any) -> MotionData:
    r"""Train the scaled two-layer network of one setting and measure how its kernel moves.

    The model is :math:`f_\alpha(x) = \alpha\,(f(x;\theta) - f(x;\theta_0))` with
    ``f = MLP(2, width, 1, 1, "tanh", parameterization="ntk")`` (seeded, the
    global random stream untouched), trained by :func:`~neuralspec.training.train`
    with learning rate :math:`\eta/\alpha^2` on the circle target
    :math:`\sin(k\theta + 0.5)`, kernel recorded every ``record_every`` steps.

    Parameters
    ----------
    settings : MotionSettings or dict, optional
        Keyword arguments override single settings, e.g. ``motion_experiment(alpha=30)``.
    device : optional
        Where to train (the network is initialized on the CPU first).

    Returns
    -------
    MotionData
    """
    s = _settings(settings, changes)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    with torch_threads(1 if dev.type == "cpu" else None):
        return _run(s, dev)


def _run(s: MotionSettings, dev: torch.device) -> MotionData:
    from .data import circle_data
    from .models import MLP
    from .motion import OutputScaled, kernel_alignment, relative_kernel_change
    from .ntk import ntk
    from .training import predict_residuals, train

    t0 = time.perf_counter()
    theta, x_np, y_np = circle_data(s.n_points, [s.frequency], 1.0, 0.5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        net = MLP(2, s.width, 1, 1, "tanh", parameterization="ntk")
    model = OutputScaled(net, s.alpha).to(dev)
    x = torch.tensor(x_np, dtype=torch.float32, device=dev)
    y = torch.tensor(y_np, dtype=torch.float32, device=dev)
    K0 = ntk(model, x).detach().double().cpu()
    lam0, U0 = torch.linalg.eigh(K0)
    lam0, U0 = lam0.flip(0).numpy(), U0.flip(1).numpy()
    lr = s.eta / s.alpha ** 2
    run = train(model, x, y, lr=lr, steps=s.steps, record_every=1, record_kernel_every=s.record_every,
                lambda_max=float(lam0[0]), threads=None)
    pred = predict_residuals(lam0, U0, run.residuals[0], lr, run.steps)
    gap = float(np.linalg.norm(run.residuals - pred, axis=1).max() / np.linalg.norm(run.residuals[0]))
    return MotionData(
        settings=s,
        kernel_steps=run.kernel_steps,
        kernel_change=np.asarray(relative_kernel_change(run.kernels[0], run.kernels)),
        alignment=np.asarray(kernel_alignment(run.kernels, y_np)),
        loss=run.loss_history,
        frozen_loss=0.5 * (pred ** 2).mean(axis=1),
        gap=gap,
        eigvals_init=np.linalg.eigvalsh(run.kernels[0])[::-1].copy(),
        eigvals_final=np.linalg.eigvalsh(run.kernels[-1])[::-1].copy(),
        description=(f"width {s.width}, alpha = {s.alpha:.3g}, target sin({s.frequency} theta + 0.5), "
                     f"N = {s.n_points}, lr = {s.eta:g} / alpha^2"),
        seconds=time.perf_counter() - t0,
    )


class KernelMotionExplorer(WidgetExplorer):
    """Sliders for width, output scale, target frequency and steps; one figure that follows them.

    Every change calls :func:`motion_experiment` and redraws the figure (an
    ``ipywidgets.Image`` holding a PNG). Sliders update when released.
    Works with ipywidgets 7 and 8.
    Built on :class:`~neuralspec.widgets.WidgetExplorer` (``update``, ``hold``, ``set``, ``display``).

    Attributes
    ----------
    controls : dict of str to ipywidgets.Widget
        ``"width"``, ``"alpha"``, ``"frequency"``, ``"steps"``, ``"seed"``.
    data : MotionData
        What is displayed now.
    error : str or None
        Message of the last failed update (the last good figure stays).
    n_updates : int
    widget : ipywidgets.VBox
    """

    figsize = (13.0, 3.8)
    dpi = 80
    _margins = dict(left=0.06, right=0.985, bottom=0.14, top=0.84, wspace=0.35)
    _panels = (1, 3)
    _update_errors = (ValueError, TypeError, RuntimeError, FloatingPointError)
    _missing_ipywidgets = ("KernelMotionExplorer needs ipywidgets: pip install ipywidgets. "
                           "motion_experiment() works without it.")

    def __init__(self, settings: Union[MotionSettings, Mapping[str, Any], None] = None, *,
                 device: Union[str, torch.device, None] = None, **changes: Any) -> None:
        W = self._start()
        s = _settings(settings, changes)
        self._fixed = {k: v for k, v in s.as_dict().items()
                       if k not in ("width", "alpha", "frequency", "steps", "seed")}
        self.device = device
        style = {"description_width": "70px"}
        slider = dict(continuous_update=False, style=style, layout=W.Layout(width="280px"))
        c: Dict[str, Any] = {
            "width": W.SelectionSlider(options=sorted(set(WIDTHS) | {s.width}), value=s.width,
                                       description="width", **slider),
            "alpha": W.FloatLogSlider(value=s.alpha, base=10, min=-2, max=2, step=0.1,
                                      description="alpha", readout_format=".3g", **slider),
            "frequency": W.IntSlider(value=s.frequency, min=1, max=max(6, s.frequency),
                                     description="frequency", **slider),
            "steps": W.IntSlider(value=s.steps, min=20, max=max(400, s.steps), step=10 if s.steps % 10 == 0 else 1,
                                 description="steps", **slider),
            "seed": W.BoundedIntText(value=s.seed, min=0, max=2**31 - 1, description="seed",
                                     style=style, layout=W.Layout(width="160px")),
        }
        self._finish(W, c, [
            W.HBox([c["width"], c["alpha"]]),
            W.HBox([c["frequency"], c["steps"], c["seed"]]),
        ], max_width="1040px")

    @property
    def settings(self) -> MotionSettings:
        """The settings the controls show now."""
        values = {k: c.value for k, c in self.controls.items()}
        values.update(self._fixed)
        values["record_every"] = min(values["record_every"], values["steps"])
        return MotionSettings(**values)

    def set(self, **values: Any) -> MotionData:
        """Set several controls with a single update; returns the new :attr:`data`."""
        return super().set(**values)

    def _compute(self) -> MotionData:
        return motion_experiment(self.settings, device=self.device)

    def _status(self, data: MotionData) -> str:
        import html

        return f"{html.escape(data.summary())} (update {self.last_update_seconds:.2f} s)"
