"""A restore drill's outcome: its phases and checks turned into the report it leaves and the sentence it says.

Each phase of a drill (``PHASES``) returns a small result: when it started and finished, how long
it took, and the checks it ran (``{name, status, detail}``). ``build_report`` turns these, with the
failed phases' causes, into the report ``core.drill_report`` defines, extended compatibly: the
fields a monitor reads are exactly ``DrillReport.to_dict()``'s, and beside them the per-phase
seconds, the restored databases with their sizes, the validation summary and the files checked
(readers ignore keys they do not know). The JSON always fits in ``MAX_REPORT_BYTES``: per-table
details are cut first, failed tables kept longest.

The measured RTO is the wall time from the start of ``fetch`` to the end of the last check of the
restored data (``validate`` or ``verify_files``): how long getting this backup back took, Airflow's
scheduling gaps between the phases included. A failed drill has none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from backup_ops.core.drill_report import MAX_REPORT_BYTES, DrillCheck, DrillReport, clean_text

PHASES = ("select", "fetch", "verify", "extract", "restore", "validate", "verify_files")
"""The drill's phases in order; each is one task of ``restore_drill`` and one step of ``restore``."""
VALIDATION_KINDS = ("row_count", "columns", "not_null", "freshness")
_CHECK_NAMES = {"row_count": "row_counts", "columns": "columns", "not_null": "not_null", "freshness": "freshness"}
NOT_SELECTED = "(none selected)"
_SIZE_MARGIN = 1024
_SHOWN_FAILURES = 5


@dataclass(frozen=True)
class DrillOutcome:
    """The report as the monitor reads it (``report``) and the whole JSON written (``data``)."""

    report: DrillReport
    data: dict[str, Any]

    @property
    def succeeded(self) -> bool:
        return self.report.succeeded

    def to_json(self) -> bytes:
        return (json.dumps(self.data, indent=2) + "\n").encode()


def build_report(
    *,
    backup_name: str,
    destination: str,
    started_at: datetime,
    finished_at: datetime,
    results: Mapping[str, Mapping[str, Any] | None],
    failures: Sequence[Mapping[str, Any]] = (),
    dag_id: str = "",
    run_id: str = "",
) -> DrillOutcome:
    """The drill's report from each phase's result (None: it did not finish) and the failed phases' causes.

    ``failures`` are ``{"task", "error"}`` notes (``airflow.failures.read_failures``); a phase that
    failed after returning its result (``validate`` pushes its summary, then fails) is named once.
    """
    failed = {str(note["task"]): str(note["error"]) for note in failures}
    checks: list[DrillCheck] = []
    for phase in PHASES:
        result = results.get(phase)
        if result is not None:
            checks += [DrillCheck(str(c["name"]), str(c["status"]), clean_text(str(c.get("detail", ""))))
                       for c in result.get("checks", ())]
        elif phase in failed:
            checks.append(DrillCheck(phase, "fail", clean_text(failed[phase])))
        else:
            checks.append(DrillCheck(phase, "skipped", "not run: an earlier phase failed"))
    incomplete = [p for p in PHASES if results.get(p) is None]
    failed_checks = [c for c in checks if c.status == "fail"]
    succeeded = not failed and not incomplete and not failed_checks
    error = None
    if not succeeded:
        error = _first_error(failed, failed_checks, incomplete)
    selected = results.get("select") or {}
    report = DrillReport(
        backup_name=backup_name,
        archive=str(selected.get("archive") or NOT_SELECTED),
        destination=destination,
        started_at=started_at,
        finished_at=max(finished_at, started_at),
        outcome="succeeded" if succeeded else "failed",
        rto_seconds=measured_rto(results) if succeeded else None,
        checks=tuple(checks),
        error=clean_text(error) if error else None,
        dag_id=dag_id,
        run_id=run_id,
    )
    data = {**report.to_dict(), **_extensions(results)}
    return DrillOutcome(report, _fit(data))


def measured_rto(results: Mapping[str, Mapping[str, Any] | None]) -> float | None:
    """Seconds from the start of ``fetch`` to the end of the last check of the restored data."""
    fetch = results.get("fetch") or {}
    ends = [r["finished_at"] for r in (results.get("validate"), results.get("verify_files")) if r]
    if "started_at" not in fetch or not ends:
        return None
    start = datetime.fromisoformat(str(fetch["started_at"]))
    end = max(datetime.fromisoformat(str(moment)) for moment in ends)
    return round(max(0.0, (end - start).total_seconds()), 3)


