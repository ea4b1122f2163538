"""Process-group set-up for DeepSpeed's launcher and for a plain single `python` process, and
the choice of device (``run.device``: auto | cpu | cuda)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess

import torch

log = logging.getLogger("kiclip.train")
DEVICES = ("auto", "cpu", "cuda")


class DeviceError(RuntimeError):
    """The requested device cannot be used; the message says why and what to do."""


def nvidia_smi_lists_gpu() -> bool:
    """Whether ``nvidia-smi -L`` (found on PATH) lists at least one GPU: the driver sees one,
    whatever this torch build can do with it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and any(line.startswith("GPU ") for line in done.stdout.splitlines())


def _unusable_gpu_reason() -> str:
    build = torch.version.cuda
    if build is None:
        what = "this torch is a CPU-only build"
    else:
        what = (f"this torch is built for CUDA {build}, likely newer than the driver supports "
                "(nvidia-smi prints the newest CUDA the driver runs)")
    return (f"nvidia-smi lists a GPU but torch.cuda.is_available() is False: {what}; install a "
            "torch wheel built for the driver's CUDA version, or update the driver")


def choose_device_type(requested: str = "auto") -> str:
    """"cpu" or "cuda" for ``run.device``.

    auto: CUDA when torch can use it, else CPU, with a warning when the driver sees a GPU that
    torch cannot use (an unnoticed CPU run of a GPU-sized job would crawl). cuda: DeviceError with the
    reason when torch cannot use a GPU. cpu: CPU even on a GPU host.
    """
    if requested not in DEVICES:
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    gpu_listed = nvidia_smi_lists_gpu()
    if requested == "cuda":
        raise DeviceError("--device cuda: " + (_unusable_gpu_reason() if gpu_listed else
                          "no CUDA device (torch.cuda.is_available() is False and nvidia-smi "
                          "lists no GPU)"))
    if gpu_listed:
        log.warning("training on the CPU: %s", _unusable_gpu_reason())
    return "cpu"


def cuda_device_for_local_rank(local_rank: int) -> torch.device:
    """The GPU of local rank ``local_rank``; DeviceError when this host has fewer GPUs."""
    count = torch.cuda.device_count()
    if not 0 <= local_rank < count:
        raise DeviceError(f"LOCAL_RANK={local_rank} but this host has {count} visible CUDA "
                          "device(s): start at most that many ranks per node, or use --device cpu")
    return torch.device("cuda", local_rank)


def ensure_single_process_env() -> None:
    """A plain `python launch/train.py` gets the env DeepSpeed's launcher would have set."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        with socket.socket() as sock:  # a free port, so two local runs don't collide
            sock.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(sock.getsockname()[1])


def select_deepspeed_accelerator(device_type: str) -> None:
    """Make DeepSpeed use ``device_type``. It picks its accelerator (where the engine puts the
    module) on its own, CUDA whenever it sees one, when ``deepspeed`` is first imported;
    DS_ACCELERATOR is its override. Call before that import."""
    if device_type == "cpu":
        os.environ["DS_ACCELERATOR"] = "cpu"


def init_distributed(device_type: str) -> tuple[int, int, torch.device]:
    """Initialise torch.distributed via DeepSpeed on ``device_type`` ("cpu" or "cuda", from
    ``choose_device_type``); returns (rank, world_size, device)."""
    ensure_single_process_env()
    use_cuda = device_type == "cuda"
    if use_cuda:
        device = cuda_device_for_local_rank(int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    select_deepspeed_accelerator(device_type)
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if not use_cuda:
        _skip_shared_memory_comm_build()
    if get_accelerator().device_name() != device_type:
        raise DeviceError(f"DeepSpeed already chose the {get_accelerator().device_name()} "
                          f"accelerator in this process; cannot train on {device_type}")
    deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo")
    return torch.distributed.get_rank(), torch.distributed.get_world_size(), device


def _skip_shared_memory_comm_build() -> None:
    """On CPU, DeepSpeed JIT-compiles a C++ shared-memory all-reduce at init (1-2 minutes on a
    fresh machine) that only speeds up inference collectives; gloo does all we need. DeepSpeed
    offers no switch, so mark the op incompatible in its probe table before it looks."""
    import deepspeed.ops

    table = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(table, dict):
        table["deepspeed_shm_comm"] = False


def deepspeed_config(*, batch_per_rank: int, world_size: int, zero_stage: int, bf16: bool,
                     grad_clip: float, lr: float, betas, eps: float, weight_decay: float) -> dict:
    """The DeepSpeed JSON we generate when the user passes none."""
    return {
        "train_micro_batch_size_per_gpu": batch_per_rank,
        "train_batch_size": batch_per_rank * world_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": grad_clip,
        "zero_optimization": {"stage": zero_stage},
        "bf16": {"enabled": bool(bf16)},
        # torch's AdamW: DeepSpeed's fused/CPU Adam need compiled ops we don't require.
        "optimizer": {"type": "AdamW", "params": {
            "lr": lr, "betas": list(betas), "eps": eps, "weight_decay": weight_decay,
            "torch_adam": True}},
        "steps_per_print": 10 ** 9,  # our own progress bar reports
        "wall_clock_breakdown": False,
    }
