"""``python -m backup_ops``: operator commands that work without a running Airflow.

``list`` prints laravel-backup's ``backup:list`` table: one row per destination, and below it a
line for each damaged archive among the newest ones (their size or SHA-256 contradicts the receipt).
``verify ARCHIVE`` checks a downloaded archive against its manifest (and receipt, if beside it).
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backup_ops.core.config import BackupConfig, load_config
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


def verify_command(archive: Path, password_env: str) -> str:
    """Verify one archive file; returns the report text, raises BackupError when it is not sound.

    The password comes from the environment variable ``password_env`` or, when it is unset and
    a terminal is attached, a prompt; a wrong or missing password names the one that was used.
    """
    from backup_ops.core.archive_read import verify_archive

    password = os.environ.get(password_env)
    source = f"the environment variable {password_env} (--password-env)"
    if password is None and sys.stdin.isatty():
        password = getpass.getpass(f"Archive password for {archive.name} (empty: none): ") or None
        source = "the password typed at the prompt" if password else f"{source}, or type it at the prompt"
    receipt_file = archive.with_name(archive.name + ".json")
    expected_sha = expected_size = None
    if receipt_file.is_file():
        receipt = json.loads(receipt_file.read_text(encoding="utf-8"))
        expected_sha, expected_size = receipt.get("sha256"), receipt.get("size")
    result = verify_archive(archive, password=password.encode() if password else None,
                            expected_sha256=expected_sha, expected_size=expected_size, password_source=source)
    manifest = result.manifest
    lines = [f"{archive}: OK — {result.members_checked} members, {human_bytes(result.bytes_checked)} checked"
             + (" (size and sha256 match the receipt)" if expected_sha else " (no receipt beside it)"),
             f"  created {manifest.created_at.isoformat()} by {manifest.run.get('dag_id', '?')} "
             f"run {manifest.run.get('run_id', '?')}, encryption {manifest.encryption}"]
    for db in manifest.databases:
        lines.append(f"  {db.member}: {db.database}, {len(db.tables)} tables, {db.total_rows} rows, "
                     f"pg_dump {db.pg_dump_version}, server {db.server_version}")
    lines.append(f"  files: {manifest.file_count} ({human_bytes(manifest.file_bytes)})")
    if manifest.skipped:
        counts: dict[str, int] = {}
        for skipped in manifest.skipped:
            counts[skipped.reason] = counts.get(skipped.reason, 0) + 1
        by_reason = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        lines.append(f"  skipped when the backup was taken: {len(manifest.skipped)} ({by_reason})")
        shown = 10
        lines += [f"    {s.name}: {s.detail} [{s.reason}]" for s in manifest.skipped[:shown]]
        if len(manifest.skipped) > shown:
            lines.append(f"    … and {len(manifest.skipped) - shown} more (all are in manifest.json)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backup_ops", description=__doc__)
    parser.add_argument("--config", help="config file (default: $BACKUP_OPS_CONFIG or include/backup_config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="one row per destination: reachable, count, newest backup, used storage")
    verify = sub.add_parser("verify", help="check an archive file member by member against its manifest")
    verify.add_argument("archive", type=Path)
    verify.add_argument("--password-env", default="BACKUP_ARCHIVE_PASSWORD",
                        help="environment variable holding the archive password (default: %(default)s); "
                        "asked for interactively when unset")
    args = parser.parse_args(argv)
    # Provider hooks log routine INFO lines (credentials source, …) that would clutter the table;
    # Airflow configures its loggers from this variable when it is first imported (S3 listing).
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    logging.getLogger("airflow").setLevel(logging.WARNING)
    try:
        if args.command == "list":
            config = load_config(args.config)
            print(render_table(destination_statuses(config), datetime.now(UTC)))
        elif args.command == "verify":
            print(verify_command(args.archive, args.password_env))
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
