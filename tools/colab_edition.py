"""Generate (or check) the Colab / plain-Jupyter edition of every chapter.

The chapters in ``chapters/`` are the one source of truth; they are written in
MyST (``{cite}`` roles, ``{eq}`` references, ``{exercise}``/``{solution}``
directives, ``(label)=`` targets), which Jupyter Book renders and Colab or plain
Jupyter show as raw text. This tool writes ``colab/chapters/NN_name.ipynb``: the
same cells, with

- citations as "Author et al. (Year)" linked to the entry (its URL, or the book's
  bibliography page), and a reference list at the end;
- numbered equations (``\\tag{n}``) and ``{eq}`` references as "(n)";
- ``{doc}``/``{ref}``/``{func}`` links to the published pages;
- admonitions as quoted blocks, exercises as headed blocks, solutions collapsed
  (``<details>`` for text, a collapsed section for executed solution cells);
- a Colab badge and an install cell that installs the release the book was
  built from; both derive from ``repository.url`` and ``repository.branch`` in
  ``_config.yml``, the one place where they are configured.

Usage::

    python tools/colab_edition.py            # (re)write colab/
    python tools/colab_edition.py --check    # exit 1 if colab/ is out of date or has raw MyST
    python tools/colab_edition.py --normalize-sources   # strip hand-written badges/install lines
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import yaml

ROOT = Path(__file__).resolve().parents[1]
EDITION_DIR = "colab"

# --- configuration -------------------------------------------------------------------


@dataclass
class Config:
    repo_url: str     # https://github.com/OWNER/NAME
    branch: str       # the release tag the book is built from, e.g. v0.2.0
    path_to_book: str

    @property
    def owner_name(self) -> Tuple[str, str]:
        m = re.match(r"https?://github\.com/([^/]+)/([^/]+?)/?$", self.repo_url)
        if not m:
            raise ValueError(f"repository.url must be https://github.com/OWNER/NAME; got {self.repo_url!r}")
        return m.group(1), m.group(2)

    @property
    def pages_url(self) -> str:
        """Where the deploy workflow publishes the book (GitHub Pages)."""
        owner, name = self.owner_name
        return f"https://{owner.lower()}.github.io/{name}"

    @property
    def install_spec(self) -> str:
        return f"neuralspec @ git+{self.repo_url}@{self.branch}"

    def colab_url(self, rel: str) -> str:
        owner, name = self.owner_name
        return f"https://colab.research.google.com/github/{owner}/{name}/blob/{self.branch}/{rel}"


def load_config(root: Path = ROOT) -> Config:
    cfg = yaml.safe_load((root / "_config.yml").read_text())
    repo = cfg.get("repository") or {}
    for key in ("url", "branch"):
        if not repo.get(key):
            raise ValueError(f"_config.yml: repository.{key} is missing")
    return Config(repo["url"].rstrip("/"), str(repo["branch"]), str(repo.get("path_to_book", "")))


def chapter_files(root: Path = ROOT) -> List[str]:
    """The chapters of the table of contents, in order, as paths relative to ``root``."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    out: List[str] = []

    def walk(entries):
        for e in entries or []:
            f = e.get("file")
            if f and f.startswith("chapters/"):
                out.append(f + ".ipynb")
            walk(e.get("chapters"))
            walk(e.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return out


# --- bibliography ----------------------------------------------------------------------


def _delatex(text: str) -> str:
    """BibTeX's LaTeX accents and braces as plain Unicode (C\\'esar -> César)."""
    import codecs

    import latexcodec  # noqa: F401  (registers the "ulatex" codec; installed with pybtex)

    try:
        text = codecs.decode(text, "ulatex")
    except Exception:  # an unusual macro: keep the text, minus the braces
        pass
    return text.replace("{", "").replace("}", "")


def load_bib(root: Path = ROOT) -> Dict[str, dict]:
    from pybtex.database import parse_file

    db = parse_file(str(root / "references.bib"))
    out = {}
    for key, e in db.entries.items():
        people = e.persons.get("author") or e.persons.get("editor") or []
        last = [_delatex(" ".join(p.last_names)) for p in people]
        full = [_delatex(" ".join(p.first_names + p.middle_names + p.last_names)) for p in people]
        f = {k.lower(): _delatex(v) for k, v in e.fields.items()}
        url = f.get("url") or (f"https://doi.org/{f['doi']}" if f.get("doi") else None)
        if not url and f.get("eprint"):
            url = f"https://arxiv.org/abs/{f['eprint']}"
        out[key] = {"last": last, "full": full, "year": f.get("year", "n.d."), "title": f.get("title", ""),
                    "venue": f.get("journal") or f.get("booktitle") or f.get("publisher") or f.get("howpublished", ""),
                    "url": url}
    return out


def _short_authors(last: List[str]) -> str:
    if not last:
        return "Anonymous"
    if len(last) == 1:
        return last[0]
    if len(last) == 2:
        return f"{last[0]} and {last[1]}"
    return f"{last[0]} et al."


# --- the MyST -> plain Markdown conversion ----------------------------------------------

ROLE = re.compile(r"\{([a-zA-Z][\w:-]*)\}`([^`]*)`")
TARGET = re.compile(r"^\(([\w.:-]+)\)=\s*$", re.M)
FENCE_OPEN = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w:-]+)\}[ \t]*(?P<arg>.*)$")
DISPLAY_LABEL = re.compile(r"\$\$(?P<body>.*?)\$\$[ \t]*\((?P<label>[\w.:-]+)\)", re.S)
RAW_MYST = re.compile(r"(?<!`)\{[a-zA-Z][\w:-]*\}`|^(?:`{3,}|:{3,})\{[\w:-]+\}|^\([\w.:-]+\)=[ \t]*$", re.M)
BADGE = re.compile(r"^\[!\[Open in Colab\][^\n]*\n?", re.M | re.I)
SOURCE_INSTALL = re.compile(
    r"^# On Colab only[^\n]*\n(?:import sys\n)?if \"google\.colab\" in sys\.modules:\n[ \t]+%pip install[^\n]*\n\n?",
    re.M)


