"""Process-level settings that depend on the machine rather than on the experiment."""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)


def configure_cpu_threads(loader_threads: int, processes_per_node: int = 1) -> int:
    """Leave CPU cores to the data loader when the model runs on the CPU.

    torch's OpenMP threads spin while waiting; when they outnumber the free cores (the
    loader's decode threads and other ranks share the same cores) each step slows down
    several-fold (figures in docs/benchmarks.md, "Embedded-default demo"). So each process's
    torch gets its share of the cores (cores / processes on the node) minus its loader threads,
    at least one. An explicit OMP_NUM_THREADS always wins. Returns the thread count in use.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    threads = max(1, cores // max(1, processes_per_node) - loader_threads)
    torch.set_num_threads(threads)
    log.info("CPU compute uses %d thread(s) per process (%d cores, %d loader threads, %d "
             "process(es)); set OMP_NUM_THREADS to override", threads, cores, loader_threads,
             processes_per_node)
    return threads
