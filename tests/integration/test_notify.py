"""deliver() against real servers on loopback: an SMTP server (aiosmtpd) and an HTTP server for Slack and the webhook.

Each channel is the Airflow provider's own notifier reaching a real server, so what is checked is
what a person (or the receiving service) gets.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from backup_ops.adapters.notify import deliver
from backup_ops.core.config import parse_config
from backup_ops.core.models import BackupFile
from backup_ops.core.notification import DestinationProperties, Failure, Notification
from tests.fixtures_http import (
    SLACK_CONN_ID,
    SLACK_PATH,
    SLACK_TOKEN,
    WEBHOOK_CONN_ID,
    WEBHOOK_ENDPOINT,
    WEBHOOK_PASSWORD,
    HttpSink,
    basic_auth,
    channel_connections,
    serve_http,
)
from tests.fixtures_smtp import SMTP_CONN_ID, MailSink

PROPERTIES = DestinationProperties.of("local", [
    BackupFile("invoicing-app/2024-01-15-02-00-00.zip", datetime(2024, 1, 15, 2, tzinfo=UTC), 5 * 1024 * 1024)])
FAILED = Notification(
    "backup_failed", "invoicing-app", "invoicing-app", "Backup x failed on destination(s) offsite: publish[1]: gone.",
    failures=(Failure("publish[1]", "Destination offsite: bucket backups-x does not exist."),),
    destinations=(PROPERTIES,), dag_id="backup_daily", run_id="manual__1")


@pytest.fixture(scope="module")
def http_sink() -> Iterator[HttpSink]:
    with serve_http() as sink, channel_connections(sink):
        yield sink


@pytest.fixture
def inbox(http_sink: HttpSink, mailbox: MailSink) -> HttpSink:
    http_sink.reset()
    return http_sink


def config_with(events: dict[str, list[str]], **channels: Any) -> Any:
    notifications = {"events": events, "mail": {"to": ["ops@example.com"], "from": "backups@example.com",
                                                "conn_id": SMTP_CONN_ID},
                     "slack": {"conn_id": SLACK_CONN_ID},
                     "webhook": {"conn_id": WEBHOOK_CONN_ID, "endpoint": WEBHOOK_ENDPOINT}}
    notifications.update(channels)
    return parse_config({
        "backup": {"name": "invoicing-app", "source": {"databases": ["app_db"]},
                   "destination": {"destinations": [{"name": "local", "type": "local", "path": "/var/backups"}]}},
        "notifications": notifications})


ALL_CHANNELS = config_with({"backup_failed": ["mail", "slack", "webhook"]})


def test_each_channel_delivers_the_event_its_properties_and_each_failure(inbox: HttpSink, mailbox: MailSink) -> None:
    assert deliver(ALL_CHANNELS, FAILED) == ["mail", "slack", "webhook"]

    (mail,) = mailbox.messages
    assert (mail["Subject"], mail["To"], mail["From"]) == (
        "Failed backup of invoicing-app", "ops@example.com", "backups@example.com")
    (body,) = mailbox.bodies()
    for line in ("Important: An error occurred while backing up invoicing-app",
                 "Failed tasks:\n- publish[1]: Destination offsite: bucket backups-x does not exist.",
                 "Application name: invoicing-app\nBackup name: invoicing-app\n\nDestination: local\n"
                 "Newest backup size: 5.00 MB\nNumber of backups: 1\nTotal storage used: 5.00 MB\n"
                 "Newest backup date: 2024/01/15 02:00:00 UTC\nOldest backup date: 2024/01/15 02:00:00 UTC",
                 "Airflow: DAG backup_daily, run manual__1"):
        assert line in body

    (slack,) = inbox.to("/services/")
    assert slack.path == SLACK_PATH
    posted = slack.json()
    assert posted["text"] == "Failed backup of invoicing-app"
    texts = json.dumps(posted["blocks"])
    assert "backup_failed" in texts and "publish[1]: Destination offsite: bucket backups-x does not exist." in texts
    fields = [f["text"] for block in posted["blocks"] for f in block.get("fields", [])]
    assert fields == ["*Destination*\nlocal", "*Newest backup size*\n5.00 MB", "*Number of backups*\n1",
                      "*Total storage used*\n5.00 MB", "*Newest backup date*\n2024/01/15 02:00:00 UTC",
                      "*Oldest backup date*\n2024/01/15 02:00:00 UTC"]

    (hook,) = inbox.to(WEBHOOK_ENDPOINT)
    assert hook.headers["Content-Type"] == "application/json"
    assert basic_auth(hook) == f"backup-ops:{WEBHOOK_PASSWORD}"  # the credential comes from the connection
    sent = hook.json()
    assert sent == FAILED.to_json()
    assert (sent["event"], sent["destination"], sent["backup_count"], sent["newest_size"]) == (
        "backup_failed", "local", 1, 5 * 1024 * 1024)
    assert sent["failures"] == [{"source": "publish[1]", "message": "Destination offsite: bucket backups-x does not "
                                                                    "exist."}]


def test_an_event_routed_nowhere_sends_nothing_and_a_slack_only_event_sends_no_mail(
        inbox: HttpSink, mailbox: MailSink) -> None:
    config = config_with({"backup_failed": [], "cleanup_failed": ["slack"]})
    assert deliver(config, FAILED) == []
    assert inbox.requests == [] and mailbox.messages == []

    cleanup = Notification("cleanup_failed", "invoicing-app", "invoicing-app", "Cleanup failed.",
                           failures=(Failure("cleanup[local]", "Destination local: gone."),))
    assert deliver(config, cleanup) == ["slack"]
    assert mailbox.messages == [] and inbox.to(WEBHOOK_ENDPOINT) == []
    assert [r.json()["text"] for r in inbox.to("/services/")] == ["Cleaning up the backups of invoicing-app failed."]


def test_disabled_sends_nothing(inbox: HttpSink, mailbox: MailSink) -> None:
    assert deliver(ALL_CHANNELS, FAILED, disabled=True) == []
    assert inbox.requests == [] and mailbox.messages == []


def test_recipients_in_an_environment_variable_are_read_when_the_mail_is_sent(
        inbox: HttpSink, mailbox: MailSink, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    config = config_with({"backup_failed": ["mail", "slack"]},
                         mail={"to": [{"env": "BACKUP_NOTIFICATION_EMAIL"}], "conn_id": SMTP_CONN_ID,
                               "from": "backups@example.com"})
    monkeypatch.setenv("BACKUP_NOTIFICATION_EMAIL", "ops@example.com, oncall@example.org")
    assert deliver(config, FAILED) == ["mail", "slack"]
    assert mailbox.messages[0]["To"] == "ops@example.com, oncall@example.org"

    mailbox.messages.clear()
    monkeypatch.delenv("BACKUP_NOTIFICATION_EMAIL")
    assert deliver(config, FAILED) == ["slack"], "a mail that cannot go out does not stop the other channels"
    assert mailbox.messages == []
    assert ("Could not send the backup_failed notification on mail (Airflow connection 'smtp_default'): "
            "ConfigError: notifications.mail.to refers to environment variable BACKUP_NOTIFICATION_EMAIL, which is "
            "not set on this worker; set it to one or more comma-separated addresses") in caplog.text


@pytest.fixture
def dead_smtp(monkeypatch: pytest.MonkeyPatch) -> str:
    """An SMTP connection to a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEAD", json.dumps(
        {"conn_type": "smtp", "host": "127.0.0.1", "port": port,
         "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 5}}))
    return "smtp_dead"


def test_a_channel_that_cannot_deliver_is_logged_never_raised_and_never_shows_a_credential(
        inbox: HttpSink, mailbox: MailSink, dead_smtp: str, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    secret_endpoint = "/hooks/backup-5ecret-path-token"
    inbox.answer("/services/", 500)
    config = config_with({"backup_failed": ["mail", "slack", "webhook"]},
                         mail={"to": "ops@example.com", "from": "backups@example.com", "conn_id": dead_smtp},
                         webhook={"conn_id": "no_such_connection", "endpoint": secret_endpoint})

    assert deliver(config, FAILED) == []

    logged = caplog.text + capfd.readouterr().out
    assert "Could not send the backup_failed notification on mail (Airflow connection 'smtp_dead'): " in logged
    assert "Connection refused" in logged
    assert ("Could not send the backup_failed notification on slack (Airflow connection 'backup_slack'): "
            "AirflowException: Response body: 'internal_error', Status Code: 500") in logged
    assert ("Could not send the backup_failed notification on webhook (Airflow connection 'no_such_connection'): "
            "AirflowNotFoundException: The conn_id `no_such_connection` isn't defined") in logged
    assert "The run's outcome is unchanged" in logged
    assert len(inbox.to("/services/")) == 1, "Slack was tried once"
    for secret in (SLACK_TOKEN, WEBHOOK_PASSWORD, "5ecret-path-token"):
        assert secret not in logged


def test_a_webhook_whose_endpoint_is_down_never_logs_its_url_path(
        inbox: HttpSink, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capfd: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_HOOK_DOWN", json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port,
                                                             "schema": "http"}))
    config = config_with({"backup_failed": ["webhook"]},
                         webhook={"conn_id": "hook_down", "endpoint": "/hooks/T0/B0/path-token-77"})
    assert deliver(config, FAILED) == []
    logged = caplog.text + capfd.readouterr().out
    assert "Could not send the backup_failed notification on webhook (Airflow connection 'hook_down'): " in logged
    assert "path-token-77" not in logged


def test_text_reaches_the_reader_as_written_never_as_a_template(inbox: HttpSink, mailbox: MailSink) -> None:
    # Error messages and file names are data: a Jinja expression in one must not be evaluated
    # (it could read a Variable), and markup must show as text.
    tricky = "Skipped: uploads/{{ var.value.backup_archive_password }}.txt <b>bold</b> & more"
    message = Notification("backup_failed", "invoicing-app", "invoicing-app", tricky, dag_id="backup_daily")
    os.environ["AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD"] = "must-never-show"
    try:
        assert deliver(ALL_CHANNELS, message) == ["mail", "slack", "webhook"]
    finally:
        del os.environ["AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD"]
    (body,) = mailbox.bodies()
    assert "uploads/{{ var.value.backup_archive_password }}.txt &lt;b&gt;bold&lt;/b&gt; &amp; more" in body
    slack = json.dumps(inbox.to("/services/")[0].json())
    assert "{{ var.value.backup_archive_password }}.txt &lt;b&gt;bold&lt;/b&gt; &amp; more" in slack
    assert inbox.to(WEBHOOK_ENDPOINT)[0].json()["summary"] == tricky
    assert "must-never-show" not in body + slack
