#!/usr/bin/env bash
# Does data.keyframe_windows change accuracy? (docs/science.md, "Key-frame windows")
#
#   bash launch/experiment_keyframe_windows.sh [OUT]     (OUT defaults to runs/keyframe_windows)
#   SEEDS="0 1 2 3 4" bash launch/experiment_keyframe_windows.sh   (the default seeds)
#
# The demo's synthetic world as VP9 at GOP 8 (128 frames, so windows have room to move), the
# demo's teacher (cache/teacher/kiclip-tiny.pt, trained once and reused), KICLIP fine-tuning at
# stride 8: the GOP divides the stride, so with key-frame windows every sampled frame is a key
# frame. Per seed, two runs that differ only in data.keyframe_windows, each averaged and tested
# on the held-out videos. Finished runs are reused. Prints Base / Novel / HM per seed and arm,
# and the mean paired HM difference. ≈ 33 min for 5 seeds on 2 CPU cores.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-runs/keyframe_windows}"
mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"
cd "$root"
# The checkout's own environment (created when missing, as demo.sh does) unless PYTHON names one.
if [ -z "${PYTHON:-}" ]; then bash "$root/launch/setup_env.sh"; fi
py="${PYTHON:-$root/.venv/bin/python}"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
teacher="$root/cache/teacher/kiclip-tiny.pt"
world=(--trails --object-radius 0.16,0.22 --size 48 --frames 128 --fps 25 --codec vp9 --gop 8)

"$py" launch/pretrain_teacher.py --synthetic --out "$teacher" --object-radius 0.16,0.22 \
  --no-progress > "$out/logs/teacher.log" 2>&1
if [ ! -f "$out/shards/.done" ]; then
  "$py" shard_tools/make_synthetic.py --out "$out/synthetic" --seed 0 --clips-per-class 16 \
    --val-per-class 20 "${world[@]}" --workers 1 --no-progress
  "$py" shard_tools/make_splits.py --dataset synthetic --synthetic-dir "$out/synthetic" \
    --out "$out/splits" --shots 16 --splits 1
  for spec in "train_split1 split1/train.csv base" "base_test base_test.csv base" \
              "novel_test novel_test.csv novel"; do
    set -- $spec
    "$py" shard_tools/make_shards.py --list "$out/splits/$2" --video-root "$out/synthetic" \
      --classes "$out/splits/$3_classes.json" --out "$out/shards/$1" --samples-per-shard 256 \
      --workers 1 --no-progress
  done
  touch "$out/shards/.done"
fi

# arm SEED ON: fine-tune, average, evaluate → OUT/eval/sSEED_kfwON/results.json
arm() {
  local name="s$1_kfw$2"
  [ -f "$out/eval/$name/results.json" ] && return 0
  "$py" launch/train.py --b2n synthetic --data "$out/shards" --pretrained "$teacher" \
    --output "$out/runs/$name" --epochs 4 --lr 5e-4 --stride 8 --workers 1 --seed "$1" \
    --no-resume --device cpu --loader torch --set run.eval_at_end=false \
    --set optim.warmup_epochs=0.5 --set "data.keyframe_windows=$2" > "$out/logs/train_$name.log" 2>&1
  "$py" launch/average_weights.py "$out/runs/$name" > "$out/logs/average_$name.log" 2>&1
  "$py" launch/evaluate.py --b2n synthetic --data "$out/shards" --views 1 --loader torch \
    --output "$out/eval/$name" --checkpoint "$out/runs/$name/averaged.pt" \
    > "$out/logs/evaluate_$name.log" 2>&1
}
seeds=(${SEEDS:-0 1 2 3 4})
for seed in "${seeds[@]}"; do  # the two arms side by side: one core each
  arm "$seed" false & uniform=$!
  arm "$seed" true & aligned=$!
  wait "$uniform"; wait "$aligned"
done

"$py" - "$out/eval" "${seeds[@]}" <<'EOF'
import json, statistics, sys
folder, seeds = sys.argv[1], sys.argv[2:]
read = lambda s, on: json.load(open(f"{folder}/s{s}_kfw{on}/results.json"))
print("| seed | uniform Base / Novel / HM | key-frame Base / Novel / HM | HM difference |")
print("|---|---|---|---|")
diffs = []
for s in seeds:
    a, b = read(s, "false"), read(s, "true")
    diffs.append(b["hm"] - a["hm"])
    cells = [" / ".join(f"{r[k]:.2f}" for k in ("base", "novel", "hm")) for r in (a, b)]
    print(f"| {s} | {cells[0]} | {cells[1]} | {diffs[-1]:+.2f} |")
sd = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
print(f"mean paired HM difference (key-frame - uniform): {statistics.mean(diffs):+.2f}, "
      f"sample sd {sd:.2f}, {len(diffs)} seeds")
EOF
