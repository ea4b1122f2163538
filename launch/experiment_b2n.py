#!/usr/bin/env python
"""The science check: does distillation (and knowledge injection) stop forgetting?

Examples:
  python launch/experiment_b2n.py --synthetic                          # 3 seeds + mix study
  python launch/experiment_b2n.py --synthetic --seeds 0 --no-mix-study --epochs 2   # a quick look
  python launch/experiment_b2n.py --synthetic --seeds 0 --methods finetune   # one arm, one seed
  python launch/experiment_b2n.py --synthetic --lr-sweep 3e-4,7e-4,1e-3,2e-3   # where KI helps

Runs the product's own commands as subprocesses, in the order the data flows:
make_synthetic (48-class world with motion trails) → make_splits (parity rule, 16 shots per
base class, one few-shot draw per seed) → make_shards → train.py → average_weights.py →
evaluate.py, for the frozen teacher (zero-shot), (a) plain fine-tuning (--no-distill
--no-injection), (b) FROSTER (--no-injection) and (c) KICLIP (default), then the injection-mix
study: KICLIP with --mix 0.75, beside 0.5 (the kiclip arm) and 1.0 (nothing injected: the distill
arm). All runs start from the pre-trained tiny teacher
(launch/pretrain_teacher.py; trained first if --teacher does not exist). Writes
OUTPUT/science.json, OUTPUT/science_mix.json, docs/science.md and its bar chart.
--lr-sweep instead trains every method and seed at each lr (4 epochs and 20 test videos per
class unless --epochs / --test-per-class say otherwise) and writes OUTPUT/science_lr_sweep.json,
docs/science_lr_sweep.png and the sweep's own section of docs/science.md, in place.

Seed i of --seeds trains on few-shot split i+1 (make_splits draws split k with seed k) with
--seed set to the seed value (init of the projectors, data order, augmentation, templates).
Every subprocess runs single-threaded (OMP_NUM_THREADS=1, one loader worker), so a rerun of a
seed gives the same numbers; --jobs runs that many subprocesses side by side. Steps whose
output is complete are reused (the data, shards and teacher always; a training run when its
averaged.pt exists and its settings did not change), so a rerun only does what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from shard_tools.synthetic_world import (
    SCIENCE_OBJECT_RADIUS,
    format_radius_range,
)

log = logging.getLogger("kiclip.experiment_b2n")

ROOT = Path(__file__).resolve().parents[1]  # the product's commands run from the checkout

TEACHERS = {"synthetic": "cache/teacher/kiclip-tiny.pt", "science": "cache/teacher/kiclip-tiny-48.pt"}
METHOD_FLAGS = {
    "finetune": ["--no-distill", "--no-injection"],
    "distill": ["--no-injection"],
    "kiclip": [],
}


@dataclass
class ExperimentSettings:
    """Everything that decides the numbers (written into science.json's settings)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: ["finetune", "distill", "kiclip"])
    # Besides 0.5 (kiclip) and 1.0 (no injection at all: the distill arm, reused): 0.75.
    mix_values: list[float] = field(default_factory=lambda: [0.75])
    # The world (make_synthetic): trails so one frame shows the motion, as the teacher saw.
    clips_per_class: int = 24      # training pool per class; 16 shots are drawn from it
    test_per_class: int = 40       # → 960 base + 960 novel test videos
    size: int = 48
    frames: int = 24
    trails: bool = True
    object_radius: tuple[float, float] = SCIENCE_OBJECT_RADIUS  # as the teacher's frames
    data_seed: int = 0
    shots: int = 16
    # Training (train.py on the `synthetic` preset: kiclip-tiny, 8 frames at stride 2, 32 px).
    # 8 epochs at 7e-4: fine-tuning clearly beats the teacher on base and forgets on novel; at
    # 3e-4 it gains on both, at 1e-3 it overfits and loses on both (docs/science.md).
    epochs: int = 8
    lr: float = 7e-4
    batch_size: int = 8
    warmup_epochs: float = 0.5
    views: int = 1                 # temporal views at test time
    preset: str = "synthetic"      # train.py/evaluate.py --b2n preset (science = 48 px)
    teacher: str = "cache/teacher/kiclip-tiny.pt"

    def train_key(self) -> str:
        blob = {k: getattr(self, k) for k in ("epochs", "lr", "batch_size", "warmup_epochs", "preset",
                                              "clips_per_class", "size", "frames", "trails",
                                              "object_radius", "data_seed", "shots", "test_per_class")}
        blob["teacher"] = _file_digest(Path(self.teacher))
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"


class Runner:
    """Runs the product's commands as single-threaded subprocesses, logging each to a file and
    adding up their CPU time (``cpu_s``; ``reused_cpu_s`` for training runs reused from disk),
    the cost of the experiment on an otherwise idle machine."""

    def __init__(self, work: Path, python: str = sys.executable):
        self.work = work
        self.python = python
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "PYTHONHASHSEED": "0", "TOKENIZERS_PARALLELISM": "false"}
        self.env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + ([self.env["PYTHONPATH"]] if self.env.get("PYTHONPATH") else []))
        self.cpu_s = 0.0
        self.reused_cpu_s = 0.0
        self.reused_unmeasured = 0     # reused runs with no recorded CPU time
        self._lock = threading.Lock()

    def __call__(self, name: str, script: str, *args: str) -> float:
        """Run one script to completion; returns its CPU seconds (its own and its children's)."""
        command = [self.python, str(ROOT / script), *map(str, args)]
        started = time.perf_counter()
        with open(self.logs / f"{name}.log", "w") as out:
            out.write(" ".join(command) + "\n")
            out.flush()
            proc = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out,
                                    stderr=subprocess.STDOUT)
            # wait4 rather than wait: it also returns the process's resource usage
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
        with self._lock:
            self.cpu_s += cpu
        if proc.returncode != 0:
            tail = (self.logs / f"{name}.log").read_text().splitlines()[-15:]
            raise RuntimeError(f"{name} failed (exit {proc.returncode}); last lines of "
                               f"{self.logs / name}.log:\n" + "\n".join(tail))
        log.info("%-28s %6.1f s wall %6.1f s CPU", name, time.perf_counter() - started, cpu)
        return cpu

    def add_reused(self, cpu: float | None) -> None:
        with self._lock:
            if cpu is None:
                self.reused_unmeasured += 1
            else:
                self.reused_cpu_s += cpu


