"""A run's staging location: a local folder, or a prefix in an object store that every worker reaches.

backup_daily's tasks hand their output to each other through staging: the dumps, the file
listing, the dump results and the archive. ``backup.staging`` says where:

- ``file:///folder`` (the default, ``backup.staging_directory``): the run folder is a local
  folder; every task works in it directly (one host, or a volume all workers mount). Nothing is
  copied: this is the fast path and behaves exactly as before object staging existed.
- ``s3://bucket/prefix`` with an Airflow AWS connection: the run folder is a prefix in the bucket,
  addressed as Airflow ``ObjectStoragePath`` objects. Each task works in a private folder below
  ``backup.staging_directory`` on its own worker (``StagedRun.workdir``), streams what it made
  into the prefix, and removes its folder before it ends, whatever happened: no worker keeps
  plaintext after its task. Readers stream objects back (``open_read``); nothing is held in memory.

A location is a string: a local path, or an ``s3://`` URL. Tasks pass these strings through XCom,
so a task on another host opens the same thing.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from backup_ops.core.errors import BackupError, ConfigError
from backup_ops.core.models import human_bytes

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from backup_ops.core.config import BackupConfig

log = logging.getLogger(__name__)

COPY_CHUNK = 8 << 20
WRITE_BLOCK = 16 << 20
"""Multipart part size of staged writes: extra memory is about three blocks, whatever the object's size."""
LONGEST_RUN = timedelta(hours=23)
"""backup_daily's ``dagrun_timeout``: a daily backup that needs longer would overlap the next one."""
STALE_AFTER = LONGEST_RUN + timedelta(hours=1)
"""A run folder, run prefix or task work folder untouched this long belongs to a run that cannot be going any more."""
RUN_MARKER = ".backup-ops-run"
"""Written first into every remote run prefix: it names the run, and its age dates a prefix that holds nothing else."""


class StagingError(BackupError):
    """The staging location cannot be read or written."""


def is_remote(location: str) -> bool:
    return location.startswith("s3://")


