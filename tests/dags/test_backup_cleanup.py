"""``BackupCleanupOperator`` against real local destination folders, and ``backup_cleanup`` runs (``dag.test()``).

Scenarios use laravel-backup's test clock (now = 2016-01-01 22:00 UTC) and 1 MiB archives, so
the expected survivors are the ones laravel-backup's own cleanup tests name.
"""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from backup_ops.adapters.destinations.local import LocalDestination
from backup_ops.airflow.cleanup_steps import cleanup_moment, report_cleanup
from backup_ops.airflow.operators import BackupCleanupOperator
from backup_ops.core.errors import BackupError, ConfigError, DestinationError
from tests.dags.conftest import LARAVEL_RETENTION, set_notifications

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2016, 1, 1, 22, tzinfo=UTC)
MIB = 1024 * 1024
BACKUP_NAME = "mysite"
LARAVEL_DEFAULTS = LARAVEL_RETENTION


# ---------------------------------------------------------------------------- helpers


def write_config(base: Path, destinations: dict[str, Path], **strategy: Any) -> Path:
    """A minimal backup-ops config with local destinations and laravel-backup's default policy."""
    config = {
        "backup": {
            "name": BACKUP_NAME,
            "source": {},
            "destination": {"destinations": [
                {"name": name, "type": "local", "path": str(path)} for name, path in destinations.items()
            ]},
            "encryption": "none",
        },
        "cleanup": {"tries": 1, "default_strategy": {**LARAVEL_DEFAULTS, **strategy}},
    }
    file = base / "backup_config.yaml"
    file.write_text(yaml.safe_dump(config))
    return file


def make_backup(root: Path, name: str, date: datetime, size: int = MIB, receipt: bool = True) -> str:
    """An archive (sparse, ``size`` bytes) and its receipt below ``root/<backup name>/``; returns its key."""
    folder = root / BACKUP_NAME
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / name
    with open(archive, "wb") as out:
        out.truncate(size)
    if receipt:
        (folder / f"{name}.json").write_text(f'{{"size": {size}}}\n')
    os.utime(archive, (date.timestamp(), date.timestamp()))
    return f"{BACKUP_NAME}/{name}"


def stamp(date: datetime) -> str:
    return f"{date:%Y-%m-%d-%H-%M-%S}.zip"


def four_daily_backups(root: Path) -> list[str]:
    """laravel-backup's scenario: backups 1–4 days old, 1 MiB each (with a 2 MB limit the two newest stay)."""
    return [make_backup(root, stamp(NOW - timedelta(days=n)), NOW - timedelta(days=n)) for n in range(1, 5)]


def files_below(root: Path) -> dict[str, tuple[str, float]]:
    """Every file below ``root``: relative path → (sha256, mtime)."""
    return {
        path.relative_to(root).as_posix(): (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime)
        for path in sorted(root.rglob("*")) if path.is_file()
    }


