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


# ---------------------------------------------------------------------------
# every function that forms an N x N kernel calls the guard before allocating
# ---------------------------------------------------------------------------

def _small_mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))


def _x(n):
    return torch.rand(n, 2, generator=torch.Generator().manual_seed(0))


# each case forms a float32 kernel of N = 5000 points (100 MB, above the guard's 64 MiB threshold)
_CASES = {
    "feature_kernel": lambda x: ns.feature_kernel(_small_mlp()[:2], x),
    "conjugate_kernel": lambda x: ns.conjugate_kernel(_small_mlp(), x),
    "ntk": lambda x: ns.ntk(_small_mlp(), x),
    "ntk_by_layer": lambda x: ns.ntk_by_layer(_small_mlp(), x),
    "kernel_operator": lambda x: ns.kernel_operator(lambda a, b: a @ b.T, x),
}


@pytest.mark.parametrize("name", sorted(_CASES))
def test_kernel_functions_refuse_a_kernel_above_the_limit(name):
    with memory_limit("50MB"):
        with pytest.raises(KernelTooLargeError, match=name):
            _CASES[name](_x(5000))


@pytest.mark.parametrize("name", sorted(_CASES))
def test_the_guard_fires_before_the_allocation(name):
    # N = 200 000: a 160 GB float32 kernel, which no allocation on a test machine can hold; had the
    # function allocated first, the error would be the allocator's RuntimeError, not ours.
    with memory_limit("50MB"):
        with pytest.raises(KernelTooLargeError, match="N = 200000"):
            _CASES[name](_x(200_000))


def test_eigh_refuses_a_matrix_it_cannot_decompose():
    K = torch.zeros(3000, 3000)  # 36 MB; eigh's peak is about 4 such matrices (147 MB)
    with memory_limit("50MB"):
        with pytest.raises(KernelTooLargeError, match="eigh"):
            ns.eigh(K)


def test_ntk_by_layer_counts_one_matrix_per_group():
    # ntk alone at N = 4500 needs 1.6 x 81 MB = 130 MB; with one matrix per layer (2 Linear) 292 MB
    with memory_limit("200MB"):
        assert ns.ntk(_small_mlp(), _x(4500)).shape == (4500, 4500)
        with pytest.raises(KernelTooLargeError, match="ntk_by_layer"):
            ns.ntk_by_layer(_small_mlp(), _x(4500))


def test_a_kernel_that_fits_is_unaffected():
    x = _x(4500)  # 1.1 x 81 MB = 89 MB: the guard checks it, and it fits in 1 GB
    with memory_limit("1GB"):
        K = ns.feature_kernel(_small_mlp()[:2], x)
    with memory_limit(None):
        K_ref = ns.feature_kernel(_small_mlp()[:2], x)
    assert torch.equal(K, K_ref)
    with memory_limit(1):  # below the 64 MiB threshold nothing is checked, whatever the limit
        assert ns.eigh(torch.eye(300))[0].shape == (300,)


def test_the_guard_is_exported():
    assert ns.KernelTooLargeError is KernelTooLargeError
    assert issubclass(ns.KernelTooLargeError, MemoryError)
    assert ns.memory.memory_limit is memory_limit
