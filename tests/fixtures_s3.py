"""Pytest fixtures for an S3 API on loopback: moto's HTTP server, a clean bucket per test, fault injection.

Everything talks HTTP: the destination under test gets a real boto3 client (or the Airflow
connection ``backup_s3``) pointed at moto's server, or at a small proxy in front of it that can
answer chosen requests with errors or die like a crashed endpoint.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests

from backup_ops.core.models import Receipt

S3_CONN_ID = "backup_s3"
TEST_BUCKET = "backup-ops-test"
TEST_REGION = "us-east-1"
TEST_KEY_ID = "testing"
TEST_SECRET = "testing"  # moto accepts any credentials unless IAM checks are switched on


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of one moto server for the session; also exported as Airflow connection ``backup_s3``."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    connection = {
        "conn_type": "aws",
        "login": TEST_KEY_ID,
        "password": TEST_SECRET,
        "extra": {"endpoint_url": url, "region_name": TEST_REGION},
    }
    with pytest.MonkeyPatch.context() as env:
        env.setenv(f"AIRFLOW_CONN_{S3_CONN_ID.upper()}", json.dumps(connection))
        yield url
    server.stop()


@pytest.fixture
def s3_endpoint(moto_endpoint: str) -> str:
    """The moto URL with all state reset, IAM checks off, and bucket ``backup-ops-test`` created."""
    requests.post(f"{moto_endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()
    requests.post(f"{moto_endpoint}/moto-api/reset", timeout=10).raise_for_status()
    client = new_s3_client(moto_endpoint)
    client.create_bucket(Bucket=TEST_BUCKET)
    client.close()
    return moto_endpoint


def new_s3_client(endpoint_url: str, *, key_id: str = TEST_KEY_ID, secret: str = TEST_SECRET,
                  attempts: int = 3, read_timeout: float = 20) -> Any:
    """A boto3 S3 client for ``endpoint_url`` making at most ``attempts`` tries per request (tests wait on them)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=TEST_REGION,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"mode": "standard", "total_max_attempts": attempts}, connect_timeout=2,
                      read_timeout=read_timeout, max_pool_connections=16),
    )


@pytest.fixture
def s3_client(s3_endpoint: str) -> Iterator[Any]:
    """A client straight to moto, for arranging and checking state."""
    client = new_s3_client(s3_endpoint)
    yield client
    client.close()


