"""The Python parts of launch/gpu_check.sh, one subcommand each; every part writes a JSON file.

  environment  GPU, driver, versions, DALI's GPU decode per codec, C compiler, ptxas
  parity       Triton vs reference kernels at training scale (12,608 x 768 rows), values and grads
  dali-decode  DALI GPU (NVDEC) decode vs CPU decode of the same shards, PSNR per codec (the CPU
               reference is DALI's CPU decoder where it takes the codec, else the PyAV loader)

Exit status: 0 passed, 1 failed, 77 skipped (a dependency is missing; the last line of output
says which), so gpu_check.sh can record PASS / FAIL / SKIPPED without parsing logs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

SKIP = 77


def _write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str))
    print(json.dumps(data, default=str))


def _skip(reason: str) -> int:
    print(f"SKIPPED: {reason}")
    return SKIP


def _command_output(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return (proc.stdout or proc.stderr).strip()


def _version(*distributions: str) -> str | None:
    """The installed version of the first of ``distributions`` present (read from its metadata,
    without importing it: deepspeed alone takes seconds to import)."""
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def environment(out: Path) -> int:
    """Record the host; passes when it could look (a missing GPU is recorded, not failed)."""
    import torch

    info = {
        "python": sys.version.split()[0], "platform": platform.platform(),
        "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "triton": _version("triton"), "deepspeed": _version("deepspeed"),
        "dali": _version("nvidia-dali-cuda120", "nvidia-dali-cuda130", "nvidia-dali-cuda110"),
        "open_clip": _version("open_clip_torch"),
        "nvidia_smi": _command_output(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,"
                                       "compute_cap", "--format=csv,noheader"]),
        "c_compiler": (_command_output(["cc", "--version"]) or "none").splitlines()[0],
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                       "memory_gib": props.total_memory / 2**30, "sms": props.multi_processor_count}
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        info["ptxas"] = get_ptxas(90).version
    except Exception as err:
        info["ptxas"] = f"unavailable: {err}"
    from kiclip_kernels import dispatch

    info["triton_launcher_problem"] = dispatch.triton_launcher_problem() if torch.cuda.is_available() else None
    info["nvdec"] = _nvdec_answer()
    _write(out, info)
    return 0


def _nvdec_answer() -> dict:
    """DALI's GPU decoder asked per codec, on a tiny clip of each that make_shards can write
    (the loaders ask the same question of the shards' own samples); an error is recorded,
    not raised: the environment part only describes the host."""
    import tempfile

    import numpy as np

    try:
        from kiclip.data.codecs import dali_try_decode
        from kiclip.data.dali_loader import dali_available
        from shard_tools.video_io import CODECS, encode_frames

        if not dali_available():
            return {"error": "DALI not importable"}
        frames = [np.full((64, 64, 3), 16 * i, np.uint8) for i in range(4)]
        answers = {}
        with tempfile.TemporaryDirectory() as tmp:
            for codec, spec in sorted(CODECS.items()):
                path = Path(tmp) / f"probe.{spec.ext}"
                encode_frames(frames, path, codec, fps=25.0)
                answers[codec] = bool(dali_try_decode(path.read_bytes(), "cuda"))
        return answers
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}"}


def parity(out: Path, rows: int, width: int, dtype_name: str) -> int:
    """Triton against the reference at ``rows`` x ``width``; fails outside the ops' TOLERANCES."""
    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu and os.environ.get("TRITON_INTERPRET") != "1":
        return _skip("no CUDA device (set TRITON_INTERPRET=1 to run small shapes on CPU)")
    device = torch.device("cuda" if on_gpu else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype_name]
    from kiclip_kernels.ops.distill_loss import TOLERANCES as DL_TOL
    from kiclip_kernels.ops.distill_loss import distill_loss_triton
    from kiclip_kernels.ops.inject_layernorm import TOLERANCES as LN_TOL
    from kiclip_kernels.ops.inject_layernorm import inject_layernorm_triton
    from kiclip_kernels.reference import distill_loss_reference, inject_layernorm_reference

    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype).requires_grad_()

    h, f = randn(rows, width), randn(rows, width)
    w = (1 + 0.1 * torch.randn(width, generator=g)).to(device, dtype).requires_grad_()
    b = (0.1 * torch.randn(width, generator=g)).to(device, dtype).requires_grad_()
    dy, dln = torch.randn(rows, width, generator=g).to(device), torch.randn(rows, width, generator=g).to(device)

    def ln_run(fn, upcast):
        args = [t.detach().float().requires_grad_() if upcast else t for t in (h, f, w, b)]
        y, ln = fn(*args, 0.5, 1e-5)
        grads = torch.autograd.grad([y, ln], args, [dy.to(y.dtype), dln.to(ln.dtype)])
        return {"y": y, "ln_y": ln, **dict(zip(("dh", "df", "dw", "db"), grads))}

    report = {"rows": rows, "width": width, "dtype": dtype_name, "device": str(device), "ops": {}}
    ok = True
    got, want = ln_run(inject_layernorm_triton, False), ln_run(inject_layernorm_reference, True)
    ok &= _compare(report["ops"].setdefault("inject_layernorm", {}), got, want, LN_TOL[dtype])

    embed = 512
    frames = rows // 197 if rows >= 197 else rows  # the visual term: one row per frame
    s = randn(frames, embed)
    t = torch.randn(frames, embed, generator=g).to(device, dtype)

    def dl_run(fn, upcast):
        x = s.detach().float().requires_grad_() if upcast else s
        loss = fn(x, t.float() if upcast else t)
        (ds,) = torch.autograd.grad(loss, [x])
        return {"loss": loss, "dstudent": ds}

    got, want = dl_run(distill_loss_triton, False), dl_run(distill_loss_reference, True)
    ok &= _compare(report["ops"].setdefault("distill_loss", {"rows": frames}), got, want, DL_TOL[dtype])
    report["passed"] = bool(ok)
    _write(out, report)
    return 0 if ok else 1


