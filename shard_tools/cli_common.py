"""Small pieces every shard_tools command shares: logging set-up and the worker-pool map."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")
R = TypeVar("R")


def setup_logging(verbose: bool = False) -> None:
    """Diagnostics go to stderr through logging; command results are printed to stdout."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="[%(name)s] %(levelname)s %(message)s",
    )


def default_workers() -> int:
    """One worker per CPU this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    progress: bool,
    desc: str,
    total: int | None = None,
) -> Iterator[R]:
    """Yield fn(item) in input order, computed by `workers` processes, with a tqdm bar.

    workers <= 1 runs in this process (no pool start-up; easy to debug). `fn` must be a
    module-level function so it pickles.
    """
    items = list(items)
    bar = tqdm(total=total or len(items), desc=desc, disable=not progress, unit="video")
    try:
        if workers <= 1 or len(items) <= 1:
            for item in items:
                yield fn(item)
                bar.update()
            return
        pool = ProcessPoolExecutor(max_workers=workers)
        try:
            # Small chunks keep the bar moving; map keeps input order.
            chunksize = max(1, min(16, len(items) // (workers * 8)))
            for result in pool.map(fn, items, chunksize=chunksize):
                yield result
                bar.update()
        finally:
            # On an error or Ctrl-C downstream, drop the queued work instead of finishing it.
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()
