"""Choosing the training device: auto / cpu / cuda, and the case of a GPU the driver sees but
this torch build cannot use (a CUDA build newer than the driver). nvidia-smi is faked by a
script put first on PATH and torch's view of CUDA is monkeypatched, so these tests mean the
same on CPU and GPU hosts."""

from __future__ import annotations

import logging
import os
import stat

import pytest
import torch
from train_fixtures import FAST, train_main

from kiclip import device
from kiclip.device import DeviceError, choose_device_type
from kiclip.train.distributed import cuda_device_for_local_rank

LISTING = "GPU 0: NVIDIA H200 (UUID: GPU-00000000-0000-0000-0000-000000000000)"
DRIVER_DOWN = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver."


def fake_nvidia_smi(folder, output: str, code: int = 0) -> str:
    """A folder holding an ``nvidia-smi`` that prints ``output`` and exits ``code``; returns a
    PATH with that folder first."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\necho '{output}'\nexit {code}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_warns_when_the_driver_lists_a_gpu_torch_cannot_use(no_cuda, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", LISTING))
    with caplog.at_level(logging.WARNING, logger="kiclip.device"):
        assert choose_device_type("auto") == "cpu"
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "nvidia-smi lists a GPU but torch.cuda.is_available() is False" in warning
    assert "driver" in warning


def test_device_cuda_fails_with_the_reason(no_cuda, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", LISTING))
    with pytest.raises(DeviceError, match="nvidia-smi lists a GPU but torch.cuda.is_available"):
        choose_device_type("cuda")


@pytest.mark.parametrize("output,code", [(None, 0), (DRIVER_DOWN, 9)], ids=["no-nvidia-smi", "driver-down"])
def test_no_gpu_listed_means_a_quiet_cpu_run(no_cuda, monkeypatch, tmp_path, caplog, output, code):
    if output is None:
        monkeypatch.setattr(device.shutil, "which", lambda name: None)
    else:
        monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", output, code))
    with caplog.at_level(logging.WARNING, logger="kiclip.device"):
        assert choose_device_type("auto") == "cpu"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(DeviceError, match="no CUDA device"):
        choose_device_type("cuda")


def test_cpu_is_honoured_on_a_gpu_host_and_cuda_chosen_when_usable(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert choose_device_type("cpu") == "cpu"
    assert choose_device_type("auto") == "cuda"
    assert choose_device_type("cuda") == "cuda"
    with pytest.raises(DeviceError, match="tpu"):
        choose_device_type("tpu")


def test_a_local_rank_without_its_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cuda_device_for_local_rank(0) == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match="LOCAL_RANK=1 but this host has 1 visible CUDA device"):
        cuda_device_for_local_rank(1)


def test_train_device_cuda_exits_2_explaining_the_unusable_gpu(no_cuda, monkeypatch, b2n_shards, tmp_path):
    monkeypatch.setenv("PATH", fake_nvidia_smi(tmp_path / "bin", LISTING))
    args = [a for a in FAST if a not in ("--device", "cpu")]
    code, err = train_main([*args, "--data", str(b2n_shards), "--output", str(tmp_path / "run"),
                            "--device", "cuda"])
    assert code == 2, err[-2000:]
    assert "--device cuda: nvidia-smi lists a GPU but torch.cuda.is_available() is False" in err
    assert not (tmp_path / "run").exists()  # refused before any work
