"""Top-1 accuracy with temporal views summed per video, the B2N harmonic mean, and the
mean ± std of a metric over runs (seeds or splits)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch


def harmonic_mean(base: float, novel: float) -> float:
    """HM = 2BN / (B + N); 0 when both are 0."""
    return 0.0 if base + novel == 0 else 2.0 * base * novel / (base + novel)


def mean_and_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation with n − 1) of one metric over runs.

    A single run gives std 0.0: one run measures no spread, and 0.0 keeps every summary the
    same shape (tables and charts index ``<metric>_std`` whatever the count). A reader tells
    "one run" from "runs that agree" by the number of runs, which every summary records; shown
    to people, a single run is printed without "±". Raises ValueError for no values.
    """
    if not values:
        raise ValueError("mean and std of no values")
    floats = [float(v) for v in values]
    return statistics.fmean(floats), statistics.stdev(floats) if len(floats) > 1 else 0.0


def summarise_metrics(runs: Sequence[Mapping], metrics: Iterable[str]) -> dict:
    """{metric: mean, "<metric>_std": std, ...} over ``runs`` (each a mapping with every metric),
    in ``metrics`` order; std as ``mean_and_std`` defines it (0.0 for a single run)."""
    out: dict = {}
    for metric in metrics:
        out[metric], out[f"{metric}_std"] = mean_and_std([run[metric] for run in runs])
    return out


@torch.no_grad()
def view_summed_accuracy(batches: Iterable[dict], logits_fn: Callable[[torch.Tensor], torch.Tensor],
                         *, expected_videos: int | None = None) -> dict:
    """Sum each video's view logits, then top-1 against its label.

    ``batches`` yield the loader contract (video (B,3,T,H,W), label (B,), key list, valid (B,));
    ``logits_fn`` maps a video batch to (B, C) logits. Padded entries (valid=False) are ignored.
    Returns {"top1": percent, "videos": n, "views": n, "per_class_top1": {label: percent}}:
    the per-class figures show which classes a method gains or loses, which one mean hides.
    """
    sums: dict[str, torch.Tensor] = {}
    labels: dict[str, int] = {}
    views = 0
    for batch in batches:
        logits = logits_fn(batch["video"]).float().cpu()
        valid = batch.get("valid")
        for i, key in enumerate(batch["key"]):
            if valid is not None and not bool(valid[i]):
                continue
            sums[key] = sums[key] + logits[i] if key in sums else logits[i].clone()
            labels[key] = int(batch["label"][i])
            views += 1
    if not sums:
        raise RuntimeError("evaluation saw no videos: the test shards decoded to nothing")
    hits = {k: int(sums[k].argmax()) == labels[k] for k in sums}
    per_class: dict[int, list[int]] = {}
    for key, hit in hits.items():
        counts = per_class.setdefault(labels[key], [0, 0])
        counts[0] += hit
        counts[1] += 1
    result = {"top1": 100.0 * sum(hits.values()) / len(sums), "videos": len(sums), "views": views,
              "per_class_top1": {str(c): 100.0 * n / total for c, (n, total) in sorted(per_class.items())}}
    if expected_videos is not None:
        result["missing"] = expected_videos - len(sums)
    return result



@torch.no_grad()
def evaluate_label_space(student, tokenizer, shard_set, data_cfg, *, device: torch.device,
                         dtype: torch.dtype = torch.float32, seed: int = 0, cache=None) -> dict:
    """Top-1 of ``student`` (a VideoStudent) on one label space's test shards: ``shard_set`` a
    kiclip.data.ShardSet with its label space (kiclip.layout.read_shard_set), read as
    ``data_cfg.loader_spec("test")`` says (a kiclip.config.DataConfig).

    All 29 templates build the classifier from ``shard_set.class_texts`` (the rephrased texts
    when the class file had them); pass a ``kiclip.text.ClassifierCache`` to reuse it across
    calls while the weights do not change. Each video contributes
    ``data_cfg.num_views`` temporal views, summed.
    """
    from kiclip.data import build_loader
    from kiclip.model import video_logits
    from kiclip.text import ClassifierCache

    was_training = student.training
    student.eval()
    rephrased = shard_set.rephrased
    if cache is None or cache.rephrased != rephrased:
        cache = ClassifierCache(tokenizer, rephrased)
    classifier = cache.get(student, shard_set.class_texts)
    loader = build_loader(shard_set, data_cfg.loader_spec("test"), seed=seed, device=device.type)
    loader.set_epoch(0)

    def logits_fn(video: torch.Tensor) -> torch.Tensor:
        frames = student.encode_frames(video.to(device=device, dtype=dtype))
        return video_logits(frames, classifier, student.logit_scale)

    result = view_summed_accuracy(loader, logits_fn, expected_videos=shard_set.total)
    result["skipped"] = int(getattr(loader, "skipped", 0))
    student.train(was_training)
    return result

