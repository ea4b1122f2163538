"""launch/predict.py and kiclip.inference on a tiny checkpoint and a small synthetic video."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kiclip.config import B2N_PRESETS, TrainConfig, apply_overrides
from kiclip.train.assemble import build_models

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "launch"))
import predict  # noqa: E402

CLASSES = "juggling,surfing,playing guitar,riding a bike,cooking,swimming"


def save_tiny_checkpoint(path: Path, perturb: float = 0.0, seed: int = 0) -> Path:
    """A kiclip-tiny weights file shaped like launch/train.py's; ``perturb`` adds noise to the
    student's visual blocks so they differ from the frozen KI copy, as after training."""
    cfg = TrainConfig()
    apply_overrides(cfg, B2N_PRESETS["synthetic"])
    torch.manual_seed(seed)
    module, _, _ = build_models(cfg)
    if perturb:
        with torch.no_grad():
            for p in module.student.clip.visual.transformer.resblocks.parameters():
                p.add_(perturb * torch.randn_like(p))
    torch.save({"model": module.state_dict(), "config": cfg.to_dict(), "epoch": 0, "step": 0}, path)
    return path


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from conftest import write_test_video

    root = tmp_path_factory.mktemp("predict")
    checkpoint = save_tiny_checkpoint(root / "tiny.pt")
    video = write_test_video(root / "clip.mp4", frames=40, width=48, height=40)
    garbage = root / "broken.mp4"
    garbage.write_bytes(b"this is not a video" * 10)
    return {"checkpoint": checkpoint, "video": video, "garbage": garbage, "root": root}


def run_main(capsys, *argv) -> tuple[int, str, str]:
    code = predict.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_top_k_sorted_probabilities(assets, capsys):
    code, out, _ = run_main(capsys, "--checkpoint", assets["checkpoint"], "--video", assets["video"],
                            "--classes", CLASSES, "--top-k", 4, "--json")
    assert code == 0
    result = json.loads(out)
    probs = [r["probability"] for r in result["top_k"]]
    assert len(probs) == 4 and result["views"] == 3
    assert all(0.0 <= p <= 1.0 for p in probs) and sum(probs) <= 1.0 + 1e-6
    assert probs == sorted(probs, reverse=True)
    assert {r["class"] for r in result["top_k"]} <= set(CLASSES.split(","))
    # Test-mode sampling: 3 views of T=8 frames at the checkpoint's stride (2), within the video.
    frames = torch.tensor(result["frames"])
    assert frames.shape == (3, 8) and int(frames.max()) <= 39


def test_table_and_classes_file(assets, capsys):
    names = assets["root"] / "names.json"
    names.write_text(json.dumps({"0": "juggling: tossing balls, catching them", "1": "surfing: riding a wave"}))
    code, out, _ = run_main(capsys, "--checkpoint", assets["checkpoint"], "--video", assets["video"],
                            "--classes-file", names, "--views", 1)
    assert code == 0
    assert "probability" in out and "juggling: tossing balls, catching them" in out


