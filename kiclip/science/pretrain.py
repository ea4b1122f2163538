"""Contrastive pre-training of a small CLIP on captioned frames: the stand-in for web-scale
CLIP pre-training when no weights can be downloaded (the teacher of the synthetic science check).

The frames and their attribute words come from the caller; this module owns the web-like
captions (attributes dropped at random), the ``open_clip.ClipLoss`` training loop and the
zero-shot check on held-out frames. The result is a plain open_clip state dict, which
``kiclip.model.create_clip(name, path)`` and ``train.py --pretrained`` load.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kiclip.data.sampling import CLIP_MEAN, CLIP_STD

log = logging.getLogger(__name__)

# What stands in for a dropped attribute, as loose alt text would say it.
_NO_SHAPE = ("shape", "object", "thing")
_PREFIXES = ("", "a ", "a photo of a ", "a video of a ", "an image of a ")


def web_caption(colour: str, shape: str, direction: str, rng: np.random.Generator,
                keep: Sequence[float] = (0.5, 0.8, 0.8)) -> str:
    return _web_caption(colour, shape, direction, rng, keep)[0]


def _web_caption(colour: str, shape: str, direction: str, rng: np.random.Generator,
                 keep: Sequence[float]) -> tuple[str, np.ndarray]:
    """A caption of one frame with each attribute kept with its probability in ``keep``
    (colour, shape, direction). Colour is the easiest cue, so it is dropped most: captions
    without it are the negatives that teach shape and motion.

    E.g. "a red circle moving left", "a circle", "a photo of a red shape moving left",
    "a shape moving left"; when every attribute is dropped one is put back, so a caption is
    never empty of content.
    """
    kept = rng.random(3) < np.asarray(keep)
    if not kept.any():
        kept[int(rng.integers(3))] = True
    noun = shape if kept[1] else str(rng.choice(_NO_SHAPE))
    words = ([colour] if kept[0] else []) + [noun]
    if kept[2]:
        words += ["moving", direction]
    prefix = str(rng.choice(_PREFIXES))
    if prefix.endswith("a ") and words[0][0] in "aeiou":
        prefix = prefix[:-2] + "an "
    return prefix + " ".join(words), kept


def clean_batch(attributes: Sequence[tuple[str, str, str]], rng: np.random.Generator,
                keep: Sequence[float], size: int, max_tries: int = 0) -> tuple[list[int], list[str]]:
    """A batch with no false negatives: frames in random order, each with a fresh web
    caption, a frame joining only when its caption describes no frame already in the batch
    and no caption already in the batch describes it ("a circle" rules out every other
    circle). ClipLoss treats every off-diagonal pair as a negative; with random batches of
    48 classes and dropped attributes many of them are true matches, which pushes apart
    exactly the images (same colour, other shape) that shape and motion must separate.
    Returns (frame indices, captions); the batch may be smaller than ``size``.
    """
    n = len(attributes)
    tries = max_tries or 8 * size
    index, captions, kept_masks, values = [], [], [], []
    for i in rng.choice(n, size=min(n, tries), replace=False):
        caption, kept = _web_caption(*attributes[i], rng, keep)
        mine = attributes[i]
        clash = False
        for other, other_kept in zip(values, kept_masks):
            if (all(mine[k] == other[k] for k in range(3) if kept[k])
                    or all(mine[k] == other[k] for k in range(3) if other_kept[k])):
                clash = True
                break
        if clash:
            continue
        index.append(int(i))
        captions.append(caption)
        kept_masks.append(kept)
        values.append(mine)
        if len(index) == size:
            break
    return index, captions


def frames_to_tensor(frames: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 (N, H, W, 3) → float (N, 3, S, S): resized (bilinear, antialiased) to S and
    normalised with CLIP's mean/std, as the test-time video loader prepares a frame."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    if x.shape[-1] != image_size or x.shape[-2] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False,
                          antialias=True)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1) * 255
    return (x - mean) / std


@dataclass
class PretrainSettings:
    """Optimisation of the contrastive pre-training (all of it goes into the cache key)."""

    steps: int = 400
    batch_size: int = 128
    lr: float = 2e-3
    warmup_steps: int = 100
    weight_decay: float = 0.1
    keep: tuple[float, float, float] = (0.5, 0.8, 0.8)  # P(caption keeps colour, shape, direction)
    batching: str = "random"     # "random" frames, or "clean": no caption describes another frame
    logit_scale: float = 0.0     # initial temperature (0 = open_clip's 1/0.07)
    learn_scale: bool = True     # False: the temperature stays at its initial value
    # The text tower stays at its random init for this many steps. Without it the tiny CLIP
    # settles on colour alone: colour is learnt first, the text tower then maps every shape and
    # direction word of a colour to one point, and no gradient is left to separate them. Frozen,
    # its random (but distinct) caption embeddings make the image tower learn shape and motion.
    text_freeze_steps: int = 120
    max_seconds: float = 0.0     # safety cap on wall time (0 = none); stops early, logged


def pretrain_clip(model: torch.nn.Module, tokenizer: Callable, images: torch.Tensor,
                  attributes: Sequence[tuple[str, str, str]], settings: PretrainSettings,
                  seed: int = 0, progress: bool = True) -> dict:
    """Train ``model`` (an open_clip CLIP) in place with ``open_clip.ClipLoss``.

    images (N, 3, S, S) normalised frames; attributes[i] = (colour, shape, direction) words of
    frame i. Each step draws a batch of frames and a fresh web caption per frame. Returns
    {"steps", "seconds", "first_loss", "last_loss"}.
    """
    import open_clip

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    loss_fn = open_clip.ClipLoss()
    if settings.batching not in ("random", "clean"):
        raise ValueError(f"batching must be 'random' or 'clean', got {settings.batching!r}")
    _set_temperature(model, settings)
    optimizer = _adamw(model, settings)
    text_params = _text_tower_parameters(model)
    bar = _progress(settings.steps, progress)
    model.train()
    started = time.perf_counter()
    first = last = float("nan")
    step = 0
    for step in range(settings.steps):
        if settings.max_seconds and time.perf_counter() - started > settings.max_seconds:
            log.warning("stopping at step %d of %d: --minutes cap reached", step, settings.steps)
            break
        index, captions = draw_batch(images, attributes, rng, settings)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, settings)
        loss = _contrastive_loss(model, tokenizer, loss_fn, images[torch.from_numpy(index)],
                                 captions)
        _optimiser_step(model, optimizer, loss, text_params if step < settings.text_freeze_steps
                        else [])
        last = float(loss.detach())
        first = last if step == 0 else first
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{last:.3f}")
    else:
        step = settings.steps
    bar.close()
    return {"steps": step, "seconds": time.perf_counter() - started,
            "first_loss": first, "last_loss": last}


def _set_temperature(model: torch.nn.Module, settings: PretrainSettings) -> None:
    """The initial temperature (when set) and whether it learns."""
    if settings.logit_scale:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(settings.logit_scale))
    model.logit_scale.requires_grad_(settings.learn_scale)


def _adamw(model: torch.nn.Module, settings: PretrainSettings) -> torch.optim.AdamW:
    """AdamW with CLIP's betas/eps; weight decay on matrices only (not on embeddings, gains,
    biases or the temperature)."""
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=settings.lr, betas=(0.9, 0.98), eps=1e-6)


def lr_at(step: int, settings: PretrainSettings) -> float:
    """Learning rate of ``step``: linear warm-up to ``settings.lr``, then cosine to 0."""
    if step < settings.warmup_steps:
        return settings.lr * (step + 1) / settings.warmup_steps
    done = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return settings.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))


def _text_tower_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Every parameter outside the image tower and the temperature: what the freeze holds."""
    visual = {id(p) for p in model.visual.parameters()} | {id(model.logit_scale)}
    return [p for p in model.parameters() if id(p) not in visual]


