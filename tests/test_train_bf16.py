"""bf16 training, resuming and evaluation against fp32, with both kernel backends.

The precision rule (docs/model.md §9): matmuls through the towers and projectors run
in the module's dtype; class-embedding averages, logits, losses and the consolidated weights
are fp32. Every test runs on the CPU (DeepSpeed's CPU accelerator does bf16; Triton kernels
through its interpreter) and again on CUDA where a GPU is present.

fp16 is not offered: DeepSpeed's CPU accelerator supports it only on CPUs with AVX512-FP16 or
AMX-FP16 (``torch.ops.mkldnn._is_mkldnn_fp16_supported()``), so it could not be tested here,
and bf16 has fp32's exponent range, so it needs no loss scaling.

Tolerances. bf16 keeps 8 significant bits (unit roundoff u = 2^-9 ≈ 2e-3). The logits are
s·cos with s = exp(logit_scale) ≈ 14.3 at kiclip-tiny's init; CE's gradient with respect to the
logits has an L1 norm of at most 2, so |ΔCE| ≤ 2·s·max|Δcos|. The towers leave a few u of
relative error in the features, |Δcos| ≤ 4u, hence CE_TOL = 2·s·4u ≈ 0.22 (measured on CPU,
both kernel backends: 0.004 at step 1, up to 0.05 by step 3 — the random-init tiny CLIP maps
all clips close together, so rounding moves the small differences between its cosines a lot).
The distillation terms are 1 - cos themselves: DISTILL_TOL = 4u ≈ 8e-3 (measured ≤ 3e-3). Only
the first 3 steps (warm-up) are compared, before different roundings of the updates can carry
the two runs apart. A wrong dtype path raises (fp32 features into a bf16 layer) or shifts a
loss by far more. The evaluation logits use the same bound, s·4u (measured 0.027 of 0.11).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil

import pytest
import torch
from train_fixtures import build_b2n_shards, read_losses, tail, train_to_end

from kiclip.train import checkpoint as ckpt
from kiclip.weights import load_weights

HAS_TRITON = importlib.util.find_spec("triton") is not None
CUDA = torch.cuda.is_available()

# (device, KICLIP_KERNELS): Triton runs interpreted on the CPU, compiled on CUDA.
SETUPS = [
    pytest.param("cpu", "torch", id="cpu-torch"),
    pytest.param("cpu", "triton", id="cpu-triton",  # the interpreter: slow
                 marks=[pytest.mark.slow,
                        pytest.mark.skipif(not HAS_TRITON, reason="triton not installed")]),
    pytest.param("cuda", "torch", id="cuda-torch",
                 marks=pytest.mark.skipif(not CUDA, reason="no CUDA device")),
    pytest.param("cuda", "triton", id="cuda-triton",
                 marks=pytest.mark.skipif(not (CUDA and HAS_TRITON), reason="no CUDA device or triton")),
]
TERMS = ("total", "ce", "distill_image", "distill_text")
U = 2.0 ** -9  # bf16 unit roundoff
CE_TOL = 2 * 14.3 * 4 * U  # for total and ce
DISTILL_TOL = 4 * U

# Small enough for Triton's interpreter: 2 frames of 16 px (5 tokens each), 8 clips a step.
SMALL = ["--b2n", "synthetic", "--num-frames", "2", "--image-size", "16", "--batch-size", "8",
         "--set", "data.num_views=1"]
STEPS = [*SMALL, "--max-steps", "3"]


def kernel_env(device: str, kernels: str) -> dict[str, str]:
    env = {"KICLIP_KERNELS": kernels}
    if device == "cpu" and kernels == "triton":
        env["TRITON_INTERPRET"] = "1"
    return env


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory):
    """24 base training clips (3 steps of 8), 24 base + 24 novel test clips of 8 frames."""
    return build_b2n_shards(tmp_path_factory.mktemp("bf16"), clips_per_class=1, val_per_class=1,
                            shots=1, frames=8)


# --------------------------------------------------------------------------------------------
# In-process: one step of the train module and the evaluation logits, bf16 vs fp32.


def _tiny_setup(device: str):
    from kiclip.config import DataConfig, ModelConfig, TrainConfig
    from kiclip.train.assemble import build_models
    from kiclip.train.step import PromptTokens

    torch.manual_seed(0)
    cfg = TrainConfig(model=ModelConfig(model_name="kiclip-tiny"),
                      data=DataConfig(num_frames=2, image_size=16))
    module, teacher, tokenizer = build_models(cfg)
    names = ["red circle moving left", "blue square moving up", "green triangle moving down"]
    prompts = PromptTokens(tokenizer, names, False, torch.device(device))
    return module.to(device), teacher.to(device), prompts, tokenizer


def _step_terms(module, teacher, prompts, video, labels, dtype):
    from kiclip.text import RAW_TEMPLATE, TEMPLATES
    from kiclip.train.step import TeacherTargets

    module = copy.deepcopy(module).to(dtype)
    targets = TeacherTargets(copy.deepcopy(teacher).to(dtype), prompts)
    drawn = (TEMPLATES[3], RAW_TEMPLATE)
    frames, classes = targets(video.to(dtype), drawn)
    terms = module(video.to(dtype), labels, prompts(drawn), len(drawn), frames, classes)
    terms.total.backward()
    return terms, module


@pytest.mark.parametrize("device,kernels", SETUPS)
def test_bf16_train_module_step_is_fp32_where_promised(device, kernels, monkeypatch, one_thread):
    if device == "cpu" and kernels == "triton":
        from kiclip_kernels.dispatch import _interpreter_requested

        if not _interpreter_requested():
            pytest.skip("Triton on CPU tensors needs TRITON_INTERPRET=1 from the start (conftest "
                        "sets it on hosts without CUDA)")
    monkeypatch.setenv("KICLIP_KERNELS", kernels)
    module, teacher, prompts, _ = _tiny_setup(device)
    gen = torch.Generator().manual_seed(1)
    video = torch.randn(2, 3, 2, 16, 16, generator=gen).to(device)
    labels = torch.tensor([0, 2], device=device)

    full, _ = _step_terms(module, teacher, prompts, video, labels, torch.float32)
    half, trained = _step_terms(module, teacher, prompts, video, labels, torch.bfloat16)
    for name, a, b in zip(TERMS, (t.detach() for t in full), (t.detach() for t in half)):
        assert b.dtype == torch.float32, f"{name} is {b.dtype}: losses must be fp32"
        assert torch.isfinite(b)
        tol = CE_TOL if name in ("total", "ce") else DISTILL_TOL
        assert abs(float(a) - float(b)) <= tol, f"{name}: fp32 {float(a)} vs bf16 {float(b)}"
    # Gradients reach every trainable bf16 parameter, in its own dtype.
    for name, param in trained.named_parameters():
        if param.requires_grad:
            assert param.grad is not None and param.grad.dtype == torch.bfloat16, name


@pytest.mark.parametrize("device,kernels", SETUPS)
def test_bf16_evaluation_logits_are_fp32_and_match(device, kernels, small_shards, monkeypatch,
                                                   one_thread):
    """evaluate_label_space with a bf16 student (as the end-of-run evaluation calls it): its
    classifier and logits are fp32 and close to the fp32 student's, view for view."""
    if device == "cpu" and kernels == "triton":
        from kiclip_kernels.dispatch import _interpreter_requested

        if not _interpreter_requested():
            pytest.skip("Triton on CPU tensors needs TRITON_INTERPRET=1 from the start")
    import kiclip.evaluation as evaluation
    from kiclip.config import DataConfig
    from kiclip.layout import resolve_protocol

    monkeypatch.setenv("KICLIP_KERNELS", kernels)
    module, _, _, tokenizer = _tiny_setup(device)
    shard_set = resolve_protocol(str(small_shards), "b2n", 1).evals["novel"]
    data = DataConfig(num_frames=2, stride=2, image_size=16, eval_batch_size=24, num_views=1,
                      backend="torch", num_workers=0)
    seen: list[torch.Tensor] = []
    real = evaluation.view_summed_accuracy

    def recording(batches, logits_fn, **kw):
        return real(batches, lambda video: seen.append(logits_fn(video)) or seen[-1], **kw)

    monkeypatch.setattr(evaluation, "view_summed_accuracy", recording)
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        student = copy.deepcopy(module.student).to(dtype)
        results[dtype] = evaluation.evaluate_label_space(student, tokenizer, shard_set, data,
                                                         device=torch.device(device), dtype=dtype)
    full, half = seen[: len(seen) // 2], seen[len(seen) // 2:]
    assert all(x.dtype == torch.float32 for x in half)
    full, half = torch.cat(full), torch.cat(half)
    assert full.shape == (24, len(shard_set.classes))
    # Logits are s = exp(logit_scale) times cosines; |Δcos| ≤ 4u as in the module docstring.
    scale = float(module.student.logit_scale.detach().exp())
    torch.testing.assert_close(half, full, rtol=0, atol=scale * 4 * U)
    assert results[torch.bfloat16]["videos"] == results[torch.float32]["videos"] == 24


# --------------------------------------------------------------------------------------------
# DeepSpeed runs of launch/train.py (in this process on the CPU): steps against fp32, resume,
# end-of-run evaluation.


@pytest.fixture(scope="module")
def fp32_runs(small_shards, tmp_path_factory):
    """fp32 reference runs (reference kernels), one per device, made on first use."""
    runs: dict[str, list[dict]] = {}

    def get(device: str) -> list[dict]:
        if device not in runs:
            out = tmp_path_factory.mktemp(f"fp32_{device}")
            train_to_end([*STEPS, "--data", str(small_shards), "--output", str(out / "run"),
                          "--device", device, "--precision", "fp32"],
                         log=out / "log", env_extra=kernel_env(device, "torch"))
            runs[device] = read_losses(out / "run")
        return runs[device]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("device,kernels", SETUPS)
def test_deepspeed_bf16_steps_track_fp32(device, kernels, small_shards, fp32_runs, tmp_path):
    run = tmp_path / "run"
    train_to_end([*STEPS, "--data", str(small_shards), "--output", str(run), "--device", device,
                  "--precision", "bf16"],
                 log=tmp_path / "log", env_extra=kernel_env(device, kernels))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["precision"] == "bf16" and summary["device"].startswith(device)
    want, got = fp32_runs(device), read_losses(run)
    assert [r["step"] for r in got] == [r["step"] for r in want] == [1, 2, 3]
    for a, b in zip(want, got):
        assert a["template"] == b["template"] and a["lr"] == pytest.approx(b["lr"], rel=1e-12)
        for term in TERMS:
            tol = CE_TOL if term in ("total", "ce") else DISTILL_TOL
            assert abs(a[term] - b[term]) <= tol, \
                f"step {a['step']} {term}: fp32 {a[term]:.6f} vs bf16 {b[term]:.6f} (tol {tol:.2g})"


# ZeRO 2 with every set-up; ZeRO 0 (another optimiser wrapper holds the master weights) once
# per device, kernels do not matter there.
RESUME_SETUPS = [pytest.param(*p.values, 2, marks=p.marks, id=f"{p.id}-zero2") for p in SETUPS] + [
    pytest.param(*p.values, 0, marks=p.marks, id=f"{p.id}-zero0") for p in SETUPS if "torch" in p.id]


@pytest.mark.slow
@pytest.mark.parametrize("device,kernels,zero", RESUME_SETUPS)
def test_deepspeed_bf16_resume_and_evaluation(device, kernels, zero, small_shards, tmp_path):
    """Two bf16 epochs with the end-of-run evaluation; then the same run resumed after epoch 0
    (epoch 1's checkpoint removed, as if it had died in epoch 1) repeats epoch 1 exactly —
    fp32 master weights and optimiser state come back — and evaluates to the same top-1.
    The consolidated weights are the fp32 master weights, not the module's bf16 copy."""
    args = [*SMALL, "--data", str(small_shards), "--device", device, "--precision", "bf16",
            "--epochs", "2", "--zero-stage", str(zero)]
    env = kernel_env(device, kernels)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train_to_end([*args, "--output", str(straight)], log=tmp_path / "a.log", env_extra=env)

    shutil.copytree(straight, resumed)
    shutil.rmtree(ckpt.ds_dir(resumed) / ckpt.epoch_tag(1))
    ckpt.weights_path(resumed, 1).unlink()
    (resumed / "summary.json").unlink()
    assert ckpt.last_complete_epoch(resumed) == 0
    train_to_end([*args, "--output", str(resumed)], log=tmp_path / "b.log", env_extra=env)
    assert "resumed from" in (tmp_path / "b.log").read_text(), tail(tmp_path / "b.log")

    want, got = read_losses(straight), read_losses(resumed)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 7))
    for a, b in zip(want[3:], got[3:]):
        assert a["template"] == b["template"]
        for term in TERMS:
            assert a[term] == pytest.approx(b[term], rel=1e-6, abs=1e-7), f"step {a['step']} {term}"
    a = load_weights(ckpt.weights_path(straight, 1))["model"]
    b = load_weights(ckpt.weights_path(resumed, 1))["model"]
    for key, value in a.items():
        assert value.dtype == torch.float32, key
        torch.testing.assert_close(b[key], value, rtol=1e-5, atol=1e-6, msg=key)
    # Trained tensors hold values a bf16 copy could not: the master weights were saved.
    for key in ("student.clip.visual.proj", "loss.proj_t.0.weight", "student.clip.logit_scale"):
        assert bool((a[key] != a[key].bfloat16().float()).any()), f"{key} is bf16-rounded"

    s1 = json.loads((straight / "summary.json").read_text())
    s2 = json.loads((resumed / "summary.json").read_text())
    for key in ("base_top1", "novel_top1", "hm"):
        assert key in s1 and 0.0 <= s1[key] <= 100.0
        assert s2[key] == pytest.approx(s1[key]), key
    assert s1["precision"] == s2["precision"] == "bf16"
