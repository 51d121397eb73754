"""The steps of ``restore_drill``: each wraps one adapter call, logs one summary, returns a small timed dict.

A drill proves that a backup restores: ``select`` picks it, ``fetch`` makes it a local file,
``verify`` proves it is the archive that was published (receipt, password, every member),
``extract`` checks every entry as extraction would (unsafe ones refused, nothing written),
``restore`` loads each database into a scratch database ``backup_drill_<YYYYmmddHHMMSS>``,
``validate`` checks every table against the manifest (exact counts and columns) and the configured
rules (Great Expectations), ``verify_files`` extracts the files, hashes every one against the
manifest and removes them, ``report`` leaves the drill report on the destination, and ``teardown``
drops what the drill made and notifies.

Every phase result carries ``started_at``, ``finished_at``, ``seconds``, the ``host`` it ran on
and its ``checks``; the report is built from them (``core.drill_outcome``). Nothing large travels
through XCom. The source database is never written to: the scratch databases have names of their
own, and a target that is a source database is refused.

Each task may run on another worker (Celery, Kubernetes), so no phase needs another's local files.
The working directory ``<backup.staging_directory>/restore_drill__<run>`` is made on each worker
that needs one. An archive on a local destination is read in place (every worker must mount it);
one downloaded from S3 is kept on the worker that downloaded it for later phases there, beside a
marker that proves it is that copy, unchanged (device, inode, size, mtime, ctime, and the sha256
``verify`` proved) without reading it again; a phase on a worker without it fetches it again
(logged, and checked against that sha256). Plaintext never outlives the task that wrote it: the
files are extracted, checked and removed within ``verify_files``, a custom-format dump within
``restore``, and an archive without encryption is not kept between tasks. ``verify_files`` (the
last reader) and ``teardown`` remove their worker's copy; what a crash leaves on a worker is swept
by the next drill task there (``staging.sweep_stale_runs``). ``keep_scratch`` keeps everything,
and the logs say on which workers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backup_ops.adapters.destinations.base import BackupDestination
from backup_ops.adapters.postgres.target import PgTarget
from backup_ops.airflow.worker import worker_host
from backup_ops.core.config import BackupConfig
from backup_ops.core.errors import ArchiveError, BackupError, ConfigError, DestinationError, VerificationError
from backup_ops.core.models import BackupFile, Receipt, human_bytes, run_folder_name
from backup_ops.core.restore_plan import LATEST, scratch_names

log = logging.getLogger(__name__)

DAG_ID = "restore_drill"
FILES_FOLDER = "files"
COPY_MARKER = "archive.zip.fetched.json"
"""Beside the copy: which archive it is, the file's identity when it was written, the sha256 proved for it."""
ARCHIVE_PHASES = ("fetch", "verify", "extract", "restore", "validate", "verify_files")
"""The phases that may leave a downloaded copy of the archive on their worker."""
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
    """Add ``phase``, ``started_at``, ``finished_at``, ``seconds`` and the worker's ``host`` to a step's result."""
    def decorate(function: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
            started, clock = datetime.now(UTC), time.monotonic()
            result = function(*args, **kwargs)
            return {**result, "phase": phase, "started_at": started.isoformat(),
                    "finished_at": datetime.now(UTC).isoformat(), "seconds": round(time.monotonic() - clock, 3),
                    "host": worker_host()}
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
        "keep_scratch": bool(params.get("keep_scratch")), "workdir": str(workdir_for(config, run_id)),
        "checks": [_check("select", "pass", f"{backup.path} ({'the newest backup' if wanted == LATEST else 'named'})")],
    }


@timed("fetch")
def fetch(config: BackupConfig, selected: Mapping[str, Any]) -> dict[str, Any]:
    """Make the archive a local file: read in place from a local disk, downloaded from S3 into a fresh 0700 folder.

    A download is kept on this worker, with its marker, for the later phases that run here.
    """
    from backup_ops.adapters.backup_fetch import fetch_backup

    workdir = _workdir_path(config, selected)
    destination = _destination(config, selected["destination"])
    if destination.local_path(selected["archive"]) is None:  # a download: into a fresh folder on this worker
        _make_workdir(config, selected, fresh=True)
    fetched = fetch_backup(destination, _selected(selected), workdir)
    here = ArchiveHere(fetched.path, "read in place" if fetched.in_place else "downloaded", fetched.in_place,
                       None if fetched.in_place else stored_encryption(fetched.path))
    if not fetched.in_place:
        write_marker(workdir, selected["archive"], fetched.path, sha256=None)
    kept = _leave_archive(config, selected, here, last=False, succeeded=True)
    _tidy(workdir)
    how = "read in place" if fetched.in_place else f"downloaded in {fetched.seconds:.1f} s"
    log.info("Fetched %s: %s, %s (%s) on %s", selected["archive"], human_bytes(fetched.size), how, fetched.path,
             worker_host())
    return {"archive_path": str(fetched.path), "in_place": fetched.in_place, "bytes": fetched.size,
            "archive_copy": here.how, "archive_kept": kept,
            "checks": [_check("fetch", "pass", f"{human_bytes(fetched.size)}, {how}")]}


