#!/usr/bin/env bash
# The test command for toolgate (what `make test` and CI run):
#   1. installs the pinned npm packages of e2e/npm (real MCP servers and
#      clients for end-to-end tests) when node_modules is missing or older
#      than package-lock.json,
#   2. go vet,
#   3. go test -count=1 -timeout 20m.
#
# Usage: scripts/test.sh [packages...] [go test flags...]
# Arguments that look like package patterns (starting with "." or
# "github.com/toolgate/") select the packages for vet and test instead of
# ./...; every other argument is passed to go test only, e.g.
#   scripts/test.sh ./internal/e2etest/... -run=TestServerEverything -v
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
if [ ! -f "$npm_dir/node_modules/.package-lock.json" ] ||
	[ "$npm_dir/package-lock.json" -nt "$npm_dir/node_modules/.package-lock.json" ]; then
	echo "scripts/test.sh: installing npm packages (npm ci in e2e/npm)" >&2
	(cd "$npm_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
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
go test -count=1 -timeout 20m ${flags[@]+"${flags[@]}"} "${pkgs[@]}"
