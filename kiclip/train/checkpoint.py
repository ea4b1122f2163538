"""Run-directory layout and the checkpoint contract: atomic writes, last complete epoch, and
``save_checkpoint`` / ``load_checkpoint``, the one pair that saves and restores a run.

What a checkpoint holds: the DeepSpeed engine's own state (weights, optimiser, scheduler), and
the client state, one entry per ``Stateful`` part of the run (each owns its ``state_dict`` /
``load_state_dict``): ``rng`` (``RngState``), ``templates`` (``TemplateSampler``) and
``progress`` (``TrainProgress``: the epoch just completed and the optimiser steps done).

Layout of a run directory::

    config.json                 the resolved TrainConfig
    deepspeed/epoch_003/        DeepSpeed's sharded state (weights, optimiser, scheduler) and
                                the client state (in mp_rank_00_model_states.pt)
    deepspeed/epoch_003/COMPLETE  written last: only such epochs are resumed from
    weights/epoch_003.pt        consolidated weights that evaluation reads without DeepSpeed
    losses.jsonl                one line per optimiser step (step, epoch, loss terms, lr, template)
    averaged.pt                 launch/average_weights.py output
"""

from __future__ import annotations

import logging
import os
import random
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

log = logging.getLogger("kiclip.train")
_EPOCH_DIR = re.compile(r"^epoch_(\d+)$")
_EPOCH_FILE = re.compile(r"^epoch_(\d+)\.pt$")


def ds_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "deepspeed"


def epoch_tag(epoch: int) -> str:
    return f"epoch_{epoch:03d}"


def weights_path(run_dir: str | Path, epoch: int) -> Path:
    return Path(run_dir) / "weights" / f"{epoch_tag(epoch)}.pt"


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename: never a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def mark_complete(run_dir: str | Path, epoch: int) -> None:
    marker = ds_dir(run_dir) / epoch_tag(epoch) / "COMPLETE"
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(str(epoch))
    os.replace(tmp, marker)


def last_complete_epoch(run_dir: str | Path) -> int | None:
    """Highest epoch whose DeepSpeed state and consolidated weights were both fully written."""
    root = ds_dir(run_dir)
    if not root.is_dir():
        return None
    done = []
    for child in root.iterdir():
        match = _EPOCH_DIR.match(child.name)
        if match and (child / "COMPLETE").exists() and weights_path(run_dir, int(match.group(1))).exists():
            done.append(int(match.group(1)))
    return max(done) if done else None


def epoch_weight_files(run_dir: str | Path) -> dict[int, Path]:
    folder = Path(run_dir) / "weights"
    if not folder.is_dir():
        return {}
    out = {}
    for child in folder.iterdir():
        match = _EPOCH_FILE.match(child.name)
        if match:
            out[int(match.group(1))] = child
    return dict(sorted(out.items()))


def discard_checkpoints(run_dir: str | Path) -> bool:
    """Remove a run's DeepSpeed states and consolidated weights; True if there were any."""
    import shutil

    found = False
    for folder in (ds_dir(run_dir), Path(run_dir) / "weights"):
        if folder.is_dir():
            shutil.rmtree(folder)
            found = True
    return found


class Stateful(Protocol):
    """A part of a run that checkpoints itself: ``load_state_dict(state_dict())`` restores it."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class TrainProgress:
    """Where the run is: ``epoch`` being trained (or just completed, when saved) and the
    optimiser ``step``s done so far. A resume starts at ``epoch + 1``."""

    epoch: int = 0
    step: int = 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])


class RngState:
    """The process's Python, NumPy, torch (and CUDA) generators, as one ``Stateful``."""

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_rng_state(state)


def save_checkpoint(engine, run_dir: str | Path, epoch: int, stateful: Mapping[str, Stateful], *,
                    config: dict, step: int) -> None:
    """Checkpoint ``epoch``: every rank's DeepSpeed state with ``stateful``'s state dicts as
    its client state, the consolidated weights (rank 0; ``config`` and ``step`` go with them,
    for evaluation and averaging), then the COMPLETE marker, written last. Call on every rank.

    The client state is taken before DeepSpeed writes anything, so it is the state at the end
    of the epoch's last step.
    """
    client = {name: part.state_dict() for name, part in stateful.items()}
    engine.save_checkpoint(str(ds_dir(run_dir)), tag=epoch_tag(epoch), client_state=client)
    # All ranks: a collective under bf16. (ZeRO 3, whose parameters are partitioned, is refused
    # at start-up.)
    state = fp32_module_state(engine)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if rank == 0:
        atomic_torch_save({"model": state, "config": config, "epoch": epoch, "step": step},
                          weights_path(run_dir, epoch))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    if rank == 0:
        mark_complete(run_dir, epoch)


