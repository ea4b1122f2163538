"""Benchmark the fused kernels against eager PyTorch and torch.compile, forward + backward.

Shapes are ViT-B/16's by default: inject_layernorm on (197·B·T, 768) activations, distill_loss
on the visual (B·T, 512) and text (C, 512) features. Every backend runs in the same process on
the same inputs; the report gives the median time of a forward+backward step (CUDA events,
warm-up excluded), the GB/s that the op's minimum memory traffic implies, and the ratio to
eager. The last line printed is one JSON object with all the figures.

  python launch/bench_kernels.py                      # GPU, bf16, B=8 T=8 C=400
  python launch/bench_kernels.py --batch 32 --peak-gbs 3350
  python launch/bench_kernels.py --allow-cpu          # tiny smoke run of the script itself

Without CUDA it refuses unless --allow-cpu: then it runs tiny shapes through the PyTorch
reference and Triton's interpreter only to show the script works; those times say nothing
about kernel speed (the interpreter executes each program in NumPy).
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# HBM bandwidth of common data-centre GPUs, GB/s (datasheet), to express achieved bandwidth as a
# fraction of peak; --peak-gbs overrides, unknown cards report no fraction.
PEAK_GBS = {"H100 PCIe": 2000.0, "H100 NVL": 3900.0, "H100": 3350.0, "H200": 4800.0, "A100": 2039.0}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=(
            "Time inject_layernorm and distill_loss forward+backward: eager PyTorch vs torch.compile vs "
            "Triton, at ViT-B/16 shapes. Needs a CUDA GPU (or --allow-cpu for a smoke run). The last line "
            "of output is JSON."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--batch", type=int, default=8, help="clips per step (B)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (T)")
    p.add_argument("--tokens", type=int, default=197, help="tokens per frame (196 patches + CLS at 224 px)")
    p.add_argument("--width", type=int, default=768, help="residual width D of the visual blocks")
    p.add_argument("--embed", type=int, default=512, help="feature width of the distillation loss")
    p.add_argument("--classes", type=int, default=400, help="rows C of the text distillation term")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16",
                   help="dtype of activations and LayerNorm weights (a bf16 training run has both in bf16)")
    p.add_argument("--warmup", type=int, default=10, help="untimed iterations per backend (compilation included)")
    p.add_argument("--iters", type=int, default=50, help="timed iterations per backend; the median is reported")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile baseline")
    p.add_argument("--peak-gbs", type=float, default=None,
                   help="HBM peak GB/s for the %%-of-peak column (default: from the card's name)")
    p.add_argument(
        "--allow-cpu",
        action="store_true",
        help="without CUDA, run tiny shapes on CPU (reference vs Triton interpreter) to smoke-test the script; "
        "the times are meaningless for kernel speed",
    )
    return p.parse_args(argv)


@dataclass
class OpBench:
    """One op to time: ``steps[backend]()`` runs a forward+backward step of the op with that
    backend on the same inputs and returns the gradients; "eager" is the baseline."""

    name: str
    label: str                    # the op and its shapes, for the report's first line
    shapes: dict[str, list[int]]  # the summary's "shapes" entries
    nbytes: int                   # minimum memory traffic of one step
    steps: dict[str, Callable[[], Sequence]]


def _backends(reference: Callable, triton_fn: Callable, compile_too: bool) -> dict[str, Callable]:
    """eager (the PyTorch reference), torch.compile of it unless skipped, and the Triton kernel."""
    import torch

    backends = {"eager": reference}
    if compile_too:
        backends["compile"] = torch.compile(reference)
    backends["triton"] = triton_fn
    return backends


def setup_inject_layernorm(args, randn: Callable) -> OpBench:
    """inject_layernorm on (tokens·B·T, width) activations, gradients w.r.t. h, f, w, b."""
    import torch

    from kiclip_kernels.ops.inject_layernorm import inject_layernorm_triton
    from kiclip_kernels.reference import inject_layernorm_reference

    rows, d = args.tokens * args.batch * args.frames, args.width
    h, f = randn(rows, d).requires_grad_(), randn(rows, d).requires_grad_()
    # LayerNorm weights in the activation dtype, as training has them: DeepSpeed's bf16 mode
    # casts every parameter of the module to bf16 (docs/model.md §9).
    w = (1.0 + randn(d, scale=0.1)).requires_grad_()
    b = randn(d, scale=0.1).requires_grad_()
    dy, dln = randn(rows, d), randn(rows, d)

    def step(fn):
        y, ln = fn(h, f, w, b, 0.5, 1e-5)
        return torch.autograd.grad((y, ln), (h, f, w, b), (dy, dln))

    backends = _backends(inject_layernorm_reference, inject_layernorm_triton, not args.no_compile)
    # Minimum traffic: forward reads h, f and writes y, ln; backward reads dln, dy, y and writes dh, df.
    return OpBench("inject_layernorm", f"inject_layernorm ({rows}, {d})",
                   {"inject_layernorm": [rows, d]}, 9 * rows * d * h.element_size(),
                   {name: (lambda fn=fn: step(fn)) for name, fn in backends.items()})


def setup_distill_loss(args, randn: Callable) -> OpBench:
    """The two FROSTER distillation terms of a step: visual (B·T, embed) and text (classes, embed)
    features, gradients w.r.t. the students."""
    import torch

    from kiclip_kernels.ops.distill_loss import distill_loss_triton
    from kiclip_kernels.reference import distill_loss_reference

    n_vis, e, c = args.batch * args.frames, args.embed, args.classes
    vis_s, vis_t = randn(n_vis, e).requires_grad_(), randn(n_vis, e)
    txt_s, txt_t = randn(c, e).requires_grad_(), randn(c, e)

    def step(fn):
        loss = fn(vis_s, vis_t) + fn(txt_s, txt_t)
        return torch.autograd.grad(loss, (vis_s, txt_s))

    backends = _backends(distill_loss_reference, distill_loss_triton, not args.no_compile)
    # Minimum traffic per term: read student and teacher, write the student's gradient.
    return OpBench("distill_loss", f"distill_loss ({n_vis}, {e}) + ({c}, {e})",
                   {"distill_visual": [n_vis, e], "distill_text": [c, e]},
                   3 * (n_vis + c) * e * vis_s.element_size(),
                   {name: (lambda fn=fn: step(fn)) for name, fn in backends.items()})


SETUPS = (setup_inject_layernorm, setup_distill_loss)


def time_ms(step: Callable, warmup: int, iters: int, on_gpu: bool) -> float:
    """Median milliseconds of ``step()`` over ``iters`` calls after ``warmup`` untimed ones (CUDA
    events on a GPU, wall clock on CPU)."""
    import torch

    for _ in range(warmup):
        step()
    if on_gpu:
        torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        if on_gpu:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def max_err(got: Sequence, want: Sequence) -> float:
    """Largest absolute difference between matching tensors of ``got`` and ``want``."""
    return max((g.float() - r.float()).abs().max().item() for g, r in zip(got, want))


def run_op(op: OpBench, args, on_gpu: bool, peak: float | None) -> dict:
    """{"bytes", backend: {"ms", "gbs", "pct_peak", "max_abs_err_vs_eager", "speedup_vs_eager"}}
    for every backend of ``op``, timed one after the other in this process."""
    expected = op.steps["eager"]()
    result = {"bytes": op.nbytes}
    for backend, step in op.steps.items():
        ms = time_ms(step, args.warmup, args.iters, on_gpu)
        gbs = op.nbytes / (ms * 1e-3) / 1e9
        result[backend] = {
            "ms": round(ms, 4),
            "gbs": round(gbs, 1),
            "pct_peak": round(100 * gbs / peak, 1) if peak else None,
            "max_abs_err_vs_eager": max_err(step(), expected),
        }
    for backend in op.steps:
        result[backend]["speedup_vs_eager"] = round(result["eager"]["ms"] / result[backend]["ms"], 3)
    return result


def print_table(results: dict) -> None:
    for name, res in results.items():
        for backend, r in res.items():
            if backend == "bytes":
                continue
            pct = f" {r['pct_peak']:5.1f}% of peak" if r["pct_peak"] is not None else ""
            print(f"{name:17s} {backend:8s} {r['ms']:9.4f} ms {r['gbs']:8.1f} GB/s{pct}  "
                  f"x{r['speedup_vs_eager']:.2f} vs eager  max|err| {r['max_abs_err_vs_eager']:.2e}")


def _shrink_for_cpu(args) -> None:
    """Tiny shapes and few iterations: the CPU run only shows that the script works."""
    args.batch, args.frames, args.tokens = 1, 2, 3
    args.width, args.embed, args.classes = 100, 48, 5
    args.warmup, args.iters, args.no_compile = 1, 3, True  # inductor's CPU compile would dominate


def _card_and_peak(args, on_gpu: bool) -> tuple[str, float | None]:
    """The device's name and its HBM peak GB/s (--peak-gbs, else from the card's name)."""
    import torch

    if not on_gpu:
        return "cpu (Triton interpreter)", args.peak_gbs
    card = torch.cuda.get_device_name(torch.device("cuda"))
    peak = args.peak_gbs
    if peak is None:
        peak = next((v for k, v in PEAK_GBS.items() if k in card), None)
    return card, peak


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.allow_cpu:
        print(
            "bench_kernels: no CUDA device. The benchmark compares GPU kernels; run it on a GPU, or pass "
            "--allow-cpu for a tiny smoke run whose times mean nothing.",
            file=sys.stderr,
        )
        return 2
    if not on_gpu:
        # The op modules decide interpreted-vs-compiled when first imported, by the setups below.
        from kiclip_kernels.dispatch import interpret_triton_without_cuda

        interpret_triton_without_cuda()
        _shrink_for_cpu(args)

    device = torch.device("cuda" if on_gpu else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    gen = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen)).to(device, dtype)

    ops = [setup(args, randn) for setup in SETUPS]
    card, peak = _card_and_peak(args, on_gpu)
    results = {op.name: run_op(op, args, on_gpu, peak) for op in ops}

    print(f"device: {card}; dtype {args.dtype}; {'; '.join(op.label for op in ops)}; "
          f"median of {args.iters}")
    if not on_gpu:
        print("NOTE: CPU smoke run (reference vs Triton interpreter): these times are meaningless for kernel speed.")
    print_table(results)
    summary = {
        "device": card,
        "smoke_cpu": not on_gpu,
        "dtype": args.dtype,
        "layernorm_weight_dtype": str(dtype).removeprefix("torch."),
        "peak_gbs": peak,
        "shapes": {k: v for op in ops for k, v in op.shapes.items()},
        "iters": args.iters,
        "results": results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
