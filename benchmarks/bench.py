r"""Benchmark: the empirical NTK and kernel spectra, against the usual PyTorch recipes.

Run ``python benchmarks/bench.py`` (or ``make bench``; ``--help`` for the options). It uses
only the public API of :mod:`neuralspec`. In one run it

1. times :func:`~neuralspec.ntk.ntk` against the torch.func Jacobian-contraction
   recipe of the official PyTorch NTK tutorial (``vmap(jacrev(...))`` then
   ``einsum``) and a per-sample backward loop, on the network
   ``RFF(d -> 256) -> width -> width -> 1`` (ReLU, frozen random Fourier
   features), for several ``N`` and widths, with the agreement of each
   kernel with a float64 reference;
2. times the eigensolvers on an NTK: full ``svd`` and ``eigh`` (NumPy and
   torch) and the top-k solvers of :mod:`neuralspec.scale`;
3. with ``--large``: the top 50 NTK eigenpairs at ``N = 20000`` (kernel held
   once) and the top 10 at ``N = 100000``, matrix-free.

Each measurement runs in a fresh process (``multiprocessing``, spawn) whose
peak resident memory (``VmHWM``, reset after imports and set-up; on CUDA
also ``torch.cuda.max_memory_allocated``) is reported, so measurements do not
inherit each other's memory. Configurations that would not fit in memory are
skipped, and the per-sample loop at large ``N`` is timed on a subset of rows
and extrapolated; the table says so. Timings are measurements of this
machine at this moment: the header records the load.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from typing import Dict, List, Optional

import numpy as np

__all__ = ["main", "bench_model", "torchfunc_ntk", "loop_ntk_rows"]


# ----------------------------------------------------------------------------
# the network and the competing recipes
# ----------------------------------------------------------------------------

def bench_model(width: int, *, features: int = 256, in_features: int = 2, scale: float = 10.0,
                seed: int = 0, dtype=None, device=None):
    """``RFF(in_features -> features) -> width -> width -> 1`` with ReLU; the RFF is frozen."""
    import torch
    from torch import nn

    from neuralspec import RFF

    torch.manual_seed(seed)
    model = nn.Sequential(
        RFF(in_features, features, scale=scale),
        nn.Linear(features, width), nn.ReLU(),
        nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, 1),
    )
    return model.to(dtype=dtype or torch.float32, device=device or "cpu")


def bench_inputs(n: int, in_features: int = 2, *, seed: int = 1, dtype=None, device=None):
    """``n`` points uniform in the unit square (cube), reproducibly."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, in_features, generator=g, dtype=torch.float64)
    return x.to(dtype=dtype or torch.float32, device=device or "cpu")


def torchfunc_ntk(model, x1, x2=None):
    """The PyTorch tutorial's empirical NTK: per-sample Jacobians, then an einsum contraction.

    ``vmap(jacrev(f))`` over the points gives the ``(N, O, P)`` Jacobian, one
    ``einsum('Naf,Mbf->NMab')`` per parameter contracts it. As in
    :func:`~neuralspec.ntk.ntk` only trainable parameters enter, and the output
    axes are traced. When ``x2`` is ``None`` the Jacobian is computed once
    (the tutorial computes it twice, for ``x1`` and ``x2``; reusing it halves
    the recipe's memory, which only makes the comparison kinder to it).
    """
    import torch
    from torch.func import functional_call, jacrev, vmap

    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}

    def fnet_single(p, x):
        return functional_call(model, p, (x.unsqueeze(0),), strict=False).squeeze(0).reshape(-1)

    jac1 = vmap(jacrev(fnet_single), (None, 0))(params, x1)
    jac1 = [j.flatten(2) for j in jac1.values()]
    if x2 is None:
        jac2 = jac1
    else:
        jac2 = vmap(jacrev(fnet_single), (None, 0))(params, x2)
        jac2 = [j.flatten(2) for j in jac2.values()]
    result = torch.stack([torch.einsum("Naf,Mbf->NMab", j1, j2) for j1, j2 in zip(jac1, jac2)])
    return result.sum(0).diagonal(dim1=-2, dim2=-1).sum(-1)


