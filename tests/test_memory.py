"""The memory guard refuses kernels that cannot fit, before allocating them."""
import pytest
import torch

import neuralspec as ns
from neuralspec.memory import KernelTooLargeError, available_memory, check_kernel_memory, memory_limit


def test_available_memory_is_positive_and_overridable():
    assert available_memory() is None or available_memory() > 0
    with memory_limit("512MiB"):
        assert available_memory() == 512 * 2**20
    with memory_limit(10**9):
        assert available_memory() == 10**9
    with pytest.raises(ValueError, match="NEURALSPEC_MEMORY_LIMIT"):
        with memory_limit("lots"):
            pass


def test_guard_raises_with_the_numbers_and_the_way_out():
    with memory_limit("100MB"):
        with pytest.raises(KernelTooLargeError) as err:
            check_kernel_memory(20000, None, torch.float32, "cpu", "ntk")
    msg = str(err.value)
    assert "N = 20000" in msg and "2.6 GB" in msg and "100.0 MB" in msg and "matrix_free=True" in msg
    assert isinstance(err.value, MemoryError)
    check_kernel_memory(20000, None, torch.float32, "cpu", "ntk")  # fits on this machine


def test_small_kernels_are_never_refused():
    with memory_limit(1):
        check_kernel_memory(1000, None, torch.float64, "cpu", "eigh")  # 32 MB: below the threshold
