"""Which backups to keep and which to delete: laravel-backup's ``DefaultStrategy``, as a pure function.

``plan_cleanup`` reproduces laravel-backup v10's default cleanup strategy decision for decision,
quirks included, so a team moving off laravel-backup keeps exactly the same backups. It only
*plans*: it reads no clock (``now`` is a parameter, the run's logical date), touches no storage
and never imports Airflow. Every backup in the plan carries the rule that kept or deleted it.

The algorithm, newest backup first:

1. The newest backup is set aside: no rule ever deletes it, but its size counts toward the
   storage limit.
2. Four periods are measured back from ``now``: daily, weekly, monthly, yearly. Each starts where
   the previous one ends and both ends are inclusive, so a backup exactly on a shared boundary
   belongs to two periods. Backups newer than the daily period (the keep-all window) are left alone.
3. Within each period, backups are grouped by calendar day, week, month or year; the newest of each
   group is kept and the rest are deleted. Periods are processed daily → weekly → monthly → yearly
   and a deletion is final.
4. Everything strictly older than the end of the yearly period is deleted.
5. While the remaining backups (newest included) use more than the storage limit, the oldest
   remaining one is deleted.

On top of that, ``min_backups_kept`` is a floor that no rule goes below. See docs/retention.md.

Integrity facts, when the caller passes them (``plan_cleanup(..., integrity=checks)``), come first:
a damaged archive (its size or SHA-256 contradicts its receipt) is set aside before any rule runs,
kept for a human and never counted as a backup, so the rules above apply to the others; and the
newest archive known to be intact is never deleted, even when an unverified one is newer. The
facts are gathered by the caller (the cleanup step asks the destination); this module does no I/O.
"""

from __future__ import annotations

import calendar
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

from backup_ops.core.errors import ConfigError
from backup_ops.core.models import ArchiveIntegrity, BackupFile

__all__ = [
    "CleanupPlan",
    "RetentionPeriod",
    "RetentionPolicy",
    "plan_cleanup",
    "subtract_months",
    "subtract_years",
]

MEBIBYTE = 1024 * 1024

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = timedelta(seconds=1)
# A boundary that would fall before year 1 is clamped here: nothing can be older than it anyway.
_EARLIEST = datetime.min.replace(tzinfo=UTC)

REASON_NEWEST = "newest"
REASON_KEEP_ALL = "keep-all window"
REASON_FLOOR = "min_backups_kept floor"
REASON_NEWEST_INTACT = "newest intact backup"
REASON_DAMAGED = "damaged, kept for a human"


# ---------------------------------------------------------------------------- calendar arithmetic


def subtract_months(moment: datetime, months: int) -> datetime:
    """``moment`` minus ``months`` calendar months, overflowing like PHP/Carbon's ``subMonths``.

    The day of month and the wall-clock time are kept; a day that does not exist in the target
    month spills over into the next month instead of being clipped to the month's last day:
    2016-06-30 − 4 months is "2016-02-30", which is 2016-03-01 (``dateutil`` would say 02-29).
    laravel-backup measures its monthly and yearly periods this way, so we must too.

    Raises OverflowError when the result would fall before year 1.
    """
    if months < 0:
        raise ValueError(f"months must be ≥ 0, got {months}.")
    month_index = moment.year * 12 + (moment.month - 1) - months
    year, month_zero_based = divmod(month_index, 12)
    if year < 1:
        raise OverflowError(f"{moment.isoformat()} minus {months} months is before year 1.")
    month = month_zero_based + 1
    days_in_month = calendar.monthrange(year, month)[1]
    spill_over = max(0, moment.day - days_in_month)
    return moment.replace(year=year, month=month, day=moment.day - spill_over) + timedelta(days=spill_over)


def subtract_years(moment: datetime, years: int) -> datetime:
    """``moment`` minus ``years`` years, overflowing like Carbon's ``subYears`` (Feb 29 − 1 year = Mar 1)."""
    if years < 0:
        raise ValueError(f"years must be ≥ 0, got {years}.")
    return subtract_months(moment, years * 12)


