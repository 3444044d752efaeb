"""The built book, loaded page by page in headless Chromium.

Serves the built HTML on localhost and opens every page of the table of
contents in Debian's ``chromium`` driven by Playwright. Every page must load
without failed requests to our own files and without JavaScript errors from
our own code; every chapter page must also show its images (non-zero natural
size, with alt text), link to its Colab edition (the launch button), and, where the math
renderer and the widget manager are served locally, show typeset math and
rendered widgets. A full-page screenshot of each page goes to
``_build/screenshots/``.

Run after building the book (``make book``; ``make test`` does both)::

    pytest tests -m browser

Environment variables:

``NEURALSPEC_BOOK_HTML``
    the built HTML (default ``_build/html``);
``NEURALSPEC_BOOK_TOC``
    the table of contents the book was built from (default ``_toc.yml``);
``NEURALSPEC_SCREENSHOTS``
    where screenshots go (default ``screenshots/`` next to the HTML folder);
``NEURALSPEC_CHROMIUM``
    the browser executable (default ``chromium`` on the ``PATH``, then
    ``/usr/bin/chromium``).

Requests to other origins (CDNs, Colab, GitHub) are blocked, so the test needs
no network and checks only what the book itself ships.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from pathlib import Path
from typing import Dict, Iterator, List
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("NEURALSPEC_BOOK_HTML", ROOT / "_build" / "html")).resolve()
TOC = Path(os.environ.get("NEURALSPEC_BOOK_TOC", ROOT / "_toc.yml")).resolve()
SHOTS = Path(os.environ.get("NEURALSPEC_SCREENSHOTS", HTML.parent / "screenshots")).resolve()
COLAB = "https://colab.research.google.com/github/"
MIN_FIGURES = 2  # every chapter draws at least two figures
# The flags measured to work for Debian's chromium here (see ../shared/GUIDE.md).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
TIMEOUT_MS = 60_000


def toc_pages(toc: Path = TOC) -> List[str]:
    """Documents of a Jupyter Book table of contents, in reading order, without extension."""
    import yaml

    data = yaml.safe_load(toc.read_text())
    pages: List[str] = [data["root"]]

    def walk(entries):
        for e in entries or []:
            if "file" in e:
                pages.append(e["file"])
            walk(e.get("sections"))
            walk(e.get("chapters"))

    for part in data.get("parts", []):
        walk(part.get("chapters"))
    walk(data.get("chapters"))
    walk(data.get("sections"))
    return [re.sub(r"\.(md|ipynb|rst)$", "", p) for p in pages]


PAGES = toc_pages() if TOC.exists() else []


def _chromium() -> str:
    exe = os.environ.get("NEURALSPEC_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        pytest.fail(
            f"Chromium not found (tried $NEURALSPEC_CHROMIUM, `chromium` on the PATH, {exe}). "
            "The browser test needs Debian's chromium: `apt-get install -y chromium` "
            "(.ci/run installs it when missing). Playwright's own browser download is not used.",
            pytrace=False,
        )
    return exe


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """The built book on http://127.0.0.1:<free port>/, served by a thread."""
    if not (HTML / "intro.html").is_file() and not (HTML / "index.html").is_file():
        pytest.fail(f"no built book in {HTML}: run `make book` first (or set NEURALSPEC_BOOK_HTML).",
                    pytrace=False)
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def browser():
    exe = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs the playwright Python package: pip install playwright",
                    pytrace=False)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _ours(url: str, origin: str) -> bool:
    return url.startswith(origin + "/") or url == origin


