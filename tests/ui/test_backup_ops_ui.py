"""The backup-ops plugin in a real api-server: the health endpoint, the catalog API, the page in a real browser.

One ``airflow api-server`` for the module, on a free loopback port, with the repository's
plugins folder, a metadata database on the test PostgreSQL server and the simple auth manager
with a known password. It reads a demo-like setup: a local disk and an S3 bucket (moto over
HTTP) holding the same real, AES-encrypted backups with receipts, and restore-drill reports. The
page is loaded in Debian's Chromium, headless, logged in with the UI's cookie, on its own and
inside Airflow's UI, and the DOM is checked: table rows, both charts drawn. Screenshots go to
the test's folder; with ``BACKUP_OPS_UI_SCREENSHOT=docs/img/backup-ops-ui.png`` the one of the
page inside Airflow's UI is also written there (the README's picture).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
import yaml

from backup_ops.adapters.destinations.local import LocalDestination
from backup_ops.adapters.destinations.s3 import S3Destination
from backup_ops.core.drill_report import DrillCheck, DrillReport, report_key
from devtools.headless_chromium import HeadlessChromium, chromium_binary
from devtools.pgserver import EmbeddedPostgres
from tests.backup_archives import ARCHIVE_PASSWORD, build_backup
from tests.fixtures_airflow import AirflowStack, access_token, running_airflow, simple_auth
from tests.fixtures_s3 import S3_CONN_ID, new_s3_client

ROOT = Path(__file__).resolve().parents[2]
NAME = "invoicing-app"
BUCKET = "backup-ops-ui"
USER, PASSWORD = "admin", "ui-test-login-password"
PAGE_SIZE = 5
AGES = (timedelta(hours=1), timedelta(days=1), timedelta(days=2), timedelta(days=4), timedelta(days=7),
        timedelta(days=12), timedelta(days=20), timedelta(days=30))
SCREENSHOT_ENV = "BACKUP_OPS_UI_SCREENSHOT"

pytestmark = pytest.mark.slow


@dataclass
class UiSetup:
    stack: AirflowStack
    config_file: Path
    raw_config: dict[str, Any]
    local_root: Path
    archives: list[str]   # keys, newest first
    drills: dict[str, int]
    token: str
    built_at: datetime  # the backups' ages count from here (not from the module's import: a long suite runs first)

    @property
    def url(self) -> str:
        return f"{self.stack.api_url}/backup-ops"

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def write_config(self, **sections: dict[str, Any]) -> None:
        """The module's config with ``sections`` merged in; the api-server reads it at its next refresh."""
        raw = {key: {**value, **sections.get(key, {})} if isinstance(value, dict) else value
               for key, value in self.raw_config.items()}
        self.config_file.write_text(yaml.safe_dump(raw))
        time.sleep(1.2)  # ui.cache_seconds is 1

    def health_until(self, status: int, headers: dict[str, str] | None = None,
                     body: Callable[[dict[str, Any]], bool] | None = None) -> requests.Response:
        """``GET /backup-ops/health`` until it answers ``status`` (and a JSON body ``body`` accepts).

        An expired state is read again in the background, so an answer may still reflect the files and
        config as they were when that refresh began; waiting for the exact state asserted keeps the
        test from racing the refresh.
        """
        def answered() -> list[requests.Response]:  # a list: a Response with an error status is false
            answer = requests.get(f"{self.url}/health", headers=headers, timeout=60)
            matches = answer.status_code == status and (body is None or body(answer.json()))
            return [answer] if matches else []

        return self.stack.wait_for(f"/backup-ops/health to answer {status}", answered, 30)[0]  # type: ignore[no-any-return]


def _config(directory: Path, local_root: Path) -> dict[str, Any]:
    return {
        "backup": {"name": NAME, "source": {"databases": []},
                   "destination": {"destinations": [
                       {"name": "local", "type": "local", "path": str(local_root)},
                       {"name": "s3", "type": "s3", "conn_id": S3_CONN_ID, "bucket": BUCKET, "prefix": "demo"}]},
                   "staging_directory": str(directory / "staging"),
                   "password": {"variable": "backup_archive_password"}, "encryption": "aes256"},
        "monitor": {"max_age_days": 1, "max_storage_mb": 50, "restore_drill_max_age_days": 35},
        "notifications": {"events": {"unhealthy_backup_found": []}},
        "ui": {"cache_seconds": 1, "page_size": PAGE_SIZE},
    }


