"""Shared fixtures: tiny synthetic datasets and a helper that writes small test videos."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from kiclip_kernels.dispatch import interpret_triton_without_cuda
from shard_tools.make_synthetic import SyntheticSettings, generate_dataset

# Before any test module imports Triton (directly or through a library; the imports above do
# not): kernel tests on a host without CUDA need the interpreter.
interpret_triton_without_cuda()

TINY_SYNTHETIC = SyntheticSettings(seed=0, clips_per_class=2, val_per_class=1, size=32, frames=8)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A synthetic dataset of 48 classes x (2 train + 1 val) clips of 8 frames at 32 px.

    Session-scoped and shared: tests must not modify it (copy it first).
    """
    out = tmp_path_factory.mktemp("synthetic")
    generate_dataset(out, TINY_SYNTHETIC, workers=1)
    return out


def write_test_video(path: Path, frames: int = 8, width: int = 32, height: int = 32,
                     codec: str = "libx264", container: str = "mp4", pix_fmt: str = "yuv420p",
                     pts_ms: list[int] | None = None, options: dict | None = None) -> Path:
    """Encode a small moving-bar video; `pts_ms` gives variable frame timestamps in ms."""
    with av.open(str(path), "w", format=container, options=options or {}) as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if pts_ms:
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.time_base = Fraction(1, 1000)
        for i in range(frames):
            image = np.full((height, width, 3), 40, np.uint8)
            image[:, (i * 3) % width:(i * 3) % width + 4] = 220
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if pts_ms:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


@pytest.fixture
def make_video():
    """The write_test_video function, as a fixture so tests need not import conftest."""
    return write_test_video


@pytest.fixture(scope="session")
def b2n_shards(tmp_path_factory) -> Path:
    """Synthetic B2N shards for the training tests: DATA/train_split1 (24 base classes x 2 shots
    = 48 clips), DATA/base_test and DATA/novel_test (24 clips each); 16 frames at 32 px.

    Session-scoped and shared: tests must not modify it (copy it first).
    """
    from train_fixtures import build_b2n_shards

    return build_b2n_shards(tmp_path_factory.mktemp("b2n"), clips_per_class=2, val_per_class=1,
                            shots=2)


@pytest.fixture
def one_thread():
    """One torch and BLAS thread for the test: tiny tensors on a shared 2-core machine gain
    nothing from thread pools, and oversubscribed pools make them many times slower."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)
