"""What both clip loaders share: the epoch bookkeeping of the ``build_loader`` contract."""

from __future__ import annotations

import math

import torch

from kiclip.data.sampling import ClipSpec
from kiclip.data.shards import ShardSet


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