@dataclass(frozen=True)
class StagedRun:
    """One run's staging: ``location`` is its folder (a local path) or its prefix (``s3://bucket/prefix/<run>``)."""

    location: str
    conn_id: str | None
    work_root: Path
    """``backup.staging_directory``: where a task makes its private work folder when staging is remote."""

    @classmethod
    def of(cls, config: BackupConfig, location: str) -> StagedRun:
        return cls(location, config.backup.staging_location.conn_id, config.backup.staging_directory)

    @property
    def remote(self) -> bool:
        return is_remote(self.location)

    @property
    def folder_name(self) -> str:
        return self.location.rstrip("/").rsplit("/", 1)[-1]

    def child(self, name: str) -> str:
        """The location of ``name`` (``a/b`` allowed) in this run's staging."""
        return f"{self.location.rstrip('/')}/{name}" if self.remote else str(Path(self.location) / name)

    # ------------------------------------------------------------------ working on this host

    @contextmanager
    def workdir(self) -> Iterator[Path]:
        """The folder this task writes in: the run folder itself when local, else a private one removed on exit."""
        if not self.remote:
            yield Path(self.location)
            return
        try:
            self.work_root.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f"{self.folder_name}-", dir=self.work_root))
        except OSError as exc:
            raise ConfigError(f"backup.staging_directory {self.work_root} cannot hold this task's work folder "
                              f"({exc.strerror or exc}); point it at a writable local directory.") from exc
        # What tasks of this DAG killed on this host left (a plaintext dump, perhaps): no setup may run here.
        dag_prefix = self.folder_name.split("__", 1)[0] + "__"
        sweep_local(self.work_root, dag_prefix, keep=folder, stale_after=STALE_AFTER)
        try:
            yield folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():
                log.warning("Could not remove this task's work folder %s; the next run on this host removes it.",
                            folder)

    # ------------------------------------------------------------------ remote objects

    def put(self, source: Path, name: str) -> str:
        """Stream ``source`` (a file in this task's work folder) to ``name`` in staging; returns its location.

        Local staging: ``source`` already is in the run folder, so it is its own location.
        """
        if not self.remote:
            return str(source)
        target = self.path(name)
        started = time.monotonic()
        size = source.stat().st_size
        with open(source, "rb") as src, self._writer(target, self.child(name)) as out:
            shutil.copyfileobj(src, out, COPY_CHUNK)
        stored = self._size(target)
        if stored != size:
            raise StagingError(f"Staging {name} at {self.child(name)} stored {stored} bytes of {size}; the object "
                               "store did not keep the whole file. Check the staging bucket and retry.")
        seconds = time.monotonic() - started
        log.info("Staged %s at %s: %s in %.1f s (%s/s)", name, self.child(name), human_bytes(size), seconds,
                 human_bytes(size / seconds if seconds else 0))
        return self.child(name)

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write a small object (a result, a listing) to ``name`` in staging; returns its location."""
        if not self.remote:
            path = Path(self.child(name))
            path.write_bytes(data)
            return str(path)
        with self._writer(self.path(name), self.child(name)) as out:
            out.write(data)
        return self.child(name)

    def read_bytes(self, location: str) -> bytes:
        with self.open_read(location) as src:
            return src.read()

    @contextmanager
    def open_read(self, location: str) -> Iterator[IO[bytes]]:
        """Stream a staged object (or a local file) for reading; a missing one is a StagingError naming it."""
        try:
            if not is_remote(location):
                with open(location, "rb") as local:
                    yield local
                return
            with self._path_of(location).open("rb", block_size=WRITE_BLOCK) as remote:
                yield remote
        except FileNotFoundError as exc:
            raise StagingError(f"{location} is missing from staging: the task that made it did not finish, or "
                               "something removed it; run the backup again.") from exc
        except OSError as exc:
            raise _store_error(f"read {location}", exc) from exc

    def open_staged(self, location: str) -> tuple[BinaryIO, os.stat_result]:
        """``core.archive``'s opener for staged dumps: the object, and a stat giving its size (mode 0600)."""
        path = self._path_of(location)
        try:
            info = path.fs.info(path.path)
        except FileNotFoundError as exc:
            raise StagingError(f"{location} is missing from staging: the dump that made it did not finish, or "
                               "something removed it; run the backup again.") from exc
        modified = _timestamp(info.get("LastModified")) or time.time()
        fake = os.stat_result((stat.S_IFREG | 0o600, 0, 0, 1, 0, 0, int(info["size"]),
                               int(modified), int(modified), int(modified)))
        return path.open("rb", block_size=WRITE_BLOCK), fake

    def fetch(self, location: str, target: Path) -> Path:
        """Copy a staged object into ``target`` on this host (0600), streaming; returns ``target``."""
        started = time.monotonic()
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out, self.open_read(location) as src:
            shutil.copyfileobj(src, out, COPY_CHUNK)
        size = target.stat().st_size
        seconds = time.monotonic() - started
        log.info("Fetched %s from staging to %s: %s in %.1f s (%s/s)", location, target, human_bytes(size), seconds,
                 human_bytes(size / seconds if seconds else 0))
        return target

    def path(self, name: str = "") -> ObjectStoragePath:
        return self._path_of(self.child(name) if name else self.location)

    def _path_of(self, location: str) -> ObjectStoragePath:
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(location, conn_id=self.conn_id)

    @contextmanager
    def _writer(self, target: ObjectStoragePath, location: str) -> Iterator[IO[bytes]]:
        """A write that becomes visible whole or not at all (an error inside discards the upload)."""
        try:
            out: Any = target.open("wb", autocommit=False, block_size=WRITE_BLOCK)
        except Exception as exc:
            raise _store_error(f"open {location} for writing", exc) from exc
        try:
            yield out
            out.close()  # uploads the last part; with autocommit off the object does not exist yet
            out.commit()  # completes the multipart upload: the object appears whole
        except BaseException as exc:
            try:
                out.discard()
                out.closed = True  # discarded: nothing left to flush
            except Exception:
                log.warning("Could not abort the upload of %s; the bucket's AbortIncompleteMultipartUpload rule "
                            "removes its parts.", location, exc_info=True)
            if isinstance(exc, BackupError) or not isinstance(exc, Exception):
                raise
            raise _store_error(f"write {location}", exc) from exc

    def _size(self, target: ObjectStoragePath) -> int:
        target.fs.invalidate_cache()
        return int(target.fs.info(target.path)["size"])

    # ------------------------------------------------------------------ the run prefix

    def prepare(self) -> None:
        """Remote: prove the store takes a write by writing the run's marker (a clear error when it does not)."""
        if self.remote:
            self.write_bytes(RUN_MARKER, f"{self.folder_name}\n".encode())

    def remove(self, keep: str | None = None) -> int:
        """Delete this run's prefix (except the object ``keep``); returns how many objects were removed."""
        if not self.remote:
            raise BackupError("StagedRun.remove is for remote staging; local run folders are removed by the "
                              "staging module.")
        root = self.path()
        fs = root.fs
        fs.invalidate_cache()
        try:
            names = [key for key in fs.find(root.path) if not keep or key != f"{root.path.rstrip('/')}/{keep}"]
            if names:
                fs.rm(names)
        except FileNotFoundError:
            return 0
        except Exception as exc:
            raise _store_error(f"remove this run's staging at {self.location}", exc) from exc
        return len(names)


