"""Process-group set-up for DeepSpeed's launcher and for a plain single `python` process."""

from __future__ import annotations

import os
import socket

import torch


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


def init_distributed() -> tuple[int, int, torch.device]:
    """Initialise torch.distributed via DeepSpeed; returns (rank, world_size, device)."""
    import deepspeed

    ensure_single_process_env()
    use_cuda = torch.cuda.is_available()
    if not use_cuda:
        _skip_shared_memory_comm_build()
    deepspeed.init_distributed(dist_backend="nccl" if use_cuda else "gloo")
    rank = torch.distributed.get_rank()
    world = torch.distributed.get_world_size()
    if use_cuda:
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return rank, world, device


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
