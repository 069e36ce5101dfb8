# make demo — set up .venv and run the main job (data -> pre-train -> cloze eval) on the embedded local cluster.
# make test — set up .venv and run the test suite.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch lies on this machine's disk; on a GPU box use e.g. TORCH_SPEC=torch (CUDA build).
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench clean

install: $(STAMP)

# Re-run only when the project's dependency list or the torch spec changes: fast when nothing changed.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]" "$(TORCH_SPEC)"
	touch $(STAMP)

demo: install
	$(PY) -m pipelines.lifecycle

test: install
	$(PY) -m pytest tests -q

bench: install
	$(PY) -m benchmarks.tokenize_throughput
	$(PY) -m benchmarks.generate_speed
	$(PY) -m benchmarks.pretrain_throughput
	$(PY) -m benchmarks.rlhf_iteration

clean:
	rm -rf outputs multirun data runs
