# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Both create .venv and install what they need. torch is pinned first to the CPU build that is
# available here; an unpinned torch would pull a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
TORCH := torch==2.13.0
export OMP_NUM_THREADS ?= 2

.PHONY: install test lint typecheck demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -x -q --durations=15

demo: $(STAMP)
	$(BIN)/chameleon demo --out demo-out

clean:
	rm -rf $(VENV) demo-out .pytest_cache .ruff_cache .mypy_cache .hypothesis
