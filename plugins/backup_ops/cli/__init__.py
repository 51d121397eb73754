"""``python -m backup_ops``: operator commands that work without a running Airflow.

``list`` prints laravel-backup's ``backup:list`` table (``list_command``); ``verify ARCHIVE`` checks a
downloaded archive against its manifest and receipt (``verify_command``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from backup_ops.cli.list_command import destination_statuses, render_table
from backup_ops.cli.verify_command import verify_command
from backup_ops.core.config import load_config
from backup_ops.core.errors import BackupError


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
