"""Execute every chapter once, top to bottom, and print its wall-clock time.

    .venv/bin/python tools/time_chapters.py [chapters/*.ipynb]

Uses the same kernel as the book build (nbclient, python3). The issues ask
for each chapter to run in well under a minute on a 2-core CPU; this is the
script that measures it (timings are reported, not asserted).
"""
from __future__ import annotations

import glob
import os
import sys
import time

import nbformat
from nbclient import NotebookClient


def main(paths: list) -> int:
    paths = paths or sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "chapters", "*.ipynb")))
    total = 0.0
    print(f"{'chapter':40s} {'seconds':>8s}")
    for p in paths:
        nb = nbformat.read(p, as_version=4)
        client = NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": os.path.dirname(os.path.abspath(p))}})
        t0 = time.perf_counter()
        client.execute()
        dt = time.perf_counter() - t0
        total += dt
        print(f"{os.path.basename(p):40s} {dt:8.1f}", flush=True)
    print(f"{'total':40s} {total:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
