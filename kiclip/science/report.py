"""Per-seed B2N accuracies → mean ± std table, the forgetting claims, science.json/.md and a chart.

Accuracies are percent. A "run" is ``{"seed": int, "base": float, "novel": float}`` (HM is
computed here, per run, then averaged, so HM's std is the spread of the runs' HMs).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path

from kiclip.evaluation import harmonic_mean, summarise_metrics

METHODS: dict[str, str] = {
    "teacher": "frozen teacher, zero-shot",
    "finetune": "(a) fine-tune (`--no-distill --no-injection`)",
    "distill": "(b) FROSTER: fine-tune + distillation (`--no-injection`)",
    "kiclip": "(c) KICLIP: distillation + knowledge injection (default)",
}
METRICS = ("base", "novel", "hm")
NOTES_MARKER = "<!-- hand-written notes: kept when the experiment rewrites this file -->"


def summarise(runs: Sequence[Mapping]) -> dict:
    """{"base", "novel", "hm", "base_std", "novel_std", "hm_std", "n", "runs"} of some runs.

    std is the sample standard deviation over runs, 0.0 for a single run
    (``kiclip.evaluation.mean_and_std``).
    """
    if not runs:
        raise ValueError("no runs to summarise")
    rows = [{**r, "hm": harmonic_mean(r["base"], r["novel"])} for r in runs]
    out = summarise_metrics(rows, METRICS)
    out["n"] = len(rows)
    out["runs"] = rows
    return out


def aggregate(per_method: Mapping[str, Sequence[Mapping]]) -> dict:
    """{method: summarise(runs)} for every method given, in METHODS order first."""
    order = [m for m in METHODS if m in per_method] + [m for m in per_method if m not in METHODS]
    return {m: summarise(per_method[m]) for m in order}


def check_claims(results: Mapping[str, Mapping]) -> list[dict]:
    """The inequalities the science check tests (docs/science.md), on the means over seeds.

    Each item: {"claim": text, "holds": bool, "values": text}. Needs teacher, finetune,
    distill and kiclip in ``results``.
    """
    t, a, b, c = (results[k] for k in ("teacher", "finetune", "distill", "kiclip"))
    items = [
        ("Base(a) > Base(teacher): fine-tuning learns the base classes",
         a["base"] > t["base"], f"{a['base']:.1f} vs {t['base']:.1f}"),
        ("Novel(a) < Novel(teacher) − 4: plain fine-tuning forgets",
         a["novel"] < t["novel"] - 4, f"{a['novel']:.1f} vs {t['novel'] - 4:.1f}"),
        ("Novel(b) ≥ Novel(teacher) − 2: distillation keeps novel",
         b["novel"] >= t["novel"] - 2, f"{b['novel']:.1f} vs {t['novel'] - 2:.1f}"),
        ("Novel(c) ≥ Novel(teacher) − 2: KICLIP keeps novel",
         c["novel"] >= t["novel"] - 2, f"{c['novel']:.1f} vs {t['novel'] - 2:.1f}"),
        ("HM(b) > HM(a) + 3", b["hm"] > a["hm"] + 3, f"{b['hm']:.1f} vs {a['hm'] + 3:.1f}"),
        ("HM(c) > HM(a) + 3", c["hm"] > a["hm"] + 3, f"{c['hm']:.1f} vs {a['hm'] + 3:.1f}"),
    ]
    return [{"claim": text, "holds": bool(ok), "values": values} for text, ok, values in items]


def science_json(results: Mapping[str, Mapping], settings: Mapping) -> dict:
    """science.json's shape: {"teacher": {...}, "finetune": {...}, "distill": {...},
    "kiclip": {...}, "settings": {...}}, each method {"base", "novel", "hm", "*_std", "n", "runs"}."""
    out = {m: dict(results[m]) for m in ("teacher", "finetune", "distill", "kiclip") if m in results}
    out["settings"] = dict(settings)
    return out


def _cell(summary: Mapping, metric: str) -> str:
    std = summary.get(f"{metric}_std", 0.0)
    return f"{summary[metric]:.1f} ± {std:.1f}" if summary.get("n", 1) > 1 else f"{summary[metric]:.1f}"


def _table(results: Mapping[str, Mapping], labels: Mapping[str, str]) -> str:
    lines = ["| method | Base | Novel | HM | runs |", "|---|---|---|---|---|"]
    for key, summary in results.items():
        lines.append(f"| {labels.get(key, key)} | {_cell(summary, 'base')} | "
                     f"{_cell(summary, 'novel')} | {_cell(summary, 'hm')} | {summary.get('n', 1)} |")
    return "\n".join(lines)


def paired_difference(x: Mapping, y: Mapping, metric: str, test_videos: int | None = None
                ) -> tuple[float, float]:
    """Mean of per-seed differences x − y and its standard error: paired over seeds when there
    are 2 or more, else the binomial test-set error of a difference of two accuracies (p = 0.5,
    ``test_videos`` / 2 per label space), the only noise estimate one seed has."""
    xs = {r.get("seed"): r[metric] for r in x["runs"]}
    ys = {r.get("seed"): r[metric] for r in y["runs"]}
    common = [s for s in xs if s in ys]
    if len(common) >= 2:
        diffs = [xs[s] - ys[s] for s in common]
        return statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    per_space = (test_videos or 960 * 2) / 2
    return x[metric] - y[metric], math.sqrt(2 * 0.25 / per_space) * 100


def interpret(results: Mapping[str, Mapping], test_videos: int | None = None) -> list[str]:
    """Plain-words reading of the main table (a list of sentences/bullets)."""
    t, a, b, c = (results[k] for k in ("teacher", "finetune", "distill", "kiclip"))
    lines = [
        f"- **Fine-tuning alone** moves Base from {t['base']:.1f} to {a['base']:.1f} and Novel "
        f"from {t['novel']:.1f} to {a['novel']:.1f}: "
        + ("it learns the base classes and loses part of what the teacher knew about the novel "
           "ones (which classes lose: the per-class figures in evaluate.py's results.json)."
           if a["base"] > t["base"] and a["novel"] < t["novel"] else
           "the expected trade (Base up, Novel down) is not fully there in these numbers."),
        f"- **Distillation (FROSTER)** gives Base {b['base']:.1f}, Novel {b['novel']:.1f}: "
        + ("it keeps Novel near the teacher " if b["novel"] >= t["novel"] - 2 else
           "it loses some of the teacher's Novel accuracy ")
        + f"and its HM is {b['hm'] - a['hm']:+.1f} points from plain fine-tuning.",
    ]
    diff, se = paired_difference(c, b, "hm", test_videos)
    verdict = ("KI beats distillation alone by more than twice the standard error"
               if diff > 2 * se else
               "KI is worse than distillation alone by more than twice the standard error"
               if diff < -2 * se else
               "the difference is within about two standard errors: KI and distillation alone "
               "cannot be told apart at this test-set size and number of seeds")
    db, _ = paired_difference(c, b, "base")
    dn, _ = paired_difference(c, b, "novel")
    lines.append(
        f"- **Knowledge injection on top (KICLIP)**: HM {c['hm']:.1f} vs {b['hm']:.1f} "
        f"(difference {diff:+.1f} ± {se:.1f} s.e."
        + (", one seed: test-set error only" if min(b["n"], c["n"]) < 2 else ", paired over seeds")
        + f"; Base {db:+.1f}, Novel {dn:+.1f}) — "
        f"{verdict}.")
    if test_videos:
        se_one = 100 * math.sqrt(0.25 / (test_videos / 2))
        lines.append(f"- One accuracy on {test_videos // 2} test videos per label space has a "
                     f"standard error of at most {se_one:.1f} points (binomial, p = 0.5).")
    return lines


def render_markdown(results: Mapping[str, Mapping], settings: Mapping, *,
                    claims: Sequence[Mapping] = (), mix: Mapping[str, Mapping] | None = None,
                    chart: str | None = None, provenance: Sequence[str] = (),
                    preamble: str = "") -> str:
    """docs/science.md: what was run, the table, the claims, the reading, the mix study."""
    parts = [preamble.rstrip() + "\n"] if preamble else []
    parts.append("## Results\n")
    parts += [f"{line}" for line in provenance]
    parts.append("")
    parts.append(_table(results, METHODS))
    parts.append("\nAccuracies are top-1 % (Base in the 24-class base label space, Novel in the "
                 "24-class novel one); mean ± sample std over the seeds; HM is computed per seed "
                 "then averaged.\n")
    if chart:
        parts.append(f"![Base / Novel / HM per method]({chart})\n")
    if claims:
        parts.append("### Issue 6's checks (means over seeds)\n")
        parts.append("| claim | holds | values |\n|---|---|---|")
        for item in claims:
            parts.append(f"| {item['claim']} | {'yes' if item['holds'] else '**no**'} | {item['values']} |")
        parts.append("")
    if all(k in results for k in ("teacher", "finetune", "distill", "kiclip")):
        parts.append("### What the table says\n")
        parts += interpret(results, settings.get("test_videos"))
        parts.append("")
    if mix:
        parts.append("### Injection mix study\n")
        parts.append("KICLIP (distillation + KI) with the student-stream weight `mix` in "
                     "`h = mix·h + (1−mix)·f` (0.5 is the paper's; 1.0 injects nothing, which "
                     "is the distillation-only arm (b)); same seeds, splits and schedule as above.\n")
        parts.append(_table(mix, {k: f"mix = {k}" + (" (= (b))" if float(k) == 1.0 else "")
                                  for k in mix}))
        parts.append("")
        parts += _mix_reading(mix)
        parts.append("")
    parts.append("### Settings\n")
    parts.append("```json\n" + json.dumps(settings, indent=1, sort_keys=True) + "\n```\n")
    return "\n".join(parts)


def _mix_reading(mix: Mapping[str, Mapping]) -> list[str]:
    keys = list(mix)
    if len(keys) < 2:
        return []
    best = max(keys, key=lambda k: mix[k]["hm"])
    worst = min(keys, key=lambda k: mix[k]["hm"])
    spread = mix[best]["hm"] - mix[worst]["hm"]
    noise = max(max(mix[k]["hm_std"] for k in keys), 1e-9)
    if mix[best].get("n", 1) < 2:
        verdict = "from a single seed, which cannot be told from noise"
    elif spread > 2 * noise:
        verdict = f"larger than twice the largest seed std ({noise:.1f}): the mix matters here"
    else:
        verdict = f"within twice the largest seed std ({noise:.1f}): no clear effect of the mix"
    return [(f"Best HM at mix = {best} ({mix[best]['hm']:.1f}), worst at mix = {worst} "
             f"({mix[worst]['hm']:.1f}); a spread of {spread:.1f} points, {verdict}. "
             "Higher mix means less of the frozen stream is injected (1.0 = no injection).")]


def write_chart(results: Mapping[str, Mapping], path: str | Path,
                mix: Mapping[str, Mapping] | None = None,
                chance: Mapping[str, float] | None = None,
                labels: Mapping[str, str] | None = None) -> Path:
    """Grouped bars (Base, Novel, HM) per method with std error bars; PNG at ``path``.

    ``chance`` ({"base": %, "novel": %}) draws the uniform-guess level as a dashed line and
    starts the axis at 0, so the bars read against it; ``labels`` renames the groups.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = dict(results)
    for k, v in (mix or {}).items():
        groups[f"mix {k}"] = v
    names = list(groups)
    short = {"teacher": "teacher\nzero-shot", "finetune": "(a) fine-tune",
             "distill": "(b) +distill", "kiclip": "(c) KICLIP"}
    short.update(labels or {})
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(names)), 3.6), dpi=120)
    width = 0.26
    for j, metric in enumerate(METRICS):
        xs = [i + (j - 1) * width for i in range(len(names))]
        ys = [groups[n][metric] for n in names]
        errs = [groups[n].get(f"{metric}_std", 0.0) for n in names]
        ax.bar(xs, ys, width, yerr=errs if any(errs) else None, capsize=2,
               label=metric.capitalize() if metric != "hm" else "HM")
    ax.set_xticks(range(len(names)), [short.get(n, n) for n in names], fontsize=8)
    ax.set_ylabel("top-1 %")
    low = min(groups[n][m] for n in names for m in METRICS)
    ax.set_ylim(0.0 if chance else max(0.0, low - 15), 100)
    if chance:
        level = max(chance.values())
        ax.axhline(level, color="grey", linestyle="--", linewidth=1, label=f"chance {level:.1f}%")
    ax.legend(ncol=4 if chance else 3, fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (folders made as needed), close it; the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(output: str | Path, doc: str | Path, results: Mapping[str, Mapping],
                 settings: Mapping, *, mix: Mapping[str, Mapping] | None = None,
                 provenance: Sequence[str] = (), preamble: str = "",
                 chart_name: str = "science_b2n.png") -> dict[str, Path]:
    """Write OUTPUT/science.json (+ OUTPUT/science_mix.json), DOC and the chart beside DOC."""
    output, doc = Path(output), Path(doc)
    output.mkdir(parents=True, exist_ok=True)
    doc.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": output / "science.json", "doc": doc, "chart": doc.parent / chart_name}
    paths["json"].write_text(json.dumps(science_json(results, settings), indent=2) + "\n")
    if mix:
        paths["mix_json"] = output / "science_mix.json"
        paths["mix_json"].write_text(json.dumps(dict(mix), indent=2) + "\n")
    write_chart(results, paths["chart"], mix)
    have_all = all(k in results for k in ("teacher", "finetune", "distill", "kiclip"))
    claims = check_claims(results) if have_all else []
    text = render_markdown(results, settings, claims=claims, mix=mix, chart=chart_name,
                           provenance=provenance, preamble=preamble)
    # Hand-written notes below the marker survive a rerun; everything above is regenerated.
    old = doc.read_text() if doc.is_file() else ""
    if NOTES_MARKER in old:
        text = text.rstrip() + "\n\n" + old[old.index(NOTES_MARKER):]
    doc.write_text(text)
    return paths
