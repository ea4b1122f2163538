"""Display rotation: which way up a video's decoded frames are meant to be shown.

Phones record portrait video as landscape frames plus a display matrix (mp4/mov ``tkhd``, the
Matroska projection, or an old-style ``rotate`` tag) telling players to turn each frame. PyAV
decodes the frames as stored, so everything that reads pixels for the model turns them itself.

Throughout kiclip a rotation is given in *clockwise* degrees, 0, 90, 180 or 270: how far a player
turns a decoded frame to show it upright (the convention of the ``rotate`` tag, where a portrait
phone video says 90). Kept free of torch and of ``kiclip.data`` so that ``shard_tools`` can share
it without importing either.
"""
from __future__ import annotations

import numpy as np

ROTATIONS = (0, 90, 180, 270)


class RotationError(ValueError):
    """A display matrix that turns the picture by an angle other than a multiple of 90°."""


def display_rotation(frame, stream) -> int:
    """Clockwise degrees (one of ``ROTATIONS``) a player turns this video's frames by.

    ``frame`` is a decoded PyAV VideoFrame and ``stream`` its stream. The display matrix ffmpeg
    attaches to decoded frames wins (PyAV's ``frame.rotation`` is counterclockwise, hence the
    sign); a stream without one may still carry the legacy ``rotate`` tag (clockwise). Raises
    RotationError for any angle that is not a multiple of 90°.
    """
    counterclockwise = frame.rotation
    if counterclockwise:
        return normalise_rotation(-counterclockwise)
    tags = {k.lower(): v for k, v in (stream.metadata or {}).items()}
    tag = tags.get("rotate")
    if tag is None:
        return 0
    try:
        degrees = float(tag)
    except ValueError as exn:
        raise RotationError(f"rotate tag {tag!r} is not a number of degrees") from exn
    return normalise_rotation(degrees)


def normalise_rotation(degrees: float) -> int:
    """``degrees`` (any sign, any turn count) → one of ``ROTATIONS``; RotationError otherwise."""
    turns = round(degrees / 90)
    if abs(degrees - 90 * turns) > 1:
        raise RotationError(f"the display matrix turns the picture by {degrees:g}°; only "
                            "multiples of 90° are supported")
    return (90 * turns) % 360


def rotate_upright(frames: np.ndarray, rotation: int) -> np.ndarray:
    """Turn frames (..., H, W, C) clockwise by ``rotation`` degrees: (..., H, W, C) for 0/180,
    (..., W, H, C) for 90/270. Returns a view when there is nothing to copy."""
    if rotation not in ROTATIONS:
        raise RotationError(f"rotation must be one of {ROTATIONS}, got {rotation!r}")
    return np.rot90(frames, k=-rotation // 90, axes=(-3, -2)) if rotation else frames


def upright_size(height: int, width: int, rotation: int) -> tuple[int, int]:
    """(height, width) of a frame of the given coded size once turned by ``rotation``."""
    return (width, height) if rotation in (90, 270) else (height, width)
