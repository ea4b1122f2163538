"""Clips → features: the KICLIP student (temporal attention + knowledge injection), the
frozen teacher, the distillation projectors, the CLIP factory and ``build_video_models``, which
builds them from a run's config."""

from kiclip.model.attention import block_self_attention, expand_temporal_view
from kiclip.model.build import VideoModels, build_video_models
from kiclip.model.configs import KICLIP_CONFIGS
from kiclip.model.factory import (
    DEFAULT_MODEL,
    ArchitectureMismatchError,
    create_clip,
    load_clip_weights,
)
from kiclip.model.logits import video_logits
from kiclip.model.projector import Projector
from kiclip.model.student import VideoStudent
from kiclip.model.teacher import Teacher

__all__ = [
    "DEFAULT_MODEL",
    "KICLIP_CONFIGS",
    "ArchitectureMismatchError",
    "Projector",
    "Teacher",
    "VideoModels",
    "VideoStudent",
    "block_self_attention",
    "build_video_models",
    "create_clip",
    "expand_temporal_view",
    "load_clip_weights",
    "video_logits",
]
