"""Shards → clips: frame sampling, DALI and fallback loaders.

``build_loader`` is the entry point (docs/CONTRACTS.md, "Clips"); it picks DALI when it is
installed and decodes the shards' codecs (asked once per process, see kiclip.data.codecs), on
the chosen device or else on the CPU, and the webdataset + PyAV fallback otherwise.
"""
from __future__ import annotations

import logging
import os

import torch

from kiclip.data.codecs import (
    BackendChoice,
    UnsupportedCodecError,
    choose_backend,
    codec_samples,
)
from kiclip.data.sampling import ClipSpec, plan_clip, sample_frame_indices
from kiclip.data.shards import ShardSet, open_shards

__all__ = [
    "ClipSpec",
    "UnsupportedCodecError",
    "build_loader",
    "check_loader_codecs",
    "open_shards",
    "plan_clip",
    "sample_frame_indices",
    "shard_codecs",
]

log = logging.getLogger(__name__)


def shard_codecs(shards: ShardSet) -> set[str]:
    """Codecs named in the samples' json (make_shards records them; see codec_samples)."""
    return set(codec_samples(shards))


def choose_loader_backend(shard_set: ShardSet, requested: str, device: str,
                          where: str) -> BackendChoice:
    """Ask the decoders about the shards' codecs and choose the backend (logged in one line).

    Raises UnsupportedCodecError (see :func:`kiclip.data.codecs.choose_backend`)."""
    if shard_set.streamed:
        choice = _streamed_choice(requested, where)
        log.info("loader backend torch for %s (%s)", where, choice.reason)
        return choice
    samples = codec_samples(shard_set)
    choice = _choose(samples, requested, device, where)
    log.info("loader backend %s for %s (codecs %s on %s: %s)", choice.name, where,
             "/".join(sorted(samples)), device, choice.reason)
    return choice


def check_loader_codecs(shards, backend: str, device: str) -> BackendChoice:
    """The backend ``build_loader(shards, backend=backend, device=device)`` will choose; raises
    UnsupportedCodecError before any work when it cannot read the shards (not logged: the
    loader logs its choice when it is built)."""
    shard_set = shards if isinstance(shards, ShardSet) else open_shards(shards)
    if shard_set.streamed:
        return _streamed_choice(backend, str(shards))
    return _choose(codec_samples(shard_set), backend, device, str(shards))


def _streamed_choice(requested: str, where: str) -> BackendChoice:
    """The fallback for shards streamed from a URL; RemoteDataError when DALI is asked for.

    The codecs are not probed: that would read samples out of order. A video PyAV cannot
    decode is skipped and counted like any other undecodable one."""
    from kiclip.remote import RemoteDataError

    if requested == "dali":
        raise RemoteDataError(f"{where}: DALI reads local files only; stage the URL into a "
                              "cache first (kiclip.remote.stage; train.py and evaluate.py do) or "
                              "use the torch backend, which streams it")
    return BackendChoice("torch", None, "tars streamed from a URL: only the fallback reads them")


def _choose(samples: dict, requested: str, device: str, where: str) -> BackendChoice:
    from kiclip.data.codecs import dali_decodes, pyav_decodes
    from kiclip.data.dali_loader import dali_available

    return choose_backend(
        requested, list(samples), device, dali_installed=dali_available(),
        dali_reads=lambda codec, dev: dali_decodes(codec, samples[codec], dev),
        pyav_reads=pyav_decodes, where=where)


def build_loader(shards, mode: str = "train", batch_size: int = 8, num_frames: int = 8,
                 stride: int = 16, image_size: int = 224, seed: int = 0, rank: int = 0,
                 world_size: int = 1, backend: str = "auto", *, num_views: int = 3,
                 num_workers: int = 2, device: str | None = None,
                 dtype: torch.dtype = torch.float32, shuffle_buffer: int = 256,
                 shuffle: bool = True, flip: bool = True, keyframe_windows: bool = False):
    """An iterable of clip batches over ``shards`` (a directory, glob, tar or list of them, or
    the URL of one make_shards folder: streamed, torch backend only, see kiclip.remote).

    Each batch is ``{"video": float (B·V, 3, T, S, S), "label": long (B·V,), "key": list[str],
    "view": long (B·V,), "valid": bool (B·V,), "frames": long (B·V, T)}`` where V = 1 in train
    mode and ``num_views`` in test mode (every view of every video, video-major; sum the
    logits of a key's views). ``valid`` is False on padding rows (equal steps on every rank)
    and on videos that failed to decode (counted in ``loader.skipped``). ``len(loader)``
    batches per epoch; call ``loader.set_epoch(e)`` before each epoch.

    ``backend``: "dali", "torch", or "auto" (DALI if importable and able to decode the codecs,
    see :func:`kiclip.data.codecs.choose_backend`; DALI decodes on the CPU when NVDEC cannot
    read a codec that DALI's CPU decoder can). Raises UnsupportedCodecError, naming the codec and
    the fix, when the backend cannot read the shards. ``device`` (where batches are delivered)
    defaults to "cuda" when available; ``num_workers`` is DALI's thread count or the
    DataLoader's worker count. ``shuffle=False`` keeps the stored sample
    order in train mode (clips are still randomly windowed, cropped and flipped).
    ``flip=False`` turns off the train-time horizontal flip (for labels that name a left/right
    direction, as in SSv2 or the synthetic world, a flip changes the class).
    ``keyframe_windows=True`` moves each window start (train and test) to the nearest key frame
    that fits, for samples with a packet index (kiclip.data.sampling, docs/data_plane.md): with
    a key-frame interval dividing ``stride`` a clip then decodes exactly ``num_frames`` frames.
    """
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    if backend not in ("auto", "dali", "torch"):
        raise ValueError(f"backend must be 'auto', 'dali' or 'torch', got {backend!r}")
    from kiclip.data.dali_loader import DaliClipLoader
    from kiclip.data.torch_loader import TorchClipLoader

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    spec = ClipSpec(num_frames=num_frames, stride=stride, image_size=image_size,
                    num_views=num_views, flip=flip, keyframe_windows=keyframe_windows)
    shard_set = shards if isinstance(shards, ShardSet) else open_shards(shards)
    where = str(shards) if not isinstance(shards, ShardSet) else \
        ", ".join(sorted({os.path.dirname(t) or "." for t in shard_set.tars}))
    choice = choose_loader_backend(shard_set, backend, device, where)
    backend = choice.backend
    common = {"mode": mode, "spec": spec, "batch_size": batch_size, "seed": seed, "rank": rank,
              "world_size": world_size, "shuffle_buffer": shuffle_buffer, "dtype": dtype,
              "shuffle": shuffle}
    if backend == "dali":
        loader = DaliClipLoader(shard_set, device=device, decode_device=choice.decode_device,
                                num_threads=max(num_workers, 1), **common)
    else:
        loader = TorchClipLoader(shard_set, device=device, num_workers=num_workers, **common)
    log.info("%s loader: %d samples, rank %d/%d, %d batches per epoch", choice.name, len(shard_set),
             rank, world_size, len(loader))
    return loader
