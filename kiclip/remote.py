"""Shards in object storage: a ``--data`` URL is staged into a local cache, then read as a folder.

Accepted URLs (the forms webdataset accepts for a shard, applied to the shard *root*):

- ``http://`` / ``https://``: urllib, each file retried on a dropped connection or a 5xx reply;
- ``s3://`` / ``gs://``: fsspec when its backend (s3fs / gcsfs) is importable, else the ``aws``
  / ``gsutil`` command on PATH; neither is an error naming what to install;
- ``pipe:COMMAND``: ``{}`` in COMMAND stands for a file's path under the root (e.g.
  ``train_split1/shard-000000.tar``) and the command writes that file to stdout.

Staging copies what a run needs (each protocol folder's ``manifest.json`` and the tars it lists)
into ``CACHE/<name>-<hash of the URL>/``, a few tars at once, and verifies every tar against
the manifest's sha256.
A tar whose download does not match is fetched once more, then the run stops naming it. The
DALI ``.idx`` is rebuilt from the verified tar rather than downloaded, so nothing unverified is
read. A later run re-uses a staged tar whose size and mtime are those recorded when it was
verified (``.staged.json``), so the cache is not re-hashed on every start. Both loaders then
read the local copy.

Streaming (``--stream``, the fallback loader only) fetches only the manifests (and, when the
loader opens a folder, each tar's ``.idx``, in memory); :class:`ShardStream` then reads each tar
front to back from the URL, resuming a dropped transfer, and checks its sha256 once read whole.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import importlib.util
import io
import json
import logging
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kiclip.config import ConfigError

log = logging.getLogger(__name__)

REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "pipe:")
MANIFEST = "manifest.json"
STAMPS = ".staged.json"         # per staged folder: {tar name: {sha256, bytes, mtime_ns}}
PARTIAL = ".partial"            # suffix of a file being written (make_shards uses the same)
ATTEMPTS = 3                    # per file, for transient failures (dropped connection, 5xx)
RETRY_WAIT_S = 0.5              # doubled after each failed attempt
TIMEOUT_S = 60                  # per blocking read on an HTTP connection
CHUNK = 1 << 20
DOWNLOADS_AT_ONCE = 4           # object stores give one connection a fraction of their bandwidth

# A command's stderr that means "there is no such file" rather than "try again".
_NOT_FOUND = re.compile(r"404|not ?found|no such (file|key)|nosuchkey|no urls matched", re.I)

# scheme → (fsspec backend package, command, argv that writes the object to stdout)
_CLOUD = {
    "s3": ("s3fs", "aws", lambda url: ["aws", "s3", "cp", "--only-show-errors", url, "-"]),
    "gs": ("gcsfs", "gsutil", lambda url: ["gsutil", "-q", "cat", url]),
}


class RemoteDataError(ConfigError):
    """A remote file cannot be fetched, or does not match its manifest; names the URL."""


class RemoteNotFound(RemoteDataError):
    """The remote file does not exist (HTTP 404, a missing key or path)."""


class _Transient(Exception):
    """A failure worth another attempt (dropped connection, timeout, 5xx, command error)."""


def is_remote(data) -> bool:
    """Whether ``--data`` names a URL (see the module docstring) rather than a local folder."""
    return isinstance(data, str) and data.startswith(REMOTE_PREFIXES)


def join_url(root: str, relative: str) -> str:
    """The URL of ``relative`` (a path with ``/``) under ``root``."""
    if root.startswith("pipe:"):
        if "{}" not in root:
            raise RemoteDataError(f"{root}: a pipe: URL needs a {{}} where a file's path under the "
                                  "root goes, e.g. 'pipe:aws s3 cp s3://bucket/k400/{} -'")
        return root.replace("{}", relative)
    if "?" in root or "#" in root:
        raise RemoteDataError(f"{root}: a URL root cannot carry a query or fragment (files are "
                              "named by appending their path); use s3://, gs:// or pipe: for "
                              "signed access")
    return root.rstrip("/") + "/" + relative if relative else root


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kiclip/shards`` (``~/.cache/kiclip/shards`` when it is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kiclip" / "shards"


def staging_dir(url: str, cache_dir: str | Path | None = None) -> Path:
    """Where ``url`` is staged: ``CACHE/<last path part>-<12 hex of sha256(url)>``."""
    if not url.startswith("pipe:"):
        url = url.rstrip("/")  # https://host/k400/ and https://host/k400 are one cache
    tail = re.sub(r"[^A-Za-z0-9_.-]+", "_", url.rsplit("/", 1)[-1]).strip("._") or "data"
    digest = hashlib.sha256(url.encode()).hexdigest()[:12]
    return Path(cache_dir or default_cache_dir()).expanduser() / f"{tail[:40]}-{digest}"


def protocol_folders(mode: str, split: int = 1, *, need_train: bool = True) -> tuple[list[str], list[str]]:
    """(required, optional) folders of a protocol under ``--data``: the names
    kiclip.layout.resolve_protocol looks for."""
    if mode == "b2n":
        return ([f"train_split{split}"] if need_train else []) + ["base_test", "novel_test"], []
    return (["train"], ["test"]) if need_train else (["test"], [])


def localize_protocol(data: str, mode: str, split: int = 1, *, need_train: bool = True,
                      cache_dir: str | Path | None = None, stream: bool = False) -> str:
    """``data`` itself when local; for a URL, the local folder its protocol folders were staged
    into (see ``protocol_folders``), ready for ``resolve_protocol``; with ``stream``, the local
    folder holding only their manifests (``fetch_manifests``), whose tars the fallback loader
    streams. ConfigError for ``stream`` with a local ``data``."""
    if not is_remote(data):
        if stream:
            raise ConfigError(f"--stream reads a --data URL; {data} is a local folder")
        return data
    required, optional = protocol_folders(mode, split or 1, need_train=need_train)
    if stream:
        return str(fetch_manifests(data, required, optional=optional, cache_dir=cache_dir))
    return str(stage(data, required, optional=optional, cache_dir=cache_dir))


def folder_url(url: str, folder: str) -> str:
    """The URL of the make_shards ``folder`` under the root ``url`` (a pipe: URL keeps its
    ``{}``, now standing for a path under the folder)."""
    if not folder:
        return url
    if url.startswith("pipe:"):
        join_url(url, "")  # the same error for a pipe: URL without {}
        return url.replace("{}", folder + "/{}")
    return join_url(url, folder)


def fetch_manifests(url: str, folders: Sequence[str], *, optional: Sequence[str] = (),
                    cache_dir: str | Path | None = None) -> Path:
    """For streaming: fetch only the ``manifest.json`` of each folder under ``url`` (an
    ``optional`` folder the storage lacks is left out) into ``<staging_dir(url)>-stream/``,
    each beside a kiclip.layout.STREAM_SOURCE file naming the folder's URL; return that root.
    No tar is fetched. Raises RemoteDataError naming what failed."""
    from kiclip.layout import STREAM_SOURCE

    root = staging_dir(url, cache_dir)
    root = root.with_name(root.name + "-stream")
    _make_cache_folder(root, url)
    with _locked(root / ".lock"):
        for folder in [*folders, *optional]:
            source = folder_url(url, folder)
            manifest_url = join_url(source, MANIFEST)
            try:
                raw = fetch_bytes(manifest_url)
            except RemoteNotFound:
                if folder not in optional:
                    raise
                log.info("%s has no %s/ folder: going on without it", url, folder)
                shutil.rmtree(root / folder, ignore_errors=True)
                continue
            manifest_shards(raw, manifest_url)
            (root / folder).mkdir(parents=True, exist_ok=True)
            _write_atomic(root / folder / STREAM_SOURCE, source.encode())
            _write_atomic(root / folder / MANIFEST, raw)
    log.info("%s: manifests in %s, tars streamed", url, root)
    return root


def _make_cache_folder(root: Path, url: str) -> None:
    """Create ``root`` (the local cache of ``url``), or RemoteDataError saying to pick another."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RemoteDataError(f"cannot create the cache folder {root} for {url} ({err}); "
                              "pass --cache-dir") from None


