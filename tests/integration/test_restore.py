"""The restore engine and ``python -m backup_ops restore`` against real servers and real archives.

A real backup is made once per module: the sample database (owned by an application role, with a
reporting role, grants, settings and a comment) dumped with ``dump_database``, zipped with
``build_archive`` (AES-256, a few application files) and published to a local destination. Then it
is restored for real: onto the same server under a new name, onto ``empty_pg_server`` (a fresh
server without the application's roles), over a database that is not empty, onto the source
database itself; from a tampered archive, with a wrong password, and from an archive whose manifest
counts one row too many. The source database is fingerprinted before and after: nothing ever
writes to it.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg import sql

from backup_ops.adapters.destinations.local import LocalDestination
from backup_ops.adapters.postgres import restore as pg_restore
from backup_ops.adapters.postgres.target import PgTarget
from backup_ops.cli.restore_command import RestoreValidationFailed, restore_command
from backup_ops.core.errors import ArchiveError, ConfigError, VerificationError
from backup_ops.core.models import Receipt, archive_file_name
from devtools.pgserver import EmbeddedPostgres
from devtools.sample_app import build_sample_app
from devtools.sample_data import add_application_roles, load_sample_data

BACKUP_NAME = "restore-test"
SOURCE_DB = "restore_source"
SOURCE_CONN, TARGET_CONN, EMPTY_CONN = "restore_source", "restore_target", "restore_empty"
OWNER, REPORTING, WEB = "rs_owner", "rs_reporting", "rs_web"
PASSWORD = "restore-test archive password"
PASSWORD_ENV = "RESTORE_TEST_ARCHIVE_PASSWORD"
_names = itertools.count(1)


# ---------------------------------------------------------------------------- making real backups


def make_backup(workdir: Path, destination: LocalDestination, target: PgTarget, conn_id: str, created_at: datetime,
                *, app: Path | None = None, password: str | None = PASSWORD, dump_format: str = "plain",
                tweak_manifest: Callable[[dict[str, Any]], None] | None = None) -> str:
    """Dump ``target``, zip it with ``app``'s files, publish it to ``destination``; returns its key there."""
    from backup_ops.adapters.postgres.dump import dump_database
    from backup_ops.core.archive import build_archive
    from backup_ops.core.config import DatabaseSource, FileSource
    from backup_ops.core.files import select_files
    from backup_ops.core.manifest import build_manifest

    staging = workdir / f"staging-{next(_names)}"
    staging.mkdir(parents=True)
    dump = dump_database(target, DatabaseSource(conn_id, format=dump_format), staging,  # type: ignore[arg-type]
                         pg_bin_dir=_bin_dir())
    name = archive_file_name("", created_at)
    encryption = "aes256" if password else "none"

    def manifest(members: Any) -> dict[str, Any]:
        data = build_manifest(backup_name=destination.backup_name, created_at=created_at, archive_name=name,
                              run={"dag_id": "test", "run_id": "test"}, dumps=[dump], members=members,
                              encryption=encryption, tool_versions={})
        if tweak_manifest is not None:
            tweak_manifest(data)
        return data

    files = select_files(FileSource(include=(app,), relative_path=app)) if app else []
    result = build_archive(staging / name, dumps=[dump], files=files, password=password.encode() if password else None,
                           encryption=encryption, compression_level=6, make_manifest=manifest)
    receipt = Receipt(name, result.size, result.sha256, created_at.isoformat(), result.manifest_sha256)
    return str(destination.publish(staging / name, name, receipt).path)


def _bin_dir() -> Path:
    from devtools.pgserver import default_bin_dir

    return default_bin_dir()


def fingerprint(server: EmbeddedPostgres, dbname: str) -> dict[str, str]:
    """Every table's rows as one md5, and the database's committed-transaction-free catalog state."""
    result = {}
    with server.connect(dbname) as conn:
        tables = conn.execute("SELECT schemaname, relname FROM pg_stat_user_tables ORDER BY 1, 2").fetchall()
        for schema, name in tables:
            row = conn.execute(sql.SQL("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {} t")
                               .format(sql.Identifier(schema, name))).fetchone()
            result[f"{schema}.{name}"] = str(row[0]) if row else ""
        row = conn.execute("SELECT md5(string_agg(oid::text || relname, ',' ORDER BY oid)) FROM pg_class").fetchone()
        result["(catalog)"] = str(row[0]) if row else ""
    return result


