"""docs/BACKUP_RESTORE.md, run as written: every command block of the disaster-recovery runbook, against real archives.

The runbook marks each shell block it means to be run with ``<!-- run: SCRIPT [TAG ...] -->``; this
module collects the blocks of a script in document order and runs them as one bash session
(``set -euo pipefail``), as an operator pastes them into one terminal. Only the settings at the top
of a block (``NAME=value`` lines) are changed, to this test's paths, server and names; a setting the
test expects and the document no longer has fails the test, so the runbook cannot drift from it.
Files the reader writes by hand (``<!-- file: ~/… -->``: the pgpass line, the connection JSON) are
written from the document's own example, with this test's values.

Two real encrypted archives are made from two source databases (the sample schema owned by an
application role, with a reporting role, grants, database and role settings, a comment) and the
application's files: the newest holds one database (plain format), the one before it two (plain and
custom format). They are restored onto ``empty_pg_server``, a server without the application's roles,
as on the day of a disaster:

* ``restore-command``: ``python -m backup_ops restore`` (section 1);
* ``by-hand``: 7-Zip, gunzip, pg_restore and psql only (section 2); the blocks tagged
  ``each-database`` run once per database of the manifest, those tagged ``plain``/``custom`` only for
  a database in that format;
* ``drill``: ``airflow dags test restore_drill`` and reading its report (section 3).

``connect`` (the connection settings) runs first in the first two. The password reaches psql only
through ``~/.pgpass`` (no ``PGPASSWORD``), the archive password only through
``BACKUP_ARCHIVE_PASSWORD``. Afterwards the restored databases are compared with their sources
(rows, owners, grants, default privileges, settings, comment, roles, memberships), and the files byte
for byte.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from psycopg import sql

from backup_ops.adapters.destinations.local import LocalDestination
from backup_ops.adapters.postgres.target import PgTarget
from devtools.pgserver import EmbeddedPostgres
from devtools.sample_app import build_sample_app
from devtools.sample_data import add_application_roles
from tests.integration.test_7zip import find_7zip
from tests.integration.test_globals import Source, assert_restored_like_the_source
from tests.integration.test_globals import fresh as fresh  # a fixture: what a test adds to empty_pg_server goes
from tests.integration.test_restore import databases_like, row_counts

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "BACKUP_RESTORE.md"
BACKUP_NAME = "invoicing-app"
PASSWORD = "doc test: correct horse battery staple"
SOURCES = (Source("doc_invoicing", "doc_owner", "doc_reporting", "doc_web"),
           Source("doc_audit", "doc_owner", "doc_reporting", "doc_web"))
FORMATS = ("plain", "custom")
CONN_IDS = ("app_db", "audit_db")
SCRIPT_TIMEOUT = 300

_MARKER = re.compile(r"^\s*<!--\s*(run|file|not run):\s*(.*?)\s*-->\s*$")
_FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
_SETTING = re.compile(r"^(export )?([A-Z_][A-Z0-9_]*)=")


# ---------------------------------------------------------------------------- reading the runbook


@dataclass(frozen=True)
class Block:
    """One fenced block of the runbook, with the marker before it (``kind`` run/file/not run, ``spec``)."""

    line: int
    lang: str
    text: str
    kind: str | None
    spec: str

    @property
    def script(self) -> str:
        return self.spec.split()[0] if self.kind == "run" else ""

    @property
    def tags(self) -> frozenset[str]:
        return frozenset(self.spec.split()[1:]) if self.kind == "run" else frozenset()


def doc_blocks() -> list[Block]:
    """Every fenced block of the runbook, in order, dedented, with the marker on the line before (if any)."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        fence = _FENCE.match(lines[index])
        if not fence:
            index += 1
            continue
        indent, lang, start = len(fence.group(1)), fence.group(2), index
        index += 1
        body = []
        while not re.match(r"^\s*```\s*$", lines[index]):
            body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index].lstrip())
            index += 1
        index += 1
        before = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        marker = _MARKER.match(before)
        blocks.append(Block(start + 1, lang, "\n".join(body) + "\n", marker.group(1) if marker else None,
                            marker.group(2) if marker else ""))
    return blocks


def file_block(path: str) -> str:
    (block,) = [b for b in doc_blocks() if b.kind == "file" and b.spec == path]
    return block.text


