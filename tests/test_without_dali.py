"""``--loader dali`` where NVIDIA DALI is not installed: a one-line error naming the fix, exit 2,
in train.py, evaluate.py and inspect_shards.py --decode; ``--loader auto`` falls back to the torch
loader with one log line. DALI is hidden (``sys.modules["nvidia.dali"] = None`` makes its import
fail), never uninstalled, so these tests mean the same where it is installed."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from test_device_flag import launch_script
from test_predict import save_tiny_checkpoint
from train_fixtures import FAST, ROOT, process_env, train_main

FIX = "pip install -e '.[dali]' (or bash launch/setup_env.sh), or use --loader torch"
HIDE_DALI = "import runpy, sys; sys.modules['nvidia.dali'] = None; sys.argv[0] = 'inspect_shards.py'; "


@pytest.fixture
def no_dali(monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)


def test_train_loader_dali_exits_2_naming_the_fix(no_dali, b2n_shards, tmp_path):
    code, err = train_main([*FAST, "--data", str(b2n_shards), "--output", str(tmp_path / "run"),
                            "--loader", "dali"])
    assert code == 2, err[-2000:]
    assert "train.py: error: --loader dali (data.backend='dali') needs NVIDIA DALI" in err
    assert FIX in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()  # refused before the run directory is made


def test_evaluate_loader_dali_exits_2_naming_the_fix(no_dali, b2n_shards, tmp_path, capsys):
    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    code = launch_script("evaluate").main([
        "--b2n", "synthetic", "--data", str(b2n_shards), "--checkpoint", str(checkpoint),
        "--loader", "dali", "--device", "cpu", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "evaluate.py: error: --loader dali (data.backend='dali') needs NVIDIA DALI" in err
    assert FIX in err
    assert not (tmp_path / "out" / "results.json").exists()


def test_inspect_shards_decode_with_dali_exits_2_naming_the_fix(b2n_shards):
    args = [str(b2n_shards / "base_test"), "--decode", "1", "--loader", "dali"]
    proc = subprocess.run(
        [sys.executable, "-c", HIDE_DALI + f"sys.argv[1:] = {args!r}; "
         "runpy.run_module('shard_tools.inspect_shards', run_name='__main__')"],
        cwd=ROOT, env=process_env(), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "needs NVIDIA DALI" in proc.stderr and FIX in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_loader_auto_without_dali_falls_back_to_torch_in_one_log_line(no_dali, b2n_shards, caplog):
    from kiclip.data import choose_loader_backend, open_shards

    shards = open_shards(str(b2n_shards / "base_test"))
    with caplog.at_level(logging.INFO, logger="kiclip.data"):
        choice = choose_loader_backend(shards, "auto", "cpu", "base_test")
    assert choice.name == "torch"
    lines = [r for r in caplog.records if r.name.startswith("kiclip.data")]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "DALI not installed" in lines[0].getMessage()
