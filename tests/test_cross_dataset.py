"""Cross-dataset protocol: train on DATA/train (all classes), evaluate zero-shot on DATA/test*."""

from __future__ import annotations

import json
import subprocess
import sys

from train_fixtures import EVALUATE, process_env, train_main


def test_cross_dataset_train_then_evaluate(b2n_shards, tmp_path):
    data, target = tmp_path / "k400", tmp_path / "ucf"
    data.mkdir()
    target.mkdir()
    # Any make_shards output serves: the label space travels in each manifest.
    (data / "train").symlink_to(b2n_shards / "train_split1")
    (data / "test").symlink_to(b2n_shards / "base_test")
    (target / "test").symlink_to(b2n_shards / "novel_test")
    (target / "test_split1").symlink_to(b2n_shards / "base_test")
    run = tmp_path / "run"

    code, err = train_main(["--cross-dataset", "--data", str(data), "--output", str(run), "--model",
                            "kiclip-tiny", "--image-size", "32", "--stride", "2", "--num-frames", "4",
                            "--max-steps", "3", "--epochs", "1", "--lr", "1e-4", "--device", "cpu"])
    assert code == 0, err[-3000:]
    config = json.loads((run / "config.json").read_text())
    assert config["mode"] == "cross" and config["optim"]["epochs"] == 1
    assert len((run / "losses.jsonl").read_text().splitlines()) == 3

    # --max-steps stops before the epoch's checkpoint: run one full (short) epoch instead.
    code, err = train_main(["--cross-dataset", "--data", str(data), "--output", str(run), "--model",
                            "kiclip-tiny", "--image-size", "32", "--stride", "2", "--num-frames", "4",
                            "--epochs", "1", "--batch-size", "16", "--no-resume", "--device", "cpu"])
    assert code == 0, err[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert "test_top1" in summary  # the end-of-run evaluation used DATA/test

    out = tmp_path / "eval"
    proc = subprocess.run([sys.executable, str(EVALUATE), "--cross-dataset", "--data", str(target),
                           "--checkpoint", str(run / "weights" / "epoch_000.pt"), "--views", "1",
                           "--output", str(out)], env=process_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"test", "test_split1", "runs"}
    assert results["runs"][0]["test_detail"]["videos"] == 24
    assert 0.0 <= results["test"] <= 100.0