def with_settings(text: str, settings: Mapping[str, str], used: set[str]) -> str:
    """``text`` with each ``NAME=…`` / ``export NAME=…`` line of a name in ``settings`` set to the test's value."""
    out = []
    for line in text.splitlines():
        match = _SETTING.match(line)
        if match and match.group(2) in settings:
            name = match.group(2)
            used.add(name)
            line = f"{match.group(1) or ''}{name}={shlex.quote(settings[name])}"
        out.append(line)
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class Database:
    """What the per-database blocks of the by-hand restore need to know about one database of the manifest."""

    format: str
    settings: Mapping[str, str]


def build_script(names: Sequence[str], settings: Mapping[str, str],
                 databases: Sequence[Database] = ()) -> tuple[str, list[int]]:
    """The bash script of the blocks of ``names`` in document order, with the test's settings; (script, lines run).

    Consecutive ``each-database`` blocks run once per database, with that database's settings; a
    block also tagged ``plain`` or ``custom`` only for a database in that format.
    """
    used: set[str] = set()
    parts: list[str] = []
    ran: list[int] = []
    group: list[Block] = []

    def flush() -> None:
        for database in databases:
            for block in group:
                if block.tags & set(FORMATS) and database.format not in block.tags:
                    continue
                parts.append(with_settings(block.text, {**settings, **database.settings}, used))
                ran.append(block.line)
        group.clear()

    for block in (b for b in doc_blocks() if b.kind == "run" and b.script in names):
        if "each-database" in block.tags:
            group.append(block)
            continue
        flush()
        parts.append(with_settings(block.text, settings, used))
        ran.append(block.line)
    flush()
    expected = set(settings) | {name for d in databases for name in d.settings}
    assert used == expected, f"settings the runbook no longer has: {sorted(expected - used)}"
    return "set -euo pipefail\n" + "".join(parts), ran


def run_bash(script: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", script], env=dict(env), cwd=cwd, capture_output=True, text=True,
                          timeout=SCRIPT_TIMEOUT, check=False)


def explain(ran: subprocess.CompletedProcess[str]) -> str:
    return f"exit {ran.returncode}\n--- stdout\n{ran.stdout[-6000:]}\n--- stderr\n{ran.stderr[-6000:]}"


# ---------------------------------------------------------------------------- real archives


def publish_backup(destination: LocalDestination, staging: Path, sources: Sequence[tuple[PgTarget, str, str]],
                   app: Path, created_at: datetime, pg_bin_dir: Path) -> Path:
    """Dump each (target, conn_id, format), zip the dumps with ``app``'s files (AES-256), publish; the archive."""
    from backup_ops.adapters.postgres.dump import dump_database
    from backup_ops.core.archive import build_archive
    from backup_ops.core.config import DatabaseSource, FileSource
    from backup_ops.core.files import select_files
    from backup_ops.core.manifest import build_manifest
    from backup_ops.core.models import Receipt, archive_file_name

    staging.mkdir(parents=True)
    dumps = [dump_database(target, DatabaseSource(conn_id, format=fmt), staging,  # type: ignore[arg-type]
                           pg_bin_dir=pg_bin_dir) for target, conn_id, fmt in sources]
    name = archive_file_name("", created_at)
    result = build_archive(
        staging / name, dumps=dumps, files=select_files(FileSource(include=(app,), relative_path=app)),
        password=PASSWORD.encode(), encryption="aes256", compression_level=6,
        make_manifest=lambda members: build_manifest(
            backup_name=BACKUP_NAME, created_at=created_at, archive_name=name, run={"dag_id": "test", "run_id": "doc"},
            dumps=dumps, members=members, encryption="aes256", tool_versions={}))
    receipt = Receipt(name, result.size, result.sha256, created_at.isoformat(), result.manifest_sha256)
    published = destination.publish(staging / name, name, receipt)
    path = destination.local_path(published.path)
    assert path is not None
    return path


@dataclass(frozen=True)
class DocEnv:
    base: Path
    config: Path
    reports: Path
    latest: Path      # one database (plain): sections 1 and 3
    by_hand: Path     # two databases (plain, custom): section 2
    app: Path
    tools: Path       # 7zz, when 7-Zip is installed as 7z


