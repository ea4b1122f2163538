"""Video-level classification logits from per-frame features and class embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def video_logits(frame_features: torch.Tensor, class_embeddings: torch.Tensor,
                 logit_scale: torch.Tensor) -> torch.Tensor:
    """Mean over frames of ``exp(logit_scale) * cos(frame, class)``.

    frame_features (B, T, D) unnormalised; class_embeddings (C, D) (normalised or not);
    logit_scale: CLIP's log temperature (0-d). Returns float32 logits (B, C).
    Averaging cosines per frame equals the cosine with the mean of the normalised frames.
    """
    frames = F.normalize(frame_features.float(), dim=-1).mean(dim=1)  # (B, D)
    classes = F.normalize(class_embeddings.float(), dim=-1)
    return logit_scale.float().exp() * frames @ classes.t()
