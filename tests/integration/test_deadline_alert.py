"""The late-backup alert: backup_daily's Deadline Alert and its callback, up to the mail it sends.

The end-to-end test runs Airflow as it runs in production, on loopback: an api-server (with the
execution API the LocalExecutor's tasks call), a scheduler, a dag-processor and a triggerer, on a
metadata database created on the test PostgreSQL server, with the repository's ``plugins/`` as
plugins folder and no PYTHONPATH, so the triggerer imports the callback the way a deployment's
would. A small DAG whose task outlives a 10-second deadline carries ``backup_late_alert`` (the
alert backup_daily builds); the test waits for the ``backup_late`` mail at the test's SMTP
server, then stops every process by its own PID and checks that none is left.

The callback's own rules (nothing for a run that has ended, the run's ``disable_notifications``)
are tested by awaiting it in this process against the same SMTP server.
"""

from __future__ import annotations

import asyncio
import json
import os
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from backup_ops.airflow.deadline import (
    ALERT_NAME,
    DISABLE_ENV,
    late_backup_alert,
    late_notification,
    notify_backup_late,
)
from backup_ops.core.config import load_config, parse_config
from backup_ops.core.errors import ConfigError
from devtools.pgserver import EmbeddedPostgres
from tests.fixtures_airflow import AirflowStack, running_airflow
from tests.fixtures_smtp import SMTP_CONN_ID, MailSink

ROOT = Path(__file__).resolve().parents[2]
BACKUP_NAME = "late-app"
DEADLINE_SECONDS = 10
TASK_SECONDS = 60  # at most: the test lets the task finish once the mail is in
MAIL_TIMEOUT = 90

LATE_DAG = f'''
"""A run that outlives its {DEADLINE_SECONDS}-second deadline, with backup_daily's alert."""
import time
from datetime import datetime, timedelta
from pathlib import Path

from airflow.sdk import dag, task

from backup_ops.airflow.deadline import backup_late_alert


@dag(dag_id="late_backup", schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["test"],
     deadline=backup_late_alert({BACKUP_NAME!r}, timedelta(seconds={DEADLINE_SECONDS})))
def late_backup():
    @task
    def slow_dump():
        give_up = time.monotonic() + {TASK_SECONDS}
        while not Path(__file__).with_name("release").exists() and time.monotonic() < give_up:
            time.sleep(0.2)

    slow_dump()


late_backup()
'''


def write_config(directory: Path, **backup: Any) -> Path:
    """A valid config whose notifications mail to the test's SMTP connection (failures and late: the defaults)."""
    config = {
        "backup": {
            "name": BACKUP_NAME,
            "source": {"databases": []},
            "destination": {"destinations": [{"name": "local", "type": "local", "path": str(directory / "backups")}]},
            "staging_directory": str(directory / "staging"),
            "encryption": "none",
            **backup,
        },
        "notifications": {"mail": {"to": ["ops@example.com"], "from": "backups@example.com",
                                    "conn_id": SMTP_CONN_ID}},
    }
    path = directory / "backup_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def context_of(state: str, *, queued_at: datetime, deadline: timedelta, conf: dict[str, Any] | None = None,
               started: bool = True) -> dict[str, Any]:
    """The context the triggerer hands an AsyncCallback (as 3.3.2's ``Deadline.handle_miss`` builds it)."""
    return {
        "dag_run": {"dag_id": "backup_daily", "dag_run_id": "manual__2026-11-29T02:00:00+00:00", "state": state,
                    "queued_at": queued_at.isoformat().replace("+00:00", "Z"),
                    "start_date": (queued_at + timedelta(seconds=2)).isoformat() if started else None,
                    "end_date": None, "conf": conf or {}},
        "deadline": {"id": "0195f0aa-0000-7000-8000-000000000000", "deadline_time": (queued_at + deadline).isoformat()},
    }


# ---------------------------------------------------------------------------- the alert on backup_daily


