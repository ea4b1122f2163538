"""EigenCAM of the student's residual stream, layer by layer, with and without knowledge injection.

EigenCAM (Muhammad & Yeasin, 2020) maps a layer's activations to the patch grid by projecting
every patch token onto the first principal component of that layer's (centred) tokens. We use
``pytorch_grad_cam.EigenCAM`` for it, with the sign fix of its
``get_2d_projection_with_sign_correction`` (SVD's sign is arbitrary; the map is flipped so its
largest-magnitude value is positive), so with/without-KI maps are comparable.

pytorch_grad_cam reads activations through forward hooks, but ``VideoStudent`` never calls a
visual block's ``forward`` (``_layer`` evaluates blocks from their parts), so hooks on
``resblocks[i]`` never fire. :class:`LayerTaps` therefore runs the student's own recurrence
(``_stem``, ``_layer``, ``_head``) with an ``nn.Identity`` tap after each layer: the tap's
output is the student stream ``h`` after layer i, which is what the hooks see.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM
from pytorch_grad_cam.utils.svd_on_activations import (
    get_2d_projection_with_sign_correction,
)
from torch import nn


def first_pc_projection(activations: np.ndarray) -> np.ndarray:
    """Per item, the (C, H, W) activations' H·W positions projected onto their first principal
    component, sign-corrected: float32 (N, H, W) from (N, C, H, W). The raw EigenCAM map."""
    return get_2d_projection_with_sign_correction(np.asarray(activations, dtype=np.float32))


class SignCorrectedEigenCAM(EigenCAM):
    """``pytorch_grad_cam.EigenCAM`` with the first-PC projection's sign fixed."""

    def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads,
                      eigen_smooth):
        return first_pc_projection(activations)


def vit_tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """reshape_transform for ViT tokens: (N, 1 + g², C) → (N, C, g, g), CLS dropped."""
    patches = tokens[:, 1:, :]
    grid = round(patches.shape[1] ** 0.5)
    if grid * grid != patches.shape[1]:
        raise ValueError(f"{patches.shape[1]} patch tokens do not form a square grid")
    return patches.reshape(tokens.shape[0], grid, grid, tokens.shape[2]).permute(0, 3, 1, 2)


class LayerTaps(nn.Module):
    """One video's frames through a VideoStudent, exposing the stream after every layer.

    forward: frames (T, 3, S, S) of one clip (T = ``student.num_frames``) → per-frame features
    (T, D), identical to ``student.encode_frames(clip[None])[0]``. ``taps[i]`` is an
    ``nn.Identity`` whose output is the student stream (T, 1 + g², width) after layer i
    (0-based). Frames are the batch axis so pytorch_grad_cam returns one map per frame.
    """

    def __init__(self, student: nn.Module):
        super().__init__()
        self.student = student
        self.taps = nn.ModuleList(nn.Identity() for _ in student.clip.visual.transformer.resblocks)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        student = self.student
        h = student._stem(frames)
        f = h if student.injection else None
        for i, tap in enumerate(self.taps):
            h, f = student._layer(i, h, f)
            h = tap(h)
        return student._head(h)


@contextlib.contextmanager
def injection_disabled(student: nn.Module, disable: bool = True):
    """Run the same weights without knowledge injection (``student.injection = False``)."""
    saved = student.injection
    student.injection = saved and not disable
    try:
        yield student
    finally:
        student.injection = saved


def default_layers(num_layers: int, skip: int = 5) -> list[int]:
    """1-based layers to show: those after the ``skip``-th; every layer when there are no more."""
    return list(range(skip + 1, num_layers + 1)) if num_layers > skip else list(range(1, num_layers + 1))


def parse_layers(text: str, num_layers: int) -> list[int]:
    """``"6-12"``, ``"6,8,12"`` or a mix → sorted 1-based layer numbers, checked in 1..L."""
    layers: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            lo, _, hi = part.partition("-")
            span = range(int(lo), int(hi or lo) + 1)
        except ValueError:
            raise ValueError(f"--layers: cannot read {part!r} (use e.g. 6-12 or 6,8,12)") from None
        layers.update(span)
    bad = [i for i in layers if not 1 <= i <= num_layers]
    if not layers or bad:
        raise ValueError(f"--layers must name layers in 1..{num_layers}, got {text!r}")
    return sorted(layers)


@torch.no_grad()
def layer_eigencams(student: nn.Module, clip: torch.Tensor, layers: Sequence[int]) -> np.ndarray:
    """EigenCAM maps of one clip (3, T, S, S) at 1-based ``layers``: float32 (len(layers), T, S, S)
    in [0, 1] (ReLU, min-max scaled, resized to S×S by pytorch_grad_cam), with the student's
    current ``injection`` setting. One forward pass serves every layer."""
    taps = LayerTaps(student)
    frames = clip.transpose(0, 1).to(next(student.parameters()).device)  # (T, 3, S, S)
    was_training = student.training
    targets = [taps.taps[layer - 1] for layer in layers]
    try:
        # Not cam(frames): that averages the layers into one map; we want one map per layer.
        with SignCorrectedEigenCAM(taps, targets, vit_tokens_to_grid) as cam:
            cam.activations_and_grads(frames)
            per_layer = cam.compute_cam_per_layer(frames, None, eigen_smooth=False)
    finally:
        student.train(was_training)  # BaseCAM puts the model in eval mode
    return np.concatenate(per_layer, axis=1).transpose(1, 0, 2, 3).astype(np.float32)


def ki_comparison(student: nn.Module, clip: torch.Tensor, layers: Sequence[int]) -> np.ndarray:
    """float32 (2, len(layers), T, S, S): row 0 with knowledge injection, row 1 the same
    weights with it disabled. A student built without injection gives two equal rows."""
    with_ki = layer_eigencams(student, clip, layers)
    with injection_disabled(student):
        without_ki = layer_eigencams(student, clip, layers)
    return np.stack([with_ki, without_ki])
