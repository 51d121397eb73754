"""The steps of ``backup_daily``: each wraps one core or adapter call, logs one summary, returns a small dict.

The DAG file turns these functions into tasks and passes each the config it read; nothing here
runs at parse time. Heavy imports (pyzipper, psycopg, boto3) happen inside the called modules.
Large data never travels through XCom: dumps and the file listing stay in the run's
staging directory, and tasks pass paths, sizes and checksums.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backup_ops import __version__
from backup_ops.adapters.destinations.base import BackupDestination
from backup_ops.adapters.postgres.target import target_from_connection
from backup_ops.adapters.staging_store import StagedRun, is_remote
from backup_ops.airflow.worker import worker_host
from backup_ops.core.config import BackupConfig, LocalDestinationConfig
from backup_ops.core.errors import BackupError, ConfigError, DestinationError
from backup_ops.core.models import DumpResult, Receipt, archive_file_name, human_bytes

if TYPE_CHECKING:
    from backup_ops.adapters.postgres.dump import DumpJob
    from backup_ops.core.sealed_member import Sealing

log = logging.getLogger(__name__)

FILE_LISTING = "files.jsonl"
NAME_ATTEMPTS = 60
DUMP_POOL = "backup_ops_dumps"
"""The Airflow pool the dumps run in, so N databases do not all hit one server at once."""


def asset_name(backup_name: str) -> str:
    """The Airflow Asset that gets one event per published backup."""
    return f"backup-ops/{backup_name}"


# ---------------------------------------------------------------------------- plan


def plan(config: BackupConfig, params: dict[str, Any], staging_dir: str) -> dict[str, Any]:
    """Validate the run's Params against the config and decide what this run backs up, and where."""
    from backup_ops.adapters.secrets import resolve_secret

    only_db, only_files = bool(params.get("only_db")), bool(params.get("only_files"))
    if only_db and only_files:
        raise ConfigError("Params only_db and only_files cannot be used together; set at most one of them.")
    databases = [] if only_files else _selected_databases(config, params.get("db_names") or [])
    include_files = not only_db and bool(config.backup.files.include)
    if not databases and not include_files:
        raise ConfigError(
            "There is nothing to back up: no database is selected and no file include is configured "
            "(check source.databases, source.files.include and the only_db/only_files/db_names params)."
        )
    target = params.get("only_to_destination") or None
    destinations = [config.destination(target).name] if target else config.backup.destination.names()
    # Resolve the password now so a missing secret fails the run before any dump starts.
    resolve_secret(config.backup.password)

    created_at, archive_name = free_archive_name(config, destinations, datetime.now(UTC).replace(microsecond=0))
    result = {
        "created_at": created_at.isoformat(),
        "archive_name": archive_name,
        "staging_dir": staging_dir,  # a path or an s3:// URL: never through Path, which would fold "//"
        "databases": databases,
        "include_files": include_files,
        "destinations": destinations,
    }
    log.info(
        "Backup %s: %d database(s) %s, files %s, destinations %s, archive %s, staging %s",
        config.backup.name, len(databases), databases, "included" if include_files else "skipped",
        destinations, result["archive_name"], staging_dir,
    )
    return result


def free_archive_name(config: BackupConfig, destinations: list[str], moment: datetime) -> tuple[datetime, str]:
    """The first second from ``moment`` whose archive name no planned destination holds yet, and that name.

    Two runs in one second (a manual trigger beside the scheduled run, ``airflow dags test`` beside
    the scheduler) would otherwise pick the same name. Publishing refuses a clash anyway
    (``ArchiveNameClash``, before writing anything); this only steers clear of it. A destination
    that cannot be asked now is left to its publish task.
    """
    from backup_ops.adapters.destinations import ArchiveNameClash
    from backup_ops.adapters.destinations.factory import make_destination

    prefix = config.backup.destination.filename_prefix
    dests = [make_destination(config.destination(name), config.backup.name) for name in destinations]
    for offset in range(NAME_ATTEMPTS):
        created_at = moment + timedelta(seconds=offset)
        file_name = archive_file_name(prefix, created_at)
        taken = [dest.name for dest in dests if _name_taken(dest, file_name)]
        if not taken:
            return created_at, file_name
        log.warning("Archive name %s is already taken on %s (another run picked the same second); trying the "
                    "next second.", file_name, ", ".join(taken))
    raise ArchiveNameClash(
        f"Every archive name from {archive_file_name(prefix, moment)} on for {NAME_ATTEMPTS} seconds is already "
        f"taken on {', '.join(destinations)}; another backup-ops deployment may be writing to the same destination "
        "with the same backup.name: give each its own backup.name or destination.",
    )


