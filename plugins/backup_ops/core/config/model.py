"""The configuration as typed, immutable values: what every other part of backup-ops reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from backup_ops.core.errors import ConfigError

DumpFormat = Literal["plain", "custom"]
Encryption = Literal["aes256", "aes192", "aes128", "none"]


@dataclass(frozen=True)
class Compression:
    """How a database dump is compressed: ``none``, or a method and level.

    The default, gzip level 3, is ISA-L's best level: about the size of ``gzip -6`` at several times its
    speed (``backup_ops.core.compression`` says which engine takes which level).
    """

    method: Literal["none", "gzip", "zstd", "lz4"] = "gzip"
    level: int = 3

    @property
    def suffix(self) -> str:
        """File suffix added after ``.sql`` for plain dumps."""
        return {"none": "", "gzip": ".gz", "zstd": ".zst", "lz4": ".lz4"}[self.method]

    def __str__(self) -> str:
        return "none" if self.method == "none" else f"{self.method}:{self.level}"


@dataclass(frozen=True)
class DatabaseSource:
    """One database to dump, named by its Airflow connection id."""

    conn_id: str
    format: DumpFormat = "plain"
    compression: Compression = field(default_factory=Compression)
    include_tables: tuple[str, ...] = ()
    exclude_tables: tuple[str, ...] = ()
    extra_args: tuple[str, ...] = ()
    timeout: int | None = None


@dataclass(frozen=True)
class FileSource:
    """Which application files go into the archive (laravel-backup ``source.files``).

    ``fail_on`` lists the skip reasons (``backup_ops.core.models.SKIP_REASONS`` codes) that fail
    the run instead of being recorded in the manifest as a warning.
    """

    include: tuple[Path, ...] = ()
    exclude: tuple[Path, ...] = ()
    follow_links: bool = False
    ignore_unreadable_directories: bool = False
    relative_path: Path | None = None
    fail_on: tuple[str, ...] = ("unreadable",)


@dataclass(frozen=True)
class LocalDestinationConfig:
    name: str
    path: Path
    type: Literal["local"] = "local"


@dataclass(frozen=True)
class S3DestinationConfig:
    name: str
    conn_id: str
    bucket: str
    prefix: str = ""
    upload_args: Mapping[str, str] = field(default_factory=dict)
    part_size_mb: int = 64
    max_concurrency: int = 4
    type: Literal["s3"] = "s3"


DestinationConfig = LocalDestinationConfig | S3DestinationConfig


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives; the file only ever holds the reference."""

    kind: Literal["variable", "env", "connection"]
    name: str

    def __str__(self) -> str:
        return f"{{{self.kind}: {self.name}}}"


@dataclass(frozen=True)
class DestinationSettings:
    destinations: tuple[DestinationConfig, ...]
    filename_prefix: str = ""
    compression_level: int = 6
    continue_on_failure: bool = False

    def names(self) -> list[str]:
        return [d.name for d in self.destinations]


@dataclass(frozen=True)
class StagingSettings:
    """``backup.staging``: where a run's dumps, file listing and archive wait between its tasks.

    ``file:///…`` (the default: ``backup.staging_directory``) is a folder every task of a run must
    see (one host, or a shared volume). ``s3://bucket/prefix`` (with ``conn_id``, an Airflow AWS
    connection) is reachable from any worker: each task then works in a private folder below
    ``backup.staging_directory`` on its own host and hands its output over through the bucket.
    """

    url: str
    conn_id: str | None = None

    @property
    def local_root(self) -> Path | None:
        """The folder when staging is ``file://``, else None."""
        return Path(self.url[len("file://"):]) if self.url.startswith("file://") else None


@dataclass(frozen=True)
class BackupSettings:
    name: str
    files: FileSource
    databases: tuple[DatabaseSource, ...]
    destination: DestinationSettings
    staging_directory: Path
    pg_bin_dir: Path | None = None
    password: SecretRef | None = None
    encryption: Encryption = "none"
    tries: int = 1
    retry_delay: int = 0
    schedule: str = "0 2 * * *"
    deadline_minutes: int | None = 120
    """Minutes after a run is queued by when it must be over, else ``backup_late`` is sent; None: no alert."""
    staging: StagingSettings | None = None
    """None: ``file://`` + ``staging_directory`` (see ``staging_location``)."""
    files_queue: str | None = None
    """The Celery queue of collect_files and build_archive (None: Airflow's default queue)."""

    @property
    def staging_location(self) -> StagingSettings:
        return self.staging or StagingSettings(url=f"file://{self.staging_directory}")


@dataclass(frozen=True)
class RetentionSettings:
    """``cleanup.default_strategy``, defaulting to the shipped file's values.

    laravel-backup's own defaults are shorter: ``backup_ops.core.retention.LARAVEL_BACKUP_DEFAULTS``.
    """

    keep_all_backups_for_days: int = 7
    keep_daily_backups_for_days: int = 30
    keep_weekly_backups_for_weeks: int = 12
    keep_monthly_backups_for_months: int = 12
    keep_yearly_backups_for_years: int = 3
    delete_oldest_backups_when_using_more_megabytes_than: int | None = 5000
    min_backups_kept: int = 1


@dataclass(frozen=True)
class CleanupSettings:
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    schedule: str = "0 1 * * *"
    tries: int = 1
    retry_delay: int = 0


