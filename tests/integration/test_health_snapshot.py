"""``take_snapshot`` against real destinations: what it reads, what it refuses to read, and what evaluate() makes of it.

Local folders on disk and moto's S3 server over HTTP; archives are real backup-ops archives
(AES, manifest, receipt) unless a test needs laravel-backup's kind (a zip, no receipt, no manifest).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from backup_ops.adapters.destinations.base import receipt_bytes, receipt_path
from backup_ops.adapters.destinations.local import LocalDestination
from backup_ops.adapters.destinations.snapshot import DOWNLOAD_PREFIX, MAX_DRILL_REPORTS, take_snapshot
from backup_ops.core.config import BackupConfig, load_config
from backup_ops.core.drill_report import MAX_REPORT_BYTES, DrillReport, report_key
from backup_ops.core.errors import DestinationError
from backup_ops.core.health import HealthReport, evaluate
from backup_ops.core.models import Receipt
from tests.backup_archives import ARCHIVE_PASSWORD, publish_backup
from tests.fixtures_s3 import TEST_BUCKET, new_s3_client

NAME = "app"
NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)
PASSWORD_ENV = "SNAPSHOT_TEST_ARCHIVE_PASSWORD"


def config_for(tmp_path: Path, destinations: list[dict[str, Any]], **monitor: Any) -> BackupConfig:
    raw = {"backup": {"name": NAME, "source": {}, "destination": {"destinations": destinations},
                      "staging_directory": str(tmp_path / "staging"), "password": {"env": PASSWORD_ENV},
                      "encryption": "aes256"},
           "monitor": monitor}
    file = tmp_path / "config.yaml"
    file.write_text(yaml.safe_dump(raw))
    return load_config(file)


@pytest.fixture(autouse=True)
def archive_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, ARCHIVE_PASSWORD)


@pytest.fixture
def local(tmp_path: Path) -> tuple[LocalDestination, BackupConfig]:
    root = tmp_path / "disk"
    root.mkdir()
    return LocalDestination("disk", NAME, root), config_for(tmp_path, [{"name": "disk", "type": "local",
                                                                        "path": str(root)}])


def judged(config: BackupConfig, destination: Any) -> HealthReport:
    return evaluate(take_snapshot(config, destination), config.monitor, NOW)


def sentence(report: HealthReport, name: str) -> str:
    return next(check.sentence for check in report.checks if check.name == name)


def status(report: HealthReport, name: str) -> str:
    return next(check.status.value for check in report.checks if check.name == name)


# ---------------------------------------------------------------------------- newest_intact on a local disk


def test_a_member_corrupted_behind_a_consistent_receipt_is_caught_on_a_local_disk(local: Any, tmp_path: Path) -> None:
    destination, config = local
    key = publish_backup(destination, tmp_path / "work", NOW - HOUR, payload=32 * 1024)
    archive = destination.root / key
    with zipfile.ZipFile(archive) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("invoice.pdf"))
    data = bytearray(archive.read_bytes())
    data[info.header_offset + 200] ^= 0xFF  # inside the member's encrypted bytes
    archive.write_bytes(bytes(data))
    receipt = Receipt(archive.name, len(data), hashlib.sha256(data).hexdigest(), NOW.isoformat())
    (destination.root / receipt_path(key)).write_bytes(receipt_bytes(receipt))  # the receipt agrees

    report = judged(config, destination)

    assert status(report, "newest_intact") == "fail"
    assert sentence(report, "newest_intact").startswith(f"The members of the newest backup {key} do not check out: ")
    assert "uploads/invoice.pdf" in sentence(report, "newest_intact")


def test_a_backup_ops_archive_whose_receipt_vanished_fails(local: Any, tmp_path: Path) -> None:
    destination, config = local
    key = publish_backup(destination, tmp_path / "work", NOW - HOUR)
    (destination.root / receipt_path(key)).unlink()

    report = judged(config, destination)

    assert sentence(report, "newest_intact") == (
        f"The newest backup {key} was written by backup-ops but cannot be verified (no receipt beside it: an archive "
        "from before backup-ops (laravel-backup) or its receipt was removed) (its members do match its manifest): "
        "backup-ops writes a receipt with every archive and removes it only with the archive, so something outside "
        "backup-ops changed this destination.")


def test_a_laravel_backup_archive_passes_unverified(local: Any) -> None:
    destination, config = local
    folder = destination.root / NAME
    folder.mkdir()
    with zipfile.ZipFile(folder / f"{NOW - HOUR:%Y-%m-%d-%H-%M-%S}.zip", "w") as zf:
        zf.writestr("db-dumps/mysql-app.sql", "CREATE TABLE t (id int);\n")

    report = judged(config, destination)

    assert report.healthy
    assert "was not written by backup-ops, so there is nothing to check it against" in sentence(report,
                                                                                                  "newest_intact")


def test_a_file_that_is_not_a_zip_fails_whoever_wrote_it(local: Any) -> None:
    destination, config = local
    (destination.root / NAME).mkdir()
    (destination.root / NAME / f"{NOW - HOUR:%Y-%m-%d-%H-%M-%S}.zip").write_bytes(b"not a zip at all")

    report = judged(config, destination)

    assert status(report, "newest_intact") == "fail"
    assert "is not a readable zip file" in sentence(report, "newest_intact")


def test_a_wrong_archive_password_fails_naming_where_it_came_from(local: Any, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    destination, config = local
    publish_backup(destination, tmp_path / "work", NOW - HOUR)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")

    report = judged(config, destination)

    assert f"check the worker's environment variable {PASSWORD_ENV}" in sentence(report, "newest_intact")
    assert "not-the-password" not in json.dumps(report.to_dict())


# ---------------------------------------------------------------------------- restore-drill reports as hostile input


def drill_report(destination: str = "disk", finished: datetime = NOW - timedelta(days=3),
                 outcome: str = "succeeded") -> DrillReport:
    return DrillReport(NAME, f"{NAME}/x.zip", destination, finished - timedelta(minutes=5), finished, outcome,  # type: ignore[arg-type]
                       rto_seconds=300.0)


def write_report(root: Path, report: DrillReport, data: bytes | None = None) -> Path:
    file = root / report_key(NAME, report.started_at)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(report.to_json() if data is None else data)
    return file


def test_links_fifos_oversized_and_foreign_reports_are_ignored_with_a_note(local: Any, tmp_path: Path) -> None:
    destination, config = local
    publish_backup(destination, tmp_path / "work", NOW - HOUR)
    good = drill_report()
    write_report(destination.root, good)
    secret = tmp_path / "elsewhere.json"
    secret.write_bytes(drill_report(finished=NOW - HOUR).to_json())
    folder = destination.root / NAME / "restore-drills"
    (folder / "2099-01-01-00-00-00.json").symlink_to(secret)
    os.mkfifo(folder / "2098-01-01-00-00-00.json")
    write_report(destination.root, drill_report(finished=NOW - 2 * HOUR), b" " * (MAX_REPORT_BYTES + 1))
    write_report(destination.root, drill_report(destination="offsite", finished=NOW - 3 * HOUR))

    done = threading.Event()
    result: dict[str, Any] = {}

    def gather() -> None:
        result["snapshot"] = take_snapshot(config, destination)
        done.set()

    threading.Thread(target=gather, daemon=True).start()
    assert done.wait(30), "reading the reports hung (a FIFO was opened for reading)"
    snapshot = result["snapshot"]

    assert [r.finished_at for r in snapshot.drill_reports] == [good.finished_at]
    notes = "\n".join(snapshot.notes)
    # A link or a FIFO is not a regular file: neither is listed, and reading one (swapped in after the
    # listing) is refused without following or opening it.
    assert "2099-01-01-00-00-00.json" not in notes and "2098-01-01-00-00-00.json" not in notes
    with pytest.raises(DestinationError, match="it is a symbolic link, which is not followed"):
        destination.read_drill_report(f"{NAME}/restore-drills/2099-01-01-00-00-00.json", MAX_REPORT_BYTES)
    with pytest.raises(DestinationError, match="is not a regular file; it was not read"):
        destination.read_drill_report(f"{NAME}/restore-drills/2098-01-01-00-00-00.json", MAX_REPORT_BYTES)
    assert f"it is larger than {MAX_REPORT_BYTES} bytes" in notes
    assert "it is about destination 'offsite', not 'disk'" in notes
    report = evaluate(snapshot, config.monitor, NOW)
    assert sentence(report, "restore_drill_fresh").startswith(
        f"The newest successful restore drill restored {NAME}/x.zip")


def test_only_the_newest_reports_are_read(local: Any) -> None:
    destination, config = local
    for day in range(MAX_DRILL_REPORTS + 5):
        write_report(destination.root, drill_report(finished=NOW - timedelta(days=day + 1), outcome="failed"))
    snapshot = take_snapshot(config, destination)
    assert len(snapshot.drill_reports) == MAX_DRILL_REPORTS
    assert f"Read the {MAX_DRILL_REPORTS} newest of {MAX_DRILL_REPORTS + 5} restore-drill reports." in snapshot.notes


# ---------------------------------------------------------------------------- S3 (moto over HTTP)


@pytest.fixture
def s3(s3_endpoint: str, tmp_path: Path) -> Any:
    from backup_ops.adapters.destinations.s3 import S3Destination

    client = new_s3_client(s3_endpoint)
    destination = S3Destination("offsite", NAME, bucket=TEST_BUCKET, prefix="prod", client=client)
    yield destination, client
    client.close()


def s3_config(tmp_path: Path, **monitor: Any) -> BackupConfig:
    return config_for(tmp_path, [{"name": "offsite", "type": "s3", "conn_id": "unused", "bucket": TEST_BUCKET,
                                  "prefix": "prod"}], **monitor)


def test_s3_drill_reports_are_listed_and_read_with_a_range(s3: Any, tmp_path: Path) -> None:
    destination, client = s3
    good = drill_report(destination="offsite")
    client.put_object(Bucket=TEST_BUCKET, Key=f"prod/{report_key(NAME, good.started_at)}", Body=good.to_json())
    huge = drill_report(destination="offsite", finished=NOW - HOUR)
    client.put_object(Bucket=TEST_BUCKET, Key=f"prod/{report_key(NAME, huge.started_at)}",
                      Body=b"{" + b" " * (4 * MAX_REPORT_BYTES))
    client.put_object(Bucket=TEST_BUCKET, Key=f"prod/{NAME}/restore-drills/empty.json", Body=b"")
    client.put_object(Bucket=TEST_BUCKET, Key=f"prod/{NAME}/restore-drills/deeper/x.json", Body=good.to_json())

    assert destination.list_drill_reports() == [f"{NAME}/restore-drills/empty.json", report_key(NAME, huge.started_at),
                                                report_key(NAME, good.started_at)]  # by name, descending
    assert len(destination.read_drill_report(report_key(NAME, huge.started_at), MAX_REPORT_BYTES)) == \
        MAX_REPORT_BYTES + 1
    assert destination.read_drill_report(f"{NAME}/restore-drills/empty.json", MAX_REPORT_BYTES) == b""
    assert destination.read_drill_report(f"{NAME}/restore-drills/gone.json", MAX_REPORT_BYTES) is None
    snapshot = take_snapshot(s3_config(tmp_path), destination)
    assert [r.finished_at for r in snapshot.drill_reports] == [good.finished_at]
    assert len(snapshot.notes) == 2


def test_s3_archive_without_its_receipt_is_recognised_by_backup_ops_upload_metadata(s3: Any, tmp_path: Path) -> None:
    destination, client = s3
    key = publish_backup(destination, tmp_path / "work", NOW - HOUR)
    client.delete_object(Bucket=TEST_BUCKET, Key=f"prod/{receipt_path(key)}")

    report = judged(s3_config(tmp_path), destination)

    assert status(report, "newest_intact") == "fail"
    assert "was written by backup-ops but cannot be verified" in sentence(report, "newest_intact")


def test_s3_deep_verify_downloads_into_a_private_folder_and_removes_it(s3: Any, tmp_path: Path) -> None:
    destination, _ = s3
    config = s3_config(tmp_path, deep_verify=True)
    staging = config.backup.staging_directory
    stale = staging / f"{DOWNLOAD_PREFIX}killed"
    stale.mkdir(parents=True)
    (stale / "x.zip").write_bytes(b"left by a killed task")
    os.utime(stale, (0, 0))
    seen: list[int] = []
    original = destination.open_backup

    def spying_open(path: str) -> Any:
        (folder,) = [p for p in staging.glob(f"{DOWNLOAD_PREFIX}*") if p != stale]
        seen.append(folder.stat().st_mode & 0o777)
        return original(path)

    destination.open_backup = spying_open
    key = publish_backup(destination, tmp_path / "work", NOW - HOUR)

    report = judged(config, destination)

    assert report.healthy
    assert sentence(report, "newest_intact").startswith(
        f"The newest backup {key} is intact: size and SHA-256 (hashed from a download) match the receipt; all ")
    assert seen == [0o700]
    assert list(staging.iterdir()) == []  # the download and the stale folder are gone
