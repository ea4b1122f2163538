"""Base-to-novel (B2N) split logic: which classes are base, few-shot draws, relabelling.

Pure functions over class ids and list rows; make_splits.py does the file handling.
Protocol (ViFi-CLIP / FROSTER): the classes are halved into base and novel; the model trains on
K shots per base class and is tested on base classes (Base) and, zero-shot, on novel ones
(Novel); splits 1..3 differ in the few-shot draw.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Sequence

from shard_tools.lists import ListRow

log = logging.getLogger(__name__)

# dataset -> (base classes, novel classes); base comes first in class order.
PRESETS: dict[str, tuple[int, int]] = {
    "k400": (200, 200),
    "hmdb51": (26, 25),
    "ucf101": (51, 50),
    "ssv2": (87, 87),
    "synthetic": (24, 24),
}

SYNTHETIC_RULE = "base when (colour index + shape index) is even"


def is_synthetic_base(colour: int, shape: int) -> bool:
    """Whether a synthetic-world class (by its colour and shape indices) is base: the
    colour+shape parity rule of ``SYNTHETIC_RULE``, the same for all its directions."""
    return (colour + shape) % 2 == 0


def split_classes(
    n_classes: int, n_base: int, order: str = "class", seed: int = 0
) -> tuple[list[int], list[int]]:
    """(base ids, novel ids), each sorted. order="class": the first n_base classes are base, as
    the published protocol; order="random": a seeded random choice of n_base classes."""
    if not 0 < n_base < n_classes:
        raise ValueError(f"base classes must be between 1 and {n_classes - 1}, got {n_base}")
    ids = list(range(n_classes))
    if order == "class":
        base = ids[:n_base]
    elif order == "random":
        base = sorted(random.Random(seed).sample(ids, n_base))
    else:
        raise ValueError(f"order must be 'class' or 'random', got {order!r}")
    novel = [i for i in ids if i not in set(base)]
    return base, novel


def synthetic_split(world: dict) -> tuple[list[int], list[int]]:
    """(base ids, novel ids) of the synthetic world: a colour-shape pair is base when
    (colour + shape) is even, with all its directions. The shortcut (in base, some colours only
    ever come with one shape) does not hold for novel classes, which is what makes forgetting
    measurable."""
    base, novel = [], []
    for index, attrs in sorted(world["classes"].items(), key=lambda kv: int(kv[0])):
        (base if is_synthetic_base(attrs["colour"], attrs["shape"]) else novel).append(int(index))
    return base, novel


def few_shot(rows: Sequence[ListRow], classes: Sequence[int], shots: int, seed: int
             ) -> list[ListRow]:
    """Up to `shots` rows per class in `classes`, drawn with `seed`, returned in list order.

    A class with fewer rows than `shots` contributes all it has (logged). List order is kept so
    split files stay readable; make_shards shuffles the order it writes samples in.
    """
    by_class: dict[int, list[ListRow]] = defaultdict(list)
    for row in rows:
        by_class[row.label].append(row)
    rng = random.Random(seed)
    chosen: set[int] = set()
    for label in classes:
        candidates = by_class.get(label, [])
        if len(candidates) < shots:
            log.warning("class %d has %d training videos, fewer than %d shots; using all",
                        label, len(candidates), shots)
            picked = candidates
        else:
            picked = rng.sample(candidates, shots)
        chosen.update(id(r) for r in picked)
    return [r for r in rows if id(r) in chosen]


def relabel(rows: Sequence[ListRow], classes: Sequence[int]) -> list[tuple[str, int]]:
    """(path, new label) for rows whose label is in `classes`; new label = position in it."""
    position = {c: i for i, c in enumerate(classes)}
    return [(r.path, position[r.label]) for r in rows if r.label in position]


def adopt_published(rows: Sequence[ListRow], classes: Sequence[int], source: str
                    ) -> list[tuple[str, int]]:
    """(path, label in this label space) for a published split list, taken as it is.

    Published lists label either with original class ids (all in `classes`) or already
    re-indexed 0..len(classes)-1; the first reading that fits every row is used.
    """
    labels = {r.label for r in rows}
    if labels <= set(classes):
        return relabel(rows, classes)
    if labels <= set(range(len(classes))):
        return [(r.path, r.label) for r in rows]
    bad = next(r for r in rows if r.label not in set(classes) and r.label >= len(classes))
    raise ValueError(
        f"{source}:{bad.line}: label {bad.label} is neither one of this label space's original "
        f"class ids nor an index below {len(classes)}")
