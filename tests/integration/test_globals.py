"""The roles and database settings a dump needs on an empty server: captured at backup time, applied on restore.

Real servers: ``pg_server`` holds the source database (the sample schema owned by an application
role, a read-only reporting role with grants and default privileges, database and role settings, a
comment, CONNECT for those roles only); ``empty_pg_server`` is the fresh server a disaster recovery
starts from, with no application roles. Without the globals the dump does not load there
(``role "…" does not exist``); with them it loads and ownership, grants, settings and comment are
intact. Every role and database a test puts on the empty server is removed afterwards, so it stays
empty for the next test.
"""

from __future__ import annotations

import gzip
import itertools
import json
import logging
import os
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from psycopg import sql

from backup_ops.adapters.postgres.dump import dump_database
from backup_ops.adapters.postgres.globals import (
    DatabaseGlobals,
    RoleSpec,
    apply_globals,
    parse_database_info,
    split_guc_list,
)
from backup_ops.adapters.postgres.globals_capture import render_roles_sql
from backup_ops.adapters.postgres.target import PgTarget
from backup_ops.core.config import Compression, DatabaseSource
from backup_ops.core.errors import ArchiveError, DumpError
from backup_ops.core.models import DumpResult
from devtools.pgserver import EmbeddedPostgres
from devtools.sample_data import add_application_roles

_names = itertools.count(1)


@dataclass(frozen=True)
class Source:
    """The source database and the names of its application roles."""

    db: str
    owner: str
    reporting: str
    web: str

    @property
    def roles(self) -> tuple[str, ...]:
        return (self.owner, self.reporting, self.web)


def drop_roles(server: EmbeddedPostgres, roles: list[str] | tuple[str, ...]) -> None:
    with server.connect(autocommit=True) as conn:
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def source(pg_server: EmbeddedPostgres, sample_template: str) -> Iterator[Source]:
    """A copy of the sample database with application roles, grants and settings (all names unique)."""
    n = next(_names)
    src = Source(f"globals_src_{n}", f"g{n}_owner", f"g{n}_reporting", f"g{n}_web")
    pg_server.create_database(src.db, template=sample_template)
    try:
        with pg_server.connect(src.db) as conn:
            add_application_roles(conn, owner=src.owner, reporting=src.reporting, web=src.web)
            conn.commit()
        yield src
    finally:
        pg_server.drop_database(src.db)
        drop_roles(pg_server, src.roles)


