"""Figures of the course: kernel images, log-scale spectra, eigenfunctions.

Every helper draws on a given ``ax`` (or a new one), sets a title and axis
labels, and returns the ``Axes`` so a chapter can add to it. Chapters call
these from cells tagged ``hide-input``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = [
    "STYLE",
    "use_style",
    "plot_kernel",
    "plot_spectrum",
    "plot_eigenfunctions",
    "plot_features",
    "to_numpy",
]

STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "image.cmap": "viridis",
}


def use_style(*, hidpi: bool = True) -> None:
    """Apply the course's matplotlib style (one look across chapters).

    With ``hidpi`` (default) and inside IPython with the inline backend, figures
    are sent as PNGs at twice their pixel density ("retina"), so they stay crisp
    on high-DPI screens in Jupyter, Colab and the built book alike, at the same
    displayed size.
    """
    plt.rcParams.update(STYLE)
    if hidpi:
        try:
            from IPython import get_ipython
            from matplotlib_inline.backend_inline import set_matplotlib_formats
        except ImportError:  # not in IPython: nothing to configure
            return
        if get_ipython() is not None:
            set_matplotlib_formats("retina")


def to_numpy(a) -> np.ndarray:
    """A tensor or array as a NumPy array (detached, on the CPU)."""
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _ax(ax):
    if ax is None:
        _, ax = plt.subplots()
    return ax


def plot_kernel(K, x=None, ax=None, title: str = "Kernel matrix", colorbar: bool = True,
                cmap: Optional[str] = None, label: str = "$K(x, x')$"):
    """Show a kernel matrix as an image, with the input range on the axes when ``x`` is 1-D."""
    ax = _ax(ax)
    K = to_numpy(K)
    extent = None
    if x is not None:
        xs = to_numpy(x).reshape(len(K), -1)
        if xs.shape[1] == 1:
            extent = (xs[0, 0], xs[-1, 0], xs[-1, 0], xs[0, 0])
    im = ax.imshow(K, extent=extent, cmap=cmap, interpolation="nearest")
    ax.grid(False)
    ax.set_title(title)
    ax.set_xlabel("$x'$" if extent else "index $j$")
    ax.set_ylabel("$x$" if extent else "index $i$")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, label=label, fraction=0.046, pad=0.04)
    return ax


def plot_spectrum(eigvals, ax=None, floor: Optional[float] = None, label: Optional[str] = None,
                  title: str = "Eigenvalue spectrum", normalize: bool = False, marker: str = ".",
                  floor_label: Optional[str] = "round-off floor", **kwargs):
    """Eigenvalues against their index on a log scale, with the round-off floor marked.

    Plots ``|lambda_i|`` (negative eigenvalues, which are round-off, appear as
    their magnitude, hollow); ``normalize`` divides by ``lambda_max``.
    """
    ax = _ax(ax)
    ev = np.sort(to_numpy(eigvals).astype(float))[::-1]
    s = ev[0] if normalize and ev[0] != 0 else 1.0
    idx = np.arange(1, len(ev) + 1)
    mag = np.abs(ev) / s
    line, = ax.semilogy(idx[ev > 0], mag[ev > 0], marker, label=label, **kwargs)
    neg = ev <= 0
    if neg.any():
        ax.semilogy(idx[neg], np.maximum(mag[neg], np.finfo(float).tiny), marker,
                    mfc="none", color=line.get_color(), alpha=0.6)
    if floor is not None:
        ax.axhline(floor / s, color=line.get_color(), ls="--", lw=1, label=floor_label)
    ax.set_title(title)
    ax.set_xlabel("index $i$")
    ax.set_ylabel(r"$\lambda_i / \lambda_1$" if normalize else r"$|\lambda_i|$")
    if label is not None or floor_label is not None and floor is not None:
        ax.legend()
    return ax


def plot_eigenfunctions(x, eigvecs, k: int = 4, ax=None, title: str = "Top eigenvectors",
                        labels: Optional[Sequence[str]] = None):
    """The first ``k`` eigenvectors against a 1-D input ``x`` (sign fixed so each starts positive)."""
    ax = _ax(ax)
    xs = to_numpy(x).reshape(-1)
    U = to_numpy(eigvecs)
    for i in range(min(k, U.shape[1])):
        u = U[:, i]
        j = np.argmax(np.abs(u) > 0.1 * np.abs(u).max())
        u = u * np.sign(u[j] or 1.0)
        ax.plot(xs, u, lw=1.5, label=labels[i] if labels else f"$u_{{{i + 1}}}$")
    ax.set_title(title)
    ax.set_xlabel("$x$")
    ax.set_ylabel("eigenvector entry")
    ax.legend(ncol=min(k, 4))
    return ax


def plot_features(x, features, k: int = 5, ax=None, title: str = "Features"):
    """The first ``k`` features (columns of ``Phi``) against a 1-D input ``x``."""
    ax = _ax(ax)
    xs = to_numpy(x).reshape(-1)
    F = to_numpy(features)
    for i in range(min(k, F.shape[1])):
        ax.plot(xs, F[:, i], lw=1.2, label=rf"$\phi_{{{i + 1}}}$")
    ax.set_title(title)
    ax.set_xlabel("$x$")
    ax.set_ylabel(r"$\phi_k(x)$")
    ax.legend(ncol=min(k, 5))
    return ax
