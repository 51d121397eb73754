"""Dump one PostgreSQL database with pg_dump: consistent, verified, streamed, secrets out of argv.

Consistency. A ``REPEATABLE READ READ ONLY`` transaction exports its snapshot and pg_dump runs with
``--snapshot=<id>``. While pg_dump streams, the same transaction counts the rows of every table
whose data pg_dump dumps and reads its column names. Counts and dump describe the same instant, so
a restore drill can compare them exactly. The transaction stays open until pg_dump has exited.

Credentials. The password reaches pg_dump only through a 0600 pgpass file in the staging directory
(``PGPASSFILE``), deleted afterwards; host, port, user and database go in ``PG*`` environment
variables. Nothing secret is in argv, in log lines or in error messages, and an unrelated
``PGPASSWORD`` in the worker's environment is not inherited.

Output (``staging_dir/db-dumps/``, mode 0600, sha256 and size computed while writing):

* plain + gzip: ``postgresql-<db>.sql.gz``. pg_dump writes SQL to a pipe and this process gzips it
  (zlib at the configured level, mtime 0, 1 MiB chunks), so compression runs in parallel with
  pg_dump as ``pg_dump | gzip`` would.
* plain + none: ``postgresql-<db>.sql``.
* plain + zstd / lz4: ``postgresql-<db>.sql.zst`` / ``.sql.lz4``, compressed by pg_dump itself
  (``--compress=zstd:N``), which needs pg_dump 16 or later built with that library.
* custom: ``postgresql-<db>.dump`` with ``--format=custom --compress=<method>:<level>``.

No false success. A non-zero exit, a ``pg_dump: error:`` line, empty output, a timeout, a failed
row count, or output that is not complete raises DumpError, and the partial file is deleted.
Completion: plain SQL that this process writes (gzip or uncompressed) must end with pg_dump's
"dump complete" trailer, checked on the bytes as they streamed through (the file's sha256, taken
while writing, is re-checked when the archive is built). zstd/lz4 SQL is decompressed from disk
for the same check through the ``zstandard``/``lz4`` Python
modules or else the ``zstd``/``lz4`` command-line tools; with neither, only the compressed
stream's magic number is checked (and a warning is logged). Custom archives must list (``pg_restore
--list``) a TABLE DATA entry for every counted table, and must restore to ``/dev/null`` without error,
which reads and decompresses every data block.

Table selection. ``include_tables`` / ``exclude_tables`` are passed to pg_dump as patterns, and
the same patterns select the tables that are counted. Supported pattern syntax is pg_dump's:
``*`` and ``?`` wildcards, an optional ``schema.`` qualifier (``db.schema.table`` ignores the
database part), double quotes to keep upper case or match ``*?."`` literally, unquoted letters
folded to lower case. An unqualified pattern matches the tables visible on the database's
search_path, as pg_dump does. Regular-expression characters outside quotes (``[](){}|+^\\``) are
refused: pg_dump would treat them as a regex and the counts could disagree with the dump. With
pg_dump 16 or later, the patterns also select the partitions and inheritance children of
matching tables (``--table-and-children``). Older pg_dump selects only the tables named. These
options in ``extra_args`` are honoured the same way: ``-n/--schema``, ``-N/--exclude-schema``,
``--exclude-table-data[-and-children]``, ``--table-and-children``,
``--exclude-table-and-children``, ``--no-unlogged-table-data``, and the no-data switches
``-s/--schema-only``, ``--no-data`` and ``--statistics-only``. ``--filter`` is refused.

Which tables are counted. Ordinary tables (partitions included) outside the system schemas whose
data pg_dump dumps, counted with ``count(*) FROM ONLY`` like pg_dump's ``COPY``. Partitioned
parents hold no rows of their own: their rows are counted in their partitions, so totals never
count a row twice. Tables that belong to an extension are skipped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from backup_ops.core.config import DatabaseSource
from backup_ops.core.errors import DumpError
from backup_ops.core.models import DumpResult, TableStat

if TYPE_CHECKING:
    import psycopg

_log = logging.getLogger(__name__)

CHUNK_SIZE = 1 << 20
DUMP_DIR = "db-dumps"
_TRAILER = b"-- PostgreSQL database dump complete"
_TAIL_BYTES = 64 * 1024
_STDERR_TAIL_LINES = 6
_APP_NAME = "backup-ops"
# libpq variables a worker may legitimately set for TLS/GSS; every other PG* variable is dropped
# from pg_dump's environment so it cannot redirect the dump or supply a different password.
_INHERITED_PG_VARS = frozenset({
    "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL", "PGSSLCRLDIR", "PGSSLSNI",
    "PGSSLCERTMODE", "PGSSLNEGOTIATION", "PGSSLMINPROTOCOLVERSION", "PGSSLMAXPROTOCOLVERSION",
    "PGREQUIRESSL", "PGGSSENCMODE", "PGGSSLIB", "PGKRBSRVNAME", "PGCHANNELBINDING", "PGREQUIREAUTH",
    "PGREQUIREPEER",
})
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_LZ4_MAGIC = b"\x04\x22\x4d\x18"

CheckKind = Literal["sql", "gzip", "zstd", "lz4", "custom"]


@dataclass(frozen=True)
class PgTarget:
    """How to reach one database; built by the operator from an Airflow Connection."""

    host: str
    port: int
    user: str
    password: str = field(repr=False)
    dbname: str
    sslmode: str | None = None
    connect_timeout: int = 10

    @property
    def address(self) -> str:
        """``host:port/dbname``, for messages (never includes the password)."""
        return f"{self.host}:{self.port}/{self.dbname}"


def pg_tool(name: str, pg_bin_dir: Path | None) -> Path:
    """Resolve a PostgreSQL client tool (pg_dump, pg_restore, psql) in ``pg_bin_dir`` or on PATH."""
    if pg_bin_dir is not None:
        path = Path(pg_bin_dir) / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise DumpError(
            f"{name} was not found or is not executable in {pg_bin_dir} (backup.source.pg_bin_dir); point "
            "pg_bin_dir at the bin directory of a PostgreSQL client, e.g. /usr/lib/postgresql/17/bin."
        )
    found = shutil.which(name)
    if found is None:
        raise DumpError(
            f"{name} is not on PATH; install the PostgreSQL client tools (major version at least the "
            "server's) or set backup.source.pg_bin_dir to their bin directory."
        )
    return Path(found)


def check_target(target: PgTarget, source: DatabaseSource, *, pg_bin_dir: Path | None = None) -> str:
    """Preflight before any work: pg_dump exists, the login works, pg_dump is new enough for the server.

    Returns a one-line description for the task log; raises DumpError with the reason.
    """
    import psycopg

    who = f"database {target.dbname!r} (Airflow connection {source.conn_id!r})"
    pg_dump_version, pg_dump_major = _tool_version(pg_tool("pg_dump", pg_bin_dir))
    if source.format == "custom":
        pg_tool("pg_restore", pg_bin_dir)
    _plan_output(source, target.dbname, pg_dump_major, pg_dump_version, who)
    try:
        with psycopg.connect(
            host=target.host, port=target.port, user=target.user, password=target.password or None,
            dbname=target.dbname, sslmode=target.sslmode or None, connect_timeout=target.connect_timeout,
            application_name=f"{_APP_NAME} preflight", autocommit=True,
        ) as conn:
            server_version = conn.info.parameter_status("server_version") or str(conn.info.server_version)
            server_num = conn.info.server_version
    except psycopg.OperationalError as exc:
        raise _connection_error(exc, target, source.conn_id) from None
    _check_versions(server_num, server_version, pg_dump_major, pg_dump_version, who)
    return f"{target.user}@{target.address}: PostgreSQL {server_version}, pg_dump {pg_dump_version}, login ok"


def dump_database(
    target: PgTarget,
    source: DatabaseSource,
    staging_dir: Path,
    *,
    pg_bin_dir: Path | None = None,
    log: logging.Logger | None = None,
) -> DumpResult:
    """Dump one database into ``staging_dir/db-dumps/`` and prove it reads back; raises DumpError."""
    log = log or _log
    who = f"database {target.dbname!r} (Airflow connection {source.conn_id!r})"
    pg_dump = pg_tool("pg_dump", pg_bin_dir)
    # Resolve pg_restore before dumping, so a missing tool fails fast rather than after the dump.
    pg_restore = pg_tool("pg_restore", pg_bin_dir) if source.format == "custom" else None
    pg_dump_version, pg_dump_major = _tool_version(pg_dump)
    plan = _plan_output(source, target.dbname, pg_dump_major, pg_dump_version, who)
    job = _Job(who=who, password=target.password, timeout=source.timeout, plan=plan, log=log)
    selection = _TableSelection.from_source(source, with_children=pg_dump_major >= 16)

    out_dir = Path(staging_dir) / DUMP_DIR
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DumpError(f"Cannot create the staging directory {out_dir} for {who}: {exc.strerror}; "
                        "check backup.staging_directory and its permissions.") from exc
    out_path = out_dir / plan.file_name
    out_path.unlink(missing_ok=True)  # a leftover from a killed attempt
    began = time.monotonic()
    # Beside db-dumps/, not in it: that directory holds only what goes into the archive.
    passfile = _write_pgpass(Path(staging_dir), target, who)
    try:
        with _SnapshotSession(target, source.conn_id, who) as session:
            _check_versions(session.server_version_num, session.server_version, pg_dump_major, pg_dump_version, who)
            tables = [t for t in session.list_tables() if selection.dumps_data(t)]
            argv = [str(pg_dump), f"--snapshot={session.snapshot_id}", "--no-password", *plan.pg_dump_args,
                    *selection.pg_dump_args(), *source.extra_args]
            env = _subprocess_env(target, passfile)
            written, stats = _run_pg_dump(job, argv, env, out_path, session, tables)
        dumped = time.monotonic()
        _verify_readback(out_path, job, stats, pg_restore, written)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    finally:
        passfile.unlink(missing_ok=True)
    finished = time.monotonic()
    duration, dump_s = finished - began, dumped - began

    result = DumpResult(
        conn_id=source.conn_id,
        database=target.dbname,
        member_name=f"{DUMP_DIR}/{plan.file_name}",
        staged_path=str(out_path.resolve()),
        format=source.format,
        compression=str(source.compression),
        size=written.size,
        sha256=written.sha256,
        duration_s=round(duration, 3),
        snapshot_id=session.snapshot_id,
        server_version=session.server_version,
        pg_dump_version=pg_dump_version,
        tables=tuple(stats),
    )
    log.info(
        "Dumped %s: %d tables, %d rows, %d bytes (%s) in %.1f s (%.1f MB/s of output; read-back check %.1f s) as %s",
        who, len(stats), result.total_rows, written.size, result.compression, dump_s,
        written.size / 1e6 / max(dump_s, 1e-6), finished - dumped, result.member_name,
    )
    return result


# ---------------------------------------------------------------------------- output plan


@dataclass(frozen=True)
class _Job:
    """What the steps of one dump share: names for messages, the secret to redact, limits, plan, logger."""

    who: str
    password: str = field(repr=False)
    timeout: int | None
    plan: _OutputPlan
    log: logging.Logger


@dataclass(frozen=True)
class _OutputPlan:
    """File name, pg_dump format/compression flags, and how the result is compressed and checked."""

    file_name: str
    pg_dump_args: tuple[str, ...]
    gzip_level: int | None  # compress in this process with zlib; None: write pg_dump's bytes as they come
    check: CheckKind


def _plan_output(source: DatabaseSource, dbname: str, major: int, version: str, who: str) -> _OutputPlan:
    compression = source.compression
    # Keep database names that are valid file names unchanged (laravel-backup's member names);
    # anything that could leave the directory or confuse an unzip tool becomes '_'.
    stem = "postgresql-" + re.sub(r"[^A-Za-z0-9._-]", "_", dbname)
    spec = "none" if compression.method == "none" else f"{compression.method}:{compression.level}"
    if compression.method in ("zstd", "lz4") and major < 16:
        raise DumpError(
            f"Compression {spec} for {who} needs pg_dump 16 or later, but pg_dump is {version}; "
            "use gzip, or set backup.source.pg_bin_dir to a newer PostgreSQL client."
        )
    if source.format == "custom":
        # pg_dump before 16 only knows gzip levels: -Z 0 means uncompressed.
        legacy = "0" if compression.method == "none" else str(compression.level)
        return _OutputPlan(f"{stem}.dump", ("--format=custom", f"--compress={spec if major >= 16 else legacy}"),
                           None, "custom")
    if compression.method == "gzip":
        return _OutputPlan(f"{stem}.sql.gz", ("--format=plain",), compression.level, "gzip")
    if compression.method == "none":
        return _OutputPlan(f"{stem}.sql", ("--format=plain",), None, "sql")
    return _OutputPlan(f"{stem}.sql{compression.suffix}", ("--format=plain", f"--compress={spec}"), None,
                       compression.method)


def _tool_version(tool: Path) -> tuple[str, int]:
    """``("18.6", 18)`` from ``pg_dump --version`` (``pg_dump (PostgreSQL) 18.6``)."""
    try:
        proc = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=30, check=False,
                              env=_clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DumpError(f"Could not run {tool} --version ({exc}); check that it is a working PostgreSQL client.") \
            from exc
    first_line = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
    match = re.search(r"\(PostgreSQL\)\s+((\d+)\S*(?:\s.*)?)$", first_line)
    if proc.returncode != 0 or match is None:
        raise DumpError(f"{tool} --version printed {proc.stdout.strip()[:200]!r} (exit {proc.returncode}); "
                        "it does not look like PostgreSQL's pg_dump. Check backup.source.pg_bin_dir.")
    return match.group(1).strip(), int(match.group(2))


def _check_versions(server_num: int, server: str, major: int, version: str, who: str) -> None:
    server_major = server_num // 10000
    if server_major > major:
        raise DumpError(
            f"pg_dump {version} cannot dump {who}, which runs PostgreSQL {server}: pg_dump must be the server's "
            f"major version or newer; set backup.source.pg_bin_dir to a PostgreSQL {server_major} (or newer) client."
        )


# ---------------------------------------------------------------------------- credentials


def _write_pgpass(directory: Path, target: PgTarget, who: str) -> Path:
    """A 0600 pgpass file holding only this login; the caller deletes it."""
    if any(ch in target.password for ch in "\r\n") or any(ch in target.user for ch in "\r\n"):
        raise DumpError(f"The login or password of {who} contains a line break, which a pgpass file cannot hold; "
                        "change the password.")

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    # Wildcards for host/port/db: the file serves exactly one pg_dump run against this target, and
    # libpq's host matching has corner cases (sockets, host aliases) that must not lose the password.
    try:
        fd, name = tempfile.mkstemp(prefix=".pgpass-", dir=directory)  # mkstemp creates it 0600
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"*:*:*:{escape(target.user)}:{escape(target.password)}\n")
    except OSError as exc:
        raise DumpError(f"Cannot write the credentials file for {who} in {directory}: {exc.strerror}; check "
                        "backup.staging_directory (free space, permissions).") from exc
    return Path(name)


def _clean_env() -> dict[str, str]:
    """The worker's environment without libpq variables that could redirect or authenticate pg_dump."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PG") or k in _INHERITED_PG_VARS}


