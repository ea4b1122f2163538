"""Shards → clips with webdataset + PyAV in DataLoader workers (the fallback loader).

Each worker runs, in the order data flows (open_clip's WebDataset loader shape)::

    tar list (order shuffled per epoch in train mode, the same on every rank)
      → the samples of those tars in tar order (local tars: the ShardSet's sample table;
                         a URL's tars: streamed front to back and sha256-checked, see
                         _streamed_samples)
      → split by rank   (the i-th sample of that sequence goes to rank i mod world_size)
      → split by worker (the j-th sample of this rank goes to worker j mod num_workers)
      → shuffle buffer  (train mode; seeded by seed, epoch, rank, worker)
      → read the sample (local tars: seek + read of its members, _TarReader)
      → plan (kiclip.data.sampling) → PyAV decode → turn upright (the json's rotation)
      → torch transforms → one item per video

and the main process batches items and pads this rank's share up to ceil(N / world_size) with
``valid=False`` rows, so every rank steps the same number of times per epoch. A video that
fails to decode becomes such a padding row too, and is counted in ``loader.skipped``.

PyAV decodes, with the json's packet index (kiclip.packets), only the packets from each
wanted frame's key frame on; without one, from the first frame up to the last wanted one.
Local tars are read by sample: a worker seeks to its own samples' members only (the ShardSet's
offsets from each tar's ``.idx``), so an epoch reads each sample's members once over all ranks
and workers; the sequence, and so every item, is the same as a front-to-back stream's. A member
that cannot be read as indexed (a tar cut short or rewritten since it was indexed) makes that
sample a skipped row naming the tar. A URL's tars cannot be seeked: every worker of every rank
streams every one of them, and the samples it passes on to other ranks and workers are read too.
Each item carries the work done for it (frames decoded, and the bytes this worker read from the
tars since its previous item); the main process sums them into the loader's counters.
"""
from __future__ import annotations

import json
import logging
import random
from collections import OrderedDict
from typing import BinaryIO

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from webdataset import tariterators

from kiclip.data.decode import DecodeError, decode_clip
from kiclip.data.loader_base import ClipLoaderBase
from kiclip.data.sampling import ClipSpec, clip_rng, plan_clip
from kiclip.data.shards import VIDEO_EXTS, SampleRef, ShardSet, load_meta
from kiclip.data.transforms import apply_plan
from kiclip.packets import key_frame_indices, sample_packet_index

log = logging.getLogger(__name__)


def _log_and_continue(exn: Exception) -> bool:
    """webdataset error handler: name the tar (webdataset appends it to ``args``) and go on."""
    where = next((a for a in reversed(exn.args) if isinstance(a, str) and ".tar" in a), "?")
    log.error("reading %s failed, the rest of that tar is left out: %r", where, exn.args[0]
              if exn.args else exn)
    return True


def _buffer_shuffle(items, bufsize: int, rng: random.Random):
    """Shuffle a stream with a buffer of ``bufsize`` items (deterministic for a given rng)."""
    buf = []
    for item in items:
        buf.append(item)
        if len(buf) >= bufsize:
            yield buf.pop(rng.randrange(len(buf)))
    rng.shuffle(buf)
    yield from buf


