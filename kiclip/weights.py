"""kiclip's consolidated weights file (RUN/weights/epoch_NNN.pt, RUN/averaged.pt): the check
and the reader every command that takes ``--checkpoint`` shares, so a bad file gets one message.

The file is ``torch.save({"model": state_dict, "config": dict, "epoch": int, ...})``; "model" is
the train module's state dict (``kiclip.train.step.KiclipTrainModule``): ``student.*`` the
VideoStudent, ``loss.*`` the distillation projectors.

The module imports no torch until a file is read: CLIs call ``weights_file_problem`` on their
arguments before loading torch, so a typo is answered at once.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

from kiclip.files import file_problem

WEIGHTS_HINT = "train.py writes RUN/weights/epoch_NNN.pt; average_weights.py writes RUN/averaged.pt"

# torch.save writes a zip archive; files from torch < 1.6 (or _use_new_zipfile_serialization=
# False) are a bare pickle, which starts with the PROTO opcode.
_TORCH_MAGICS = (b"PK\x03\x04", b"\x80")

STUDENT_PREFIX = "student."


def weights_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be a weights file, seen without opening it (missing, a directory,
    not a regular file, empty), as a sentence naming the file; None when it may be one."""
    return file_problem(path, "checkpoint", kind="weights file", hint=WEIGHTS_HINT)


def load_weights(path: str | os.PathLike) -> dict[str, Any]:
    """A consolidated weights file: {"model": state_dict, "config": dict, "epoch": int}, on CPU.

    Raises FileNotFoundError when `path` does not exist and ValueError naming what else is
    wrong: a directory, an empty file, not a PyTorch file at all (e.g. JSON or random bytes), a
    damaged one, or a PyTorch file without kiclip's "model" entry (its keys are listed).
    """
    path = Path(path)
    problem = weights_file_problem(path)
    if problem:
        raise (ValueError if path.exists() else FileNotFoundError)(problem)
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head.startswith(_TORCH_MAGICS):
        raise ValueError(f"checkpoint {path} is not a PyTorch weights file (it starts with "
                         f"{head!r}; torch.save writes a zip archive)")
    blob = _torch_load(path)
    if not isinstance(blob, dict) or "model" not in blob:
        found = (f"top-level keys: {', '.join(map(str, list(blob)[:8]))}"
                 if isinstance(blob, dict) else f"it holds a {type(blob).__name__}")
        raise ValueError(f"checkpoint {path} is a PyTorch file but not a kiclip weights file: no "
                         f"'model' entry ({found}; {WEIGHTS_HINT})")
    return blob


def _torch_load(path: Path) -> Any:
    """torch.load(weights_only=True) on CPU; ValueError naming the file when it cannot."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"checkpoint {path} cannot be unpickled by torch.load(weights_only=True): "
                         "it is damaged or holds objects other than tensors and plain values, so "
                         "it is not a kiclip weights file") from err
    except Exception as err:  # noqa: BLE001 - zip, pickle and torch each raise their own types
        first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"checkpoint {path} is a damaged or unsupported PyTorch file "
                         f"({type(err).__name__}: {first_line[:200]})") from err


def student_state(blob: dict[str, Any]) -> dict[str, Any]:
    """The VideoStudent's own state dict out of a loaded weights file (its ``student.*``
    entries, prefix removed); the projectors' ``loss.*`` entries are left out."""
    return {key[len(STUDENT_PREFIX):]: value for key, value in blob["model"].items()
            if key.startswith(STUDENT_PREFIX)}
