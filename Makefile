# digitserve: `make serve` and `make test` do all the set-up they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export BENTOML_DO_NOT_TRACK := true
export TF_CPP_MIN_LOG_LEVEL := 2

PORT ?= 3000
HOST ?= http://127.0.0.1:$(PORT)
TRAIN_ARGS ?=

.PHONY: install system-deps data train train-best reference serve test test-fast bento image bench loadtest loadtest-ui gpu-check clean

install: $(STAMP)  ## create .venv and install the project (editable, with the dev extra); idempotent

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $@

# Debian packages the tests use for real: Prometheus (promtool and a live server) and Chromium.
system-deps:
	@if ! command -v promtool >/dev/null || ! test -x /usr/bin/chromium; then \
	  if [ "$$(id -u)" != 0 ]; then echo "Install prometheus and chromium with apt-get (needs root)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus chromium >/dev/null; \
	fi

data: install  ## fetch, verify and cache full MNIST
	$(PY) -m training.data

train: data  ## train the seed's CNN and register it (TRAIN_ARGS="--preset best" for the best accuracy)
	$(PY) -m training $(TRAIN_ARGS)

train-best: data
	$(PY) -m training --preset best

reference: install  ## the seed's scratch perceptron and FFNN, plotted to reports/
	$(PY) -m training.reference

serve: install  ## train if no model is registered, then serve on $(PORT)
	@$(PY) -m training.registry --check 2>/dev/null || $(MAKE) --no-print-directory train
	$(VENV)/bin/bentoml serve service:DigitClassifier --port $(PORT)

test: install system-deps  ## the whole test suite
	$(PY) -m pytest

test-fast: install  ## tests that need no trained model and no server
	$(PY) -m pytest -m "not slow"

bento: install  ## build a Bento with the service and the registered model
	@$(PY) -m training.registry --check || $(MAKE) --no-print-directory train
	$(VENV)/bin/bentoml build

image:  ## the classifier's Docker image, where a Docker engine runs (see "Deploy with Docker Compose")
	docker compose build classifier

bench: install  ## the side-by-side benchmark; writes reports/bench.{json,md}
	@$(PY) -m training.registry --check || $(MAKE) --no-print-directory train
	$(PY) -m loadtests.bench

loadtest: install  ## headless Locust against a running service: make loadtest HOST=http://...
	$(PY) -m loadtests.run --host $(HOST)

loadtest-ui: install  ## Locust's web UI on :8089
	$(VENV)/bin/locust -f loadtests/locustfile.py -H $(HOST)

gpu-check: install  ## is a GPU found and used, and how fast is a large batch on it
	$(PY) -m service.gpu_check

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
