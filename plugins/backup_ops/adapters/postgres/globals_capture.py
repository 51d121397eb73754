"""Capturing, at backup time, the roles and database settings a dump needs on an empty server.

``capture_globals`` runs in the dump's snapshot transaction (the session whose snapshot pg_dump
imports), so the roles it finds are exactly those the dump's objects name. Which roles: the
database's owner, every role the database's objects depend on (``pg_shdepend``: owners, grantees,
default privileges, policies), the owners of its schemas, tables, functions and types (this also
catches the bootstrap superuser, which ``pg_shdepend`` never records), the roles with settings in
the database; then the roles those are members of, and their members (the login roles an
application uses), transitively. Predefined ``pg_*`` roles exist on every server and are not
captured, only memberships in them.

Nothing here needs a superuser: ``pg_roles``, ``pg_auth_members``, ``pg_db_role_setting``,
``pg_shdepend`` and ``pg_shdescription`` are readable by every login unless an administrator
revoked that. Each read runs in a savepoint: one that fails is named in a note (and the dump
task's log), the snapshot transaction goes on, and the backup never fails for it.

``stage_globals`` writes ``postgresql-<db>.database.json`` (``DatabaseGlobals.to_json``) and
``postgresql-<db>.roles.sql`` (``render_roles_sql``: pg_dumpall's statement forms, made safe to run
twice and under ``ON_ERROR_STOP``) beside the dump.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backup_ops.adapters.postgres.globals import (
    AFTER_LOAD_SETTINGS,
    DATABASE_JSON,
    DATABASE_PRIVILEGES,
    ROLES_SQL,
    DatabaseGlobals,
    DatabaseGrant,
    Membership,
    RoleSettings,
    RoleSpec,
    is_predefined,
    setting_problem,
    setting_values,
    split_setting,
)
from backup_ops.core.dump_member import DUMP_DIR
from backup_ops.core.models import StagedMember

if TYPE_CHECKING:
    import psycopg

_log = logging.getLogger(__name__)

_SCHEMA_FILTER = "n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'"
_OWNERS_SQL = f"""
    SELECT n.nspowner FROM pg_catalog.pg_namespace AS n WHERE {_SCHEMA_FILTER}
    UNION SELECT c.relowner FROM pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace WHERE {_SCHEMA_FILTER}
    UNION SELECT p.proowner FROM pg_catalog.pg_proc AS p
        JOIN pg_catalog.pg_namespace AS n ON n.oid = p.pronamespace WHERE {_SCHEMA_FILTER}
    UNION SELECT t.typowner FROM pg_catalog.pg_type AS t
        JOIN pg_catalog.pg_namespace AS n ON n.oid = t.typnamespace WHERE {_SCHEMA_FILTER}
"""
_SHDEPEND_SQL = """
    SELECT DISTINCT d.refobjid FROM pg_catalog.pg_shdepend AS d
    WHERE d.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
      AND (d.dbid = %(db)s OR (d.dbid = 0 AND d.classid = 'pg_catalog.pg_database'::pg_catalog.regclass
                               AND d.objid = %(db)s))
"""
_ROLES_SQL = """
    SELECT oid, rolname::text, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication,
           rolbypassrls, rolconnlimit, rolvaliduntil::text, rolconfig
    FROM pg_catalog.pg_roles
"""
_ACL_SQL = """
    SELECT a.grantee, a.privilege_type, a.is_grantable
    FROM pg_catalog.pg_database AS d, pg_catalog.aclexplode(d.datacl) AS a
    WHERE d.oid = %(db)s AND a.grantee <> d.datdba
    ORDER BY a.grantee, a.privilege_type
"""
_COMMENTS_SQL = """
    SELECT classoid = 'pg_catalog.pg_database'::pg_catalog.regclass, objoid, description
    FROM pg_catalog.pg_shdescription
    WHERE classoid IN ('pg_catalog.pg_database'::pg_catalog.regclass, 'pg_catalog.pg_authid'::pg_catalog.regclass)
