"""The configuration as typed, immutable values: what every other part of backup-ops reads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from backup_ops.core.errors import ConfigError

DumpFormat = Literal["plain", "custom"]
Encryption = Literal["aes256", "aes192", "aes128", "none"]


@dataclass(frozen=True)
class Compression:
    """How a database dump is compressed: ``none``, or a method and level."""

    method: Literal["none", "gzip", "zstd", "lz4"] = "gzip"
    level: int = 6

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
class MonitorSettings:
    max_age_days: float = 1.0
    max_storage_mb: int | None = 5000
    restore_drill_max_age_days: int | None = 35
    schedule: str = "0 */6 * * *"


@dataclass(frozen=True)
class NotificationSettings:
    mail_to: tuple[str, ...] = ()
    mail_from: str | None = None
    smtp_conn_id: str = "smtp_default"
    on_success: bool = False
    on_failure: bool = True


@dataclass(frozen=True)
class BackupConfig:
    """The whole validated configuration."""

    backup: BackupSettings
    cleanup: CleanupSettings
    monitor: MonitorSettings
    notifications: NotificationSettings
    source_path: Path | None = None

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