def _name_taken(dest: BackupDestination, file_name: str) -> bool:
    try:
        return dest.name_taken(file_name)
    except DestinationError as exc:
        log.warning("Could not check whether %s is free on %s (%s); its publish task checks again.", file_name,
                    dest.name, exc)
        return False


def _selected_databases(config: BackupConfig, wanted: list[str]) -> list[str]:
    configured = [db.conn_id for db in config.backup.databases]
    if not wanted:
        return configured
    unknown = [name for name in wanted if name not in configured]
    if unknown:
        raise ConfigError(
            f"Param db_names has {', '.join(unknown)}, which is not in source.databases; "
            f"configured: {', '.join(configured) or '(none)'}."
        )
    return [name for name in configured if name in wanted]


# ---------------------------------------------------------------------------- preflight


def check_databases(config: BackupConfig, conn_ids: list[str]) -> list[str]:
    """Fail fast on a missing connection, a refused login, an old pg_dump, or two dumps on one archive member."""
    from backup_ops.adapters.postgres.dump import check_target
    from backup_ops.core.dump_member import refuse_member_clashes

    targets = {conn_id: target_from_connection(conn_id) for conn_id in conn_ids}
    refuse_member_clashes((conn_id, target.dbname, config.database(conn_id)) for conn_id, target in targets.items())
    for conn_id, target in targets.items():
        summary = check_target(target, config.database(conn_id), pg_bin_dir=config.backup.pg_bin_dir)
        log.info("Database %s: %s", conn_id, summary)
    return list(conn_ids)


def check_destinations(config: BackupConfig, names: list[str]) -> list[str]:
    """Check the destinations before dumping; fail only when none of them can take the backup.

    A destination that is down now is still published to: its publish task checks again and
    retries, and the run's outcome (``continue_on_failure``) is decided once every publish is done.
    A broken destination never withholds the backup from the healthy ones.
    """
    from backup_ops.adapters.destinations.factory import make_destination

    problems: list[DestinationError] = []
    for name in names:
        dest = make_destination(config.destination(name), config.backup.name)
        try:
            dest.check_reachable()
            log.info("Destination %s (%s) is reachable", name, dest.location())
        except DestinationError as exc:
            log.warning("%s The backup goes ahead; its publish task to %s will try again.", exc, name)
            problems.append(exc)
    if problems and len(problems) == len(names):
        message = str(problems[0]) if len(problems) == 1 else " ".join(str(p) for p in problems)
        raise DestinationError(message, retryable=any(p.retryable for p in problems))
    return list(names)


# ---------------------------------------------------------------------------- dump


def dump_job(config: BackupConfig, conn_id: str, workdir: str, *, sealed: bool = False) -> DumpJob:
    """The dump of one database into ``workdir``, ready to ``run()`` (and to ``cancel()`` from on_kill).

    ``workdir`` is the run's staging folder, or with ``s3://`` staging this task's own work folder.
    ``sealed`` (remote staging): a plain dump is encrypted as it streams, as its archive member will hold
    it (``core.sealed_member``), so the staging bucket never holds it in the clear. Local staging is not
    sealed: the encryption would run on the core pg_dump and its server already keep busy (measured: the
    dump 0.45 s slower at 1 GB for 0.4 s less in the archive step), and the staging folder is the worker's own (0700).
    """
    from backup_ops.adapters.postgres.dump import DumpJob

    return DumpJob(target_from_connection(conn_id), config.database(conn_id), Path(workdir),
                   pg_bin_dir=config.backup.pg_bin_dir, log=log, seal=_sealing(config) if sealed else None)


