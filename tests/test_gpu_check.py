"""launch/gpu_check.sh and launch/setup_env.sh on a CPU host: the plan, the budget, the verdicts
of parts that cannot run here (SKIPPED, never PASS), and the offline install options."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
GPU_CHECK = ROOT / "launch" / "gpu_check.sh"
SETUP_ENV = ROOT / "launch" / "setup_env.sh"
PARTS = ["environment", "kernel_tests", "kernel_parity", "bench_kernels", "bench_step", "dali_decode",
         "train_eval"]


def _bash(script: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(script), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHON": sys.executable, **env}, cwd=ROOT)


def test_dry_run_prints_the_plan_within_ten_minutes(tmp_path):
    proc = _bash(GPU_CHECK, "--dry-run", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    timeouts = dict(re.findall(r"^  (\w+)\s+timeout\s+(\d+)s", proc.stdout, re.MULTILINE))
    assert list(timeouts) == PARTS
    assert sum(map(int, timeouts.values())) <= 600
    assert "12608" in proc.stdout and "--variants ours,reference" in proc.stdout
    assert not (tmp_path / "out").exists(), "--dry-run must not create OUT"


def test_bad_option_is_a_usage_error(tmp_path):
    proc = _bash(GPU_CHECK, "--fast")
    assert proc.returncode == 2 and "unknown option --fast" in proc.stderr


def test_a_part_that_does_not_fit_the_budget_is_skipped(tmp_path):
    proc = _bash(GPU_CHECK, str(tmp_path), KICLIP_GPU_CHECK_BUDGET="5")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert proc.returncode == 0, proc.stderr
    assert [summary["parts"][p]["status"] for p in PARTS] == ["SKIPPED"] * len(PARTS)
    assert "did not fit" in summary["parts"]["environment"]["reason"]
    assert summary["counts"] == {"PASS": 0, "FAIL": 0, "SKIPPED": 7}


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the verdicts of a host without a GPU")
def test_without_a_gpu_only_the_environment_runs(tmp_path):
    proc = _bash(GPU_CHECK, str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    statuses = {p: summary["parts"][p]["status"] for p in PARTS}
    assert statuses.pop("environment") == "PASS"
    assert set(statuses.values()) == {"SKIPPED"}
    assert all("no CUDA device" in summary["parts"][p]["reason"] for p in statuses)
    env = json.loads((tmp_path / "environment.json").read_text())
    assert env["cuda_available"] is False and env["torch"] == torch.__version__


@pytest.mark.slow
def test_setup_env_dry_run_plans(tmp_path):
    # A fresh environment folder: the checkout's own .venv (made without system site packages)
    # would be refused by --system-torch, rightly.
    venv = str(tmp_path / "venv")
    plain = _bash(SETUP_ENV, "--dry-run", KICLIP_VENV=venv)
    assert plain.returncode == 0, plain.stderr
    assert re.search(r"pip install .*-e \S+\[dev", plain.stderr)
    assert "--no-index" not in plain.stderr and "--system-site-packages" not in plain.stderr

    offline = _bash(SETUP_ENV, "--dry-run", "--wheelhouse", str(tmp_path), "--system-torch",
                    KICLIP_VENV=venv)
    assert offline.returncode == 0, offline.stderr
    assert f"--no-index --find-links {tmp_path}" in offline.stderr
    assert "--upgrade pip" not in offline.stderr  # offline, the wheel folder decides pip's version
    assert "--no-deps -e" in offline.stderr and "requirements-without-torch" in offline.stderr
    assert "-m venv --system-site-packages" in offline.stderr


def test_setup_env_rejects_bad_arguments(tmp_path):
    proc = _bash(SETUP_ENV, "--wheelhouse", str(tmp_path / "missing"))
    assert proc.returncode == 2 and "is not a folder" in proc.stderr
    proc = _bash(SETUP_ENV, "--system-torch", "--dry-run", PYTHON=str(tmp_path / "no-python"))
    assert proc.returncode == 2 and "cannot import torch and torchvision" in proc.stderr


def _gpu_check_parts():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_parts", ROOT / "launch" / "gpu_check_parts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path of the parity part")
def test_parity_part_compares_triton_with_the_reference(tmp_path, monkeypatch):
    parts = _gpu_check_parts()
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # set by conftest before kiclip_kernels.ops is imported
    assert parts.parity(tmp_path / "parity.json", rows=400, width=96, dtype_name="bf16") == 0
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["passed"] is True
    assert set(report["ops"]["inject_layernorm"]) == {"y", "ln_y", "dh", "df", "dw", "db"}
    assert report["ops"]["distill_loss"]["rows"] == 2  # one row per 197-token frame
    assert all(0 <= v["rel_l2_err"] < 2e-2 for v in report["ops"]["inject_layernorm"].values())
    assert parts.parity(tmp_path / "fp32.json", rows=64, width=40, dtype_name="fp32") == 0
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert parts.parity(tmp_path / "skipped.json", rows=400, width=96, dtype_name="bf16") == parts.SKIP
