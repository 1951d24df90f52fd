# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv when it is missing and install the project into it.  The venv sees the
# system's site-packages, so a torch you already installed (your own CUDA build, conda) is
# used; only when none is importable is $(TORCH_SPEC) installed.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_out

.PHONY: demo test venv clean-demo

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -c "import torch, torchvision" 2>/dev/null || $(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[test]"
# facenet-pytorch: MTCNN, the prepare step's face detector, its weights inside the wheel.  Its
# metadata pins torch<2.3, torchvision<0.18, numpy<2 and Pillow<10.3, yet it runs on current
# ones; --no-deps keeps pip from downgrading them.  What it imports (torch, torchvision, numpy,
# Pillow, requests, tqdm) is in pyproject.toml.
	$(PY) -m pip install -q --no-deps "facenet-pytorch==2.6.0"
	touch $@

venv: $(VENV)/.installed

test: venv
	$(PY) -m pytest -q

demo: venv
	DEMO_DIR=$(DEMO_DIR) PYTHON=$(PY) bash scripts/demo.sh

clean-demo:
	rm -rf $(DEMO_DIR)