"""


def member_names(stem: str) -> dict[str, str]:
    """The archive members staged beside the dump whose file name starts with ``stem`` (``postgresql-<db>``)."""
    return {"roles": f"{DUMP_DIR}/{stem}.{ROLES_SQL}", "database": f"{DUMP_DIR}/{stem}.{DATABASE_JSON}"}


# ---------------------------------------------------------------------------- capturing


def capture_globals(conn: psycopg.Connection[Any], *, login: str, log: logging.Logger | None = None
                    ) -> tuple[DatabaseGlobals | None, tuple[str, ...]]:
    """The current database's roles and settings, read in ``conn``'s open transaction; never raises.

    Returns ``(globals, notes)``: ``globals`` is None when not even the database's own row could
    be read; ``notes`` say what could not be read and why. The transaction stays usable.
    """
    reader = _CatalogReader(conn, login)
    try:
        return reader.capture(), tuple(reader.notes)
    except Exception as exc:  # a bug here must never cost a backup: it only loses the roles
        (log or _log).exception("Capturing the roles and settings failed")
        reader.notes.append(f"The roles and database settings could not be captured ({type(exc).__name__}: {exc}); "
                            "create them by hand before restoring this backup on another server.")
        return None, tuple(reader.notes)


class _CatalogReader:
    """Reads the catalogs one query at a time, each in a savepoint, noting what could not be read."""

    def __init__(self, conn: psycopg.Connection[Any], login: str) -> None:
        self.conn = conn
        self.login = login
        self.notes: list[str] = []
        self.version = conn.info.server_version

    def read(self, query: str, params: dict[str, Any] | None, what: str, consequence: str) -> list[Any] | None:
        """The rows of ``query``; None (and a note) when the login may not read them."""
        import psycopg

        try:
            with self.conn.transaction():  # a savepoint: the snapshot transaction survives a failure
                return list(self.conn.execute(query, params).fetchall())
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            # The dump logs the notes together, as one warning.
            self.notes.append(f"Login {self.login!r} could not read {what}: {reason}; {consequence}")
            return None

    def capture(self) -> DatabaseGlobals | None:
        database = self.read(self._database_sql(), None, "the database's own row (pg_database)",
                             "its roles and settings are not in this backup; create them by hand before a restore.")
        if not database:
            return None
        db_oid, name, owner_oid, owner, encoding, collate, ctype, provider, locale, rules, default_acl = database[0]
        db = {"db": db_oid}
        roles_rows = self.read(_ROLES_SQL, None, "the roles (pg_roles)",
                               "no role is in this backup; create them by hand before a restore.") or []
        names = {int(r[0]): str(r[1]) for r in roles_rows}
        settings_rows = self.read(
            "SELECT setrole, setconfig FROM pg_catalog.pg_db_role_setting WHERE setdatabase = %(db)s", db,
            "the database's settings (pg_db_role_setting)",
            "ALTER DATABASE … SET and ALTER ROLE … IN DATABASE … SET are not in this backup; set them by hand "
            "after a restore.") or []
        acl_rows = None if default_acl else self.read(_ACL_SQL, db, "the database's privileges",
                                                      "the database's privileges are not in this backup.")
        membership_rows = self.read(self._members_sql(), None, "the role memberships (pg_auth_members)",
                                    "the roles are in this backup without their memberships; grant them by hand "
                                    "after a restore.") or []
        comment_rows = self.read(_COMMENTS_SQL, None, "the comments on the database and roles (pg_shdescription)",
                                 "they are not in this backup.") or []

        referenced = self.referenced(db, int(owner_oid)) | {int(r[0]) for r in [*settings_rows, *(acl_rows or [])]}
        captured = _closure({o for o in referenced if o in names and not is_predefined(names[o])}, membership_rows,
                            names)
        comments = {(bool(is_db), int(oid)): str(text) for is_db, oid, text in comment_rows}
        return DatabaseGlobals(
            name=str(name), owner=str(owner), encoding=str(encoding),
            lc_collate=str(collate), lc_ctype=str(ctype), locale_provider=provider, locale=locale, icu_rules=rules,
            comment=comments.get((True, int(db_oid))),
            settings=tuple(sorted(
                (RoleSettings(names[int(r[0])] if int(r[0]) else None, tuple(r[1] or ()))
                 for r in settings_rows if not int(r[0]) or int(r[0]) in names),
                key=lambda s: (s.role is not None, s.role or ""))),
            privileges=None if acl_rows is None else tuple(
                DatabaseGrant(names[int(g)] if int(g) else None, str(p), bool(grantable))
                for g, p, grantable in acl_rows if str(p) in DATABASE_PRIVILEGES and (not int(g) or int(g) in names)),
            roles=tuple(sorted(
                (_role(r, comments.get((False, int(r[0])))) for r in roles_rows if int(r[0]) in captured),
                key=lambda role: role.name)),
            memberships=tuple(sorted(
                (Membership(names[int(r[0])], names[int(r[1])], bool(r[2]), _flag(r[3]), _flag(r[4]))
                 for r in membership_rows
                 if int(r[1]) in captured and int(r[0]) in names
                 and (int(r[0]) in captured or is_predefined(names[int(r[0])]))),
                key=lambda m: (m.role, m.member))),
            notes=tuple(self.notes),
        )

    def referenced(self, db: dict[str, Any], owner: int) -> set[int]:
        """The database's owner, the owners of its objects, and every role its objects depend on (0: PUBLIC)."""
        owners = self.read(_OWNERS_SQL, None, "the owners of schemas and tables", "only the database's owner was "
                           "captured.") or []
        dependencies = self.read(
            _SHDEPEND_SQL, db, "which roles own or are granted the database's objects (pg_shdepend)",
            "only the owners of the database, its schemas, tables, functions and types were captured; create "
            "the roles that are only granted privileges by hand before a restore.") or []
        return {owner, *(int(r[0]) for r in [*owners, *dependencies])}

    def _database_sql(self) -> str:
        provider = ("CASE d.datlocprovider WHEN 'c' THEN 'libc' WHEN 'i' THEN 'icu' WHEN 'b' THEN 'builtin' "
                    "ELSE d.datlocprovider::text END") if self.version >= 150000 else "NULL"
        locale = "d.datlocale" if self.version >= 170000 else "d.daticulocale" if self.version >= 150000 else "NULL"
        rules = "d.daticurules" if self.version >= 160000 else "NULL"
        # pg_get_userbyid reads the role without a privilege check: the owner is named even if pg_roles is not.
        return ("SELECT d.oid, d.datname::text, d.datdba, pg_catalog.pg_get_userbyid(d.datdba)::text, "
                "pg_catalog.pg_encoding_to_char(d.encoding), d.datcollate::text, d.datctype::text, "
                f"{provider}, {locale}::text, {rules}::text, d.datacl IS NULL "
                "FROM pg_catalog.pg_database AS d WHERE d.datname = pg_catalog.current_database()")

    def _members_sql(self) -> str:
        options = "inherit_option, set_option" if self.version >= 160000 else "NULL::bool, NULL::bool"
        return f"SELECT roleid, member, admin_option, {options} FROM pg_catalog.pg_auth_members"


