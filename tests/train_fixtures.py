"""Helpers for the training and evaluation tests: tiny B2N shards, train.py processes, and
train.py's ``main`` or the ``Trainer`` run inside the test process.

Every process runs with one intra-op thread: the tests share 2 cores with each other and with
other work, and oversubscribed torch threads make a 0.3 s step take 10 s.

In-process training runs on the CPU only: DeepSpeed chooses its accelerator once per process,
so a CUDA run after a CPU one (or the reverse) needs a process of its own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import socket
import subprocess
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "launch" / "train.py"
EVALUATE = ROOT / "launch" / "evaluate.py"

# A small, fast training set-up on top of the synthetic preset: 4 frames, no evaluation at the end,
# on the CPU whatever the host has (hence fp32 and gloo): the tests using it compare runs exactly
# and start several ranks on one host. Tests meant for CUDA pass --device themselves.
FAST = ["--b2n", "synthetic", "--num-frames", "4", "--set", "run.eval_at_end=false", "--device", "cpu"]


def build_b2n_shards(out: Path, *, clips_per_class: int, val_per_class: int, shots: int,
                     size: int = 32, frames: int = 16, per_shard: int = 16) -> Path:
    """launch/demo.sh's first three steps: synthetic videos → B2N split 1 → shards.

    Returns the shard root holding train_split1/, base_test/ and novel_test/ (24 base classes).
    """
    from shard_tools import make_shards, make_splits, make_synthetic

    videos, splits, shards = out / "synthetic", out / "splits", out / "shards"
    assert make_synthetic.main(["--out", str(videos), "--seed", "0",
                                "--clips-per-class", str(clips_per_class),
                                "--val-per-class", str(val_per_class), "--size", str(size),
                                "--frames", str(frames), "--workers", "1", "--no-progress"]) in (0, None)
    assert make_splits.main(["--dataset", "synthetic", "--synthetic-dir", str(videos),
                             "--out", str(splits), "--shots", str(shots), "--splits", "1"]) in (0, None)
    for rows, classes, name in (("split1/train.csv", "base_classes.json", "train_split1"),
                                ("base_test.csv", "base_classes.json", "base_test"),
                                ("novel_test.csv", "novel_classes.json", "novel_test")):
        assert make_shards.main(["--list", str(splits / rows), "--video-root", str(videos),
                                 "--classes", str(splits / classes), "--out", str(shards / name),
                                 "--samples-per-shard", str(per_shard), "--workers", "1",
                                 "--no-progress"]) == 0
    return shards


def process_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               TQDM_DISABLE="1", PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_train(args: list[str], *, log: Path, rank: int | None = None, world: int = 1,
                port: int | None = None, script: Path = TRAIN,
                env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    """``python launch/train.py ARGS`` in the background, stdout+stderr to ``log``.

    With ``rank`` set, it is one of ``world`` ranks, given the environment DeepSpeed's launcher
    would set (RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT). ``env_extra`` adds
    variables (e.g. KICLIP_KERNELS).
    """
    env = process_env(**(env_extra or {}))
    if rank is not None:
        env.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    with open(log, "w") as fh:
        return subprocess.Popen([sys.executable, str(script), *args], cwd=ROOT, env=env,
                                stdout=fh, stderr=subprocess.STDOUT)


def wait_ok(proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{proc.args} timed out after {timeout} s:\n{tail(log)}") from None
    assert rc == 0, f"{proc.args} exited {rc}:\n{tail(log)}"


def run_train(args: list[str], *, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python launch/train.py ARGS`` to completion, output captured."""
    return subprocess.run([sys.executable, str(TRAIN), *args], check=False, cwd=ROOT, env=process_env(),
                          capture_output=True, text=True, timeout=timeout)


def tail(path: Path, chars: int = 4000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


def read_losses(run_dir: Path) -> list[dict]:
    """RUN/losses.jsonl: one record per optimiser step."""
    path = Path(run_dir) / "losses.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@cache
def train_script():
    """launch/train.py as a module (launch/ is not a package)."""
    spec = importlib.util.spec_from_file_location("kiclip_launch_train", TRAIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def in_process_environment(**extra: str):
    """The environment a train.py process of these tests gets (one thread, plus ``extra``),
    restored after: the run sets RANK, MASTER_PORT, DS_ACCELERATOR... that later subprocesses
    must not inherit. torch.distributed stays initialised (world size 1): DeepSpeed cannot undo it."""
    import torch

    saved, threads = dict(os.environ), torch.get_num_threads()
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        torch.set_num_threads(threads)


def train_main(args: list[str]) -> tuple[int, str]:
    """``launch/train.py ARGS`` run in this process (pass --device cpu): its exit code (an
    argparse error's too) and what it printed to stderr (the log goes to pytest's caplog)."""
    err = io.StringIO()
    with in_process_environment(), contextlib.redirect_stderr(err):
        try:
            code = train_script().main(args)
        except SystemExit as exit:
            code = exit.code
    return code, err.getvalue()


def train_in_process(args: list[str]) -> dict:
    """The summary of a ``Trainer`` run configured as ``train.py ARGS`` would be, in this
    process (pass --device cpu); start-up errors raise (ConfigError, DeviceError)."""
    from kiclip.train.startup import prepare_run

    with in_process_environment():
        cfg, protocol, device_type = prepare_run(train_script().build_parser().parse_args(args))
        from kiclip.train.trainer import Trainer

        return Trainer(cfg, protocol, device_type).train()


def train_to_end(args: list[str], *, log: Path, env_extra: dict[str, str] | None = None) -> None:
    """``train.py ARGS`` run to a successful end, kiclip's log written to ``log``: in this
    process with ``--device cpu``, else in a process of its own (DeepSpeed's accelerator is
    chosen once per process)."""
    if "--device" not in args or args[args.index("--device") + 1] != "cpu":
        wait_ok(start_train(args, log=log, env_extra=env_extra), log)
        return
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("kiclip")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    err = io.StringIO()
    try:
        with in_process_environment(**(env_extra or {})), contextlib.redirect_stderr(err):
            code = train_script().main(args)
    finally:
        logger.setLevel(level)
        logger.removeHandler(handler)
        handler.close()
    assert code == 0, f"train.py {' '.join(args)} exited {code}:\n{err.getvalue()[-3000:]}\n{tail(log)}"
