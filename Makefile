# meshproof front door. `make conformance` and `make test` do all the set-up they need on a fresh
# Debian 12 machine (root): apt packages, the .venv with the project, and Allure 3 from npm.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# cosmic-ray (extra `mutation`): make mutants runs it, and make test checks the mutation tooling with it.
MUTATION_STAMP := $(VENV)/.installed-mutation
ALLURE := reports/node_modules/.bin/allure
OUT := reports/out
PYTEST_ARGS ?=
# PUSH_DELAY=2: the local control plane pushes each change 2 s later, debounced as istiod does.
PUSH_DELAY ?=
MESH_ARGS = $(if $(PUSH_DELAY),--push-delay $(PUSH_DELAY))

.PHONY: setup system-deps inotify-room test conformance chaos report bench lint clean doctor mutants

setup: system-deps $(STAMP)

# Installs only what is missing, so a second run costs a few `command -v` calls. shellcheck checks
# the kind scripts in the self-tests; chromium and its driver open the built report in a browser self-test.
system-deps:
	@missing=""; \
	command -v iptables >/dev/null || missing="$$missing iptables"; \
	command -v tcpdump  >/dev/null || missing="$$missing tcpdump"; \
	command -v curl     >/dev/null || missing="$$missing curl"; \
	command -v ip       >/dev/null || missing="$$missing iproute2"; \
	command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v openssl  >/dev/null || missing="$$missing openssl"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@$(MAKE) --no-print-directory inotify-room

# Every sidecar runs as uid 1337 and holds 4 inotify instances; a stock kernel allows 128 per user, so past
# 32 sidecars Envoy aborts at start. Raised (never lowered) until the next reboot; `make doctor` counts the room.
INOTIFY_INSTANCES := 1024
inotify-room:
	@limit=$$(cat /proc/sys/fs/inotify/max_user_instances); \
	if [ "$$limit" -lt $(INOTIFY_INSTANCES) ]; then \
	  echo "raising fs.inotify.max_user_instances from $$limit to $(INOTIFY_INSTANCES) (4 per sidecar, all uid 1337)"; \
	  echo $(INOTIFY_INSTANCES) > /proc/sys/fs/inotify/max_user_instances \
	    || echo "warning: cannot raise it here; runs with more than $$((limit / 4)) sidecars at once will fail"; \
	fi

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	@touch $@

# The Allure version is pinned in reports/package.json and package-lock.json; `npm ci` installs exactly that.
$(ALLURE):
	cd reports && npm ci --no-audit --no-fund --silent

# Self-tests of meshproof's own code (oracle, API validation, local mesh, capture, reports). Allure first, so
# the report self-tests build a real report instead of skipping; cosmic-ray, so the mutation tooling is tested on it.
# pytest's exit 5 (no tests collected) is a failure here.
test: setup $(ALLURE) $(MUTATION_STAMP)
	@$(BIN)/pytest tests -n 2 $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

# The full conformance matrix (and chaos suites) on the default mesh, then the HTML report.
conformance: setup $(ALLURE)
	@rm -rf $(OUT)/allure-results $(OUT)/cells; mkdir -p $(OUT); \
	$(BIN)/pytest suites --alluredir $(OUT)/allure-results --junitxml $(OUT)/junit.xml $(MESH_ARGS) $(PYTEST_ARGS); rc=$$?; \
	$(MAKE) --no-print-directory report; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

chaos: setup $(ALLURE)
	@rm -rf $(OUT)/allure-results; mkdir -p $(OUT); \
	$(BIN)/pytest suites/chaos --alluredir $(OUT)/allure-results --junitxml $(OUT)/junit.xml $(MESH_ARGS) $(PYTEST_ARGS); rc=$$?; \
	$(MAKE) --no-print-directory report; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

report: $(ALLURE)
	$(BIN)/python -m reports.build --results $(OUT)/allure-results --out $(OUT) --allure $(ALLURE)

bench: setup
	$(BIN)/python -m reports.bench --out $(OUT)/bench.json

# Mutation score (reports/mutation.py): the suites against the reference mesh's control plane, the self-tests
# against the oracle. Slow (hours on a loaded 2-core machine; MUTATION_ARGS="--sample N" judges N per session,
# "--changed-since COMMIT" only the lines changed since then):
# not part of .ci/run. An interrupted run continues.
$(MUTATION_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,mutation]'
	@touch $@

