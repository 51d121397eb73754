"""The steps of ``backup_cleanup``: list → plan → log every decision → delete → report.

The decisions come from the pure ``backup_ops.core.retention.plan_cleanup``; this module only feeds
it the destination's listing and the run's logical date, logs every decision with its rule,
carries the deletions out and checks the result. It never decides anything the plan did not say,
and it refuses to delete at all when the plan or the listing look wrong
(``backup_ops.core.cleanup_guard.refusal_reason``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from backup_ops.core.cleanup_guard import refusal_reason
from backup_ops.core.config import BackupConfig
from backup_ops.core.errors import BackupError, DestinationError
from backup_ops.core.models import BackupFile, human_bytes
from backup_ops.core.retention import RetentionPolicy, plan_cleanup

if TYPE_CHECKING:
    from backup_ops.adapters.destinations.base import BackupDestination

log = logging.getLogger(__name__)


class _Log(Protocol):
    """What the cleanup needs from a logger: stdlib loggers and the task's structlog logger both fit."""

    def info(self, msg: str, /, *args: Any) -> Any: ...
    def warning(self, msg: str, /, *args: Any) -> Any: ...
    def error(self, msg: str, /, *args: Any) -> Any: ...


# Enough paths to act on in a failure message without flooding the UI with a thousand names.
_MAX_PATHS_IN_MESSAGE = 10


# Enough paths to act on in a failure message without flooding the UI with a thousand names.
_MAX_PATHS_IN_MESSAGE = 10


def retention_policy(config: BackupConfig) -> RetentionPolicy:
    """The configured ``cleanup.default_strategy`` as a validated policy."""
    return RetentionPolicy.from_settings(config.cleanup.retention)


def cleanup_moment(context: Mapping[str, Any]) -> datetime:
    """The instant retention is measured from: the run's data interval end, else its ``run_after``, in UTC.

    Scheduled and ``airflow dags test <date>`` runs have a data interval; manual runs triggered
    without a logical date have only ``run_after`` (when the run was requested).
    """
    moment = context.get("data_interval_end")
    if moment is None:
        moment = getattr(context.get("dag_run"), "run_after", None)
    if not isinstance(moment, datetime) or moment.utcoffset() is None:
        raise ValueError(
            "The cleanup needs the run's logical date (data_interval_end or dag_run.run_after) as a "
            f"time-zone-aware datetime, got {moment!r}."
        )
    utc = moment.astimezone(UTC)
    # A plain datetime, not pendulum's subclass: the retention core does calendar arithmetic on it.
    return datetime(utc.year, utc.month, utc.day, utc.hour, utc.minute, utc.second, utc.microsecond, tzinfo=UTC)


def clean_destination(
    destination: BackupDestination,
    policy: RetentionPolicy,
    now: datetime,
    *,
    dry_run: bool,
    log: _Log,
) -> dict[str, Any]:
    """List, plan, log every decision, delete (unless ``dry_run``) and return a small summary.

    A deletion that fails does not stop the others; the function raises DestinationError at the
    end naming every backup that could not be deleted. In a dry run the counts are what a real
    run would delete and ``used_after`` is the projected usage.
    """
    name = destination.name
    destination.check_reachable()
    backups = destination.list_backups()
    used_before = destination.used_storage(backups)
    log.info(
        "Destination %s (%s): %d backup(s) using %s; retention measured from %s (the run's logical date)%s",
        name, destination.location(), len(backups), human_bytes(used_before), now.isoformat(),
        " [DRY RUN: nothing will be deleted]" if dry_run else "",
    )
    log.info("Policy: %s", policy.describe())
    if not backups:
        log.info("Destination %s holds no backups below %s/; nothing to clean.", name, destination.backup_name)
        return _summary(name, kept=0, deleted=0, bytes_freed=0, used_after=0, dry_run=dry_run, now=now)

    plan = plan_cleanup(backups, policy, now)
    for line in plan.describe_lines():
        log.info("%s", _dry_run_wording(line) if dry_run else line)
    refusal = refusal_reason(plan, backups, policy, destination.backup_name)
    if dry_run:
        if refusal:
            log.warning("A real run would refuse to delete anything: %s", refusal)
        log.info(
            "Dry run: would delete %d of %d backup(s) (%s); used storage after cleanup would be %s (now %s).",
            len(plan.delete), len(backups), human_bytes(plan.bytes_freed), human_bytes(plan.bytes_kept),
            human_bytes(used_before),
        )
        return _summary(name, kept=len(plan.keep), deleted=len(plan.delete), bytes_freed=plan.bytes_freed,
                        used_after=plan.bytes_kept, dry_run=True, now=now)
    if refusal:
        raise BackupError(f"Destination {name}: refusing to delete anything: {refusal}")

    freed, failed = _delete_planned(destination, plan.delete, log)
    used_after = destination.used_storage(destination.list_backups())
    log.info(
        "Deleted %d of %d planned backup(s), freed %s; kept %d. Used storage after cleanup: %s",
        len(plan.delete) - len(failed), len(plan.delete), human_bytes(freed), len(plan.keep), human_bytes(used_after),
    )
    if failed:
        shown = ", ".join(failed[:_MAX_PATHS_IN_MESSAGE])
        more = f" and {len(failed) - _MAX_PATHS_IN_MESSAGE} more" if len(failed) > _MAX_PATHS_IN_MESSAGE else ""
        raise DestinationError(
            f"Destination {name}: could not delete {len(failed)} of {len(plan.delete)} planned backup(s): "
            f"{shown}{more}; the other deletions were done, see the errors above for each cause."
        )
    return _summary(name, kept=len(plan.keep), deleted=len(plan.delete), bytes_freed=freed,
                    used_after=used_after, dry_run=False, now=now)


