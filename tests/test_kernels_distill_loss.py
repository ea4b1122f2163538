"""Triton distill_loss against the PyTorch reference: loss and student gradient, dtypes, odd shapes.

Runs on CPU through Triton's interpreter, and on CUDA when a GPU is present.
"""

import pytest
import torch
from kernel_devices import DEVICES, DTYPES  # first: sets TRITON_INTERPRET before kiclip_kernels.ops

from kiclip_kernels.ops.distill_loss import TOLERANCES, distill_loss_triton
from kiclip_kernels.reference import distill_loss_reference


def _pair(shape, dtype, device, teacher_dtype=None, teacher_requires_grad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(shape, generator=g)
    # Correlated rows, as a distilled student is: cosines well inside (-1, 1), not ~0.
    t = s + 0.7 * torch.randn(shape, generator=g)
    student = s.to(device, dtype).requires_grad_()
    teacher = t.to(device, teacher_dtype or dtype).requires_grad_(teacher_requires_grad)
    return student, teacher


def _loss_and_grad(fn, student, teacher, scale=1.0, upcast=False):
    if upcast:
        student = student.detach().float().requires_grad_()
        teacher = teacher.detach().float()
    loss = fn(student, teacher)
    (grad,) = torch.autograd.grad(loss * scale, [student])
    return loss, grad


def _assert_close(actual, expected, dtype, what):
    torch.testing.assert_close(
        actual.float().cpu(), expected.float().cpu(), msg=lambda m: f"{what}: {m}", **TOLERANCES[dtype]
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7, 48), (5, 100), (3, 512)], ids=str)
def test_matches_reference(device, dtype, shape):
    student, teacher = _pair(shape, dtype, device)
    loss, grad = _loss_and_grad(distill_loss_triton, student, teacher)
    loss_ref, grad_ref = _loss_and_grad(distill_loss_reference, student, teacher, upcast=True)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert grad.dtype == dtype and grad.shape == shape
    _assert_close(loss, loss_ref, dtype, "loss")
    _assert_close(grad, grad_ref, dtype, "dstudent")


@pytest.mark.parametrize("device", DEVICES)
def test_teacher_gets_no_grad_and_upstream_scale(device):
    # The teacher is frozen: even if it requires grad, none flows to it; λ scales the gradient.
    student, teacher = _pair((6, 64), torch.float32, device, teacher_requires_grad=True)
    loss = distill_loss_triton(student, teacher)
    (2.0 * loss).backward()
    assert teacher.grad is None
    _, grad_ref = _loss_and_grad(distill_loss_reference, student, teacher, scale=2.0, upcast=True)
    _assert_close(student.grad, grad_ref, torch.float32, "dstudent")


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_dtypes_and_zero_row(device):
    # fp32 student (after the projector) against a bf16 teacher; an all-zero student row hits the
    # eps floor, where F.normalize's gradient has no projection term.
    student, teacher = _pair((4, 100), torch.float32, device, teacher_dtype=torch.bfloat16)
    with torch.no_grad():
        student[2].zero_()
    loss, grad = _loss_and_grad(distill_loss_triton, student, teacher)
    loss_ref, grad_ref = _loss_and_grad(distill_loss_reference, student, teacher, upcast=True)
    _assert_close(loss, loss_ref, torch.float32, "loss")
    _assert_close(grad, grad_ref, torch.float32, "dstudent")


@pytest.mark.parametrize("device", DEVICES)
def test_no_grad_evaluation(device):
    student, teacher = _pair((5, 48), torch.float32, device)
    with torch.no_grad():
        loss = distill_loss_triton(student, teacher)
    assert not loss.requires_grad
    _assert_close(loss, distill_loss_reference(student, teacher).detach(), torch.float32, "loss")


@pytest.mark.parametrize("device", DEVICES)
def test_shape_mismatch_is_an_error(device):
    student, teacher = _pair((5, 48), torch.float32, device)
    with pytest.raises(ValueError, match="one shape"):
        distill_loss_triton(student, teacher[:4])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.filterwarnings("ignore:Input #")
def test_gradcheck(device):
    # Finite differences check the hand-written gradient independently of the reference (the
    # kernel computes in fp32, hence fp32 inputs and a coarse step).
    student, teacher = _pair((3, 10), torch.float32, device)
    assert torch.autograd.gradcheck(
        lambda s: distill_loss_triton(s, teacher), (student,), eps=1e-3, atol=2e-3, rtol=1e-2
    )