@timed("verify")
def verify(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any]) -> dict[str, Any]:
    """Size and SHA-256 against the receipt, then every member decrypted and matched with the manifest."""
    from backup_ops.adapters.backup_fetch import FetchedBackup, verify_fetched
    from backup_ops.core.fileio import sha256_of_file

    password, source = _password(config)
    with archive_on_this_worker(config, selected, fetched, None) as here:
        with archive_faults_are_permanent():
            result = verify_fetched(FetchedBackup(here.path, int(fetched["bytes"]), here.in_place, 0.0),
                                    _selected(selected), password=password, password_source=source)
        manifest = result.manifest
        here.encryption = manifest.encryption
        receipt = selected.get("receipt")
        # What later phases hold their copy to: the receipt's sha256 verify_archive just matched, else hashed here.
        sha256 = str(receipt["sha256"]).lower() if receipt else sha256_of_file(here.path)[0]
        if not here.in_place:
            write_marker(_workdir_path(config, selected), selected["archive"], here.path, sha256=sha256)
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
    return {"created_at": manifest.created_at.isoformat(), "encryption": manifest.encryption, "sha256": sha256,
            "members": result.members_checked, "databases": databases, "files": manifest.file_count,
            "file_bytes": manifest.file_bytes, **here.result(), "checks": checks}


# ---------------------------------------------------------------------------- files


@timed("extract")
def extract(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any],
            verified: Mapping[str, Any]) -> dict[str, Any]:
    """Check every entry as extraction would, before the databases are restored; nothing is written.

    ``safe_extract`` refuses absolute paths, ``..``, links, devices and unlisted members before it
    writes anything; asked for no member, it runs exactly those checks. The files themselves are
    extracted by ``verify_files``, which checks and removes them in the same task, so their plaintext
    never waits on a worker for a task that may run elsewhere.
    """
    from backup_ops.adapters.backup_fetch import read_manifest
    from backup_ops.core.extract import safe_extract
    from backup_ops.core.restore_plan import file_members

    if not selected.get("restore_files", True):
        return {"status": "skipped", "checks": [_check("extract", "skipped", "restore_files is false")]}
    password, source = _password(config)
    with archive_on_this_worker(config, selected, fetched, verified) as here:
        manifest = read_manifest(here.path, password, password_source=source)
        members = file_members(manifest)
        if members:
            with tempfile.TemporaryDirectory(prefix="backup-ops-drill-check-") as empty, \
                    archive_faults_are_permanent():
                safe_extract(here.path, Path(empty), password=password, members=[],
                             listed=manifest.members_by_name())
    if not members:
        return {"status": "skipped", **here.result(),
                "checks": [_check("extract", "skipped", "the backup holds no files")]}
    size = sum(m.size for m in members)
    log.info("Checked the %d file and directory entries (%s) of %s: none is unsafe to extract", len(members),
             human_bytes(size), selected["archive"])
    return {"status": "checked", "entries": len(members), "bytes": size, **here.result(),
            "checks": [_check("extract", "pass", f"{len(members)} entries ({human_bytes(size)}) are safe to "
                                                 "extract: every entry was checked before writing")]}


@timed("verify_files")
def verify_files(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any],
                 verified: Mapping[str, Any], extracted: Mapping[str, Any]) -> dict[str, Any]:
    """Extract the files, check every one's size and SHA-256 against the manifest, remove them.

    The last phase that reads the archive: this worker's copy goes too (unless ``keep_scratch``).
    """
    if extracted.get("status") != "checked":
        return {"status": "skipped", "archive_kept": _leave_nothing_here(config, selected),
                "checks": [_check("files", "skipped", "no files were extracted")]}
    with archive_on_this_worker(config, selected, fetched, verified, last=True) as here:
        checked = _extract_and_check(config, selected, here)
    log.info("Extracted and verified %d restored files (%s) and %d directories against the manifest on %s",
             checked.files, human_bytes(checked.bytes), checked.directories, worker_host())
    return {"status": "verified", "files": checked.files, "bytes": checked.bytes, **here.result(),
            "checks": [_check("files", "pass", f"{checked.files} files ({human_bytes(checked.bytes)}) extracted "
                                               "and match the manifest's sha256")]}


