"""The steps of ``restore_drill``: each wraps one adapter call, logs one summary, returns a small timed dict.

A drill proves that a backup restores: ``select`` picks it, ``fetch`` makes it a local file in the
run's private working directory, ``verify`` proves it is the archive that was published (receipt,
password, every member), ``extract`` writes its files safely, ``restore`` loads each database into a
scratch database ``backup_drill_<YYYYmmddHHMMSS>``, ``validate`` checks every table against the
manifest (exact counts and columns) and the configured rules (Great Expectations), ``verify_files``
hashes every restored file, ``report`` leaves the drill report on the destination, and ``teardown``
drops what the drill made and notifies.

Every phase result carries ``started_at``, ``finished_at``, ``seconds`` and its ``checks``; the
report is built from them (``core.drill_outcome``). Nothing large travels through XCom. The source
database is never written to: the scratch databases have names of their own, and a target that is
a source database is refused. The working directory lives below ``backup.staging_directory`` like
a backup's staging folder, so every task of a drill must run where it is (one worker or a shared
volume).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backup_ops.adapters.destinations.base import BackupDestination
from backup_ops.adapters.postgres.target import PgTarget
from backup_ops.core.config import BackupConfig
from backup_ops.core.errors import ArchiveError, BackupError, ConfigError, VerificationError
from backup_ops.core.models import BackupFile, Receipt, human_bytes, run_folder_name
from backup_ops.core.restore_plan import LATEST, scratch_names

log = logging.getLogger(__name__)

DAG_ID = "restore_drill"
FILES_FOLDER = "files"
STALE_SCRATCH_AFTER = timedelta(hours=24)
"""A scratch database older than this was left by a drill killed before its teardown; the next drill drops it."""


class ValidationFailed(BackupError):
    """The restored data differs from the manifest or the configured expectations: a retry restores the same."""

    retryable = False


class DrillFailed(BackupError):
    """The drill did not prove the backup restorable (the teardown says so after cleaning up and notifying)."""

    retryable = False


# ---------------------------------------------------------------------------- timing and faults


@contextmanager
def archive_faults_are_permanent() -> Iterator[None]:
    """An archive that does not verify, decrypt or extract fails the same way on every try: no retries.

    The archive is a local file by then (fetched by an earlier task), so trying again reads the same bytes.
    """
    try:
        yield
    except (ArchiveError, VerificationError) as exc:
        exc.retryable = False
        raise


def timed(phase: str) -> Callable[[Callable[..., dict[str, Any]]], Callable[..., dict[str, Any]]]:
    """Add ``phase``, ``started_at``, ``finished_at`` and ``seconds`` to a step's result."""
    def decorate(function: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
            started, clock = datetime.now(UTC), time.monotonic()
            result = function(*args, **kwargs)
            return {**result, "phase": phase, "started_at": started.isoformat(),
                    "finished_at": datetime.now(UTC).isoformat(), "seconds": round(time.monotonic() - clock, 3)}
        return run
    return decorate


def _check(name: str, status: str, detail: str) -> dict[str, str]:
    return {"name": name, "status": status, "detail": detail}


# ---------------------------------------------------------------------------- select, fetch, verify


@timed("select")
def select(config: BackupConfig, params: Mapping[str, Any], run_id: str) -> dict[str, Any]:
    """Validate the run's Params and pick the backup to drill on its destination."""
    from backup_ops.adapters.backup_fetch import select_backup

    names = config.backup.destination.names()
    destination = str(params.get("destination") or names[0])
    config.destination(destination)  # a name the config does not know fails here, listing the valid ones
    wanted = str(params.get("backup") or LATEST)
    target_conn_id = str(params.get("target_conn_id") or config.restore_drill.target_conn_id or "") or None
    selected = select_backup(_destination(config, destination), wanted)
    started_at = datetime.now(UTC).replace(microsecond=0)
    backup = selected.backup
    log.info("Restore drill of %s from %s: %s (%s, %s), scratch databases on %s", config.backup.name, destination,
             backup.path, human_bytes(backup.size), backup.date.isoformat(),
             f"Airflow connection {target_conn_id!r}" if target_conn_id else "each database's own server")
    return {
        "destination": destination, "archive": backup.path, "size": backup.size, "date": backup.date.isoformat(),
        "receipt": selected.receipt.to_dict() if selected.receipt else None, "drill_started_at": started_at.isoformat(),
        "target_conn_id": target_conn_id, "restore_files": bool(params.get("restore_files", True)),
        "workdir": str(workdir_for(config, run_id)),
        "checks": [_check("select", "pass", f"{backup.path} ({'the newest backup' if wanted == LATEST else 'named'})")],
    }


@timed("fetch")
def fetch(config: BackupConfig, selected: Mapping[str, Any]) -> dict[str, Any]:
    """Make the archive a local file: read in place from a local disk, downloaded from S3 into a fresh 0700 folder."""
    from backup_ops.adapters.backup_fetch import fetch_backup
    from backup_ops.airflow.staging import sweep_stale_runs

    workdir = Path(selected["workdir"])
    _fresh_workdir(config, workdir)
    sweep_stale_runs(config.backup.staging_directory, DAG_ID, keep=workdir)
    fetched = fetch_backup(_destination(config, selected["destination"]), _selected(selected), workdir)
    how = "read in place" if fetched.in_place else f"downloaded in {fetched.seconds:.1f} s"
    log.info("Fetched %s: %s, %s (%s)", selected["archive"], human_bytes(fetched.size), how, fetched.path)
    return {"archive_path": str(fetched.path), "in_place": fetched.in_place, "bytes": fetched.size,
            "checks": [_check("fetch", "pass", f"{human_bytes(fetched.size)}, {how}")]}


@timed("verify")
def verify(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any]) -> dict[str, Any]:
    """Size and SHA-256 against the receipt, then every member decrypted and matched with the manifest."""
    from backup_ops.adapters.backup_fetch import FetchedBackup, verify_fetched

    password, source = _password(config)
    path = Path(fetched["archive_path"])
    with archive_faults_are_permanent():
        result = verify_fetched(FetchedBackup(path, int(fetched["bytes"]), bool(fetched["in_place"]), 0.0),
                                _selected(selected), password=password, password_source=source)
    manifest = result.manifest
    receipt = selected.get("receipt")
    checks = [
        _check("checksum", "pass", "size and sha256 match the receipt") if receipt
        else _check("checksum", "skipped", "no receipt beside the archive; its members were checked against the "
                                           "manifest"),
        _check("decrypt", "pass", f"{result.members_checked} members ({human_bytes(result.bytes_checked)}) "
                                  f"{'decrypt and ' if manifest.encryption != 'none' else ''}match the manifest"),
    ]
    databases = [{"conn_id": db.conn_id, "database": db.database, "member": db.member, "format": db.format,
                  "tables": len(db.tables), "rows": db.total_rows,
                  "globals": bool(db.roles_member or db.database_member)} for db in manifest.databases]
    log.info("Verified %s: %d members, %s, created %s, %d database(s), %d files", selected["archive"],
             result.members_checked, human_bytes(result.bytes_checked), manifest.created_at.isoformat(),
             len(databases), manifest.file_count)
    return {"created_at": manifest.created_at.isoformat(), "encryption": manifest.encryption,
            "members": result.members_checked, "databases": databases, "files": manifest.file_count,
            "file_bytes": manifest.file_bytes, "checks": checks}


