"""The late-backup alert: a Deadline Alert on ``backup_daily`` whose callback sends ``backup_late``.

Airflow 3 replaced SLA misses with Deadline Alerts. ``backup_daily`` carries one: when a run is
still going ``backup.deadline_minutes`` after it was queued, the scheduler marks the deadline
missed and the **triggerer** awaits ``notify_backup_late`` (an ``AsyncCallback``). That process
imports it by its dotted path (``plugins/`` is on ``sys.path`` in every Airflow process), hands it
the small JSON-able kwargs set here plus a ``context`` of ``{"dag_run": <the run as the REST API
shows it>, "deadline": {"id", "deadline_time"}}``, and stores its return value in a TEXT column.

What 3.3.2 gets wrong, and what this module does about it:

* A run that already **failed** still fires its deadline later (apache/airflow#60927): the run's
  own ``backup_failed`` notification said it all, so the callback sends nothing unless the run is
  still queued or running.
* A callback that returns a dict crashes the triggerer, which then runs it again (a second mail):
  the callback returns None.
* ``airflow dags test`` and ``dag.test()`` crash on any DAG with a deadline (apache/airflow#73428):
  ``BACKUP_OPS_DISABLE_DEADLINES=1`` leaves the alert off (the tests and the demo set it).

The callback reads the config itself (``load_config()``, as the DAG file does) and delivers
through ``backup_ops.adapters.notify``, which is blocking I/O: it runs in a worker thread so the
triggerer's event loop keeps serving every other trigger meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from backup_ops.core.config import BackupConfig
from backup_ops.core.notification import Notification

if TYPE_CHECKING:
    from airflow.sdk.definitions.deadline import DeadlineAlert

log = logging.getLogger(__name__)

DISABLE_ENV = "BACKUP_OPS_DISABLE_DEADLINES"
"""Set to 1 (true, yes) to leave the alert off: ``airflow dags test`` and ``dag.test()`` crash on deadlines."""
ALERT_NAME = "backup_late"
UNFINISHED = ("queued", "running")
"""Run states in which a missed deadline means the backup is late (a queued run has not even started)."""


def deadlines_disabled() -> bool:
    """Whether ``BACKUP_OPS_DISABLE_DEADLINES`` asks to leave the alert off."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def late_backup_alert(config: BackupConfig) -> DeadlineAlert | None:
    """``backup_daily``'s ``deadline=``: the alert for ``backup.deadline_minutes``, or None when it is off."""
    minutes = config.backup.deadline_minutes
    if not minutes or deadlines_disabled():
        return None
    return backup_late_alert(config.backup.name, timedelta(minutes=minutes))


def backup_late_alert(backup_name: str, interval: timedelta) -> DeadlineAlert:
    """A Deadline Alert ``interval`` after a run was queued that awaits ``notify_backup_late`` in the triggerer."""
    # airflow.sdk exports these lazily; mypy sees them where they are defined.
    from airflow.sdk.definitions.callback import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=interval,
        # Only names: the triggerer reads the config (and every secret) itself.
        callback=AsyncCallback(notify_backup_late, kwargs={"backup_name": backup_name}),
        name=ALERT_NAME,
    )


async def notify_backup_late(backup_name: str, context: Mapping[str, Any] | None = None) -> None:
    """Send ``backup_late`` for a run that is still going past its deadline; runs in the triggerer.

    Does nothing for a run that has ended (3.3.2 fires deadlines of failed runs too), and never
    raises for a delivery problem: deliver() logs a channel that cannot deliver. Returns None,
    since the triggerer cannot store a dict.
    """
    from backup_ops.adapters.notify import deliver
    from backup_ops.core.config import load_config
    from backup_ops.core.errors import BackupError

    dag_run: Mapping[str, Any] = (context or {}).get("dag_run") or {}
    deadline: Mapping[str, Any] = (context or {}).get("deadline") or {}
    run_id, state = str(dag_run.get("dag_run_id") or "(unknown run)"), str(dag_run.get("state") or "unknown")
    if state not in UNFINISHED:
        log.info("Backup %s: run %s is %s, so its passed deadline is no news (apache/airflow#60927); no backup_late "
                 "sent", backup_name, run_id, state)
        return None
    try:
        config = load_config()
    except BackupError as exc:
        log.error("Backup %s: run %s is late, but backup_late cannot be sent: %s", backup_name, run_id, exc)
        return None
    if config.backup.name != backup_name:
        log.warning("Backup %s: the triggerer's config (%s) is for backup %s; its notification settings are used",
                    backup_name, config.source_path, config.backup.name)
    notification = late_notification(config, backup_name, dag_run, deadline)
    conf = dag_run.get("conf") or {}
    disabled = bool(conf.get("disable_notifications")) if isinstance(conf, Mapping) else False
    channels = await asyncio.to_thread(deliver, config, notification, disabled=disabled)
    log.warning("%s Sent on: %s", notification.summary, ", ".join(channels) or "no channel")
    return None


def late_notification(config: BackupConfig, backup_name: str, dag_run: Mapping[str, Any],
                      deadline: Mapping[str, Any]) -> Notification:
    """The ``backup_late`` notification for a run still going past its deadline (the deadline context as given)."""
    dag_id, run_id = str(dag_run.get("dag_id") or "backup_daily"), str(dag_run.get("dag_run_id") or "(unknown run)")
    state = str(dag_run.get("state") or "unknown")
    queued_at, due = _moment(dag_run.get("queued_at")), _moment(deadline.get("deadline_time"))
    allowed = f" ({_duration(due - queued_at)} after it was queued)" if queued_at and due else ""
    summary = (
        f"Backup {backup_name} is late: run {run_id} of {dag_id}, queued at {_text(queued_at)}, is still {state} past "
        f"its deadline {_text(due)}{allowed}; look at its tasks in the Airflow UI for one that hangs (a dump or an "
        f"upload), waits for a worker or a slot of pool backup_ops_dumps, or for an earlier run it queues behind."
    )
    started = _moment(dag_run.get("start_date"))
    details = (f"Run {run_id} started at {_text(started)}." if started else f"Run {run_id} has not started yet.",
               "The run goes on; its own outcome is notified when it ends (docs/runbook.md: When the late-backup "
               "alert fires).")
    return Notification(event="backup_late", application=config.backup.name, backup_name=backup_name,
                        summary=summary, details=details, dag_id=dag_id, run_id=run_id)


def _moment(value: Any) -> datetime | None:
    """A UTC datetime from the context's ISO strings (or datetimes); None when absent or unreadable."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC" if moment else "(unknown)"


def _duration(delta: timedelta) -> str:
    seconds = round(delta.total_seconds())
    if seconds % 60:
        return f"{seconds} seconds"
    minutes = seconds // 60
    return f"{minutes} minute{'s' if minutes != 1 else ''}"
