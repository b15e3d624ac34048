#!/usr/bin/env bash
# The test command for toolgate (what `make test` and CI run):
#   1. installs the pinned npm packages of e2e/npm (real MCP servers and
#      clients for end-to-end tests) when node_modules is missing or was
#      installed from another package-lock.json,
#   2. go vet, and go build and go vet for macOS and Windows (GOOS=darwin,
#      GOOS=windows): the binary builds for the three,
#   3. go test -count=1 -timeout 20m,
#   4. go test -race for the packages with concurrency (RACE_PKGS: the
#      sandbox engine and pool, the rate limiter, audit writer and alerter
#      in policy, the upstream supervisor and HTTP layer in gateway, the
#      serve lifecycle in internal/cli),
#   5. every fuzz target for FUZZTIME each (scripts/fuzz.sh; default 10s).
#
# Usage: scripts/test.sh [packages...] [go test flags...]
# Arguments that look like package patterns (starting with "." or
# "github.com/toolgate/") select the packages for vet and test instead of
# ./...; every other argument is passed to go test only, e.g.
#   scripts/test.sh ./internal/e2etest/... -run=TestServerEverything -v
# Steps 4 and 5 cover the selected packages, and only run when no go test
# flags are given (a run narrowed with -run is a developer's quick check).
# RACE=0 skips step 4, FUZZTIME=0 skips step 5.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

for tool in go node npm; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "scripts/test.sh: $tool is not on PATH" >&2
		exit 1
	fi
done

npm_dir="$repo/e2e/npm"
# node_modules is (re)installed when it was installed from another lock
# file: the stamp holds the lock file's SHA-256 (contents, not times, so a
# fresh checkout of the same lock file does not reinstall).
stamp="$npm_dir/node_modules/.toolgate-lock.sha256"
want="$(sha256sum "$npm_dir/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
	echo "scripts/test.sh: installing npm packages (npm ci in e2e/npm)" >&2
	(cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	echo "$want" >"$stamp"
fi
export TOOLGATE_NPM_DIR="$npm_dir/node_modules"

pkgs=()
flags=()
for arg in "$@"; do
	case "$arg" in
	.* | github.com/toolgate/*) pkgs+=("$arg") ;;
	*) flags+=("$arg") ;;
	esac
done
if [ "${#pkgs[@]}" -eq 0 ]; then
	pkgs=(./...)
fi

go vet "${pkgs[@]}"
# The binary is built for Linux, macOS and Windows. policy's tests are
# left out of the Windows vet: one of them kills its own process with
# syscall.Kill, which Windows lacks (policy itself is built).
GOOS=darwin go build "${pkgs[@]}"
GOOS=darwin go vet "${pkgs[@]}"
GOOS=windows go build "${pkgs[@]}"
win_vet="$(GOOS=windows go list "${pkgs[@]}" | grep -v '^github.com/toolgate/toolgate/policy$' || true)"
if [ -n "$win_vet" ]; then
	# shellcheck disable=SC2086 # one word per package
	GOOS=windows go vet $win_vet
fi
go test -count=1 -timeout 20m ${flags[@]+"${flags[@]}"} "${pkgs[@]}"

if [ "${#flags[@]}" -gt 0 ]; then
	exit 0
fi

# The packages with concurrency of their own. The race detector makes
# their tests 2-5 times slower: about 25 s in all on an idle 2-core
# machine, the sandbox's wazero guests included, so all of their tests run.
race_pkgs="${RACE_PKGS:-./policy/... ./gateway/... ./sandbox/... ./internal/cli/...}"
if [ "${RACE:-1}" != "0" ]; then
	# shellcheck disable=SC2086 # RACE_PKGS is a list of patterns
	selected="$(comm -12 <(go list "${pkgs[@]}" | sort) <(go list $race_pkgs | sort))"
	if [ -n "$selected" ]; then
		echo "scripts/test.sh: go test -race" $selected >&2
		# shellcheck disable=SC2086
		go test -race -count=1 -timeout 20m $selected
	fi
fi

bash "$repo/scripts/fuzz.sh" "${pkgs[@]}"
