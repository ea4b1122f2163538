"""Videos + a list file -> WebDataset tar shards, a DALI index beside each, and manifest.json.

    python shard_tools/make_shards.py --list train.csv --video-root videos/k400 \
        --classes classes.json --out shards/k400/train [--transcode vp9 --short-side 256]

Every video is probed first (PyAV decodes all its frames, in parallel): missing, empty,
not-a-video, undecodable and truncated files are left out and listed in the manifest's
`skipped` with their reason and the run goes on; if every row is skipped (e.g. a wrong
--video-root) it fails with exit 1 and writes no manifest. Rows are written in a seeded shuffled
order (`--seed`, recorded as the manifest's `shuffle_seed`; `--no-shuffle` keeps list order), so
a class-sorted list still gives shards that mix classes. Shards are written under a temporary
name and renamed when complete. Rerunning with the same inputs and options keeps the shards
already complete and continues after them (also after Ctrl-C, which exits 130);
`--overwrite` rebuilds from scratch. Layout and fields: docs/CONTRACTS.md and docs/data.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import random
import re
import shlex
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kiclip.packets import build_packet_index, encode_packet_index
from shard_tools.cli_common import (
    add_run_options,
    number_type,
    parallel_map,
    positive_int,
    report_work,
    setup_logging,
)
from shard_tools.lists import (
    ClassName,
    ListFileError,
    ListRow,
    read_classes,
    read_video_list,
)
from shard_tools.shard_writer import (
    PARTIAL_SUFFIX,
    ShardWriter,
    index_path_for,
    sample_tar_bytes,
)
from shard_tools.video_io import (
    CODECS,
    DALI_CPU_CODECS,
    DEFAULT_GOP,
    SHARD_VIDEO_EXTS,
    VideoInfo,
    VideoProbeError,
    probe_video,
    transcode_video,
)

log = logging.getLogger("make_shards")

MANIFEST = "manifest.json"
STATE = ".make_shards-state.json"  # progress of an unfinished run, for resuming
WORK_DIR = ".transcode-work"
MANIFEST_VERSION = 1
MIN_SHORT_SIDE = 16  # smaller frames hold nothing a model can use; likely a typo
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


class LabelError(ValueError):
    """A list row whose label the class file does not have; names the list file and line."""


class NothingPackedError(RuntimeError):
    """Every row of the list was skipped; the message counts why and shows the first missing
    path as resolved against --video-root, with a likelier root when one is found."""


@dataclass(frozen=True)
class ShardConfig:
    """Inputs and options of one make_shards run; all of it (but `workers`) decides the bytes."""

    list_path: Path
    video_root: Path
    classes_path: Path
    out: Path
    samples_per_shard: int = 500
    max_shard_bytes: int = 1 << 30
    transcode: str = "copy"
    short_side: int | None = 256
    gop: int = DEFAULT_GOP
    shuffle: bool = True
    seed: int = 0
    workers: int = 1
    overwrite: bool = False
    command: str = ""
    dataset: str | None = None  # recorded, not in the bytes; None: make_splits' splits.json says


@dataclass(frozen=True)
class _Job:
    row: int
    source: str
    key: str
    work_path: str | None  # where a transcoded copy goes; None for --transcode copy
    codec: str
    short_side: int | None
    gop: int


@dataclass
class _Prepared:
    row: int
    data_path: str | None = None
    ext: str = ""
    info: VideoInfo | None = None
    reason: str = ""
    packets: str | None = None  # the json's packet index (kiclip.packets), if it has one


@dataclass
class _State:
    """What is done so far: shards complete, rows handled (`next_row`), rows skipped."""

    fingerprint: str
    next_row: int = 0
    shards: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def build_shards(config: ShardConfig, progress: bool = False) -> dict:
    """Run make_shards with `config`; return the manifest written to `OUT/manifest.json`.

    Raises ListFileError (naming file and line) for bad list/class files and LabelError for a
    label outside the class file, before any video is touched; FileExistsError when OUT holds
    shards of different inputs and `overwrite` is off; NothingPackedError (no manifest
    written) when every row was skipped, e.g. under a wrong --video-root.
    """
    classes = read_classes(config.classes_path)
    rows = read_video_list(config.list_path)
    _check_labels(rows, classes, config)
    rows = _write_order(rows, config)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(config)
    if config.overwrite:
        _remove_outputs(out)

    existing = _load_json(out / MANIFEST)
    if existing and existing.get("fingerprint") == fingerprint and _shards_present(out, existing):
        log.info("%s is up to date (%d shards); --overwrite rebuilds", out, len(existing["shards"]))
        return _with_dataset(existing, config, out)
    state = _resume_state(out, fingerprint, existing)

    todo = [_job(i, row, config, out) for i, row in enumerate(rows) if i >= state.next_row]
    if todo:
        (out / WORK_DIR).mkdir(exist_ok=True)
    # closing(): on Ctrl-C or an error in _pack the worker pool is stopped at once, not at GC.
    with closing(parallel_map(_prepare, todo, config.workers, progress, "probe+pack",
                              work_unit="frames")) as prepared:
        _pack(prepared, rows, classes, config, out, state)
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)

    if rows and not state.shards:
        (out / STATE).unlink(missing_ok=True)
        raise NothingPackedError(_nothing_packed_message(rows, config, state.skipped))
    manifest = _manifest(rows, classes, config, fingerprint, state)
    manifest.update(_dataset_fields(config))
    _write_json_atomic(out / MANIFEST, manifest)
    (out / STATE).unlink(missing_ok=True)
    _remove_stale_shards(out, len(state.shards))
    return manifest


def _pack(prepared, rows: list[ListRow], classes: list[ClassName], config: ShardConfig,
          out: Path, state: _State) -> None:
    """Append prepared videos to shards in write order, closing a shard when it is full."""
    writer: ShardWriter | None = None
    pending_skips: list[dict] = []
    gpu_only = 0
    try:
        for item in prepared:
            row = rows[item.row]
            if item.reason:
                log.debug("skip %s: %s", row.path, item.reason)
                pending_skips.append({"path": row.path, "line": row.line, "reason": item.reason})
                continue
            video = Path(item.data_path).read_bytes()
            meta = _sample_meta(row, classes, item.info)
            if item.packets is not None:
                meta["packets"] = item.packets
            cost = sample_tar_bytes(len(video), len(json.dumps(meta)) + 64)
            if writer and (writer.samples >= config.samples_per_shard
                           or writer.bytes_written + cost > config.max_shard_bytes):
                _finish_shard(writer, item.row, state, pending_skips, out)
                pending_skips, writer = [], None
            if writer is None:
                writer = ShardWriter(out, len(state.shards))
            writer.add(_key(item.row, row.path), item.ext, video, meta)
            gpu_only += item.info.codec not in DALI_CPU_CODECS
            if config.transcode != "copy":
                Path(item.data_path).unlink(missing_ok=True)
        if gpu_only:
            log.warning("%d videos use codecs DALI's CPU decoder cannot read (only %s); they "
                        "need a GPU, or rerun with --transcode vp9|mjpeg", gpu_only,
                        "/".join(sorted(DALI_CPU_CODECS)))
        if writer:
            _finish_shard(writer, len(rows), state, pending_skips, out)
        elif pending_skips:
            state.skipped.extend(pending_skips)
            state.next_row = len(rows)
    except BaseException:
        if writer:
            writer.abort()
        raise


def _write_order(rows: list[ListRow], config: ShardConfig) -> list[ListRow]:
    """The rows in the order they are written: a permutation seeded by `config.seed`, or list
    order with `shuffle` off.

    Published lists are sorted by class, so written in list order each shard holds one or two
    classes, which no reader's shuffle buffer can mix. The permutation depends only on the seed
    and the row count, so a rerun resumes in the same order.
    """
    if not config.shuffle:
        return list(rows)
    order = list(range(len(rows)))
    random.Random(config.seed).shuffle(order)
    return [rows[i] for i in order]


def _finish_shard(writer: ShardWriter, next_row: int, state: _State, skips: list[dict],
                  out: Path) -> None:
    # Closing renames the tar into place; a Ctrl-C before the state records it would leave a
    # shard no state knows of, and the rerun would refuse the folder as someone else's.
    with _interrupt_deferred():
        record = writer.close()
        log.debug("wrote %s (%d samples)", record.name, record.samples)
        state.shards.append(asdict(record))
        state.skipped.extend(skips)
        state.next_row = next_row
        _write_json_atomic(out / STATE, asdict(state))


@contextmanager
def _interrupt_deferred():
    """Run the block whole: a Ctrl-C during it raises KeyboardInterrupt only at its end."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives SIGINT (and may set its handler)
        return
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield  # started with SIGINT ignored (nohup, a background job): nothing to defer
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _prepare(job: _Job) -> _Prepared:
    """Probe (and transcode) one video in a worker; never raises for a bad video."""
    result = _Prepared(job.row)
    try:
        if job.work_path is None:
            ext = Path(job.source).suffix.lower().lstrip(".")
            if ext not in SHARD_VIDEO_EXTS:
                raise VideoProbeError(
                    f"container .{ext} cannot go into a shard as is (allowed: "
                    f"{', '.join(SHARD_VIDEO_EXTS)}); use --transcode vp9|mjpeg|h264")
            result.info = probe_video(Path(job.source), on_frames=report_work)
            result.data_path, result.ext = job.source, ext
        else:
            try:  # transcode_video probes the source first: a bad one keeps its own reason
                result.info = transcode_video(Path(job.source), Path(job.work_path), job.codec,
                                              job.short_side, job.gop, on_frames=report_work)
            except VideoProbeError:
                raise
            except Exception as err:  # any encoder failure leaves this one video out
                raise VideoProbeError(f"transcode to {job.codec} failed: {err}") from err
            result.data_path, result.ext = job.work_path, CODECS[job.codec].ext
        result.packets = _packet_index(Path(result.data_path), result.info)
    except VideoProbeError as err:
        result.reason = str(err)
    except OSError as err:
        result.reason = f"unreadable: {err}"
    return result