def run_cleanup(destination: str, dry_run: bool | str = False, now: datetime = NOW) -> dict[str, Any]:
    operator = BackupCleanupOperator(task_id="cleanup", destination=destination, dry_run=dry_run)
    context: Any = {"data_interval_end": now}  # the one key the operator reads when it is present
    return operator.execute(context)


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One local destination called ``local`` (laravel-backup's 2 MB limit), the config pointing at it."""
    root = tmp_path / "backups"
    root.mkdir()
    config = write_config(tmp_path, {"local": root}, delete_oldest_backups_when_using_more_megabytes_than=2)
    monkeypatch.setenv("BACKUP_OPS_CONFIG", str(config))
    return root


# ---------------------------------------------------------------------------- operator


class TestBackupCleanupOperator:
    def test_template_fields(self) -> None:
        assert BackupCleanupOperator.template_fields == ("destination", "dry_run")

    def test_executes_the_plan_and_deletes_receipts_together(self, local: Path, capfd: pytest.CaptureFixture) -> None:
        newest, second, third, fourth = four_daily_backups(local)

        summary = run_cleanup("local")

        assert sorted(files_below(local)) == sorted([newest, f"{newest}.json", second, f"{second}.json"])
        assert summary == {
            "destination": "local", "kept": 2, "deleted": 2, "bytes_freed": 2 * MIB, "used_after": 2 * MIB,
            "dry_run": False, "now": "2016-01-01T22:00:00+00:00",
        }
        out = capfd.readouterr().out
        assert f"Keeping {newest} (rule: newest)" in out
        assert f"Keeping {second} (rule: keep-all window)" in out
        assert f"Deleting {third} (rule: storage limit 2 MB exceeded)" in out
        assert f"Deleting {fourth} (rule: storage limit 2 MB exceeded)" in out
        assert "retention measured from 2016-01-01T22:00:00+00:00" in out
        assert "Used storage after cleanup: 2.00 MB" in out

    def test_non_zip_files_are_never_touched(self, local: Path) -> None:
        make_backup(local, stamp(NOW - timedelta(days=1)), NOW - timedelta(days=1))
        ancient = NOW - timedelta(days=3000)
        others = {
            f"{BACKUP_NAME}/notes.txt": b"not a backup",
            f"{BACKUP_NAME}/2008-01-01-00-00-00.zip.json": b"{}",  # a receipt without its archive
            f"{BACKUP_NAME}/.2008-01-01-00-00-00.zip.1a2b3c4d.partial": b"half a copy",
            f"{BACKUP_NAME}/2008-01-01-00-00-00.tar.gz": b"another tool's backup",
            "outside/2008-01-01-00-00-00.zip": b"a zip outside the backup folder",
        }
        for relative, content in others.items():
            path = local / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            os.utime(path, (ancient.timestamp(), ancient.timestamp()))
        old_zip = make_backup(local, "2008-06-01-00-00-00.zip", datetime(2008, 6, 1, tzinfo=UTC), receipt=False)
        before = files_below(local)

        summary = run_cleanup("local")

        after = files_below(local)
        assert summary["deleted"] == 1
        assert set(before) - set(after) == {old_zip}
        assert {k: after[k] for k in others} == {k: before[k] for k in others}

    def test_dry_run_deletes_nothing_but_logs_every_decision(self, local: Path, capfd: pytest.CaptureFixture) -> None:
        newest, _, third, fourth = four_daily_backups(local)
        before = files_below(local)

        summary = run_cleanup("local", dry_run="True")  # as rendered from {{ params.dry_run }}

        assert files_below(local) == before
        assert summary == {
            "destination": "local", "kept": 2, "deleted": 2, "bytes_freed": 2 * MIB, "used_after": 2 * MIB,
            "dry_run": True, "now": "2016-01-01T22:00:00+00:00",
        }
        out = capfd.readouterr().out
        assert "DRY RUN" in out
        assert f"Keeping {newest} (rule: newest)" in out
        assert f"Would delete {third} (rule: storage limit 2 MB exceeded)" in out
        assert f"Would delete {fourth} (rule: storage limit 2 MB exceeded)" in out
        assert "Deleting " not in out

    def test_a_failed_deletion_does_not_stop_the_others_and_is_named(
        self, local: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
    ) -> None:
        keys = [make_backup(local, stamp(NOW - timedelta(days=n)), NOW - timedelta(days=n)) for n in range(1, 7)]
        victim = keys[3]  # the plan deletes keys[2:]; this one breaks in the middle of the run
        real_delete = LocalDestination.delete_backup

        def delete_while_something_else_interferes(self: LocalDestination, path: str) -> None:
            if path == victim:
                # Another process swaps the archive for a directory between listing and deleting:
                # unlink() then fails with EISDIR, even for root.
                archive = self.root / path
                archive.unlink()
                archive.mkdir()
            real_delete(self, path)

        monkeypatch.setattr(LocalDestination, "delete_backup", delete_while_something_else_interferes)

        with pytest.raises(DestinationError) as caught:
            run_cleanup("local")

        assert f"could not delete 1 of 4 planned backup(s): {victim};" in str(caught.value)
        remaining = files_below(local)
        for deleted in (keys[2], keys[4], keys[5]):
            assert deleted not in remaining and f"{deleted}.json" not in remaining
        assert (local / victim).is_dir()
        assert f"{victim}.json" in remaining  # its receipt stays with it
        out = capfd.readouterr().out
        assert f"Could not delete {victim}: Destination local: cannot delete" in out
        assert "Deleted 3 of 4 planned backup(s)" in out

    def test_rerunning_the_same_date_decides_the_same(self, local: Path) -> None:
        four_daily_backups(local)
        first = run_cleanup("local")
        after_first = files_below(local)

        second = run_cleanup("local")

        assert files_below(local) == after_first
        assert (first["deleted"], second["deleted"], second["kept"]) == (2, 0, 2)

    def test_empty_destination_deletes_nothing(self, local: Path) -> None:
        summary = run_cleanup("local")
        assert (summary["kept"], summary["deleted"], summary["used_after"]) == (0, 0, 0)

    def test_refuses_to_delete_when_the_newest_backup_is_older_than_the_retention_horizon(
        self, local: Path, capfd: pytest.CaptureFixture
    ) -> None:
        # laravel-backup would keep only the newest of these (5–10 years old); on a real destination
        # that usually means reset modification times, so nothing is deleted and the task fails.
        for years in range(5, 11):
            day = NOW.replace(year=2016 - years)
            make_backup(local, f"test_{day:%Y%m%d}.zip", day)
        before = files_below(local)

        with pytest.raises(BackupError, match=r"refusing to delete anything: the newest backup, mysite/test_20110101"):
            run_cleanup("local")
        assert files_below(local) == before

        summary = run_cleanup("local", dry_run=True)
        assert files_below(local) == before
        assert (summary["kept"], summary["deleted"]) == (1, 5)
        assert "A real run would refuse to delete anything" in capfd.readouterr().out

    @pytest.mark.parametrize("value", ["yes", "", "1", None, 1])
    def test_an_unclear_dry_run_value_is_refused(self, local: Path, value: Any) -> None:
        four_daily_backups(local)
        before = files_below(local)
        with pytest.raises(ConfigError, match=r"BackupCleanupOperator\.dry_run must be true or false"):
            run_cleanup("local", dry_run=value)
        assert files_below(local) == before

    def test_unknown_destination_names_the_configured_ones(self, local: Path) -> None:
        with pytest.raises(ConfigError, match="named 'elsewhere'; configured destinations are: local"):
            run_cleanup("elsewhere")

    def test_unreachable_destination_fails_clearly(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        not_a_directory = tmp_path / "mounted-disk"
        not_a_directory.write_text("the mount is missing")
        monkeypatch.setenv("BACKUP_OPS_CONFIG", str(write_config(tmp_path, {"usb": not_a_directory})))
        with pytest.raises(DestinationError, match=f"Destination usb: directory {not_a_directory} does not exist"):
            run_cleanup("usb")


class TestCleanupMoment:
    def test_the_data_interval_end_is_now(self) -> None:
        end = datetime(2016, 1, 1, 23, tzinfo=UTC)
        run = SimpleNamespace(run_after=datetime(2026, 1, 1, tzinfo=UTC))
        assert cleanup_moment({"data_interval_end": end, "dag_run": run}) == end

    def test_without_a_data_interval_run_after_is_now(self) -> None:
        run_after = datetime(2016, 1, 1, 22, 30, tzinfo=UTC)
        assert cleanup_moment({"dag_run": SimpleNamespace(run_after=run_after)}) == run_after

    def test_other_time_zones_become_plain_utc(self) -> None:
        import pendulum

        moment = cleanup_moment({"data_interval_end": pendulum.datetime(2016, 1, 2, 7, tz="Asia/Tokyo")})
        assert moment == NOW
        assert type(moment) is datetime and moment.tzinfo is UTC

    def test_no_date_at_all_is_an_error(self) -> None:
        with pytest.raises(ValueError, match="needs the run's logical date"):
            cleanup_moment({"dag_run": SimpleNamespace(run_after=None)})


class TestReportCleanup:
    def summary(self, name: str, deleted: int = 1) -> dict[str, Any]:
        return {"destination": name, "kept": 2, "deleted": deleted, "bytes_freed": deleted * MIB,
                "used_after": 2 * MIB, "dry_run": False, "now": NOW.isoformat()}

    def test_totals_when_every_destination_was_cleaned(self) -> None:
        result = report_cleanup(["a", "b"], [self.summary("a"), self.summary("b", deleted=3)])
        assert result == {"destinations": ["a", "b"], "kept": 4, "deleted": 4, "bytes_freed": 4 * MIB}

    def test_a_single_unwrapped_summary_is_accepted(self) -> None:
        assert report_cleanup(["a"], self.summary("a"))["deleted"] == 1

    def test_destinations_without_a_summary_are_named(self) -> None:
        with pytest.raises(DestinationError, match=r"Cleanup failed on destination\(s\) b, c \(cleaned: a\)"):
            report_cleanup(["a", "b", "c"], [self.summary("a")])
        with pytest.raises(DestinationError, match=r"Cleanup failed on destination\(s\) a;"):
            report_cleanup(["a"], None)


# ---------------------------------------------------------------------------- DAG runs


def parse_cleanup_dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "backup_cleanup.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["backup_cleanup"]


class TestBackupCleanupDag:
    def test_shape(self, local: Path) -> None:
        dag = parse_cleanup_dag()
        assert type(dag.timetable).__name__ == "CronTriggerTimetable"
        assert dag.timetable.expression == "0 1 * * *"
        assert dag.params["dry_run"] is False
        assert dag.max_active_runs == 1 and dag.catchup is False
        assert set(dag.task_dict) == {"cleanup", "report"}
        assert dag.task_dict["report"].trigger_rule == "all_done"
        assert "Keep every backup from the last 7 days" in dag.doc_md

    def test_a_broken_destination_fails_the_run_but_the_others_are_cleaned(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: None, capfd: pytest.CaptureFixture,
        mailbox: Any,
    ) -> None:
        good = tmp_path / "good"
        good.mkdir()
        broken = tmp_path / "broken"
        broken.write_text("a file where a directory should be")
        config = write_config(tmp_path, {"good": good, "broken": broken},
                              delete_oldest_backups_when_using_more_megabytes_than=2)
        set_notifications(config, mail={"to": "ops@example.com", "from": "backups@example.com"})
        monkeypatch.setenv("BACKUP_OPS_CONFIG", str(config))
        newest, second, _, _ = four_daily_backups(good)

        run = parse_cleanup_dag().test(logical_date=NOW)

        states = {(ti.task_id, ti.rendered_map_index or ti.map_index): ti.state for ti in run.get_task_instances()}
        assert run.state == "failed"
        assert states == {("cleanup", "good"): "success", ("cleanup", "broken"): "failed", ("report", -1): "failed"}
        assert sorted(files_below(good)) == sorted([newest, f"{newest}.json", second, f"{second}.json"])
        out = capfd.readouterr().out
        assert "retention measured from 2016-01-01T22:00:00+00:00" in out
        assert f"Destination broken: directory {broken} does not exist" in out
        assert "Cleanup failed on destination(s) broken (cleaned: good)" in out
        assert [m["Subject"] for m in mailbox.messages] == ["[backup-ops] mysite: cleanup FAILED"]
        (body,) = mailbox.bodies()
        assert f"cleanup[1]: Destination broken: directory {broken} does not exist" in body

    def test_dry_run_param_deletes_nothing(
        self, local: Path, airflow_db: None, capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
    ) -> None:
        _, _, third, _ = four_daily_backups(local)
        before = files_below(local)

        run = parse_cleanup_dag().test(logical_date=NOW, run_conf={"dry_run": True})

        assert run.state == "success"
        assert files_below(local) == before
        out = capfd.readouterr().out + caplog.text  # the task's logger prints; report's module logger propagates
        assert f"Would delete {third} (rule: storage limit 2 MB exceeded)" in out
        assert "Destination local: kept 2, would delete 2 (2.00 MB freed)" in out
