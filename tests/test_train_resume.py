"""kill -9 in the middle of an epoch, rerun the same command: training continues from the last
complete checkpoint and the step count and every later loss equal an uninterrupted run's."""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
import pytest
import torch
from train_fixtures import FAST, read_losses, start_train, tail, wait_ok

from kiclip.text import TemplateSampler
from kiclip.train import checkpoint as ckpt

EPOCHS, STEPS_PER_EPOCH = 3, 12  # 48 clips, batch 4


def _wait_for_epoch_1(proc, run_dir, log, timeout: float = 240) -> None:
    """Until epoch 0's checkpoint is COMPLETE and at least one step of epoch 1 is logged."""
    marker = ckpt.ds_dir(run_dir) / ckpt.epoch_tag(0) / "COMPLETE"
    history = run_dir / "losses.jsonl"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before it could be killed:\n{tail(log)}"
        if marker.exists() and history.exists() and '"epoch": 1' in history.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"epoch 1 did not start within {timeout} s:\n{tail(log)}")


@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(b2n_shards, tmp_path):
    args = [*FAST, "--data", str(b2n_shards), "--epochs", str(EPOCHS), "--batch-size", "4"]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    reference = start_train([*args, "--output", str(straight)], log=tmp_path / "straight.log")
    victim = start_train([*args, "--output", str(killed)], log=tmp_path / "killed.log")
    _wait_for_epoch_1(victim, killed, tmp_path / "killed.log")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    before = read_losses(killed)
    assert ckpt.last_complete_epoch(killed) == 0, "killed after epoch 1 was saved: not mid-epoch"
    assert any(r["epoch"] == 1 for r in before)  # it died inside epoch 1, past the checkpoint

    # The same command again: resumes automatically from the last complete epoch.
    resumed = start_train([*args, "--output", str(killed)], log=tmp_path / "resumed.log")
    wait_ok(resumed, tmp_path / "resumed.log")
    wait_ok(reference, tmp_path / "straight.log")
    log = (tmp_path / "resumed.log").read_text()
    assert f"after epoch 0 (step {STEPS_PER_EPOCH})" in log, tail(tmp_path / "resumed.log")

    want, got = read_losses(straight), read_losses(killed)
    # The history holds each step once: epoch-1 steps of the killed attempt were cut on resume.
    assert [r["step"] for r in got] == list(range(1, EPOCHS * STEPS_PER_EPOCH + 1))
    assert [r["step"] for r in want] == [r["step"] for r in got]
    assert [r["epoch"] for r in got] == [e for e in range(EPOCHS) for _ in range(STEPS_PER_EPOCH)]
    # Epoch 0 ran once, before the kill; everything after it ran in the resumed process. Same
    # seed, restored weights, optimiser, schedule, data position and template sampler: equal.
    for a, b in zip(want, got):
        assert a["template"] == b["template"], f"step {a['step']}: template draw differs"
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12, abs=0)
        for term in ("total", "ce", "distill_image", "distill_text"):
            assert a[term] == pytest.approx(b[term], rel=1e-6, abs=1e-7), \
                f"step {a['step']} {term}: {a[term]} uninterrupted vs {b[term]} resumed"
    a = torch.load(ckpt.weights_path(straight, EPOCHS - 1), weights_only=True)
    b = torch.load(ckpt.weights_path(killed, EPOCHS - 1), weights_only=True)
    assert a["step"] == b["step"] == EPOCHS * STEPS_PER_EPOCH
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)

    # The checkpoint carries what resuming restores besides DeepSpeed's own state: one entry
    # per Stateful part of the run. DeepSpeed's own state file pickles numpy RNG state and
    # optimizer objects, so it cannot be read with weights_only=True; it is a file this test
    # just wrote.
    states = ckpt.ds_dir(killed) / ckpt.epoch_tag(0) / "mp_rank_00_model_states.pt"
    client = torch.load(states, map_location="cpu", weights_only=False)
    assert client["progress"] == {"epoch": 0, "step": STEPS_PER_EPOCH}
    assert {"python", "numpy", "torch"} <= set(client["rng"])
    assert "generator" in client["templates"]


def test_rng_and_template_sampler_state_round_trip():
    """What a checkpoint stores for the RNG and the template sampler (their state_dict) and
    what a resume restores (load_state_dict) brings back the exact random streams."""
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    sampler = TemplateSampler(seed=3)
    for _ in range(5):
        sampler.draw()
    state, templates = ckpt.RngState().state_dict(), sampler.state_dict()
    expected = (random.random(), np.random.rand(), torch.rand(3), [sampler.draw() for _ in range(8)])
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    fresh = TemplateSampler(seed=3)
    ckpt.RngState().load_state_dict(state)
    fresh.load_state_dict(templates)
    got = (random.random(), np.random.rand(), torch.rand(3), [fresh.draw() for _ in range(8)])
    assert got[0] == expected[0] and got[1] == expected[1]
    assert torch.equal(got[2], expected[2]) and got[3] == expected[3]
    assert got[3] != [TemplateSampler(seed=3).draw() for _ in range(8)]  # not a restart


def test_last_complete_epoch_ignores_unfinished_checkpoints(tmp_path):
    for epoch, complete, weights in ((0, True, True), (1, True, False), (2, False, True)):
        (ckpt.ds_dir(tmp_path) / ckpt.epoch_tag(epoch)).mkdir(parents=True)
        if complete:
            ckpt.mark_complete(tmp_path, epoch)
        if weights:
            ckpt.atomic_torch_save({"model": {}}, ckpt.weights_path(tmp_path, epoch))
    assert ckpt.last_complete_epoch(tmp_path) == 0
    assert not list((tmp_path / "weights").glob(".*.tmp"))  # atomic save leaves no temp file
