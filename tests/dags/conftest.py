"""Fixtures for real Airflow runs (``dag.test()``) against a fresh SQLite metadata DB."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from backup_ops.core.retention import LARAVEL_BACKUP_DEFAULTS
from devtools.sample_app import build_sample_app

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
# laravel-backup's own default retention, which its cleanup tests (ported here) use, as config keys.
LARAVEL_RETENTION = dataclasses.asdict(LARAVEL_BACKUP_DEFAULTS)
APP_USER, APP_PASSWORD = "invoicing_app", "app-secret-pw"


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated, empty Airflow metadata DB in the session's temporary AIRFLOW_HOME."""
    from airflow.utils import db

    db.resetdb()
    yield


@pytest.fixture(scope="module")
def backup_env(tmp_path_factory: Any, pg_server: Any, airflow_db: None) -> Any:
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
    (app / "config").chmod(0o750)  # a distinctive directory mode the archive must keep
    config = {
        "backup": {
            "name": "invoicing-app",
            "source": {
                "files": {"relative_path": str(app), "include": ["storage/app", ".env", "config", "storage/logs"],
                          "exclude": ["storage/framework"]},
                "databases": [{"conn_id": "app_db", "format": "plain"}],  # the default compression
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


def update_config(config_file: Path, **destination_settings: Any) -> str:
    """Rewrite ``backup.destination`` keys of a test config; returns the old text for restoring."""
    original = config_file.read_text()
    config = yaml.safe_load(original)
    config["backup"]["destination"].update(destination_settings)
    config_file.write_text(yaml.safe_dump(config))
    return original


def set_notifications(config_file: Path, **settings: Any) -> str:
    """Give a test config a ``notifications`` section; returns the old text for restoring."""
    original = config_file.read_text()
    config = yaml.safe_load(original)
    config["notifications"] = settings
    config_file.write_text(yaml.safe_dump(config))
    return original
