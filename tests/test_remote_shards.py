"""Remote shards (kiclip/remote.py): a --data URL is staged into a cache, verified by sha256.

A local HTTP server on 127.0.0.1 (a thread, stopped at the end of each test) serves shard
folders made by make_shards from tiny generated videos; its handler can drop the first request
of a file half-way or corrupt what it sends, and counts the requests per file.
"""

from __future__ import annotations

import functools
import json
import shlex
import shutil
import threading
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import write_test_video
from train_fixtures import EVALUATE, FAST, process_env, train_main

from kiclip import remote
from kiclip.layout import resolve_protocol
from shard_tools import inspect_shards, make_shards

B2N = ("train_split1", "base_test", "novel_test")


@pytest.fixture(scope="module")
def shard_folder(tmp_path_factory) -> Path:
    """A make_shards folder: 6 tiny clips of 2 classes as MJPEG (DALI's CPU decoder reads it),
    2 per shard (3 tars)."""
    root = tmp_path_factory.mktemp("videos")
    rows = []
    for i in range(6):
        write_test_video(root / f"clip{i}.mp4", frames=8)
        rows.append(f"clip{i}.mp4,{i % 2}")
    (root / "list.csv").write_text("\n".join(rows) + "\n")
    (root / "classes.json").write_text(json.dumps({"0": "bar moving", "1": "bar waiting"}))
    out = root / "shards"
    assert make_shards.main(["--list", str(root / "list.csv"), "--video-root", str(root),
                             "--classes", str(root / "classes.json"), "--out", str(out),
                             "--samples-per-shard", "2", "--transcode", "mjpeg", "--workers", "1",
                             "--no-progress"]) == 0
    assert len(list(out.glob("*.tar"))) == 3
    return out


@pytest.fixture
def served(shard_folder, tmp_path):
    """The B2N layout (the same shard folder three times) served over HTTP; yields the server."""
    root = tmp_path / "bucket"
    for name in B2N:
        shutil.copytree(shard_folder, root / name)
    server = ShardServer(root)
    yield server
    server.stop()


class ShardServer:
    """http.server on 127.0.0.1 in a daemon thread, with failure switches per file path."""

    def __init__(self, root: Path):
        self.root = root
        self.requests: Counter[str] = Counter()
        self.drop_first: set[str] = set()      # close the connection half-way, first GET only
        self.corrupt: set[str] = set()         # flip a byte, every GET
        self.corrupt_first: set[str] = set()   # flip a byte, first GET only
        handler = functools.partial(_Handler, directory=str(root))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.state = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