class TestAlertWiring:
    def test_deadline_minutes_defaults_to_120_and_null_or_0_turns_it_off(self) -> None:
        raw = yaml.safe_load((ROOT / "include" / "backup_config.yaml").read_text())
        raw["backup"].pop("deadline_minutes", None)
        assert parse_config(raw).backup.deadline_minutes == 120
        for off in (None, 0):
            raw["backup"]["deadline_minutes"] = off
            assert parse_config(raw).backup.deadline_minutes is None
        raw["backup"]["deadline_minutes"] = 90
        assert parse_config(raw).backup.deadline_minutes == 90

    @pytest.mark.parametrize("value", [-1, 1381, "2h", 1.5, True])
    def test_a_bad_deadline_names_the_key_and_what_is_accepted(self, value: Any) -> None:
        raw = yaml.safe_load((ROOT / "include" / "backup_config.yaml").read_text())
        raw["backup"]["deadline_minutes"] = value
        with pytest.raises(ConfigError, match=r"backup\.deadline_minutes must be a whole number 0–1380, got"):
            parse_config(raw)

    def test_the_alert_awaits_backup_ops_callback_from_when_the_run_was_queued(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from airflow.sdk import AsyncCallback, DeadlineReference

        monkeypatch.delenv(DISABLE_ENV, raising=False)
        alert = late_backup_alert(load_config(write_config(tmp_path, deadline_minutes=45)))
        assert alert is not None
        assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
        assert alert.interval == timedelta(minutes=45)
        assert isinstance(alert.callback, AsyncCallback)
        # The triggerer imports the callback by this path: a top-level coroutine in the plugins folder.
        assert alert.callback.path == "backup_ops.airflow.deadline.notify_backup_late"
        assert alert.callback.kwargs == {"backup_name": BACKUP_NAME}  # names only, never a secret
        assert alert.name == ALERT_NAME

    def test_the_env_flag_and_a_zero_deadline_leave_the_alert_off(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv(DISABLE_ENV, "1")
        assert late_backup_alert(load_config(write_config(tmp_path))) is None
        monkeypatch.setenv(DISABLE_ENV, "")
        assert late_backup_alert(load_config(write_config(tmp_path, deadline_minutes=0))) is None
        assert late_backup_alert(load_config(write_config(tmp_path))) is not None

    def test_backup_daily_carries_the_alert_unless_the_flag_is_set(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from airflow.dag_processing.dagbag import DagBag

        monkeypatch.delenv(DISABLE_ENV, raising=False)
        dag = DagBag(dag_folder=str(ROOT / "dags" / "backup_daily.py")).dags["backup_daily"]
        [alert] = dag.deadline
        assert alert.interval == timedelta(minutes=load_config().backup.deadline_minutes or 0)
        monkeypatch.setenv(DISABLE_ENV, "1")
        assert not DagBag(dag_folder=str(ROOT / "dags" / "backup_daily.py")).dags["backup_daily"].deadline


# ---------------------------------------------------------------------------- the callback, awaited here


class TestCallback:
    @pytest.fixture
    def config_env(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        path = write_config(tmp_path)
        monkeypatch.setenv("BACKUP_OPS_CONFIG", str(path))
        return path

    def test_a_run_still_running_past_its_deadline_mails_backup_late(
        self, config_env: Path, mailbox: MailSink
    ) -> None:
        queued = datetime(2026, 11, 29, 2, 0, 0, 500_000, tzinfo=UTC)
        result = asyncio.run(notify_backup_late(backup_name=BACKUP_NAME,
                                                context=context_of("running", queued_at=queued,
                                                                   deadline=timedelta(minutes=120))))
        assert result is None  # a dict would crash 3.3.2's triggerer
        assert len(mailbox.messages) == 1
        body = mailbox.bodies()[0]
        assert "manual__2026-11-29T02:00:00+00:00" in body
        assert "queued at 2026-11-29 02:00:00 UTC" in body
        assert "deadline 2026-11-29 04:00:00 UTC (120 minutes after it was queued)" in body
        assert "late" in mailbox.messages[0]["Subject"].lower()

    @pytest.mark.parametrize("state", ["success", "failed"])
    def test_a_run_that_has_ended_sends_nothing(self, config_env: Path, mailbox: MailSink, state: str) -> None:
        # 3.3.2 fires the deadline of a run that failed before it (apache/airflow#60927).
        queued = datetime.now(UTC) - timedelta(hours=3)
        assert asyncio.run(notify_backup_late(backup_name=BACKUP_NAME, context=context_of(
            state, queued_at=queued, deadline=timedelta(minutes=120)))) is None
        assert mailbox.messages == []

    def test_the_runs_disable_notifications_param_is_obeyed(self, config_env: Path, mailbox: MailSink) -> None:
        queued = datetime.now(UTC) - timedelta(hours=3)
        asyncio.run(notify_backup_late(backup_name=BACKUP_NAME, context=context_of(
            "running", queued_at=queued, deadline=timedelta(minutes=120), conf={"disable_notifications": True})))
        assert mailbox.messages == []

    def test_a_broken_config_in_the_triggerer_is_logged_not_raised(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mailbox: MailSink, caplog: pytest.LogCaptureFixture
    ) -> None:
        monkeypatch.setenv("BACKUP_OPS_CONFIG", str(tmp_path / "missing.yaml"))
        queued = datetime.now(UTC) - timedelta(hours=3)
        asyncio.run(notify_backup_late(backup_name=BACKUP_NAME, context=context_of(
            "running", queued_at=queued, deadline=timedelta(minutes=120))))
        assert mailbox.messages == []
        assert "is late, but backup_late cannot be sent: Config file" in caplog.text

    def test_a_queued_run_is_late_too_and_says_it_has_not_started(self, config_env: Path) -> None:
        queued = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)
        note = late_notification(load_config(config_env), BACKUP_NAME,
                                 context_of("queued", queued_at=queued, deadline=timedelta(seconds=90),
                                            started=False)["dag_run"],
                                 {"deadline_time": (queued + timedelta(seconds=90)).isoformat()})
        assert note.event == "backup_late" and note.is_failure
        assert "is still queued past its deadline 2026-11-29 02:01:30 UTC (90 seconds after it was queued)" in \
            note.summary
        assert note.details[0] == "Run manual__2026-11-29T02:00:00+00:00 has not started yet."


# ---------------------------------------------------------------------------- end to end


@pytest.fixture
def airflow_stack(tmp_path: Path, pg_server: EmbeddedPostgres, smtp_server: MailSink) -> Iterator[AirflowStack]:
    """api-server, scheduler, dag-processor and triggerer with a fresh metadata database; all stopped afterwards."""
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "late_backup.py").write_text(textwrap.dedent(LATE_DAG))
    extra = {
        "AIRFLOW__CORE__PARALLELISM": "2",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_POOL_SIZE": "2",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_MAX_OVERFLOW": "4",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "BACKUP_OPS_CONFIG": str(write_config(tmp_path)),
        f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}": os.environ[f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}"],
    }
    with running_airflow(pg_server, tmp_path, dags_folder=tmp_path / "dags", name="deadline", extra=extra) as stack:
        stack.start("api-server", "api-server")
        stack.start("scheduler", "scheduler", "--skip-serve-logs")
        stack.start("dag-processor", "dag-processor")
        stack.start("triggerer", "triggerer", "--skip-serve-logs")
        stack.wait_for_api()
        yield stack


