"""Restoring a database from a backup archive: pick a safe target, create it, give it its roles and settings, load it.

Order, as a fresh server needs it: the database is created (``TEMPLATE template0``, with the
source's encoding, locale provider and locale when the archive recorded them; a locale the target
lacks is dropped with a note), the roles and database settings captured with the dump are applied
(``globals.apply_globals``: roles must exist before the dump's ``ALTER … OWNER`` and ``GRANT``
statements run), then the dump is loaded (``load.load_dump``: plain dumps streamed into psql in one
transaction, custom dumps through ``pg_restore -j``), then what had to wait for the load is applied.
``restore_database`` is that one path, shared by the restore drill and ``python -m backup_ops restore``.

Safety. ``refuse_source_database`` refuses a target that is a configured source database itself
(same cluster, recognised by its address or its system identifier, and same name): a drill or a
restore never writes into the database it protects. ``check_restore_target`` tells an empty
database from one with content, which a real restore refuses unless forced. A drill drops only
names that are scratch names (``drop_scratch_database``). Messages never hold a secret.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from backup_ops.adapters.postgres.load import load_dump
from backup_ops.adapters.postgres.target import PgTarget, connect, redact
from backup_ops.core.archive_read import DEFAULT_PASSWORD_SOURCE, open_member
from backup_ops.core.errors import ArchiveError, ConfigError, DumpError
from backup_ops.core.fileio import CHUNK_SIZE
from backup_ops.core.manifest import ManifestDatabase
from backup_ops.core.restore_plan import is_scratch_name, scratch_started

__all__ = [
    "LoadedDatabase", "apply_archive_globals", "check_restore_target", "create_database", "database_info",
    "database_objects", "database_size", "drop_database", "drop_scratch_database", "load_dump", "on_database",
    "prepare_database", "refuse_source_database", "restore_database", "server_of", "source_targets",
    "stale_scratch_databases",
]

_log = logging.getLogger(__name__)

MAX_GLOBALS_BYTES = 16 * 1024 * 1024
"""The largest roles or settings member read (a crafted archive must not exhaust memory)."""


@dataclass(frozen=True)
class LoadedDatabase:
    """One database restored: its name and server, size on disk, load time, what was applied and noticed."""

    name: str
    server: str
    size_bytes: int
    seconds: float
    globals: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


def on_database(target: PgTarget, dbname: str) -> PgTarget:
    """``target``'s server and login, connecting to ``dbname``."""
    return replace(target, dbname=dbname)


def server_of(target: PgTarget) -> str:
    """``host:port``, for messages and reports."""
    return f"{target.host}:{target.port}"


# ---------------------------------------------------------------------------- one database, start to end


def restore_database(server: PgTarget, conn_id: str, name: str, archive: Path, database: ManifestDatabase, *,
                     info: Mapping[str, Any] | None, password: bytes | None, workdir: Path,
                     pg_bin_dir: Path | None = None, jobs: int = 1, password_source: str = DEFAULT_PASSWORD_SOURCE,
                     notes: Sequence[str] = (), log: logging.Logger | None = None) -> LoadedDatabase:
    """Into the prepared, empty database ``name``: the archive's roles and settings, then the dump; its size.

    The one path a drill and a real restore share once their database exists (``create_database``,
    ``prepare_database``). ``notes`` are what preparing it noticed (a locale that could not be used).
    """
    log = log or _log
    applied = apply_archive_globals(server, conn_id, name, archive, database, password, info=info,
                                    password_source=password_source, log=log)
    seconds = load_dump(on_database(server, name), conn_id, archive, database, password=password, workdir=workdir,
                        pg_bin_dir=pg_bin_dir, jobs=jobs, password_source=password_source, log=log)
    applied += apply_archive_globals(server, conn_id, name, archive, database, password, info=info, after_load=True,
                                     password_source=password_source, log=log)
    size = database_size(server, conn_id, name)
    log.info("Restored %s (%d tables, %d rows) into %s on %s: %.1f MB in %.1f s", database.database,
             len(database.tables), database.total_rows, name, server_of(server), size / 1e6, seconds)
    return LoadedDatabase(name, server_of(server), size, seconds, tuple(applied), tuple(notes))


