"""Independent references for the infinite-width kernels (used by test_layers.py and test_limits.py).

Written without the library's code: NumPy closed forms taken from the literature in a
different algebraic form where one exists, and adaptive scipy quadrature
(``scipy.integrate.quad``, nested, told where the integrand has its kink) for the rest.
"""
import math
import warnings
from functools import lru_cache

import numpy as np
from scipy import integrate, special

R = 11.0  # standard-normal variables on [-R, R]: tail mass 4e-28


def gauss2(f, g, s11, s12, s22, eps=1e-10):
    """E[f(u) g(v)] for (u, v) ~ N(0, [[s11, s12], [s12, s22]]) by nested adaptive quadrature.

    u = s1 a, v = s2 (rho a + sqrt(1 - rho^2) b); the outer rule is told about a = 0, the
    inner one about the b where v = 0 (kinks of relu-like functions at 0).
    """
    s1, s2 = math.sqrt(s11), math.sqrt(s22)
    rho = max(-1.0, min(1.0, s12 / (s1 * s2))) if s1 * s2 > 0 else 0.0
    rp = math.sqrt(max(0.0, 1 - rho * rho))
    gv = g
    pdf = lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    if rp < 1e-12:
        h = lambda a: float(f(s1 * a)) * float(g(s2 * rho * a)) * pdf(a)  # noqa: E731
        return integrate.quad(h, -R, R, points=[0.0], epsabs=0, epsrel=eps, limit=400)[0]

    xg, wg = np.polynomial.legendre.leggauss(200)

    def inner(a):
        # E_b[g(m + s b)]: 200-point Gauss-Legendre on each side of the b where v = 0
        m = s2 * rho * a
        bstar = min(max(-m / (s2 * rp), -R), R)
        tot = 0.0
        for lo, hi in ((-R, bstar), (bstar, R)):
            if hi > lo:
                b = (lo + hi) / 2 + (hi - lo) / 2 * xg
                tot += (hi - lo) / 2 * np.dot(wg, gv(m + s2 * rp * b) * np.exp(-b * b / 2)) / math.sqrt(2 * math.pi)
        return tot

    return integrate.quad(lambda a: float(f(s1 * a)) * inner(a) * pdf(a), -R, R, points=[0.0],
                          epsabs=0, epsrel=eps, limit=400)[0]


# scalar activations and derivatives (math / scipy only)
def _sig(z):
    return special.expit(z)


SQ2PI = math.sqrt(2 * math.pi)
SCALAR = {  # NumPy-vectorized (phi, phi')
    "relu": (lambda z: np.maximum(z, 0.0), lambda z: np.where(z > 0, 1.0, 0.0)),
    "leaky_relu(0.2)": (lambda z: np.where(z > 0, z, 0.2 * z), lambda z: np.where(z > 0, 1.0, 0.2)),
    "abs": (np.abs, lambda z: np.where(z > 0, 1.0, -1.0)),
    "step": (lambda z: np.where(z > 0, 1.0, 0.0), lambda z: 0.0 * z),
    "identity": (lambda z: z, lambda z: 1.0 + 0.0 * z),
    "erf": (special.erf, lambda z: 2 / math.sqrt(math.pi) * np.exp(-z * z)),
    "sin": (np.sin, np.cos),
    "cos": (np.cos, lambda z: -np.sin(z)),
    "gelu": (lambda z: z * special.ndtr(z), lambda z: special.ndtr(z) + z * np.exp(-z * z / 2) / SQ2PI),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "sigmoid": (_sig, lambda z: _sig(z) * (1 - _sig(z))),
    "softplus": (lambda z: np.logaddexp(0.0, z), _sig),
    "silu": (lambda z: z * _sig(z), lambda z: _sig(z) * (1 + z * (1 - _sig(z)))),
    "elu": (lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
            lambda z: np.where(z > 0, 1.0, np.exp(np.minimum(z, 0)))),
}


