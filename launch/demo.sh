#!/usr/bin/env bash
# The README's main command: the whole product on its embedded default, no data or weights.
#
#   bash launch/demo.sh [OUT]        (OUT defaults to runs/demo)
#
# synthetic action videos → B2N splits → WebDataset shards (verified) → DeepSpeed training of
# a tiny CLIP (CPU when there is no GPU) → weight averaging → Base / Novel / HM evaluation,
# leaving OUT/results.json. Sized for ≤ 5 minutes on 2 CPU cores. Steps whose output is
# already complete are reused, so a rerun is quick; delete OUT to start over.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-$root/runs/demo}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

bash "$root/launch/setup_env.sh"
export PATH="$root/.venv/bin:$PATH"
py="$root/.venv/bin/python"
cd "$root"
start=$(date +%s)
step() { echo; echo "== [$(( $(date +%s) - start ))s] $*"; }

# Small enough for 2 cores, big enough that Base accuracy is clearly above chance.
clips_per_class=${KICLIP_DEMO_CLIPS:-8}
val_per_class=${KICLIP_DEMO_VAL:-4}
shots=${KICLIP_DEMO_SHOTS:-8}
epochs=${KICLIP_DEMO_EPOCHS:-10}

step "synthetic videos → $out/synthetic"
if [ ! -f "$out/synthetic/world.json" ]; then
  "$py" shard_tools/make_synthetic.py --out "$out/synthetic" --seed 0 \
    --clips-per-class "$clips_per_class" --val-per-class "$val_per_class" --size 48 --frames 24
fi

step "base-to-novel splits → $out/splits"
"$py" shard_tools/make_splits.py --dataset synthetic --synthetic-dir "$out/synthetic" \
  --out "$out/splits" --shots "$shots" --splits 1

step "shards → $out/shards"
shard() {  # list, classes, destination
  "$py" shard_tools/make_shards.py --list "$1" --video-root "$out/synthetic" --classes "$2" \
    --out "$out/shards/$3" --samples-per-shard 64 --no-progress
  "$py" shard_tools/inspect_shards.py "$out/shards/$3" > /dev/null
}
shard "$out/splits/split1/train.csv" "$out/splits/base_classes.json" train_split1
shard "$out/splits/base_test.csv" "$out/splits/base_classes.json" base_test
shard "$out/splits/novel_test.csv" "$out/splits/novel_classes.json" novel_test

step "training (DeepSpeed, tiny CLIP) → $out/run"
deepspeed --num_gpus 1 launch/train.py --b2n synthetic --data "$out/shards" --output "$out/run" \
  --epochs "$epochs" --set run.eval_at_end=false

step "averaging epochs 2..last"
"$py" launch/average_weights.py "$out/run"

step "evaluation (3 views, 29 templates)"
"$py" launch/evaluate.py --b2n synthetic --data "$out/shards" --checkpoint "$out/run/averaged.pt" \
  --output "$out"

"$py" - "$out" <<'EOF'
import json, sys
r = json.load(open(f"{sys.argv[1]}/results.json"))
print(f"\nBase {r['base']:.1f}%  Novel {r['novel']:.1f}%  HM {r['hm']:.1f}%   ({sys.argv[1]}/results.json)")
EOF
step "demo finished"