def prepare_data(s: ExperimentSettings, work: Path, run: Runner) -> Path:
    """Synthetic videos → splits → shards; returns the shard root (reused when complete)."""
    data, splits, shards = work / "synthetic", work / "splits", work / "shards"
    world = data / "world.json"
    want = {"seed": s.data_seed, "clips_per_class": s.clips_per_class,
            "val_per_class": s.test_per_class, "size": s.size, "frames": s.frames,
            "trails": s.trails, "object_radius": list(s.object_radius)}
    have = json.loads(world.read_text())["settings"] if world.is_file() else {}
    regenerated = any(have.get(k) != v for k, v in want.items())
    if regenerated:
        args = ["--out", data, "--seed", s.data_seed, "--clips-per-class", s.clips_per_class,
                "--val-per-class", s.test_per_class, "--size", s.size, "--frames", s.frames,
                "--object-radius", format_radius_range(s.object_radius),
                "--workers", 1, "--no-progress"] + (["--trails"] if s.trails else [])
        run("make_synthetic", "shard_tools/make_synthetic.py", *args)
    n_splits = len(s.seeds)
    run("make_splits", "shard_tools/make_splits.py", "--dataset", "synthetic", "--synthetic-dir",
        data, "--out", splits, "--shots", s.shots, "--splits", n_splits, "--seed", 0)
    jobs = [(f"train_split{k}", splits / f"split{k}" / "train.csv", "base_classes.json")
            for k in range(1, n_splits + 1)]
    jobs += [("base_test", splits / "base_test.csv", "base_classes.json"),
             ("novel_test", splits / "novel_test.csv", "novel_classes.json")]
    for name, listing, classes in jobs:
        # make_shards leaves a finished output with the same inputs untouched; new videos
        # (other world settings) need --overwrite.
        run(f"make_shards_{name}", "shard_tools/make_shards.py", "--list", listing,
            "--video-root", data, "--classes", splits / classes, "--out", shards / name,
            "--samples-per-shard", 256, "--workers", 1, "--no-progress",
            *(["--overwrite"] if regenerated else []))
    return shards