@pytest.fixture
def fresh(empty_pg_server: EmbeddedPostgres) -> Iterator[EmbeddedPostgres]:
    """The empty server; whatever databases and roles a test adds to it are removed afterwards."""
    with empty_pg_server.connect(autocommit=True) as conn:
        roles_before = {r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
        dbs_before = {r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()}
    yield empty_pg_server
    with empty_pg_server.connect(autocommit=True) as conn:
        for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall():
            if name not in dbs_before:
                conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        roles = [r[0] for r in conn.execute("SELECT rolname FROM pg_roles").fetchall() if r[0] not in roles_before]
    drop_roles(empty_pg_server, roles)


def superuser_target(server: EmbeddedPostgres, dbname: str) -> PgTarget:
    return PgTarget(server.host, server.port, server.superuser, server.password, dbname)


def dump(pg_server: EmbeddedPostgres, db: str, tmp_path: Path, fmt: str = "plain",
         user: str | None = None, password: str | None = None) -> DumpResult:
    target = PgTarget(pg_server.host, pg_server.port, user or pg_server.superuser,
                      password if user else pg_server.password, db)
    source = DatabaseSource(conn_id="app_db", format=fmt,  # type: ignore[arg-type]
                            compression=Compression("gzip", 1))
    return dump_database(target, source, tmp_path / f"staging{next(_names)}", pg_bin_dir=pg_server.bin_dir)


def extra(result: DumpResult, kind: str) -> Path:
    (member,) = [m for m in result.extra_members if m.kind == kind]
    return Path(member.staged_path)


def database_info(result: DumpResult) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(extra(result, "database").read_text(encoding="utf-8"))
    return data


def load(server: EmbeddedPostgres, result: DumpResult, dbname: str) -> subprocess.CompletedProcess[str]:
    """Load the dump the way a restore does: psql in one transaction stopping at the first error, or pg_restore."""
    env = {**os.environ, **server.psql_env(dbname)}
    if result.format == "custom":
        argv = [str(server.bin_dir / "pg_restore"), "--exit-on-error", "--single-transaction", "-d", dbname,
                result.staged_path]
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    argv = [str(server.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]
    return subprocess.run(argv, input=gzip.decompress(Path(result.staged_path).read_bytes()).decode(), env=env,
                          capture_output=True, text=True, check=False)


def state(server: EmbeddedPostgres, dbname: str, src: Source) -> dict[str, Any]:
    """What the globals decide about a restored database, read from the server."""
    with server.connect(dbname) as conn:
        def rows(query: str, *params: Any) -> list[tuple[Any, ...]]:
            return [tuple(r) for r in conn.execute(query, params).fetchall()]

        return {
            "table_owners": sorted(set(rows("SELECT tableowner FROM pg_tables "
                                            "WHERE schemaname IN ('public', 'audit')"))),
            "reporting_selects": rows(
                "SELECT bool_and(has_table_privilege(%s, c.oid, 'SELECT')) FROM pg_class AS c "
                "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'audit') "
                "AND c.relkind IN ('r', 'p', 'v')", src.reporting),
            "default_acl": rows("SELECT pg_get_userbyid(defaclrole), defaclacl::text[] FROM pg_default_acl "
                                "ORDER BY 1, 2"),
            "database": rows("SELECT pg_get_userbyid(datdba), shobj_description(oid, 'pg_database'), "
                             "ARRAY(SELECT unnest(datacl)::text ORDER BY 1) "
                             "FROM pg_database WHERE datname = current_database()"),
            "settings": rows("SELECT coalesce(pg_get_userbyid(NULLIF(setrole, 0)), '(database)'), setconfig "
                             "FROM pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database "
                             "WHERE datname = current_database()) ORDER BY 1"),
            "roles": rows("SELECT rolname, rolcanlogin, rolinherit, rolconnlimit, rolsuper, rolconfig::text[], "
                          "shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = ANY(%s) ORDER BY 1",
                          list(src.roles)),
            "memberships": rows("SELECT r.rolname, m.rolname FROM pg_auth_members AS a JOIN pg_roles AS r "
                                "ON r.oid = a.roleid JOIN pg_roles AS m ON m.oid = a.member "
                                "WHERE m.rolname = ANY(%s) ORDER BY 1, 2", list(src.roles)),
            "rows": rows("SELECT count(*) FROM public.invoices"),
        }


def assert_restored_like_the_source(pg_server: EmbeddedPostgres, fresh: EmbeddedPostgres, src: Source,
                                    restored: str) -> None:
    """Ownership, grants, default privileges, settings, comment and privileges are those of the source."""
    source_state = state(pg_server, src.db, src)
    restored_state = state(fresh, restored, src)
    assert restored_state["table_owners"] == [(src.owner,)]
    assert restored_state["reporting_selects"] == [(True,)]
    assert restored_state["database"][0][0] == src.owner
    assert restored_state["database"][0][1] == "Invoicing: tenants, invoices, payments"
    assert (f"{src.reporting}=c/{src.owner}") in restored_state["database"][0][2]
    assert not any(item.startswith("=") for item in restored_state["database"][0][2])  # PUBLIC has no CONNECT
    assert ("(database)", ["TimeZone=Europe/Berlin", 'search_path="$user", public, audit']) in \
        restored_state["settings"]
    assert (src.reporting, ["statement_timeout=5min"]) in restored_state["settings"]
    # The roles are as on the source, but never elevated; the reporting role's own setting and comment came along.
    for key in ("table_owners", "reporting_selects", "default_acl", "database", "settings", "roles", "memberships",
                "rows"):
        assert restored_state[key] == source_state[key], key


# ---------------------------------------------------------------------------- capture


def test_the_dump_stages_the_roles_it_refers_to_and_the_database_settings(pg_server, source, tmp_path):
    result = dump(pg_server, source.db, tmp_path)

    assert result.globals_notes == ()
    assert result.roles_member == f"db-dumps/postgresql-{source.db}.roles.sql"
    assert result.database_member == f"db-dumps/postgresql-{source.db}.database.json"
    for member in result.extra_members:
        path = Path(member.staged_path)
        assert path.parent == Path(result.staged_path).parent
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_size == member.size
    info = database_info(result)
    assert {k: info[k] for k in ("format_version", "name", "owner", "encoding", "comment")} == {
        "format_version": 1, "name": source.db, "owner": source.owner, "encoding": "UTF8",
        "comment": "Invoicing: tenants, invoices, payments"}
    assert info["lc_collate"] and info["lc_ctype"] and info["locale_provider"] == "libc"
    assert info["settings"] == [
        {"role": None, "settings": ["TimeZone=Europe/Berlin", 'search_path="$user", public, audit']},
        {"role": source.reporting, "settings": ["statement_timeout=5min"]},
    ]
    assert sorted((p["grantee"], p["privilege"]) for p in info["privileges"]) == [
        (source.reporting, "CONNECT"), (source.web, "CONNECT")]
    roles = {r["name"]: r for r in info["roles"]}
    # The owner, the grantee, and the application's login (a member of the owner); nobody else on the server.
    assert set(roles) == set(source.roles)
    assert (roles[source.owner]["login"], roles[source.reporting]["login"]) == (False, True)
    assert roles[source.reporting]["connection_limit"] == 10
    assert roles[source.reporting]["settings"] == ["work_mem=32MB"]
    assert roles[source.reporting]["comment"] == "Read-only access for the reporting service"
    assert [(m["role"], m["member"]) for m in info["memberships"]] == [(source.owner, source.web)]

    roles_sql = extra(result, "roles").read_text(encoding="utf-8")
    for role in source.roles:
        assert f'CREATE ROLE "{role}";' in roles_sql
    assert f'GRANT "{source.owner}" TO "{source.web}"' in roles_sql
    assert "PASSWORD '" not in roles_sql and "SCRAM-SHA-256" not in roles_sql


def test_a_non_superuser_login_captures_what_it_can_and_notes_the_rest(pg_server, source, tmp_path, caplog):
    login, password = f"{source.db}_backup", "backup-pw"
    pg_server.create_role(login, password)
    try:
        with pg_server.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(source.db),
                                                                             sql.Identifier(login)))
        with pg_server.connect(source.db, autocommit=True) as conn:
            # Least privilege: SELECT on the application's tables only (pg_read_all_data would read the catalogs
            # an administrator revokes below, too).
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public, audit TO {0}; GRANT SELECT ON ALL TABLES IN SCHEMA "
                                 "public, audit TO {0}; GRANT SELECT ON ALL SEQUENCES IN SCHEMA public, audit TO {0}"
                                 ).format(sql.Identifier(login)))
        # Every login may read these catalogs, so a plain non-superuser captures everything a superuser does.
        as_superuser = database_info(dump(pg_server, source.db, tmp_path))
        plain = dump(pg_server, source.db, tmp_path, user=login, password=password)
        assert plain.globals_notes == ()
        assert database_info(plain) == as_superuser

        # A hardened server that revoked two of them: the backup still succeeds and says what is missing.
        # (A shared catalog's privileges are kept per database, in that database's pg_class.)
        hardened = ("pg_db_role_setting", "pg_auth_members")
        with pg_server.connect(source.db, autocommit=True) as conn:
            for catalog in hardened:
                conn.execute(f"REVOKE SELECT ON pg_catalog.{catalog} FROM PUBLIC")
        try:
            with caplog.at_level(logging.WARNING):
                result = dump(pg_server, source.db, tmp_path, user=login, password=password)
        finally:
            with pg_server.connect(source.db, autocommit=True) as conn:
                for catalog in hardened:
                    conn.execute(f"GRANT SELECT ON pg_catalog.{catalog} TO PUBLIC")
    finally:
        with pg_server.connect(source.db, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(login)))  # its grants
        drop_roles(pg_server, [login])

    assert result.total_rows > 1000  # the dump itself is whole
    assert len(result.globals_notes) == 2
    settings_note, members_note = result.globals_notes
    assert settings_note.startswith(f"Login {login!r} could not read the database's settings (pg_db_role_setting): "
                                    "permission denied for table pg_db_role_setting; ")
    assert "set them by hand after a restore" in settings_note
    assert "pg_auth_members" in members_note and "without their memberships" in members_note
    assert all(note in caplog.text for note in result.globals_notes)
    info = database_info(result)
    assert info["notes"] == list(result.globals_notes)
    assert info["settings"] == [] and info["memberships"] == []
    # What could be read is there: the roles (from pg_roles), owner, comment, privileges; the backup login too,
    # since the database grants it CONNECT.
    assert {r["name"] for r in info["roles"]} == {*source.roles, login}
    assert info["owner"] == source.owner and info["comment"] == as_superuser["comment"]
    assert info["privileges"] == as_superuser["privileges"]