mutants: setup $(MUTATION_STAMP)
	$(BIN)/python -m reports.mutation --out $(OUT) $(MUTATION_ARGS)

# ruff, then the layers (import-linter contracts in pyproject.toml: no cycles, the oracle and the reference
# mesh's control plane apart, test support out of the product), then mypy on the typed modules ([tool.mypy]).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

doctor: setup
	$(BIN)/meshproof doctor --mesh local

clean:
	-$(BIN)/meshproof clean
	rm -rf $(OUT) .pytest_cache

# --- real clusters (docs/kube.md): a kind cluster with Istio, the suites on it, pre-upgrade validation ---
# These targets need no host tcpdump or iptables (the capture and the faults run inside the pods), so they
# depend on the .venv and Allure only, never on system-deps (which needs root for apt-get).
ISTIO_VERSION ?= 1.30
KIND_KUBECONFIG ?= $(HOME)/.kube/meshproof-kind.yaml
KUBE_ARGS = --mesh kube --kubeconfig $(KIND_KUBECONFIG)
ALLOW_UNPINNED ?=

.PHONY: kind-up kind-doctor kind-conformance kind-down upgrade-check

# ISTIO_VERSION may list several versions (canary): make kind-up ISTIO_VERSION="1.29 1.30"
# ALLOW_UNPINNED=1: accept a download without a sum in cluster/kind/checksums.txt (its release's own sum).
kind-up:
	ALLOW_UNPINNED=$(ALLOW_UNPINNED) KIND_KUBECONFIG=$(KIND_KUBECONFIG) cluster/kind/up.sh $(ISTIO_VERSION)

kind-doctor: $(STAMP)
	$(BIN)/meshproof doctor $(KUBE_ARGS)

# The namespace-scoped cells with 2 workers, then the mesh-wide cells alone (the kind cluster is ours), then
# the report. Client and server pods must land on different nodes (kind-config.yaml has two workers).
# Exit 1 when either run failed; a tree without mesh-wide cells (pytest exit 5 there) is not a failure.
kind-conformance: $(STAMP) $(ALLURE)
	@rm -rf $(OUT)/allure-results $(OUT)/cells; mkdir -p $(OUT); export MESHPROOF_NODE_SPREAD=required; \
	$(BIN)/pytest suites $(KUBE_ARGS) --istio-version $(firstword $(ISTIO_VERSION)) -m "not mesh_wide" -n 2 \
	  --alluredir $(OUT)/allure-results --junitxml $(OUT)/junit.xml $(PYTEST_ARGS); scoped=$$?; \
	$(BIN)/pytest suites $(KUBE_ARGS) --istio-version $(firstword $(ISTIO_VERSION)) -m mesh_wide --allow-mesh-wide \
	  --alluredir $(OUT)/allure-results --junitxml $(OUT)/junit-mesh-wide.xml $(PYTEST_ARGS); wide=$$?; \
	$(MAKE) --no-print-directory report; \
	if [ $$scoped -eq 5 ]; then echo "error: pytest collected no namespace-scoped cells"; exit 1; fi; \
	if [ $$wide -eq 5 ]; then wide=0; fi; \
	if [ $$scoped -ne 0 ] || [ $$wide -ne 0 ]; then exit 1; fi

kind-down:
	KIND_KUBECONFIG=$(KIND_KUBECONFIG) cluster/kind/down.sh

# OLD_REVISION / NEW_REVISION: the istio.io/rev values of the current and the candidate control plane.
# Exit 1 on a regression; the HTML report (revisions side by side, the diff) is built either way.
upgrade-check: $(STAMP) $(ALLURE)
	@$(BIN)/meshproof upgrade-check $(KUBE_ARGS) --old-revision $(OLD_REVISION) --new-revision $(NEW_REVISION) \
	  --out $(OUT)/upgrade $(UPGRADE_ARGS); rc=$$?; \
	if [ -d $(OUT)/upgrade/allure-results ]; then $(BIN)/python -m reports.build --results \
	  $(OUT)/upgrade/allure-results --out $(OUT)/upgrade --cells $(OUT)/upgrade/new/cells \
	  --allure $(ALLURE) --name "meshproof upgrade-check"; fi; exit $$rc