def validation_checks(tables: Sequence[Mapping[str, Any]], unmatched: Sequence[str] = ()) -> list[dict[str, str]]:
    """The validation's checks for the report, one per kind of expectation, from the per-table results.

    ``tables`` are ``{"database", "table", "results": [{"kind", "success", "detail"}]}``;
    ``unmatched`` are configured tables no database of the backup holds (a failed ``expectations``).
    """
    checks = []
    for kind in VALIDATION_KINDS:
        runs = [(t, r) for t in tables for r in t["results"] if r["kind"] == kind]
        if not runs and kind in ("not_null", "freshness"):
            continue
        bad = [(t, r) for t, r in runs if not r["success"]]
        tables_run = len({(t["database"], t["table"]) for t, _ in runs})
        if bad:
            shown = "; ".join(f"{t['table']}: {r['detail']}" for t, r in bad[:_SHOWN_FAILURES])
            more = f" (and {len(bad) - _SHOWN_FAILURES} more)" if len(bad) > _SHOWN_FAILURES else ""
            checks.append({"name": _CHECK_NAMES[kind], "status": "fail",
                           "detail": f"{len(bad)} of {len(runs)} failed: {shown}{more}"})
        else:
            checks.append({"name": _CHECK_NAMES[kind], "status": "pass", "detail": _passed(kind, tables_run)})
    if unmatched:
        checks.append({"name": "expectations", "status": "fail",
                       "detail": "restore_drill.expectations names tables the backup does not hold: "
                                 + ", ".join(unmatched[:_SHOWN_FAILURES])})
    return checks


def _passed(kind: str, tables: int) -> str:
    return {
        "row_count": f"{tables} tables have exactly the manifest's row counts",
        "columns": f"{tables} tables have exactly the manifest's columns",
        "not_null": f"the configured columns of {tables} tables hold no NULL",
        "freshness": f"the newest rows of {tables} tables are within the configured age of the backup",
    }[kind]


def _first_error(failed: Mapping[str, str], failed_checks: Sequence[DrillCheck], incomplete: Sequence[str]) -> str:
    """The one sentence that failed the drill, naming its phase."""
    for phase in PHASES:
        if phase in failed:
            return f"{phase}: {failed[phase]}"
    if failed_checks:
        return f"{failed_checks[0].name}: {failed_checks[0].detail}"
    return f"{incomplete[0]}: did not finish (see its task log)."


def _extensions(results: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any]:
    """What the report adds to the monitor's fields: phases, databases, validation, files."""
    phases = {p: (results[p] or {}).get("seconds") if results.get(p) else None for p in PHASES}
    selected = results.get("select") or {}
    restored = results.get("restore") or {}
    validated = results.get("validate") or {}
    files = results.get("verify_files") or {}
    databases = [
        {key: db.get(key) for key in ("database", "scratch", "server", "size_bytes", "tables", "rows", "seconds",
                                      "globals", "notes")}
        for db in restored.get("databases", ())
    ]
    return {
        "backup_created_at": (results.get("verify") or {}).get("created_at"),
        "archive_bytes": selected.get("size"),
        "phases": phases,
        "databases": databases,
        "database_size_bytes": sum(int(db.get("size_bytes") or 0) for db in databases) if databases else None,
        "validation": {key: validated.get(key) for key in ("success", "tables", "passed", "failed",
                                                            "expectations", "seconds", "import_seconds",
                                                            "engines", "exact_checks", "per_table")}
        if validated else None,
        "files": {key: files.get(key) for key in ("status", "files", "bytes")} if files else None,
    }


def _fit(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` cut down until its JSON fits a report: passing tables go first, then failing ones, then globals."""
    def size() -> int:
        return len(json.dumps(data, indent=2).encode()) + _SIZE_MARGIN

    validation = data.get("validation")
    per_table = list((validation or {}).get("per_table") or [])
    if validation is not None and size() > MAX_REPORT_BYTES:
        per_table.sort(key=lambda t: bool(t.get("success")))  # failed tables first, kept longest
        while per_table and size() > MAX_REPORT_BYTES:
            per_table = per_table[: len(per_table) // 2]
            validation["per_table"] = per_table
            validation["per_table_cut"] = True
    for db in data.get("databases", ()):
        if size() > MAX_REPORT_BYTES:
            db["globals"] = (db.get("globals") or [])[:3]
            db["notes"] = (db.get("notes") or [])[:3]
    return data
