"""Failure causes travel through Airflow (XCom), tried on a real dag.test() run of a small DAG.

The DAG has every case the run's last task must tell apart: a task that failed on every try, one
that failed once and then succeeded, a failed mapped task instance, a task that failed without its
failure callback (as one killed by SIGKILL does), and one that never ran because its upstream failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from backup_ops.airflow.failures import FAILURE_KEY, NOT_RECORDED, failure_lines

DAG_SOURCE = """
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import TriggerRule, dag, task

from backup_ops.airflow.failures import read_failures, record_task_failure


@dag(dag_id="failure_causes", schedule=None, start_date=datetime(2024, 1, 1, tzinfo=UTC), catchup=False,
     default_args={"retries": 1, "retry_delay": timedelta(0), "on_failure_callback": record_task_failure})
def failure_causes() -> None:
    @task
    def always(ti: Any = None) -> None:
        raise ValueError(f"Destination offsite: try {ti.try_number} failed.")

    @task
    def flaky(ti: Any = None) -> str:
        if ti.try_number == 1:
            raise ValueError("a first try that a retry fixed")
        return "done"

    @task(retries=0)
    def mapped(x: int) -> int:
        if x == 1:
            raise ValueError(f"Database {x} is gone.")
        return x

    @task(retries=0, on_failure_callback=None)  # fails like a task killed before its callback ran
    def silent() -> None:
        raise ValueError("this cause is never recorded")

    @task
    def after(value: Any) -> None:
        return None

    @task(trigger_rule=TriggerRule.ALL_DONE, retries=0, on_failure_callback=None)
    def collect(ti: Any = None) -> list:
        return read_failures(ti)

    failed = always()
    [failed, flaky(), mapped.expand(x=[0, 1, 2]), silent(), after(failed)] >> collect()


failure_causes()
"""


def causes_dag(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The DAG above, parsed from its own DAG folder (dag.test() runs only DAGs it finds in a bundle)."""
    from airflow.dag_processing.dagbag import DagBag

    (folder / "failure_causes.py").write_text(DAG_SOURCE)
    local = "airflow.dag_processing.bundles.local.LocalDagBundle"
    monkeypatch.setenv("AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST", json.dumps([
        {"name": "dags-folder", "classpath": local, "kwargs": {}},
        {"name": "failure-causes", "classpath": local, "kwargs": {"path": str(folder)}},
    ]))
    bag = DagBag(dag_folder=str(folder / "failure_causes.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["failure_causes"]


def test_the_last_task_reads_each_failed_task_once_with_its_last_cause(
        airflow_db: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    run = causes_dag(tmp_path, monkeypatch).test()

    states = {(ti.task_id, ti.map_index): (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert states[("always", -1)] == ("failed", 2) and states[("flaky", -1)] == ("success", 2)
    assert states[("after", -1)][0] == "upstream_failed"
    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id="failure_causes", run_id=run.run_id).all()
        xcoms = {(row.task_id, row.map_index, row.key): XComModel.deserialize_value(row) for row in rows}
    failures = xcoms[("collect", -1, "return_value")]
    assert failures == [
        {"task": "always", "map_index": -1, "error": "Destination offsite: try 2 failed."},
        {"task": "mapped", "map_index": 1, "error": "Database 1 is gone."},
        {"task": "silent", "map_index": -1, "error": NOT_RECORDED},
    ]
    assert failure_lines(failures)[1] == "mapped[1]: Database 1 is gone."
    # The first try's cause of the task that then succeeded was cleared by its retry.
    assert ("flaky", -1, FAILURE_KEY) not in xcoms
