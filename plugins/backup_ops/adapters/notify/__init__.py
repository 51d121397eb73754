"""Delivering notifications: each configured channel gets the event it is routed, and a channel that
cannot deliver is logged, never raised, so it can never change a run's outcome.

One module per channel, each an Airflow provider's notifier: ``mail`` (SMTP provider's
``SmtpNotifier``), ``slack`` (Slack provider's ``SlackWebhookNotifier``), ``webhook`` (HTTP
provider's ``HttpNotifier``); ``delivery`` routes an event to its channels (``notifications.events``).
"""

from __future__ import annotations

from backup_ops.adapters.notify.delivery import deliver

__all__ = ["deliver"]
