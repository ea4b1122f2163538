"""Portrait phone videos: a display rotation is read, recorded in the shards and applied by both
loaders and by predict's frame reader, so every path shows the picture the way a player does.

Each test writes an upright, asymmetric picture (four differently coloured quadrants; any of the
eight flips/quarter turns of it is a different picture) stored sideways or upside down, with a
display matrix saying how to turn it back, and compares what comes out with the same picture
stored upright.
"""
from __future__ import annotations

import json
import struct
import tarfile
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from test_loaders import open_loader

from kiclip.data.decode import decode_frames
from kiclip.data.sampling import ClipSpec
from kiclip.inference import load_video_clips
from kiclip.rotation import rotate_upright
from shard_tools import make_shards
from shard_tools.video_io import probe_video

UPRIGHT_H, UPRIGHT_W, FRAMES = 48, 64, 8
CLIP = {"num_frames": 4, "stride": 2, "image_size": 32, "num_views": 2}
# Normalised units (1.0 ≈ 70 grey levels): lossy coding of the turned picture vs the upright
# one differs a little at the quadrant edges; a wrongly turned picture differs by ~1 or more.
SAME, DIFFERENT = 0.08, 0.5


def upright_frames() -> list[np.ndarray]:
    """FRAMES uint8 (UPRIGHT_H, UPRIGHT_W, 3) frames: red/green/blue/white quadrants that
    brighten a little from frame to frame (so frame order shows too)."""
    h, w = UPRIGHT_H // 2, UPRIGHT_W // 2
    frames = []
    for i in range(FRAMES):
        image = np.empty((UPRIGHT_H, UPRIGHT_W, 3), np.uint8)
        image[:h, :w] = (200, 30 + 4 * i, 30)
        image[:h, w:] = (30, 200, 30 + 4 * i)
        image[h:, :w] = (30 + 4 * i, 30, 200)
        image[h:, w:] = (220, 220, 220 - 4 * i)
        frames.append(image)
    return frames


