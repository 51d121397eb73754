"""Health checks of one destination: pure functions of what it holds, the monitor settings and ``now``.

laravel-backup's monitor (``IsReachable``, ``MaximumAgeInDays``, ``MaximumStorageInMegabytes``, custom
checks), plus what backup-ops can prove beyond it: the newest archive is intact, and a restore
drill succeeded recently. ``evaluate`` runs the checks in ``CHECK_ORDER`` and then the custom ones;
``reachable`` comes first and, when it fails, the others are skipped; otherwise every check runs
and every failure is collected (laravel-backup v10), each one sentence.

What a destination holds is gathered beforehand, by ``backup_ops.adapters.destinations.snapshot``,
into a ``DestinationSnapshot``: plain data, so the same evaluation serves the ``backup_monitor`` DAG
and ``python -m backup_ops list`` and is table-tested without any storage. The only thing
``evaluate`` loads is the code of configured custom checks (imported when they run, never at DAG
parse time).

Custom checks: ``monitor.custom_checks`` names classes by dotted path. Each is built with the
entry's options as keyword arguments and asked ``check(snapshot, now)``; it returns a
``CheckResult`` (``CheckResult.passed(...)``/``failed(...)``/``skipped(...)``) or raises
``HealthCheckFailed("one sentence")``. Like laravel-backup, any other exception, and a class that
cannot be imported or built, is a failed check naming the class.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from backup_ops.core.config.model import CustomCheckSpec, MonitorSettings
from backup_ops.core.drill_report import DRILL_REPORTS_FOLDER, DrillReport
from backup_ops.core.models import ArchiveIntegrity, BackupFile, Integrity, human_bytes

CHECK_ORDER = ("reachable", "max_age_days", "max_storage_mb", "newest_intact", "restore_drill_fresh")
MIB = 1024 * 1024
# A backup dated further ahead than this is not clock skew between hosts: its date cannot be trusted,
# and it would make max_age_days pass for ever.
FUTURE_TOLERANCE = timedelta(hours=1)
REPORT_FORMAT_VERSION = 1


class Status(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    SKIPPED = "skipped"


class HealthCheckFailed(Exception):
    """Raised by a custom check to fail with one sentence (laravel-backup's ``InvalidHealthCheck``)."""


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict and the sentence that explains it."""

    name: str
    status: Status
    sentence: str

    @classmethod
    def passed(cls, name: str, sentence: str) -> CheckResult:
        return cls(name, Status.PASS, sentence)

    @classmethod
    def failed(cls, name: str, sentence: str) -> CheckResult:
        return cls(name, Status.FAIL, sentence)

    @classmethod
    def skipped(cls, name: str, sentence: str) -> CheckResult:
        return cls(name, Status.SKIPPED, sentence)

    @property
    def is_failure(self) -> bool:
        return self.status is Status.FAIL

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status.value, "sentence": self.sentence}


@dataclass(frozen=True)
class MemberCheck:
    """Whether every member of an archive decrypts and matches its manifest (``verify_archive``)."""

    state: Literal["ok", "failed", "not_checked"]
    detail: str   # ok: what was read; failed: the error sentence; not_checked: why not


@dataclass(frozen=True)
class NewestArchive:
    """What is known about the newest archive on a destination."""

    path: str
    integrity: ArchiveIntegrity   # against its receipt (or the SHA-256 of a download, with deep_verify)
    made_by_backup_ops: bool      # a receipt, a manifest.json or backup-ops' upload metadata says so
    members: MemberCheck


@dataclass(frozen=True)
class DestinationSnapshot:
    """What one destination holds, as gathered for the health checks (plain data, no I/O)."""

    backup_name: str
    destination: str
    location: str
    reachable: bool
    unreachable_reason: str | None = None
    backups: tuple[BackupFile, ...] = ()             # newest first
    integrity: tuple[ArchiveIntegrity, ...] = ()     # newest first, down to the first intact one
    newest: NewestArchive | None = None
    newest_error: str | None = None                  # the newest archive could not be checked at all
    drill_reports: tuple[DrillReport, ...] = ()      # readable reports of drills from this destination
    drill_error: str | None = None                   # the reports could not be listed
    notes: tuple[str, ...] = ()                      # what was ignored and why (unreadable reports, …)
    transient: bool = False                          # a problem that a retry may fix (an endpoint down)

    @property
    def used_storage(self) -> int:
        """Bytes used by the backups (laravel-backup counts the archives, the newest included)."""
        return sum(b.size for b in self.backups)


@dataclass(frozen=True)
class HealthReport:
    """Every check's verdict on one destination at ``checked_at``; ``to_dict`` is the monitor task's XCom."""

    snapshot: DestinationSnapshot
    checks: tuple[CheckResult, ...]
    checked_at: datetime
    storage_limit: int | None = None   # bytes; None: no limit

    @property
    def healthy(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[CheckResult]:
        return [check for check in self.checks if check.is_failure]

    def summary(self) -> str:
        """One sentence: healthy, or which checks failed."""
        where = f"The {self.snapshot.backup_name} backups on destination {self.snapshot.destination}"
        if self.healthy:
            return f"{where} are considered healthy."
        return f"{where} are unhealthy: {', '.join(c.name for c in self.failures)} failed."

    def to_dict(self) -> dict[str, Any]:
        s = self.snapshot
        newest = s.backups[0] if s.backups else None
        oldest = s.backups[-1] if s.backups else None
        listed = s.reachable
        return {
            "format_version": REPORT_FORMAT_VERSION,
            "backup_name": s.backup_name,
            "destination": s.destination,
            "location": s.location,
            "checked_at": self.checked_at.isoformat(),
            "healthy": self.healthy,
            "reachable": s.reachable,
            "backup_count": len(s.backups) if listed else None,
            "newest_date": newest.date.isoformat() if newest else None,
            "newest_age_days": round(_days(self.checked_at - newest.date), 4) if newest else None,
            "newest_size": newest.size if newest else None,
            "oldest_date": oldest.date.isoformat() if oldest else None,
            "used_storage": s.used_storage if listed else None,
            "storage_limit": self.storage_limit,
            "checks": [check.to_dict() for check in self.checks],
            "failed_checks": [check.name for check in self.failures],
        }


def evaluate(snapshot: DestinationSnapshot, settings: MonitorSettings, now: datetime) -> HealthReport:
    """Run every check on ``snapshot`` as of ``now``; ``reachable`` first, the rest skipped when it fails."""
    limit = None if settings.max_storage_mb is None else settings.max_storage_mb * MIB
    reachable = check_reachable(snapshot)
    if reachable.is_failure:
        names = [*CHECK_ORDER[1:], *(_custom_name(spec.class_path) for spec in settings.custom_checks)]
        skipped = [CheckResult.skipped(name, "Skipped: the destination cannot be reached.") for name in names]
        return HealthReport(snapshot, (reachable, *skipped), now, limit)
    checks = [
        reachable,
        check_max_age(snapshot, settings.max_age_days, now),
        check_max_storage(snapshot, settings.max_storage_mb),
        check_newest_intact(snapshot),
        check_restore_drill(snapshot, settings.restore_drill_max_age_days, now),
        *(run_custom_check(spec, snapshot, now) for spec in settings.custom_checks),
    ]
    return HealthReport(snapshot, tuple(checks), now, limit)


# ---------------------------------------------------------------------------- the checks


def check_reachable(snapshot: DestinationSnapshot) -> CheckResult:
    if snapshot.reachable:
        return CheckResult.passed("reachable", f"The backup destination can be reached ({snapshot.location}).")
    return CheckResult.failed("reachable", f"The backup destination cannot be reached: {snapshot.unreachable_reason}")


def check_max_age(snapshot: DestinationSnapshot, max_age_days: float, now: datetime) -> CheckResult:
    """Healthy iff the newest backup is strictly younger than ``max_age_days`` (laravel's MaximumAgeInDays)."""
    name = "max_age_days"
    if not snapshot.backups:
        return CheckResult.failed(name, "There are no backups of this application at all.")
    newest = snapshot.backups[0]
    age = now - newest.date
    if -age > FUTURE_TOLERANCE:
        return CheckResult.failed(
            name, f"The latest backup is dated {format_date(newest.date)}, {_days(-age):.2f} days in the future: its "
                  "date (from its name, else its modification time) cannot be trusted, so the age of the backups "
                  f"cannot be checked; look at {newest.path} and the clocks of the hosts that write backups."
        )
    if age < timedelta(days=max_age_days):
        return CheckResult.passed(name, f"The latest backup made on {format_date(newest.date)} is "
                                        f"{max(0.0, _days(age)):.2f} days old, younger than the limit of "
                                        f"{_day_count(max_age_days)}.")
    return CheckResult.failed(name, f"The latest backup made on {format_date(newest.date)} is considered too old "
                                    f"({_days(age):.2f} days; monitor.max_age_days is {max_age_days:g}).")


def check_max_storage(snapshot: DestinationSnapshot, max_storage_mb: int | None) -> CheckResult:
    """Unhealthy iff the backups use strictly more than ``max_storage_mb`` MiB (MaximumStorageInMegabytes)."""
    name = "max_storage_mb"
    if max_storage_mb is None:
        return CheckResult.skipped(name, "No storage limit is set (monitor.max_storage_mb is null).")
    used, limit = snapshot.used_storage, max_storage_mb * MIB
    shown_used, shown_limit = human_bytes(used), human_bytes(limit)
    if shown_used == shown_limit:  # rounding would make them look equal: say it in bytes
        shown_used, shown_limit = f"{used:,} bytes", f"{limit:,} bytes"
    if used > limit:
        return CheckResult.failed(name, f"The backups are using too much storage. Current usage is {shown_used} "
                                        f"which is higher than the allowed limit of {shown_limit}.")
    return CheckResult.passed(name, f"The backups use {shown_used} of the allowed {shown_limit}.")


def check_newest_intact(snapshot: DestinationSnapshot) -> CheckResult:
    """The newest archive is the one published: nothing contradicts its receipt, and its members check out.

    An archive that backup-ops did not write (laravel-backup's: no receipt, no manifest.json) has
    nothing to be checked against and passes; one that backup-ops wrote must be provable.
    """
    name = "newest_intact"
    if not snapshot.backups:
        return CheckResult.skipped(name, "There is no backup to check.")
    newest = snapshot.newest
    if newest is None:
        return CheckResult.failed(name, f"The newest backup {snapshot.backups[0].path} could not be checked: "
                                        f"{snapshot.newest_error or 'no check result'}")
    integrity, members = newest.integrity, newest.members
    if integrity.state is Integrity.DAMAGED:
        return CheckResult.failed(name, f"The newest backup {newest.path} is damaged: {integrity.detail}; it "
                                        "protects nothing.")
    if members.state == "failed":
        return CheckResult.failed(name, f"The members of the newest backup {newest.path} do not check out: "
                                        f"{members.detail}")
    if integrity.state is Integrity.UNVERIFIED:
        if newest.made_by_backup_ops:
            inside = " (its members do match its manifest)" if members.state == "ok" else ""
            return CheckResult.failed(
                name, f"The newest backup {newest.path} was written by backup-ops but cannot be verified "
                      f"({integrity.detail}){inside}: backup-ops writes a receipt with every archive and removes "
                      "it only with the archive, so something outside backup-ops changed this destination."
            )
        return CheckResult.passed(name, f"The newest backup {newest.path} is unverified ({integrity.detail}); it was "
                                        "not written by backup-ops, so there is nothing to check it against.")
    return CheckResult.passed(name, f"The newest backup {newest.path} is intact: {integrity.detail}; "
                                    f"{members.detail}.")


def check_restore_drill(snapshot: DestinationSnapshot, max_age_days: int | None, now: datetime) -> CheckResult:
    """The newest successful restore drill from this destination finished less than ``max_age_days`` ago."""
    name = "restore_drill_fresh"
    if max_age_days is None:
        return CheckResult.skipped(name, "Restore drills are not checked (monitor.restore_drill_max_age_days is "
                                         "null).")
    if snapshot.drill_error is not None:
        return CheckResult.failed(name, f"The restore-drill reports could not be read: {snapshot.drill_error}")
    reports = sorted(snapshot.drill_reports, key=lambda r: r.finished_at, reverse=True)
    if not reports:
        return CheckResult.skipped(name, f"No restore-drill report under {snapshot.backup_name}/"
                                         f"{DRILL_REPORTS_FOLDER}/ yet; this check starts with the first drill.")
    latest = reports[0]
    success = next((r for r in reports if r.succeeded), None)
    if success is None:
        return CheckResult.failed(name, f"No restore drill from this destination has succeeded yet: the newest, of "
                                        f"{latest.archive} on {format_date(latest.finished_at)}, failed: "
                                        f"{latest.error or 'its report names no error'}")
    age = now - success.finished_at
    later_failure = "" if latest.succeeded else (
        f" A later drill, of {latest.archive} on {format_date(latest.finished_at)}, failed: "
        f"{latest.error or 'its report names no error'}")
    if age >= timedelta(days=max_age_days):
        return CheckResult.failed(name, f"The newest successful restore drill finished on "
                                        f"{format_date(success.finished_at)}, {_days(age):.1f} days ago, longer ago "
                                        f"than monitor.restore_drill_max_age_days ({max_age_days}): run the "
                                        f"restore_drill DAG.{later_failure}")
    rto = f", RTO {success.rto_seconds:.0f} s" if success.rto_seconds is not None else ""
    return CheckResult.passed(name, f"The newest successful restore drill restored {success.archive} on "
                                    f"{format_date(success.finished_at)} ({max(0.0, _days(age)):.1f} days ago"
                                    f"{rto}).{later_failure}")


def run_custom_check(spec: CustomCheckSpec, snapshot: DestinationSnapshot, now: datetime) -> CheckResult:
    """Import, build and run one configured check; any failure on the way is a failed check naming the class."""
    name = _custom_name(spec.class_path)
    try:
        module_name, _, class_name = spec.class_path.rpartition(".")
        check_class = getattr(importlib.import_module(module_name), class_name)
        name = _check_name(check_class, name)
        check = check_class(**dict(spec.options))
    except Exception as exc:
        return CheckResult.failed(name, f"The custom check {spec.class_path} cannot be loaded: "
                                        f"{type(exc).__name__}: {exc}")
    try:
        result = check.check(snapshot, now)
    except HealthCheckFailed as exc:
        return CheckResult.failed(name, str(exc))
    except Exception as exc:
        return CheckResult.failed(name, f"The custom check {spec.class_path} raised {type(exc).__name__}: {exc}")
    if not isinstance(result, CheckResult):
        return CheckResult.failed(name, f"The custom check {spec.class_path} returned {type(result).__name__}, "
                                        "not a CheckResult.")
    return replace(result, name=name)


# ---------------------------------------------------------------------------- wording


def format_date(moment: datetime) -> str:
    """``2026-11-26 02:00:00 UTC``: 24-hour and in UTC (laravel-backup's ``Y/m/d h:i:s`` has no AM/PM)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _days(delta: timedelta) -> float:
    return delta.total_seconds() / 86400


def _day_count(days: float) -> str:
    return f"{days:g} day" if days == 1 else f"{days:g} days"


def _custom_name(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def _check_name(check_class: Any, default: str) -> str:
    """A custom check's name: its ``name`` attribute when it is a non-empty string, else its class name."""
    name = getattr(check_class, "name", None)
    return name if isinstance(name, str) and name.strip() else default
