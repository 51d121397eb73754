"""The snapshot session: the transaction pg_dump's snapshot comes from, which also counts the rows.

Consistency. A ``REPEATABLE READ READ ONLY`` transaction exports its snapshot and pg_dump runs with
``--snapshot=<id>``. While pg_dump streams, the same transaction counts the rows of every table
whose data pg_dump dumps and reads its column names. Counts and dump describe the same instant, so
a restore drill can compare them exactly. The transaction stays open until pg_dump has exited.

Which tables are counted. Ordinary tables (partitions included) outside the system schemas whose
data pg_dump dumps, counted with ``count(*) FROM ONLY`` like pg_dump's ``COPY``. Partitioned
parents hold no rows of their own: their rows are counted in their partitions, so totals never
count a row twice. Tables that belong to an extension are skipped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backup_ops.adapters.postgres.target import PgTarget, connect, redact
from backup_ops.core.errors import DumpError
from backup_ops.core.models import TableStat

if TYPE_CHECKING:
    import psycopg

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Table:
    """A table of the database as the snapshot sees it: identity, kind, columns and ancestors."""

    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind: 'r' ordinary, 'p' partitioned
    unlogged: bool
    visible: bool  # pg_table_is_visible(): found first on the search_path
    columns: tuple[str, ...]
    ancestors: tuple[Table, ...] = ()


class SnapshotSession:
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

    @property
    def connection(self) -> psycopg.Connection[Any]:
        """The snapshot transaction's session, for catalog reads that must see what pg_dump sees.

        Use it before ``start_counting`` only (a session runs one query at a time), and only inside
        savepoints (``conn.transaction()``), so that a failed read cannot abort the snapshot.
        """
        return self._require_conn()

    def list_tables(self) -> list[Table]:
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
        plain = {int(r[0]): Table(int(r[0]), r[1], r[2], r[3], bool(r[4]), bool(r[5]), tuple(r[6])) for r in rows}
        return [
            Table(t.oid, t.schema, t.name, t.kind, t.unlogged, t.visible, t.columns,
                   tuple(plain[a] for a in _ancestors(t.oid, parents) if a in plain))
            for t in plain.values()
        ]

    def start_counting(self, tables: Sequence[Table]) -> None:
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

    def _count(self, tables: list[Table]) -> None:
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
                        f"{str(exc).strip()}; the backup login needs SELECT on every table it dumps.",
                        # A missing grant stays missing on the next try; a dropped connection may not.
                        retryable=not isinstance(exc, psycopg.errors.InsufficientPrivilege),
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
