"""A real SMTP server on loopback (aiosmtpd) that keeps every message it receives."""

from __future__ import annotations

import email
import json
import os
import socket
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest

SMTP_CONN_ID = "smtp_default"


class MailSink:
    """Collects delivered messages; an aiosmtpd handler."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    def bodies(self) -> list[str]:
        texts = []
        for message in self.messages:
            for part in message.walk():
                if part.get_content_type() == "text/html":
                    payload = part.get_payload(decode=True)
                    texts.append(payload.decode() if isinstance(payload, bytes) else str(payload))
        return texts


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[MailSink]:
    """An SMTP server for the session, exported as the Airflow connection ``smtp_default``."""
    from aiosmtpd.controller import Controller

    sink = MailSink()
    port = _free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    connection = {"conn_type": "smtp", "host": "127.0.0.1", "port": port,
                  "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 1, "timeout": 10}}
    old = os.environ.get(f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}")
    os.environ[f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}"] = json.dumps(connection)
    yield sink
    controller.stop()
    if old is None:
        os.environ.pop(f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}", None)
    else:
        os.environ[f"AIRFLOW_CONN_{SMTP_CONN_ID.upper()}"] = old


@pytest.fixture
def mailbox(smtp_server: MailSink) -> MailSink:
    """The session's sink, emptied for this test."""
    smtp_server.messages.clear()
    return smtp_server
