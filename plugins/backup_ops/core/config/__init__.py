"""The one configuration file, loaded into typed, validated, immutable models.

The file mirrors laravel-backup's ``config/backup.php`` (see docs/configuration.md). Every
value is checked once, when it is read, so a bad value fails at DAG parse time with one sentence
that names the key path, the value received and what is accepted.

``model`` holds the values, ``load`` reads and validates the file, ``node`` is the typed accessor
the validation uses. The rest of backup-ops imports from this package.
"""

from backup_ops.core.config.load import CONFIG_ENV, DEFAULT_CONFIG_PATH, config_path, load_config, parse_config
from backup_ops.core.config.model import (
    BackupConfig,
    BackupSettings,
    CleanupSettings,
    Compression,
    DatabaseSource,
    DestinationConfig,
    DestinationSettings,
    DumpFormat,
    Encryption,
    FileSource,
    LocalDestinationConfig,
    MonitorSettings,
    NotificationSettings,
    RestoreDrillSettings,
    RetentionSettings,
    S3DestinationConfig,
    SecretRef,
    StagingSettings,
    TableRules,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_PATH",
    "BackupConfig",
    "BackupSettings",
    "CleanupSettings",
    "Compression",
    "DatabaseSource",
    "DestinationConfig",
    "DestinationSettings",
    "DumpFormat",
    "Encryption",
    "FileSource",
    "LocalDestinationConfig",
    "MonitorSettings",
    "NotificationSettings",
    "RestoreDrillSettings",
    "RetentionSettings",
    "S3DestinationConfig",
    "SecretRef",
    "StagingSettings",
    "TableRules",
    "config_path",
    "load_config",
    "parse_config",
]
