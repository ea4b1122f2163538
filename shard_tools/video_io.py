"""Video files in and out through PyAV: the codec table, encoding, probing and transcoding.

Every other module in `shard_tools` touches video bytes only through this one, so the choice of
codec/container (and what DALI's CPU decoder can read) is decided in a single place.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from kiclip.rotation import RotationError, display_rotation, rotate_upright, upright_size

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Codec:
    """How one `--codec`/`--transcode` choice is written: encoder, container, file extension."""

    encoder: str
    container: str
    ext: str
    pix_fmt: str
    options: tuple[tuple[str, str], ...] = ()
    qscale: int | None = None  # a fixed quantiser (1 best .. 31 worst) instead of rate control


# libavutil's FF_QP2LAMBDA: global_quality is a quantiser in lambda units.
QP2LAMBDA = 118

# MJPEG in AVI is the default: every frame is a keyframe, so any frame window seeks cheaply, and
# both PyAV and DALI's CPU decoder read it (measured; see docs/data.md). VP9 in WebM is ~10x
# smaller and also CPU-decodable by DALI. H.264 needs DALI's GPU (mixed) decoder.
CODECS: dict[str, Codec] = {
    # A fixed quantiser: left to rate control, libavcodec's MJPEG encoder lowers the quality
    # frame by frame towards its default bit rate (the command-line `-q:v` is no encoder option).
    "mjpeg": Codec("mjpeg", "avi", "avi", "yuvj420p", qscale=3),
    "vp9": Codec(
        "libvpx-vp9",
        "webm",
        "webm",
        "yuv420p",
        (("deadline", "realtime"), ("cpu-used", "8"), ("row-mt", "0"), ("threads", "1")),
    ),
    "h264": Codec(
        "libx264", "mp4", "mp4", "yuv420p", (("preset", "veryfast"), ("threads", "1"))
    ),
}
DEFAULT_CODEC = "mjpeg"

# Codec names (as PyAV reports them) that DALI 2.4's CPU decoder reads.
DALI_CPU_CODECS = frozenset({"mjpeg", "vp8", "vp9"})

# Containers a shard may carry (docs/CONTRACTS.md), keyed by the member extension.
SHARD_VIDEO_EXTS = ("mp4", "mkv", "webm", "avi", "mov")


class VideoProbeError(Exception):
    """A video that cannot go into a shard; `str(err)` is the reason recorded in the manifest."""


@dataclass(frozen=True)
class VideoInfo:
    """What probing a video found; `frames` counts frames actually decoded.

    `width`/`height` are the displayed (upright) size; `rotation` is how far, clockwise, the
    decoded frames must be turned to get there (kiclip.rotation: 0, 90, 180 or 270).
    """

    frames: int
    fps: float
    width: int
    height: int
    codec: str
    rotation: int = 0


def encode_frames(
    frames: Iterable[np.ndarray], path: Path, codec: str, fps: float, gop: int | None = None
) -> None:
    """Encode uint8 RGB frames (each (H, W, 3), H and W even) into `path` with `CODECS[codec]`.

    Output is byte-for-byte deterministic for the same frames and arguments (bitexact flags,
    single-threaded encoders), which keeps make_synthetic reproducible by seed.
    """
    spec = CODECS[codec]
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(
        str(path), "w", format=spec.container, container_options={"fflags": "+bitexact"}
    ) as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream(spec.encoder, rate=rate)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = spec.pix_fmt
                options = dict(spec.options)
                if gop:
                    options["g"] = str(gop)
                stream.options = options
                stream.codec_context.flags |= av.codec.context.Flags.bitexact
                if spec.qscale:
                    stream.codec_context.flags |= av.codec.context.Flags.qscale
                    stream.codec_context.global_quality = spec.qscale * QP2LAMBDA
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            container.mux(stream.encode(video_frame))
        if stream is None:
            raise ValueError(f"no frames to encode into {path}")
        container.mux(stream.encode(None))


def probe_video(path: Path) -> VideoInfo:
    """Open `path` with PyAV and decode every frame; raise VideoProbeError(reason) if unusable.

    Decoding everything (not just reading headers) is what catches truncated and corrupt files
    before they become half-samples in a shard. A file whose header promises more frames than
    decode delivers is reported as truncated.
    """
    path = Path(path)
    if not path.exists():
        raise VideoProbeError("missing: file not found")
    if not path.is_file():
        raise VideoProbeError("not a regular file")
    if path.stat().st_size == 0:
        raise VideoProbeError("empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as err:
        raise VideoProbeError(f"not a readable video: {_short(err)}") from err
    with container:
        if not container.streams.video:
            raise VideoProbeError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames, width, height, rotation = 0, 0, 0, 0
        try:
            for frame in container.decode(stream):
                if frames == 0:
                    rotation = _rotation_of(frame, stream)
                    height, width = upright_size(frame.height, frame.width, rotation)
                frames += 1
        except (av.error.FFmpegError, ValueError) as err:
            raise VideoProbeError(f"undecodable after {frames} frames: {_short(err)}") from err
        if frames == 0:
            raise VideoProbeError("undecodable: no frames decoded")
        promised = stream.frames or 0
        # Headers may be off by a frame or two (B-frame reordering, edit lists); a real truncation
        # loses far more.
        if promised and frames < promised - max(2, promised // 20):
            raise VideoProbeError(f"truncated: header promises {promised} frames, decoded {frames}")
        return VideoInfo(
            frames=frames,
            fps=_frame_rate(stream, frames),
            width=width,
            height=height,
            codec=stream.codec_context.name,
            rotation=rotation,
        )


def _rotation_of(frame: av.VideoFrame, stream: av.video.stream.VideoStream) -> int:
    try:
        return display_rotation(frame, stream)
    except RotationError as err:
        raise VideoProbeError(str(err)) from err


def transcode_video(
    src: Path, dst: Path, codec: str, short_side: int | None, gop: int | None
) -> VideoInfo:
    """Decode `src` and write it to `dst` with `CODECS[codec]`; return the new file's VideoInfo.

    Frames are only ever downscaled, to `short_side` on the shorter edge (aspect kept, both edges
    even as yuv420p requires). Variable frame rate input becomes constant rate at its average fps
    with every decoded frame kept, because the samplers index frames, not timestamps. A display
    rotation is baked in: the new file's frames are upright and carry no display matrix.
    """
    source = probe_video(src)
    width, height = _target_size(source.width, source.height, short_side)
    coded_height, coded_width = upright_size(height, width, source.rotation)
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        frames = (
            rotate_upright(frame.to_ndarray(width=coded_width, height=coded_height,
                                            format="rgb24"), source.rotation)
            for frame in container.decode(stream)
        )
        encode_frames(frames, dst, codec, source.fps or 25.0, gop)
    return probe_video(dst)


def _target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    scale = 1.0
    if short_side and min(width, height) > short_side:
        scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _frame_rate(stream: av.video.stream.VideoStream, frames: int) -> float:
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
