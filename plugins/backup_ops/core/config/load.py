"""Reading the config file: YAML → validated models, every bad value named with its key path."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from backup_ops.core.config.model import (
    CHANNELS,
    BackupConfig,
    BackupSettings,
    CleanupSettings,
    Compression,
    CustomCheckSpec,
    DatabaseSource,
    DestinationConfig,
    DestinationSettings,
    FileSource,
    LocalDestinationConfig,
    MailChannel,
    MonitorSettings,
    NotificationSettings,
    RestoreDrillSettings,
    RetentionSettings,
    S3DestinationConfig,
    SecretRef,
    SlackChannel,
    StagingSettings,
    TableRules,
    UiSettings,
    WebhookChannel,
)
from backup_ops.core.config.node import ConfigNode
from backup_ops.core.errors import ConfigError
from backup_ops.core.notification import EVENTS, FAILURE_EVENTS
from backup_ops.core.pg_dump_args import extra_args_problem

CONFIG_ENV = "BACKUP_OPS_CONFIG"
DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[4] / "include" / "backup_config.yaml"

# zstd's levels 20–22 ("ultra") need 160–640 MB per worker, more than a backup may take (150 MB RSS).
_COMPRESSION_LEVELS = {"gzip": (1, 9), "zstd": (1, 19), "lz4": (1, 12)}
MAX_DEADLINE_MINUTES = 23 * 60  # backup_daily's dagrun_timeout


def config_path() -> Path:
    """The config file in use: ``$BACKUP_OPS_CONFIG`` or ``include/backup_config.yaml``."""
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: str | os.PathLike[str] | None = None) -> BackupConfig:
    """Read and validate the YAML config file; raises ConfigError with a one-sentence reason."""
    import yaml  # cheap, but only needed here

    file = Path(path) if path is not None else config_path()
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"Config file {file} does not exist; create it (see docs/configuration.md) or point {CONFIG_ENV} at one."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Config file {file} cannot be read: {exc.strerror}.") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"Config file {file} is not valid YAML{where}: {getattr(exc, 'problem', exc)}.") from exc
    config = parse_config(raw if raw is not None else {}, base_dir=file.parent)
    return replace(config, source_path=file)


def parse_config(raw: Any, base_dir: Path | None = None) -> BackupConfig:
    """Validate a config mapping (as read from YAML) into a BackupConfig."""
    root = ConfigNode(raw, "", base_dir or Path.cwd())
    root.require_mapping()
    root.only_keys({"backup", "cleanup", "monitor", "notifications", "restore_drill", "ui"})
    return BackupConfig(
        backup=_parse_backup(root.child("backup", required=True)),
        cleanup=_parse_cleanup(root.child("cleanup")),
        monitor=_parse_monitor(root.child("monitor")),
        notifications=_parse_notifications(root.child("notifications")),
        restore_drill=_parse_restore_drill(root.child("restore_drill")),
        ui=_parse_ui(root.child("ui")),
    )


def _parse_backup(node: ConfigNode) -> BackupSettings:
    node.require_mapping()
    node.only_keys({"name", "source", "destination", "staging_directory", "password", "encryption",
                    "tries", "retry_delay", "schedule", "deadline_minutes", "staging", "files_queue"})
    name = node.child("name", required=True).name()
    source = node.child("source", required=True)
    source.require_mapping()
    source.only_keys({"files", "databases", "pg_bin_dir"})
    files = _parse_files(source.child("files"))
    databases = _parse_databases(source.child("databases"))
    pg_bin = source.child("pg_bin_dir")
    destination = _parse_destination(node.child("destination", required=True))
    password_node = node.child("password")
    password = _parse_secret_ref(password_node) if password_node.present else None
    enc_node = node.child("encryption")
    encryption: str = enc_node.choice(("aes256", "aes192", "aes128", "none"), default="aes256")
    if password is None and enc_node.present and encryption != "none":
        raise ConfigError(
            f"backup.encryption is {encryption!r} but backup.password is not set; set a password reference "
            "or use encryption: none."
        )
    if password is None:
        encryption = "none"
    staging = node.child("staging_directory").path(default=Path("/tmp/backup-ops-staging"))
    return BackupSettings(
        name=name,
        files=files,
        databases=databases,
        destination=destination,
        staging_directory=staging,
        pg_bin_dir=pg_bin.optional_path(),
        password=password,
        encryption=encryption,  # type: ignore[arg-type]
        tries=node.child("tries").integer(default=1, minimum=1),
        retry_delay=node.child("retry_delay").integer(default=0, minimum=0),
        schedule=node.child("schedule").cron(default="0 2 * * *"),
        deadline_minutes=_parse_deadline_minutes(node.child("deadline_minutes")),
        staging=_parse_staging(node.child("staging")),
        files_queue=node.child("files_queue").name() if node.child("files_queue").present else None,
    )


def _parse_staging(node: ConfigNode) -> StagingSettings | None:
    """``backup.staging``: ``file:///path`` or ``s3://bucket/prefix``, as a string or ``{url, conn_id}``."""
    if not node.present or node.value is None:
        return None
    if isinstance(node.value, str):
        url, conn_id = node.string(), None
    else:
        node.require_mapping()
        node.only_keys({"url", "conn_id"})
        url = node.child("url", required=True).string()
        conn_node = node.child("conn_id")
        conn_id = conn_node.name() if conn_node.present else None
    scheme, sep, rest = url.partition("://")
    if scheme == "file" and sep and rest.startswith("/"):
        if conn_id:
            node.fail("a file:// URL without conn_id (a connection is for s3:// staging)")
        return StagingSettings(url="file://" + str(Path(rest)))
    if scheme == "s3" and sep and rest.split("/", 1)[0]:
        bucket, _, prefix = rest.partition("/")
        return StagingSettings(url=f"s3://{bucket}/{prefix.strip('/')}".rstrip("/"), conn_id=conn_id or "aws_default")
    return node.fail("file:///absolute/folder or s3://bucket/prefix")


