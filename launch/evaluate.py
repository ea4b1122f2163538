#!/usr/bin/env python
"""Evaluate a KICLIP checkpoint: B2N Base / Novel / HM, or cross-dataset zero-shot top-1.

Examples:
  python launch/evaluate.py --b2n k400 --data shards/k400 --checkpoint runs/k400_s1/averaged.pt
  python launch/evaluate.py --b2n k400 --data shards/k400 \
      --checkpoint runs/s1/averaged.pt runs/s2/averaged.pt runs/s3/averaged.pt
  python launch/evaluate.py --b2n k400 --data shards/k400 --frozen-clip --pretrained /path/ViT-B-16.pt
  python launch/evaluate.py --cross-dataset --data shards/ucf101 --checkpoint runs/k400_full/averaged.pt

B2N reads DATA/base_test and DATA/novel_test; Base is measured in the base label space, Novel in
the novel one. Cross-dataset evaluates every DATA/test* shard folder in its own label space.
Each video is scored with --views temporal views (default 3) × 1 centre crop, view logits summed,
against a classifier averaged over all 29 prompt templates. With several checkpoints (one per
split) the mean ± sample std over them is reported (one checkpoint: std 0.0 in results.json, no
"±" in results.md). Writes OUTPUT/results.json (with "runs": each checkpoint's figures, and
"prompts": the class texts and templates of each label space) and OUTPUT/results.md.

Prompts are built from each manifest's class texts (the rephrased "Name: description" texts
when the class file had them). With --b2n, every manifest must name that preset's dataset
(--b2n custom takes any; --allow-dataset-mismatch accepts another).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from kiclip.config import B2N_PRESETS, ConfigError, preset_table
from kiclip.device import DeviceError, add_device_argument, choose_device_type
from kiclip.layout import prompt_record, read_shard_set
from kiclip.remote import localize_protocol
from kiclip.train.startup import load_protocol
from kiclip.weights import weights_file_problem

log = logging.getLogger("kiclip.evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2] + "\npresets (clip geometry of --frozen-clip; a "
        "checkpoint keeps its own):\n" + preset_table(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--b2n", metavar="DATASET", choices=sorted(B2N_PRESETS),
                      help="B2N test sets of DATASET (the manifests must name it; 'custom': any)")
    what.add_argument("--cross-dataset", action="store_true")
    parser.add_argument("--data", required=True, help="shard root (see above), or its URL "
                        "(http(s)://, s3://, gs://, pipe:; see docs/data.md, 'Remote shards')")
    parser.add_argument("--cache-dir", help="where a --data URL is staged (default ~/.cache/kiclip/shards)")
    parser.add_argument("--stream", action="store_true",
                        help="with a --data URL, stream the tars with the torch loader instead of "
                        "staging them: only the manifests and .idx files are fetched; every "
                        "DataLoader worker of every rank reads every tar each epoch (see "
                        "docs/data.md, 'Remote shards')")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", nargs="+", help="kiclip weights file(s): averaged.pt or weights/epoch_NNN.pt")
    source.add_argument("--frozen-clip", action="store_true",
                        help="baseline: the original CLIP zero-shot, per-frame, no training")
    parser.add_argument("--pretrained", help="CLIP weights for --frozen-clip (local file or open_clip tag)")
    parser.add_argument("--model", help="open_clip model for --frozen-clip (default: the dataset preset's)")
    parser.add_argument("--views", type=int, default=3, help="temporal views per video (default 3)")
    parser.add_argument("--batch-size", type=int, help="clips per batch (default: the run's eval batch)")
    parser.add_argument("--loader", choices=("auto", "dali", "torch"), help="data loader backend")
    add_device_argument(parser)
    parser.add_argument("--output", help="folder for results.json / results.md (default: beside the checkpoint)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--allow-dataset-mismatch", action="store_true",
                        help="evaluate shards whose manifest names another dataset than --b2n")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Before staging a --data URL: that can download gigabytes.
        device_type = choose_device_type(args.device)
        spaces = _label_spaces(args)
        for path in args.checkpoint or []:
            problem = weights_file_problem(path)
            if problem:
                raise ConfigError(problem)
    except (ConfigError, DeviceError) as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return 2
    from kiclip.data.codecs import DaliNotInstalledError, UnsupportedCodecError
    from kiclip.evaluation import summarise_metrics

    try:
        runs = [_evaluate_one(args, source, spaces, device_type)
                for source in (args.checkpoint or ["frozen-clip"])]
    # a --checkpoint that is not a kiclip weights file, shards no decoder here can read, or
    # --loader dali without DALI
    except (ConfigError, UnsupportedCodecError, DaliNotInstalledError) as err:
        print(f"evaluate.py: error: {err}", file=sys.stderr)
        return 2
    metrics = ["base", "novel", "hm"] if args.b2n else list(spaces)
    results = {"runs": runs, **summarise_metrics(runs, metrics)}
    results["prompts"] = prompt_record(spaces)
    out_dir = Path(args.output or (Path(args.checkpoint[0]).parent if args.checkpoint else "results"))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    (out_dir / "results.md").write_text(_markdown(results))
    print(_markdown(results))
    print(f"wrote {out_dir / 'results.json'}")
    return 0


def _label_spaces(args) -> dict:
    if args.b2n:
        return load_protocol(args.data, "b2n", dataset=args.b2n, allow_mismatch=args.allow_dataset_mismatch,
                             escape="--allow-dataset-mismatch", need_train=False,
                             cache_dir=args.cache_dir, stream=args.stream).evals
    root = Path(localize_protocol(args.data, "cross", need_train=False, cache_dir=args.cache_dir,
                                  stream=args.stream))
    spaces = {p.name: read_shard_set(p) for p in sorted(root.glob("test*")) if p.is_dir()}
    if not spaces:
        raise ConfigError(f"{root} holds no test* shard folder for cross-dataset evaluation")
    return spaces


def _evaluate_one(args, source: str, spaces: dict, device_type: str) -> dict:
    import torch

    from kiclip.evaluation import evaluate_label_space, harmonic_mean
    from kiclip.inference import frozen_clip_model, load_checkpoint_model
    from kiclip.runtime import configure_cpu_threads

    if source == "frozen-clip":
        if not args.pretrained:
            log.warning("--frozen-clip without --pretrained evaluates randomly initialised weights")
        loaded = frozen_clip_model(args.model, args.pretrained, preset=args.b2n or "k400")
    else:
        try:
            loaded = load_checkpoint_model(source)
        except ValueError as err:  # load_weights names the file and what is wrong with it
            raise ConfigError(str(err)) from err
    student, tokenizer, cfg = loaded.student, loaded.tokenizer, loaded.cfg
    cfg.data.num_views = args.views
    if args.batch_size:
        cfg.data.eval_batch_size = args.batch_size
    if args.loader:
        cfg.data.backend = args.loader
    device = torch.device(device_type)
    if device.type == "cpu":
        configure_cpu_threads(cfg.data.num_workers)
    student.to(device)
    result = {"source": source}
    for name, shard_set in spaces.items():
        acc = evaluate_label_space(student, tokenizer, shard_set, cfg.data, device=device,
                                   seed=args.seed)
        result[name] = acc["top1"]
        result[f"{name}_detail"] = acc
        log.info("%s: %s top-1 %.2f%% over %d videos", source, name, acc["top1"], acc["videos"])
    if "base" in result and "novel" in result:
        result["hm"] = harmonic_mean(result["base"], result["novel"])
    return result


def _markdown(results: dict) -> str:
    metrics = [k for k in results if k not in ("runs", "prompts") and not k.endswith("_std")]
    head = "| " + " | ".join(metrics) + " |\n|" + "---|" * len(metrics) + "\n"
    several = len(results["runs"]) > 1  # one checkpoint measures no spread: no "±"
    cells = []
    for m in metrics:
        cells.append(f"{results[m]:.2f}" + (f" ± {results[f'{m}_std']:.2f}" if several else ""))
    return head + "| " + " | ".join(cells) + " |\n"


if __name__ == "__main__":
    sys.exit(main())
