"""Clips per second of the data plane: DALI vs the fallback loader vs the reference approach.

    python launch/bench_data.py --shards shards/syn/train --list data/syn/train.csv \\
        --video-root data/syn

Measures, on the same videos with the same clip spec and the same worker/thread count:
  (a) dali:      kiclip's DALI pipeline over the shards (NVDEC on a GPU, else DALI's CPU decoder);
  (b) torch:     kiclip's fallback loader over the shards (webdataset + PyAV in DataLoader workers);
  (c) reference: what the reference code does: per-video PyAV decode of the individual files in
                 the list (every frame decoded, then the sampled ones kept), in DataLoader workers.
The passes are interleaved: one warm-up round (every loader once, untimed), then ``--runs``
timed rounds, each running every loader once (the order rotates from round to round), so on a
shared machine a load change hits all loaders alike instead of whichever happened to run then.
Within a pass the first batch (worker start, pipeline build) is excluded. Reports the median
clips/s and clips per CPU-second (this process's threads + its DataLoader workers, live or
reaped, counted from the first batch on), and the work per clip over all passes:
``decoded_frames_per_clip`` (frames the loader's decoder produced: DALI's re-packed stream up to
the last wanted frame, PyAV's output for the fallback, every frame for (c)) and
``bytes_per_clip`` (bytes the loader read: a sample's members for DALI, everything a worker
streams from the tars for the fallback, the file for (c)); ``shard_bytes_per_clip`` is what a
sample costs in storage. The last line is JSON: these per loader and the clips/s ratios to (c).

(a) and (b) cut key-frame windows (``--keyframe-windows``, the default, as training does: each
window start moved to the nearest key frame that fits, so with a GOP dividing the stride every
wanted frame is a key frame); (c) stays the reference's uniform windows. ``--no-keyframe-windows``
gives (a) and (b) uniform windows too.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from kiclip.data import LoaderSpec, build_loader, open_shards
from kiclip.data.sampling import ClipSpec, plan_clip
from kiclip.data.transforms import apply_plan

log = logging.getLogger("bench_data")


class ReferenceClips(Dataset):
    """(c): one video file per item, decoded whole with PyAV, then sampled and transformed."""

    def __init__(self, rows: list[tuple[str, int]], spec: ClipSpec, seed: int):
        self.rows, self.spec, self.seed = rows, spec, seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        """(clip (3, T, S, S), label, frames decoded, bytes of the file)."""
        path, label = self.rows[i]
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_count = 1
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        video = np.stack(frames)
        plan = plan_clip(len(video), video.shape[1], video.shape[2], self.spec, mode="train",
                         seed=self.seed, epoch=0, key=Path(path).stem)
        clip = apply_plan(video[plan.frames.reshape(-1)], plan, self.spec.image_size)[0]
        return clip, label, len(video), os.path.getsize(path)


def _worker_init(_):
    torch.set_num_threads(1)


def read_list(path: Path, root: Path) -> list[tuple[str, int]]:
    rows = []
    for line in path.read_text().splitlines():
        if line.strip():
            rel, label = line.rsplit(",", 1)
            rows.append((str(root / rel), int(label)))
    return rows


def _live_children_cpu() -> float:
    """CPU time of this process's running children (DataLoader workers not yet reaped)."""
    me, total, tick = os.getpid(), 0.0, os.sysconf("SC_CLK_TCK")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # ppid; utime stime cutime cstime are fields 11-14 here
            total += sum(int(x) for x in fields[11:15]) / tick
    return total


def cpu_seconds() -> float:
    """CPU time of this process and its children (DataLoader workers), reaped or running.

    Counting only reaped children would miss what workers did before the first timed batch at
    the start and charge it at the end (workers are reaped when a pass ends).
    """
    live = _live_children_cpu()
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + live


class Work:
    """The reference loader's counters, named as kiclip's loaders name theirs."""

    def __init__(self):
        self.clips = self.decoded_frames = self.bytes_read = 0


def work_per_clip(counters) -> dict:
    """Frames decoded and bytes read per delivered clip, from a loader's (or Work's) counters."""
    n = max(counters.clips, 1)
    return {"decoded_frames_per_clip": round(counters.decoded_frames / n, 2),
            "bytes_per_clip": round(counters.bytes_read / n)}


def shard_bytes_per_clip(shards) -> int:
    """Bytes of the shard tars per sample: what a clip costs in storage."""
    return round(sum(os.path.getsize(t) for t in shards.tars) / max(len(shards), 1))


def timed_pass(make_batches) -> tuple[float, float]:
    """(clips/s, clips per CPU-second) for one pass, from the second batch on."""
    clips, start_wall, start_cpu = 0, None, None
    for batch in make_batches():
        if start_wall is None:
            start_wall, start_cpu = time.perf_counter(), cpu_seconds()
            continue
        clips += batch
    wall, cpu = time.perf_counter() - start_wall, cpu_seconds() - start_cpu
    return clips / wall, clips / max(cpu, 1e-9)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shards", type=Path, required=True, help="make_shards.py output directory")
    p.add_argument("--list", type=Path, required=True,
                   help="the list file the shards were made from (rows `relative/path,label`)")
    p.add_argument("--video-root", type=Path, required=True, help="the list's paths root")
    p.add_argument("--frames", type=int, default=8, help="frames per clip T")
    p.add_argument("--stride", type=int, default=16, help="frame stride s")
    p.add_argument("--image-size", type=int, default=224, help="crop size S")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="DALI threads = DataLoader workers for (b) and (c)")
    p.add_argument("--runs", type=int, default=3, help="timed passes per loader (median)")
    p.add_argument("--loaders", default="dali,torch,reference",
                   help="comma list of loaders to run")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--keyframe-windows", action=argparse.BooleanOptionalAction, default=True,
                   help="(a) and (b) start clip windows on key frames, as training does by "
                        "default (data.keyframe_windows); (c) always uses uniform windows")
    return p


