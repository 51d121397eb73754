"""Notifications, the pure part: the ``notifications`` config (routing, channels, validation) and the words.

The words are laravel-backup's (reference §7.3, §7.4); the channels that send them are tried against
real servers in tests/integration/test_notify.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backup_ops.adapters.notify.redact import reason, redact
from backup_ops.core.config import SecretRef, load_config, parse_config
from backup_ops.core.config.model import MailChannel, SlackChannel, WebhookChannel
from backup_ops.core.errors import ConfigError
from backup_ops.core.models import BackupFile
from backup_ops.core.notification import EVENTS, DestinationProperties, Failure, Notification

ROOT = Path(__file__).resolve().parents[2]
MAIL = {"to": "ops@example.com", "from": "backups@example.com"}
FAILURES_UNHEALTHY_LATE = {"backup_failed", "cleanup_failed", "restore_drill_failed", "unhealthy_backup_found",
                           "backup_late"}


def settings(notifications: Any) -> Any:
    raw = {"backup": {"name": "app", "source": {"databases": ["app_db"]},
                      "destination": {"destinations": [{"name": "local", "type": "local", "path": "/b"}]}},
           "notifications": notifications}
    return parse_config(raw).notifications


def routed(notifications: Any) -> dict[str, tuple[str, ...]]:
    found = settings(notifications)
    return {event: found.channels_for(event) for event in EVENTS}


# ---------------------------------------------------------------------------- routing


class TestRouting:
    def test_the_deployments_defaults_failures_unhealthy_and_late_go_to_mail_successes_nowhere(self) -> None:
        routes = routed({"mail": MAIL})
        assert {event for event, channels in routes.items() if channels == ("mail",)} == FAILURES_UNHEALTHY_LATE
        assert {event for event, channels in routes.items() if not channels} == set(EVENTS) - FAILURES_UNHEALTHY_LATE

    def test_without_a_channel_nothing_is_routed(self) -> None:
        assert set(routed(None).values()) == {()}
        assert set(routed({}).values()) == {()}

    def test_the_shipped_file_routes_as_the_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("BACKUP_OPS_APP_ROOT", raising=False)
        shipped = load_config(ROOT / "include" / "backup_config.yaml").notifications
        assert shipped.mail == MailChannel(("ops@example.com",), "backups@example.com", "smtp_default")
        assert {e: shipped.channels_for(e) for e in EVENTS} == routed({"mail": MAIL})

    @pytest.mark.parametrize(("shorthand", "mailed"), [
        ({"on_failure": True, "on_success": True}, FAILURES_UNHEALTHY_LATE | {
            "backup_successful", "cleanup_successful", "restore_drill_succeeded"}),
        ({"on_failure": False}, {"unhealthy_backup_found", "backup_late"}),
        ({"on_success": False}, FAILURES_UNHEALTHY_LATE),
    ])
    def test_on_failure_and_on_success_keep_their_meaning_for_the_runs_mail(
            self, shorthand: dict[str, bool], mailed: set[str]) -> None:
        routes = routed({"mail": MAIL, **shorthand})
        assert {event for event, channels in routes.items() if channels == ("mail",)} == mailed

    def test_events_route_each_event_and_the_ones_left_out_keep_their_default(self) -> None:
        routes = routed({"mail": MAIL, "slack": {"conn_id": "chat"}, "webhook": {},
                         "events": {"backup_failed": ["slack", "mail", "slack"], "backup_successful": "webhook",
                                    "backup_late": [], "healthy_backup_found": None}})
        assert routes["backup_failed"] == ("slack", "mail")
        assert routes["backup_successful"] == ("webhook",)
        assert routes["backup_late"] == ()
        assert routes["healthy_backup_found"] == ()
        assert routes["cleanup_failed"] == ("mail",)  # not listed: the default
        assert routes["cleanup_successful"] == ()

    def test_channel_defaults_are_the_providers_connection_ids(self) -> None:
        found = settings({"mail": MAIL, "slack": {}, "webhook": {"endpoint": "/hooks/backup"}})
        assert found.slack == SlackChannel("slack_default")
        assert found.webhook == WebhookChannel("http_default", "/hooks/backup")
        assert found.mail.conn_id == "smtp_default"
        assert found.configured() == ("mail", "slack", "webhook")


# ---------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("notifications", "message"), [
    ({"mail": MAIL, "events": {"backup_fail": ["mail"]}},
     "notifications.events has unknown key 'backup_fail'; accepted keys are: backup_failed, backup_late, "),
    ({"mail": MAIL, "events": {"backup_failed": ["sms"]}},
     "notifications.events.backup_failed[0] must be one of 'mail', 'slack', 'webhook', got 'sms'."),
    ({"mail": MAIL, "events": {"backup_failed": ["mail", "slack"]}},
     "notifications.events.backup_failed sends on slack, but notifications.slack is not configured; add "
     "notifications.slack (see docs/configuration.md) or remove slack here."),
    ({"events": {"unhealthy_backup_found": ["mail"]}},
     "notifications.events.unhealthy_backup_found sends on mail, but notifications.mail is not configured"),
    ({"mail": MAIL, "on_success": True, "events": {"backup_successful": []}},
     "notifications.on_success is a shorthand for the mail routing in notifications.events; set one or the "
     "other, not both."),
    ({"mail": {"to": ["not-an-address"]}}, "notifications.mail.to: 'not-an-address' is not a valid email address."),
    ({"mail": {"to": "ops@example.com, oops"}}, "notifications.mail.to: 'oops' is not a valid email address."),
    ({"mail": {"from": "b@example.com"}}, "notifications.mail.to is required but missing."),
    ({"mail": {"to": []}}, "notifications.mail.to must be an address, a list of addresses, or {env: NAME}"),
    ({"mail": {"to": {"variable": "x"}}}, "notifications.mail.to must be an address, a list of addresses, or {env:"),
    ({"mail": {"to": [{"env": "NOT A NAME"}]}}, "notifications.mail.to[0] must be an address, a list of addresses"),
    ({"slack": {"conn_id": "backup slack"}}, "notifications.slack.conn_id must be a name of letters, digits"),
    ({"slack": {"url": "https://hooks.slack.com/services/T/B/x"}},
     "notifications.slack has unknown key 'url'; accepted keys are: conn_id."),
    ({"webhook": {"conn_id": "hook", "url": "x"}},
     "notifications.webhook has unknown key 'url'; accepted keys are: conn_id, endpoint."),
    ({"teams": {}}, "notifications has unknown key 'teams'; accepted keys are: events, mail, on_failure, "),
])
def test_bad_notifications_fail_with_one_sentence_naming_the_key(notifications: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(notifications)
    assert str(caught.value).startswith(message)


def test_recipients_may_be_lists_comma_separated_strings_and_environment_references() -> None:
    found = settings({"mail": {"to": ["a@example.com, b@example.com", {"env": "BACKUP_NOTIFICATION_EMAIL"}]}})
    assert found.mail.to == ("a@example.com", "b@example.com", SecretRef("env", "BACKUP_NOTIFICATION_EMAIL"))
    assert settings({"mail": {"to": {"env": "OPS"}}}).mail.to == (SecretRef("env", "OPS"),)


# ---------------------------------------------------------------------------- the words

NEWEST = datetime(2024, 1, 15, 12, 0, tzinfo=UTC)
LOCAL = DestinationProperties.of("local", [
    BackupFile("app/2024-01-15-12-00-00.zip", NEWEST, 3 * 1024 * 1024),
    BackupFile("app/2024-01-14-12-00-00.zip", datetime(2024, 1, 14, 12, tzinfo=UTC), 1024 * 1024),
])
EMPTY = DestinationProperties.of("offsite", [])


def notification(event: str, **fields: Any) -> Notification:
    return Notification(event, "invoicing-app", "invoicing-app", fields.pop("summary", "What happened."), **fields)


@pytest.mark.parametrize(("event", "subject", "intro"), [
    ("backup_failed", "Failed backup of invoicing-app", "Important: An error occurred while backing up invoicing-app"),
    ("backup_successful", "Successful new backup of invoicing-app",
     "Great news, a new backup of invoicing-app was successfully created on the destination named local."),
    ("cleanup_failed", "Cleaning up the backups of invoicing-app failed.",
     "An error occurred while cleaning up the backups of invoicing-app"),
    ("cleanup_successful", "Clean up of invoicing-app backups successful",
     "The clean up of the invoicing-app backups on the destination named local was successful."),
    ("unhealthy_backup_found", "Important: The backups for invoicing-app are unhealthy",
     "The backups for invoicing-app on destination local are unhealthy."),
    ("healthy_backup_found", "The backups for invoicing-app on destination local are healthy",
     "The backups for invoicing-app are considered healthy. Good job!"),
    ("restore_drill_failed", "Failed restore drill of invoicing-app",
     "Important: An error occurred while restoring a backup of invoicing-app in a restore drill"),
    ("restore_drill_succeeded", "Successful restore drill of invoicing-app",
     "Great news, a backup of invoicing-app was restored and checked by a restore drill."),
    ("backup_late", "Important: The backup of invoicing-app is late",
     "Important: The backup of invoicing-app has not finished by its deadline"),
])
def test_every_event_has_laravel_backups_subject_and_first_line(event: str, subject: str, intro: str) -> None:
    message = notification(event, destination=LOCAL)
    assert message.subject() == subject
    assert message.intro() == intro
    assert message.lines()[0] == intro


def test_a_run_on_several_destinations_names_them_all() -> None:
    message = notification("backup_successful", destinations=(LOCAL, EMPTY))
    assert message.intro().endswith("created on the destinations named local, offsite.")


def test_the_message_carries_the_cause_of_each_failure_and_laravels_destination_properties() -> None:
    message = notification("backup_failed", summary="Backup x failed on destination(s) offsite: publish[1]: gone.",
                           failures=(Failure("publish[1]", "Destination offsite: bucket gone."),),
                           details=("archive x.zip: 4.00 MB",), destinations=(LOCAL, EMPTY),
                           dag_id="backup_daily", run_id="scheduled__2024-01-15T02:00:00+00:00")
    assert message.lines() == [
        "Important: An error occurred while backing up invoicing-app",
        "Backup x failed on destination(s) offsite: publish[1]: gone.",
        "", "Failed tasks:", "- publish[1]: Destination offsite: bucket gone.",
        "", "archive x.zip: 4.00 MB",
        "", "Application name: invoicing-app", "Backup name: invoicing-app",
        "", "Destination: local", "Newest backup size: 3.00 MB", "Number of backups: 2",
        "Total storage used: 4.00 MB", "Newest backup date: 2024/01/15 12:00:00 UTC",
        "Oldest backup date: 2024/01/14 12:00:00 UTC",
        "", "Destination: offsite", "Newest backup size: No backups were made yet", "Number of backups: 0",
        "Total storage used: 0 B", "Newest backup date: No backups were made yet",
        "Oldest backup date: No backups were made yet",
        "", "Airflow: DAG backup_daily, run scheduled__2024-01-15T02:00:00+00:00",
    ]


def test_failed_checks_read_like_laravels_monitor() -> None:
    message = notification("unhealthy_backup_found", destination=LOCAL,
                           failures=(Failure("max_age_days", "The latest backup made on … is considered too old."),))
    assert "Failed checks:\n- [max_age_days] The latest backup made on … is considered too old." in "\n".join(
        message.lines())


def test_the_webhook_body_has_the_event_the_destination_its_properties_and_each_failure() -> None:
    body = notification("unhealthy_backup_found", destination=LOCAL, failures=(Failure("max_storage_mb", "Too big."),),
                        dag_id="backup_monitor", run_id="r1").to_json()
    assert body == {
        "event": "unhealthy_backup_found", "application": "invoicing-app", "backup_name": "invoicing-app",
        "subject": "Important: The backups for invoicing-app are unhealthy", "summary": "What happened.",
        "destination": "local", "backup_count": 2, "used_storage": 4 * 1024 * 1024, "newest_size": 3 * 1024 * 1024,
        "newest_date": "2024-01-15T12:00:00+00:00", "oldest_date": "2024-01-14T12:00:00+00:00",
        "destinations": [LOCAL.to_dict()], "failures": [{"source": "max_storage_mb", "message": "Too big."}],
        "details": [], "dag_id": "backup_monitor", "run_id": "r1",
    }


def test_a_body_about_several_destinations_names_none_of_them_as_the_destination() -> None:
    body = notification("backup_successful", destinations=(LOCAL, EMPTY)).to_json()
    assert body["destination"] is None and body["backup_count"] is None
    assert [d["destination"] for d in body["destinations"]] == ["local", "offsite"]
    assert body["failures"] == [] and body["dag_id"] is None


# ---------------------------------------------------------------------------- what a failed delivery logs


@pytest.mark.parametrize(("text", "secrets", "shown"), [
    ("HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /hooks/T0/B0/tok (Caused by x)",
     [], "HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /… (Caused by x)"),
    ("POST https://hooks.slack.com/services/T0/B0/tok?x=1 failed", [], "POST https://hooks.slack.com/… failed"),
    ("http://127.0.0.1:8080 refused", [], "http://127.0.0.1:8080 refused"),
    ("answer for /hooks/backup-s3cr3t was 404", ["/hooks/backup-s3cr3t"], "answer for *** was 404"),
])
def test_a_delivery_error_never_shows_a_url_path_or_a_secret(text: str, secrets: list[str], shown: str) -> None:
    assert redact(text, secrets) == shown


def test_the_reason_is_one_short_line() -> None:
    long = reason(ValueError("x " * 500))
    assert long.startswith("ValueError: x x") and len(long) == 300 and long.endswith("…")
    assert reason(OSError("Connection\nrefused.")) == "OSError: Connection refused"
