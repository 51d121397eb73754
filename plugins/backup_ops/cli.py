"""``python -m backup_ops``: operator commands that work without a running Airflow.

``list`` prints laravel-backup's ``backup:list`` table: one row per destination.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from backup_ops.config import BackupConfig, load_config
from backup_ops.errors import BackupError
from backup_ops.models import BackupFile
from backup_ops.operators.backup import human_bytes


@dataclass(frozen=True)
class DestinationStatus:
    """What ``list`` shows for one destination."""

    name: str
    destination: str
    location: str
    reachable: bool
    error: str | None
    backups: list[BackupFile]

    @property
    def newest(self) -> BackupFile | None:
        return self.backups[0] if self.backups else None


def destination_statuses(config: BackupConfig) -> list[DestinationStatus]:
    """List every configured destination; an unreachable one is reported, not raised."""
    from backup_ops.destinations.factory import make_destination

    statuses = []
    for dest_config in config.backup.destination.destinations:
        dest = make_destination(dest_config, config.backup.name)
        try:
            dest.check_reachable()
            backups = dest.list_backups()
            statuses.append(DestinationStatus(config.backup.name, dest.name, dest.location(), True, None, backups))
        except BackupError as exc:
            statuses.append(DestinationStatus(config.backup.name, dest.name, dest.location(), False, str(exc), []))
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
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backup_ops", description=__doc__)
    parser.add_argument("--config", help="config file (default: $BACKUP_OPS_CONFIG or include/backup_config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="one row per destination: reachable, count, newest backup, used storage")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.command == "list":
            print(render_table(destination_statuses(config), datetime.now(UTC)))
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
