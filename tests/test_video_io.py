"""shard_tools.video_io's encoders: the quality they are set to holds for the whole video."""
from __future__ import annotations

import av
import numpy as np

from shard_tools.video_io import encode_frames


def textured_frames(count: int = 31, height: int = 96, width: int = 128) -> list[np.ndarray]:
    """Grey noise sliding sideways over colour gradients: detail a JPEG quantiser must spend
    bits on in every frame (a flat picture would look fine at any quality)."""
    noise = np.random.default_rng(0).integers(0, 256, (height, width)).astype(np.float64)
    rows, cols = np.mgrid[0:height, 0:width]
    frames = []
    for i in range(count):
        texture = np.roll(noise, 2 * i, axis=1)
        image = np.stack([0.6 * texture + 100 * cols / width, 0.6 * texture + 100 * rows / height,
                          0.6 * texture + 50], axis=-1)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


def test_mjpeg_quality_does_not_fall_over_the_video(tmp_path):
    source = textured_frames()
    path = tmp_path / "textured.avi"
    encode_frames(source, path, "mjpeg", fps=25)
    with av.open(str(path)) as container:
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == len(source)
    first, late = psnr(decoded[0], source[0]), psnr(decoded[30], source[30])
    # Left to rate control the encoder starts near 35 dB and is below 20 dB by frame 10.
    assert abs(late - first) < 1.0, (first, late)
    assert first > 35, first
