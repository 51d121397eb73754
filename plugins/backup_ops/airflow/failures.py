"""A run's failed tasks and their causes, carried through Airflow for the run's one notification.

A task that fails for good pushes its cause to its own XCom under ``FAILURE_KEY``
(``record_task_failure``, every task's ``on_failure_callback``); the run's final task
(``finalize`` / ``report``, trigger rule ALL_DONE) reads the run's task states and pulls that
XCom from each failed task, on whatever worker it ran. Nothing is written to a worker's disk.

Verified on Airflow 3.3.2: an XCom pushed by a failing task (from its body or its
``on_failure_callback``) is kept after the failure, and a retry starts by clearing the XComs of
the try before, so a task that failed and then succeeded leaves no cause behind. The callback
runs once, when the task fails for good, so a run reports each task once however many retries
it took, like laravel-backup's single BackupHasFailed.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

FAILURE_KEY = "failure"
"""The XCom key of a failed task's cause: ``{"task", "map_index", "error"}``."""
MAX_CAUSE = 2000
"""Characters of a cause kept: a sentence, not a dump of a library's output."""
NOT_RECORDED = ("its cause was not recorded (the task was killed, ran out of memory or lost its worker before "
                "its failure callback ran); see its task log.")


def record_task_failure(context: Mapping[str, Any]) -> None:
    """``on_failure_callback``: push the task's one-sentence cause to its XCom for the run's notification."""
    ti = context["ti"]
    error = context.get("exception")
    cause = str(error) if error is not None else "failed"
    try:
        ti.xcom_push(key=FAILURE_KEY, value={"task": ti.task_id, "map_index": getattr(ti, "map_index", -1),
                                             "error": cause[:MAX_CAUSE]})
    except Exception:  # a callback must never hide the task's own failure
        log.warning("Could not record the failure of %s for notification", ti.task_id, exc_info=True)


def read_failures(ti: Any) -> list[dict[str, Any]]:
    """The causes of the tasks of ``ti``'s run that failed, in the DAG's task order (upstream_failed ones are not).

    A failed task that recorded nothing (killed before its callback ran) gets NOT_RECORDED as its cause.
    If Airflow cannot be asked, the run still reports, naming no cause: [] and a logged warning.
    """
    try:
        return _read_failures(ti)
    except Exception as exc:  # the run's one notification must still go out
        log.warning("Could not read the causes of this run's failed tasks from Airflow: %s", exc)
        return []


def _read_failures(ti: Any) -> list[dict[str, Any]]:
    dag_tasks = list(ti.task.dag.task_ids)
    states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id]).get(ti.run_id, {})
    failed = sorted((_task_instance(key, dag_tasks) for key, state in states.items() if state == "failed"),
                    key=lambda task: (dag_tasks.index(task[0]) if task[0] in dag_tasks else len(dag_tasks), task[1]))
    failures = []
    for task_id, map_index in failed:
        note = ti.xcom_pull(task_ids=task_id, key=FAILURE_KEY, map_indexes=map_index)
        if not isinstance(note, Mapping) or "error" not in note:
            note = {"task": task_id, "map_index": map_index, "error": NOT_RECORDED}
        failures.append(dict(note))
    return failures


def _task_instance(key: str, dag_tasks: Sequence[str]) -> tuple[str, int]:
    """``get_task_states`` names a mapped task instance ``<task_id>_<map index>``: split it back."""
    if key in dag_tasks:
        return key, -1
    task_id, _, index = key.rpartition("_")
    return (task_id, int(index)) if task_id in dag_tasks and index.isdigit() else (key, -1)


def failure_lines(failures: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per failed task: ``dump_database[0]: <cause>``."""
    return [f"{label(note)}: {note['error']}" for note in failures]


def label(note: Mapping[str, Any]) -> str:
    """``dump_database[0]`` for a mapped task instance, ``plan`` for a plain one."""
    index = note.get("map_index", -1)
    return str(note["task"]) + (f"[{index}]" if index is not None and index >= 0 else "")
