#!/usr/bin/env python
"""Train KICLIP with DeepSpeed.

Examples:
  deepspeed launch/train.py --b2n k400 --data shards/k400 --pretrained /path/ViT-B-16.pt
  deepspeed --num_gpus 8 launch/train.py --b2n ucf101 --split 2 --data shards/ucf101 --pretrained ...
  deepspeed launch/train.py --cross-dataset --data shards/k400_full --pretrained ...
  python launch/train.py --b2n synthetic --data runs/demo/shards          # one process, CPU ok

The run directory (--output) receives config.json, classes.json (the class texts and templates
every label space's prompts were built from), per-epoch checkpoints (DeepSpeed state and
consolidated weights/epoch_NNN.pt), TensorBoard logs, losses.jsonl (every step's loss terms)
and summary.json. Rerunning with the same --output resumes from the last complete epoch
(--no-resume starts over).

Every shard folder's manifest.json must name the dataset of --b2n (make_splits records it,
make_shards carries it); --b2n custom takes any, --allow-dataset-mismatch accepts another.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # `python launch/train.py` from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kiclip.config import (  # noqa: E402
    ZERO3_REFUSAL,
    ConfigError,
    TrainConfig,
    add_config_arguments,
    config_from_args,
    preset_table,
)
from kiclip.layout import ProtocolData, check_datasets, prompt_record, resolve_protocol  # noqa: E402
from kiclip.remote import RemoteDataError, localize_protocol  # noqa: E402

log = logging.getLogger("kiclip.train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2] + "\npresets (flags, --config and --set override any value):\n"
        + preset_table(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--deepspeed_config", "--deepspeed-config", dest="deepspeed_config",
                        help="your own DeepSpeed JSON (default: generated from the config: ZeRO-2, "
                        "bf16 on GPU, AdamW, grad clip 1.0)")
    parser.add_argument("--cache-dir", help="where a --data URL (http(s)://, s3://, gs://, pipe:) is "
                        "staged and verified before training (default ~/.cache/kiclip/shards; "
                        "see docs/data.md, 'Remote shards')")
    parser.add_argument("--stream", action="store_true",
                        help="with a --data URL, stream the tars with the torch loader instead of "
                        "staging them: only the manifests and .idx files are fetched; every "
                        "DataLoader worker of every rank reads every tar each epoch (see "
                        "docs/data.md, 'Remote shards')")
    # Set by DeepSpeed's launcher; LOCAL_RANK in the environment says the same.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=-1, help=argparse.SUPPRESS)
    return parser


def check_user_deepspeed_config(path: Path) -> None:
    """ConfigError naming ``path`` when it is missing, not a JSON object, or asks for ZeRO-3."""
    if not path.is_file():
        raise ConfigError(f"--deepspeed_config {path} does not exist")
    try:
        ds_config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"--deepspeed_config {path} is not valid JSON: {err}") from None
    if not isinstance(ds_config, dict):
        raise ConfigError(f"--deepspeed_config {path} must hold a JSON object")
    zero = ds_config.get("zero_optimization") or {}
    stage = zero.get("stage", 0) if isinstance(zero, dict) else 0
    if stage == 3:
        raise ConfigError(f"--deepspeed_config {path}: zero_optimization.stage is 3; {ZERO3_REFUSAL}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imports torch: not for --help.
    from kiclip.train.distributed import DeviceError, choose_device_type, select_deepspeed_accelerator

    try:
        cfg = config_from_args(args)
        if args.deepspeed_config:
            check_user_deepspeed_config(Path(args.deepspeed_config))
            cfg.run.deepspeed_config = args.deepspeed_config
        # Everything that can be wrong with the dataset is found here, before any heavy work.
        if args.stream and cfg.data.backend == "dali":
            raise ConfigError("--stream reads tars with the torch loader (DALI reads local files "
                              "only): use --loader torch or auto, or drop --stream to stage them")
        data = localize_protocol(cfg.data.root, cfg.mode, cfg.data.split, cache_dir=args.cache_dir,
                                 stream=args.stream)
        protocol = resolve_protocol(data, cfg.mode, cfg.data.split)
        if cfg.mode == "b2n":
            check_datasets([protocol.train, *protocol.evals.values()], cfg.dataset,
                           allow_mismatch=cfg.data.allow_mismatch,
                           escape="--set data.allow_mismatch=true (or --allow-dataset-mismatch)")
        device_type = choose_device_type(cfg.run.device)
        select_deepspeed_accelerator(device_type)
    except (ConfigError, DeviceError) as err:
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    from kiclip.data.codecs import UnsupportedCodecError

    try:
        summary = train(cfg, protocol, device_type)
    except DeviceError as err:  # e.g. more ranks on this host than GPUs
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:  # every rank raises it at the same step (see _all_finite)
        print(f"train.py: error: {err}", file=sys.stderr)
        return 1
    except UnsupportedCodecError as err:  # found before the first batch, on every rank alike
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    except RemoteDataError as err:  # a streamed tar that cannot be fetched or is corrupt
        print(f"train.py: error: {err}", file=sys.stderr)
        return 2
    return 0 if summary is not None else 1


def train(cfg: TrainConfig, protocol: ProtocolData, device_type: str) -> dict | None:
    """Train on ``device_type`` ("cpu" or "cuda", from ``choose_device_type``); the summary,
    or None when nothing was trained."""
    import deepspeed
    import torch
    from torch.optim.lr_scheduler import LambdaLR

    from kiclip.data import build_loader, check_loader_codecs
    from kiclip.evaluation import evaluate_label_space, harmonic_mean
    from kiclip.runtime import configure_cpu_threads
    from kiclip.text import TemplateSampler
    from kiclip.train import checkpoint as ckpt
    from kiclip.train.assemble import build_models
    from kiclip.train.distributed import deepspeed_config, init_distributed
    from kiclip.train.metrics import RunMetrics
    from kiclip.train.schedule import lambda_for
    from kiclip.train.step import PromptTokens, TeacherTargets, parameter_groups

    rank, world, device = init_distributed(device_type)
    # A codec the loader cannot read is a dataset problem: exit 2 before the run directory exists.
    evaluated = list(protocol.evals.values()) if cfg.run.eval_at_end else []
    for shard_set in [protocol.train, *evaluated]:
        check_loader_codecs(shard_set, cfg.data.backend, device.type)
    if device.type == "cpu":
        configure_cpu_threads(cfg.data.num_workers,
                              int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    run_dir = Path(cfg.run.output)
    bf16 = cfg.run.precision == "bf16" or (cfg.run.precision == "auto" and device.type == "cuda")
    # bf16: DeepSpeed casts the module's parameters to bf16 and keeps fp32 master weights in
    # the optimiser; inputs and the frozen teacher follow the module's dtype, while class-
    # embedding averages, logits and losses stay fp32 (docs/model.md §9).
    dtype = torch.bfloat16 if bf16 else torch.float32
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not cfg.run.resume and ckpt.discard_checkpoints(run_dir):
            # Starting over: an old, later epoch must never be picked up by a future resume.
            log.warning("--no-resume: removed the earlier checkpoints in %s", run_dir)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        spaces = {"train": protocol.train, **protocol.evals}
        (run_dir / "classes.json").write_text(json.dumps(prompt_record(spaces), indent=1, ensure_ascii=False))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank looks for checkpoints before rank 0 cleared them

    # Identical initial weights on every rank; the data order has its own seeds.
    torch.manual_seed(cfg.run.seed)
    module, teacher, tokenizer = build_models(cfg)
    if teacher is not None:
        teacher.to(device=device, dtype=dtype)
    # The class file's texts (rephrased "Name: description" when it had them), not the bare names.
    prompts = PromptTokens(tokenizer, protocol.train.class_texts, protocol.train.rephrased, device)
    targets = TeacherTargets(teacher, prompts) if teacher is not None else None
    templates = TemplateSampler(cfg.run.seed)

    loader = build_loader(protocol.train, cfg.data.loader_spec("train"), seed=cfg.run.seed,
                          rank=rank, world_size=world, device=device.type)
    steps_per_epoch = len(loader)
    total_steps = cfg.optim.epochs * steps_per_epoch
    schedule = lambda_for(cfg.optim.lr, total_steps=total_steps,
                          warmup_steps=round(cfg.optim.warmup_epochs * steps_per_epoch),
                          warmup_start_lr=cfg.optim.warmup_start_lr, min_lr=cfg.optim.min_lr)
    if cfg.run.deepspeed_config:
        ds_config = json.loads(Path(cfg.run.deepspeed_config).read_text())
    else:
        ds_config = deepspeed_config(
            batch_per_rank=cfg.data.batch_size, world_size=world, zero_stage=cfg.run.zero_stage,
            bf16=bf16, grad_clip=cfg.optim.grad_clip, lr=cfg.optim.lr, betas=cfg.optim.betas,
            eps=cfg.optim.eps, weight_decay=cfg.optim.weight_decay)
    engine, _, _, _ = deepspeed.initialize(
        model=module, model_parameters=parameter_groups(module, cfg.optim.weight_decay),
        config=ds_config, lr_scheduler=lambda opt: LambdaLR(opt, schedule))

    start_epoch, step = 0, 0
    last = ckpt.last_complete_epoch(run_dir) if cfg.run.resume else None
    if last is not None:
        _, client = engine.load_checkpoint(str(ckpt.ds_dir(run_dir)), tag=ckpt.epoch_tag(last))
        ckpt.set_rng_state(client["rng"])
        templates.load_state_dict(client["templates"])
        start_epoch, step = last + 1, int(client["step"])
        log.info("resumed from %s after epoch %d (step %d)", run_dir, last, step)

    metrics = RunMetrics(run_dir, enabled=rank == 0, total_steps=total_steps, initial_step=step)
    losses_seen: list[float] = []
    started = time.perf_counter()
    stop = False
    for epoch in range(start_epoch, cfg.optim.epochs):
        loader.set_epoch(epoch)
        engine.train()
        for batch in loader:
            video = batch["video"].to(device=device, dtype=dtype, non_blocking=True)
            labels = batch["label"].to(device)
            valid = batch["valid"].to(device)
            drawn = templates.draw()  # same draw for student and teacher
            tokens = prompts(drawn)
            if not bool(valid.any()):
                # A padding-only batch still steps, so every rank runs the same collectives.
                video, labels, weight = video[:1], labels[:1], 0.0
            else:
                video, labels, weight = video[valid], labels[valid], 1.0
            teacher_frames = teacher_classes = None
            if targets is not None:
                teacher_frames, teacher_classes = targets(video, drawn)
            terms = engine(video, labels, tokens, len(drawn), teacher_frames, teacher_classes)
            # One device-to-host copy per step for all the terms (the NaN check needs them).
            values = dict(zip(terms._fields, torch.stack([t.detach().float() for t in terms]).tolist()))
            if not _all_finite(values.values(), world, device):
                raise FloatingPointError(
                    f"non-finite loss at step {step + 1} (epoch {epoch}); rank {rank}'s terms: "
                    + ", ".join(f"{k}={v}" for k, v in values.items())
                    + "; lower --lr, check the inputs, or use --precision fp32")
            engine.backward(terms.total * weight)
            engine.step()
            step += 1
            losses_seen.append(values["total"])
            grad_norm = engine.get_global_grad_norm()
            metrics.step(step, int(valid.sum()) * world, values, engine.get_lr()[0],
                         None if grad_norm is None else float(grad_norm), loader.skipped,
                         log_now=step % cfg.run.log_every == 0 or step == total_steps,
                         epoch=epoch, template=drawn[0])
            if cfg.run.max_steps and step >= cfg.run.max_steps:
                stop = True
                break
        if stop:
            break
        _save_epoch(engine, run_dir, epoch, step, templates, cfg, rank)
        log.info("epoch %d done: step %d, loss %.4f, %d samples skipped so far",
                 epoch, step, values["total"], loader.skipped)

    summary = {"steps": step, "epochs": cfg.optim.epochs, "world_size": world,
               "final_loss": losses_seen[-1] if losses_seen else None,
               "first_loss": losses_seen[0] if losses_seen else None,
               "skipped_samples": int(loader.skipped), "clips_per_s": metrics.clips_per_s,
               "wall_s": time.perf_counter() - started, "device": str(device),
               "precision": "bf16" if bf16 else "fp32"}
    if cfg.run.eval_at_end and rank == 0 and not stop:
        student = engine.module.student
        for space, shard_set in protocol.evals.items():
            result = evaluate_label_space(student, tokenizer, shard_set, cfg.data, device=device,
                                          dtype=dtype, seed=cfg.run.seed)
            summary[f"{space}_top1"] = result["top1"]
            metrics.scalar(f"val/{space}_top1", result["top1"], step)
        if "base_top1" in summary and "novel_top1" in summary:
            summary["hm"] = harmonic_mean(summary["base_top1"], summary["novel_top1"])
    metrics.write_summary(summary)
    metrics.close()
    if rank == 0:
        log.info("training finished: %s", json.dumps(summary, sort_keys=True))
    return summary


def _all_finite(values, world: int, device) -> bool:
    """Whether every rank's loss terms are finite. Agreed over all ranks, so they all stop at the
    same step instead of the healthy ones waiting forever in backward's all-reduce."""
    import math

    import torch

    ok = all(math.isfinite(v) for v in values)
    if world > 1:
        flag = torch.tensor([1.0 if ok else 0.0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
        ok = bool(flag.item() > 0)
    return ok


def _save_epoch(engine, run_dir: Path, epoch: int, step: int, templates, cfg: TrainConfig, rank: int) -> None:
    """DeepSpeed state (all ranks), consolidated weights (rank 0), then the COMPLETE marker."""
    import torch

    from kiclip.train import checkpoint as ckpt

    client = {"rng": ckpt.rng_state(), "templates": templates.state_dict(), "step": step, "epoch": epoch}
    engine.save_checkpoint(str(ckpt.ds_dir(run_dir)), tag=ckpt.epoch_tag(epoch), client_state=client)
    # All ranks: a collective under bf16. (ZeRO 3, whose parameters are partitioned, is refused
    # at start-up.)
    state = ckpt.fp32_module_state(engine)
    if rank == 0:
        ckpt.atomic_torch_save({"model": state, "config": cfg.to_dict(), "epoch": epoch, "step": step},
                               ckpt.weights_path(run_dir, epoch))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    if rank == 0:
        ckpt.mark_complete(run_dir, epoch)


if __name__ == "__main__":
    sys.exit(main())
