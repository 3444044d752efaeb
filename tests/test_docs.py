"""The book's Sphinx side (API pages from the docstrings, cross-references, citations)
builds with ``-W -n`` -- checked here without executing the chapters, in seconds, so a
broken docstring reference fails ``make unit`` instead of the book build at the end of
``make test``."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", ".colab-venv", "_build", ".pytest_cache", "__pycache__"}


@pytest.mark.slow
def test_book_builds_nitpicky_without_execution(tmp_path):
    jb = Path(sys.executable).with_name("jupyter-book")
    if not jb.exists():
        pytest.skip("jupyter-book is not installed in this environment")
    dst = tmp_path / "book"
    shutil.copytree(ROOT, dst, ignore=lambda d, names: [n for n in names if n in SKIP])
    config = dst / "_config.yml"
    text, n = re.subn(r"execute_notebooks:\s*\S+", 'execute_notebooks: "off"', config.read_text())
    assert n == 1, "_config.yml has no execute_notebooks setting to switch off"
    config.write_text(text)
    run = subprocess.run([str(jb), "build", str(dst), "-W", "-n", "--keep-going"],
                         capture_output=True, text=True, timeout=600)
    warnings = [line for line in run.stdout.splitlines() + run.stderr.splitlines()
                if "WARNING" in line and "Kernel is running over TCP" not in line]
    assert run.returncode == 0 and not warnings, \
        "the book does not build with -W -n:\n" + "\n".join(warnings or [run.stdout[-3000:], run.stderr[-3000:]])