# ---------------------------------------------------------------------------- restore on an empty server


@pytest.mark.parametrize("fmt", ["plain", "custom"])
def test_the_dump_loads_on_an_empty_server_only_with_its_globals(pg_server, source, fresh, tmp_path, fmt):
    result = dump(pg_server, source.db, tmp_path, fmt)

    # Without the roles, the dump fails at its first ALTER … OWNER TO: the failure issue 10 describes.
    fresh.create_database("without_globals")
    failed = load(fresh, result, "without_globals")
    assert failed.returncode != 0
    assert f'role "{source.owner}" does not exist' in failed.stderr

    fresh.create_database("restored")
    lines = apply_globals(superuser_target(fresh, "postgres"), database="restored",
                          roles_sql=extra(result, "roles").read_text(), database_info=database_info(result))
    loaded = load(fresh, result, "restored")
    assert loaded.returncode == 0, loaded.stderr
    assert_restored_like_the_source(pg_server, fresh, source, "restored")
    assert f"created role {source.owner} (NOLOGIN INHERIT NOCREATEDB, as captured)" in lines
    assert any(line.startswith(f"created role {source.reporting} (LOGIN INHERIT NOCREATEDB CONNECTION LIMIT 10")
               and "no password" in line for line in lines)
    assert f"made {source.web} a member of {source.owner}" in lines
    assert "database setting TimeZone=Europe/Berlin" in lines
    assert f"database owner: {source.owner}" in lines


