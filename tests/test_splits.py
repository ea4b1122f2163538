"""make_splits: preset sizes, shots, determinism, disjointness, the synthetic parity rule,
published split lists taken as they are, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shard_tools import b2n
from shard_tools.lists import read_classes, read_video_list
from shard_tools.make_splits import main, make_splits

PRESET_SIZES = {"k400": 400, "hmdb51": 51, "ucf101": 101, "ssv2": 174}


def _dataset(root: Path, n_classes: int, train_per_class: int = 20, val_per_class: int = 3
             ) -> tuple[Path, Path, Path]:
    """Class file + train/val lists for a fake dataset of `n_classes` (no videos needed)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.json").write_text(json.dumps({str(i): f"action {i}"
                                                   for i in range(n_classes)}))
    for split, per in (("train", train_per_class), ("val", val_per_class)):
        (root / f"{split}.csv").write_text("".join(
            f"c{c}/{split}{k}.mp4,{c}\n" for c in range(n_classes) for k in range(per)))
    return root / "classes.json", root / "train.csv", root / "val.csv"


def _csv(path: Path) -> list[tuple[str, int]]:
    return [(r.path, r.label) for r in read_video_list(path)]


@pytest.mark.parametrize("dataset", sorted(PRESET_SIZES))
def test_preset_counts_and_shots(tmp_path, dataset):
    n_base, n_novel = b2n.PRESETS[dataset]
    classes, train, val = _dataset(tmp_path / "d", PRESET_SIZES[dataset])
    record = make_splits(tmp_path / "out", dataset, classes, train, val)
    out = tmp_path / "out"
    assert (len(record["base"]), len(record["novel"])) == (n_base, n_novel)
    assert record["base"] == list(range(n_base))  # class order, as published
    assert len(read_classes(out / "base_classes.json")) == n_base
    assert read_classes(out / "novel_classes.json")[0].name == f"action {n_base}"
    for k in (1, 2, 3):
        rows = _csv(out / f"split{k}" / "train.csv")
        assert len(rows) == 16 * n_base
        assert {label for _, label in rows} == set(range(n_base))
    assert len(_csv(out / "base_test.csv")) == 3 * n_base
    novel = _csv(out / "novel_test.csv")
    assert len(novel) == 3 * n_novel and max(label for _, label in novel) == n_novel - 1
    assert novel[0] == (f"c{n_base}/val0.mp4", 0)
    saved = json.loads((out / "splits.json").read_text())
    assert saved["dataset"] == dataset and saved["shots"] == 16
    assert [s["seed"] for s in saved["splits"]] == [1, 2, 3]


def test_splits_are_deterministic_per_seed_and_differ_between_splits(tmp_path):
    classes, train, val = _dataset(tmp_path / "d", 51)
    for name, seed in (("a", 0), ("b", 0), ("c", 7)):
        make_splits(tmp_path / name, "hmdb51", classes, train, val, shots=4, seed=seed,
                    order="random")
    def read(name, k):
        return _csv(tmp_path / name / f"split{k}" / "train.csv")

    assert all(read("a", k) == read("b", k) for k in (1, 2, 3))
    assert read("a", 1) != read("a", 2) != read("a", 3)
    assert read("a", 1) != read("c", 1)
    base_a = json.loads((tmp_path / "a" / "splits.json").read_text())["base"]
    base_c = json.loads((tmp_path / "c" / "splits.json").read_text())["base"]
    assert base_a != base_c and base_a != list(range(26))


@pytest.mark.parametrize("order", ["class", "random"])
def test_base_and_novel_are_disjoint_and_cover_all(tmp_path, order):
    classes, train, val = _dataset(tmp_path / "d", 101, train_per_class=16)
    record = make_splits(tmp_path / "o", "ucf101", classes, train, val, order=order, seed=5)
    assert not set(record["base"]) & set(record["novel"])
    assert sorted(record["base"] + record["novel"]) == list(range(101))
    train_paths = {p for k in (1, 2, 3) for p, _ in _csv(tmp_path / "o" / f"split{k}/train.csv")}
    novel_originals = {f"c{c}/" for c in record["novel"]}
    assert not any(p.startswith(tuple(novel_originals)) for p in train_paths)


