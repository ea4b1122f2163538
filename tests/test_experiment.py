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