def _sealing(config: BackupConfig) -> Sealing | None:
    """The archive's password and key size, for dumps encrypted as they stream; None for a plain archive.

    Without a password the dump is staged in the clear, and the archive step fails naming the setting.
    """
    from backup_ops.adapters.secrets import resolve_secret
    from backup_ops.core.archive import AES_BITS
    from backup_ops.core.sealed_member import Sealing

    nbits = AES_BITS.get(config.backup.encryption)
    password = resolve_secret(config.backup.password) if nbits else None
    return Sealing(password.encode(), nbits) if nbits and password else None


def dump_database(job: DumpJob, conn_id: str, run: StagedRun) -> dict[str, Any]:
    """Run one database's dump and stage it; returns a summary (the full result is staged beside the dump).

    With remote staging the dump, its roles and settings stream from this task's work folder into
    the run's prefix, and the staged result names them there; the work folder goes with the task.
    """
    result = job.run()
    if run.remote:
        dumped = Path(result.staged_path)
        result = replace(
            result, staged_path=run.put(dumped, f"{dumped.parent.name}/{dumped.name}"),
            extra_members=tuple(replace(m, staged_path=run.put(Path(m.staged_path),
                                                               f"{dumped.parent.name}/{Path(m.staged_path).name}"))
                                for m in result.extra_members))
    # Beside db-dumps/, which holds only what goes into the archive.
    result_file = run.write_bytes(f"dump-{conn_id}.json", json.dumps(result.to_dict()).encode())
    return {
        "conn_id": conn_id,
        "database": result.database,
        "member": result.member_name,
        "bytes": result.size,
        "sha256": result.sha256,
        "tables": len(result.tables),
        "rows": result.total_rows,
        "seconds": round(result.duration_s, 3),
        "result_file": result_file,
        # What an empty server needs beside the dump, and what of it the login could not read.
        "roles_member": result.roles_member,
        "database_member": result.database_member,
        "globals_notes": list(result.globals_notes),
        "host": worker_host(),
    }


# ---------------------------------------------------------------------------- files


def always_excluded(config: BackupConfig) -> list[Path]:
    """Paths never backed up: the staging and work folders and local destinations (a backup must not contain itself)."""
    paths = [config.backup.staging_directory]
    local_staging = config.backup.staging_location.local_root
    if local_staging is not None and local_staging != config.backup.staging_directory:
        paths.append(local_staging)
    paths += [d.path for d in config.backup.destination.destinations if isinstance(d, LocalDestinationConfig)]
    return paths


def collect_files(config: BackupConfig, staging_dir: str, include_files: bool) -> dict[str, Any]:
    """Select the files to back up and stage the list (one JSON line each).

    A file the selection skips (a FIFO, a name restore refuses, an unreadable file …) is a
    ``{"skipped": …}`` line of the same listing, so build_archive records it in the manifest.
    When not one configured include exists on this worker, this is the wrong host (or its volume
    is not mounted): the run fails naming the host and ``backup.files_queue`` rather than backing up
    no files. Returns the counts, skipped files by reason (``{"fifo": 1}``) included.
    """
    from backup_ops.core.files import select_files
    from backup_ops.core.models import SkippedFile

    if include_files:
        refuse_missing_includes(config)
    count = dirs = total = 0
    skipped: dict[str, int] = {}
    run = StagedRun.of(config, staging_dir)
    with run.workdir() as work:
        listing = work / FILE_LISTING
        with open(listing, "w", encoding="utf-8") as out:
            if include_files:
                for entry in select_files(config.backup.files, always_excluded(config), log=log):
                    if isinstance(entry, SkippedFile):
                        out.write(json.dumps({"skipped": entry.to_dict()}) + "\n")
                        skipped[entry.reason] = skipped.get(entry.reason, 0) + 1
                        continue
                    out.write(json.dumps(entry.to_dict()) + "\n")
                    if entry.is_dir:
                        dirs += 1
                    else:
                        count += 1
                        total += entry.size
        staged = run.put(listing, FILE_LISTING)
    return {"files": count, "directories": dirs, "bytes": total, "listing": staged, "skipped": skipped,
            "host": worker_host()}


