"""Shards → clips with NVIDIA DALI: NVDEC on a GPU (``mixed``), libavcodec on CPU.

The pipeline, in the order data flows::

    external_source: this rank's samples of the epoch (video bytes, json, key), read
      from the tars at the offsets of the shard index (see :class:`_EpochSamples`)
      → python_function: the sample's json + name → ClipPlan (kiclip.data.sampling), and the
        video re-packed to the packets those frames need (VP8/VP9, see pack_needed_frames: a
        slice-and-concatenate with the json's packet index, a PyAV demux without one)
      → decoders.video(frames=plan indices in that stream)   (F, H, W, 3) uint8, F = V·T
      → resize(the plan's crop window only → S×S, linear, antialiased)
      → rotate(the json's display rotation, exact quarter turns)
      → crop_mirror_normalize(plan flip, CLIP mean/std)      (3, F, S, S) float
    → torch: (B·V, 3, T, S, S) + label, key, view, valid, frames; the planner's work figures
      (frames decoded, bytes read) summed into the loader's counters

Each epoch, the N samples are permuted by a generator of (seed, epoch), the same on every rank,
and rank r takes every world_size-th sample of that permutation from position r: each rank gets a
different, freshly mixed share every epoch (a class-sorted shard set cannot give a rank a fixed
subset of classes), every sample is read once per epoch, and a resumed run repeats the order.
One pipeline is built per epoch and run for exactly this rank's share; the last batch is
completed by repeating its last sample (rows marked not valid). A batch DALI fails to decode is
skipped and counted, and a new pipeline continues at the next batch.

DALI's CPU decoder reads only VP8, VP9 and MJPEG; which codecs NVDEC reads depends on the GPU:
kiclip.data.codecs asks before the first batch and picks the decode device.
"""
from __future__ import annotations

import io
import logging
import os
import struct

import av
import numpy as np
import torch

from kiclip.data.loader_base import ClipLoaderBase
from kiclip.data.sampling import CLIP_MEAN, CLIP_STD, ClipSpec, clip_rng, plan_clip
from kiclip.data.shards import ShardSet, load_meta
from kiclip.packets import (
    key_frame_indices,
    needed_packets,
    sample_packet_index,
    slice_packets,
)
from kiclip.rotation import ROTATIONS

log = logging.getLogger(__name__)


def dali_available() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True


def rank_samples(total: int, *, seed: int, epoch: int, rank: int, world_size: int,
                 shuffle: bool) -> np.ndarray:
    """Indices of the samples ``rank`` reads this epoch, in reading order.

    A permutation of [0, total) drawn from (seed, epoch), identical on every rank (stored order
    when ``shuffle`` is False), split by position modulo ``world_size``: shares differ by at
    most one sample and together hold every sample once.
    """
    order = (clip_rng(seed, epoch, "dali-order").permutation(total) if shuffle
             else np.arange(total))
    return order[rank::world_size]


class _EpochSamples:
    """external_source callback: batch ``first_step + iteration`` of this rank's samples.

    Returns (video bytes, json bytes, key) per sample; a short last batch is completed
    by repeating its last sample. Past the last batch it raises StopIteration (DALI prefetches).
    """

    def __init__(self, shards: ShardSet, indices: np.ndarray, batch_size: int, first_step: int):
        self.shards, self.indices = shards, indices
        self.batch_size, self.first_step = batch_size, first_step
        self.files: dict[str, io.BufferedReader] = {}

    def __call__(self, iteration: int):
        start = (self.first_step + iteration) * self.batch_size
        chosen = self.indices[start:start + self.batch_size].tolist()
        if not chosen:
            self.close()
            raise StopIteration
        chosen += chosen[-1:] * (self.batch_size - len(chosen))
        videos, metas, keys = [], [], []
        for i in chosen:
            ref = self.shards.samples[i]
            videos.append(self._read(ref.tar, *ref.video))
            metas.append(self._read(ref.tar, *ref.meta))
            keys.append(np.frombuffer(ref.key.encode(), np.uint8))
        return videos, metas, keys

    def _read(self, tar: str, offset: int, size: int) -> np.ndarray:
        f = self.files.get(tar)
        if f is None:
            f = self.files[tar] = open(tar, "rb")  # noqa: SIM115 (closed in close())
        f.seek(offset)
        return np.frombuffer(f.read(size), np.uint8)

    def close(self) -> None:
        for f in self.files.values():
            f.close()
        self.files.clear()


# IVF four-character codes of the codecs whose packets can be re-packed on their own: one packet
# per displayed frame, no reordering, and a key frame resets every reference (closed GOPs).
IVF_FOURCC = {"vp8": b"VP80", "vp9": b"VP90"}