# ---------------------------------------------------------------------------- files


@timed("extract")
def extract(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any]) -> dict[str, Any]:
    """Write the backup's files below the working directory, refusing anything unsafe before writing."""
    from backup_ops.adapters.backup_fetch import read_manifest
    from backup_ops.core.extract import safe_extract
    from backup_ops.core.restore_plan import file_members

    if not selected.get("restore_files", True):
        return {"status": "skipped", "checks": [_check("extract", "skipped", "restore_files is false")]}
    password, source = _password(config)
    archive = Path(fetched["archive_path"])
    manifest = read_manifest(archive, password, password_source=source)
    members = file_members(manifest)
    if not members:
        return {"status": "skipped", "checks": [_check("extract", "skipped", "the backup holds no files")]}
    folder = Path(selected["workdir"]) / FILES_FOLDER
    shutil.rmtree(folder, ignore_errors=True)  # an earlier try's partial extraction
    with archive_faults_are_permanent():
        created = safe_extract(archive, folder, password=password, members=[m.name for m in members],
                               listed=manifest.members_by_name(), max_total_bytes=manifest.file_bytes)
    size = sum(m.size for m in members)
    log.info("Extracted %d files and directories (%s) into %s", len(created), human_bytes(size), folder)
    return {"status": "extracted", "entries": len(created), "bytes": size,
            "checks": [_check("extract", "pass", f"{len(created)} entries ({human_bytes(size)}) extracted safely")]}