@dataclass
class Context:
    cfg: Config
    bib: Dict[str, dict]
    page: str                                   # chapters/NN_name (no suffix)
    labels: Dict[str, Tuple[str, str]]          # label -> (page, text) across the book
    equations: Dict[str, int] = field(default_factory=dict)
    all_equations: Dict[str, Tuple[str, int]] = field(default_factory=dict)   # label -> (page, n)
    exercises: Dict[str, int] = field(default_factory=dict)
    cited: List[str] = field(default_factory=list)

    def page_url(self, page: str, anchor: Optional[str] = None) -> str:
        url = f"{self.cfg.pages_url}/{page}.html"
        return url + (f"#{anchor}" if anchor else "")


def _resolve_doc(ctx: Context, target: str) -> str:
    """A ``{doc}`` target relative to the current page -> a page path from the root."""
    base = Path(ctx.page).parent
    p = (base / target).as_posix() if not target.startswith("/") else target.lstrip("/")
    parts: List[str] = []
    for s in p.split("/"):
        if s == "..":
            parts.pop()
        elif s not in ("", "."):
            parts.append(s)
    return "/".join(parts)


def _split_title(content: str) -> Tuple[Optional[str], str]:
    m = re.match(r"^(.*?)\s*<([^<>]+)>$", content.strip(), re.S)
    return (m.group(1).strip(), m.group(2).strip()) if m else (None, content.strip())


def convert_roles(text: str, ctx: Context) -> str:
    def repl(m: re.Match) -> str:
        role, content = m.group(1), m.group(2)
        if role.startswith("cite"):
            keys = [k.strip() for k in content.split(",") if k.strip()]
            parts = []
            for k in keys:
                if k not in ctx.bib:
                    raise ValueError(f"{ctx.page}: unknown citation key {k!r}")
                if k not in ctx.cited:
                    ctx.cited.append(k)
                e = ctx.bib[k]
                label = f"{_short_authors(e['last'])} ({e['year']})"
                parts.append(f"[{label}]({e['url'] or ctx.page_url('bibliography')})")
            joined = "; ".join(parts)
            return f"({joined})" if role == "cite:p" else joined
        if role == "eq":
            if content in ctx.equations:
                return f"({ctx.equations[content]})"
            if content in ctx.all_equations:
                page, n = ctx.all_equations[content]
                return f"[({n}) of {ctx.labels[f'doc:{page}'][1]}]({ctx.page_url(page, 'equation-' + content)})"
            raise ValueError(f"{ctx.page}: {{eq}} reference to unknown equation {content!r}")
        if role == "doc":
            title, target = _split_title(content)
            page = _resolve_doc(ctx, target)
            text_ = title or ctx.labels.get(f"doc:{page}", (page, page.split('/')[-1]))[1]
            return f"[{text_}]({ctx.page_url(page)})"
        if role in ("ref", "numref"):
            title, target = _split_title(content)
            if target in ctx.exercises:
                return f"[{title or 'Exercise ' + str(ctx.exercises[target])}](#{target})"
            if target not in ctx.labels:
                raise ValueError(f"{ctx.page}: {{{role}}} to unknown label {target!r}")
            page, text_ = ctx.labels[target]
            if page == ctx.page:
                return f"[{title or text_}](#{target})"
            return f"[{title or text_}]({ctx.page_url(page, target)})"
        if role.split(":")[-1] in ("func", "class", "meth", "mod", "attr", "obj", "data"):
            title, target = _split_title(content)
            target = target.lstrip("~.")
            name = target if target.startswith("neuralspec") else f"neuralspec.{target.split('ns.')[-1]}"
            shown = title or (target.split(".")[-1] if content.strip().startswith("~") else target)
            return f"[`{shown}`]({ctx.page_url('api', name)})"
        if role in ("math",):
            return f"${content}$"
        raise ValueError(f"{ctx.page}: no plain-Markdown form for the role {{{role}}}")

    return ROLE.sub(repl, text)


