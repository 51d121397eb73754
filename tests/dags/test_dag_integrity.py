"""Every DAG file imports cleanly, fast, without touching Variables/Connections, and follows our conventions."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted(p for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))


WARMUP_DAG = """
from datetime import datetime
from airflow.sdk import Asset, Param, TriggerRule, dag, task

@dag(dag_id="warmup", schedule=None, start_date=datetime(2024, 1, 1), params={"x": Param(1, type="integer")})
def warmup():
    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[Asset(name="warmup")])
    def a(x: int) -> int:
        return x

    a.expand(x=[1])

warmup()
"""


@pytest.fixture(scope="module")
def dagbag_and_accesses(tmp_path_factory):
    """Parse the dags folder with Variable/Connection lookups booby-trapped.

    A trivial DAG using the same Airflow APIs is parsed first, so the timing measures what
    our files add, not Airflow's own one-off lazy imports that every DAG file shares.
    """
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import BaseHook, Connection, Variable

    warmup = tmp_path_factory.mktemp("warmup") / "warmup_dag.py"
    warmup.write_text(WARMUP_DAG)
    assert not DagBag(dag_folder=str(warmup)).import_errors

    accesses: list[str] = []

    def trap(name):
        def record(*args, **kwargs):
            accesses.append(f"{name}{args}")
            raise AssertionError(f"{name} called at parse time")
        return record

    mp = pytest.MonkeyPatch()
    mp.setattr(Variable, "get", staticmethod(trap("Variable.get")))
    mp.setattr(Connection, "get", staticmethod(trap("Connection.get")))
    mp.setattr(BaseHook, "get_connection", staticmethod(trap("BaseHook.get_connection")))
    try:
        bag = DagBag(dag_folder=str(ROOT / "dags"))
    finally:
        mp.undo()
    return bag, accesses


def test_there_are_dag_files():
    assert [p.name for p in DAG_FILES], "no DAG files found in dags/"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_imports_without_errors(dagbag_and_accesses, dag_file):
    bag, _ = dagbag_and_accesses
    errors = {Path(k).name: v for k, v in bag.import_errors.items()}
    assert dag_file.name not in errors, errors.get(dag_file.name)


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[p.name for p in DAG_FILES])
def test_dag_file_parses_fast(dagbag_and_accesses, dag_file):
    bag, _ = dagbag_and_accesses
    stats = {Path(s.file).name: s.duration for s in bag.dagbag_stats}
    assert dag_file.name in stats
    assert stats[dag_file.name].total_seconds() < 0.5, f"{dag_file.name} took {stats[dag_file.name]}"


def test_no_variable_or_connection_access_at_parse_time(dagbag_and_accesses):
    _, accesses = dagbag_and_accesses
    assert accesses == []


def test_every_dag_has_tags_owner_and_retries(dagbag_and_accesses):
    bag, _ = dagbag_and_accesses
    assert bag.dags, "no DAGs were parsed"
    for dag_id, dag in bag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no doc_md"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
        assert dag.default_args.get("retries", 0) >= 1, f"{dag_id} has no retries in default_args"


def test_backup_dags_run_one_at_a_time(dagbag_and_accesses):
    bag, _ = dagbag_and_accesses
    for dag_id in ("backup_daily", "backup_cleanup", "backup_monitor", "restore_drill"):
        if dag_id in bag.dags:
            dag = bag.dags[dag_id]
            assert dag.max_active_runs == 1, dag_id
            assert dag.catchup is False, dag_id


def test_backup_monitor_shape(dagbag_and_accesses):
    bag, _ = dagbag_and_accesses
    dag = bag.dags["backup_monitor"]
    assert dag.timetable.expression == "0 */6 * * *"
    assert set(dag.params.keys()) == {"disable_notifications"}
    task = dag.task_dict["check_health"]
    assert task.map_index_template == "{{ task.op_kwargs['destination'] }}"
    assert task.retries >= 1 and task.on_failure_callback in (None, [])  # the task notifies itself


def test_backup_daily_shape(dagbag_and_accesses):
    bag, _ = dagbag_and_accesses
    dag = bag.dags["backup_daily"]
    assert dag.timetable.expression == "0 2 * * *"
    assert set(dag.params.keys()) == {"only_db", "only_files", "db_names", "only_to_destination",
                                      "disable_notifications"}
    assert dag.task_dict["remove_staging"].is_teardown


def test_restore_drill_shape(dagbag_and_accesses):
    bag, _ = dagbag_and_accesses
    dag = bag.dags["restore_drill"]
    assert type(dag.timetable).__name__ == "NullTimetable", "triggered by hand unless restore_drill.schedule is set"
    assert set(dag.params.keys()) == {"destination", "backup", "target_conn_id", "restore_files", "keep_scratch",
                                      "disable_notifications"}
    assert dag.params["backup"] == "latest" and dag.params["restore_files"] is True
    assert dag.params["keep_scratch"] is False and dag.params["destination"] == "local"
    assert [t.task_id for t in dag.topological_sort()] == [
        "select", "fetch", "verify", "extract", "restore", "validate", "verify_files", "report", "teardown"]
    report, teardown = dag.task_dict["report"], dag.task_dict["teardown"]
    assert report.trigger_rule == teardown.trigger_rule == "all_done"
    assert set(teardown.upstream_task_ids) == set(dag.task_ids) - {"teardown"}, "teardown waits for every task"
    assert teardown.retries == 0 and teardown.on_failure_callback in (None, [])
    assert dag.task_dict["validate"].retries >= 1  # from restore_drill.tries; permanent faults fail at once


def test_bad_config_is_an_import_error(tmp_path, monkeypatch):
    from airflow.dag_processing.dagbag import DagBag

    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "include" / "backup_config.yaml").read_text().replace(
        "compression_level: 6", "compression_level: 12"))
    monkeypatch.setenv("BACKUP_OPS_CONFIG", str(bad))
    bag = DagBag(dag_folder=str(ROOT / "dags" / "backup_daily.py"))
    assert bag.import_errors, "a bad config must surface as an import error"
    (message,) = bag.import_errors.values()
    assert "backup.destination.compression_level must be a whole number 0–9, got 12." in message
