# Two commands matter on a fresh machine:
#   make demo   the main job on the offline defaults (parent -> analysis -> conversion -> healing -> eval -> card)
#   make test   installs what it needs into .venv and runs the test suite (CI runs this)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test quality style modular test-transformers test-upstream test-llamacpp demo bench gpu-carry clean

$(VENV)/.installed: requirements-dev.txt setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, exactly pinned: a range would pull a multi-GB CUDA build on CPU machines
	$(PY) -m pip install --quiet $$(grep '^torch==' requirements-dev.txt)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# formatting and lint, as CI checks them (`make style` rewrites the files)
quality: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .

style: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# modeling_shishu.py expanded from modular_shishu.py by transformers' utils/modular_model_converter.py, taken from a
# transformers checkout in $$SHISHU_CACHE/upstream/transformers-* (see docs/compatibility.md) or MODULAR_SOURCE=DIR
modular: install
	$(PY) -m pip install --quiet libcst
	$(PY) utils/expand_modular.py $(if $(MODULAR_SOURCE),--source $(MODULAR_SOURCE))

# the remote code under every supported transformers release (each pip-installed into its own cached folder)
test-transformers: install
	SHISHU_TRANSFORMERS_VERSIONS=all $(PY) -m pytest tests/test_transformers_versions.py $(PYTEST_ARGS)

# GGUF exports in the real llama.cpp: llama-cpp-python compiles llama.cpp once (about 5 minutes on 2 cores;
# pip caches the wheel), so `make test` skips these checks
test-llamacpp: install
	$(PY) -m pip install --quiet "llama-cpp-python==$$(sed -n 's/.*llama-cpp-python==//p' setup.cfg)"
	$(PY) -m pytest -m llamacpp tests/test_llamacpp.py $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/shishu demo $(DEMO_ARGS)

bench: install
	$(VENV)/bin/shishu bench --model $(MODEL) --baseline $(BASELINE) $(BENCH_ARGS)

# Wheels and the offline-cache subset that recipes/gpu/run_gpu_checks.sh carries to a GPU machine
gpu-carry: install
	recipes/gpu/prepare_carry.sh

clean:
	rm -rf $(VENV) build dist *.egg-info
