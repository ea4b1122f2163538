"""Summarise a shard directory's manifest and verify every shard against it.

    python shard_tools/inspect_shards.py shards/k400/train

Checks, per shard the manifest lists: the file exists, its size and sha256 match, reading the tar
finds the recorded number of samples, each sample has one video member and one valid json member,
and the `.idx` beside it is present and equals the index of the tar as it is. Across the
directory: totals and per-class counts add up, and no unlisted shard lies there. Exits 0 when all
holds, 1 naming each shard and what is wrong otherwise, 2 when the manifest cannot be read.

Extension point: `build_parser()` returns the argparse parser and `verify_shards()` does the
checking, so further options (e.g. decoding a few samples) can be added without touching them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from kiclip.remote import RemoteDataError, RemoteNotFound, localize_folder
from shard_tools.cli_common import add_run_options, setup_logging
from shard_tools.shard_writer import (
    PARTIAL_SUFFIX,
    TarMember,
    dali_index_text,
    file_sha256,
    index_path_for,
    read_tar_samples,
    split_member_name,
)
from shard_tools.video_io import DALI_CPU_CODECS, SHARD_VIDEO_EXTS

log = logging.getLogger("inspect_shards")

MANIFEST = "manifest.json"


class ManifestError(Exception):
    """The manifest is missing or unreadable; the message names the file."""


@dataclass
class VerifyReport:
    """Outcome of verify_shards: `problems` holds one line per mismatch, naming the shard."""

    shards: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)
    codecs: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not self.problems


def load_manifest(directory: Path) -> dict:
    """`directory/manifest.json` as a dict; ManifestError if it is missing or malformed."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found (is {directory} a make_shards output?)") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    for key in ("total", "classes", "class_counts", "shards", "skipped"):
        if key not in manifest:
            raise ManifestError(f"{path}: field {key!r} missing")
    return manifest


def summarise_manifest(manifest: dict) -> str:
    """A few human-readable lines: totals, shards, per-class spread, skipped videos."""
    counts = [int(c) for c in manifest["class_counts"].values()]
    size = sum(s["bytes"] for s in manifest["shards"])
    lines = [
        f"samples: {manifest['total']} in {len(manifest['shards'])} shards "
        + f"({size / 2**20:.1f} MiB)",
        f"classes: {len(manifest['classes'])} (samples per class: min {min(counts, default=0)}, "
        + f"max {max(counts, default=0)})",
        f"transcode: {manifest.get('transcode', '?')}",
        f"skipped: {len(manifest['skipped'])}",
    ]
    reasons = Counter(s["reason"].split(":")[0] for s in manifest["skipped"])
    lines += [f"  {n} x {reason}" for reason, n in reasons.most_common()]
    if manifest.get("command"):
        lines.append(f"command: {manifest['command']}")
    return "\n".join(lines)


def verify_shards(directory: Path, manifest: dict | None = None) -> VerifyReport:
    """Verify every shard of `directory` against its manifest (see module docstring)."""
    directory = Path(directory)
    manifest = manifest if manifest is not None else load_manifest(directory)
    report = VerifyReport()
    labels = Counter()
    n_classes = len(manifest["classes"])
    for entry in manifest["shards"]:
        report.shards += 1
        found = _verify_shard(directory, entry, n_classes, report.problems, labels,
                              report.codecs)
        report.samples += found
    listed = {s["name"] for s in manifest["shards"]}
    for path in sorted(directory.glob("shard-*.tar")):
        if path.name not in listed:
            report.problems.append(f"{path.name}: not listed in the manifest")
    for path in sorted(directory.glob(f"*{PARTIAL_SUFFIX}")):
        log.warning("%s: unfinished file of an interrupted run", path.name)
    if report.samples != manifest["total"] and not report.problems:
        report.problems.append(
            f"manifest: total {manifest['total']} but the shards hold {report.samples} samples")
    counts = {str(k): v for k, v in labels.items() if v}
    recorded = {k: v for k, v in manifest["class_counts"].items() if v}
    if counts != recorded and not report.problems:
        report.problems.append("manifest: class_counts differ from the labels in the shards")
    return report


