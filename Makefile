# Two commands for a newcomer: `make run` (the pipeline on the bundled digits data) and
# `make test`. Both build .venv from a Python 3.10 interpreter on first use and install the
# locked dependency set (constraints.txt); later calls skip the install.
SHELL := /bin/bash
ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
VENV ?= $(ROOT)/.venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes for `make test`: each test file runs whole in one of them (module fixtures
# are built once); one process keeps about one of the two cores busy.
TEST_WORKERS ?= 2

export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 3
export PYTHONWARNINGS ?= ignore::FutureWarning,ignore::DeprecationWarning

.PHONY: setup run test test-fast bench bench-million bench-choice lock data clean kubeflow

setup: $(STAMP)

$(PY):
	@py310=$$($(ROOT)/scripts/find_python310.sh) || exit 1; \
	echo "Creating $(VENV) from $$py310"; \
	"$$py310" -m venv "$(VENV)"

# Re-installs only when the lock or the project's metadata changes.
$(STAMP): $(ROOT)/constraints.txt $(ROOT)/pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(ROOT)/constraints.txt pip setuptools wheel
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(ROOT)/constraints.txt -e '$(ROOT)[test]'
	@touch $(STAMP)

# The job `make run` and `make kubeflow` take: the bundled digits job unless QP_CONFIG names
# another file. Relative paths (this one, and those inside the file) are taken from the
# repository, where the recipes run.
run kubeflow: export QP_CONFIG ?= data/examples/digits.yaml

# The TFX CLI on the local engine: create the pipeline (or update it), then run it.
# LOCAL_HOME is where the CLI keeps its record of registered pipelines: by default
# <output_root>/tfx_cli_home, so it follows QP_OUTPUT_ROOT. Settings are checked first
# (python -m tfx_quantization.pipeline.config exits 2 with the reason) before anything is created.
run: $(STAMP)
	@cd $(ROOT) && name=$$($(PY) -m tfx_quantization.pipeline.config pipeline_name) && \
	export LOCAL_HOME="$${LOCAL_HOME:-$$($(PY) -m tfx_quantization.pipeline.config output_root)/tfx_cli_home}" && \
	if [ -d "$$LOCAL_HOME/$$name" ]; then verb=update; else verb=create; fi && \
	$(VENV)/bin/tfx pipeline $$verb --engine local --pipeline_path $(ROOT)/pipeline/local_runner.py && \
	$(VENV)/bin/tfx run create --engine local --pipeline_name "$$name" && \
	$(PY) -m tfx_quantization.pipeline.outcome

test: $(STAMP)
	cd $(ROOT) && $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The inner loop (under 2 minutes): settings, contracts, gate, statistics, registry, module
# boundaries; the tests marked `fast` (no model is trained).
test-fast: $(STAMP)
	cd $(ROOT) && $(PY) -m pytest -m fast $(PYTEST_ARGS)

# Benchmarks: rewrites BENCHMARKS.md and bench/plots/ (about 40-50 minutes on 2 cores; section 8 alone:
# make bench-million; section 11 alone: make bench-choice).
bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(ROOT)/constraints.txt -e '$(ROOT)[test,bench]'
	cd $(ROOT) && $(PY) -m bench.run

# Section 8 of the benchmarks alone (one million eval examples through every digits variant;
# about 20 minutes on 2 cores): trains and quantizes the digits CNN, rewrites that section.
bench-million: $(STAMP)
	cd $(ROOT) && $(PY) -m bench.million

# Section 11 alone (the activation-range method chosen on validation, checked on eval): trains the
# digits CNN and the MobileNetV2-style model as section 1 does, runs every method's sweep, rewrites
# that section.
bench-choice: $(STAMP)
	cd $(ROOT) && $(PY) -m bench.range_choice

# Regenerate the lock from the working venv (after changing pyproject.toml on purpose).
lock: $(PY)
	$(PY) -m pip freeze --all --exclude-editable | grep -v -E '^(tfx-quantization-pipeline)' > $(ROOT)/constraints.txt

# Kubeflow Pipelines v2: compile to kubeflow/build/pipeline.yaml (see kubeflow/README.md).
# No defaults on purpose: the compiler refuses an empty or placeholder image, pipeline root
# or push destination, and says what to pass.
kubeflow: $(STAMP)
	cd $(ROOT) && $(PY) -m tfx_quantization.kubeflow.runner --image "$(KF_IMAGE)" --pipeline-root "$(KF_PIPELINE_ROOT)" \
	  --push-destination "$(KF_PUSH_DESTINATION)"

data: $(STAMP)
	$(PY) $(ROOT)/data/export_digits.py

clean:
	rm -rf $(ROOT)/local_outputs $(ROOT)/tfx_home
