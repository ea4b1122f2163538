"""Per-step pieces of the training loop: teacher targets, template averaging, parameter groups."""

from __future__ import annotations

import copy

import torch

from kiclip.model import Teacher, create_clip
from kiclip.text import ALL_TEMPLATES, RAW_TEMPLATE, average_templates, class_embeddings
from kiclip.train.step import PromptTokens, TeacherTargets, parameter_groups

NAMES = ["red circle moving left", "blue square moving up", "green triangle moving down"]


def _teacher_and_prompts():
    torch.manual_seed(0)
    clip, tokenizer = create_clip("kiclip-tiny")
    return Teacher(copy.deepcopy(clip)), PromptTokens(tokenizer, NAMES, False, torch.device("cpu")), tokenizer


def test_cached_teacher_classes_equal_encoding_the_drawn_prompts():
    teacher, prompts, tokenizer = _teacher_and_prompts()
    targets = TeacherTargets(teacher, prompts)
    drawn = (ALL_TEMPLATES[5], RAW_TEMPLATE)
    video = torch.randn(2, 3, 2, 32, 32)
    frames, classes = targets(video, drawn)
    direct = class_embeddings(teacher.encode_text, tokenizer, NAMES, drawn, rephrased=False)
    torch.testing.assert_close(classes, direct, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(average_templates(teacher.encode_text(prompts(drawn)), 2), direct,
                               rtol=1e-5, atol=1e-6)
    assert frames.shape == (2, 2, teacher.clip.visual.output_dim)
    assert not frames.requires_grad and not classes.requires_grad


def test_parameter_groups_exclude_frozen_and_spare_1d_from_decay():
    layer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    layer[2].requires_grad_(False)
    decay, no_decay = parameter_groups(layer, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert {tuple(p.shape) for p in no_decay["params"]} == {(4,)} and len(no_decay["params"]) == 3