def train_and_average(s: ExperimentSettings, shards: Path, work: Path, run: Runner,
                      method: str, seed_index: int, mix: float | None = None,
                      lr_in_name: bool = False) -> Path:
    """One train.py run + average_weights.py; returns averaged.pt (reused when up to date).

    lr_in_name: the run folder names s.lr (the lr sweep keeps one folder per lr)."""
    seed = s.seeds[seed_index]
    tag = (f"{method}_seed{seed}" + (f"_mix{mix}" if mix is not None else "")
           + (f"_lr{s.lr:g}" if lr_in_name else ""))
    run_dir = work / "runs" / tag
    averaged = run_dir / "averaged.pt"
    stamp = run_dir / "experiment_key.txt"
    key = s.train_key()
    cost = run_dir / "cpu_seconds.txt"
    if averaged.is_file() and stamp.is_file() and stamp.read_text() == key:
        log.info("%-28s reused", tag)
        run.add_reused(float(cost.read_text()) if cost.is_file() else None)
        return averaged
    flags = list(METHOD_FLAGS[method]) + (["--mix", mix] if mix is not None else [])
    cpu = run(f"train_{tag}", "launch/train.py", "--b2n", s.preset, "--data", shards,
              "--split", seed_index + 1, "--seed", seed, "--pretrained", ROOT / s.teacher,
              "--output", run_dir, "--epochs", s.epochs, "--lr", s.lr, "--batch-size", s.batch_size,
              "--workers", 1, "--no-resume", "--set", "run.eval_at_end=false",
              "--set", f"optim.warmup_epochs={s.warmup_epochs}", "--set", "run.log_every=1000",
              # a horizontal flip turns "moving left" into "moving right": off for this world
              "--set", "data.flip=false", *flags)
    cpu += run(f"average_{tag}", "launch/average_weights.py", run_dir)
    cost.write_text(f"{cpu:.1f}")
    stamp.write_text(key)
    return averaged


def evaluate(s: ExperimentSettings, shards: Path, work: Path, run: Runner, name: str,
             checkpoints: list[Path] | None, seeds: list[int] | None = None) -> list[dict]:
    """evaluate.py on the checkpoints (or the frozen teacher); per-run {"seed","base","novel"},
    checkpoint i labelled with seeds[i] (default s.seeds)."""
    out = work / "eval" / name
    source = (["--checkpoint", *checkpoints] if checkpoints else
              ["--frozen-clip", "--pretrained", ROOT / s.teacher, "--model", "kiclip-tiny"])
    run(f"evaluate_{name}", "launch/evaluate.py", "--b2n", s.preset, "--data", shards,
        *source, "--views", s.views, "--output", out)
    runs = json.loads((out / "results.json").read_text())["runs"]
    seeds = (seeds or s.seeds) if checkpoints else [None]
    return [{"seed": seed, "base": r["base"], "novel": r["novel"]} for seed, r in zip(seeds, runs)]


def run_experiment(s: ExperimentSettings, work: Path, jobs: int = 2, mix_study: bool = True) -> dict:
    """Everything after the teacher; returns {"main": per-method runs, "mix": ..., "wall": ...}."""
    started = time.perf_counter()
    run = Runner(work)
    shards = prepare_data(s, work, run)
    wall = {"data_s": time.perf_counter() - started}

    tasks = [(m, i, None) for m in s.methods for i in range(len(s.seeds))]
    if mix_study:
        tasks += [("kiclip", i, mix) for mix in s.mix_values for i in range(len(s.seeds))]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        teacher_future = pool.submit(evaluate, s, shards, work, run, "teacher", None)
        futures = {task: pool.submit(train_and_average, s, shards, work, run, *task) for task in tasks}
        checkpoints = {task: f.result() for task, f in futures.items()}
        wall["train_s"] = time.perf_counter() - t0
        groups = {m: [checkpoints[(m, i, None)] for i in range(len(s.seeds))] for m in s.methods}
        if mix_study:
            groups.update({f"mix{mix}": [checkpoints[("kiclip", i, mix)] for i in range(len(s.seeds))]
                           for mix in s.mix_values})
        evals = {name: pool.submit(evaluate, s, shards, work, run, name, ckpts)
                 for name, ckpts in groups.items()}
        results = {"teacher": teacher_future.result()}
        results.update({name: f.result() for name, f in evals.items()})
    wall["train_and_eval_s"] = time.perf_counter() - t0
    wall["total_s"] = time.perf_counter() - started
    main = {k: v for k, v in results.items() if not k.startswith("mix")}
    mix = {}
    if mix_study:
        mix = {"0.5": results["kiclip"]} if "kiclip" in results else {}
        mix.update({str(v): results[f"mix{v}"] for v in s.mix_values})
        if "distill" in results:  # mix = 1.0 injects nothing: exactly the distill arm
            mix["1.0"] = results["distill"]
        mix = dict(sorted(mix.items(), key=lambda item: float(item[0])))
    return {"main": main, "mix": mix, "wall": wall}


