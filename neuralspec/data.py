r"""Data with known frequency content, and the frequency analysis of kernels on it.

Two domains:

* the interval :math:`[0, 1)`, sampled on the uniform grid :math:`x_j = j/N`,
  with targets :math:`y(x) = \sum_k a_k \sin(2\pi k x + \varphi_k)`
  (:func:`sine_data`);
* the unit circle, sampled at :math:`x_j = (\cos\theta_j, \sin\theta_j)`
  with :math:`\theta_j = 2\pi j / N` (:func:`circle_data`).

Both grids are periodic, so the discrete Fourier transform splits a
function sampled on them (a target, a residual, an eigenvector) exactly into
frequencies (:func:`frequency_amplitudes`, :func:`fourier_modes`). On the
circle a rotation-invariant kernel :math:`k(x, x') = \kappa(x^\top x')`
gives a *circulant* matrix, whose eigenvectors are the Fourier modes and
whose eigenvalues are the DFT of its first row (:func:`circle_spectrum`).
:func:`fit_power_law` fits the decay of those eigenvalues with frequency.

NumPy in, NumPy out, unless a function says otherwise; grids and targets
are float64 (convert with ``torch.as_tensor(..., dtype=...)`` or let
:func:`~neuralspec.training.train` convert them to the model's dtype).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._validation import ArrayLike, as_real_array

__all__ = [
    "sum_of_sines",
    "sine_data",
    "circle_grid",
    "circle_data",
    "fourier_modes",
    "frequency_amplitudes",
    "circle_spectrum",
    "fit_power_law",
    "PowerLawFit",
    "gratings",
]


def _check_n(n, name: str = "n", minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {n!r}.")
    return int(n)


def _coefficients(freqs, amplitudes, phases) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = as_real_array(freqs, "freqs").reshape(-1) if np.ndim(freqs) else as_real_array([freqs], "freqs")
    if f.size == 0:
        raise ValueError("freqs is empty; give at least one frequency.")
    if not np.all(np.isfinite(f)) or np.any(f < 0):
        raise ValueError(f"freqs must be finite and >= 0; got {f.tolist()}.")

    def match(v, name, default):
        if v is None:
            return np.full(f.shape, default)
        a = as_real_array(v, name).reshape(-1) if np.ndim(v) else np.full(f.shape, float(v))
        if a.shape != f.shape:
            raise ValueError(
                f"{name} must have one entry per frequency ({f.size}); got {a.size}."
            )
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite; got {a.tolist()}.")
        return a

    return f, match(amplitudes, "amplitudes", 1.0), match(phases, "phases", 0.0)


def sum_of_sines(
    t: ArrayLike,
    freqs: Union[float, Sequence[float]],
    amplitudes: Union[None, float, Sequence[float]] = None,
    phases: Union[None, float, Sequence[float]] = None,
    *,
    period: float = 1.0,
) -> np.ndarray:
    r"""A sum of sinusoids with given frequencies, amplitudes and phases.

    .. math::

        y(t) = \sum_{k} a_k \sin\!\Big(\frac{2\pi f_k t}{T} + \varphi_k\Big),

    with ``T = period``: ``f_k`` full cycles per period. Use ``period=1`` on
    :math:`[0, 1)` and ``period=2*pi`` for an angle :math:`\theta` on the
    circle (then a phase of :math:`\pi/2` turns :math:`\sin k\theta` into
    :math:`\cos k\theta`).

    Parameters
    ----------
    t : array of shape (N,) or (N, 1)
        Where to evaluate.
    freqs : float or sequence of float
        Frequencies ``f_k`` (>= 0), in cycles per period.
    amplitudes, phases : float or sequence, optional
        One per frequency (a scalar is broadcast); defaults 1 and 0.
    period : float

    Returns
    -------
    numpy.ndarray
        ``(N,)``, float64.
    """
    tt = as_real_array(t, "t")
    if tt.ndim == 2 and tt.shape[1] == 1:
        tt = tt[:, 0]
    if tt.ndim != 1:
        raise ValueError(f"t must have shape (N,) or (N, 1); got {tt.shape}.")
    if not (isinstance(period, (int, float)) and math.isfinite(period) and period > 0):
        raise ValueError(f"period must be a positive number; got {period!r}.")
    f, a, p = _coefficients(freqs, amplitudes, phases)
    return (a[None, :] * np.sin(2 * np.pi * tt[:, None] * f[None, :] / period + p[None, :])).sum(1)


def sine_data(
    n: int,
    freqs: Union[float, Sequence[float]],
    amplitudes: Union[None, float, Sequence[float]] = None,
    phases: Union[None, float, Sequence[float]] = None,
    *,
    noise: float = 0.0,
    seed: Optional[int] = None,
    offset: float = 0.0,
) -> Tuple[np.ndarray, np.ndarray]:
    r"""A uniform grid on :math:`[0, 1)` and a sum of sines on it.

    .. math::

        x_j = \frac{j + \text{offset}}{N},\quad j = 0, \dots, N - 1, \qquad
        y_j = \sum_k a_k \sin(2\pi f_k x_j + \varphi_k) + \varepsilon_j,
        \quad \varepsilon_j \sim \mathcal N(0, \text{noise}^2).

    The grid leaves out the end point ``1``, so an integer frequency is
    periodic on it and the DFT of ``y`` has exactly amplitude ``a_k`` at
    ``f_k`` (see :func:`frequency_amplitudes`). ``offset=0.5`` gives the
    midpoints, a natural held-out test set for the grid with ``offset=0``.

    Returns
    -------
    x : numpy.ndarray
        ``(N, 1)`` inputs, float64.
    y : numpy.ndarray
        ``(N,)`` targets, float64.
    """
    n = _check_n(n)
    if not (math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite standard deviation >= 0; got {noise!r}.")
    x = ((np.arange(n) + float(offset)) / n)[:, None]
    y = sum_of_sines(x, freqs, amplitudes, phases)
    if noise > 0:
        y = y + noise * np.random.default_rng(seed).standard_normal(n)
    return x, y


def circle_grid(n: int) -> Tuple[np.ndarray, np.ndarray]:
    r"""``n`` equally spaced points on the unit circle.

    .. math:: \theta_j = \frac{2\pi j}{N}, \qquad x_j = (\cos\theta_j, \sin\theta_j).

    Returns
    -------
    theta : numpy.ndarray
        ``(N,)`` angles in :math:`[0, 2\pi)`.
    x : numpy.ndarray
        ``(N, 2)`` points, float64.
    """
    n = _check_n(n)
    theta = 2 * np.pi * np.arange(n) / n
    return theta, np.stack([np.cos(theta), np.sin(theta)], axis=1)


def circle_data(
    n: int,
    freqs: Union[float, Sequence[float]],
    amplitudes: Union[None, float, Sequence[float]] = None,
    phases: Union[None, float, Sequence[float]] = None,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Points on the circle and a function of the angle with given frequencies.

    .. math:: y_j = \sum_k a_k \sin(k\,\theta_j + \varphi_k).

    Returns
    -------
    theta : (N,), x : (N, 2), y : (N,)
        float64 arrays; ``x`` is the network input.
    """
    theta, x = circle_grid(n)
    return theta, x, sum_of_sines(theta, freqs, amplitudes, phases, period=2 * np.pi)


