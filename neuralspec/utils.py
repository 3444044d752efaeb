"""Seeds and devices."""
from __future__ import annotations

import os
import random
import sys

import numpy as np
import torch

__all__ = ["set_seed", "default_device", "on_colab"]


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
