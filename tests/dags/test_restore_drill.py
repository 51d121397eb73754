"""restore_drill end to end: real backups, real restores into scratch databases, real ``dag.test()`` runs.

One real backup is made with ``backup_daily`` (``backup_env``), then drilled: from the local disk
and from S3 (moto over HTTP), with the monitor's ``restore_drill_fresh`` check reading the report
afterwards; then archives that must fail are put on the destination as its newest backup: a
tampered copy (fails at verify), one with a wrong password, one holding ``../evil`` and an absolute
path (refused at verify, naming the member), one whose manifest lists a symbolic link (refused at
extract), one whose manifest counts a row too many (fails the Great Expectations validation). After
every drill: no ``backup_drill_%`` database is left, the working directory is gone, the source
database is exactly as before, and the report on the destination says what happened. Every phase
names the worker it ran on; on one worker an archive from S3 is downloaded once. The same phases on
workers that have nothing of the run are in ``test_restore_drill_hosts.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from backup_ops.core.drill_report import parse_drill_report
from tests.dags.conftest import PASSWORD, ROOT, run_backup, set_notifications
from tests.fixtures_smtp import MailSink
from tests.integration.test_restore import databases_like, fingerprint, make_backup

DRILL_TARGET = "drill_target"
MAIL = {"to": ["ops@example.com"], "from": "backups@example.com", "conn_id": "smtp_default"}
EXPECTATIONS = {"public.invoices": {"not_null": ["customer_id", "number"],
                                    "freshness": {"column": "created_at", "max_hours": 100_000}}}


def run_drill(conf: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any], Any]:
    """Parse dags/restore_drill.py with the current env and run it once; (run, task states, report XCom)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(ROOT / "dags" / "restore_drill.py"))
    assert not bag.import_errors, bag.import_errors
    dag = bag.dags["restore_drill"]
    run = dag.test(run_conf={"target_conn_id": DRILL_TARGET, **(conf or {})})
    tis = {ti.task_id: ti for ti in run.get_task_instances()}
    report = tis["report"].xcom_pull(task_ids="report") if "report" in tis else None
    return run, {task: ti.state for task, ti in tis.items()}, report


def phase_results(run: Any) -> dict[str, tuple[Any, str]]:
    """Each task's XCom result and the host Airflow recorded for the task instance."""
    return {ti.task_id: (ti.xcom_pull(task_ids=ti.task_id), ti.hostname) for ti in run.get_task_instances()}


@pytest.fixture(scope="module")
def drill_env(backup_env: dict[str, Any], pg_server: Any) -> Iterator[dict[str, Any]]:
    """backup_env with one real backup on its local destination, a scratch-capable target, expectations."""
    config = yaml.safe_load(backup_env["config"].read_text())
    config["restore_drill"] = {"expectations": EXPECTATIONS, "tries": 2, "retry_delay": 0}
    original = backup_env["config"].read_text()
    backup_env["config"].write_text(yaml.safe_dump(config))
    os.environ[f"AIRFLOW_CONN_{DRILL_TARGET.upper()}"] = pg_server.conn_uri("postgres")
    _, states = run_backup()
    assert states[("finalize", -1)] == "success", states
    yield backup_env
    os.environ.pop(f"AIRFLOW_CONN_{DRILL_TARGET.upper()}", None)
    backup_env["config"].write_text(original)


@pytest.fixture
def untouched(drill_env: dict[str, Any], pg_server: Any) -> Iterator[None]:
    """The source database is exactly as before, and no scratch database or working directory is left."""
    before = fingerprint(pg_server, drill_env["db"])
    yield
    assert fingerprint(pg_server, drill_env["db"]) == before
    assert databases_like(pg_server, "backup\\_drill\\_%") == []
    assert not [p for p in drill_env["staging"].glob("restore_drill__*")], "the working directory is removed"


@pytest.fixture
def newest(drill_env: dict[str, Any]) -> Iterator[Path]:
    """Where a test puts an archive that sorts as the destination's newest backup (removed afterwards)."""
    path = drill_env["backups"] / "2099-01-01-00-00-00.zip"
    yield path
    for leftover in (path, path.with_name(path.name + ".json")):
        leftover.unlink(missing_ok=True)


def _report_on(drill_env: dict[str, Any], report: dict[str, Any]) -> Any:
    """The report as written on the local destination, read back as the monitor reads it."""
    path = drill_env["backups"].parent / report["report_key"]
    return parse_drill_report(path.read_bytes(), report["report_key"])


# ---------------------------------------------------------------------------- drills that succeed