def _drill(now: datetime, destination: str, archive: str, finished_days_ago: float, rto: float | None
           ) -> DrillReport:
    finished = now - timedelta(days=finished_days_ago)
    started = finished - timedelta(seconds=rto or 20)
    failed = rto is None
    return DrillReport(NAME, archive, destination, started, finished, "failed" if failed else "succeeded", rto,
                       (DrillCheck("row_counts", "fail" if failed else "pass", "12 tables"),),
                       "validate: 1 of 12 tables differs" if failed else None, "restore_drill", f"manual__{started}")


@pytest.fixture(scope="module")
def ui(tmp_path_factory: pytest.TempPathFactory, pg_server: EmbeddedPostgres, moto_endpoint: str
       ) -> Iterator[UiSetup]:
    directory = tmp_path_factory.mktemp("ui")
    local_root = directory / "backups"
    local_root.mkdir()
    client = new_s3_client(moto_endpoint)
    client.create_bucket(Bucket=BUCKET)
    local = LocalDestination("local", NAME, local_root)
    s3 = S3Destination("s3", NAME, bucket=BUCKET, prefix="demo", client=client)
    archives = []
    now = datetime.now(UTC).replace(microsecond=0)
    for index, age in enumerate(AGES):  # the same archives on both, as backup_daily publishes them
        source, receipt = build_backup(directory / "work", now - age, backup_name=NAME, payload=60_000 - index * 5_000)
        archives.append(local.publish(source, source.name, receipt).path)
        s3.publish(source, source.name, receipt)
    drills = {"local": 0, "s3": 0}
    for destination, dest, plan in (("local", local, [(25, 240.0), (10, None), (3, 180.0)]), ("s3", s3, [(2, 95.0)])):
        for days, rto in plan:
            report = _drill(now, destination, archives[1], days, rto)
            dest.write_drill_report(report_key(NAME, report.started_at), report.to_json())
            drills[destination] += 1
    client.close()
    raw = _config(directory, local_root)
    config_file = directory / "backup_config.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    (directory / "dags").mkdir()
    extra = {
        **simple_auth(directory, {USER: PASSWORD}),
        "BACKUP_OPS_CONFIG": str(config_file),
        "AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD": ARCHIVE_PASSWORD,
        f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": os.environ[f"AIRFLOW_CONN_{S3_CONN_ID.upper()}"],
    }
    with running_airflow(pg_server, directory, dags_folder=directory / "dags", name="ui", extra=extra) as stack:
        started = time.monotonic()
        stack.start("api-server", "api-server")
        stack.wait_for_api()
        print(f"api-server answered {time.monotonic() - started:.1f} s after its start "
              f"(metadata database migrated in {stack.timings['migrate']:.1f} s)")
        token = access_token(stack.api_url, USER, PASSWORD)
        yield UiSetup(stack, config_file, raw, local_root, archives, drills, token, now)


# ---------------------------------------------------------------------------- /backup-ops/health


