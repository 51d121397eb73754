"""What a database needs from outside itself to load on an empty server, and applying it there.

A plain pg_dump holds a database's objects with their owners and grants, but neither the roles
those name nor the database's own owner, settings (``ALTER DATABASE … SET``, ``ALTER ROLE … IN
DATABASE … SET``), privileges and comment: on a fresh server it fails at once with ``role "…" does
not exist``. ``globals_capture`` reads all of it inside the dump's snapshot into a
``DatabaseGlobals``, stored beside the dump as ``postgresql-<db>.database.json`` (the roles as
structured data), and renders ``postgresql-<db>.roles.sql`` from it for a restore by hand.

``apply_globals`` puts them on a restore target. The archive is hostile input, so no SQL text from
it ever runs: ``database.json`` is read as data (every field type-checked and capped) and every
statement is built here with psycopg.sql, names as quoted identifiers and values as literals.
The rules, which ``roles.sql`` follows too:

* a role that exists is left as it is (attributes, password, memberships); a missing one is created
  as captured, without a password (backups hold none) and without the attributes that reach beyond
  the restored database (SUPERUSER, CREATEROLE, REPLICATION, BYPASSRLS);
* memberships are granted only in roles this call created, never in a role that existed before
  nor in a predefined ``pg_*`` role;
* settings that load code into the server (``*_preload_libraries``, ``dynamic_library_path``) are
  not applied; ``default_transaction_read_only`` would make loading the dump fail, so it waits for
  ``after_load=True``;
* the new database gets its settings, its roles' settings in it, its comment and privileges, then
  its owner. Every step says what it did in one returned line, so a second call changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from backup_ops.adapters.postgres.target import PgTarget, connect, redact
from backup_ops.core.errors import ArchiveError, DumpError

if TYPE_CHECKING:
    import psycopg

_log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DATABASE_JSON = "database.json"
ROLES_SQL = "roles.sql"

ELEVATED_ATTRIBUTES = ("superuser", "createrole", "replication", "bypassrls")
"""Role attributes that reach beyond the restored database: never given by apply, commented out in roles.sql."""
CODE_LOADING_SETTINGS = frozenset({
    "session_preload_libraries", "local_preload_libraries", "shared_preload_libraries", "dynamic_library_path",
})
AFTER_LOAD_SETTINGS = frozenset({"default_transaction_read_only", "transaction_read_only"})
# Settings whose value is a list of quoted items (PostgreSQL's GUC_LIST_QUOTE): pg_dump splits them
# and gives each item as its own literal, and so do we.
_LIST_SETTINGS = frozenset({"search_path", "temp_tablespaces", "unix_socket_directories", *CODE_LOADING_SETTINGS})
DATABASE_PRIVILEGES = ("CONNECT", "CREATE", "TEMPORARY")

MAX_NAME_BYTES = 63  # NAMEDATALEN - 1
MAX_ROLES = 10_000
MAX_SETTINGS = 1_000
MAX_TEXT = 4096
MAX_COMMENT = 65_536
_WHERE = DATABASE_JSON


# ---------------------------------------------------------------------------- the data


@dataclass(frozen=True)
class RoleSpec:
    """One role as captured from ``pg_roles`` (never its password)."""

    name: str
    login: bool = False
    inherit: bool = True
    createdb: bool = False
    superuser: bool = False
    createrole: bool = False
    replication: bool = False
    bypassrls: bool = False
    connection_limit: int = -1
    valid_until: str | None = None
    comment: str | None = None
    settings: tuple[str, ...] = ()
    """Role-wide settings (``ALTER ROLE … SET``) as ``name=value``."""

    @property
    def elevated(self) -> tuple[str, ...]:
        """The attributes it holds that reach beyond the restored database, in SQL spelling."""
        return tuple(a.upper() for a in ELEVATED_ATTRIBUTES if getattr(self, a))

    def options(self) -> list[str]:
        """Its attributes as CREATE/ALTER ROLE keywords, the elevated ones left out."""
        words = ["LOGIN" if self.login else "NOLOGIN", "INHERIT" if self.inherit else "NOINHERIT",
                 "CREATEDB" if self.createdb else "NOCREATEDB"]
        if self.connection_limit != -1:
            words.append(f"CONNECTION LIMIT {self.connection_limit}")
        return words


@dataclass(frozen=True)
class Membership:
    """``member`` is a member of ``role``; ``inherit`` and ``set`` exist from PostgreSQL 16 on (None before)."""

    role: str
    member: str
    admin: bool = False
    inherit: bool | None = None
    set: bool | None = None

    @property
    def predefined(self) -> bool:
        """Membership in one of the server's predefined roles (``pg_read_all_data`` …), which reach server-wide."""
        return is_predefined(self.role)


