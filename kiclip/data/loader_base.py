"""What both clip loaders share: the epoch bookkeeping of the ``build_loader`` contract."""

from __future__ import annotations

import math

import torch

from kiclip.data.sampling import ClipSpec
from kiclip.data.shards import ShardSet


class ClipLoaderBase:
    """Per-rank share, batches per epoch, the epoch counter and the skipped-sample count.

    Every rank steps ``ceil(ceil(N / world_size) / batch_size)`` times per epoch; subclasses pad
    a shorter share with ``valid=False`` rows.
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
        self.views = spec.views(mode)
        self.per_rank = math.ceil(len(shards) / world_size)

    def __len__(self) -> int:
        return math.ceil(self.per_rank / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
