"""The distillation projectors P_v and P_t (docs/model.md §3)."""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Sequential):
    """Linear(D→D, no bias) → GELU → Linear(D→D, no bias), on features (..., D).

    The first layer is Kaiming-normal, the second zero, so ``f + alpha * P(f)`` starts as
    the identity and distillation starts from the plain student features.
    """

    def __init__(self, dim: int):
        super().__init__(nn.Linear(dim, dim, bias=False), nn.GELU(), nn.Linear(dim, dim, bias=False))
        self.reset_parameters()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """P(features) in the dtype of ``features``. The matmuls run in the layers' own dtype
        (bf16 when DeepSpeed trains in bf16), so an fp32 caller keeps its fp32 residual sum
        (docs/model.md §9)."""
        return super().forward(features.to(self[0].weight.dtype)).to(features.dtype)

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self[0].weight)
        nn.init.zeros_(self[2].weight)
