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
from airflow.sdk.exceptions import AirflowFailException

from backup_ops.adapters.destinations.base import receipt_bytes
from backup_ops.adapters.destinations.local import LocalDestination
from backup_ops.airflow.cleanup_steps import cleanup_moment, report_cleanup
from backup_ops.airflow.operators import BackupCleanupOperator
from backup_ops.core.errors import BackupError, ConfigError, DestinationError
from backup_ops.core.models import Receipt
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
    """An archive (sparse, ``size`` bytes of zeros) and its receipt below ``root/<backup name>/``; returns its key."""
    folder = root / BACKUP_NAME
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / name
    with open(archive, "wb") as out:
        out.truncate(size)
    if receipt:
        sha256 = hashlib.sha256(bytes(size)).hexdigest()
        (folder / f"{name}.json").write_bytes(receipt_bytes(Receipt(name, size, sha256, date.isoformat())))
    os.utime(archive, (date.timestamp(), date.timestamp()))
    return f"{BACKUP_NAME}/{name}"


def truncate(root: Path, key: str, size: int) -> None:
    """Damage an archive the way a full disk or a broken copy does: fewer bytes than its receipt says."""
    archive = root / key
    stat = archive.stat()
    os.truncate(archive, size)
    os.utime(archive, (stat.st_atime, stat.st_mtime))


