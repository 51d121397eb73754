"""``python -m backup_ops check``: prove the setup before the first night (laravel users' ``test_backup.sh``).

Each check prints one line, ``OK   <area>: <what was proven>`` or ``FAIL <area>: <one sentence: what is
wrong and what to do>`` (``SKIP`` when a check does not apply), in this order:

* ``config``: the config file loads and validates;
* ``databases``: per connection, the Airflow connection resolves, the login works, pg_dump is found
  and not older than the server (``check_target``, as ``check_databases`` does before a run), and no
  two databases would share one archive member;
* ``destinations``: per destination, reachable and writable: a probe is written and deleted
  (``check_writable``), never touching a backup;
* ``password``: the archive password reference resolves when encryption is on (its value is never shown);
* ``notifications``: every configured channel has its Airflow connection (and mail its recipients),
  and which events it sends; ``--send-test-notification`` delivers one test message on each;
* ``backup`` (``--with-backup``): a database-only backup, dump → archive → verify → publish to a
  temporary local destination → verify there, then everything of it is deleted.

Exit status 0 when no check failed, else 1. A BackupError is a FAIL line, never a traceback.
Connections and variables resolve as the ``airflow`` CLI resolves them (environment, ``[secrets]
backend``, metadata database): see ``backup_ops.adapters.secrets.airflow_cli_lookups``.
"""

from __future__ import annotations

import dataclasses
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from backup_ops.adapters.secrets import airflow_cli_lookups
from backup_ops.core.config import BackupConfig, load_config
from backup_ops.core.errors import BackupError, ConfigError

Status = Literal["OK", "FAIL", "SKIP"]


@dataclass(frozen=True)
class CheckLine:
    """One check's outcome, printed as ``OK   databases: app_db: … login ok``."""

    status: Status
    area: str
    text: str

    def __str__(self) -> str:
        return f"{self.status:<4} {self.area}: {self.text}"


def check_command(config_file: str | None, *, send_test_notification: bool = False, with_backup: bool = False,
                  out: Callable[[str], Any] = print) -> int:
    """Run every check, printing each line as it completes; 0 when none failed, else 1."""
    failed = False
    with airflow_cli_lookups():
        for line in run_checks(config_file, send_test_notification=send_test_notification, with_backup=with_backup):
            out(str(line))
            failed = failed or line.status == "FAIL"
    return 1 if failed else 0


def run_checks(config_file: str | None, *, send_test_notification: bool = False,
               with_backup: bool = False) -> Iterator[CheckLine]:
    """The checks in order; the config comes first because every other check needs it."""
    try:
        config = load_config(config_file)
    except BackupError as exc:
        yield CheckLine("FAIL", "config", str(exc))
        return
    yield CheckLine("OK", "config", _describe_config(config))
    lines = [*check_databases(config)]
    yield from lines
    yield from check_destinations(config)
    password = [*check_password(config)]
    yield from password
    yield from check_notifications(config, send_test=send_test_notification)
    if with_backup:
        if any(line.status == "FAIL" for line in [*lines, *password]):
            yield CheckLine("SKIP", "backup", "not tried: the database or password checks above failed.")
        else:
            yield from check_backup(config)


def _describe_config(config: BackupConfig) -> str:
    backup = config.backup
    return (f"{config.source_path}: backup {backup.name}, {len(backup.databases)} database(s), "
            f"{len(backup.destination.destinations)} destination(s), encryption {backup.encryption}")


# ---------------------------------------------------------------------------- databases