def _subprocess_env(target: PgTarget, passfile: Path) -> dict[str, str]:
    env = _clean_env()
    env.update(
        PGHOST=target.host,
        PGPORT=str(target.port),
        PGUSER=target.user,
        PGDATABASE=target.dbname,
        PGPASSFILE=str(passfile),
        PGCONNECT_TIMEOUT=str(target.connect_timeout),
        PGAPPNAME=f"{_APP_NAME} pg_dump",
    )
    if target.sslmode:
        env["PGSSLMODE"] = target.sslmode
    return env


def _redact(text: str, password: str) -> str:
    return text.replace(password, "***") if password else text


# ---------------------------------------------------------------------------- table selection


@dataclass(frozen=True)
class _Table:
    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind: 'r' ordinary, 'p' partitioned
    unlogged: bool
    visible: bool  # pg_table_is_visible(): found first on the search_path
    columns: tuple[str, ...]
    ancestors: tuple[_Table, ...] = ()


@dataclass(frozen=True)
class _NamePattern:
    """A pg_dump/psql name pattern, compiled to anchored regular expressions."""

    text: str
    schema: re.Pattern[str] | None  # None: unqualified, matches tables visible on the search_path
    name: re.Pattern[str]

    @classmethod
    def parse(cls, text: str, *, schema_pattern: bool = False) -> _NamePattern:
        """Parse ``text``; ``schema_pattern`` for -n/-N, where the last part names a schema."""
        parts: list[list[str]] = [[]]
        in_quotes = False
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == '"':
                if in_quotes and text[i + 1:i + 2] == '"':
                    parts[-1].append('"')
                    i += 1
                else:
                    in_quotes = not in_quotes
            elif in_quotes:
                parts[-1].append(re.escape(ch))
            elif ch == ".":
                parts.append([])
            elif ch == "*":
                parts[-1].append(".*")
            elif ch == "?":
                parts[-1].append(".")
            elif ch in "[](){}|+^\\":
                raise DumpError(
                    f"Table pattern {text!r} uses the regular-expression character {ch!r}, which backup-ops does "
                    "not support (row counts must match what pg_dump selects); use * and ? wildcards, or "
                    "double-quote the name to match it literally."
                )
            else:
                parts[-1].append(re.escape(ch.lower() if "A" <= ch <= "Z" else ch))
            i += 1
        max_parts = 2 if schema_pattern else 3
        if len(parts) > max_parts:
            raise DumpError(f"Pattern {text!r} has too many dotted parts; write [schema.]table for tables "
                            "or a schema name for schemas.")
        regexes = [re.compile("(?s:" + ("".join(p) or ".*") + ")") for p in parts]
        if schema_pattern:
            return cls(text, None, regexes[-1])
        if len(parts) == 1 or not parts[-2]:
            return cls(text, None, regexes[-1])  # empty schema part: pg_dump applies the visibility rule
        return cls(text, regexes[-2], regexes[-1])

    def matches_table(self, table: _Table) -> bool:
        if self.schema is None:
            return table.visible and self.name.fullmatch(table.name) is not None
        return self.schema.fullmatch(table.schema) is not None and self.name.fullmatch(table.name) is not None

    def matches_schema(self, schema: str) -> bool:
        return self.name.fullmatch(schema) is not None