@pytest.mark.usefixtures("untouched")
def test_a_drill_of_the_latest_local_backup_restores_validates_and_reports(drill_env: dict[str, Any]) -> None:
    run, states, report = run_drill()
    assert run.state == "success", states
    assert set(states.values()) == {"success"}
    assert report["outcome"] == "succeeded" and report["error"] is None
    assert report["destination"] == "local" and report["archive"].startswith("invoicing-app/")
    assert report["rto_seconds"] > 0
    assert all(isinstance(report["phases"][p], float) for p in
               ("select", "fetch", "verify", "extract", "restore", "validate", "verify_files"))
    assert report["rto_seconds"] >= report["phases"]["restore"] + report["phases"]["validate"]
    (database,) = report["databases"]
    assert database["database"] == drill_env["db"] and database["scratch"].startswith("backup_drill_")
    assert database["size_bytes"] > 1_000_000 and report["database_size_bytes"] == database["size_bytes"]
    validation = report["validation"]
    assert validation["success"] and validation["tables"] == 12 and validation["failed"] == 0
    # Exact counts and columns by SQL (the default), the configured rules in Great Expectations.
    assert validation["exact_checks"] == "sql" and validation["engines"] == ["sql", "great_expectations"]
    assert {c["name"]: c["status"] for c in report["checks"]} == {
        "select": "pass", "fetch": "pass", "checksum": "pass", "decrypt": "pass", "extract": "pass",
        "restore": "pass", "row_counts": "pass", "columns": "pass", "not_null": "pass", "freshness": "pass",
        "files": "pass"}
    assert report["files"]["status"] == "verified" and report["files"]["files"] > 5
    written = _report_on(drill_env, report)
    assert written.succeeded and written.rto_seconds == report["rto_seconds"] and written.run_id == run.run_id
    assert PASSWORD not in json.dumps(report)
    # Where each phase ran, as Airflow recorded it; a local destination's archive is read in place, never copied.
    results = phase_results(run)
    assert {task: result["host"] for task, (result, _) in results.items()} == \
        {task: host for task, (_, host) in results.items()}
    assert {results[p][0]["archive_copy"] for p in ("fetch", "verify", "extract", "restore", "validate",
                                                     "verify_files")} == {"read in place"}
    assert results["extract"][0]["status"] == "checked" and results["verify_files"][0]["status"] == "verified"


@pytest.mark.usefixtures("untouched")
def test_after_a_drill_the_monitor_finds_it_fresh(drill_env: dict[str, Any]) -> None:
    from airflow.dag_processing.dagbag import DagBag

    run, states, _ = run_drill({"restore_files": False})
    assert run.state == "success", states
    bag = DagBag(dag_folder=str(ROOT / "dags" / "backup_monitor.py"))
    monitor = bag.dags["backup_monitor"].test()
    (ti,) = monitor.get_task_instances()
    health = ti.xcom_pull(task_ids="check_health", map_indexes=0)
    checks = {c["name"]: c for c in health["checks"]}
    assert checks["restore_drill_fresh"]["status"] == "pass", checks["restore_drill_fresh"]


@pytest.mark.usefixtures("untouched")
def test_a_drill_from_s3_downloads_the_backup_and_reports_there(drill_env: dict[str, Any], s3_endpoint: str) -> None:
    from backup_ops.adapters.destinations.s3 import S3Destination
    from tests.fixtures_s3 import S3_CONN_ID, TEST_BUCKET

    original = drill_env["config"].read_text()
    config = yaml.safe_load(original)
    config["backup"]["destination"]["destinations"].append(
        {"name": "offsite", "type": "s3", "conn_id": S3_CONN_ID, "bucket": TEST_BUCKET, "prefix": "drills"})
    drill_env["config"].write_text(yaml.safe_dump(config))
    try:
        _, states = run_backup({"only_to_destination": "offsite", "only_db": True})
        assert states[("finalize", -1)] == "success", states
        run, states, report = run_drill({"destination": "offsite"})
        assert run.state == "success", states
        assert report["outcome"] == "succeeded" and report["destination"] == "offsite"
        # One worker: one download, and every later phase took that copy, proved by its marker.
        results = phase_results(run)
        assert results["fetch"][0]["archive_copy"] == "downloaded"
        assert [results[p][0]["archive_copy"] for p in ("verify", "restore", "validate")] == ["present"] * 3
        assert results["validate"][0]["archive_kept"] and not results["verify_files"][0]["archive_kept"]
        assert report["files"] is None or report["files"]["status"] == "skipped"  # a database-only backup
        destination = S3Destination("offsite", "invoicing-app", bucket=TEST_BUCKET, conn_id=S3_CONN_ID,
                                    prefix="drills")
        assert destination.list_drill_reports() == [report["report_key"]]
        data = destination.read_drill_report(report["report_key"], 64 * 1024)
        assert data is not None and parse_drill_report(data).succeeded
    finally:
        drill_env["config"].write_text(original)


