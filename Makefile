# Two commands for a newcomer: `make demo` (set up + build the default model) and `make test` (set up + run the suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_WORKERS ?= 2
# every dependency at the version the suite last passed with; `make constraints` refreshes it
CONSTRAINTS := constraints.txt

.PHONY: setup demo test test-fast lint bench constraints clean

setup: $(VENV)/.installed

# torch is installed first and pinned: 2.13.0 is the CPU build every runtime here is built against.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) torch==2.13.0
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[all]'
	touch $@

demo: setup
	$(VENV)/bin/edgepack build --model zoo:digits-cnn --target x86-cpu --budget 1MB --eval zoo

# the browser test of report.html needs chromium: installed here when missing and run as root (CI)
test: setup
	sh scripts/ensure-chromium
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=15

test-fast: setup
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow"

lint: setup
	$(PY) -m ruff check edgepack tests benchmarks scripts
	$(PY) -m mypy

bench: setup
	$(PY) benchmarks/x86_cpu.py

# After upgrading a dependency and seeing `make lint test` pass: pin what is installed now.
constraints: setup
	$(PY) -m pip freeze --exclude-editable | grep -v '^edgepack' > $(CONSTRAINTS)

clean:
	rm -rf build .pytest_cache