# pg_dump options that change which tables' data is dumped, by kind; they take a pattern argument.
_SELECTION_OPTIONS = {
    "-t": "include", "--table": "include", "--table-and-children": "include+",
    "-T": "exclude", "--exclude-table": "exclude", "--exclude-table-and-children": "exclude+",
    "--exclude-table-data": "nodata", "--exclude-table-data-and-children": "nodata+",
    "-n": "schema", "--schema": "schema", "-N": "noschema", "--exclude-schema": "noschema",
}
_NO_DATA_FLAGS = frozenset({"-s", "--schema-only", "--no-data", "--statistics-only"})
_KNOWN_LONG = frozenset(o for o in (*_SELECTION_OPTIONS, *_NO_DATA_FLAGS, "--no-unlogged-table-data")
                        if o.startswith("--"))
# Real pg_dump options that happen to be prefixes of the names above (not abbreviations).
_PREFIX_LOOKALIKES = frozenset({"--statistics"})
# Short options of pg_dump that take an argument (from its getopt string), to parse "-nPATTERN".
_SHORT_WITH_ARG = frozenset("dEefFhjnNpStTUZ")
_LONG_WITH_ARG = frozenset({
    "--compress", "--dbname", "--encoding", "--exclude-extension", "--exclude-schema", "--exclude-table",
    "--exclude-table-and-children", "--exclude-table-data", "--exclude-table-data-and-children", "--extension",
    "--extra-float-digits", "--file", "--filter", "--format", "--host", "--jobs", "--lock-wait-timeout", "--port",
    "--role", "--rows-per-insert", "--schema", "--section", "--snapshot", "--superuser", "--sync-method",
    "--table", "--table-and-children", "--username", "--restrict-key",
})