def test_applying_twice_changes_nothing(pg_server, source, fresh, tmp_path):
    result = dump(pg_server, source.db, tmp_path)
    fresh.create_database("restored")
    target = superuser_target(fresh, "postgres")
    apply_globals(target, database="restored", roles_sql=None, database_info=database_info(result))
    assert load(fresh, result, "restored").returncode == 0
    before = state(fresh, "restored", source)

    again = apply_globals(target, database="restored", roles_sql=None, database_info=database_info(result))

    assert state(fresh, "restored", source) == before
    assert not any(line.startswith("created role") for line in again)
    assert {f"role {role} exists: left as it is" for role in source.roles} <= set(again)
    assert f"{source.web} is a member of {source.owner} already" in again


def test_roles_sql_restores_by_hand_with_psql_and_may_run_twice(pg_server, source, fresh, tmp_path):
    result = dump(pg_server, source.db, tmp_path)
    fresh.create_database("by_hand")
    env = {**os.environ, **fresh.psql_env("postgres")}
    argv = [str(fresh.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-v", "database=by_hand",
            "-f", str(extra(result, "roles"))]
    for _ in range(2):
        ran = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        assert ran.returncode == 0, ran.stderr
    loaded = load(fresh, result, "by_hand")
    assert loaded.returncode == 0, loaded.stderr
    assert_restored_like_the_source(pg_server, fresh, source, "by_hand")


ROLE_AS_IT_IS = ("SELECT a.rolcanlogin, a.rolconnlimit, a.rolpassword, r.rolconfig, "
                 "shobj_description(a.oid, 'pg_authid') FROM pg_authid AS a JOIN pg_roles AS r USING (oid) "
                 "WHERE a.rolname = %s")


def test_existing_roles_are_left_as_they_are(pg_server, source, fresh, tmp_path):
    result = dump(pg_server, source.db, tmp_path)
    with fresh.connect(autocommit=True) as conn:
        # The target already has the reporting role, with other attributes and a password of its own.
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN CONNECTION LIMIT 1 PASSWORD 'kept'").format(
            sql.Identifier(source.reporting)))
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(source.owner)))
        before = conn.execute(ROLE_AS_IT_IS, (source.reporting,)).fetchone()
    fresh.create_database("restored")

    lines = apply_globals(superuser_target(fresh, "postgres"), database="restored", roles_sql=None,
                          database_info=database_info(result))

    with fresh.connect(autocommit=True) as conn:
        after = conn.execute(ROLE_AS_IT_IS, (source.reporting,)).fetchone()
        web_member = conn.execute("SELECT count(*) FROM pg_auth_members WHERE member = %s::regrole",
                                  (source.web,)).fetchone()
    assert after == before
    assert f"role {source.reporting} exists: left as it is" in lines
    # The owner existed before: what it grants is not changed, the new web login is not made its member.
    assert web_member == (0,)
    assert any(line.startswith(f"{source.web} not made a member of {source.owner}: {source.owner} existed before")
               for line in lines)
    assert load(fresh, result, "restored").returncode == 0