def _extract_and_check(config: BackupConfig, selected: Mapping[str, Any], here: ArchiveHere) -> Any:
    """The files below this worker's working directory, checked, then removed (kept with ``keep_scratch``)."""
    from backup_ops.adapters.backup_fetch import read_manifest
    from backup_ops.core.extract import safe_extract
    from backup_ops.core.file_check import check_restored_files
    from backup_ops.core.restore_plan import file_members

    password, source = _password(config)
    manifest = read_manifest(here.path, password, password_source=source)
    members = file_members(manifest)
    folder = _make_workdir(config, selected) / FILES_FOLDER
    shutil.rmtree(folder, ignore_errors=True)  # an earlier try's
    keep = bool(selected.get("keep_scratch"))
    try:
        with archive_faults_are_permanent():
            safe_extract(here.path, folder, password=password, members=[m.name for m in members],
                         listed=manifest.members_by_name(), max_total_bytes=manifest.file_bytes)
            return check_restored_files(folder, members)
    finally:
        if keep:
            log.warning("Kept the restored files in %s on %s (keep_scratch): they are the application's files in "
                        "plain text; remove them when done.", folder, worker_host())
        else:
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------------------- databases


@timed("restore")
def restore(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any],
            verified: Mapping[str, Any]) -> dict[str, Any]:
    """Each database into its scratch database: created, roles and settings applied, dump loaded, size measured."""
    from backup_ops.adapters.backup_fetch import read_manifest
    from backup_ops.adapters.postgres import restore as pg_restore

    password, source = _password(config)
    restored, checks = [], []
    with archive_on_this_worker(config, selected, fetched, verified) as archive:
        manifest = read_manifest(archive.path, password, password_source=source)
        names = scratch_names(datetime.fromisoformat(selected["drill_started_at"]), len(manifest.databases))
        sources = pg_restore.source_targets([*(db.conn_id for db in config.backup.databases),
                                             *(db.conn_id for db in manifest.databases)], log=log)
        workdir = _make_workdir(config, selected)  # a custom-format dump is extracted there, and removed, by restore
        for db, name in zip(manifest.databases, names, strict=True):
            conn_id = selected.get("target_conn_id") or db.conn_id
            server = _target(conn_id)
            pg_restore.refuse_source_database(server, conn_id, name, sources)
            pg_restore.drop_scratch_database(server, conn_id, name)  # an earlier try's
            info = pg_restore.database_info(archive.path, db, password, password_source=source)
            notes = pg_restore.create_database(server, conn_id, name, info, log=log)
            with archive_faults_are_permanent():
                loaded = pg_restore.restore_database(
                    server, conn_id, name, archive.path, db, info=info, password=password, workdir=workdir,
                    pg_bin_dir=config.backup.pg_bin_dir, jobs=config.restore_drill.jobs, password_source=source,
                    notes=notes, log=log)
            restored.append({"database": db.database, "scratch": name, "server": loaded.server, "conn_id": conn_id,
                             "size_bytes": loaded.size_bytes, "tables": len(db.tables), "rows": db.total_rows,
                             "seconds": round(loaded.seconds, 3), "globals": list(loaded.globals[:50]),
                             "notes": [*loaded.notes, *db.globals_notes]})
            checks.append(_check("restore", "pass", f"{db.database} → {name} on {loaded.server}: {len(db.tables)} "
                                                    f"tables, {db.total_rows} rows, {human_bytes(loaded.size_bytes)} "
                                                    f"in {loaded.seconds:.1f} s"))
    return {"databases": restored, **archive.result(), "checks": checks}


@timed("validate")
def validate(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any],
             verified: Mapping[str, Any], restored: Mapping[str, Any], ti: Any = None) -> dict[str, Any]:
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
    with archive_on_this_worker(config, selected, fetched, verified) as here:
        manifest = read_manifest(here.path, password, password_source=source)
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
        "per_table": [_compact(t) for t in tables], **here.result(), "checks": checks,
    }
    if result["success"]:
        log.info("Validation passed: %d tables match the manifest exactly", len(tables))
        return result
    first = next(c for c in checks if c["status"] == "fail")
    if ti is not None:
        ti.xcom_push("return_value", {**result, "phase": "validate", "started_at": started.isoformat(),
                                      "finished_at": datetime.now(UTC).isoformat(),
                                      "seconds": round(time.monotonic() - clock, 3), "host": worker_host()})
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
    return {**outcome.data, "report_key": key, "report_location": location, "host": worker_host()}


