"""Teacher, projectors, and one end-to-end optimiser run: what trains and what stays frozen."""

import copy

import torch
import torch.nn.functional as F

from kiclip.losses import KiclipLoss
from kiclip.model import Projector, Teacher, VideoStudent, create_clip, video_logits
from kiclip.text import TemplateSampler, class_embeddings

T = 2


def test_teacher_is_frozen_eval_and_matches_encode_image():
    torch.manual_seed(0)
    clip, _ = create_clip("kiclip-tiny")
    reference = copy.deepcopy(clip).eval()
    teacher = Teacher(clip)
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    v = torch.randn(2, 3, T, 32, 32, requires_grad=True)
    out = teacher.encode_frames(v)
    assert not out.requires_grad
    expected = reference.encode_image(v.detach().transpose(1, 2).reshape(-1, 3, 32, 32)).view(2, T, -1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    tokens = torch.randint(0, 49408, (3, clip.context_length))
    assert not teacher.encode_text(tokens).requires_grad


def test_projector_init_starts_as_identity_branch():
    torch.manual_seed(0)
    proj = Projector(256)
    assert [type(m).__name__ for m in proj] == ["Linear", "GELU", "Linear"]
    assert proj[0].bias is None and proj[2].bias is None
    assert torch.count_nonzero(proj[2].weight) == 0
    # Kaiming-normal (fan_in, gain sqrt(2)): std sqrt(2 / 256).
    assert abs(proj[0].weight.std().item() - (2 / 256) ** 0.5) < 0.005
    assert abs(proj[0].weight.mean().item()) < 0.005
    f = F.normalize(torch.randn(5, 256), dim=-1)
    torch.testing.assert_close(f + 0.1 * proj(f), f)


def test_optimiser_steps_train_student_and_projectors_only():
    torch.manual_seed(0)
    clip, tokenizer = create_clip("kiclip-tiny")
    teacher = Teacher(copy.deepcopy(clip))
    student = VideoStudent(clip, T)
    loss_fn = KiclipLoss(student.embed_dim)
    frozen_before = copy.deepcopy(student.frozen_blocks.state_dict())
    teacher_before = copy.deepcopy(teacher.state_dict())
    student_before = copy.deepcopy(clip.state_dict())
    trainable = [p for p in list(student.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=1e-2)
    names = ["red circle", "blue square", "green star"]
    sampler = TemplateSampler(seed=0)
    student.train()
    teacher.train()
    for _ in range(2):
        v = torch.randn(2, 3, T, 32, 32)
        labels = torch.tensor([0, 2])
        templates = sampler.draw()
        g = class_embeddings(student.encode_text, tokenizer, names, templates, rephrased=False)
        g_t = class_embeddings(teacher.encode_text, tokenizer, names, templates, rephrased=False)
        terms = loss_fn(student.encode_frames(v), g, labels, student.logit_scale,
                        teacher.encode_frames(v), g_t)
        optimiser.zero_grad()
        terms.total.backward()
        assert all(p.grad is None for p in student.frozen_blocks.parameters())
        assert all(p.grad is None for p in teacher.parameters())
        assert clip.visual.conv1.weight.grad is not None and clip.token_embedding.weight.grad is not None
        assert student.logit_scale.grad is not None
        optimiser.step()
    assert not teacher.training
    for key, value in student.frozen_blocks.state_dict().items():
        torch.testing.assert_close(value, frozen_before[key], atol=0, rtol=0)
    for key, value in teacher.state_dict().items():
        torch.testing.assert_close(value, teacher_before[key], atol=0, rtol=0)
    changed = [k for k, v in clip.state_dict().items() if not torch.equal(v, student_before[k])]
    assert any(k.startswith("visual.transformer") for k in changed)
    assert any(k.startswith("transformer.") for k in changed)  # the text tower trains too
    assert torch.count_nonzero(loss_fn.proj_v[2].weight) > 0


def test_video_logits_is_mean_of_frame_logits():
    torch.manual_seed(0)
    frames, classes = torch.randn(2, 4, 8), torch.randn(5, 8)
    scale = torch.tensor(4.6)
    per_frame = scale.exp() * F.normalize(frames, dim=-1) @ F.normalize(classes, dim=-1).t()
    torch.testing.assert_close(video_logits(frames, classes, scale), per_frame.mean(1))