@pytest.fixture
def make_s3_client() -> Iterator[Callable[..., Any]]:
    """Factory of extra clients (other endpoint, credentials or retries), closed after the test."""
    made: list[Any] = []

    def make(endpoint_url: str, **kwargs: Any) -> Any:
        client = new_s3_client(endpoint_url, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()


@pytest.fixture
def seed_s3_objects(s3_endpoint: str) -> Callable[[dict[str, bytes]], None]:
    """Put many objects straight into moto's in-process backend (test arrangement only, not the code path)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    def seed(objects: dict[str, bytes]) -> None:
        backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
        for key, value in objects.items():
            backend.put_object(TEST_BUCKET, key, value)

    return seed


# ---------------------------------------------------------------------------- staged archives


@dataclass(frozen=True)
class StagedArchive:
    """An archive-like file in a staging directory, with the receipt the backup task would write."""

    path: Path
    file_name: str
    receipt: Receipt

    def read(self) -> bytes:
        return self.path.read_bytes()


@pytest.fixture
def make_staged_archive(tmp_path: Path) -> Callable[..., StagedArchive]:
    """Factory: ``make_staged_archive(size, file_name=..., seed=...)`` writes random bytes of that size."""
    counter = iter(range(1_000_000))

    def make(size: int, file_name: str = "2026-11-26-02-00-00.zip", seed: int | None = None) -> StagedArchive:
        rng = random.Random(seed if seed is not None else next(counter))
        directory = tmp_path / f"staging-{next(counter)}"
        directory.mkdir()
        path = directory / file_name
        digest = hashlib.sha256()
        with open(path, "wb") as out:
            remaining = size
            while remaining:
                chunk = rng.randbytes(min(remaining, 4 << 20))
                out.write(chunk)
                digest.update(chunk)
                remaining -= len(chunk)
        receipt = Receipt(archive=file_name, size=size, sha256=digest.hexdigest(),
                          created_at=datetime(2026, 11, 26, 2, tzinfo=UTC).isoformat())
        return StagedArchive(path, file_name, receipt)

    return make


# ---------------------------------------------------------------------------- fault injection


@dataclass(frozen=True)
class ProxiedRequest:
    """One request as the faulty endpoint saw it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass(frozen=True)
class Fault:
    """What the faulty endpoint does instead of forwarding: answer ``status`` with an S3 error, or die."""

    status: int = 500
    code: str = "InternalError"
    message: str = "We encountered an internal error. Please try again."
    die: bool = False


FaultRule = Callable[[ProxiedRequest], Fault | None]
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class FaultyEndpoint:
    """A loopback HTTP proxy in front of moto that fails the requests ``rule`` picks.

    ``Fault(die=True)`` drops that request's connection and closes the listening socket, so every
    later request gets "connection refused": what a client sees when the S3 endpoint crashes.
    """

    upstream: str
    rule: FaultRule | None = None
    seen: list[ProxiedRequest] = field(default_factory=list)
    dead: bool = False

    def __post_init__(self) -> None:
        self._server = _ProxyServer(("127.0.0.1", 0), _ProxyHandler)
        self._server.endpoint = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def kill(self) -> None:
        """Stop accepting connections (callable from a request handler)."""
        with self._lock:
            if self.dead:
                return
            self.dead = True
        threading.Thread(target=self._close, daemon=True).start()

    def _close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def stop(self) -> None:
        if not self.dead:
            self.dead = True
            self._close()


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    endpoint: FaultyEndpoint


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # answers botocore's "Expect: 100-continue" like S3 does
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet."""

    def _handle(self) -> None:
        endpoint = self.server.endpoint
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.close_connection = True
        if endpoint.dead:
            return  # the connection closes unanswered, like a crashed server's
        parts = urlsplit(self.path)
        request = ProxiedRequest(self.command, parts.path, dict(parse_qsl(parts.query, keep_blank_values=True)),
                                 {k.lower(): v for k, v in self.headers.items()})
        endpoint.seen.append(request)
        fault = endpoint.rule(request) if endpoint.rule else None
        if fault is not None and fault.die:
            endpoint.kill()
            return
        if fault is not None:
            self._answer(fault.status, {"Content-Type": "application/xml"},
                         f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{fault.code}</Code>"
                         f"<Message>{fault.message}</Message></Error>".encode())
            return
        self._forward(body, endpoint.upstream)

    def _forward(self, body: bytes, upstream: str) -> None:
        target = urlsplit(upstream)
        connection = http.client.HTTPConnection(target.hostname or "127.0.0.1", target.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            answer = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP}
        finally:
            connection.close()
        self._answer(response.status, answer, data)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        has_length = False
        for key, value in headers.items():
            if key.lower() == "content-length":
                has_length = True
                if self.command != "HEAD":
                    continue  # replaced below by the length actually sent
            self.send_header(key, value)
        if self.command != "HEAD" or not has_length:
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@pytest.fixture
def faulty_endpoint(s3_endpoint: str) -> Iterator[Callable[[FaultRule | None], FaultyEndpoint]]:
    """Factory: ``faulty_endpoint(rule)`` starts a proxy to the test's moto server; stopped after the test."""
    started: list[FaultyEndpoint] = []

    def start(rule: FaultRule | None = None) -> FaultyEndpoint:
        endpoint = FaultyEndpoint(s3_endpoint, rule)
        started.append(endpoint)
        return endpoint

    yield start
    for endpoint in started:
        endpoint.stop()
