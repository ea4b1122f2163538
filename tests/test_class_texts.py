"""Rephrased class texts ("Name: description") travel from the class file through make_splits and
make_shards into the prompts the trainer (student and teacher), the end-of-run evaluation,
evaluate.py and predict.py tokenise, and the run folder records them (RUN/classes.json)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from train_fixtures import EVALUATE, ROOT, process_env, train_in_process

from kiclip.config import DataConfig
from kiclip.layout import read_shard_set, resolve_protocol

# Your own dataset: 4 classes, rephrased; base = the first 2 (make_splits --base 2).
TEXTS = {
    "0": "juggling: a person keeps several balls in the air",
    "1": "surfing: a person rides a wave standing on a board",
    "2": "knitting: a person loops yarn with two needles",
    "3": "rowing: a person pulls oars to move a boat",
}
DESCRIPTIONS = {t.split(":", 1)[0]: t.split(": ", 1)[1] for t in TEXTS.values()}
# What the tiny shards are decoded to: 4 frames at stride 1, 32 px, the tiny CLIP.
TINY = ["--model", "kiclip-tiny", "--image-size", "32", "--num-frames", "4", "--stride", "1",
        "--loader", "torch", "--workers", "0"]


@pytest.fixture(scope="module")
def rephrased_data(tmp_path_factory) -> Path:
    """DATA/{train_split1,base_test,novel_test} from a rephrased class file, via make_splits
    (custom dataset "mydata", 2 base classes) and make_shards (dataset read from splits.json)."""
    from conftest import write_test_video

    from shard_tools import make_shards, make_splits

    root = tmp_path_factory.mktemp("rephrased")
    videos = root / "videos"
    videos.mkdir()
    train, val = [], []
    for label in range(len(TEXTS)):
        for k in range(3):
            name = f"c{label}_{k}.avi"
            write_test_video(videos / name, frames=8, codec="mjpeg", container="avi",
                             pix_fmt="yuvj420p")
            (val if k == 2 else train).append(f"{name},{label}\n")
    (root / "classes.json").write_text(json.dumps(TEXTS))
    (root / "train.csv").write_text("".join(train))
    (root / "val.csv").write_text("".join(val))
    splits, data = root / "splits", root / "data"
    assert make_splits.main(["--dataset", "mydata", "--base", "2", "--classes", str(root / "classes.json"),
                             "--train-list", str(root / "train.csv"), "--val-list", str(root / "val.csv"),
                             "--out", str(splits), "--shots", "2", "--splits", "1"]) == 0
    for rows, classes, name in (("split1/train.csv", "base_classes.json", "train_split1"),
                                ("base_test.csv", "base_classes.json", "base_test"),
                                ("novel_test.csv", "novel_classes.json", "novel_test")):
        assert make_shards.main(["--list", str(splits / rows), "--video-root", str(videos),
                                 "--classes", str(splits / classes), "--out", str(data / name),
                                 "--workers", "1", "--no-progress"]) == 0
    return data


def _has_descriptions(prompts: list[str], names: list[str]) -> bool:
    """Every class of ``names`` appears in ``prompts`` with its description."""
    return all(any(DESCRIPTIONS[n] in p for p in prompts) for n in names)


def test_shards_carry_the_texts_and_the_dataset(rephrased_data):
    protocol = resolve_protocol(str(rephrased_data), "b2n")
    assert protocol.train.classes == ["juggling", "surfing"]
    assert protocol.train.class_texts == [TEXTS["0"], TEXTS["1"]] and protocol.train.rephrased
    assert protocol.evals["novel"].class_texts == [TEXTS["2"], TEXTS["3"]]
    assert {s.dataset for s in (protocol.train, *protocol.evals.values())} == {"mydata"}


def test_mixed_rephrased_and_plain_texts_are_refused(rephrased_data, tmp_path):
    import shutil

    from kiclip.config import ConfigError

    copy = tmp_path / "base_test"
    shutil.copytree(rephrased_data / "base_test", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["class_texts"]["1"] = "surfing"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=r"manifest\.json.*mixes rephrased.*'surfing'"):
        read_shard_set(copy)


class SpyTokenizer:
    """Wraps a tokenizer and keeps every prompt it was given."""

    def __init__(self, tokenizer):
        self.tokenizer, self.prompts = tokenizer, []

    def __call__(self, texts):
        self.prompts += list(texts)
        return self.tokenizer(texts)


def test_trainer_and_evaluator_tokenise_the_descriptions_in_process(rephrased_data, one_thread):
    from kiclip.evaluation import evaluate_label_space
    from kiclip.model import VideoStudent, create_clip
    from kiclip.train.step import PromptTokens

    protocol = resolve_protocol(str(rephrased_data), "b2n")
    torch.manual_seed(0)
    clip, tokenizer = create_clip("kiclip-tiny", None, vision_cfg={"image_size": 32})
    spy = SpyTokenizer(tokenizer)
    PromptTokens(spy, protocol.train.class_texts, protocol.train.rephrased, torch.device("cpu"))
    assert _has_descriptions(spy.prompts, ["juggling", "surfing"])
    assert "a video of a person doing juggling. " + TEXTS["0"] in spy.prompts

    spy.prompts.clear()
    data = DataConfig(num_frames=4, stride=1, image_size=32, eval_batch_size=4, num_views=1,
                      backend="torch", num_workers=0)
    result = evaluate_label_space(VideoStudent(clip, 4), spy, protocol.evals["novel"], data,
                                  device=torch.device("cpu"))
    assert result["videos"] == 2
    assert _has_descriptions(spy.prompts, ["knitting", "rowing"])
    assert not any("juggling" in p for p in spy.prompts)  # the novel label space only


# Runs a launch/ script with the tokenizer that build_video_models (training's and inference's
# one model builder) gets from create_clip wrapped: every prompt it is given is appended (one
# JSON list per call) to the file named by KICLIP_TEST_PROMPTS.
SPY_DRIVER = """
import json, os, runpy, sys
import kiclip.model.build as build
real = build.create_clip
def create_clip(*args, **kwargs):
    clip, tokenizer = real(*args, **kwargs)
    def spy(texts):
        with open(os.environ["KICLIP_TEST_PROMPTS"], "a") as fh:
            fh.write(json.dumps(list(texts)) + "\\n")
        return tokenizer(texts)
    return clip, spy
