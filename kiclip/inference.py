"""Inference on one video: a checkpoint (or the frozen CLIP) → a ready model, a video file →
test-mode clips, and class names → view-summed open-vocabulary scores.

Shared by ``launch/predict.py``, ``launch/visualize.py`` and ``launch/evaluate.py``. Clips are
cut exactly as evaluation cuts them (``kiclip.data.sampling.plan_clip`` in test mode: V temporal
views, short side S, centre S×S crop, CLIP normalisation), only from a file instead of a shard.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from kiclip.config import (
    B2N_PRESETS,
    DataConfig,
    LossConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
)
from kiclip.data.decode import DecodeError, decode_frames
from kiclip.data.sampling import CLIP_MEAN, CLIP_STD, ClipSpec, plan_clip
from kiclip.data.transforms import apply_plan
from kiclip.files import file_problem
from kiclip.model import VideoStudent, build_video_models, video_logits
from kiclip.video_probe import VideoProbeError, probe_video
from kiclip.weights import load_weights, student_state

log = logging.getLogger(__name__)


class VideoReadError(ValueError):
    """A user's video file that PyAV cannot open or decode; the message names the file."""


@dataclass
class InferenceModel:
    """What inference needs: the student, the tokenizer and the resolved config
    (``cfg.data`` fixes frames, stride, image size)."""

    student: VideoStudent
    tokenizer: Callable[[list[str]], torch.Tensor]
    cfg: TrainConfig
    source: str

    def clip_spec(self, views: int) -> ClipSpec:
        """The run's clip geometry (``cfg.data``) with ``views`` test views."""
        return replace(self.cfg.data.clip_spec(), num_views=views)


def load_checkpoint_model(path: str | os.PathLike) -> InferenceModel:
    """Rebuild the student a kiclip weights file was saved from and load its tensors.

    The architecture, injection/temporal flags and clip geometry come from the file's saved
    config; no pretrained CLIP is read (the file carries every tensor). Raises
    FileNotFoundError (missing file) or ValueError (not a kiclip weights file). Eval mode, CPU.
    """
    blob = load_weights(path)
    saved = blob.get("config")
    if not isinstance(saved, dict) or not all(k in saved for k in ("model", "loss", "data")):
        raise ValueError(f"checkpoint {path} has no saved config (model/loss/data)")
    cfg = TrainConfig()
    cfg.model, cfg.loss = ModelConfig(**saved["model"]), LossConfig(**saved["loss"])
    cfg.data = DataConfig.from_dict(saved["data"])
    student, _, tokenizer = build_video_models(cfg, load_pretrained=False)
    student.load_state_dict(student_state(blob))
    return InferenceModel(student.eval(), tokenizer, cfg, str(path))


def frozen_clip_model(model_name: str | None, pretrained: str | None,
                      preset: str = "k400") -> InferenceModel:
    """The zero-shot baseline: CLIP as released, per-frame attention, no knowledge injection.

    Clip geometry comes from the B2N ``preset`` (k400: 8 frames at stride 16, 224 px).
    ``pretrained`` empty or None gives randomly initialised weights (the caller warns).
    """
    cfg = TrainConfig()
    apply_overrides(cfg, B2N_PRESETS[preset])
    cfg.model.temporal = cfg.model.injection = False
    cfg.model.model_name = model_name or cfg.model.model_name
    cfg.model.pretrained = pretrained or ""
    student, _, tokenizer = build_video_models(cfg)
    return InferenceModel(student.eval(), tokenizer, cfg, "frozen-clip")


def count_video_frames(path: str | os.PathLike) -> tuple[int, int, int]:
    """(frames, height, width) of a video file's first video stream, frames that decode.

    The probe is make_shards' (kiclip.video_probe), in its cheap mode: packets are counted
    without decoding unless they fall short of the header's frame count. A cut-off file (e.g. a
    "faststart" mp4 whose header promises 250 frames of which 114 decode) is used up to its last
    decodable frame, with a warning naming both counts. Raises FileNotFoundError (no such
    file) or VideoReadError (a directory, empty, not a video, nothing decodes), naming the file.
    """
    problem = file_problem(path)
    if problem and not Path(path).exists():
        raise FileNotFoundError(problem)
    if problem:
        raise VideoReadError(problem)
    try:
        info = probe_video(Path(path), decode_all=False, allow_truncated=True)
    except VideoProbeError as exn:
        raise VideoReadError(f"video {path} cannot be used: {exn}") from exn
    if info.truncated:
        log.warning("video %s is truncated: its header promises %d frames but only %d decode; "
                    "sampling from those %d", path, info.promised, info.frames, info.frames)
    if info.height < 1 or info.width < 1:
        raise VideoReadError(f"video {path} has no video frames")
    return info.frames, info.height, info.width