@timed("verify_files")
def verify_files(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any],
                 extracted: Mapping[str, Any]) -> dict[str, Any]:
    """Every restored file's size and SHA-256 against the manifest."""
    from backup_ops.adapters.backup_fetch import read_manifest
    from backup_ops.core.file_check import check_restored_files
    from backup_ops.core.restore_plan import file_members

    if extracted.get("status") != "extracted":
        return {"status": "skipped", "checks": [_check("files", "skipped", "no files were extracted")]}
    password, source = _password(config)
    manifest = read_manifest(Path(fetched["archive_path"]), password, password_source=source)
    with archive_faults_are_permanent():
        checked = check_restored_files(Path(selected["workdir"]) / FILES_FOLDER, file_members(manifest))
    log.info("Verified %d restored files (%s) and %d directories against the manifest", checked.files,
             human_bytes(checked.bytes), checked.directories)
    return {"status": "verified", "files": checked.files, "bytes": checked.bytes,
            "checks": [_check("files", "pass", f"{checked.files} files ({human_bytes(checked.bytes)}) match the "
                                               "manifest's sha256")]}


# ---------------------------------------------------------------------------- databases


@timed("restore")
def restore(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any]) -> dict[str, Any]:
    """Each database into its scratch database: created, roles and settings applied, dump loaded, size measured."""
    from backup_ops.adapters.backup_fetch import read_manifest
    from backup_ops.adapters.postgres import restore as pg_restore

    password, source = _password(config)
    archive = Path(fetched["archive_path"])
    manifest = read_manifest(archive, password, password_source=source)
    names = scratch_names(datetime.fromisoformat(selected["drill_started_at"]), len(manifest.databases))
    sources = pg_restore.source_targets([*(db.conn_id for db in config.backup.databases),
                                         *(db.conn_id for db in manifest.databases)], log=log)
    restored, checks = [], []
    for db, name in zip(manifest.databases, names, strict=True):
        conn_id = selected.get("target_conn_id") or db.conn_id
        server = _target(conn_id)
        pg_restore.refuse_source_database(server, conn_id, name, sources)
        pg_restore.drop_scratch_database(server, conn_id, name)  # an earlier try's
        info = pg_restore.database_info(archive, db, password, password_source=source)
        notes = pg_restore.create_database(server, conn_id, name, info, log=log)
        with archive_faults_are_permanent():
            loaded = pg_restore.restore_database(
                server, conn_id, name, archive, db, info=info, password=password, workdir=Path(selected["workdir"]),
                pg_bin_dir=config.backup.pg_bin_dir, jobs=config.restore_drill.jobs, password_source=source,
                notes=notes, log=log)
        restored.append({"database": db.database, "scratch": name, "server": loaded.server, "conn_id": conn_id,
                         "size_bytes": loaded.size_bytes, "tables": len(db.tables), "rows": db.total_rows,
                         "seconds": round(loaded.seconds, 3), "globals": list(loaded.globals[:50]),
                         "notes": [*loaded.notes, *db.globals_notes]})
        checks.append(_check("restore", "pass", f"{db.database} → {name} on {loaded.server}: {len(db.tables)} "
                                                f"tables, {db.total_rows} rows, {human_bytes(loaded.size_bytes)} "
                                                f"in {loaded.seconds:.1f} s"))
    return {"databases": restored, "checks": checks}


