"""Route one Notification to the channels configured for its event and deliver it on each.

A channel that cannot deliver (SMTP server down, HTTP 500, a missing connection, a timeout) is
logged with its reason and skipped: a notification must never change the outcome of the run
that sends it, and one broken channel must not silence the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from backup_ops.adapters.notify.mail import send_mail
from backup_ops.adapters.notify.redact import reason
from backup_ops.adapters.notify.slack import send_slack
from backup_ops.adapters.notify.webhook import send_webhook
from backup_ops.core.config import BackupConfig
from backup_ops.core.notification import Notification

log = logging.getLogger(__name__)

# Each sender takes its channel's settings (notifications.<channel>) and returns where it delivered.
SENDERS: dict[str, Callable[[Any, Notification], str]] = {"mail": send_mail, "slack": send_slack,
                                                           "webhook": send_webhook}


def deliver(config: BackupConfig, notification: Notification, *, disabled: bool = False) -> list[str]:
    """Send ``notification`` on every channel its event is routed to; returns the channels that delivered.

    Never raises. ``disabled`` (the run's ``disable_notifications`` Param) sends nothing.
    """
    event = notification.event
    if disabled:
        log.info("No %s notification sent: disabled for this run (disable_notifications)", event)
        return []
    channels = config.notifications.channels_for(event)
    if not channels:
        log.info("No %s notification sent: notifications.events.%s sends it on no channel", event, event)
        return []
    delivered = []
    for channel in channels:
        settings = getattr(config.notifications, channel)
        try:
            where = SENDERS[channel](settings, notification)
        except Exception as exc:  # any channel fault is logged, never raised: see the module docstring
            # The endpoint may carry a token; reason() also cuts every URL to its host.
            why = reason(exc, [getattr(settings, "endpoint", None)])
            log.error("Could not send the %s notification on %s (Airflow connection %r): %s. The run's outcome is "
                      "unchanged; see docs/monitoring.md, Notification channels.", event, channel, settings.conn_id,
                      why)
            continue
        log.info("Sent the %s notification on %s to %s: %s", event, channel, where, notification.subject())
        delivered.append(channel)
    return delivered
