"""Real ``backup_daily`` runs (``dag.test()``) against PostgreSQL and a local destination.

One successful run is made first; the failure runs then prove that a failed backup publishes
nothing, removes its staging directory and leaves the earlier backup byte-for-byte untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import yaml

from backup_ops.archive import verify_archive
from devtools.sample_app import build_sample_app

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
APP_USER, APP_PASSWORD = "invoicing_app", "app-secret-pw"


@pytest.fixture(scope="module")
def backup_env(tmp_path_factory, pg_server, airflow_db):
    """Config, connections and variables for backup_daily, pointing at throwaway services."""
    from devtools.sample_data import load_sample_data

    base = tmp_path_factory.mktemp("backup_daily")
    db_name = "daily_app"
    pg_server.drop_database(db_name)
    with contextlib.suppress(Exception):  # the role may exist from an earlier module
        pg_server.create_role(APP_USER, APP_PASSWORD)
    pg_server.create_database(db_name, owner=APP_USER)
    with pg_server.connect(db_name, user=APP_USER, password=APP_PASSWORD) as conn:
        load_sample_data(conn, scale=0.05)
        conn.commit()
    app = build_sample_app(base / "app", uploads=6)
    config = {
        "backup": {
            "name": "invoicing-app",
            "source": {
                "files": {"relative_path": str(app), "include": ["storage/app", ".env", "config", "storage/logs"],
                          "exclude": ["storage/framework"]},
                "databases": [{"conn_id": "app_db", "format": "plain", "compression": "gzip:6"}],
                "pg_bin_dir": str(pg_server.bin_dir),
            },
            "destination": {"destinations": [{"name": "local", "type": "local", "path": str(base / "backups")}]},
            "staging_directory": str(base / "staging"),
            "password": {"variable": "backup_archive_password"},
            "encryption": "aes256",
            "tries": 2,
            "retry_delay": 0,
        }
    }
    config_file = base / "backup_config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    (base / "backups").mkdir()
    env = {
        "BACKUP_OPS_CONFIG": str(config_file),
        "AIRFLOW_CONN_APP_DB": pg_server.conn_uri(db_name, user=APP_USER, password=APP_PASSWORD),
        "AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD": PASSWORD,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield {"base": base, "db": db_name, "config": config_file, "backups": base / "backups" / "invoicing-app",
           "staging": base / "staging"}
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run_backup(conf: dict | None = None):
    """Parse dags/backup_daily.py with the current env and run it once in-process."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "backup_daily.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["backup_daily"]
    run = dag.test(run_conf=conf or {})
    states = {(ti.task_id, ti.map_index): ti.state for ti in run.get_task_instances()}
    return run, states


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


def test_finalize_reports_locations(first_backup):
    _, run, _ = first_backup
    finalize = next(ti for ti in run.get_task_instances() if ti.task_id == "finalize")
    assert finalize.state == "success"


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
