"""The Colab/Jupyter edition (``colab/``) and the one place its URL and version live.

``tools/colab_edition.py`` generates ``colab/chapters/*.ipynb`` from the chapters:
these tests fail when the committed edition is out of date, when it contains raw
MyST, when the repository URL or release appears anywhere but ``_config.yml``, or
when an exercise solution builds a model off the chapter's ``device``.
"""
from __future__ import annotations

import ast
import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import colab_edition as ce  # noqa: E402

CHAPTERS = ce.chapter_files(ROOT)


def _tree(tmp_path: Path) -> Path:
    """A copy of what the generator reads, to change without touching the repository."""
    root = tmp_path / "repo"
    root.mkdir()
    for f in ("_config.yml", "_toc.yml", "references.bib", "pyproject.toml"):
        shutil.copy(ROOT / f, root / f)
    for d in ("chapters", ce.EDITION_DIR):
        if (ROOT / d).exists():
            shutil.copytree(ROOT / d, root / d)
    return root


def test_committed_edition_is_in_sync_and_has_no_raw_myst():
    problems = ce.check(ROOT)
    assert not problems, "\n".join(problems) + "\nRun `make colab` and commit colab/."


def test_every_chapter_has_an_edition():
    assert CHAPTERS, "the table of contents lists chapters"
    for rel in CHAPTERS:
        assert (ROOT / ce.EDITION_DIR / rel).exists(), rel


def test_checker_notices_a_chapter_changed_without_regenerating(tmp_path):
    root = _tree(tmp_path)
    assert ce.check(root) == []
    rel = CHAPTERS[0]
    nb = json.loads((root / rel).read_text())
    md = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    md["source"] = "".join(md["source"]) + "\n\nA sentence added without regenerating."
    (root / rel).write_text(json.dumps(nb, indent=1))
    problems = ce.check(root)
    assert any("out of date" in p and rel in p for p in problems), problems
    assert ce.main(["--root", str(root)]) == 0          # regenerate ...
    assert ce.check(root) == []                          # ... and it is in sync again


def test_checker_refuses_myst_it_cannot_convert(tmp_path):
    root = _tree(tmp_path)
    rel = CHAPTERS[0]
    nb = json.loads((root / rel).read_text())
    nb["cells"].append({"cell_type": "markdown", "id": "x-new", "metadata": {},
                        "source": "See {unknownrole}`thing`."})
    (root / rel).write_text(json.dumps(nb, indent=1))
    problems = ce.check(root)
    assert any("unknownrole" in p for p in problems), problems


def test_raw_myst_detector():
    nb = {"cells": [{"cell_type": "markdown", "source": "a {cite}`x` b\n```{note}\nhi\n```\n(lab)=\n"},
                    {"cell_type": "markdown", "source": "inline code `{cite}` is fine"}]}
    found = ce.raw_myst(nb)
    assert "{cite}`" in found and "```{note}" in found and "(lab)=" in found and len(found) == 3


