"""launch/bench_step.py --tiny runs one real training step per variant on CPU and reports the
counted FLOPs next to the analytic budget (no timings are asserted)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench_step():
    spec = importlib.util.spec_from_file_location("bench_step", ROOT / "launch" / "bench_step.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_tiny_run_reports_flops_against_the_analytic_count(capsys):
    bench = _bench_step()
    assert bench.main(["--tiny", "--steps", "1", "--warmup", "0", "--variants", "ours,reference:noki"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["model"] == "kiclip-tiny" and report["batch"] == 2
    by_name = {v["variant"]: v for v in report["variants"]}
    assert set(by_name) == {"ours", "reference:noki"}
    for v in by_name.values():
        for field in ("ms_per_step", "clips_per_s", "peak_mem_gib", "flops_per_step", "flops_per_clip",
                      "analytic_flops_per_clip", "flops_ratio", "mfu", "kernels_backend"):
            assert field in v, field
        assert math.isfinite(v["flops_ratio"]) and v["flops_ratio"] > 0
        assert v["flops_per_step"] == pytest.approx(2 * v["flops_per_clip"])
    # Without knowledge injection the frozen stream (forward and backward) is gone.
    assert "frozen_stream_fwd" in by_name["ours"]["analytic_parts"]
    assert "frozen_stream_fwd" not in by_name["reference:noki"]["analytic_parts"]
    assert by_name["reference:noki"]["flops_per_clip"] < by_name["ours"]["flops_per_clip"]


def test_variant_names():
    bench = _bench_step()
    assert [v.name for v in bench.parse_variants("ours, reference:noki:nodistill")] == [
        "ours", "reference:noki:nodistill"]
    assert len(bench.parse_variants("all")) == 8
    with pytest.raises(ValueError, match="'fused'"):
        bench.parse_variants("fused")
