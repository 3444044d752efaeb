"""Static checks of the chapters' sources (no execution).

A control character in a chapter renders as a broken symbol: chapter 4 once had a
literal TAB inside ``\\top`` (written as ``"\\top"`` in a Python string, where ``\\t``
is a TAB), which MathJax showed as ``^ op``. Every ``chapters/*.ipynb``, present or
future, is checked; so are the book's Markdown pages.
"""
import json
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
PAGES = sorted(ROOT.glob("*.md"))


def control_characters(text: str):
    """(line, column, repr) of every control character other than a newline."""
    found = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        for col, ch in enumerate(line, start=1):
            if unicodedata.category(ch) == "Cc":
                found.append((lineno, col, repr(ch)))
    return found


def cells(path: Path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    for i, cell in enumerate(nb["cells"]):
        src = cell["source"]
        yield i, cell["cell_type"], "".join(src) if isinstance(src, list) else src


def test_the_chapters_are_found():
    assert len(CHAPTERS) >= 7, f"expected the course's chapters in {ROOT / 'chapters'}; found {CHAPTERS}"


def test_checker_finds_a_tab_in_top():
    assert control_characters("$\\delta_l(x)^\top \\delta_l$") == [(1, 14, "'\\t'")]
    assert control_characters("a\r\nb") == [(1, 2, "'\\r'")]
    assert control_characters("line one\nline two, $x^\\top y$") == []


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_control_characters_in_markdown(path):
    bad = [(i, *hit) for i, kind, text in cells(path) if kind == "markdown" for hit in control_characters(text)]
    assert not bad, f"{path.name}: control characters in markdown (cell, line, column, char): {bad}"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_control_characters_in_code(path):
    bad = [(i, *hit) for i, kind, text in cells(path) if kind != "markdown" for hit in control_characters(text)]
    assert not bad, f"{path.name}: control characters in code cells (cell, line, column, char): {bad}"


@pytest.mark.parametrize("path", PAGES, ids=lambda p: p.name)
def test_no_control_characters_in_pages(path):
    bad = control_characters(path.read_text(encoding="utf-8"))
    assert not bad, f"{path.name}: control characters (line, column, char): {bad}"
