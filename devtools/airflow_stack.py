"""Airflow's processes on loopback for tests, ``make up`` and benchmarks: started, waited for, stopped by PID.

Each process (``airflow api-server``, ``scheduler``, ``dag-processor``, ``triggerer``) runs in
a session of its own, so a terminal's Ctrl-C reaches only the program that started them (a
SIGINT to a whole ``airflow`` process group can deadlock it); ``stop`` sends SIGTERM to each main
process by its PID, waits, then SIGKILLs whatever they left, each by PID too. Nothing here binds
anything but 127.0.0.1.

``airflow_env`` is the environment such a stack runs with: this interpreter's ``airflow``, an
own ``AIRFLOW_HOME``, the repository's plugins, the api-server on a loopback port (with the
execution API the LocalExecutor's tasks call), a metadata database given by the caller, and none
of the calling process's own Airflow or backup-ops settings.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
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

    def run(self, *args: str, timeout: float = 180) -> str:
        """An airflow CLI command to completion; its output, or StackError with its output when it fails."""
        done = subprocess.run([str(AIRFLOW), *args], env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if done.returncode != 0:
            raise StackError(f"airflow {' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done.stdout

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start ``airflow <args>`` in a session of its own, its output in ``<home>/<name>.log``."""
        with open(self.home / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [str(AIRFLOW), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # the session tells its processes apart from ours, and from a terminal's ^C
            )
        return self.processes[name]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(f"--- {name}.log\n" + "\n".join(
            (self.home / f"{name}.log").read_text(errors="replace").splitlines()[-lines:]) for name in self.processes)

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

    def members(self) -> list[psutil.Process]:
        """Every live process started by the stack: the sessions' members and the main processes' descendants."""
        sessions = {p.pid for p in self.processes.values()}
        found: dict[int, psutil.Process] = {}
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if os.getsid(proc.pid) in sessions and proc.status() != psutil.STATUS_ZOMBIE:
                    found[proc.pid] = proc
        for popen in self.processes.values():
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(popen.pid).children(recursive=True):
                    found[child.pid] = child
        return list(found.values())

    def stop(self, grace: float = 20) -> None:
        """SIGTERM each main process by its PID (never a process group), then SIGKILL what is left, by PID."""
        started = time.monotonic()
        stragglers = self.members()
        for popen in self.processes.values():
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        for name, popen in self.processes.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=max(0.1, grace - (time.monotonic() - started)))
            self.timings[f"stop {name}"] = time.monotonic() - started
        for proc in [*stragglers, *self.members()]:
            with contextlib.suppress(psutil.Error):
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
        for popen in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=10)
        psutil.wait_procs([p for p in stragglers if p.is_running()], timeout=10)
        self.timings["stop"] = time.monotonic() - started
