"""The backend dispatcher: KICLIP_KERNELS, fallback without Triton, the exported signatures."""

import inspect
import os
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import pytest
import torch

import kiclip_kernels
from kiclip_kernels import dispatch

dispatch.interpret_triton_without_cuda()  # before the first import of kiclip_kernels.ops

ROOT = Path(__file__).resolve().parents[1]
FAKE_CUDA = types.SimpleNamespace(device=torch.device("cuda"))  # use_triton only reads .device


def _ln_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 48, generator=g), torch.randn(3, 48, generator=g), torch.ones(48), torch.zeros(48)


def _spy(monkeypatch, module, name):
    calls = []
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_public_signatures_match_contract():
    # docs/CONTRACTS.md: inject_layernorm(h, f, weight, bias, mix=0.5, eps=1e-5), distill_loss(student, teacher)
    params = inspect.signature(kiclip_kernels.inject_layernorm).parameters
    assert list(params) == ["h", "f", "weight", "bias", "mix", "eps"]
    assert params["mix"].default == 0.5 and params["eps"].default == 1e-5
    assert list(inspect.signature(kiclip_kernels.distill_loss).parameters) == ["student", "teacher"]
    assert callable(kiclip_kernels.inject_layernorm) and callable(kiclip_kernels.distill_loss)


@pytest.mark.parametrize("value", ["torch", "auto", ""])
def test_cpu_tensors_use_reference(monkeypatch, value):
    monkeypatch.setenv(dispatch.ENV_VAR, value)
    ln_calls = _spy(monkeypatch, dispatch, "inject_layernorm_reference")
    dl_calls = _spy(monkeypatch, dispatch, "distill_loss_reference")
    y, ln = kiclip_kernels.inject_layernorm(*_ln_inputs())
    assert y.shape == ln.shape == (3, 48)
    kiclip_kernels.distill_loss(torch.randn(4, 8), torch.randn(4, 8))
    assert ln_calls == ["inject_layernorm_reference"] and dl_calls == ["distill_loss_reference"]


@pytest.fixture
def launcher_builds(monkeypatch):
    """Triton can build its C launchers (there is no CUDA driver to ask on a CPU host)."""
    monkeypatch.setattr(dispatch, "triton_launcher_problem", lambda: None)


def test_auto_picks_triton_for_cuda_tensors(monkeypatch, launcher_builds):
    monkeypatch.setenv(dispatch.ENV_VAR, "auto")
    assert dispatch.use_triton(FAKE_CUDA) == dispatch.triton_importable()
    assert dispatch.use_triton(torch.empty(1)) is False
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    assert dispatch.use_triton(FAKE_CUDA) is False


def test_invalid_backend_names_the_variable(monkeypatch):
    monkeypatch.setenv(dispatch.ENV_VAR, "cuda")
    with pytest.raises(ValueError, match="KICLIP_KERNELS='cuda' is not one of auto, triton, torch"):
        kiclip_kernels.inject_layernorm(*_ln_inputs())


def test_forced_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kiclip_kernels.distill_loss(torch.randn(4, 8), torch.randn(4, 8))


