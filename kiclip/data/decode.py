"""PyAV frame decoding for the fallback loader and the benchmark's reference loader."""
from __future__ import annotations

import io
import os

import av
import numpy as np

from kiclip.rotation import ROTATIONS, RotationError, display_rotation, rotate_upright


class DecodeError(RuntimeError):
    """A video that could not be decoded (corrupt, truncated, unknown codec)."""


def decode_frames(source: bytes | str | os.PathLike, indices: np.ndarray,
                  rotation: int | None = 0) -> np.ndarray:
    """Decode the frames at ``indices`` (any shape, any order, repeats allowed).

    Returns uint8 ``indices.shape + (H, W, 3)`` RGB, turned clockwise by ``rotation`` degrees
    (0/90/180/270, see kiclip.rotation; a shard's json records it) or, with ``rotation=None``,
    as the video's own display matrix says: either way H×W is the upright size. Decoding runs
    from the first frame to the largest index, single-threaded (a DataLoader worker is the unit
    of parallelism); an index past the last decodable frame gets the last decodable frame, as
    the sampler's clamping and DALI's ``pad_mode="edge"`` do. Raises :class:`DecodeError` when
    no frame decodes or the rotation is not one of the four.
    """
    if rotation not in (None, *ROTATIONS):
        raise DecodeError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
    wanted = np.asarray(indices, dtype=np.int64)
    needed = set(np.unique(wanted).tolist())
    last_needed = max(needed)
    got: dict[int, np.ndarray] = {}
    tail = None  # the latest decoded frame, converted only if the video ends early
    try:
        file = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
        with av.open(file) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            for i, frame in enumerate(container.decode(stream)):
                if rotation is None:
                    rotation = display_rotation(frame, stream)
                if i in needed:
                    got[i] = frame.to_ndarray(format="rgb24")
                if i >= last_needed:
                    break
                tail = (i, frame)
    except RotationError as exn:
        raise DecodeError(str(exn)) from exn
    except (av.FFmpegError, IndexError, ValueError, OSError) as exn:
        if not got and tail is None:
            raise DecodeError(f"{type(exn).__name__}: {exn}") from exn
    if not got and tail is None:
        raise DecodeError("no decodable video frames")
    if tail is not None and tail[0] not in got and last_needed not in got:
        got[tail[0]] = tail[1].to_ndarray(format="rgb24")
    last = got[max(got)]
    frames = [got.get(i, last) for i in wanted.reshape(-1).tolist()]
    upright = rotate_upright(np.stack(frames), rotation or 0)
    return upright.reshape(wanted.shape + upright.shape[1:])
