"""Config layering (defaults → preset → --config → flags → --set) and field errors."""

from __future__ import annotations

import argparse
import json

import pytest

from kiclip.config import (
    B2N_PRESETS,
    ConfigError,
    TrainConfig,
    add_config_arguments,
    config_from_args,
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


def test_keyframe_windows_are_off_unless_asked():
    assert all(parse("--b2n", name).data.keyframe_windows is False for name in B2N_PRESETS)
    assert parse("--b2n", "k400", "--set", "data.keyframe_windows=true").data.keyframe_windows


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