@dataclass
class _TableSelection:
    """Which tables pg_dump dumps data for, mirrored from the options it is given."""

    include: list[tuple[_NamePattern, bool]] = field(default_factory=list)  # (pattern, with children)
    exclude: list[tuple[_NamePattern, bool]] = field(default_factory=list)
    exclude_data: list[tuple[_NamePattern, bool]] = field(default_factory=list)
    schemas: list[_NamePattern] = field(default_factory=list)
    exclude_schemas: list[_NamePattern] = field(default_factory=list)
    no_data: bool = False
    no_unlogged_data: bool = False
    generated_args: list[str] = field(default_factory=list)

    @classmethod
    def from_source(cls, source: DatabaseSource, *, with_children: bool) -> _TableSelection:
        selection = cls()
        include_flag = "--table-and-children" if with_children else "--table"
        exclude_flag = "--exclude-table-and-children" if with_children else "--exclude-table"
        for pattern in source.include_tables:
            selection.include.append((_NamePattern.parse(pattern), with_children))
            selection.generated_args.append(f"{include_flag}={pattern}")
        for pattern in source.exclude_tables:
            selection.exclude.append((_NamePattern.parse(pattern), with_children))
            selection.generated_args.append(f"{exclude_flag}={pattern}")
        for option, value in _selection_options(source.extra_args):
            selection._add_option(option, value)
        return selection

    def _add_option(self, option: str, value: str | None) -> None:
        if option in _NO_DATA_FLAGS:
            self.no_data = True
        elif option == "--no-unlogged-table-data":
            self.no_unlogged_data = True
        elif value is not None:
            kind = _SELECTION_OPTIONS[option]
            children = kind.endswith("+")
            if kind.startswith("include"):
                self.include.append((_NamePattern.parse(value), children))
            elif kind.startswith("exclude"):
                self.exclude.append((_NamePattern.parse(value), children))
            elif kind.startswith("nodata"):
                self.exclude_data.append((_NamePattern.parse(value), children))
            elif kind == "schema":
                self.schemas.append(_NamePattern.parse(value, schema_pattern=True))
            else:
                self.exclude_schemas.append(_NamePattern.parse(value, schema_pattern=True))

    def pg_dump_args(self) -> list[str]:
        """Options for include_tables / exclude_tables (extra_args are passed through separately)."""
        return list(self.generated_args)

    def dumps_data(self, table: _Table) -> bool:
        """Whether pg_dump, given these options, dumps rows of ``table``."""
        if table.kind != "r" or self.no_data or (self.no_unlogged_data and table.unlogged):
            return False
        if self.include:
            # pg_dump ignores -n/-N when -t is given: tables named by -t are dumped regardless.
            selected = _any_match(self.include, table)
        else:
            selected = (not self.schemas or any(p.matches_schema(table.schema) for p in self.schemas)) and not any(
                p.matches_schema(table.schema) for p in self.exclude_schemas)
        return selected and not _any_match(self.exclude, table) and not _any_match(self.exclude_data, table)