def shard_loader(shards, spec: ClipSpec, backend: str, args, device: str):
    """(a) or (b): (a function yielding each batch's clip count, the loader: its own counters
    are its Work)."""
    loader = build_loader(shards, LoaderSpec(clip=spec, batch_size=args.batch_size,
                                             backend=backend, num_workers=args.workers),
                          device=device)

    def batches():
        for batch in loader:
            if device == "cuda":
                torch.cuda.synchronize()
            yield int(batch["valid"].sum())
    return batches, loader


def reference_loader(rows: list[tuple[str, int]], spec: ClipSpec, args):
    """(c): (a function yielding each batch's clip count, its Work counters)."""
    data = DataLoader(ReferenceClips(rows, spec, seed=0), batch_size=args.batch_size,
                      num_workers=args.workers, worker_init_fn=_worker_init, shuffle=True,
                      prefetch_factor=4 if args.workers else None)
    work = Work()

    def batches():
        for video, _, decoded, size in data:
            work.clips += video.shape[0]
            work.decoded_frames += int(decoded.sum())
            work.bytes_read += int(size.sum())
            yield video.shape[0]
    return batches, work


def interleaved_passes(loaders: dict, runs: int) -> dict[str, list[tuple[float, float]]]:
    """(clips/s, clips per CPU-second) of each timed pass per loader: a warm-up round, then
    ``runs`` rounds of every loader, the order rotating from round to round."""
    names = list(loaders)
    passes: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for name in names:  # warm-up round: page cache, imports, codec init
        timed_pass(loaders[name])
    for run in range(runs):
        order = names[run % len(names):] + names[:run % len(names)]
        for name in order:
            passes[name].append(timed_pass(loaders[name]))
            log.info("round %d %-9s %6.2f clips/s  %6.2f clips/CPU-s", run + 1, name,
                     *passes[name][-1])
    return passes


def loader_results(passes: dict, work: dict) -> dict[str, dict]:
    """Per loader: median clips/s and clips/CPU-s, every run's clips/s, and the work per clip."""
    results = {}
    for name, runs in passes.items():
        rate = statistics.median(r for r, _ in runs)
        per_cpu = statistics.median(c for _, c in runs)
        results[name] = {"clips_per_s": round(rate, 2), "clips_per_cpu_s": round(per_cpu, 2),
                         "runs": [round(r, 2) for r, _ in runs],
                         **work_per_clip(work[name])}
        log.info("%-9s %8.2f clips/s  %7.2f clips/CPU-s  %7.1f decoded frames/clip  "
                 "%9d bytes/clip  runs %s", name, rate, per_cpu,
                 results[name]["decoded_frames_per_clip"], results[name]["bytes_per_clip"],
                 results[name]["runs"])
    return results


def summary_json(results: dict, shards, args, device: str, videos: int) -> dict:
    """The last line's JSON: each figure per loader, the ratios to (c), the spec and machine."""
    ref = results.get("reference", {}).get("clips_per_s")
    return {
        "clips_per_s": {k: v["clips_per_s"] for k, v in results.items()},
        "clips_per_cpu_s": {k: v["clips_per_cpu_s"] for k, v in results.items()},
        "ratio_to_reference": {k: round(v["clips_per_s"] / ref, 2) for k, v in results.items()}
        if ref else {},
        "cpu_ratio_to_reference": {
            k: round(v["clips_per_cpu_s"] / results["reference"]["clips_per_cpu_s"], 2)
            for k, v in results.items()} if ref else {},
        "decoded_frames_per_clip": {k: v["decoded_frames_per_clip"] for k, v in results.items()},
        "bytes_per_clip": {k: v["bytes_per_clip"] for k, v in results.items()},
        "shard_bytes_per_clip": shard_bytes_per_clip(shards),
        "runs": {k: v["runs"] for k, v in results.items()},
        "spec": {"frames": args.frames, "stride": args.stride, "image_size": args.image_size,
                 "batch_size": args.batch_size, "workers": args.workers, "device": device,
                 "videos": videos, "keyframe_windows": args.keyframe_windows},
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                   f"load average {os.getloadavg()[0]:.1f}",
    }


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[bench_data] %(message)s")

    spec = ClipSpec(num_frames=args.frames, stride=args.stride, image_size=args.image_size)
    shard_spec = dataclasses.replace(spec, keyframe_windows=args.keyframe_windows)
    shards = open_shards(args.shards)
    rows = read_list(args.list, args.video_root)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    log.info("%d samples in shards, %d videos in the list; T=%d s=%d S=%d, batch %d, %d workers, "
             "device %s, key-frame windows %s", len(shards), len(rows), args.frames, args.stride,
             args.image_size, args.batch_size, args.workers, device,
             "on" if args.keyframe_windows else "off")

    makers = {"dali": lambda: shard_loader(shards, shard_spec, "dali", args, device),
              "torch": lambda: shard_loader(shards, shard_spec, "torch", args, device),
              "reference": lambda: reference_loader(rows, spec, args)}
    loaders, work = {}, {}
    for name in args.loaders.split(","):
        loaders[name], work[name] = makers[name]()
    results = loader_results(interleaved_passes(loaders, args.runs), work)
    print(json.dumps(summary_json(results, shards, args, device, len(rows))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
