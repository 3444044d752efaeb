import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of small kernels: faster than two, and immune to
    the OpenMP barrier stalls (tens of ms per op) that two threads suffer when other
    processes load a 2-core machine. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    torch.manual_seed(0)
    yield