def _parse_deadline_minutes(node: ConfigNode) -> int | None:
    """``backup.deadline_minutes``: absent → 120; null or 0 → no late-backup alert.

    At most 1380: backup_daily's dagrun_timeout (23 h) fails a run still going then, and that
    failure is notified as backup_failed.
    """
    if node.present and node.value is None:
        return None
    minutes = node.integer(default=BackupSettings.deadline_minutes, minimum=0, maximum=MAX_DEADLINE_MINUTES)
    return minutes or None


def _parse_files(node: ConfigNode) -> FileSource:
    if not node.present or node.value is None:
        return FileSource()
    node.require_mapping()
    node.only_keys({"include", "exclude", "follow_links", "ignore_unreadable_directories", "relative_path",
                    "fail_on"})
    relative_path = node.child("relative_path").optional_path()
    anchor = relative_path or node.base_dir

    def paths(key: str) -> tuple[Path, ...]:
        child = node.child(key)
        result = []
        for item in child.items():
            raw = Path(item.string()).expanduser()
            if not str(raw).strip():
                item.fail("a file or directory path")
            result.append(raw if raw.is_absolute() else anchor / raw)
        return tuple(result)

    include = paths("include")
    if relative_path is not None:
        outside = [p for p in include if not p.is_relative_to(relative_path)]
        if outside:
            raise ConfigError(
                f"{node.path_str}.include has {outside[0]}, which is outside relative_path {relative_path}; "
                "member names are relative to relative_path, so move relative_path up or drop that include."
            )
    return FileSource(
        include=include,
        exclude=paths("exclude"),
        follow_links=node.child("follow_links").boolean(default=False),
        ignore_unreadable_directories=node.child("ignore_unreadable_directories").boolean(default=False),
        relative_path=relative_path,
        fail_on=_parse_fail_on(node.child("fail_on")),
    )


