"""Validating a restored database: every table exactly as the manifest recorded it, and the configured rules.

Per table of the manifest, two exact checks: the row count equals the one taken inside the dump's
snapshot (``count(*) FROM ONLY``, as pg_dump's COPY reads it), and the columns are the manifest's,
no more, no fewer. ``exact_by="sql"`` (``restore_drill.exact_checks``, the default) runs them as
plain catalog and count queries in one session; ``"great_expectations"`` runs them as
``ExpectTableRowCountToEqual`` and ``ExpectTableColumnsToMatchSet``. The configured rules
(``restore_drill.expectations``) always run in Great Expectations: ``ExpectColumnValuesToNotBeNull``
per listed column and ``ExpectColumnMaxToBeBetween`` for freshness, its lower bound typed like the
column (``timestamptz``, ``timestamp`` or ``date``, which GX compares as Python values). Both
engines report the same ``{kind, success, detail}`` results.

Great Expectations is imported here, inside the call, and only when something is to run in it:
the import alone costs 3–4 s on a 2-core worker (scipy, pandas, altair, SQLAlchemy) and about
200 MB, which would be half of a small drill for checks two SQL queries per table answer exactly
(docs/performance.md, "Restore drill"). Never at DAG parse time; its logger is quieted first (about
200 INFO lines otherwise). Its context is ephemeral (nothing written to disk), progress bars are off.

Memory stays flat whatever the table's size: GX only aggregates a table in SQL (count, nulls, max),
but it learns a query batch's columns by fetching the query's whole result into the worker. So a
table with a plain lower-case name is a table asset (columns by reflection), and the column check
runs on its own ``SELECT * … LIMIT 0`` batch. A mixed-case, spaced or otherwise quoted name must be
a query asset (GX's table assets lower-case and do not quote such names); for those tables the
worker holds the rows once while GX reads their columns. The connection string carries the password
only in memory; every message taken from GX is redacted.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from backup_ops.adapters.postgres.target import APP_NAME, PgTarget, connect, redact
from backup_ops.core.errors import BackupError
from backup_ops.core.restore_plan import TableExpectation

_log = logging.getLogger(__name__)

_KINDS = {
    "expect_table_row_count_to_equal": "row_count",
    "expect_table_columns_to_match_set": "columns",
    "expect_column_values_to_not_be_null": "not_null",
    "expect_column_max_to_be_between": "freshness",
}
_GX_LOGGERS = ("great_expectations", "great_expectations._docs_decorators")


class ValidationError(BackupError):
    """Great Expectations could not run at all (not installed, the database unreachable)."""


@dataclass
class TableResult:
    """One table's expectations: the outcome of each, and the row count seen."""

    database: str
    table: str
    rows: int | None
    expected_rows: int
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return all(r["success"] for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "table": self.table, "success": self.success, "rows": self.rows,
                "expected_rows": self.expected_rows, "results": self.results}


EXACT_ENGINES = ("sql", "great_expectations")
"""Where the exact checks (row count, column set) run: ``restore_drill.exact_checks``."""


@dataclass(frozen=True)
class ValidationRun:
    """What validating one database found, what it cost, and which engines ran (``engines``: in running order)."""

    tables: tuple[TableResult, ...]
    import_seconds: float
    seconds: float
    engines: tuple[str, ...] = ()

    @property
    def success(self) -> bool:
        return all(t.success for t in self.tables)