def prepare_database(server: PgTarget, conn_id: str, name: str, info: Mapping[str, Any] | None, *, force: bool,
                     log: logging.Logger | None = None) -> tuple[bool, list[str]]:
    """Make ``name`` an empty database for a real restore; (whether it was created here, notes).

    A database that does not exist is created; an empty one is used as it is; one with content is
    refused unless ``force``, which drops and creates it again.
    """
    objects = check_restore_target(server, conn_id, name, force=force)
    if objects is None:
        return True, create_database(server, conn_id, name, info, log=log)
    if objects == 0:
        return False, [f"database {name} existed and was empty: restored into it as it is"]
    drop_database(server, conn_id, name)
    return True, [f"database {name} had {objects} objects and was dropped first (--force)",
                  *create_database(server, conn_id, name, info, log=log)]


def check_restore_target(server: PgTarget, conn_id: str, name: str, *, force: bool) -> int | None:
    """How many objects database ``name`` holds (None: absent); raises ConfigError when it has any and not ``force``."""
    objects = database_objects(server, conn_id, name)
    if objects and not force:
        raise ConfigError(f"Database {name!r} on {server_of(server)} is not empty ({objects} schemas, tables or "
                          "functions): refusing to restore into it; choose another database name, or use --force to "
                          "drop it and create it again.")
    return objects


# ---------------------------------------------------------------------------- which database


def source_targets(conn_ids: Sequence[str], *, log: logging.Logger | None = None) -> list[tuple[str, PgTarget]]:
    """The source databases of these connections (configured and recorded in the backup) that a restore must
    never write into; a connection that cannot be read is skipped (it cannot be the target then)."""
    from backup_ops.adapters.postgres.target import target_from_connection

    found = []
    for conn_id in dict.fromkeys(conn_ids):
        try:
            found.append((conn_id, target_from_connection(conn_id)))
        except ConfigError as exc:
            (log or _log).info("Not comparing with source connection %r: %s", conn_id, exc)
    return found


def refuse_source_database(server: PgTarget, conn_id: str, name: str,
                           sources: Sequence[tuple[str, PgTarget]]) -> None:
    """Raise ConfigError when database ``name`` on ``server`` is one of the ``sources`` (conn id, target).

    Same name and same cluster: the same host and port, or the same system identifier
    (``pg_control_system()``, readable by any login) when the addresses differ (an alias, a
    proxy). A source that cannot be reached is taken for another server: the target can be.
    """
    candidates = [(cid, src) for cid, src in sources if src.dbname == name]
    if not candidates:
        return
    identity: str | None = None
    for source_conn, source in candidates:
        same = _same_address(server, source)
        if not same:
            identity = identity or _system_identifier(server, conn_id)
            try:
                same = identity is not None and identity == _system_identifier(source, source_conn)
            except DumpError:
                same = False
        if same:
            raise ConfigError(f"Refusing to restore into database {name!r} on {server_of(server)}: it is the source "
                              f"database of Airflow connection {source_conn!r}, which a restore must never write "
                              "into; choose another database name or target connection.")


def _same_address(one: PgTarget, other: PgTarget) -> bool:
    loopback = {"localhost", "127.0.0.1", "::1", ""}

    def host(target: PgTarget) -> str:
        name = target.host.strip().lower()
        return "loopback" if name in loopback else name

    return (host(one), one.port) == (host(other), other.port)


def _system_identifier(target: PgTarget, conn_id: str) -> str | None:
    import psycopg

    with connect(target, conn_id, "restore check") as conn:
        try:
            row = conn.execute("SELECT system_identifier FROM pg_catalog.pg_control_system()").fetchone()
        except psycopg.Error:
            return None
    return str(row[0]) if row else None


