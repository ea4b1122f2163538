"""Per-iteration learning-rate schedule: linear warm-up, then cosine decay (docs/model.md §5)."""

from __future__ import annotations

import math


def lr_at(step: int, *, total_steps: int, warmup_steps: int, peak_lr: float,
          warmup_start_lr: float, min_lr: float) -> float:
    """Learning rate for optimiser step ``step`` (0-based) of ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return warmup_start_lr + (peak_lr - warmup_start_lr) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def lambda_for(peak_lr: float, **kwargs):
    """A LambdaLR multiplier: every param group's base lr is ``peak_lr``."""
    return lambda step: lr_at(step, peak_lr=peak_lr, **kwargs) / peak_lr