class _Handler(SimpleHTTPRequestHandler):
    timeout = 10  # a stuck client cannot hold a handler thread for longer

    def do_GET(self):
        state = self.server.state
        path = self.path.lstrip("/")
        state.requests[path] += 1
        first = state.requests[path] == 1
        if path in state.drop_first and first:
            data = (state.root / path).read_bytes()
            self._send(data[: len(data) // 2], length=len(data))
            self.close_connection = True
            return
        if path in state.corrupt or (path in state.corrupt_first and first):
            data = bytearray((state.root / path).read_bytes())
            data[len(data) // 2] ^= 0xFF
            self._send(bytes(data))
            return
        super().do_GET()

    def _send(self, body: bytes, length: int | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(length if length is not None else len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, *args):
        pass


def _tar_requests(server: ShardServer) -> Counter:
    return Counter({p: n for p, n in server.requests.items() if p.endswith(".tar")})


def test_staged_folder_is_verified_and_read_by_the_loader(served, shard_folder, tmp_path):
    from kiclip.data import ClipSpec, LoaderSpec, build_loader

    local = Path(remote.localize_protocol(served.url, "b2n", 1, cache_dir=tmp_path / "cache",
                                          need_train=True))
    assert local.parent == tmp_path / "cache"
    protocol = resolve_protocol(str(local), "b2n", 1)
    assert protocol.train.classes == ["bar moving", "bar waiting"]
    assert protocol.train.total == 6
    staged = local / "train_split1"
    for tar in shard_folder.glob("*.tar"):  # the rebuilt index is make_shards' index
        assert (staged / tar.name).read_bytes() == tar.read_bytes()
        assert (staged / tar.name).with_suffix(".idx").read_text() == tar.with_suffix(".idx").read_text()
    assert inspect_shards.verify_shards(staged).ok
    assert protocol.train.tars == [str(staged / tar.name) for tar in sorted(shard_folder.glob("*.tar"))]
    spec = LoaderSpec(clip=ClipSpec(num_frames=4, stride=1, image_size=32), batch_size=4,
                      backend="torch", num_workers=0, shuffle=False)
    loader = build_loader(protocol.train, spec, device="cpu")
    keys = [k for batch in loader for k, ok in zip(batch["key"], batch["valid"]) if ok]
    assert len(keys) == 6 and loader.skipped == 0


def test_dali_reads_the_staged_folder(served, tmp_path):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    from kiclip.data import ClipSpec, LoaderSpec, build_loader
    from kiclip.layout import read_shard_set

    local = remote.stage(served.url, ["novel_test"], cache_dir=tmp_path / "cache", progress=False)
    spec = LoaderSpec(mode="test", clip=ClipSpec(num_frames=4, stride=1, image_size=32, num_views=1),
                      batch_size=3, backend="dali", num_workers=1)
    loader = build_loader(read_shard_set(local / "novel_test"), spec, device="cpu")
    keys = [k for batch in loader for k, ok in zip(batch["key"], batch["valid"]) if ok]
    assert len(keys) == 6 and loader.skipped == 0


def test_processes_staging_at_once_download_each_tar_once(served, tmp_path):
    errors = []

    def stage_it():
        try:
            remote.stage(served.url, ["base_test"], cache_dir=tmp_path / "cache", progress=False)
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    threads = [threading.Thread(target=stage_it) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(_tar_requests(served)) == 3 and set(_tar_requests(served).values()) == {1}


def test_second_run_reuses_the_cache_and_refetches_a_changed_tar(served, tmp_path):
    cache = tmp_path / "cache"
    local = remote.stage(served.url, ["base_test"], cache_dir=cache, progress=False)
    assert set(_tar_requests(served).values()) == {1} and len(_tar_requests(served)) == 3
    remote.stage(served.url, ["base_test"], cache_dir=cache, progress=False)
    assert set(_tar_requests(served).values()) == {1}, "a verified tar was downloaded again"
    assert served.requests["base_test/manifest.json"] == 2

    changed = local / "base_test" / "shard-000001.tar"
    data = bytearray(changed.read_bytes())
    data[-2000] ^= 0xFF
    changed.write_bytes(bytes(data))
    (local / "base_test" / "shard-000009.tar").write_bytes(b"left from an older manifest")
    remote.stage(served.url, ["base_test"], cache_dir=cache, progress=False)
    assert _tar_requests(served)["base_test/shard-000001.tar"] == 2
    assert _tar_requests(served)["base_test/shard-000000.tar"] == 1
    assert not (local / "base_test" / "shard-000009.tar").exists()
    assert inspect_shards.verify_shards(local / "base_test").ok


def test_dropped_connection_is_retried(served, tmp_path):
    served.drop_first.add("base_test/shard-000001.tar")
    local = remote.stage(served.url, ["base_test"], cache_dir=tmp_path / "cache", progress=False)
    assert served.requests["base_test/shard-000001.tar"] == 2
    assert inspect_shards.verify_shards(local / "base_test").ok


def test_one_corrupt_download_is_fetched_again(served, tmp_path):
    served.corrupt_first.add("base_test/shard-000002.tar")
    local = remote.stage(served.url, ["base_test"], cache_dir=tmp_path / "cache", progress=False)
    assert served.requests["base_test/shard-000002.tar"] == 2
    assert inspect_shards.verify_shards(local / "base_test").ok


def test_corrupt_shard_is_reported_by_name(served, tmp_path):
    served.corrupt.add("base_test/shard-000001.tar")
    with pytest.raises(remote.RemoteDataError, match=r"shard-000001\.tar .*corrupt.*sha256"):
        remote.stage(served.url, ["base_test"], cache_dir=tmp_path / "cache", progress=False)
    assert served.requests["base_test/shard-000001.tar"] == 2  # re-downloaded once, then failed
    staged = remote.staging_dir(served.url, tmp_path / "cache") / "base_test"
    assert not (staged / "manifest.json").exists(), "an incomplete folder must not look staged"
    assert not list(staged.glob("shard-000001.tar*"))


def test_missing_required_folder_and_absent_optional_folder(served, tmp_path):
    with pytest.raises(remote.RemoteNotFound, match="train/manifest.json"):
        remote.localize_protocol(served.url, "cross", cache_dir=tmp_path / "cache")
    (served.root / "train").mkdir()
    for f in (served.root / "base_test").iterdir():
        shutil.copy(f, served.root / "train" / f.name)
    local = Path(remote.localize_protocol(served.url, "cross", cache_dir=tmp_path / "cache"))
    assert (local / "train" / "manifest.json").is_file() and not (local / "test").exists()
    assert resolve_protocol(str(local), "cross").evals == {}


def test_tar_missing_on_the_server_is_an_error_not_an_absent_folder(served, tmp_path):
    (served.root / "base_test" / "shard-000002.tar").unlink()
    with pytest.raises(remote.RemoteDataError, match=r"shard-000002\.tar is listed .* but missing"):
        remote.stage(served.url, ["base_test"], cache_dir=tmp_path / "cache", progress=False)


def test_urls_name_their_cache_and_files():
    assert remote.staging_dir("https://h/k400/", "c") == remote.staging_dir("https://h/k400", "c")
    assert remote.staging_dir("https://h/k400", "c").name.startswith("k400-")
    assert remote.staging_dir("s3://b/k400", "c") != remote.staging_dir("gs://b/k400", "c")
    assert remote.join_url("s3://b/k400/", "base_test/manifest.json") == "s3://b/k400/base_test/manifest.json"
    assert remote.join_url("pipe:get {} -", "a/x.tar") == "pipe:get a/x.tar -"
    with pytest.raises(remote.RemoteDataError, match="query"):
        remote.join_url("https://h/k400?sig=1", "manifest.json")
    assert [remote.is_remote(d) for d in ("shards/k400", "pipe:x {}", "gs://b", "/abs")] == \
        [False, True, True, False]


def test_pipe_url(shard_folder, tmp_path):
    url = f"pipe:cat {shlex.quote(str(shard_folder))}/{{}}"
    local = remote.localize_folder(url, tmp_path / "cache")
    assert inspect_shards.verify_shards(local).ok
    with pytest.raises(remote.RemoteDataError, match="needs a {}"):
        remote.localize_folder("pipe:cat shards.tar", tmp_path / "cache")


def test_s3_through_the_aws_command_and_a_clear_error_without_it(shard_folder, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    aws = bin_dir / "aws"  # stands in for `aws s3 cp --only-show-errors s3://bucket/KEY -`
    aws.write_text(f'#!/bin/sh\nexec cat "{shard_folder}/${{4#s3://bucket/}}"\n')
    aws.chmod(0o755)
    # as if s3fs were not installed, so the command is the reader whatever this machine has
    monkeypatch.setitem(remote._CLOUD, "s3", ("kiclip_no_such_backend", *remote._CLOUD["s3"][1:]))
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    local = remote.localize_folder("s3://bucket", tmp_path / "cache")
    assert inspect_shards.verify_shards(local).ok

    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(remote.RemoteDataError, match=r"pip install fsspec kiclip_no_such_backend.*aws"):
        remote.localize_folder("s3://bucket/other", tmp_path / "cache")


def test_inspect_shards_reads_a_url_and_names_a_corrupt_shard(served, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    assert inspect_shards.main([f"{served.url}/novel_test", "--cache-dir", cache]) == 0
    assert "verified 3 shards, 6 samples: OK" in capsys.readouterr().out
    served.corrupt.add("base_test/shard-000000.tar")
    assert inspect_shards.main([f"{served.url}/base_test", "--cache-dir", cache]) == 1
    assert "shard-000000.tar" in capsys.readouterr().out
    assert inspect_shards.main([f"{served.url}/no_such_folder", "--cache-dir", cache]) == 2


def test_train_py_stops_with_the_corrupt_shards_name(served, tmp_path):
    served.corrupt.add("train_split1/shard-000002.tar")
    code, err = train_main([*FAST, "--data", served.url, "--output", str(tmp_path / "run"),
                      "--cache-dir", str(tmp_path / "cache")])
    assert code == 2, err[-3000:]
    assert "shard-000002.tar" in err and "corrupt" in err


def test_evaluate_py_stages_the_test_folders(served, tmp_path):
    import subprocess
    import sys

    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, str(EVALUATE), "--b2n", "synthetic", "--data", served.url,
                           "--checkpoint", str(tmp_path / "missing.pt"), "--cache-dir", str(cache)],
                          env=process_env(), capture_output=True, text=True, timeout=120, check=False)
    # The data resolved (staged and checked); the next check, the checkpoint's, is what fails.
    assert proc.returncode == 2 and "missing.pt does not exist" in proc.stderr, proc.stderr[-3000:]
    staged = remote.staging_dir(served.url, cache)
    assert sorted(p.name for p in staged.iterdir() if p.is_dir()) == ["base_test", "novel_test"]
    assert "train_split1/manifest.json" not in served.requests


@pytest.mark.slow
def test_training_reads_shards_over_http(b2n_shards, tmp_path):
    server = ShardServer(b2n_shards)
    try:
        out = tmp_path / "run"
        code, err = train_main([*FAST, "--data", server.url, "--output", str(out), "--max-steps", "2",
                          "--cache-dir", str(tmp_path / "cache"), "--workers", "0"])
        assert code == 0, err[-3000:]
        assert any(p.startswith("train_split1/shard-") for p in server.requests)
        assert len((out / "losses.jsonl").read_text().splitlines()) == 2
    finally:
        server.stop()


# Streaming: the fallback loader reads a URL folder without a local copy of its tars.

def _stream_loader(url: str, backend: str = "torch", num_workers: int = 0):
    from kiclip.data import ClipSpec, LoaderSpec, build_loader, open_shards

    spec = LoaderSpec(clip=ClipSpec(num_frames=4, stride=1, image_size=32), batch_size=4,
                      backend=backend, num_workers=num_workers, shuffle=False)
    return build_loader(open_shards(url), spec, device="cpu")


def _valid_rows(loader) -> tuple[list[str], list]:
    keys, videos = [], []
    for batch in loader:
        for i, ok in enumerate(batch["valid"]):
            if ok:
                keys.append(batch["key"][i])
                videos.append(batch["video"][i])
    return keys, videos


def test_torch_loader_streams_every_sample_without_a_local_copy(served, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))  # where any cache would go
    loader = _stream_loader(f"{served.url}/base_test", backend="auto")
    assert loader.shards.streamed and type(loader).__name__ == "TorchClipLoader"
    keys, videos = _valid_rows(loader)
    local_keys, local_videos = _valid_rows(_stream_loader(str(served.root / "base_test")))
    assert keys == local_keys and len(set(keys)) == 6 and loader.skipped == 0
    assert all((a == b).all() for a, b in zip(videos, local_videos))
    assert _tar_requests(served) == Counter({f"base_test/shard-00000{i}.tar": 1 for i in range(3)})
    written = [p for p in tmp_path.rglob("*") if p.is_file() and served.root not in p.parents]
    assert written == [], "streaming wrote files"


def test_dali_is_refused_a_url(served):
    with pytest.raises(remote.RemoteDataError, match="DALI reads local files only"):
        _stream_loader(f"{served.url}/base_test", backend="dali")


def test_stream_dropped_mid_tar_is_resumed(served):
    served.drop_first.add("novel_test/shard-000001.tar")
    keys, _ = _valid_rows(_stream_loader(f"{served.url}/novel_test"))
    assert len(set(keys)) == 6
    assert served.requests["novel_test/shard-000001.tar"] == 2


def test_corrupt_streamed_tar_stops_the_epoch_naming_it(served):
    served.corrupt.add("novel_test/shard-000002.tar")
    loader = _stream_loader(f"{served.url}/novel_test", num_workers=1)  # across a worker process
    with pytest.raises(remote.CorruptShardError, match=r"shard-000002\.tar .*is corrupt"):
        _valid_rows(loader)


def test_stream_gives_up_naming_the_tar(served, monkeypatch):
    monkeypatch.setattr(remote, "RETRY_WAIT_S", 0.0)
    loader = _stream_loader(f"{served.url}/novel_test")
    (served.root / "novel_test" / "shard-000000.tar").unlink()
    with pytest.raises(remote.RemoteDataError, match=r"shard-000000\.tar is listed .* but missing"):
        _valid_rows(loader)


def test_evaluate_py_stream_fetches_only_the_manifests(served, tmp_path):
    import subprocess
    import sys

    cache = tmp_path / "cache"
    proc = subprocess.run([sys.executable, str(EVALUATE), "--b2n", "synthetic", "--data", served.url,
                           "--checkpoint", str(tmp_path / "missing.pt"), "--cache-dir", str(cache),
                           "--stream"],
                          env=process_env(), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and "missing.pt does not exist" in proc.stderr, proc.stderr[-3000:]
    assert not _tar_requests(served) and not list(cache.rglob("*.tar"))
    protocol = resolve_protocol(str(cache / (remote.staging_dir(served.url).name + "-stream")),
                                "b2n", need_train=False)
    assert protocol.evals["novel"].source == f"{served.url}/novel_test"
    assert protocol.evals["base"].total == 6


def test_train_py_stream_refuses_dali(served, tmp_path):
    code, err = train_main([*FAST, "--data", served.url, "--output", str(tmp_path / "run"), "--stream",
                      "--loader", "dali", "--cache-dir", str(tmp_path / "cache")])
    assert code == 2 and "--stream reads tars with the torch loader" in err


@pytest.mark.slow
def test_training_streams_shards_over_http(b2n_shards, tmp_path, caplog):
    caplog.set_level("INFO", logger="kiclip")
    server = ShardServer(b2n_shards)
    try:
        out, cache = tmp_path / "run", tmp_path / "cache"
        code, err = train_main([*FAST, "--data", server.url, "--output", str(out), "--max-steps", "2",
                          "--cache-dir", str(cache), "--workers", "0", "--stream"])
        assert code == 0, err[-3000:]
        assert "loader backend torch" in caplog.text
        assert any(p.startswith("train_split1/shard-") for p in _tar_requests(server))
        assert not list(cache.rglob("*.tar"))
        assert len((out / "losses.jsonl").read_text().splitlines()) == 2
    finally:
        server.stop()


def test_pipe_url_streams(shard_folder):
    keys, _ = _valid_rows(_stream_loader(f"pipe:cat {shlex.quote(str(shard_folder))}/{{}}"))
    assert len(set(keys)) == 6


@pytest.mark.slow
def test_train_py_stream_stops_with_the_corrupt_shards_name(served, tmp_path):
    served.corrupt.add("train_split1/shard-000002.tar")
    code, err = train_main([*FAST, "--data", served.url, "--output", str(tmp_path / "run"), "--stream",
                      "--workers", "0", "--cache-dir", str(tmp_path / "cache")])
    assert code == 2, err[-3000:]
    assert "shard-000002.tar streamed from" in err and "is corrupt" in err