def loop_ntk_rows(model, x):
    """Per-sample backward loop: one ``autograd.grad`` per point (and output), rows of ``J``."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    P = sum(p.numel() for p in params)
    rows = []
    for i in range(x.shape[0]):
        y = model(x[i:i + 1]).reshape(-1)
        for o in range(y.shape[0]):
            g = torch.autograd.grad(y[o], params, retain_graph=o + 1 < y.shape[0])
            rows.append(torch.cat([t.reshape(-1) for t in g]))
    J = torch.stack(rows)
    O = J.shape[0] // x.shape[0]
    return J.reshape(x.shape[0], O * P) if O == 1 else J.reshape(x.shape[0], O, P)


# ----------------------------------------------------------------------------
# one measurement (runs in a child process, or in-process with --no-isolate)
# ----------------------------------------------------------------------------

def _rss_mb(field: str = "VmHWM") -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _reset_peak() -> bool:
    """Reset the peak RSS of this process (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _run_once(kind: str, spec: Dict, model, x, K, base: float):
    """One timed run of a short measurement: ``(result, seconds, extra fields)``."""
    import torch

    import neuralspec as scale
    from neuralspec import ntk

    device = x.device
    n = x.shape[0]
    extra: Dict = {}
    _sync(device)
    t0 = time.perf_counter()
    if kind == "ntk":
        result = ntk(model, x, progress=False)
    elif kind == "ntk64":
        result = ntk(model.double(), x.double(), progress=False)
    elif kind == "recipe":
        result = torchfunc_ntk(model, x)
    elif kind == "loop":
        m = min(n, spec["loop_rows"])
        J = loop_ntk_rows(model, x[:m])
        _sync(device)
        t_rows = time.perf_counter() - t0
        t1 = time.perf_counter()
        result = J @ J.T
        _sync(device)
        t_con = time.perf_counter() - t1
        if m < n:
            extra["extrapolated"] = True
            extra["seconds_measured"] = t_rows + t_con
            extra["seconds_est"] = t_rows * n / m + t_con * (n / m) ** 2
            extra["peak_est_mb"] = base + (n * J.shape[1] + n * n) * J.element_size() / 2**20
            extra["note"] = f"extrapolated from {m} of {n} rows"
        del J
    elif kind.startswith("eig_"):
        k = spec["k"]
        solver = kind[4:]
        if solver == "numpy_svd":
            s = np.linalg.svd(K.cpu().numpy(), compute_uv=True)[1]
            result = np.sort(s)[::-1][:k]
        elif solver == "torch_svd":
            result = torch.linalg.svd(K).S.sort(descending=True).values[:k]
        elif solver == "numpy_eigh":
            result = np.linalg.eigh(K.cpu().numpy())[0][::-1][:k]
        elif solver == "torch_eigh":
            result = torch.linalg.eigh(K).eigenvalues.flip(0)[:k]
        elif solver == "eigh64":
            result = torch.linalg.eigh(K.double()).eigenvalues.flip(0)[:k]
        elif solver in ("lanczos", "lobpcg"):
            result, _, info = scale.top_eigenpairs(K, k, method=solver, return_info=True, progress=False)
            extra["note"] = f"{info['n_products']} products K v"
        else:
            raise ValueError(f"unknown solver {solver!r}")
    else:
        raise ValueError(f"unknown measurement {kind!r}")
    _sync(device)
    return result, time.perf_counter() - t0, extra


def gemm_rate(n: int = 4096, dtype=None, device="cpu", repeats: int = 3) -> float:
    """This machine's matrix-multiply rate (GFLOP/s), best of ``repeats`` ``(n, n) @ (n, n)`` products."""
    import torch

    dtype = dtype or torch.float32
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(dtype=dtype, device=device)
    b = torch.randn(n, n, generator=g).to(dtype=dtype, device=device)
    a @ b  # warm-up
    _sync(torch.device(device))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        _sync(torch.device(device))
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def ntk_flops(n: int, width: int, features: int, symmetric: bool = True) -> float:
    r"""Floating-point operations of the structured NTK of the benchmark network on ``n`` points.

    Per trainable layer with input width :math:`c` and output width :math:`a`: two Gram
    matrices :math:`\Delta\Delta^\top` and :math:`HH^\top`, :math:`2 n^2 (a + c)` flops (half of
    it for a symmetric kernel, of which only the upper blocks are computed), plus the
    elementwise combination (:math:`3 n^2`), plus forward and backward passes
    (:math:`6 n P`). The layers: features -> width -> width -> 1 (the RFF is frozen).
    """
    layers = [(features, width), (width, width), (width, 1)]
    gram = sum(2.0 * n * n * (a + c) + 3.0 * n * n for c, a in layers)
    if symmetric:
        gram /= 2
    P = _n_params(width, features)
    return gram + 6.0 * n * P


def _measure(spec: Dict) -> Dict:
    """Run one measurement described by ``spec``; return times, peak memory and results."""
    import torch

    import neuralspec as scale
    from neuralspec import ntk

    dtype = getattr(torch, spec.get("dtype", "float32"))
    device = torch.device(spec.get("device", "cpu"))
    kind = spec["kind"]
    if kind == "gemm":
        return {"gflops": gemm_rate(spec.get("n", 4096), dtype, device)}
    n = spec["n"]
    model = bench_model(spec["width"], features=spec["features"], in_features=spec["in_features"],
                        dtype=dtype, device=device)
    x = bench_inputs(n, spec["in_features"], dtype=dtype, device=device)
    out: Dict = {"extrapolated": False, "note": ""}
    K = None
    if kind.startswith("eig_"):
        K = ntk(model, x)  # set-up, not timed
        _sync(device)
    # warm-up on a few points (first-call costs are not what we time)
    xw = x[:4]
    if kind in ("ntk", "ntk64"):
        ntk(model, xw)
    elif kind == "recipe":
        torchfunc_ntk(model, xw)
    elif kind == "loop":
        loop_ntk_rows(model, xw)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb("VmRSS")
    can_reset = _reset_peak()
    _sync(device)
    result = None
    if not kind.startswith("large_"):
        # Short runs are repeated (best of up to 3, while the total stays under 20 s):
        # on a shared machine one run can be slowed several times by a busy core.
        best = None
        total = 0.0
        for _ in range(3):
            res, secs, extra = _run_once(kind, spec, model, x, K, base)
            total += secs
            if best is None or secs < best[1]:
                best = (res, secs, extra)
            del res
            if total + secs > 20.0:
                break
        result, seconds, extra = best
        out.update(extra)
        out["seconds"] = seconds
        t0 = None
    elif kind in ("large_dense", "large_mf"):
        t0 = time.perf_counter()
        k = spec["k"]
        mf = kind == "large_mf"
        show = bool(spec.get("progress", False))
        op = scale.ntk_operator(model, x, matrix_free=mf, progress=show)
        _sync(device)
        out["seconds_kernel"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        solver = spec.get("solver", "lanczos")
        extra_kw = ({"landmarks": spec.get("landmarks"), "oversample": spec.get("oversample")}
                    if solver == "nystrom" else {})
        evals, evecs, info = scale.top_eigenpairs(op, k, method=solver, return_info=True, progress=show,
                                                  check=False, **extra_kw)
        _sync(device)
        out["seconds_eig"] = time.perf_counter() - t1
        out["n_products"] = info["n_products"]
        out["n_params"] = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
        # seconds spent in exact products: Nystrom reports it; for Lanczos it is nearly all of eigen
        secs_products = info.get("seconds_products", out["seconds_eig"])
        if mf and info["n_products"] > 0 and secs_products > 0:
            out["product_gflops"] = 4.0 * x.shape[0] * out["n_params"] * info["n_products"] / secs_products / 1e9
        for key in ("seconds_columns", "seconds_subspace", "seconds_products", "landmark_method"):
            if key in info:
                out[key] = info[key]
        for key in ("landmarks", "refine_rounds", "column_blocks", "exact_products"):
            if key in info:
                out[key] = info[key]
        if "residuals" in info:
            out["residuals_certified"] = [float(r) for r in info["residuals"]]
        result = evals
        # accuracy: relative residuals ||K u - lambda u|| / lambda_1 (neither timed nor in the peak)
        out["peak_mb"] = _rss_mb("VmHWM") if can_reset else float("nan")
        if device.type == "cuda":
            out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
        if spec.get("residuals", True):
            t2 = time.perf_counter()
            R = op.matmat(evecs) - evecs * evals
            out["residual"] = float(R.norm(dim=0).max() / evals[0])
            out["seconds_residual"] = time.perf_counter() - t2
    else:
        raise ValueError(f"unknown measurement {kind!r}")
    _sync(device)
    if t0 is not None:
        seconds = time.perf_counter() - t0
        if "seconds_residual" in out:
            seconds -= out["seconds_residual"]
        out["seconds"] = seconds
    if "peak_mb" not in out:
        out["peak_mb"] = _rss_mb("VmHWM") if can_reset else float("nan")
        if device.type == "cuda":
            out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["base_mb"] = base
    if result is not None:
        arr = result.detach().cpu().numpy() if isinstance(result, torch.Tensor) else np.asarray(result)
        if spec.get("save") and arr.ndim == 2:
            np.save(spec["save"], arr)
        elif arr.ndim == 1:
            out["values"] = arr.astype(np.float64).tolist()
    return out


def _child(spec: Dict, conn) -> None:
    try:
        import torch

        if spec.get("threads"):
            torch.set_num_threads(int(spec["threads"]))
        conn.send(_measure(spec))
    except MemoryError:
        conn.send({"error": "out of memory (MemoryError)"})
    except Exception as err:  # report, do not crash the benchmark
        conn.send({"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc()})
    finally:
        conn.close()


def _run(spec: Dict, isolate: bool, timeout: float) -> Dict:
    if not isolate:
        try:
            return _measure(spec)
        except Exception as err:
            return {"error": f"{type(err).__name__}: {err}"}
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(spec, child), daemon=True)
    p.start()
    child.close()
    res = None
    deadline = time.time() + timeout
    while time.time() < deadline:
        if parent.poll(1.0):
            try:
                res = parent.recv()
            except EOFError:
                res = None
            break
        if not p.is_alive():
            break
    if res is None and p.is_alive():
        p.terminate()
        p.join(5)
        return {"error": f"timed out after {timeout:.0f} s (stopped)"}
    p.join(10)
    if res is None:
        code = p.exitcode
        why = "killed, probably out of memory" if code in (-9, 137) else f"exit code {code}"
        return {"error": f"the measurement process died ({why})"}
    return res


# ----------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------

def _fmt_s(s: Optional[float], approx: bool = False) -> str:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    t = f"{s:.3g}" if s < 100 else f"{s:.0f}"
    return ("~" if approx else "") + t


def _fmt_mb(m: Optional[float], approx: bool = False) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "-"
    t = f"{m:,.0f}"
    return ("~" if approx else "") + t


def _fmt_ratio(r: Optional[float], approx: bool = False) -> str:
    if r is None or not math.isfinite(r):
        return "-"
    t = f"{r:.3g}" if r < 1000 else f"{r:,.0f}"
    return ("~" if approx else "") + t + "x"


def _fmt_err(e: Optional[float]) -> str:
    if e is None or not math.isfinite(e):
        return "-"
    return f"{e:.1e}"


def _markdown(headers: List[str], rows: List[List[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def _mem_available_mb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("inf")


def _loadavg() -> str:
    try:
        return "%.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "n/a"


def _n_params(width: int, features: int) -> int:
    return (features * width + width) + (width * width + width) + (width + 1)


# ----------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python benchmarks/bench.py",
        description="Time neuralspec.ntk against the torch.func recipe and a per-sample loop, "
                    "and the eigensolvers, on RFF(d -> 256) -> width -> width -> 1.",
    )
    p.add_argument("--quick", action="store_true",
                   help="tiny sizes, in-process, a few seconds (a smoke test)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="N values (default 500 1000 2000 4000)")
    p.add_argument("--widths", type=int, nargs="+", default=None, help="hidden widths (default 256 1024)")
    p.add_argument("--features", type=int, default=None, help="random Fourier features (default 256)")
    p.add_argument("--in-features", type=int, default=2, help="input dimension d (default 2)")
    p.add_argument("--methods", default="ntk,recipe,loop",
                   help="comma-separated subset of ntk,recipe,loop (default all)")
    p.add_argument("--loop-rows", type=int, default=None,
                   help="rows the per-sample loop computes before extrapolating (default 250)")
    p.add_argument("--eig-sizes", type=int, nargs="*", default=None,
                   help="N values for the eigensolver table (default 1000 2000 4000; none to skip)")
    p.add_argument("--topk", type=int, default=None, help="k of the top-k solvers (default 50)")
    p.add_argument("--large", action="store_true",
                   help="also N=20000 top-50 (held kernel) and N=100000 top-10 (matrix-free)")
    p.add_argument("--sections", default=None,
                   help="comma-separated subset of ntk,eig,large,explorer to run (default "
                        "ntk,eig,explorer, plus large with --large)")
    p.add_argument("--large-n", type=int, default=20000, help="N of the held-kernel run (0 skips it)")
    p.add_argument("--large-k", type=int, default=50)
    p.add_argument("--large-solver", choices=["lanczos", "lobpcg"], default="lanczos")
    p.add_argument("--huge-solvers", default="nystrom,lanczos",
                   help="solvers for the matrix-free N = huge-n run (comma-separated; default nystrom,lanczos)")
    p.add_argument("--gemm-n", type=int, default=4096, help="size of the GEMM that measures the machine's rate")
    p.add_argument("--nystrom-landmarks", type=int, default=None, help="Nystrom landmarks (default: the library's)")
    p.add_argument("--nystrom-oversample", type=int, default=None, help="Nystrom oversampling (default: the library's)")
    p.add_argument("--huge-n", type=int, default=100000)
    p.add_argument("--huge-k", type=int, default=10)
    p.add_argument("--no-residuals", action="store_true",
                   help="skip the residual check of the large runs (one more block product)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per measurement")
    p.add_argument("--max-memory-gb", type=float, default=None,
                   help="skip measurements estimated to need more (default: 85%% of MemAvailable)")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds per measurement (default 900; at least 3600 for the --large runs)")
    p.add_argument("--isolate", dest="isolate", action="store_true", default=None,
                   help="one fresh process per measurement (default, except --quick)")
    p.add_argument("--no-isolate", dest="isolate", action="store_false")
    p.add_argument("--out", default=None, help="also write the tables (markdown) to this file")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    import torch

    from neuralspec import default_device

    quick = args.quick
    sizes = args.sizes or ([48, 96] if quick else [500, 1000, 2000, 4000])
    widths = args.widths or ([32] if quick else [256, 1024])
    features = args.features or (16 if quick else 256)
    loop_rows = args.loop_rows or (32 if quick else 250)
    eig_sizes = args.eig_sizes if args.eig_sizes is not None else ([96] if quick else [1000, 2000, 4000])
    topk = args.topk or (5 if quick else 50)
    isolate = (not quick) if args.isolate is None else args.isolate
    device = str(args.device or default_device())
    sections = ({t.strip() for t in args.sections.split(",") if t.strip()} if args.sections
                else {"ntk", "eig", "explorer"} | ({"large"} if args.large else set()))
    known = {"ntk", "eig", "large", "explorer"}
    if sections - known:
        raise SystemExit(f"--sections: unknown {sorted(sections - known)}; "
                         "choose from ntk, eig, large, explorer")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in ("ntk", "recipe", "loop")]
    if bad:
        raise SystemExit(f"--methods: unknown {bad}; choose from ntk, recipe, loop")
    for name, vals in [("--sizes", sizes), ("--widths", widths), ("--eig-sizes", eig_sizes)]:
        if any(v < 2 for v in vals):
            raise SystemExit(f"{name} must be integers >= 2; got {vals}")
    itemsize = 4 if args.dtype == "float32" else 8
    avail = _mem_available_mb()
    cap_mb = args.max_memory_gb * 1024 if args.max_memory_gb else 0.85 * avail
    base_guess = 600.0  # MB: a process with torch, scipy and the model, before any kernel

    common = dict(features=features, in_features=args.in_features, dtype=args.dtype, device=device,
                  threads=args.threads)
    tmp = tempfile.mkdtemp(prefix="neuralspec-bench-")
    out_lines: List[str] = []

    def emit(s: str = "") -> None:
        print(s, flush=True)
        out_lines.append(s)

    t_start = time.time()
    emit("# neuralspec benchmark")
    emit()
    emit(f"- machine: {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, "
         f"{args.threads or torch.get_num_threads()} threads, device `{device}`"
         + (f" ({torch.cuda.get_device_name(0)})" if device.startswith("cuda") else ""))
    emit(f"- load average at start: {_loadavg()}; memory available: {avail / 1024:.1f} GB; "
         f"memory cap for a measurement: {cap_mb / 1024:.1f} GB")
    emit(f"- network: RFF({args.in_features} -> {features}, frozen) -> width -> width -> 1, ReLU, "
         f"{args.dtype}; x uniform in [0, 1]^{args.in_features}")
    emit(f"- each measurement in {'a fresh process' if isolate else 'this process'}; "
         "peak = peak resident memory of that process (VmHWM, MiB), imports and model included")
    emit()

    def peak_of(r: Dict) -> Optional[float]:
        if "cuda_peak_mb" in r:
            return r["cuda_peak_mb"]
        return r.get("peak_est_mb", r.get("peak_mb"))

    # ---------------- 0. the machine's GEMM rate ----------------
    gemm = _run(dict(common, kind="gemm", n=args.gemm_n if not quick else 512, width=0), isolate, args.timeout)
    gflops = gemm.get("gflops")
    emit(f"- GEMM rate of this machine in this run: "
         + (f"{gflops:.1f} GFLOP/s ({args.gemm_n if not quick else 512}^2 x {args.gemm_n if not quick else 512} "
            f"{args.dtype} matrix product, best of 3, same threads)" if gflops else f"not measured ({gemm.get('error')})"))
    emit()

    # ---------------- 1. the NTK ----------------
    summary: Dict = {}
    if "ntk" in sections:
        emit("## 1. Empirical NTK, N x N kernel")
        emit()
        emit("`ntk` = `neuralspec.ntk(model, x)` (method picked by `ntk_method`: "
             f"`{_ntk_method_name(widths[0], features, args.in_features)}` here); "
             "`torch.func` = the PyTorch tutorial's `vmap(jacrev)` + `einsum` contraction "
             "(Jacobian computed once); `loop` = one `autograd.grad` per point, then `J @ J.T`. "
             "Speed-up and memory ratio are relative to `torch.func`; error = max |K - K_ref| / max |K_ref| "
             "with K_ref the torch.func kernel (float32, same arithmetic) or `neuralspec.ntk` in float64 "
             "(the loop: on its rows). Differences of ~1e-4 from float64 are float32 itself: a ReLU unit "
             "whose float32 pre-activation rounds to exactly 0 flips its mask; the float32 methods share "
             "them. Times: best of up to 3 runs when short. `~` = estimated.")
        emit()
        emit("`% GEMM` = the structured NTK's flop count (`ntk_flops`: the two Gram matrices per layer, "
             "upper blocks only, plus the forward/backward passes) divided by its time, relative to the "
             "GEMM rate measured above: how close the kernel runs to this machine's matrix-multiply peak.")
        emit()
        headers = ["width", "P", "N", "method", "time (s)", "speed-up", "peak (MiB)", "mem / torch.func",
                   "err vs torch.func", "err vs float64", "GFLOP", "% GEMM", "note"]
        rows: List[List[str]] = []
        names = {"ntk": "ntk", "recipe": "torch.func", "loop": "loop"}
        for width in widths:
            P = _n_params(width, features)
            for n in sizes:
                res: Dict[str, Dict] = {}
                ref_path = os.path.join(tmp, f"ref_{width}_{n}.npy")
                ref = _run(dict(common, kind="ntk64", width=width, n=n, save=ref_path, dtype="float64"),
                           isolate, args.timeout)
                Kref = np.load(ref_path) if os.path.exists(ref_path) else None
                for m in methods:
                    spec = dict(common, kind=m, width=width, n=n, loop_rows=loop_rows,
                                save=os.path.join(tmp, f"{m}_{width}_{n}.npy"))
                    est = None
                    if m == "recipe":
                        est = base_guess + (n * P + 2 * n * n) * itemsize / 2**20
                    elif m == "loop":
                        mm = min(n, loop_rows)
                        est = base_guess + (mm * P + mm * mm) * itemsize / 2**20
                    if est is not None and est > cap_mb:
                        res[m] = {"error": f"skipped: needs ~{est / 1024:.0f} GB > cap {cap_mb / 1024:.0f} GB",
                                  "skipped": True, "peak_est_mb": est}
                        continue
                    res[m] = _run(spec, isolate, args.timeout)
                # agreement: with the float64 reference, and with the torch.func recipe (float32)
                Krec = None
                rec_path = os.path.join(tmp, f"recipe_{width}_{n}.npy")
                if os.path.exists(rec_path):
                    Krec = np.load(rec_path).astype(np.float64)
                for m in methods:
                    path = os.path.join(tmp, f"{m}_{width}_{n}.npy")
                    if not os.path.exists(path):
                        continue
                    if "error" not in res[m]:
                        Km = np.load(path).astype(np.float64)
                        for key, R in (("rel_err", Kref), ("rel_err_recipe", Krec)):
                            if R is not None:
                                Rs = R[:Km.shape[0], :Km.shape[1]]
                                res[m][key] = float(np.abs(Km - Rs).max() / np.abs(Rs).max())
                        del Km
                    os.remove(path)
                del Krec
                rec = res.get("recipe", {})
                rec_t = rec.get("seconds") if "error" not in rec else None
                rec_m = peak_of(rec) if "error" not in rec else None
                for m in methods:
                    r = res[m]
                    if "error" in r:
                        rows.append([str(width), f"{P:,}", str(n), names[m], "-", "-",
                                     _fmt_mb(r.get("peak_est_mb"), True) if r.get("skipped") else "-",
                                     "-", "-", "-", "-", "-", r["error"]])
                        continue
                    ext = r.get("extrapolated", False)
                    t = r["seconds_est"] if ext else r["seconds"]
                    pk = peak_of(r)
                    rows.append([
                        str(width), f"{P:,}", str(n), names[m], _fmt_s(t, ext),
                        _fmt_ratio(rec_t / t, ext) if rec_t else "-",
                        _fmt_mb(pk, ext), _fmt_ratio(pk / rec_m, ext) if rec_m else "-",
                        "-" if m == "recipe" else _fmt_err(r.get("rel_err_recipe")),
                        _fmt_err(r.get("rel_err")),
                        f"{ntk_flops(n, width, features) / 1e9:.1f}" if m == "ntk" else "-",
                        f"{100 * ntk_flops(n, width, features) / 1e9 / t / gflops:.0f}%" if m == "ntk" and gflops else "-",
                        r.get("note", "") + (f" (measured {r['seconds_measured']:.3g} s)" if ext else ""),
                    ])
                    summary[(m, width, n)] = dict(r, time=t, peak=pk)
                if "error" in ref:
                    rows.append([str(width), f"{P:,}", str(n), "reference", "-", "-", "-", "-", "-", "-", "-", "-",
                                 "float64 reference failed: " + ref["error"]])
                if os.path.exists(ref_path):
                    os.remove(ref_path)
                print(f"  [done: width {width}, N {n}, {time.time() - t_start:.0f} s]", file=sys.stderr, flush=True)
        emit(_markdown(headers, rows))
        emit()

    # ---------------- 2. eigensolvers ----------------
    if eig_sizes and "eig" in sections:
        ew = max(widths)
        emit(f"## 2. Eigensolvers on the NTK (width {ew}), top k = {topk}")
        emit()
        emit("Time of the decomposition alone (the kernel is computed before the clock starts). "
             "Speed-up relative to `numpy.linalg.svd` (the seed notes' choice); error = "
             "max_i |lambda_i - lambda_i^ref| / lambda_1 over the top k, with lambda^ref from "
             "float64 `eigh`.")
        emit()
        solvers = [("numpy_svd", "numpy.linalg.svd"), ("torch_svd", "torch.linalg.svd"),
                   ("numpy_eigh", "numpy.linalg.eigh"), ("torch_eigh", "torch.linalg.eigh"),
                   ("lanczos", f"top_eigenpairs lanczos (k={topk})"),
                   ("lobpcg", f"top_eigenpairs lobpcg (k={topk})")]
        erows: List[List[str]] = []
        for n in eig_sizes:
            k = min(topk, n - 1)
            ref = _run(dict(common, kind="eig_eigh64", width=ew, n=n, k=k), isolate, args.timeout)
            lam = np.asarray(ref.get("values", []))
            base_t = None
            for key, label in solvers:
                r = _run(dict(common, kind="eig_" + key, width=ew, n=n, k=k), isolate, args.timeout)
                if "error" in r:
                    erows.append([str(n), label, "-", "-", "-", "-", r["error"]])
                    continue
                if key == "numpy_svd":
                    base_t = r["seconds"]
                vals = np.asarray(r.get("values", []))
                err = (float(np.abs(vals[:k] - lam[:k]).max() / lam[0])
                       if len(lam) and len(vals) >= k else None)
                erows.append([str(n), label, _fmt_s(r["seconds"]),
                              _fmt_ratio(base_t / r["seconds"]) if base_t else "-",
                              _fmt_mb(peak_of(r)), _fmt_err(err), r.get("note", "")])
                summary[("eig", key, n)] = r
            print(f"  [done: eigensolvers N {n}, {time.time() - t_start:.0f} s]", file=sys.stderr, flush=True)
        emit(_markdown(["N", "solver", "time (s)", "speed-up", "peak (MiB)", "error", "note"], erows))
        emit()

    # ---------------- 3. large N ----------------
    if "large" in sections:
        emit("## 3. Large N: top-k NTK eigenpairs")
        emit()
        emit("Width 1024. Residual = max_i ||K u_i - lambda_i u_i|| / lambda_1 (checked after the "
             "clock stops and the peak is read, with one more block product). Matrix-free: "
             f"`{_mf_mode_name(args.in_features)}` products, layer factors cached up to 2 GiB.")
        emit()
        lrows: List[List[str]] = []
        runs = ([("large_dense", args.large_n, args.large_k, "kernel held once (ntk_operator)", args.large_solver)]
                if args.large_n > 0 else [])  # --large-n 0: only the matrix-free runs
        for solver in [t.strip() for t in args.huge_solvers.split(",") if t.strip()]:
            runs.append(("large_mf", args.huge_n, args.huge_k,
                         f"matrix-free (ntk_operator(matrix_free=True)), {solver}", solver))
        for kind, n, k, label, solver in runs:
            if kind == "large_dense":
                est = base_guess + 1.15 * n * n * itemsize / 2**20
                if est > cap_mb:
                    lrows.append([str(n), str(k), label, "-", "-", "-", "-", _fmt_mb(est, True), "-",
                                  f"skipped: needs ~{est / 1024:.1f} GB > cap"])
                    continue
            r = _run(dict(common, kind=kind, width=1024, n=n, k=k, solver=solver,
                          landmarks=args.nystrom_landmarks, oversample=args.nystrom_oversample,
                          residuals=not args.no_residuals, progress=True), isolate,
                     max(args.timeout, 3600.0))
            if "error" in r:
                lrows.append([str(n), str(k), label, "-", "-", "-", "-", "-", "-", r["error"]])
                continue
            cert = r.get("residuals_certified")
            nys = (f"; {r['landmarks']} {r.get('landmark_method', '')} landmarks (column block "
                   f"{r.get('seconds_columns', float('nan')):.1f} s), {r['refine_rounds']} Rayleigh-Ritz rounds, "
                   f"max certified residual / lambda_i {max(cert):.1e}" if cert else "")
            if r.get("product_gflops") and gflops:
                nys += (f"; exact products at {r['product_gflops']:.0f} GFLOP/s (4NP flops each, P = "
                        f"{r['n_params']:,}) = {100 * r['product_gflops'] / gflops:.0f}% of the GEMM rate")
            lrows.append([str(n), str(k), label, _fmt_s(r["seconds_kernel"]), _fmt_s(r["seconds_eig"]),
                          _fmt_s(r["seconds"]), str(r.get("n_products", "-")), _fmt_mb(peak_of(r)),
                          _fmt_err(r.get("residual")),
                          f"lambda_1 = {r['values'][0]:.4g}, lambda_{k} = {r['values'][-1]:.4g}{nys}"])
            summary[(kind, n, solver)] = r
            print(f"  [done: {kind} N {n}, {time.time() - t_start:.0f} s]", file=sys.stderr, flush=True)
        emit(_markdown(["N", "k", "kernel", "build (s)", "eigen (s)", "total (s)", "products K v",
                        "peak (MiB)", "residual", "note"], lrows))
        emit()

    # ---------------- 4. the explorer ----------------
    if "explorer" in sections:
        emit("## 4. Interactive explorer: one update")
        emit()
        emit("`neuralspec.widgets.KernelExplorer` at its default settings (the NTK of an RFF-MLP, "
             "scale 10, width 256, depth 2, 200 points); one update = set the scale slider, recompute "
             "the kernel and its spectrum, redraw the figure. Wall time in this process, after one "
             "warm-up update.")
        emit()
        erows = _explorer_rows(repeats=3 if quick else 9)
        emit(_markdown(["settings", "updates", "median (s)", "max (s)", "target"], erows))
        emit()

    # ---------------- targets ----------------
    emit("## Targets")
    emit()
    tw = 1024
    tn = 2000
    if ("ntk", tw, tn) in summary and ("recipe", tw, tn) in summary:
        a, b = summary[("ntk", tw, tn)], summary[("recipe", tw, tn)]
        emit(f"- N={tn}, width {tw}: ntk {b['time'] / a['time']:.0f}x faster than torch.func "
             f"(target >= 100x), peak memory {a['peak'] / b['peak']:.3f} of it (target <= 0.1), "
             f"rel. difference {a.get('rel_err_recipe', float('nan')):.1e} (target <= 1e-5)")
    else:
        emit(f"- N={tn}, width {tw}: not measured in this run")
    if ("large_dense", args.large_n) in summary:
        r = summary[("large_dense", args.large_n)]
        emit(f"- N={args.large_n}, top {args.large_k}: {r['seconds']:.0f} s (target < 180 s), "
             f"peak {peak_of(r) * 2**20 / 1e9:.2f} GB (target < 4 GB)")
    for solver in ("nystrom", "lanczos"):
        if ("large_mf", args.huge_n, solver) in summary:
            r = summary[("large_mf", args.huge_n, solver)]
            # the targets: 60 s and 2.5 GB at N = 100,000; 10 min and 8 GB at 1,000,000
            t_max, gb_max = (60, 2.5) if args.huge_n <= 100_000 else (600, 8.0)
            res = (f"max residual {r['residual']:.1e}" if np.isfinite(r.get("residual", float("nan")))
                   else "independent residual check skipped (--no-residuals)")
            cert = r.get("residuals_certified")
            if cert:
                res += f", max certified residual / lambda_i {max(cert):.1e}"
            emit(f"- N={args.huge_n}, top {args.huge_k}, matrix-free, {solver}: {r['seconds']:.0f} s "
                 f"(target <= {t_max} s), peak {peak_of(r) * 2**20 / 1e9:.2f} GB (target <= {gb_max} GB), "
                 f"{res} (target <= 1e-3)")
    a, b = summary.get(("large_mf", args.huge_n, "nystrom")), summary.get(("large_mf", args.huge_n, "lanczos"))
    if a and b:
        va, vb = np.asarray(a["values"]), np.asarray(b["values"])
        emit(f"- N={args.huge_n}: Nystrom vs Lanczos eigenvalues, max relative difference (each to its own "
             f"lambda_i) {np.max(np.abs(va - vb) / np.abs(vb)):.1e} (target <= 1e-3)")
        emit(f"  - Nystrom:  {', '.join(f'{v:.6g}' for v in va)}")
        emit(f"  - Lanczos:  {', '.join(f'{v:.6g}' for v in vb)}")
    if ("ntk", 1024, 4000) in summary and gflops:
        r = summary[("ntk", 1024, 4000)]
        emit(f"- N=4000, width 1024: structured NTK at {100 * ntk_flops(4000, 1024, features) / 1e9 / r['time'] / gflops:.0f}% "
             f"of the GEMM rate measured in this run (target >= 70%)")
    emit()
    emit(f"Total {time.time() - t_start:.0f} s; load average at end: {_loadavg()}.")
    try:
        os.rmdir(tmp)
    except OSError:
        pass
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(out_lines) + "\n")
    return 0


def _explorer_rows(repeats: int) -> List[List[str]]:
    """Time explorer updates (wall clock) at the default settings and one heavier one."""
    try:
        from neuralspec.widgets import KernelExplorer
    except ImportError as err:  # ipywidgets not installed
        return [["-", "0", "-", "-", f"skipped: {err}"]]
    rows = []
    for label, changes in [("default", {}), ("400 points", dict(n_points=400))]:
        ex = KernelExplorer(**changes)
        times = []
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            ex.controls["scale"].value = 9.0 + (i % 3)
            if i:  # the first update warms up
                times.append(time.perf_counter() - t0)
        rows.append([label, str(len(times)), f"{statistics.median(times):.3f}", f"{max(times):.3f}", "< 1 s"])
    return rows


def _mf_mode_name(in_features: int) -> str:
    try:
        import torch

        from neuralspec import ntk_operator

        model = bench_model(16, features=8, in_features=in_features)
        return ntk_operator(model, torch.rand(4, in_features), matrix_free=True).mode
    except Exception as err:  # pragma: no cover - informative only
        return f"unknown ({err})"


def _ntk_method_name(width: int, features: int, in_features: int) -> str:
    try:
        from neuralspec import ntk_method

        return str(ntk_method(bench_model(width, features=features, in_features=in_features)))
    except Exception as err:  # pragma: no cover - informative only
        return f"unknown ({err})"


if __name__ == "__main__":
    sys.exit(main())