def _parse_fail_on(node: ConfigNode) -> tuple[str, ...]:
    """``source.files.fail_on``: the skip reasons that fail the run (absent or null: the default)."""
    from backup_ops.core.models import FAILABLE_SKIP_REASONS

    if not node.present or node.value is None:
        return FileSource().fail_on
    reasons: list[str] = []
    for item in node.items():
        if item.value == "unreadable_directory":
            raise ConfigError(
                f"{item.path_str} is 'unreadable_directory', which is set by ignore_unreadable_directories "
                "(false, the default, fails the run on an unreadable directory); remove it from fail_on."
            )
        reasons.append(item.choice(FAILABLE_SKIP_REASONS))
    return tuple(dict.fromkeys(reasons))


def _parse_databases(node: ConfigNode) -> tuple[DatabaseSource, ...]:
    dbs: list[DatabaseSource] = []
    seen: set[str] = set()
    for item in node.items():
        if isinstance(item.value, str):
            conn_id = item.name()
            dbs.append(DatabaseSource(conn_id=conn_id))
        else:
            item.require_mapping()
            item.only_keys({"conn_id", "format", "compression", "include_tables", "exclude_tables",
                            "extra_args", "timeout"})
            conn_id = item.child("conn_id", required=True).name()
            include = item.child("include_tables").string_list()
            exclude = item.child("exclude_tables").string_list()
            if include and exclude:
                raise ConfigError(
                    f"{item.path_str}: include_tables and exclude_tables cannot be used together; keep one of them."
                )
            extra = item.child("extra_args").string_list()
            # Every spelling of the options backup-ops sets itself, and positional arguments (another database).
            problem = extra_args_problem(extra)
            if problem is not None:
                raise ConfigError(f"{item.path_str}.extra_args must not contain {problem}.")
            timeout_node = item.child("timeout")
            dbs.append(
                DatabaseSource(
                    conn_id=conn_id,
                    format=item.child("format").choice(("plain", "custom"), default="plain"),  # type: ignore[arg-type]
                    compression=_parse_compression(item.child("compression")),
                    include_tables=include,
                    exclude_tables=exclude,
                    extra_args=extra,
                    timeout=timeout_node.integer(minimum=1) if timeout_node.present and timeout_node.value is not None
                    else None,
                )
            )
        if conn_id in seen:
            raise ConfigError(f"{item.path_str}: connection id {conn_id!r} is listed twice in source.databases.")
        seen.add(conn_id)
    return tuple(dbs)


def _parse_compression(node: ConfigNode) -> Compression:
    if not node.present or node.value is None:
        return Compression()
    value = node.value
    if isinstance(value, int) and not isinstance(value, bool):
        text = f"gzip:{value}"
    elif isinstance(value, str):
        text = value.strip().lower()
    else:
        node.fail("a string such as 'gzip:3', 'zstd:3', 'lz4' or 'none', or a gzip level 1–9")
    if text in ("none", "0", "gzip:0"):
        return Compression("none", 0)
    method, _, level_text = text.partition(":")
    if method not in _COMPRESSION_LEVELS:
        node.fail("'none', 'gzip[:1-9]', 'zstd[:1-19]' or 'lz4[:1-12]'")
    low, high = _COMPRESSION_LEVELS[method]
    if not level_text:
        return Compression(method, {"gzip": Compression().level, "zstd": 3, "lz4": 1}[method])  # type: ignore[arg-type]
    if not level_text.isdigit() or not low <= int(level_text) <= high:
        node.fail(f"{method} level {low}–{high}")
    return Compression(method, int(level_text))  # type: ignore[arg-type]