@timed("validate")
def validate(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any],
             restored: Mapping[str, Any], ti: Any = None) -> dict[str, Any]:
    """Every restored table against the manifest (exact rows, same columns) and the configured rules (GX).

    A failed validation pushes its summary as this task's XCom (the report needs it), then fails
    with ValidationFailed naming the first failure.
    """
    from backup_ops.adapters.backup_fetch import read_manifest
    from backup_ops.adapters.postgres.restore import on_database
    from backup_ops.adapters.validation import validate_database
    from backup_ops.core.drill_outcome import validation_checks
    from backup_ops.core.restore_plan import table_expectations, unmatched_rules

    started, clock = datetime.now(UTC), time.monotonic()
    password, source = _password(config)
    manifest = read_manifest(Path(fetched["archive_path"]), password, password_source=source)
    rules = config.restore_drill.expectations
    tables: list[dict[str, Any]] = []
    import_seconds = 0.0
    engines: dict[str, None] = {}
    for db, done in zip(manifest.databases, restored["databases"], strict=True):
        expectations = table_expectations(db, rules, manifest.created_at)
        run = validate_database(on_database(_target(done["conn_id"]), done["scratch"]), done["conn_id"],
                                expectations, label=db.database, log=log, exact_by=config.restore_drill.exact_checks)
        import_seconds += run.import_seconds
        engines.update(dict.fromkeys(run.engines))
        tables += [t.to_dict() for t in run.tables]
    checks = validation_checks(tables, unmatched_rules(manifest, rules))
    failed = [t for t in tables if not t["success"]]
    result = {
        "success": not failed and all(c["status"] != "fail" for c in checks),
        "tables": len(tables), "passed": len(tables) - len(failed), "failed": len(failed),
        "expectations": sum(len(t["results"]) for t in tables), "import_seconds": round(import_seconds, 3),
        "engines": list(engines), "exact_checks": config.restore_drill.exact_checks,
        "per_table": [_compact(t) for t in tables], "checks": checks,
    }
    if result["success"]:
        log.info("Validation passed: %d tables match the manifest exactly", len(tables))
        return result
    first = next(c for c in checks if c["status"] == "fail")
    if ti is not None:
        ti.xcom_push("return_value", {**result, "phase": "validate", "started_at": started.isoformat(),
                                      "finished_at": datetime.now(UTC).isoformat(),
                                      "seconds": round(time.monotonic() - clock, 3)})
    raise ValidationFailed(f"The restored data does not match the backup: {first['name']}: {first['detail']}")


def _compact(table: Mapping[str, Any]) -> dict[str, Any]:
    """A table's validation for the report: its outcome, rows, and what failed."""
    return {"database": table["database"], "table": table["table"], "success": table["success"],
            "rows": table["rows"], "expected_rows": table["expected_rows"],
            "failures": [f"{r['kind']}: {r['detail']}" for r in table["results"] if not r["success"]]}


# ---------------------------------------------------------------------------- report and teardown


