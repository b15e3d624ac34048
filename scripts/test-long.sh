#!/usr/bin/env bash
# What `make test` leaves out because it takes long or depends on timing
# (run it before changing the areas it covers, and after `make test`):
#   1. the full soak-and-chaos test: SOAK_DURATION of chaos (default 2m)
#      with 50 clients, and its footprint and latency verdicts; the seed is
#      printed, SOAK_SEED=N replays a run,
#   2. every fuzz target for FUZZTIME each (default 10s; scripts/fuzz.sh),
#   3. every benchmark once (-benchtime 1x), so that none rots; `make bench`
#      measures.
# Each step runs even when an earlier one failed; the script fails if any
# did.
set -uo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

npm_dir="$repo/e2e/npm"
stamp="$npm_dir/node_modules/.toolgate-lock.sha256"
want="$(sha256sum "$npm_dir/package-lock.json" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
	echo "scripts/test-long.sh: installing npm packages (npm ci in e2e/npm)" >&2
	(cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || exit 1
	echo "$want" >"$stamp"
fi
export TOOLGATE_NPM_DIR="$npm_dir/node_modules"

failed=()
echo "== soak (SOAK_DURATION=${SOAK_DURATION:-2m})"
SOAK_DURATION="${SOAK_DURATION:-2m}" go test ./soak -run '^TestSoak$' -v -count=1 -timeout 45m || failed+=(soak)

echo "== fuzz (FUZZTIME=${FUZZTIME:-10s} per target)"
FUZZTIME="${FUZZTIME:-10s}" bash scripts/fuzz.sh || failed+=(fuzz)

echo "== every benchmark once"
go test -run '^$' -bench . -benchtime 1x -timeout 30m ./... || failed+=(benchmarks)

if [ "${#failed[@]}" -gt 0 ]; then
	echo "scripts/test-long.sh: failed: ${failed[*]}" >&2
	exit 1
fi
echo "scripts/test-long.sh: all passed"