@pytest.fixture(scope="module")
def doc_env(tmp_path_factory: Any, pg_server: EmbeddedPostgres, sample_template: str) -> Iterator[DocEnv]:
    base = tmp_path_factory.mktemp("backup_restore_doc")
    for source in SOURCES:
        pg_server.drop_database(source.db)
        pg_server.create_database(source.db, template=sample_template)
        with pg_server.connect(source.db) as conn:
            add_application_roles(conn, owner=source.owner, reporting=source.reporting, web=source.web)
            conn.commit()
    targets = [PgTarget(pg_server.host, pg_server.port, pg_server.superuser, pg_server.password, s.db)
               for s in SOURCES]
    app = build_sample_app(base / "app", uploads=3)
    root = base / "backups"
    root.mkdir()
    destination = LocalDestination("local", BACKUP_NAME, root)
    by_hand = publish_backup(destination, base / "staging-1", list(zip(targets, CONN_IDS, FORMATS, strict=True)), app,
                             datetime(2026, 11, 25, 2, tzinfo=UTC), pg_server.bin_dir)
    latest = publish_backup(destination, base / "staging-2", [(targets[0], CONN_IDS[0], FORMATS[0])], app,
                            datetime(2026, 11, 26, 2, tzinfo=UTC), pg_server.bin_dir)
    config = base / "backup_config.yaml"
    config.write_text(yaml.safe_dump({
        "backup": {
            "name": BACKUP_NAME,
            "source": {"databases": [{"conn_id": CONN_IDS[0]}], "pg_bin_dir": str(pg_server.bin_dir)},
            "destination": {"destinations": [{"name": "local", "type": "local", "path": str(root)}]},
            "staging_directory": str(base / "staging"),
            "password": {"variable": "backup_archive_password"},
            "encryption": "aes256",
        },
        "restore_drill": {"tries": 1, "retry_delay": 0},
    }))
    tools = base / "tools"
    tools.mkdir()
    seven_zip = find_7zip()
    if Path(seven_zip).name != "7zz":  # the runbook says 7zz, as the 7zip package installs it
        (tools / "7zz").symlink_to(seven_zip)
    yield DocEnv(base, config, root / BACKUP_NAME / "restore-drills", latest, by_hand, app, tools)
    for source in SOURCES:
        pg_server.drop_database(source.db)
    with pg_server.connect(autocommit=True) as conn:
        for role in (SOURCES[0].web, SOURCES[0].reporting, SOURCES[0].owner):
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def shell_env(doc_env: DocEnv, home: Path, server: EmbeddedPostgres) -> dict[str, str]:
    """An operator's shell: the tools on PATH, a home holding ``~/.pgpass``, the archive password exported.

    Nothing else is inherited: no ``PGPASSWORD``, no Airflow connection but the ones the runbook makes.
    """
    if shutil.which("rsync") is None:
        pytest.fail("rsync is not on PATH: install it (apt-get install rsync); the runbook restores files with it.")
    home.mkdir(mode=0o700)
    host, port, database, user, _ = file_block("~/.pgpass").strip().split(":")
    assert (host, port, database, user) == ("db-new.internal", "5432", "*", "postgres"), "the pgpass example changed"
    pgpass = home / ".pgpass"
    pgpass.write_text(f"{server.host}:{server.port}:*:{server.superuser}:{server.password}\n")
    pgpass.chmod(0o600)
    path = [str(doc_env.tools), str(server.bin_dir), str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin",
            "/bin"]
    return {"PATH": os.pathsep.join(path), "HOME": str(home), "LANG": "C.UTF-8",
            "BACKUP_ARCHIVE_PASSWORD": PASSWORD, "AIRFLOW_HOME": str(home / "airflow")}


def connect_settings(server: EmbeddedPostgres) -> dict[str, str]:
    return {"PGHOST": server.host, "PGPORT": str(server.port), "PGUSER": server.superuser}


def app_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


# ---------------------------------------------------------------------------- the runbook itself


def test_every_shell_block_is_run_or_says_why_not() -> None:
    blocks = doc_blocks()
    shell = [b for b in blocks if b.lang in ("sh", "bash", "shell")]
    assert len(shell) >= 15
    unmarked = [b.line for b in shell if b.kind not in ("run", "not run")]
    assert not unmarked, f"shell blocks at lines {unmarked} say neither run nor 'not run: why'"
    assert all(b.spec for b in shell if b.kind == "not run"), "a 'not run' marker must say why"
    assert {b.script for b in shell if b.kind == "run"} == {"connect", "restore-command", "by-hand", "drill"}
    assert not [b.line for b in blocks if b.kind == "run" and b.lang not in ("sh", "bash", "shell")]
    target = json.loads(file_block("~/restore-target.json"))
    assert set(target) == {"conn_type", "host", "port", "login", "password", "schema"}
    assert target["conn_type"] == "postgres"


# ---------------------------------------------------------------------------- section 1: the command