def _written_by(destination: BackupDestination, key: str, run_id: str) -> bool:
    """Whether the report at ``key`` is this run's (an earlier try of the report task wrote it)."""
    from backup_ops.core.drill_report import MAX_REPORT_BYTES, DrillReportError, parse_drill_report

    try:
        return parse_drill_report(destination.read_drill_report(key, MAX_REPORT_BYTES) or b"").run_id == run_id
    except DrillReportError:
        return False


def teardown(config: BackupConfig, ti: Any, params: Mapping[str, Any]) -> dict[str, Any]:
    """Drop the scratch databases and this worker's working directory (unless keep_scratch), notify, fail if failed.

    Other workers' copies of the (encrypted) archive are named in the log; only a drill task there can remove them.
    """
    from backup_ops.airflow.failures import read_failures

    selected = ti.xcom_pull(task_ids="select", default=None) or {}
    verified = ti.xcom_pull(task_ids="verify", default=None) or {}
    drill = ti.xcom_pull(task_ids="report", default=None)
    phases = {phase: ti.xcom_pull(task_ids=phase, default=None) or {} for phase in ARCHIVE_PHASES}
    failures = read_failures(ti)
    keep = bool(params.get("keep_scratch"))
    host = worker_host()
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
        _say_where_copies_stay(selected, phases, host)
    if keep:
        workers = dict.fromkeys([*(r["host"] for r in phases.values() if r.get("host")), host])
        log.warning("Kept the scratch database(s) %s (keep_scratch); what the drill had in its working directory %s "
                    "(the restored files, the archive copy) stays on the worker(s) that ran it: %s (this one: %s). "
                    "Drop them when done (the next drill a day later drops them).", ", ".join(kept) or "(none)",
                    selected.get("workdir"), ", ".join(workers), host)
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
    return {"dropped": dropped, "kept": kept, "host": host}


def copies_left_elsewhere(phases: Mapping[str, Mapping[str, Any]], here: str) -> list[str]:
    """The workers other than ``here`` where the last phase that touched the archive there kept its copy."""
    last_word: dict[str, bool] = {}
    for phase in ARCHIVE_PHASES:
        result = phases.get(phase) or {}
        if result.get("host") and "archive_kept" in result:
            last_word[str(result["host"])] = bool(result["archive_kept"])
    return [worker for worker, kept in last_word.items() if kept and worker != here]


def _say_where_copies_stay(selected: Mapping[str, Any], phases: Mapping[str, Mapping[str, Any]], here: str) -> None:
    from backup_ops.airflow.staging import STALE_AFTER

    elsewhere = copies_left_elsewhere(phases, here)
    if elsewhere:
        log.info("The encrypted copy of %s stays in %s on %s, where a phase kept it for later phases that ran "
                 "elsewhere; no plaintext is left there, and a drill task on that worker removes it once it has been "
                 "untouched for %d hours.", selected.get("archive"), selected.get("workdir"), ", ".join(elsewhere),
                 STALE_AFTER.total_seconds() // 3600)


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


# ---------------------------------------------------------------------------- the archive on this worker


@dataclass
class ArchiveHere:
    """The drill's archive as a file on this worker during one phase, and whether the worker keeps it after."""

    path: Path
    how: str
    """``read in place``, ``downloaded`` (fetch), ``present`` (an earlier phase here left it), ``fetched again``."""
    in_place: bool
    encryption: str | None = None
    """The manifest's encryption once verify read it; None: the config's (no password, no encryption)."""
    kept: bool = False

    def result(self) -> dict[str, Any]:
        return {"archive_copy": self.how, "archive_kept": self.kept}


@contextmanager
def archive_on_this_worker(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any],
                           verified: Mapping[str, Any] | None, *, last: bool = False) -> Iterator[ArchiveHere]:
    """The archive for one phase on this worker; afterwards its copy is kept for later phases here, or removed."""
    here = archive_here(config, selected, fetched, verified)
    succeeded = False
    try:
        yield here
        succeeded = True
    finally:
        here.kept = _leave_archive(config, selected, here, last=last, succeeded=succeeded)
        _tidy(_workdir_path(config, selected))


