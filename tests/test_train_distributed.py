"""2-rank ZeRO-2 on CPU (gloo) and 1 rank with the same global batch reach the same weights.

On the CPU on every host (FAST passes --device cpu): fp32 and gloo keep the two set-ups within
the tolerance below, and two ranks need no second GPU.

Why the global batches agree: with ``--loader torch`` and ``data.shuffle=false`` every rank
streams the tars in stored order and keeps samples i ≡ rank (mod 2) (docs/data_plane.md), so
step k of rank 0 sees samples 8k, 8k+2, 8k+4, 8k+6 and rank 1 sees 8k+1, ..., 8k+7: together
exactly the single process's batch k of samples 8k..8k+7. Clip windows, crops and flips are drawn
per (seed, epoch, sample key), so a sample is cut the same whatever rank reads it. Both ranks hold
4 clips, so the mean of the per-rank mean losses (DeepSpeed averages gradients) is the mean over
the global batch. (The DALI loader's ranks read every second sample of the epoch's order too, so
its global batches equal a single process's as well; tests/test_dali.py checks that.)

Tolerance (fp32): after 6 AdamW steps at a peak lr of 1e-3, every tensor agrees within 2e-4
absolute (a fifth of one peak-lr Adam step; measured ~6e-5, from summation order in the gradient
all-reduce amplified by Adam on near-zero gradients), and ‖θ_2rank − θ_1rank‖ is under 1% of how
far training moved the weights ‖θ_1rank − θ_0‖ (measured ~2e-4). A different sample order (the
same run with shuffling on) misses both by more than 10x (~4e-3 absolute, ~110%).
"""

from __future__ import annotations

import json

import pytest
import torch
from train_fixtures import FAST, free_port, read_losses, start_train, wait_ok

ATOL = 2e-4
REL = 1e-2


def _initial_state(config: dict) -> dict[str, torch.Tensor]:
    """The weights train.py starts from: torch.manual_seed(seed), then build_models."""
    from kiclip.config import DataConfig, LossConfig, ModelConfig, TrainConfig
    from kiclip.train.assemble import build_models

    torch.manual_seed(config["run"]["seed"])
    cfg = TrainConfig(model=ModelConfig(**config["model"]), loss=LossConfig(**config["loss"]),
                      data=DataConfig(**config["data"]))
    module, _, _ = build_models(cfg)
    return {k: v.detach().float() for k, v in module.state_dict().items()}


@pytest.mark.slow
def test_two_rank_zero2_matches_one_rank_with_the_same_global_batch(b2n_shards, tmp_path):
    common = [*FAST, "--data", str(b2n_shards), "--epochs", "1", "--loader", "torch",
              "--workers", "0", "--zero-stage", "2", "--set", "data.shuffle=false"]
    one, two = tmp_path / "one", tmp_path / "two"
    port = free_port()
    # All three processes at once: each uses one thread, and the ranks wait on each other anyway.
    procs = [(start_train([*common, "--output", str(one), "--batch-size", "8"],
                          log=tmp_path / "one.log"), tmp_path / "one.log")]
    for rank in range(2):
        log = tmp_path / f"two_rank{rank}.log"
        procs.append((start_train([*common, "--output", str(two), "--batch-size", "4"], log=log,
                                  rank=rank, world=2, port=port), log))
    for proc, log in procs:
        wait_ok(proc, log)

    s1 = json.loads((one / "summary.json").read_text())
    s2 = json.loads((two / "summary.json").read_text())
    assert (s1["world_size"], s2["world_size"]) == (1, 2)
    assert s1["steps"] == s2["steps"] == 6  # 48 clips / global batch 8
    assert s1["precision"] == s2["precision"] == "fp32"
    # Same schedule and the same template drawn at every step on both set-ups.
    l1, l2 = read_losses(one), read_losses(two)
    assert [(r["step"], r["lr"], r["template"]) for r in l1] == \
           [(r["step"], r["lr"], r["template"]) for r in l2]

    a = torch.load(one / "weights" / "epoch_000.pt", weights_only=True)
    b = torch.load(two / "weights" / "epoch_000.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    initial = _initial_state(a["config"])
    assert initial.keys() == a["model"].keys()
    worst = max(a["model"], key=lambda k: float((a["model"][k] - b["model"][k]).abs().max()))
    max_abs = float((a["model"][worst] - b["model"][worst]).abs().max())
    diff = torch.sqrt(sum(((a["model"][k] - b["model"][k]) ** 2).sum() for k in a["model"]))
    moved = torch.sqrt(sum(((a["model"][k] - initial[k]) ** 2).sum() for k in a["model"]))
    assert moved > 0.1, "training did not move the weights: the comparison would be empty"
    assert max_abs <= ATOL, f"{worst} differs by {max_abs:.3g} > {ATOL}"
    assert float(diff / moved) <= REL, f"‖Δ‖/‖moved‖ = {float(diff / moved):.3g} > {REL}"
