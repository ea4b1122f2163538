"""One place that picks the backend for every fused op, so callers never branch on hardware.

``KICLIP_KERNELS`` (read at every call, so it can be changed at run time):
  auto    (default) Triton when the tensors are on CUDA, ``triton`` imports and Triton can
          build its C launchers (it compiles them with the host's C compiler); the PyTorch
          reference otherwise (CPU, no Triton, a broken Triton install, no C compiler: the
          last with one warning naming the reason).
  triton  always Triton; an error naming the fix when it cannot run: ``triton`` missing, or
          CPU tensors without ``TRITON_INTERPRET=1`` (the interpreter: slow, for tests).
  torch   always the PyTorch reference.

The Triton op modules are imported only when first used, so importing :mod:`kiclip_kernels` never
imports Triton and never fixes whether the kernels are compiled or interpreted.
"""

import functools
import importlib
import os
import shutil
import warnings

import torch

from kiclip_kernels.reference import distill_loss_reference, inject_layernorm_reference

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


@functools.cache
def triton_launcher_problem() -> str | None:
    """Why compiled Triton kernels cannot be launched in this process, or None when they can.

    Before its first GPU launch Triton compiles small C modules (its CUDA driver utilities and
    one launcher per kernel signature) with the host's C compiler: ``$CC``, else gcc or clang.
    A GPU host without one would fail at the first fused op, mid-step; asked once, up front,
    the dispatcher can fall back instead. Cached: the answer holds for the process.
    """
    try:
        _check_c_compiler()
        _start_triton_driver()
    except Exception as err:  # any failure here means the same thing: no compiled kernels
        return f"{type(err).__name__}: {err}"
    return None


def _check_c_compiler() -> None:
    """Raise unless Triton will find a C compiler (the lookup Triton itself does)."""
    from triton import knobs

    if knobs.build.impl is not None or os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang"):
        return
    raise RuntimeError("no C compiler found (set CC, or install gcc or clang)")


def _start_triton_driver() -> None:
    """Start Triton's CUDA driver, which builds its C utility module on first use."""
    from triton.runtime import driver

    driver.active.get_current_target()


_warned_fallback: set[str] = set()


def _warn_fallback_once(problem: str) -> None:
    if problem not in _warned_fallback:
        _warned_fallback.add(problem)
        warnings.warn(
            f"Triton cannot launch compiled kernels here ({problem}); the fused ops use the PyTorch "
            f"reference instead (slower). Install a C compiler (gcc) or set CC to use them.",
            RuntimeWarning, stacklevel=3,
        )


def _interpreter_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def interpret_triton_without_cuda() -> bool:
    """On a host without CUDA, ask for Triton's interpreter (``TRITON_INTERPRET=1``) unless the
    variable is already set; returns whether the interpreter is requested afterwards.

    Call it before any Triton kernel is defined: before :mod:`kernels.ops` is first imported,
    and before any library that defines its own ``@triton.jit`` kernels is. ``@triton.jit``
    decides interpreted-vs-compiled when it decorates a kernel, so a variable set later leaves
    the kernels already defined compiled for a GPU that is not there, and the ``triton`` backend
    then refuses CPU tensors. A value set by hand is kept (``TRITON_INTERPRET=0`` tests the
    compiled path's errors). With CUDA nothing changes: the kernels compile for the GPU. The
    interpreter runs each kernel as slow Python: for tests and tiny smoke runs only.
    """
    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return _interpreter_requested()


def use_triton(tensor: torch.Tensor) -> bool:
    """Whether an op on ``tensor``'s device runs the Triton kernels under the current setting."""
    backend = requested_backend()
    if backend == "torch":
        return False
    on_cuda = tensor.device.type == "cuda"
    if backend == "auto":
        if not (on_cuda and triton_importable()):
            return False
        problem = triton_launcher_problem()
        if problem is not None:
            _warn_fallback_once(problem)
        return problem is None
    if not triton_importable():
        raise RuntimeError(
            f"{ENV_VAR}=triton but the triton package cannot be imported; install triton "
            f"or set {ENV_VAR}=auto (falls back to the PyTorch reference)"
        )
    if on_cuda and (problem := triton_launcher_problem()) is not None:
        raise RuntimeError(
            f"{ENV_VAR}=triton but Triton cannot launch compiled kernels ({problem}); install a C "
            f"compiler (gcc) or set CC, or set {ENV_VAR}=auto (falls back to the PyTorch reference)"
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
        from kiclip_kernels.ops.inject_layernorm import inject_layernorm_triton

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
        from kiclip_kernels.ops.distill_loss import distill_loss_triton

        return distill_loss_triton(student, teacher)
    return distill_loss_reference(student, teacher)
