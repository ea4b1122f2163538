"""Process-group set-up for DeepSpeed's launcher and for a plain single `python` process, on
the device kiclip.device.choose_device_type picked."""

from __future__ import annotations

import os
import socket

import torch

from kiclip.device import DeviceError


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
