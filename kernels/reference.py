"""Pure-PyTorch references for the fused ops: the ground truth for tests, and the backend the
dispatcher uses wherever Triton is unavailable or unsuitable (CPU, no ``triton`` package).

This module must never import Triton, so that ``kernels`` keeps working without it.
"""

import torch
import torch.nn.functional as F


def inject_layernorm_reference(
    h: torch.Tensor,
    f: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mix: float = 0.5,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Knowledge-injection mix followed by LayerNorm over the last dimension.

    Args:
        h, f: (..., D) student and frozen residual streams, same shape and dtype.
        weight, bias: (D,) LayerNorm affine parameters (or None).
    Returns:
        y: (..., D) ``mix*h + (1-mix)*f`` in h's dtype (the new residual stream).
        ln_y: (..., D) ``LayerNorm(y)`` cast back to h's dtype, as open_clip's LayerNorm does
        (under autocast F.layer_norm alone would return fp32).
    """
    y = mix * h + (1.0 - mix) * f
    ln_y = F.layer_norm(y, (y.shape[-1],), weight, bias, eps)
    return y, ln_y.to(y.dtype)


def distill_loss_reference(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over rows of ``1 - cos(student_row, teacher_row)``.

    Args:
        student: (N, D) features that receive gradient.
        teacher: (N, D) target features; treated as a constant (detached), whatever its
            ``requires_grad``, because the teacher is frozen.
        eps: norm floor, as in ``F.normalize``.
    Returns:
        fp32 scalar.
    """
    s = F.normalize(student.float(), dim=-1, eps=eps)
    t = F.normalize(teacher.detach().float(), dim=-1, eps=eps)
    return (1.0 - (s * t).sum(-1)).mean()
