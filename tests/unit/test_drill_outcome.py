"""A drill's phases and checks turned into its report: the monitor's fields, the extensions, the size limit."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from backup_ops.core.drill_outcome import PHASES, build_report, measured_rto, validation_checks
from backup_ops.core.drill_report import MAX_REPORT_BYTES, parse_drill_report

START = datetime(2026, 11, 26, 3, 0, 0, tzinfo=UTC)


def phase(name: str, begin: float, seconds: float, **extra: Any) -> dict[str, Any]:
    started = START + timedelta(seconds=begin)
    return {"phase": name, "started_at": started.isoformat(),
            "finished_at": (started + timedelta(seconds=seconds)).isoformat(), "seconds": seconds,
            "checks": [{"name": name, "status": "pass", "detail": f"{name} ok"}], **extra}


def all_phases() -> dict[str, Any]:
    results = {name: phase(name, i * 10, 5) for i, name in enumerate(PHASES)}
    results["select"].update(archive="app/2026-11-26-02-00-00.zip", size=123, drill_started_at=START.isoformat())
    results["verify"]["created_at"] = "2026-11-26T02:00:00+00:00"
    results["restore"]["databases"] = [{"database": "app", "scratch": "backup_drill_20261126030000",
                                        "server": "db:5432", "size_bytes": 9_000_000, "tables": 12, "rows": 5000,
                                        "seconds": 5, "globals": ["created role app"]}]
    results["validate"].update(success=True, tables=12, passed=12, failed=0, expectations=24,
                               per_table=[{"table": "public.t", "success": True}])
    results["verify_files"].update(status="verified", files=3, bytes=300)
    return results


def test_a_drill_that_passed_everything_succeeded_with_its_rto() -> None:
    outcome = build_report(backup_name="app", destination="local", started_at=START,
                           finished_at=START + timedelta(seconds=80), results=all_phases(), dag_id="restore_drill",
                           run_id="manual__1")
    assert outcome.succeeded and outcome.report.error is None
    # from fetch's start (10 s) to verify_files' end (65 s)
    assert outcome.report.rto_seconds == 55.0
    read = parse_drill_report(outcome.to_json(), "k")  # what the monitor reads
    assert read.succeeded and read.archive == "app/2026-11-26-02-00-00.zip" and read.rto_seconds == 55.0
    assert [c.name for c in read.checks] == list(PHASES)
    data = json.loads(outcome.to_json())
    assert data["phases"] == dict.fromkeys(PHASES, 5)
    assert data["database_size_bytes"] == 9_000_000 and data["databases"][0]["scratch"] == "backup_drill_20261126030000"
    assert data["validation"]["tables"] == 12 and data["files"] == {"status": "verified", "files": 3, "bytes": 300}
    assert data["backup_created_at"] == "2026-11-26T02:00:00+00:00" and data["archive_bytes"] == 123


def test_a_failed_phase_names_itself_and_later_phases_are_skipped() -> None:
    results = all_phases()
    for later in ("verify", "extract", "restore", "validate", "verify_files"):
        results[later] = None
    failures = [{"task": "verify", "map_index": -1, "error": "Wrong archive password for x: check y."}]
    outcome = build_report(backup_name="app", destination="local", started_at=START, finished_at=START,
                           results=results, failures=failures)
    assert not outcome.succeeded and outcome.report.rto_seconds is None
    assert outcome.report.error == "verify: Wrong archive password for x: check y."
    statuses = {c.name: c.status for c in outcome.report.checks}
    assert statuses == {"select": "pass", "fetch": "pass", "verify": "fail", "extract": "skipped",
                        "restore": "skipped", "validate": "skipped", "verify_files": "skipped"}
    assert json.loads(outcome.to_json())["phases"]["restore"] is None


def test_a_failed_validation_keeps_its_summary_and_is_named_once() -> None:
    results = all_phases()
    results["validate"]["checks"] = [{"name": "row_counts", "status": "fail", "detail": "1 of 12 failed"}]
    results["verify_files"] = None
    failures = [{"task": "validate", "error": "The restored data does not match the backup: row_counts: 1 of 12"}]
    outcome = build_report(backup_name="app", destination="local", started_at=START, finished_at=START,
                           results=results, failures=failures)
    assert outcome.report.error == "validate: The restored data does not match the backup: row_counts: 1 of 12"
    assert [c.name for c in outcome.report.checks if c.status == "fail"] == ["row_counts"]


def test_a_select_that_failed_still_makes_a_readable_report() -> None:
    outcome = build_report(backup_name="app", destination="local", started_at=START, finished_at=START,
                           results=dict.fromkeys(PHASES), failures=[{"task": "select", "error": "no backup"}])
    read = parse_drill_report(outcome.to_json())
    assert read.archive == "(none selected)" and read.error == "select: no backup" and not read.succeeded


def test_the_report_always_fits_what_the_monitor_reads_failed_tables_kept_longest() -> None:
    results = all_phases()
    per_table = [{"table": f"public.t{i}", "success": True, "rows": i, "expected_rows": i, "failures": []}
                 for i in range(5000)]
    per_table.insert(2500, {"table": "public.bad", "success": False, "rows": 1, "expected_rows": 2,
                            "failures": ["row_count: 1 rows, the manifest says 2"]})
    results["validate"]["per_table"] = per_table
    outcome = build_report(backup_name="app", destination="local", started_at=START, finished_at=START,
                           results=results)
    assert len(outcome.to_json()) <= MAX_REPORT_BYTES
    kept = outcome.data["validation"]["per_table"]
    assert kept[0]["table"] == "public.bad" and outcome.data["validation"]["per_table_cut"] is True
    parse_drill_report(outcome.to_json())


def test_measured_rto_needs_fetch_and_a_validation() -> None:
    assert measured_rto({}) is None
    results = all_phases()
    results["verify_files"] = None
    assert measured_rto(results) == 45.0  # fetch start (10) to validate end (55)


def test_validation_checks_one_per_kind() -> None:
    tables = [
        {"database": "app", "table": "public.a", "results": [
            {"kind": "row_count", "success": True, "detail": "3 rows"},
            {"kind": "columns", "success": True, "detail": "ok"},
            {"kind": "not_null", "success": False, "detail": "total has 2 NULL value(s)"}]},
        {"database": "app", "table": "public.b", "results": [
            {"kind": "row_count", "success": False, "detail": "2 rows, the manifest says 3"},
            {"kind": "columns", "success": True, "detail": "ok"}]},
    ]
    checks = {c["name"]: c for c in validation_checks(tables, unmatched=["public.zzz"])}
    assert checks["row_counts"] == {"name": "row_counts", "status": "fail",
                                    "detail": "1 of 2 failed: public.b: 2 rows, the manifest says 3"}
    assert checks["columns"]["status"] == "pass" and checks["columns"]["detail"] == (
        "2 tables have exactly the manifest's columns")
    assert checks["not_null"]["detail"] == "1 of 1 failed: public.a: total has 2 NULL value(s)"
    assert "freshness" not in checks
    assert checks["expectations"]["detail"].endswith("public.zzz")
