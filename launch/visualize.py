#!/usr/bin/env python
"""EigenCAM of a KICLIP student, layer by layer, with and without knowledge injection.

Examples:
  python launch/visualize.py --checkpoint runs/k400_s1/averaged.pt --video my_clip.mp4
  python launch/visualize.py --checkpoint runs/k400_s1/averaged.pt --video my_clip.mp4 \\
      --layers 6-12 --frame 4 --out cams.png

Writes one PNG grid: row 1 "with KI" is the checkpoint as trained; row 2 "without KI" runs
the same weights with knowledge injection switched off (VideoStudent injection=False: the
frozen blocks' stream is not mixed in). Columns are student layers (1-based); each cell is
frame --frame of the clip with that layer's EigenCAM overlaid (jet: red = high).

The clip is the centre temporal window (one test view) at the checkpoint's frames, stride and
image size, centre-cropped. EigenCAM is pytorch-grad-cam's EigenCAM (first principal
component of the layer's patch tokens, sign-corrected) read from the student stream after
each layer.

--layers default: every layer after the 5th (6-12 for ViT-B/16). A model with 5 layers or
fewer (e.g. the 4-layer kiclip-tiny) shows all its layers instead.

Exit status: 0 ok; 2 bad arguments (video/checkpoint missing, a directory or empty; bad
--layers/--frame; --device cuda without a usable GPU);
1 the video or checkpoint exists but cannot be read.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from kiclip.device import DeviceError, add_device_argument, choose_device_type

log = logging.getLogger("kiclip.visualize")

# Fixed figure geometry, so a grid's PNG size depends only on its rows and columns.
CELL_INCHES = 2.0
HEADER_INCHES = 0.6
LABEL_INCHES = 0.4
DPI = 100


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="visualize.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="kiclip weights file: RUN/averaged.pt or RUN/weights/epoch_NNN.pt")
    parser.add_argument("--video", required=True, help="the video file to explain")
    parser.add_argument("--out", default="eigencam_grid.png", help="PNG to write (default eigencam_grid.png)")
    parser.add_argument("--layers", help='1-based layers, e.g. "6-12" or "6,9,12" (default: after the 5th)')
    parser.add_argument("--frame", type=int, help="which of the clip's T frames to show (0-based; default T//2)")
    add_device_argument(parser)
    return parser


def grid_pixel_size(rows: int, cols: int) -> tuple[int, int]:
    """(width, height) in pixels of the PNG ``render_grid`` writes for rows × cols cells."""
    return (round((LABEL_INCHES + cols * CELL_INCHES) * DPI),
            round((HEADER_INCHES + rows * CELL_INCHES) * DPI))


def render_grid(frame, maps, layers, row_names, title: str, out: Path) -> None:
    """frame float (S, S, 3) in [0, 1]; maps (rows, cols, S, S) in [0, 1] → PNG at ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rows, cols = maps.shape[:2]
    width, height = grid_pixel_size(rows, cols)
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    left, top = LABEL_INCHES * DPI / width, HEADER_INCHES * DPI / height
    grid = fig.add_gridspec(rows, cols, left=left, right=1.0, top=1.0 - top, bottom=0.0,
                            wspace=0.05, hspace=0.15)
    fig.suptitle(title, fontsize=10, y=1.0 - 0.15 * top, va="top")
    for r in range(rows):
        for c in range(cols):
            ax = fig.add_subplot(grid[r, c])
            ax.imshow(show_cam_on_image(frame, maps[r, c], use_rgb=True))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"layer {layers[c]}", fontsize=9)
            if c == 0:
                ax.set_ylabel(row_names[r], fontsize=9)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)


def visualize(model, video: str, out: Path, layers: list[int] | None = None,
              frame: int | None = None):
    """Write the with/without-KI EigenCAM grid of ``video``; return the maps
    float32 (2, len(layers), S, S) shown (the chosen frame) and the layers."""
    from kiclip.eigencam import default_layers, ki_comparison
    from kiclip.inference import denormalise, load_video_clips

    student = model.student
    num_layers = len(student.clip.visual.transformer.resblocks)
    layers = layers or default_layers(num_layers)
    clips, frames = load_video_clips(video, model.clip_spec(views=1))
    clip = clips[0]  # (3, T, S, S)
    t = clip.shape[1]
    frame = t // 2 if frame is None else frame
    if not 0 <= frame < t:
        raise ValueError(f"--frame must be in 0..{t - 1}, got {frame}")
    maps = ki_comparison(student, clip, layers)[:, :, frame]  # (2, L, S, S)
    image = denormalise(clip[:, frame]).permute(1, 2, 0).numpy()
    injection = "" if student.injection else " (checkpoint trained without KI: rows match)"
    title = (f"EigenCAM  {Path(video).name}, frame {frame} (video frame {int(frames[0, frame])})"
             f"{injection}")
    render_grid(image, maps, layers, ["with KI", "without KI"], title, out)
    return maps, layers


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from kiclip.eigencam import parse_layers
    from kiclip.files import file_problem
    from kiclip.inference import VideoReadError, load_checkpoint_model
    from kiclip.weights import weights_file_problem

    def fail(code: int, message: str) -> int:
        print(f"visualize.py: error: {message}", file=sys.stderr)
        return code

    for problem in (file_problem(args.video, "video"), weights_file_problem(args.checkpoint)):
        if problem:
            return fail(2, problem)
    try:  # before the model is loaded
        device_type = choose_device_type(args.device)
    except DeviceError as err:
        return fail(2, str(err))
    try:
        model = load_checkpoint_model(args.checkpoint)
    except ValueError as err:  # load_weights names the file and what is wrong with it
        return fail(1, str(err))
    except Exception as err:  # noqa: BLE001 - building the model from a damaged config
        return fail(1, f"cannot load checkpoint {args.checkpoint}: {err}")
    model.student.to(device_type)
    num_layers = len(model.student.clip.visual.transformer.resblocks)
    try:
        layers = parse_layers(args.layers, num_layers) if args.layers else None
    except ValueError as err:
        return fail(2, str(err))
    if args.frame is not None and not 0 <= args.frame < model.cfg.data.num_frames:
        return fail(2, f"--frame must be in 0..{model.cfg.data.num_frames - 1}, got {args.frame}")
    try:
        _, layers = visualize(model, args.video, Path(args.out), layers, args.frame)
    except VideoReadError as err:
        return fail(1, str(err))
    print(f"wrote {args.out}: 2 rows (with / without KI) x layers {layers}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
