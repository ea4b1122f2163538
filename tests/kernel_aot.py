"""Compile the Triton kernels ahead of time for a GPU target, on a host without a GPU.

The interpreter runs kernels as NumPy and accepts code the compiler rejects (or compiles into
register spills), so the kernel tests alone do not show that the kernels build for a GPU.
Triton's compiler needs no device for this: it lowers to PTX for a named target and its
bundled ``ptxas`` assembles that PTX, reporting registers and spills.

Run as a script (``python tests/kernel_aot.py --capability 90``) it compiles every variant the
launchers can request and prints one JSON object per variant. It must run in a process where
TRITON_INTERPRET is off: with the interpreter on, Triton's own ``tl`` functions are
interpreter objects that the compiler cannot lower, so the tests call this script.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import triton

# Model widths (ViT-B: 768; text/embedding: 512; ViT-L: 1024) and an odd one (masked tail).
WIDTHS = (512, 768, 1024, 777)
DTYPES = ("fp32", "bf16", "fp16")
_STRIDES = ("stride_h", "stride_f", "stride_y", "stride_ln", "stride_dln", "stride_dy", "stride_dh",
            "stride_df", "stride_s", "stride_t", "stride_ds")

# What Triton's JIT assumes of an argument it sees to be a multiple of 16 (aligned base
# pointers, widths and strides of 512/768/1024): the same hint lets the compiler vectorise.
_DIVISIBLE_BY_16 = [["tt.divisibility", 16]]

TORCH_TO_TRITON = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


@dataclasses.dataclass(frozen=True)
class RegisterUsage:
    registers: int
    spill_stores: int  # bytes
    spill_loads: int  # bytes


def compiler_unavailable() -> str | None:
    """Why Triton's NVIDIA compiler backend cannot run here, or None when it can."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas
    except ImportError as err:
        return f"Triton's NVIDIA backend is not installed ({err})"
    for arch in (80, 90):
        try:
            path = get_ptxas(arch).path
        except Exception as err:  # a missing tool raises from Triton's knob lookup
            return f"Triton's ptxas for sm_{arch} was not found ({err})"
        if not (path and os.access(path, os.X_OK)):
            return f"Triton's ptxas for sm_{arch} is not executable: {path}"
    return None


def _as_jit_function(kernel):
    """The compilable JITFunction behind ``kernel`` (which may be wrapped by the interpreter)."""
    from triton.runtime.jit import JITFunction

    if isinstance(kernel, JITFunction):
        return kernel
    return JITFunction(kernel.fn)


def signature_of(kernel, pointers: dict[str, str], floats: set[str], constexprs: dict) -> dict[str, str]:
    """Triton signature for ``kernel``: pointer element types by name, fp32 for ``floats``,
    "constexpr" for the constexpr flags, i32 for the remaining (size and stride) integers —
    what the JIT infers from Python ints below 2**31."""
    sig = {}
    for name in _as_jit_function(kernel).arg_names:
        if name in constexprs:
            sig[name] = "constexpr"
        elif name in pointers:
            sig[name] = "*" + pointers[name]
        elif name in floats:
            sig[name] = "fp32"
        else:
            sig[name] = "i32"
    return sig


def compile_for(kernel, signature: dict[str, str], constexprs: dict, num_warps: int, capability: int,
                divisible: set[str]):
    """Compile ``kernel`` for sm_``capability``; ``divisible`` names the arguments the launch
    would see as multiples of 16. Returns Triton's compiled kernel (``.asm['ptx']`` etc.)."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fn = _as_jit_function(kernel)
    attrs = {(i,): _DIVISIBLE_BY_16 for i, name in enumerate(fn.arg_names) if name in divisible}
    src = ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    return triton.compile(src, target=GPUTarget("cuda", capability, 32), options={"num_warps": num_warps})


def register_usage(ptx: str, capability: int) -> RegisterUsage:
    """Assemble ``ptx`` with Triton's ptxas -v and read its register and spill report."""
    from triton.backends.nvidia.compiler import get_ptxas

    arch = re.search(r"^\.target\s+(\S+)", ptx, re.MULTILINE).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as fh:
            fh.write(ptx)
        proc = subprocess.run([get_ptxas(capability).path, "-v", f"--gpu-name={arch}", src,
                               "-o", os.path.join(tmp, "kernel.cubin")],
                              capture_output=True, text=True, check=True)
    report = proc.stdout + proc.stderr
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", report)
    registers = re.search(r"Used (\d+) registers", report)
    if not (spills and registers):
        raise AssertionError(f"unexpected ptxas -v report:\n{report}")
    return RegisterUsage(int(registers.group(1)), int(spills.group(1)), int(spills.group(2)))