class ClipStream(IterableDataset):
    """One epoch of this rank's clips, split across DataLoader workers; see the module doc.

    ``samples_by_tar`` (the ShardSet's table of local ``tars``, see :func:`samples_by_tar`) makes
    each worker read only its own samples; None streams every tar front to back (URL tars, those
    with ``checksums``).

    Yields dicts: ``video`` float (V, 3, T, S, S) (None when decoding failed), ``label`` int,
    ``key`` str, ``frames`` long (V, T), ``error`` str or None, ``decoded_frames`` int,
    ``bytes_read`` int (see the module doc).
    """

    def __init__(self, tars: list[str], *, mode: str, spec: ClipSpec, seed: int, epoch: int,
                 rank: int, world_size: int, shuffle_buffer: int, shuffle: bool,
                 checksums: dict[str, tuple[str, int]] | None = None,
                 samples_by_tar: dict[str, list[SampleRef]] | None = None):
        self.tars, self.mode, self.spec = tars, mode, spec
        self.checksums = checksums or {}
        self.samples_by_tar = samples_by_tar
        self.shuffle = shuffle
        self.seed, self.epoch = seed, epoch
        self.rank, self.world_size = rank, world_size
        self.shuffle_buffer = shuffle_buffer

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        tars = list(self.tars)
        if self.shuffle:
            random.Random(self._seed("tars")).shuffle(tars)
        if self.samples_by_tar is None:
            yield from self._streamed_items(tars, worker, workers)
        else:
            yield from self._indexed_items(tars, worker, workers)

    def _streamed_items(self, tars: list[str], worker: int, workers: int):
        """Items of this worker's samples, every tar read front to back."""
        streamed = [0]  # bytes read since the last item went out
        samples = _counting_bytes(_tar_samples(tars, self.checksums), streamed)
        for sample in self._mine(samples, worker, workers):
            item = self._clip(*_stream_sample_parts(sample))
            item["bytes_read"], streamed[0] = streamed[0], 0
            yield item

    def _indexed_items(self, tars: list[str], worker: int, workers: int):
        """Items of this worker's samples, each read from its tar by the sample table."""
        in_order = (ref for tar in tars for ref in self.samples_by_tar.get(tar, ()))
        with _TarReader() as reader:
            for ref in self._mine(in_order, worker, workers):
                try:
                    item = self._clip(ref.key, ref.tar, *reader.members(ref))
                except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exn:
                    # a short read or a json member that is not json: the tar has changed
                    item = self._unreadable(ref, exn)
                item["bytes_read"], reader.bytes_read = reader.bytes_read, 0
                yield item

    def _mine(self, samples, worker: int, workers: int):
        """This rank's and worker's share of ``samples``, through the shuffle buffer in train."""
        mine = (s for i, s in enumerate(samples) if i % self.world_size == self.rank)
        mine = (s for j, s in enumerate(mine) if j % workers == worker)
        if self.shuffle:
            mine = _buffer_shuffle(mine, self.shuffle_buffer,
                                   random.Random(self._seed(f"shuffle/{self.rank}/{worker}")))
        return mine

    def _unreadable(self, ref: SampleRef, exn: Exception) -> dict:
        """The skipped item of a sample whose members could not be read as indexed."""
        views = self.spec.views(self.mode)
        return {"key": ref.key, "label": -1, "video": None, "decoded_frames": 0,
                "frames": torch.zeros(views, self.spec.num_frames, dtype=torch.long),
                "error": f"{ref.tar}: sample {ref.key!r} unreadable, the tar is not as when it "
                         f"was indexed (rebuild its .idx or the shard): {exn}"}

    def _seed(self, what: str) -> int:
        return int(clip_rng(self.seed, self.epoch, what).integers(0, 2**63 - 1))

    def _clip(self, key: str, where: str, raw_meta: bytes, data: bytes | None) -> dict:
        """The item of sample ``key`` (from tar ``where``): its json member and video bytes."""
        meta = load_meta(raw_meta)
        index = sample_packet_index(meta, len(data)) if data is not None else None
        plan = plan_clip(int(meta["frames"]), int(meta["height"]), int(meta["width"]), self.spec,
                         mode=self.mode, seed=self.seed, epoch=self.epoch, key=key,
                         key_frames=key_frame_indices(index))
        item = {"key": key, "label": int(meta["label"]), "frames": torch.from_numpy(plan.frames),
                "video": None, "error": None, "decoded_frames": 0}
        try:
            if data is None:
                raise DecodeError(f"no video member (one of {VIDEO_EXTS})")
            frames, item["decoded_frames"] = decode_clip(
                data, plan.frames.reshape(-1), rotation=int(meta.get("rotation", 0)),
                packets=index, codec=meta.get("codec"))
            item["video"] = apply_plan(frames, plan, self.spec.image_size)
        except DecodeError as exn:
            item["error"] = f"{where}: {exn}"
        return item


