"""Config layering (defaults → preset → --config → flags → --set) and field errors."""

from __future__ import annotations

import argparse
import json

import pytest

from kiclip.config import (
    B2N_PRESETS,
    DEFAULT_MODEL,
    ConfigError,
    DataConfig,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    flatten,
)


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_layers_later_ones_win(tmp_path):
    base = parse("--b2n", "synthetic")
    assert base.model.model_name == "kiclip-tiny" and base.optim.lr == B2N_PRESETS["synthetic"]["optim.lr"]
    assert base.data.shuffle is True and TrainConfig().optim.epochs == 12
    file = tmp_path / "c.json"
    file.write_text(json.dumps({"optim": {"lr": 0.5, "betas": [0.8, 0.9]}, "data.batch_size": 3}))
    cfg = parse("--b2n", "synthetic", "--config", str(file), "--batch-size", "5",
                "--set", "optim.lr=1", "--set", "data.shuffle=false", "--no-distill")
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)  # --set beats the file
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.data.batch_size == 5  # the flag beats the file
    assert cfg.data.shuffle is False and cfg.loss.distill is False
    assert parse("--cross-dataset").mode == "cross"


def test_keyframe_windows_are_on_unless_turned_off():
    assert all(parse("--b2n", name).data.keyframe_windows is True for name in B2N_PRESETS)
    assert parse("--b2n", "k400").data.clip_spec().keyframe_windows is True
    off = parse("--b2n", "k400", "--set", "data.keyframe_windows=false")
    assert off.data.keyframe_windows is False and off.data.clip_spec().keyframe_windows is False


@pytest.mark.parametrize("argv, field", [
    (["--set", "optim.lr=0"], "optim.lr"),
    (["--set", "optim.lr=Infinity"], "optim.lr"),
    (["--lr", "nan"], "optim.lr"),
    (["--batch-size", "0"], "data.batch_size"),
    (["--set", "data.batch_size=2.5"], "data.batch_size"),
    (["--set", 'data.batch_size="8"'], "data.batch_size"),
    (["--set", "data.shuffle=0"], "data.shuffle"),
    (["--set", "optim.betas=[0.9]"], "optim.betas"),
    (["--mix", "1.5"], "model.mix"),
    (["--set", "data.backend=nvdec"], "data.backend"),
    (["--set", "run.precision=fp8"], "run.precision"),
    (["--set", "run.device=tpu"], "run.device"),
    (["--set", "optim.epochs=0"], "optim.epochs"),
    (["--set", "optim.nonsense=1"], "optim.nonsense"),
    (["--set", "solver.lr=1"], "solver"),
    (["--set", "optim.lr"], "FIELD=VALUE"),
    (["--set", "data.data=shards"], "'data.data' is now 'data.root'"),
    (["--zero-stage", "3"], "run.zero_stage must be 0, 1 or 2; ZeRO stage 3 is not supported"),
    (["--set", "run.zero_stage=4"], "run.zero_stage must be 0, 1 or 2"),
])
def test_bad_fields_name_the_field(argv, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.").replace("[", r"\[")):
        parse("--b2n", "synthetic", *argv)


def test_bad_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse("--config", str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse("--config", str(broken))


def test_every_flag_sets_the_field_its_help_names(tmp_path):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    fields = flatten(TrainConfig().to_dict())
    named = {}
    for action in parser._actions:  # argparse keeps no public list of a parser's flags
        if action.help and action.help.endswith("]"):
            named[action.option_strings[0]] = action.help.rsplit("[", 1)[1][:-1]
    assert named["--loader"] == "data.backend" and named["--workers"] == "data.num_workers"
    assert named["--model"] == "model.model_name" and named["--data"] == "data.root"
    assert named["--no-distill"] == "loss.distill=false"
    plain = {flag for flag, field in named.items() if "=" not in field}
    values = {"--data": "shards", "--split": "2", "--pretrained": "w.pt", "--model": "m",
              "--output": "out", "--device": "cpu", "--precision": "fp32", "--loader": "torch",
              "--mix": "0.75", "--image-size": "16", "--zero-stage": "1"}
    argv = [a for flag in sorted(plain) for a in (flag, values.get(flag, "3"))]
    argv += [flag for flag in named if flag not in plain]
    cfg = flatten(parse("--b2n", "synthetic", *argv).to_dict())
    for flag, field in named.items():
        name, _, switched = field.partition("=")
        assert name in fields
        want = json.loads(switched) if switched else type(fields[name])(values.get(flag, "3"))
        assert cfg[name] == want, flag


def test_data_config_builds_the_loader_spec():
    pytest.importorskip("torch")
    cfg = parse("--b2n", "ssv2", "--batch-size", "5", "--loader", "torch", "--workers", "3",
                "--set", "data.eval_batch_size=7", "--set", "data.keyframe_windows=false")
    train, test = cfg.data.loader_spec("train"), cfg.data.loader_spec("test")
    assert (train.mode, train.batch_size, train.backend, train.num_workers) == ("train", 5, "torch", 3)
    assert (test.mode, test.batch_size) == ("test", 7)
    assert train.clip == test.clip == cfg.data.clip_spec()
    assert (train.clip.num_frames, train.clip.stride, train.clip.image_size) == (8, 16, 224)
    assert train.clip.flip is False and train.clip.keyframe_windows is False  # ssv2: no flip


def test_saved_data_section_with_the_old_field_name_loads():
    assert DataConfig.from_dict({"data": "shards", "split": 2}) == DataConfig(
        root="shards", split=2, keyframe_windows=False)


@pytest.mark.parametrize("saved, expected", [
    ({"keyframe_windows": False}, False),  # a run that turned them off keeps them off
    ({"keyframe_windows": True}, True),
    ({}, False),  # saved before the option existed: trained with uniform windows
])
def test_saved_keyframe_windows_are_kept(saved, expected):
    assert DataConfig.from_dict({"root": "shards", **saved}).keyframe_windows is expected
    assert DataConfig().keyframe_windows is True  # what a new run gets


def test_default_model_is_the_factorys():
    from kiclip.model import DEFAULT_MODEL as factory_default

    assert TrainConfig().model.model_name == DEFAULT_MODEL == factory_default
