"""Black-box check: the real ``airflow dags test backup_cleanup <date>`` leaves exactly what ``plan_cleanup`` keeps.

The destination holds laravel-backup's 1,000-day history (two backups a day, 2,000 archives) under
prefixed names like ``test_20151231_first.zip``. Such names carry no parsable timestamp, so each
backup is dated by its modification time, exactly as laravel-backup does. The CLI runs in a
subprocess with its own freshly migrated AIRFLOW_HOME, like an operator would run it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from backup_ops.adapters.destinations.local import LocalDestination
from backup_ops.core.retention import RetentionPolicy, plan_cleanup
from tests.dags.conftest import LARAVEL_RETENTION

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
NOW = datetime(2016, 1, 1, 22, tzinfo=UTC)
LOGICAL_DATE = "2016-01-01T22:00:00+00:00"
BACKUP_NAME = "mysite"
POLICY = LARAVEL_RETENTION
# The survivors laravel-backup's test "it can remove old backups from the backup directory" names,
# written out by hand rather than computed, so this check does not trust the function it checks.
EXPECTED_SURVIVORS = {
    f"{BACKUP_NAME}/test_{stem}.zip"
    for stem in (
        "20131231_first", "20141231_first",                                           # yearly
        "20150630_first", "20150731_first", "20150831_first", "20150930_first",       # monthly
        "20151018_first", "20151025_first", "20151101_first", "20151108_first",       # weekly
        "20151115_first", "20151122_first", "20151129_first", "20151206_first",
        "20151209_first", "20151210_first", "20151211_first", "20151212_first",       # daily
        "20151213_first", "20151214_first", "20151215_first", "20151216_first",
        "20151217_first", "20151218_first", "20151219_first", "20151220_first",
        "20151221_first", "20151222_first", "20151223_first", "20151224_first",
        "20151225_first",
        "20151225_second", "20151226_second", "20151227_second", "20151228_second",   # keep-all window
        "20151229_second", "20151230_second", "20151231_second",
        "20151226_first", "20151227_first", "20151228_first", "20151229_first",
        "20151230_first", "20151231_first",
    )
}
NOT_BACKUPS = {
    f"{BACKUP_NAME}/README.txt": b"not a backup",
    f"{BACKUP_NAME}/test_20130101_first.tar.gz": b"another tool's archive",
}
# Left behind by an interrupted publish long ago: not a backup, but cleanup removes it (a leftover).
LEFTOVERS = {
    f"{BACKUP_NAME}/.test_20130101_first.zip.0badc0de.partial": b"an interrupted copy",
}


def laravel_history(root: Path) -> None:
    """2,000 archives: for each of the 1,000 days before NOW, "first" at 22:00 and "second" two hours later."""
    folder = root / BACKUP_NAME
    folder.mkdir(parents=True)
    for n in range(1, 1001):
        day = NOW - timedelta(days=n)
        for suffix, moment in (("first", day), ("second", day + timedelta(hours=2))):
            archive = folder / f"test_{day:%Y%m%d}_{suffix}.zip"
            archive.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: 22 bytes
            (folder / f"{archive.name}.json").write_text('{"size": 22}\n')
            os.utime(archive, (moment.timestamp(), moment.timestamp()))
    ancient = (NOW - timedelta(days=5000)).timestamp()
    for relative, content in {**NOT_BACKUPS, **LEFTOVERS}.items():
        path = root / relative
        path.write_bytes(content)
        os.utime(path, (ancient, ancient))


def files_below(root: Path) -> dict[str, tuple[str, float]]:
    return {
        path.relative_to(root).as_posix(): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime)
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def airflow_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(VENV_BIN / "airflow"), *args], env=env, capture_output=True, text=True,
                          timeout=600, check=False)


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Build the destination, plan it with the pure function, then run the real CLI once."""
    base = tmp_path_factory.mktemp("cleanup_blackbox")
    backups = base / "backups"
    laravel_history(backups)
    config = {
        "backup": {
            "name": BACKUP_NAME,
            "source": {},
            "destination": {"destinations": [{"name": "local", "type": "local", "path": str(backups)}]},
            "encryption": "none",
        },
        "cleanup": {"tries": 1, "default_strategy": POLICY},
    }
    config_file = base / "backup_config.yaml"
    config_file.write_text(yaml.safe_dump(config))

    listing = LocalDestination("local", BACKUP_NAME, backups).list_backups()
    plan = plan_cleanup(listing, RetentionPolicy(**POLICY), NOW)
    before = files_below(backups)

    # Only what an operator's shell would have: no pytest AIRFLOW__* settings (unit-test mode
    # changes timetable defaults), a fresh AIRFLOW_HOME, the venv's airflow first on PATH.
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
    env.update({
        "AIRFLOW_HOME": str(base / "airflow_home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "BACKUP_OPS_CONFIG": str(config_file),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    })
    migrated = airflow_cli("db", "migrate", env=env)
    assert migrated.returncode == 0, migrated.stdout[-3000:] + migrated.stderr[-3000:]
    result = airflow_cli("dags", "test", "backup_cleanup", LOGICAL_DATE, env=env)
    return {"backups": backups, "listing": listing, "plan": plan, "before": before, "result": result,
            "log": result.stdout + result.stderr}


@pytest.mark.slow
class TestCleanupBlackBox:
    def test_the_pure_function_keeps_the_hand_written_survivors(self, cleaned: dict[str, Any]) -> None:
        # Guards the scenario itself: prefixed names are dated by mtime, and 44 of 2,000 survive.
        assert len(cleaned["listing"]) == 2000
        assert {backup.path for backup in cleaned["plan"].keep} == EXPECTED_SURVIVORS

    def test_the_cli_run_succeeds(self, cleaned: dict[str, Any]) -> None:
        result = cleaned["result"]
        assert result.returncode == 0, cleaned["log"][-5000:]

    def test_now_is_the_logical_date_given_on_the_command_line(self, cleaned: dict[str, Any]) -> None:
        assert f"retention measured from {LOGICAL_DATE}" in cleaned["log"], cleaned["log"][-5000:]

    def test_exactly_the_planned_archives_remain(self, cleaned: dict[str, Any]) -> None:
        remaining = {path for path in files_below(cleaned["backups"]) if path.endswith(".zip")}
        assert remaining == {backup.path for backup in cleaned["plan"].keep} == EXPECTED_SURVIVORS

    def test_receipts_went_with_their_archives(self, cleaned: dict[str, Any]) -> None:
        receipts = {path for path in files_below(cleaned["backups"]) if path.endswith(".zip.json")}
        assert receipts == {f"{path}.json" for path in EXPECTED_SURVIVORS}

    def test_files_that_are_not_backups_are_untouched(self, cleaned: dict[str, Any]) -> None:
        after, before = files_below(cleaned["backups"]), cleaned["before"]
        assert {path: after.get(path) for path in NOT_BACKUPS} == {path: before[path] for path in NOT_BACKUPS}

    def test_leftovers_of_interrupted_publishes_are_removed(self, cleaned: dict[str, Any]) -> None:
        assert set(LEFTOVERS) <= set(cleaned["before"])
        assert not set(LEFTOVERS) & set(files_below(cleaned["backups"]))
        assert f"Removed partial copy {next(iter(LEFTOVERS))}" in cleaned["log"]

    def test_every_decision_is_logged_with_its_rule(self, cleaned: dict[str, Any]) -> None:
        log = cleaned["log"]
        for path, reason in cleaned["plan"].reasons.items():
            verb = "Keeping" if path in EXPECTED_SURVIVORS else "Deleting"
            assert f"{verb} {path} (rule: {reason})" in log
        assert "Used storage after cleanup: 968 B" in log  # 44 archives × 22 bytes
