"""The synthetic world and make_synthetic: classes, rendering, layout, determinism, codecs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from shard_tools import synthetic_world as world
from shard_tools.lists import read_classes, read_video_list
from shard_tools.make_synthetic import SyntheticSettings, generate_dataset
from shard_tools.video_io import CODECS, DEFAULT_CODEC, encode_frames, probe_video

REPO = Path(__file__).resolve().parents[1]
SMALL = SyntheticSettings(seed=3, clips_per_class=1, val_per_class=1, size=32, frames=6)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_48_classes_named_and_indexed_by_the_contract_rule():
    classes = world.all_classes()
    assert len(classes) == 48
    assert classes[0].name == "red circle moving left"
    assert len({c.name for c in classes}) == 48
    for c in classes:
        assert c.index == (c.colour * 3 + c.shape) * 4 + c.direction
        colour, shape, moving, direction = c.name.split()
        assert (colour, shape, moving, direction) == (
            world.COLOURS[c.colour], world.SHAPES[c.shape], "moving",
            world.DIRECTIONS[c.direction])


def test_render_shape_dtype_and_seed_determinism():
    action = world.all_classes()[17]
    a = world.render_clip(action, np.random.default_rng(5), size=32, frames=6)
    b = world.render_clip(action, np.random.default_rng(5), size=32, frames=6)
    c = world.render_clip(action, np.random.default_rng(6), size=32, frames=6)
    assert a.shape == (6, 32, 32, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    with_trails = world.render_clip(action, np.random.default_rng(5), 32, 6, trails=True)
    assert not np.array_equal(a, with_trails)


@pytest.mark.parametrize("direction", range(4))
def test_object_path_moves_in_its_direction_and_stays_inside(direction):
    rng = np.random.default_rng(direction)
    for _ in range(20):
        radius = 64 * 0.12
        path = world._straight_path(rng, 64, 32, radius, world.DIRECTION_VECTORS[direction])
        moved = path[-1] - path[0]
        dx, dy = world.DIRECTION_VECTORS[direction]
        axis = 0 if dx else 1
        assert np.sign(moved[axis]) == (dx or dy) and abs(moved[axis]) > 10
        assert path.min() >= radius - 1 and path.max() <= 64 - radius + 1


def test_dataset_layout_matches_the_contract(tiny_synthetic):
    classes = read_classes(tiny_synthetic / "classes.json")
    assert [c.name for c in classes] == [a.name for a in world.all_classes()]
    train = read_video_list(tiny_synthetic / "train.csv")
    val = read_video_list(tiny_synthetic / "val.csv")
    assert len(train) == 48 * 2 and len(val) == 48
    for row in train + val:
        path = tiny_synthetic / row.path
        assert path.is_file()
        assert row.path.startswith(f"videos/{world.all_classes()[row.label].slug}/")
    description = json.loads((tiny_synthetic / "world.json").read_text())
    assert description["colours"] == list(world.COLOURS)
    assert description["classes"]["47"] == {"name": "yellow triangle moving down",
                                            "colour": 3, "shape": 2, "direction": 3}
    assert description["settings"]["size"] == 32


def test_same_seed_same_bytes_regardless_of_workers(tmp_path):
    generate_dataset(tmp_path / "a", SMALL, workers=1)
    generate_dataset(tmp_path / "b", SMALL, workers=2)
    generate_dataset(tmp_path / "c", replace(SMALL, seed=4), workers=1)
    a, b, c = (_digests(tmp_path / n) for n in "abc")
    assert a == b
    videos = [k for k in a if k.startswith("videos")]
    assert all(a[k] != c[k] for k in videos)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_every_codec_writes_a_probeable_video(tmp_path, codec):
    frames = world.render_clip(world.all_classes()[0], np.random.default_rng(0), 32, 5)
    path = tmp_path / f"clip.{CODECS[codec].ext}"
    encode_frames(frames, path, codec, fps=8.0, gop=4)
    info = probe_video(path)
    assert (info.frames, info.width, info.height, info.fps) == (5, 32, 32, 8.0)
    assert info.codec == {"mjpeg": "mjpeg", "vp9": "vp9", "h264": "h264"}[codec]


@pytest.mark.dali
@pytest.mark.parametrize("codec", ["mjpeg", "vp9"])
def test_dali_cpu_decoder_reads_the_cpu_codecs(tmp_path, codec):
    dali = pytest.importorskip("nvidia.dali")
    from nvidia.dali import fn, types

    frames = world.render_clip(world.all_classes()[9], np.random.default_rng(1), 32, 6)
    path = tmp_path / f"clip.{CODECS[codec].ext}"
    encode_frames(frames, path, codec, fps=8.0, gop=4)
    data = np.fromfile(path, dtype=np.uint8)

    @dali.pipeline_def(batch_size=1, num_threads=1, device_id=None)
    def decode():
        encoded = fn.external_source(source=lambda: [data], batch=True, dtype=types.UINT8)
        return fn.decoders.video(encoded, device="cpu")

    pipe = decode()
    pipe.build()
    decoded = np.array(pipe.run()[0][0])
    assert decoded.shape == (6, 32, 32, 3)
    # Lossy codecs: compare loosely with what was encoded.
    assert np.abs(decoded.astype(float) - frames.astype(float)).mean() < 12


def test_default_codec_is_one_dali_decodes_on_cpu():
    assert DEFAULT_CODEC in ("mjpeg", "vp9")


def test_cli_runs_as_a_script_and_has_help(tmp_path):
    helptext = subprocess.run([sys.executable, "shard_tools/make_synthetic.py", "--help"],
                              cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "--clips-per-class" in helptext and "--codec" in helptext
    done = subprocess.run(
        [sys.executable, "shard_tools/make_synthetic.py", "--out", str(tmp_path / "d"),
         "--clips-per-class", "1", "--val-per-class", "0", "--size", "16", "--frames", "3",
         "--no-progress", "--workers", "1"],
        cwd=REPO, capture_output=True, text=True, check=True)
    assert "wrote 48 train + 0 val videos" in done.stdout
    bad = subprocess.run([sys.executable, "shard_tools/make_synthetic.py", "--out",
                          str(tmp_path / "e"), "--size", "33"], cwd=REPO, capture_output=True,
                         text=True, check=False)
    assert bad.returncode == 2 and "--size: 33 is odd" in bad.stderr


@pytest.mark.parametrize("direction", range(4))
def test_trail_copies_lie_behind_the_object_along_its_motion(direction, monkeypatch):
    painted = []
    real_paint = world._paint

    def recording_paint(video, xs, ys, shape, centres, radius, rgb, alpha):
        painted.append((np.array(centres), float(radius), float(alpha[0])))
        real_paint(video, xs, ys, shape, centres, radius, rgb, alpha)

    monkeypatch.setattr(world, "_paint", recording_paint)
    action = world.ActionClass(colour=0, shape=1, direction=direction)
    world.render_clip(action, np.random.default_rng(3), 48, 8, trails=True, object_radius=(0.16, 0.22))
    # Order of painting: distractor, three trail copies (oldest first), the object itself.
    assert len(painted) == 5
    path, radius, _ = painted[-1]
    assert 0.16 * 48 <= radius <= 0.22 * 48
    step = np.asarray(world.DIRECTION_VECTORS[direction], np.float32)
    for (centres, _, alpha), offset in zip(painted[1:4], (1.5, 1.0, 0.5)):
        behind = (path - centres) @ step  # distance from the copy forward to the object
        assert np.allclose(behind, offset * radius, atol=1e-4) and 0.0 < alpha < 0.5


def test_object_radius_outside_the_frame_is_refused():
    with pytest.raises(ValueError, match="object_radius"):
        world.render_clip(world.all_classes()[0], np.random.default_rng(0), 32, 4, object_radius=(0.2, 0.4))


def test_object_radius_argument_parses_and_names_the_problem():
    import argparse

    assert world.parse_radius_range("0.16,0.22") == (0.16, 0.22)
    for bad in ("0.2", "0.3,0.1", "a,b", "0.1,0.3"):
        with pytest.raises(argparse.ArgumentTypeError, match="LOW"):
            world.parse_radius_range(bad)


@pytest.mark.parametrize("option, value, needle", [
    ("--frames", "0", "must be >= 1"), ("--fps", "0", "must be > 0"), ("--fps", "nan", "> 0"),
    ("--gop", "-2", "must be >= 1"), ("--clips-per-class", "0", ">= 1"),
    ("--val-per-class", "-1", ">= 0"), ("--size", "8", ">= 16"), ("--workers", "0", ">= 1"),
])
def test_numeric_options_are_checked_at_parse_time(tmp_path, capsys, option, value, needle):
    from shard_tools.make_synthetic import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "out"), option, value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"argument {option}: {value}" in err and needle in err
    assert not (tmp_path / "out").exists()
