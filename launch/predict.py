#!/usr/bin/env python
"""Open-vocabulary action recognition on your own video: the top-k of any class names you type.

Examples:
  python launch/predict.py --checkpoint runs/k400_s1/averaged.pt --video my_clip.mp4 \\
      --classes "juggling,surfing,playing guitar,riding a bike"
  python launch/predict.py --checkpoint runs/k400_s1/averaged.pt --video my_clip.mov \\
      --classes-file lists/k400/novel_classes.json --top-k 5 --json
  python launch/predict.py --frozen-clip --pretrained /path/ViT-B-16.pt --video my_clip.mp4 \\
      --classes "juggling,surfing"

The video (any container/codec PyAV reads) is cut as evaluation cuts test videos: --views
temporal windows of the checkpoint's T frames at its stride, spread evenly over the video, each
resized to the checkpoint's image size on the short side and centre-cropped. Classes are ranked
by the view logits summed; each class's text embedding averages all 29 prompt templates. The
probability column is the softmax over *your* class list of the view-averaged logits, so it
only compares the names you gave. Names in the rephrased form "Name: description" (as in
kiclip's class JSON files) are prompted as in training.

--classes-file: a .json list or {"0": name, ...} mapping (e.g. the rephrased class file a run
was trained with), a shard folder's manifest.json (its rephrased texts when it has them), or a
text file with one name per line (use it when names contain commas). --classes and
--classes-file may be combined; a list must be all rephrased or all plain.

A video cut short (its header promises more frames than decode) is used up to its last
decodable frame, with a warning; the reported frame indices all exist.

Exit status: 0 ok; 2 bad arguments (video/checkpoint missing, a directory or empty; missing
classes file, empty class list; --device cuda without a usable GPU); 1 the video or checkpoint
cannot be read (the message says what is wrong with it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from kiclip.config import DEFAULT_MODEL
from kiclip.device import DeviceError, add_device_argument, choose_device_type

log = logging.getLogger("kiclip.predict")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="kiclip weights file: RUN/averaged.pt or RUN/weights/epoch_NNN.pt")
    source.add_argument("--frozen-clip", action="store_true",
                        help="baseline: the original CLIP zero-shot (8 frames at stride 16, 224 px)")
    parser.add_argument("--pretrained", help="CLIP weights for --frozen-clip (local file or open_clip tag)")
    parser.add_argument("--model", help=f"open_clip model for --frozen-clip (default {DEFAULT_MODEL})")
    parser.add_argument("--video", required=True, help="the video file to classify")
    parser.add_argument("--classes", help='comma-separated class names, e.g. "juggling,surfing"')
    parser.add_argument("--classes-file", help="class names from a .json list/mapping or a .txt file")
    parser.add_argument("--top-k", type=int, default=5, help="how many classes to show (default 5)")
    parser.add_argument("--views", type=int, default=3, help="temporal views, logits summed (default 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_device_argument(parser)
    return parser


def predict(model, video: str, class_names: list[str], top_k: int, views: int) -> dict:
    """Top-k of one video: {"video", "source", "views", "frames", "top_k": [{"class",
    "probability", "logit"}, ...]} sorted by probability, highest first."""
    from kiclip.inference import load_video_clips, video_class_scores

    clips, frames = load_video_clips(video, model.clip_spec(views))
    logits, probs = video_class_scores(model, clips, class_names)
    order = logits.argsort(descending=True)[:top_k].tolist()
    return {
        "video": str(video), "source": model.source, "views": views,
        "frames": frames.tolist(),
        "top_k": [{"class": class_names[i], "probability": float(probs[i]), "logit": float(logits[i])}
                  for i in order],
    }


def format_table(result: dict) -> str:
    rows = [(r["class"], f"{100 * r['probability']:.1f}%") for r in result["top_k"]]
    width = max([len("class")] + [len(name) for name, _ in rows])
    lines = [f"{Path(result['video']).name}  ({result['views']} views, {result['source']})",
             f"{'class':<{width}}  probability", f"{'-' * width}  -----------"]
    lines += [f"{name:<{width}}  {prob:>11}" for name, prob in rows]
    return "\n".join(lines)


def to_json(value, indent: int = 2) -> str:
    """JSON with nested objects indented but lists of numbers kept on one line, so a
    (views, T) frame-index list reads as rows instead of one integer per line."""
    return _json_lines(value, indent, 0)


def _json_lines(value, indent: int, depth: int) -> str:
    pad, inner = " " * (indent * depth), " " * (indent * (depth + 1))
    if isinstance(value, dict) and value:
        items = [f"{inner}{json.dumps(str(k))}: {_json_lines(v, indent, depth + 1)}"
                 for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{pad}}}"
    if isinstance(value, list) and value and not _numbers_only(value):
        items = [f"{inner}{_json_lines(v, indent, depth + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + f"\n{pad}]"
    return json.dumps(value, separators=(", ", ": "))


def _numbers_only(value) -> bool:
    if isinstance(value, list):
        return all(_numbers_only(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def input_problems(args) -> str | None:
    """The first bad --video / --checkpoint / number, found without importing torch (so a
    typo is answered at once); None when they look usable."""
    from kiclip.files import file_problem
    from kiclip.weights import weights_file_problem

    if args.top_k < 1 or args.views < 1:
        return "--top-k and --views must be >= 1"
    problem = file_problem(args.video, "video")
    if problem:
        return problem
    return weights_file_problem(args.checkpoint) if args.checkpoint else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def fail(code: int, message: str) -> int:
        print(f"predict.py: error: {message}", file=sys.stderr)
        return code

    problem = input_problems(args)
    if problem:
        return fail(2, problem)
    try:  # before minutes of model loading
        device_type = choose_device_type(args.device)
    except DeviceError as err:
        return fail(2, str(err))
    # open_clip and the model code load only now: --help and the checks above stay fast.
    from kiclip.inference import (
        VideoReadError,
        frozen_clip_model,
        load_checkpoint_model,
        parse_class_list,
    )

    try:
        class_names = parse_class_list(args.classes, args.classes_file)
    except (FileNotFoundError, ValueError) as err:
        return fail(2, str(err))
    try:
        if args.frozen_clip:
            if not args.pretrained:
                log.warning("--frozen-clip without --pretrained scores with randomly initialised weights")
            model = frozen_clip_model(args.model, args.pretrained)
        else:
            model = load_checkpoint_model(args.checkpoint)
    except Exception as err:  # noqa: BLE001 - torch.load raises many types for a bad file
        return fail(1, f"cannot load the model: {err}")
    model.student.to(device_type)
    try:
        result = predict(model, args.video, class_names, args.top_k, args.views)
    except VideoReadError as err:
        return fail(1, str(err))
    print(to_json(result) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
