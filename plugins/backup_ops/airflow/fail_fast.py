"""Retries are for faults a retry can fix: a permanent error fails its task at once.

A config error, a refused login, a missing database, an old pg_dump, a missing password or a
name clash will fail the same way on every attempt; retrying them only delays the alert by the
whole backoff (a quarter of an hour with the shipped config). Such errors are ``BackupError``s
with ``retryable=False``; this module turns them into Airflow's ``AirflowFailException``, which
ends the task without its remaining tries. Everything else keeps Airflow's normal retries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from airflow.sdk import task
from airflow.sdk.exceptions import AirflowFailException

from backup_ops.core.errors import BackupError

F = TypeVar("F", bound=Callable[..., Any])


@contextmanager
def permanent_errors_fail_fast() -> Iterator[None]:
    """Re-raise a non-retryable BackupError as AirflowFailException (same message, original as cause)."""
    try:
        yield
    except BackupError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(str(exc)) from exc


def fail_fast(function: F) -> F:
    """``function`` with ``permanent_errors_fail_fast`` around every call; its signature is kept for TaskFlow."""

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        with permanent_errors_fail_fast():
            return function(*args, **kwargs)

    return run  # type: ignore[return-value]


def step(**task_kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@task(**task_kwargs)`` for a function whose permanent errors must not be retried."""

    def decorate(function: Callable[..., Any]) -> Any:
        return task(**task_kwargs)(fail_fast(function))

    return decorate
