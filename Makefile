# Two commands matter: `make demo` and `make test`. Both set up .venv when needed.
VENV ?= .venv
PY := $(VENV)/bin/python
ENV ?= base
GPU ?= 0
# Test processes (pytest-xdist, whole files each): half the suite waits on process start-up,
# servers and JVMs, so two processes on 2 cores take 18 min where one took 30.
TEST_PROCS ?= 2

.PHONY: setup package demo test lint bench clean-runs

setup:  # GPU=1: the GPU TensorFlow build, Horovod with NCCL when nvcc is found (README "GPU workers")
	@GPU=$(GPU) bash scripts/setup_env.sh

# dist/sparkvision-*.whl and dist/sparkvision-env.tar.gz (spark-submit --archives ...#env);
# cached by content hash, a no-op when nothing changed.
package: setup
	@VENV=$(VENV) bash scripts/package_env.sh

demo: setup
	$(PY) -m sparkvision.cli pipeline pipelines/demo.yaml --env $(ENV)

test: setup
	$(PY) -m pytest -q -n $(TEST_PROCS) --dist loadfile tests

lint: setup
	$(VENV)/bin/ruff check sparkvision jobs tests benchmarks
	$(VENV)/bin/ruff format --check sparkvision jobs tests benchmarks

bench: setup  # every benchmark at two sizes, then one table: runs/bench/summary.md
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/score.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/results.py

clean-runs:
	$(PY) -m sparkvision.cli mlflow stop || true
	$(PY) -m sparkvision.cli cluster down || true
	rm -rf runs data
