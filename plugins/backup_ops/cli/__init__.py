"""``python -m backup_ops``: operator commands that work without a running Airflow.

``list`` prints laravel-backup's ``backup:list`` table (``list_command``); ``verify ARCHIVE`` checks a
downloaded archive against its manifest and receipt (``verify_command``); ``check`` proves the setup
before the first night, one line per check (``check_command``); ``restore`` restores a backup for real
through the restore drill's code (``restore_command``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from backup_ops.adapters.secrets import airflow_cli_lookups
from backup_ops.cli.check_command import check_command
from backup_ops.cli.list_command import destination_statuses, render_table
from backup_ops.cli.restore_command import restore_command
from backup_ops.cli.verify_command import verify_command
from backup_ops.core.config import load_config
from backup_ops.core.errors import BackupError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m backup_ops", description=__doc__)
    parser.add_argument("--config", help="config file (default: $BACKUP_OPS_CONFIG or include/backup_config.yaml)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="one row per destination: reachable, healthy (backup_monitor's checks), count, "
                   "newest backup, used storage; then each failed check")
    verify = sub.add_parser("verify", help="check an archive file member by member against its manifest")
    verify.add_argument("archive", type=Path)
    verify.add_argument("--password-env", default="BACKUP_ARCHIVE_PASSWORD",
                        help="environment variable holding the archive password (default: %(default)s); "
                        "asked for interactively when unset")
    check = sub.add_parser("check", help="preflight: config, database logins and pg_dump, destinations writable, "
                           "archive password, notification channels; one line per check, exit 1 if any fails")
    check.add_argument("--send-test-notification", action="store_true",
                       help="also deliver one test message on every configured notification channel")
    check.add_argument("--with-backup", action="store_true",
                       help="also run a database-only backup to a temporary local destination, verify it, delete it")
    restore = sub.add_parser("restore", help="restore a backup for real (same code as the restore drill): databases "
                             "onto a server, files into a new folder, then validate")
    restore.add_argument("--destination", required=True, help="the destination holding the backup")
    restore.add_argument("--backup", default="latest", help="'latest' (default) or an archive name")
    restore.add_argument("--target-conn", required=True, help="Airflow connection of the server to restore onto")
    restore.add_argument("--database", action="append", required=True, metavar="NEWNAME",
                         help="the new database's name; once per database of the backup, in manifest order")
    restore.add_argument("--files-to", type=Path, help="restore the files into this new or empty directory")
    restore.add_argument("--force", action="store_true",
                         help="drop and create again a target database that is not empty")
    restore.add_argument("--password-env", help="environment variable holding the archive password "
                         "(default: the config's backup.password)")
    args = parser.parse_args(argv)
    # Provider hooks log routine INFO lines (credentials source, …) that would clutter the table;
    # Airflow configures its loggers from this variable when it is first imported (S3 listing).
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    logging.getLogger("airflow").setLevel(logging.WARNING)
    try:
        if args.command == "list":
            config = load_config(args.config)
            now = datetime.now(UTC)
            # Connections stored in the metadata DB are found as the airflow CLI finds them.
            with airflow_cli_lookups():
                print(render_table(destination_statuses(config, now), now))
        elif args.command == "verify":
            print(verify_command(args.archive, args.password_env))
        elif args.command == "restore":
            return restore_command(args.config, destination=args.destination, backup=args.backup,
                                   target_conn=args.target_conn, databases=args.database, files_to=args.files_to,
                                   force=args.force, password_env=args.password_env)
        elif args.command == "check":
            return check_command(args.config, send_test_notification=args.send_test_notification,
                                 with_backup=args.with_backup)
    except BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
