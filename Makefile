# The README's two commands are `make demo` and `make test`; each installs what it
# needs on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install testenv prometheus chromium lua image crds argocd lint unit test demo sandbox-up sandbox-down bench clean

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

# Debian's headless Chromium, the browser tests/e2e/test_dashboard.py drives with Playwright
# (pointed at this executable: Playwright downloads no browser of its own).
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium package"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null; }

# gopher-lua (the Lua Argo CD embeds) in a small runner, for tests/integration/test_argocd.py;
# built from its Go module into the cache, keyed by hack/lua's sources.
lua:
	bash hack/lua/build.sh >/dev/null

# The operator's OCI image, with no Docker engine: a Debian base by mmdebstrap, the
# Dockerfile built by buildah (vfs storage, chroot isolation), an OCI archive in the cache
# keyed by its inputs (hack/image/build.sh prints its path). About 12 minutes cold on two
# cores; a no-op when nothing changed. tests/integration/test_image.py runs it.
image:
	bash hack/image/build.sh

# deploy/argocd/argocd-cm.yaml from the Lua scripts beside it.
argocd: install
	$(BIN)/python hack/argocd/render.py

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

test: install testenv chromium lua image lint
	$(BIN)/pytest -q -ra

demo: install testenv
	$(BIN)/python -m tidegate.cli.demo $(if $(KEEP),--keep,)

sandbox-up: install
	$(BIN)/tidegate sandbox up

sandbox-down: install
	$(BIN)/tidegate sandbox down

# Argo Rollouts' controller and CRDs, for bench/steps.py's side-by-side comparison.
.PHONY: argo
argo:
	bash hack/argo/build.sh

bench: install testenv argo
	$(BIN)/python bench/decisions.py
	$(BIN)/python bench/idle.py --rollouts 1000 --namespaces 10
	$(BIN)/python bench/steps.py --count 100
	$(BIN)/python bench/failover.py --kills 20

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
