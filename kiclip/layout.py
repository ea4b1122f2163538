"""Where a protocol's shards live under ``--data``, and a check of them before heavy work.

B2N (``--b2n``): ``DATA/train_split{k}/`` (base classes, K shots), ``DATA/base_test/`` and
``DATA/novel_test/``. Cross-dataset (``--cross-dataset``): ``DATA/train/`` and optionally
``DATA/test/``. Each folder is a make_shards output with ``manifest.json``, whose ``classes``
names the folder's label space.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kiclip.config import ConfigError

SPLIT_HINT = ("build it with shard_tools/make_splits.py and shard_tools/make_shards.py "
              "(see docs/data.md), or point --data at the folder that holds it")


@dataclass
class ShardSet:
    """One make_shards output folder and its label space."""
    path: Path
    classes: list[str]
    total: int


def read_shard_set(path: str | Path) -> ShardSet:
    """Read and check ``path/manifest.json``; ConfigError naming the file on any problem."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not path.is_dir():
        raise ConfigError(f"shard folder {path} does not exist; {SPLIT_HINT}")
    if not manifest_path.is_file():
        raise ConfigError(f"{manifest_path} is missing: {path} is not a make_shards output; {SPLIT_HINT}")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{manifest_path} is not valid JSON ({err}); rebuild the shards") from None
    names = manifest.get("classes")
    if not isinstance(names, dict) or not names:
        raise ConfigError(f"{manifest_path} has no 'classes' mapping; rebuild with make_shards --classes FILE")
    try:
        order = sorted(names, key=int)
    except ValueError:
        raise ConfigError(f"{manifest_path}: class ids must be integers, got {sorted(names)[:3]}") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise ConfigError(f"{manifest_path}: class ids must be 0..{len(order) - 1} without gaps")
    classes = [names[k] for k in order]
    for label in manifest.get("class_counts", {}):
        if not 0 <= int(label) < len(classes):
            raise ConfigError(f"{manifest_path}: samples carry label {label} but only {len(classes)} "
                              "class names are given: the list and the class-names file disagree")
    shards = manifest.get("shards", [])
    missing = [s["name"] for s in shards if not (path / s["name"]).is_file()]
    if missing:
        raise ConfigError(f"{path}: shards named in manifest.json are missing: {', '.join(missing[:5])}")
    total = int(manifest.get("total", 0))
    if total <= 0 or not shards:
        raise ConfigError(f"{manifest_path} lists no samples; check the list file and the skipped rows")
    return ShardSet(path=path, classes=classes, total=total)


@dataclass
class ProtocolData:
    train: ShardSet
    evals: dict[str, ShardSet]   # "base"/"novel" for B2N, "test" for cross-dataset


def resolve_protocol(data: str, mode: str, split: int = 1, *, need_train: bool = True) -> ProtocolData:
    """Find and validate the shard folders of a protocol under ``data``."""
    if not data:
        raise ConfigError("--data is required: the folder holding the shards (see docs/data.md)")
    root = Path(data)
    if not root.is_dir():
        raise ConfigError(f"--data {root} does not exist")
    if mode == "b2n":
        train = read_shard_set(root / f"train_split{split}") if need_train else None
        evals = {"base": read_shard_set(root / "base_test"), "novel": read_shard_set(root / "novel_test")}
        if train is not None and train.classes != evals["base"].classes:
            raise ConfigError(f"{root / f'train_split{split}'} and {root / 'base_test'} have different "
                              "class lists: both must be the base label space from make_splits")
    else:
        train = read_shard_set(root / "train") if need_train else None
        evals = {"test": read_shard_set(root / "test")} if (root / "test").is_dir() else {}
    return ProtocolData(train=train, evals=evals)
