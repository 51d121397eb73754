"""``python -m backup_ops list``: laravel-backup's ``backup:list`` table, one row per destination.

The Healthy column and the "Unhealthy backup destinations" table come from the same code as the
``backup_monitor`` DAG: the destination is gathered with ``take_snapshot`` and judged by
``backup_ops.core.health.evaluate`` at the moment ``list`` runs. Below the tables, a line for each
destination (its location, or why it could not be read) and for each damaged archive among the
newest ones (their size or SHA-256 contradicts the receipt). ``list`` exits 0 whatever it finds
(laravel-backup); ``backup_monitor`` is what alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from backup_ops.core.config import BackupConfig
from backup_ops.core.health import DestinationSnapshot, HealthReport, evaluate
from backup_ops.core.models import ArchiveIntegrity, BackupFile, human_bytes


@dataclass(frozen=True)
class DestinationStatus:
    """What ``list`` shows for one destination: what it holds, and the monitor's verdict on it."""

    snapshot: DestinationSnapshot
    report: HealthReport

    @property
    def name(self) -> str:
        return self.snapshot.backup_name

    @property
    def destination(self) -> str:
        return self.snapshot.destination

    @property
    def reachable(self) -> bool:
        return self.snapshot.reachable

    @property
    def healthy(self) -> bool:
        return self.report.healthy

    @property
    def backups(self) -> tuple[BackupFile, ...]:
        return self.snapshot.backups

    @property
    def newest(self) -> BackupFile | None:
        return self.snapshot.backups[0] if self.snapshot.backups else None

    @property
    def checks(self) -> tuple[ArchiveIntegrity, ...]:
        """The newest archives checked against their receipts, newest first, down to the first intact one."""
        return self.snapshot.integrity

    @property
    def damaged(self) -> list[ArchiveIntegrity]:
        return [check for check in self.checks if check.damaged]

    @property
    def error(self) -> str | None:
        """Why the destination, or its newest backups, could not be read; None when they could."""
        if not self.snapshot.reachable:
            return self.snapshot.unreachable_reason
        if self.snapshot.newest_error:
            return f"the newest backups could not be checked against their receipts: {self.snapshot.newest_error}"
        return None


def destination_statuses(config: BackupConfig, now: datetime) -> list[DestinationStatus]:
    """Gather and judge every configured destination as ``backup_monitor`` does; nothing is raised for what is found.

    On a local disk the newest archive is read twice (hashed, then every member checked with the
    archive password); on S3 one GET and one HEAD per archive checked, and a download only with
    ``monitor.deep_verify``.
    """
    from backup_ops.adapters.destinations.factory import make_destination
    from backup_ops.adapters.destinations.snapshot import take_snapshot

    statuses = []
    for dest_config in config.backup.destination.destinations:
        snapshot = take_snapshot(config, make_destination(dest_config, config.backup.name))
        statuses.append(DestinationStatus(snapshot, evaluate(snapshot, config.monitor, now)))
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
    """The status table, the unhealthy destinations' failed checks, then one line per destination, as text."""
    header = ("Name", "Destination", "Reachable", "Healthy", "# of backups", "Newest backup", "Used storage")
    rows = [header]
    for s in statuses:
        healthy = _yes_no(s.healthy)
        if not s.reachable:
            rows.append((s.name, s.destination, "no", healthy, "/", "/", "/"))
            continue
        newest = age_text(s.newest.date, now) if s.newest else "No backups present"
        rows.append((s.name, s.destination, "yes", healthy, str(len(s.backups)), newest,
                     human_bytes(s.snapshot.used_storage)))
    out = _table(rows)
    failures = [(s.name, s.destination, check.name, check.sentence) for s in statuses for check in s.report.failures]
    if failures:
        out += ["", "Unhealthy backup destinations", *_table([("Name", "Destination", "Failed check", "Description"),
                                                              *failures])]
    for s in statuses:
        out.append(f"{s.destination}: {s.error}" if s.error else f"{s.destination}: {s.snapshot.location}")
        # Below the tables, so laravel-backup's columns (and a healthy destination's output) stay as they were.
        for check in s.damaged:
            out.append(f"{s.destination}: DAMAGED {check.path}: {check.detail}")
        if s.damaged:
            intact = next((c.path for c in s.checks if c.intact), None)
            out.append(f"{s.destination}: newest intact backup: {intact}" if intact else
                       f"{s.destination}: no intact backup among the {len(s.checks)} newest")
    return "\n".join(out)


def _yes_no(value: bool) -> str:
    """laravel-backup shows ✅/❌; ``list`` says yes/no like its Reachable column (plain in any terminal or log)."""
    return "yes" if value else "no"


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Fixed-width text lines: a rule, the header, a rule, the rows, a rule."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    line = "+".join("-" * (w + 2) for w in widths)
    out = [f"+{line}+"]
    for index, row in enumerate(rows):
        out.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
        if index == 0:
            out.append(f"+{line}+")
    out.append(f"+{line}+")
    return out