def test_health_is_public_and_200_when_every_destination_is_healthy(ui: UiSetup) -> None:
    answer = requests.get(f"{ui.url}/health", timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "healthy" and body["backup_name"] == NAME
    assert [d["destination"] for d in body["destinations"]] == ["local", "s3"]
    for destination in body["destinations"]:
        assert destination["reachable"] and destination["healthy"] and destination["failed_checks"] == []
        assert destination["backup_count"] == len(AGES)
        since_built = (datetime.now(UTC) - ui.built_at).total_seconds()
        assert 3600 - 5 <= destination["newest_backup_age_seconds"] <= 3600 + since_built + 5
        assert 0 < destination["used_storage"] <= destination["storage_limit"] == 50 * 1024 * 1024
    _reveals_nothing(answer.text, ui)
    head = requests.head(f"{ui.url}/health", timeout=60)
    assert head.status_code == 200 and head.content == b""


def test_health_is_503_after_the_newest_backup_aged_past_max_age_days_and_names_no_archive(ui: UiSetup) -> None:
    newest = ui.local_root / ui.archives[0]
    original = newest.read_bytes()
    try:
        # The newest backup is an hour old: older than 0.01 day (14.4 minutes). And damaged on the local disk,
        # whose check sentence names the archive, which the public answer must not.
        newest.write_bytes(original[:-10] + b"0123456789")
        ui.write_config(monitor={"max_age_days": 0.01})

        def failed_checks(answer: dict[str, Any]) -> dict[str, dict[str, str]]:
            return {d["destination"]: {c["name"]: c["sentence"] for c in d["failed_checks"]}
                    for d in answer["destinations"]}

        def both_changes_seen(answer: dict[str, Any]) -> bool:
            return "max_age_days" in failed_checks(answer).get("local", {})

        body = ui.health_until(503, body=both_changes_seen).json()
        assert body["status"] == "unhealthy"
        failed = failed_checks(body)
        assert set(failed["local"]) == {"max_age_days", "newest_intact"} and set(failed["s3"]) == {"max_age_days"}
        assert "is considered too old" in failed["s3"]["max_age_days"]
        assert "monitor.max_age_days is 0.01" in failed["s3"]["max_age_days"]
        assert failed["local"]["newest_intact"].startswith("The newest backup [archive] is damaged: sha256 differs")
        _reveals_nothing(json.dumps(body), ui)
    finally:
        newest.write_bytes(original)
        ui.write_config()
        ui.health_until(200)


def test_health_needs_a_login_when_the_config_says_so(ui: UiSetup) -> None:
    try:
        ui.write_config(ui={"health_requires_auth": True})
        ui.health_until(401)
        assert ui.health_until(200, headers=ui.auth()).json()["status"] == "healthy"
        assert requests.get(f"{ui.url}/health", timeout=60).status_code == 401
    finally:
        ui.write_config()
        ui.health_until(200)


# ---------------------------------------------------------------------------- /backup-ops/api/backups


def test_the_catalog_needs_a_login(ui: UiSetup) -> None:
    assert requests.get(f"{ui.url}/api/backups", timeout=60).status_code == 401
    forged = {"Authorization": "Bearer not-a-token"}
    assert requests.get(f"{ui.url}/api/backups", headers=forged, timeout=60).status_code in (401, 403)


def test_the_catalog_lists_every_backup_with_its_receipt_state_and_the_drills(ui: UiSetup) -> None:
    answer = requests.get(f"{ui.url}/api/backups", headers=ui.auth(), timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["backup_name"] == NAME
    for entry in body["destinations"]:
        backups = entry["backups"]
        assert backups["total"] == len(AGES) and backups["pages"] == 1
        assert [item["path"] for item in backups["items"]] == ui.archives  # newest first
        assert {item["state"] for item in backups["items"]} == {"intact"}
        assert all(item["size"] > 0 and item["date"] for item in backups["items"])
        assert len(entry["drills"]) == ui.drills[entry["destination"]]
        assert entry["latest_drill"]["outcome"] == "succeeded"
        assert entry["healthy"] and entry["used_storage"] > 0
    local = body["destinations"][0]
    assert [(d["outcome"], d["rto_seconds"]) for d in local["drills"]] == [
        ("succeeded", 180.0), ("failed", None), ("succeeded", 240.0)]
    assert local["drills"][1]["failed_checks"] == ["row_counts"]
    assert ARCHIVE_PASSWORD not in answer.text


def test_the_catalog_pages_through_the_backups_of_one_destination(ui: UiSetup) -> None:
    answer = requests.get(f"{ui.url}/api/backups", params={"destination": "s3", "page": 2, "per_page": 3},
                          headers=ui.auth(), timeout=60)
    assert answer.status_code == 200, answer.text
    [entry] = answer.json()["destinations"]
    assert entry["destination"] == "s3"
    assert {k: entry["backups"][k] for k in ("page", "per_page", "pages", "total")} == {
        "page": 2, "per_page": 3, "pages": 3, "total": len(AGES)}
    assert [item["path"] for item in entry["backups"]["items"]] == ui.archives[3:6]
    missing = requests.get(f"{ui.url}/api/backups", params={"destination": "tape"}, headers=ui.auth(), timeout=60)
    assert missing.status_code == 404 and "configured: local, s3" in missing.json()["detail"]


# ---------------------------------------------------------------------------- the page


def test_a_browser_without_a_login_is_sent_to_airflows_login(ui: UiSetup) -> None:
    answer = requests.get(f"{ui.url}/", headers={"Accept": "text/html"}, allow_redirects=False, timeout=60)
    assert answer.status_code == 307
    assert answer.headers["location"] == f"/api/v2/auth/login?next={quote(ui.url + '/', safe='')}"
    login = requests.get(ui.stack.api_url + answer.headers["location"], allow_redirects=False, timeout=60)
    assert login.status_code == 307 and "/auth/login?next=" in login.headers["location"]  # Airflow took the next URL


@pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed (make test installs it)")
def test_the_page_renders_its_tables_and_charts_in_a_real_browser(ui: UiSetup, tmp_path: Path) -> None:
    started = time.monotonic()
    with HeadlessChromium(width=1400, height=1000) as browser:
        browser.set_cookie(ui.stack.api_url, "_token", ui.token)
        browser.open(f"{ui.url}/", ready="document.querySelectorAll('section.destination').length === 2")
        sections = browser.evaluate("""[...document.querySelectorAll('section.destination')].map(s => ({
            name: s.dataset.destination,
            health: s.querySelector('h2 .badge').textContent,
            rows: [...s.querySelectorAll('table.backups tbody tr')].map(r => r.dataset.state),
            firstArchive: s.querySelector('table.backups tbody tr code').textContent,
            sizePoints: s.querySelector('svg.chart-size polyline').getAttribute('points').trim().split(' ').length,
            sizeWidth: s.querySelector('svg.chart-size polyline').getBBox().width,
            rtoMarkers: s.querySelectorAll('svg.chart-rto circle').length,
            failedMarkers: s.querySelectorAll('svg.chart-rto circle.failed').length,
            rtoWidth: s.querySelector('svg.chart-rto').getBoundingClientRect().width,
            pager: s.querySelector('nav.pager .position').textContent,
            drillLink: s.querySelector('a.drill').getAttribute('href'),
        }))""")
        assert [s["name"] for s in sections] == ["local", "s3"]
        for section in sections:
            assert section["health"] == "healthy"
            assert section["rows"] == ["intact"] * PAGE_SIZE
            assert section["firstArchive"] == ui.archives[0].rsplit("/", 1)[-1]
            assert section["sizePoints"] == len(AGES) and section["sizeWidth"] > 300  # drawn, across the chart
            assert section["rtoMarkers"] == ui.drills[section["name"]] and section["rtoWidth"] > 300
            assert section["pager"] == f"backups 1–{PAGE_SIZE} of {len(AGES)} · page 1 of 2"
            assert section["drillLink"] == "/dags/restore_drill"
        assert sections[0]["failedMarkers"] == 1
        assert ARCHIVE_PASSWORD not in browser.dom()
        browser.screenshot(tmp_path / "backup-ops-page.png")

        browser.open(f"{ui.url}/?page_local=2", ready="document.querySelectorAll('section.destination').length === 2")
        assert browser.evaluate("document.querySelectorAll('#destination-local table.backups tbody tr').length") == 3
        assert browser.evaluate("document.querySelectorAll('#destination-s3 table.backups tbody tr').length") == \
            PAGE_SIZE

        # Inside Airflow's UI: "Backups" in the navigation, the page in its iframe.
        frame_rows = ("(document.querySelector('iframe')?.contentDocument"
                      "?.querySelectorAll('table.backups tbody tr').length || 0)")
        browser.open(f"{ui.stack.api_url}/plugin/backup-ops", ready=f"{frame_rows} === {2 * PAGE_SIZE}", timeout=90)
        assert browser.evaluate("document.querySelector('iframe').getAttribute('src')") == "/backup-ops/"
        assert browser.evaluate("document.querySelector('a[href=\"/plugin/backup-ops\"]').textContent") == "Backups"
        shot = browser.screenshot(tmp_path / "backup-ops-in-airflow.png")
        # A DAG link in the frame opens the DAG in the window around it (the sandbox forbids the frame to).
        browser.evaluate("document.querySelector('iframe').contentDocument.querySelector('nav.dags a').click()")
        deadline = time.monotonic() + 20
        while browser.evaluate("location.pathname") != "/dags/backup_daily" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert browser.evaluate("location.pathname") == "/dags/backup_daily"
    assert shot.stat().st_size > 20_000
    if target := os.environ.get(SCREENSHOT_ENV):
        shutil.copyfile(shot, ROOT / target)
    print(f"browser part: {time.monotonic() - started:.1f} s; screenshots in {tmp_path}")


def _reveals_nothing(text: str, ui: UiSetup) -> None:
    """No archive name, host path, location or secret in a public answer."""
    for archive in ui.archives:
        assert archive.rsplit("/", 1)[-1] not in text
    assert ".zip" not in text and str(ui.local_root) not in text and "s3://" not in text
    assert ARCHIVE_PASSWORD not in text and PASSWORD not in text