def _packet_index(path: Path, info: VideoInfo) -> str | None:
    """The sample json's `packets` (where each frame's bytes are, so loaders slice clips out of
    the video without demuxing it), or None for codecs it does not serve or a packet count that
    differs from the probed frame count."""
    index = build_packet_index(path.read_bytes())
    if index is None or len(index) != info.frames:
        return None
    return encode_packet_index(index)


def _job(index: int, row: ListRow, config: ShardConfig, out: Path) -> _Job:
    key = _key(index, row.path)
    work = None
    if config.transcode != "copy":
        work = str(out / WORK_DIR / f"{key}.{CODECS[config.transcode].ext}")
    return _Job(index, str(Path(config.video_root) / row.path), key, work, config.transcode,
                config.short_side, config.gop)


def _nothing_packed_message(rows: list[ListRow], config: ShardConfig,
                            skipped: list[dict]) -> str:
    reasons = Counter(s["reason"].split(":")[0] for s in skipped)
    counts = ", ".join(f"{n} {reason}" for reason, n in reasons.most_common())
    lines = [f"every row of {config.list_path} was skipped ({len(rows)} rows: {counts}); "
             f"no shards written"]
    missing = next((s for s in skipped if s["reason"].startswith("missing")), None)
    if missing:
        root = Path(config.video_root)
        lines.append(f"first missing: {config.list_path}:{missing['line']} {missing['path']} -> "
                     f"{(root / missing['path']).resolve()}")
        lines.append(_root_hint(root, missing["path"]))
    elif skipped:
        first = skipped[0]
        lines.append(f"first: {first['path']} (line {first['line']}): {first['reason']}")
    return "\n".join(lines)


