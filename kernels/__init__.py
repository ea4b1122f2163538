"""Fused math for KICLIP, each op with a Triton kernel and a pure-PyTorch reference.

Callers use only the functions exported here; the dispatcher picks the backend
(``KICLIP_KERNELS=auto|triton|torch``; auto = Triton on CUDA tensors, the reference elsewhere).
Importing this package does not import Triton (see :mod:`kernels.dispatch`).

Layout: ``kernels/ops/<op>.py`` holds each op's Triton kernels, launcher, autograd.Function and
per-dtype TOLERANCES; ``kernels/reference.py`` the PyTorch references. The op files live in a
subpackage because a submodule ``kernels/inject_layernorm.py`` would, once imported, rebind the
package attribute ``kiclip_kernels.inject_layernorm`` from the function to the module.
"""

from kiclip_kernels.dispatch import distill_loss, inject_layernorm

__all__ = ["distill_loss", "inject_layernorm"]
