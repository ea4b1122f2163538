"""Benchmark one whole KICLIP training step and count its FLOPs against the analytic budget.

Builds the real trainable module, teacher and prompts (kiclip.train.assemble.build_models,
kiclip.train.step) with random weights and times forward + backward + optimiser step on random
clips: ms/step, clips/s, peak memory, FLOPs per step (counted by
torch.utils.flop_counter.FlopCounterMode on the meta device: matmuls, convolutions and
attention) and MFU against the card's dense bf16 peak. The counted FLOPs are printed next to the
analytic count derived in docs/benchmarks.md; a ratio above 1 is compute the step spends beyond
what the method needs.

Variants (--variants, comma separated): ``ours`` (fused Triton kernels) or ``reference``
(PyTorch reference kernels), each optionally ``:noki`` (no knowledge injection) and/or
``:nodistill`` (no teacher, no distillation); ``all`` runs the eight combinations.

  python launch/bench_step.py                          # GPU: ViT-B/16, 8x224, bf16, B=8, C=400
  python launch/bench_step.py --batch 16 --variants all
  python launch/bench_step.py --tiny                   # CPU: kiclip-tiny, small frames (CI)

The last line printed is one JSON object with every figure. The optimiser is torch's AdamW on
the training-dtype parameters in one process (no DeepSpeed engine: no fp32 master copy, no ZeRO
partitioning), so the optimiser share of a real multi-GPU step is not measured here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import sys
import time

import torch

from kiclip.config import DEFAULT_MODEL, DataConfig, LossConfig, ModelConfig, TrainConfig

# Dense (no sparsity) bf16 tensor-core peak, TFLOP/s, from the datasheets; more specific names
# first. Unknown cards report no MFU.
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H200", 989.0), ("H100", 989.0),
                    ("A100", 312.0))

# The training draw uses two templates per step (one of the 28 + the raw class name).
TEMPLATES_PER_STEP = 2


@dataclasses.dataclass(frozen=True)
class Variant:
    kernels: str  # "ours" (fused) | "reference"
    injection: bool = True
    distill: bool = True

    @property
    def name(self) -> str:
        return self.kernels + ("" if self.injection else ":noki") + ("" if self.distill else ":nodistill")


def parse_variants(text: str) -> list[Variant]:
    """``ours,reference:noki`` → variants; ``all`` → the eight combinations. ValueError when bad."""
    if text.strip() == "all":
        return [Variant(k, ki, d) for k in ("ours", "reference") for ki in (True, False) for d in (True, False)]
    variants = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        kernels, *flags = item.split(":")
        if kernels not in ("ours", "reference") or not set(flags) <= {"noki", "nodistill"}:
            raise ValueError(f"--variants: {item!r} is not ours|reference[:noki][:nodistill]")
        variants.append(Variant(kernels, "noki" not in flags, "nodistill" not in flags))
    if not variants:
        raise ValueError("--variants names no variant")
    return variants


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help="open_clip model (random weights)")
    p.add_argument("--batch", type=int, default=8, help="clips per step (B)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (T)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--classes", type=int, default=400, help="classes C in the step's label space")
    p.add_argument("--dtype", choices=("bf16", "fp32"), default=None,
                   help="training dtype (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--variants", default="ours,reference,ours:noki,ours:nodistill",
                   help="comma-separated ours|reference[:noki][:nodistill], or all")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (default 3; --tiny: 1)")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps per variant; the median is reported (default 10; --tiny: 2)")
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense peak TFLOP/s for MFU (default: from the card's name)")
    p.add_argument("--tiny", action="store_true",
                   help="kiclip-tiny at 32 px, B=2, C=8, 1 warm-up and 2 timed steps: runs on CPU in seconds")
    args = p.parse_args(argv)
    if args.tiny:
        args.model, args.image_size, args.batch, args.classes = "kiclip-tiny", 32, 2, 8
    if args.warmup is None:
        args.warmup = 1 if args.tiny else 3
    if args.steps is None:
        args.steps = 2 if args.tiny else 10
    for name in ("batch", "frames", "classes", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 0:
        p.error("--warmup must be >= 0")
    try:
        args.variants = parse_variants(args.variants)
    except ValueError as err:
        p.error(str(err))
    return args


# ---------------------------------------------------------------------------- analytic count

def _block_flops(n: int, n_keys: int, d: int, hidden: int) -> tuple[int, int]:
    """(attention-projection + MLP matmul FLOPs, attention-core FLOPs) of one pre-LN block's
    forward on n tokens of width d attending to n_keys keys (per sequence)."""
    linear = 2 * n * d * 3 * d + 2 * n * d * d + 2 * 2 * n * d * hidden
    attention = 2 * 2 * n * n_keys * d  # q·kᵀ and p·v
    return linear, attention


def analytic_flops(clip, variant: Variant, batch: int, frames: int, classes: int) -> dict[str, int]:
    """FLOPs of one training step by part (docs/benchmarks.md derives each line).

    Backward conventions: a trainable matmul costs 2x its forward (input and weight
    gradients), a frozen one 1x (input gradient only), attention 2x (no weights), the stem's
    convolution 1x (its input, the video, needs no gradient).
    """
    visual, text = clip.visual, clip.transformer
    d = visual.conv1.out_channels
    patch = visual.conv1.kernel_size[0]
    n = visual.positional_embedding.shape[0]
    layers = len(visual.transformer.resblocks)
    hidden = visual.transformer.resblocks[0].mlp.c_fc.out_features
    embed = visual.proj.shape[1]
    f = batch * frames
    stem = 2 * (n - 1) * 3 * patch * patch * d
    head = 2 * d * embed
    # Temporal attention: each frame's queries see the keys of frames t+1, t-1 and t.
    lin, att_temporal = _block_flops(n, 3 * n, d, hidden)
    _, att_frame = _block_flops(n, n, d, hidden)

    parts = {}
    student_fwd = f * (stem + layers * (lin + att_temporal) + head)
    parts["student_visual_fwd"] = student_fwd
    parts["student_visual_bwd"] = f * (stem + layers * 2 * (lin + att_temporal) + 2 * head)
    if variant.injection:
        parts["frozen_stream_fwd"] = f * (layers - 1) * (lin + att_frame)
        parts["frozen_stream_bwd"] = f * (layers - 1) * (lin + 2 * att_frame)
    if variant.distill:
        parts["teacher_visual_fwd"] = f * (stem + layers * (lin + att_frame) + head)

    d_t = text.width
    n_t = clip.context_length
    hidden_t = text.resblocks[0].mlp.c_fc.out_features
    prompts = TEMPLATES_PER_STEP * classes
    lin_t, att_t = _block_flops(n_t, n_t, d_t, hidden_t)
    text_fwd = prompts * (len(text.resblocks) * (lin_t + att_t) + 2 * d_t * embed)
    parts["text_fwd"] = text_fwd
    parts["text_bwd"] = 2 * text_fwd
    logits = 2 * batch * embed * classes
    parts["logits_fwd_bwd"] = 3 * logits
    if variant.distill:
        projectors = 2 * 2 * (f + classes) * embed * embed  # P_v on B·T rows, P_t on C rows
        parts["projectors_fwd_bwd"] = 3 * projectors
    return parts


# ---------------------------------------------------------------------------- the step

def _kernels_env(variant: Variant, device: torch.device) -> str:
    if variant.kernels == "reference":
        return "torch"
    return "triton" if device.type == "cuda" else "auto"  # auto: the reference on CPU


def build_step(variant: Variant, args, device: torch.device, dtype: torch.dtype):
    """(step function, train module, video) for one variant on ``device``.

    The step is the training loop's: teacher targets, the module's loss terms, backward,
    optimiser step (optimiser None: forward + backward only, for FLOP counting).
    """
    from kiclip.text import TemplateSampler
    from kiclip.train.assemble import build_models
    from kiclip.train.step import PromptTokens, TeacherTargets, parameter_groups

    torch.manual_seed(0)
    with device if device.type == "meta" else contextlib.nullcontext():
        cfg = TrainConfig(model=ModelConfig(model_name=args.model, injection=variant.injection),
                          loss=LossConfig(distill=variant.distill),
                          data=DataConfig(num_frames=args.frames, image_size=args.image_size))
        module, teacher, tokenizer = build_models(cfg, load_pretrained=False)
    module.to(device=device, dtype=dtype).train()
    if teacher is not None:
        teacher.to(device=device, dtype=dtype)
    names = [f"class {i}" for i in range(args.classes)]
    prompts = PromptTokens(tokenizer, names, False, device)
    targets = TeacherTargets(teacher, prompts) if teacher is not None else None
    drawn = TemplateSampler(0).draw()
    video = torch.randn(args.batch, 3, args.frames, args.image_size, args.image_size, device=device, dtype=dtype)
    # Meta tensors have no values to draw; the labels' values do not change the FLOPs.
    labels = torch.zeros(args.batch, dtype=torch.long, device=device) if device.type == "meta" else \
        torch.randint(args.classes, (args.batch,), device=device)
    optimizer = None
    if device.type != "meta":
        optimizer = torch.optim.AdamW(parameter_groups(module, 0.01), lr=1e-5)

    def step() -> None:
        tokens = prompts(drawn)
        teacher_frames = teacher_classes = None
        if targets is not None:
            teacher_frames, teacher_classes = targets(video, drawn)
        terms = module(video, labels, tokens, len(drawn), teacher_frames, teacher_classes)
        terms.total.backward()
        if optimizer is not None:
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return step, module, video


def count_flops(variant: Variant, args) -> tuple[int, dict[str, int]]:
    """(counted FLOPs of one forward + backward, analytic FLOPs by part), both on the meta device.

    The fused ops are not matmuls, so the count is the same for both kernel choices; the
    reference kernels are used because Triton cannot run on meta tensors.
    """
    from torch.utils.flop_counter import FlopCounterMode

    previous = os.environ.get("KICLIP_KERNELS")
    os.environ["KICLIP_KERNELS"] = "torch"
    try:
        step, module, _ = build_step(variant, args, torch.device("meta"), torch.float32)
        counter = FlopCounterMode(display=False)
        with counter:
            step()
    finally:
        _restore_env("KICLIP_KERNELS", previous)
    analytic = analytic_flops(module.student.clip, variant, args.batch, args.frames, args.classes)
    return int(counter.get_total_flops()), analytic


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def time_variant(variant: Variant, args, device: torch.device, dtype: torch.dtype) -> dict:
    """Median ms/step over ``args.steps`` after ``args.warmup`` steps, peak memory, backend used."""
    from kiclip_kernels import dispatch

    previous = os.environ.get("KICLIP_KERNELS")
    os.environ["KICLIP_KERNELS"] = _kernels_env(variant, device)
    try:
        step, _, video = build_step(variant, args, device, dtype)
        backend = "triton" if dispatch.use_triton(video) else "torch"
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.steps):
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times.append(time.perf_counter() - start)
    finally:
        _restore_env("KICLIP_KERNELS", previous)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"kernels_backend": backend, "ms_per_step": 1e3 * statistics.median(times),
            "peak_mem_gib": peak}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """The device's dense bf16 peak from PEAK_BF16_TFLOPS (None on CPU or an unknown card)."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    card = torch.cuda.get_device_name(device)
    return next((tflops for name, tflops in PEAK_BF16_TFLOPS if name in card), None)


