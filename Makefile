# The shop's one entry point. `make` lists the targets.
#
# Every tool is pinned and installed into the repository by the targets that
# need it: Python packages into .venv (requirements-dev.txt), Go tools into
# .tmp/bin (tools/go.mod `tool` directives), buf and swagger-ui-dist into
# tools/node_modules (tools/package-lock.json), the Node toolchain into
# node_service/node_modules and the storefront's into web/node_modules
# (package-lock.json); Debian's chromium for the browser tests.
# Generated code is not committed; every target that needs it generates it.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DELETE_ON_ERROR:
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules --no-print-directory

ROOT := $(abspath .)
TMP := $(ROOT)/.tmp
BIN := $(TMP)/bin
STAMPS := $(TMP)/stamps
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
BUF := $(ROOT)/tools/node_modules/.bin/buf
export GOFLAGS := -mod=mod
export GOTOOLCHAIN := local

PROTO_FILES := $(shell find protos/shop -name '*.proto' | sort)
PROTO_REL := $(patsubst protos/%,%,$(PROTO_FILES))
DESCRIPTOR := protos/gen/shop_api.binpb
# The OpenAPI 3 document of the JSON API (gnostic's protoc-gen-openapi on the
# google.api.http rules, finished by tools/openapi.py); the edge serves it.
OPENAPI := protos/gen/openapi.json
OPENAPI_OPT := naming=json,fq_schema_naming=true,default_response=true,enum_type=string,version=v1,title=The shop JSON API
# Third-party protos: googleapis from googleapis-common-protos, the
# well-known types from grpcio-tools. Both are pinned in requirements-dev.txt.
SITE := $(VENV)/lib/python3.11/site-packages
PROTOC := $(PY) -m grpc_tools.protoc -Iprotos -I$(SITE) -I$(SITE)/grpc_tools/_proto
# google.rpc.Status and its details travel in grpc-status-details-bin: the
# Node stubs need them, and so does the descriptor set (Envoy's transcoder
# turns an error's details into JSON, which needs their types).
STATUS_PROTOS := google/rpc/status.proto google/rpc/error_details.proto
# protoc-gen-es writes only the files it is given, and the shop's generated
# files import these (well-known types come with @bufbuild/protobuf).
WEB_DEP_PROTOS := google/type/money.proto google/api/annotations.proto google/api/http.proto
CHROMIUM := /usr/bin/chromium

##@ Help

.PHONY: help
help: ## Show this list of targets
	@awk 'BEGIN {FS = ":.*## "} /^##@/ {printf "\n%s\n", substr($$0, 5)} /^[a-zA-Z_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

##@ Contracts

# buf's workspace (buf.yaml) reads the googleapis protos from a local module:
# a copy of those in the pinned googleapis-common-protos.
GOOGLEAPIS := protos/gen/googleapis/google/api/annotations.proto

.PHONY: protos
protos: $(STAMPS)/py-package ## Lint the protos; generate Python, Go, Node and browser stubs, the descriptor set and the OpenAPI document

.PHONY: lint-protos
lint-protos: $(STAMPS)/buf $(DESCRIPTOR) $(GOOGLEAPIS) ## Run buf lint and buf format on the protos
	$(BUF) format -d --exit-code protos --path protos/shop
	$(BUF) lint $(DESCRIPTOR) --path shop

BREAKING_AGAINST ?= main
.PHONY: breaking
breaking: $(STAMPS)/buf $(DESCRIPTOR) $(GOOGLEAPIS) ## Check the protos for breaking changes against BREAKING_AGAINST (default main)
	@rm -rf $(TMP)/against && mkdir -p $(TMP)/against
	@if ! git cat-file -e '$(BREAKING_AGAINST):protos/shop' 2>/dev/null; then \
	  echo "breaking: $(BREAKING_AGAINST) has no protos/shop yet; nothing to compare"; exit 0; fi; \
	git archive '$(BREAKING_AGAINST)' protos/shop | tar -x -C $(TMP)/against; \
	files=$$(cd $(TMP)/against/protos && find shop -name '*.proto' | sort); \
	$(PY) -m grpc_tools.protoc -I$(TMP)/against/protos -I$(SITE) -I$(SITE)/grpc_tools/_proto \
	  --include_imports --include_source_info --descriptor_set_out=$(TMP)/against/api.binpb $$files; \
	$(BUF) breaking $(DESCRIPTOR) --against $(TMP)/against/api.binpb --path shop; \
	echo "breaking: no breaking change against $(BREAKING_AGAINST)"

