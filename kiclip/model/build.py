"""The models a run's config describes: the student, the teacher and the tokenizer.

Training (``kiclip.train.assemble.build_models``, which adds the projectors) and inference
(``kiclip.inference``) both build through ``build_video_models``, so a checkpoint is rebuilt
with exactly the architecture, flags and clip geometry it was trained with.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch

from kiclip.model.factory import create_clip
from kiclip.model.student import VideoStudent
from kiclip.model.teacher import Teacher

if TYPE_CHECKING:
    from kiclip.config import ModelConfig, TrainConfig


class VideoModels(NamedTuple):
    student: VideoStudent
    teacher: Teacher | None
    tokenizer: Callable[[list[str]], torch.Tensor]


def build_video_models(cfg: TrainConfig, *, with_teacher: bool = False,
                       load_pretrained: bool = True) -> VideoModels:
    """The student (``cfg.model`` at ``cfg.data``'s frames and image size), the teacher when
    ``with_teacher``, and the tokenizer; CPU, fp32.

    The teacher and the student's frozen KI copy both start from the loaded CLIP weights, so
    build before any training. ``load_pretrained=False`` skips reading ``cfg.model.pretrained``
    (a kiclip checkpoint carries every tensor itself). Random initialisation draws from torch's
    global generator, in the same order for every caller: seed it first for repeatable weights.
    """
    pretrained = cfg.model.pretrained if (load_pretrained and cfg.model.pretrained) else None
    clip, tokenizer = create_clip(cfg.model.model_name, pretrained,
                                  vision_cfg={"image_size": cfg.data.image_size})
    teacher = Teacher(copy.deepcopy(clip)) if with_teacher else None
    student = VideoStudent(clip, cfg.data.num_frames, **student_options(cfg.model))
    return VideoModels(student, teacher, tokenizer)


def student_options(model: ModelConfig) -> dict:
    """VideoStudent's keyword arguments from the model config (docs/model.md §1–2)."""
    return {"temporal": model.temporal, "injection": model.injection, "mix": model.mix,
            "mask_boundary": model.mask_boundary, "checkpointing": model.checkpointing}
