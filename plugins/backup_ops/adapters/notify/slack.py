"""The Slack channel: the Slack provider's ``SlackWebhookNotifier`` posts Block Kit blocks to an Incoming Webhook.

The webhook URL lives in the Airflow connection (``slackwebhook`` type, URL or token in its
password), never in the config file: it is a credential.
"""

from __future__ import annotations

from typing import Any

from backup_ops.core.config.model import SlackChannel
from backup_ops.core.notification import Notification

TIMEOUT = 30
"""Seconds to wait for Slack: a hung webhook must not hold the run's last task."""
# Slack's Block Kit limits: 50 blocks a message, 3000 characters a section, 150 a header, 10 fields a section.
_MAX_SECTION, _MAX_HEADER, _MAX_DESTINATIONS = 3000, 150, 40


def send_slack(channel: SlackChannel, notification: Notification) -> str:
    """Post ``notification`` to the channel's Incoming Webhook; returns a short description of where it went."""
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    notifier = SlackWebhookNotifier(slack_webhook_conn_id=channel.conn_id, text=notification.subject(),
                                    blocks=render_blocks(notification), timeout=TIMEOUT)
    notifier.notify({})  # not notifier(context): that would render the message as a Jinja template
    return f"Airflow connection {channel.conn_id!r}"


def render_blocks(notification: Notification) -> list[dict[str, Any]]:
    """Header (the subject), what happened, each failure, the details, a fields section per destination, the run."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(notification.subject(), _MAX_HEADER)}},
        _section(_escape("\n".join(dict.fromkeys([notification.intro(), notification.summary])))),
    ]
    if notification.failures:
        blocks.append(_section(f"*{notification.failure_heading()}*\n"
                               + _escape("\n".join(notification.failure_lines()))))
    if notification.details:
        blocks.append(_section(_escape("\n".join(notification.details))))
    for properties in notification.all_destinations[:_MAX_DESTINATIONS]:
        pairs = [line.split(": ", 1) for line in properties.lines()]
        blocks.append({"type": "section", "fields": [
            {"type": "mrkdwn", "text": _cut(f"*{label}*\n{_escape(value)}", 2000)} for label, value in pairs]})
    where = f"DAG {notification.dag_id}, run {notification.run_id}" if notification.dag_id else "backup-ops"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(_escape(
        f"{notification.event} · application {notification.application} · backup {notification.backup_name} · "
        f"{where}"), _MAX_SECTION)}]})
    return blocks


def _section(mrkdwn: str) -> dict[str, Any]:
    """A mrkdwn section of already escaped text, cut to Slack's limit."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(mrkdwn, _MAX_SECTION)}}


def _escape(text: str) -> str:
    """Slack's three control characters; everything else reads as written."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
