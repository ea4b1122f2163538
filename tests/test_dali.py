"""DALI's CPU pipeline against the fallback loader, on the same tiny shards."""
import logging
import shutil
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")

from test_loaders import (
    CLIP,
    class_sorted_shards,  # noqa: F401 (a fixture, used by name)
    class_spread_gap,
    corrupt_one_sample,
    epoch_rows,
    make_tiny_shards,
    open_loader,
    rank_row_counts,
    rank_shares,
)

from kiclip.data import UnsupportedCodecError

pytestmark = pytest.mark.dali

# Normalised units (1.0 ≈ 70 grey levels). DALI (libavcodec + its own YUV→RGB, resize) and
# PyAV (swscale) + torch differ slightly per pixel, mostly at the moving shapes' edges.
MEAN_TOL, MAX_TOL = 0.05, 1.0


@pytest.fixture(scope="module", params=["vp9", "mjpeg"])
def shards(request, tmp_path_factory):
    return make_tiny_shards(tmp_path_factory.mktemp(request.param), codec=request.param)


def clips_by_key(loader, epoch):
    loader.set_epoch(epoch)
    out = {}
    for batch in loader:
        for i, key in enumerate(batch["key"]):
            if batch["valid"][i]:
                out[key, int(batch["view"][i])] = (batch["frames"][i].tolist(), batch["video"][i])
    return out


@pytest.mark.parametrize("mode", ["train", "test"])
def test_dali_and_fallback_agree_on_indices_and_pixels(shards, mode):
    got = {}
    for backend in ("dali", "torch"):
        loader = open_loader(shards, CLIP, mode=mode, batch_size=8, seed=11, backend=backend,
                             device="cpu", num_workers=2)
        got[backend] = clips_by_key(loader, epoch=5)
    assert got["dali"].keys() == got["torch"].keys()
    assert len(got["dali"]) == 48 * (2 if mode == "test" else 1)
    for k, (frames, video) in got["dali"].items():
        t_frames, t_video = got["torch"][k]
        assert frames == t_frames, k
        diff = (video - t_video).abs()
        assert diff.mean() < MEAN_TOL and diff.max() < MAX_TOL, (k, diff.mean(), diff.max())


def test_dali_two_ranks_cover_every_sample_once_with_equal_counts(shards):
    keys, steps = Counter(), []
    for rank in range(2):
        loader = open_loader(shards, CLIP, mode="train", batch_size=5, seed=3, rank=rank,
                             world_size=2, backend="dali", device="cpu", num_workers=2)
        rows = epoch_rows(loader, 1)
        steps.append(len(loader))
        assert len(rows) == len(loader) * 5
        keys.update(k for k, _, ok, _ in rows if ok)
    assert steps[0] == steps[1] == 5
    assert set(keys.values()) == {1} and len(keys) == 48


def test_dali_uneven_split_pads_never_wraps(shards):
    # 48 samples over 5 ranks: shares of 9 and 10, padded to 10
    counts = rank_row_counts(shards, 5, mode="test", batch_size=4, backend="dali", device="cpu",
                             num_workers=1)
    assert {n for n, _ in counts} == {24}
    assert sum(valid for _, valid in counts) == 96


def test_dali_corrupt_sample_is_skipped_and_counted(shards, tmp_path, caplog):
    bad_shards, bad = corrupt_one_sample(shards, tmp_path / "corrupt")
    loader = open_loader(bad_shards, CLIP, mode="train", batch_size=8, backend="dali", device="cpu",
                         num_workers=2)
    with caplog.at_level(logging.ERROR):
        rows = epoch_rows(loader, 0)
    # DALI fails whole batches: the corrupt video's batch is skipped and counted; the epoch
    # goes on past it with every other batch intact and the same number of steps.
    assert 1 <= loader.skipped <= 8
    assert "could not decode" in caplog.text
    valid = [k for k, _, ok, _ in rows if ok]
    assert bad not in valid and len(valid) == 48 - loader.skipped
    assert len(set(valid)) == len(valid)


