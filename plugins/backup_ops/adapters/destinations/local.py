"""A destination on a local (or mounted) file system: atomic, exclusive publish with fsync and hard links.

Publishing. On the staging folder's own file system the staged archive is hard-linked into place:
no byte is copied or read again. The staged file was fsynced when it was built and verified in
full then (every member decrypted, its sha256 read back), and a link is the same inode, which
``verify_published`` checks. On another file system (``EXDEV``) or one without hard links, the
archive is copied to a hidden ``.partial`` file, hashed as it is copied, fsynced, then linked (or
renamed) into place, and ``verify_published`` reads the copy back.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import secrets
import stat
import time
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import IO

from backup_ops.adapters.destinations.base import (
    PROBE_PREFIX,
    RECEIPT_SUFFIX,
    BackupDestination,
    DrillReportExists,
    Leftover,
    PublishedBackup,
    backup_from_listing,
    clash,
    drill_report_problem,
    receipt_bytes,
    receipt_from_bytes,
    receipt_path,
    receipt_to_compare,
    same_archive,
    sha256_verdict,
    size_differs,
    sorted_newest_first,
)
from backup_ops.core.drill_report import DRILL_REPORTS_FOLDER, REPORT_SUFFIX
from backup_ops.core.errors import DestinationError, VerificationError
from backup_ops.core.fileio import CHUNK_SIZE, fsync_directory, sha256_of_stream
from backup_ops.core.models import ArchiveIntegrity, BackupFile, Integrity, Receipt, is_backup_key

log = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
_PARTIAL_NAME = re.compile(r"\..+\.[0-9a-f]{8}" + re.escape(PARTIAL_SUFFIX))


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
                f"Destination {self.name}: directory {self.root} does not exist; create it or fix destination path.",
                retryable=False,
            )
        probe_dir = folder if folder.is_dir() else self.root
        if not os.access(probe_dir, os.W_OK | os.X_OK):
            raise DestinationError(f"Destination {self.name}: directory {probe_dir} is not writable by this process.",
                                   retryable=False)

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

    def check_integrity(self, path: str) -> ArchiveIntegrity:
        """Size from the file system, SHA-256 by hashing the file (reads the whole archive once)."""
        file = self._file(path)
        try:
            data: bytes | None = self._file(receipt_path(path)).read_bytes()
        except FileNotFoundError:
            data = None
        except OSError as exc:
            raise DestinationError(f"Destination {self.name}: cannot read receipt of {path}: {exc.strerror}.") from exc
        receipt = receipt_to_compare(path, data)
        if isinstance(receipt, ArchiveIntegrity):
            return receipt
        try:
            with open(file, "rb") as stream:
                wrong_size = size_differs(path, os.fstat(stream.fileno()).st_size, receipt)
                if wrong_size is not None:
                    return wrong_size
                digest, _ = sha256_of_stream(stream)
        except FileNotFoundError:
            return ArchiveIntegrity(path, Integrity.UNVERIFIED, "the archive disappeared while it was checked")
        except OSError as exc:
            if exc.errno == errno.EIO:  # the medium itself fails to return the bytes
                return ArchiveIntegrity(path, Integrity.DAMAGED, f"unreadable: {exc.strerror}")
            raise DestinationError(f"Destination {self.name}: cannot read {file}: {exc.strerror}.") from exc
        return sha256_verdict(path, digest, receipt, "hashed from the file")

    def name_taken(self, file_name: str) -> bool:
        final = self._file(self.backup_key(file_name))
        return os.path.lexists(final) or os.path.lexists(_receipt_file(final))

    def check_writable(self) -> None:
        """Create, fsync and delete a probe file in ``<path>/<backup_name>/`` (in ``<path>`` until that exists)."""
        self.check_reachable()
        folder = self.root / self.backup_name
        probe = (folder if folder.is_dir() else self.root) / f"{PROBE_PREFIX}{secrets.token_hex(8)}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with open(fd, "wb") as out:
                    out.write(b"backup-ops write probe\n")
                    out.flush()
                    os.fsync(out.fileno())
            finally:
                probe.unlink()
            fsync_directory(probe.parent)
        except OSError as exc:
            raise _os_error(self.name, probe, exc) from exc

    def publish(self, source: Path, file_name: str, receipt: Receipt) -> PublishedBackup:
        key = self.backup_key(file_name)
        final = self._file(key)
        started = time.monotonic()
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                return self._already_published(key, final, receipt, started)
            self._claim_receipt(final, receipt)
        except OSError as exc:
            raise _os_error(self.name, final, exc) from exc
        linked_from = None
        try:
            if _link_staged(source, final, receipt):
                digest, size, linked_from = receipt.sha256, receipt.size, str(source)
            else:
                digest, size = _copy_atomically(source, final)
        except FileExistsError:
            # An archive appeared after this run claimed the receipt: not a backup-ops run's (it
            # would have needed the receipt), so compare, and take the receipt back if it differs.
            try:
                return self._already_published(key, final, receipt, started)
            except DestinationError:
                self._remove_receipt(final, "another writer's archive took the name", beside_foreign_archive=True)
                raise
        except BaseException as exc:
            self._remove_receipt(final, f"the copy failed ({type(exc).__name__})")
            if isinstance(exc, OSError):
                raise _os_error(self.name, final, exc) from exc
            raise
        if digest != receipt.sha256 or size != receipt.size:
            self._discard(final)
            raise VerificationError(
                f"Destination {self.name}: the staged archive changed while it was copied to {final} "
                f"(expected {receipt.size} bytes sha256 {receipt.sha256[:12]}…, copied {size} bytes "
                f"sha256 {digest[:12]}…); the copy was removed, rerun the backup."
            )
        return PublishedBackup(self.name, key, self.location(key), size, digest, time.monotonic() - started,
                               linked_from=linked_from)

    def _already_published(self, key: str, final: Path, receipt: Receipt, started: float) -> PublishedBackup:
        """Accept an existing archive only when it holds the staged archive's bytes (a task retry)."""
        try:
            with open(final, "rb") as existing:
                digest, size = sha256_of_stream(existing)
            if digest != receipt.sha256:
                raise clash(self.name, self.location(key), "another run's archive", receipt)
            self._claim_receipt(final, receipt)  # puts back a receipt that went missing
        except OSError as exc:
            raise _os_error(self.name, final, exc) from exc
        return PublishedBackup(self.name, key, self.location(key), size, digest, time.monotonic() - started, True)

    def _claim_receipt(self, final: Path, receipt: Receipt) -> None:
        """Create the receipt, never replacing one; an earlier attempt's receipt for the same bytes is kept."""
        file = _receipt_file(final)
        if not file.exists():
            try:
                _create_exclusively(file, receipt_bytes(receipt))
                return
            except FileExistsError:
                pass  # another writer was faster; compare below
        try:
            existing = receipt_from_bytes(file.read_bytes())
        except FileNotFoundError:  # removed in between: claim it now (never overwriting)
            _create_exclusively(file, receipt_bytes(receipt))
            return
        if not same_archive(existing, receipt):
            raise clash(self.name, self.location(file.relative_to(self.root).as_posix()), "another run's receipt",
                        receipt)

    def _remove_receipt(self, final: Path, why: str, *, beside_foreign_archive: bool = False) -> None:
        """Best effort: remove this run's receipt when its archive could not be published.

        Kept when an archive is there after all, unless that archive is another writer's (this
        receipt describes other bytes, so it would make that archive look damaged).
        """
        if final.exists() and not beside_foreign_archive:
            return
        file = _receipt_file(final)
        try:
            file.unlink(missing_ok=True)
            fsync_directory(file.parent)
        except OSError as exc:
            log.warning("Destination %s: could not remove the receipt %s after %s: %s; cleanup removes it after a day",
                        self.name, file, why, exc.strerror or exc)
            return
        log.info("Destination %s: removed the receipt %s because %s and no archive was published", self.name, file,
                 why)

    def verify_published(self, published: PublishedBackup) -> None:
        file = self._file(published.path)
        if published.linked_from is not None:
            _check_link(self.name, file, Path(published.linked_from), published.size)
            return
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

    def list_drill_reports(self) -> list[str]:
        folder = self.root / self.backup_name / DRILL_REPORTS_FOLDER
        try:
            with os.scandir(folder) as entries:
                names = [e.name for e in entries if e.name.endswith(REPORT_SUFFIX) and e.is_file(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise DestinationError(f"Destination {self.name}: cannot list {folder}: {exc.strerror or exc}.") from exc
        return [f"{self.backup_name}/{DRILL_REPORTS_FOLDER}/{name}" for name in sorted(names, reverse=True)]

    def read_drill_report(self, key: str, limit: int) -> bytes | None:
        file = self._file(key)
        try:
            # O_NOFOLLOW: a link planted there is not followed; O_NONBLOCK: a FIFO does not hang the open.
            fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except OSError as exc:
            why = "it is a symbolic link, which is not followed" if exc.errno == errno.ELOOP else exc.strerror
            raise DestinationError(f"Destination {self.name}: cannot read {file}: {why}.") from exc
        with open(fd, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                raise DestinationError(f"Destination {self.name}: {file} is not a regular file; it was not read.")
            return stream.read(limit + 1)

    def write_drill_report(self, key: str, data: bytes) -> str:
        problem = drill_report_problem(self.backup_name, key)
        if problem:
            raise DestinationError(f"Destination {self.name}: {problem}; refusing to write it.", retryable=False)
        file = self._file(key)
        try:
            file.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
            _create_exclusively(file, data)
        except FileExistsError:
            raise DrillReportExists(f"Destination {self.name}: a restore-drill report is already at {file}; "
                                    "it was not replaced.") from None
        except OSError as exc:
            raise _os_error(self.name, file, exc) from exc
        return self.location(key)

    def find_leftovers(self, older_than: datetime) -> list[Leftover]:
        """Receipts without their archive, and hidden ``.partial`` copies a killed publish left behind."""
        folder = self.root / self.backup_name
        found: list[Leftover] = []
        if not folder.is_dir():
            return found
        try:
            for dirpath, _dirnames, filenames in os.walk(folder, onerror=_raise):
                present = set(filenames)
                for file_name in filenames:
                    archive = file_name[: -len(RECEIPT_SUFFIX)]
                    if file_name.endswith(RECEIPT_SUFFIX) and is_backup_key(archive) and archive not in present:
                        kind = "orphan receipt"
                    elif _PARTIAL_NAME.fullmatch(file_name):
                        kind = "partial copy"
                    else:
                        continue
                    full = Path(dirpath) / file_name
                    try:
                        since = datetime.fromtimestamp(full.lstat().st_mtime, tz=UTC)
                    except FileNotFoundError:
                        continue
                    if since < older_than:
                        found.append(Leftover(kind, full.relative_to(self.root).as_posix(), since))
        except OSError as exc:
            raise DestinationError(f"Destination {self.name}: cannot list {folder}: {exc.strerror or exc}.") from exc
        return found

    def remove_leftover(self, leftover: Leftover) -> None:
        file = self._file(leftover.path)
        if leftover.kind == "orphan receipt" and file.with_name(file.name[: -len(RECEIPT_SUFFIX)]).exists():
            log.info("Destination %s: %s has its archive now; kept", self.name, leftover.path)
            return
        try:
            file.unlink(missing_ok=True)
            fsync_directory(file.parent)
        except OSError as exc:
            raise DestinationError(f"Destination {self.name}: cannot remove {file}: {exc.strerror}.") from exc

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


def _link_staged(source: Path, final: Path, receipt: Receipt) -> bool:
    """Hard-link the staged archive into place; False when the file systems differ or cannot link (then copy).

    Raises FileExistsError rather than replacing ``final``, and VerificationError when the staged
    file is not the size its receipt says (it changed after it was verified).
    """
    with open(source, "rb") as staged:
        size = os.fstat(staged.fileno()).st_size
        if size != receipt.size:
            raise VerificationError(f"The staged archive {source} is {size} bytes, but {receipt.size} were built and "
                                    "verified; it changed since, rerun the backup.")
        os.fsync(staged.fileno())  # already durable when built; cheap then, and a link must never outrun its data
    try:
        os.link(source, final)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
            return False
        raise  # EEXIST is FileExistsError: the caller compares
    fsync_directory(final.parent)
    return True


def _check_link(destination: str, file: Path, staged: Path, size: int) -> None:
    """A linked archive is the staged file itself: same device and inode, same size."""
    try:
        published, source = os.stat(file), os.stat(staged)
    except OSError as exc:
        raise VerificationError(f"Destination {destination}: cannot read back {file}: {exc.strerror}.") from exc
    if (published.st_dev, published.st_ino) != (source.st_dev, source.st_ino) or published.st_size != size:
        raise VerificationError(f"Destination {destination}: {file} is not the verified staged archive {staged} "
                                f"({published.st_size} bytes); it was replaced while it was published, rerun the "
                                "backup.")


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


def _create_exclusively(final: Path, data: bytes) -> None:
    """Write ``data`` to a partial file, fsync, and link it into place; FileExistsError rather than replacing."""
    partial = _partial_name(final)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        _link_no_replace(partial, final)
        fsync_directory(final.parent)
    finally:
        partial.unlink(missing_ok=True)


def _os_error(name: str, final: Path, exc: OSError) -> DestinationError:
    """One sentence for a failed write; a permission problem is permanent, a full disk may be freed."""
    if exc.errno == errno.ENOSPC:
        return DestinationError(f"Destination {name}: no space left on device while writing {final}; free space "
                                "there; earlier backups were not touched.")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return DestinationError(f"Destination {name}: permission denied writing {final} ({exc.strerror}); fix the "
                                "directory's owner or mode.", retryable=False)
    return DestinationError(f"Destination {name}: writing {final} failed: {exc.strerror or exc}.")