def test_the_target_login_must_be_able_to_create_roles(pg_server, source, fresh, tmp_path):
    result = dump(pg_server, source.db, tmp_path)
    fresh.create_role("plain_login", "pw")
    fresh.create_database("restored")
    target = PgTarget(fresh.host, fresh.port, "plain_login", "pw", "postgres")

    with pytest.raises(DumpError) as info:
        apply_globals(target, database="restored", roles_sql=None, database_info=database_info(result))

    assert not info.value.retryable
    assert str(info.value).startswith(f"Login 'plain_login' on {fresh.host}:{fresh.port} may not create role "
                                      f"{source.owner!r}, which the dump refers to (permission denied")
    assert "give the login CREATEROLE" in str(info.value) and "pw" not in str(info.value).split("(")[0]


def test_a_missing_target_database_is_one_sentence(fresh):
    info = {"format_version": 1, "name": "x", "owner": "postgres", "encoding": "UTF8", "lc_collate": "C",
            "lc_ctype": "C", "settings": []}
    with pytest.raises(DumpError, match=r"^Database 'nope' does not exist on 127\.0\.0\.1:\d+; create it before"):
        apply_globals(superuser_target(fresh, "postgres"), database="nope", roles_sql=None, database_info=info)


def test_elevated_attributes_and_predefined_memberships_are_not_given(fresh):
    info = {
        "format_version": 1, "name": "src", "owner": "g_admin", "encoding": "UTF8", "lc_collate": "C",
        "lc_ctype": "C", "settings": [],
        "roles": [{"name": "g_admin", "login": True, "superuser": True, "bypassrls": True, "replication": True,
                   "createrole": True, "settings": ["session_preload_libraries=/tmp/evil.so", "work_mem=4MB"]}],
        "memberships": [{"role": "pg_read_server_files", "member": "g_admin"}],
    }
    fresh.create_database("restored")
    lines = apply_globals(superuser_target(fresh, "postgres"), database="restored", roles_sql=None,
                          database_info=info)

    with fresh.connect() as conn:
        row = conn.execute("SELECT rolsuper, rolbypassrls, rolreplication, rolcreaterole, rolcanlogin, rolconfig, "
                           "pg_has_role(oid, 'pg_read_server_files', 'MEMBER') FROM pg_roles "
                           "WHERE rolname = 'g_admin'").fetchone()
    assert row == (False, False, False, False, True, ["work_mem=4MB"], False)
    created = next(line for line in lines if line.startswith("created role g_admin"))
    assert "not given SUPERUSER, CREATEROLE, REPLICATION, BYPASSRLS, which it has on the source" in created
    assert "role g_admin setting session_preload_libraries=/tmp/evil.so not applied: it loads code into the " \
           "server; set it by hand if this server needs it" in lines
    assert any(line.startswith("g_admin not made a member of predefined role pg_read_server_files") for line in lines)


def test_read_only_settings_wait_until_the_dump_is_loaded(fresh):
    info = {"format_version": 1, "name": "src", "owner": "postgres", "encoding": "UTF8", "lc_collate": "C",
            "lc_ctype": "C", "settings": [{"role": None, "settings": ["default_transaction_read_only=on",
                                                                      "work_mem=16MB"]}]}
    fresh.create_database("restored")
    target = superuser_target(fresh, "postgres")

    def settings() -> list[str]:
        with fresh.connect() as conn:
            row = conn.execute("SELECT setconfig FROM pg_db_role_setting WHERE setrole = 0 AND setdatabase = "
                               "(SELECT oid FROM pg_database WHERE datname = 'restored')").fetchone()
        return list(row[0]) if row else []

    before = apply_globals(target, database="restored", roles_sql=None, database_info=info)
    assert settings() == ["work_mem=16MB"]  # a dump could still be loaded
    assert any(line.startswith("database setting default_transaction_read_only=on waits until the dump is loaded")
               for line in before)
    after = apply_globals(target, database="restored", roles_sql=None, database_info=info, after_load=True)
    assert settings() == ["work_mem=16MB", "default_transaction_read_only=on"]
    assert after == ["database setting default_transaction_read_only=on"]


