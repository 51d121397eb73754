"""Config validation: the shipped file loads, and each bad value fails with its one-sentence message."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from backup_ops.core.config import Compression, SecretRef, load_config, parse_config
from backup_ops.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "include" / "backup_config.yaml"


def minimal() -> dict:
    return {
        "backup": {
            "name": "app",
            "source": {"files": {"include": ["/srv/app/.env"]}, "databases": ["app_db"]},
            "destination": {"destinations": [{"name": "local", "type": "local", "path": "/var/backups"}]},
        }
    }


def with_value(path: str, value: object) -> dict:
    """The minimal config with one dotted key set (list indexes as numbers)."""
    raw = copy.deepcopy(minimal())
    node: object = raw
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})  # type: ignore[index]
    last = keys[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value  # type: ignore[index]
    return raw


def test_shipped_config_has_the_deployment_defaults(monkeypatch):
    monkeypatch.delenv("BACKUP_OPS_APP_ROOT", raising=False)
    config = load_config(SHIPPED)
    r = config.cleanup.retention
    assert (r.keep_all_backups_for_days, r.keep_daily_backups_for_days, r.keep_weekly_backups_for_weeks,
            r.keep_monthly_backups_for_months, r.keep_yearly_backups_for_years,
            r.delete_oldest_backups_when_using_more_megabytes_than) == (7, 30, 12, 12, 3, 5000)
    assert (config.monitor.max_age_days, config.monitor.max_storage_mb) == (1.0, 5000)
    assert (config.backup.schedule, config.cleanup.schedule, config.monitor.schedule) == (
        "0 2 * * *", "0 1 * * *", "0 */6 * * *")
    included = {p.relative_to(config.backup.files.relative_path).as_posix() for p in config.backup.files.include}
    assert {"storage/app/certificates", "storage/app/public/uploads", ".env", "storage/logs", "config"} == included
    assert config.backup.password == SecretRef("variable", "backup_archive_password")
    assert config.backup.encryption == "aes256"
    assert config.backup.databases[0].compression == Compression("gzip", 3)


def test_defaults_when_optional_sections_are_missing():
    config = parse_config(minimal())
    assert config.backup.encryption == "none"          # no password → no encryption
    assert config.backup.databases[0].format == "plain"
    assert config.backup.databases[0].compression == Compression("gzip", 3)  # ISA-L's best level
    assert config.backup.destination.continue_on_failure is False
    assert config.backup.files.follow_links is False
    assert config.backup.files.ignore_unreadable_directories is False
    assert config.cleanup.retention.min_backups_kept == 1


def test_env_expansion_and_relative_includes(monkeypatch, tmp_path):
    monkeypatch.setenv("APP_ROOT", str(tmp_path))
    raw = minimal()
    raw["backup"]["source"]["files"] = {"relative_path": "${APP_ROOT}", "include": ["uploads", f"{tmp_path}/x"],
                                        "exclude": ["uploads/tmp"]}
    files = parse_config(raw).backup.files
    assert files.relative_path == tmp_path
    assert files.include == (tmp_path / "uploads", tmp_path / "x")
    assert files.exclude == (tmp_path / "uploads" / "tmp",)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("backup.destination.compression_level", 12,
         "backup.destination.compression_level must be a whole number 0–9, got 12."),
        ("backup.destination.compression_level", "9",
         "backup.destination.compression_level must be a whole number 0–9, got '9'."),
        ("backup.name", "my app", "backup.name must be a name of letters, digits"),
        ("backup.encryption", "des",
         "backup.encryption must be one of 'aes256', 'aes192', 'aes128', 'none', got 'des'."),
        ("backup.password", "hunter2", "backup.password must be a reference such as {variable: NAME}"),
        ("backup.password", {"vault": "x"}, "backup.password must be a reference such as {variable: NAME}"),
        ("backup.tries", 0, "backup.tries must be a whole number ≥ 1, got 0."),
        ("backup.schedule", "daily", "backup.schedule must be a five-field cron expression"),
        ("backup.source.databases.0", {"conn_id": "x", "format": "tar"},
         "backup.source.databases[0].format must be one of 'plain', 'custom', got 'tar'."),
        ("backup.source.databases.0", {"conn_id": "x", "compression": "gzip:11"},
         "backup.source.databases[0].compression must be gzip level 1–9, got 'gzip:11'."),
        ("backup.source.databases.0", {"conn_id": "x", "compression": "zstd:22"},
         "backup.source.databases[0].compression must be zstd level 1–19, got 'zstd:22'."),
        ("backup.source.databases.0", {"conn_id": "x", "compression": "brotli"},
         "backup.source.databases[0].compression must be 'none', 'gzip[:1-9]'"),
        ("backup.source.databases.0", {"conn_id": "x", "include_tables": ["a"], "exclude_tables": ["b"]},
         "backup.source.databases[0]: include_tables and exclude_tables cannot be used together"),
        ("backup.source.databases.0", {"conn_id": "x", "extra_args": ["--file=/tmp/x"]},
         "backup.source.databases[0].extra_args must not contain '--file=/tmp/x', which pg_dump reads as --file"),
        ("backup.source.databases.0", {"conn_id": "x", "timeout": -5},
         "backup.source.databases[0].timeout must be a whole number ≥ 1, got -5."),
        ("backup.source.databases.0", {"conn_id": "x", "colour": "red"},
         "backup.source.databases[0] has unknown key 'colour'; accepted keys are:"),
        ("backup.destination.destinations", [],
         "backup.destination.destinations must be at least one destination, got []."),
        ("backup.destination.destinations.0", {"name": "x", "type": "ftp"},
         "backup.destination.destinations[0].type must be one of 'local', 's3', got 'ftp'."),
        ("backup.destination.destinations.0", {"name": "x", "type": "s3", "conn_id": "aws", "bucket": "Bad_Bucket"},
         "backup.destination.destinations[0].bucket must be an S3 bucket name"),
        ("backup.destination.destinations.0", {"name": "x", "type": "local"},
         "backup.destination.destinations[0].path is required but missing."),
        ("backup.destination.filename_prefix", "a/b", "backup.destination.filename_prefix must be a file name prefix"),
        ("backup.staging_directory", "${NO_SUCH_VAR_FOR_TEST}",
         "backup.staging_directory refers to environment variable NO_SUCH_VAR_FOR_TEST, which is not set"),
        ("cleanup.default_strategy", {"keep_all_backups_for_days": -1},
         "cleanup.default_strategy.keep_all_backups_for_days must be a whole number ≥ 0, got -1."),
        ("notifications.mail", {"to": ["not-an-address"]},
         "notifications.mail.to: 'not-an-address' is not a valid email address."),
        ("surprise", 1, "(top level) has unknown key 'surprise'"),
    ],
)
def test_bad_values_name_key_value_and_what_is_accepted(path, value, message):
    with pytest.raises(ConfigError) as info:
        parse_config(with_value(path, value))
    assert message in str(info.value)
    assert str(info.value).count("\n") == 0


def test_plain_password_is_never_echoed():
    with pytest.raises(ConfigError) as info:
        parse_config(with_value("backup.password", "hunter2"))
    assert "hunter2" not in str(info.value)


def test_include_outside_relative_path_rejected():
    raw = minimal()
    raw["backup"]["source"]["files"] = {"relative_path": "/srv/app", "include": ["uploads", "/etc/passwd"]}
    with pytest.raises(ConfigError, match="include has /etc/passwd, which is outside relative_path /srv/app"):
        parse_config(raw)


def test_duplicate_destination_names_rejected():
    raw = minimal()
    raw["backup"]["destination"]["destinations"].append({"name": "local", "type": "local", "path": "/b"})
    with pytest.raises(ConfigError, match="destination names must be unique, got local twice"):
        parse_config(raw)


def test_two_destinations_on_the_same_target_rejected():
    raw = minimal()
    raw["backup"]["destination"]["destinations"] = [
        {"name": "a", "type": "s3", "conn_id": "aws", "bucket": "bkt", "prefix": "prod/"},
        {"name": "b", "type": "s3", "conn_id": "aws2", "bucket": "bkt", "prefix": "prod"},
    ]
    with pytest.raises(ConfigError, match="a and b both point at s3://bkt/prod"):
        parse_config(raw)


def test_duplicate_databases_rejected():
    raw = with_value("backup.source.databases", ["app_db", "app_db"])
    with pytest.raises(ConfigError, match="connection id 'app_db' is listed twice"):
        parse_config(raw)


def test_encryption_without_password_is_an_error():
    with pytest.raises(ConfigError, match="backup.encryption is 'aes256' but backup.password is not set"):
        parse_config(with_value("backup.encryption", "aes256"))


def test_missing_file_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("backup: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line"):
        load_config(broken)


def test_unknown_destination_lists_valid_names():
    config = parse_config(minimal())
    with pytest.raises(ConfigError, match="no backup destination named 'nas'; configured destinations are: local."):
        config.destination("nas")


def test_compression_forms():
    def comp(value: object) -> Compression:
        return parse_config(with_value("backup.source.databases.0", {"conn_id": "x", "compression": value})) \
            .backup.databases[0].compression

    assert comp(9) == Compression("gzip", 9)
    assert comp("gzip") == comp(None) == Compression() == Compression("gzip", 3)  # a bare gzip: the default level
    assert comp(" GZIP:1 ") == Compression("gzip", 1)
    assert comp("zstd") == Compression("zstd", 3)
    assert comp("zstd:19") == Compression("zstd", 19)
    assert comp("lz4:4") == Compression("lz4", 4)
    assert comp("none") == Compression("none", 0)
    assert str(comp("gzip:1")) == "gzip:1"


def test_round_trip_through_yaml(tmp_path):
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(minimal()))
    assert load_config(file).source_path == file


# ---------------------------------------------------------------------------- pg_dump extra_args

EXTRA_ARGS_KEY = "backup.source.databases[0].extra_args must not contain"


@pytest.mark.parametrize(("extra_args", "argument", "reason"), [
    (["--file=/tmp/x"], "'--file=/tmp/x', which pg_dump reads as --file", "writes pg_dump's output"),
    (["-Fc"], "'-Fc', which pg_dump reads as --format", "format key"),
    (["-F", "c"], "'-F', which pg_dump reads as --format", "format key"),
    (["-dother"], "'-dother', which pg_dump reads as --dbname", "which database to dump"),
    (["-vFc"], "'-vFc', which pg_dump reads as --format", "format key"),
    (["-Z9"], "'-Z9', which pg_dump reads as --compress", "compression key"),
    (["-fout"], "'-fout', which pg_dump reads as --file", "writes pg_dump's output"),
    (["-Ot", "invoices"], "'-Ot', which pg_dump reads as --table", "include_tables"),
    (["--format", "custom"], "'--format', which pg_dump reads as --format", "format key"),
    (["--form=c"], "'--form=c', which pg_dump reads as --format", "format key"),
    (["--fil=x"], "'--fil=x', which pg_dump could read as --file or --filter", "writes pg_dump's output"),
    (["--sna=00000003-1"], "'--sna=00000003-1', which pg_dump reads as --snapshot", "snapshot it exported"),
    (["--ta=x"], "'--ta=x', which pg_dump could read as --table or --table-and-children", "include_tables"),
    (["--user=me"], "'--user=me', which pg_dump reads as --username", "who logs in"),
    (["--ho", "db.example"], "'--ho', which pg_dump reads as --host", "where the server is"),
    (["-W"], "'-W', which pg_dump reads as --password", "password"),
    (["-j4"], "'-j4', which pg_dump reads as --jobs", "directory format"),
    (["--exclude-table", "x"], "'--exclude-table', which pg_dump reads as --exclude-table", "exclude_tables"),
    (["otherdb"], "'otherdb', which pg_dump reads as the name of the database to dump", "Airflow connection's"),
    (["--no-comments", "--", "otherdb"], "'otherdb', which pg_dump reads as the name of the database", "--option="),
    (["--lock-wait-timeout", "5s", "x"], "'x', which pg_dump reads as the name of the database", "--option="),
    (["-n"], "'-n' without its value, which pg_dump refuses", "--schema=value"),
], ids=lambda value: " ".join(value) if isinstance(value, list) else None)
def test_extra_args_refuse_every_spelling_of_reserved_options_and_positionals(extra_args, argument, reason):
    raw = with_value("backup.source.databases.0", {"conn_id": "x", "extra_args": extra_args})
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    message = str(info.value)
    assert message.startswith(f"{EXTRA_ARGS_KEY} {argument}")
    assert reason in message and message.count("\n") == 0 and message.endswith(".")


@pytest.mark.parametrize("extra_args", [
    ["--no-comments"], ["-v", "--no-owner"], ["-N", "audit"], ["-Naudit"], ["--schema", "public"],
    ["--exclude-table-data=invoice_items"], ["--table-and-children=x"], ["--lock-wait-timeout", "5s"],
    ["-Ox"], ["--statistics"], ["--no-sync"], ["--quote-all-identifiers"],
])
def test_extra_args_accept_options_backup_ops_does_not_set(extra_args):
    source = parse_config(with_value("backup.source.databases.0", {"conn_id": "x", "extra_args": extra_args}))
    assert source.backup.databases[0].extra_args == tuple(extra_args)


# ---------------------------------------------------------------------------- cron schedules


@pytest.mark.parametrize("key", ["backup.schedule", "cleanup.schedule", "monitor.schedule"])
@pytest.mark.parametrize(("value", "why"), [
    ("61 25 * * *", "the minute field '61' is not valid"),
    ("0 25 * * *", "the hour field '25' is not valid"),
    ("0 2 32 * *", "the day-of-month field '32' is not valid"),
    ("0 2 * 13 *", "the month field '13' is not valid"),
    ("0 2 * * 8", "the day-of-week field '8' is not valid"),
    ("0 2 * * mo", "the day-of-week field 'mo' is not valid"),
    ("0 2 30 2 *", "it never matches a date"),
    ("@reboot", "'@reboot' is not one of Airflow's presets"),
    ("0 2 * *", "it has 4 fields, not 5"),
    ("0 0 2 * * *", "it has 6 fields, not 5"),
])
def test_invalid_cron_names_key_value_and_what_is_accepted(key, value, why):
    section, _ = key.split(".")
    raw = minimal() if section == "backup" else {**minimal(), section: {}}
    raw = copy.deepcopy(raw)
    (raw["backup"] if section == "backup" else raw[section])["schedule"] = value
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    message = str(info.value)
    assert message.startswith(f"{key} must be a five-field cron expression such as '0 2 * * *'")
    assert f"got {value!r}" in message and why in message
    assert "minute 0–59, hour 0–23, day of month 1–31, month 1–12, day of week 0–7" in message
    assert "@daily" in message and message.count("\n") == 0


@pytest.mark.parametrize("value", ["0 2 * * *", "*/15 * * * *", "0 2 * * mon-fri", "0 0 1 jan,jul *",
                                   "30 4 29 2 *", "0 9 1-7 * 1", "@daily", "@hourly", "@quarterly", "@yearly"])
def test_valid_cron_expressions_are_kept_as_written(value):
    raw = copy.deepcopy(minimal())
    raw["backup"]["schedule"] = value
    raw["cleanup"] = {"schedule": value}
    raw["monitor"] = {"schedule": value}
    config = parse_config(raw)
    assert config.backup.schedule == config.cleanup.schedule == config.monitor.schedule == value


# ---------------------------------------------------------------------------- backup.staging, backup.files_queue


def test_staging_defaults_to_the_staging_directory_as_a_file_url() -> None:
    backup = parse_config(with_value("backup.staging_directory", "/var/tmp/stage")).backup
    assert backup.staging is None and backup.files_queue is None
    assert backup.staging_location.url == "file:///var/tmp/stage"
    assert backup.staging_location.local_root == Path("/var/tmp/stage")


@pytest.mark.parametrize(("value", "url", "conn_id"), [
    ("s3://stage-bucket/runs/", "s3://stage-bucket/runs", "aws_default"),
    ("s3://stage-bucket", "s3://stage-bucket", "aws_default"),
    ({"url": "s3://stage-bucket/a/b", "conn_id": "minio"}, "s3://stage-bucket/a/b", "minio"),
    ("file:///srv/shared/staging/", "file:///srv/shared/staging", None),
])
def test_staging_accepts_a_bucket_prefix_or_a_local_folder(value: object, url: str, conn_id: str | None) -> None:
    staging = parse_config(with_value("backup.staging", value)).backup.staging_location
    assert (staging.url, staging.conn_id) == (url, conn_id)
    assert (staging.local_root is None) == url.startswith("s3://")


@pytest.mark.parametrize("value", ["s3://", "https://bucket/x", "file://relative/path", "/plain/path",
                                   {"url": "file:///srv/x", "conn_id": "aws_default"}, {"conn_id": "x"},
                                   {"url": "s3://b", "region": "eu"}])
def test_a_staging_that_is_not_a_file_url_or_a_bucket_is_refused_naming_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"backup\.staging"):
        parse_config(with_value("backup.staging", value))


def test_files_queue_is_a_queue_name() -> None:
    assert parse_config(with_value("backup.files_queue", "files")).backup.files_queue == "files"
    with pytest.raises(ConfigError, match=r"backup\.files_queue"):
        parse_config(with_value("backup.files_queue", "two words"))
