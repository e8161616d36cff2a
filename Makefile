# Two entry points for a fresh machine: `make demo` (train -> export -> sample) and `make test`.
# Both create .venv when it is missing. TORCH pins the CPU build that lies on this machine's disk;
# elsewhere pick the build for your hardware (pyproject only asks for torch>=2.6).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgediff-installed

.PHONY: demo test venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	# TensorRT 10.13 API stubs for mypy; --no-deps because they name the real tensorrt wheels
	$(PY) -m pip install -q --no-deps "tensorrt-stubs==10.13.0.35.1"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m edgediff.tools.gmm_demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs bundles out
