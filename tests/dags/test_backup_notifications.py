"""One notification per run, on the channels its event is routed to, through real servers on loopback.

Mail goes to a real SMTP server (aiosmtpd); Slack and the webhook to a real HTTP server that records
each request. The runs are real ``dag.test()`` runs of backup_daily and backup_cleanup. Each failed
task's cause travels through its XCom (``backup_ops.airflow.failures``), never a worker's disk.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dags.conftest import APP_PASSWORD, APP_USER, PASSWORD, run_backup, set_notifications
from tests.fixtures_http import (
    SLACK_CONN_ID,
    SLACK_TOKEN,
    WEBHOOK_CONN_ID,
    WEBHOOK_ENDPOINT,
    WEBHOOK_PASSWORD,
    HttpSink,
    channel_connections,
    serve_http,
)
from tests.fixtures_smtp import MailSink

BAD_PASSWORD = "Not-The-Password-42"
MAIL = {"to": ["ops@example.com"], "from": "backups@example.com", "conn_id": "smtp_default"}
SLACK = {"conn_id": SLACK_CONN_ID}
WEBHOOK = {"conn_id": WEBHOOK_CONN_ID, "endpoint": WEBHOOK_ENDPOINT}
SECRETS = (BAD_PASSWORD, APP_PASSWORD, PASSWORD, SLACK_TOKEN, WEBHOOK_PASSWORD)


@pytest.fixture(scope="module")
def http_sink() -> Iterator[HttpSink]:
    with serve_http() as sink, channel_connections(sink):
        yield sink


@pytest.fixture
def inbox(http_sink: HttpSink, mailbox: MailSink) -> HttpSink:
    http_sink.reset()
    return http_sink


@pytest.fixture
def notifying(backup_env: dict[str, Any], smtp_server: MailSink) -> Iterator[dict[str, Any]]:
    """backup_env whose config mails on failure and on success (the laravel-style shorthand)."""
    original = set_notifications(backup_env["config"], mail=MAIL, on_failure=True, on_success=True)
    yield backup_env
    backup_env["config"].write_text(original)


@pytest.fixture
def routing(backup_env: dict[str, Any], smtp_server: MailSink, inbox: HttpSink) -> Iterator[Any]:
    """Call with an ``events`` map (and channel overrides) to configure mail, Slack and the webhook."""
    original = backup_env["config"].read_text()

    def route(events: dict[str, list[str]], **channels: Any) -> None:
        set_notifications(backup_env["config"], events=events, **{"mail": MAIL, "slack": SLACK, "webhook": WEBHOOK,
                                                                   **channels})

    yield route
    backup_env["config"].write_text(original)


@pytest.fixture
def wrong_db_password(backup_env: dict[str, Any], pg_server: Any) -> Iterator[None]:
    os.environ["AIRFLOW_CONN_APP_DB"] = pg_server.conn_uri(backup_env["db"], user=APP_USER, password=BAD_PASSWORD)
    yield
    os.environ["AIRFLOW_CONN_APP_DB"] = pg_server.conn_uri(backup_env["db"], user=APP_USER, password=APP_PASSWORD)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def failure_xcoms(run: Any) -> dict[tuple[str, int], Any]:
    """The ``failure`` XComs the run's tasks left in the metadata database."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(XComModel).filter_by(dag_id=run.dag_id, run_id=run.run_id, key="failure").all()
        return {(row.task_id, row.map_index): XComModel.deserialize_value(row) for row in rows}


# ---------------------------------------------------------------------------- backup_daily, mail


def test_failed_run_sends_one_mail_naming_the_cause(notifying: dict[str, Any], wrong_db_password: None,
                                                    mailbox: MailSink) -> None:
    run, _ = run_backup()
    assert run.state == "failed"
    assert len(mailbox.messages) == 1
    message = mailbox.messages[0]
    assert message["Subject"] == "Failed backup of invoicing-app"
    assert message["To"] == "ops@example.com"
    (body,) = mailbox.bodies()
    assert "Important: An error occurred while backing up invoicing-app" in body
    assert "Failed tasks:\n- check_databases: " in body
    assert "password authentication failed" in body
    assert BAD_PASSWORD not in body
    # The cause reached finalize through the failed task's XCom; nothing was written below the staging root.
    cause = failure_xcoms(run)[("check_databases", -1)]
    assert cause["task"] == "check_databases" and "password authentication failed" in cause["error"]
    assert [p for p in notifying["staging"].rglob("*") if p.is_file()] == []
    assert not (notifying["staging"] / ".run-notes").exists()


