"""``make up``: a local Airflow with backup-ops, its DAGs and the Backups page, running until Ctrl-C.

Reuses ``make demo``'s pieces (``devtools.demo``): the embedded PostgreSQL with the invoicing sample
data, moto's S3 endpoint, the SMTP sink, the sample application tree and the demo config, and the
same connections and archive password (as ``AIRFLOW_CONN_*`` / ``AIRFLOW_VAR_*`` variables). Then
Airflow's parts on loopback (``devtools.airflow_stack``: api-server, scheduler, dag-processor,
triggerer, LocalExecutor, the metadata database on the same PostgreSQL), the dump pool, and a first
backup (``backup_daily`` triggered through the REST API, then ``restore_drill``) so the page is
not empty. It prints the URL and the login, and runs until Ctrl-C (or SIGTERM).

Stopping: Airflow's processes run in sessions of their own, so a terminal's Ctrl-C reaches only
this program, which then stops each of them by PID (SIGTERM, then SIGKILL for what is left), and
PostgreSQL, moto and the mail sink. Their PIDs are kept in ``.demo/up/pids.json``: a run that was
killed before it could clean up leaves them there, and the next run stops those processes first
(PostgreSQL restarts a server left on its data directory by itself). Everything stays below
``.demo/up/`` (git-ignored): the data directory, the metadata database, the Airflow home with its
logs, the local backups. Nothing listens on anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import secrets
import signal
import socket
import sys
import time
from types import FrameType
from typing import Any

import psutil
import requests

from devtools.airflow_stack import AirflowStack, StackError, airflow_env, free_port, postgres_metadata_url
from devtools.demo import (
    DEMO,
    DEMO_PASSWORD,
    DUMP_POOL,
    ROOT,
    S3_BUCKET,
    demo_config,
    ensure_app_database,
    mail_sink,
    s3_endpoint,
    say,
    service_env,
)
from devtools.pgserver import EmbeddedPostgres
from devtools.sample_app import build_sample_app

STATE = DEMO / "up"
PIDS = STATE / "pids.json"
METADATA_DB = "airflow_up"
USER = "admin"
DAGS = ("backup_daily", "backup_cleanup", "backup_monitor", "restore_drill")
FIRST_BACKUP_TIMEOUT = 600
SCHEDULED_RUN_WAIT = 20


class Stopped(Exception):
    """SIGTERM arrived: stop like Ctrl-C."""


def main() -> int:
    parser = argparse.ArgumentParser(description="A local Airflow with backup-ops, until Ctrl-C.")
    parser.add_argument("--port", type=int, default=8080, help="api-server port on 127.0.0.1 (default 8080, or a "
                                                               "free one when 8080 is taken)")
    parser.add_argument("--no-first-backup", action="store_true", help="do not trigger backup_daily at start")
    args = parser.parse_args()
    # Ctrl-C stops everything, even when this was started with SIGINT ignored (in the background, by nohup).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    STATE.mkdir(parents=True, exist_ok=True)
    say("backup-ops: make up\n===================")
    stop_leftovers()
    started = time.monotonic()
    try:
        with EmbeddedPostgres(data_dir=STATE / "pgdata") as pg, s3_endpoint() as s3_url, \
                mail_sink() as (smtp, inbox):
            say(f"PostgreSQL on {pg.host}:{pg.port} (data in {STATE.relative_to(ROOT)}/pgdata); S3 endpoint (moto, "
                f"in memory) {s3_url}, bucket {S3_BUCKET!r}; mail sink {smtp}")
            ensure_app_database(pg)
            stack = _stack(pg, s3_url, smtp, _port(args.port))
            try:
                _start(stack)
                token = _login(stack)
                if not args.no_first_backup:
                    _first_backup(stack, token)
                _banner(stack, started)
                _run_until_stopped(stack, inbox)
            finally:
                say("\nStopping Airflow (each process by its PID) …")
                stack.stop()
                PIDS.unlink(missing_ok=True)
                say(f"Stopped in {stack.timings.get('stop', 0):.1f} s; stopping PostgreSQL, moto and the mail sink.")
    except (KeyboardInterrupt, Stopped):
        pass
    except (StackError, requests.RequestException) as exc:
        say(f"\nmake up failed: {exc}")
        return 1
    say("Everything make up started has stopped.")
    return 0


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Stopped()


def _port(wanted: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", wanted))
            return wanted
        except OSError:
            pass
    port = free_port()
    say(f"Port {wanted} is taken; the api-server uses {port}.")
    return port


def _stack(pg: EmbeddedPostgres, s3_url: str, smtp: str, port: int) -> AirflowStack:
    """The metadata database, the Airflow home, the login, and the environment of every Airflow process."""
    with pg.connect("postgres") as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (METADATA_DB,)).fetchone()
    if not exists:
        pg.create_database(METADATA_DB)
    home = STATE / "airflow-home"
    home.mkdir(exist_ok=True)
    passwords = STATE / "passwords.json"
    if not passwords.exists():  # one password per checkout, kept across runs (0600, git-ignored)
        passwords.write_text(json.dumps({USER: secrets.token_urlsafe(12)}))
    passwords.chmod(0o600)
    app_root = build_sample_app(DEMO / "app")
    env = airflow_env(home, dags_folder=ROOT / "dags", port=port,
                      sql_alchemy_conn=postgres_metadata_url(pg.conn_uri(METADATA_DB)), extra={
                          **service_env(pg, app_root, s3_url, smtp, config=demo_config(STATE / "backup_config.yaml"),
                                        state=STATE),
                          "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
                          "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                          "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                          "AIRFLOW__CORE__PARALLELISM": "4",
                          "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                      })
    return AirflowStack(home, env, f"http://127.0.0.1:{port}")


def _start(stack: AirflowStack) -> None:
    say("\nMigrating the Airflow metadata database …")
    stack.run("db", "migrate", timeout=600)
    stack.run("pools", "set", DUMP_POOL, "1", "backup-ops: one pg_dump at a time per database server")
    say(f"Pool {DUMP_POOL!r} set. Starting the api-server, scheduler, dag-processor and triggerer "
        f"(logs: {stack.home.relative_to(ROOT)}/*.log) …")
    stack.start("api-server", "api-server")
    stack.start("scheduler", "scheduler", "--skip-serve-logs")
    stack.start("dag-processor", "dag-processor")
    stack.start("triggerer", "triggerer", "--skip-serve-logs")
    record_pids(stack)
    stack.wait_for_api(timeout=180)


def _login(stack: AirflowStack) -> str:
    password = json.loads((STATE / "passwords.json").read_text())[USER]
    answer = requests.post(f"{stack.api_url}/auth/token", json={"username": USER, "password": password}, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def _first_backup(stack: AirflowStack, token: str) -> None:
    """Unpause the DAGs, run backup_daily once (and wait for it), then start a restore drill of it."""
    api = f"{stack.api_url}/api/v2"
    headers = {"Authorization": f"Bearer {token}"}
    stack.wait_for("the DAGs to be parsed", lambda: all(
        requests.get(f"{api}/dags/{dag}", headers=headers, timeout=10).ok for dag in DAGS), 180)
    earlier = _runs(api, headers, "backup_daily")
    _unpause(api, headers, "backup_daily")
    say("\nRunning backup_daily (the first backup, so the Backups page is not empty) …")
    # Unpaused, the scheduler starts the run of the latest 02:00 it has not run yet; otherwise one is triggered.
    try:
        run = stack.wait_for("the scheduler's run of backup_daily", lambda: next(
            iter(set(_runs(api, headers, "backup_daily")) - earlier), None), SCHEDULED_RUN_WAIT)
    except StackError:
        run = _trigger(api, headers, "backup_daily")
    state = stack.wait_for("backup_daily to finish", lambda: _finished(api, headers, "backup_daily", run),
                           FIRST_BACKUP_TIMEOUT)
    say(f"  backup_daily {run}: {state}")
    for dag in DAGS[1:]:
        _unpause(api, headers, dag)
    if state == "success":
        drill = _trigger(api, headers, "restore_drill")
        say(f"  restore_drill {drill} started: its report (and RTO) shows on the page when it is done")


def _unpause(api: str, headers: dict[str, str], dag: str) -> None:
    answer = requests.patch(f"{api}/dags/{dag}", json={"is_paused": False}, headers=headers, timeout=30)
    answer.raise_for_status()


def _runs(api: str, headers: dict[str, str], dag: str) -> set[str]:
    answer = requests.get(f"{api}/dags/{dag}/dagRuns", params={"limit": "100", "order_by": "-run_after"},
                          headers=headers, timeout=30)
    answer.raise_for_status()
    return {str(run["dag_run_id"]) for run in answer.json()["dag_runs"]}


def _trigger(api: str, headers: dict[str, str], dag: str) -> str:
    answer = requests.post(f"{api}/dags/{dag}/dagRuns", json={"logical_date": None}, headers=headers, timeout=30)
    answer.raise_for_status()
    return str(answer.json()["dag_run_id"])


def _finished(api: str, headers: dict[str, str], dag: str, run: str) -> str | None:
    state = requests.get(f"{api}/dags/{dag}/dagRuns/{run}", headers=headers, timeout=10).json().get("state")
    return str(state) if state in ("success", "failed") else None


def _banner(stack: AirflowStack, started: float) -> None:
    password = json.loads((STATE / "passwords.json").read_text())[USER]
    say(f"""
