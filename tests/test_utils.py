"""Utilities: progress bars appear only for work that takes a while; the version is declared once."""
import contextlib
import io

import torch

import neuralspec as ns
import neuralspec.utils as U


def _stderr_of(fn):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        fn()
    return err.getvalue()


def test_no_progress_bar_for_a_short_job(monkeypatch):
    m = ns.MLP(2, 16, 1, 1)
    x = torch.randn(40, 2)
    assert _stderr_of(lambda: ns.ntk(m, x, progress=True, chunk_size=10)) == ""
    monkeypatch.setattr(U, "PROGRESS_DELAY", 0.0)
    assert "block" in _stderr_of(lambda: ns.ntk(m, x, progress=True, chunk_size=10))


def test_progress_bar_delay_and_disable():
    bar = U.progress_bar(10, "x", enabled=False)
    assert bar.disable
    bar = U.progress_bar(10, "x", delay=5.0)
    assert bar.delay == 5.0
    bar.close()


def test_version_comes_from_the_package_metadata():
    from importlib.metadata import version

    assert ns.__version__ == version("neuralspec")
