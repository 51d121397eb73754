"""Fixtures for real Airflow runs (``dag.test()``) against a fresh SQLite metadata DB."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated, empty Airflow metadata DB in the session's temporary AIRFLOW_HOME."""
    from airflow.utils import db

    db.resetdb()
    yield