def test_the_cause_reaches_finalize_without_touching_the_workers_disk(
        notifying: dict[str, Any], wrong_db_password: None, mailbox: MailSink) -> None:
    # The old notes file lived in <staging>/.run-notes/; with a file in its way, nothing could be noted
    # there (as on a worker whose disk the last task never sees). The cause still arrives, via XCom.
    staging: Path = notifying["staging"]
    staging.mkdir(exist_ok=True)
    blocker = staging / ".run-notes"
    blocker.write_text("not a directory")
    try:
        run, _ = run_backup()
        assert run.state == "failed"
        (body,) = mailbox.bodies()
        assert "- check_databases: " in body and "password authentication failed" in body
        assert "see the failed task's log" not in body
        assert list(staging.rglob("*")) == [blocker], "nothing else was written below the staging root"
    finally:
        blocker.unlink()


def test_a_retried_failure_is_notified_once_with_its_last_cause(
        notifying: dict[str, Any], backup_env: dict[str, Any], mailbox: MailSink) -> None:
    port = free_port()  # nothing listens: "cannot reach", which a retry might fix (backup.tries is 2)
    original = os.environ["AIRFLOW_CONN_APP_DB"]
    os.environ["AIRFLOW_CONN_APP_DB"] = f"postgresql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{port}/{backup_env['db']}"
    try:
        run, _ = run_backup()
    finally:
        os.environ["AIRFLOW_CONN_APP_DB"] = original
    tries = {ti.task_id: ti.try_number for ti in run.get_task_instances()}
    assert run.state == "failed" and tries["check_databases"] == 2
    assert len(mailbox.messages) == 1
    (body,) = mailbox.bodies()
    assert body.count("- check_databases: ") == 1
    assert f"127.0.0.1:{port}" in body


def test_disable_notifications_param_silences_the_run(notifying: dict[str, Any], wrong_db_password: None,
                                                      mailbox: MailSink) -> None:
    run, _ = run_backup({"disable_notifications": True})
    assert run.state == "failed"
    assert mailbox.messages == []


def test_successful_run_mails_only_when_on_success(notifying: dict[str, Any], mailbox: MailSink) -> None:
    run, _ = run_backup()
    assert run.state == "success"
    assert [m["Subject"] for m in mailbox.messages] == ["Successful new backup of invoicing-app"]
    (body,) = mailbox.bodies()
    assert "Great news, a new backup of invoicing-app was successfully created on the destination named local." in body
    assert "verified copy: file://" in body
    assert "Destination: local\nNewest backup size: " in body

    set_notifications(notifying["config"], mail=MAIL, on_failure=True, on_success=False)
    mailbox.messages.clear()
    run, _ = run_backup()
    assert run.state == "success"
    assert mailbox.messages == []


# ---------------------------------------------------------------------------- every channel


def test_a_healthy_run_with_success_notifications_reaches_every_channel(
        routing: Any, backup_env: dict[str, Any], inbox: HttpSink, mailbox: MailSink) -> None:
    routing({"backup_successful": ["mail", "slack", "webhook"]})

    run, _ = run_backup()

    assert run.state == "success"
    zips = sorted(backup_env["backups"].glob("*.zip"))
    newest = zips[-1]
    assert [m["Subject"] for m in mailbox.messages] == ["Successful new backup of invoicing-app"]
    (hook,) = inbox.to(WEBHOOK_ENDPOINT)
    sent = hook.json()
    assert (sent["event"], sent["application"], sent["destination"], sent["failures"]) == (
        "backup_successful", "invoicing-app", "local", [])
    assert (sent["backup_count"], sent["newest_size"], sent["used_storage"]) == (
        len(zips), newest.stat().st_size, sum(z.stat().st_size for z in zips))
    assert (sent["dag_id"], sent["run_id"]) == ("backup_daily", run.run_id)
    assert any(f"archive {newest.name}" in line for line in sent["details"])
    (slack,) = inbox.to("/services/")
    fields = {f["text"].split("\n")[0]: f["text"].split("\n")[1]
              for block in slack.json()["blocks"] for f in block.get("fields", [])}
    assert fields["*Destination*"] == "local" and fields["*Number of backups*"] == str(len(zips))


