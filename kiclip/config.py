"""Training configuration: dataclasses, per-dataset presets, command-line overrides.

A run's configuration is built in three layers, later ones winning: the dataclass defaults
(docs/training.md), the dataset preset (`--b2n k400` ...), then explicit command-line flags.
An invalid value fails at start-up with a message naming the field. Each preset also names the
dataset its shards must come from (``PRESET_DATASETS``); ``custom`` accepts any.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kiclip.device import DEVICE_HELP, DEVICES

if TYPE_CHECKING:  # kiclip.data imports torch, which --help does not need
    from kiclip.data import ClipSpec, LoaderSpec

# The open_clip architecture a run builds unless told otherwise (kiclip.model.factory takes it
# from here: this module stays free of torch so that --help is quick).
DEFAULT_MODEL = "ViT-B-16-quickgelu"


class ConfigError(ValueError):
    """A configuration or dataset problem found before any heavy work starts."""


@dataclass
class DataConfig:
    root: str = ""                 # shard root: <root>/train_split{k}, base_test, novel_test
    split: int = 1                 # B2N split 1..3
    num_frames: int = 8            # T
    stride: int = 16               # frame stride inside a clip window
    image_size: int = 224
    batch_size: int = 8            # per rank
    eval_batch_size: int = 8       # per rank, in clips (views count separately)
    num_views: int = 3             # temporal views at test time
    backend: str = "auto"          # auto | dali | torch
    num_workers: int = 2           # DataLoader workers / DALI threads
    flip: bool = True              # train-time random horizontal flip (False: left/right labels)
    shuffle: bool = True           # train order shuffled per epoch; False keeps the stored order
    keyframe_windows: bool = True  # clip windows start on key frames (docs/data_plane.md)
    allow_mismatch: bool = False   # accept shards whose manifest names another dataset than --b2n

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> DataConfig:
        """The section as a checkpoint or config.json saved it (also before ``data`` was
        renamed ``root``). A saved ``keyframe_windows`` is kept; a config saved before the
        option existed was trained with uniform windows, so it gets False, not the default."""
        saved = dict(saved)
        if "data" in saved:
            saved["root"] = saved.pop("data")
        saved.setdefault("keyframe_windows", False)
        return cls(**saved)

    def clip_spec(self) -> ClipSpec:
        """What one clip is: T frames at the stride, the crop size, test views, flip, windows."""
        from kiclip.data import ClipSpec

        return ClipSpec(num_frames=self.num_frames, stride=self.stride, image_size=self.image_size,
                        num_views=self.num_views, flip=self.flip, keyframe_windows=self.keyframe_windows)

    def loader_spec(self, mode: str) -> LoaderSpec:
        """How ``kiclip.data.build_loader`` reads in ``mode`` ("train": ``batch_size`` clips per
        rank, shuffled unless ``shuffle`` is False; "test": ``eval_batch_size`` videos)."""
        from kiclip.data import LoaderSpec

        batch_size = self.batch_size if mode == "train" else self.eval_batch_size
        return LoaderSpec(mode=mode, clip=self.clip_spec(), batch_size=batch_size,
                          backend=self.backend, num_workers=self.num_workers, shuffle=self.shuffle)


@dataclass
class ModelConfig:
    model_name: str = DEFAULT_MODEL
    pretrained: str = ""           # local file or open_clip tag; "" = random init
    temporal: bool = True
    injection: bool = True
    mix: float = 0.5               # student-stream weight: h = mix*h + (1-mix)*f; 1.0 injects nothing
    mask_boundary: bool = False    # reference: zero (unmasked) neighbours at clip ends
    checkpointing: bool = False    # activation checkpointing (keeps KI)


@dataclass
class LossConfig:
    distill: bool = True
    distill_weight: float = 2.0    # λ
    projector_alpha: float = 0.1   # α


@dataclass
class OptimConfig:
    epochs: int = 12
    lr: float = 3.33e-6
    min_lr: float = 3.33e-8
    warmup_epochs: float = 2.0
    warmup_start_lr: float = 3.33e-8
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0


@dataclass
class RunConfig:
    output: str = "runs/kiclip"
    seed: int = 0
    zero_stage: int = 2
    device: str = "auto"           # auto (CUDA when torch can use it, else CPU) | cpu | cuda
    precision: str = "auto"        # auto (bf16 on GPU, fp32 on CPU) | bf16 | fp32
    deepspeed_config: str = ""     # a user's own DeepSpeed JSON; generated when empty
    resume: bool = True            # continue from the output dir's last complete checkpoint
    log_every: int = 10
    eval_at_end: bool = True
    max_steps: int = 0             # stop after this many optimiser steps (0 = all epochs)


@dataclass
class TrainConfig:
    mode: str = "b2n"              # b2n | cross
    dataset: str = "synthetic"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        checks = [
            (self.mode in ("b2n", "cross"), "mode", "must be b2n or cross"),
            (self.data.num_frames >= 1, "data.num_frames", "must be >= 1"),
            (self.data.stride >= 1, "data.stride", "must be >= 1"),
            (self.data.image_size >= 8, "data.image_size", "must be >= 8"),
            (self.data.batch_size >= 1, "data.batch_size", "must be >= 1"),
            (self.data.num_views >= 1, "data.num_views", "must be >= 1"),
            (self.data.backend in ("auto", "dali", "torch"), "data.backend", "must be auto, dali or torch"),
            (0.0 <= self.model.mix <= 1.0, "model.mix", "must be in [0, 1]"),
            (self.optim.epochs >= 1, "optim.epochs", "must be >= 1"),
            (math.isfinite(self.optim.lr) and self.optim.lr > 0, "optim.lr", "must be finite and > 0"),
            (math.isfinite(self.optim.min_lr) and self.optim.min_lr >= 0, "optim.min_lr",
             "must be finite and >= 0"),
            (math.isfinite(self.optim.warmup_start_lr) and self.optim.warmup_start_lr >= 0,
             "optim.warmup_start_lr", "must be finite and >= 0"),
            (self.optim.warmup_epochs >= 0, "optim.warmup_epochs", "must be >= 0"),
            (self.loss.distill_weight >= 0, "loss.distill_weight", "must be >= 0"),
            (self.run.zero_stage in (0, 1, 2), "run.zero_stage",
             "must be 0, 1 or 2" + (f"; {ZERO3_REFUSAL}" if self.run.zero_stage == 3 else "")),
            (self.run.device in DEVICES, "run.device", "must be auto, cpu or cuda"),
            (self.run.precision in ("auto", "bf16", "fp32"), "run.precision", "must be auto, bf16 or fp32"),
        ]
        for ok, name, why in checks:
            if not ok:
                raise ConfigError(f"config field {name} {why} (got {_get(self, name)!r})")


# ZeRO-3 partitions every parameter and gathers it only around its module's forward, but the
# student reads parameters directly (attention projections, class/positional embeddings, ln_1
# weights for the fused kernel, the head's proj), so they would stay empty shards; and the
# rank-0-only evaluation would wait forever for the other ranks to join each gather.
ZERO3_REFUSAL = ("ZeRO stage 3 is not supported: the model reads parameters outside their "
                 "modules' forward calls, where stage 3 never gathers them; use stage 2 "
                 "(--zero-stage 2), which shards gradients and optimiser state")


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _recipe(*, model: str, frames: int, stride: int, size: int, epochs: int, batch: int,
            lr: float, min_lr: float, warmup_epochs: float, warmup_start_lr: float,
            **extra: Any) -> dict[str, Any]:
    """One training recipe as dotted config fields; ``extra`` adds fields by dotted name."""
    return {"model.model_name": model, "data.num_frames": frames, "data.stride": stride,
            "data.image_size": size, "optim.epochs": epochs, "data.batch_size": batch,
            "optim.lr": lr, "optim.min_lr": min_lr, "optim.warmup_epochs": warmup_epochs,
            "optim.warmup_start_lr": warmup_start_lr, **extra}


# Per-dataset presets: the published ViT-B/16 recipe (docs/training.md: 8 frames at stride 16,
# 224 px, batch 8 per rank, 12 epochs, lr 3.33e-6 after 2 warm-up epochs from 3.33e-8, cosine
# to 3.33e-8), written out per dataset so a run's recipe is read here, not inferred from the
# defaults. Keys are dotted config fields.
B2N_PRESETS: dict[str, dict[str, Any]] = {
    "k400": _recipe(model="ViT-B-16-quickgelu", frames=8, stride=16, size=224, epochs=12, batch=8,
                    lr=3.33e-6, min_lr=3.33e-8, warmup_epochs=2.0, warmup_start_lr=3.33e-8),
    "hmdb51": _recipe(model="ViT-B-16-quickgelu", frames=8, stride=16, size=224, epochs=12, batch=8,
                      lr=3.33e-6, min_lr=3.33e-8, warmup_epochs=2.0, warmup_start_lr=3.33e-8),
    "ucf101": _recipe(model="ViT-B-16-quickgelu", frames=8, stride=16, size=224, epochs=12, batch=8,
                      lr=3.33e-6, min_lr=3.33e-8, warmup_epochs=2.0, warmup_start_lr=3.33e-8),
    # SSv2 labels say "left to right" etc.: a horizontal flip would change the class.
    "ssv2": _recipe(model="ViT-B-16-quickgelu", frames=8, stride=16, size=224, epochs=12, batch=8,
                    lr=3.33e-6, min_lr=3.33e-8, warmup_epochs=2.0, warmup_start_lr=3.33e-8,
                    **{"data.flip": False}),
    # Your own data: the published recipe, and any dataset name in the manifests is accepted.
    "custom": _recipe(model="ViT-B-16-quickgelu", frames=8, stride=16, size=224, epochs=12, batch=8,
                      lr=3.33e-6, min_lr=3.33e-8, warmup_epochs=2.0, warmup_start_lr=3.33e-8),
    # The embedded default: a tiny CLIP on small synthetic clips, sized for 2 CPU cores.
    "synthetic": _recipe(model="kiclip-tiny", frames=8, stride=2, size=32, epochs=10, batch=8,
                         lr=1e-3, min_lr=1e-5, warmup_epochs=1.0, warmup_start_lr=1e-5,
                         **{"data.eval_batch_size": 16,
                            # classes name left/right motion: a flip would change the label
                            "data.flip": False,
                            "run.log_every": 5}),
}
# The science check (launch/experiment_b2n.py): the synthetic preset at 48 px, so the world's
# shapes and motion trails span more than one 8-px patch; no train-time flip (left/right labels).
B2N_PRESETS["science"] = {**B2N_PRESETS["synthetic"], "data.image_size": 48, "data.flip": False}
# Cross-dataset (--cross-dataset): the K400 recipe trained longer on all classes.
CROSS_PRESET: dict[str, Any] = _recipe(
    model="ViT-B-16-quickgelu", frames=8, stride=16, size=224, epochs=22, batch=8,
    lr=3.33e-6, min_lr=3.33e-8, warmup_epochs=2.0, warmup_start_lr=3.33e-8)

# The dataset each --b2n preset's shards must come from (manifest.json's "dataset", which
# make_splits → make_shards record); None accepts any. The science check runs on the
# synthetic world at another size.
PRESET_DATASETS: dict[str, str | None] = {
    "k400": "k400", "hmdb51": "hmdb51", "ucf101": "ucf101", "ssv2": "ssv2",
    "synthetic": "synthetic", "science": "synthetic", "custom": None,
}


def preset_table() -> str:
    """The presets as a text table (train.py/evaluate.py --help)."""
    rows = [("preset", "shards", "model", "frames x stride", "size", "epochs", "batch",
             "lr: warm-up start -> peak -> end (warm-up epochs)")]
    named = [(f"--b2n {name}", name, fields) for name, fields in B2N_PRESETS.items()]
    named.append(("--cross-dataset", None, CROSS_PRESET))
    for flag, name, f in named:
        shards = "any" if name is None else (PRESET_DATASETS[name] or "any")
        rows.append((flag, shards, f["model.model_name"], f"{f['data.num_frames']} x {f['data.stride']}",
                     str(f["data.image_size"]), str(f["optim.epochs"]), str(f["data.batch_size"]),
                     f"{f['optim.warmup_start_lr']:g} -> {f['optim.lr']:g} -> {f['optim.min_lr']:g} "
                     f"({f['optim.warmup_epochs']:g})"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1]
                     for r in rows)


# Fields whose name changed: an old config file or --set gets an error naming the new one.
RENAMED_FIELDS = {"data.data": "data.root"}


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> None:
    """Set dotted fields (``"optim.lr": 1e-5``), failing on unknown names."""
    for dotted, value in overrides.items():
        if dotted in RENAMED_FIELDS:
            raise ConfigError(f"config field {dotted!r} is now {RENAMED_FIELDS[dotted]!r}")
        *parents, leaf = dotted.split(".")
        target = cfg
        for part in parents:
            if not hasattr(target, part):
                raise ConfigError(f"unknown config section {part!r} in {dotted!r}")
            target = getattr(target, part)
        if not hasattr(target, leaf):
            raise ConfigError(f"unknown config field {dotted!r}")
        current = getattr(target, leaf)
        if isinstance(current, tuple) and isinstance(value, list):
            value = tuple(value)
        setattr(target, leaf, _checked_type(dotted, current, value))


def _checked_type(dotted: str, current: Any, value: Any) -> Any:
    """``value`` if it has the field's type (an int may stand for a float), else ConfigError."""
    kind = type(current)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is tuple and isinstance(value, tuple) and len(value) == len(current):
        return tuple(_checked_type(dotted, c, v) for c, v in zip(current, value))
    if kind is not tuple and isinstance(value, kind) and (kind is bool) == isinstance(value, bool):
        return value
    raise ConfigError(f"config field {dotted} must be {kind.__name__} like {current!r}, "
                      f"got {value!r}")