def _directive_options(lines: List[str]) -> Tuple[Dict[str, str], List[str]]:
    opts: Dict[str, str] = {}
    i = 0
    while i < len(lines) and re.match(r"^:[\w-]+:", lines[i]):
        k, _, v = lines[i][1:].partition(":")
        opts[k.strip()] = v.strip()
        i += 1
    return opts, lines[i:]


def _quote(text: str) -> str:
    return "\n".join(("> " + ln) if ln.strip() else ">" for ln in text.strip("\n").split("\n"))


def convert_directives(text: str, ctx: Context, state: dict) -> str:
    """Convert every fenced directive in ``text`` (recursively)."""
    lines = text.split("\n")
    out: List[str] = []
    i = 0
    while i < len(lines):
        m = FENCE_OPEN.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        fence, name, arg = m.group("fence"), m.group("name"), m.group("arg").strip()
        j = i + 1
        while j < len(lines) and lines[j].strip() != fence:
            j += 1
        if j == len(lines):
            raise ValueError(f"{ctx.page}: unclosed {{{name}}} directive")
        opts, body_lines = _directive_options(lines[i + 1:j])
        body = convert_directives("\n".join(body_lines), ctx, state)
        out.append(render_directive(name, arg, opts, body, ctx, state))
        i = j + 1
    return "\n".join(out)


def render_directive(name: str, arg: str, opts: Dict[str, str], body: str, ctx: Context, state: dict) -> str:
    if name in ("admonition", "note", "tip", "important", "warning", "caution", "attention", "hint",
                "seealso", "danger", "error"):
        title = arg if name == "admonition" else (arg or name.capitalize())
        return _quote(f"**{title}**\n\n{body.strip()}")
    if name in ("exercise", "exercise-start"):
        label = opts.get("label", "")
        k = ctx.exercises.get(label) or (max(ctx.exercises.values(), default=0) + 1)
        anchor = f'\n<a id="{label}"></a>' if label else ""
        title = f"Exercise {k}" + (f": {arg}" if arg else "")
        return f"### {title}{anchor}\n\n{body.strip()}"
    if name == "exercise-end":
        return ""
    if name == "solution":
        k = ctx.exercises.get(arg, "")
        return (f"<details>\n<summary><b>Solution to exercise {k}</b> (click to show)</summary>\n\n"
                f"{body.strip()}\n\n</details>")
    if name == "solution-start":
        k = ctx.exercises.get(arg, "")
        state["in_solution"] = True
        return f"%%CELLBREAK%%#### Solution to exercise {k}\n\n{body.strip()}".rstrip()
    if name == "solution-end":
        state["in_solution"] = False
        return ""
    if name == "dropdown":
        return f"<details>\n<summary><b>{arg or 'Details'}</b></summary>\n\n{body.strip()}\n\n</details>"
    if name == "bibliography":
        return "%%BIBLIOGRAPHY%%"
    if name in ("math",):
        label = opts.get("label")
        tag = f" \\tag{{{ctx.equations[label]}}}" if label in ctx.equations else ""
        return f"$$\n{body.strip()}{tag}\n$$"
    if name in ("code-block", "code"):
        return f"```{arg}\n{body}\n```"
    if name in ("figure", "image"):
        return f"![{opts.get('alt', '')}]({arg})\n\n{body.strip()}"
    if name == "nb-exec-table":
        return ""
    raise ValueError(f"{ctx.page}: no plain-Markdown form for the directive {{{name}}}")