def test_forced_triton_on_cpu_runs_the_interpreter(monkeypatch):
    pytest.importorskip("triton")
    from kiclip_kernels.ops import _common

    if not _common.INTERPRETED:
        pytest.skip("kiclip_kernels.ops was imported compiled (TRITON_INTERPRET unset at first import)")
    from kiclip_kernels.ops import distill_loss as dl_op
    from kiclip_kernels.ops import inject_layernorm as ln_op

    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    ln_calls = _spy(monkeypatch, ln_op, "inject_layernorm_triton")
    dl_calls = _spy(monkeypatch, dl_op, "distill_loss_triton")
    h, f, w, b = _ln_inputs()
    _, ln = kiclip_kernels.inject_layernorm(h, f, w, b)
    loss = kiclip_kernels.distill_loss(h, f)
    assert ln_calls == ["inject_layernorm_triton"] and dl_calls == ["distill_loss_triton"]
    _, ln_ref = dispatch.inject_layernorm_reference(h, f, w, b)
    torch.testing.assert_close(ln, ln_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(loss, dispatch.distill_loss_reference(h, f), atol=1e-6, rtol=1e-5)


def test_without_triton_auto_falls_back_and_forced_triton_says_why(monkeypatch):
    # A None entry in sys.modules makes `import triton` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "triton", None)
    assert dispatch.triton_importable() is False
    monkeypatch.setenv(dispatch.ENV_VAR, "auto")
    assert dispatch.use_triton(FAKE_CUDA) is False  # even for CUDA tensors
    _, ln = kiclip_kernels.inject_layernorm(*_ln_inputs())
    assert torch.isfinite(ln).all()
    monkeypatch.setenv(dispatch.ENV_VAR, "triton")
    with pytest.raises(RuntimeError, match="triton package cannot be imported"):
        dispatch.use_triton(FAKE_CUDA)


def test_package_imports_and_runs_without_triton():
    # A fresh interpreter where triton cannot be imported at all: `import kiclip_kernels` must not
    # need it, must not import the Triton ops, and both ops must run (reference backend).
    code = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None
        import torch, kiclip_kernels
        h = torch.randn(2, 5, 48, requires_grad=True)
        f = torch.randn(2, 5, 48, requires_grad=True)
        y, ln = kiclip_kernels.inject_layernorm(h, f, torch.ones(48), torch.zeros(48))
        loss = kiclip_kernels.distill_loss(ln.reshape(10, 48), f.reshape(10, 48).detach())
        (loss + y.sum()).backward()
        assert h.grad is not None and f.grad is not None
        assert not any(m.startswith("kiclip_kernels.ops") for m in sys.modules), "kiclip_kernels.ops imported"
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != dispatch.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def _no_c_compiler(monkeypatch):
    """Triton's driver start fails as it does on a host without cc/gcc."""
    pytest.importorskip("triton")

    def fail():
        raise RuntimeError("Failed to find C compiler. Please specify via CC environment variable")

    monkeypatch.setattr(dispatch, "_start_triton_driver", fail)
    dispatch.triton_launcher_problem.cache_clear()
    monkeypatch.setattr(dispatch, "_warned_fallback", set())


def test_auto_falls_back_with_one_warning_when_triton_cannot_build_its_launcher(monkeypatch):
    _no_c_compiler(monkeypatch)
    monkeypatch.setenv(dispatch.ENV_VAR, "auto")
    try:
        with pytest.warns(RuntimeWarning, match="Failed to find C compiler.*PyTorch reference"):
            assert dispatch.use_triton(FAKE_CUDA) is False
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # said once, not at every op
            assert dispatch.use_triton(FAKE_CUDA) is False
        monkeypatch.setenv(dispatch.ENV_VAR, "triton")
        with pytest.raises(RuntimeError, match="cannot launch compiled kernels.*install a C compiler"):
            dispatch.use_triton(FAKE_CUDA)
    finally:
        dispatch.triton_launcher_problem.cache_clear()


def test_the_launcher_probe_reports_a_missing_c_compiler(monkeypatch):
    pytest.importorskip("triton")
    from triton import knobs

    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(dispatch.shutil, "which", lambda name: None)
    monkeypatch.setattr(knobs.build, "impl", None)
    monkeypatch.setattr(dispatch, "_start_triton_driver", lambda: None)
    dispatch.triton_launcher_problem.cache_clear()
    try:
        assert "no C compiler found" in dispatch.triton_launcher_problem()
        monkeypatch.setenv("CC", "cc")
        dispatch.triton_launcher_problem.cache_clear()
        assert dispatch.triton_launcher_problem() is None
    finally:
        dispatch.triton_launcher_problem.cache_clear()