# ---------------------------------------------------------------------------- drills that must fail


def _latest_archive(drill_env: dict[str, Any]) -> Path:
    return sorted(drill_env["backups"].glob("20*.zip"))[-1]


@pytest.mark.usefixtures("untouched")
def test_a_tampered_archive_fails_at_verify_and_mails_the_cause(drill_env: dict[str, Any], newest: Path,
                                                                mailbox: MailSink) -> None:
    source = _latest_archive(drill_env)
    data = bytearray(source.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    shutil.copy(source.with_name(source.name + ".json"), newest.with_name(newest.name + ".json"))
    original = set_notifications(drill_env["config"], mail=MAIL)
    try:
        run, states, report = run_drill()
    finally:
        drill_env["config"].write_text(original)
    assert run.state == "failed"
    assert states["verify"] == "failed" and states["restore"] == "upstream_failed"
    assert states["report"] == "success" and states["teardown"] == "failed"
    assert report["outcome"] == "failed" and report["error"].startswith("verify: Archive ")
    assert "has sha256" in report["error"] and "it is corrupt or was replaced" in report["error"]
    assert report["rto_seconds"] is None
    assert {c["name"]: c["status"] for c in report["checks"]}["restore"] == "skipped"
    assert not _report_on(drill_env, report).succeeded
    (message,) = mailbox.messages
    assert message["Subject"] == "Failed restore drill of invoicing-app"
    (body,) = mailbox.bodies()
    assert "verify: Archive" in body and PASSWORD not in body


@pytest.mark.usefixtures("untouched")
def test_a_wrong_password_fails_at_verify_in_one_sentence(drill_env: dict[str, Any],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD", "not the password")
    run, states, report = run_drill()
    assert run.state == "failed" and states["verify"] == "failed"
    assert report["error"].startswith("verify: Wrong archive password for ")
    assert report["error"].endswith(": check the Airflow variable backup_archive_password (backup.password in the "
                                    "config).")


@pytest.mark.usefixtures("untouched")
def test_an_archive_with_escaping_members_is_refused_and_nothing_lands_outside(drill_env: dict[str, Any],
                                                                                newest: Path, tmp_path: Path) -> None:
    import pyzipper

    outside = tmp_path / "absolute-evil"
    ok = b"fine\n"
    manifest = {"format_version": 1, "created_at": "2099-01-01T00:00:00Z", "backup_name": "invoicing-app",
                "archive_name": newest.name, "run": {}, "tool_versions": {}, "encryption": "aes256",
                "databases": [], "files": {"count": 1, "bytes": len(ok), "directories": 0},
                "members": [{"name": "ok.txt", "size": len(ok), "sha256": hashlib.sha256(ok).hexdigest()}]}
    with pyzipper.AESZipFile(newest, "w", encryption=pyzipper.WZ_AES) as zf:
        zf.setpassword(PASSWORD.encode())
        zf.writestr("ok.txt", ok)
        zf.writestr("../evil", b"escaped")
        zf.writestr(str(outside), b"escaped")
        zf.writestr("manifest.json", json.dumps(manifest).encode())
    run, states, report = run_drill()
    assert run.state == "failed" and states["verify"] == "failed"
    assert report["error"] == (f"verify: Archive {newest} contains '../evil', which its manifest does not list: it "
                               "was modified after it was written.")
    assert not outside.exists()
    assert not (drill_env["staging"] / "evil").exists() and not (drill_env["staging"].parent / "evil").exists()


@pytest.mark.usefixtures("untouched")
def test_a_listed_symbolic_link_is_refused_at_extract(drill_env: dict[str, Any], newest: Path) -> None:
    import pyzipper

    entries = {"uploads/": b"", "uploads/ok.txt": b"fine\n", "uploads/link": b"/etc/passwd"}
    members = [{"name": n, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for n, d in entries.items()]
    manifest = {"format_version": 1, "created_at": "2099-01-01T00:00:00Z", "backup_name": "invoicing-app",
                "archive_name": newest.name, "run": {}, "tool_versions": {}, "encryption": "aes256",
                "databases": [], "files": {"count": 2, "bytes": 5 + 11, "directories": 1}, "members": members,
                "skipped": []}
    with pyzipper.AESZipFile(newest, "w", encryption=pyzipper.WZ_AES) as zf:
        zf.setpassword(PASSWORD.encode())
        for name, data in entries.items():
            info = zf.zipinfo_cls(name, date_time=(2099, 1, 1, 0, 0, 0))
            kind = stat.S_IFDIR | 0o755 if name.endswith("/") else \
                stat.S_IFLNK | 0o777 if name.endswith("link") else stat.S_IFREG | 0o644
            info.external_attr = kind << 16
            info.create_system = 3
            zf.writestr(info, data)
        zf.writestr("manifest.json", json.dumps(manifest).encode())
    run, states, report = run_drill()
    assert run.state == "failed" and states["verify"] == "success" and states["extract"] == "failed"
    assert report["error"] == (f"extract: Refusing to extract {newest}: member 'uploads/link' is a symbolic link "
                               "(it could point outside the target directory).")
    assert states["restore"] == "upstream_failed"


@pytest.mark.usefixtures("untouched")
def test_a_manifest_that_counts_otherwise_fails_validation_and_the_report_says_so(
        drill_env: dict[str, Any], pg_server: Any, tmp_path: Path) -> None:
    from backup_ops.adapters.destinations.local import LocalDestination
    from backup_ops.adapters.postgres.target import PgTarget

    def one_row_more(manifest: dict[str, Any]) -> None:
        table = next(t for t in manifest["databases"][0]["tables"] if t["name"] == "invoices")
        table["row_count"] += 1
        manifest["databases"][0]["total_rows"] += 1

    destination = LocalDestination("local", "invoicing-app", drill_env["backups"].parent)
    source = PgTarget(host=pg_server.host, port=pg_server.port, user=pg_server.superuser, password=pg_server.password,
                      dbname=drill_env["db"])
    key = make_backup(tmp_path, destination, source, "app_db", datetime(2099, 1, 2, tzinfo=UTC), password=PASSWORD,
                      tweak_manifest=one_row_more)
    try:
        run, states, report = run_drill({"restore_files": False})
    finally:
        destination.delete_backup(key)
    assert run.state == "failed" and states["validate"] == "failed" and states["restore"] == "success"
    assert report["outcome"] == "failed"
    assert report["error"].startswith("validate: The restored data does not match the backup: row_counts: 1 of 12 "
                                      "failed: public.invoices: ")
    assert report["validation"]["success"] is False and report["validation"]["failed"] == 1
    (failed,) = [t for t in report["validation"]["per_table"] if not t["success"]]
    assert failed["table"] == "public.invoices" and failed["expected_rows"] == failed["rows"] + 1
    assert {c["name"]: c["status"] for c in report["checks"]}["row_counts"] == "fail"
    assert report["phases"]["validate"] is not None and report["rto_seconds"] is None
    assert not _report_on(drill_env, report).succeeded


def test_keep_scratch_keeps_the_database_and_the_restored_files_for_inspection(
        drill_env: dict[str, Any], pg_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    run, states, report = run_drill({"keep_scratch": True})
    assert run.state == "success", states
    (database,) = report["databases"]
    try:
        assert databases_like(pg_server, database["scratch"]) == [database["scratch"]]
        (workdir,) = drill_env["staging"].glob("restore_drill__*")
        kept = [p for p in (workdir / "files").rglob("*") if p.is_file()]
        assert (workdir / "files" / ".env").is_file() and len(kept) == report["files"]["files"]
        host = phase_results(run)["verify_files"][1]
        assert f"Kept the restored files in {workdir / 'files'} on {host} (keep_scratch)" in caplog.text
    finally:
        pg_server.drop_database(database["scratch"])
        for folder in drill_env["staging"].glob("restore_drill__*"):
            shutil.rmtree(folder)


@pytest.mark.usefixtures("untouched")
def test_a_target_login_that_may_not_create_databases_fails_at_restore_saying_what_to_do(
        drill_env: dict[str, Any]) -> None:
    run, states, report = run_drill({"target_conn_id": ""})  # the source's own login: no CREATEDB
    assert run.state == "failed" and states["restore"] == "failed"
    assert re.fullmatch(r"restore: Login 'invoicing_app' may not create databases on 127\.0\.0\.1:\d+ \(Airflow "
                        r"connection 'app_db'\): give it CREATEDB, or restore with a connection whose login may "
                        r"\(restore_drill\.target_conn_id, --target-conn\)\.", report["error"]), report["error"]


@pytest.mark.usefixtures("untouched")
def test_a_backup_that_is_not_there_fails_at_select_and_still_reports(drill_env: dict[str, Any]) -> None:
    run, states, report = run_drill({"backup": "1999-01-01-00-00-00.zip"})
    assert run.state == "failed" and states["select"] == "failed" and states["report"] == "success"
    assert report["archive"] == "(none selected)"
    assert report["error"].startswith("select: Destination local has no backup named '1999-01-01-00-00-00.zip'; "
                                      "the newest are: ")
    assert _report_on(drill_env, report).error == report["error"]