@dataclass(frozen=True)
class RoleSettings:
    """Settings of the database (``role`` None) or of one role in it, each as ``name=value``."""

    role: str | None
    settings: tuple[str, ...]


@dataclass(frozen=True)
class DatabaseGrant:
    """One privilege on the database: ``grantee`` None is PUBLIC."""

    grantee: str | None
    privilege: str
    grantable: bool = False


@dataclass(frozen=True)
class DatabaseGlobals:
    """Everything a database needs from outside itself: the ``database.json`` member."""

    name: str
    owner: str
    encoding: str
    lc_collate: str
    lc_ctype: str
    locale_provider: str | None = None
    locale: str | None = None
    icu_rules: str | None = None
    comment: str | None = None
    settings: tuple[RoleSettings, ...] = ()
    privileges: tuple[DatabaseGrant, ...] | None = None
    """None: the database has the default privileges (``datacl`` is NULL)."""
    roles: tuple[RoleSpec, ...] = ()
    memberships: tuple[Membership, ...] = ()
    notes: tuple[str, ...] = ()
    """What could not be captured and why, one sentence each."""

    def to_json(self) -> dict[str, Any]:
        """The ``database.json`` document (the contract's keys first, then the roles and privileges)."""
        return {
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "owner": self.owner,
            "encoding": self.encoding,
            "lc_collate": self.lc_collate,
            "lc_ctype": self.lc_ctype,
            "locale_provider": self.locale_provider,
            "locale": self.locale,
            "icu_rules": self.icu_rules,
            "comment": self.comment,
            "settings": [{"role": s.role, "settings": list(s.settings)} for s in self.settings],
            "privileges": None if self.privileges is None else [
                {"grantee": g.grantee, "privilege": g.privilege, "grantable": g.grantable} for g in self.privileges],
            "roles": [
                {"name": r.name, "login": r.login, "inherit": r.inherit, "createdb": r.createdb,
                 "superuser": r.superuser, "createrole": r.createrole, "replication": r.replication,
                 "bypassrls": r.bypassrls, "connection_limit": r.connection_limit, "valid_until": r.valid_until,
                 "comment": r.comment, "settings": list(r.settings)}
                for r in self.roles
            ],
            "memberships": [{"role": m.role, "member": m.member, "admin": m.admin, "inherit": m.inherit,
                             "set": m.set} for m in self.memberships],
            "notes": list(self.notes),
        }


def is_predefined(role: str) -> bool:
    """Whether ``role`` is one of PostgreSQL's predefined roles (the ``pg_`` prefix is reserved for them)."""
    return role.startswith("pg_")


# ---------------------------------------------------------------------------- settings


def split_setting(entry: str) -> tuple[str, str]:
    """``("TimeZone", "UTC")`` from ``pg_db_role_setting``'s ``"TimeZone=UTC"``."""
    name, _, value = entry.partition("=")
    return name, value


def setting_values(name: str, value: str) -> list[str] | None:
    """The literals a setting is given as: one, or one per item of a list setting; None when the list is malformed.

    ``search_path="$user", public`` is stored flattened; set back as one literal it would name a
    single schema called ``"$user", public``, so list settings are split as PostgreSQL's
    SplitGUCList does (pg_dump's rule), each item then a literal of its own.
    """
    if name.lower() not in _LIST_SETTINGS:
        return [value]
    return split_guc_list(value)


