# Two commands do all set-up on a fresh machine:
#   make run    install (first time) and run the receiver on its embedded defaults
#   make test   install (first time) and run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test bench bench-pipeline lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The pinned requirements, then the project itself (editable, no dependencies of its own): the `tc-receiver` command.
$(VENV)/.runtime: requirements.txt pyproject.toml | $(BIN)/python
	$(PIP) install -r requirements.txt
	$(PIP) install --no-deps -e .
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt pyproject.toml | $(BIN)/python
	$(PIP) install -r requirements-dev.txt
	$(PIP) install --no-deps -e .
	touch $@ $(VENV)/.runtime

run: $(VENV)/.runtime
	$(BIN)/python -m receiver

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(VENV)/.dev
	$(BIN)/python -m bench.intake $(ARGS)

bench-pipeline: $(VENV)/.dev
	$(BIN)/python -m bench.pipeline $(ARGS)

clean:
	rm -rf $(VENV) var/*.db*