def row_counts(server: EmbeddedPostgres, dbname: str) -> dict[str, int]:
    with server.connect(dbname) as conn:
        tables = conn.execute("SELECT schemaname, relname FROM pg_stat_user_tables ORDER BY 1, 2").fetchall()
        return {f"{s}.{n}": int(conn.execute(sql.SQL("SELECT count(*) FROM ONLY {}").format(
            sql.Identifier(s, n))).fetchone()[0]) for s, n in tables}  # type: ignore[index]


def databases_like(server: EmbeddedPostgres, pattern: str) -> list[str]:
    with server.connect(autocommit=True) as conn:
        return [str(r[0]) for r in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1",
                                                (pattern,)).fetchall()]


# ---------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Env:
    base: Path
    config: Path
    destination: LocalDestination
    key: str
    app: Path
    server: EmbeddedPostgres
    source_target: PgTarget

    def target(self, conn_id: str = TARGET_CONN) -> PgTarget:
        from backup_ops.adapters.postgres.target import target_from_connection

        return target_from_connection(conn_id)


@pytest.fixture(scope="module")
def env(tmp_path_factory: Any, pg_server: EmbeddedPostgres, empty_pg_server: EmbeddedPostgres) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("restore")
    pg_server.drop_database(SOURCE_DB)
    pg_server.create_database(SOURCE_DB)
    with pg_server.connect(SOURCE_DB) as conn:
        load_sample_data(conn, scale=0.05)
        conn.commit()
        add_application_roles(conn, owner=OWNER, reporting=REPORTING, web=WEB)
    app = build_sample_app(base / "app", uploads=3)
    root = base / "backups"
    root.mkdir()
    destination = LocalDestination("local", BACKUP_NAME, root)
    source_target = PgTarget(host=pg_server.host, port=pg_server.port, user=pg_server.superuser,
                             password=pg_server.password, dbname=SOURCE_DB)
    key = make_backup(base, destination, source_target, SOURCE_CONN, datetime(2026, 11, 26, 2, tzinfo=UTC), app=app)
    config = {
        "backup": {
            "name": BACKUP_NAME,
            "source": {"databases": [{"conn_id": SOURCE_CONN}], "pg_bin_dir": str(pg_server.bin_dir)},
            "destination": {"destinations": [{"name": "local", "type": "local", "path": str(root)}]},
            "staging_directory": str(base / "staging"),
            "password": {"env": PASSWORD_ENV},
            "encryption": "aes256",
        },
        "restore_drill": {"jobs": 2},
    }
    config_file = base / "backup_config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(f"AIRFLOW_CONN_{SOURCE_CONN.upper()}", pg_server.conn_uri(SOURCE_DB))
        mp.setenv(f"AIRFLOW_CONN_{TARGET_CONN.upper()}", pg_server.conn_uri("postgres"))
        mp.setenv(f"AIRFLOW_CONN_{EMPTY_CONN.upper()}", empty_pg_server.conn_uri("postgres"))
        mp.setenv(PASSWORD_ENV, PASSWORD)
        yield Env(base, config_file, destination, key, app, pg_server, source_target)
    pg_server.drop_database(SOURCE_DB)


@pytest.fixture
def source_untouched(env: Env) -> Iterator[None]:
    """The source database is exactly as it was after the test."""
    before = fingerprint(env.server, SOURCE_DB)
    yield
    assert fingerprint(env.server, SOURCE_DB) == before


@pytest.fixture
def new_name(env: Env) -> Iterator[str]:
    """A database name for one test's restore on pg_server, dropped afterwards."""
    name = f"restored_{next(_names)}"
    yield name
    env.server.drop_database(name)