def number_equations(cells: List[dict], start: int = 0) -> Dict[str, int]:
    """Labelled equations, numbered in order from ``start + 1`` (the book numbers them
    across all chapters, in the order of the table of contents)."""
    eq: Dict[str, int] = {}
    for c in cells:
        if c["cell_type"] != "markdown":
            continue
        src = "".join(c["source"])
        for m in DISPLAY_LABEL.finditer(src):
            eq.setdefault(m.group("label"), start + len(eq) + 1)
        for m in re.finditer(r"```\{math\}[^\n]*\n:label:\s*([\w.:-]+)", src):
            eq.setdefault(m.group(1), start + len(eq) + 1)
    return eq


def number_exercises(cells: List[dict], start: int = 0) -> Dict[str, int]:
    """Exercise labels, numbered from ``start + 1`` (sphinx-exercise numbers them across the book)."""
    ex: Dict[str, int] = {}
    for c in cells:
        if c["cell_type"] != "markdown":
            continue
        for m in re.finditer(r"```\{exercise(?:-start)?\}[^\n]*\n((?::[\w-]+:[^\n]*\n)*)", "".join(c["source"])):
            lab = re.search(r":label:\s*(\S+)", m.group(1))
            ex[lab.group(1) if lab else f"_anon{len(ex)}"] = start + len(ex) + 1
    return ex


def collect_labels(root: Path, pages: List[str]) -> Dict[str, Tuple[str, str]]:
    labels: Dict[str, Tuple[str, str]] = {}
    for rel in pages:
        page = rel[:-len(".ipynb")]
        nb = json.loads((root / rel).read_text())
        title = page
        for c in nb["cells"]:
            if c["cell_type"] != "markdown":
                continue
            src = "".join(c["source"])
            h = re.search(r"^# (.+)$", src, re.M)
            if h and title == page:
                title = h.group(1).strip()
            for m in re.finditer(r"^\(([\w.:-]+)\)=\s*\n+#+\s*(.+)$", src, re.M):
                labels[m.group(1)] = (page, m.group(2).strip())
        labels[f"doc:{page}"] = (page, title)
    for extra, title in (("notation", "Notation"), ("api", "API reference"), ("bibliography", "Bibliography"),
                         ("intro", "Introduction")):
        labels.setdefault(f"doc:{extra}", (extra, title))
    return labels


def convert_markdown(src: str, ctx: Context, state: dict) -> str:
    src = BADGE.sub("", src)
    src = DISPLAY_LABEL.sub(lambda m: f"$${m.group('body').rstrip()} \\tag{{{ctx.equations[m.group('label')]}}}\n$$",
                            src)
    src = TARGET.sub(lambda m: f'<a id="{m.group(1)}"></a>', src)
    src = convert_directives(src, ctx, state)
    src = convert_roles(src, ctx)
    return re.sub(r"\n{3,}", "\n\n", src).strip("\n")


def reference_list(ctx: Context) -> str:
    if not ctx.cited:
        return "_No references cited in this chapter._"
    items = []
    for k in sorted(ctx.cited, key=lambda k: (ctx.bib[k]["last"] or [""])[0]):
        e = ctx.bib[k]
        authors = ", ".join(e["full"]) or "Anonymous"
        venue = f" *{e['venue']}*." if e["venue"] else ""
        link = f" [{e['url']}]({e['url']})" if e["url"] else ""
        items.append(f"- {authors} ({e['year']}). {e['title']}.{venue}{link}")
    return "\n".join(items)


def _new_cell(cell_type: str, source: str, cid: str, metadata: Optional[dict] = None) -> dict:
    c = {"cell_type": cell_type, "id": cid, "metadata": metadata or {}, "source": source}
    if cell_type == "code":
        c.update(execution_count=None, outputs=[])
    return c


