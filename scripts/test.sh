#!/usr/bin/env bash
# The test command for toolgate (what `make test` and CI run):
#   0. installs redis-server and PostgreSQL from Debian's packages when
#      missing (the tests of the shared stores start their own servers on
#      loopback; internal/servertest),
#   1. installs the pinned npm packages of e2e/npm (real MCP servers and
#      clients for end-to-end tests) when node_modules is missing or was
#      installed from another package-lock.json; the tests themselves never
#      install anything,
#   2. go vet, and go build and go vet for macOS and Windows (GOOS=darwin,
#      GOOS=windows): the binary builds for the three,
#   3. go test -count=1 of every package, in three kinds of runs side by
#      side: the packages with concurrency (RACE_PKGS: the sandbox engine
#      and pool, the rate limiter, audit writer and alerter in policy, the
#      upstream supervisor and HTTP layer in gateway, the token verifier,
#      the serve lifecycle in internal/cli) under the race detector; every
#      other package, with the seed corpus of every fuzz target and a
#      20-second seeded chaos smoke of the soak test (soak/); and the
#      end-to-end tests in E2E_SHARDS processes (default 3),
#   4. the wall-clock bounds of Code Mode's timeout (TOOLGATE_TIMING=strict)
#      in a step of their own, so that other packages' load does not skew
#      them (in step 3 they run with a looser bound).
# The full soak, fuzzing and the benchmarks run in `make test-long`
# (scripts/test-long.sh).
#
# Usage: scripts/test.sh [packages...] [go test flags...]
# Arguments that look like package patterns (starting with "." or
# "github.com/toolgate/") select the packages for vet and test instead of
# ./...; every other argument is passed to go test only, e.g.
#   scripts/test.sh ./internal/e2etest/... -run=TestServerEverything -v
# With go test flags (a run narrowed with -run is a developer's quick
# check) step 3 is one plain go test of the selected packages and step 4
# is left out. RACE=0 runs the packages with concurrency without the race
# detector.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

for tool in go node npm; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "scripts/test.sh: $tool is not on PATH" >&2
		exit 1
	fi
done

# The database servers of the shared-store tests. Nothing happens when
# they are installed; otherwise apt-get installs them (CI runs as root).
# PostgreSQL is the distribution's version (/usr/lib/postgresql/NN/bin).
if ! command -v redis-server >/dev/null 2>&1 || ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		echo "scripts/test.sh: redis-server and postgresql are needed: install the Debian packages redis-server and postgresql" >&2
		exit 1
	fi
	echo "scripts/test.sh: installing redis-server and postgresql (apt-get)" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends redis-server postgresql >/dev/null
fi

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
# The binary and every test build for Linux, macOS and Windows.
GOOS=darwin go build "${pkgs[@]}"
GOOS=darwin go vet "${pkgs[@]}"
GOOS=windows go build "${pkgs[@]}"
GOOS=windows go vet "${pkgs[@]}"
if [ "${#flags[@]}" -gt 0 ]; then
	go test -count=1 -timeout 15m "${flags[@]}" "${pkgs[@]}"
	exit 0
fi

# Three kinds of runs side by side, so that both cores stay busy:
#  - the packages with concurrency of their own (RACE_PKGS) under the
#    race detector, all of their tests (RACE=0: without it),
#  - every other package but e2e,
#  - the end-to-end tests, which mostly wait (on processes, timeouts,
#    rate-limit windows) one after another in one test binary: in
#    E2E_SHARDS processes, each its own share of the tests, dealt by name.
# Each process checks its own goroutine leaks.
e2e_pkg="$(go list ./e2e)"
selected_pkgs="$(go list "${pkgs[@]}")"
race_pkgs=""
if [ "${RACE:-1}" != "0" ]; then
	# shellcheck disable=SC2086 # RACE_PKGS is a list of patterns
	race_pkgs="$(comm -12 <(sort <<<"$selected_pkgs") <(go list ${RACE_PKGS:-./policy/... ./gateway/... ./sandbox/... ./internal/oauth/... ./internal/cli/...} | sort))"
fi
plain_pkgs="$(comm -23 <(sort <<<"$selected_pkgs") <(sort <<<"$race_pkgs") | grep -vxF "$e2e_pkg" || true)"
shards="${E2E_SHARDS:-3}"
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
pids=()
if [ -n "$race_pkgs" ]; then
	# shellcheck disable=SC2086 # one word per package
	go test -race -count=1 -timeout 20m $race_pkgs >"$logs/race" 2>&1 &
	pids+=($!)
fi
if [ -n "$plain_pkgs" ]; then
	# shellcheck disable=SC2086 # one word per package
	go test -count=1 -timeout 15m $plain_pkgs >"$logs/packages" 2>&1 &
	pids+=($!)
fi
if grep -qxF "$e2e_pkg" <<<"$selected_pkgs"; then
	go test -c -o "$logs/e2e.test" ./e2e
	mapfile -t e2e_tests < <(cd e2e && "$logs/e2e.test" -test.list '.*' | grep -E '^(Test|Fuzz|Example)')
	for ((i = 0; i < shards; i++)); do
		names=()
		for ((j = i; j < ${#e2e_tests[@]}; j += shards)); do
			names+=("${e2e_tests[j]}")
		done
		[ "${#names[@]}" -gt 0 ] || continue
		run="^($(IFS='|'; echo "${names[*]}"))\$"
		(
			cd e2e
			start=$SECONDS
			"$logs/e2e.test" -test.count=1 -test.timeout 15m -test.run "$run" >"$logs/e2e.$i" 2>&1
			echo "ok  	$e2e_pkg	$((SECONDS - start))s (shard $((i + 1)) of $shards: ${#names[@]} tests)" >>"$logs/e2e.$i"
		) &
		pids+=($!)
	done
fi
failed=0
for pid in "${pids[@]}"; do
	wait "$pid" || failed=1
done
if [ -f "$logs/race" ]; then
	sed -i 's/^ok  \t/ok  \t(race) /' "$logs/race"
fi
for f in "$logs"/race "$logs"/packages "$logs"/e2e.[0-9]*; do
	if [ -f "$f" ]; then
		if [ "$failed" = 1 ]; then cat "$f"; else grep -E '^(ok|FAIL|---|panic)' "$f" || true; fi
	fi
done
if [ "$failed" = 1 ]; then
	echo "scripts/test.sh: go test failed" >&2
	exit 1
fi

# The wall-clock bounds of Code Mode's timeout (a script stopped within
# 250 ms of its deadline wherever it is), alone on the machine: beside
# other packages' tests the clock also measures their load.
timing_pkgs="$(comm -12 <(go list "${pkgs[@]}" | sort) <(go list ./sandbox ./e2e | sort))"
if [ -n "$timing_pkgs" ]; then
	echo "scripts/test.sh: the timeout's wall-clock bounds, alone" >&2
	# shellcheck disable=SC2086 # one word per package
	TOOLGATE_TIMING=strict go test -p 1 -count=1 -run 'TestNativeBuiltinsStopAtTheDeadline|TestCodeModeNativeTimeout' $timing_pkgs
fi
