"""A real Airflow on loopback for tests: its own metadata database on the test PostgreSQL server, stopped by PID.

``running_airflow`` creates the metadata database, migrates it and yields a
``devtools.airflow_stack.AirflowStack`` whose processes the test starts (the api-server alone,
or the scheduler, dag-processor and triggerer too); afterwards every process is stopped by its
PID and the database dropped. ``simple_auth`` sets up the simple auth manager with a known
password (never ``SIMPLE_AUTH_MANAGER_ALL_ADMINS`` when auth itself is tested: it lets every
request in), ``access_token`` logs in as the UI does.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import requests

from devtools.airflow_stack import AirflowStack, airflow_env, free_port, postgres_metadata_url
from devtools.pgserver import EmbeddedPostgres

__all__ = ["AirflowStack", "access_token", "free_port", "running_airflow", "simple_auth"]


@contextmanager
def running_airflow(pg_server: EmbeddedPostgres, directory: Path, *, dags_folder: Path, name: str,
                    extra: Mapping[str, str] | None = None) -> Iterator[AirflowStack]:
    """A migrated metadata database and the environment to run Airflow on it in ``directory``; nothing started."""
    metadata_db = f"airflow_{name}_{secrets.token_hex(4)}"
    pg_server.create_database(metadata_db)
    home = directory / "airflow-home"
    home.mkdir()
    port = free_port()
    env = airflow_env(home, dags_folder=dags_folder, port=port,
                      sql_alchemy_conn=postgres_metadata_url(pg_server.conn_uri(metadata_db)), extra=extra)
    stack = AirflowStack(home, env, f"http://127.0.0.1:{port}")
    started = time.monotonic()
    try:
        stack.run("db", "migrate")
        stack.timings["migrate"] = time.monotonic() - started
        yield stack
    finally:
        stack.stop()
        pg_server.drop_database(metadata_db)


def simple_auth(directory: Path, users: Mapping[str, str]) -> dict[str, str]:
    """Environment for the simple auth manager with ``users`` (name → password), each an admin."""
    passwords = directory / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps(dict(users)))
    passwords.chmod(0o600)
    return {
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{user}:admin" for user in users),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
    }


def access_token(api_url: str, username: str, password: str) -> str:
    """A JWT from ``POST /auth/token``, as the UI's login gets it."""
    answer = requests.post(f"{api_url}/auth/token", json={"username": username, "password": password}, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["access_token"])
