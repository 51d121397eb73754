"""The backup catalog: every backup on a destination with its receipt state, its restore drills, page by page.

What ``GET /backup-ops/api/backups`` returns and the backup-ops page shows, as pure functions of
what the monitor's code gathered: a destination's ``HealthReport`` (its ``DestinationSnapshot``
holds the listing, the newest archives checked against their receipts and the restore-drill
reports) and the receipt checks of the backups on the page being shown. A row's receipt state is
``list``'s and cleanup's: intact, damaged or unverified (``ArchiveIntegrity``), or ``unknown``
with the sentence saying why the archive could not be checked.

Pages are counted from 1, newest backup first; a page past the last one shows the last one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backup_ops.core.drill_report import DrillReport
from backup_ops.core.health import HealthReport
from backup_ops.core.models import ArchiveIntegrity, BackupFile

CATALOG_FORMAT_VERSION = 1
MAX_PAGE_SIZE = 1000
UNKNOWN = "unknown"
"""The receipt state of a backup that could not be checked (the destination failed to answer)."""


@dataclass(frozen=True)
class PageWindow:
    """One page of a destination's backups: its number (from 1), its size and how many backups there are."""

    number: int
    size: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def start(self) -> int:
        """Index of the page's first backup in the newest-first listing."""
        return (self.number - 1) * self.size

    @property
    def end(self) -> int:
        return min(self.total, self.start + self.size)

    def to_dict(self) -> dict[str, int]:
        return {"page": self.number, "per_page": self.size, "pages": self.pages, "total": self.total}


def page_window(total: int, number: int, size: int) -> PageWindow:
    """The page ``number`` of ``size`` backups out of ``total``; past the last page, the last page."""
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ValueError(f"per_page must be 1–{MAX_PAGE_SIZE}, got {size}")
    if number < 1:
        raise ValueError(f"page must be 1 or more, got {number}")
    window = PageWindow(number, size, max(0, total))
    return window if number <= window.pages else PageWindow(window.pages, size, window.total)


@dataclass(frozen=True)
class BackupRow:
    """One backup as the catalog shows it: where it is, its date and size, and its receipt state."""

    path: str
    date: datetime
    size: int
    state: str     # intact | damaged | unverified (ArchiveIntegrity), or unknown
    detail: str    # what the state rests on, or why the archive could not be checked

    @property
    def name(self) -> str:
        """The archive's file name: what the restore_drill DAG's ``backup`` param takes."""
        return self.path.rsplit("/", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "date": self.date.isoformat(), "size": self.size,
                "state": self.state, "detail": self.detail}


def backup_rows(backups: Sequence[BackupFile], checks: Mapping[str, ArchiveIntegrity | str]) -> list[BackupRow]:
    """Rows for ``backups`` from their receipt checks by path (a string: why that one could not be checked)."""
    rows = []
    for backup in backups:
        check = checks.get(backup.path, "it was not checked")
        if isinstance(check, ArchiveIntegrity):
            rows.append(BackupRow(backup.path, backup.date, backup.size, check.state.value, check.detail))
        else:
            rows.append(BackupRow(backup.path, backup.date, backup.size, UNKNOWN, check))
    return rows


def newest_first_drills(reports: Sequence[DrillReport]) -> list[DrillReport]:
    """Restore drills, the most recently finished first."""
    return sorted(reports, key=lambda r: r.finished_at, reverse=True)


def drill_entry(report: DrillReport) -> dict[str, Any]:
    """A restore drill as the catalog lists it: which archive, when, the outcome, the RTO, what failed."""
    return {
        "archive": report.archive,
        "started_at": report.started_at.isoformat(),
        "finished_at": report.finished_at.isoformat(),
        "outcome": report.outcome,
        "rto_seconds": report.rto_seconds,
        "error": report.error,
        "failed_checks": [check.name for check in report.checks if check.status == "fail"],
        "dag_id": report.dag_id or None,
        "run_id": report.run_id or None,
    }


def storage_share(used: int | None, limit: int | None) -> float | None:
    """``used`` as a percentage of ``limit``; None when either is unknown or there is no limit."""
    if used is None or not limit:
        return None
    return round(100.0 * used / limit, 2)


def destination_catalog(report: HealthReport, rows: Sequence[BackupRow], window: PageWindow) -> dict[str, Any]:
    """One destination's catalog entry: the monitor's report, one page of backups, every restore drill read."""
    snapshot = report.snapshot
    drills = newest_first_drills(snapshot.drill_reports)
    entry = report.to_dict()
    entry.pop("format_version", None)
    entry.update({
        "unreachable_reason": snapshot.unreachable_reason,
        "newest_error": snapshot.newest_error,
        "drill_error": snapshot.drill_error,
        "notes": list(snapshot.notes),
        "storage_used_percent": storage_share(entry["used_storage"], report.storage_limit),
        "backups": {**window.to_dict(), "items": [row.to_dict() for row in rows]},
        "drills": [drill_entry(drill) for drill in drills],
        "latest_drill": drill_entry(drills[0]) if drills else None,
    })
    return entry


def catalog(backup_name: str, generated_at: datetime, entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The whole answer of ``GET /backup-ops/api/backups``."""
    return {"format_version": CATALOG_FORMAT_VERSION, "backup_name": backup_name,
            "generated_at": generated_at.isoformat(), "destinations": list(entries)}
