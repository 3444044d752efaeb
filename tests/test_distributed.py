"""The matrix-free NTK across 2 processes (gloo, one machine) equals the single-process one."""
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

import neuralspec as ns

N, SPLIT = 240, 130   # uneven slices: rank 0 holds 130 points, rank 1 holds 110
KINDS = ("structured", "autodiff")


def _model(kind):
    ns.set_seed(0)
    if kind == "structured":
        return ns.MLP(2, 128, 2, 1)
    return torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))


def _data():
    g = torch.Generator().manual_seed(1)
    return torch.randn(N, 2, generator=g), torch.randn(N, 3, generator=g)


def _worker(rank, world, init_file, out_dir):
    import time

    import torch.distributed as dist

    t0 = time.perf_counter()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        for kind in KINDS:
            _one(rank, kind, out_dir, dist)
        print(f"rank {rank}: {time.perf_counter() - t0:.1f} s", flush=True)
    finally:
        dist.destroy_process_group()


def _one(rank, kind, out_dir, dist):
    if True:
        model = _model(kind)
        x, V = _data()
        sl = slice(0, SPLIT) if rank == 0 else slice(SPLIT, N)
        method = "auto" if kind == "structured" else "jacobian"
        op = ns.ntk_operator(model, x[sl], matrix_free=True, method=method, process_group=dist.group.WORLD)
        KV = op.matmat(V)
        vals, vecs = ns.top_eigenpairs(op, 4, seed=0)
        torch.save({"KV": KV, "vals": vals, "vecs": vecs, "shape": op.shape,
                    "all_reduce": op.n_all_reduce, "products": op.n_products},
                   os.path.join(out_dir, f"{kind}-rank{rank}.pt"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both kinds of operator, in one pair of processes (one start-up)."""
    tmp = tmp_path_factory.mktemp("dist")
    # Gloo on the loopback interface only: the processes talk to each other on this machine.
    old = os.environ.get("GLOO_SOCKET_IFNAME")
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    try:
        mp.spawn(_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    finally:
        if old is None:
            os.environ.pop("GLOO_SOCKET_IFNAME", None)
        else:
            os.environ["GLOO_SOCKET_IFNAME"] = old
    return tmp


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_match_one(runs, kind):
    r0, r1 = (torch.load(runs / f"{kind}-rank{r}.pt") for r in (0, 1))
    with ns.torch_threads(1):
        model = _model(kind)
        x, V = _data()
        op = ns.ntk_operator(model, x, matrix_free=True, method="auto" if kind == "structured" else "jacobian")
        KV = op.matmat(V)
        vals, vecs = ns.top_eigenpairs(op, 4, seed=0)
    assert r0["shape"] == (N, N)
    for r in (r0, r1):
        rel = float((r["KV"] - KV).norm() / KV.norm())
        assert rel < 1e-6, f"distributed product differs by {rel:.2e} (relative)"
        np.testing.assert_allclose(r["vals"].numpy(), vals.numpy(), rtol=1e-5)
        overlap = (r["vecs"] * vecs).sum(0).abs()
        assert overlap.min() > 1 - 1e-4
    # every process ends with the same answer, bit for bit
    assert torch.equal(r0["KV"], r1["KV"]) and torch.equal(r0["vals"], r1["vals"])
    # one all-reduce per product (per block of up to 8 vectors in the structured mode)
    assert r0["all_reduce"] >= 1
