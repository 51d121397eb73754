"""The snapshot session: the transaction whose snapshot pg_dump dumps, and the catalog as pg_dump sees it.

Consistency. A ``REPEATABLE READ READ ONLY`` transaction exports its snapshot and pg_dump runs with
``--snapshot=<id>``. The transaction stays open until pg_dump has exited, so everything read in it
(the roles and settings a restore needs, each dumped table's full column list) describes the same
instant as the dump.

Rows are not counted here: ``core.copy_rows`` counts them in pg_dump's own output as it streams
past, so the server reads every table once, for pg_dump (a ``count(*)`` of every table beside it
doubled the server's work).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from backup_ops.adapters.postgres.target import PgTarget, connect, redact
from backup_ops.core.errors import DumpError

if TYPE_CHECKING:
    import psycopg

_log = logging.getLogger(__name__)


class SnapshotSession:
    """The transaction whose snapshot pg_dump imports, open until pg_dump has exited."""

    _COLUMNS_SQL = """
        SELECT n.nspname, c.relname,
               ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute AS a
                     WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
        FROM pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'f') AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
    """

    def __init__(self, target: PgTarget, conn_id: str, who: str) -> None:
        self._target = target
        self._conn_id = conn_id
        self._who = who
        self._conn: psycopg.Connection[Any] | None = None
        self.snapshot_id = ""
        self.server_version = ""
        self.server_version_num = 0

    def __enter__(self) -> SnapshotSession:
        import psycopg  # lazy: keeps this module importable (and DAG parsing fast) without a driver

        target = self._target
        conn = connect(target, self._conn_id, "snapshot")
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
            detail = redact(str(exc).strip(), *target.secrets)
            raise DumpError(f"Could not export a snapshot from {self._who} ({detail}); a consistent dump needs "
                            "pg_export_snapshot(), check the server's logs.") from None
        self.server_version = conn.info.parameter_status("server_version") or str(conn.info.server_version)
        self.server_version_num = conn.info.server_version
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End the transaction (nothing was written) and disconnect."""
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # closing a broken connection must not hide the real error
                _log.debug("closing the snapshot connection failed", exc_info=True)
            self._conn = None

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The snapshot transaction's session, for catalog reads that must see what pg_dump sees.

        Use it only inside savepoints (``conn.transaction()``), so that a failed read cannot abort
        the snapshot.
        """
        return self._require_conn()

    def table_columns(self) -> dict[tuple[str, str], tuple[str, ...]]:
        """Every table's columns (ordinary, partitioned and foreign tables outside system schemas), by (schema, name).

        A dump's COPY header lists only the columns it copies; a table's generated columns are in
        its definition, and a restored table has them: the manifest records this full list.
        """
        import psycopg

        conn = self._require_conn()
        try:
            with conn.transaction():
                rows = conn.execute(self._COLUMNS_SQL).fetchall()
        except psycopg.Error as exc:
            raise DumpError(f"Could not read the tables' columns of {self._who}: {str(exc).strip()}.") from None
        return {(str(schema), str(name)): tuple(columns) for schema, name, columns in rows}

    def _require_conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise DumpError(f"The snapshot connection to {self._who} is closed; this is a bug in backup-ops.")
        return self._conn
