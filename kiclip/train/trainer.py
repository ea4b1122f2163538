"""The training run: set-up, the loop over epochs and steps, the NaN policy, per-epoch
checkpoints, resume, the end-of-run evaluation and the summary.

``Trainer(cfg, protocol, device_type).train()`` is what ``launch/train.py`` runs once the
start-up checks (``kiclip.train.startup.prepare_run``) passed. DeepSpeed is imported here only
inside methods: it picks its accelerator when first imported, which ``prepare_run`` sets first.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from kiclip.config import TrainConfig
from kiclip.layout import ProtocolData, prompt_record
from kiclip.train import checkpoint as ckpt
from kiclip.train.metrics import RunMetrics

log = logging.getLogger("kiclip.train")


class Trainer:
    """One training run on ``device_type`` ("cpu" or "cuda", from ``choose_device_type``).

    Construction joins the process group, checks the loaders can decode the shards, prepares
    the run directory (config.json, classes.json; earlier checkpoints removed under
    --no-resume) and builds the models, the training loader and the DeepSpeed engine. The
    checkpointed state is the engine's plus ``self.stateful`` (see kiclip/train/checkpoint.py).
    """

    def __init__(self, cfg: TrainConfig, protocol: ProtocolData, device_type: str):
        from kiclip.train.distributed import init_distributed

        self.cfg, self.protocol = cfg, protocol
        self.rank, self.world, self.device = init_distributed(device_type)
        self._check_decoders()
        self._share_cpu_cores()
        self.run_dir = Path(cfg.run.output)
        self.bf16 = cfg.run.precision == "bf16" or (cfg.run.precision == "auto"
                                                    and self.device.type == "cuda")
        # bf16: DeepSpeed casts the module's parameters to bf16 and keeps fp32 master weights in
        # the optimiser; inputs and the frozen teacher follow the module's dtype, while class-
        # embedding averages, logits and losses stay fp32 (docs/model.md §9).
        self.dtype = torch.bfloat16 if self.bf16 else torch.float32
        self._prepare_run_dir()
        module = self._build_models()
        self._build_loader()
        self._build_engine(module)
        self.progress = ckpt.TrainProgress()
        self.stateful: dict[str, ckpt.Stateful] = {
            "rng": ckpt.RngState(), "templates": self.templates, "progress": self.progress}
        # The total loss of this process's first and latest step (None before any step).
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self.metrics: RunMetrics | None = None

    def _check_decoders(self) -> None:
        """A codec the loader cannot read is a dataset problem: UnsupportedCodecError (exit 2)
        before the run directory exists."""
        from kiclip.data import check_loader_codecs

        cfg = self.cfg
        evaluated = list(self.protocol.evals.values()) if cfg.run.eval_at_end else []
        for shard_set in [self.protocol.train, *evaluated]:
            check_loader_codecs(shard_set, cfg.data.backend, self.device.type)

    def _share_cpu_cores(self) -> None:
        """On the CPU, leave the loader's threads and the node's other ranks their cores."""
        from kiclip.runtime import configure_cpu_threads

        if self.device.type == "cpu":
            configure_cpu_threads(self.cfg.data.num_workers,
                                  int(os.environ.get("LOCAL_WORLD_SIZE", self.world)))

    def _prepare_run_dir(self) -> None:
        """Rank 0 writes config.json and classes.json; every rank waits for it."""
        cfg, run_dir = self.cfg, self.run_dir
        if self.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            if not cfg.run.resume and ckpt.discard_checkpoints(run_dir):
                # Starting over: an old, later epoch must never be picked up by a future resume.
                log.warning("--no-resume: removed the earlier checkpoints in %s", run_dir)
            (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
            spaces = {"train": self.protocol.train, **self.protocol.evals}
            (run_dir / "classes.json").write_text(json.dumps(prompt_record(spaces), indent=1,
                                                             ensure_ascii=False))
        if torch.distributed.is_initialized():
            torch.distributed.barrier()  # no rank looks for checkpoints before rank 0 cleared them

    def _build_models(self) -> torch.nn.Module:
        """The trained module; sets the teacher, tokenizer, prompts and template sampler."""
        from kiclip.text import TemplateSampler
        from kiclip.train.assemble import build_models
        from kiclip.train.step import PromptTokens, TeacherTargets

        cfg, protocol, device = self.cfg, self.protocol, self.device
        # Identical initial weights on every rank; the data order has its own seeds.
        torch.manual_seed(cfg.run.seed)
        module, teacher, tokenizer = build_models(cfg)
        if teacher is not None:
            teacher.to(device=device, dtype=self.dtype)
        self.tokenizer = tokenizer
        # The class file's texts (rephrased "Name: description" when it had them), not the bare names.
        self.prompts = PromptTokens(tokenizer, protocol.train.class_texts, protocol.train.rephrased, device)
        self.targets = TeacherTargets(teacher, self.prompts) if teacher is not None else None
        self.templates = TemplateSampler(cfg.run.seed)
        return module

    def _build_loader(self) -> None:
        from kiclip.data import build_loader

        cfg, protocol, rank, world, device = self.cfg, self.protocol, self.rank, self.world, self.device
        loader = build_loader(protocol.train, cfg.data.loader_spec("train"), seed=cfg.run.seed,
                              rank=rank, world_size=world, device=device.type)
        self.loader = loader
        self.steps_per_epoch = len(loader)
        self.total_steps = cfg.optim.epochs * self.steps_per_epoch

    def _build_engine(self, module: torch.nn.Module) -> None:
        """The DeepSpeed engine: module, AdamW (docs/model.md §5) and the lr schedule."""
        import deepspeed
        from torch.optim.lr_scheduler import LambdaLR

        from kiclip.train.distributed import deepspeed_config
        from kiclip.train.schedule import lambda_for
        from kiclip.train.step import parameter_groups

        cfg, optim = self.cfg, self.cfg.optim
        schedule = lambda_for(optim.lr, total_steps=self.total_steps,
                              warmup_steps=round(optim.warmup_epochs * self.steps_per_epoch),
                              warmup_start_lr=optim.warmup_start_lr, min_lr=optim.min_lr)
        if cfg.run.deepspeed_config:
            ds_config = json.loads(Path(cfg.run.deepspeed_config).read_text())
        else:
            ds_config = deepspeed_config(
                batch_per_rank=cfg.data.batch_size, world_size=self.world,
                zero_stage=cfg.run.zero_stage, bf16=self.bf16, grad_clip=optim.grad_clip,
                lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)
        self.engine, _, _, _ = deepspeed.initialize(
            model=module, model_parameters=parameter_groups(module, optim.weight_decay),
            config=ds_config, lr_scheduler=lambda opt: LambdaLR(opt, schedule))

    def resume(self) -> int:
        """The first epoch to train: after the last complete checkpoint when resuming (its
        state restored), else 0."""
        last = ckpt.last_complete_epoch(self.run_dir) if self.cfg.run.resume else None
        if last is None:
            return 0
        ckpt.load_checkpoint(self.engine, self.run_dir, last, self.stateful)
        log.info("resumed from %s after epoch %d (step %d)", self.run_dir, last, self.progress.step)
        return last + 1

    def train(self) -> dict:
        """Train the remaining epochs (or up to run.max_steps), checkpointing each completed
        epoch; then the end-of-run evaluation (not after a max_steps stop) and the summary,
        which it returns (rank 0 writes it to summary.json). FloatingPointError on a
        non-finite loss (see ``train_step``)."""
        start_epoch = self.resume()
        self.metrics = RunMetrics(self.run_dir, enabled=self.rank == 0, total_steps=self.total_steps,
                                  initial_step=self.progress.step)
        started = time.perf_counter()
        stopped = False
        for epoch in range(start_epoch, self.cfg.optim.epochs):
            self.progress.epoch = epoch
            stopped = self.train_epoch(epoch)
            if stopped:
                break
            self.save_epoch(epoch)
            log.info("epoch %d done: step %d, loss %.4f, %d samples skipped so far",
                     epoch, self.progress.step, self.last_loss, self.loader.skipped)
        summary = self.summary(wall_s=time.perf_counter() - started)
        if self.cfg.run.eval_at_end and self.rank == 0 and not stopped:
            summary.update(self.evaluate_at_end())
        self.metrics.write_summary(summary)
        self.metrics.close()
        if self.rank == 0:
            log.info("training finished: %s", json.dumps(summary, sort_keys=True))
        return summary

    def train_epoch(self, epoch: int) -> bool:
        """One pass over the loader; True when run.max_steps stopped it early."""
        self.loader.set_epoch(epoch)
        self.engine.train()
        for batch in self.loader:
            self.train_step(batch)
            if self.cfg.run.max_steps and self.progress.step >= self.cfg.run.max_steps:
                return True
        return False

    def train_step(self, batch: dict) -> dict[str, float]:
        """One optimiser step on ``batch`` ("video" (B,3,T,H,W), "label" (B,), "valid" (B,));
        returns its loss terms, and records them in the run's metrics once ``train`` opened
        them. A non-finite term on any rank raises FloatingPointError on every rank, before
        the update."""
        device, dtype = self.device, self.dtype
        video = batch["video"].to(device=device, dtype=dtype, non_blocking=True)
        labels = batch["label"].to(device)
        valid = batch["valid"].to(device)
        drawn = self.templates.draw()  # same draw for student and teacher
        tokens = self.prompts(drawn)
        if not bool(valid.any()):
            # A padding-only batch still steps, so every rank runs the same collectives.
            video, labels, weight = video[:1], labels[:1], 0.0
        else:
            video, labels, weight = video[valid], labels[valid], 1.0
        teacher_frames = teacher_classes = None
        if self.targets is not None:
            teacher_frames, teacher_classes = self.targets(video, drawn)
        terms = self.engine(video, labels, tokens, len(drawn), teacher_frames, teacher_classes)
        # One device-to-host copy per step for all the terms (the NaN check needs them).
        values = dict(zip(terms._fields, torch.stack([t.detach().float() for t in terms]).tolist()))
        self._check_finite(values)
        self.engine.backward(terms.total * weight)
        self.engine.step()
        self.progress.step += 1
        self.last_loss = values["total"]
        if self.first_loss is None:
            self.first_loss = self.last_loss
        if self.metrics is not None:
            self._record_step(values, int(valid.sum()), drawn[0])
        return values

    def _check_finite(self, values: dict[str, float]) -> None:
        if not all_ranks_finite(values.values(), self.world, self.device):
            raise FloatingPointError(
                f"non-finite loss at step {self.progress.step + 1} (epoch {self.progress.epoch}); "
                f"rank {self.rank}'s terms: " + ", ".join(f"{k}={v}" for k, v in values.items())
                + "; lower --lr, check the inputs, or use --precision fp32")

    def _record_step(self, values: dict[str, float], valid_clips: int, template: str) -> None:
        step = self.progress.step
        grad_norm = self.engine.get_global_grad_norm()
        self.metrics.step(step, valid_clips * self.world, values, self.engine.get_lr()[0],
                          None if grad_norm is None else float(grad_norm), self.loader.skipped,
                          log_now=step % self.cfg.run.log_every == 0 or step == self.total_steps,
                          epoch=self.progress.epoch, template=template)

    def save_epoch(self, epoch: int) -> None:
        """Checkpoint the completed ``epoch`` (every rank takes part)."""
        ckpt.save_checkpoint(self.engine, self.run_dir, epoch, self.stateful,
                             config=self.cfg.to_dict(), step=self.progress.step)

    def summary(self, *, wall_s: float) -> dict:
        """The run's figures for summary.json, without the evaluation's."""
        return {"steps": self.progress.step, "epochs": self.cfg.optim.epochs, "world_size": self.world,
                "final_loss": self.last_loss, "first_loss": self.first_loss,
                "skipped_samples": int(self.loader.skipped), "clips_per_s": self.metrics.clips_per_s,
                "wall_s": wall_s, "device": str(self.device),
                "precision": "bf16" if self.bf16 else "fp32"}

    def evaluate_at_end(self) -> dict[str, float]:
        """Top-1 of the trained student on each evaluation label space ("base_top1", ...), and
        "hm" when both base and novel were evaluated. Rank 0 only."""
        from kiclip.evaluation import evaluate_label_space, harmonic_mean

        cfg, step = self.cfg, self.progress.step
        student = self.engine.module.student
        results = {}
        for space, shard_set in self.protocol.evals.items():
            result = evaluate_label_space(student, self.tokenizer, shard_set, cfg.data, device=self.device,
                                          dtype=self.dtype, seed=cfg.run.seed)
            results[f"{space}_top1"] = result["top1"]
            self.metrics.scalar(f"val/{space}_top1", result["top1"], step)
        if "base_top1" in results and "novel_top1" in results:
            results["hm"] = harmonic_mean(results["base_top1"], results["novel_top1"])
        return results


def all_ranks_finite(values, world: int, device: torch.device) -> bool:
    """Whether every rank's loss terms are finite. Agreed over all ranks, so they all stop at the
    same step instead of the healthy ones waiting forever in backward's all-reduce."""
    ok = all(math.isfinite(v) for v in values)
    if world > 1:
        flag = torch.tensor([1.0 if ok else 0.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        ok = bool(flag.item() > 0)
    return ok
