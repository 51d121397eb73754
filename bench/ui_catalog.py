"""Benchmark: the backup-ops page and catalog API with 10,000 backups on S3, cold and warm.

Run with ``make bench`` (or ``.venv/bin/python bench/ui_catalog.py``) from the repository root.
moto's S3 server runs on loopback with one bucket holding ``--backups`` archives (small random
bytes, one a day back from now) with their receipts, as ``backup_daily`` leaves them (the store
keeps each archive's SHA-256, so a receipt check is a GET and a HEAD, as on AWS), and a dozen
restore-drill reports. They are put straight into moto's backend (arrangement only; every read
the page makes goes over HTTP through the S3 destination, as in production).

Two measurements:

* in this process, ``CatalogCache`` as the app uses it: the cold state (the listing, the newest
  archive's receipt check, the drill reports), a cold page of rows (their receipt checks), the
  same warm, and rendering the page;
* over HTTP, a real ``airflow api-server`` on loopback (SQLite metadata database, the simple auth
  manager) with the plugin: the page ``GET /backup-ops/`` as the first request after the start
  (cold) and warm (median of ``--repeats``), the catalog ``GET /backup-ops/api/backups``, the health
  endpoint, then the page once ``ui.cache_seconds`` expired (the old state is shown while a
  background thread reads the destinations again) and how long that read took.

Target (issue 12): the page under 1 s warm. The report says PASS or MISS; the exit status is 0
unless something failed, because a benchmark reports and does not gate.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Runs standalone from the repository root; backup_ops and devtools are imported after this.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO), str(_REPO / "plugins")]

BACKUP_NAME = "invoicing-app"
BUCKET, PREFIX, CONN_ID = "backup-ops-bench", "prod", "backup_s3"
KEY_ID, SECRET = "bench-key", "bench-secret"
WARM_TARGET = 1.0  # seconds: the page, warm
CACHE_SECONDS = 20
PAGE_SIZE = 25
DRILLS = 12


def seed(endpoint: str, backups: int) -> None:
    """``backups`` archives with receipts and ``DRILLS`` drill reports, put into moto's backend directly."""
    import boto3
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=KEY_ID,
                 aws_secret_access_key=SECRET).create_bucket(Bucket=BUCKET)
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    folder = f"{PREFIX}/{BACKUP_NAME}"
    newest = ""
    for index in range(backups):
        created = now - timedelta(days=index)
        name = created.strftime("%Y-%m-%d-%H-%M-%S") + ".zip"
        data = os.urandom(1024 + (index * 7919) % 4096)
        digest = hashlib.sha256(data)
        key = backend.put_object(BUCKET, f"{folder}/{name}", data)
        key.checksum_algorithm, key.checksum_type = "SHA256", "FULL_OBJECT"  # what a PutObject with SHA256 keeps
        key.checksum_value = base64.b64encode(digest.digest()).decode()
        receipt = {"archive": name, "size": len(data), "sha256": digest.hexdigest(), "created_at": created.isoformat(),
                   "manifest_sha256": "0" * 64}
        backend.put_object(BUCKET, f"{folder}/{name}.json", json.dumps(receipt).encode())
        newest = newest or f"{BACKUP_NAME}/{name}"
    for index in range(DRILLS):
        finished = now - timedelta(days=30 * index)
        report = {"format_version": 1, "backup_name": BACKUP_NAME, "archive": newest, "destination": "s3",
                  "started_at": (finished - timedelta(seconds=200)).isoformat(), "finished_at": finished.isoformat(),
                  "outcome": "succeeded", "rto_seconds": 180.0 + 7 * index, "checks": [], "error": None}
        stamp = (finished - timedelta(seconds=200)).strftime("%Y-%m-%d-%H-%M-%S")
        backend.put_object(BUCKET, f"{folder}/restore-drills/{stamp}.json", json.dumps(report).encode())


def write_config(directory: Path) -> Path:
    import yaml

    config = {
        "backup": {"name": BACKUP_NAME, "source": {"databases": []}, "encryption": "none",
                   "staging_directory": str(directory / "staging"),
                   "destination": {"destinations": [{"name": "s3", "type": "s3", "conn_id": CONN_ID,
                                                     "bucket": BUCKET, "prefix": PREFIX}]}},
        "monitor": {"max_storage_mb": 1_000_000},
        "ui": {"cache_seconds": CACHE_SECONDS, "page_size": PAGE_SIZE},
    }
    path = directory / "backup_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def timed(action: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def in_process(config: Path, repeats: int) -> dict[str, float]:
    """CatalogCache as the app uses it, in this process."""
    from backup_ops.airflow.ui.app import page_html
    from backup_ops.airflow.ui.cache import CatalogCache
    from backup_ops.core.catalog import page_window
    from backup_ops.core.config import load_config

    cache = CatalogCache(lambda: load_config(config))
    results: dict[str, float] = {}
    results["cold state (listing, newest receipt, drill reports)"], state = timed(cache.state)
    [entry] = state.destinations
    count = len(entry.report.snapshot.backups)
    window = page_window(count, 2, PAGE_SIZE)
    results[f"cold page of {PAGE_SIZE} rows (receipt checks)"], rows = timed(lambda: cache.rows(state, "s3", window))
    if {row.state for row in rows} != {"intact"}:
        raise SystemExit(f"expected intact rows, got {[(r.state, r.detail) for r in rows][:3]}")

    warm = [timed(lambda: page_html(cache, cache.state(), {"page_s3": "2"}))[0] for _ in range(repeats)]
    results["warm page, rendered (median)"] = statistics.median(warm)
    results["backups listed"] = float(count)
    return results


