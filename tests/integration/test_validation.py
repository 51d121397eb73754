"""Great Expectations validation of a restored database: exact, and never holding a table's rows in memory."""

from __future__ import annotations

import logging
from collections.abc import Iterator

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
    run = validate_database(target, "app_db", expected, label=app_db)
    assert run.success, [t.to_dict() for t in run.tables if not t.success]
    assert len(run.tables) == len(expected) > 5
    # A bare "SELECT * FROM <table>" is GX reading a batch's columns by fetching every row.
    unbounded = [s for s in statements.seen if s.upper().startswith("SELECT * FROM") and "LIMIT" not in s.upper()]
    assert unbounded == []
    assert any("count(*)" in s for s in statements.seen), "row counts are taken in SQL"


def test_a_count_that_differs_fails_the_table_naming_both_numbers(pg_server: EmbeddedPostgres, app_db: str) -> None:
    expected = expectations_of(pg_server, app_db)
    first = expected[0]
    wrong = TableExpectation(first.schema, first.name, first.row_count + 1, first.columns)
    target = PgTarget(host=pg_server.host, port=pg_server.port, user=pg_server.superuser,
                      password=pg_server.password, dbname=app_db)
    run = validate_database(target, "app_db", [wrong, *expected[1:]], label=app_db)
    assert not run.success
    (failed,) = [t for t in run.tables if not t.success]
    assert failed.table == first.qualified_name
    assert failed.rows == first.row_count
