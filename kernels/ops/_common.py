"""Launch settings shared by the Triton ops."""

import torch
import triton
from triton import knobs

# Read once, at import: @triton.jit decides compiled-vs-interpreted when each kernel is
# decorated, i.e. when the op modules are imported, so later changes to the env var are moot.
INTERPRETED: bool = bool(knobs.runtime.interpret)

# One row must fit in one block; beyond this the row would need a multi-pass kernel.
MAX_BLOCK_SIZE = 65536

# Upper bound on the programs a row-looping (backward) kernel launches; None: no cap beyond
# persistent_programs' own. Tests set it low so each program walks many rows, the path a GPU
# takes with thousands of rows but that small test inputs would otherwise never reach.
MAX_PROGRAMS: int | None = None


def row_block_settings(n_cols: int) -> tuple[int, int]:
    """Block size (next power of two >= n_cols) and warps for a one-row-per-program kernel.

    More warps for wider rows so each thread keeps a handful of elements in registers.
    """
    block = triton.next_power_of_2(n_cols)
    if block > MAX_BLOCK_SIZE:
        raise ValueError(f"row width {n_cols} exceeds the fused kernels' limit of {MAX_BLOCK_SIZE} elements")
    num_warps = 4
    if block >= 2048:
        num_warps = 8
    if block >= 8192:
        num_warps = 16
    if block >= 32768:
        num_warps = 32
    return block, num_warps


def check_runnable(t: torch.Tensor) -> None:
    """Raise a clear error instead of Triton's when compiled kernels meet CPU tensors."""
    if t.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            f"Triton kernels were compiled for the GPU but got a tensor on {t.device}. Use CUDA tensors, "
            "or set TRITON_INTERPRET=1 before kiclip_kernels.ops is first imported to run them on CPU "
            "(slow; for tests), or use KICLIP_KERNELS=torch."
        )


def as_rows(t: torch.Tensor, n_cols: int) -> torch.Tensor:
    """(..., D) -> (M, D) view with unit column stride (copies only when the last dim is strided)."""
    t = t.reshape(-1, n_cols)
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t


def persistent_programs(n_rows: int, device: torch.device) -> int:
    """How many programs a row-looping (backward) kernel launches.

    Several per SM so loads of the next row overlap work on another; each program writes one
    row of fp32 partial dweight/dbias that is read back by the final sum, so more programs add
    traffic (at 4 per SM on an H100: 528 x 768 x 4 B x 2 ≈ 3 MB against ~95 MB for the rows at
    B=8, T=8). 4 per SM is a starting point chosen by that arithmetic, not a tuned value.
    Under the interpreter a handful is enough (and still exercises the partial-sum reduction).
    """
    if device.type == "cuda":
        wanted = torch.cuda.get_device_properties(device).multi_processor_count * 4
    else:
        wanted = 4
    if MAX_PROGRAMS is not None:
        wanted = min(wanted, MAX_PROGRAMS)
    return max(1, min(n_rows, wanted))
