"""Element-wise average of a run's per-epoch consolidated weights (docs/model.md §6)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from kiclip.train import checkpoint as ckpt
from kiclip.weights import load_weights

log = logging.getLogger(__name__)


def average_state_dicts(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Mean of float tensors key by key (fp32 accumulation); other tensors from the last one.

    Frozen tensors (the KI copy) are equal in every epoch, so averaging leaves them unchanged.
    """
    if not states:
        raise ValueError("nothing to average")
    keys = states[0].keys()
    for i, state in enumerate(states[1:], start=1):
        if state.keys() != keys:
            raise ValueError(f"checkpoint {i} has different keys from checkpoint 0")
    out = {}
    for key in keys:
        tensors = [s[key] for s in states]
        if tensors[0].is_floating_point():
            out[key] = torch.stack([t.float() for t in tensors]).mean(0).to(tensors[0].dtype)
        else:
            out[key] = tensors[-1].clone()
    return out


def average_run(run_dir: str | Path, *, first: int = 2, last: int | None = None,
                out: str | Path | None = None) -> Path:
    """Average epochs ``first..last`` (counting from 1) of ``run_dir``; returns the output path.

    ``first`` is clipped to the run's length, so a 1-epoch run averages its only epoch.
    """
    files = ckpt.epoch_weight_files(run_dir)
    if not files:
        raise FileNotFoundError(f"{run_dir} holds no weights/epoch_*.pt: is it a train.py --output folder?")
    available = [e + 1 for e in files]  # 1-based, as docs/model.md §6 counts epochs
    last = available[-1] if last is None else last
    first = min(first, last)
    chosen = [e for e in available if first <= e <= last]
    if not chosen:
        raise ValueError(f"{run_dir}: no epochs in {first}..{last} (have {available[0]}..{available[-1]})")
    blobs = [load_weights(files[e - 1]) for e in chosen]
    averaged = {"model": average_state_dicts([b["model"] for b in blobs]),
                "config": blobs[-1]["config"], "epoch": blobs[-1]["epoch"], "step": blobs[-1]["step"],
                "averaged_epochs": chosen}
    out = Path(out) if out else Path(run_dir) / "averaged.pt"
    ckpt.atomic_torch_save(averaged, out)
    log.info("averaged epochs %s of %s into %s", chosen, run_dir, out)
    return out
