"""What training is fed, for a person to look at: the clips of a shard directory's first videos
as a loader yields them, and a contact sheet of them (``inspect_shards.py --decode N``).

A video gives one clip in train mode and one per view in test mode. The contact sheet has one
row per clip (labelled with key, view and class), one column per frame, after the transforms,
de-normalised, frames shown at most SHEET_TILE pixels wide.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

log = logging.getLogger(__name__)

SHEET_TILE = 96  # frame edge on the contact sheet: a row of T frames stays screen-wide
SHEET_MAX_ROWS = 64  # beyond this the sheet stops being something one looks at
SHEET_LABEL_HEIGHT = 14  # a line of PIL's default font above each row


class PreviewClip(NamedTuple):
    """One decoded clip: its sample key, view, label, frame indices long (T,) and float
    (3, T, S, S) normalised video."""

    key: str
    view: int
    label: int
    frames: Any
    video: Any


def first_video_clips(batches: Iterable[dict], videos: int) -> Iterator[PreviewClip]:
    """The valid clips of the first ``videos`` videos in ``batches`` (a loader's batches, in
    its order): one per video in train mode, every view in test mode. Stops reading at the
    first clip of the next video."""
    shown = 0
    for batch in batches:
        for i, key in enumerate(batch["key"]):
            if not batch["valid"][i]:
                continue
            view = int(batch["view"][i])
            if view == 0:
                shown += 1
            if shown > videos:
                return
            yield PreviewClip(key, view, int(batch["label"][i]), batch["frames"][i],
                              batch["video"][i])


def class_names(directory: str | Path) -> dict[str, str]:
    """{"label": name} from the directory's manifest; empty when it cannot be read."""
    try:
        return dict(json.loads((Path(directory) / "manifest.json").read_text()).get("classes", {}))
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
