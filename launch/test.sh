#!/usr/bin/env bash
# The README's test command: sets up .venv when missing, then runs the whole test suite.
# Extra arguments go to pytest (e.g. `bash launch/test.sh -k shards -x`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/launch/setup_env.sh"
cd "$root"
if [ $# -eq 0 ]; then
  # Lint first: it takes a second and names the file and line of what is wrong.
  "$root/.venv/bin/ruff" check .
fi
exec "$root/.venv/bin/python" -m pytest -q "$@"