def _closure(referenced: set[int], memberships: Iterable[Any], names: dict[int, str]) -> set[int]:
    """``referenced``, the roles they are members of and the roles that are members of them, transitively."""
    edges = [(int(r[0]), int(r[1])) for r in memberships]  # (role, member)

    def reach(start: set[int], step: dict[int, set[int]]) -> set[int]:
        found, todo = set(start), list(start)
        while todo:
            for nxt in step.get(todo.pop(), ()):
                if nxt not in found and nxt in names and not is_predefined(names[nxt]):
                    found.add(nxt)
                    todo.append(nxt)
        return found

    up: dict[int, set[int]] = {}
    down: dict[int, set[int]] = {}
    for role, member in edges:
        up.setdefault(member, set()).add(role)
        down.setdefault(role, set()).add(member)
    return reach(referenced, up) | reach(referenced, down)


def _flag(value: Any) -> bool | None:
    return None if value is None else bool(value)


def _role(row: Any, comment: str | None) -> RoleSpec:
    (_, name, superuser, inherit, createrole, createdb, login, replication, bypassrls, limit, valid_until,
     config) = row
    return RoleSpec(name=str(name), login=bool(login), inherit=bool(inherit), createdb=bool(createdb),
                    superuser=bool(superuser), createrole=bool(createrole), replication=bool(replication),
                    bypassrls=bool(bypassrls), connection_limit=int(limit),
                    valid_until=None if valid_until is None else str(valid_until), comment=comment,
                    settings=tuple(str(s) for s in config or ()))


