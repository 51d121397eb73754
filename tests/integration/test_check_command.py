"""``python -m backup_ops check`` against a demo-like setup: a real PostgreSQL, a local destination, moto's S3
server over HTTP, the archive password as an Airflow variable in the environment, mail to a real SMTP sink.

Each broken piece (a database password, an old pg_dump, a missing bucket, a bucket that refuses
writes, a missing password variable, an SMTP connection that is not there) must fail its own line,
name what to fix, leave the other lines OK, and exit 1; never a traceback, never a secret.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from backup_ops.adapters.destinations.base import PROBE_PREFIX
from backup_ops.cli import main
from devtools.pgserver import EmbeddedPostgres
from tests.fixtures_s3 import S3_CONN_ID, TEST_BUCKET, Fault, FaultyEndpoint, ProxiedRequest
from tests.fixtures_smtp import SMTP_CONN_ID, MailSink

ARCHIVE_PASSWORD = "check-archive-secret-1"
CHECK_LINE = re.compile(r"(OK  |FAIL|SKIP) [a-z_]+: ")
WRONG_DB_PASSWORD = "wrong-db-password-7"


@pytest.fixture(scope="module", autouse=True)
def airflow_logs_outside_capsys() -> None:
    """Let Airflow set up its logging before capsys replaces stdout: its handler keeps the stream it first saw."""
    from airflow.sdk import Connection  # noqa: F401  (configures Airflow's logging)
    from airflow.sdk.configuration import conf

    conf.get("core", "dags_folder")


@pytest.fixture
def demo(tmp_path: Path, pg_server: EmbeddedPostgres, app_db_connection: str, app_db: str, s3_endpoint: str,
         mailbox: MailSink, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The demo's shape: app_db on PostgreSQL, a local and an S3 destination, encryption, mail."""
    (tmp_path / "backups").mkdir()
    (tmp_path / "staging").mkdir()
    monkeypatch.setenv("AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD", ARCHIVE_PASSWORD)
    config = {
        "backup": {
            "name": "invoicing-app",
            "source": {"databases": [{"conn_id": app_db_connection}], "pg_bin_dir": str(pg_server.bin_dir)},
            "destination": {"destinations": [
                {"name": "local", "type": "local", "path": str(tmp_path / "backups")},
                {"name": "offsite", "type": "s3", "conn_id": S3_CONN_ID, "bucket": TEST_BUCKET, "prefix": "prod"},
            ]},
            "staging_directory": str(tmp_path / "staging"),
            "password": {"variable": "backup_archive_password"},
            "encryption": "aes256",
        },
        "notifications": {"mail": {"to": ["ops@example.com"], "from": "backups@example.com",
                                   "conn_id": SMTP_CONN_ID}},
    }
    return {"config": config, "tmp": tmp_path, "db": app_db, "mailbox": mailbox}


def run_check(demo: dict[str, Any], capsys: pytest.CaptureFixture[str], *args: str,
              change: Callable[[dict[str, Any]], None] | None = None) -> tuple[int, list[str], str]:
    """Write the (changed) config, run ``check``; returns exit status, its check lines, and all other output.

    Airflow's own log lines (INFO in this test session) go to stdout too: they are returned with stderr.
    """
    config = json.loads(json.dumps(demo["config"]))
    if change is not None:
        change(config)
    path = demo["tmp"] / "backup_config.yaml"
    path.write_text(yaml.safe_dump(config))
    status = main(["--config", str(path), "check", *args])
    out, err = capsys.readouterr()
    checks = [text for text in out.splitlines() if CHECK_LINE.match(text)]
    return status, checks, "\n".join(text for text in out.splitlines() if text not in checks) + err


def line(lines: list[str], start: str) -> str:
    found = [text for text in lines if text.startswith(start)]
    assert len(found) == 1, (start, lines)
    return found[0]


def test_check_passes_on_a_demo_like_setup(demo: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                           pg_server: EmbeddedPostgres, s3_client: Any) -> None:
    status, lines, err = run_check(demo, capsys)
    assert status == 0, lines
    assert [text.split(":")[0] for text in lines] == [
        "OK   config", "OK   databases", "OK   destinations", "OK   destinations", "OK   password",
        "OK   notifications"]
    assert line(lines, "OK   databases: app_db: ").endswith(
        f"postgres@127.0.0.1:{pg_server.port}/{demo['db']}: PostgreSQL {pg_server_version(pg_server)}, pg_dump "
        f"{pg_server_version(pg_server)}, login ok")
    assert line(lines, "OK   destinations: local: ").endswith("is reachable and writable (a probe was written and "
                                                              "deleted)")
    assert line(lines, "OK   destinations: offsite: ").startswith(f"OK   destinations: offsite: s3://{TEST_BUCKET}/prod")
    assert line(lines, "OK   password: ") == ("OK   password: {variable: backup_archive_password} resolves; archives "
                                              "are encrypted with aes256 (the value is not shown)")
    mail = line(lines, "OK   notifications: mail: ")
    assert "Airflow connection 'smtp_default' (SMTP 127.0.0.1:" in mail and "to ops@example.com" in mail
    assert "backup_failed" in mail and "backup_late" in mail
    # The probes are gone: nothing but the (empty) backup folders is left, locally or in the bucket.
    assert [p for p in (demo["tmp"] / "backups").rglob("*") if p.is_file()] == []
    assert s3_client.list_objects_v2(Bucket=TEST_BUCKET).get("KeyCount", 0) == 0
    assert ARCHIVE_PASSWORD not in "\n".join(lines) + err
    assert pg_server.password not in "\n".join(lines) + err
    assert demo["mailbox"].messages == []  # nothing is sent without --send-test-notification


