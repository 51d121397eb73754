"""The health checks as pure functions: laravel-backup's monitor tests ported, and backup-ops' own checks."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backup_ops.core.config import MonitorSettings, parse_config
from backup_ops.core.config.model import CustomCheckSpec
from backup_ops.core.drill_report import (
    MAX_REPORT_BYTES,
    DrillCheck,
    DrillReport,
    DrillReportError,
    parse_drill_report,
    report_key,
)
from backup_ops.core.errors import ConfigError
from backup_ops.core.health import (
    CHECK_ORDER,
    CheckResult,
    DestinationSnapshot,
    HealthCheckFailed,
    MemberCheck,
    NewestArchive,
    Status,
    evaluate,
    format_date,
)
from backup_ops.core.models import ArchiveIntegrity, BackupFile, Integrity

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024
SECOND = timedelta(seconds=1)
DAY = timedelta(days=1)
INTACT = "size and SHA-256 (hashed from the file) match the receipt"
MEMBERS_OK = MemberCheck("ok", "all 3 members decrypt and match its manifest")
# Only the check under test is on: laravel-backup's tests configure one check at a time.
ONLY_AGE = MonitorSettings(max_age_days=1, max_storage_mb=None, restore_drill_max_age_days=None)
ONLY_STORAGE = MonitorSettings(max_age_days=10_000, max_storage_mb=1, restore_drill_max_age_days=None)
THIS_MODULE = __name__


def backup(age: timedelta, size: int = MIB, name: str = "test.zip") -> BackupFile:
    return BackupFile(f"mysite/{name}", NOW - age, size)


def snapshot(*backups: BackupFile, newest: NewestArchive | None = None, **fields: Any) -> DestinationSnapshot:
    """A reachable destination holding ``backups`` (newest first), the newest intact unless said otherwise."""
    if newest is None and backups:
        newest = NewestArchive(backups[0].path, ArchiveIntegrity(backups[0].path, Integrity.INTACT, INTACT), True,
                               MEMBERS_OK)
    return DestinationSnapshot(backup_name="mysite", destination="local", location="file:///backups",
                               reachable=True, backups=tuple(backups), newest=newest, **fields)


def statuses(report: Any) -> dict[str, str]:
    return {check.name: check.status.value for check in report.checks}


def sentence(report: Any, name: str) -> str:
    return next(check.sentence for check in report.checks if check.name == name)


# ---------------------------------------------------------------------------- laravel-backup's tests, ported


@pytest.mark.parametrize(
    ("case", "backups", "settings", "healthy"),
    [
        # MaximumAgeInDaysTest
        ("a 1 s old backup is healthy", [backup(SECOND)], ONLY_AGE, True),
        ("no backups at all is unhealthy", [], ONLY_AGE, False),
        ("1 day + 1 s old is unhealthy", [backup(DAY + SECOND)], ONLY_AGE, False),
        ("shorthand 2 days: 1 day + 1 s old is healthy", [backup(DAY + SECOND)], replace(ONLY_AGE, max_age_days=2),
         True),
        # MaximumStorageInMegabytesTest
        ("1 MiB against a 1 MB limit is healthy", [backup(timedelta(0))], ONLY_STORAGE, True),
        ("2 MiB against a 1 MB limit is unhealthy", [backup(SECOND, name="test_2.zip"),
                                                    backup(2 * SECOND, name="test_1.zip")], ONLY_STORAGE, False),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_laravel_backups_monitor_cases(case: str, backups: list[BackupFile], settings: MonitorSettings,
                                       healthy: bool) -> None:
    report = evaluate(snapshot(*backups), settings, NOW)
    assert report.healthy is healthy, [c.sentence for c in report.failures]


def test_a_failing_custom_check_is_collected_with_the_other_failures() -> None:
    """laravel-backup v10: all failures are reported, not only the first (UnhealthyBackupWasFoundTest)."""
    settings = replace(ONLY_AGE, custom_checks=(CustomCheckSpec(f"{THIS_MODULE}.FakeFailingHealthCheck"),))
    report = evaluate(snapshot(backup(DAY + SECOND)), settings, NOW)
    assert [(c.name, c.sentence) for c in report.failures] == [
        ("max_age_days", "The latest backup made on 2026-11-25 11:59:59 UTC is considered too old (1.00 days; "
                         "monitor.max_age_days is 1)."),
        ("FakeFailingHealthCheck", "The custom check tests.unit.test_health.FakeFailingHealthCheck raised Exception: "
                                   "dummy exception message"),
    ]


def test_no_backups_message_is_laravels() -> None:
    report = evaluate(snapshot(), ONLY_AGE, NOW)
    assert sentence(report, "max_age_days") == "There are no backups of this application at all."


def test_a_backup_exactly_max_age_old_is_too_old() -> None:
    """Healthy only while strictly younger than the limit (laravel: ``date > now - days``)."""
    assert not evaluate(snapshot(backup(DAY)), ONLY_AGE, NOW).healthy
    assert evaluate(snapshot(backup(DAY - SECOND)), ONLY_AGE, NOW).healthy


def test_storage_exactly_at_the_limit_passes_and_one_byte_more_fails_naming_bytes() -> None:
    assert evaluate(snapshot(backup(SECOND, size=MIB)), ONLY_STORAGE, NOW).healthy
    report = evaluate(snapshot(backup(SECOND, size=MIB + 1)), ONLY_STORAGE, NOW)
    assert sentence(report, "max_storage_mb") == (
        "The backups are using too much storage. Current usage is 1,048,577 bytes which is higher than the allowed "
        "limit of 1,048,576 bytes.")
    report = evaluate(snapshot(backup(SECOND, name="b.zip"), backup(2 * SECOND, name="a.zip")), ONLY_STORAGE, NOW)
    assert sentence(report, "max_storage_mb") == (
        "The backups are using too much storage. Current usage is 2.00 MB which is higher than the allowed limit "
        "of 1.00 MB.")


def test_storage_limit_null_switches_the_check_off() -> None:
    report = evaluate(snapshot(backup(SECOND, size=10**12)), replace(ONLY_STORAGE, max_storage_mb=None), NOW)
    assert statuses(report)["max_storage_mb"] == "skipped"
    assert report.healthy


def test_date_format_is_24_hour_utc_not_laravels_12_hour_quirk() -> None:
    evening = datetime(2026, 11, 25, 23, 5, 9, tzinfo=UTC)
    assert format_date(evening) == "2026-11-25 23:05:09 UTC"
    report = evaluate(snapshot(BackupFile("mysite/x.zip", evening, 1)), ONLY_AGE, evening + 2 * DAY)
    assert "made on 2026-11-25 23:05:09 UTC is considered too old" in sentence(report, "max_age_days")


def test_a_backup_dated_in_the_future_cannot_keep_the_age_check_green() -> None:
    skewed = evaluate(snapshot(backup(-timedelta(minutes=30))), ONLY_AGE, NOW)
    assert skewed.healthy  # a host clock a little ahead is tolerated
    future = evaluate(snapshot(backup(-timedelta(days=400), name="2027-12-31-00-00-00.zip")), ONLY_AGE, NOW)
    assert not future.healthy
    assert "days in the future: its date (from its name, else its modification time) cannot be trusted" in \
        sentence(future, "max_age_days")


# ---------------------------------------------------------------------------- reachable first


def test_an_unreachable_destination_skips_every_other_check_custom_ones_included() -> None:
    settings = MonitorSettings(custom_checks=(CustomCheckSpec(f"{THIS_MODULE}.FakeFailingHealthCheck"),))
    unreachable = DestinationSnapshot("mysite", "usb", "file:///mnt/usb", reachable=False,
                                      unreachable_reason="Destination usb: directory /mnt/usb does not exist.")
    report = evaluate(unreachable, settings, NOW)
    assert [c.name for c in report.checks] == [*CHECK_ORDER, "FakeFailingHealthCheck"]
    assert statuses(report) == {"reachable": "fail", **{n: "skipped" for n in CHECK_ORDER[1:]},
                                "FakeFailingHealthCheck": "skipped"}
    assert report.failures[0].sentence == ("The backup destination cannot be reached: Destination usb: directory "
                                           "/mnt/usb does not exist.")
    assert report.to_dict()["backup_count"] is None


def test_checks_run_in_order_and_all_pass_on_a_healthy_destination() -> None:
    report = evaluate(snapshot(backup(SECOND)), MonitorSettings(), NOW)
    assert [c.name for c in report.checks] == list(CHECK_ORDER)
    assert statuses(report) == {"reachable": "pass", "max_age_days": "pass", "max_storage_mb": "pass",
                                "newest_intact": "pass", "restore_drill_fresh": "skipped"}
    assert report.summary() == "The mysite backups on destination local are considered healthy."


# ---------------------------------------------------------------------------- newest_intact


def newest(state: Integrity, detail: str, *, made: bool = True, members: MemberCheck = MEMBERS_OK) -> NewestArchive:
    return NewestArchive("mysite/test.zip", ArchiveIntegrity("mysite/test.zip", state, detail), made, members)


NO_RECEIPT_DETAIL = "no receipt beside it"
NOT_CHECKED = MemberCheck("not_checked", "its members were not checked (monitor.deep_verify is off)")


@pytest.mark.parametrize(
    ("case", "facts", "status", "expected"),
    [
        ("intact, members ok", newest(Integrity.INTACT, INTACT), "pass",
         f"The newest backup mysite/test.zip is intact: {INTACT}; all 3 members decrypt and match its manifest."),
        ("intact on S3, members not checked", newest(Integrity.INTACT, INTACT, members=NOT_CHECKED), "pass",
         f"The newest backup mysite/test.zip is intact: {INTACT}; its members were not checked (monitor.deep_verify "
         "is off)."),
        ("damaged", newest(Integrity.DAMAGED, "size differs: 100 bytes, but its receipt says 1024"), "fail",
         "The newest backup mysite/test.zip is damaged: size differs: 100 bytes, but its receipt says 1024; it "
         "protects nothing."),
        ("receipt matches, a member does not",
         newest(Integrity.INTACT, INTACT, members=MemberCheck("failed", "Member 'a.txt' … is corrupt.")), "fail",
         "The members of the newest backup mysite/test.zip do not check out: Member 'a.txt' … is corrupt."),
        ("backup-ops archive whose receipt vanished", newest(Integrity.UNVERIFIED, NO_RECEIPT_DETAIL), "fail",
         "The newest backup mysite/test.zip was written by backup-ops but cannot be verified (no receipt beside it) "
         "(its members do match its manifest): backup-ops writes a receipt with every archive and removes it only "
         "with the archive, so something outside backup-ops changed this destination."),
        ("laravel-backup archive (no receipt, no manifest)",
         newest(Integrity.UNVERIFIED, NO_RECEIPT_DETAIL, made=False, members=NOT_CHECKED), "pass",
         "The newest backup mysite/test.zip is unverified (no receipt beside it); it was not written by backup-ops, "
         "so there is nothing to check it against."),
        ("laravel-backup archive that is not a readable zip",
         newest(Integrity.UNVERIFIED, NO_RECEIPT_DETAIL, made=False,
                members=MemberCheck("failed", "Archive x is not a readable zip file")), "fail",
         "The members of the newest backup mysite/test.zip do not check out: Archive x is not a readable zip file"),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value and len(value) < 60 else "",
)
def test_newest_intact(case: str, facts: NewestArchive, status: str, expected: str) -> None:
    report = evaluate(snapshot(backup(SECOND), newest=facts), MonitorSettings(), NOW)
    assert statuses(report)["newest_intact"] == status
    assert sentence(report, "newest_intact") == expected


def test_newest_that_could_not_be_checked_fails_and_no_backup_skips() -> None:
    report = evaluate(replace(snapshot(backup(SECOND)), newest=None,
                              newest_error="Destination s3: reading receipt … failed: access denied"),
                      MonitorSettings(), NOW)
    assert sentence(report, "newest_intact") == ("The newest backup mysite/test.zip could not be checked: "
                                                 "Destination s3: reading receipt … failed: access denied")
    assert statuses(evaluate(snapshot(), MonitorSettings(), NOW))["newest_intact"] == "skipped"


# ---------------------------------------------------------------------------- restore_drill_fresh


def drill(finished_ago: timedelta, outcome: str = "succeeded", **fields: Any) -> DrillReport:
    finished = NOW - finished_ago
    values: dict[str, Any] = {"backup_name": "mysite", "archive": "mysite/2026-11-01-02-00-00.zip",
                              "destination": "local", "started_at": finished - timedelta(minutes=4),
                              "finished_at": finished, "outcome": outcome, "rto_seconds": 240.0,
                              "error": None if outcome == "succeeded" else "Row counts differ in public.invoices."}
    return DrillReport(**{**values, **fields})


@pytest.mark.parametrize(
    ("case", "reports", "status", "expected_start"),
    [
        ("no report yet", [], "skipped", "No restore-drill report under mysite/restore-drills/ yet"),
        ("a fresh success", [drill(3 * DAY)], "pass",
         "The newest successful restore drill restored mysite/2026-11-01-02-00-00.zip on 2026-11-23 12:00:00 UTC "
         "(3.0 days ago, RTO 240 s)."),
        ("a success exactly at the limit", [drill(35 * DAY)], "fail",
         "The newest successful restore drill finished on 2026-10-22 12:00:00 UTC, 35.0 days ago, longer ago than "
         "monitor.restore_drill_max_age_days (35): run the restore_drill DAG."),
        ("only failures", [drill(DAY, "failed"), drill(2 * DAY, "failed")], "fail",
         "No restore drill from this destination has succeeded yet: the newest, of mysite/2026-11-01-02-00-00.zip "
         "on 2026-11-25 12:00:00 UTC, failed: Row counts differ in public.invoices."),
        ("a fresh success then a failure", [drill(DAY, "failed"), drill(3 * DAY)], "pass",
         "The newest successful restore drill restored"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 else "",
)
def test_restore_drill_fresh(case: str, reports: list[DrillReport], status: str, expected_start: str) -> None:
    report = evaluate(snapshot(backup(SECOND), drill_reports=tuple(reports)), MonitorSettings(), NOW)
    assert statuses(report)["restore_drill_fresh"] == status
    assert sentence(report, "restore_drill_fresh").startswith(expected_start)


def test_a_later_failed_drill_is_named_even_when_the_check_passes() -> None:
    report = evaluate(snapshot(backup(SECOND), drill_reports=(drill(3 * DAY), drill(DAY, "failed"))),
                      MonitorSettings(), NOW)
    assert sentence(report, "restore_drill_fresh").endswith(
        "A later drill, of mysite/2026-11-01-02-00-00.zip on 2026-11-25 12:00:00 UTC, failed: Row counts differ in "
        "public.invoices.")


def test_restore_drill_check_off_or_unreadable() -> None:
    off = evaluate(snapshot(backup(SECOND), drill_reports=(drill(99 * DAY),)),
                   MonitorSettings(restore_drill_max_age_days=None), NOW)
    assert statuses(off)["restore_drill_fresh"] == "skipped"
    broken = evaluate(snapshot(backup(SECOND), drill_error="Destination s3: listing … failed: access denied"),
                      MonitorSettings(), NOW)
    assert sentence(broken, "restore_drill_fresh") == ("The restore-drill reports could not be read: Destination s3: "
                                                       "listing … failed: access denied")


# ---------------------------------------------------------------------------- custom checks


class FakeFailingHealthCheck:
    """laravel-backup's tests/TestSupport/FakeFailingHealthCheck: throws a plain exception."""

    def check(self, snapshot: DestinationSnapshot, now: datetime) -> CheckResult:
        raise Exception("dummy exception message")