def localize_folder(data: str, cache_dir: str | Path | None = None) -> Path:
    """``data`` as a Path when local; for a URL of one make_shards folder, its staged copy."""
    if not is_remote(data):
        return Path(data)
    return stage(data, [""], cache_dir=cache_dir)


def stage(url: str, folders: Sequence[str], *, optional: Sequence[str] = (),
          cache_dir: str | Path | None = None, progress: bool = True) -> Path:
    """Stage the make_shards ``folders`` under ``url`` ("" = the root itself); return the local
    root. An ``optional`` folder that does not exist remotely is left out (and any stale staged
    copy of it removed). Processes staging the same URL at once take turns (a file lock), so
    the ranks of one machine download once. Raises RemoteDataError naming what failed."""
    root = staging_dir(url, cache_dir)
    _make_cache_folder(root, url)
    with _locked(root / ".lock"):
        for folder in folders:
            stage_folder(url, folder, root / folder, progress=progress)
        for folder in optional:
            try:
                stage_folder(url, folder, root / folder, progress=progress)
            except RemoteNotFound:
                log.info("%s has no %s/ folder: going on without it", url, folder)
                shutil.rmtree(root / folder, ignore_errors=True)
    log.info("%s staged in %s", url, root)
    return root


def stage_folder(url: str, folder: str, dest: Path, *, progress: bool = True) -> Path:
    """Make ``dest`` a verified copy of the make_shards folder ``folder`` under ``url``.

    The manifest is written last (and removed while tars change), so a staged folder with a
    ``manifest.json`` is complete. Tars not in the manifest are removed from ``dest``.
    """
    manifest_url = join_url(url, f"{folder}/{MANIFEST}" if folder else MANIFEST)
    raw = fetch_bytes(manifest_url)
    shards = manifest_shards(raw, manifest_url)
    dest.mkdir(parents=True, exist_ok=True)
    stamps = _read_stamps(dest)
    listed = {s["name"] for s in shards}
    for stale in [p for p in dest.glob("*.tar") if p.name not in listed]:
        stale.unlink()
        stale.with_suffix(".idx").unlink(missing_ok=True)
    todo = [s for s in shards if not _is_current(dest, s, stamps)]
    if todo:
        (dest / MANIFEST).unlink(missing_ok=True)
        _download_shards(url, folder, dest, todo, stamps, progress=progress)
    _write_atomic(dest / MANIFEST, raw)
    return dest


