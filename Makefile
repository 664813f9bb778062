# Two commands for a fresh machine: `make demo` (install + run the demo) and `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install lint docs bench clean

$(BIN)/agentkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/agentkit

demo: install
	$(BIN)/agentkit demo

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .

docs: install
	$(BIN)/python -m agentkit.cli.reference > docs/cli.md
	$(BIN)/python -m agentkit.cli.hookref

bench: install
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/worktree_new.py
	$(BIN)/python bench/worktree_scale.py
	$(BIN)/python bench/task_ready.py
	$(BIN)/python bench/claims.py
	$(BIN)/python bench/jobs.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
