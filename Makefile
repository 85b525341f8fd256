# digitserve: `make serve` and `make test` do all the set-up they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The benchmark's peers, each stack in an environment of its own: never the service's dependencies.
PEERS_DIR := .venv-peers
PEER_STAMPS := $(PEERS_DIR)/kserve-ray/.installed-stamp $(PEERS_DIR)/mlserver/.installed-stamp
export BENTOML_DO_NOT_TRACK := true
export TF_CPP_MIN_LOG_LEVEL := 2

PORT ?= 3000
HOST ?= http://127.0.0.1:$(PORT)
TRAIN_ARGS ?=
BENCH_SERVERS ?= service,handwritten,naive,kserve,mlserver,rayserve

.PHONY: chaos rollback install system-deps v2-clients data train train-best reference serve test test-fast bento image bench bench-peers loadtest loadtest-ui gpu-check clean

install: $(STAMP)  ## create .venv and install the project (editable, with the dev extra); idempotent

# uv installs the same releases pip would, from PyPI, in parallel: on the 2-core machine 17 s with an empty
# cache and 6 s with a warm one, against pip's 99 s, which a first `make serve` would otherwise spend.
# pip itself only fetches uv into the venv.
UV := $(VENV)/bin/uv
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(PY) -m pip install --disable-pip-version-check -q "uv>=0.5,<1"
	$(UV) pip install --quiet --python $(PY) -e '.[dev]'
	@touch $@

# Debian packages the tests use for real: Prometheus (promtool and a live server), Chromium, and libb64
# (perf_analyzer links it).
system-deps:
	@if ! command -v promtool >/dev/null || ! test -x /usr/bin/chromium || ! test -e /usr/lib/x86_64-linux-gnu/libb64.so.0d -o "$$(uname -m)" != x86_64; then \
	  if [ "$$(id -u)" != 0 ]; then echo "Install prometheus, chromium and libb64-0d with apt-get (needs root)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus chromium \
	    $$( [ "$$(uname -m)" = x86_64 ] && echo libb64-0d ) >/dev/null; \
	fi

# The Open Inference Protocol's own clients, which tests/e2e/test_v2_clients.py drives against the service
# (tritonclient[http] is in the dev extra):
# - KServe's Python client, in an environment of its own: kserve pins pandas, protobuf and psutil below
#   what TensorFlow and the project use.
# - Triton's perf_analyzer, taken from the tritonclient 2.50.0 wheel for x86-64 Linux: the last one whose
#   binary runs on Debian 12's glibc 2.36 (2.55 and later need 2.38; the PyPI package "perf-analyzer" is an
#   empty placeholder). It links libcudart, which it loads without using a GPU: from NVIDIA's PyPI wheel.
KSERVE_VENV := .venv-kserve
PERF_ANALYZER_DIR := $(VENV)/opt/perf_analyzer
PERF_ANALYZER := $(PERF_ANALYZER_DIR)/perf_analyzer

v2-clients: $(KSERVE_VENV)/.installed-stamp $(PERF_ANALYZER)  ## KServe's client and perf_analyzer, for the v2 tests

$(KSERVE_VENV)/.installed-stamp:
	@test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --disable-pip-version-check -q "kserve==0.21.0"
	@touch $@

$(PERF_ANALYZER): | $(STAMP)
	@mkdir -p $(PERF_ANALYZER_DIR)
	@if [ "$$(uname -s)-$$(uname -m)" != Linux-x86_64 ]; then \
	  echo "perf_analyzer: no build for $$(uname -s)-$$(uname -m); tests/e2e/test_v2_clients.py skips it" > $(PERF_ANALYZER_DIR)/UNAVAILABLE; \
	else \
	  rm -rf $(PERF_ANALYZER_DIR)/wheels && \
	  $(PY) -m pip download --disable-pip-version-check -q --no-deps --only-binary=:all: --platform manylinux1_x86_64 --platform manylinux2014_x86_64 \
	    --python-version 3.11 -d $(PERF_ANALYZER_DIR)/wheels "tritonclient==2.50.0" "nvidia-cuda-runtime-cu12==12.9.79" && \
	  cd $(PERF_ANALYZER_DIR) && $(abspath $(PY)) -c "import glob, zipfile; \
	    [zipfile.ZipFile(w).extractall('unpacked') for w in glob.glob('wheels/*.whl')]" && \
	  cp unpacked/tritonclient-2.50.0.data/data/bin/perf_analyzer unpacked/nvidia/cuda_runtime/lib/libcudart.so.12 . && \
	  chmod +x perf_analyzer && rm -rf unpacked wheels; \
	fi
	@touch $@

data: install  ## fetch, verify and cache full MNIST
	$(PY) -m training.data

