"""The destination interface shared by backup, cleanup, monitor, restore and ``list``.

A destination holds backups below ``<backup_name>/``. Listing follows laravel-backup: it is
recursive, only ``.zip`` files are backups (anything else is never touched), and a backup's
date comes from an exact ``YYYY-MM-DD-HH-MM-SS.zip`` name, else from its modification time.

Beside each archive lies its receipt (``<archive>.json``: size, SHA-256). Receipts and archives
are created exclusively: a name another run holds is never overwritten (``ArchiveNameClash``).
``check_integrity`` compares an archive with its receipt; ``find_leftovers`` finds what failed
publishes left behind (receipts without archives, incomplete uploads, partial copies).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from backup_ops.core.drill_report import DRILL_REPORTS_FOLDER, REPORT_SUFFIX
from backup_ops.core.errors import DestinationError
from backup_ops.core.models import ArchiveIntegrity, BackupFile, Integrity, Receipt, date_from_archive_name

RECEIPT_SUFFIX = ".json"
PROBE_PREFIX = ".backup-ops-probe-"
"""Name prefix of the probe ``check_writable`` writes and deletes (``python -m backup_ops check``)."""
NO_RECEIPT = "no receipt beside it: an archive from before backup-ops (laravel-backup) or its receipt was removed"


class ArchiveNameClash(DestinationError):
    """The archive name is held by another run's archive or receipt; publishing it again can never succeed."""

    retryable = False


class DrillReportExists(DestinationError):
    """A restore-drill report is already at the key (an earlier try of the same drill wrote it)."""

    retryable = False


def drill_report_problem(backup_name: str, key: str) -> str | None:
    """Why ``key`` is not a place for a drill report (``<backup_name>/restore-drills/<name>.json``), or None."""
    folder, _, name = key.rpartition("/")
    if folder != f"{backup_name}/{DRILL_REPORTS_FOLDER}" or not name.endswith(REPORT_SUFFIX) or name.startswith("."):
        return f"{key!r} is not a report name below {backup_name}/{DRILL_REPORTS_FOLDER}/"
    return None


def receipt_path(archive_path: str) -> str:
    """Key of the receipt written beside an archive (``x.zip`` → ``x.zip.json``)."""
    return archive_path + RECEIPT_SUFFIX


def backup_from_listing(key: str, size: int, modified: datetime) -> BackupFile:
    """A BackupFile dated by its name when it carries a timestamp, else by ``modified``."""
    return BackupFile(path=key, date=date_from_archive_name(key) or modified, size=size)


@dataclass(frozen=True)
class PublishedBackup:
    """Where one archive landed and what was verified there."""

    destination: str
    path: str            # key below the destination root, e.g. invoicing-app/2026-11-26-02-00-00.zip
    location: str        # URI an operator can use: file:///…, s3://bucket/…
    size: int
    sha256: str
    seconds: float
    already_present: bool = False
    linked_from: str | None = None  # a local destination on staging's file system: the staged file, hard-linked


@dataclass(frozen=True)
class Leftover:
    """Something a failed or killed publish left behind that no backup needs."""

    kind: str           # "orphan receipt" (no archive beside it), "incomplete upload", "partial copy"
    path: str           # below the destination root, like a backup's path
    since: datetime     # when it was last written (an upload: when it was started)
    upload_id: str | None = None

    def describe(self) -> str:
        """``orphan receipt app/x.zip.json (since 2026-11-25 02:00 UTC)``."""
        upload = f", upload {self.upload_id}" if self.upload_id else ""
        return f"{self.kind} {self.path} (since {self.since:%Y-%m-%d %H:%M} UTC{upload})"


