# The two commands a newcomer needs: `make up` runs the stack, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: up test venv k8s deploy-tools python-base format asyncapi bench

up: venv  ## Run the whole stack on this machine (no Docker, no root)
	$(BIN)/ekiben up

test: venv k8s deploy-tools  ## Run every test against real NATS, PostgreSQL, S3 and Kubernetes
	$(BIN)/pytest

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

k8s:  ## Build (or find cached) kube-apiserver, etcd, controller-manager, scheduler, kwok
	bash tests/k8s/build.sh

deploy-tools:  ## Build (or find cached) helm and a minimal OTel Collector; fetch the Prometheus Operator CRDs
	bash tests/deploy/build-tools.sh

python-base:  ## Build (or find cached) the Python 3.11 base image bentos build FROM (root, ~1 min)
	bash tests/images/python-base.sh >/dev/null

format: venv
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

asyncapi: venv  ## Regenerate the committed AsyncAPI document from the event models
	$(BIN)/ekiben events asyncapi > docs/asyncapi.json

bench: venv k8s python-base  ## Print the benchmark figures (the image builds take a while)
	$(BIN)/python benchmarks/outbox_latency.py
	$(BIN)/python benchmarks/registry_transfer.py
	$(BIN)/python benchmarks/subscriptions.py
	$(BIN)/python benchmarks/build.py
	$(BIN)/python benchmarks/deploy.py
	$(BIN)/python benchmarks/dashboard.py
