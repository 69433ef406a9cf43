# The README's two commands are `make demo` and `make test`; each installs what it
# needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install testenv prometheus crds lint unit test demo sandbox-up sandbox-down bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Real control plane, kwok, helm, kustomize and the Istio CRDs, built from Go
# modules into a per-version cache outside the repository; then Prometheus.
testenv: prometheus
	bash hack/testenv/build.sh

prometheus:
	@command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >/dev/null; \
	  systemctl disable --now prometheus >/dev/null 2>&1 || true; }

crds: install
	$(BIN)/python -m tidegate.api.crdgen crds
	mkdir -p charts/tidegate/crds && cp crds/*.yaml charts/tidegate/crds/

lint: install
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest -q tests/unit

test: install testenv lint
	$(BIN)/pytest -q -ra

demo: install testenv
	$(BIN)/python -m tidegate.cli.demo $(if $(KEEP),--keep,)

sandbox-up: install
	$(BIN)/tidegate sandbox up

sandbox-down: install
	$(BIN)/tidegate sandbox down

bench: install testenv
	$(BIN)/python bench/decisions.py
	$(BIN)/python bench/idle.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