build.create_clip = create_clip
script = sys.argv.pop(1)
sys.argv[0] = script
runpy.run_path(script, run_name="__main__")
"""


def _run_spied(tmp_path: Path, script: Path, args: list[str], log: Path) -> subprocess.CompletedProcess:
    driver = tmp_path / "spy_driver.py"
    driver.write_text(SPY_DRIVER)
    return subprocess.run([sys.executable, str(driver), str(script), *args], cwd=ROOT,
                          env=process_env(KICLIP_TEST_PROMPTS=str(log)), capture_output=True,
                          text=True, timeout=300, check=False)


def _spied_prompts(log: Path) -> list[str]:
    return [p for line in log.read_text().splitlines() for p in json.loads(line)]


@pytest.mark.slow
def test_train_and_evaluate_scripts_prompt_with_descriptions(rephrased_data, tmp_path, monkeypatch):
    import kiclip.train.assemble as assemble

    real, spies = assemble.build_models, []

    def build_models(*args, **kwargs):
        module, teacher, tokenizer = real(*args, **kwargs)
        spies.append(SpyTokenizer(tokenizer))
        return module, teacher, spies[-1]

    monkeypatch.setattr(assemble, "build_models", build_models)
    run, eval_log = tmp_path / "run", tmp_path / "eval.jsonl"
    train_in_process(["--b2n", "custom", "--data", str(rephrased_data), "--output", str(run),
                      "--epochs", "1", "--lr", "1e-4", "--device", "cpu", *TINY])
    prompts = [p for spy in spies for p in spy.prompts]
    # Student/teacher prompts of the base label space, then the end-of-run evaluation's two.
    assert _has_descriptions(prompts, ["juggling", "surfing", "knitting", "rowing"])
    assert "a photo of a person doing surfing. " + TEXTS["1"] in prompts
    summary = json.loads((run / "summary.json").read_text())
    assert {"base_top1", "novel_top1"} <= set(summary)

    record = json.loads((run / "classes.json").read_text())
    assert record["label_spaces"]["train"]["class_texts"] == {"0": TEXTS["0"], "1": TEXTS["1"]}
    assert record["label_spaces"]["novel"]["class_texts"] == {"0": TEXTS["2"], "1": TEXTS["3"]}
    assert record["label_spaces"]["train"]["rephrased"] is True
    assert len(record["eval_templates"]) == 29 and record["train_templates"][-1] == "{}"
    assert record["label_spaces"]["base"]["dataset"] == "mydata"

    out = tmp_path / "eval"
    proc = _run_spied(tmp_path, EVALUATE, ["--b2n", "custom", "--data", str(rephrased_data),
                                           "--checkpoint", str(run / "weights" / "epoch_000.pt"),
                                           "--views", "1", "--loader", "torch", "--output", str(out)],
                      eval_log)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _has_descriptions(_spied_prompts(eval_log), ["juggling", "surfing", "knitting", "rowing"])
    results = json.loads((out / "results.json").read_text())
    assert results["prompts"]["label_spaces"]["novel"]["class_texts"]["1"] == TEXTS["3"]


def test_predict_prompts_with_the_descriptions_of_a_classes_file(rephrased_data, tmp_path, capsys,
                                                                 one_thread):
    """A kiclip class file (or a shard folder's manifest) as --classes-file gives rephrased
    prompts; a list mixing rephrased and plain names is refused (exit 2)."""
    from test_predict import predict, save_tiny_checkpoint

    from kiclip.inference import parse_class_list

    checkpoint = save_tiny_checkpoint(tmp_path / "tiny.pt")
    video = next((rephrased_data.parent / "videos").glob("*.avi"))
    classes = rephrased_data.parent / "classes.json"
    assert parse_class_list(file=rephrased_data / "novel_test" / "manifest.json") == [TEXTS["2"], TEXTS["3"]]

    import kiclip.model.build as build

    real, spies = build.create_clip, []

    def create_clip(*args, **kwargs):
        clip, tokenizer = real(*args, **kwargs)
        spies.append(SpyTokenizer(tokenizer))
        return clip, spies[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(build, "create_clip", create_clip)
        code = predict.main(["--checkpoint", str(checkpoint), "--video", str(video),
                             "--classes-file", str(classes), "--views", "1", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _has_descriptions(spies[0].prompts, list(DESCRIPTIONS))
    assert {r["class"] for r in json.loads(out)["top_k"]} <= set(TEXTS.values())

    code = predict.main(["--checkpoint", str(checkpoint), "--video", str(video),
                         "--classes-file", str(classes), "--classes", "cooking"])
    assert code == 2 and "mixes rephrased" in capsys.readouterr().err


def test_cross_dataset_test_sets_keep_their_texts(rephrased_data, tmp_path):
    """evaluate.py --cross-dataset reads every DATA/test* folder with its own rephrased texts,
    and records them in results.json's prompts."""
    import argparse

    sys.path.insert(0, str(ROOT / "launch"))
    import evaluate

    from kiclip.layout import prompt_record

    target = tmp_path / "target"
    target.mkdir()
    (target / "test").symlink_to(rephrased_data / "novel_test")
    (target / "test_base").symlink_to(rephrased_data / "base_test")
    args = argparse.Namespace(b2n=None, data=str(target), cache_dir=None, stream=False)
    spaces = evaluate._label_spaces(args)
    assert spaces["test"].class_texts == [TEXTS["2"], TEXTS["3"]] and spaces["test"].rephrased
    record = prompt_record(spaces)
    assert record["label_spaces"]["test_base"]["class_texts"] == {"0": TEXTS["0"], "1": TEXTS["1"]}
    assert record["label_spaces"]["test"]["example_prompt"] == "a photo of knitting. " + TEXTS["2"]
