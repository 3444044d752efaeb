"""The one naive reference NTK used by the tests: a torch.func Jacobian contraction.

``reference_ntk(model, x, x2, outputs)`` computes, in float64 on a float64 copy
of the model, the per-sample Jacobians of the flattened outputs with respect
to the trainable parameters (``torch.func.jacrev`` of a ``functional_call``,
one sample at a time, no ``vmap``) and contracts them:

    full[i, j, a, b] = sum_p dF_a(x_i)/dtheta_p * dF_b(x2_j)/dtheta_p,

the PyTorch "Neural Tangent Kernels" tutorial's recipe, written for clarity,
not speed. ``outputs="trace"`` sums ``a == b``, ``"mean"`` divides that by
the number of outputs. Inputs may have any shape ``(N, *)``.
"""
import copy

import torch
from torch.func import functional_call, jacrev


def reference_jacobian(model, x):
    """``(N, O, P)``: per-sample Jacobians of the flattened outputs, trainable parameters only."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def f(prm, xi):
        return functional_call(model, prm, (xi.unsqueeze(0),)).reshape(-1)

    rows = []
    for i in range(x.shape[0]):
        jac = jacrev(f)(params, x[i])
        rows.append(torch.cat([jac[n].reshape(jac[n].shape[0], -1) for n in params], dim=1))
    return torch.stack(rows)


def reference_ntk(model, x, x2=None, outputs="trace"):
    """The NTK by Jacobian contraction, float64: ``(N, N2)`` or ``(N, N2, O, O)`` for ``"full"``."""
    m = copy.deepcopy(model).double()
    x = torch.as_tensor(x).double()
    x2 = x if x2 is None else torch.as_tensor(x2).double()
    J1 = reference_jacobian(m, x)
    J2 = J1 if x2 is x else reference_jacobian(m, x2)
    full = torch.einsum("iap,jbp->ijab", J1, J2)
    if outputs == "full":
        return full
    trace = full.diagonal(dim1=2, dim2=3).sum(-1)
    if outputs == "mean":
        return trace / full.shape[2]
    assert outputs == "trace", outputs
    return trace


def rel_err(K, R):
    """Largest entry of ``|K - R|`` over the largest ``|R|``."""
    return float((K.detach().double() - R).abs().max() / R.abs().max())