def pg_server_version(pg_server: EmbeddedPostgres) -> str:
    with pg_server.connect() as conn:
        return str(conn.info.parameter_status("server_version"))


def old_pg_dump(directory: Path, pg_server: EmbeddedPostgres) -> Path:
    """A bin dir whose pg_dump says it is version 12 (a wrapper of the real one)."""
    directory.mkdir()
    script = directory / "pg_dump"
    script.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "pg_dump (PostgreSQL) 12.22"; exit 0; fi\n'
                      f'exec "{pg_server.bin_dir / "pg_dump"}" "$@"\n')
    script.chmod(0o755)
    for tool in ("pg_restore", "psql"):
        (directory / tool).symlink_to(pg_server.bin_dir / tool)
    return directory


class TestBrokenPieces:
    def test_a_wrong_database_password(self, demo: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                       pg_server: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_APP_DB", pg_server.conn_uri(demo["db"], user="postgres",
                                                                      password=WRONG_DB_PASSWORD))
        status, lines, err = run_check(demo, capsys)
        assert status == 1
        assert line(lines, "FAIL databases: ") == (
            f"FAIL databases: app_db: PostgreSQL password authentication failed for user 'postgres' on "
            f"127.0.0.1:{pg_server.port}/{demo['db']}: check the password of Airflow connection 'app_db'.")
        assert sum(text.startswith("OK ") for text in lines) == 5  # every other check still ran and passed
        assert WRONG_DB_PASSWORD not in "\n".join(lines) + err
        assert "Traceback" not in err

    def test_a_pg_dump_older_than_the_server(self, demo: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                             pg_server: EmbeddedPostgres) -> None:
        fake = old_pg_dump(demo["tmp"] / "oldbin", pg_server)
        status, lines, _ = run_check(demo, capsys, change=lambda c: c["backup"]["source"].update(pg_bin_dir=str(fake)))
        assert status == 1
        failed = line(lines, "FAIL databases: ")
        assert failed.startswith(f"FAIL databases: app_db: pg_dump 12.22 cannot dump database '{demo['db']}' "
                                 "(Airflow connection 'app_db'), which runs PostgreSQL ")
        assert "set backup.source.pg_bin_dir to a PostgreSQL" in failed

    def test_two_databases_on_one_archive_member(self, demo: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                                 pg_server: EmbeddedPostgres,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("AIRFLOW_CONN_APP_DB_AGAIN", pg_server.conn_uri(demo["db"]))
        status, lines, _ = run_check(demo, capsys, change=lambda c: c["backup"]["source"]["databases"].append(
            {"conn_id": "app_db_again"}))
        assert status == 1
        assert line(lines, "FAIL databases: ") == (
            f"FAIL databases: Airflow connections 'app_db' (database '{demo['db']}') and 'app_db_again' (database "
            f"'{demo['db']}') would both be stored as db-dumps/postgresql-{demo['db']}.sql.gz in the archive; back "
            "them up in separate runs (db_names Param) or separate configs.")

    def test_a_missing_bucket(self, demo: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
        def other_bucket(config: dict[str, Any]) -> None:
            config["backup"]["destination"]["destinations"][1]["bucket"] = "no-such-bucket"

        status, lines, _ = run_check(demo, capsys, change=other_bucket)
        assert status == 1
        assert line(lines, "FAIL destinations: ").startswith(
            "FAIL destinations: offsite: bucket no-such-bucket does not exist at http://127.0.0.1:")
        assert line(lines, "OK   destinations: ").startswith("OK   destinations: local: ")

    def test_a_bucket_that_refuses_writes(self, demo: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                          faulty_endpoint: Callable[..., FaultyEndpoint],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
        # Reachable (the bucket answers HEAD and listings) but every PUT is denied, as a read-only key would be.
        def deny_writes(request: ProxiedRequest) -> Fault | None:
            return Fault(403, "AccessDenied", "Access Denied") if request.method == "PUT" else None

        proxy = faulty_endpoint(deny_writes)
        connection = {"conn_type": "aws", "login": "testing", "password": "testing",
                      "extra": {"endpoint_url": proxy.url, "region_name": "us-east-1"}}
        monkeypatch.setenv("AIRFLOW_CONN_READ_ONLY_S3", json.dumps(connection))

        def read_only(config: dict[str, Any]) -> None:
            config["backup"]["destination"]["destinations"][1]["conn_id"] = "read_only_s3"

        status, lines, _ = run_check(demo, capsys, change=read_only)
        assert status == 1
        failed = line(lines, "FAIL destinations: ")
        assert failed.startswith(f"FAIL destinations: offsite: writing the probe s3://{TEST_BUCKET}/prod/invoicing-app/"
                                 f"{PROBE_PREFIX}")
        assert "access denied (AccessDenied: Access Denied)" in failed
        assert [r.method for r in proxy.seen if r.method == "PUT"]  # the probe really was attempted

    def test_a_missing_password_variable(self, demo: dict[str, Any], capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD")
        status, lines, err = run_check(demo, capsys, "--with-backup")
        assert status == 1
        assert line(lines, "FAIL password: ").startswith(
            "FAIL password: Airflow Variable 'backup_archive_password' (backup.password) could not be read")
        # No backup without its password: never an unencrypted archive.
        assert line(lines, "SKIP backup: ") == "SKIP backup: not tried: the database or password checks above failed."
        assert "Traceback" not in err

    def test_a_missing_smtp_connection(self, demo: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
        def other_connection(config: dict[str, Any]) -> None:
            config["notifications"]["mail"]["conn_id"] = "smtp_nowhere"

        status, lines, _ = run_check(demo, capsys, change=other_connection)
        assert status == 1
        assert line(lines, "FAIL notifications: ").startswith(
            "FAIL notifications: mail: Airflow connection 'smtp_nowhere' (notifications.mail.conn_id) could not be "
            "read")

    def test_a_bad_config_is_one_fail_line(self, demo: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
        status, lines, err = run_check(demo, capsys, change=lambda c: c["backup"].update(encryption="rot13"))
        assert status == 1
        assert lines == ["FAIL config: backup.encryption must be one of 'aes256', 'aes192', 'aes128', 'none', got "
                         "'rot13'."]
        assert "Traceback" not in err


def test_with_backup_builds_verifies_and_deletes_a_database_only_archive(
    demo: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, err = run_check(demo, capsys, "--with-backup")
    assert status == 0, (lines, err)
    backup = line(lines, "OK   backup: ")
    assert backup.startswith("OK   backup: 1 database(s) dumped (")
    assert "members, encryption aes256) built and verified member by member, published to a temporary local " \
           "destination and verified there in " in backup
    assert backup.endswith("s; all of it deleted")
    # It worked in the configured staging directory, and left nothing there or on the real destinations.
    assert list((demo["tmp"] / "staging").iterdir()) == []
    assert [p for p in (demo["tmp"] / "backups").rglob("*") if p.is_file()] == []


def test_send_test_notification_delivers_on_the_mail_channel(
    demo: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    status, lines, _ = run_check(demo, capsys, "--send-test-notification")
    assert status == 0, lines
    assert line(lines, "OK   notifications: mail: test message delivered") == \
        "OK   notifications: mail: test message delivered"
    [message] = demo["mailbox"].messages
    assert message["To"] == "ops@example.com"
    assert message["Subject"].startswith("Test message from backup-ops for ")
    body = demo["mailbox"].bodies()[0]
    assert "if you read it, this channel works" in body
    assert "Sent by `python -m backup_ops check --send-test-notification`" in body


def test_connections_and_variables_in_the_metadata_database_are_found_outside_a_task(
    demo: dict[str, Any], capsys: pytest.CaptureFixture[str], pg_server: EmbeddedPostgres,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """As ``airflow connections get`` does: env first, then the metadata DB (here the session's SQLite one)."""
    from airflow.models import Connection, Variable
    from airflow.utils import db
    from airflow.utils.session import create_session

    from backup_ops.adapters import secrets

    db.initdb()
    secrets._metadata_db_ready.cache_clear()
    monkeypatch.delenv("AIRFLOW_CONN_APP_DB")
    monkeypatch.delenv("AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD")
    with create_session() as session:
        session.add(Connection.from_json(json.dumps({
            "conn_type": "postgres", "host": "127.0.0.1", "port": pg_server.port, "login": "postgres",
            "password": pg_server.password, "schema": demo["db"]}), conn_id="app_db"))
        session.add(Variable(key="backup_archive_password", val=ARCHIVE_PASSWORD))
    try:
        status, lines, _ = run_check(demo, capsys)
        assert status == 0, lines
        assert line(lines, "OK   databases: app_db: ").endswith("login ok")
        assert line(lines, "OK   password: ").startswith("OK   password: {variable: backup_archive_password} resolves")
        assert "_AIRFLOW_PROCESS_CONTEXT" not in os.environ  # the lookups' context ends with the command
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "app_db").delete()
            session.query(Variable).filter(Variable.key == "backup_archive_password").delete()