def refuse_missing_includes(config: BackupConfig) -> None:
    """Fail when none of ``source.files.include`` exists here: files are read where they live."""
    includes = config.backup.files.include
    if not includes or any(os.path.lexists(path) for path in includes):
        return
    queue = config.backup.files_queue or "Airflow's default queue"
    raise ConfigError(
        f"None of source.files.include ({', '.join(str(p) for p in includes)}) exists on {worker_host()}, the worker "
        f"that ran this task from {queue} (backup.files_queue): run a worker that mounts the application's files on "
        "that queue (and only there), or fix the include paths.", retryable=True)


def _read_listing(run: StagedRun, location: str) -> Any:
    """The entries and skipped files collect_files staged, streamed one line at a time."""
    import io

    from backup_ops.core.files import SelectedEntry
    from backup_ops.core.models import SkippedFile

    with run.open_read(location) as raw, io.TextIOWrapper(raw, encoding="utf-8") as lines:
        for line in lines:
            item = json.loads(line)
            yield SkippedFile.from_dict(item["skipped"]) if "skipped" in item else SelectedEntry.from_dict(item)


# ---------------------------------------------------------------------------- archive


def build_archive(config: BackupConfig, plan_result: dict[str, Any], dumps: list[dict[str, Any]],
                  files: dict[str, Any], run_ids: dict[str, str]) -> dict[str, Any]:
    """Zip the dumps, files and manifest into one (encrypted) archive, then verify it end to end.

    A retry of this run starts clean: the archive an earlier attempt left in this run's staging
    folder (killed mid-write, or built but not verified) is removed first, and nothing else.
    With remote staging the dumps and the listing stream from the run's prefix, the archive is
    built and verified in this task's work folder, then staged (the work folder goes with the task).
    Returns the archive's staged location, name, size and checksums, and the files skipped by reason.
    """
    from backup_ops.adapters.secrets import resolve_secret
    from backup_ops.core.archive import build_archive as run_build
    from backup_ops.core.archive import make_durable
    from backup_ops.core.archive_read import password_source_of, verify_archive
    from backup_ops.core.manifest import build_manifest
    from backup_ops.core.skips import describe_counts

    password = resolve_secret(config.backup.password)
    secret = password.encode() if password else None
    run = StagedRun.of(config, plan_result["staging_dir"])
    results = [DumpResult.from_dict(json.loads(run.read_bytes(d["result_file"]))) for d in dumps or []]
    created_at = datetime.fromisoformat(plan_result["created_at"])
    versions = tool_versions()

    def make_manifest(members: Any) -> dict[str, Any]:
        return build_manifest(
            backup_name=config.backup.name, created_at=created_at, archive_name=plan_result["archive_name"],
            run=run_ids, dumps=results, members=members, encryption=config.backup.encryption,
            tool_versions=versions,
        )

    with run.workdir() as work:
        target = work / plan_result["archive_name"]
        if target.is_symlink() or target.exists():
            _remove_earlier_attempt(config, work, target)
        started = time.monotonic()
        archive = run_build(
            target, dumps=results, files=_read_listing(run, files["listing"]), password=secret,
            encryption=config.backup.encryption, compression_level=config.backup.destination.compression_level,
            make_manifest=make_manifest, fail_on=config.backup.files.fail_on, log=log,
            open_staged=run.open_staged if run.remote else None, sync=False,
        )
        built = time.monotonic() - started
        # The disk writes the archive (fsync) while it is read back and decrypted from the page cache.
        with ThreadPoolExecutor(1, thread_name_prefix="archive-fsync") as pool:
            synced = pool.submit(make_durable, target)
            # The sha256 was taken here as the archive was written: it proves the members' HMACs (written_here).
            checked = verify_archive(target, password=secret, expected_sha256=archive.sha256,
                                     expected_size=archive.size,
                                     password_source=password_source_of(config.backup.password), written_here=True)
            synced.result()
        log.info(
            "Built %s: %d members (%d dumps, %d files), %s in %.1f s (%s/s), encryption %s; verified %d members; %s",
            target.name, archive.member_count, len(results), archive.file_count, human_bytes(archive.size), built,
            human_bytes(archive.size / built if built else 0), config.backup.encryption, checked.members_checked,
            describe_counts(archive.skipped_counts)
            + (" (listed in the manifest's skipped list)" if archive.skipped_counts else ""),
        )
        staged = run.put(target, plan_result["archive_name"])
    return {
        "path": staged,
        "name": plan_result["archive_name"],
        "size": archive.size,
        "sha256": archive.sha256,
        "manifest_sha256": archive.manifest_sha256,
        "members": archive.member_count,
        "created_at": plan_result["created_at"],
        "skipped": archive.skipped_counts,
        "host": worker_host(),
    }


