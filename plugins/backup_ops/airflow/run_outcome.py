"""The end of a backup run: did it succeed, what does the Asset event say, and who is told.

``finalize`` runs when every other task of the run is done (trigger rule ALL_DONE, downstream of
all of them), so what it reports is final: the archive that was built, the destinations that hold
a verified copy, and the real cause of each failed task (carried through XCom, see
``backup_ops.airflow.failures``). It sends the run's one notification: ``backup_failed`` or
``backup_successful``, with the properties of every destination that holds the new backup.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from backup_ops.core.config import BackupConfig
from backup_ops.core.errors import BackupError, DestinationError
from backup_ops.core.models import human_bytes
from backup_ops.core.notification import Failure, Notification
from backup_ops.core.skips import describe_counts

log = logging.getLogger(__name__)


def finish_run(config: BackupConfig, dag_id: str, run_id: str, params: dict[str, Any],
               plan_result: dict[str, Any] | None, archive: dict[str, Any] | None,
               published_results: Any, failures: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Decide the run's outcome, send its one notification, and return the Asset event's extra.

    ``failures`` are the run's failed tasks with their causes (``failures.read_failures``).
    """
    from backup_ops.adapters.notify import deliver
    from backup_ops.adapters.notify.properties import destination_properties
    from backup_ops.airflow.failures import failure_lines, label

    failed_tasks = tuple(Failure(label(note), str(note["error"])) for note in failures)
    published = _published(published_results)
    holding = destination_properties(config, [p["destination"] for p in published])

    def notify(event: str, summary: str, details: Sequence[str] = ()) -> None:
        deliver(config, Notification(event, config.backup.name, config.backup.name, summary, failures=failed_tasks,
                                     details=tuple(details), dag_id=dag_id, run_id=run_id, destinations=holding),
                disabled=bool(params.get("disable_notifications")))

    try:
        summary = summarize(plan_result, archive, published, failure_lines(failures),
                            continue_on_failure=config.backup.destination.continue_on_failure)
    except BackupError as exc:
        notify("backup_failed", str(exc))
        raise
    details = [f"archive {summary['archive']}: {human_bytes(summary['size'])}, sha256 {summary['sha256']}",
               *(f"verified copy: {location}" for location in summary["locations"])]
    if summary["skipped_files"]:
        details.append(f"{describe_counts(summary['skipped_files'])} "
                       "(see the manifest's skipped list and the build_archive log)")
    done = ", ".join(p["destination"] for p in published)
    if summary["failed_destinations"]:
        notify("backup_failed", f"Backup {summary['archive']} is on {done} but failed on "
               f"{', '.join(summary['failed_destinations'])}; the run succeeded because continue_on_failure is set.",
               details)
    else:
        notify("backup_successful", f"Backup {summary['archive']} ({human_bytes(summary['size'])}) is on {done}, "
               "verified where it landed.", details)
    return summary


def _published(published_results: Any) -> list[dict[str, Any]]:
    """The publish results that exist (a one-element pull arrives unwrapped, a failed publish has none)."""
    if isinstance(published_results, dict):
        published_results = [published_results]
    return [p for p in (published_results or []) if p]


def published_results(ti: Any, plan_result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What the run's publish tasks returned: one result per destination that holds a verified copy."""
    count = len(plan_result["destinations"]) if plan_result else 0
    if not count:
        return []
    return _published(ti.xcom_pull(task_ids="publish", map_indexes=list(range(count)), default=None))


def missing_destinations(plan_result: dict[str, Any] | None, published: Any) -> list[str]:
    """The planned destinations without a verified copy."""
    done = {p["destination"] for p in _published(published)}
    return [name for name in (plan_result or {}).get("destinations", []) if name not in done]


def summarize(plan_result: dict[str, Any] | None, archive: dict[str, Any] | None, published_results: Any,
              causes: list[str], *, continue_on_failure: bool) -> dict[str, Any]:
    """Decide whether the run succeeded given which destinations got a verified copy.

    ``causes`` are the failed tasks with their errors (``dump_database[0]: …``); a failed run's
    error names them, so the run's failure says what went wrong without opening a task log.
    """
    published = _published(published_results)
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
