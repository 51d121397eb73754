"""The destination interface shared by backup, cleanup, monitor, restore and ``list``.

A destination holds backups below ``<backup_name>/``. Listing follows laravel-backup: it is
recursive, only ``.zip`` files are backups (anything else is never touched), and a backup's
date comes from an exact ``YYYY-MM-DD-HH-MM-SS.zip`` name, else from its modification time.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from backup_ops.core.models import BackupFile, Receipt, date_from_archive_name

RECEIPT_SUFFIX = ".json"


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

    def local_path(self, path: str) -> Path | None:
        """The archive as a local file when the destination is a local disk, else None."""
        return None

    def used_storage(self, backups: list[BackupFile] | None = None) -> int:
        """Bytes used by the backups (laravel-backup counts archives only)."""
        return sum(b.size for b in (backups if backups is not None else self.list_backups()))

    # -- writing
    @abstractmethod
    def publish(self, source: Path, file_name: str, receipt: Receipt) -> PublishedBackup:
        """Copy ``source`` to ``<backup_name>/<file_name>`` atomically, never overwriting another archive.

        The receipt is written first and the archive last, so an archive is either fully there
        or not at all. Publishing the same bytes again (a task retry) is a no-op.
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