def test_every_class_scored_when_top_k_exceeds(assets, capsys):
    code, out, _ = run_main(capsys, "--checkpoint", assets["checkpoint"], "--video", assets["video"],
                            "--classes", "a,b", "--top-k", 10, "--json", "--views", 1)
    result = json.loads(out)
    assert code == 0 and len(result["top_k"]) == 2
    assert sum(r["probability"] for r in result["top_k"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("case, code, needle", [
    ("missing_video", 2, "does not exist"),
    ("missing_checkpoint", 2, "does not exist"),
    ("empty_classes", 2, "class list is empty"),
    ("unreadable_video", 1, "broken.mp4"),
])
def test_errors(assets, capsys, case, code, needle):
    video, checkpoint, classes = assets["video"], assets["checkpoint"], CLASSES
    if case == "missing_video":
        video = assets["root"] / "nope.mp4"
    elif case == "missing_checkpoint":
        checkpoint = assets["root"] / "nope.pt"
    elif case == "empty_classes":
        classes = " , ,"
    elif case == "unreadable_video":
        video = assets["garbage"]
    got, _, err = run_main(capsys, "--checkpoint", checkpoint, "--video", video, "--classes", classes)
    assert got == code
    assert needle in err


def test_cli_exit_code_subprocess(assets):
    proc = subprocess.run([sys.executable, str(ROOT / "launch" / "predict.py"), "--checkpoint",
                           str(assets["checkpoint"]), "--video", str(assets["root"] / "nope.mp4"),
                           "--classes", "a,b"], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert "nope.mp4 does not exist" in proc.stderr


def test_frozen_clip_without_checkpoint(assets, capsys):
    # No pretrained weights offline: the tiny architecture at random init still runs the path.
    code, out, _ = run_main(capsys, "--frozen-clip", "--model", "kiclip-tiny", "--video", assets["video"],
                            "--classes", "a,b,c", "--views", 1, "--json")
    result = json.loads(out)
    assert code == 0 and result["source"] == "frozen-clip" and len(result["top_k"]) == 3


def test_truncated_faststart_video_samples_only_decodable_frames(assets, capsys, caplog):
    from conftest import write_test_video

    from kiclip.video_probe import VideoProbeError, probe_video

    whole = write_test_video(assets["root"] / "whole.mp4", frames=250, width=48, height=40,
                             options={"movflags": "faststart"}).read_bytes()
    cut = assets["root"] / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 2])  # the header (up front) still promises 250
    decodable = probe_video(cut, allow_truncated=True).frames
    assert 0 < decodable < 200
    with pytest.raises(VideoProbeError, match="truncated"):  # what make_shards sees
        probe_video(cut)
    code, out, _ = run_main(capsys, "--checkpoint", assets["checkpoint"], "--video", cut,
                            "--classes", "a,b", "--json")
    assert code == 0
    frames = torch.tensor(json.loads(out)["frames"])
    assert int(frames.max()) < decodable  # every reported index exists
    assert f"promises 250 frames but only {decodable} decode" in caplog.text


@pytest.mark.parametrize("case, needle", [
    ("directory", "is a directory, not a file"),
    ("empty", "is an empty file (0 bytes)"),
])
def test_video_that_is_a_directory_or_empty_is_named_so(assets, capsys, case, needle):
    video = assets["root"] / f"{case}.mp4"
    if case == "directory":
        video.mkdir(exist_ok=True)
    else:
        video.write_bytes(b"")
    code, _, err = run_main(capsys, "--checkpoint", assets["checkpoint"], "--video", video,
                            "--classes", "a,b")
    assert code == 2 and needle in err and "does not exist" not in err


@pytest.mark.parametrize("case, needle", [
    ("random", "is not a PyTorch weights file"),
    ("json", "is not a PyTorch weights file (it starts with b'{\"mo'"),
    ("torch_without_model", "not a kiclip weights file: no 'model' entry (top-level keys: "
                            "weights, step"),
    ("empty", "is an empty file (0 bytes)"),
])
def test_non_checkpoint_says_what_it_is(assets, capsys, case, needle):
    path = assets["root"] / f"not_a_checkpoint_{case}.pt"
    if case == "random":
        path.write_bytes(bytes(range(7, 250)) * 4)
    elif case == "json":
        path.write_text('{"model": "ViT-B-16"}')
    elif case == "torch_without_model":
        torch.save({"weights": torch.zeros(2), "step": 3}, path)
    else:
        path.write_bytes(b"")
    code, _, err = run_main(capsys, "--checkpoint", path, "--video", assets["video"],
                            "--classes", "a,b")
    assert code in (1, 2) and needle in err, err
    assert "pop from empty list" not in err and "Traceback" not in err


def test_json_keeps_number_lists_on_one_line(assets, capsys):
    code, out, _ = run_main(capsys, "--checkpoint", assets["checkpoint"], "--video", assets["video"],
                            "--classes", "a,b,c", "--json")
    assert code == 0
    result = json.loads(out)
    frame_lines = [line for line in out.splitlines() if '"frames"' in line]
    assert frame_lines == [f'  "frames": {json.dumps(result["frames"])},']
    assert len(out.splitlines()) < 25  # 3 top-k entries of 3 fields, not one line per index
    assert predict.to_json({"a": [1, {"b": []}], "c": {}}) == (
        '{\n  "a": [\n    1,\n    {\n      "b": []\n    }\n  ],\n  "c": {}\n}')


@pytest.mark.parametrize("argv", [["--help"], ["--checkpoint", "x.pt", "--video", "nope.mp4",
                                                "--classes", "a"]])
def test_help_and_argument_errors_do_not_import_torch(argv):
    probe = ("import runpy, sys\n"
             f"sys.argv = ['predict.py', *{argv!r}]\n"
             "try:\n    runpy.run_path('launch/predict.py', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(sorted(m for m in ('torch', 'open_clip', 'torchvision') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout + done.stderr
