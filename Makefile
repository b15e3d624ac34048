# toolgate developer commands. `make test` is the one CI runs.
SHELL := bash
.SHELLFLAGS := -o pipefail -c

FUZZTIME ?= 20s
FUZZPKGS ?= ./...
FUZZ ?=

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

# Run every Fuzz target in FUZZPKGS for FUZZTIME each, or only those whose
# name matches FUZZ (make fuzz FUZZTIME=10m FUZZPKGS=./gateway/... FUZZ=FuzzMessage).
fuzz:
	FUZZTIME=$(FUZZTIME) FUZZ=$(FUZZ) bash scripts/fuzz.sh $(FUZZPKGS)