def _root_hint(root: Path, relpath: str, max_children: int = 200) -> str:
    """Where `relpath` does exist, one level above or below `root` (the usual mistake)."""
    if not root.is_dir():
        return f"--video-root {root} is not a directory"
    if (root.parent / relpath).is_file():
        return f"it exists under the parent folder: try --video-root {root.parent}"
    children = sorted(c for c in root.iterdir() if c.is_dir())[:max_children]
    for child in children:
        if (child / relpath).is_file():
            return f"it exists one level down: try --video-root {child}"
    return (f"check --video-root {root}: the list's paths are joined to it "
            f"(e.g. {relpath.split('/')[0]}/ should be a folder in it)")


def _key(index: int, path: str) -> str:
    """Unique, dot-free, readable sample key: write position + the video id made tar-safe."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", _video_id(path)).strip("_")[-60:]
    return f"{index:07d}_{slug}"


def _video_id(path: str) -> str:
    """The list's relative path without its extension, e.g. `abseiling/abc_000010_000020`."""
    return str(Path(path).with_suffix("")).replace(os.sep, "/")


def _sample_meta(row: ListRow, classes: list[ClassName], info: VideoInfo) -> dict:
    return {
        "label": row.label,
        "name": classes[row.label].name,
        "video_id": _video_id(row.path),
        "frames": info.frames,
        "fps": info.fps,
        "width": info.width,
        "height": info.height,
        "codec": info.codec,
        "rotation": info.rotation,
    }