def fails_at_once(match: str, cause: type[BaseException]) -> Any:
    """A permanent error ends the task without its retries (AirflowFailException around the cause)."""

    class Caught:
        def __enter__(self) -> Any:
            self.context = pytest.raises(AirflowFailException, match=match)
            self.info = self.context.__enter__()
            return self.info

        def __exit__(self, *exc: Any) -> bool:
            handled = bool(self.context.__exit__(*exc))
            assert isinstance(self.info.value.__cause__, cause), self.info.value.__cause__
            return handled

    return Caught()


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
            "dry_run": False, "now": "2016-01-01T22:00:00+00:00", "damaged": [], "leftovers": 0,
        }
        out = capfd.readouterr().out
        assert f"Keeping {newest} (rule: newest)" in out
        assert f"Keeping {second} (rule: keep-all window)" in out
        assert f"Deleting {third} (rule: storage limit 2 MB exceeded)" in out
        assert f"Deleting {fourth} (rule: storage limit 2 MB exceeded)" in out
        assert f"Intact: {newest}: size and SHA-256 (hashed from the file) match the receipt." in out
        assert "retention measured from 2016-01-01T22:00:00+00:00" in out
        assert "Used storage after cleanup: 2.00 MB" in out

    def test_non_zip_files_are_never_touched(self, local: Path) -> None:
        make_backup(local, stamp(NOW - timedelta(days=1)), NOW - timedelta(days=1))
        ancient = NOW - timedelta(days=3000)
        others = {
            f"{BACKUP_NAME}/notes.txt": b"not a backup",
            f"{BACKUP_NAME}/2008-01-01-00-00-00.tar.gz": b"another tool's backup",
            "outside/2008-01-01-00-00-00.zip": b"a zip outside the backup folder",
            "outside/2008-01-01-00-00-00.zip.json": b"{}",  # a receipt outside the backup folder
        }
        # Leftovers of failed publishes are not backups either, but they are removed (see TestLeftovers).
        leftovers = {
            f"{BACKUP_NAME}/2008-01-01-00-00-00.zip.json": b"{}",  # a receipt without its archive
            f"{BACKUP_NAME}/.2008-01-01-00-00-00.zip.1a2b3c4d.partial": b"half a copy",
        }
        for relative, content in {**others, **leftovers}.items():
            path = local / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            os.utime(path, (ancient.timestamp(), ancient.timestamp()))
        old_zip = make_backup(local, "2008-06-01-00-00-00.zip", datetime(2008, 6, 1, tzinfo=UTC), receipt=False)
        before = files_below(local)

        summary = run_cleanup("local")

        after = files_below(local)
        assert (summary["deleted"], summary["leftovers"]) == (1, 2)
        assert set(before) - set(after) == {old_zip, *leftovers}
        assert {k: after[k] for k in others} == {k: before[k] for k in others}

    def test_dry_run_deletes_nothing_but_logs_every_decision(self, local: Path, capfd: pytest.CaptureFixture) -> None:
        newest, _, third, fourth = four_daily_backups(local)
        before = files_below(local)

        summary = run_cleanup("local", dry_run="True")  # as rendered from {{ params.dry_run }}

        assert files_below(local) == before
        assert summary == {
            "destination": "local", "kept": 2, "deleted": 2, "bytes_freed": 2 * MIB, "used_after": 2 * MIB,
            "dry_run": True, "now": "2016-01-01T22:00:00+00:00", "damaged": [], "leftovers": 0,
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

        with fails_at_once(r"refusing to delete anything: the newest backup, mysite/test_20110101", BackupError):
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
        with fails_at_once(r"BackupCleanupOperator\.dry_run must be true or false", ConfigError):
            run_cleanup("local", dry_run=value)
        assert files_below(local) == before

    def test_unknown_destination_names_the_configured_ones(self, local: Path) -> None:
        with fails_at_once("named 'elsewhere'; configured destinations are: local", ConfigError):
            run_cleanup("elsewhere")

    def test_unreachable_destination_fails_clearly(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        not_a_directory = tmp_path / "mounted-disk"
        not_a_directory.write_text("the mount is missing")
        monkeypatch.setenv("BACKUP_OPS_CONFIG", str(write_config(tmp_path, {"usb": not_a_directory})))
        with fails_at_once(f"Destination usb: directory {not_a_directory} does not exist", DestinationError):
            run_cleanup("usb")


class TestDamagedArchives:
    """Issue 8, point 1: cleanup never trades a good backup for a damaged one."""

    def test_a_truncated_newest_backup_does_not_cost_the_intact_ones(self, local: Path,
                                                                     capfd: pytest.CaptureFixture) -> None:
        # laravel-backup's 2 MB scenario, but the newest archive lost half its bytes after it was published.
        newest, second, third, fourth = four_daily_backups(local)
        truncate(local, newest, MIB // 2)

        summary = run_cleanup("local")

        assert sorted(files_below(local)) == sorted([newest, f"{newest}.json", second, f"{second}.json",
                                                     third, f"{third}.json"])
        damage = f"{newest}: damaged (size differs: {MIB // 2} bytes, but its receipt says {MIB})"
        assert summary["damaged"] == [damage]
        assert (summary["kept"], summary["deleted"]) == (3, 1)
        out = capfd.readouterr().out
        assert f"DAMAGED: {newest}: size differs: {MIB // 2} bytes, but its receipt says {MIB}. It is kept" in out
        assert (f"Keeping {newest} (rule: damaged, kept for a human: size differs: {MIB // 2} bytes, but its "
                f"receipt says {MIB})") in out
        assert f"Keeping {second} (rule: newest)" in out
        assert f"Deleting {fourth} (rule: storage limit 2 MB exceeded)" in out

    def test_a_destination_whose_every_archive_is_damaged_fails_and_keeps_them(self, local: Path) -> None:
        keys = four_daily_backups(local)
        for key in keys:
            truncate(local, key, 10)
        before = files_below(local)

        with fails_at_once(r"Destination local: all 4 backup\(s\) are damaged .* none was deleted", DestinationError):
            run_cleanup("local")
        assert files_below(local) == before
        with fails_at_once(r"all 4 backup\(s\) are damaged", DestinationError):
            run_cleanup("local", dry_run=True)

    def test_archives_without_receipts_are_unverified_and_planned_by_date(self, local: Path,
                                                                         capfd: pytest.CaptureFixture) -> None:
        # A laravel-backup destination: no receipts at all. Nothing is damaged, retention is laravel-backup's.
        keys = [make_backup(local, stamp(NOW - timedelta(days=n)), NOW - timedelta(days=n), receipt=False)
                for n in range(1, 5)]
        summary = run_cleanup("local")
        assert sorted(files_below(local)) == sorted(keys[:2])
        assert (summary["damaged"], summary["deleted"]) == ([], 2)
        assert f"Unverified: {keys[0]}: no receipt beside it" in capfd.readouterr().out


class TestLeftovers:
    """Issue 8, point 10: what failed publishes left behind goes after a day, logged and counted."""

    def test_old_orphan_receipts_and_partial_copies_go_young_ones_stay(self, local: Path,
                                                                        capfd: pytest.CaptureFixture) -> None:
        make_backup(local, stamp(NOW - timedelta(days=1)), NOW - timedelta(days=1))
        folder = local / BACKUP_NAME
        two_days_ago = (datetime.now(UTC) - timedelta(days=2)).timestamp()
        old_receipt, young_receipt = folder / "2015-12-30-02-00-00.zip.json", folder / "2015-12-31-02-00-00.zip.json"
        partial = folder / ".2015-12-30-02-00-00.zip.0badc0de.partial"
        for file in (old_receipt, young_receipt, partial):
            file.write_text("{}")
        for file in (old_receipt, partial):
            os.utime(file, (two_days_ago, two_days_ago))

        assert run_cleanup("local", dry_run=True)["leftovers"] == 2
        assert old_receipt.exists() and partial.exists()
        assert f"Would remove orphan receipt {BACKUP_NAME}/{old_receipt.name}" in capfd.readouterr().out

        assert run_cleanup("local")["leftovers"] == 2
        assert not old_receipt.exists() and not partial.exists()
        assert young_receipt.exists()  # may belong to a publish still running
        out = capfd.readouterr().out
        assert f"Removed partial copy {BACKUP_NAME}/{partial.name}" in out
        assert "removed 2 of 2 leftover(s)" in out


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
    def summary(self, name: str, deleted: int = 1, damaged: tuple[str, ...] = ()) -> dict[str, Any]:
        return {"destination": name, "kept": 2, "deleted": deleted, "bytes_freed": deleted * MIB,
                "used_after": 2 * MIB, "dry_run": False, "now": NOW.isoformat(), "damaged": list(damaged),
                "leftovers": 1}

    def test_totals_when_every_destination_was_cleaned(self) -> None:
        result = report_cleanup(["a", "b"], [self.summary("a"), self.summary("b", deleted=3)])
        assert result == {"destinations": ["a", "b"], "kept": 4, "deleted": 4, "bytes_freed": 4 * MIB,
                          "leftovers": 2}

    def test_a_single_unwrapped_summary_is_accepted(self) -> None:
        assert report_cleanup(["a"], self.summary("a"))["deleted"] == 1

    def test_each_failed_task_is_named_with_its_cause(self) -> None:
        notes = [{"task": "cleanup", "map_index": 1, "error": "Destination b: first attempt's cause."},
                 {"task": "cleanup", "map_index": 1, "error": "Destination b: directory /mnt/b does not exist."},
                 {"task": "cleanup", "map_index": 2, "error": "Destination c: bucket gone."}]
        states = {"cleanup_0": "success", "cleanup_1": "failed", "cleanup_2": "failed"}
        with pytest.raises(DestinationError) as caught:
            report_cleanup(["a", "b", "c"], [self.summary("a")], states, notes)
        assert str(caught.value) == (
            "Cleanup failed on destination(s) b, c (cleaned: a). cleanup[b] failed: Destination b: directory /mnt/b "
            "does not exist. cleanup[c] failed: Destination c: bucket gone.")
        assert caught.value.retryable is False

    def test_a_task_that_never_ran_is_not_blamed_as_failed(self) -> None:
        states = {"cleanup_0": "upstream_failed", "cleanup_1": "failed"}
        with pytest.raises(DestinationError) as caught:
            report_cleanup(["a", "b"], None, states, [])
        assert str(caught.value) == ("Cleanup failed on destination(s) a, b. cleanup[a] did not run (state "
                                     "upstream_failed). cleanup[b] failed: its cause was not recorded; see the task "
                                     "log.")
        with pytest.raises(DestinationError, match=r"cleanup\[a\] has no task instance in this run"):
            report_cleanup(["a"], None, {}, [])

    def test_damaged_archives_fail_the_report_although_every_destination_was_cleaned(self) -> None:
        damage = "mysite/x.zip: damaged (size differs: 1 bytes, but its receipt says 2)"
        with pytest.raises(DestinationError) as caught:
            report_cleanup(["a", "b"], [self.summary("a"), self.summary("b", damaged=(damage,))],
                           {"cleanup_0": "success", "cleanup_1": "success"})
        assert str(caught.value) == ("Cleanup found 1 damaged archive(s) and kept them for a human to inspect and "
                                     f"delete by hand (see docs/runbook.md): b: {damage}.")


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
        cause = f"Destination broken: directory {broken} does not exist; create it or fix destination path."
        # The report's own error names the failed task and its cause (issue 8, point 6), not just a destination.
        assert f"Cleanup failed on destination(s) broken (cleaned: good). cleanup[broken] failed: {cause}" in out
        assert [m["Subject"] for m in mailbox.messages] == ["Cleaning up the backups of mysite failed."]
        (body,) = mailbox.bodies()
        assert f"Failed tasks:\n- cleanup[broken]: {cause}" in body
        # ALL_DONE downstream of every mapped cleanup task: the report ran after each of them had ended.
        by_task = {(ti.task_id, ti.map_index): ti for ti in run.get_task_instances()}
        assert by_task[("report", -1)].start_date >= max(ti.end_date for (task, _), ti in by_task.items()
                                                           if task == "cleanup")

    def test_a_damaged_archive_fails_the_report_and_reaches_the_mail(
        self, local: Path, airflow_db: None, mailbox: Any, capfd: pytest.CaptureFixture
    ) -> None:
        set_notifications(Path(os.environ["BACKUP_OPS_CONFIG"]), mail={"to": "ops@example.com",
                                                                        "from": "backups@example.com"})
        newest, second, third, _ = four_daily_backups(local)
        truncate(local, newest, 100)

        run = parse_cleanup_dag().test(logical_date=NOW)

        states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
        assert states == {("cleanup", 0): "success", ("report", -1): "failed"}
        assert sorted(files_below(local)) == sorted(f"{k}{s}" for k in (newest, second, third) for s in ("", ".json"))
        damage = f"local: {newest}: damaged (size differs: 100 bytes, but its receipt says {MIB})"
        assert "Cleanup found 1 damaged archive(s) and kept them for a human" in capfd.readouterr().out
        (body,) = mailbox.bodies()
        assert f"damaged archives (kept for a human; see docs/runbook.md):\n{damage}" in body

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
