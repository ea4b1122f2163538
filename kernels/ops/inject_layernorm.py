"""Knowledge-injection mix fused with the next block's LayerNorm.

Forward, per row of D features (leading dims flattened into M rows):
    y    = mix*h + (1-mix)*f                 the new residual stream (returned)
    ln_y = (y - mean(y)) * rstd * w + b      the block's attention input (returned)
with rstd = 1/sqrt(var(y) + eps). One read of h and f, one write of y and ln_y, instead of
eager's separate mix, LayerNorm and cast kernels.

Backward (both outputs may carry gradient: y feeds the block's residual add), per row with
x̂ = (y - mean)*rstd, g = dln*w and averages over the D features:
    dy_total = rstd * (g - mean(g) - x̂*mean(g*x̂)) + dy
    dh = mix*dy_total,  df = (1-mix)*dy_total   (df only when f needs grad)
    dw = Σ_rows dln*x̂,  db = Σ_rows dln         (per-program partial sums, reduced after)
One pass over the rows reads dln, dy, y and writes dh, df.
"""

import torch
import triton
import triton.language as tl

from kiclip_kernels.ops._common import (
    as_rows,
    check_runnable,
    persistent_programs,
    row_block_settings,
)

# Triton vs reference, for values and gradients, at the dtype of h and f. The kernel computes
# in fp32 and rounds once at the store, the reference rounds y before normalising, so low
# precision differs by about one output ulp; dweight/dbias sum over rows, hence rtol.
TOLERANCES: dict[torch.dtype, dict[str, float]] = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.bfloat16: {"atol": 5e-2, "rtol": 2e-2},
    torch.float16: {"atol": 5e-3, "rtol": 5e-3},
}


@triton.jit
def _inject_layernorm_fwd_kernel(
    H, F, W, B, Y, LN, Mean, Rstd,
    stride_h, stride_f, stride_y, stride_ln,
    n_cols, mix, eps,
    BLOCK_SIZE: tl.constexpr,
):
    # One program per row: a D=768 row fits in registers, so mean, variance and the output
    # come from a single read of h and f.
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols

    h = tl.load(H + row * stride_h + cols, mask=mask, other=0.0).to(tl.float32)
    f = tl.load(F + row * stride_f + cols, mask=mask, other=0.0).to(tl.float32)
    y = mix * h + (1.0 - mix) * f  # padded lanes are 0 and do not bias the sums

    mean = tl.sum(y, axis=0) / n_cols
    diff = tl.where(mask, y - mean, 0.0)
    var = tl.sum(diff * diff, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)

    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    ln = diff * rstd * w + b

    tl.store(Y + row * stride_y + cols, y.to(Y.dtype.element_ty), mask=mask)
    tl.store(LN + row * stride_ln + cols, ln.to(LN.dtype.element_ty), mask=mask)
    tl.store(Mean + row, mean)
    tl.store(Rstd + row, rstd)


