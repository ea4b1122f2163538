"""Triton inject_layernorm against the PyTorch reference: values and gradients, dtypes, odd shapes.

Runs on CPU through Triton's interpreter, and on CUDA when a GPU is present.
"""

import pytest
import torch
from kernel_devices import DEVICES, DTYPES  # first: sets TRITON_INTERPRET before kiclip_kernels.ops

from kiclip_kernels.ops.inject_layernorm import TOLERANCES, inject_layernorm_triton
from kiclip_kernels.reference import inject_layernorm_reference


def _inputs(shape, dtype, device, f_requires_grad=True, weight_dtype=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = shape[-1]
    wd = weight_dtype or dtype
    h = torch.randn(shape, generator=g).to(device, dtype).requires_grad_()
    f = torch.randn(shape, generator=g).to(device, dtype).requires_grad_(f_requires_grad)
    w = (1.0 + 0.5 * torch.randn(d, generator=g)).to(device, wd).requires_grad_()
    b = (0.1 * torch.randn(d, generator=g)).to(device, wd).requires_grad_()
    return h, f, w, b


def _run(fn, h, f, w, b, mix, eps, dy, dln, upcast):
    """Forward + backward; upcast=True evaluates on fp32 copies (the reference's ideal result)."""
    if upcast:
        h, f, w, b = (
            None if t is None else t.detach().float().requires_grad_(t.requires_grad) for t in (h, f, w, b)
        )
    y, ln = fn(h, f, w, b, mix, eps)
    outs, grads = [], []
    if dy is not None:
        outs.append(y)
        grads.append(dy.to(y.dtype))
    outs.append(ln)
    grads.append(dln.to(ln.dtype))
    leaves = [t for t in (h, f, w, b) if t is not None and t.requires_grad]
    got = torch.autograd.grad(outs, leaves, grads)
    by_name = dict(zip([n for n, t in zip("hfwb", (h, f, w, b)) if t is not None and t.requires_grad], got))
    return y, ln, by_name


def _assert_close(actual, expected, dtype, what):
    tol = TOLERANCES[dtype]
    torch.testing.assert_close(actual.float().cpu(), expected.float().cpu(), msg=lambda m: f"{what}: {m}", **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(7, 48), (2, 3, 100), (4, 768)], ids=str)
@pytest.mark.parametrize("f_requires_grad", [True, False], ids=["f_grad", "f_frozen"])
def test_matches_reference(device, dtype, shape, f_requires_grad):
    mix, eps = (0.5, 1e-5) if f_requires_grad else (0.3, 1e-6)
    h, f, w, b = _inputs(shape, dtype, device, f_requires_grad)
    g = torch.Generator().manual_seed(1)
    dy = torch.randn(shape, generator=g).to(device)
    dln = torch.randn(shape, generator=g).to(device)

    y, ln, grads = _run(inject_layernorm_triton, h, f, w, b, mix, eps, dy, dln, upcast=False)
    y_ref, ln_ref, grads_ref = _run(inject_layernorm_reference, h, f, w, b, mix, eps, dy, dln, upcast=True)

    assert y.shape == shape and ln.shape == shape and y.dtype == dtype and ln.dtype == dtype
    _assert_close(y, y_ref, dtype, "y")
    _assert_close(ln, ln_ref, dtype, "ln_y")
    assert grads.keys() == grads_ref.keys() == set("hfwb" if f_requires_grad else "hwb")
    for name in grads:
        assert grads[name].dtype == {"h": h, "f": f, "w": w, "b": b}[name].dtype
        _assert_close(grads[name], grads_ref[name], dtype, f"d{name}")


@pytest.mark.parametrize("device", DEVICES)
def test_only_ln_output_receives_grad(device):
    # y unused downstream: autograd hands the backward None for dy (the HAS_DY=False variant).
    h, f, w, b = _inputs((5, 100), torch.float32, device)
    dln = torch.randn(5, 100, generator=torch.Generator().manual_seed(2)).to(device)
    _, _, grads = _run(inject_layernorm_triton, h, f, w, b, 0.5, 1e-5, None, dln, upcast=False)
    _, _, grads_ref = _run(inject_layernorm_reference, h, f, w, b, 0.5, 1e-5, None, dln, upcast=True)
    for name in "hfwb":
        _assert_close(grads[name], grads_ref[name], torch.float32, f"d{name}")


