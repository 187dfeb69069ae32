# lokal: two commands for a fresh machine.
#   make demo   set everything up (.venv, torch CPU wheel, lokal[all], default GGUF) and run the demo
#   make test   set up what the tests need and run the whole suite (lint, types, tests offline)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch first, pinned to the CPU wheel: a bare `torch` requirement resolves to a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# llama-cpp-python has no wheel on PyPI: pip builds it for this CPU (-march=native). Some VMs
# advertise AMX but fault on its tile instructions (SIGILL inside ggml's AMX kernels, measured
# on a Xeon VM): build it without AMX, and never from pip's wheel cache, which cannot tell a
# build with other flags (or for another CPU) from this one.
LLAMA_CPP ?= llama-cpp-python>=0.3.36
ifeq ($(shell uname -m),x86_64)
NO_AMX    := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16
LLAMA_ENV ?= CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)"
endif

.PHONY: setup model demo test lint typecheck pytest wheel-check clean

LINK   := $(VENV)/.linked
SOURCES := $(shell find core integrations agent -name '*.py' -o -name '*.json' -o -name 'py.typed' -o -path '*/static/*')

setup: $(STAMP) $(LINK)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(LLAMA_ENV) $(BIN)/python -m pip install --quiet --no-cache-dir '$(LLAMA_CPP)'
	$(BIN)/python -m pip install --quiet --editable '.[all]' --config-settings editable_mode=strict
	$(BIN)/python -m pip install --quiet --group dev
	touch $@

# Strict editable installs link each file: re-link when modules are added or removed.
$(LINK): $(STAMP) $(SOURCES)
	$(BIN)/python -m pip install --quiet --no-deps --editable . --config-settings editable_mode=strict
	touch $@

# The default GGUF (q8_0, packed from the bundled all-MiniLM-L6-v2 weights) in lokal's model cache.
model: setup
	$(BIN)/lokal models info --backend gguf >/dev/null 2>&1 || $(BIN)/lokal models pack all-MiniLM-L6-v2

demo: model
	$(BIN)/python examples/demo.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check core integrations agent

typecheck: setup
	$(BIN)/mypy core integrations agent

# Tests run with the network cut off for them and every process they start.
pytest: setup
	tests/offline $(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The oldest Python lokal supports (README: 3.10+), from pyenv; PYTHON310=... to name another.
PYTHON310 ?= $(firstword $(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/3.10*/bin/python3.10) $(shell command -v python3.10 2>/dev/null))

# Build the wheel, install it into a fresh environment, import every subpackage; then the base
# install on Python 3.10: every module imports (or names its extra) and the agent starts.
wheel-check: setup
	rm -rf dist /tmp/lokal-wheel-check /tmp/lokal-wheel-check-310
	$(BIN)/python -m build --wheel --outdir dist . >/dev/null
	$(PYTHON) -m venv /tmp/lokal-wheel-check
	/tmp/lokal-wheel-check/bin/python -m pip install --quiet dist/lokal-*.whl
	/tmp/lokal-wheel-check/bin/python -c "import lokal, lokal.backends, lokal.index, lokal.integrations, lokal.agent, lokal.agent.cli, lokal.agent.server, lokal.central, lokal.embedder, lokal.packing, lokal.profiles, lokal.catalog, lokal.retrieval; print('wheel ok:', lokal.__file__)"
	/tmp/lokal-wheel-check/bin/lokal --help >/dev/null
	# the page lokal serve shows at / is package data: it must be in the wheel
	/tmp/lokal-wheel-check/bin/python -c "from importlib.resources import files; page = files('lokal.agent.server') / 'static'; missing = [n for n in ('index.html', 'page.js', 'page.css') if not (page / n).is_file()]; print('page files missing from the wheel:', missing) if missing else None; raise SystemExit(1 if missing else 0)"
	/tmp/lokal-wheel-check/bin/lokal models list >/dev/null
	# an edge box must not download a deep-learning framework it does not use
	/tmp/lokal-wheel-check/bin/python -m pip install --quiet --dry-run --ignore-installed --report /tmp/lokal-wheel-check/report.json "$$(ls dist/lokal-*.whl)[agent,gguf,onnx,langchain]"
	/tmp/lokal-wheel-check/bin/python -c "import json, sys; names = {i['metadata']['name'].lower() for i in json.load(open('/tmp/lokal-wheel-check/report.json'))['install']}; heavy = names & {'torch', 'sentence-transformers', 'transformers'}; print('lokal[agent,gguf,onnx,langchain] resolves', len(names), 'packages; heavy:', sorted(heavy) or 'none'); sys.exit(1 if heavy else 0)"
	@test -n "$(PYTHON310)" || { echo "wheel-check: no python3.10 (pyenv install 3.10, or PYTHON310=...)"; exit 1; }
	rm -rf /tmp/lokal-wheel-check-310
	$(PYTHON310) -m venv /tmp/lokal-wheel-check-310
	/tmp/lokal-wheel-check-310/bin/python -m pip install --quiet dist/lokal-*.whl
	/tmp/lokal-wheel-check-310/bin/python -m compileall -q /tmp/lokal-wheel-check-310/lib/python3.10/site-packages/lokal
	/tmp/lokal-wheel-check-310/bin/python tests/import_every_module.py
	/tmp/lokal-wheel-check-310/bin/python -c "import lokal, lokal.agent.cli, lokal.agent.config"
	/tmp/lokal-wheel-check-310/bin/lokal --help >/dev/null
	/tmp/lokal-wheel-check-310/bin/lokal agent run --help >/dev/null

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
