"""VideoStudent: equivalence with open_clip, temporal attention, knowledge injection,
frozen weights, gradient paths and activation checkpointing."""

import copy
import math

import pytest
import torch
from open_clip.transformer import PatchDropout
from torch import nn

from kiclip.model import VideoStudent, block_self_attention, create_clip

B, T, SIZE = 2, 3, 32


def tiny_clip(seed=0):
    torch.manual_seed(seed)
    clip, _ = create_clip("kiclip-tiny")
    return clip


def video(seed=1, b=B, t=T):
    return torch.randn(b, 3, t, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def frames_of(v):
    return v.transpose(1, 2).reshape(-1, 3, SIZE, SIZE)


# ---- explicit references ---------------------------------------------------------------

def gather_softmax_attention(attn: nn.MultiheadAttention, x, num_frames, mask_boundary):
    """Expanded temporal view by explicit loops: per clip, frame and head, gather the keys of
    frames t+1, t-1, t (zeros, or nothing when masked, for missing ones), softmax, sum."""
    n, length, width = x.shape
    heads = attn.num_heads
    dh = width // heads
    w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
    b_q, b_k, b_v = attn.in_proj_bias.chunk(3)
    q, k, v = x @ w_q.t() + b_q, x @ w_k.t() + b_k, x @ w_v.t() + b_v
    q, k, v = (t.view(n // num_frames, num_frames, length, heads, dh) for t in (q, k, v))
    out = torch.zeros(n // num_frames, num_frames, length, heads, dh)
    for b in range(n // num_frames):
        for t in range(num_frames):
            keys, values = [], []
            for s in (t + 1, t - 1, t):
                if 0 <= s < num_frames:
                    keys.append(k[b, s])
                    values.append(v[b, s])
                elif not mask_boundary:
                    keys.append(torch.zeros(length, heads, dh))
                    values.append(torch.zeros(length, heads, dh))
            keys, values = torch.cat(keys), torch.cat(values)  # (S, H, dh)
            for h in range(heads):
                logits = q[b, t, :, h] @ keys[:, h].t() / math.sqrt(dh)
                out[b, t, :, h] = logits.softmax(-1) @ values[:, h]
    out = out.reshape(n, length, width)
    return out @ attn.out_proj.weight.t() + attn.out_proj.bias


def naive_block(block, x, num_frames, temporal):
    """One open_clip block; its own forward when per-frame, explicit loops when temporal."""
    if not temporal:
        return block(x)
    x = x + gather_softmax_attention(block.attn, block.ln_1(x), num_frames, mask_boundary=False)
    return x + block.mlp(block.ln_2(x))


def naive_kiclip(clip, frozen_blocks, v, mix=0.5, temporal=True, detach_frozen=False):
    """docs/model.md §2 literally: h = mix*h + (1-mix)*f; f = F_i(f); h = S_i(h), F_11 included."""
    visual = clip.visual
    h = visual._embeds(frames_of(v))
    f = h.detach() if detach_frozen else h
    for student_block, frozen_block in zip(visual.transformer.resblocks, frozen_blocks):
        h = mix * h + (1 - mix) * f
        f = frozen_block(f)
        h = naive_block(student_block, h, v.shape[2], temporal)
    return (visual.ln_post(h[:, 0]) @ visual.proj).view(v.shape[0], v.shape[2], -1)


# ---- tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_first", [True, False])
def test_plain_student_equals_open_clip_encode_image(batch_first):
    clip = tiny_clip().eval()
    if not batch_first:  # open_clip runs the stack sequence-first (LND) when asked to
        clip.visual.transformer.batch_first = False
        for block in clip.visual.transformer.resblocks:
            block.attn.batch_first = False
    student = VideoStudent(clip, T, temporal=False, injection=False).eval()
    v = video()
    with torch.no_grad():
        ours = student.encode_frames(v)
        theirs = clip.encode_image(frames_of(v)).view(B, T, -1)
    assert ours.shape == (B, T, clip.visual.output_dim)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mask_boundary", [False, True])
@pytest.mark.parametrize("num_frames", [1, 2, 4])
def test_temporal_attention_equals_gather_then_softmax(mask_boundary, num_frames):
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 2, batch_first=True)
    nn.init.normal_(attn.in_proj_bias)
    nn.init.normal_(attn.out_proj.bias)
    x = torch.randn(2 * num_frames, 5, 16)
    with torch.no_grad():
        ours = block_self_attention(attn, x, num_frames, temporal=True, mask_boundary=mask_boundary)
        ref = gather_softmax_attention(attn, x, num_frames, mask_boundary)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_boundary_mask_changes_only_end_frames():
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 2, batch_first=True)
    x = torch.randn(3, 5, 16)  # one clip of 3 frames
    with torch.no_grad():
        zeros = block_self_attention(attn, x, 3, temporal=True, mask_boundary=False)
        masked = block_self_attention(attn, x, 3, temporal=True, mask_boundary=True)
    torch.testing.assert_close(zeros[1], masked[1], atol=1e-6, rtol=0)
    assert not torch.allclose(zeros[0], masked[0], atol=1e-4)
    assert not torch.allclose(zeros[2], masked[2], atol=1e-4)


def test_per_frame_attention_equals_multihead_attention():
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4, batch_first=True)
    x = torch.randn(4, 7, 16)
    with torch.no_grad():
        torch.testing.assert_close(block_self_attention(attn, x), attn(x, x, x, need_weights=False)[0],
                                   atol=1e-5, rtol=0)


@pytest.mark.parametrize("mix,temporal", [(0.5, True), (0.3, True), (0.5, False)])
def test_injection_equals_naive_recurrence(mix, temporal):
    clip = tiny_clip()
    frozen = copy.deepcopy(clip.visual.transformer.resblocks)  # F_0..F_{L-1}, all of them
    student = VideoStudent(clip, T, temporal=temporal, injection=True, mix=mix)
    with torch.no_grad():
        for p in clip.visual.transformer.parameters():  # student blocks drift from the frozen copy
            p.add_(0.05 * torch.randn_like(p))
        v = video()
        ours = student.encode_frames(v)
        ref = naive_kiclip(clip, frozen, v, mix=mix, temporal=temporal)
        no_ki = VideoStudent(clip, T, temporal=temporal, injection=False).encode_frames(v)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(ours, no_ki, atol=1e-3)  # injection is not a no-op here


def test_frozen_copy_is_independent_and_skips_last_block():
    clip = tiny_clip()
    student = VideoStudent(clip, T)
    blocks = clip.visual.transformer.resblocks
    assert len(student.frozen_blocks) == len(blocks) - 1
    for frozen, live in zip(student.frozen_blocks, blocks):
        for (name, p), q in zip(frozen.named_parameters(), live.parameters()):
            assert not p.requires_grad, name
            assert p.data_ptr() != q.data_ptr()
            torch.testing.assert_close(p, q, atol=0, rtol=0)


def test_stem_gets_gradient_through_frozen_stream():
    clip = tiny_clip()
    frozen = copy.deepcopy(clip.visual.transformer.resblocks).requires_grad_(False)
    student = VideoStudent(clip, T)
    v = video()
    student.encode_frames(v).square().sum().backward()
    ours = clip.visual.conv1.weight.grad.clone()
    assert all(p.grad is None for p in student.frozen_blocks.parameters())

    def stem_grad(detach_frozen):
        clip.zero_grad()
        naive_kiclip(clip, frozen, v, detach_frozen=detach_frozen).square().sum().backward()
        return clip.visual.conv1.weight.grad.clone()

    through_both = stem_grad(False)
    student_path_only = stem_grad(True)
    torch.testing.assert_close(ours, through_both, atol=1e-5, rtol=1e-4)
    # The frozen stream's share of the stem gradient is far from zero.
    assert (through_both - student_path_only).norm() > 1e-2 * through_both.norm()


@pytest.mark.parametrize("mask_boundary", [False, True])
def test_checkpointed_run_matches_plain_run(mask_boundary):
    clip = tiny_clip()
    plain = VideoStudent(clip, T, mask_boundary=mask_boundary)
    ckpt = copy.deepcopy(plain)
    ckpt.checkpointing = True
    assert ckpt.clip.transformer.grad_checkpointing  # the text tower too
    v = video()
    outs = []
    for model in (plain, ckpt):
        out = model.encode_frames(v)
        out.square().sum().backward()
        outs.append(out.detach())
    torch.testing.assert_close(outs[0], outs[1], atol=1e-6, rtol=0)
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if p.grad is None:
            assert q.grad is None, name
        else:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)
    # Injection stays on under checkpointing: the result differs from a run without it.
    with torch.no_grad():
        no_ki = VideoStudent(clip, T, injection=False, mask_boundary=mask_boundary).encode_frames(v)
    assert not torch.allclose(outs[1], no_ki, atol=1e-3)


def test_input_checks_and_text_passthrough():
    clip = tiny_clip()
    student = VideoStudent(clip, T)
    with pytest.raises(ValueError, match="frames"):
        student.encode_frames(video(t=T + 1))
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        student.encode_frames(video(t=4).transpose(1, 2))
    tokens = torch.randint(0, 49408, (2, clip.context_length))
    torch.testing.assert_close(student.encode_text(tokens), clip.encode_text(tokens))
    assert student.logit_scale is clip.logit_scale
    with pytest.raises(ValueError, match="patch_dropout"):
        clip.visual.patch_dropout = PatchDropout(0.5)
        VideoStudent(clip, T)
