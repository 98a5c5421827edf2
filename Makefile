# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need. torch is pinned first to the CPU build that is
# available here; an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The audio modality is a separately installable plugin distribution; its dependencies come with the core.
AUDIO := plugins/chameleon-audio
TORCH := torch==2.13.0
export OMP_NUM_THREADS ?= 2

.PHONY: install test lint typecheck browser demo docs clean

$(STAMP): pyproject.toml $(AUDIO)/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test]"
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps -e $(AUDIO)
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy $(AUDIO)/chameleon_audio

# The browser test drives the system's Chromium (Playwright's own download is not reachable here):
# install the Debian package when it is missing and we may (root with apt-get); otherwise that test
# skips with its reason, except under CI=true, where it fails.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; fi

test: lint typecheck browser
	$(BIN)/python -m pytest -x -q --durations=15
	$(BIN)/python -m pytest -x -q --durations=5 $(AUDIO)/tests

demo: $(STAMP)
	$(BIN)/chameleon demo --out demo-out

# The documentation site (mkdocs-material) into site/; --strict turns every warning into an error.
DOCS_STAMP := $(VENV)/.docs-stamp
$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) demo-out site .pytest_cache .ruff_cache .mypy_cache .hypothesis