def _any_match(patterns: Iterable[tuple[_NamePattern, bool]], table: _Table) -> bool:
    for pattern, children in patterns:
        candidates = (table, *table.ancestors) if children else (table,)
        if any(pattern.matches_table(t) for t in candidates):
            return True
    return False


def _selection_options(args: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """Yield (option, value) for the extra_args that affect which table data pg_dump dumps."""
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg.startswith("--"):
            name, has_value, value = arg.partition("=")
            if name == "--filter":
                raise DumpError("extra_args --filter is not supported: backup-ops could not match its row counts to "
                                "the tables pg_dump selects; use include_tables / exclude_tables instead.")
            known = name in _KNOWN_LONG
            # getopt_long accepts unambiguous abbreviations, which would slip past the mirroring.
            if not known and name not in _PREFIX_LOOKALIKES and len(name) > 2 and any(
                    o.startswith(name) for o in _KNOWN_LONG):
                raise DumpError(f"extra_args option {name} is an abbreviation; spell out the full pg_dump option name "
                                "so backup-ops can tell which tables are dumped.")
            if name in _LONG_WITH_ARG and not has_value:
                value = args[i] if i < len(args) else ""
                i += 1
                has_value = "="
            if known:
                yield name, value if has_value else None
        elif arg.startswith("-") and len(arg) > 1:
            # Short options may be bundled ("-Os") and take their argument attached or separately.
            for pos, letter in enumerate(arg[1:], start=1):
                option = "-" + letter
                if letter in _SHORT_WITH_ARG:
                    value = arg[pos + 1:]
                    if not value:
                        value = args[i] if i < len(args) else ""
                        i += 1
                    if option in _SELECTION_OPTIONS:
                        yield option, value
                    break
                if option in _NO_DATA_FLAGS:
                    yield option, None


# ---------------------------------------------------------------------------- the snapshot session


class _SnapshotSession:
    """The transaction whose snapshot pg_dump imports; it also counts rows inside that snapshot."""

    _TABLES_SQL = """
        SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence = 'u',
               pg_catalog.pg_table_is_visible(c.oid),
               ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute AS a
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
        FROM pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p')
          AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend AS d
                          WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY n.nspname, c.relname
    """

    def __init__(self, target: PgTarget, conn_id: str, who: str) -> None:
        self._target = target
        self._conn_id = conn_id
        self._who = who
        self._conn: psycopg.Connection[Any] | None = None
        self._counter: threading.Thread | None = None
        self._counts: list[TableStat] = []
        self._expected = 0
        self._count_error: BaseException | None = None
        self._cancelled = threading.Event()
        self.snapshot_id = ""
        self.server_version = ""
        self.server_version_num = 0

    def __enter__(self) -> _SnapshotSession:
        import psycopg  # lazy: keeps this module importable (and DAG parsing fast) without a driver

        target = self._target
        try:
            conn = psycopg.connect(
                host=target.host, port=target.port, user=target.user, password=target.password or None,
                dbname=target.dbname, sslmode=target.sslmode or None, connect_timeout=target.connect_timeout,
                application_name=f"{_APP_NAME} snapshot", autocommit=True,
            )
        except psycopg.OperationalError as exc:
            raise _connection_error(exc, target, self._conn_id) from None
        self._conn = conn
        try:
            # Server defaults must not kill the session that holds the snapshot while pg_dump works.
            conn.execute("SET statement_timeout = 0")
            conn.execute("SET idle_in_transaction_session_timeout = 0")
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            row = conn.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()
            self.snapshot_id = str(row[0]) if row else ""
        except psycopg.Error as exc:
            self.close()
            detail = _redact(str(exc).strip(), target.password)
            raise DumpError(f"Could not export a snapshot from {self._who} ({detail}); a consistent dump needs "
                            "pg_export_snapshot(), check the server's logs.") from None
        self.server_version = conn.info.parameter_status("server_version") or str(conn.info.server_version)
        self.server_version_num = conn.info.server_version
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()
        self.close()

    def close(self) -> None:
        """End the transaction (nothing was written) and disconnect."""
        if self._counter is not None:
            self._counter.join()
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection must not hide the real error
                _log.debug("closing the snapshot connection failed", exc_info=True)
            self._conn = None

    def list_tables(self) -> list[_Table]:
        """Ordinary and partitioned tables outside system schemas, with columns and ancestors."""
        import psycopg

        conn = self._require_conn()
        try:
            rows = conn.execute(self._TABLES_SQL).fetchall()
            parents: dict[int, list[int]] = {}
            for child, parent in conn.execute("SELECT inhrelid::bigint, inhparent::bigint FROM pg_catalog.pg_inherits"):
                parents.setdefault(int(child), []).append(int(parent))
        except psycopg.Error as exc:
            raise DumpError(f"Could not list the tables of {self._who}: {exc}".strip() + ".") from None
        plain = {int(r[0]): _Table(int(r[0]), r[1], r[2], r[3], bool(r[4]), bool(r[5]), tuple(r[6])) for r in rows}
        return [
            _Table(t.oid, t.schema, t.name, t.kind, t.unlogged, t.visible, t.columns,
                   tuple(plain[a] for a in _ancestors(t.oid, parents) if a in plain))
            for t in plain.values()
        ]

    def start_counting(self, tables: Sequence[_Table]) -> None:
        """Count rows of ``tables`` in a background thread, inside the exported snapshot."""
        self._expected = len(tables)
        self._counter = threading.Thread(target=self._count, args=(list(tables),), name="backup-ops-row-count",
                                         daemon=True)
        self._counter.start()

    def finish_counting(self) -> list[TableStat]:
        """Wait for the counts; raises the error the counting hit, if any."""
        if self._counter is not None:
            self._counter.join()
        if self._count_error is not None:
            raise self._count_error
        if len(self._counts) != self._expected:
            raise DumpError(f"Counting the rows of {self._who} was interrupted after {len(self._counts)} of "
                            f"{self._expected} tables; run the backup again.")
        return list(self._counts)

    def cancel(self) -> None:
        """Abort a running count (timeout or failure elsewhere); returns at once."""
        self._cancelled.set()
        if self._conn is not None and self._counter is not None and self._counter.is_alive():
            try:
                self._conn.cancel_safe(timeout=5)
            except Exception:  # best effort; the connection is closed right after
                _log.debug("cancelling the row count failed", exc_info=True)

    def _count(self, tables: list[_Table]) -> None:
        import psycopg
        from psycopg import sql

        conn = self._require_conn()
        for table in tables:
            if self._cancelled.is_set():
                return
            query = sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(sql.Identifier(table.schema),
                                                                     sql.Identifier(table.name))
            try:
                row = conn.execute(query).fetchone()
            except psycopg.Error as exc:
                if not self._cancelled.is_set():
                    self._count_error = DumpError(
                        f"Counting the rows of {table.schema}.{table.name} in {self._who} failed: "
                        f"{str(exc).strip()}; the backup login needs SELECT on every table it dumps."
                    )
                return
            except BaseException as exc:  # re-raised in the calling thread by finish_counting
                self._count_error = exc
                return
            self._counts.append(TableStat(table.schema, table.name, int(row[0]) if row else 0, table.columns))

    def _require_conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise DumpError(f"The snapshot connection to {self._who} is closed; this is a bug in backup-ops.")
        return self._conn


def _ancestors(oid: int, parents: dict[int, list[int]]) -> list[int]:
    seen: list[int] = []
    stack = list(parents.get(oid, ()))
    while stack:
        parent = stack.pop()
        if parent not in seen:
            seen.append(parent)
            stack.extend(parents.get(parent, ()))
    return seen


def _connection_error(exc: Exception, target: PgTarget, conn_id: str) -> DumpError:
    """One actionable sentence for a failed connection; never includes the password."""
    text = _redact(str(exc).strip(), target.password)
    low = text.lower()
    server = f"{target.host}:{target.port}"
    # libpq's own explanation of the failure: the text after the last "failed:" on its first line.
    reason = text.splitlines()[0].rsplit("failed:", 1)[-1].strip(" .") if text else "no details"
    if "password authentication failed" in low or "no password supplied" in low:
        return DumpError(f"PostgreSQL password authentication failed for user {target.user!r} on "
                         f"{target.address}: check the password of Airflow connection {conn_id!r}.")
    if "database" in low and "does not exist" in low:
        return DumpError(f"Database {target.dbname!r} does not exist on {server}: check the database name "
                         f"(schema field) of Airflow connection {conn_id!r}.")
    if "role" in low and "does not exist" in low:
        return DumpError(f"User {target.user!r} does not exist on {server}: check the login of Airflow "
                         f"connection {conn_id!r}.")
    if "no pg_hba.conf entry" in low:
        return DumpError(f"The server at {server} does not accept user {target.user!r} for database "
                         f"{target.dbname!r} from this worker ({reason}): allow it in pg_hba.conf or fix the sslmode "
                         f"of Airflow connection {conn_id!r}.")
    unreachable = ("connection refused", "could not translate host name", "timeout expired", "no route to host",
                   "network is unreachable", "name or service not known", "temporary failure in name resolution",
                   "connection timed out")
    if any(marker in low for marker in unreachable):
        return DumpError(f"Cannot reach PostgreSQL at {server} for Airflow connection {conn_id!r} ({reason}): check "
                         "the connection's host and port, that the server is running, and that this worker may "
                         "connect to it.")
    return DumpError(f"Cannot connect to database {target.dbname!r} on {server} (Airflow connection {conn_id!r}): "
                     f"{reason}.")


# ---------------------------------------------------------------------------- running pg_dump


@dataclass(frozen=True)
class _Written:
    size: int
    sha256: str
    input_bytes: int  # bytes pg_dump wrote, before our compression
    tail: bytes  # the last bytes pg_dump wrote, before our compression (for the completion check)


def _run_pg_dump(
    job: _Job, argv: list[str], env: dict[str, str], out_path: Path, session: _SnapshotSession, tables: list[_Table]
) -> tuple[_Written, list[TableStat]]:
    """Stream pg_dump into the staged file while the session counts rows; raise DumpError on any failure."""
    who, timeout = job.who, job.timeout
    timed_out = threading.Event()
    # stderr goes to a temporary file: a pipe nobody reads could fill up and block pg_dump.
    with tempfile.TemporaryFile() as stderr_file:
        try:
            # A process group of its own, so a kill also reaches anything pg_dump (or a wrapper
            # script in pg_bin_dir) started, which would otherwise keep the pipe open.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_file,
                                    env=env, cwd=out_path.parent, start_new_session=True)
        except OSError as exc:
            raise DumpError(f"Could not start {argv[0]} for {who}: {exc.strerror}; check backup.source.pg_bin_dir.") \
                from exc

        def kill_on_timeout() -> None:
            timed_out.set()
            _kill_group(proc)
            session.cancel()

        timer = threading.Timer(timeout, kill_on_timeout) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        written: _Written | None = None
        stats: list[TableStat] = []
        write_error: OSError | None = None
        try:
            session.start_counting(tables)
            stdout = proc.stdout
            if stdout is None:  # cannot happen with stdout=PIPE; keeps the type checker honest
                raise DumpError(f"pg_dump for {who} has no output pipe; this is a bug in backup-ops.")
            try:
                written = _write_stream(stdout, out_path, job.plan.gzip_level)
            except OSError as exc:
                write_error = exc
                _kill_group(proc)  # nobody reads the pipe any more: pg_dump would block on it forever
            returncode = proc.wait()
            if write_error is None and returncode == 0 and not timed_out.is_set():
                stats = session.finish_counting()
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            session.cancel()
            if timer is not None:
                timer.cancel()
        stderr = _read_tail(stderr_file)

    stderr_tail = _stderr_tail(stderr, job.password)
    if timed_out.is_set():
        raise DumpError(f"pg_dump of {who} did not finish within source.timeout = {timeout} s and was killed; raise "
                        "the timeout for this database or look for locks or slow I/O on the server.")
    if write_error is not None:
        raise DumpError(f"Writing the dump of {who} to {out_path} failed: {write_error.strerror}; free space in or "
                        "move backup.staging_directory.") from write_error
    if returncode != 0:
        raise DumpError(f"pg_dump failed for {who} with {_describe_exit(returncode)}: {stderr_tail}. "
                        f"{_hint(stderr)}")
    if "pg_dump: error:" in stderr:
        raise DumpError(f"pg_dump reported an error for {who} although it exited 0: {stderr_tail}. {_hint(stderr)}")
    if written is None or written.input_bytes == 0:
        raise DumpError(f"pg_dump produced no output for {who} (exit 0, stderr: {stderr_tail}); check that {argv[0]} "
                        "is a working pg_dump.")
    if stderr.strip():
        job.log.warning("pg_dump for %s wrote to stderr: %s", who, stderr_tail)
    # Counting errors are raised here, after pg_dump's: a failed pg_dump explains more.
    stats = stats or session.finish_counting()
    return written, stats


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL pg_dump's process group (pg_dump and anything it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone
    except PermissionError:
        proc.kill()