def check_databases(config: BackupConfig) -> Iterator[CheckLine]:
    """Per connection: it resolves, logs in, pg_dump fits the server; then no two share an archive member."""
    from backup_ops.adapters.postgres.dump import check_target
    from backup_ops.adapters.postgres.target import PgTarget, target_from_connection
    from backup_ops.core.dump_member import refuse_member_clashes

    if not config.backup.databases:
        yield CheckLine("SKIP", "databases", "none configured (backup.source.databases): files only.")
        return
    targets: dict[str, PgTarget] = {}
    for source in config.backup.databases:
        try:
            targets[source.conn_id] = target = target_from_connection(source.conn_id)
            summary = check_target(target, source, pg_bin_dir=config.backup.pg_bin_dir)
        except BackupError as exc:
            yield CheckLine("FAIL", "databases", f"{source.conn_id}: {exc}")
            continue
        yield CheckLine("OK", "databases", f"{source.conn_id}: {summary}")
    try:
        refuse_member_clashes((conn_id, target.dbname, config.database(conn_id)) for conn_id, target in targets.items())
    except BackupError as exc:
        yield CheckLine("FAIL", "databases", str(exc))


# ---------------------------------------------------------------------------- destinations


def check_destinations(config: BackupConfig) -> Iterator[CheckLine]:
    """Per destination: reachable, then a probe written and deleted where the backups go."""
    from backup_ops.adapters.destinations.factory import make_destination

    for dest_config in config.backup.destination.destinations:
        try:
            dest = make_destination(dest_config, config.backup.name)
            dest.check_reachable()
            dest.check_writable()
        except BackupError as exc:
            yield CheckLine("FAIL", "destinations", f"{dest_config.name}: "
                            + str(exc).removeprefix(f"Destination {dest_config.name}: "))
            continue
        yield CheckLine("OK", "destinations", f"{dest.name}: {dest.location()} is reachable and writable (a probe "
                        "was written and deleted)")


# ---------------------------------------------------------------------------- password


def check_password(config: BackupConfig) -> Iterator[CheckLine]:
    """The archive password reference resolves (never shown) when the archives are encrypted."""
    from backup_ops.adapters.secrets import resolve_secret

    reference = config.backup.password
    if reference is None:
        yield CheckLine("OK", "password", "none configured (backup.encryption none): archives are not encrypted.")
        return
    try:
        resolve_secret(reference)
    except BackupError as exc:
        yield CheckLine("FAIL", "password", str(exc))
        return
    yield CheckLine("OK", "password", f"{reference} resolves; archives are encrypted with {config.backup.encryption} "
                    "(the value is not shown)")


# ---------------------------------------------------------------------------- notifications


def check_notifications(config: BackupConfig, *, send_test: bool) -> Iterator[CheckLine]:
    """Every configured channel can be reached; with ``send_test``, one test message is delivered on each."""
    from backup_ops.core.notification import EVENTS

    settings = config.notifications
    channels = settings.configured()
    if not channels:
        yield CheckLine("FAIL", "notifications", "no channel is configured (notifications.mail, .slack or .webhook), "
                        "so a failed, unhealthy or late backup would reach nobody; configure one (docs/monitoring.md).")
        return
    for channel in channels:
        events = [event for event in EVENTS if channel in settings.channels_for(event)]
        try:
            reached = _channel_reach(channel, getattr(settings, channel))
        except BackupError as exc:
            yield CheckLine("FAIL", "notifications", f"{channel}: {exc}")
            continue
        sends = f"sends {', '.join(events)}" if events else "no event is routed to it (notifications.events)"
        yield CheckLine("OK", "notifications", f"{channel}: {reached}; {sends}")
        if send_test:
            yield _send_test(config, channel)


def _channel_reach(channel: str, settings: Any) -> str:
    """How a channel is reached, once its Airflow connection (and, for mail, every recipient) resolves."""
    from airflow.sdk import Connection

    try:
        connection = Connection.get(settings.conn_id)
    except Exception as exc:  # the SDK raises its own not-found type
        raise ConfigError(f"Airflow connection {settings.conn_id!r} (notifications.{channel}.conn_id) could not be "
                          f"read ({type(exc).__name__}); create it (docs/monitoring.md).") from None
    if channel != "mail":
        # Slack and webhook URLs carry their token: never shown.
        return f"Airflow connection {settings.conn_id!r} ({connection.conn_type})"
    from backup_ops.adapters.notify.mail import resolve_recipients

    recipients = resolve_recipients(settings)
    server = f"{connection.host}:{connection.port}" if connection.port else str(connection.host)
    return f"Airflow connection {settings.conn_id!r} (SMTP {server}) to {', '.join(recipients)}"


