"""``python -m backup_ops list``: laravel-backup's ``backup:list`` table, one row per destination.

Below the table, a line for each damaged archive among the newest ones (their size or SHA-256
contradicts the receipt), so laravel-backup's columns stay as they were.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from backup_ops.core.config import BackupConfig
from backup_ops.core.errors import BackupError
from backup_ops.core.models import ArchiveIntegrity, BackupFile, human_bytes


@dataclass(frozen=True)
class DestinationStatus:
    """What ``list`` shows for one destination."""

    name: str
    destination: str
    location: str
    reachable: bool
    error: str | None
    backups: list[BackupFile]
    checks: tuple[ArchiveIntegrity, ...] = ()  # the newest archives, newest first, down to the first intact one

    @property
    def newest(self) -> BackupFile | None:
        return self.backups[0] if self.backups else None

    @property
    def damaged(self) -> list[ArchiveIntegrity]:
        return [check for check in self.checks if check.damaged]


def destination_statuses(config: BackupConfig) -> list[DestinationStatus]:
    """List every configured destination; an unreachable one is reported, not raised.

    The newest archives are checked against their receipts as cleanup checks them, down to the
    first intact one (a local archive is read once to hash it; on S3 one HEAD and one GET each).
    """
    from backup_ops.adapters.destinations.factory import make_destination

    statuses = []
    for dest_config in config.backup.destination.destinations:
        dest = make_destination(dest_config, config.backup.name)
        try:
            dest.check_reachable()
            backups = dest.list_backups()
        except BackupError as exc:
            statuses.append(DestinationStatus(config.backup.name, dest.name, dest.location(), False, str(exc), []))
            continue
        try:
            checks, error = tuple(dest.check_newest(backups)), None
        except BackupError as exc:
            checks, error = (), f"the newest backups could not be checked against their receipts: {exc}"
        statuses.append(DestinationStatus(config.backup.name, dest.name, dest.location(), True, error, backups,
                                          checks))
    return statuses


def age_text(date: datetime, now: datetime) -> str:
    """laravel-backup's ``Format::ageInDays``: days with two decimals plus a human phrase."""
    seconds = max(0.0, (now - date).total_seconds())
    days = seconds / 86400
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size or unit == "second":
            count = int(seconds // size)
            phrase = f"{count} {unit}{'' if count == 1 else 's'} ago"
            break
    return f"{days:.2f} ({phrase})"


def render_table(statuses: Sequence[DestinationStatus], now: datetime) -> str:
    """The status table as fixed-width text."""
    header = ("Name", "Destination", "Reachable", "# of backups", "Newest backup", "Used storage")
    rows = [header]
    for s in statuses:
        if not s.reachable:
            rows.append((s.name, s.destination, "no", "/", "/", "/"))
            continue
        newest = age_text(s.newest.date, now) if s.newest else "No backups present"
        rows.append((s.name, s.destination, "yes", str(len(s.backups)), newest,
                     human_bytes(sum(b.size for b in s.backups))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [f"+{line}+"]
    for index, row in enumerate(rows):
        out.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            out.append(f"+{line}+")
    out.append(f"+{line}+")
    for s in statuses:
        if s.error:
            out.append(f"{s.destination}: {s.error}")
        else:
            out.append(f"{s.destination}: {s.location}")
        # Below the table, so laravel-backup's columns (and a healthy destination's output) stay as they were.
        for check in s.damaged:
            out.append(f"{s.destination}: DAMAGED {check.path}: {check.detail}")
        if s.damaged:
            intact = next((c.path for c in s.checks if c.intact), None)
            out.append(f"{s.destination}: newest intact backup: {intact}" if intact else
                       f"{s.destination}: no intact backup among the {len(s.checks)} newest")
    return "\n".join(out)
