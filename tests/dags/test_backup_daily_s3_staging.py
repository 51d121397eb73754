"""backup_daily with staging in a bucket (``backup.staging: s3://…``): what makes a run independent of one host.

Each task works in its own folder below ``backup.staging_directory`` and hands its output to the
next through the bucket (moto over HTTP here). These runs are in one process, so what they prove is
the hand-off: no task reads another's local folder (each is removed when its task ends), the
teardown empties the run's prefix, stale prefixes are swept, and the failures are clear sentences.
The multi-worker proof is tests/distributed.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pyzipper
import yaml

from backup_ops.adapters.staging_store import RUN_MARKER, StagedRun, StagingError
from backup_ops.airflow import backup_steps, staging
from backup_ops.core.archive_read import verify_archive
from backup_ops.core.config import load_config
from backup_ops.core.errors import ConfigError
from tests.dags.conftest import PASSWORD, run_backup
from tests.fixtures_s3 import S3_CONN_ID, new_s3_client

STAGING_BUCKET = "backup-ops-staging"
STAGING_URL = f"s3://{STAGING_BUCKET}/runs"


def staged_keys(endpoint: str) -> list[str]:
    client = new_s3_client(endpoint)
    try:
        return [o["Key"] for o in client.list_objects_v2(Bucket=STAGING_BUCKET).get("Contents", [])]
    finally:
        client.close()


@pytest.fixture
def s3_staging(backup_env: dict[str, Any], s3_endpoint: str, tmp_path: Path) -> Any:
    client = new_s3_client(s3_endpoint)
    client.create_bucket(Bucket=STAGING_BUCKET)
    client.close()
    original = backup_env["config"].read_text()
    config = yaml.safe_load(original)
    work = tmp_path / "work"
    config["backup"]["staging"] = {"url": STAGING_URL, "conn_id": S3_CONN_ID}
    config["backup"]["staging_directory"] = str(work)
    config["backup"]["files_queue"] = "files"
    backup_env["config"].write_text(yaml.safe_dump(config))
    yield {**backup_env, "work": work, "endpoint": s3_endpoint}
    backup_env["config"].write_text(original)


def test_a_run_staged_in_a_bucket_publishes_a_verified_archive_and_leaves_nothing_behind(s3_staging):
    before = set(s3_staging["backups"].glob("*.zip"))
    run, states = run_backup()
    assert run.state == "success", states
    (archive,) = set(s3_staging["backups"].glob("*.zip")) - before
    checked = verify_archive(archive, password=PASSWORD.encode())
    assert checked.members_checked > 3
    with pyzipper.AESZipFile(archive) as zf:
        zf.setpassword(PASSWORD.encode())
        names = zf.namelist()
        manifest = json.loads(zf.read("manifest.json"))
    assert any(n.startswith("db-dumps/postgresql-") and n.endswith(".sql.gz") for n in names)
    assert ".env" in names and any(n.startswith("storage/app/") for n in names)
    assert manifest["databases"][0]["tables"], "the dump's exact row counts travelled through the bucket"
    # The teardown emptied the run's prefix; every task removed its own work folder.
    assert staged_keys(s3_staging["endpoint"]) == []
    assert list(s3_staging["work"].iterdir()) == []


def test_the_dag_puts_both_file_tasks_on_the_files_queue(s3_staging):
    from airflow.dag_processing.dagbag import DagBag

    from tests.dags.conftest import ROOT

    dag = DagBag(dag_folder=str(ROOT / "dags" / "backup_daily.py")).dags["backup_daily"]
    queues = {task.task_id: task.queue for task in dag.tasks}
    assert queues["collect_files"] == queues["build_archive"] == "files"
    assert queues["plan"] != "files" and queues["dump_database"] != "files"


def test_teardown_keeps_only_the_archive_while_a_destination_lacks_it(s3_staging):
    config = load_config()
    location = staging.prepare_staging(config, "backup_daily", "manual__keep")
    assert location == f"{STAGING_URL}/backup_daily__manual__keep"
    run = StagedRun.of(config, location)
    run.write_bytes("db-dumps/postgresql-app.sql.gz", b"plaintext rows")
    run.write_bytes("2026-11-29-02-00-00.zip", b"encrypted")
    archive = {"name": "2026-11-29-02-00-00.zip", "path": run.child("2026-11-29-02-00-00.zip")}

    staging.remove_staging(config, location, archive=archive, missing_destinations=["offsite"])
    assert staged_keys(s3_staging["endpoint"]) == ["runs/backup_daily__manual__keep/2026-11-29-02-00-00.zip"]
    staging.remove_staging(config, location, archive=archive, missing_destinations=[])
    assert staged_keys(s3_staging["endpoint"]) == []
    with pytest.raises(Exception, match="not a run prefix below"):
        staging.remove_staging(config, f"s3://{STAGING_BUCKET}/elsewhere/backup_daily__x")


def test_a_new_run_sweeps_the_prefixes_of_runs_that_ended_without_teardown(s3_staging, monkeypatch):
    config = load_config()
    crashed = staging.prepare_staging(config, "backup_daily", "scheduled__crashed")
    StagedRun.of(config, crashed).write_bytes("db-dumps/postgresql-app.sql.gz", b"plaintext rows")
    other_dag = staging.prepare_staging(config, "restore_drill", "manual__other")
    # Everything counts as stale now: only this DAG's other runs may go, never the new run or another DAG's.
    monkeypatch.setattr(staging, "STALE_AFTER", timedelta(hours=-1))
    fresh = staging.prepare_staging(config, "backup_daily", "scheduled__fresh")
    keys = staged_keys(s3_staging["endpoint"])
    assert not any("scheduled__crashed" in k for k in keys)
    assert f"runs/backup_daily__scheduled__fresh/{RUN_MARKER}" in keys
    assert any("restore_drill__manual__other" in k for k in keys)
    for location in (fresh, other_dag):
        StagedRun.of(config, location).remove()


def test_a_missing_staging_bucket_fails_with_a_sentence_naming_the_setting(s3_staging):
    text = s3_staging["config"].read_text()
    s3_staging["config"].write_text(text.replace(STAGING_URL, "s3://no-such-staging-bucket/runs"))
    with pytest.raises(StagingError, match=r"backup\.staging.*bucket"):
        staging.prepare_staging(load_config(), "backup_daily", "manual__nobucket")


def test_a_staged_object_that_vanished_is_named(s3_staging):
    run = StagedRun.of(load_config(), f"{STAGING_URL}/backup_daily__manual__gone")
    with pytest.raises(StagingError, match="is missing from staging"):
        run.read_bytes(run.child("dump-app_db.json"))


def test_includes_missing_on_this_worker_fail_naming_the_host_and_the_queue(s3_staging, tmp_path):
    config_text = s3_staging["config"].read_text()
    config = yaml.safe_load(config_text)
    config["backup"]["source"]["files"]["relative_path"] = str(tmp_path / "not-mounted-here")
    s3_staging["config"].write_text(yaml.safe_dump(config))
    try:
        with pytest.raises(ConfigError) as raised:
            backup_steps.collect_files(load_config(), f"{STAGING_URL}/backup_daily__manual__host", True)
    finally:
        s3_staging["config"].write_text(config_text)
    message = str(raised.value)
    assert backup_steps.worker_host() in message and "files (backup.files_queue)" in message
    assert raised.value.retryable, "another worker of the queue may have the files"


def test_the_archive_streams_from_the_bucket_into_publish(s3_staging):
    """publish fetches an archive staged in the bucket into its own work folder and removes it after."""
    from backup_ops.adapters.destinations.local import LocalDestination

    config = load_config()
    run = StagedRun.of(config, f"{STAGING_URL}/backup_daily__manual__publish")
    data = io.BytesIO()
    with pyzipper.ZipFile(data, "w") as zf:
        zf.writestr("hello.txt", "hello")
    payload = data.getvalue()
    location = run.write_bytes("2026-11-29-03-00-00.zip", payload)
    dest = LocalDestination("local2", "invoicing-app", s3_staging["base"] / "published")
    dest.root.mkdir(parents=True)
    archive = {"name": "2026-11-29-03-00-00.zip", "path": location, "size": len(payload),
               "sha256": hashlib.sha256(payload).hexdigest(), "created_at": "2026-11-29T03:00:00+00:00"}
    result = backup_steps.publish(dest, archive, run)
    assert (dest.root / result["path"]).read_bytes() == payload and result["sha256"] == archive["sha256"]
    assert list(s3_staging["work"].iterdir()) == []
    run.remove()


def test_a_task_removes_what_killed_tasks_of_its_dag_left_on_its_host(s3_staging):
    """No setup may ever run on a dump worker: its next task removes stale work folders of the DAG there."""
    import os
    import time

    config = load_config()
    work = s3_staging["work"]
    work.mkdir(parents=True, exist_ok=True)
    killed = work / "backup_daily__scheduled__killed-abc123"
    recent = work / "backup_daily__scheduled__running-def456"
    other_dag = work / "restore_drill__manual__x-ghi789"
    for folder in (killed, recent, other_dag):
        (folder / "db-dumps").mkdir(parents=True)
        (folder / "db-dumps" / "postgresql-app.sql.gz").write_bytes(b"plaintext rows")
    day_and_more = time.time() - 25 * 3600
    for folder in (killed, other_dag):
        for path in (folder / "db-dumps" / "postgresql-app.sql.gz", folder / "db-dumps", folder):
            os.utime(path, (day_and_more, day_and_more))
    with StagedRun.of(config, f"{STAGING_URL}/backup_daily__manual__next").workdir() as mine:
        assert mine.is_dir()
        assert not killed.exists(), "a day-old work folder of this DAG is removed"
        assert recent.exists() and other_dag.exists(), "a task may still be using it / another DAG's"
    assert not mine.exists()


def test_a_dump_staged_in_a_bucket_is_encrypted_as_it_streams(s3_staging):
    """With remote staging the dump is sealed (core.sealed_member): the bucket never holds it in the clear."""
    from backup_ops.core.sealed_member import password_matches, sealed_overhead

    config = load_config()
    conn_id = config.backup.databases[0].conn_id
    run = StagedRun.of(config, f"{STAGING_URL}/backup_daily__manual__sealed")
    run.prepare()
    try:
        with run.workdir() as work:
            summary = backup_steps.dump_database(backup_steps.dump_job(config, conn_id, str(work), sealed=run.remote),
                                                 conn_id, run)
        result = json.loads(run.read_bytes(summary["result_file"]))
        assert result["staged_encryption"] == "aes256" and result["staged_path"].endswith(".sql.gz.aes")
        sealed = run.read_bytes(result["staged_path"])
        assert len(sealed) == summary["bytes"] + sealed_overhead(256)
        assert password_matches(sealed[:18], PASSWORD.encode(), 256)
        assert b"COPY " not in sealed and not sealed[18:].startswith(b"\x1f\x8b")
        assert not any(key.endswith(".sql.gz") for key in staged_keys(s3_staging["endpoint"]))
    finally:
        run.remove()