def over_http(config: Path, endpoint: str, directory: Path, repeats: int) -> dict[str, float]:
    """A real api-server with the plugin, on loopback."""
    import requests

    from devtools.airflow_stack import AirflowStack, airflow_env, free_port

    home = directory / "airflow-home"
    home.mkdir()
    passwords = directory / "passwords.json"
    passwords.write_text(json.dumps({"admin": "bench-login"}))
    port = free_port()
    connection = {"conn_type": "aws", "login": KEY_ID, "password": SECRET,
                  "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    env = airflow_env(home, dags_folder=directory / "dags", port=port,
                      sql_alchemy_conn=f"sqlite:///{home / 'airflow.db'}", extra={
                          "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
                          "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                          "BACKUP_OPS_CONFIG": str(config),
                          f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection)})
    (directory / "dags").mkdir()
    stack = AirflowStack(home, env, f"http://127.0.0.1:{port}")
    results: dict[str, float] = {}
    try:
        results["airflow db migrate (SQLite)"], _ = timed(lambda: stack.run("db", "migrate"))
        stack.start("api-server", "api-server")
        results["api-server start until it answers"], _ = timed(stack.wait_for_api)
        token = requests.post(f"{stack.api_url}/auth/token", json={"username": "admin", "password": "bench-login"},
                              timeout=30).json()["access_token"]
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {token}"
        base = f"{stack.api_url}/backup-ops"

        def get(path: str, **params: Any) -> float:
            seconds, answer = timed(lambda: session.get(base + path, params=params, timeout=300))
            answer.raise_for_status()
            return float(seconds)

        results["cold GET / the page (first request: listing, 25 receipt checks)"] = get("/")
        results["warm GET / the page (median)"] = statistics.median(get("/") for _ in range(repeats))
        results["first GET /api/backups (100 rows, 75 more receipt checks)"] = get("/api/backups")
        results["warm GET /api/backups (median)"] = statistics.median(get("/api/backups") for _ in range(repeats))
        results["warm GET /health (median)"] = statistics.median(get("/health") for _ in range(repeats))
        results["first view of page 37 (its 25 receipt checks)"] = get("/", page_s3="37")
        checked_at = session.get(f"{base}/health", timeout=60).json()["checked_at"]
        time.sleep(CACHE_SECONDS + 1)
        results["GET / after ui.cache_seconds (expired state shown, read again)"] = get("/")
        started = time.perf_counter()
        while session.get(f"{base}/health", timeout=60).json()["checked_at"] == checked_at:
            time.sleep(0.2)
        results["background read until the new state is shown"] = time.perf_counter() - started
    finally:
        stack.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backups", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-api-server", action="store_true", help="measure in this process only")
    args = parser.parse_args()

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    directory = Path(tempfile.mkdtemp(prefix="backup-ops-ui-bench-"))
    os.environ.setdefault("AIRFLOW_HOME", str(directory / "this-process-airflow-home"))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps({
        "conn_type": "aws", "login": KEY_ID, "password": SECRET,
        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}})
    try:
        seconds, _ = timed(lambda: seed(endpoint, args.backups))
        print(f"Seeded {args.backups:,} backups with receipts and {DRILLS} drill reports into moto in {seconds:.1f} s "
              f"({endpoint}, bucket {BUCKET})")
        config = write_config(directory)
        report = {"in this process": in_process(config, args.repeats)}
        if not args.no_api_server:
            report["over HTTP, real api-server"] = over_http(config, endpoint, directory, args.repeats)
    finally:
        server.stop()
    for part, numbers in report.items():
        print(f"\n{part}:")
        for what, value in numbers.items():
            print(f"  {what:<66} {value:>10.3f}" if "listed" not in what else f"  {what:<66} {value:>10,.0f}")
    warm = report.get("over HTTP, real api-server", {}).get("warm GET / the page (median)")
    if warm is not None:
        verdict = "PASS" if warm < WARM_TARGET else "MISS"
        print(f"\nTarget: the page under {WARM_TARGET:.0f} s warm with {args.backups:,} backups on S3: {verdict} "
              f"({warm:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
