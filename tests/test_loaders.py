"""The fallback loader (webdataset + PyAV) and build_loader's contract, on tiny shards."""
import json
import logging
import re
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from kiclip.data import ClipSpec, LoaderSpec, build_loader, open_shards

CLIP = {"num_frames": 4, "stride": 3, "image_size": 32, "num_views": 2}


def open_loader(shards, clip: dict, mode: str = "train", *, batch_size: int = 8,
                backend: str = "auto", num_workers: int = 2, shuffle: bool = True, **place):
    """``build_loader`` over the tars at ``shards`` read as these fields say (``clip``: ClipSpec
    fields); ``place``: seed, rank, world_size, device."""
    spec = LoaderSpec(mode=mode, clip=ClipSpec(**clip), batch_size=batch_size, backend=backend,
                      num_workers=num_workers, shuffle=shuffle)
    return build_loader(open_shards(shards), spec, **place)


def make_tiny_shards(out: Path, codec: str = "vp9", per_shard: int = 10,
                     shuffle: bool = True) -> Path:
    """48 synthetic 48×48 clips of 24 frames (one per class), packed by shard_tools (the
    CONTRACTS format); ``shuffle=False`` stores them in class order."""
    from shard_tools import make_shards, make_synthetic

    videos = out / "videos"
    assert make_synthetic.main(["--out", str(videos), "--clips-per-class", "1",
                                "--val-per-class", "0", "--size", "48", "--frames", "24",
                                "--codec", codec, "--workers", "1", "--no-progress"]) in (0, None)
    shards = out / "shards"
    assert make_shards.main(["--list", str(videos / "train.csv"), "--video-root", str(videos),
                             "--classes", str(videos / "classes.json"), "--out", str(shards),
                             "--samples-per-shard", str(per_shard), "--workers", "1",
                             "--no-progress", *([] if shuffle else ["--no-shuffle"])]) == 0
    return shards


