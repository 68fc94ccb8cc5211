# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DATA_DIR ?= $(CURDIR)/var

.PHONY: run test install install-test lint services bench bench-jobs bench-gen bench-failopen bench-workflow bench-upload clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

# The suite runs generation on the CPU, so it installs the gpu extra (torch 2.13.0 is the
# CPU wheel on this machine's disk; any other torch spec would download CUDA packages).
install-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test,gpu]'

## make run: gateway + one worker on embedded defaults (SQLite + embedded Redis under ./var)
run: install
	$(BIN)/gateway db upgrade
	$(BIN)/gateway serve

## make test: the whole suite against the local PostgreSQL and Redis (started if down)
test: install-test services
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

services:
	@bash .ci/services.sh

## make bench: the synchronous path (bench/run.py), then the jobs (bench/jobs_bench.py)
bench: install-test services
	$(BIN)/python bench/run.py
	$(BIN)/python bench/jobs_bench.py

bench-jobs: install-test services
	$(BIN)/python bench/jobs_bench.py

## make bench-gen: image generation, the pipeline called directly vs through HTTP + RQ
bench-gen: install-test services
	$(BIN)/python bench/gen_bench.py

## make bench-failopen: request latency with Redis healthy, stopped, hanging; outbound timeouts
bench-failopen: install-test services
	$(BIN)/python bench/failopen_bench.py

## make bench-workflow: project-run engine overhead per node vs the node functions called directly
bench-workflow: install-test services
	$(BIN)/python bench/workflow_bench.py

## make bench-upload: a 200 MiB video through POST /upload and tus vs the storage backend directly
bench-upload: install-test services
	$(BIN)/python bench/upload_bench.py

lint:
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) var *.egg-info