@dataclasses.dataclass(frozen=True)
class Variant:
    """One kernel launch the launchers can request: the kernel, its argument types and settings."""

    name: str
    kernel: object
    pointers: dict
    floats: frozenset
    constexprs: dict
    num_warps: int
    width: int

    def divisible(self) -> set[str]:
        """Arguments the JIT would see as multiples of 16: the base pointers (torch allocations
        are aligned), and the width and row strides when the width is."""
        names = set(self.pointers)
        if self.width % 16 == 0:
            names |= {"n_cols", *_STRIDES}
        return names


def kernel_variants() -> list[Variant]:
    """Every distinct launch at WIDTHS x DTYPES, with constexprs and num_warps from the launchers.

    LayerNorm weights come in the activations' dtype (DeepSpeed bf16) or fp32; the teacher in
    the student's dtype or fp32. Widths sharing a block size and divisibility compile to the
    same code and are listed once.
    """
    from kiclip_kernels.ops import distill_loss as dl
    from kiclip_kernels.ops import inject_layernorm as il

    out: dict[tuple, Variant] = {}

    def add(v: Variant) -> None:
        key = (v.kernel, tuple(sorted(v.pointers.items())), tuple(sorted(v.constexprs.items())),
               v.num_warps, v.width % 16 == 0)
        out.setdefault(key, v)

    for width, act, w in itertools.product(WIDTHS, DTYPES, ("same", "fp32")):
        w = act if w == "same" else w
        constexprs, warps = il.forward_launch(width)
        ptrs = {"H": act, "F": act, "W": w, "B": w, "Y": act, "LN": act, "Mean": "fp32", "Rstd": "fp32"}
        add(Variant(f"inject_fwd-{act}-w{w}-D{width}", il._inject_layernorm_fwd_kernel, ptrs,
                    frozenset({"mix", "eps"}), constexprs, warps, width))
        for has_dy, dh, df in itertools.product((False, True), repeat=3):
            constexprs, warps = il.backward_launch(width, has_dy, dh, df)
            ptrs = {"DLN": act, "DY": act, "Y": act, "W": w, "Mean": "fp32", "Rstd": "fp32", "DH": act,
                    "DF": act, "DW_partial": "fp32", "DB_partial": "fp32"}
            add(Variant(f"inject_bwd-{act}-w{w}-D{width}-dy{has_dy:d}dh{dh:d}df{df:d}",
                        il._inject_layernorm_bwd_kernel, ptrs, frozenset({"mix"}), constexprs, warps, width))
    for width, student, teacher, grad in itertools.product(WIDTHS, DTYPES, ("same", "fp32"), (False, True)):
        teacher = student if teacher == "same" else teacher
        constexprs, warps = dl.forward_launch(width, grad)
        ptrs = {"S": student, "T": teacher, "RowLoss": "fp32", "DS": student}
        add(Variant(f"distill-{student}-t{teacher}-D{width}-grad{grad:d}", dl._distill_loss_fwd_kernel,
                    ptrs, frozenset({"inv_n_rows", "eps"}), constexprs, warps, width))
    return list(out.values())


def compile_variant(v: Variant, capability: int) -> dict:
    """Compile ``v`` for sm_``capability``; its name, launch settings and ptxas report."""
    signature = signature_of(v.kernel, v.pointers, v.floats, v.constexprs)
    compiled = compile_for(v.kernel, signature, v.constexprs, v.num_warps, capability, v.divisible())
    usage = register_usage(compiled.asm["ptx"], capability)
    return {"name": v.name, "capability": capability, "num_warps": compiled.metadata.num_warps,
            "requested_warps": v.num_warps, **dataclasses.asdict(usage)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--capability", type=int, action="append", required=True,
                        help="compute capability as an int (80, 90); repeatable")
    args = parser.parse_args(argv)
    if triton.knobs.runtime.interpret:
        print("kernel_aot.py: error: TRITON_INTERPRET is on; compile in a process without it", file=sys.stderr)
        return 2
    for capability in args.capability:
        for variant in kernel_variants():
            print(json.dumps(compile_variant(variant, capability)), flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
