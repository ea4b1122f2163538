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
import logging
import sys
from pathlib import Path

from kiclip.science.teacher import (
    DEFAULT_OUT,
    FrameSetSettings,
    TeacherSettings,
    pretrain_teacher,
)
from shard_tools.synthetic_world import (
    SCIENCE_OBJECT_RADIUS,
    format_radius_range,
    parse_radius_range,
)


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
