"""The loaders' work counters (frames decoded, bytes read, clips) on videos of a known GOP, and
shards with and without the packet index giving the same clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_loaders import open_loader
from test_packets import GOP, frames_through_key_runs, write_gop_video

from kiclip.data import open_shards
from kiclip.data.dali_loader import dali_available
from kiclip.packets import build_packet_index, encode_packet_index
from shard_tools.shard_writer import ShardWriter

CLIP = {"num_frames": 4, "stride": 6, "image_size": 32}
SAMPLES = 6
dali = pytest.param("dali", marks=[pytest.mark.dali, pytest.mark.skipif(
    not dali_available(), reason="NVIDIA DALI is not installed")])


def write_shards(out: Path, video: bytes, indexed: bool) -> Path:
    """SAMPLES copies of a 40-frame VP9 video in one shard, with or without the packet index
    (shards made before the index existed have none)."""
    meta = {"name": "x", "frames": 40, "fps": 25.0, "width": 48, "height": 32,
            "codec": "vp9", "rotation": 0}
    if indexed:
        meta["packets"] = encode_packet_index(build_packet_index(video))
    out.mkdir(parents=True)
    writer = ShardWriter(out, 0)
    for i in range(SAMPLES):
        writer.add(f"s{i:03d}", "webm", video, {**meta, "label": i % 2, "video_id": f"v{i}"})
    writer.close()
    return out


@pytest.fixture(scope="module")
def gop_shards(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("work")
    video = write_gop_video(root / "v.webm")
    return {"indexed": write_shards(root / "indexed", video, indexed=True),
            "old": write_shards(root / "old", video, indexed=False)}


def run_epoch(shards: Path, backend: str, workers: int = 0):
    loader = open_loader(shards, CLIP, mode="train", batch_size=4, seed=3, backend=backend,
                         device="cpu", num_workers=workers)
    clips = {}
    for batch in loader:
        for i, key in enumerate(batch["key"]):
            if batch["valid"][i]:
                clips[key] = (batch["frames"][i].tolist(), batch["video"][i])
    return loader, clips


def member_bytes(shards: Path) -> int:
    """Bytes of one sample's video and json members (every sample is the same here)."""
    sample = open_shards(shards).samples[0]
    return sample.video[1] + sample.meta[1]


@pytest.mark.parametrize("backend", [dali, "torch"])
def test_counters_are_exact_on_a_known_gop(gop_shards, backend):
    shards = gop_shards["indexed"]
    loader, clips = run_epoch(shards, backend)
    assert loader.clips == len(clips) == SAMPLES
    expected = sum(frames_through_key_runs(frames, GOP) for frames, _ in clips.values())
    assert loader.decoded_frames == expected
    # Both read each sample's members once.
    assert loader.bytes_read == SAMPLES * member_bytes(shards)
    _, again = run_epoch(shards, backend)
    assert loader.clips == SAMPLES  # counters belong to the loader, not to a run of it


@pytest.mark.parametrize("backend", [dali, "torch"])
def test_old_shards_without_the_index_give_the_same_clips(gop_shards, backend):
    indexed, new = run_epoch(gop_shards["indexed"], backend)
    old_loader, old = run_epoch(gop_shards["old"], backend)
    assert new.keys() == old.keys()
    for key, (frames, video) in new.items():
        assert frames == old[key][0] and torch.equal(video, old[key][1]), key
    old_expected = sum((max(frames) + 1 if backend == "torch"  # PyAV from the first frame
                        else frames_through_key_runs(frames, GOP))  # DALI demuxes and re-packs
                       for frames, _ in old.values())
    assert old_loader.decoded_frames == old_expected
    assert old_loader.decoded_frames > indexed.decoded_frames or backend == "dali"


def test_fallback_workers_send_their_counts_to_the_main_process(gop_shards):
    shards = gop_shards["indexed"]
    loader, clips = run_epoch(shards, "torch", workers=2)
    assert loader.clips == SAMPLES
    assert loader.decoded_frames == sum(frames_through_key_runs(f, GOP) for f, _ in clips.values())
    # Each worker reads only its own samples' members: the shard set's member bytes, once.
    assert loader.bytes_read == SAMPLES * member_bytes(shards)
    assert loader.bytes_read == sum(s.video[1] + s.meta[1] for s in open_shards(shards).samples)


def bench_data_list(shards: Path, folder: Path) -> tuple[Path, Path, bytes]:
    """(list file, video root, video bytes): the shards' video as SAMPLES files for loader (c)."""
    root = folder / "videos"
    root.mkdir(parents=True)
    video = open_shards(shards).samples[0]
    with open(video.tar, "rb") as f:
        f.seek(video.video[0])
        data = f.read(video.video[1])
    for i in range(SAMPLES):
        (root / f"v{i}.webm").write_bytes(data)
    (folder / "list.csv").write_text("".join(f"v{i}.webm,{i % 2}\n" for i in range(SAMPLES)))
    return folder / "list.csv", root, data


