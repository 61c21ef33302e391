# Developer entry points. `make test` works on a fresh machine: it creates .venv,
# installs a CPU build of torch, builds ssl_fast._C in place and runs pytest.
# Another torch: `make test TORCH_SPEC='torch==2.14.1' VENV=.venv-gpu`.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
# What building and training need: scikit-learn bundles the digits images (the offline
# default image data) and fits the evaluation probes; tokenizers trains the MLM vocabulary;
# tqdm draws the progress bar; Pillow writes the reconstruction grid.
DEPS := numpy ninja pybind11 setuptools wheel scikit-learn tokenizers tqdm pillow
# What the tests, benchmarks and lint add: transformers (pure Python, ~40 s to install) lets
# them compare the masking with DataCollatorForLanguageModeling (those comparisons skip
# without it); tensorboard is where the trainer's event files are checked; matplotlib draws
# `bench --plot` and the curves.png of every `train` run.
TEST_DEPS := pytest pytest-benchmark ruff transformers tensorboard matplotlib

# `make cuda-check` compiles every CUDA source against a CUDA build of torch (no GPU needed).
CUDA_VENV ?= .venv-cuda
CUDA_TORCH_SPEC ?= torch==2.14.1
CUDA_PY := $(abspath $(CUDA_VENV))/bin/python
CUDA_BUILD := build/cuda-check

.PHONY: all venv test-venv build test test-slow bench demo demo-all lint wheel wheel-check cuda-check \
	cxx17-check clean

all: test

$(VENV)/.ready:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(DEPS)
	touch $@

$(VENV)/.test-ready: $(VENV)/.ready
	$(PY) -m pip install -q $(TEST_DEPS)
	# lightly's NTXentLoss, the reference of the drop-in test. Its loss modules need only
	# torch; its declared dependencies (torchvision, lightning, ...) would pull another torch.
	$(PY) -m pip install -q --no-deps "lightly==1.6.0"
	# pytorch-metric-learning's SupConLoss, the reference of SupConLoss's drop-in test; its
	# dependencies (numpy, scikit-learn, tqdm, torch) are here already, --no-deps keeps this torch.
	$(PY) -m pip install -q --no-deps "pytorch-metric-learning==2.9.0"
	# open_clip's SigLipLoss, the reference of SigLIP's drop-in test and a bench provider. Its
	# loss module needs only torch and is loaded from its file; the package pulls torchvision.
	$(PY) -m pip install -q --no-deps "open_clip_torch==3.3.0"
	touch $@

venv: $(VENV)/.ready
test-venv: $(VENV)/.test-ready

build: venv
	$(PY) setup.py -q build_ext --inplace

test: build test-venv
	$(PY) -m pytest tests -q

# The tests marked slow, which `make test` leaves out: the README's train, eval, info and
# torchrun commands as shown (2 steps each), the bench simclr_batch command, and the accuracy
# and determinism tests rerun under each lower CPU instruction set.
test-slow: build test-venv
	$(PY) -m pytest tests -q -m slow

# One session for every op: one table (bench-out/table.md), rows appended to
# bench-out/results.csv. Options: `$(PY) -m ssl_fast bench --help`.
bench: build test-venv
	$(PY) -m ssl_fast bench smooth_l1 mse bce bce_with_logits nt_xent info_nce siglip mask_tokens random_masking

# SimCLR on the bundled digits with the fused NT-Xent loss, then its evaluation table beside
# raw pixels and a random encoder. demo-all: the four pretext tasks (and the sparse
# autoencoder), one after another.
demo: build
	$(PY) -m ssl_fast train simclr --steps 300

demo-all: build
	$(PY) -m ssl_fast train autoencoder --steps 1000
	$(PY) -m ssl_fast train autoencoder --variant sparse --steps 1000
	$(PY) -m ssl_fast train forecast --steps 500
	$(PY) -m ssl_fast train simclr --steps 300
	$(PY) -m ssl_fast train mlm --steps 300

# Every pretext task and autoencoder variant at the demo-all step counts with seeds 0, 1 and 2
# (about 25 minutes on 2 cores, most of it MLM): one markdown table of each row's metrics (mean ± std over the seeds) and whether the model beats each baseline.
# Options (other tasks, seeds, the validation holdout): benchmarks/pretext_seeds.py --help.
.PHONY: demo-seeds
demo-seeds: build
	$(PY) benchmarks/pretext_seeds.py

lint: test-venv
	$(PY) -m ruff check ssl_fast tests benchmarks examples setup.py

# The sdist, then the wheel built from it (so the sdist is known to build), in dist/, against
# the venv's torch. The package's version is ssl_fast.__version__.
$(VENV)/.wheel-ready: $(VENV)/.ready
	$(PY) -m pip install -q build
	touch $@

wheel: $(VENV)/.wheel-ready
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .

# The wheel installed into a fresh venv outside the checkout (CPU torch, its extras), then
# info, a 2-step train and a small bench with --plot, run from /tmp.
wheel-check: wheel
	PYTHON=$(PYTHON) .ci/wheel_check.sh dist '$(TORCH_SPEC)'

$(CUDA_VENV)/.ready:
	$(PYTHON) -m venv $(CUDA_VENV)
	$(CUDA_PY) -m pip install -q --upgrade pip
	$(CUDA_PY) -m pip install -q "$(CUDA_TORCH_SPEC)" numpy ninja pybind11 setuptools wheel
	touch $@

cuda-check: $(CUDA_VENV)/.ready
	SSL_FAST_CUDA=1 $(CUDA_PY) setup.py -q build --build-base $(CUDA_BUILD)
	# Every op of a family with a csrc/<family>/cuda.cu must have a CUDA kernel in the built binary.
	cd $(CUDA_BUILD) && PYTHONPATH=$$(ls -d $(CURDIR)/$(CUDA_BUILD)/lib.*) $(CUDA_PY) -m ssl_fast info
	cd $(CUDA_BUILD) && PYTHONPATH=$$(ls -d $(CURDIR)/$(CUDA_BUILD)/lib.*) $(CUDA_PY) $(CURDIR)/.ci/cuda_kernels.py

# `make cxx17-check`: every source parses as C++17 against torch 2.11's headers. torch 2.11
# and older build extensions as C++17; cuda-check's newer torch builds them as C++20.
cxx17-check: $(CUDA_VENV)/.ready
	.ci/cxx17_check.sh $(CUDA_PY)

clean:
	rm -rf build dist ssl_fast/*.so .pytest_cache
