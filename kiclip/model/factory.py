"""Build an open_clip CLIP and its tokenizer, with weights from a local file or a tag."""

from __future__ import annotations

import logging
import os
import warnings
import zipfile
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.factory import load_state_dict as _open_clip_read_state_dict

from kiclip.config import DEFAULT_MODEL  # one default for the config and the factory
from kiclip.model.configs import kiclip_config

logger = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


class ArchitectureMismatchError(ValueError):
    """A weights file whose tensors do not fit the requested architecture."""


def create_clip(
    model_name: str = DEFAULT_MODEL,
    pretrained: str | os.PathLike | None = None,
    **overrides: Any,
) -> tuple[open_clip.CLIP, Callable]:
    """Create an open_clip ``CLIP`` (fp32, CPU, train mode) and its tokenizer.

    model_name: an open_clip config name (``ViT-B-16-quickgelu``) or one of kiclip's own
        (``kiclip-tiny``). Only standard CLIP towers are accepted: the student re-runs the
        visual blocks itself and needs open_clip's default ViT blocks.
    pretrained: None (random init), a local weights file (open_clip/OpenAI state dict
        ``.pt``/``.bin``, ``.safetensors``, or OpenAI's TorchScript ``.pt``), or an open_clip
        pretrained tag such as ``"openai"`` (needs a reachable hub).
    overrides: merged into the config, nested dicts key by key, e.g.
        ``vision_cfg={"image_size": 48}``.

    Returns (model, tokenizer); ``tokenizer(list_of_str)`` gives LongTensor (N, context_length).
    Raises FileNotFoundError naming the file when it is missing, ArchitectureMismatchError
    naming the file and the offending tensors when its weights do not fit.
    """
    cfg = _resolve_config(model_name)
    cfg = _deep_merge(cfg, overrides)
    _check_standard_clip(cfg, model_name)
    model = open_clip.CLIP(**cfg)

    if pretrained is not None:
        path = _weights_path(model_name, str(pretrained))
        load_clip_weights(model, path, model_name)

    if kiclip_config(model_name) is not None:
        tokenizer = open_clip.SimpleTokenizer(context_length=model.context_length)
    else:
        tokenizer = open_clip.get_tokenizer(model_name, context_length=model.context_length)
    return model, tokenizer


def load_clip_weights(model: torch.nn.Module, path: str | os.PathLike, model_name: str = "?") -> None:
    """Load a whole-CLIP weights file into ``model`` strictly (every key, every shape)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CLIP weights file not found: {path}")
    # OpenAI's released .pt files are TorchScript archives: torch.load refuses them under
    # weights_only=True (they carry code and go through torch.jit.load). Everything else is
    # read with weights_only=True, which cannot run pickled code.
    weights_only = not _is_torchscript_archive(path)
    try:
        with warnings.catch_warnings():
            # torch.load says it is dispatching a TorchScript archive to torch.jit.load: expected.
            warnings.filterwarnings("ignore", message=".*TorchScript archive.*")
            state_dict = _open_clip_read_state_dict(str(path), device="cpu", weights_only=weights_only)
    except Exception as exc:  # any reader error: the message must name the file
        raise ArchitectureMismatchError(f"could not read CLIP weights from {path}: {exc}") from exc
    if not isinstance(state_dict, dict) or not state_dict:
        raise ArchitectureMismatchError(f"{path} holds no state dict (got {type(state_dict).__name__})")

    expected = model.state_dict()
    # A scripted model also saves its non-persistent buffers (the text causal mask); they are
    # rebuilt at construction, so they are not weights to match.
    transient = {name for name, _ in model.named_buffers()} - expected.keys()
    state_dict = {k: v for k, v in state_dict.items() if k not in transient}
    # open_clip stores logit_scale as a 0-d or a 1-element tensor depending on the version.
    if "logit_scale" in state_dict and "logit_scale" in expected:
        state_dict["logit_scale"] = state_dict["logit_scale"].reshape(expected["logit_scale"].shape)
    problems = _state_dict_problems(state_dict, expected)
    if problems:
        raise ArchitectureMismatchError(
            f"weights in {path} do not match architecture '{model_name}': {problems}. "
            "Pick the model name that the file was trained with (OpenAI ViT-B/16 weights: "
            f"'{DEFAULT_MODEL}')."
        )
    model.load_state_dict(state_dict, strict=True)
    logger.info("loaded CLIP weights from %s", path)


def _resolve_config(model_name: str) -> dict:
    cfg = kiclip_config(model_name)
    if cfg is None:
        cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(
            f"unknown CLIP architecture '{model_name}'; use '{DEFAULT_MODEL}', 'kiclip-tiny' "
            "or another name from open_clip.list_models()"
        )
    return cfg


def _check_standard_clip(cfg: dict, model_name: str) -> None:
    vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    unsupported = [
        key for key, bad in [
            ("custom_text", cfg.get("custom_text", False)),
            ("multimodal_cfg", "multimodal_cfg" in cfg),
            ("vision_cfg.timm_model_name", vision.get("timm_model_name")),
            ("text_cfg.hf_model_name", text.get("hf_model_name")),
            ("vision_cfg.attentional_pool", vision.get("attentional_pool")),
            ("vision_cfg.pool_type != 'tok'", vision.get("pool_type", "tok") != "tok"),
            ("vision_cfg.final_ln_after_pool", vision.get("final_ln_after_pool")),
            ("vision_cfg.patch_dropout", vision.get("patch_dropout", 0.0)),
            ("vision_cfg.block_type", vision.get("block_type") not in (None, "default")),
        ] + [(f"vision_cfg.{k}", vision.get(k)) for k in (
            "qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")]
        if bad
    ]
    if unsupported:
        raise ValueError(
            f"'{model_name}' is not a standard CLIP ViT (has {', '.join(unsupported)}); "
            "kiclip's student re-runs open_clip's default visual blocks and supports only those"
        )


def _weights_path(model_name: str, pretrained: str) -> Path:
    """A local file for ``pretrained``: the path itself, or the download of a tag."""
    path = Path(pretrained).expanduser()
    looks_like_path = os.sep in pretrained or "/" in pretrained or path.suffix in _WEIGHT_SUFFIXES
    if path.is_file():
        return path
    if looks_like_path:
        raise FileNotFoundError(f"CLIP weights file not found: {path}")
    tag_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not tag_cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise FileNotFoundError(
            f"pretrained '{pretrained}' is neither an existing file nor an open_clip tag of "
            f"'{model_name}' (tags: {tags or 'none'})"
        )
    try:
        return Path(open_clip.download_pretrained(tag_cfg))
    except Exception as exc:  # network or hub errors: say what to do instead
        raise RuntimeError(
            f"could not download open_clip weights '{model_name}/{pretrained}' ({exc}); "
            "on a machine without a hub pass a local weights file instead"
        ) from exc


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name or name.startswith("code/") for name in archive.namelist())


def _state_dict_problems(got: dict, expected: dict, show: int = 5) -> str:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [
        f"{k} {tuple(got[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in got and hasattr(got[k], "shape") and got[k].shape != expected[k].shape
    ]
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - show} more)" if len(items) > show else ""
            parts.append(f"{label} {len(items)}: {', '.join(items[:show])}{more}")
    return "; ".join(parts)


def _deep_merge(base: dict, overrides: dict) -> dict:
    merged = deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