def database_objects(server: PgTarget, conn_id: str, name: str) -> int | None:
    """How many schemas, relations and routines of its own database ``name`` holds; None when it does not exist."""
    with connect(server, conn_id, "restore check") as conn:
        exists = conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,)).fetchone()
    if not exists:
        return None
    with connect(on_database(server, name), conn_id, "restore check") as conn:
        row = conn.execute("""
            SELECT (SELECT count(*) FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)')
                 + (SELECT count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
                    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema'))
                 + (SELECT count(*) FROM pg_catalog.pg_namespace n
                    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'public') AND n.nspname !~ '^pg_')
        """).fetchone()
    return int(row[0]) if row else 0


def create_database(server: PgTarget, conn_id: str, name: str, info: Mapping[str, Any] | None = None, *,
                    log: logging.Logger | None = None) -> list[str]:
    """``CREATE DATABASE name TEMPLATE template0`` with the source's encoding and locale when ``info`` has them.

    A locale the target server does not have is dropped (then the encoding alone, then both),
    and each fallback is returned as a note: the data restores, ordering may differ. Raises
    DumpError naming what to do when the login may not create databases or the name is taken.
    """
    import psycopg
    from psycopg import sql

    log = log or _log
    attempts = _create_options(info)
    notes: list[str] = []
    with connect(server, conn_id, "restore") as conn:
        for index, options in enumerate(attempts):
            query = sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name))
            for keyword, value in options:
                query += sql.SQL(" {} {}").format(sql.SQL(keyword), sql.Literal(value))
            try:
                conn.execute(query)
            except psycopg.errors.InsufficientPrivilege:
                raise DumpError(f"Login {server.user!r} may not create databases on {server_of(server)} (Airflow "
                                f"connection {conn_id!r}): give it CREATEDB, or restore with a connection whose login "
                                "may (restore_drill.target_conn_id, --target-conn).", retryable=False) from None
            except psycopg.errors.DuplicateDatabase:
                raise DumpError(f"Database {name!r} already exists on {server_of(server)}.", retryable=False) from None
            except psycopg.Error as exc:
                reason = _first_line(exc, server)
                if index + 1 == len(attempts):
                    raise DumpError(f"Could not create database {name!r} on {server_of(server)}: {reason}.") from None
                dropped = ", ".join(f"{k.lower()} {v}" for k, v in options[len(attempts[index + 1]):])
                notes.append(f"the source database's {dropped} could not be used on {server_of(server)} ({reason}); "
                             "created without it")
                continue
            break
    for note in notes:
        log.warning("Database %s: %s", name, note)
    return notes


def _create_options(info: Mapping[str, Any] | None) -> list[list[tuple[str, str]]]:
    """The CREATE DATABASE options to try, most faithful first: the source's locale provider, encoding and
    locale; then encoding and libc locale; then the encoding alone; then the server's defaults."""
    def text(key: str) -> str | None:
        value = (info or {}).get(key)
        return value if isinstance(value, str) and value and "\x00" not in value else None

    encoding = [("ENCODING", e)] if (e := text("encoding")) else []
    libc = [(k.upper(), v) for k in ("lc_collate", "lc_ctype") if (v := text(k))]
    provider, locale = text("locale_provider"), text("locale")
    native: list[tuple[str, str]] = []
    if provider == "icu" and locale:
        native = [("LOCALE_PROVIDER", "icu"), ("ICU_LOCALE", locale)]
        if rules := text("icu_rules"):
            native.append(("ICU_RULES", rules))
    elif provider == "builtin" and locale:
        native = [("LOCALE_PROVIDER", "builtin"), ("BUILTIN_LOCALE", locale)]
    attempts = [encoding + libc + native, encoding + libc, encoding, []]
    return [a for i, a in enumerate(attempts) if i == 0 or a != attempts[i - 1]]


def drop_database(server: PgTarget, conn_id: str, name: str) -> bool:
    """``DROP DATABASE IF EXISTS name WITH (FORCE)``; whether it existed."""
    import psycopg
    from psycopg import sql

    with connect(server, conn_id, "restore cleanup") as conn:
        existed = conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,)).fetchone()
        if not existed:
            return False
        try:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        except psycopg.Error as exc:
            raise DumpError(f"Could not drop database {name!r} on {server_of(server)}: "
                            f"{_first_line(exc, server)}.") from None
    return True