def run_lr_sweep(s: ExperimentSettings, lrs: list[float], work: Path, jobs: int = 2) -> dict:
    """Every method × seed of ``s`` at each lr, plus the teacher zero-shot; returns
    {"teacher": runs, "by_lr": {lr: {method: per-seed runs}}, "wall": {...}}.

    Trainings are queued lr by lr in the order given, so a run cut short leaves whole lrs,
    which a rerun reuses; evaluation starts when every training is done, one evaluate.py per
    lr for all its checkpoints (a process start-up costs as much as a few hundred videos).
    """
    started = time.perf_counter()
    run = Runner(work)
    shards = prepare_data(s, work, run)
    wall = {"data_s": time.perf_counter() - started}
    at = {lr: replace(s, lr=lr) for lr in lrs}
    seeds = range(len(s.seeds))
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        teacher = pool.submit(evaluate, s, shards, work, run, "teacher", None)
        trained = {(lr, m, i): pool.submit(train_and_average, at[lr], shards, work, run, m, i,
                                           None, True)
                   for lr in lrs for m in s.methods for i in seeds}
        checkpoints = {task: future.result() for task, future in trained.items()}
        wall["train_s"] = time.perf_counter() - t0
        evals = {lr: pool.submit(evaluate, at[lr], shards, work, run, f"lr{lr:g}",
                                 [checkpoints[(lr, m, i)] for m in s.methods for i in seeds],
                                 s.seeds * len(s.methods))
                 for lr in lrs}
        n = len(s.seeds)
        by_lr = {lr: {m: evals[lr].result()[k * n:(k + 1) * n] for k, m in enumerate(s.methods)}
                 for lr in lrs}
        teacher_runs = teacher.result()
    wall["train_and_eval_s"] = time.perf_counter() - t0
    wall["total_s"] = time.perf_counter() - started
    wall["subprocess_cpu_s"] = run.cpu_s
    wall["reused_cpu_s"] = run.reused_cpu_s
    wall["reused_runs_without_cpu_record"] = run.reused_unmeasured
    return {"teacher": teacher_runs, "by_lr": by_lr, "wall": wall}


PREAMBLE = """# Science check: forgetting, distillation and knowledge injection

**What is tested.** A tiny CLIP (`kiclip-tiny`) is pre-trained contrastively on single frames
of a synthetic world (`launch/pretrain_teacher.py`: 4 colours × 3 shapes × 4 motion
directions, web-like captions with attributes dropped at random). It is the teacher and the
initialisation of every run. The world's base/novel split hides a shortcut: a colour–shape
pair is *base* when (colour index + shape index) is even, so in base some colours only ever
come with one shape, which is false for the novel classes. Fine-tuning on 16 videos per base
class can exploit the shortcut and forget what the teacher knew about the novel combinations;
FROSTER's distillation and KICLIP's knowledge injection claim to prevent that.

**How.** `python launch/experiment_b2n.py --synthetic` runs the product's own commands
(make_synthetic → make_splits → make_shards → train.py → average_weights.py → evaluate.py)
for the frozen teacher (zero-shot, `evaluate.py --frozen-clip`), (a) fine-tuning
`--no-distill --no-injection`, (b) FROSTER `--no-injection` and (c) KICLIP (default), one
few-shot split and one init seed per seed, then the same KICLIP with other injection mixes.
"""


# The lr sweep trains 4 lrs × 3 methods × 3 seeds: shorter runs and a smaller test set keep it
# within half an hour on 2 cores.
SWEEP_EPOCHS = 4
SWEEP_TEST_PER_CLASS = 20


