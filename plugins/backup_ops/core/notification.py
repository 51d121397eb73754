"""What backup-ops tells people: one event, the destination it concerns, and what failed and why.

A ``Notification`` is plain data, built by the Airflow side when a run ends (or a deadline
passes) and rendered by each channel (mail, Slack, webhook) in ``backup_ops.adapters.notify``.
The events and the destination properties are laravel-backup's, so the messages carry what its
users are used to reading; ``backup_late`` and the restore-drill events are ours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backup_ops.core.models import BackupFile

EVENTS = (
    "backup_failed",
    "backup_successful",
    "cleanup_failed",
    "cleanup_successful",
    "unhealthy_backup_found",
    "healthy_backup_found",
    "restore_drill_failed",
    "restore_drill_succeeded",
    "backup_late",
)
FAILURE_EVENTS = frozenset({"backup_failed", "cleanup_failed", "unhealthy_backup_found", "restore_drill_failed",
                            "backup_late"})


@dataclass(frozen=True)
class Failure:
    """One thing that went wrong: a failed task (``dump_database[app_db]``) or health check, and its sentence."""

    source: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"source": self.source, "message": self.message}


@dataclass(frozen=True)
class DestinationProperties:
    """laravel-backup's destination properties: what a destination holds right now."""

    destination: str
    backup_count: int
    used_storage: int
    newest_size: int | None = None
    newest_date: datetime | None = None
    oldest_date: datetime | None = None

    @classmethod
    def of(cls, destination: str, backups: Sequence[BackupFile]) -> DestinationProperties:
        """The properties of a destination from its listing (any order)."""
        if not backups:
            return cls(destination, 0, 0)
        newest = max(backups, key=lambda b: b.date)
        oldest = min(backups, key=lambda b: b.date)
        return cls(destination, len(backups), sum(b.size for b in backups), newest.size, newest.date, oldest.date)

    def to_dict(self) -> dict[str, Any]:
        return {
            "destination": self.destination,
            "backup_count": self.backup_count,
            "used_storage": self.used_storage,
            "newest_size": self.newest_size,
            "newest_date": self.newest_date.isoformat() if self.newest_date else None,
            "oldest_date": self.oldest_date.isoformat() if self.oldest_date else None,
        }


@dataclass(frozen=True)
class Notification:
    """One event to tell people about; ``summary`` is the sentence that says what happened."""

    event: str
    application: str
    backup_name: str
    summary: str
    destination: DestinationProperties | None = None
    failures: tuple[Failure, ...] = ()
    details: tuple[str, ...] = ()
    dag_id: str = ""
    run_id: str = ""

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"Notification event must be one of {', '.join(EVENTS)}, got {self.event!r}.")

    @property
    def is_failure(self) -> bool:
        return self.event in FAILURE_EVENTS
