"""A restore drill's report: the small JSON a drill leaves on the destination it restored from.

A restore drill (``restore_drill``) fetches a backup, restores it into a scratch database and
validates it; its report proves that backups on that destination restore, and how long it took
(the measured RTO). ``backup_monitor``'s ``restore_drill_fresh`` check reads these reports, so
their shape is fixed here (and in docs/architecture.md, "Restore-drill reports"):

* location: ``<backup.name>/restore-drills/<started_at as YYYY-MM-DD-HH-MM-SS>.json`` (UTC) on the
  destination the drilled archive was fetched from, created exclusively like a receipt;
* content: ``format_version`` (1), ``backup_name``, ``archive`` (its key, e.g.
  ``invoicing-app/2026-11-26-02-00-00.zip``), ``destination``, ``started_at`` and ``finished_at``
  (ISO 8601 with a UTC offset), ``outcome`` (``succeeded`` | ``failed``), ``rto_seconds`` (number or
  null), ``checks`` (a list of ``{name, status: pass|fail|skipped, detail}``), ``error`` (one
  sentence or null), and optionally ``dag_id`` and ``run_id``. Never a secret.

Reports are read as hostile input: whatever is on a destination may have been written by anyone
with access to it. ``parse_drill_report`` reads at most ``MAX_REPORT_BYTES``, checks every type,
caps every string and list, drops control characters, and raises ``DrillReportError`` with one
phrase for anything else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from backup_ops.core.models import ARCHIVE_TIMESTAMP_FORMAT

DRILL_REPORTS_FOLDER = "restore-drills"
REPORT_SUFFIX = ".json"
FORMAT_VERSION = 1
MAX_REPORT_BYTES = 64 * 1024
MAX_TEXT = 500          # characters kept of any one string (an error sentence, a check's detail)
MAX_CHECKS = 100

Outcome = Literal["succeeded", "failed"]
_OUTCOMES = ("succeeded", "failed")
_CHECK_STATUSES = ("pass", "fail", "skipped")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class DrillReportError(ValueError):
    """A report that cannot be used; the message is one phrase (it follows the report's key in a note)."""


@dataclass(frozen=True)
class DrillCheck:
    """One check a drill ran (checksum, decrypt, extract, restore, row counts, files, …)."""

    name: str
    status: str      # pass | fail | skipped
    detail: str = ""


@dataclass(frozen=True)
class DrillReport:
    """What one restore drill did, and whether the backup it fetched restored."""

    backup_name: str
    archive: str
    destination: str
    started_at: datetime
    finished_at: datetime
    outcome: Outcome
    rto_seconds: float | None = None
    checks: tuple[DrillCheck, ...] = ()
    error: str | None = None
    dag_id: str = ""
    run_id: str = ""
    key: str = ""      # where it was read from (not part of the JSON)

    @property
    def succeeded(self) -> bool:
        return self.outcome == "succeeded"

    def to_dict(self) -> dict[str, Any]:
        """The report's JSON shape (``format_version`` 1)."""
        return {
            "format_version": FORMAT_VERSION,
            "backup_name": self.backup_name,
            "archive": self.archive,
            "destination": self.destination,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "outcome": self.outcome,
            "rto_seconds": self.rto_seconds,
            "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in self.checks],
            "error": self.error,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2) + "\n").encode()


def report_key(backup_name: str, started_at: datetime) -> str:
    """Where a drill that started at ``started_at`` leaves its report, below the destination root."""
    stamp = started_at.astimezone(UTC).strftime(ARCHIVE_TIMESTAMP_FORMAT)
    return f"{backup_name}/{DRILL_REPORTS_FOLDER}/{stamp}{REPORT_SUFFIX}"


def parse_drill_report(data: bytes, key: str = "") -> DrillReport:
    """A report from its bytes, every field checked; raises DrillReportError saying what is wrong."""
    if len(data) > MAX_REPORT_BYTES:
        raise DrillReportError(f"it is larger than {MAX_REPORT_BYTES} bytes")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DrillReportError(f"it is not JSON ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise DrillReportError("it is not a JSON object")
    version = raw.get("format_version")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise DrillReportError(f"format_version is {_shown(version)}, this backup-ops reads {FORMAT_VERSION}")
    started = _instant(raw, "started_at")
    finished = _instant(raw, "finished_at")
    if finished < started:
        raise DrillReportError("finished_at is before started_at")
    outcome = raw.get("outcome")
    if outcome not in _OUTCOMES:
        raise DrillReportError(f"outcome is {_shown(outcome)}, not one of {', '.join(_OUTCOMES)}")
    return DrillReport(
        backup_name=_text(raw, "backup_name"),
        archive=_text(raw, "archive"),
        destination=_text(raw, "destination"),
        started_at=started,
        finished_at=finished,
        outcome=outcome,
        rto_seconds=_seconds(raw.get("rto_seconds")),
        checks=_checks(raw.get("checks")),
        error=_text(raw, "error", required=False) or None,
        dag_id=_text(raw, "dag_id", required=False),
        run_id=_text(raw, "run_id", required=False),
        key=key,
    )


def clean_text(value: str, limit: int = MAX_TEXT) -> str:
    """``value`` without control characters (no forged log lines), at most ``limit`` characters."""
    text = _CONTROL.sub("?", value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _text(raw: dict[str, Any], field: str, *, required: bool = True) -> str:
    value = raw.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise DrillReportError(f"{field} is {_shown(value)}, not a non-empty string")
    return clean_text(value)


def _instant(raw: dict[str, Any], field: str) -> datetime:
    value = raw.get(field)
    if not isinstance(value, str) or len(value) > 40:
        raise DrillReportError(f"{field} is {_shown(value)}, not an ISO 8601 date")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise DrillReportError(f"{field} is {_shown(value)}, not an ISO 8601 date") from None
    if moment.utcoffset() is None:
        raise DrillReportError(f"{field} {_shown(value)} has no UTC offset")
    return moment.astimezone(UTC)


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1e9:
        raise DrillReportError(f"rto_seconds is {_shown(value)}, not a number of seconds")
    return float(value)


def _checks(value: Any) -> tuple[DrillCheck, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise DrillReportError("checks is not a list")
    if len(value) > MAX_CHECKS:
        raise DrillReportError(f"checks has {len(value)} entries, more than {MAX_CHECKS}")
    checks = []
    for index, item in enumerate(value):
        if not isinstance(item, dict) or item.get("status") not in _CHECK_STATUSES:
            raise DrillReportError(f"checks[{index}] is not {{name, status: pass|fail|skipped, detail}}")
        checks.append(DrillCheck(_text(item, "name"), str(item["status"]), _text(item, "detail", required=False)))
    return tuple(checks)


def _shown(value: Any) -> str:
    """A received value for a message: its repr, cleaned and short (it may be anything)."""
    return clean_text(repr(value), 60)