@dataclass(frozen=True)
class CustomCheckSpec:
    """One ``monitor.custom_checks`` entry: a class by dotted path and the keyword options it is built with."""

    class_path: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MonitorSettings:
    """``monitor``: the health checks ``backup_monitor`` and ``list`` run on every destination.

    None for ``max_storage_mb`` or ``restore_drill_max_age_days`` switches that check off.
    """

    max_age_days: float = 1.0
    max_storage_mb: int | None = 5000
    restore_drill_max_age_days: int | None = 35
    schedule: str = "0 */6 * * *"
    deep_verify: bool = False
    custom_checks: tuple[CustomCheckSpec, ...] = ()
    tries: int = 2
    retry_delay: int = 60


@dataclass(frozen=True)
class TableRules:
    """``restore_drill.expectations.<schema.table>``: what a restored table must hold beyond the manifest's counts.

    ``not_null``: columns without a NULL. ``freshness_column`` with ``freshness_max_hours``: the newest
    value of that column is at most that many hours older than the backup (a stale application
    or a backup of the wrong database shows here).
    """

    not_null: tuple[str, ...] = ()
    freshness_column: str | None = None
    freshness_max_hours: float | None = None


@dataclass(frozen=True)
class RestoreDrillSettings:
    """``restore_drill``: the ``restore_drill`` DAG and ``python -m backup_ops restore``.

    ``schedule`` None: triggered by hand only. ``target_conn_id`` None: the scratch database goes
    on the server of each database's own (source) connection. ``jobs``: ``pg_restore -j`` for
    custom-format dumps. ``expectations`` maps ``schema.table`` to its extra rules, which run in Great
    Expectations. ``exact_checks``: where every table's exact row count and column set are checked,
    ``sql`` (two queries per table, Great Expectations not imported unless a rule needs it) or
    ``great_expectations``.
    """

    schedule: str | None = None
    tries: int = 2
    retry_delay: int = 60
    target_conn_id: str | None = None
    jobs: int = 2
    expectations: Mapping[str, TableRules] = field(default_factory=dict)
    exact_checks: str = "sql"


@dataclass(frozen=True)
class UiSettings:
    """``ui``: the backup-ops page in Airflow's UI and ``/backup-ops/health`` (see docs/ui.md).

    ``cache_seconds``: how long what the destinations hold is reused before it is read again (0:
    on every request). ``health_requires_auth``: whether ``/backup-ops/health`` needs an Airflow
    login (by default it is public, for uptime monitors). ``page_size``: backups per page.
    """

    cache_seconds: int = 60
    health_requires_auth: bool = False
    page_size: int = 25


CHANNELS = ("mail", "slack", "webhook")
"""The notification channels, each an Airflow provider's notifier (see backup_ops.adapters.notify)."""


@dataclass(frozen=True)
class MailChannel:
    """``notifications.mail``: the SMTP provider's notifier, through an Airflow SMTP connection.

    Each ``to`` entry is an address, or an ``{env: NAME}`` reference to a variable holding
    comma-separated addresses, read on the worker when a mail is sent.
    """

    to: tuple[str | SecretRef, ...]
    sender: str | None = None
    conn_id: str = "smtp_default"


@dataclass(frozen=True)
class SlackChannel:
    """``notifications.slack``: the Slack provider's webhook notifier; the connection holds the webhook URL."""

    conn_id: str = "slack_default"


@dataclass(frozen=True)
class WebhookChannel:
    """``notifications.webhook``: the HTTP provider's notifier POSTs a JSON body to the connection's URL + endpoint."""

    conn_id: str = "http_default"
    endpoint: str | None = None


@dataclass(frozen=True)
class NotificationSettings:
    """``notifications``: the channels each event is sent on, and how each channel is reached.

    ``routes`` lists every event with its channels (none: never sent); only configured channels
    appear in it (``load`` refuses a route to an unconfigured one).
    """

    routes: tuple[tuple[str, tuple[str, ...]], ...] = ()
    mail: MailChannel | None = None
    slack: SlackChannel | None = None
    webhook: WebhookChannel | None = None

    def channels_for(self, event: str) -> tuple[str, ...]:
        """The channels ``event`` is sent on (empty: it is never sent)."""
        return dict(self.routes).get(event, ())

    def configured(self) -> tuple[str, ...]:
        """The channels that have a configuration section, in CHANNELS order."""
        return tuple(name for name in CHANNELS if getattr(self, name) is not None)


@dataclass(frozen=True)
class BackupConfig:
    """The whole validated configuration."""

    backup: BackupSettings
    cleanup: CleanupSettings
    monitor: MonitorSettings
    notifications: NotificationSettings
    source_path: Path | None = None
    restore_drill: RestoreDrillSettings = field(default_factory=RestoreDrillSettings)
    ui: UiSettings = field(default_factory=UiSettings)

    def destination(self, name: str) -> DestinationConfig:
        """The destination called ``name``; the error lists the valid names."""
        for dest in self.backup.destination.destinations:
            if dest.name == name:
                return dest
        valid = ", ".join(self.backup.destination.names())
        raise ConfigError(f"There is no backup destination named {name!r}; configured destinations are: {valid}.")

    def database(self, conn_id: str) -> DatabaseSource:
        """The database source for ``conn_id``; the error lists the configured ones."""
        for db in self.backup.databases:
            if db.conn_id == conn_id:
                return db
        valid = ", ".join(d.conn_id for d in self.backup.databases) or "(none)"
        raise ConfigError(
            f"There is no database with connection id {conn_id!r} in source.databases; configured: {valid}."
        )
