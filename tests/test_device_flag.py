"""``--device auto|cpu|cuda`` on evaluate.py, predict.py and visualize.py: the same choice and
messages as train.py (kiclip.device.choose_device_type). The host is made GPU-less for these
tests (torch's view of CUDA monkeypatched, no nvidia-smi), so they mean the same on a GPU host."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from test_predict import CLASSES, save_tiny_checkpoint
from train_fixtures import ROOT

from kiclip import device

NO_GPU = "--device cuda: no CUDA device (torch.cuda.is_available() is False and nvidia-smi lists no GPU)"


def launch_script(name: str):
    """launch/NAME.py as a module (launch/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"kiclip_launch_{name}", ROOT / "launch" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def gpu_less_host(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device.shutil, "which", lambda name: None)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from conftest import write_test_video

    root = tmp_path_factory.mktemp("device_flag")
    return {"checkpoint": save_tiny_checkpoint(root / "tiny.pt"),
            "video": write_test_video(root / "clip.mp4", frames=24, width=40, height=32)}


@pytest.mark.parametrize("name", ["evaluate", "predict", "visualize"])
def test_help_lists_the_device_choices(name):
    text = launch_script(name).build_parser().format_help()
    assert "--device {auto,cpu,cuda}" in text
    assert "cuda: fail (exit 2)" in " ".join(text.split())


@pytest.mark.parametrize("name", ["predict", "visualize"])
def test_device_cuda_without_a_gpu_exits_2_before_loading_the_model(name, assets, gpu_less_host,
                                                                    monkeypatch, capsys):
    script = launch_script(name)
    loaded = []
    monkeypatch.setattr("kiclip.inference.load_checkpoint_model", lambda path: loaded.append(path))
    args = ["--checkpoint", str(assets["checkpoint"]), "--video", str(assets["video"]),
            "--device", "cuda"]
    code = script.main(args + (["--classes", CLASSES] if name == "predict" else []))
    err = capsys.readouterr().err
    assert code == 2
    assert f"{name}.py: error: {NO_GPU}" in err
    assert loaded == []


def test_evaluate_device_cuda_without_a_gpu_exits_2_before_touching_the_data(gpu_less_host,
                                                                             tmp_path, capsys):
    code = launch_script("evaluate").main(["--b2n", "synthetic", "--data", str(tmp_path / "nowhere"),
                                           "--checkpoint", str(tmp_path / "none.pt"),
                                           "--device", "cuda", "--output", str(tmp_path / "out")])
    assert code == 2
    assert f"evaluate.py: error: {NO_GPU}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_predict_runs_with_device_cpu(assets, gpu_less_host, capsys):
    predict = launch_script("predict")
    code = predict.main(["--checkpoint", str(assets["checkpoint"]), "--video", str(assets["video"]),
                         "--classes", CLASSES, "--views", "1", "--top-k", "2", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    assert "probability" in out and len(out.strip().splitlines()) == 5  # title, header, rule, 2 classes


def test_an_unknown_device_is_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exit_info:
        launch_script("predict").main(["--frozen-clip", "--video", "v.mp4", "--device", "tpu"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'tpu'" in capsys.readouterr().err



def test_evaluate_runs_with_device_cpu(b2n_shards, gpu_less_host, tmp_path, capsys):
    import json

    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    code = launch_script("evaluate").main([
        "--b2n", "synthetic", "--data", str(b2n_shards), "--checkpoint", str(checkpoint),
        "--views", "1", "--loader", "torch", "--device", "cpu", "--output", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err[-2000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["runs"][0]["base_detail"]["videos"] == 24
    assert 0.0 <= results["hm"] <= 100.0