def test_conversion_of_each_construct():
    cfg = ce.Config("https://github.com/someone/fork", "v9.9.9", "colab")
    bib = {"k1": {"last": ["Jacot", "Gabriel", "Hongler"], "full": ["A Jacot"], "year": "2018",
                  "title": "NTK", "venue": "NeurIPS", "url": "https://arxiv.org/abs/1806.07572"}}
    labels = {"doc:chapters/01_a": ("chapters/01_a", "1. A"), "sec-x": ("chapters/01_a", "Section X"),
              "doc:notation": ("notation", "Notation")}
    nb = {"cells": [
        {"cell_type": "markdown", "metadata": {}, "source": "# 2. B\n\nText {cite}`k1`, see {doc}`../notation`."},
        {"cell_type": "code", "metadata": {}, "source": "import neuralspec as ns", "outputs": []},
        {"cell_type": "markdown", "metadata": {},
         "source": "$$\na = b\n$$ (eq-a)\n\nBy {eq}`eq-a` and {ref}`sec-x`.\n\n"
                   "```{exercise}\n:label: ex-1\nDo it.\n```\n\n```{solution} ex-1\n:class: dropdown\nDone.\n```"},
        {"cell_type": "markdown", "metadata": {}, "source": "```{bibliography}\n:filter: docname in docnames\n```"},
    ], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    out = ce.convert_notebook(nb, "chapters/02_b.ipynb", cfg, bib, labels)
    text = "\n".join(c["source"] for c in out["cells"])
    assert "[Jacot et al. (2018)](https://arxiv.org/abs/1806.07572)" in text
    assert "[Notation](https://someone.github.io/fork/notation.html)" in text
    assert "\\tag{1}" in text and "By (1) and [Section X](https://someone.github.io/fork/chapters/01_a.html#sec-x)" in text
    assert "### Exercise 1" in text and "<details>" in text and "Solution to exercise 1" in text
    assert "- A Jacot (2018). NTK. *NeurIPS*." in text
    assert ce.raw_myst(out) == []
    # the badge and the install cell come from the configured URL and release
    assert out["cells"][1]["cell_type"] == "code" and "git+https://github.com/someone/fork@v9.9.9" in out["cells"][1]["source"]
    assert "colab.research.google.com/github/someone/fork/blob/v9.9.9/colab/chapters/02_b.ipynb" in out["cells"][0]["source"]


def test_url_and_version_live_in_one_place(tmp_path):
    """Changing _config.yml changes the badge, the install cell and the launch-button target."""
    cfg = ce.load_config(ROOT)
    # the [project] version, read without tomllib (Python 3.11+; the package supports 3.9)
    version = re.search(r'^version\s*=\s*"([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert cfg.branch == f"v{version}", "repository.branch in _config.yml is the release tag v<version>"
    assert cfg.path_to_book == ce.EDITION_DIR, "the launch button opens the Colab edition"
    # nothing else in the sources names the repository
    host_path = cfg.repo_url.split("//", 1)[1]
    offenders = [p.relative_to(ROOT).as_posix() for p in
                 list((ROOT / "chapters").glob("*.ipynb")) + list((ROOT / "neuralspec").glob("*.py"))
                 + [ROOT / "intro.md"] if host_path in p.read_text()]
    assert offenders == [], f"the repository URL belongs in _config.yml only: {offenders}"

    root = _tree(tmp_path)
    conf = yaml.safe_load((root / "_config.yml").read_text())
    conf["repository"]["url"] = "https://github.com/someone/fork"
    conf["repository"]["branch"] = "v7.0.0"
    (root / "_config.yml").write_text(yaml.safe_dump(conf))
    built = ce.build(root)
    rel = f"{ce.EDITION_DIR}/{CHAPTERS[0]}"
    nb = json.loads(built[rel])
    first_md, install = nb["cells"][0]["source"], nb["cells"][1]["source"]
    assert "https://colab.research.google.com/github/someone/fork/blob/v7.0.0/" + rel in first_md
    assert "neuralspec @ git+https://github.com/someone/fork@v7.0.0" in install
    assert "neuralspec/neuralspec" not in built[rel]
    # the launch button: sphinx-book-theme builds <colab>/github/<org>/<repo>/blob/<branch>/<path_to_book>/<page>
    new = ce.load_config(root)
    assert new.colab_url(f"{new.path_to_book}/{CHAPTERS[0]}") in first_md


# --- every model in an exercise solution is built on (or moved to) the chapter's device

MODEL_CALL = re.compile(r"\b(?:ns\.)?(?:MLP|RFFMLP|RFF|LFF|NTKLinear)\(|\bnn\.(?:Sequential|Linear|Conv[123]d)\(|"
                        r"torch\.nn\.(?:Sequential|Linear|Conv[123]d)\(")


def _solution_code(nb: dict):
    """Code in exercise solutions: fenced/indented code in {solution} blocks and the
    code cells between {solution-start} and {solution-end}."""
    inside = False
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown":
            for m in re.finditer(r"```\{solution\}.*?\n```(?:\n|$)", src, re.S):
                block = m.group(0)
                code = re.findall(r"(?:^(?: {4}|\t).*\n?)+", block, re.M)
                code += re.findall(r"```(?:python|ipython3?)\n(.*?)```", block, re.S)
                for chunk in code:
                    yield chunk
            if "{solution-start}" in src:
                inside = True
            if "{solution-end}" in src:
                inside = False
        elif inside:
            yield src


def _statements(code: str):
    code = "\n".join(ln[4:] if ln.startswith("    ") else ln for ln in code.splitlines())
    try:
        tree = ast.parse(code)
    except SyntaxError:
        yield from code.splitlines()
        return
    lines = code.splitlines()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.Expr, ast.Return, ast.AugAssign, ast.AnnAssign)):
            yield "\n".join(lines[node.lineno - 1:node.end_lineno])


@pytest.mark.parametrize("rel", CHAPTERS)
def test_solution_models_are_on_the_device(rel):
    nb = json.loads((ROOT / rel).read_text())
    bad = []
    for code in _solution_code(nb):
        moved = set(re.findall(r"\b(\w+)\s*=\s*\1\.to\(device", code))
        moved |= set(re.findall(r"\b(\w+)\.to\(device\)", code))
        for stmt in _statements(code):
            if not MODEL_CALL.search(stmt) or "def " in stmt or "class " in stmt:
                continue
            target = re.match(r"\s*(\w+)\s*=", stmt)
            if ".to(device" in stmt or "device=device" in stmt or (target and target.group(1) in moved):
                continue
            if re.match(r"\s*(self\.|super\()", stmt):
                continue  # layers built inside a module's __init__ move with the module
            bad.append(stmt.strip())
    assert not bad, f"{rel}: solution code builds a model off the chapter's device:\n" + "\n---\n".join(bad)
