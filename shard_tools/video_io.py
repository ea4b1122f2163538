"""Video files in and out through PyAV: the codec table, encoding, probing and transcoding.

Probing is `kiclip.video_probe.probe_video` (re-exported here), shared with predict.py.

Every other module in `shard_tools` touches video bytes only through this one, so the choice of
codec/container (and what DALI's CPU decoder can read) is decided in a single place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from kiclip.rotation import rotate_upright, upright_size

# The probe lives in kiclip so predict.py reads videos exactly as make_shards judges them;
# shard_tools modules keep importing it from here.
from kiclip.video_probe import VideoInfo, VideoProbeError, probe_video  # noqa: F401

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

# The key-frame interval make_shards and make_synthetic write. Both loaders decode from the key
# frame before each wanted frame; with key-frame windows (data.keyframe_windows, the default) a
# GOP dividing the stride puts every wanted frame on a key frame, so an 8×16 clip decodes 8
# frames, and 8 is the longest such GOP whose bytes stay within 2× long-GOP VP9 at the same PSNR
# (1.9×; docs/data_plane.md "Choosing the training transcode"). Uniform windows would cost
# about T·(GOP+1)/2 = 36 frames per clip at GOP 8: train with them on GOP 4 shards instead.
DEFAULT_GOP = 8

# Codec names (as PyAV reports them) that DALI 2.4's CPU decoder reads.
DALI_CPU_CODECS = frozenset({"mjpeg", "vp8", "vp9"})

# Containers a shard may carry (docs/CONTRACTS.md), keyed by the member extension.
SHARD_VIDEO_EXTS = ("mp4", "mkv", "webm", "avi", "mov")


def encode_frames(
    frames: Iterable[np.ndarray], path: Path, codec: str, fps: float, gop: int | None = None,
    options: dict[str, str] | None = None,
) -> None:
    """Encode uint8 RGB frames (each (H, W, 3), H and W even) into `path` with `CODECS[codec]`.

    `options` are encoder options added to the codec's own (and replacing any of the same name),
    e.g. {"crf": "40"} for a rate-quality sweep.

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
                merged = dict(spec.options)
                if gop:
                    merged["g"] = str(gop)
                merged.update(options or {})
                stream.options = merged
                stream.codec_context.flags |= av.codec.context.Flags.bitexact
                if spec.qscale:
                    stream.codec_context.flags |= av.codec.context.Flags.qscale
                    stream.codec_context.global_quality = spec.qscale * QP2LAMBDA
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
            container.mux(stream.encode(video_frame))
        if stream is None:
            raise ValueError(f"no frames to encode into {path}")
        container.mux(stream.encode(None))


def transcode_video(
    src: Path, dst: Path, codec: str, short_side: int | None, gop: int | None,
    on_frames: Callable[[int], None] | None = None,
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
        encode_frames(_counted(frames, on_frames), dst, codec, source.fps or 25.0, gop)
    return probe_video(dst, on_frames=on_frames)


def _counted(frames: Iterable[np.ndarray], on_frames: Callable[[int], None] | None):
    """`frames` unchanged, telling `on_frames` of each one that passes."""
    for frame in frames:
        yield frame
        if on_frames:
            on_frames(1)


def _target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    scale = 1.0
    if short_side and min(width, height) > short_side:
        scale = short_side / min(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)
