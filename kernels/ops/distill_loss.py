"""Residual-feature-distillation loss: mean over rows of 1 - cos(student_row, teacher_row).

Forward and gradient in one kernel, one program per row of D features:
    ŝ = s / max(|s|, eps),  t̂ = t / max(|t|, eps),  cos = ŝ·t̂,  row_loss = 1 - cos
    d(loss)/ds = -(t̂ - cos·ŝ) / max(|s|, eps) / N        (the cos·ŝ term only when |s| > eps,
                                                          matching F.normalize's clamp)
The gradient needs nothing the forward has not already loaded, so it is written during the
forward (as Liger's fused losses do) and the backward only scales it by the incoming
grad_output: one pass over student and teacher in total, instead of eager's normalise, dot,
mean and their ~15 backward kernels. The teacher is a constant (frozen): it gets no gradient.
"""

import torch
import triton
import triton.language as tl

from kiclip_kernels.ops._common import as_rows, check_runnable, row_block_settings

# Triton vs the reference evaluated in fp32 on the same inputs. The loss is always fp32; the
# gradient is stored in the student's dtype, so its tolerance is that dtype's rounding.
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float32: {"atol": 1e-6, "rtol": 1e-5},
    torch.bfloat16: {"atol": 1e-4, "rtol": 1e-2},
    torch.float16: {"atol": 1e-5, "rtol": 2e-3},
}


@triton.jit
def _distill_loss_fwd_kernel(
    S, T, RowLoss, DS,
    stride_s, stride_t, stride_ds,
    n_cols, inv_n_rows, eps,
    COMPUTE_GRAD: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols

    s = tl.load(S + row * stride_s + cols, mask=mask, other=0.0).to(tl.float32)
    t = tl.load(T + row * stride_t + cols, mask=mask, other=0.0).to(tl.float32)
    norm_s = tl.sqrt(tl.sum(s * s, axis=0))
    norm_t = tl.sqrt(tl.sum(t * t, axis=0))
    ns = tl.maximum(norm_s, eps)
    nt = tl.maximum(norm_t, eps)
    cos = tl.sum(s * t, axis=0) / (ns * nt)
    tl.store(RowLoss + row, 1.0 - cos)

    if COMPUTE_GRAD:
        # Below the eps floor the norm is a constant, so ŝ = s/eps has no projection term.
        proj = tl.where(norm_s > eps, cos / ns, 0.0)
        ds = -(t / nt - proj * s) / ns * inv_n_rows
        tl.store(DS + row * stride_ds + cols, ds.to(DS.dtype.element_ty), mask=mask)


def forward_launch(n_cols: int, compute_grad: bool) -> tuple[dict, int]:
    """(constexprs, num_warps) of the kernel for rows of ``n_cols`` features."""
    block, num_warps = row_block_settings(n_cols)
    return {"COMPUTE_GRAD": compute_grad, "BLOCK_SIZE": block}, num_warps


def distill_loss_forward(student, teacher, eps, compute_grad):
    """Launch the kernel.

    Args:
        student, teacher: (N, D), same shape (dtypes may differ).
    Returns:
        loss: fp32 scalar; dstudent: (N, D) in student's dtype, d(loss)/d(student) for a unit
        upstream gradient, or None when not requested.
    """
    if student.dim() != 2 or student.shape != teacher.shape:
        raise ValueError(
            f"distill_loss takes two (N, D) tensors of one shape, got {tuple(student.shape)} and {tuple(teacher.shape)}"
        )
    check_runnable(student)
    n_rows, n_cols = student.shape
    s2, t2 = as_rows(student, n_cols), as_rows(teacher, n_cols)
    constexprs, num_warps = forward_launch(n_cols, compute_grad)

    row_loss = torch.empty(n_rows, dtype=torch.float32, device=student.device)
    ds = torch.empty((n_rows, n_cols), dtype=student.dtype, device=student.device) if compute_grad else None
    ds_arg = ds if ds is not None else s2  # valid pointer; the store is compiled out
    if n_rows > 0:
        _distill_loss_fwd_kernel[(n_rows,)](
            s2, t2, row_loss, ds_arg,
            s2.stride(0), t2.stride(0), ds_arg.stride(0),
            n_cols, 1.0 / n_rows, float(eps),
            **constexprs, num_warps=num_warps,
        )
    # mean of N values: one tiny reduction, deterministic (no atomics across programs)
    return row_loss.mean(), ds


class DistillLossFunction(torch.autograd.Function):
    """autograd wrapper: (student (N, D), teacher (N, D), eps) -> fp32 scalar."""

    @staticmethod
    def forward(ctx, student, teacher, eps):
        loss, ds = distill_loss_forward(student, teacher, eps, compute_grad=ctx.needs_input_grad[0])
        ctx.save_for_backward(ds)
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        (ds,) = ctx.saved_tensors
        if ds is None:
            return None, None, None
        return ds * grad_output.to(ds.dtype), None, None


def distill_loss_triton(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Triton mean over rows of ``1 - cos(student_row, teacher_row)``; (N, D) inputs, fp32 scalar."""
    if not (torch.is_grad_enabled() and student.requires_grad):
        # Evaluation: skip writing a gradient nobody will read.
        return distill_loss_forward(student, teacher, eps, compute_grad=False)[0]
    return DistillLossFunction.apply(student, teacher, eps)