def _check_labels(rows: list[ListRow], classes: list[ClassName], config: ShardConfig) -> None:
    for row in rows:
        if row.label >= len(classes):
            raise LabelError(
                f"{config.list_path}:{row.line}: label {row.label} is outside the "
                f"{len(classes)} classes of {config.classes_path}; pass the class file that "
                f"belongs to this list")


def _manifest(rows, classes, config: ShardConfig, fingerprint: str, state: _State) -> dict:
    counts = Counter()
    written = len(rows) - len(state.skipped)
    skipped_rows = {(s["path"], s["line"]) for s in state.skipped}
    for row in rows:
        if (row.path, row.line) not in skipped_rows:
            counts[row.label] += 1
    total = sum(s["samples"] for s in state.shards)
    assert total == written, (total, written)
    manifest = {
        "version": MANIFEST_VERSION,
        "total": total,
        "classes": {str(i): c.name for i, c in enumerate(classes)},
        "class_counts": {str(i): counts[i] for i in range(len(classes))},
        "shards": state.shards,
        "skipped": state.skipped,
        "command": config.command,
        "list": str(config.list_path),
        "list_rows": len(rows),
        "video_root": str(config.video_root),
        "classes_file": str(config.classes_path),
        "transcode": config.transcode,
        "short_side": config.short_side if config.transcode != "copy" else None,
        "gop": config.gop if config.transcode != "copy" else None,
        "shuffle_seed": config.seed if config.shuffle else None,
        "samples_per_shard": config.samples_per_shard,
        "max_shard_bytes": config.max_shard_bytes,
        "fingerprint": fingerprint,
    }
    if any(c.rephrased for c in classes):
        manifest["class_texts"] = {str(i): c.text for i, c in enumerate(classes)}
    return manifest


def _dataset_fields(config: ShardConfig) -> dict:
    """``dataset`` (train.py/evaluate.py check it against --b2n) and ``splits_file``: --dataset,
    else what make_splits recorded in a splits.json beside the class file or the list (or one
    folder above the list, as for splitK/train.csv); null when neither says."""
    if config.dataset:
        return {"dataset": config.dataset, "splits_file": None}
    list_dir = Path(config.list_path).parent
    for folder in dict.fromkeys((Path(config.classes_path).parent, list_dir, list_dir.parent)):
        record = _load_json(folder / "splits.json")
        if isinstance(record, dict) and record.get("dataset"):
            return {"dataset": str(record["dataset"]), "splits_file": str(folder / "splits.json")}
    log.warning("no --dataset given and no splits.json beside %s or %s: the manifest records no "
                "dataset, so train.py cannot check it against --b2n", config.classes_path,
                config.list_path)
    return {"dataset": None, "splits_file": None}


def _with_dataset(manifest: dict, config: ShardConfig, out: Path) -> dict:
    """A finished output keeps its shards; only a changed dataset name is rewritten."""
    fields = _dataset_fields(config)
    if any(manifest.get(k) != v for k, v in fields.items()):
        manifest.update(fields)
        _write_json_atomic(out / MANIFEST, manifest)
    return manifest


