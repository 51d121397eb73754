"""``app-seed``: the docker-compose stack's example application, its database and its files.

docker-compose.yaml runs ``python -m deploy.seed_app`` once per ``docker compose up``, after app-db
is healthy. Every step may run again:

* the application's login ``APP_DB_USER`` (not a superuser, as an application's own login is), its
  password set from ``APP_DB_PASSWORD`` every time, so a changed .env takes effect;
* its database ``APP_DB_NAME``, owned by that login and loaded once, as that login, with the invoicing
  sample data of devtools/sample_data.py at ``APP_SAMPLE_SCALE`` (1: about 100,000 rows, 25 MB);
* its files under ``APP_FILES_ROOT`` (devtools/sample_app.py: certificates, uploads, .env, logs,
  config), rewritten identically, which airflow-worker-files reads.

Passwords come from the environment only. The login's password reaches the server as a SCRAM
verifier computed here (what psql's ``\\password`` does), so it is in no statement and no server log.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from devtools.sample_app import build_sample_app
from devtools.sample_data import load_sample_data


@dataclass(frozen=True)
class SeedSettings:
    """Where app-db is and what to create on it, from the job's environment."""

    host: str
    port: int
    superuser: str
    superuser_password: str = field(repr=False)
    app_user: str
    app_password: str = field(repr=False)
    database: str
    scale: float
    files_root: Path

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SeedSettings:
        """Read ``APP_DB_*``, ``APP_SAMPLE_SCALE`` and ``APP_FILES_ROOT``; SystemExit names what is missing or wrong."""

        def required(name: str) -> str:
            value = env.get(name, "")
            if not value:
                raise SystemExit(f"app-seed: {name} is not set; set it in .env (see .env.example).")
            return value

        def number(name: str, default: str, kind: type[int] | type[float]) -> Any:
            text = env.get(name) or default
            try:
                value = kind(text)
            except ValueError:
                raise SystemExit(f"app-seed: {name} must be a {kind.__name__}, got {text!r}.") from None
            if value <= 0:
                raise SystemExit(f"app-seed: {name} must be positive, got {text!r}.")
            return value

        return cls(
            host=env.get("APP_DB_HOST") or "app-db",
            port=number("APP_DB_PORT", "5432", int),
            superuser=env.get("APP_DB_SUPERUSER") or "postgres",
            superuser_password=required("APP_DB_SUPERUSER_PASSWORD"),
            app_user=env.get("APP_DB_USER") or "invoicing_app",
            app_password=required("APP_DB_PASSWORD"),
            database=env.get("APP_DB_NAME") or "invoicing",
            scale=number("APP_SAMPLE_SCALE", "1", float),
            files_root=Path(env.get("APP_FILES_ROOT") or "/srv/invoicing-app"),
        )


def connect(settings: SeedSettings, *, as_app: bool = False) -> psycopg.Connection[Any]:
    """A connection to app-db: the superuser on ``postgres``, or the application's login on its database."""
    return psycopg.connect(
        host=settings.host, port=settings.port, connect_timeout=10, autocommit=True,
        user=settings.app_user if as_app else settings.superuser,
        password=settings.app_password if as_app else settings.superuser_password,
        dbname=settings.database if as_app else "postgres",
    )


def ensure_login(conn: psycopg.Connection[Any], user: str, password: str) -> str:
    """Create the application's login, or set its password again; returns "created" or "updated"."""
    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone()
    verifier = conn.pgconn.encrypt_password(password.encode(), user.encode(), b"scram-sha-256").decode()
    verb = "ALTER" if exists else "CREATE"
    conn.execute(sql.SQL("{} ROLE {} LOGIN NOSUPERUSER PASSWORD {}").format(
        sql.SQL(verb), sql.Identifier(user), sql.Literal(verifier)))
    return "updated" if exists else "created"


def ensure_database(conn: psycopg.Connection[Any], name: str, owner: str) -> bool:
    """Create the application's database owned by ``owner`` unless it exists; True when it was created."""
    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
        return False
    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))
    return True


def load_once(conn: psycopg.Connection[Any], scale: float) -> int | None:
    """Load the sample data unless the schema is there (the load is one transaction); rows loaded, or None."""
    row = conn.execute("SELECT to_regclass('public.invoices')").fetchone()
    if row and row[0] is not None:
        return None
    return sum(load_sample_data(conn, scale=scale).values())


def seed(settings: SeedSettings) -> list[str]:
    """Every step, in order; one line per step for the job's log (never a password)."""
    with connect(settings) as conn:
        login = ensure_login(conn, settings.app_user, settings.app_password)
        created = ensure_database(conn, settings.database, settings.app_user)
    with connect(settings, as_app=True) as conn:
        rows = load_once(conn, settings.scale)
    build_sample_app(settings.files_root)
    where = f"{settings.host}:{settings.port}"
    return [
        f"Login {settings.app_user} on {where}: {login}",
        f"Database {settings.database}: {'created' if created else 'exists'}, owned by {settings.app_user}",
        f"Sample data: loaded {rows} rows at scale {settings.scale}" if rows is not None
        else "Sample data: already loaded",
        f"Application files: {settings.files_root}",
    ]


def main() -> int:
    settings = SeedSettings.from_env(os.environ)
    try:
        lines = seed(settings)
    except psycopg.Error as exc:
        print(f"app-seed: {settings.host}:{settings.port}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    for line in lines:
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
