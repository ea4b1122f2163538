"""The KICLIP student: CLIP's visual tower run block by block on video frames, with
expand-temporal-view attention and knowledge injection from a frozen copy of the blocks."""

from __future__ import annotations

import copy

import torch
from open_clip.model import CLIP
from torch import nn
from torch.utils.checkpoint import checkpoint

from kiclip.model.block import check_block, run_block
from kiclip_kernels import inject_layernorm


class VideoStudent(nn.Module):
    """Trainable video encoder around an open_clip ``CLIP`` (docs/model.md §1–2).

    Owns ``clip`` (trained whole: visual tower, text tower, logit_scale) and, when
    ``injection`` is on, ``frozen_blocks``: deep copies of the visual blocks taken at
    construction (so build the student after loading CLIP weights), requires_grad False.

    Visual forward, h = stem output, f = h:
        for i in 0..L-1:  h = mix*h + (1-mix)*f;  f = F_i(f);  h = S_i(h)
    S_i is visual block i with temporal attention (``temporal``), F_i its frozen copy with
    per-frame attention. The mix at i = 0 is the identity (f = h), so it is skipped, and
    F_{L-1}'s output is never used, so only F_0..F_{L-2} are stored and run (the reference
    computed and discarded it). Gradients reach the stem through both streams.

    mix: weight of the student stream in the mix (0.5 in the method, docs/model.md §2).
    mask_boundary: False keeps the reference's unmasked zero keys/values for the missing
        neighbours of the first/last frame; True masks them out.
    checkpointing: recompute each layer in backward (``torch.utils.checkpoint``,
        non-reentrant), injection included; also turns on open_clip's text-tower
        checkpointing.
    """

    def __init__(
        self,
        clip_model: CLIP,
        num_frames: int,
        temporal: bool = True,
        injection: bool = True,
        mix: float = 0.5,
        mask_boundary: bool = False,
        checkpointing: bool = False,
    ):
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        visual = clip_model.visual
        if getattr(visual.patch_dropout, "prob", 0.0) > 0.0:
            # Dropping different patches per frame would misalign the temporal keys.
            raise ValueError("VideoStudent needs patch_dropout disabled in the CLIP config")
        if visual.attn_pool is not None or visual.pool_type != "tok" or visual.final_ln_after_pool:
            raise ValueError("VideoStudent needs CLS-token pooling with ln_post before pooling")
        for block in visual.transformer.resblocks:
            check_block(block)

        self.clip = clip_model
        self.num_frames = num_frames
        self.temporal = temporal
        self.injection = injection
        self.mix = float(mix)
        self.mask_boundary = mask_boundary
        self.checkpointing = checkpointing
        if injection:
            frozen = [copy.deepcopy(b) for b in visual.transformer.resblocks[:-1]]
            self.frozen_blocks = nn.ModuleList(frozen).requires_grad_(False)
        else:
            self.frozen_blocks = None

    @property
    def embed_dim(self) -> int:
        """D, the joint image-text feature size (projector width)."""
        return self.clip.visual.output_dim

    @property
    def logit_scale(self) -> nn.Parameter:
        """CLIP's log temperature (0-d parameter); logits use ``logit_scale.exp()``."""
        return self.clip.logit_scale

    @property
    def checkpointing(self) -> bool:
        return self._checkpointing

    @checkpointing.setter
    def checkpointing(self, enable: bool) -> None:
        self._checkpointing = bool(enable)
        self.clip.transformer.grad_checkpointing = bool(enable)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features (N, D), unnormalised, from tokens (N, context_length)."""
        return self.clip.encode_text(tokens)

    def encode_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Projected, unnormalised per-frame features (B, T, D) of video (B, 3, T, H, W)."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"expected video (B, 3, T, H, W), got {tuple(video.shape)}")
        b, _, t, height, width = video.shape
        if t != self.num_frames:
            raise ValueError(f"video has {t} frames, the student was built for {self.num_frames}")
        frames = video.transpose(1, 2).reshape(b * t, 3, height, width)
        h = self._stem(frames)
        f = h if self.injection else None
        for i in range(len(self.clip.visual.transformer.resblocks)):
            if self.checkpointing and torch.is_grad_enabled():
                h, f = checkpoint(self._layer, i, h, f, use_reentrant=False)
            else:
                h, f = self._layer(i, h, f)
        return self._head(h).view(b, t, -1)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        """Frames (N, 3, H, W) → tokens (N, 1 + grid², width); open_clip's ``_embeds``."""
        visual = self.clip.visual
        x = visual.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(x)

    def _layer(self, i: int, h: torch.Tensor, f: torch.Tensor | None):
        """Layer i of the recurrence on (N, L, width) streams; returns the new (h, f).

        The streams stay batch-first whatever ``transformer.batch_first`` says: the blocks
        are evaluated from their parts (``run_block``), never through their forward.
        """
        block = self.clip.visual.transformer.resblocks[i]
        if f is not None and i > 0:
            h, h_ln = inject_layernorm(h, f, block.ln_1.weight, block.ln_1.bias, self.mix, block.ln_1.eps)
        else:
            h_ln = None
        if f is not None and i < len(self.frozen_blocks):
            f = run_block(self.frozen_blocks[i], f)
        h = run_block(block, h, h_ln, self.num_frames, self.temporal, self.mask_boundary)
        return h, f

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        """CLS token → ln_post → proj: (N, L, width) → (N, D)."""
        visual = self.clip.visual
        pooled = visual.ln_post(h[:, 0])
        return pooled @ visual.proj if visual.proj is not None else pooled