def _fingerprint(config: ShardConfig) -> str:
    """Hash of everything that decides the shard bytes: a rerun resumes only if it matches."""
    digest = hashlib.sha256()
    for path in (config.list_path, config.classes_path):
        digest.update(Path(path).read_bytes())
    options = [str(Path(config.video_root).resolve()), config.samples_per_shard,
               config.max_shard_bytes, config.transcode,
               config.seed if config.shuffle else None]
    if config.transcode != "copy":
        options += [config.short_side, config.gop]
    digest.update(json.dumps(options).encode())
    return digest.hexdigest()[:16]


def _resume_state(out: Path, fingerprint: str, existing: dict | None) -> _State:
    """The state to continue from: complete shards of an interrupted identical run, or fresh."""
    saved = _load_json(out / STATE)
    if saved and saved.get("fingerprint") == fingerprint:
        state = _State(**saved)
        kept = _present_prefix(out, state.shards)
        if kept == len(state.shards):
            log.info("resuming: keeping %d complete shards, continuing at row %d",
                     kept, state.next_row)
            return state
        log.warning("%d of %d recorded shards are missing or changed; rebuilding",
                    len(state.shards) - kept, len(state.shards))
    elif list(out.glob("shard-*.tar")) and not (existing and existing.get("fingerprint")
                                                 == fingerprint):
        raise FileExistsError(
            f"{out} holds shards built from other inputs or options; pass --overwrite to "
            f"rebuild them, or choose another --out")
    _remove_outputs(out)
    return _State(fingerprint)


def _shards_present(out: Path, manifest: dict) -> bool:
    return _present_prefix(out, manifest.get("shards", [])) == len(manifest.get("shards", []))


def _present_prefix(out: Path, shards: list[dict]) -> int:
    """How many leading shards exist with their recorded size and index (cheap check)."""
    for i, shard in enumerate(shards):
        tar = out / shard["name"]
        if not (tar.is_file() and tar.stat().st_size == shard["bytes"]
                and index_path_for(tar).is_file()):
            return i
    return len(shards)


def _remove_outputs(out: Path) -> None:
    for pattern in ("shard-*.tar", "shard-*.idx", f"shard-*{PARTIAL_SUFFIX}", MANIFEST, STATE):
        for path in out.glob(pattern):
            path.unlink()
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)


def _remove_stale_shards(out: Path, count: int) -> None:
    """Shards numbered past this run's last (left by an older, longer run) are deleted."""
    for path in list(out.glob("shard-*.tar")) + list(out.glob("shard-*.idx")):
        number = path.stem.split("-", 1)[1]
        if number.isdigit() and int(number) >= count:
            log.info("removing stale %s", path.name)
            path.unlink()
    for path in out.glob(f"shard-*{PARTIAL_SUFFIX}"):
        path.unlink()


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + PARTIAL_SUFFIX)
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def short_side(text: str) -> int:
    """argparse type of --short-side: 0 (keep the size) or at least MIN_SHORT_SIDE pixels."""
    value = number_type(int)(text)
    if value != 0 and value < MIN_SHORT_SIDE:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range: 0 keeps the size, else at least {MIN_SHORT_SIDE} pixels")
    return value