def _earlier(moment: datetime, step: Callable[[datetime], datetime]) -> datetime:
    """Apply ``step``, clamping to the earliest representable instant instead of overflowing."""
    try:
        return step(moment)
    except OverflowError:
        return _EARLIEST


# ---------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class RetentionPolicy:
    """How many backups to keep per period, and the storage limit; laravel-backup's defaults.

    ``delete_oldest_backups_when_using_more_megabytes_than`` is in MiB (laravel-backup's
    "megabytes" are 1024 × 1024 bytes); ``None`` means no limit. ``min_backups_kept`` is our own
    safety floor, not part of laravel-backup.
    """

    keep_all_backups_for_days: int = 7
    keep_daily_backups_for_days: int = 16
    keep_weekly_backups_for_weeks: int = 8
    keep_monthly_backups_for_months: int = 4
    keep_yearly_backups_for_years: int = 2
    delete_oldest_backups_when_using_more_megabytes_than: int | None = 5000
    min_backups_kept: int = 1

    def __post_init__(self) -> None:
        for name in (
            "keep_all_backups_for_days",
            "keep_daily_backups_for_days",
            "keep_weekly_backups_for_weeks",
            "keep_monthly_backups_for_months",
            "keep_yearly_backups_for_years",
        ):
            _require_int(name, getattr(self, name), minimum=0)
        limit = self.delete_oldest_backups_when_using_more_megabytes_than
        if limit is not None:
            _require_int(
                "delete_oldest_backups_when_using_more_megabytes_than", limit, minimum=1, accepts_none=True
            )
        _require_int("min_backups_kept", self.min_backups_kept, minimum=1)

    @classmethod
    def from_settings(cls, settings: Any) -> RetentionPolicy:
        """Build a policy from any object with the same attribute names (e.g. config's ``RetentionSettings``).

        ``min_backups_kept`` may be absent (it is our addition); every other field is required so a
        wrong object fails loudly instead of silently getting laravel-backup's defaults.
        """
        values: dict[str, Any] = {}
        for item in fields(cls):
            if hasattr(settings, item.name):
                values[item.name] = getattr(settings, item.name)
            elif item.name != "min_backups_kept":
                raise ConfigError(
                    f"RetentionPolicy.from_settings: {type(settings).__name__} has no attribute {item.name!r}; "
                    f"expected the fields of RetentionPolicy ({', '.join(f.name for f in fields(cls))})."
                )
        return cls(**values)

    @property
    def storage_limit_bytes(self) -> int | None:
        """The storage limit in bytes, or None when there is none."""
        limit = self.delete_oldest_backups_when_using_more_megabytes_than
        return None if limit is None else limit * MEBIBYTE

    def periods(self, now: datetime) -> tuple[RetentionPeriod, ...]:
        """The daily, weekly, monthly and yearly periods measured back from ``now``, newest first.

        Days and weeks are wall-clock arithmetic in ``now``'s time zone, months and years overflow
        like Carbon; each period starts exactly where the previous one ends.
        """
        _require_aware("now", now)
        daily_start = _earlier(now, lambda m: m - timedelta(days=self.keep_all_backups_for_days))
        daily_end = _earlier(daily_start, lambda m: m - timedelta(days=self.keep_daily_backups_for_days))
        weekly_end = _earlier(daily_end, lambda m: m - timedelta(weeks=self.keep_weekly_backups_for_weeks))
        monthly_end = _earlier(weekly_end, lambda m: subtract_months(m, self.keep_monthly_backups_for_months))
        yearly_end = _earlier(monthly_end, lambda m: subtract_years(m, self.keep_yearly_backups_for_years))
        return (
            RetentionPeriod("daily", daily_start, daily_end),
            RetentionPeriod("weekly", daily_end, weekly_end),
            RetentionPeriod("monthly", weekly_end, monthly_end),
            RetentionPeriod("yearly", monthly_end, yearly_end),
        )

    def describe(self) -> str:
        """One human-readable paragraph saying what this policy keeps and deletes."""
        tiers = [
            (self.keep_daily_backups_for_days, "day", "day", "days"),
            (self.keep_weekly_backups_for_weeks, "week (calendar year + ISO week)", "week", "weeks"),
            (self.keep_monthly_backups_for_months, "month", "month", "months"),
            (self.keep_yearly_backups_for_years, "year", "year", "years"),
        ]
        thinning = [f"each {group} for {_count(n, one, many)}" for n, group, one, many in tiers if n > 0]
        keep_all = self.keep_all_backups_for_days
        sentences = [
            f"Keep every backup from the last {_count(keep_all, 'day', 'days')}" if keep_all
            else "Keep no backup just for being recent"
        ]
        if thinning:
            sentences[0] += "; before that, keep only the newest backup of " + _join(thinning)
        sentences[0] += "; delete everything older."
        limit = self.delete_oldest_backups_when_using_more_megabytes_than
        if limit is None:
            sentences.append("There is no storage limit.")
        else:
            sentences.append(f"Then delete the oldest backups while all backups together use more than {limit} MB.")
        floor = f", and at least {self.min_backups_kept} backups are always kept" if self.min_backups_kept > 1 else ""
        sentences.append(f"The newest backup is never deleted{floor}.")
        return " ".join(sentences)


