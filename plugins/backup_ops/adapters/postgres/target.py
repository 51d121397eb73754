"""The database to dump: where it is, who logs in, and what a failed login means, password kept out.

An Airflow ``postgres`` connection maps the way the postgres provider's ``PostgresHook`` maps it:
host, port, login, password and schema (the database) from its fields; every extra goes to libpq
(``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``, ``sslcrl``, ``options``, ``connect_timeout``,
``target_session_attrs``, ``application_name``, ``keepalives_idle``, …) except the ones the
provider keeps for itself (``PostgresHook.ignored_extra_options``: ``iam``, ``redshift``,
``cursor``, ``aws_conn_id``, ``azure_conn_id``, ``sqlalchemy_*``, …). With ``iam`` the provider's
hook fetches the login token (AWS RDS/Redshift, or Azure with ``azure_conn_id``), which then
serves as the password. An extra that is no libpq keyword, or that would override one of the
connection's own fields, is refused with one sentence. The same parameters reach the psycopg
sessions (``connect``) and pg_dump (``client_env``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from backup_ops.core.errors import ConfigError, DumpError

if TYPE_CHECKING:
    import psycopg

APP_NAME = "backup-ops"
"""The ``application_name`` prefix of every session backup-ops opens, as the server lists it (unless the
connection sets its own ``application_name``)."""

# Set from the connection's own fields; an extra must not silently replace them.
_FIELD_KEYWORDS = {"host": "host", "port": "port", "user": "login", "password": "password", "dbname": "schema"}


@dataclass(frozen=True)
class LibpqKeyword:
    """One libpq connection parameter: its environment variable (if any), and whether it is a secret."""

    envvar: str | None
    secret: bool


@functools.cache
def libpq_keywords() -> dict[str, LibpqKeyword]:
    """libpq's own table of connection parameters (``PQconndefaults``), as the installed libpq knows them."""
    from psycopg.pq import Conninfo  # lazy: keeps these modules importable (and DAG parsing fast) without a driver

    return {
        option.keyword.decode(): LibpqKeyword(
            option.envvar.decode() if option.envvar else None,
            # '*': a password field; 'D': a debug option libpq does not display (keys, key log files).
            option.dispchar in (b"*", b"D"),
        )
        for option in Conninfo.get_defaults()
    }


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
    params: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    """Other libpq connection parameters (the connection's extras: ``options``, ``sslrootcert``, …)."""

    @property
    def address(self) -> str:
        """``host:port/dbname``, for messages (never includes the password)."""
        return f"{self.host}:{self.port}/{self.dbname}"

    def libpq_params(self, application_name: str) -> dict[str, str]:
        """Every libpq parameter of this target but the password; the connection's own application_name wins."""
        params = {"host": self.host, "port": str(self.port), "user": self.user, "dbname": self.dbname,
                  "connect_timeout": str(self.connect_timeout), "application_name": application_name}
        if self.sslmode:
            params["sslmode"] = self.sslmode
        params.update(self.params)
        return params

    @property
    def secrets(self) -> tuple[str, ...]:
        """The password and every secret parameter (``sslpassword``, …), to keep out of messages."""
        keywords = libpq_keywords() if self.params else {}
        extra = (v for k, v in self.params.items() if k in keywords and keywords[k].secret)
        return tuple(s for s in (self.password, *extra) if s)


def target_from_connection(conn_id: str) -> PgTarget:
    """The PgTarget of one Airflow postgres connection, mapped by the postgres provider's rules.

    The password (or IAM token) stays in memory only. Raises ConfigError for a missing connection
    or an extra libpq does not know, DumpError when the IAM token cannot be fetched.
    """
    from airflow.sdk import Connection

    from backup_ops.adapters.secrets import airflow_cli_lookups

    try:
        with airflow_cli_lookups():  # outside a task, the metadata DB too (see adapters/secrets)
            conn = Connection.get(conn_id)
    except Exception as exc:  # the SDK raises its own not-found type
        raise ConfigError(
            f"Airflow connection {conn_id!r} (source.databases) could not be read ({type(exc).__name__}); "
            f"create it, e.g. `airflow connections add {conn_id} --conn-uri postgresql://user:pass@host:5432/db`."
        ) from None
    if not conn.schema:
        raise ConfigError(f"Airflow connection {conn_id!r} has no database name (schema field); set it.")
    extra = conn.extra_dejson or {}
    params = _libpq_extras(conn_id, extra)
    login, password, port = conn.login or "", conn.password or "", int(conn.port or 5432)
    if extra.get("iam", False):  # the provider's own test of the flag
        login, password, port = _iam_login(conn_id, conn)
    sslmode = params.pop("sslmode", None)
    timeout = params.pop("connect_timeout", "10")
    if not timeout.isdigit():
        raise ConfigError(f"Airflow connection {conn_id!r} has extra connect_timeout = {timeout!r}; "
                          "libpq accepts a whole number of seconds.")
    return PgTarget(host=conn.host or "localhost", port=port, user=login, password=password, dbname=conn.schema,
                    sslmode=sslmode, connect_timeout=int(timeout), params=params)


