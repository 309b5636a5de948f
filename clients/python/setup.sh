#!/usr/bin/env bash
# Installs the Python client hmr2-client (editable, with its test dependencies) into the
# project's Python environment (.venv, made by scripts/setup). Fast when it is already there.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
py="$root/.venv/bin/python"
[ -x "$py" ] || { echo "clients/python/setup.sh: $py is missing: run scripts/setup first" >&2; exit 1; }
installed=$("$py" - <<'PY' 2>/dev/null || true
import os
import hmr2_client, jsonschema, pytest, PIL  # noqa: F401
print(os.path.dirname(os.path.realpath(hmr2_client.__file__)))
PY
)
if [ "$installed" != "$(realpath "$here/src/hmr2_client")" ]; then
  echo "clients/python/setup.sh: installing hmr2-client (editable) into $root/.venv"
  "$py" -m pip install -q -e "$here[test]"
fi
