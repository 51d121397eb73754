"""manifest.json: built deterministically, read back as hostile input."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from backup_ops.core import manifest_parse as manifest_module
from backup_ops.core.errors import ArchiveError
from backup_ops.core.manifest import (
    EMPTY_SHA256,
    FORMAT_VERSION,
    MANIFEST_NAME,
    MemberInfo,
    build_manifest,
    manifest_bytes,
    member_name_problem,
    with_skipped,
)
from backup_ops.core.manifest_parse import parse_manifest
from backup_ops.core.models import DumpResult, SkippedFile, StagedMember, TableStat

CREATED = datetime(2026, 3, 1, 2, 0, 5, tzinfo=UTC)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


DUMP = DumpResult(
    conn_id="app_db", database="app", member_name="db-dumps/postgresql-app.sql.gz",
    staged_path="/staging/postgresql-app.sql.gz", format="plain", compression="gzip:6", size=1234,
    sha256=sha(b"dump"), duration_s=1.5, snapshot_id="00000003-00000002-1", server_version="16.4",
    pg_dump_version="16.4",
    tables=(TableStat("public", "users", 10, ("id", "email")), TableStat("public", "orders", 32, ("id", "total"))),
)
SKIPPED = [
    SkippedFile("var/www/app/storage/sessions/s1", "vanished", "was removed after it was listed",
                path="/var/www/app/storage/sessions/s1"),
    SkippedFile("var/www/app/caf\\xe9.txt", "bad_name", "has a name that is not valid UTF-8, which restore refuses"),
]
MEMBERS = [
    MemberInfo(DUMP.member_name, 1234, sha(b"dump"), False),
    MemberInfo("var/www/app/", 0, EMPTY_SHA256, False),
    MemberInfo("var/www/app/.env", 9, sha(b".env"), True),
    MemberInfo("var/www/app/logo.png", 100, sha(b"png"), False),
]


def build(**overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "backup_name": "my-app",
        "created_at": CREATED,
        "archive_name": "2026-03-01-02-00-05.zip",
        "run": {"dag_id": "backup_daily", "run_id": "scheduled__2026-03-01", "logical_date": "2026-03-01T02:00:00Z"},
        "dumps": [DUMP],
        "members": MEMBERS,
        "encryption": "aes256",
        "tool_versions": {"pg_dump": "16.4", "backup_ops": "0.1.0"},
    }
    kwargs.update(overrides)
    return build_manifest(**kwargs)


class TestBuild:
    def test_contents(self) -> None:
        m = build()
        assert m["format_version"] == FORMAT_VERSION == 1
        assert m["created_at"] == "2026-03-01T02:00:05Z"
        assert m["encryption"] == "aes256"
        assert m["files"] == {"count": 2, "bytes": 109, "directories": 1}
        assert m["members"][0] == {"name": DUMP.member_name, "size": 1234, "sha256": sha(b"dump")}
        assert m["databases"] == [{
            "member": DUMP.member_name, "conn_id": "app_db", "database": "app", "format": "plain",
            "compression": "gzip:6", "snapshot_id": "00000003-00000002-1", "server_version": "16.4",
            "pg_dump_version": "16.4", "total_rows": 42,
            "tables": [
                {"schema": "public", "name": "users", "row_count": 10, "columns": ["id", "email"]},
                {"schema": "public", "name": "orders", "row_count": 32, "columns": ["id", "total"]},
            ],
            "roles_member": None, "database_member": None, "globals_notes": [],
        }]

    def test_created_at_is_converted_to_utc(self) -> None:
        local = CREATED.astimezone(timezone(timedelta(hours=2)))
        assert build(created_at=local)["created_at"] == "2026-03-01T02:00:05Z"

    def test_bytes_are_deterministic_sorted_indented_utf8(self) -> None:
        members = [*MEMBERS, MemberInfo("var/www/app/café.txt", 1, sha(b"c"), True)]
        first = manifest_bytes(build(members=members))
        assert first == manifest_bytes(build(members=list(members)))
        assert first.endswith(b"}\n")
        assert "café".encode() in first  # UTF-8, not \\u escapes
        text = first.decode()
        assert text == json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n"

    def test_run_may_be_absent(self) -> None:
        assert build(run=None)["run"] == {}

    def test_naive_created_at_is_refused(self) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            build(created_at=datetime(2026, 3, 1))

    def test_encryption_must_be_a_method_name_never_a_secret(self) -> None:
        with pytest.raises(ValueError) as info:
            build(encryption="hunter2")
        assert "hunter2" not in str(info.value)

    @pytest.mark.parametrize("members", [
        [*MEMBERS, MemberInfo(MANIFEST_NAME, 1, sha(b"x"), True)],
        [*MEMBERS, MEMBERS[2]],
        [*MEMBERS, MemberInfo("../escape", 1, sha(b"x"), True)],
        MEMBERS[1:],  # the dump is not among the members
    ])
    def test_inconsistent_members_are_refused(self, members: list[MemberInfo]) -> None:
        with pytest.raises(ValueError):
            build(members=members)

    def test_round_trip(self) -> None:
        parsed = parse_manifest(manifest_bytes(build()))
        assert parsed.format_version == 1
        assert parsed.created_at == CREATED
        assert parsed.backup_name == "my-app"
        assert parsed.archive_name == "2026-03-01-02-00-05.zip"
        assert parsed.run["dag_id"] == "backup_daily"
        assert parsed.tool_versions == {"pg_dump": "16.4", "backup_ops": "0.1.0"}
        assert parsed.encryption == "aes256"
        assert (parsed.file_count, parsed.file_bytes, parsed.directory_count) == (2, 109, 1)
        assert [(m.name, m.size, m.sha256) for m in parsed.members] == [(m.name, m.size, m.sha256) for m in MEMBERS]
        (db,) = parsed.databases
        assert db.member == DUMP.member_name and db.total_rows == 42 and db.tables == DUMP.tables
        assert parsed.members_by_name()["var/www/app/.env"].size == 9


ROLES = StagedMember("roles", "db-dumps/postgresql-app.roles.sql", "/staging/postgresql-app.roles.sql", 300,
                     sha(b"roles"))
SETTINGS = StagedMember("database", "db-dumps/postgresql-app.database.json", "/staging/postgresql-app.database.json",
                        200, sha(b"settings"))
NOTE = "Login 'backup' could not read the role memberships (pg_auth_members): permission denied; …"
DUMP_WITH_GLOBALS = replace(DUMP, extra_members=(ROLES, SETTINGS), globals_notes=(NOTE,))
MEMBERS_WITH_GLOBALS = [MEMBERS[0], MemberInfo(ROLES.member_name, 300, sha(b"roles"), True),
                        MemberInfo(SETTINGS.member_name, 200, sha(b"settings"), True), *MEMBERS[1:]]


class TestRolesAndSettings:
    """The roles and database settings staged beside a dump: members of their database, not application files."""

    def build(self) -> dict[str, Any]:
        return build(dumps=[DUMP_WITH_GLOBALS], members=MEMBERS_WITH_GLOBALS)

    def test_listed_per_database_and_as_members_but_not_counted_as_files(self) -> None:
        m = self.build()
        (db,) = m["databases"]
        assert (db["roles_member"], db["database_member"], db["globals_notes"]) == (
            ROLES.member_name, SETTINGS.member_name, [NOTE])
        assert [x["name"] for x in m["members"][:3]] == [DUMP.member_name, ROLES.member_name, SETTINGS.member_name]
        assert m["members"][1] == {"name": ROLES.member_name, "size": 300, "sha256": sha(b"roles")}
        assert m["files"] == build()["files"] == {"count": 2, "bytes": 109, "directories": 1}

    def test_round_trip(self) -> None:
        parsed = parse_manifest(manifest_bytes(self.build()))
        (db,) = parsed.databases
        assert (db.roles_member, db.database_member, db.globals_notes) == (
            ROLES.member_name, SETTINGS.member_name, (NOTE,))
        assert db.member_names == (DUMP.member_name, ROLES.member_name, SETTINGS.member_name)
        assert parsed.database_member_names() == {DUMP.member_name, ROLES.member_name, SETTINGS.member_name}
        assert (parsed.file_count, parsed.file_bytes) == (2, 109)

    def test_a_manifest_written_before_they_existed_still_parses(self) -> None:
        old = build()
        for key in ("roles_member", "database_member", "globals_notes"):
            del old["databases"][0][key]
        (db,) = parse_manifest(manifest_bytes(old)).databases
        assert (db.roles_member, db.database_member, db.globals_notes) == (None, None, ())
        assert db.member_names == (DUMP.member_name,)

    def test_a_staged_member_missing_from_the_archive_is_refused(self) -> None:
        without_roles = [m for m in MEMBERS_WITH_GLOBALS if m.name != ROLES.member_name]
        with pytest.raises(ValueError, match="'db-dumps/postgresql-app.roles.sql' is not among the archive members"):
            build(dumps=[DUMP_WITH_GLOBALS], members=without_roles)

    def test_a_dump_result_written_before_they_existed_reads_back(self) -> None:
        data = DUMP.to_dict()
        del data["extra_members"], data["globals_notes"]
        assert DumpResult.from_dict(data) == DUMP
        assert DumpResult.from_dict(DUMP_WITH_GLOBALS.to_dict()) == DUMP_WITH_GLOBALS
        assert (DUMP_WITH_GLOBALS.roles_member, DUMP_WITH_GLOBALS.database_member) == (
            ROLES.member_name, SETTINGS.member_name)

    @pytest.mark.parametrize(("key", "value", "message"), [
        ("roles_member", "db-dumps/other.roles.sql", "databases[0].roles_member 'db-dumps/other.roles.sql' is not "
                                                     "a listed file"),
        ("database_member", "var/www/app/", "databases[0].database_member 'var/www/app/' is not a listed file"),
        ("roles_member", DUMP.member_name, "share one member"),
        ("database_member", ROLES.member_name, "share one member"),
        ("roles_member", 7, "databases[0].roles_member must be a string"),
        ("globals_notes", "one note", "databases[0].globals_notes must be a list"),
        ("globals_notes", ["x" * 5000], "databases[0].globals_notes[0] must be a string of at most 4096"),
        ("globals_notes", ["n"] * 101, "globals_notes has 101 entries, more than 100"),
    ])
    def test_hostile_values_are_refused(self, key: str, value: Any, message: str) -> None:
        data = self.build()
        data["databases"][0][key] = value
        with pytest.raises(ArchiveError) as info:
            parse_manifest(json.dumps(data).encode())
        assert message in str(info.value)


class TestSkipped:
    def test_every_manifest_has_the_list_even_when_empty(self) -> None:
        assert build()["skipped"] == []
        assert parse_manifest(manifest_bytes(build())).skipped == ()

    def test_recorded_with_name_reason_and_detail_but_never_the_host_path(self) -> None:
        m = build(skipped=SKIPPED)
        assert m["skipped"] == [
            {"name": "var/www/app/storage/sessions/s1", "reason": "vanished",
             "detail": "was removed after it was listed"},
            {"name": "var/www/app/caf\\xe9.txt", "reason": "bad_name",
             "detail": "has a name that is not valid UTF-8, which restore refuses"},
        ]
        parsed = parse_manifest(manifest_bytes(m))
        assert parsed.skipped == tuple(SkippedFile(s.name, s.reason, s.detail) for s in SKIPPED)

    def test_with_skipped_sets_the_list_on_a_built_manifest(self) -> None:
        base = build()
        added = with_skipped(base, SKIPPED[:1])
        assert base["skipped"] == [] and added["skipped"] == [SKIPPED[0].to_manifest()]
        assert {k: v for k, v in added.items() if k != "skipped"} == {k: v for k, v in base.items() if k != "skipped"}

    def test_a_manifest_written_before_the_field_existed_still_parses(self) -> None:
        old = build()
        del old["skipped"]
        parsed = parse_manifest(manifest_bytes(old))
        assert parsed.format_version == 1 and parsed.skipped == ()

    def test_a_reason_from_a_newer_version_is_kept(self) -> None:
        m = build(skipped=[SkippedFile("x", "quarantined", "is in quarantine")])
        assert parse_manifest(manifest_bytes(m)).skipped[0].reason == "quarantined"


# ---------------------------------------------------------------------------- hostile manifests


def mutated(change: Any) -> bytes:
    data = copy.deepcopy(build())
    change(data)
    return json.dumps(data).encode()


def set_key(path: str, value: Any) -> Any:
    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return change


def delete_key(key: str) -> Any:
    return lambda data: data.pop(key)


def add_member(member: dict[str, Any]) -> Any:
    def change(data: dict[str, Any]) -> None:
        data["members"].append(member)
        data["files"]["count"] += 1
        data["files"]["bytes"] += member.get("size", 0) if isinstance(member.get("size"), int) else 0
    return change


HOSTILE: list[tuple[str, bytes, str]] = [
    ("not json", b"{nope", "not valid JSON"),
    ("not utf-8", b'{"a": "\xff"}', "not valid UTF-8"),
    ("top level list", b"[]", "the top level must be an object"),
    ("duplicate keys", b'{"format_version": 1, "format_version": 2}', "appears twice"),
    ("NaN", b'{"format_version": NaN}', "NaN is not a valid JSON number"),
    ("deep nesting", b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    ("newer format", mutated(set_key("format_version", 2)), "format version 2"),
    ("format version string", mutated(set_key("format_version", "1")), "format_version must be a whole number"),
    ("format version bool", mutated(set_key("format_version", True)), "format_version must be a whole number"),
    ("missing members", mutated(delete_key("members")), "has no 'members' key"),
    ("missing created_at", mutated(delete_key("created_at")), "has no 'created_at' key"),
    ("naive created_at", mutated(set_key("created_at", "2026-03-01T02:00:05")), "with a time zone"),
    ("bad created_at", mutated(set_key("created_at", "yesterday")), "ISO 8601"),
    ("unknown encryption", mutated(set_key("encryption", "rot13")), "encryption must be one of"),
    ("absolute member", mutated(set_key("members.2.name", "/etc/passwd")), "an absolute path"),
    ("traversal member", mutated(set_key("members.2.name", "var/../../etc/passwd")), "'..' component"),
    ("backslash traversal", mutated(set_key("members.2.name", "..\\..\\evil")), "backslash used as separator"),
    ("drive letter", mutated(set_key("members.2.name", "C:/evil")), "drive letter"),
    ("NUL in name", mutated(set_key("members.2.name", "a\x00b")), "NUL byte"),
    ("empty component", mutated(set_key("members.2.name", "var//x")), "empty or '.' path component"),
    ("manifest lists itself", mutated(set_key("members.2.name", MANIFEST_NAME)), "lists the manifest itself"),
    ("duplicate member", mutated(set_key("members.3.name", "var/www/app/.env")), "listed twice"),
    ("file and dir of one name", mutated(set_key("members.2.name", "var/www/app")), "listed twice"),
    ("negative size", mutated(set_key("members.2.size", -1)), "size must be a whole number"),
    ("bool size", mutated(set_key("members.2.size", True)), "size must be a whole number"),
    ("huge size", mutated(set_key("members.2.size", 2**64)), "size must be a whole number"),
    ("float size", mutated(set_key("members.2.size", 1.5)), "size must be a whole number"),
    ("short sha", mutated(set_key("members.2.sha256", "abc")), "64 lowercase hex digits"),
    ("upper sha", mutated(set_key("members.2.sha256", sha(b".env").upper())), "64 lowercase hex digits"),
    ("member not an object", mutated(set_key("members.2", "x")), "members[2] must be an object"),
    ("member missing sha", mutated(add_member({"name": "x", "size": 1})), "has no 'sha256' key"),
    ("directory with content", mutated(set_key("members.1.size", 5)), "has content"),
    ("dump member unlisted", mutated(set_key("databases.0.member", "db-dumps/other.sql.gz")), "not a listed file"),
    ("dump format", mutated(set_key("databases.0.format", "tar")), "'plain' or 'custom'"),
    ("total rows", mutated(set_key("databases.0.total_rows", 41)), "add up to 42"),
    ("row count type", mutated(set_key("databases.0.tables.0.row_count", "10")), "row_count must be"),
    ("column type", mutated(set_key("databases.0.tables.0.columns", [1])), "columns[0] must be a string"),
    ("file count", mutated(set_key("files.count", 3)), "files says 3 files"),
    ("file bytes", mutated(set_key("files.bytes", 0)), "0 bytes"),
    ("run value type", mutated(set_key("run", {"dag_id": 1})), "run.dag_id must be a string"),
    ("tool_versions list", mutated(set_key("tool_versions", [])), "tool_versions must be an object"),
    ("long text", mutated(set_key("backup_name", "x" * 5000)), "at most 4096 characters"),
    ("skipped not a list", mutated(set_key("skipped", {})), "skipped must be a list"),
    ("skipped entry not an object", mutated(set_key("skipped", ["x"])), "skipped[0] must be an object"),
    ("skipped without reason", mutated(set_key("skipped", [{"name": "a", "detail": "d"}])),
     "skipped[0] has no 'reason' key"),
    ("skipped reason type", mutated(set_key("skipped", [{"name": "a", "reason": 1, "detail": "d"}])),
     "skipped[0].reason must be a string"),
    ("skipped name too long", mutated(set_key("skipped", [{"name": "a" * 20000, "reason": "vanished", "detail": ""}])),
     "skipped[0].name must be a string of at most"),
]


@pytest.mark.parametrize(("data", "message"), [(d, m) for _, d, m in HOSTILE], ids=[i for i, _, _ in HOSTILE])
def test_hostile_manifest_is_rejected_with_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ArchiveError) as info:
        parse_manifest(data)
    assert message in str(info.value)
    assert str(info.value).startswith(MANIFEST_NAME)


def test_oversized_manifest_is_rejected_before_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(ArchiveError, match="more than the 100 accepted"):
        parse_manifest(b" " * 101)


def test_too_many_skipped_entries_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "MAX_MEMBERS", 1)
    with pytest.raises(ArchiveError, match="skipped has 2 entries, more than 1"):
        parse_manifest(manifest_bytes(build(members=MEMBERS[:1], skipped=SKIPPED)))


def test_too_many_members_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manifest_module, "MAX_MEMBERS", 3)
    with pytest.raises(ArchiveError, match="members has 4 entries, more than 3"):
        parse_manifest(manifest_bytes(build()))


def test_unknown_keys_are_tolerated_for_forward_compatibility() -> None:
    data = mutated(set_key("future_field", {"anything": [1, 2]}))
    assert parse_manifest(data).backup_name == "my-app"


# ---------------------------------------------------------------------------- member names


@pytest.mark.parametrize("name", [
    "a", "a/b/c.txt", "dir/", ".env", "..foo", "foo..", "a/..b/c", "back\\slash", "a/b\\c", "café/ü.txt",
    "db-dumps/postgresql-app.sql.gz", "a:b/c",
])
def test_safe_member_names(name: str) -> None:
    assert member_name_problem(name) is None


@pytest.mark.parametrize(("name", "problem"), [
    ("", "an empty name"),
    ("/", "an empty name"),
    ("/etc/passwd", "an absolute path"),
    ("\\evil", "an absolute path (backslash used as separator)"),
    ("..", "'..' component"),
    ("../x", "'..' component"),
    ("a/../../x", "'..' component"),
    ("a/..", "'..' component"),
    ("..\\x", "backslash used as separator"),
    ("a\\..\\..\\x", "backslash used as separator"),
    ("C:/x", "a drive letter"),
    ("c:\\x", "a drive letter"),
    ("C:", "a drive letter"),
    ("a//b", "empty or '.' path component"),
    ("./a", "empty or '.' path component"),
    ("a/./b", "empty or '.' path component"),
    ("dir//", "empty or '.' path component"),
    ("a\x00b", "NUL byte"),
    ("bad\udcff", "not valid UTF-8"),
    ("x" * 256, "longer than 255 bytes"),
    ("a/" * 2100, "longer than 4096 bytes"),
])
def test_unsafe_member_names(name: str, problem: str) -> None:
    found = member_name_problem(name)
    assert found is not None and problem in found
