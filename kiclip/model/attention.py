"""Multi-head self-attention of a CLIP block, per frame or with the expanded temporal view.

Both run through ``F.scaled_dot_product_attention`` with the block's own
``nn.MultiheadAttention`` weights (``in_proj_weight/bias``, ``out_proj``): the temporal view
adds no parameters, so a CLIP checkpoint loads unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def expand_temporal_view(
    k: torch.Tensor, v: torch.Tensor, num_frames: int, mask_boundary: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Keys/values of frames t+1, t-1 and t, concatenated along the token axis.

    k, v: (B*T, H, L, Dh), frames of one clip contiguous (b-major, t-minor).
    Returns k', v' of shape (B*T, H, 3L, Dh) and an attention mask: None when
    ``mask_boundary`` is False (reference behaviour: the missing neighbour of the first and
    last frame is a block of zero keys/values, whose logits are 0 and so still take softmax
    mass), else a bool mask (B*T, 1, 1, 3L), True where a key may be attended.
    """
    bt, heads, length, dim = k.shape
    if bt % num_frames:
        raise ValueError(f"{bt} frames is not a multiple of num_frames={num_frames}")
    batch = bt // num_frames

    def neighbours(x: torch.Tensor) -> torch.Tensor:
        x = x.view(batch, num_frames, heads, length, dim)
        zero = x.new_zeros(batch, 1, heads, length, dim)
        nxt = torch.cat([x[:, 1:], zero], dim=1)  # frame t+1; zeros after the last frame
        prev = torch.cat([zero, x[:, :-1]], dim=1)  # frame t-1; zeros before the first
        return torch.cat([nxt, prev, x], dim=3).view(bt, heads, 3 * length, dim)

    mask = None
    if mask_boundary:
        t = torch.arange(num_frames, device=k.device)
        valid = torch.stack([t < num_frames - 1, t > 0, torch.ones_like(t, dtype=torch.bool)], dim=1)
        mask = valid.repeat_interleave(length, dim=1)  # (T, 3L)
        mask = mask.repeat(batch, 1).view(bt, 1, 1, 3 * length)
    return neighbours(k), neighbours(v), mask


def block_self_attention(
    attn: nn.MultiheadAttention,
    x: torch.Tensor,
    num_frames: int = 1,
    temporal: bool = False,
    mask_boundary: bool = False,
) -> torch.Tensor:
    """Self-attention of ``attn`` over x (N, L, D) → (N, L, D), N = B*T frames.

    temporal=False: each frame attends to its own L tokens (equals ``attn(x, x, x)``).
    temporal=True: queries of frame t attend to the 3L tokens of frames t+1, t-1, t
    (see ``expand_temporal_view``); same heads, scale 1/sqrt(Dh).
    """
    if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
        raise ValueError("expected CLIP's plain nn.MultiheadAttention (packed in_proj, no bias_k)")
    n, length, width = x.shape
    heads = attn.num_heads
    q, k, v = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(n, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    mask = None
    if temporal:
        k, v, mask = expand_temporal_view(k, v, num_frames, mask_boundary)
    dropout = attn.dropout if attn.training else 0.0
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
    out = out.transpose(1, 2).reshape(n, length, width)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)