@triton.jit
def _inject_layernorm_bwd_kernel(
    DLN, DY, Y, W, Mean, Rstd, DH, DF, DW_partial, DB_partial,
    stride_dln, stride_dy, stride_y, stride_dh, stride_df,
    n_rows, n_cols, rows_per_program, mix,
    HAS_DY: tl.constexpr, COMPUTE_DH: tl.constexpr, COMPUTE_DF: tl.constexpr,
    BLOCK_SIZE: tl.constexpr,
):
    # Each program walks a contiguous chunk of rows and keeps its dweight/dbias partial sums
    # in registers, so the parameter gradients cost one (programs, D) write, not atomics.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_SIZE)
    mask = cols < n_cols
    row_start = pid * rows_per_program
    row_end = tl.minimum(row_start + rows_per_program, n_rows)

    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw_acc = tl.zeros((BLOCK_SIZE,), dtype=tl.float32)
    db_acc = tl.zeros((BLOCK_SIZE,), dtype=tl.float32)

    # Row pointers advance by their strides each iteration; the int64 start keeps the
    # offsets exact past 2**31 elements.
    start64 = row_start.to(tl.int64)
    y_ptr = Y + start64 * stride_y
    dln_ptr = DLN + start64 * stride_dln
    dy_ptr = DY + start64 * stride_dy
    dh_ptr = DH + start64 * stride_dh
    df_ptr = DF + start64 * stride_df
    for row in range(row_start, row_end):
        y = tl.load(y_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(Mean + row)
        rstd = tl.load(Rstd + row)
        # Recomputing x̂ from the saved y (an output anyway) avoids saving a second (M, D) tensor.
        xhat = tl.where(mask, (y - mean) * rstd, 0.0)
        dln = tl.load(dln_ptr + cols, mask=mask, other=0.0).to(tl.float32)

        g = dln * w
        c_mean = tl.sum(g, axis=0) / n_cols
        c_proj = tl.sum(g * xhat, axis=0) / n_cols
        dy = (g - c_mean - xhat * c_proj) * rstd
        if HAS_DY:
            dy += tl.load(dy_ptr + cols, mask=mask, other=0.0).to(tl.float32)

        if COMPUTE_DH:
            tl.store(dh_ptr + cols, (mix * dy).to(DH.dtype.element_ty), mask=mask)
        if COMPUTE_DF:
            tl.store(df_ptr + cols, ((1.0 - mix) * dy).to(DF.dtype.element_ty), mask=mask)

        dw_acc += dln * xhat
        db_acc += dln
        y_ptr += stride_y
        dln_ptr += stride_dln
        dy_ptr += stride_dy
        dh_ptr += stride_dh
        df_ptr += stride_df

    tl.store(DW_partial + pid * n_cols + cols, dw_acc, mask=mask)
    tl.store(DB_partial + pid * n_cols + cols, db_acc, mask=mask)


def forward_launch(n_cols: int) -> tuple[dict, int]:
    """(constexprs, num_warps) of the forward kernel for rows of ``n_cols`` features."""
    block, num_warps = row_block_settings(n_cols)
    if block >= 1024:
        # At 4 warps (8 elements per thread per tensor) ptxas for sm_80 spills a few bytes when
        # bf16/fp16 rows meet fp32 LayerNorm weights (tests/test_kernels_compile.py); at 8 it
        # spills in no variant.
        num_warps = max(num_warps, 8)
    return {"BLOCK_SIZE": block}, num_warps


def backward_launch(n_cols: int, has_dy: bool, need_dh: bool, need_df: bool) -> tuple[dict, int]:
    """(constexprs, num_warps) of the backward kernel; the flags select which gradients it writes."""
    block, num_warps = row_block_settings(n_cols)
    return {"HAS_DY": has_dy, "COMPUTE_DH": need_dh, "COMPUTE_DF": need_df, "BLOCK_SIZE": block}, num_warps


def inject_layernorm_forward(h, f, weight, bias, mix, eps):
    """Launch the forward kernel.

    Args:
        h, f: (..., D), same shape and dtype. weight, bias: (D,) (any float dtype).
    Returns:
        y, ln_y: (..., D) in h's dtype; mean, rstd: (M,) fp32 per row, for the backward.
    """
    if h.shape != f.shape or h.dtype != f.dtype:
        raise ValueError(f"h and f must match: got {tuple(h.shape)} {h.dtype} and {tuple(f.shape)} {f.dtype}")
    check_runnable(h)
    shape, n_cols = h.shape, h.shape[-1]
    h2, f2 = as_rows(h, n_cols), as_rows(f, n_cols)
    n_rows = h2.shape[0]
    constexprs, num_warps = forward_launch(n_cols)

    y = torch.empty((n_rows, n_cols), dtype=h.dtype, device=h.device)
    ln = torch.empty_like(y)
    mean = torch.empty(n_rows, dtype=torch.float32, device=h.device)
    rstd = torch.empty_like(mean)
    if n_rows > 0:
        _inject_layernorm_fwd_kernel[(n_rows,)](
            h2, f2, weight.contiguous(), bias.contiguous(), y, ln, mean, rstd,
            h2.stride(0), f2.stride(0), y.stride(0), ln.stride(0),
            n_cols, float(mix), float(eps),
            **constexprs, num_warps=num_warps,
        )
    return y.view(shape), ln.view(shape), mean, rstd


def inject_layernorm_backward(dln, dy, y, weight, mean, rstd, mix, need_dh, need_df):
    """Launch the backward kernel.

    Args:
        dln: (..., D) grad of ln_y; dy: (..., D) grad of y or None; y: (..., D) saved output;
        weight: (D,); mean, rstd: (M,) fp32 from the forward.
    Returns:
        dh, df (None when not needed), dweight, dbias ((D,), fp32 sums; caller casts).
    """
    shape, n_cols = y.shape, y.shape[-1]
    y2 = as_rows(y, n_cols)
    n_rows = y2.shape[0]
    dln2 = as_rows(dln, n_cols)
    dy2 = as_rows(dy, n_cols) if dy is not None else dln2  # placeholder pointer, unread when HAS_DY=False
    constexprs, num_warps = backward_launch(n_cols, dy is not None, need_dh, need_df)
    n_programs = persistent_programs(n_rows, y.device)
    rows_per_program = triton.cdiv(n_rows, n_programs)

    dh = torch.empty((n_rows, n_cols), dtype=y.dtype, device=y.device) if need_dh else None
    df = torch.empty((n_rows, n_cols), dtype=y.dtype, device=y.device) if need_df else None
    dw_partial = torch.empty((n_programs, n_cols), dtype=torch.float32, device=y.device)
    db_partial = torch.empty_like(dw_partial)
    # Unused outputs still need a valid pointer argument; the constexpr flags skip the stores.
    dh_arg = dh if dh is not None else y2
    df_arg = df if df is not None else y2
    if n_rows > 0:
        _inject_layernorm_bwd_kernel[(n_programs,)](
            dln2, dy2, y2, weight.contiguous(), mean, rstd, dh_arg, df_arg, dw_partial, db_partial,
            dln2.stride(0), dy2.stride(0), y2.stride(0), dh_arg.stride(0), df_arg.stride(0),
            n_rows, n_cols, rows_per_program, float(mix),
            **constexprs, num_warps=num_warps,
        )
    else:
        dw_partial.zero_()
        db_partial.zero_()
    dh = dh.view(shape) if dh is not None else None
    df = df.view(shape) if df is not None else None
    return dh, df, dw_partial.sum(0), db_partial.sum(0)


class InjectLayerNormFunction(torch.autograd.Function):
    """autograd wrapper: (h, f, weight, bias, mix, eps) -> (y, ln_y); see the module docstring."""

    @staticmethod
    def forward(ctx, h, f, weight, bias, mix, eps):
        n_cols = h.shape[-1]
        # LayerNorm without affine parameters is the affine one with w=1, b=0.
        w = weight if weight is not None else torch.ones(n_cols, dtype=h.dtype, device=h.device)
        b = bias if bias is not None else torch.zeros(n_cols, dtype=h.dtype, device=h.device)
        y, ln, mean, rstd = inject_layernorm_forward(h, f, w, b, mix, eps)
        ctx.save_for_backward(y, w, mean, rstd)
        ctx.mix = mix
        ctx.weight_dtype = weight.dtype if weight is not None else None
        ctx.bias_dtype = bias.dtype if bias is not None else None
        # A grad of None for y (unused downstream) selects the cheaper HAS_DY=False variant.
        ctx.set_materialize_grads(False)
        return y, ln

    @staticmethod
    def backward(ctx, dy, dln):
        y, w, mean, rstd = ctx.saved_tensors
        need_dh, need_df, need_dw, need_db = ctx.needs_input_grad[:4]
        if dln is None:
            if dy is None:
                return None, None, None, None, None, None
            dln = torch.zeros_like(y)
        dh, df, dw, db = inject_layernorm_backward(dln, dy, y, w, mean, rstd, ctx.mix, need_dh, need_df)
        dw = dw.to(ctx.weight_dtype) if need_dw and ctx.weight_dtype is not None else None
        db = db.to(ctx.bias_dtype) if need_db and ctx.bias_dtype is not None else None
        return dh, df, dw, db, None, None


def inject_layernorm_triton(h, f, weight, bias, mix: float = 0.5, eps: float = 1e-5):
    """Triton ``(y, LayerNorm(y))`` with ``y = mix*h + (1-mix)*f``; h, f (..., D); weight, bias (D,)."""
    if h.dtype != f.dtype:
        # Same promotion as the reference's `mix*h + (1-mix)*f` (e.g. an fp32 stem against a
        # bf16 frozen stream); the casts stay outside the Function so autograd undoes them.
        common = torch.promote_types(h.dtype, f.dtype)
        h, f = h.to(common), f.to(common)
    return InjectLayerNormFunction.apply(h, f, weight, bias, mix, eps)
