# toolgate developer commands. `make test` is the one CI runs.
SHELL := bash
.SHELLFLAGS := -o pipefail -c

FUZZTIME ?= 20s
FUZZPKGS ?= ./...

.PHONY: run test bench build fuzz

# Start the gateway (with no config: the built-in demo). Extra flags: make run ARGS="-c toolgate.json"
run:
	go run ./cmd/toolgate serve $(ARGS)

# npm packages for end-to-end tests, go vet, go test (see scripts/test.sh).
test:
	bash scripts/test.sh

# Benchmarks, 6 runs each, saved to bench.txt for benchstat.
bench:
	go test -run='^$$' -bench=. -benchmem -count=6 ./benchmarks/... | tee bench.txt

build:
	go build -o bin/toolgate ./cmd/toolgate

# Run every Fuzz target in FUZZPKGS for FUZZTIME each (make fuzz FUZZTIME=1m FUZZPKGS=./policy/...).
fuzz:
	@set -euo pipefail; \
	targets=$$(go test -list '^Fuzz' $(FUZZPKGS) | awk '/^Fuzz/ { names[n++] = $$1; next } /^ok/ { for (i = 0; i < n; i++) print $$2, names[i]; n = 0 }'); \
	if [ -z "$$targets" ]; then echo "no Fuzz targets"; exit 0; fi; \
	while read -r pkg name; do \
		echo "== fuzz $$pkg $$name for $(FUZZTIME)"; \
		go test -run='^$$' -fuzz="^$$name\$$" -fuzztime=$(FUZZTIME) "$$pkg" </dev/null; \
	done <<< "$$targets"
