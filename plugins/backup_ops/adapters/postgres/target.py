"""The database to dump: where it is, who logs in, and what a failed login means, password kept out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backup_ops.core.errors import ConfigError, DumpError

if TYPE_CHECKING:
    import psycopg

APP_NAME = "backup-ops"
"""The ``application_name`` prefix of every session backup-ops opens, as the server lists it."""


@dataclass(frozen=True)
class PgTarget:
    """How to reach one database; built by the operator from an Airflow Connection."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    dbname: str
    sslmode: str | None = None
    connect_timeout: int = 10

    @property
    def address(self) -> str:
        """``host:port/dbname``, for messages (never includes the password)."""
        return f"{self.host}:{self.port}/{self.dbname}"


def target_from_connection(conn_id: str) -> PgTarget:
    """The PgTarget of one Airflow postgres connection (its password stays in memory only)."""
    from airflow.sdk import Connection

    try:
        conn = Connection.get(conn_id)
    except Exception as exc:  # the SDK raises its own not-found type
        raise ConfigError(
            f"Airflow connection {conn_id!r} (source.databases) could not be read ({type(exc).__name__}); "
            f"create it, e.g. `airflow connections add {conn_id} --conn-uri postgresql://user:pass@host:5432/db`."
        ) from None
    if not conn.schema:
        raise ConfigError(f"Airflow connection {conn_id!r} has no database name (schema field); set it.")
    extra = conn.extra_dejson or {}
    return PgTarget(
        host=conn.host or "localhost",
        port=int(conn.port or 5432),
        user=conn.login or "",
        password=conn.password or "",
        dbname=conn.schema,
        sslmode=extra.get("sslmode"),
        connect_timeout=int(extra.get("connect_timeout", 10)),
    )


def connect(target: PgTarget, conn_id: str, purpose: str) -> psycopg.Connection[Any]:
    """An autocommit session named ``backup-ops <purpose>``; a failed login raises one DumpError sentence."""
    import psycopg  # lazy: keeps these modules importable (and DAG parsing fast) without a driver

    try:
        return psycopg.connect(
            host=target.host, port=target.port, user=target.user, password=target.password or None,
            dbname=target.dbname, sslmode=target.sslmode or None, connect_timeout=target.connect_timeout,
            application_name=f"{APP_NAME} {purpose}", autocommit=True,
        )
    except psycopg.OperationalError as exc:
        raise connection_error(exc, target, conn_id) from None


def connection_error(exc: Exception, target: PgTarget, conn_id: str) -> DumpError:
    """One actionable sentence for a failed connection; never includes the password."""
    text = redact(str(exc).strip(), target.password)
    low = text.lower()
    server = f"{target.host}:{target.port}"
    # libpq's own explanation of the failure: the text after the last "failed:" on its first line.
    reason = text.splitlines()[0].rsplit("failed:", 1)[-1].strip(" .") if text else "no details"
    if "password authentication failed" in low or "no password supplied" in low:
        return DumpError(f"PostgreSQL password authentication failed for user {target.user!r} on "
                         f"{target.address}: check the password of Airflow connection {conn_id!r}.")
    if "database" in low and "does not exist" in low:
        return DumpError(f"Database {target.dbname!r} does not exist on {server}: check the database name "
                         f"(schema field) of Airflow connection {conn_id!r}.")
    if "role" in low and "does not exist" in low:
        return DumpError(f"User {target.user!r} does not exist on {server}: check the login of Airflow "
                         f"connection {conn_id!r}.")
    if "no pg_hba.conf entry" in low:
        return DumpError(f"The server at {server} does not accept user {target.user!r} for database "
                         f"{target.dbname!r} from this worker ({reason}): allow it in pg_hba.conf or fix the sslmode "
                         f"of Airflow connection {conn_id!r}.")
    unreachable = ("connection refused", "could not translate host name", "timeout expired", "no route to host",
                   "network is unreachable", "name or service not known", "temporary failure in name resolution",
                   "connection timed out")
    if any(marker in low for marker in unreachable):
        return DumpError(f"Cannot reach PostgreSQL at {server} for Airflow connection {conn_id!r} ({reason}): check "
                         "the connection's host and port, that the server is running, and that this worker may "
                         "connect to it.")
    return DumpError(f"Cannot connect to database {target.dbname!r} on {server} (Airflow connection {conn_id!r}): "
                     f"{reason}.")


def redact(text: str, password: str) -> str:
    """``text`` with every occurrence of ``password`` replaced by ``***``."""
    return text.replace(password, "***") if password else text