class PageLog:
    """What went wrong while a page loaded, split into ours (same origin) and others'."""

    def __init__(self, origin: str):
        self.origin = origin
        self.failed: List[str] = []        # our requests that failed or returned >= 400
        self.js_errors: List[str] = []     # errors raised by our scripts
        self.foreign: List[str] = []       # other origins' failures (ignored, for the report)

    def on_request_failed(self, request):
        line = f"{request.url}: {request.failure}"
        (self.failed if _ours(request.url, self.origin) else self.foreign).append(line)

    def on_response(self, response):
        if response.status >= 400:
            line = f"{response.url}: HTTP {response.status}"
            (self.failed if _ours(response.url, self.origin) else self.foreign).append(line)

    def on_console(self, msg):
        if msg.type != "error":
            return
        where = (msg.location or {}).get("url", "")
        line = f"console error at {where or '?'}: {msg.text}"
        # Chromium reports every failed load as a console error at the failed URL;
        # those are counted (or ignored) as requests above.
        if msg.text.startswith("Failed to load resource"):
            return
        (self.js_errors if not where or _ours(where, self.origin) else self.foreign).append(line)

    def on_page_error(self, error):
        stack = getattr(error, "stack", "") or ""
        urls = re.findall(r"https?://[^\s)]+", stack)  # with port, path and :line:col
        line = f"uncaught {getattr(error, 'name', 'Error')}: {getattr(error, 'message', error)}"
        foreign = urls and not any(_ours(u, self.origin) for u in urls)
        (self.foreign if foreign else self.js_errors).append(line + (f"\n{stack}" if stack else ""))


def _settle(page) -> None:
    """Scroll through the page (lazy content), wait for images, fonts and the math renderer."""
    page.evaluate("""async () => {
        for (let y = 0; y < document.body.scrollHeight; y += window.innerHeight) {
            window.scrollTo(0, y);
            await new Promise(r => setTimeout(r, 20));
        }
        window.scrollTo(0, 0);
        await Promise.all(Array.from(document.images).map(img => img.complete ? null :
            new Promise(r => { img.addEventListener('load', r); img.addEventListener('error', r); })));
        if (document.fonts) { await document.fonts.ready; }
        if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
            await window.MathJax.startup.promise;
        }
    }""")
    try:
        page.wait_for_load_state("networkidle", timeout=10_000)
    except Exception:  # a page that keeps polling is not an error in itself
        pass


def _shot_name(doc: str) -> str:
    return doc.replace("/", "__") + ".png"