def _write_stream(stream: IO[bytes], out_path: Path, gzip_level: int | None) -> _Written:
    """Copy ``stream`` to a new 0600 file in 1 MiB chunks, gzipping and hashing as it goes."""
    digest = hashlib.sha256()
    size = 0
    input_bytes = 0
    # wbits=31: a gzip container; zlib writes mtime 0 and no file name, so equal input gives equal bytes.
    compressor = zlib.compressobj(gzip_level, zlib.DEFLATED, 31) if gzip_level is not None else None
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as out:
        def emit(data: bytes) -> None:
            nonlocal size
            if data:
                out.write(data)
                digest.update(data)
                size += len(data)

        tail = b""
        while chunk := stream.read(CHUNK_SIZE):
            input_bytes += len(chunk)
            tail = (tail + chunk)[-_TAIL_BYTES:] if len(chunk) < _TAIL_BYTES else chunk[-_TAIL_BYTES:]
            emit(compressor.compress(chunk) if compressor is not None else chunk)
        if compressor is not None and input_bytes:
            emit(compressor.flush())
    return _Written(size, digest.hexdigest(), input_bytes, tail)


def _read_tail(handle: IO[bytes], limit: int = _TAIL_BYTES) -> str:
    handle.seek(0, os.SEEK_END)
    handle.seek(max(0, handle.tell() - limit))
    return handle.read().decode("utf-8", errors="replace")


