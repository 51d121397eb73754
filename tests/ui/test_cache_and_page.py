"""The page's cache and HTML without an api-server: real local destinations, a clock of the test's own.

The cache reads the destinations through ``take_snapshot`` and ``evaluate`` and keeps them for
``ui.cache_seconds``; receipt states are read for the page shown only. The page escapes whatever
a destination, a receipt or a drill report holds. The plugin builds its app only when the
api-server asks for it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from backup_ops.adapters.destinations.local import LocalDestination
from backup_ops.airflow.ui.app import PAGE_SECURITY, URL_PREFIX, page_html
from backup_ops.airflow.ui.cache import CatalogCache
from backup_ops.airflow.ui.page import SCRIPT, STYLE, PageModel, Section, render_page
from backup_ops.core.catalog import page_window
from backup_ops.core.config import BackupConfig, load_config
from backup_ops.core.drill_report import DrillReport, report_key
from backup_ops.core.errors import ConfigError
from tests.backup_archives import ARCHIVE_PASSWORD, publish_backup

ROOT = Path(__file__).resolve().parents[2]
NAME = "app"
NOW = datetime.now(UTC).replace(microsecond=0)
PASSWORD_ENV = "UI_CACHE_TEST_ARCHIVE_PASSWORD"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[LocalDestination, Path]:
    """A local destination with 7 daily backups (the newest 1 h old) and a config file naming it."""
    monkeypatch.setenv(PASSWORD_ENV, ARCHIVE_PASSWORD)
    root = tmp_path / "backups"
    root.mkdir()
    destination = LocalDestination("disk", NAME, root)
    for days in range(7):
        publish_backup(destination, tmp_path / "work", NOW - timedelta(days=days, hours=1), payload=2048)
    config = {"backup": {"name": NAME, "source": {}, "staging_directory": str(tmp_path / "staging"),
                         "destination": {"destinations": [{"name": "disk", "type": "local", "path": str(root)}]},
                         "password": {"env": PASSWORD_ENV}},
              "ui": {"cache_seconds": 30, "page_size": 3}}
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump(config))
    return destination, file


def loader(file: Path, calls: list[float] | None = None) -> Callable[[], BackupConfig]:
    def load() -> BackupConfig:
        if calls is not None:
            calls.append(1)
        return load_config(file)

    return load


def test_the_state_is_kept_for_cache_seconds_then_read_again_in_the_background(disk: tuple[Any, Path]) -> None:
    destination, file = disk
    clock = Clock()
    cache = CatalogCache(loader(file), clock)
    first = cache.state()
    [entry] = first.destinations
    assert entry.report.healthy and len(entry.report.snapshot.backups) == 7
    clock.now += 29.9
    assert cache.state() is first and cache.age(first) == pytest.approx(29.9)
    publish_backup(destination, file.parent / "work", NOW, payload=2048)  # not seen until the state expires
    raw = yaml.safe_load(file.read_text())
    raw["monitor"] = {"max_age_days": 0.01}
    file.write_text(yaml.safe_dump(raw))
    assert cache.settings() is first.config
    clock.now += 0.1
    assert cache.settings().monitor.max_age_days == 0.01  # expired: the file, read now
    assert cache.state() is first  # expired: still shown, while it is read again in the background
    cache.wait()
    second = cache.state()
    assert second is not first and len(second.destinations[0].report.snapshot.backups) == 8
    assert second.config.monitor.max_age_days == 0.01  # the config is read again with the destinations


def test_with_cache_seconds_0_every_request_reads_the_destinations(disk: tuple[Any, Path]) -> None:
    _, file = disk
    raw = yaml.safe_load(file.read_text())
    raw["ui"]["cache_seconds"] = 0
    file.write_text(yaml.safe_dump(raw))
    cache = CatalogCache(loader(file), Clock())
    first = cache.state()
    assert cache.state() is not first


def test_a_config_broken_after_a_good_read_is_reported_at_the_next_request(disk: tuple[Any, Path]) -> None:
    _, file = disk
    clock = Clock()
    cache = CatalogCache(loader(file), clock)
    cache.state()
    file.write_text("backup: [")
    clock.now += 31
    cache.state()  # the last good state, while the background read fails
    cache.wait()
    with pytest.raises(ConfigError, match="is not valid YAML"):
        cache.state()


def test_a_cold_cache_is_read_once_however_many_requests_arrive(disk: tuple[Any, Path]) -> None:
    _, file = disk
    calls: list[float] = []
    cache = CatalogCache(loader(file, calls), Clock())
    states: list[Any] = []
    threads = [threading.Thread(target=lambda: states.append(cache.state())) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len({id(state) for state in states}) == 1


def test_receipt_states_are_read_for_the_page_shown_only(disk: tuple[Any, Path]) -> None:
    _, file = disk
    cache = CatalogCache(loader(file), Clock())
    state = cache.state()
    backups = state.destinations[0].report.snapshot.backups
    checked = set(state.checks["disk"])
    assert checked == {backups[0].path}  # the snapshot's own check of the newest, intact
    rows = cache.rows(state, "disk", page_window(len(backups), 2, 3))
    assert [row.path for row in rows] == [b.path for b in backups[3:6]]
    assert {row.state for row in rows} == {"intact"}
    assert set(state.checks["disk"]) == checked | {b.path for b in backups[3:6]}
    (file.parent / "backups" / f"{backups[6].path}.json").unlink()  # the last one's receipt is gone
    [last] = cache.rows(state, "disk", page_window(len(backups), 3, 3))
    assert last.state == "unverified" and "no receipt" in last.detail
    assert cache.rows(state, "tape", page_window(0, 1, 3)) == []


def test_a_broken_config_is_an_error_each_time_not_a_cached_state(tmp_path: Path) -> None:
    file = tmp_path / "missing.yaml"
    cache = CatalogCache(loader(file), Clock())
    for _ in range(2):
        with pytest.raises(ConfigError, match="missing.yaml does not exist"):
            cache.state()


def test_the_page_escapes_what_destinations_and_drill_reports_hold(disk: tuple[Any, Path]) -> None:
    destination, file = disk
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    started = NOW - timedelta(days=1)
    report = DrillReport(NAME, f"{NAME}/{hostile}.zip", "disk", started, started + timedelta(seconds=30), "failed",
                         None, (), hostile)
    destination.write_drill_report(report_key(NAME, started), report.to_json())
    cache = CatalogCache(loader(file), Clock())
    state = cache.state()
    [entry] = state.destinations
    window = page_window(len(entry.report.snapshot.backups), 1, 3)
    html = render_page(PageModel(NAME, state.checked_at, 0.0, 30, [Section(entry.report, cache.rows(state, "disk",
                                 window), window)], {"disk": 1}))
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert hostile not in html and "<img" not in html
    assert html.count("<script>") == 1 and f"<script>{SCRIPT}</script>" in html  # only the page's own
    policy = PAGE_SECURITY["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy  # so an injected script could not run
    assert f"<style>{STYLE}</style>" in html
    assert 'href="/dags/restore_drill"' in html and 'data-copy="' in html
    assert "backups 1–3 of 7 · page 1 of 3" in html
    for wanted, shown in (("3", "backups 7–7 of 7 · page 3 of 3"), ("99", "page 3 of 3"), ("²", "page 1 of 3"),
                          ("-1", "page 1 of 3"), ("x", "page 1 of 3")):
        assert shown in page_html(cache, state, {"page_disk": wanted})


def test_the_plugin_builds_its_app_only_when_the_api_server_reads_it() -> None:
    code = ("import sys\n"
            "import backup_ops_plugin as p\n"
            "assert 'fastapi' not in sys.modules and 'backup_ops.airflow.ui.app' not in sys.modules\n"
            "plugin = p.BackupOpsPlugin()\n"
            "[app] = plugin.fastapi_apps\n"
            "assert plugin.fastapi_apps[0] is app and type(app['app']).__name__ == 'FastAPI'\n"
            "print(app['url_prefix'], plugin.external_views[0]['url_route'])\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "plugins", capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1].split() == [URL_PREFIX, "backup-ops"]  # after Airflow's log lines