def _learning_rates(text: str) -> list[float]:
    try:
        lrs = list(dict.fromkeys(float(x) for x in text.split(",") if x.strip()))
    except ValueError:
        lrs = []
    if not lrs or any(not 0 < lr < 1 for lr in lrs):
        raise argparse.ArgumentTypeError(f"expected comma-separated learning rates in (0, 1), e.g. "
                                         f"3e-4,7e-4,1e-3; got {text!r}")
    return lrs


def build_parser() -> argparse.ArgumentParser:
    d = ExperimentSettings()
    parser = argparse.ArgumentParser(
        prog="experiment_b2n.py", description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--synthetic", action="store_true", required=True,
                        help="run on the synthetic 48-class world (the only world so far)")
    parser.add_argument("--seeds", default=",".join(map(str, d.seeds)),
                        help="comma-separated seeds, at most 3 (default 0,1,2)")
    parser.add_argument("--methods", default=",".join(d.methods),
                        help="subset of finetune,distill,kiclip (default: all)")
    parser.add_argument("--output", default="results", help="folder for science.json (default results/)")
    parser.add_argument("--doc", default="docs/science.md",
                        help="markdown report (the chart goes beside it; default docs/science.md)")
    parser.add_argument("--work", help="data, shards, runs and logs (default runs/science; "
                        "runs/science_lr with --lr-sweep)")
    parser.add_argument("--teacher", help="pre-trained tiny CLIP (default cache/teacher/kiclip-tiny.pt, "
                        "-48.pt for --preset science); trained with pretrain_teacher.py if missing")
    parser.add_argument("--preset", choices=("synthetic", "science"), default=d.preset,
                        help="train/evaluate preset: synthetic (32 px) or science (48 px); the "
                        "teacher must be pre-trained at the same size")
    parser.add_argument("--epochs", type=int,
                        help=f"training epochs (default {d.epochs}; {SWEEP_EPOCHS} with --lr-sweep)")
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--lr-sweep", metavar="LR,LR,...", type=_learning_rates,
                        help="instead of the main table and the mix study: every method and seed at "
                        "each of these peak lrs (e.g. 3e-4,7e-4,1e-3,2e-3; trained in this order); writes "
                        "OUTPUT/science_lr_sweep.json, the chart science_lr_sweep.png beside --doc "
                        "and the sweep's section of --doc (the rest of the file is kept)")
    parser.add_argument("--views", type=int, default=d.views, help="temporal views at test time")
    parser.add_argument("--test-per-class", type=int,
                        help=f"test videos per class (default {d.test_per_class}: s.e. of one accuracy "
                        f"≤ 1.6 points; {SWEEP_TEST_PER_CLASS} with --lr-sweep: ≤ 2.3)")
    parser.add_argument("--mix", default=",".join(map(str, d.mix_values)),
                        help="injection mixes studied besides 0.5 (kiclip) and 1.0 (the distill arm, "
                        "which injects nothing); default 0.75")
    parser.add_argument("--no-mix-study", action="store_true", help="skip the injection-mix study")
    parser.add_argument("--jobs", type=int, default=2, help="subprocesses side by side (default 2)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    methods = [m for m in args.methods.split(",") if m.strip()]
    if not 1 <= len(seeds) <= 3 or len(set(seeds)) != len(seeds):
        print("experiment_b2n.py: error: --seeds takes 1 to 3 distinct seeds (train.py has splits "
              "1..3)", file=sys.stderr)
        return 2
    if unknown := set(methods) - set(METHOD_FLAGS):
        print(f"experiment_b2n.py: error: unknown --methods {sorted(unknown)}", file=sys.stderr)
        return 2
    sweep = args.lr_sweep
    mix_study = not args.no_mix_study and "kiclip" in methods and not sweep
    settings = _settings_from_args(args, seeds, methods, mix_study)
    started = time.perf_counter()
    work = _under_root(args.work or ("runs/science_lr" if sweep else "runs/science"))
    _ensure_teacher(settings, work)
    teacher_s = time.perf_counter() - started

    if sweep:
        return _lr_sweep_main(args, argv, settings, work, teacher_s, started)
    outcome = run_experiment(settings, work, jobs=args.jobs, mix_study=mix_study)
    return _report_main(args, argv, settings, outcome, teacher_s, started)


def _settings_from_args(args, seeds: list[int], methods: list[str],
                        mix_study: bool) -> ExperimentSettings:
    """The settings the command line asks for; --lr-sweep has its own epoch and test-set
    defaults."""
    sweep = args.lr_sweep
    d = ExperimentSettings()
    return ExperimentSettings(
        seeds=seeds, methods=methods, preset=args.preset, lr=args.lr, views=args.views,
        epochs=args.epochs or (SWEEP_EPOCHS if sweep else d.epochs),
        test_per_class=args.test_per_class or (SWEEP_TEST_PER_CLASS if sweep else d.test_per_class),
        teacher=args.teacher or TEACHERS[args.preset],
        # 0.5 is the kiclip arm and 1.0 (nothing injected) the distill arm: not trained twice.
        mix_values=[v for v in (float(x) for x in args.mix.split(",") if x.strip())
                    if v not in (0.5, 1.0)] if mix_study else [])


def _ensure_teacher(settings: ExperimentSettings, work: Path) -> None:
    """Pre-train the teacher with pretrain_teacher.py when settings.teacher does not exist, on
    this experiment's world and at its preset's image size."""
    teacher_path = ROOT / settings.teacher
    if teacher_path.is_file():
        return
    log.info("no teacher at %s: pre-training it first (about 2 CPU minutes)", teacher_path)
    from kiclip.config import B2N_PRESETS

    Runner(work)("pretrain_teacher", "launch/pretrain_teacher.py", "--synthetic",
                 "--out", teacher_path, "--no-progress",
                 "--object-radius", format_radius_range(settings.object_radius), "--image-size",
                 B2N_PRESETS[settings.preset]["data.image_size"])


def _report_main(args, argv, settings: ExperimentSettings, outcome: dict, teacher_s: float,
                 started: float) -> int:
    """The main table and mix study: write science.json and the doc, print the table."""
    from kiclip.science import aggregate, write_report

    results = aggregate(outcome["main"])
    mix = aggregate(outcome["mix"]) if outcome["mix"] else None
    wall = {**outcome["wall"], "teacher_s": teacher_s, "all_s": time.perf_counter() - started}
    record = _run_record(args, argv, settings, wall)
    teacher_note = "cached" if teacher_s < 5 else f"trained, {teacher_s / 60:.1f} min"
    provenance = [(f"Numbers below: `{record['command']}`, {wall['all_s'] / 60:.1f} min wall "
                   f"(teacher {teacher_note}), {os.cpu_count()} CPU cores, {args.jobs} "
                   "subprocesses side by side, one thread each.")]
    paths = write_report(ROOT / args.output if not Path(args.output).is_absolute() else args.output,
                         ROOT / args.doc if not Path(args.doc).is_absolute() else args.doc,
                         results, record, mix=mix, provenance=provenance, preamble=PREAMBLE)
    _print_results(results, mix)
    print(f"wrote {paths['json']} and {paths['doc']} in {wall['all_s'] / 60:.1f} min")
    return 0


def _run_record(args, argv, settings: ExperimentSettings, wall: dict) -> dict:
    """science.json's settings: the experiment's, its cost, the teacher and the command."""
    teacher_path = ROOT / settings.teacher
    record = {**asdict(settings), "test_videos": 48 * settings.test_per_class,
              "train_videos": 24 * settings.shots, "wall_s": wall, "jobs": args.jobs,
              "threads_per_process": 1, "teacher_sha256": _file_digest(teacher_path),
              "train_flip": False, "preset": _preset_description(settings.preset),
              "command": " ".join(["python", "launch/experiment_b2n.py", *(argv or sys.argv[1:])])}
    teacher_record = teacher_path.with_suffix(teacher_path.suffix + ".json")
    if teacher_record.is_file():
        t = json.loads(teacher_record.read_text())
        record["teacher_pretraining"] = {"steps": t["training"]["steps"],
                                         "zero_shot_heldout_frames": t["zero_shot"]["all"],
                                         "wall_s": t["wall_s"]}
    return record


def _print_results(results: dict, mix: dict | None) -> None:
    """Base / Novel / HM per method (mean ± std over seeds), per mix, and the claims' verdicts."""
    from kiclip.science import check_claims

    for key, summary in results.items():
        print(f"{key:9s} Base {summary['base']:5.1f} ± {summary['base_std']:.1f}  "
              f"Novel {summary['novel']:5.1f} ± {summary['novel_std']:.1f}  "
              f"HM {summary['hm']:5.1f} ± {summary['hm_std']:.1f}")
    for key, summary in (mix or {}).items():
        print(f"mix {key:5s} Base {summary['base']:5.1f}  Novel {summary['novel']:5.1f}  HM {summary['hm']:5.1f}")
    if all(k in results for k in ("teacher", "finetune", "distill", "kiclip")):
        for item in check_claims(results):
            print(f"[{'ok' if item['holds'] else 'NO'}] {item['claim']}  ({item['values']})")


def _preset_description(name: str) -> str:
    from kiclip.config import B2N_PRESETS

    p = B2N_PRESETS[name]
    return (f"{name} ({p['model.model_name']}, {p['data.num_frames']} frames at stride "
            f"{p['data.stride']}, {p['data.image_size']} px)")


def _under_root(path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else ROOT / path


def _lr_sweep_main(args, argv, settings: ExperimentSettings, work: Path, teacher_s: float,
                   started: float) -> int:
    """--lr-sweep: run it, write the json, the chart and the doc's sweep section, print the table."""
    from kiclip.science.sweep import (
        replace_section,
        summarise_sweep,
        sweep_json,
        sweep_section,
        sweep_table,
        write_sweep_chart,
    )

    load_before = os.getloadavg()
    outcome = run_lr_sweep(settings, args.lr_sweep, work, jobs=args.jobs)
    sweep = summarise_sweep(outcome["teacher"], outcome["by_lr"], 48 * settings.test_per_class)
    wall = {**outcome["wall"], "teacher_s": teacher_s, "all_s": time.perf_counter() - started}
    load = {"load_1min_at_start": load_before[0], "load_1min_at_end": os.getloadavg()[0]}
    command = " ".join(["python", "launch/experiment_b2n.py", *(argv or sys.argv[1:])])
    record = {**asdict(settings), "lrs": args.lr_sweep, "test_videos": 48 * settings.test_per_class,
              "train_videos": 24 * settings.shots, "wall_s": wall, "load": load, "jobs": args.jobs,
              "threads_per_process": 1, "teacher_sha256": _file_digest(ROOT / settings.teacher),
              "command": command}
    record.pop("lr")
    record.pop("mix_values")
    record["preset"] = _preset_description(settings.preset)
    doc = _under_root(args.doc)
    chart = doc.parent / "science_lr_sweep.png"
    write_sweep_chart(sweep, chart)
    output = _under_root(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "science_lr_sweep.json").write_text(json.dumps(sweep_json(sweep, record), indent=2) + "\n")
    provenance = _sweep_provenance(command, args, settings, wall, load)
    replace_section(doc, sweep_section(sweep, record, provenance, chart.name))
    print(sweep_table(sweep))
    print(f"wrote {output / 'science_lr_sweep.json'}, {chart} and the sweep section of {doc} "
          f"in {wall['all_s'] / 60:.1f} min")
    return 0


def _sweep_provenance(command: str, args, settings: ExperimentSettings, wall: dict,
                      load: dict) -> str:
    """The sweep section's first sentence: what ran, on what, and what its processes cost."""
    cpu = wall["subprocess_cpu_s"] + wall["reused_cpu_s"]
    cores = os.cpu_count() or 1
    provenance = (f"`{command}`: {len(args.lr_sweep)} lrs × {len(settings.methods)} methods × "
                  f"{len(settings.seeds)} seeds, {settings.epochs} epochs each, "
                  f"{settings.test_per_class} test videos per class; {wall['all_s'] / 60:.1f} min "
                  f"wall on {cores} CPU cores, {args.jobs} subprocesses side by side "
                  f"(1-min load average {load['load_1min_at_start']:.1f} at the start, "
                  f"{load['load_1min_at_end']:.1f} at the end). Its processes need "
                  f"{cpu / 60:.1f} CPU-minutes"
                  + (f" ({wall['reused_cpu_s'] / 60:.1f} of them by training runs reused from an "
                     "earlier run)" if wall["reused_cpu_s"] else "")
                  + f", so at least {cpu / 60 / cores:.1f} min on {cores} idle cores"
                  + (f"; {wall['reused_runs_without_cpu_record']} reused training runs have no CPU "
                     "record and are not counted" if wall["reused_runs_without_cpu_record"] else "")
                  + ".")
    return provenance


if __name__ == "__main__":
    sys.exit(main())