def _parse_destination(node: ConfigNode) -> DestinationSettings:
    node.require_mapping()
    node.only_keys({"filename_prefix", "compression_level", "continue_on_failure", "destinations"})
    prefix = node.child("filename_prefix").string(default="")
    if "/" in prefix or "\\" in prefix or prefix in (".", ".."):
        node.child("filename_prefix").fail("a file name prefix without '/' or '\\'")
    level = node.child("compression_level").integer(default=6, minimum=0, maximum=9)
    dests: list[DestinationConfig] = []
    for item in node.child("destinations", required=True).items():
        dests.append(_parse_one_destination(item))
    if not dests:
        node.child("destinations").fail("at least one destination")
    _reject_shared_targets(node, dests)
    names = [d.name for d in dests]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"{node.path_str}.destinations: destination names must be unique, got {', '.join(dupes)} twice."
        )
    return DestinationSettings(
        destinations=tuple(dests),
        filename_prefix=prefix,
        compression_level=level,
        continue_on_failure=node.child("continue_on_failure").boolean(default=False),
    )


def _reject_shared_targets(node: ConfigNode, dests: list[DestinationConfig]) -> None:
    """Two destinations writing to the same place would race each other (and cleanup twice)."""
    seen: dict[str, str] = {}
    for dest in dests:
        where = (f"local:{dest.path}" if isinstance(dest, LocalDestinationConfig)
                 else f"s3://{dest.bucket}/{dest.prefix}")
        if where in seen:
            raise ConfigError(
                f"{node.path_str}.destinations: {seen[where]} and {dest.name} both point at {where}; "
                "give each destination its own path or bucket prefix."
            )
        seen[where] = dest.name


def _parse_one_destination(item: ConfigNode) -> DestinationConfig:
    item.require_mapping()
    kind = item.child("type", required=True).choice(("local", "s3"))
    name = item.child("name", required=True).name()
    if kind == "local":
        item.only_keys({"name", "type", "path"})
        return LocalDestinationConfig(name=name, path=item.child("path", required=True).path())
    item.only_keys({"name", "type", "conn_id", "bucket", "prefix", "upload_args", "part_size_mb", "max_concurrency"})
    bucket = item.child("bucket", required=True).string()
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        item.child("bucket").fail("an S3 bucket name (3–63 lowercase letters, digits, '.' or '-')")
    prefix = item.child("prefix").string(default="").strip("/")
    upload_node = item.child("upload_args")
    upload_args: dict[str, str] = {}
    if upload_node.present and upload_node.value is not None:
        upload_node.require_mapping()
        upload_args = {str(k): str(v) for k, v in upload_node.value.items()}
    return S3DestinationConfig(
        name=name,
        conn_id=item.child("conn_id", required=True).name(),
        bucket=bucket,
        prefix=prefix,
        upload_args=upload_args,
        part_size_mb=item.child("part_size_mb").integer(default=64, minimum=5, maximum=5120),
        max_concurrency=item.child("max_concurrency").integer(default=4, minimum=1, maximum=64),
    )


def _parse_secret_ref(node: ConfigNode) -> SecretRef:
    value = node.value
    accepted = "a reference such as {variable: NAME}, {env: NAME} or {connection: ID}, never the secret itself"
    if isinstance(value, str):
        raise ConfigError(f"{node.path_str} must be {accepted}; got a plain string (value not shown).")
    if not isinstance(value, Mapping) or len(value) != 1:
        node.fail(accepted)
    ((kind, name),) = value.items()
    if kind not in ("variable", "env", "connection") or not isinstance(name, str) or not name.strip():
        node.fail(accepted)
    return SecretRef(kind, name.strip())


def _parse_cleanup(node: ConfigNode) -> CleanupSettings:
    if not node.present or node.value is None:
        return CleanupSettings()
    node.require_mapping()
    node.only_keys({"default_strategy", "schedule", "tries", "retry_delay"})
    strategy = node.child("default_strategy")
    defaults = RetentionSettings()
    retention = defaults
    if strategy.present and strategy.value is not None:
        strategy.require_mapping()
        keys = {
            "keep_all_backups_for_days", "keep_daily_backups_for_days", "keep_weekly_backups_for_weeks",
            "keep_monthly_backups_for_months", "keep_yearly_backups_for_years",
        }
        strategy.only_keys(keys | {"delete_oldest_backups_when_using_more_megabytes_than", "min_backups_kept"})
        values: dict[str, Any] = {k: strategy.child(k).integer(default=getattr(defaults, k), minimum=0) for k in keys}
        limit = strategy.child("delete_oldest_backups_when_using_more_megabytes_than")
        values["delete_oldest_backups_when_using_more_megabytes_than"] = (
            None if limit.present and limit.value is None
            else limit.integer(default=defaults.delete_oldest_backups_when_using_more_megabytes_than, minimum=1)
        )
        values["min_backups_kept"] = strategy.child("min_backups_kept").integer(default=1, minimum=1)
        retention = RetentionSettings(**values)
    return CleanupSettings(
        retention=retention,
        schedule=node.child("schedule").cron(default="0 1 * * *"),
        tries=node.child("tries").integer(default=1, minimum=1),
        retry_delay=node.child("retry_delay").integer(default=0, minimum=0),
    )


