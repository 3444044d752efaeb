"""Seeds and devices."""
from __future__ import annotations

import contextlib
import os
import random
import sys
from typing import Iterator, Optional

import numpy as np
import torch

__all__ = ["set_seed", "default_device", "on_colab", "torch_threads", "progress_bar", "PROGRESS_DELAY"]


def set_seed(seed: int = 0) -> None:
    """Seed Python's, NumPy's and torch's global generators (CPU and all CUDA devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_device() -> torch.device:
    """``cuda`` when a GPU is available (``NEURALSPEC_DEVICE`` overrides), else ``cpu``."""
    env = os.environ.get("NEURALSPEC_DEVICE")
    if env:
        return torch.device(env)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def on_colab() -> bool:
    """Whether the code runs on Google Colab."""
    return "google.colab" in sys.modules


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """Run the block with ``n`` intra-op CPU threads, restoring torch's setting afterwards.

    ``None`` leaves the setting alone. Small problems run faster on one thread:
    on a 2-core machine with another job running, OpenMP's barrier waits can
    make a millisecond kernel take tens of milliseconds on two threads.
    """
    old = torch.get_num_threads()
    if n is None or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


#: Seconds a job must run before its progress bar appears (tqdm's ``delay``).
#: Sub-second kernels never show a bar; set it to 0 to see every bar, or pass
#: ``progress=False`` to the function to hide one.
PROGRESS_DELAY = 2.0


def progress_bar(total, desc: str, unit: str = "it", enabled: bool = True, *, leave: bool = False,
                 delay: Optional[float] = None):
    """A ``tqdm.auto`` bar that appears only once the job has run ``delay`` seconds
    (default :data:`PROGRESS_DELAY`, 2 s), or a disabled one when ``enabled`` is false."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave,
                delay=PROGRESS_DELAY if delay is None else float(delay))
