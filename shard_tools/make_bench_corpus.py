"""A benchmark corpus that compresses like Kinetics after transcoding, generated from a seed.

    python shard_tools/make_bench_corpus.py --out data/bench_corpus --videos 12

Flat synthetic shapes (make_synthetic) compress far better than camera footage, so codec and
GOP choices measured on them say little about real storage. Each video here is a camera
panning and zooming over a large natural-looking texture (multi-octave noise with a 1/f-like
spectrum, as natural images have), with a few textured objects moving across it and mild
sensor noise: 10 s at 25 or 30 fps, 340×256 (Kinetics' usual size after scaling to a 256 short
side). Videos are stored losslessly (H.264 at quantiser 0, yuv420p), so the decoded source is
the exact reference a transcode's quality is measured against.

Writes DIR/videos/bench_NNNN.mp4, DIR/list.csv (rows `videos/bench_NNNN.mp4,label`) and
DIR/classes.json, the inputs make_shards takes. Same seed, same pixels.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from shard_tools.cli_common import positive_float, positive_int, setup_logging

log = logging.getLogger("make_bench_corpus")

OBJECTS = 3
NOISE_SIGMA = 2.0  # sensor noise, in 8-bit levels
CLASSES = 4  # labels only make the list valid for make_shards; they carry no meaning


@dataclass(frozen=True)
class CorpusSettings:
    """What decides a corpus' bytes: seed, video count, length, frame size, frame rates."""

    seed: int = 0
    videos: int = 12
    seconds: float = 10.0
    width: int = 340
    height: int = 256
    rates: tuple[int, ...] = (25, 30)  # video i gets rates[i % len(rates)]
    world_size: int = 1024  # side of the texture the camera moves over, pixels


