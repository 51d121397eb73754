"""backup_daily under faults: what fails at once, what the run reports, and what stays on the worker.

Real ``dag.test()`` runs against a real PostgreSQL server and real directories (see conftest.py).
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from backup_ops.airflow.backup_steps import free_archive_name
from backup_ops.airflow.operators import DumpDatabaseOperator
from backup_ops.airflow.run_outcome import summarize
from backup_ops.airflow.staging import STALE_AFTER, prepare_staging, remove_staging
from backup_ops.core.config import load_config
from backup_ops.core.errors import BackupError, DumpError
from backup_ops.core.models import archive_file_name
from tests.dags.conftest import ROOT, run_backup
from tests.integration.test_dump import processes_in_group, survivors_of, wait_for


@pytest.fixture(scope="module")
def dag() -> Any:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "backup_daily.py"))
    assert not bag.import_errors, bag.import_errors
    return bag.dags["backup_daily"]


def tries_of(run: Any, task_id: str) -> list[int]:
    return [ti.try_number for ti in run.get_task_instances() if ti.task_id == task_id]


class TestWiring:
    def test_finalize_waits_for_every_task_of_the_run(self, backup_env: Any, dag: Any) -> None:
        # Directly upstream, not only through publish: a failed preflight must not let finalize run early.
        # Not the setup: finalize stays outside its scope, so that a failed setup is reported too.
        work = set(dag.task_dict) - {"finalize", "prepare_staging"}
        assert work == dag.task_dict["finalize"].upstream_task_ids

    def test_dumps_and_files_wait_for_both_preflight_checks(self, backup_env: Any, dag: Any) -> None:
        for task_id in ("dump_database", "collect_files"):
            assert {"check_databases", "check_destinations"} <= dag.task_dict[task_id].upstream_task_ids, task_id

    def test_dumps_run_in_their_pool(self, backup_env: Any, dag: Any) -> None:
        assert dag.task_dict["dump_database"].pool == "backup_ops_dumps"


class TestPermanentErrorsFailAtOnce:
    def test_a_missing_password_variable_is_not_retried(self, backup_env: Any) -> None:
        # backup_env configures tries: 2 with no retry delay; a retry would show as try_number 2.
        saved = os.environ.pop("AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD")
        try:
            run, states = run_backup()
        finally:
            os.environ["AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD"] = saved
        assert run.state == "failed"
        assert states[("plan", -1)] == "failed"
        assert tries_of(run, "plan") == [1], "a missing secret cannot heal by retrying"

    def test_a_refused_login_is_not_retried(self, backup_env: Any, pg_server: Any) -> None:
        good = os.environ["AIRFLOW_CONN_APP_DB"]
        os.environ["AIRFLOW_CONN_APP_DB"] = pg_server.conn_uri(backup_env["db"], user="invoicing_app",
                                                               password="wrong-password")
        try:
            run, states = run_backup()
        finally:
            os.environ["AIRFLOW_CONN_APP_DB"] = good
        assert states[("check_databases", -1)] == "failed"
        assert tries_of(run, "check_databases") == [1]


class TestTheRunTellsTheTruth:
    def test_a_staging_folder_that_cannot_be_made_is_reported(self, backup_env: Any, smtp_server: Any,
                                                               mailbox: Any) -> None:
        original = backup_env["config"].read_text()
        config = yaml.safe_load(original)
        config["backup"]["staging_directory"] = "/dev/null/staging"  # below a file: mkdir fails
        config["notifications"] = {"mail": {"to": ["ops@example.com"], "from": "backups@example.com"}}
        backup_env["config"].write_text(yaml.safe_dump(config))
        try:
            run, states = run_backup()
        finally:
            backup_env["config"].write_text(original)
        assert run.state == "failed"
        assert states[("prepare_staging", -1)] == "failed"
        assert states[("finalize", -1)] == "failed", "finalize runs and reports even when the setup failed"
        (body,) = mailbox.bodies()
        assert "prepare_staging" in body and "backup.staging_directory /dev/null" in body

    def test_a_run_without_archive_names_the_failed_task_and_its_cause(self) -> None:
        with pytest.raises(BackupError) as caught:
            summarize({"destinations": ["local"]}, None, [], ["check_databases: password authentication failed."],
                      continue_on_failure=False)
        assert str(caught.value) == ("No archive was built, so nothing was published: check_databases: password "
                                     "authentication failed.")

    def test_only_destinations_that_were_tried_are_blamed_with_their_cause(self) -> None:
        archive = {"name": "2026-11-29-02-00-00.zip", "size": 10, "sha256": "ab" * 32}
        published = [{"destination": "local", "location": "file:///b/x.zip"}]
        with pytest.raises(BackupError, match=r"failed on destination\(s\) s3 \(verified copies exist on local\): "
                                              r"publish\[1\]: bucket gone\.$"):
            summarize({"destinations": ["local", "s3"]}, archive, published, ["publish[1]: bucket gone."],
                      continue_on_failure=False)


class TestStaging:
    def test_a_crashed_runs_staging_folder_is_removed_by_the_next_run(self, backup_env: Any) -> None:
        config = load_config()
        root = config.backup.staging_directory
        crashed = root / "backup_daily__scheduled__2026-11-27T02_00_00_00_00"
        (crashed / "db-dumps").mkdir(parents=True)
        dump = crashed / "db-dumps" / "postgresql-app.sql.gz"
        dump.write_bytes(b"plaintext rows")
        recent = root / "backup_daily__manual__2026-11-28T09_00_00_00_00"
        recent.mkdir()
        (recent / "files.jsonl").write_text("{}\n")
        old = time.time() - STALE_AFTER.total_seconds() - 60
        for path in (dump, crashed / "db-dumps", crashed):
            os.utime(path, (old, old))
        try:
            mine = Path(prepare_staging(config, "backup_daily", "manual__2026-11-29T10:00:00+00:00"))
            assert mine.is_dir() and mine.stat().st_mode & 0o777 == 0o700
            assert not crashed.exists(), "a run untouched for longer than the longest run is over"
            assert recent.exists(), "a run that may still be going is left alone"
        finally:
            for folder in (recent, root / mine.name):
                remove_staging(config, str(folder))

    def test_a_failed_run_keeps_only_its_encrypted_archive_for_a_cleared_publish(self, backup_env: Any) -> None:
        config = load_config()
        staging = Path(prepare_staging(config, "backup_daily", "manual__keep"))
        (staging / "db-dumps").mkdir()
        (staging / "db-dumps" / "postgresql-app.sql.gz").write_bytes(b"rows")
        (staging / "files.jsonl").write_text("{}\n")
        (staging / "2026-11-29-02-00-00.zip").write_bytes(b"PK")
        remove_staging(config, str(staging), archive={"name": "2026-11-29-02-00-00.zip"},
                       missing_destinations=["offsite"])
        assert sorted(p.name for p in staging.iterdir()) == ["2026-11-29-02-00-00.zip"]
        # Clearing the failed publish re-runs the setup first: it must not lose the archive.
        assert prepare_staging(config, "backup_daily", "manual__keep") == str(staging)
        assert (staging / "2026-11-29-02-00-00.zip").is_file()
        remove_staging(config, str(staging), archive={"name": "2026-11-29-02-00-00.zip"}, missing_destinations=[])
        assert not staging.exists()


class TestNameClash:
    def test_plan_steps_past_a_second_another_run_already_took(self, backup_env: Any) -> None:
        config = load_config()
        now = datetime.now(UTC).replace(microsecond=0)
        taken = [archive_file_name("", now + timedelta(seconds=n)) for n in range(3)]
        backups = backup_env["backups"]
        backups.mkdir(parents=True, exist_ok=True)
        (backups / taken[0]).write_bytes(b"another run's archive")
        (backups / (taken[1] + ".json")).write_text("{}")  # another run's receipt, its archive still uploading
        (backups / taken[2]).write_bytes(b"and another")
        try:
            created_at, name = free_archive_name(config, ["local"], now)
            assert name == archive_file_name("", now + timedelta(seconds=3))
            assert created_at == now + timedelta(seconds=3)
        finally:
            for file in taken:
                (backups / file).unlink(missing_ok=True)
            (backups / (taken[1] + ".json")).unlink()


# A pg_dump that writes a little, then hangs with a child holding the pipe open, as a long dump would.
HANGING_PG_DUMP = """#!/bin/sh
if [ "$1" = "--version" ]; then exec "{real}" --version; fi
echo $$ > "{marker}.pgid"
printf -- "-- partial\\n"
sleep 60 &
touch "{marker}"
wait
"""


class TestKilledDump:
    def test_on_kill_stops_pg_dump_and_removes_the_partial_dump(self, backup_env: Any, pg_server: Any,
                                                               tmp_path: Path) -> None:
        fake_bin = tmp_path / "bin"
        fake_bin.mkdir()
        marker = tmp_path / "hanging"
        script = fake_bin / "pg_dump"
        script.write_text(HANGING_PG_DUMP.format(real=pg_server.bin_dir / "pg_dump", marker=marker))
        script.chmod(0o755)
        original = backup_env["config"].read_text()
        config = yaml.safe_load(original)
        config["backup"]["source"]["pg_bin_dir"] = str(fake_bin)
        backup_env["config"].write_text(yaml.safe_dump(config))
        staging = Path(prepare_staging(load_config(), "backup_daily", "manual__killed_dump"))
        operator = DumpDatabaseOperator(task_id="dump_database", conn_id="app_db", staging_dir=str(staging))
        try:
            with ThreadPoolExecutor(1) as pool:
                future = pool.submit(operator.execute, {})
                wait_for(marker, "pg_dump's start")
                pgid = int(marker.with_suffix(".pgid").read_text())
                assert processes_in_group(pgid)
                operator.on_kill()
                with pytest.raises(DumpError, match="was stopped before it finished"):
                    future.result(timeout=10)
            assert survivors_of(pgid) == [], "pg_dump and its children must not outlive the task"
            assert not list(staging.rglob("*.sql*")), "the partial dump is removed"
        finally:
            backup_env["config"].write_text(original)
            remove_staging(load_config(), str(staging))
