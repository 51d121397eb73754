"""One notification per backup run, through a real SMTP server on loopback."""

from __future__ import annotations

import os

import pytest

from tests.dags.conftest import APP_PASSWORD, APP_USER, run_backup, set_notifications

BAD_PASSWORD = "Not-The-Password-42"
MAIL = {"to": ["ops@example.com"], "from": "backups@example.com", "conn_id": "smtp_default"}


@pytest.fixture
def wrong_db_password(backup_env, pg_server):
    os.environ["AIRFLOW_CONN_APP_DB"] = pg_server.conn_uri(backup_env["db"], user=APP_USER, password=BAD_PASSWORD)
    yield
    os.environ["AIRFLOW_CONN_APP_DB"] = pg_server.conn_uri(backup_env["db"], user=APP_USER, password=APP_PASSWORD)


@pytest.fixture
def notifying(backup_env, smtp_server):
    original = set_notifications(backup_env["config"], mail=MAIL, on_failure=True, on_success=True)
    yield backup_env
    backup_env["config"].write_text(original)


def test_failed_run_sends_one_mail_naming_the_cause(notifying, wrong_db_password, mailbox):
    run, _ = run_backup()
    assert run.state == "failed"
    assert len(mailbox.messages) == 1
    message = mailbox.messages[0]
    assert message["Subject"] == "[backup-ops] invoicing-app: backup FAILED"
    assert message["To"] == "ops@example.com"
    (body,) = mailbox.bodies()
    assert "check_databases: " in body
    assert "password authentication failed" in body
    assert BAD_PASSWORD not in body


def test_disable_notifications_param_silences_the_run(notifying, wrong_db_password, mailbox):
    run, _ = run_backup({"disable_notifications": True})
    assert run.state == "failed"
    assert mailbox.messages == []


def test_successful_run_mails_only_when_on_success(notifying, mailbox):
    run, _ = run_backup()
    assert run.state == "success"
    assert [m["Subject"] for m in mailbox.messages] == ["[backup-ops] invoicing-app: backup succeeded"]
    assert "verified copy: file://" in mailbox.bodies()[0]

    set_notifications(notifying["config"], mail=MAIL, on_failure=True, on_success=False)
    mailbox.messages.clear()
    run, _ = run_backup()
    assert run.state == "success"
    assert mailbox.messages == []
