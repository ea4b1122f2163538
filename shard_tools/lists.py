"""Readers and writers for video list files and class-name files.

List files name one video per line with its integer label, in either form datasets publish:
    relative/path.mp4,12        (CSV, as make_synthetic and FROSTER write)
    relative/path.mp4 12        (space separated, as the ViFi-CLIP/FROSTER B2N split files)
An optional header line (e.g. `path,label`) is skipped; blank lines and `#` comments too.

Class files map index -> name, in any of:
    {"0": "abseiling", ...}                         plain JSON object
    {"0": "abseiling: a person descends a rope"}    rephrased ("Name: description")
    ["abseiling", ...]                              JSON list, position = index
    {"abseiling": 0, ...}                           name -> index JSON object
    0,abseiling  (or `id,name` header first)        CSV/text, one class per line
Every error names the file and, where there is one, the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class ListFileError(ValueError):
    """A list or class file that cannot be read; the message names the file and line."""


@dataclass(frozen=True)
class ListRow:
    """One video of a list file; `line` is 1-based, for error messages and the manifest."""

    path: str
    label: int
    line: int


@dataclass(frozen=True)
class ClassName:
    """One class: `name` is the plain name; `text` the full rephrased string (or the name)."""

    name: str
    text: str

    @property
    def rephrased(self) -> bool:
        return self.text != self.name


def read_video_list(path: Path) -> list[ListRow]:
    """Rows of a CSV (`path,label`) or space-separated (`path label`) list, in file order."""
    path = Path(path)
    lines = _read_lines(path)
    rows: list[ListRow] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")] if "," in line else line.split()
        if len(fields) != 2 or not fields[0]:
            raise ListFileError(
                f"{path}:{number}: expected `relative/path,label` or `relative/path label`, "
                f"got {line!r}"
            )
        video, label = fields
        try:
            value = int(label)
        except ValueError:
            if not rows and _is_header(number, lines):
                continue  # a header such as `path,label`
            raise ListFileError(
                f"{path}:{number}: label {label!r} is not an integer (line {line!r})"
            ) from None
        if value < 0:
            raise ListFileError(f"{path}:{number}: label {value} is negative")
        rows.append(ListRow(video, value, number))
    if not rows:
        raise ListFileError(f"{path}: no rows (expected lines `relative/path,label`)")
    return rows


def read_classes(path: Path) -> list[ClassName]:
    """Class names of a JSON or CSV class file; position i holds class index i.

    Indices must run 0..n-1 without gaps or repeats. A value "Name: description" is read as a
    rephrased class: `name` is the part before the first colon, `text` the whole string.
    """
    path = Path(path)
    text = "\n".join(_read_lines(path))
    if text.lstrip().startswith(("{", "[")):
        by_index = _classes_from_json(path, text)
    else:
        by_index = _classes_from_csv(path, text.splitlines())
    if not by_index:
        raise ListFileError(f"{path}: no classes")
    missing = sorted(set(range(len(by_index))) - set(by_index))
    if missing:
        raise ListFileError(
            f"{path}: class indices must run 0..{len(by_index) - 1}; missing {missing[:10]}"
        )
    return [_class_name(path, i, by_index[i]) for i in range(len(by_index))]


def write_video_list(path: Path, rows: Iterable[tuple[str, int]]) -> None:
    """Write `relative/path,label` rows, no header (the form make_shards reads)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("".join(f"{p},{label}\n" for p, label in rows))


def write_classes(path: Path, texts: Iterable[str]) -> None:
    """Write `{"0": text, ...}` JSON; texts may be plain or rephrased names."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    mapping = {str(i): t for i, t in enumerate(texts)}
    Path(path).write_text(json.dumps(mapping, indent=1, ensure_ascii=False) + "\n")


def _read_lines(path: Path) -> list[str]:
    if not path.exists():
        raise ListFileError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise ListFileError(f"{path}: not UTF-8 text ({err})") from None


def _is_header(number: int, lines: list[str]) -> bool:
    """True when line `number` is the first non-blank, non-comment line of the file."""
    return all(not line.strip() or line.strip().startswith("#") for line in lines[: number - 1])


def _classes_from_json(path: Path, text: str) -> dict[int, object]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ListFileError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    if isinstance(data, list):
        return dict(enumerate(data))
    if data and all(isinstance(v, int) and not isinstance(v, bool) for v in data.values()):
        # {"name": index}: the inverse form some Kinetics tools write.
        inverted: dict[int, object] = {}
        for name, index in data.items():
            if index in inverted:
                raise ListFileError(f"{path}: index {index} given to two classes")
            inverted[index] = name
        return inverted
    by_index: dict[int, object] = {}
    for key, value in data.items():
        try:
            by_index[int(key)] = value
        except ValueError:
            raise ListFileError(
                f"{path}: key {key!r} is not a class index (expected {{\"0\": \"name\"}})"
            ) from None
    return by_index


def _classes_from_csv(path: Path, lines: list[str]) -> dict[int, object]:
    by_index: dict[int, object] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        index, sep, name = line.partition(",")
        if not sep:
            raise ListFileError(f"{path}:{number}: expected `index,name`, got {line!r}")
        try:
            key = int(index)
        except ValueError:
            if not by_index and _is_header(number, lines):
                continue  # `id,name` header
            raise ListFileError(f"{path}:{number}: index {index!r} is not an integer") from None
        if key in by_index:
            raise ListFileError(f"{path}:{number}: class index {key} appears twice")
        by_index[key] = name.strip().strip('"')
    return by_index


def _class_name(path: Path, index: int, value: object) -> ClassName:
    if not isinstance(value, str) or not value.strip():
        raise ListFileError(f"{path}: class {index} has no name (got {value!r})")
    text = value.strip()
    name = text.split(":", 1)[0].strip()
    if not name:
        raise ListFileError(f"{path}: class {index} has an empty name before ':' ({text!r})")
    return ClassName(name=name, text=text)
