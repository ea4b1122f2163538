"""The ``--device auto|cpu|cuda`` choice every command makes the same way (train.py's
``run.device``, evaluate.py, predict.py, visualize.py).

Imports torch only when a device is chosen, so a command's ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess

log = logging.getLogger(__name__)
DEVICES = ("auto", "cpu", "cuda")
DEVICE_HELP = ("auto (default): CUDA when torch can use it, else CPU with a warning if the driver "
               "sees a GPU that torch cannot use; cuda: fail (exit 2) instead; cpu: CPU even on a "
               "GPU host")


class DeviceError(RuntimeError):
    """The requested device cannot be used; the message says why and what to do."""


def add_device_argument(parser: argparse.ArgumentParser, default: str | None = "auto") -> None:
    """``--device auto|cpu|cuda`` on ``parser`` (train.py passes default=None: its config fills
    it)."""
    parser.add_argument("--device", choices=DEVICES, default=default, help=DEVICE_HELP)


def nvidia_smi_lists_gpu() -> bool:
    """Whether ``nvidia-smi -L`` (found on PATH) lists at least one GPU: the driver sees one,
    whatever this torch build can do with it."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False
    try:
        done = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and any(line.startswith("GPU ") for line in done.stdout.splitlines())


def _unusable_gpu_reason() -> str:
    import torch

    build = torch.version.cuda
    if build is None:
        what = "this torch is a CPU-only build"
    else:
        what = (f"this torch is built for CUDA {build}, likely newer than the driver supports "
                "(nvidia-smi prints the newest CUDA the driver runs)")
    return (f"nvidia-smi lists a GPU but torch.cuda.is_available() is False: {what}; install a "
            "torch wheel built for the driver's CUDA version, or update the driver")


def choose_device_type(requested: str = "auto") -> str:
    """"cpu" or "cuda" for ``--device`` / ``run.device``.

    auto: CUDA when torch can use it, else CPU, with a warning when the driver sees a GPU that
    torch cannot use (an unnoticed CPU run of a GPU-sized job would crawl). cuda: DeviceError with the
    reason when torch cannot use a GPU. cpu: CPU even on a GPU host.
    """
    import torch

    if requested not in DEVICES:
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    gpu_listed = nvidia_smi_lists_gpu()
    if requested == "cuda":
        raise DeviceError("--device cuda: " + (_unusable_gpu_reason() if gpu_listed else
                          "no CUDA device (torch.cuda.is_available() is False and nvidia-smi "
                          "lists no GPU)"))
    if gpu_listed:
        log.warning("running on the CPU: %s", _unusable_gpu_reason())
    return "cpu"
