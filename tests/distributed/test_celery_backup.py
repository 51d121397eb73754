"""backup-ops on a real multi-worker CeleryExecutor stack on loopback (issue 13, item 5).

Airflow runs as it runs distributed: redis-server as the Celery broker, the metadata database on
the test PostgreSQL server, an api-server, a scheduler, a dag-processor, a triggerer and two Celery
workers, each a separate process with its own hostname and its own local folders (``TMPDIR`` and
``backup.staging_directory``, through ``${BACKUP_OPS_WORK}`` in the one config file). Only
``worker-files`` serves the ``files`` queue (``backup.files_queue``), and only it sees the
application's files: on ``worker-a`` their folder does not exist, as on another host. Staging is on
the test's S3 endpoint; the archive goes to an S3 bucket and a local folder.

The test triggers ``backup_daily`` for two databases through the REST API and checks the archive
(both dumps and the files, verified), where each task ran, and that no staging object and no file
in a worker's folder is left; then a ``restore_drill`` of the S3 copy (its phases on whichever
worker takes them: no plaintext may stay on any), and ``backup_cleanup`` and ``backup_monitor``
(which finds the drill's report fresh) on the same stack.
Every process is stopped by its PID afterwards, whatever happened.

Which worker takes a task is up to the broker, so the workers' slots make "both workers ran
tasks" certain instead of likely: ``worker-files`` has one slot (Celery's prefetch is one task per
slot), so whenever two tasks are queued together (the two preflight checks; the two dumps, whose
pool has two slots; the two publish tasks), ``worker-a`` takes at least one of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import yaml

from backup_ops.core.archive_read import verify_archive
from devtools.celery_stack import (
    CeleryWorker,
    celery_env,
    free_port,
    start_airflow,
    start_redis,
    start_worker,
    wait_for_workers,
)
from devtools.pgserver import EmbeddedPostgres
from tests.fixtures_airflow import AirflowStack, access_token, running_airflow, simple_auth
from tests.fixtures_s3 import S3_CONN_ID, TEST_BUCKET

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BACKUP_NAME = "celery-app"
USER, LOGIN = "admin", "distributed-login"
ARCHIVE_PASSWORD = "celery stack archive password"
DUMP_POOL = "backup_ops_dumps"
FILES_QUEUE = "files"
WORKER_A, WORKER_FILES = "worker-a", "worker-files"
STAGING_BUCKET, STAGING_PREFIX = "backup-ops-staging", "runs"
DEST_PREFIX = "prod"
DRILL_SERVER = "drill_server"
DAGS = ("backup_daily", "restore_drill", "backup_cleanup", "backup_monitor")
DATABASES = {"app_sales": ("celery_sales", "plain"), "app_billing": ("celery_billing", "custom")}
APP_FILES = {
    ".env": b"APP_NAME=Invoicing\nAPP_ENV=production\n",
    "config/app.php": b"<?php\nreturn ['name' => env('APP_NAME')];\n",
    "storage/app/uploads/INV-00001.pdf": b"%PDF-1.7\n" + bytes(range(256)) * 40 + b"\n%%EOF\n",
    "storage/logs/laravel.log": b"[2026-11-01 02:00:00] production.INFO: invoice sent\n" * 200,
}
RUN_TIMEOUT = 150  # backup_daily took 38–63 s here (2 cores, other tests running); cleanup and monitor ~10 s
STARTUP_TIMEOUT = 120


@dataclass
class Deployment:
    """The running stack and what the test checks afterwards."""

    stack: AirflowStack
    token: str
    local_folders: dict[str, tuple[Path, ...]]
    """Each worker's own local folders: its ``TMPDIR`` and ``BACKUP_OPS_WORK``."""
    local_backups: Path
    memory: MemorySampler
    secrets: tuple[str, ...]
    """The archive password and the database login's: in no log of any process."""
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def api(self) -> str:
        return f"{self.stack.api_url}/api/v2"

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The REST API's JSON answer; HTTPError otherwise (which ``stack.wait_for`` polls through)."""
        answer = requests.request(method, f"{self.api}{path}", headers={"Authorization": f"Bearer {self.token}"},
                                  timeout=30, **kwargs)
        if not answer.ok:
            raise requests.HTTPError(f"{method} {path}: HTTP {answer.status_code} {answer.text[:500]}",
                                     response=answer)
        return answer.json()

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        body = {"logical_date": None, **({"conf": conf} if conf else {})}
        return str(self.call("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def wait_for_run(self, dag_id: str, run_id: str) -> str:
        def finished() -> str | None:
            state = self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            return str(state) if state in ("success", "failed") else None

        started = time.monotonic()
        state = str(self.stack.wait_for(f"{dag_id} run {run_id}", finished, RUN_TIMEOUT))
        self.timings[f"{dag_id} run"] = time.monotonic() - started
        return state

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                              params={"limit": 100})["task_instances"])

    def why(self, dag_id: str, run_id: str) -> str:
        """Each task's state and host, then the log tails of the failed ones (or the stack's logs)."""
        tis = self.task_instances(dag_id, run_id)
        lines = [f"{ti['task_id']}[{ti['map_index']}] {ti['state']} on {ti['hostname']} (queue {ti['queue']})"
                 for ti in tis]
        failed = [ti for ti in tis if ti["state"] == "failed"]
        tails = [self.stack.task_log_tail(dag_id, run_id, ti["task_id"], ti["map_index"]) for ti in failed]
        return "\n".join([f"{dag_id} {run_id}:", *lines, *tails] if failed else
                         [f"{dag_id} {run_id}:", *lines, self.stack.log_tail(30)])


