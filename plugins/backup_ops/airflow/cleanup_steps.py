"""The steps of ``backup_cleanup``: list → check the newest → plan → log every decision → delete → report.

The decisions come from the pure ``backup_ops.core.retention.plan_cleanup``; this module only feeds
it the destination's listing, the integrity of the archives it would keep as the newest, and the
run's logical date, logs every decision with its rule, carries the deletions out, removes what
failed publishes left behind, and checks the result. It never decides anything the plan did not
say, and it refuses to delete at all when the plan or the listing look wrong
(``backup_ops.core.cleanup_guard.refusal_reason``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from backup_ops.core.cleanup_guard import refusal_reason
from backup_ops.core.config import BackupConfig
from backup_ops.core.errors import BackupError, DestinationError
from backup_ops.core.models import ArchiveIntegrity, BackupFile, Integrity, human_bytes
from backup_ops.core.notification import Failure, Notification
from backup_ops.core.retention import CleanupPlan, RetentionPolicy, plan_cleanup

if TYPE_CHECKING:
    from backup_ops.adapters.destinations.base import BackupDestination, Leftover

log = logging.getLogger(__name__)

# Leftovers younger than this may belong to a publish still running; they are never touched.
LEFTOVER_AGE = timedelta(days=1)
# Enough paths to act on in a failure message without flooding the UI with a thousand names.
_MAX_PATHS_IN_MESSAGE = 10
# Task states after which a cleanup task will not run again in this run.
_DID_NOT_RUN = ("upstream_failed", "skipped", "removed")


class _Log(Protocol):
    """What the cleanup needs from a logger: stdlib loggers and the task's structlog logger both fit."""

    def info(self, msg: str, /, *args: Any) -> Any: ...
    def warning(self, msg: str, /, *args: Any) -> Any: ...
    def error(self, msg: str, /, *args: Any) -> Any: ...


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
    leftovers_before: datetime,
    log: _Log,
) -> dict[str, Any]:
    """List, check, plan, log every decision, delete (unless ``dry_run``) and return a small summary.

    The archives the plan would keep as the newest are checked against their receipts first; a
    damaged one is kept for a human, protects nothing and is listed in the summary's ``damaged``.
    Leftovers of failed publishes last touched before ``leftovers_before`` (the wall clock minus
    LEFTOVER_AGE: a publish in flight is never touched) are removed and counted. A deletion that
    fails does not stop the others; the function raises DestinationError at the end naming every
    one that failed, or when every archive is damaged. In a dry run the counts are what a real run
    would delete and remove, and ``used_after`` is the projected usage.
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
        log.info("Destination %s holds no backups below %s/; nothing to plan.", name, destination.backup_name)
    checks = destination.check_newest(backups, policy.min_backups_kept)
    _log_checks(checks, log)
    damaged = [check for check in checks if check.damaged]
    leftovers = destination.find_leftovers(leftovers_before)
    plan = plan_cleanup(backups, policy, now, checks)
    for line in plan.describe_lines():
        log.info("%s", _dry_run_wording(line) if dry_run else line)
    refusal = refusal_reason(plan, backups, policy, destination.backup_name, checks)
    summary = {"destination": name, "kept": len(plan.keep), "deleted": len(plan.delete), "dry_run": dry_run,
               "now": now.isoformat(), "damaged": [check.describe() for check in damaged],
               "leftovers": len(leftovers)}
    if dry_run:
        _log_dry_run(plan, backups, leftovers, refusal, used_before, log)
        _fail_if_all_damaged(name, backups, damaged)
        return {**summary, "bytes_freed": plan.bytes_freed, "used_after": plan.bytes_kept}
    if refusal:
        raise BackupError(f"Destination {name}: refusing to delete anything: {refusal}", retryable=False)

    freed, failed = _delete_planned(destination, plan.delete, log)
    failed_leftovers = _remove_leftovers(destination, leftovers, log)
    used_after = destination.used_storage(destination.list_backups())
    log.info(
        "Deleted %d of %d planned backup(s), freed %s; kept %d; removed %d of %d leftover(s). Used storage after "
        "cleanup: %s", len(plan.delete) - len(failed), len(plan.delete), human_bytes(freed), len(plan.keep),
        len(leftovers) - len(failed_leftovers), len(leftovers), human_bytes(used_after),
    )
    _fail_if_all_damaged(name, backups, damaged)
    problems = []
    if failed:
        problems.append(f"could not delete {len(failed)} of {len(plan.delete)} planned backup(s): {_paths(failed)}")
    if failed_leftovers:
        problems.append(f"could not remove {len(failed_leftovers)} of {len(leftovers)} leftover(s) of failed "
                        f"publishes: {_paths(failed_leftovers)}")
    if problems:
        raise DestinationError(f"Destination {name}: {'; '.join(problems)}; the other deletions were done, see the "
                               "errors above for each cause.")
    return {**summary, "bytes_freed": freed, "used_after": used_after}


def _log_dry_run(plan: CleanupPlan, backups: Sequence[BackupFile], leftovers: Sequence[Leftover],
                 refusal: str | None, used_before: int, log: _Log) -> None:
    """What a real run would do, with the leftovers it would remove."""
    if refusal:
        log.warning("A real run would refuse to delete anything: %s", refusal)
    for leftover in leftovers:
        log.info("Would remove %s, left behind by a failed publish", leftover.describe())
    log.info(
        "Dry run: would delete %d of %d backup(s) (%s) and remove %d leftover(s); used storage after cleanup "
        "would be %s (now %s).", len(plan.delete), len(backups), human_bytes(plan.bytes_freed), len(leftovers),
        human_bytes(plan.bytes_kept), human_bytes(used_before),
    )


def _paths(paths: Sequence[str]) -> str:
    """The first few paths, and how many more."""
    more = f" and {len(paths) - _MAX_PATHS_IN_MESSAGE} more" if len(paths) > _MAX_PATHS_IN_MESSAGE else ""
    return ", ".join(paths[:_MAX_PATHS_IN_MESSAGE]) + more


def _log_checks(checks: Sequence[ArchiveIntegrity], log: _Log) -> None:
    """One line per archive checked against its receipt (a damaged one as a warning); unverified ones capped."""
    unverified = 0
    for check in checks:
        if check.state is Integrity.DAMAGED:
            log.warning("DAMAGED: %s: %s. It is kept for a human to inspect, protects nothing, and is reported.",
                        check.path, check.detail)
        elif check.state is Integrity.UNVERIFIED:
            unverified += 1
            if unverified <= _MAX_PATHS_IN_MESSAGE:  # a laravel-backup history has no receipts at all
                log.info("Unverified: %s: %s; it is kept or deleted by date, but is no proof of a good backup.",
                         check.path, check.detail)
        else:
            log.info("Intact: %s: %s.", check.path, check.detail)
    if unverified > _MAX_PATHS_IN_MESSAGE:
        log.info("… and %d more unverified archive(s), none of them damaged.", unverified - _MAX_PATHS_IN_MESSAGE)


def _fail_if_all_damaged(name: str, backups: Sequence[BackupFile], damaged: Sequence[ArchiveIntegrity]) -> None:
    if backups and len(damaged) == len(backups):
        raise DestinationError(
            f"Destination {name}: all {len(backups)} backup(s) are damaged (their size or SHA-256 contradicts their "
            f"receipt), so this destination holds no usable backup; none was deleted. Newest: {damaged[0].describe()}.",
            retryable=False,
        )


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


def _remove_leftovers(destination: BackupDestination, leftovers: Sequence[Leftover], log: _Log) -> list[str]:
    """Remove each leftover of a failed publish, logged; returns the paths that could not be removed."""
    failed: list[str] = []
    for leftover in leftovers:
        try:
            destination.remove_leftover(leftover)
        except (BackupError, OSError) as exc:
            log.error("Could not remove %s: %s", leftover.describe(), exc)
            failed.append(leftover.path)
        else:
            log.info("Removed %s, left behind by a failed publish", leftover.describe())
    return failed


def _dry_run_wording(line: str) -> str:
    """``Deleting x (rule: …)`` → ``Would delete x (rule: …)``; other lines unchanged."""
    prefix = "Deleting "
    return "Would delete " + line[len(prefix):] if line.startswith(prefix) else line


# ---------------------------------------------------------------------------- report


@dataclass(frozen=True)
class CleanupOutcome:
    """What the run's cleanup tasks achieved: totals, each task that did not finish with its cause, damage found."""

    totals: dict[str, Any]
    cleaned: list[str]
    failed: list[str]     # one sentence per destination whose cleanup did not finish: the task and its cause
    damaged: list[str]    # one line per damaged archive: ``<destination>: <path>: damaged (<detail>)``

    def error(self) -> DestinationError | None:
        """The run's failure, naming every failed task with its cause and every damaged archive; None if clean."""
        parts = []
        if self.failed:
            cleaned = f" (cleaned: {', '.join(self.cleaned)})" if self.cleaned else ""
            names = ", ".join(line.split("]", 1)[0].removeprefix("cleanup[") for line in self.failed)
            parts.append(f"Cleanup failed on destination(s) {names}{cleaned}. " + " ".join(self.failed))
        if self.damaged:
            parts.append(f"Cleanup found {len(self.damaged)} damaged archive(s) and kept them for a human to inspect "
                         f"and delete by hand (see docs/runbook.md): {'; '.join(self.damaged)}.")
        return DestinationError(" ".join(parts), retryable=False) if parts else None