def _delete_planned(destination: BackupDestination, planned: Sequence[BackupFile],
                    log: _Log) -> tuple[int, list[str]]:
    """Delete each planned backup with its receipt; returns bytes freed and the paths that failed."""
    freed = 0
    failed: list[str] = []
    for backup in planned:
        try:
            destination.delete_backup(backup.path)
        except (BackupError, OSError) as exc:  # adapters raise DestinationError; OSError is a safety net
            log.error("Could not delete %s: %s", backup.path, exc)
            failed.append(backup.path)
        else:
            freed += backup.size
    return freed, failed


def _dry_run_wording(line: str) -> str:
    """``Deleting x (rule: …)`` → ``Would delete x (rule: …)``; other lines unchanged."""
    prefix = "Deleting "
    return "Would delete " + line[len(prefix):] if line.startswith(prefix) else line


def _summary(destination: str, *, kept: int, deleted: int, bytes_freed: int, used_after: int, dry_run: bool,
             now: datetime) -> dict[str, Any]:
    return {
        "destination": destination,
        "kept": kept,
        "deleted": deleted,
        "bytes_freed": bytes_freed,
        "used_after": used_after,
        "dry_run": dry_run,
        "now": now.isoformat(),
    }


def report_cleanup(destinations: Sequence[str], summaries: Any) -> dict[str, Any]:
    """Log one line per destination and raise naming every destination whose cleanup failed.

    ``summaries`` is what the mapped cleanup tasks returned: a list of summary dicts, a single
    dict (Airflow unwraps a one-element pull) or None. A destination without a summary did not
    finish, because its task failed or never ran. Raising here is what makes the run "failed":
    this task is the DAG's only leaf, so its success would otherwise hide the failed ones.
    """
    if isinstance(summaries, Mapping):
        summaries = [summaries]
    by_name = {s["destination"]: s for s in (summaries or []) if isinstance(s, Mapping) and "destination" in s}
    failed: list[str] = []
    totals = {"kept": 0, "deleted": 0, "bytes_freed": 0}
    for name in destinations:
        summary = by_name.get(name)
        if summary is None:
            failed.append(name)
            log.error("Destination %s: cleanup FAILED; see its cleanup task log.", name)
            continue
        verb = "would delete" if summary.get("dry_run") else "deleted"
        log.info("Destination %s: kept %d, %s %d (%s freed), used storage after cleanup: %s", name,
                 summary["kept"], verb, summary["deleted"], human_bytes(summary["bytes_freed"]),
                 human_bytes(summary["used_after"]))
        for key in totals:
            totals[key] += int(summary[key])
    if failed:
        cleaned = [name for name in destinations if name not in failed]
        raise DestinationError(
            f"Cleanup failed on destination(s) {', '.join(failed)}"
            + (f" (cleaned: {', '.join(cleaned)})" if cleaned else "")
            + "; see each destination's cleanup task log for the cause."
        )
    return {"destinations": list(destinations), **totals}


def finish_cleanup(config: BackupConfig, dag_id: str, run_id: str, destinations: Sequence[str],
                   summaries: Any) -> dict[str, Any]:
    """``report_cleanup`` plus the run's one notification (failed destinations with their causes)."""
    from backup_ops.adapters.mail import notify_run
    from backup_ops.airflow.failures import failure_lines, read_failures

    try:
        totals = report_cleanup(destinations, summaries)
    except BackupError as exc:
        causes = failure_lines(read_failures(config, dag_id, run_id))
        notify_run(config, dag_id=dag_id, run_id=run_id, what="cleanup", succeeded=False,
                   details=[*causes, str(exc)])
        raise
    read_failures(config, dag_id, run_id)  # failures of earlier attempts that a retry fixed
    notify_run(config, dag_id=dag_id, run_id=run_id, what="cleanup", succeeded=True,
               details=[f"kept {totals['kept']}, deleted {totals['deleted']}, "
                        f"freed {human_bytes(totals['bytes_freed'])} on {', '.join(destinations)}"])
    return totals
