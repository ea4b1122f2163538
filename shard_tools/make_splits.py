"""Build base-to-novel (B2N) splits from a dataset's class file and train/val lists.

    python shard_tools/make_splits.py --dataset hmdb51 --classes classes.json \
        --train-list train.csv --val-list val.csv --out splits/hmdb51
    python shard_tools/make_splits.py --dataset synthetic --synthetic-dir data/synthetic \
        --out splits/synthetic

Writes (docs/CONTRACTS.md):
    OUT/base_classes.json, OUT/novel_classes.json   {"0": name} re-indexed in each label space
    OUT/split{k}/train.csv                          K shots per base class, base labels
    OUT/base_test.csv, OUT/novel_test.csv           val rows of base / novel classes, relabelled
    OUT/splits.json                                 dataset, base/novel original ids, seeds, shots
Published split lists (ViFi-CLIP/FROSTER, CSV or space separated) are taken as they are with
--published-train (one file per split) and --published-base-test/--published-novel-test.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from shard_tools import b2n
from shard_tools.cli_common import non_negative_int, positive_int, setup_logging
from shard_tools.lists import (
    ClassName,
    ListFileError,
    read_classes,
    read_video_list,
    write_classes,
    write_video_list,
)

log = logging.getLogger("make_splits")


def make_splits(
    out: Path,
    dataset: str,
    classes_path: Path,
    train_list: Path | None = None,
    val_list: Path | None = None,
    world_path: Path | None = None,
    shots: int = 16,
    num_splits: int = 3,
    seed: int = 0,
    order: str = "class",
    published_train: list[Path] | None = None,
    published_base_test: Path | None = None,
    published_novel_test: Path | None = None,
    n_base: int | None = None,
) -> dict:
    """Write the B2N split files under `out`; return what splits.json records.

    `dataset` is a preset name (fixed base/novel sizes) or, with `n_base` base classes, any name
    of your own; it is recorded in splits.json, and make_shards carries it into its manifests.

    Raises ListFileError/ValueError naming the file for inputs that do not fit the preset.
    """
    classes = read_classes(classes_path)
    base, novel = _base_and_novel(dataset, classes, classes_path, world_path, order, seed, n_base)
    out = Path(out)
    write_classes(out / "base_classes.json", [classes[i].text for i in base])
    write_classes(out / "novel_classes.json", [classes[i].text for i in novel])

    if published_train:
        splits = _adopt_published_train(out, base, published_train)
    else:
        if train_list is None:
            raise ValueError("--train-list is needed unless --published-train is given")
        train_rows = _checked_rows(train_list, len(classes), classes_path)
        splits = _draw_train_splits(out, train_rows, base, shots, num_splits, seed)
    val_rows = _checked_rows(val_list, len(classes), classes_path) if val_list else None
    tests = _write_test_lists(out, base, novel, val_rows, published_base_test,
                              published_novel_test)

    record = {
        "dataset": dataset,
        "classes_file": str(classes_path),
        "n_classes": len(classes),
        "base": base,
        "novel": novel,
        "base_rule": b2n.SYNTHETIC_RULE if dataset == "synthetic" else f"order={order}",
        "shots": None if published_train else shots,
        "seed": seed,
        "splits": splits,
        "test_rows": tests,
        "train_list": str(train_list) if train_list else None,
        "val_list": str(val_list) if val_list else None,
    }
    (out / "splits.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


def _adopt_published_train(out: Path, base: list[int], published: list[Path]) -> list[dict]:
    """OUT/split{k}/train.csv from the k-th published training list, taken as it is."""
    splits = []
    for k, path in enumerate(published, start=1):
        rows = b2n.adopt_published(read_video_list(path), base, str(path))
        write_video_list(out / f"split{k}" / "train.csv", rows)
        splits.append({"split": k, "source": str(path), "train_rows": len(rows)})
    return splits


def _draw_train_splits(out: Path, train_rows, base: list[int], shots: int, num_splits: int,
                       seed: int) -> list[dict]:
    """OUT/split{k}/train.csv for k = 1..num_splits: `shots` rows per base class drawn with
    seed + k, relabelled into the base label space."""
    splits = []
    for k in range(1, num_splits + 1):
        drawn = b2n.few_shot(train_rows, base, shots, seed + k)
        rows = b2n.relabel(drawn, base)
        write_video_list(out / f"split{k}" / "train.csv", rows)
        splits.append({"split": k, "seed": seed + k, "train_rows": len(rows)})
    return splits


def _write_test_lists(out: Path, base: list[int], novel: list[int], val_rows,
                      published_base_test: Path | None, published_novel_test: Path | None
                      ) -> dict[str, int]:
    """OUT/base_test.csv and OUT/novel_test.csv, each from its published list when given, else
    from the validation rows of its classes; returns their row counts."""
    tests = {}
    for name, ids, published in (("base_test", base, published_base_test),
                                 ("novel_test", novel, published_novel_test)):
        if published:
            rows = b2n.adopt_published(read_video_list(published), ids, str(published))
        elif val_rows is not None:
            rows = b2n.relabel(val_rows, ids)
        else:
            raise ValueError(f"--val-list (or --published-{name.replace('_', '-')}) is needed")
        write_video_list(out / f"{name}.csv", rows)
        tests[name] = len(rows)
    return tests


def _base_and_novel(dataset, classes: list[ClassName], classes_path, world_path, order, seed,
                    n_base: int | None = None):
    if dataset not in b2n.PRESETS:
        if n_base is None:
            raise ValueError(f"unknown dataset {dataset!r}; presets: {', '.join(b2n.PRESETS)}; "
                             "for your own dataset give --base N (how many classes are base)")
        return b2n.split_classes(len(classes), n_base, order, seed)
    if n_base is not None:
        raise ValueError(f"--base is for datasets without a preset; {dataset} splits "
                         f"{b2n.PRESETS[dataset][0]} base classes")
    n_base, n_novel = b2n.PRESETS[dataset]
    if len(classes) != n_base + n_novel:
        raise ValueError(
            f"{classes_path}: {len(classes)} classes, but the {dataset} preset splits "
            f"{n_base + n_novel} ({n_base} base / {n_novel} novel); is it the right file?")
    if dataset == "synthetic":
        world_path = Path(world_path or Path(classes_path).with_name("world.json"))
        if not world_path.is_file():
            raise ValueError(f"{world_path}: not found; the synthetic split needs the world.json "
                             f"make_synthetic.py writes (pass --world)")
        return b2n.synthetic_split(json.loads(world_path.read_text()))
    return b2n.split_classes(len(classes), n_base, order, seed)


def _checked_rows(path: Path, n_classes: int, classes_path: Path):
    rows = read_video_list(path)
    for row in rows:
        if row.label >= n_classes:
            raise ListFileError(f"{path}:{row.line}: label {row.label} is outside the "
                                f"{n_classes} classes of {classes_path}")
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=(
            "Build base-to-novel splits: base/novel class halves, K shots per base class for "
            "splits 1..N (seeded), base and novel test lists, and their class files. Output "
            "lists are `path,label` CSVs that make_shards.py reads."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--dataset", required=True,
                   help="preset: k400 200/200, hmdb51 26/25, ucf101 51/50, ssv2 87/87, "
                        "synthetic 24/24 by the colour+shape parity rule; or a name of your "
                        "own with --base N. Recorded in splits.json; make_shards carries it "
                        "into manifest.json and train.py --b2n checks it")
    p.add_argument("--base", type=int,
                   help="your own dataset only: the number of base classes (the first N in "
                        "class order, or --order random)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--synthetic-dir", type=Path,
                   help="a make_synthetic.py output: sets --classes, --train-list, --val-list "
                        "and --world from it")
    p.add_argument("--classes", type=Path, help="class file of the whole dataset")
    p.add_argument("--train-list", type=Path, help="training list (shots are drawn from it)")
    p.add_argument("--val-list", type=Path, help="validation list (split into base/novel tests)")
    p.add_argument("--world", type=Path,
                   help="synthetic only: world.json (default: beside --classes)")
    p.add_argument("--shots", type=positive_int, default=16, help="training videos per base class")
    p.add_argument("--splits", type=positive_int, default=3, help="number of few-shot splits (1..N)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="split k draws with seed + k")
    p.add_argument("--order", choices=["class", "random"], default="class",
                   help="base = first half in class order (published protocol) or seeded random")
    p.add_argument("--published-train", type=Path, nargs="+",
                   help="published base training lists, one per split, used as they are")
    p.add_argument("--published-base-test", type=Path, help="published base test list")
    p.add_argument("--published-novel-test", type=Path, help="published novel test list")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.synthetic_dir:
        args.classes = args.classes or args.synthetic_dir / "classes.json"
        args.train_list = args.train_list or args.synthetic_dir / "train.csv"
        args.val_list = args.val_list or args.synthetic_dir / "val.csv"
        args.world = args.world or args.synthetic_dir / "world.json"
    if args.classes is None:
        log.error("--classes (or --synthetic-dir) is required")
        return 2
    try:
        record = make_splits(
            args.out, args.dataset, args.classes, args.train_list, args.val_list, args.world,
            args.shots, args.splits, args.seed, args.order, args.published_train,
            args.published_base_test, args.published_novel_test, args.base)
    except (ListFileError, ValueError) as err:
        log.error("%s", err)
        return 2
    print(f"{args.dataset}: {len(record['base'])} base / {len(record['novel'])} novel classes, "
          f"{len(record['splits'])} splits "
          f"({', '.join(str(s['train_rows']) for s in record['splits'])} train rows), "
          f"tests {record['test_rows']['base_test']} base / {record['test_rows']['novel_test']} "
          f"novel, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