def _ivf(packets: list[bytes], fourcc: bytes, width: int, height: int) -> bytes:
    """Packets → an IVF stream (32-byte file header, 12-byte header per frame)."""
    parts = [b"DKIF" + struct.pack("<HH4sHHIII", 0, 32, fourcc, width, height, 25, 1,
                                   len(packets)) + bytes(4)]
    for pts, data in enumerate(packets):
        parts.append(struct.pack("<IQ", len(data), pts))
        parts.append(data)
    return b"".join(parts)


def pack_needed_frames(video: bytes, frames: np.ndarray, total_frames: int, *,
                       index: np.ndarray | None = None, codec: str | None = None,
                       coded_size: tuple[int, int] | None = None
                       ) -> tuple[bytes, np.ndarray] | None:
    """Re-pack only the packets that decoding ``frames`` needs, as an IVF stream.

    DALI's ``decoders.video`` (2.4, CPU) decodes from the first frame up to the last requested
    one without seeking to key frames, so a clip spread over a long video pays for every frame in
    between. For VP8/VP9 each wanted frame only needs the packets from its preceding key frame
    (or from the previous wanted frame of the same GOP) up to itself (see
    kiclip.packets.needed_packets); those runs, concatenated, decode to bit-identical frames.

    With the sample's packet ``index`` (plus its ``codec`` name and coded ``(width, height)``)
    this is a slice-and-concatenate of ``video``; without, ``video`` is demuxed with PyAV first.
    Returns ``(ivf bytes, positions)`` where ``positions[i]`` is the frame of the new stream that
    equals ``frames.ravel()[i]``, or None when the stream is not VP8/VP9, its packet count is not
    ``total_frames``, it does not demux, or every packet is needed (the caller then decodes the
    original bytes, and a broken video fails there as before).
    """
    if index is not None:
        fourcc = IVF_FOURCC.get(codec or "")
        if fourcc is None or coded_size is None or len(index) != total_frames:
            return None
        width, height = coded_size
        keys = index["key"].astype(bool)
    else:
        demuxed = _demux(video)
        if demuxed is None:
            return None
        fourcc, width, height, packets, keys = demuxed
        if len(packets) != total_frames or not keys[0]:
            return None
    selected, positions = needed_packets(keys, frames)
    if len(selected) >= total_frames:
        return None  # nothing to skip: decode the original
    chosen = (slice_packets(video, index, selected) if index is not None
              else [packets[i] for i in selected.tolist()])
    return _ivf(chosen, fourcc, width, height), positions


def _demux(video: bytes) -> tuple[bytes, int, int, list[bytes], np.ndarray] | None:
    """(IVF fourcc, coded width, height, packets, key flags) of a VP8/VP9 stream, else None."""
    try:
        with av.open(io.BytesIO(video)) as container:
            stream = container.streams.video[0]
            fourcc = IVF_FOURCC.get(stream.codec_context.name)
            if fourcc is None:
                return None
            width, height = stream.codec_context.width, stream.codec_context.height
            packets, keys = [], []
            for packet in container.demux(stream):
                if packet.size:
                    keys.append(packet.is_keyframe)
                    packets.append(bytes(packet))
    except (av.FFmpegError, ValueError, IndexError, OSError):
        return None
    if not packets:
        return None
    return fourcc, width, height, packets, np.array(keys, bool)