def load_video_clips(path: str | os.PathLike, spec: ClipSpec) -> tuple[torch.Tensor, np.ndarray]:
    """Test-mode clips of one video file: float (V, 3, T, S, S) normalised, and the frame
    indices (V, T) they show. Frames are turned upright as the file's display matrix (or
    ``rotate`` tag) says, as a player shows them. Raises FileNotFoundError / VideoReadError naming the file."""
    frames, height, width = count_video_frames(path)
    plan = plan_clip(frames, height, width, spec, mode="test", seed=0, epoch=0, key=str(path))
    try:
        decoded = decode_frames(str(path), plan.frames.reshape(-1), rotation=None)
    except DecodeError as exn:
        raise VideoReadError(f"video {path} could not be decoded: {exn}") from exn
    if decoded.shape[1:3] != (height, width):
        # The frames were turned upright (a portrait phone video: the header gives the coded,
        # sideways size) or the header's size disagreed with the frames (e.g. anamorphic).
        plan = plan_clip(frames, decoded.shape[1], decoded.shape[2], spec, mode="test", seed=0,
                         epoch=0, key=str(path))
    return apply_plan(decoded, plan, spec.image_size), plan.frames


def denormalise(clip: torch.Tensor) -> torch.Tensor:
    """Undo CLIP normalisation: float (..., 3, H, W) → RGB in [0, 1], same shape."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (clip * std + mean).clamp(0.0, 1.0)


def parse_class_list(text: str | None = None, file: str | os.PathLike | None = None) -> list[str]:
    """Class names from a comma-separated string and/or a file, in order, duplicates dropped.

    A ``.json`` file is a list of names, kiclip's ``{"0": name, ...}`` mapping, or a shard
    folder's ``manifest.json`` (its ``class_texts`` when present, else ``classes``); the
    rephrased ``"Name: description"`` form is kept whole, so it is prompted as in training. Any
    other file is one name per line. Raises FileNotFoundError for a missing file and ValueError
    for an empty result or one that mixes rephrased and plain names (prompts are built one way
    for the whole list, ``kiclip.text.build_prompts``).
    """
    from kiclip.text import class_names_from_mapping

    names: list[str] = []
    if text:
        names += [n.strip() for n in text.split(",")]
    if file:
        file = Path(file)
        if not file.is_file():
            raise FileNotFoundError(f"classes file {file} does not exist")
        if file.suffix.lower() == ".json":
            try:
                data = json.loads(file.read_text())
            except json.JSONDecodeError as exn:
                raise ValueError(f"classes file {file} is not valid JSON: {exn}") from exn
            if isinstance(data, dict) and isinstance(data.get("classes"), dict):  # a manifest
                names += class_names_from_mapping(data.get("class_texts") or data["classes"],
                                                  source=str(file))
            elif isinstance(data, dict):
                names += class_names_from_mapping(data, source=str(file))
            elif isinstance(data, list):
                names += [str(n) for n in data]
            else:
                raise ValueError(f"classes file {file} must hold a list or a {{\"0\": name}} mapping")
        else:
            names += file.read_text().splitlines()
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    if not names:
        raise ValueError("the class list is empty: give --classes \"a,b,c\" or --classes-file")
    plain = [n for n in names if ":" not in n]
    if plain and len(plain) < len(names):
        raise ValueError(f"the class list mixes rephrased \"Name: description\" names with plain "
                         f"ones ({', '.join(repr(n) for n in plain[:3])}): give every class a "
                         "description or none")
    return names


@torch.no_grad()
def video_class_scores(model: InferenceModel, clips: torch.Tensor,
                       class_names: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed logits (C,), probabilities (C,)) of one video's clips (V, 3, T, S, S).

    Logits are summed over the V views, as evaluation ranks a video. Probabilities are the
    softmax of the view-averaged logits (same order; the sum would sharpen with V).
    The classifier averages all 29 templates (kiclip.text.ClassifierCache).
    """
    from kiclip.text import ClassifierCache, looks_rephrased

    student = model.student
    device = next(student.parameters()).device
    classifier = ClassifierCache(model.tokenizer, looks_rephrased(class_names)).get(student, class_names)
    frames = student.encode_frames(clips.to(device))
    logits = video_logits(frames, classifier, student.logit_scale).cpu()  # (V, C)
    return logits.sum(0), logits.mean(0).softmax(-1)
