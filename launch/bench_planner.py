"""Per-clip time of DALI's planner stage with the json's packet index vs demuxing each video.

    python launch/bench_planner.py --shards shards/syn/train --samples 200

The planner (``kiclip.data.dali_loader._Planner``) runs in a DALI ``python_function`` and holds
the GIL: per clip it plans the clip and re-packs the packets the clip needs. With the packet
index that is a slice-and-concatenate; without it (shards made before the index, or the index
dropped here from each json) the video is demuxed with PyAV first. Both run in this one process
on the same samples, in alternating rounds (a load change on a shared machine hits both), one
thread, no decoding. Reports CPU time per clip (steady on a shared machine, where wall time
includes waiting for a core) and wall time. The last line is JSON: median ms per clip for each
and their ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from kiclip.data import open_shards
from kiclip.data.dali_loader import _Planner
from kiclip.data.sampling import ClipSpec


def read_samples(shards, count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(json, key, video) uint8 arrays of the first ``count`` samples, as DALI hands them over."""
    out = []
    for ref in shards.samples[:count]:
        with open(ref.tar, "rb") as f:
            f.seek(ref.meta[0])
            meta = f.read(ref.meta[1])
            f.seek(ref.video[0])
            video = f.read(ref.video[1])
        out.append((np.frombuffer(meta, np.uint8), np.frombuffer(ref.key.encode(), np.uint8),
                    np.frombuffer(video, np.uint8)))
    return out


def without_index(samples):
    """The same samples with ``packets`` removed from each json (as in shards made before it)."""
    stripped = []
    for meta, key, video in samples:
        fields = json.loads(meta.tobytes())
        fields.pop("packets", None)
        stripped.append((np.frombuffer(json.dumps(fields).encode(), np.uint8), key, video))
    return stripped


def ms_per_clip(planner: _Planner, samples) -> tuple[float, float]:
    """(CPU ms, wall ms) per sample of running ``planner`` over ``samples``."""
    cpu, wall = time.process_time(), time.perf_counter()
    for sample in samples:
        planner(*sample)
    n = len(samples)
    return (time.process_time() - cpu) * 1000 / n, (time.perf_counter() - wall) * 1000 / n


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--shards", type=Path, required=True, help="make_shards.py output directory")
    p.add_argument("--samples", type=int, default=200, help="samples timed (the first N)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (median)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip T")
    p.add_argument("--stride", type=int, default=16, help="frame stride s")
    p.add_argument("--image-size", type=int, default=224, help="crop size S")
    args = p.parse_args(argv)

    shards = open_shards(args.shards)
    indexed = read_samples(shards, args.samples)
    variants = {"index": indexed, "demux": without_index(indexed)}
    has_index = sum("packets" in json.loads(m.tobytes()) for m, _, _ in indexed)
    planner = _Planner(ClipSpec(num_frames=args.frames, stride=args.stride,
                                image_size=args.image_size), "train", seed=0, epoch=0)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for name in variants:  # warm-up: imports, codec init, page cache
        ms_per_clip(planner, variants[name][:8])
    for round_ in range(args.rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            times[name].append(ms_per_clip(planner, variants[name]))
    cpu = {name: round(statistics.median(c for c, _ in t), 3) for name, t in times.items()}
    wall = {name: round(statistics.median(w for _, w in t), 3) for name, t in times.items()}
    print(f"{len(indexed)} samples ({has_index} with a packet index): planner CPU "
          f"{cpu['demux']:.2f} ms/clip demuxing, {cpu['index']:.2f} ms/clip from the index "
          f"(wall {wall['demux']:.2f} / {wall['index']:.2f})")
    print(json.dumps({"cpu_ms_per_clip": cpu, "wall_ms_per_clip": wall,
                      "demux_over_index": round(cpu["demux"] / max(cpu["index"], 1e-9), 2),
                      "samples": len(indexed), "with_index": has_index,
                      "rounds_cpu_ms": {k: [round(c, 3) for c, _ in v] for k, v in times.items()},
                      "load_average": round(os.getloadavg()[0], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