def split_guc_list(value: str) -> list[str] | None:
    """PostgreSQL's SplitGUCList: comma-separated items, ``""`` a quote inside a quoted one; None if malformed."""
    items: list[str] = []
    n = len(value)
    i = _skip_space(value, 0)
    if i == n:
        return items
    while True:
        if i < n and value[i] == '"':
            parts, j = [], i + 1
            while True:
                k = value.find('"', j)
                if k < 0:
                    return None  # an unterminated quote
                if value.startswith('""', k):
                    parts.append(value[j:k + 1])
                    j = k + 2
                    continue
                parts.append(value[j:k])
                i = k + 1
                break
            items.append("".join(parts))
        else:
            j = i
            while j < n and value[j] != "," and not _is_space(value[j]):
                j += 1
            if j == i:
                return None  # an empty unquoted item
            items.append(value[i:j])
            i = j
        i = _skip_space(value, i)
        if i == n:
            return items
        if value[i] != ",":
            return None
        i = _skip_space(value, i + 1)


def _is_space(ch: str) -> bool:
    return ch in " \t\n\r\f\v"  # C's isspace(), as PostgreSQL uses it


def _skip_space(value: str, i: int) -> int:
    while i < len(value) and _is_space(value[i]):
        i += 1
    return i


def setting_problem(name: str, value: str) -> str | None:
    """Why backup-ops does not apply this setting on its own (a phrase), or None when it does."""
    key = name.lower()
    if key in CODE_LOADING_SETTINGS:
        return "it loads code into the server"
    if setting_values(name, value) is None:
        return "its value is not a valid list"
    return None


# ---------------------------------------------------------------------------- reading database.json


def parse_database_info(data: Mapping[str, Any]) -> DatabaseGlobals:
    """``database.json`` as read from an archive (hostile input): every field checked; raises ArchiveError."""
    reader = _Reader()
    root = reader.obj(data, "the top level", ("format_version", "name", "owner", "encoding", "lc_collate",
                                              "lc_ctype", "settings"))
    version = root["format_version"]
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ArchiveError(f"{_WHERE} has format version {version!r}, which this backup-ops does not know (known: "
                           f"{FORMAT_VERSION}); upgrade backup-ops to apply it, or apply the roles.sql member by hand.")
    roles = tuple(reader.role(r, f"roles[{i}]") for i, r in enumerate(reader.items(root.get("roles", []), "roles",
                                                                                    MAX_ROLES)))
    names = [r.name for r in roles]
    if len(set(names)) != len(names):
        raise ArchiveError(f"{_WHERE} is malformed: roles lists a role twice.")
    known = set(names)
    memberships = tuple(reader.membership(m, f"memberships[{i}]", known) for i, m in
                        enumerate(reader.items(root.get("memberships", []), "memberships", MAX_ROLES)))
    privileges = root.get("privileges")
    return DatabaseGlobals(
        name=reader.text(root["name"], "name", MAX_TEXT),
        owner=reader.role_name(root["owner"], "owner"),
        encoding=reader.text(root["encoding"], "encoding", 64),
        lc_collate=reader.text(root["lc_collate"], "lc_collate", MAX_TEXT),
        lc_ctype=reader.text(root["lc_ctype"], "lc_ctype", MAX_TEXT),
        locale_provider=reader.optional(root.get("locale_provider"), "locale_provider", 64),
        locale=reader.optional(root.get("locale"), "locale", MAX_TEXT),
        icu_rules=reader.optional(root.get("icu_rules"), "icu_rules", MAX_TEXT),
        comment=reader.optional(root.get("comment"), "comment", MAX_COMMENT),
        settings=tuple(reader.role_settings(s, f"settings[{i}]") for i, s in
                       enumerate(reader.items(root["settings"], "settings", MAX_ROLES))),
        privileges=None if privileges is None else tuple(
            reader.grant(g, f"privileges[{i}]") for i, g in enumerate(reader.items(privileges, "privileges", 1000))),
        roles=roles,
        memberships=memberships,
        notes=tuple(reader.text(n, f"notes[{i}]", MAX_TEXT) for i, n in
                    enumerate(reader.items(root.get("notes", []), "notes", 100))),
    )


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")  # JSON may carry lone surrogates, which no server takes
    except UnicodeEncodeError:
        return False
    return True


