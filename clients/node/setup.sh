#!/usr/bin/env bash
# Installs and builds the Node client (clients/node, @hmr2/client) and installs the upload example
# (examples/upload-video) from their committed lockfiles. Idempotent: a package whose lockfile has
# not changed since its last install is not installed again. Needs Node >= 20 and npm; the example
# also needs ffmpeg on PATH at run time (the top-level setup installs it).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
say() { printf '\033[1mclients/node setup:\033[0m %s\n' "$*"; }

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "clients/node/setup.sh: node and npm (Node >= 20) must be on PATH" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "clients/node/setup.sh: Node >= 20 is needed, this is $(node --version)" >&2
  exit 1
fi

# npm ci in $1 unless node_modules was installed from this very lockfile.
install() {
  local dir=$1 stamp=$1/node_modules/.hmr2-lock.sha256 sum
  sum=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sum" ]; then
    say "${dir#"$root"/}: dependencies up to date"
    return
  fi
  say "${dir#"$root"/}: npm ci"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$sum" >"$stamp"
}

install "$here"
say "clients/node: building dist/"
(cd "$here" && npm run --silent build)
install "$root/examples/upload-video"