def corrupt_one_sample(shards: Path, out: Path) -> tuple[Path, str]:
    """Copy of ``shards`` whose first sample's video bytes are overwritten with garbage."""
    shutil.copytree(shards, out)
    tar = min(out.glob("*.tar"))
    with tarfile.open(tar) as archive:
        member = next(m for m in archive if m.isreg() and not m.name.endswith(".json"))
    with open(tar, "r+b") as f:
        f.seek(member.offset_data)
        f.write(bytes(range(256)) * (member.size // 256) + b"\0" * (member.size % 256))
    return out, member.name.partition(".")[0]


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory):
    return make_tiny_shards(tmp_path_factory.mktemp("tiny"))


def epoch_rows(loader, epoch=0):
    loader.set_epoch(epoch)
    rows, steps = [], 0
    for batch in loader:
        steps += 1
        b = batch["video"].shape[0]
        assert batch["video"].shape[1:] == (3, CLIP["num_frames"], 32, 32)
        assert batch["video"].dtype == torch.float32
        assert batch["label"].shape == batch["view"].shape == batch["valid"].shape == (b,)
        assert batch["frames"].shape == (b, CLIP["num_frames"]) and len(batch["key"]) == b
        rows += [(k, int(v), bool(ok), f) for k, v, ok, f in
                 zip(batch["key"], batch["view"], batch["valid"], batch["frames"].tolist())]
    assert steps == len(loader)
    return rows


def test_contract_and_epoch_determinism(tiny_shards):
    loader = open_loader(tiny_shards, CLIP, mode="train", batch_size=5, seed=7, backend="torch",
                         num_workers=2)
    first, again = epoch_rows(loader, 3), epoch_rows(loader, 3)
    assert first == again  # same seed and epoch: same order, same frames
    assert [r[0] for r in epoch_rows(loader, 4)] != [r[0] for r in first]  # reshuffled
    assert sorted(r[0] for r in first if r[2]) == sorted(s.key for s in open_shards(tiny_shards).samples)


@pytest.mark.parametrize("mode", ["train", "test"])
def test_two_ranks_cover_every_sample_once_with_equal_counts(tiny_shards, mode):
    # 48 samples, 5 per batch, 2 ranks: 24 each → 5 steps, the last one partly padding.
    keys, steps = Counter(), []
    for rank in range(2):
        loader = open_loader(tiny_shards, CLIP, mode=mode, batch_size=5, seed=1, rank=rank,
                             world_size=2, backend="torch", num_workers=1)
        rows = epoch_rows(loader, 2)
        steps.append(len(loader))
        views = 2 if mode == "test" else 1
        assert len(rows) == len(loader) * 5 * views
        keys.update(k for k, v, ok, _ in rows if ok and v == 0)
        if mode == "test":
            assert Counter(v for _, v, ok, _ in rows if ok) == {0: 24, 1: 24}
    assert steps[0] == steps[1]
    assert set(keys.values()) == {1} and len(keys) == 48


def rank_row_counts(shards, world_size: int, **loader_args) -> list[tuple[int, int]]:
    """[(rows, valid rows) of epoch 0] for each rank of ``world_size``, built in one process."""
    counts = []
    for rank in range(world_size):
        loader = open_loader(shards, CLIP, rank=rank, world_size=world_size, **loader_args)
        rows = epoch_rows(loader, 0)
        counts.append((len(rows), sum(ok for _, _, ok, _ in rows)))
    return counts


def test_uneven_split_pads_never_wraps(tiny_shards):
    # 48 samples over 5 ranks: 10 each, 2 ranks get one padding row
    counts = rank_row_counts(tiny_shards, 5, mode="train", batch_size=4, backend="torch",
                             num_workers=0)
    assert {n for n, _ in counts} == {12}
    assert sum(valid for _, valid in counts) == 48


def test_corrupt_sample_is_skipped_and_counted(tiny_shards, tmp_path, caplog):
    shards, bad = corrupt_one_sample(tiny_shards, tmp_path / "corrupt")
    loader = open_loader(shards, CLIP, mode="train", batch_size=8, backend="torch", num_workers=1)
    with caplog.at_level(logging.WARNING):
        rows = epoch_rows(loader, 0)
    assert loader.skipped == 1
    assert bad in caplog.text
    valid = [k for k, _, ok, _ in rows if ok]
    assert bad not in valid and len(valid) == 47


def test_truncated_tar_is_reported_by_name(tiny_shards, tmp_path, caplog):
    shards = tmp_path / "truncated"
    shutil.copytree(tiny_shards, shards)
    tar = max(shards.glob("*.tar"))
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size // 2])
    with caplog.at_level(logging.ERROR):
        loader = open_loader(shards, CLIP, mode="test", batch_size=8, backend="torch",
                             num_workers=0)
    assert tar.name in caplog.text
    assert len(open_shards(shards)) < 48
    assert sum(ok for _, _, ok, _ in epoch_rows(loader)) == 2 * len(open_shards(shards))


def test_shard_set_is_opened_from_the_manifest(tiny_shards, tmp_path):
    from kiclip.config import ConfigError
    from kiclip.layout import read_shard_set

    folder = tmp_path / "with-stray"
    shutil.copytree(tiny_shards, folder)
    shutil.copy(min(folder.glob("*.tar")), folder / "stray.tar")  # not in manifest.json
    manifest = json.loads((folder / "manifest.json").read_text())
    shard_set = read_shard_set(folder)
    assert shard_set.tars == [str(folder / s["name"]) for s in manifest["shards"]]
    assert len(shard_set) == shard_set.total == manifest["total"] == 48
    assert shard_set.classes == [manifest["classes"][str(i)] for i in range(48)]
    assert shard_set.root == folder and shard_set.where == str(folder)
    assert len(open_shards(folder)) == 58  # the glob also reads the stray tar
    # The loader over the manifest's set gives the clips, in the order, of the folder's tars.
    spec = LoaderSpec(clip=ClipSpec(**CLIP), batch_size=5, backend="torch", num_workers=0)
    manifest_rows = epoch_rows(build_loader(read_shard_set(tiny_shards), spec, seed=4), 1)
    assert manifest_rows == epoch_rows(build_loader(open_shards(tiny_shards), spec, seed=4), 1)
    for tar in folder.glob("shard-*.tar"):
        tar.write_bytes(tar.read_bytes()[:100])
    with pytest.raises(ConfigError, match=f"no readable samples in {folder}"):
        read_shard_set(folder)


def test_auto_backend_picks_torch_for_h264_on_cpu(tmp_path, caplog):
    pytest.importorskip("nvidia.dali")
    shards = make_tiny_shards(tmp_path, codec="h264", per_shard=48)
    with caplog.at_level(logging.INFO, logger="kiclip.data"):
        loader = open_loader(shards, CLIP, mode="test", batch_size=48, backend="auto", device="cpu",
                             num_workers=0)
    assert type(loader).__name__ == "TorchClipLoader"
    decisions = [r.getMessage() for r in caplog.records if "loader backend" in r.getMessage()]
    assert decisions == [f"loader backend torch for {shards} (codecs h264 on cpu: "
                         "DALI CPU no h264; PyAV reads all)"]
    assert sum(ok for _, _, ok, _ in epoch_rows(loader)) == 96


def rank_shares(shards, backend: str, epochs=(0, 1), world_size: int = 2) -> dict:
    """{(rank, epoch): [(key, label) of the valid rows]}: ranks built in one process."""
    shares = {}
    for rank in range(world_size):
        loader = open_loader(shards, CLIP, mode="train", batch_size=4, seed=2, rank=rank,
                             world_size=world_size, backend=backend, device="cpu",
                             num_workers=1)
        for epoch in epochs:
            loader.set_epoch(epoch)
            shares[rank, epoch] = [(k, int(label)) for batch in loader for k, label, ok in
                                   zip(batch["key"], batch["label"], batch["valid"]) if ok]
    return shares


def class_spread_gap(shares: dict, groups: int = 4, classes: int = 48) -> float:
    """Largest total-variation distance between one rank's class histogram over all epochs
    and the global one, classes pooled into ``groups`` runs of consecutive ids (0 = same)."""
    def distribution(labels):
        counts = Counter(label * groups // classes for label in labels)
        return [counts[g] / len(labels) for g in range(groups)]

    everything = distribution([lb for rows in shares.values() for _, lb in rows])
    gaps = []
    for rank in {r for r, _ in shares}:
        mine = distribution([lb for (r, _), rows in shares.items() if r == rank for _, lb in rows])
        gaps.append(sum(abs(a - b) for a, b in zip(mine, everything)) / 2)
    return max(gaps)


@pytest.fixture(scope="session")
def class_sorted_shards(tmp_path_factory):
    """Shards in class order (as a Kinetics list gives them without make_shards' shuffle):
    each of the 5 tars holds 10 consecutive classes."""
    return make_tiny_shards(tmp_path_factory.mktemp("sorted"), shuffle=False)


def test_fallback_ranks_see_every_part_of_a_class_sorted_set(class_sorted_shards):
    shares = rank_shares(class_sorted_shards, "torch")
    # A rank holding a contiguous half would be 0.5 away; interleaving keeps it near 0.
    assert class_spread_gap(shares) <= 0.15
    for epoch in (0, 1):
        keys = [k for r in (0, 1) for k, _ in shares[r, epoch]]
        assert len(keys) == len(set(keys)) == 48


def worker_items(shard_set, mode: str, rank: int, worker: int, *, indexed: bool,
                 monkeypatch) -> list[dict]:
    """The items ClipStream yields to ``worker`` of 2 on ``rank`` of 2 in epoch 1: read by the
    sample table (``indexed``) or streamed front to back through webdataset."""
    from types import SimpleNamespace

    from kiclip.data import torch_loader

    monkeypatch.setattr(torch_loader, "get_worker_info",
                        lambda: SimpleNamespace(id=worker, num_workers=2))
    stream = torch_loader.ClipStream(
        shard_set.tars, mode=mode, spec=ClipSpec(**CLIP), seed=5, epoch=1, rank=rank,
        world_size=2, shuffle_buffer=4, shuffle=mode == "train",
        samples_by_tar=torch_loader.samples_by_tar(shard_set.samples) if indexed else None)
    return list(stream)


@pytest.mark.parametrize("mode", ["train", "test"])
def test_seeking_workers_yield_what_the_tar_stream_yields(tiny_shards, mode, monkeypatch):
    shard_set, keys = open_shards(tiny_shards), []
    for rank in range(2):
        for worker in range(2):
            read = worker_items(shard_set, mode, rank, worker, indexed=True,
                                monkeypatch=monkeypatch)
            streamed = worker_items(shard_set, mode, rank, worker, indexed=False,
                                    monkeypatch=monkeypatch)
            assert [it["key"] for it in read] == [it["key"] for it in streamed]
            for a, b in zip(read, streamed):
                assert a["label"] == b["label"] and a["error"] is b["error"] is None
                assert torch.equal(a["frames"], b["frames"]) and torch.equal(a["video"], b["video"])
                assert a["decoded_frames"] == b["decoded_frames"]
            assert sum(it["bytes_read"] for it in read) == sum(
                s.video[1] + s.meta[1] for s in shard_set.samples if s.key in
                {it["key"] for it in read})
            keys += [it["key"] for it in read]
    assert sorted(keys) == sorted(s.key for s in shard_set.samples)  # each sample once


def test_tar_changed_after_indexing_gives_counted_skips_naming_it(tiny_shards, tmp_path, caplog):
    folder = tmp_path / "changed"
    shutil.copytree(tiny_shards, folder)
    shard_set = open_shards(folder)  # indexed before the tars change
    cut_tar, garbled_tar = sorted(folder.glob("*.tar"))[-1], sorted(folder.glob("*.tar"))[0]
    cut = cut_tar.stat().st_size // 2
    cut_tar.write_bytes(cut_tar.read_bytes()[:cut])
    garbled = next(s for s in shard_set.samples if s.tar == str(garbled_tar))
    with open(garbled_tar, "r+b") as f:  # its json member no longer holds json
        f.seek(garbled.meta[0])
        f.write(b"\xff" * garbled.meta[1])
    lost = {s.key for s in shard_set.samples
            if s.tar == str(cut_tar) and max(sum(s.video), sum(s.meta)) > cut} | {garbled.key}
    spec = LoaderSpec(mode="test", clip=ClipSpec(**CLIP), batch_size=8, backend="torch",
                      num_workers=0)
    with caplog.at_level(logging.WARNING):
        # The codec scan reads jsons too: the garbled one is named there and left to the loader.
        loader = build_loader(shard_set, spec, seed=0, device="cpu")
        assert f"{garbled_tar}: sample '{garbled.key}' has an unreadable json member" in caplog.text
        rows = epoch_rows(loader)
    assert len(lost) > 1 and loader.skipped == len(lost)
    assert {k for k, _, ok, _ in rows if ok} == {s.key for s in shard_set.samples} - lost
    for key in lost:
        tar = cut_tar if key != garbled.key else garbled_tar
        assert re.search(f"skipped {key} .*{tar}: sample '{key}' unreadable", caplog.text)