def _parse_monitor(node: ConfigNode) -> MonitorSettings:
    if not node.present or node.value is None:
        return MonitorSettings()
    node.require_mapping()
    node.only_keys({"max_age_days", "max_storage_mb", "restore_drill_max_age_days", "schedule", "deep_verify",
                    "custom_checks", "tries", "retry_delay"})
    storage = node.child("max_storage_mb")
    drill = node.child("restore_drill_max_age_days")
    defaults = MonitorSettings()
    return MonitorSettings(
        max_age_days=node.child("max_age_days").number(default=defaults.max_age_days, minimum=0.01),
        max_storage_mb=None if storage.present and storage.value is None else storage.integer(default=5000, minimum=1),
        restore_drill_max_age_days=None if drill.present and drill.value is None
        else drill.integer(default=35, minimum=1),
        schedule=node.child("schedule").cron(default=defaults.schedule),
        deep_verify=node.child("deep_verify").boolean(default=defaults.deep_verify),
        custom_checks=tuple(_parse_custom_check(item) for item in node.child("custom_checks").items()),
        tries=node.child("tries").integer(default=defaults.tries, minimum=1),
        retry_delay=node.child("retry_delay").integer(default=defaults.retry_delay, minimum=0),
    )


_DOTTED_CLASS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+")
_CUSTOM_CHECK_ACCEPTED = ("a dotted path to a class such as 'my_checks.OffsiteCopyCheck', or a mapping "
                          "{class: my_checks.OffsiteCopyCheck, options: {days: 2}}")


def _parse_custom_check(item: ConfigNode) -> CustomCheckSpec:
    """One ``monitor.custom_checks`` entry; the class is imported when the checks run, not here (parse time)."""
    if isinstance(item.value, str):
        path, options = item, None
    elif isinstance(item.value, Mapping):
        item.only_keys({"class", "options"})
        path, options = item.child("class", required=True), item.child("options")
    else:
        item.fail(_CUSTOM_CHECK_ACCEPTED)
    class_path = path.string().strip()
    if not _DOTTED_CLASS.fullmatch(class_path):
        path.fail(_CUSTOM_CHECK_ACCEPTED)
    if options is None or not options.present or options.value is None:
        return CustomCheckSpec(class_path)
    options.require_mapping()
    for key in options.value:
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{options.path_str} must map keyword argument names to values (they are passed "
                              f"as {class_path.rsplit('.', 1)[1]}(**options)), got the key {key!r}.")
    return CustomCheckSpec(class_path, dict(options.value))


def _parse_restore_drill(node: ConfigNode) -> RestoreDrillSettings:
    """``restore_drill``: the drill's schedule (absent or null: by hand only), retries, target server, rules."""
    defaults = RestoreDrillSettings()
    if not node.present or node.value is None:
        return defaults
    node.require_mapping()
    node.only_keys({"schedule", "tries", "retry_delay", "target_conn_id", "jobs", "expectations", "exact_checks"})
    schedule = node.child("schedule")
    target = node.child("target_conn_id")
    return RestoreDrillSettings(
        schedule=schedule.cron(default="") if schedule.present and schedule.value is not None else None,
        tries=node.child("tries").integer(default=defaults.tries, minimum=1),
        retry_delay=node.child("retry_delay").integer(default=defaults.retry_delay, minimum=0),
        target_conn_id=target.name() if target.present and target.value is not None else None,
        jobs=node.child("jobs").integer(default=defaults.jobs, minimum=1, maximum=64),
        expectations=_parse_expectations(node.child("expectations")),
        exact_checks=node.child("exact_checks").choice(("sql", "great_expectations"), default=defaults.exact_checks),
    )


