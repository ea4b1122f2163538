"""The distillation projectors P_v and P_t (METHOD §3)."""

from __future__ import annotations

from torch import nn


class Projector(nn.Sequential):
    """Linear(D→D, no bias) → GELU → Linear(D→D, no bias), on features (..., D).

    The first layer is Kaiming-normal, the second zero, so ``f + alpha * P(f)`` starts as
    the identity and distillation starts from the plain student features.
    """

    def __init__(self, dim: int):
        super().__init__(nn.Linear(dim, dim, bias=False), nn.GELU(), nn.Linear(dim, dim, bias=False))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_normal_(self[0].weight)
        nn.init.zeros_(self[2].weight)
