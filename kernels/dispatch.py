"""One place that picks the backend for every fused op, so callers never branch on hardware.

``KICLIP_KERNELS`` (read at every call, so it can be changed at run time):
  auto    (default) Triton when the tensors are on CUDA and ``triton`` imports; the PyTorch
          reference otherwise (CPU, no Triton, a broken Triton install).
  triton  always Triton; an error naming the fix when it cannot run: ``triton`` missing, or
          CPU tensors without ``TRITON_INTERPRET=1`` (the interpreter: slow, for tests).
  torch   always the PyTorch reference.

The Triton op modules are imported only when first used, so importing :mod:`kernels` never
imports Triton and never fixes whether the kernels are compiled or interpreted.
"""

import importlib
import os

import torch

from kernels.reference import distill_loss_reference, inject_layernorm_reference

ENV_VAR = "KICLIP_KERNELS"
BACKENDS = ("auto", "triton", "torch")


def requested_backend() -> str:
    """The backend ``KICLIP_KERNELS`` asks for; ValueError naming the variable when invalid."""
    value = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR}={value!r} is not one of {', '.join(BACKENDS)}")
    return value


def triton_importable() -> bool:
    """Whether ``triton`` (and its language module) can be imported in this process."""
    try:
        importlib.import_module("triton")
        importlib.import_module("triton.language")
    except ImportError:
        return False
    return True


def _interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def use_triton(tensor: torch.Tensor) -> bool:
    """Whether an op on ``tensor``'s device runs the Triton kernels under the current setting."""
    backend = requested_backend()
    if backend == "torch":
        return False
    on_cuda = tensor.device.type == "cuda"
    if backend == "auto":
        return on_cuda and triton_importable()
    if not triton_importable():
        raise RuntimeError(
            f"{ENV_VAR}=triton but the triton package cannot be imported; install triton "
            f"or set {ENV_VAR}=auto (falls back to the PyTorch reference)"
        )
    if not on_cuda and not _interpreter_requested():
        raise RuntimeError(
            f"{ENV_VAR}=triton with tensors on {tensor.device}: Triton kernels need CUDA tensors, or "
            "TRITON_INTERPRET=1 set before the first Triton op is imported (slow; for tests)"
        )
    return True


def inject_layernorm(h, f, weight, bias, mix: float = 0.5, eps: float = 1e-5):
    """``y = mix*h + (1-mix)*f`` and ``LayerNorm(y)`` over the last dim, fused where possible.

    Args:
        h: (..., D) student residual stream. f: (..., D) frozen-stream features, same shape
            and dtype; it may require grad (gradients flow through the frozen blocks).
        weight, bias: (D,) LayerNorm affine parameters (None for no affine).
    Returns:
        (y, ln_y), both (..., D) in h's dtype; both may receive gradient.
    """
    if use_triton(h):
        from kernels.ops.inject_layernorm import inject_layernorm_triton

        return inject_layernorm_triton(h, f, weight, bias, mix, eps)
    return inject_layernorm_reference(h, f, weight, bias, mix, eps)


def distill_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``1 - cos(student_row, teacher_row)``.

    Args:
        student: (N, D) (B·T frame features or C class embeddings), receives gradient.
        teacher: (N, D) frozen targets; never receives gradient.
    Returns:
        fp32 scalar.
    """
    if use_triton(student):
        from kernels.ops.distill_loss import distill_loss_triton

        return distill_loss_triton(student, teacher)
    return distill_loss_reference(student, teacher)