class OffsiteCopyCheck:
    """A documented-interface check: options as keyword arguments, a ``name``, a CheckResult or HealthCheckFailed."""

    name = "offsite_copy"

    def __init__(self, minimum: int = 1) -> None:
        self.minimum = minimum

    def check(self, snapshot: DestinationSnapshot, now: datetime) -> CheckResult:
        if len(snapshot.backups) < self.minimum:
            raise HealthCheckFailed(f"Only {len(snapshot.backups)} backups, fewer than {self.minimum}.")
        return CheckResult.passed("ignored", f"{len(snapshot.backups)} backups as of {now:%Y-%m-%d}.")


class ReturnsNothing:
    def check(self, snapshot: DestinationSnapshot, now: datetime) -> None:
        return None


def custom(path: str, **options: Any) -> MonitorSettings:
    return MonitorSettings(restore_drill_max_age_days=None, custom_checks=(CustomCheckSpec(path, options),))


@pytest.mark.parametrize(
    ("path", "options", "name", "status", "expected"),
    [
        (f"{THIS_MODULE}.OffsiteCopyCheck", {}, "offsite_copy", "pass", "1 backups as of 2026-11-26."),
        (f"{THIS_MODULE}.OffsiteCopyCheck", {"minimum": 2}, "offsite_copy", "fail", "Only 1 backups, fewer than 2."),
        (f"{THIS_MODULE}.OffsiteCopyCheck", {"maximum": 2}, "offsite_copy", "fail",
         "The custom check tests.unit.test_health.OffsiteCopyCheck cannot be loaded: TypeError: "),
        ("no_such_module_xyz.Check", {}, "Check", "fail",
         "The custom check no_such_module_xyz.Check cannot be loaded: ModuleNotFoundError: No module named "
         "'no_such_module_xyz'"),
        (f"{THIS_MODULE}.NoSuchClass", {}, "NoSuchClass", "fail",
         "The custom check tests.unit.test_health.NoSuchClass cannot be loaded: AttributeError: "),
        (f"{THIS_MODULE}.ReturnsNothing", {}, "ReturnsNothing", "fail",
         "The custom check tests.unit.test_health.ReturnsNothing returned NoneType, not a CheckResult."),
    ],
)
def test_custom_checks(path: str, options: dict[str, Any], name: str, status: str, expected: str) -> None:
    report = evaluate(snapshot(backup(SECOND)), custom(path, **options), NOW)
    check = report.checks[-1]
    assert (check.name, check.status.value) == (name, status)
    assert check.sentence.startswith(expected), check.sentence