def run_restore(env: Env, name: str, *, conn: str = TARGET_CONN, **options: Any) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = restore_command(str(env.config), destination="local", backup=options.pop("backup", "latest"),
                           target_conn=conn, databases=[name], out=lines.append, **options)
    return code, lines


# ---------------------------------------------------------------------------- a real restore


@pytest.mark.usefixtures("source_untouched")
def test_restore_recreates_the_database_and_files_and_validates_them(env: Env, new_name: str, tmp_path: Path) -> None:
    files_to = tmp_path / "restored-files"
    code, lines = run_restore(env, new_name, files_to=files_to)
    assert code == 0, lines
    assert row_counts(env.server, new_name) == row_counts(env.server, SOURCE_DB)
    text = "\n".join(lines)
    assert "verified (" in text and "size and sha256 match the receipt" in text
    assert f"→ {new_name} on {env.server.host}:{env.server.port}" in text
    assert "validation PASS row_counts: 12 tables have exactly the manifest's row counts" in text
    assert "validation: 12 tables match the manifest exactly" in text
    for source in env.app.rglob("*"):
        if source.is_file() and not source.is_symlink() and "storage/framework" not in str(source):
            assert (files_to / source.relative_to(env.app)).read_bytes() == source.read_bytes()
    assert "Files: " in text and "each matching the manifest's sha256" in text
    with env.server.connect(new_name) as conn:  # ownership came with the dump, the roles existed here
        owner = conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'invoices'").fetchone()
    assert owner == (OWNER,)
    assert not list(Path(env.base / "staging").iterdir()), "the working directory is removed"


@pytest.mark.usefixtures("source_untouched")
def test_a_custom_format_dump_restores_with_pg_restore_jobs(env: Env, new_name: str, tmp_path: Path) -> None:
    destination = LocalDestination("local", BACKUP_NAME, tmp_path / "custom")
    (tmp_path / "custom").mkdir()
    make_backup(tmp_path, destination, env.source_target, SOURCE_CONN, datetime(2026, 11, 27, tzinfo=UTC),
                dump_format="custom")
    config = yaml.safe_load(env.config.read_text())
    config["backup"]["destination"]["destinations"][0]["path"] = str(tmp_path / "custom")
    env_file = tmp_path / "config.yaml"
    env_file.write_text(yaml.safe_dump(config))
    lines: list[str] = []
    assert restore_command(str(env_file), destination="local", backup="latest", target_conn=TARGET_CONN,
                           databases=[new_name], out=lines.append) == 0
    assert row_counts(env.server, new_name) == row_counts(env.server, SOURCE_DB)


@pytest.mark.usefixtures("source_untouched")
def test_restore_onto_an_empty_server_brings_roles_grants_and_settings(env: Env,
                                                                       empty_pg_server: EmbeddedPostgres) -> None:
    name = "fresh_invoicing"
    try:
        code, lines = run_restore(env, name, conn=EMPTY_CONN)
        assert code == 0, lines
        assert row_counts(empty_pg_server, name) == row_counts(env.server, SOURCE_DB)
        with empty_pg_server.connect(name) as conn:
            assert conn.execute("SELECT tableowner FROM pg_tables WHERE tablename = 'invoices'").fetchone() == (OWNER,)
            assert conn.execute("SELECT has_table_privilege(%s, 'public.invoices', 'SELECT')",
                                (REPORTING,)).fetchone() == (True,)
            assert conn.execute("SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                                (name,)).fetchone() == (OWNER,)
            settings = conn.execute("SELECT setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = "
                                    "s.setdatabase WHERE d.datname = %s AND s.setrole = 0", (name,)).fetchone()
            assert settings is not None and "TimeZone=Europe/Berlin" in settings[0]
            comment = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                                   (name,)).fetchone()
            assert comment == ("Invoicing: tenants, invoices, payments",)
        assert any(f"created role {OWNER}" in line or OWNER in line for line in lines)
    finally:
        empty_pg_server.drop_database(name)
        with empty_pg_server.connect(autocommit=True) as conn:
            for role in (WEB, REPORTING, OWNER):
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# ---------------------------------------------------------------------------- what a restore refuses


