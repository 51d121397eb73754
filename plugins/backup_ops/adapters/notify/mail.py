"""The mail channel: the SMTP provider's ``SmtpNotifier``, through the SMTP connection in ``notifications.mail``."""

from __future__ import annotations

import html
import os
import re

from backup_ops.core.config.model import MailChannel, SecretRef
from backup_ops.core.errors import ConfigError
from backup_ops.core.notification import Notification

_EMAIL_RE = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+")


def send_mail(channel: MailChannel, notification: Notification) -> str:
    """Mail ``notification`` to the channel's recipients; returns a short description of where it went."""
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    recipients = resolve_recipients(channel)
    notifier = SmtpNotifier(
        to=recipients,
        from_email=channel.sender,
        subject=notification.subject(),
        html_content=render_html(notification),
        smtp_conn_id=channel.conn_id,
    )
    # notify(), not notifier(context): __call__ would render the text as a Jinja template, and the
    # text holds error messages and file names that must reach the reader as they are.
    notifier.notify({})
    return ", ".join(recipients)


def resolve_recipients(channel: MailChannel) -> list[str]:
    """The addresses to mail: the configured ones, and those in each ``{env: NAME}`` variable, read now."""
    addresses: list[str] = []
    for entry in channel.to:
        if isinstance(entry, SecretRef):
            addresses += _addresses_from_env(entry.name)
        else:
            addresses.append(entry)
    return list(dict.fromkeys(addresses))


def _addresses_from_env(name: str) -> list[str]:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ConfigError(f"notifications.mail.to refers to environment variable {name}, which is not set on this "
                          f"worker; set it to one or more comma-separated addresses.")
    addresses = [part.strip() for part in value.split(",") if part.strip()]
    for address in addresses:
        if not _EMAIL_RE.fullmatch(address):
            raise ConfigError(f"Environment variable {name} (notifications.mail.to) holds {address!r}, which is not a "
                              f"valid email address; set it to comma-separated addresses.")
    return addresses


def render_html(notification: Notification) -> str:
    """The message's plain-text lines in a <pre> block: every line reads as written, in any mail client."""
    text = html.escape("\n".join(notification.lines()), quote=False)
    return f'<pre style="font-family: monospace; white-space: pre-wrap">{text}</pre>'