def build_parser() -> argparse.ArgumentParser:
    d = ShardConfig(Path(), Path(), Path(), Path())
    p = argparse.ArgumentParser(
        description=(
            "Pack the videos of a list file into WebDataset tar shards (video bytes + a json "
            "with label, class name, video id, frames, fps, upright size, codec, display rotation), write a DALI index "
            "(.idx) beside each tar and OUT/manifest.json. Unreadable videos are skipped and "
            "listed with their reason in the manifest."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--list", dest="list_path", type=Path, required=True,
                   help="list file: CSV `relative/path,label` or space-separated "
                        "`relative/path label` (published B2N lists), optional header")
    p.add_argument("--video-root", type=Path, required=True,
                   help="directory the list's paths are relative to")
    p.add_argument("--classes", dest="classes_path", type=Path, required=True,
                   help='class names: {"0": "name"} JSON, rephrased {"0": "Name: description"}, '
                        "a JSON list, or `index,name` CSV")
    p.add_argument("--out", type=Path, required=True, help="output directory for the shards")
    p.add_argument("--dataset",
                   help="dataset name recorded in manifest.json, which train.py/evaluate.py "
                        "check against --b2n (default: what make_splits wrote in splits.json "
                        "beside --classes or --list; else none)")
    p.add_argument("--samples-per-shard", type=positive_int, default=d.samples_per_shard,
                   help="most samples in one shard")
    p.add_argument("--max-shard-bytes", type=positive_int, default=d.max_shard_bytes,
                   help="a shard is closed before it would grow past this many bytes")
    p.add_argument("--transcode", choices=["copy", *sorted(CODECS)], default=d.transcode,
                   help="copy: store the files as they are; vp9: re-encode for training, read "
                        "by DALI on CPU and (NVDEC permitting) on GPU and by the fallback "
                        "(recommended: `--transcode vp9`, at the default --gop, for CPU and GPU "
                        "decoding); mjpeg: all key frames, ~7x the bytes of vp9 at GOP 8; "
                        "h264: for GPU-only runs (DALI's CPU decoder cannot read it, and the "
                        "fallback decodes it from the first frame). Measured trade-offs: "
                        "docs/data_plane.md")
    p.add_argument("--short-side", type=short_side, default=d.short_side,
                   help="when transcoding, downscale so the shorter edge is at most this "
                        f"(0 keeps the size; else at least {MIN_SHORT_SIDE})")
    p.add_argument("--gop", type=positive_int, default=d.gop,
                   help="when transcoding, a key frame every N frames. Choose 8 (the default) "
                        "to train with key-frame windows (data.keyframe_windows, on by "
                        "default), on GPU and CPU: every wanted frame of an 8-frame clip at "
                        "stride 16 is then a key frame, so a clip decodes 8 frames, at ~1.9x "
                        "the bytes of long-GOP VP9 at the same quality. Choose 4 to train with "
                        "uniform windows (`--set data.keyframe_windows=false`): a clip then "
                        "costs about 8*(N+1)/2 decoded frames (4: 20, 8: 36, 16: 68), at "
                        "~2.7x the bytes. Measured trade-offs: docs/data_plane.md")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="seed of the order samples are written in (rows are shuffled, so a "
                        "class-sorted list does not give single-class shards)")
    p.add_argument("--no-shuffle", action="store_true",
                   help="write samples in list order instead")
    p.add_argument("--overwrite", action="store_true",
                   help="delete existing shards in OUT and rebuild (default: keep complete "
                        "shards of an identical earlier run and continue after them)")
    add_run_options(p, parallel_work="probing/transcoding")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    config = ShardConfig(
        list_path=args.list_path, video_root=args.video_root, classes_path=args.classes_path,
        out=args.out, samples_per_shard=args.samples_per_shard,
        max_shard_bytes=args.max_shard_bytes, transcode=args.transcode,
        short_side=args.short_side or None, gop=args.gop, shuffle=not args.no_shuffle,
        seed=args.seed, workers=args.workers, overwrite=args.overwrite, dataset=args.dataset,
        command=shlex.join([Path(sys.argv[0]).name if argv is None else "make_shards.py",
                            *(sys.argv[1:] if argv is None else argv)]),
    )
    start = time.perf_counter()
    try:
        manifest = build_shards(config, progress=not args.no_progress)
    except (ListFileError, LabelError, FileExistsError) as err:
        log.error("%s", err)
        return 2
    except NothingPackedError as err:
        log.error("%s", err)
        return 1
    except KeyboardInterrupt:
        print(f"\nmake_shards: interrupted; complete shards are kept in {args.out}: run the same "
              "command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    for skip in manifest["skipped"]:
        log.warning("skipped %s (line %s): %s", skip["path"], skip["line"], skip["reason"])
    print(f"{manifest['total']} samples in {len(manifest['shards'])} shards, "
          f"{len(manifest['skipped'])} skipped, in {args.out} "
          f"({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
