#!/usr/bin/env bash
# One GPU acceptance run: everything a CPU cannot check, in one command, ≤ 10 minutes on one
# H100/H200, with its evidence written to OUT.
#
#   bash launch/gpu_check.sh [OUT]            run every part (OUT defaults to runs/gpu_check_<UTC time>)
#   bash launch/gpu_check.sh --dry-run [OUT]  print the plan (parts, timeouts, commands); run nothing
#
# Parts, each with its own timeout and log (OUT/<part>.log) and, where it makes one, a JSON:
#   environment    GPU, driver, versions, NVDEC codec answers, C compiler, ptxas
#   kernel_tests   pytest tests/test_kernels_*.py, compiled on the GPU
#   kernel_parity  Triton vs reference at training scale (12,608 x 768 rows), bf16 and fp32
#   bench_kernels  launch/bench_kernels.py
#   bench_step     launch/bench_step.py, ours vs the reference recipe
#   dali_decode    DALI GPU vs CPU decode of the same shards, PSNR per codec
#   train_eval     one-epoch synthetic training, then evaluation, DALI on the GPU; predict.py --device cuda
# OUT/summary.json lists PASS / FAIL / SKIPPED per part with the reason. A part whose dependency
# is missing, that does not fit in the time left, or that times out is SKIPPED, never PASS.
# Exit status: 0 when no part failed, 1 otherwise, 2 for a usage error.
#
# Needs the environment installed first (offline hosts: see launch/setup_env.sh --help):
#   bash launch/setup_env.sh [--wheelhouse DIR] [--system-torch]
# PYTHON overrides the interpreter (default: the checkout's .venv). KICLIP_GPU_CHECK_BUDGET
# overrides the total budget in seconds (default 600).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

dry_run=0
out=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) dry_run=1 ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "gpu_check.sh: error: unknown option $arg (see --help)" >&2; exit 2 ;;
    *) if [ -n "$out" ]; then echo "gpu_check.sh: error: more than one OUT given" >&2; exit 2; fi
       out="$arg" ;;
  esac
done
out="${out:-$root/runs/gpu_check_$(date -u +%Y%m%dT%H%M%SZ)}"
budget="${KICLIP_GPU_CHECK_BUDGET:-600}"

PARTS=(environment kernel_tests kernel_parity bench_kernels bench_step dali_decode train_eval)
# Seconds per part; they sum to the 600 s budget (minus a margin for the summary).
declare -A TIMEOUT=([environment]=45 [kernel_tests]=100 [kernel_parity]=45 [bench_kernels]=90
                    [bench_step]=110 [dali_decode]=80 [train_eval]=120)
declare -A WHAT=(
  [environment]="gpu_check_parts.py environment → environment.json, nvidia-smi.txt"
  [kernel_tests]="pytest -rs tests/test_kernels_*.py but the AOT compile test (compiled on the GPU) → kernel_tests.xml"
  [kernel_parity]="gpu_check_parts.py parity --rows 12608 --width 768, bf16 and fp32 → kernel_parity_*.json"
  [bench_kernels]="launch/bench_kernels.py → bench_kernels.json"
  [bench_step]="launch/bench_step.py --variants ours,reference → bench_step.json"
  [dali_decode]="synthetic clips → shards per codec (make_shards --transcode) → gpu_check_parts.py dali-decode → dali_decode.json"
  [train_eval]="launch/train.py --b2n synthetic --epochs 1 --loader dali (evaluates base/novel at the end) → train_run/summary.json; predict.py --device cuda on its weights → train_run/predict.json"
)
# Parts that mean nothing without a GPU (the environment part records its absence).
declare -A NEEDS_GPU=([kernel_tests]=1 [kernel_parity]=1 [bench_kernels]=1 [bench_step]=1
                      [dali_decode]=1 [train_eval]=1)