def convert_notebook(nb: dict, rel: str, cfg: Config, bib: Dict[str, dict],
                     labels: Dict[str, Tuple[str, str]],
                     all_equations: Optional[Dict[str, Tuple[str, int]]] = None,
                     exercise_start: int = 0) -> dict:
    page = rel[:-len(".ipynb")]
    ctx = Context(cfg, bib, page, labels, all_equations=all_equations or {})
    ctx.equations = ({lab: n for lab, (pg, n) in all_equations.items() if pg == page} if all_equations
                     else number_equations(nb["cells"]))
    ctx.exercises = number_exercises(nb["cells"], start=exercise_start)
    state = {"in_solution": False}
    cells: List[dict] = []
    collapsed: List[str] = []
    edition_rel = f"{EDITION_DIR}/{rel}"
    stem = Path(rel).stem
    for idx, c in enumerate(nb["cells"]):
        src = "".join(c["source"])
        cid = c.get("id") or f"cell-{idx}"
        meta = copy.deepcopy(c.get("metadata", {}))
        if c["cell_type"] == "markdown":
            text = convert_markdown(src, ctx, state)
            if "%%BIBLIOGRAPHY%%" in text:
                text = text.replace("%%BIBLIOGRAPHY%%", reference_list(ctx))
            if idx == 0:
                lines = text.split("\n", 1)
                badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({cfg.colab_url(edition_rel)})"
                note = (f"*The Colab/Jupyter edition of this chapter of "
                        f"[Spectral Signature of Neural Kernels]({ctx.page_url(page)}), generated from "
                        f"[`{rel}`]({cfg.repo_url}/blob/{cfg.branch}/{rel}) for neuralspec "
                        f"{cfg.branch}.*")
                text = lines[0] + "\n\n" + badge + "\n\n" + note + ("\n\n" + lines[1].lstrip("\n") if len(lines) > 1 else "")
            for j, piece in enumerate(text.split("%%CELLBREAK%%")):
                piece = piece.strip("\n")
                if not piece.strip():
                    continue
                pid = cid if j == 0 else f"{cid}-solution"
                if piece.startswith("#### Solution to exercise"):
                    collapsed.append(pid)  # Colab shows the solution's section collapsed
                cells.append(_new_cell("markdown", piece, pid, meta if j == 0 else {}))
        elif c["cell_type"] == "code":
            code = SOURCE_INSTALL.sub("", src)
            tags = meta.get("tags", [])
            if "hide-input" in tags or state["in_solution"]:
                meta.setdefault("jupyter", {})["source_hidden"] = True
            if state["in_solution"]:  # the answer too, until the reader opens it (JupyterLab)
                meta["jupyter"]["outputs_hidden"] = True
            if not any(x["cell_type"] == "code" for x in cells):
                cells.append(_new_cell("code", install_cell(cfg), f"install-{stem}"))
            cells.append(_new_cell("code", code, cid, meta))
        else:
            cells.append(copy.deepcopy(c))
    out = {"cells": cells, "metadata": copy.deepcopy(nb.get("metadata", {})),
           "nbformat": nb.get("nbformat", 4), "nbformat_minor": max(nb.get("nbformat_minor", 5), 5)}
    out["metadata"].pop("jupytext", None)
    out["metadata"]["colab"] = {"provenance": [], "collapsed_sections": collapsed,
                                "name": Path(rel).name}
    return out


def install_cell(cfg: Config) -> str:
    return (
        f"# Install the neuralspec release this book was built from ({cfg.branch}); Colab keeps its own torch.\n"
        "# In plain Jupyter, `pip install` it once yourself (see the README).\n"
        "import os, sys\n"
        f'spec = os.environ.get("NEURALSPEC_INSTALL", "{cfg.install_spec}")\n'
        'if "google.colab" in sys.modules or "NEURALSPEC_INSTALL" in os.environ:\n'
        '    %pip install -q "{spec}"'
    )


def raw_myst(nb: dict) -> List[str]:
    """Raw MyST roles, directives or targets left in the markdown cells of ``nb``."""
    bad = []
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            src = "".join(c["source"])
            # inline code may show MyST syntax (`{cite}`): a role must not follow a backtick
            bad += [m.group(0) for m in RAW_MYST.finditer(src)]
    return bad


def render(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False, sort_keys=True) + "\n"


