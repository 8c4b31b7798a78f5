# Two entry points, both setting up what they need from nothing:
#   make demo   a real study: digits MLP, Bayesian search, 2 local workers, ./tuner.db
#   make test   the test suite against SQLite, PostgreSQL and MariaDB on loopback,
#               and the dashboard in headless chromium

VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin

.PHONY: demo test lint services browser clean

$(BIN)/tuner: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(BIN)/tuner
	$(BIN)/tuner run studies/digits_mlp.py --strategy bayes --trials 20 --workers 2

services:
	@bash .ci/services

browser:
	@bash .ci/browser

# The tests also run Keras on PyTorch and Optuna's GP sampler: PyTorch's CPU build.
$(VENV)/.test-extras: $(BIN)/tuner
	$(BIN)/pip install --quiet "torch==2.13.0"
	touch $@

test: $(VENV)/.test-extras services browser
	$(BIN)/python -m pytest -q --durations=15

lint: $(BIN)/tuner
	$(BIN)/ruff check tuner workers studies tests benchmarks

clean:
	rm -rf $(VENV) tuner.db tuner.db-wal tuner.db-shm