class BackupDestination(ABC):
    """One place backups are published to; implementations translate their errors to DestinationError."""

    kind: str = "abstract"

    def __init__(self, name: str, backup_name: str) -> None:
        self.name = name
        self.backup_name = backup_name

    # -- identity
    @abstractmethod
    def location(self, path: str = "") -> str:
        """A URI for ``path`` below the destination root (or the root itself)."""

    def backup_key(self, file_name: str) -> str:
        """Key of a new archive: ``<backup_name>/<file_name>``."""
        return f"{self.backup_name}/{file_name}"

    # -- reading
    @abstractmethod
    def check_reachable(self) -> None:
        """Raise DestinationError with the reason when the destination cannot be used."""

    @abstractmethod
    def list_backups(self) -> list[BackupFile]:
        """Every backup archive below ``<backup_name>/``, newest first."""

    @abstractmethod
    def open_backup(self, path: str) -> AbstractContextManager[IO[bytes]]:
        """A readable binary stream of the archive at ``path``."""

    @abstractmethod
    def read_receipt(self, path: str) -> Receipt | None:
        """The receipt beside the archive at ``path``, or None when it has none."""

    @abstractmethod
    def check_integrity(self, path: str) -> ArchiveIntegrity:
        """Compare the archive at ``path`` with its receipt: its size always, its SHA-256 where that is cheap.

        Intact: nothing contradicts the receipt. Damaged: the size or the SHA-256 does (the detail
        says which). Unverified: there is no usable receipt (laravel-backup's archives have none).
        Raises DestinationError only when the destination cannot be read.
        """

    def check_newest(self, backups: Sequence[BackupFile], intact_wanted: int = 1) -> list[ArchiveIntegrity]:
        """Check archives newest first until ``intact_wanted`` of them are intact, or none is left.

        These are the archives cleanup keeps as the newest (and for ``min_backups_kept``): a damaged
        or unverified one makes the next older one count, so all archives are checked only when
        fewer than ``intact_wanted`` are intact. Older ones are planned by their dates alone.
        """
        checks: list[ArchiveIntegrity] = []
        intact = 0
        for backup in sorted_newest_first(list(backups)):
            if intact >= intact_wanted:
                break
            check = self.check_integrity(backup.path)
            checks.append(check)
            intact += check.intact
        return checks

    @abstractmethod
    def name_taken(self, file_name: str) -> bool:
        """Whether ``<backup_name>/<file_name>`` or its receipt exists (one cheap look, nothing written).

        The backup's ``plan`` step uses it to pick a free archive name before any work is done.
        """

    @abstractmethod
    def find_leftovers(self, older_than: datetime) -> list[Leftover]:
        """What failed publishes of this backup left behind and was last touched before ``older_than``."""

    @abstractmethod
    def remove_leftover(self, leftover: Leftover) -> None:
        """Remove one leftover; an orphan receipt whose archive has appeared meanwhile is kept."""

    def local_path(self, path: str) -> Path | None:
        """The archive as a local file when the destination is a local disk, else None."""
        return None

    def recorded_sha256(self, path: str) -> str | None:
        """The SHA-256 backup-ops stored with the archive when it published it, where the store keeps such
        metadata (S3 object metadata); None when there is none or the store keeps none (a local disk)."""
        return None

    # -- restore-drill reports (``<backup_name>/restore-drills/*.json``, see core/drill_report.py)
    @abstractmethod
    def list_drill_reports(self) -> list[str]:
        """Keys of the restore-drill reports below ``<backup_name>/restore-drills/``, newest name first."""

    @abstractmethod
    def read_drill_report(self, key: str, limit: int) -> bytes | None:
        """At most ``limit + 1`` bytes of one report (more means too big), or None when it is gone.

        Only a regular file or object is read (a link or a FIFO planted there is not followed or opened).
        """

    @abstractmethod
    def write_drill_report(self, key: str, data: bytes) -> str:
        """Create the report at ``key`` (below ``<backup_name>/restore-drills/``) exclusively; returns its location.

        A report already at ``key`` is never replaced: DrillReportExists, nothing written.
        """

    def used_storage(self, backups: list[BackupFile] | None = None) -> int:
        """Bytes used by the backups (laravel-backup counts archives only)."""
        return sum(b.size for b in (backups if backups is not None else self.list_backups()))

    # -- writing
    @abstractmethod
    def check_writable(self) -> None:
        """Write and delete a small probe next to where backups go; DestinationError with the reason if that fails.

        The probe is named ``.backup-ops-probe-<random>`` (never a ``.zip``, so never a backup) and
        touches nothing else. ``python -m backup_ops check`` calls it after ``check_reachable``.
        """

    @abstractmethod
    def publish(self, source: Path, file_name: str, receipt: Receipt) -> PublishedBackup:
        """Copy ``source`` to ``<backup_name>/<file_name>`` atomically, never overwriting another archive.

        The receipt is created first (exclusively) and the archive last, so an archive is either
        fully there or not at all. Publishing the same bytes again (a task retry) is a no-op. A name
        held by another run's archive or receipt raises ArchiveNameClash before anything is written.
        When the archive cannot be published, its receipt is removed again (best effort).
        """

    @abstractmethod
    def verify_published(self, published: PublishedBackup) -> None:
        """Re-read what was published and raise VerificationError unless size and SHA-256 match."""

    def cancel(self) -> None:
        """Abort work in progress (called when the task is killed); nothing to do for most destinations."""
        return None

    @abstractmethod
    def discard(self, published: PublishedBackup) -> None:
        """Remove an archive this run published that then failed verification (and its receipt)."""

    @abstractmethod
    def delete_backup(self, path: str) -> None:
        """Delete the archive at ``path`` and its receipt; refuses anything that is not a backup."""