if [ "$dry_run" = 1 ]; then
  echo "gpu_check plan: OUT=$out, total budget ${budget}s, nothing is run (--dry-run)"
  total=0
  for part in "${PARTS[@]}"; do
    printf '  %-14s timeout %4ss  %s\n' "$part" "${TIMEOUT[$part]}" "${WHAT[$part]}"
    total=$(( total + TIMEOUT[$part] ))
  done
  echo "  sum of part timeouts: ${total}s; summary: $out/summary.json (PASS / FAIL / SKIPPED per part)"
  exit 0
fi

py="${PYTHON:-$root/.venv/bin/python}"
if ! [ -x "$py" ] && ! command -v "$py" >/dev/null 2>&1; then
  echo "gpu_check.sh: error: no Python at $py; run 'bash launch/setup_env.sh' first (offline: --wheelhouse DIR," \
       "--system-torch) or set PYTHON" >&2
  exit 2
fi
mkdir -p "$out" && out="$(cd "$out" && pwd)"
work="$out/work"
export py out work root
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
cd "$root" || exit 2

# ---------------------------------------------------------------- the parts (exit 77 = skipped)

part_environment() {
  if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -q > "$out/nvidia-smi.txt" 2>&1; fi
  "$py" launch/gpu_check_parts.py environment --out "$out/environment.json"
}

part_kernel_tests() {
  # The ahead-of-time compile test needs no GPU and runs in the CPU suite; leave its minutes out.
  "$py" -m pytest -q -rs -p no:cacheprovider --junitxml="$out/kernel_tests.xml" \
    --ignore=tests/test_kernels_compile.py tests/test_kernels_*.py
}

part_kernel_parity() {
  local rc=0 dtype code
  for dtype in bf16 fp32; do
    "$py" launch/gpu_check_parts.py parity --rows 12608 --width 768 --dtype "$dtype" \
      --out "$out/kernel_parity_$dtype.json"
    code=$?
    if [ "$code" != 0 ]; then rc=$code; fi
  done
  return "$rc"
}

last_json_line() {  # log → json: the benchmark's last line is its JSON report
  tail -n 1 "$1" > "$2"
}

part_bench_kernels() {
  "$py" launch/bench_kernels.py | tee "$work/bench_kernels.out" || return 1
  last_json_line "$work/bench_kernels.out" "$out/bench_kernels.json"
}

part_bench_step() {
  "$py" launch/bench_step.py --variants ours,reference | tee "$work/bench_step.out" || return 1
  last_json_line "$work/bench_step.out" "$out/bench_step.json"
}

prepare_synthetic() {  # tiny synthetic world → B2N splits → base/novel/train shards (idempotent)
  [ -f "$work/shards/.done" ] && return 0
  "$py" shard_tools/make_synthetic.py --out "$work/synthetic" --seed 0 --clips-per-class 4 \
    --val-per-class 2 --size 64 --frames 24 --no-progress || return 1
  "$py" shard_tools/make_splits.py --dataset synthetic --synthetic-dir "$work/synthetic" \
    --out "$work/splits" --shots 4 --splits 1 || return 1
  local pair
  for pair in "split1/train.csv base_classes.json train_split1" "base_test.csv base_classes.json base_test" \
              "novel_test.csv novel_classes.json novel_test"; do
    set -- $pair
    "$py" shard_tools/make_shards.py --list "$work/splits/$1" --video-root "$work/synthetic" \
      --classes "$work/splits/$2" --out "$work/shards/$3" --samples-per-shard 64 --no-progress || return 1
  done
  touch "$work/shards/.done"
}
export -f prepare_synthetic

part_dali_decode() {
  prepare_synthetic || return 1
  local codec
  for codec in $("$py" -c "from shard_tools.video_io import CODECS; print(' '.join(sorted(CODECS)))"); do
    # A codec whose encoder this host's FFmpeg lacks is left out (and so not compared).
    "$py" shard_tools/make_shards.py --list "$work/splits/base_test.csv" --video-root "$work/synthetic" \
      --classes "$work/splits/base_classes.json" --out "$work/codecs/$codec" --transcode "$codec" \
      --samples-per-shard 64 --no-progress \
      || { echo "no $codec shards (encoder missing?); not compared"; rm -rf "$work/codecs/$codec"; }
  done
  "$py" launch/gpu_check_parts.py dali-decode --shards "$work/codecs" --out "$out/dali_decode.json"
}

