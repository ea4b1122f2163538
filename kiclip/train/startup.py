"""Everything checked before a training run does heavy work: the configuration, a user's
DeepSpeed JSON, the dataset (staged or streamed when remote, validated, of the expected
dataset) and the device. Each problem is a ConfigError or DeviceError whose message names the
file or option at fault; the launcher prints it and exits 2.

Importing this module does not import torch (``--help`` stays fast); ``prepare_run`` does.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kiclip.config import ZERO3_REFUSAL, ConfigError, TrainConfig, config_from_args
from kiclip.layout import ProtocolData, check_datasets, resolve_protocol
from kiclip.remote import localize_protocol


def prepare_run(args: argparse.Namespace) -> tuple[TrainConfig, ProtocolData, str]:
    """(config, validated protocol, device type "cpu" or "cuda") from train.py's parsed
    arguments, with DeepSpeed told which accelerator to use. Raises ConfigError or
    DeviceError; nothing is written anywhere."""
    from kiclip.device import choose_device_type
    from kiclip.train.distributed import select_deepspeed_accelerator

    cfg = config_from_args(args)
    if args.deepspeed_config:
        check_user_deepspeed_config(Path(args.deepspeed_config))
        cfg.run.deepspeed_config = args.deepspeed_config
    if args.stream and cfg.data.backend == "dali":
        raise ConfigError("--stream reads tars with the torch loader (DALI reads local files "
                          "only): use --loader torch or auto, or drop --stream to stage them")
    protocol = load_protocol(cfg.data.root, cfg.mode, cfg.data.split, dataset=cfg.dataset,
                             allow_mismatch=cfg.data.allow_mismatch,
                             escape="--set data.allow_mismatch=true (or --allow-dataset-mismatch)",
                             cache_dir=args.cache_dir, stream=args.stream)
    device_type = choose_device_type(cfg.run.device)
    select_deepspeed_accelerator(device_type)
    return cfg, protocol, device_type


def load_protocol(data: str, mode: str, split: int = 1, *, dataset: str, allow_mismatch: bool,
                  escape: str, need_train: bool = True, cache_dir: str | None = None,
                  stream: bool = False) -> ProtocolData:
    """The protocol's shard folders under ``data`` (a folder or a URL, staged or streamed),
    validated; in B2N mode also checked to be ``dataset``'s (``escape`` names the option that
    accepts another). ConfigError naming what is wrong."""
    local = localize_protocol(data, mode, split, need_train=need_train, cache_dir=cache_dir,
                              stream=stream)
    protocol = resolve_protocol(local, mode, split, need_train=need_train)
    if mode == "b2n":
        spaces = [protocol.train] if protocol.train is not None else []
        check_datasets([*spaces, *protocol.evals.values()], dataset,
                       allow_mismatch=allow_mismatch, escape=escape)
    return protocol


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