def validate_database(target: PgTarget, conn_id: str, expectations: Sequence[TableExpectation], *,
                      label: str, log: logging.Logger | None = None, exact_by: str = "sql") -> ValidationRun:
    """Check every table of ``expectations`` against ``target.dbname``; ``label`` names the database in results.

    ``exact_by``: where the row count and column checks run (``EXACT_ENGINES``). Great Expectations
    is imported only when it has something to run: the exact checks with ``exact_by="great_expectations"``,
    or a configured rule. A failed check is a result, not an exception: the caller decides. Raises
    ValidationError only when the validation cannot run.
    """
    if exact_by not in EXACT_ENGINES:
        raise ValueError(f"exact_by must be one of {EXACT_ENGINES}, not {exact_by!r}")
    log = log or _log
    started = time.monotonic()
    tables = [TableResult(label, e.qualified_name, None, e.row_count) for e in expectations]
    engines: list[str] = []
    if exact_by == "sql":
        _exact_by_sql(target, conn_id, expectations, tables)
        engines.append("sql")
    in_gx = [(e, t) for e, t in zip(expectations, tables, strict=True) if exact_by != "sql" or _has_rules(e)]
    import_seconds = 0.0
    if in_gx:
        import_seconds = _validate_in_gx(target, conn_id, in_gx, exact=exact_by != "sql")
        engines.append("great_expectations")
    finished = time.monotonic()
    run = ValidationRun(tuple(tables), import_seconds, finished - started, tuple(engines))
    failed = [t for t in tables if not t.success]
    log.info("Validated %s (%s): %d tables, %d failed, in %.2f s (%s)", label,
             " + ".join(engines) or "nothing to check", len(tables), len(failed), run.seconds,
             f"Great Expectations' import {import_seconds:.1f} s" if in_gx else "Great Expectations not needed")
    return run


def _has_rules(expected: TableExpectation) -> bool:
    """Whether the table has configured rules (which run in Great Expectations)."""
    return bool(expected.not_null) or bool(expected.freshness_column and expected.fresh_since is not None)


def _exact_by_sql(target: PgTarget, conn_id: str, expectations: Sequence[TableExpectation],
                  tables: Sequence[TableResult]) -> None:
    """Row count and column set of every table by plain SQL, in one autocommit session (one failure stays one)."""
    from psycopg import sql

    with connect(target, conn_id, "restore validation") as conn:
        for expected, table in zip(expectations, tables, strict=True):
            name = sql.Identifier(expected.schema, expected.name)
            try:
                found = conn.execute("""
                    SELECT c.relkind::text, ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                                                  WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
                    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = %s AND c.relname = %s
                """, (expected.schema, expected.name)).fetchone()
                # As the dump held them: a table's own rows (FROM ONLY, like COPY); a partitioned table's rows
                # are in the dump only under --load-via-partition-root, as all of its partitions' rows.
                only = sql.SQL("" if found and found[0] == "p" else "ONLY ")
                row = conn.execute(sql.SQL("SELECT count(*) FROM {}{}").format(only, name)).fetchone()
            except Exception as exc:  # a missing table, no privilege: a failed result naming why
                table.results.append({"kind": "row_count", "success": False,
                                      "detail": f"could not be read: {_reason(exc, target)}"})
                continue
            table.rows = int(row[0]) if row else None
            success = table.rows == expected.row_count
            table.results.append({"kind": "row_count", "success": success, "detail": f"{table.rows} rows" + (
                "" if success else f", the manifest says {expected.row_count}")})
            table.results.append(_columns_result(set(found[1]) if found else set(), expected))


def _validate_in_gx(target: PgTarget, conn_id: str, work: Sequence[tuple[TableExpectation, TableResult]], *,
                    exact: bool) -> float:
    """Run the tables' GX expectations (the exact ones too when ``exact``); returns the import's seconds."""
    started = time.monotonic()
    gx, gxe = _import_gx()
    import_seconds = time.monotonic() - started
    column_types = _column_types(target, conn_id, [e for e, _ in work])
    context = gx.get_context(mode="ephemeral")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_postgres(name="restored", connection_string=_sqlalchemy_url(target))
    for index, (expected, table) in enumerate(work):
        suite = gx.ExpectationSuite(name=f"table_{index}")
        problems = _add_expectations(gxe, suite, expected, column_types, exact=exact)
        table.results += problems
        try:
            # Two batches of one table: the data, which GX only aggregates in SQL (counts, nulls, max), and
            # its shape without rows. GX reads a batch's columns by fetching the whole query result into the
            # worker; over "LIMIT 0" that costs nothing, over the table it would hold its every row in memory.
            found = []
            if suite.expectations:
                found += _table_batch(source, f"table_{index}", expected).validate(
                    suite, result_format="SUMMARY").results
            if exact:
                shape = gx.ExpectationSuite(name=f"table_{index}_columns")
                shape.add_expectation(gxe.ExpectTableColumnsToMatchSet(column_set=list(expected.columns),
                                                                       exact_match=True))
                found += _batch(source, f"table_{index}_columns",
                                f"SELECT * FROM {_quoted(expected)} LIMIT 0").validate(
                    shape, result_format="SUMMARY").results
        except Exception as exc:  # GX wraps driver errors in many types: one result sentence each
            kind = "row_count" if exact else "not_null" if expected.not_null else "freshness"
            table.results.append({"kind": kind, "success": False,
                                  "detail": f"could not be read: {_reason(exc, target)}"})
            continue
        for result in found:
            entry = _describe(result, expected, target)
            if entry["kind"] == "row_count":
                observed = (result.result or {}).get("observed_value")
                table.rows = observed if isinstance(observed, int) else None
            table.results.append(entry)
    _log.debug("Great Expectations checked %d tables in %.2f s", len(work), time.monotonic() - started)
    return import_seconds


