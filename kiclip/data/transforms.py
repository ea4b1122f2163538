"""Clip transforms in torch ops, the fallback loader's twin of the DALI pipeline's stages.

Input frames are uint8 (V·T, H, W, 3) as decoded; output is float (V, 3, T, S, S): resized to
the plan's size (bilinear, antialiased), cropped at the plan's corner, mirrored if the plan
says so, and normalised with CLIP's mean/std.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from kiclip.data.sampling import CLIP_MEAN, CLIP_STD, ClipPlan

_MEAN = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) * 255
_STD = torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255


def apply_plan(frames: np.ndarray, plan: ClipPlan, image_size: int) -> torch.Tensor:
    """uint8 (V·T, H, W, 3) → float32 (V, 3, T, S, S) following ``plan``."""
    views, num_frames = plan.frames.shape
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if tuple(x.shape[-2:]) != plan.resize:
        x = F.interpolate(x, size=plan.resize, mode="bilinear", align_corners=False,
                          antialias=True)
    top, left = plan.crop
    x = x[:, :, top:top + image_size, left:left + image_size]
    if plan.flip:
        x = x.flip(-1)
    x = (x - _MEAN) / _STD
    return x.reshape(views, num_frames, 3, image_size, image_size).transpose(1, 2).contiguous()
