"""Triton implementations of the fused ops, one op per file (kernels + launcher + autograd.Function).

These modules import Triton at import time and decide then whether the kernels are compiled
for the GPU or run by Triton's interpreter (``TRITON_INTERPRET=1`` read when the module is
first imported). Callers go through :mod:`kernels.dispatch`, which imports them lazily.
"""
