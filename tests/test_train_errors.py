"""Dataset problems fail before training starts (exit 2, the message names the file); a NaN loss
stops the run with a message naming the step and the loss terms (exit 1).

train.py's ``main`` runs in the test process: an unexpected exception (a traceback from the
script) fails the test instead of becoming an exit code."""

from __future__ import annotations

import json
import shutil

import pytest
from train_fixtures import FAST, read_losses, train_main


def _train_fails_early(data, tmp_path, *extra: str) -> str:
    """Run train.py on ``data``; assert exit 2 and that no run directory was made. Returns stderr."""
    out = tmp_path / "run"
    code, err = train_main([*FAST, "--data", str(data), "--output", str(out), *extra])
    assert code == 2, err[-3000:]
    assert not out.exists(), "the run started before the dataset was checked"
    return err


def _copy(b2n_shards, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(b2n_shards, data)
    return data


def test_unknown_dataset_is_an_argparse_error(tmp_path):
    code, err = train_main(["--b2n", "kinetics9000", "--data", str(tmp_path)])
    assert code == 2
    assert "invalid choice: 'kinetics9000'" in err and "synthetic" in err


def test_missing_data_root(tmp_path):
    err = _train_fails_early(tmp_path / "nowhere", tmp_path)
    assert f"--data {tmp_path / 'nowhere'} does not exist" in err


def test_missing_shard_folder_names_it(b2n_shards, tmp_path):
    data = _copy(b2n_shards, tmp_path)
    shutil.rmtree(data / "train_split1")
    err = _train_fails_early(data, tmp_path)
    assert f"shard folder {data / 'train_split1'} does not exist" in err
    assert "make_splits.py" in err  # and says how to build it
    # The split number picks the folder: split 2 was never built.
    err = _train_fails_early(_copy(b2n_shards, tmp_path / "again"), tmp_path, "--split", "2")
    assert "train_split2 does not exist" in err


def test_missing_list_manifest_names_it(b2n_shards, tmp_path):
    data = _copy(b2n_shards, tmp_path)
    (data / "base_test" / "manifest.json").unlink()
    err = _train_fails_early(data, tmp_path)
    assert f"{data / 'base_test' / 'manifest.json'} is missing" in err


def test_missing_shard_tar_names_it(b2n_shards, tmp_path):
    data = _copy(b2n_shards, tmp_path)
    (data / "train_split1" / "shard-000001.tar").unlink()
    err = _train_fails_early(data, tmp_path)
    assert "shard-000001.tar" in err and str(data / "train_split1") in err


def test_labels_beyond_the_class_names_file(b2n_shards, tmp_path):
    """The list's labels reach past the names file (e.g. a 24-class names file for 26 labels)."""
    data = _copy(b2n_shards, tmp_path)
    path = data / "train_split1" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["class_counts"]["25"] = 2
    path.write_text(json.dumps(manifest))
    err = _train_fails_early(data, tmp_path)
    assert str(path) in err and "label 25" in err and "24 class names" in err


def test_class_count_mismatch_between_train_and_base_test(b2n_shards, tmp_path):
    data = _copy(b2n_shards, tmp_path)
    path = data / "base_test" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["classes"]["24"] = "an extra class"
    path.write_text(json.dumps(manifest))
    err = _train_fails_early(data, tmp_path)
    assert str(data / "train_split1") in err and str(data / "base_test") in err
    assert "different class lists" in err


def test_bad_config_field_fails_before_training(b2n_shards, tmp_path):
    err = _train_fails_early(b2n_shards, tmp_path, "--set", "optim.lr=-1")
    assert "optim.lr" in err
    err = _train_fails_early(b2n_shards, tmp_path, "--set", "data.batch_size=\"eight\"")
    assert "data.batch_size" in err
    err = _train_fails_early(b2n_shards, tmp_path, "--deepspeed_config", str(tmp_path / "no.json"))
    assert "no.json does not exist" in err


def test_zero_stage_3_is_refused_with_the_reason(b2n_shards, tmp_path):
    err = _train_fails_early(b2n_shards, tmp_path, "--zero-stage", "3")
    assert "run.zero_stage" in err and "stage 3 is not supported" in err and "--zero-stage 2" in err
    ds_json = tmp_path / "ds3.json"
    ds_json.write_text(json.dumps({"train_batch_size": 2, "zero_optimization": {"stage": 3}}))
    err = _train_fails_early(b2n_shards, tmp_path, "--deepspeed_config", str(ds_json))
    assert "ds3.json" in err and "zero_optimization.stage is 3" in err and "stage 2" in err
    ds_json.write_text("{")
    err = _train_fails_early(b2n_shards, tmp_path, "--deepspeed_config", str(ds_json))
    assert "ds3.json is not valid JSON" in err


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_the_terms(b2n_shards, tmp_path, monkeypatch):
    from kiclip.train import step

    forward, calls = step.KiclipTrainModule.forward, [0]

    def poisoned(self, *args, **kwargs):  # the loss of the third step is NaN
        terms = forward(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == 3:
            nan = terms.ce * float("nan")
            terms = terms._replace(total=terms.total + nan, ce=nan)
        return terms

    monkeypatch.setattr(step.KiclipTrainModule, "forward", poisoned)
    out = tmp_path / "run"
    code, err = train_main([*FAST, "--data", str(b2n_shards), "--output", str(out), "--epochs", "2"])
    assert code == 1, err[-3000:]
    # One line (the progress bar, left open, may draw itself again after it).
    message = err[err.rindex("train.py: error: "):].splitlines()[0]
    assert message.startswith("train.py: error: non-finite loss at step 3 (epoch 0)"), message
    assert "total=nan" in message and "ce=nan" in message
    assert "distill_image=" in message and "distill_text=" in message
    assert [r["step"] for r in read_losses(out)] == [1, 2]  # stopped before stepping on it
    assert not (out / "weights").exists()  # and saved nothing
