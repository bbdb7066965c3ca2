# The contract with a new user: `make demo` and `make test` work on a machine with only Python 3.11+.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	@$(BIN)/python -m meshlib.demo

test: $(STAMP)
	@$(BIN)/ruff check meshlib tests
	@$(BIN)/python -m pytest

lint: $(STAMP)
	@$(BIN)/ruff check meshlib tests

bench: $(STAMP)
	@for f in tests/bench/*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) reports/allure-results reports/html
