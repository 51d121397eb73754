"""A run's private staging: made by the setup task, emptied by the teardown, swept once its run is over.

Staging holds what is not yet published: plaintext dumps, the file listing and the staged
archive. It is a local folder (``file://`` staging: ``<root>/<run>``, mode 0700) or a prefix in a
bucket (``s3://`` staging: ``<url>/<run>/``, see ``adapters.staging_store``). The teardown removes
it whatever happened and wherever it runs, except the (encrypted) archive of a run that did not
reach every destination: clearing that run's failed publish task then finds it. A worker killed
mid-run never reaches its teardown, so every new run also removes the folders or prefixes of runs
that cannot be running any more: nothing in them changed for longer than the DAG's longest
possible run (``LONGEST_RUN``, its ``dagrun_timeout``). With ``s3://`` staging each task's own work
folder on its worker is removed by that task; a worker killed mid-task leaves one, removed once
stale by the next task of the DAG that works on that host.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backup_ops.adapters.staging_store import LONGEST_RUN as LONGEST_RUN  # backup_daily's dagrun_timeout
from backup_ops.adapters.staging_store import STALE_AFTER
from backup_ops.core.config import BackupConfig
from backup_ops.core.errors import BackupError, ConfigError
from backup_ops.core.models import run_folder_name

log = logging.getLogger(__name__)


def prepare_staging(config: BackupConfig, dag_id: str, run_id: str) -> str:
    """Create this run's private staging (a 0700 folder, or a prefix with its marker) and sweep runs that are over.

    Returns the run's staging location: a local path, or the ``s3://`` URL of its prefix.
    """
    settings = config.backup.staging_location
    folder = run_folder_name(dag_id, run_id)
    # This host's leftovers: work folders of tasks killed mid-run (s3 staging), or whole run folders.
    sweep_stale_runs(config.backup.staging_directory, dag_id, keep=config.backup.staging_directory / folder)
    root = settings.local_root
    if root is None:
        from backup_ops.adapters.staging_store import StagedRun, stale_prefixes

        location = f"{settings.url}/{folder}"
        StagedRun.of(config, location).prepare()
        cutoff = datetime.now(UTC) - STALE_AFTER
        for stale in stale_prefixes(settings.url, settings.conn_id, run_folder_name(dag_id, ""), location, cutoff):
            removed = StagedRun.of(config, stale).remove()
            log.warning("Removed %s (%d objects), left over by an earlier run that ended without its teardown "
                        "(untouched for over %d hours)", stale, removed, STALE_AFTER.total_seconds() // 3600)
        log.info("Staging for this run: %s (each task works in its own folder below %s on its worker)", location,
                 config.backup.staging_directory)
        return location
    staging = root / folder
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging.mkdir(mode=0o700, exist_ok=True)
        os.chmod(staging, 0o700)
    except OSError as exc:
        key = "backup.staging" if config.backup.staging else "backup.staging_directory"
        raise ConfigError(f"{key} {root} cannot be used ({exc.strerror}); point it at a writable directory.") from exc
    if root != config.backup.staging_directory:
        sweep_stale_runs(root, dag_id, keep=staging)
    return str(staging)


def sweep_stale_runs(root: Path, dag_id: str, *, keep: Path, now: float | None = None) -> list[Path]:
    """Remove ``dag_id``'s run folders below ``root`` untouched for ``STALE_AFTER``.

    Such a run was killed before its teardown (or kept its archive for a retry that never came);
    its folder may hold plaintext dumps. Returns what was removed; a folder that cannot be removed
    is logged and left for the next run.
    """
    from backup_ops.adapters.staging_store import sweep_local

    return sweep_local(root, run_folder_name(dag_id, ""), keep=keep, stale_after=STALE_AFTER, now=now)


def remove_staging(config: BackupConfig, staging_dir: str | None, *, archive: dict[str, Any] | None = None,
                   missing_destinations: Sequence[str] = ()) -> None:
    """Delete the run's staging folder; keep the staged ``archive`` while ``missing_destinations`` lack it.

    ``archive`` is build_archive's result (None when none was built).
    """
    keep_archive = str(archive.get("name") or "") if archive and missing_destinations else None
    if not staging_dir:
        return
    settings = config.backup.staging_location
    if settings.local_root is None:
        _remove_remote(config, staging_dir, keep_archive)
        return
    path = Path(staging_dir)
    root = settings.local_root
    if path.parent != root:  # defence in depth: only ever delete a run folder we created
        raise BackupError(f"Refusing to remove {path}: it is not a run folder below {root}.")
    if not path.exists():
        return
    kept = path / keep_archive if keep_archive and "/" not in keep_archive else None
    if kept is None or not kept.is_file():
        shutil.rmtree(path)
        log.info("Removed staging directory %s", path)
        return
    for entry in path.iterdir():
        if entry == kept:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    log.warning("Kept the staged archive %s: not every destination got a verified copy, so clearing a failed "
                "publish task can still publish it; the dumps were removed, and a later run removes the archive "
                "after %d hours.", kept, STALE_AFTER.total_seconds() // 3600)


def _remove_remote(config: BackupConfig, location: str, keep_archive: str | None) -> None:
    from backup_ops.adapters.staging_store import StagedRun

    url = config.backup.staging_location.url
    folder = location.removeprefix(url + "/")
    if folder == location or not folder or "/" in folder:  # defence in depth: only a run prefix we made
        raise BackupError(f"Refusing to remove {location}: it is not a run prefix below {url}.")
    run = StagedRun.of(config, location)
    kept = keep_archive if keep_archive and "/" not in keep_archive and run.path(keep_archive).exists() else None
    removed = run.remove(keep=kept)
    if kept is None:
        log.info("Removed this run's staging %s (%d objects)", location, removed)
        return
    log.warning("Kept the staged archive %s: not every destination got a verified copy, so clearing a failed "
                "publish task can still publish it; the dumps were removed, and a later run removes the archive "
                "after %d hours.", run.child(kept), STALE_AFTER.total_seconds() // 3600)