def _compare(entry: dict, got: dict, want: dict, tol: dict) -> bool:
    """Errors per output into ``entry``; whether each output's relative L2 error is within the
    op's rtol.

    Not elementwise: dweight/dbias sum over all rows, and at 12,608 rows their bf16 error grows
    with the row count while each element's value can cancel to near zero, so elementwise
    tolerances made for a few rows would fail by design. The relative L2 error stays at the
    inputs' rounding level whatever the row count (at 2,000 x 768 bf16: Triton's dweight is off
    by 0.8 at most against values up to 165; eager bf16 by 12).
    """
    ok = True
    for name in want:
        a, b = got[name].detach().float().cpu(), want[name].detach().float().cpu()
        rel = float((a - b).norm() / b.norm().clamp_min(1e-30))
        within = rel <= tol["rtol"]
        entry[name] = {"max_abs_err": float((a - b).abs().max()), "rel_l2_err": rel, "within_tolerance": within}
        ok &= within
    return ok


def dali_decode(out: Path, shard_root: Path, min_psnr: float) -> int:
    """Decode each codec's shards with DALI on the GPU and on the CPU; PSNR of GPU vs CPU per codec.

    The CPU reference is DALI's CPU decoder where it takes the codec, else the fallback PyAV
    loader (their outputs differ by resampling and colour conversion: ~39 dB on MJPEG).
    """
    import torch

    from kiclip.data import build_loader
    from kiclip.data.dali_loader import dali_available
    from shard_tools.video_io import DALI_CPU_CODECS

    if not torch.cuda.is_available():
        return _skip("no CUDA device")
    if not dali_available():
        return _skip("DALI is not installed")
    report = {"min_psnr_db": min_psnr, "codecs": {}}
    ok, any_ran = True, False
    for codec_dir in sorted(p for p in shard_root.iterdir() if p.is_dir()):
        codec = codec_dir.name
        reference = "dali" if codec in DALI_CPU_CODECS else "torch"
        entry = report["codecs"].setdefault(codec, {"cpu_reference": reference})
        try:
            cpu = _decode_all(build_loader, codec_dir, "cpu", reference)
            gpu = _decode_all(build_loader, codec_dir, "cuda", "dali")
        except Exception as err:  # NVDEC refusing a codec is the finding this part records
            entry["status"] = f"FAIL: {type(err).__name__}: {str(err).splitlines()[0][:300]}"
            ok = False
            continue
        any_ran = True
        psnr = _psnr(torch.cat([cpu[k] for k in sorted(cpu)]), torch.cat([gpu[k] for k in sorted(cpu)]))
        entry.update({"clips": len(cpu), "psnr_db": psnr, "same_keys": sorted(cpu) == sorted(gpu)})
        entry["status"] = "PASS" if psnr >= min_psnr and entry["same_keys"] else "FAIL"
        ok &= entry["status"] == "PASS"
    report["passed"] = bool(ok and any_ran)
    _write(out, report)
    if not any_ran and ok:
        return _skip("no codec could be compared")
    return 0 if ok else 1


def _decode_all(build_loader, shards: Path, device: str, backend: str) -> dict:
    """Every test-mode clip of ``shards`` decoded by ``backend`` on ``device``, keyed by
    (key, view), as CPU tensors."""
    from kiclip.data import ClipSpec, LoaderSpec, open_shards

    # Key-frame windows on, as training's default (data.keyframe_windows): the GPU decodes the
    # re-packed streams of the windows the default plans.
    clip = ClipSpec(num_frames=8, stride=2, image_size=64, num_views=1, keyframe_windows=True)
    spec = LoaderSpec(mode="test", clip=clip, batch_size=4, backend=backend, num_workers=2,
                      shuffle=False)
    loader = build_loader(open_shards(shards), spec, device=device)
    clips = {}
    for batch in loader:
        for i, (key, valid) in enumerate(zip(batch["key"], batch["valid"].tolist())):
            if valid:
                clips[(key, int(batch["view"][i]))] = batch["video"][i:i + 1].float().cpu()
    if loader.skipped:
        raise RuntimeError(f"{loader.skipped} clips failed to decode on {device}")
    return clips


def _psnr(a, b) -> float:
    """PSNR in dB over the value range of ``a`` (the CPU decode, normalised pixels)."""
    mse = float(((a - b) ** 2).mean())
    peak = float(a.max() - a.min())
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="part", required=True)
    p = sub.add_parser("environment", help="record the host")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p = sub.add_parser("parity", help="Triton vs reference kernels at training scale")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rows", type=int, default=8 * 8 * 197, help="rows (B*T*tokens; 12,608 at B=8 T=8)")
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    p = sub.add_parser("dali-decode", help="DALI GPU vs CPU decode, PSNR per codec")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shards", type=Path, required=True, help="one shard folder per codec, named by codec")
    p.add_argument("--min-psnr", type=float, default=30.0, help="dB; GPU decode below this fails")
    args = parser.parse_args(argv)
    if args.part == "environment":
        return environment(args.out)
    if args.part == "parity":
        return parity(args.out, args.rows, args.width, args.dtype)
    return dali_decode(args.out, args.shards, args.min_psnr)


if __name__ == "__main__":
    sys.exit(main())
