"""The synthetic action world: 4 colours x 3 shapes x 4 motion directions = 48 classes.

A clip shows one coloured shape moving in one direction over cluttered background (tinted
gradient, pixel noise, a small distractor shape of another colour drifting at random). Class
names are words ("red circle moving left") so a text tower can relate classes compositionally.
Rendering is pure numpy and depends only on the class and the `numpy.random.Generator` passed in,
so a clip is reproducible from its seed no matter which worker process renders it.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

COLOURS = ("red", "green", "blue", "yellow")
# Hue in degrees per colour; jittered per clip so colour is a region, not one value.
COLOUR_HUES = (0.0, 120.0, 225.0, 55.0)
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = ("left", "right", "up", "down")
# (dx, dy) in image coordinates: y grows downwards, so "up" is -y.
DIRECTION_VECTORS = ((-1.0, 0.0), (1.0, 0.0), (0.0, -1.0), (0.0, 1.0))

CLASS_INDEX_RULE = "(colour * n_shapes + shape) * n_directions + direction"

# The moving object's radius as a fraction of the frame edge, drawn per clip.
OBJECT_RADIUS = (0.09, 0.14)
# The science check's world (experiment_b2n, pretrain_teacher): a shape then spans more than one
# 8-px patch of kiclip-tiny at 32 px.
SCIENCE_OBJECT_RADIUS = (0.16, 0.22)


@dataclass(frozen=True)
class ActionClass:
    """One class of the world: attribute indices into COLOURS, SHAPES, DIRECTIONS."""

    colour: int
    shape: int
    direction: int

    @property
    def index(self) -> int:
        """Class index, as docs/CONTRACTS.md fixes it."""
        return class_index(self.colour, self.shape, self.direction)

    @property
    def name(self) -> str:
        """E.g. "red circle moving left"."""
        return (
            f"{COLOURS[self.colour]} {SHAPES[self.shape]} moving {DIRECTIONS[self.direction]}"
        )

    @property
    def slug(self) -> str:
        """Folder-safe name, e.g. "red_circle_moving_left"."""
        return self.name.replace(" ", "_")


def class_index(colour: int, shape: int, direction: int) -> int:
    """(colour * n_shapes + shape) * n_directions + direction."""
    return (colour * len(SHAPES) + shape) * len(DIRECTIONS) + direction


def all_classes() -> list[ActionClass]:
    """All 48 classes, position i holding class index i."""
    classes = [
        ActionClass(c, s, d)
        for c in range(len(COLOURS))
        for s in range(len(SHAPES))
        for d in range(len(DIRECTIONS))
    ]
    assert [a.index for a in classes] == list(range(len(classes)))
    return classes


def check_radius_range(object_radius) -> tuple[float, float]:
    """(low, high) as floats, or ValueError: the object must fit the frame (0 < low <= high <= 0.25)."""
    low, high = (float(x) for x in object_radius)
    if not 0.0 < low <= high <= 0.25:
        raise ValueError(f"object_radius must satisfy 0 < LOW <= HIGH <= 0.25, got {low},{high}")
    return low, high


def parse_radius_range(text: str) -> tuple[float, float]:
    """"LOW,HIGH" (fractions of the frame edge) → (low, high); the type of --object-radius."""
    import argparse

    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 0.16,0.22), got {text!r}") from None
    try:
        return check_radius_range((low, high))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def format_radius_range(object_radius) -> str:
    """(low, high) → "LOW,HIGH", as --object-radius takes it."""
    return ",".join(str(float(x)) for x in object_radius)


def world_description() -> dict:
    """The attribute lists and, per class index, its attribute indices (world.json's core)."""
    return {
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
        "directions": list(DIRECTIONS),
        "class_index_rule": CLASS_INDEX_RULE,
        "classes": {
            str(a.index): {
                "name": a.name,
                "colour": a.colour,
                "shape": a.shape,
                "direction": a.direction,
            }
            for a in all_classes()
        },
    }


def render_clip(
    action: ActionClass,
    rng: np.random.Generator,
    size: int = 64,
    frames: int = 32,
    trails: bool = False,
    object_radius: tuple[float, float] = OBJECT_RADIUS,
) -> np.ndarray:
    """Render one clip of `action`: uint8 RGB frames, shape (frames, size, size, 3).

    `size` must be even (video encoders need even edges). The object stays inside the frame for
    the whole clip; speed, size, hue, start position, background and distractor are drawn from
    `rng`; `object_radius` is the (low, high) range of the object's radius as a fraction of the
    edge. With `trails`, a fading tail of copies behind the object (0.5, 1 and 1.5 radii back
    along the motion) makes one frame show which way it moves.
    """
    if size % 2 or size < 16:
        raise ValueError(f"size must be even and >= 16, got {size}")
    low, high = check_radius_range(object_radius)
    if frames < 2:
        raise ValueError(f"frames must be >= 2, got {frames}")
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    background = _background(rng, size, xs, ys)
    # Noise is drawn first (fixed order of draws keeps clips reproducible) and the background
    # added in place: one full-size pass instead of three.
    video = rng.standard_normal((frames, size, size, 3), dtype=np.float32)
    video *= np.float32(rng.uniform(3.0, 9.0))
    video += background

    # The distractor: smaller, another colour, a random walk that bounces off the edges.
    other = (action.colour + int(rng.integers(1, len(COLOURS)))) % len(COLOURS)
    d_radius = size * rng.uniform(0.05, 0.08)
    d_path = _random_walk(rng, size, frames, d_radius)
    _paint(video, xs, ys, int(rng.integers(len(SHAPES))), d_path, d_radius,
           _colour_rgb(other, rng), np.ones(frames, np.float32))

    radius = size * rng.uniform(low, high)
    path = _straight_path(rng, size, frames, radius, DIRECTION_VECTORS[action.direction])
    rgb = _colour_rgb(action.colour, rng)
    if trails:
        # A tail set in radii, not in frames: the world's speeds (under 1 px per frame at
        # 48 px) would leave copies a few frames back hidden under the object itself, and a
        # 32-px model could not see which side the tail is on.
        back = -np.asarray(DIRECTION_VECTORS[action.direction], np.float32)
        for offset, alpha in ((1.5, 0.15), (1.0, 0.3), (0.5, 0.45)):
            _paint(video, xs, ys, action.shape, path + back * (offset * radius), radius, rgb,
                   np.full(frames, alpha, np.float32))
    _paint(video, xs, ys, action.shape, path, radius, rgb, np.ones(frames, np.float32))

    video += 0.5  # round half up while casting
    return np.clip(video, 0, 255, out=video).astype(np.uint8)


def _background(rng, size, xs, ys) -> np.ndarray:
    """Tinted grey with a linear gradient in a random direction, (H, W, 3) float32."""
    grey = rng.uniform(70.0, 180.0)
    tint = rng.uniform(-30.0, 30.0, 3)
    angle = rng.uniform(0.0, 2 * np.pi)
    ramp = (xs * np.cos(angle) + ys * np.sin(angle)) / size  # roughly in [-1.4, 1.4]
    amplitude = rng.uniform(15.0, 50.0, 3)
    return (grey + tint + ramp[..., None] * amplitude).astype(np.float32)


def _colour_rgb(colour: int, rng) -> np.ndarray:
    hue = (COLOUR_HUES[colour] + rng.uniform(-10.0, 10.0)) % 360.0
    r, g, b = colorsys.hsv_to_rgb(hue / 360.0, rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))
    return np.array([r, g, b], np.float32) * 255.0


