"""kiclip.science.demo: the demo's table from evaluate.py's results, with the chance level."""

from __future__ import annotations

import json

import pytest

from kiclip.science import demo


def _write_eval(root, arm, base, novel, classes=24):
    texts = {str(i): f"class {i}" for i in range(classes)}
    blob = {"base": base, "novel": novel, "hm": 0.0, "runs": [],
            "prompts": {"label_spaces": {"base": {"class_texts": texts},
                                         "novel": {"class_texts": texts}}}}
    (root / "eval" / arm).mkdir(parents=True)
    (root / "eval" / arm / "results.json").write_text(json.dumps(blob))


def test_report_table_chance_and_files(tmp_path, capsys):
    _write_eval(tmp_path, "teacher", 60.0, 70.0)
    _write_eval(tmp_path, "finetune", 72.0, 61.0)
    _write_eval(tmp_path, "kiclip", 75.0, 69.0)
    assert demo.main([str(tmp_path), "--settings", '{"epochs": 4}']) == 0
    printed = capsys.readouterr().out
    assert "chance (uniform guess)" in printed and "4.2" in printed

    blob = json.loads((tmp_path / "results.json").read_text())
    assert list(blob["arms"]) == ["teacher", "finetune", "kiclip"]
    assert blob["chance"] == {"base": pytest.approx(100 / 24), "novel": pytest.approx(100 / 24)}
    assert blob["base"] == 75.0 and blob["hm"] == pytest.approx(2 * 75 * 69 / 144)
    assert blob["settings"] == {"epochs": 4}
    md = (tmp_path / "results.md").read_text()
    assert "| pretrained teacher, zero-shot (no training) | 60.0 | 70.0 |" in md
    assert "| chance (uniform guess) | 4.2 | 4.2 |" in md
    assert "KICLIP against the teacher: Base +15.0, Novel -1.0" in md and "kept" in md
    assert "Plain fine-tuning against the teacher: Base +12.0, Novel -9.0" in md
    assert (tmp_path / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reading_does_not_claim_retention_when_novel_drops():
    arms = {"teacher": {"base": 60.0, "novel": 70.0, "hm": 64.6},
            "kiclip": {"base": 75.0, "novel": 60.0, "hm": 66.7}}
    assert "kept" not in demo.reading(arms)[0]


def test_missing_arm_is_an_error_naming_the_file(tmp_path, capsys):
    _write_eval(tmp_path, "teacher", 60.0, 70.0)
    assert demo.main([str(tmp_path)]) == 2
    assert str(tmp_path / "eval" / "kiclip" / "results.json") in capsys.readouterr().err


def test_optional_arm_left_out_and_label_spaces_must_agree(tmp_path):
    _write_eval(tmp_path, "teacher", 60.0, 70.0)
    _write_eval(tmp_path, "kiclip", 75.0, 69.0)
    assert list(demo.collect(tmp_path / "eval")) == ["teacher", "kiclip"]
    _write_eval(tmp_path, "finetune", 72.0, 61.0, classes=12)
    with pytest.raises(demo.DemoReportError, match="different label spaces"):
        demo.collect(tmp_path / "eval")