def _libpq_extras(conn_id: str, extra: Mapping[str, Any]) -> dict[str, str]:
    """The extras the postgres provider hands to the driver, as libpq keyword strings."""
    try:
        from airflow.providers.postgres.hooks.postgres import PostgresHook
    except ImportError as exc:
        raise ConfigError(f"Airflow connection {conn_id!r} is a postgres connection, but the postgres provider cannot "
                          f"be imported ({exc}); install apache-airflow-providers-postgres on the worker.") from None

    keywords = libpq_keywords()
    params: dict[str, str] = {}
    for key, value in extra.items():
        if key in PostgresHook.ignored_extra_options:
            continue
        if key in _FIELD_KEYWORDS:
            raise ConfigError(f"Airflow connection {conn_id!r} sets {key!r} in its extras; set the connection's "
                              f"{_FIELD_KEYWORDS[key]} field instead, which backup-ops and the provider both read.")
        if key not in keywords:
            raise ConfigError(
                f"Airflow connection {conn_id!r} has extra {key!r}, which is neither a libpq connection parameter "
                f"(such as sslmode, sslrootcert, options, keepalives_idle) nor one the postgres provider uses itself "
                f"({', '.join(sorted(PostgresHook.ignored_extra_options))}); remove or correct it."
            )
        if isinstance(value, bool):
            params[key] = "1" if value else "0"
        elif isinstance(value, (str, int, float)) and "\n" not in str(value) and "\r" not in str(value):
            params[key] = str(value)
        else:
            shown = "(value not shown)" if keywords[key].secret else repr(value)
            raise ConfigError(f"Airflow connection {conn_id!r} has extra {key!r} = {shown}; libpq accepts a single-"
                              "line string or number there.")
    return params


def _iam_login(conn_id: str, conn: Any) -> tuple[str, str, int]:
    """(login, token, port) from the postgres provider's hook: AWS RDS/Redshift IAM, or Azure Entra ID."""
    from airflow.providers.postgres.hooks.postgres import PostgresHook

    try:
        login, token, port = PostgresHook(postgres_conn_id=conn_id).get_iam_token(conn)
    except (ImportError, ValueError) as exc:  # a provider package missing, a host the hook cannot read
        raise ConfigError(f"Airflow connection {conn_id!r} asks for IAM authentication (extra iam), which the "
                          f"postgres provider cannot do here: {exc}") from None
    except Exception as exc:  # boto3 / azure-identity errors: credentials, network, throttling
        if type(exc).__name__ == "AirflowOptionalProviderFeatureException":
            raise ConfigError(f"Airflow connection {conn_id!r} asks for IAM authentication (extra iam), which needs "
                              f"another provider: {exc}") from None
        raise DumpError(f"Could not get an IAM login token for Airflow connection {conn_id!r} ({type(exc).__name__}: "
                        f"{exc}); check the connection named by its aws_conn_id or azure_conn_id extra.") from None
    return str(login or ""), str(token), int(port)


def connect(target: PgTarget, conn_id: str, purpose: str) -> psycopg.Connection[Any]:
    """An autocommit session named ``backup-ops <purpose>``; a failed login raises one DumpError sentence."""
    import psycopg  # lazy: keeps these modules importable (and DAG parsing fast) without a driver

    params: dict[str, Any] = target.libpq_params(f"{APP_NAME} {purpose}")
    try:
        return psycopg.connect(**params, password=target.password or None, autocommit=True)
    except psycopg.OperationalError as exc:
        raise connection_error(exc, target, conn_id) from None


def connection_error(exc: Exception, target: PgTarget, conn_id: str) -> DumpError:
    """One actionable sentence for a failed connection; never includes the password.

    What the connection's settings or the server's configuration refuse (password, database, role,
    pg_hba.conf) is not retryable; an unreachable server or anything else may heal by the next try.
    """
    text = redact(str(exc).strip(), *target.secrets)
    low = text.lower()
    server = f"{target.host}:{target.port}"
    # libpq's own explanation of the failure: the text after the last "failed:" on its first line.
    reason = text.splitlines()[0].rsplit("failed:", 1)[-1].strip(" .") if text else "no details"
    if "password authentication failed" in low or "no password supplied" in low:
        return DumpError(f"PostgreSQL password authentication failed for user {target.user!r} on "
                         f"{target.address}: check the password of Airflow connection {conn_id!r}.", retryable=False)
    if "database" in low and "does not exist" in low:
        return DumpError(f"Database {target.dbname!r} does not exist on {server}: check the database name "
                         f"(schema field) of Airflow connection {conn_id!r}.", retryable=False)
    if "role" in low and "does not exist" in low:
        return DumpError(f"User {target.user!r} does not exist on {server}: check the login of Airflow "
                         f"connection {conn_id!r}.", retryable=False)
    if "no pg_hba.conf entry" in low or "pg_hba.conf rejects connection" in low:
        return DumpError(f"The server at {server} does not accept user {target.user!r} for database "
                         f"{target.dbname!r} from this worker ({reason}): allow it in pg_hba.conf or fix the sslmode "
                         f"of Airflow connection {conn_id!r}.", retryable=False)
    unreachable = ("connection refused", "could not translate host name", "timeout expired", "no route to host",
                   "network is unreachable", "name or service not known", "temporary failure in name resolution",
                   "connection timed out")
    if any(marker in low for marker in unreachable):
        return DumpError(f"Cannot reach PostgreSQL at {server} for Airflow connection {conn_id!r} ({reason}): check "
                         "the connection's host and port, that the server is running, and that this worker may "
                         "connect to it.")
    return DumpError(f"Cannot connect to database {target.dbname!r} on {server} (Airflow connection {conn_id!r}): "
                     f"{reason}.")


def redact(text: str, *secrets: str) -> str:
    """``text`` with every occurrence of each non-empty secret replaced by ``***``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text
