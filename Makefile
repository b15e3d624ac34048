# toolgate developer commands. `make test` is the one CI runs.
SHELL := bash
.SHELLFLAGS := -o pipefail -c

FUZZTIME ?= 20s
FUZZPKGS ?= ./...
FUZZ ?=
SOAK_DURATION ?= 10m
SOAK_CLIENTS ?= 50
SOAK_TIMEOUT ?= 45m

.PHONY: run test test-long bench build install fuzz soak

# Start the gateway (with no config: the built-in demo). Extra flags: make run ARGS="-c toolgate.json"
run:
	go run ./cmd/toolgate serve $(ARGS)

# npm packages for end-to-end tests, go vet, go test, the race detector
# (see scripts/test.sh). What CI runs.
test:
	bash scripts/test.sh

# The long and timing-dependent checks: the full soak, fuzzing, every
# benchmark once (see scripts/test-long.sh).
test-long:
	bash scripts/test-long.sh

# Every Go benchmark of the module (hot paths in their packages, the
# end-to-end figures in benchmarks/), 6 runs each, into bench.txt for benchstat.
bench:
	go test -run='^$$' -bench=. -benchmem -count=6 ./... | tee bench.txt

# The version and commit `toolgate version` reports, from git (scripts/ldflags.sh).
GO_LDFLAGS = $(shell bash scripts/ldflags.sh)

build:
	go build -ldflags "$(GO_LDFLAGS)" -o bin/toolgate ./cmd/toolgate

# Install the binary into $(go env GOBIN), else $(go env GOPATH)/bin.
install:
	go install -ldflags "$(GO_LDFLAGS)" ./cmd/toolgate

# Run every Fuzz target in FUZZPKGS for FUZZTIME each, or only those whose
# name matches FUZZ (make fuzz FUZZTIME=10m FUZZPKGS=./gateway/... FUZZ=FuzzMessage).
fuzz:
	FUZZTIME=$(FUZZTIME) FUZZ=$(FUZZ) bash scripts/fuzz.sh $(FUZZPKGS)

# Soak-and-chaos test: a real gateway, SOAK_CLIENTS clients and injected faults
# for SOAK_DURATION (make soak SOAK_DURATION=30m SOAK_CLIENTS=100 SOAK_TIMEOUT=90m;
# SOAK_SEED=N replays the random choices of an earlier run). `make test` runs a
# 20-second seeded smoke, `make test-long` 2 minutes.
soak:
	SOAK_DURATION=$(SOAK_DURATION) SOAK_CLIENTS=$(SOAK_CLIENTS) go test ./soak -run TestSoak -v -count=1 -timeout $(SOAK_TIMEOUT)
