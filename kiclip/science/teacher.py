"""The synthetic world's teacher: a tiny CLIP pre-trained on captioned single frames.

Renders single frames of all 48 classes of the synthetic world (``shard_tools.synthetic_world``,
with a fading tail behind the moving object by default, so one frame shows which way it moves),
trains ``kiclip-tiny`` on them with ``kiclip.science.pretrain.pretrain_clip`` and measures its
zero-shot accuracy on held-out frames. ``pretrain_teacher`` writes a plain open_clip state dict
(loadable by ``train.py --pretrained``) and ``OUT.json`` with the settings, the cache key and
the accuracy; a second call with the same settings reuses the file. The weights depend only on
the settings: the same settings give bit-identical weights (single-threaded torch).
``launch/pretrain_teacher.py`` is its command line.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from shard_tools.b2n import is_synthetic_base
from shard_tools.synthetic_world import SCIENCE_OBJECT_RADIUS

# torch, open_clip and the model are imported where they are used, so that the command line's
# --help and argument errors answer at once.

log = logging.getLogger(__name__)

DEFAULT_OUT = "cache/teacher/kiclip-tiny.pt"
FORMAT_VERSION = 3  # bump when the recipe changes in a way the settings do not show
# (3: trails drawn in radii behind the object, not frames back along the path)


@dataclass
class FrameSetSettings:
    """The rendered frames; match the clips the experiment trains on (make_synthetic)."""

    clips_per_class: int = 40      # training clips per class
    frames_per_clip: int = 4       # frames drawn from each clip
    heldout_per_class: int = 10    # held-out clips per class (1 frame each) for zero-shot
    size: int = 48                 # render size (make_synthetic --size)
    frames: int = 24               # clip length (sets the speed, as make_synthetic --frames)
    trails: bool = True            # make_synthetic --trails
    object_radius: tuple[float, float] = SCIENCE_OBJECT_RADIUS  # make_synthetic --object-radius


@dataclass
class TeacherSettings:
    model: str = "kiclip-tiny"
    image_size: int = 32
    seed: int = 0
    frame_set: FrameSetSettings = field(default_factory=FrameSetSettings)
    optim: dict = field(default_factory=dict)   # kiclip.science.pretrain.PretrainSettings fields

    def key(self) -> str:
        """Cache key: a hash of everything that determines the weights."""
        from kiclip.science.pretrain import PretrainSettings

        optim = asdict(PretrainSettings(**self.optim))  # defaults too
        full = {**asdict(self), "optim": optim}
        blob = json.dumps({"v": FORMAT_VERSION, **full}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def render_frame_set(fs: FrameSetSettings, seed: int, stream: int, per_class: int,
                     frames_per_clip: int):
    """uint8 frames (N, H, W, 3), class indices (N,), drawn from clips of every class.

    Clip seeds are (seed, 100 + stream, class, clip), disjoint from make_synthetic's
    (seed, 0|1, class, clip), so teacher frames never come from the experiment's videos.
    """
    import numpy as np

    from shard_tools.synthetic_world import all_classes, render_clip

    frames, labels = [], []
    for action in all_classes():
        for n in range(per_class):
            rng = np.random.default_rng(np.random.SeedSequence([seed, 100 + stream, action.index, n]))
            clip = render_clip(action, rng, fs.size, fs.frames, fs.trails, fs.object_radius)
            picks = rng.choice(fs.frames, size=frames_per_clip, replace=False)
            frames.append(clip[np.sort(picks)])
            labels += [action.index] * frames_per_clip
    return np.concatenate(frames), np.array(labels)


def pretrain_teacher(out: Path, settings: TeacherSettings, progress: bool = True,
                     force: bool = False) -> dict:
    """Train (or reuse) the teacher at ``out``; returns the record written to OUT.json, with
    ``"reused"`` added (True when the cached weights fit ``settings``)."""
    import torch

    from kiclip.model import create_clip
    from kiclip.science.pretrain import PretrainSettings, frames_to_tensor, pretrain_clip

    key = settings.key()
    if not force and (record := _cached_record(out, key)) is not None:
        return record

    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    fs = settings.frame_set
    train_frames, train_labels = render_frame_set(fs, settings.seed, 0, fs.clips_per_class,
                                                  fs.frames_per_clip)
    test_frames, test_labels = render_frame_set(fs, settings.seed, 1, fs.heldout_per_class, 1)
    images = frames_to_tensor(train_frames, settings.image_size)
    log.info("rendered %d training and %d held-out frames in %.1f s", len(images),
             len(test_frames), time.perf_counter() - started)

    model, tokenizer = create_clip(settings.model, vision_cfg={"image_size": settings.image_size})
    optim = PretrainSettings(**settings.optim)
    stats = pretrain_clip(model, tokenizer, images, attribute_words(train_labels), optim,
                          seed=settings.seed, progress=progress)
    zero_shot = heldout_zero_shot(model, tokenizer, frames_to_tensor(test_frames, settings.image_size),
                                  test_labels)

    _save_atomically(model.state_dict(), out)
    record = {"key": key, "settings": asdict(settings), "optim": asdict(optim),
              "training": stats, "zero_shot": zero_shot,
              "wall_s": time.perf_counter() - started, "torch_threads": torch.get_num_threads(),
              "command": " ".join(sys.argv)}
    _record_path(out).write_text(json.dumps(record, indent=2) + "\n")
    log.info("teacher: %d steps in %.0f s, loss %.3f → %.3f; zero-shot on %d held-out frames "
             "(48-way): %.1f%% (base classes %.1f%%, novel classes %.1f%%) → %s",
             stats["steps"], stats["seconds"], stats["first_loss"], stats["last_loss"],
             len(test_labels), zero_shot["all"], zero_shot["base_classes"],
             zero_shot["novel_classes"], out)
    record["reused"] = False
    return record


def _record_path(out: Path) -> Path:
    return out.with_suffix(out.suffix + ".json")


def _cached_record(out: Path, key: str) -> dict | None:
    """The record of the teacher at ``out`` when it was trained with cache key ``key``, with
    ``"reused": True``; None when there is none or it has other settings."""
    record_path = _record_path(out)
    if not (out.is_file() and record_path.is_file()):
        return None
    record = json.loads(record_path.read_text())
    if record.get("key") != key:
        log.info("%s exists with other settings (key %s, want %s): training again",
                 out, record.get("key"), key)
        return None
    log.info("reusing cached teacher %s (key %s, zero-shot %.1f%% on held-out frames)",
             out, key, record["zero_shot"]["all"])
    record["reused"] = True
    return record


def attribute_words(labels) -> list[tuple[str, str, str]]:
    """(colour, shape, direction) words of each class index in ``labels``: what captions say."""
    from shard_tools.synthetic_world import COLOURS, DIRECTIONS, SHAPES, all_classes

    classes = all_classes()
    return [(COLOURS[classes[y].colour], SHAPES[classes[y].shape],
             DIRECTIONS[classes[y].direction]) for y in labels]


def heldout_zero_shot(model, tokenizer, images, labels) -> dict:
    """Zero-shot top-1 % of ``model`` on held-out frames (N, 3, S, S) with class indices ``labels``
    (N,), 48-way with every template: overall and on the base / novel classes of the B2N split."""
    import torch

    from kiclip.science.pretrain import zero_shot_accuracy
    from kiclip.text import ALL_TEMPLATES
    from shard_tools.synthetic_world import all_classes

    classes = all_classes()
    correct = zero_shot_accuracy(model, tokenizer, images, torch.from_numpy(labels),
                                 [a.name for a in classes], ALL_TEMPLATES)
    is_base = torch.tensor([is_synthetic_base(classes[y].colour, classes[y].shape) for y in labels])
    return {"all": 100 * correct.float().mean().item(),
            "base_classes": 100 * correct[is_base].float().mean().item(),
            "novel_classes": 100 * correct[~is_base].float().mean().item(),
            "frames": len(labels), "classes": len(classes),
            "note": "single frames, 48-way, all 29 templates"}


def _save_atomically(state_dict: dict, out: Path) -> None:
    """torch.save to OUT.partial, then rename: a crash never leaves a half-written OUT."""
    import torch

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(out.suffix + ".partial")
    torch.save(state_dict, partial)
    partial.replace(out)
