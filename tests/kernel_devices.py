"""Devices and dtypes the kernel tests run on; imported first by each kernel test module.

On a machine without CUDA, Triton kernels run through Triton's interpreter. ``@triton.jit``
picks interpreted or compiled when ``kernels.ops`` is first imported, so TRITON_INTERPRET is set
here (``interpret_triton_without_cuda``), before that import. Nothing else imports
``kernels.ops`` on a CPU-only machine (the dispatcher imports it only on the Triton path), so
test-module import order does not matter.
"""

import pytest
import torch

from kiclip_kernels.dispatch import interpret_triton_without_cuda

interpret_triton_without_cuda()
pytest.importorskip("triton")

from kiclip_kernels.ops._common import INTERPRETED  # noqa: E402

DEVICES = [
    pytest.param("cpu", marks=pytest.mark.skipif(not INTERPRETED, reason="CPU needs TRITON_INTERPRET=1")),
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