def manifest_shards(raw: bytes, manifest_url: str) -> list[dict]:
    """The manifest's shard list, each entry checked for name, sha256 and bytes."""
    try:
        shards = json.loads(raw)["shards"]
        for entry in shards:
            if not (isinstance(entry["name"], str) and "/" not in entry["name"]
                    and entry["name"].endswith(".tar")):
                raise ValueError(f"bad shard name {entry['name']!r}")
            str(entry["sha256"]), int(entry["bytes"])
    except (ValueError, KeyError, TypeError) as err:
        raise RemoteDataError(f"{manifest_url}: not a make_shards manifest with per-shard name, "
                              f"sha256 and bytes ({err!r})") from None
    return shards


def _is_current(dest: Path, entry: dict, stamps: dict) -> bool:
    """Whether ``dest`` already holds this shard as the manifest says (and its index).

    A tar stamped at its current size and mtime with the manifest's sha256 is trusted without
    re-hashing; any other tar present is hashed once and stamped when it matches."""
    tar = dest / entry["name"]
    if not tar.is_file():
        return False
    stat = tar.stat()
    stamp = stamps.get(entry["name"], {})
    if stamp != {"sha256": entry["sha256"], "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}:
        if stat.st_size != int(entry["bytes"]) or _file_sha256(tar) != entry["sha256"]:
            return False
        stamps[entry["name"]] = {"sha256": entry["sha256"], "bytes": stat.st_size,
                                 "mtime_ns": stat.st_mtime_ns}
        _write_atomic(dest / STAMPS, json.dumps(stamps, indent=1).encode())
    if not tar.with_suffix(".idx").is_file():
        _write_index(tar)
    return True


def _download_shards(url: str, folder: str, dest: Path, todo: list[dict], stamps: dict, *,
                     progress: bool) -> None:
    """Fetch the tars of ``todo`` into ``dest``, DOWNLOADS_AT_ONCE at a time; verify, index and
    stamp each. RemoteDataError naming the first shard that fails."""
    from tqdm import tqdm

    import kiclip.data.shards  # noqa: F401 - imported once here, not in the worker threads

    lock = threading.Lock()
    total = sum(int(s["bytes"]) for s in todo)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
              desc=f"staging {folder or 'shards'} ({len(todo)} tars)") as bar:

        def count(n: int) -> None:
            with lock:
                bar.update(n)

        def stage_one(entry: dict) -> None:
            name = entry["name"]
            tar = _fetch_verified(join_url(url, f"{folder}/{name}" if folder else name), dest,
                                  entry, count, manifest=f"{folder or '.'}/{MANIFEST}")
            _write_index(tar)
            stat = tar.stat()
            with lock:
                stamps[name] = {"sha256": entry["sha256"], "bytes": stat.st_size,
                                "mtime_ns": stat.st_mtime_ns}
                _write_atomic(dest / STAMPS, json.dumps(stamps, indent=1).encode())

        with ThreadPoolExecutor(min(DOWNLOADS_AT_ONCE, len(todo))) as pool:
            futures = [pool.submit(stage_one, entry) for entry in todo]
            try:
                for future in futures:
                    future.result()
            finally:
                for future in futures:
                    future.cancel()  # after a failure, start no further downloads


