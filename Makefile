# Two commands for a fresh machine: `make demo` (install + run the demo) and `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test install lint docs bench coverage clean

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
	$(BIN)/python -m agentkit.docs

bench: install
	$(BIN)/python bench/cold_start.py
	$(BIN)/python bench/worktree_new.py
	$(BIN)/python bench/worktree_scale.py
	$(BIN)/python bench/task_ready.py
	$(BIN)/python bench/claims.py
	$(BIN)/python bench/jobs.py
	$(BIN)/python bench/run.py
	$(BIN)/python bench/dashboard.py
	$(BIN)/python bench/ray.py

# the suite under coverage, subprocesses included (each `agentkit` command a test runs is one)
coverage: install
	rm -f .coverage .coverage.*
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage run -m pytest -q -p no:cacheprovider
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage combine -q
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage report
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage json -q -o .coverage.json
	@$(BIN)/python -c "import json; t = json.load(open('.coverage.json'))['totals']; \
	print(f\"agentkit/: lines {100 * t['covered_lines'] / t['num_statements']:.1f}%, \
	branches {100 * t['covered_branches'] / t['num_branches']:.1f}% (goal: 90% and 85%)\")"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis .coverage .coverage.*
