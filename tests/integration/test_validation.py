"""Validating a restored database: exact by SQL or in Great Expectations, never holding a table's rows in memory."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backup_ops.adapters.postgres.target import PgTarget
from backup_ops.adapters.validation import validate_database
from backup_ops.core.restore_plan import TableExpectation
from devtools.pgserver import EmbeddedPostgres


class _Statements(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        if text.upper().startswith("SELECT"):
            self.seen.append(text)


@pytest.fixture
def statements() -> Iterator[_Statements]:
    """Every SELECT that SQLAlchemy (under Great Expectations) sends, as one line each."""
    handler = _Statements()
    engine_log = logging.getLogger("sqlalchemy.engine")
    old_level = engine_log.level
    engine_log.setLevel(logging.INFO)
    engine_log.addHandler(handler)
    yield handler
    engine_log.removeHandler(handler)
    engine_log.setLevel(old_level)


def expectations_of(pg_server: EmbeddedPostgres, database: str) -> list[TableExpectation]:
    with pg_server.connect(database) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
            "AND table_type = 'BASE TABLE' ORDER BY table_name").fetchall()
        result = []
        for (name,) in tables:
            columns = tuple(row[0] for row in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
                "AND table_name = %s ORDER BY ordinal_position", (name,)))
            count = conn.execute(f'SELECT count(*) FROM public."{name}"').fetchone()
            result.append(TableExpectation("public", name, int(count[0]) if count else 0, columns))
    return result


def test_validation_aggregates_in_sql_and_never_fetches_a_whole_table(
        pg_server: EmbeddedPostgres, app_db: str, statements: _Statements) -> None:
    expected = expectations_of(pg_server, app_db)
    target = PgTarget(host=pg_server.host, port=pg_server.port, user=pg_server.superuser,
                      password=pg_server.password, dbname=app_db)
    run = validate_database(target, "app_db", expected, label=app_db, exact_by="great_expectations")
    assert run.success, [t.to_dict() for t in run.tables if not t.success]
    assert run.engines == ("great_expectations",)
    assert len(run.tables) == len(expected) > 5
    # A bare "SELECT * FROM <table>" is GX reading a batch's columns by fetching every row.
    unbounded = [s for s in statements.seen if s.upper().startswith("SELECT * FROM") and "LIMIT" not in s.upper()]
    assert unbounded == []
    assert any("count(*)" in s for s in statements.seen), "row counts are taken in SQL"


@pytest.mark.parametrize("engine", ["sql", "great_expectations"])
def test_a_count_that_differs_fails_the_table_naming_both_numbers(pg_server: EmbeddedPostgres, app_db: str,
                                                                  engine: str) -> None:
    expected = expectations_of(pg_server, app_db)
    first = expected[0]
    wrong = TableExpectation(first.schema, first.name, first.row_count + 1, first.columns)
    target = PgTarget(host=pg_server.host, port=pg_server.port, user=pg_server.superuser,
                      password=pg_server.password, dbname=app_db)
    run = validate_database(target, "app_db", [wrong, *expected[1:]], label=app_db, exact_by=engine)
    assert run.engines == (engine,)
    assert not run.success
    (failed,) = [t for t in run.tables if not t.success]
    assert failed.table == first.qualified_name
    assert failed.rows == first.row_count


def test_exact_checks_by_sql_do_not_import_great_expectations(pg_server: EmbeddedPostgres, app_db: str) -> None:
    """The default drill without configured rules never pays GX's import (3-4 s, 200 MB): checked in a fresh process."""
    expected = expectations_of(pg_server, app_db)
    code = f"""
import sys
from backup_ops.adapters.postgres.target import PgTarget
from backup_ops.adapters.validation import validate_database
from backup_ops.core.restore_plan import TableExpectation
target = PgTarget(host={pg_server.host!r}, port={pg_server.port!r}, user={pg_server.superuser!r},
                  password={pg_server.password!r}, dbname={app_db!r})
expected = [TableExpectation(*args) for args in {[(e.schema, e.name, e.row_count, e.columns) for e in expected]!r}]
run = validate_database(target, "app_db", expected, label="app")
assert run.success and run.engines == ("sql",) and run.import_seconds == 0, run
assert [t.rows for t in run.tables] == [e.row_count for e in expected]
print("great_expectations" in sys.modules, "sqlalchemy" in sys.modules)
"""
    plugins = Path(__file__).resolve().parents[2] / "plugins"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(plugins)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
