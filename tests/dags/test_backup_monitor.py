"""``backup_monitor`` runs (``dag.test()``) against real destinations, with its mail through a real SMTP server.

One run checks a fleet of local destinations, one fault each (laravel-backup's monitor scenarios
plus backup-ops' integrity checks), so each test below reads one destination's task, report and
mail. Other runs: a real ``backup_daily`` archive is healthy, and ``monitor.deep_verify`` on S3
(moto) catches a corrupted member that the receipt's size and SHA-256 cannot.
"""

from __future__ import annotations

import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from backup_ops.core.drill_report import DrillReport, report_key
from tests.backup_archives import ARCHIVE_PASSWORD, build_backup, publish_backup
from tests.fixtures_s3 import S3_CONN_ID, TEST_BUCKET

ROOT = Path(__file__).resolve().parents[2]
BACKUP_NAME = "invoicing-app"
MAIL = {"to": ["ops@example.com"], "from": "backups@example.com", "conn_id": "smtp_default"}
FLEET = ("healthy", "stale", "full", "tampered", "gone")
MIB = 1024 * 1024


def write_config(base: Path, destinations: list[dict[str, Any]], monitor: dict[str, Any]) -> Path:
    config = {
        "backup": {
            "name": BACKUP_NAME,
            "source": {},
            "destination": {"destinations": destinations},
            "staging_directory": str(base / "staging"),
            "password": {"variable": "monitor_archive_password"},
            "encryption": "aes256",
        },
        "monitor": {"tries": 2, "retry_delay": 0, **monitor},
        "notifications": {"mail": MAIL},
    }
    file = base / "backup_config.yaml"
    file.write_text(yaml.safe_dump(config))
    return file


def run_monitor(config: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Parse dags/backup_monitor.py with ``config``, run it once: the run, per destination its task and report."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    monkeypatch.setenv("BACKUP_OPS_CONFIG", str(config))
    monkeypatch.setenv("AIRFLOW_VAR_MONITOR_ARCHIVE_PASSWORD", ARCHIVE_PASSWORD)
    bag = DagBag(dag_folder=str(ROOT / "dags" / "backup_monitor.py"))
    assert not bag.import_errors, bag.import_errors
    run = bag.dags["backup_monitor"].test()
    names = [d["name"] for d in yaml.safe_load(config.read_text())["backup"]["destination"]["destinations"]]
    tis = {names[ti.map_index]: ti for ti in run.get_task_instances()}
    with create_session() as session:
        rows = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids="backup_monitor",
                                                  task_ids="check_health", key="return_value")).all()
        reports = {names[row.map_index]: XComModel.deserialize_value(row) for row in rows}
    return {"run": run, "tis": tis, "reports": reports}


def checks(report: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["status"] for check in report["checks"]}


def mail_for(mails: list[Any], destination: str) -> Any:
    matching = [m for m in mails if f"destination {destination} " in m["body"]]
    assert len(matching) == 1, [m["body"] for m in mails]
    return matching[0]


# ---------------------------------------------------------------------------- the fleet: one fault per destination


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: Any, airflow_db: None, smtp_server: Any) -> dict[str, Any]:
    from backup_ops.adapters.destinations.local import LocalDestination

    base = tmp_path_factory.mktemp("monitor_fleet")
    work = base / "work"
    now = datetime.now(UTC).replace(microsecond=0)
    roots = {name: base / name for name in FLEET}
    for name in FLEET[:-1]:  # "gone" has no directory: it cannot be reached
        roots[name].mkdir()
    dests = {name: LocalDestination(name, BACKUP_NAME, roots[name]) for name in FLEET}
    publish_backup(dests["healthy"], work / "healthy", now - timedelta(hours=1))
    drill = DrillReport(BACKUP_NAME, f"{BACKUP_NAME}/x.zip", "healthy", now - timedelta(days=2, minutes=5),
                        now - timedelta(days=2), "succeeded", rto_seconds=300.0)
    (roots["healthy"] / report_key(BACKUP_NAME, drill.started_at)).parent.mkdir()
    (roots["healthy"] / report_key(BACKUP_NAME, drill.started_at)).write_bytes(drill.to_json())
    (roots["healthy"] / BACKUP_NAME / "restore-drills" / "9999-junk.json").write_bytes(b"\x00not json")
    publish_backup(dests["stale"], work / "stale", now - timedelta(days=3))
    publish_backup(dests["full"], work / "full", now - timedelta(hours=1), payload=MIB + 4096)
    tampered = publish_backup(dests["tampered"], work / "tampered", now - timedelta(hours=1))
    with open(roots["tampered"] / tampered, "r+b") as archive:  # one byte changed: same size, other SHA-256
        archive.seek(200)
        byte = archive.read(1)
        archive.seek(200)
        archive.write(bytes([byte[0] ^ 0xFF]))
    config = write_config(base, [{"name": n, "type": "local", "path": str(roots[n])} for n in FLEET],
                          {"max_storage_mb": 1})
    smtp_server.messages.clear()
    with pytest.MonkeyPatch.context() as monkeypatch:
        result = run_monitor(config, monkeypatch)
    result["mails"] = [{"subject": m["Subject"], "to": m["To"], "body": body}
                       for m, body in zip(smtp_server.messages, smtp_server.bodies(), strict=True)]
    return result


