"""``python -m backup_ops restore``: restore a backup for real, through the same code as the restore drill.

    python -m backup_ops restore --destination NAME --backup latest|ARCHIVE --target-conn CONN \\
        --database NEWNAME [--database NEWNAME2 …] [--files-to DIR] [--force] [--password-env VAR]

What it does, printing one line per step: picks the backup on the destination; fetches it (in place
from a local disk, downloaded from S3 into a private temporary folder below
``backup.staging_directory``); verifies it (receipt, password, every member); for each database of
the backup, in manifest order, one ``--database`` name on the server of ``--target-conn``: creates
it (or uses it when it exists and is empty; one with content is refused unless ``--force``, which
drops and creates it again; the source database itself is always refused), applies the roles and
database settings the backup carries, loads the dump; validates every table with Great
Expectations exactly as the drill does; with ``--files-to``, writes the application's files into
that folder (which must be empty or new: nothing is written anywhere else) and checks each one's
SHA-256. Exit status 0 when everything restored and validated, else 1 with one sentence.

A database this command created is dropped again when its restore fails, so nothing half-loaded
is left behind. Connections and the password reference resolve as the ``airflow`` CLI resolves
them (environment, ``[secrets] backend``, metadata database).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from backup_ops.adapters.secrets import airflow_cli_lookups
from backup_ops.core.config import BackupConfig, load_config
from backup_ops.core.errors import BackupError, ConfigError, SecretError
from backup_ops.core.models import human_bytes

_SHOWN_FAILURES = 10


class RestoreValidationFailed(BackupError):
    """The restored data differs from the backup's manifest or the configured expectations."""

    retryable = False


def restore_command(config_file: str | None, *, destination: str, backup: str, target_conn: str,
                    databases: Sequence[str], files_to: Path | None = None, force: bool = False,
                    password_env: str | None = None, out: Callable[[str], Any] = print) -> int:
    """Restore, printing each step; 0 when everything restored and validated. Raises BackupError with one sentence."""
    started = time.monotonic()
    config = load_config(config_file)
    if files_to is not None:
        _check_files_target(files_to)
    with airflow_cli_lookups():
        password, source = _password(config, password_env)
        workdir = _workdir(config)
        try:
            _restore(config, out, destination=destination, backup=backup, target_conn=target_conn,
                     databases=databases, files_to=files_to, force=force, password=password, source=source,
                     workdir=workdir)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    out(f"Restored and validated in {time.monotonic() - started:.1f} s.")
    return 0


def _restore(config: BackupConfig, out: Callable[[str], Any], *, destination: str, backup: str, target_conn: str,
             databases: Sequence[str], files_to: Path | None, force: bool, password: bytes | None, source: str,
             workdir: Path) -> None:
    from backup_ops.adapters.backup_fetch import fetch_backup, select_backup, verify_fetched
    from backup_ops.adapters.destinations.factory import make_destination
    from backup_ops.adapters.postgres import restore as pg_restore
    from backup_ops.adapters.postgres.target import target_from_connection
    from backup_ops.core.restore_plan import restore_names

    dest = make_destination(config.destination(destination), config.backup.name)
    server = target_from_connection(target_conn)
    configured = pg_restore.source_targets([db.conn_id for db in config.backup.databases])
    for name in databases:  # refused before anything is fetched; checked again once the backup is known
        pg_restore.refuse_source_database(server, target_conn, name, configured)
        pg_restore.check_restore_target(server, target_conn, name, force=force)
    selected = select_backup(dest, backup)
    fetched = fetch_backup(dest, selected, workdir)
    verified = verify_fetched(fetched, selected, password=password, password_source=source)
    manifest = verified.manifest
    out(f"Backup {selected.backup.path} on {destination}: verified ({verified.members_checked} members, "
        f"{human_bytes(verified.bytes_checked)}"
        + (", size and sha256 match the receipt" if selected.receipt else ", no receipt beside it")
        + f"), created {manifest.created_at:%Y-%m-%d %H:%M:%S} UTC")
    names = restore_names(manifest, databases)
    sources = pg_restore.source_targets([*(db.conn_id for db in config.backup.databases),
                                         *(db.conn_id for db in manifest.databases)])
    for db, name in zip(manifest.databases, names, strict=True):
        pg_restore.refuse_source_database(server, target_conn, name, sources)
        info = pg_restore.database_info(fetched.path, db, password, password_source=source)
        created, notes = pg_restore.prepare_database(server, target_conn, name, info, force=force)
        try:
            loaded = pg_restore.restore_database(
                server, target_conn, name, fetched.path, db, info=info, password=password, workdir=workdir,
                pg_bin_dir=config.backup.pg_bin_dir, jobs=config.restore_drill.jobs, password_source=source,
                notes=notes)
        except BaseException:
            if created:
                pg_restore.drop_database(server, target_conn, name)
                out(f"Dropped database {name} again: its restore failed.")
            raise
        out(f"Database {db.database} ({len(db.tables)} tables, {db.total_rows} rows) → {name} on {loaded.server}: "
            f"{human_bytes(loaded.size_bytes)} in {loaded.seconds:.1f} s")
        for line in (*loaded.notes, *loaded.globals):
            out(f"  {line}")
        for note in db.globals_notes:
            out(f"  not captured when the backup was made: {note}")
        _validate(config, out, pg_restore.on_database(server, name), target_conn, db, manifest.created_at)
    if files_to is not None:
        _restore_files(out, fetched.path, manifest, files_to, password)


