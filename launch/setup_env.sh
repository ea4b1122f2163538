#!/usr/bin/env bash
# Creates (or refreshes) the checkout's own virtual environment in .venv and installs kiclip
# into it, with the test tools and DALI. Both README commands source this first, so they work
# on a fresh machine. Re-running is cheap: the install is skipped while setup.cfg is unchanged.
#
#   bash launch/setup_env.sh                     pinned dependencies from the package index
#   bash launch/setup_env.sh --wheelhouse DIR    offline: install only from the wheels in DIR
#                                                (pip --no-index --find-links DIR)
#   bash launch/setup_env.sh --system-torch      keep the CUDA torch/torchvision already installed
#                                                for PYTHON (venv --system-site-packages; the
#                                                torch/torchvision pins are not installed)
#   bash launch/setup_env.sh --dry-run [...]     print what would run, change nothing
# The options combine (a GPU host's wheel folder plus its own torch). PYTHON picks the base
# interpreter (default python3); KICLIP_VENV another environment folder (default .venv).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KICLIP_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

wheelhouse=""
system_torch=0
dry_run=0
while [ $# -gt 0 ]; do
  case "$1" in
    --wheelhouse)
      [ $# -ge 2 ] || { echo "setup_env.sh: error: --wheelhouse needs a folder" >&2; exit 2; }
      wheelhouse="$2"; shift 2 ;;
    --wheelhouse=*) wheelhouse="${1#*=}"; shift ;;
    --system-torch) system_torch=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_env.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -n "$wheelhouse" ]; then
  if [ ! -d "$wheelhouse" ]; then
    echo "setup_env.sh: error: --wheelhouse $wheelhouse is not a folder" >&2; exit 2
  fi
  wheelhouse="$(cd "$wheelhouse" && pwd)"
fi

run() {  # the command, or only its echo under --dry-run
  if [ "$dry_run" = 1 ]; then echo "would run: $*" >&2; else "$@"; fi
}

if [ "$system_torch" = 1 ]; then
  # pip would otherwise replace the host's CUDA build with the pinned one, or pull one to
  # satisfy open_clip's torchvision requirement; both must already be there.
  if ! "$python" -c "import torch, torchvision" 2>/dev/null; then
    echo "setup_env.sh: error: --system-torch: $python cannot import torch and torchvision;" \
         "install them for that interpreter first, or drop --system-torch" >&2
    exit 2
  fi
  if [ -f "$venv/pyvenv.cfg" ] && ! grep -q "include-system-site-packages = true" "$venv/pyvenv.cfg"; then
    echo "setup_env.sh: error: --system-torch: $venv exists without system site packages;" \
         "remove it (rm -rf $venv) and run again" >&2
    exit 2
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "[kiclip] creating $venv" >&2
  if [ "$system_torch" = 1 ]; then
    run "$python" -m venv --system-site-packages "$venv"
  else
    run "$python" -m venv "$venv"
  fi
fi

stamp="$venv/.kiclip-installed"
want="$(cat "$root/setup.cfg" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$system_torch" = 1 ]; then want="$want system-torch"; fi
if [ "$dry_run" = 1 ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[kiclip] installing kiclip and its pinned dependencies into .venv (first run takes a few minutes)" >&2
  extras="dev"
  # DALI ships x86-64 Linux wheels only; elsewhere the fallback loader is used.
  if [ "$(uname -s)-$(uname -m)" = "Linux-x86_64" ]; then extras="dev,dali"; fi
  pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
  if [ -n "$wheelhouse" ]; then
    pip+=(--no-index --find-links "$wheelhouse")
  else
    # Offline, the wheel folder decides pip's version; online, a current pip resolves better.
    run "${pip[@]}" --upgrade pip >/dev/null
  fi
  if [ "$system_torch" = 1 ]; then
    # Every pinned requirement but torch/torchvision, then kiclip itself without dependencies.
    requirements="$venv/kiclip-requirements-without-torch.txt"
    run "$python" - "$root/setup.cfg" "$extras" "$requirements" <<'EOF'
import configparser, re, sys
cfg = configparser.ConfigParser()
cfg.read(sys.argv[1])
lines = cfg["options"]["install_requires"].split("\n")
for extra in sys.argv[2].split(","):
    lines += cfg["options.extras_require"][extra].split("\n")
keep = [l.strip() for l in lines
        if l.strip() and re.split(r"[=<>!~\[; ]", l.strip())[0].lower() not in ("torch", "torchvision")]
open(sys.argv[3], "w").write("\n".join(keep) + "\n")
EOF
    run "${pip[@]}" -r "$requirements"
    run "${pip[@]}" --no-deps -e "$root"
  else
    run "${pip[@]}" -e "$root[$extras]"
  fi
  if [ "$dry_run" = 0 ]; then echo "$want" > "$stamp"; fi
fi
