"""A run's failed tasks and their causes, kept for the run's one notification.

Each task's ``on_failure_callback`` appends its error to a small notes file; the run's final
task (``finalize`` / ``report``, trigger rule ALL_DONE) reads the notes and sends one mail, as
laravel-backup sends one BackupHasFailed per run however many retries it took.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from backup_ops.core.config import BackupConfig, load_config
from backup_ops.core.models import run_folder_name

log = logging.getLogger(__name__)

NOTES_DIR = ".run-notes"


def notes_file(config: BackupConfig, dag_id: str, run_id: str) -> Path:
    """Where a run's failure notes live (below the staging directory, outside any run's staging folder)."""
    return config.backup.staging_directory / NOTES_DIR / f"{run_folder_name(dag_id, run_id)}.jsonl"


def record_task_failure(context: Mapping[str, Any]) -> None:
    """``on_failure_callback``: remember which task failed and why, for the run's single notification.

    A callback receives only the task's context, so it reads the config itself, as a task does.
    """
    ti = context["ti"]
    error = context.get("exception")
    try:
        file = notes_file(load_config(), ti.dag_id, ti.run_id)
        file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        note = {"task": ti.task_id, "map_index": getattr(ti, "map_index", -1),
                "error": str(error) if error is not None else "failed"}
        with open(file, "a", encoding="utf-8") as out:
            out.write(json.dumps(note) + "\n")
    except Exception:  # a callback must never hide the task's own failure
        log.warning("Could not record the failure of %s for notification", ti.task_id, exc_info=True)


def read_failures(config: BackupConfig, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """The failures recorded for a run, oldest first, then forget them."""
    file = notes_file(config, dag_id, run_id)
    if not file.exists():
        return []
    notes = [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    file.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # other runs' notes may still be there
        file.parent.rmdir()
    return notes


def failure_lines(failures: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per failed task: ``dump_database[0]: <cause>``."""
    lines = []
    for note in failures:
        index = note.get("map_index", -1)
        label = note["task"] + (f"[{index}]" if index is not None and index >= 0 else "")
        lines.append(f"{label}: {note['error']}")
    return lines
