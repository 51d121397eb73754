"""backup_daily: dump every database, collect files, build one verified archive, publish everywhere.

Wiring only; every step lives in ``backup_ops.airflow.backup_steps`` and receives the config from here.
The config is read at parse time (a local YAML file, no Variables or Connections) so a bad config
shows as an import error in the Airflow UI instead of failing at 02:00.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import Asset, CronTriggerTimetable, Param, TriggerRule, dag

from backup_ops.airflow import backup_steps as steps
from backup_ops.airflow import run_outcome, staging
from backup_ops.airflow.deadline import late_backup_alert
from backup_ops.airflow.defaults import task_defaults
from backup_ops.airflow.fail_fast import step
from backup_ops.airflow.failures import read_failures
from backup_ops.airflow.operators import DumpDatabaseOperator, PublishBackupOperator
from backup_ops.core.config import load_config

CONFIG = load_config()
FILES_QUEUE = {"queue": CONFIG.backup.files_queue} if CONFIG.backup.files_queue else {}
# Name-only: a URI with a custom scheme makes Airflow load every provider's URI handlers at parse time (~0.6 s).
BACKUP_ASSET = Asset(name=steps.asset_name(CONFIG.backup.name), group="backup")

DOC = f"""
### backup_daily — `{CONFIG.backup.name}`

1. **plan**: validates the trigger Params and picks databases, files and destinations;
   **check_databases** / **check_destinations** fail fast (connections, credentials, pg_dump
   version, reachability) before any work starts.
2. **dump_database** (one task per database): `pg_dump` inside an exported REPEATABLE READ
   snapshot; exact row counts taken in the same snapshot.
3. **collect_files**: the configured includes minus excludes.
4. **build_archive**: one zip (`{CONFIG.backup.encryption}`) with the dumps, files and `manifest.json`,
   then opened and checked member by member. It and collect_files read the application's files, on
   queue `{CONFIG.backup.files_queue or "default"}`.
5. **publish** (one task per destination): receipt + atomic copy, then verified where it landed.
6. **finalize**: decides success (see `continue_on_failure`), emits the `{BACKUP_ASSET.name}` asset event.
7. **remove_staging** (teardown of **prepare_staging**): always runs; deletes this run's staging
   (`{CONFIG.backup.staging_location.url}/<run>`; a run that did not reach every destination keeps its
   encrypted archive, so a cleared publish can retry).

Dumps start only after both preflight checks passed, and run in the `{steps.DUMP_POOL}` pool. A
broken destination never withholds the backup from the healthy ones. Errors a retry cannot fix
(config, login, missing database, old pg_dump, missing password, name clash) fail at once.

