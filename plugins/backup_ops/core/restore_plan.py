"""Restore planning: which backup, which members, which database names, and what the restored data must hold.

Pure decisions for ``restore_drill`` and ``python -m backup_ops restore``, taken from the listing,
the manifest and the config; the adapters then do what they say. A drill restores each database of
the manifest into a scratch database ``backup_drill_<YYYYmmddHHMMSS>`` (``_2``, ``_3`` … for the
second and later databases), a name nothing else uses, so that its teardown can drop it without
ever touching a real database. The validation expectations are the manifest's exact row counts and
column sets, taken inside the dump's snapshot, plus the config's per-table rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from backup_ops.core.config import TableRules
from backup_ops.core.errors import ConfigError
from backup_ops.core.manifest import Manifest, ManifestDatabase, ManifestMember
from backup_ops.core.models import BackupFile

LATEST = "latest"
SCRATCH_PREFIX = "backup_drill_"
_SCRATCH_STAMP = "%Y%m%d%H%M%S"
_SCRATCH_NAME = re.compile(re.escape(SCRATCH_PREFIX) + r"\d{14}(_\d{1,4})?")
_SHOWN_CHOICES = 5


# ---------------------------------------------------------------------------- which backup


def choose_backup(backups: Sequence[BackupFile], wanted: str, *, destination: str) -> BackupFile:
    """The backup ``wanted`` names: ``latest`` (the newest listed) or an archive's file name or key.

    ``backups`` is a destination's listing. Raises ConfigError (not retryable: the listing will not
    change by itself) naming the newest archives when there is no such backup.
    """
    wanted = (wanted or LATEST).strip()
    newest_first = sorted(backups, key=lambda b: b.date, reverse=True)
    if not newest_first:
        raise ConfigError(f"Destination {destination} holds no backup to restore; run backup_daily first or "
                          "choose another destination.")
    if wanted == LATEST:
        return newest_first[0]
    if wanted.startswith("/") or ".." in wanted.split("/"):
        raise ConfigError(f"backup must be 'latest' or an archive name such as 2026-11-26-02-00-00.zip, "
                          f"got {wanted!r}.")
    for backup in newest_first:
        if backup.path == wanted or backup.path.endswith("/" + wanted):
            return backup
    shown = ", ".join(b.path.rsplit("/", 1)[-1] for b in newest_first[:_SHOWN_CHOICES])
    raise ConfigError(f"Destination {destination} has no backup named {wanted!r}; the newest are: {shown} "
                      "(or use 'latest').")


# ---------------------------------------------------------------------------- which members


def database_members(database: ManifestDatabase) -> tuple[str, ...]:
    """The archive members that belong to one database: its dump, its roles and its settings when captured."""
    return (database.member, *(name for name in (database.roles_member, database.database_member) if name))


def file_members(manifest: Manifest) -> list[ManifestMember]:
    """The application's files and directories: every listed member that is not a database's."""
    databases = {name for db in manifest.databases for name in database_members(db)}
    return [m for m in manifest.members if m.name not in databases]


# ---------------------------------------------------------------------------- which database names


def scratch_name(started_at: datetime, index: int = 0) -> str:
    """``backup_drill_<YYYYmmddHHMMSS>`` (UTC) for the first database of a drill, ``…_<index+1>`` for later ones."""
    stamp = started_at.astimezone(UTC).strftime(_SCRATCH_STAMP)
    return f"{SCRATCH_PREFIX}{stamp}" + (f"_{index + 1}" if index else "")


def scratch_names(started_at: datetime, count: int) -> list[str]:
    """One scratch database name per database of the manifest, in manifest order."""
    return [scratch_name(started_at, i) for i in range(count)]


def is_scratch_name(name: str) -> bool:
    """Whether ``name`` is a drill's scratch database name (the only names a drill's teardown drops)."""
    return bool(_SCRATCH_NAME.fullmatch(name))


def scratch_started(name: str) -> datetime | None:
    """When the drill that made scratch database ``name`` started (UTC), or None for any other name."""
    if not is_scratch_name(name):
        return None
    stamp = name[len(SCRATCH_PREFIX):len(SCRATCH_PREFIX) + 14]
    try:
        return datetime.strptime(stamp, _SCRATCH_STAMP).replace(tzinfo=UTC)
    except ValueError:
        return None


def restore_names(manifest: Manifest, requested: Sequence[str]) -> list[str]:
    """The new database names for a real restore: one per database of the manifest, in its order."""
    sources = [db.database for db in manifest.databases]
    if len(requested) != len(sources):
        listed = ", ".join(sources) or "none"
        raise ConfigError(f"The backup holds {len(sources)} database(s) ({listed}) but {len(requested)} new name(s) "
                          "were given; pass --database once per database, in that order.")
    bad = next((name for name in requested if not name or len(name.encode()) > 63 or "\x00" in name), None)
    if bad is not None:
        raise ConfigError(f"--database {bad!r} is not a PostgreSQL database name (1–63 bytes).")
    if len(set(requested)) != len(requested):
        raise ConfigError("--database names must differ from each other.")
    return list(requested)


# ---------------------------------------------------------------------------- what the data must hold


@dataclass(frozen=True)
class TableExpectation:
    """What one restored table must hold: the manifest's row count and columns, and the config's rules."""

    schema: str
    name: str
    row_count: int
    columns: tuple[str, ...]
    not_null: tuple[str, ...] = ()
    freshness_column: str | None = None
    fresh_since: datetime | None = None   # the newest value of freshness_column must not be older

    @property
    def qualified_name(self) -> str:
        return f"{self.schema}.{self.name}"


def table_expectations(database: ManifestDatabase, rules: Mapping[str, TableRules],
                       backup_created_at: datetime) -> list[TableExpectation]:
    """Per table of ``database``: exact row count and column set from the manifest, plus its configured rules.

    A freshness rule's bound is measured from the backup's ``created_at``, not from now: a drill of
    last month's backup checks that the data was fresh when the backup was taken.
    """
    expectations = []
    for table in database.tables:
        rule = rules.get(table.qualified_name)
        column = rule.freshness_column if rule else None
        hours = rule.freshness_max_hours if rule else None
        expectations.append(TableExpectation(
            schema=table.schema,
            name=table.name,
            row_count=table.row_count,
            columns=tuple(table.columns),
            not_null=tuple(rule.not_null) if rule else (),
            freshness_column=column,
            fresh_since=backup_created_at - timedelta(hours=hours) if column and hours is not None else None,
        ))
    return expectations


def unmatched_rules(manifest: Manifest, rules: Mapping[str, TableRules]) -> list[str]:
    """Configured tables that no database of the backup holds (a typo, or a table no longer backed up)."""
    present = {t.qualified_name for db in manifest.databases for t in db.tables}
    return sorted(name for name in rules if name not in present)