class _Reader:
    """Typed accessors over the raw JSON that fail with the offending key."""

    @staticmethod
    def fail(where: str, accepted: str, value: Any) -> ArchiveError:
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        return ArchiveError(f"{_WHERE} is malformed: {where} must be {accepted}, got {shown}.")

    def obj(self, value: Any, where: str, required: Sequence[str] = ()) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, "an object", type(value).__name__)
        for key in required:
            if key not in value:
                raise ArchiveError(f"{_WHERE} is malformed: {where} has no {key!r} key.")
        return value

    def items(self, value: Any, where: str, limit: int) -> list[Any]:
        if not isinstance(value, list) or len(value) > limit:
            raise self.fail(where, f"a list of at most {limit} entries", type(value).__name__)
        return value

    def text(self, value: Any, where: str, limit: int) -> str:
        if not isinstance(value, str) or len(value) > limit or "\x00" in value or not _encodable(value):
            raise self.fail(where, f"a UTF-8 string of at most {limit} characters without NUL", value)
        return value

    def optional(self, value: Any, where: str, limit: int) -> str | None:
        return None if value is None else self.text(value, where, limit)

    def flag(self, value: Any, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "true or false", value)
        return value

    def optional_flag(self, value: Any, where: str) -> bool | None:
        return None if value is None else self.flag(value, where)

    def role_name(self, value: Any, where: str) -> str:
        name = self.text(value, where, MAX_TEXT)
        if not name or len(name.encode("utf-8")) > MAX_NAME_BYTES:
            raise self.fail(where, f"a role name of 1 to {MAX_NAME_BYTES} bytes", value)
        return name

    def setting(self, value: Any, where: str) -> str:
        entry = self.text(value, where, MAX_TEXT)
        name, _ = split_setting(entry)
        if "=" not in entry or not name:
            raise self.fail(where, "a setting written name=value", value)
        return entry

    def settings(self, value: Any, where: str) -> tuple[str, ...]:
        return tuple(self.setting(s, f"{where}[{i}]") for i, s in enumerate(self.items(value, where, MAX_SETTINGS)))

    def role(self, value: Any, where: str) -> RoleSpec:
        item = self.obj(value, where, ("name",))
        name = self.role_name(item["name"], f"{where}.name")
        if is_predefined(name):
            raise self.fail(f"{where}.name", "a role that is not predefined (the pg_ prefix is reserved)", name)
        limit = item.get("connection_limit", -1)
        if isinstance(limit, bool) or not isinstance(limit, int) or not -1 <= limit <= 2**31 - 1:
            raise self.fail(f"{where}.connection_limit", "a whole number from -1", limit)
        flags = {key: self.flag(item.get(key, default), f"{where}.{key}")
                 for key, default in (("login", False), ("inherit", True), ("createdb", False), ("superuser", False),
                                      ("createrole", False), ("replication", False), ("bypassrls", False))}
        return RoleSpec(name=name, **flags, connection_limit=limit,
                        valid_until=self.optional(item.get("valid_until"), f"{where}.valid_until", 64),
                        comment=self.optional(item.get("comment"), f"{where}.comment", MAX_COMMENT),
                        settings=self.settings(item.get("settings", []), f"{where}.settings"))

    def membership(self, value: Any, where: str, known: set[str]) -> Membership:
        item = self.obj(value, where, ("role", "member"))
        role = self.role_name(item["role"], f"{where}.role")
        member = self.role_name(item["member"], f"{where}.member")
        if member not in known:
            raise self.fail(f"{where}.member", "a role listed in roles", member)
        if role not in known and not is_predefined(role):
            raise self.fail(f"{where}.role", "a role listed in roles or a predefined pg_ role", role)
        return Membership(role, member, admin=self.flag(item.get("admin", False), f"{where}.admin"),
                          inherit=self.optional_flag(item.get("inherit"), f"{where}.inherit"),
                          set=self.optional_flag(item.get("set"), f"{where}.set"))

    def role_settings(self, value: Any, where: str) -> RoleSettings:
        item = self.obj(value, where, ("role", "settings"))
        role = None if item["role"] is None else self.role_name(item["role"], f"{where}.role")
        return RoleSettings(role, self.settings(item["settings"], f"{where}.settings"))

    def grant(self, value: Any, where: str) -> DatabaseGrant:
        item = self.obj(value, where, ("grantee", "privilege"))
        grantee = None if item["grantee"] is None else self.role_name(item["grantee"], f"{where}.grantee")
        privilege = item["privilege"]
        if privilege not in DATABASE_PRIVILEGES:
            raise self.fail(f"{where}.privilege", "one of " + ", ".join(DATABASE_PRIVILEGES), privilege)
        return DatabaseGrant(grantee, privilege, self.flag(item.get("grantable", False), f"{where}.grantable"))


