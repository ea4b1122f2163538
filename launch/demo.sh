#!/usr/bin/env bash
# The README's main command: what KICLIP is for, shown end to end with no data or weights.
#
#   bash launch/demo.sh [OUT]        (OUT defaults to runs/demo)
#
# A tiny CLIP is pre-trained contrastively on captioned frames of a synthetic world
# (launch/pretrain_teacher.py; cached in cache/teacher/, bit-identical on rerun): it knows all
# 48 classes "<colour> <shape> moving <direction>" zero-shot. It is then fine-tuned on 16 videos
# of each of the 24 base classes, plainly and with KICLIP (FROSTER distillation + knowledge
# injection), and every model is tested on held-out videos of the base classes and of the 24
# novel classes it never trained on. Pipeline: synthetic videos → B2N split → WebDataset shards
# (verified) → train.py (DeepSpeed; CPU when there is no GPU) → weight averaging → evaluate.py.
# Prints and writes OUT/results.json, OUT/results.md and OUT/results.png. Sized for ≤ 5 minutes
# on 2 CPU cores: two single-threaded processes side by side. Steps whose output is complete
# and made from the same settings are reused, so a rerun is quick; others are redone, replacing
# what OUT held (OUT/synthetic, splits, shards, runs). Delete OUT to start over.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/runs/demo}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

bash "$root/launch/setup_env.sh"
export PATH="$root/.venv/bin:$PATH"
py="$root/.venv/bin/python"
cd "$root"
started=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - started ))s] $*"; }
# One thread per process and two processes side by side: both cores busy, and the numbers do
# not depend on how many cores the machine has.
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
logs="$out/logs"
mkdir -p "$logs"
# run NAME CMD...: one step, its output in OUT/logs/NAME.log (the tail is shown when it fails)
run() {
  local name="$1"; shift
  if ! "$@" > "$logs/$name.log" 2>&1; then
    echo "demo: step '$name' failed; last lines of $logs/$name.log:" >&2
    tail -n 20 "$logs/$name.log" >&2
    return 1
  fi
}
# wait_all PID...: wait for every background step; fail if any failed
wait_all() {
  local failed=0 pid
  for pid in "$@"; do wait "$pid" || failed=1; done
  return "$failed"
}
# up_to_date DIR WHAT: DIR was made from WHAT (its .demo-inputs says so), so it can be reused
up_to_date() { [ -f "$1/.demo-inputs" ] && [ "$(cat "$1/.demo-inputs")" = "$2" ]; }

# The science check's world (docs/science.md): objects of radius 0.16-0.22 of the edge and
# motion trails, so one 32-px frame shows colour, shape and direction.
shots=${KICLIP_DEMO_SHOTS:-16}
test_per_class=${KICLIP_DEMO_TEST:-20}
epochs=${KICLIP_DEMO_EPOCHS:-4}
lr=${KICLIP_DEMO_LR:-5e-4}
teacher="$root/cache/teacher/kiclip-tiny.pt"
world=(--trails --object-radius 0.16,0.22 --size 48 --frames 24)

step "in parallel: pre-training the teacher → $teacher  |  synthetic videos → splits → shards"
run pretrain_teacher "$py" launch/pretrain_teacher.py --synthetic --out "$teacher" \
  --object-radius 0.16,0.22 --no-progress &
teacher_pid=$!
data_inputs="$shots $test_per_class ${world[*]}"
make_data() {
  if up_to_date "$out/synthetic" "$data_inputs"; then return 0; fi
  rm -rf "$out/synthetic" "$out/splits" "$out/shards"
  run make_synthetic "$py" shard_tools/make_synthetic.py --out "$out/synthetic" --seed 0 \
    --clips-per-class "$shots" --val-per-class "$test_per_class" "${world[@]}" --workers 1 \
    --no-progress
  run make_splits "$py" shard_tools/make_splits.py --dataset synthetic \
    --synthetic-dir "$out/synthetic" --out "$out/splits" --shots "$shots" --splits 1
  local name list classes
  for name in train_split1 base_test novel_test; do
    case "$name" in
      train_split1) list=split1/train.csv; classes=base_classes.json ;;
      base_test) list=base_test.csv; classes=base_classes.json ;;
      novel_test) list=novel_test.csv; classes=novel_classes.json ;;
    esac
    run "make_shards_$name" "$py" shard_tools/make_shards.py --list "$out/splits/$list" \
      --video-root "$out/synthetic" --classes "$out/splits/$classes" --out "$out/shards/$name" \
      --samples-per-shard 256 --workers 1 --no-progress
    run "inspect_shards_$name" "$py" shard_tools/inspect_shards.py "$out/shards/$name"
  done
  echo "$data_inputs" > "$out/synthetic/.demo-inputs"
}
make_data &
data_pid=$!
wait_all "$teacher_pid" "$data_pid"
tail -n 1 "$logs/pretrain_teacher.log"

# train ARM FLAGS...: fine-tune the teacher on the base classes, then average epochs 2..last
train() {
  local arm="$1"; shift
  local inputs
  inputs="$data_inputs $epochs $lr $* $(sha256sum "$teacher" | cut -c1-16)"
  if up_to_date "$out/runs/$arm" "$inputs"; then return 0; fi
  run "train_$arm" "$py" launch/train.py --b2n synthetic --data "$out/shards" \
    --pretrained "$teacher" --output "$out/runs/$arm" --epochs "$epochs" --lr "$lr" \
    --workers 1 --seed 0 --no-resume --set run.eval_at_end=false \
    --set optim.warmup_epochs=0.5 "$@"
  run "average_$arm" "$py" launch/average_weights.py "$out/runs/$arm"
  echo "$inputs" > "$out/runs/$arm/.demo-inputs"
}
# evaluate NAME SOURCE...: Base / Novel / HM on the held-out videos → OUT/eval/NAME
evaluate() {
  local name="$1"; shift
  run "evaluate_$name" "$py" launch/evaluate.py --b2n synthetic --data "$out/shards" \
    --views 1 --output "$out/eval/$name" "$@"
}

step "in parallel: fine-tuning $epochs epochs at lr $lr: KICLIP (distillation + injection) | plain"
train kiclip &
kiclip_pid=$!
{ train finetune --no-distill --no-injection
  evaluate teacher --frozen-clip --pretrained "$teacher" --model kiclip-tiny; } &
finetune_pid=$!
wait_all "$kiclip_pid" "$finetune_pid"

step "evaluation on held-out videos (29 prompt templates, 1 view)"
evaluate kiclip --checkpoint "$out/runs/kiclip/averaged.pt" &
kiclip_pid=$!
evaluate finetune --checkpoint "$out/runs/finetune/averaged.pt" &
finetune_pid=$!
wait_all "$kiclip_pid" "$finetune_pid"

step "results"
settings=$(printf '{"shots": %s, "test_videos_per_class": %s, "epochs": %s, "lr": %s, "views": 1, "threads_per_process": 1, "teacher": "launch/pretrain_teacher.py --synthetic (400 steps)"}' \
  "$shots" "$test_per_class" "$epochs" "$lr")
"$py" -m kiclip.science.demo "$out" --settings "$settings" --started "$started"
step "demo finished"