def test_each_destination_is_one_task_named_after_it(fleet: dict[str, Any]) -> None:
    assert set(fleet["tis"]) == set(FLEET)
    assert {name: ti.rendered_map_index for name, ti in fleet["tis"].items()} == {name: name for name in FLEET}
    assert fleet["run"].state == "failed"  # four destinations are unhealthy


def test_a_healthy_destination_succeeds_and_returns_its_report(fleet: dict[str, Any]) -> None:
    assert fleet["tis"]["healthy"].state == "success"
    report = fleet["reports"]["healthy"]
    assert report["healthy"] is True and report["failed_checks"] == []
    assert checks(report) == {"reachable": "pass", "max_age_days": "pass", "max_storage_mb": "pass",
                              "newest_intact": "pass", "restore_drill_fresh": "pass"}
    assert report["backup_count"] == 1 and report["storage_limit"] == MIB
    assert 0.04 < report["newest_age_days"] < 0.05  # an hour old
    assert report["newest_date"] == report["oldest_date"]
    newest_intact = next(c["sentence"] for c in report["checks"] if c["name"] == "newest_intact")
    assert "size and SHA-256 (hashed from the file) match the receipt; all " in newest_intact
    assert "members decrypt and match its manifest" in newest_intact
    drill = next(c["sentence"] for c in report["checks"] if c["name"] == "restore_drill_fresh")
    assert drill.startswith(f"The newest successful restore drill restored {BACKUP_NAME}/x.zip on ")
    assert "RTO 300 s" in drill
    assert report["notified"] == []  # healthy_backup_found is not routed anywhere by default
    assert not [m for m in fleet["mails"] if "destination healthy " in m["body"]]


def test_an_old_newest_backup_fails_the_task_once_and_mails_unhealthy_naming_max_age_days(fleet: dict[str, Any]
                                                                                          ) -> None:
    ti = fleet["tis"]["stale"]
    assert ti.state == "failed" and ti.try_number == 1  # unhealthy is a finding, not retried (tries: 2)
    report = fleet["reports"]["stale"]
    assert report["healthy"] is False and report["failed_checks"] == ["max_age_days"]
    assert 2.99 < report["newest_age_days"] < 3.01
    mail = mail_for(fleet["mails"], "stale")
    assert mail["to"] == "ops@example.com"
    assert "unhealthy" in mail["subject"].lower()
    assert "max_age_days" in mail["body"] and "is considered too old (3.00 days; monitor.max_age_days is 1)" \
        in mail["body"]


def test_storage_over_the_limit(fleet: dict[str, Any]) -> None:
    assert fleet["tis"]["full"].state == "failed"
    report = fleet["reports"]["full"]
    assert report["failed_checks"] == ["max_storage_mb"]
    assert report["used_storage"] > MIB
    sentence = next(c["sentence"] for c in report["checks"] if c["name"] == "max_storage_mb")
    assert sentence.startswith("The backups are using too much storage. Current usage is 1.0")
    assert sentence.endswith("which is higher than the allowed limit of 1.00 MB.")
    assert "max_storage_mb" in mail_for(fleet["mails"], "full")["body"]


def test_a_tampered_newest_archive_fails_newest_intact(fleet: dict[str, Any]) -> None:
    assert fleet["tis"]["tampered"].state == "failed"
    report = fleet["reports"]["tampered"]
    assert report["failed_checks"] == ["newest_intact"]
    sentence = next(c["sentence"] for c in report["checks"] if c["name"] == "newest_intact")
    assert "is damaged: sha256 differs: hashed from the file" in sentence
    assert "newest_intact" in mail_for(fleet["mails"], "tampered")["body"]


def test_an_unreachable_destination_fails_reachable_and_skips_the_rest(fleet: dict[str, Any]) -> None:
    assert fleet["tis"]["gone"].state == "failed"
    report = fleet["reports"]["gone"]
    assert report["reachable"] is False and report["failed_checks"] == ["reachable"]
    assert set(checks(report).values()) == {"fail", "skipped"}
    assert report["backup_count"] is None
    body = mail_for(fleet["mails"], "gone")["body"]
    assert "The backup destination cannot be reached: Destination gone: directory" in body


def test_one_mail_per_unhealthy_destination_and_no_secret_in_any(fleet: dict[str, Any]) -> None:
    assert len(fleet["mails"]) == 4
    for mail in fleet["mails"]:
        assert ARCHIVE_PASSWORD not in mail["body"] and ARCHIVE_PASSWORD not in mail["subject"]
    assert ARCHIVE_PASSWORD not in repr(fleet["reports"])


# ---------------------------------------------------------------------------- a real backup_daily archive


