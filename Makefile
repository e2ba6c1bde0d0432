# kv-router: `make run` starts the router on the embedded default; `make test` runs every test.
BLOCK_SIZE ?= 64
GRPC_PORT ?= 50051
METRICS_PORT ?= 9090
# More router flags for `make run`, e.g. ARGS="--router-temperature 0.1".
ARGS ?=
TESTS := $(wildcard test/*.test.ts)
SOURCES := $(shell find src gen -name '*.ts')

.PHONY: soak install deps build run test generate lint-proto check-generated check-breaking check-layers bench bench-smoke clean

node_modules: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch node_modules

install: node_modules

# The Debian packages the tests need (listed in scripts/debian-packages.txt): installs the missing ones.
deps:
	@scripts/deps.sh

# Compiles only when a source changed (and then incrementally: tsconfig.json's tsBuildInfoFile).
build: dist/.built

dist/.built: tsconfig.json $(SOURCES) | node_modules
	node_modules/.bin/tsc -p tsconfig.json
	@touch $@

run: build
	node dist/src/cli/main.js --block-size $(BLOCK_SIZE) --grpc-port $(GRPC_PORT) --metrics-port $(METRICS_PORT) $(ARGS)

generate: node_modules
	npx buf generate

lint-proto: node_modules
	npx buf lint

# Fails when gen/ is not what `buf generate` makes from proto/.
check-generated: node_modules
	@tmp=$$(mktemp -d) && cp -r gen "$$tmp/gen" && npx buf generate && \
	  if ! diff -r "$$tmp/gen" gen >/dev/null; then echo "gen/ is stale: run 'make generate' and commit it"; diff -r "$$tmp/gen" gen | head -20; rm -rf "$$tmp"; exit 1; fi; \
	  rm -rf "$$tmp"; echo "gen/ is up to date"

# Fails when proto/ breaks wire compatibility with the previous commit on main.
check-breaking: node_modules
	@if git rev-parse -q --verify HEAD~1 >/dev/null; then npx buf breaking --against '.git#ref=HEAD~1' && echo "proto/ is wire-compatible with HEAD~1"; \
	  else echo "check-breaking: no previous commit in this clone; skipped"; fi

# Fails on an import that runs up a layer, or on files or folders importing each other in a
# loop (the layers and rules: .dependency-cruiser.cjs; the layout: docs/ARCHITECTURE.md).
check-layers: node_modules
	npx depcruise src gen --config .dependency-cruiser.cjs --output-type err

# Benchmarks run in their short mode first (they fail only on errors, never on timings),
# so the test runner's summary stays the last thing printed.
test: deps node_modules lint-proto check-generated check-breaking check-layers
	npx tsc -p tsconfig.check.json
	$(MAKE) --no-print-directory bench-smoke
	KV_ROUTER_LOG=$${KV_ROUTER_LOG:-error} node --import tsx --test --test-concurrency=1 $(TESTS)

# Index + end-to-end benchmarks; prints a table and writes bench/results.json (never fails on timings).
bench: node_modules
	KV_ROUTER_LOG=$${KV_ROUTER_LOG:-error} node --expose-gc --import tsx bench/run.ts
	KV_ROUTER_LOG=$${KV_ROUTER_LOG:-error} node --import tsx bench/natsRecovery.bench.ts
	KV_ROUTER_LOG=$${KV_ROUTER_LOG:-error} node --import tsx bench/gateway.bench.ts
	KV_ROUTER_LOG=$${KV_ROUTER_LOG:-error} node --import tsx bench/tracing.bench.ts

bench-smoke: node_modules
	BENCH_SMOKE=1 KV_ROUTER_LOG=$${KV_ROUTER_LOG:-error} node --expose-gc --import tsx bench/run.ts
	BENCH_SMOKE=1 KV_ROUTER_LOG=$${KV_ROUTER_LOG:-error} node --import tsx bench/natsRecovery.bench.ts
	BENCH_SMOKE=1 KV_ROUTER_LOG=$${KV_ROUTER_LOG:-error} node --import tsx bench/gateway.bench.ts
	BENCH_SMOKE=1 KV_ROUTER_LOG=$${KV_ROUTER_LOG:-error} node --import tsx bench/tracing.bench.ts

# The long soaks, normal and hostile (their 6-second variants run in `make test`).
soak: node_modules
	SOAK_SECONDS=$${SOAK_SECONDS:-60} node --import tsx --test --test-concurrency=1 test/soak.test.ts test/soak.hostile.test.ts

clean:
	rm -rf dist