def fractal_texture(rng: np.random.Generator, height: int, width: int,
                    octaves: int = 9, falloff: float = 0.72) -> np.ndarray:
    """uint8 (height, width, 3) multi-octave value noise with edges, contrast-stretched.

    Octave k is a random grid of 2**(k+2) cells per side, bilinearly upsampled, with amplitude
    falloff**k: coarse structure plus fine detail down to a few pixels, roughly the 1/f
    spectrum of natural images. A mid-scale field cut into a few levels adds regions with sharp
    boundaries (what edges in footage cost a codec). Channels share most of the structure so
    colours stay natural rather than rainbow.
    """
    total = np.zeros((height, width, 3), np.float32)
    for k in range(octaves):
        cells = min(2 ** (k + 2), max(height, width) // 2)
        grid = rng.standard_normal((cells + 1, cells + 1, 4)).astype(np.float32)
        layer = _upsample(grid, height, width)
        total += falloff ** k * (layer[..., :1] + 0.35 * layer[..., 1:])
    regions = _upsample(rng.standard_normal((9, 9, 1)).astype(np.float32), height, width)
    levels = np.floor(regions * 2.0)
    tint = rng.uniform(-0.8, 0.8, (3,)).astype(np.float32)
    total += levels * (0.8 + 0.3 * tint)
    low, high = np.percentile(total, (1, 99))
    return (np.clip((total - low) / (high - low), 0, 1) * 255).astype(np.uint8)


def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear upsampling of a (gh, gw, C) grid to (height, width, C)."""
    rows = np.linspace(0, grid.shape[0] - 1, height, dtype=np.float32)
    cols = np.linspace(0, grid.shape[1] - 1, width, dtype=np.float32)
    return _bilinear(grid, rows[:, None], cols[None, :])


def _bilinear(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """`image` (H, W, C) sampled at float coordinates `rows`, `cols` (broadcast together)."""
    r0 = np.clip(np.floor(rows).astype(np.int64), 0, image.shape[0] - 2)
    c0 = np.clip(np.floor(cols).astype(np.int64), 0, image.shape[1] - 2)
    fr = (rows - r0)[..., None].astype(np.float32)
    fc = (cols - c0)[..., None].astype(np.float32)
    top = image[r0, c0] * (1 - fc) + image[r0, c0 + 1] * fc
    bottom = image[r0 + 1, c0] * (1 - fc) + image[r0 + 1, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def _smooth_path(rng: np.random.Generator, t: np.ndarray, scale: float) -> np.ndarray:
    """A smooth random 1-D path over times `t` (seconds) within ±scale: two sinusoids plus a
    drift."""
    freqs = rng.uniform(0.03, 0.25, 2)
    phases = rng.uniform(0, 2 * np.pi, 2)
    drift = rng.uniform(-1, 1)
    wave = np.sin(2 * np.pi * freqs[0] * t + phases[0]) + 0.5 * np.sin(
        2 * np.pi * freqs[1] * t + phases[1])
    return scale / 2.5 * (wave + drift * t / max(t[-1], 1e-6))


def render_video(settings: CorpusSettings, index: int) -> Iterator[np.ndarray]:
    """uint8 (H, W, 3) frames of video `index`: a panning, zooming camera over a texture, a
    few textured objects moving in the frame, sensor noise. Depends only on (seed, index)."""
    rng = np.random.default_rng([settings.seed, index])
    world_size = settings.world_size
    world = fractal_texture(rng, world_size, world_size).astype(np.float32)
    fps = settings.rates[index % len(settings.rates)]
    count = max(1, round(settings.seconds * fps))
    t = np.arange(count) / fps
    h, w = settings.height, settings.width
    margin = world_size / 2 - 0.75 * max(h, w)  # room to pan at the widest zoom
    if margin <= 0:
        raise ValueError(f"world_size {world_size} leaves no room to pan a {w}x{h} frame")
    centre_r = world_size / 2 + _smooth_path(rng, t, margin)
    centre_c = world_size / 2 + _smooth_path(rng, t, margin)
    zoom = 1.25 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.05, 0.2) * t + rng.uniform(0, 6.3))
    objects = [_MovingObject.draw(rng, h, w, fps) for _ in range(OBJECTS)]
    grid_r = (np.arange(h, dtype=np.float32) - h / 2)[:, None]
    grid_c = (np.arange(w, dtype=np.float32) - w / 2)[None, :]
    for i in range(count):
        frame = _bilinear(world, centre_r[i] + grid_r * zoom[i], centre_c[i] + grid_c * zoom[i])
        for obj in objects:
            obj.paint(frame, i)
        frame += rng.normal(0, NOISE_SIGMA, frame.shape).astype(np.float32)
        yield np.clip(frame + 0.5, 0, 255).astype(np.uint8)


@dataclass
class _MovingObject:
    """A textured ellipse crossing the frame at constant velocity, bouncing off the edges."""

    texture: np.ndarray  # float32 (2r, 2r, 3)
    radius: int
    start: np.ndarray  # (row, col) of the centre at frame 0
    velocity: np.ndarray  # pixels per frame
    bounds: np.ndarray  # (rows, cols) the centre moves within

    @classmethod
    def draw(cls, rng: np.random.Generator, height: int, width: int, fps: int) -> _MovingObject:
        radius = int(rng.integers(height // 10, height // 5))
        texture = fractal_texture(rng, 2 * radius, 2 * radius, octaves=5).astype(np.float32)
        bounds = np.array([height, width], np.float64)
        speed = rng.uniform(40, 120) / fps  # 40..120 pixels per second
        angle = rng.uniform(0, 2 * np.pi)
        return cls(texture, radius, rng.uniform(0, 1, 2) * bounds,
                   speed * np.array([np.sin(angle), np.cos(angle)]), bounds)

    def paint(self, frame: np.ndarray, i: int) -> None:
        # Reflecting a straight path into the frame keeps the object visible and moving.
        centre = np.abs((self.start + self.velocity * i) % (2 * self.bounds) - self.bounds)
        centre = self.bounds - centre
        r = self.radius
        top, left = int(centre[0]) - r, int(centre[1]) - r
        yy, xx = np.mgrid[-r:r, -r:r]
        inside = (yy / r) ** 2 + (xx / (0.7 * r)) ** 2 < 1
        rows, cols = np.arange(top, top + 2 * r), np.arange(left, left + 2 * r)
        keep_r = (rows >= 0) & (rows < frame.shape[0])
        keep_c = (cols >= 0) & (cols < frame.shape[1])
        mask = inside[keep_r][:, keep_c]
        region = frame[rows[keep_r][:, None], cols[keep_c][None, :]]
        region[mask] = self.texture[keep_r][:, keep_c][mask]
        frame[rows[keep_r][:, None], cols[keep_c][None, :]] = region


def write_lossless(frames: Iterator[np.ndarray], path: Path, fps: int) -> int:
    """Encode frames losslessly (H.264 at quantiser 0, yuv420p, in mp4); return the count.

    Only the yuv420p conversion is lossy, and every transcode starts from the same decoded
    frames, so those are the reference for quality.
    """
    frames = iter(frames)
    first = next(frames)
    count = 0
    with av.open(str(path), "w", format="mp4", container_options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast", "threads": "1"}
        stream.codec_context.flags |= av.codec.context.Flags.bitexact
        for frame in itertools.chain([first], frames):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            count += 1
        out.mux(stream.encode(None))
    return count


def video_path(index: int) -> str:
    """A corpus video's path relative to the corpus folder."""
    return f"videos/bench_{index:04d}.mp4"


def make_corpus(out: Path, settings: CorpusSettings) -> list[str]:
    """Write the corpus into `out` (see the module doc); return the videos' relative paths.

    Videos already present are kept: the same settings write the same bytes.
    """
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(settings.videos):
        rel = video_path(i)
        if not (out / rel).exists():
            partial = out / rel.replace(".mp4", ".partial.mp4")
            write_lossless(render_video(settings, i), partial,
                           settings.rates[i % len(settings.rates)])
            partial.rename(out / rel)
            log.info("wrote %s", rel)
        paths.append(rel)
    (out / "list.csv").write_text("".join(f"{p},{i % CLASSES}\n" for i, p in enumerate(paths)))
    (out / "classes.json").write_text(
        json.dumps({str(c): f"bench class {c}" for c in range(CLASSES)}, indent=1))
    return paths


def main(argv=None) -> int:
    d = CorpusSettings()
    p = argparse.ArgumentParser(
        description=" ".join(__doc__.split("\n\n")[i] for i in (0, 2, 3)).replace("\n", " "),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="corpus folder")
    p.add_argument("--videos", type=positive_int, default=d.videos, help="how many videos")
    p.add_argument("--seconds", type=positive_float, default=d.seconds,
                   help="length of each video")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="the same seed writes the same pixels (videos already there are kept)")
    args = p.parse_args(argv)
    setup_logging()
    settings = CorpusSettings(seed=args.seed, videos=args.videos, seconds=args.seconds)
    paths = make_corpus(args.out, settings)
    print(f"make_bench_corpus: {len(paths)} videos in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