_TABLE_KEY = re.compile(r"[^.\s][^.]*(\.[^.]+)?")


def _parse_expectations(node: ConfigNode) -> dict[str, TableRules]:
    """``restore_drill.expectations``: ``schema.table`` (a bare name is in ``public``) → not_null, freshness."""
    if not node.present or node.value is None:
        return {}
    node.require_mapping()
    rules: dict[str, TableRules] = {}
    for key in node.value:
        if not isinstance(key, str) or not _TABLE_KEY.fullmatch(key.strip()):
            raise ConfigError(f"{node.path_str} must map table names such as public.invoices (or invoices, in "
                              f"schema public) to their rules, got the key {key!r}.")
        table = node.child(key)
        name = key.strip() if "." in key else f"public.{key.strip()}"
        if name in rules:
            raise ConfigError(f"{node.path_str}: table {name} is listed twice.")
        table.require_mapping()
        table.only_keys({"not_null", "freshness"})
        freshness = table.child("freshness")
        column, hours = None, None
        if freshness.present and freshness.value is not None:
            freshness.require_mapping()
            freshness.only_keys({"column", "max_hours"})
            column = freshness.child("column", required=True).string().strip() or freshness.child("column").fail(
                "a column name")
            hours = freshness.child("max_hours", required=True).number(default=0.0, minimum=0.01)
        rules[name] = TableRules(not_null=table.child("not_null").string_list(), freshness_column=column,
                                 freshness_max_hours=hours)
    return rules


def _parse_notifications(node: ConfigNode) -> NotificationSettings:
    """``notifications``: the channels (mail, slack, webhook) and the event → channels routing."""
    if not node.present or node.value is None:
        return NotificationSettings()
    node.require_mapping()
    node.only_keys({"events", "mail", "slack", "webhook", "on_failure", "on_success"})
    channels = NotificationSettings(
        mail=_parse_mail_channel(node.child("mail")),
        slack=_parse_slack_channel(node.child("slack")),
        webhook=_parse_webhook_channel(node.child("webhook")),
    )
    return replace(channels, routes=_parse_routes(node, channels.configured()))


_EMAIL_RE = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RECIPIENTS_ACCEPTED = ("an address, a list of addresses, or {env: NAME} naming an environment variable that "
                        "holds comma-separated addresses")
# notifications.on_failure / on_success: laravel-style shorthand for the mail routing of a run's outcome.
_OUTCOME_SHORTHAND = {
    "on_failure": ("backup_failed", "cleanup_failed", "restore_drill_failed"),
    "on_success": ("backup_successful", "cleanup_successful", "restore_drill_succeeded"),
}


