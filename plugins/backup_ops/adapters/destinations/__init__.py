"""Where backups live: one interface for local disks and S3, used by every DAG and the CLI."""

from __future__ import annotations

from backup_ops.adapters.destinations.base import (
    ArchiveNameClash,
    BackupDestination,
    Leftover,
    PublishedBackup,
    receipt_path,
)

__all__ = ["ArchiveNameClash", "BackupDestination", "Leftover", "PublishedBackup", "receipt_path"]
