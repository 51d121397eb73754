"""backup_monitor: laravel-backup's ``backup:monitor``, one mapped task per destination, every 6 hours.

Wiring only; the work is ``backup_ops.airflow.monitor_steps.check_destination_health``. The config is
read at parse time (a local YAML file, no Variables or Connections) so a bad value shows as an
import error in the Airflow UI.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, dag

from backup_ops.airflow.defaults import task_defaults
from backup_ops.airflow.fail_fast import step
from backup_ops.airflow.monitor_steps import check_destination_health
from backup_ops.core.config import load_config

CONFIG = load_config()
DESTINATIONS = CONFIG.backup.destination.names()
MONITOR = CONFIG.monitor


def _limit(value: object, unit: str, key: str) -> str:
    return f"{value} {unit}" if value is not None else f"off ({key}: null)"


DOC = f"""
### backup_monitor — `{CONFIG.backup.name}`

**check_health** (one task per destination: {", ".join(DESTINATIONS)}) runs these checks, in order,
measured from the wall clock when the task runs:

1. `reachable`: the destination can be listed (when it cannot, the other checks are skipped);
2. `max_age_days`: the newest backup is younger than {MONITOR.max_age_days:g} day(s);
3. `max_storage_mb`: the backups use at most {_limit(MONITOR.max_storage_mb, "MB", "max_storage_mb")};
4. `newest_intact`: the newest archive matches its receipt (size, SHA-256) and, on a local disk{" and on S3"
   if MONITOR.deep_verify else ""}, every member decrypts and matches its manifest;
5. `restore_drill_fresh`: a restore drill from this destination succeeded within
   {_limit(MONITOR.restore_drill_max_age_days, "days", "restore_drill_max_age_days")} (skipped until the first drill);
6. custom checks: {", ".join(f"`{c.class_path}`" for c in MONITOR.custom_checks) or "none"}.

Every failure is collected. Each task logs one line per check, sends `unhealthy_backup_found` or
`healthy_backup_found`, and returns its health report as XCom; an unhealthy destination fails its
task (after notifying). Config: `{CONFIG.source_path}`. What to do when a check fails: `docs/monitoring.md`.
"""


@dag(
    dag_id="backup_monitor",
    schedule=CronTriggerTimetable(MONITOR.schedule, timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["backup", "backup-ops", "monitor", CONFIG.backup.name],
    doc_md=DOC,
    default_args=task_defaults(MONITOR.tries, MONITOR.retry_delay),
    params={
        "disable_notifications": Param(False, type="boolean", description="Send no notifications for this run."),
    },
    render_template_as_native_obj=True,
)
def backup_monitor() -> None:
    # No failure callback: the task sends its own notification before it fails, and no run-level
    # task reads failure causes in this DAG.
    @step(map_index_template="{{ task.op_kwargs['destination'] }}", on_failure_callback=None)
    def check_health(destination: str, params: Any = None, ti: Any = None) -> dict[str, Any]:
        return check_destination_health(CONFIG, destination, datetime.now(UTC), ti=ti,
                                        disable_notifications=bool((params or {}).get("disable_notifications")))

    check_health.expand(destination=DESTINATIONS)


backup_monitor()
