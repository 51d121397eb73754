"""A CeleryExecutor Airflow on loopback: redis-server as the broker, Celery workers that play separate hosts.

Builds on ``devtools.airflow_stack``: ``celery_env`` is what every process of such a stack adds to
``airflow_env`` (the executor, the broker, a ``[core] hostname_callable`` that tells the workers
apart); ``start_redis`` starts the broker as a service of the stack (stopped after every Airflow
process); ``start_worker`` starts one ``airflow celery worker`` with its own name, queues, slots,
PID file and environment: its own temporary folders stand for the local disk of its own host.

Everything binds 127.0.0.1; redis keeps nothing on disk.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from devtools.airflow_stack import ROOT, AirflowStack, free_port
from devtools.stack_hostname import HOSTNAME_ENV

REDIS_SERVER = "redis-server"
HOSTNAME_CALLABLE = "devtools.stack_hostname.hostname"


@dataclass(frozen=True)
class CeleryWorker:
    """One Celery worker playing a host of its own.

    ``name`` is its Celery hostname and the ``hostname`` its task instances record; ``env`` is
    added to its environment only (its own ``TMPDIR``, its own work folders).
    """

    name: str
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 2
    env: Mapping[str, str] = field(default_factory=dict)


def celery_env(port: int) -> dict[str, str]:
    """Settings every process of a CeleryExecutor stack shares, with the broker on 127.0.0.1:``port``.

    The result backend is Airflow's default: the metadata database. Runs come only from triggers
    (``use_job_schedule`` off): unpausing a DAG must not start a scheduled run beside the one a test
    triggers.
    """
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "3600",
        # Airflow's default, relied on: a worker holds at most one unacknowledged task per slot.
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": HOSTNAME_CALLABLE,
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "PYTHONPATH": str(ROOT),  # where every process imports the hostname callable from
    }


def broker_port(stack: AirflowStack) -> int:
    """The port of the broker in the stack's ``AIRFLOW__CELERY__BROKER_URL``."""
    return int(stack.env["AIRFLOW__CELERY__BROKER_URL"].rsplit(":", 1)[1].split("/", 1)[0])


def start_redis(stack: AirflowStack) -> None:
    """redis-server on the stack's broker port, 127.0.0.1 only, nothing saved; returns once it answers PING."""
    program = shutil.which(REDIS_SERVER) or f"/usr/bin/{REDIS_SERVER}"
    port = broker_port(stack)
    work = stack.home / "redis"
    work.mkdir(exist_ok=True)
    stack.start_service(
        "redis", program, "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "yes",
        "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(work),
        "--pidfile", str(stack.home / "redis.pid"),
    )
    stack.wait_for("redis-server", lambda: _redis_answers(port), 20)


def start_airflow(stack: AirflowStack) -> None:
    """api-server, scheduler, dag-processor and triggerer, each with its own PID file; no log servers."""
    for part, *options in (("api-server",), ("scheduler", "--skip-serve-logs"), ("dag-processor",),
                           ("triggerer", "--skip-serve-logs")):
        stack.start(part, part, *options, "--pid", str(stack.home / f"{part}.pid"))


def start_worker(stack: AirflowStack, worker: CeleryWorker) -> None:
    """``airflow celery worker`` as ``worker``: its own Celery hostname, queues, concurrency, PID file and env."""
    stack.start(
        worker.name, "celery", "worker", "--celery-hostname", worker.name, "--queues", ",".join(worker.queues),
        "--concurrency", str(worker.concurrency), "--pid", str(stack.home / f"{worker.name}.pid"),
        "--skip-serve-logs", "--without-mingle", "--without-gossip",
        env={**worker.env, HOSTNAME_ENV: worker.name},
    )


def wait_for_workers(stack: AirflowStack, workers: list[CeleryWorker], timeout: float = 90) -> None:
    """Until every worker has said it is ready (Celery's ``<name> ready.`` in its log)."""
    def ready() -> bool:
        return all(f"@{w.name} ready." in _text(stack.home / f"{w.name}.log") for w in workers)

    stack.wait_for("the Celery workers", ready, timeout)


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


__all__ = ["CeleryWorker", "broker_port", "celery_env", "free_port", "start_airflow", "start_redis", "start_worker",
           "wait_for_workers"]
