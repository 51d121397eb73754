"""A real HTTP server on loopback that records every request: it stands in for Slack and for a webhook.

``serve_http()`` starts one in a thread; ``HttpSink.answer()`` makes a path prefix answer with an
error status, to try a channel that fails. ``channel_connections()`` exports the Airflow
connections the Slack and webhook channels use, pointing at the sink.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SLACK_CONN_ID = "backup_slack"
WEBHOOK_CONN_ID = "backup_webhook"
# Credentials a message or log line must never show: the Slack webhook's token (its URL path) and the
# webhook connection's password (sent as basic auth).
SLACK_TOKEN = "XOXB-slack-token-9f8e7d6c"
WEBHOOK_PASSWORD = "webhook-secret-3a2b1c"
SLACK_PATH = f"/services/T000/B000/{SLACK_TOKEN}"
WEBHOOK_ENDPOINT = "/hooks/backup"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpSink:
    """Keeps every request; answers 200 ``ok`` unless a path prefix was told to answer otherwise."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.requests: list[Request] = []
        self._answers: dict[str, int] = {}
        self._lock = threading.Lock()

    def answer(self, path_prefix: str, status: int) -> None:
        self._answers[path_prefix] = status

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
        self._answers.clear()

    def to(self, path_prefix: str) -> list[Request]:
        """The requests whose path starts with ``path_prefix``, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def record(self, request: Request) -> int:
        with self._lock:
            self.requests.append(request)
        return next((status for prefix, status in self._answers.items() if request.path.startswith(prefix)), 200)


def _handler(sink: HttpSink) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = sink.record(Request("POST", self.path, dict(self.headers.items()), body))
            reply = b"ok" if status < 400 else b"internal_error"
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
            return

    return Handler


@contextmanager
def serve_http() -> Iterator[HttpSink]:
    """An HTTP server on 127.0.0.1 (a free port) for the duration of the block."""
    sink = HttpSink("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(sink))
    sink.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="http-sink", daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextmanager
def channel_connections(sink: HttpSink) -> Iterator[None]:
    """``backup_slack`` (Slack Incoming Webhook, the URL in its password) and ``backup_webhook`` (HTTP, basic auth)."""
    port = int(sink.url.rsplit(":", 1)[1])
    connections = {
        SLACK_CONN_ID: {"conn_type": "slackwebhook", "password": sink.url + SLACK_PATH},
        WEBHOOK_CONN_ID: {"conn_type": "http", "host": "127.0.0.1", "port": port, "schema": "http",
                          "login": "backup-ops", "password": WEBHOOK_PASSWORD},
    }
    names = {f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(conn) for conn_id, conn in connections.items()}
    old = {name: os.environ.get(name) for name in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for name, value in old.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def basic_auth(request: Request) -> str:
    """The ``user:password`` of a request's basic auth header ('' without one)."""
    header = request.headers.get("Authorization", "")
    return base64.b64decode(header.removeprefix("Basic ")).decode() if header.startswith("Basic ") else ""
