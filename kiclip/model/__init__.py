"""Clips → features: the KICLIP student (temporal attention + knowledge injection), the
frozen teacher, the distillation projectors and the CLIP factory."""

from kiclip.model.attention import block_self_attention, expand_temporal_view
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
    "VideoStudent",
    "block_self_attention",
    "create_clip",
    "expand_temporal_view",
    "load_clip_weights",
    "video_logits",
]