def _table_batch(source: Any, name: str, expected: TableExpectation) -> Any:
    """The table as one GX batch: a table asset when GX can name it (it reads columns by reflection), else a query."""
    if _plain(expected.schema) and _plain(expected.name):
        asset = source.add_table_asset(name=name, table_name=expected.name, schema_name=expected.schema)
        return asset.add_batch_definition_whole_table(name="all").get_batch()
    return _batch(source, name, f"SELECT * FROM {_quoted(expected)}")


def _plain(identifier: str) -> bool:
    """Whether GX's table assets name ``identifier`` right: lower-case letters, digits and '_' only."""
    return bool(identifier) and identifier == identifier.lower() and identifier.replace("_", "").isalnum() \
        and identifier.isascii() and not identifier[0].isdigit()


def _batch(source: Any, name: str, query: str) -> Any:
    """The whole result of ``query`` as one GX batch."""
    return source.add_query_asset(name=name, query=query).add_batch_definition_whole_table(name="all").get_batch()


def _import_gx() -> tuple[Any, Any]:
    """Great Expectations, quiet: its loggers at WARNING before the import, its warnings not shown."""
    for name in _GX_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import great_expectations as gx
            import great_expectations.expectations as gxe
    except ImportError as exc:
        raise ValidationError(f"Great Expectations cannot be imported on this worker ({exc}); install the "
                              "great-expectations package from requirements.txt.", retryable=False) from None
    # Some GX modules set their own logger to INFO when imported (data_context.types.base): quiet those too.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("great_expectations") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.WARNING)
    return gx, gxe


def _add_expectations(gxe: Any, suite: Any, expected: TableExpectation,
                      column_types: dict[tuple[str, str, str], str], *, exact: bool) -> list[dict[str, Any]]:
    """Add the table's rules (and its exact row count when ``exact``) to ``suite``; a rule that cannot apply is
    returned as a failed result."""
    if exact:
        suite.add_expectation(gxe.ExpectTableRowCountToEqual(value=expected.row_count))
    problems = []
    for column in expected.not_null:
        if column not in expected.columns:
            problems.append({"kind": "not_null", "success": False,
                             "detail": f"column {column!r} (restore_drill.expectations) is not in the backup"})
        else:
            suite.add_expectation(gxe.ExpectColumnValuesToNotBeNull(column=column))
    fresh = expected.freshness_column
    if fresh and expected.fresh_since is not None:
        kind = column_types.get((expected.schema, expected.name, fresh))
        bound = _typed_bound(expected.fresh_since, kind)
        if fresh not in expected.columns or kind is None:
            problems.append({"kind": "freshness", "success": False,
                             "detail": f"column {fresh!r} (restore_drill.expectations) is not in the backup"})
        elif bound is None:
            problems.append({"kind": "freshness", "success": False,
                             "detail": f"column {fresh!r} is {kind}, not a date or timestamp"})
        else:
            suite.add_expectation(gxe.ExpectColumnMaxToBeBetween(column=fresh, min_value=bound))
    return problems


