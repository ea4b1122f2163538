"""What both clip loaders share: the epoch bookkeeping of the ``build_loader`` contract."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from kiclip.data.sampling import ClipSpec
from kiclip.data.shards import ShardSet

BACKENDS = ("auto", "dali", "torch")


@dataclass(frozen=True)
class LoaderSpec:
    """How a loader reads a shard set (``kiclip.config.DataConfig.loader_spec`` builds it).

    ``mode`` "train" (one random clip per video, order shuffled per epoch unless ``shuffle`` is
    False) or "test" (``clip.num_views`` evenly spread clips per video, stored order);
    ``batch_size`` videos per rank and step; ``backend`` "auto" | "dali" | "torch";
    ``num_workers`` DALI's thread count or the DataLoader's worker count; ``shuffle_buffer`` the
    fallback loader's sample buffer.
    """

    mode: str = "train"
    clip: ClipSpec = field(default_factory=ClipSpec)
    batch_size: int = 8
    backend: str = "auto"
    num_workers: int = 2
    shuffle: bool = True
    shuffle_buffer: int = 256

    def __post_init__(self) -> None:
        if self.mode not in ("train", "test"):
            raise ValueError(f"mode must be 'train' or 'test', got {self.mode!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be 'auto', 'dali' or 'torch', got {self.backend!r}")


class ClipLoaderBase:
    """Per-rank share, batches per epoch, the epoch counter and the work counters.

    Every rank steps ``ceil(ceil(N / world_size) / batch_size)`` times per epoch; subclasses pad
    a shorter share with ``valid=False`` rows.

    Counters, summed over the loader's life (all epochs) in the process that iterates it:
    ``skipped`` samples that failed to decode; ``clips`` videos delivered as valid rows;
    ``decoded_frames`` frames the decoder produced for them; ``bytes_read`` bytes of shard
    members read for them (see each loader for what it reads).
    """

    def __init__(self, shards: ShardSet, *, mode: str, spec: ClipSpec, batch_size: int, seed: int,
                 rank: int, world_size: int, device: str, dtype: torch.dtype, shuffle: bool,
                 shuffle_buffer: int):
        self.shards, self.mode, self.spec = shards, mode, spec
        self.shuffle = shuffle and mode == "train"
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.device, self.dtype = device, dtype
        self.shuffle_buffer = shuffle_buffer
        self.epoch = 0
        self.skipped = 0
        self.clips = 0
        self.decoded_frames = 0
        self.bytes_read = 0
        self.views = spec.views(mode)
        self.per_rank = math.ceil(len(shards) / world_size)

    def __len__(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
