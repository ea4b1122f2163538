"""make_shards: synthetic data -> shards -> verified; bad videos; resume; options; list files."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from shard_tools import make_shards
from shard_tools.inspect_shards import verify_shards
from shard_tools.lists import ListFileError, read_classes, read_video_list
from shard_tools.make_shards import LabelError, ShardConfig, build_shards
from shard_tools.shard_writer import index_path_for, read_tar_samples

REPO = Path(__file__).resolve().parents[1]


def _config(data: Path, out: Path, **kw) -> ShardConfig:
    kw.setdefault("samples_per_shard", 40)
    return ShardConfig(list_path=data / "train.csv", video_root=data,
                       classes_path=data / "classes.json", out=out, **kw)


def _members(tar: Path) -> list[str]:
    with tarfile.open(tar) as t:
        return t.getnames()


def test_synthetic_to_verified_shards(tiny_synthetic, tmp_path):
    out = tmp_path / "shards"
    manifest = build_shards(_config(tiny_synthetic, out, workers=2))
    rows = read_video_list(tiny_synthetic / "train.csv")
    tars = sorted(out.glob("shard-*.tar"))
    assert len(tars) == 3  # 96 samples, 40 per shard
    assert sum(len(read_tar_samples(t)) for t in tars) == len(rows) == manifest["total"]
    assert all(index_path_for(t).is_file() for t in tars)
    assert manifest["skipped"] == []
    assert manifest["classes"]["0"] == "red circle moving left"
    assert set(manifest["class_counts"].values()) == {2}
    assert verify_shards(out).ok

    names = _members(tars[0])
    keys = {n.split(".", 1)[0] for n in names}
    assert len(names) == 2 * 40 and all("." not in k and "/" not in k for k in keys)
    with tarfile.open(tars[0]) as t:
        meta = json.loads(t.extractfile(next(n for n in names if n.endswith(".json"))).read())
    assert set(meta) == {"label", "name", "video_id", "frames", "fps", "width", "height",
                         "codec", "rotation", "packets"}
    assert (meta["frames"], meta["width"], meta["codec"], meta["rotation"]) == (8, 32, "mjpeg", 0)


def test_packet_index_in_the_json_points_at_every_frames_bytes(tiny_synthetic, tmp_path):
    import av
    import numpy as np

    from kiclip.packets import sample_packet_index

    out = tmp_path / "shards"
    build_shards(_config(tiny_synthetic, out))
    with tarfile.open(min(out.glob("*.tar"))) as t:
        names = t.getnames()
        video_name = next(n for n in names if n.endswith(".avi"))
        video = t.extractfile(video_name).read()
        meta = json.loads(t.extractfile(video_name[:-len("avi")] + "json").read())
    index = sample_packet_index(meta, len(video))
    assert index is not None and len(index) == meta["frames"]
    with av.open(io.BytesIO(video)) as container:
        demuxed = [bytes(p) for p in container.demux(video=0) if p.size]
    assert [video[o:o + s] for o, s in zip(index["offset"], index["size"])] == demuxed
    assert np.all(index["key"] == 1)  # MJPEG: every frame is a key frame


def test_index_equals_what_dalis_wds2idx_writes(tiny_synthetic, tmp_path):
    wds2idx = pytest.importorskip("wds2idx")
    out = tmp_path / "shards"
    build_shards(_config(tiny_synthetic, out))
    tar = out / "shard-000001.tar"
    reference = tmp_path / "reference.idx"
    with wds2idx.IndexCreator(str(tar), str(reference), verbose=False) as creator:
        creator.create_index()
    assert index_path_for(tar).read_text() == reference.read_text()


@pytest.mark.dali
def test_dali_webdataset_reader_reads_the_shards(tiny_synthetic, tmp_path):
    dali = pytest.importorskip("nvidia.dali")
    import numpy as np
    from nvidia.dali import fn

    out = tmp_path / "shards"
    manifest = build_shards(_config(tiny_synthetic, out))
    tars = [str(out / s["name"]) for s in manifest["shards"]]

    @dali.pipeline_def(batch_size=8, num_threads=1, device_id=None)
    def read():
        video, meta = fn.readers.webdataset(
            paths=tars, index_paths=[str(index_path_for(Path(t))) for t in tars],
            ext=["avi;mp4;webm;mkv;mov", "json"], missing_component_behavior="error",
            name="reader")
        return fn.decoders.video(video, device="cpu"), meta

    pipe = read()
    pipe.build()
    assert pipe.epoch_size("reader") == manifest["total"]
    frames, meta = pipe.run()
    assert np.array(frames[0]).shape == (8, 32, 32, 3)
    assert json.loads(bytes(np.array(meta[0])))["label"] in range(48)


def test_bad_videos_are_skipped_with_reasons(tmp_path, make_video):
    root = tmp_path / "videos"
    root.mkdir()
    good = {
        "odd_size.mp4": make_video(root / "odd_size.mp4", width=33, height=47,
                                   pix_fmt="yuv444p"),
        "vfr.mp4": make_video(root / "vfr.mp4", frames=6, pts_ms=[0, 40, 200, 210, 500, 900]),
        "mjpeg.avi": make_video(root / "mjpeg.avi", codec="mjpeg", container="avi",
                                pix_fmt="yuvj420p"),
        "three.mp4": make_video(root / "three.mp4", frames=3),
    }
    whole = make_video(tmp_path / "whole.mp4", frames=30, width=64, height=64).read_bytes()
    (root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (root / "empty.mp4").write_bytes(b"")
    (root / "text.mp4").write_text("this is not a video\n")
    bad = {"truncated.mp4": "not a readable video", "empty.mp4": "empty file",
           "text.mp4": "not a readable video", "missing.mp4": "missing"}
    order = ["odd_size.mp4", "truncated.mp4", "vfr.mp4", "empty.mp4", "mjpeg.avi",
             "text.mp4", "missing.mp4", "three.mp4"]
    (tmp_path / "list.txt").write_text("".join(f"{n} {i % 2}\n" for i, n in enumerate(order)))
    (tmp_path / "classes.json").write_text('{"0": "a", "1": "b"}')

    manifest = build_shards(ShardConfig(tmp_path / "list.txt", root, tmp_path / "classes.json",
                                        tmp_path / "out", samples_per_shard=3, workers=2))
    assert manifest["total"] == len(good)
    assert {s["path"]: s["reason"] for s in manifest["skipped"]}.keys() == bad.keys()
    for skip in manifest["skipped"]:
        assert bad[skip["path"]] in skip["reason"], skip
        assert skip["line"] == order.index(skip["path"]) + 1
    written = {}
    for shard in sorted((tmp_path / "out").glob("*.tar")):
        with tarfile.open(shard) as t:
            for name in t.getnames():
                if name.endswith(".json"):
                    meta = json.loads(t.extractfile(name).read())
                    written[meta["video_id"]] = meta
    assert set(written) == {Path(n).stem for n in good}
    assert (written["odd_size"]["width"], written["odd_size"]["height"]) == (33, 47)
    assert written["three"]["frames"] == 3
    assert written["vfr"]["frames"] == 6
    assert written["mjpeg"]["codec"] == "mjpeg"
    assert verify_shards(tmp_path / "out").ok


def test_truncated_file_with_index_up_front_is_skipped(tmp_path, make_video):
    root = tmp_path / "v"
    root.mkdir()
    make_video(root / "ok.mp4")
    full = make_video(tmp_path / "fs.mp4", frames=60, width=64, height=64,
                      options={"movflags": "faststart"}).read_bytes()
    (root / "cut.mp4").write_bytes(full[: len(full) * 2 // 3])
    (tmp_path / "l.csv").write_text("ok.mp4,0\ncut.mp4,0\n")
    (tmp_path / "c.json").write_text('["only"]')
    manifest = build_shards(ShardConfig(tmp_path / "l.csv", root, tmp_path / "c.json",
                                        tmp_path / "out"))
    assert manifest["total"] == 1
    assert [s["path"] for s in manifest["skipped"]] == ["cut.mp4"]


def test_rerun_keeps_complete_shards_and_resumes_after_interruption(tiny_synthetic, tmp_path,
                                                                     monkeypatch):
    reference = build_shards(_config(tiny_synthetic, tmp_path / "ref"))
    out = tmp_path / "out"
    original = make_shards._prepare

    def interrupted(job):
        if job.row == 85:
            raise KeyboardInterrupt
        return original(job)

    monkeypatch.setattr(make_shards, "_prepare", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_shards(_config(tiny_synthetic, out))
    monkeypatch.setattr(make_shards, "_prepare", original)
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    assert not (out / "manifest.json").exists() and not list(out.glob("*.partial"))
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}

    seen = []
    monkeypatch.setattr(make_shards, "_prepare", lambda job: seen.append(job.row) or
                        original(job))
    manifest = build_shards(_config(tiny_synthetic, out))
    assert min(seen) == 80  # the two complete shards (rows 0..79) were not redone
    assert {n: (out / n).stat().st_mtime_ns for n in kept} == kept
    assert manifest["shards"] == reference["shards"]  # same bytes as an uninterrupted run

    seen.clear()
    again = build_shards(_config(tiny_synthetic, out))  # complete: nothing to do
    assert seen == [] and again == manifest


def test_other_options_need_overwrite(tiny_synthetic, tmp_path):
    out = tmp_path / "out"
    build_shards(_config(tiny_synthetic, out))
    with pytest.raises(FileExistsError, match="--overwrite"):
        build_shards(_config(tiny_synthetic, out, samples_per_shard=10))
    manifest = build_shards(_config(tiny_synthetic, out, samples_per_shard=50, overwrite=True))
    assert len(manifest["shards"]) == 2 and len(list(out.glob("*.tar"))) == 2
    assert verify_shards(out).ok


def test_max_shard_bytes_closes_shards_early(tiny_synthetic, tmp_path):
    limit = 200_000
    manifest = build_shards(_config(tiny_synthetic, tmp_path / "o", samples_per_shard=1000,
                                    max_shard_bytes=limit))
    assert len(manifest["shards"]) > 1
    assert all(s["bytes"] <= limit + 10240 for s in manifest["shards"])  # + tar end padding
    assert manifest["total"] == 96


def test_transcode_to_vp9_with_short_side(tiny_synthetic, tmp_path):
    (tmp_path / "few.csv").write_text(
        "".join(row + "\n" for row in (tiny_synthetic / "val.csv").read_text().splitlines()[:4])
        + "videos/not_there.avi,0\n")
    config = ShardConfig(tmp_path / "few.csv", tiny_synthetic, tiny_synthetic / "classes.json",
                         tmp_path / "out", transcode="vp9", short_side=16, gop=4)
    manifest = build_shards(config)
    assert manifest["total"] == 4 and manifest["transcode"] == "vp9"
    assert [s["reason"] for s in manifest["skipped"]] == ["missing: file not found"]
    names = _members(tmp_path / "out" / "shard-000000.tar")
    assert sum(n.endswith(".webm") for n in names) == 4
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as t:
        meta = json.loads(t.extractfile(next(n for n in names if n.endswith(".json"))).read())
    assert (meta["codec"], meta["width"], meta["height"], meta["frames"]) == ("vp9", 16, 16, 8)
    assert not (tmp_path / "out" / ".transcode-work").exists()


def test_rephrased_classes_and_space_separated_list(tiny_synthetic, tmp_path):
    classes = {str(i): f"{c.name}: a clip of a {c.name}"
               for i, c in enumerate(read_classes(tiny_synthetic / "classes.json"))}
    (tmp_path / "rephrased.json").write_text(json.dumps(classes))
    rows = read_video_list(tiny_synthetic / "val.csv")[:5]
    (tmp_path / "list.txt").write_text("".join(f"{r.path} {r.label}\n" for r in rows))
    manifest = build_shards(ShardConfig(tmp_path / "list.txt", tiny_synthetic,
                                        tmp_path / "rephrased.json", tmp_path / "out"))
    assert manifest["classes"]["0"] == "red circle moving left"
    assert manifest["class_texts"]["0"].startswith("red circle moving left: a clip")
    assert manifest["total"] == 5


def test_label_outside_the_classes_fails_before_work(tiny_synthetic, tmp_path):
    (tmp_path / "l.csv").write_text("videos/x.avi,0\nvideos/y.avi,48\n")
    with pytest.raises(LabelError, match=r"l\.csv:2: label 48 is outside the 48 classes"):
        build_shards(ShardConfig(tmp_path / "l.csv", tiny_synthetic,
                                 tiny_synthetic / "classes.json", tmp_path / "out"))


def test_list_reader_accepts_both_forms_and_a_header(tmp_path):
    (tmp_path / "a.csv").write_text("path,label\nx/a.mp4,3\n\n# note\nx/b c.mp4,4\n")
    (tmp_path / "b.txt").write_text("x/a.mp4 3\nx/b.mp4\t4\n")
    assert [(r.path, r.label, r.line) for r in read_video_list(tmp_path / "a.csv")] == [
        ("x/a.mp4", 3, 2), ("x/b c.mp4", 4, 5)]
    assert [(r.path, r.label) for r in read_video_list(tmp_path / "b.txt")] == [
        ("x/a.mp4", 3), ("x/b.mp4", 4)]


BAD_LISTS = [  # (list.csv's text, the error naming file and line)
    ("a.mp4,1\nb.mp4,x\n", r"list\.csv:2: label 'x' is not an integer"),
    ("a.mp4,1,2\n", r"list\.csv:1: expected `relative/path,label`"),
    ("a.mp4 1 extra\n", r"list\.csv:1: expected"),
    ("a.mp4,-1\n", r"list\.csv:1: label -1 is negative"),
    ("\n# only a comment\n", r"list\.csv: no rows"),
]
BAD_CLASS_FILES = [  # (c.json's text, the error naming the file)
    ('{"0": "a", "2": "b"}', r"must run 0\.\.1; missing \[1\]"),
    ('{"0": "a",}', r"c\.json:1: invalid JSON"),
    ('{"zero": "a"}', r"key 'zero' is not a class index"),
    ('{"0": ""}', r"class 0 has no name"),
    ('{"0": ": only a description"}', r"empty name before ':'"),
    ('{"0": ["a"]}', r"class 0 has no name \(got \['a'\]\)"),
    ("0,a\nzero,b\n", r"c\.json:2: index 'zero' is not an integer"),
]


@pytest.mark.parametrize("reader, name, text, message",
                         [(read_video_list, "list.csv", *case) for case in BAD_LISTS]
                         + [(read_classes, "c.json", *case) for case in BAD_CLASS_FILES])
def test_bad_list_and_class_files_name_the_file_and_line(tmp_path, reader, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(ListFileError, match=message):
        reader(tmp_path / name)


def test_class_file_forms(tmp_path):
    forms = {
        "plain.json": '{"1": "b", "0": "a"}',
        "list.json": '["a", "b"]',
        "inverse.json": '{"a": 0, "b": 1}',
        "table.csv": "id,name\n0,a\n1,b\n",
        "rephrased.json": '{"0": "a: the letter a", "1": "b: the letter b"}',
    }
    for name, text in forms.items():
        (tmp_path / name).write_text(text)
        assert [c.name for c in read_classes(tmp_path / name)] == ["a", "b"], name
    assert read_classes(tmp_path / "rephrased.json")[1].text == "b: the letter b"
    with pytest.raises(ListFileError, match="missing.json: file not found"):
        read_classes(tmp_path / "missing.json")


def test_scripts_run_from_the_repo_root(tiny_synthetic, tmp_path):
    out = tmp_path / "out"
    run = [sys.executable, "shard_tools/make_shards.py", "--list",
           str(tiny_synthetic / "val.csv"), "--video-root", str(tiny_synthetic), "--classes",
           str(tiny_synthetic / "classes.json"), "--out", str(out), "--samples-per-shard", "20",
           "--no-progress"]
    done = subprocess.run(run, cwd=REPO, capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "48 samples in 3 shards, 0 skipped" in done.stdout
    assert "make_shards.py --list" in json.loads((out / "manifest.json").read_text())["command"]
    check = subprocess.run([sys.executable, "shard_tools/inspect_shards.py", str(out)],
                           cwd=REPO, capture_output=True, text=True,
                          check=False)
    assert check.returncode == 0 and "OK" in check.stdout
    clash = subprocess.run(run[:-3] + ["7", "--no-progress"], cwd=REPO, capture_output=True,
                           text=True, check=False)
    assert clash.returncode == 2 and "--overwrite" in clash.stderr
    shutil.rmtree(out)


def _list_of(tmp_path: Path, names: list[str]) -> tuple[Path, Path]:
    (tmp_path / "list.csv").write_text("".join(f"{n},0\n" for n in names))
    (tmp_path / "classes.json").write_text('["only"]')
    return tmp_path / "list.csv", tmp_path / "classes.json"


@pytest.mark.parametrize("wrong_root, hint", [
    ("too_deep", "try --video-root {data}"),       # root one folder below the videos' root
    ("too_high", "try --video-root {data}"),       # root one folder above it
])
def test_every_row_missing_fails_with_the_resolved_path_and_a_root_hint(tmp_path, make_video,
                                                                        caplog, wrong_root, hint):
    data = tmp_path / "top" / "data"
    (data / "cls").mkdir(parents=True)
    (data / "cls" / "inner").mkdir()
    make_video(data / "cls" / "a.mp4")
    make_video(data / "cls" / "b.mp4")
    listed, classes = _list_of(tmp_path, ["cls/a.mp4", "cls/b.mp4"])
    root = data / "cls" if wrong_root == "too_deep" else data.parent
    out = tmp_path / "out"
    code = make_shards.main(["--list", str(listed), "--video-root", str(root), "--classes",
                             str(classes), "--out", str(out), "--no-progress", "--workers", "1"])
    err = caplog.text
    assert code == 1
    assert "every row" in err and "2 rows: 2 missing" in err
    assert f"-> {(root / 'cls/a.mp4').resolve()}" in err
    assert hint.format(data=data) in err
    assert not (out / "manifest.json").exists() and not list(out.glob("*.tar"))
    # The corrected root then builds normally in the same --out.
    assert make_shards.main(["--list", str(listed), "--video-root", str(data), "--classes",
                             str(classes), "--out", str(out), "--no-progress"]) == 0


def test_every_row_unreadable_fails_naming_the_first_reason(tmp_path):
    root = tmp_path / "v"
    root.mkdir()
    (root / "a.mp4").write_bytes(b"")
    listed, classes = _list_of(tmp_path, ["a.mp4"])
    with pytest.raises(make_shards.NothingPackedError, match="(?s)1 empty file.*a.mp4"):
        build_shards(ShardConfig(listed, root, classes, tmp_path / "out"))


@pytest.mark.parametrize("option, value, needle", [
    ("--short-side", "-5", "--short-side: -5 is out of range"),
    ("--short-side", "4", "at least 16"),
    ("--gop", "0", "--gop: 0 is out of range"),
    ("--samples-per-shard", "0", "--samples-per-shard"),
    ("--max-shard-bytes", "-1", "--max-shard-bytes"),
    ("--workers", "0", "--workers"),
    ("--gop", "2.5", "'2.5' is not a valid int"),
])
def test_numeric_options_are_checked_at_parse_time(tmp_path, capsys, option, value, needle):
    with pytest.raises(SystemExit) as exit_info:
        make_shards.main(["--list", "l.csv", "--video-root", ".", "--classes", "c.json",
                          "--out", str(tmp_path / "out"), option, value])
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was started


def test_progress_counts_frames_within_videos(tiny_synthetic, tmp_path, capsys):
    code = make_shards.main(["--list", str(tiny_synthetic / "val.csv"), "--video-root",
                             str(tiny_synthetic), "--classes", str(tiny_synthetic / "classes.json"),
                             "--out", str(tmp_path / "out"), "--workers", "2"])
    assert code == 0
    final = capsys.readouterr().err.split("\r")[-1]  # the bar's last redraw
    # 48 videos of 8 frames, each decoded once by the probe (copy mode), counted in workers.
    assert "48/48" in final and "384 frames" in final, final


def test_ctrl_c_while_a_shard_is_finished_is_held_until_its_state_is_saved():
    # The tar's rename and the state write that records it run as one: a Ctrl-C between them
    # would leave a shard the rerun cannot recognise as its own.
    import os
    import signal

    # Python's own handler, whatever this test process inherited (a background job starts with
    # SIGINT ignored).
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        done = []
        with pytest.raises(KeyboardInterrupt):
            with make_shards._interrupt_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("after the signal")
        assert done == ["after the signal"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_an_ignored_ctrl_c_stays_ignored_while_a_shard_is_finished():
    import os
    import signal

    inherited = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with make_shards._interrupt_deferred():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, inherited)


def test_ctrl_c_prints_one_line_exits_130_and_the_rerun_resumes(tiny_synthetic, tmp_path):
    import os
    import signal
    import time

    out = tmp_path / "out"
    # 96 rows transcoded to vp9 in 2-sample shards: slow enough to interrupt mid-run.
    command = [sys.executable, "shard_tools/make_shards.py", "--list",
               str(tiny_synthetic / "train.csv"), "--video-root", str(tiny_synthetic),
               "--classes", str(tiny_synthetic / "classes.json"), "--out", str(out),
               "--samples-per-shard", "2", "--transcode", "vp9", "--workers", "2",
               "--no-progress"]
    # As from a terminal: SIGINT at its default even when this test runs in a background job
    # (which starts its children with SIGINT ignored).
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not (out / "shard-000000.tar").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "run the same command again to resume" in lines[0], stderr
    assert not (out / "manifest.json").exists()
    kept = sorted(p.name for p in out.glob("shard-*.tar"))
    assert kept and len(kept) < 48

    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "resuming: keeping" in done.stderr
    assert "96 samples in 48 shards, 0 skipped" in done.stdout
    assert verify_shards(out).ok


def _labels_per_shard(out: Path) -> list[list[int]]:
    shards = []
    for tar in sorted(out.glob("shard-*.tar")):
        with tarfile.open(tar) as t:
            shards.append([json.loads(t.extractfile(n).read())["label"]
                           for n in t.getnames() if n.endswith(".json")])
    return shards


def test_rows_are_written_in_a_seeded_shuffled_order(tiny_synthetic, tmp_path):
    # The synthetic list is sorted by class (2 rows per class): in list order a 40-sample
    # shard holds 20 classes in runs; shuffled, each shard mixes classes from the whole list.
    build_shards(_config(tiny_synthetic, tmp_path / "listed", shuffle=False))
    listed = _labels_per_shard(tmp_path / "listed")
    assert [x for s in listed for x in s] == [r.label for r in
                                              read_video_list(tiny_synthetic / "train.csv")]
    manifest = build_shards(_config(tiny_synthetic, tmp_path / "a", seed=5))
    shuffled = _labels_per_shard(tmp_path / "a")
    assert manifest["shuffle_seed"] == 5
    assert sorted(x for s in shuffled for x in s) == sorted(x for s in listed for x in s)
    assert max(shuffled[0]) - min(shuffled[0]) > 30  # spans the list, not one class run
    build_shards(_config(tiny_synthetic, tmp_path / "b", seed=5))
    assert _labels_per_shard(tmp_path / "b") == shuffled  # same seed, same order
    build_shards(_config(tiny_synthetic, tmp_path / "c", seed=6))
    assert _labels_per_shard(tmp_path / "c") != shuffled


def test_seed_and_no_shuffle_are_options(tiny_synthetic, tmp_path):
    out = tmp_path / "o"
    args = ["--list", str(tiny_synthetic / "train.csv"), "--video-root", str(tiny_synthetic),
            "--classes", str(tiny_synthetic / "classes.json"), "--out", str(out),
            "--workers", "1", "--no-progress", "--samples-per-shard", "96"]
    assert make_shards.main([*args, "--no-shuffle"]) == 0
    assert json.loads((out / "manifest.json").read_text())["shuffle_seed"] is None
    with pytest.raises(FileExistsError):  # another order is other shards
        build_shards(_config(tiny_synthetic, out, samples_per_shard=96))