# ---------------------------------------------------------------------------- applying


def apply_globals(
    target: PgTarget,
    *,
    database: str,
    roles_sql: str | None,
    database_info: Mapping[str, Any] | None,
    log: logging.Logger | None = None,
    after_load: bool = False,
    conn_id: str | None = None,
) -> list[str]:
    """Create the roles a dump refers to and give ``database`` the source's settings; one line per action.

    Runs against the target server (``target.dbname`` is a maintenance database such as
    ``postgres``); ``database`` is the newly created database the dump is about to be loaded into,
    not the source's name. ``database_info`` is the archive's ``database.json``, parsed as hostile
    input: the roles come from its structured ``roles``, never from SQL text. ``roles_sql`` (the
    ``roles.sql`` member, for a restore by hand) is not executed; it only matters when
    ``database_info`` is missing, and then the returned lines say to run it by hand. Call it again
    with ``after_load=True`` once the dump is loaded to apply what would have stopped the load
    (``default_transaction_read_only``). Idempotent. Raises ArchiveError for a malformed
    ``database.json`` and DumpError when the target cannot take the roles (one sentence, what to do).
    """
    log = log or _log
    if database_info is None:
        if after_load:
            return []  # nothing waited: the first call said what was missing
        lines = ["no database.json in the archive: roles, owner, settings, privileges and comment were not applied"]
        if roles_sql:
            lines.append("roles.sql is never run from an archive automatically; review it and run it by hand: "
                         "psql -X -v ON_ERROR_STOP=1 -d postgres -v database=<new database> -f <roles.sql>")
        for line in lines:
            log.warning("%s", line)
        return lines
    spec = parse_database_info(database_info)
    with connect(target, conn_id or "(restore target)", "restore globals") as conn:
        applier = _Applier(conn, target, spec, database, log)
        applier.require_database()
        if after_load:
            applier.database_settings(after_load=True)
        else:
            applier.roles()
            applier.memberships()
            applier.database_settings(after_load=False)
            applier.database_comment_privileges_owner()
    return applier.lines


