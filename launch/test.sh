#!/usr/bin/env bash
# The README's test command: sets up .venv when missing, then runs the whole test suite.
# Extra arguments go to pytest (e.g. `bash launch/test.sh -k shards -x`).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/launch/setup_env.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest -q "$@"
