"""The frozen CLIP teacher of residual feature distillation (docs/model.md §3)."""

from __future__ import annotations

import torch
from open_clip.model import CLIP
from torch import nn


class Teacher(nn.Module):
    """A frozen open_clip CLIP: always eval mode, no parameter requires grad, no autograd graph.

    Pass a model of its own (e.g. a second ``create_clip`` or a ``copy.deepcopy`` made
    before training): the teacher freezes what it is given.
    """

    def __init__(self, clip_model: CLIP):
        super().__init__()
        self.clip = clip_model.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> Teacher:
        """Stays in eval mode whatever the caller asks (a trainer's ``model.train()`` included)."""
        return super().train(False)

    @torch.no_grad()
    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame image features (B, T, D), unnormalised, of video (B, 3, T, H, W)."""
        b, c, t, height, width = video.shape
        frames = video.transpose(1, 2).reshape(b * t, c, height, width)
        return self.clip.encode_image(frames).view(b, t, -1)

    @torch.no_grad()
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features (N, D), unnormalised, of tokens (N, context_length)."""
        return self.clip.encode_text(tokens)
