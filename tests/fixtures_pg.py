"""Pytest fixtures for a real PostgreSQL on loopback: one server per session, a fresh sample database per test.

The server is ``devtools.pgserver.EmbeddedPostgres`` (TCP, scram-sha-256, so wrong passwords fail).
The sample schema is loaded once into a template database; each test gets its own copy made with
``CREATE DATABASE ... TEMPLATE``, which is much faster than loading again, and dropped afterwards.
``hba_rejects`` makes the server's pg_hba.conf refuse one database for the length of a test.
``empty_pg_server`` is a second server with nothing on it: the "fresh server" a disaster recovery starts from.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

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
def empty_pg_server() -> Iterator[EmbeddedPostgres]:
    """A second, empty PostgreSQL server (no application roles or databases), as a fresh restore target."""
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


@pytest.fixture
def hba_rejects(pg_server: EmbeddedPostgres) -> Iterator[Callable[[str], None]]:
    """Call with a database name to make pg_hba.conf reject every login to it; restored after the test.

    The server writes its own pg_hba.conf (``COPY … TO``, as the superuser) and reloads it, so the
    test needs no access to the data directory.
    """
    with pg_server.connect(autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('hba_file'), pg_read_file(current_setting('hba_file'))").fetchone()
    assert row is not None
    hba_file, original = str(row[0]), str(row[1])
    rejected: list[str] = []

    def write(text: str) -> None:
        with pg_server.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("COPY (SELECT unnest({}::text[])) TO {}").format(sql.Literal(text.splitlines()),
                                                                          sql.Literal(hba_file)))
            conn.execute("SELECT pg_reload_conf()")

    def refused(dbname: str) -> bool:
        try:
            pg_server.connect(dbname).close()
        except psycopg.OperationalError as exc:
            return "rejects connection" in str(exc)
        return False

    def reject(dbname: str) -> None:
        rejected.append(dbname)
        write("".join(f"host {name} all 127.0.0.1/32 reject\n" for name in rejected) + original)
        _wait_until(lambda: refused(dbname), "pg_hba.conf to reject the login")

    yield reject
    if rejected:
        write(original)
        _wait_until(lambda: not any(refused(name) for name in rejected), "pg_hba.conf to be restored")


def _wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(0.05)