def test_a_failure_routed_to_slack_and_the_webhook_names_the_task_and_its_cause_and_no_secret(
        routing: Any, wrong_db_password: None, inbox: HttpSink, mailbox: MailSink,
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    routing({"backup_failed": ["slack", "webhook"]})

    run, _ = run_backup()

    assert run.state == "failed"
    assert mailbox.messages == [], "backup_failed is routed to Slack and the webhook only"
    (hook,) = inbox.to(WEBHOOK_ENDPOINT)
    sent = hook.json()
    assert sent["event"] == "backup_failed"
    (failure,) = sent["failures"]
    assert failure["source"] == "check_databases" and "password authentication failed" in failure["message"]
    assert sent["summary"].startswith("No archive was built, so nothing was published: check_databases: ")
    (slack,) = inbox.to("/services/")
    blocks = json.dumps(slack.json())
    assert "Failed backup of invoicing-app" in blocks and "- check_databases: " in blocks
    everything = "".join(r.body.decode() for r in inbox.requests) + capfd.readouterr().out + caplog.text
    assert "password authentication failed" in everything
    for secret in SECRETS:
        assert secret not in everything


def test_channels_that_cannot_deliver_never_fail_a_successful_backup(
        routing: Any, inbox: HttpSink, mailbox: MailSink, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEAD", json.dumps(
        {"conn_type": "smtp", "host": "127.0.0.1", "port": free_port(),
         "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 5}}))
    inbox.answer("/services/", 500)
    routing({"backup_successful": ["mail", "slack", "webhook"]}, mail={**MAIL, "conn_id": "smtp_dead"},
            webhook={"conn_id": "no_such_connection", "endpoint": WEBHOOK_ENDPOINT})

    run, states = run_backup()

    assert run.state == "success" and states[("finalize", -1)] == "success"
    logged = capfd.readouterr().out + caplog.text
    for channel, conn_id in (("mail", "smtp_dead"), ("slack", SLACK_CONN_ID), ("webhook", "no_such_connection")):
        assert f"Could not send the backup_successful notification on {channel} (Airflow connection '{conn_id}')" \
            in logged
    assert len(inbox.to("/services/")) == 1 and mailbox.messages == []
    for secret in SECRETS:
        assert secret not in logged


# ---------------------------------------------------------------------------- backup_cleanup


def test_a_failed_cleanup_sends_one_notification_with_each_failed_destination_and_the_cleaned_ones_properties(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: None, inbox: HttpSink, mailbox: MailSink,
        smtp_server: MailSink) -> None:
    from tests.dags.test_backup_cleanup import NOW, four_daily_backups, parse_cleanup_dag, write_config

    good, broken = tmp_path / "good", tmp_path / "broken"
    good.mkdir()
    broken.write_text("a file where a directory should be")
    config = write_config(tmp_path, {"good": good, "broken": broken},
                          delete_oldest_backups_when_using_more_megabytes_than=2)
    set_notifications(config, events={"cleanup_failed": ["mail", "webhook"]}, mail=MAIL, webhook=WEBHOOK)
    monkeypatch.setenv("BACKUP_OPS_CONFIG", str(config))
    four_daily_backups(good)

    run = parse_cleanup_dag().test(logical_date=NOW)

    assert run.state == "failed"
    assert [m["Subject"] for m in mailbox.messages] == ["Cleaning up the backups of mysite failed."]
    cause = f"Destination broken: directory {broken} does not exist; create it or fix destination path."
    (body,) = mailbox.bodies()
    assert f"Failed tasks:\n- cleanup[broken]: {cause}" in body
    (hook,) = inbox.to(WEBHOOK_ENDPOINT)
    sent = hook.json()
    assert sent["event"] == "cleanup_failed"
    assert sent["failures"] == [{"source": "cleanup[broken]", "message": cause}]
    # The one destination that was cleaned, as it is after the cleanup (the two newest backups kept).
    assert (sent["destination"], sent["backup_count"], sent["used_storage"]) == ("good", 2, 2 * 1024 * 1024)
    assert failure_xcoms(run)[("cleanup", 1)]["error"] == cause