def flatten(cfg_dict: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg_dict.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def load_config_file(path: str) -> dict[str, Any]:
    """A JSON file of dotted or nested fields, e.g. ``{"optim": {"lr": 1e-5}}``."""
    try:
        with open(path) as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"config file {path} is not valid JSON: {err}") from None
    return flatten(raw)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Command-line flags for the fields a user changes most; `--set a.b=v` reaches any field.

    Each flag's help ends with the config field it sets (from _FLAG_FIELDS / _SWITCH_FIELDS)."""
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--b2n", metavar="DATASET", choices=sorted(B2N_PRESETS),
                      help="base-to-novel training on DATASET with its recipe (table below); "
                      "the shards' manifests must name DATASET; 'custom': your own data")
    what.add_argument("--cross-dataset", action="store_true",
                      help="train on all classes of --data (K400 protocol, 22 epochs)")
    parser.add_argument("--config", help="JSON file of config fields (applied after the preset)")
    for action in _field_flags(parser):
        action.help = f"{action.help or ''}{' ' if action.help else ''}[{_field_of(action.dest)}]"
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="set any config field (each flag above shows in [brackets] the field "
                        "it sets), e.g. --set optim.warmup_epochs=1 (JSON values)")


def _field_flags(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The flags that set one config field each (see _FLAG_FIELDS and _SWITCH_FIELDS)."""
    return [
        parser.add_argument("--data", help="shard root holding train_split{k}/, base_test/, "
                            "novel_test/ (B2N) or train/ (cross-dataset); or its URL (http(s)://, "
                            "s3://, gs://, pipe:)"),
        parser.add_argument("--split", type=int, choices=(1, 2, 3), help="B2N split (default 1)"),
        parser.add_argument("--pretrained", help="CLIP weights: a local file or an open_clip tag"),
        parser.add_argument("--model", dest="model_name",
                            help=f"open_clip model name (default {DEFAULT_MODEL})"),
        parser.add_argument("--output", help="run directory for checkpoints, logs and results"),
        parser.add_argument("--epochs", type=int),
        parser.add_argument("--batch-size", type=int, help="clips per rank per step"),
        parser.add_argument("--lr", type=float, help="peak learning rate"),
        parser.add_argument("--num-frames", type=int, help="frames per clip (T)"),
        parser.add_argument("--stride", type=int, help="frame stride inside a clip"),
        parser.add_argument("--image-size", type=int),
        parser.add_argument("--seed", type=int),
        parser.add_argument("--zero-stage", type=int, help="DeepSpeed ZeRO stage 0, 1 or 2 "
                            "(default 2; 3 is refused, see docs/training.md)"),
        parser.add_argument("--device", choices=DEVICES, help=DEVICE_HELP),
        parser.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                            help="auto (default): bf16 on CUDA, fp32 on CPU. bf16 keeps fp32 master "
                            "weights, logits and losses (docs/model.md §9). No fp16: DeepSpeed "
                            "needs loss scaling for it and runs it on CPU only with "
                            "AVX512-FP16/AMX-FP16"),
        parser.add_argument("--loader", dest="backend", choices=("auto", "dali", "torch"),
                            help="data loader backend (auto: DALI when it can decode the shards)"),
        parser.add_argument("--workers", dest="num_workers", type=int,
                            help="DataLoader workers / DALI threads"),
        parser.add_argument("--mix", type=float, metavar="M",
                            help="knowledge-injection mix h = M·h + (1−M)·f, M the weight of the "
                            "student's OWN stream (default 0.5, the reference's (h+f)/2): "
                            "1.0 injects NOTHING (the frozen stream still runs; --no-injection "
                            "drops it), lower values inject more"),
        parser.add_argument("--no-distill", action="store_true", help="ablation: no FROSTER distillation"),
        parser.add_argument("--no-injection", action="store_true", help="ablation: no knowledge injection"),
        parser.add_argument("--no-temporal", action="store_true", help="ablation: plain per-frame attention"),
        parser.add_argument("--mask-boundary", action="store_true",
                            help="mask missing temporal neighbours instead of the reference's zero keys"),
        parser.add_argument("--checkpointing", action="store_true",
                            help="activation checkpointing (keeps KI)"),
        parser.add_argument("--no-resume", action="store_true",
                            help="start fresh even when the output dir has a checkpoint"),
        parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps"),
        parser.add_argument("--allow-dataset-mismatch", action="store_true",
                            help="train on shards whose manifest names another dataset than --b2n"),
    ]


# Flag (argparse dest) -> the config field it sets; the flags' --help shows it.
_FLAG_FIELDS = {
    "data": "data.root", "split": "data.split", "pretrained": "model.pretrained",
    "model_name": "model.model_name", "output": "run.output", "epochs": "optim.epochs",
    "batch_size": "data.batch_size", "lr": "optim.lr", "num_frames": "data.num_frames",
    "stride": "data.stride", "image_size": "data.image_size", "seed": "run.seed",
    "zero_stage": "run.zero_stage", "device": "run.device", "precision": "run.precision",
    "backend": "data.backend",
    "num_workers": "data.num_workers", "mix": "model.mix", "max_steps": "run.max_steps",
}
# Switch (argparse dest) -> (config field, the value it sets).
_SWITCH_FIELDS = {
    "no_distill": ("loss.distill", False), "no_injection": ("model.injection", False),
    "no_temporal": ("model.temporal", False), "mask_boundary": ("model.mask_boundary", True),
    "checkpointing": ("model.checkpointing", True), "no_resume": ("run.resume", False),
    "allow_dataset_mismatch": ("data.allow_mismatch", True),
}


def _field_of(dest: str) -> str:
    """What a flag sets, for its --help: ``data.backend`` or ``loss.distill=false``."""
    if dest in _FLAG_FIELDS:
        return _FLAG_FIELDS[dest]
    field_name, value = _SWITCH_FIELDS[dest]
    return f"{field_name}={json.dumps(value)}"


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults → preset → --config file → flags → --set; validated."""
    cfg = TrainConfig()
    if getattr(args, "cross_dataset", False):
        cfg.mode, cfg.dataset = "cross", "k400"
        apply_overrides(cfg, CROSS_PRESET)
    else:
        cfg.mode, cfg.dataset = "b2n", args.b2n or "synthetic"
        apply_overrides(cfg, B2N_PRESETS[cfg.dataset])
    if getattr(args, "config", None):
        apply_overrides(cfg, load_config_file(args.config))
    apply_overrides(cfg, {f: getattr(args, a) for a, f in _FLAG_FIELDS.items()
                          if getattr(args, a, None) is not None})
    for flag, (dotted, value) in _SWITCH_FIELDS.items():
        if getattr(args, flag, False):
            apply_overrides(cfg, {dotted: value})
    for item in getattr(args, "set", []) or []:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects FIELD=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        apply_overrides(cfg, {name.strip(): value})
    cfg.validate()
    return cfg
