"""Every kernel variant the launchers can request compiles for sm_80 and sm_90 without spills.

No GPU needed: Triton lowers each kernel to PTX for the target and its bundled ptxas assembles
it (tests/kernel_aot.py, run as a subprocess because compiling needs TRITON_INTERPRET off).
The variants come from the launchers' own choice of constexprs and num_warps
(``forward_launch`` / ``backward_launch``) at the model widths 512, 768, 1024 and an odd
width, for fp32, bf16 and fp16.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kernel_aot import compiler_unavailable, kernel_variants
from kernel_devices import DTYPES  # noqa: F401  (sets TRITON_INTERPRET before kiclip_kernels.ops)

from kiclip_kernels.ops import inject_layernorm as il

AOT_SCRIPT = Path(__file__).with_name("kernel_aot.py")
_unavailable = compiler_unavailable()


def test_the_variants_are_what_the_launchers_request():
    variants = kernel_variants()
    assert {v.constexprs["BLOCK_SIZE"] for v in variants} == {512, 1024}  # 768, 777, 1024 share 1024
    assert {v.num_warps for v in variants} == {4, 8}  # 8: the inject forward at block 1024
    backward_flags = {(v.constexprs["HAS_DY"], v.constexprs["COMPUTE_DH"], v.constexprs["COMPUTE_DF"])
                      for v in variants if v.kernel is il._inject_layernorm_bwd_kernel}
    assert len(backward_flags) == 8
    assert {v.pointers["H"] for v in variants if "H" in v.pointers} == {"fp32", "bf16", "fp16"}
    assert any(v.width % 16 for v in variants), "the odd width (masked tail) is compiled too"


@pytest.mark.slow
@pytest.mark.skipif(_unavailable is not None, reason=f"no Triton GPU compiler: {_unavailable}")
@pytest.mark.parametrize("capability", (80, 90), ids=lambda c: f"sm{c}")
def test_every_kernel_variant_compiles_without_spills(capability):
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    proc = subprocess.run([sys.executable, str(AOT_SCRIPT), "--capability", str(capability)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(reports) == len(kernel_variants())
    assert all(r["num_warps"] == r["requested_warps"] for r in reports)
    spilled = [r for r in reports if r["spill_stores"] or r["spill_loads"]]
    assert not spilled, f"sm_{capability}: register spills in {spilled}"
    assert all(0 < r["registers"] <= 255 for r in reports)
