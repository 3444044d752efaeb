r"""Kernel regression and what the kernel's spectrum predicts about its test error.

* :func:`kernel_regression`: the predictor

  .. math::

      f(x) = k(x, X)^\top (K + \delta I)^{-1} y ,

  with :math:`K = k(X, X)` the (un-normalized) Gram matrix of the ``p``
  training points and :math:`\delta \ge 0` the ridge. With :math:`\delta = 0`
  it is the function a wide network trained to convergence by gradient flow
  from a zero output converges to, with :math:`k` its neural tangent kernel
  (Jacot et al. 2018; Lee et al. 2019).
* :func:`learning_curve`: the expected test error of that predictor on ``p``
  random training points, from the kernel's spectrum alone (Bordelon et al.
  2020; Canatar et al. 2021; Simon et al. 2021). With :math:`\mu_k` the
  eigenvalues of the kernel's integral operator under the data distribution
  (Gram eigenvalues divided by the number of samples), :math:`v_k^2` the
  target's power in the orthonormal eigenbasis, :math:`\sigma^2` the label
  noise variance,

  .. math::

      \kappa = \delta + \kappa \sum_k \frac{\mu_k}{p\mu_k + \kappa}, \qquad
      L_k = \frac{p\mu_k}{p\mu_k + \kappa}, \qquad
      \gamma = \sum_k \frac{p\mu_k^2}{(p\mu_k + \kappa)^2}, \qquad
      E_g = \frac{\sum_k (1 - L_k)^2 v_k^2 + \sigma^2\gamma}{1 - \gamma}.

* :func:`target_power`: :math:`v_k^2` from the eigenvectors of a Gram matrix
  on ``N`` samples.
  For a dot-product kernel on the sphere the exact :math:`\mu_k` and their
  multiplicities come from :func:`~neuralspec.sphere.sphere_spectrum`
  (``learning_curve(..., multiplicity=...)``), on the circle from
  :func:`~neuralspec.data.circle_spectrum`.

NumPy in (tensors are accepted), float64 NumPy out.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import scipy.linalg
import scipy.optimize
from threadpoolctl import ThreadpoolController

from ._validation import ArrayLike, as_real_array

__all__ = ["kernel_regression", "learning_curve", "LearningCurve", "target_power"]

#: Relative size below which a negative eigenvalue counts as round-off (float32 eigh reaches ~1e-6).
NEGATIVE_TOL = 1e-5


def _nonneg_number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}.")
    return float(value)


def _finite(a: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(a)):
        n_nan, n_inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        raise ValueError(f"{name} contains non-finite values ({n_nan} NaN, {n_inf} inf); "
                         "expected only finite numbers.")


# ----------------------------------------------------------------------------
# Kernel regression
# ----------------------------------------------------------------------------

# Below this many training points a solve runs on one BLAS thread: waking a second one
# costs more than it saves on matrices this small. Measured alone on 2 cores: p = 128
# one thread 0.31 ms against 0.38, p = 1024 35 ms against 52, p = 2048 even, p = 4096 two
# threads 20% faster. Inside chapter 7's learning-curve simulations, thousands of small
# solves between torch ops, the gap was far larger (40 s on two BLAS threads, 23 s on
# one, the same printed numbers), most likely torch's OpenMP threads still spinning.
_ONE_THREAD_BELOW = 1536
_blas = None


def _blas_threads(p: int):
    """A context with numpy's/scipy's BLAS on one thread when ``p`` is small, else as is."""
    global _blas
    if p >= _ONE_THREAD_BELOW:
        return contextlib.nullcontext()
    if _blas is None:
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def kernel_regression(
    K_train: ArrayLike,
    y_train: ArrayLike,
    K_test_train: ArrayLike,
    *,
    ridge: float = 0.0,
) -> np.ndarray:
    r"""Kernel (ridge) regression: predictions :math:`k(X_*, X)(K + \delta I)^{-1} y`.

    .. math::

        \hat f(X_*) = K_{*X}\, \alpha, \qquad (K + \delta I)\,\alpha = y ,

    with :math:`K` the ``(p, p)`` Gram matrix of the training points,
    :math:`K_{*X}` the ``(M, p)`` kernel between test and training points and
    :math:`\delta` the ridge (the un-normalized convention: :math:`\delta`
    is added to :math:`K`, not to :math:`K/p`).

    The linear system is solved in float64. For ``ridge > 0`` by Cholesky
    (``scipy.linalg.cho_factor``). For ``ridge = 0`` (interpolation) by
    Cholesky when :math:`K` is numerically positive definite and well
    conditioned (reciprocal condition number above :math:`p\,\epsilon`, from
    LAPACK's ``pocon``), otherwise by an SVD-based least-squares solve
    (``scipy.linalg.lstsq``, ``gelsd``), which returns the minimum-norm
    interpolant of a singular :math:`K` (repeated points, a finite-rank
    kernel) instead of amplifying round-off. Systems of fewer than 1536 points
    run with NumPy's and SciPy's BLAS on one thread (``threadpoolctl``): at
    those sizes a second thread costs more than it saves.

    Parameters
    ----------
    K_train : (p, p) array or tensor
        Symmetric positive semi-definite Gram matrix of the training points.
    y_train : (p,) or (p, T) array or tensor
        Targets (``T`` targets are solved at once).
    K_test_train : (M, p) array or tensor
        Kernel between the ``M`` test points and the training points.
    ridge : float
        :math:`\delta \ge 0`.

    Returns
    -------
    numpy.ndarray
        ``(M,)`` or ``(M, T)`` predictions, float64.

    Raises
    ------
    ValueError
        Mismatched shapes, a non-finite kernel or target, a negative ridge,
        or ``K_train + ridge I`` not positive definite when ``ridge > 0``.
    """
    K = as_real_array(K_train, "K_train")
    y = as_real_array(y_train, "y_train")
    Ks = as_real_array(K_test_train, "K_test_train")
    ridge = _nonneg_number(ridge, "ridge")
    if K.ndim != 2 or K.shape[0] != K.shape[1] or K.shape[0] == 0:
        raise ValueError(f"K_train must be a square (p, p) matrix with p >= 1; got shape {K.shape}.")
    p = K.shape[0]
    if y.ndim not in (1, 2) or y.shape[0] != p:
        raise ValueError(f"y_train must have shape ({p},) or ({p}, T) to match K_train {K.shape}; "
                         f"got {y.shape}.")
    if Ks.ndim != 2 or Ks.shape[1] != p:
        raise ValueError(f"K_test_train must have shape (M, {p}) (test points x the {p} training "
                         f"points of K_train); got {Ks.shape}.")
    _finite(K, "K_train")
    _finite(y, "y_train")
    _finite(Ks, "K_test_train")
    if float(np.abs(K - K.T).max()) > 1e-6 * max(1e-300, float(np.abs(K).max())):
        raise ValueError("K_train must be symmetric (a Gram matrix k(X, X)); it is not.")
    with _blas_threads(p):
        return _solve_and_predict(K, y, Ks, ridge)


def _solve_and_predict(K: np.ndarray, y: np.ndarray, Ks: np.ndarray, ridge: float) -> np.ndarray:
    """``Ks (K + ridge I)^{-1} y`` for :func:`kernel_regression` (inputs checked there)."""
    p = K.shape[0]
    A = K + ridge * np.eye(p) if ridge > 0 else K
    alpha = None
    try:
        c, lower = scipy.linalg.cho_factor(A, lower=True, check_finite=False)
        if ridge > 0:
            alpha = scipy.linalg.cho_solve((c, lower), y, check_finite=False)
        else:
            anorm = float(np.abs(A).sum(axis=0).max())
            rcond, info = scipy.linalg.lapack.dpocon(c, anorm, uplo="L")
            if info == 0 and rcond > p * np.finfo(np.float64).eps:
                alpha = scipy.linalg.cho_solve((c, lower), y, check_finite=False)
    except np.linalg.LinAlgError:
        if ridge > 0:
            raise ValueError(
                f"K_train + ridge * I (ridge = {ridge:.3g}) is not positive definite: K_train must "
                "be a positive semi-definite kernel matrix."
            ) from None
    if alpha is None:   # ridge = 0 and K singular or ill-conditioned: minimum-norm least squares
        alpha = scipy.linalg.lstsq(A, y, lapack_driver="gelsd", check_finite=False)[0]
    return Ks @ alpha


# ----------------------------------------------------------------------------
# Learning curves from the spectrum
# ----------------------------------------------------------------------------

@dataclass
class LearningCurve:
    r"""The spectral prediction of kernel regression's test error, one row per ``n_train``.

    Attributes
    ----------
    n_train : (P,) int array
        Numbers of training points :math:`p`.
    test_error : (P,) array
        :math:`E_g`, the expected squared error against the clean target
        (label noise excluded), averaged over training sets; ``inf`` where
        :math:`\gamma = 1` (ridgeless, ``p`` equal to the number of nonzero modes).
    kappa : (P,) array
        :math:`\kappa`, the effective regularization.
    gamma : (P,) array
        :math:`\gamma`.
    learnability : (P, K) array
        :math:`L_k = p\mu_k/(p\mu_k + \kappa)` per ``n_train`` and mode (0 for a zero mode).
    mode_errors : (P, K) array
        :math:`(1 - L_k)^2 v_k^2 / (1 - \gamma)`: each mode's share of the error,
        so that ``test_error = mode_errors.sum(1) + noise * gamma / (1 - gamma)``.
    eigenvalues, target_power : (K,) arrays
        The inputs (negative round-off set to 0).
    ridge, noise : float
    """

    n_train: np.ndarray
    test_error: np.ndarray
    kappa: np.ndarray
    gamma: np.ndarray
    learnability: np.ndarray
    mode_errors: np.ndarray
    eigenvalues: np.ndarray
    target_power: np.ndarray
    ridge: float
    noise: float


def _n_train(n_train) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(n_train))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"n_train must be a positive integer or a 1-D sequence of them; got {n_train!r}.")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"n_train must hold positive integers; got dtype {arr.dtype}.")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"n_train must hold positive integers; got {arr.tolist()}.")
    if np.any(arr < 1):
        raise ValueError(f"n_train must hold positive integers (>= 1); got {arr.tolist()}.")
    return arr.astype(np.int64)


def _solve_kappa(mu: np.ndarray, mult: np.ndarray, p: int, ridge: float) -> float:
    r"""The root :math:`\kappa \ge 0` of :math:`1 - \delta/\kappa - \sum_k m_k\mu_k/(p\mu_k + \kappa) = 0`."""
    nz = mu > 0
    pos, m = mu[nz], mult[nz]
    if pos.size == 0:
        return ridge
    total = float(np.sum(m * pos))
    if ridge == 0 and m.sum() <= p:
        return 0.0     # interpolation with at least as many points as nonzero modes: every mode is learned

    def g(k: float) -> float:   # increasing in k
        return 1.0 - ridge / k - float(np.sum(m * pos / (p * pos + k)))

    hi = ridge + total
    if ridge > 0:
        lo = ridge
    else:   # g(0+) = 1 - (#modes)/p < 0; walk down until g < 0
        lo = hi
        while g(lo) >= 0:
            lo *= 1e-3
            if lo < 1e-300:
                return 0.0
    glo, ghi = g(lo), g(hi)
    if glo >= 0:
        return lo
    if ghi <= 0:
        return hi
    return scipy.optimize.brentq(g, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)


def learning_curve(
    eigenvalues: ArrayLike,
    target_power: ArrayLike,
    n_train: Union[int, Sequence[int], np.ndarray],
    *,
    ridge: float = 0.0,
    noise: float = 0.0,
    multiplicity: Optional[ArrayLike] = None,
) -> LearningCurve:
    r"""Predicted test error of kernel regression against the number of training points.

    The theory of Bordelon et al. (2020), Canatar et al. (2021) and Simon et
    al. (2021): for ``p`` training points drawn independently from the data
    distribution, targets :math:`y = f^*(x) + \epsilon` with
    :math:`\mathbb E\epsilon^2 = \sigma^2`, and the predictor of
    :func:`kernel_regression` with ridge :math:`\delta`,

    .. math::

        \kappa = \delta + \kappa \sum_k \frac{\mu_k}{p\mu_k + \kappa}, \qquad
        L_k = \frac{p\mu_k}{p\mu_k + \kappa}, \qquad
        \gamma = \sum_k \frac{p\mu_k^2}{(p\mu_k + \kappa)^2},

    .. math::

        E_g = \mathbb E\,(\hat f(x) - f^*(x))^2
            = \frac{\sum_k (1 - L_k)^2 v_k^2 + \sigma^2\gamma}{1 - \gamma}.

    :math:`\kappa` is found by bracketed root finding
    (``scipy.optimize.brentq``) on
    :math:`1 - \delta/\kappa - \sum_k \mu_k/(p\mu_k + \kappa) = 0`, whose
    left side increases with :math:`\kappa`; the root lies in
    :math:`[\delta, \delta + \sum_k \mu_k]`. Zero eigenvalues are modes the
    kernel cannot learn (:math:`L_k = 0`). Ridgeless with ``p`` at least the
    number ``r`` of nonzero modes, :math:`\kappa = 0`: every nonzero mode is
    learned, :math:`\gamma = r/p`, and :math:`E_g` is the power of the zero
    modes plus the noise, over :math:`1 - r/p` (infinite at ``p = r``: the
    double-descent peak).

    The theory is exact for Gaussian features in the limit of many modes; it
    is accurate for high-dimensional data and for smooth kernels, and can fail
    for non-smooth kernels on low-dimensional data (Tomasini et al. 2022).

    Parameters
    ----------
    eigenvalues : (K,) array or tensor
        :math:`\mu_k \ge 0`, the eigenvalues of the kernel's integral operator
        under the data distribution, e.g. the eigenvalues of the Gram matrix
        of ``N`` samples divided by ``N`` (any order). Negative values down to
        ``-1e-5 * max`` are round-off and set to 0.
    target_power : (K,) array or tensor
        :math:`v_k^2 \ge 0`, the target's squared coefficients in the
        orthonormal eigenbasis (:func:`target_power`), in the same order.
        They sum to :math:`\mathbb E f^*(x)^2` when the basis is complete.
    n_train : int or (P,) sequence of int
        Numbers of training points :math:`p \ge 1`.
    ridge : float
        :math:`\delta \ge 0` of :math:`(K + \delta I)`, with :math:`K` the
        un-normalized training Gram matrix.
    noise : float
        Label-noise variance :math:`\sigma^2 \ge 0`.
    multiplicity : (K,) array, optional
        :math:`m_k \ge 1`: entry ``k`` stands for :math:`m_k` modes of the same
        eigenvalue (a degree of spherical harmonics,
        :func:`~neuralspec.sphere.sphere_spectrum`), and
        ``target_power[k]`` is their total power. The sums over modes become
        :math:`\sum_k m_k (\cdot)` in :math:`\kappa` and :math:`\gamma`;
        ``learnability[:, k]`` is that of each of the :math:`m_k` modes.
        Default: all ones.

    Returns
    -------
    LearningCurve
        ``.n_train, .test_error, .kappa, .gamma, .learnability, .mode_errors``.

    Examples
    --------
    >>> k = np.arange(1, 1001)
    >>> curve = learning_curve(k ** -2.0, k ** -2.0, [10, 100, 1000])
    >>> curve.test_error.shape, curve.learnability.shape
    ((3,), (3, 1000))
    """
    mu = as_real_array(eigenvalues, "eigenvalues")
    v2 = as_real_array(target_power, "target_power")
    if mu.ndim != 1 or mu.size == 0:
        raise ValueError(f"eigenvalues must be a non-empty 1-D array; got shape {mu.shape}.")
    if v2.shape != mu.shape:
        raise ValueError(f"target_power must have the shape of eigenvalues {mu.shape}; got {v2.shape}.")
    _finite(mu, "eigenvalues")
    _finite(v2, "target_power")
    top = float(np.abs(mu).max())
    if np.any(mu < -NEGATIVE_TOL * top):
        raise ValueError(
            f"eigenvalues must be >= 0 (a kernel's operator is positive semi-definite); the most "
            f"negative is {mu.min():.3g}, beyond round-off ({NEGATIVE_TOL:g} of the largest, {top:.3g})."
        )
    if np.any(v2 < 0):
        raise ValueError(f"target_power must be >= 0 (squared coefficients); its minimum is {v2.min():.3g}.")
    mu = np.clip(mu, 0.0, None)
    if multiplicity is None:
        mult = np.ones_like(mu)
    else:
        mult = as_real_array(multiplicity, "multiplicity")
        if mult.shape != mu.shape or not np.all(np.isfinite(mult)) or np.any(mult < 1):
            raise ValueError(f"multiplicity must be a {mu.shape} array of numbers >= 1 (modes per "
                             f"eigenvalue); got shape {mult.shape}, values {np.unique(mult)[:5].tolist()}.")
    ridge = _nonneg_number(ridge, "ridge")
    noise = _nonneg_number(noise, "noise")
    ps = _n_train(n_train)

    kappa = np.array([_solve_kappa(mu, mult, int(p), ridge) for p in ps])
    pm = ps[:, None] * mu[None, :]
    den = pm + kappa[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        L = np.where(mu[None, :] > 0, pm / np.where(den > 0, den, 1.0), 0.0)
        gamma = np.sum(np.where(mu[None, :] > 0, mult * pm * mu[None, :] / np.where(den > 0, den, 1.0) ** 2,
                                0.0), axis=1)
    gamma = np.minimum(gamma, 1.0)
    gamma[np.isclose(gamma, 1.0, rtol=0, atol=1e-12)] = 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(gamma < 1, 1.0 / (1.0 - gamma), np.inf)
        bias = (1.0 - L) ** 2 * v2[None, :]
        mode_errors = np.where(bias > 0, bias * scale[:, None], 0.0)
        noise_part = np.where(gamma > 0, noise * gamma * scale, 0.0) if noise > 0 else np.zeros_like(gamma)
    test_error = mode_errors.sum(axis=1) + noise_part
    test_error = np.where(gamma < 1, test_error, np.where(test_error > 0, np.inf, 0.0))
    return LearningCurve(n_train=ps, test_error=test_error, kappa=kappa, gamma=gamma, learnability=L,
                         mode_errors=mode_errors, eigenvalues=mu, target_power=v2, ridge=ridge, noise=noise)


def target_power(U: ArrayLike, y: ArrayLike) -> np.ndarray:
    r"""The target's power in a kernel's eigenbasis, :math:`v_k^2`, from the Gram eigenvectors.

    With :math:`K = U\Lambda U^\top` the Gram matrix of ``N`` samples
    :math:`x_i` of the data distribution, the orthonormal eigenfunctions of
    the integral operator are, at the samples, :math:`\phi_k(x_i) = \sqrt N
    U_{ik}` (eigenvalues :math:`\mu_k = \lambda_k / N`), so

    .. math::

        v_k = \langle f^*, \phi_k \rangle \approx \frac1N \sum_i y_i \sqrt N U_{ik}
            = \frac{(U^\top y)_k}{\sqrt N}, \qquad
        \sum_k v_k^2 = \frac{\|y\|^2}{N} \quad (\text{full } U).

    Parameters
    ----------
    U : (N, K) array or tensor
        Orthonormal eigenvectors in columns (e.g. from :func:`~neuralspec.spectrum.eigh`).
    y : (N,) or (N, T) array or tensor
        The target at the same samples.

    Returns
    -------
    numpy.ndarray
        ``(K,)`` or ``(K, T)``, float64.
    """
    U = as_real_array(U, "U")
    y = as_real_array(y, "y")
    if U.ndim != 2:
        raise ValueError(f"U must be a 2-D (N, K) matrix of eigenvectors in columns; got shape {U.shape}.")
    if y.ndim not in (1, 2) or y.shape[0] != U.shape[0]:
        raise ValueError(f"y must have shape ({U.shape[0]},) or ({U.shape[0]}, T) to match U {U.shape}; "
                         f"got {y.shape}.")
    _finite(U, "U")
    _finite(y, "y")
    return (U.T @ y) ** 2 / U.shape[0]

