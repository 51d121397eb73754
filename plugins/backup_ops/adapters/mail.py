"""The run's notification mail, sent through the Airflow SMTP connection named in ``notifications.mail``."""

from __future__ import annotations

import html
import logging
from collections.abc import Sequence

from backup_ops.core.config import BackupConfig

log = logging.getLogger(__name__)


def notify_run(config: BackupConfig, *, dag_id: str, run_id: str, what: str, succeeded: bool,
               details: Sequence[str], disabled: bool = False) -> bool:
    """Send the run's mail when the config asks for it; returns whether a mail was sent.

    A failure to send is logged, never raised: the run's own outcome must not change because
    the mail server is down (the Airflow UI still shows it).
    """
    settings = config.notifications
    wanted = settings.on_success if succeeded else settings.on_failure
    if disabled or not wanted or not settings.mail_to:
        log.info("No notification sent for this run (%s)", "disabled by the run's Params" if disabled
                 else "not configured for this outcome")
        return False
    outcome = "succeeded" if succeeded else "FAILED"
    subject = f"[backup-ops] {config.backup.name}: {what} {outcome}"
    lines = [f"{what} {outcome} for {config.backup.name}", f"DAG {dag_id}, run {run_id}", "", *details]
    body = "<pre>" + html.escape("\n".join(lines)) + "</pre>"
    try:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id=settings.smtp_conn_id) as hook:
            hook.send_email_smtp(to=list(settings.mail_to), subject=subject, html_content=body,
                                 from_email=settings.mail_from)
    except Exception as exc:
        log.error("Could not send the notification mail through connection %r: %s", settings.smtp_conn_id, exc)
        return False
    log.info("Notification sent to %s: %s", ", ".join(settings.mail_to), subject)
    return True