def report(config: BackupConfig, ti: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """Build the drill report from every phase's result and cause, write it to the destination, return it."""
    from backup_ops.adapters.destinations.base import DrillReportExists
    from backup_ops.airflow.failures import read_failures
    from backup_ops.core.drill_outcome import PHASES, build_report
    from backup_ops.core.drill_report import report_key

    results = {phase: ti.xcom_pull(task_ids=phase, default=None) for phase in PHASES}
    selected = results.get("select") or {}
    destination = str(selected.get("destination") or params.get("destination")
                      or config.backup.destination.names()[0])
    started_at = datetime.fromisoformat(selected["drill_started_at"]) if selected else _run_start(ti)
    outcome = build_report(backup_name=config.backup.name, destination=destination, started_at=started_at,
                           finished_at=datetime.now(UTC), results=results, failures=read_failures(ti),
                           dag_id=ti.dag_id, run_id=ti.run_id)
    key = report_key(config.backup.name, started_at)
    data = outcome.to_json()
    try:
        location = _destination(config, destination).write_drill_report(key, data)
    except DrillReportExists:
        if not _written_by(_destination(config, destination), key, ti.run_id):
            raise
        location = key  # an earlier try of this task wrote it
    except ConfigError as exc:
        log.error("The drill report could not be written: %s", exc)
        location = None
    summary = outcome.report
    (log.info if summary.succeeded else log.warning)(
        "Restore drill %s: %s of %s from %s%s; report %s", summary.outcome, summary.archive, config.backup.name,
        destination, f", RTO {summary.rto_seconds:.1f} s" if summary.rto_seconds is not None else "", location)
    for check in summary.checks:
        log.info("  [%s] %s: %s", check.status, check.name, check.detail)
    return {**outcome.data, "report_key": key, "report_location": location}


def _written_by(destination: BackupDestination, key: str, run_id: str) -> bool:
    """Whether the report at ``key`` is this run's (an earlier try of the report task wrote it)."""
    from backup_ops.core.drill_report import MAX_REPORT_BYTES, DrillReportError, parse_drill_report

    try:
        return parse_drill_report(destination.read_drill_report(key, MAX_REPORT_BYTES) or b"").run_id == run_id
    except DrillReportError:
        return False


def teardown(config: BackupConfig, ti: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the scratch databases and the working directory (unless keep_scratch), notify, fail a failed drill."""
    from backup_ops.airflow.failures import read_failures

    selected = ti.xcom_pull(task_ids="select", default=None) or {}
    verified = ti.xcom_pull(task_ids="verify", default=None) or {}
    drill = ti.xcom_pull(task_ids="report", default=None)
    failures = read_failures(ti)
    keep = bool(params.get("keep_scratch"))
    kept, dropped, problems = [], [], []
    for conn_id, name in planned_scratch(selected, verified):
        if keep:
            kept.append(name)
            continue
        try:
            if drop_scratch(conn_id, name):
                dropped.append(name)
        except BackupError as exc:
            problems.append(f"could not drop scratch database {name}: {exc}")
    if not keep:
        problems += _remove_workdir(config, selected)
        problems += _sweep_stale_scratch(selected, verified)
    if kept:
        log.warning("Kept the scratch database(s) %s and the working directory %s (keep_scratch); drop them when "
                    "done (the next drill a day later drops them).", ", ".join(kept), selected.get("workdir"))
    elif dropped:
        log.info("Dropped the scratch database(s) %s", ", ".join(dropped))
    succeeded = bool(drill and drill.get("outcome") == "succeeded") and not failures
    _notify(config, ti, params, drill, failures, problems, succeeded)
    if not succeeded:
        error = (drill or {}).get("error") or "; ".join(f"{n['task']}: {n['error']}" for n in failures) or \
            "the drill report was not made (see the report task's log)"
        raise DrillFailed(f"Restore drill of {config.backup.name} failed: {error}")
    if problems:
        raise DrillFailed(f"Restore drill of {config.backup.name} succeeded, but its cleanup failed: "
                          + "; ".join(problems))
    return {"dropped": dropped, "kept": kept}


def planned_scratch(selected: Mapping[str, Any], verified: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(connection id, name) of every scratch database this drill may have created."""
    if not selected or not verified:
        return []
    databases = verified.get("databases") or []
    names = scratch_names(datetime.fromisoformat(selected["drill_started_at"]), len(databases))
    return [(selected.get("target_conn_id") or db["conn_id"], name) for db, name in zip(databases, names, strict=True)]


def drop_scratch(conn_id: str, name: str) -> bool:
    from backup_ops.adapters.postgres.restore import drop_scratch_database

    return drop_scratch_database(_target(conn_id), conn_id, name)


def _sweep_stale_scratch(selected: Mapping[str, Any], verified: Mapping[str, Any]) -> list[str]:
    """Drop scratch databases that drills killed before their teardown left on this drill's servers."""
    from backup_ops.adapters.postgres.restore import stale_scratch_databases

    problems = []
    before = datetime.now(UTC) - STALE_SCRATCH_AFTER
    for conn_id in dict.fromkeys(c for c, _ in planned_scratch(selected, verified)):
        try:
            for name in stale_scratch_databases(_target(conn_id), conn_id, before):
                drop_scratch(conn_id, name)
                log.warning("Dropped scratch database %s, left by a drill that ended without its teardown", name)
        except BackupError as exc:
            problems.append(f"could not look for stale scratch databases (Airflow connection {conn_id!r}): {exc}")
    return problems


def _notify(config: BackupConfig, ti: Any, params: Mapping[str, Any], drill: Mapping[str, Any] | None,
            failures: Sequence[Mapping[str, Any]], problems: Sequence[str], succeeded: bool) -> None:
    from backup_ops.adapters.notify import deliver
    from backup_ops.airflow.failures import label
    from backup_ops.core.notification import Failure, Notification

    drill = drill or {}
    archive = drill.get("archive") or "(none selected)"
    if succeeded:
        rto = drill.get("rto_seconds")
        summary = (f"Backup {archive} on {drill.get('destination')} was restored and validated"
                   + (f" in {rto:.1f} s (measured RTO)." if isinstance(rto, (int, float)) else "."))
    else:
        summary = f"The restore drill of {archive} failed: {drill.get('error') or 'see the failed tasks below'}"
    details = [f"[{c['status']}] {c['name']}: {c['detail']}" for c in drill.get("checks", ())]
    details += [f"cleanup: {p}" for p in problems]
    if drill.get("report_location"):
        details.append(f"report: {drill['report_location']}")
    deliver(config, Notification("restore_drill_succeeded" if succeeded else "restore_drill_failed",
                                 config.backup.name, config.backup.name, summary,
                                 failures=tuple(Failure(label(n), str(n["error"])) for n in failures),
                                 details=tuple(details), dag_id=ti.dag_id, run_id=ti.run_id),
            disabled=bool(params.get("disable_notifications")))


# ---------------------------------------------------------------------------- helpers


def workdir_for(config: BackupConfig, run_id: str) -> Path:
    """The drill's private working directory below ``backup.staging_directory``."""
    return config.backup.staging_directory / run_folder_name(DAG_ID, run_id)


def _target(conn_id: str) -> PgTarget:
    from backup_ops.adapters.postgres.target import target_from_connection

    return target_from_connection(conn_id)


def _destination(config: BackupConfig, name: str) -> BackupDestination:
    from backup_ops.adapters.destinations.factory import make_destination

    return make_destination(config.destination(name), config.backup.name)


def _selected(selected: Mapping[str, Any]) -> Any:
    from backup_ops.adapters.backup_fetch import SelectedBackup

    backup = BackupFile(selected["archive"], datetime.fromisoformat(selected["date"]), int(selected["size"]))
    receipt = Receipt.from_dict(selected["receipt"]) if selected.get("receipt") else None
    return SelectedBackup(selected["destination"], backup, receipt)


def _password(config: BackupConfig) -> tuple[bytes | None, str]:
    from backup_ops.adapters.secrets import resolve_secret
    from backup_ops.core.archive_read import password_source_of

    password = resolve_secret(config.backup.password)
    return (password.encode() if password else None), password_source_of(config.backup.password)


def _fresh_workdir(config: BackupConfig, workdir: Path) -> None:
    """An empty 0700 working directory (an earlier try's is removed first)."""
    if workdir.parent != config.backup.staging_directory:
        raise BackupError(f"Refusing to use {workdir}: it is not a run folder below {config.backup.staging_directory}.")
    try:
        config.backup.staging_directory.mkdir(parents=True, exist_ok=True)
        if workdir.exists() and not workdir.is_symlink():
            shutil.rmtree(workdir)
        workdir.mkdir(mode=0o700)
        os.chmod(workdir, 0o700)
    except OSError as exc:
        raise ConfigError(f"backup.staging_directory {config.backup.staging_directory} cannot be used for the "
                          f"drill's working directory ({exc.strerror}); point it at a writable directory.") from exc


def _remove_workdir(config: BackupConfig, selected: Mapping[str, Any]) -> list[str]:
    workdir = Path(selected["workdir"]) if selected.get("workdir") else None
    if workdir is None or not workdir.exists():
        return []
    if workdir.parent != config.backup.staging_directory:
        return [f"refusing to remove {workdir}: it is not a run folder below {config.backup.staging_directory}"]
    try:
        shutil.rmtree(workdir)
    except OSError as exc:
        return [f"could not remove the working directory {workdir}: {exc.strerror or exc}"]
    log.info("Removed the working directory %s", workdir)
    return []


def _run_start(ti: Any) -> datetime:
    start = getattr(getattr(ti, "dag_run", None), "start_date", None)
    return start.astimezone(UTC) if isinstance(start, datetime) else datetime.now(UTC)
