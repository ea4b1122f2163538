"""The shard set a loader reads: tars, their DALI ``.idx`` files, and a per-sample table.

Both loaders start here, so they agree on how many samples there are (which fixes every rank's
share of an epoch) and on which tars are usable. A tar that is shorter than its index says (a
truncated copy) is reported by name and left out whole, for both loaders alike.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

VIDEO_EXTS = ("mp4", "mkv", "webm", "avi", "mov")


@dataclass(frozen=True)
class SampleRef:
    """Where one sample lives: ``tar`` path, ``key``, and (offset, size) of its members."""

    tar: str
    key: str
    video: tuple[int, int]
    meta: tuple[int, int]


@dataclass
class ShardSet:
    """The shards a loader reads and, when opened from a make_shards folder, their label space.

    Samples: usable ``tars``, their ``.idx`` files (``indexes``), every sample (``samples``),
    the tars left out as ``truncated``, and ``checksums`` (tar URL -> (sha256, bytes) from the
    manifest) for tars streamed from a URL (:func:`open_url_shards`).

    Label space (from ``root/manifest.json``, see kiclip.layout.read_shard_set; empty for a bare
    folder, glob or tar list): ``classes`` the plain names, ``class_texts`` what the prompts are
    built from (the rephrased "Name: description" texts when the class file had them, else the
    names), ``dataset`` the manifest's dataset name (None when unrecorded), ``total`` the samples
    the manifest lists (``len(samples)`` when there is none), ``source`` the folder URL the tars
    are streamed from when ``root`` holds only the manifest, else None.
    """

    tars: list[str]
    indexes: list[str]
    samples: list[SampleRef]
    truncated: list[str] = field(default_factory=list)
    checksums: dict[str, tuple[str, int]] = field(default_factory=dict)
    root: Path | None = None
    classes: list[str] = field(default_factory=list)
    class_texts: list[str] | None = None
    dataset: str | None = None
    total: int = 0
    source: str | None = None

    def __post_init__(self) -> None:
        if self.class_texts is None:
            self.class_texts = list(self.classes)
        if not self.total:
            self.total = len(self.samples)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def streamed(self) -> bool:
        """Whether ``tars`` are URLs read as streams (only the fallback loader reads them)."""
        return bool(self.checksums)

    @property
    def rephrased(self) -> bool:
        return self.class_texts != self.classes

    @property
    def manifest_path(self) -> Path | None:
        return None if self.root is None else self.root / "manifest.json"

    @property
    def where(self) -> str:
        """The set in words for messages: its streamed URL, its folder, else its tars' folders."""
        if self.source or self.root is not None:
            return self.source or str(self.root)
        return ", ".join(sorted({os.path.dirname(t) or "." for t in self.tars}))


def list_tars(shards) -> list[str]:
    """Tar paths from a directory, a glob, a single tar, or a list of any of these (sorted)."""
    if isinstance(shards, (list, tuple)):
        return [t for s in shards for t in list_tars(s)]
    shards = os.fspath(shards)
    if os.path.isdir(shards):
        found = sorted(glob.glob(os.path.join(shards, "*.tar")))
    else:
        found = sorted(glob.glob(shards))
    if not found:
        raise FileNotFoundError(f"no .tar shards at {shards!r}; build them with "
                                "shard_tools/make_shards.py")
    return found


def _split_member(name: str) -> tuple[str, str]:
    base = os.path.basename(name)
    key, _, ext = base.partition(".")
    return os.path.join(os.path.dirname(name), key) if os.path.dirname(name) else key, ext


def _samples_from_members(tar: str, members) -> list[SampleRef]:
    """Group (name, offset, size) members by key into samples with one video and one json."""
    groups: dict[str, dict[str, tuple[int, int]]] = {}
    for name, offset, size in members:
        key, ext = _split_member(name)
        if key and not os.path.basename(key).startswith("."):
            groups.setdefault(key, {})[ext] = (offset, size)
    samples = []
    for key, parts in groups.items():
        video = next((parts[e] for e in VIDEO_EXTS if e in parts), None)
        if video is None or "json" not in parts:
            log.warning("%s: sample %r lacks a video or json member; left out", tar, key)
            continue
        samples.append(SampleRef(tar=tar, key=key, video=video, meta=parts["json"]))
    return samples


def read_index(idx_path: str) -> list[tuple[str, int, int]]:
    """Members (name, offset, size) listed in a DALI webdataset index (v1.2: with names)."""
    with open(idx_path) as f:
        return parse_index(f, idx_path)


def parse_index(lines, where: str) -> list[tuple[str, int, int]]:
    """Members (name, offset, size) of the DALI index text ``lines``; ValueError naming ``where``."""
    lines = iter(lines)
    header = next(lines, "").split()
    if not header or header[0] != "v1.2":
        raise ValueError(f"{where}: expected a 'v1.2' DALI index, got {header[:1]}")
    members = []
    for line in lines:
        fields = line.split()
        if len(fields) % 4:
            raise ValueError(f"{where}: a line of the index is not 'ext offset size name' groups")
        for i in range(0, len(fields), 4):
            _ext, offset, size, name = fields[i:i + 4]
            members.append((name, int(offset), int(size)))
    return members


