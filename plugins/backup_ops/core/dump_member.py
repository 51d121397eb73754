"""The archive member a database dump is stored as, and the refusal of two dumps that would share one.

Member names are laravel-backup's: ``db-dumps/postgresql-<db>`` plus the suffix of the format
and compression (``.sql.gz``, ``.sql``, ``.sql.zst``, ``.sql.lz4``, ``.dump``). Database names that
are valid file names stay unchanged; any other character becomes ``_``, so ``app db`` and
``app_db`` get the same member. The dump writes its file under this name, and the preflight
refuses two connections whose dumps would collide, both through this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from backup_ops.core.config import DatabaseSource
from backup_ops.core.errors import ConfigError

DUMP_DIR = "db-dumps"
"""The archive folder (and staging subfolder) that holds the database dumps."""


def dump_file_name(dbname: str, source: DatabaseSource) -> str:
    """``postgresql-<db>.sql.gz`` (or ``.sql``, ``.sql.zst``, ``.sql.lz4``, ``.dump``) for ``source``'s format."""
    # Anything that could leave the directory or confuse an unzip tool becomes '_'.
    stem = "postgresql-" + re.sub(r"[^A-Za-z0-9._-]", "_", dbname)
    if source.format == "custom":
        return f"{stem}.dump"
    return f"{stem}.sql{source.compression.suffix}"


def dump_member_name(dbname: str, source: DatabaseSource) -> str:
    """The archive member of database ``dbname`` dumped as ``source`` says: ``db-dumps/postgresql-<db>.sql.gz``."""
    return f"{DUMP_DIR}/{dump_file_name(dbname, source)}"


def refuse_member_clashes(databases: Iterable[tuple[str, str, DatabaseSource]]) -> None:
    """Raise ConfigError naming both connections when two ``(conn_id, dbname, source)`` share a member name."""
    seen: dict[str, tuple[str, str]] = {}
    for conn_id, dbname, source in databases:
        member = dump_member_name(dbname, source)
        if member in seen:
            other_conn, other_db = seen[member]
            raise ConfigError(
                f"Airflow connections {other_conn!r} (database {other_db!r}) and {conn_id!r} (database {dbname!r}) "
                f"would both be stored as {member} in the archive; back them up in separate runs (db_names Param) "
                "or separate configs."
            )
        seen[member] = (conn_id, dbname)