# ---------------------------------------------------------------------------- the report (XCom)


def test_report_dict_is_json_and_carries_the_destination_properties() -> None:
    snap = snapshot(backup(timedelta(hours=6), size=2048, name="b.zip"), backup(3 * DAY, size=1024, name="a.zip"))
    report = evaluate(snap, replace(ONLY_AGE, max_storage_mb=5000), NOW)
    data = json.loads(json.dumps(report.to_dict()))
    assert data == {
        "format_version": 1, "backup_name": "mysite", "destination": "local", "location": "file:///backups",
        "checked_at": "2026-11-26T12:00:00+00:00", "healthy": True, "reachable": True, "backup_count": 2,
        "newest_date": "2026-11-26T06:00:00+00:00", "newest_age_days": 0.25, "newest_size": 2048,
        "oldest_date": "2026-11-23T12:00:00+00:00", "used_storage": 3072, "storage_limit": 5000 * MIB,
        "checks": [c.to_dict() for c in report.checks], "failed_checks": [],
    }
    assert {tuple(c) for c in data["checks"]} == {("name", "status", "sentence")}
    assert Status.PASS.value == "pass"


# ---------------------------------------------------------------------------- drill reports as hostile input


def valid_report(**fields: Any) -> dict[str, Any]:
    base = drill(DAY).to_dict()
    base.update(checks=[{"name": "restore", "status": "pass", "detail": "12 tables"}], dag_id="restore_drill",
                run_id="manual__1")
    base.update(fields)
    return base