def archive_here(config: BackupConfig, selected: Mapping[str, Any], fetched: Mapping[str, Any],
                 verified: Mapping[str, Any] | None) -> ArchiveHere:
    """The archive on this worker: in place on a mounted disk, the copy an earlier phase left here, or fetched again.

    ``verified`` is verify's result (None in verify itself, which proves the archive): a copy is
    taken when its marker proves it is the file fetched, unchanged, with the sha256 verify proved;
    one fetched again must hash to that sha256.
    """
    encryption = (verified or {}).get("encryption")
    if fetched.get("in_place"):
        path = Path(fetched["archive_path"])
        if not path.is_file():
            raise DestinationError(f"The archive {path} of destination {selected['destination']} (read in place) "
                                   f"cannot be found on this worker ({worker_host()}): it was deleted since the "
                                   "drill began, or this worker does not mount the destination's folder at that path "
                                   "(every worker that runs restore_drill must).")
        return ArchiveHere(path, "read in place", True, encryption)
    sha256 = (verified or {}).get("sha256")
    workdir = _make_workdir(config, selected)
    copy = present_copy(workdir, selected["archive"], int(selected["size"]), sha256)
    if copy is not None:
        return ArchiveHere(copy, "present", False, encryption)
    return ArchiveHere(_fetch_again(config, selected, workdir, sha256), "fetched again", False, encryption)


def present_copy(workdir: Path, archive: str, size: int, sha256: str | None) -> Path | None:
    """This worker's copy of ``archive`` when its marker proves it is the file fetched, unchanged; else None.

    Same device, inode, size, mtime and ctime as when the marker was written (any write changes the
    ctime) means the same bytes, so the copy is not read again. A copy whose sha256 was proved on
    another worker (its marker has none, or another) is hashed once: a read instead of a download.
    """
    from backup_ops.adapters.backup_fetch import ARCHIVE_FILE
    from backup_ops.core.fileio import sha256_of_file

    path, marker = workdir / ARCHIVE_FILE, _read_marker(workdir)
    try:
        info = path.lstat()
    except OSError:
        return None
    if (marker is None or marker.get("archive") != archive or not stat.S_ISREG(info.st_mode)
            or info.st_size != size or marker.get("identity") != _identity(info)):
        return None
    if sha256 is None or marker.get("sha256") == sha256:
        return path
    if sha256_of_file(path)[0] != sha256:
        return None
    write_marker(workdir, archive, path, sha256=sha256)
    return path


def _fetch_again(config: BackupConfig, selected: Mapping[str, Any], workdir: Path, sha256: str | None) -> Path:
    """Download the archive into this worker's working directory; it must be the one verify proved."""
    from backup_ops.adapters.backup_fetch import fetch_backup
    from backup_ops.core.fileio import sha256_of_file

    _drop_copy(workdir)
    fetched = fetch_backup(_destination(config, selected["destination"]), _selected(selected), workdir)
    if sha256 is not None and (actual := sha256_of_file(fetched.path)[0]) != sha256:
        _drop_copy(workdir)
        raise VerificationError(f"Archive {selected['archive']} on destination {selected['destination']} changed "
                                f"during the drill: fetched again on {worker_host()} it has sha256 {actual}, but "
                                f"verify proved {sha256}; it was replaced.", retryable=False)
    write_marker(workdir, selected["archive"], fetched.path, sha256=sha256)
    log.info("This worker (%s) had not got the archive: fetched it again, %s in %.1f s", worker_host(),
             human_bytes(fetched.size), fetched.seconds)
    return fetched.path


def _leave_archive(config: BackupConfig, selected: Mapping[str, Any], here: ArchiveHere, *, last: bool,
                   succeeded: bool) -> bool:
    """Whether this worker keeps its downloaded copy after a phase; removes it when not.

    Kept for later phases here unless it is plaintext (an archive without encryption: no copy
    outlives its task) or no later phase reads it (``last`` succeeded; a failed one keeps it for its
    retry). ``keep_scratch`` keeps it.
    """
    if here.in_place:
        return False
    if selected.get("keep_scratch"):
        return True
    plaintext = here.encryption == "none" if here.encryption else config.backup.password is None
    if not plaintext and not (last and succeeded):
        return True
    _drop_copy(_workdir_path(config, selected))
    if plaintext:
        log.info("Removed this worker's copy of %s: the archive is not encrypted, so no copy of it outlives its task",
                 selected["archive"])
    return False


