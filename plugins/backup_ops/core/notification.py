"""What backup-ops tells people: one event, the destination it concerns, and what failed and why.

A ``Notification`` is plain data, built by the Airflow side when a run ends (or a deadline
passes) and rendered by each channel (mail, Slack, webhook) in ``backup_ops.adapters.notify``.
The events and the destination properties are laravel-backup's, so the messages carry what its
users are used to reading; ``backup_late`` and the restore-drill events are ours.

The words are here, once, for every channel: ``subject()`` and ``intro()`` are laravel-backup's
English strings (``resources/lang/en/notifications.php``) with "disk" read as "destination",
``lines()`` is the whole message as plain text, ``to_json()`` the webhook's body.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from backup_ops.core.models import BackupFile, human_bytes

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
TEST_EVENT = "notification_test"
"""Not routable: ``python -m backup_ops check --send-test-notification`` sends it on one channel at a time."""
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

    def lines(self) -> list[str]:
        """laravel-backup's labels (``Disk`` is ``Destination``), dates in UTC as ``Y/m/d H:i:s``."""
        return [
            f"Destination: {self.destination}",
            f"Newest backup size: {human_bytes(self.newest_size) if self.newest_size is not None else NO_BACKUPS}",
            f"Number of backups: {self.backup_count}",
            f"Total storage used: {human_bytes(self.used_storage)}",
            f"Newest backup date: {_date(self.newest_date)}",
            f"Oldest backup date: {_date(self.oldest_date)}",
        ]

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
    destinations: tuple[DestinationProperties, ...] = ()
    """For a run-level event (a backup or cleanup run): every destination the run left a result on."""

    def __post_init__(self) -> None:
        if self.event not in EVENTS and self.event != TEST_EVENT:
            raise ValueError(f"Notification event must be one of {', '.join(EVENTS)}, got {self.event!r}.")

    @property
    def is_failure(self) -> bool:
        return self.event in FAILURE_EVENTS

    @property
    def all_destinations(self) -> tuple[DestinationProperties, ...]:
        """``destination`` (when set) followed by ``destinations``."""
        return ((self.destination,) if self.destination else ()) + self.destinations

    def subject(self) -> str:
        """laravel-backup's subject for the event, e.g. ``Failed backup of invoicing-app``."""
        return _SUBJECTS[self.event].format(**self._words())

    def intro(self) -> str:
        """laravel-backup's first line for the event."""
        return _INTROS[self.event].format(**self._words())

    def failure_lines(self) -> list[str]:
        """``- dump_database[0]: <cause>`` per failed task; laravel's ``- [max_age_days] <message>`` per check."""
        if self.event == "unhealthy_backup_found":
            return [f"- [{f.source}] {f.message}" for f in self.failures]
        return [f"- {f.source}: {f.message}" for f in self.failures]

    def failure_heading(self) -> str:
        return "Failed checks:" if self.event == "unhealthy_backup_found" else "Failed tasks:"

    def property_lines(self) -> list[str]:
        """laravel-backup's destination properties as ``Label: value`` lines, a block per destination."""
        lines = [f"Application name: {self.application}", f"Backup name: {self.backup_name}"]
        for properties in self.all_destinations:
            lines += ["", *properties.lines()]
        return lines

    def lines(self) -> list[str]:
        """The whole message as plain text lines: what happened, each failure, details, properties, the run."""
        lines = [self.intro()]
        if self.summary and self.summary != self.intro():
            lines.append(self.summary)
        if self.failures:
            lines += ["", self.failure_heading(), *self.failure_lines()]
        if self.details:
            lines += ["", *self.details]
        lines += ["", *self.property_lines()]
        if self.dag_id:
            lines += ["", f"Airflow: DAG {self.dag_id}" + (f", run {self.run_id}" if self.run_id else "")]
        return lines

    def to_json(self) -> dict[str, Any]:
        """The webhook body: the event, the destination and its properties, each failure, the Airflow run.

        Like laravel-backup's webhook (``type``, ``application_name``, ``disk_name``, ``backup_name``,
        ``failures``) with our names; ``destination`` and its properties are those of the one destination
        the event concerns (null when it concerns none or several), ``destinations`` lists all of them.
        """
        single = self.all_destinations[0] if len(self.all_destinations) == 1 else None
        flat = single.to_dict() if single else dict.fromkeys(DestinationProperties("", 0, 0).to_dict())
        return {
            "event": self.event,
            "application": self.application,
            "backup_name": self.backup_name,
            "subject": self.subject(),
            "summary": self.summary,
            **flat,
            "destinations": [properties.to_dict() for properties in self.all_destinations],
            "failures": [failure.to_dict() for failure in self.failures],
            "details": list(self.details),
            "dag_id": self.dag_id or None,
            "run_id": self.run_id or None,
        }

    def _words(self) -> dict[str, str]:
        names = [properties.destination for properties in self.all_destinations]
        named = ("the destinations named " if len(names) > 1 else "the destination named ") + ", ".join(names)
        return {"app": self.application, "destination": ", ".join(names) or "(none)",
                "on_destinations": named if names else "its destinations"}


# laravel-backup's strings (resources/lang/en/notifications.php), "disk" read as "destination";
# the restore-drill and late-backup ones are ours, in the same voice.
_SUBJECTS = {
    "backup_failed": "Failed backup of {app}",
    "backup_successful": "Successful new backup of {app}",
    "cleanup_failed": "Cleaning up the backups of {app} failed.",
    "cleanup_successful": "Clean up of {app} backups successful",
    "unhealthy_backup_found": "Important: The backups for {app} are unhealthy",
    "healthy_backup_found": "The backups for {app} on destination {destination} are healthy",
    "restore_drill_failed": "Failed restore drill of {app}",
    "restore_drill_succeeded": "Successful restore drill of {app}",
    "backup_late": "Important: The backup of {app} is late",
    TEST_EVENT: "Test message from backup-ops for {app}",
}
_INTROS = {
    "backup_failed": "Important: An error occurred while backing up {app}",
    "backup_successful": "Great news, a new backup of {app} was successfully created on {on_destinations}.",
    "cleanup_failed": "An error occurred while cleaning up the backups of {app}",
    "cleanup_successful": "The clean up of the {app} backups on {on_destinations} was successful.",
    "unhealthy_backup_found": "The backups for {app} on destination {destination} are unhealthy.",
    "healthy_backup_found": "The backups for {app} are considered healthy. Good job!",
    "restore_drill_failed": "Important: An error occurred while restoring a backup of {app} in a restore drill",
    "restore_drill_succeeded": "Great news, a backup of {app} was restored and checked by a restore drill.",
    "backup_late": "Important: The backup of {app} has not finished by its deadline",
    TEST_EVENT: "This is a test message from backup-ops for {app}: if you read it, this channel works.",
}
NO_BACKUPS = "No backups were made yet"


def _date(moment: datetime | None) -> str:
    if moment is None:
        return NO_BACKUPS
    utc = moment.astimezone(UTC) if moment.tzinfo else moment
    return utc.strftime("%Y/%m/%d %H:%M:%S") + " UTC"
