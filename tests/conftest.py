"""Test session setup: an isolated AIRFLOW_HOME, set before anything imports Airflow.

Real services (PostgreSQL, S3 API, SMTP) are started by the fixture modules below, on loopback.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="backup-ops-airflow-"))

os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "True"
os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "INFO"
os.environ.setdefault("BACKUP_OPS_CONFIG", str(ROOT / "include" / "backup_config.yaml"))
# dag.test() crashes on DAGs with a deadline in Airflow 3.3.2 (apache/airflow#73428): backup_daily's
# late-backup alert stays off here; tests/integration/test_deadline_alert.py proves it with a real scheduler.
os.environ["BACKUP_OPS_DISABLE_DEADLINES"] = "1"

pytest_plugins = ["tests.fixtures_pg", "tests.fixtures_s3", "tests.fixtures_smtp"]


_PASSED: list[bool] = []


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _PASSED.append(exitstatus == 0)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the session's AIRFLOW_HOME once everything stopped, when every test passed (after a failure its task
    logs stay to be read)."""
    if _PASSED and all(_PASSED):
        shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)