def _send_test(config: BackupConfig, channel: str) -> CheckLine:
    """Deliver one test message on ``channel`` alone, through the same deliver() every run uses."""
    from backup_ops.adapters.notify import deliver
    from backup_ops.core.notification import TEST_EVENT, Notification

    name = config.backup.name
    note = Notification(
        event=TEST_EVENT, application=name, backup_name=name,
        summary=f"Sent by `python -m backup_ops check --send-test-notification` on {socket.gethostname()} through the "
                f"{channel} channel. It says nothing about the backups themselves.",
    )
    # Routed to this channel only, whatever notifications.events says of the event.
    only_here = dataclasses.replace(config.notifications, routes=((note.event, (channel,)),))
    delivered = deliver(dataclasses.replace(config, notifications=only_here), note)
    if channel in delivered:
        return CheckLine("OK", "notifications", f"{channel}: test message delivered")
    return CheckLine("FAIL", "notifications", f"{channel}: the test message could not be delivered; the reason is "
                     "logged above.")


# ---------------------------------------------------------------------------- a real backup


def check_backup(config: BackupConfig) -> Iterator[CheckLine]:
    """Dump every database, build, verify, publish to a temporary local destination, verify; delete it all.

    The same steps as ``backup_daily`` (``backup_ops.airflow.backup_steps``), files left out. The
    temporary folder (mode 0700) is made in ``backup.staging_directory`` when that exists, as a
    run's would be, else in the system's temporary directory.
    """
    from backup_ops.adapters.destinations.local import LocalDestination
    from backup_ops.adapters.staging_store import StagedRun
    from backup_ops.airflow import backup_steps as steps
    from backup_ops.core.models import archive_file_name, human_bytes

    if not config.backup.databases:
        yield CheckLine("SKIP", "backup", "no database is configured (backup.source.databases).")
        return
    staging_root = config.backup.staging_directory if config.backup.staging_directory.is_dir() else None
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="backup-ops-check-", dir=staging_root) as temporary:
            staging = Path(temporary) / "staging"
            staging.mkdir(mode=0o700)
            staged = StagedRun.of(config, str(staging))  # a local folder, whatever backup.staging says
            dumps = [steps.dump_database(steps.dump_job(config, db.conn_id, str(staging)), db.conn_id, staged)
                     for db in config.backup.databases]
            files = steps.collect_files(config, str(staging), include_files=False)
            created_at = datetime.now(UTC).replace(microsecond=0)
            plan = {"created_at": created_at.isoformat(), "staging_dir": str(staging),
                    "archive_name": archive_file_name(config.backup.destination.filename_prefix, created_at)}
            run = {"dag_id": "python -m backup_ops check", "run_id": f"check__{created_at.isoformat()}",
                   "logical_date": ""}
            archive = steps.build_archive(config, plan, dumps, files, run)
            destination = LocalDestination("check", config.backup.name, Path(temporary) / "destination")
            destination.root.mkdir()
            steps.publish(destination, archive)
    except BackupError as exc:
        yield CheckLine("FAIL", "backup", str(exc))
        return
    yield CheckLine("OK", "backup", (
        f"{len(dumps)} database(s) dumped ({sum(d['rows'] for d in dumps)} rows), archive {archive['name']} "
        f"({human_bytes(archive['size'])}, {archive['members']} members, encryption {config.backup.encryption}) "
        f"built and verified member by member, published to a temporary local destination and verified there in "
        f"{time.monotonic() - started:.1f} s; all of it deleted"))
