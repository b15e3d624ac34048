#!/usr/bin/env bash
# Prints the -ldflags with which `make build` and `make install` set the
# version and commit that `toolgate version` reports, read from the git
# checkout: the release tag at HEAD (vX.Y.Z), else a Go pseudo-version of
# the commit (v0.0.0-yyyymmddhhmmss-abcdefabcdef, the commit time in UTC),
# with "+dirty" when the tree has uncommitted changes. The go command
# records the same in the binary by itself, but not in a git worktree nor
# with GOFLAGS=-buildvcs=false. Outside a git checkout it prints nothing,
# and the binary reports what the go command recorded.
set -euo pipefail
commit=$(git rev-parse HEAD 2>/dev/null) || exit 0
if ! version=$(git describe --tags --exact-match --match 'v[0-9]*' HEAD 2>/dev/null); then
	time=$(TZ=UTC git show -s --format=%cd --date=format-local:%Y%m%d%H%M%S HEAD)
	version="v0.0.0-$time-${commit:0:12}"
fi
if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
	version+="+dirty"
fi
pkg=github.com/toolgate/toolgate/internal/buildinfo
echo "-X $pkg.version=$version -X $pkg.commit=$commit"