def draw_batch(images: torch.Tensor, attributes: Sequence[tuple[str, str, str]],
               rng: np.random.Generator, settings: PretrainSettings
               ) -> tuple[np.ndarray, list[str]]:
    """(frame indices, one fresh web caption per frame) of one step, as ``settings.batching``
    says: "clean" (no false negatives, see ``clean_batch``) or "random" frames."""
    if settings.batching == "clean":
        picked, captions = clean_batch(attributes, rng, settings.keep, settings.batch_size)
        return np.asarray(picked), captions
    index = rng.choice(len(images), size=min(settings.batch_size, len(images)), replace=False)
    return index, [web_caption(*attributes[i], rng, settings.keep) for i in index]


def _contrastive_loss(model: torch.nn.Module, tokenizer: Callable, loss_fn: Callable,
                      batch: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """ClipLoss of a batch of frames (B, 3, S, S) against their captions (B,)."""
    image_features = model.encode_image(batch, normalize=True)
    text_features = model.encode_text(tokenizer(captions), normalize=True)
    return loss_fn(image_features, text_features, model.logit_scale.exp())


def _optimiser_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss: torch.Tensor,
                    frozen: list[torch.nn.Parameter]) -> None:
    """Backward, drop the gradients of ``frozen``, clip to norm 1, step, clamp the temperature."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for p in frozen:
        p.grad = None
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    with torch.no_grad():  # CLIP's clamp: temperature at most 100
        model.logit_scale.clamp_(0, math.log(100))


@torch.no_grad()
def zero_shot_accuracy(model: torch.nn.Module, tokenizer: Callable, images: torch.Tensor,
                       labels: torch.Tensor, class_names: Sequence[str],
                       templates: Sequence[str]) -> torch.Tensor:
    """Per-image correctness (N,) bool of zero-shot classification against ``class_names``,
    classifier = per-template normalised text embeddings averaged (as evaluation does)."""
    from kiclip.text import class_embeddings

    model.eval()
    classifier = class_embeddings(lambda t: model.encode_text(t), tokenizer, class_names,
                                  templates, rephrased=False)
    predictions = []
    for chunk in images.split(1024):
        features = F.normalize(model.encode_image(chunk), dim=-1)
        predictions.append((features @ classifier.T).argmax(-1))
    return torch.cat(predictions) == labels


def _progress(total: int, enabled: bool):
    try:
        from tqdm import tqdm
        return tqdm(total=total, disable=not enabled, desc="pretrain", unit="step")
    except ImportError:  # tqdm is optional: a do-nothing bar
        class _Bar:
            def update(self, n): ...
            def set_postfix(self, **kw): ...
            def close(self): ...
        return _Bar()