# ---------------------------------------------------------------------------- roles.sql


def render_roles_sql(spec: DatabaseGlobals, *, dump_file: str, roles_file: str) -> str:
    """``roles.sql`` for a restore by hand with psql: the same rules as ``apply_globals``, in pg_dumpall's forms.

    Each role is created only when missing (a psql ``\\if`` on pg_roles), so the script runs under
    ``ON_ERROR_STOP`` and a second run changes nothing. With ``-v database=NAME`` it also gives
    that database the source's settings, comment, privileges and owner.
    """
    out = [
        "--",
        f"-- The roles and database settings that {dump_file} needs on a server that lacks them.",
        "-- Written by backup-ops from the source's catalogs, inside the dump's snapshot, in the statement forms",
        "-- of pg_dumpall --roles-only --no-role-passwords. Backups hold no passwords: set them with",
        "-- ALTER ROLE ... PASSWORD. Run it as a superuser before loading the dump; running it twice is harmless:",
        "--",
        f"--   psql -X -v ON_ERROR_STOP=1 -d postgres -v database=NEW_DATABASE -f {roles_file}",
        "--",
        "-- Without -v database=... only the roles are created. A role that already exists is left as it is.",
        "-- What reaches beyond the restored database is commented out for a human to decide: SUPERUSER,",
        "-- CREATEROLE, REPLICATION, BYPASSRLS, memberships in predefined pg_* roles, settings that load code.",
        "--",
        "",
        "SET client_encoding = 'UTF8';",
        "SET standard_conforming_strings = on;",
        "",
    ]
    variable = {role.name: f"backup_ops_new_role_{i}" for i, role in enumerate(spec.roles, start=1)}
    for role in spec.roles:
        out += _role_block(role, variable[role.name])
    if spec.memberships:
        out += ["-- Memberships: granted only in roles created above", ""]
    for membership in spec.memberships:
        grant = f"GRANT {_ident(membership.role)} TO {_ident(membership.member)}{_grant_options(membership)};"
        if membership.predefined:
            out += [*_commented(grant), "--   (a predefined role: it reaches beyond this database)"]
        else:
            out += [f"\\if :{variable[membership.role]}", grant, "\\endif"]
    out += ["", "-- The database, when run with -v database=NAME", "\\if :{?database}"]
    out += _database_lines(spec)
    out += ["\\endif", ""]
    return "\n".join(out)


def _role_block(role: RoleSpec, variable: str) -> list[str]:
    name = _ident(role.name)
    options = " ".join(role.options())
    options += f" VALID UNTIL {_literal(role.valid_until)}" if role.valid_until is not None else ""
    lines = [
        *_commented(f"Role {name}"),
        f"SELECT NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {_literal(role.name)}) AS {variable} "
        "\\gset",
        f"\\if :{variable}",
        f"CREATE ROLE {name};",
        f"ALTER ROLE {name} WITH {options};",
    ]
    if role.elevated:
        lines += [*_commented(f"ALTER ROLE {name} WITH {' '.join(role.elevated)};"), "--   (as on the source)"]
    if role.comment is not None:
        lines.append(f"COMMENT ON ROLE {name} IS {_literal(role.comment)};")
    lines += _setting_lines(f"ALTER ROLE {name} SET", role.settings, deferrable=False)
    return [*lines, "\\endif", ""]


