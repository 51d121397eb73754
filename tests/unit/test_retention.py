"""Table tests for the retention core: laravel-backup's own cleanup scenarios, its quirks, and our additions.

Every plan in this file goes through ``checked_plan``, which asserts the invariants (keep ∪ delete =
input, disjoint, newest kept, one reason per backup, deterministic under reordering) on every case.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from backup_ops.core.cleanup_guard import refusal_reason
from backup_ops.core.config import RetentionSettings
from backup_ops.core.errors import ConfigError
from backup_ops.core.models import ArchiveIntegrity, BackupFile, Integrity
from backup_ops.core.retention import (
    CleanupPlan,
    RetentionPeriod,
    RetentionPolicy,
    plan_cleanup,
    subtract_months,
    subtract_years,
)

MIB = 1024 * 1024
# laravel-backup's cleanup tests freeze the clock here.
NOW = datetime(2016, 1, 1, 22, 0, tzinfo=UTC)

_KEEP_REASON = re.compile(
    r"newest|keep-all window|daily \d{8}|weekly \d{6}|monthly \d{6}|yearly \d{4}"
    r"|min_backups_kept floor \(instead of: .+\)"
)
_DELETE_REASON = re.compile(
    r"superseded in (daily \d{8}|weekly \d{6}|monthly \d{6}|yearly \d{4}) by \S+"
    r"( \(itself deleted by an earlier rule\))?"
    r"|older than the yearly period \(before \d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)?( [+-]\d{4})?\)"
    r"|storage limit \d+ MB exceeded"
)


def totals(plan: CleanupPlan) -> dict[str, int]:
    """Counts and bytes of a plan, for one-line assertions."""
    return {"kept": len(plan.keep), "deleted": len(plan.delete), "bytes_kept": plan.bytes_kept,
            "bytes_freed": plan.bytes_freed}


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def backup(path: str, date: datetime, size: int = MIB) -> BackupFile:
    return BackupFile(path=path, date=date, size=size)


def days_ago(days: int, path: str, size: int = MIB) -> BackupFile:
    return backup(path, NOW - timedelta(days=days), size)


def paths(items: Sequence[BackupFile]) -> set[str]:
    return {b.path for b in items}


def _whole_seconds(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)


def checked_plan(
    backups: Sequence[BackupFile], policy: RetentionPolicy | None = None, now: datetime = NOW
) -> CleanupPlan:
    """Plan, then assert every invariant a plan must satisfy whatever the input."""
    policy = policy or RetentionPolicy()
    plan = plan_cleanup(backups, policy, now)
    by_path = {b.path: b for b in backups}

    # keep ∪ delete = input, disjoint, nothing invented or lost
    assert len(plan.keep) + len(plan.delete) == len(backups)
    assert paths(plan.keep) | paths(plan.delete) == set(by_path)
    assert not paths(plan.keep) & paths(plan.delete)
    assert all(by_path[b.path] is b for b in [*plan.keep, *plan.delete])

    # one well-formed reason per backup
    assert set(plan.reasons) == set(by_path)
    for b in plan.keep:
        assert _KEEP_REASON.fullmatch(plan.reasons[b.path]), plan.reasons[b.path]
    for b in plan.delete:
        assert _DELETE_REASON.fullmatch(plan.reasons[b.path]), plan.reasons[b.path]

    if backups:
        # newest = first by whole seconds, ties in input order (PHP's stable sort)
        newest = min(enumerate(backups), key=lambda item: (-_whole_seconds(item[1].date), item[0]))[1]
        assert newest in plan.keep
        assert plan.reasons[newest.path] == "newest"
        assert len(plan.keep) >= min(policy.min_backups_kept, len(backups))

    # both lists newest first
    for items in (plan.keep, plan.delete):
        stamps = [_whole_seconds(b.date) for b in items]
        assert stamps == sorted(stamps, reverse=True)

    # the storage limit holds unless only the newest is left or the floor overrode it
    limit = policy.storage_limit_bytes
    floor_used = any(r.startswith("min_backups_kept floor") for r in plan.reasons.values())
    if limit is not None and not floor_used:
        assert plan.bytes_kept <= limit or len(plan.keep) == 1
        # and it only ever deletes backups older than everything it keeps (the newest aside)
        storage_deleted = [b for b in plan.delete if plan.reasons[b.path].startswith("storage limit")]
        kept_rest = [b for b in plan.keep if plan.reasons[b.path] != "newest"]
        if storage_deleted and kept_rest:
            newest_storage_deletion = max(_whole_seconds(b.date) for b in storage_deleted)
            assert newest_storage_deletion <= min(_whole_seconds(b.date) for b in kept_rest)

    # reporting helpers agree with the lists
    total = sum(b.size for b in backups)
    assert plan.bytes_kept + plan.bytes_freed == total
    assert totals(plan) == {
        "kept": len(plan.keep), "deleted": len(plan.delete),
        "bytes_kept": plan.bytes_kept, "bytes_freed": plan.bytes_freed,
    }
    lines = plan.describe_lines()
    assert len(lines) == len(backups)
    deleted = paths(plan.delete)
    for line, (path, reason) in zip(lines, plan.reasons.items(), strict=True):
        verb = "Deleting" if path in deleted else "Keeping"
        assert line == f"{verb} {path} (rule: {reason})"

    # deterministic: same input → same plan; reordered input → same plan when no two backups share
    # a second (within a second, listing order legitimately decides which counts as newer)
    assert plan_cleanup(list(backups), policy, now) == plan
    if len({_whole_seconds(b.date) for b in backups}) == len(backups):
        for seed in (1, 2):
            shuffled = list(backups)
            random.Random(seed).shuffle(shuffled)
            assert plan_cleanup(shuffled, policy, now) == plan
        assert plan_cleanup(list(reversed(backups)), policy, now) == plan
    return plan


# ---------------------------------------------------------------------------- ported from laravel-backup
# tests/Commands/CleanupCommandTest.php (now = 2016-01-01 22:00, 1 MiB files dated by mtime).


class TestLaravelBackupCleanupScenarios:
    def test_removes_oldest_backups_until_within_storage_limit(self) -> None:
        backups = [days_ago(n, f"mysite/test{n}.zip") for n in (1, 2, 3, 4)]
        plan = checked_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=2))
        assert paths(plan.keep) == {"mysite/test1.zip", "mysite/test2.zip"}
        assert plan.reasons["mysite/test4.zip"] == "storage limit 2 MB exceeded"

    def test_three_backups_with_two_megabyte_limit_keep_two(self) -> None:
        backups = [days_ago(n, f"mysite/test{n}.zip") for n in (1, 2, 3)]
        plan = checked_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=2))
        assert paths(plan.keep) == {"mysite/test1.zip", "mysite/test2.zip"}
        assert paths(plan.delete) == {"mysite/test3.zip"}

    def test_used_storage_after_cleanup_is_four_megabytes(self) -> None:
        backups = [days_ago(n, f"mysite/test{n}.zip") for n in range(1, 11)]
        plan = checked_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=4))
        assert paths(plan.keep) == {f"mysite/test{n}.zip" for n in (1, 2, 3, 4)}
        assert plan.bytes_kept == 4 * MIB
        assert totals(plan) == {"kept": 4, "deleted": 6, "bytes_kept": 4 * MIB, "bytes_freed": 6 * MIB}

    def test_never_deletes_the_newest_backup(self) -> None:
        # now()->subYears(5..10): all far older than the yearly period
        backups = [backup(f"mysite/test_{2016 - n}0101.zip", at(2016 - n, 1, 1, 22)) for n in range(5, 11)]
        plan = checked_plan(backups)
        assert [b.path for b in plan.keep] == ["mysite/test_20110101.zip"]
        assert plan.reasons["mysite/test_20110101.zip"] == "newest"
        for n in range(6, 11):
            assert plan.reasons[f"mysite/test_{2016 - n}0101.zip"] == (
                "older than the yearly period (before 2013-06-14 22:00)"
            )

    def test_removes_old_backups_from_the_backup_directory(self) -> None:
        # Two backups per day for 1000 days: "first" at 22:00, "second" two hours later, i.e. at
        # 00:00 of the next day while still named after the previous one.
        backups = []
        for n in range(1, 1001):
            day = NOW - timedelta(days=n)
            backups.append(backup(f"mysite/test_{day:%Y%m%d}_first.zip", day, 0))
            backups.append(backup(f"mysite/test_{day:%Y%m%d}_second.zip", day + timedelta(hours=2), 0))
        survivors = {
            "20131231_first", "20141231_first", "20150630_first", "20150731_first", "20150831_first",
            "20150930_first", "20151018_first", "20151025_first", "20151101_first", "20151108_first",
            "20151115_first", "20151122_first", "20151129_first", "20151206_first",
            *(f"201512{d:02d}_first" for d in range(9, 26)),
            *(f"201512{d:02d}_second" for d in range(25, 32)),
            *(f"201512{d:02d}_first" for d in range(26, 32)),
        }  # upstream's list also names 20160101_* files, which that test never creates
        plan = checked_plan(backups)
        assert paths(plan.keep) == {f"mysite/test_{s}.zip" for s in survivors}
        assert len(plan.keep) == 44


# ---------------------------------------------------------------------------- periods and boundaries


class TestPeriods:
    def test_default_boundaries_match_laravel_backup(self) -> None:
        assert RetentionPolicy().periods(NOW) == (
            RetentionPeriod("daily", at(2015, 12, 25, 22), at(2015, 12, 9, 22)),
            RetentionPeriod("weekly", at(2015, 12, 9, 22), at(2015, 10, 14, 22)),
            RetentionPeriod("monthly", at(2015, 10, 14, 22), at(2015, 6, 14, 22)),
            RetentionPeriod("yearly", at(2015, 6, 14, 22), at(2013, 6, 14, 22)),
        )

    def test_boundaries_are_inclusive_at_both_ends(self) -> None:
        daily, weekly, _, _ = RetentionPolicy().periods(NOW)
        shared = at(2015, 12, 9, 22)
        assert daily.contains(shared) and weekly.contains(shared)
        assert not daily.contains(shared - timedelta(seconds=1))
        assert not weekly.contains(at(2015, 12, 9, 22, 0, 1))

    def test_plan_carries_its_periods(self) -> None:
        assert checked_plan([]).periods == RetentionPolicy().periods(NOW)

    def test_backup_exactly_at_keep_all_boundary_is_thinned_as_daily(self) -> None:
        backups = [
            backup("newest.zip", at(2016, 1, 1, 21)),
            backup("just-inside-keep-all.zip", at(2015, 12, 25, 22, 0, 1)),
            backup("on-boundary.zip", at(2015, 12, 25, 22)),
            backup("same-day-earlier.zip", at(2015, 12, 25, 8)),
        ]
        plan = checked_plan(backups)
        assert plan.reasons == {
            "newest.zip": "newest",
            "just-inside-keep-all.zip": "keep-all window",
            "on-boundary.zip": "daily 20151225",
            "same-day-earlier.zip": "superseded in daily 20151225 by on-boundary.zip",
        }

    def test_backup_on_weekly_monthly_boundary_leaves_its_month_without_representative(self) -> None:
        # 2015-10-14 22:00 is both weekly.end and monthly.start. Weekly group 201542 deletes it (a newer
        # backup of that week exists); monthly group 201510 still picks it as its newest, "keeps" the
        # already deleted file and deletes the rest of October: October gets no monthly backup.
        backups = [
            backup("newest.zip", at(2016, 1, 1, 21)),
            backup("week42.zip", at(2015, 10, 18, 22)),
            backup("boundary.zip", at(2015, 10, 14, 22)),
            backup("early-october.zip", at(2015, 10, 5, 22)),
            backup("september.zip", at(2015, 9, 30, 22)),
        ]
        plan = checked_plan(backups)
        assert paths(plan.keep) == {"newest.zip", "week42.zip", "september.zip"}
        assert plan.reasons["boundary.zip"] == "superseded in weekly 201542 by week42.zip"
        assert plan.reasons["early-october.zip"] == (
            "superseded in monthly 201510 by boundary.zip (itself deleted by an earlier rule)"
        )
        assert plan.reasons["september.zip"] == "monthly 201509"

    def test_backup_on_daily_weekly_boundary_is_kept_by_both(self) -> None:
        backups = [
            backup("newest.zip", at(2016, 1, 1, 21)),
            backup("boundary.zip", at(2015, 12, 9, 22)),
            backup("same-week.zip", at(2015, 12, 8, 22)),
        ]
        plan = checked_plan(backups)
        assert plan.reasons["boundary.zip"] == "daily 20151209"  # first rule that keeps it
        assert plan.reasons["same-week.zip"] == "superseded in weekly 201550 by boundary.zip"

    def test_yearly_cutoff_is_strict(self) -> None:
        backups = [
            backup("newest.zip", at(2016, 1, 1, 21)),
            backup("at-cutoff.zip", at(2013, 6, 14, 22)),
            backup("before-cutoff.zip", at(2013, 6, 14, 21, 59, 59)),
        ]
        plan = checked_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=None))
        assert plan.reasons["at-cutoff.zip"] == "yearly 2013"
        assert plan.reasons["before-cutoff.zip"] == "older than the yearly period (before 2013-06-14 22:00)"

    def test_groups_use_each_backups_own_time_zone(self) -> None:
        # 23:30 at UTC−5 is already the next day in UTC; laravel-backup formats each date in its own zone.
        eastern = timezone(timedelta(hours=-5))
        backups = [
            backup("newest.zip", at(2016, 1, 1, 21)),
            backup("local-20th.zip", datetime(2015, 12, 20, 23, 30, tzinfo=eastern)),
            backup("utc-21st.zip", at(2015, 12, 21, 1)),
        ]
        plan = checked_plan(backups)
        assert plan.reasons["local-20th.zip"] == "daily 20151220"
        assert plan.reasons["utc-21st.zip"] == "daily 20151221"


class TestWeekKeys:
    def test_iso_week_spanning_new_year_splits_into_two_groups(self) -> None:
        # Daily backups at 12:00; with now = 2016-02-10 12:00 the turn of the year is in the weekly
        # period. ISO week 53 of 2015 runs 2015-12-28..2016-01-03, but the keys are calendar year + ISO
        # week: 201553 for the December days, 201653 for the January days, so both halves keep one.
        now = at(2016, 2, 10, 12)
        start = at(2015, 11, 1, 12)
        backups = [backup(f"b{d:%Y%m%d}.zip", d) for d in (start + timedelta(days=i) for i in range(101))]
        plan = checked_plan(backups, now=now)
        assert plan.reasons["b20151231.zip"] == "weekly 201553"
        assert plan.reasons["b20160103.zip"] == "weekly 201653"
        assert plan.reasons["b20151228.zip"] == "superseded in weekly 201553 by b20151231.zip"
        assert plan.reasons["b20160101.zip"] == "superseded in weekly 201653 by b20160103.zip"

    def test_last_days_of_december_in_iso_week_one_share_a_key_with_early_january(self) -> None:
        # 2018-12-31 is in ISO week 1 of 2019, so its key is 201801, the same as 2018-01-01..07.
        # Only reachable with a weekly window of about a year.
        policy = RetentionPolicy(keep_all_backups_for_days=0, keep_daily_backups_for_days=0,
                                 keep_weekly_backups_for_weeks=60)
        backups = [
            backup("newest.zip", at(2019, 2, 1)),
            backup("dec31.zip", at(2018, 12, 31, 12)),
            backup("jan03.zip", at(2018, 1, 3, 12)),
        ]
        plan = checked_plan(backups, policy, now=at(2019, 2, 1))
        assert plan.reasons["dec31.zip"] == "weekly 201801"
        assert plan.reasons["jan03.zip"] == "superseded in weekly 201801 by dec31.zip"


# ---------------------------------------------------------------------------- Carbon month arithmetic


class TestCarbonMonthArithmetic:
    @pytest.mark.parametrize(
        ("moment", "months", "expected"),
        [
            (at(2016, 6, 30, 22), 4, at(2016, 3, 1, 22)),  # "2016-02-30" overflows, not clipped to 02-29
            (at(2016, 3, 31), 1, at(2016, 3, 2)),  # "2016-02-31" in a leap year
            (at(2015, 3, 31), 1, at(2015, 3, 3)),  # "2015-02-31"
            (at(2016, 1, 31), 2, at(2015, 12, 1)),  # "2015-11-31", across the year
            (at(2016, 5, 31), 1, at(2016, 5, 1)),  # "2016-04-31"
            (at(2016, 1, 15, 7, 30), 1, at(2015, 12, 15, 7, 30)),
            (at(2016, 1, 15), 25, at(2013, 12, 15)),
            (at(2016, 2, 29), 12, at(2015, 3, 1)),
            (at(2016, 8, 17), 0, at(2016, 8, 17)),
        ],
    )
    def test_subtract_months_overflows_like_carbon(self, moment: datetime, months: int, expected: datetime) -> None:
        assert subtract_months(moment, months) == expected

    @pytest.mark.parametrize(
        ("moment", "years", "expected"),
        [
            (at(2016, 2, 29, 22), 1, at(2015, 3, 1, 22)),
            (at(2016, 2, 29), 4, at(2012, 2, 29)),
            (at(2015, 6, 14, 22), 2, at(2013, 6, 14, 22)),
            (at(2016, 1, 1), 0, at(2016, 1, 1)),
        ],
    )
    def test_subtract_years_overflows_like_carbon(self, moment: datetime, years: int, expected: datetime) -> None:
        assert subtract_years(moment, years) == expected

    def test_keeps_time_zone_and_wall_clock_time(self) -> None:
        zone = timezone(timedelta(hours=2))
        result = subtract_months(datetime(2016, 6, 30, 1, 2, 3, 4, tzinfo=zone), 4)
        assert result == datetime(2016, 3, 1, 1, 2, 3, 4, tzinfo=zone)
        assert result.tzinfo is zone

    def test_rejects_negative_amounts_and_years_before_one(self) -> None:
        with pytest.raises(ValueError, match="months must be ≥ 0"):
            subtract_months(NOW, -1)
        with pytest.raises(ValueError, match="years must be ≥ 0"):
            subtract_years(NOW, -1)
        with pytest.raises(OverflowError):
            subtract_years(NOW, 2016)

    def test_monthly_period_end_overflows_into_march(self) -> None:
        # monthly.end = 2016-06-30 − 4 months = 2016-03-01 (clipping would give 02-29), so a backup on
        # 2016-02-29 falls in the *yearly* period and loses to the March-1st backup of year 2016.
        policy = RetentionPolicy(keep_all_backups_for_days=0, keep_daily_backups_for_days=0,
                                 keep_weekly_backups_for_weeks=0, keep_monthly_backups_for_months=4,
                                 keep_yearly_backups_for_years=1)
        backups = [
            backup("newest.zip", at(2016, 6, 30)),
            backup("mar01.zip", at(2016, 3, 1)),
            backup("feb29.zip", at(2016, 2, 29, 12)),
        ]
        plan = checked_plan(backups, policy, now=at(2016, 6, 30))
        assert plan.periods[2].end == at(2016, 3, 1)
        assert plan.reasons["mar01.zip"] == "monthly 201603"
        assert plan.reasons["feb29.zip"] == "superseded in yearly 2016 by mar01.zip"

    def test_yearly_period_end_overflows_from_leap_day(self) -> None:
        # yearly.end = 2016-02-29 − 1 year = 2015-03-01, so 2015-02-28 is older than the yearly period.
        policy = RetentionPolicy(keep_all_backups_for_days=0, keep_daily_backups_for_days=0,
                                 keep_weekly_backups_for_weeks=0, keep_monthly_backups_for_months=0,
                                 keep_yearly_backups_for_years=1)
        backups = [backup("newest.zip", at(2016, 2, 28)), backup("old.zip", at(2015, 2, 28, 12))]
        plan = checked_plan(backups, policy, now=at(2016, 2, 29))
        assert plan.reasons["old.zip"] == "older than the yearly period (before 2015-03-01 00:00)"

    def test_huge_periods_clamp_instead_of_overflowing(self) -> None:
        policy = RetentionPolicy(keep_yearly_backups_for_years=5000)
        plan = checked_plan([backup("newest.zip", NOW), backup("ancient.zip", at(1, 1, 1, 12))], policy)
        assert plan.periods[-1].end == datetime.min.replace(tzinfo=UTC)
        assert plan.reasons["ancient.zip"] == "yearly 0001"


# ---------------------------------------------------------------------------- storage limit


class TestStorageLimit:
    def test_using_exactly_the_limit_deletes_nothing(self) -> None:
        backups = [days_ago(n, f"b{n}.zip") for n in (1, 2, 3)]
        plan = checked_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=3))
        assert plan.delete == []

    def test_loop_stops_as_soon_as_usage_equals_the_limit(self) -> None:
        backups = [
            days_ago(1, "newest.zip", 2 * MIB),
            days_ago(2, "b2.zip"),
            days_ago(3, "b3.zip"),
            days_ago(4, "b4.zip", MIB + 1),
        ]
        plan = checked_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=4))
        assert [b.path for b in plan.delete] == ["b4.zip"]
        assert plan.bytes_kept == 4 * MIB

    def test_one_byte_over_deletes_one_more(self) -> None:
        backups = [days_ago(1, "newest.zip", 2 * MIB + 1), days_ago(2, "b2.zip"), days_ago(3, "b3.zip")]
        plan = checked_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=4))
        assert [b.path for b in plan.delete] == ["b3.zip"]

    def test_newest_alone_may_exceed_the_limit(self) -> None:
        backups = [days_ago(1, "huge.zip", 10 * MIB), days_ago(2, "b2.zip"), days_ago(3, "b3.zip")]
        plan = checked_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=5))
        assert [b.path for b in plan.keep] == ["huge.zip"]
        assert plan.reasons["b2.zip"] == "storage limit 5 MB exceeded"

    def test_backups_deleted_by_rules_do_not_count(self) -> None:
        backups = [
            days_ago(1, "newest.zip"),
            days_ago(2, "b2.zip"),
            backup("same-day-big.zip", at(2015, 12, 20, 10), 50 * MIB),
            backup("day-rep.zip", at(2015, 12, 20, 20)),
        ]
        plan = checked_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=3))
        assert paths(plan.keep) == {"newest.zip", "b2.zip", "day-rep.zip"}
        assert plan.reasons["same-day-big.zip"] == "superseded in daily 20151220 by day-rep.zip"

    def test_no_limit_deletes_nothing_for_size(self) -> None:
        backups = [days_ago(n, f"b{n}.zip", 1000 * MIB) for n in range(1, 8)]
        plan = checked_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=None))
        assert plan.delete == []


# ---------------------------------------------------------------------------- min_backups_kept floor


class TestMinBackupsKeptFloor:
    def test_floor_keeps_back_the_newest_deletions(self) -> None:
        backups = [backup(f"y{2016 - n}.zip", at(2016 - n, 1, 1, 22)) for n in range(5, 11)]
        plan = checked_plan(backups, RetentionPolicy(min_backups_kept=3))
        assert [b.path for b in plan.keep] == ["y2011.zip", "y2010.zip", "y2009.zip"]
        assert plan.reasons["y2010.zip"] == (
            "min_backups_kept floor (instead of: older than the yearly period (before 2013-06-14 22:00))"
        )

    def test_floor_overrides_the_storage_limit(self) -> None:
        backups = [days_ago(n, f"b{n}.zip") for n in (1, 2, 3, 4)]
        policy = RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=1, min_backups_kept=3)
        plan = checked_plan(backups, policy)
        assert [b.path for b in plan.keep] == ["b1.zip", "b2.zip", "b3.zip"]
        assert plan.reasons["b4.zip"] == "storage limit 1 MB exceeded"

    def test_floor_above_the_number_of_backups_keeps_everything(self) -> None:
        backups = [backup(f"y{2016 - n}.zip", at(2016 - n, 1, 1, 22)) for n in range(5, 8)]
        plan = checked_plan(backups, RetentionPolicy(min_backups_kept=10))
        assert plan.delete == []

    def test_floor_does_nothing_when_enough_are_kept(self) -> None:
        backups = [days_ago(n, f"b{n}.zip") for n in (1, 2, 3)]
        plan = checked_plan(backups, RetentionPolicy(min_backups_kept=2))
        assert not any(r.startswith("min_backups_kept") for r in plan.reasons.values())


# ---------------------------------------------------------------------------- integrity facts (issue 8, point 1)


def intact(path: str) -> ArchiveIntegrity:
    return ArchiveIntegrity(path, Integrity.INTACT, "size and SHA-256 (hashed from the file) match the receipt")


def damaged(path: str) -> ArchiveIntegrity:
    return ArchiveIntegrity(path, Integrity.DAMAGED, "size differs: 512 bytes, but its receipt says 1048576")


def unverified(path: str) -> ArchiveIntegrity:
    return ArchiveIntegrity(path, Integrity.UNVERIFIED, "no receipt beside it")


def integrity_plan(backups: Sequence[BackupFile], policy: RetentionPolicy,
                   checks: Sequence[ArchiveIntegrity]) -> CleanupPlan:
    """Plan with integrity facts and assert what must hold whatever they say."""
    plan = plan_cleanup(backups, policy, NOW, checks)
    assert paths(plan.keep) | paths(plan.delete) == paths(backups) and not paths(plan.keep) & paths(plan.delete)
    assert set(plan.reasons) == paths(backups)
    bad = {c.path for c in checks if c.damaged}
    assert bad <= paths(plan.keep), "a damaged archive is never deleted silently"
    for path in bad:
        assert plan.reasons[path].startswith("damaged, kept for a human: ")
    good = [b for b in sorted(backups, key=lambda b: b.date, reverse=True)
            if b.path in {c.path for c in checks if c.intact}]
    if good:
        assert good[0] in plan.keep, "the newest intact backup is never deleted"
    assert plan_cleanup(list(reversed(backups)), policy, NOW, checks) == plan
    return plan


class TestIntegrity:
    def test_a_truncated_newest_backup_does_not_cost_the_intact_ones(self) -> None:
        # Issue 8, point 1: with a storage cap, laravel-backup's rules keep the newest (truncated)
        # archive and delete every intact one to make room for it.
        backups = [days_ago(1, "b1.zip", size=MIB // 2), days_ago(2, "b2.zip"), days_ago(3, "b3.zip")]
        policy = RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=1)
        assert paths(plan_cleanup(backups, policy, NOW).keep) == {"b1.zip"}  # without the facts

        plan = integrity_plan(backups, policy, [damaged("b1.zip"), intact("b2.zip")])

        assert [b.path for b in plan.keep] == ["b1.zip", "b2.zip"]
        assert plan.reasons == {
            "b1.zip": "damaged, kept for a human: size differs: 512 bytes, but its receipt says 1048576",
            "b2.zip": "newest",
            "b3.zip": "storage limit 1 MB exceeded",
        }

    def test_damaged_archives_do_not_count_toward_the_storage_limit(self) -> None:
        backups = [days_ago(1, "b1.zip", size=10 * MIB), days_ago(2, "b2.zip"), days_ago(3, "b3.zip")]
        plan = integrity_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=2),
                              [damaged("b1.zip"), intact("b2.zip")])
        assert plan.delete == []

    def test_an_unverified_newer_backup_does_not_replace_the_newest_intact_one(self) -> None:
        backups = [days_ago(1, "b1.zip"), days_ago(2, "b2.zip"), days_ago(3, "b3.zip")]
        plan = integrity_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=1),
                              [unverified("b1.zip"), intact("b2.zip")])
        assert [b.path for b in plan.keep] == ["b1.zip", "b2.zip"]
        assert plan.reasons["b1.zip"] == "newest"
        assert plan.reasons["b2.zip"] == "newest intact backup (instead of: storage limit 1 MB exceeded)"

    def test_unverified_archives_are_planned_like_laravel_backup(self) -> None:
        backups = [days_ago(n, f"b{n}.zip") for n in (1, 2, 3, 4)]
        policy = RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=2)
        checks = [unverified(b.path) for b in backups]
        assert integrity_plan(backups, policy, checks).reasons == checked_plan(backups, policy).reasons

    def test_every_archive_damaged_keeps_everything(self) -> None:
        backups = [days_ago(n, f"b{n}.zip") for n in (1, 2, 3)]
        plan = integrity_plan(backups, RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=1),
                              [damaged(b.path) for b in backups])
        assert plan.delete == [] and len(plan.keep) == 3

    def test_the_floor_counts_only_undamaged_backups(self) -> None:
        backups = [days_ago(n, f"b{n}.zip") for n in (1, 2, 3, 4)]
        policy = RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=1, min_backups_kept=2)
        plan = integrity_plan(backups, policy, [damaged("b1.zip"), intact("b2.zip"), intact("b3.zip")])
        assert [b.path for b in plan.keep] == ["b1.zip", "b2.zip", "b3.zip"]
        assert plan.reasons["b3.zip"] == "min_backups_kept floor (instead of: storage limit 1 MB exceeded)"

    def test_the_guard_refuses_a_plan_that_deletes_a_damaged_or_the_newest_intact_archive(self) -> None:
        backups = [days_ago(n, f"app/b{n}.zip") for n in (1, 2, 3)]
        policy = RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=1)
        laravel = plan_cleanup(backups, policy, NOW)  # keeps app/b1 only
        assert refusal_reason(laravel, backups, policy, "app") is None
        for checks in ([damaged("app/b2.zip")], [unverified("app/b1.zip"), intact("app/b2.zip")]):
            assert refusal_reason(laravel, backups, policy, "app", checks) == (
                "the retention plan would delete a damaged archive or the newest intact backup (a bug in the planner).")


# ---------------------------------------------------------------------------- reasons, reporting, input


class TestReasonsAndReporting:
    def test_every_rule_explains_itself(self) -> None:
        policy = RetentionPolicy(delete_oldest_backups_when_using_more_megabytes_than=6)
        backups = [
            backup("newest.zip", at(2016, 1, 1, 21)),
            backup("recent.zip", at(2015, 12, 30, 22)),
            backup("daily.zip", at(2015, 12, 20, 22)),
            backup("daily-dup.zip", at(2015, 12, 20, 3)),
            backup("weekly.zip", at(2015, 11, 20, 22)),
            backup("monthly.zip", at(2015, 8, 20, 22)),
            backup("yearly.zip", at(2014, 8, 20, 22)),
            backup("too-old.zip", at(2012, 8, 20, 22)),
            backup("yearly-2013.zip", at(2013, 8, 20, 22)),
        ]
        plan = checked_plan(backups, policy)
        assert plan.reasons == {
            "newest.zip": "newest",
            "recent.zip": "keep-all window",
            "daily.zip": "daily 20151220",
            "daily-dup.zip": "superseded in daily 20151220 by daily.zip",
            "weekly.zip": "weekly 201547",
            "monthly.zip": "monthly 201508",
            "yearly.zip": "yearly 2014",
            "yearly-2013.zip": "storage limit 6 MB exceeded",
            "too-old.zip": "older than the yearly period (before 2013-06-14 22:00)",
        }
        # newest first, so the log reads like a dry run
        assert plan.describe_lines()[:4] == [
            "Keeping newest.zip (rule: newest)",
            "Keeping recent.zip (rule: keep-all window)",
            "Keeping daily.zip (rule: daily 20151220)",
            "Deleting daily-dup.zip (rule: superseded in daily 20151220 by daily.zip)",
        ]
        assert plan.describe_lines()[-1] == (
            "Deleting too-old.zip (rule: older than the yearly period (before 2013-06-14 22:00))"
        )
        assert totals(plan) == {"kept": 6, "deleted": 3, "bytes_kept": 6 * MIB, "bytes_freed": 3 * MIB}

    def test_non_utc_cutoff_shows_its_offset(self) -> None:
        zone = timezone(timedelta(hours=1))
        now = datetime(2016, 1, 1, 22, tzinfo=zone)
        plan = checked_plan([backup("a.zip", NOW), backup("b.zip", at(2000, 1, 1))], now=now)
        assert plan.reasons["b.zip"] == "older than the yearly period (before 2013-06-14 22:00 +0100)"


class TestInput:
    def test_empty_input_gives_empty_plan(self) -> None:
        plan = checked_plan([])
        assert (plan.keep, plan.delete, plan.reasons) == ([], [], {})
        assert totals(plan) == {"kept": 0, "deleted": 0, "bytes_kept": 0, "bytes_freed": 0}

    def test_single_ancient_huge_backup_is_kept(self) -> None:
        plan = checked_plan([backup("only.zip", at(1999, 1, 1), 10**12)])
        assert plan.reasons == {"only.zip": "newest"}

    def test_duplicate_paths_are_rejected(self) -> None:
        with pytest.raises(ValueError, match=r"'a\.zip' is listed more than once"):
            plan_cleanup([days_ago(1, "a.zip"), days_ago(2, "a.zip")], RetentionPolicy(), NOW)

    def test_naive_datetimes_are_rejected(self) -> None:
        with pytest.raises(ValueError, match="now must be a time-zone-aware datetime"):
            plan_cleanup([], RetentionPolicy(), datetime(2016, 1, 1))
        with pytest.raises(ValueError, match=r"date of 'a\.zip' must be a time-zone-aware"):
            plan_cleanup([backup("a.zip", datetime(2016, 1, 1))], RetentionPolicy(), NOW)

    def test_negative_sizes_are_rejected(self) -> None:
        with pytest.raises(ValueError, match=r"'a\.zip' has size -1"):
            plan_cleanup([days_ago(1, "a.zip", -1)], RetentionPolicy(), NOW)

    def test_same_second_backups_keep_listing_order(self) -> None:
        # laravel-backup sorts by whole seconds with a stable sort: the first listed counts as newer,
        # even when its sub-second part is smaller.
        early = backup("listed-first.zip", at(2015, 12, 20, 12).replace(microsecond=100))
        late = backup("listed-second.zip", at(2015, 12, 20, 12).replace(microsecond=900))
        plan = checked_plan([days_ago(0, "newest.zip"), early, late])
        assert plan.reasons["listed-first.zip"] == "daily 20151220"
        assert plan.reasons["listed-second.zip"] == "superseded in daily 20151220 by listed-first.zip"

    def test_input_sequence_is_not_modified(self) -> None:
        backups = (days_ago(3, "c.zip"), days_ago(1, "a.zip"), days_ago(2, "b.zip"))
        checked_plan(backups)
        assert [b.path for b in backups] == ["c.zip", "a.zip", "b.zip"]


# ---------------------------------------------------------------------------- policy


class TestRetentionPolicy:
    @pytest.mark.parametrize(
        ("field", "value", "accepted"),
        [
            ("keep_all_backups_for_days", -1, "a whole number ≥ 0"),
            ("keep_daily_backups_for_days", 1.5, "a whole number ≥ 0"),
            ("keep_weekly_backups_for_weeks", True, "a whole number ≥ 0"),
            ("keep_monthly_backups_for_months", "4", "a whole number ≥ 0"),
            ("keep_yearly_backups_for_years", None, "a whole number ≥ 0"),
            ("delete_oldest_backups_when_using_more_megabytes_than", 0, "a whole number ≥ 1 or None (no limit)"),
            ("min_backups_kept", 0, "a whole number ≥ 1"),
        ],
    )
    def test_invalid_values_are_rejected_with_field_and_value(self, field: str, value: Any, accepted: str) -> None:
        with pytest.raises(ConfigError) as caught:
            RetentionPolicy(**{field: value})
        assert str(caught.value) == f"RetentionPolicy.{field} must be {accepted}, got {value!r}."
        assert isinstance(caught.value, ValueError)

    def test_zero_periods_and_no_limit_are_valid(self) -> None:
        policy = RetentionPolicy(0, 0, 0, 0, 0, None)
        assert policy.storage_limit_bytes is None

    def test_from_settings_copies_config_values(self) -> None:
        settings = RetentionSettings()
        policy = RetentionPolicy.from_settings(settings)
        assert policy == RetentionPolicy(7, 30, 12, 12, 3, 5000, 1)

    def test_from_settings_defaults_only_min_backups_kept(self) -> None:
        class LaravelStyle:
            keep_all_backups_for_days = 1
            keep_daily_backups_for_days = 2
            keep_weekly_backups_for_weeks = 3
            keep_monthly_backups_for_months = 4
            keep_yearly_backups_for_years = 5
            delete_oldest_backups_when_using_more_megabytes_than = None

        assert RetentionPolicy.from_settings(LaravelStyle()) == RetentionPolicy(1, 2, 3, 4, 5, None, 1)

        class Incomplete:
            keep_all_backups_for_days = 1

        with pytest.raises(ConfigError, match="Incomplete has no attribute 'keep_daily_backups_for_days'"):
            RetentionPolicy.from_settings(Incomplete())

    def test_from_settings_validates(self) -> None:
        with pytest.raises(ConfigError, match="min_backups_kept must be a whole number ≥ 1"):
            RetentionPolicy.from_settings(RetentionSettings(min_backups_kept=0))

    def test_describe_defaults(self) -> None:
        assert RetentionPolicy().describe() == (
            "Keep every backup from the last 7 days; before that, keep only the newest backup of each day "
            "for 16 days, each week (calendar year + ISO week) for 8 weeks, each month for 4 months and each "
            "year for 2 years; delete everything older. Then delete the oldest backups while all backups "
            "together use more than 5000 MB. The newest backup is never deleted."
        )

    def test_describe_edge_values(self) -> None:
        policy = RetentionPolicy(0, 1, 0, 0, 1, None, min_backups_kept=3)
        assert policy.describe() == (
            "Keep no backup just for being recent; before that, keep only the newest backup of each day "
            "for 1 day and each year for 1 year; delete everything older. There is no storage limit. "
            "The newest backup is never deleted, and at least 3 backups are always kept."
        )
        assert RetentionPolicy(1, 0, 0, 0, 0).describe().startswith(
            "Keep every backup from the last 1 day; delete everything older."
        )


# ---------------------------------------------------------------------------- randomized, against §3.2 literally


def _reference_plan(backups: Sequence[BackupFile], policy: RetentionPolicy, now: datetime) -> set[str]:
    """laravel-backup's pseudo-code transcribed literally and slowly: the paths it leaves on disk."""
    ordered = sorted(backups, key=lambda b: -_whole_seconds(b.date))
    if not ordered:
        return set()
    newest, rest = ordered[0], ordered[1:]
    exists = {b.path: True for b in rest}
    keys = {
        "daily": lambda d: d.strftime("%Y%m%d"),
        "weekly": lambda d: f"{d.year}{d.isocalendar()[1]:02d}",
        "monthly": lambda d: d.strftime("%Y%m"),
        "yearly": lambda d: d.strftime("%Y"),
    }
    periods = policy.periods(now)
    for period in periods:
        groups: dict[str, list[BackupFile]] = {}
        for b in rest:
            if period.end <= b.date <= period.start:
                groups.setdefault(keys[period.name](b.date), []).append(b)
        for group in groups.values():
            for b in group[1:]:
                exists[b.path] = False
    for b in rest:
        if exists[b.path] and b.date < periods[-1].end:
            exists[b.path] = False
    limit = policy.storage_limit_bytes
    if limit is not None:
        while True:
            remaining = [b for b in rest if exists[b.path]]
            if not remaining or sum(b.size for b in remaining) + newest.size <= limit:
                break
            exists[remaining[-1].path] = False
    return {newest.path} | {p for p, alive in exists.items() if alive}