class _Applier:
    """One target session applying one DatabaseGlobals; ``lines`` says what each step did."""

    def __init__(self, conn: psycopg.Connection[Any], target: PgTarget, spec: DatabaseGlobals, database: str,
                 log: logging.Logger) -> None:
        from psycopg import sql

        self.sql = sql
        self.conn = conn
        self.target = target
        self.spec = spec
        self.database = database
        self.db = sql.Identifier(database)
        self.log = log
        self.lines: list[str] = []
        self.created: set[str] = set()
        self.server_version = conn.info.server_version

    def say(self, line: str) -> None:
        self.lines.append(line)
        self.log.info("%s", line)

    def reason(self, exc: Exception) -> str:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return redact(first, *self.target.secrets)

    def existing_roles(self) -> set[str]:
        rows = self.conn.execute("SELECT rolname::text FROM pg_catalog.pg_roles").fetchall()
        return {str(r[0]) for r in rows}

    def require_database(self) -> None:
        row = self.conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (self.database,)).fetchone()
        if row is None:
            raise DumpError(f"Database {self.database!r} does not exist on {self.target.host}:{self.target.port}; "
                            "create it before applying the roles and settings of the backup to it.", retryable=False)

    def try_statement(self, statement: Any, done: str, failed: str) -> bool:
        """Run one statement that may fail without failing the restore; say what happened."""
        import psycopg

        try:
            with self.conn.transaction():
                self.conn.execute(statement)
        except psycopg.Error as exc:
            self.say(f"{failed}: {self.reason(exc)}")
            return False
        self.say(done)
        return True

    # -- roles

    def roles(self) -> None:
        import psycopg

        sql = self.sql
        existing = self.existing_roles()
        for role in self.spec.roles:
            if role.name in existing:
                self.say(f"role {role.name} exists: left as it is")
                continue
            options = role.options()
            statement = sql.SQL("CREATE ROLE {} WITH {}").format(sql.Identifier(role.name),
                                                                 sql.SQL(" ").join(map(sql.SQL, options)))
            if role.valid_until is not None:
                statement += sql.SQL(" VALID UNTIL {}").format(sql.Literal(role.valid_until))
            try:
                with self.conn.transaction():
                    self.conn.execute(statement)
            except psycopg.errors.DuplicateObject:
                self.say(f"role {role.name} exists: left as it is")  # created meanwhile by someone else
                continue
            except psycopg.errors.InsufficientPrivilege as exc:
                raise DumpError(
                    f"Login {self.target.user!r} on {self.target.host}:{self.target.port} may not create role "
                    f"{role.name!r}, which the dump refers to ({self.reason(exc)}): give the login CREATEROLE (or "
                    "restore as a superuser), or create the roles first by running the archive's roles.sql.",
                    retryable=False) from None
            except psycopg.Error as exc:
                raise DumpError(f"Creating role {role.name!r} on {self.target.host}:{self.target.port} failed: "
                                f"{self.reason(exc)}.", retryable=False) from None
            self.created.add(role.name)
            self.say(self.created_line(role))
            if role.comment is not None:
                self.try_statement(sql.SQL("COMMENT ON ROLE {} IS {}").format(
                    sql.Identifier(role.name), sql.Literal(role.comment)),
                    f"comment on role {role.name}", f"comment on role {role.name} not set")
            for entry in role.settings:
                # Not deferrable: the role is new, so it is not the one loading the dump.
                self.apply_setting(sql.SQL("ALTER ROLE {} SET ").format(sql.Identifier(role.name)), entry,
                                   f"role {role.name}", after_load=None)

    @staticmethod
    def created_line(role: RoleSpec) -> str:
        line = f"created role {role.name} ({' '.join(role.options())}"
        line += f" VALID UNTIL {role.valid_until}" if role.valid_until else ""
        line += ", as captured)"
        if role.elevated:
            line += (f"; not given {', '.join(role.elevated)}, which it has on the source: that reaches beyond the "
                     "restored database, grant it by hand if this server needs it")
        if role.login:
            line += "; no password (backups hold none): set one with ALTER ROLE … PASSWORD before it logs in"
        return line

    def memberships(self) -> None:
        sql = self.sql
        rows = self.conn.execute(
            "SELECT r.rolname::text, m.rolname::text FROM pg_catalog.pg_auth_members AS a "
            "JOIN pg_catalog.pg_roles AS r ON r.oid = a.roleid JOIN pg_catalog.pg_roles AS m ON m.oid = a.member"
        ).fetchall()
        granted = {(str(r), str(m)) for r, m in rows}
        for membership in self.spec.memberships:
            role, member = membership.role, membership.member
            if (role, member) in granted:
                self.say(f"{member} is a member of {role} already")
            elif membership.predefined:
                self.say(f"{member} not made a member of predefined role {role}: that reaches beyond the restored "
                         f"database; GRANT {role} TO {member} by hand if this server needs it")
            elif role not in self.created:
                self.say(f"{member} not made a member of {role}: {role} existed before, and what an existing role "
                         f"grants is left as it is; GRANT {role} TO {member} by hand if wanted")
            else:
                statement = sql.SQL("GRANT {} TO {}").format(sql.Identifier(role), sql.Identifier(member))
                options = self.grant_options(membership)
                if options:
                    statement += sql.SQL(" WITH ") + sql.SQL(", ").join(map(sql.SQL, options))
                self.try_statement(statement, f"made {member} a member of {role}",
                                   f"{member} not made a member of {role}")

    def grant_options(self, membership: Membership) -> list[str]:
        if self.server_version < 160000:
            return ["ADMIN OPTION"] if membership.admin else []
        options = ["ADMIN TRUE"] if membership.admin else []
        options += [f"{key} {'TRUE' if value else 'FALSE'}" for key, value in
                    (("INHERIT", membership.inherit), ("SET", membership.set)) if value is not None]
        return options

    # -- the database

    def database_settings(self, *, after_load: bool) -> None:
        sql = self.sql
        existing = self.existing_roles()
        for group in self.spec.settings:
            if group.role is None:
                prefix = sql.SQL("ALTER DATABASE {} SET ").format(self.db)
                subject = "database"
            elif group.role in existing:
                prefix = sql.SQL("ALTER ROLE {} IN DATABASE {} SET ").format(sql.Identifier(group.role), self.db)
                subject = f"role {group.role} in the database"
            else:
                if not after_load:
                    self.say(f"settings of role {group.role} in the database not applied: the role does not exist")
                continue
            for entry in group.settings:
                self.apply_setting(prefix, entry, subject, after_load=after_load)

    def apply_setting(self, prefix: Any, entry: str, subject: str, *, after_load: bool | None) -> None:
        """``<prefix> name TO value`` for one ``name=value``, unless the rules keep it back; says which.

        ``after_load``: False before the dump is loaded, True after; None applies it whatever it is.
        """
        sql = self.sql
        name, value = split_setting(entry)
        waits = name.lower() in AFTER_LOAD_SETTINGS
        if after_load is not None and waits != after_load:
            if waits:
                self.say(f"{subject} setting {entry} waits until the dump is loaded (it would make loading it fail): "
                         "apply_globals(…, after_load=True) applies it")
            return
        problem = setting_problem(name, value)
        if problem is not None:
            self.say(f"{subject} setting {entry} not applied: {problem}; set it by hand if this server needs it")
            return
        values = setting_values(name, value) or [""]
        statement = prefix + sql.SQL("{} TO {}").format(sql.Identifier(name),
                                                        sql.SQL(", ").join(map(sql.Literal, values)))
        self.try_statement(statement, f"{subject} setting {entry}", f"{subject} setting {entry} not applied")

    def database_comment_privileges_owner(self) -> None:
        sql, spec = self.sql, self.spec
        existing = self.existing_roles()
        if spec.comment is not None:
            self.try_statement(sql.SQL("COMMENT ON DATABASE {} IS {}").format(self.db, sql.Literal(spec.comment)),
                               "database comment set", "database comment not set")
        if spec.privileges is not None:
            self.try_statement(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(self.db),
                               "database privileges of PUBLIC revoked, as on the source",
                               "database privileges of PUBLIC not revoked")
            for grant in spec.privileges:
                self.grant_on_database(grant, existing)
        if spec.owner in existing:
            self.try_statement(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(self.db, sql.Identifier(spec.owner)),
                               f"database owner: {spec.owner}", f"database owner not changed to {spec.owner}")
        else:
            self.say(f"database owner not changed: role {spec.owner} does not exist on this server")

    def grant_on_database(self, grant: DatabaseGrant, existing: set[str]) -> None:
        sql = self.sql
        who = "PUBLIC" if grant.grantee is None else grant.grantee
        if grant.grantee is not None and grant.grantee not in existing:
            self.say(f"{grant.privilege} on the database not granted to {who}: the role does not exist")
            return
        grantee = sql.SQL("PUBLIC") if grant.grantee is None else sql.Identifier(grant.grantee)
        statement = sql.SQL("GRANT {} ON DATABASE {} TO {}").format(sql.SQL(grant.privilege), self.db, grantee)
        if grant.grantable:
            statement += sql.SQL(" WITH GRANT OPTION")
        self.try_statement(statement, f"granted {grant.privilege} on the database to {who}",
                           f"{grant.privilege} on the database not granted to {who}")

