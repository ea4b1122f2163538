"""The module DeepSpeed trains: student + projectors, and one step's loss.

The teacher stays outside the engine (frozen, never sharded or optimised); its features for a
step are computed first and passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kiclip.losses import KiclipLoss, LossTerms
from kiclip.model import Teacher, VideoStudent
from kiclip.text import ALL_TEMPLATES, average_templates, build_prompts


class KiclipTrainModule(nn.Module):
    """Holds everything trainable: ``student`` (whole CLIP + frozen KI copy) and ``loss``
    (the projectors P_v, P_t). Its state dict is what checkpoints and averaging handle."""

    def __init__(self, student: VideoStudent, loss: KiclipLoss):
        super().__init__()
        self.student = student
        self.loss = loss

    def forward(self, video: torch.Tensor, labels: torch.Tensor, tokens: torch.Tensor,
                num_templates: int, teacher_frames: torch.Tensor | None,
                teacher_classes: torch.Tensor | None) -> LossTerms:
        """video (B,3,T,H,W), labels (B,), tokens (P·C, L) for P templates × C classes."""
        frames = self.student.encode_frames(video)
        classes = average_templates(self.student.encode_text(tokens), num_templates)
        return self.loss(frames, classes, labels, self.student.logit_scale,
                         teacher_frames, teacher_classes)


class TeacherTargets:
    """The frozen teacher's distillation targets for one label space.

    Its text side never changes, so every template's normalised class embeddings are computed
    once at set-up; a step only averages the drawn templates' rows (same result as encoding
    the drawn prompts, without a text-tower pass per step).
    """

    @torch.no_grad()
    def __init__(self, teacher: Teacher, prompts: PromptTokens):
        self.teacher = teacher
        self._by_template = {t: nn.functional.normalize(teacher.encode_text(prompts([t])).float(), dim=-1)
                             for t in ALL_TEMPLATES}

    @torch.no_grad()
    def __call__(self, video: torch.Tensor, templates: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame features (B, T, D) of ``video`` and class embeddings (C, D) for ``templates``."""
        classes = torch.stack([self._by_template[t] for t in templates]).mean(0)
        return self.teacher.encode_frames(video), nn.functional.normalize(classes, dim=-1)


class PromptTokens:
    """Every template's tokens for one label space, tokenized once at set-up (not per step)."""

    def __init__(self, tokenizer: Callable, class_names: Sequence[str], rephrased: bool,
                 device: torch.device):
        self._by_template = {t: tokenizer(build_prompts(class_names, t, rephrased)).to(device)
                             for t in ALL_TEMPLATES}

    def __call__(self, templates: Sequence[str]) -> torch.Tensor:
        """Tokens (P·C, L), template-major, as ``average_templates`` expects."""
        return torch.cat([self._by_template[t] for t in templates])


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay for matrices, none for 1-D params and biases (docs/model.md §5).

    Frozen parameters (the KI copy) are left out: the optimiser never sees them."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
