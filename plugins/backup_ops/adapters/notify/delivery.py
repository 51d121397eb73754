"""Route one Notification to the channels configured for its event and deliver it on each."""

from __future__ import annotations

import logging

from backup_ops.core.config import BackupConfig
from backup_ops.core.notification import Notification

log = logging.getLogger(__name__)


def deliver(config: BackupConfig, notification: Notification, *, disabled: bool = False) -> list[str]:
    """Send ``notification`` on every channel its event is routed to; returns the channels that delivered."""
    from backup_ops.adapters.mail import notify_run

    if disabled:
        log.info("No notification sent for this run (disabled by the run's Params)")
        return []
    details = [notification.summary, *(f"{f.source}: {f.message}" for f in notification.failures),
               *notification.details]
    what = notification.event.replace("_", " ")
    sent = notify_run(config, dag_id=notification.dag_id, run_id=notification.run_id, what=what,
                      succeeded=not notification.is_failure, details=details)
    return ["mail"] if sent else []