def scan_tar(tar: str) -> list[tuple[str, int, int]]:
    """Members (name, offset, size) of a tar, read from its headers; raises on truncation."""
    with tarfile.open(tar) as archive:
        members = [(m.name, m.offset_data, m.size) for m in archive if m.isreg()]
    end = max((o + s for _, o, s in members), default=0)
    if end > os.path.getsize(tar):
        raise tarfile.ReadError("unexpected end of data")
    return members


def write_index(tar: str, idx_path: str | None = None) -> str:
    """Write the DALI ``.idx`` for ``tar`` (same format as DALI's tools/wds2idx.py)."""
    idx_path = idx_path or tar[:-len(".tar")] + ".idx"
    rows: list[list[str]] = []
    last = None
    for name, offset, size in scan_tar(tar):
        key, ext = _split_member(name)
        if key != last:
            rows.append([])
            last = key
        rows[-1].append(f"{ext} {offset} {size} {name}")
    with open(idx_path, "w") as f:
        f.write(f"v1.2 {len(rows)}\n" + "".join(" ".join(r) + "\n" for r in rows))
    return idx_path


def open_shards(shards) -> ShardSet:
    """Index every tar of a directory, glob, tar or list of them (see :func:`open_tars`).

    A URL (kiclip.remote.is_remote) of one make_shards folder is opened for streaming instead
    (:func:`open_url_shards`). A make_shards folder with its label space is opened by
    kiclip.layout.read_shard_set, from the tars its manifest lists."""
    from kiclip.remote import is_remote

    if is_remote(shards):
        return open_url_shards(shards)
    return open_tars(list_tars(shards), where=repr(shards))


def open_tars(tar_paths: list[str], *, where: str, **label_space) -> ShardSet:
    """Index each tar (from its ``.idx``, else its headers); drop and report truncated ones.

    ``label_space`` fills the ShardSet's manifest fields; ValueError naming ``where`` when no
    sample is readable."""
    tars, indexes, samples, truncated = [], [], [], []
    for tar in tar_paths:
        idx = tar[:-len(".tar")] + ".idx"
        try:
            if os.path.exists(idx):
                members = read_index(idx)
                if max((o + s for _, o, s in members), default=0) > os.path.getsize(tar):
                    raise tarfile.ReadError("shorter than its index")
            else:
                members = scan_tar(tar)
                idx = write_index(tar, os.path.join(_index_cache_dir(), _cache_name(tar)))
        except (tarfile.ReadError, OSError, EOFError) as exn:
            log.error("truncated or unreadable tar %s (%s): its samples are left out", tar, exn)
            truncated.append(tar)
            continue
        tars.append(tar)
        indexes.append(idx)
        samples.extend(_samples_from_members(tar, members))
    if not samples:
        raise ValueError(f"no readable samples in {where}")
    return ShardSet(tars=tars, indexes=indexes, samples=samples, truncated=truncated, **label_space)


def open_url_shards(url: str, **label_space) -> ShardSet:
    """The make_shards folder at ``url``, for streaming: only its ``manifest.json`` and each
    tar's ``.idx`` are fetched (into memory, nothing is written); ``tars`` are the tar URLs,
    ``checksums`` each one's manifest sha256 and size, ``indexes`` empty (DALI cannot read it).
    ``label_space`` fills the ShardSet's manifest fields. kiclip.remote.RemoteDataError names a
    missing or inconsistent file."""
    from kiclip import remote

    manifest_url = remote.join_url(url, remote.MANIFEST)
    entries = remote.manifest_shards(remote.fetch_bytes(manifest_url), manifest_url)
    tars, samples, checksums = [], [], {}
    for entry in entries:
        tar_url = remote.join_url(url, entry["name"])
        idx_url = tar_url[:-len(".tar")] + ".idx"
        try:
            members = parse_index(remote.fetch_bytes(idx_url).decode().splitlines(), idx_url)
        except remote.RemoteNotFound:
            raise remote.RemoteDataError(
                f"{idx_url} is missing: streaming {entry['name']} needs the index make_shards "
                "writes beside each tar (or stage the folder, which rebuilds it)") from None
        except (ValueError, UnicodeDecodeError) as err:
            raise remote.RemoteDataError(f"{idx_url}: not a DALI index ({err})") from None
        found = _samples_from_members(tar_url, members)
        if "samples" in entry and len(found) != int(entry["samples"]):
            raise remote.RemoteDataError(
                f"{idx_url} lists {len(found)} samples but {manifest_url} says {entry['samples']}"
                f" for {entry['name']}: upload the folder make_shards wrote again")
        tars.append(tar_url)
        samples.extend(found)
        checksums[tar_url] = (str(entry["sha256"]), int(entry["bytes"]))
    if not samples:
        raise remote.RemoteDataError(f"{manifest_url} lists no samples")
    return ShardSet(tars=tars, indexes=[], samples=samples, checksums=checksums, **label_space)


def _index_cache_dir() -> str:
    path = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                        "kiclip", "wds-index")
    os.makedirs(path, exist_ok=True)
    return path


def _cache_name(tar: str) -> str:
    stat = os.stat(tar)
    flat = os.path.abspath(tar).strip("/").replace("/", "_")
    return f"{flat}.{stat.st_size}.{int(stat.st_mtime)}.idx"


def load_meta(raw: bytes) -> dict:
    """The sample's json member as a dict (``frames``, ``width``, ``height``, ``label``, ...)."""
    return json.loads(raw)
