"""Small pieces every shard_tools command shares: logging set-up, the common options, numeric
argument types, the worker-pool map and its progress display."""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from tqdm import tqdm

# Numeric argparse types live in kiclip (launch commands may use them too); commands import them here.
from kiclip.cli_args import non_negative_int, number_type, positive_float, positive_int  # noqa: F401

T = TypeVar("T")
R = TypeVar("R")

# How often (s) the main process wakes to redraw the in-item work count while workers run.
_POLL_SECONDS = 0.5

# Where report_work() sends its counts: set per process by parallel_map (None: nobody listens).
_work_sink: Callable[[int], None] | None = None


def setup_logging(verbose: bool = False) -> None:
    """Diagnostics go to stderr through logging; command results are printed to stdout."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="[%(name)s] %(levelname)s %(message)s",
    )


def add_run_options(parser: argparse.ArgumentParser, *, parallel_work: str | None = None) -> None:
    """Add the options the commands share: ``-v/--verbose`` (debug logging, see setup_logging)
    and, for a command that maps its work over a process pool (``parallel_work`` says what the
    processes do, e.g. "rendering"), ``--workers`` (default: default_workers()) and
    ``--no-progress`` (parallel_map's bar)."""
    if parallel_work is not None:
        parser.add_argument("--workers", type=positive_int, default=default_workers(),
                            help=f"processes {parallel_work} in parallel")
        parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def default_workers() -> int:
    """One worker per CPU this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def report_work(amount: int) -> None:
    """Add `amount` (e.g. frames decoded) to the count parallel_map shows beside its bar, so a
    long item still shows movement; a no-op when no bar is listening. Safe in workers."""
    if _work_sink is not None:
        _work_sink(amount)


def parallel_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    progress: bool,
    desc: str,
    total: int | None = None,
    work_unit: str | None = None,
) -> Iterator[R]:
    """Yield fn(item) in input order, computed by `workers` processes, with a tqdm bar.

    workers <= 1 runs in this process (no pool start-up; easy to debug). `fn` must be a
    module-level function so it pickles. With `work_unit` (e.g. "frames") the bar also shows
    what `fn` passed to report_work() so far. Workers ignore Ctrl-C (SIGINT): the main process
    alone receives it and, when the generator is closed or raises, terminates the pool, so an
    interrupt prints no traceback per worker and does not wait for long items to finish.
    """
    items = list(items)
    bar = tqdm(total=total or len(items), desc=desc, disable=not progress, unit="video")
    try:
        if workers <= 1 or len(items) <= 1:
            yield from _map_here(fn, items, bar, work_unit)
        else:
            yield from _map_pool(fn, items, workers, bar, work_unit)
    finally:
        bar.close()


def _map_here(fn, items: list, bar: tqdm, work_unit: str | None) -> Iterator:
    global _work_sink
    done = [0]

    def show(amount: int) -> None:
        done[0] += amount
        bar.set_postfix_str(f"{done[0]} {work_unit}", refresh=False)
        bar.update(0)  # redraws at tqdm's own rate limit, not per call

    _work_sink = show if work_unit and not bar.disable else None
    try:
        for item in items:
            yield fn(item)
            bar.update()
    finally:
        _work_sink = None


def _map_pool(fn, items: list, workers: int, bar: tqdm, work_unit: str | None) -> Iterator:
    counter = multiprocessing.Value("q", 0)
    pool = multiprocessing.Pool(workers, initializer=_init_worker,
                                initargs=(counter if work_unit else None,))
    finished = False
    try:
        # Small chunks keep the bar moving; imap keeps input order. Chunks are made here
        # because Pool.imap's own chunking hides the iterator whose next() takes a timeout.
        size = max(1, min(16, len(items) // (workers * 8)))
        chunks = [(fn, items[i:i + size]) for i in range(0, len(items), size)]
        results = pool.imap(_apply_chunk, chunks)
        while True:
            try:
                chunk = results.next(timeout=_POLL_SECONDS)
            except multiprocessing.TimeoutError:
                _show_work(bar, counter, work_unit)
                continue
            except StopIteration:
                break
            _show_work(bar, counter, work_unit)
            for result in chunk:
                yield result
                bar.update()
        finished = True
    finally:
        if finished:
            pool.close()
        else:  # an error or Ctrl-C downstream: drop queued and running work at once
            pool.terminate()
        pool.join()


def _apply_chunk(job: tuple[Callable, list]) -> list:
    fn, chunk = job
    return [fn(item) for item in chunk]


def _show_work(bar: tqdm, counter, work_unit: str | None) -> None:
    if work_unit:
        bar.set_postfix_str(f"{counter.value} {work_unit}", refresh=False)
        bar.update(0)


def _init_worker(counter) -> None:
    """Pool worker set-up: leave Ctrl-C to the main process; route report_work to `counter`."""
    global _work_sink
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if counter is not None:
        def add(amount: int) -> None:
            with counter.get_lock():
                counter.value += amount

        _work_sink = add