@pytest.mark.parametrize("device", DEVICES)
def test_fp32_params_with_bf16_activations(device):
    # Under autocast the LayerNorm parameters stay fp32 while the streams are bf16.
    h, f, w, b = _inputs((6, 48), torch.bfloat16, device, weight_dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    dy, dln = torch.randn(6, 48, generator=g).to(device), torch.randn(6, 48, generator=g).to(device)
    _, ln, grads = _run(inject_layernorm_triton, h, f, w, b, 0.5, 1e-5, dy, dln, upcast=False)
    _, ln_ref, grads_ref = _run(inject_layernorm_reference, h, f, w, b, 0.5, 1e-5, dy, dln, upcast=True)
    assert ln.dtype == torch.bfloat16 and grads["w"].dtype == torch.float32
    _assert_close(ln, ln_ref, torch.bfloat16, "ln_y")
    for name in "hfwb":
        _assert_close(grads[name], grads_ref[name], torch.bfloat16, f"d{name}")


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_stream_dtypes_promote_like_the_reference(device):
    h, _, w, b = _inputs((4, 48), torch.float32, device)
    _, f, _, _ = _inputs((4, 48), torch.bfloat16, device, seed=7)
    dln = torch.randn(4, 48, generator=torch.Generator().manual_seed(8)).to(device)
    y, ln, grads = _run(inject_layernorm_triton, h, f, w, b, 0.5, 1e-5, None, dln, upcast=False)
    _, ln_ref, grads_ref = _run(inject_layernorm_reference, h, f, w, b, 0.5, 1e-5, None, dln, upcast=True)
    assert y.dtype == ln.dtype == torch.float32 and grads["f"].dtype == torch.bfloat16
    _assert_close(ln, ln_ref, torch.float32, "ln_y")
    _assert_close(grads["h"], grads_ref["h"], torch.float32, "dh")
    _assert_close(grads["f"], grads_ref["f"], torch.bfloat16, "df")


@pytest.mark.parametrize("device", DEVICES)
def test_no_affine_and_strided_rows(device):
    # Rows of a wider buffer (row stride != D) and LayerNorm without weight/bias.
    base_h = torch.randn(7, 60, generator=torch.Generator().manual_seed(4)).to(device)
    base_f = torch.randn(7, 60, generator=torch.Generator().manual_seed(5)).to(device)
    h = base_h[:, 5:53].requires_grad_()
    f = base_f[:, 5:53].requires_grad_()
    assert h.stride(0) == 60
    dln = torch.randn(7, 48, generator=torch.Generator().manual_seed(6)).to(device)
    _, ln, grads = _run(inject_layernorm_triton, h, f, None, None, 0.5, 1e-5, None, dln, upcast=False)
    _, ln_ref, grads_ref = _run(inject_layernorm_reference, h, f, None, None, 0.5, 1e-5, None, dln, upcast=True)
    _assert_close(ln, ln_ref, torch.float32, "ln_y")
    for name in "hf":
        _assert_close(grads[name], grads_ref[name], torch.float32, f"d{name}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.filterwarnings("ignore:Input #")
def test_gradcheck(device):
    # Finite differences check the hand-written backward independently of the reference. The
    # kernels compute in fp32 whatever the input, hence fp32 inputs and a coarse step.
    h, f, w, b = _inputs((3, 10), torch.float32, device)
    assert torch.autograd.gradcheck(
        lambda *a: inject_layernorm_triton(*a, 0.4, 1e-5), (h, f, w, b), eps=1e-3, atol=2e-3, rtol=1e-2
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("programs, rows", [(2, 37), (4, 5), (3, 64)], ids=str)
def test_backward_programs_walk_many_rows(device, programs, rows, monkeypatch):
    # On a GPU each backward program loops over thousands of rows and keeps running dweight /
    # dbias sums; capping the programs makes small inputs take that path too, with a short last
    # chunk (37 = 2 x 19 - 1) and a program left with no rows at all (5 rows over 4 programs of 2).
    from kiclip_kernels.ops import _common

    monkeypatch.setattr(_common, "MAX_PROGRAMS", programs)
    assert _common.persistent_programs(rows, torch.device(device)) == programs
    shape = (rows, 40)
    h, f, w, b = _inputs(shape, torch.float32, device, seed=rows)
    g = torch.Generator().manual_seed(2)
    dy, dln = (torch.randn(shape, generator=g).to(device) for _ in range(2))

    _, _, grads = _run(inject_layernorm_triton, h, f, w, b, 0.5, 1e-5, dy, dln, upcast=False)
    _, _, grads_ref = _run(inject_layernorm_reference, h, f, w, b, 0.5, 1e-5, dy, dln, upcast=True)
    for name in "hfwb":
        _assert_close(grads[name], grads_ref[name], torch.float32, f"d{name}")