def cleanup_outcome(destinations: Sequence[str], summaries: Any, task_states: Mapping[str, str] | None = None,
                    failures: Sequence[Mapping[str, Any]] = ()) -> CleanupOutcome:
    """Combine the mapped cleanup tasks' summaries, final states and recorded failures, one destination each.

    ``summaries`` is what the tasks returned (a list, one unwrapped dict, or None); ``task_states``
    maps ``cleanup_<map index>`` to its state (map index i is ``destinations[i]``); ``failures``
    are the run's failure causes (``backup_ops.airflow.failures``, from XCom), the last one of each failed task
    being its cause. A destination without a summary is reported by what really happened to its
    task: failed (with the cause), did not run, or had not finished.
    """
    if isinstance(summaries, Mapping):
        summaries = [summaries]
    by_name = {s["destination"]: s for s in (summaries or []) if isinstance(s, Mapping) and "destination" in s}
    causes = {note.get("map_index"): str(note.get("error")) for note in failures if note.get("task") == "cleanup"}
    totals: dict[str, Any] = {"destinations": list(destinations), "kept": 0, "deleted": 0, "bytes_freed": 0,
                              "leftovers": 0}
    cleaned: list[str] = []
    failed: list[str] = []
    damaged: list[str] = []
    for index, name in enumerate(destinations):
        summary = by_name.get(name)
        if summary is None:
            failed.append(_why_not_cleaned(name, (task_states or {}).get(f"cleanup_{index}"), causes.get(index),
                                           known_states=task_states is not None))
            log.error("Destination %s: %s", name, failed[-1])
            continue
        cleaned.append(name)
        verb = "would delete" if summary.get("dry_run") else "deleted"
        log.info("Destination %s: kept %d, %s %d (%s freed), %d leftover(s) %s, used storage after cleanup: %s", name,
                 summary["kept"], verb, summary["deleted"], human_bytes(summary["bytes_freed"]),
                 summary.get("leftovers", 0), "found" if summary.get("dry_run") else "removed",
                 human_bytes(summary["used_after"]))
        for key in ("kept", "deleted", "bytes_freed", "leftovers"):
            totals[key] += int(summary.get(key, 0))
        damaged += [f"{name}: {line}" for line in summary.get("damaged", ())]
    for line in damaged:
        log.warning("DAMAGED archive kept for a human: %s", line)
    return CleanupOutcome(totals, cleaned, failed, damaged)


