"""The end of a backup run: did it succeed, what does the Asset event say, and who is told.

``finalize`` runs when every other task of the run is done (trigger rule ALL_DONE, downstream of
all of them), so what it reports is final: the archive that was built, the destinations that hold
a verified copy, and the real cause of each failed task (from ``backup_ops.airflow.failures``).
"""

from __future__ import annotations

import logging
from typing import Any

from backup_ops.core.config import BackupConfig
from backup_ops.core.errors import BackupError, DestinationError
from backup_ops.core.models import human_bytes
from backup_ops.core.skips import describe_counts

log = logging.getLogger(__name__)


def finish_run(config: BackupConfig, dag_id: str, run_id: str, params: dict[str, Any],
               plan_result: dict[str, Any] | None, archive: dict[str, Any] | None,
               published_results: Any) -> dict[str, Any]:
    """Decide the run's outcome, send its one notification, and return the Asset event's extra."""
    from backup_ops.adapters.mail import notify_run
    from backup_ops.airflow.failures import failure_lines, read_failures

    disabled = bool(params.get("disable_notifications"))
    causes = failure_lines(read_failures(config, dag_id, run_id))
    try:
        summary = summarize(plan_result, archive, published_results, causes,
                            continue_on_failure=config.backup.destination.continue_on_failure)
    except BackupError as exc:
        notify_run(config, dag_id=dag_id, run_id=run_id, what="backup", succeeded=False,
                   details=[str(exc), "", "failed tasks:", *causes] if causes else [str(exc)], disabled=disabled)
        raise
    details = [f"archive {summary['archive']}: {human_bytes(summary['size'])}, sha256 {summary['sha256']}",
               *(f"verified copy: {location}" for location in summary["locations"])]
    if summary["skipped_files"]:
        details.append(f"{describe_counts(summary['skipped_files'])} "
                       "(see the manifest's skipped list and the build_archive log)")
    if summary["failed_destinations"]:
        details += ["", "failed destinations (continue_on_failure is set):", *causes]
    notify_run(config, dag_id=dag_id, run_id=run_id, what="backup", succeeded=not summary["failed_destinations"],
               details=details, disabled=disabled)
    return summary


def summarize(plan_result: dict[str, Any] | None, archive: dict[str, Any] | None, published_results: Any,
              causes: list[str], *, continue_on_failure: bool) -> dict[str, Any]:
    """Decide whether the run succeeded given which destinations got a verified copy.

    ``causes`` are the failed tasks with their errors (``dump_database[0]: …``); a failed run's
    error names them, so the run's failure says what went wrong without opening a task log.
    """
    if isinstance(published_results, dict):
        published_results = [published_results]
    published: list[dict[str, Any]] = [p for p in (published_results or []) if p]
    because = ": " + "; ".join(causes) if causes else "; see the failed task's log for the cause."
    if not plan_result or not archive:
        raise BackupError(f"No archive was built, so nothing was published{because}", retryable=False)
    done = {p["destination"] for p in published}
    failed = [name for name in plan_result["destinations"] if name not in done]
    if failed and (not continue_on_failure or not done):
        raise DestinationError(
            f"Backup {archive['name']} failed on destination(s) {', '.join(failed)}"
            + (f" (verified copies exist on {', '.join(sorted(done))})" if done else "") + because,
            retryable=False,
        )
    if failed:
        log.warning("Backup %s failed on %s; continue_on_failure is set and %s got a verified copy.",
                    archive["name"], ", ".join(failed), ", ".join(sorted(done)))
    log.info("Backup %s complete: %s, sha256 %s, on %s", archive["name"], human_bytes(archive["size"]),
             archive["sha256"], ", ".join(p["location"] for p in published))
    return {"archive": archive["name"], "size": archive["size"], "sha256": archive["sha256"],
            "locations": [p["location"] for p in published], "failed_destinations": failed,
            "skipped_files": dict(archive.get("skipped") or {})}
