"""One pre-LN CLIP residual block evaluated from its parts, so the attention can be swapped."""

from __future__ import annotations

import torch
from open_clip.transformer import ResidualAttentionBlock

from kiclip.model.attention import block_self_attention


def check_block(block: torch.nn.Module) -> None:
    """Refuse blocks that ``run_block`` would evaluate differently from open_clip."""
    if type(block) is not ResidualAttentionBlock or hasattr(block, "ln_1_kv"):
        raise ValueError(
            f"expected open_clip's default ResidualAttentionBlock, got {type(block).__name__}"
        )


def run_block(
    block: ResidualAttentionBlock,
    x: torch.Tensor,
    x_ln: torch.Tensor | None = None,
    num_frames: int = 1,
    temporal: bool = False,
    mask_boundary: bool = False,
) -> torch.Tensor:
    """``block(x)`` for x (N, L, D), with the attention of ``block_self_attention``.

    x_ln: ``block.ln_1(x)`` when the caller already has it (the fused inject+LayerNorm
    kernel produces both); computed here otherwise.
    """
    if x_ln is None:
        x_ln = block.ln_1(x)
    a = block_self_attention(block.attn, x_ln, num_frames, temporal, mask_boundary)
    x = x + block.ls_1(a)
    return x + block.ls_2(block.mlp(block.ln_2(x)))