def _why_not_cleaned(name: str, state: str | None, cause: str | None, *, known_states: bool) -> str:
    """One sentence for a destination without a summary, from its task's real final state."""
    task = f"cleanup[{name}]"
    if state == "failed" or (cause is not None and state is None):
        return f"{task} failed: {cause or 'its cause was not recorded; see the task log.'}"
    if state in _DID_NOT_RUN:
        return f"{task} did not run (state {state})."
    if state == "success":
        return f"{task} succeeded but returned no summary; see the task log."
    if state is None:
        return (f"{task} has no task instance in this run; it did not run." if known_states
                else f"{task} failed or did not run; see its task log.")
    return f"{task} had not finished (state {state}) when the report ran."


def report_cleanup(destinations: Sequence[str], summaries: Any, task_states: Mapping[str, str] | None = None,
                   failures: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """Log one line per destination; raise naming every failed cleanup task with its cause and every damaged archive.

    Raising here is what makes the run "failed": this task is the DAG's only leaf, so its success
    would otherwise hide the failed ones. A damaged archive fails the run too, although its
    destination was cleaned: it is a finding a human must act on, so it must reach the mail.
    """
    outcome = cleanup_outcome(destinations, summaries, task_states, failures)
    error = outcome.error()
    if error is not None:
        raise error
    return outcome.totals


def finish_cleanup(config: BackupConfig, dag_id: str, run_id: str, destinations: Sequence[str],
                   summaries: Any, task_states: Mapping[str, str] | None = None,
                   failures: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """``report_cleanup`` plus the run's one notification: each failed task with its cause, each damaged archive.

    ``failures`` are the run's failed tasks with their causes (``backup_ops.airflow.failures.read_failures``).
    The notification (``cleanup_failed`` or ``cleanup_successful``) carries the properties of every
    destination that was cleaned, as they are after the cleanup.
    """
    from backup_ops.adapters.notify import deliver
    from backup_ops.adapters.notify.properties import destination_properties

    outcome = cleanup_outcome(destinations, summaries, task_states, failures)
    totals = outcome.totals
    done = (f"kept {totals['kept']}, deleted {totals['deleted']}, freed {human_bytes(totals['bytes_freed'])}, "
            f"removed {totals['leftovers']} leftover(s) of failed publishes on {', '.join(outcome.cleaned) or 'none'}")
    error = outcome.error()
    damaged = (["damaged archives (kept for a human; see docs/runbook.md):", *outcome.damaged, ""]
               if outcome.damaged else [])
    dry_run = any(isinstance(s, Mapping) and s.get("dry_run") for s in (
        [summaries] if isinstance(summaries, Mapping) else summaries or []))
    summary = f"Cleanup {done}" + (" (a dry run: the counts are what a real run would do; nothing was deleted)."
                                   if dry_run else ".")
    deliver(config, Notification(
        "cleanup_failed" if error else "cleanup_successful", config.backup.name, config.backup.name,
        str(error) if error else summary, failures=tuple(_as_failure(line) for line in outcome.failed),
        details=(*damaged, done), dag_id=dag_id, run_id=run_id,
        destinations=destination_properties(config, outcome.cleaned),
    ))
    if error is not None:
        raise error
    return totals


def _as_failure(line: str) -> Failure:
    """``cleanup[b] failed: <cause>`` → Failure("cleanup[b]", "<cause>"); other states keep their sentence."""
    task, _, what = line.partition(" ")
    return Failure(task, what.removeprefix("failed: "))