def _tar_samples(tars: list[str], checksums: dict[str, tuple[str, int]]):
    """Samples of ``tars`` in order: local files through webdataset's opener, URLs (those with
    ``checksums``) through :func:`_streamed_samples`."""
    if not checksums:
        return tariterators.tarfile_samples(({"url": t} for t in tars), handler=_log_and_continue)
    return _streamed_samples(tars, checksums)


def _streamed_samples(tars: list[str], checksums: dict[str, tuple[str, int]]):
    """Samples of URL tars, each read once front to back (kiclip.remote.ShardStream) and
    checked against its manifest sha256 once read whole. A tar that cannot be fetched or does
    not match stops the epoch with RemoteDataError / CorruptShardError naming it; the samples
    read from it before that were already handed on (see docs/data.md, "Remote shards")."""
    from kiclip.remote import RemoteDataError, ShardStream

    def stop_on_remote_errors(exn: Exception) -> bool:
        # False ends this tar's iteration; verify() below raises the stream's own error
        return False if isinstance(exn, RemoteDataError) else _log_and_continue(exn)

    for tar in tars:
        sha256, size = checksums[tar]
        with ShardStream(tar, sha256, size) as stream:
            files = tariterators.tar_file_expander([{"url": tar, "stream": stream}],
                                                   handler=stop_on_remote_errors)
            yield from tariterators.group_by_keys(files, handler=stop_on_remote_errors)
            stream.verify()


def _stream_sample_parts(sample: dict) -> tuple[str, str, bytes, bytes | None]:
    """(key, tar, json, video or None) of a sample from the tar stream."""
    video = next((sample[e] for e in VIDEO_EXTS if e in sample), None)
    return sample["__key__"], sample.get("__url__", "?"), sample["json"], video


def samples_by_tar(samples: list[SampleRef]) -> dict[str, list[SampleRef]]:
    """Tar → its samples in the order the tar stores them (as streaming it yields them)."""
    by_tar: dict[str, list[SampleRef]] = {}
    for ref in samples:
        by_tar.setdefault(ref.tar, []).append(ref)
    for refs in by_tar.values():
        refs.sort(key=lambda ref: min(ref.video[0], ref.meta[0]))
    return by_tar


class _TarReader:
    """Reads samples' members from local tars by offset, one open file per tar (at most
    ``MAX_OPEN`` at once, least recently used closed first); ``bytes_read`` adds up what it
    read. Use as a context manager, which closes the files."""

    MAX_OPEN = 64

    def __init__(self):
        self.files: OrderedDict[str, BinaryIO] = OrderedDict()
        self.bytes_read = 0

    def __enter__(self) -> _TarReader:
        return self

    def __exit__(self, *_) -> None:
        while self.files:
            self.files.popitem()[1].close()

    def members(self, ref: SampleRef) -> tuple[bytes, bytes]:
        """(json, video) bytes of the sample; OSError on a short read."""
        return self._member(ref.tar, *ref.meta), self._member(ref.tar, *ref.video)

    def _member(self, tar: str, offset: int, size: int) -> bytes:
        f = self._file(tar)
        f.seek(offset)
        data = f.read(size)
        self.bytes_read += len(data)
        if len(data) != size:
            raise OSError(f"read {len(data)} of the {size} bytes at offset {offset}")
        return data

    def _file(self, tar: str) -> BinaryIO:
        if tar in self.files:
            self.files.move_to_end(tar)
        else:
            if len(self.files) >= self.MAX_OPEN:
                self.files.popitem(last=False)[1].close()
            self.files[tar] = open(tar, "rb")
        return self.files[tar]


