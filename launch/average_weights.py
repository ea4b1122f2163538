#!/usr/bin/env python
"""Average a run's per-epoch weights element-wise into one checkpoint (docs/model.md §6).

Example:
  python launch/average_weights.py runs/k400_s1                  # epochs 2..last → averaged.pt
  python launch/average_weights.py runs/k400_s1 --from 5 --to 10 --out runs/k400_s1/avg_5_10.pt

Epochs count from 1 here, as in the paper (epoch 1 = the first one trained); the files are
RUN_DIR/weights/epoch_NNN.pt, numbered from 0. The output carries the run's config, so
evaluate.py needs nothing else.
"""

from __future__ import annotations

import argparse
import logging
import sys

from kiclip.train.averaging import average_run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="average_weights.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", help="a train.py --output folder")
    parser.add_argument("--from", dest="first", type=int, default=2,
                        help="first epoch to include, counting from 1 (default 2; clipped to the run)")
    parser.add_argument("--to", dest="last", default="last", help="last epoch to include (default: last)")
    parser.add_argument("--out", help="output file (default RUN_DIR/averaged.pt)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        last = None if args.last == "last" else int(args.last)
        out = average_run(args.run_dir, first=args.first, last=last, out=args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"average_weights.py: error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
