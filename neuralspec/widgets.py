r"""The kernel explorer: pick a network and a kernel, see its matrix, spectrum and eigenfunctions.

Two layers:

* :func:`explore` is a plain function, settings in, figure data out. It builds
  the network (seeded), evaluates the chosen kernel on ``n_points`` inputs
  spread over :math:`[0, 1]`, and eigendecomposes it,

  .. math::

      K = U \operatorname{diag}(\lambda) U^\top, \qquad
      \lambda_1 \ge \lambda_2 \ge \dots \ge \lambda_N,

  returning an :class:`ExplorerData` (kernel, eigenvalues, top eigenvectors,
  the round-off floor :math:`10\,\epsilon\,\lambda_1`, ranks, timing). It
  needs no widget library; tests and chapters call it directly.
* :class:`KernelExplorer` is a thin `ipywidgets` layer over it: one control
  per setting, and on every change it calls :func:`explore` and redraws one
  figure (kernel image, log-scale spectrum with the floor marked, top
  eigenfunctions). Sliders only report a value when released
  (``continuous_update=False``), so dragging one triggers a single update.

Import it as ``from neuralspec.widgets import KernelExplorer``; ``import
neuralspec`` itself does not need ipywidgets.

The networks (all with a scalar output, built with ``width`` as every hidden size):

==========  ==============================================================  ===================
``model``   network                                                         uses
==========  ==============================================================  ===================
RFF         frozen random Fourier features, then a linear readout           scale, width
LFF         the same with trainable (learnable) Fourier features            scale, width
RFF-MLP     frozen Fourier features, ``depth`` hidden layers, readout       all
MLP         ``depth`` hidden layers on the raw input, readout               width, depth, activation
==========  ==============================================================  ===================

The kernels:

* ``"feature"``: the Gram matrix of the network's first feature map over its
  width, :math:`\Phi\Phi^\top / m` (the Fourier features; for the MLP the first
  hidden layer :math:`\sigma(W_1 x + b_1)`).
* ``"CK"``: the conjugate kernel :math:`h_L h_L^\top / n` of the last hidden
  layer (:func:`neuralspec.kernels.conjugate_kernel`). For RFF and LFF it is the
  feature kernel.
* ``"NTK"``: the empirical neural tangent kernel :math:`J J^\top` over the
  trainable parameters (:func:`neuralspec.ntk.ntk`). Frozen features do not enter
  it; learnable ones do, so RFF and LFF differ only in this kernel.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import time
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from .kernels import conjugate_kernel, feature_kernel
from .models import ACTIVATIONS, LFF, MLP, RFF, RFFMLP, get_activation
from .spectrum import effective_rank, eigh, numerical_floor, numerical_rank
from .utils import torch_threads

__all__ = [
    "MODELS",
    "KERNELS",
    "ExplorerSettings",
    "ExplorerData",
    "explore",
    "build_model",
    "WidgetExplorer",
    "KernelExplorer",
]

#: Model names accepted by :func:`explore`, in the order the explorer lists them.
MODELS = ("RFF", "LFF", "RFF-MLP", "MLP")
#: Kernel names accepted by :func:`explore`, with the label the figures use.
KERNELS = {
    "feature": "feature Gram",
    "CK": "conjugate kernel",
    "NTK": "neural tangent kernel",
}
#: Settings each model ignores (the explorer greys their controls out).
UNUSED = {
    "RFF": ("depth", "activation"),
    "LFF": ("depth", "activation"),
    "RFF-MLP": (),
    "MLP": ("scale",),
}
MAX_POINTS = 4096

_MODEL_ALIASES = {m.replace("-", "").lower(): m for m in MODELS}
_KERNEL_ALIASES = {
    "feature": "feature", "features": "feature", "gram": "feature", "featuregram": "feature",
    "ck": "CK", "conjugate": "CK", "conjugatekernel": "CK", "nngp": "CK",
    "ntk": "NTK", "tangent": "NTK", "neuraltangentkernel": "NTK",
}
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _positive_int(value: Any, name: str, upper: Optional[int] = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__}).")
    value = int(value)
    if value < 1 or (upper is not None and value > upper):
        bound = f"between 1 and {upper}" if upper is not None else ">= 1"
        raise ValueError(f"{name} must be {bound}; got {value}.")
    return value


@dataclass(frozen=True)
class ExplorerSettings:
    """Everything :func:`explore` needs; the same values always give the same result.

    Parameters
    ----------
    model : {"RFF", "LFF", "RFF-MLP", "MLP"}
        The network (see :mod:`neuralspec.widgets`).
    kernel : {"feature", "CK", "NTK"}
        Which kernel to show.
    scale : float
        Bandwidth of the Fourier features: frequencies up to ``scale / 2``
        cycles per unit (ignored by ``MLP``).
    width : int
        Number of Fourier features and width of every hidden layer.
    depth : int
        Number of hidden layers after the input or the features (``RFF-MLP``,
        ``MLP``; ignored by ``RFF`` and ``LFF``, which have a linear readout).
    activation : str
        Hidden-layer activation, a name from ``neuralspec.models.ACTIVATIONS``
        (``RFF-MLP`` and ``MLP`` only).
    n_points : int
        Number of inputs, evenly spaced on :math:`[0, 1]` (both ends included).
    seed : int
        Seed of the network's initialization.
    n_eigenfunctions : int
        How many of the top eigenvectors to return and plot.
    dtype : {"float32", "float64"}
        Precision of the network and the kernel; sets the round-off floor.
    """

    model: str = "RFF-MLP"
    kernel: str = "NTK"
    scale: float = 10.0
    width: int = 256
    depth: int = 2
    activation: str = "relu"
    n_points: int = 200
    seed: int = 0
    n_eigenfunctions: int = 4
    dtype: str = "float32"

    def __post_init__(self) -> None:
        # Canonicalize names and check every value; raise a clear error otherwise.
        def set_(name, value):
            object.__setattr__(self, name, value)

        if not isinstance(self.model, str) or self.model.replace("-", "").replace("_", "").lower() not in _MODEL_ALIASES:
            raise ValueError(f"model must be one of {list(MODELS)}; got {self.model!r}.")
        set_("model", _MODEL_ALIASES[self.model.replace("-", "").replace("_", "").lower()])
        key = self.kernel.replace(" ", "").replace("-", "").replace("_", "").lower() if isinstance(self.kernel, str) else None
        if key not in _KERNEL_ALIASES:
            raise ValueError(f"kernel must be one of {list(KERNELS)}; got {self.kernel!r}.")
        set_("kernel", _KERNEL_ALIASES[key])
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float, np.floating, np.integer)) \
                or not math.isfinite(float(self.scale)) or float(self.scale) <= 0:
            raise ValueError(f"scale must be a positive finite number; got {self.scale!r}.")
        set_("scale", float(self.scale))
        set_("width", _positive_int(self.width, "width"))
        set_("depth", _positive_int(self.depth, "depth"))
        if not isinstance(self.activation, str) or self.activation.lower() not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}; got {self.activation!r}.")
        set_("activation", self.activation.lower())
        n = self.n_points
        if isinstance(n, (int, np.integer)) and not isinstance(n, bool) and int(n) < 2:
            raise ValueError(f"n_points must be at least 2 (a spectrum needs points); got {n}.")
        set_("n_points", _positive_int(n, "n_points", MAX_POINTS))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {self.seed!r}.")
        set_("seed", int(self.seed))
        set_("n_eigenfunctions", _positive_int(self.n_eigenfunctions, "n_eigenfunctions"))
        if self.n_eigenfunctions > self.n_points:
            raise ValueError(
                f"n_eigenfunctions ({self.n_eigenfunctions}) cannot exceed n_points ({self.n_points})."
            )
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {list(_DTYPES)}; got {self.dtype!r}.")

    def replace(self, **changes: Any) -> "ExplorerSettings":
        """A copy with some settings changed (checked like the constructor)."""
        return _settings(self, changes)

    def as_dict(self) -> Dict[str, Any]:
        """The settings as a plain ``dict``."""
        return dataclasses.asdict(self)

    @property
    def unused(self) -> tuple:
        """Names of the settings this model ignores."""
        return UNUSED[self.model]


def _merge_settings(cls, base: Any, changes: Mapping[str, Any]):
    """``cls(**values)``: ``base`` (a ``cls``, a mapping or None) with ``changes`` applied, names checked."""
    if base is None:
        values: Dict[str, Any] = {}
    elif isinstance(base, cls):
        values = dataclasses.asdict(base)
    elif isinstance(base, Mapping):
        values = dict(base)
    else:
        article = "an" if cls.__name__[0] in "AEIOU" else "a"
        raise TypeError(
            f"settings must be {article} {cls.__name__}, a dict or None; got {type(base).__name__}."
        )
    values.update(changes)
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; the settings are {fields}.")
    return cls(**values)


def _int_in(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {value!r} ({type(value).__name__}).")
    if not lo <= int(value) <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}; got {value}.")
    return int(value)


def _settings(base: Union[None, ExplorerSettings, Mapping[str, Any]], changes: Mapping[str, Any]) -> ExplorerSettings:
    return _merge_settings(ExplorerSettings, base, changes)


@dataclass(eq=False)
class ExplorerData:
    """What the explorer shows for one setting: the kernel, its spectrum and eigenvectors.

    Arrays are NumPy, on the CPU, in the precision of ``settings.dtype``.

    Attributes
    ----------
    settings : ExplorerSettings
    x : (N,) array
        The inputs (1-D), evenly spaced on :math:`[0, 1]`.
    kernel : (N, N) array
        The kernel matrix :math:`K(x_i, x_j)`.
    eigvals : (N,) array
        All eigenvalues, descending (near-zero ones may be slightly negative: round-off).
    eigvecs : (N, k) array
        The top ``k = settings.n_eigenfunctions`` eigenvectors (unit norm), signed
        so that each one's first large entry is positive.
    floor : float
        The round-off floor :func:`neuralspec.spectrum.numerical_floor`, ``10 eps lambda_1``.
    numerical_rank : int
        Number of eigenvalues above the floor.
    effective_rank : float
        The entropy effective rank :func:`neuralspec.spectrum.effective_rank`.
    description : str
        The network and kernel, in words (the figure's title).
    seconds : float
        Wall time of the computation (model, kernel, eigendecomposition).
    """

    settings: ExplorerSettings
    x: np.ndarray
    kernel: np.ndarray
    eigvals: np.ndarray
    eigvecs: np.ndarray
    floor: float
    numerical_rank: int
    effective_rank: float
    description: str
    seconds: float = 0.0

    @property
    def normalized_eigvals(self) -> np.ndarray:
        r""":math:`\lambda_i / \lambda_1`, as the spectrum panel shows them."""
        return self.eigvals / self.eigvals[0]

    def count_above(self, rel: float) -> int:
        r"""Number of eigenvalues above ``rel`` :math:`\lambda_1`."""
        return int((self.normalized_eigvals > rel).sum())

    def summary(self) -> str:
        """A one-line summary: what is shown, the ranks, the time."""
        return (f"{self.description}: N = {len(self.x)}, numerical rank {self.numerical_rank}, "
                f"effective rank {self.effective_rank:.1f}, computed in {self.seconds:.2f} s")

    def plot(self, axes: Optional[Sequence[Any]] = None):
        """Draw the three panels: kernel image, normalized log spectrum with the floor, eigenfunctions.

        Parameters
        ----------
        axes : three matplotlib Axes, optional
            Where to draw; by default a new ``pyplot`` figure with one row of three.

        Returns
        -------
        matplotlib.figure.Figure
        """
        from .plotting import plot_eigenfunctions, plot_kernel, plot_spectrum

        if axes is None:
            import matplotlib.pyplot as plt

            fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
        if len(axes) != 3:
            raise ValueError(f"plot needs three Axes (kernel, spectrum, eigenfunctions); got {len(axes)}.")
        ax_k, ax_s, ax_e = axes
        s = self.settings
        plot_kernel(self.kernel, self.x[:, None], ax=ax_k, title=f"{s.kernel} matrix")
        plot_spectrum(self.eigvals, ax=ax_s, floor=self.floor, normalize=True,
                      label=f"{s.kernel}, rank {self.numerical_rank}",
                      title="Spectrum (log scale)")
        ax_s.set_ylim(bottom=max(min(self.floor / self.eigvals[0], 1e-3) / 1e3, 1e-20), top=2.0)
        plot_eigenfunctions(self.x, self.eigvecs, k=self.eigvecs.shape[1], ax=ax_e,
                            title=f"Top {self.eigvecs.shape[1]} eigenvectors")
        fig = ax_k.figure
        fig.suptitle(self.description, fontsize=11)
        return fig


def build_model(settings: Union[ExplorerSettings, Mapping[str, Any], None] = None, **changes: Any) -> nn.Module:
    """The network for these settings, initialized from ``settings.seed`` (global RNG untouched).

    Returns an ``nn.Sequential`` with a scalar linear readout, on the CPU, in
    ``settings.dtype``.
    """
    s = _settings(settings, changes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        if s.model in ("RFF", "LFF"):
            model: nn.Module = RFFMLP(1, s.scale, s.width, 1, 1, learnable_features=s.model == "LFF")
        elif s.model == "RFF-MLP":
            model = RFFMLP(1, s.scale, s.width, s.depth + 1, 1)
            for i, m in enumerate(model):
                if isinstance(m, nn.ReLU):
                    model[i] = get_activation(s.activation)
        else:
            model = MLP(1, s.width, s.depth, 1, activation=s.activation)
    return model.to(_DTYPES[s.dtype])


def _describe(s: ExplorerSettings) -> str:
    if s.model in ("RFF", "LFF"):
        net = f"{s.model}(scale {s.scale:g}, {s.width} features) + linear readout"
    elif s.model == "RFF-MLP":
        net = f"RFF(scale {s.scale:g}, {s.width}) + {s.depth} x {s.activation} layer(s) of width {s.width}"
    else:
        net = f"MLP, {s.depth} x {s.activation} layer(s) of width {s.width}"
    return f"{KERNELS[s.kernel]} of {net}"


def _first_features(model: nn.Module) -> nn.Module:
    # The first feature map: the Fourier features, or the MLP's first hidden layer.
    first = model[0]
    if isinstance(first, (RFF, LFF)):
        return first
    return model[:2]


def _ntk(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    try:
        from .ntk import ntk
    except ImportError as err:  # pragma: no cover - only while ntk.py is missing
        raise ImportError("the NTK needs neuralspec.ntk (neuralspec/ntk.py)") from err
    K = ntk(model, x)
    if K.dim() != 2:  # a per-output NTK (N, N, 1, 1) or similar: scalar output, drop it
        K = K.reshape(x.shape[0], x.shape[0])
    return K


def explore(settings: Union[ExplorerSettings, Mapping[str, Any], None] = None, *,
            device: Union[str, torch.device, None] = None, **changes: Any) -> ExplorerData:
    r"""Compute what the explorer shows for one setting.

    Builds the network of :func:`build_model`, evaluates the kernel on
    ``n_points`` inputs evenly spaced on :math:`[0, 1]`, and returns its
    eigendecomposition :math:`K = U \operatorname{diag}(\lambda) U^\top`
    with the round-off floor :math:`10\,\epsilon\,\lambda_1` marked.
    Deterministic: the same settings give the same arrays.

    Parameters
    ----------
    settings : ExplorerSettings or dict, optional
        Defaults to ``ExplorerSettings()``; keyword arguments override single
        settings, e.g. ``explore(scale=30, kernel="feature")``.
    device : str or torch.device, optional
        Where to compute (the network is initialized on the CPU first, so the
        weights do not depend on the device). Default: the CPU.

    Returns
    -------
    ExplorerData

    Raises
    ------
    ValueError, TypeError
        For an unknown model, kernel, activation or setting name, or a value
        out of range (the message says which and what is expected).
    """
    s = _settings(settings, changes)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    # Small problems run single-threaded on the CPU: a few milliseconds either
    # way, but immune to the erratic slowdowns of idle-spinning worker threads
    # on a busy machine (measured: 0.03 s vs 0.1-1.4 s on a loaded 2-core CPU).
    small = dev.type == "cpu" and s.n_points <= _SINGLE_THREAD_POINTS
    with torch_threads(1 if small else None):
        return _explore(s, dev)


_SINGLE_THREAD_POINTS = 512


def _explore(s: ExplorerSettings, dev: torch.device) -> ExplorerData:
    t0 = time.perf_counter()
    model = build_model(s)
    model = model.to(dev)
    x = torch.linspace(0.0, 1.0, s.n_points, dtype=_DTYPES[s.dtype], device=dev)[:, None]
    if s.kernel == "feature":
        K = feature_kernel(_first_features(model), x, normalize=True)
    elif s.kernel == "CK":
        K = conjugate_kernel(model, x)
    else:
        K = _ntk(model, x)
    K = K.detach()
    evals, evecs = eigh(K)
    k = s.n_eigenfunctions
    evals = evals.cpu().numpy()
    U = evecs[:, :k].cpu().numpy().copy()
    for i in range(k):  # a deterministic sign: the first large entry is positive
        u = U[:, i]
        j = int(np.argmax(np.abs(u) > 0.1 * np.abs(u).max()))
        if u[j] < 0:
            U[:, i] = -u
    floor = numerical_floor(evals)
    return ExplorerData(
        settings=s,
        x=x[:, 0].cpu().numpy(),
        kernel=K.cpu().numpy(),
        eigvals=evals,
        eigvecs=U,
        floor=floor,
        numerical_rank=numerical_rank(evals, tol=floor),
        effective_rank=effective_rank(evals),
        description=_describe(s),
        seconds=time.perf_counter() - t0,
    )


_IPYWIDGETS_HINT = ("KernelExplorer needs ipywidgets: pip install 'ipywidgets>=8' "
                    "(or pip install 'neuralspec[widgets]'). explore() works without it.")


def _require_ipywidgets(message: str = _IPYWIDGETS_HINT):
    try:
        import ipywidgets
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(message) from err
    return ipywidgets


class WidgetExplorer:
    """The machinery every explorer shares: controls in, a pure function, one PNG figure out.

    An explorer is a dict of ``ipywidgets`` controls, a status line and an
    ``ipywidgets.Image`` holding the figure as PNG bytes (so a saved notebook
    or a static page keeps the picture). Every change of a control calls
    :meth:`update`, which computes the data from the controls' values, draws
    it on a fresh matplotlib ``Figure`` outside ``pyplot`` and shows it. A
    failed computation keeps the last good figure and shows the message.
    :meth:`hold` and :meth:`set` change several controls with one update.
    Only widgets and APIs present in ipywidgets 7.7 (Colab) and 8 are used.

    A subclass builds its controls in ``__init__`` between ``self._start()``
    and ``self._finish(W, controls, rows, max_width)``, and implements the
    hooks ``_compute()`` (the controls' values to the data, by the module's
    pure function) and ``_status(data)`` (the status line for new data); it
    may override ``_draw(fig, data)``, ``_sync_controls(data)`` and
    ``_summary()``, and sets the class attributes ``figsize``, ``dpi``,
    ``_margins``, ``_panels``, ``_update_errors`` and ``_missing_ipywidgets``.
    :class:`KernelExplorer` is the example.

    Attributes
    ----------
    controls : dict of str to ipywidgets.Widget
        Setting a control's ``.value`` updates the explorer.
    data
        What is displayed now (``None`` before the first successful update).
    error : str or None
        The message of the last failed update, else ``None``.
    n_updates : int
        How many times the figure was recomputed.
    last_update_seconds : float
        Wall time of the last successful update (computation and drawing).
    widget : ipywidgets.VBox
        The whole explorer; displaying the explorer displays it.
    """

    #: Figure size in inches and resolution of the PNG.
    figsize = (13.0, 3.8)
    dpi = 80
    #: ``Figure.subplots_adjust`` arguments (a fixed layout keeps a redraw cheap).
    _margins: Dict[str, float] = {}
    #: Rows and columns of panels passed to ``Figure.subplots`` by ``_draw``.
    _panels = (1, 1)
    #: Exceptions of ``_compute()`` that mean "these settings cannot be shown".
    _update_errors: tuple = (ValueError, TypeError, RuntimeError)
    #: The ImportError message when ipywidgets is missing.
    _missing_ipywidgets = "this explorer needs ipywidgets: pip install ipywidgets."

    # -- construction ------------------------------------------------------------
    def _start(self):
        """Import ipywidgets (a clear ImportError if missing) and reset the state; returns the module."""
        W = _require_ipywidgets(self._missing_ipywidgets)
        self.error: Optional[str] = None
        self.n_updates = 0
        self.last_update_seconds = float("nan")
        self._hold = 0
        self._pending = False
        return W

    def _finish(self, W, controls: Dict[str, Any], rows: Sequence[Any], max_width: str) -> None:
        """Observe the controls, lay out ``rows`` above the status line and the image, draw once."""
        self.controls: Dict[str, Any] = controls
        for c in controls.values():
            c.observe(self._on_change, names="value")
        self.image = W.Image(format="png", layout=W.Layout(width="100%", max_width=max_width))
        self.status = W.HTML()
        self.widget = W.VBox([*rows, self.status, self.image])
        self.data: Any = None
        self.update()

    # -- batching ------------------------------------------------------------------
    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Change several controls with a single update at the end of the ``with`` block."""
        self._hold += 1
        try:
            yield
        finally:
            self._hold -= 1
            if self._hold == 0 and self._pending:
                self.update()

    def set(self, **values: Any):
        """Set several controls at once (one update); returns the new :attr:`data`."""
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise TypeError(f"unknown control(s) {unknown}; the controls are {list(self.controls)}.")
        with self.hold():
            for k, v in values.items():
                self.controls[k].value = v
        return self.data

    def _on_change(self, change: Mapping[str, Any]) -> None:
        if self._hold:
            self._pending = True
        else:
            self.update()

    # -- the update --------------------------------------------------------------
    def update(self) -> None:
        """Recompute with the controls' values and redraw (called on every change)."""
        self._pending = False
        t0 = time.perf_counter()
        try:
            data = self._compute()
        except self._update_errors as err:
            self.error = str(err)
            self.status.value = f'<span style="color:#b00">Cannot update: {_html_escape(self.error)}</span>'
            return
        self.error = None
        self._sync_controls(data)
        self.image.value = self._render(data)
        self.data = data
        self.n_updates += 1
        self.last_update_seconds = time.perf_counter() - t0
        self.status.value = self._status(data)

    def _compute(self) -> Any:
        """The data for the controls' values (raise one of ``_update_errors`` for bad settings)."""
        raise NotImplementedError

    def _status(self, data: Any) -> str:
        """The status line (HTML) for newly shown data."""
        raise NotImplementedError

    def _sync_controls(self, data: Any) -> None:
        """Adjust the controls to newly computed data (before it is drawn); nothing by default."""

    def _draw(self, fig, data: Any) -> None:
        """Draw ``data`` on the empty figure ``fig``: by default ``data.plot`` on ``_panels`` axes."""
        data.plot(fig.subplots(*self._panels))

    def _render(self, data: Any) -> bytes:
        # A fresh Figure outside pyplot (no figure piles up, no backend needed).
        import matplotlib
        from matplotlib.figure import Figure

        from .plotting import STYLE

        with matplotlib.rc_context(STYLE):
            fig = Figure(figsize=self.figsize, dpi=self.dpi)
            fig.subplots_adjust(**self._margins)
            self._draw(fig, data)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=self.dpi)
        return buf.getvalue()

    # -- display -------------------------------------------------------------
    def display(self) -> None:
        """Show the explorer in the notebook."""
        from IPython.display import display

        display(self.widget)

    def _repr_mimebundle_(self, **kwargs: Any):
        # The widget view (ipywidgets 8 has _repr_mimebundle_; 7, as on Colab, does not).
        bundle = {
            "application/vnd.jupyter.widget-view+json": {
                "version_major": 2, "version_minor": 0, "model_id": self.widget.model_id,
            }
        }
        # Frontends without a widget manager show the current figure instead.
        if self.image.value:
            import base64

            bundle["image/png"] = base64.b64encode(self.image.value).decode("ascii")
        bundle["text/plain"] = self._plain_text()
        return bundle

    def _summary(self) -> str:
        return self.data.summary() if self.data else "no data"

    def _plain_text(self) -> str:
        return f"{type(self).__name__}({self._summary()})"

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self._summary()}>"