@lru_cache(maxsize=None)
def quad_maps(name, s11, s12, s22):
    """(K, Kdot) of a named activation by :func:`gauss2` (cached on the exact triple)."""
    f, df = SCALAR[name]
    with warnings.catch_warnings():
        # quad warns when round-off stops it short of eps; it is then at the round-off floor
        warnings.simplefilter("ignore", integrate.IntegrationWarning)
        return gauss2(f, f, s11, s12, s22), gauss2(df, df, s11, s12, s22)


# closed forms, vectorized over arrays (NumPy)
def _relu_j(s11, s12, s22):
    """Cho & Saul (2009): E[relu u relu v] = sqrt(s11 s22)/(2 pi) (sin t + (pi - t) cos t),
    E[step u step v] = (pi - t)/(2 pi), cos t = rho."""
    n = np.sqrt(s11 * s22)
    rho = np.clip(s12 / n, -1, 1)
    t = np.arccos(rho)
    return n / (2 * np.pi) * (np.sin(t) + (np.pi - t) * rho), (np.pi - t) / (2 * np.pi)


def closed_maps(name, s11, s12, s22):
    """(K, Kdot) in closed form for relu, leaky_relu(0.2), erf, sin."""
    if name == "relu":
        return _relu_j(s11, s12, s22)
    if name == "leaky_relu(0.2)":
        # leaky(u) = relu(u) - a relu(-u); (u, -v) has correlation -rho
        a = 0.2
        kp, dp = _relu_j(s11, s12, s22)
        km, dm = _relu_j(s11, -s12, s22)
        return (1 + a * a) * kp - 2 * a * km, (1 + a * a) * dp + 2 * a * dm
    if name == "erf":
        # Williams (1997)
        p = (1 + 2 * s11) * (1 + 2 * s22)
        return (2 / np.pi) * np.arcsin(2 * s12 / np.sqrt(p)), 4 / (np.pi * np.sqrt(p - 4 * s12 ** 2))
    if name == "sin":
        # E[sin u sin v] = (E cos(u - v) - E cos(u + v)) / 2, E cos w = exp(-var w / 2)
        cm = np.exp(-(s11 + s22 - 2 * s12) / 2)
        cp = np.exp(-(s11 + s22 + 2 * s12) / 2)
        return (cm - cp) / 2, (cm + cp) / 2
    raise KeyError(name)


def maps(name, s11, s12, s22):
    """Closed form when there is one, else quadrature pair by pair."""
    try:
        return closed_maps(name, s11, s12, s22)
    except KeyError:
        K = np.empty(np.broadcast(s11, s12, s22).shape)
        Kd = np.empty_like(K)
        b11, b12, b22 = np.broadcast_arrays(s11, s12, s22)
        for idx in np.ndindex(K.shape):
            key = tuple(round(float(v), 13) for v in (b11[idx], b12[idx], b22[idx]))
            K[idx], Kd[idx] = quad_maps(name, *key)
        return K, Kd


def stax_ntk_param(name, x, x2, depth, w_std, b_std, bias=True):
    """neural-tangents' stax recursion, NTK parameterization, one output:
    Dense(w_std, b_std) -> act, ``depth`` times, -> Dense(w_std, b_std).

    Returns (ck, ntk, nngp_out) as NumPy arrays.
    """
    x = np.asarray(x, float)
    x2 = x if x2 is None else np.asarray(x2, float)
    d = x.shape[1]
    bv = b_std ** 2 if bias else 0.0
    K = x @ x2.T / d
    k1 = (x * x).sum(1) / d
    k2 = (x2 * x2).sum(1) / d
    T = np.zeros_like(K)
    for _ in range(depth):
        S, s1, s2 = w_std ** 2 * K + bv, w_std ** 2 * k1 + bv, w_std ** 2 * k2 + bv
        T = S + w_std ** 2 * T
        K, Kd = maps(name, s1[:, None], S, s2[None, :])
        k1 = maps(name, s1, s1, s1)[0]
        k2 = maps(name, s2, s2, s2)[0]
        T = T * Kd
    nngp = w_std ** 2 * K + bv
    return K, nngp + w_std ** 2 * T, nngp