def _database_lines(spec: DatabaseGlobals) -> list[str]:
    db = ':"database"'
    lines: list[str] = []
    for group in spec.settings:
        prefix = (f"ALTER DATABASE {db} SET" if group.role is None
                  else f"ALTER ROLE {_ident(group.role)} IN DATABASE {db} SET")
        lines += _setting_lines(prefix, group.settings, deferrable=True)
    if spec.comment is not None:
        lines.append(f"COMMENT ON DATABASE {db} IS {_literal(spec.comment)};")
    if spec.privileges is not None:
        lines.append(f"REVOKE ALL ON DATABASE {db} FROM PUBLIC;")
        for grant in spec.privileges:
            grantee = "PUBLIC" if grant.grantee is None else _ident(grant.grantee)
            option = " WITH GRANT OPTION" if grant.grantable else ""
            lines.append(f"GRANT {grant.privilege} ON DATABASE {db} TO {grantee}{option};")
    lines.append(f"ALTER DATABASE {db} OWNER TO {_ident(spec.owner)};")
    return lines


def _setting_lines(prefix: str, settings: Iterable[str], *, deferrable: bool) -> list[str]:
    lines = []
    for entry in settings:
        name, value = split_setting(entry)
        problem = setting_problem(name, value)
        values = setting_values(name, value) or [""]
        statement = f"{prefix} {_ident(name)} TO {', '.join(_literal(v) for v in values)};"
        if problem is not None:
            lines += [*_commented(statement), f"--   ({problem})"]
        elif deferrable and name.lower() in AFTER_LOAD_SETTINGS:
            lines += [*_commented(statement), "--   (run it after loading the dump: it would make loading fail)"]
        else:
            lines.append(statement)
    return lines


def _commented(text: str) -> list[str]:
    """``text`` as SQL comment lines: every line break (which would end a comment) starts a new ``--``."""
    return ["-- " + line for line in text.splitlines() or [""]]


def _grant_options(membership: Membership) -> str:
    options = ["ADMIN TRUE"] if membership.admin else []
    options += [f"{key} {'TRUE' if value else 'FALSE'}" for key, value in
                (("INHERIT", membership.inherit), ("SET", membership.set)) if value is not None]
    return f" WITH {', '.join(options)}" if options else ""


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    # standard_conforming_strings is on (the script sets it): a backslash is an ordinary character.
    return "'" + text.replace("'", "''") + "'"


# ---------------------------------------------------------------------------- staging


def stage_globals(spec: DatabaseGlobals, directory: Path, stem: str, *, dump_file: str) -> tuple[StagedMember, ...]:
    """Write ``<stem>.roles.sql`` and ``<stem>.database.json`` (0600, new files) into ``directory``."""
    names = member_names(stem)
    documents = {
        "roles": render_roles_sql(spec, dump_file=dump_file, roles_file=names["roles"].rsplit("/", 1)[-1]
                                  ).encode("utf-8"),
        "database": (json.dumps(spec.to_json(), sort_keys=False, indent=2, ensure_ascii=False) + "\n").encode("utf-8"),
    }
    staged = []
    for kind, data in documents.items():
        path = directory / names[kind].rsplit("/", 1)[-1]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with open(fd, "wb") as out:
            out.write(data)
        staged.append(StagedMember(kind, names[kind], str(path.resolve()), len(data), hashlib.sha256(data).hexdigest()))
    return tuple(staged)


def staged_paths(directory: Path, stem: str) -> list[Path]:
    """Where ``stage_globals`` writes, so the dump can remove leftovers and failed attempts."""
    return [directory / name.rsplit("/", 1)[-1] for name in member_names(stem).values()]
