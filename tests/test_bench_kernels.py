"""launch/bench_kernels.py: the harness times every backend of an op against eager in one
process, and the CPU smoke run prints its table and the JSON summary (times not checked)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from launch import bench_kernels


def test_run_op_reports_every_backend_against_eager():
    x = torch.arange(6.0)
    calls = {"eager": 0, "slow": 0}

    def step(name, shift):
        def run():
            calls[name] += 1
            return (x + shift,)
        return run

    op = bench_kernels.OpBench("toy", "toy (6,)", {"toy": [6]}, 48,
                               {"eager": step("eager", 0.0), "slow": step("slow", 0.5)})
    result = bench_kernels.run_op(op, SimpleNamespace(warmup=2, iters=3), on_gpu=False, peak=100.0)
    assert result["bytes"] == 48 and list(result) == ["bytes", "eager", "slow"]
    assert calls == {"eager": 1 + 2 + 3 + 1, "slow": 2 + 3 + 1}  # expected, warm-up, timed, error
    assert result["eager"]["max_abs_err_vs_eager"] == 0.0
    assert result["slow"]["max_abs_err_vs_eager"] == 0.5
    assert result["eager"]["speedup_vs_eager"] == 1.0
    for r in (result["eager"], result["slow"]):
        assert set(r) == {"ms", "gbs", "pct_peak", "max_abs_err_vs_eager", "speedup_vs_eager"}
        assert r["ms"] > 0 and r["pct_peak"] == pytest.approx(100 * r["gbs"] / 100.0, abs=0.1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the script runs the full benchmark")
def test_cpu_smoke_run_prints_the_table_and_the_summary(capsys):
    assert bench_kernels.main(["--allow-cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["smoke_cpu"] and summary["layernorm_weight_dtype"] == "bfloat16"
    assert summary["shapes"] == {"inject_layernorm": [6, 100], "distill_visual": [2, 48],
                                 "distill_text": [5, 48]}
    for op in ("inject_layernorm", "distill_loss"):
        assert list(summary["results"][op]) == ["bytes", "eager", "triton"]  # no compile on CPU
        assert summary["results"][op]["triton"]["max_abs_err_vs_eager"] < 0.1  # bf16 rounding
        assert any(line.startswith(f"{op:17s} triton") for line in lines)
    assert lines[0].startswith("device: cpu (Triton interpreter); dtype bf16; "
                               "inject_layernorm (6, 100); distill_loss (2, 48) + (5, 48)")


def test_without_cuda_or_allow_cpu_it_refuses(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench_kernels.main([]) == 2
    assert "--allow-cpu" in capsys.readouterr().err