def _parse_routes(node: ConfigNode, configured: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Every event with its channels: the defaults (failures, unhealthy and late → mail), then the config's."""
    events = node.child("events")
    shorthand = [key for key in _OUTCOME_SHORTHAND if node.child(key).present]
    if events.present and shorthand:
        raise ConfigError(f"notifications.{shorthand[0]} is a shorthand for the mail routing in notifications.events; "
                          f"set one or the other, not both.")
    mail: tuple[str, ...] = ("mail",) if "mail" in configured else ()
    routes = {event: mail if event in FAILURE_EVENTS else () for event in EVENTS}
    for key, outcome_events in _OUTCOME_SHORTHAND.items():
        wanted = node.child(key).boolean(default=key == "on_failure")
        routes.update({event: mail if wanted else () for event in outcome_events})
    if events.present and events.value is not None:
        events.require_mapping()
        events.only_keys(set(EVENTS))
        for event in EVENTS:
            child = events.child(event)
            if child.present:
                routes[event] = _parse_channel_list(child, configured)
    return tuple((event, routes[event]) for event in EVENTS)


def _parse_channel_list(node: ConfigNode, configured: tuple[str, ...]) -> tuple[str, ...]:
    """``[mail, slack]`` (a single name or null too): known channels that have a configuration section."""
    items = [node] if isinstance(node.value, str) else node.items()
    channels = []
    for item in items:
        channel = item.choice(CHANNELS)
        if channel not in configured:
            raise ConfigError(f"{node.path_str} sends on {channel}, but notifications.{channel} is not configured; "
                              f"add notifications.{channel} (see docs/configuration.md) or remove {channel} here.")
        channels.append(channel)
    return tuple(dict.fromkeys(channels))


def _parse_mail_channel(node: ConfigNode) -> MailChannel | None:
    if not node.present or node.value is None:
        return None
    node.require_mapping()
    node.only_keys({"to", "from", "conn_id"})
    sender = node.child("from")
    return MailChannel(
        to=_parse_recipients(node.child("to", required=True)),
        sender=sender.string() if sender.present and sender.value is not None else None,
        conn_id=node.child("conn_id").name(default="smtp_default"),
    )


def _parse_recipients(node: ConfigNode) -> tuple[str | SecretRef, ...]:
    """``mail.to``: addresses (a string may hold several, comma-separated) and ``{env: NAME}`` references."""
    recipients: list[str | SecretRef] = []
    for item in [node] if isinstance(node.value, (str, Mapping)) else node.items():
        if isinstance(item.value, Mapping):
            name = item.value.get("env") if len(item.value) == 1 else None
            if not isinstance(name, str) or not _ENV_NAME_RE.fullmatch(name.strip()):
                item.fail(_RECIPIENTS_ACCEPTED)
            recipients.append(SecretRef("env", str(name).strip()))
            continue
        if not isinstance(item.value, str):
            item.fail(_RECIPIENTS_ACCEPTED)
        for address in (part.strip() for part in item.string().split(",")):
            if not _EMAIL_RE.fullmatch(address):
                raise ConfigError(f"{node.path_str}: {address!r} is not a valid email address.")
            recipients.append(address)
    if not recipients:
        node.fail(_RECIPIENTS_ACCEPTED)
    return tuple(recipients)


def _parse_slack_channel(node: ConfigNode) -> SlackChannel | None:
    """``slack``: the Airflow Slack Incoming Webhook connection (its password holds the webhook URL or token)."""
    if not node.present or node.value is None:
        return None
    node.require_mapping()
    node.only_keys({"conn_id"})
    return SlackChannel(conn_id=node.child("conn_id").name(default=SlackChannel.conn_id))


def _parse_webhook_channel(node: ConfigNode) -> WebhookChannel | None:
    """``webhook``: the Airflow HTTP connection (base URL, credentials) and an endpoint below it."""
    if not node.present or node.value is None:
        return None
    node.require_mapping()
    node.only_keys({"conn_id", "endpoint"})
    endpoint = node.child("endpoint")
    return WebhookChannel(conn_id=node.child("conn_id").name(default=WebhookChannel.conn_id),
                          endpoint=endpoint.string() if endpoint.present and endpoint.value is not None else None)


def _parse_ui(node: ConfigNode) -> UiSettings:
    """``ui``: the backup-ops page and ``/backup-ops/health`` (absent or null: the defaults)."""
    defaults = UiSettings()
    if not node.present or node.value is None:
        return defaults
    node.require_mapping()
    node.only_keys({"cache_seconds", "health_requires_auth", "page_size"})
    return UiSettings(
        cache_seconds=node.child("cache_seconds").integer(default=defaults.cache_seconds, minimum=0, maximum=3600),
        health_requires_auth=node.child("health_requires_auth").boolean(default=defaults.health_requires_auth),
        page_size=node.child("page_size").integer(default=defaults.page_size, minimum=1, maximum=500),
    )
