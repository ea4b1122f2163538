"""The training transcode's trade-offs, measured: codec × GOP → storage, decode work, speed, quality.

    python launch/bench_transcode.py --out results/transcode

Builds a K400-like corpus (shard_tools/make_bench_corpus.py: 10 s, 25/30 fps, 340×256, a camera
moving over textured content; kept in OUT/corpus and reused), then for each row (a codec and a
key-frame interval) runs make_shards `--transcode CODEC --gop N` on it and measures:
  - bytes per video-second of the shards' videos, and make_shards' seconds per video (probe,
    transcode, pack; one worker);
  - PSNR of every `--psnr-every`-th decoded frame against the decoded source;
  - decoded frames per clip (8 frames at stride 16 unless changed) for a decoder that starts at
    the key frame before each wanted frame: the mean over every window start the train sampler
    can draw (`decoded_frames_for_clip`), from the shards' own key frames;
  - clips/s and clips per CPU-second of `build_loader(backend="dali"|"torch", device="cpu")`,
    one untimed warm-up pass then `--passes` timed passes (an epoch each, first batch excluded),
    and the loaders' own count of decoded frames per clip (`decoded_frames / clips`, all
    passes). H.264 rows say n/a for DALI: its CPU decoder cannot read H.264 (GPU only).
  - the same with key-frame windows (`data.keyframe_windows`, kiclip.data.sampling: each window
    start moved to the nearest key frame that fits), in a second table: decoded frames per clip
    over every start, distinct window starts per video, and the loaders run again with
    `keyframe_windows=True` (rows with a packet index and a GOP over 1; `--no-keyframe-windows`
    skips those loader runs).
Then VP9 at each GOP of `--rows` and several CRFs on the first `--rq-videos` videos: the bytes
each GOP needs for the PSNR long-GOP VP9 reaches at make_shards' settings.
Writes OUT/table.md (the tables docs/data_plane.md shows) and OUT/results.json, and prints the
tables and, last, one JSON line.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

log = logging.getLogger("bench_transcode")

DEFAULT_VP9_CRF = 32  # libavcodec's constant quality for VP9 when no bit rate is set
DEFAULT_ROWS = ("mjpeg,vp9:1,vp9:2,vp9:3,vp9:4,vp9:8,vp9:16,vp9:250,"
                "h264:1,h264:4,h264:16,h264:250")


@dataclass(frozen=True)
class Row:
    """One transcode to measure: `codec` (a video_io.CODECS name) with key frames every `gop`."""

    codec: str
    gop: int | None  # None: the codec's own (MJPEG: every frame is a key frame)

    @property
    def name(self) -> str:
        return self.codec if self.gop is None else f"{self.codec} gop {self.gop}"

    @property
    def folder(self) -> str:
        return self.codec if self.gop is None else f"{self.codec}_g{self.gop}"


def parse_rows(text: str) -> list[Row]:
    """`mjpeg,vp9:4,h264:250` → rows; raises ValueError naming a bad entry."""
    from shard_tools.video_io import CODECS

    rows = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        codec, _, gop = item.partition(":")
        if codec not in CODECS or (gop and not gop.isdigit()) or gop == "0":
            raise ValueError(f"--rows: {item!r} is not CODEC or CODEC:GOP (codecs "
                             f"{', '.join(sorted(CODECS))}; GOP a positive integer)")
        rows.append(Row(codec, int(gop) if gop else None))
    return rows


def decoded_frames_for_clip(key_frames: np.ndarray, wanted: np.ndarray) -> int:
    """Frames a decoder produces to get the frames `wanted` (display indices) when it starts
    at the key frame before each wanted frame, as both loaders do with the packet index: for
    every distinct GOP holding a wanted frame, its key frame up to the last wanted frame in it.
    `key_frames`: sorted display indices of the key frames, the first one 0. Assumes display
    order = decode order (true of VP8/VP9 and MJPEG; H.264 with B-frames decodes a reference
    ahead, so it needs a little more)."""
    from kiclip.packets import needed_packets

    wanted = np.asarray(wanted, np.int64)
    is_key = np.zeros(int(max(wanted.max(), key_frames[-1])) + 1, bool)
    is_key[np.asarray(key_frames, np.int64)] = True
    return len(needed_packets(is_key, wanted)[0])


def train_window_starts(key_frames: np.ndarray, total_frames: int, num_frames: int, stride: int,
                        aligned: bool = False) -> np.ndarray:
    """Every train window start the sampler can draw (uniformly, kiclip.data.sampling), each
    moved to its key frame when `aligned` (key-frame windows), in draw order."""
    from kiclip.data.sampling import align_to_key_frames

    last_start = max(total_frames - ((num_frames - 1) * stride + 1), 0)
    starts = np.arange(last_start + 1)
    return align_to_key_frames(starts, key_frames, last_start) if aligned else starts


def mean_decoded_frames_per_clip(key_frames: np.ndarray, total_frames: int,
                                 num_frames: int, stride: int, aligned: bool = False) -> float:
    """`decoded_frames_for_clip` averaged over every train window start of a video of
    `total_frames` frames (`train_window_starts`; `aligned`: with key-frame windows)."""
    offsets = stride * np.arange(num_frames)
    return float(np.mean([
        decoded_frames_for_clip(key_frames, np.minimum(s + offsets, total_frames - 1))
        for s in train_window_starts(key_frames, total_frames, num_frames, stride, aligned)]))


def key_frames(video: bytes) -> np.ndarray:
    """Display indices of the key frames of one encoded video."""
    with av.open(io.BytesIO(video)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(stream) if p.size]
    order = sorted(range(len(packets)), key=lambda i: packets[i][0])
    keys = np.array([rank for rank, i in enumerate(order) if packets[i][1]], np.int64)
    return keys


def decode_every(source, every: int) -> list[np.ndarray]:
    """Decoded frames 0, every, 2·every, ... (uint8 RGB) of a path or a bytes stream."""
    with av.open(source) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        return [f.to_ndarray(format="rgb24") for i, f in enumerate(container.decode(stream))
                if i % every == 0]


def psnr(decoded: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """PSNR (dB) of the frames of `decoded` against `reference`, pooled over the frames both
    lists hold (the mean squared error of all their pixels)."""
    n = min(len(decoded), len(reference))
    mse = np.mean([np.mean((decoded[i].astype(np.float32) - reference[i]) ** 2)
                   for i in range(n)])
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-10)))


def shard_videos(folder: Path):
    """(json dict, video bytes) of every sample in the shards of `folder`."""
    from kiclip.data import open_shards

    shards = open_shards(folder)
    for sample in shards.samples:
        with open(sample.tar, "rb") as f:
            f.seek(sample.meta[0])
            meta = json.loads(f.read(sample.meta[1]))
            f.seek(sample.video[0])
            yield meta, f.read(sample.video[1])


def loader_speed(folder: Path, backend: str, args, keyframe_windows: bool = False) -> dict:
    """clips/s and clips per CPU-second of one loader over the shards (medians of passes)."""
    from bench_data import timed_pass

    from kiclip.data import ClipSpec, LoaderSpec, build_loader, open_shards

    clip = ClipSpec(num_frames=args.frames, stride=args.stride, image_size=args.image_size,
                    keyframe_windows=keyframe_windows)
    spec = LoaderSpec(clip=clip, batch_size=args.batch_size, backend=backend,
                      num_workers=args.workers)
    loader = build_loader(open_shards(folder), spec, device="cpu")
    passes = []
    for epoch in range(args.passes + 1):  # pass 0 warms up: imports, page cache, codecs
        loader.set_epoch(epoch)

        def batches():
            for batch in loader:
                yield int(batch["valid"].sum())
        result = timed_pass(batches)
        if epoch:
            passes.append(result)
    out = {"clips_per_s": round(statistics.median(r for r, _ in passes), 2),
           "clips_per_cpu_s": round(statistics.median(c for _, c in passes), 2),
           "passes": [round(r, 2) for r, _ in passes]}
    if loader.clips:  # the loader's own count, over every pass (warm-up included)
        out["counted_decoded_frames_per_clip"] = round(loader.decoded_frames / loader.clips, 1)
    return out


def measure_row(row: Row, corpus: Path, sources: dict, args) -> dict:
    """Every figure of one table row (see the module doc)."""
    from shard_tools.make_shards import ShardConfig, build_shards
    from shard_tools.video_io import DALI_CPU_CODECS

    folder = args.out / "shards" / row.folder
    start = time.perf_counter()
    manifest = build_shards(ShardConfig(
        list_path=corpus / "list.csv", video_root=corpus, classes_path=corpus / "classes.json",
        out=folder, transcode=row.codec, gop=row.gop or 1, short_side=256, workers=1,
        overwrite=True, dataset="bench_corpus"))
    seconds_per_video = (time.perf_counter() - start) / max(manifest["total"], 1)
    total_bytes = total_seconds = 0.0
    frames_per_clip, qualities = [], []
    aligned_frames_per_clip, starts, aligned_starts, indexed = [], [], [], True
    for meta, video in shard_videos(folder):
        keys = key_frames(video)
        total_bytes += len(video)
        total_seconds += meta["frames"] / meta["fps"]
        frames_per_clip.append(mean_decoded_frames_per_clip(keys, meta["frames"], args.frames,
                                                            args.stride))
        aligned_frames_per_clip.append(mean_decoded_frames_per_clip(
            keys, meta["frames"], args.frames, args.stride, aligned=True))
        for aligned, counts in ((False, starts), (True, aligned_starts)):
            counts.append(len(set(train_window_starts(keys, meta["frames"], args.frames,
                                                      args.stride, aligned).tolist())))
        indexed = indexed and "packets" in meta
        qualities.append(psnr(decode_every(io.BytesIO(video), args.psnr_every),
                              sources[meta["video_id"]]))
    result = {"row": row.name, "codec": row.codec, "gop": row.gop, "videos": manifest["total"],
              "bytes_per_video_s": round(total_bytes / total_seconds),
              "make_shards_s_per_video": round(seconds_per_video, 2),
              "decoded_frames_per_clip": round(float(np.mean(frames_per_clip)), 1),
              "psnr_db": round(float(np.mean(qualities)), 2),
              "window_starts_per_video": round(float(np.mean(starts)), 1),
              "keyframe_windows": {
                  "decoded_frames_per_clip": round(float(np.mean(aligned_frames_per_clip)), 1),
                  "window_starts_per_video": round(float(np.mean(aligned_starts)), 1),
                  "loaders_run": False}}
    # Only samples with a packet index get aligned windows; at GOP 1 nothing moves.
    aligned_loaders = args.keyframe_windows and indexed and (row.gop or 1) > 1
    for backend in args.loaders:
        if backend == "dali" and row.codec not in DALI_CPU_CODECS:
            result[backend] = None  # DALI's CPU decoder cannot read it: GPU only
            continue
        result[backend] = loader_speed(folder, backend, args)
        if aligned_loaders:
            result["keyframe_windows"][backend] = loader_speed(folder, backend, args,
                                                               keyframe_windows=True)
            result["keyframe_windows"]["loaders_run"] = True
    log.info("%s", json.dumps(result))
    return result


def source_frames(corpus: Path, paths: list[str], every: int) -> dict[str, list[np.ndarray]]:
    """Every `every`-th decoded source frame per video id (the list path without extension)."""
    return {os.path.splitext(p)[0]: decode_every(str(corpus / p), every) for p in paths}


def rate_quality_point(videos: list[tuple[np.ndarray, float]], codec: str, gop: int,
                       crf: int, work: Path, every: int) -> tuple[float, float]:
    """(bytes per video-second, PSNR dB) of `videos` (decoded source frames, fps) encoded with
    `codec` at key-frame interval `gop` and constant quality `crf`."""
    from shard_tools.video_io import CODECS, encode_frames

    path = work / f"rq.{CODECS[codec].ext}"
    size = seconds = 0.0
    errors = []
    for frames, fps in videos:
        encode_frames(frames, path, codec, fps, gop, {"crf": str(crf)})
        size += path.stat().st_size
        seconds += len(frames) / fps
        decoded = decode_every(str(path), every)
        errors.append(np.mean([np.mean((d.astype(np.float32) - f) ** 2)
                               for d, f in zip(decoded, frames[::every])]))
    return size / seconds, float(10 * np.log10(255.0 ** 2 / max(np.mean(errors), 1e-10)))


def bytes_at_quality(curve: list[tuple[float, float]], target_db: float) -> float | None:
    """Bytes per second at PSNR `target_db` on a rate-quality curve of (bytes/s, PSNR) points,
    interpolating log(bytes) linearly in PSNR; None when `target_db` is outside the curve."""
    points = sorted(curve, key=lambda p: p[1])
    for (b0, q0), (b1, q1) in zip(points, points[1:]):
        if q0 <= target_db <= q1:
            w = (target_db - q0) / (q1 - q0) if q1 > q0 else 0.0
            return float(np.exp((1 - w) * np.log(b0) + w * np.log(b1)))
    return None


def rate_quality_table(corpus: Path, paths: list[str], args) -> tuple[str, list[dict]]:
    """VP9 at every GOP of the main table, each at several CRFs on the first `--rq-videos`
    videos: the bytes each GOP needs for the quality long-GOP VP9 reaches at make_shards'
    settings (the target's "storage at the same quality")."""
    import tempfile

    gops = sorted({row.gop for row in parse_rows(args.rows) if row.codec == "vp9" and row.gop})
    if not gops:
        return "", []
    crfs = [int(c) for c in args.rq_crfs.split(",")]
    videos = []
    for rel in paths[:args.rq_videos]:
        with av.open(str(corpus / rel)) as container:
            fps = float(container.streams.video[0].average_rate)
        videos.append((np.stack(decode_every(str(corpus / rel), 1)), fps))
    curves: dict[int, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as work:
        for gop in gops:
            curves[gop] = [rate_quality_point(videos, "vp9", gop, crf, Path(work), args.psnr_every)
                           for crf in crfs]
            log.info("vp9 gop %d: %s", gop, [(round(b), round(q, 2)) for b, q in curves[gop]])
    longest = max(gops)
    target = curves[longest][crfs.index(DEFAULT_VP9_CRF)][1] if DEFAULT_VP9_CRF in crfs else \
        curves[longest][0][1]
    reference = bytes_at_quality(curves[longest], target)
    rows, lines = [], [
        f"| VP9 GOP | KB/s at {target:.1f} dB | × long GOP | (KB/s, dB) at CRF "
        f"{', '.join(map(str, crfs))} |", "|---|---|---|---|"]
    for gop in gops:
        need = bytes_at_quality(curves[gop], target)
        rows.append({"gop": gop, "bytes_per_video_s_at_target": need and round(need),
                     "target_psnr_db": round(target, 2),
                     "curve": [(round(b), round(q, 2)) for b, q in curves[gop]]})
        ratio = f"{need / reference:.1f}" if need and reference else "–"
        points = "; ".join(f"{b / 1000:.0f}, {q:.1f}" for b, q in curves[gop])
        lines.append(f"| {gop} | {need / 1000:.0f} | {ratio} | {points} |" if need else
                     f"| {gop} | outside the CRF range | – | {points} |")
    return "\n".join(lines), rows


def markdown_table(results: list[dict], loaders: list[str]) -> str:
    """The main table: one line per row of `results` (see `measure_row`)."""
    long_vp9 = max((r for r in results if r["codec"] == "vp9"), default=None,
                   key=lambda r: r["gop"] or 0)
    names = {"dali": "DALI CPU", "torch": "fallback"}
    head = ["transcode", "KB per video-s", "× long-GOP VP9", "make_shards s/video", "PSNR dB",
            "decoded frames/clip (key-frame seek)"]
    head += [f"{names.get(n, n)} counted frames/clip" for n in loaders]
    for name in loaders:
        head += [f"{names.get(name, name)} clips/s", f"{names.get(name, name)} clips/CPU-s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ratio = r["bytes_per_video_s"] / long_vp9["bytes_per_video_s"] if long_vp9 else None
        cells = [r["row"], f"{r['bytes_per_video_s'] / 1000:.0f}",
                 f"{ratio:.1f}" if ratio else "–", f"{r['make_shards_s_per_video']:.2f}",
                 f"{r['psnr_db']:.1f}", f"{r['decoded_frames_per_clip']:.1f}"]
        for name in loaders:
            counted = (r.get(name) or {}).get("counted_decoded_frames_per_clip")
            cells.append("n/a" if r.get(name) is None else
                         "–" if counted is None else f"{counted:.1f}")
        for name in loaders:
            speed = r.get(name)
            cells += (["n/a (GPU only)", "n/a"] if speed is None else
                      [f"{speed['clips_per_s']:.1f}", f"{speed['clips_per_cpu_s']:.1f}"])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_keyframe_windows_table(results: list[dict], loaders: list[str]) -> str:
    """The key-frame windows table: the rows of `results` that have a GOP over 1, unaligned
    against aligned decode work, window starts per video, and the aligned loader runs."""
    long_vp9 = max((r for r in results if r["codec"] == "vp9"), default=None,
                   key=lambda r: r["gop"] or 0)
    names = {"dali": "DALI CPU", "torch": "fallback"}
    head = ["transcode", "× long-GOP VP9", "decoded frames/clip", "… key-frame windows",
            "window starts/video", "… key-frame windows"]
    for name in loaders:
        label = names.get(name, name)
        head += [f"{label} counted frames/clip", f"{label} clips/s", f"{label} clips/CPU-s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if (r["gop"] or 1) <= 1:
            continue
        aligned = r["keyframe_windows"]
        ratio = r["bytes_per_video_s"] / long_vp9["bytes_per_video_s"] if long_vp9 else None
        cells = [r["row"], f"{ratio:.1f}" if ratio else "–",
                 f"{r['decoded_frames_per_clip']:.1f}", f"{aligned['decoded_frames_per_clip']:.1f}",
                 f"{r['window_starts_per_video']:.0f}", f"{aligned['window_starts_per_video']:.0f}"]
        for name in loaders:
            run = aligned.get(name)
            if run is None:
                reason = "n/a" if r.get(name) is None else "not run"
                cells += [reason, reason, reason]
                continue
            counted = run.get("counted_decoded_frames_per_clip")
            cells += ["–" if counted is None else f"{counted:.1f}", f"{run['clips_per_s']:.1f}",
                      f"{run['clips_per_cpu_s']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from shard_tools.cli_common import non_negative_int, positive_float, positive_int

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, required=True,
                   help="results folder: corpus/, shards/, table.md, results.json")
    p.add_argument("--corpus", type=Path, default=None,
                   help="corpus folder (default OUT/corpus; made when missing)")
    p.add_argument("--videos", type=positive_int, default=10, help="corpus videos (every row uses all)")
    p.add_argument("--seconds", type=positive_float, default=10.0,
                   help="corpus video length (a corpus already in --corpus is kept)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument("--rows", default=DEFAULT_ROWS, help="comma list of CODEC or CODEC:GOP")
    p.add_argument("--frames", type=positive_int, default=8, help="frames per clip T")
    p.add_argument("--stride", type=positive_int, default=16, help="frame stride s")
    p.add_argument("--image-size", type=positive_int, default=224, help="crop size S")
    p.add_argument("--batch-size", type=positive_int, default=2)
    p.add_argument("--workers", type=positive_int, default=2, help="DALI threads = DataLoader workers")
    p.add_argument("--passes", type=positive_int, default=2, help="timed epochs per loader (median)")
    p.add_argument("--loaders", default="dali,torch", help="comma list: dali, torch")
    p.add_argument("--psnr-every", type=positive_int, default=5, help="PSNR on every N-th frame")
    p.add_argument("--rq-videos", type=non_negative_int, default=2,
                   help="videos of the VP9 rate-quality sweep (0: no sweep)")
    p.add_argument("--rq-crfs", default="32,40,48", help="CRFs of the VP9 rate-quality sweep")
    p.add_argument("--keyframe-windows", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the loaders with key-frame windows (rows with a packet index "
                        "and a GOP over 1); the computed columns are always filled")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[bench_transcode] %(message)s")
    logging.getLogger("make_shards").setLevel(logging.WARNING)
    try:
        rows = parse_rows(args.rows)
    except ValueError as err:
        p.error(str(err))
    args.loaders = [name for name in args.loaders.split(",") if name]
    if set(args.loaders) - {"dali", "torch"}:
        p.error(f"--loaders: {args.loaders} holds something other than dali, torch")

    from shard_tools.make_bench_corpus import CorpusSettings, make_corpus

    corpus = args.corpus or args.out / "corpus"
    started = time.perf_counter()
    paths = make_corpus(corpus, CorpusSettings(seed=args.seed, videos=args.videos,
                                                seconds=args.seconds))
    sources = source_frames(corpus, paths, args.psnr_every)
    load_before = os.getloadavg()[0]
    results = [measure_row(row, corpus, sources, args) for row in rows]
    table = (markdown_table(results, args.loaders) + "\n\nKey-frame windows "
             "(data.keyframe_windows=true):\n\n" + markdown_keyframe_windows_table(results,
                                                                                   args.loaders))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")  # kept should the sweep fail
    rq_table, rq_rows = rate_quality_table(corpus, paths, args) if args.rq_videos else ("", [])
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
               f"load average {load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the "
               f"end; {time.perf_counter() - started:.0f} s in all")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n\n" + rq_table + "\n\n" + machine + "\n")
    summary = {"rows": results, "rate_quality": rq_rows, "machine": machine,
               "spec": {"frames": args.frames, "stride": args.stride, "videos": len(paths),
                        "batch_size": args.batch_size, "workers": args.workers,
                        "passes": args.passes, "keyframe_windows": args.keyframe_windows}}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    print(table)
    print()
    print(rq_table)
    print(machine)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
