"""Restore planning as pure functions: which backup, which members, which names, what the data must hold.

Also the ``restore_drill`` config section that feeds it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from backup_ops.core.config import TableRules, parse_config
from backup_ops.core.errors import ConfigError
from backup_ops.core.manifest import Manifest, ManifestDatabase, ManifestMember
from backup_ops.core.models import BackupFile, TableStat
from backup_ops.core.restore_plan import (
    choose_backup,
    database_members,
    file_members,
    is_scratch_name,
    restore_names,
    scratch_name,
    scratch_names,
    scratch_started,
    table_expectations,
    unmatched_rules,
)

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 26, 2, 0, 0, tzinfo=UTC)
SHA = "0" * 64


def backup(name: str, days_ago: int) -> BackupFile:
    return BackupFile(f"app/{name}", NOW - timedelta(days=days_ago), 100)


LISTING = [backup("2026-11-24-02-00-00.zip", 2), backup("2026-11-26-02-00-00.zip", 0),
           backup("2026-11-25-02-00-00.zip", 1)]


def database(name: str = "app", **extra: Any) -> ManifestDatabase:
    tables = (TableStat("public", "invoices", 1000, ("id", "total", "created_at")),
              TableStat("audit", "events_2024", 12, ("id", "action")))
    return ManifestDatabase(member=f"db-dumps/postgresql-{name}.sql.gz", conn_id=f"{name}_db", database=name,
                            format="plain", compression="gzip:6", snapshot_id="s", server_version="17",
                            pg_dump_version="17", total_rows=1012, tables=tables, **extra)


def manifest(*databases: ManifestDatabase, members: tuple[str, ...] = ()) -> Manifest:
    names = [n for db in databases for n in database_members(db)] + list(members)
    return Manifest(1, NOW, "app", "2026-11-26-02-00-00.zip", {}, {}, "aes256", tuple(databases), 0, 0, 0,
                    tuple(ManifestMember(n, 0, SHA) for n in names))


# ---------------------------------------------------------------------------- which backup


@pytest.mark.parametrize(("wanted", "expected"), [
    ("latest", "app/2026-11-26-02-00-00.zip"),
    ("", "app/2026-11-26-02-00-00.zip"),
    ("2026-11-24-02-00-00.zip", "app/2026-11-24-02-00-00.zip"),
    ("app/2026-11-25-02-00-00.zip", "app/2026-11-25-02-00-00.zip"),
])
def test_choose_backup(wanted: str, expected: str) -> None:
    assert choose_backup(LISTING, wanted, destination="local").path == expected


@pytest.mark.parametrize(("listing", "wanted", "message"), [
    ([], "latest", "Destination local holds no backup to restore; run backup_daily first or choose another"),
    (LISTING, "2026-01-01-00-00-00.zip", "Destination local has no backup named '2026-01-01-00-00-00.zip'; the "
                                         "newest are: 2026-11-26-02-00-00.zip, 2026-11-25-02-00-00.zip, "
                                         "2026-11-24-02-00-00.zip (or use 'latest')."),
    (LISTING, "../secret.zip", "backup must be 'latest' or an archive name such as 2026-11-26-02-00-00.zip, got "
                               "'../secret.zip'."),
    (LISTING, "/etc/passwd", "backup must be 'latest' or an archive name"),
])
def test_choose_backup_refuses(listing: list[BackupFile], wanted: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        choose_backup(listing, wanted, destination="local")


# ---------------------------------------------------------------------------- which members


def test_file_members_are_every_member_but_the_databases() -> None:
    with_globals = database("crm", roles_member="db-dumps/postgresql-crm.roles.sql",
                            database_member="db-dumps/postgresql-crm.database.json")
    plan = manifest(database(), with_globals, members=("uploads/", "uploads/a.pdf", ".env"))
    assert [m.name for m in file_members(plan)] == ["uploads/", "uploads/a.pdf", ".env"]
    assert database_members(with_globals) == ("db-dumps/postgresql-crm.sql.gz", "db-dumps/postgresql-crm.roles.sql",
                                              "db-dumps/postgresql-crm.database.json")
    assert database_members(database()) == ("db-dumps/postgresql-app.sql.gz",)


# ---------------------------------------------------------------------------- which names


def test_scratch_names_are_unique_per_database_and_recognisable() -> None:
    started = datetime(2026, 11, 26, 3, 4, 5, tzinfo=UTC)
    assert scratch_name(started) == "backup_drill_20261126030405"
    assert scratch_names(started, 3) == ["backup_drill_20261126030405", "backup_drill_20261126030405_2",
                                         "backup_drill_20261126030405_3"]
    assert all(is_scratch_name(n) for n in scratch_names(started, 3))
    assert scratch_started("backup_drill_20261126030405_2") == started
    for other in ("app", "backup_drill_", "backup_drill_2026", "backup_drill_20261126030405x", "xbackup_drill_1"):
        assert not is_scratch_name(other) and scratch_started(other) is None


def test_restore_names_one_per_database() -> None:
    plan = manifest(database("app"), database("crm"))
    assert restore_names(plan, ["app_restored", "crm_restored"]) == ["app_restored", "crm_restored"]
    with pytest.raises(ConfigError, match=r"holds 2 database\(s\) \(app, crm\) but 1 new name\(s\) were given"):
        restore_names(plan, ["app_restored"])
    with pytest.raises(ConfigError, match="must differ"):
        restore_names(plan, ["same", "same"])
    with pytest.raises(ConfigError, match="is not a PostgreSQL database name"):
        restore_names(plan, ["x" * 64, "y"])


# ---------------------------------------------------------------------------- what the data must hold


def test_expectations_come_from_the_manifest_and_the_config() -> None:
    rules = {"public.invoices": TableRules(not_null=("total",), freshness_column="created_at",
                                           freshness_max_hours=26)}
    invoices, events = table_expectations(database(), rules, NOW)
    assert (invoices.qualified_name, invoices.row_count, invoices.columns) == (
        "public.invoices", 1000, ("id", "total", "created_at"))
    assert invoices.not_null == ("total",) and invoices.freshness_column == "created_at"
    assert invoices.fresh_since == NOW - timedelta(hours=26), "measured from the backup, not from now"
    assert (events.qualified_name, events.row_count, events.not_null, events.fresh_since) == (
        "audit.events_2024", 12, (), None)


def test_rules_for_tables_the_backup_does_not_hold_are_named() -> None:
    rules = {"public.invoices": TableRules(), "public.invoicez": TableRules()}
    assert unmatched_rules(manifest(database()), rules) == ["public.invoicez"]


# ---------------------------------------------------------------------------- the restore_drill config section


def _config(section: Any) -> Any:
    raw = yaml.safe_load((ROOT / "include" / "backup_config.yaml").read_text())
    raw["restore_drill"] = section
    return parse_config(raw).restore_drill


def test_restore_drill_defaults_and_the_shipped_file() -> None:
    drill = _config(None)
    assert (drill.schedule, drill.tries, drill.retry_delay, drill.target_conn_id, drill.jobs, drill.expectations,
            drill.exact_checks) == (None, 2, 60, None, 2, {}, "sql")
    shipped = parse_config(yaml.safe_load((ROOT / "include" / "backup_config.yaml").read_text())).restore_drill
    assert shipped.schedule is None and shipped.tries >= 2


def test_restore_drill_settings() -> None:
    drill = _config({"schedule": "0 4 1 * *", "target_conn_id": "scratch_pg", "jobs": 4, "tries": 3,
                     "exact_checks": "great_expectations", "expectations": {"invoices": {"not_null": ["customer_id"],
                                                   "freshness": {"column": "created_at", "max_hours": 26}},
                                      "audit.events_2024": {"not_null": ["action"]}}})
    assert (drill.schedule, drill.target_conn_id, drill.jobs, drill.tries) == ("0 4 1 * *", "scratch_pg", 4, 3)
    assert drill.exact_checks == "great_expectations"
    assert drill.expectations == {
        "public.invoices": TableRules(("customer_id",), "created_at", 26.0),
        "audit.events_2024": TableRules(("action",), None, None),
    }


@pytest.mark.parametrize(("section", "message"), [
    ({"schedule": "monthly"}, "restore_drill.schedule must be a five-field cron expression"),
    ({"jobs": 0}, "restore_drill.jobs must be a whole number 1–64, got 0."),
    ({"tries": 0}, "restore_drill.tries must be a whole number ≥ 1, got 0."),
    ({"target_conn_id": "has space"}, "restore_drill.target_conn_id must be a name of letters"),
    ({"expectations": {"invoices": {"unique": ["id"]}}},
     "restore_drill.expectations.invoices has unknown key 'unique'; accepted keys are: freshness, not_null."),
    ({"expectations": {"invoices": {"freshness": {"column": "created_at"}}}},
     "restore_drill.expectations.invoices.freshness.max_hours is required but missing."),
    ({"expectations": {".x": {}}}, "restore_drill.expectations must map table names such as public.invoices"),
    ({"nightly": True}, "restore_drill has unknown key 'nightly'"),
    ({"exact_checks": "gx"}, "restore_drill.exact_checks must be one of 'sql', 'great_expectations'"),
])
def test_restore_drill_config_errors_name_the_key(section: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(section)
    assert str(caught.value).startswith(message)