def load_checkpoint(engine, run_dir: str | Path, epoch: int, stateful: Mapping[str, Stateful]) -> None:
    """Restore what ``save_checkpoint`` saved for ``epoch``: the engine's state, then each of
    ``stateful`` from its entry in the client state. ValueError naming the checkpoint when an
    entry is missing."""
    folder = ds_dir(run_dir)
    _, client = engine.load_checkpoint(str(folder), tag=epoch_tag(epoch))
    client = _upgrade_client_state(client)
    missing = [name for name in stateful if name not in client]
    if missing:
        raise ValueError(f"checkpoint {folder / epoch_tag(epoch)} holds no {', '.join(missing)} "
                         f"state (it has: {', '.join(map(str, client))})")
    for name, part in stateful.items():
        part.load_state_dict(client[name])


def _upgrade_client_state(client: dict | None) -> dict:
    """Checkpoints written before ``TrainProgress`` kept its fields at the top level."""
    client = dict(client or {})
    if "progress" not in client and "step" in client and "epoch" in client:
        client["progress"] = {"epoch": client["epoch"], "step": client["step"]}
    return client


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fp32_module_state(engine) -> dict[str, torch.Tensor]:
    """``engine.module``'s state dict as fp32 CPU tensors, for the consolidated weights file.

    Under bf16 the module holds a bf16 copy of each trained parameter, rounded from the fp32
    master copy the optimiser updates; the file gets the master copy, so averaging and
    evaluation start from the weights training actually reached (and a resume, which restores
    the master copy from DeepSpeed's state, continues from the same values). Frozen parameters
    and buffers are what the module holds. ZeRO 1/2: a collective (one all-reduce per
    trained parameter): call on every rank. Not for ZeRO 3 (its parameters are partitioned).
    """
    state = engine.module.state_dict()
    if engine.bfloat16_enabled():
        masters = _master_weights(engine)
        trained = [(n, p) for n, p in engine.module.named_parameters() if p.requires_grad]
        missing = [n for n, p in trained if id(p) not in masters]
        if missing:
            log.warning("no fp32 master copy found for %d trained tensors (e.g. %s) with %s: "
                        "saving their bf16 values", len(missing), missing[0],
                        type(engine.optimizer).__name__)
        for name, param in trained:
            if id(param) in masters:
                state[name] = masters[id(param)]
    return {k: v.detach().float().cpu() for k, v in state.items()}


def _master_weights(engine) -> dict[int, torch.Tensor]:
    """id(parameter) → its full fp32 master copy, for the optimisers DeepSpeed uses in bf16."""
    from deepspeed.runtime.fp16.fused_optimizer import FP16_Optimizer
    from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer
    from deepspeed.utils import safe_get_full_fp32_param

    optimizer = engine.optimizer
    # ZeRO 0 in bf16 wraps the optimiser in one of DeepSpeed's fp16 optimisers: per group, the
    # module's parameters and their fp32 copies in the same order (flat in the fused one).
    if isinstance(optimizer, FP16_UnfusedOptimizer):
        return {id(p): m for group, copies in zip(optimizer.fp16_groups, optimizer.fp32_groups)
                for p, m in zip(group, copies)}
    if isinstance(optimizer, FP16_Optimizer):
        from torch._utils import _unflatten_dense_tensors

        return {id(p): m for group, flat in zip(optimizer.fp16_groups, optimizer.fp32_groups_flat)
                for p, m in zip(group, _unflatten_dense_tensors(flat, group))}
    masters = {}
    for param in engine.module.parameters():  # ZeRO 1/2 and BF16_Optimizer: fragment mappings
        if param.requires_grad:
            master = safe_get_full_fp32_param(param)
            if master is not None:
                masters[id(param)] = master
    return masters