def _validate(config: BackupConfig, out: Callable[[str], Any], target: Any, conn_id: str, db: Any,
              created_at: Any) -> None:
    """The drill's validation of one restored database; prints it, raises when it fails."""
    from backup_ops.adapters.validation import validate_database
    from backup_ops.core.drill_outcome import validation_checks
    from backup_ops.core.restore_plan import table_expectations

    rules = config.restore_drill.expectations
    run = validate_database(target, conn_id, table_expectations(db, rules, created_at), label=db.database,
                            exact_by=config.restore_drill.exact_checks)
    tables = [t.to_dict() for t in run.tables]
    for check in validation_checks(tables):
        out(f"  validation {check['status'].upper()} {check['name']}: {check['detail']}")
    failed = [t for t in tables if not t["success"]]
    for table in failed[:_SHOWN_FAILURES]:
        problems = "; ".join(f"{r['kind']}: {r['detail']}" for r in table["results"] if not r["success"])
        out(f"  FAIL {table['table']}: {problems}")
    if failed:
        raise RestoreValidationFailed(f"Database {target.dbname} was restored, but {len(failed)} of {len(tables)} "
                                      "tables do not match the backup's manifest (listed above); it is kept for "
                                      "inspection.")
    engines = " + ".join("Great Expectations" if e == "great_expectations" else "SQL" for e in run.engines)
    out(f"  validation: {len(tables)} tables match the manifest exactly ({engines}, {run.seconds:.1f} s)")


def _restore_files(out: Callable[[str], Any], archive: Path, manifest: Any, files_to: Path,
                   password: bytes | None) -> None:
    from backup_ops.core.extract import safe_extract
    from backup_ops.core.file_check import check_restored_files
    from backup_ops.core.restore_plan import file_members

    members = file_members(manifest)
    if not members:
        out("Files: the backup holds none.")
        return
    safe_extract(archive, files_to, password=password, members=[m.name for m in members],
                 listed=manifest.members_by_name(), max_total_bytes=manifest.file_bytes)
    checked = check_restored_files(files_to, members)
    out(f"Files: {checked.files} files and {checked.directories} directories ({human_bytes(checked.bytes)}) "
        f"restored to {files_to}, each matching the manifest's sha256")


def _check_files_target(folder: Path) -> None:
    """--files-to must be a new or empty directory: restored files never mix with (or overwrite) others."""
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise ConfigError(f"--files-to {folder} is not a directory; give a new or empty directory.")
    if folder.is_dir() and any(folder.iterdir()):
        raise ConfigError(f"--files-to {folder} is not empty; give a new or empty directory (restored files never "
                          "overwrite or mix with others).")


def _password(config: BackupConfig, password_env: str | None) -> tuple[bytes | None, str]:
    """The archive password: from ``--password-env`` when given, else the config's ``backup.password``."""
    from backup_ops.adapters.secrets import resolve_secret
    from backup_ops.core.archive_read import password_source_of

    if password_env:
        value = os.environ.get(password_env)
        if not value:
            raise SecretError(f"The environment variable {password_env} (--password-env) is not set or empty; "
                              "export the archive password in it.")
        return value.encode(), f"the environment variable {password_env} (--password-env)"
    value = resolve_secret(config.backup.password)
    return (value.encode() if value else None), password_source_of(config.backup.password)


def _workdir(config: BackupConfig) -> Path:
    """A private (0700) temporary folder for a downloaded archive and extracted custom dumps."""
    root = config.backup.staging_directory
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="restore-", dir=root))
    except OSError as exc:
        raise ConfigError(f"backup.staging_directory {root} cannot be used for the restore's working directory "
                          f"({exc.strerror}); point it at a writable directory with room for the archive.") from exc