def _typed_bound(moment: datetime, kind: str | None) -> Any:
    """``moment`` as the Python value GX compares the column's maximum with (None: not a time column)."""
    if kind == "timestamp with time zone":
        return moment.astimezone(UTC)
    if kind == "timestamp without time zone":
        return moment.astimezone(UTC).replace(tzinfo=None)
    if kind == "date":
        return moment.astimezone(UTC).date()
    return None


def _column_types(target: PgTarget, conn_id: str, expectations: Sequence[TableExpectation]
                  ) -> dict[tuple[str, str, str], str]:
    """The SQL types of the freshness columns, from the restored catalog."""
    wanted = [(e.schema, e.name, e.freshness_column) for e in expectations if e.freshness_column]
    if not wanted:
        return {}
    types: dict[tuple[str, str, str], str] = {}
    with connect(target, conn_id, "restore validation") as conn:
        for schema, name, column in wanted:
            row = conn.execute("""
                SELECT pg_catalog.format_type(a.atttypid, NULL) FROM pg_catalog.pg_attribute a
                JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
                JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s AND a.attnum > 0 AND NOT a.attisdropped
            """, (schema, name, column)).fetchone()
            if row:
                types[(schema, name, column)] = str(row[0])
    return types


def _describe(result: Any, expected: TableExpectation, target: PgTarget) -> dict[str, Any]:
    """One GX expectation result as ``{kind, success, detail}`` in words."""
    config = result.expectation_config
    kind = _KINDS.get(config.type, config.type)
    observed = (result.result or {}).get("observed_value")
    exception = (result.exception_info or {}).get("exception_message") if result.exception_info else None
    if exception and (result.exception_info or {}).get("raised_exception"):
        return {"kind": kind, "success": False, "detail": f"could not be checked: {_reason(exception, target)}"}
    success = bool(result.success)
    if kind == "row_count":
        detail = f"{observed} rows" + ("" if success else f", the manifest says {expected.row_count}")
    elif kind == "columns":
        return {**_columns_result(set(observed or ()), expected), "success": success}
    elif kind == "not_null":
        column = config.kwargs.get("column")
        count = (result.result or {}).get("unexpected_count")
        detail = f"{column} has no NULL" if success else f"{column} has {count} NULL value(s)"
    else:
        column = config.kwargs.get("column")
        detail = (f"newest {column} is {observed}" +
                  ("" if success else f", older than {expected.fresh_since:%Y-%m-%d %H:%M} UTC "
                                      f"(restore_drill.expectations)" if expected.fresh_since else ""))
    return {"kind": kind, "success": success, "detail": detail}


def _columns_result(seen: set[str], expected: TableExpectation) -> dict[str, Any]:
    """The column check's result: the manifest's columns, or which are missing and which unexpected."""
    missing = sorted(set(expected.columns) - seen)
    extra = sorted(seen - set(expected.columns))
    if not missing and not extra:
        return {"kind": "columns", "success": True, "detail": "the manifest's columns"}
    parts = [f"missing {', '.join(missing)}" if missing else "", f"unexpected {', '.join(extra)}" if extra else ""]
    return {"kind": "columns", "success": False,
            "detail": "columns differ from the manifest: " + "; ".join(p for p in parts if p)}


def _quoted(expected: TableExpectation) -> str:
    """``"schema"."table"`` with embedded quotes doubled: any name stays one identifier."""
    def quote(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    return f"{quote(expected.schema)}.{quote(expected.name)}"


def _sqlalchemy_url(target: PgTarget) -> str:
    """The restored database as a SQLAlchemy URL (psycopg 3 driver), every libpq parameter kept, escaped."""
    from sqlalchemy.engine import URL

    params = target.libpq_params(f"{APP_NAME} restore validation")
    for key in ("host", "port", "user", "dbname"):
        params.pop(key, None)
    url = URL.create("postgresql+psycopg", username=target.user, password=target.password or None,
                     host=target.host, port=target.port, database=target.dbname, query=params)
    return url.render_as_string(hide_password=False)


def _reason(exc: Any, target: PgTarget) -> str:
    text = redact(str(exc).strip(), *target.secrets)
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:300]
