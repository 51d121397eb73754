"""The step of ``backup_monitor``: check one destination's health, log each check, notify, fail when unhealthy.

The checks are ``backup_ops.core.health``'s, on what ``take_snapshot`` gathered, measured from the
wall clock when the task runs: a monitor says how things are now (a cleanup, by contrast,
measures from its run's logical date so that replaying a day decides the same).

Each task sends ``unhealthy_backup_found`` (every failed check with its sentence) or
``healthy_backup_found`` once, and returns the health report as its XCom (``return_value``, for
the UI); an unhealthy destination then fails its task, after notifying and with the report
already pushed. A destination that cannot be reached for a reason a retry may fix (an S3 endpoint
down) is retried first, silently, so a blip does not page anyone and a run notifies once.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from backup_ops.core.config import BackupConfig
from backup_ops.core.errors import BackupError, DestinationError
from backup_ops.core.health import HealthReport, Status, evaluate, format_date
from backup_ops.core.notification import DestinationProperties, Failure, Notification

log = logging.getLogger(__name__)


class UnhealthyBackups(BackupError):
    """A destination failed health checks; retrying would find the same (the monitor runs again in hours)."""

    retryable = False


def check_destination_health(config: BackupConfig, destination: str, now: datetime, *, ti: Any = None,
                             disable_notifications: bool = False) -> dict[str, Any]:
    """Gather, evaluate, log, notify; return the report (a dict) or raise UnhealthyBackups naming the failed checks.

    ``now`` is the moment the ages are measured from (the task passes the wall clock); ``ti`` is
    the task instance (for the run's ids, its remaining tries and the XCom of an unhealthy report).
    """
    from backup_ops.adapters.destinations.factory import make_destination
    from backup_ops.adapters.destinations.snapshot import take_snapshot

    dest = make_destination(config.destination(destination), config.backup.name)
    snapshot = take_snapshot(config, dest)
    report = evaluate(snapshot, config.monitor, now)
    log_report(report)
    if not report.healthy and snapshot.transient and _tries_left(ti):
        raise DestinationError(f"{report.summary()} The cause may be passing ({snapshot.unreachable_reason}); "
                               "trying again before notifying anyone.")
    channels = _notify(config, report, ti, disable_notifications)
    result = report.to_dict()
    result["notified"] = channels
    if report.healthy:
        return result
    if ti is not None:
        ti.xcom_push("return_value", result)  # a failed task returns nothing; the UI still needs the report
    failed = ", ".join(check.name for check in report.failures)
    raise UnhealthyBackups(f"The {config.backup.name} backups on destination {destination} are unhealthy; failed "
                           f"checks: {failed} (each check's sentence is in the log above and in the "
                           f"unhealthy_backup_found notification{'' if channels else ', which no channel delivered'}).")


def log_report(report: HealthReport) -> None:
    """A heading, each note, one line per check (a failure as a warning), then the verdict."""
    log.info("Health of destination %s (%s) as of %s:", report.snapshot.destination, report.snapshot.location,
             format_date(report.checked_at))
    for note in report.snapshot.notes:
        log.info("Note: %s", note)
    for check in report.checks:
        if check.status is Status.FAIL:
            log.warning("FAIL %s: %s", check.name, check.sentence)
        else:
            log.info("%s %s: %s", "PASS" if check.status is Status.PASS else "SKIP", check.name, check.sentence)
    (log.info if report.healthy else log.warning)("%s", report.summary())


def health_notification(config: BackupConfig, report: HealthReport, dag_id: str = "", run_id: str = ""
                        ) -> Notification:
    """``unhealthy_backup_found`` with each failed check and its sentence, or ``healthy_backup_found``."""
    snapshot = report.snapshot
    return Notification(
        event="healthy_backup_found" if report.healthy else "unhealthy_backup_found",
        application=config.backup.name,
        backup_name=config.backup.name,
        summary=report.summary(),
        # An unreachable destination lists nothing: no backups, as laravel-backup's properties then say too.
        destination=DestinationProperties.of(snapshot.destination, snapshot.backups),
        failures=tuple(Failure(check.name, check.sentence) for check in report.failures),
        details=tuple(f"[{check.status.value}] {check.name}: {check.sentence}" for check in report.checks
                      if check.status is not Status.FAIL),
        dag_id=dag_id,
        run_id=run_id,
    )


def _notify(config: BackupConfig, report: HealthReport, ti: Any, disabled: bool) -> list[str]:
    from backup_ops.adapters.notify import deliver

    notification = health_notification(config, report, getattr(ti, "dag_id", ""), getattr(ti, "run_id", ""))
    return deliver(config, notification, disabled=disabled)


def _tries_left(ti: Any) -> bool:
    """Whether Airflow will run this task again if this attempt fails (try_number counts from 1)."""
    try:
        return int(ti.try_number) <= int(ti.max_tries)
    except (AttributeError, TypeError, ValueError):
        return False