def _fetch_verified(shard_url: str, dest: Path, entry: dict, on_bytes: Callable[[int], object],
                    *, manifest: str) -> Path:
    """Download one tar into ``dest`` and rename it into place once its sha256 and size are the
    manifest's. One more download on a mismatch, then RemoteDataError naming the shard."""
    name = entry["name"]
    partial = dest / (name + PARTIAL)
    for attempt in (1, 2):
        try:
            digest, size = fetch_to_file(shard_url, partial, on_bytes)
        except RemoteNotFound:
            partial.unlink(missing_ok=True)
            # not "absent folder": the manifest was there and lists this tar
            raise RemoteDataError(f"{name} is listed in {manifest} but missing at {shard_url}") from None
        if digest == entry["sha256"] and size == int(entry["bytes"]):
            os.replace(partial, dest / name)
            return dest / name
        on_bytes(-size)
        log.warning("%s: downloaded copy (sha256 %s..., %d bytes) does not match the manifest "
                    "(%s..., %s bytes)%s", shard_url, digest[:12], size, entry["sha256"][:12],
                    entry["bytes"], ": fetching it again" if attempt == 1 else "")
    partial.unlink(missing_ok=True)
    raise RemoteDataError(
        f"{name} at {shard_url} is corrupt: downloaded twice, neither copy has the manifest's "
        f"sha256 {entry['sha256'][:12]}... ({entry['bytes']} bytes); the last had sha256 "
        f"{digest[:12]}... ({size} bytes). Rebuild it with make_shards or upload it again")


def _write_index(tar: Path) -> None:
    """The DALI ``.idx`` beside ``tar``, rebuilt from the verified tar's headers."""
    from kiclip.data.shards import write_index

    partial = tar.with_suffix(".idx" + PARTIAL)
    write_index(str(tar), str(partial))
    os.replace(partial, tar.with_suffix(".idx"))