def coded_window(start: tuple[float, float], end: tuple[float, float],
                 rotation: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """A crop window of the upright frame → the same pixels' window in the decoded frame.

    Windows are relative (row, col) corners in [0, 1]; the decoded frame turned ``rotation``
    degrees clockwise is the upright one (kiclip.rotation). Resizing this window to S×S and then
    turning it by ``rotation`` gives the upright crop, and costs a quarter turn of S×S pixels
    instead of one of the whole frame.
    """
    (r0, c0), (r1, c1) = start, end
    if rotation == 90:
        return (1 - c1, r0), (1 - c0, r1)
    if rotation == 180:
        return (1 - r1, 1 - c1), (1 - r0, 1 - c0)
    if rotation == 270:
        return (c0, 1 - r1), (c1, 1 - r0)
    return start, end


class _Planner:
    """The python_function stage: (json, key, encoded video) → plan tensors + the bytes
    to decode (see :func:`pack_needed_frames`; from the json's packet index when it has one),
    which of their frames to take, the crop window in the decoded frame, the angle that turns it
    upright (DALI's decoder ignores display matrices, and the IVF re-pack drops them), and the
    work: (frames the decoder runs through, bytes of the sample's members read).

    Kept at module scope so DALI's AutoGraph never rewrites it.
    """

    def __init__(self, spec: ClipSpec, mode: str, seed: int, epoch: int):
        self.spec, self.mode, self.seed, self.epoch = spec, mode, seed, epoch

    def __call__(self, meta_bytes, key_bytes, video):
        meta = load_meta(meta_bytes.tobytes())
        key = os.path.basename(key_bytes.tobytes().decode())
        total = int(meta["frames"])
        raw = video.tobytes()
        index = sample_packet_index(meta, len(raw))
        plan = plan_clip(total, int(meta["height"]), int(meta["width"]), self.spec,
                         mode=self.mode, seed=self.seed, epoch=self.epoch, key=key,
                         key_frames=key_frame_indices(index))
        h, w = plan.resize
        size = self.spec.image_size
        top, left = plan.crop
        frames = plan.frames.reshape(-1).astype(np.int32)
        rotation = int(meta.get("rotation", 0))
        if rotation not in ROTATIONS:  # fails this batch, as an undecodable video does
            raise ValueError(f"sample {key}: rotation must be one of {ROTATIONS}, got {rotation}")
        coded = (int(meta["height"]), int(meta["width"])) if rotation in (90, 270) else (
            int(meta["width"]), int(meta["height"]))
        packed = pack_needed_frames(raw, frames, total, index=index,
                                    codec=str(meta.get("codec")), coded_size=coded)
        if packed is None:
            data, decode_at = video, frames
        else:
            data, decode_at = np.frombuffer(packed[0], np.uint8), packed[1]
        # DALI decodes from the stream's first frame to the last one asked for.
        work = np.array([int(decode_at.max()) + 1, video.size + meta_bytes.size], np.int64)
        # The crop window in the resized frame, relative to the frame: resize reads only that
        # window of the decoded frame (same scale, so the same pixels as resize-then-crop).
        start, end = coded_window((top / h, left / w), ((top + size) / h, (left + size) / w),
                                  rotation)
        return (frames, decode_at, data,
                np.array(start, np.float32), np.array(end, np.float32),
                np.array(-rotation, np.float32),  # DALI turns counterclockwise
                np.array(plan.flip, np.int32),
                np.array(meta["label"], np.int32),
                np.frombuffer(key.encode(), np.uint8).copy(),
                work)


def build_pipeline(samples: _EpochSamples, *, mode: str, spec: ClipSpec, batch_size: int,
                   seed: int, epoch: int, device: str, num_threads: int):
    """The DALI pipeline reading ``samples`` for one epoch of this rank (built, ready to
    ``run``); ``device`` "cuda" decodes with NVDEC, "cpu" with DALI's libavcodec."""
    from nvidia.dali import fn, pipeline_def, types

    epoch_seed = int(clip_rng(seed, epoch, "dali-reader").integers(0, 2**31 - 1))
    gpu = device == "cuda"
    size = spec.image_size

    @pipeline_def(batch_size=batch_size, num_threads=num_threads, seed=epoch_seed,
                  device_id=torch.cuda.current_device() if gpu else None,
                  prefetch_queue_depth=2)
    def clip_pipeline():
        video, meta, key = fn.external_source(source=samples, num_outputs=3, batch=True,
                                              dtype=types.UINT8)
        (frames, decode_at, data, roi_start, roi_end, angle, flip, label, key,
         work) = fn.python_function(meta, key, video, num_outputs=10,
                                    function=_Planner(spec, mode, seed, epoch))
        clip = fn.decoders.video(data, frames=decode_at, device="mixed" if gpu else "cpu")
        clip = fn.resize(clip, size=(size, size), roi_start=roi_start, roi_end=roi_end,
                         roi_relative=True, interp_type=types.INTERP_LINEAR, antialias=True)
        clip = fn.rotate(clip, angle=angle, keep_size=True, interp_type=types.INTERP_NN)
        clip = fn.crop_mirror_normalize(
            clip, mirror=flip,
            mean=[255 * m for m in CLIP_MEAN], std=[255 * s for s in CLIP_STD],
            dtype=types.FLOAT, output_layout="CFHW")
        return clip, label, key, frames, work

    pipe = clip_pipeline()
    pipe.build()
    return pipe


class DaliClipLoader(ClipLoaderBase):
    """Iterable of clip batches (see :func:`kiclip.data.build_loader`) driven by DALI.

    ``decode_device`` "cpu" decodes with libavcodec in DALI's threads; "cuda" with NVDEC
    (run on a GPU by launch/gpu_check.sh, not by the CPU test suite); default ``device``. Batches
    are delivered on ``device``. ``dtype`` may be ``torch.bfloat16`` on a GPU.
    ``shuffle_buffer`` is unused: each epoch permutes the whole sample list.
    """

    def __init__(self, shards: ShardSet, *, mode: str, spec: ClipSpec, batch_size: int,
                 seed: int, rank: int, world_size: int, device: str = "cpu",
                 decode_device: str | None = None, num_threads: int = 2,
                 shuffle_buffer: int = 256, dtype: torch.dtype = torch.float32,
                 shuffle: bool = True):
        super().__init__(shards, mode=mode, spec=spec, batch_size=batch_size, seed=seed, rank=rank,
                         world_size=world_size, device=device, dtype=dtype, shuffle=shuffle,
                         shuffle_buffer=shuffle_buffer)
        self.decode_device = decode_device or device
        self.num_threads = num_threads

    def __iter__(self):
        mine = rank_samples(len(self.shards), seed=self.seed, epoch=self.epoch, rank=self.rank,
                            world_size=self.world_size, shuffle=self.shuffle)
        pipe = samples = None
        try:
            for step in range(len(self)):
                real = min(max(len(mine) - step * self.batch_size, 0), self.batch_size)
                if real == 0:  # this rank's share ended: pad so every rank steps equally
                    yield self._padding_batch()
                    continue
                if pipe is None:
                    samples = _EpochSamples(self.shards, mine, self.batch_size, first_step=step)
                    pipe = self._pipeline(samples)
                try:
                    outputs = pipe.run()
                except RuntimeError as exn:
                    # DALI fails the whole batch and the pipeline with it: count the batch as
                    # skipped and let a new pipeline start at the next one.
                    self.skipped += real
                    log.error("DALI could not decode a batch: %d samples skipped (%d so far). "
                              "%s", real, self.skipped, _first_error_line(exn))
                    pipe = None
                    samples.close()
                    yield self._padding_batch()
                    continue
                yield self._to_batch(outputs, real)
        finally:
            pipe = None
            if samples is not None:
                samples.close()

    def _pipeline(self, samples: _EpochSamples):
        return build_pipeline(
            samples, mode=self.mode, spec=self.spec, batch_size=self.batch_size,
            seed=self.seed, epoch=self.epoch, device=self.decode_device,
            num_threads=self.num_threads)

    def _to_batch(self, outputs, real: int) -> dict:
        from nvidia.dali.plugin.pytorch import feed_ndarray

        clip_tl, label_tl, key_tl, frames_tl, work_tl = outputs
        work = np.array(work_tl.as_tensor())[:real]  # the repeats padding a batch not counted
        self.clips += real
        self.decoded_frames += int(work[:, 0].sum())
        self.bytes_read += int(work[:, 1].sum())
        clips = clip_tl.as_tensor()
        decoded_on = "cuda" if self.decode_device == "cuda" else "cpu"
        video = torch.empty(clips.shape(), dtype=torch.float32, device=decoded_on)
        stream = torch.cuda.current_stream() if decoded_on == "cuda" else None
        feed_ndarray(clips, video, cuda_stream=stream)
        if self.device != decoded_on:  # DALI decoded on the CPU a codec NVDEC cannot read
            video = video.to(self.device, non_blocking=True)
        b, c, _, s, _ = video.shape
        t, v = self.spec.num_frames, self.views
        video = video.view(b, c, v, t, s, s).permute(0, 2, 1, 3, 4, 5).reshape(b * v, c, t, s, s)
        frames = torch.from_numpy(np.array(frames_tl.as_tensor())).long().view(b * v, t)
        labels = torch.from_numpy(np.array(label_tl.as_tensor())).long().view(b)
        keys = [np.array(key_tl.at(i)).tobytes().decode() for i in range(b)]
        valid = torch.arange(b) < real
        return {"video": video.to(self.dtype),
                "label": labels.repeat_interleave(v),
                "key": [k for k in keys for _ in range(v)],
                "view": torch.arange(v).repeat(b),
                "valid": valid.repeat_interleave(v),
                "frames": frames}

    def _padding_batch(self) -> dict:
        n, t, s = self.batch_size * self.views, self.spec.num_frames, self.spec.image_size
        target = "cuda" if self.device == "cuda" else "cpu"
        return {"video": torch.zeros(n, 3, t, s, s, dtype=self.dtype, device=target),
                "label": torch.full((n,), -1, dtype=torch.long),
                "key": [""] * n,
                "view": torch.arange(self.views).repeat(self.batch_size),
                "valid": torch.zeros(n, dtype=torch.bool),
                "frames": torch.zeros(n, t, dtype=torch.long)}


def _first_error_line(exn: Exception) -> str:
    lines = [ln.strip() for ln in str(exn).splitlines() if ln.strip()]
    useful = [ln for ln in lines if "rror" in ln and "Critical error" not in ln]
    return (useful or lines or [""])[-1][:300]
