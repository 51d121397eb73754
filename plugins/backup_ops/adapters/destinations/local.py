"""A destination on a local (or mounted) file system: atomic publish with fsync and rename."""

from __future__ import annotations

import errno
import hashlib
import os
import secrets
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO

from backup_ops.adapters.destinations.base import (
    BackupDestination,
    PublishedBackup,
    backup_from_listing,
    receipt_bytes,
    receipt_from_bytes,
    receipt_path,
    sorted_newest_first,
)
from backup_ops.core.errors import DestinationError, VerificationError
from backup_ops.core.fileio import CHUNK_SIZE, fsync_directory, sha256_of_stream
from backup_ops.core.models import BackupFile, Receipt, is_backup_key

PARTIAL_SUFFIX = ".partial"


class LocalDestination(BackupDestination):
    """Backups under ``<path>/<backup_name>/`` on a local or mounted file system."""

    kind = "local"

    def __init__(self, name: str, backup_name: str, root: Path) -> None:
        super().__init__(name, backup_name)
        self.root = Path(root)

    def location(self, path: str = "") -> str:
        return (self.root / path).as_uri() if path else self.root.as_uri()

    def _file(self, path: str) -> Path:
        """Absolute path of a key, refusing keys that would leave the backup folder."""
        pure = PurePosixPath(path)
        if pure.is_absolute() or ".." in pure.parts or not pure.parts or pure.parts[0] != self.backup_name:
            raise DestinationError(
                f"Destination {self.name}: {path!r} is not a key below {self.backup_name}/; refusing to touch it."
            )
        return self.root.joinpath(*pure.parts)

    def check_reachable(self) -> None:
        folder = self.root / self.backup_name
        if not self.root.is_dir():
            raise DestinationError(
                f"Destination {self.name}: directory {self.root} does not exist; create it or fix destination path."
            )
        probe_dir = folder if folder.is_dir() else self.root
        if not os.access(probe_dir, os.W_OK | os.X_OK):
            raise DestinationError(f"Destination {self.name}: directory {probe_dir} is not writable by this process.")

    def list_backups(self) -> list[BackupFile]:
        folder = self.root / self.backup_name
        if not folder.is_dir():
            return []
        found: list[BackupFile] = []
        try:
            for dirpath, _dirnames, filenames in os.walk(folder, onerror=_raise):
                for file_name in filenames:
                    if not is_backup_key(file_name):
                        continue
                    full = Path(dirpath) / file_name
                    try:
                        st = full.stat()
                    except FileNotFoundError:  # deleted while listing
                        continue
                    key = full.relative_to(self.root).as_posix()
                    modified = datetime.fromtimestamp(st.st_mtime, tz=UTC)
                    found.append(backup_from_listing(key, st.st_size, modified))
        except OSError as exc:
            raise DestinationError(f"Destination {self.name}: cannot list {folder}: {exc.strerror or exc}.") from exc
        return sorted_newest_first(found)

    def open_backup(self, path: str) -> AbstractContextManager[IO[bytes]]:
        file = self._file(path)
        try:
            return open(file, "rb")
        except OSError as exc:
            raise DestinationError(f"Destination {self.name}: cannot open {file}: {exc.strerror}.") from exc

    def read_receipt(self, path: str) -> Receipt | None:
        try:
            return receipt_from_bytes(self._file(receipt_path(path)).read_bytes())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DestinationError(f"Destination {self.name}: cannot read receipt of {path}: {exc.strerror}.") from exc

    def local_path(self, path: str) -> Path | None:
        return self._file(path)

    def publish(self, source: Path, file_name: str, receipt: Receipt) -> PublishedBackup:
        key = self.backup_key(file_name)
        final = self._file(key)
        started = time.monotonic()
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                return self._already_published(key, final, receipt, started)
            _write_atomically(_receipt_file(final), receipt_bytes(receipt))
            digest, size = _copy_atomically(source, final)
        except FileExistsError:
            return self._already_published(key, final, receipt, started)
        except OSError as exc:
            raise DestinationError(_os_error_sentence(self.name, final, exc)) from exc
        if digest != receipt.sha256 or size != receipt.size:
            self._discard(final)
            raise VerificationError(
                f"Destination {self.name}: the staged archive changed while it was copied to {final} "
                f"(expected {receipt.size} bytes sha256 {receipt.sha256[:12]}…, copied {size} bytes "
                f"sha256 {digest[:12]}…); the copy was removed, rerun the backup."
            )
        return PublishedBackup(self.name, key, self.location(key), size, digest, time.monotonic() - started)

    def _already_published(self, key: str, final: Path, receipt: Receipt, started: float) -> PublishedBackup:
        with open(final, "rb") as existing:
            digest, size = sha256_of_stream(existing)
        if digest != receipt.sha256:
            raise DestinationError(
                f"Destination {self.name}: {final} already exists with different content; "
                "backup-ops never overwrites an archive, so nothing was written."
            )
        return PublishedBackup(self.name, key, self.location(key), size, digest, time.monotonic() - started, True)

    def verify_published(self, published: PublishedBackup) -> None:
        file = self._file(published.path)
        try:
            with open(file, "rb") as stream:
                digest, size = sha256_of_stream(stream)
        except OSError as exc:
            raise VerificationError(
                f"Destination {self.name}: cannot read back {file}: {exc.strerror}."
            ) from exc
        if (digest, size) != (published.sha256, published.size):
            raise VerificationError(
                f"Destination {self.name}: read-back of {file} does not match what was written "
                f"({size} bytes sha256 {digest[:12]}… vs {published.size} bytes sha256 {published.sha256[:12]}…); "
                "the disk may be failing."
            )

    def delete_backup(self, path: str) -> None:
        if not is_backup_key(path):
            raise DestinationError(f"Destination {self.name}: {path!r} is not a .zip backup; refusing to delete it.")
        file = self._file(path)
        try:
            file.unlink()
            self._file(receipt_path(path)).unlink(missing_ok=True)
            fsync_directory(file.parent)
        except OSError as exc:
            raise DestinationError(f"Destination {self.name}: cannot delete {file}: {exc.strerror}.") from exc

    def _discard(self, final: Path) -> None:
        """Remove a bad copy and its receipt (used when a freshly published archive fails checks)."""
        for victim in (final, _receipt_file(final)):
            victim.unlink(missing_ok=True)
        fsync_directory(final.parent)

    def discard(self, published: PublishedBackup) -> None:
        """Remove an archive this run published that then failed verification."""
        self._discard(self._file(published.path))