def fetch_bytes(url: str) -> bytes:
    """The whole (small) file at ``url``; RemoteNotFound when it does not exist."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "file"
        fetch_to_file(url, path)
        return path.read_bytes()


def fetch_to_file(url: str, path: Path, on_bytes: Callable[[int], object] = lambda n: None
                  ) -> tuple[str, int]:
    """Copy ``url`` into ``path`` (overwritten); return (sha256 hex, bytes).

    Up to ATTEMPTS tries with a growing wait for transient failures; ``on_bytes(n)`` is called
    as bytes arrive (with a negative n to take back a failed attempt's). RemoteNotFound when the
    file does not exist, RemoteDataError when the tries are used up."""
    copy = _copier(url)
    wait = RETRY_WAIT_S
    for attempt in range(1, ATTEMPTS + 1):
        sink = _HashingSink(path, on_bytes)
        try:
            with sink:
                copy(url, sink.write)
            return sink.digest.hexdigest(), sink.size
        except _Transient as err:
            on_bytes(-sink.size)
            if attempt == ATTEMPTS:
                raise RemoteDataError(f"{url}: {err} (gave up after {ATTEMPTS} attempts)") from None
            log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", url, err, wait,
                        attempt + 1, ATTEMPTS)
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


class _HashingSink:
    """A file being written, with its sha256 and size kept as bytes go in."""

    def __init__(self, path: Path, on_bytes: Callable[[int], object]):
        self.path, self.on_bytes = path, on_bytes
        self.digest, self.size = hashlib.sha256(), 0

    def __enter__(self):
        self.file = open(self.path, "wb")  # noqa: SIM115 - closed in __exit__
        return self

    def __exit__(self, *exc):
        self.file.close()

    def write(self, data: bytes) -> None:
        try:
            self.file.write(data)
        except OSError as err:  # a full disk is not worth another download attempt
            raise RemoteDataError(f"cannot write {self.path} ({err})") from None
        self.digest.update(data)
        self.size += len(data)
        self.on_bytes(len(data))


def _copier(url: str) -> Callable[[str, Callable[[bytes], None]], None]:
    """The function that streams ``url`` into a writer, by scheme."""
    if url.startswith(("http://", "https://")):
        return _copy_http
    if url.startswith("pipe:"):
        return lambda u, write: _copy_command(u[len("pipe:"):], write, url=u, shell=True)
    scheme = url.split("://", 1)[0]
    if scheme in _CLOUD:
        backend, command, argv = _CLOUD[scheme]
        if importlib.util.find_spec("fsspec") and importlib.util.find_spec(backend):
            return _copy_fsspec
        if shutil.which(command):
            return lambda u, write: _copy_command(argv(u), write, url=u, shell=False)
        raise RemoteDataError(f"{url}: reading {scheme}:// needs fsspec with {backend} "
                              f"(pip install fsspec {backend}) or the {command} command on PATH")
    raise RemoteDataError(f"{url}: unsupported URL; use http(s)://, s3://, gs:// or pipe:")


def _copy_http(url: str, write: Callable[[bytes], None]) -> None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as reply:
            expected = reply.headers.get("Content-Length")
            got = 0
            for chunk in iter(lambda: reply.read(CHUNK), b""):
                write(chunk)
                got += len(chunk)
            if expected is not None and got != int(expected):
                raise _Transient(f"connection closed after {got} of {expected} bytes")
    except urllib.error.HTTPError as err:
        if err.code in (404, 410):
            raise RemoteNotFound(f"{url}: not found (HTTP {err.code})") from None
        if err.code >= 500 or err.code == 429:
            raise _Transient(f"HTTP {err.code} {err.reason}") from None
        raise RemoteDataError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:  # URLError, reset, timeout, short read
        raise _Transient(f"{type(err).__name__}: {err}") from None


def _copy_command(command, write: Callable[[bytes], None], *, url: str, shell: bool) -> None:
    with tempfile.TemporaryFile() as errors:
        # stderr to a file: a chatty command must not block on a full pipe we are not reading
        proc = subprocess.Popen(command, shell=shell, stdout=subprocess.PIPE, stderr=errors)
        try:
            for chunk in iter(lambda: proc.stdout.read(CHUNK), b""):
                write(chunk)
        except BaseException:  # the reader stopped (or failed): the command must not linger
            proc.kill()
            proc.wait()
            raise
        proc.stdout.close()
        rc = proc.wait()
        errors.seek(0)
        message = errors.read().decode(errors="replace").strip()[-500:]
    if rc != 0:
        if _NOT_FOUND.search(message):
            raise RemoteNotFound(f"{url}: not found ({message})")
        raise _Transient(f"command exited {rc}: {message or '(no stderr)'}")


def _copy_fsspec(url: str, write: Callable[[bytes], None]) -> None:
    import fsspec

    try:
        with fsspec.open(url, "rb") as remote:
            for chunk in iter(lambda: remote.read(CHUNK), b""):
                write(chunk)
    except FileNotFoundError:
        raise RemoteNotFound(f"{url}: not found") from None
    except OSError as err:
        raise _Transient(f"{type(err).__name__}: {err}") from None


def _read_stamps(dest: Path) -> dict:
    try:
        return json.loads((dest / STAMPS).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}  # no record: present tars are hashed once before they are trusted


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + PARTIAL)
    partial.write_bytes(data)
    os.replace(partial, path)


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive lock on ``path`` (other processes staging the same URL wait)."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is staging into %s: waiting for it", path.parent)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# Streaming: the fallback loader reads a URL's tars front to back, without a local copy.

STREAM_CHUNKS = 8               # chunks a stream's fetching thread may run ahead of its reader


class CorruptShardError(RemoteDataError):
    """A streamed tar whose bytes are not the manifest's (sha256 or size); names the shard."""


class _Stopped(Exception):
    """The reader closed the stream: the fetching thread ends."""


_END = object()


class _Fetch:
    """``copy(url, write)`` (a ``_copier``) in a daemon thread, its chunks handed to the reader
    through a bounded queue (then ``_END``, or the exception that ended it); the first ``skip``
    bytes are dropped, so a re-opened download resumes where the reader is."""

    def __init__(self, copy, url: str, skip: int):
        self.queue: queue.Queue = queue.Queue(maxsize=STREAM_CHUNKS)
        self.stopped = threading.Event()
        self.skip = skip
        threading.Thread(target=self._run, args=(copy, url), daemon=True).start()

    def _run(self, copy, url: str) -> None:
        try:
            copy(url, self._write)
            self._put(_END)
        except _Stopped:
            pass
        except Exception as err:  # noqa: BLE001 - handed to the reader, which decides
            self._put(err)

    def _write(self, chunk: bytes) -> None:
        if self.skip:
            dropped = min(self.skip, len(chunk))
            chunk, self.skip = chunk[dropped:], self.skip - dropped
        if chunk and not self._put(chunk):
            raise _Stopped

    def _put(self, item) -> bool:
        while not self.stopped.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        return self.queue.get()

    def stop(self) -> None:
        self.stopped.set()


class ShardStream(io.RawIOBase):
    """The tar at ``url`` as a file read front to back (any URL ``_copier`` reads), hashed as
    it is read. A transient failure (dropped connection, timeout, 5xx, command error) re-opens
    it and drops the bytes already read as they come again, up to ATTEMPTS attempts per tar; after that, or when
    the tar does not exist, reads raise RemoteDataError naming it (and keep raising it).
    ``verify()`` reads to the end and raises CorruptShardError unless the bytes have the
    manifest's ``sha256`` and ``size``."""

    def __init__(self, url: str, sha256: str, size: int):
        super().__init__()
        self.url, self.sha256, self.size = url, sha256, size
        self.name = url.rsplit("/", 1)[-1]
        self.digest = hashlib.sha256()
        self.position = 0
        self.failures = 0
        self._copy = _copier(url)
        self._pending = memoryview(b"")
        self._ended = False
        self._fatal: str | None = None  # kept as text: webdataset edits an exception's args
        self._fetch = _Fetch(self._copy, url, 0)

    def __repr__(self) -> str:
        return self.url

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            if self._fatal is not None:
                raise RemoteDataError(self._fatal)
            if self._ended:
                return 0
            item = self._fetch.get()
            if item is _END:
                self._ended = True
            elif isinstance(item, BaseException):
                self._failed(item)
            else:
                self._pending = memoryview(item)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self.digest.update(self._pending[:n])
        self._pending = self._pending[n:]
        self.position += n
        return n

    def _failed(self, err: BaseException) -> None:
        """Re-open after a transient failure, or remember why the stream cannot go on."""
        if isinstance(err, RemoteNotFound):
            self._fatal = f"{self.name} is listed in its manifest but missing at {self.url}"
        elif not isinstance(err, _Transient):
            self._fatal = str(err) if isinstance(err, RemoteDataError) else f"{self.url}: {err!r}"
        else:
            self.failures += 1
            if self.failures >= ATTEMPTS:
                self._fatal = f"{self.url}: {err} (gave up after {ATTEMPTS} attempts)"
            else:
                wait = RETRY_WAIT_S * 2 ** (self.failures - 1)
                log.warning("%s: %s; resuming at byte %d in %.1f s (attempt %d of %d)",
                            self.url, err, self.position, wait, self.failures + 1, ATTEMPTS)
                time.sleep(wait)
                self._fetch = _Fetch(self._copy, self.url, self.position)

    def verify(self) -> None:
        """Read what is left and check the whole tar against the manifest (see the class doc)."""
        buffer = bytearray(CHUNK)
        while self.readinto(buffer):
            pass
        digest = self.digest.hexdigest()
        if digest != self.sha256 or self.position != self.size:
            raise CorruptShardError(
                f"{self.name} streamed from {self.url} is corrupt: sha256 {digest[:12]}... "
                f"({self.position} bytes), the manifest says {self.sha256[:12]}... ({self.size} "
                "bytes). Rebuild it with make_shards or upload it again")

    def close(self) -> None:
        if not self.closed:
            self._fetch.stop()
        super().close()
