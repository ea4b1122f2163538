"""The KICLIP training loss: CE on video logits + residual feature distillation (docs/model.md §3)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from kiclip.model import Projector, video_logits
from kiclip_kernels import distill_loss


class LossTerms(NamedTuple):
    """The total and its parts, 0-d float32 tensors (``terms._asdict()`` for logging).

    total = ce + lam * (distill_image + distill_text); the distillation terms are
    ``1 - mean cos`` and are zero when distillation is off.
    """

    total: torch.Tensor
    ce: torch.Tensor
    distill_image: torch.Tensor
    distill_text: torch.Tensor


class KiclipLoss(nn.Module):
    """The KICLIP loss with its trainable projectors P_v, P_t (D = CLIP's embed dim).

    The projectors are trained with the student and saved/averaged with it; they are not
    used at test time. ``distill=False`` gives plain CE fine-tuning (no teacher needed).
    """

    def __init__(self, dim: int, lam: float = 2.0, alpha: float = 0.1, distill: bool = True):
        super().__init__()
        self.proj_v = Projector(dim)
        self.proj_t = Projector(dim)
        self.lam = lam
        self.alpha = alpha
        self.distill = distill

    def forward(
        self,
        frame_features: torch.Tensor,
        class_embeddings: torch.Tensor,
        labels: torch.Tensor,
        logit_scale: torch.Tensor,
        teacher_frames: torch.Tensor | None = None,
        teacher_classes: torch.Tensor | None = None,
    ) -> LossTerms:
        """L = CE(video_logits, y) + lam * [(1 - mean cos(f̂, f_T)) + (1 - mean cos(ĝ, g_T))].

        frame_features (B, T, D): student per-frame features, unnormalised, any float dtype.
        class_embeddings (C, D): student class embeddings of the step's templates (fp32 from
        ``average_templates``, or any float dtype).
        labels (B,) long; logit_scale: CLIP's log temperature (0-d).
        teacher_frames (B, T, D), teacher_classes (C, D): the teacher's, same templates; needed
        when distilling (ValueError without them).
        f̂ = f + alpha * P_v(f) per frame and ĝ = g + alpha * P_t(g), with f, g the
        normalised student features; the logits use the un-projected f, g.
        """
        logits = video_logits(frame_features, class_embeddings, logit_scale)
        ce = F.cross_entropy(logits, labels)
        zero = ce.new_zeros(())
        if not self.distill:
            return LossTerms(ce, ce, zero, zero)
        if teacher_frames is None or teacher_classes is None:
            raise ValueError("distillation needs teacher_frames and teacher_classes")

        # Precision (docs/model.md §9): the student's features arrive in the module's
        # dtype (bf16 under DeepSpeed bf16); normalising, the residual sums f + alpha*P(f), the
        # logits, CE and the cosines are fp32. Only the projectors' matmuls run in the module's
        # dtype (Projector casts in and out).
        f = F.normalize(frame_features.float().flatten(0, 1), dim=-1)  # (B*T, D) fp32
        g = F.normalize(class_embeddings.float(), dim=-1)  # (C, D) fp32
        f_hat = f + self.alpha * self.proj_v(f)
        g_hat = g + self.alpha * self.proj_t(g)
        # The teacher is a target: no gradient flows into it even if a caller built it with one.
        d_image = distill_loss(f_hat, teacher_frames.flatten(0, 1).detach())
        d_text = distill_loss(g_hat, teacher_classes.detach())
        total = ce + self.lam * (d_image + d_text)
        return LossTerms(total, ce, d_image, d_text)