# ---------------------------------------------------------------------------- hostile input


def test_a_crafted_database_json_or_roles_sql_cannot_inject_sql(fresh):
    fresh.create_database("canary")
    fresh.create_database("restored")
    evil_role = 'g_evil"; DROP DATABASE canary; --'
    evil_comment = "x'); DROP DATABASE canary; --"
    info = {
        "format_version": 1, "name": "src", "owner": evil_role, "encoding": "UTF8", "lc_collate": "C",
        "lc_ctype": "C", "comment": evil_comment,
        "settings": [{"role": None, "settings": ["work_mem=1MB'; DROP DATABASE canary; --",
                                                 'search_path=public"; DROP DATABASE canary; --',
                                                 "x; DROP DATABASE canary=1"]},
                     {"role": evil_role, "settings": ["application_name='; DROP DATABASE canary; --"]}],
        "privileges": [{"grantee": evil_role, "privilege": "CONNECT", "grantable": False}],
        "roles": [{"name": evil_role, "comment": evil_comment, "settings": ["search_path=\"'; DROP\""]}],
    }

    lines = apply_globals(superuser_target(fresh, "postgres"), database="restored",
                          roles_sql="DROP DATABASE canary;", database_info=info)

    with fresh.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'canary'").fetchone() == (1,)
        role = conn.execute("SELECT shobj_description(oid, 'pg_authid'), rolconfig FROM pg_roles WHERE rolname = %s",
                            (evil_role,)).fetchone()
        database = conn.execute("SELECT pg_get_userbyid(datdba), shobj_description(oid, 'pg_database'), "
                                "has_database_privilege(%s, oid, 'CONNECT'), "
                                "(SELECT count(*) FROM aclexplode(datacl) WHERE grantee = 0) "
                                "FROM pg_database WHERE datname = 'restored'", (evil_role,)).fetchone()
        settings = conn.execute("SELECT setrole <> 0, setconfig FROM pg_db_role_setting WHERE setdatabase = "
                                "(SELECT oid FROM pg_database WHERE datname = 'restored') ORDER BY 1").fetchall()
    # Names and texts arrive exactly as written, as names and texts: nothing in them ever ran as SQL.
    assert role == (evil_comment, ["search_path=\"'; DROP\""])  # one schema named '; DROP, as captured
    assert database == (evil_role, evil_comment, True, 0)  # owner, comment, CONNECT, nothing for PUBLIC
    assert settings == [(True, ["application_name='; DROP DATABASE canary; --"])]
    assert any(line.startswith("database setting work_mem=1MB'; DROP DATABASE canary; -- not applied: invalid value")
               for line in lines)
    assert any(line.startswith('database setting search_path=public"; DROP DATABASE canary; -- not applied: its '
                               "value is not a valid list") for line in lines)
    assert any(line.startswith("database setting x; DROP DATABASE canary=1 not applied: unrecognized configuration "
                               "parameter") for line in lines)


def test_a_role_that_cannot_be_created_as_captured_is_one_sentence(fresh):
    fresh.create_database("canary")
    fresh.create_database("restored")
    info = {"format_version": 1, "name": "src", "owner": "postgres", "encoding": "UTF8", "lc_collate": "C",
            "lc_ctype": "C", "settings": [],
            "roles": [{"name": "g_until", "valid_until": "infinity'; DROP DATABASE canary; --"}]}

    with pytest.raises(DumpError, match=r"^Creating role 'g_until' on 127\.0\.0\.1:\d+ failed: invalid input syntax"):
        apply_globals(superuser_target(fresh, "postgres"), database="restored", roles_sql=None, database_info=info)

    with fresh.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'canary'").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = 'g_until'").fetchone() == (0,)


