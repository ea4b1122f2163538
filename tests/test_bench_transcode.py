"""The transcode benchmark's parts: the K400-like corpus and the decoded-frames-per-clip count."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from kiclip.data.dali_loader import pack_needed_frames
from shard_tools import make_bench_corpus as corpus
from shard_tools.lists import read_classes, read_video_list
from shard_tools.video_io import encode_frames, probe_video

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "launch"))
from bench_transcode import (  # noqa: E402
    bytes_at_quality,
    decoded_frames_for_clip,
    key_frames,
    mean_decoded_frames_per_clip,
    parse_rows,
    train_window_starts,
)

SHORT = corpus.CorpusSettings(seed=5, videos=1, seconds=0.24, width=96, height=64, world_size=256)


def _frames(settings: corpus.CorpusSettings, index: int = 0) -> np.ndarray:
    return np.stack(list(corpus.render_video(settings, index)))


def test_corpus_is_deterministic_by_seed_and_differs_between_seeds_and_videos():
    first = _frames(SHORT)
    assert first.shape == (6, 64, 96, 3) and first.dtype == np.uint8  # 0.24 s at 25 fps
    assert np.array_equal(first, _frames(SHORT))
    other_seed = _frames(corpus.CorpusSettings(**{**SHORT.__dict__, "seed": 6}))
    assert np.abs(first.astype(int) - other_seed).mean() > 10
    second_video = _frames(SHORT, index=1)  # 30 fps: 0.24 s is 7 frames
    assert len(second_video) == 7


def test_corpus_moves_and_compresses_far_worse_than_flat_frames():
    frames = _frames(SHORT)
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 3  # the camera moves
    flat = np.broadcast_to(frames.mean(axis=(0, 1, 2)).astype(np.uint8), frames.shape)
    textured_size = len(zlib.compress(frames.tobytes()))
    assert textured_size > 0.5 * frames.nbytes  # texture and noise: little to squeeze out
    assert textured_size > 50 * len(zlib.compress(flat.tobytes()))


def test_make_corpus_writes_what_make_shards_reads(tmp_path):
    paths = corpus.make_corpus(tmp_path, SHORT)
    assert paths == ["videos/bench_0000.mp4"]
    rows = read_video_list(tmp_path / "list.csv")
    assert [r.path for r in rows] == paths
    assert len(read_classes(tmp_path / "classes.json")) == corpus.CLASSES
    info = probe_video(tmp_path / paths[0])
    assert (info.frames, info.width, info.height, info.fps) == (6, 96, 64, 25)


@pytest.mark.parametrize(("keys", "wanted", "expected"), [
    (np.arange(0, 48, 4), [1, 17, 33], 6),  # one frame per GOP: key frame + 1 each
    (np.array([0]), [5, 10], 11),  # one GOP: from the key frame to the last wanted frame
    (np.arange(0, 48, 16), [16, 32], 2),  # wanted frames are key frames
    (np.array([0, 20]), [3, 10, 25, 25], 11 + 6),  # repeats count once
])
def test_decoded_frames_for_clip_counts_from_each_gops_key_frame(keys, wanted, expected):
    assert decoded_frames_for_clip(keys, np.array(wanted)) == expected


@pytest.mark.parametrize("gop", [1, 2, 4, 8, 16])
def test_mean_decoded_frames_per_clip_is_t_times_half_gop(gop):
    # 128 frames leave 16 window starts for 8 frames at stride 16: every offset in a GOP
    # (of a size dividing 16) is drawn equally often, so the mean is T·(GOP+1)/2.
    keys = np.arange(0, 128, gop)
    assert mean_decoded_frames_per_clip(keys, 128, 8, 16) == pytest.approx(8 * (gop + 1) / 2)


@pytest.mark.parametrize("gop", [1, 2, 4, 8, 16])
def test_keyframe_windows_decode_t_frames_when_the_gop_divides_the_stride(gop):
    keys = np.arange(0, 250, gop)
    assert mean_decoded_frames_per_clip(keys, 250, 8, 16, aligned=True) == 8.0
    starts = train_window_starts(keys, 250, 8, 16, aligned=True)
    assert len(starts) == 250 - 113 + 1  # one per uniform draw, each moved to a key frame
    assert set(starts.tolist()) == set(range(0, 138, gop))


def test_keyframe_windows_still_cost_more_when_the_gop_does_not_divide_the_stride():
    keys = np.arange(0, 250, 3)  # 16 = 5·3 + 1: the wanted frames drift through the GOP
    aligned = mean_decoded_frames_per_clip(keys, 250, 8, 16, aligned=True)
    assert 8 < aligned < mean_decoded_frames_per_clip(keys, 250, 8, 16)


def test_the_count_matches_the_frames_dalis_repack_keeps(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (40, 32, 32, 3), dtype=np.uint8)
    encode_frames(frames, tmp_path / "v.webm", "vp9", 25, gop=8)
    video = (tmp_path / "v.webm").read_bytes()
    keys = key_frames(video)
    assert keys.tolist() == [0, 8, 16, 24, 32]
    wanted = np.array([3, 5, 19, 30])
    ivf, _ = pack_needed_frames(video, wanted, 40)
    repacked = int.from_bytes(ivf[24:28], "little")  # IVF header: frame count
    assert decoded_frames_for_clip(keys, wanted) == repacked == 6 + 4 + 7
    assert key_frames(io.BytesIO(video).getvalue()).tolist() == keys.tolist()


def test_parse_rows_reads_codecs_and_gops_and_names_a_bad_entry():
    rows = parse_rows("mjpeg, vp9:4,h264:250")
    assert [(r.codec, r.gop) for r in rows] == [("mjpeg", None), ("vp9", 4), ("h264", 250)]
    with pytest.raises(ValueError, match="'vp9:x'"):
        parse_rows("vp9:x")
    with pytest.raises(ValueError, match="'av1:4'"):
        parse_rows("av1:4")


def test_bytes_at_quality_interpolates_log_bytes_in_psnr_and_refuses_to_extrapolate():
    curve = [(100.0, 30.0), (400.0, 34.0), (50.0, 28.0)]  # any order
    assert bytes_at_quality(curve, 32.0) == pytest.approx(200.0)  # geometric midpoint
    assert bytes_at_quality(curve, 34.0) == pytest.approx(400.0)
    assert bytes_at_quality(curve, 35.0) is None and bytes_at_quality(curve, 27.0) is None


def test_encode_options_override_the_codecs_own(tmp_path):
    frames = _frames(SHORT)
    sizes = {}
    for crf in (10, 60):
        encode_frames(frames, tmp_path / f"q{crf}.webm", "vp9", 25, gop=4, options={"crf": str(crf)})
        sizes[crf] = (tmp_path / f"q{crf}.webm").stat().st_size
    assert sizes[10] > 2 * sizes[60]


@pytest.mark.slow
def test_bench_transcode_command_writes_the_table(tmp_path):
    out = tmp_path / "bench"
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve().parents[1] / "launch" / "bench_transcode.py"),
         "--out", str(out), "--videos", "2", "--seconds", "1", "--rows", "mjpeg,vp9:4,vp9:25",
         "--loaders", "torch", "--passes", "1", "--batch-size", "1", "--workers", "1",
         "--rq-videos", "1", "--stride", "2"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    rows = {r["row"]: r for r in summary["rows"]}
    assert rows["mjpeg"]["decoded_frames_per_clip"] == 8.0  # every frame a key frame
    assert 8 < rows["vp9 gop 4"]["decoded_frames_per_clip"] < 8 * 4
    assert rows["vp9 gop 4"]["bytes_per_video_s"] > rows["vp9 gop 25"]["bytes_per_video_s"]
    assert rows["vp9 gop 4"]["torch"]["counted_decoded_frames_per_clip"] <= 8 * 4
    assert [r["gop"] for r in summary["rate_quality"]] == [4, 25]
    assert "| vp9 gop 4 |" in (out / "table.md").read_text()
    # Key-frame windows at GOP 4 and stride 2: each GOP holds the frames at phases 0 and 2.
    aligned = rows["vp9 gop 4"]["keyframe_windows"]
    assert aligned["decoded_frames_per_clip"] == 12.0
    assert aligned["torch"]["counted_decoded_frames_per_clip"] == 12.0
    assert aligned["window_starts_per_video"] < rows["vp9 gop 4"]["window_starts_per_video"]
    assert rows["mjpeg"]["keyframe_windows"]["loaders_run"] is False
