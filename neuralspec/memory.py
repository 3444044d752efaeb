r"""A memory guard: refuse an :math:`N \times N` kernel that cannot fit, before allocating it.

Forming a dense kernel of :math:`N` points needs :math:`N^2` numbers, and the
functions that form one hold a little more than that at their peak. Measured on
a 2-core CPU (peak resident memory over one :math:`N \times N` matrix in the
kernel's dtype):


- :func:`~neuralspec.kernels.feature_kernel`, :func:`~neuralspec.kernels.conjugate_kernel`: 1.1
- :func:`~neuralspec.ntk.ntk`: 1.6
- :func:`~neuralspec.ntk.ntk_by_layer`: one matrix per layer, plus 0.6
- :func:`~neuralspec.spectrum.eigh`: 4.1 (``torch.linalg.eigh`` alone: 3.2)
- :func:`~neuralspec.analytic.rff_kernel`: 5 (float64)

These are the peaks measured when the guard was specified (issue 17); the guard uses
them, rounded up, as its estimates (``PEAK_FACTORS``). The matrix-free path
(``ntk_operator(..., matrix_free=True)``) holds no :math:`N \times N` matrix: its peak
is the factor cache (at most ``cache_bytes``, default 2 GiB), a few :math:`N`- and
:math:`P`-vectors and, for ``top_eigenpairs(method="nystrom")``, the :math:`N \times m`
column block; measured 2.2 GB for the top 10 at :math:`N = 100\,000` on the benchmark
network with :math:`m = 1000` (``benchmarks/bench.py``).

Past the memory available (the system's ``MemAvailable``, capped by a cgroup
limit; on CUDA the device's free memory), these functions raise
:class:`KernelTooLargeError` *before* allocating, naming :math:`N`, the bytes
needed and available, and the path that does fit: the matrix-free operator
(``ns.ntk_operator(model, x, matrix_free=True)``) with ``ns.top_eigenpairs``.
On Colab this replaces a killed runtime (and every variable lost) by an error.

``NEURALSPEC_MEMORY_LIMIT`` (bytes, or with a unit: ``"2GB"``, ``"512MiB"``)
overrides the available memory, e.g. to keep a notebook well inside a shared
machine; :func:`memory_limit` sets it for a block of code.
"""
from __future__ import annotations

import contextlib
import os
import re
from typing import Iterator, Optional, Union

import torch

__all__ = ["KernelTooLargeError", "available_memory", "check_kernel_memory", "memory_limit", "PEAK_FACTORS"]

#: Peak memory of each kernel-forming function, in units of one N x N matrix.
PEAK_FACTORS = {
    "feature_kernel": 1.1,
    "conjugate_kernel": 1.1,
    "ntk": 1.6,
    "ntk_by_layer": 1.6,   # plus one matrix per layer (added by the caller)
    "eigh": 4.1,
    "rff_kernel": 5.0,
    "kernel_operator": 1.2,
}

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


class KernelTooLargeError(MemoryError):
    """An N x N kernel that would not fit in the memory available."""


def _parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"NEURALSPEC_MEMORY_LIMIT must be a number of bytes, optionally with a unit "
                         f"(e.g. 2GB, 512MiB); got {text!r}.")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def _fmt(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _cgroup_free() -> Optional[int]:
    try:
        limit = open("/sys/fs/cgroup/memory.max").read().strip()
        if limit == "max":
            return None
        used = int(open("/sys/fs/cgroup/memory.current").read().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def available_memory(device: Union[str, torch.device, None] = None) -> Optional[int]:
    """Bytes available for a new allocation on ``device`` (``None`` when unknown).

    CPU: ``MemAvailable`` from ``/proc/meminfo``, capped by the cgroup's limit;
    CUDA: the device's free memory. ``NEURALSPEC_MEMORY_LIMIT`` overrides both.
    """
    env = os.environ.get("NEURALSPEC_MEMORY_LIMIT")
    if env:
        return _parse_bytes(env)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    if dev.type != "cpu":
        return None
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    cg = _cgroup_free()
    if avail is None:
        return cg
    return avail if cg is None else min(avail, cg)


def check_kernel_memory(n1: int, n2: Optional[int], dtype: torch.dtype, device, what: str, *,
                        factor: Optional[float] = None, extra_matrices: int = 0) -> None:
    """Raise :class:`KernelTooLargeError` when an ``(n1, n2)`` kernel built by ``what`` would not fit.

    The estimate is ``(PEAK_FACTORS[what] + extra_matrices) * n1 * n2 * itemsize``.
    """
    n2 = n1 if n2 is None else n2
    itemsize = torch.empty((), dtype=dtype).element_size()
    f = (PEAK_FACTORS.get(what, 1.0) if factor is None else factor) + extra_matrices
    need = f * n1 * n2 * itemsize
    if need < 64 * 2**20:  # small kernels never need the check (and never pay for reading /proc)
        return
    have = available_memory(device)
    if have is None or need <= have:
        return
    shape = f"{n1} x {n2}" if n1 != n2 else f"N = {n1}"
    raise KernelTooLargeError(
        f"{what}: a kernel of {shape} points needs about {_fmt(need)} at its peak "
        f"({f:.1f} x {n1} x {n2} x {itemsize} bytes, {dtype}) but {_fmt(have)} is available on "
        f"{torch.device(device) if device is not None else 'cpu'}. Use fewer points, or do not form the "
        "kernel: ns.ntk_operator(model, x, matrix_free=True) with ns.top_eigenpairs(op, k) gives the top "
        "eigenpairs of the NTK in O(N + P) memory (ns.kernel_operator(..., cache=False) for other kernels). "
        "NEURALSPEC_MEMORY_LIMIT overrides the available memory."
    )


@contextlib.contextmanager
def memory_limit(limit: Union[int, str, None]) -> Iterator[None]:
    """Within the block, treat ``limit`` bytes (or ``"2GB"``) as the memory available (``None``: the real one)."""
    old = os.environ.get("NEURALSPEC_MEMORY_LIMIT")
    try:
        if limit is None:
            os.environ.pop("NEURALSPEC_MEMORY_LIMIT", None)
        else:
            _parse_bytes(str(limit))
            os.environ["NEURALSPEC_MEMORY_LIMIT"] = str(limit)
        yield
    finally:
        if old is None:
            os.environ.pop("NEURALSPEC_MEMORY_LIMIT", None)
        else:
            os.environ["NEURALSPEC_MEMORY_LIMIT"] = old
