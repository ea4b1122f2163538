"""Which decoder reads the shards' codecs, and so which loader backend runs.

DALI's CPU decoder reads VP8, VP9 and MJPEG only; what NVDEC reads depends on the GPU and the
driver (some generations have no JPEG decode), so no table can say it. The decoders are asked
instead: once per process and device, DALI decodes the first frame of a real sample of each
codec the shards hold (the smallest one found, so the probe is cheap and carries a real
profile and bit depth). :func:`choose_backend` turns the answers into a backend: DALI on the
GPU, DALI on the CPU (frames then copied to the GPU), or the webdataset + PyAV fallback, and a
codec nothing here decodes is an :class:`UnsupportedCodecError` that names it and the fix.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from kiclip.data.shards import SampleRef, ShardSet

log = logging.getLogger(__name__)

# Samples whose json is read to find the codecs: every tar's first sample plus an even spread
# of this many (make_shards shuffles rows, so a codec present in a few percent of the videos is
# found; a rarer one fails per batch and is skipped and counted like any undecodable video).
CODEC_SCAN_SAMPLES = 1024

TRANSCODE_FIX = ("rebuild the shards with make_shards.py --transcode vp9 (or mjpeg), which "
                 "DALI's CPU decoder and the fallback both read")


DALI_INSTALL_FIX = ("install it with pip install -e '.[dali]' (or bash launch/setup_env.sh), or "
                    "use --loader torch, the webdataset + PyAV fallback (train.py and evaluate.py "
                    "also take --loader auto: DALI when installed, else the fallback)")


class UnsupportedCodecError(ValueError):
    """No decoder the requested backend allows reads a codec of the shards (CLIs exit 2)."""


class DaliNotInstalledError(ImportError):
    """The DALI backend was asked for in an environment without NVIDIA DALI (CLIs exit 2)."""

    def __init__(self) -> None:
        super().__init__("--loader dali (data.backend='dali') needs NVIDIA DALI, which this "
                         f"Python environment does not have: {DALI_INSTALL_FIX}")


@dataclass(frozen=True)
class BackendChoice:
    """``backend`` "dali" or "torch"; ``decode_device`` "cpu"/"cuda" for DALI, else None."""

    backend: str
    decode_device: str | None
    reason: str

    @property
    def name(self) -> str:
        if self.backend == "torch":
            return "torch"
        return "dali-gpu" if self.decode_device == "cuda" else "dali-cpu"


def codec_samples(shards: ShardSet, limit: int = CODEC_SCAN_SAMPLES) -> dict[str, SampleRef]:
    """Codec name (from make_shards' json) → the smallest sample of it among those scanned."""
    picked = _scan_positions(shards, limit)
    found: dict[str, SampleRef] = {}
    handles: dict[str, object] = {}
    try:
        for i in picked:
            ref = shards.samples[i]
            f = handles.get(ref.tar) or handles.setdefault(ref.tar, open(ref.tar, "rb"))
            f.seek(ref.meta[0])
            try:
                codec = str(json.loads(f.read(ref.meta[1])).get("codec", "unknown")).lower()
            except (ValueError, AttributeError) as err:  # not JSON / not UTF-8 / not an object
                # The loaders skip and count this sample; the scan only asks which codecs exist.
                log.warning("%s: sample %r has an unreadable json member (%s); the loader will "
                            "skip it", ref.tar, ref.key, err)
                continue
            if codec not in found or ref.video[1] < found[codec].video[1]:
                found[codec] = ref
    finally:
        for f in handles.values():
            f.close()
    return found


def _scan_positions(shards: ShardSet, limit: int) -> list[int]:
    n = len(shards.samples)
    spread = range(0, n, max(1, n // limit))
    firsts, seen = [], set()
    for i, ref in enumerate(shards.samples):
        if ref.tar not in seen:
            seen.add(ref.tar)
            firsts.append(i)
    return sorted(set(spread) | set(firsts))


def read_video_bytes(ref: SampleRef) -> bytes:
    with open(ref.tar, "rb") as f:
        f.seek(ref.video[0])
        return f.read(ref.video[1])


# (codec, device) → DALI's answer, asked once per process: the GPU and driver do not change.
_DALI_ANSWERS: dict[tuple[str, str], bool] = {}


def dali_decodes(codec: str, sample: SampleRef, device: str) -> bool:
    """Whether DALI on ``device`` ("cpu"/"cuda") decodes ``sample`` (a video of ``codec``)."""
    if (codec, device) not in _DALI_ANSWERS:
        _DALI_ANSWERS[codec, device] = dali_try_decode(read_video_bytes(sample), device)
        log.debug("DALI on %s decodes %s: %s", device, codec, _DALI_ANSWERS[codec, device])
    return _DALI_ANSWERS[codec, device]


def dali_try_decode(video: bytes, device: str) -> bool:
    """Decode the first frame of ``video`` through a one-off DALI pipeline on ``device``."""
    import numpy as np
    import torch
    from nvidia.dali import fn, pipeline_def

    gpu = device == "cuda"
    data = np.frombuffer(video, np.uint8)

    @pipeline_def(batch_size=1, num_threads=1, prefetch_queue_depth=1,
                  device_id=torch.cuda.current_device() if gpu else None)
    def probe():
        encoded = fn.external_source(source=lambda: [data], batch=True)
        first = fn.external_source(source=lambda: [np.zeros(1, np.int32)], batch=True)
        return fn.decoders.video(encoded, frames=first, device="mixed" if gpu else "cpu")

    try:
        pipe = probe()
        pipe.build()
        (frames,) = pipe.run()
        return np.array((frames.as_cpu() if gpu else frames)[0]).shape[0] == 1
    except RuntimeError as exn:
        log.debug("DALI on %s failed the probe: %s", device, str(exn).splitlines()[:1])
        return False


def pyav_decodes(codec: str) -> bool:
    """Whether PyAV (the fallback loader) has a decoder named ``codec``.

    "unknown" (a json without a codec field, not written by make_shards) is let through: the
    fallback then skips and counts each video it cannot decode.
    """
    import av

    if codec == "unknown":
        return True
    try:
        av.codec.Codec(codec, "r")
    except (av.codec.codec.UnknownCodecError, ValueError):
        return False
    return True


def choose_backend(requested: str, codecs: list[str], device: str, *, dali_installed: bool,
                   dali_reads: Callable[[str, str], bool], pyav_reads: Callable[[str], bool],
                   where: str) -> BackendChoice:
    """The backend for shards of ``codecs`` on ``device``; pure apart from the two queries.

    ``requested`` "auto" takes the first of DALI on ``device``, DALI on the CPU (when ``device``
    is "cuda"), the fallback, that reads every codec; "dali" the first DALI option;
    "torch" the fallback. ``dali_reads(codec, device)`` and ``pyav_reads(codec)`` answer for
    one codec. Raises UnsupportedCodecError (naming ``where``, the codecs and the fix) when the
    requested backend reads none of the options, and DaliNotInstalledError for "dali" without
    DALI ("auto" then falls back, saying so in the choice's reason).
    """
    codecs = sorted(codecs)
    if requested == "dali" and not dali_installed:
        raise DaliNotInstalledError
    answers: list[str] = []
    if requested in ("auto", "dali") and dali_installed:
        for dali_device in dict.fromkeys([device, "cpu"]):
            unread = [c for c in codecs if not dali_reads(c, dali_device)]
            label = "NVDEC" if dali_device == "cuda" else "DALI CPU"
            answers.append(f"{label} {'reads all' if not unread else 'no ' + '/'.join(unread)}")
            if not unread:
                return BackendChoice("dali", dali_device, "; ".join(answers))
        if requested == "dali":
            raise UnsupportedCodecError(
                f"{where}: DALI cannot decode the shards' {'/'.join(codecs)} videos on "
                f"{'this GPU or the CPU' if device == 'cuda' else 'the CPU'} "
                f"({'; '.join(answers)}; DALI's CPU decoder reads vp8/vp9/mjpeg only): "
                f"{TRANSCODE_FIX}, or decode on a GPU whose NVDEC reads them, "
                f"or use --loader torch")
    elif requested in ("auto", "dali"):
        answers.append("DALI not installed")
    unread = [c for c in codecs if not pyav_reads(c)]
    if unread:
        raise UnsupportedCodecError(
            f"{where}: no decoder here reads {'/'.join(unread)} (PyAV has none of that name"
            f"{'' if requested == 'torch' else ', and DALI none on ' + device}); {TRANSCODE_FIX}")
    answers.append("PyAV reads all")
    return BackendChoice("torch", None, "; ".join(answers))
