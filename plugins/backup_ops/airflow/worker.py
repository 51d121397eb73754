"""Which worker a task runs on, as Airflow records it: every step result and host-specific log line names it."""

from __future__ import annotations

import socket


def worker_host() -> str:
    """This worker's host name as Airflow records it on task instances (``[core] hostname_callable``)."""
    try:
        from airflow.utils.net import get_hostname

        return str(get_hostname())
    except Exception:  # outside Airflow (the check command)
        return socket.gethostname()
