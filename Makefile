# Two entry points for a fresh machine: `make demo` (train -> export -> sample) and `make test`.
# Both create .venv when it is missing. TORCH pins the CPU build that lies on this machine's disk;
# elsewhere pick the build for your hardware (pyproject only asks for torch>=2.6).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
EDGEDIFF := $(VENV)/bin/edgediff
STAMP := $(VENV)/.edgediff-installed

.PHONY: demo test venv clean edge-tools gr-env priors gpu-priors

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	# TensorRT 10.13 API stubs for mypy; --no-deps because they name the real tensorrt wheels
	$(PY) -m pip install -q --no-deps "tensorrt-stubs==10.13.0.35.1"
	touch $(STAMP)

# The main job: train the default U-Net on built-in QPSK frames, export a parity-gated bundle,
# verify it, and sample from it with ONNX Runtime (the toolkit's path); then the shipped priors at work
# on held-out frames: 50 % lost QPSK samples filled and QPSK pulled from under a chirp, each against
# LMMSE (about 6 minutes on 2 CPU cores). Re-runnable: it replaces its own run, bundle and figures.
demo: $(STAMP)
	rm -rf runs/demo
	mkdir -p out bundles
	$(EDGEDIFF) train --dataset rf-qpsk --out runs/demo
	$(EDGEDIFF) export onnx runs/demo --out bundles/demo --force
	$(EDGEDIFF) verify bundles/demo
	$(EDGEDIFF) sample bundles/demo --n 16 --out out/samples.npy --plot out/samples.png --force
	$(EDGEDIFF) showcase --out out --force

# The shipped priors in priors/: train every stage of each recipe (edgediff.tools.priors) that is not
# in runs/priors yet, then export. Hours per prior on 2 CPU cores, minutes on a GPU. Never run by tests.
priors: $(STAMP)
	$(EDGEDIFF) priors build --runs runs/priors --out priors

# The prepared GPU session (README, "Training on a GPU"): on a lent GPU machine, where torch and CUDA
# are installed but nothing can be fetched and no venv is wanted, link the package into a folder on
# PYTHONPATH and continue every shipped prior; what comes back lands in OUT (the device tool's $OUT).
# Here: `make gpu-priors GPU_PYTHON=.venv/bin/python OUT=out/gpu GPU_ARGS=--dry-run` (the suite does).
GPU_PYTHON ?= python3
GPU_ARGS ?=
GPU_SITE ?= /tmp/edgediff-site
# where the stages start from and train into: runs/carry when `edgediff priors carry` made it (the
# device copy carries it), else runs/gpu (empty there: the call starts from the shipped priors); a dry
# run's toy stages go to OUT/dry-runs, never beside the real runs in runs/gpu
GPU_RUNS ?= $(if $(findstring --dry-run,$(GPU_ARGS)),$(OUT)/dry-runs,runs/gpu)
# a path to the interpreter is made absolute: the recipe runs from GPU_SITE
GPU_PY = $(if $(findstring /,$(GPU_PYTHON)),$(abspath $(GPU_PYTHON)),$(GPU_PYTHON))
# It runs from outside the checkout: `python -m` puts the working folder first on sys.path, and
# the checkout's own edgediff/ folder (no subpackages) would shadow the linked package.
gpu-priors:
	@test -n "$(OUT)" || { echo "make gpu-priors needs OUT=DIR (where the packed runs go)"; exit 2; }
	rm -rf $(GPU_SITE) && mkdir -p $(GPU_SITE)/edgediff
	cp -rs $(CURDIR)/edgediff/. $(GPU_SITE)/edgediff/
	for d in runtime train export tools priors; do ln -s $(CURDIR)/$$d $(GPU_SITE)/edgediff/$$d; done
	cd $(GPU_SITE) && PYTHONPATH=$(GPU_SITE) PYTHONUNBUFFERED=1 $(GPU_PY) -m edgediff priors continue \
	  --out $(abspath $(OUT)) --runs $(abspath $(GPU_RUNS)) $(GPU_ARGS)

# qemu-user-static and debootstrap run the ARM64 (Jetson CPU) tests; installed when we may (root + apt),
# otherwise those tests skip and say why.
edge-tools:
	@if command -v qemu-aarch64-static >/dev/null && command -v debootstrap >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap) >/dev/null 2>&1 \
	  || echo "note: could not install qemu-user-static/debootstrap; the ARM64 tests will skip"; \
	else echo "note: qemu-user-static/debootstrap missing and not root; the ARM64 tests will skip"; fi

# GNU Radio 3.10 comes from Debian (built for the system Python 3.11 and Debian's numpy): installed when we
# may (root + apt), then .venv-gr, made by that Python with its site packages, gets edgediff (no deps)
# and ONNX Runtime; the GNU Radio tests run there and skip, saying why, without it.
GR_VENV ?= .venv-gr
GR_STAMP := $(GR_VENV)/.edgediff-installed
gr-env:
	@if /usr/bin/python3 -c "import gnuradio.gr" 2>/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gnuradio) >/dev/null 2>&1 \
	  || echo "note: could not install gnuradio; the GNU Radio tests will skip"; \
	else echo "note: GNU Radio (Debian's gnuradio) missing and not root; the GNU Radio tests will skip"; fi
	@if /usr/bin/python3 -c "import gnuradio.gr" 2>/dev/null && { [ ! -f $(GR_STAMP) ] || [ pyproject.toml -nt $(GR_STAMP) ]; }; then \
	  { /usr/bin/python3 -m venv --system-site-packages $(GR_VENV) && \
	    $(GR_VENV)/bin/python -m pip install -q --no-deps -e . && \
	    $(GR_VENV)/bin/python -m pip install -q "onnxruntime>=1.18" && touch $(GR_STAMP); } \
	  || { rm -rf $(GR_VENV); echo "note: could not build $(GR_VENV); the GNU Radio tests will skip"; }; fi

# The suite in two workers, one torch thread each (a file's tests stay together; files with a test
# marked slow are handed out first, tests/conftest.py, so the short ones fill in at the end): on 2 cores they
# finish in about 0.6 of one worker's time; torch's own threads on top would only oversubscribe.
# A CPU count is no guide in a container with a CPU quota; on a larger machine: make test TEST_WORKERS=8.
TEST_WORKERS ?= 2
test: $(STAMP) edge-tools gr-env
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

clean:
	rm -rf $(VENV) $(GR_VENV) runs bundles out