@pytest.mark.slow
def test_a_run_past_its_deadline_mails_backup_late_from_the_triggerer(
    airflow_stack: AirflowStack, mailbox: MailSink
) -> None:
    stack, api = airflow_stack, f"{airflow_stack.api_url}/api/v2"
    started = time.monotonic()
    stack.wait_for("the DAG to be parsed", lambda: requests.get(f"{api}/dags/late_backup", timeout=5).ok, 90)
    stack.wait_for("the scheduler, dag-processor and triggerer", lambda: all(
        (requests.get(f"{api}/monitor/health", timeout=5).json()[part] or {}).get("status") == "healthy"
        for part in ("scheduler", "dag_processor", "triggerer")), 60)
    answer = requests.post(f"{api}/dags/late_backup/dagRuns", json={"logical_date": None}, timeout=30)
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["dag_run_id"]
    triggered = time.monotonic()

    stack.wait_for("the backup_late mail", lambda: mailbox.messages, MAIL_TIMEOUT)
    mailed = time.monotonic()
    run = requests.get(f"{api}/dags/late_backup/dagRuns/{run_id}", timeout=10).json()
    assert run["state"] == "running"  # the alert came while the run was still going
    queued_at = datetime.fromisoformat(run["queued_at"])
    due = queued_at + timedelta(seconds=DEADLINE_SECONDS)
    subject, body = mailbox.messages[0]["Subject"], mailbox.bodies()[0]
    assert "late" in subject.lower() and BACKUP_NAME in subject
    assert f"run {run_id} of late_backup, queued at {queued_at:%Y-%m-%d %H:%M:%S} UTC, is still running" in body
    assert f"past its deadline {due:%Y-%m-%d %H:%M:%S} UTC ({DEADLINE_SECONDS} seconds after it was queued)" in body
    # The run goes on after the alert and ends well; a callback returning a dict would instead have
    # crashed the triggerer, which then runs it (and mails) again.
    (Path(stack.env["AIRFLOW__CORE__DAGS_FOLDER"]) / "release").touch()
    stack.wait_for("the run to succeed", lambda: requests.get(f"{api}/dags/late_backup/dagRuns/{run_id}", timeout=5)
                   .json()["state"] == "success", 60)
    assert len(mailbox.messages) == 1
    # Sent by the triggerer (the callback's own log line is in its log), not by a task or the scheduler.
    triggerer_log = (stack.home / "triggerer.log").read_text(errors="replace")
    assert f"Backup {BACKUP_NAME} is late: run {run_id}" in triggerer_log and "Sent on: mail" in triggerer_log

    stack.stop()
    assert stack.members() == []
    assert all(p.returncode is not None for p in stack.processes.values())
    stack.timings.update({"parsed and triggered": triggered - started, "mail after trigger": mailed - triggered})
    print("timings (s):", json.dumps({k: round(v, 1) for k, v in stack.timings.items()}))
