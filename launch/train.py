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
import logging
import sys

from kiclip.config import ConfigError, add_config_arguments, preset_table


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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Imports torch: not for --help.
    from kiclip.data.codecs import DaliNotInstalledError, UnsupportedCodecError
    from kiclip.device import DeviceError
    from kiclip.remote import RemoteDataError
    from kiclip.train.startup import prepare_run
    from kiclip.train.trainer import Trainer

    try:
        # Everything that can be wrong with the dataset is found here, before any heavy work.
        cfg, protocol, device_type = prepare_run(args)
    except (ConfigError, DeviceError) as err:
        return _error(err, 2)

    try:
        Trainer(cfg, protocol, device_type).train()
    except FloatingPointError as err:  # every rank raises it at the same step (all_ranks_finite)
        return _error(err, 1)
    # More ranks on this host than GPUs; a codec no loader here reads, or --loader dali without
    # DALI (found before the first batch, on every rank alike); a streamed tar that cannot be
    # fetched or is corrupt.
    except (DeviceError, UnsupportedCodecError, DaliNotInstalledError, RemoteDataError) as err:
        return _error(err, 2)
    return 0


def _error(err: Exception, code: int) -> int:
    print(f"train.py: error: {err}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
