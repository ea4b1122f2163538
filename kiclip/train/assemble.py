"""Build the trainable module, the teacher and the tokenizer from a run's config."""

from __future__ import annotations

from collections.abc import Callable

from kiclip.config import TrainConfig
from kiclip.losses import KiclipLoss
from kiclip.model import Teacher, build_video_models
from kiclip.train.step import KiclipTrainModule


def build_models(cfg: TrainConfig, *, load_pretrained: bool = True
                 ) -> tuple[KiclipTrainModule, Teacher | None, Callable]:
    """(train module, teacher or None, tokenizer) of ``cfg``: the student, teacher and
    tokenizer of ``kiclip.model.build_video_models`` (a teacher when ``cfg.loss.distill``)
    and the projectors of ``cfg.loss``, built after them (their random initialisation draws
    follow the student's)."""
    student, teacher, tokenizer = build_video_models(cfg, with_teacher=cfg.loss.distill,
                                                     load_pretrained=load_pretrained)
    losses = KiclipLoss(student.embed_dim, lam=cfg.loss.distill_weight,
                        alpha=cfg.loss.projector_alpha, distill=cfg.loss.distill)
    return KiclipTrainModule(student, losses), teacher, tokenizer