def test_random_histories_match_the_literal_algorithm() -> None:
    rng = random.Random(20160101)
    for case in range(150):
        now = at(2016, 1, 1, 22) + timedelta(days=rng.randint(0, 3000), seconds=rng.randint(0, 86399))
        policy = RetentionPolicy(
            keep_all_backups_for_days=rng.randint(0, 10),
            keep_daily_backups_for_days=rng.randint(0, 40),
            keep_weekly_backups_for_weeks=rng.randint(0, 20),
            keep_monthly_backups_for_months=rng.randint(0, 15),
            keep_yearly_backups_for_years=rng.randint(0, 4),
            delete_oldest_backups_when_using_more_megabytes_than=rng.choice([None, 5, 50, 500]),
        )
        seconds = rng.sample(range(0, 6 * 365 * 86400), rng.randint(0, 400))
        # whole days sometimes, so backups land exactly on period boundaries
        boundary_hits = [p.end for p in policy.periods(now)] + [p.start for p in policy.periods(now)]
        dates = [now - timedelta(seconds=s) for s in seconds] + rng.sample(boundary_hits, 3)
        dates = list(dict.fromkeys(dates))
        backups = [backup(f"case{case}/b{i}.zip", d, rng.randint(0, 4 * MIB)) for i, d in enumerate(dates)]
        plan = checked_plan(backups, policy, now)
        assert paths(plan.keep) == _reference_plan(backups, policy, now), f"case {case}"