@pytest.mark.usefixtures("fresh")
def test_section_1_restores_with_the_command_onto_a_fresh_server(doc_env: DocEnv, pg_server: EmbeddedPostgres,
                                                                 empty_pg_server: EmbeddedPostgres,
                                                                 tmp_path: Path) -> None:
    server = empty_pg_server  # with no application role: a fresh server
    env = shell_env(doc_env, tmp_path / "home", server)
    target = json.loads(file_block("~/restore-target.json"))
    target.update(host=server.host, port=server.port, login=server.superuser, password=server.password)
    connection_file = tmp_path / "home" / "restore-target.json"
    connection_file.write_text(json.dumps(target))
    connection_file.chmod(0o600)
    app_root = tmp_path / "srv" / "invoicing-app"
    app_root.mkdir(parents=True)
    settings = {**connect_settings(server), "PYTHONPATH": str(ROOT / "plugins"),
                "BACKUP_OPS_CONFIG": str(doc_env.config), "NEW_DB": "invoicing",
                "FILES_TO": str(tmp_path / "srv" / "invoicing-app.restored"), "APP_ROOT": str(app_root)}
    script, ran = build_script(["connect", "restore-command"], settings)

    done = run_bash(script, env, tmp_path)

    assert done.returncode == 0, explain(done)
    assert len(ran) == 7
    out = done.stdout
    assert f"Backup {BACKUP_NAME}/{doc_env.latest.name} on local: verified (" in out
    assert "size and sha256 match the receipt" in out
    assert f"Database {SOURCES[0].db} (12 tables, " in out and f"→ invoicing on {server.host}:{server.port}" in out
    assert f"created role {SOURCES[0].owner} (NOLOGIN" in out
    assert "validation: 12 tables match the manifest exactly (SQL, " in out
    assert re.search(r"^Restored and validated in [0-9.]+ s\.$", out, re.MULTILINE)
    assert SOURCES[0].reporting in out and "statement_timeout=5min" in out  # \du and \drds
    assert row_counts(server, "invoicing") == row_counts(pg_server, SOURCES[0].db)
    assert_restored_like_the_source(pg_server, server, SOURCES[0], "invoicing")
    assert app_files(app_root) == app_files(doc_env.app)
    assert PASSWORD not in out + done.stderr and server.password not in out + done.stderr


# ---------------------------------------------------------------------------- section 2: by hand


def by_hand_databases() -> list[Database]:
    return [Database(fmt, {"DUMP": f"db-dumps/postgresql-{source.db}.{'sql.gz' if fmt == 'plain' else 'dump'}",
                           "ROLES": f"db-dumps/postgresql-{source.db}.roles.sql", "NEW_DB": source.db})
            for source, fmt in zip(SOURCES, FORMATS, strict=True)]


@pytest.mark.usefixtures("fresh")
def test_section_2_restores_every_database_and_the_files_by_hand(doc_env: DocEnv, pg_server: EmbeddedPostgres,
                                                                 empty_pg_server: EmbeddedPostgres,
                                                                 tmp_path: Path) -> None:
    server = empty_pg_server  # with no application role: a fresh server
    env = shell_env(doc_env, tmp_path / "home", server)
    restore_dir = tmp_path / "restore-invoicing-app"
    app_root = tmp_path / "srv" / "invoicing-app"
    app_root.mkdir(parents=True)
    settings = {**connect_settings(server), "ARCHIVE": str(doc_env.by_hand), "RESTORE_DIR": str(restore_dir),
                "APP_ROOT": str(app_root)}
    script, ran = build_script(["connect", "by-hand"], settings, by_hand_databases())

    done = run_bash(script, env, tmp_path)

    assert done.returncode == 0, explain(done)
    assert len(ran) == 8 + 2 * 3, ran  # connect, 1-4, 8 (twice), 9; per database: 5, its load, 7
    assert f"{doc_env.by_hand}: OK" in done.stdout
    listing = [line.split("|") for line in done.stdout.splitlines() if line.count("|") == 4]
    assert [[cell.strip() for cell in row[:3]] for row in listing[1:]] == [
        [SOURCES[0].db, "plain", f"db-dumps/postgresql-{SOURCES[0].db}.sql.gz"],
        [SOURCES[1].db, "custom", f"db-dumps/postgresql-{SOURCES[1].db}.dump"]]
    assert done.stderr.count("OK: all 12 tables have exactly the row counts in manifest.json") == 2, done.stderr
    for source in SOURCES:
        assert row_counts(server, source.db) == row_counts(pg_server, source.db)
        assert_restored_like_the_source(pg_server, server, source, source.db)
    assert app_files(app_root) == app_files(doc_env.app)
    assert not restore_dir.exists(), "step 9 removes the decrypted copy"
    assert PASSWORD not in done.stdout + done.stderr and server.password not in done.stdout + done.stderr