def _receipt_file(archive: Path) -> Path:
    return archive.with_name(receipt_path(archive.name))


def _raise(exc: OSError) -> None:
    raise exc


def _partial_name(final: Path) -> Path:
    # A random part keeps two concurrent writers (never expected, max_active_runs=1) from sharing a file.
    return final.with_name(f".{final.name}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}")


def _copy_atomically(source: Path, final: Path) -> tuple[str, int]:
    """Copy to a hidden partial file, fsync, then link it into place without overwriting."""
    partial = _partial_name(final)
    digest = hashlib.sha256()
    size = 0
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as out, open(source, "rb") as src:
            while chunk := src.read(CHUNK_SIZE):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        _link_no_replace(partial, final)
        fsync_directory(final.parent)
    finally:
        partial.unlink(missing_ok=True)
    return digest.hexdigest(), size


def _link_no_replace(partial: Path, final: Path) -> None:
    """Make ``partial`` visible as ``final``; raises FileExistsError rather than replacing."""
    try:
        os.link(partial, final)
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        # File systems without hard links (some FUSE/SMB mounts): check, then rename.
        if final.exists():
            raise FileExistsError(errno.EEXIST, "exists", str(final)) from exc
        os.rename(partial, final)


def _write_atomically(final: Path, data: bytes) -> None:
    partial = _partial_name(final)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, final)
    finally:
        partial.unlink(missing_ok=True)


def _os_error_sentence(name: str, final: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return (f"Destination {name}: no space left on device while writing {final}; free space there; "
                "earlier backups were not touched.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"Destination {name}: permission denied writing {final} ({exc.strerror}); "
                "fix the directory's owner or mode.")
    return f"Destination {name}: writing {final} failed: {exc.strerror or exc}."
