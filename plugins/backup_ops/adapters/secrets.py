"""Resolve secret references from the config at task run time (never at DAG parse time).

Outside Airflow's own processes (``python -m backup_ops``, a script), connection and variable
lookups would see only environment variables and the ``[secrets] backend``: Airflow 3 chooses the
backends by process context (``airflow.sdk.execution_time.supervisor.ensure_secrets_backend_loaded``).
A task asks the API server through its supervisor; Airflow's server processes and its CLI commands
(``airflow connections get``) mark themselves ``_AIRFLOW_PROCESS_CONTEXT=server`` and also read
the metadata database; any other process gets no database. ``airflow_cli_lookups`` gives a plain
process the CLI's view, so a connection created with ``airflow connections add`` or in the UI is
found there too; inside a task, and inside Airflow's processes, it changes nothing.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from backup_ops.core.config import SecretRef
from backup_ops.core.errors import SecretError

_PROCESS_CONTEXT = "_AIRFLOW_PROCESS_CONTEXT"


@contextmanager
def airflow_cli_lookups() -> Iterator[None]:
    """Within this block, Airflow Connection and Variable lookups also read the metadata DB, as the airflow CLI's do.

    Order, as Airflow's: environment variables (``AIRFLOW_CONN_*``, ``AIRFLOW_VAR_*``), the
    configured ``[secrets] backend``, then the metadata database. A no-op inside a task (its
    supervisor answers), in processes that set their context themselves (scheduler, triggerer,
    DAG processor, API server), and where this host has no migrated metadata database (Airflow
    would log a traceback for every variable it then looks for there).
    """
    if os.environ.get(_PROCESS_CONTEXT) or _inside_task() or not _metadata_db_ready():
        yield
        return
    os.environ[_PROCESS_CONTEXT] = "server"
    try:
        yield
    finally:
        os.environ.pop(_PROCESS_CONTEXT, None)


def _inside_task() -> bool:
    """Whether a task supervisor answers lookups here (checked without importing Airflow)."""
    task_runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None


@functools.cache
def _metadata_db_ready() -> bool:
    """Whether ``[database] sql_alchemy_conn`` reaches a metadata database with Airflow's tables (asked once)."""
    try:
        from airflow.utils.session import create_session
        from sqlalchemy import inspect

        with create_session() as session:
            inspector = inspect(session.get_bind())
            return bool(inspector.has_table("connection") and inspector.has_table("variable"))
    except Exception:  # no database, unreachable, wrong credentials: environment and [secrets] backend only
        return False


def resolve_secret(ref: SecretRef | None) -> str | None:
    """The secret a reference points at; None when no reference is configured.

    Raises SecretError naming the reference (never a value) when it cannot be resolved,
    so a run fails before any work instead of producing an unencrypted archive.
    """
    if ref is None:
        return None
    if ref.kind == "env":
        value = os.environ.get(ref.name)
    elif ref.kind == "variable":
        value = _variable(ref.name)
    else:
        value = _connection_password(ref.name)
    if not value:
        raise SecretError(f"Secret {ref} is empty or not set; create it in Airflow (or the environment) and rerun.")
    _mask(value)
    return value


def _variable(name: str) -> str | None:
    from airflow.sdk import Variable

    try:
        with airflow_cli_lookups():
            return str(Variable.get(name))
    except Exception as exc:  # the SDK raises its own types for missing variables
        raise SecretError(
            f"Airflow Variable {name!r} (backup.password) could not be read: {type(exc).__name__}; "
            f"create it with `airflow variables set {name} <password>`."
        ) from None


def _connection_password(conn_id: str) -> str | None:
    from airflow.sdk import Connection

    try:
        with airflow_cli_lookups():
            return Connection.get(conn_id).password
    except Exception as exc:
        raise SecretError(
            f"Airflow connection {conn_id!r} (backup.password) could not be read: {type(exc).__name__}; "
            "create it and put the archive password in its password field."
        ) from None


def _mask(value: str) -> None:
    """Register the secret with Airflow's log masker when running inside Airflow."""
    try:
        from airflow.sdk.log import mask_secret
    except ImportError:  # outside Airflow (CLI, tests of core code)
        return
    mask_secret(value)
