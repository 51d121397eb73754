"""Pytest fixtures for a real PostgreSQL on loopback: one server per session, a fresh sample database per test.

The server is ``devtools.pgserver.EmbeddedPostgres`` (TCP, scram-sha-256, so wrong passwords fail).
The sample schema is loaded once into a template database; each test gets its own copy made with
``CREATE DATABASE ... TEMPLATE``, which is much faster than loading again, and dropped afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from backup_ops.adapters.postgres.target import PgTarget
from devtools.pgserver import EmbeddedPostgres
from devtools.sample_data import load_sample_data

SAMPLE_SCALE = 0.05  # about 5,000 rows: enough to exercise every table, loads in a fraction of a second
TEMPLATE_DB = "sample_template"
APP_CONN_ID = "app_db"

_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL server started once per test session."""
    with EmbeddedPostgres() as server:
        yield server


@pytest.fixture(scope="session")
def sample_template(pg_server: EmbeddedPostgres) -> str:
    """Name of a database holding the sample data, used only as a template."""
    pg_server.create_database(TEMPLATE_DB)
    with pg_server.connect(TEMPLATE_DB) as conn:
        load_sample_data(conn, scale=SAMPLE_SCALE)
    # CREATE DATABASE ... TEMPLATE fails while anyone is connected to the template: forbid connections.
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{TEMPLATE_DB}" WITH ALLOW_CONNECTIONS false')
    return TEMPLATE_DB


@pytest.fixture
def app_db(pg_server: EmbeddedPostgres, sample_template: str) -> Iterator[str]:
    """A fresh database with the sample data, dropped after the test; yields its name."""
    name = f"app_{next(_names)}"
    pg_server.create_database(name, template=sample_template)
    yield name
    pg_server.drop_database(name)


@pytest.fixture
def pg_target(pg_server: EmbeddedPostgres, app_db: str) -> PgTarget:
    """How to reach ``app_db`` as the superuser, as the dump operator would build it."""
    return PgTarget(host=pg_server.host, port=pg_server.port, user=pg_server.superuser,
                    password=pg_server.password, dbname=app_db)


@pytest.fixture
def app_db_connection(pg_server: EmbeddedPostgres, app_db: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Expose ``app_db`` as the Airflow connection ``app_db`` (``AIRFLOW_CONN_APP_DB``); returns the conn id."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{APP_CONN_ID.upper()}", pg_server.conn_uri(app_db))
    return APP_CONN_ID