def test_drill_report_round_trips_and_lives_under_restore_drills() -> None:
    report = parse_drill_report(json.dumps(valid_report()).encode(), "mysite/restore-drills/x.json")
    assert report.succeeded and report.rto_seconds == 240.0
    assert report.checks == (DrillCheck("restore", "pass", "12 tables"),)
    assert report.key == "mysite/restore-drills/x.json"
    assert parse_drill_report(report.to_json()).to_dict() == report.to_dict()
    assert report_key("mysite", datetime(2026, 11, 1, 3, 4, 5, tzinfo=UTC)) == \
        "mysite/restore-drills/2026-11-01-03-04-05.json"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"x" * (MAX_REPORT_BYTES + 1), "it is larger than 65536 bytes"),
        (b"\xff\xfe", "it is not JSON (UnicodeDecodeError)"),
        (b"{", "it is not JSON (JSONDecodeError)"),
        (b"[1, 2]", "it is not a JSON object"),
        (json.dumps(valid_report(format_version=2)).encode(), "format_version is 2, this backup-ops reads 1"),
        (json.dumps(valid_report(format_version=True)).encode(), "format_version is True, this backup-ops reads 1"),
        (json.dumps(valid_report(outcome="maybe")).encode(), "outcome is 'maybe', not one of succeeded, failed"),
        (json.dumps(valid_report(finished_at="2026-11-25T12:00:00")).encode(), "has no UTC offset"),
        (json.dumps(valid_report(started_at=12)).encode(), "started_at is 12, not an ISO 8601 date"),
        (json.dumps(valid_report(started_at="2030-01-01T00:00:00+00:00")).encode(), "finished_at is before started"),
        (json.dumps(valid_report(rto_seconds="fast")).encode(), "rto_seconds is 'fast', not a number of seconds"),
        (json.dumps(valid_report(rto_seconds=-1)).encode(), "rto_seconds is -1, not a number of seconds"),
        (json.dumps(valid_report(destination=["local"])).encode(), "destination is ['local'], not a non-empty string"),
        (json.dumps(valid_report(checks={"a": 1})).encode(), "checks is not a list"),
        (json.dumps(valid_report(checks=[{"name": "x", "status": "ok"}])).encode(), "checks[0] is not {name, status"),
        (json.dumps(valid_report(checks=[{"name": "x", "status": "pass"}] * 101)).encode(), "checks has 101 entries"),
    ],
)
def test_hostile_drill_reports_are_refused_with_one_phrase(data: bytes, problem: str) -> None:
    with pytest.raises(DrillReportError) as caught:
        parse_drill_report(data)
    assert problem in str(caught.value)


