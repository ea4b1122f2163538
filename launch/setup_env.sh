#!/usr/bin/env bash
# Creates (or refreshes) the checkout's own virtual environment in .venv and installs kiclip
# into it, with the test tools and DALI. Both README commands source this first, so they work
# on a fresh machine. Re-running is cheap: the install is skipped while setup.cfg is unchanged.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
  echo "[kiclip] creating $venv" >&2
  "$python" -m venv "$venv"
fi

stamp="$venv/.kiclip-installed"
want="$(cat "$root/setup.cfg" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[kiclip] installing kiclip and its pinned dependencies into .venv (first run takes a few minutes)" >&2
  extras="dev"
  # DALI ships x86-64 Linux wheels only; elsewhere the fallback loader is used.
  if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then extras="dev,dali"; fi
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >/dev/null
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[$extras]"
  echo "$want" > "$stamp"
fi
