"""Writing WebDataset tar shards and the DALI index beside each.

A shard is `shard-NNNNNN.tar`; a sample is two members sharing a key without dots:
`<key>.<video ext>` (the video bytes) and `<key>.json` (its metadata). A shard is written to
`shard-NNNNNN.tar.partial`, its index `shard-NNNNNN.idx` is written next, and only then is the
tar renamed: a `.tar` that exists is complete.

The index is the text format DALI's `wds2idx` tool writes (version v1.2):
    v1.2 <number of samples>
    <ext> <data offset> <size> <member name> [<ext> <offset> <size> <name> ...]   one line/sample
where the offset is the byte position of the member's data (after its 512-byte header).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

SHARD_PATTERN = "shard-{:06d}.tar"
PARTIAL_SUFFIX = ".partial"
DALI_INDEX_VERSION = "v1.2"
_BLOCK = tarfile.BLOCKSIZE  # 512


@dataclass(frozen=True)
class ShardRecord:
    """A finished shard, as the manifest lists it."""

    name: str
    samples: int
    sha256: str
    bytes: int


def shard_name(number: int) -> str:
    return SHARD_PATTERN.format(number)


def index_path_for(tar_path: Path) -> Path:
    """`shard-000000.tar` -> `shard-000000.idx`."""
    return Path(tar_path).with_suffix(".idx")


def sample_tar_bytes(*member_sizes: int) -> int:
    """Bytes a sample with these member sizes adds to a tar (512-byte header + padded data)."""
    return sum(_BLOCK + -(-size // _BLOCK) * _BLOCK for size in member_sizes)


def split_member_name(name: str) -> tuple[str, str]:
    """(key, ext) the way WebDataset and DALI split a member: at the first dot of the basename."""
    dot = name.find(".", name.rfind("/") + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :]


class ShardWriter:
    """Writes one shard; `close()` finishes it atomically and returns its ShardRecord."""

    def __init__(self, out_dir: Path, number: int):
        self.path = Path(out_dir) / shard_name(number)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        # Held open across add() calls; close() or abort() ends it.
        self._tar = tarfile.open(self.partial, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self.samples = 0

    @property
    def bytes_written(self) -> int:
        return self._tar.offset

    def add(self, key: str, video_ext: str, video: bytes, meta: dict) -> None:
        """Append one sample: `<key>.<video_ext>` and `<key>.json`."""
        if "." in key or "/" in key:
            raise ValueError(f"sample key must contain no dots or slashes: {key!r}")
        self._add_member(f"{key}.{video_ext}", video)
        self._add_member(f"{key}.json", json.dumps(meta, sort_keys=True).encode())
        self.samples += 1

    def _add_member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0  # fixed metadata: the same inputs give the same shard bytes and sha256
        self._tar.addfile(info, io.BytesIO(data))

    def close(self) -> ShardRecord:
        self._tar.close()
        with open(self.partial, "rb+") as f:
            os.fsync(f.fileno())
        write_dali_index(self.partial, index_path_for(self.path))
        os.replace(self.partial, self.path)
        return ShardRecord(self.path.name, self.samples, file_sha256(self.path),
                           self.path.stat().st_size)

    def abort(self) -> None:
        self._tar.close()
        self.partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class TarMember:
    """A regular file inside a tar: `offset` is where its data starts."""

    name: str
    offset: int
    size: int


def read_tar_samples(tar_path: Path) -> list[list[TarMember]]:
    """Members of `tar_path` grouped into samples (consecutive members sharing a key).

    Raises tarfile.TarError (or OSError) for a truncated or corrupt tar.
    """
    samples: list[list[TarMember]] = []
    last_key = None
    with tarfile.open(tar_path, "r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _ = split_member_name(member.name)
            if not key or key.endswith("/"):
                continue  # hidden files, as wds2idx skips them
            entry = TarMember(member.name, member.offset_data, member.size)
            if key != last_key:
                samples.append([entry])
                last_key = key
            else:
                samples[-1].append(entry)
    return samples


def dali_index_text(samples: list[list[TarMember]]) -> str:
    """The DALI webdataset index (v1.2) of a tar's samples, as `wds2idx` writes it."""
    lines = [f"{DALI_INDEX_VERSION} {len(samples)}"]
    for sample in samples:
        lines.append(" ".join(
            f"{split_member_name(m.name)[1]} {m.offset} {m.size} {m.name}" for m in sample))
    return "\n".join(lines) + "\n"


def write_dali_index(tar_path: Path, idx_path: Path) -> None:
    """Write the DALI index of `tar_path` to `idx_path` atomically."""
    tmp = Path(str(idx_path) + PARTIAL_SUFFIX)
    tmp.write_text(dali_index_text(read_tar_samples(tar_path)))
    os.replace(tmp, idx_path)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
