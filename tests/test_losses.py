"""The KICLIP loss: CE on video logits, distillation terms, λ and α, the off switch."""

import pytest
import torch
import torch.nn.functional as F

from kiclip.losses import KiclipLoss, LossTerms

B, T, C, D = 3, 4, 5, 16


def inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {
        "frame_features": torch.randn(B, T, D, generator=g, requires_grad=True),
        "class_embeddings": torch.randn(C, D, generator=g, requires_grad=True),
        "labels": torch.tensor([0, 3, 4]),
        "logit_scale": torch.tensor(2.0, requires_grad=True),
        "teacher_frames": torch.randn(B, T, D, generator=g),
        "teacher_classes": torch.randn(C, D, generator=g),
    }


def one_minus_cos(a, b):
    return (1 - F.cosine_similarity(a, b, dim=-1)).mean()


def manual_terms(x, loss_fn, lam, alpha):
    f = F.normalize(x["frame_features"], dim=-1)
    g = F.normalize(x["class_embeddings"], dim=-1)
    logits = (x["logit_scale"].exp() * torch.einsum("btd,cd->btc", f, g)).mean(1)
    ce = F.cross_entropy(logits, x["labels"])
    f_hat = f + alpha * loss_fn.proj_v(f)
    g_hat = g + alpha * loss_fn.proj_t(g)
    d_img = one_minus_cos(f_hat, x["teacher_frames"])
    d_txt = one_minus_cos(g_hat, x["teacher_classes"])
    return ce, d_img, d_txt, ce + lam * (d_img + d_txt)


@pytest.mark.parametrize("lam,alpha", [(2.0, 0.1), (0.5, 0.3)])
def test_terms_match_manual_formula(lam, alpha):
    torch.manual_seed(0)
    loss_fn = KiclipLoss(D, lam=lam, alpha=alpha)
    for proj in (loss_fn.proj_v, loss_fn.proj_t):  # nonzero second layer so α matters
        torch.nn.init.normal_(proj[2].weight, std=0.5)
    x = inputs()
    terms = loss_fn(**x)
    assert isinstance(terms, LossTerms) and set(terms._asdict()) == {"total", "ce", "distill_image", "distill_text"}
    for got, want in zip((terms.ce, terms.distill_image, terms.distill_text, terms.total),
                         manual_terms(x, loss_fn, lam, alpha)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_defaults_are_method_values():
    loss_fn = KiclipLoss(D)
    assert (loss_fn.lam, loss_fn.alpha, loss_fn.distill) == (2.0, 0.1, True)


def test_lambda_scales_only_distillation():
    torch.manual_seed(0)
    x = inputs()
    a, b = KiclipLoss(D, lam=1.0), KiclipLoss(D, lam=3.0)
    b.load_state_dict(a.state_dict())
    ta, tb = a(**x), b(**x)
    torch.testing.assert_close(ta.ce, tb.ce)
    torch.testing.assert_close(tb.total - ta.total, 2.0 * (ta.distill_image + ta.distill_text))


def test_distillation_off_is_plain_ce():
    x = inputs()
    terms = KiclipLoss(D, distill=False)(x["frame_features"], x["class_embeddings"], x["labels"], x["logit_scale"])
    torch.testing.assert_close(terms.total, terms.ce)
    assert terms.distill_image == 0 and terms.distill_text == 0
    with pytest.raises(ValueError, match="teacher"):
        KiclipLoss(D)(x["frame_features"], x["class_embeddings"], x["labels"], x["logit_scale"])


def test_gradients_reach_student_projectors_and_scale_not_teacher():
    torch.manual_seed(0)
    loss_fn = KiclipLoss(D)
    x = inputs()
    x["teacher_frames"].requires_grad_(True)
    loss_fn(**x).total.backward()
    for name in ("frame_features", "class_embeddings", "logit_scale"):
        assert x[name].grad is not None and x[name].grad.abs().sum() > 0, name
    # At init the second projector layer is zero, so only it receives gradient first.
    assert loss_fn.proj_v[2].weight.grad.abs().sum() > 0
    assert loss_fn.proj_t[2].weight.grad.abs().sum() > 0
    assert x["teacher_frames"].grad is None
