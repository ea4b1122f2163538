"""Which frames and which pixels a clip uses: the one sampler both loaders share.

Everything random about a clip (the temporal window, the resize jitter, the crop position, the
flip) is drawn here from a generator seeded by ``(seed, epoch, sample key)``, so the DALI
pipeline and the fallback loader build the same clip from the same sample, on any rank and in
any worker, and a resumed run sees the same clips as an uninterrupted one.

Spec (docs/model.md §5): train takes T frames at stride s from a random window, clamped for short
videos (the last frame repeats); its short side is jittered in [S, S·256/224], then a random
S×S crop and a random horizontal flip. Test takes V windows whose starts are spread evenly over
the video, short side S and a centre crop.

Key-frame windows (``ClipSpec.keyframe_windows``; off in a bare ClipSpec, on by default in
training through ``DataConfig.keyframe_windows``; our choice, not the reference's): each
window start drawn as above is moved to the nearest key frame that still lets the window fit,
so with a key-frame interval that divides the stride every wanted frame is a key frame and a
clip decodes exactly T frames. Nearest (not "at or before", not "uniform over key frames")
because it moves each start the least — at most half a GOP — which makes the aligned start
distribution the one closest to the uniform one among those on key frames, and it consumes the
same random draws, so resize, crop and flip are those of the unaligned plan.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

# The pixel normalisation OpenAI's CLIP weights were trained with (open_clip's
# OPENAI_DATASET_MEAN/STD, the mean/std of its "openai" pretrained configs). Written out rather
# than imported: importing anything from open_clip imports the whole model library (seconds),
# which the data plane and its worker processes should not pay. tests/test_sampling.py checks
# the numbers equal open_clip's.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# Short-side jitter range relative to the crop size, from the CLIP video recipe (224 → 256).
SCALE_JITTER = 256 / 224


@dataclass(frozen=True)
class ClipSpec:
    """What one clip is: ``num_frames`` T at ``stride`` s, ``image_size`` S, ``num_views`` V."""

    num_frames: int = 8
    stride: int = 16
    image_size: int = 224
    num_views: int = 3  # test mode only; train clips are one view
    flip: bool = True   # train mode: random horizontal flip (off where left/right is the label)
    keyframe_windows: bool = False  # move window starts to key frames (see the module doc)

    def __post_init__(self):
        for field in ("num_frames", "stride", "image_size", "num_views"):
            if getattr(self, field) < 1:
                raise ValueError(f"ClipSpec.{field} must be >= 1, got {getattr(self, field)}")

    def views(self, mode: str) -> int:
        return self.num_views if mode == "test" else 1


@dataclass(frozen=True)
class ClipPlan:
    """Everything needed to cut one sample into clips.

    ``frames`` (V, T) int64 frame indices; the video is resized to ``resize`` (h, w), cropped to
    S×S at ``crop`` (top, left), then mirrored if ``flip``.
    """

    frames: np.ndarray
    resize: tuple[int, int]
    crop: tuple[int, int]
    flip: bool


def clip_rng(seed: int, epoch: int, key: str) -> np.random.Generator:
    """A generator that depends only on (seed, epoch, key), stable across processes and runs.

    Python's ``hash()`` is salted per process, so the key is hashed with BLAKE2b instead.
    """
    digest = hashlib.blake2b(f"{seed}\x1f{epoch}\x1f{key}".encode(), digest_size=16).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))


def sample_frame_indices(total_frames: int, num_frames: int, stride: int, *, mode: str = "train",
                         num_views: int = 3, seed: int = 0, epoch: int = 0, key: str = "",
                         rng: np.random.Generator | None = None,
                         key_frames: np.ndarray | None = None) -> np.ndarray:
    """Frame indices of the clips cut from a video of ``total_frames`` frames.

    Returns int64 (V, T): V = 1 in train mode (a random window), V = ``num_views`` in test mode
    (window starts spread evenly from the first to the last possible start; one view is
    centred). Every index lies in [0, total_frames - 1]; a window longer than the video is
    clamped, so its tail repeats the last frame. ``rng`` overrides the (seed, epoch, key) draw.
    ``key_frames`` (sorted frame indices of the video's key frames): each start moves to the
    nearest one that fits (:func:`align_to_key_frames`); None keeps the starts as drawn.
    """
    if total_frames < 1:
        raise ValueError(f"a video needs at least one frame, got total_frames={total_frames}")
    if mode not in ("train", "test"):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    span = (num_frames - 1) * stride + 1
    last_start = max(total_frames - span, 0)
    if mode == "train":
        rng = rng if rng is not None else clip_rng(seed, epoch, key)
        starts = np.array([rng.integers(0, last_start + 1)])
    elif num_views == 1:
        starts = np.array([last_start // 2])
    else:
        starts = np.floor(np.linspace(0, last_start, num_views) + 0.5).astype(np.int64)
    if key_frames is not None:
        starts = align_to_key_frames(starts, key_frames, last_start)
    frames = starts[:, None] + stride * np.arange(num_frames)[None, :]
    return np.minimum(frames, total_frames - 1).astype(np.int64)


def align_to_key_frames(starts: np.ndarray, key_frames: np.ndarray,
                        last_start: int) -> np.ndarray:
    """Each of ``starts`` moved to the nearest of ``key_frames`` in [0, ``last_start``] (the
    earlier one on a tie), so a window from it still fits; unchanged when none is in range.

    ``key_frames``: sorted frame indices. Returns int64 of the shape of ``starts``.
    """
    starts = np.asarray(starts, np.int64)
    keys = np.asarray(key_frames, np.int64)
    keys = keys[(keys >= 0) & (keys <= last_start)]
    if keys.size == 0:
        return starts
    after = np.minimum(np.searchsorted(keys, starts, side="left"), keys.size - 1)
    before = np.maximum(np.searchsorted(keys, starts, side="right") - 1, 0)
    lo, hi = keys[before], keys[after]
    return np.where(np.abs(hi - starts) < np.abs(starts - lo), hi, lo).astype(np.int64)


def resized_shape(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) after scaling so the shorter side is ``short_side``, aspect kept (rounded)."""
    scale = short_side / min(height, width)
    h = short_side if height <= width else round(height * scale)
    w = short_side if width < height else round(width * scale)
    return max(h, short_side), max(w, short_side)


def plan_clip(total_frames: int, height: int, width: int, spec: ClipSpec, *, mode: str,
              seed: int, epoch: int, key: str,
              key_frames: np.ndarray | None = None) -> ClipPlan:
    """The full clip plan for one sample (frames, resize, crop, flip); see the module doc.

    ``key_frames`` (the sample's key-frame indices, :func:`kiclip.packets.key_frame_indices`;
    None when it has no packet index) is used only when ``spec.keyframe_windows`` is on.
    """
    rng = clip_rng(seed, epoch, key)
    frames = sample_frame_indices(total_frames, spec.num_frames, spec.stride, mode=mode,
                                  num_views=spec.num_views, rng=rng,
                                  key_frames=key_frames if spec.keyframe_windows else None)
    size = spec.image_size
    if mode == "train":
        short = int(rng.integers(size, int(size * SCALE_JITTER) + 1))
        h, w = resized_shape(height, width, short)
        crop = (int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1)))
        flip = bool(rng.random() < 0.5) and spec.flip  # always drawn: other draws unchanged
    else:
        h, w = resized_shape(height, width, size)
        crop = ((h - size) // 2, (w - size) // 2)
        flip = False
    return ClipPlan(frames=frames, resize=(h, w), crop=crop, flip=flip)
