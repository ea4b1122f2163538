"""Run metrics: a progress bar with the loss terms and clips/s, TensorBoard scalars, a summary,
and ``losses.jsonl``: one line per optimiser step (step, epoch, loss terms, lr, template), the
run's loss history. On resume it is cut back to the resumed step, so it never holds a step twice.

Only rank 0 writes; other ranks get a logger whose methods do nothing, so the training loop
never branches on rank.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger("kiclip.train")


class RunMetrics:
    def __init__(self, run_dir: str | Path, *, enabled: bool, total_steps: int, initial_step: int = 0):
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.writer = None
        self.bar = None
        self.history = None
        self._last_time = time.perf_counter()
        self._clips_since = 0
        self.clips_per_s = 0.0
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            self.bar = tqdm(total=total_steps, initial=initial_step, desc="train", unit="step",
                            dynamic_ncols=True, mininterval=1.0)
            self.history = _open_history(self.run_dir / "losses.jsonl", keep_through=initial_step)

    def step(self, step: int, clips: int, terms: dict[str, float], lr: float, grad_norm: float | None,
             skipped: int, *, log_now: bool, epoch: int = -1, template: str = "") -> None:
        """Record one optimiser step (``step`` counts from 1); ``clips`` is the global number of
        clips it consumed; ``template`` the prompt template drawn for it."""
        self._clips_since += clips
        if not self.enabled:
            return
        record = {"step": step, "epoch": epoch, **terms, "lr": lr, "template": template}
        self.history.write(json.dumps(record) + "\n")
        self.history.flush()  # a killed run leaves every finished step on disk
        self.bar.update(1)
        if not log_now:
            return
        now = time.perf_counter()
        self.clips_per_s = self._clips_since / max(now - self._last_time, 1e-9)
        self._last_time, self._clips_since = now, 0
        shown = {k: f"{v:.4f}" for k, v in terms.items()}
        self.bar.set_postfix(**shown, clips_s=f"{self.clips_per_s:.1f}", refresh=False)
        for name, value in terms.items():
            self.writer.add_scalar(f"loss/{name}", value, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/clips_per_s", self.clips_per_s, step)
        self.writer.add_scalar("data/skipped_samples", skipped, step)
        if grad_norm is not None:
            self.writer.add_scalar("train/grad_norm", grad_norm, step)

    def scalar(self, name: str, value: float, step: int) -> None:
        if self.enabled:
            self.writer.add_scalar(name, value, step)

    def write_summary(self, summary: dict) -> None:
        if not self.enabled:
            return
        path = self.run_dir / "summary.json"
        path.write_text(json.dumps(summary, indent=2, sort_keys=True))
        log.info("summary written to %s", path)

    def close(self) -> None:
        if self.enabled:
            self.bar.close()
            self.writer.close()
            self.history.close()


def _open_history(path: Path, keep_through: int):
    """``path`` for appending, first cut to the lines with step <= ``keep_through`` (all of them
    dropped on a fresh start); a torn last line from a killed run is dropped too."""
    kept = []
    if path.exists() and keep_through > 0:
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= keep_through:
                    kept.append(line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(kept))
    tmp.replace(path)
    return open(path, "a")