def run_bench_data(shards: Path, folder: Path, capsys, *flags: str) -> tuple[dict, bytes]:
    from launch import bench_data

    rows, root, data = bench_data_list(shards, folder)
    assert bench_data.main(["--shards", str(shards), "--list", str(rows), "--video-root", str(root),
                            "--runs", "1", "--loaders", "torch,reference", "--workers", "0",
                            "--batch-size", "2", "--frames", "4", "--image-size", "32",
                            *flags]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1]), data


def test_bench_data_reports_work_per_clip(gop_shards, tmp_path, capsys):
    summary, data = run_bench_data(gop_shards["indexed"], tmp_path, capsys, "--stride", "6")
    assert summary["decoded_frames_per_clip"]["reference"] == 40  # it decodes every frame
    assert 4 <= summary["decoded_frames_per_clip"]["torch"] < 40
    assert summary["bytes_per_clip"]["reference"] == len(data)
    assert set(summary["ratio_to_reference"]) == {"torch", "reference"}
    assert summary["shard_bytes_per_clip"] > len(data)
    assert np.isfinite(summary["clips_per_s"]["torch"])


def test_bench_data_cuts_key_frame_windows_unless_told_not_to(gop_shards, tmp_path, capsys):
    stride = ["--stride", str(GOP)]  # the GOP divides the stride
    aligned, _ = run_bench_data(gop_shards["indexed"], tmp_path / "on", capsys, *stride)
    uniform, _ = run_bench_data(gop_shards["indexed"], tmp_path / "off", capsys, *stride,
                                "--no-keyframe-windows")
    assert aligned["spec"]["keyframe_windows"] is True
    assert uniform["spec"]["keyframe_windows"] is False
    assert aligned["decoded_frames_per_clip"]["torch"] == 4  # every wanted frame a key frame
    assert uniform["decoded_frames_per_clip"]["torch"] > 4
    assert aligned["decoded_frames_per_clip"]["reference"] == 40  # (c) stays the baseline


def test_bench_planner_times_both_planner_paths(gop_shards, capsys):
    from launch import bench_planner

    assert bench_planner.main(["--shards", str(gop_shards["indexed"]), "--samples", "4",
                               "--rounds", "1", "--frames", "4", "--stride", "6"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["with_index"] == summary["samples"] == 4
    assert set(summary["cpu_ms_per_clip"]) == set(summary["wall_ms_per_clip"]) == {"index", "demux"}
    assert all(v > 0 for v in summary["wall_ms_per_clip"].values())


ALIGNED = {**CLIP, "stride": GOP}  # a key-frame interval dividing the stride


def aligned_epoch(shards: Path, backend: str, mode: str = "train"):
    loader = open_loader(shards, {**ALIGNED, "keyframe_windows": True}, mode=mode, batch_size=4,
                         seed=3, backend=backend, device="cpu", num_workers=0)
    clips = {}
    for batch in loader:
        for i, key in enumerate(batch["key"]):
            if batch["valid"][i]:
                clips.setdefault(key, []).append(batch["frames"][i].tolist())
    return loader, clips


@pytest.mark.parametrize("mode", ["train", "test"])
@pytest.mark.parametrize("backend", [dali, "torch"])
def test_keyframe_windows_decode_exactly_the_clip_frames(gop_shards, backend, mode):
    loader, clips = aligned_epoch(gop_shards["indexed"], backend, mode)
    views = 3 if mode == "test" else 1
    assert loader.clips == len(clips) == SAMPLES
    wanted = np.array([f for per_key in clips.values() for f in per_key])
    assert wanted.shape == (SAMPLES * views, ALIGNED["num_frames"])
    assert np.all(wanted % GOP == 0) and wanted.max() < 40  # every wanted frame is a key frame
    # Test views may share frames (a 40-frame video has two key-frame starts that fit).
    assert loader.decoded_frames == sum(len({f for view in per_key for f in view})
                                        for per_key in clips.values())
    if mode == "train":
        assert loader.decoded_frames == SAMPLES * ALIGNED["num_frames"]


@pytest.mark.dali
@pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed")
@pytest.mark.parametrize("mode", ["train", "test"])
def test_keyframe_windows_plan_the_same_clips_in_both_loaders(gop_shards, mode):
    _, torch_clips = aligned_epoch(gop_shards["indexed"], "torch", mode)
    _, dali_clips = aligned_epoch(gop_shards["indexed"], "dali", mode)
    assert torch_clips == dali_clips


@pytest.mark.parametrize("backend", [dali, "torch"])
def test_keyframe_windows_leave_samples_without_an_index_unaligned(gop_shards, backend):
    _, aligned = aligned_epoch(gop_shards["old"], backend)
    loader = open_loader(gop_shards["old"], ALIGNED, mode="train", batch_size=4, seed=3,
                         backend=backend, device="cpu", num_workers=0)
    plain = {key: [batch["frames"][i].tolist()] for batch in loader
             for i, key in enumerate(batch["key"]) if batch["valid"][i]}
    assert aligned == plain
    assert any(frames[0][0] % GOP for frames in plain.values())  # the check can fail
