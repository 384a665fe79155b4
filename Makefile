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

# transformers' own common model tests (CausalLMModelTest) on three ShishuLM layouts (tests/upstream). They need a
# transformers source tree of the pinned release, never copied into this repository: UPSTREAM_TRANSFORMERS=DIR, else
# $$SHISHU_CACHE/upstream/transformers-<pinned>, cloned there when missing and the network allows (docs/compatibility.md)
SHISHU_CACHE ?= $(HOME)/.cache/shishu
TRANSFORMERS_PIN := $(shell sed -n 's/^transformers==//p' requirements-dev.txt)
UPSTREAM_TRANSFORMERS ?= $(SHISHU_CACHE)/upstream/transformers-$(TRANSFORMERS_PIN)
# the files of a transformers checkout that the tester reads besides the installed package
UPSTREAM_FILES := tests/causal_lm_tester.py tests/distributed_testing_utils.py tests/generation/test_utils.py \
	tests/exporters/test_export.py tests/utils/tiny_model_summary.json src/transformers/__init__.py
test-upstream: install
	$(PY) -m pip install --quiet parameterized httpx
	@test -e "$(UPSTREAM_TRANSFORMERS)" || git clone --quiet --depth 1 --branch v$(TRANSFORMERS_PIN) \
		https://github.com/huggingface/transformers "$(UPSTREAM_TRANSFORMERS)" || true
	@missing=""; for f in $(UPSTREAM_FILES); do test -f "$(UPSTREAM_TRANSFORMERS)/$$f" || missing="$$missing $$f"; done; \
		if [ -n "$$missing" ]; then echo "$(UPSTREAM_TRANSFORMERS) is not a transformers v$(TRANSFORMERS_PIN) checkout" \
		"(missing:$$missing): clone it there or set UPSTREAM_TRANSFORMERS (docs/compatibility.md)"; exit 1; fi
	PYTHONPATH="$(UPSTREAM_TRANSFORMERS)" $(PY) -m pytest tests/upstream -p no:cacheprovider $(PYTEST_ARGS)

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