def drop_scratch_database(server: PgTarget, conn_id: str, name: str) -> bool:
    """Drop a drill's scratch database; any other name is refused (a teardown must never drop a real one)."""
    if not is_scratch_name(name):
        raise ConfigError(f"Refusing to drop database {name!r}: it is not a restore drill's scratch database.")
    return drop_database(server, conn_id, name)


def stale_scratch_databases(server: PgTarget, conn_id: str, before: datetime) -> list[str]:
    """Scratch databases on ``server`` from drills that started before ``before`` (left by a killed drill)."""
    with connect(server, conn_id, "restore cleanup") as conn:
        rows = conn.execute(r"SELECT datname FROM pg_catalog.pg_database WHERE datname LIKE 'backup\_drill\_%'")
        names = [str(row[0]) for row in rows.fetchall()]
    return sorted(name for name in names if (started := scratch_started(name)) is not None and started < before)


def database_size(server: PgTarget, conn_id: str, name: str) -> int:
    """``pg_database_size(name)`` in bytes."""
    with connect(server, conn_id, "restore check") as conn:
        row = conn.execute("SELECT pg_catalog.pg_database_size(%s)", (name,)).fetchone()
    return int(row[0]) if row else 0


# ---------------------------------------------------------------------------- roles and settings


def database_info(archive: Path, database: ManifestDatabase, password: bytes | None, *,
                  password_source: str = DEFAULT_PASSWORD_SOURCE) -> dict[str, Any] | None:
    """The source database's settings as the archive recorded them (``database_member``), or None."""
    member = database.database_member
    if not member:
        return None
    data = _read_member(archive, member, password, password_source)
    try:
        info = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ArchiveError(f"Member {member!r} of {archive} is not JSON ({type(exc).__name__}).") from None
    if not isinstance(info, dict):
        raise ArchiveError(f"Member {member!r} of {archive} is not a JSON object.")
    return info


def apply_archive_globals(server: PgTarget, conn_id: str, name: str, archive: Path, database: ManifestDatabase,
                          password: bytes | None, *, info: Mapping[str, Any] | None, after_load: bool = False,
                          password_source: str = DEFAULT_PASSWORD_SOURCE,
                          log: logging.Logger | None = None) -> list[str]:
    """Create the roles the dump needs and apply the database's settings to ``name``; one line per action.

    ``after_load``: what had to wait until the dump was loaded (``default_transaction_read_only``).
    An archive made before backup-ops captured roles and settings has neither: nothing is applied,
    and the dump's roles must then exist on the target already (the returned line says so).
    """
    if not database.roles_member and info is None:
        return [] if after_load else [
            "the archive carries no roles or database settings (made before backup-ops captured them): the roles "
            "its dump refers to must exist on the target"]
    from backup_ops.adapters.postgres.globals import apply_globals

    roles_sql = None
    if database.roles_member and info is None and not after_load:
        roles_sql = _read_member(archive, database.roles_member, password, password_source).decode("utf-8", "replace")
    return list(apply_globals(server, database=name, roles_sql=roles_sql, database_info=info, log=log or _log,
                              after_load=after_load, conn_id=conn_id))


def _read_member(archive: Path, member: str, password: bytes | None, password_source: str) -> bytes:
    data = bytearray()
    with open_member(archive, member, password, password_source=password_source) as stream:
        while chunk := stream.read(CHUNK_SIZE):
            data += chunk
            if len(data) > MAX_GLOBALS_BYTES:
                raise ArchiveError(f"Member {member!r} of {archive} is larger than {MAX_GLOBALS_BYTES} bytes; "
                                   "it is not what backup-ops writes.")
    return bytes(data)


def _first_line(exc: BaseException, target: PgTarget) -> str:
    text = redact(str(exc).strip(), *target.secrets)
    return text.splitlines()[0].rstrip(".") if text else type(exc).__name__
