"""``inspect_shards.py --decode N``: see what training is fed, through either loader.

Decodes the first N videos of a shard directory in stored order (no shuffle, so both loaders
see the same samples; the clips' windows, crops and flips are still drawn as in training) and
prints one JSON line per clip: ``{"key", "view", "frames": [indices], "shape": [3, T, S, S]}``.
A video gives one clip in train mode and ``--views`` clips in test mode. ``--sheet out.png``
writes a contact sheet: one row per clip (labelled with key, view and class), one column per
frame, after the transforms, de-normalised, frames shown at most SHEET_TILE pixels wide.

Imports stay light at module level so inspect_shards.py --help does not load torch.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from kiclip.cli_args import non_negative_int, positive_int

log = logging.getLogger(__name__)

SHEET_TILE = 96  # frame edge on the contact sheet: a row of T frames stays screen-wide
SHEET_MAX_ROWS = 64  # beyond this the sheet stops being something one looks at
SHEET_LABEL_HEIGHT = 14  # a line of PIL's default font above each row


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
    from kiclip.data import ClipSpec, LoaderSpec, UnsupportedCodecError, build_loader, open_shards

    clip = ClipSpec(num_frames=args.num_frames, stride=args.stride, image_size=args.image_size,
                    num_views=args.views)
    spec = LoaderSpec(mode=args.mode, clip=clip, batch_size=min(args.decode, 8),
                      backend=args.loader, num_workers=1, shuffle=False)
    try:
        loader = build_loader(open_shards(args.directory), spec, seed=args.seed, device="cpu")
    except (UnsupportedCodecError, ImportError) as err:
        log.error("%s", err)
        return 2
    loader.set_epoch(args.epoch)
    clips, labels, shown = [], [], 0
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
            labels.append((key, int(batch["view"][i]), int(batch["label"][i])))
        if shown > args.decode:
            break
    log.info("decoded %d videos: %d clips (%s)", min(shown, args.decode), len(clips),
             "1 per video" if args.mode == "train" else f"{args.views} views per video")
    if loader.skipped:
        log.warning("%d samples failed to decode", loader.skipped)
    if args.sheet and clips:
        names = _class_names(Path(args.directory))
        captions = [f"{key}  view {view}  {label}: {names.get(str(label), '?')}"
                    for key, view, label in labels]
        write_sheet(clips, args.sheet, captions)
    return 0


def _class_names(directory: Path) -> dict[str, str]:
    """{"label": name} from the directory's manifest; empty when it cannot be read."""
    try:
        return dict(json.loads((directory / "manifest.json").read_text()).get("classes", {}))
    except (OSError, ValueError):
        return {}


def write_sheet(clips: list, path: str, captions: list[str] | None = None) -> None:
    """Clips (3, T, S, S) normalised → PNG grid, one row per clip, de-normalised to RGB, each
    row under its caption; the first SHEET_MAX_ROWS clips, frames at most SHEET_TILE px."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image, ImageDraw, ImageFont

    from kiclip.data.sampling import CLIP_MEAN, CLIP_STD

    if len(clips) > SHEET_MAX_ROWS:
        log.info("contact sheet shows the first %d of %d clips", SHEET_MAX_ROWS, len(clips))
    clips = clips[:SHEET_MAX_ROWS]
    captions = (captions or [""] * len(clips))[:len(clips)]
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1, 1)
    tile = min(SHEET_TILE, clips[0].shape[-1])
    rows = []
    for clip in clips:
        frames = (clip * std + mean).clamp(0, 1).permute(1, 0, 2, 3)  # (T, 3, S, S)
        if frames.shape[-1] != tile:
            frames = F.interpolate(frames, size=(tile, tile), mode="area")
        rgb = (frames * 255).round().byte().permute(0, 2, 3, 1)  # (T, tile, tile, 3)
        rows.append(torch.cat(list(rgb), dim=1).numpy())  # (tile, T·tile, 3)
    font = ImageFont.load_default()
    width = max([row.shape[1] for row in rows] + [int(font.getlength(c)) + 4 for c in captions])
    step = tile + SHEET_LABEL_HEIGHT
    sheet = Image.new("RGB", (width, step * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (row, caption) in enumerate(zip(rows, captions)):
        draw.text((2, r * step + 1), caption, fill="black", font=font)
        sheet.paste(Image.fromarray(np.ascontiguousarray(row)), (0, r * step + SHEET_LABEL_HEIGHT))
    sheet.save(path)
    log.info("contact sheet (%d clips, %dx%d px) written to %s", len(rows), *sheet.size, path)