part_train_eval() {
  prepare_synthetic || return 1
  "$py" -c "import nvidia.dali" 2>/dev/null || { echo "SKIPPED: DALI is not installed"; return 77; }
  "$py" launch/train.py --b2n synthetic --data "$work/shards" --output "$out/train_run" --epochs 1 \
    --loader dali --no-resume || return 1
  "$py" - "$out/train_run/summary.json" <<'EOF'
import json, sys
summary = json.load(open(sys.argv[1]))
missing = [k for k in ("base_top1", "novel_top1", "hm") if k not in summary]
print(json.dumps(summary))
sys.exit(f"evaluation results missing: {missing}" if missing else 0)
EOF
  # Inference on the GPU (predict.py; visualize.py and evaluate.py choose the device the same
  # way): the run's weights on one synthetic video, --device cuda.
  local video
  video=$(find "$work/synthetic" -name '*.avi' | sort | head -n 1)
  "$py" launch/predict.py --checkpoint "$out/train_run/weights/epoch_000.pt" --video "$video" \
    --classes "red circle moving left,blue square moving right" --device cuda --json \
    > "$out/train_run/predict.json" || return 1
}
export -f part_environment part_kernel_tests part_kernel_parity last_json_line part_bench_kernels \
  part_bench_step part_dali_decode part_train_eval

# ---------------------------------------------------------------- runner

mkdir -p "$work"
: > "$out/parts.tsv"
start=$(date +%s)
# Asked once, before any part: whether the GPU parts can mean anything on this host.
has_gpu=$("$py" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
record() {  # part status seconds reason
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$out/parts.tsv"
  printf '== %-14s %-8s %4ss  %s\n' "$1" "$2" "$3" "$4"
}

for part in "${PARTS[@]}"; do
  limit=${TIMEOUT[$part]}
  left=$(( budget - ($(date +%s) - start) ))
  if [ -n "${NEEDS_GPU[$part]:-}" ] && [ "$has_gpu" != 1 ]; then
    record "$part" SKIPPED 0 "no CUDA device visible to torch (environment.json and nvidia-smi.txt say why)"
    continue
  fi
  if [ "$left" -lt "$limit" ]; then
    record "$part" SKIPPED 0 "did not fit: ${left}s of the ${budget}s budget left, the part needs up to ${limit}s"
    continue
  fi
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" bash -o pipefail -c "part_$part" > "$out/$part.log" 2>&1
  rc=$?
  took=$(( $(date +%s) - t0 ))
  case "$rc" in
    0) record "$part" PASS "$took" "" ;;
    77) record "$part" SKIPPED "$took" "$(grep -h '^SKIPPED: ' "$out/$part.log" | tail -n 1 | cut -c10-)" ;;
    124|137) record "$part" SKIPPED "$took" "timed out after ${limit}s (did not fit); see $part.log" ;;
    *) record "$part" FAIL "$took" "exit $rc; see $part.log" ;;
  esac
done

"$py" - "$out" <<'EOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
parts = {}
for line in (out / "parts.tsv").read_text().splitlines():
    name, status, seconds, reason = line.split("\t")
    log = f"{name}.log" if (out / f"{name}.log").exists() else None
    parts[name] = {"status": status, "seconds": int(seconds), "reason": reason, "log": log}
env = out / "environment.json"
gpu = json.loads(env.read_text()).get("gpu") if env.exists() else None
counts = {s: sum(p["status"] == s for p in parts.values()) for s in ("PASS", "FAIL", "SKIPPED")}
summary = {"gpu": gpu, "counts": counts, "parts": parts}
(out / "summary.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary))
sys.exit(1 if counts["FAIL"] else 0)
EOF
