"""``inspect_shards.py --decode N``: see what training is fed, through either loader.

Decodes the first N clips of a shard directory in stored order (no shuffle, so both loaders
see the same samples; the clips' windows, crops and flips are still drawn as in training) and
prints one JSON line per clip: ``{"key", "view", "frames": [indices], "shape": [3, T, S, S]}``.
``--sheet out.png`` writes a contact sheet: one row per clip, one column per frame, after the
transforms, de-normalised.

Imports stay light at module level so inspect_shards.py --help does not load torch.
"""
from __future__ import annotations

import argparse
import json
import logging

log = logging.getLogger(__name__)


def add_decode_options(parser: argparse.ArgumentParser) -> None:
    """Add the --decode options to ``parser`` (inspect_shards.py calls this)."""
    g = parser.add_argument_group("decode clips (what the model sees)")
    g.add_argument("--decode", type=int, default=0, metavar="N",
                   help="decode N clips through a loader and print one JSON line per clip")
    g.add_argument("--loader", choices=["dali", "torch"], default="torch",
                   help="dali: the DALI pipeline; torch: the webdataset + PyAV fallback")
    g.add_argument("--mode", choices=["train", "test"], default="train",
                   help="train: random window/crop/flip; test: every view, centre crop")
    g.add_argument("--seed", type=int, default=0, help="sampling seed (same seed, same clips)")
    g.add_argument("--epoch", type=int, default=0, help="epoch the clips are drawn for")
    g.add_argument("--num-frames", type=int, default=8, help="frames per clip T")
    g.add_argument("--stride", type=int, default=16, help="frame stride s")
    g.add_argument("--image-size", type=int, default=224, help="crop size S")
    g.add_argument("--sheet", default=None, metavar="PNG",
                   help="write a contact sheet of the decoded clips to this PNG")


def run_decode(args: argparse.Namespace) -> int:
    """Decode ``args.decode`` clips from ``args.directory``; print JSON lines; 0 on success,
    2 when the loader cannot read the shards' codecs (or DALI is missing for --loader dali)."""
    from kiclip.data import UnsupportedCodecError, build_loader

    try:
        loader = build_loader(args.directory, mode=args.mode, batch_size=min(args.decode, 8),
                              num_frames=args.num_frames, stride=args.stride,
                              image_size=args.image_size, seed=args.seed, backend=args.loader,
                              device="cpu", num_workers=1, shuffle=False)
    except (UnsupportedCodecError, ImportError) as err:
        log.error("%s", err)
        return 2
    loader.set_epoch(args.epoch)
    clips, shown = [], 0
    for batch in loader:
        for i, key in enumerate(batch["key"]):
            if not batch["valid"][i]:
                continue
            if batch["view"][i] == 0:
                shown += 1
            if shown > args.decode:
                break
            video = batch["video"][i]
            print(json.dumps({"key": key, "view": int(batch["view"][i]),
                              "frames": batch["frames"][i].tolist(),
                              "shape": list(video.shape)}))
            clips.append(video.float())
        if shown > args.decode:
            break
    if loader.skipped:
        log.warning("%d samples failed to decode", loader.skipped)
    if args.sheet and clips:
        write_sheet(clips, args.sheet)
    return 0


def write_sheet(clips: list, path: str) -> None:
    """Clips (3, T, S, S) normalised → PNG grid, one row per clip, de-normalised to RGB."""
    import numpy as np
    import torch
    from PIL import Image

    from kiclip.data.sampling import CLIP_MEAN, CLIP_STD

    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1, 1)
    rows = []
    for clip in clips:
        rgb = ((clip * std + mean).clamp(0, 1) * 255).round().byte()  # (3, T, S, S)
        rows.append(torch.cat(list(rgb.permute(1, 2, 3, 0)), dim=1))  # (S, T·S, 3)
    Image.fromarray(np.ascontiguousarray(torch.cat(rows, dim=0).numpy())).save(path)
    log.info("contact sheet (%d clips) written to %s", len(clips), path)
