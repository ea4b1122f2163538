"""Shards → clips: frame sampling, DALI and fallback loaders.

``build_loader`` is the entry point (docs/CONTRACTS.md, "Clips"); it picks DALI when it is
installed and can decode the shards' codecs on the chosen device, else the webdataset + PyAV
fallback.
"""
from __future__ import annotations

import json
import logging

import torch

from kiclip.data.sampling import ClipSpec, plan_clip, sample_frame_indices
from kiclip.data.shards import ShardSet, open_shards

__all__ = [
    "ClipSpec",
    "build_loader",
    "open_shards",
    "plan_clip",
    "sample_frame_indices",
    "shard_codecs",
]

log = logging.getLogger(__name__)


def shard_codecs(shards: ShardSet, limit: int = 64) -> set[str]:
    """Codecs named in the json of the first ``limit`` samples (make_shards records them)."""
    codecs = set()
    for ref in shards.samples[:limit]:
        with open(ref.tar, "rb") as f:
            f.seek(ref.meta[0])
            codecs.add(str(json.loads(f.read(ref.meta[1])).get("codec", "unknown")).lower())
    return codecs


def build_loader(shards, mode: str = "train", batch_size: int = 8, num_frames: int = 8,
                 stride: int = 16, image_size: int = 224, seed: int = 0, rank: int = 0,
                 world_size: int = 1, backend: str = "auto", *, num_views: int = 3,
                 num_workers: int = 2, device: str | None = None,
                 dtype: torch.dtype = torch.float32, shuffle_buffer: int = 256,
                 shuffle: bool = True, flip: bool = True):
    """An iterable of clip batches over ``shards`` (a directory, glob, tar or list of them).

    Each batch is ``{"video": float (B·V, 3, T, S, S), "label": long (B·V,), "key": list[str],
    "view": long (B·V,), "valid": bool (B·V,), "frames": long (B·V, T)}`` where V = 1 in train
    mode and ``num_views`` in test mode (every view of every video, video-major; sum the
    logits of a key's views). ``valid`` is False on padding rows (equal steps on every rank)
    and on videos that failed to decode (counted in ``loader.skipped``). ``len(loader)``
    batches per epoch; call ``loader.set_epoch(e)`` before each epoch.

    ``backend``: "dali", "torch", or "auto" (DALI if importable and able to decode the codecs
    on ``device``). ``device`` defaults to "cuda" when available; ``num_workers`` is DALI's
    thread count or the DataLoader's worker count. ``shuffle=False`` keeps the stored sample
    order in train mode (clips are still randomly windowed, cropped and flipped).
    ``flip=False`` turns off the train-time horizontal flip (for labels that name a left/right
    direction, as in SSv2 or the synthetic world, a flip changes the class).
    """
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world_size {world_size}")
    if backend not in ("auto", "dali", "torch"):
        raise ValueError(f"backend must be 'auto', 'dali' or 'torch', got {backend!r}")
    from kiclip.data.dali_loader import DaliClipLoader, dali_available, dali_can_decode
    from kiclip.data.torch_loader import TorchClipLoader

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    spec = ClipSpec(num_frames=num_frames, stride=stride, image_size=image_size,
                    num_views=num_views, flip=flip)
    shard_set = shards if isinstance(shards, ShardSet) else open_shards(shards)
    if backend == "auto":
        codecs = shard_codecs(shard_set)
        if not dali_available():
            backend = "torch"
            log.info("DALI is not installed: using the webdataset + PyAV loader")
        elif not dali_can_decode(codecs, device):
            backend = "torch"
            log.info("DALI cannot decode %s on %s: using the webdataset + PyAV loader",
                     sorted(codecs), device)
        else:
            backend = "dali"
    common = {"mode": mode, "spec": spec, "batch_size": batch_size, "seed": seed, "rank": rank,
              "world_size": world_size, "shuffle_buffer": shuffle_buffer, "dtype": dtype,
              "shuffle": shuffle}
    if backend == "dali":
        if not dali_available():
            raise ImportError("backend='dali' needs NVIDIA DALI: pip install -e '.[dali]'")
        loader = DaliClipLoader(shard_set, device=device, num_threads=max(num_workers, 1),
                                **common)
    else:
        loader = TorchClipLoader(shard_set, device=device, num_workers=num_workers, **common)
    log.info("%s loader: %d samples, rank %d/%d, %d batches per epoch", backend, len(shard_set),
             rank, world_size, len(loader))
    return loader