def sweep_local(root: Path, name_prefix: str, *, keep: Path, stale_after: timedelta,
                now: float | None = None) -> list[Path]:
    """Remove the folders below ``root`` named ``name_prefix…`` (but ``keep``) untouched for ``stale_after``.

    Such a folder belongs to a run or task killed before it cleaned up, and may hold plaintext
    dumps. Returns what was removed; one that cannot be removed is logged and left for next time.
    """
    cutoff = (time.time() if now is None else now) - stale_after.total_seconds()
    removed: list[Path] = []
    for path in [p for p in _entries(root) if p.name.startswith(name_prefix) and p != keep]:
        try:
            if path.is_symlink() or _newest_change(path) >= cutoff:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as exc:
            log.warning("Could not remove %s, left over by an earlier run: %s", path, exc.strerror or exc)
            continue
        log.warning("Removed %s, left over by an earlier run that ended without its teardown (untouched for over "
                    "%d hours)", path, stale_after.total_seconds() // 3600)
        removed.append(path)
    return removed


def _entries(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _newest_change(path: Path) -> float:
    """The latest modification time of ``path`` or anything below it (links are not followed)."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for folder, dirs, files in os.walk(path):
            for name in (*dirs, *files):
                try:
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
                except FileNotFoundError:
                    continue
    return newest


def stale_prefixes(root: str, conn_id: str | None, name_prefix: str, keep: str, older_than: datetime) -> list[str]:
    """The run prefixes below ``root`` whose names start with ``name_prefix`` and whose newest object is older."""
    from airflow.sdk import ObjectStoragePath

    base = ObjectStoragePath(root, conn_id=conn_id)
    fs = base.fs
    fs.invalidate_cache()
    try:
        entries = fs.ls(base.path, detail=False)
    except FileNotFoundError:
        return []
    stale = []
    for entry in entries:
        name = str(entry).rstrip("/").rsplit("/", 1)[-1]
        location = f"{root.rstrip('/')}/{name}"
        if not name.startswith(name_prefix) or location == keep.rstrip("/"):
            continue
        details = fs.find(str(entry), detail=True)
        newest = max((_timestamp(info.get("LastModified")) or 0.0 for info in details.values()), default=0.0)
        if details and newest < older_than.timestamp():
            stale.append(location)
    return stale


def _timestamp(value: Any) -> float | None:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    return None


def _store_error(action: str, exc: Exception) -> StagingError:
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StagingError(f"Could not {action}: {detail}. Check backup.staging (the bucket exists, the connection's "
                        "credentials may write to it, the endpoint is reachable); the run can be retried.")
