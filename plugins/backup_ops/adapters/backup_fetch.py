"""Getting a backup off a destination for a restore: choose it, fetch it, prove it, read its manifest.

``select_backup`` picks the archive (``latest`` or a name) from the destination's listing and reads
its receipt. ``fetch_backup`` makes it a local file: an archive on a local disk is read in place
(nothing is copied); one on S3 is streamed into the restore's private working directory (0700),
after checking there is room for it, and its size must be the listing's and the receipt's.
``verify_fetched`` proves the file is the archive that was published: size and SHA-256 against the
receipt, then every member decrypted and matched against the manifest (``verify_archive``), which
also proves the password. A missing or wrong password is one sentence naming where the password
comes from. Later steps read the manifest back (``read_manifest``) or one small member.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from backup_ops.adapters.destinations.base import BackupDestination
from backup_ops.core.archive_read import DEFAULT_PASSWORD_SOURCE, VerifyResult, open_member, verify_archive
from backup_ops.core.errors import ArchiveError, DestinationError, VerificationError
from backup_ops.core.fileio import CHUNK_SIZE
from backup_ops.core.manifest import MANIFEST_NAME, Manifest
from backup_ops.core.manifest_parse import MAX_MANIFEST_BYTES, parse_manifest
from backup_ops.core.models import BackupFile, Receipt, human_bytes
from backup_ops.core.restore_plan import choose_backup

log = logging.getLogger(__name__)

ARCHIVE_FILE = "archive.zip"
"""The name a downloaded archive gets in the working directory."""
_FREE_SPACE_MARGIN = 64 * 1024 * 1024


@dataclass(frozen=True)
class SelectedBackup:
    """The archive a restore will use: its key on the destination, listed size and date, and receipt."""

    destination: str
    backup: BackupFile
    receipt: Receipt | None


@dataclass(frozen=True)
class FetchedBackup:
    """The archive as a local file: in place on a local disk, or downloaded into the working directory."""

    path: Path
    size: int
    in_place: bool
    seconds: float


def select_backup(destination: BackupDestination, wanted: str) -> SelectedBackup:
    """The backup ``wanted`` names (``latest`` or an archive name) on ``destination``, with its receipt."""
    destination.check_reachable()
    chosen = choose_backup(destination.list_backups(), wanted, destination=destination.name)
    return SelectedBackup(destination.name, chosen, destination.read_receipt(chosen.path))


def fetch_backup(destination: BackupDestination, selected: SelectedBackup, workdir: Path) -> FetchedBackup:
    """The selected archive as a local file: read in place when the destination is a local disk, else downloaded.

    The download streams into ``workdir/archive.zip`` (created exclusively, 0600) in 1 MiB chunks,
    so memory stays flat whatever the size; it must end at the listed size. Raises DestinationError.
    """
    started = time.monotonic()
    key = selected.backup.path
    local = destination.local_path(key)
    if local is not None:
        try:
            size = local.stat().st_size
        except OSError as exc:
            raise DestinationError(f"Destination {destination.name}: cannot read {local}: {exc.strerror}.") from exc
        return FetchedBackup(local, size, True, time.monotonic() - started)
    expected = selected.receipt.size if selected.receipt else selected.backup.size
    _check_room(workdir, expected, destination.name, key)
    target = workdir / ARCHIVE_FILE
    size = 0
    try:
        with destination.open_backup(key) as stream, open(target, "xb") as out:
            os.fchmod(out.fileno(), 0o600)
            while chunk := stream.read(CHUNK_SIZE):
                out.write(chunk)
                size += len(chunk)
    except OSError as exc:
        target.unlink(missing_ok=True)
        raise DestinationError(f"Destination {destination.name}: downloading {key} into {workdir} failed: "
                               f"{exc.strerror or exc}.") from exc
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    if size != selected.backup.size:
        raise DestinationError(f"Destination {destination.name}: the download of {key} ended after {size} bytes, "
                               f"but the destination lists {selected.backup.size}; it was cut off, try again.")
    seconds = time.monotonic() - started
    log.info("Downloaded %s from %s: %s in %.1f s (%.1f MB/s)", key, destination.name, human_bytes(size), seconds,
             size / 1e6 / max(seconds, 1e-6))
    return FetchedBackup(target, size, False, seconds)


def verify_fetched(fetched: FetchedBackup, selected: SelectedBackup, *, password: bytes | None,
                   password_source: str = DEFAULT_PASSWORD_SOURCE) -> VerifyResult:
    """Size and SHA-256 against the receipt (when there is one), then every member against the manifest.

    Raises VerificationError for an archive that is not the one published (truncated, tampered,
    a member that does not match), ArchiveError for a missing or wrong password.
    """
    receipt = selected.receipt
    result = verify_archive(fetched.path, password=password,
                            expected_sha256=receipt.sha256 if receipt else None,
                            expected_size=receipt.size if receipt else None,
                            password_source=password_source)
    if receipt is not None and receipt.manifest_sha256 and receipt.manifest_sha256 != result.manifest_sha256:
        raise VerificationError(f"The manifest of {fetched.path} is not the one its receipt recorded: the archive "
                                "was replaced.")
    return result


def read_manifest(archive: Path, password: bytes | None, *, password_source: str = DEFAULT_PASSWORD_SOURCE
                  ) -> Manifest:
    """The archive's manifest, read and parsed as hostile input (after ``verify_fetched`` proved the archive)."""
    return parse_manifest(read_member(archive, MANIFEST_NAME, password, MAX_MANIFEST_BYTES,
                                      password_source=password_source))


def read_member(archive: Path, name: str, password: bytes | None, limit: int, *,
                password_source: str = DEFAULT_PASSWORD_SOURCE) -> bytes:
    """One small member's bytes, authenticated; more than ``limit`` bytes is refused (hostile input)."""
    with open_member(archive, name, password, password_source=password_source) as stream:
        data = bytearray()
        while chunk := stream.read(CHUNK_SIZE):
            data += chunk
            if len(data) > limit:
                raise ArchiveError(f"Member {name!r} of {archive} is larger than the {limit} bytes accepted.")
    return bytes(data)


def _check_room(workdir: Path, size: int, destination: str, key: str) -> None:
    try:
        free = shutil.disk_usage(workdir).free
    except OSError as exc:
        raise DestinationError(f"Cannot use the working directory {workdir}: {exc.strerror}.") from exc
    if free < size + _FREE_SPACE_MARGIN:
        raise DestinationError(f"Destination {destination}: {key} is {human_bytes(size)} but the working directory "
                               f"{workdir} has {human_bytes(free)} free; free space there or point "
                               "backup.staging_directory at a larger disk.", retryable=False)