def _stderr_tail(stderr: str, password: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return _redact(" | ".join(lines[-_STDERR_TAIL_LINES:]), password) or "(no stderr)"


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name} (killed)"
        except ValueError:
            return f"signal {-returncode} (killed)"
    return f"exit code {returncode}"


def _hint(stderr: str) -> str:
    low = stderr.lower()
    if "does not support compression" in low:
        return ("This pg_dump was built without that compression library: use gzip, or set backup.source.pg_bin_dir "
                "to a pg_dump built with it.")
    if "server version mismatch" in low:
        return "Set backup.source.pg_bin_dir to a pg_dump of the server's major version or newer."
    if "no matching tables" in low or "no matching schemas" in low:
        return "Check include_tables / extra_args patterns against the database's tables."
    if "permission denied" in low:
        return "Grant the backup login SELECT on every table it dumps (or exclude the table)."
    return "Fix the cause above and run the backup again."


# ---------------------------------------------------------------------------- read-back


def _verify_readback(path: Path, job: _Job, tables: list[TableStat], pg_restore: Path | None,
                     written: _Written) -> None:
    """Prove the staged dump is complete and decodable; raises DumpError naming what is wrong.

    Plain dumps that this process compressed are checked on the bytes pg_dump produced, as they
    streamed through: decompressing the file again would only re-test zlib (~8 % of a backup's
    time), while the file's own bytes are covered by the sha256 taken as it was written and
    re-checked when the archive is built and verified. Files pg_dump compressed itself (custom
    format, zstd, lz4) are read back from disk.
    """
    plan = job.plan

    def fail(reason: str) -> DumpError:
        return DumpError(f"The dump of {job.who} does not read back: {reason}. The staged file was deleted; run the "
                         "backup again and check the staging disk and pg_dump if it keeps failing.")

    if plan.check in ("gzip", "sql"):
        _check_trailer(written.tail, fail)
        return
    if plan.check == "custom":
        if pg_restore is None:
            raise fail("no pg_restore to check the custom-format archive with")
        _check_custom_archive(path, tables, pg_restore, fail)
        return
    if plan.check in ("zstd", "lz4"):
        magic = _ZSTD_MAGIC if plan.check == "zstd" else _LZ4_MAGIC
        with path.open("rb") as handle:
            if handle.read(4) != magic:
                raise fail(f"the file does not start with the {plan.check} magic number")
    tail = _decompressed_tail(path, plan.check, fail)
    if tail is None:
        job.log.warning("Neither the %s Python module nor the %s command is available: the dump of %s was only "
                        "checked for its %s header, not decompressed.", plan.check, plan.check, job.who, plan.check)
        return
    _check_trailer(tail, fail)