def fourier_modes(n: int, freqs: Union[int, Sequence[int]]) -> Tuple[np.ndarray, np.ndarray]:
    r"""Orthonormal Fourier modes on an ``n``-point uniform periodic grid.

    For each integer frequency :math:`k` the columns are

    .. math::

        \sqrt{\tfrac{2}{N}}\cos\frac{2\pi k j}{N},\quad
        \sqrt{\tfrac{2}{N}}\sin\frac{2\pi k j}{N}
        \qquad (0 < k < N/2),

    and the single column :math:`1/\sqrt N` (:math:`k = 0`) or
    :math:`(-1)^j/\sqrt N` (:math:`k = N/2`). They are exactly orthonormal,
    and on the circle they are the eigenvectors of every rotation-invariant
    kernel matrix (:func:`circle_spectrum`).

    Parameters
    ----------
    n : int
        Number of grid points.
    freqs : int or sequence of int
        Frequencies in ``[0, n // 2]``; an int ``K`` means ``0, 1, ..., K``.

    Returns
    -------
    modes : numpy.ndarray
        ``(n, M)`` with orthonormal columns.
    mode_freqs : numpy.ndarray
        ``(M,)``: the frequency of each column (each ``0 < k < n/2`` twice:
        cosine, then sine).
    """
    n = _check_n(n)
    ks = np.arange(int(freqs) + 1) if np.ndim(freqs) == 0 else np.asarray(freqs)
    if ks.size == 0 or not np.issubdtype(ks.dtype, np.integer) or np.any(ks < 0) or np.any(ks > n // 2):
        raise ValueError(
            f"freqs must be integers in [0, {n // 2}] (n // 2 for n = {n}); got {np.asarray(freqs).tolist()}."
        )
    j = np.arange(n)
    cols, labels = [], []
    for k in ks.tolist():
        if k == 0 or 2 * k == n:
            cols.append(np.cos(2 * np.pi * k * j / n) / np.sqrt(n))
            labels.append(k)
        else:
            cols.append(np.sqrt(2.0 / n) * np.cos(2 * np.pi * k * j / n))
            cols.append(np.sqrt(2.0 / n) * np.sin(2 * np.pi * k * j / n))
            labels += [k, k]
    return np.stack(cols, axis=1), np.asarray(labels)


def frequency_amplitudes(values: ArrayLike, freqs: Union[None, int, Sequence[int]] = None) -> np.ndarray:
    r"""The amplitude of each frequency in functions sampled on a uniform periodic grid.

    For samples :math:`v_j`, :math:`j = 0..N-1`, with DFT
    :math:`\hat v_k = \sum_j v_j e^{-2\pi i kj/N}`, the amplitude of
    frequency :math:`k` is

    .. math::

        A_k = \frac{2\,|\hat v_k|}{N} \;(0 < k < N/2), \qquad
        A_0 = \frac{|\hat v_0|}{N}, \quad A_{N/2} = \frac{|\hat v_{N/2}|}{N},

    so :math:`a \sin(2\pi k j/N + \varphi)` has amplitude exactly ``a``
    whatever its phase. ``A_k`` is proportional to the norm of the
    projection of ``v`` onto the modes of frequency ``k``
    (:func:`fourier_modes`), with factor :math:`\sqrt{2/N}` for
    :math:`0 < k < N/2`.

    Parameters
    ----------
    values : array or tensor of shape (..., N)
        One function per row, e.g. the ``(T, N)`` residuals of
        :func:`~neuralspec.training.train` (on a :func:`sine_data` or
        :func:`circle_data` grid).
    freqs : int or sequence of int, optional
        Which frequencies to return (default all, ``0 .. N // 2``); an int
        ``K`` means ``0 .. K``.

    Returns
    -------
    numpy.ndarray
        ``(..., len(freqs))``, float64.
    """
    v = as_real_array(values, "values")
    if v.ndim < 1 or v.shape[-1] < 2:
        raise ValueError(f"values must have shape (..., N) with N >= 2 samples; got {v.shape}.")
    if not np.all(np.isfinite(v)):
        raise ValueError("values contains NaN or inf; expected finite samples.")
    n = v.shape[-1]
    amp = np.abs(np.fft.rfft(v, axis=-1)) / n
    interior = np.ones(amp.shape[-1], dtype=bool)
    interior[0] = False
    if n % 2 == 0:
        interior[-1] = False
    amp[..., interior] *= 2
    if freqs is None:
        return amp
    ks = np.arange(int(freqs) + 1) if np.ndim(freqs) == 0 else np.asarray(freqs)
    if ks.size == 0 or not np.issubdtype(ks.dtype, np.integer) or np.any(ks < 0) or np.any(ks > n // 2):
        raise ValueError(
            f"freqs must be integers in [0, {n // 2}] for N = {n} samples; got {np.asarray(freqs).tolist()}."
        )
    return amp[..., ks]


def circle_spectrum(
    K: ArrayLike,
    *,
    check: bool = True,
    rtol: float = 1e-5,
) -> Tuple[np.ndarray, np.ndarray]:
    r"""Eigenvalue per frequency of a rotation-invariant kernel on a uniform circle grid.

    On the grid of :func:`circle_grid`, a kernel that depends only on the
    angle between points, :math:`K_{ij} = c_{(j - i) \bmod N}`, is a
    symmetric circulant matrix. Its eigenvectors are the Fourier modes
    :math:`\cos k\theta, \sin k\theta` (:func:`fourier_modes`), and the
    eigenvalue of frequency :math:`k` is the DFT of the first row,

    .. math::

        \lambda_k = \sum_{j=0}^{N-1} c_j \cos\frac{2\pi k j}{N},
        \qquad k = 0, 1, \dots, \lfloor N/2 \rfloor,

    twice degenerate (cosine and sine) for :math:`0 < k < N/2`. This is
    exact, with no eigensolver.

    A kernel that is only approximately invariant (the empirical NTK of a
    finite-width network) is first projected onto the circulant matrices by
    averaging each wrapped diagonal, :math:`c_j = \frac1N \sum_i K_{i,(i+j) \bmod N}`.
    The result is then the mean Rayleigh quotient of the modes of
    frequency ``k``: :math:`\lambda_k = \tfrac12 (u_{k,c}^\top K u_{k,c} + u_{k,s}^\top K u_{k,s})`.

    Parameters
    ----------
    K : (N, N) matrix, or (N,) first row
        The kernel on ``circle_grid(N)``, tensor or array.
    check : bool
        For a matrix: raise ``ValueError`` when ``K`` is not circulant to
        ``rtol`` (relative to ``max |K|``). Pass ``check=False`` for a kernel
        that is circulant only on average.
    rtol : float

    Returns
    -------
    freqs : numpy.ndarray
        ``(N // 2 + 1,)`` integers ``0 .. N // 2``.
    eigvals : numpy.ndarray
        ``(N // 2 + 1,)`` float64, the eigenvalue of each frequency (not
        sorted: sorted by frequency).
    """
    Kn = as_real_array(K, "K")
    if not np.all(np.isfinite(Kn)):
        raise ValueError("K contains NaN or inf; expected a finite kernel matrix.")
    if Kn.ndim == 1:
        row = Kn
        if row.size < 2:
            raise ValueError("the first row must have N >= 2 entries.")
        asym = np.abs(row[1:] - row[1:][::-1]).max() if row.size > 2 else 0.0
        if check and asym > rtol * np.abs(row).max():
            raise ValueError(
                f"the first row is not symmetric (c_j != c_(N-j), max difference {asym:.3g}): "
                "it is not the first row of a symmetric circulant kernel matrix."
            )
    elif Kn.ndim == 2 and Kn.shape[0] == Kn.shape[1] and Kn.shape[0] >= 2:
        n = Kn.shape[0]
        i = np.arange(n)
        # c_j = mean_i K[i, (i + j) % n]
        idx = (i[:, None] + i[None, :]) % n
        row = Kn[i[:, None], idx].mean(axis=0)
        if check:
            circ = row[(i[None, :] - i[:, None]) % n]
            err = np.abs(Kn - circ).max()
            scale = np.abs(Kn).max()
            if err > rtol * scale:
                raise ValueError(
                    f"K is not circulant: max |K - circulant(K)| = {err:.3g}, {err / scale:.3g} of "
                    f"max |K| (tolerance rtol={rtol:g}). circle_spectrum needs a rotation-invariant "
                    "kernel on the uniform grid of circle_grid(N), in that order. For a kernel that "
                    "is invariant only on average (a finite-width empirical NTK), pass check=False "
                    "to get the Rayleigh quotient of each Fourier mode."
                )
    else:
        raise ValueError(
            f"K must be an (N, N) kernel matrix or its (N,) first row; got shape {Kn.shape}."
        )
    lam = np.fft.rfft(row).real
    return np.arange(lam.size), lam


class PowerLawFit(NamedTuple):
    r"""A fitted power law :math:`v \approx C\,k^{p}`."""

    exponent: float
    """``p`` (negative for a decay: ``-2`` means :math:`k^{-2}`)."""
    prefactor: float
    """``C``."""
    rms_log_residual: float
    """Root-mean-square of :math:`\\log v - \\log(C k^p)` (natural log)."""

    def __call__(self, k: ArrayLike) -> np.ndarray:
        """The fitted law at ``k``."""
        return self.prefactor * as_real_array(k, "k") ** self.exponent


def fit_power_law(k: ArrayLike, values: ArrayLike) -> PowerLawFit:
    r"""Least-squares fit of a power law in log-log coordinates.

    .. math::

        \min_{p, c}\; \sum_i \big(\log v_i - c - p \log k_i\big)^2,
        \qquad v \approx e^{c} k^{p}.

    Parameters
    ----------
    k : (M,) array
        Positive abscissae (frequencies), at least two distinct.
    values : (M,) array
        Positive values (eigenvalues). Zero or negative values (e.g. the
        vanishing odd frequencies of a bias-free ReLU kernel, or round-off)
        have no logarithm: select the points to fit before calling.

    Returns
    -------
    PowerLawFit
        ``exponent`` (``p``), ``prefactor`` (``e^c``), ``rms_log_residual``.
    """
    kk = as_real_array(k, "k").reshape(-1)
    vv = as_real_array(values, "values").reshape(-1)
    if kk.shape != vv.shape:
        raise ValueError(f"k and values must have the same length; got {kk.size} and {vv.size}.")
    if not (np.all(np.isfinite(kk)) and np.all(np.isfinite(vv))):
        raise ValueError("k and values must be finite.")
    if np.any(kk <= 0) or np.any(vv <= 0):
        bad = [(float(a), float(b)) for a, b in zip(kk, vv) if a <= 0 or b <= 0][:5]
        raise ValueError(
            "a power law is fitted in log-log coordinates, so k and values must be > 0; got "
            f"non-positive pairs (k, value) {bad}. Select the points to fit (e.g. only even "
            "frequencies, or values above the round-off floor) before calling."
        )
    if np.unique(kk).size < 2:
        raise ValueError("need at least two distinct k to fit a power law.")
    A = np.stack([np.log(kk), np.ones_like(kk)], axis=1)
    coef, *_ = np.linalg.lstsq(A, np.log(vv), rcond=None)
    res = np.log(vv) - A @ coef
    return PowerLawFit(float(coef[0]), float(np.exp(coef[1])), float(np.sqrt(np.mean(res**2))))


def gratings(
    n: int,
    size: int = 16,
    orientations: int = 4,
    seed: Optional[int] = 0,
    *,
    frequency: float = 3.0,
    channels: int = 3,
) -> Tuple[np.ndarray, np.ndarray]:
    r"""Images of oriented sinusoidal gratings with random phases: image-shaped data, no download.

    Image :math:`i` has orientation :math:`\theta_i = \pi\, c_i / C` with class
    :math:`c_i = i \bmod C` (``C = orientations``, so the classes are
    balanced) and a phase :math:`\varphi_i \sim U(0, 2\pi)`; its pixel at
    :math:`(u, v) = ((j + 1/2)/S, (k + 1/2)/S)` (column ``j``, row ``k``,
    ``S = size``) is

    .. math::

        I_i(u, v) = \cos\big(2\pi f\,(u \cos\theta_i + v \sin\theta_i) + \varphi_i\big),

    the same in every channel. For one orientation the images span a 2-D
    space (:math:`\cos\varphi` and :math:`\sin\varphi` parts), so the whole set
    spans at most ``2 * orientations`` dimensions of the ``channels * size**2``
    of pixel space.

    Parameters
    ----------
    n : int
        Number of images.
    size : int
        Side of the square images in pixels (at least 2).
    orientations : int
        Number of equally spaced orientations in :math:`[0, \pi)`.
    seed : int or None
        Seed of the phases.
    frequency : float
        Cycles per image side, :math:`f > 0`.
    channels : int
        Channels per image (3 for an RGB-shaped input).

    Returns
    -------
    x : numpy.ndarray
        ``(n, channels, size, size)`` images, float64, values in ``[-1, 1]``.
    labels : numpy.ndarray
        ``(n,)`` orientation classes ``0 .. orientations - 1``, int64.

    Examples
    --------
    >>> import neuralspec as ns
    >>> x, labels = ns.gratings(8, size=16, orientations=4, seed=0)
    >>> x.shape, labels.tolist()
    ((8, 3, 16, 16), [0, 1, 2, 3, 0, 1, 2, 3])
    """
    n = _check_n(n)
    size = _check_n(size, "size", minimum=2)
    orientations = _check_n(orientations, "orientations")
    channels = _check_n(channels, "channels")
    if isinstance(frequency, bool) or not isinstance(frequency, (int, float, np.integer, np.floating)) \
            or not math.isfinite(frequency) or frequency <= 0:
        raise ValueError(f"frequency must be a positive finite number of cycles per image; got {frequency!r}.")
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % orientations
    theta = np.pi * labels / orientations
    phase = rng.uniform(0.0, 2 * np.pi, n)
    u = (np.arange(size) + 0.5) / size
    U, V = np.meshgrid(u, u, indexing="xy")  # U varies along a row (columns), V down a column (rows)
    arg = 2 * np.pi * frequency * (np.cos(theta)[:, None, None] * U + np.sin(theta)[:, None, None] * V)
    img = np.cos(arg + phase[:, None, None])
    x = np.ascontiguousarray(np.broadcast_to(img[:, None], (n, channels, size, size)))
    return x, labels
