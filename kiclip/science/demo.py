"""The demo's report: the pretrained teacher zero-shot against fine-tuned students.

``launch/demo.sh`` evaluates each arm with ``evaluate.py`` into ``OUT/eval/<arm>/results.json``;
this module gathers them, prints a Base / Novel / HM table with the chance level, and writes
``OUT/results.json``, ``OUT/results.md`` and ``OUT/results.png``::

    python -m kiclip.science.demo OUT [--settings '{"epochs": 4}'] [--started UNIX_TIME]

Arms (``ARMS``): ``teacher`` (the pretrained tiny CLIP, no training), ``finetune`` (plain
fine-tuning on the base classes) and ``kiclip`` (fine-tuning with FROSTER distillation and
knowledge injection). An arm whose results are missing is left out of the table; the teacher
and KICLIP are required.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from kiclip.evaluation import harmonic_mean
from kiclip.science.report import write_chart

ARMS: dict[str, str] = {
    "teacher": "pretrained teacher, zero-shot (no training)",
    "finetune": "plain fine-tuning (`--no-distill --no-injection`)",
    "kiclip": "KICLIP fine-tuning (distillation + knowledge injection)",
}
REQUIRED = ("teacher", "kiclip")


class DemoReportError(RuntimeError):
    """An evaluation result the report needs is missing or malformed (message names the file)."""


def read_arm(path: Path) -> dict:
    """{"base", "novel", "hm", "base_classes", "novel_classes"} from one evaluate.py results.json."""
    try:
        blob = json.loads(path.read_text())
        spaces = blob["prompts"]["label_spaces"]
        return {"base": float(blob["base"]), "novel": float(blob["novel"]),
                "hm": harmonic_mean(float(blob["base"]), float(blob["novel"])),
                "base_classes": len(spaces["base"]["class_texts"]),
                "novel_classes": len(spaces["novel"]["class_texts"])}
    except FileNotFoundError:
        raise DemoReportError(f"{path} is missing: evaluate.py did not finish for this arm") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise DemoReportError(f"{path} is not an evaluate.py --b2n results.json ({err!r})") from None


def collect(eval_root: Path) -> dict[str, dict]:
    """Every arm of ``ARMS`` that has ``eval_root/<arm>/results.json``, in ARMS order.

    Raises DemoReportError when a required arm is missing or the label spaces differ.
    """
    arms = {arm: read_arm(eval_root / arm / "results.json") for arm in ARMS
            if arm in REQUIRED or (eval_root / arm / "results.json").is_file()}
    sizes = {(a["base_classes"], a["novel_classes"]) for a in arms.values()}
    if len(sizes) != 1:
        raise DemoReportError(f"arms under {eval_root} were evaluated on different label spaces: "
                              f"{sorted(sizes)}")
    return arms


def chance_levels(arms: Mapping[str, Mapping]) -> dict[str, float]:
    """Top-1 % of a uniform guess in the base and the novel label space."""
    first = next(iter(arms.values()))
    return {"base": 100.0 / first["base_classes"], "novel": 100.0 / first["novel_classes"]}


def reading(arms: Mapping[str, Mapping]) -> list[str]:
    """What the table shows, in words: KICLIP against the teacher (and plain fine-tuning)."""
    t, k = arms["teacher"], arms["kiclip"]
    lines = [f"KICLIP against the teacher: Base {k['base'] - t['base']:+.1f}, "
             f"Novel {k['novel'] - t['novel']:+.1f}, HM {k['hm'] - t['hm']:+.1f} points"
             + (" — it learnt the base classes and kept the teacher's knowledge of the novel "
                "ones." if k["base"] > t["base"] and k["novel"] >= t["novel"] - 2 else ".")]
    if "finetune" in arms:
        f = arms["finetune"]
        lines.append(f"Plain fine-tuning against the teacher: Base {f['base'] - t['base']:+.1f}, "
                     f"Novel {f['novel'] - t['novel']:+.1f}, HM {f['hm'] - t['hm']:+.1f} points.")
    return lines


def render_markdown(arms: Mapping[str, Mapping], chance: Mapping[str, float],
                    settings: Mapping) -> str:
    rows = ["| model | Base | Novel | HM |", "|---|---|---|---|"]
    for arm, r in arms.items():
        rows.append(f"| {ARMS[arm]} | {r['base']:.1f} | {r['novel']:.1f} | {r['hm']:.1f} |")
    rows.append(f"| chance (uniform guess) | {chance['base']:.1f} | {chance['novel']:.1f} | "
                f"{harmonic_mean(chance['base'], chance['novel']):.1f} |")
    first = next(iter(arms.values()))
    note = (f"Top-1 % on held-out videos: Base among the {first['base_classes']} base classes "
            f"(the only ones trained on), Novel among the {first['novel_classes']} novel classes, "
            "named only by text; HM = harmonic mean of the two.")
    return "\n".join(["# kiclip demo: base-to-novel on the synthetic world", "", *rows, "", note,
                      "", *[f"- {line}" for line in reading(arms)], "",
                      "Settings:", "", "```json", json.dumps(dict(settings), indent=1,
                                                             sort_keys=True), "```", ""])


def write_demo_report(out: Path, arms: Mapping[str, Mapping], settings: Mapping) -> dict[str, Path]:
    """OUT/results.json, OUT/results.md and OUT/results.png; returns their paths."""
    chance = chance_levels(arms)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    blob = {"arms": {a: dict(r) for a, r in arms.items()}, "chance": chance,
            "settings": dict(settings)}
    # The KICLIP arm's numbers stay at the top level, where the demo has always left them.
    blob.update({m: arms["kiclip"][m] for m in ("base", "novel", "hm")})
    paths["json"].write_text(json.dumps(blob, indent=2) + "\n")
    paths["md"].write_text(render_markdown(arms, chance, settings))
    write_chart(dict(arms), paths["png"], chance=chance,
                labels={"finetune": "plain\nfine-tuning", "kiclip": "KICLIP"})
    return paths


def console_table(arms: Mapping[str, Mapping], chance: Mapping[str, float]) -> str:
    width = max(len(ARMS[a]) for a in arms)
    lines = [f"{'model':{width}s}  Base   Novel  HM"]
    for arm, r in arms.items():
        lines.append(f"{ARMS[arm]:{width}s}  {r['base']:5.1f}  {r['novel']:5.1f}  {r['hm']:5.1f}")
    lines.append(f"{'chance (uniform guess)':{width}s}  {chance['base']:5.1f}  {chance['novel']:5.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kiclip.science.demo",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="the demo's output folder (reads OUT/eval/<arm>/results.json)")
    parser.add_argument("--settings", default="{}", help="JSON object recorded in results.json")
    parser.add_argument("--started", type=float, help="the demo's start (Unix time): wall time")
    args = parser.parse_args(argv)
    out = Path(args.out)
    try:
        settings = json.loads(args.settings)
        if not isinstance(settings, dict):
            raise ValueError("not a JSON object")
        arms = collect(out / "eval")
    except (ValueError, DemoReportError) as err:
        print(f"demo report: error: {err}", file=sys.stderr)
        return 2
    if args.started:
        settings["wall_s"] = round(time.time() - args.started, 1)
    paths = write_demo_report(out, arms, settings)
    print(console_table(arms, chance_levels(arms)))
    print("\n".join(reading(arms)))
    print(f"wrote {paths['json']}, {paths['md']}, {paths['png']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