@pytest.mark.usefixtures("source_untouched")
def test_a_database_with_content_is_refused_unless_forced(env: Env, new_name: str) -> None:
    env.server.create_database(new_name)
    with env.server.connect(new_name, autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (id int)")
    with pytest.raises(ConfigError, match=rf"Database '{new_name}' on .* is not empty \(1 schemas, tables or "
                                          r"functions\): refusing to restore into it; .* use --force"):
        run_restore(env, new_name)
    with env.server.connect(new_name) as conn:
        assert conn.execute("SELECT to_regclass('precious') IS NOT NULL").fetchone() == (True,)
    code, lines = run_restore(env, new_name, force=True)
    assert code == 0
    assert any("was dropped first (--force)" in line for line in lines)
    assert row_counts(env.server, new_name) == row_counts(env.server, SOURCE_DB)


@pytest.mark.usefixtures("source_untouched")
def test_the_source_database_itself_is_refused_even_with_force(env: Env) -> None:
    with pytest.raises(ConfigError, match=rf"Refusing to restore into database '{SOURCE_DB}' on .*: it is the source "
                                          rf"database of Airflow connection '{SOURCE_CONN}'"):
        run_restore(env, SOURCE_DB, force=True)


def test_a_drill_never_drops_a_database_that_is_not_a_scratch_database(env: Env) -> None:
    with pytest.raises(ConfigError, match="not a restore drill's scratch database"):
        pg_restore.drop_scratch_database(env.target(), TARGET_CONN, SOURCE_DB)
    assert databases_like(env.server, SOURCE_DB) == [SOURCE_DB]


def test_files_go_only_into_a_new_or_empty_folder(env: Env, new_name: str, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("not mine")
    with pytest.raises(ConfigError, match="--files-to .* is not empty"):
        run_restore(env, new_name, files_to=tmp_path)
    assert databases_like(env.server, new_name) == [], "refused before anything was restored"


def test_one_name_per_database_of_the_backup(env: Env) -> None:
    lines: list[str] = []
    with pytest.raises(ConfigError, match=r"The backup holds 1 database\(s\) \(restore_source\) but 2 new name\(s\)"):
        restore_command(str(env.config), destination="local", backup="latest", target_conn=TARGET_CONN,
                        databases=["a", "b"], out=lines.append)


# ---------------------------------------------------------------------------- damaged or hostile archives


def _copy_destination(env: Env, tmp_path: Path) -> Path:
    """A config whose destination is a copy of the module's backups (so a test may damage them)."""
    root = tmp_path / "backups"
    shutil.copytree(env.destination.root, root)
    config = yaml.safe_load(env.config.read_text())
    config["backup"]["destination"]["destinations"][0]["path"] = str(root)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config_file


def test_a_tampered_archive_fails_verification_before_anything_is_restored(env: Env, new_name: str,
                                                                           tmp_path: Path) -> None:
    config = _copy_destination(env, tmp_path)
    archive = tmp_path / "backups" / env.key
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    archive.write_bytes(bytes(data))
    with pytest.raises(VerificationError, match="has sha256 .* but .* was recorded: it is corrupt or was replaced"):
        restore_command(str(config), destination="local", backup="latest", target_conn=TARGET_CONN,
                        databases=[new_name], out=lambda _: None)
    assert databases_like(env.server, new_name) == []


def test_a_wrong_password_is_one_sentence_naming_where_it_came_from(env: Env, new_name: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WRONG_PASSWORD", "not the password")
    with pytest.raises(ArchiveError, match=r"^Wrong archive password for .*: check the environment variable "
                                           r"WRONG_PASSWORD \(--password-env\)\.$"):
        run_restore(env, new_name, password_env="WRONG_PASSWORD")
    assert databases_like(env.server, new_name) == []


@pytest.mark.usefixtures("source_untouched")
def test_a_manifest_that_counts_otherwise_fails_validation(env: Env, new_name: str, tmp_path: Path) -> None:
    def one_row_more(manifest: dict[str, Any]) -> None:
        table = next(t for t in manifest["databases"][0]["tables"] if t["name"] == "invoices")
        table["row_count"] += 1
        manifest["databases"][0]["total_rows"] += 1

    (tmp_path / "odd").mkdir()
    destination = LocalDestination("local", BACKUP_NAME, tmp_path / "odd")
    make_backup(tmp_path, destination, env.source_target, SOURCE_CONN, datetime(2026, 11, 28, tzinfo=UTC),
                tweak_manifest=one_row_more)
    config = yaml.safe_load(env.config.read_text())
    config["backup"]["destination"]["destinations"][0]["path"] = str(tmp_path / "odd")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    lines: list[str] = []
    with pytest.raises(RestoreValidationFailed, match=r"1 of 12 tables do not match the backup's manifest"):
        restore_command(str(tmp_path / "config.yaml"), destination="local", backup="latest",
                        target_conn=TARGET_CONN, databases=[new_name], out=lines.append)
    invoices = row_counts(env.server, SOURCE_DB)["public.invoices"]
    assert f"  FAIL public.invoices: row_count: {invoices} rows, the manifest says {invoices + 1}" in lines
    assert any(line.startswith("  validation FAIL row_counts: 1 of 12 failed: public.invoices") for line in lines)


def test_a_plain_load_whose_member_fails_its_check_commits_nothing(env: Env, new_name: str, tmp_path: Path) -> None:
    from backup_ops.adapters.backup_fetch import read_manifest

    archive = tmp_path / "archive.zip"
    shutil.copy(env.destination.root / env.key, archive)
    manifest = read_manifest(archive, PASSWORD.encode())
    database = manifest.databases[0]
    import pyzipper

    with pyzipper.AESZipFile(archive) as zf:
        info = zf.getinfo(database.member)
        offset = info.header_offset + 30 + len(info.orig_filename.encode()) + len(info.extra)
    data = bytearray(archive.read_bytes())
    data[offset + info.compress_size - 200] ^= 0x01  # near the end: psql has most of the dump when it is found
    archive.write_bytes(bytes(data))
    env.server.create_database(new_name)
    with pytest.raises(VerificationError):
        pg_restore.load_dump(pg_restore.on_database(env.target(), new_name), TARGET_CONN, archive, database,
                             password=PASSWORD.encode(), workdir=tmp_path, pg_bin_dir=env.server.bin_dir)
    with env.server.connect(new_name) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone() == (0,)


def test_old_archives_without_roles_restore_where_the_roles_exist(env: Env) -> None:
    from backup_ops.adapters.backup_fetch import read_manifest

    database = read_manifest(env.destination.root / env.key, PASSWORD.encode()).databases[0]
    old = type(database)(**{**database.__dict__, "roles_member": None, "database_member": None})
    lines = pg_restore.apply_archive_globals(env.target(), TARGET_CONN, "unused", env.destination.root / env.key, old,
                                             PASSWORD.encode(), info=None)
    assert lines == ["the archive carries no roles or database settings (made before backup-ops captured them): the "
                     "roles its dump refers to must exist on the target"]


def test_a_locale_the_target_lacks_falls_back_with_a_note(env: Env, new_name: str) -> None:
    notes = pg_restore.create_database(env.target(), TARGET_CONN, new_name,
                                       {"encoding": "UTF8", "lc_collate": "xx_NOWHERE.UTF-8", "lc_ctype": "C"})
    assert databases_like(env.server, new_name) == [new_name]
    assert len(notes) == 1 and "lc_collate xx_NOWHERE.UTF-8" in notes[0] and "created without it" in notes[0]


def test_stale_scratch_databases_are_found_by_their_age(env: Env) -> None:
    old, young = "backup_drill_20200101000000", f"backup_drill_{datetime.now(UTC):%Y%m%d%H%M%S}"
    for name in (old, young):
        env.server.create_database(name)
    try:
        stale = pg_restore.stale_scratch_databases(env.target(), TARGET_CONN, datetime.now(UTC) - timedelta(hours=24))
        assert old in stale and young not in stale
    finally:
        for name in (old, young):
            env.server.drop_database(name)


@pytest.mark.usefixtures("source_untouched")
def test_the_command_line_restores_and_says_what_it_did_without_secrets(env: Env, new_name: str,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from backup_ops.cli import main

    code = main(["--config", str(env.config), "restore", "--destination", "local", "--target-conn", TARGET_CONN,
                 "--database", new_name])
    out = capsys.readouterr().out
    assert code == 0, out
    assert f"Backup {env.key} on local: verified (" in out
    assert f"Database {SOURCE_DB} (12 tables, " in out and f"→ {new_name} on " in out
    assert "validation: 12 tables match the manifest exactly" in out and "Restored and validated in " in out
    assert PASSWORD not in out and env.server.password not in out


def test_the_command_line_refuses_in_one_sentence_and_exits_1(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    from backup_ops.cli import main

    code = main(["--config", str(env.config), "restore", "--destination", "local", "--target-conn", TARGET_CONN,
                 "--database", SOURCE_DB, "--force"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: Refusing to restore into database '{SOURCE_DB}' on ") and err.count("\n") == 1


@pytest.mark.parametrize("engine", ["sql", "great_expectations"])
def test_every_kind_of_check_works_on_any_identifier(env: Env, new_name: str, engine: str) -> None:
    from backup_ops.adapters.validation import validate_database
    from backup_ops.core.restore_plan import TableExpectation

    env.server.create_database(new_name)
    with env.server.connect(new_name, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA "Odd Schema"')
        conn.execute('CREATE TABLE "Odd Schema"."Mixed ""Case" (id int, "Made At" timestamp, note text)')
        conn.execute("""INSERT INTO "Odd Schema"."Mixed ""Case" VALUES (1, '2026-11-26 01:00', NULL),
                        (2, '2026-11-20 00:00', 'x')""")
        conn.execute("CREATE TABLE plain (id int, at timestamptz, day date, extra int)")
        conn.execute("INSERT INTO plain VALUES (1, '2026-11-25 23:00+00', '2026-11-25', 1)")
    backup_time = datetime(2026, 11, 26, 2, tzinfo=UTC)
    odd = TableExpectation("Odd Schema", 'Mixed "Case', 2, ("id", "Made At", "note"), not_null=("note",),
                           freshness_column="Made At", fresh_since=backup_time - timedelta(hours=2))
    stale = TableExpectation("public", "plain", 2, ("id", "at", "day", "gone"), freshness_column="at",
                             fresh_since=backup_time - timedelta(minutes=30))
    dated = TableExpectation("public", "plain", 1, ("id", "at", "day", "extra"), freshness_column="day",
                             fresh_since=backup_time - timedelta(hours=26))
    run = validate_database(pg_restore.on_database(env.target(), new_name), TARGET_CONN, [odd, stale, dated],
                            label=new_name, exact_by=engine)
    assert run.engines == (("sql",) if engine == "sql" else ()) + ("great_expectations",)
    results = {t.table: {r["kind"]: r for r in t.results} for t in run.tables[:2]}
    odd_result = results['Odd Schema.Mixed "Case']
    assert odd_result["row_count"] == {"kind": "row_count", "success": True, "detail": "2 rows"}
    assert odd_result["not_null"] == {"kind": "not_null", "success": False, "detail": "note has 1 NULL value(s)"}
    assert odd_result["freshness"]["success"] is True  # a timestamp without time zone, compared as UTC
    plain = results["public.plain"]
    assert plain["row_count"]["detail"] == "1 rows, the manifest says 2"
    assert plain["columns"]["detail"] == "columns differ from the manifest: missing gone; unexpected extra"
    assert plain["freshness"]["success"] is False and "older than 2026-11-26 01:30 UTC" in plain["freshness"]["detail"]
    assert run.tables[2].success, run.tables[2].results  # a date column
    assert not run.success and run.seconds > 0
