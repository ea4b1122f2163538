"""`--b2n DATASET` is the dataset's recipe and checks the data: make_splits → make_shards record
the dataset in manifest.json; train.py/evaluate.py refuse another (exit 2, naming both) unless
told to accept it; `--b2n custom` takes any; the presets spell out the recipe and --help lists it."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys

import pytest
from train_fixtures import EVALUATE, FAST, ROOT, TRAIN, process_env, train_in_process, train_main

from kiclip.config import B2N_PRESETS, CROSS_PRESET, PRESET_DATASETS, TrainConfig, apply_overrides
from kiclip.layout import check_datasets, read_shard_set

RECIPE_FIELDS = {"model.model_name", "data.num_frames", "data.stride", "data.image_size",
                 "optim.epochs", "data.batch_size", "optim.lr", "optim.min_lr",
                 "optim.warmup_epochs", "optim.warmup_start_lr"}


def test_make_splits_then_make_shards_carry_the_dataset(tiny_synthetic, tmp_path):
    from shard_tools import make_shards, make_splits

    splits = tmp_path / "splits"
    assert make_splits.main(["--dataset", "synthetic", "--synthetic-dir", str(tiny_synthetic),
                             "--out", str(splits), "--shots", "1", "--splits", "1", "--seed", "4"]) == 0
    record = json.loads((splits / "splits.json").read_text())
    assert record["dataset"] == "synthetic" and record["splits"][0]["seed"] == 5

    def shard(rows, classes, out, *extra):
        assert make_shards.main(["--list", str(rows), "--video-root", str(tiny_synthetic),
                                 "--classes", str(classes), "--out", str(out), "--workers", "1",
                                 "--no-progress", *extra]) == 0
        return json.loads((out / "manifest.json").read_text())

    # The list one folder down (splitK/train.csv), the class file beside splits.json.
    manifest = shard(splits / "split1" / "train.csv", splits / "base_classes.json", tmp_path / "train")
    assert manifest["dataset"] == "synthetic"
    assert manifest["splits_file"] == str(splits / "splits.json")
    assert read_shard_set(tmp_path / "train").dataset == "synthetic"
    # --dataset wins; a finished output only has its dataset rewritten.
    manifest = shard(splits / "split1" / "train.csv", splits / "base_classes.json", tmp_path / "train",
                     "--dataset", "mine")
    assert manifest["dataset"] == "mine" and manifest["splits_file"] is None
    # No splits.json anywhere near, no --dataset: none recorded.
    rows = tmp_path / "lists" / "few.csv"
    rows.parent.mkdir()
    rows.write_text("".join(line + "\n" for line in (tiny_synthetic / "val.csv").read_text().splitlines()[:2]))
    manifest = shard(rows, tiny_synthetic / "classes.json", tmp_path / "plain")
    assert manifest["dataset"] is None and read_shard_set(tmp_path / "plain").dataset is None


def test_make_splits_custom_dataset_needs_base_count(tmp_path):
    from shard_tools.make_splits import make_splits

    (tmp_path / "classes.json").write_text(json.dumps({str(i): f"action {i}" for i in range(5)}))
    (tmp_path / "all.csv").write_text("".join(f"v{c}_{k}.mp4,{c}\n" for c in range(5) for k in range(2)))
    args = (tmp_path / "out", "mydata", tmp_path / "classes.json", tmp_path / "all.csv", tmp_path / "all.csv")
    with pytest.raises(ValueError, match="unknown dataset 'mydata'.*--base N"):
        make_splits(*args)
    record = make_splits(*args, shots=1, num_splits=1, n_base=3)
    assert record["dataset"] == "mydata" and record["base"] == [0, 1, 2] and record["novel"] == [3, 4]
    with pytest.raises(ValueError, match="--base is for datasets without a preset"):
        make_splits(tmp_path / "o2", "hmdb51", tmp_path / "classes.json", tmp_path / "all.csv",
                    tmp_path / "all.csv", n_base=3)


def _with_dataset(b2n_shards, tmp_path, dataset: str | None):
    """A copy of the synthetic shards whose manifests record ``dataset`` (None: no field)."""
    data = tmp_path / "data"
    shutil.copytree(b2n_shards, data)
    for manifest_path in data.glob("*/manifest.json"):
        manifest = json.loads(manifest_path.read_text())
        manifest.pop("dataset", None)
        if dataset is not None:
            manifest["dataset"] = dataset
        manifest_path.write_text(json.dumps(manifest))
    return data


def test_train_refuses_another_dataset_naming_both(b2n_shards, tmp_path):
    assert read_shard_set(b2n_shards / "base_test").dataset == "synthetic"  # from make_splits
    out = tmp_path / "run"
    code, err = train_main(["--b2n", "ucf101", "--data", str(b2n_shards), "--output", str(out)])
    assert code == 2, err[-3000:]  # (an unexpected exception would fail here, not print a traceback)
    assert "--b2n ucf101 expects ucf101 shards" in err
    assert f"{b2n_shards / 'train_split1' / 'manifest.json'} records dataset 'synthetic'" in err
    assert "data.allow_mismatch=true" in err
    assert not out.exists()


def test_evaluate_refuses_another_dataset(b2n_shards, tmp_path):
    proc = subprocess.run([sys.executable, str(EVALUATE), "--b2n", "hmdb51", "--data", str(b2n_shards),
                           "--checkpoint", str(tmp_path / "unused.pt")], cwd=ROOT, env=process_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--b2n hmdb51 expects hmdb51 shards" in proc.stderr and "'synthetic'" in proc.stderr
    assert "--allow-dataset-mismatch" in proc.stderr


@pytest.mark.slow
def test_escape_and_custom_accept_any_dataset(b2n_shards, tmp_path):
    """--set data.allow_mismatch=true trains a preset on another dataset's shards; --b2n custom
    needs no escape (tiny model and one step: only the check is under test)."""
    data = _with_dataset(b2n_shards, tmp_path, "mydata")
    tiny = [*FAST[2:], "--model", "kiclip-tiny", "--image-size", "32", "--stride", "2",
            "--max-steps", "1", "--data", str(data)]
    code, err = train_main(["--b2n", "ucf101", *tiny, "--output", str(tmp_path / "refused")])
    assert code == 2 and "records dataset 'mydata'" in err
    assert "--b2n custom" in err  # the message names the way for own data
    cases = {"ucf101": ["--set", "data.allow_mismatch=true"], "custom": []}
    for preset, extra in cases.items():
        summary = train_in_process(["--b2n", preset, *tiny, *extra, "--output", str(tmp_path / preset)])
        assert summary["steps"] == 1, preset
        config = json.loads((tmp_path / preset / "config.json").read_text())
        assert config["dataset"] == preset and config["data"]["allow_mismatch"] == bool(cases[preset])


def test_unrecorded_dataset_warns_and_passes(b2n_shards, tmp_path, caplog):
    data = _with_dataset(b2n_shards, tmp_path, None)
    sets = [read_shard_set(data / name) for name in ("train_split1", "base_test")]
    with caplog.at_level(logging.WARNING):
        check_datasets(sets, "k400", allow_mismatch=False, escape="--x")
    assert "records no dataset" in caplog.text and "make_shards --dataset k400" in caplog.text
    check_datasets([read_shard_set(b2n_shards / "base_test")], "science", allow_mismatch=False,
                   escape="--x")  # the science check runs on the synthetic world


def test_presets_spell_out_the_recipe_and_keep_todays_values():
    for name, fields in {**B2N_PRESETS, "cross": CROSS_PRESET}.items():
        assert RECIPE_FIELDS <= set(fields), name
    defaults = TrainConfig().to_dict()
    for name in ("k400", "hmdb51", "ucf101", "custom"):
        cfg = TrainConfig()
        apply_overrides(cfg, B2N_PRESETS[name])
        assert cfg.to_dict() == defaults, name  # the published recipe is the defaults' values
    assert B2N_PRESETS["ssv2"]["data.flip"] is False
    assert set(PRESET_DATASETS) == set(B2N_PRESETS)


@pytest.mark.parametrize("script", [TRAIN, EVALUATE])
def test_help_lists_the_presets(script):
    proc = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, env=process_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0
    table = [line for line in proc.stdout.splitlines()
             if line.startswith("  --b2n ") and "DATASET" not in line]
    rows = {line.split()[1]: line for line in table}
    assert set(rows) == set(B2N_PRESETS)
    assert "ViT-B-16-quickgelu  8 x 16" in rows["k400"] and "3.33e-06" in rows["k400"]
    assert "kiclip-tiny" in rows["science"] and " 48 " in rows["science"]
