"""The Colab edition, run top to bottom in a fresh Colab-like environment.

Colab ships its own torch and ipywidgets 7.7.1, and no Jupyter Book. This test
builds such an environment from scratch (a new virtual environment with only
``COLAB_PACKAGES``), builds a wheel of this working tree, and executes every
notebook of ``colab/`` with nbclient. Each notebook's install cell installs the
package the way a reader's does, except that ``NEURALSPEC_INSTALL`` points it at
the wheel instead of the release tag (it is set here only). The widget tests run
in the same environment, so the explorers are tested on ipywidgets 7.7 as well
as on the development environment's 8.x.

Run with ``pytest -m colab`` (``make colab-run``; ``make test`` includes it).
Environment variables: ``NEURALSPEC_COLAB_TORCH`` (default ``torch==2.13.0``,
the development pin: the newest CPU build of torch this machine's package index
has) and ``NEURALSPEC_COLAB_ENV`` (where to create the environment; default a
fresh temporary folder).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.colab

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab_edition  # noqa: E402

TORCH = os.environ.get("NEURALSPEC_COLAB_TORCH", "torch==2.13.0")
COLAB_PACKAGES = [TORCH, "ipywidgets==7.7.1", "numpy", "scipy", "matplotlib", "tqdm",
                  "ipykernel", "nbclient", "nbformat", "pytest"]
EDITIONS = [f"{colab_edition.EDITION_DIR}/{rel}" for rel in colab_edition.chapter_files(ROOT)]
TIMEOUT = 900

RUNNER = textwrap.dedent("""
    import sys, time, nbformat
    from nbclient import NotebookClient
    path, workdir = sys.argv[1], sys.argv[2]
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": workdir}}).execute()
    print(f"executed {path} in {time.perf_counter() - t0:.1f} s")
""")


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n"
                             f"{r.stdout[-4000:]}\n{r.stderr[-6000:]}")
    return r


@pytest.fixture(scope="module")
def colab_env(tmp_path_factory):
    base = Path(os.environ["NEURALSPEC_COLAB_ENV"]) if os.environ.get("NEURALSPEC_COLAB_ENV") \
        else tmp_path_factory.mktemp("colab")
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    env_dir, dist = base / "venv", base / "dist"
    _run([sys.executable, "-m", "venv", str(env_dir)])
    py = env_dir / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    _run([str(py), "-m", "pip", "install", "-q", *COLAB_PACKAGES])
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)])
    wheels = sorted(dist.glob("neuralspec-*.whl"))
    assert len(wheels) == 1, f"expected one neuralspec wheel, got {wheels}"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "MPLBACKEND", "VIRTUAL_ENV", "JUPYTER_PATH")}
    env.update(PATH=f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}",
               NEURALSPEC_INSTALL=str(wheels[0]), PYTHONHASHSEED="0")
    (base / "runner.py").write_text(RUNNER)
    return {"python": py, "env": env, "base": base, "wheel": wheels[0]}


def test_environment_is_colab_like(colab_env):
    py, env, cwd = str(colab_env["python"]), colab_env["env"], colab_env["base"]
    r = _run([py, "-c", "import ipywidgets, torch; print(ipywidgets.__version__, torch.__version__)"],
             env=env, cwd=cwd)
    assert r.stdout.split()[0] == "7.7.1", r.stdout
    r = subprocess.run([py, "-c", "import jupyter_book"], capture_output=True, env=env, cwd=cwd)
    assert r.returncode != 0, "a Colab-like environment has no Jupyter Book"
    r = subprocess.run([py, "-c", "import neuralspec"], capture_output=True, env=env, cwd=cwd)
    assert r.returncode != 0, "neuralspec is installed only by the notebooks' install cell"


@pytest.mark.parametrize("rel", EDITIONS)
def test_edition_notebook_runs(colab_env, rel, tmp_path):
    src = ROOT / rel
    assert src.exists(), f"{rel} is missing: run `make colab`"
    work = tmp_path / "work"
    work.mkdir()
    nb = work / src.name
    shutil.copy(src, nb)
    r = _run([str(colab_env["python"]), str(colab_env["base"] / "runner.py"), str(nb), str(work)],
             env=colab_env["env"], cwd=work, timeout=TIMEOUT)
    print(r.stdout)


def test_widgets_on_ipywidgets_7(colab_env, tmp_path):
    """The widget tests, against the installed wheel, on ipywidgets 7.7.1."""
    py, env = str(colab_env["python"]), dict(colab_env["env"])
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(colab_env["wheel"])], env=env)
    tests = sorted((ROOT / "tests").glob("test_*widgets*.py"))
    assert tests, "no widget tests found"
    for t in tests + [ROOT / "tests" / "conftest.py"]:
        shutil.copy(t, tmp_path / t.name)
    env["MPLBACKEND"] = "Agg"
    r = _run([py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", str(tmp_path)],
             env=env, cwd=tmp_path, timeout=TIMEOUT)
    assert " passed" in r.stdout, r.stdout