def test_the_archive_backup_daily_just_published_is_healthy(backup_env: dict[str, Any], monkeypatch: Any) -> None:
    from tests.dags.conftest import run_backup

    run, _ = run_backup()
    assert run.state == "success"
    result = run_monitor(backup_env["config"], monkeypatch)
    assert result["run"].state == "success"
    report = result["reports"]["local"]
    assert report["healthy"] and report["backup_count"] >= 1
    assert checks(report) == {"reachable": "pass", "max_age_days": "pass", "max_storage_mb": "pass",
                              "newest_intact": "pass", "restore_drill_fresh": "skipped"}


# ---------------------------------------------------------------------------- deep_verify on S3


def corrupt_a_member(archive: Path) -> None:
    """Flip one byte inside the biggest member's data: the zip still opens, its HMAC no longer matches."""
    with zipfile.ZipFile(archive) as zf:
        info = max(zf.infolist(), key=lambda i: i.compress_size)
    with open(archive, "r+b") as out:
        out.seek(info.header_offset + 26)
        name_length, extra_length = int.from_bytes(out.read(2), "little"), int.from_bytes(out.read(2), "little")
        inside = info.header_offset + 30 + name_length + extra_length + info.compress_size // 2
        out.seek(inside)
        byte = out.read(1)
        out.seek(inside)
        out.write(bytes([byte[0] ^ 0xFF]))


def test_deep_verify_on_s3_catches_a_corrupted_member_that_size_and_checksum_cannot(
        tmp_path: Path, s3_endpoint: str, airflow_db: None, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from backup_ops.adapters.destinations.s3 import S3Destination
    from backup_ops.adapters.destinations.snapshot import DOWNLOAD_PREFIX, take_snapshot
    from backup_ops.core.config import load_config
    from backup_ops.core.health import evaluate
    from backup_ops.core.models import Receipt

    created = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    archive, _ = build_backup(tmp_path / "work", created, backup_name=BACKUP_NAME, payload=64 * 1024)
    corrupt_a_member(archive)  # before publishing: the receipt and the store describe the corrupted bytes
    data = archive.read_bytes()
    receipt = Receipt(archive.name, len(data), hashlib.sha256(data).hexdigest(), created.isoformat())
    s3 = S3Destination("offsite", BACKUP_NAME, bucket=TEST_BUCKET, conn_id=S3_CONN_ID, prefix="prod")
    s3.publish(archive, archive.name, receipt)
    destination = {"name": "offsite", "type": "s3", "conn_id": S3_CONN_ID, "bucket": TEST_BUCKET, "prefix": "prod"}

    shallow = write_config(tmp_path, [destination], {"deep_verify": False})
    monkeypatch.setenv("AIRFLOW_VAR_MONITOR_ARCHIVE_PASSWORD", ARCHIVE_PASSWORD)
    config = load_config(shallow)
    report = evaluate(take_snapshot(config, s3), config.monitor, datetime.now(UTC))
    assert report.healthy  # size and the store's SHA-256 match the receipt: nothing to see without the bytes

    deep = write_config(tmp_path, [destination], {"deep_verify": True})
    smtp_server.messages.clear()
    result = run_monitor(deep, monkeypatch)
    assert result["tis"]["offsite"].state == "failed"
    report_dict = result["reports"]["offsite"]
    assert report_dict["failed_checks"] == ["newest_intact"]
    sentence = next(c["sentence"] for c in report_dict["checks"] if c["name"] == "newest_intact")
    assert sentence.startswith(f"The members of the newest backup {BACKUP_NAME}/{archive.name} do not check out: ")
    assert f"s3://{TEST_BUCKET}/prod/{BACKUP_NAME}/{archive.name}" in sentence  # not the deleted download's path
    assert DOWNLOAD_PREFIX not in sentence
    assert "newest_intact" in smtp_server.bodies()[0]
    assert not list((tmp_path / "staging").glob(".monitor-deep-verify-*"))  # the download is removed


# ---------------------------------------------------------------------------- a passing fault is retried first


def test_an_endpoint_that_stays_down_is_tried_again_then_notified_once(
        tmp_path: Path, faulty_endpoint: Any, airflow_db: None, smtp_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from tests.fixtures_s3 import Fault

    proxy = faulty_endpoint(lambda r: Fault(503, "ServiceUnavailable", "Please reduce your request rate."))
    monkeypatch.setenv("AIRFLOW_CONN_BACKUP_S3_FLAKY", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": proxy.url, "region_name": "us-east-1",
                  "config_kwargs": {"retries": {"mode": "standard", "total_max_attempts": 1}}}}))
    config = write_config(tmp_path, [{"name": "offsite", "type": "s3", "conn_id": "backup_s3_flaky",
                                      "bucket": TEST_BUCKET}], {"tries": 2, "retry_delay": 0})
    smtp_server.messages.clear()

    result = run_monitor(config, monkeypatch)

    ti = result["tis"]["offsite"]
    assert (ti.state, ti.try_number) == ("failed", 2)  # the first attempt retried without telling anyone
    assert len(smtp_server.messages) == 1
    assert "HTTP 503" in smtp_server.bodies()[0]
    assert result["reports"]["offsite"]["failed_checks"] == ["reachable"]