def _counting_bytes(samples, streamed: list[int]):
    """Pass ``samples`` through, adding each one's member bytes to ``streamed[0]``."""
    for sample in samples:
        streamed[0] += sum(len(v) for v in sample.values() if isinstance(v, bytes))
        yield sample


def _worker_init(_):
    torch.set_num_threads(1)  # a worker is one decode thread, like one DALI thread


class TorchClipLoader(ClipLoaderBase):
    """Iterable of clip batches (see :func:`kiclip.data.build_loader`) from DataLoader workers."""

    def __init__(self, shards: ShardSet, *, mode: str, spec: ClipSpec, batch_size: int,
                 seed: int, rank: int, world_size: int, num_workers: int = 2,
                 shuffle_buffer: int = 256, device: str = "cpu",
                 dtype: torch.dtype = torch.float32, shuffle: bool = True):
        super().__init__(shards, mode=mode, spec=spec, batch_size=batch_size, seed=seed, rank=rank,
                         world_size=world_size, device=device, dtype=dtype, shuffle=shuffle,
                         shuffle_buffer=shuffle_buffer)
        self.num_workers = num_workers
        # Local tars are read by the sample table, grouped once here rather than every epoch.
        self.samples_by_tar = None if shards.streamed else samples_by_tar(shards.samples)

    def __iter__(self):
        stream = ClipStream(self.shards.tars, mode=self.mode, spec=self.spec, seed=self.seed,
                            epoch=self.epoch, rank=self.rank, world_size=self.world_size,
                            shuffle_buffer=self.shuffle_buffer, shuffle=self.shuffle,
                            checksums=self.shards.checksums,
                            samples_by_tar=self.samples_by_tar)
        items = DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                           worker_init_fn=_worker_init if self.num_workers else None,
                           prefetch_factor=4 if self.num_workers else None)
        delivered = 0
        batch: list[dict | None] = []
        for item in items:
            if delivered == self.per_rank:
                break  # cannot happen with consistent shards; never exceed the equal share
            delivered += 1
            self.bytes_read += item["bytes_read"]
            self.decoded_frames += item["decoded_frames"]
            if item["error"] is not None:
                self.skipped += 1
                log.warning("skipped %s (%d skipped so far): %s", item["key"], self.skipped,
                            item["error"])
                item = None
            else:
                self.clips += 1
            batch.append(item)
            if len(batch) == self.batch_size:
                yield self._collate(batch)
                batch = []
        if delivered < self.per_rank:
            missing = self.per_rank - delivered
            # One short rank is normal (N not divisible by world_size); more means lost samples.
            if missing > 1:
                log.warning("rank %d got %d samples, %d padded", self.rank, delivered, missing)
        for _ in range(self.per_rank - delivered):
            batch.append(None)
            if len(batch) == self.batch_size:
                yield self._collate(batch)
                batch = []
        if batch:
            yield self._collate(batch + [None] * (self.batch_size - len(batch)))

    def _collate(self, items: list[dict | None]) -> dict:
        """Items (None = padding) → a batch of B·V rows, video-major."""
        v, t, s = self.views, self.spec.num_frames, self.spec.image_size
        blank = torch.zeros(v, 3, t, s, s)
        video = torch.cat([it["video"] if it else blank for it in items])
        batch = {
            "video": video.to(device=self.device, dtype=self.dtype, non_blocking=True),
            "label": torch.tensor([it["label"] if it else -1 for it in items]).repeat_interleave(v),
            "key": [it["key"] if it else "" for it in items for _ in range(v)],
            "view": torch.arange(v).repeat(len(items)),
            "valid": torch.tensor([it is not None for it in items]).repeat_interleave(v),
            "frames": torch.cat([it["frames"] if it else torch.zeros(v, t, dtype=torch.long)
                                 for it in items]),
        }
        return batch