def test_synthetic_parity_rule(tiny_synthetic, tmp_path):
    assert main(["--dataset", "synthetic", "--synthetic-dir", str(tiny_synthetic),
                 "--out", str(tmp_path / "o"), "--shots", "2"]) == 0
    record = json.loads((tmp_path / "o" / "splits.json").read_text())
    world = json.loads((tiny_synthetic / "world.json").read_text())["classes"]
    assert len(record["base"]) == len(record["novel"]) == 24
    for index in record["base"]:
        assert (world[str(index)]["colour"] + world[str(index)]["shape"]) % 2 == 0
    for index in record["novel"]:
        assert (world[str(index)]["colour"] + world[str(index)]["shape"]) % 2 == 1
    base_names = [c.name for c in read_classes(tmp_path / "o" / "base_classes.json")]
    novel_names = [c.name for c in read_classes(tmp_path / "o" / "novel_classes.json")]
    # Every word occurs in base; each pair comes with all 4 directions on its side.
    assert {w for n in novel_names for w in n.split()} <= {w for n in base_names
                                                             for w in n.split()}
    pairs = {" ".join(n.split()[:2]) for n in base_names}
    assert len(pairs) == 6 and all(sum(n.startswith(p + " ") for n in base_names) == 4
                                   for p in pairs)
    assert len(_csv(tmp_path / "o" / "split1" / "train.csv")) == 24 * 2


def test_published_split_lists_are_taken_as_they_are(tmp_path):
    classes, _, val = _dataset(tmp_path / "d", 51)
    pub = tmp_path / "published"
    pub.mkdir()
    # Space separated, original class ids (as ViFi-CLIP/FROSTER publish).
    (pub / "train1.txt").write_text("c0/x.mp4 0\nc25/y.mp4 25\n")
    (pub / "train2.txt").write_text("c3/z.mp4 3\n")
    (pub / "novel.txt").write_text("c26/a.mp4 26\nc50/b.mp4 50\n")
    # Already re-indexed novel labels (0..24) are accepted too.
    (pub / "novel_reindexed.csv").write_text("c26/a.mp4,0\nc50/b.mp4,24\n")
    record = make_splits(tmp_path / "o", "hmdb51", classes, val_list=val,
                         published_train=[pub / "train1.txt", pub / "train2.txt"],
                         published_novel_test=pub / "novel.txt")
    assert _csv(tmp_path / "o" / "split1" / "train.csv") == [("c0/x.mp4", 0), ("c25/y.mp4", 25)]
    assert _csv(tmp_path / "o" / "split2" / "train.csv") == [("c3/z.mp4", 3)]
    assert _csv(tmp_path / "o" / "novel_test.csv") == [("c26/a.mp4", 0), ("c50/b.mp4", 24)]
    assert len(_csv(tmp_path / "o" / "base_test.csv")) == 3 * 26  # from --val-list
    assert record["shots"] is None and record["splits"][0]["source"].endswith("train1.txt")
    make_splits(tmp_path / "o2", "hmdb51", classes, val_list=val,
                published_train=[pub / "train1.txt"],
                published_novel_test=pub / "novel_reindexed.csv")
    assert _csv(tmp_path / "o2" / "novel_test.csv") == [("c26/a.mp4", 0), ("c50/b.mp4", 24)]
    (pub / "bad.txt").write_text("c0/x.mp4 0\nc0/y.mp4 60\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: label 60"):
        make_splits(tmp_path / "o3", "hmdb51", classes, val_list=val,
                    published_train=[pub / "bad.txt"])


def test_fewer_videos_than_shots_uses_all(tmp_path, caplog):
    classes, train, val = _dataset(tmp_path / "d", 51, train_per_class=5)
    record = make_splits(tmp_path / "o", "hmdb51", classes, train, val, shots=16)
    assert record["splits"][0]["train_rows"] == 5 * 26
    assert "fewer than 16 shots" in caplog.text


def test_clear_errors(tmp_path, caplog):
    classes, train, val = _dataset(tmp_path / "d", 50)
    assert main(["--dataset", "hmdb51", "--classes", str(classes), "--train-list", str(train),
                 "--val-list", str(val), "--out", str(tmp_path / "o")]) == 2
    assert "50 classes, but the hmdb51 preset splits 51" in caplog.text
    classes, train, val = _dataset(tmp_path / "e", 51)
    train.write_text("a.mp4,0\nb.mp4,51\n")
    with pytest.raises(ValueError, match=r"train\.csv:2: label 51 is outside the 51 classes"):
        make_splits(tmp_path / "o", "hmdb51", classes, train, val)
    (tmp_path / "e" / "world.json").unlink(missing_ok=True)
    classes48, train48, val48 = _dataset(tmp_path / "f", 48)
    with pytest.raises(ValueError, match="world.json: not found"):
        make_splits(tmp_path / "o", "synthetic", classes48, train48, val48)


@pytest.mark.parametrize("option, value", [("--shots", "0"), ("--splits", "-1"),
                                           ("--seed", "-3"), ("--shots", "two")])
def test_numeric_options_are_checked_at_parse_time(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["--dataset", "k400", "--out", str(tmp_path / "out"), option, value])
    assert exit_info.value.code == 2 and f"argument {option}: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
