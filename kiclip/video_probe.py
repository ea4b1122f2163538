"""One probe for every user video: make_shards decides what goes into a shard with it, and
predict/visualize decide which frames exist with it, so both agree on what a file holds.

Light on purpose (PyAV and the standard library only): ``shard_tools`` imports it without
pulling in torch, and ``kiclip`` owns it so that kiclip never imports ``shard_tools``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av

from kiclip.rotation import RotationError, display_rotation, upright_size

# Report decode progress to a caller's callback every this many frames (a callback per frame
# would cost more than it shows).
PROGRESS_EVERY = 32


class VideoProbeError(Exception):
    """A video that cannot be used; `str(err)` is the reason (make_shards records it)."""


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video found.

    `frames` counts frames that decode (with ``decode_all=False`` and a complete file: the
    demuxed packets); `promised` is the header's frame count (0 when the header has none).
    `width`/`height` are the displayed (upright) size; `rotation` is how far, clockwise, the
    decoded frames must be turned to get there (kiclip.rotation: 0, 90, 180 or 270).
    """

    frames: int
    fps: float
    width: int
    height: int
    codec: str
    promised: int = 0
    rotation: int = 0

    @property
    def truncated(self) -> bool:
        """True when far fewer frames decode than the header promises (a cut-off file)."""
        return _is_truncated(self.promised, self.frames)


def probe_video(path: Path, decode_all: bool = True, allow_truncated: bool = False,
                on_frames: Callable[[int], None] | None = None) -> VideoInfo:
    """Open `path` with PyAV and count its frames; raise VideoProbeError(reason) if unusable.

    ``decode_all=True`` decodes every frame: it catches truncated and corrupt files before they
    become half-samples in a shard. ``decode_all=False`` only counts packets (cheap for a long
    video) and decodes everything only when the packets fall short of the header's count.
    A file whose header promises far more frames than decode delivers raises "truncated",
    unless ``allow_truncated``: then `frames` is the decodable count (a decode error ends the
    count rather than failing, as long as some frames decoded). ``on_frames(n)`` is called with
    each further batch of decoded frames, for progress display.
    """
    path = Path(path)
    if not path.exists():
        raise VideoProbeError("missing: file not found")
    if path.is_dir():
        raise VideoProbeError("a directory, not a video file")
    if not path.is_file():
        raise VideoProbeError("not a regular file")
    if path.stat().st_size == 0:
        raise VideoProbeError("empty file (0 bytes)")
    if not decode_all:
        quick = _open(path, _packet_info)
        if quick.frames and not _is_truncated(quick.promised, quick.frames):
            return quick
    return _open(path, lambda container, stream: _decoded_info(
        container, stream, allow_truncated, on_frames))


def _open(path: Path, read: Callable) -> VideoInfo:
    """read(container, first video stream) on `path` opened with PyAV, errors as reasons."""
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise VideoProbeError(f"not a readable video: {_short(err)}") from err
    with container:
        if not container.streams.video:
            raise VideoProbeError("no video stream")
        return read(container, container.streams.video[0])


def _packet_info(container, stream) -> VideoInfo:
    """Frames counted as demuxed packets; only the first frame is decoded (its display matrix
    gives the rotation). 0 frames when demuxing fails."""
    packets, first = 0, None
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue
            packets += 1
            if first is None:  # a codec with reordering delay may need a few packets
                first = next(iter(packet.decode()), None)
    except (av.error.FFmpegError, ValueError):
        packets = 0  # the full decode that follows says what is wrong
    if first is None:
        packets = 0
    rotation = _rotation_of(first, stream) if first is not None else 0
    ctx = stream.codec_context
    height, width = upright_size(ctx.height, ctx.width, rotation)
    return VideoInfo(packets, _frame_rate(stream, packets), width, height, ctx.name,
                     stream.frames or 0, rotation)


def _decoded_info(container, stream, allow_truncated: bool,
                  on_frames: Callable[[int], None] | None) -> VideoInfo:
    promised = stream.frames or 0
    frames, width, height, rotation = _decode_all(container, stream, allow_truncated, on_frames)
    if frames == 0:
        raise VideoProbeError("undecodable: no frames decoded")
    if not allow_truncated and _is_truncated(promised, frames):
        raise VideoProbeError(f"truncated: header promises {promised} frames, decoded {frames}")
    return VideoInfo(frames=frames, fps=_frame_rate(stream, frames), width=width, height=height,
                     codec=stream.codec_context.name, promised=promised, rotation=rotation)


def _decode_all(container, stream, allow_truncated: bool,
                on_frames: Callable[[int], None] | None) -> tuple[int, int, int, int]:
    """(frames decoded, upright width, upright height, rotation) of the first video stream,
    reporting progress."""
    stream.thread_type = "AUTO"
    frames, width, height, rotation = 0, 0, 0, 0
    try:
        for frame in container.decode(stream):
            if frames == 0:
                rotation = _rotation_of(frame, stream)
                height, width = upright_size(frame.height, frame.width, rotation)
            frames += 1
            if on_frames and frames % PROGRESS_EVERY == 0:
                on_frames(PROGRESS_EVERY)
    except (av.error.FFmpegError, ValueError) as err:
        if not (allow_truncated and frames):
            raise VideoProbeError(f"undecodable after {frames} frames: {_short(err)}") from err
    if on_frames and frames % PROGRESS_EVERY:
        on_frames(frames % PROGRESS_EVERY)
    return frames, width, height, rotation


def _rotation_of(frame: av.VideoFrame, stream) -> int:
    try:
        return display_rotation(frame, stream)
    except RotationError as err:
        raise VideoProbeError(str(err)) from err


def _is_truncated(promised: int, frames: int) -> bool:
    # Headers may be off by a frame or two (B-frame reordering, edit lists); a real truncation
    # loses far more.
    return bool(promised) and frames < promised - max(2, promised // 20)


def _frame_rate(stream, frames: int) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            return round(float(rate), 4)
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
        if seconds > 0:
            return round(frames / seconds, 4)
    return 0.0


def _short(err: Exception) -> str:
    text = str(err).strip() or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."
