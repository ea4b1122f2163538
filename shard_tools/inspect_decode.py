"""``inspect_shards.py --decode N``: see what training is fed, through either loader.

Decodes the first N videos of a shard directory in stored order (no shuffle, so both loaders
see the same samples; the clips' windows, crops and flips are still drawn as in training) and
prints one JSON line per clip: ``{"key", "view", "frames": [indices], "shape": [3, T, S, S]}``.
``--sheet out.png`` writes a contact sheet of them (``kiclip.data.preview.write_sheet``).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from kiclip.data.preview import SHEET_MAX_ROWS, SHEET_TILE
from shard_tools.cli_common import non_negative_int, positive_int

log = logging.getLogger(__name__)


def add_decode_options(parser: argparse.ArgumentParser) -> None:
    """Add the --decode options to ``parser`` (inspect_shards.py calls this)."""
    g = parser.add_argument_group("decode clips (what the model sees)")
    g.add_argument("--decode", type=non_negative_int, default=0, metavar="N",
                   help="decode the first N videos through a loader and print one JSON line per "
                        "clip (N clips in train mode, N x --views in test mode); 0: off")
    g.add_argument("--loader", choices=["dali", "torch"], default="torch",
                   help="dali: the DALI pipeline; torch: the webdataset + PyAV fallback")
    g.add_argument("--mode", choices=["train", "test"], default="train",
                   help="train: random window/crop/flip; test: every view, centre crop")
    g.add_argument("--views", type=positive_int, default=3,
                   help="test mode: temporal views per video")
    g.add_argument("--seed", type=non_negative_int, default=0,
                   help="sampling seed (same seed, same clips)")
    g.add_argument("--epoch", type=non_negative_int, default=0,
                   help="epoch the clips are drawn for")
    g.add_argument("--num-frames", type=positive_int, default=8, help="frames per clip T")
    g.add_argument("--stride", type=positive_int, default=16, help="frame stride s")
    g.add_argument("--image-size", type=positive_int, default=224, help="crop size S")
    g.add_argument("--sheet", default=None, metavar="PNG",
                   help="with --decode: write a contact sheet of the decoded clips to this PNG "
                        f"(first {SHEET_MAX_ROWS} clips, frames at most {SHEET_TILE} px)")


def decode_option_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the decode options, found before any decoding; None if nothing."""
    if args.sheet and not args.decode:
        return "--sheet shows decoded clips: add --decode N"
    if args.sheet:
        folder = Path(args.sheet).resolve().parent
        if not folder.is_dir():
            return f"--sheet {args.sheet}: folder {folder} does not exist"
    return None


def run_decode(args: argparse.Namespace) -> int:
    """Decode ``args.decode`` videos from ``args.directory``; print JSON lines; 0 on success,
    2 when the loader cannot read the shards' codecs (or DALI is missing for --loader dali)."""
    from kiclip.data import (
        ClipSpec,
        DaliNotInstalledError,
        LoaderSpec,
        UnsupportedCodecError,
        build_loader,
        open_shards,
    )
    from kiclip.data.preview import class_names, first_video_clips, write_sheet

    clip = ClipSpec(num_frames=args.num_frames, stride=args.stride, image_size=args.image_size,
                    num_views=args.views)
    spec = LoaderSpec(mode=args.mode, clip=clip, batch_size=min(args.decode, 8),
                      backend=args.loader, num_workers=1, shuffle=False)
    try:
        loader = build_loader(open_shards(args.directory), spec, seed=args.seed, device="cpu")
    except (UnsupportedCodecError, DaliNotInstalledError) as err:
        log.error("%s", err)
        return 2
    loader.set_epoch(args.epoch)
    clips = []
    for clip in first_video_clips(loader, args.decode):
        print(json.dumps({"key": clip.key, "view": clip.view, "frames": clip.frames.tolist(),
                          "shape": list(clip.video.shape)}))
        clips.append(clip._replace(video=clip.video.float()))
    videos = sum(clip.view == 0 for clip in clips)
    log.info("decoded %d videos: %d clips (%s)", videos, len(clips),
             "1 per video" if args.mode == "train" else f"{args.views} views per video")
    if loader.skipped:
        log.warning("%d samples failed to decode", loader.skipped)
    if args.sheet and clips:
        names = class_names(args.directory)
        captions = [f"{c.key}  view {c.view}  {c.label}: {names.get(str(c.label), '?')}"
                    for c in clips]
        write_sheet([c.video for c in clips], args.sheet, captions)
    return 0
