"""Real ``backup_daily`` runs (``dag.test()``) against PostgreSQL and a local destination.

One successful run is made first; the failure runs then prove that a failed backup publishes
nothing, removes its staging directory and leaves the earlier backup byte-for-byte untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from pathlib import Path

import pytest
import yaml

from backup_ops.core.archive_read import verify_archive
from tests.dags.conftest import APP_PASSWORD, APP_USER, PASSWORD, run_backup


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_backup(backup_env):
    run, states = run_backup()
    assert run.state == "success", states
    archives = sorted(backup_env["backups"].glob("*.zip"))
    assert len(archives) == 1
    return archives[0], run, states


def test_backup_daily_produces_a_verified_archive(backup_env, first_backup, pg_server):
    archive, _, states = first_backup
    assert states[("remove_staging", -1)] == "success"
    assert not any(backup_env["staging"].iterdir()), "staging directory must be removed"
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    receipt = json.loads((archive.parent / (archive.name + ".json")).read_text())
    assert receipt["size"] == archive.stat().st_size
    assert receipt["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()

    checked = verify_archive(archive, password=PASSWORD.encode(), expected_sha256=receipt["sha256"])
    manifest = checked.manifest
    (db,) = manifest.databases
    assert db.member == f"db-dumps/postgresql-{backup_env['db']}.sql.gz"
    with pg_server.connect(backup_env["db"]) as conn:
        for table in db.tables:
            (count,) = conn.execute(f'SELECT count(*) FROM "{table.schema}"."{table.name}"').fetchone()
            assert count == table.row_count, table.name
    assert len(db.tables) >= 6 and db.total_rows > 1000
    names = {m.name for m in manifest.members}
    assert ".env" in names and "config/app.php" in names
    assert not any(n.startswith("storage/framework") for n in names), "excluded paths must not be archived"
    assert PASSWORD not in archive.parent.joinpath(archive.name + ".json").read_text()

    # File metadata survives the trip through the staging listing into the archive.
    import pyzipper

    app = backup_env["base"] / "app"
    with pyzipper.AESZipFile(archive) as zf:
        env_info, dir_info = zf.getinfo(".env"), zf.getinfo("config/")
    assert (env_info.external_attr >> 16) & 0o7777 == stat.S_IMODE((app / ".env").stat().st_mode)
    assert (dir_info.external_attr >> 16) & 0o7777 == 0o750
    assert dir_info.date_time[:5] == time.localtime((app / "config").stat().st_mtime)[:5]


def test_asset_event_carries_size_sha256_and_location(first_backup):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    archive, run, _ = first_backup
    with create_session() as session:
        events = (session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                  .filter(AssetModel.name == "backup-ops/invoicing-app", AssetEvent.source_run_id == run.run_id)
                  .all())
        assert len(events) == 1
        extra = events[0].extra
    assert extra["archive"] == archive.name
    assert extra["size"] == archive.stat().st_size
    assert extra["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert extra["locations"] == [archive.as_uri()]
    assert extra["failed_destinations"] == []


def test_wrong_password_fails_and_publishes_nothing(backup_env, first_backup, pg_server):
    before = snapshot(backup_env["backups"])
    os.environ["AIRFLOW_CONN_APP_DB"] = pg_server.conn_uri(backup_env["db"], user=APP_USER, password="wrong")
    try:
        run, states = run_backup()
    finally:
        os.environ["AIRFLOW_CONN_APP_DB"] = pg_server.conn_uri(backup_env["db"], user=APP_USER, password=APP_PASSWORD)
    assert run.state == "failed"
    assert states[("check_databases", -1)] == "failed"
    assert snapshot(backup_env["backups"]) == before
    assert not any(backup_env["staging"].iterdir())


def test_missing_database_fails_and_publishes_nothing(backup_env, first_backup, pg_server):
    before = snapshot(backup_env["backups"])
    os.environ["AIRFLOW_CONN_APP_DB"] = pg_server.conn_uri("no_such_db", user=APP_USER, password=APP_PASSWORD)
    try:
        run, _ = run_backup()
    finally:
        os.environ["AIRFLOW_CONN_APP_DB"] = pg_server.conn_uri(backup_env["db"], user=APP_USER, password=APP_PASSWORD)
    assert run.state == "failed"
    assert snapshot(backup_env["backups"]) == before
    assert not any(backup_env["staging"].iterdir())


def test_pg_dump_killed_mid_stream_fails_and_publishes_nothing(backup_env, first_backup, pg_server, tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for tool in pg_server.bin_dir.iterdir():
        if tool.name != "pg_dump":
            (fake_bin / tool.name).symlink_to(tool)
    # The real pg_dump streams some data, then the process is SIGKILLed (like the OOM killer would).
    real = pg_server.bin_dir / "pg_dump"
    (fake_bin / "pg_dump").write_text(
        "#!/bin/sh\n"
        f'case "$*" in *--snapshot*) "{real}" "$@" | head -c 65536; kill -9 $$ ;;\n'
        f'  *) exec "{real}" "$@" ;;\nesac\n'
    )
    (fake_bin / "pg_dump").chmod(0o755)
    config = yaml.safe_load(backup_env["config"].read_text())
    original = backup_env["config"].read_text()
    config["backup"]["source"]["pg_bin_dir"] = str(fake_bin)
    backup_env["config"].write_text(yaml.safe_dump(config))
    before = snapshot(backup_env["backups"])
    try:
        run, states = run_backup()
    finally:
        backup_env["config"].write_text(original)
    assert run.state == "failed"
    assert states[("dump_database", 0)] == "failed"
    assert all(state != "success" for (task, _), state in states.items() if task == "publish")
    assert snapshot(backup_env["backups"]) == before
    assert not any(backup_env["staging"].iterdir())


def test_only_db_and_only_files_together_is_a_clear_error(backup_env, first_backup):
    run, states = run_backup({"only_db": True, "only_files": True})
    assert run.state == "failed"
    assert states[("plan", -1)] == "failed"
