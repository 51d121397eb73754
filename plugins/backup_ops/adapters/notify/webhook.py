"""The webhook channel: the HTTP provider's ``HttpNotifier`` POSTs the notification as JSON.

The body is ``Notification.to_json()``: event, application, backup name, the destination and its
properties, every failure (``{source, message}``), the Airflow run. The URL and any credential
live in the Airflow HTTP connection (host, login/password, extra headers), not in the config file.
"""

from __future__ import annotations

from backup_ops.adapters.notify.redact import RedactingLog
from backup_ops.core.config.model import WebhookChannel
from backup_ops.core.notification import Notification

TIMEOUT = 30
"""Seconds to wait for the endpoint: a hung webhook must not hold the run's last task."""


def send_webhook(channel: WebhookChannel, notification: Notification) -> str:
    """POST ``notification`` as JSON; an answer outside 2xx/3xx raises. Returns where it went."""
    from airflow.providers.http.notifications.http import HttpNotifier

    notifier = HttpNotifier(http_conn_id=channel.conn_id, endpoint=channel.endpoint, method="POST",
                            json=notification.to_json(), headers={"Content-Type": "application/json"},
                            extra_options={"timeout": TIMEOUT})
    # The hook logs the URL it could not reach, on its own logger: cut it down before it is written.
    notifier.hook._log = RedactingLog(notifier.hook.log, [channel.endpoint])  # type: ignore[assignment]
    notifier.notify({})  # not notifier(context): that would render the body as a Jinja template
    return f"Airflow connection {channel.conn_id!r}"