def sorted_newest_first(backups: Iterator[BackupFile] | list[BackupFile]) -> list[BackupFile]:
    """Newest first by whole seconds, ties kept in listing order (PHP's stable sort)."""
    return sorted(backups, key=lambda b: int(b.date.timestamp()), reverse=True)


def receipt_from_bytes(data: bytes) -> Receipt | None:
    """Parse a receipt; a damaged receipt reads as absent rather than failing a listing."""
    try:
        return Receipt.from_dict(json.loads(data))
    except (ValueError, TypeError, KeyError):
        return None


def receipt_bytes(receipt: Receipt) -> bytes:
    return (json.dumps(receipt.to_dict(), indent=2, sort_keys=True) + "\n").encode()


def same_archive(existing: Receipt | None, receipt: Receipt) -> bool:
    """Whether a receipt found at the name describes the archive being published (an earlier attempt's)."""
    return existing is not None and (existing.sha256, existing.size) == (receipt.sha256, receipt.size)


def clash(destination: str, location: str, what: str, receipt: Receipt) -> ArchiveNameClash:
    """The error for a name another run holds (``what``: "another run's receipt", …): nothing was written."""
    return ArchiveNameClash(
        f"Destination {destination}: name clash: {location} already exists with different content ({what}, not "
        f"this run's archive of {receipt.size} bytes with sha256 {receipt.sha256[:12]}…); backup-ops never "
        "overwrites another run's archive or receipt, so nothing was written."
    )


def receipt_to_compare(path: str, data: bytes | None) -> Receipt | ArchiveIntegrity:
    """The receipt an archive is checked against, or the "unverified" verdict when there is none to use."""
    if data is None:
        return ArchiveIntegrity(path, Integrity.UNVERIFIED, NO_RECEIPT)
    receipt = receipt_from_bytes(data)
    if receipt is None:
        return ArchiveIntegrity(path, Integrity.UNVERIFIED, "its receipt is unreadable, so there is nothing to compare")
    return receipt


def size_differs(path: str, size: int, receipt: Receipt) -> ArchiveIntegrity | None:
    """The "damaged" verdict when the archive's size is not the receipt's."""
    if size == receipt.size:
        return None
    return ArchiveIntegrity(path, Integrity.DAMAGED, f"size differs: {size} bytes, but its receipt says {receipt.size}")


def sha256_verdict(path: str, sha256: str, receipt: Receipt, how: str) -> ArchiveIntegrity:
    """Intact or damaged by a SHA-256 (``how`` says whose: "hashed here", "the store's", …)."""
    if sha256 == receipt.sha256:
        return ArchiveIntegrity(path, Integrity.INTACT, f"size and SHA-256 ({how}) match the receipt")
    return ArchiveIntegrity(path, Integrity.DAMAGED, f"sha256 differs: {how} {sha256[:12]}…, but its receipt "
                                                     f"says {receipt.sha256[:12]}…")
