"""launch/evaluate.py: one checkpoint evaluated twice gives identical numbers; the frozen-CLIP
baseline runs; Base / Novel / HM land in results.json."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from train_fixtures import EVALUATE, ROOT, process_env

from kiclip.evaluation import harmonic_mean


def _start(args, log):
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, str(EVALUATE), *args], cwd=ROOT, env=process_env(),
                                stdout=fh, stderr=subprocess.STDOUT)


def _finish(proc, log, timeout=240):
    rc = proc.wait(timeout=timeout)
    assert rc == 0, log.read_text()[-3000:]


def _checkpoint(path):
    """A kiclip weights file as train.py writes it (random init: evaluation does not care)."""
    import argparse

    from kiclip.config import add_config_arguments, config_from_args
    from kiclip.train.assemble import build_models

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--b2n", "synthetic", "--num-frames", "4"]))
    torch.manual_seed(0)
    module, _, _ = build_models(cfg)
    torch.save({"model": module.state_dict(), "config": cfg.to_dict(), "epoch": 0, "step": 0}, path)


def _tiny_clip(path):
    from kiclip.model import create_clip

    torch.manual_seed(1)
    model, _ = create_clip("kiclip-tiny", None, vision_cfg={"image_size": 32})
    torch.save(model.state_dict(), path)


@pytest.mark.slow
def test_same_checkpoint_twice_identical_and_frozen_clip_baseline(b2n_shards, tmp_path):
    ckpt, clip = tmp_path / "epoch_000.pt", tmp_path / "tiny_clip.pt"
    _checkpoint(ckpt)
    _tiny_clip(clip)
    data = ["--b2n", "synthetic", "--data", str(b2n_shards)]
    runs = {  # three processes at once; each is single-threaded
        "twice": _start([*data, "--checkpoint", str(ckpt), str(ckpt), "--output",
                         str(tmp_path / "twice")], tmp_path / "twice.log"),
        "again": _start([*data, "--checkpoint", str(ckpt), "--output", str(tmp_path / "again")],
                        tmp_path / "again.log"),
        "frozen": _start([*data, "--frozen-clip", "--pretrained", str(clip), "--model",
                          "kiclip-tiny", "--output", str(tmp_path / "frozen")],
                         tmp_path / "frozen.log"),
    }
    for name, proc in runs.items():
        _finish(proc, tmp_path / f"{name}.log")
    results = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in runs}

    twice, again = results["twice"], results["again"]
    first, second = twice["runs"]
    for key in ("base", "novel", "hm"):
        assert first[key] == second[key] == again["runs"][0][key]  # same process, new process
        assert twice[f"{key}_std"] == 0.0
    for space in ("base", "novel"):
        detail = first[f"{space}_detail"]
        assert detail["videos"] == 24 and detail["views"] == 72 and detail["missing"] == 0
        assert detail == second[f"{space}_detail"] == again["runs"][0][f"{space}_detail"]
    assert first["hm"] == pytest.approx(harmonic_mean(first["base"], first["novel"]))
    assert (tmp_path / "twice" / "results.md").read_text().startswith("| base | novel | hm |")
    assert again["hm_std"] == 0.0  # one checkpoint: same keys, no spread, and no "±" shown
    assert "±" in (tmp_path / "twice" / "results.md").read_text()
    assert "±" not in (tmp_path / "again" / "results.md").read_text()

    frozen = results["frozen"]
    assert frozen["runs"][0]["source"] == "frozen-clip"
    for key in ("base", "novel", "hm"):
        assert 0.0 <= frozen[key] <= 100.0
    assert frozen["runs"][0]["base_detail"]["videos"] == 24


def test_missing_checkpoint_exits_2(b2n_shards, tmp_path):
    proc = subprocess.run(check=False, args=[sys.executable, str(EVALUATE), "--b2n", "synthetic", "--data",
                           str(b2n_shards), "--checkpoint", str(tmp_path / "nope.pt")],
                          cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "nope.pt does not exist" in proc.stderr


def test_view_summed_accuracy_sums_views_and_reports_each_class():
    import torch

    from kiclip.evaluation import view_summed_accuracy

    # Video "a" (class 0) has two views that only agree once summed; "b" and "c" are class 1,
    # "c" is wrong; the padded entry must not count.
    batches = [
        {"video": torch.tensor([[3.0, 0.0], [0.0, 1.0]]), "label": torch.tensor([0, 1]),
         "key": ["a", "b"], "valid": torch.tensor([True, True])},
        {"video": torch.tensor([[0.0, 2.0], [5.0, 0.0], [0.0, 9.0]]), "label": torch.tensor([0, 1, 0]),
         "key": ["a", "c", "pad"], "valid": torch.tensor([True, True, False])},
    ]
    result = view_summed_accuracy(batches, lambda video: video, expected_videos=3)
    assert result["videos"] == 3 and result["views"] == 4 and result["missing"] == 0
    assert result["per_class_top1"] == {"0": 100.0, "1": 50.0}
    assert abs(result["top1"] - 200.0 / 3) < 1e-9


def test_non_checkpoint_file_is_named_not_a_pytorch_file(b2n_shards, tmp_path):
    bogus = tmp_path / "results.json"
    bogus.write_text('{"base": 1.0}')
    proc = subprocess.run(check=False, args=[sys.executable, str(EVALUATE), "--b2n", "synthetic",
                                             "--data", str(b2n_shards), "--checkpoint", str(bogus)],
                          cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "results.json is not a PyTorch weights file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mean_and_std_is_the_sample_std_and_zero_for_one_run():
    from kiclip.evaluation import mean_and_std, summarise_metrics

    assert mean_and_std([60.0, 62.0, 64.0]) == pytest.approx((62.0, 2.0))  # n − 1, not n
    assert mean_and_std([55.5]) == (55.5, 0.0)
    with pytest.raises(ValueError):
        mean_and_std([])
    runs = [{"base": 60.0, "novel": 40.0}, {"base": 64.0, "novel": 40.0}]
    summary = summarise_metrics(runs, ["novel", "base"])
    assert list(summary) == ["novel", "novel_std", "base", "base_std"]
    assert summary["base"] == 62.0 and summary["base_std"] == pytest.approx(8 ** 0.5)
    assert summary["novel_std"] == 0.0
    assert summarise_metrics(runs[:1], ["base"]) == {"base": 60.0, "base_std": 0.0}