class KernelExplorer(WidgetExplorer):
    """An interactive explorer: one control per setting, one figure that follows them.

    Every change of a control calls :func:`explore` with the controls' values
    and redraws the figure (an ``ipywidgets.Image`` holding a PNG, so a saved
    notebook or a static page keeps the picture). Sliders update when released.
    :meth:`~WidgetExplorer.update`, :meth:`~WidgetExplorer.hold` and
    :meth:`~WidgetExplorer.display` come from :class:`WidgetExplorer`.

    Parameters
    ----------
    settings : ExplorerSettings or dict, optional
        The initial settings; keyword arguments override single ones.
    device : optional
        Passed to :func:`explore`.

    Attributes
    ----------
    controls : dict of str to ipywidgets.Widget
        ``"model"``, ``"kernel"``, ``"scale"``, ``"width"``, ``"depth"``,
        ``"activation"``, ``"n_points"``, ``"seed"``, ``"dtype"``. Setting a
        control's ``.value`` updates the explorer.
    data : ExplorerData
        What is displayed now.
    error : str or None
        The message of the last failed update (the display keeps the last good
        figure and shows the message), else ``None``.
    n_updates : int
        How many times the figure was recomputed.
    last_update_seconds : float
        Wall time of the last update (computation and drawing).
    widget : ipywidgets.VBox
        The whole explorer; displaying the explorer displays it.

    Examples
    --------
    In a notebook::

        from neuralspec.widgets import KernelExplorer
        explorer = KernelExplorer(kernel="CK")
        explorer                              # the controls and the figure
        explorer.controls["scale"].value = 40 # the figure follows
        explorer.data.effective_rank          # what is displayed, as numbers
    """

    #: Figure size in inches and resolution of the PNG.
    figsize = (13.0, 3.8)
    dpi = 80
    _margins = dict(left=0.05, right=0.985, bottom=0.14, top=0.84, wspace=0.42)
    _panels = (1, 3)
    _missing_ipywidgets = _IPYWIDGETS_HINT

    def __init__(self, settings: Union[ExplorerSettings, Mapping[str, Any], None] = None, *,
                 device: Union[str, torch.device, None] = None, **changes: Any) -> None:
        W = self._start()
        s = _settings(settings, changes)
        self.device = device
        self._n_eigenfunctions = s.n_eigenfunctions

        style = {"description_width": "70px"}
        slider = dict(continuous_update=False, style=style, layout=W.Layout(width="260px"))
        widths = sorted({16, 32, 64, 128, 256, 512, 1024, 2048, s.width})
        c: Dict[str, Any] = {
            "model": W.Dropdown(options=list(MODELS), value=s.model, description="model",
                                style=style, layout=W.Layout(width="200px")),
            "kernel": W.ToggleButtons(options=[("feature Gram", "feature"), ("CK", "CK"), ("NTK", "NTK")],
                                      value=s.kernel, description="kernel",
                                      style={**style, "button_width": "110px"}),
            "scale": W.FloatLogSlider(value=s.scale, base=10, min=min(-1.0, math.floor(math.log10(s.scale))),
                                      max=max(2.5, math.ceil(math.log10(s.scale))), step=0.05,
                                      description="scale", readout_format=".3g", **slider),
            "width": W.SelectionSlider(options=widths, value=s.width, description="width", **slider),
            "depth": W.IntSlider(value=s.depth, min=1, max=max(8, s.depth), description="depth", **slider),
            "activation": W.Dropdown(options=sorted(ACTIVATIONS), value=s.activation,
                                     description="activation", style=style, layout=W.Layout(width="200px")),
            "n_points": W.IntSlider(value=s.n_points, min=min(20, s.n_points), max=max(1000, s.n_points),
                                    step=10 if s.n_points % 10 == 0 else 1,
                                    description="points", **slider),
            "seed": W.BoundedIntText(value=s.seed, min=0, max=2**31 - 1, description="seed",
                                     style=style, layout=W.Layout(width="160px")),
            "dtype": W.Dropdown(options=list(_DTYPES), value=s.dtype, description="dtype",
                                style=style, layout=W.Layout(width="200px")),
        }
        self._finish(W, c, [
            W.HBox([c["model"], c["activation"], c["dtype"], c["seed"]]),
            c["kernel"],
            W.HBox([c["scale"], c["width"], c["depth"], c["n_points"]], layout=W.Layout(flex_flow="row wrap")),
        ], max_width="1040px")

    @property
    def settings(self) -> ExplorerSettings:
        """The settings the controls show now."""
        values = {k: c.value for k, c in self.controls.items()}
        values["n_eigenfunctions"] = min(self._n_eigenfunctions, values["n_points"])
        return ExplorerSettings(**values)

    def set(self, **values: Any) -> ExplorerData:
        """Set several controls at once (one update); returns the new :attr:`data`."""
        return super().set(**values)

    def _compute(self) -> ExplorerData:
        return explore(self.settings, device=self.device)

    def _sync_controls(self, data: ExplorerData) -> None:
        # Grey out the controls this model ignores.
        for name, c in self.controls.items():
            if name in ("scale", "depth", "activation"):
                c.disabled = name in data.settings.unused

    def _status(self, data: ExplorerData) -> str:
        return (
            f"{_html_escape(data.description)} &mdash; N = {len(data.x)}, numerical rank "
            f"<b>{data.numerical_rank}</b>, effective rank <b>{data.effective_rank:.1f}</b> "
            f"(update {self.last_update_seconds:.2f} s)"
        )

    def _draw(self, fig, data: ExplorerData) -> None:
        # Plain log-axis tick labels keep a redraw cheap: the constrained layout
        # and mathtext tick labels cost more than the kernel.
        from matplotlib import ticker

        axes = fig.subplots(*self._panels)
        data.plot(axes)
        axes[1].yaxis.set_major_formatter(ticker.LogFormatter(labelOnlyBase=True))
        axes[1].yaxis.set_minor_locator(ticker.NullLocator())


def _html_escape(s: str) -> str:
    import html

    return html.escape(s, quote=False)
