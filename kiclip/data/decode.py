"""PyAV frame decoding for the fallback loader and the benchmark's reference loader."""
from __future__ import annotations

import io
import os

import av
import numpy as np

from kiclip.packets import needed_packets, slice_packets
from kiclip.rotation import ROTATIONS, RotationError, display_rotation, rotate_upright


class DecodeError(RuntimeError):
    """A video that could not be decoded (corrupt, truncated, unknown codec)."""


def decode_frames(source: bytes | str | os.PathLike, indices: np.ndarray,
                  rotation: int | None = 0) -> np.ndarray:
    """Decode the frames at ``indices``; see :func:`decode_clip` (without a packet index)."""
    return decode_clip(source, indices, rotation)[0]


def decode_clip(source: bytes | str | os.PathLike, indices: np.ndarray,
                rotation: int | None = 0, packets: np.ndarray | None = None,
                codec: str | None = None) -> tuple[np.ndarray, int]:
    """Decode the frames at ``indices`` (any shape, any order, repeats allowed).

    Returns ``(frames, decoded)``. ``frames``: uint8 ``indices.shape + (H, W, 3)`` RGB, turned
    clockwise by ``rotation`` degrees (0/90/180/270, see kiclip.rotation; a shard's json records
    it) or, with ``rotation=None``, as the video's own display matrix says: either way H×W is
    the upright size. ``decoded``: how many frames the decoder produced.

    With ``packets`` (the sample's packet index, kiclip.packets), ``codec``, ``source``
    bytes and an explicit ``rotation``, only the packets from each wanted frame's key frame on
    go to a bare decoder (the same pixels as a full decode); should that fail for any reason,
    the stream is decoded as without an index, so a broken video fails the same way.
    Without an index, decoding runs from the first frame to the largest index, single-threaded
    (a DataLoader worker is the unit of parallelism); an index past the last decodable frame
    gets the last decodable frame, as the sampler's clamping and DALI's ``pad_mode="edge"`` do.
    Raises :class:`DecodeError` when no frame decodes or the rotation is not one of the four.
    """
    if rotation not in (None, *ROTATIONS):
        raise DecodeError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
    wanted = np.asarray(indices, dtype=np.int64)
    if packets is not None and codec and rotation is not None and isinstance(source, bytes):
        from_index = _decode_indexed(source, wanted, packets, codec)
        if from_index is not None:
            frames, decoded = from_index
            upright = rotate_upright(frames, rotation)
            return upright.reshape(wanted.shape + upright.shape[1:]), decoded
    needed = set(np.unique(wanted).tolist())
    last_needed = max(needed)
    got: dict[int, np.ndarray] = {}
    decoded = 0
    tail = None  # the latest decoded frame, converted only if the video ends early
    try:
        file = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
        with av.open(file) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            for i, frame in enumerate(container.decode(stream)):
                decoded = i + 1
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
    return upright.reshape(wanted.shape + upright.shape[1:]), decoded


def _decode_indexed(video: bytes, wanted: np.ndarray, packets: np.ndarray,
                    codec: str) -> tuple[np.ndarray, int] | None:
    """``(frames (N, H, W, 3) in wanted.ravel() order, frames decoded)`` from the packets the
    wanted frames need, or None when an index is out of range or the decoder does not return
    exactly one frame per packet (then the caller decodes the whole stream)."""
    flat = wanted.reshape(-1)
    if flat.size == 0 or flat.min() < 0 or flat.max() >= len(packets):
        return None
    selected, positions = needed_packets(packets["key"], flat)
    try:
        decoder = av.CodecContext.create(codec, "r")
        decoder.thread_count = 1
        out = []
        for data in slice_packets(video, packets, selected):
            out.extend(decoder.decode(av.Packet(data)))
        out.extend(decoder.decode(None))
    except (av.FFmpegError, ValueError, OSError):
        return None
    if len(out) != len(selected):
        return None
    needed = {int(p): out[int(p)].to_ndarray(format="rgb24") for p in np.unique(positions)}
    return np.stack([needed[int(p)] for p in positions]), len(out)
