"""Resolve secret references from the config at task run time (never at DAG parse time)."""

from __future__ import annotations

import os

from backup_ops.core.config import SecretRef
from backup_ops.core.errors import SecretError


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
        return str(Variable.get(name))
    except Exception as exc:  # the SDK raises its own types for missing variables
        raise SecretError(
            f"Airflow Variable {name!r} (backup.password) could not be read: {type(exc).__name__}; "
            f"create it with `airflow variables set {name} <password>`."
        ) from None


def _connection_password(conn_id: str) -> str | None:
    from airflow.sdk import Connection

    try:
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
