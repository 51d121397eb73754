"""restore_drill: prove a backup restores: fetch, verify, extract, restore into a scratch database, validate, report.

Wiring only; every step lives in ``backup_ops.airflow.drill_steps`` and receives the config from here.
The config is read at parse time (a local YAML file, no Variables or Connections) so a bad value
shows as an import error in the Airflow UI. Triggered by hand from the trigger form (or on
``restore_drill.schedule``); ``backup_monitor``'s ``restore_drill_fresh`` check nags when drills are overdue.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, TriggerRule, dag

from backup_ops.airflow import drill_steps as steps
from backup_ops.airflow.defaults import task_defaults
from backup_ops.airflow.fail_fast import step
from backup_ops.core.config import load_config

CONFIG = load_config()
DESTINATIONS = CONFIG.backup.destination.names()
DRILL = CONFIG.restore_drill

DOC = f"""
### restore_drill — `{CONFIG.backup.name}`

Proves that a backup restores, and measures how long it takes (the RTO):

1. **select** the backup (`latest` or an archive name) on the chosen destination;
2. **fetch** it: read in place on a local disk (mounted on every worker), or streamed from S3 into a 0700 working
   directory below `{CONFIG.backup.staging_directory}` on this worker; a later phase on a worker without that copy
   fetches it again (logged, checked against the SHA-256 verify proved);
3. **verify** size and SHA-256 against its receipt, then every member against the manifest (this proves the
   password);
4. **extract**: every entry is checked as extraction would (absolute paths, `..`, links, devices and unlisted
   members refused) before the databases are restored, writing nothing; skipped when `restore_files` is off;
5. **restore** each database into a scratch database `backup_drill_<YYYYmmddHHMMSS>` on
   {f"Airflow connection `{DRILL.target_conn_id}`" if DRILL.target_conn_id else "its own server"}: roles and
   database settings first, then the dump (`psql`, one transaction; custom dumps `pg_restore -j {DRILL.jobs}`);
6. **validate** every table: exact row count and column set from the manifest
   (`exact_checks: {DRILL.exact_checks}`), plus `restore_drill.expectations` in Great Expectations
   ({len(DRILL.expectations)} table(s) configured);
7. **verify_files**: extracts the files, checks every one's SHA-256 against the manifest and removes them, in one
   task: no plaintext outlives the task that wrote it, whichever worker runs the next;
8. **report**: the drill report (per-phase seconds, RTO, database sizes, validation summary) is written to the
   destination under `{CONFIG.backup.name}/restore-drills/` and returned as XCom;
9. **teardown** (always): drops the scratch databases and its worker's working directory unless `keep_scratch`,
   sends `restore_drill_succeeded` / `restore_drill_failed`, and fails the run when the drill failed.

Each phase's XCom names the worker it ran on (`host`) and whether it had the archive (`archive_copy`).

The source database is never written to. Errors a retry cannot fix (a wrong password, a tampered archive, an
unsafe member, data that differs from the manifest) fail at once. Config: `{CONFIG.source_path}`.
"""


@dag(
    dag_id=steps.DAG_ID,
    schedule=CronTriggerTimetable(DRILL.schedule, timezone="UTC") if DRILL.schedule else None,
    start_date=datetime(2024, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["backup", "backup-ops", "restore", CONFIG.backup.name],
    doc_md=DOC,
    default_args=task_defaults(DRILL.tries, DRILL.retry_delay),
    params={
        "destination": Param(DESTINATIONS[0], type="string", enum=DESTINATIONS,
                             description="The destination to fetch the backup from."),
        "backup": Param("latest", type="string", minLength=1,
                        description="'latest', or an archive name such as 2026-11-26-02-00-00.zip."),
        "target_conn_id": Param(DRILL.target_conn_id or "", type="string",
                                description="Airflow connection of the server for the scratch database "
                                "(empty: each database's own server)."),
        "restore_files": Param(True, type="boolean", description="Also extract and verify the application files."),
        "keep_scratch": Param(False, type="boolean",
                              description="Keep the scratch database(s), the restored files and the archive copy "
                              "for inspection (the task logs name the workers that hold them)."),
        "disable_notifications": Param(False, type="boolean", description="Send no notifications for this run."),
    },
    render_template_as_native_obj=True,
)
def restore_drill() -> None:
    @step()
    def select(params: Any = None, dag_run: Any = None) -> dict[str, Any]:
        return steps.select(CONFIG, dict(params or {}), dag_run.run_id)

    @step()
    def fetch(selected: dict[str, Any]) -> dict[str, Any]:
        return steps.fetch(CONFIG, selected)

    @step()
    def verify(selected: dict[str, Any], fetched: dict[str, Any]) -> dict[str, Any]:
        return steps.verify(CONFIG, selected, fetched)

    @step()
    def extract(selected: dict[str, Any], fetched: dict[str, Any], verified: dict[str, Any]) -> dict[str, Any]:
        return steps.extract(CONFIG, selected, fetched, verified)

    @step()
    def restore(selected: dict[str, Any], fetched: dict[str, Any], verified: dict[str, Any]) -> dict[str, Any]:
        return steps.restore(CONFIG, selected, fetched, verified)

    @step()
    def validate(selected: dict[str, Any], fetched: dict[str, Any], verified: dict[str, Any],
                 restored: dict[str, Any], ti: Any = None) -> dict[str, Any]:
        return steps.validate(CONFIG, selected, fetched, verified, restored, ti=ti)

    @step()
    def verify_files(selected: dict[str, Any], fetched: dict[str, Any], verified: dict[str, Any],
                     extracted: dict[str, Any]) -> dict[str, Any]:
        return steps.verify_files(CONFIG, selected, fetched, verified, extracted)

    # Pulled, not passed: failed phases leave XComs missing, and these must still run to report them.
    @step(trigger_rule=TriggerRule.ALL_DONE)
    def report(ti: Any = None, params: Any = None) -> dict[str, Any]:
        return steps.report(CONFIG, ti, dict(params or {}))

    # Its own failure is the drill's verdict, already notified: not recorded again.
    @step(trigger_rule=TriggerRule.ALL_DONE, retries=0, on_failure_callback=None)
    def teardown(ti: Any = None, params: Any = None) -> dict[str, Any]:
        return steps.teardown(CONFIG, ti, dict(params or {}))

    # XComArgs are typed Any: TaskFlow's call signatures are not expressible to mypy.
    selected: Any = select()
    fetched: Any = fetch(selected)
    verified: Any = verify(selected, fetched)
    extracted: Any = extract(selected, fetched, verified)
    restored: Any = restore(selected, fetched, verified)
    validated: Any = validate(selected, fetched, verified, restored)
    files: Any = verify_files(selected, fetched, verified, extracted)
    extracted >> restored
    validated >> files
    reported: Any = report()
    phases = [selected, fetched, verified, extracted, restored, validated, files]
    phases >> reported
    [*phases, reported] >> teardown()


restore_drill()
