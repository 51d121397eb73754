"""backup_cleanup: apply the retention policy on every destination, one mapped task per destination.

Wiring only; the work is ``backup_ops.airflow.operators.BackupCleanupOperator``. The config is read
at parse time (a local YAML file, no Variables or Connections) so a bad policy shows as an import
error in the Airflow UI instead of failing at 01:00.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag, task

from backup_ops.airflow.cleanup_steps import finish_cleanup, retention_policy
from backup_ops.airflow.defaults import task_defaults
from backup_ops.airflow.operators import BackupCleanupOperator
from backup_ops.core.config import load_config

CONFIG = load_config()
DESTINATIONS = CONFIG.backup.destination.names()
# Built here so an invalid policy is an import error, and so the docs show it in words.
POLICY = retention_policy(CONFIG)

DOC = f"""
### backup_cleanup — `{CONFIG.backup.name}`

**Policy:** {POLICY.describe()}

1. **cleanup** (one task per destination: {", ".join(DESTINATIONS)}): list the `.zip` backups, check
   the newest against their receipts (a damaged archive is kept for a human and protects nothing),
   plan with `backup_ops.core.retention.plan_cleanup` measured from the run's logical date, log every
   decision with its rule, delete each planned archive together with its receipt, remove what failed
   publishes left behind more than a day ago (receipts without archives, incomplete uploads), log the
   used storage after cleanup. Non-zip files are never touched. Trigger with `dry_run` to log the plan
   and delete nothing.
2. **report** (after every cleanup task has finished): one line per destination; fails the run
   naming each failed cleanup task with its cause, and each damaged archive found (a failing
   destination never stops the others).

Re-running a past date decides the same as that day did. Config: `{CONFIG.source_path}`.
Retention explained: `docs/retention.md`.
"""


@dag(
    dag_id="backup_cleanup",
    # A trigger timetable, whatever [scheduler] create_cron_data_intervals says, so the logical date,
    # the data interval end and the moment the run was due are one instant: retention's "now".
    schedule=CronTriggerTimetable(CONFIG.cleanup.schedule, timezone="UTC"),
    # Airflow creates no task instances for runs dated before start_date; an early one lets
    # `airflow dags test backup_cleanup <past date>` replay any past day. catchup=False keeps
    # the scheduler from backfilling it.
    start_date=datetime(2000, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["backup", "backup-ops", "cleanup", CONFIG.backup.name],
    doc_md=DOC,
    default_args=task_defaults(CONFIG.cleanup.tries, CONFIG.cleanup.retry_delay),
    params={
        "dry_run": Param(False, type="boolean", description="Log what would be deleted, and why; delete nothing."),
    },
    render_template_as_native_obj=True,
)
def backup_cleanup() -> None:
    cleaned = BackupCleanupOperator.partial(
        task_id="cleanup",
        dry_run="{{ params.dry_run }}",
        map_index_template="{{ task.destination }}",
    ).expand(destination=DESTINATIONS)

    # ALL_DONE downstream of every mapped cleanup task: runs once each has finished, whatever its state.
    # Its own failure is the run's summary, already in the notification it sends: not recorded again.
    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0, on_failure_callback=None)
    def report(ti: Any = None) -> dict[str, Any]:
        # Every summary that exists (a failed destination has none); each names its destination.
        summaries = ti.xcom_pull(task_ids="cleanup", default=None)
        # What really happened to each cleanup task (cleanup_<map index>: state), to name the failed ones.
        states = ti.get_task_states(dag_id=ti.dag_id, task_ids=["cleanup"], run_ids=[ti.run_id]).get(ti.run_id, {})
        # Each failed task's cause, from its XCom (written by its failure callback on whatever worker it ran).
        from backup_ops.airflow.failures import read_failures

        return finish_cleanup(CONFIG, ti.dag_id, ti.run_id, DESTINATIONS, summaries, states, read_failures(ti))

    cleaned >> report()


backup_cleanup()