def test_section_2_row_count_check_fails_on_a_difference(doc_env: DocEnv, pg_server: EmbeddedPostgres,
                                                          tmp_path: Path) -> None:
    from backup_ops.adapters.backup_fetch import read_member
    from backup_ops.core.manifest import MANIFEST_NAME

    (check,) = [b for b in doc_blocks() if b.kind == "run" and "each-database" in b.tags and "count(*)" in b.text]
    (tmp_path / MANIFEST_NAME).write_bytes(read_member(doc_env.by_hand, MANIFEST_NAME, PASSWORD.encode(), 1 << 24))
    env = shell_env(doc_env, tmp_path / "home", pg_server)
    copy = "doc_count_check"
    pg_server.drop_database(copy)
    pg_server.create_database(copy, template=SOURCES[0].db)
    try:
        with pg_server.connect(copy, autocommit=True) as conn:
            conn.execute("DELETE FROM public.invoice_items WHERE id = (SELECT min(id) FROM public.invoice_items)")

        def count_check(dump: str) -> subprocess.CompletedProcess[str]:
            settings = {**connect_settings(pg_server), "NEW_DB": copy, "DUMP": dump}
            return run_bash("set -euo pipefail\n" + "\n".join(f"export {k}={shlex.quote(v)}"
                                                               for k, v in settings.items()) + "\n" + check.text,
                            env, tmp_path)

        differs = count_check(f"db-dumps/postgresql-{SOURCES[0].db}.sql.gz")
        assert differs.returncode != 0
        assert re.search(r"WARNING:  public\.invoice_items: (\d+) rows restored, manifest\.json says (\d+)",
                         differs.stderr), differs.stderr
        assert "1 of 12 tables differ from manifest.json" in differs.stderr
        wrong_dump = count_check("db-dumps/postgresql-no_such_database.sql.gz")
        assert wrong_dump.returncode != 0
        assert "manifest.json lists no table for this dump: check DUMP" in wrong_dump.stderr
    finally:
        pg_server.drop_database(copy)


# ---------------------------------------------------------------------------- section 3: the drill


def test_section_3_runs_a_drill_and_finds_its_report(doc_env: DocEnv, pg_server: EmbeddedPostgres,
                                                     tmp_path: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.utils import db

    db.initdb()  # the session's metadata DB, which `airflow dags test` records the run in (a no-op when it exists)
    (conf_block, *_) = [b for b in doc_blocks() if b.kind == "run" and b.script == "drill"]
    conf_line = re.search(r"^CONF=(.*)$", conf_block.text, re.MULTILINE)
    assert conf_line is not None, "the drill's first block sets CONF"
    conf = json.loads(shlex.split(conf_line.group(1))[0])
    bag = DagBag(dag_folder=str(ROOT / "dags" / "restore_drill.py"))
    assert set(conf) <= set(bag.dags["restore_drill"].params), "the runbook's CONF names a Param the DAG lacks"
    env = {**{k: v for k, v in os.environ.items() if k.startswith("AIRFLOW")},
           **shell_env(doc_env, tmp_path / "home", pg_server),
           "AIRFLOW_HOME": os.environ["AIRFLOW_HOME"], "BACKUP_OPS_DISABLE_DEADLINES": "1",
           "BACKUP_OPS_CONFIG": str(doc_env.config),
           "AIRFLOW_CONN_APP_DB": pg_server.conn_uri(SOURCES[0].db),
           "AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD": PASSWORD}
    script, ran = build_script(["drill"], {"REPORTS": str(doc_env.reports)})

    done = run_bash(script, env, tmp_path)

    assert done.returncode == 0, explain(done)
    assert len(ran) == 2
    (report_file,) = doc_env.reports.glob("*.json")
    report = json.loads(report_file.read_text())
    assert report["outcome"] == "succeeded" and report["error"] is None
    assert report["archive"] == f"{BACKUP_NAME}/{doc_env.latest.name}"
    assert report["files"]["status"] == "verified"
    assert f'"archive": "{BACKUP_NAME}/{doc_env.latest.name}",' in done.stdout
    assert '"outcome": "succeeded",' in done.stdout and '"error": null,' in done.stdout
    assert databases_like(pg_server, "backup\\_drill\\_%") == [], "the teardown dropped the scratch database"
