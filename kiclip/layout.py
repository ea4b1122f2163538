"""Where a protocol's shards live under ``--data``, and a check of them before heavy work.

B2N (``--b2n``): ``DATA/train_split{k}/`` (base classes, K shots), ``DATA/base_test/`` and
``DATA/novel_test/``. Cross-dataset (``--cross-dataset``): ``DATA/train/`` and optionally
``DATA/test/``. Each folder is a make_shards output with ``manifest.json``, whose ``classes``
names the folder's label space, ``class_texts`` (when the class file was rephrased) the texts
the prompts are built from, and ``dataset`` the dataset the videos come from.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kiclip.config import PRESET_DATASETS, ConfigError

if TYPE_CHECKING:  # kiclip.data imports torch, which --help does not need
    from kiclip.data.shards import ShardSet

log = logging.getLogger(__name__)

# In a folder that holds only a manifest (kiclip.remote.fetch_manifests): the URL of the
# make_shards folder whose tars the fallback loader streams.
STREAM_SOURCE = ".stream-source"

SPLIT_HINT = ("build it with shard_tools/make_splits.py and shard_tools/make_shards.py "
              "(see docs/data.md), or point --data at the folder that holds it")


def read_shard_set(path: str | Path) -> ShardSet:
    """Read and check ``path/manifest.json`` and open the tars it lists (streamed from the
    folder's STREAM_SOURCE URL when it holds only the manifest); ConfigError naming the file on
    any problem."""
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
    order, classes = _classes(manifest, manifest_path)
    shards = manifest.get("shards", [])
    source = (path / STREAM_SOURCE).read_text().strip() if (path / STREAM_SOURCE).is_file() else None
    missing = [s["name"] for s in shards if not (path / s["name"]).is_file()]
    if missing and source is None:
        raise ConfigError(f"{path}: shards named in manifest.json are missing: {', '.join(missing[:5])}")
    total = int(manifest.get("total", 0))
    if total <= 0 or not shards:
        raise ConfigError(f"{manifest_path} lists no samples; check the list file and the skipped rows")
    dataset = manifest.get("dataset")
    label_space = {"root": path, "classes": classes, "total": total, "source": source,
                   "class_texts": _class_texts(manifest, manifest_path, order, classes),
                   "dataset": str(dataset) if dataset else None}
    return _open(path, [s["name"] for s in shards], label_space)


def _classes(manifest: dict, manifest_path: Path) -> tuple[list[str], list[str]]:
    """The class ids in order and their names; ConfigError on gaps or unnamed labels."""
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
    return order, classes


def _open(path: Path, names: list[str], label_space: dict) -> ShardSet:
    """The ShardSet of the tars ``names`` in ``path`` (or streamed from its source URL)."""
    from kiclip.data.shards import open_tars, open_url_shards

    if label_space["source"] is not None:
        return open_url_shards(label_space["source"], **label_space)
    try:
        return open_tars([str(path / name) for name in names], where=str(path), **label_space)
    except ValueError as err:  # every tar truncated or unreadable (each one logged)
        raise ConfigError(f"{err}: rebuild the shards with make_shards") from None


def _class_texts(manifest: dict, manifest_path: Path, order: list[str], classes: list[str]) -> list[str]:
    """The prompt texts: ``class_texts`` when present (every class "Name: description"), else the names."""
    texts = manifest.get("class_texts")
    if texts is None:
        return list(classes)
    if not isinstance(texts, dict) or sorted(texts, key=str) != sorted(order, key=str):
        raise ConfigError(f"{manifest_path}: 'class_texts' must give a text for each class id of "
                          "'classes'; rebuild with make_shards")
    texts = [str(texts[k]) for k in order]
    plain = [t for t in texts if ":" not in t]
    if plain:
        # Prompts are built one way for the whole label space (kiclip.text.build_prompts).
        raise ConfigError(f"{manifest_path}: the class file {manifest.get('classes_file', '?')} "
                          f"mixes rephrased \"Name: description\" texts with plain names "
                          f"({', '.join(repr(t) for t in plain[:3])}); give every class a "
                          "description or none, then rebuild the shards")
    return texts


def check_datasets(shard_sets: Iterable[ShardSet], preset: str, *, allow_mismatch: bool,
                   escape: str) -> None:
    """Refuse shards whose manifest names another dataset than ``--b2n preset`` expects.

    ConfigError names both datasets and the manifest; ``escape`` is the option that accepts the
    mismatch (custom data). Shards without a recorded dataset (older make_shards) only warn.
    """
    expected = PRESET_DATASETS.get(preset)
    for shard_set in shard_sets:
        if shard_set.dataset is None:
            if expected is not None:
                log.warning("%s records no dataset, so it cannot be checked against --b2n %s; "
                            "rebuild with make_shards --dataset %s to have it checked",
                            shard_set.manifest_path, preset, expected)
            continue
        if expected is None or shard_set.dataset == expected:
            continue
        if allow_mismatch:
            log.warning("--b2n %s on %s shards (%s): accepted by %s", preset, shard_set.dataset,
                        shard_set.manifest_path, escape)
            continue
        raise ConfigError(
            f"--b2n {preset} expects {expected} shards, but {shard_set.manifest_path} records dataset "
            f"{shard_set.dataset!r}: point --data at the {expected} shards, use --b2n "
            f"{_preset_for(shard_set.dataset)}, or pass {escape} to train/evaluate on it anyway")


def _preset_for(dataset: str) -> str:
    """The --b2n preset of a dataset name: its own when there is one, else custom."""
    return dataset if PRESET_DATASETS.get(dataset) == dataset else "custom"


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


def prompt_record(shard_sets: dict[str, ShardSet]) -> dict:
    """The exact class texts and templates each label space's prompts are built from, so a
    result can be traced to its prompts (train.py's RUN/classes.json, evaluate.py's results)."""
    from kiclip.text import ALL_TEMPLATES, RAW_TEMPLATE, TEMPLATES, build_prompts

    spaces = {}
    for name, shard_set in shard_sets.items():
        texts = shard_set.class_texts
        spaces[name] = {
            "shards": str(shard_set.root), "dataset": shard_set.dataset,
            "rephrased": shard_set.rephrased, "class_texts": {str(i): t for i, t in enumerate(texts)},
            "example_prompt": build_prompts(texts[:1], TEMPLATES[0], shard_set.rephrased)[0],
        }
    return {
        "label_spaces": spaces,
        "train_templates": [*TEMPLATES, RAW_TEMPLATE],
        "eval_templates": list(ALL_TEMPLATES),
        "prompt_rule": ("rephrased: the template filled with the name before ':', then a space "
                        "and the whole text; the raw template '{}' gives the whole text. Plain: "
                        "the template filled with the name. Training averages one drawn template "
                        "and the raw one per step; evaluation averages all eval_templates."),
    }
