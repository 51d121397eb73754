"""Validating a restored database with Great Expectations: every table exactly as the manifest recorded it.

Per table of the manifest: ``ExpectTableRowCountToEqual`` (the exact row count taken inside the
dump's snapshot) and ``ExpectTableColumnsToMatchSet`` (the same columns, no more, no fewer), plus
the configured rules (``restore_drill.expectations``): ``ExpectColumnValuesToNotBeNull`` per listed
column and ``ExpectColumnMaxToBeBetween`` for freshness, its lower bound typed like the column
(``timestamptz``, ``timestamp`` or ``date``, which GX compares as Python values).

Great Expectations is imported here, inside the call (4–7 s, and about 200 INFO lines unless its
logger is quieted first): never at DAG parse time, only in the task that validates. Its context is
ephemeral (nothing written to disk), progress bars are off.

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


@dataclass(frozen=True)
class ValidationRun:
    """What validating one database found, and what it cost."""

    tables: tuple[TableResult, ...]
    import_seconds: float
    seconds: float

    @property
    def success(self) -> bool:
        return all(t.success for t in self.tables)


def validate_database(target: PgTarget, conn_id: str, expectations: Sequence[TableExpectation], *,
                      label: str, log: logging.Logger | None = None) -> ValidationRun:
    """Run every table's expectations against ``target.dbname``; ``label`` names the database in results.

    A failed expectation is a result, not an exception: the caller decides. Raises
    ValidationError only when the validation cannot run.
    """
    log = log or _log
    started = time.monotonic()
    gx, gxe = _import_gx()
    imported = time.monotonic()
    column_types = _column_types(target, conn_id, expectations)
    context = gx.get_context(mode="ephemeral")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_postgres(name="restored", connection_string=_sqlalchemy_url(target))
    results = []
    for index, expected in enumerate(expectations):
        table = TableResult(label, expected.qualified_name, None, expected.row_count)
        suite = gx.ExpectationSuite(name=f"table_{index}")
        shape = gx.ExpectationSuite(name=f"table_{index}_columns")
        shape.add_expectation(gxe.ExpectTableColumnsToMatchSet(column_set=list(expected.columns), exact_match=True))
        problems = _add_expectations(gxe, suite, expected, column_types)
        table.results += problems
        try:
            # Two batches of one table: the data, which GX only aggregates in SQL (counts, nulls, max), and
            # its shape without rows. GX reads a batch's columns by fetching the whole query result into the
            # worker; over "LIMIT 0" that costs nothing, over the table it would hold its every row in memory.
            outcome = _table_batch(source, f"table_{index}", expected).validate(suite, result_format="SUMMARY")
            columns = _batch(source, f"table_{index}_columns", f"SELECT * FROM {_quoted(expected)} LIMIT 0").validate(
                shape, result_format="SUMMARY")
        except Exception as exc:  # GX wraps driver errors in many types: one result sentence each
            table.results.append({"kind": "row_count", "success": False,
                                  "detail": f"could not be read: {_reason(exc, target)}"})
            results.append(table)
            continue
        for result in [*outcome.results, *columns.results]:
            entry = _describe(result, expected, target)
            if entry["kind"] == "row_count":
                observed = (result.result or {}).get("observed_value")
                table.rows = observed if isinstance(observed, int) else None
            table.results.append(entry)
        results.append(table)
    finished = time.monotonic()
    run = ValidationRun(tuple(results), imported - started, finished - started)
    failed = [t for t in results if not t.success]
    log.info("Validated %s with Great Expectations: %d tables, %d failed (import %.1f s, %.3f s per table)",
             label, len(results), len(failed), run.import_seconds,
             (finished - imported) / max(len(results), 1))
    return run


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
                      column_types: dict[tuple[str, str, str], str]) -> list[dict[str, Any]]:
    """Add the table's expectations to ``suite``; rules that cannot apply are returned as failed results."""
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
        seen = set(observed or ())
        missing = sorted(set(expected.columns) - seen)
        extra = sorted(seen - set(expected.columns))
        detail = "the manifest's columns" if success else \
            "columns differ from the manifest: " + "; ".join(
                part for part in (f"missing {', '.join(missing)}" if missing else "",
                                  f"unexpected {', '.join(extra)}" if extra else "") if part)
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