def build(root: Path = ROOT) -> Dict[str, str]:
    """The edition as ``{relative path: file text}``."""
    cfg = load_config(root)
    bib = load_bib(root)
    pages = chapter_files(root)
    labels = collect_labels(root, pages)
    notebooks = {rel: json.loads((root / rel).read_text()) for rel in pages}
    all_eq: Dict[str, Tuple[str, int]] = {}
    for rel, nb in notebooks.items():  # numbered across the book, as Jupyter Book does
        for lab, n in number_equations(nb["cells"], start=len(all_eq)).items():
            all_eq[lab] = (rel[:-len(".ipynb")], n)
    out = {}
    n_exercises = 0
    for rel, nb in notebooks.items():
        ed = convert_notebook(nb, rel, cfg, bib, labels, all_eq, exercise_start=n_exercises)
        n_exercises += len(number_exercises(nb["cells"]))
        bad = raw_myst(ed)
        if bad:
            raise ValueError(f"{rel}: raw MyST left in the edition: {sorted(set(bad))}")
        out[f"{EDITION_DIR}/{rel}"] = render(ed)
    return out


def check(root: Path = ROOT) -> List[str]:
    """Problems with the committed edition: out of date, missing, stale, or not convertible."""
    try:
        want = build(root)
    except ValueError as e:
        return [str(e)]
    problems = []
    for rel, text in want.items():
        p = root / rel
        if not p.exists():
            problems.append(f"{rel} is missing")
        elif p.read_text() != text:
            problems.append(f"{rel} is out of date with {rel[len(EDITION_DIR) + 1:]}")
    for p in sorted((root / EDITION_DIR).rglob("*.ipynb")) if (root / EDITION_DIR).exists() else []:
        rel = p.relative_to(root).as_posix()
        if rel not in want:
            problems.append(f"{rel} has no chapter")
    cfg = load_config(root)
    for rel in chapter_files(root):
        if cfg.repo_url.split("//")[-1] in (root / rel).read_text():
            problems.append(f"{rel} names the repository URL: it belongs in _config.yml only")
    return problems


TITLE_CALL = re.compile(r"(?:suptitle|set_title|title)\(\s*(?:r|f|rf|fr)?([\"'])(.+?)\1|title=(?:r|f|rf|fr)?([\"'])(.+?)\3")


def figure_alt_text(code: str) -> Optional[str]:
    """Alt text for a plotting cell, from the titles it gives its figure and panels."""
    if not re.search(r"plt\.show\(\)|\.plot\(|plt\.subplots|plot_\w+\(", code):
        return None
    titles = []
    for m in TITLE_CALL.finditer(code):
        t = (m.group(2) or m.group(4) or "").strip()
        t = re.sub(r"\{[^{}]*\}", "…", t) if re.search(r"(?:^|[^\w])f[\"']", m.group(0)) or "title=f" in m.group(0) else t
        t = t.replace("$", "").replace("\\", "")
        if t and t not in titles:
            titles.append(t)
    if not titles:
        return None
    return "Figure: " + "; ".join(titles)


def normalize_sources(root: Path = ROOT) -> List[str]:
    """Strip hand-written Colab badges and install lines from the chapter sources, and
    give every plotting cell alt text for its figure (``mystnb.image.alt``) when it has none."""
    changed = []
    for rel in chapter_files(root):
        p = root / rel
        nb = json.loads(p.read_text())
        dirty = False
        for c in nb["cells"]:
            if c["cell_type"] != "code":
                continue
            meta = c.setdefault("metadata", {})
            if meta.get("mystnb", {}).get("image", {}).get("alt"):
                continue
            alt = figure_alt_text("".join(c["source"]))
            if alt:
                meta.setdefault("mystnb", {}).setdefault("image", {})["alt"] = alt
                dirty = True
        for c in nb["cells"][:3]:
            src = "".join(c["source"])
            new = BADGE.sub("", src) if c["cell_type"] == "markdown" else SOURCE_INSTALL.sub("", src)
            new = re.sub(r"\n{3,}", "\n\n", new)
            if new != src:
                c["source"] = new.splitlines(keepends=True)
                dirty = True
        if dirty:
            p.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(rel)
    return changed


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="fail if colab/ is out of date")
    ap.add_argument("--normalize-sources", action="store_true",
                    help="remove hand-written badges and install lines from chapters/")
    ap.add_argument("--root", type=Path, default=ROOT)
    a = ap.parse_args(argv)
    if a.normalize_sources:
        for rel in normalize_sources(a.root):
            print("normalized", rel)
    if a.check:
        problems = check(a.root)
        for p in problems:
            print("colab edition:", p, file=sys.stderr)
        if problems:
            print("Run `python tools/colab_edition.py` (or `make colab`) and commit colab/.", file=sys.stderr)
        return 1 if problems else 0
    for rel, text in build(a.root).items():
        path = a.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print("wrote", rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
