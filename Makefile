# Two commands do all set-up on a fresh machine:
#   make book   -- create .venv if missing, install everything, build the HTML book
#   make test   -- same environment; unit tests, every notebook under nbval, the book
#                  with -W, and the built pages in headless Chromium
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0
# Chapters must draw with the notebook (inline) backend: a non-interactive
# backend inherited from the environment would execute every cell and draw no figure.
unexport MPLBACKEND

.PHONY: book test unit notebooks browser bench clean venv

venv: $(STAMP)

$(STAMP): requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "The book is at file://$(CURDIR)/_build/html/index.html"

unit: $(STAMP)
	$(PY) -m pytest tests -q -m "not browser"

notebooks: $(STAMP)
	$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider chapters

browser: book
	$(PY) -m pytest tests -q -m browser

test: $(STAMP)
	$(PY) -m pytest tests -q -m "not browser"
	$(PY) -m pytest --nbval-lax --nbval-current-env -q chapters
	$(MAKE) book
	$(PY) -m pytest tests -q -m browser

bench: $(STAMP)
	$(PY) benchmarks/bench.py

clean:
	rm -rf _build .pytest_cache
