"""The catalog as pure functions: pages, rows with their receipt states, a destination's entry, the whole answer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from backup_ops.core.catalog import (
    CATALOG_FORMAT_VERSION,
    MAX_PAGE_SIZE,
    UNKNOWN,
    BackupRow,
    backup_rows,
    catalog,
    destination_catalog,
    drill_entry,
    page_window,
    storage_share,
)
from backup_ops.core.config import MonitorSettings
from backup_ops.core.drill_report import DrillCheck, DrillReport
from backup_ops.core.health import DestinationSnapshot, evaluate
from backup_ops.core.models import ArchiveIntegrity, BackupFile, Integrity

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024


def backups(count: int) -> list[BackupFile]:
    """``count`` daily backups, newest first."""
    return [BackupFile(f"app/2026-11-{26 - i:02d}-02-00-00.zip", NOW - timedelta(days=i, hours=10), MIB + i)
            for i in range(count)]


def drill(days_ago: float, outcome: str = "succeeded", rto: float | None = 60.0) -> DrillReport:
    finished = NOW - timedelta(days=days_ago)
    check = DrillCheck("row_counts", "fail" if outcome == "failed" else "pass", "12 tables")
    return DrillReport("app", "app/2026-11-20-02-00-00.zip", "local", finished - timedelta(seconds=90), finished,
                       outcome, rto, (check,), "validate: differs" if outcome == "failed" else None, "restore_drill",
                       "manual__1")


@pytest.mark.parametrize(
    ("total", "number", "size", "expected"),
    [
        (0, 1, 25, (1, 1, 0, 0)),          # nothing yet: one empty page
        (10, 1, 25, (1, 1, 0, 10)),
        (25, 1, 25, (1, 1, 0, 25)),
        (26, 2, 25, (2, 2, 25, 26)),
        (10_000, 3, 100, (3, 100, 200, 300)),
        (10, 9, 3, (4, 4, 9, 10)),          # past the last page: the last page
    ],
)
def test_page_window(total: int, number: int, size: int, expected: tuple[int, int, int, int]) -> None:
    window = page_window(total, number, size)
    assert (window.number, window.pages, window.start, window.end) == expected
    assert window.to_dict() == {"page": expected[0], "per_page": size, "pages": expected[1], "total": total}


@pytest.mark.parametrize(("number", "size", "message"), [(0, 10, "page must be 1 or more, got 0"),
                                                         (1, 0, f"per_page must be 1–{MAX_PAGE_SIZE}, got 0"),
                                                         (1, MAX_PAGE_SIZE + 1, "per_page must be 1–1000")])
def test_page_window_refuses_what_is_not_a_page(number: int, size: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        page_window(10, number, size)


def test_rows_carry_each_receipt_state_or_why_it_is_unknown() -> None:
    listed = backups(4)
    checks: dict[str, ArchiveIntegrity | str] = {
        listed[0].path: ArchiveIntegrity(listed[0].path, Integrity.INTACT, "size and SHA-256 match the receipt"),
        listed[1].path: ArchiveIntegrity(listed[1].path, Integrity.DAMAGED, "sha256 differs"),
        listed[2].path: "Destination s3: endpoint unreachable.",
    }
    rows = backup_rows(listed, checks)
    assert [(row.state, row.detail) for row in rows] == [
        ("intact", "size and SHA-256 match the receipt"), ("damaged", "sha256 differs"),
        (UNKNOWN, "Destination s3: endpoint unreachable."), (UNKNOWN, "it was not checked")]
    assert rows[0].name == "2026-11-26-02-00-00.zip"
    assert rows[0].to_dict() == {"path": listed[0].path, "name": "2026-11-26-02-00-00.zip",
                                 "date": listed[0].date.isoformat(), "size": MIB, "state": "intact",
                                 "detail": "size and SHA-256 match the receipt"}


@pytest.mark.parametrize(("used", "limit", "share"), [(MIB, 4 * MIB, 25.0), (0, MIB, 0.0), (3, 2, 150.0),
                                                     (MIB, None, None), (None, MIB, None), (MIB, 0, None)])
def test_storage_share(used: int | None, limit: int | None, share: float | None) -> None:
    assert storage_share(used, limit) == share


def test_a_destination_entry_is_the_monitors_report_plus_a_page_of_backups_and_the_drills() -> None:
    listed = backups(30)
    reports = (drill(20), drill(5, "failed", None), drill(2, rto=42.5))
    snapshot = DestinationSnapshot(backup_name="app", destination="local", location="file:///b", reachable=True,
                                   backups=tuple(listed), drill_reports=reports, notes=("Ignored x",))
    report = evaluate(snapshot, MonitorSettings(max_storage_mb=100), NOW)
    window = page_window(len(listed), 2, 10)
    rows = [BackupRow(b.path, b.date, b.size, "intact", "ok") for b in listed[window.start:window.end]]
    entry = destination_catalog(report, rows, window)
    assert entry["destination"] == "local" and entry["backup_count"] == 30
    assert entry["healthy"] == report.healthy and entry["checks"] == [c.to_dict() for c in report.checks]
    assert entry["storage_used_percent"] == round(100 * sum(b.size for b in listed) / (100 * MIB), 2)
    assert entry["backups"]["page"] == 2 and entry["backups"]["pages"] == 3
    assert [item["path"] for item in entry["backups"]["items"]] == [b.path for b in listed[10:20]]
    assert [d["finished_at"] for d in entry["drills"]] == [r.finished_at.isoformat() for r in reversed(reports)]
    assert entry["latest_drill"] == drill_entry(reports[2]) and entry["latest_drill"]["rto_seconds"] == 42.5
    assert entry["drills"][1]["failed_checks"] == ["row_counts"] and entry["drills"][1]["error"] == "validate: differs"
    assert entry["notes"] == ["Ignored x"] and "format_version" not in entry


def test_an_unreachable_destination_lists_nothing_and_says_why() -> None:
    snapshot = DestinationSnapshot(backup_name="app", destination="s3", location="s3://b", reachable=False,
                                   unreachable_reason="Destination s3: endpoint down.")
    entry = destination_catalog(evaluate(snapshot, MonitorSettings(), NOW), [], page_window(0, 1, 25))
    assert entry["reachable"] is False and entry["unreachable_reason"] == "Destination s3: endpoint down."
    assert entry["backup_count"] is None and entry["storage_used_percent"] is None
    assert entry["backups"]["items"] == [] and entry["latest_drill"] is None


def test_the_whole_catalog() -> None:
    assert catalog("app", NOW, [{"destination": "local"}]) == {
        "format_version": CATALOG_FORMAT_VERSION, "backup_name": "app", "generated_at": NOW.isoformat(),
        "destinations": [{"destination": "local"}]}