Destinations: {", ".join(CONFIG.backup.destination.names())}. Config: `{CONFIG.source_path}`.
Runbook: `docs/runbook.md`.
"""


@dag(
    dag_id="backup_daily",
    # Explicit trigger timetable: the same semantics whatever [scheduler] create_cron_data_intervals says.
    schedule=CronTriggerTimetable(CONFIG.backup.schedule, timezone="UTC"),
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=staging.LONGEST_RUN,
    # backup_late when a run is not over backup.deadline_minutes after it was queued (off: None).
    deadline=late_backup_alert(CONFIG),
    tags=["backup", "backup-ops", CONFIG.backup.name],
    doc_md=DOC,
    default_args=task_defaults(CONFIG.backup.tries, CONFIG.backup.retry_delay),
    params={
        "only_db": Param(False, type="boolean", description="Back up the databases only (no files)."),
        "only_files": Param(False, type="boolean", description="Back up the files only (no databases)."),
        "db_names": Param(
            [], type="array", items={"type": "string"},
            description="Only these connection ids from source.databases (empty: all).",
        ),
        "only_to_destination": Param(
            "", type="string",
            description="Publish to this destination only (empty: all). Configured: "
            + ", ".join(CONFIG.backup.destination.names()),
        ),
        "disable_notifications": Param(False, type="boolean", description="Send no notifications for this run."),
    },
    render_template_as_native_obj=True,
)
def backup_daily() -> None:
    @step()
    def prepare_staging(dag_run: Any = None) -> str:
        return staging.prepare_staging(CONFIG, dag_run.dag_id, dag_run.run_id)

    @step(multiple_outputs=True)
    def plan(staging_dir: str, params: Any = None) -> dict[str, Any]:
        return steps.plan(CONFIG, dict(params), staging_dir)

    @step()
    def check_databases(conn_ids: list[str]) -> list[str]:
        return steps.check_databases(CONFIG, conn_ids)

    @step()
    def check_destinations(names: list[str]) -> list[str]:
        return steps.check_destinations(CONFIG, names)

    # Both read the application's files: on backup.files_queue, served by workers that mount them.
    @step(**FILES_QUEUE)
    def collect_files(staging_dir: str, include_files: bool) -> dict[str, Any]:
        return steps.collect_files(CONFIG, staging_dir, include_files)

    @step(trigger_rule=TriggerRule.NONE_FAILED, **FILES_QUEUE)
    def build_archive(plan_result: dict[str, Any], dumps: Any, files: dict[str, Any],
                      dag_run: Any = None) -> dict[str, Any]:
        run = {"dag_id": dag_run.dag_id, "run_id": dag_run.run_id,
               "logical_date": str(dag_run.logical_date) if dag_run.logical_date else ""}
        return steps.build_archive(CONFIG, plan_result, list(dumps or []), files, run)

    # Its own failure is the run's summary, already in the notification it sends: not recorded again.
    @step(trigger_rule=TriggerRule.ALL_DONE, outlets=[BACKUP_ASSET], retries=0, on_failure_callback=None)
    def finalize(ti: Any = None, params: Any = None, outlet_events: Any = None) -> dict[str, Any]:
        # Pulled here, not passed as arguments: upstream failures leave XComs missing, and an
        # ALL_DONE task must still run to report them. Causes come from each failed task's XCom.
        planned_run = ti.xcom_pull(task_ids="plan", default=None)
        summary = run_outcome.finish_run(CONFIG, ti.dag_id, ti.run_id, dict(params or {}), planned_run,
                                         ti.xcom_pull(task_ids="build_archive", default=None),
                                         run_outcome.published_results(ti, planned_run), read_failures(ti))
        outlet_events[BACKUP_ASSET].extra = summary
        return summary

    @step(retries=0, on_failure_callback=None)
    def remove_staging(staging_dir: str, ti: Any = None) -> None:
        planned_run = ti.xcom_pull(task_ids="plan", default=None)
        missing = run_outcome.missing_destinations(planned_run, run_outcome.published_results(ti, planned_run))
        staging.remove_staging(CONFIG, staging_dir, archive=ti.xcom_pull(task_ids="build_archive", default=None),
                               missing_destinations=missing)

    # XComArgs are typed Any: TaskFlow's call signatures are not expressible to mypy.
    staged: Any = prepare_staging()
    planned: Any = plan(staged)
    databases: Any = check_databases(planned["databases"])
    destinations: Any = check_destinations(planned["destinations"])
    dumps: Any = DumpDatabaseOperator.partial(
        task_id="dump_database", staging_dir=planned["staging_dir"], pool=steps.DUMP_POOL,
        map_index_template="{{ task.conn_id }}",
    ).expand(conn_id=databases)
    files: Any = collect_files(planned["staging_dir"], planned["include_files"])
    # Nothing is read from the database or the disk before both preflight checks passed.
    destinations >> [dumps, files]
    databases >> files
    archive: Any = build_archive(planned, dumps.output, files)
    published: Any = PublishBackupOperator.partial(
        task_id="publish", archive=archive, map_index_template="{{ task.destination }}"
    ).expand(destination=destinations)
    removed: Any = remove_staging(staged).as_teardown(setups=staged)
    [planned, databases, destinations, dumps, files, archive, published] >> removed
    done: Any = finalize()
    # finalize reports only when every other task of the run has finished, whatever their states. It
    # sits after the teardown, outside the staging setup's scope, so that a failed prepare_staging
    # (which marks every task in its scope upstream_failed) is still reported.
    [planned, databases, destinations, dumps, files, archive, published, removed] >> done


backup_daily()