def test_drill_report_strings_lose_control_characters_and_are_capped() -> None:
    forged = "Restore failed\n2026-11-26 [info] FAIL nothing: all good\x1b[0m"
    report = parse_drill_report(json.dumps(valid_report(outcome="failed", error=forged + "x" * 1000)).encode())
    assert report.error is not None
    assert "\n" not in report.error and "\x1b" not in report.error
    assert len(report.error) == 500 and report.error.endswith("…")


# ---------------------------------------------------------------------------- the monitor section of the config


def monitor_config(monitor: Any) -> MonitorSettings:
    raw = {"backup": {"name": "app", "source": {}, "destination": {"destinations": [
        {"name": "local", "type": "local", "path": "/tmp/b"}]}}, "monitor": monitor}
    return parse_config(raw).monitor


def test_monitor_defaults() -> None:
    assert monitor_config(None) == MonitorSettings(max_age_days=1.0, max_storage_mb=5000, restore_drill_max_age_days=35,
                                                   schedule="0 */6 * * *", deep_verify=False, custom_checks=(),
                                                   tries=2, retry_delay=60)


def test_monitor_custom_checks_by_path_or_with_options() -> None:
    settings = monitor_config({"custom_checks": ["my_checks.OffsiteCopyCheck",
                                                 {"class": "my_checks.Other", "options": {"days": 2}}],
                               "deep_verify": True, "max_storage_mb": None, "restore_drill_max_age_days": None})
    assert settings.custom_checks == (CustomCheckSpec("my_checks.OffsiteCopyCheck"),
                                      CustomCheckSpec("my_checks.Other", {"days": 2}))
    assert settings.deep_verify and settings.max_storage_mb is None and settings.restore_drill_max_age_days is None


@pytest.mark.parametrize(
    ("monitor", "message"),
    [
        ({"custom_checks": ["OffsiteCopyCheck"]}, "monitor.custom_checks[0] must be a dotted path to a class"),
        ({"custom_checks": [{"class": "a.B", "options": {"not valid": 1}}]},
         "monitor.custom_checks[0].options must map keyword argument names to values (they are passed as "
         "B(**options)), got the key 'not valid'."),
        ({"custom_checks": [{"class": "a.B", "extra": 1}]}, "monitor.custom_checks[0] has unknown key 'extra'"),
        ({"custom_checks": [3]}, "monitor.custom_checks[0] must be a dotted path to a class"),
        ({"deep_verify": "yes"}, "monitor.deep_verify must be true or false, got 'yes'."),
        ({"tries": 0}, "monitor.tries must be a whole number ≥ 1, got 0."),
        ({"max_age_days": 0}, "monitor.max_age_days must be a number of at least 0.01, got 0."),
        ({"schedule": "every 6 hours"}, "monitor.schedule must be a five-field cron expression"),
    ],
)
def test_monitor_config_errors_name_the_key(monitor: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        monitor_config(monitor)
    assert str(caught.value).startswith(message), str(caught.value)
