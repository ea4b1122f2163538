"""The first check on a file a command was given: one sentence naming the file and what is
wrong with it, found without opening it (no torch, no decoder)."""

from __future__ import annotations

import os
from pathlib import Path


def file_problem(path: str | os.PathLike, what: str = "video", *, kind: str = "file",
                 hint: str | None = None) -> str | None:
    """Why ``path`` cannot be the ``what`` a command needs — does not exist, is a directory, is
    not a regular file, is empty — or None when it is a non-empty regular file. ``kind`` names
    what a directory is not ("a directory, not a weights file"); ``hint``, when given, is added
    to the missing and directory cases (where the user most likely mistyped the path)."""
    path = Path(path)
    tail = f" ({hint})" if hint else ""
    if not path.exists():
        return f"{what} {path} does not exist{tail}"
    if path.is_dir():
        return f"{what} {path} is a directory, not a {kind}{tail}"
    if not path.is_file():
        return f"{what} {path} is not a regular file"
    if path.stat().st_size == 0:
        return f"{what} {path} is an empty file (0 bytes)"
    return None