def _leave_nothing_here(config: BackupConfig, selected: Mapping[str, Any]) -> bool:
    """Remove this worker's copy of the archive, if it has one, unless keep_scratch; returns whether one stays."""
    from backup_ops.adapters.backup_fetch import ARCHIVE_FILE

    workdir = _workdir_path(config, selected)
    if workdir.parent != config.backup.staging_directory:
        return False
    if selected.get("keep_scratch"):
        return (workdir / ARCHIVE_FILE).exists()
    _drop_copy(workdir)
    _tidy(workdir)
    return False


def stored_encryption(path: Path) -> str | None:
    """``none`` when the archive's manifest is stored unencrypted, ``encrypted`` when it is not; None: unreadable.

    Read from the zip's central directory only, before verify has proved anything: it only decides
    whether the copy may wait on this worker for a later phase (a plaintext archive may not).
    """
    import zipfile

    from backup_ops.core.manifest import MANIFEST_NAME

    try:
        with zipfile.ZipFile(path) as zf:
            return "encrypted" if zf.getinfo(MANIFEST_NAME).flag_bits & 1 else "none"
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


def write_marker(workdir: Path, archive: str, path: Path, *, sha256: str | None) -> None:
    """Record which archive ``path`` holds, the file's identity now, and the sha256 proved for it (if any)."""
    marker = workdir / COPY_MARKER
    partial = marker.with_name(marker.name + ".partial")
    data = {"archive": archive, "identity": _identity(path.lstat()), "sha256": sha256}
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
    os.replace(partial, marker)


def _read_marker(workdir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((workdir / COPY_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _identity(info: os.stat_result) -> list[int]:
    return [info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def _drop_copy(workdir: Path) -> None:
    from backup_ops.adapters.backup_fetch import ARCHIVE_FILE

    for name in (COPY_MARKER, ARCHIVE_FILE):
        try:
            (workdir / name).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("Could not remove %s on %s: %s", workdir / name, worker_host(), exc.strerror or exc)


def _tidy(workdir: Path) -> None:
    """Remove this worker's working directory once it is empty: nothing of the drill stays here."""
    with suppress(OSError):
        workdir.rmdir()


def _make_workdir(config: BackupConfig, selected: Mapping[str, Any], *, fresh: bool = False) -> Path:
    """This worker's 0700 working directory (emptied first when ``fresh``); sweeps what crashed drills left here."""
    from backup_ops.airflow.staging import sweep_stale_runs

    workdir, root = _workdir_path(config, selected), config.backup.staging_directory
    if workdir.parent != root:
        raise BackupError(f"Refusing to use {workdir}: it is not a run folder below {root}.")
    try:
        root.mkdir(parents=True, exist_ok=True)
        if fresh and workdir.exists() and not workdir.is_symlink():
            shutil.rmtree(workdir)
        if workdir.is_symlink():
            raise BackupError(f"Refusing to use {workdir}: it is a symbolic link.", retryable=False)
        workdir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(workdir, 0o700)
    except OSError as exc:
        raise ConfigError(f"backup.staging_directory {root} cannot be used for the drill's working directory "
                          f"({exc.strerror}); point it at a writable directory.") from exc
    sweep_stale_runs(root, DAG_ID, keep=workdir)
    return workdir


# ---------------------------------------------------------------------------- helpers


def _workdir_path(config: BackupConfig, selected: Mapping[str, Any]) -> Path:
    """Where the drill's working directory is on this worker: its run folder below this worker's staging_directory.

    Only the path; ``_make_workdir`` creates it.

    ``selected["workdir"]`` is where ``select`` ran; another worker's ``backup.staging_directory`` may
    differ (each its own local disk), so only the run folder's name travels.
    """
    return config.backup.staging_directory / Path(str(selected["workdir"])).name


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


def _remove_workdir(config: BackupConfig, selected: Mapping[str, Any]) -> list[str]:
    workdir = _workdir_path(config, selected) if selected.get("workdir") else None
    if workdir is None or not workdir.exists():
        return []
    if workdir.parent != config.backup.staging_directory:
        return [f"refusing to remove {workdir}: it is not a run folder below {config.backup.staging_directory}"]
    try:
        shutil.rmtree(workdir)
    except OSError as exc:
        return [f"could not remove the working directory {workdir} on {worker_host()}: {exc.strerror or exc}"]
    log.info("Removed the working directory %s on %s", workdir, worker_host())
    return []


def _run_start(ti: Any) -> datetime:
    start = getattr(getattr(ti, "dag_run", None), "start_date", None)
    return start.astimezone(UTC) if isinstance(start, datetime) else datetime.now(UTC)