def test_inspect_shards_decode_prints_same_frames_for_both_loaders(shards, tmp_path):
    import json
    import subprocess
    import sys

    if "mjpeg" in str(shards):
        pytest.skip("one codec is enough for the CLI (two subprocesses, slow on 2 cores)")
    lines = {}
    for backend in ("dali", "torch"):
        sheet = tmp_path / f"{backend}.png"
        out = subprocess.run(
            [sys.executable, "shard_tools/inspect_shards.py", str(shards), "--decode", "4",
             "--loader", backend, "--seed", "9", "--num-frames", "4", "--stride", "3",
             "--image-size", "32", "--sheet", str(sheet)],
            capture_output=True, text=True, check=True, cwd=Path(__file__).parents[1])
        lines[backend] = [json.loads(line) for line in out.stdout.splitlines()]
        assert sheet.stat().st_size > 0
    assert len(lines["dali"]) == 4
    assert lines["dali"] == lines["torch"]
    assert all(c["shape"] == [3, 4, 32, 32] for c in lines["dali"])


@pytest.fixture(scope="module")
def h264_shards(tmp_path_factory):
    """Shards of H.264 videos as `make_shards --transcode copy` stores them."""
    return make_tiny_shards(tmp_path_factory.mktemp("h264"), codec="h264", per_shard=48)


def test_dali_on_a_cpu_refuses_h264_naming_codec_folder_and_fix(h264_shards, caplog, capsys):
    from shard_tools.inspect_shards import main as inspect_main

    with pytest.raises(UnsupportedCodecError) as err:
        open_loader(h264_shards, CLIP, backend="dali", device="cpu")
    for part in ("h264", str(h264_shards), "--transcode vp9", "GPU"):
        assert part in str(err.value)
    # inspect_shards --decode --loader dali: exit 2 and one error line, no per-batch errors.
    with caplog.at_level(logging.WARNING):
        code = inspect_main([str(h264_shards), "--decode", "4", "--loader", "dali",
                             "--num-frames", "4", "--stride", "3", "--image-size", "32"])
    assert code == 2 and capsys.readouterr().out == ""
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "h264" in errors[0] and "--transcode vp9" in errors[0]


@pytest.mark.slow
def test_train_with_dali_on_a_cpu_refuses_h264_before_the_run(b2n_shards, tmp_path):
    from train_fixtures import FAST, run_train

    from shard_tools import make_shards

    data = tmp_path / "data"
    shutil.copytree(b2n_shards, data, ignore=shutil.ignore_patterns("train_split1"))
    work = b2n_shards.parent  # build_b2n_shards keeps the videos and splits beside the shards
    assert make_shards.main(["--list", str(work / "splits/split1/train.csv"),
                             "--video-root", str(work / "synthetic"),
                             "--classes", str(work / "splits/base_classes.json"),
                             "--out", str(data / "train_split1"), "--transcode", "h264",
                             "--workers", "1", "--no-progress"]) == 0
    out = tmp_path / "run"
    proc = run_train([*FAST, "--data", str(data), "--output", str(out), "--loader", "dali"],
                     timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and not out.exists()
    assert f"{data / 'train_split1'}" in proc.stderr and "h264" in proc.stderr
    assert "--transcode vp9" in proc.stderr


def test_dali_ranks_get_a_fresh_mixed_share_every_epoch(class_sorted_shards):  # noqa: F811
    # DALI's reader sharding would give rank 0 classes 0-23 and rank 1 classes 24-47 every
    # epoch (a gap of 0.5): the per-epoch permutation split across ranks mixes them.
    shares = rank_shares(class_sorted_shards, "dali")
    assert class_spread_gap(shares) <= 0.15
    for epoch in (0, 1):
        keys = [k for r in (0, 1) for k, _ in shares[r, epoch]]
        assert len(keys) == len(set(keys)) == 48  # each sample once per epoch
    for rank in (0, 1):
        assert {k for k, _ in shares[rank, 0]} != {k for k, _ in shares[rank, 1]}


def test_dali_ranks_step_through_the_single_process_batches(shards):
    # Rank r reads positions r, r + W, ... of the epoch's permutation, so at every step the W
    # ranks' batches of B together are the single process's batch of W·B (what a 2-rank run
    # must match a 1-rank run with).
    def batches(rank, world_size, batch_size):
        loader = open_loader(shards, CLIP, mode="train", batch_size=batch_size, seed=4, rank=rank,
                             world_size=world_size, backend="dali", device="cpu",
                             num_workers=1)
        loader.set_epoch(1)
        return [{k for k, ok in zip(b["key"], b["valid"]) if ok} for b in loader]

    single = batches(0, 1, 8)
    ranks = [batches(r, 2, 4) for r in range(2)]
    assert [a | b for a, b in zip(*ranks)] == single
