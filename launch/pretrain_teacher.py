#!/usr/bin/env python
"""Pre-train the tiny CLIP teacher of the synthetic world (no weights can be downloaded here).

Examples:
  python launch/pretrain_teacher.py --synthetic                     # → cache/teacher/kiclip-tiny.pt
  python launch/pretrain_teacher.py --synthetic --steps 200 --out /tmp/t.pt
  python launch/train.py --b2n synthetic --data SHARDS --pretrained cache/teacher/kiclip-tiny.pt

Renders single frames of all 48 classes of the synthetic world (with a fading tail behind the
moving object by default, so one frame shows which way it moves), captions each frame
web-style with attributes dropped at random ("a red circle moving left", "a circle", "a red
shape moving left", ...), and trains `kiclip-tiny` contrastively with open_clip's ClipLoss,
the text tower held at its random init for the first --text-freeze-steps (without that it
learns colour only). Writes a plain open_clip state dict (loadable by --pretrained) and
OUT.json with the settings, the cache key and the zero-shot accuracy on held-out frames. A
second run with the same settings reuses the file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shard_tools.synthetic_world import (  # noqa: E402  (after the path set-up)
    SCIENCE_OBJECT_RADIUS,
    format_radius_range,
    parse_radius_range,
)

log = logging.getLogger("kiclip.pretrain_teacher")

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
    optim: dict = field(default_factory=dict)   # kiclip.pretrain.PretrainSettings fields

    def key(self) -> str:
        """Cache key: a hash of everything that determines the weights."""
        from kiclip.pretrain import PretrainSettings

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
    """Train (or reuse) the teacher at ``out``; returns the record written to OUT.json."""
    import torch

    from kiclip.model import create_clip
    from kiclip.pretrain import (
        PretrainSettings,
        frames_to_tensor,
        pretrain_clip,
        zero_shot_accuracy,
    )
    from kiclip.text import ALL_TEMPLATES
    from shard_tools.synthetic_world import COLOURS, DIRECTIONS, SHAPES, all_classes

    record_path = out.with_suffix(out.suffix + ".json")
    key = settings.key()
    if not force and out.is_file() and record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("key") == key:
            log.info("reusing cached teacher %s (key %s, zero-shot %.1f%% on held-out frames)",
                     out, key, record["zero_shot"]["all"])
            record["reused"] = True
            return record
        log.info("%s exists with other settings (key %s, want %s): training again",
                 out, record.get("key"), key)

    started = time.perf_counter()
    torch.manual_seed(settings.seed)
    fs = settings.frame_set
    train_frames, train_labels = render_frame_set(fs, settings.seed, 0, fs.clips_per_class,
                                                  fs.frames_per_clip)
    test_frames, test_labels = render_frame_set(fs, settings.seed, 1, fs.heldout_per_class, 1)
    classes = all_classes()
    attributes = [(COLOURS[classes[y].colour], SHAPES[classes[y].shape],
                   DIRECTIONS[classes[y].direction]) for y in train_labels]
    images = frames_to_tensor(train_frames, settings.image_size)
    log.info("rendered %d training and %d held-out frames in %.1f s", len(images),
             len(test_frames), time.perf_counter() - started)

    model, tokenizer = create_clip(settings.model, vision_cfg={"image_size": settings.image_size})
    optim = PretrainSettings(**settings.optim)
    stats = pretrain_clip(model, tokenizer, images, attributes, optim, seed=settings.seed,
                          progress=progress)

    test_images = frames_to_tensor(test_frames, settings.image_size)
    correct = zero_shot_accuracy(model, tokenizer, test_images, torch.from_numpy(test_labels),
                                 [a.name for a in classes], ALL_TEMPLATES)
    is_base = torch.tensor([(classes[y].colour + classes[y].shape) % 2 == 0 for y in test_labels])
    zero_shot = {"all": 100 * correct.float().mean().item(),
                 "base_classes": 100 * correct[is_base].float().mean().item(),
                 "novel_classes": 100 * correct[~is_base].float().mean().item(),
                 "frames": len(test_labels), "classes": len(classes),
                 "note": "single frames, 48-way, all 29 templates"}

    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(out.suffix + ".partial")
    torch.save(model.state_dict(), partial)
    partial.replace(out)
    record = {"key": key, "settings": asdict(settings), "optim": asdict(optim),
              "training": stats, "zero_shot": zero_shot,
              "wall_s": time.perf_counter() - started, "torch_threads": torch.get_num_threads(),
              "command": " ".join(sys.argv)}
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    log.info("teacher: %d steps in %.0f s, loss %.3f → %.3f; zero-shot on %d held-out frames "
             "(48-way): %.1f%% (base classes %.1f%%, novel classes %.1f%%) → %s",
             stats["steps"], stats["seconds"], stats["first_loss"], stats["last_loss"],
             len(test_labels), zero_shot["all"], zero_shot["base_classes"],
             zero_shot["novel_classes"], out)
    record["reused"] = False
    return record


def _keep_probabilities(text: str) -> tuple[float, float, float]:
    try:
        keep = tuple(float(x) for x in text.split(","))
    except ValueError:
        keep = ()
    if len(keep) != 3 or not all(0.0 < k <= 1.0 for k in keep):
        raise argparse.ArgumentTypeError(f"expected three probabilities in (0, 1], e.g. 0.5,0.8,0.8; "
                                         f"got {text!r}")
    return keep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pretrain_teacher.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true", required=True,
                        help="pre-train on the synthetic world (the only source so far)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"weights file (default {DEFAULT_OUT})")
    parser.add_argument("--steps", type=int, default=400,
                        help="optimiser steps (default 400: about 2 minutes with rendering on "
                        "2 quiet cores, 5-8 on a busy machine)")
    parser.add_argument("--batching", choices=("random", "clean"), default="random",
                        help="random (default): --batch-size random frames; clean: no caption in a "
                        "batch describes another frame of it (no false negatives, ~24 frames)")
    parser.add_argument("--text-freeze-steps", type=int, default=120,
                        help="keep the text tower at its random init for the first N steps "
                        "(default 120; with 0 the teacher learns colour only, see docs/science.md)")
    parser.add_argument("--minutes", type=float, default=0.0,
                        help="wall-time cap: stop early if reached (default: none; the step count "
                        "decides, so the weights do not depend on the machine's speed)")
    parser.add_argument("--batch-size", type=int, default=128, help="frames per step (default 128)")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (default 2e-3)")
    parser.add_argument("--clips-per-class", type=int, default=FrameSetSettings.clips_per_class)
    parser.add_argument("--frames-per-clip", type=int, default=FrameSetSettings.frames_per_clip)
    parser.add_argument("--heldout-per-class", type=int, default=FrameSetSettings.heldout_per_class)
    parser.add_argument("--no-trails", action="store_true",
                        help="frames without motion trails (direction is then invisible)")
    parser.add_argument("--object-radius", type=parse_radius_range,
                        default=format_radius_range(SCIENCE_OBJECT_RADIUS), metavar="LOW,HIGH",
                        help="object radius range as make_synthetic takes it (default "
                        f"{format_radius_range(SCIENCE_OBJECT_RADIUS)}, the science check's world)")
    parser.add_argument("--keep", type=_keep_probabilities, default="0.5,0.8,0.8",
                        metavar="C,S,D", help="probability that a caption keeps the colour, shape, "
                        "direction (default 0.5,0.8,0.8)")
    parser.add_argument("--image-size", type=int, default=32,
                        help="input size (default 32, the `synthetic` preset's; 48 for `science`)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: tiny matrices, and a shared machine)")
    parser.add_argument("--force", action="store_true", help="train even if a cached teacher fits")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def settings_from_args(args: argparse.Namespace) -> TeacherSettings:
    fs = FrameSetSettings(clips_per_class=args.clips_per_class, frames_per_clip=args.frames_per_clip,
                          heldout_per_class=args.heldout_per_class, trails=not args.no_trails,
                          object_radius=args.object_radius)
    freeze = args.text_freeze_steps
    optim = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "keep": args.keep,
             "batching": args.batching, "text_freeze_steps": freeze,
             "warmup_steps": min(100, max(1, args.steps // 10)),
             "max_seconds": 60.0 * args.minutes}
    return TeacherSettings(seed=args.seed, frame_set=fs, optim=optim, image_size=args.image_size)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    record = pretrain_teacher(Path(args.out), settings_from_args(args),
                              progress=not args.no_progress, force=args.force)
    zs = record["zero_shot"]
    print(f"teacher {args.out}: zero-shot {zs['all']:.1f}% on held-out frames "
          f"({'reused' if record['reused'] else 'trained'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
