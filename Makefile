# Two commands do everything on a fresh machine: `make demo` and `make test` (`make lint` checks style).
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
PIP     := $(VPY) -m pip
STAMP   := $(VENV)/.installed
# torch==2.13.0 is the CPU wheel on this project's machines; GPU users install their own torch (>=2.4).
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test test-fast lint format install build bench train eval-docs gpu-check clean

$(VPY):
	$(PY) -m venv $(VENV)

$(STAMP): $(VPY) pyproject.toml setup.py $(wildcard csrc/*)
	$(PIP) install -q --upgrade pip setuptools wheel pybind11
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,lint,onnx,eval,triton,ray,video,rig]" --no-build-isolation
	touch $(STAMP)

install: $(STAMP)

build: $(STAMP)
	$(VPY) setup.py build_ext --inplace

demo: build
	$(VPY) -m tokfuse_rt.demo

test: build
	$(VPY) -X faulthandler -m pytest -q tests

# Everything but the interpreter-heavy Triton sweeps and the other tests marked slow (for local loops; CI runs
# `make test`).
test-fast: build
	$(VPY) -m pytest -q tests -m "not sweep and not slow"

# ruff (lint rules and formatter settings in pyproject.toml) over the Python tree, clang-format (.clang-format)
# over csrc/. `make format` applies both.
CSRC_FILES := $(wildcard csrc/*.cpp csrc/*.h csrc/*.cu csrc/*.cuh)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/clang-format --dry-run --Werror $(CSRC_FILES)

format: $(STAMP)
	$(VENV)/bin/ruff check --fix-only --select I .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/clang-format -i $(CSRC_FILES)

bench: build
	$(VPY) -m pytest bench/ --benchmark-only

# GPU check (scripts/gpu_check.py): on a CUDA machine it builds the CUDA extension in place and runs every
# GPU test, kernel check, Engine cuda-vs-cpu parity and GPU benchmark (< 8 min), writing $(OUT)/gpu_check.json
# and .log; without a GPU it is a dry run of its own plumbing. No venv or network needed: on a machine
# without .venv it runs $(PY). PAIRS: a folder of real test pairs (default: ../shared/data/test).
OUT    ?= out/gpu
PAIRS  ?=
GPU_PY ?= $(if $(wildcard $(VPY)),$(VPY),$(PY))

gpu-check:
	$(GPU_PY) scripts/gpu_check.py --out "$(OUT)" $(if $(PAIRS),--pairs "$(PAIRS)")

# Train the bundled default model's recipe (the trainer's defaults; about 20-30 min on 2 cores); eval-docs regenerates
# its quality reports under docs/.
train: build
	$(VPY) -m tokfuse_rt.train --data ../shared/data/train -o tokfuse_rt/assets/default.safetensors

eval-docs: build
	bash scripts/eval_all.sh default ../shared/data

clean:
	rm -rf build *.egg-info tokfuse_rt/*.so $(VENV)
