"""``BackupCleanupOperator``: apply the retention policy to one destination (list → plan → delete → report).

The decisions come from the pure ``backup_ops.core.retention.plan_cleanup``; this module only feeds it
the destination's listing and the run's logical date, logs every decision with its rule, carries
the deletions out and checks the result. It never decides anything the plan did not say, and it
refuses to delete at all when the plan or the listing look wrong (see ``refusal_reason``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from airflow.sdk import BaseOperator

from backup_ops.adapters.destinations.base import is_backup_key
from backup_ops.adapters.destinations.factory import make_destination
from backup_ops.core.config import load_config
from backup_ops.core.errors import BackupError, ConfigError, DestinationError
from backup_ops.core.models import BackupFile, human_bytes
from backup_ops.core.retention import REASON_NEWEST, CleanupPlan, RetentionPolicy, plan_cleanup

if TYPE_CHECKING:
    from airflow.sdk import Context

    from backup_ops.adapters.destinations.base import BackupDestination

log = logging.getLogger(__name__)


class _Log(Protocol):
    """What the cleanup needs from a logger: stdlib loggers and the task's structlog logger both fit."""

    def info(self, msg: str, /, *args: Any) -> Any: ...
    def warning(self, msg: str, /, *args: Any) -> Any: ...
    def error(self, msg: str, /, *args: Any) -> Any: ...


# Enough paths to act on in a failure message without flooding the UI with a thousand names.
_MAX_PATHS_IN_MESSAGE = 10


class BackupCleanupOperator(BaseOperator):
    """Delete the backups on one destination that the retention policy does not keep.

    :param destination: name of a ``backup.destination.destinations`` entry (templated).
    :param dry_run: log the plan and delete nothing; a bool, or ``"true"``/``"false"`` as
        rendered from ``{{ params.dry_run }}`` (templated).

    Retention is measured from the run's logical date (data interval end, else ``run_after``),
    never the clock, so re-running a past date decides the same. Returns a small summary
    (counts and bytes), never the lists of backups.
    """

    template_fields: Sequence[str] = ("destination", "dry_run")
    ui_color = "#f4d8cd"

    def __init__(self, *, destination: str, dry_run: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.destination = destination
        # Shadows BaseOperator's legacy ``dry_run()`` (render-only; nothing in Airflow 3 calls it) so the
        # argument, the template field and the DAG Param all keep laravel-backup's flag name.
        self.dry_run = dry_run  # type: ignore[assignment,method-assign]

    def execute(self, context: Context) -> dict[str, Any]:
        dry_run = parse_dry_run(self.dry_run)
        if not isinstance(self.destination, str) or not self.destination.strip():
            raise ConfigError(
                f"BackupCleanupOperator.destination must be a destination name, got {self.destination!r}."
            )
        now = cleanup_moment(context)
        config = load_config()
        destination = make_destination(config.destination(self.destination.strip()), config.backup.name)
        policy = RetentionPolicy.from_settings(config.cleanup.retention)
        return clean_destination(destination, policy, now, dry_run=dry_run, log=self.log)


def parse_dry_run(value: object) -> bool:
    """The rendered ``dry_run`` as a bool; anything but a clear true/false is refused, never guessed.

    A typo in a flag that decides between "log only" and "delete" must not silently mean "delete".
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"BackupCleanupOperator.dry_run must be true or false, got {value!r}.")


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


def refusal_reason(plan: CleanupPlan, backups: Sequence[BackupFile], policy: RetentionPolicy,
                   backup_name: str) -> str | None:
    """Why deleting what ``plan`` says would be unsafe, or None when it is safe.

    Two kinds of trouble are caught before anything is deleted. A plan that does not match the
    listing (a lost or unknown path, the newest or a floor backup deleted, a key outside the
    backup folder) means a bug, and deleting on a bug is irreversible. A listing whose newest
    backup is older than the whole retention horizon means no backup was made for years, or,
    far more likely, the dates are wrong (modification times reset by a copy or restore): the
    plan would then erase the whole history but one backup. laravel-backup would delete; we
    stop and let a human look, because that is the one case where being wrong loses everything.
    """
    listed = {backup.path for backup in backups}
    kept = {backup.path for backup in plan.keep}
    deleted = {backup.path for backup in plan.delete}
    if kept & deleted or kept | deleted != listed or len(plan.keep) + len(plan.delete) != len(backups):
        return "the retention plan does not cover the listing exactly (a bug in the planner)."
    if len(plan.keep) < min(policy.min_backups_kept, len(backups)) or REASON_NEWEST not in {
        plan.reasons[path] for path in kept
    }:
        return "the retention plan would delete the newest backup or go below min_backups_kept (a bug in the planner)."
    strays = sorted(path for path in deleted if not is_backup_key(path) or not path.startswith(f"{backup_name}/"))
    if strays:
        return f"the retention plan names {strays[0]!r}, which is not a .zip backup below {backup_name}/."
    if not plan.delete or not plan.periods:
        return None
    horizon = plan.periods[-1].end
    newest = max(backups, key=lambda backup: backup.date)
    if newest.date < horizon:
        return (
            f"the newest backup, {newest.path}, is dated {newest.date.isoformat()}, before the whole retention "
            f"horizon ({horizon.isoformat()}), so the plan would leave only {len(plan.keep)} backup(s) of "
            f"{len(backups)}. Either no backup was made for years or the backups' dates are wrong (modification "
            "times reset by a copy?). Check the destination; if the plan logged above is right, delete by hand."
        )
    return None


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


def finish_cleanup(dag_id: str, run_id: str, destinations: Sequence[str], summaries: Any) -> dict[str, Any]:
    """``report_cleanup`` plus the run's one notification (failed destinations with their causes)."""
    from backup_ops.airflow.notify import failure_lines, notify_run, read_failures

    config = load_config()
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
