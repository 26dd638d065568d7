# OptiSchema Operator. `make demo` and `make test` work on a fresh Debian 12 machine: they install what they need.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PG_MAJOR ?= 15
DEBIAN_PACKAGES := postgresql-$(PG_MAJOR) postgresql-$(PG_MAJOR)-hypopg postgresql-client-$(PG_MAJOR) buildah debootstrap chromium
STAMP := $(VENV)/.installed


.PHONY: help install debs test test-unit test-postgres test-k8s test-image image lint crds manifests demo demo-engine bench lock krew controlplane helm chart-package promtool pgbinaries cnpgcrd cluster-up cluster-down e2e-kind clean

help: ## show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

install: debs $(STAMP) controlplane helm promtool pgbinaries cnpgcrd ## Debian packages (when root), venv, Python dependencies, control-plane binaries, Helm, promtool, PostgreSQL 13-18, CloudNativePG's CRD

debs:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }; \
	  else \
	    echo "missing Debian packages: $$missing (run 'sudo apt-get install $$missing' or 'make install' as root)" >&2; \
	    exit 1; \
	  fi; \
	fi

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

test: install ## run every test tier (unit, real PostgreSQL)
	$(PY) -m pytest

test-unit: $(STAMP) ## the pure tier only
	$(PY) -m pytest -m unit

test-postgres: install ## the real-PostgreSQL tier only
	$(PY) -m pytest -m postgres

test-k8s: install ## the real control-plane tier only
	$(PY) -m pytest -m k8s

test-image: install ## the container image tier only (builds it)
	$(PY) -m pytest -m image

image: install ## the container image, built daemonless with buildah (base from debootstrap when no registry answers)
	@PY=$(PY) hack/image/build.sh

lint: $(STAMP) ## ruff, mypy and the import-linter layer contracts
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

crds: $(STAMP) ## regenerate crds/ from the API models (and the chart's and manifests' copies)
	$(PY) -m optischema.api.crdgen crds
	mkdir -p charts/optischema/files/crds && rm -f charts/optischema/files/crds/*.yaml
	cp crds/*.yaml charts/optischema/files/crds/
	hack/manifests/render.sh

manifests: helm ## render manifests/base (kustomize) from the chart
	hack/manifests/render.sh

demo: install ## the operator end to end: control plane, PostgreSQL, approve with the plugin, apply, HTML report
	$(PY) demo/run.py

demo-engine: install ## the engine alone: local PostgreSQL, the shop workload, analyse, apply, measure
	$(PY) demo/engine.py

bench: install ## benchmarks, printing their figures (shop, fleet and forum throughput, analysis speed)
	$(PY) bench/run.py all

lock: ## refresh constraints.txt from a clean resolve of pyproject.toml
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv && .lock-venv/bin/pip install -q -e '.[dev]'
	{ echo "# Versions tested together; regenerate with \`make lock\` after changing pyproject.toml."; \
	  .lock-venv/bin/pip freeze --exclude-editable; } > constraints.txt
	rm -rf .lock-venv

krew: $(STAMP) ## the krew archive (dist/) and its manifest (plugins/krew/optischema.yaml)
	$(PY) hack/krew/build.py

controlplane: ## build (or find) etcd, kube-apiserver, kube-controller-manager and kubectl in the cache
	@hack/controlplane/build.sh >/dev/null

helm: ## build (or find) the pinned Helm in the cache
	@hack/helm/build.sh >/dev/null

chart-package: helm ## the chart as a versioned archive and a Helm repository index in dist/charts (CHART_REPO_URL: absolute URLs)
	@hack/helm/package.sh

pgbinaries: $(STAMP) ## fetch (or find) the server binaries of PostgreSQL 13, 14, 16, 17, 18 in the cache (the matrix tests)
	@$(PY) -m devcluster.pgbinaries >/dev/null

cnpgcrd: ## fetch (or find) CloudNativePG's Cluster CRD from its Go module in the cache (tests/k8s/test_cnpg.py)
	@hack/cnpg/crd.sh >/dev/null

promtool: ## build (or find) the pinned promtool (Prometheus's rule tester, for tests/k8s/test_alerts.py) in the cache
	@hack/promtool/build.sh >/dev/null

cluster-up: install ## start the embedded cluster in the background; prints `export KUBECONFIG=...`
	@$(PY) -m devcluster up

cluster-down: ## stop the embedded cluster, leaving no process behind
	@$(PY) -m devcluster down

e2e-kind: ## end to end on kind (needs a Docker engine; skipped here with the reason)
	@PY=$(PY) hack/e2e-kind.sh

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