def _decompressed_tail(path: Path, kind: CheckKind, fail: Callable[[str], DumpError]) -> bytes | None:
    """The last bytes of a zstd/lz4 dump, decompressing all of it; None when no decompressor exists."""
    tail = b""

    def keep(data: bytes) -> None:
        nonlocal tail
        tail = data[-_TAIL_BYTES:] if len(data) >= _TAIL_BYTES else (tail + data)[-_TAIL_BYTES:]

    stream = _open_decompressed(path, kind)
    if stream is not None:
        try:
            with stream:
                while chunk := stream.read(CHUNK_SIZE):
                    keep(chunk)
        except Exception as exc:  # each library raises its own error types
            raise fail(f"{kind} data is corrupt ({exc})") from exc
        return tail
    tool = shutil.which(kind)
    if tool is None:
        return None
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen([tool, "-d", "-c", "-q", str(path)], stdout=subprocess.PIPE, stderr=errors,
                                stdin=subprocess.DEVNULL)
        if proc.stdout is not None:
            with proc.stdout:
                while chunk := proc.stdout.read(CHUNK_SIZE):
                    keep(chunk)
        if proc.wait() != 0:
            raise fail(f"{kind} -d failed: {_read_tail(errors, 500).strip()}")
    return tail


def _open_decompressed(path: Path, kind: CheckKind) -> IO[bytes] | None:
    """A streaming reader from the zstandard / lz4 Python modules, or None when not installed."""
    try:
        if kind == "zstd":
            import zstandard

            reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True)
            return reader
        import lz4.frame

        frame_reader: IO[bytes] = lz4.frame.open(path, "rb")
        return frame_reader
    except ImportError:
        return None


def _check_trailer(tail: bytes, fail: Callable[[str], DumpError]) -> None:
    """pg_dump ends plain output with its "dump complete" comment, then only comments and ``\\unrestrict``."""
    position = tail.rfind(_TRAILER)
    if position < 0:
        raise fail("it does not end with pg_dump's '-- PostgreSQL database dump complete' line, so it is truncated")
    for line in tail[position + len(_TRAILER):].splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith((b"--", b"\\unrestrict")):
            raise fail(f"unexpected content after the 'dump complete' line: {stripped[:80]!r}")


def _check_custom_archive(path: Path, tables: list[TableStat], pg_restore: Path,
                          fail: Callable[[str], DumpError]) -> None:
    env = _clean_env()
    listing = subprocess.run([str(pg_restore), "--list", str(path)], capture_output=True, env=env, check=False,
                             stdin=subprocess.DEVNULL)
    if listing.returncode != 0:
        raise fail(f"pg_restore --list failed: {listing.stderr.decode(errors='replace').strip()[-500:]}")
    toc = listing.stdout.decode("utf-8", errors="replace")
    missing = [t.qualified_name for t in tables if f" TABLE DATA {t.schema} {t.name} " not in toc]
    if missing:
        raise fail(f"the archive has no data for {len(missing)} counted table(s), e.g. {', '.join(missing[:3])}")
    # Restoring to /dev/null reads and decompresses every data block without touching a database.
    with tempfile.TemporaryFile() as errors:
        full = subprocess.run([str(pg_restore), "--file=/dev/null", str(path)], stdout=subprocess.DEVNULL,
                              stderr=errors, env=env, check=False, stdin=subprocess.DEVNULL)
        if full.returncode != 0:
            raise fail(f"pg_restore could not read every data block: {_read_tail(errors, 500).strip()}")