def _straight_path(rng, size, frames, radius, direction) -> np.ndarray:
    """Centres (frames, 2) moving along `direction`, inside the frame start to end."""
    low, high = radius + 1.0, size - radius - 1.0
    distance = min(size * rng.uniform(0.3, 0.55), high - low)
    along = rng.uniform(low, max(low, high - distance))  # start of the path along the motion axis
    dx, dy = direction
    sign = dx + dy  # +1 for right/down, -1 for left/up
    start = along if sign > 0 else along + distance
    across = rng.uniform(low, high)
    steps = np.linspace(0.0, distance, frames, dtype=np.float32) * sign
    wobble = rng.normal(0.0, 0.3, frames).astype(np.float32)  # slight, so motion is not a ruler
    path = np.empty((frames, 2), np.float32)
    if dx:
        path[:, 0], path[:, 1] = start + steps, across + wobble
    else:
        path[:, 0], path[:, 1] = across + wobble, start + steps
    return path


def _random_walk(rng, size, frames, radius) -> np.ndarray:
    low, high = radius, size - radius
    position = rng.uniform(low, high, 2)
    velocity = rng.normal(0.0, 0.6, 2)
    path = np.empty((frames, 2), np.float32)
    for t in range(frames):
        path[t] = position
        velocity = 0.9 * velocity + rng.normal(0.0, 0.35, 2)
        position = position + velocity
        for axis in range(2):  # bounce
            if not low <= position[axis] <= high:
                velocity[axis] = -velocity[axis]
                position[axis] = np.clip(position[axis], low, high)
    return path


def _paint(video, xs, ys, shape, centres, radius, rgb, alpha) -> None:
    """Alpha-blend an anti-aliased shape at per-frame `centres` (frames, 2) into `video`.

    Works frame by frame on the shape's bounding box only: ~20x less arithmetic than whole
    frames, which is most of the generation time.
    """
    size = video.shape[1]
    reach = int(np.ceil(radius * 1.35)) + 2  # covers the triangle's circumradius + AA edge
    for t, (cx, cy) in enumerate(centres):
        x0, x1 = max(0, int(cx) - reach), min(size, int(cx) + reach + 1)
        y0, y1 = max(0, int(cy) - reach), min(size, int(cy) + reach + 1)
        if x0 >= x1 or y0 >= y1:
            continue
        px, py = xs[y0:y1, x0:x1] - cx, ys[y0:y1, x0:x1] - cy
        if SHAPES[shape] == "circle":
            distance = np.sqrt(px * px + py * py) - radius
        elif SHAPES[shape] == "square":
            distance = np.maximum(np.abs(px), np.abs(py)) - radius * 0.88
        else:  # triangle pointing up: signed distance to 3 edges; inradius = circumradius / 2
            distance = np.maximum(np.maximum(py, -0.866 * px - 0.5 * py),
                                  0.866 * px - 0.5 * py) - radius * 0.65
        coverage = np.clip(0.5 - distance, 0.0, 1.0) * alpha[t]
        window = video[t, y0:y1, x0:x1]
        window += coverage[..., None] * (rgb - window)
