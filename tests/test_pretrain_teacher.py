"""The synthetic-world teacher (kiclip.science.teacher, launch/pretrain_teacher.py): a tiny
budget writes a loadable open_clip checkpoint, the cache is reused for the same settings and
refreshed for other ones; captions drop attributes; the command line's defaults are the
library's."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from kiclip.science.teacher import FrameSetSettings, TeacherSettings, pretrain_teacher

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    """launch/pretrain_teacher.py as a module, for the tests of its command line."""
    spec = importlib.util.spec_from_file_location("pretrain_teacher", REPO / "launch" / "pretrain_teacher.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny(steps=2):
    # short clips and one frame per class: rendering is most of this test's time
    frame_set = FrameSetSettings(clips_per_class=1, frames_per_clip=1, heldout_per_class=1, frames=8)
    return TeacherSettings(frame_set=frame_set,
                           optim={"steps": steps, "batch_size": 16, "warmup_steps": 1})


def test_tiny_budget_writes_loadable_checkpoint_and_reuses_cache(tmp_path):
    from kiclip.model import create_clip

    out = tmp_path / "teacher.pt"
    first = pretrain_teacher(out, _tiny(), progress=False)
    assert not first["reused"] and out.is_file()
    record = json.loads(out.with_suffix(".pt.json").read_text())
    assert record["key"] == first["key"] and record["training"]["steps"] == 2
    assert 0.0 <= record["zero_shot"]["all"] <= 100.0 and record["zero_shot"]["frames"] == 48

    model, tokenizer = create_clip("kiclip-tiny", out)  # strict load: every key, every shape
    assert tokenizer(["a red circle"]).shape == (1, model.context_length)

    stamp = out.stat().st_mtime_ns
    again = pretrain_teacher(out, _tiny(), progress=False)
    assert again["reused"] and out.stat().st_mtime_ns == stamp

    other = pretrain_teacher(out, _tiny(steps=3), progress=False)
    assert not other["reused"] and other["key"] != first["key"]


def test_web_captions_drop_attributes_but_never_everything():
    from kiclip.science.pretrain import web_caption

    rng = np.random.default_rng(0)
    captions = {web_caption("red", "circle", "left", rng) for _ in range(300)}
    assert any("red" in c and "circle" in c and "left" in c for c in captions)
    assert any("red" not in c for c in captions) and any("left" not in c for c in captions)
    assert any("circle" not in c for c in captions)
    content = ("red", "circle", "left")
    assert all(any(word in c for word in content) for c in captions)


def test_clean_batches_have_no_false_negatives():
    from kiclip.science.pretrain import clean_batch
    from shard_tools.synthetic_world import COLOURS, DIRECTIONS, SHAPES, all_classes

    attributes = [(COLOURS[a.colour], SHAPES[a.shape], DIRECTIONS[a.direction])
                  for a in all_classes()] * 20
    rng = np.random.default_rng(0)
    for _ in range(20):
        index, captions = clean_batch(attributes, rng, (0.5, 0.8, 0.8), 128)
        assert 8 <= len(index) == len(captions) <= 48 and len(set(index)) == len(index)
        for i, caption in zip(index, captions):
            words = set(caption.split())
            described = [j for j in index
                         if all(w in (attributes[j]) for w in words & set(COLOURS + SHAPES + DIRECTIONS))]
            assert described == [i], (caption, [attributes[j] for j in described])


def test_command_line_defaults_are_the_library_defaults(script):
    """The cached teacher's key must not depend on how it was asked for."""
    settings = script.settings_from_args(script.build_parser().parse_args(["--synthetic"]))
    assert settings.key() == TeacherSettings(optim={
        "steps": 400, "batch_size": 128, "lr": 2e-3, "warmup_steps": 40, "max_seconds": 0.0}).key()
    clean = script.settings_from_args(script.build_parser().parse_args(["--synthetic", "--batching", "clean"]))
    assert clean.key() != settings.key()


def test_text_tower_stays_at_init_while_frozen_then_trains():
    import torch

    from kiclip.model import create_clip
    from kiclip.science.pretrain import PretrainSettings, pretrain_clip

    torch.manual_seed(0)
    model, tokenizer = create_clip("kiclip-tiny")
    images = torch.randn(32, 3, 32, 32)
    attributes = [("red", "circle", "left"), ("blue", "square", "up")] * 16
    text_before = model.token_embedding.weight.detach().clone()
    visual_before = model.visual.conv1.weight.detach().clone()
    frozen = PretrainSettings(steps=3, batch_size=8, warmup_steps=1, text_freeze_steps=3)
    pretrain_clip(model, tokenizer, images, attributes, frozen, progress=False)
    assert torch.equal(model.token_embedding.weight, text_before)
    assert not torch.equal(model.visual.conv1.weight, visual_before)
    thawed = PretrainSettings(steps=3, batch_size=8, warmup_steps=1, text_freeze_steps=1)
    pretrain_clip(model, tokenizer, images, attributes, thawed, progress=False)
    assert not torch.equal(model.token_embedding.weight, text_before)
