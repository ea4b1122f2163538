"""Shards → clips: frame sampling, DALI and fallback loaders.

``build_loader`` is the entry point (docs/CONTRACTS.md, "Clips"); it picks DALI when it is
installed and decodes the shards' codecs (asked once per process, see kiclip.data.codecs), on
the chosen device or else on the CPU, and the webdataset + PyAV fallback otherwise.
"""
from __future__ import annotations

import logging

import torch

from kiclip.data.codecs import (
    BackendChoice,
    DaliNotInstalledError,
    UnsupportedCodecError,
    choose_backend,
    codec_samples,
)
from kiclip.data.loader_base import LoaderSpec
from kiclip.data.sampling import ClipSpec, plan_clip, sample_frame_indices
from kiclip.data.shards import ShardSet, open_shards

__all__ = [
    "ClipSpec",
    "DaliNotInstalledError",
    "LoaderSpec",
    "ShardSet",
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


def check_loader_codecs(shard_set: ShardSet, backend: str, device: str) -> BackendChoice:
    """The backend ``build_loader`` will choose for ``shard_set`` with ``backend`` on
    ``device``; raises UnsupportedCodecError before any work when it cannot read the shards (not
    logged: the loader logs its choice when it is built)."""
    if shard_set.streamed:
        return _streamed_choice(backend, shard_set.where)
    return _choose(codec_samples(shard_set), backend, device, shard_set.where)


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


def build_loader(shard_set: ShardSet, spec: LoaderSpec, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, device: str | None = None,
                 dtype: torch.dtype = torch.float32):
    """An iterable of clip batches over ``shard_set`` (kiclip.layout.read_shard_set for a
    make_shards folder, :func:`open_shards` for a folder, glob, tar list or the URL of one
    make_shards folder: streamed, torch backend only, see kiclip.remote), read as ``spec`` says.

    Each batch is ``{"video": float (B·V, 3, T, S, S), "label": long (B·V,), "key": list[str],
    "view": long (B·V,), "valid": bool (B·V,), "frames": long (B·V, T)}`` where V = 1 in train
    mode and ``spec.clip.num_views`` in test mode (every view of every video, video-major; sum
    the logits of a key's views). ``valid`` is False on padding rows (equal steps on every rank)
    and on videos that failed to decode (counted in ``loader.skipped``). ``len(loader)``
    batches per epoch; call ``loader.set_epoch(e)`` before each epoch. ``seed`` fixes the order
    and every clip's random draws (kiclip.data.sampling); ``rank`` of ``world_size`` picks this
    process's share.

    ``spec.backend``: "dali", "torch", or "auto" (DALI if importable and able to decode the
    codecs, see :func:`kiclip.data.codecs.choose_backend`; DALI decodes on the CPU when NVDEC
    cannot read a codec that DALI's CPU decoder can). Raises UnsupportedCodecError, naming the
    codec and the fix, when the backend cannot read the shards, and DaliNotInstalledError for
    "dali" without DALI. ``device`` (where batches are
    delivered) defaults to "cuda" when available. ``spec.shuffle=False`` keeps the stored
    sample order in train mode (clips are still randomly windowed, cropped and flipped).
    ``spec.clip.flip=False`` turns off the train-time horizontal flip (for labels that name a
    left/right direction, as in SSv2 or the synthetic world, a flip changes the class).
    ``spec.clip.keyframe_windows=True`` moves each window start (train and test) to the nearest
    key frame that fits, for samples with a packet index (kiclip.data.sampling,
    docs/data_plane.md): with a key-frame interval dividing ``stride`` a clip then decodes
    exactly ``num_frames`` frames.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    from kiclip.data.dali_loader import DaliClipLoader
    from kiclip.data.torch_loader import TorchClipLoader

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    choice = choose_loader_backend(shard_set, spec.backend, device, shard_set.where)
    common = {"mode": spec.mode, "spec": spec.clip, "batch_size": spec.batch_size, "seed": seed,
              "rank": rank, "world_size": world_size, "shuffle_buffer": spec.shuffle_buffer,
              "dtype": dtype, "shuffle": spec.shuffle}
    if choice.backend == "dali":
        loader = DaliClipLoader(shard_set, device=device, decode_device=choice.decode_device,
                                num_threads=max(spec.num_workers, 1), **common)
    else:
        loader = TorchClipLoader(shard_set, device=device, num_workers=spec.num_workers, **common)
    log.info("%s loader: %d samples, rank %d/%d, %d batches per epoch", choice.name, len(shard_set),
             rank, world_size, len(loader))
    return loader