train: data  ## train the default (people) preset and register it (TRAIN_ARGS="--preset seed" for the article's run)
	$(PY) -m training $(TRAIN_ARGS)

train-best: data
	$(PY) -m training --preset best

reference: install  ## the seed's scratch perceptron and FFNN, plotted to reports/
	$(PY) -m training.reference

# The first `make serve` trains before it answers: as many of the default's epochs as fit in
# SERVE_FIT_BUDGET seconds of fitting on this machine (all 10 where an epoch takes under about 20 s, as on a
# CPU that computes in bfloat16: 147 s for 10; 5 on a 2-core CPU without it, at 35-41 s an epoch), so that
# it is ready within 5 minutes: about 65 s go to setting up, evaluating and starting the service.
# `make train` always trains them all.
SERVE_FIT_BUDGET ?= 215
serve: install  ## train if no model is registered (within SERVE_FIT_BUDGET s of fitting), then serve on $(PORT)
	@$(PY) -m training.registry --check 2>/dev/null || \
	  $(MAKE) --no-print-directory train TRAIN_ARGS="--fit-budget $(SERVE_FIT_BUDGET) $(TRAIN_ARGS)"
	$(VENV)/bin/bentoml serve service:DigitClassifier --port $(PORT)

test: install system-deps v2-clients  ## the whole test suite
	$(PY) -m pytest

# The KServe manifest's schema check is fast but runs KServe's SDK, which lives in an environment of its own.
test-fast: install $(KSERVE_VENV)/.installed-stamp  ## tests that need no trained model and no server
	$(PY) -m pytest -m "not slow"

bento: install  ## build a Bento with the service and the registered model
	@$(PY) -m training.registry --check || $(MAKE) --no-print-directory train
	$(VENV)/bin/bentoml build

image:  ## the classifier's Docker image, where a Docker engine runs (see "Deploy with Docker Compose")
	docker compose build classifier

bench: install bench-peers  ## the side-by-side benchmark, the peers included; writes reports/bench.{json,md}
	@$(PY) -m training.registry --check || $(MAKE) --no-print-directory train
	BENCH_SERVERS=$(BENCH_SERVERS) $(PY) -m loadtests.bench

bench-peers: $(PEER_STAMPS)  ## KServe + Ray Serve, and MLServer, in .venv-peers/ (from loadtests/peers/requirements-*.txt)

$(PEERS_DIR)/%/.installed-stamp: loadtests/peers/requirements-%.txt
	@test -x $(PEERS_DIR)/$*/bin/python || $(PYTHON) -m venv $(PEERS_DIR)/$*
	$(PEERS_DIR)/$*/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
	$(PEERS_DIR)/$*/bin/python -m pip install --disable-pip-version-check -q -r $<
	@touch $@

loadtest: install  ## headless Locust against a running service: make loadtest HOST=http://...
	$(PY) -m loadtests.run --host $(HOST)

loadtest-ui: install  ## Locust's web UI on :8089
	$(VENV)/bin/locust -f loadtests/locustfile.py -H $(HOST)

.PHONY: soak overload memory fuzz

fuzz: install  ## schemathesis over the live service's OpenAPI, longer than make test's: FUZZ_EXAMPLES (300), FUZZ_SEED
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} $(PY) -m pytest -q -p no:cacheprovider tests/e2e/test_fuzz.py

soak: install  ## SOAK_MINUTES (10) at 70 % of the measured capacity, minute by minute; writes reports/soak.{json,md}
	@$(PY) -m training.registry --check || $(MAKE) --no-print-directory train
	$(PY) -m loadtests.soak

overload: install  ## 8x the concurrency where throughput peaks: accepted, refused (503) and failed; reports/overload.{json,md}
	@$(PY) -m training.registry --check || $(MAKE) --no-print-directory train
	$(PY) -m loadtests.overload

memory: install  ## each worker's RSS after the largest accepted and refused requests; reports/memory.{json,md}
	@$(PY) -m training.registry --check || $(MAKE) --no-print-directory train
	$(PY) -m loadtests.memory

chaos: install  ## SIGTERM, kill -9 of a worker, a new and a refused model version, each under load; reports/chaos.{json,md}
	@$(PY) -m training.registry --check || $(MAKE) --no-print-directory train
	$(PY) -m loadtests.chaos all

rollback: install  ## serve the version before the newest again, with no restart: make rollback [VERSION=mnist_cnn:...]
	$(PY) -m training.registry --promote $${VERSION:-$$($(PY) -m training.registry --previous)}

gpu-check: install  ## is a GPU found and used, and how fast is a large batch on it
	$(PY) -m service.gpu_check

clean:
	rm -rf $(VENV) $(PEERS_DIR) $(KSERVE_VENV) build dist *.egg-info .pytest_cache
