SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --warn-undefined-variables --no-builtin-rules
.DELETE_ON_ERROR:

GO ?= go
# MODULES are the three Go modules of the workspace.
MODULES := ./proto/... ./services/... ./gateway/...
# TEST_FLAGS can add e.g. -run or -v: make test TEST_FLAGS=-v
TEST_FLAGS ?=
# BENCH selects benchmarks: make bench BENCH=BenchmarkStore
BENCH ?= .
# RUN_FLAGS are passed to mcc by make run: make run RUN_FLAGS='-store=redis'
RUN_FLAGS ?=

# The protoc plugins and buf are pinned in proto/tools/tools.mod, apart from
# the workspace, because buf's own dependencies must not decide the versions
# the services run with.
TOOLS_DIR := proto/tools
TOOLS_BIN := $(TOOLS_DIR)/bin
BUF := $(TOOLS_BIN)/buf

# The third-party protos are copied at generation time from these pinned
# modules into proto/third_party, which is git-ignored.
GOOGLEAPIS_MODULE := github.com/grpc-ecosystem/grpc-gateway@v1.16.0
PROTOVALIDATE_MODULE := github.com/bufbuild/protovalidate@v1.2.2
THIRD_PARTY := proto/third_party
# BUF_OWN limits buf format to our own protos.
BUF_OWN := --path proto/mcc

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Run the whole system on the embedded store (REST :8080, gRPC :9090).
	$(GO) run ./services/cmd/mcc -target=all -store=bolt -data-dir=./data $(RUN_FLAGS)

.PHONY: test
test: ## Run every test of the three modules (Redis tests start their own redis-server).
	$(GO) test -race -count=1 -timeout=30m $(TEST_FLAGS) $(MODULES)

.PHONY: test-faults
test-faults: ## Run the fault tests: SIGKILL, SIGTERM, Redis restart and failover, split mode, abusive clients (docs/RELIABILITY.md).
	$(GO) vet -tags faults ./services/internal/faults/
	$(GO) test -tags faults -count=1 -timeout=15m -v $(TEST_FLAGS) ./services/internal/faults/

.PHONY: build
build: ## Build the mcc binary into bin/mcc.
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/mcc ./services/cmd/mcc

.PHONY: bench
bench: ## Run the Go benchmarks (see docs/BENCHMARKS.md).
	$(GO) test -run='^$$' -bench='$(BENCH)' -benchmem -count=1 -timeout=60m ./services/... ./gateway/...

.PHONY: tools
tools: $(TOOLS_BIN)/.stamp ## Build buf and the protoc plugins from proto/tools/tools.mod.

$(TOOLS_BIN)/.stamp: $(TOOLS_DIR)/tools.mod $(TOOLS_DIR)/tools.sum
	cd $(TOOLS_DIR) && GOWORK=off $(GO) build -modfile=tools.mod -o bin/ \
		$$(sed -n '/^tool (/,/^)/{/[()]/!p}' tools.mod)
	touch $@

.PHONY: third-party
third-party: ## Copy google/api and buf/validate protos from pinned Go modules.
	rm -rf $(THIRD_PARTY)
	mkdir -p $(THIRD_PARTY)/google/api $(THIRD_PARTY)/buf/validate
	googleapis=$$(cd $(TOOLS_DIR) && GOWORK=off GOFLAGS=-mod=mod $(GO) mod download -json $(GOOGLEAPIS_MODULE) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	protovalidate=$$(cd $(TOOLS_DIR) && GOWORK=off GOFLAGS=-mod=mod $(GO) mod download -json $(PROTOVALIDATE_MODULE) | sed -n 's/^\t"Dir": "\(.*\)",$$/\1/p'); \
	test -n "$$googleapis" -a -n "$$protovalidate"; \
	install -m 0644 $$googleapis/third_party/googleapis/google/api/{annotations,http}.proto $(THIRD_PARTY)/google/api/; \
	install -m 0644 $$protovalidate/proto/protovalidate/buf/validate/validate.proto $(THIRD_PARTY)/buf/validate/

.PHONY: generate
generate: tools third-party ## Regenerate Go, gRPC, gateway and OpenAPI code from proto/.
	find proto/mcc \( -name '*.pb.go' -o -name '*.pb.gw.go' \) -delete
	$(BUF) format -w $(BUF_OWN)
	$(BUF) generate

.PHONY: check-generate
check-generate: generate ## Fail if generation changes any file under proto/ (compared with the git index).
	@if ! git diff --quiet -- proto || [ -n "$$(git ls-files --others --exclude-standard -- proto)" ]; then \
		git --no-pager diff --stat -- proto; git ls-files --others --exclude-standard -- proto; \
		echo "generated code is stale: run 'make generate' and commit" >&2; exit 1; fi

.PHONY: fmt
fmt: tools ## Format Go (gofmt) and protos (buf format) in place.
	gofmt -w proto services gateway
	$(BUF) format -w $(BUF_OWN)

.PHONY: lint
lint: tools third-party ## Run buf lint, buf format, gofmt and go vet.
	$(BUF) lint
	$(BUF) format --diff --exit-code $(BUF_OWN)
	@out=$$(gofmt -l proto services gateway); if [ -n "$$out" ]; then echo "gofmt needed:" >&2; echo "$$out" >&2; exit 1; fi
	$(GO) vet $(MODULES)

.PHONY: clean
clean: ## Remove build outputs and generated third-party protos (not ./data).
	rm -rf bin $(TOOLS_BIN) $(THIRD_PARTY)
