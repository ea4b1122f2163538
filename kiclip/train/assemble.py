"""Build the trainable module, the teacher and the tokenizer from a config."""

from __future__ import annotations

import copy
from collections.abc import Callable

from kiclip.config import LossConfig, ModelConfig
from kiclip.losses import KiclipLoss
from kiclip.model import Teacher, VideoStudent, create_clip
from kiclip.train.step import KiclipTrainModule


def build_models(model: ModelConfig, loss: LossConfig, *, num_frames: int, image_size: int,
                 with_teacher: bool, load_pretrained: bool = True
                 ) -> tuple[KiclipTrainModule, Teacher | None, Callable]:
    """(train module, teacher or None, tokenizer).

    The teacher and the frozen KI copy both start from the loaded CLIP weights, so build
    before any training. ``load_pretrained=False`` skips reading weights (evaluation of a
    kiclip checkpoint, which carries every tensor itself).
    """
    pretrained = model.pretrained if (load_pretrained and model.pretrained) else None
    clip, tokenizer = create_clip(model.model_name, pretrained,
                                  vision_cfg={"image_size": image_size})
    teacher = Teacher(copy.deepcopy(clip)) if with_teacher else None
    student = VideoStudent(clip, num_frames, temporal=model.temporal, injection=model.injection,
                           mix=model.mix, mask_boundary=model.mask_boundary,
                           checkpointing=model.checkpointing)
    losses = KiclipLoss(student.embed_dim, lam=loss.distill_weight, alpha=loss.projector_alpha,
                        distill=loss.distill)
    return KiclipTrainModule(student, losses), teacher, tokenizer