Airflow is up ({time.monotonic() - started:.0f} s):

  UI             {stack.api_url}/            login: {USER} / {password}
  Backups page   {stack.api_url}/plugin/backup-ops   (in the UI's navigation: "Backups")
  health         {stack.api_url}/backup-ops/health   (public: what an uptime monitor polls)
  catalog API    {stack.api_url}/backup-ops/api/backups   (needs a login)

The archive password is {DEMO_PASSWORD!r}. Press Ctrl-C to stop everything.""")


def _run_until_stopped(stack: AirflowStack, inbox: list[str]) -> None:
    """Until Ctrl-C or SIGTERM; a mail that arrives is shown, a process that dies ends the run."""
    shown = 0
    while True:
        time.sleep(1)
        for subject in inbox[shown:]:
            say(f"  mail: {subject}")
        shown = len(inbox)
        dead = {name: p.returncode for name, p in stack.processes.items() if p.poll() is not None}
        if dead:
            raise StackError(f"{dead} exited:\n{stack.log_tail()}")


# ---------------------------------------------------------------------------- what a killed run left


def record_pids(stack: AirflowStack) -> None:
    """The main processes' PIDs and start times, so a later run can stop them if this one is killed."""
    entries = [{"name": name, "pid": p.pid, "started": psutil.Process(p.pid).create_time()}
               for name, p in stack.processes.items()]
    PIDS.write_text(json.dumps(entries))


def stop_leftovers() -> None:
    """Stop, by PID, the Airflow processes a killed ``make up`` left running (and what they started)."""
    if not PIDS.exists():
        return
    try:
        entries: list[dict[str, Any]] = json.loads(PIDS.read_text())
    except ValueError:
        entries = []
    found: list[psutil.Process] = []
    for entry in entries:
        with contextlib.suppress(psutil.Error, KeyError, TypeError):
            process = psutil.Process(int(entry["pid"]))
            # The same PID with another start time is another program: never touch it.
            if abs(process.create_time() - float(entry["started"])) < 1:
                found += [process, *process.children(recursive=True)]
    if found:
        say(f"Stopping {len(found)} process(es) an earlier make up left running …")
        for process in found:
            with contextlib.suppress(psutil.Error):
                process.terminate()
        _, alive = psutil.wait_procs(found, timeout=15)
        for process in alive:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(alive, timeout=10)
    PIDS.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