def main(argv=None) -> int:
    args = parse_args(argv)
    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.tiny:
        print("bench_step.py: error: no CUDA device; ViT-B/16 steps on CPU take minutes each. "
              "Use --tiny for the CPU run.", file=sys.stderr)
        return 2
    device = torch.device("cuda" if on_gpu else "cpu")
    dtype_name = args.dtype or ("bf16" if on_gpu else "fp32")
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    peak = peak_tflops(device, args.peak_tflops)
    card = torch.cuda.get_device_name(device) if on_gpu else "cpu"
    print(f"device {card}, {args.model}, B={args.batch} T={args.frames} {args.image_size}px C={args.classes} "
          f"{dtype_name}; peak {peak or 'unknown'} TFLOP/s")

    results = []
    for variant in args.variants:
        counted, parts = count_flops(variant, args)
        analytic = sum(parts.values())
        timing = time_variant(variant, args, device, dtype)
        step_s = timing["ms_per_step"] / 1e3
        achieved = counted / step_s / 1e12
        result = {"variant": variant.name, **timing,
                  "clips_per_s": args.batch / step_s,
                  "flops_per_step": counted, "flops_per_clip": counted / args.batch,
                  "analytic_flops_per_clip": analytic / args.batch,
                  "flops_ratio": counted / analytic,
                  "analytic_parts": parts,
                  "achieved_tflops": achieved,
                  "mfu": achieved / peak if peak else None}
        results.append(result)
        mem = f"{timing['peak_mem_gib']:.2f} GiB" if timing["peak_mem_gib"] is not None else "n/a"
        mfu = f"{100 * result['mfu']:.1f}%" if result["mfu"] is not None else "n/a"
        print(f"{variant.name:26s} [{timing['kernels_backend']}] {timing['ms_per_step']:9.2f} ms/step "
              f"{result['clips_per_s']:8.2f} clips/s  peak {mem}  "
              f"FLOPs/clip {result['flops_per_clip']:.4g} counted vs {result['analytic_flops_per_clip']:.4g} "
              f"analytic (ratio {result['flops_ratio']:.3f})  MFU {mfu}")
    print(json.dumps({"device": card, "model": args.model, "dtype": dtype_name, "batch": args.batch,
                      "frames": args.frames, "image_size": args.image_size, "classes": args.classes,
                      "peak_tflops": peak, "warmup": args.warmup, "steps": args.steps,
                      "variants": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