class MemorySampler:
    """The stack's total memory, sampled every second in a thread: the highest sums of RSS and of PSS.

    RSS counts pages shared between processes (Celery's forks, Airflow's imports) once per process;
    PSS splits them among the processes sharing them, so it is what the stack really takes.
    """

    def __init__(self, stack: AirflowStack) -> None:
        self.stack, self.peak_rss, self.peak_pss = stack, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            rss = pss = 0
            for proc in self.stack.members():
                try:
                    info = proc.memory_full_info()
                except psutil.Error:
                    continue
                rss, pss = rss + info.rss, pss + getattr(info, "pss", 0)
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)


def _listening(proc: psutil.Process) -> list[Any]:
    try:
        return [c for c in proc.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    except psutil.Error:
        return []


# ---------------------------------------------------------------------------- the stack


def _config(directory: Path, pg_server: EmbeddedPostgres) -> dict[str, Any]:
    return {
        "backup": {
            "name": BACKUP_NAME,
            "source": {
                # Only worker-files has BACKUP_OPS_APP_ROOT: elsewhere the folder does not exist.
                "files": {"relative_path": f"${{BACKUP_OPS_APP_ROOT:-{directory / 'no-app-here'}}}",
                          "include": [".env", "config", "storage"]},
                "databases": [{"conn_id": conn_id, "format": fmt} for conn_id, (_, fmt) in DATABASES.items()],
                "pg_bin_dir": str(pg_server.bin_dir),
            },
            "destination": {"destinations": [
                {"name": "offsite", "type": "s3", "conn_id": S3_CONN_ID, "bucket": TEST_BUCKET,
                 "prefix": DEST_PREFIX, "part_size_mb": 5},
                {"name": "local", "type": "local", "path": str(directory / "backups")},
            ]},
            # Each worker's own local disk; the scheduler and dag-processor never write there.
            "staging_directory": f"${{BACKUP_OPS_WORK:-{directory / 'elsewhere'}}}/staging",
            "staging": {"url": f"s3://{STAGING_BUCKET}/{STAGING_PREFIX}", "conn_id": S3_CONN_ID},
            "files_queue": FILES_QUEUE,
            "password": {"variable": "backup_archive_password"},
            "encryption": "aes256",
            "tries": 1,
            "retry_delay": 0,
            "deadline_minutes": 30,
        },
        "cleanup": {"tries": 1, "retry_delay": 0},
        # Scratch databases on the test server, through a connection of its own (never a source database).
        "restore_drill": {"target_conn_id": DRILL_SERVER, "tries": 1, "retry_delay": 0},
        # The drill runs before the monitor, which then finds its report on S3 (restore_drill_fresh).
        "monitor": {"tries": 1, "retry_delay": 0, "restore_drill_max_age_days": 35},
    }


def _workers(directory: Path, app: Path) -> list[CeleryWorker]:
    def own_folders(name: str, **extra: str) -> dict[str, str]:
        tmp, work = directory / name / "tmp", directory / name / "work"
        tmp.mkdir(parents=True)
        work.mkdir(parents=True)
        return {"TMPDIR": str(tmp), "BACKUP_OPS_WORK": str(work), **extra}

    return [
        CeleryWorker(WORKER_A, queues=("default",), concurrency=2, env=own_folders(WORKER_A)),
        # One slot: see the module's docstring.
        CeleryWorker(WORKER_FILES, queues=("default", FILES_QUEUE), concurrency=1,
                     env=own_folders(WORKER_FILES, BACKUP_OPS_APP_ROOT=str(app))),
    ]


@pytest.fixture
def deployment(tmp_path: Path, pg_server: EmbeddedPostgres, sample_template: str, s3_endpoint: str,
               s3_client: Any) -> Iterator[Deployment]:
    """The whole stack with two application databases and the application's files; everything stopped after."""
    started = time.monotonic()
    s3_client.create_bucket(Bucket=STAGING_BUCKET)
    for database, _ in DATABASES.values():
        pg_server.drop_database(database)
        pg_server.create_database(database, template=sample_template)
    app = tmp_path / "app"
    for relative, content in APP_FILES.items():
        (app / relative).parent.mkdir(parents=True, exist_ok=True)
        (app / relative).write_bytes(content)
    (tmp_path / "backups").mkdir()
    config_file = tmp_path / "backup_config.yaml"
    config_file.write_text(yaml.safe_dump(_config(tmp_path, pg_server)))
    workers = _workers(tmp_path, app)
    extra = {
        **celery_env(free_port()),
        **simple_auth(tmp_path, {USER: LOGIN}),
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "4",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "BACKUP_OPS_CONFIG": str(config_file),
        "AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD": ARCHIVE_PASSWORD,
        f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": os.environ[f"AIRFLOW_CONN_{S3_CONN_ID.upper()}"],
        **{f"AIRFLOW_CONN_{conn_id.upper()}": pg_server.conn_uri(database)
           for conn_id, (database, _) in DATABASES.items()},
        f"AIRFLOW_CONN_{DRILL_SERVER.upper()}": pg_server.conn_uri("postgres"),
    }
    try:
        with running_airflow(pg_server, tmp_path, dags_folder=ROOT / "dags", name="celery", extra=extra) as stack, \
                MemorySampler(stack) as memory:
            start_redis(stack)
            start_airflow(stack)
            for worker in workers:
                start_worker(stack, worker)
            stack.wait_for_api(STARTUP_TIMEOUT)
            deployment = Deployment(stack, access_token(stack.api_url, USER, LOGIN),
                                    {w.name: (Path(w.env["TMPDIR"]), Path(w.env["BACKUP_OPS_WORK"]))
                                     for w in workers},
                                    tmp_path / "backups" / BACKUP_NAME, memory, (ARCHIVE_PASSWORD, pg_server.password))
            # Two slots: the two dumps are queued together (see the module's docstring).
            deployment.call("POST", "/pools", json={"name": DUMP_POOL, "slots": 2,
                                                    "description": "backup-ops: dumps of the distributed test"})
            wait_for_workers(stack, workers, STARTUP_TIMEOUT)
            deployment.timings["stack up"] = time.monotonic() - started
            yield deployment
    finally:
        for database, _ in DATABASES.values():
            pg_server.drop_database(database)


# ---------------------------------------------------------------------------- the test


def test_backup_daily_cleanup_and_monitor_on_two_celery_workers(
    deployment: Deployment, s3_client: Any, tmp_path: Path
) -> None:
    d, stack = deployment, deployment.stack
    test_started = time.monotonic()
    stack.wait_for("the DAGs to be parsed", lambda: all(
        requests.get(f"{d.api}/dags/{dag}", headers={"Authorization": f"Bearer {d.token}"}, timeout=10).ok
        for dag in DAGS), 90)
    for dag in DAGS:
        d.call("PATCH", f"/dags/{dag}", json={"is_paused": False})

    run = d.trigger("backup_daily")
    state = d.wait_for_run("backup_daily", run)
    assert state == "success", d.why("backup_daily", run)
    # Every process of the stack listens on loopback only (api-server, redis; no log servers).
    listening = {(proc.name(), c.laddr.ip, c.laddr.port) for proc in stack.members()
                 for c in _listening(proc)}
    assert listening and {ip for _, ip, _ in listening} == {"127.0.0.1"}, listening

    # Where each task ran: both workers; the files' tasks on the files host, from its queue.
    tis = d.task_instances("backup_daily", run)
    hosts = {ti["hostname"] for ti in tis}
    assert hosts == {WORKER_A, WORKER_FILES}, d.why("backup_daily", run)
    for ti in tis:
        if ti["task_id"] in ("collect_files", "build_archive"):
            assert (ti["hostname"], ti["queue"]) == (WORKER_FILES, FILES_QUEUE), d.why("backup_daily", run)

    # The archive on S3: both dumps and the files, every member verified with the password.
    listing = s3_client.list_objects_v2(Bucket=TEST_BUCKET, Prefix=f"{DEST_PREFIX}/{BACKUP_NAME}/").get("Contents", [])
    keys = sorted(o["Key"] for o in listing)
    (archive_key,) = [k for k in keys if k.endswith(".zip")]
    assert keys == [archive_key, archive_key + ".json"]
    downloaded = tmp_path / "downloaded.zip"
    s3_client.download_file(TEST_BUCKET, archive_key, str(downloaded))
    receipt = json.loads(s3_client.get_object(Bucket=TEST_BUCKET, Key=archive_key + ".json")["Body"].read())
    verified = verify_archive(downloaded, password=ARCHIVE_PASSWORD.encode(), expected_sha256=receipt["sha256"],
                              expected_size=receipt["size"])
    manifest = verified.manifest
    assert {(db.conn_id, db.database, db.format) for db in manifest.databases} == {
        (conn_id, database, fmt) for conn_id, (database, fmt) in DATABASES.items()}
    assert all(db.total_rows > 1000 for db in manifest.databases)
    members = {m.name: m for m in manifest.members}
    for db in manifest.databases:
        assert db.member in members and members[db.member].size > 0
    for relative, content in APP_FILES.items():
        assert members[relative].sha256 == hashlib.sha256(content).hexdigest(), relative
    assert manifest.file_count == len(APP_FILES) and not manifest.skipped
    # The same bytes on the local destination.
    local = d.local_backups / archive_key.rsplit("/", 1)[1]
    assert hashlib.sha256(local.read_bytes()).hexdigest() == receipt["sha256"]

    # Nothing left behind: no staging object, no unfinished upload, no file on either worker's disk.
    staged = s3_client.list_objects_v2(Bucket=STAGING_BUCKET).get("Contents", [])
    assert [o["Key"] for o in staged] == []
    assert s3_client.list_multipart_uploads(Bucket=STAGING_BUCKET).get("Uploads", []) == []
    for name, (tmp, work) in d.local_folders.items():
        assert (work / "staging").is_dir(), f"{name}'s tasks did not work in its own backup.staging_directory"
        left = [str(p) for folder in (tmp, work) for p in folder.rglob("*") if not p.is_dir()]
        assert left == [], f"{name} left files on its local disk: {left}"
    assert not (tmp_path / "elsewhere").exists()  # the config's default, where no worker points

    # A restore drill of the S3 copy, its phases on whichever worker takes them: it restores both
    # databases and checks the files, and leaves no plaintext on any worker (at most an encrypted copy).
    drill = d.trigger("restore_drill", {"destination": "offsite", "backup": "latest"})
    assert d.wait_for_run("restore_drill", drill) == "success", d.why("restore_drill", drill)
    drill_tis = d.task_instances("restore_drill", drill)
    assert {ti["state"] for ti in drill_tis} == {"success"}, d.why("restore_drill", drill)
    reports = s3_client.list_objects_v2(Bucket=TEST_BUCKET, Prefix=f"{DEST_PREFIX}/{BACKUP_NAME}/restore-drills/")
    (report_key,) = [o["Key"] for o in reports.get("Contents", [])]
    report = json.loads(s3_client.get_object(Bucket=TEST_BUCKET, Key=report_key)["Body"].read())
    assert (report["archive"], report["outcome"]) == (f"{BACKUP_NAME}/{archive_key.rsplit('/', 1)[1]}", "succeeded")
    for name, (tmp, work) in d.local_folders.items():
        left = [p for folder in (tmp, work) for p in folder.rglob("*") if not p.is_dir()]
        plaintext = [str(p) for p in left if not p.name.startswith("archive.zip")]
        assert plaintext == [], f"the drill left files on {name}: {plaintext}"
    keys = sorted([*keys, report_key])

    # backup_cleanup and backup_monitor on the same stack, at the same time.
    runs = {dag: d.trigger(dag) for dag in ("backup_cleanup", "backup_monitor")}
    for dag, run_id in runs.items():
        assert d.wait_for_run(dag, run_id) == "success", d.why(dag, run_id)
        assert {ti["state"] for ti in d.task_instances(dag, run_id)} == {"success"}, d.why(dag, run_id)
    assert [o["Key"] for o in s3_client.list_objects_v2(Bucket=TEST_BUCKET).get("Contents", [])] == keys
    # No secret in any process's or task's log.
    logs = {p: p.read_text(errors="replace") for p in stack.home.rglob("*.log") if p.is_file()}
    assert len(logs) > 20
    assert [str(p) for p, text in logs.items() if any(secret in text for secret in d.secrets)] == []

    d.timings["test"] = time.monotonic() - test_started
    stopping = time.monotonic()
    stack.stop()
    d.timings["stop"] = time.monotonic() - stopping
    assert stack.members() == []
    assert all(p.returncode is not None for p in stack.processes.values())
    placement = {f"{ti['task_id']}[{ti['map_index']}]": ti["hostname"] for ti in tis}
    print("\ntimings (s):", json.dumps({k: round(v, 1) for k, v in {**stack.timings, **d.timings}.items()}),
          f"\npeak memory of the stack: RSS {d.memory.peak_rss / 2**30:.2f} GiB, "
          f"PSS {d.memory.peak_pss / 2**30:.2f} GiB",
          "\nbackup_daily's tasks ran on:", json.dumps(placement),
          "\nrestore_drill's tasks ran on:", json.dumps({ti["task_id"]: ti["hostname"] for ti in drill_tis}))
