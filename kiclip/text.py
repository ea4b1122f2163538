"""Class names → text classifiers: prompt templates, prompt building, class embeddings,
the per-step template draw and the evaluation classifier cache (docs/model.md §4)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

_PREFIXES = ("a photo of", "a video of", "a example of", "a demonstration of")  # sic: "a example"
_SUFFIXES = (
    "{}",
    "a person {}",
    "a person using {}",
    "a person doing {}",
    "a person during {}",
    "a person performing {}",
    "a person practicing {}",
)
TEMPLATES: tuple[str, ...] = tuple(f"{p} {s}." for p in _PREFIXES for s in _SUFFIXES)
"""The 28 sentence templates, e.g. ``"a video of a person doing {}."``."""
RAW_TEMPLATE = "{}"
"""The raw template: the class string alone."""
ALL_TEMPLATES: tuple[str, ...] = TEMPLATES + (RAW_TEMPLATE,)
"""The 29 templates averaged at evaluation."""


def load_class_names(path: str | Path) -> list[str]:
    """Names of a label space from JSON ``{"0": "name or Name: description", ...}``."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read class names from {path}: {exc}") from exc
    return class_names_from_mapping(mapping, source=str(path))


def class_names_from_mapping(mapping: Mapping[str, str], source: str = "class names") -> list[str]:
    """``{"0": a, "1": b, ...}`` → ``[a, b, ...]``; the keys must be exactly 0..n-1."""
    try:
        indexed = {int(k): str(v) for k, v in mapping.items()}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: keys must be class indices 0..n-1 ({exc})") from exc
    if sorted(indexed) != list(range(len(indexed))):
        raise ValueError(f"{source}: keys must be exactly 0..{len(indexed) - 1}")
    return [indexed[i] for i in range(len(indexed))]


def looks_rephrased(class_names: Sequence[str]) -> bool:
    """True when every name has the rephrased form ``"Name: description"``."""
    return bool(class_names) and all(":" in name for name in class_names)


def build_prompts(class_names: Sequence[str], template: str, rephrased: bool) -> list[str]:
    """One prompt per class for ``template``.

    rephrased: template filled with the part before the first ':' + ' ' + the full string;
    the raw template gives the full string alone.
    plain: the template filled with the name (the raw template gives the name).
    """
    if not rephrased:
        return [template.format(name) for name in class_names]
    missing = [name for name in class_names if ":" not in name]
    if missing:
        raise ValueError(f"rephrased class names need 'Name: description', got {missing[:3]!r}")
    if template == RAW_TEMPLATE:
        return list(class_names)
    return [template.format(name.split(":", 1)[0]) + " " + name for name in class_names]


def class_embeddings(
    encode_text: Callable[[torch.Tensor], torch.Tensor],
    tokenizer: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: Sequence[str],
    rephrased: bool,
    device: torch.device | str | None = None,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Class embeddings (C, D): per-template normalise → mean over templates → renormalise.

    encode_text: tokens (N, context) → features (N, D), e.g. ``student.encode_text``; the
    result keeps its autograd graph. chunk_size bounds the sequences per text-tower call.
    """
    prompts = [p for template in templates for p in build_prompts(class_names, template, rephrased)]
    tokens = tokenizer(prompts)
    if device is not None:
        tokens = tokens.to(device)
    step = chunk_size or len(prompts)
    features = torch.cat([encode_text(tokens[i:i + step]) for i in range(0, len(prompts), step)])
    return average_templates(features, len(templates))


def average_templates(features: torch.Tensor, num_templates: int) -> torch.Tensor:
    """(P·C, D) template-major text features → (C, D) class embeddings: per-template
    normalise, average over the P templates, renormalise (docs/model.md §4).

    Always fp32, whatever the text tower's dtype: an average of unit vectors is a reduction,
    kept in fp32 like the logits and losses it feeds (docs/model.md §9). Callers
    that feed it to a bf16 layer cast at that layer (``Projector`` does).
    """
    features = F.normalize(features.float(), dim=-1).view(num_templates, -1, features.shape[-1])
    return F.normalize(features.mean(dim=0), dim=-1)


class TemplateSampler:
    """The training draw: 1 of the 28 templates at random + the raw one, from a seeded
    generator. Draw once per step and use the pair for both student and teacher."""

    def __init__(self, seed: int = 0):
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> tuple[str, str]:
        index = int(torch.randint(len(TEMPLATES), (1,), generator=self.generator))
        return TEMPLATES[index], RAW_TEMPLATE

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


class ClassifierCache:
    """Evaluation classifiers (all 29 templates, no grad) per (model, label space).

    An entry is rebuilt when the model's weights changed since it was computed: the key
    carries every parameter's identity and in-place version counter, which optimiser steps
    and ``load_state_dict`` bump. ``clear()`` drops everything explicitly.
    """

    def __init__(
        self,
        tokenizer: Callable[[list[str]], torch.Tensor],
        rephrased: bool,
        templates: Sequence[str] = ALL_TEMPLATES,
        chunk_size: int = 1024,
    ):
        self.tokenizer = tokenizer
        self.rephrased = rephrased
        self.templates = tuple(templates)
        self.chunk_size = chunk_size
        self._entries: dict[tuple, tuple[tuple, torch.Tensor]] = {}

    def get(self, model: nn.Module, class_names: Sequence[str]) -> torch.Tensor:
        """Normalised class embeddings (C, D) of ``model.encode_text`` for this label space."""
        key = (id(model), tuple(class_names))
        weights = weights_fingerprint(model)
        entry = self._entries.get(key)
        if entry is not None and entry[0] == weights:
            return entry[1]
        device = next(model.parameters()).device
        with torch.no_grad():
            classifier = class_embeddings(
                model.encode_text, self.tokenizer, class_names, self.templates,
                self.rephrased, device=device, chunk_size=self.chunk_size,
            )
        self._entries[key] = (weights, classifier)
        return classifier

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def weights_fingerprint(model: nn.Module) -> tuple:
    """Identity and in-place version of every parameter: changes whenever a weight does."""
    return tuple((id(p), p._version) for p in model.parameters())
