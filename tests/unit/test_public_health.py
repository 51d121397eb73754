"""The public health answer: the monitor's verdicts with no archive name, location, host path or secret in them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from backup_ops.core.config import MonitorSettings
from backup_ops.core.drill_report import DrillReport
from backup_ops.core.health import DestinationSnapshot, MemberCheck, NewestArchive, evaluate
from backup_ops.core.models import ArchiveIntegrity, BackupFile, Integrity
from backup_ops.core.public_health import public_health, redact, unavailable_health

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024
NEWEST = "invoicing-app/2026-11-26-02-00-00.zip"
LOCATION = "s3://company-backups/prod"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The newest backup invoicing-app/2026-11-26-02-00-00.zip is damaged: sha256 differs; it protects nothing.",
         "The newest backup [archive] is damaged: sha256 differs; it protects nothing."),
        ("The backup destination can be reached (s3://company-backups/prod).",
         "The backup destination can be reached ([location])."),
        ("Destination s3: downloading s3://company-backups/prod/invoicing-app/2026-11-26-02-00-00.zip failed.",
         "Destination s3: downloading [location]/[archive] failed."),
        ("bucket b is not usable: endpoint http://key:secret@10.0.0.5:9000/ is unreachable: connection refused.",
         "bucket b is not usable: endpoint [location] is unreachable: connection refused."),
        ("cannot read /var/backups/invoicing-app/x: Permission denied.", "cannot read [path]: Permission denied."),
        ("a drill of 2026-11-20-02-00-00.zip failed", "a drill of [archive] failed"),
        ("Config file /etc/backup-ops/config.yaml is not valid YAML at line 3, column 1: x.",
         "Config file [path] is not valid YAML at line 3, column 1: x."),
        # What is not a path, a URL or an archive stays as it was.
        ("The latest backup made on 2026-11-26 02:00:00 UTC is considered too old (3.00 days; "
         "monitor.max_age_days is 1).", None),
        ("1/2 of the checks and/or the rest; 5.00 MB of 4.88 GB", None),
    ],
)
def test_redact(text: str, expected: str | None) -> None:
    assert redact(text, [NEWEST, NEWEST.rsplit("/", 1)[1]], [LOCATION]) == (expected or text)


def snapshot(destination: str, *backups: BackupFile, damaged: bool = False, **fields: object) -> DestinationSnapshot:
    newest = None
    if backups:
        state = Integrity.DAMAGED if damaged else Integrity.INTACT
        newest = NewestArchive(backups[0].path, ArchiveIntegrity(backups[0].path, state, "sha256 differs"), True,
                               MemberCheck("ok", "all members match"))
    return DestinationSnapshot(backup_name="invoicing-app", destination=destination,  # type: ignore[arg-type]
                               location=f"{LOCATION}/{destination}", reachable=True, backups=backups, newest=newest,
                               **fields)


def test_every_destination_healthy_is_healthy_and_says_how_old_and_how_big() -> None:
    settings = MonitorSettings(max_storage_mb=10)
    reports = [evaluate(snapshot(name, BackupFile(NEWEST, NOW - timedelta(hours=2), MIB)), settings, NOW)
               for name in ("local", "s3")]
    body = public_health("invoicing-app", reports, NOW)
    assert body["status"] == "healthy" and body["healthy"] is True
    assert body["destinations"][1] == {"destination": "s3", "reachable": True, "healthy": True, "failed_checks": [],
                                       "backup_count": 1, "newest_backup_age_seconds": 7200, "used_storage": MIB,
                                       "storage_limit": 10 * MIB}


def test_an_unhealthy_destination_makes_it_unhealthy_and_its_sentences_name_no_archive_or_location() -> None:
    old = BackupFile(NEWEST, NOW - timedelta(days=3), MIB)
    drill = DrillReport("invoicing-app", "invoicing-app/2026-10-01-02-00-00.zip", "s3", NOW - timedelta(days=60),
                        NOW - timedelta(days=60), "failed", None, (), "validate: row counts differ")
    reports = [
        evaluate(snapshot("local", BackupFile(NEWEST, NOW - timedelta(hours=1), MIB)), MonitorSettings(), NOW),
        evaluate(snapshot("s3", old, damaged=True, drill_reports=(drill,)), MonitorSettings(), NOW),
        evaluate(DestinationSnapshot(backup_name="invoicing-app", destination="nas", location="file:///mnt/nas",
                                     reachable=False, unreachable_reason="Destination nas: cannot list "
                                     "/mnt/nas/invoicing-app: No such file or directory."), MonitorSettings(), NOW),
    ]
    body = public_health("invoicing-app", reports, NOW)
    assert body["status"] == "unhealthy" and [d["healthy"] for d in body["destinations"]] == [True, False, False]
    s3 = {check["name"]: check["sentence"] for check in body["destinations"][1]["failed_checks"]}
    assert set(s3) == {"max_age_days", "newest_intact", "restore_drill_fresh"}
    assert s3["newest_intact"].startswith("The newest backup [archive] is damaged")
    assert "the newest, of [archive] on" in s3["restore_drill_fresh"]
    nas = body["destinations"][2]
    assert nas["failed_checks"] == [{"name": "reachable", "sentence": "The backup destination cannot be reached: "
                                     "Destination nas: cannot list [path]: No such file or directory."}]
    assert nas["backup_count"] is None and nas["used_storage"] is None and nas["newest_backup_age_seconds"] is None
    text = json.dumps(body)
    assert ".zip" not in text and "s3://" not in text and "/mnt/nas" not in text


def test_no_destination_at_all_is_not_healthy() -> None:
    assert public_health("app", [], NOW)["status"] == "unhealthy"


def test_when_the_config_cannot_be_read_the_answer_says_why_without_its_path() -> None:
    body = unavailable_health("Config file /opt/airflow/include/backup_config.yaml cannot be read: Permission "
                              "denied.", NOW)
    assert body["status"] == "unhealthy" and body["destinations"] == []
    assert body["error"] == "Config file [path] cannot be read: Permission denied."
