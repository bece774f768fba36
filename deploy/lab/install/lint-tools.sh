#!/usr/bin/env bash
# Install the linters the deploy tests use into a per-version cache outside the repository
# (npm registry, ordinary client). Idempotent: an install holding the marker file is reused.
#
#   deploy/lab/install/lint-tools.sh              install if missing, print the dclint path last
#   deploy/lab/install/lint-tools.sh --print-bin  only print the dclint path
#
# dclint (docker-compose-linter) validates a compose file against the Compose Specification's
# JSON schema (bundled in the package, so it works offline once installed) plus its own rules.
set -euo pipefail

DCLINT_VERSION=3.1.0

cache="${SFOPS_CACHE:-$HOME/.cache/sfops}"
prefix="$cache/node-tools/dclint-$DCLINT_VERSION"
bin="$prefix/node_modules/.bin/dclint"
marker="$prefix/.complete"

if [[ "${1:-}" == "--print-bin" ]]; then
  echo "$bin"
  exit 0
fi

if [[ -f "$marker" && -x "$bin" ]]; then
  echo "[lint-tools] dclint $DCLINT_VERSION cached"
  echo "$bin"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1; then
  echo "lint-tools.sh: npm not found (apt-get install nodejs npm; dclint needs node >= 20.19)" >&2
  exit 1
fi

echo "[lint-tools] installing dclint $DCLINT_VERSION into $prefix ..."
# Install into a temporary prefix and rename, so an interrupted run never looks complete.
tmp="$prefix.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo '{"private": true}' > "$tmp/package.json"
npm install --prefix "$tmp" --no-audit --no-fund --save-exact --loglevel=error \
  "dclint@$DCLINT_VERSION" >&2
"$tmp/node_modules/.bin/dclint" --version >/dev/null
rm -rf "$prefix"
mv "$tmp" "$prefix"
trap - EXIT
touch "$marker"
echo "$bin"
