"""inspect_shards: a verified directory passes; every kind of damage fails, naming the shard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from shard_tools.inspect_shards import (
    ManifestError,
    load_manifest,
    main,
    summarise_manifest,
    verify_shards,
)
from shard_tools.make_shards import ShardConfig, build_shards


@pytest.fixture(scope="module")
def built(tiny_synthetic, tmp_path_factory) -> Path:
    """A shard directory of the tiny synthetic train list (96 samples, 3 shards); read-only."""
    out = tmp_path_factory.mktemp("built") / "shards"
    build_shards(ShardConfig(tiny_synthetic / "train.csv", tiny_synthetic,
                             tiny_synthetic / "classes.json", out, samples_per_shard=40))
    return out


@pytest.fixture
def shards(built, tmp_path) -> Path:
    """A private copy of `built` that a test may damage."""
    return Path(shutil.copytree(built, tmp_path / "shards"))


def test_intact_directory_passes(shards, capsys):
    report = verify_shards(shards)
    assert report.ok and (report.shards, report.samples) == (3, 96)
    assert main([str(shards)]) == 0
    out = capsys.readouterr().out
    assert "samples: 96 in 3 shards" in out and "verified 3 shards, 96 samples: OK" in out


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_modified_shard_fails_naming_it(shards, capsys):
    _flip_byte(shards / "shard-000001.tar", 3000)  # inside a video member: tar still parses
    assert main([str(shards)]) == 1
    out = capsys.readouterr().out
    assert "FAIL shard-000001.tar: sha256" in out
    assert "shard-000000.tar" not in out.split("FAIL", 1)[1]


def test_truncated_shard_fails(shards):
    tar = shards / "shard-000002.tar"
    tar.write_bytes(tar.read_bytes()[:5000])
    problems = verify_shards(shards).problems
    assert any(p.startswith("shard-000002.tar: unreadable tar") or
               p.startswith("shard-000002.tar: ") and "samples in the tar" in p
               for p in problems), problems
    assert any("shard-000002.tar: size 5000 bytes" in p for p in problems)


def test_missing_or_stale_index_fails(shards):
    (shards / "shard-000000.idx").unlink()
    idx = shards / "shard-000001.idx"
    idx.write_text(idx.read_text().replace(" 512 ", " 1024 ", 1))
    problems = verify_shards(shards).problems
    assert "shard-000000.tar: index shard-000000.idx missing" in problems
    assert "shard-000001.tar: index shard-000001.idx does not match the tar" in problems


def test_sample_count_and_unlisted_shards_are_checked(shards):
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["shards"][0]["samples"] = 41
    (shards / "manifest.json").write_text(json.dumps(manifest))
    shutil.copy(shards / "shard-000000.tar", shards / "shard-000009.tar")
    problems = verify_shards(shards).problems
    assert "shard-000000.tar: 40 samples in the tar, manifest says 41" in problems
    assert "shard-000009.tar: not listed in the manifest" in problems


def test_missing_shard_and_wrong_totals(shards):
    (shards / "shard-000002.tar").unlink()
    assert "shard-000002.tar: missing" in verify_shards(shards).problems
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["total"] = 97
    manifest["shards"] = manifest["shards"][:2]
    (shards / "manifest.json").write_text(json.dumps(manifest))
    assert verify_shards(shards).problems == [
        "manifest: total 97 but the shards hold 80 samples"]


def test_unreadable_manifest_exits_2(tmp_path, caplog):
    assert main([str(tmp_path)]) == 2
    assert "manifest.json: not found" in caplog.text
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(ManifestError, match="invalid JSON"):
        load_manifest(tmp_path)


def test_summary_groups_skip_reasons():
    manifest = {"total": 1, "classes": {"0": "a"}, "class_counts": {"0": 1},
                "shards": [{"name": "shard-000000.tar", "samples": 1, "bytes": 2048,
                            "sha256": "0"}],
                "skipped": [{"path": "a", "reason": "missing: file not found"},
                            {"path": "b", "reason": "missing: file not found"},
                            {"path": "c", "reason": "empty file (0 bytes)"}]}
    text = summarise_manifest(manifest)
    assert "skipped: 3" in text and "2 x missing" in text and "1 x empty file (0 bytes)" in text


def test_sheet_needs_decode_and_an_existing_folder_checked_before_decoding(built, tmp_path,
                                                                          capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(built), "--sheet", str(tmp_path / "s.png")])
    assert exit_info.value.code == 2 and "add --decode N" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(built), "--decode", "2", "--sheet", str(tmp_path / "no" / "s.png")])
    err = capsys.readouterr()
    assert exit_info.value.code == 2 and "does not exist" in err.err
    assert err.out == ""  # refused before any clip was decoded


def test_decode_counts_videos_and_labels_the_sheet(built, tmp_path, capsys, caplog):
    import logging

    from PIL import Image

    from kiclip.data.preview import SHEET_LABEL_HEIGHT

    sheet = tmp_path / "sheet.png"
    with caplog.at_level(logging.INFO):
        code = main([str(built), "--decode", "2", "--mode", "test", "--views", "2",
                     "--num-frames", "4", "--stride", "2", "--image-size", "32",
                     "--sheet", str(sheet)])
    assert code == 0
    clips = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(clips) == 4 and len({c["key"] for c in clips}) == 2  # 2 videos x 2 views
    assert "decoded 2 videos: 4 clips (2 views per video)" in caplog.text
    with Image.open(sheet) as image:
        assert image.height == 4 * (32 + SHEET_LABEL_HEIGHT)
        assert image.width >= 4 * 32
        caption = image.convert("L").crop((0, 0, image.width, SHEET_LABEL_HEIGHT))
        assert np.asarray(caption).min() < 100  # a caption is drawn above the first row


def test_sheet_tiles_stay_small_for_full_size_clips(tmp_path):
    import torch
    from PIL import Image

    from kiclip.data.preview import SHEET_LABEL_HEIGHT, SHEET_TILE, write_sheet

    clips = [torch.zeros(3, 8, 224, 224) for _ in range(3)]
    write_sheet(clips, str(tmp_path / "big.png"), ["0000000_a  view 0  3: red circle"] * 3)
    with Image.open(tmp_path / "big.png") as image:
        assert image.size == (8 * SHEET_TILE, 3 * (SHEET_TILE + SHEET_LABEL_HEIGHT))


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "(default: 224)" in out and "(default: torch)" in out


@pytest.mark.parametrize("option, value", [("--decode", "-1"), ("--views", "0"),
                                           ("--num-frames", "0"), ("--stride", "0"),
                                           ("--image-size", "-224"), ("--epoch", "-1")])
def test_numeric_decode_options_are_checked_at_parse_time(built, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        main([str(built), "--decode", "1", option, value])
    assert exit_info.value.code == 2
    assert f"argument {option}: {value} is out of range" in capsys.readouterr().err


def test_lists_codecs_and_the_decoders_that_read_them(shards, tmp_path, make_video, capsys):
    main([str(shards)])
    out = capsys.readouterr().out
    assert "  mjpeg: 96 samples; fallback (PyAV) yes, DALI CPU yes, DALI GPU (NVDEC)" in out
    root = tmp_path / "v"
    root.mkdir()
    make_video(root / "a.mp4")  # H.264, stored as it is
    (tmp_path / "l.csv").write_text("a.mp4,0\n")
    (tmp_path / "c.json").write_text('["only"]')
    build_shards(ShardConfig(tmp_path / "l.csv", root, tmp_path / "c.json", tmp_path / "h264"))
    main([str(tmp_path / "h264")])
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "h264:" in ln)
    assert "1 samples; fallback (PyAV) yes, DALI CPU no" in line and "--transcode vp9" in line