$(GOOGLEAPIS): $(STAMPS)/venv
	rm -rf protos/gen/googleapis
	for dir in api rpc type; do mkdir -p protos/gen/googleapis/google/$$dir && cp $(SITE)/google/$$dir/*.proto protos/gen/googleapis/google/$$dir/; done

$(DESCRIPTOR): $(PROTO_FILES) $(STAMPS)/venv
	@mkdir -p $(dir $@)
	$(PROTOC) --include_imports --include_source_info --descriptor_set_out=$@ $(PROTO_REL) $(STATUS_PROTOS)

$(STAMPS)/protos: $(PROTO_FILES) buf.yaml $(DESCRIPTOR) $(GOOGLEAPIS) tools/openapi.py $(STAMPS)/venv $(STAMPS)/go-tools $(STAMPS)/buf $(STAMPS)/node-deps $(STAMPS)/web-deps
	$(BUF) format -d --exit-code protos --path protos/shop
	$(BUF) lint $(DESCRIPTOR) --path shop
	rm -rf python_services/gen go_service/gen/shop node_service/gen web/gen
	mkdir -p python_services/gen go_service/gen node_service/gen web/gen
	$(PROTOC) --python_out=python_services/gen --grpc_python_out=python_services/gen \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=python_services/gen \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=python_services/gen \
	  $(PROTO_REL)
	find python_services/gen/shop -type d -exec touch {}/__init__.py \;
	touch python_services/gen/shop/py.typed
	$(PROTOC) --plugin=protoc-gen-go=$(BIN)/protoc-gen-go --go_out=go_service/gen --go_opt=paths=source_relative \
	  --plugin=protoc-gen-go-grpc=$(BIN)/protoc-gen-go-grpc --go-grpc_out=go_service/gen --go-grpc_opt=paths=source_relative \
	  $(PROTO_REL)
	$(PROTOC) --plugin=protoc-gen-ts_proto=node_service/node_modules/.bin/protoc-gen-ts_proto \
	  --ts_proto_out=node_service/gen \
	  --ts_proto_opt=outputServices=grpc-js,env=node,esModuleInterop=true,importSuffix=.js,useOptionals=messages,oneof=unions-value,useDate=false \
	  $(PROTO_REL) $(STATUS_PROTOS)
	$(PROTOC) --plugin=protoc-gen-es=web/node_modules/.bin/protoc-gen-es \
	  --es_out=web/gen --es_opt=target=ts,import_extension=js \
	  $(PROTO_REL) $(STATUS_PROTOS) $(WEB_DEP_PROTOS)
	$(PROTOC) --plugin=protoc-gen-openapi=$(BIN)/protoc-gen-openapi --openapi_out=protos/gen \
	  --openapi_opt='$(OPENAPI_OPT)' $(PROTO_REL)
	$(PY) tools/openapi.py protos/gen/openapi.yaml $(OPENAPI)
	@mkdir -p $(dir $@) && touch $@

##@ Client packages (clients/README.md)

.PHONY: clients
clients: $(STAMPS)/clients ## Generate the client packages: Python (clients/python), npm (clients/npm); Go is go_service/gen

$(STAMPS)/clients: $(STAMPS)/protos buf.gen.yaml clients/package.json clients/package-lock.json clients/python/pyproject.toml
	cd clients && npm ci --no-audit --no-fund --loglevel=error
	rm -rf clients/python/gen clients/npm/gen
	mkdir -p clients/python/gen
	$(PROTOC) --python_out=clients/python/gen --grpc_python_out=clients/python/gen \
	  --plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy --mypy_out=clients/python/gen \
	  --plugin=protoc-gen-mypy_grpc=$(VENV)/bin/protoc-gen-mypy_grpc --mypy_grpc_out=clients/python/gen \
	  $(PROTO_REL)
	find clients/python/gen/shop -type d -exec touch {}/__init__.py \;
	touch clients/python/gen/shop/py.typed
	$(BUF) generate
	@touch $@

##@ The local stack (no Docker: supervisord runs the services and Envoy)

STACK := PYTHONPATH=$(ROOT)/deploy $(PY) -m shopstack
INVENTORY ?=
SERVICE ?=
FOLLOW ?=

.PHONY: build
build: $(STAMPS)/py-package ## Build every service implementation
	cd go_service && for cmd in $$(ls cmd); do go build -o $(BIN)/shop-$$cmd ./cmd/$$cmd; done
	cd node_service && npm run --silent build
	cd web && npm run --silent build

# The arguments of up, swap and canary are checked first, with the machine's
# python3 (nothing else is installed on a fresh clone), so a misspelt name
# fails at once, listing the valid ones, before anything is built.
CHECK := PYTHONPATH=$(ROOT)/deploy python3 -m shopstack.check

.PHONY: up
up: ## Start the whole stack, Zipkin and Prometheus in the background and wait until healthy (INVENTORY=node|go|python); on a running stack, restart what changed
	@$(CHECK) up '$(INVENTORY)'
	@$(MAKE) build $(BIN)/grpcurl telemetry-tools
	@$(STACK) up $(if $(INVENTORY),--inventory $(INVENTORY))

.PHONY: down
down: ## Stop every process of the stack (the data stays)
	@if [ -x $(PY) ]; then $(STACK) down; else echo "the stack is not running"; fi

.PHONY: status
status: $(STAMPS)/py-package ## Show processes, health checks and Envoy's clusters
	@$(STACK) status

.PHONY: logs
logs: $(STAMPS)/py-package ## Show the last log lines of every program (SERVICE=orders, FOLLOW=1)
	@$(STACK) logs $(SERVICE) $(if $(FOLLOW),--follow)

IMPL ?=
WEIGHT ?=

.PHONY: swap
swap: ## Replace a running service's implementation live (SERVICE=inventory IMPL=go)
	@$(CHECK) swap '$(SERVICE)' '$(IMPL)'
	@$(MAKE) build
	@$(STACK) swap '$(SERVICE)' '$(IMPL)'

.PHONY: canary
canary: ## Split a service's traffic to another implementation (SERVICE=inventory IMPL=go WEIGHT=10)
	@$(CHECK) canary '$(SERVICE)' '$(IMPL)' '$(WEIGHT)'
	@$(MAKE) build
	@$(STACK) canary '$(SERVICE)' '$(IMPL)' '$(WEIGHT)'

.PHONY: demo
demo: $(STAMPS)/py-package $(BIN)/grpcurl ## A scripted tour of the running stack: each command and its answer
	@$(STACK) demo

.PHONY: certs
certs: $(STAMPS)/venv ## Issue (rotate) the local CA's certificates and the token signing key into .run/certs
	@$(STACK) certs

CUSTOMER ?=
SCOPE ?=

.PHONY: token
token: $(STAMPS)/venv ## Print a customer token from the local issuer (CUSTOMER=ada, SCOPE=shop.operator for an operator)
	@if [ -z '$(CUSTOMER)' ]; then echo "usage: make token CUSTOMER=<customer id> [SCOPE=shop.operator]" >&2; exit 2; fi
	@$(STACK) token '$(CUSTOMER)' $(if $(SCOPE),--scope '$(SCOPE)')

.PHONY: clean-data
clean-data: $(STAMPS)/py-package ## Delete the stack's databases (the stack must be down)
	@$(STACK) clean-data

.PHONY: render-examples
render-examples: $(STAMPS)/py-package ## Re-render the committed default configuration (envoy/local/, deploy/local/) after changing its generator
	@$(STACK) render-examples

##@ Containers (Docker Compose; podman where no Docker daemon answers)

# BASES=auto builds on the public base images when a registry answers and on
# locally built ones (debootstrap, deploy/containers/base.Dockerfile) when
# none does; BASES=public or BASES=local forces one.
BASES ?= auto

.PHONY: docker-config
docker-config: $(STAMPS)/py-package $(STAMPS)/buf ## Render Envoy's Docker Compose configuration into envoy/gen/docker (and the certificates)
	cd web && npm run --silent build
	@$(STACK) certs --if-missing
	@$(STACK) containers certs
	@$(STACK) render-docker envoy/gen/docker
	cp $(DESCRIPTOR) $(OPENAPI) envoy/gen/docker/
	mkdir -p envoy/gen/docker/docs
	cp tools/node_modules/swagger-ui-dist/swagger-ui-bundle.js tools/node_modules/swagger-ui-dist/swagger-ui.css envoy/gen/docker/docs/
	rm -rf envoy/gen/docker/web && cp -r web/dist envoy/gen/docker/web

# A Docker daemon with its compose plugin is used as it is; otherwise podman,
# runc and debootstrap come from Debian and podman-compose from PyPI.
$(STAMPS)/container-tools: deploy/containers/requirements.txt $(STAMPS)/venv
	@if docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then \
	  echo "containers: using the Docker daemon"; \
	else \
	  missing=""; for tool in podman runc debootstrap; do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "containers: no Docker daemon answers; installing$$missing from Debian"; \
	    apt-get -o DPkg::Lock::Timeout=900 update -qq && \
	    apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends podman runc debootstrap; \
	  fi; \
	fi
	$(PY) -m pip install --quiet --disable-pip-version-check -r deploy/containers/requirements.txt
	@mkdir -p $(dir $@) && touch $@

.PHONY: docker-build
docker-build: docker-config $(STAMPS)/container-tools ## Build every image locally (BASES=auto|public|local)
	@$(STACK) containers build --bases $(BASES)

.PHONY: docker-up
docker-up: docker-build ## Build the images and start the stack with Docker Compose, then wait until healthy
	@$(STACK) containers up

.PHONY: docker-down
docker-down: $(STAMPS)/py-package ## Stop the Docker Compose stack (named volumes keep the data)
	@$(STACK) containers down

.PHONY: test-containers
test-containers: docker-config $(STAMPS)/container-tools $(BIN)/grpc-health-probe ## Build the images, start a private compose project, run the contract and e2e suites through its Envoy, tear down
	@$(STACK) containers test --bases $(BASES)

##@ Several hosts on one machine (deploy/hosts.toml; network namespaces, root)

# Not in `make test` (four to seven minutes, needs root); .ci/run calls it after make test.
# SUITE=tests/hosts runs one suite instead of all of them (contract, e2e,
# swap, hosts); PYTEST_ARGS are handed to pytest.
SUITE ?=
PYTEST_ARGS ?=

.PHONY: test-hosts
test-hosts: build $(BIN)/grpcurl $(BIN)/grpc-health-probe ## Every program on a host (network namespace) of its own: the contract, e2e and swap suites, then cut links
	@$(STACK) hosts test $(if $(SUITE),--suite $(SUITE)) -- $(PYTEST_ARGS)

##@ Kubernetes (deploy/k8s: a kustomize base and a canary overlay)

.PHONY: k8s-manifests
k8s-manifests: $(STAMPS)/py-package ## Regenerate deploy/k8s from deploy/stack.toml and the protos
	@$(STACK) k8s-manifests deploy/k8s

# kustomize's secretGenerator makes each identity's Secret from these files,
# which git ignores (keys are never committed): run it before `kubectl apply -k`.
.PHONY: k8s-secrets
k8s-secrets: $(STAMPS)/py-package ## Copy the certificates of `make certs` into deploy/k8s/base/certs for the Secrets
	@$(STACK) certs --if-missing
	@$(STACK) k8s-secrets deploy/k8s/base/certs

# kube-apiserver from the Go module proxy through a wrapper module (see
# tools/kube-apiserver/go.mod): about 6.5 minutes and 3 GB of memory, once.
$(BIN)/kube-apiserver: tools/kube-apiserver/go.mod tools/kube-apiserver/go.sum
	cd tools/kube-apiserver && nice -n 10 go build -trimpath -ldflags="-s -w" -o $@ k8s.io/kubernetes/cmd/kube-apiserver

$(STAMPS)/k8s-tools: tools/kube-apiserver/requirements.txt $(STAMPS)/venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r tools/kube-apiserver/requirements.txt
	@mkdir -p $(dir $@) && touch $@

.PHONY: k8s-check
k8s-check: k8s-secrets $(STAMPS)/k8s-tools $(BIN)/kube-apiserver ## deploy/k8s through a real kube-apiserver (kubectl apply --dry-run=server)
	$(VENV)/bin/pytest -q tests/k8s_server --kube-apiserver=$(BIN)/kube-apiserver

##@ Benchmarks

# Not part of `make test`: figures from a shared two-core machine are not a
# pass/fail signal. ghz is pinned, like every Go tool, in tools/go.mod.
QUICK ?=
BENCH_ARGS ?=
GHZ := $(BIN)/ghz
# The bench's bare grpc-go server (bench/floor/go), on go_service's module versions.
FLOOR_GO := $(BIN)/floor-go

$(FLOOR_GO): bench/floor/go/main.go bench/floor/go/go.mod bench/floor/go/go.sum go_service/go.mod go_service/go.sum
	cd bench/floor/go && go build -o $@ .

.PHONY: bench
bench: build telemetry-tools $(GHZ) $(FLOOR_GO) ## Measure each language against its floor and the Envoy hop (QUICK=1 for a one-minute run); writes results/<time>/report.md
	PYTHONPATH=$(ROOT)/deploy:$(ROOT) $(PY) -m bench $(if $(QUICK),--quick) $(BENCH_ARGS)

SCENARIO ?=

# The arguments are checked first, with the machine's python3, so a misspelt
# name fails at once with the valid ones, before anything is built.
.PHONY: profile
profile: ## Profile one service under one bench scenario and say where the flame graph is: SERVICE=inventory-node SCENARIO=unary
	@PYTHONPATH=$(ROOT)/deploy:$(ROOT) python3 -m bench.profile --check '$(SERVICE)' '$(SCENARIO)'
	@$(MAKE) build telemetry-tools $(GHZ)
	PYTHONPATH=$(ROOT)/deploy:$(ROOT) $(PY) -m bench.profile '$(SERVICE)' '$(SCENARIO)'

.PHONY: bench-envoy
bench-envoy: build telemetry-tools $(GHZ) $(FLOOR_GO) ## What each filter, the access log and tracing cost Envoy per request, against the bare hop (envoy/README.md)
	PYTHONPATH=$(ROOT)/deploy:$(ROOT) $(PY) -m bench.envoy_filters $(BENCH_ARGS)

.PHONY: bench-replicas
bench-replicas: build $(GHZ) ## Two catalog replicas behind Envoy against one: throughput and CPU (docs/scaling.md)
	PYTHONPATH=$(ROOT)/deploy:$(ROOT) $(PY) -m bench.replicas $(BENCH_ARGS)

##@ Reliability

.PHONY: chaos
chaos: $(STAMPS)/py-package $(BIN)/grpc-health-probe ## Restart each program and abuse the edge of the running `make up` stack under load; prints the outcome table
	@if [ ! -f $(ROOT)/.run/supervisord.pid ]; then echo "chaos: start the stack first (make up)"; exit 1; fi
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/faults/test_restarts.py tests/abuse --running-stack $(ROOT)/.run

##@ Load (Locust drives a shop's traffic through the local edge; load/README.md)

USERS ?= 20
SPAWN_RATE ?= 5
DURATION ?= 10m
HEADLESS ?=
WEB_PORT ?=
MIX ?=
ALLOW_REMOTE ?=
LOAD_ARGS ?=
# HOST only from the command line: many shells export a HOST of their own.
LOAD_HOST := $(if $(filter command line,$(origin HOST)),$(HOST))

.PHONY: load
load: $(STAMPS)/py-package ## Shop traffic through the edge with Locust's web UI (USERS=20 SPAWN_RATE=5 DURATION=10m HEADLESS=1 HOST=127.0.0.1:8080 MIX=...)
	@PYTHONPATH=$(ROOT)/deploy:$(ROOT) $(PY) -m load --users $(USERS) --spawn-rate $(SPAWN_RATE) --duration $(DURATION) \
	  $(if $(HEADLESS),--headless) $(if $(LOAD_HOST),--host $(LOAD_HOST)) $(if $(WEB_PORT),--web-port $(WEB_PORT)) \
	  $(if $(MIX),--mix $(MIX)) $(if $(ALLOW_REMOTE),--allow-remote-target) $(LOAD_ARGS)

##@ Tests

.PHONY: test
test: ## Run every test: each language's own (in parallel, output kept per target), then the cross-language suites
	@$(MAKE) --jobs=3 --output-sync=target test-protos test-go test-node test-web test-python
	@$(MAKE) test-cross

.PHONY: test-protos
test-protos: lint-protos breaking ## Lint the protos and check them for breaking changes

.PHONY: test-go
test-go: $(STAMPS)/protos ## gofmt, go vet and go test -race in go_service
	@unformatted="$$(cd go_service && gofmt -l .)"; if [ -n "$$unformatted" ]; then echo "gofmt would change (run gofmt -w):"; echo "$$unformatted"; exit 1; fi
	cd go_service && go vet ./... && go test -race -count=1 ./...

.PHONY: test-node
test-node: $(STAMPS)/protos ## Type-check, lint and test node_service
	cd node_service && npm run --silent typecheck && npm run --silent lint && npm test

.PHONY: test-web
test-web: $(STAMPS)/protos ## Type-check and unit-test the storefront (web/)
	cd web && npm run --silent typecheck && npm test

.PHONY: test-python
test-python: $(STAMPS)/py-package ## ruff, mypy and pytest in python_services
	$(VENV)/bin/ruff check python_services deploy tests load tools/openapi.py
	$(VENV)/bin/ruff format --check python_services deploy tests load tools/openapi.py
	cd python_services && $(VENV)/bin/mypy
	cd python_services && $(VENV)/bin/pytest -q

.PHONY: test-cross
test-cross: build chromium telemetry-tools $(BIN)/grpcurl $(BIN)/grpc-health-probe ## The cross-language suites in tests/ (the storefront's in a real browser; but tests/clients: make test-clients)
	$(VENV)/bin/pytest -q tests --ignore=tests/clients

# Not in `make test` (about a minute and a half: a stack, a virtualenv, a Go
# build, an npm install); .ci/run calls it after `make test`.
.PHONY: test-clients
test-clients: build clients ## Build a tiny client per language against each client package and call a stack with it
	$(VENV)/bin/pytest -q tests/clients

##@ Setup

# The Python package is installed after generating: the editable install maps
# the top-level packages it finds (shop_services in src/, shop in gen/).
$(STAMPS)/py-package: $(STAMPS)/protos python_services/pyproject.toml
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e python_services
	@touch $@

$(STAMPS)/venv: requirements-dev.txt python_services/requirements.lock
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@mkdir -p $(dir $@) && touch $@

$(STAMPS)/go-tools: tools/go.mod tools/go.sum
	cd tools && GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go google.golang.org/grpc/cmd/protoc-gen-go-grpc \
	  github.com/google/gnostic/cmd/protoc-gen-openapi
	@mkdir -p $(dir $@) && touch $@

$(BIN)/grpcurl: tools/go.mod tools/go.sum
	cd tools && GOBIN=$(BIN) go install github.com/fullstorydev/grpcurl/cmd/grpcurl

# Relative aliases, so `make .tmp/bin/grpcurl` works too.
.tmp/bin/grpcurl: $(BIN)/grpcurl
.tmp/bin/ghz: $(BIN)/ghz
.tmp/bin/grpc-health-probe: $(BIN)/grpc-health-probe

# The tests check the edge's health the way an orchestrator would.
$(BIN)/grpc-health-probe: tools/go.mod tools/go.sum
	cd tools && GOBIN=$(BIN) go install github.com/grpc-ecosystem/grpc-health-probe

$(BIN)/ghz: tools/go.mod tools/go.sum
	cd tools && GOBIN=$(BIN) go install github.com/bojand/ghz/cmd/ghz

$(STAMPS)/buf: tools/package.json tools/package-lock.json
	cd tools && npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p $(dir $@) && touch $@

$(STAMPS)/node-deps: node_service/package.json node_service/package-lock.json
	cd node_service && npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p $(dir $@) && touch $@

$(STAMPS)/web-deps: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p $(dir $@) && touch $@

# The browser tests drive Debian's chromium with playwright-core (no browser
# downloads); CI starts from a fresh machine, so install it when missing.
.PHONY: chromium
chromium: ## Install Debian's chromium for the storefront's browser tests, if missing
	@if [ ! -x $(CHROMIUM) ]; then \
	  apt-get -o DPkg::Lock::Timeout=900 update -qq && apt-get -o DPkg::Lock::Timeout=900 install -y -qq chromium; fi

# The telemetry backends (docs/observability.md). Zipkin's server is the exec
# jar from Maven Central, fetched by Maven and checked against its pinned
# SHA-256; it runs on the machine's Java 17. Prometheus is Debian's package,
# pinned to the version the machine's release serves. Both are installed
# only when missing (apt-get needs root, as on CI).
ZIPKIN_VERSION := 3.5.1
ZIPKIN_SHA256 := 7ac633a6832647e71e50012a5e3e91fbc7054414955261724526030faf271d8d
ZIPKIN_JAR := $(TMP)/zipkin/zipkin-server-exec.jar
PROMETHEUS_DEB := prometheus=2.42.0+ds-5+deb12u1
APT_GET := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900

.PHONY: telemetry-tools
telemetry-tools: $(STAMPS)/zipkin-$(ZIPKIN_VERSION) $(STAMPS)/prometheus ## Install Zipkin's server (Maven Central) and Prometheus (Debian)

$(STAMPS)/zipkin-$(ZIPKIN_VERSION):
	@command -v java >/dev/null && command -v mvn >/dev/null || { $(APT_GET) update -qq && $(APT_GET) install -y -qq default-jre-headless maven; }
	@rm -rf $(TMP)/zipkin && mkdir -p $(TMP)/zipkin
	mvn -q -B dependency:copy -Dartifact=io.zipkin:zipkin-server:$(ZIPKIN_VERSION):jar:exec -DoutputDirectory=$(TMP)/zipkin
	echo "$(ZIPKIN_SHA256)  $(TMP)/zipkin/zipkin-server-$(ZIPKIN_VERSION)-exec.jar" | sha256sum --check --quiet
	mv $(TMP)/zipkin/zipkin-server-$(ZIPKIN_VERSION)-exec.jar $(ZIPKIN_JAR)
	@mkdir -p $(dir $@) && touch $@

$(STAMPS)/prometheus:
	@if ! dpkg-query -W -f='$${Status}' prometheus 2>/dev/null | grep -q 'install ok installed'; then \
	  $(APT_GET) update -qq && $(APT_GET) install -y -qq --no-install-recommends $(PROMETHEUS_DEB); fi
	@test -x /usr/bin/prometheus && test -x /usr/bin/promtool
	@mkdir -p $(dir $@) && touch $@

.PHONY: tools
tools: $(STAMPS)/venv $(STAMPS)/go-tools $(STAMPS)/buf $(STAMPS)/node-deps $(STAMPS)/web-deps $(BIN)/grpcurl $(BIN)/grpc-health-probe chromium telemetry-tools ## Install every pinned tool

.PHONY: clean
clean: ## Remove generated code, tools and build output (keeps the run directory)
	rm -rf $(TMP) python_services/gen go_service/gen/shop node_service/gen node_service/dist protos/gen \
	  clients/python/gen clients/npm/gen web/gen web/dist web/.build
