r"""The matrix-free NTK product across processes, with ``torch.distributed``.

Each process holds a slice :math:`X_r` of the :math:`N` points. The product
:math:`\Theta V = J (J^\top V)` splits along that slice:

.. math::

    J^\top V = \sum_r J_r^\top V_r \quad \text{(one all-reduce of a } P \times b
    \text{ block)}, \qquad (\Theta V)_r = J_r \,(J^\top V) \quad \text{(local)},

so each product communicates one all-reduce of :math:`P b` numbers (for the
structured NTK: the per-layer sums :math:`M_l = \Delta_l^\top \operatorname{diag}(v)
H_l`, also :math:`P b` numbers) plus an all-gather of the :math:`N b` result rows,
so that every process holds the whole product and can run the same eigensolver
(SciPy's Lanczos, LOBPCG or the Nyström method of :func:`~neuralspec.scale.top_eigenpairs`,
seeded identically) in lockstep. No communication code of our own: one
``all_reduce`` and one ``all_gather`` per product, on any backend (gloo on
CPUs, NCCL on GPUs).

Use::

    torch.distributed.init_process_group("gloo", ...)      # or torchrun
    op = ns.ntk_operator(model, x_local, matrix_free=True, process_group=torch.distributed.group.WORLD)
    lam, U = ns.top_eigenpairs(op, 10)                     # the same on every process

Every process must build the same model (same seed) and pass its own
non-empty slice of the points, in rank order.
"""
from __future__ import annotations

from typing import List

import torch

from .scale import KernelOperator, MatrixFreeNTKOperator

__all__ = ["DistributedNTKOperator"]


class DistributedNTKOperator(KernelOperator):
    r"""The NTK of the points of all processes; this process holds rows ``offset : offset + n_local``.

    Parameters
    ----------
    local : MatrixFreeNTKOperator
        The operator on this process's points.
    group : ProcessGroup
        A ``torch.distributed`` group (``torch.distributed.group.WORLD`` for all).
    """

    def __init__(self, local: MatrixFreeNTKOperator, group) -> None:
        import torch.distributed as dist

        if not dist.is_available() or not dist.is_initialized():
            raise RuntimeError("process_group needs torch.distributed initialized "
                               "(torch.distributed.init_process_group, or torchrun).")
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.local = local
        n_local = local.shape[0]
        comm_device = local.device if dist.get_backend(group) == "nccl" else torch.device("cpu")
        self._comm_device = comm_device
        sizes = [torch.zeros(1, dtype=torch.long, device=comm_device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([n_local], dtype=torch.long, device=comm_device), group=group)
        self.sizes = [int(t.item()) for t in sizes]
        if min(self.sizes) < 1:
            raise ValueError(f"every process needs at least one point; got slices of {self.sizes} points.")
        self.offset = sum(self.sizes[:self.rank])
        super().__init__(sum(self.sizes), local.dtype, local.device)
        local._reduce = self._all_reduce
        self.n_all_reduce = 0

    def _all_reduce(self, tensors: List[torch.Tensor]) -> None:
        """Sum ``tensors`` over the processes, in place, with ONE all-reduce of their concatenation."""
        import torch.distributed as dist

        flat = torch.cat([t.reshape(-1) for t in tensors]).to(self._comm_device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group)
        flat = flat.to(tensors[0].device)
        pos = 0
        for t in tensors:
            t.copy_(flat[pos:pos + t.numel()].reshape(t.shape))
            pos += t.numel()
        self.n_all_reduce += 1

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        a, b = self.offset, self.offset + self.local.shape[0]
        out_local = self.local._matmat(V[a:b].contiguous())
        width = max(self.sizes)
        pad = torch.zeros(width, V.shape[1], dtype=V.dtype, device=self._comm_device)
        pad[:b - a] = out_local.to(self._comm_device)
        parts = [torch.empty_like(pad) for _ in range(self.world)]
        dist.all_gather(parts, pad, group=self.group)
        out = torch.cat([p[:n] for p, n in zip(parts, self.sizes)])
        return out.to(self.device)

    def _describe(self) -> str:
        return (f"distributed over {self.world} processes (this one: rank {self.rank}, rows "
                f"{self.offset}:{self.offset + self.local.shape[0]}), {self.local._describe()}")
