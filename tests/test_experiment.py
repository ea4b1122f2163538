"""launch/experiment_b2n.py and kiclip.science: the report's shape on fake results, the claims,
and the command-line help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kiclip.science import aggregate, check_claims, write_report

REPO = Path(__file__).resolve().parents[1]


def _fake_runs():
    def runs(base, novel):
        return [{"seed": s, "base": base + d, "novel": novel - d} for s, d in zip((0, 1, 2), (-1.0, 0.0, 1.0))]
    return {"teacher": [{"seed": None, "base": 61.0, "novel": 59.0}],
            "finetune": runs(66.0, 50.0), "distill": runs(65.0, 59.0), "kiclip": runs(64.0, 58.5)}


def test_aggregate_means_stds_and_per_run_hm():
    results = aggregate(_fake_runs())
    assert list(results) == ["teacher", "finetune", "distill", "kiclip"]
    ft = results["finetune"]
    assert ft["base"] == pytest.approx(66.0) and ft["base_std"] == pytest.approx(1.0)
    assert ft["n"] == 3 and results["teacher"]["base_std"] == 0.0
    hms = [2 * r["base"] * r["novel"] / (r["base"] + r["novel"]) for r in _fake_runs()["finetune"]]
    assert ft["hm"] == pytest.approx(sum(hms) / 3)


def test_claims_hold_on_results_shaped_like_the_issue_and_fail_otherwise():
    results = aggregate(_fake_runs())
    assert all(item["holds"] for item in check_claims(results))
    runs = _fake_runs()
    runs["finetune"] = runs["distill"]  # no forgetting: the world would be broken
    verdicts = {c["claim"]: c["holds"] for c in check_claims(aggregate(runs))}
    assert not verdicts["Novel(a) < Novel(teacher) − 4: plain fine-tuning forgets"]


def test_write_report_json_shape_markdown_and_chart(tmp_path):
    results = aggregate(_fake_runs())
    mix = aggregate({"0.5": _fake_runs()["kiclip"], "0.9": _fake_runs()["distill"]})
    settings = {"seeds": [0, 1, 2], "epochs": 4, "test_videos": 1920}
    paths = write_report(tmp_path / "out", tmp_path / "docs" / "science.md", results, settings,
                         mix=mix, provenance=["made by a test"], preamble="# Title\n")
    blob = json.loads(paths["json"].read_text())
    assert set(blob) == {"teacher", "finetune", "distill", "kiclip", "settings"}
    for method in ("teacher", "finetune", "distill", "kiclip"):
        for key in ("base", "novel", "hm", "base_std", "novel_std", "hm_std"):
            assert isinstance(blob[method][key], float)
    assert blob["settings"]["epochs"] == 4
    assert set(json.loads(paths["mix_json"].read_text())) == {"0.5", "0.9"}
    text = paths["doc"].read_text()
    assert text.startswith("# Title") and "made by a test" in text
    assert "| (a) fine-tune" in text and "66.0 ± 1.0" in text and "mix = 0.9" in text
    assert "HM(c) > HM(a) + 3" in text and "What the table says" in text
    assert "![Base / Novel / HM per method](science_b2n.png)" in text
    assert paths["chart"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_experiment_cli_help_and_bad_seeds():
    script = str(REPO / "launch" / "experiment_b2n.py")
    done = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 0 and "--seeds" in done.stdout and "science.json" in done.stdout
    bad = subprocess.run([sys.executable, script, "--synthetic", "--seeds", "0,1,2,3"],
                         capture_output=True, text=True, cwd=REPO, check=False)
    assert bad.returncode == 2 and "1 to 3" in bad.stderr


def test_rewrite_keeps_hand_written_notes(tmp_path):
    from kiclip.science.report import NOTES_MARKER

    doc = tmp_path / "science.md"
    results = aggregate(_fake_runs())
    write_report(tmp_path, doc, results, {"epochs": 1})
    doc.write_text(doc.read_text() + "\n" + NOTES_MARKER + "\nkeep me\n")
    write_report(tmp_path, doc, results, {"epochs": 2})
    text = doc.read_text()
    assert text.count(NOTES_MARKER) == 1 and "keep me" in text and '"epochs": 2' in text


def _sweep_runs():
    """Two lrs; at the higher one KICLIP beats distillation by 1, 2, 3 points over the seeds."""
    def runs(base, novel, bump=(0.0, 0.0, 0.0)):
        return [{"seed": s, "base": base + b, "novel": novel + b} for s, b in zip((0, 1, 2), bump)]
    return {3e-4: {"finetune": runs(70, 68), "distill": runs(71, 70), "kiclip": runs(71, 70)},
            1e-3: {"finetune": runs(50, 48), "distill": runs(56, 54), "kiclip": runs(56, 54, (1, 2, 3))}}


def test_lr_sweep_paired_difference_table_and_chart(tmp_path):
    from kiclip.science.sweep import summarise_sweep, sweep_reading, sweep_table, write_sweep_chart

    sweep = summarise_sweep([{"seed": None, "base": 65.0, "novel": 69.0}], _sweep_runs())
    assert sweep["lrs"] == [3e-4, 1e-3]
    mean, se = sweep["ki_minus_distill"][1e-3]["novel"]
    assert mean == pytest.approx(2.0) and se == pytest.approx(1.0 / 3 ** 0.5)
    assert sweep["ki_minus_distill"][3e-4]["hm"] == (pytest.approx(0.0), pytest.approx(0.0))
    table = sweep_table(sweep)
    assert "| 0.001 | **KICLIP − distill** (paired) | +2.0 ± 0.6 | +2.0 ± 0.6 |" in table
    assert "| 0.0003 | fine-tune | 70.0 ± 0.0 | 68.0 ± 0.0 |" in table
    reading = "\n".join(sweep_reading(sweep))
    assert "lr 0.001: HM KICLIP − distill +2.0 ± 0.6" in reading and "more than two s.e." in reading
    assert "lr 0.0003" in reading and "not told apart" in reading
    chart = write_sweep_chart(sweep, tmp_path / "sweep.png")
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_sweep_section_is_replaced_in_place(tmp_path):
    from kiclip.science.sweep import SECTION_BEGIN, replace_section, summarise_sweep, sweep_section

    doc = tmp_path / "science.md"
    doc.write_text("# Science\n\nkeep above\n")
    sweep = summarise_sweep([{"seed": None, "base": 65.0, "novel": 69.0}], _sweep_runs())
    replace_section(doc, sweep_section(sweep, {"epochs": 4}, "first run", "c.png"))
    doc.write_text(doc.read_text() + "\nkeep below\n")
    replace_section(doc, sweep_section(sweep, {"epochs": 5}, "second run", "c.png"))
    text = doc.read_text()
    assert text.count(SECTION_BEGIN) == 1 and "first run" not in text and "second run" in text
    assert text.startswith("# Science\n\nkeep above") and text.rstrip().endswith("keep below")
    assert '"epochs": 5' in text and "![HM and Novel against the learning rate](c.png)" in text


def test_experiment_cli_rejects_a_bad_lr_sweep():
    script = str(REPO / "launch" / "experiment_b2n.py")
    bad = subprocess.run([sys.executable, script, "--synthetic", "--lr-sweep", "3e-4,fast"],
                         capture_output=True, text=True, cwd=REPO, check=False)
    assert bad.returncode == 2 and "--lr-sweep" in bad.stderr and "3e-4,fast" in bad.stderr


def test_runner_adds_up_cpu_time_and_names_the_log_of_a_failed_step(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("experiment_b2n", REPO / "launch" / "experiment_b2n.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["experiment_b2n"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)

    run = module.Runner(tmp_path)
    cpu = run("help", "launch/experiment_b2n.py", "--help")
    assert cpu > 0 and run.cpu_s == cpu
    assert "--lr-sweep" in (tmp_path / "logs" / "help.log").read_text()
    with pytest.raises(RuntimeError, match=r"bad failed \(exit 2\).*bad\.log"):
        run("bad", "launch/experiment_b2n.py", "--synthetic", "--seeds", "0,1,2,3")
    assert run.cpu_s > cpu