def _remove_earlier_attempt(config: BackupConfig, staging: Path, target: Path) -> None:
    """Remove the archive an earlier attempt of this run left in its local staging folder, and nothing else."""
    root = config.backup.staging_location.local_root
    if target.parent != staging or root is None or staging.parent != root:
        raise BackupError(f"Refusing to remove {target}: {staging} is not this run's staging folder below {root}.",
                          retryable=False)
    target.unlink()
    log.warning("Removed %s, left by an earlier attempt of this run, to build it again", target)


def tool_versions() -> dict[str, str]:
    import pyzipper

    versions = {"backup_ops": __version__, "python": platform.python_version(),
                "pyzipper": getattr(pyzipper, "__version__", "unknown")}
    try:
        from airflow import __version__ as airflow_version

        versions["airflow"] = airflow_version
    except ImportError:
        pass
    return versions


# ---------------------------------------------------------------------------- publish


def publish(dest: BackupDestination, archive: dict[str, Any], run: StagedRun | None = None) -> dict[str, Any]:
    """Publish the staged archive to one destination atomically and verify the copy there.

    The staged archive was verified whole when it was built (every member decrypted and hashed);
    the published copy is proved to hold the same bytes (its sha256 read back or taken by the store,
    or the same inode for a hard link), which proves it decrypts the same: it is not decrypted again.
    An archive staged in a bucket (``run`` says how to reach it) is streamed into this task's work
    folder first, and that copy is what is published and checked against the recorded sha256.
    """
    if is_remote(archive["path"]):
        if run is None:
            raise BackupError(f"The archive is staged at {archive['path']} but no staging was given to read it from; "
                              "this is a bug in backup-ops.", retryable=False)
        with run.workdir() as work:
            return _publish_file(dest, archive, run.fetch(archive["path"], work / archive["name"]))
    return _publish_file(dest, archive, Path(archive["path"]))


def _publish_file(dest: BackupDestination, archive: dict[str, Any], source: Path) -> dict[str, Any]:
    destination = dest.name
    dest.check_reachable()
    receipt = Receipt(archive=archive["name"], size=archive["size"], sha256=archive["sha256"],
                      created_at=archive["created_at"], manifest_sha256=archive.get("manifest_sha256"))
    published = dest.publish(source, archive["name"], receipt)
    try:
        dest.verify_published(published)
    except BackupError:
        if not published.already_present:
            dest.discard(published)
        raise
    log.info(
        "Published %s to %s (%s): %s in %.1f s (%s/s), %s%s",
        archive["name"], destination, published.location, human_bytes(published.size), published.seconds,
        human_bytes(published.size / published.seconds if published.seconds else 0),
        "hard-linked from staging (the verified file itself)" if published.linked_from else "verified",
        " (already present from an earlier attempt)" if published.already_present else "",
    )
    return {"destination": destination, "path": published.path, "location": published.location,
            "size": published.size, "sha256": published.sha256, "host": worker_host()}
