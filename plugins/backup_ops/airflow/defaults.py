"""``default_args`` shared by the backup-ops DAGs: owner, retries with backoff, failure recording."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from backup_ops.airflow.failures import record_task_failure


def task_defaults(tries: int, retry_delay: int) -> dict[str, Any]:
    """Task defaults for a DAG whose config section sets ``tries`` and ``retry_delay`` (seconds)."""
    return {
        "owner": "backup-ops",
        "retries": tries - 1,
        "retry_delay": timedelta(seconds=retry_delay),
        "retry_exponential_backoff": retry_delay > 0,
        "on_failure_callback": record_task_failure,
    }