def write_rotated_video(path: Path, rotation: int, codec: str = "libvpx-vp9",
                        pix_fmt: str = "yuv420p", how: str = "matrix") -> Path:
    """The upright picture stored turned `rotation` degrees counterclockwise, with a display
    matrix (`how="tag"`: only a legacy `rotate` tag; "none": nothing) telling players to turn
    it clockwise by `rotation`, as a portrait phone video does with 90."""
    frames = [np.ascontiguousarray(np.rot90(f, k=rotation // 90)) for f in upright_frames()]
    container_format = {".mp4": "mp4", ".mkv": "matroska", ".mov": "mov"}[path.suffix]
    with av.open(str(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = pix_fmt
        if how == "tag":
            stream.metadata["rotate"] = str(rotation)
        elif how == "matrix" and rotation:
            stream.set_display_rotation(-rotation)  # PyAV counts counterclockwise
        for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def _tkhd_matrix_offset(data: bytes) -> int:
    """Where the 3×3 matrix of the (last) mp4 track header box starts."""
    at = data.rindex(b"tkhd")  # box type; version (1 byte) and flags (3) follow
    times = 32 if data[at + 4] == 1 else 20  # creation, modification, track id, -, duration
    return at + 8 + times + 16  # then reserved, layer, group, volume, reserved


def read_tkhd_matrix(path: Path) -> tuple[int, ...]:
    """(a, b, u, c, d, v, tx, ty, w) raw fixed-point integers of the mp4's track header."""
    data = path.read_bytes()
    return struct.unpack(">9i", data[_tkhd_matrix_offset(data):][:36])


def write_tkhd_matrix(path: Path, matrix: tuple[int, ...]) -> None:
    data = bytearray(path.read_bytes())
    at = _tkhd_matrix_offset(bytes(data))
    data[at:at + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def normalised_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


def assert_upright(got: torch.Tensor, reference: torch.Tensor, what: str) -> None:
    """`got` (..., S, S) matches `reference`, and no other quarter turn or flip of it does."""
    assert got.shape == reference.shape, what
    assert normalised_difference(got, reference) < SAME, what
    for k in (1, 2, 3):
        assert normalised_difference(torch.rot90(got, k, (-2, -1)), reference) > DIFFERENT, what
    assert normalised_difference(got.flip(-1), reference) > DIFFERENT, what


def test_quicktime_portrait_matrix_is_a_clockwise_quarter_turn(tmp_path):
    # QuickTime maps a coded pixel (x, y) to (a·x + c·y + tx, b·x + d·y + ty). A portrait phone
    # video has a=0, b=1, c=-1, d=0, tx=coded height: (x, y) → (H - y, x), so the coded frame's
    # top edge becomes the displayed right edge: a clockwise quarter turn.
    one, quarter = 1 << 16, 1 << 30
    video = write_rotated_video(tmp_path / "patched.mp4", 90, codec="mjpeg", pix_fmt="yuvj420p",
                                how="none")
    assert read_tkhd_matrix(video)[:5] == (one, 0, 0, 0, one)  # identity so far
    coded_height = UPRIGHT_W
    write_tkhd_matrix(video, (0, one, 0, -one, 0, 0, coded_height * one, 0, quarter))
    info = probe_video(video)
    assert (info.rotation, info.height, info.width) == (90, UPRIGHT_H, UPRIGHT_W)
    frames = decode_frames(str(video), np.arange(FRAMES), rotation=None)
    assert frames.shape == (FRAMES, UPRIGHT_H, UPRIGHT_W, 3)
    error = np.abs(frames.astype(int) - np.stack(upright_frames()).astype(int)).mean()
    assert error < 6, error
    # The test helper writes the same matrix a phone does.
    written = write_rotated_video(tmp_path / "written.mp4", 90)
    assert read_tkhd_matrix(written)[:5] == (0, one, 0, -one, 0)


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_probe_reads_rotation_and_upright_size(tmp_path, rotation):
    info = probe_video(write_rotated_video(tmp_path / f"r{rotation}.mp4", rotation))
    assert (info.rotation, info.height, info.width) == (rotation, UPRIGHT_H, UPRIGHT_W)


def test_legacy_rotate_tag_is_honoured(tmp_path):
    video = write_rotated_video(tmp_path / "tagged.mkv", 270, how="tag")
    assert probe_video(video).rotation == 270
    spec = ClipSpec(num_frames=4, stride=2, image_size=32, num_views=1)
    reference, _ = load_video_clips(write_rotated_video(tmp_path / "upright.mkv", 0), spec)
    clips, _ = load_video_clips(video, spec)
    assert_upright(clips, reference, "rotate tag")


def build_rotated_shards(root: Path, transcode: str = "copy", container: str = ".mp4",
                         **video) -> Path:
    """Shards of four videos of the same picture, stored at 0/90/180/270 (labels 0..3)."""
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    rows = []
    for label, rotation in enumerate((0, 90, 180, 270)):
        write_rotated_video(videos / f"r{rotation}{container}", rotation, **video)
        rows.append(f"r{rotation}{container},{label}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    (root / "classes.json").write_text(json.dumps({str(i): f"r{r}" for i, r in
                                                   enumerate((0, 90, 180, 270))}))
    shards = root / f"shards-{transcode}"
    assert make_shards.main(["--list", str(root / "list.csv"), "--video-root", str(videos),
                             "--classes", str(root / "classes.json"), "--out", str(shards),
                             "--transcode", transcode, "--workers", "1", "--no-progress"]) == 0
    return shards


def sample_jsons(shards: Path) -> dict[str, dict]:
    metas = {}
    for tar in sorted(shards.glob("*.tar")):
        with tarfile.open(tar) as archive:
            for member in archive:
                if member.name.endswith(".json"):
                    meta = json.loads(archive.extractfile(member).read())
                    metas[meta["video_id"]] = meta
    return metas


def clips_by_rotation(shards: Path, backend: str, mode: str) -> dict[int, torch.Tensor]:
    """Each video's clips (all views), keyed by the rotation it was stored at."""
    loader = open_loader(str(shards), CLIP, mode=mode, batch_size=4, seed=5, backend=backend,
                         device="cpu", num_workers=0 if backend == "torch" else 1,
                         shuffle=False)
    by_label: dict[int, list[torch.Tensor]] = {}
    for batch in loader:
        for i in range(len(batch["key"])):
            if batch["valid"][i]:
                by_label.setdefault(int(batch["label"][i]), []).append(batch["video"][i])
    assert sorted(by_label) == [0, 1, 2, 3]
    return {90 * label: torch.stack(clips) for label, clips in by_label.items()}


# Copied videos in codecs DALI's CPU decoder reads, in containers that carry a display matrix.
@pytest.fixture(scope="module", params=[(".mp4", "libvpx-vp9", "yuv420p"),
                                        (".mov", "mjpeg", "yuvj420p")], ids=["vp9-mp4", "mjpeg-mov"])
def copy_shards(request, tmp_path_factory):
    container, codec, pix_fmt = request.param
    return build_rotated_shards(tmp_path_factory.mktemp("rotated"), container=container,
                                codec=codec, pix_fmt=pix_fmt)


def test_copy_keeps_the_matrix_and_records_it(copy_shards):
    metas = sample_jsons(copy_shards)
    for rotation in (0, 90, 180, 270):
        meta = metas[f"r{rotation}"]
        assert (meta["rotation"], meta["height"], meta["width"]) == (rotation,
                                                                      UPRIGHT_H, UPRIGHT_W)


def test_fallback_loader_turns_copied_videos_upright(copy_shards):
    clips = clips_by_rotation(copy_shards, "torch", "test")
    for rotation in (90, 180, 270):
        assert_upright(clips[rotation], clips[0], f"torch loader, {rotation}°")


def test_transcode_bakes_the_rotation_in(tmp_path):
    shards = build_rotated_shards(tmp_path, transcode="mjpeg")
    for video_id, meta in sample_jsons(shards).items():
        assert (meta["rotation"], meta["height"], meta["width"]) == (0, UPRIGHT_H, UPRIGHT_W), \
            video_id
    clips = clips_by_rotation(shards, "torch", "test")
    for rotation in (90, 180, 270):
        assert_upright(clips[rotation], clips[0], f"transcoded, {rotation}°")


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_predict_frame_reader_turns_videos_upright(tmp_path, rotation):
    spec = ClipSpec(num_frames=4, stride=2, image_size=32, num_views=2)
    reference, frames = load_video_clips(write_rotated_video(tmp_path / "r0.mp4", 0), spec)
    clips, turned_frames = load_video_clips(
        write_rotated_video(tmp_path / f"r{rotation}.mp4", rotation), spec)
    assert np.array_equal(frames, turned_frames)
    assert_upright(clips, reference, f"predict, {rotation}°")


def test_rotate_upright_is_a_clockwise_turn():
    image = np.arange(6).reshape(2, 3, 1)  # [[0 1 2], [3 4 5]]
    assert rotate_upright(image, 90)[..., 0].tolist() == [[3, 0], [4, 1], [5, 2]]
    assert rotate_upright(image, 270)[..., 0].tolist() == [[2, 5], [1, 4], [0, 3]]
    assert rotate_upright(image, 180)[..., 0].tolist() == [[5, 4, 3], [2, 1, 0]]


@pytest.mark.dali
@pytest.mark.parametrize("mode", ["train", "test"])
def test_dali_turns_copied_videos_upright_like_the_fallback(copy_shards, mode):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    dali = clips_by_rotation(copy_shards, "dali", mode)
    torch_clips = clips_by_rotation(copy_shards, "torch", mode)
    for rotation in (0, 90, 180, 270):
        # Same crop, flip and frames as the fallback loader (DALI's resize differs a little).
        assert normalised_difference(dali[rotation], torch_clips[rotation]) < SAME, rotation
        if mode == "test":
            assert_upright(dali[rotation], torch_clips[0], f"DALI, {rotation}°")
