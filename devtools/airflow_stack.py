"""Airflow's processes on loopback for tests, ``make up`` and benchmarks: started, waited for, stopped by PID.

Each process (``airflow api-server``, ``scheduler``, ``dag-processor``, ``triggerer``, Celery
workers, and services they need such as ``redis-server``) runs in a session of its own, so a
terminal's Ctrl-C reaches only the program that started them (a SIGINT to a whole ``airflow``
process group can deadlock it); ``stop`` sends SIGTERM to each main process by its PID, waits, then
SIGKILLs whatever they left, each by PID too: Airflow's processes first, then the services, so a
Celery worker never loses its broker while it shuts down. Nothing here binds anything but 127.0.0.1.

``airflow_env`` is the environment such a stack runs with: this interpreter's ``airflow``, an
own ``AIRFLOW_HOME``, the repository's plugins, the api-server on a loopback port (with the
execution API the LocalExecutor's tasks call), a metadata database given by the caller, and none
of the calling process's own Airflow or backup-ops settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = Path(sys.executable).parent / "airflow"


class StackError(RuntimeError):
    """A process of the stack exited, or something it should do did not happen in time (with the logs' tails)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def airflow_env(home: Path, *, dags_folder: Path, port: int, sql_alchemy_conn: str,
                extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a stack whose api-server listens on 127.0.0.1:``port``; ``extra`` is added last."""
    api_url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "BACKUP_OPS", "_AIRFLOW")) and k != "PYTHONPATH"}
    env.update({
        "PATH": f"{AIRFLOW.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),  # the only way backup_ops is importable
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    })
    env.update(extra or {})
    return env


def postgres_metadata_url(conn_uri: str) -> str:
    """A ``postgresql://`` URI as SQLAlchemy's psycopg 3 dialect takes it (Airflow's metadata database)."""
    return conn_uri.replace("postgresql://", "postgresql+psycopg://", 1)


@dataclass
class AirflowStack:
    """Airflow's processes on loopback, each in a session of its own, stopped by PID."""

    home: Path
    env: dict[str, str]
    api_url: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    services: set[str] = field(default_factory=set)
    """Names in ``processes`` that are not Airflow (a broker): stopped after every Airflow process."""

    def run(self, *args: str, timeout: float = 180) -> str:
        """An airflow CLI command to completion; its output, or StackError with its output when it fails."""
        done = subprocess.run([str(AIRFLOW), *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if done.returncode != 0:
            raise StackError(f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self, name: str, *args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``airflow <args>`` in a session of its own, its output in ``<home>/<name>.log``.

        ``env`` is added to the stack's environment for this process only (a worker's own folders).
        """
        return self._spawn(name, [str(AIRFLOW), *args], {**self.env, **(env or {})})

    def start_service(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        """Start a program Airflow needs (``redis-server …``) like ``start``; ``stop`` stops it last."""
        self.services.add(name)
        return self._spawn(name, list(argv), self.env)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        if name in self.processes:
            raise StackError(f"{name} was started already")
        with open(self.home / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # the session tells its processes apart from ours, and from a terminal's ^C
            )
        return self.processes[name]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- {name}.log\n" + "\n".join(
            (self.home / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]) for name in self.processes)

    def task_log_tail(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1, lines: int = 40) -> str:
        """The last ``lines`` of a task instance's latest attempt as ``<level> <event>`` lines ("" when none).

        Task logs are JSON lines below ``$AIRFLOW_HOME/logs`` (every worker of a loopback stack writes there).
        """
        folder = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        if map_index >= 0:
            folder /= f"map_index={map_index}"
        attempts = sorted(folder.glob("attempt=*.log"), key=lambda p: int(p.stem.partition("=")[2] or 0))
        if not attempts:
            return ""
        text = attempts[-1].read_text(errors="replace").splitlines()[-lines:]
        return f"--- {attempts[-1].relative_to(self.home)}\n" + "\n".join(_log_line(line) for line in text)

    def wait_for(self, what: str, condition: Callable[[], Any], timeout: float) -> Any:
        """Poll ``condition`` until it returns something true; StackError when a process dies or time is up."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(requests.RequestException):
                result = condition()
                if result:
                    return result
            dead = {name: p.returncode for name, p in self.processes.items() if p.poll() is not None}
            if dead:
                raise StackError(f"{dead} exited while waiting for {what}:\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                raise StackError(f"waited {timeout} s for {what}:\n{self.log_tail()}")
            time.sleep(0.5)

    def wait_for_api(self, timeout: float = 120) -> None:
        """Until the api-server answers its health endpoint."""
        started = time.monotonic()
        self.wait_for("the api-server", lambda: requests.get(f"{self.api_url}/api/v2/monitor/health", timeout=5).ok,
                      timeout)
        self.timings["api-server up"] = time.monotonic() - started

    def members(self, names: Collection[str] | None = None) -> list[psutil.Process]:
        """Every live process started by the stack (or by its ``names``): the sessions' members and descendants."""
        started = [p for name, p in self.processes.items() if names is None or name in names]
        sessions = {p.pid for p in started}
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                    found[proc.pid] = proc
        for popen in started:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(popen.pid).children(recursive=True):
                    found[child.pid] = child
        return list(found.values())

    def stop(self, grace: float = 20) -> None:
        """SIGTERM each main process by its PID (never a process group), then SIGKILL what is left, by PID.

        Airflow's processes go first, the services (``start_service``) after them; each wave gets ``grace``.
        """
        started = time.monotonic()
        airflow = [name for name in self.processes if name not in self.services]
        for wave in (airflow, [name for name in self.processes if name in self.services]):
            if wave:
                self._stop_wave(wave, grace)
        self.timings["stop"] = time.monotonic() - started

    def _stop_wave(self, names: list[str], grace: float) -> None:
        started = time.monotonic()
        stragglers = self.members(names)
        for name in names:
            if self.processes[name].poll() is None:
                self.processes[name].send_signal(signal.SIGTERM)
        for name in names:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.processes[name].wait(timeout=max(0.1, grace - (time.monotonic() - started)))
            self.timings[f"stop {name}"] = time.monotonic() - started
        for proc in [*stragglers, *self.members(names)]:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
        for name in names:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.processes[name].wait(timeout=10)
        psutil.wait_procs([p for p in stragglers if p.is_running()], timeout=10)


def _log_line(line: str) -> str:
    """A task log's JSON line as ``<level> <event>`` (with the error, if any); other lines as they are."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    text = f"{record.get('level', '')} {record.get('event', '')}".strip()
    for error in record.get("error_detail") or []:
        if isinstance(error, dict):  # the chain, outermost first: each type, text and last frame
            frames = error.get("frames") or [{}]
            where = frames[-1] if isinstance(frames[-1], dict) else {}
            text += (f"\n    {error.get('exc_type')}: {error.get('exc_value')}"
                     f" (at {where.get('filename')}:{where.get('lineno')} in {where.get('name')})")
    return text
