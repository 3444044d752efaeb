# Two commands do all set-up on a fresh machine:
#   make book   -- create .venv if missing, install everything, build the HTML book
#   make test   -- same environment; unit tests (with the Colab-edition sync check), every
#                  notebook under nbval, the Colab edition in a Colab-like environment, the
#                  book with -W, and the built pages in headless Chromium (installed when
#                  missing if root with apt; otherwise skipped loudly, and a failure under CI)
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export PYTHONHASHSEED := 0
# Chapters must draw with the notebook (inline) backend: a non-interactive
# backend inherited from the environment would execute every cell and draw no figure.
unexport MPLBACKEND

.PHONY: book test unit notebooks colab colab-run browser bench clean venv

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
	$(PY) -m pytest tests -q -m "not browser and not colab"

notebooks: $(STAMP)
	$(PY) -m pytest --nbval-lax --nbval-current-env -p no:cacheprovider chapters

# Regenerate the Colab/Jupyter edition (colab/) from the chapters and _config.yml.
colab: $(STAMP)
	$(PY) tools/colab_edition.py

# Every Colab-edition notebook in a fresh Colab-like environment (ipywidgets 7.7.1,
# no Jupyter Book), with the package installed from a wheel of this tree.
colab-run: $(STAMP)
	$(PY) -m pytest tests -q -m colab

browser: book
	@if bash tools/ensure_chromium.sh; then \
	    $(PY) -m pytest tests -q -m browser; \
	elif [ -n "$$CI" ]; then \
	    echo "CI: the browser test needs Chromium and it could not be installed." >&2; exit 1; \
	else \
	    echo ""; \
	    echo "!!! SKIPPED: the browser tests (Chromium is missing and cannot be installed here)."; \
	    echo "!!! Install Debian's chromium (apt-get install chromium) or set NEURALSPEC_CHROMIUM."; \
	    echo ""; \
	fi

test: $(STAMP)
	$(PY) -m pytest tests -q -m "not browser and not colab"
	$(PY) -m pytest --nbval-lax --nbval-current-env -q chapters
	$(MAKE) colab-run
	$(MAKE) browser

bench: $(STAMP)
	$(PY) benchmarks/bench.py

clean:
	rm -rf _build .pytest_cache .colab-venv