def _require_int(name: str, value: object, minimum: int, accepts_none: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        accepted = f"a whole number ≥ {minimum}" + (" or None (no limit)" if accepts_none else "")
        raise ConfigError(f"RetentionPolicy.{name} must be {accepted}, got {value!r}.")


def _require_aware(name: str, moment: datetime) -> None:
    # Comparing naive and aware datetimes fails deep inside the plan; say so up front instead.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be a time-zone-aware datetime (UTC), got naive {moment.isoformat()}.")


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


LARAVEL_BACKUP_DEFAULTS = RetentionPolicy()
"""laravel-backup's own ``cleanup.default_strategy`` (RetentionPolicy's field defaults); backup-ops'
config ships longer ones (``backup_ops.core.config.RetentionSettings``, from the deployment it replaces)."""


# ---------------------------------------------------------------------------- periods


def _day_key(moment: datetime) -> str:
    return f"{moment.year:04d}{moment.month:02d}{moment.day:02d}"


def _week_key(moment: datetime) -> str:
    # PHP's date('YW'): *calendar* year + *ISO* week, so an ISO week spanning New Year splits
    # into two groups (201553 and 201653). Using the ISO year (%G) would merge them and keep fewer.
    return f"{moment.year:04d}{moment.isocalendar().week:02d}"


def _month_key(moment: datetime) -> str:
    return f"{moment.year:04d}{moment.month:02d}"


def _year_key(moment: datetime) -> str:
    return f"{moment.year:04d}"


_GROUP_KEYS: dict[str, Callable[[datetime], str]] = {
    "daily": _day_key,
    "weekly": _week_key,
    "monthly": _month_key,
    "yearly": _year_key,
}


@dataclass(frozen=True)
class RetentionPeriod:
    """One thinning period: backups dated from ``end`` (older) to ``start`` (newer), both inclusive."""

    name: str
    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        """Whether ``moment`` lies in this period; inclusive at both ends, like Carbon's ``between``."""
        return self.end <= moment <= self.start


# ---------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class CleanupPlan:
    """The decision for every backup: what to keep, what to delete, and the rule behind each.

    ``keep`` and ``delete`` are newest first; ``reasons`` maps every input path to its rule, also
    newest first, so ``describe_lines`` reads like a dry run.
    """

    keep: list[BackupFile]
    delete: list[BackupFile]
    reasons: dict[str, str]
    periods: tuple[RetentionPeriod, ...] = ()

    @property
    def bytes_freed(self) -> int:
        """Bytes the deletions free."""
        return sum(backup.size for backup in self.delete)

    @property
    def bytes_kept(self) -> int:
        """Bytes the kept backups still use."""
        return sum(backup.size for backup in self.keep)

    def describe_lines(self) -> list[str]:
        """One log line per backup, newest first: ``Keeping <path> (rule: daily 20151225)``."""
        deleted = {backup.path for backup in self.delete}
        return [
            f"{'Deleting' if path in deleted else 'Keeping'} {path} (rule: {reason})"
            for path, reason in self.reasons.items()
        ]


def plan_cleanup(backups: Sequence[BackupFile], policy: RetentionPolicy, now: datetime,
                 integrity: Sequence[ArchiveIntegrity] = ()) -> CleanupPlan:
    """Decide which backups to keep and which to delete, exactly as laravel-backup's ``DefaultStrategy``.

    ``now`` is the moment the periods are measured from (the run's logical date, never the clock),
    so re-planning the same backups for the same ``now`` decides the same. Raises ValueError for
    duplicate paths, negative sizes or naive datetimes.

    ``integrity`` is what checking some of the archives against their receipts showed. A damaged
    archive is kept (reason ``damaged, kept for a human: …``) and otherwise ignored: it is not the
    newest, does not count toward the storage limit or ``min_backups_kept``, and protects nothing.
    The newest archive checked intact is never deleted (``newest intact backup (instead of: …)``),
    even when that exceeds the storage limit. Without ``integrity`` the plan is laravel-backup's.
    """
    _require_aware("now", now)
    _check_backups(backups)
    periods = policy.periods(now)
    checks = {check.path: check for check in integrity}
    # Newest first by whole seconds, ties in input order: laravel-backup sorts by the integer
    # timestamp with PHP's stable sort, and which of two same-second backups counts as "newest"
    # decides which one survives.
    ordered = sorted(backups, key=lambda backup: -((backup.date - _EPOCH) // _ONE_SECOND))
    candidates = [b for b in ordered if not (b.path in checks and checks[b.path].damaged)]
    newest_intact = next((i for i, b in enumerate(candidates) if b.path in checks and checks[b.path].intact), None)
    decisions = _decide(candidates, policy, periods, newest_intact)
    deleted = {candidates[i].path for i in range(len(candidates)) if decisions.deleted[i]}
    rules = {candidates[i].path: decisions.reason(i) for i in range(len(candidates))}
    return CleanupPlan(
        keep=[b for b in ordered if b.path not in deleted],
        delete=[b for b in ordered if b.path in deleted],
        reasons={b.path: rules.get(b.path) or f"{REASON_DAMAGED}: {checks[b.path].detail}" for b in ordered},
        periods=periods,
    )


def _decide(ordered: list[BackupFile], policy: RetentionPolicy, periods: tuple[RetentionPeriod, ...],
            newest_intact: int | None) -> _Decisions:
    """Apply the rules to ``ordered`` (newest first, damaged archives already set aside)."""
    decisions = _Decisions(len(ordered))
    if not ordered:
        return decisions
    decisions.keep(0, REASON_NEWEST)
    rest = range(1, len(ordered))
    for index in rest:
        if ordered[index].date > periods[0].start:
            decisions.keep(index, REASON_KEEP_ALL)
    for period in periods:
        _thin_period(ordered, rest, period, decisions)
    _delete_older_than(ordered, rest, periods[-1].end, decisions)
    _enforce_storage_limit(ordered, policy.storage_limit_bytes, decisions)
    if newest_intact is not None and decisions.deleted[newest_intact]:
        # An unverified archive is newer: it may be good, but only this one is known to be.
        decisions.restore(newest_intact, f"{REASON_NEWEST_INTACT} (instead of: {decisions.reason(newest_intact)})")
    _apply_floor(ordered, policy.min_backups_kept, decisions)
    return decisions


class _Decisions:
    """Per-position keep/delete state while planning; a deletion is final, as on a real disk."""

    def __init__(self, size: int) -> None:
        self.deleted = [False] * size
        self._reasons: list[str | None] = [None] * size

    def keep(self, index: int, reason: str) -> None:
        # The first rule that keeps a backup explains it; later groups that also keep it add nothing.
        if not self.deleted[index] and self._reasons[index] is None:
            self._reasons[index] = reason

    def delete(self, index: int, reason: str) -> None:
        # laravel-backup deletes an already deleted file harmlessly; the first deletion is the rule.
        if not self.deleted[index]:
            self.deleted[index] = True
            self._reasons[index] = reason

    def restore(self, index: int, reason: str) -> None:
        self.deleted[index] = False
        self._reasons[index] = reason

    def reason(self, index: int) -> str:
        reason = self._reasons[index]
        if reason is None:  # every position is decided by the rules above; this would be a bug
            raise RuntimeError(f"retention plan left backup #{index} without a decision.")
        return reason


def _check_backups(backups: Sequence[BackupFile]) -> None:
    if len({backup.path for backup in backups}) != len(backups):
        duplicate = next(path for path, n in Counter(b.path for b in backups).items() if n > 1)
        raise ValueError(f"Backup paths must be unique, but {duplicate!r} is listed more than once.")
    for backup in backups:
        if backup.date.utcoffset() is None:
            _require_aware(f"date of {backup.path!r}", backup.date)
        if backup.size < 0:
            raise ValueError(f"Backup sizes must be ≥ 0, but {backup.path!r} has size {backup.size}.")


def _thin_period(ordered: list[BackupFile], rest: range, period: RetentionPeriod, decisions: _Decisions) -> None:
    """Keep the newest backup of each calendar group in ``period``; delete the others.

    Quirk kept from laravel-backup: a group's newest backup is its representative even when an
    earlier period already deleted it (possible only for a backup exactly on a period boundary).
    No substitute is chosen, so the group keeps nothing and its other members are still deleted.
    """
    representatives: dict[str, int] = {}
    start, end, group_key = period.start, period.end, _GROUP_KEYS[period.name]
    for index in rest:
        moment = ordered[index].date
        if not end <= moment <= start:  # period.contains, inlined: this loop runs 4n times
            continue
        key = group_key(moment)
        group = f"{period.name} {key}"
        first = representatives.setdefault(key, index)
        if first == index:
            decisions.keep(index, group)
            continue
        superseded = f"superseded in {group} by {ordered[first].path}"
        if decisions.deleted[first]:
            superseded += " (itself deleted by an earlier rule)"
        decisions.delete(index, superseded)


def _delete_older_than(ordered: list[BackupFile], rest: range, cutoff: datetime, decisions: _Decisions) -> None:
    """Delete every backup strictly older than the end of the yearly period."""
    reason = f"older than the yearly period (before {_format_instant(cutoff)})"
    for index in rest:
        if ordered[index].date < cutoff:
            decisions.delete(index, reason)


def _enforce_storage_limit(ordered: list[BackupFile], limit_bytes: int | None, decisions: _Decisions) -> None:
    """Delete the oldest remaining backups while all remaining ones, newest included, exceed the limit.

    Strictly greater: using exactly the limit is allowed. The newest backup is never a candidate,
    so it alone may exceed the limit.
    """
    if limit_bytes is None:
        return
    used = sum(ordered[i].size for i in range(len(ordered)) if not decisions.deleted[i])
    reason = f"storage limit {limit_bytes // MEBIBYTE} MB exceeded"
    for index in range(len(ordered) - 1, 0, -1):
        if used <= limit_bytes:
            return
        if not decisions.deleted[index]:
            decisions.delete(index, reason)
            used -= ordered[index].size


def _apply_floor(ordered: list[BackupFile], min_kept: int, decisions: _Decisions) -> None:
    """Take back the newest deletions until at least ``min_kept`` backups remain (our safety floor)."""
    missing = min_kept - decisions.deleted.count(False)
    for index in range(len(ordered)):
        if missing <= 0:
            return
        if decisions.deleted[index]:
            decisions.restore(index, f"{REASON_FLOOR} (instead of: {decisions.reason(index)})")
            missing -= 1


def _format_instant(moment: datetime) -> str:
    """``2013-06-14 22:00`` (seconds only when set, offset only when not UTC); years zero-padded."""
    text = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d} {moment.hour:02d}:{moment.minute:02d}"
    if moment.second or moment.microsecond:
        text += f":{moment.second:02d}"
    offset = moment.utcoffset()
    return f"{text} {moment.strftime('%z')}" if offset else text