def _verify_shard(directory: Path, entry: dict, n_classes: int, problems: list[str],
                  labels: Counter, codecs: Counter) -> int:
    """Check one shard; append problems naming it; return the samples read from it."""
    name = entry["name"]
    tar = directory / name
    if not tar.is_file():
        problems.append(f"{name}: missing")
        return 0
    size = tar.stat().st_size
    if size != entry["bytes"]:
        problems.append(f"{name}: size {size} bytes, manifest says {entry['bytes']}")
    digest = file_sha256(tar)
    if digest != entry["sha256"]:
        problems.append(f"{name}: sha256 {digest[:12]}... differs from the manifest's "
                        f"{entry['sha256'][:12]}... (file modified or corrupt)")
    try:
        samples = read_tar_samples(tar)
    except (tarfile.TarError, OSError) as err:
        problems.append(f"{name}: unreadable tar ({err})")
        return 0
    if len(samples) != entry["samples"]:
        problems.append(f"{name}: {len(samples)} samples in the tar, manifest says "
                        f"{entry['samples']}")
    with tarfile.open(tar, "r:") as archive:
        for sample in samples:
            problem = _check_sample(archive, sample, n_classes, labels, codecs)
            if problem:
                problems.append(f"{name}: {problem}")
                break  # one bad sample is enough to name the shard
    idx = index_path_for(tar)
    if not idx.is_file():
        problems.append(f"{name}: index {idx.name} missing")
    elif idx.read_text() != dali_index_text(samples):
        problems.append(f"{name}: index {idx.name} does not match the tar")
    return len(samples)


def _check_sample(archive: tarfile.TarFile, sample: list[TarMember], n_classes: int,
                  labels: Counter, codecs: Counter) -> str | None:
    key = split_member_name(sample[0].name)[0]
    exts = sorted(split_member_name(m.name)[1] for m in sample)
    videos = [e for e in exts if e in SHARD_VIDEO_EXTS]
    if len(sample) != 2 or len(videos) != 1 or "json" not in exts:
        return f"sample {key} has members {exts}, expected one video and one json"
    member = next(m for m in sample if m.name.endswith(".json"))
    try:
        meta = json.loads(archive.extractfile(member.name).read())
        label = int(meta["label"])
    except (KeyError, ValueError, TypeError) as err:
        return f"sample {key}: bad json ({err})"
    if not 0 <= label < n_classes:
        return f"sample {key}: label {label} outside the manifest's {n_classes} classes"
    labels[label] += 1
    codecs[str(meta.get("codec", "unknown")).lower()] += 1
    return None


def codec_lines(codecs: Counter) -> list[str]:
    """One line per codec: how many samples, and which decoders read it.

    DALI's CPU decoder reads a fixed set; what NVDEC reads depends on the GPU and driver, so
    the loaders ask it when they start (kiclip.data.codecs) and this only says so.
    """
    import av

    lines = ["codecs:"]
    for codec, n in codecs.most_common():
        try:
            av.codec.Codec(codec, "r")
            fallback = "yes"
        except (av.codec.codec.UnknownCodecError, ValueError):
            fallback = "no"
        dali_cpu = "yes" if codec in DALI_CPU_CODECS else "no"
        line = (f"  {codec}: {n} samples; fallback (PyAV) {fallback}, DALI CPU {dali_cpu}, "
                f"DALI GPU (NVDEC) depends on the GPU, asked when a loader starts")
        if dali_cpu == "no":
            line += "; for DALI on a CPU rebuild with make_shards.py --transcode vp9|mjpeg"
        lines.append(line)
    return lines


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(
            "Print a shard directory's manifest summary and verify every shard against it "
            "(sha256, sample count read from the tar, .idx present and matching). Exits "
            "non-zero on any mismatch, naming the shard."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("directory", help="a make_shards.py output directory, or its URL (http(s)://, "
                   "s3://, gs://, pipe:), staged into --cache-dir first (docs/data.md)")
    p.add_argument("--cache-dir", help="where a URL is staged (default ~/.cache/kiclip/shards)")
    add_run_options(p)
    from shard_tools.inspect_decode import add_decode_options

    add_decode_options(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from shard_tools.inspect_decode import decode_option_problem

    problem = decode_option_problem(args)  # before minutes of decoding, not after
    if problem:
        parser.error(problem)
    setup_logging(args.verbose)
    try:
        args.directory = localize_folder(args.directory, args.cache_dir)
    except RemoteNotFound as err:  # no manifest at the URL: as for a local folder without one
        log.error("%s", err)
        return 2
    except RemoteDataError as err:  # a shard that cannot be fetched or fails its sha256
        print(f"FAIL {err}")
        return 1
    if args.decode:
        from shard_tools.inspect_decode import run_decode

        return run_decode(args)
    try:
        manifest = load_manifest(args.directory)
    except ManifestError as err:
        log.error("%s", err)
        return 2
    print(f"{args.directory}")
    print(summarise_manifest(manifest))
    report = verify_shards(args.directory, manifest)
    print("\n".join(codec_lines(report.codecs)))
    if report.ok:
        print(f"verified {report.shards} shards, {report.samples} samples: OK")
        return 0
    for problem in report.problems:
        print(f"FAIL {problem}")
    print(f"{len(report.problems)} problems in {args.directory}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