def test_without_database_json_nothing_runs_and_the_lines_say_how_to_do_it_by_hand(fresh):
    fresh.create_database("canary")
    lines = apply_globals(superuser_target(fresh, "postgres"), database="canary", roles_sql="DROP DATABASE canary;",
                          database_info=None)
    with fresh.connect() as conn:
        assert conn.execute("SELECT count(*) FROM pg_database WHERE datname = 'canary'").fetchone() == (1,)
    assert lines[0].startswith("no database.json in the archive")
    assert "roles.sql is never run from an archive automatically" in lines[1]


HOSTILE_INFO: list[tuple[str, dict[str, Any], str]] = [
    ("newer format", {"format_version": 2}, "format version 2, which this backup-ops does not know"),
    ("not an object", {"roles": "x"}, "roles must be a list"),
    ("role name too long", {"roles": [{"name": "r" * 64}]}, "roles[0].name must be a role name of 1 to 63 bytes"),
    ("empty role name", {"roles": [{"name": ""}]}, "roles[0].name must be a role name"),
    ("NUL in a name", {"roles": [{"name": "a\x00b"}]}, "without NUL"),
    ("lone surrogate", {"comment": "\ud800"}, "comment must be a UTF-8 string"),
    ("predefined role", {"roles": [{"name": "pg_evil"}]}, "the pg_ prefix is reserved"),
    ("role twice", {"roles": [{"name": "a"}, {"name": "a"}]}, "roles lists a role twice"),
    ("login a string", {"roles": [{"name": "a", "login": "yes"}]}, "roles[0].login must be true or false"),
    ("connection limit", {"roles": [{"name": "a", "connection_limit": "5; DROP"}]}, "connection_limit must be"),
    ("unknown member", {"memberships": [{"role": "pg_monitor", "member": "ghost"}]}, "a role listed in roles"),
    ("unknown group", {"roles": [{"name": "a"}], "memberships": [{"role": "ghost", "member": "a"}]},
     "a role listed in roles or a predefined pg_ role"),
    ("setting without =", {"settings": [{"role": None, "settings": ["timezone"]}]}, "a setting written name=value"),
    ("privilege", {"privileges": [{"grantee": None, "privilege": "ALL; DROP"}]}, "one of CONNECT, CREATE, TEMPORARY"),
    ("too many roles", {"roles": [{"name": f"r{i}"} for i in range(10_001)]}, "a list of at most 10000 entries"),
    ("missing owner", {"owner": None}, "owner must be a UTF-8 string"),
]


@pytest.mark.parametrize(("change", "message"), [(c, m) for _, c, m in HOSTILE_INFO],
                         ids=[i for i, _, _ in HOSTILE_INFO])
def test_a_malformed_database_json_is_refused_naming_the_field(change, message):
    info = {"format_version": 1, "name": "src", "owner": "o", "encoding": "UTF8", "lc_collate": "C", "lc_ctype": "C",
            "settings": [], **change}
    with pytest.raises(ArchiveError) as raised:
        parse_database_info(info)
    assert str(raised.value).startswith("database.json")
    assert message in str(raised.value)


# ---------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(("value", "items"), [
    ('"$user", public', ["$user", "public"]),
    ("public", ["public"]),
    ("", []),
    ('"a ""quoted"" name",b', ['a "quoted" name', "b"]),
    ('  x ,  "y z"  ', ["x", "y z"]),
    ('"unterminated', None),
    ("a,,b", None),
    ("a b", None),
    ("a,", None),
])
def test_list_settings_split_as_postgresql_does(value, items):
    assert split_guc_list(value) == items


def test_roles_sql_comments_out_what_reaches_beyond_the_database_and_keeps_line_breaks_in_comments():
    spec = DatabaseGlobals(
        name="app", owner="o", encoding="UTF8", lc_collate="C", lc_ctype="C",
        roles=(RoleSpec("o", superuser=True), RoleSpec("x\nDROP DATABASE app; --", login=True)),
    )
    text = render_roles_sql(spec, dump_file="db-dumps/postgresql-app.sql.gz", roles_file="postgresql-app.roles.sql")
    assert "-- ALTER ROLE \"o\" WITH SUPERUSER;" in text
    assert "\nALTER ROLE \"o\" WITH SUPERUSER" not in text
    # A line break in a name never ends a comment line: every line of a comment starts with "--".
    assert "-- Role \"x\n-- DROP DATABASE app; --\"" in text
    assert "psql -X -v ON_ERROR_STOP=1 -d postgres -v database=NEW_DATABASE -f postgresql-app.roles.sql" in text