@pytest.mark.parametrize("doc", PAGES)
def test_page(doc: str, server: str, browser) -> None:
    html = HTML / f"{doc}.html"
    assert html.is_file(), f"{doc} is in {TOC.name} but {html} was not built"
    log = PageLog(server)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # Block every other origin: the test checks what the book ships, offline.
    context.route(re.compile(r"^(?!" + re.escape(server) + r"/).*"), lambda route: route.abort())
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("requestfailed", log.on_request_failed)
    page.on("response", log.on_response)
    page.on("console", log.on_console)
    page.on("pageerror", log.on_page_error)
    try:
        response = page.goto(f"{server}/{doc}.html", wait_until="load")
        assert response is not None and response.status == 200, f"{doc}.html: HTTP {response and response.status}"
        is_chapter = doc.startswith("chapters/")
        uses_local_widgets = page.evaluate("""() => {
            const state = document.querySelector('script[type="application/vnd.jupyter.widget-state+json"]');
            const manager = Array.from(document.scripts).find(s => /embed-amd|html-manager/.test(s.src));
            return !!(state && manager && manager.src.startsWith(location.origin));
        }""")
        if uses_local_widgets:
            page.wait_for_selector(".jupyter-widgets img", state="attached")
        _settle(page)

        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / _shot_name(doc)), full_page=True)

        assert not log.failed, f"{doc}: requests to our own files failed:\n" + "\n".join(log.failed)
        assert not log.js_errors, f"{doc}: JavaScript errors from our own code:\n" + "\n".join(log.js_errors)

        article = page.locator("article.bd-article")
        assert article.count() == 1, f"{doc}: no article element (is this a Jupyter Book page?)"
        assert article.inner_text().strip(), f"{doc}: the article is empty"

        # Math: when MathJax is served with the book, every math element is typeset.
        local_mathjax = page.evaluate(
            "() => Array.from(document.scripts).some(s => /mathjax/i.test(s.src) && s.src.startsWith(location.origin))")
        n_math = page.locator("article .math").count()
        if local_mathjax and n_math:
            n_typeset = page.locator("article .math mjx-container").count()
            assert n_typeset == n_math, f"{doc}: {n_math - n_typeset} of {n_math} math elements not typeset"

        if uses_local_widgets:
            n_views = page.evaluate("""() => Array.from(document.querySelectorAll(
                'script[type="application/vnd.jupyter.widget-view+json"]')).length""")
            n_rendered = page.locator(".jupyter-widgets.widget-container, .jupyter-widgets.widget-box").count()
            assert n_rendered >= n_views > 0, f"{doc}: {n_views} widget views, {n_rendered} rendered"

        if not is_chapter:
            return
        images: List[Dict] = page.evaluate("""() => Array.from(
            document.querySelectorAll('article.bd-article img')).map(img => ({
                src: img.currentSrc || img.src, complete: img.complete,
                width: img.naturalWidth, height: img.naturalHeight}))""")
        assert images, f"{doc}: a chapter page should show images (its figures); found none"
        broken = [i["src"] for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
        assert not broken, f"{doc}: images not loaded or of zero size: {broken}"
        # The figures themselves: images in cell outputs. (A kernel started with a
        # non-inline matplotlib backend, e.g. MPLBACKEND=Agg in the environment,
        # executes every cell and produces no figure at all.)
        figures = page.evaluate("""() => Array.from(
            document.querySelectorAll('article.bd-article .cell_output img')).filter(
                img => img.complete && img.naturalWidth >= 200 && img.naturalHeight >= 100).length""")
        assert figures >= MIN_FIGURES, (
            f"{doc}: {figures} figure(s) in the cell outputs; every chapter shows at least {MIN_FIGURES}")

        # Figures that matter carry alt text (set from the cell's metadata).
        no_alt = page.evaluate("""() => Array.from(
            document.querySelectorAll('article.bd-article .cell_output img')).filter(
                img => !img.closest('.jupyter-widgets') && img.naturalWidth >= 200 && !(img.getAttribute('alt') || '').trim()
                       || /\\.(png|svg|jpe?g)$/i.test(img.getAttribute('alt') || '')).map(
                img => img.getAttribute('src'))""")
        assert not no_alt, f"{doc}: figures without alt text: {no_alt}"

        # The launch button opens the chapter's Colab edition, at the configured release.
        cfg = _colab_config()
        notebook = cfg.colab_url(f"{cfg.path_to_book}/{doc}.ipynb")
        launch = page.locator(f'.dropdown-launch-buttons a[href="{notebook}"]')
        assert launch.count() == 1, f"{doc}: no Colab launch button linking to {notebook}"
    finally:
        context.close()


RAW_MYST_TEXT = re.compile(r"\{(?:cite|cite:p|cite:t|eq|doc|ref|numref|func|class|math)\}`?|"
                           r"^\s*(?:```|:::)\{[\w-]+\}", re.M)


@pytest.mark.parametrize("doc", PAGES)
def test_no_raw_myst_in_the_page_text(doc: str) -> None:
    """No page shows MyST source as text (a role or directive the build did not render)."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.skip, self.parts = 0, []

        def handle_starttag(self, tag, attrs):
            if tag in ("script", "style", "code", "pre"):
                self.skip += 1

        def handle_endtag(self, tag):
            if tag in ("script", "style", "code", "pre") and self.skip:
                self.skip -= 1

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    html = HTML / f"{doc}.html"
    if not html.is_file():
        pytest.fail(f"{doc}.html was not built", pytrace=False)
    parser = Text()
    parser.feed(html.read_text())
    text = "".join(parser.parts)
    found = RAW_MYST_TEXT.findall(text)
    assert not found, f"{doc}: raw MyST in the page text: {found[:5]}"


def _colab_config():
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import colab_edition

    return colab_edition.load_config(ROOT)


def test_toc_lists_the_book() -> None:
    """The pages come from the table of contents; the API and bibliography pages belong to them."""
    assert TOC.exists(), f"no table of contents at {TOC}"
    assert PAGES and PAGES[0] == "intro"
    assert any(p.startswith("chapters/") for p in PAGES)
    for page in ("api", "bibliography"):
        assert page in PAGES, f"{page} is missing from {TOC.name}"
