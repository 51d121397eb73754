"""What a destination holds, gathered for the health checks: listing, the newest archive's integrity, drill reports.

``take_snapshot`` does all the I/O the checks of ``backup_ops.core.health`` need and returns a
``DestinationSnapshot`` (plain data); ``evaluate`` then decides. ``backup_monitor`` and
``python -m backup_ops list`` both call it, so they agree. It never raises for what it finds: a
destination that cannot be listed is "unreachable" with the reason, a newest archive that cannot be
read is recorded as such, an unreadable drill report is ignored with a note.

What is read, per destination:

* the listing (``check_reachable`` + ``list_backups``);
* the newest archives against their receipts, newest first down to the first intact one
  (``check_newest``: on a local disk each is hashed; on S3 one GET and one HEAD each);
* the newest archive's members (``verify_archive``, with the archive password): always on a local
  disk, where it costs one more read; on S3 only with ``monitor.deep_verify``, which downloads it
  into a private folder (0700) below ``backup.staging_directory`` and removes it afterwards;
* the newest restore-drill reports below ``<backup.name>/restore-drills/`` (at most
  ``MAX_DRILL_REPORTS`` of them, each at most ``MAX_REPORT_BYTES``), as hostile input.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path, PurePosixPath

from backup_ops.adapters.destinations.base import NO_RECEIPT, BackupDestination, sha256_verdict, size_differs
from backup_ops.core.config import BackupConfig
from backup_ops.core.drill_report import MAX_REPORT_BYTES, DrillReport, DrillReportError, clean_text, parse_drill_report
from backup_ops.core.errors import BackupError, DestinationError
from backup_ops.core.fileio import CHUNK_SIZE
from backup_ops.core.health import DestinationSnapshot, MemberCheck, NewestArchive
from backup_ops.core.models import ArchiveIntegrity, BackupFile, Integrity, human_bytes

log = logging.getLogger(__name__)

MAX_DRILL_REPORTS = 20
DOWNLOAD_PREFIX = ".monitor-deep-verify-"
# A deep-verify folder older than this was left by a monitor task that was killed; the next one removes it.
STALE_DOWNLOAD_SECONDS = 24 * 3600


def take_snapshot(config: BackupConfig, destination: BackupDestination) -> DestinationSnapshot:
    """Everything the health checks need to know about ``destination``, read now."""
    try:
        destination.check_reachable()
        backups = tuple(destination.list_backups())
    except BackupError as exc:
        return _unreachable(config, destination, str(exc), transient=exc.retryable)
    except Exception as exc:  # a monitor reports what it meets; a surprise is a reason too, not a crash
        return _unreachable(config, destination, f"{type(exc).__name__}: {exc}", transient=False)
    integrity, newest, newest_error = _newest_archive(config, destination, backups)
    reports, drill_error, notes = _drill_reports(destination)
    return DestinationSnapshot(
        backup_name=config.backup.name, destination=destination.name, location=destination.location(),
        reachable=True, backups=backups, integrity=integrity, newest=newest, newest_error=newest_error,
        drill_reports=reports, drill_error=drill_error, notes=notes,
    )


def _unreachable(config: BackupConfig, destination: BackupDestination, reason: str, *,
                 transient: bool) -> DestinationSnapshot:
    return DestinationSnapshot(backup_name=config.backup.name, destination=destination.name,
                               location=destination.location(), reachable=False, unreachable_reason=reason,
                               transient=transient)


# ---------------------------------------------------------------------------- the newest archive


def _newest_archive(config: BackupConfig, destination: BackupDestination, backups: tuple[BackupFile, ...]
                    ) -> tuple[tuple[ArchiveIntegrity, ...], NewestArchive | None, str | None]:
    """(receipt checks newest first down to the first intact one, the newest archive's facts, or why none)."""
    if not backups:
        return (), None, None
    try:
        checks = tuple(destination.check_newest(backups))
        return checks, _facts(config, destination, backups[0], checks[0]), None
    except BackupError as exc:
        return (), None, str(exc)
    except Exception as exc:
        return (), None, f"{type(exc).__name__}: {exc}"


def _facts(config: BackupConfig, destination: BackupDestination, newest: BackupFile,
           integrity: ArchiveIntegrity) -> NewestArchive:
    # check_integrity says "unverified" with exactly NO_RECEIPT when there is no receipt file at all.
    has_receipt = not (integrity.state is Integrity.UNVERIFIED and integrity.detail == NO_RECEIPT)
    if integrity.damaged:
        return NewestArchive(newest.path, integrity, True, MemberCheck("not_checked", "damaged, so not opened"))
    local = destination.local_path(newest.path)
    if local is not None:
        has_manifest, members = check_members(config, local)
        return NewestArchive(newest.path, integrity, has_receipt or has_manifest, members)
    if config.monitor.deep_verify:
        return _deep_verify(config, destination, newest, integrity, has_receipt)
    made_by_backup_ops = has_receipt or destination.recorded_sha256(newest.path) is not None
    return NewestArchive(newest.path, integrity, made_by_backup_ops,
                         MemberCheck("not_checked", "its members were not checked (monitor.deep_verify is off)"))


def check_members(config: BackupConfig, archive: Path, shown_as: str | None = None) -> tuple[bool, MemberCheck]:
    """(whether ``archive`` holds a manifest.json, and whether every member decrypts and matches it).

    ``shown_as`` names the archive in messages instead of its path (a download's temporary file).
    """
    has_manifest, members = _check_members(config, archive)
    if shown_as is not None:
        members = MemberCheck(members.state, members.detail.replace(str(archive), shown_as))
    return has_manifest, members


def _check_members(config: BackupConfig, archive: Path) -> tuple[bool, MemberCheck]:
    from backup_ops.adapters.secrets import resolve_secret
    from backup_ops.core.archive_read import open_zip, password_source_of, verify_archive
    from backup_ops.core.manifest import MANIFEST_NAME

    try:
        with open_zip(archive, None) as zf:
            has_manifest = MANIFEST_NAME in zf.namelist()
    except BackupError as exc:
        return False, MemberCheck("failed", str(exc))
    if not has_manifest:
        return False, MemberCheck("not_checked", f"it holds no {MANIFEST_NAME} (not a backup-ops archive), so its "
                                                 "members were not checked")
    try:
        password = resolve_secret(config.backup.password)
    except BackupError as exc:
        return True, MemberCheck("failed", f"the archive password to check its members could not be read: {exc}")
    started = time.monotonic()
    try:
        result = verify_archive(archive, password=password.encode() if password else None,
                                password_source=password_source_of(config.backup.password))
    except BackupError as exc:
        return True, MemberCheck("failed", str(exc))
    return True, MemberCheck("ok", f"all {result.members_checked} members decrypt and match its manifest "
                                   f"({human_bytes(result.bytes_checked)} read in {time.monotonic() - started:.1f} s)")


def _deep_verify(config: BackupConfig, destination: BackupDestination, newest: BackupFile,
                 integrity: ArchiveIntegrity, has_receipt: bool) -> NewestArchive:
    """Download the newest archive into a private folder, hash it against its receipt, check its members."""
    root = config.backup.staging_directory
    _remove_stale_downloads(root)
    folder = _download_folder(root, destination.name, newest.size)
    try:
        target = folder / PurePosixPath(newest.path).name
        digest, size = _download(destination, newest.path, target)
        receipt = destination.read_receipt(newest.path)
        if receipt is not None:
            integrity = size_differs(newest.path, size, receipt) or sha256_verdict(
                newest.path, digest, receipt, "hashed from a download")
        if integrity.damaged:
            return NewestArchive(newest.path, integrity, True, MemberCheck("not_checked", "damaged, so not opened"))
        has_manifest, members = check_members(config, target, shown_as=destination.location(newest.path))
        return NewestArchive(newest.path, integrity, has_receipt or has_manifest, members)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _download_folder(root: Path, name: str, size: int) -> Path:
    """A new 0700 folder below ``root`` with room for ``size`` bytes, or DestinationError saying why not."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(root).free
    except OSError as exc:
        raise DestinationError(f"Destination {name}: cannot download the newest archive to check it "
                               f"(monitor.deep_verify): backup.staging_directory {root}: {exc.strerror or exc}.",
                               retryable=False) from exc
    if free < size:
        raise DestinationError(f"Destination {name}: cannot download the newest archive to check it "
                               f"(monitor.deep_verify): it is {human_bytes(size)} but backup.staging_directory "
                               f"{root} has {human_bytes(free)} free.")
    return Path(tempfile.mkdtemp(prefix=DOWNLOAD_PREFIX, dir=root))  # mkdtemp creates it 0700


def _download(destination: BackupDestination, path: str, target: Path) -> tuple[str, int]:
    """Stream the archive at ``path`` into ``target``; its SHA-256 and size."""
    digest = hashlib.sha256()
    size = 0
    try:
        with destination.open_backup(path) as stream, open(target, "xb") as out:
            while chunk := stream.read(CHUNK_SIZE):
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise DestinationError(f"Destination {destination.name}: downloading {path} to check it "
                               f"(monitor.deep_verify) failed: {exc.strerror or exc}.") from exc
    return digest.hexdigest(), size


def _remove_stale_downloads(root: Path) -> None:
    """Remove deep-verify folders a killed monitor task left behind (encrypted archives, but big)."""
    cutoff = time.time() - STALE_DOWNLOAD_SECONDS
    try:
        stale = [p for p in root.glob(DOWNLOAD_PREFIX + "*") if not p.is_symlink() and p.stat().st_mtime < cutoff]
    except OSError:
        return
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
        log.info("Removed %s, left behind by a monitor task that did not finish", folder)


# ---------------------------------------------------------------------------- restore-drill reports


def _drill_reports(destination: BackupDestination) -> tuple[tuple[DrillReport, ...], str | None, tuple[str, ...]]:
    """The newest readable drill reports about this destination, why they could not be listed, what was ignored."""
    try:
        keys = destination.list_drill_reports()
    except BackupError as exc:
        return (), str(exc), ()
    except Exception as exc:
        return (), f"{type(exc).__name__}: {exc}", ()
    reports: list[DrillReport] = []
    notes: list[str] = []
    for key in keys[:MAX_DRILL_REPORTS]:
        shown = clean_text(key, 200)
        try:
            data = destination.read_drill_report(key, MAX_REPORT_BYTES)
            if data is None:
                continue
            report = parse_drill_report(data, key)
        except (BackupError, DrillReportError) as exc:
            notes.append(f"Ignored the restore-drill report {shown}: {exc}")
            continue
        if report.destination != destination.name:
            notes.append(f"Ignored the restore-drill report {shown}: it is about destination "
                         f"{clean_text(report.destination, 60)!r}, not {destination.name!r}.")
            continue
        reports.append(report)
    if len(keys) > MAX_DRILL_REPORTS:
        notes.append(f"Read the {MAX_DRILL_REPORTS} newest of {len(keys)} restore-drill reports.")
    return tuple(reports), None, tuple(notes)
